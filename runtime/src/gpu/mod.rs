//! The wgpu executor: `Gpu` opens one adapter and device (Vulkan by default, so Mesa's lavapipe serves on a
//! machine without a GPU), turns ahead-of-time WGSL kernels (`KernelSource`) into cached compute pipelines,
//! moves host tensors in and out of storage buffers (`buffer.rs`) and runs a list of `Dispatch`es as one
//! command submission. Every wgpu call that can fail validation runs inside an error scope, so a bad kernel,
//! a wrong binding or an oversized buffer is a `GpuError`, never a panic from wgpu's uncaptured-error handler.
//! Kernels come as SPIR-V or WGSL (`Gpu::launch_pipeline`): where the device takes SPIR-V as it is
//! (Vulkan with `Features::PASSTHROUGH_SHADERS`), a launch's ahead-of-time SPIR-V goes straight to the driver
//! with a pipeline layout derived from the launch's arguments, so no shader front end runs at all; elsewhere
//! (GL) wgpu translates the WGSL. Both `tdslc run` and bundles take the same path, so their results agree
//! bit for bit. With `GpuOptions::pipeline_cache`, compiled pipelines are kept in wgpu's pipeline cache
//! (Vulkan) and saved to the file the user names, so the next start-up skips the driver's compiler.
//! Limits: one bind group (group 0) per kernel, storage buffers plus uniform blocks (`Gpu::uniform`),
//! blocking calls (pollster).

mod buffer;
mod device_tensor;
mod measure;

pub use buffer::device_bytes;
pub(crate) use buffer::to_device_bytes;
pub use device_tensor::DeviceTensor;
pub use measure::{DispatchTimes, Timing, median};
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::program::{Arg, Launch};

/// The environment variable that picks the backend when `GpuOptions::backend` is `None`.
pub const BACKEND_ENV: &str = "TDSL_BACKEND";

/// The environment variable that sets the most loop iterations one invocation may run
/// (`Gpu::max_loop_iterations`): a number, or `unlimited`. Unset: the adapter's (`loop_limit`).
pub const LOOP_LIMIT_ENV: &str = "TDSL_MAX_LOOP_ITERATIONS";

/// The loop iterations after which llvmpipe (Mesa's software rasterizer, behind lavapipe's Vulkan and its
/// GL) ends every loop of a shader invocation, silently: gallivm's loop limiter
/// (`LP_MAX_TGSI_LOOP_ITERATIONS`) counts every loop back-edge of the invocation, nested loops included.
pub const LLVMPIPE_LOOP_ITERATIONS: i64 = 65535;

/// The most loop iterations per invocation tdsl lets a launch run on llvmpipe: its limit less a margin
/// (iterations of loops the compiler did not write, e.g. a driver's own lowering).
pub const LLVMPIPE_LOOP_LIMIT: i64 = LLVMPIPE_LOOP_ITERATIONS - 1535;

/// The most loop iterations one invocation may run on the adapter `info` describes: `LLVMPIPE_LOOP_LIMIT`
/// on llvmpipe and lavapipe (a CPU adapter or driver named so), else no limit (`i64::MAX`).
pub fn loop_limit(info: &wgpu::AdapterInfo) -> i64 {
    let named = |s: &str| {
        let s = s.to_ascii_lowercase();
        s.contains("llvmpipe") || s.contains("lavapipe")
    };
    if named(&info.name)
        || named(&info.driver)
        || (info.device_type == wgpu::DeviceType::Cpu && named(&info.driver_info))
    {
        LLVMPIPE_LOOP_LIMIT
    } else {
        i64::MAX
    }
}

/// `LOOP_LIMIT_ENV`'s value: `None` when unset, `Err` with the value when it is neither a positive number
/// nor `unlimited`.
fn loop_limit_from_env() -> Result<Option<i64>, String> {
    match std::env::var(LOOP_LIMIT_ENV) {
        Err(_) => Ok(None),
        Ok(value) => match value.trim() {
            "unlimited" => Ok(Some(i64::MAX)),
            number => number.parse::<i64>().ok().filter(|&n| n > 0).map(Some).ok_or(value),
        },
    }
}

/// Which wgpu backends `Gpu::new` may open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// Vulkan only (lavapipe on a machine without a GPU).
    Vulkan,
    /// OpenGL (ES) only.
    Gl,
    /// Any backend compiled in (Vulkan, then GL).
    Any,
}

impl BackendChoice {
    /// The name `TDSL_BACKEND` and `--backend` take.
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Vulkan => "vulkan",
            BackendChoice::Gl => "gl",
            BackendChoice::Any => "any",
        }
    }
    /// The choice called `name` (case and surrounding blanks ignored).
    pub fn from_name(name: &str) -> Option<BackendChoice> {
        [BackendChoice::Vulkan, BackendChoice::Gl, BackendChoice::Any]
            .into_iter()
            .find(|b| b.name() == name.trim().to_ascii_lowercase())
    }
    pub(crate) fn backends(self) -> wgpu::Backends {
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
    /// A file for wgpu's pipeline cache: read when it exists (stale or foreign data is ignored), written by
    /// `Gpu::save_pipeline_cache`. Only backends with `Features::PIPELINE_CACHE` (Vulkan) use it; elsewhere
    /// it is ignored and `Gpu::pipeline_cache_state` says so.
    pub pipeline_cache: Option<PathBuf>,
    /// The most loop iterations one invocation may run (`Gpu::max_loop_iterations`); `None`: from
    /// `TDSL_MAX_LOOP_ITERATIONS`, else the adapter's (`loop_limit`).
    pub max_loop_iterations: Option<i64>,
}

/// The backends `options` allow: `options.backend`, else `TDSL_BACKEND`, else Vulkan.
pub(crate) fn backend_choice(options: &GpuOptions) -> Result<BackendChoice, GpuError> {
    match options.backend {
        Some(b) => Ok(b),
        None => match std::env::var(BACKEND_ENV) {
            Ok(value) => BackendChoice::from_name(&value).ok_or(GpuError::BadBackend { value }),
            Err(_) => Ok(BackendChoice::Vulkan),
        },
    }
}

/// Everything that can go wrong on the GPU side, each with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// `TDSL_MAX_LOOP_ITERATIONS` is neither a positive number nor `unlimited`.
    #[error("{LOOP_LIMIT_ENV}={value:?} is not a loop limit; use a positive number or unlimited")]
    BadLoopLimit {
        /// The variable's value.
        value: String,
    },
    /// `TDSL_BACKEND` names no backend.
    #[error("{BACKEND_ENV}={value:?} is not a backend; use vulkan, gl or any")]
    BadBackend {
        /// The variable's value.
        value: String,
    },
    /// No adapter of the backends asked for.
    #[error(
        "no GPU adapter found for backend {}; on a machine without a GPU install Mesa's lavapipe \
         (Debian package mesa-vulkan-drivers) ({detail})",
        .backend.name()
    )]
    NoAdapter {
        /// The backends asked for.
        backend: BackendChoice,
        /// What wgpu said.
        detail: String,
    },
    /// The adapter lacks features or limits `GpuOptions` asked for.
    #[error("adapter {adapter} cannot provide what was requested: {problems}")]
    Unsupported {
        /// The adapter's name.
        adapter: String,
        /// Every missing feature and limit.
        problems: String,
    },
    /// Opening the device failed.
    #[error("adapter {adapter} refused to open a device: {message}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// What wgpu said.
        message: String,
    },
    /// A kernel's shader or pipeline failed validation.
    #[error("kernel {name} failed to compile: {message}")]
    Kernel {
        /// The kernel's name.
        name: String,
        /// What wgpu (naga) said.
        message: String,
    },
    /// The pipeline cache file could not be read or written.
    #[error("pipeline cache `{}`: {message}", .path.display())]
    PipelineCache {
        /// The file.
        path: PathBuf,
        /// The I/O error's text.
        message: String,
    },
    /// A dispatch's grid over the device's limit.
    #[error(
        "dispatch {index} asks for {workgroups:?} workgroups but the device allows at most {limit} per \
         dimension; fold the grid"
    )]
    TooManyWorkgroups {
        /// The dispatch's index.
        index: usize,
        /// Its grid.
        workgroups: [u32; 3],
        /// The device's limit per dimension.
        limit: u32,
    },
    /// A buffer larger than the device allows.
    #[error("a {what} of {bytes} bytes exceeds the device limit of {limit} bytes")]
    TooLarge {
        /// The kind of buffer.
        what: &'static str,
        /// Its size.
        bytes: u64,
        /// The device's limit.
        limit: u64,
    },
    /// A buffer could not be created or filled.
    #[error("uploading {tensor} failed: {message}")]
    Upload {
        /// The tensor or buffer.
        tensor: String,
        /// What went wrong.
        message: String,
    },
    /// Binding or submitting dispatches failed.
    #[error("running {steps} dispatch(es) failed: {message}")]
    Run {
        /// Dispatches in the submission.
        steps: usize,
        /// What wgpu said.
        message: String,
    },
    /// Reading a buffer back failed.
    #[error("downloading a {dtype}{shape:?} tensor failed: {message}")]
    Download {
        /// The tensor's dtype.
        dtype: &'static str,
        /// Its shape.
        shape: Vec<usize>,
        /// What went wrong.
        message: String,
    },
    /// A `DeviceTensor` was handed to a `Gpu` other than the one that holds it.
    #[error("a {tensor} device tensor belongs to another device ({owner}); this one is {here}")]
    OtherDevice {
        /// The tensor's type.
        tensor: String,
        /// The device holding it.
        owner: String,
        /// The device it was given to.
        here: String,
    },
}

/// A compute kernel as the compiler emitted it ahead of time: WGSL with an entry point `main` whose
/// storage buffers are `@group(0) @binding(0..n)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelSource {
    /// The kernel's name, for messages.
    pub name: String,
    /// Its WGSL source.
    pub wgsl: String,
}

/// One kernel launch: `buffers[i]` is bound at `@group(0) @binding(i)`.
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// The kernel's pipeline.
    pub pipeline: Arc<wgpu::ComputePipeline>,
    /// The buffers, in binding order.
    pub buffers: Vec<wgpu::Buffer>,
    /// The grid.
    pub workgroups: [u32; 3],
}

/// A `Dispatch` with its bind group made (`Gpu::bind`).
#[derive(Clone, Debug)]
pub struct BoundDispatch {
    /// The kernel's pipeline.
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub(crate) bind_group: Option<wgpu::BindGroup>,
    /// The grid.
    pub workgroups: [u32; 3],
}

impl BoundDispatch {
    fn record(&self, pass: &mut wgpu::ComputePass) {
        pass.set_pipeline(&self.pipeline);
        if let Some(group) = &self.bind_group {
            pass.set_bind_group(0, group, &[]);
        }
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// An open device with its queue and the pipelines built so far: opened by `Gpu::new`, or wrapping an
/// application's own device (`Gpu::from_device`).
pub struct Gpu {
    /// The adapter the device was opened on.
    pub adapter: wgpu::Adapter,
    /// The device every buffer and pipeline is created on.
    pub device: wgpu::Device,
    /// The device's queue: uploads and submissions.
    pub queue: wgpu::Queue,
    /// What the adapter says about itself (name, backend, driver).
    pub info: wgpu::AdapterInfo,
    /// Tells this `Gpu` apart from others in the process (`DeviceTensor`s remember theirs).
    id: u64,
    stats: Counters,
    pipelines: Mutex<HashMap<u64, Arc<wgpu::ComputePipeline>>>,
    cache: Option<(wgpu::PipelineCache, PathBuf)>,
    cache_state: PipelineCacheState,
    max_loop_iterations: i64,
}

/// What a `Gpu` has done to device memory since it was opened (`Gpu::stats`): the bytes its queue wrote
/// and the buffers it created. A resident `Model` shows here that a second run uploads only its inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    /// Tensor bytes written into storage buffers (inputs, params, `Gpu::upload`), in the device layout.
    pub uploaded_bytes: u64,
    /// Bytes written into uniform buffers (kernels' dimension blocks).
    pub uniform_bytes: u64,
    /// Storage and uniform buffers created (staging buffers of downloads are not counted).
    pub buffers_created: u64,
    /// The bytes of those buffers.
    pub bytes_allocated: u64,
}

#[derive(Default)]
struct Counters {
    uploaded_bytes: AtomicU64,
    uniform_bytes: AtomicU64,
    buffers_created: AtomicU64,
    bytes_allocated: AtomicU64,
}

/// Source of `Gpu::id`.
static NEXT_GPU: AtomicU64 = AtomicU64::new(1);

/// What became of `GpuOptions::pipeline_cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelineCacheState {
    /// No cache file was asked for.
    Off,
    /// The backend has no pipeline cache (`Features::PIPELINE_CACHE`); the file is not used.
    Unsupported,
    /// The file did not exist yet: an empty cache, saved by `save_pipeline_cache`.
    Created,
    /// The file's data was handed to the driver (which ignores it when it is stale).
    Loaded {
        /// The file's size.
        bytes: usize,
    },
}

impl Gpu {
    /// Opens the adapter and device `options` ask for (see `GpuOptions`).
    pub fn new(options: &GpuOptions) -> Result<Gpu, GpuError> {
        let backend = backend_choice(options)?;
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
        let max_loop_iterations = match options.max_loop_iterations {
            Some(limit) => limit,
            None => {
                loop_limit_from_env().map_err(|value| GpuError::BadLoopLimit { value })?.unwrap_or(loop_limit(&info))
            }
        };
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
        // Optional features that change no kernel's meaning are taken when the adapter has them: SPIR-V
        // passthrough (no shader front end at run time) and, when a cache file is wanted, the pipeline cache.
        // Timestamp queries only serve `measure.rs` (benchmarks). Subgroup operations let row kernels
        // compiled for them (bundle feature `subgroup`) reduce with shuffles.
        let mut optional =
            wgpu::Features::PASSTHROUGH_SHADERS | wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP;
        if options.pipeline_cache.is_some() {
            optional |= wgpu::Features::PIPELINE_CACHE;
        }
        let features = options.features | (adapter.features() & optional);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("tdsl"),
            required_features: features,
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice { adapter: info.name.clone(), message: e.to_string() })?;
        // Errors outside our scopes would otherwise panic inside wgpu; every call that can fail is scoped,
        // so reaching this handler is a bug worth a message, not an abort.
        device.on_uncaptured_error(Arc::new(|e| eprintln!("tdsl-runtime: uncaptured wgpu error: {e}")));
        let (cache, cache_state) = match &options.pipeline_cache {
            None => (None, PipelineCacheState::Off),
            Some(_) if !device.features().contains(wgpu::Features::PIPELINE_CACHE) => {
                (None, PipelineCacheState::Unsupported)
            }
            Some(path) => {
                let data = match std::fs::read(path) {
                    Ok(data) => Some(data),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(GpuError::PipelineCache { path: path.clone(), message: e.to_string() }),
                };
                // SAFETY: wgpu requires `data` to come from `PipelineCache::get_data`; the file is one this
                // runtime wrote with `save_pipeline_cache`. wgpu checks the header (vendor, device, driver,
                // wgpu version) and its checksum, and with `fallback` starts empty when they do not match.
                let cache = unsafe {
                    device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                        label: Some("tdsl pipeline cache"),
                        data: data.as_deref(),
                        fallback: true,
                    })
                };
                let state = match &data {
                    Some(d) => PipelineCacheState::Loaded { bytes: d.len() },
                    None => PipelineCacheState::Created,
                };
                (Some((cache, path.clone())), state)
            }
        };
        let mut gpu = Gpu::assemble(adapter, device, queue, cache, cache_state);
        gpu.max_loop_iterations = max_loop_iterations;
        Ok(gpu)
    }

    /// Wraps a device an application opened itself (it keeps using `device` and `queue`; tdsl's buffers
    /// and pipelines live beside its own). `adapter` is the one `device` came from; its features and limits
    /// are what `Session::new` checks bundles against. Nothing about the device is changed: no error
    /// handler is installed (wgpu calls that can fail run in error scopes anyway) and there is no pipeline
    /// cache file. Kernels get SPIR-V passthrough only when the device was opened with
    /// `Features::PASSTHROUGH_SHADERS`, else they are built from WGSL. The loop limit is
    /// `TDSL_MAX_LOOP_ITERATIONS`'s where it is valid, else the adapter's (`loop_limit`).
    pub fn from_device(adapter: wgpu::Adapter, device: wgpu::Device, queue: wgpu::Queue) -> Gpu {
        Gpu::assemble(adapter, device, queue, None, PipelineCacheState::Off)
    }

    fn assemble(
        adapter: wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        cache: Option<(wgpu::PipelineCache, PathBuf)>,
        cache_state: PipelineCacheState,
    ) -> Gpu {
        let info = adapter.get_info();
        let max_loop_iterations = loop_limit_from_env().ok().flatten().unwrap_or(loop_limit(&info));
        Gpu {
            info,
            max_loop_iterations,
            adapter,
            device,
            queue,
            id: NEXT_GPU.fetch_add(1, Ordering::Relaxed),
            stats: Counters::default(),
            pipelines: Mutex::new(HashMap::new()),
            cache,
            cache_state,
        }
    }

    /// The bytes written and buffers created so far (see `GpuStats`).
    pub fn stats(&self) -> GpuStats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GpuStats {
            uploaded_bytes: read(&self.stats.uploaded_bytes),
            uniform_bytes: read(&self.stats.uniform_bytes),
            buffers_created: read(&self.stats.buffers_created),
            bytes_allocated: read(&self.stats.bytes_allocated),
        }
    }

    /// Counts a buffer of `size` bytes created.
    fn count_buffer(&self, size: u64) {
        self.stats.buffers_created.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_allocated.fetch_add(size, Ordering::Relaxed);
    }

    /// What became of the pipeline cache file asked for in `GpuOptions`.
    pub fn pipeline_cache_state(&self) -> PipelineCacheState {
        self.cache_state
    }

    /// Writes the pipeline cache to its file (through a temporary file and a rename, so a crash never
    /// leaves half a cache); returns the bytes written, or `None` when there is no cache.
    pub fn save_pipeline_cache(&self) -> Result<Option<usize>, GpuError> {
        let Some((cache, path)) = &self.cache else { return Ok(None) };
        let Some(data) = cache.get_data() else { return Ok(None) };
        let fail = |e: std::io::Error| GpuError::PipelineCache { path: path.clone(), message: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let temporary = temporary_path(path);
        std::fs::write(&temporary, &data).map_err(fail)?;
        std::fs::rename(&temporary, path).map_err(fail)?;
        Ok(Some(data.len()))
    }

    /// Whether `launch_pipeline` hands SPIR-V to the driver as it is (else it builds from WGSL): on Vulkan
    /// with `Features::PASSTHROUGH_SHADERS`. Other backends report that feature for their own shader
    /// languages (GL takes GLSL, Metal MSL, DX12 DXIL), never SPIR-V, so they build from WGSL.
    pub fn takes_spirv(&self) -> bool {
        self.info.backend == wgpu::Backend::Vulkan
            && self.device.features().contains(wgpu::Features::PASSTHROUGH_SHADERS)
    }

    /// The compute pipeline for `launch`, built once per distinct kernel: from its SPIR-V, passed through to
    /// the driver with a layout derived from `launch.args` (`Read` a read-only storage buffer, `Write` and
    /// `Status` read-write storage buffers, `Uniform` a uniform buffer), when the device takes SPIR-V and the
    /// launch has it; otherwise from its WGSL (`pipeline`). Failures name the launch.
    pub fn launch_pipeline(&self, launch: &Launch) -> Result<Arc<wgpu::ComputePipeline>, GpuError> {
        if launch.spirv.is_empty() || !self.takes_spirv() {
            return self.pipeline(&KernelSource { name: launch.name.clone(), wgsl: launch.wgsl.clone() });
        }
        let mut hasher = DefaultHasher::new();
        (&launch.spirv, launch.workgroup_size).hash(&mut hasher);
        for arg in &launch.args {
            std::mem::discriminant(arg).hash(&mut hasher);
        }
        let key = hasher.finish() ^ 0x5350_4952_5600_0000;
        let mut cache = self.pipelines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let name = launch.name.as_str();
        let entries: Vec<wgpu::BindGroupLayoutEntry> = launch
            .args
            .iter()
            .enumerate()
            .map(|(binding, arg)| wgpu::BindGroupLayoutEntry {
                binding: binding as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match arg {
                        Arg::Read(_) => wgpu::BufferBindingType::Storage { read_only: true },
                        Arg::Write(_) | Arg::Status => wgpu::BufferBindingType::Storage { read_only: false },
                        Arg::Uniform(_) => wgpu::BufferBindingType::Uniform,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let pipeline = self
            .scoped(|| {
                let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(name),
                    entries: &entries,
                });
                let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(name),
                    bind_group_layouts: &[Some(&layout)],
                    immediate_size: 0,
                });
                // SAFETY: the SPIR-V was written and validated by the compiler's naga backend (`codegen`), and
                // a bundle's kernels are covered by its checksum and checked to be SPIR-V with entry point
                // `main` (`bundle::read`); its bindings are `args` by construction (G2.1).
                let module = unsafe {
                    self.device.create_shader_module_passthrough(wgpu::ShaderModuleDescriptorPassthrough {
                        label: Some(name),
                        entry_points: std::borrow::Cow::Owned(vec![wgpu::PassthroughShaderEntryPoint {
                            name: "main".into(),
                            workgroup_size: (launch.workgroup_size, 1, 1),
                        }]),
                        spirv: Some(std::borrow::Cow::Borrowed(&launch.spirv)),
                        ..Default::default()
                    })
                };
                self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(name),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: self.cache.as_ref().map(|(c, _)| c),
                })
            })
            .map_err(|message| GpuError::Kernel { name: name.to_string(), message })?;
        let pipeline = Arc::new(pipeline);
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// The most loop iterations one invocation may run on this device (`i64::MAX`: no limit): from
    /// `GpuOptions::max_loop_iterations`, `TDSL_MAX_LOOP_ITERATIONS` or the adapter (`loop_limit`).
    /// Launches whose `LoopIterations` bound exceeds it are refused before dispatch.
    pub fn max_loop_iterations(&self) -> i64 {
        self.max_loop_iterations
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
                    cache: self.cache.as_ref().map(|(c, _)| c),
                })
            })
            .map_err(|message| GpuError::Kernel { name: kernel.name.clone(), message })?;
        let pipeline = Arc::new(pipeline);
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Binds every step (`bind`) and submits them (`submit`): one command encoder, one compute pass, one
    /// submission; returns after the submission, so a following `download` sees the results. Bad bindings
    /// are `GpuError::Run`.
    pub fn run(&self, steps: &[Dispatch]) -> Result<(), GpuError> {
        let bound = self.bind(steps)?;
        self.submit(&bound)
    }

    /// Makes each step's bind group once, so that a program run many times (`exec::Prepared`) records its
    /// dispatches without creating anything. Grids over the device's limit and bad bindings are errors.
    pub fn bind(&self, steps: &[Dispatch]) -> Result<Vec<BoundDispatch>, GpuError> {
        let limit = self.device.limits().max_compute_workgroups_per_dimension;
        for (index, step) in steps.iter().enumerate() {
            if step.workgroups.iter().any(|&n| n > limit) {
                return Err(GpuError::TooManyWorkgroups { index, workgroups: step.workgroups, limit });
            }
        }
        self.scoped(|| {
            steps
                .iter()
                .map(|step| {
                    let bind_group = (!step.buffers.is_empty()).then(|| {
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
                    });
                    BoundDispatch { pipeline: step.pipeline.clone(), bind_group, workgroups: step.workgroups }
                })
                .collect()
        })
        .map_err(|message| GpuError::Run { steps: steps.len(), message })
    }

    /// Records `steps` in one command encoder (one compute pass) and submits once; returns after the
    /// submission.
    pub fn submit(&self, steps: &[BoundDispatch]) -> Result<(), GpuError> {
        self.submit_with(steps, None, &[])
    }

    /// `submit`, with `clear` (a status buffer) zeroed before the pass and `copies` (source, destination,
    /// bytes) recorded after it, in the same submission.
    pub(crate) fn submit_with(
        &self,
        steps: &[BoundDispatch],
        clear: Option<&wgpu::Buffer>,
        copies: &[(&wgpu::Buffer, &wgpu::Buffer, u64)],
    ) -> Result<(), GpuError> {
        self.scoped(|| {
            let mut encoder =
                self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tdsl run") });
            if let Some(buffer) = clear {
                encoder.clear_buffer(buffer, 0, None);
            }
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                for step in steps {
                    step.record(&mut pass);
                }
            }
            for &(source, destination, bytes) in copies {
                encoder.copy_buffer_to_buffer(source, 0, destination, 0, bytes);
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

/// `path` with `.tmp` appended to its file name.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}
