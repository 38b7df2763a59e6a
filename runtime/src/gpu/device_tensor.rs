//! `DeviceTensor`: a tensor that lives in a storage buffer of one `Gpu`, in the device layout of
//! `buffer.rs`, so a model's output can feed another model (or the same model's next call) as an input
//! without a download and an upload. It is a handle: cloning it shares the buffer, which stays alive as long
//! as any handle does. A resident `Model` hands its outputs out as device tensors and reuses an output's
//! buffer on a later call only once every handle to it has been dropped, so a tensor never changes under its
//! holder. Limits: read-only for the holder (a model writes only buffers it owns), bound to the `Gpu` that
//! made it (using it elsewhere is `GpuError::OtherDevice`).

use std::sync::Arc;

use super::{Gpu, GpuError};
use crate::{DType, Tensor};

/// A tensor on the device (see the module comment).
#[derive(Clone, Debug)]
pub struct DeviceTensor {
    pub(crate) buffer: Arc<wgpu::Buffer>,
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
    /// `Gpu::id` of the device holding `buffer`.
    pub(crate) gpu: u64,
}

impl DeviceTensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape (row-major).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The buffer holding the elements, for an application that reads it with its own kernels (one 4-byte
    /// word per element; the buffer may be larger than the tensor).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// `dtype[d0, d1, ...]`, as host tensors and messages write types.
    pub fn type_string(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        format!("{}[{}]", self.dtype.name(), dims.join(", "))
    }

    /// Copies the tensor back to the host; blocks until the device is done with the work that writes it.
    pub fn download(&self, gpu: &Gpu) -> Result<Tensor, GpuError> {
        gpu.check_owner(self)?;
        gpu.download(&self.buffer, self.dtype, &self.shape)
    }
}

impl Gpu {
    /// Uploads `tensor` into a new storage buffer of this device (counted in `GpuStats::uploaded_bytes`).
    pub fn to_device(&self, tensor: &Tensor) -> Result<DeviceTensor, GpuError> {
        let buffer = self.upload(tensor)?;
        Ok(DeviceTensor { buffer: Arc::new(buffer), dtype: tensor.dtype, shape: tensor.shape.clone(), gpu: self.id })
    }

    /// `Err` unless `tensor` lives on this device.
    pub(crate) fn check_owner(&self, tensor: &DeviceTensor) -> Result<(), GpuError> {
        if tensor.gpu == self.id {
            return Ok(());
        }
        Err(GpuError::OtherDevice {
            tensor: tensor.type_string(),
            owner: format!("tdsl device #{}", tensor.gpu),
            here: format!("tdsl device #{} ({})", self.id, self.info.name),
        })
    }

    /// A device tensor of this `Gpu` on `buffer`.
    pub(crate) fn device_tensor(&self, buffer: Arc<wgpu::Buffer>, dtype: DType, shape: Vec<usize>) -> DeviceTensor {
        DeviceTensor { buffer, dtype, shape, gpu: self.id }
    }
}
