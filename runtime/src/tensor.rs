//! `Tensor`: a dense row-major host tensor. It is what the compiler's reference interpreter takes and
//! returns, what `.npy` files and safetensors weights are read into, and what GPU results are compared
//! against. `Tensor::new` checks that the data fits the shape (the typed constructors panic instead, for
//! tests and literals); the fields are public, so code handed a tensor re-checks it.
//! `Display` and `Debug` show the dtype, shape and only the first few values, so printing stays cheap.

use crate::DType;
use half::f16;
use std::fmt;

/// The most elements one host tensor may have (2^31: 8 GiB of `f32`). The interpreter refuses larger
/// intermediates and the readers refuse larger files, so a corrupt shape cannot ask for absurd allocations.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// A dense tensor in row-major order. `data`'s variant must match `dtype` and hold `shape`'s product of
/// elements; `Tensor::new` checks this, and the interpreter re-checks tensors it is given.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    /// The element type.
    pub dtype: DType,
    /// The shape, row-major.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: TensorData,
}

/// The elements of a `Tensor`, one variant per dtype.
#[derive(Clone, PartialEq)]
pub enum TensorData {
    /// `f32` elements.
    F32(Vec<f32>),
    /// `f16` elements.
    F16(Vec<f16>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `bool` elements.
    Bool(Vec<bool>),
}

/// Why `Tensor::new` refused its arguments.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shape {shape:?} has {expected} elements but {got} values were given")]
pub struct ShapeMismatch {
    /// The shape asked for.
    pub shape: Vec<usize>,
    /// Its element count.
    pub expected: usize,
    /// Values given.
    pub got: usize,
}

/// Why `TensorData::from_le_bytes` refused its bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a whole number of elements.
    #[error("{len} bytes are not a whole number of {} elements of {size} bytes", .dtype.name())]
    Length {
        /// The dtype.
        dtype: DType,
        /// Its bytes per element in files.
        size: usize,
        /// Bytes given.
        len: usize,
    },
    /// A `bool` byte other than 0 or 1.
    #[error("bool element {index} is the byte {byte:#04x}, not 0 or 1")]
    InvalidBool {
        /// The element's index.
        index: usize,
        /// The byte.
        byte: u8,
    },
}

impl TensorData {
    /// Elements of `dtype` from little-endian bytes, `dtype.file_size()` bytes each (`bool` one byte, 0 or
    /// 1), as `.npy` and safetensors files store them. Any alignment of `bytes` is fine.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Result<TensorData, DecodeError> {
        let size = dtype.file_size();
        if !bytes.len().is_multiple_of(size) {
            return Err(DecodeError::Length { dtype, size, len: bytes.len() });
        }
        let word = |c: &[u8]| [c[0], c[1], c[2], c[3]];
        Ok(match dtype {
            DType::F32 => TensorData::F32(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(word(c))).collect()),
            DType::F16 => TensorData::F16(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
            DType::I32 => TensorData::I32(bytes.chunks_exact(4).map(|c| i32::from_le_bytes(word(c))).collect()),
            DType::U32 => TensorData::U32(bytes.chunks_exact(4).map(|c| u32::from_le_bytes(word(c))).collect()),
            DType::Bool => TensorData::Bool(
                bytes
                    .iter()
                    .enumerate()
                    .map(|(index, &byte)| match byte {
                        0 => Ok(false),
                        1 => Ok(true),
                        _ => Err(DecodeError::InvalidBool { index, byte }),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// The elements as little-endian bytes, the inverse of `from_le_bytes`.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dtype().file_size());
        match self {
            TensorData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::F16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::U32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        }
        out
    }

    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::I32(_) => DType::I32,
            TensorData::U32(_) => DType::U32,
            TensorData::Bool(_) => DType::Bool,
        }
    }
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::U32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }
    /// No elements.
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

    /// An `f32` tensor.
    ///
    /// # Panics
    /// When `data.len()` is not the element count of `shape` (as for the other typed constructors).
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Tensor {
        Tensor::build(shape, TensorData::F32(data))
    }
    /// An `f16` tensor (panics like `f32`).
    pub fn f16(shape: &[usize], data: Vec<f16>) -> Tensor {
        Tensor::build(shape, TensorData::F16(data))
    }
    /// An `f16` tensor from `f32` values, each rounded to nearest (ties to even).
    pub fn f16_from_f32(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::build(shape, TensorData::F16(data.iter().map(|&x| f16::from_f32(x)).collect()))
    }
    /// An `i32` tensor (panics like `f32`).
    pub fn i32(shape: &[usize], data: Vec<i32>) -> Tensor {
        Tensor::build(shape, TensorData::I32(data))
    }
    /// A `u32` tensor (panics like `f32`).
    pub fn u32(shape: &[usize], data: Vec<u32>) -> Tensor {
        Tensor::build(shape, TensorData::U32(data))
    }
    /// A `bool` tensor (panics like `f32`).
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

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// The number of axes.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Every element as an `f64`, for comparisons across dtypes.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.data.to_f64_vec()
    }
    /// The elements, when they are `f32`.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }
    /// The elements, when they are `i32`.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            _ => None,
        }
    }
    /// The elements, when they are `u32`.
    pub fn as_u32(&self) -> Option<&[u32]> {
        match &self.data {
            TensorData::U32(v) => Some(v),
            _ => None,
        }
    }
    /// The elements, when they are `bool`.
    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }
    /// The type and the first values, as `tdslc run` and `tdsl-run` print an output (at most 6 values):
    /// floats with 6 decimals (`f32[3, 10] = [0.100000, -0.200000, ...]`), integers as integers
    /// (`i32[6] = [3, 0, 7, ...]`), bools as `true`/`false`.
    pub fn preview(&self) -> String {
        let len: usize = self.shape.iter().product();
        let shown: Vec<String> = match &self.data {
            TensorData::I32(v) => v.iter().take(6).map(i32::to_string).collect(),
            TensorData::U32(v) => v.iter().take(6).map(u32::to_string).collect(),
            TensorData::Bool(v) => v.iter().take(6).map(bool::to_string).collect(),
            _ => self.to_f64_vec().iter().take(6).map(|v| format!("{v:.6}")).collect(),
        };
        let more = if len > 6 { ", ..." } else { "" };
        format!("{} = [{}{more}]", self.type_string(), shown.join(", "))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_display_is_short() {
        let t = Tensor::f32(&[100, 100], vec![0.5; 10_000]);
        assert_eq!(t.to_string(), "f32[100, 100] [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, ... (10000 values)]");
        assert_eq!(format!("{:?}", Tensor::bool(&[2], vec![true, false])), "Tensor(bool[2] [true, false])");
        assert_eq!(Tensor::f16_from_f32(&[1], &[1.5]).to_f64_vec(), vec![1.5]);
        assert!(Tensor::new(&[2, 2], TensorData::I32(vec![1])).is_err());
    }

    /// Outputs print in their own dtype: integers as integers, bools as words, floats with 6 decimals.
    #[test]
    fn previews_print_each_dtype_as_itself() {
        assert_eq!(Tensor::i32(&[6], vec![3, -1, 0, 7, 2, 9]).preview(), "i32[6] = [3, -1, 0, 7, 2, 9]");
        let u = Tensor::new(&[7], TensorData::U32(vec![4_000_000_000, 1, 2, 3, 4, 5, 6])).expect("u32");
        assert_eq!(u.preview(), "u32[7] = [4000000000, 1, 2, 3, 4, 5, ...]");
        assert_eq!(Tensor::bool(&[2], vec![true, false]).preview(), "bool[2] = [true, false]");
        assert_eq!(Tensor::f32(&[2], vec![0.1, -2.0]).preview(), "f32[2] = [0.100000, -2.000000]");
    }

    #[test]
    fn constructors_check_the_element_count() {
        let e = Tensor::new(&[2, 3], TensorData::F32(vec![0.0; 5])).unwrap_err();
        assert_eq!(e.to_string(), "shape [2, 3] has 6 elements but 5 values were given");
        let e = Tensor::new(&[usize::MAX, 2], TensorData::U32(vec![])).unwrap_err();
        assert_eq!(e.expected, usize::MAX);
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[3, 0, 5]), Some(0));
        assert_eq!(Tensor::zeros(DType::Bool, &[0, 4]).type_string(), "bool[0, 4]");
        assert_eq!(Tensor::u32(&[], vec![7]).rank(), 0);
    }

    #[test]
    fn little_endian_bytes_round_trip() {
        let all = [
            TensorData::F32(vec![1.5, -0.0, f32::INFINITY]),
            TensorData::F16(vec![f16::from_f32(0.25), f16::MAX]),
            TensorData::I32(vec![i32::MIN, -1, 7]),
            TensorData::U32(vec![u32::MAX, 0]),
            TensorData::Bool(vec![true, false, true]),
        ];
        for data in all {
            let bytes = data.to_le_bytes();
            assert_eq!(bytes.len(), data.len() * data.dtype().file_size());
            assert_eq!(TensorData::from_le_bytes(data.dtype(), &bytes), Ok(data));
        }
        assert_eq!(TensorData::to_le_bytes(&TensorData::I32(vec![1])), vec![1, 0, 0, 0]);
        let e = TensorData::from_le_bytes(DType::F32, &[0; 6]).unwrap_err();
        assert_eq!(e.to_string(), "6 bytes are not a whole number of f32 elements of 4 bytes");
        let e = TensorData::from_le_bytes(DType::Bool, &[1, 0, 2]).unwrap_err();
        assert_eq!(e.to_string(), "bool element 2 is the byte 0x02, not 0 or 1");
    }
}
