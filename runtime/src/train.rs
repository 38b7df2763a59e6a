//! Training with the runtime alone: `Trainer` runs a compiled training step (a `Program` whose `updates`
//! carry its params and optimizer state from one step to the next, spec/training.md) on either executor
//! (`device.rs`): on the GPU one submission per step, uploading only the batch and the learning rate and
//! reading back only the outputs asked for; on the CPU executor the params and state stay in the `CpuModel`. `initial_params` makes the starting values (given weights, else each param's declared
//! initialiser from a seed; optimizer state starts at zero); `save` writes a checkpoint; `load_checkpoint`
//! reads one back to resume.
//!
//! Names shared with the compiler, which builds the step: the learning-rate input `LR_INPUT`, optimizer
//! state keys under `STATE_PREFIX` (`optim.step`, `optim.exp_avg.<param key>`, ...), and each carried
//! value's output `next.<key>`.
//!
//! Checkpoints are two safetensors files: `PATH` with the model's params under their own keys (what
//! PyTorch's `load_state_dict` and `tdslc run --weights` read) and `PATH` with `.optim.safetensors` in place
//! of `.safetensors` with the optimizer state (`optim.*` keys, the step count included). Each is written
//! atomically; the optimizer file first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::bind::{Given, bind_partial};
use crate::device::{ExecutorRef, Loaded};
use crate::exec::{ExecError, Input, LoadOptions, declared};
use crate::program::{Init, Program, TensorRole};
use crate::random::SplitMix64;
use crate::tensor::Tensor;
use crate::weights::{Weights, WeightsError};

/// The input the learning rate of each step is given as (`f32[]`).
pub const LR_INPUT: &str = "optim.lr";
/// The prefix of every optimizer state key.
pub const STATE_PREFIX: &str = "optim.";
/// The step count (`f32[]`, 0 before the first step), an optimizer state param.
pub const STEP_KEY: &str = "optim.step";

/// The key of optimizer state `state` (`exp_avg`, `momentum_buffer`, ...) of param `param`.
pub fn state_key(state: &str, param: &str) -> String {
    format!("{STATE_PREFIX}{state}.{param}")
}

/// The output holding the next value of the param (or state) `key`.
pub fn next_output(key: &str) -> String {
    format!("next.{key}")
}

/// Whether `key` is optimizer state rather than a model param.
pub fn is_state(key: &str) -> bool {
    key.starts_with(STATE_PREFIX)
}

/// The optimizer file of checkpoint `path`: `model.safetensors` → `model.optim.safetensors`.
pub fn optimizer_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    path.with_file_name(format!("{stem}.optim.safetensors"))
}

/// Why training cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The program is not a training step.
    #[error("program `{program}` is not a training step: {problem}")]
    NotATrainingStep {
        /// The program's name.
        program: String,
        /// What is missing.
        problem: String,
    },
    /// Params that have neither a given value nor an initialiser, or whose shape is unknown.
    #[error("cannot initialise program `{program}`:{}", .problems.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Init {
        /// The program's name.
        program: String,
        /// Every problem.
        problems: Vec<String>,
    },
    /// A step failed earlier, so the state on the device is undefined.
    #[error("a step failed earlier, so the params on the device are undefined; resume from a checkpoint")]
    Poisoned,
    /// Running the step failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// A training step loaded on an executor with its state (see the module comment).
pub struct Trainer<'a> {
    model: Loaded<'a>,
    steps: u64,
    poisoned: bool,
}

impl<'a> Trainer<'a> {
    /// Loads the training step `program` on `executor` (a `&Gpu`, `&Cpu` or `&Executor`) with every param's
    /// starting value in `params` (model params and optimizer state: see `initial_params`); `slots` is a
    /// bundle's carried buffer plan, if any (GPU only).
    pub fn new(
        executor: impl Into<ExecutorRef<'a>>,
        program: &'a Program,
        slots: Option<&'a [Option<usize>]>,
        params: &HashMap<String, Tensor>,
    ) -> Result<Trainer<'a>, TrainError> {
        check_training_step(program)?;
        let steps = match params.get(STEP_KEY).and_then(|t| t.as_f32()).and_then(|v| v.first().copied()) {
            Some(v) if v >= 0.0 && v.fract() == 0.0 => v as u64,
            _ => 0,
        };
        let model = executor.into().load(program, &LoadOptions { slots, progress: None }, params)?;
        Ok(Trainer { model, steps, poisoned: false })
    }

    /// Steps run so far (counting those before a resumed checkpoint).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The loaded step.
    pub fn model(&self) -> &Loaded<'a> {
        &self.model
    }

    /// One training step on `batch` (every data input of the step by name) with learning rate `lr`;
    /// returns the outputs named in `read` (e.g. `["loss"]` every tenth step, nothing otherwise).
    pub fn step(&mut self, batch: &[(&str, &Tensor)], lr: f32, read: &[&str]) -> Result<Vec<Tensor>, TrainError> {
        if self.poisoned {
            return Err(TrainError::Poisoned);
        }
        let lr = Tensor::f32(&[], vec![lr]);
        let mut named: Vec<(&str, &Tensor)> = batch.to_vec();
        named.push((LR_INPUT, &lr));
        match self.model.step(&named, read) {
            Ok(outputs) => {
                self.steps += 1;
                Ok(outputs)
            }
            // On the GPU a kernel's run-time error comes after the updates were applied; the CPU executor
            // stops before any update, so its state stays that of the last good step.
            Err(e @ ExecError::Status { .. }) => {
                self.poisoned = true;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes held now: `(params, optimizer state, everything else)`, the last being (on the GPU) the batch,
    /// the activations and gradients (shared slots), the outputs and the uniform blocks; on the CPU executor,
    /// which allocates those per step, 0.
    pub fn device_bytes(&self) -> (u64, u64, u64) {
        let (mut params, mut state) = (0, 0);
        let sizes: Vec<(String, u64)> = match &self.model {
            Loaded::Gpu(m) => m.param_buffer_bytes().into_iter().map(|(k, b)| (k.to_string(), b)).collect(),
            Loaded::Cpu(m) => m.params().into_iter().map(|(k, t)| (k, 4 * t.len() as u64)).collect(),
        };
        for (key, bytes) in sizes {
            if is_state(&key) {
                state += bytes;
            } else {
                params += bytes;
            }
        }
        let working = match &self.model {
            Loaded::Gpu(m) => m.working_bytes(),
            Loaded::Cpu(_) => 0,
        };
        (params, state, working)
    }

    /// Times each launch of one step on `batch` on its own (median of `repeat`), without applying the step:
    /// each launch's name and time, in launch order, and how they were timed (the GPU's
    /// `Prepared::profile`; on the CPU executor, wall time per launch).
    pub fn profile(
        &mut self,
        batch: &[(&str, &Tensor)],
        lr: f32,
        repeat: usize,
    ) -> Result<(Vec<(String, std::time::Duration)>, crate::gpu::Timing), TrainError> {
        let lr = Tensor::f32(&[], vec![lr]);
        let (launches, times, timing) = match &mut self.model {
            Loaded::Gpu(model) => {
                let mut named: Vec<(&str, Input)> = batch.iter().map(|&(name, t)| (name, Input::Host(t))).collect();
                named.push((LR_INPUT, Input::Host(&lr)));
                let ordered = model.inputs_by_name(&named)?;
                let prepared = model.prepare(&ordered)?;
                let (launches, times) = prepared.profile(repeat)?;
                (launches, times.times, times.timing)
            }
            Loaded::Cpu(model) => {
                let mut named = batch.to_vec();
                named.push((LR_INPUT, &lr));
                let times = model.profile(&named, repeat)?;
                ((0..times.len()).collect(), times, crate::gpu::Timing::Wall)
            }
        };
        let names: Vec<String> = self.model.program().launches.iter().map(|l| l.name.clone()).collect();
        let timed = launches.into_iter().zip(times).map(|(k, t)| (names[k].clone(), t)).collect();
        Ok((timed, timing))
    }

    /// Every param and optimizer state tensor as it is now, by key (model params first, in program order).
    pub fn state(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        if self.poisoned {
            return Err(TrainError::Poisoned);
        }
        Ok(self.model.params()?)
    }

    /// The model's params as they are now (no optimizer state), by key.
    pub fn params(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        Ok(self.state()?.into_iter().filter(|(key, _)| !is_state(key)).collect())
    }

    /// Writes a checkpoint: the optimizer state to `optimizer_path(path)`, then the params to `path`.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let (state, params): (Vec<_>, Vec<_>) = self.state()?.into_iter().partition(|(key, _)| is_state(key));
        crate::weights::save(&optimizer_path(path), &state)?;
        crate::weights::save(path, &params)?;
        Ok(())
    }
}

/// Reads checkpoint `path` (its params and, when `optimizer_path(path)` exists, the optimizer state) as
/// starting values for `initial_params`.
pub fn load_checkpoint(path: &Path) -> Result<HashMap<String, Tensor>, TrainError> {
    let mut values = Weights::open(path)?.tensors()?;
    let optimizer = optimizer_path(path);
    if optimizer.exists() {
        values.extend(Weights::open(&optimizer)?.tensors()?);
    }
    Ok(values)
}

/// Checks that `program` is a training step: an `optim.lr` input and at least one update.
fn check_training_step(program: &Program) -> Result<(), TrainError> {
    let problem = if program.updates.is_empty() {
        Some("it carries no state from one step to the next (no updates)".to_string())
    } else if !program.inputs.iter().any(|&id| program.tensor(id).role == TensorRole::Input(LR_INPUT.to_string())) {
        Some(format!("it has no `{LR_INPUT}` input"))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(TrainError::NotATrainingStep { program: program.name.clone(), problem }),
        None => Ok(()),
    }
}

/// The starting value of every param of `program`: the tensor in `given` (weights or a checkpoint; entries
/// for other keys are ignored), else its declared initialiser drawn from `seed` (each param from its own
/// stream, so adding a param changes no other). A param with neither, or whose shape the given tensors do
/// not determine, is an error (all of them listed).
pub fn initial_params(
    program: &Program,
    given: &HashMap<String, Tensor>,
    seed: u64,
) -> Result<HashMap<String, Tensor>, TrainError> {
    let params = declared(program, &program.params);
    let entries: Vec<_> =
        params.iter().filter_map(|d| given.get(d.site.name()).map(|t| (d, Given::Tensor(t)))).collect();
    let bound = bind_partial(&program.symbols, &entries);
    let mut problems: Vec<String> = bound.problems.iter().map(|p| p.to_string()).collect();
    let symbols = bound.values();
    let mut values = HashMap::new();
    for (d, &id) in params.iter().zip(&program.params) {
        let key = d.site.name();
        if let Some(t) = given.get(key) {
            values.insert(key.to_string(), t.clone());
            continue;
        }
        let Some((_, init)) = program.inits.iter().find(|(p, _)| *p == id) else {
            problems.push(format!("param `{key}` has no initialiser: give its weights"));
            continue;
        };
        let eval = |dim: &crate::dim::Dim| dim.eval_with(&|s| symbols.get(s.0 as usize).copied().flatten());
        let shape: Option<Vec<usize>> =
            d.shape.iter().map(|dim| eval(dim).and_then(|v| usize::try_from(v).ok())).collect();
        let Some(shape) = shape else {
            problems.push(format!("the shape of param `{key}` depends on sizes no given weight determines"));
            continue;
        };
        let n: usize = shape.iter().product();
        let mut rng = SplitMix64::new(seed ^ fnv1a(key));
        let data: Vec<f32> = match init {
            Init::Constant(v) => vec![*v as f32; n],
            Init::Uniform { low, high } => (0..n).map(|_| uniform(&mut rng, *low, *high)).collect(),
            Init::FanInUniform(fan_in) => match eval(fan_in).filter(|&f| f >= 1) {
                Some(fan_in) => {
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    (0..n).map(|_| uniform(&mut rng, -bound, bound)).collect()
                }
                None => {
                    problems.push(format!("the fan-in of param `{key}` is not a known positive size"));
                    continue;
                }
            },
            Init::Normal { mean, std } => (0..n).map(|_| (mean + std * standard_normal(&mut rng)) as f32).collect(),
        };
        let tensor = match d.dtype {
            crate::DType::F16 => Tensor::f16_from_f32(&shape, &data),
            _ => Tensor::f32(&shape, data),
        };
        values.insert(key.to_string(), tensor);
    }
    if problems.is_empty() { Ok(values) } else { Err(TrainError::Init { program: program.name.clone(), problems }) }
}

/// Uniform on `[low, high)` from 53 random bits.
fn uniform(rng: &mut SplitMix64, low: f64, high: f64) -> f32 {
    (low + (high - low) * unit(rng)) as f32
}

/// Uniform on `[0, 1)` from 53 random bits.
fn unit(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal sample (Box–Muller).
fn standard_normal(rng: &mut SplitMix64) -> f64 {
    let u = 1.0 - unit(rng);
    let v = unit(rng);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// FNV-1a of `key`: each param's own random stream.
fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The learning rate of each step: a schedule over epochs (as torch.optim.lr_scheduler steps once per
/// epoch), times a linear warm-up over the first steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The base learning rate.
    pub base: f64,
    /// How the rate changes from epoch to epoch.
    pub per_epoch: EpochSchedule,
    /// Steps of linear warm-up (LinearLR with `total_iters` this, stepped per step); 0 for none.
    pub warmup_steps: u64,
    /// The warm-up's first factor (LinearLR's `start_factor`; PyTorch's default is 1/3).
    pub warmup_start: f64,
}

/// A learning-rate schedule over epochs, with torch.optim.lr_scheduler's closed forms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EpochSchedule {
    /// The base rate throughout.
    Constant,
    /// StepLR: `base * gamma^floor(epoch / step_size)`.
    Step {
        /// Epochs between decays (at least 1).
        step_size: u64,
        /// The decay factor.
        gamma: f64,
    },
    /// CosineAnnealingLR: `eta_min + (base - eta_min) * (1 + cos(pi * epoch / t_max)) / 2`.
    Cosine {
        /// The epochs of one half period.
        t_max: u64,
        /// The lowest rate.
        eta_min: f64,
    },
}

impl LrSchedule {
    /// The rate of step `step` (from 0), in epoch `epoch` (from 0).
    pub fn at(&self, step: u64, epoch: u64) -> f64 {
        let rate = match self.per_epoch {
            EpochSchedule::Constant => self.base,
            EpochSchedule::Step { step_size, gamma } => {
                self.base * gamma.powi((epoch / step_size.max(1)).min(i32::MAX as u64) as i32)
            }
            EpochSchedule::Cosine { t_max, eta_min } => {
                let t = epoch as f64 / t_max.max(1) as f64;
                eta_min + (self.base - eta_min) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
        };
        if step < self.warmup_steps {
            let start = self.warmup_start;
            rate * (start + (1.0 - start) * step as f64 / self.warmup_steps as f64)
        } else {
            rate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;
    use crate::dim::{Dim, SymId};
    use crate::program::{ProgramError, TensorDecl, TensorId, Update};

    fn decl(name: &str, role: TensorRole, shape: Vec<Dim>) -> TensorDecl {
        TensorDecl { name: name.into(), role, dtype: DType::F32, shape }
    }

    /// A program with a param `w: f32[N]` (N bound by the param) and an output `y: f32[4]` that is an input.
    fn program() -> Program {
        Program {
            name: "p".into(),
            symbols: vec!["N".into()],
            tensors: vec![
                decl("param w", TensorRole::Param("w".into()), vec![Dim::sym(SymId(0))]),
                decl("input y", TensorRole::Input("y".into()), vec![Dim::constant(4)]),
            ],
            inputs: vec![TensorId(1)],
            params: vec![TensorId(0)],
            outputs: vec![("y".into(), TensorId(1))],
            ..Program::default()
        }
    }

    #[test]
    fn validation_names_bad_updates_and_initialisers() {
        let mut p = program();
        p.updates = vec![
            Update { output: 3, param: TensorId(0) },
            Update { output: 0, param: TensorId(1) },
            Update { output: 0, param: TensorId(0) },
        ];
        p.inits = vec![
            (TensorId(1), Init::Constant(0.0)),
            (TensorId(0), Init::Uniform { low: 1.0, high: 0.0 }),
            (TensorId(0), Init::Constant(1.0)),
        ];
        let problems: Vec<String> = p.validate().expect_err("bad").iter().map(ProgramError::to_string).collect();
        assert_eq!(
            problems,
            [
                "initialiser 0 (of tensor 1): tensor `input y` is not a param",
                "initialiser 1 (of tensor 0): uniform(1, 0) is not a finite range",
                "initialiser 2 (of tensor 0): param `param w` has two initialisers",
                "update 0 (output 3 into tensor 0): the program has 1 output(s)",
                "update 1 (output 0 into tensor 1): tensor `input y` is not a param",
                "update 2 (output 0 into tensor 0): output `y` is f32[4], param `param w` is f32[N]",
            ]
        );
    }

    #[test]
    fn initial_values_come_from_weights_then_initialisers_and_problems_are_listed() {
        let mut p = program();
        let given = HashMap::from([("w".to_string(), Tensor::f32(&[3], vec![1.0, 2.0, 3.0]))]);
        assert_eq!(initial_params(&p, &given, 0).expect("given")["w"], given["w"]);
        let err = initial_params(&p, &HashMap::new(), 0).expect_err("no initialiser");
        assert_eq!(
            err.to_string(),
            "cannot initialise program `p`:\n  - param `w` has no initialiser: give its weights"
        );
        p.inits = vec![(TensorId(0), Init::Constant(0.5))];
        let err = initial_params(&p, &HashMap::new(), 0).expect_err("unknown size");
        assert!(
            err.to_string().contains("the shape of param `w` depends on sizes no given weight determines"),
            "{err}"
        );
    }

    #[test]
    fn a_program_without_updates_is_not_a_training_step() {
        let err = check_training_step(&program()).expect_err("not a step");
        assert_eq!(
            err.to_string(),
            "program `p` is not a training step: it carries no state from one step to the next (no updates)"
        );
    }

    #[test]
    fn checkpoint_names_and_state_keys() {
        assert_eq!(optimizer_path(Path::new("run/cnn.safetensors")), Path::new("run/cnn.optim.safetensors"));
        assert_eq!(optimizer_path(Path::new("ckpt")), Path::new("ckpt.optim.safetensors"));
        assert_eq!(state_key("exp_avg", "fc.weight"), "optim.exp_avg.fc.weight");
        assert!(is_state(STEP_KEY) && !is_state("fc.weight"));
        assert_eq!(next_output("fc.weight"), "next.fc.weight");
    }

    #[test]
    fn uniform_and_normal_samples_have_their_moments() {
        let mut rng = SplitMix64::new(1);
        let n = 20_000;
        let u: Vec<f64> = (0..n).map(|_| f64::from(uniform(&mut rng, -2.0, 2.0))).collect();
        assert!(u.iter().all(|x| (-2.0..2.0).contains(x)));
        let mean = u.iter().sum::<f64>() / n as f64;
        let var = u.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.05 && (var - 16.0 / 12.0).abs() < 0.05, "uniform: {mean} {var}");
        let z: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.03, "normal: {mean} {var}");
    }
}
