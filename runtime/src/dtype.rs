//! `DType`: the element types of tdsl tensors, shared by the compiler (whose `ir::DType` is this type) and
//! the runtime, so both sides agree on names and sizes without the runtime depending on the compiler.

/// Element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float (held as an `f32` word on the device).
    F16,
    /// 32-bit two's-complement integer.
    I32,
    /// 32-bit unsigned integer.
    U32,
    /// Boolean (a `u32` word holding 0 or 1 on the device).
    Bool,
}

impl DType {
    /// Every dtype.
    pub const ALL: [DType; 5] = [DType::F32, DType::F16, DType::I32, DType::U32, DType::Bool];

    /// The name as tdsl source writes it (`f32`, `bool`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::Bool => "bool",
        }
    }
    /// The dtype called `name`, if any.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }
    /// `f32` or `f16`.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }
    /// `i32` or `u32`.
    pub fn is_int(self) -> bool {
        matches!(self, DType::I32 | DType::U32)
    }
    /// Every dtype but `bool`.
    pub fn is_numeric(self) -> bool {
        self != DType::Bool
    }
    /// Bytes per element in device buffers: 4 for every dtype (`bool` is a `u32` word there and `f16` is held
    /// as an `f32`, so kernels need no `SHADER_F16`; see `gpu/buffer.rs`).
    pub fn size(self) -> usize {
        4
    }
    /// Bytes per element in host tensors, `.npy` and safetensors files (`bool` is one byte there).
    pub fn file_size(self) -> usize {
        match self {
            DType::Bool => 1,
            DType::F16 => 2,
            _ => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
        assert_eq!(DType::from_name("f64"), None);
    }
}
