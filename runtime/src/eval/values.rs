//! The interpreter's internal value representation: `Vals`, a flat buffer in one of four storage kinds, and
//! `Lit`, one element. `f16` is stored as `f32` holding an exactly representable `f16` value (every op computes
//! in `f32` and rounds back with `round_f16`), so the kernels know only four element types; conversion to
//! and from `Tensor` happens at the interpreter's edge.

use crate::DType;
use crate::ops::Scalar;
use crate::tensor::{Tensor, TensorData};
use half::f16;

/// A flat buffer of elements. `F` holds both `f32` and `f16` data (the node's dtype says which).
#[derive(Clone, Debug, PartialEq)]
pub enum Vals {
    /// `f32` and `f16` elements.
    F(Vec<f32>),
    /// `i32` elements.
    I(Vec<i32>),
    /// `u32` elements.
    U(Vec<u32>),
    /// `bool` elements.
    B(Vec<bool>),
}

/// One element in `Vals`' storage kinds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lit {
    /// An `f32` or `f16` element.
    F(f32),
    /// An `i32` element.
    I(i32),
    /// A `u32` element.
    U(u32),
    /// A `bool` element.
    B(bool),
}

/// A tensor value inside the interpreter.
#[derive(Clone, Debug)]
pub struct Val {
    /// The row-major shape.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: Vals,
}

/// Applies a generic expression to whichever vector a `Vals` holds, giving a `Vals` of the same kind.
macro_rules! map_vals {
    ($vals:expr, $v:ident => $body:expr) => {
        match $vals {
            $crate::eval::values::Vals::F($v) => $crate::eval::values::Vals::F($body),
            $crate::eval::values::Vals::I($v) => $crate::eval::values::Vals::I($body),
            $crate::eval::values::Vals::U($v) => $crate::eval::values::Vals::U($body),
            $crate::eval::values::Vals::B($v) => $crate::eval::values::Vals::B($body),
        }
    };
}
pub(crate) use map_vals;

/// `x` rounded to the nearest `f16` (ties to even), as an `f32`.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Rounds every element to `f16` when `dtype` is `f16`; the step after every op that produces `f16`.
pub fn finish(dtype: DType, out: &mut [f32]) {
    if dtype == DType::F16 {
        for x in out {
            *x = round_f16(*x);
        }
    }
}

impl Vals {
    /// How many elements it holds.
    pub fn len(&self) -> usize {
        match self {
            Vals::F(v) => v.len(),
            Vals::I(v) => v.len(),
            Vals::U(v) => v.len(),
            Vals::B(v) => v.len(),
        }
    }

    /// Whether it holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` copies of the zero of `dtype`'s storage kind.
    pub fn zeros(dtype: DType, n: usize) -> Vals {
        match dtype {
            DType::F32 | DType::F16 => Vals::F(vec![0.0; n]),
            DType::I32 => Vals::I(vec![0; n]),
            DType::U32 => Vals::U(vec![0; n]),
            DType::Bool => Vals::B(vec![false; n]),
        }
    }
    /// `n` copies of `lit`.
    pub fn splat(lit: Lit, n: usize) -> Vals {
        match lit {
            Lit::F(x) => Vals::F(vec![x; n]),
            Lit::I(x) => Vals::I(vec![x; n]),
            Lit::U(x) => Vals::U(vec![x; n]),
            Lit::B(x) => Vals::B(vec![x; n]),
        }
    }
    /// Overwrites the first `n` elements with `lit` (same storage kind; other kinds are left alone).
    pub fn fill(&mut self, lit: Lit, n: usize) {
        match (self, lit) {
            (Vals::F(v), Lit::F(x)) => v[..n].fill(x),
            (Vals::I(v), Lit::I(x)) => v[..n].fill(x),
            (Vals::U(v), Lit::U(x)) => v[..n].fill(x),
            (Vals::B(v), Lit::B(x)) => v[..n].fill(x),
            _ => {}
        }
    }
    /// A tensor's elements in the storage kind of its dtype.
    pub fn from_tensor(t: &Tensor) -> Vals {
        match &t.data {
            TensorData::F32(v) => Vals::F(v.clone()),
            TensorData::F16(v) => Vals::F(v.iter().map(|x| x.to_f32()).collect()),
            TensorData::I32(v) => Vals::I(v.clone()),
            TensorData::U32(v) => Vals::U(v.clone()),
            TensorData::Bool(v) => Vals::B(v.clone()),
        }
    }
    /// The tensor of `dtype` these values represent (`F` storage becomes `f16` when `dtype` says so).
    pub fn into_tensor(self, dtype: DType, shape: Vec<usize>) -> Tensor {
        let data = match self {
            Vals::F(v) if dtype == DType::F16 => TensorData::F16(v.into_iter().map(f16::from_f32).collect()),
            Vals::F(v) => TensorData::F32(v),
            Vals::I(v) => TensorData::I32(v),
            Vals::U(v) => TensorData::U32(v),
            Vals::B(v) => TensorData::Bool(v),
        };
        Tensor { dtype: data.dtype(), shape, data }
    }
}

impl Lit {
    /// A literal given `dtype`: integers wrap to 32 bits (two's complement), floats round to nearest
    /// (`f16` directly from the `f64`, not through `f32`). Mismatched kinds, which the verifier rejects,
    /// convert like `Cast`.
    pub fn from_scalar(scalar: Scalar, dtype: DType) -> Lit {
        match (scalar, dtype) {
            (Scalar::Float(x), DType::F32) => Lit::F(x as f32),
            (Scalar::Float(x), DType::F16) => Lit::F(f16::from_f64(x).to_f32()),
            (Scalar::Int(i), DType::F32) => Lit::F(i as f32),
            (Scalar::Int(i), DType::F16) => Lit::F(f16::from_f64(i as f64).to_f32()),
            (Scalar::Int(i), DType::I32) => Lit::I(i as i32),
            (Scalar::Int(i), DType::U32) => Lit::U(i as u32),
            (Scalar::Int(i), DType::Bool) => Lit::B(i != 0),
            (Scalar::Float(x), DType::I32) => Lit::I(x as i32),
            (Scalar::Float(x), DType::U32) => Lit::U(x as u32),
            (Scalar::Float(x), DType::Bool) => Lit::B(x != 0.0),
            (Scalar::Bool(b), DType::Bool) => Lit::B(b),
            (Scalar::Bool(b), dtype) => Lit::from_scalar(Scalar::Int(b as i64), dtype),
        }
    }

    /// An integer value (a dimension or an index variable) given `dtype`; `None` when it does not fit an
    /// integer dtype. Floats round to nearest; `bool` is `value != 0`.
    pub fn from_int(value: i64, dtype: DType) -> Option<Lit> {
        Some(match dtype {
            DType::F32 => Lit::F(value as f32),
            DType::F16 => Lit::F(f16::from_f64(value as f64).to_f32()),
            DType::I32 => Lit::I(i32::try_from(value).ok()?),
            DType::U32 => Lit::U(u32::try_from(value).ok()?),
            DType::Bool => Lit::B(value != 0),
        })
    }
}
