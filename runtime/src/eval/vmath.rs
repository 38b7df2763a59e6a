//! `exp` and `erf` over whole slices, the same bits as `libm::expf` and `libm::erff` (the definition
//! `kernels.rs` names) but written without branches, so the compiler vectorizes them (with AVX2 where the CPU has it): each element takes
//! every path of libm's algorithm (FreeBSD's `e_expf.c` and `s_erff.c`, the same constants, the same
//! operations in the same order, no fused multiply-adds) and keeps the one libm would take. Inputs outside
//! the branch-free range (NaN, infinities, `|x| >= 87.3` for `exp`) are recomputed by libm itself. The
//! tests compare the bits with libm's for every one of the 2^32 inputs. Measured on this project's 2-core
//! machine over 4.8M values in [-3, 3]: erf 29 ms against libm's 55, exp 7 ms against 18 (with AVX2).
//! `exp_fast` and `erf_fast` are the CPU executor's: within one ulp of the exact functions rather than
//! libm's bits, with fused multiply-adds and no division, several times cheaper (MiniLM's GELU runs erf on
//! 29M values per forward pass, its softmax exp on 14M). On AVX-512 machines they run 16 lanes at a time
//! through intrinsics (`avx512`), the same bits, `exp`'s power of two applied by `vscalefps`: 0.27 against
//! 0.38 ns per `exp`, 0.63 against 0.75 per `erf` on one core of that machine. On them, too, the CPU
//! executor's fused row-pass steps: `gelu_erf_fast` (GELU's five steps in one pass, the same bits),
//! `softmax_rows_fast` and `layer_norm_row_fast` (a row in registers, its sums in another order).

// The constants as libm's source writes them (the hex comment is each one's f32 bits).
#![allow(clippy::excessive_precision)]

const HALF: [f32; 2] = [0.5, -0.5];
const LN2_HI: f32 = 6.9314575195e-01; /* 0x3f317200 */
const LN2_LO: f32 = 1.4286067653e-06; /* 0x35bfbe8e */
const INV_LN2: f32 = 1.4426950216e+00; /* 0x3fb8aa3b */
const P1: f32 = 1.6666625440e-1; /*  0xaaaa8f.0p-26 */
const P2: f32 = -2.7667332906e-3; /* -0xb55215.0p-32 */
const ERX: f32 = 8.4506291151e-01; /* 0x3f58560b */
const EFX8: f32 = 1.0270333290e+00; /* 0x3f8375d4 */
const PP0: f32 = 1.2837916613e-01; /* 0x3e0375d4 */
const PP1: f32 = -3.2504209876e-01; /* 0xbea66beb */
const PP2: f32 = -2.8481749818e-02; /* 0xbce9528f */
const PP3: f32 = -5.7702702470e-03; /* 0xbbbd1489 */
const PP4: f32 = -2.3763017452e-05; /* 0xb7c756b1 */
const QQ1: f32 = 3.9791721106e-01; /* 0x3ecbbbce */
const QQ2: f32 = 6.5022252500e-02; /* 0x3d852a63 */
const QQ3: f32 = 5.0813062117e-03; /* 0x3ba68116 */
const QQ4: f32 = 1.3249473704e-04; /* 0x390aee49 */
const QQ5: f32 = -3.9602282413e-06; /* 0xb684e21a */
const PA0: f32 = -2.3621185683e-03; /* 0xbb1acdc6 */
const PA1: f32 = 4.1485610604e-01; /* 0x3ed46805 */
const PA2: f32 = -3.7220788002e-01; /* 0xbebe9208 */
const PA3: f32 = 3.1834661961e-01; /* 0x3ea2fe54 */
const PA4: f32 = -1.1089469492e-01; /* 0xbde31cc2 */
const PA5: f32 = 3.5478305072e-02; /* 0x3d1151b3 */
const PA6: f32 = -2.1663755178e-03; /* 0xbb0df9c0 */
const QA1: f32 = 1.0642088205e-01; /* 0x3dd9f331 */
const QA2: f32 = 5.4039794207e-01; /* 0x3f0a5785 */
const QA3: f32 = 7.1828655899e-02; /* 0x3d931ae7 */
const QA4: f32 = 1.2617121637e-01; /* 0x3e013307 */
const QA5: f32 = 1.3637083583e-02; /* 0x3c5f6e13 */
const QA6: f32 = 1.1984500103e-02; /* 0x3c445aa3 */
const RA0: f32 = -9.8649440333e-03; /* 0xbc21a093 */
const RA1: f32 = -6.9385856390e-01; /* 0xbf31a0b7 */
const RA2: f32 = -1.0558626175e+01; /* 0xc128f022 */
const RA3: f32 = -6.2375331879e+01; /* 0xc2798057 */
const RA4: f32 = -1.6239666748e+02; /* 0xc322658c */
const RA5: f32 = -1.8460508728e+02; /* 0xc3389ae7 */
const RA6: f32 = -8.1287437439e+01; /* 0xc2a2932b */
const RA7: f32 = -9.8143291473e+00; /* 0xc11d077e */
const SA1: f32 = 1.9651271820e+01; /* 0x419d35ce */
const SA2: f32 = 1.3765776062e+02; /* 0x4309a863 */
const SA3: f32 = 4.3456588745e+02; /* 0x43d9486f */
const SA4: f32 = 6.4538726807e+02; /* 0x442158c9 */
const SA5: f32 = 4.2900814819e+02; /* 0x43d6810b */
const SA6: f32 = 1.0863500214e+02; /* 0x42d9451f */
const SA7: f32 = 6.5702495575e+00; /* 0x40d23f7c */
const SA8: f32 = -6.0424413532e-02; /* 0xbd777f97 */
const RB0: f32 = -9.8649431020e-03; /* 0xbc21a092 */
const RB1: f32 = -7.9928326607e-01; /* 0xbf4c9dd4 */
const RB2: f32 = -1.7757955551e+01; /* 0xc18e104b */
const RB3: f32 = -1.6063638306e+02; /* 0xc320a2ea */
const RB4: f32 = -6.3756646729e+02; /* 0xc41f6441 */
const RB5: f32 = -1.0250950928e+03; /* 0xc480230b */
const RB6: f32 = -4.8351919556e+02; /* 0xc3f1c275 */
const SB1: f32 = 3.0338060379e+01; /* 0x41f2b459 */
const SB2: f32 = 3.2579251099e+02; /* 0x43a2e571 */
const SB3: f32 = 1.5367296143e+03; /* 0x44c01759 */
const SB4: f32 = 3.1998581543e+03; /* 0x4547fdbb */
const SB5: f32 = 2.5530502930e+03; /* 0x451f90ce */
const SB6: f32 = 4.7452853394e+02; /* 0x43ed43a7 */
const SB7: f32 = -2.2440952301e+01; /* 0xc1b38712 */

/// `libm::expf(x)` for `|x| < 87.3` (`|x|`'s bits below `0x42aeac50`); anything for other inputs.
#[inline(always)]
fn exp_core(x: f32) -> f32 {
    let bits = x.to_bits();
    let hx = bits & 0x7fff_ffff;
    let sign = (bits >> 31) as usize;
    // Argument reduction: k = round(x / ln2), three ways as libm picks them.
    let k_big = (INV_LN2 * x + if sign != 0 { HALF[1] } else { HALF[0] }) as i32;
    let k_mid = 1 - sign as i32 - sign as i32;
    let k = if hx > 0x3f85_1592 {
        k_big
    } else if hx > 0x3eb1_7218 {
        k_mid
    } else {
        0
    };
    let kf = k as f32;
    let hi = x - kf * LN2_HI;
    let lo = kf * LN2_LO;
    let r = hi - lo;
    let xx = r * r;
    let c = r - xx * (P1 + xx * P2);
    let y = 1. + (r * c / (2. - c) - lo + hi);
    // scalbnf(y, k) with k in -126..=126: one exact multiplication by 2^k (y * 1 when k is 0).
    let scaled = y * f32::from_bits((k.wrapping_add(127) as u32 & 0xff) << 23);
    if hx > 0x3900_0000 { scaled } else { 1. + x }
}

/// Whether `exp_core` is libm's `expf` at `x`.
#[inline(always)]
fn exp_in_range(x: f32) -> bool {
    x.to_bits() & 0x7fff_ffff < 0x42ae_ac50
}

/// `o[i] = libm::expf(a[i])`, bit for bit.
pub fn exp(a: &[f32], o: &mut [f32]) {
    each(Isa::Avx2, a, o, exp_core);
    for (o, &x) in o.iter_mut().zip(a) {
        if !exp_in_range(x) {
            *o = libm::expf(x);
        }
    }
}

/// `libm::erff(x)` for finite `x`.
#[inline(always)]
fn erf_core(x: f32) -> f32 {
    let bits = x.to_bits();
    let ix = bits & 0x7fff_ffff;
    let negative = bits >> 31 != 0;
    // |x| < 0.84375 (and below 2^-28).
    let z = x * x;
    let r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
    let s = 1.0 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
    let small = x + x * (r / s);
    let tiny = 0.125 * (8.0 * x + EFX8 * x);
    // 0.84375 <= |x| < 1.25: erfc1.
    let ax = f32::from_bits(ix);
    let s1 = ax - 1.0;
    let p = PA0 + s1 * (PA1 + s1 * (PA2 + s1 * (PA3 + s1 * (PA4 + s1 * (PA5 + s1 * PA6)))));
    let q = 1.0 + s1 * (QA1 + s1 * (QA2 + s1 * (QA3 + s1 * (QA4 + s1 * (QA5 + s1 * QA6)))));
    let erfc1 = 1.0 - ERX - p / q;
    // 1.25 <= |x| < 6: erfc2. Below 1/0.35 the RA/SA rational function, else RB/SB, whose one degree less
    // is a zero top coefficient here (c + s * 0 is c exactly: s is finite).
    let s2 = 1.0 / (ax * ax);
    let near = ix < 0x4036_db6d;
    let pick = |a: f32, b: f32| if near { a } else { b };
    let r2 = pick(RA0, RB0)
        + s2 * (pick(RA1, RB1)
            + s2 * (pick(RA2, RB2)
                + s2 * (pick(RA3, RB3)
                    + s2 * (pick(RA4, RB4) + s2 * (pick(RA5, RB5) + s2 * (pick(RA6, RB6) + s2 * pick(RA7, 0.0)))))));
    let big_s = 1.0
        + s2 * (pick(SA1, SB1)
            + s2 * (pick(SA2, SB2)
                + s2 * (pick(SA3, SB3)
                    + s2 * (pick(SA4, SB4)
                        + s2 * (pick(SA5, SB5)
                            + s2 * (pick(SA6, SB6) + s2 * (pick(SA7, SB7) + s2 * pick(SA8, 0.0))))))));
    let zz = f32::from_bits(ix & 0xffff_e000);
    let erfc2 = exp_core(-zz * zz - 0.5625) * exp_core((zz - ax) * (zz + ax) + r2 / big_s) / ax;
    let erfc = if ix < 0x3fa0_0000 { erfc1 } else { erfc2 };
    let y = if ix < 0x40c0_0000 { 1.0 - erfc } else { 1.0 - f32::from_bits(0x0380_0000) };
    let large = if negative { -y } else { y };
    if ix < 0x3180_0000 {
        tiny
    } else if ix < 0x3f58_0000 {
        small
    } else {
        large
    }
}

/// `o[i] = libm::erff(a[i])`, bit for bit.
pub fn erf(a: &[f32], o: &mut [f32]) {
    each(Isa::Avx2, a, o, erf_core);
    for (o, &x) in o.iter_mut().zip(a) {
        if x.to_bits() & 0x7fff_ffff >= 0x7f80_0000 {
            *o = libm::erff(x);
        }
    }
}

/// The constants of `exp_fast_core` and `erf_fast_core`, shared with their AVX-512 forms (`avx512`), so both
/// compute with the same numbers. `exp`: `ln 2` split for Cody-Waite, the Taylor coefficients from `x^7`
/// down, and the inputs beyond which it is `inf` or `0`.
const FAST_LN2_HI: f32 = 0.693_145_75;
const FAST_LN2_LO: f32 = 1.428_606_8e-6;
const EXP_TAYLOR: [f32; 8] = [1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];
const EXP_OVERFLOW: f32 = 88.722_84;
const EXP_UNDERFLOW: f32 = -104.0;
/// `erf`: the large range's polynomial in `t` (two halves joined through `t^2`, then Horner from the
/// fifth coefficient), the small range's in `x^2`, the boundary between them, and where it is `±1`.
const ERF_LARGE: [f32; 7] = [
    -1.728_534_7e-5,
    3.831_971_3e-4,
    -3.883_964_4e-3,
    2.425_462_2e-2,
    -1.067_778_8e-1,
    -6.348_466_9e-1,
    -1.287_175_1e-1,
];
const ERF_SMALL: [f32; 6] =
    [-5.967_617e-4, 4.991_194_2e-3, -2.676_813_5e-2, 1.128_199_3e-1, -3.761_253_4e-1, 1.283_791_7e-1];
const ERF_SPLIT: f32 = 0.927_734_4;
const ERF_ONE: f32 = 4.0;

/// `exp(x)` within one ulp (0.82 measured against the exact function on every 997th f32), not libm's bits: `2^n * p(r)` with `n = round(x / ln 2)`, `r = x - n ln 2`
/// (Cody-Waite, fused multiply-adds) and `p` the degree-7 Taylor polynomial (truncation under 0.05 ulp for
/// `|r| <= ln 2 / 2`), scaled by two exact powers of two so subnormal results round once. No division,
/// no branch: it vectorizes. Overflow gives `inf`, underflow `0`, NaN gives NaN.
#[inline(always)]
fn exp_fast_core(x: f32) -> f32 {
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-FAST_LN2_HI, x);
    let r = n.mul_add(-FAST_LN2_LO, r);
    let mut p = EXP_TAYLOR[0];
    for c in &EXP_TAYLOR[1..] {
        p = p.mul_add(r, *c);
    }
    // n in [-150, 128] here: two factors of at most 2^64 and at least 2^-75, each a normal f32. The integer
    // is read from the bits of `n + 1.5 * 2^23` (exact, one unit per ulp) rather than by `as i32`, whose
    // saturation and NaN rules do not vectorize; a NaN `x` gives some power, and NaN times it is NaN.
    let k = ((n.clamp(-150.0, 128.0) + 12_582_912.0).to_bits() as i32).wrapping_sub(0x4B40_0000);
    let (k1, k2) = (k >> 1, k.wrapping_sub(k >> 1));
    let pow = |k: i32| f32::from_bits((k.wrapping_add(127) as u32) << 23);
    let y = p * pow(k1) * pow(k2);
    if x > EXP_OVERFLOW {
        f32::INFINITY
    } else if x < EXP_UNDERFLOW {
        0.0
    } else {
        y
    }
}

/// `o[i] = exp(a[i])` within one ulp (`exp_fast_core`): the CPU executor's `exp`.
pub fn exp_fast(a: &[f32], o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features, checked just above.
        return unsafe { avx512::exp(a, o) };
    }
    each(Isa::Avx2Fma, a, o, exp_fast_core);
}

/// `erf(x)` within one ulp, not libm's bits: Norbert Juffa's two-range minimax fit (fused multiply-adds; one
/// `exp_fast` above `|x| = 0.9277`), both ranges computed and one kept, so it vectorizes. Measured against
/// the exact erf on every 997th f32: at most 0.96 ulp. `|x| >= 4` gives exactly `±1` (erf rounds to it
/// there), NaN gives NaN.
#[inline(always)]
fn erf_fast_core(a: f32) -> f32 {
    let t = a.abs();
    let s = a * a;
    // |x| > 0.927734375: 1 - exp(-t * p(t)).
    let c = ERF_LARGE;
    let r = c[0].mul_add(t, c[1]);
    let u = c[2].mul_add(t, c[3]);
    let mut r = r.mul_add(s, u);
    for c in &c[4..] {
        r = r.mul_add(t, *c);
    }
    let r = r.mul_add(t, -t);
    let large = (1.0 - exp_fast_core(r)).copysign(a);
    // |x| <= 0.927734375: x + x * q(x^2).
    let mut q = ERF_SMALL[0];
    for c in &ERF_SMALL[1..] {
        q = q.mul_add(s, *c);
    }
    let small = q.mul_add(a, a);
    if t >= ERF_ONE {
        1.0f32.copysign(a)
    } else if t > ERF_SPLIT {
        large
    } else {
        small
    }
}

/// `o[i] = erf(a[i])` within one ulp (`erf_fast_core`): the CPU executor's `erf`, about four times faster
/// than `erf`'s libm bits.
pub fn erf_fast(a: &[f32], o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features, checked just above.
        return unsafe { avx512::erf(a, o) };
    }
    each(Isa::Avx2Fma, a, o, erf_fast_core);
}

/// `o[i] = (0.5 * a[i]) * (1 + erf_fast(a[i] * c))`: GELU's erf form (with `c = 1 / sqrt(2)`) in one pass,
/// the same operations in the same order as its separate steps, so the same bits (the CPU executor's fused
/// GELU).
pub fn gelu_erf_fast(a: &[f32], c: f32, o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features, checked just above.
        return unsafe { avx512::gelu(a, c, o) };
    }
    each(Isa::Avx2Fma, a, o, |x| gelu_core(x, c));
}

#[inline(always)]
fn gelu_core(x: f32, c: f32) -> f32 {
    (0.5 * x) * (1.0 + erf_fast_core(x * c))
}

/// `o = softmax(x)` row by row (rows of `row` floats) on AVX-512: per row its maximum, `exp_fast` of the
/// differences, their sum and the scaling by its reciprocal, four rows at a time so their reductions
/// overlap, each row staying in the first-level cache. A row holding a NaN (its group of four, rather) goes
/// to `general` instead, which carries the NaN through as the separate steps do. `false`, writing nothing,
/// where the machine lacks AVX-512F or the slices are not whole rows of one length. The maximum is exact;
/// the sum runs in another order than a row fold's, so the result is within the sums' tolerance of it.
pub fn softmax_rows_fast(x: &[f32], row: usize, o: &mut [f32], mut general: impl FnMut(&[f32], &mut [f32])) -> bool {
    #[cfg(target_arch = "x86_64")]
    if row > 0
        && x.len() == o.len()
        && x.len().is_multiple_of(row)
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("fma")
    {
        let mut each = |x: &[f32], o: &mut [f32], fast: bool| {
            if !fast {
                x.chunks_exact(row).zip(o.chunks_exact_mut(row)).for_each(|(x, o)| general(x, o));
            }
        };
        let (mut xs, mut os) = (x.chunks_exact(4 * row), o.chunks_exact_mut(4 * row));
        for (x, o) in (&mut xs).zip(&mut os) {
            // SAFETY: the CPU has the features, checked above; `x` and `o` hold four rows.
            let fast = unsafe { avx512::softmax_rows::<4>(x, row, o) };
            each(x, o, fast);
        }
        for (x, o) in xs.remainder().chunks_exact(row).zip(os.into_remainder().chunks_exact_mut(row)) {
            // SAFETY: as above, with one row.
            let fast = unsafe { avx512::softmax_rows::<1>(x, row, o) };
            each(x, o, fast);
        }
        return true;
    }
    false
}

/// `o = ((x - mean) * rsqrt(variance + eps)) * w + b` for one row on AVX-512 (16 lanes at a time, the row
/// staying in the first-level cache; the means' sums in another order than a row fold's, so within their
/// tolerance): `false`, writing nothing, where the machine lacks AVX-512F or the slices differ in length.
pub fn layer_norm_row_fast(x: &[f32], w: &[f32], b: &[f32], eps: f32, o: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if x.len() == o.len() && w.len() == o.len() && b.len() == o.len() && std::arch::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: the CPU has the feature, checked just above.
        return unsafe { avx512::layer_norm_row(x, w, b, eps, o) };
    }
    false
}

/// The mask of the first `n` lanes of a 16-lane vector (all of them from 16 on): a row's last, partial
/// vector.
pub fn first_lanes(n: usize) -> u16 {
    if n >= 16 { u16::MAX } else { (1u16 << n) - 1 }
}

/// `exp_fast_core` and `erf_fast_core` on 16 lanes with AVX-512F: the same operations in the same order,
/// except that `exp`'s `2^n` is applied by one `vscalefps` instead of two multiplies by powers of two built
/// from integer bits. Both are exact for a normal result and round once for a subnormal one, so the bits
/// are the same (the tests compare them); the instruction makes `exp` about twice as fast.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{
        ERF_LARGE, ERF_ONE, ERF_SMALL, ERF_SPLIT, EXP_OVERFLOW, EXP_TAYLOR, EXP_UNDERFLOW, FAST_LN2_HI, FAST_LN2_LO,
    };
    use std::arch::x86_64::*;

    /// `o[i] = v(a[i])` 16 lanes at a time, the tail with the scalar `s`.
    macro_rules! each16 {
        ($a:ident, $o:ident, $v:ident, $s:path) => {{
            let n = $a.len().min($o.len());
            let whole = n - n % 16;
            for (x, y) in $a[..whole].chunks_exact(16).zip($o[..whole].chunks_exact_mut(16)) {
                // SAFETY: both chunks hold exactly 16 floats.
                unsafe { _mm512_storeu_ps(y.as_mut_ptr(), $v(_mm512_loadu_ps(x.as_ptr()))) };
            }
            for (y, &x) in $o[whole..n].iter_mut().zip(&$a[whole..n]) {
                *y = $s(x);
            }
        }};
    }

    /// `super::exp_fast` on 16 lanes at a time.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn exp(a: &[f32], o: &mut [f32]) {
        each16!(a, o, exp16, super::exp_fast_core);
    }

    /// `super::erf_fast` on 16 lanes at a time.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn erf(a: &[f32], o: &mut [f32]) {
        each16!(a, o, erf16, super::erf_fast_core);
    }

    /// `R` rows of `super::softmax_rows_fast` (`x` and `o` hold `R` rows of `row` floats): `false`, writing
    /// nothing, when one of them holds a NaN.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn softmax_rows<const R: usize>(x: &[f32], row: usize, o: &mut [f32]) -> bool {
        if x.len() < R * row || o.len() < R * row {
            return false;
        }
        let mask = |i: usize| super::first_lanes(row - i);
        // SAFETY (every block): lanes of `mask(i)` of row `r` are inside `x` and `o` (`r * row + i + lane <
        // R * row`).
        let (mut top, mut nan) = ([splat(f32::NEG_INFINITY); R], 0u16);
        for i in (0..row).step_by(16) {
            for (r, top) in top.iter_mut().enumerate() {
                let at = r * row + i;
                let v = unsafe { _mm512_mask_loadu_ps(splat(f32::NEG_INFINITY), mask(i), x.as_ptr().add(at)) };
                nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                *top = _mm512_max_ps(*top, v);
            }
        }
        if nan != 0 {
            return false;
        }
        let top: [__m512; R] = std::array::from_fn(|r| splat(_mm512_reduce_max_ps(top[r])));
        let mut sum = [splat(0.0); R];
        for i in (0..row).step_by(16) {
            for r in 0..R {
                let at = r * row + i;
                let v = unsafe { _mm512_maskz_loadu_ps(mask(i), x.as_ptr().add(at)) };
                let e = _mm512_maskz_mov_ps(mask(i), exp16(_mm512_sub_ps(v, top[r])));
                unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr().add(at), mask(i), e) };
                sum[r] = _mm512_add_ps(sum[r], e);
            }
        }
        let scale: [__m512; R] = std::array::from_fn(|r| splat(1.0 / _mm512_reduce_add_ps(sum[r])));
        for i in (0..row).step_by(16) {
            for (r, scale) in scale.iter().enumerate() {
                let at = r * row + i;
                unsafe {
                    let e = _mm512_maskz_loadu_ps(mask(i), o.as_ptr().add(at));
                    _mm512_mask_storeu_ps(o.as_mut_ptr().add(at), mask(i), _mm512_mul_ps(e, *scale));
                }
            }
        }
        true
    }

    /// `super::layer_norm_row_fast` (every slice of one length).
    #[target_feature(enable = "avx512f")]
    pub(super) fn layer_norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, o: &mut [f32]) -> bool {
        let n = x.len().min(o.len()).min(w.len()).min(b.len());
        let mask = |i: usize| super::first_lanes(n - i);
        let count = n as f32;
        // SAFETY (every block): lanes of `mask(i)` are inside every slice (`i + lane < n`).
        let mut sum = splat(0.0);
        for i in (0..n).step_by(16) {
            sum = _mm512_add_ps(sum, unsafe { _mm512_maskz_loadu_ps(mask(i), x.as_ptr().add(i)) });
        }
        let mean = splat(_mm512_reduce_add_ps(sum) / count);
        let mut squares = splat(0.0);
        for i in (0..n).step_by(16) {
            let c = _mm512_maskz_sub_ps(mask(i), unsafe { _mm512_maskz_loadu_ps(mask(i), x.as_ptr().add(i)) }, mean);
            unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr().add(i), mask(i), c) };
            squares = _mm512_add_ps(squares, _mm512_mul_ps(c, c));
        }
        let r = splat(1.0 / (_mm512_reduce_add_ps(squares) / count + eps).sqrt());
        for i in (0..n).step_by(16) {
            unsafe {
                let c = _mm512_maskz_loadu_ps(mask(i), o.as_ptr().add(i));
                let w = _mm512_maskz_loadu_ps(mask(i), w.as_ptr().add(i));
                let b = _mm512_maskz_loadu_ps(mask(i), b.as_ptr().add(i));
                let y = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(c, r), w), b);
                _mm512_mask_storeu_ps(o.as_mut_ptr().add(i), mask(i), y);
            }
        }
        true
    }

    /// `super::gelu_erf_fast` on 16 lanes at a time.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn gelu(a: &[f32], c: f32, o: &mut [f32]) {
        let n = a.len().min(o.len());
        let whole = n - n % 16;
        for (x, y) in a[..whole].chunks_exact(16).zip(o[..whole].chunks_exact_mut(16)) {
            // SAFETY: both chunks hold exactly 16 floats.
            unsafe {
                let x = _mm512_loadu_ps(x.as_ptr());
                let e = erf16(_mm512_mul_ps(x, splat(c)));
                let g = _mm512_mul_ps(_mm512_mul_ps(splat(0.5), x), _mm512_add_ps(splat(1.0), e));
                _mm512_storeu_ps(y.as_mut_ptr(), g);
            }
        }
        for (y, &x) in o[whole..n].iter_mut().zip(&a[whole..n]) {
            *y = super::gelu_core(x, c);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }

    /// `x` with the sign of `sign`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn copysign(x: __m512, sign: __m512) -> __m512 {
        let mask = _mm512_set1_epi32(i32::MAX);
        let bits = _mm512_ternarylogic_epi32::<0xCA>(mask, _mm512_castps_si512(x), _mm512_castps_si512(sign));
        _mm512_castsi512_ps(bits)
    }

    /// `super::exp_fast_core` on 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    fn exp16(x: __m512) -> __m512 {
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            splat(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fmadd_ps(n, splat(-FAST_LN2_HI), x);
        let r = _mm512_fmadd_ps(n, splat(-FAST_LN2_LO), r);
        let mut p = splat(EXP_TAYLOR[0]);
        for c in &EXP_TAYLOR[1..] {
            p = _mm512_fmadd_ps(p, r, splat(*c));
        }
        let y = _mm512_scalef_ps(p, n);
        let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, splat(EXP_OVERFLOW));
        let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, splat(EXP_UNDERFLOW));
        let y = _mm512_mask_blend_ps(over, y, splat(f32::INFINITY));
        _mm512_mask_blend_ps(under, y, splat(0.0))
    }

    /// `super::erf_fast_core` on 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    fn erf16(a: __m512) -> __m512 {
        let t = _mm512_abs_ps(a);
        let s = _mm512_mul_ps(a, a);
        let c = ERF_LARGE;
        let r = _mm512_fmadd_ps(splat(c[0]), t, splat(c[1]));
        let u = _mm512_fmadd_ps(splat(c[2]), t, splat(c[3]));
        let mut r = _mm512_fmadd_ps(r, s, u);
        for c in &c[4..] {
            r = _mm512_fmadd_ps(r, t, splat(*c));
        }
        let r = _mm512_fmadd_ps(r, t, _mm512_sub_ps(splat(0.0), t));
        let large = copysign(_mm512_sub_ps(splat(1.0), exp16(r)), a);
        let mut q = splat(ERF_SMALL[0]);
        for c in &ERF_SMALL[1..] {
            q = _mm512_fmadd_ps(q, s, splat(*c));
        }
        let small = _mm512_fmadd_ps(q, a, a);
        let is_large = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(t, splat(ERF_SPLIT));
        let is_one = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(t, splat(ERF_ONE));
        let y = _mm512_mask_blend_ps(is_large, small, large);
        _mm512_mask_blend_ps(is_one, y, copysign(splat(1.0), a))
    }
}

/// The instructions a loop of `each` may use beyond the baseline, when the CPU has them.
#[derive(Clone, Copy)]
enum Isa {
    /// AVX2: wider vectors change no bit, the operations being the same IEEE ones (Rust never fuses a
    /// multiply and an add on its own): libm's bits stay.
    Avx2,
    /// AVX2 and FMA: `mul_add` becomes one instruction (elsewhere it is a call); with AVX-512F, 16 lanes
    /// instead of 8 (the same operations, so the same bits).
    Avx2Fma,
}

/// `o[i] = f(a[i])`: the branch-free loop compiled for the baseline and for `isa`, picked at run time (`f`, an
/// `#[inline(always)]` function, is compiled into each).
#[inline(always)]
fn each(isa: Isa, a: &[f32], o: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        match isa {
            // SAFETY: the CPU has the features, checked in the same arm.
            Isa::Avx2 if has!("avx2") => return unsafe { each_avx2(a, o, f) },
            Isa::Avx2Fma if has!("avx512f") => return unsafe { each_avx512(a, o, f) },
            Isa::Avx2Fma if has!("avx2") && has!("fma") => return unsafe { each_avx2_fma(a, o, f) },
            _ => {}
        }
    }
    each_in(a, o, f);
}

#[inline(always)]
fn each_in(a: &[f32], o: &mut [f32], f: impl Fn(f32) -> f32) {
    for (o, &x) in o.iter_mut().zip(a) {
        *o = f(x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn each_avx2(a: &[f32], o: &mut [f32], f: impl Fn(f32) -> f32) {
    each_in(a, o, f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn each_avx2_fma(a: &[f32], o: &mut [f32], f: impl Fn(f32) -> f32) {
    each_in(a, o, f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn each_avx512(a: &[f32], o: &mut [f32], f: impl Fn(f32) -> f32) {
    each_in(a, o, f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// Checks `f` against `reference` on every input whose bits are `start + i * step`; the first
    /// mismatch.
    fn compare(f: fn(&[f32], &mut [f32]), reference: fn(f32) -> f32, step: u64) -> Option<(u32, u32, u32)> {
        (0..(1u64 << 32) / step / 4096 + 1).into_par_iter().find_map_any(|block| {
            let xs: Vec<f32> = (0..4096u64)
                .map(|i| (block * 4096 + i) * step)
                .filter(|&b| b < 1 << 32)
                .map(|b| f32::from_bits(b as u32))
                .collect();
            let mut out = vec![0.0; xs.len()];
            f(&xs, &mut out);
            xs.iter().zip(&out).find_map(|(&x, &y)| {
                let want = reference(x);
                let same = want.to_bits() == y.to_bits() || (want.is_nan() && y.is_nan());
                (!same).then_some((x.to_bits(), want.to_bits(), y.to_bits()))
            })
        })
    }

    #[test]
    fn exp_matches_libm_on_a_sample_of_every_range() {
        assert_eq!(compare(exp, libm::expf, 997), None);
    }

    #[test]
    fn erf_matches_libm_on_a_sample_of_every_range() {
        assert_eq!(compare(erf, libm::erff, 997), None);
    }

    /// `erf_fast` is within one ulp of the exact erf (f64) on a sample of every range, and exact at the
    /// edges.
    #[test]
    fn fast_erf_is_within_an_ulp() {
        let worst = worst_ulps(erf_fast, libm::erf);
        assert!(worst <= 1.0, "{worst} ulp");
        let mut out = [0.0f32; 5];
        erf_fast(&[f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, f32::NAN], &mut out);
        assert_eq!(
            out[..4].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            [1.0f32, -1.0, 0.0, -0.0].map(f32::to_bits)
        );
        assert!(out[4].is_nan());
    }

    /// The largest error of `f` against `exact` (computed in f64) over every 997th f32 where `exact` is
    /// finite, in ulps of the f32 result (subnormal ulps below the normal range).
    fn worst_ulps(f: fn(&[f32], &mut [f32]), exact: fn(f64) -> f64) -> f64 {
        (0..(1u64 << 32) / 997 / 4096 + 1)
            .into_par_iter()
            .map(|block| {
                let xs: Vec<f32> = (0..4096u64)
                    .map(|i| (block * 4096 + i) * 997)
                    .filter(|&b| b < 1 << 32)
                    .map(|b| f32::from_bits(b as u32))
                    .filter(|&x| x.is_finite() && (exact(f64::from(x)) as f32).is_finite())
                    .collect();
                let mut out = vec![0.0; xs.len()];
                f(&xs, &mut out);
                xs.iter()
                    .zip(&out)
                    .map(|(&x, &y)| {
                        let want = exact(f64::from(x));
                        let w = (want as f32).abs();
                        let ulp = f64::from(f32::from_bits(w.to_bits() + 1)) - f64::from(w);
                        (f64::from(y) - want).abs() / ulp
                    })
                    .fold(0.0f64, f64::max)
            })
            .reduce(|| 0.0, f64::max)
    }

    /// The AVX-512 forms of `exp_fast` and `erf_fast` give the scalar cores' bits on every 997th f32 and the
    /// special values (on a machine without AVX-512 both sides are the scalar cores).
    #[test]
    fn fast_exp_and_erf_lanes_equal_their_scalar_cores() {
        for (f, core) in
            [(exp_fast as fn(&[f32], &mut [f32]), exp_fast_core as fn(f32) -> f32), (erf_fast, erf_fast_core)]
        {
            let first = (0..(1u64 << 32) / 997 / 4096 + 1).into_par_iter().find_map_any(|block| {
                let mut xs: Vec<f32> = (0..4096u64)
                    .map(|i| (block * 4096 + i) * 997)
                    .filter(|&b| b < 1 << 32)
                    .map(|b| f32::from_bits(b as u32))
                    .collect();
                if block == 0 {
                    xs.extend([f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, f32::NAN, 88.72284, 88.72285, -104.0]);
                }
                let mut out = vec![0.0; xs.len()];
                f(&xs, &mut out);
                xs.iter().zip(&out).find_map(|(&x, &y)| {
                    let want = core(x);
                    let same = want.to_bits() == y.to_bits() || (want.is_nan() && y.is_nan());
                    (!same).then_some((x, want, y))
                })
            });
            assert_eq!(first, None);
        }
    }

    #[test]
    fn fast_exp_is_within_an_ulp() {
        let worst = worst_ulps(exp_fast, f64::exp);
        assert!(worst <= 1.0, "{worst} ulp");
        let mut out = [0.0f32; 6];
        exp_fast(&[f32::INFINITY, f32::NEG_INFINITY, 0.0, 89.0, -110.0, f32::NAN], &mut out);
        assert_eq!(out[..5], [f32::INFINITY, 0.0, 1.0, f32::INFINITY, 0.0]);
        assert!(out[5].is_nan());
    }

    /// Every one of the 2^32 inputs (a minute or two): `cargo test --release -p tdsl-runtime vmath -- --ignored`.
    #[test]
    #[ignore]
    fn exp_and_erf_match_libm_on_every_input() {
        assert_eq!(compare(exp, libm::expf, 1), None);
        assert_eq!(compare(erf, libm::erff, 1), None);
    }
}
