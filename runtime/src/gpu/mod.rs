//! The wgpu executor: `Gpu` opens one adapter and device (Vulkan by default, so Mesa's lavapipe serves on a
//! machine without a GPU), turns ahead-of-time WGSL kernels (`KernelSource`) into cached compute pipelines,
//! moves host tensors in and out of storage buffers (`buffer.rs`) and runs a list of `Dispatch`es as one
//! command submission. Every wgpu call that can fail validation runs inside an error scope, so a bad kernel,
//! a wrong binding or an oversized buffer is a `GpuError`, never a panic from wgpu's uncaptured-error handler.
//! Limits: one bind group (group 0) per kernel, storage buffers plus uniform blocks (`Gpu::uniform`), blocking calls (pollster), and kernels
//! as WGSL text (SPIR-V and naga modules come with the bundle loader).

mod buffer;

pub use buffer::device_bytes;
pub(crate) use buffer::to_device_bytes;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// The environment variable that picks the backend when `GpuOptions::backend` is `None`.
pub const BACKEND_ENV: &str = "TDSL_BACKEND";

/// Which wgpu backends `Gpu::new` may open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Vulkan,
    Gl,
    /// Any backend compiled in (Vulkan, then GL).
    Any,
}

impl BackendChoice {
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Vulkan => "vulkan",
            BackendChoice::Gl => "gl",
            BackendChoice::Any => "any",
        }
    }
    pub fn from_name(name: &str) -> Option<BackendChoice> {
        [BackendChoice::Vulkan, BackendChoice::Gl, BackendChoice::Any]
            .into_iter()
            .find(|b| b.name() == name.trim().to_ascii_lowercase())
    }
    fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Gl => wgpu::Backends::GL,
            BackendChoice::Any => wgpu::Backends::VULKAN | wgpu::Backends::GL,
        }
    }
}

/// What `Gpu::new` asks for. The default: the backend from `TDSL_BACKEND` (else Vulkan), no optional
/// features, and `wgpu::Limits::downlevel_defaults()` with the storage-buffer limits raised to the adapter's.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// `None`: read `TDSL_BACKEND` (vulkan|gl|any), Vulkan when it is unset.
    pub backend: Option<BackendChoice>,
    /// Exactly the optional features the device gets (e.g. `SHADER_F16` for kernels doing f16 arithmetic).
    pub features: wgpu::Features,
    /// `None`: downlevel defaults raised as above; `Some`: exactly these limits.
    pub limits: Option<wgpu::Limits>,
}

/// Everything that can go wrong on the GPU side, each with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("{BACKEND_ENV}={value:?} is not a backend; use vulkan, gl or any")]
    BadBackend { value: String },
    #[error(
        "no GPU adapter found for backend {}; on a machine without a GPU install Mesa's lavapipe \
         (Debian package mesa-vulkan-drivers) ({detail})",
        .backend.name()
    )]
    NoAdapter { backend: BackendChoice, detail: String },
    #[error("adapter {adapter} cannot provide what was requested: {problems}")]
    Unsupported { adapter: String, problems: String },
    #[error("adapter {adapter} refused to open a device: {message}")]
    RequestDevice { adapter: String, message: String },
    #[error("kernel {name} failed to compile: {message}")]
    Kernel { name: String, message: String },
    #[error(
        "dispatch {index} asks for {workgroups:?} workgroups but the device allows at most {limit} per \
         dimension; fold the grid"
    )]
    TooManyWorkgroups { index: usize, workgroups: [u32; 3], limit: u32 },
    #[error("a {what} of {bytes} bytes exceeds the device limit of {limit} bytes")]
    TooLarge { what: &'static str, bytes: u64, limit: u64 },
    #[error("uploading {tensor} failed: {message}")]
    Upload { tensor: String, message: String },
    #[error("running {steps} dispatch(es) failed: {message}")]
    Run { steps: usize, message: String },
    #[error("downloading a {dtype}{shape:?} tensor failed: {message}")]
    Download { dtype: &'static str, shape: Vec<usize>, message: String },
}

/// A compute kernel as the compiler emitted it ahead of time: WGSL with an entry point `main` whose
/// storage buffers are `@group(0) @binding(0..n)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelSource {
    pub name: String,
    pub wgsl: String,
}

/// One kernel launch: `buffers[i]` is bound at `@group(0) @binding(i)`.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub buffers: Vec<wgpu::Buffer>,
    pub workgroups: [u32; 3],
}

/// An open device with its queue and the pipelines built so far.
pub struct Gpu {
    pub instance: wgpu::Instance,
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pipelines: Mutex<HashMap<u64, Arc<wgpu::ComputePipeline>>>,
}

impl Gpu {
    /// Opens the adapter and device `options` ask for (see `GpuOptions`).
    pub fn new(options: &GpuOptions) -> Result<Gpu, GpuError> {
        let backend = match options.backend {
            Some(b) => b,
            None => match std::env::var(BACKEND_ENV) {
                Ok(value) => BackendChoice::from_name(&value).ok_or(GpuError::BadBackend { value })?,
                Err(_) => BackendChoice::Vulkan,
            },
        };
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backend.backends();
        desc.flags = wgpu::InstanceFlags::from_build_config().with_env();
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter { backend, detail: e.to_string() })?;
        let info = adapter.get_info();
        let adapter_limits = adapter.limits();
        let limits = options.limits.clone().unwrap_or_else(|| {
            let mut l = wgpu::Limits::downlevel_defaults();
            l.max_storage_buffer_binding_size = adapter_limits.max_storage_buffer_binding_size;
            l.max_buffer_size = adapter_limits.max_buffer_size;
            l.max_storage_buffers_per_shader_stage = adapter_limits.max_storage_buffers_per_shader_stage;
            l
        });
        let mut problems = Vec::new();
        let missing = options.features - adapter.features();
        if !missing.is_empty() {
            problems.push(format!("features {missing:?}"));
        }
        limits.check_limits_with_fail_fn(&adapter_limits, false, |name, wanted, allowed| {
            problems.push(format!("{name} {wanted} (the adapter allows {allowed})"))
        });
        if !problems.is_empty() {
            return Err(GpuError::Unsupported { adapter: info.name.clone(), problems: problems.join(", ") });
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("tdsl"),
            required_features: options.features,
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice { adapter: info.name.clone(), message: e.to_string() })?;
        // Errors outside our scopes would otherwise panic inside wgpu; every call that can fail is scoped,
        // so reaching this handler is a bug worth a message, not an abort.
        device.on_uncaptured_error(Arc::new(|e| eprintln!("tdsl-runtime: uncaptured wgpu error: {e}")));
        Ok(Gpu { instance, adapter, device, queue, info, pipelines: Mutex::new(HashMap::new()) })
    }

    /// One line about the adapter: `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu, driver llvmpipe: Mesa 22.3.6)`.
    pub fn describe(&self) -> String {
        let i = &self.info;
        format!("{} ({:?}, {:?}, driver {}: {})", i.name, i.backend, i.device_type, i.driver, i.driver_info)
    }

    /// The compute pipeline for `kernel` (entry point `main`, layout derived from the shader), built once per
    /// distinct WGSL text. A kernel that fails to parse or validate is `GpuError::Kernel` with its name.
    pub fn pipeline(&self, kernel: &KernelSource) -> Result<Arc<wgpu::ComputePipeline>, GpuError> {
        let mut hasher = DefaultHasher::new();
        kernel.wgsl.hash(&mut hasher);
        let key = hasher.finish();
        let mut cache = self.pipelines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let pipeline = self
            .scoped(|| {
                let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(&kernel.name),
                    source: wgpu::ShaderSource::Wgsl(kernel.wgsl.as_str().into()),
                });
                self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&kernel.name),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .map_err(|message| GpuError::Kernel { name: kernel.name.clone(), message })?;
        let pipeline = Arc::new(pipeline);
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Records every step in one command encoder (one compute pass) and submits once; returns after the
    /// submission, so a following `download` sees the results. Bad bindings are `GpuError::Run`.
    pub fn run(&self, steps: &[Dispatch]) -> Result<(), GpuError> {
        let limit = self.device.limits().max_compute_workgroups_per_dimension;
        for (index, step) in steps.iter().enumerate() {
            if step.workgroups.iter().any(|&n| n > limit) {
                return Err(GpuError::TooManyWorkgroups { index, workgroups: step.workgroups, limit });
            }
        }
        self.scoped(|| {
            let bind_groups: Vec<Option<wgpu::BindGroup>> = steps
                .iter()
                .map(|step| {
                    (!step.buffers.is_empty()).then(|| {
                        let entries: Vec<wgpu::BindGroupEntry> = step
                            .buffers
                            .iter()
                            .enumerate()
                            .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
                            .collect();
                        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: None,
                            layout: &step.pipeline.get_bind_group_layout(0),
                            entries: &entries,
                        })
                    })
                })
                .collect();
            let mut encoder =
                self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tdsl run") });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                for (step, group) in steps.iter().zip(&bind_groups) {
                    pass.set_pipeline(&step.pipeline);
                    if let Some(group) = group {
                        pass.set_bind_group(0, group, &[]);
                    }
                    let [x, y, z] = step.workgroups;
                    pass.dispatch_workgroups(x, y, z);
                }
            }
            self.queue.submit([encoder.finish()]);
        })
        .map_err(|message| GpuError::Run { steps: steps.len(), message })
    }

    /// Runs `work` inside validation, out-of-memory and internal error scopes; the first error caught (wgpu's
    /// text already includes the source chain and naga's annotated snippet) is the `Err`.
    fn scoped<T>(&self, work: impl FnOnce() -> T) -> Result<T, String> {
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = work();
        let errors = [
            pollster::block_on(validation.pop()),
            pollster::block_on(memory.pop()),
            pollster::block_on(internal.pop()),
        ];
        match errors.into_iter().flatten().next() {
            None => Ok(value),
            Some(error) => Err(error.to_string()),
        }
    }
}
