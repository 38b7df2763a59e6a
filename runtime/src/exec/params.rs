//! `ParamSource`: where `Gpu::execute` gets a program's params. Two sources: a map of host tensors by key
//! (what the reference interpreter takes; missing or mis-typed params are binding errors and extra entries
//! are ignored, as in the interpreter) and a memory-mapped safetensors `Weights` file (checked against every
//! param at once with `check_params`, so missing, extra, mis-shaped and mis-typed entries come in one error;
//! its bytes go to the device straight from the mapping when their layout allows).

use crate::bind::Given;
use crate::gpu::to_device_bytes;
use crate::program::{Program, TensorRole};
use crate::tensor::{DecodeError, TensorData};
use crate::weights::{ParamSpec, Stored, Weights, WeightsError, check_params};
use crate::{DType, Tensor};
use std::borrow::Cow;
use std::collections::HashMap;

/// Why a param's bytes could not be read (`ParamSource::device_bytes`).
#[derive(Debug, thiserror::Error)]
pub enum ParamDataError {
    /// The source has no entry for the key.
    #[error("there is no such entry")]
    Missing,
    /// The weights file's entry has a dtype the runtime does not support.
    #[error("there is no entry of a supported dtype")]
    UnsupportedDtype,
    /// The weights file could not give the entry's bytes.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The entry's bytes do not decode as its dtype.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The entry's stored elements (BF16, or half precision converted to the param's dtype) do not decode.
    #[error("{0}")]
    Stored(String),
}

/// A provider of param values by key (see the module comment).
pub trait ParamSource {
    /// The param `key`, declared of dtype `declared`, as binding sees it (a host tensor, or a dtype and
    /// shape: `declared` where the entry converts to it); `None` when the source has no usable entry for it.
    fn given(&self, key: &str, declared: DType) -> Option<Given<'_>>;

    /// Checks the source against all of a program's params at once, before binding. `params` carry the
    /// shapes the inputs determine (`None` for dimensions only the params themselves bind). A source that
    /// leaves this to binding returns `Ok`.
    fn check(&self, params: &[ParamSpec]) -> Result<(), WeightsError>;

    /// The param's elements as `dtype` in the device layout (`gpu/buffer.rs`), padded to at least 4 bytes.
    /// Called only for params that bound, so the entry exists, loads as `dtype` and has the declared shape.
    fn device_bytes(&self, key: &str, dtype: DType) -> Result<Cow<'_, [u8]>, ParamDataError>;
}

impl ParamSource for HashMap<String, Tensor> {
    fn given(&self, key: &str, _declared: DType) -> Option<Given<'_>> {
        self.get(key).map(Given::Tensor)
    }

    fn check(&self, _params: &[ParamSpec]) -> Result<(), WeightsError> {
        Ok(())
    }

    fn device_bytes(&self, key: &str, _dtype: DType) -> Result<Cow<'_, [u8]>, ParamDataError> {
        let tensor = self.get(key).ok_or(ParamDataError::Missing)?;
        Ok(Cow::Owned(to_device_bytes(&tensor.data)))
    }
}

impl ParamSource for Weights {
    fn given(&self, key: &str, declared: DType) -> Option<Given<'_>> {
        let entry = self.entry(key)?;
        let dtype = if entry.loads_as(declared) { declared } else { entry.dtype? };
        Some(Given::Shape { dtype, shape: &entry.shape })
    }

    fn check(&self, params: &[ParamSpec]) -> Result<(), WeightsError> {
        check_params(self, params)
    }

    fn device_bytes(&self, key: &str, dtype: DType) -> Result<Cow<'_, [u8]>, ParamDataError> {
        let entry = self.entry(key).ok_or(ParamDataError::UnsupportedDtype)?;
        let natural = entry.dtype.ok_or(ParamDataError::UnsupportedDtype)?;
        let bytes = self.bytes(key)?;
        if entry.stored == Stored::Bf16 || natural != dtype {
            let data = entry.decode_as(bytes, dtype).map_err(ParamDataError::Stored)?;
            return Ok(Cow::Owned(to_device_bytes(&data)));
        }
        match dtype {
            // Already one little-endian word per element.
            DType::F32 | DType::I32 | DType::U32 if bytes.len() >= 4 => Ok(Cow::Borrowed(bytes)),
            _ => {
                let data = TensorData::from_le_bytes(dtype, bytes)?;
                Ok(Cow::Owned(to_device_bytes(&data)))
            }
        }
    }
}

/// The params of `program` as a weights file must hold them; a symbolic dimension matches any size.
pub fn param_specs(program: &Program) -> Vec<ParamSpec> {
    program
        .params
        .iter()
        .filter_map(|&id| {
            let decl = program.tensors.get(id.0 as usize)?;
            let TensorRole::Param(key) = &decl.role else { return None };
            let shape = decl.shape.iter().map(|d| d.as_const().and_then(|v| usize::try_from(v).ok())).collect();
            Some(ParamSpec { name: key.clone(), dtype: decl.dtype, shape })
        })
        .collect()
}
