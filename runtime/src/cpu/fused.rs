//! Fused chunks: a tree of a launch's elementwise ops (with the `Reshape`s, `Broadcast`s and `Permute`s
//! they read through) evaluated a chunk of output elements at a time, in parallel over chunks, with no
//! whole-tensor intermediate: each inline node (`GroupPlan`'s plan: an elementwise or layout node read by
//! exactly one op) is computed for the chunk's positions only, and the tree's leaves (computed tensors,
//! read through strided views) gather just the chunk's elements. The per-element arithmetic is
//! `eval::kernels` called on chunk-sized buffers, so results equal the interpreter's bit for bit, except
//! `erf` and `exp`: `vmath::erf_fast` and `exp_fast`, within one ulp of the exact functions (as the GPU's,
//! a tolerance apart).
//!
//! Reductions over trailing axes (`sum`/`mean`/`max`... of softmax and layer-norm rows) evaluate their
//! operand tree the same way, a block of whole rows per chunk, and fold each row in index order: the
//! interpreter's order, so they too match it bit for bit.

use rayon::prelude::*;

use super::buffers::Buffers;
use super::value::Value;
use super::view::View;
use crate::DType;
use crate::eval::kernels::{self, reduce_finish, reduce_init};
use crate::eval::values::{Lit, Vals};
use crate::ops::{BinaryOp, ReduceOp, UnaryOp};
use crate::program::{GroupOps, TensorOp};

/// Output elements per chunk: a few chunks' buffers fit in L2.
const CHUNK: usize = 32768;

/// One node's evaluation inside a launch: its ops, the values computed so far and every node's shape.
pub struct Run<'a> {
    /// The launch's ops.
    pub ops: &'a GroupOps,
    /// Computed (non-inline) nodes' values, by node.
    pub values: &'a [Option<Value>],
    /// Per node: where its elements start in its value when it is a window of it (a chain's slice of a
    /// tensor, `Slice`: the run's shape of the node, row-major from there), else `None` (the whole value).
    pub windows: &'a [Option<usize>],
    /// Every node's evaluated shape.
    pub shapes: &'a [Vec<usize>],
    /// Where large float results take their buffers.
    pub buffers: &'a Buffers,
}

/// A chunk of a node's elements: borrowed from a row-major float buffer, computed, or one float repeated
/// (a broadcast scalar, kept unexpanded).
pub(super) enum Part<'l> {
    Slice(&'l [f32]),
    Owned(Vals),
    Splat(f32),
}

impl Part<'_> {
    /// The elements when they are floats.
    pub(super) fn floats(&self) -> Option<&[f32]> {
        match self {
            Part::Slice(s) => Some(s),
            Part::Owned(Vals::F(v)) => Some(v),
            Part::Owned(_) | Part::Splat(_) => None,
        }
    }

    /// The `n` elements as a buffer.
    fn into_vals(self, n: usize) -> Vals {
        match self {
            Part::Slice(s) => Vals::F(s.to_vec()),
            Part::Owned(v) => v,
            Part::Splat(x) => Vals::F(vec![x; n]),
        }
    }
}

/// `dst = x op y` for float parts, a repeated scalar unexpanded; `None` when a part is not floats.
pub(super) fn binary_parts(
    op: BinaryOp,
    dtype: DType,
    x: &Part,
    y: &Part,
    dst: &mut [f32],
) -> Option<Result<(), kernels::KindMismatch>> {
    Some(match (x, y) {
        (Part::Splat(s), Part::Splat(t)) => {
            let mut one = [0.0f32];
            let done = kernels::binary_f32(op, dtype, &[*s], &[*t], &mut one);
            dst.fill(one[0]);
            done
        }
        (Part::Splat(s), y) => kernels::binary_f32_splat(op, dtype, y.floats()?, *s, true, dst),
        (x, Part::Splat(t)) => kernels::binary_f32_splat(op, dtype, x.floats()?, *t, false, dst),
        (x, y) => kernels::binary_f32(op, dtype, x.floats()?, y.floats()?, dst),
    })
}

/// `kernels::unary_f32`, except `erf` and `exp`: `vmath::erf_fast` and `vmath::exp_fast`, within one ulp of
/// the exact functions (the interpreter has libm's bits) and several times faster.
pub(super) fn unary_f32(op: UnaryOp, dtype: DType, x: &[f32], dst: &mut [f32]) -> Result<(), kernels::KindMismatch> {
    let fast = match op {
        UnaryOp::Erf => crate::eval::vmath::erf_fast,
        UnaryOp::Exp => crate::eval::vmath::exp_fast,
        _ => return kernels::unary_f32(op, dtype, x, dst),
    };
    fast(x, dst);
    crate::eval::values::finish(dtype, dst);
    Ok(())
}

/// Elements `lo..hi` of a view: borrowed when row-major floats, one float when it repeats one, else gathered.
pub(super) fn view_part(view: &View, lo: usize, hi: usize) -> Part<'_> {
    if let Vals::F(data) = &view.value.0.data {
        if view.is_contiguous() {
            return Part::Slice(&data[view.offset + lo..view.offset + hi]);
        }
        if view.strides.iter().zip(&view.shape).all(|(&s, &d)| s == 0 || d == 1) {
            return Part::Splat(data[view.offset]);
        }
    }
    Part::Owned(view.gather(lo, hi))
}

/// Elementwise op `op`'s `n` elements of `dtype` from its operands' buffers (`operand`), with the shared
/// kernels; `None` for an op that is not elementwise.
pub(super) fn elementwise_vals(
    op: &TensorOp,
    dtype: DType,
    n: usize,
    operand: impl Fn(&crate::program::OpRef) -> Result<Vals, String>,
) -> Result<Option<Vals>, String> {
    let mut out = Vals::zeros(dtype, n);
    match op {
        TensorOp::Unary(op, a) => kernels::unary(*op, dtype, &operand(a)?, &mut out, n),
        TensorOp::Binary(op, a, b) => kernels::binary(*op, dtype, &operand(a)?, &operand(b)?, &mut out, n),
        TensorOp::Select { cond, on_true, on_false } => {
            kernels::select(&operand(cond)?, &operand(on_true)?, &operand(on_false)?, &mut out, n)
        }
        TensorOp::Cast(a) => kernels::cast(&operand(a)?, dtype, &mut out, n),
        _ => return Ok(None),
    }
    .map_err(|_| "its operands have the wrong element types".to_string())?;
    Ok(Some(out))
}

/// The leaves of a fused tree: nodes read through a view, by node index.
type Leaves = Vec<(usize, View)>;

impl Run<'_> {
    /// Node `k`'s value: computed, or (an inline node) evaluated now in fused chunks.
    pub fn get(&self, k: usize) -> Result<Value, String> {
        match self.values.get(k) {
            Some(Some(_)) if self.window(k).is_some() => {
                let view = self.view(k)?;
                Ok(Value::new(view.gather(0, view.shape.iter().product()), view.shape))
            }
            Some(Some(value)) => Ok(value.clone()),
            _ => self.materialize(k),
        }
    }

    /// Where node `k`'s elements start in its value, when it is a window of it.
    fn window(&self, k: usize) -> Option<usize> {
        self.windows.get(k).copied().flatten()
    }

    /// Node `k` as a strided view: a computed value as it is, a layout op of one read through its strides
    /// (a `Reshape` that strides cannot express through a copy), anything else evaluated.
    pub fn view(&self, k: usize) -> Result<View, String> {
        if let Some(Some(value)) = self.values.get(k) {
            return Ok(match self.window(k) {
                Some(offset) => View::window(value.clone(), offset, self.shapes[k].clone()),
                None => View::whole(value.clone()),
            });
        }
        let node = &self.ops.nodes[k];
        let shape = &self.shapes[k];
        match &node.op {
            TensorOp::Permute(a, perm) => Ok(self.view(a.index())?.permute(perm)),
            TensorOp::Broadcast(a) => Ok(self.view(a.index())?.broadcast(shape)),
            TensorOp::Reshape(a) => {
                let from = self.view(a.index())?;
                match from.reshape(shape) {
                    Some(view) => Ok(view),
                    None => Ok(View::whole(Value::new(from.gather(0, shape.iter().product()), shape.clone()))),
                }
            }
            _ => Ok(View::whole(self.materialize(k)?)),
        }
    }

    /// Evaluates node `k` (an elementwise or layout op) as one fused tree, in parallel chunks.
    pub fn materialize(&self, k: usize) -> Result<Value, String> {
        let node = &self.ops.nodes[k];
        let shape = self.shapes[k].clone();
        let n: usize = shape.iter().product();
        let mut leaves = Leaves::new();
        self.prepare(k, &mut leaves)?;
        let mut out = match node.dtype {
            DType::F32 | DType::F16 => Vals::F(self.buffers.take(n)),
            _ => Vals::zeros(node.dtype, n),
        };
        macro_rules! par {
            ($v:expr, $kind:ident) => {
                $v.par_chunks_mut(CHUNK).enumerate().try_for_each(|(index, dst)| {
                    let lo = index * CHUNK;
                    match self.chunk(k, lo, lo + dst.len(), &leaves)? {
                        Vals::$kind(part) if part.len() == dst.len() => {
                            dst.copy_from_slice(&part);
                            Ok(())
                        }
                        _ => Err("its operands have the wrong element types".to_string()),
                    }
                })
            };
        }
        match &mut out {
            Vals::F(v) => v.par_chunks_mut(CHUNK).enumerate().try_for_each(|(index, dst)| {
                let lo = index * CHUNK;
                self.fill(k, lo, dst, &leaves)
            }),
            Vals::I(v) => par!(v, I),
            Vals::U(v) => par!(v, U),
            Vals::B(v) => par!(v, B),
        }?;
        Ok(Value::new(out, shape))
    }

    /// Collects the leaves of the tree rooted at `k` (their views made once, outside the chunks).
    fn prepare(&self, k: usize, leaves: &mut Leaves) -> Result<(), String> {
        let computed = matches!(self.values.get(k), Some(Some(_)));
        let node = &self.ops.nodes[k];
        if !computed && (node.op.is_elementwise() || matches!(node.op, TensorOp::Reshape(_))) {
            for operand in node.op.operands() {
                self.prepare(operand.index(), leaves)?;
            }
            return Ok(());
        }
        if !leaves.iter().any(|(i, _)| *i == k) {
            leaves.push((k, self.view(k)?));
        }
        Ok(())
    }

    /// Elements `lo..lo + dst.len()` of float node `k` (a node of the tree `leaves` was prepared for),
    /// written into `dst`: the root's kernel writes there directly.
    fn fill(&self, k: usize, lo: usize, dst: &mut [f32], leaves: &Leaves) -> Result<(), String> {
        let hi = lo + dst.len();
        let node = &self.ops.nodes[k];
        let is_leaf = leaves.iter().any(|(i, _)| *i == k);
        let mismatch = |_| "its operands have the wrong element types".to_string();
        match &node.op {
            TensorOp::Unary(op, a) if !is_leaf => {
                if let Some(x) = self.part(a.index(), lo, hi, leaves)?.floats() {
                    return unary_f32(*op, node.dtype, x, dst).map_err(mismatch);
                }
            }
            TensorOp::Binary(op, a, b) if !is_leaf && !op.is_comparison() => {
                let (x, y) = (self.part(a.index(), lo, hi, leaves)?, self.part(b.index(), lo, hi, leaves)?);
                if let Some(done) = binary_parts(*op, node.dtype, &x, &y, dst) {
                    return done.map_err(mismatch);
                }
            }
            _ => {}
        }
        match self.part(k, lo, hi, leaves)? {
            Part::Splat(x) => {
                dst.fill(x);
                Ok(())
            }
            part => match part.floats() {
                Some(x) if x.len() == dst.len() => {
                    dst.copy_from_slice(x);
                    Ok(())
                }
                _ => Err("its operands have the wrong element types".to_string()),
            },
        }
    }

    /// Elements `lo..hi` (row-major) of node `k`, a node of the tree `leaves` was prepared for: a row-major
    /// float leaf borrowed in place, anything else computed.
    fn part<'l>(&self, k: usize, lo: usize, hi: usize, leaves: &'l Leaves) -> Result<Part<'l>, String> {
        if let Some((_, view)) = leaves.iter().find(|(i, _)| *i == k) {
            return Ok(view_part(view, lo, hi));
        }
        let node = &self.ops.nodes[k];
        let n = hi - lo;
        let operand = |r: &crate::program::OpRef| self.part(r.index(), lo, hi, leaves);
        let mismatch = |_| "its operands have the wrong element types".to_string();
        let floats = matches!(node.dtype, DType::F32 | DType::F16);
        match &node.op {
            TensorOp::Reshape(a) => return operand(a),
            TensorOp::Unary(op, a) if floats => {
                let x = operand(a)?;
                if let Part::Splat(x) = x {
                    let mut one = [0.0f32];
                    unary_f32(*op, node.dtype, &[x], &mut one).map_err(mismatch)?;
                    return Ok(Part::Splat(one[0]));
                }
                if let Some(x) = x.floats() {
                    let mut out = vec![0.0; n];
                    unary_f32(*op, node.dtype, x, &mut out).map_err(mismatch)?;
                    return Ok(Part::Owned(Vals::F(out)));
                }
            }
            TensorOp::Binary(op, a, b) if floats && !op.is_comparison() => {
                let (x, y) = (operand(a)?, operand(b)?);
                if let (Part::Splat(s), Part::Splat(t)) = (&x, &y) {
                    let mut one = [0.0f32];
                    kernels::binary_f32(*op, node.dtype, &[*s], &[*t], &mut one).map_err(mismatch)?;
                    return Ok(Part::Splat(one[0]));
                }
                let mut out = vec![0.0; n];
                if let Some(done) = binary_parts(*op, node.dtype, &x, &y, &mut out) {
                    done.map_err(mismatch)?;
                    return Ok(Part::Owned(Vals::F(out)));
                }
            }
            _ => {}
        }
        let operand = |r: &crate::program::OpRef| operand(r).map(|p| p.into_vals(n));
        match elementwise_vals(&node.op, node.dtype, n, operand)? {
            Some(out) => Ok(Part::Owned(out)),
            None => Err(format!("node {k} is not part of a fused tree")),
        }
    }

    /// Elements `lo..hi` of node `k` as an owned buffer.
    fn chunk(&self, k: usize, lo: usize, hi: usize, leaves: &Leaves) -> Result<Vals, String> {
        Ok(self.part(k, lo, hi, leaves)?.into_vals(hi - lo))
    }

    /// Whether `reduce_rows` runs `Reduce` node `k` (of `input` over `axes`): trailing axes of floats.
    pub fn rows_fit(&self, k: usize, input: usize, axes: &[usize]) -> bool {
        let r = self.shapes[input].len();
        let node = &self.ops.nodes[k];
        !axes.is_empty()
            && axes.iter().enumerate().all(|(i, &a)| a + axes.len() == r + i)
            && matches!(node.dtype, DType::F32 | DType::F16)
    }

    /// `Reduce` node `k` (`rows_fit`): parallel over blocks of rows, each block's operand evaluated as one
    /// fused chunk and each row folded in index order.
    pub fn reduce_rows(&self, k: usize, op: ReduceOp, input: usize, axes: &[usize]) -> Result<Value, String> {
        let from = &self.shapes[input];
        self.fold_rows(k, op, input, from[from.len() - axes.len()..].iter().product())
    }

    fn fold_rows(&self, k: usize, op: ReduceOp, input: usize, row: usize) -> Result<Value, String> {
        let node = &self.ops.nodes[k];
        let shape = self.shapes[k].clone();
        let rows: usize = shape.iter().product();
        let mut leaves = Leaves::new();
        self.prepare(input, &mut leaves)?;
        let Lit::F(init) = reduce_init(op, node.dtype) else {
            return Err("its operands have the wrong element types".to_string());
        };
        let block = (CHUNK / row).max(1);
        let mut out = vec![0.0f32; rows];
        out.par_chunks_mut(block).enumerate().try_for_each(|(index, dst)| {
            let first = index * block;
            let (lo, hi) = (first * row, (first + dst.len()) * row);
            let part = match self.part(input, lo, hi, &leaves)? {
                Part::Splat(x) => Part::Owned(Vals::F(vec![x; hi - lo])),
                part => part,
            };
            let Some(data) = part.floats() else {
                return Err("its operands have the wrong element types".to_string());
            };
            fold_rows(op, init, data, row, dst);
            Ok(())
        })?;
        let mut out = Vals::F(out);
        reduce_finish(op, node.dtype, &mut out, rows, row);
        Ok(Value::new(out, shape))
    }
}

/// Lanes of a row folded independently (then combined pairwise): no chain of dependent adds, so rows fold at
/// the vector units' throughput rather than one add's latency per element.
const LANES: usize = 8;

/// `dst[r]` = row `r` of `data` (rows of `row` elements) folded by `op` from `init`: each of `LANES` lanes
/// takes every `LANES`-th element, the lanes are combined pairwise, then the tail. `max` and `min` (IEEE
/// `maximum`/`minimum`, associative) give the interpreter's bits; sums and products add in this order
/// instead of from the first, within the reductions' tolerance.
pub(super) fn fold_rows(op: ReduceOp, init: f32, data: &[f32], row: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { fold_rows_avx2(op, init, data, row, dst) };
        return;
    }
    fold_rows_loop(op, init, data, row, dst);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fold_rows_avx2(op: ReduceOp, init: f32, data: &[f32], row: usize, dst: &mut [f32]) {
    match op {
        // SAFETY: this function runs only where the CPU has AVX2.
        ReduceOp::Max => unsafe { fold_ordered_avx2::<true>(init, data, row, dst) },
        ReduceOp::Min => unsafe { fold_ordered_avx2::<false>(init, data, row, dst) },
        _ => fold_rows_loop(op, init, data, row, dst),
    }
}

/// `fold_ordered` (`MAX`: `maximum`, else `minimum`) in AVX2 registers, eight keys a step: the compiler
/// turned the plain loop's lanes inside out (a vector per lane across blocks) and ran at a fifth of a sum's
/// speed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fold_ordered_avx2<const MAX: bool>(init: f32, data: &[f32], row: usize, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let pick = if MAX { i32::max } else { i32::min };
    let low = _mm256_set1_epi32(0x7fff_ffff);
    for (o, v) in dst.iter_mut().zip(data.chunks_exact(row)) {
        let mut acc = _mm256_set1_epi32(ordered(init));
        let mut largest = _mm256_set1_epi32(magnitude(init));
        let mut blocks = v.chunks_exact(LANES);
        for block in &mut blocks {
            // SAFETY: `block` holds LANES = 8 floats.
            let x = unsafe { _mm256_loadu_si256(block.as_ptr().cast()) };
            // `ordered`: the magnitude bits of negative floats flipped.
            let key = _mm256_xor_si256(x, _mm256_srli_epi32::<1>(_mm256_srai_epi32::<31>(x)));
            acc = if MAX { _mm256_max_epi32(acc, key) } else { _mm256_min_epi32(acc, key) };
            largest = _mm256_max_epi32(largest, _mm256_and_si256(x, low));
        }
        let (mut keys, mut most) = ([0i32; LANES], [0i32; LANES]);
        // SAFETY: both arrays hold eight i32s.
        unsafe {
            _mm256_storeu_si256(keys.as_mut_ptr().cast(), acc);
            _mm256_storeu_si256(most.as_mut_ptr().cast(), largest);
        }
        *o = ordered_total(keys, most, blocks.remainder(), pick);
    }
}

#[inline(always)]
fn fold_rows_loop(op: ReduceOp, init: f32, data: &[f32], row: usize, dst: &mut [f32]) {
    // One loop per op, so the combining step is inlined.
    match op {
        ReduceOp::Sum | ReduceOp::Mean => fold_lanes(init, data, row, dst, |a, x| a + x),
        ReduceOp::Prod => fold_lanes(init, data, row, dst, |a, x| a * x),
        ReduceOp::Max => fold_ordered(init, data, row, dst, i32::max),
        ReduceOp::Min => fold_ordered(init, data, row, dst, i32::min),
    }
}

/// A float's bits as an integer of the same order as IEEE `maximum`/`minimum` see it, `-0` below `+0`
/// (negative floats' magnitude bits flipped); NaNs are kept apart (`fold_ordered`).
#[inline(always)]
fn ordered(x: f32) -> i32 {
    let i = x.to_bits() as i32;
    i ^ ((i >> 31) & 0x7fff_ffff)
}

/// The float whose `ordered` key is `k`.
#[inline(always)]
fn unordered(k: i32) -> f32 {
    f32::from_bits((k ^ ((k >> 31) & 0x7fff_ffff)) as u32)
}

/// `fold_lanes` for `maximum`/`minimum` (`pick`: `i32::max` or `i32::min`) on `ordered` keys, a NaN anywhere
/// in a row making it NaN (found as the largest magnitude bits above infinity's): the same bits as
/// `kernels::fmax`/`fmin` folded, in integer lanes that vectorize (the float selects, `-0` against `+0` and
/// NaN handled per pair, did not).
#[inline(always)]
fn fold_ordered(init: f32, data: &[f32], row: usize, dst: &mut [f32], pick: impl Fn(i32, i32) -> i32 + Copy) {
    for (o, v) in dst.iter_mut().zip(data.chunks_exact(row)) {
        let mut acc = [ordered(init); LANES];
        let mut largest = [magnitude(init); LANES];
        let mut blocks = v.chunks_exact(LANES);
        for block in &mut blocks {
            for ((a, m), &x) in acc.iter_mut().zip(&mut largest).zip(block) {
                *a = pick(*a, ordered(x));
                *m = (*m).max(magnitude(x));
            }
        }
        *o = ordered_total(acc, largest, blocks.remainder(), pick);
    }
}

/// A row's `maximum`/`minimum` from its lanes' `ordered` keys and largest `magnitude`s and the elements
/// past the last whole lane block: NaN when any magnitude is above infinity's.
#[inline(always)]
fn ordered_total(keys: [i32; LANES], largest: [i32; LANES], rest: &[f32], pick: impl Fn(i32, i32) -> i32) -> f32 {
    let [first, keys @ ..] = keys;
    let total = rest.iter().map(|&x| ordered(x)).chain(keys).fold(first, &pick);
    let most = rest.iter().map(|&x| magnitude(x)).chain(largest).fold(0, i32::max);
    if most > magnitude(f32::INFINITY) { f32::NAN } else { unordered(total) }
}

/// A float's bits without the sign, as an integer: above infinity's exactly for a NaN.
#[inline(always)]
fn magnitude(x: f32) -> i32 {
    (x.to_bits() & 0x7fff_ffff) as i32
}

#[inline(always)]
fn fold_lanes(init: f32, data: &[f32], row: usize, dst: &mut [f32], f: impl Fn(f32, f32) -> f32 + Copy) {
    for (o, v) in dst.iter_mut().zip(data.chunks_exact(row)) {
        let mut acc = [init; LANES];
        let mut blocks = v.chunks_exact(LANES);
        for block in &mut blocks {
            for (a, &x) in acc.iter_mut().zip(block) {
                *a = f(*a, x);
            }
        }
        let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
        let mut total = f(f(f(a0, a4), f(a1, a5)), f(f(a2, a6), f(a3, a7)));
        for &x in blocks.remainder() {
            total = f(total, x);
        }
        *o = total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Floats with the values `maximum` and `minimum` treat specially among ordinary ones.
    fn special() -> impl Strategy<Value = f32> {
        prop_oneof![
            Just(0.0f32),
            Just(-0.0f32),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(f32::NAN),
            Just(f32::MIN_POSITIVE / 2.0),
            Just(-f32::MIN_POSITIVE / 2.0),
            -1e3f32..1e3,
            -1e3f32..1e3,
            -1e3f32..1e3,
        ]
    }

    proptest! {
        /// Rows folded by `max` and `min`, dispatched and by the plain loop, have the bits of
        /// `kernels::fmax`/`fmin` applied from the first element on (the interpreter's definition), whatever
        /// the row length, NaNs, zeros of either sign and infinities.
        #[test]
        fn max_and_min_rows_match_the_ieee_fold(row in 1usize..40, data in prop::collection::vec(special(), 1..160)) {
            let rows = data.len() / row;
            let data = &data[..rows * row];
            for (op, f) in [(ReduceOp::Max, kernels::fmax as fn(f32, f32) -> f32), (ReduceOp::Min, kernels::fmin)] {
                let init = if op == ReduceOp::Max { f32::NEG_INFINITY } else { f32::INFINITY };
                // The dispatched fold (AVX2 registers where the CPU has them) and the plain loop.
                let (mut got, mut plain) = (vec![0.0; rows], vec![0.0; rows]);
                fold_rows(op, init, data, row, &mut got);
                fold_rows_loop(op, init, data, row, &mut plain);
                for (r, (got, plain)) in got.iter().zip(&plain).enumerate() {
                    let want = data[r * row..(r + 1) * row].iter().fold(init, |a, &x| f(a, x));
                    prop_assert_eq!(got.to_bits(), want.to_bits(), "{:?} of row {}: {:?}", op, r, &data[r * row..(r + 1) * row]);
                    prop_assert_eq!(plain.to_bits(), want.to_bits(), "plain {:?} of row {}", op, r);
                }
            }
        }
    }
}
