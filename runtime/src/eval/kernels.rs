//! Elementwise kernels on the first `n` elements of `Vals` buffers, shared by whole-tensor nodes and by
//! `Map` bodies (which evaluate each scalar node for a batch of output elements at once). This file is where
//! the arithmetic of every op is defined: wrapping integers, `x / 0 = x`, `x % 0 = 0`, IEEE `f32` with
//! NaN-propagating min/max, transcendental functions from the `libm` crate (the same bits on every
//! platform), and `f16` as `f32` arithmetic rounded after every op.
//!
//! A storage-kind mismatch (impossible after `verify`) is reported as `KindMismatch`, never a panic.

use super::values::{Lit, Vals, finish};
use crate::DType;
use crate::ops::{BinaryOp, ReduceOp, UnaryOp};

/// The operands' storage kinds do not fit the op (the verifier rules this out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindMismatch;

type KResult = Result<(), KindMismatch>;

/// IEEE 754-2019 `maximum`: NaN if either is NaN, and `+0 > -0`. Written as selects, no branch, so folds and
/// elementwise loops over it vectorize: equal operands are `+0` and `-0` or the same bits, and the AND of
/// their bits is then the larger.
#[inline(always)]
pub fn fmax(a: f32, b: f32) -> f32 {
    let larger = if a > b { a } else { b };
    let larger = if a == b { f32::from_bits(a.to_bits() & b.to_bits()) } else { larger };
    if a.is_nan() | b.is_nan() { f32::NAN } else { larger }
}

/// IEEE 754-2019 `minimum`: NaN if either is NaN, and `-0 < +0`. Selects, as `fmax`: the OR of equal
/// operands' bits is the smaller.
#[inline(always)]
pub fn fmin(a: f32, b: f32) -> f32 {
    let smaller = if a < b { a } else { b };
    let smaller = if a == b { f32::from_bits(a.to_bits() | b.to_bits()) } else { smaller };
    if a.is_nan() | b.is_nan() { f32::NAN } else { smaller }
}

/// Integer arithmetic as the IR defines it for `i32` and `u32`.
pub trait Int: Copy + Ord {
    /// Zero.
    const ZERO: Self;
    /// Wrapping `+`.
    fn wadd(self, o: Self) -> Self;
    /// Wrapping `-`.
    fn wsub(self, o: Self) -> Self;
    /// Wrapping `*`.
    fn wmul(self, o: Self) -> Self;
    /// Wrapping negation.
    fn wneg(self) -> Self;
    /// Wrapping absolute value.
    fn wabs(self) -> Self;
    /// Truncating; `x / 0 = x`; `MIN / -1 = MIN`.
    fn div0(self, o: Self) -> Self;
    /// Truncating (sign of the dividend); `x % 0 = 0`; `MIN % -1 = 0`.
    fn rem0(self, o: Self) -> Self;
}

macro_rules! impl_int {
    ($t:ty, $abs:expr) => {
        impl Int for $t {
            const ZERO: Self = 0;
            #[inline]
            fn wadd(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            #[inline]
            fn wsub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            #[inline]
            fn wmul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            #[inline]
            fn wneg(self) -> Self {
                self.wrapping_neg()
            }
            #[inline]
            fn wabs(self) -> Self {
                let abs: fn(Self) -> Self = $abs;
                abs(self)
            }
            #[inline]
            fn div0(self, o: Self) -> Self {
                if o == 0 { self } else { self.wrapping_div(o) }
            }
            #[inline]
            fn rem0(self, o: Self) -> Self {
                if o == 0 { 0 } else { self.wrapping_rem(o) }
            }
        }
    };
}
impl_int!(i32, |x: i32| x.wrapping_abs());
impl_int!(u32, |x: u32| x);

#[inline(always)]
fn zip1<A: Copy, O>(a: &[A], o: &mut [O], f: impl Fn(A) -> O) {
    for (o, &x) in o.iter_mut().zip(a) {
        *o = f(x);
    }
}

#[inline(always)]
fn zip2<A: Copy, B: Copy, O>(a: &[A], b: &[B], o: &mut [O], f: impl Fn(A, B) -> O) {
    for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

fn relu(x: f32) -> f32 {
    fmax(x, 0.0)
}
fn rsqrt(x: f32) -> f32 {
    1.0 / x.sqrt()
}
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

/// `out = op(a)`; `dtype` is the operand's (and result's) dtype.
pub fn unary(op: UnaryOp, dtype: DType, a: &Vals, out: &mut Vals, n: usize) -> KResult {
    match (a, out) {
        (Vals::F(a), Vals::F(o)) => unary_f32(op, dtype, &a[..n], &mut o[..n]),
        (Vals::I(a), Vals::I(o)) => int_unary(op, &a[..n], &mut o[..n]),
        (Vals::U(a), Vals::U(o)) => int_unary(op, &a[..n], &mut o[..n]),
        (Vals::B(a), Vals::B(o)) if op == UnaryOp::Not => {
            zip1(&a[..n], &mut o[..n], |x: bool| !x);
            Ok(())
        }
        _ => Err(KindMismatch),
    }
}

/// `o = op(a)` on floats (`dtype` `f32` or `f16`, stored as `f32`): the float case of `unary`, on slices of
/// equal length.
pub fn unary_f32(op: UnaryOp, dtype: DType, a: &[f32], o: &mut [f32]) -> KResult {
    match op {
        UnaryOp::Neg => zip1(a, o, |x| -x),
        UnaryOp::Abs => zip1(a, o, f32::abs),
        UnaryOp::Relu => zip1(a, o, relu),
        UnaryOp::Floor => zip1(a, o, f32::floor),
        UnaryOp::Ceil => zip1(a, o, f32::ceil),
        UnaryOp::Round => zip1(a, o, f32::round_ties_even),
        UnaryOp::Atan => zip1(a, o, libm::atanf),
        UnaryOp::Sqrt => zip1(a, o, f32::sqrt),
        UnaryOp::Rsqrt => zip1(a, o, rsqrt),
        UnaryOp::Exp => super::vmath::exp(a, o),
        UnaryOp::Log => zip1(a, o, libm::logf),
        UnaryOp::Tanh => zip1(a, o, libm::tanhf),
        UnaryOp::Erf => super::vmath::erf(a, o),
        UnaryOp::Sigmoid => zip1(a, o, sigmoid),
        UnaryOp::Sin => zip1(a, o, libm::sinf),
        UnaryOp::Cos => zip1(a, o, libm::cosf),
        UnaryOp::Not => return Err(KindMismatch),
    }
    finish(dtype, o);
    Ok(())
}

fn int_unary<T: Int>(op: UnaryOp, a: &[T], o: &mut [T]) -> KResult {
    match op {
        UnaryOp::Neg => zip1(a, o, T::wneg),
        UnaryOp::Abs => zip1(a, o, T::wabs),
        UnaryOp::Relu => zip1(a, o, |x| x.max(T::ZERO)),
        _ => return Err(KindMismatch),
    }
    Ok(())
}

/// `out = a op b`; `dtype` is the result's dtype (`bool` for comparisons).
pub fn binary(op: BinaryOp, dtype: DType, a: &Vals, b: &Vals, out: &mut Vals, n: usize) -> KResult {
    if op.is_comparison() {
        let Vals::B(o) = out else { return Err(KindMismatch) };
        let o = &mut o[..n];
        return match (a, b) {
            (Vals::F(a), Vals::F(b)) => compare(op, &a[..n], &b[..n], o),
            (Vals::I(a), Vals::I(b)) => compare(op, &a[..n], &b[..n], o),
            (Vals::U(a), Vals::U(b)) => compare(op, &a[..n], &b[..n], o),
            (Vals::B(a), Vals::B(b)) if matches!(op, BinaryOp::Eq | BinaryOp::Ne) => compare(op, &a[..n], &b[..n], o),
            _ => Err(KindMismatch),
        };
    }
    match (a, b, out) {
        (Vals::F(a), Vals::F(b), Vals::F(o)) => binary_f32(op, dtype, &a[..n], &b[..n], &mut o[..n]),
        (Vals::I(a), Vals::I(b), Vals::I(o)) => int_binary(op, &a[..n], &b[..n], &mut o[..n]),
        (Vals::U(a), Vals::U(b), Vals::U(o)) => int_binary(op, &a[..n], &b[..n], &mut o[..n]),
        (Vals::B(a), Vals::B(b), Vals::B(o)) => {
            let (a, b, o) = (&a[..n], &b[..n], &mut o[..n]);
            match op {
                BinaryOp::And => zip2(a, b, o, |x, y| x && y),
                BinaryOp::Or => zip2(a, b, o, |x, y| x || y),
                _ => return Err(KindMismatch),
            }
            Ok(())
        }
        _ => Err(KindMismatch),
    }
}

/// `$loop(args)`, an `#[inline(always)]` float loop, compiled for AVX-512F, for AVX2 and for the baseline,
/// the widest the CPU has picked at run time: the same IEEE operations on wider vectors, so the same bits
/// (Rust never fuses a multiply and an add on its own).
macro_rules! widest {
    ($loop:ident($($arg:ident: $ty:ty),*)) => {{
        #[cfg(target_arch = "x86_64")]
        let done = {
            #[target_feature(enable = "avx512f")]
            fn avx512($($arg: $ty),*) -> KResult {
                $loop($($arg),*)
            }
            #[target_feature(enable = "avx2")]
            fn avx2($($arg: $ty),*) -> KResult {
                $loop($($arg),*)
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, checked just above.
                unsafe { avx512($($arg),*) }
            } else if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe { avx2($($arg),*) }
            } else {
                $loop($($arg),*)
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = $loop($($arg),*);
        done
    }};
}

/// `o = a op b` on floats (not a comparison; `dtype` `f32` or `f16`): the float case of `binary`, on slices
/// of equal length.
pub fn binary_f32(op: BinaryOp, dtype: DType, a: &[f32], b: &[f32], o: &mut [f32]) -> KResult {
    widest!(binary_f32_loop(op: BinaryOp, a: &[f32], b: &[f32], o: &mut [f32]))?;
    finish(dtype, o);
    Ok(())
}

/// `o = a op s`, or `o = s op a` when `scalar_left`: `binary_f32` with one operand the scalar `s` repeated
/// (the same bits), without materializing the repeats.
pub fn binary_f32_splat(op: BinaryOp, dtype: DType, a: &[f32], s: f32, scalar_left: bool, o: &mut [f32]) -> KResult {
    widest!(binary_f32_splat_loop(op: BinaryOp, a: &[f32], s: f32, scalar_left: bool, o: &mut [f32]))?;
    finish(dtype, o);
    Ok(())
}

/// `binary_f32_splat` row by row: row `r` of `a` (rows of `row` elements) with the scalar `s[r]`, the same
/// bits as each row's value repeated along it.
pub fn binary_f32_rows(
    op: BinaryOp,
    dtype: DType,
    a: &[f32],
    s: &[f32],
    row: usize,
    scalar_left: bool,
    o: &mut [f32],
) -> KResult {
    if row == 0 || a.len() != o.len() || a.len() != s.len() * row {
        return Err(KindMismatch);
    }
    widest!(binary_f32_rows_loop(op: BinaryOp, a: &[f32], s: &[f32], row: usize, scalar_left: bool, o: &mut [f32]))?;
    finish(dtype, o);
    Ok(())
}

#[inline(always)]
fn binary_f32_rows_loop(op: BinaryOp, a: &[f32], s: &[f32], row: usize, scalar_left: bool, o: &mut [f32]) -> KResult {
    for ((a, o), &s) in a.chunks_exact(row).zip(o.chunks_exact_mut(row)).zip(s) {
        binary_f32_splat_loop(op, a, s, scalar_left, o)?;
    }
    Ok(())
}

#[inline(always)]
fn binary_f32_splat_loop(op: BinaryOp, a: &[f32], s: f32, scalar_left: bool, o: &mut [f32]) -> KResult {
    macro_rules! each {
        ($f:expr) => {{
            let f = $f;
            if scalar_left { zip1(a, o, |x| f(s, x)) } else { zip1(a, o, |x| f(x, s)) }
        }};
    }
    match op {
        BinaryOp::Add => each!(|x: f32, y: f32| x + y),
        BinaryOp::Sub => each!(|x: f32, y: f32| x - y),
        BinaryOp::Mul => each!(|x: f32, y: f32| x * y),
        BinaryOp::Div => each!(|x: f32, y: f32| x / y),
        BinaryOp::Min => each!(fmin),
        BinaryOp::Max => each!(fmax),
        _ => {
            let repeated = vec![s; a.len()];
            let (x, y) = if scalar_left { (&repeated[..], a) } else { (a, &repeated[..]) };
            return binary_f32_loop(op, x, y, o);
        }
    }
    Ok(())
}

#[inline(always)]
fn binary_f32_loop(op: BinaryOp, a: &[f32], b: &[f32], o: &mut [f32]) -> KResult {
    match op {
        BinaryOp::Add => zip2(a, b, o, |x, y| x + y),
        BinaryOp::Sub => zip2(a, b, o, |x, y| x - y),
        BinaryOp::Mul => zip2(a, b, o, |x, y| x * y),
        BinaryOp::Div => zip2(a, b, o, |x, y| x / y),
        BinaryOp::Rem => zip2(a, b, o, |x, y| x - y * (x / y).trunc()),
        BinaryOp::Pow => zip2(a, b, o, libm::powf),
        BinaryOp::Min => zip2(a, b, o, fmin),
        BinaryOp::Max => zip2(a, b, o, fmax),
        _ => return Err(KindMismatch),
    }
    Ok(())
}

fn compare<T: Copy + PartialOrd>(op: BinaryOp, a: &[T], b: &[T], o: &mut [bool]) -> KResult {
    match op {
        BinaryOp::Lt => zip2(a, b, o, |x, y| x < y),
        BinaryOp::Le => zip2(a, b, o, |x, y| x <= y),
        BinaryOp::Gt => zip2(a, b, o, |x, y| x > y),
        BinaryOp::Ge => zip2(a, b, o, |x, y| x >= y),
        BinaryOp::Eq => zip2(a, b, o, |x, y| x == y),
        BinaryOp::Ne => zip2(a, b, o, |x, y| x != y),
        _ => return Err(KindMismatch),
    }
    Ok(())
}

fn int_binary<T: Int>(op: BinaryOp, a: &[T], b: &[T], o: &mut [T]) -> KResult {
    match op {
        BinaryOp::Add => zip2(a, b, o, T::wadd),
        BinaryOp::Sub => zip2(a, b, o, T::wsub),
        BinaryOp::Mul => zip2(a, b, o, T::wmul),
        BinaryOp::Div => zip2(a, b, o, T::div0),
        BinaryOp::Rem => zip2(a, b, o, T::rem0),
        BinaryOp::Min => zip2(a, b, o, |x, y| x.min(y)),
        BinaryOp::Max => zip2(a, b, o, |x, y| x.max(y)),
        _ => return Err(KindMismatch),
    }
    Ok(())
}

/// `cond ? t : f` on the elements' bits, branch-free: a mask from the condition's bit.
#[inline(always)]
pub fn select_bits(cond: bool, t: u32, f: u32) -> u32 {
    let m = (cond as u32).wrapping_neg();
    (t & m) | (f & !m)
}

/// `out = cond ? on_true : on_false`.
pub fn select(cond: &Vals, on_true: &Vals, on_false: &Vals, out: &mut Vals, n: usize) -> KResult {
    let Vals::B(c) = cond else { return Err(KindMismatch) };
    // Branch-free (a mask from the condition's bit), so data-dependent conditions (a ReLU's, a guard's)
    // cost no mispredictions and the loops vectorize.
    fn pick<T: Copy>(c: &[bool], t: &[T], f: &[T], o: &mut [T], bits: fn(T) -> u32, back: fn(u32) -> T) {
        for (((o, &c), &t), &f) in o.iter_mut().zip(c).zip(t).zip(f) {
            *o = back(select_bits(c, bits(t), bits(f)));
        }
    }
    let c = &c[..n];
    match (on_true, on_false, out) {
        (Vals::F(t), Vals::F(f), Vals::F(o)) => pick(c, &t[..n], &f[..n], &mut o[..n], f32::to_bits, f32::from_bits),
        (Vals::I(t), Vals::I(f), Vals::I(o)) => pick(c, &t[..n], &f[..n], &mut o[..n], |x| x as u32, |x| x as i32),
        (Vals::U(t), Vals::U(f), Vals::U(o)) => pick(c, &t[..n], &f[..n], &mut o[..n], |x| x, |x| x),
        (Vals::B(t), Vals::B(f), Vals::B(o)) => {
            for (((o, &c), &t), &f) in o[..n].iter_mut().zip(c).zip(&t[..n]).zip(&f[..n]) {
                *o = (c & t) | (!c & f);
            }
        }
        _ => return Err(KindMismatch),
    }
    Ok(())
}

/// `out = a as to`: floats to integers truncate toward zero and saturate (NaN -> 0), integers convert to
/// each other by wrapping (two's complement), to `bool` is `x != 0`, from `bool` is 0 or 1, and results of
/// dtype `f16` are rounded to nearest.
pub fn cast(a: &Vals, to: DType, out: &mut Vals, n: usize) -> KResult {
    match (a, out) {
        (Vals::F(a), Vals::F(o)) => {
            o[..n].copy_from_slice(&a[..n]);
            finish(to, &mut o[..n]);
        }
        (Vals::F(a), Vals::I(o)) => zip1(&a[..n], &mut o[..n], |x| x as i32),
        (Vals::F(a), Vals::U(o)) => zip1(&a[..n], &mut o[..n], |x| x as u32),
        (Vals::F(a), Vals::B(o)) => zip1(&a[..n], &mut o[..n], |x| x != 0.0),
        (Vals::I(a), Vals::F(o)) => {
            zip1(&a[..n], &mut o[..n], |x| x as f32);
            finish(to, &mut o[..n]);
        }
        (Vals::I(a), Vals::I(o)) => o[..n].copy_from_slice(&a[..n]),
        (Vals::I(a), Vals::U(o)) => zip1(&a[..n], &mut o[..n], |x| x as u32),
        (Vals::I(a), Vals::B(o)) => zip1(&a[..n], &mut o[..n], |x| x != 0),
        (Vals::U(a), Vals::F(o)) => {
            zip1(&a[..n], &mut o[..n], |x| x as f32);
            finish(to, &mut o[..n]);
        }
        (Vals::U(a), Vals::I(o)) => zip1(&a[..n], &mut o[..n], |x| x as i32),
        (Vals::U(a), Vals::U(o)) => o[..n].copy_from_slice(&a[..n]),
        (Vals::U(a), Vals::B(o)) => zip1(&a[..n], &mut o[..n], |x| x != 0),
        (Vals::B(a), Vals::F(o)) => zip1(&a[..n], &mut o[..n], |x| if x { 1.0 } else { 0.0 }),
        (Vals::B(a), Vals::I(o)) => zip1(&a[..n], &mut o[..n], i32::from),
        (Vals::B(a), Vals::U(o)) => zip1(&a[..n], &mut o[..n], u32::from),
        (Vals::B(a), Vals::B(o)) => o[..n].copy_from_slice(&a[..n]),
    }
    Ok(())
}

/// The starting accumulator of a reduction: the identity of its combining step.
pub fn reduce_init(op: ReduceOp, dtype: DType) -> Lit {
    match (op, dtype) {
        (ReduceOp::Sum | ReduceOp::Mean, DType::I32) => Lit::I(0),
        (ReduceOp::Sum | ReduceOp::Mean, DType::U32) => Lit::U(0),
        (ReduceOp::Prod, DType::I32) => Lit::I(1),
        (ReduceOp::Prod, DType::U32) => Lit::U(1),
        (ReduceOp::Max, DType::I32) => Lit::I(i32::MIN),
        (ReduceOp::Max, DType::U32) => Lit::U(0),
        (ReduceOp::Min, DType::I32) => Lit::I(i32::MAX),
        (ReduceOp::Min, DType::U32) => Lit::U(u32::MAX),
        (_, DType::Bool) => Lit::B(false),
        (ReduceOp::Sum | ReduceOp::Mean, _) => Lit::F(0.0),
        (ReduceOp::Prod, _) => Lit::F(1.0),
        (ReduceOp::Max, _) => Lit::F(f32::NEG_INFINITY),
        (ReduceOp::Min, _) => Lit::F(f32::INFINITY),
    }
}

/// The combining step of a reduction for one element: `acc = acc op x` (floats in `f32`, never rounded to
/// `f16` until `reduce_finish`).
#[inline(always)]
pub fn combine_f32(op: ReduceOp) -> fn(f32, f32) -> f32 {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => |a, x| a + x,
        ReduceOp::Prod => |a, x| a * x,
        ReduceOp::Max => fmax,
        ReduceOp::Min => fmin,
    }
}

/// The combining step of `op` on integers (wrapping sum and product).
pub fn combine_int<T: Int>(op: ReduceOp) -> fn(T, T) -> T {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => T::wadd,
        ReduceOp::Prod => T::wmul,
        ReduceOp::Max => |a: T, x: T| a.max(x),
        ReduceOp::Min => |a: T, x: T| a.min(x),
    }
}

/// `acc[i] = acc[i] op x[i]` for the first `n` elements.
pub fn accumulate(op: ReduceOp, acc: &mut Vals, x: &Vals, n: usize) -> KResult {
    match (acc, x) {
        (Vals::F(acc), Vals::F(x)) => {
            let (acc, x) = (&mut acc[..n], &x[..n]);
            match op {
                ReduceOp::Sum | ReduceOp::Mean => acc.iter_mut().zip(x).for_each(|(a, &x)| *a += x),
                ReduceOp::Prod => acc.iter_mut().zip(x).for_each(|(a, &x)| *a *= x),
                ReduceOp::Max => acc.iter_mut().zip(x).for_each(|(a, &x)| *a = fmax(*a, x)),
                ReduceOp::Min => acc.iter_mut().zip(x).for_each(|(a, &x)| *a = fmin(*a, x)),
            }
        }
        (Vals::I(acc), Vals::I(x)) => {
            let f = combine_int::<i32>(op);
            acc[..n].iter_mut().zip(&x[..n]).for_each(|(a, &x)| *a = f(*a, x));
        }
        (Vals::U(acc), Vals::U(x)) => {
            let f = combine_int::<u32>(op);
            acc[..n].iter_mut().zip(&x[..n]).for_each(|(a, &x)| *a = f(*a, x));
        }
        _ => return Err(KindMismatch),
    }
    Ok(())
}

/// Ends a reduction of `count` elements per output: `mean` divides the `f32` sum by `count` (as an `f32`),
/// then `f16` results are rounded.
pub fn reduce_finish(op: ReduceOp, dtype: DType, acc: &mut Vals, n: usize, count: usize) {
    if let Vals::F(acc) = acc {
        let acc = &mut acc[..n];
        if op == ReduceOp::Mean {
            let c = count as f32;
            acc.iter_mut().for_each(|a| *a /= c);
        }
        finish(dtype, acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fmax` and `fmin` are IEEE 754-2019 `maximum` and `minimum`, bit for bit: NaN from either NaN, `+0`
    /// above `-0`, otherwise the larger or smaller (the definition written with branches).
    #[test]
    fn fmax_and_fmin_are_ieee_maximum_and_minimum() {
        let values = [0.0f32, -0.0, 1.0, -1.0, 2.5e-45, -3e38, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN];
        for a in values {
            for b in values {
                let nan = a.is_nan() || b.is_nan();
                let max = if nan {
                    f32::NAN
                } else if a > b || (a == b && a.is_sign_positive()) {
                    a
                } else {
                    b
                };
                let min = if nan {
                    f32::NAN
                } else if a < b || (a == b && a.is_sign_negative()) {
                    a
                } else {
                    b
                };
                assert_eq!(fmax(a, b).to_bits(), max.to_bits(), "max({a}, {b})");
                assert_eq!(fmin(a, b).to_bits(), min.to_bits(), "min({a}, {b})");
            }
        }
    }

    /// A scalar operand unexpanded gives the bits of the same operand repeated, on either side, for every
    /// float op (NaN, infinities and signed zeros among the values).
    #[test]
    fn splat_operands_match_repeated_ones() {
        let values = [0.0f32, -0.0, 1.5, -2.25, 3e38, -1e-40, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 7.0];
        let ops = [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Rem,
            BinaryOp::Pow,
            BinaryOp::Min,
            BinaryOp::Max,
        ];
        for op in ops {
            for dtype in [DType::F32, DType::F16] {
                for &s in &values {
                    let repeated = vec![s; values.len()];
                    for left in [false, true] {
                        let (x, y) = if left { (&repeated[..], &values[..]) } else { (&values[..], &repeated[..]) };
                        let mut want = vec![0.0; values.len()];
                        binary_f32(op, dtype, x, y, &mut want).unwrap();
                        let mut got = vec![0.0; values.len()];
                        binary_f32_splat(op, dtype, &values, s, left, &mut got).unwrap();
                        let bits = |v: &[f32]| {
                            v.iter().map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() }).collect::<Vec<_>>()
                        };
                        assert_eq!(bits(&got), bits(&want), "{op:?} {dtype:?} s = {s} left = {left}");
                    }
                }
            }
        }
    }
}
