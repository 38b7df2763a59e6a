//! `Session`: a bundled model made ready to run on one device, the runtime's small public API for bundles.
//!
//! ```no_run
//! use tdsl_runtime::{Bundle, Gpu, GpuOptions, Session, Weights};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bundle = Bundle::read("model.tdslb".as_ref())?;          // load the bundle (every check, no device)
//! let model = bundle.model(None).ok_or("several models")?;     // the only model
//! let gpu = Gpu::new(&GpuOptions::default())?;
//! let session = Session::new(&gpu, model)?;                     // device check + pipelines
//! let weights = Weights::open("weights.safetensors".as_ref())?;
//! session.check_weights(&weights)?;                             // bind weights: every problem at once
//! let mut loaded = session.load(&weights)?;                     // weights uploaded once, kept on the device
//! let inputs = session.seeded_inputs(&[("B", 2)], 0)?;          // or your own `Tensor`s, in signature order
//! let outputs = loaded.run(&inputs)?;                           // uploads the inputs only (`outputs()` order)
//! let again = loaded.run(&inputs)?;                             // no weights uploaded, buffers reused
//! # Ok(()) }
//! ```
//!
//! `Session::new` checks what every kernel needs (`Launch::requires`: features, limits) against the device
//! before creating anything, listing every shortfall by launch, then builds every pipeline (SPIR-V passed
//! through to the driver where the device allows it, so there is no shader front end at run time).
//! `Session::load` makes a resident `Model` with the bundle's buffer plan; `Session::run` is a one-shot
//! load and run.

use std::collections::HashMap;

use crate::Tensor;
use crate::bind::Declared;
use crate::bundle::BundledModel;
use crate::exec::{ExecError, LoadOptions, Model, ParamSource, declared};
use crate::gpu::Gpu;
use crate::program::Program;
use crate::random::FillError;
use crate::weights::{Weights, WeightsError, check_params};

/// A bundled model on a device, pipelines built (see the module comment).
pub struct Session<'a> {
    gpu: &'a Gpu,
    model: &'a BundledModel,
}

impl<'a> Session<'a> {
    /// Checks that `gpu` can run every kernel of `model`, then builds every pipeline.
    pub fn new(gpu: &'a Gpu, model: &'a BundledModel) -> Result<Session<'a>, ExecError> {
        Session::with_progress(gpu, model, &|_, _| {})
    }

    /// `new`, calling `progress(built, total)` after each pipeline.
    pub fn with_progress(
        gpu: &'a Gpu,
        model: &'a BundledModel,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Session<'a>, ExecError> {
        gpu.check_requirements(&model.program)?;
        let total = model.program.launches.len();
        for (i, launch) in model.program.launches.iter().enumerate() {
            gpu.launch_pipeline(launch)?;
            progress(i + 1, total);
        }
        Ok(Session { gpu, model })
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
    /// once and stay on the device for every call of the returned `Model`, which runs with the bundle's
    /// buffer plan.
    pub fn load(&self, params: &dyn ParamSource) -> Result<Model<'a>, ExecError> {
        self.load_with_progress(params, None)
    }

    /// `load`, calling `progress(uploaded, total)` after each param upload.
    pub fn load_with_progress(
        &self,
        params: &dyn ParamSource,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<Model<'a>, ExecError> {
        let options = LoadOptions { slots: Some(&self.model.buffer_slots), progress };
        self.gpu.load_with(&self.model.program, &options, params)
    }

    /// Loads the model and runs it once on `inputs` (signature order); returns the outputs in `outputs()`
    /// order. To run more than once, keep the model `load` returns.
    pub fn run(&self, inputs: &[Tensor], params: &dyn ParamSource) -> Result<Vec<Tensor>, ExecError> {
        self.load(params)?.run(inputs)
    }
}
