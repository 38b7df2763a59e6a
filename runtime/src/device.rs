//! Device choice: `DeviceChoice` (`--device auto|gpu|cpu`, and the same in the API) and `Executor`, the
//! executor it opens: the wgpu `Gpu` or the native `Cpu`. Both run the same `Program` (the GPU its launches'
//! kernels, the CPU their typed ops), so everything above this module (`tdslc run`, `tdslc train`,
//! `tdsl-run`, `Session`, `Trainer`, the examples) holds an `Executor` and never asks which one it is except to
//! say so.
//!
//! `auto` takes a real GPU when wgpu lists one (an adapter whose `device_type` is not `Cpu`: lavapipe,
//! llvmpipe and SwiftShader say `Cpu`), else the CPU executor; `gpu` opens an adapter as `Gpu::new` always
//! did (lavapipe included); `cpu` never touches wgpu, so it runs on a machine with no Vulkan loader at all.
//! `Opened::note` is the line the command-line tools print on stderr saying which one runs and why.

use std::borrow::Cow;

use crate::cpu::{Cpu, CpuError, CpuModel};
use crate::exec::{ExecError, Input, LoadOptions, Model, ParamSource};
use crate::gpu::{Gpu, GpuError, GpuOptions};
use crate::program::Program;
use crate::tensor::Tensor;

/// Which executor to run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A real GPU when there is one, else the CPU executor.
    #[default]
    Auto,
    /// The wgpu executor on whatever adapter opens (lavapipe on a machine without a GPU).
    Gpu,
    /// The native CPU executor (no Vulkan needed).
    Cpu,
}

impl DeviceChoice {
    /// Every choice, in the order help texts list them.
    pub const ALL: [DeviceChoice; 3] = [DeviceChoice::Auto, DeviceChoice::Gpu, DeviceChoice::Cpu];

    /// The name `--device` takes.
    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Gpu => "gpu",
            DeviceChoice::Cpu => "cpu",
        }
    }

    /// The choice called `name` (case and surrounding blanks ignored).
    pub fn from_name(name: &str) -> Option<DeviceChoice> {
        let name = name.trim().to_ascii_lowercase();
        DeviceChoice::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why no executor could be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `--device gpu` (or `auto` with a real GPU) and the GPU did not open.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The CPU executor did not start.
    #[error(transparent)]
    Cpu(#[from] CpuError),
}

/// An open executor: the GPU or the CPU.
#[derive(Debug)]
pub enum Executor {
    /// The wgpu executor.
    Gpu(Box<Gpu>),
    /// The native CPU executor.
    Cpu(Cpu),
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu {{ {} }}", self.describe())
    }
}

/// An executor with the sentence saying which it is and why.
#[derive(Debug)]
pub struct Opened {
    /// The executor.
    pub executor: Executor,
    /// E.g. `running on the CPU executor (2 threads): no GPU found (lavapipe is an emulation; --device gpu
    /// uses it)`, for stderr.
    pub note: String,
}

impl Executor {
    /// Opens what `choice` asks for: the GPU with `options`, the CPU executor with `threads` workers (`None`:
    /// `TDSL_CPU_THREADS`, else one per core). See the module comment for `auto`.
    pub fn open(choice: DeviceChoice, options: &GpuOptions, threads: Option<usize>) -> Result<Opened, DeviceError> {
        let cpu = |reason: String| -> Result<Opened, DeviceError> {
            let cpu = Cpu::new(threads)?;
            let note = format!("running on the CPU executor ({} threads){reason}", cpu.threads());
            Ok(Opened { executor: Executor::Cpu(cpu), note })
        };
        let gpu = |reason: &str| -> Result<Opened, DeviceError> {
            let gpu = Gpu::new(options)?;
            let note = format!("running on {}{reason}", gpu.describe());
            Ok(Opened { executor: Executor::Gpu(Box::new(gpu)), note })
        };
        match choice {
            DeviceChoice::Cpu => cpu(String::new()),
            DeviceChoice::Gpu => gpu(""),
            DeviceChoice::Auto => match real_gpu(options)? {
                Some(name) => gpu(&format!(" (a GPU: {name}; --device cpu runs the CPU executor)")),
                None => cpu(": no GPU found (lavapipe is an emulation; --device gpu uses it)".into()),
            },
        }
    }

    /// The GPU, when this is one.
    pub fn gpu(&self) -> Option<&Gpu> {
        match self {
            Executor::Gpu(gpu) => Some(gpu),
            Executor::Cpu(_) => None,
        }
    }

    /// The CPU executor, when this is one.
    pub fn cpu(&self) -> Option<&Cpu> {
        match self {
            Executor::Gpu(_) => None,
            Executor::Cpu(cpu) => Some(cpu),
        }
    }

    /// A description for messages: the adapter (`Gpu::describe`) or `CPU (2 threads)`.
    pub fn describe(&self) -> String {
        match self {
            Executor::Gpu(gpu) => gpu.describe(),
            Executor::Cpu(cpu) => cpu.describe(),
        }
    }

    /// Runs `program` once on `inputs` (signature order) with params from `params`; the outputs in
    /// `program.outputs` order (`Gpu::execute` or `Cpu::execute`).
    pub fn execute(
        &self,
        program: &Program,
        inputs: &[Tensor],
        params: &dyn ParamSource,
    ) -> Result<Vec<Tensor>, ExecError> {
        ExecutorRef::from(self).execute(program, inputs, params)
    }

    /// Loads `program` with its params (`Gpu::load_with` with `options`, or `Cpu::load`, which has no buffer
    /// plan and reports no upload progress).
    pub fn load<'a>(
        &'a self,
        program: impl Into<Cow<'a, Program>>,
        options: &LoadOptions,
        params: &dyn ParamSource,
    ) -> Result<Loaded<'a>, ExecError> {
        ExecutorRef::from(self).load(program, options, params)
    }
}

/// A borrowed executor: what `Session` and `Trainer` run on (from a `&Gpu`, a `&Cpu` or an `&Executor`).
#[derive(Clone, Copy, Debug)]
pub enum ExecutorRef<'a> {
    /// The wgpu executor.
    Gpu(&'a Gpu),
    /// The native CPU executor.
    Cpu(&'a Cpu),
}

impl<'a> From<&'a Gpu> for ExecutorRef<'a> {
    fn from(gpu: &'a Gpu) -> Self {
        ExecutorRef::Gpu(gpu)
    }
}

impl<'a> From<&'a Cpu> for ExecutorRef<'a> {
    fn from(cpu: &'a Cpu) -> Self {
        ExecutorRef::Cpu(cpu)
    }
}

impl<'a> From<&'a Executor> for ExecutorRef<'a> {
    fn from(executor: &'a Executor) -> Self {
        match executor {
            Executor::Gpu(gpu) => ExecutorRef::Gpu(gpu),
            Executor::Cpu(cpu) => ExecutorRef::Cpu(cpu),
        }
    }
}

impl<'a> ExecutorRef<'a> {
    /// See `Executor::describe`.
    pub fn describe(self) -> String {
        match self {
            ExecutorRef::Gpu(gpu) => gpu.describe(),
            ExecutorRef::Cpu(cpu) => cpu.describe(),
        }
    }

    /// See `Executor::execute`.
    pub fn execute(
        self,
        program: &Program,
        inputs: &[Tensor],
        params: &dyn ParamSource,
    ) -> Result<Vec<Tensor>, ExecError> {
        match self {
            ExecutorRef::Gpu(gpu) => gpu.execute(program, inputs, params),
            ExecutorRef::Cpu(cpu) => cpu.execute(program, inputs, params),
        }
    }

    /// See `Executor::load`.
    pub fn load(
        self,
        program: impl Into<Cow<'a, Program>>,
        options: &LoadOptions,
        params: &dyn ParamSource,
    ) -> Result<Loaded<'a>, ExecError> {
        Ok(match self {
            ExecutorRef::Gpu(gpu) => Loaded::Gpu(Box::new(gpu.load_with(program, options, params)?)),
            ExecutorRef::Cpu(cpu) => Loaded::Cpu(Box::new(cpu.load(program, params)?)),
        })
    }
}

/// A program loaded on either executor, params resident (`Model` on the GPU, `CpuModel` on the CPU; each
/// boxed, as both are large): the calls both have. Match on it for what only one has (`Model::prepare`, device tensors).
pub enum Loaded<'a> {
    /// On the GPU.
    Gpu(Box<Model<'a>>),
    /// On the CPU.
    Cpu(Box<CpuModel<'a>>),
}

impl<'a> Loaded<'a> {
    /// The program.
    pub fn program(&self) -> &Program {
        match self {
            Loaded::Gpu(m) => m.program(),
            Loaded::Cpu(m) => m.program(),
        }
    }

    /// The executor it runs on.
    pub fn executor(&self) -> ExecutorRef<'_> {
        match self {
            Loaded::Gpu(m) => ExecutorRef::Gpu(m.gpu()),
            Loaded::Cpu(m) => ExecutorRef::Cpu(m.cpu()),
        }
    }

    /// Runs once on `inputs` (signature order); the outputs in `program.outputs` order.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ExecError> {
        match self {
            Loaded::Gpu(m) => m.run(inputs),
            Loaded::Cpu(m) => m.run(inputs),
        }
    }

    /// `run` with inputs by name: every input exactly once, in any order; the outputs with their names.
    pub fn run_named(&mut self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>, ExecError> {
        match self {
            Loaded::Gpu(m) => m.run_named(inputs),
            Loaded::Cpu(m) => m.run_named(inputs),
        }
    }

    /// One step of a program with `updates` (training): runs on `inputs` by name, carries each update into
    /// its param, returns the outputs named in `read` (`Model::step`, `CpuModel::step`).
    pub fn step(&mut self, inputs: &[(&str, &Tensor)], read: &[&str]) -> Result<Vec<Tensor>, ExecError> {
        match self {
            Loaded::Gpu(m) => {
                let named: Vec<(&str, Input)> = inputs.iter().map(|&(n, t)| (n, Input::Host(t))).collect();
                let ordered = m.inputs_by_name(&named)?;
                m.step(&ordered, read)
            }
            Loaded::Cpu(m) => m.step(inputs, read),
        }
    }

    /// Every param as it is now (after `step`s), by key, in `Program::params` order.
    pub fn params(&self) -> Result<Vec<(String, Tensor)>, ExecError> {
        match self {
            Loaded::Gpu(m) => m.download_params(),
            Loaded::Cpu(m) => Ok(m.params()),
        }
    }
}

/// The name of a real GPU (an adapter that is not a CPU emulation) among the backends `options` allow, if
/// any. Only lists adapters: no device is opened.
fn real_gpu(options: &GpuOptions) -> Result<Option<String>, DeviceError> {
    let backend = crate::gpu::backend_choice(options)?;
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backend.backends();
    desc.flags = wgpu::InstanceFlags::from_build_config().with_env();
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(backend.backends()));
    Ok(adapters.iter().map(|a| a.get_info()).find(|i| i.device_type != wgpu::DeviceType::Cpu).map(|i| i.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_by_name() {
        for (text, choice) in [("auto", DeviceChoice::Auto), (" GPU ", DeviceChoice::Gpu), ("cpu", DeviceChoice::Cpu)] {
            assert_eq!(DeviceChoice::from_name(text), Some(choice));
            assert_eq!(DeviceChoice::from_name(choice.name()), Some(choice));
        }
        assert_eq!(DeviceChoice::from_name("vulkan"), None);
        assert_eq!(DeviceChoice::default(), DeviceChoice::Auto);
    }

    #[test]
    fn cpu_opens_without_wgpu_and_says_so() {
        let opened = Executor::open(DeviceChoice::Cpu, &GpuOptions::default(), Some(3)).expect("cpu");
        assert_eq!(opened.note, "running on the CPU executor (3 threads)");
        assert_eq!(opened.executor.cpu().map(Cpu::threads), Some(3));
        assert!(opened.executor.gpu().is_none());
        assert_eq!(opened.executor.describe(), "CPU (3 threads)");
    }
}
