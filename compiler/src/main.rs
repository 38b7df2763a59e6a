//! `tdslc`, the command-line compiler: `check` programs and `emit` their IR.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use tdsl_compiler::driver::{self, Root};
use tdsl_compiler::{ir, render};

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
