//! Tensor reductions and matrix multiplication: the ops that sum. Accumulation order is part of the
//! definition: every output accumulates its inputs in row-major index order, starting from the identity
//! (0 for sums), in `f32` for `f32` and `f16` (rounded to `f16` once, at the end), wrapping for integers.
//! `MatMul` adds `a[m, k] * b[k, n]` for `k = 0, 1, ...` in that order, with no fused multiply-add.

use super::kernels::{KindMismatch, combine_f32, combine_int, reduce_finish, reduce_init};
use super::values::{Lit, Vals, finish};
use crate::ir::{DType, ReduceOp};

/// Reduces `data` (shape `shape`) over `axes` (sorted, unique, in range).
pub(crate) fn reduce(
    op: ReduceOp,
    dtype: DType,
    data: &Vals,
    shape: &[usize],
    axes: &[usize],
) -> Result<Vals, KindMismatch> {
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
        (Vals::F(v), Lit::F(init)) => Vals::F(fold(v, shape, &out_strides, out_len, init, combine_f32(op))),
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
    f: fn(T, T) -> T,
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
pub(crate) fn matmul(
    dtype: DType,
    a: &Vals,
    a_shape: &[usize],
    b: &Vals,
    b_shape: &[usize],
) -> Result<Vals, KindMismatch> {
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
