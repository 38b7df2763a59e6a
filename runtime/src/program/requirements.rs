//! What a kernel needs from the device, as typed values: optional `Feature`s and least `Limit` values. The
//! compiler computes them from the validated naga module of each kernel (`tdsl_compiler::codegen`), a
//! `Launch` carries them, the bundle manifest writes and reads them by name (spec/bundle.md B6) and
//! `Requirements::unmet` compares them with a device, so nothing downstream searches kernel text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// An optional device capability a kernel may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// f16 arithmetic in the kernel (`wgpu::Features::SHADER_F16`).
    ShaderF16,
    /// `quantizeToF16`, the f16 rounding of f32 values (`wgpu::DownlevelFlags::SHADER_F16_IN_F32`).
    ShaderF16InF32,
    /// Subgroup built-ins and shuffles (`wgpu::Features::SUBGROUP`).
    Subgroup,
}

impl Feature {
    /// Every feature, in manifest order.
    pub const ALL: [Feature; 3] = [Feature::ShaderF16, Feature::ShaderF16InF32, Feature::Subgroup];

    /// The feature's name in bundle manifests and messages.
    pub fn name(self) -> &'static str {
        match self {
            Feature::ShaderF16 => "shader-f16",
            Feature::ShaderF16InF32 => "shader-f16-in-f32",
            Feature::Subgroup => "subgroup",
        }
    }

    /// The feature called `name` in a manifest, if this runtime knows it.
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether a device with these features and downlevel flags has it.
    pub fn available(self, features: wgpu::Features, downlevel: wgpu::DownlevelFlags) -> bool {
        match self {
            Feature::ShaderF16 => features.contains(wgpu::Features::SHADER_F16),
            Feature::ShaderF16InF32 => downlevel.contains(wgpu::DownlevelFlags::SHADER_F16_IN_F32),
            Feature::Subgroup => features.contains(wgpu::Features::SUBGROUP),
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A device limit a kernel may need raised above its least value; named like its `wgpu::Limits` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    /// `max_bind_groups`.
    BindGroups,
    /// `max_bindings_per_bind_group`.
    BindingsPerBindGroup,
    /// `max_storage_buffers_per_shader_stage`.
    StorageBuffersPerShaderStage,
    /// `max_uniform_buffers_per_shader_stage`.
    UniformBuffersPerShaderStage,
    /// `max_uniform_buffer_binding_size`, in bytes.
    UniformBufferBindingSize,
    /// `max_compute_workgroup_size_x`.
    ComputeWorkgroupSizeX,
    /// `max_compute_invocations_per_workgroup`.
    ComputeInvocationsPerWorkgroup,
    /// `max_compute_workgroup_storage_size`, in bytes of workgroup memory.
    ComputeWorkgroupStorageSize,
}

impl Limit {
    /// Every limit, in manifest order.
    pub const ALL: [Limit; 8] = [
        Limit::BindGroups,
        Limit::BindingsPerBindGroup,
        Limit::StorageBuffersPerShaderStage,
        Limit::UniformBuffersPerShaderStage,
        Limit::UniformBufferBindingSize,
        Limit::ComputeWorkgroupSizeX,
        Limit::ComputeInvocationsPerWorkgroup,
        Limit::ComputeWorkgroupStorageSize,
    ];

    /// The `wgpu::Limits` field name, used in manifests and messages.
    pub fn name(self) -> &'static str {
        match self {
            Limit::BindGroups => "max_bind_groups",
            Limit::BindingsPerBindGroup => "max_bindings_per_bind_group",
            Limit::StorageBuffersPerShaderStage => "max_storage_buffers_per_shader_stage",
            Limit::UniformBuffersPerShaderStage => "max_uniform_buffers_per_shader_stage",
            Limit::UniformBufferBindingSize => "max_uniform_buffer_binding_size",
            Limit::ComputeWorkgroupSizeX => "max_compute_workgroup_size_x",
            Limit::ComputeInvocationsPerWorkgroup => "max_compute_invocations_per_workgroup",
            Limit::ComputeWorkgroupStorageSize => "max_compute_workgroup_storage_size",
        }
    }

    /// The limit called `name` in a manifest, if this runtime knows it.
    pub fn from_name(name: &str) -> Option<Limit> {
        Limit::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The device's value of this limit.
    pub fn of(self, limits: &wgpu::Limits) -> u64 {
        match self {
            Limit::BindGroups => limits.max_bind_groups.into(),
            Limit::BindingsPerBindGroup => limits.max_bindings_per_bind_group.into(),
            Limit::StorageBuffersPerShaderStage => limits.max_storage_buffers_per_shader_stage.into(),
            Limit::UniformBuffersPerShaderStage => limits.max_uniform_buffers_per_shader_stage.into(),
            Limit::UniformBufferBindingSize => limits.max_uniform_buffer_binding_size,
            Limit::ComputeWorkgroupSizeX => limits.max_compute_workgroup_size_x.into(),
            Limit::ComputeInvocationsPerWorkgroup => limits.max_compute_invocations_per_workgroup.into(),
            Limit::ComputeWorkgroupStorageSize => limits.max_compute_workgroup_storage_size.into(),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one kernel needs from the device beyond what every device offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Optional features the kernel uses.
    pub features: BTreeSet<Feature>,
    /// The least value of each limit the kernel needs.
    pub limits: BTreeMap<Limit, u64>,
}

/// One requirement a device does not meet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unmet {
    /// The device lacks a feature.
    #[error("needs the device feature `{0}`, which it lacks")]
    Feature(Feature),
    /// The device's limit is below what the kernel needs.
    #[error("needs the limit {limit} >= {needed}, but the device allows {allowed}")]
    Limit {
        /// Which limit.
        limit: Limit,
        /// What the kernel needs.
        needed: u64,
        /// What the device allows.
        allowed: u64,
    },
}

impl Requirements {
    /// Every requirement a device with these features, downlevel flags and limits does not meet.
    pub fn unmet(
        &self,
        features: wgpu::Features,
        downlevel: wgpu::DownlevelFlags,
        limits: &wgpu::Limits,
    ) -> Vec<Unmet> {
        let mut unmet: Vec<Unmet> =
            self.features.iter().filter(|f| !f.available(features, downlevel)).map(|&f| Unmet::Feature(f)).collect();
        for (&limit, &needed) in &self.limits {
            let allowed = limit.of(limits);
            if allowed < needed {
                unmet.push(Unmet::Limit { limit, needed, allowed });
            }
        }
        unmet
    }
}
