//! Scalar arithmetic with the IR's semantics, as naga expressions: every `UnaryOp`, `BinaryOp` and cast
//! on values of every dtype. Values are held as WGSL types: `f32` for f32 and f16 (an f16 result is rounded
//! to f16 after every op, as the interpreter rounds: `quantizeToF16`, with the subnormal range rounded
//! explicitly since `quantizeToF16` may flush it), `i32`, `u32`, and `bool`.
//!
//! Choices: erf by Abramowitz-Stegun 7.1.26 (absolute error at most 1.5e-7 plus f32 rounding); sigmoid as
//! `1 / (1 + exp(-x))`; rsqrt as `inverseSqrt`; float min/max are IEEE `minimum`/`maximum` (NaN wins,
//! `-0 < +0`); float `ne` is `!(x == y)` (NaN != NaN); NaN is tested on bits; integer `/` and `%` are WGSL's
//! (x / 0 = x, x % 0 = 0, MIN / -1 = MIN), which naga's backends implement with guards.

use naga::{BinaryOperator, Expression, Handle, MathFunction, ScalarKind, UnaryOperator};

use super::builder::FnBuilder;
use crate::ir::{BinaryOp, DType, UnaryOp};

type Expr = Handle<Expression>;

/// `x` rounded to f16 precision when `dtype` is f16 (values are held as f32), otherwise unchanged.
pub(super) fn round(b: &mut FnBuilder, x: Expr, dtype: DType) -> Expr {
    if dtype == DType::F16 { round_to_f16(b, x) } else { x }
}

/// `x` rounded to the nearest f16 (ties to even), subnormals included, as the interpreter rounds (`half`).
/// `quantizeToF16` rounds normal results so but may flush a result below the smallest normal f16 (2^-14)
/// to zero (SPIR-V `OpQuantizeToF16` allows it and lavapipe does), so that range is rounded explicitly:
/// f16 subnormals are the multiples of 2^-24, and `round(x * 2^24) * 2^-24` (`round` is ties-to-even;
/// both scalings are exact) is the nearest one, with the sign of a zero kept.
fn round_to_f16(b: &mut FnBuilder, x: Expr) -> Expr {
    let quantized = b.math(MathFunction::QuantizeToF16, &[x]);
    let scale = b.f32(16_777_216.0);
    let scaled = b.binary(BinaryOperator::Multiply, x, scale);
    let steps = b.math(MathFunction::Round, &[scaled]);
    let step = b.f32(1.0 / 16_777_216.0);
    let subnormal = b.binary(BinaryOperator::Multiply, steps, step);
    let magnitude = b.math(MathFunction::Abs, &[x]);
    let smallest_normal = b.f32(1.0 / 16_384.0);
    let below_normal = b.binary(BinaryOperator::Less, magnitude, smallest_normal);
    b.select(below_normal, subnormal, quantized)
}

fn is_zero_literal(b: &FnBuilder, e: Expr) -> bool {
    matches!(b.fun.expressions[e], Expression::Literal(naga::Literal::I32(0) | naga::Literal::U32(0)))
}

/// The arithmetic dtype of values of `dtype` (f16 computes as f32).
fn arith(dtype: DType) -> DType {
    if dtype == DType::F16 { DType::F32 } else { dtype }
}

/// `op x` for `x` of `dtype`, rounded to `dtype`; `None` when the op does not take `dtype`.
pub(super) fn unary_op(b: &mut FnBuilder, op: UnaryOp, x: Expr, dtype: DType) -> Option<Expr> {
    let value = unary(b, op, x, arith(dtype))?;
    Some(round(b, value, dtype))
}

/// `x op y` for operands of `dtype`, rounded when the result is f16; `None` when the op does not take it.
pub(super) fn binary_op(b: &mut FnBuilder, op: BinaryOp, x: Expr, y: Expr, dtype: DType) -> Option<Expr> {
    // naga rejects an integer `/` or `%` by a literal zero; WGSL defines them as `x` and `0`.
    if dtype.is_int() && matches!(op, BinaryOp::Div | BinaryOp::Rem) && is_zero_literal(b, y) {
        return Some(if op == BinaryOp::Div { x } else { zero_of(b, dtype)? });
    }
    let value = binary(b, op, x, y, arith(dtype))?;
    Some(if op.is_comparison() { value } else { round(b, value, dtype) })
}

/// `x` of dtype `from` converted to `to` with the IR's semantics, rounded when `to` is f16.
pub(super) fn cast_op(b: &mut FnBuilder, x: Expr, from: DType, to: DType) -> Option<Expr> {
    let value = cast(b, x, arith(from), arith(to))?;
    Some(round(b, value, to))
}

/// The held value (f32) of a float constant of `dtype` (f16 constants rounded on the host); `None` for
/// other dtypes.
pub(super) fn literal_f32(value: crate::ir::Scalar, dtype: DType) -> Option<f32> {
    use crate::ir::Scalar as S;
    match (dtype, value) {
        (DType::F32, S::Float(v)) => Some(v as f32),
        (DType::F16, S::Float(v)) => Some(half::f16::from_f64(v).to_f32()),
        (DType::F32, S::Int(v)) => Some(v as f32),
        (DType::F16, S::Int(v)) => Some(half::f16::from_f64(v as f64).to_f32()),
        _ => None,
    }
}

/// A literal of `dtype`'s value type from an IR scalar (f16 constants rounded on the host).
pub(super) fn literal(b: &mut FnBuilder, value: crate::ir::Scalar, dtype: DType) -> Option<Expr> {
    use crate::ir::Scalar as S;
    if let Some(v) = literal_f32(value, dtype) {
        return Some(b.f32(v));
    }
    Some(match (dtype, value) {
        (DType::I32, S::Int(v)) => b.i32(v as i32),
        (DType::U32, S::Int(v)) => b.u32(v as u32),
        (DType::Bool, S::Bool(v)) => b.expr(Expression::Literal(naga::Literal::Bool(v))),
        _ => return None,
    })
}

/// The starting accumulator of a reduction over values of `dtype` (held type), as the interpreter starts.
pub(super) fn reduce_init(b: &mut FnBuilder, op: crate::ir::ReduceOp, dtype: DType) -> Option<Expr> {
    use crate::ir::ReduceOp as R;
    Some(match (op, arith(dtype)) {
        (R::Sum | R::Mean, DType::F32) => b.f32(0.0),
        (R::Prod, DType::F32) => b.f32(1.0),
        (R::Max, DType::F32) => b.f32(f32::NEG_INFINITY),
        (R::Min, DType::F32) => b.f32(f32::INFINITY),
        (R::Sum | R::Mean, DType::I32) => b.i32(0),
        (R::Prod, DType::I32) => b.i32(1),
        (R::Max, DType::I32) => b.i32(i32::MIN),
        (R::Min, DType::I32) => b.i32(i32::MAX),
        (R::Sum | R::Mean | R::Max, DType::U32) => b.u32(0),
        (R::Prod, DType::U32) => b.u32(1),
        (R::Min, DType::U32) => b.u32(u32::MAX),
        _ => return None,
    })
}

/// `acc op x` of one reduction step, never rounded to f16 (the interpreter rounds once, at the end).
pub(super) fn reduce_step(
    b: &mut FnBuilder,
    op: crate::ir::ReduceOp,
    acc: Expr,
    x: Expr,
    dtype: DType,
) -> Option<Expr> {
    use crate::ir::ReduceOp as R;
    let bin = match op {
        R::Sum | R::Mean => BinaryOp::Add,
        R::Prod => BinaryOp::Mul,
        R::Max => BinaryOp::Max,
        R::Min => BinaryOp::Min,
    };
    binary(b, bin, acc, x, arith(dtype))
}

pub(super) fn unary(b: &mut FnBuilder, op: UnaryOp, x: Expr, dtype: DType) -> Option<Expr> {
    use MathFunction as M;
    let value = match (dtype, op) {
        (DType::F32, UnaryOp::Neg) | (DType::I32, UnaryOp::Neg) => {
            b.expr(Expression::Unary { op: UnaryOperator::Negate, expr: x })
        }
        (DType::U32, UnaryOp::Neg) => {
            let zero = b.u32(0);
            b.binary(BinaryOperator::Subtract, zero, x)
        }
        (DType::Bool, UnaryOp::Not) => b.expr(Expression::Unary { op: UnaryOperator::LogicalNot, expr: x }),
        (DType::F32 | DType::I32, UnaryOp::Abs) => b.math(M::Abs, &[x]),
        (DType::U32, UnaryOp::Abs | UnaryOp::Relu) => x,
        (DType::F32, UnaryOp::Relu) => {
            let zero = b.f32(0.0);
            float_min_max(b, x, zero, false)
        }
        (DType::I32, UnaryOp::Relu) => {
            let zero = b.i32(0);
            b.math(M::Max, &[x, zero])
        }
        (DType::F32, UnaryOp::Exp) => b.math(M::Exp, &[x]),
        (DType::F32, UnaryOp::Log) => b.math(M::Log, &[x]),
        (DType::F32, UnaryOp::Sqrt) => b.math(M::Sqrt, &[x]),
        (DType::F32, UnaryOp::Rsqrt) => b.math(M::InverseSqrt, &[x]),
        (DType::F32, UnaryOp::Tanh) => b.math(M::Tanh, &[x]),
        (DType::F32, UnaryOp::Sin) => b.math(M::Sin, &[x]),
        (DType::F32, UnaryOp::Cos) => b.math(M::Cos, &[x]),
        (DType::F32, UnaryOp::Floor) => b.math(M::Floor, &[x]),
        (DType::F32, UnaryOp::Ceil) => b.math(M::Ceil, &[x]),
        (DType::F32, UnaryOp::Round) => b.math(M::Round, &[x]),
        (DType::F32, UnaryOp::Atan) => {
            // NaN stays NaN (drivers need not propagate it through `atan`).
            let nan = is_nan(b, x);
            let atan = b.math(M::Atan, &[x]);
            b.select(nan, x, atan)
        }
        (DType::F32, UnaryOp::Sigmoid) => {
            let negated = b.expr(Expression::Unary { op: UnaryOperator::Negate, expr: x });
            let exp = b.math(M::Exp, &[negated]);
            let one = b.f32(1.0);
            let denominator = b.binary(BinaryOperator::Add, one, exp);
            b.binary(BinaryOperator::Divide, one, denominator)
        }
        (DType::F32, UnaryOp::Erf) => erf(b, x),
        _ => return None,
    };
    Some(value)
}

/// Abramowitz-Stegun 7.1.26: for `a = |x|`, `t = 1 / (1 + p a)`,
/// `erf(a) = 1 - (a1 t + a2 t^2 + a3 t^3 + a4 t^4 + a5 t^5) exp(-a^2)` with absolute error at most 1.5e-7
/// (plus f32 rounding); odd symmetry gives negative `x`. WGSL has no `erf` builtin.
fn erf(b: &mut FnBuilder, x: Expr) -> Expr {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let a = b.math(MathFunction::Abs, &[x]);
    let p = b.f32(P);
    let one = b.f32(1.0);
    let pa = b.binary(BinaryOperator::Multiply, p, a);
    let denominator = b.binary(BinaryOperator::Add, one, pa);
    let t = b.binary(BinaryOperator::Divide, one, denominator);
    // Horner: t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5)))).
    let mut poly = b.f32(A[4]);
    for &coefficient in A[..4].iter().rev() {
        let scaled = b.binary(BinaryOperator::Multiply, t, poly);
        let c = b.f32(coefficient);
        poly = b.binary(BinaryOperator::Add, c, scaled);
    }
    let poly = b.binary(BinaryOperator::Multiply, t, poly);
    let square = b.binary(BinaryOperator::Multiply, a, a);
    let negated = b.expr(Expression::Unary { op: UnaryOperator::Negate, expr: square });
    let gauss = b.math(MathFunction::Exp, &[negated]);
    let tail = b.binary(BinaryOperator::Multiply, poly, gauss);
    let magnitude = b.binary(BinaryOperator::Subtract, one, tail);
    let sign = b.math(MathFunction::Sign, &[x]);
    b.binary(BinaryOperator::Multiply, sign, magnitude)
}

fn binary(b: &mut FnBuilder, op: BinaryOp, x: Expr, y: Expr, dtype: DType) -> Option<Expr> {
    use BinaryOperator as B;
    let numeric = matches!(dtype, DType::F32 | DType::I32 | DType::U32);
    let operator = match op {
        BinaryOp::Add if numeric => B::Add,
        BinaryOp::Sub if numeric => B::Subtract,
        BinaryOp::Mul if numeric => B::Multiply,
        BinaryOp::Div if numeric => B::Divide,
        // WGSL's float `%` is `x - y * trunc(x / y)`, the IR's definition.
        BinaryOp::Rem if numeric => B::Modulo,
        BinaryOp::Lt if numeric => B::Less,
        BinaryOp::Le if numeric => B::LessEqual,
        BinaryOp::Gt if numeric => B::Greater,
        BinaryOp::Ge if numeric => B::GreaterEqual,
        BinaryOp::Eq if dtype != DType::F16 => B::Equal,
        // naga writes float `!=` as an ordered comparison (false for NaN); the IR's `ne` is `!(x == y)`.
        BinaryOp::Ne if dtype == DType::F32 => {
            let equal = b.binary(B::Equal, x, y);
            return Some(b.expr(Expression::Unary { op: UnaryOperator::LogicalNot, expr: equal }));
        }
        BinaryOp::Ne if dtype != DType::F16 => B::NotEqual,
        BinaryOp::And if dtype == DType::Bool => B::LogicalAnd,
        BinaryOp::Or if dtype == DType::Bool => B::LogicalOr,
        BinaryOp::Pow if dtype == DType::F32 => return Some(pow(b, x, y)),
        BinaryOp::Min if dtype == DType::F32 => return Some(float_min_max(b, x, y, true)),
        BinaryOp::Max if dtype == DType::F32 => return Some(float_min_max(b, x, y, false)),
        BinaryOp::Min if numeric => return Some(b.math(MathFunction::Min, &[x, y])),
        BinaryOp::Max if numeric => return Some(b.math(MathFunction::Max, &[x, y])),
        _ => return None,
    };
    Some(b.binary(operator, x, y))
}

/// C99's `powf` (the interpreter's `libm::powf`): `exp2(y log2 |x|)`, with the cases WGSL's `pow` leaves
/// undefined spelt out: a zero, infinite or negative base, an infinite exponent, NaN, `pow(x, 0) = 1` and
/// `pow(1, y) = 1` (NaN included), a negative base to an odd integer power negative.
fn pow(b: &mut FnBuilder, x: Expr, y: Expr) -> Expr {
    use BinaryOperator as B;
    // A constant positive finite base other than 1 (RoPE's `base ^ e`) has none of those cases but an
    // infinite exponent: `exp2(y log2(x))` with `log2(x)` computed here in f64.
    if let Expression::Literal(naga::Literal::F32(base)) = b.fun.expressions[x]
        && base > 0.0
        && base.is_finite()
        && base != 1.0
    {
        let log = b.f32((f64::from(base)).log2() as f32);
        let scaled = b.binary(B::Multiply, y, log);
        let value = b.math(MathFunction::Exp2, &[scaled]);
        let (zero, inf) = (b.f32(0.0), b.f32(f32::INFINITY));
        let y_abs = b.math(MathFunction::Abs, &[y]);
        let y_inf = b.binary(B::Equal, y_abs, inf);
        // x > 1: y = +inf gives inf and -inf gives 0; x < 1 the other way round.
        let growing_sign = b.f32(if base > 1.0 { 1.0 } else { -1.0 });
        let y_sign = b.math(MathFunction::Sign, &[y]);
        let grows = b.binary(B::Equal, growing_sign, y_sign);
        let limit = b.select(grows, inf, zero);
        return b.select(y_inf, limit, value);
    }
    let (zero, one, two, half, inf) = (b.f32(0.0), b.f32(1.0), b.f32(2.0), b.f32(0.5), b.f32(f32::INFINITY));
    let a = b.math(MathFunction::Abs, &[x]);
    let log = b.math(MathFunction::Log2, &[a]);
    let scaled = b.binary(B::Multiply, y, log);
    let m = b.math(MathFunction::Exp2, &[scaled]);
    // |x| = 0 or an infinite exponent or base: 0 or inf, by whether |x| > 1 agrees with y > 0.
    let y_positive = b.binary(B::Greater, y, zero);
    let big = b.binary(B::Greater, a, one);
    let grows = b.binary(B::Equal, big, y_positive);
    let limit = b.select(grows, inf, zero);
    let a_zero = b.binary(B::Equal, a, zero);
    let at_zero = b.select(y_positive, zero, inf);
    let y_abs = b.math(MathFunction::Abs, &[y]);
    let y_inf = b.binary(B::Equal, y_abs, inf);
    let a_inf = b.binary(B::Equal, a, inf);
    let infinite = b.binary(B::LogicalOr, y_inf, a_inf);
    let m = b.select(infinite, limit, m);
    let magnitude = b.select(a_zero, at_zero, m);
    // The sign: a negative base (or -0) to an odd integer power.
    let y_floor = b.math(MathFunction::Floor, &[y]);
    let y_int = b.binary(B::Equal, y_floor, y);
    let y_half = b.binary(B::Multiply, y, half);
    let half_floor = b.math(MathFunction::Floor, &[y_half]);
    let twice = b.binary(B::Multiply, half_floor, two);
    let parity = b.binary(B::Subtract, y, twice);
    let odd = b.binary(B::Equal, parity, one);
    let x_bits = b.bitcast(x, ScalarKind::Uint);
    let sign_mask = b.u32(0x8000_0000);
    let x_sign = b.binary(B::And, x_bits, sign_mask);
    let zero_bits = b.u32(0);
    let x_negative = b.binary(B::NotEqual, x_sign, zero_bits);
    let flip = b.binary(B::LogicalAnd, x_negative, odd);
    let negated = b.expr(Expression::Unary { op: UnaryOperator::Negate, expr: magnitude });
    let signed = b.select(flip, negated, magnitude);
    // A finite negative base to a non-integer power is NaN.
    let x_below = b.binary(B::Less, x, zero);
    let finite = b.binary(B::Less, a, inf);
    let not_int = b.expr(Expression::Unary { op: UnaryOperator::LogicalNot, expr: y_int });
    let below_finite = b.binary(B::LogicalAnd, x_below, finite);
    let undefined = b.binary(B::LogicalAnd, below_finite, not_int);
    let nan = b.f32(f32::NAN);
    let defined = b.select(undefined, nan, signed);
    // NaN in, NaN out, except pow(x, 0) = pow(1, y) = pow(-1, +-inf) = 1.
    let x_nan = is_nan(b, x);
    let y_nan = is_nan(b, y);
    let any_nan = b.binary(B::LogicalOr, x_nan, y_nan);
    let propagated = b.binary(B::Add, x, y);
    let value = b.select(any_nan, propagated, defined);
    let y_zero = b.binary(B::Equal, y_abs, zero);
    let x_one = b.binary(B::Equal, x, one);
    let minus_one = b.f32(-1.0);
    let x_minus_one = b.binary(B::Equal, x, minus_one);
    let unit_inf = b.binary(B::LogicalAnd, x_minus_one, y_inf);
    let ones = b.binary(B::LogicalOr, y_zero, x_one);
    let is_one = b.binary(B::LogicalOr, ones, unit_inf);
    b.select(is_one, one, value)
}

/// Conversions with the IR's semantics: float to int truncates toward zero and saturates, NaN gives 0; int to
/// int wraps (a bit reinterpretation between i32 and u32); to bool is `x != 0`; from bool is 0 or 1.
fn cast(b: &mut FnBuilder, x: Expr, from: DType, to: DType) -> Option<Expr> {
    let value = match (from, to) {
        _ if from == to => x,
        (DType::F32, DType::I32) => saturate_to_int(b, x, -2_147_483_648.0, 2_147_483_648.0, ScalarKind::Sint),
        (DType::F32, DType::U32) => saturate_to_int(b, x, 0.0, 4_294_967_296.0, ScalarKind::Uint),
        (DType::I32 | DType::U32, DType::F32) => b.convert(x, ScalarKind::Float),
        (DType::I32, DType::U32) => b.bitcast(x, ScalarKind::Uint),
        (DType::U32, DType::I32) => b.bitcast(x, ScalarKind::Sint),
        (DType::F32, DType::Bool) => {
            // `!(x == 0)`, so NaN gives true (naga's float `!=` is ordered).
            let zero = b.f32(0.0);
            let is_zero = b.binary(BinaryOperator::Equal, x, zero);
            b.expr(Expression::Unary { op: UnaryOperator::LogicalNot, expr: is_zero })
        }
        (DType::I32 | DType::U32, DType::Bool) => {
            let zero = zero_of(b, from)?;
            b.binary(BinaryOperator::NotEqual, x, zero)
        }
        (DType::Bool, DType::F32 | DType::I32 | DType::U32) => {
            let zero = zero_of(b, to)?;
            let one = one_of(b, to)?;
            b.select(x, one, zero)
        }
        _ => return None,
    };
    Some(value)
}

/// `x` converted to an integer kind whose range is `[low, high)` as floats: values at or above `high` give
/// the maximum, values below `low` the minimum, NaN gives 0. (Out-of-range conversions are undefined in
/// SPIR-V, so the conversion only ever sees clamped inputs that the selects keep.)
fn saturate_to_int(b: &mut FnBuilder, x: Expr, low: f32, high: f32, kind: ScalarKind) -> Expr {
    let low_literal = b.f32(low);
    let clamped = b.math(MathFunction::Max, &[x, low_literal]);
    let converted = b.convert(clamped, kind);
    let high_literal = b.f32(high);
    let too_big = b.binary(BinaryOperator::GreaterEqual, x, high_literal);
    let (max, zero) = match kind {
        ScalarKind::Sint => (b.i32(i32::MAX), b.i32(0)),
        _ => (b.u32(u32::MAX), b.u32(0)),
    };
    let saturated = b.select(too_big, max, converted);
    let nan = is_nan(b, x);
    b.select(nan, zero, saturated)
}

/// Whether `x` replaces `best` as the running extreme of an index reduction over values of `dtype` (the
/// interpreter's `arg_beats_f32`): for floats, `best` is not NaN and `x` is NaN or strictly beyond it;
/// for integers, strictly beyond it. Ties keep the earlier position.
pub(super) fn arg_beats(b: &mut FnBuilder, op: crate::ir::ArgOp, best: Expr, x: Expr, dtype: DType) -> Option<Expr> {
    let beyond = match op {
        crate::ir::ArgOp::Max => BinaryOp::Gt,
        crate::ir::ArgOp::Min => BinaryOp::Lt,
    };
    let strictly = binary(b, beyond, x, best, arith(dtype))?;
    if !dtype.is_float() {
        return Some(strictly);
    }
    let x_nan = is_nan(b, x);
    let best_nan = is_nan(b, best);
    let best_number = b.expr(Expression::Unary { op: UnaryOperator::LogicalNot, expr: best_nan });
    let wins = b.binary(BinaryOperator::LogicalOr, x_nan, strictly);
    Some(b.binary(BinaryOperator::LogicalAnd, best_number, wins))
}

/// Whether the candidate `(x, at)` replaces `(best, best_at)` when partial results of an index reduction
/// are combined in any order: it beats the value (`arg_beats`), or ties with it (equal, or both NaN) at an
/// earlier position. So the combined result is the interpreter's first extreme, whatever the order.
pub(super) fn arg_takes(
    b: &mut FnBuilder,
    op: crate::ir::ArgOp,
    (best, best_at): (Expr, Expr),
    (x, at): (Expr, Expr),
    dtype: DType,
) -> Option<Expr> {
    let beats = arg_beats(b, op, best, x, dtype)?;
    let equal = b.binary(BinaryOperator::Equal, x, best);
    let tie = if dtype.is_float() {
        let x_nan = is_nan(b, x);
        let best_nan = is_nan(b, best);
        let both_nan = b.binary(BinaryOperator::LogicalAnd, x_nan, best_nan);
        b.binary(BinaryOperator::LogicalOr, equal, both_nan)
    } else {
        equal
    };
    let earlier = b.binary(BinaryOperator::Less, at, best_at);
    let tie_earlier = b.binary(BinaryOperator::LogicalAnd, tie, earlier);
    Some(b.binary(BinaryOperator::LogicalOr, beats, tie_earlier))
}

/// `x` is NaN, tested on its bits: float comparisons may be ordered (naga) or folded away by drivers.
fn is_nan(b: &mut FnBuilder, x: Expr) -> Expr {
    let bits = b.bitcast(x, ScalarKind::Uint);
    let magnitude_mask = b.u32(0x7fff_ffff);
    let magnitude = b.binary(BinaryOperator::And, bits, magnitude_mask);
    let infinity = b.u32(0x7f80_0000);
    b.binary(BinaryOperator::Greater, magnitude, infinity)
}

/// IEEE 754-2019 `minimum` (`is_min`) or `maximum`: NaN if either operand is NaN, and `-0 < +0`. WGSL's
/// `min`/`max` (SPIR-V FMin/FMax) guarantee neither.
fn float_min_max(b: &mut FnBuilder, x: Expr, y: Expr, is_min: bool) -> Expr {
    let plain = b.math(if is_min { MathFunction::Min } else { MathFunction::Max }, &[x, y]);
    // Equal operands differ at most in the sign of zero: the minimum is the negative one.
    let x_bits = b.bitcast(x, ScalarKind::Uint);
    let sign_mask = b.u32(0x8000_0000);
    let x_sign = b.binary(BinaryOperator::And, x_bits, sign_mask);
    let zero_bits = b.u32(0);
    let x_negative = b.binary(BinaryOperator::NotEqual, x_sign, zero_bits);
    let (if_x_negative, otherwise) = if is_min { (x, y) } else { (y, x) };
    let signed = b.select(x_negative, if_x_negative, otherwise);
    let equal = b.binary(BinaryOperator::Equal, x, y);
    let ordered = b.select(equal, signed, plain);
    // Either operand NaN: `x + y` is NaN.
    let x_nan = is_nan(b, x);
    let y_nan = is_nan(b, y);
    let any_nan = b.binary(BinaryOperator::LogicalOr, x_nan, y_nan);
    let nan = b.binary(BinaryOperator::Add, x, y);
    b.select(any_nan, nan, ordered)
}

fn zero_of(b: &mut FnBuilder, dtype: DType) -> Option<Expr> {
    match dtype {
        DType::F32 => Some(b.f32(0.0)),
        DType::I32 => Some(b.i32(0)),
        DType::U32 => Some(b.u32(0)),
        _ => None,
    }
}

fn one_of(b: &mut FnBuilder, dtype: DType) -> Option<Expr> {
    match dtype {
        DType::F32 => Some(b.f32(1.0)),
        DType::I32 => Some(b.i32(1)),
        DType::U32 => Some(b.u32(1)),
        _ => None,
    }
}
