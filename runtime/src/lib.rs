//! tdsl runtime: everything that runs compiled tdsl programs without the compiler: `tensor` (the dense
//! row-major host `Tensor` and its element type `DType`, shared with the compiler), `npy` (reading and writing
//! NumPy `.npy` files, the interchange format for inputs and outputs), `weights` (memory-mapped safetensors
//! weight files, checked against a model's params with every problem reported at once), `dim` (`Dim`, the symbolic dimension both crates use), `program` (the
//! compiler-free `Program`: signature, device tensors, kernel launches, symbolic dimensions, and
//! `Program::validate`), `bind` (binding symbols from actual shapes, shared with the compiler's reference
//! interpreter), `gpu` (the wgpu executor: opens a device, builds cached pipelines from ahead-of-time WGSL
//! kernels, uploads and downloads tensors and runs dispatch lists as one submission; an application's own
//! device works too, `Gpu::from_device`) and `exec` (`Gpu::load`: a `Model` resident on the device, params
//! uploaded once, inputs and outputs by position or name, outputs kept on the device as `DeviceTensor`s;
//! `Gpu::execute`: one run), `bundle` (the `.tdslb` ahead-of-time format: read, checked, written),
//! `device` (`DeviceChoice`, `--device auto|gpu|cpu`, and `Executor`, the GPU or the CPU executor it opens;
//! `Loaded`, a program resident on either), `cpu` (the native CPU executor: runs each launch's typed ops,
//! `program/ops.rs`, with the shared `eval` kernels), `session` (`Session`, the small API for a bundled model
//! on either executor: device check, bind weights, load, run) and
//! `random` (seeded inputs and params, the same in `tdslc run` and `tdsl-run`), `data` (training data: named
//! arrays from `.npy` files, `.npz` archives or safetensors, a seeded validation split, seeded shuffled
//! batches), `plot` (training curves as a standalone SVG: loss and accuracy panels). With the `cli` feature,
//! the `tdsl-run` binary (`src/bin/tdsl-run.rs`, `cli`) runs a bundle from the command line; `args` holds
//! the argument parsers it shares with `tdslc`.
//!
//! Never depends on `tdsl-compiler` (the compiler depends on this crate). Bad input of any kind (files,
//! bytes, tensors) is an error naming the file and the problem, never a panic; every public function that
//! can fail returns a typed error. Every public item is documented (`deny(missing_docs)`).

#![deny(missing_docs)]

pub mod args;
pub mod bind;
pub mod bundle;
#[cfg(feature = "cli")]
pub mod cli;
pub mod cpu;
pub mod data;
pub mod device;
pub mod dim;
pub mod dtype;
pub mod eval;
pub mod exec;
pub mod gpu;
pub mod npy;
pub mod ops;
pub mod plot;
pub mod program;
pub mod random;
pub mod session;
pub mod tensor;
pub mod train;
pub mod weights;

pub use bind::{BindError, Binding, Declared, Given, Signature, Site, bind_message, bind_symbols};
pub use bundle::{Bundle, BundleError, BundleProblem, BundledModel};
pub use cpu::{Cpu, CpuModel};
pub use data::{DataError, Dataset, NpzProblem};
pub use device::{DeviceChoice, DeviceError, Executor, ExecutorRef, Loaded, Opened};
pub use dim::{Dim, DimError, SymId};
pub use dtype::DType;
pub use exec::{
    CpuFailure, ExecError, Input, LoadOptions, MemoryPlan, Model, Outputs, ParamDataError, ParamSource, Prepared,
    fold_grid, plan_memory,
};
pub use gpu::{
    BackendChoice, BoundDispatch, DeviceTensor, Dispatch, DispatchTimes, Gpu, GpuError, GpuOptions, GpuStats,
    KernelSource, PipelineCacheState, Timing,
};
pub use npy::{NpyError, NpyProblem, read_npy, read_npy_bytes, to_npy_bytes, write_npy};
pub use plot::{Panel, PlotError, Series, svg as plot_svg, write_svg};
pub use program::{
    Arg, Bound, BoundKind, Check, Feature, Init, Launch, Limit, Program, ProgramError, Requirements, SourceLocation,
    TensorDecl, TensorId, TensorRole, Unmet, Update,
};
pub use session::Session;
pub use tensor::{DecodeError, MAX_ELEMENTS, ShapeMismatch, Tensor, TensorData};
pub use train::{TrainError, Trainer, initial_params, load_checkpoint};
pub use weights::{
    ParamProblem, ParamSpec, Stored, WeightEntry, Weights, WeightsError, check_params, save as save_safetensors,
};
/// The wgpu this runtime is built on (for `Gpu`'s public fields and `GpuOptions`).
pub use wgpu;
