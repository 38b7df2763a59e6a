//! The scan emitter (`Schedule::Scan`, an `Op::Scan` root such as `cumsum`): `W = ScanPlan::lanes`
//! invocations per fiber (every position of the other axes; `W` a power of two up to `WORKGROUP_SIZE`,
//! fewer for short fibers), `WORKGROUP_SIZE / W` fibers per workgroup, O(N) work per fiber of `N` elements.
//! Lane `l` owns the contiguous chunk of scan positions `[l C, min((l + 1) C, N))`, `C = ceil(N / U)` for
//! the `U = clamp(ceil(N / SCAN_CHUNK), 1, W)` lanes in use (positions counted from the last element down
//! when `reverse`):
//! 1. it folds its chunk in order from the identity and stores the total in workgroup memory (`scan_totals`);
//! 2. after a barrier, it folds the totals of its fiber's lanes `0 .. l` in order into its offset (each invocation
//!    sums the totals before its own, sequentially: no second barrier, at most `W` trips);
//! 3. it folds its chunk again from that offset, storing every running value (an f16 output rounds once).
//!
//! Each invocation loops at most `2 (ceil(N / W) + SCAN_CHUNK) + W` times (plus its operand's own loops), counted in the launch's
//! `LoopIterations` bound, so a fiber too long for the device is refused before dispatch, never cut short.
//! Floats accumulate in f32 but not in the interpreter's order (chunk totals first): results differ from it
//! by rounding (spec/ops.md, cumsum); integers wrap and are exact. The operand's elementwise producers are
//! computed inline by the shared lowering (`Cx::value`), twice per element. The barrier is in uniform
//! control flow: no invocation returns early (a lane past the last fiber scans 0 elements). Entry arguments:
//! `Workgroups`.

use naga::{BinaryOperator, GlobalVariable, Handle, Scalar};
use tdsl_runtime::program::BoundKind;

use crate::codegen::WORKGROUP_SIZE;
use crate::codegen::schedule::SCAN_CHUNK;

use super::{
    Cx, Emitter, Expr, MAX_ELEMENTS, Pos, R, Val, Workgroups, internal, load_element as load, store_element as store,
    unsupported,
};
use crate::codegen::schedule::ScanPlan;
use crate::dim::Dim;
use crate::ir::{DType, Graph, NodeId, Op, ReduceOp, ScanOp};

/// The scan schedule's emitter.
pub(super) struct Scan<'p>(pub &'p ScanPlan);

impl Emitter for Scan<'_> {
    /// `WORKGROUP_SIZE / lanes` fibers per workgroup of `WORKGROUP_SIZE`.
    fn launch(&self, _: &Graph, _: &Dim) -> Result<(Dim, u32), String> {
        let per_workgroup = i64::from(WORKGROUP_SIZE / self.0.lanes);
        let invocations = self
            .0
            .fibers
            .add(&Dim::constant(per_workgroup - 1))
            .and_then(|d| d.div(&Dim::constant(per_workgroup)))
            .and_then(|d| d.scale(i64::from(WORKGROUP_SIZE)))
            .map_err(|_| "the invocation count overflows".to_string())?;
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
        // Fiber `wid G + lid / W` (G = WORKGROUP_SIZE / W fibers per workgroup), lane `lid % W`. A lane past
        // the last fiber scans a fiber of 0 elements (its loops run no trip), so every invocation reaches
        // the barrier.
        let lanes = plan.lanes;
        let workgroup = self.workgroup_index(args);
        let local = self.arg(args.lid);
        let w = self.b.u32(lanes);
        let per_workgroup = self.b.u32(WORKGROUP_SIZE / lanes);
        let first = self.b.binary(BinaryOperator::Multiply, workgroup, per_workgroup);
        let slot = self.b.binary(BinaryOperator::Divide, local, w);
        let fiber = self.b.binary(BinaryOperator::Add, first, slot);
        self.b.name(fiber, "fiber");
        let lid = self.b.binary(BinaryOperator::Modulo, local, w);
        self.b.name(lid, "lane");
        let base = self.b.binary(BinaryOperator::Multiply, slot, w);
        let fibers = self.dim(&plan.fibers);
        let inside = self.b.binary(BinaryOperator::Less, fiber, fibers);
        let mut others = shape.clone();
        others.remove(axis);
        let fiber_coords = self.delinearize(fiber, &others);
        let length = self.dim(&plan.length);
        let zero = self.b.u32(0);
        let n = self.b.select(inside, length, zero);
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
        // The fiber's lanes in use, U = clamp(ceil(N / SCAN_CHUNK), 1, W) (so short fibers of a symbolic
        // length do not sum W totals per lane), and the chunk C = ceil(N / U): this lane's positions are
        // [l C, min(l C + C, N)), empty for l >= U. C <= max(ceil(N / W), SCAN_CHUNK).
        let chunk_less = self.b.u32(SCAN_CHUNK - 1);
        let padded = self.b.binary(BinaryOperator::Add, n, chunk_less);
        let target_chunk = self.b.u32(SCAN_CHUNK);
        let wanted = self.b.binary(BinaryOperator::Divide, padded, target_chunk);
        let one = self.b.u32(1);
        let used = self.b.math(naga::MathFunction::Clamp, &[wanted, one, w]);
        self.b.name(used, "used");
        let used_less = self.b.binary(BinaryOperator::Subtract, used, one);
        let padded = self.b.binary(BinaryOperator::Add, n, used_less);
        let chunk = self.b.binary(BinaryOperator::Divide, padded, used);
        self.b.name(chunk, "chunk");
        let start = self.b.binary(BinaryOperator::Multiply, lid, chunk);
        let end = self.b.binary(BinaryOperator::Add, start, chunk);
        let end = self.b.math(naga::MathFunction::Min, &[end, n]);
        let chunk_trips = plan
            .length
            .add(&Dim::constant(i64::from(lanes) - 1))
            .and_then(|d| d.div(&Dim::constant(i64::from(lanes))))
            .and_then(|d| d.add(&Dim::constant(i64::from(SCAN_CHUNK))))
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
        store(self, totals, local, sum);
        self.barrier();

        // 2. The offset: the totals of the chunks before this one, in order.
        let acc = self.fold_start(root, reduce, dtype)?;
        let before = Dim::constant(i64::from(lanes));
        let in_use = self.b.binary(BinaryOperator::Less, lid, used);
        let last = self.b.select(in_use, local, base);
        self.loop_to("k", base, last, &before, step, &mut |cx, k| {
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
