//! GPU codegen: IR nodes become compute kernels built directly as `naga::Module`s (never WGSL text),
//! validated by `naga::valid::Validator`, compacted, and only then written out as WGSL and SPIR-V.
//!
//! Limits of this first slice: one kernel per IR node, and only the elementwise ops (`elementwise.rs`);
//! everything else is `CodegenError::Unsupported`. There is no fusion yet and no f16 (it needs the
//! `SHADER_FLOAT16` capability). Buffers hold each dtype as itself except `bool`, which is stored as a `u32`
//! that is 0 or 1 (WGSL storage buffers cannot hold `bool`).
//!
//! Every kernel has the same frame: one read-only storage buffer per operand at `@group(0) @binding(i)`, the
//! output (read-write) after them, and last a uniform block (`BindingRole::Dims`) holding the element count
//! and the runtime value of every symbolic dimension the kernel's shapes mention, all `u32`. The entry point
//! is `main` with `@workgroup_size(256)`; the element index is `gid.x + gid.y * (num_workgroups.x * 256)`, so
//! a dispatch over more than 65535 workgroups folds into a 2-D grid, and invocations past the count return.

mod builder;
mod elementwise;
#[cfg(test)]
mod tests;

use crate::dim::SymId;
use crate::ir::{DType, NodeId};

pub use elementwise::elementwise_kernel;

/// Invocations per workgroup (x) of every kernel; dispatches use `ceil(count / WORKGROUP_SIZE)` workgroups.
pub const WORKGROUP_SIZE: u32 = 256;

/// The bind group every kernel uses.
pub const BIND_GROUP: u32 = 0;

/// Why no kernel came out. `Unsupported` is an honest "not yet"; `Internal` is a compiler bug (a module that
/// naga rejects) and is reported, never passed on to a driver.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodegenError {
    #[error("no GPU kernel for `{op}` yet")]
    Unsupported { op: String },
    #[error("internal compiler error in kernel `{kernel}`: {message}")]
    Internal { kernel: String, message: String },
}

/// What a kernel binding holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingRole {
    /// The operand `node`, read-only, elements of `dtype` (`bool` as `u32` 0/1).
    Input { node: NodeId, dtype: DType },
    /// The result of `node`, read-write.
    Output { node: NodeId, dtype: DType },
    /// The uniform block: `count` (elements of the output) at offset 0, then one `u32` per entry of
    /// `symbols`, in order, at offsets 4, 8, ...; `size` is the block's byte size.
    Dims { symbols: Vec<SymId>, size: u32 },
}

/// One `@group(BIND_GROUP) @binding(binding)` resource of a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelBinding {
    pub binding: u32,
    pub role: BindingRole,
}

/// A validated compute kernel. It exists only once naga has validated `module` (producing `info`) and both
/// backends have written it, so holding a `Kernel` means its WGSL and SPIR-V are available.
#[derive(Debug)]
pub struct Kernel {
    pub name: String,
    pub module: naga::Module,
    pub info: naga::valid::ModuleInfo,
    pub bindings: Vec<KernelBinding>,
    wgsl: String,
    spirv: Vec<u32>,
}

impl Kernel {
    /// The kernel as WGSL source (for wgpu's `ShaderSource::Wgsl`, snapshots and debugging).
    pub fn wgsl(&self) -> String {
        self.wgsl.clone()
    }

    /// The kernel as SPIR-V words (version 1.0, `main` as a GLCompute entry point).
    pub fn spirv(&self) -> Vec<u32> {
        self.spirv.clone()
    }

    /// Compacts, validates and writes out `module`; any failure is a compiler bug.
    fn finish(name: String, mut module: naga::Module, bindings: Vec<KernelBinding>) -> Result<Kernel, CodegenError> {
        let internal = |message: String| CodegenError::Internal { kernel: name.clone(), message };
        naga::compact::compact(&mut module, naga::compact::KeepUnused::No);
        let mut validator =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default());
        let info = validator.validate(&module).map_err(|err| internal(error_chain(&err)))?;
        let wgsl = naga::back::wgsl::write_string(&module, &info, naga::back::wgsl::WriterFlags::empty())
            .map_err(|err| internal(format!("WGSL backend: {}", error_chain(&err))))?;
        let pipeline = naga::back::spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: "main".to_string(),
        };
        let spirv = naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), Some(&pipeline))
            .map_err(|err| internal(format!("SPIR-V backend: {}", error_chain(&err))))?;
        Ok(Kernel { name, module, info, bindings, wgsl, spirv })
    }
}

/// An error and all its sources on one line (naga nests the useful detail several levels down).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}
