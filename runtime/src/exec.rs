//! `Gpu::execute`: runs a `Program` on the device, one forward pass. The steps, in order: validate the
//! program; bind its symbols from the inputs and params (a weights file is first checked as a whole);
//! evaluate every tensor's shape and check it fits one storage buffer; check each launch's bounds, fill its
//! uniform blocks and fold its grid (`plan.rs`); only then upload inputs and params, allocate the computed
//! tensors and the zeroed status buffer, build the cached pipelines and run every launch in one submission;
//! finally read the status buffer (a kernel's run-time error names its launch) and download the outputs.
//! Everything that can be checked is checked before the first buffer exists, and every failure is an
//! `ExecError` with a message naming the tensor, launch or param concerned.
//!
//! Computed tensors share buffers by liveness (`memory.rs`); `prepare` does everything up to the dispatches
//! once, so a prepared program runs again without re-uploading (benchmarks, serving). A launch with no
//! invocations is skipped.

mod memory;
mod params;
mod plan;

#[cfg(test)]
mod tests;

pub use memory::{MemoryPlan, NOMINAL_SYMBOL, SlotProblem, check_slots, memory_from_slots, plan_memory, plan_slots};
pub use params::ParamSource;
pub use plan::{DeviceLimits, LaunchPlan, fold_grid, plan_launches, tensor_shapes};

use crate::bind::{BindError, Declared, Given, Signature, Site, bind_message, bind_partial, bind_symbols, input_count};
use crate::dim::Dim;
use crate::gpu::{BoundDispatch, Dispatch, DispatchTimes, Gpu, GpuError};
use crate::program::{Arg, Program, ProgramError, TensorId, TensorRole};
use crate::weights::{ParamSpec, WeightsError};
use crate::{DType, Tensor};

/// Why a program could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("program `{program}` is malformed:{}", list(.problems))]
    Invalid { program: String, problems: Vec<ProgramError> },
    #[error("the buffer plan of program `{program}` is wrong:{}", list(.problems))]
    BufferPlan { program: String, problems: Vec<SlotProblem> },
    /// The device lacks a feature or a limit some kernel needs (each problem names the launch).
    #[error("device {adapter} cannot run program `{program}`:{}", list(.problems))]
    Device { adapter: String, program: String, problems: Vec<String> },
    #[error("{}", bind_message(.0))]
    Bind(Vec<BindError>),
    /// The params source (a weights file) does not match the program's params; `inputs` are the problems
    /// with the inputs found while working out the params' shapes.
    #[error("{}", params_message(.inputs, .error))]
    Params { inputs: Vec<BindError>, error: WeightsError },
    #[error("tensor `{tensor}`: dimension {axis} ({dim}) {problem}")]
    Shape { tensor: String, axis: usize, dim: String, problem: String },
    #[error(
        "tensor `{tensor}` ({shape}) needs {bytes} bytes on the device, more than the device's limit of {limit} \
         bytes per storage buffer"
    )]
    TooLarge { tensor: String, shape: String, bytes: u128, limit: u64 },
    #[error("launch {launch} ({name}): {what} ({expr}) is {}, more than {max}", shown(.value))]
    Bound { launch: usize, name: String, what: crate::program::BoundKind, expr: String, value: Option<i64>, max: i64 },
    #[error(
        "launch {launch} ({name}): uniform word {word} of binding {binding} ({expr}) is {}, outside \
         -2^31..2^32",
        shown(.value)
    )]
    Uniform { launch: usize, name: String, binding: usize, word: usize, expr: String, value: Option<i64> },
    #[error("launch {launch} ({name}): its invocation count ({expr}) is {}", shown(.value))]
    Invocations { launch: usize, name: String, expr: String, value: Option<i64> },
    #[error(
        "launch {launch} ({name}): {invocations} invocations need {groups} workgroups of {workgroup_size}, more \
         than the device can dispatch ({limit} x {limit})"
    )]
    Grid { launch: usize, name: String, invocations: i64, workgroup_size: u32, groups: u64, limit: u32 },
    #[error("param `{key}` cannot be read: {problem}")]
    ParamData { key: String, problem: String },
    #[error("tensor `{tensor}`: {source}")]
    Upload { tensor: String, source: GpuError },
    /// A kernel failed to compile or the submission failed (`GpuError` names the kernel or the step count).
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// A kernel reported a run-time error through the status buffer.
    #[error("launch {launch} ({name}): an index was out of range (value {})", status_value(*.value, *.unsigned))]
    Status { launch: usize, name: String, value: u32, unsigned: bool },
    #[error("the status buffer holds {word} (detail {detail}), but the program has only {launches} launch(es)")]
    BadStatus { word: u32, detail: u32, launches: usize },
    #[error("output `{output}`: {source}")]
    Download { output: String, source: GpuError },
}

impl Gpu {
    /// Runs `program` on `inputs` (in signature order) with params from `params`; returns the outputs in
    /// `program.outputs` order. See the module comment for the steps.
    pub fn execute(
        &self,
        program: &Program,
        inputs: &[Tensor],
        params: &dyn ParamSource,
    ) -> Result<Vec<Tensor>, ExecError> {
        let prepared = self.prepare(program, inputs, params)?;
        prepared.run()?;
        prepared.outputs()
    }

    /// Everything `execute` does before dispatching: checks, buffers (shared by liveness, `memory.rs`),
    /// uploads, pipelines and bind groups. The result runs any number of times on the same inputs.
    pub fn prepare<'a>(
        &'a self,
        program: &'a Program,
        inputs: &[Tensor],
        params: &dyn ParamSource,
    ) -> Result<Prepared<'a>, ExecError> {
        self.prepare_with(program, &PrepareOptions::default(), inputs, params)
    }

    /// `prepare` with `options`: a carried buffer plan (checked here with `check_slots`) and a progress
    /// callback for the param uploads.
    pub fn prepare_with<'a>(
        &'a self,
        program: &'a Program,
        options: &PrepareOptions,
        inputs: &[Tensor],
        params: &dyn ParamSource,
    ) -> Result<Prepared<'a>, ExecError> {
        let slots = options.slots;
        program.validate().map_err(|problems| ExecError::Invalid { program: program.name.clone(), problems })?;
        let symbols = bind(program, inputs, params)?;
        let limits = DeviceLimits::of(&self.device.limits());
        let shapes = tensor_shapes(program, &symbols, &limits)?;
        let plans = plan_launches(program, &symbols, &limits)?;
        let bytes: Vec<u64> = program
            .tensors
            .iter()
            .zip(&shapes)
            .map(|(decl, shape)| crate::gpu::device_bytes(decl.dtype, shape.iter().product()))
            .collect();
        let memory = match slots {
            Some(slots) => {
                check_slots(program, slots)
                    .map_err(|problems| ExecError::BufferPlan { program: program.name.clone(), problems })?;
                memory_from_slots(program, slots, &bytes)
            }
            None => plan_memory(program, &bytes),
        };

        let buffers = self.tensor_buffers(program, &memory, &bytes, inputs, params, options.progress)?;
        let status = program
            .launches
            .iter()
            .any(|l| l.args.contains(&Arg::Status))
            .then(|| self.zeros(DType::U32, &[3]))
            .transpose()?;
        let mut steps = Vec::new();
        let mut launch_of_step = Vec::new();
        for (index, (launch, plan)) in program.launches.iter().zip(&plans).enumerate() {
            let pipeline = self.launch_pipeline(launch)?;
            let Some(workgroups) = plan.grid else { continue };
            let mut uniforms = plan.uniforms.iter();
            let mut bound = Vec::with_capacity(launch.args.len());
            for arg in &launch.args {
                bound.push(match arg {
                    Arg::Read(id) | Arg::Write(id) => buffers[id.0 as usize].clone(),
                    Arg::Uniform(_) => self.uniform(uniforms.next().map_or(&[][..], |u| u.as_slice()))?,
                    Arg::Status => status
                        .clone()
                        .ok_or(GpuError::Run { steps: 0, message: "internal error: no status buffer".into() })?,
                });
            }
            steps.push(Dispatch { pipeline, buffers: bound, workgroups });
            launch_of_step.push(index);
        }
        let steps = self.bind(&steps)?;
        Ok(Prepared { gpu: self, program, shapes, buffers, status, steps, launch_of_step, memory })
    }

    /// One buffer per input and param (uploaded) and the shared buffers of computed tensors.
    fn tensor_buffers(
        &self,
        program: &Program,
        memory: &MemoryPlan,
        bytes: &[u64],
        inputs: &[Tensor],
        params: &dyn ParamSource,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<Vec<wgpu::Buffer>, ExecError> {
        let param_bytes: u64 = program.params.iter().filter_map(|t| bytes.get(t.0 as usize)).sum();
        let mut uploaded = 0;
        let mut input_of = vec![None; program.tensors.len()];
        for (k, id) in program.inputs.iter().enumerate() {
            input_of[id.0 as usize] = inputs.get(k);
        }
        let mut shared = Vec::with_capacity(memory.buffers.len());
        for &size in &memory.buffers {
            let upload = |source| ExecError::Upload { tensor: format!("a shared buffer of {size} bytes"), source };
            shared.push(self.zeros(DType::U32, &[(size / 4) as usize]).map_err(upload)?);
        }
        let mut buffers = Vec::with_capacity(program.tensors.len());
        for (i, decl) in program.tensors.iter().enumerate() {
            let upload = |source| ExecError::Upload { tensor: decl.name.clone(), source };
            let buffer = match (&decl.role, input_of[i], memory.buffer_of[i]) {
                (TensorRole::Input(_), Some(tensor), _) => self.upload(tensor).map_err(upload)?,
                (TensorRole::Param(key), _, _) => {
                    let bytes = params
                        .device_bytes(key)
                        .map_err(|problem| ExecError::ParamData { key: key.clone(), problem })?;
                    let buffer = self.upload_device_bytes(&bytes).map_err(upload)?;
                    uploaded += bytes.len() as u64;
                    if let Some(progress) = progress {
                        progress(uploaded.min(param_bytes), param_bytes);
                    }
                    buffer
                }
                (_, _, Some(b)) => shared[b].clone(),
                _ => self.zeros(decl.dtype, &[1]).map_err(upload)?,
            };
            buffers.push(buffer);
        }
        Ok(buffers)
    }

    fn check_status(&self, program: &Program, status: &wgpu::Buffer) -> Result<(), ExecError> {
        let words = self
            .download(status, DType::U32, &[3])
            .map_err(|source| ExecError::Download { output: "(the status buffer)".into(), source })?;
        let &[word, detail, unsigned] = words.as_u32().unwrap_or(&[0, 0, 0]) else { return Ok(()) };
        if word == 0 {
            return Ok(());
        }
        match program.launches.get(word as usize - 1) {
            Some(launch) => Err(ExecError::Status {
                launch: word as usize - 1,
                name: launch.name.clone(),
                value: detail,
                unsigned: unsigned == 1,
            }),
            None => Err(ExecError::BadStatus { word, detail, launches: program.launches.len() }),
        }
    }
}

/// What `Gpu::prepare_with` may be given besides the program and its data.
#[derive(Clone, Copy, Default)]
pub struct PrepareOptions<'p> {
    /// A carried buffer plan (a bundle's `buffer_slots`); `None`: planned from the actual sizes.
    pub slots: Option<&'p [Option<usize>]>,
    /// Called after each param upload with (bytes uploaded, bytes of all params).
    pub progress: Option<&'p dyn Fn(u64, u64)>,
}

/// A program with its inputs and params on the device, its buffers planned and its pipelines built
/// (`Gpu::prepare`). `run` dispatches every launch in one submission; `outputs` reads the results back.
pub struct Prepared<'a> {
    gpu: &'a Gpu,
    program: &'a Program,
    shapes: Vec<Vec<usize>>,
    buffers: Vec<wgpu::Buffer>,
    status: Option<wgpu::Buffer>,
    steps: Vec<BoundDispatch>,
    /// `steps[i]` runs `program.launches[launch_of_step[i]]`.
    launch_of_step: Vec<usize>,
    /// Where every tensor lives and the device bytes the run takes.
    pub memory: MemoryPlan,
}

impl Prepared<'_> {
    /// Runs every launch (one encoder, one submission), waits for the device and checks the status buffer.
    pub fn run(&self) -> Result<(), ExecError> {
        if let Some(status) = &self.status {
            self.gpu.queue.write_buffer(status, 0, &[0; 12]);
        }
        self.gpu.submit(&self.steps)?;
        match &self.status {
            Some(status) => self.gpu.check_status(self.program, status),
            None => Ok(self.gpu.wait(self.steps.len())?),
        }
    }

    /// Times each launch on its own (`Gpu::time_dispatches`, median of `repeat`); returns the launch index
    /// of each timed dispatch with the times. The outputs afterwards are those of a normal run.
    pub fn profile(&self, repeat: usize) -> Result<(Vec<usize>, DispatchTimes), ExecError> {
        let times = self.gpu.time_dispatches(&self.steps, repeat)?;
        Ok((self.launch_of_step.clone(), times))
    }

    /// Median wall time of the same dispatches recorded with plain wgpu calls (`Gpu::time_raw`): what
    /// `run` costs without this runtime (no status buffer, no error scopes).
    pub fn time_raw(&self, repeat: usize) -> Result<std::time::Duration, ExecError> {
        Ok(self.gpu.time_raw(&self.steps, repeat)?)
    }

    /// The outputs of the last run, in `program.outputs` order.
    pub fn outputs(&self) -> Result<Vec<Tensor>, ExecError> {
        self.program
            .outputs
            .iter()
            .map(|(output, id)| {
                let decl = self.program.tensor(*id);
                self.gpu
                    .download(&self.buffers[id.0 as usize], decl.dtype, &self.shapes[id.0 as usize])
                    .map_err(|source| ExecError::Download { output: output.clone(), source })
            })
            .collect()
    }

    /// Launches dispatched per run (launches with no invocations are skipped).
    pub fn dispatches(&self) -> usize {
        self.steps.len()
    }
}

/// Binds the program's symbols. A source that checks itself (a weights file) is checked first, against the
/// param shapes the inputs alone determine, so all of its problems come in one error.
fn bind(program: &Program, inputs: &[Tensor], params: &dyn ParamSource) -> Result<Vec<i64>, ExecError> {
    let (declared_inputs, declared_params) = (declared(program, &program.inputs), declared(program, &program.params));
    let signature = Signature {
        model: &program.name,
        symbols: &program.symbols,
        inputs: &declared_inputs,
        params: &declared_params,
    };
    if inputs.len() != declared_inputs.len() {
        return Err(ExecError::Bind(vec![input_count(&signature, inputs.len())]));
    }
    let entries: Vec<(&Declared, Given)> =
        declared_inputs.iter().zip(inputs).map(|(d, t)| (d, Given::Tensor(t))).collect();
    let from_inputs = bind_partial(&program.symbols, &entries);
    let values = from_inputs.values();
    let specs: Vec<ParamSpec> = declared_params
        .iter()
        .map(|d| ParamSpec {
            name: d.site.name().to_string(),
            dtype: d.dtype,
            shape: d.shape.iter().map(|dim| known_size(dim, &values)).collect(),
        })
        .collect();
    if let Err(error) = params.check(&specs) {
        return Err(ExecError::Params { inputs: from_inputs.problems, error });
    }
    bind_symbols(&signature, inputs, &|key| params.given(key)).map_err(ExecError::Bind)
}

/// The size of `dim` when every symbol it uses is known.
fn known_size(dim: &Dim, values: &[Option<i64>]) -> Option<usize> {
    let mut known = vec![0; values.len()];
    for s in dim.symbols() {
        let value = (*values.get(s.0 as usize)?)?;
        known[s.0 as usize] = value;
    }
    usize::try_from(dim.eval_at(&known)?).ok()
}

fn list(problems: &[impl std::fmt::Display]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

fn params_message(inputs: &[BindError], error: &WeightsError) -> String {
    if inputs.is_empty() { error.to_string() } else { format!("{}\n{error}", bind_message(inputs)) }
}

fn shown(value: &Option<i64>) -> String {
    value.map_or_else(|| "beyond 64-bit integers".to_string(), |v| v.to_string())
}

/// A status detail word: a `u32` when the kernel said so (status word 2 is 1), otherwise an `i32` (with its
/// bits when negative).
fn status_value(value: u32, unsigned: bool) -> String {
    if !unsigned && value > i32::MAX as u32 { format!("{}, bits {value:#x}", value as i32) } else { value.to_string() }
}

/// The signature entries (inputs or params) of `ids`, as binding declares them; computed tensors have none.
pub(crate) fn declared(program: &Program, ids: &[TensorId]) -> Vec<Declared> {
    ids.iter()
        .filter_map(|&id| {
            let decl = program.tensors.get(id.0 as usize)?;
            let site = match &decl.role {
                TensorRole::Input(name) => Site::Input(name.clone()),
                TensorRole::Param(key) => Site::Param(key.clone()),
                TensorRole::Computed => return None,
            };
            Some(Declared { site, dtype: decl.dtype, shape: decl.shape.clone() })
        })
        .collect()
}
