//! Host tensors in and out of storage buffers. Device layout: one 4-byte little-endian word per element of
//! every dtype: `f32`, `i32` and `u32` as they are, `bool` as a `u32` holding 0 or 1, and `f16` as the `f32`
//! of the same value (exact on upload; a download rounds each word to the nearest `f16`), so kernels need no
//! `SHADER_F16` feature and no unpacking. Every buffer is a multiple of 16 bytes and at least 16 (wgpu binds no empty
//! storage buffer, and kernels may access tensors as 4-word vectors). Downloads copy into a staging buffer, map it and wait; a failed map or a bool word other
//! than 0/1 is a `GpuError::Download`.

use super::{Gpu, GpuError};
use crate::tensor::element_count;
use crate::{DType, Tensor, TensorData};
use half::f16;

/// Storage buffers are also copy sources and destinations, for uploads, downloads and reuse.
const STORAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// The bytes a buffer holding `len` elements of `dtype` takes on the device: padded to a multiple of 16
/// bytes (at least 16), so a kernel may read and write any tensor as whole 4-word vectors.
pub fn device_bytes(dtype: DType, len: usize) -> u64 {
    (len as u64).saturating_mul(dtype.size() as u64).next_multiple_of(16).max(16)
}

/// `data` in the device layout described in the module comment, padded.
pub(crate) fn to_device_bytes(data: &TensorData) -> Vec<u8> {
    let mut bytes = match data {
        TensorData::Bool(v) => v.iter().flat_map(|&b| (b as u32).to_le_bytes()).collect(),
        TensorData::F16(v) => v.iter().flat_map(|h| h.to_f32().to_le_bytes()).collect(),
        other => other.to_le_bytes(),
    };
    bytes.resize(device_bytes(data.dtype(), data.len()) as usize, 0);
    bytes
}

impl Gpu {
    /// A new storage buffer holding `tensor` (checked against its shape first).
    pub fn upload(&self, tensor: &Tensor) -> Result<wgpu::Buffer, GpuError> {
        let count = element_count(&tensor.shape);
        if count != Some(tensor.data.len()) || tensor.data.dtype() != tensor.dtype {
            return Err(GpuError::Upload {
                tensor: tensor.type_string(),
                message: format!("its data holds {} {} values", tensor.data.len(), tensor.data.dtype().name()),
            });
        }
        self.upload_device_bytes(&to_device_bytes(&tensor.data))
    }

    /// A new storage buffer holding `bytes`, already in the device layout (a multiple of 4 bytes), padded
    /// to a multiple of 16 bytes (at least 16) as `device_bytes` says.
    pub(crate) fn upload_device_bytes(&self, bytes: &[u8]) -> Result<wgpu::Buffer, GpuError> {
        let buffer = self.storage_buffer((bytes.len() as u64).next_multiple_of(16).max(16))?;
        self.write_storage(&buffer, bytes);
        Ok(buffer)
    }

    /// Writes `bytes` (device layout) at the start of `buffer` through the queue, counted in
    /// `GpuStats::uploaded_bytes`; the write lands before the next submission.
    pub(crate) fn write_storage(&self, buffer: &wgpu::Buffer, bytes: &[u8]) {
        self.stats.uploaded_bytes.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.queue.write_buffer(buffer, 0, bytes);
    }

    /// Writes `bytes` (a multiple of 4) at the start of the uniform `buffer`, zero-padded to 16 bytes,
    /// counted in `GpuStats::uniform_bytes`.
    pub(crate) fn write_uniform(&self, buffer: &wgpu::Buffer, bytes: &[u8]) {
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().next_multiple_of(16).max(16), 0);
        self.stats.uniform_bytes.fetch_add(padded.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.queue.write_buffer(buffer, 0, &padded);
    }

    /// A zero-filled storage buffer for a `dtype` tensor of `shape`, e.g. a kernel's output.
    pub fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<wgpu::Buffer, GpuError> {
        let len = element_count(shape).ok_or(GpuError::TooLarge { what: "buffer", bytes: u64::MAX, limit: 0 })?;
        self.storage_buffer(device_bytes(dtype, len))
    }

    /// Reads a `dtype` tensor of `shape` back from the start of `buffer`; blocks until the GPU is done.
    pub fn download(&self, buffer: &wgpu::Buffer, dtype: DType, shape: &[usize]) -> Result<Tensor, GpuError> {
        let fail = |message: String| GpuError::Download { dtype: dtype.name(), shape: shape.to_vec(), message };
        let len = element_count(shape).ok_or_else(|| fail("the shape's element count overflows".into()))?;
        // The tensor's own words, without the padding `device_bytes` adds.
        let size = (len as u64).saturating_mul(dtype.size() as u64).next_multiple_of(4).max(4);
        if size > buffer.size() {
            return Err(fail(format!("it needs {size} bytes but the buffer holds {}", buffer.size())));
        }
        let staging = self
            .scoped(|| {
                let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tdsl download"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut encoder = self.device.create_command_encoder(&Default::default());
                encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
                self.queue.submit([encoder.finish()]);
                staging
            })
            .map_err(fail)?;
        let bytes = self.read_mapped(&staging).map_err(fail)?;
        let data = from_device_bytes(dtype, len, &bytes).map_err(fail)?;
        Ok(Tensor { dtype, shape: shape.to_vec(), data })
    }

    /// The contents of `staging` (a `MAP_READ` buffer a submitted copy fills): waits for the device, maps
    /// it, copies it out and unmaps it.
    pub(crate) fn read_mapped(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>, String> {
        let (sender, receiver) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| format!("waiting for the GPU: {e}"))?;
        // Another thread polling the same device may have taken the callback and not run it yet: wait for it.
        match receiver.recv_timeout(std::time::Duration::from_secs(600)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("mapping the staging buffer: {e}")),
            Err(_) => return Err("the staging buffer was never mapped".into()),
        }
        let bytes = staging.get_mapped_range(..).map_err(|e| format!("reading the mapped buffer: {e}"))?.to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// A new uniform buffer holding `bytes` (zero-padded to a multiple of 16 bytes, at least 16), e.g. a
    /// kernel's `Dims` block; `run` binds it like any other buffer, by its binding index.
    pub fn uniform(&self, bytes: &[u8]) -> Result<wgpu::Buffer, GpuError> {
        let size = (bytes.len() as u64).next_multiple_of(16).max(16);
        let limit = self.device.limits().max_uniform_buffer_binding_size;
        if size > limit {
            return Err(GpuError::TooLarge { what: "uniform buffer", bytes: size, limit });
        }
        let buffer = self
            .scoped(|| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tdsl uniform"),
                    size,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .map_err(|message| GpuError::Upload { tensor: format!("uniform of {size} bytes"), message })?;
        self.count_buffer(size);
        self.write_uniform(&buffer, bytes);
        Ok(buffer)
    }

    /// A new storage buffer of `size` bytes (contents unspecified until written), within the device's
    /// storage-buffer limit.
    pub(crate) fn storage_buffer(&self, size: u64) -> Result<wgpu::Buffer, GpuError> {
        let limits = self.device.limits();
        let limit = limits.max_buffer_size.min(limits.max_storage_buffer_binding_size);
        if size > limit {
            return Err(GpuError::TooLarge { what: "storage buffer", bytes: size, limit });
        }
        let buffer = self
            .scoped(|| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: STORAGE,
                    mapped_at_creation: false,
                })
            })
            .map_err(|message| GpuError::Upload { tensor: format!("{size} bytes"), message })?;
        self.count_buffer(size);
        Ok(buffer)
    }
}

/// The first `len` elements of `dtype` in device layout; `bytes` holds at least `device_bytes(dtype, len)`.
fn from_device_bytes(dtype: DType, len: usize, bytes: &[u8]) -> Result<TensorData, String> {
    let words = || bytes.chunks_exact(4).take(len).map(|c| [c[0], c[1], c[2], c[3]]);
    Ok(match dtype {
        DType::F32 => TensorData::F32(words().map(f32::from_le_bytes).collect()),
        DType::I32 => TensorData::I32(words().map(i32::from_le_bytes).collect()),
        DType::U32 => TensorData::U32(words().map(u32::from_le_bytes).collect()),
        DType::F16 => TensorData::F16(words().map(|w| f16::from_f32(f32::from_le_bytes(w))).collect()),
        DType::Bool => TensorData::Bool(
            words()
                .map(u32::from_le_bytes)
                .enumerate()
                .map(|(index, word)| match word {
                    0 => Ok(false),
                    1 => Ok(true),
                    _ => Err(format!("bool element {index} is the word {word:#x}, not 0 or 1")),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}
