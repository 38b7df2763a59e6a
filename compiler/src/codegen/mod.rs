//! GPU codegen: a verified IR graph becomes a `tdsl_runtime::Program`: its device tensors and an ordered
//! list of kernel launches. Each kernel is built directly as a `naga::Module` (never WGSL text), validated
//! by `naga::valid::Validator`, compacted, and only then written out as WGSL and SPIR-V.
//!
//! The kernel boundary is a *group* (`group.rs`): a root node whose result is stored, plus nodes computed
//! inline where the root needs them (`fuse.rs` decides the groups; `schedule.rs` chooses each group's
//! `Schedule` once; `plan.rs` runs the pipeline and lists tensors and launches; `kernel.rs` builds one
//! kernel per group under its schedule; `scalar.rs` holds the per-element arithmetic). Fusion changes the
//! grouping, never the kernel builder or generated code.
//!
//! Kernel frame: the tensors read, as read-only storage arrays at `@group(0) @binding(0..n)`; the output
//! (read-write) at `n`; the uniform block (`Dims`: the invocation count, then every other dimension the
//! kernel needs, as `u32`) at `n + 1`; and, only in kernels that can fail at run time, the status buffer at
//! `n + 2`. Device layout: f32, i32, u32 as themselves, f16 as f32 (rounded to f16 after every op), bool
//! as a `u32` 0 or 1. The entry point is `main` with `@workgroup_size(256)`; the element index is
//! `gid.x + gid.y * (num_workgroups.x * 256)`, so a dispatch over more than 65535 workgroups folds into a
//! 2-D grid, and invocations past the count return. Vector kernels, row kernels and tiled contractions
//! (chosen per device profile, `target.rs`) count invocations in vectors, rows or blocks instead.

mod builder;
pub mod fuse;
pub mod group;
mod kernel;
pub mod loops;
mod ops;
mod plan;
pub mod rows;
mod scalar;
pub mod schedule;
pub mod target;
#[cfg(test)]
mod tests;
pub mod tiles;
pub mod tuning;
mod verify;

use std::collections::BTreeMap;
use tdsl_runtime::program::BoundKind;

use tdsl_runtime::program::{Feature, Limit, Requirements};

use crate::dim::Dim;
use crate::ir::NodeId;

pub use kernel::group_kernel;
pub use plan::{Compiled, lower};
pub use schedule::SORT_CAPACITY;
pub use schedule::Schedule;
pub use target::Target;
pub use verify::{GroupingError, verify_grouping};

/// Invocations per workgroup (x) of every kernel but row kernels (`rows.rs`); dispatches use
/// `ceil(count / WORKGROUP_SIZE)` workgroups.
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

/// What a kernel binding holds, in binding order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelArg {
    /// The result of `node`, read-only.
    Read(NodeId),
    /// The result of `node` (the group's root), written.
    Write(NodeId),
    /// The uniform block: one `u32` per dimension, the first being the invocation count.
    Uniform(Vec<Dim>),
    /// The program's status buffer, written on a run-time error.
    Status,
}

/// A validated compute kernel. It exists only once naga has validated `module` (producing `info`) and both
/// backends have written it, so holding a `Kernel` means its WGSL and SPIR-V are available.
#[derive(Debug)]
pub struct Kernel {
    pub name: String,
    pub module: naga::Module,
    pub info: naga::valid::ModuleInfo,
    /// Binding `i` is `args[i]`.
    pub args: Vec<KernelArg>,
    /// Invocations to dispatch (one per output element, or a workgroup per row for row kernels).
    pub invocations: Dim,
    /// Invocations per workgroup.
    pub workgroup_size: u32,
    /// Values the kernel's `u32` index arithmetic needs to stay at or below a limit: (what, value, max).
    pub bounds: Vec<(BoundKind, Dim, i64)>,
    /// What the kernel needs from the device, read off the validated module (`requirements`).
    pub requires: Requirements,
    /// The nodes whose run-time checks (gather indices, index-notation loads without `else`) the kernel
    /// makes; a failure stores the check's position here in status word 3.
    pub checks: Vec<NodeId>,
    wgsl: String,
    spirv: Vec<u32>,
}

impl Kernel {
    /// The kernel as WGSL source (for wgpu's `ShaderSource::Wgsl`, snapshots and debugging).
    pub fn wgsl(&self) -> &str {
        &self.wgsl
    }

    /// The kernel as SPIR-V words (version 1.0, `main` as a GLCompute entry point).
    pub fn spirv(&self) -> &[u32] {
        &self.spirv
    }

    /// Compacts, validates and writes out `module`; any failure is a compiler bug.
    fn finish(
        name: String,
        mut module: naga::Module,
        args: Vec<KernelArg>,
        invocations: Dim,
        workgroup_size: u32,
        bounds: Vec<(BoundKind, Dim, i64)>,
        checks: Vec<NodeId>,
    ) -> Result<Kernel, CodegenError> {
        let internal = |message: String| CodegenError::Internal { kernel: name.clone(), message };
        naga::compact::compact(&mut module, naga::compact::KeepUnused::No);
        // `quantizeToF16` (f16 rounding) needs SHADER_FLOAT16_IN_FLOAT32, which wgpu grants on Vulkan, Metal
        // and DX12 (downlevel flag SHADER_F16_IN_F32); nothing else beyond the defaults is used.
        // Row kernels of targets with subgroups use subgroup built-ins and shuffles (SPIR-V 1.3, Vulkan
        // 1.1; the runtime's `subgroup` requirement).
        let info = validate(&module, CAPABILITIES).map_err(|err| internal(error_chain(&*err)))?;
        let requires = requirements(&module);
        let wgsl = naga::back::wgsl::write_string(&module, &info, naga::back::wgsl::WriterFlags::empty())
            .map_err(|err| internal(format!("WGSL backend: {}", error_chain(&err))))?;
        let pipeline = naga::back::spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: "main".to_string(),
        };
        // Workgroup memory is not zero-initialized: every kernel writes each workgroup word before reading
        // it (row reductions, row caches, staged tiles), and naga's polyfill (one invocation storing a
        // zero array over all of it) costs CPU drivers seconds of shader compilation per kernel.
        let subgroups = module.entry_points.iter().any(|e| {
            e.function.arguments.iter().any(|a| {
                matches!(
                    a.binding,
                    Some(naga::Binding::BuiltIn(naga::BuiltIn::SubgroupSize | naga::BuiltIn::SubgroupId))
                )
            })
        });
        let options = naga::back::spv::Options {
            zero_initialize_workgroup_memory: naga::back::spv::ZeroInitializeWorkgroupMemoryMode::None,
            lang_version: if subgroups { (1, 3) } else { (1, 0) },
            ..Default::default()
        };
        let spirv = naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
            .map_err(|err| internal(format!("SPIR-V backend: {}", error_chain(&err))))?;
        Ok(Kernel { name, module, info, args, invocations, workgroup_size, bounds, requires, checks, wgsl, spirv })
    }
}

/// Every capability a kernel may use; `requirements` finds which of the optional ones it does use.
const CAPABILITIES: naga::valid::Capabilities = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32
    .union(naga::valid::Capabilities::SUBGROUP)
    .union(naga::valid::Capabilities::SHADER_FLOAT16);

/// The device features behind the optional capabilities, in the runtime's terms.
const FEATURES: [(naga::valid::Capabilities, Feature); 3] = [
    (naga::valid::Capabilities::SHADER_FLOAT16, Feature::ShaderF16),
    (naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32, Feature::ShaderF16InF32),
    (naga::valid::Capabilities::SUBGROUP, Feature::Subgroup),
];

fn validate(
    module: &naga::Module,
    capabilities: naga::valid::Capabilities,
) -> Result<naga::valid::ModuleInfo, Box<naga::WithSpan<naga::valid::ValidationError>>> {
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities).validate(module).map_err(Box::new)
}

/// What a validated module needs from the device. A feature is needed exactly when the module does not
/// validate without its capability (naga's own definition of use, so no construct is missed); limits come
/// from the module's bindings, workgroup size and workgroup memory (each variable's size by naga's layout).
fn requirements(module: &naga::Module) -> Requirements {
    let features = FEATURES
        .into_iter()
        .filter(|(capability, _)| validate(module, CAPABILITIES.difference(*capability)).is_err())
        .map(|(_, feature)| feature)
        .collect();
    let ctx = module.to_ctx();
    let (mut storage, mut uniforms, mut uniform_bytes, mut workgroup_bytes) = (0u64, 0u64, 0u64, 0u64);
    let (mut groups, mut bindings) = (0u64, 0u64);
    for (_, var) in module.global_variables.iter() {
        let size = u64::from(module.types[var.ty].inner.size(ctx));
        match var.space {
            naga::AddressSpace::Storage { .. } => storage += 1,
            naga::AddressSpace::Uniform => {
                uniforms += 1;
                uniform_bytes = uniform_bytes.max(size);
            }
            naga::AddressSpace::WorkGroup => workgroup_bytes += size,
            _ => {}
        }
        if let Some(binding) = &var.binding {
            groups = groups.max(u64::from(binding.group) + 1);
            bindings = bindings.max(u64::from(binding.binding) + 1);
        }
    }
    let [x, y, z] = module.entry_points.iter().map(|e| e.workgroup_size).next().unwrap_or([1, 1, 1]);
    let mut limits = BTreeMap::from([
        (Limit::BindGroups, groups),
        (Limit::BindingsPerBindGroup, bindings),
        (Limit::StorageBuffersPerShaderStage, storage),
        (Limit::UniformBuffersPerShaderStage, uniforms),
        (Limit::UniformBufferBindingSize, uniform_bytes),
        (Limit::ComputeWorkgroupSizeX, u64::from(x)),
        (Limit::ComputeInvocationsPerWorkgroup, u64::from(x) * u64::from(y) * u64::from(z)),
    ]);
    if workgroup_bytes > 0 {
        limits.insert(Limit::ComputeWorkgroupStorageSize, workgroup_bytes);
    }
    Requirements { features, limits }
}

/// SPIR-V words that do not parse as a module (what the parser said).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse the SPIR-V module: {0}")]
pub struct DisassembleError(pub String);

/// SPIR-V words as assembly text (`spirv-dis` style), for `tdslc emit spvasm` and snapshots.
pub fn disassemble(words: &[u32]) -> Result<String, DisassembleError> {
    use rspirv::binary::Disassemble;
    let module = rspirv::dr::load_words(words).map_err(|e| DisassembleError(e.to_string()))?;
    Ok(module.disassemble())
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
