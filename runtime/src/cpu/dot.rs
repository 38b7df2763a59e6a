//! Few-row products against a weight stored `[n, k]` (`C = A · Wᵀ`, both read along `k` contiguously) as
//! dot products in AVX-512 registers: the shape of a linear layer on one short sequence, where `gemm`'s
//! AVX-512 path spends most of its time packing the strided weight (`matmul.rs` picks this path).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of `A` per register block.
const MA: usize = 2;
/// Rows of `W` (columns of `C`) per register block.
const NB: usize = 8;

/// Whether this machine runs `Nt::run` (AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `C`'s first element, shared by the threads that write its disjoint column ranges.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: each thread writes its own columns of `C` (`Nt::run`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// Column `j` of row 0.
    fn at(self, j: usize) -> *mut f32 {
        self.0.wrapping_add(j)
    }
}

/// Operands of `C[i, j] (+)= sum_p A[i, p] * W[j, p]` for `i < m`, `j < n`, `p < k`: element `(i, p)` of `A`
/// at `a[i * a_row + p]`, `(j, p)` of `W` at `w[j * w_row + p]`, `(i, j)` of `C` at `c[i * c_row + j]`.
#[derive(Clone, Copy)]
pub struct Nt<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: &'a [f32],
    pub a_row: usize,
    pub w: &'a [f32],
    pub w_row: usize,
    pub c_row: usize,
    /// Add the product to `C`'s contents instead of writing it.
    pub accumulate: bool,
}

impl Nt<'_> {
    /// Whether every element the product reads or writes is inside `a`, `w` and `c` (of `c_len` elements).
    fn fits(&self, c_len: usize) -> bool {
        let last = |rows: usize, row: usize, cols: usize, len: usize| {
            rows == 0
                || cols == 0
                || (rows - 1).checked_mul(row).and_then(|x| x.checked_add(cols)).is_some_and(|end| end <= len)
        };
        last(self.m, self.a_row, self.k, self.a.len())
            && last(self.n, self.w_row, self.k, self.w.len())
            && last(self.m, self.c_row, self.n, c_len)
    }

    /// Computes `C` into `c` (its element `(i, j)` at `c[i * c_row + j]`), the columns split into `parts`
    /// ranges run in parallel on the current rayon pool. Refuses (`Err`) operands that do not fit their
    /// slices, or a machine without AVX-512F (`available`).
    pub fn run(&self, c: &mut [f32], parts: usize) -> Result<(), String> {
        if !self.fits(c.len()) {
            return Err("a dot-product operand leaves its buffer (a damaged op)".to_string());
        }
        if !available() {
            return Err("the dot-product kernel needs AVX-512F".to_string());
        }
        if self.m == 0 || self.n == 0 {
            return Ok(());
        }
        // Column ranges, each a multiple of NB wide but the last.
        let blocks = self.n.div_ceil(NB);
        let per = blocks.div_ceil(parts.clamp(1, blocks)) * NB;
        let out = Out(c.as_mut_ptr());
        let range = |j0: usize| {
            let block = Nt { n: per.min(self.n - j0), w: &self.w[j0 * self.w_row..], ..*self };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F is available (checked above); every access stays inside the slices (`fits`,
            // and the block's columns are a subrange of `n`); ranges write disjoint columns of `c`.
            unsafe {
                block.blocks(out.at(j0));
            }
        };
        if per >= self.n {
            range(0);
        } else {
            use rayon::prelude::*;
            (0..self.n).into_par_iter().step_by(per).for_each(range);
        }
        Ok(())
    }

    /// Every register block of `C`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn blocks(&self, c: *mut f32) {
        let mut j = 0;
        while j < self.n {
            let nb = NB.min(self.n - j);
            let mut i = 0;
            while i < self.m {
                let ma = MA.min(self.m - i);
                // SAFETY: rows i..i + ma of A and C, rows j..j + nb of W are in range (`fits`).
                unsafe {
                    let (a, w, c) = (
                        self.a.as_ptr().add(i * self.a_row),
                        self.w.as_ptr().add(j * self.w_row),
                        c.add(i * self.c_row + j),
                    );
                    match (ma, nb) {
                        (MA, NB) => self.block::<MA, NB>(a, w, c),
                        _ => self.edge(ma, nb, a, w, c),
                    }
                }
                i += ma;
            }
            j += nb;
        }
    }

    /// A ragged block at the right or bottom edge, by its size.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn edge(&self, ma: usize, nb: usize, a: *const f32, w: *const f32, c: *mut f32) {
        macro_rules! sizes {
            ($($x:literal),*) => {
                match nb { $($x => match ma {
                    1 => self.block::<1, $x>(a, w, c),
                    2 => self.block::<2, $x>(a, w, c),
                    3 => self.block::<3, $x>(a, w, c),
                    _ => self.block::<4, $x>(a, w, c),
                },)* _ => unreachable!("a block is at most NB wide") }
            };
        }
        // SAFETY: as for `blocks`.
        unsafe { sizes!(1, 2, 3, 4, 5, 6, 7, 8) }
    }

    /// One `R x S` block of `C` at `c` from `R` rows of `A` at `a` and `S` rows of `W` at `w`: `R * S`
    /// accumulators along `k`, 16 lanes a step (the last step masked), each summed across lanes at the end.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[expect(clippy::needless_range_loop, reason = "a register block's two indices name its rows and columns")]
    unsafe fn block<const R: usize, const S: usize>(&self, a: *const f32, w: *const f32, c: *mut f32) {
        let mut acc = [[_mm512_setzero_ps(); S]; R];
        let mut p = 0;
        // SAFETY: p + 16 <= k inside the loop, the masked tail reads only p..k; rows are in range.
        unsafe {
            while p + 16 <= self.k {
                let x: [__m512; R] = std::array::from_fn(|r| _mm512_loadu_ps(a.add(r * self.a_row + p)));
                for s in 0..S {
                    let y = _mm512_loadu_ps(w.add(s * self.w_row + p));
                    for r in 0..R {
                        acc[r][s] = _mm512_fmadd_ps(x[r], y, acc[r][s]);
                    }
                }
                p += 16;
            }
            if p < self.k {
                let mask = ((1u32 << (self.k - p)) - 1) as __mmask16;
                let x: [__m512; R] = std::array::from_fn(|r| _mm512_maskz_loadu_ps(mask, a.add(r * self.a_row + p)));
                for s in 0..S {
                    let y = _mm512_maskz_loadu_ps(mask, w.add(s * self.w_row + p));
                    for r in 0..R {
                        acc[r][s] = _mm512_fmadd_ps(x[r], y, acc[r][s]);
                    }
                }
            }
            for r in 0..R {
                for s in 0..S {
                    let sum = _mm512_reduce_add_ps(acc[r][s]);
                    let out = c.add(r * self.c_row + s);
                    *out = if self.accumulate { *out + sum } else { sum };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_values as values;
    use proptest::prelude::*;

    proptest! {
        /// Every block size and tail: `run` equals the sums taken in order, within the matmul tolerance
        /// (`k` roundings of terms at most 0.25 each), rows padded by `pad` elements, with and without
        /// `accumulate` and for any number of column ranges. On a machine without AVX-512F it refuses.
        #[test]
        fn dot_matches_sums(
            m in 1usize..12, n in 1usize..40, k in 1usize..100, pad in 0usize..5,
            accumulate in any::<bool>(), parts in 1usize..5,
        ) {
            let (a_row, w_row, c_row) = (k + pad, k + 2 * pad, n + pad);
            let a = values(m * a_row, 1);
            let w = values(n * w_row, 7);
            let start = values(m * c_row, 13);
            let mut c = start.clone();
            let nt = Nt { m, n, k, a: &a, a_row, w: &w, w_row, c_row, accumulate };
            if !available() {
                prop_assert!(nt.run(&mut c, parts).is_err());
                return Ok(());
            }
            nt.run(&mut c, parts).unwrap();
            let tol = 16.0 * f32::EPSILON * k as f32 * 0.25;
            for i in 0..m {
                for j in 0..c_row {
                    let got = c[i * c_row + j];
                    if j >= n {
                        prop_assert_eq!(got, start[i * c_row + j], "a padding element was written");
                        continue;
                    }
                    let sum: f32 = (0..k).map(|p| a[i * a_row + p] * w[j * w_row + p]).sum();
                    let want = if accumulate { start[i * c_row + j] + sum } else { sum };
                    prop_assert!((want - got).abs() <= tol * (1.0 + want.abs()), "({i}, {j}): {want} vs {got}");
                }
            }
        }
    }

    /// Operands that leave their slices are refused before anything is read.
    #[test]
    fn refuses_short_operands() {
        let (a, w) = (vec![0.0; 15], vec![0.0; 16]);
        let mut c = vec![0.0; 1];
        let nt = Nt { m: 1, n: 1, k: 16, a: &a, a_row: 16, w: &w, w_row: 16, c_row: 1, accumulate: false };
        assert!(nt.run(&mut c, 1).is_err());
        let nt = Nt { a: &w, ..nt };
        let mut empty: Vec<f32> = Vec::new();
        assert!(nt.run(&mut empty, 1).is_err());
    }
}
