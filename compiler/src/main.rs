//! `tdslc`, the command-line compiler: `check` programs, `emit` their IR, `run` them on the reference
//! interpreter.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use tdsl_compiler::driver::{self, Root};
use tdsl_compiler::{interp, ir, random, render};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        Color::Auto => std::io::stderr().is_terminal(),
        Color::Always => true,
        Color::Never => false,
    };
    match cli.command {
        Command::Check { files } => {
            let mut failed = false;
            for file in &files {
                let checked = driver::check(Root::Path(file));
                if !checked.diagnostics.is_empty() {
                    failed = true;
                    eprint!("{}", render::render(&checked.diagnostics, &checked.program.sources, color));
                    eprintln!("{}: {} error(s)", file.display(), checked.diagnostics.len());
                }
            }
            if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Command::Run { file, reference, seed, dims } => {
            if !reference {
                eprintln!("error: GPU execution is not built yet; run on the CPU reference interpreter with `--reference`");
                return ExitCode::FAILURE;
            }
            let checked = driver::check(Root::Path(&file));
            if !checked.diagnostics.is_empty() {
                eprint!("{}", render::render(&checked.diagnostics, &checked.program.sources, color));
                eprintln!("{}: {} error(s)", file.display(), checked.diagnostics.len());
                return ExitCode::FAILURE;
            }
            for graph in &checked.graphs {
                if let Err(message) = run_reference(graph, seed, &dims) {
                    eprintln!("error: {message}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Command::Emit { what: Emit::Ir { file } } => {
            let checked = driver::check(Root::Path(&file));
            if !checked.diagnostics.is_empty() {
                eprint!("{}", render::render(&checked.diagnostics, &checked.program.sources, color));
                eprintln!("{}: {} error(s)", file.display(), checked.diagnostics.len());
                return ExitCode::FAILURE;
            }
            if checked.graphs.is_empty() {
                eprintln!("{}: no model in this file (only models have IR)", file.display());
                return ExitCode::FAILURE;
            }
            for graph in &checked.graphs {
                print!("{}", ir::print::print(graph));
            }
            ExitCode::SUCCESS
        }
    }
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
fn run_reference(graph: &ir::Graph, seed: u64, dims: &[(String, i64)]) -> Result<(), String> {
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
        eprintln!("note: dimensions {} set to 2 (choose with --dim NAME=SIZE)", defaulted.join(", "));
    }
    let env = |id: tdsl_compiler::dim::SymId| sizes[id.0 as usize];
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
    eprintln!(
        "note: {} input(s) and {} param(s) of `{}` are seeded random values (seed {seed})",
        inputs.len(),
        params.len(),
        graph.name
    );
    let start = std::time::Instant::now();
    let outputs = interp::run(graph, &inputs, &params).map_err(|e| e.to_string())?;
    eprintln!("note: reference interpreter ran `{}` in {:.1} ms", graph.name, start.elapsed().as_secs_f64() * 1e3);
    for (output, decl) in outputs.iter().zip(&graph.outputs) {
        let values = output.to_f64_vec();
        let shown: Vec<String> = values.iter().take(6).map(|v| format!("{v:.6}")).collect();
        let more = if values.len() > 6 { ", ..." } else { "" };
        println!("{}: {} = [{}{more}]", decl.name, output.type_string(), shown.join(", "));
    }
    Ok(())
}
