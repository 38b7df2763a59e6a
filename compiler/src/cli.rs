//! The `tdslc` command line: `check` programs, `emit` their IR, `run` them on the reference interpreter.
//! Lives in the library (the binary is a thin `main`) so tests drive it with in-memory output streams.

use crate::driver::{self, Root};
use crate::{interp, ir, random, render};
use clap::{Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

/// tdsl's compiler: checks .tdsl programs and lowers them to a typed tensor IR.
#[derive(Parser)]
#[command(name = "tdslc", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Colour diagnostics: auto (when stderr is a terminal), always or never.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Check programs: names, dtypes, shapes and bounds. Exits non-zero with every diagnostic on failure.
    Check {
        /// The .tdsl files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run every model of FILE on the CPU reference interpreter with seeded random inputs and weights.
    Run {
        file: PathBuf,
        /// Use the CPU reference interpreter (the definition of every op's meaning).
        #[arg(long)]
        reference: bool,
        /// Seed for the random inputs and params.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Size of a symbolic dimension, e.g. `--dim B=4` (repeatable); unset dimensions are 2.
        #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
        dims: Vec<(String, i64)>,
    },
    /// Print a compiled form of a program.
    Emit {
        #[command(subcommand)]
        what: Emit,
    },
}

#[derive(Subcommand)]
enum Emit {
    /// The typed tensor IR of every model in FILE, after checking and inlining.
    Ir {
        file: PathBuf,
    },
}

/// Runs `tdslc` with `args` (including the program name), writing to `out` and `err`; returns the exit
/// code. `stderr_is_terminal` decides `--color auto`.
pub fn main(args: impl IntoIterator<Item = OsString>, out: &mut dyn Write, err: &mut dyn Write, stderr_is_terminal: bool) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = if stderr_is_terminal { e.render().ansi().to_string() } else { e.render().to_string() };
            let _ = if e.use_stderr() { write!(err, "{text}") } else { write!(out, "{text}") };
            return e.exit_code();
        }
    };
    let color = match cli.color {
        Color::Auto => stderr_is_terminal,
        Color::Always => true,
        Color::Never => false,
    };
    let result = match cli.command {
        Command::Check { files } => {
            let mut failed = false;
            for file in &files {
                let checked = driver::check(Root::Path(file));
                if !checked.diagnostics.is_empty() {
                    failed = true;
                    let _ = write!(err, "{}", render::render(&checked.diagnostics, &checked.program.sources, color));
                    let _ = writeln!(err, "{}: {} error(s)", file.display(), checked.diagnostics.len());
                }
            }
            if failed { Err(None) } else { Ok(()) }
        }
        Command::Run { file, reference, seed, dims } => {
            if !reference {
                Err(Some("GPU execution is not built yet; run on the CPU reference interpreter with `--reference`".to_string()))
            } else {
                checked_graphs(&file, color, err).and_then(|graphs| {
                    graphs.iter().try_for_each(|graph| run_reference(graph, seed, &dims, out, err).map_err(Some))
                })
            }
        }
        Command::Emit { what: Emit::Ir { file } } => checked_graphs(&file, color, err).map(|graphs| {
            for graph in &graphs {
                let _ = write!(out, "{}", ir::print::print(graph));
            }
        }),
    };
    match result {
        Ok(()) => 0,
        Err(None) => 1,
        Err(Some(message)) => {
            let _ = writeln!(err, "error: {message}");
            1
        }
    }
}

/// The graphs of `file`'s models, or the rendered diagnostics on `err` (`Err(None)`).
fn checked_graphs(file: &std::path::Path, color: bool, err: &mut dyn Write) -> Result<Vec<ir::Graph>, Option<String>> {
    let checked = driver::check(Root::Path(file));
    if !checked.diagnostics.is_empty() {
        let _ = write!(err, "{}", render::render(&checked.diagnostics, &checked.program.sources, color));
        let _ = writeln!(err, "{}: {} error(s)", file.display(), checked.diagnostics.len());
        return Err(None);
    }
    if checked.graphs.is_empty() {
        return Err(Some(format!("{}: no model in this file (only models have IR and run)", file.display())));
    }
    Ok(checked.graphs)
}

fn parse_dim(text: &str) -> Result<(String, i64), String> {
    let (name, size) = text.split_once('=').ok_or("expected NAME=SIZE, e.g. B=4")?;
    let size: i64 = size.trim().parse().map_err(|_| format!("`{size}` is not an integer"))?;
    if size < 1 {
        return Err(format!("dimension {name} must be at least 1, got {size}"));
    }
    Ok((name.trim().to_string(), size))
}

/// Runs `graph` on the interpreter with seeded inputs and params and prints a summary of each output.
fn run_reference(
    graph: &ir::Graph,
    seed: u64,
    dims: &[(String, i64)],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), String> {
    let mut defaulted = Vec::new();
    let sizes: Vec<i64> = graph
        .symbols
        .iter()
        .map(|s| match dims.iter().find(|(n, _)| *n == s.name) {
            Some((_, v)) => *v,
            None => {
                defaulted.push(s.name.clone());
                2
            }
        })
        .collect();
    if let Some((unknown, _)) = dims.iter().find(|(n, _)| !graph.symbols.iter().any(|s| s.name == *n)) {
        return Err(format!("model `{}` has no dimension `{unknown}`", graph.name));
    }
    if !defaulted.is_empty() {
        let _ = writeln!(err, "note: dimensions {} set to 2 (choose with --dim NAME=SIZE)", defaulted.join(", "));
    }
    let env = |id: crate::dim::SymId| sizes[id.0 as usize];
    let shape_of = |id: ir::NodeId| -> Result<Vec<usize>, String> {
        graph.node(id).ty.shape.iter().map(|d| {
            d.eval(&env).and_then(|v| usize::try_from(v).ok()).ok_or_else(|| format!("dimension {} overflows", graph.dim_to_string(d)))
        }).collect()
    };
    let mut inputs = Vec::new();
    for &id in &graph.inputs {
        let ir::Op::Input { name } = &graph.node(id).op else { continue };
        inputs.push(random::seeded_tensor(name, graph.node(id).ty.dtype, &shape_of(id)?, seed));
    }
    let mut params = std::collections::HashMap::new();
    for &id in &graph.params {
        let ir::Op::Param { key } = &graph.node(id).op else { continue };
        params.insert(key.clone(), random::seeded_tensor(key, graph.node(id).ty.dtype, &shape_of(id)?, seed));
    }
    let _ = writeln!(
        err,
        "note: {} input(s) and {} param(s) of `{}` are seeded random values (seed {seed})",
        inputs.len(),
        params.len(),
        graph.name
    );
    let start = std::time::Instant::now();
    let outputs = interp::run(graph, &inputs, &params).map_err(|e| e.to_string())?;
    let _ = writeln!(err, "note: reference interpreter ran `{}` in {:.1} ms", graph.name, start.elapsed().as_secs_f64() * 1e3);
    for (output, decl) in outputs.iter().zip(&graph.outputs) {
        let values = output.to_f64_vec();
        let shown: Vec<String> = values.iter().take(6).map(|v| format!("{v:.6}")).collect();
        let more = if values.len() > 6 { ", ..." } else { "" };
        let _ = writeln!(out, "{}: {} = [{}{more}]", decl.name, output.type_string(), shown.join(", "));
    }
    Ok(())
}
