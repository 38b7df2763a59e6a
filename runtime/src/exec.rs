//! Running a `Program` on the device. `Gpu::load` makes a resident `Model` (`model.rs`): the program
//! validated, its params bound and uploaded once, its pipelines built; each call then binds the symbols
//! from the inputs, evaluates every tensor's shape and checks it fits one storage buffer, checks each
//! launch's bounds, fills its uniform blocks and folds its grid (`plan.rs`), and only then uploads the
//! inputs into buffers it keeps (grown, never shrunk), dispatches every launch in one submission and reads
//! the status buffer (a kernel's run-time error names its launch). `Gpu::execute` is the one-shot form:
//! everything checked against the inputs and params together before the first buffer exists, then a load
//! and one run. Every failure is an `ExecError` naming the tensor, launch or param concerned.
//!
//! Computed tensors share buffers by liveness (`memory.rs`); a model keeps one buffer per slot of a plan
//! that holds for every size. A launch with no invocations is skipped.

mod memory;
mod model;
mod params;
mod plan;

#[cfg(test)]
mod tests;

pub use memory::{MemoryPlan, NOMINAL_SYMBOL, SlotProblem, check_slots, memory_from_slots, plan_memory, plan_slots};
use model::GpuHandle;
pub use model::{Input, LoadOptions, Model, Outputs, Prepared};
pub(crate) use model::{bind_params, order_inputs};
pub use params::{ParamDataError, ParamSource, param_specs};
pub use plan::{DeviceLimits, LaunchPlan, fold_grid, plan_launches, tensor_shapes};

use std::borrow::Cow;
use std::sync::Arc;

use crate::bind::{BindError, Declared, Given, Signature, Site, bind_message, bind_partial, bind_symbols, input_count};
use crate::dim::Dim;
use crate::gpu::{Gpu, GpuError, LOOP_LIMIT_ENV};
use crate::program::{Check, Program, ProgramError, TensorId, TensorRole};
use crate::weights::{ParamSpec, WeightsError};
use crate::{DType, Tensor};
/// A launch the CPU executor could not run: the launch, the op (and where it was written, when known) and
/// what went wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("launch {launch} ({name}){}: {problem}", .op.as_ref().map(|c| format!(" in {c}")).unwrap_or_default())]
pub struct CpuFailure {
    /// The launch's index.
    pub launch: usize,
    /// Its name.
    pub name: String,
    /// The op, when the failure is an op's (boxed: errors stay small).
    pub op: Option<Box<Check>>,
    /// What went wrong.
    pub problem: String,
}

/// Why a program could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program breaks invariants (`Program::validate`).
    #[error("program `{program}` is malformed:{}", list(.problems))]
    Invalid {
        /// The program's name.
        program: String,
        /// Every broken invariant.
        problems: Vec<ProgramError>,
    },
    /// A carried buffer plan is unsafe (`check_slots`).
    #[error("the buffer plan of program `{program}` is wrong:{}", list(.problems))]
    BufferPlan {
        /// The program's name.
        program: String,
        /// Every problem with the plan.
        problems: Vec<SlotProblem>,
    },
    /// The device lacks a feature or a limit some kernel needs (each problem names the launch).
    #[error("device {adapter} cannot run program `{program}`:{}", list(.problems))]
    Device {
        /// The adapter's name.
        adapter: String,
        /// The program's name.
        program: String,
        /// Every shortfall, by launch.
        problems: Vec<String>,
    },
    /// The inputs and params do not bind the program's signature (every problem).
    #[error("{}", bind_message(.0))]
    Bind(Vec<BindError>),
    /// The params source (a weights file) does not match the program's params; `inputs` are the problems
    /// with the inputs found while working out the params' shapes.
    #[error("{}", params_message(.inputs, .error))]
    Params {
        /// Problems with the inputs (none at load time, when there are no inputs yet).
        inputs: Vec<BindError>,
        /// What is wrong with the weights.
        error: WeightsError,
    },
    /// A dimension evaluates to a size below 1 (R3.3) or too large.
    #[error("tensor `{tensor}`: dimension {axis} ({dim}) {problem}")]
    Shape {
        /// The tensor.
        tensor: String,
        /// The axis.
        axis: usize,
        /// The dimension as written.
        dim: String,
        /// What is wrong with its value.
        problem: String,
    },
    /// A tensor larger than one storage buffer may be.
    #[error(
        "tensor `{tensor}` ({shape}) needs {bytes} bytes on the device, more than the device's limit of {limit} \
         bytes per storage buffer"
    )]
    TooLarge {
        /// The tensor.
        tensor: String,
        /// Its type and shape.
        shape: String,
        /// The bytes it needs.
        bytes: u128,
        /// The device's limit.
        limit: u64,
    },
    /// A launch's index arithmetic would leave its proven range.
    #[error("launch {launch} ({name}): {what} ({expr}) is {}, more than {max}", shown(.value))]
    Bound {
        /// The launch's index.
        launch: usize,
        /// Its kernel's name.
        name: String,
        /// What the bound limits.
        what: crate::program::BoundKind,
        /// The bounded expression.
        expr: String,
        /// Its value (`None`: beyond 64-bit integers).
        value: Option<i64>,
        /// The largest value allowed.
        max: i64,
    },
    /// One invocation of a launch would run more loop iterations than the device allows (llvmpipe ends
    /// every loop of an invocation after 65535 in all, without an error, so the results would be wrong).
    #[error(
        "launch {launch} ({name}): one invocation would run {expr} = {} loop iterations{}, more than this device \
         runs per invocation ({limit}; llvmpipe ends every loop of an invocation beyond that without an error; \
         {LOOP_LIMIT_ENV} overrides the limit)",
        shown(.value),
        .op.as_ref().map(|c| format!(", most of them in {c}")).unwrap_or_default()
    )]
    LoopIterations {
        /// The launch's index.
        launch: usize,
        /// Its kernel's name.
        name: String,
        /// The iteration count's expression.
        expr: String,
        /// Its value (`None`: beyond 64-bit integers).
        value: Option<i64>,
        /// The op whose loops run most, and where it was written.
        op: Option<Box<Check>>,
        /// The device's limit (`Gpu::max_loop_iterations`).
        limit: i64,
    },
    /// A uniform word outside what 32 bits hold.
    #[error(
        "launch {launch} ({name}): uniform word {word} of binding {binding} ({expr}) is {}, outside \
         -2^31..2^32",
        shown(.value)
    )]
    Uniform {
        /// The launch's index.
        launch: usize,
        /// Its kernel's name.
        name: String,
        /// The uniform block's binding.
        binding: usize,
        /// The word in the block.
        word: usize,
        /// The word's expression.
        expr: String,
        /// Its value (`None`: beyond 64-bit integers).
        value: Option<i64>,
    },
    /// A launch's invocation count is negative or overflows.
    #[error("launch {launch} ({name}): its invocation count ({expr}) is {}", shown(.value))]
    Invocations {
        /// The launch's index.
        launch: usize,
        /// Its kernel's name.
        name: String,
        /// The count's expression.
        expr: String,
        /// Its value (`None`: beyond 64-bit integers).
        value: Option<i64>,
    },
    /// More workgroups than the device can dispatch, even folded.
    #[error(
        "launch {launch} ({name}): {invocations} invocations need {groups} workgroups of {workgroup_size}, more \
         than the device can dispatch ({limit} x {limit})"
    )]
    Grid {
        /// The launch's index.
        launch: usize,
        /// Its kernel's name.
        name: String,
        /// Invocations it needs.
        invocations: i64,
        /// Its workgroup size.
        workgroup_size: u32,
        /// Workgroups that makes.
        groups: u64,
        /// The device's limit per grid dimension.
        limit: u32,
    },
    /// A param's bytes could not be read from its source.
    #[error("param `{key}` cannot be read: {source}")]
    ParamData {
        /// The param's key.
        key: String,
        /// Why.
        source: ParamDataError,
    },
    /// An input given by name that the program does not have, one given twice, or one not given.
    #[error("model `{model}`:{}", list(.problems))]
    InputNames {
        /// The model's name.
        model: String,
        /// Every problem with the names.
        problems: Vec<String>,
    },
    /// A device tensor given as an input lives on another device.
    #[error("input `{input}`: {source}")]
    Input {
        /// The input's name.
        input: String,
        /// The device mismatch.
        source: GpuError,
    },
    /// A buffer could not be created or written.
    #[error("tensor `{tensor}`: {source}")]
    Upload {
        /// The tensor (or buffer) concerned.
        tensor: String,
        /// What the device said.
        source: GpuError,
    },
    /// A kernel failed to compile or the submission failed (`GpuError` names the kernel or the step count).
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The CPU executor could not run a launch (an index out of range, a damaged bundle's ops); boxed, so
    /// that every `Result<_, ExecError>` stays small.
    #[error(transparent)]
    Cpu(Box<CpuFailure>),
    /// A kernel reported a run-time error through the status buffer.
    #[error(
        "launch {launch} ({name}): an index was out of range (value {}){}",
        status_value(*.value, *.unsigned),
        .check.as_ref().map(|c| format!(" in {c}")).unwrap_or_default()
    )]
    Status {
        /// The launch's index.
        launch: usize,
        /// Its kernel's name.
        name: String,
        /// The offending value's bits.
        value: u32,
        /// Whether `value` is a `u32` (else an `i32`).
        unsigned: bool,
        /// The check that failed: the op and where it is in the source (`None` when the launch lists no
        /// such check).
        check: Option<Check>,
    },
    /// The status buffer names a launch the program does not have.
    #[error("the status buffer holds {word} (detail {detail}), but the program has only {launches} launch(es)")]
    BadStatus {
        /// The status word.
        word: u32,
        /// The detail word.
        detail: u32,
        /// Launches in the program.
        launches: usize,
    },
    /// An output could not be read back.
    #[error("output `{output}`: {source}")]
    Download {
        /// The output's name.
        output: String,
        /// What the device said.
        source: GpuError,
    },
}

impl From<CpuFailure> for ExecError {
    fn from(failure: CpuFailure) -> ExecError {
        ExecError::Cpu(Box::new(failure))
    }
}

impl Gpu {
    /// Runs `program` once on `inputs` (in signature order) with params from `params`; returns the outputs
    /// in `program.outputs` order. Everything is checked before the first buffer exists (binding with the
    /// inputs and params together, shapes, bounds, grids), then the program is loaded (`Gpu::load`) and run
    /// once. To run a program more than once, load it and keep the `Model`: its params stay on the device.
    pub fn execute(
        &self,
        program: &Program,
        inputs: &[Tensor],
        params: &dyn ParamSource,
    ) -> Result<Vec<Tensor>, ExecError> {
        program.validate().map_err(|problems| ExecError::Invalid { program: program.name.clone(), problems })?;
        let symbols = bind(program, inputs, params)?;
        let limits = self.limits();
        tensor_shapes(program, &symbols, &limits)?;
        plan_launches(program, &symbols, &limits)?;
        self.load(program, params)?.run(inputs)
    }

    /// The limits every run is planned against (`plan.rs`): the device's and its loop limit
    /// (`Gpu::max_loop_iterations`).
    pub fn limits(&self) -> DeviceLimits {
        DeviceLimits { max_loop_iterations: self.max_loop_iterations(), ..DeviceLimits::of(&self.device.limits()) }
    }

    /// `Err(ExecError::Device)` listing every requirement of every launch (`Launch::requires`: features and
    /// limits) that this device does not meet, each naming its launch; checked before any pipeline exists.
    pub fn check_requirements(&self, program: &Program) -> Result<(), ExecError> {
        let features = self.device.features();
        let downlevel = self.adapter.get_downlevel_capabilities().flags;
        let limits = self.device.limits();
        let mut problems = Vec::new();
        for (i, launch) in program.launches.iter().enumerate() {
            for unmet in launch.requires.unmet(features, downlevel, &limits) {
                problems.push(format!("launch {i} ({}) {unmet}", launch.name));
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => {
                Err(ExecError::Device { adapter: self.info.name.clone(), program: program.name.clone(), problems })
            }
        }
    }

    /// Loads `program` onto the device with its params from `params` (see `Model`): validates it, binds and
    /// uploads every param, builds every pipeline. Its computed tensors share buffers by a plan that holds for
    /// every size (`plan_slots`).
    pub fn load<'a>(
        &'a self,
        program: impl Into<Cow<'a, Program>>,
        params: &dyn ParamSource,
    ) -> Result<Model<'a>, ExecError> {
        Model::load(GpuHandle::Borrowed(self), program.into(), &LoadOptions::default(), params)
    }

    /// `load` with `options`: a carried buffer plan (a bundle's, checked here with `check_slots`) and a
    /// progress callback for the param uploads.
    pub fn load_with<'a>(
        &'a self,
        program: impl Into<Cow<'a, Program>>,
        options: &LoadOptions,
        params: &dyn ParamSource,
    ) -> Result<Model<'a>, ExecError> {
        Model::load(GpuHandle::Borrowed(self), program.into(), options, params)
    }

    /// `load_with` for a model that shares ownership of its device, so it can be kept in a struct beside
    /// the `Arc<Gpu>` (a server, an application's state).
    pub fn load_shared(
        self: &Arc<Gpu>,
        program: Program,
        options: &LoadOptions,
        params: &dyn ParamSource,
    ) -> Result<Model<'static>, ExecError> {
        Model::load(GpuHandle::Shared(self.clone()), Cow::Owned(program), options, params)
    }

    fn check_status(&self, program: &Program, status: &wgpu::Buffer) -> Result<(), ExecError> {
        let words = self
            .download(status, DType::U32, &[4])
            .map_err(|source| ExecError::Download { output: "(the status buffer)".into(), source })?;
        let &[word, detail, unsigned, check] = words.as_u32().unwrap_or(&[0, 0, 0, 0]) else { return Ok(()) };
        if word == 0 {
            return Ok(());
        }
        match program.launches.get(word as usize - 1) {
            Some(launch) => Err(ExecError::Status {
                launch: word as usize - 1,
                name: launch.name.clone(),
                value: detail,
                unsigned: unsigned == 1,
                check: launch.checks.get(check as usize).cloned(),
            }),
            None => Err(ExecError::BadStatus { word, detail, launches: program.launches.len() }),
        }
    }
}

/// Binds the program's symbols. A source that checks itself (a weights file) is checked first, against the
/// param shapes the inputs alone determine, so all of its problems come in one error.
pub(crate) fn bind(program: &Program, inputs: &[Tensor], params: &dyn ParamSource) -> Result<Vec<i64>, ExecError> {
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
    let declared_dtype: std::collections::HashMap<&str, DType> =
        declared_params.iter().map(|d| (d.site.name(), d.dtype)).collect();
    bind_symbols(&signature, inputs, &|key| params.given(key, declared_dtype.get(key).copied()?))
        .map_err(ExecError::Bind)
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
