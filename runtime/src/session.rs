//! `Session`: a bundled model made ready to run on one executor (the GPU or the CPU executor: `device.rs`),
//! the runtime's small public API for bundles.
//!
//! ```no_run
//! use tdsl_runtime::{Bundle, Gpu, GpuOptions, Session, Weights};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bundle = Bundle::read("model.tdslb".as_ref())?;          // load the bundle (every check, no device)
//! let model = bundle.model(None).ok_or("several models")?;     // the only model
//! let gpu = Gpu::new(&GpuOptions::default())?;
//! let session = Session::new(&gpu, model)?;                     // device check + pipelines
//! // or on the CPU executor: `let cpu = Cpu::new(None)?; Session::new(&cpu, model)?`, or on what
//! // `Executor::open(DeviceChoice::Auto, &GpuOptions::default(), None)?` chose
//! let weights = Weights::open("weights.safetensors".as_ref())?;
//! session.check_weights(&weights)?;                             // bind weights: every problem at once
//! let mut loaded = session.load(&weights)?;                     // weights uploaded once, kept on the device
//! let inputs = session.seeded_inputs(&[("B", 2)], 0)?;          // or your own `Tensor`s, in signature order
//! let outputs = loaded.run(&inputs)?;                           // uploads the inputs only (`outputs()` order)
//! let again = loaded.run(&inputs)?;                             // no weights uploaded, buffers reused
//! # Ok(()) }
//! ```
//!
//! On the CPU executor (`Session::new(&cpu, model)`, or an `&Executor` from `Executor::open`), the same calls
//! run each launch's typed ops instead of its kernel; there are no pipelines, and `Session::new` checks that
//! every launch carries its ops (a bundle whose launch lost them is an error naming the launch).
//!
//! On the GPU, `Session::new` checks what every kernel needs (`Launch::requires`: features, limits) against the device
//! before creating anything, listing every shortfall by launch, then builds every pipeline (SPIR-V passed
//! through to the driver where the device allows it, so there is no shader front end at run time).
//! `Session::load` makes a resident model (`Loaded`: a `Model` with the bundle's buffer plan on the GPU, a
//! `CpuModel` on the CPU); `Session::run` is a one-shot load and run.

use std::collections::HashMap;

use crate::Tensor;
use crate::bind::Declared;
use crate::bundle::BundledModel;
use crate::device::{ExecutorRef, Loaded};
use crate::exec::{ExecError, LoadOptions, ParamSource, declared};
use crate::program::Program;
use crate::random::FillError;
use crate::weights::{Weights, WeightsError, check_params};

/// A bundled model on an executor, pipelines built (see the module comment).
pub struct Session<'a> {
    executor: ExecutorRef<'a>,
    model: &'a BundledModel,
}

impl<'a> Session<'a> {
    /// On the GPU: checks that it can run every kernel of `model`, then builds every pipeline. On the CPU:
    /// checks the program and that every launch carries its ops.
    pub fn new(executor: impl Into<ExecutorRef<'a>>, model: &'a BundledModel) -> Result<Session<'a>, ExecError> {
        Session::with_progress(executor, model, &|_, _| {})
    }

    /// `new`, calling `progress(built, total)` after each pipeline (on the CPU, after each launch checked).
    pub fn with_progress(
        executor: impl Into<ExecutorRef<'a>>,
        model: &'a BundledModel,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Session<'a>, ExecError> {
        let executor = executor.into();
        let program = &model.program;
        let total = program.launches.len();
        match executor {
            ExecutorRef::Gpu(gpu) => {
                gpu.check_requirements(program)?;
                for (i, launch) in program.launches.iter().enumerate() {
                    gpu.launch_pipeline(launch)?;
                    progress(i + 1, total);
                }
            }
            ExecutorRef::Cpu(cpu) => {
                cpu.check(program)?;
                progress(total, total);
            }
        }
        Ok(Session { executor, model })
    }

    /// The executor it runs on.
    pub fn executor(&self) -> ExecutorRef<'a> {
        self.executor
    }

    /// The bundled program.
    pub fn program(&self) -> &'a Program {
        &self.model.program
    }

    /// The inputs, in the order `run` takes them.
    pub fn inputs(&self) -> Vec<Declared> {
        declared(&self.model.program, &self.model.program.inputs)
    }

    /// The params (weights) the model needs.
    pub fn params(&self) -> Vec<Declared> {
        declared(&self.model.program, &self.model.program.params)
    }

    /// Output names, in the order `run` returns them.
    pub fn outputs(&self) -> Vec<&'a str> {
        self.model.program.outputs.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// Checks a weights file against the params: every missing, extra, mis-shaped and mis-typed entry in
    /// one error. Symbolic dimensions match any size here; `run` checks them against the inputs.
    pub fn check_weights(&self, weights: &Weights) -> Result<(), WeightsError> {
        check_params(weights, &crate::exec::param_specs(&self.model.program))
    }

    /// Seeded random inputs (`tdsl_runtime::random`, as `tdslc run --seed` makes them), shaped by `dims`
    /// (symbol sizes by name; symbols not given are 2).
    pub fn seeded_inputs(&self, dims: &[(&str, i64)], seed: u64) -> Result<Vec<Tensor>, FillError> {
        let dims: Vec<(String, i64)> = dims.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        let p = &self.model.program;
        let filled =
            crate::random::fill_signature(&p.name, &p.symbols, &self.inputs(), None, HashMap::new(), &dims, seed)?;
        Ok(filled.inputs)
    }

    /// Seeded random params (as `tdslc run --seed` makes them, by key), shaped like `seeded_inputs`.
    pub fn seeded_params(&self, dims: &[(&str, i64)], seed: u64) -> Result<HashMap<String, Tensor>, FillError> {
        let dims: Vec<(String, i64)> = dims.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        let p = &self.model.program;
        let params = self.params();
        let filled = crate::random::fill_signature(
            &p.name,
            &p.symbols,
            &self.inputs(),
            Some(&params),
            HashMap::new(),
            &dims,
            seed,
        )?;
        Ok(filled.params)
    }

    /// Loads the model with params from `params` (a `Weights` file or a map of tensors): they are uploaded
    /// (decoded, on the CPU) once and stay resident for every call of the returned model, which on the GPU
    /// runs with the bundle's buffer plan.
    pub fn load(&self, params: &dyn ParamSource) -> Result<Loaded<'a>, ExecError> {
        self.load_with_progress(params, None)
    }

    /// `load`, calling `progress(uploaded, total)` after each param upload (GPU only).
    pub fn load_with_progress(
        &self,
        params: &dyn ParamSource,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<Loaded<'a>, ExecError> {
        let options = LoadOptions { slots: Some(&self.model.buffer_slots), progress };
        self.executor.load(&self.model.program, &options, params)
    }

    /// Loads the model and runs it once on `inputs` (signature order); returns the outputs in `outputs()`
    /// order. To run more than once, keep the model `load` returns.
    pub fn run(&self, inputs: &[Tensor], params: &dyn ParamSource) -> Result<Vec<Tensor>, ExecError> {
        self.load(params)?.run(inputs)
    }
}
