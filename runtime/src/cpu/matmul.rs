//! `MatMul` on the CPU: `[batch.., M, K] @ [batch.., K, N]` through the `gemm` crate (its AVX-512 kernels
//! where the machine has them), each operand read in place through its strides (`view.rs`: a transposed
//! weight or the permuted `K` of attention costs no copy); a few rows against a weight stored `[N, K]` go to
//! `dot.rs` instead.
//! Many batches (attention's batch x heads) run in parallel, each on one thread by the register panels of
//! `panels.rs` (`B` packed per batch, the tile as narrow as the product) where the machine has AVX-512, else
//! by a single-threaded `gemm`; few batches run one after the other, each `gemm` splitting its own work over
//! the pool. `f32` and `f16` (stored as
//! `f32`): computed in `f32`, an `f16` result rounded once at the end, like the interpreter's definition.
//! The sums run in `gemm`'s blocked order with fused multiply-adds, so they agree with the interpreter's
//! (`k` in order) within the matmul tolerance, not bit for bit.

use gemm::Parallelism;
use rayon::prelude::*;

use super::dot;
use super::panels::{self, PackedB, Strided};
use super::view::View;
use crate::DType;
use crate::eval::values::{Vals, finish};

/// Products of at most this many rows go to `dot.rs` when their operands allow it.
const DOT_ROWS: usize = 32;
/// ... and their sums are at least this long (shorter ones spend their time summing lanes).
const DOT_DEPTH: usize = 64;

/// The product of two checked views (`a`: `[batch.., m, k]`, `b`: `[batch.., k, n]`, equal batch axes), as
/// a row-major `[batch.., m, n]` buffer of `dtype`, written into `out` (any contents, that length); with
/// `accumulate`, added to `out`'s contents instead (a bias the caller wrote there; within the matmul's
/// tolerance of the product, then the addition).
pub fn matmul(dtype: DType, a: &View, b: &View, mut out: Vec<f32>, accumulate: bool) -> Result<Vals, String> {
    let r = a.shape.len();
    let (m, k, n) = (a.shape[r - 2], a.shape[r - 1], b.shape[r - 1]);
    let batch = &a.shape[..r - 2];
    let batches: usize = batch.iter().product();
    // An axis of stride 0 inside a matrix (a broadcast row or column) is copied out rather than handed to
    // gemm.
    let inner_ok = |v: &View| (r - 2..r).all(|axis| v.strides[axis] != 0 || v.shape[axis] == 1);
    let (a, b) = (
        if inner_ok(a) { a.clone() } else { View::whole(a.contiguous()) },
        if inner_ok(b) { b.clone() } else { View::whole(b.contiguous()) },
    );
    a.check()?;
    b.check()?;
    let (Vals::F(a_data), Vals::F(b_data)) = (&a.value.0.data, &b.value.0.data) else {
        return Err("its operands have the wrong element types".to_string());
    };
    if out.len() != batches * m * n {
        return Err("the result buffer does not fit the product".to_string());
    }
    // The offsets of batch `index` in each operand.
    let offsets = |mut index: usize| {
        let (mut oa, mut ob) = (a.offset, b.offset);
        for axis in (0..batch.len()).rev() {
            let i = index % batch[axis];
            index /= batch[axis];
            oa += i * a.strides[axis];
            ob += i * b.strides[axis];
        }
        (oa, ob)
    };
    // A few rows against a weight stored `[n, k]` (both read along `k` in place): dot products, where
    // `gemm` would spend most of its time packing the weight (`dot.rs`).
    let dots = m <= DOT_ROWS && k >= DOT_DEPTH && a.strides[r - 1] == 1 && b.strides[r - 2] == 1 && dot::available();
    // Many batches, each on one thread (attention's heads): the register panels (`panels.rs`), whose tiles
    // are as narrow as the product (a head's 32 columns of `P @ V` take half a tile), rather than `gemm`.
    let many = batches > 1 && batches >= rayon::current_num_threads();
    let by_panels = many && !dots && panels::available();
    let one = |index: usize, dst: &mut [f32], parallelism: Parallelism| {
        let (oa, ob) = offsets(index);
        if dots {
            let nt = dot::Nt {
                m,
                n,
                k,
                a: &a_data[oa..],
                a_row: a.strides[r - 2],
                w: &b_data[ob..],
                w_row: b.strides[r - 1],
                c_row: n,
                accumulate,
            };
            let parts = if matches!(parallelism, Parallelism::None) { 1 } else { rayon::current_num_threads() };
            return nt.run(dst, parts);
        }
        if by_panels {
            let b = Strided { data: b_data, offset: ob, row: b.strides[r - 2], col: b.strides[r - 1] };
            let packed = PackedB::new(b, k, n).ok_or("a product's operand leaves its buffer")?;
            let a = Strided { data: a_data, offset: oa, row: a.strides[r - 2], col: a.strides[r - 1] };
            return panels::rows(a, &packed, 0, m, dst, n, accumulate);
        }
        // SAFETY: both views were checked to stay inside their buffers (`View::check` above), so every
        // element gemm reads (offset + i * row stride + j * column stride for in-range i, j) is in bounds;
        // `dst` holds exactly m * n elements written row-major.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                accumulate,
                a_data.as_ptr().add(oa),
                a.strides[r - 1] as isize,
                a.strides[r - 2] as isize,
                b_data.as_ptr().add(ob),
                b.strides[r - 1] as isize,
                b.strides[r - 2] as isize,
                if accumulate { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        Ok(())
    };
    if many {
        out.par_chunks_mut(m * n).enumerate().try_for_each(|(index, dst)| one(index, dst, Parallelism::None))?;
    } else {
        for (index, dst) in out.chunks_mut(m * n).enumerate() {
            one(index, dst, Parallelism::Rayon(0))?;
        }
    }
    finish(dtype, &mut out);
    Ok(Vals::F(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_values as values;
    use crate::cpu::value::Value;
    use crate::eval::{layout, reduce};
    use proptest::prelude::*;

    proptest! {
        /// The gemm path equals `eval::reduce::matmul` within the matmul tolerance (16 * EPS * k per output,
        /// relative to the sum of absolute products), for batched operands given transposed (the `rhs` stored
        /// `[batch.., n, k]` and read through strides) or row-major, and batch axes broadcast.
        #[test]
        fn gemm_matches_eval(
            batch in prop::collection::vec(1usize..4, 0..3),
            m in 1usize..40, k in 1usize..100, n in 1usize..20,
            transposed in any::<bool>(), broadcast_b in any::<bool>(), f16 in any::<bool>(),
        ) {
            let dtype = if f16 { DType::F16 } else { DType::F32 };
            let batches: usize = batch.iter().product();
            let mut a_shape = batch.clone();
            a_shape.extend([m, k]);
            let mut b_shape = batch.clone();
            b_shape.extend([k, n]);
            let a = Value::new(Vals::F(values(batches * m * k, 1)), a_shape.clone());
            // b as the interpreter sees it: row-major [batch.., k, n].
            let b_batches = if broadcast_b { 1 } else { batches };
            let b_rows = values(b_batches * k * n, 7);
            let b_row_major = if broadcast_b {
                layout::broadcast(&Vals::F(b_rows.clone()), &[k, n], &b_shape)
            } else {
                Vals::F(b_rows.clone())
            };
            let want = reduce::matmul(dtype, &a.0.data, &a_shape, &b_row_major, &b_shape).unwrap();
            // b for the gemm path: stored [.., n, k] and permuted, or stored [.., k, n]; broadcast over batch.
            let stored_shape = if transposed { vec![b_batches, n, k] } else { vec![b_batches, k, n] };
            let stored = if transposed {
                layout::permute(&Vals::F(b_rows), &[b_batches, k, n], &[0, 2, 1])
            } else {
                Vals::F(b_rows)
            };
            let mut view = View::whole(Value::new(stored, stored_shape));
            if transposed {
                view = view.permute(&[0, 2, 1]);
            }
            let view = if broadcast_b {
                view.reshape(&[k, n]).unwrap_or_else(|| View::whole(view.contiguous()).reshape(&[k, n]).unwrap()).broadcast(&b_shape)
            } else {
                view.reshape(&b_shape).unwrap()
            };
            let got = matmul(dtype, &View::whole(a.clone()), &view, vec![f32::NAN; batches * m * n], false).unwrap();
            let (Vals::F(want), Vals::F(got)) = (want, got) else { unreachable!() };
            let tol = 16.0 * f32::EPSILON * k as f32 * 0.25 * k as f32 + if f16 { 2e-3 } else { 0.0 };
            for (w, g) in want.iter().zip(&got) {
                prop_assert!((w - g).abs() <= tol * (1.0 + w.abs()), "{w} vs {g}");
            }
        }
    }
}
