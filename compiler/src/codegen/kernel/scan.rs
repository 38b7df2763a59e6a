//! The scan emitter (`Schedule::Scan`, an `Op::Scan` root such as `cumsum`): one workgroup of `W =
//! WORKGROUP_SIZE` invocations per fiber (every position of the other axes), O(N) work per fiber of `N`
//! elements. Invocation `l` owns the contiguous chunk of scan positions `[l C, min((l + 1) C, N))`, `C =
//! ceil(N / W)` (positions counted from the last element down when `reverse`):
//! 1. it folds its chunk in order from the identity and stores the total in workgroup memory (`scan_totals`);
//! 2. after a barrier, it folds the totals of invocations `0 .. l` in order into its offset (each invocation
//!    sums the totals before its own, sequentially: no second barrier, at most `W` trips);
//! 3. it folds its chunk again from that offset, storing every running value (an f16 output rounds once).
//!
//! Each invocation loops at most `2 C + W` times (plus its operand's own loops), counted in the launch's
//! `LoopIterations` bound, so a fiber too long for the device is refused before dispatch, never cut short.
//! Floats accumulate in f32 but not in the interpreter's order (chunk totals first): results differ from it
//! by rounding (spec/ops.md, cumsum); integers wrap and are exact. The operand's elementwise producers are
//! computed inline by the shared lowering (`Cx::value`), twice per element. The barrier is in uniform
//! control flow: the fiber comes from the workgroup id and `C` from the uniform `N`. Entry arguments:
//! `Workgroups`.

use naga::{BinaryOperator, Expression, GlobalVariable, Handle, Scalar};
use tdsl_runtime::program::BoundKind;

use super::{Cx, Emitter, Expr, MAX_ELEMENTS, Pos, R, Val, Workgroups, internal, unsupported};
use crate::codegen::WORKGROUP_SIZE;
use crate::codegen::schedule::ScanPlan;
use crate::dim::Dim;
use crate::ir::{DType, Graph, NodeId, Op, ReduceOp, ScanOp};

/// The scan schedule's emitter.
pub(super) struct Scan<'p>(pub &'p ScanPlan);

impl Emitter for Scan<'_> {
    /// One workgroup per fiber.
    fn launch(&self, _: &Graph, _: &Dim) -> Result<(Dim, u32), String> {
        let invocations =
            self.0.fibers.scale(i64::from(WORKGROUP_SIZE)).map_err(|_| "the invocation count overflows".to_string())?;
        Ok((invocations, WORKGROUP_SIZE))
    }

    fn emit(&self, cx: &mut Cx, count: &Dim, outputs: &[(NodeId, Handle<GlobalVariable>)]) -> R<()> {
        match outputs {
            &[(_, output)] => cx.scan_kernel(self.0, count, output),
            _ => Err(internal(&cx.name, "a scan kernel with siblings")),
        }
    }
}

impl Cx<'_> {
    fn scan_kernel(&mut self, plan: &ScanPlan, count: &Dim, output: Handle<GlobalVariable>) -> R<()> {
        let graph = self.graph;
        let root = self.root;
        let Op::Scan { op, input, axis, reverse } = graph.node(root).op else {
            return Err(unsupported(graph, root));
        };
        let reduce = match op {
            ScanOp::Sum => ReduceOp::Sum,
        };
        let dtype = graph.node(root).ty.dtype;
        let held = match dtype {
            DType::F32 | DType::F16 => Scalar::F32,
            DType::I32 => Scalar::I32,
            DType::U32 => Scalar::U32,
            DType::Bool => return Err(unsupported(graph, root)),
        };
        self.bounds.push((BoundKind::OutputElements, count.clone(), MAX_ELEMENTS));
        let shape = graph.node(root).ty.shape.clone();
        let in_shape = graph.node(input).ty.shape.clone();
        let args = Workgroups::declare(self);
        let fiber = self.workgroup_index(args);
        self.b.name(fiber, "fiber");
        let lid = self.arg(args.lid);
        let fibers = self.dim(&plan.fibers);
        let past_end = self.b.binary(BinaryOperator::GreaterEqual, fiber, fibers);
        self.return_if(past_end);
        let mut others = shape.clone();
        others.remove(axis);
        let fiber_coords = self.delinearize(fiber, &others);
        let n = self.dim(&plan.length);
        self.b.name(n, "length");
        // The coordinates of scan step `t` (position `N - 1 - t` when reversed).
        let at = move |cx: &mut Cx, t: Expr| {
            let position = if reverse {
                let one = cx.b.u32(1);
                let last = cx.b.binary(BinaryOperator::Subtract, n, one);
                cx.b.binary(BinaryOperator::Subtract, last, t)
            } else {
                t
            };
            let mut coords = fiber_coords.clone();
            coords.insert(axis, position);
            coords
        };
        // C = ceil(N / W), this invocation's chunk [l C, min(l C + C, N)).
        let w = self.b.u32(WORKGROUP_SIZE);
        let w_less = self.b.u32(WORKGROUP_SIZE - 1);
        let padded = self.b.binary(BinaryOperator::Add, n, w_less);
        let chunk = self.b.binary(BinaryOperator::Divide, padded, w);
        self.b.name(chunk, "chunk");
        let start = self.b.binary(BinaryOperator::Multiply, lid, chunk);
        let end = self.b.binary(BinaryOperator::Add, start, chunk);
        let end = self.b.math(naga::MathFunction::Min, &[end, n]);
        let chunk_trips = plan
            .length
            .add(&Dim::constant(i64::from(WORKGROUP_SIZE) - 1))
            .and_then(|d| d.div(&Dim::constant(i64::from(WORKGROUP_SIZE))))
            .map_err(|e| internal(&self.name, &e.to_string()))?;
        let step = (BinaryOperator::Add, 1);

        // 1. The chunk's total.
        let total = self.fold_start(root, reduce, dtype)?;
        self.loop_to("t", start, end, &chunk_trips, step, &mut |cx, t| {
            let coords = at(cx, t);
            let x = cx.value(input, &mut Pos::coords(&in_shape, coords))?;
            cx.fold_in(root, reduce, dtype, total, x.expr)
        })?;
        let totals = self.workgroup_array("scan_totals", held, WORKGROUP_SIZE);
        let sum = self.b.load(total);
        store(self, totals, lid, sum);
        self.barrier();

        // 2. The offset: the totals of the chunks before this one, in order.
        let acc = self.fold_start(root, reduce, dtype)?;
        let zero = self.b.u32(0);
        let before = Dim::constant(i64::from(WORKGROUP_SIZE));
        self.loop_to("k", zero, lid, &before, step, &mut |cx, k| {
            let earlier = load(cx, totals, k);
            cx.fold_in(root, reduce, dtype, acc, earlier)
        })?;

        // 3. The chunk again from the offset, every running value stored.
        self.loop_to("t", start, end, &chunk_trips, step, &mut |cx, t| {
            let coords = at(cx, t);
            let x = cx.value(input, &mut Pos::coords(&in_shape, coords.clone()))?;
            cx.fold_in(root, reduce, dtype, acc, x.expr)?;
            let running = cx.b.load(acc);
            let value = cx.fold_result(root, reduce, dtype, running, &Dim::constant(1))?;
            let flat = cx.flat(&mut Pos::coords(&shape, coords));
            cx.store_output(output, flat, Val { expr: value, dtype });
            Ok(())
        })
    }
}

fn load(cx: &mut Cx, array: Handle<GlobalVariable>, index: Expr) -> Expr {
    let base = cx.b.expr(Expression::GlobalVariable(array));
    let pointer = cx.b.expr(Expression::Access { base, index });
    cx.b.load(pointer)
}

fn store(cx: &mut Cx, array: Handle<GlobalVariable>, index: Expr, value: Expr) {
    let base = cx.b.expr(Expression::GlobalVariable(array));
    let pointer = cx.b.expr(Expression::Access { base, index });
    cx.b.store(pointer, value);
}
