//! The compiler's pipeline, in one screen: every stage from a `.tdsl` file to a validated runtime `Program`,
//! in order. Every caller (`tdslc`, bundles, benchmarks, the MiniLM example, the tests) compiles through
//! `check` and `compile_graph`; no other code strings stages together.
//!
//! Verification after every stage (the IR verifier after elaboration and each pass, the grouping verifier
//! after fusion, `Program::validate` after lowering) is a run-time switch: `Options::verify`, on when the
//! environment variable `TDSL_VERIFY` is set to anything but `0` (the repository's `.cargo/config.toml` sets
//! it for every `cargo` command, so the test suite always verifies, release builds included). With it off,
//! the graph handed to codegen is still verified once, because codegen accepts only verified IR.
//! `TDSL_DUMP_IR=1` prints the IR after each IR stage to standard error.

use crate::check;
pub use crate::check::train::{Optimizer, TrainSpec};
use crate::codegen::tuning::Tuning;
use crate::codegen::{self, CodegenError, Compiled, GroupingError, Target, fuse};
use crate::diag::Diagnostic;
use crate::driver::{self, Program, Root};
use crate::ir::{self, Graph, VerifyError};
use crate::opt::{self, Pass};

/// How `compile_graph` compiles.
#[derive(Clone, Debug)]
pub struct Options {
    /// Fuse operations into as few kernels as `fuse.rs` allows; off: one kernel per node.
    pub fuse: bool,
    /// The device profile whose schedules the kernels use (`codegen/target.rs`).
    pub target: Target,
    /// Measured tiles per kernel (`tdslc tune`), applied where a kernel has an entry.
    pub tuning: Tuning,
    /// Run the verifier of every stage after it (see the module comment).
    pub verify: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { fuse: true, target: Target::default(), tuning: Tuning::default(), verify: verify_from_env() }
    }
}

/// Whether `TDSL_VERIFY` asks for verification after every stage.
pub fn verify_from_env() -> bool {
    std::env::var_os("TDSL_VERIFY").is_some_and(|v| v != "0")
}

/// A stage of the pipeline, as named in errors and IR dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `check::elaborate`: the typed IR of each model.
    Elaborate,
    /// One IR pass of `opt::PASSES`.
    Pass(&'static str),
    /// `fuse::group`: the kernel groups.
    Fuse,
    /// `codegen::lower`: kernels and the runtime program.
    Lower,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Elaborate => f.write_str("elaboration"),
            Stage::Pass(name) => write!(f, "the `{name}` pass"),
            Stage::Fuse => f.write_str("fusion"),
            Stage::Lower => f.write_str("lowering"),
        }
    }
}

/// Why a checked graph did not compile. Every variant but `Codegen(Unsupported)` is a compiler bug, caught
/// by a verifier before anything reaches a device.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error("internal compiler error: after {stage}, the IR of `{model}` does not verify:{}", list(.errors))]
    Ir { model: String, stage: Stage, errors: Vec<VerifyError> },
    #[error("internal compiler error: the kernel groups of `{model}` are wrong:{}", list(.errors))]
    Grouping { model: String, errors: Vec<GroupingError> },
    #[error("internal compiler error: the program compiled from `{model}` is malformed:{}", list(.errors))]
    Program { model: String, errors: Vec<tdsl_runtime::ProgramError> },
}

/// The result of the front end: the sources (for rendering), one graph per model of the root file, and
/// every diagnostic in source order. The graphs are only meaningful when no diagnostic is an error
/// (`errors() == 0`); warnings leave them valid.
pub struct Checked {
    pub program: Program,
    pub graphs: Vec<Graph>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    /// How many diagnostics are errors (not warnings, `Code::is_warning`).
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| !d.code.is_warning()).count()
    }
}

/// The front end: never fails, never stops at the first error.
pub fn check(root: Root<'_>) -> Checked {
    // load: the root file, the prelude and every import, each parsed once (`syntax::parse`)
    let (program, mut diagnostics) = driver::load(root);
    // elaborate: names, dtypes, shapes and bounds checked, functions inlined, gradients appended where a
    // program asks for them (`autodiff::grad`), one `ir::Graph` per model
    let (graphs, more) = check::elaborate(&program);
    diagnostics.extend(more);
    diagnostics.sort_by_key(|d| (d.span.file, d.span.start, d.span.end));
    diagnostics.dedup();
    Checked { program, graphs, diagnostics }
}

/// The front end for a training step: `check` with `std/optim` loaded and the root model `spec.model`
/// turned into its training step (`check::train`: forward, loss gradient, optimizer update, state carried
/// by `ir::Update`s); the back end then compiles it like any graph.
pub fn check_training(root: Root<'_>, spec: &TrainSpec) -> Checked {
    let (program, mut diagnostics) = driver::load_with(root, &["optim"]);
    let (graphs, more) = check::elaborate_with(&program, Some(spec));
    diagnostics.extend(more);
    diagnostics.sort_by_key(|d| (d.span.file, d.span.start, d.span.end));
    diagnostics.dedup();
    Checked { program, graphs, diagnostics }
}

/// The back end, for one checked graph.
pub fn compile_graph(graph: &Graph, options: &Options) -> Result<Compiled, CompileError> {
    let checks = Checks { model: &graph.name, on: options.verify };
    // verify: codegen accepts verified IR only, so this one check always runs
    verify_ir(graph, Stage::Elaborate)?;
    // the IR passes of `opt::PASSES`, in order (verified after each)
    let graph = optimize(graph, options, &mut |_, _| {})?;
    // fusion: which nodes are stored and which are computed inline, one group per kernel, and each
    // group's schedule, chosen once (`Schedule::choose`)
    let mut grouping = fuse::group(&graph, options.fuse, &options.target);
    checks.grouping(&graph, &grouping)?;
    // kernels: each schedule verified (swapped for a tuned one where `tuning` says), one validated naga
    // module per group (WGSL, SPIR-V, requirements); the device tensors and launches
    let (program, kernels) = codegen::lower(&graph, &mut grouping, &options.target, &options.tuning)?;
    checks.program(&program)?;
    Ok(Compiled { program, kernels, graph, grouping })
}

/// The verifiers that run only when verification is on.
struct Checks<'a> {
    model: &'a str,
    on: bool,
}

impl Checks<'_> {
    fn grouping(&self, graph: &Graph, grouping: &fuse::Grouping) -> Result<(), CompileError> {
        if !self.on {
            return Ok(());
        }
        codegen::verify_grouping(graph, grouping)
            .map_err(|errors| CompileError::Grouping { model: self.model.to_string(), errors })
    }

    fn program(&self, program: &tdsl_runtime::Program) -> Result<(), CompileError> {
        if !self.on {
            return Ok(());
        }
        program.validate().map_err(|errors| CompileError::Program { model: self.model.to_string(), errors })
    }
}

/// Runs every pass of `opt::PASSES` in order, verifying after each when `options.verify`; `each` sees the
/// graph after every pass (tests compare each against the interpreter).
pub fn optimize(graph: &Graph, options: &Options, each: &mut dyn FnMut(&Pass, &Graph)) -> Result<Graph, CompileError> {
    let mut current = graph.clone();
    for pass in opt::PASSES {
        current = (pass.run)(&current);
        if options.verify {
            verify_ir(&current, Stage::Pass(pass.name))?;
        }
        dump(&current, Stage::Pass(pass.name));
        each(pass, &current);
    }
    Ok(current)
}

fn verify_ir(graph: &Graph, stage: Stage) -> Result<(), CompileError> {
    ir::verify(graph).map_err(|errors| CompileError::Ir { model: graph.name.clone(), stage, errors })
}

fn dump(graph: &Graph, stage: Stage) {
    if std::env::var_os("TDSL_DUMP_IR").is_some_and(|v| v != "0") {
        eprintln!("== IR of `{}` after {stage}\n{}", graph.name, ir::print::print(graph));
    }
}

fn list(errors: &[impl std::fmt::Display]) -> String {
    errors.iter().map(|e| format!("\n  - {e}")).collect()
}
