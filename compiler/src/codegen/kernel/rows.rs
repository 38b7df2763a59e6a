//! The row-kernel emitter (`Schedule::Rows`; `rows.rs` decides which groups get one and how): one
//! workgroup per row of the root, or several short rows per workgroup, or (serial rows) one invocation
//! per row. Cached contractions are stored per column in workgroup memory and given to the shared
//! lowering as `Given::Column`; each row's statistics are computed once (workgroup tree reductions,
//! subgroup shuffles, or loops) and given as `Given::Value`; then the root is stored at every column.
//! Barriers are in uniform control flow: the row comes from the workgroup id, whole workgroups return.
//!
//! Entry arguments: serial rows a folded `Grid`; workgroup rows `Workgroups` (`wid`, `num_workgroups`,
//! `lid`) and, reducing by subgroups, `SubgroupArgs`. The emitter's own state is `RowKernel`.

use std::collections::HashMap;
use tdsl_runtime::program::BoundKind;

use naga::{BinaryOperator, Expression, GlobalVariable, Handle, Scalar, Statement, TypeInner};

use super::{
    Cx, Emitter, Expr, Given, Grid, MAX_ELEMENTS, Pos, R, Val, Workgroups, held_name, internal, storage_scalar, tile,
    to_storage, unsupported,
};
use crate::codegen::rows::{self, Place, RowPlan};
use crate::codegen::scalar;
use crate::dim::Dim;
use crate::ir::{ArgOp, DType, Graph, NodeId, Op, ReduceOp};

/// The row schedule's emitter.
pub(super) struct Rows<'p>(pub &'p RowPlan);

impl Emitter for Rows<'_> {
    /// One invocation per row (serial), else one workgroup per `rows_per_workgroup` rows.
    fn launch(&self, _: &Graph, _: &Dim) -> Result<(Dim, u32), String> {
        let plan = self.0;
        if plan.serial {
            return Ok((plan.rows.clone(), plan.workgroup));
        }
        let invocations = tile::blocks(&plan.rows, plan.rows_per_workgroup)
            .and_then(|groups| groups.scale(i64::from(plan.workgroup)).map_err(|e| e.to_string()))
            .map_err(|_| "the invocation count overflows".to_string())?;
        Ok((invocations, plan.workgroup))
    }

    /// A row kernel has no siblings: only the root is stored.
    fn emit(&self, cx: &mut Cx, count: &Dim, outputs: &[(NodeId, Handle<GlobalVariable>)]) -> R<()> {
        match outputs {
            &[(_, output)] => cx.row_kernel(self.0, count, output),
            _ => Err(internal(&cx.name, "a row kernel with siblings")),
        }
    }
}

/// The subgroup built-ins a row kernel reducing by subgroups declares (after `Workgroups`).
#[derive(Clone, Copy)]
struct SubgroupArgs {
    size: super::Arg,
    lane: super::Arg,
    subgroup: super::Arg,
    subgroups: super::Arg,
}

impl SubgroupArgs {
    fn declare(cx: &mut Cx) -> SubgroupArgs {
        let u32_ty = cx.u32_ty;
        SubgroupArgs {
            size: cx.builtin("subgroup_size", u32_ty, naga::BuiltIn::SubgroupSize),
            lane: cx.builtin("subgroup_lane", u32_ty, naga::BuiltIn::SubgroupInvocationId),
            subgroup: cx.builtin("subgroup", u32_ty, naga::BuiltIn::SubgroupId),
            subgroups: cx.builtin("subgroups", u32_ty, naga::BuiltIn::NumSubgroups),
        }
    }
}

/// The row emitter's state: its plan, the reduction scratch arrays (one per held scalar type, shared by
/// every reduction of the kernel) and, reducing by subgroups, their built-ins.
struct RowKernel<'p> {
    plan: &'p RowPlan,
    scratch: HashMap<Scalar, Handle<GlobalVariable>>,
    /// The positions of index reductions' partial results, beside their values in `scratch`.
    positions: Option<Handle<GlobalVariable>>,
    subgroups: Option<SubgroupArgs>,
}

/// The invocations of a workgroup row kernel that take one row: `lane` (from 0) strides its columns in
/// steps of `count`; `lid` is the local invocation index. With several rows per workgroup, `slot` is the
/// row's place in the workgroup: its lanes are `slot * count ..`, its slice of a reduction's scratch.
/// `base` is the flat index of the row's first element.
#[derive(Clone, Copy)]
struct RowLanes {
    lid: Expr,
    lane: Expr,
    slot: Option<Expr>,
    count: u32,
    /// The flat index of the row's first element.
    base: Expr,
}

impl Cx<'_> {
    /// The steps of a workgroup tree over a row's `count` lanes: for strides `count / 2`, `count / 4`, ..., 1,
    /// each lane below the stride combines its scratch slot (`lid`) with the slot `lid + stride`
    /// (`combine(cx, lid, other)`, inside the lane's `if`), with a barrier after each step.
    fn tree_steps(&mut self, lanes: RowLanes, combine: &mut dyn FnMut(&mut Self, Expr, Expr) -> R<()>) -> R<()> {
        let RowLanes { lid, lane, count, .. } = lanes;
        let mut stride = count / 2;
        while stride > 0 {
            let s = self.b.u32(stride);
            let active = self.b.binary(BinaryOperator::Less, lane, s);
            self.open_block();
            let other_index = self.b.binary(BinaryOperator::Add, lid, s);
            combine(self, lid, other_index)?;
            let accept = self.close_block();
            self.b.statement(Statement::If { condition: active, accept, reject: naga::Block::new() });
            self.barrier();
            stride /= 2;
        }
        Ok(())
    }

    /// The scratch slot holding the row's result after `tree_steps`: its first lane's (`slot * count`).
    fn row_first(&mut self, scratch: Expr, lanes: RowLanes) -> Expr {
        match lanes.slot {
            Some(slot) => {
                let count = self.b.u32(lanes.count);
                let start = self.b.binary(BinaryOperator::Multiply, slot, count);
                self.b.expr(Expression::Access { base: scratch, index: start })
            }
            None => self.b.expr(Expression::AccessIndex { base: scratch, index: 0 }),
        }
    }

    /// The body of a row kernel (see `rows.rs`) storing the root into `output`: this workgroup's row is
    /// `wid.x + wid.y * num_workgroups.x`; cached contractions, then the row's values, then the root's
    /// elements, each pass striding over the row's columns from the local invocation index.
    fn row_kernel(&mut self, plan: &RowPlan, count: &Dim, output: Handle<GlobalVariable>) -> R<()> {
        let graph = self.graph;
        self.bounds.push((BoundKind::OutputElements, count.clone(), MAX_ELEMENTS));
        // Serial rows: `row = gid.x + gid.y * (num_workgroups.x * rows per workgroup)`, one invocation each;
        // otherwise `row = wid.x + wid.y * num_workgroups.x` and `lid` strides over the columns.
        let mut kernel = RowKernel { plan, scratch: HashMap::new(), positions: None, subgroups: None };
        let (row, lid) = if plan.serial {
            let grid = Grid::declare(self);
            (self.global_index(grid, plan.workgroup), None)
        } else {
            let args = Workgroups::declare(self);
            kernel.subgroups = plan.subgroups.then(|| SubgroupArgs::declare(self));
            let group = self.workgroup_index(args);
            (group, Some(self.arg(args.lid)))
        };
        if let Some(lid) = lid.filter(|_| plan.rows_per_workgroup > 1) {
            return self.shared_rows(&mut kernel, output, row, lid);
        }
        self.b.name(row, "row");
        // `row` is uniform in the workgroup, so every barrier below stays in uniform control flow.
        let rows = self.dim(&plan.rows);
        let past_end = self.b.binary(BinaryOperator::GreaterEqual, row, rows);
        self.return_if(past_end);
        let cols = self.dim(&plan.cols);
        let base = self.b.binary(BinaryOperator::Multiply, row, cols);
        self.b.name(base, "row_base");
        let full = rows::full_shape(graph, self.root);

        // Each invocation reads back only the columns it wrote (the same stride in every pass), so the
        // caches need no barrier.
        let lanes = match lid {
            Some(lid) => RowLanes { lid, lane: lid, slot: None, count: plan.workgroup, base },
            None => return self.serial_row(plan, output, row, base),
        };
        for (i, &m) in plan.cached.iter().enumerate() {
            let dtype = graph.node(m).ty.dtype;
            let n = plan.cols.as_const().ok_or_else(|| internal(&self.name, "a cached row has no constant length"))?;
            let name = format!("row_cache{i}");
            let array = self.workgroup_array(&name, storage_scalar(dtype), n as u32);
            let shape = graph.node(m).ty.shape.clone();
            self.strided_loop(lanes, &plan.cols, &mut |cx, j| {
                let flat = cx.b.binary(BinaryOperator::Add, base, j);
                let value = cx.value(m, &mut Pos::flat(&shape, flat))?;
                let stored = to_storage(&mut cx.b, value);
                let pointer = cx.b.expr(Expression::GlobalVariable(array));
                let element = cx.b.expr(Expression::Access { base: pointer, index: j });
                cx.b.store(element, stored);
                Ok(())
            })?;
            self.given.insert(m, Given::Column { array, base });
        }

        self.row_values(&mut kernel, row, lanes, &full)?;

        self.store_row(plan, output, row, lanes, &full)
    }

    /// Every `Row` node of a workgroup row kernel, once for `row` (reductions by the row's invocations,
    /// `lanes` the row's invocations), given (`Given::Value`) for the output pass.
    fn row_values(&mut self, kernel: &mut RowKernel, row: Expr, lanes: RowLanes, full: &[Dim]) -> R<()> {
        let graph = self.graph;
        let plan = kernel.plan;
        for &(id, place) in &plan.places {
            if place != Place::Row {
                continue;
            }
            let node = graph.node(id);
            let value = match &node.op {
                Op::Reduce { op, input, .. } if plan.reductions.contains(&id) => {
                    let expr = self.workgroup_reduce(kernel, id, (*op, *input, node.ty.dtype), full, lanes)?;
                    Val { expr, dtype: node.ty.dtype }
                }
                Op::ArgReduce { op, input, .. } if plan.reductions.contains(&id) => {
                    let expr = self.workgroup_arg_reduce(kernel, id, (*op, *input), full, lanes)?;
                    Val { expr, dtype: DType::I32 }
                }
                _ => {
                    let shape = node.ty.shape.clone();
                    self.value(id, &mut Pos::flat(&shape, row))?
                }
            };
            self.given.insert(id, Given::Value(value));
        }
        Ok(())
    }

    /// The output pass of a workgroup row kernel: the root at each column of the row, taken by the row's
    /// `lanes`; a reducing root's one value (given by `row_values`) stored at `row` by the row's first lane.
    fn store_row(
        &mut self,
        plan: &RowPlan,
        output: Handle<GlobalVariable>,
        row: Expr,
        lanes: RowLanes,
        full: &[Dim],
    ) -> R<()> {
        let root = self.root;
        let base = lanes.base;
        if plan.reduce_root {
            let zero = self.b.u32(0);
            let first = self.b.binary(BinaryOperator::Equal, lanes.lane, zero);
            self.open_block();
            let shape = self.graph.node(root).ty.shape.clone();
            let value = self.value(root, &mut Pos::flat(&shape, row))?;
            self.store_output(output, row, value);
            let accept = self.close_block();
            self.b.statement(Statement::If { condition: first, accept, reject: naga::Block::new() });
            return Ok(());
        }
        self.strided_loop(lanes, &plan.cols, &mut |cx, j| {
            let flat = cx.b.binary(BinaryOperator::Add, base, j);
            let value = cx.value(root, &mut Pos::flat(full, flat))?;
            cx.store_output(output, flat, value);
            Ok(())
        })
    }

    /// A row kernel with several short rows per workgroup (`RowPlan::rows_per_workgroup`): workgroup `group`
    /// takes rows `group * rows_per_workgroup + lid / lanes`, each with `lanes` invocations striding over
    /// its columns. Only whole workgroups past the end return (so barriers stay uniform); a row past the
    /// end in the last workgroup computes the last row again and stores nothing.
    fn shared_rows(&mut self, kernel: &mut RowKernel, output: Handle<GlobalVariable>, group: Expr, lid: Expr) -> R<()> {
        let graph = self.graph;
        let plan = kernel.plan;
        let count = plan.workgroup / plan.rows_per_workgroup;
        self.b.name(group, "group");
        let groups = tile::blocks(&plan.rows, plan.rows_per_workgroup).map_err(|e| internal(&self.name, &e))?;
        let groups = self.dim(&groups);
        let past_end = self.b.binary(BinaryOperator::GreaterEqual, group, groups);
        self.return_if(past_end);
        let count_value = self.b.u32(count);
        let lane = self.b.binary(BinaryOperator::Modulo, lid, count_value);
        let slot = self.b.binary(BinaryOperator::Divide, lid, count_value);
        let per_group = self.b.u32(plan.rows_per_workgroup);
        let first = self.b.binary(BinaryOperator::Multiply, group, per_group);
        let wanted = self.b.binary(BinaryOperator::Add, first, slot);
        let rows = self.dim(&plan.rows);
        let inside = self.b.binary(BinaryOperator::Less, wanted, rows);
        let one = self.b.u32(1);
        let last = self.b.binary(BinaryOperator::Subtract, rows, one);
        let row = self.b.math(naga::MathFunction::Min, &[wanted, last]);
        self.b.name(row, "row");
        let cols = self.dim(&plan.cols);
        let base = self.b.binary(BinaryOperator::Multiply, row, cols);
        self.b.name(base, "row_base");
        let lanes = RowLanes { lid, lane, slot: Some(slot), count, base };
        let full = rows::full_shape(graph, self.root);
        self.row_values(kernel, row, lanes, &full)?;
        self.open_block();
        self.store_row(plan, output, row, lanes, &full)?;
        let accept = self.close_block();
        self.b.statement(Statement::If { condition: inside, accept, reject: naga::Block::new() });
        Ok(())
    }

    /// The rest of a serial row kernel (`RowPlan::serial`, no cached contractions): the row's values, its
    /// reductions as loops over the row, then the root's elements, all by this invocation alone.
    fn serial_row(&mut self, plan: &RowPlan, output: Handle<GlobalVariable>, row: Expr, base: Expr) -> R<()> {
        let graph = self.graph;
        let full = rows::full_shape(graph, self.root);
        for &(id, place) in &plan.places {
            if place != Place::Row {
                continue;
            }
            let node = graph.node(id);
            let value = match &node.op {
                Op::Reduce { op, input, .. } if plan.reductions.contains(&id) => {
                    let (op, input, dtype) = (*op, *input, node.ty.dtype);
                    let acc = self.fold_start(id, op, dtype)?;
                    self.each_column(plan, base, &mut |cx, flat| {
                        let x = cx.value(input, &mut Pos::flat(&full, flat))?;
                        cx.fold_in(id, op, dtype, acc, x.expr)
                    })?;
                    let sum = self.b.load(acc);
                    Val { expr: self.fold_result(id, op, dtype, sum, &plan.cols)?, dtype }
                }
                Op::ArgReduce { op, input, .. } if plan.reductions.contains(&id) => {
                    let (op, input, dtype) = (*op, *input, graph.node(*input).ty.dtype);
                    let (best, at) = self.arg_start(id, dtype)?;
                    self.each_column(plan, base, &mut |cx, flat| {
                        let x = cx.value(input, &mut Pos::flat(&full, flat))?;
                        let k = cx.b.binary(BinaryOperator::Subtract, flat, base);
                        cx.arg_fold_in(id, op, dtype, (best, at), (x.expr, k), true)
                    })?;
                    let at = self.b.load(at);
                    Val { expr: self.arg_result(at), dtype: DType::I32 }
                }
                _ => {
                    let shape = node.ty.shape.clone();
                    self.value(id, &mut Pos::flat(&shape, row))?
                }
            };
            self.given.insert(id, Given::Value(value));
        }
        let root = self.root;
        self.each_column(plan, base, &mut |cx, flat| {
            let value = cx.value(root, &mut Pos::flat(&full, flat))?;
            cx.store_output(output, flat, value);
            Ok(())
        })
    }

    /// `body(flat)` for the flat index of every column of the row starting at `base`, in order. In vector
    /// row kernels (`RowPlan::vector`) the loop runs over the row's 4-element vectors, so that a tensor read
    /// at the row's own positions is loaded one vector at a time (`lanes`).
    fn each_column(&mut self, plan: &RowPlan, base: Expr, body: &mut dyn FnMut(&mut Self, Expr) -> R<()>) -> R<()> {
        if !plan.vector {
            return self.counted_loop("j", &plan.cols, &mut |cx, j| {
                let flat = cx.b.binary(BinaryOperator::Add, base, j);
                body(cx, flat)
            });
        }
        let quads = plan.cols.div(&Dim::constant(4)).map_err(|e| internal(&self.name, &e.to_string()))?;
        let two = self.b.u32(2);
        let first = self.b.binary(BinaryOperator::ShiftRight, base, two);
        self.counted_loop("q", &quads, &mut |cx, q| {
            let vector = cx.b.binary(BinaryOperator::Add, first, q);
            let four = cx.b.u32(4);
            let start = cx.b.binary(BinaryOperator::Multiply, vector, four);
            let mut lanes = [start; 4];
            for (c, lane) in lanes.iter_mut().enumerate().skip(1) {
                let offset = cx.b.u32(c as u32);
                *lane = cx.b.binary(BinaryOperator::Add, start, offset);
            }
            cx.lanes = Some((vector, lanes));
            let result = lanes.iter().try_for_each(|&flat| body(cx, flat));
            cx.lanes = None;
            result
        })
    }

    /// Reduction `node` (`op` over the trailing axes of `input`, shape `full`) of this workgroup's row: each
    /// invocation folds its columns, then a tree over workgroup memory combines the partial results (the
    /// association differs from the interpreter's row-major order, so float sums may differ in the last
    /// bits). Every invocation gets the result.
    fn workgroup_reduce(
        &mut self,
        kernel: &mut RowKernel,
        node: NodeId,
        (op, input, dtype): (ReduceOp, NodeId, DType),
        full: &[Dim],
        lanes: RowLanes,
    ) -> R<Expr> {
        let graph = self.graph;
        let plan = kernel.plan;
        let fail = || unsupported(graph, node);
        let acc = self.fold_start(node, op, dtype)?;
        let RowLanes { lid, base, .. } = lanes;
        self.strided_loop(lanes, &plan.cols, &mut |cx, j| {
            let flat = cx.b.binary(BinaryOperator::Add, base, j);
            let x = cx.value(input, &mut Pos::flat(full, flat))?;
            cx.fold_in(node, op, dtype, acc, x.expr)
        })?;
        let held = storage_scalar(dtype);
        let scratch = match kernel.scratch.get(&held) {
            Some(&s) => s,
            None => {
                let s = self.workgroup_array(&format!("scratch_{}", held_name(held)), held, plan.workgroup);
                kernel.scratch.insert(held, s);
                s
            }
        };
        if let Some(args) = kernel.subgroups {
            let total = self.subgroup_reduce(args, plan.workgroup, node, (op, dtype), acc, scratch)?;
            return self.fold_result(node, op, dtype, total, &plan.cols);
        }
        let scratch_ptr = self.b.expr(Expression::GlobalVariable(scratch));
        let mine = self.b.expr(Expression::Access { base: scratch_ptr, index: lid });
        let partial = self.b.load(acc);
        self.b.store(mine, partial);
        self.barrier();
        self.tree_steps(lanes, &mut |cx, lid, other_index| {
            let mine = cx.b.expr(Expression::Access { base: scratch_ptr, index: lid });
            let other = cx.b.expr(Expression::Access { base: scratch_ptr, index: other_index });
            let a = cx.b.load(mine);
            let c = cx.b.load(other);
            let combined = scalar::reduce_step(&mut cx.b, op, a, c, dtype).ok_or_else(fail)?;
            cx.b.store(mine, combined);
            Ok(())
        })?;
        let first = self.row_first(scratch_ptr, lanes);
        let total = self.b.load(first);
        // The next reduction reuses the scratch: everyone reads the total first.
        self.barrier();
        self.fold_result(node, op, dtype, total, &plan.cols)
    }

    /// Index reduction `node` (`op` over the last axis of `input`, shape `full`) of this workgroup's row, as
    /// `workgroup_reduce` with a (value, position) pair per partial result: each invocation folds its
    /// columns in rising order, then the pairs are combined by a tree over workgroup memory (or subgroup
    /// shuffles) with `arg_merge`, which keeps the first extreme whatever the order. Every invocation
    /// gets the `i32` position.
    fn workgroup_arg_reduce(
        &mut self,
        kernel: &mut RowKernel,
        node: NodeId,
        (op, input): (ArgOp, NodeId),
        full: &[Dim],
        lanes: RowLanes,
    ) -> R<Expr> {
        let plan = kernel.plan;
        let dtype = self.graph.node(input).ty.dtype;
        let (best, at) = self.arg_start(node, dtype)?;
        let RowLanes { lid, base, .. } = lanes;
        self.strided_loop(lanes, &plan.cols, &mut |cx, j| {
            let flat = cx.b.binary(BinaryOperator::Add, base, j);
            let x = cx.value(input, &mut Pos::flat(full, flat))?;
            cx.arg_fold_in(node, op, dtype, (best, at), (x.expr, j), true)
        })?;
        let held = storage_scalar(dtype);
        let values = match kernel.scratch.get(&held) {
            Some(&s) => s,
            None => {
                let s = self.workgroup_array(&format!("scratch_{}", held_name(held)), held, plan.workgroup);
                kernel.scratch.insert(held, s);
                s
            }
        };
        let positions = match kernel.positions {
            Some(p) => p,
            None => {
                let p = self.workgroup_array("scratch_positions", Scalar::U32, plan.workgroup);
                kernel.positions = Some(p);
                p
            }
        };
        if let Some(args) = kernel.subgroups {
            let held_ty = self.b.ty(TypeInner::Scalar(held));
            let [size, sub_lane, subgroup, subgroups] =
                [args.size, args.lane, args.subgroup, args.subgroups].map(|a| self.arg(a));
            let one = self.b.u32(1);
            let workgroup = self.b.u32(plan.workgroup);
            let width = self.b.math(naga::MathFunction::Min, &[size, workgroup]);
            let levels = Dim::constant(i64::from(plan.workgroup.trailing_zeros()));
            let u32_ty = self.u32_ty;
            self.loop_to("mask", one, width, &levels, (BinaryOperator::Multiply, 2), &mut |cx, mask| {
                let (mine, mine_at) = (cx.b.load(best), cx.b.load(at));
                let other = cx.b.shuffle_xor(mine, mask, held_ty);
                let other_at = cx.b.shuffle_xor(mine_at, mask, u32_ty);
                let (value, position) = cx.arg_merge(node, op, dtype, (mine, mine_at), (other, other_at))?;
                cx.b.store(best, value);
                cx.b.store(at, position);
                Ok(())
            })?;
            let zero = self.b.u32(0);
            let first_lane = self.b.binary(BinaryOperator::Equal, sub_lane, zero);
            self.open_block();
            for (array, acc) in [(values, best), (positions, at)] {
                let pointer = self.b.expr(Expression::GlobalVariable(array));
                let slot = self.b.expr(Expression::Access { base: pointer, index: subgroup });
                let partial = self.b.load(acc);
                self.b.store(slot, partial);
            }
            let accept = self.close_block();
            self.b.statement(Statement::If { condition: first_lane, accept, reject: naga::Block::new() });
            self.barrier();
            let (row, row_at) = self.arg_start(node, dtype)?;
            let zero = self.b.u32(0);
            let most = Dim::constant(i64::from(plan.workgroup));
            self.loop_to("s", zero, subgroups, &most, (BinaryOperator::Add, 1), &mut |cx, s| {
                let mut read = |array| {
                    let pointer = cx.b.expr(Expression::GlobalVariable(array));
                    let slot = cx.b.expr(Expression::Access { base: pointer, index: s });
                    cx.b.load(slot)
                };
                let (x, k) = (read(values), read(positions));
                cx.arg_fold_in(node, op, dtype, (row, row_at), (x, k), false)
            })?;
            let total = self.b.load(row_at);
            // The next reduction reuses the scratch: everyone reads the totals first.
            self.barrier();
            return Ok(self.arg_result(total));
        }
        let value_ptr = self.b.expr(Expression::GlobalVariable(values));
        let position_ptr = self.b.expr(Expression::GlobalVariable(positions));
        for (pointer, acc) in [(value_ptr, best), (position_ptr, at)] {
            let mine = self.b.expr(Expression::Access { base: pointer, index: lid });
            let partial = self.b.load(acc);
            self.b.store(mine, partial);
        }
        self.barrier();
        self.tree_steps(lanes, &mut |cx, lid, other_index| {
            let pair = |cx: &mut Self, index| {
                let v = cx.b.expr(Expression::Access { base: value_ptr, index });
                let p = cx.b.expr(Expression::Access { base: position_ptr, index });
                (v, p)
            };
            let (mine, mine_at) = pair(cx, lid);
            let (other, other_at) = pair(cx, other_index);
            let a = (cx.b.load(mine), cx.b.load(mine_at));
            let c = (cx.b.load(other), cx.b.load(other_at));
            let (value, position) = cx.arg_merge(node, op, dtype, a, c)?;
            cx.b.store(mine, value);
            cx.b.store(mine_at, position);
            Ok(())
        })?;
        let first = self.row_first(position_ptr, lanes);
        let total = self.b.load(first);
        // The next reduction reuses the scratch: everyone reads the total first.
        self.barrier();
        Ok(self.arg_result(total))
    }

    /// The row's total of the partial results in `acc` (one per invocation) on targets with subgroups:
    /// a butterfly of `subgroupShuffleXor` steps within each subgroup (every lane ends with its subgroup's
    /// total; a mask stays below the workgroup size, so a subgroup wider than the workgroup only pairs
    /// lanes that exist), then lane 0 of each subgroup stores it in `scratch[subgroup]` and, after a
    /// barrier, every invocation folds the subgroups' totals in order. Every step is the reduction's own
    /// `reduce_step`, so min/max keep the interpreter's NaN and signed-zero rules; only the association
    /// of sums differs from the interpreter's row-major order.
    fn subgroup_reduce(
        &mut self,
        args: SubgroupArgs,
        workgroup: u32,
        node: NodeId,
        (op, dtype): (ReduceOp, DType),
        acc: Expr,
        scratch: Handle<GlobalVariable>,
    ) -> R<Expr> {
        let graph = self.graph;
        let fail = || unsupported(graph, node);
        let [size, lane, subgroup, subgroups] =
            [args.size, args.lane, args.subgroup, args.subgroups].map(|a| self.arg(a));
        let held = self.b.ty(TypeInner::Scalar(storage_scalar(dtype)));
        // for (mask = 1; mask < min(subgroup_size, workgroup); mask *= 2) { acc = acc op shuffle(acc, mask) }
        let one = self.b.u32(1);
        let workgroup_size = workgroup;
        let workgroup = self.b.u32(workgroup);
        let width = self.b.math(naga::MathFunction::Min, &[size, workgroup]);
        // log2 of the width, at most log2 of the workgroup size.
        let levels = Dim::constant(i64::from(workgroup_size.trailing_zeros()));
        self.loop_to("mask", one, width, &levels, (BinaryOperator::Multiply, 2), &mut |cx, mask| {
            let mine = cx.b.load(acc);
            let other = cx.b.shuffle_xor(mine, mask, held);
            let combined = scalar::reduce_step(&mut cx.b, op, mine, other, dtype).ok_or_else(fail)?;
            cx.b.store(acc, combined);
            Ok(())
        })?;

        let zero = self.b.u32(0);
        let first_lane = self.b.binary(BinaryOperator::Equal, lane, zero);
        self.open_block();
        let scratch_ptr = self.b.expr(Expression::GlobalVariable(scratch));
        let slot = self.b.expr(Expression::Access { base: scratch_ptr, index: subgroup });
        let total = self.b.load(acc);
        self.b.store(slot, total);
        let accept = self.close_block();
        self.b.statement(Statement::If { condition: first_lane, accept, reject: naga::Block::new() });
        self.barrier();
        let row = self.fold_start(node, op, dtype)?;
        let zero = self.b.u32(0);
        // At most one subgroup per invocation.
        let most = Dim::constant(i64::from(workgroup_size));
        self.loop_to("s", zero, subgroups, &most, (BinaryOperator::Add, 1), &mut |cx, s| {
            let scratch_ptr = cx.b.expr(Expression::GlobalVariable(scratch));
            let slot = cx.b.expr(Expression::Access { base: scratch_ptr, index: s });
            let x = cx.b.load(slot);
            cx.fold_in(node, op, dtype, row, x)
        })?;
        let total = self.b.load(row);
        // The next reduction reuses the scratch: everyone reads the totals first.
        self.barrier();
        Ok(total)
    }

    /// `for (var j = lane; j < count; j += lanes) { body(j) }` over a row's columns.
    fn strided_loop(&mut self, lanes: RowLanes, count: &Dim, body: &mut dyn FnMut(&mut Self, Expr) -> R<()>) -> R<()> {
        self.stepped_loop("j", Some(lanes.lane), count, lanes.count, body)
    }
}
