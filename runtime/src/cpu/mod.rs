//! The CPU executor: runs a `Program` (compiled or read from a bundle) natively on the host's cores, with no
//! GPU and no Vulkan driver. It runs each launch's typed ops (`Launch::ops`, the fused group the GPU kernel
//! computes, `program/ops.rs`), never the kernels' WGSL: one description, two executors.
//!
//! `Cpu::load` makes a resident `CpuModel`: the program validated, every launch checked to carry ops and
//! planned once (`group.rs`: which nodes run as one pass of fused elementwise loops, which matmul takes which
//! epilogue), the params bound and decoded once into host buffers. Each run binds the symbols from the
//! inputs (the same binding, and so the same errors, as the GPU and the interpreter: `bind.rs`), evaluates the
//! shapes, then runs the launches in order on a rayon pool (a chain of launches along a batch axis one
//! slice of it at a time, `chain.rs`), freeing each computed tensor after its last reader. A run-time error
//! (an index out of range) names the launch and the op, like the GPU's status buffer. `Cpu::execute` is the one-shot form. `CpuModel::step` applies a program's `Update`s (a training
//! step), so params and optimizer state stay in the model between steps.
//!
//! Numbers: the per-element arithmetic is `eval::kernels`, the definition the interpreter runs, so
//! elementwise results equal the interpreter's bit for bit; reductions and matmuls add in another order
//! (blocked, multi-threaded) and agree within the tolerances spec/ops.md states for the GPU.

mod buffers;
mod chain;
mod contract;
mod dot;
mod fused;
mod group;
mod maps;
mod matmul;
mod panels;
mod rows;
mod value;
mod view;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use group::GroupPlan;
pub use value::Value;

use crate::bind::Declared;
use crate::bind::Given;
use crate::eval::values::Vals;
use crate::exec::{
    CpuFailure, DeviceLimits, ExecError, ParamDataError, ParamSource, bind, bind_params, declared, order_inputs,
    tensor_shapes,
};
use crate::program::{Program, TensorId, TensorRole};
use crate::weights::{ParamSpec, WeightsError};
use crate::{DType, Tensor};

/// The host's cores as an executor: a rayon pool of `threads` workers.
pub struct Cpu {
    pool: rayon::ThreadPool,
    threads: usize,
}

impl std::fmt::Debug for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cpu {{ threads: {} }}", self.threads)
    }
}

/// Why the CPU executor could not start.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The worker threads could not be started.
    #[error("cannot start {threads} CPU worker thread(s): {message}")]
    Threads {
        /// How many were asked for.
        threads: usize,
        /// What the system said.
        message: String,
    },
}

/// The environment variable that sets the CPU executor's thread count (default: every core).
pub const THREADS_ENV: &str = "TDSL_CPU_THREADS";

impl Cpu {
    /// An executor on `threads` worker threads; `None` takes `TDSL_CPU_THREADS` when set, else one per core.
    pub fn new(threads: Option<usize>) -> Result<Cpu, CpuError> {
        let threads = threads
            .or_else(|| std::env::var(THREADS_ENV).ok()?.trim().parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tdsl-cpu-{i}"))
            .build()
            .map_err(|e| CpuError::Threads { threads, message: e.to_string() })?;
        Ok(Cpu { pool, threads })
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A description for messages: `CPU (2 threads)`.
    pub fn describe(&self) -> String {
        format!("CPU ({} thread{})", self.threads, if self.threads == 1 { "" } else { "s" })
    }

    /// Runs `program` once on `inputs` (signature order) with params from `params`; the outputs in
    /// `program.outputs` order. Everything is checked (binding with inputs and params together, shapes)
    /// before any param is decoded.
    pub fn execute(
        &self,
        program: &Program,
        inputs: &[Tensor],
        params: &dyn ParamSource,
    ) -> Result<Vec<Tensor>, ExecError> {
        program.validate().map_err(|problems| ExecError::Invalid { program: program.name.clone(), problems })?;
        let symbols = bind(program, inputs, params)?;
        tensor_shapes(program, &symbols, &host_limits())?;
        self.load(program, params)?.run(inputs)
    }

    /// Checks that this executor can run `program` before any param is read: the program is valid and every
    /// launch carries ops it can plan (a launch without ops is an error naming it).
    pub fn check(&self, program: &Program) -> Result<(), ExecError> {
        plan(program).map(|_| ())
    }

    /// Loads `program` with its params from `params` (see `CpuModel`).
    pub fn load<'a>(
        &'a self,
        program: impl Into<Cow<'a, Program>>,
        params: &dyn ParamSource,
    ) -> Result<CpuModel<'a>, ExecError> {
        CpuModel::load(self, program.into(), params)
    }
}

/// `program` validated and each launch planned (the errors `Cpu::check` and `CpuModel::load` report).
fn plan(program: &Program) -> Result<Vec<GroupPlan>, ExecError> {
    program.validate().map_err(|problems| ExecError::Invalid { program: program.name.clone(), problems })?;
    program
        .launches
        .iter()
        .enumerate()
        .map(|(index, launch)| GroupPlan::new(index, launch))
        .collect::<Result<Vec<_>, CpuFailure>>()
        .map_err(ExecError::from)
}

/// What the CPU executor plans against: no storage-buffer or loop limit (memory is the limit; `Tensor` caps
/// element counts at `MAX_ELEMENTS`).
fn host_limits() -> DeviceLimits {
    DeviceLimits { max_storage_bytes: u64::MAX, max_workgroups_per_dimension: u32::MAX, max_loop_iterations: i64::MAX }
}

/// A program resident on the CPU executor: see the module comment.
pub struct CpuModel<'a> {
    cpu: &'a Cpu,
    program: Cow<'a, Program>,
    plans: Vec<GroupPlan>,
    /// Each param's value, by tensor index (`None` for other tensors).
    params: Vec<Option<Value>>,
    /// For each launch, the computed tensors whose last reader it is (freed after it runs).
    frees: Vec<Vec<TensorId>>,
    /// Buffers of freed tensors, reused by later results.
    buffers: buffers::Buffers,
    /// The chains of launches run slice by slice (`chain.rs`), by first launch.
    chains: Vec<chain::Chain>,
}

impl<'a> CpuModel<'a> {
    fn load(cpu: &'a Cpu, program: Cow<'a, Program>, source: &dyn ParamSource) -> Result<CpuModel<'a>, ExecError> {
        let plans = plan(&program)?;
        // The params bound alone (the inputs bind the rest at each run), then decoded once.
        let types = bind_params(&program, source)?;
        let mut params = vec![None; program.tensors.len()];
        for (&id, (dtype, shape)) in program.params.iter().zip(types) {
            let TensorRole::Param(key) = &program.tensor(id).role else { continue };
            let bytes =
                source.device_bytes(key, dtype).map_err(|source| ExecError::ParamData { key: key.clone(), source })?;
            let data = from_device_words(dtype, &bytes, shape.iter().product())
                .map_err(|source| ExecError::ParamData { key: key.clone(), source })?;
            params[id.0 as usize] = Some(Value::new(data, shape));
        }
        let frees = last_reads(&program);
        let chains = chain::chains(&program);
        Ok(CpuModel { cpu, program, plans, params, frees, buffers: buffers::Buffers::default(), chains })
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The chains of launches this model runs slice by slice along a batch axis when a run has at least two
    /// positions of it per thread (`chain.rs`), as ranges of launch indices.
    pub fn chains(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.chains.iter().map(|c| c.launches.clone())
    }

    /// The executor.
    pub fn cpu(&self) -> &Cpu {
        self.cpu
    }

    /// The model's inputs as binding declares them.
    pub fn inputs(&self) -> Vec<Declared> {
        declared(&self.program, &self.program.inputs)
    }

    /// Output names, in order.
    pub fn output_names(&self) -> Vec<&str> {
        self.program.outputs.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// Runs once on `inputs` (signature order); the outputs in `program.outputs` order.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ExecError> {
        let outputs = self.run_values(inputs)?;
        Ok(outputs.into_iter().map(|(_, t)| t).collect())
    }

    /// `run` with inputs by name: every input exactly once, in any order.
    pub fn run_named(&mut self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>, ExecError> {
        let ordered = self.by_name(inputs)?;
        self.run_values(&ordered)
    }

    /// A training step: runs on `inputs` (by name), makes each `Update`'s output its param's value for the
    /// next run, and returns the outputs named in `read` (in that order).
    pub fn step(&mut self, inputs: &[(&str, &Tensor)], read: &[&str]) -> Result<Vec<Tensor>, ExecError> {
        let ordered = self.by_name(inputs)?;
        let outputs = self.run_values(&ordered)?;
        let mut by_name: HashMap<String, Tensor> = HashMap::new();
        for (k, (name, tensor)) in outputs.into_iter().enumerate() {
            if let Some(update) = self.program.updates.iter().find(|u| u.output == k) {
                let value = Value::new(Vals::from_tensor(&tensor), tensor.shape.clone());
                self.params[update.param.0 as usize] = Some(value);
            }
            by_name.insert(name, tensor);
        }
        read.iter()
            .map(|name| {
                by_name.get(*name).cloned().ok_or_else(|| ExecError::InputNames {
                    model: self.program.name.clone(),
                    problems: vec![format!("there is no output `{name}` to read")],
                })
            })
            .collect()
    }

    /// Every param's current value, by key (after `step`s, the trained values and optimizer state).
    pub fn params(&self) -> Vec<(String, Tensor)> {
        self.program
            .params
            .iter()
            .filter_map(|&id| {
                let TensorRole::Param(key) = &self.program.tensor(id).role else { return None };
                let value = self.params[id.0 as usize].as_ref()?;
                Some((key.clone(), value.to_tensor(self.program.tensor(id).dtype)))
            })
            .collect()
    }

    fn by_name(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>, ExecError> {
        Ok(order_inputs(&self.program, inputs)?.into_iter().cloned().collect())
    }

    /// Times each launch of a run on `inputs` (by name) on its own: `repeat` runs (at least one), each
    /// launch's median wall time, in launch order. The params are not changed (a training step's updates
    /// are not applied).
    pub fn profile(
        &mut self,
        inputs: &[(&str, &Tensor)],
        repeat: usize,
    ) -> Result<Vec<std::time::Duration>, ExecError> {
        let ordered = self.by_name(inputs)?;
        let mut samples: Vec<Vec<std::time::Duration>> = vec![Vec::new(); self.plans.len()];
        for _ in 0..repeat.max(1) {
            let mut times = Vec::with_capacity(self.plans.len());
            self.run_timed(&ordered, Some(&mut times))?;
            for (sample, time) in samples.iter_mut().zip(times) {
                sample.push(time);
            }
        }
        Ok(samples.into_iter().map(crate::gpu::median).collect())
    }

    fn run_values(&mut self, inputs: &[Tensor]) -> Result<Vec<(String, Tensor)>, ExecError> {
        self.run_timed(inputs, None)
    }

    /// `run_values`, pushing each launch's wall time onto `times` when given.
    fn run_timed(
        &mut self,
        inputs: &[Tensor],
        mut times: Option<&mut Vec<std::time::Duration>>,
    ) -> Result<Vec<(String, Tensor)>, ExecError> {
        let program = &*self.program;
        let symbols = bind(program, inputs, &Held { program, params: &self.params })?;
        let shapes = tensor_shapes(program, &symbols, &host_limits())?;
        let mut values: Vec<Option<Value>> = self.params.clone();
        for (&id, tensor) in program.inputs.iter().zip(inputs) {
            values[id.0 as usize] = Some(Value::new(Vals::from_tensor(tensor), tensor.shape.clone()));
        }
        let outputs: std::collections::HashSet<TensorId> = program.outputs.iter().map(|(_, t)| *t).collect();
        // The whole run on one of the pool's workers: entering the pool costs two thread hand-offs, paid once
        // per run rather than once per launch; the other workers stay awake for it.
        let (plans, frees, buffers, pool) = (&self.plans, &self.frees, &self.buffers, &self.cpu.pool);
        let chains = &self.chains;
        pool.install(|| -> Result<(), ExecError> {
            let mut index = 0;
            while index < plans.len() {
                let _awake = Awake::start(pool);
                let start = std::time::Instant::now();
                // A chain starting here, run slice by slice when this run's sizes make that worth it.
                let sliced = chains.iter().find(|c| c.launches.start == index).and_then(|chain| {
                    let results = chain.run(program, plans, &values, &shapes, &symbols, buffers)?;
                    Some((results, chain.launches.clone()))
                });
                let (results, ran) = sliced.unwrap_or_else(|| {
                    (plans[index].run(program, &values, &shapes, &symbols, buffers, None), index..index + 1)
                });
                let results = results.map_err(ExecError::from)?;
                // A chain's time is its first launch's; its other launches show none.
                if let Some(times) = times.as_deref_mut() {
                    times.push(start.elapsed());
                    times.extend(std::iter::repeat_n(std::time::Duration::ZERO, ran.len() - 1));
                }
                for (tensor, value) in results {
                    values[tensor.0 as usize] = Some(value);
                }
                for tensor in ran.clone().flat_map(|i| &frees[i]) {
                    if !outputs.contains(tensor)
                        && let Some(value) = values[tensor.0 as usize].take()
                    {
                        buffers.recycle(value);
                    }
                }
                index = ran.end;
            }
            Ok(())
        })?;
        program
            .outputs
            .iter()
            .map(|(name, id)| {
                let value = values[id.0 as usize].as_ref().ok_or_else(|| {
                    ExecError::from(CpuFailure::internal(0, "", format!("output `{name}` was not computed")))
                })?;
                Ok((name.clone(), value.to_tensor(program.tensor(*id).dtype)))
            })
            .collect()
    }
}

/// The pool's other workers kept awake while this lives (one launch): each spins, taking the launch's
/// parallel work as soon as it is split off, instead of going to sleep between its short parallel sections
/// and being woken for each (on two cores a wake-up cost about as much as the work it brought, so the second
/// core added nothing). A spinner returns when the launch ends, and also after `IDLE` without work: rayon
/// may run it nested inside a job that waits for a stolen half (its broadcast job is run wherever its worker
/// looks for work), and there it must give the worker back soon, never hold the launch up.
struct Awake(Arc<AtomicBool>);

impl Awake {
    /// Idle time after which a spinner returns.
    const IDLE: std::time::Duration = std::time::Duration::from_micros(200);

    /// Starts a spinner on every worker of `pool` but the calling one (which runs the launch); `None` for a
    /// pool of one thread.
    fn start(pool: &rayon::ThreadPool) -> Option<Awake> {
        if pool.current_num_threads() < 2 {
            return None;
        }
        let me = rayon::current_thread_index();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        // A broadcast job runs on its own worker only, so the calling worker never spins.
        pool.spawn_broadcast(move |ctx| {
            if Some(ctx.index()) == me {
                return;
            }
            let mut idle_since = std::time::Instant::now();
            while !flag.load(Ordering::Acquire) {
                if rayon::yield_now() == Some(rayon::Yield::Executed) {
                    idle_since = std::time::Instant::now();
                } else if idle_since.elapsed() > Self::IDLE {
                    return;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        Some(Awake(done))
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// For each launch, the computed tensors it is the last to read.
fn last_reads(program: &Program) -> Vec<Vec<TensorId>> {
    let mut last: HashMap<TensorId, usize> = HashMap::new();
    for (index, launch) in program.launches.iter().enumerate() {
        for node in &launch.ops.nodes {
            if let crate::program::TensorOp::Tensor(t) = node.op
                && program.tensor(t).role == TensorRole::Computed
            {
                last.insert(t, index);
            }
        }
    }
    let mut frees = vec![Vec::new(); program.launches.len()];
    for (tensor, index) in last {
        frees[index].push(tensor);
    }
    frees
}

/// The params a model holds, as binding sees them: each one's dtype and shape.
struct Held<'p> {
    program: &'p Program,
    params: &'p [Option<Value>],
}

impl ParamSource for Held<'_> {
    fn given(&self, key: &str, _declared: DType) -> Option<Given<'_>> {
        let id = self
            .program
            .params
            .iter()
            .find(|&&id| self.program.tensor(id).role == TensorRole::Param(key.to_string()))?;
        let value = self.params.get(id.0 as usize)?.as_ref()?;
        Some(Given::Shape { dtype: self.program.tensor(*id).dtype, shape: &value.0.shape })
    }

    fn check(&self, _params: &[ParamSpec]) -> Result<(), WeightsError> {
        Ok(())
    }

    fn device_bytes(&self, _key: &str, _dtype: DType) -> Result<Cow<'_, [u8]>, ParamDataError> {
        Err(ParamDataError::Missing)
    }
}

/// `count` elements of `dtype` from the device layout (`gpu/buffer.rs`: one little-endian 4-byte word per
/// element; `f16` as `f32` words, `bool` as 0/1 words), as host values.
fn from_device_words(dtype: DType, bytes: &[u8], count: usize) -> Result<Vals, ParamDataError> {
    let words = bytes
        .get(..count * 4)
        .ok_or_else(|| ParamDataError::Stored(format!("{} bytes hold fewer than {count} elements", bytes.len())))?;
    let word = |c: &[u8]| u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    let words = words.chunks_exact(4).map(word);
    Ok(match dtype {
        DType::F32 | DType::F16 => Vals::F(words.map(f32::from_bits).collect()),
        DType::I32 => Vals::I(words.map(|w| w as i32).collect()),
        DType::U32 => Vals::U(words.collect()),
        DType::Bool => Vals::B(words.map(|w| w != 0).collect()),
    })
}

/// `n` test values in `[-0.5, 0.5)` from `seed`, exact in f32 (multiples of 1/4096): operands of the
/// product tests (`matmul.rs`, `dot.rs`).
#[cfg(test)]
fn test_values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 20) as f32 / 4096.0 - 0.5).collect()
}
