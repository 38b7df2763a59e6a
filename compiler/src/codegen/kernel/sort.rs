//! The sort emitter (`Schedule::Sort`, an `Argsort` root): one workgroup per fiber (every position of the
//! other axes). The workgroup loads its fiber's `N` elements into workgroup memory as `u32` sort keys (the
//! interpreter's `float_key` for floats, the sign bit flipped for `i32`, inverted when descending) beside
//! their positions, pads to `P`, the next power of two, with keys that sort last, and runs a bitonic
//! network over `(key, position)` pairs: positions are distinct, so the network's order is the stable
//! sort's, whatever order it compares in. `log2(P) (log2(P) + 1) / 2` passes, each a strided loop over the
//! `P / 2` compared pairs and a barrier; then the first `N` positions are stored as `i32`.
//!
//! Fibers up to `SORT_CAPACITY` elements fit workgroup memory; a longer one fails the launch bound
//! `SortLength` before dispatch. Barriers are in uniform control flow: the fiber comes from the workgroup
//! id and every loop's trip count from the uniform `N`. Entry arguments: `Workgroups`.

use naga::{BinaryOperator, Expression, GlobalVariable, Handle, MathFunction, Scalar, ScalarKind};
use tdsl_runtime::program::BoundKind;

use super::{
    Cx, Emitter, Expr, MAX_ELEMENTS, Pos, R, Val, Workgroups, internal, load_element as load, store_element as store,
    unsupported,
};
use crate::codegen::WORKGROUP_SIZE;
use crate::codegen::schedule::{SORT_CAPACITY, SortPlan};
use crate::dim::Dim;
use crate::ir::{DType, Graph, NodeId, Op};

/// The sort schedule's emitter.
pub(super) struct Sort<'p>(pub &'p SortPlan);

impl Emitter for Sort<'_> {
    /// One workgroup per fiber.
    fn launch(&self, _: &Graph, _: &Dim) -> Result<(Dim, u32), String> {
        let invocations =
            self.0.fibers.scale(i64::from(WORKGROUP_SIZE)).map_err(|_| "the invocation count overflows".to_string())?;
        Ok((invocations, WORKGROUP_SIZE))
    }

    fn emit(&self, cx: &mut Cx, count: &Dim, outputs: &[(NodeId, Handle<GlobalVariable>)]) -> R<()> {
        match outputs {
            &[(_, output)] => cx.sort_kernel(self.0, count, output),
            _ => Err(internal(&cx.name, "a sort kernel with siblings")),
        }
    }
}

/// `log2(SORT_CAPACITY)`: the most doublings of the bitonic network's block size (and of its pass size).
const LOG_CAPACITY: i64 = SORT_CAPACITY.ilog2() as i64;

impl Cx<'_> {
    fn sort_kernel(&mut self, plan: &SortPlan, count: &Dim, output: Handle<GlobalVariable>) -> R<()> {
        let graph = self.graph;
        let root = self.root;
        let Op::Argsort { input, axis, descending } = graph.node(root).op else {
            return Err(unsupported(graph, root));
        };
        self.bounds.push((BoundKind::OutputElements, count.clone(), MAX_ELEMENTS));
        self.bounds.push((
            BoundKind::SortLength { node: root.index() as u32 },
            plan.length.clone(),
            i64::from(SORT_CAPACITY),
        ));
        let shape = graph.node(root).ty.shape.clone();
        let in_shape = graph.node(input).ty.shape.clone();
        let in_dtype = graph.node(input).ty.dtype;
        let args = Workgroups::declare(self);
        let fiber = self.workgroup_index(args);
        self.b.name(fiber, "fiber");
        let lid = self.arg(args.lid);
        // `fiber` is uniform in the workgroup, so every barrier below stays in uniform control flow.
        let fibers = self.dim(&plan.fibers);
        let past_end = self.b.binary(BinaryOperator::GreaterEqual, fiber, fibers);
        self.return_if(past_end);
        let mut others = shape.clone();
        others.remove(axis);
        let fiber_coords = self.delinearize(fiber, &others);
        let at = move |position: Expr| {
            let mut coords = fiber_coords.clone();
            coords.insert(axis, position);
            coords
        };
        let n = self.dim(&plan.length);
        self.b.name(n, "length");
        // P = 2^ceil(log2 N): 1 << (firstLeadingBit(N - 1) + 1), and 1 for N = 1 (firstLeadingBit(0) is ~0).
        let one = self.b.u32(1);
        let below = self.b.binary(BinaryOperator::Subtract, n, one);
        let top = self.b.math(MathFunction::FirstLeadingBit, &[below]);
        let bits = self.b.binary(BinaryOperator::Add, top, one);
        let padded = self.b.binary(BinaryOperator::ShiftLeft, one, bits);
        let single = self.b.binary(BinaryOperator::LessEqual, n, one);
        let padded = self.b.select(single, one, padded);
        self.b.name(padded, "padded");
        let keys = self.workgroup_array("sort_keys", Scalar::U32, SORT_CAPACITY);
        let places = self.workgroup_array("sort_places", Scalar::U32, SORT_CAPACITY);
        let per_invocation = Dim::constant(i64::from(SORT_CAPACITY / WORKGROUP_SIZE));
        let step = (BinaryOperator::Add, WORKGROUP_SIZE);

        // Keys and positions, padding past N with keys that sort after every element.
        self.loop_to("e", lid, padded, &per_invocation, step, &mut |cx, e| {
            let last = cx.b.binary(BinaryOperator::Subtract, n, one);
            let clamped = cx.b.math(MathFunction::Min, &[e, last]);
            let x = cx.value(input, &mut Pos::coords(&in_shape, at(clamped)))?;
            let key = sort_key(cx, x, in_dtype, descending).ok_or_else(|| unsupported(cx.graph, root))?;
            let inside = cx.b.binary(BinaryOperator::Less, e, n);
            let pad = cx.b.u32(u32::MAX);
            let key = cx.b.select(inside, key, pad);
            store(cx, keys, e, key);
            store(cx, places, e, e);
            Ok(())
        })?;
        self.barrier();

        // The bitonic network: blocks of `k` (2, 4, .. P) merged by passes at distance `j` (k/2, .., 1).
        let log_capacity = Dim::constant(LOG_CAPACITY);
        let twice_n = self.b.binary(BinaryOperator::ShiftLeft, n, one);
        let double = (BinaryOperator::ShiftLeft, 1);
        let two = self.b.u32(2);
        self.loop_to("k", two, twice_n, &log_capacity, double, &mut |cx, k| {
            let one = cx.b.u32(1);
            cx.loop_to("m", one, k, &log_capacity, double, &mut |cx, m| {
                let half = cx.b.binary(BinaryOperator::ShiftRight, k, one);
                let j = cx.b.binary(BinaryOperator::Divide, half, m);
                let pairs = cx.b.binary(BinaryOperator::ShiftRight, padded, one);
                let per_invocation = Dim::constant(i64::from(SORT_CAPACITY / 2 / WORKGROUP_SIZE));
                cx.loop_to("t", lid, pairs, &per_invocation, step, &mut |cx, t| {
                    compare_exchange(cx, (keys, places), t, j, k);
                    Ok(())
                })?;
                cx.barrier();
                Ok(())
            })
        })?;

        // The first N positions, in order.
        self.loop_to("e", lid, n, &per_invocation, step, &mut |cx, e| {
            let place = load(cx, places, e);
            let value = cx.b.bitcast(place, ScalarKind::Sint);
            let flat = cx.flat(&mut Pos::coords(&shape, at(e)));
            cx.store_output(output, flat, Val { expr: value, dtype: DType::I32 });
            Ok(())
        })
    }
}

/// The `u32` key of `x` whose unsigned order is the sort order (see the module comment).
fn sort_key(cx: &mut Cx, x: Val, dtype: DType, descending: bool) -> Option<Expr> {
    let b = &mut cx.b;
    let key = match dtype {
        DType::F32 | DType::F16 => {
            // On the bits, so no float comparison or literal is involved: -0 as +0, every NaN as one.
            let bits = b.bitcast(x.expr, ScalarKind::Uint);
            let magnitude_mask = b.u32(0x7FFF_FFFF);
            let magnitude = b.binary(BinaryOperator::And, bits, magnitude_mask);
            let zero = b.u32(0);
            let is_zero = b.binary(BinaryOperator::Equal, magnitude, zero);
            let bits = b.select(is_zero, zero, bits);
            let infinity = b.u32(0x7F80_0000);
            let is_nan = b.binary(BinaryOperator::Greater, magnitude, infinity);
            let nan = b.u32(0x7FC0_0000);
            let bits = b.select(is_nan, nan, bits);
            let sign = b.u32(0x8000_0000);
            let signed = b.binary(BinaryOperator::And, bits, sign);
            let negative = b.binary(BinaryOperator::NotEqual, signed, zero);
            let inverted = b.expr(Expression::Unary { op: naga::UnaryOperator::BitwiseNot, expr: bits });
            let raised = b.binary(BinaryOperator::InclusiveOr, bits, sign);
            b.select(negative, inverted, raised)
        }
        DType::I32 => {
            let bits = b.bitcast(x.expr, ScalarKind::Uint);
            let sign = b.u32(0x8000_0000);
            b.binary(BinaryOperator::ExclusiveOr, bits, sign)
        }
        DType::U32 => x.expr,
        DType::Bool => return None,
    };
    Some(if descending { b.expr(Expression::Unary { op: naga::UnaryOperator::BitwiseNot, expr: key }) } else { key })
}

/// Pair `t` of a pass at distance `j` in blocks of `k`: elements `i = 2j (t / j) + t % j` and `i + j`,
/// put in ascending `(key, position)` order where `i & k == 0`, descending elsewhere.
fn compare_exchange(
    cx: &mut Cx,
    (keys, places): (Handle<GlobalVariable>, Handle<GlobalVariable>),
    t: Expr,
    j: Expr,
    k: Expr,
) {
    let b = &mut cx.b;
    let group = b.binary(BinaryOperator::Divide, t, j);
    let offset = b.binary(BinaryOperator::Modulo, t, j);
    let one = b.u32(1);
    let span = b.binary(BinaryOperator::ShiftLeft, j, one);
    let start = b.binary(BinaryOperator::Multiply, group, span);
    let i = b.binary(BinaryOperator::Add, start, offset);
    let l = b.binary(BinaryOperator::Add, i, j);
    let (key_i, key_l) = (load(cx, keys, i), load(cx, keys, l));
    let (place_i, place_l) = (load(cx, places, i), load(cx, places, l));
    let b = &mut cx.b;
    let above = b.binary(BinaryOperator::Greater, key_i, key_l);
    let same = b.binary(BinaryOperator::Equal, key_i, key_l);
    let later = b.binary(BinaryOperator::Greater, place_i, place_l);
    let tie_later = b.binary(BinaryOperator::LogicalAnd, same, later);
    let after = b.binary(BinaryOperator::LogicalOr, above, tie_later);
    let block = b.binary(BinaryOperator::And, i, k);
    let zero = b.u32(0);
    let ascending = b.binary(BinaryOperator::Equal, block, zero);
    let before = b.expr(Expression::Unary { op: naga::UnaryOperator::LogicalNot, expr: after });
    let swap = b.select(ascending, after, before);
    let new_key_i = b.select(swap, key_l, key_i);
    let new_key_l = b.select(swap, key_i, key_l);
    let new_place_i = b.select(swap, place_l, place_i);
    let new_place_l = b.select(swap, place_i, place_l);
    store(cx, keys, i, new_key_i);
    store(cx, keys, l, new_key_l);
    store(cx, places, i, new_place_i);
    store(cx, places, l, new_place_l);
}
