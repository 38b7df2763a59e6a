//! Tensor reductions and matrix multiplication: the ops that sum. Accumulation order is part of the
//! definition: every output accumulates its inputs in row-major index order, starting from the identity
//! (0 for sums), in `f32` for `f32` and `f16` (rounded to `f16` once, at the end), wrapping for integers.
//! `MatMul` adds `a[m, k] * b[k, n]` for `k = 0, 1, ...` in that order, with no fused multiply-add.
//! Index reductions (`argmax`, `argmin`) keep the first position of the extreme, a NaN being the extreme
//! (PyTorch's rule); scans (`cumsum`, `cumprod`) accumulate along their axis from position 0 in order, in
//! `f32` for floats (an `f16` output rounds each prefix once, the running value stays `f32`).

use super::kernels::{KindMismatch, combine_f32, combine_int, fmax, fmin, reduce_finish, reduce_init};
use super::values::{Lit, Vals, finish};
use crate::DType;
use crate::ops::{ArgOp, ReduceOp, ScanOp};

/// Reduces `data` (shape `shape`) over `axes` (sorted, unique, in range).
pub fn reduce(op: ReduceOp, dtype: DType, data: &Vals, shape: &[usize], axes: &[usize]) -> Result<Vals, KindMismatch> {
    let out_len: usize = shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| d).product();
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    // Output stride of every input axis; 0 for the reduced ones.
    let mut out_strides = vec![0; shape.len()];
    let mut s = 1;
    for axis in (0..shape.len()).rev() {
        if !axes.contains(&axis) {
            out_strides[axis] = s;
            s *= shape[axis];
        }
    }
    let mut out = match (data, reduce_init(op, dtype)) {
        // Each float combination passed as itself (not as a function pointer), so it inlines and the
        // accumulation along a kept inner axis vectorizes; the same operations in the same order.
        (Vals::F(v), Lit::F(init)) => Vals::F(match op {
            ReduceOp::Sum | ReduceOp::Mean => fold(v, shape, &out_strides, out_len, init, |a: f32, x: f32| a + x),
            ReduceOp::Prod => fold(v, shape, &out_strides, out_len, init, |a: f32, x: f32| a * x),
            ReduceOp::Max => fold(v, shape, &out_strides, out_len, init, fmax),
            ReduceOp::Min => fold(v, shape, &out_strides, out_len, init, fmin),
        }),
        (Vals::I(v), Lit::I(init)) => Vals::I(fold(v, shape, &out_strides, out_len, init, combine_int::<i32>(op))),
        (Vals::U(v), Lit::U(init)) => Vals::U(fold(v, shape, &out_strides, out_len, init, combine_int::<u32>(op))),
        _ => return Err(KindMismatch),
    };
    reduce_finish(op, dtype, &mut out, out_len, count);
    Ok(out)
}

/// One row-major pass over `src`: `acc[out index] = f(acc, x)`. Each output sees its inputs in row-major
/// order of the reduced axes because the pass visits all of `src` in row-major order.
fn fold<T: Copy>(
    src: &[T],
    shape: &[usize],
    out_strides: &[usize],
    out_len: usize,
    init: T,
    f: impl Fn(T, T) -> T,
) -> Vec<T> {
    let mut acc = vec![init; out_len];
    let Some((&inner, outer_shape)) = shape.split_last() else {
        acc[0] = f(acc[0], src[0]);
        return acc;
    };
    let inner_stride = out_strides[shape.len() - 1];
    let mut index = vec![0usize; outer_shape.len()];
    let mut out_base = 0;
    for row in src.chunks_exact(inner) {
        if inner_stride == 0 {
            let mut a = acc[out_base];
            for &x in row {
                a = f(a, x);
            }
            acc[out_base] = a;
        } else {
            for (a, &x) in acc[out_base..out_base + inner].iter_mut().zip(row) {
                *a = f(*a, x);
            }
        }
        let mut axis = outer_shape.len();
        while axis > 0 {
            axis -= 1;
            index[axis] += 1;
            out_base += out_strides[axis];
            if index[axis] < outer_shape[axis] {
                break;
            }
            out_base -= out_strides[axis] * outer_shape[axis];
            index[axis] = 0;
        }
    }
    acc
}

/// `[batch.., M, K] @ [batch.., K, N]` (shapes already checked), floats only.
pub fn matmul(dtype: DType, a: &Vals, a_shape: &[usize], b: &Vals, b_shape: &[usize]) -> Result<Vals, KindMismatch> {
    let (Vals::F(a), Vals::F(b)) = (a, b) else { return Err(KindMismatch) };
    let r = a_shape.len();
    let (m, k, n) = (a_shape[r - 2], a_shape[r - 1], b_shape[r - 1]);
    let batch: usize = a_shape[..r - 2].iter().product();
    let mut out = vec![0.0f32; batch * m * n];
    for bi in 0..batch {
        let a = &a[bi * m * k..(bi + 1) * m * k];
        let b = &b[bi * k * n..(bi + 1) * k * n];
        let out = &mut out[bi * m * n..(bi + 1) * m * n];
        // i-k-j order: each output row accumulates over k in order, the inner loop runs over contiguous rows.
        for (a_row, out_row) in a.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
            for (&a_mk, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
                for (o, &b_kn) in out_row.iter_mut().zip(b_row) {
                    *o += a_mk * b_kn;
                }
            }
        }
    }
    finish(dtype, &mut out);
    Ok(Vals::F(out))
}

/// `shape` split around `axis`: (elements before it, its size, elements after it).
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

/// Whether `x` replaces `best` as the extreme of `op`: a NaN beats every number and nothing beats a NaN
/// (so the first NaN stays), otherwise a strictly larger (smaller) value wins (so the first of equal
/// values stays; `-0` and `+0` are equal).
pub fn arg_beats_f32(op: ArgOp, best: f32, x: f32) -> bool {
    !best.is_nan()
        && (x.is_nan()
            || match op {
                ArgOp::Max => x > best,
                ArgOp::Min => x < best,
            })
}

fn arg_beats_int<T: PartialOrd>(op: ArgOp, best: T, x: T) -> bool {
    match op {
        ArgOp::Max => x > best,
        ArgOp::Min => x < best,
    }
}

/// The `i32` position along `axis` of each lane's extreme (`arg_beats_*`), scanning from position 0.
pub fn arg_reduce(op: ArgOp, data: &Vals, shape: &[usize], axis: usize) -> Result<Vals, KindMismatch> {
    fn run<T: Copy>(src: &[T], (outer, n, inner): (usize, usize, usize), beats: impl Fn(T, T) -> bool) -> Vec<i32> {
        let mut out = vec![0i32; outer * inner];
        for o in 0..outer {
            for i in 0..inner {
                let lane = |k: usize| src[(o * n + k) * inner + i];
                let (mut best, mut at) = (lane(0), 0);
                for k in 1..n {
                    if beats(best, lane(k)) {
                        (best, at) = (lane(k), k);
                    }
                }
                out[o * inner + i] = at as i32;
            }
        }
        out
    }
    let dims = around(shape, axis);
    Ok(Vals::I(match data {
        Vals::F(v) => run(v, dims, |b, x| arg_beats_f32(op, b, x)),
        Vals::I(v) => run(v, dims, |b, x| arg_beats_int(op, b, x)),
        Vals::U(v) => run(v, dims, |b, x| arg_beats_int(op, b, x)),
        Vals::B(_) => return Err(KindMismatch),
    }))
}

/// The inclusive scan along `axis`: each lane accumulates from the identity (0 for sums, so a running sum
/// of `-0.0` is `+0.0` as in PyTorch) and position 0 on, in order (from the last position when
/// `reverse`), floats in `f32`, integers wrapping; an `f16` result rounds every output once.
pub fn scan(
    op: ScanOp,
    dtype: DType,
    data: &Vals,
    shape: &[usize],
    axis: usize,
    reverse: bool,
) -> Result<Vals, KindMismatch> {
    fn run<T: Copy>(
        src: &[T],
        (outer, n, inner): (usize, usize, usize),
        reverse: bool,
        init: T,
        f: fn(T, T) -> T,
    ) -> Vec<T> {
        let mut out = src.to_vec();
        for o in 0..outer {
            for i in 0..inner {
                let mut acc = init;
                for k in 0..n {
                    let at = (o * n + if reverse { n - 1 - k } else { k }) * inner + i;
                    acc = f(acc, src[at]);
                    out[at] = acc;
                }
            }
        }
        out
    }
    let reduce = match op {
        ScanOp::Sum => ReduceOp::Sum,
    };
    let dims = around(shape, axis);
    Ok(match (data, reduce_init(reduce, dtype)) {
        (Vals::F(v), Lit::F(init)) => {
            let mut out = run(v, dims, reverse, init, combine_f32(reduce));
            finish(dtype, &mut out);
            Vals::F(out)
        }
        (Vals::I(v), Lit::I(init)) => Vals::I(run(v, dims, reverse, init, combine_int::<i32>(reduce))),
        (Vals::U(v), Lit::U(init)) => Vals::U(run(v, dims, reverse, init, combine_int::<u32>(reduce))),
        _ => return Err(KindMismatch),
    })
}
