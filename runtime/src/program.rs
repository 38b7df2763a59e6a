//! `Program`: a compiled model as the runtime runs it, with no compiler types in sight: its signature
//! (inputs and params with symbolic shapes), every device tensor it needs, and the ordered kernel launches of
//! one forward pass. The compiler builds one (`tdsl_compiler::pipeline::compile_graph`); later an ahead-of-time
//! bundle stores one. Its symbolic dimensions are `dim::Dim`, the type the compiler checks shapes with: evaluated
//! once the symbols
//! are bound from the actual input shapes (`bind.rs`), it sizes buffers, fills each launch's uniform block
//! and decides its workgroup grid.
//!
//! Invariants (the compiler guarantees them; `Program::validate` checks them before anything runs, see
//! `validate.rs`): every `TensorId` names a tensor and every `Atom::Sym` of a `Dim` a symbol (floor divisors
//! are at least 2 by construction); `inputs` and `params` list exactly the tensors of role `Input` and `Param`, each once, with
//! distinct names; each launch writes at least one tensor, each a computed one it does not also read, after
//! the launches producing every computed tensor it reads; every computed output is written; launch names
//! are distinct and workgroup sizes at least 1; kernel binding `i` is `args[i]` (not checkable here: a
//! mismatch fails when the launch runs).
//!
//! Device layout (`gpu/buffer.rs`): `f32`, `i32`, `u32` are 4-byte words; `f16` is held as `f32` words
//! (converted exactly on upload, rounded to nearest on download), so kernels need no `SHADER_F16`; `bool`
//! is a `u32` word holding 0 or 1.

mod ops;
mod requirements;
mod validate;

use crate::DType;
use crate::dim::Dim;
pub use ops::{GroupOps, MapOps, OpNode, OpRef, ScalarNode, ScalarOp, ScalarRef, Store, TensorOp};
pub use requirements::{Feature, Limit, Requirements, Unmet};
pub use validate::ProgramError;

/// Index of a tensor in `Program::tensors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TensorId(pub u32);

/// Where a device tensor's contents come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorRole {
    /// The model input of this name.
    Input(String),
    /// The weight of this key.
    Param(String),
    /// Written by a launch (intermediates and outputs).
    Computed,
}

/// One device tensor. The name is for messages: `input x`, `param encoder.w`, `%12 matmul`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDecl {
    /// The name, for messages.
    pub name: String,
    /// Where its contents come from.
    pub role: TensorRole,
    /// Its element type.
    pub dtype: DType,
    /// Its symbolic shape.
    pub shape: Vec<Dim>,
}

/// What kernel binding `i` of a launch is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A tensor the kernel only reads (`var<storage, read>`).
    Read(TensorId),
    /// The tensor the kernel writes (`var<storage, read_write>`).
    Write(TensorId),
    /// A uniform block of `u32` words, one per expression, in order. Each value must lie in
    /// `-2^31 .. 2^32` (kernels read it as `u32` or reinterpret it as `i32`); it is stored as its low 32 bits.
    Uniform(Vec<Dim>),
    /// The program's status buffer (`var<storage, read_write>` of `u32`, zeroed before the run): a kernel
    /// that meets a run-time error (a gather index out of range) stores the launch's index + 1 in word 0
    /// and a detail (the offending value, as `u32` bits) in word 1, 1 in word 2 when that value is a
    /// `u32` (else it reads as an `i32`) and in word 3 the index in `Launch::checks` of the check that
    /// failed, only while word 0 is still 0 so the first failing launch is the one reported.
    /// `Gpu::execute` reads it after the run: `launch 3 (gather_f32_n7): an index was out of range (value
    /// -1) in %7 (gather) at model.tdsl:4:9`.
    Status,
}

/// A value a launch's index arithmetic relies on staying below a limit (e.g. a flat index in `u32`, a
/// padded coordinate in `i32`). Checked once the symbols are bound, before anything is dispatched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    /// What the value is (its `Display` is the error message's wording).
    pub what: BoundKind,
    /// The value, in the program's symbols.
    pub value: Dim,
    /// The value must be at most this (and, for `LoopIterations`, at most the device's limit too,
    /// `DeviceLimits::max_loop_iterations`).
    pub max: i64,
    /// The op the bound is about, with where it was written, for messages (`LoopIterations` names the op
    /// whose loops run most); `None` where the bound concerns the launch as a whole.
    pub op: Option<Check>,
}

/// What a launch bound limits. Node and scalar numbers are the compiler's (`%12`, `s3`), for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BoundKind {
    /// The launch's invocation count.
    InvocationCount,
    /// The elements of the tensor the launch writes.
    OutputElements,
    /// The elements of a tensor the launch reads (IR node `node`).
    Elements {
        /// The IR node.
        node: u32,
    },
    /// The elements a reduction visits.
    ReductionSize,
    /// The elements an index-notation reduction (scalar `scalar`) visits.
    MapReductionSize {
        /// The scalar expression.
        scalar: u32,
    },
    /// The length `k` a contraction sums over.
    ContractionLength,
    /// The loop iterations one invocation runs: the sum over the kernel's loops of the product of the
    /// trip counts of the loops around and including each (an upper bound where a trip count depends on
    /// the invocation). Its real limit is the device's (`DeviceLimits::max_loop_iterations`): llvmpipe
    /// ends every loop of an invocation, silently, once the invocation has run 65535 iterations in all.
    /// `node` is the IR node whose loops run most.
    LoopIterations {
        /// The IR node.
        node: u32,
    },
    /// The length of the fibers an argsort (IR node `node`) orders, each in one workgroup's memory.
    SortLength {
        /// The IR node.
        node: u32,
    },
    /// Index `axis` of the index-notation load `scalar` in node `node`, computed in wrapping `u32`.
    LoadIndex {
        /// The index axis.
        axis: u32,
        /// The load's scalar expression.
        scalar: u32,
        /// The IR node of the index-notation op.
        node: u32,
    },
}

impl std::fmt::Display for BoundKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundKind::InvocationCount => write!(f, "invocation count"),
            BoundKind::OutputElements => write!(f, "elements of the output"),
            BoundKind::Elements { node } => write!(f, "elements of %{node}"),
            BoundKind::ReductionSize => write!(f, "reduction size"),
            BoundKind::MapReductionSize { scalar } => write!(f, "size of reduction s{scalar}"),
            BoundKind::ContractionLength => write!(f, "contraction length"),
            BoundKind::LoadIndex { axis, scalar, node } => write!(f, "index {axis} of load s{scalar} in %{node}"),
            BoundKind::SortLength { node } => write!(f, "length of the fibers %{node} sorts"),
            BoundKind::LoopIterations { node } => write!(f, "loop iterations per invocation (most in %{node})"),
        }
    }
}

/// A run-time check a launch makes (a gather index or an index-notation load in range), so that its
/// failure names the op and, where the compiler knew the source, the line that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The IR node of the op (`%7`), in the compiler's numbering.
    pub node: u32,
    /// The op's name (`gather`, `map`).
    pub op: String,
    /// Where the op was written, when known.
    pub source: Option<SourceLocation>,
}

/// A place in a source file: 1-based line and column (in characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLocation {
    /// The file, as the compiler named it (a path or `std/nn.tdsl`).
    pub file: String,
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1.
    pub column: u32,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "%{} ({})", self.node, self.op)?;
        if let Some(at) = &self.source {
            write!(f, " at {}:{}:{}", at.file, at.line, at.column)?;
        }
        Ok(())
    }
}

/// One compute dispatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The kernel's name (unique in the program): errors and profiles name it.
    pub name: String,
    /// The kernel as WGSL, entry point `main`, bindings `@group(0) @binding(i)` = `args[i]`.
    pub wgsl: String,
    /// The same kernel as SPIR-V words.
    pub spirv: Vec<u32>,
    /// What each binding is bound to, in binding order.
    pub args: Vec<Arg>,
    /// Invocations wanted; the grid is `ceil(invocations / workgroup_size)` workgroups, folded into
    /// `[x, y, 1]` with `x, y <=` the device's `max_compute_workgroups_per_dimension` (65535 on most) when it
    /// is larger (kernels compute their flat invocation index as
    /// `gid.x + gid.y * num_workgroups.x * workgroup_size` and return past the end). A launch with 0
    /// invocations is not dispatched.
    pub invocations: Dim,
    /// Invocations per workgroup (x only).
    pub workgroup_size: u32,
    /// Values the kernel's index arithmetic relies on, checked before dispatch.
    pub bounds: Vec<Bound>,
    /// What the kernel needs from the device (computed by the compiler from the kernel's naga module).
    pub requires: Requirements,
    /// The run-time checks the kernel makes, in the order it numbers them (status word 3, `Arg::Status`);
    /// empty for a kernel that cannot fail.
    pub checks: Vec<Check>,
    /// What the launch computes, as typed ops: what the CPU executor runs instead of the kernel.
    pub ops: GroupOps,
}

/// A compiled model: see the module comment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// The model's name.
    pub name: String,
    /// Symbolic dimension names; `SymId(i)` is `symbols[i]`.
    pub symbols: Vec<String>,
    /// Every device tensor; `TensorId(i)` is `tensors[i]`.
    pub tensors: Vec<TensorDecl>,
    /// `TensorRole::Input` tensors, in signature order.
    pub inputs: Vec<TensorId>,
    /// `TensorRole::Param` tensors.
    pub params: Vec<TensorId>,
    /// Output names and the tensors holding them (any role: an input can be an output).
    pub outputs: Vec<(String, TensorId)>,
    /// The dispatches, in order.
    pub launches: Vec<Launch>,
    /// How params start when no weights are given (declared in the source: `param w: T[N, K] =
    /// fan_in_uniform(K)`), by param tensor; a param may have none.
    pub inits: Vec<(TensorId, Init)>,
    /// State carried from one run to the next (a training step's params and optimizer state): after a run
    /// that applies updates (`Model::step`), each `Update`'s output is the param's new value.
    pub updates: Vec<Update>,
}

/// How a param is initialised when no weights are given: PyTorch's default initialisers (spec/training.md).
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// Every element `value` (`nn.init.zeros_`, `ones_`, `constant_`).
    Constant(f64),
    /// Uniform on `[low, high)` (`nn.init.uniform_`).
    Uniform {
        /// The lower end.
        low: f64,
        /// The upper end.
        high: f64,
    },
    /// Uniform on `[-1/sqrt(fan_in), 1/sqrt(fan_in))`: `nn.Linear`'s and `nn.Conv2d`'s weight (Kaiming
    /// uniform with `a = sqrt(5)`) and bias; the fan-in may be symbolic, evaluated with the param's symbols.
    FanInUniform(Dim),
    /// Normal with `mean` and `std` (`nn.init.normal_`, `nn.Embedding`'s weight).
    Normal {
        /// The mean.
        mean: f64,
        /// The standard deviation.
        std: f64,
    },
}

impl Eq for Init {}

impl Init {
    /// The initialiser as the source writes it, with symbol names from `symbols`.
    pub fn describe(&self, symbols: &[String]) -> String {
        match self {
            Init::Constant(v) => format!("constant({v})"),
            Init::Uniform { low, high } => format!("uniform({low}, {high})"),
            Init::FanInUniform(fan_in) => format!("fan_in_uniform({})", fan_in.named(symbols)),
            Init::Normal { mean, std } => format!("normal({mean}, {std})"),
        }
    }
}

/// One piece of state a run carries forward: the value of output `output` (an index into
/// `Program::outputs`) becomes param `param`'s value for the next run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    /// The output holding the new value.
    pub output: usize,
    /// The param it replaces (same dtype and shape).
    pub param: TensorId,
}

impl Program {
    /// The tensor `id` (which `validate` guarantees exists).
    pub fn tensor(&self, id: TensorId) -> &TensorDecl {
        &self.tensors[id.0 as usize]
    }

    /// `f32[B, S, 384]` with this program's symbol names.
    pub fn type_string(&self, decl: &TensorDecl) -> String {
        type_string(decl.dtype, &decl.shape, &self.symbols)
    }
}

/// `f32[B, S, 384]`: a symbolic tensor type with symbol names from `symbols`.
pub fn type_string(dtype: DType, shape: &[Dim], symbols: &[String]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.named(symbols).to_string()).collect();
    format!("{}[{}]", dtype.name(), dims.join(", "))
}
