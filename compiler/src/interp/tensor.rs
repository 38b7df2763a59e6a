//! `Tensor`: a dense row-major host tensor, the interpreter's input and output type (and what the runtime
//! compares GPU results against). Constructors check that the data fits the shape; `Display` and `Debug`
//! show the dtype, shape and only the first few values, so printing a large tensor stays cheap.

use crate::ir::DType;
use half::f16;
use std::fmt;

/// A dense tensor in row-major order. `data`'s variant must match `dtype` and hold `shape`'s product of
/// elements; `Tensor::new` checks this, and the interpreter re-checks tensors it is given.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// The elements of a `Tensor`, one variant per dtype.
#[derive(Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    Bool(Vec<bool>),
}

/// Why `Tensor::new` refused its arguments.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shape {shape:?} has {expected} elements but {got} values were given")]
pub struct ShapeMismatch {
    pub shape: Vec<usize>,
    pub expected: usize,
    pub got: usize,
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::I32(_) => DType::I32,
            TensorData::U32(_) => DType::U32,
            TensorData::Bool(_) => DType::Bool,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::U32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every element as an `f64` (exact for every dtype; `bool` as 0 or 1).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }
}

/// The number of elements of `shape`, or `None` when it overflows `usize`.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    /// A tensor of `data`'s dtype; fails when `data` does not hold exactly `shape`'s element count.
    pub fn new(shape: &[usize], data: TensorData) -> Result<Tensor, ShapeMismatch> {
        let expected = element_count(shape);
        if expected != Some(data.len()) {
            return Err(ShapeMismatch {
                shape: shape.to_vec(),
                expected: expected.unwrap_or(usize::MAX),
                got: data.len(),
            });
        }
        Ok(Tensor { dtype: data.dtype(), shape: shape.to_vec(), data })
    }

    fn build(shape: &[usize], data: TensorData) -> Tensor {
        match Tensor::new(shape, data) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// # Panics
    /// When `data.len()` is not the element count of `shape` (as for the other typed constructors).
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Tensor {
        Tensor::build(shape, TensorData::F32(data))
    }
    pub fn f16(shape: &[usize], data: Vec<f16>) -> Tensor {
        Tensor::build(shape, TensorData::F16(data))
    }
    /// An `f16` tensor from `f32` values, each rounded to nearest (ties to even).
    pub fn f16_from_f32(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::build(shape, TensorData::F16(data.iter().map(|&x| f16::from_f32(x)).collect()))
    }
    pub fn i32(shape: &[usize], data: Vec<i32>) -> Tensor {
        Tensor::build(shape, TensorData::I32(data))
    }
    pub fn u32(shape: &[usize], data: Vec<u32>) -> Tensor {
        Tensor::build(shape, TensorData::U32(data))
    }
    pub fn bool(shape: &[usize], data: Vec<bool>) -> Tensor {
        Tensor::build(shape, TensorData::Bool(data))
    }
    /// All elements zero (`false` for `bool`).
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let n = element_count(shape).expect("shape's element count overflows usize");
        let data = match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::F16 => TensorData::F16(vec![f16::ZERO; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::U32 => TensorData::U32(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
        };
        Tensor { dtype, shape: shape.to_vec(), data }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Every element as an `f64`, for comparisons across dtypes.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.data.to_f64_vec()
    }
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_u32(&self) -> Option<&[u32]> {
        match &self.data {
            TensorData::U32(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }
    /// `f32[2, 3]`.
    pub fn type_string(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        format!("{}[{}]", self.dtype.name(), dims.join(", "))
    }
}

/// Values shown by `Display`/`Debug` before eliding the rest.
const SHOWN: usize = 8;

impl fmt::Display for Tensor {
    /// `f32[2, 3] [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]`, eliding after a few values: `[0.0, 1.0, ..., (1000 values)]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.type_string())?;
        self.data.fmt(f)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({self})")
    }
}

impl fmt::Display for TensorData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn show<T: fmt::Debug>(f: &mut fmt::Formatter<'_>, items: impl Iterator<Item = T>, len: usize) -> fmt::Result {
            f.write_str("[")?;
            for (i, x) in items.take(SHOWN).enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{x:?}")?;
            }
            if len > SHOWN {
                write!(f, ", ... ({len} values)")?;
            }
            f.write_str("]")
        }
        match self {
            TensorData::F32(v) => show(f, v.iter(), v.len()),
            TensorData::F16(v) => show(f, v.iter().map(|x| x.to_f32()), v.len()),
            TensorData::I32(v) => show(f, v.iter(), v.len()),
            TensorData::U32(v) => show(f, v.iter(), v.len()),
            TensorData::Bool(v) => show(f, v.iter(), v.len()),
        }
    }
}

impl fmt::Debug for TensorData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({self})", self.dtype().name())
    }
}
