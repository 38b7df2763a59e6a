//! The op vocabulary shared by the compiler's IR and the runtime's `Program`: compile-time scalars and the
//! elementwise, reduction, index-reduction and scan operators, and the index variables and affine indices of
//! index notation. The compiler's `ir` re-exports them as they are (like `DType`), so what the checker builds
//! is what a launch's `GroupOps` (`program/ops.rs`) carries to the CPU executor and into bundles. The meaning
//! of every op is spec/ops.md's; the per-element arithmetic is `cpu/kernels.rs`.

use serde::{Deserialize, Serialize};

use crate::dim::Dim;

/// A compile-time scalar; its dtype comes from the node or scalar expression holding it. Equality and
/// hashing are structural: floats compare by their bits, so `0.0 != -0.0` and a NaN equals the same NaN
/// (two constants are interchangeable exactly when they are bit-identical, which is what CSE needs).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scalar {
    /// A float, held as `f64` (written as its bits in bundles, so NaN and infinities survive).
    Float(#[serde(with = "f64_bits")] f64),
    /// An integer (`i32`/`u32` values).
    Int(i64),
    /// A `bool`.
    Bool(bool),
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Scalar) -> bool {
        match (self, other) {
            (Scalar::Float(a), Scalar::Float(b)) => a.to_bits() == b.to_bits(),
            (Scalar::Int(a), Scalar::Int(b)) => a == b,
            (Scalar::Bool(a), Scalar::Bool(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Scalar {}

impl std::hash::Hash for Scalar {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Scalar::Float(v) => v.to_bits().hash(state),
            Scalar::Int(v) => v.hash(state),
            Scalar::Bool(v) => v.hash(state),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
/// Elementwise operators of one operand.
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    /// Numeric negation (wrapping for integers).
    Neg,
    /// Logical not (bool only).
    Not,
    /// `e^x`.
    Exp,
    /// The natural logarithm.
    Log,
    /// The square root.
    Sqrt,
    /// `1 / sqrt(x)`.
    Rsqrt,
    /// The hyperbolic tangent.
    Tanh,
    /// The error function.
    Erf,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `max(x, 0)`.
    Relu,
    /// The absolute value (wrapping for `i32::MIN`).
    Abs,
    /// The sine.
    Sin,
    /// The cosine.
    Cos,
    /// Rounds toward negative infinity.
    Floor,
    /// Rounds toward positive infinity.
    Ceil,
    /// To the nearest integer, halfway cases to the even one (torch.round).
    Round,
    /// The arctangent, in radians.
    Atan,
}

impl UnaryOp {
    /// Every unary op.
    pub const ALL: [UnaryOp; 17] = [
        UnaryOp::Neg,
        UnaryOp::Not,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
        UnaryOp::Abs,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
        UnaryOp::Atan,
    ];
    /// The op's name in dumps and messages.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Not => "not",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Erf => "erf",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Abs => "abs",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
            UnaryOp::Round => "round",
            UnaryOp::Atan => "atan",
        }
    }
    /// Ops defined only on floating-point dtypes.
    pub fn float_only(self) -> bool {
        !matches!(self, UnaryOp::Neg | UnaryOp::Not | UnaryOp::Relu | UnaryOp::Abs)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
/// Elementwise operators of two operands.
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    /// `x + y` (wrapping for integers).
    Add,
    /// `x - y` (wrapping for integers).
    Sub,
    /// `x * y` (wrapping for integers).
    Mul,
    /// Float division; for integers, truncating division with `x / 0 = x` (as WGSL defines it).
    Div,
    /// Float: `x - y * trunc(x / y)`; integers: truncating remainder with `x % 0 = 0`.
    Rem,
    /// Floats only.
    Pow,
    /// IEEE minimum (NaN if either is NaN; `-0 < +0`).
    Min,
    /// IEEE maximum (NaN if either is NaN; `+0 > -0`).
    Max,
    /// `x < y`.
    Lt,
    /// `x <= y`.
    Le,
    /// `x > y`.
    Gt,
    /// `x >= y`.
    Ge,
    /// `x == y`.
    Eq,
    /// `x != y`.
    Ne,
    /// Logical and.
    And,
    /// Logical or.
    Or,
}

impl BinaryOp {
    /// The op's name in dumps and messages.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Rem => "rem",
            BinaryOp::Pow => "pow",
            BinaryOp::Min => "min",
            BinaryOp::Max => "max",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }
    /// Comparisons produce `bool`; `Lt`/`Le`/`Gt`/`Ge` take numeric operands, `Eq`/`Ne` any dtype.
    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne)
    }
    /// `And`/`Or` take and give `bool`.
    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
/// Reductions.
#[serde(rename_all = "snake_case")]
pub enum ReduceOp {
    /// The sum.
    Sum,
    /// The largest element (NaN if any is NaN).
    Max,
    /// The smallest element (NaN if any is NaN).
    Min,
    /// Floats only: sum divided by the number of reduced elements.
    Mean,
    /// The product.
    Prod,
}

impl ReduceOp {
    /// The op's name in dumps and messages.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Mean => "mean",
            ReduceOp::Prod => "prod",
        }
    }
}

/// The index reductions (`Op::ArgReduce`): which extreme's first position along one axis they find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgOp {
    /// The first position of the largest element; a NaN counts as larger than everything (torch.argmax).
    Max,
    /// The first position of the smallest element; a NaN counts as smaller than everything (torch.argmin).
    Min,
}

impl ArgOp {
    /// The op's name in dumps and messages.
    pub fn name(self) -> &'static str {
        match self {
            ArgOp::Max => "argmax",
            ArgOp::Min => "argmin",
        }
    }
}

/// The inclusive scans (`Op::Scan`) along one axis. (A running product would be a second variant; its
/// gradient needs torch's special case for zeros, so it is not here yet.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanOp {
    /// Running sum (torch.cumsum).
    Sum,
}

impl ScanOp {
    /// The op's name in dumps and messages.
    pub fn name(self) -> &'static str {
        match self {
            ScanOp::Sum => "cumsum",
        }
    }
}

/// Identifies an index variable of a `MapOp`: variables `0..rank` are the output's, the rest belong to
/// reductions inside the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VarId(pub u32);

/// An affine index: `(offset + sum(coef * var)) / div`; coefficients and offset are dimensions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affine {
    /// `(variable, coefficient)` pairs.
    pub terms: Vec<(VarId, Dim)>,
    /// The constant part.
    pub offset: Dim,
    /// An exact divisor, at least 1; 1 for every index a user writes. With `div > 1` the index is the
    /// quotient where `div` divides the sum and out of range where it does not, so such a load always has a
    /// default. Differentiation writes it: the adjoint of a strided read (`x[2 * i + r]`) reads its output
    /// gradient at `(u - r) / 2`.
    pub div: i64,
}

impl Affine {
    /// `offset + sum(coef * var)`, undivided.
    pub fn new(terms: Vec<(VarId, Dim)>, offset: Dim) -> Affine {
        Affine { terms, offset, div: 1 }
    }
}

/// `f64` as its IEEE bits (JSON has no NaN or infinities).
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}
