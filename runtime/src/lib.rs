//! tdsl runtime: everything that runs compiled tdsl programs without the compiler: `tensor` (the dense
//! row-major host `Tensor` and its element type `DType`, shared with the compiler), `npy` (reading and writing
//! NumPy `.npy` files, the interchange format for inputs and outputs), `weights` (memory-mapped safetensors
//! weight files, checked against a model's params with every problem reported at once), `program` (the
//! compiler-free `Program`: signature, device tensors, kernel launches, symbolic `DimExpr`s, and
//! `Program::validate`), `bind` (binding symbols from actual shapes, shared with the compiler's reference
//! interpreter), `gpu` (the wgpu executor: opens a device, builds cached pipelines from ahead-of-time WGSL
//! kernels, uploads and downloads tensors and runs dispatch lists as one submission) and `exec`
//! (`Gpu::execute`: a whole `Program` run on the device, with params from a map or a weights file).
//!
//! Never depends on `tdsl-compiler` (the compiler depends on this crate). Bad input of any kind (files,
//! bytes, tensors) is an error naming the file and the problem, never a panic.

pub mod bind;
pub mod dtype;
pub mod exec;
pub mod gpu;
pub mod npy;
pub mod program;
pub mod random;
pub mod tensor;
pub mod weights;

pub use bind::{BindError, Binding, Declared, Given, Signature, Site, bind_message, bind_symbols};
pub use dtype::DType;
pub use exec::{ExecError, MemoryPlan, ParamSource, Prepared, fold_grid, plan_memory};
pub use gpu::{BackendChoice, Dispatch, Gpu, GpuError, GpuOptions, KernelSource};
pub use program::{Arg, Bound, DimAtom, DimExpr, Launch, Program, ProgramError, TensorDecl, TensorId, TensorRole};
pub use npy::{NpyError, NpyProblem, read_npy, read_npy_bytes, to_npy_bytes, write_npy};
pub use tensor::{DecodeError, MAX_ELEMENTS, ShapeMismatch, Tensor, TensorData};
pub use weights::{ParamProblem, ParamSpec, WeightEntry, Weights, WeightsError, check_params};
