//! The `tdslc` command line: `check` programs (and weights files against them), `build` bundles, `emit` their
//! IR and kernels (WGSL, SPIR-V, SPIR-V assembly),
//! `run` them on the GPU or on the reference interpreter with inputs from `.npy` files, weights from a
//! safetensors file and seeded random values for the rest, writing outputs as `.npy`; `train` them
//! (`cli/train.rs`).
//! Lives in the library (the binary is a thin `main`) so tests drive it with in-memory output streams.

mod train;

use crate::driver::Root;
use crate::pipeline;
use crate::{codegen, interp, ir, render};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use tdsl_runtime::args::{choose_a_model, distinct_names, parse_dim, parse_input, unknown_model};
use tdsl_runtime::{Gpu, GpuOptions, Tensor};

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
        /// Also check a safetensors file against every model's params: every missing, extra, mis-shaped and
        /// mis-typed entry is listed in one error.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Leave out the weights entries whose names match PATTERN (`*` and `?` wildcards; repeatable), e.g.
        /// `'*.num_batches_tracked'`; a pattern that matches no entry is an error.
        #[arg(long = "ignore-weights", value_name = "PATTERN")]
        ignore_weights: Vec<String>,
    },
    /// Compile every model of FILE ahead of time into one bundle (spec/bundle.md), which `tdsl-run` and the
    /// runtime's `Session` run without the compiler.
    Build {
        file: PathBuf,
        /// The bundle to write (e.g. model.tdslb).
        #[arg(short = 'o', long = "output", value_name = "BUNDLE")]
        output: PathBuf,
        #[command(flatten)]
        schedule: Schedule,
        /// Tile shapes measured by `tdslc tune` (its tuning file for the adapter the bundle is for).
        #[arg(long, value_name = "FILE")]
        tuning: Option<PathBuf>,
        /// Also the training step of model NAME, as the model `NAME.train` (the runtime's `Trainer` runs it),
        /// with the loss and optimizer options below.
        #[arg(long, value_name = "NAME")]
        train: Option<String>,
        #[command(flatten)]
        step: train::StepArgs,
    },
    /// Run every model of FILE (or the one `--model` names) on the GPU or the CPU executor (`--device`), or on
    /// the reference interpreter (`--reference`), and
    /// print a summary of each output. Inputs and params not given get seeded random values (said on stderr).
    /// With several models and no `--model`, every `--dim`, `--input` and `--weights` must fit each model.
    Run {
        file: PathBuf,
        /// Only the model called NAME (default: every model of FILE, when the options fit each).
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
        /// Run on the CPU reference interpreter (the definition of every op's meaning) instead of compiling.
        #[arg(long, conflicts_with = "device")]
        reference: bool,
        /// Where the compiled model runs: auto (a real GPU when there is one, else the CPU executor), gpu (any
        /// wgpu adapter, lavapipe included) or cpu (the CPU executor; threads: TDSL_CPU_THREADS, default every
        /// core).
        #[arg(long, value_name = "auto|gpu|cpu", value_parser = tdsl_runtime::args::parse_device)]
        device: Option<tdsl_runtime::DeviceChoice>,
        /// An input from a .npy file (repeatable).
        #[arg(long = "input", value_name = "NAME=PATH", value_parser = parse_input)]
        inputs: Vec<(String, PathBuf)>,
        /// Weights: a safetensors file whose entries are the model's params by key (all must match).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Leave out the weights entries whose names match PATTERN (`*` and `?` wildcards; repeatable), e.g.
        /// `'*.num_batches_tracked'`; a pattern that matches no entry is an error.
        #[arg(long = "ignore-weights", value_name = "PATTERN")]
        ignore_weights: Vec<String>,
        /// Seed for the random inputs and params.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Size of a symbolic dimension for random inputs, e.g. `--dim B=4` (repeatable); dimensions neither
        /// given here nor fixed by an input file are 2.
        #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
        dims: Vec<(String, i64)>,
        /// Write each output as DIR/<output>.npy (DIR/<model>/<output>.npy when FILE has several models), or,
        /// given a path ending in .safetensors, every output into that one file keyed by output name
        /// (NAME.<model>.safetensors when FILE has several models), written atomically.
        #[arg(long, value_name = "DIR|FILE.safetensors")]
        output: Option<PathBuf>,
        /// GPU backend: vulkan (default), gl or any; overrides TDSL_BACKEND.
        #[arg(long)]
        backend: Option<String>,
        /// One kernel per IR node (fusion off), for comparison.
        #[arg(long)]
        no_fuse: bool,
        /// The device profile to schedule kernels for (default: the one for the device opened).
        #[arg(long, value_parser = parse_target)]
        target: Option<codegen::Target>,
        /// Tile shapes measured by `tdslc tune` on this adapter.
        #[arg(long, value_name = "FILE")]
        tuning: Option<PathBuf>,
    },
    /// Show the kernels of every model in FILE: the ops fused into each, its grid, the bytes it reads and
    /// writes (at the sizes of --dim, else 2), why each unfused edge is not fused, and the device memory.
    Explain {
        file: PathBuf,
        /// Only the model called NAME (default: every model of FILE, when the options fit each).
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        schedule: Schedule,
        /// Size of a symbolic dimension, e.g. `--dim S=128` (repeatable); others are 2.
        #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
        dims: Vec<(String, i64)>,
        /// Explain the training step of model NAME instead (with the loss and optimizer options below).
        #[arg(long, value_name = "NAME")]
        train: Option<String>,
        #[command(flatten)]
        step: train::StepArgs,
    },
    /// Train a model on a dataset: its training step (forward, loss, gradients, optimizer update) compiled into
    /// one program whose params and optimizer state stay on the GPU; a validation pass after every epoch,
    /// checkpoints that resume exactly, metrics as JSON lines and an SVG plot of the curves (spec/training.md).
    Train(Box<train::TrainArgs>),
    /// Benchmark every model of the FILEs (default: the examples and elementwise chains of 2, 4 and 8 ops)
    /// on the current device: fused against unfused (speed-ups, kernel counts, device memory), then every
    /// kernel of the fused program on its own (time, share, GB/s against the device's copy bandwidth,
    /// GFLOP/s), and the runtime's dispatch overhead against raw wgpu dispatches.
    Bench {
        files: Vec<PathBuf>,
        /// Only the models called NAME (default: every model of the FILEs).
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        /// Skip the unfused programs (per-kernel profiles of the fused ones only).
        #[arg(long)]
        fused_only: bool,
        /// The device profile to schedule kernels for (default: the one for the device opened), with
        /// optional overrides, e.g. `cpu,tile=8x4`.
        #[arg(long, value_parser = parse_target)]
        target: Option<codegen::Target>,
        /// Timed runs per program and mode (the median is reported).
        #[arg(long, default_value_t = 10)]
        repeat: usize,
        /// Size of a symbolic dimension (repeatable); unset dimensions use the defaults described in the README.
        #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
        dims: Vec<(String, i64)>,
        /// GPU backend: vulkan (default), gl or any.
        #[arg(long)]
        backend: Option<String>,
    },
    /// Measure every register-tiled contraction of FILE's models with several tile shapes on the current
    /// device and store the fastest per kernel (keyed by kernel hash, in the adapter's tuning file), for
    /// `run --tuning FILE` on this adapter and `build --tuning FILE`, which bakes it into a bundle.
    Tune {
        file: PathBuf,
        /// Only the model called NAME (default: every model of FILE, when the options fit each).
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
        /// Size of a symbolic dimension (repeatable); others are 4 (S: 32).
        #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
        dims: Vec<(String, i64)>,
        /// Timed runs per kernel and tile (the median is used).
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// The tuning file to update (default: the adapter's file under ~/.cache/tdsl/tuning/).
        #[arg(long, value_name = "FILE")]
        tuning: Option<PathBuf>,
        /// GPU backend: vulkan (default), gl or any.
        #[arg(long)]
        backend: Option<String>,
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
    Ir { file: PathBuf },
    /// Every kernel of every model in FILE as WGSL.
    Wgsl {
        file: PathBuf,
        #[command(flatten)]
        schedule: Schedule,
    },
    /// Every kernel as SPIR-V assembly text (a disassembly of the binary modules).
    Spvasm {
        file: PathBuf,
        #[command(flatten)]
        schedule: Schedule,
    },
    /// Every kernel as binary SPIR-V: one file per kernel, DIR/<model>.<kernel>.spv.
    Spirv {
        file: PathBuf,
        /// The directory to write the modules to (created if missing).
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        output: PathBuf,
        #[command(flatten)]
        schedule: Schedule,
    },
}

/// Runs `tdslc` with `args` (including the program name), writing to `out` and `err`; returns the exit
/// code. `stderr_is_terminal` decides `--color auto`.
pub fn main(
    args: impl IntoIterator<Item = OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    stderr_is_terminal: bool,
) -> i32 {
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
    let repeated = match &cli.command {
        Command::Run { dims, inputs, .. } => {
            distinct_names("--dim", dims).and_then(|()| distinct_names("--input", inputs))
        }
        Command::Explain { dims, .. } | Command::Bench { dims, .. } | Command::Tune { dims, .. } => {
            distinct_names("--dim", dims)
        }
        _ => Ok(()),
    };
    if let Err(e) = repeated {
        let _ = writeln!(err, "error: {e}");
        return 2;
    }
    let result = match cli.command {
        Command::Train(args) => train::train(&args, color, stderr_is_terminal, out, err),
        Command::Check { files, weights, ignore_weights } => {
            let open = |path: &std::path::Path| tdsl_runtime::args::open_weights(path, &ignore_weights);
            let weights = match weights.as_deref().map(open).transpose() {
                Ok(w) => w,
                Err(e) => {
                    let _ = writeln!(err, "error: {e}");
                    return 1;
                }
            };
            let mut failed = false;
            for file in &files {
                let checked = pipeline::check(Root::Path(file));
                if !report(file, &checked, color, err) {
                    failed = true;
                    continue;
                }
                let Some(weights) = &weights else { continue };
                for graph in &checked.graphs {
                    if let Err(e) = tdsl_runtime::check_params(weights, &param_specs(graph)) {
                        failed = true;
                        let _ = writeln!(err, "error: model `{}`: {e}", graph.name);
                    }
                }
            }
            if failed { Err(None) } else { Ok(()) }
        }
        Command::Build { file, output, schedule, tuning, train, step } => {
            let problems = step.problems();
            if !problems.is_empty() {
                let _ = writeln!(err, "error: {}", problems.join("\nerror: "));
                return 2;
            }
            let spec = train.map(|model| step.spec(&model));
            let what = BuildWhat { file: &file, output: &output, tuning: tuning.as_deref(), train: spec.as_ref() };
            build(&what, schedule, color, stderr_is_terminal, err)
        }
        Command::Tune { file, model, dims, repeat, tuning, backend } => {
            let options = TuneOptions { model: model.as_deref(), dims: &dims, repeat, tuning: tuning.as_deref() };
            tune(&file, &options, backend.as_deref(), color, out, err)
        }
        Command::Run {
            file,
            model,
            reference,
            device,
            inputs,
            weights,
            ignore_weights,
            seed,
            dims,
            output,
            backend,
            no_fuse,
            target,
            tuning,
        } => {
            let options = RunOptions {
                reference,
                device: device.unwrap_or_default(),
                inputs,
                weights,
                ignore_weights,
                seed,
                dims,
                output,
                backend,
                fuse: !no_fuse,
                target,
                tuning,
                terminal: stderr_is_terminal,
            };
            checked_file(&file, color, err).and_then(|checked| {
                let sources = &checked.program.sources;
                let graphs = selected(&file, checked.graphs.clone(), model.as_deref()).map_err(Some)?;
                check_run_options(&file, &graphs, &options).map_err(Some)?;
                let several = graphs.len() > 1;
                graphs.iter().try_for_each(|graph| run_model(graph, sources, &options, several, out, err).map_err(Some))
            })
        }
        Command::Emit { what: Emit::Ir { file } } => checked_graphs(&file, color, err).map(|graphs| {
            for graph in &graphs {
                let _ = write!(out, "{}", ir::print::print(graph));
            }
        }),
        Command::Emit { what: Emit::Wgsl { file, schedule } } => {
            emit_kernels(&file, schedule, color, err, |graph, kernel| {
                let _ = writeln!(out, "// kernel {} of model {}", kernel.name, graph.name);
                let _ = writeln!(out, "{}", kernel.wgsl());
                Ok(())
            })
        }
        Command::Emit { what: Emit::Spvasm { file, schedule } } => {
            emit_kernels(&file, schedule, color, err, |graph, kernel| {
                let _ = writeln!(out, "; kernel {} of model {}", kernel.name, graph.name);
                let _ = writeln!(out, "{}", codegen::disassemble(kernel.spirv()).map_err(|e| e.to_string())?);
                Ok(())
            })
        }
        Command::Explain { file, model, json, schedule, dims, train, step } => {
            let graphs = match &train {
                None => checked_graphs(&file, color, err),
                Some(name) => {
                    let checked = pipeline::check_training(Root::Path(&file), &step.spec(name));
                    if report(&file, &checked, color, err) {
                        Ok(checked.graphs.into_iter().filter(|g| &g.name == name).collect())
                    } else {
                        Err(None)
                    }
                }
            };
            graphs.and_then(|graphs| selected(&file, graphs, model.as_deref()).map_err(Some)).and_then(|graphs| {
                // `--json` prints one document for the whole file: `{"models": [report, ...]}`.
                let mut reports = Vec::new();
                for graph in &graphs {
                    let sizes = symbol_sizes(graph, &dims).map_err(|e| Some(with_model_hint(e, &file, &graphs)))?;
                    let compiled = pipeline::compile_graph(graph, &schedule.options())
                        .map_err(|e| Some(format!("model `{}`: {e}", graph.name)))?;
                    let report = crate::explain::explain(&compiled, &sizes, !schedule.no_fuse)
                        .map_err(|e| Some(e.to_string()))?;
                    if json {
                        reports.push(report.json());
                    } else {
                        let _ = write!(out, "{}", report.text());
                    }
                }
                if json {
                    let document = serde_json::json!({ "models": reports });
                    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&document).unwrap_or_default());
                }
                Ok(())
            })
        }
        Command::Bench { files, model, json, fused_only, target, repeat, dims, backend } => {
            let options = BenchOptions {
                json,
                fused_only,
                target,
                repeat,
                dims: &dims,
                backend: backend.as_deref(),
                model: model.as_deref(),
            };
            bench(&files, &options, color, out, err)
        }
        Command::Emit { what: Emit::Spirv { file, output, schedule } } => {
            let written = std::cell::Cell::new(0usize);
            let result = std::fs::create_dir_all(&output)
                .map_err(|e| Some(format!("cannot create {}: {e}", output.display())))
                .and_then(|()| {
                    emit_kernels(&file, schedule, color, err, |graph, kernel| {
                        let path = output.join(format!("{}.{}.spv", graph.name, kernel.name));
                        let bytes: Vec<u8> = kernel.spirv().iter().flat_map(|w| w.to_le_bytes()).collect();
                        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                        written.set(written.get() + 1);
                        Ok(())
                    })
                });
            if result.is_ok() {
                let _ = writeln!(err, "note: wrote {} SPIR-V module(s) to {}", written.get(), output.display());
            }
            result
        }
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

/// How `build`, `emit` and `explain` schedule kernels.
#[derive(Args, Clone, Copy)]
struct Schedule {
    /// One kernel per IR node (fusion off), for comparison.
    #[arg(long)]
    no_fuse: bool,
    /// The device profile to schedule kernels for: gpu (default), cpu (lavapipe and other software devices)
    /// or naive (one output per invocation), with optional overrides, e.g. `cpu,tile=8x4`.
    #[arg(long, default_value = "gpu", value_parser = parse_target)]
    target: codegen::Target,
}

impl Schedule {
    fn options(self) -> pipeline::Options {
        pipeline::Options { fuse: !self.no_fuse, target: self.target, ..pipeline::Options::default() }
    }
}

/// A `--target` name.
fn parse_target(name: &str) -> Result<codegen::Target, String> {
    codegen::Target::parse(name).map_err(|e| e.to_string())
}

/// What `tdslc tune` was asked for.
struct TuneOptions<'a> {
    /// `--model`: only this model.
    model: Option<&'a str>,
    dims: &'a [(String, i64)],
    repeat: usize,
    tuning: Option<&'a std::path::Path>,
}

/// `tdslc tune`: every model of `file` tuned on the current device (`bench::tune`); the fastest tiles are
/// merged into the tuning file and printed.
fn tune(
    file: &std::path::Path,
    options: &TuneOptions,
    backend: Option<&str>,
    color: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Option<String>> {
    let graphs = selected(file, checked_graphs(file, color, err)?, options.model).map_err(Some)?;
    let (dims, repeat, tuning) = (options.dims, options.repeat, options.tuning);
    let gpu = open_gpu(backend).map_err(Some)?;
    let target = codegen::Target::for_gpu(&gpu);
    let path = match tuning {
        Some(path) => path.to_path_buf(),
        None => codegen::tuning::Tuning::default_path(&gpu.describe())
            .ok_or_else(|| Some("no cache directory (set XDG_CACHE_HOME or HOME, or give --tuning)".to_string()))?,
    };
    let mut table = match codegen::tuning::Tuning::load(&path).map_err(|e| Some(e.to_string()))? {
        Some(table) => {
            table.check_for(&path, &gpu.describe(), target.name).map_err(|e| Some(e.to_string()))?;
            table
        }
        None => codegen::tuning::Tuning::default(),
    };
    table.adapter = gpu.describe();
    table.target = target.name.to_string();
    let _ = writeln!(err, "note: tuning on {} (target {})", gpu.describe(), target.name);
    let _ = writeln!(out, "{:<20} {:<24} {:>12} {:>6} {:>12}", "model", "kernel", "default ms", "tile", "tuned ms");
    for graph in graphs {
        let sizes = bench_sizes(&graph, dims);
        for t in crate::bench::tune(&gpu, target, &graph, &sizes, repeat).map_err(|e| Some(e.to_string()))? {
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            let tile = format!("{}x{}", t.tile.0, t.tile.1);
            let _ = writeln!(
                out,
                "{:<20} {:<24} {:>12.3} {:>6} {:>12.3}",
                graph.name,
                t.name,
                ms(t.default),
                tile,
                ms(t.best)
            );
            table.tiles.insert(t.key, t.tile);
        }
    }
    table.save(&path).map_err(|e| Some(e.to_string()))?;
    let _ = writeln!(err, "note: wrote {} ({} kernel(s))", path.display(), table.tiles.len());
    Ok(())
}

/// Symbol sizes for benchmarks and tuning: `--dim` values, else `S` = 32, `N` = 2^22 for chains and
/// everything else 4.
fn bench_sizes(graph: &ir::Graph, dims: &[(String, i64)]) -> Vec<i64> {
    let defaults = |symbol: &str| match symbol {
        "S" => 32,
        "N" if graph.name.starts_with("chain") => 1 << 22,
        _ => 4,
    };
    graph
        .symbols
        .iter()
        .map(|s| dims.iter().find(|(n, _)| *n == s.name).map_or_else(|| defaults(&s.name), |(_, v)| *v))
        .collect()
}

/// The tuning file given with `--tuning` (none: the profile's own tiles); one written for another adapter
/// or profile is an error.
fn given_tuning(
    path: Option<&std::path::Path>,
    device: &str,
    target: codegen::Target,
) -> Result<codegen::tuning::Tuning, String> {
    let Some(path) = path else { return Ok(Default::default()) };
    let tuning = read_tuning(path)?;
    tuning.check_for(path, device, target.name).map_err(|e| e.to_string())?;
    Ok(tuning)
}

/// The tuning file at `path`, which must exist.
fn read_tuning(path: &std::path::Path) -> Result<codegen::tuning::Tuning, String> {
    codegen::tuning::Tuning::load(path)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("tuning file {} does not exist", path.display()))
}

/// `tdslc build`: every model of `file` into the bundle `output`, with a spinner on a terminal.
/// What `tdslc build` builds.
struct BuildWhat<'a> {
    file: &'a std::path::Path,
    output: &'a std::path::Path,
    tuning: Option<&'a std::path::Path>,
    /// `--train`: also this training step.
    train: Option<&'a pipeline::TrainSpec>,
}

fn build(
    what: &BuildWhat,
    schedule: Schedule,
    color: bool,
    stderr_is_terminal: bool,
    err: &mut dyn Write,
) -> Result<(), Option<String>> {
    let BuildWhat { file, output, tuning, train } = *what;
    let start = std::time::Instant::now();
    // Printed after the spinner is gone.
    let warnings = std::cell::RefCell::new(String::new());
    let spinner = spinner(stderr_is_terminal, format!("checking {}", file.display()));
    let progress =
        |i: usize, n: usize, name: &str| spinner.set_message(format!("compiling model {name} ({}/{n})", i + 1));
    let tuning = match tuning {
        Some(path) => read_tuning(path).map_err(Some)?,
        None => codegen::tuning::Tuning::default(),
    };
    let options = crate::bundle::BuildOptions {
        no_fuse: schedule.no_fuse,
        target: schedule.target,
        tuning: Some(&tuning),
        color,
        progress: Some(&progress),
        warnings: Some(&|text: &str| warnings.borrow_mut().push_str(text)),
        train,
    };
    let built = crate::bundle::build(file, &options);
    spinner.finish_and_clear();
    let _ = write!(err, "{}", warnings.borrow());
    let (bundle, _) = built.map_err(|e| match e {
        crate::bundle::BuildError::Diagnostics { .. } => {
            let _ = writeln!(err, "{e}");
            None
        }
        other => Some(other.to_string()),
    })?;
    let bytes = bundle.to_bytes();
    std::fs::write(output, &bytes).map_err(|e| Some(format!("cannot write `{}`: {e}", output.display())))?;
    let kernels: usize = bundle.models.iter().map(|m| m.program.launches.len()).sum();
    let _ = writeln!(
        err,
        "note: wrote {} ({} bytes: {} model(s), {kernels} kernel(s)) in {:.1} ms",
        output.display(),
        bytes.len(),
        bundle.models.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// A spinner with `message` on stderr while a long step runs, when stderr is a terminal; hidden otherwise.
fn spinner(terminal: bool, message: String) -> indicatif::ProgressBar {
    if !terminal {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

/// Renders `checked`'s diagnostics of `file` on `err` with a count (`FILE: 2 error(s)`, or
/// `FILE: 1 warning(s)` when only warnings); false when any is an error.
fn report(file: &std::path::Path, checked: &pipeline::Checked, color: bool, err: &mut dyn Write) -> bool {
    if checked.diagnostics.is_empty() {
        return true;
    }
    let _ = write!(err, "{}", render::render(&checked.diagnostics, &checked.program.sources, color));
    let errors = checked.errors();
    let warnings = checked.diagnostics.len() - errors;
    match (errors, warnings) {
        (0, _) => {
            let _ = writeln!(err, "{}: {warnings} warning(s)", file.display());
        }
        (_, 0) => {
            let _ = writeln!(err, "{}: {errors} error(s)", file.display());
        }
        _ => {
            let _ = writeln!(err, "{}: {errors} error(s), {warnings} warning(s)", file.display());
        }
    }
    errors == 0
}

/// The graphs of `file`'s models (its warnings rendered on `err`), or the rendered diagnostics on `err`
/// (`Err(None)`) when any is an error.
fn checked_graphs(file: &std::path::Path, color: bool, err: &mut dyn Write) -> Result<Vec<ir::Graph>, Option<String>> {
    checked_file(file, color, err).map(|checked| checked.graphs)
}

/// `file` checked, with its sources (for run-time errors that name a line); diagnostics are rendered to
/// `err` and make it an error, as is a file without a model.
fn checked_file(file: &std::path::Path, color: bool, err: &mut dyn Write) -> Result<pipeline::Checked, Option<String>> {
    let checked = pipeline::check(Root::Path(file));
    if !report(file, &checked, color, err) {
        return Err(None);
    }
    if checked.graphs.is_empty() {
        return Err(Some(format!("{}: no model in this file (only models have IR and run)", file.display())));
    }
    Ok(checked)
}

/// The models `--model` selects from `graphs` (the models of `file`): the one named, or every model; an
/// unknown name is an error listing the models.
fn selected(file: &std::path::Path, graphs: Vec<ir::Graph>, model: Option<&str>) -> Result<Vec<ir::Graph>, String> {
    let Some(name) = model else { return Ok(graphs) };
    let names: Vec<&str> = graphs.iter().map(|g| g.name.as_str()).collect();
    let error = unknown_model(&file.display().to_string(), name, &names);
    graphs.into_iter().find(|g| g.name == name).map(|g| vec![g]).ok_or(error)
}

/// `message` (about options that do not fit one of `graphs`), followed by a note naming the models and
/// `--model` when there are several.
fn with_model_hint(message: String, file: &std::path::Path, graphs: &[ir::Graph]) -> String {
    if graphs.len() < 2 {
        return message;
    }
    let names: Vec<&str> = graphs.iter().map(|g| g.name.as_str()).collect();
    format!("{message}\nnote: {}", choose_a_model(&file.display().to_string(), &names))
}

/// Checks the names `--input` and `--dim` give and the weights file against every model `tdslc run` is
/// about to run, before it runs any: with several models and no `--model`, the options must fit each.
fn check_run_options(file: &std::path::Path, graphs: &[ir::Graph], options: &RunOptions) -> Result<(), String> {
    let weights = match &options.weights {
        Some(path) => Some(tdsl_runtime::args::open_weights(path, &options.ignore_weights)?),
        None => None,
    };
    let given: Vec<&str> = options.inputs.iter().map(|(name, _)| name.as_str()).collect();
    for graph in graphs {
        let (symbols, inputs, _) = interp::signature(graph);
        let inputs: Vec<&str> = inputs.iter().map(|d| d.site.name()).collect();
        tdsl_runtime::random::check_names(&graph.name, &symbols, &inputs, &given, &options.dims)
            .map_err(|e| e.to_string())
            .and_then(|()| match &weights {
                Some(weights) => tdsl_runtime::check_params(weights, &param_specs(graph))
                    .map_err(|e| format!("model `{}`: {e}", graph.name)),
                None => Ok(()),
            })
            .map_err(|message| with_model_hint(message, file, graphs))?;
    }
    Ok(())
}

/// Compiles every model of `file` and hands each kernel to `each`.
fn emit_kernels(
    file: &std::path::Path,
    schedule: Schedule,
    color: bool,
    err: &mut dyn Write,
    mut each: impl FnMut(&ir::Graph, &codegen::Kernel) -> Result<(), String>,
) -> Result<(), Option<String>> {
    for graph in checked_graphs(file, color, err)? {
        let compiled = pipeline::compile_graph(&graph, &schedule.options())
            .map_err(|e| Some(format!("model `{}`: {e}", graph.name)))?;
        for kernel in &compiled.kernels {
            each(&graph, kernel).map_err(Some)?;
        }
    }
    Ok(())
}

/// What `tdslc run` was asked to do, shared by every model of the file.
struct RunOptions {
    reference: bool,
    /// Where the compiled model runs (unless `reference`).
    device: tdsl_runtime::DeviceChoice,
    inputs: Vec<(String, PathBuf)>,
    weights: Option<PathBuf>,
    ignore_weights: Vec<String>,
    seed: u64,
    dims: Vec<(String, i64)>,
    output: Option<PathBuf>,
    backend: Option<String>,
    fuse: bool,
    /// The device profile; `None`: the opened device's.
    target: Option<codegen::Target>,
    /// `--tuning`: a tuning file for the opened adapter.
    tuning: Option<PathBuf>,
    /// stderr is a terminal: show a spinner while compiling and running.
    terminal: bool,
}

/// Symbol sizes from `--dim NAME=SIZE`, 2 for the rest; an unknown name is an error.
fn symbol_sizes(graph: &ir::Graph, dims: &[(String, i64)]) -> Result<Vec<i64>, String> {
    if let Some((unknown, _)) = dims.iter().find(|(n, _)| !graph.symbols.iter().any(|s| s.name == *n)) {
        return Err(format!("model `{}` has no dimension `{unknown}`", graph.name));
    }
    Ok(graph.symbols.iter().map(|s| dims.iter().find(|(n, _)| *n == s.name).map_or(2, |(_, v)| *v)).collect())
}

/// The GPU options for `--backend` (or the default).
fn gpu_options(backend: Option<&str>) -> Result<GpuOptions, String> {
    let backend = match backend {
        Some(name) => Some(
            tdsl_runtime::BackendChoice::from_name(name)
                .ok_or_else(|| format!("--backend {name:?} is not a backend; use vulkan, gl or any"))?,
        ),
        None => None,
    };
    Ok(GpuOptions { backend, ..GpuOptions::default() })
}

/// Opens the GPU `backend` names (or the default).
fn open_gpu(backend: Option<&str>) -> Result<Gpu, String> {
    Gpu::new(&gpu_options(backend)?).map_err(|e| e.to_string())
}

/// Opens the executor `device` asks for (`--backend` for the GPU); the note saying which runs goes to `err`.
fn open_executor(
    device: tdsl_runtime::DeviceChoice,
    backend: Option<&str>,
    err: &mut dyn Write,
) -> Result<tdsl_runtime::Executor, String> {
    let opened = tdsl_runtime::Executor::open(device, &gpu_options(backend)?, None).map_err(|e| e.to_string())?;
    let _ = writeln!(err, "note: {}", opened.note);
    Ok(opened.executor)
}

/// What `tdslc bench` was asked for.
struct BenchOptions<'a> {
    json: bool,
    fused_only: bool,
    target: Option<codegen::Target>,
    repeat: usize,
    dims: &'a [(String, i64)],
    backend: Option<&'a str>,
    /// `--model`: only the models of this name.
    model: Option<&'a str>,
}

/// Launches in the dispatch-overhead reference (an unfused chain of this many elementwise ops).
const DISPATCH_LAUNCHES: usize = 64;

/// `tdslc bench`: every model of `files` (default: the examples and chains of 2, 4 and 8 elementwise ops over
/// 2^22 elements), fused against unfused, then each fused program kernel by kernel; the device's copy
/// bandwidth and the dispatch overhead come first, measured in the same run. Default sizes (small enough
/// for a software device): `S` = 32, `N` = 2^22 for chains, everything else 4.
fn bench(
    files: &[PathBuf],
    options: &BenchOptions,
    color: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Option<String>> {
    let gpu = open_gpu(options.backend).map_err(Some)?;
    let target = options.target.unwrap_or_else(|| codegen::Target::for_gpu(&gpu));
    let _ = writeln!(err, "note: benchmarking on {} (target {})", gpu.describe(), target.name);
    let mut programs: Vec<(String, ir::Graph)> = Vec::new();
    let default_files: Vec<PathBuf> = ["mlp.tdsl", "cnn.tdsl", "encoder_layer.tdsl", "minilm/minilm.tdsl"]
        .iter()
        .map(|f| PathBuf::from("examples").join(f))
        .collect();
    let defaults_used = files.is_empty();
    let files = if defaults_used { default_files.as_slice() } else { files };
    let mut every_model = Vec::new();
    for file in files {
        for graph in checked_graphs(file, color, err)? {
            every_model.push(graph.name.clone());
            if options.model.is_none_or(|name| graph.name == name) {
                programs.push((format!("{}", file.display()), graph));
            }
        }
    }
    if let Some(name) = options.model
        && programs.is_empty()
    {
        let names: Vec<&str> = every_model.iter().map(String::as_str).collect();
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(Some(unknown_model(&files.join(", "), name, &names)));
    }
    let chain = |k: usize| -> Result<ir::Graph, Option<String>> {
        let source = crate::bench::chain_source(k);
        let checked = pipeline::check(Root::Text { name: "chain.tdsl", text: &source });
        if !checked.diagnostics.is_empty() {
            return Err(Some(render::render(&checked.diagnostics, &checked.program.sources, false)));
        }
        checked.graphs.into_iter().next().ok_or_else(|| Some("the chain benchmark has no model".to_string()))
    };
    if options.dims.is_empty() && defaults_used {
        for k in [2, 4, 8] {
            programs.push((format!("chain of {k} ops (2^22 f32)"), chain(k)?));
        }
    }

    let _ = writeln!(err, "note: measuring the copy bandwidth and the dispatch overhead");
    let copy_gbps = gpu.copy_bandwidth(64 << 20, options.repeat).map_err(|e| Some(e.to_string()))?;
    let (dispatch_runtime, dispatch_raw, launches) =
        crate::bench::dispatch_overhead(&gpu, target, &chain(DISPATCH_LAUNCHES)?, options.repeat.max(20))
            .map_err(|e| Some(e.to_string()))?;
    let dispatch_ratio = dispatch_runtime.as_secs_f64() / dispatch_raw.as_secs_f64().max(1e-12);

    let mut rows = Vec::new();
    let mut profiles = Vec::new();
    for (name, graph) in &programs {
        let sizes = bench_sizes(graph, options.dims);
        let label = if name.starts_with("chain") { name.clone() } else { format!("{} ({})", graph.name, name) };
        let _ = writeln!(err, "note: measuring {label}");
        if !options.fused_only {
            rows.push(
                crate::bench::measure(&gpu, target, &label, graph, &sizes, options.repeat, 0)
                    .map_err(|e| Some(e.to_string()))?,
            );
        }
        profiles.push(
            crate::bench::profile(&gpu, target, &label, graph, &sizes, options.repeat, 0, true)
                .map_err(|e| Some(e.to_string()))?,
        );
    }

    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    if options.json {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let value = serde_json::json!({
            "device": gpu.describe(),
            "timing": profiles.first().map_or(gpu_timing(&gpu), |p| p.timing.name()),
            "copy_gbps": copy_gbps,
            "dispatch": {
                "launches": launches,
                "runtime_us": us(dispatch_runtime),
                "raw_us": us(dispatch_raw),
                "ratio": dispatch_ratio,
            },
            "programs": rows.iter().map(|m| serde_json::json!({
                "name": m.name,
                "kernels_unfused": m.kernels_unfused,
                "kernels_fused": m.kernels_fused,
                "unfused_ms": ms(m.unfused),
                "fused_ms": ms(m.fused),
                "speedup": m.speedup(),
                "memory_unfused": m.memory_unfused,
                "memory_fused": m.memory_fused,
            })).collect::<Vec<_>>(),
            "kernels": profiles.iter().flat_map(|p| {
                let total = p.kernel_total().as_secs_f64().max(1e-12);
                p.kernels.iter().map(move |k| serde_json::json!({
                    "program": p.name,
                    "name": k.name,
                    "ms": ms(k.time),
                    "gbps": k.gbps(),
                    "copy_fraction": k.gbps() / copy_gbps.max(1e-12),
                    "gflops": k.gflops(),
                    "share": k.time.as_secs_f64() / total,
                    "bytes": k.bytes,
                    "flops": k.flops,
                }))
            }).collect::<Vec<_>>(),
        });
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return Ok(());
    }
    let _ = writeln!(out, "device: {}", gpu.describe());
    let _ =
        writeln!(out, "copy bandwidth: {copy_gbps:.2} GB/s (copy_buffer_to_buffer of 64 MiB, bytes read + written)");
    let _ = writeln!(
        out,
        "dispatch overhead: {:.1} us per launch through the runtime, {:.1} us with raw wgpu calls ({dispatch_ratio:.2}x), \
         over {launches} tiny launches",
        us(dispatch_runtime),
        us(dispatch_raw)
    );
    if !rows.is_empty() {
        let _ = write!(out, "\n{}", crate::bench::table(&rows));
    }
    for profile in &profiles {
        let _ = write!(out, "\n{}", crate::bench::profile_table(profile, copy_gbps));
    }
    Ok(())
}

/// How `Gpu::time_dispatches` times kernels on `gpu`.
fn gpu_timing(gpu: &Gpu) -> &'static str {
    if gpu.has_timestamps() { "timestamps" } else { "wall" }
}

/// Runs `graph` with inputs from files or seeded random values, params from the weights file or seeded
/// random values, on the GPU or the interpreter; prints each output and writes it as `.npy` when asked.
fn run_model(
    graph: &ir::Graph,
    sources: &crate::span::SourceMap,
    options: &RunOptions,
    several: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), String> {
    let mut given: HashMap<String, Tensor> = HashMap::new();
    for (name, path) in &options.inputs {
        let tensor = tdsl_runtime::read_npy(path).map_err(|e| format!("input `{name}`: {e}"))?;
        given.insert(name.clone(), tensor);
    }
    let (symbols, declared_inputs, declared_params) = interp::signature(graph);
    let weights = match &options.weights {
        Some(path) => Some(tdsl_runtime::args::open_weights(path, &options.ignore_weights)?),
        None => None,
    };
    let random_params = weights.is_none().then_some(declared_params.as_slice());
    let filled = tdsl_runtime::random::fill_signature(
        &graph.name,
        &symbols,
        &declared_inputs,
        random_params,
        given,
        &options.dims,
        options.seed,
    )
    .map_err(|e| e.to_string())?;
    for note in filled.notes(&graph.name, options.seed) {
        let _ = writeln!(err, "{note}");
    }
    let (inputs, random_params) = (filled.inputs, filled.params);

    let start = std::time::Instant::now();
    let outputs = if options.reference {
        let params = match &weights {
            Some(w) => {
                // As on the GPU: every missing, extra and mis-typed entry in one error, before loading any.
                let specs = param_specs(graph);
                tdsl_runtime::check_params(w, &specs).map_err(|e| e.to_string())?;
                w.tensors_for(&specs).map_err(|e| e.to_string())?
            }
            None => random_params,
        };
        let outputs = interp::run(graph, &inputs, &params).map_err(|e| match &e {
            // As on the GPU (`Check`): the failing node's op and where it was written.
            interp::RunError::Node { node, .. } => match sources.line_column(graph.nodes.span(*node)) {
                Some((file, line, column)) => format!("{e} (at {file}:{line}:{column})"),
                None => e.to_string(),
            },
            _ => e.to_string(),
        })?;
        let _ = writeln!(
            err,
            "note: reference interpreter ran `{}` in {:.1} ms",
            graph.name,
            start.elapsed().as_secs_f64() * 1e3
        );
        outputs
    } else {
        let executor = open_executor(options.device, options.backend.as_deref(), err)?;
        let progress = spinner(options.terminal, format!("compiling model {}", graph.name));
        let target = options.target.unwrap_or_else(|| codegen::Target::for_executor(&executor));
        let tuning = given_tuning(options.tuning.as_deref(), &executor.describe(), target)?;
        let compiled = pipeline::compile_graph(
            graph,
            &pipeline::Options { fuse: options.fuse, target, tuning, ..pipeline::Options::default() },
        )
        .map_err(|e| format!("model `{}`: {e}", graph.name));
        progress.finish_and_clear();
        let mut compiled = compiled?;
        compiled.locate(sources);
        let params: &dyn tdsl_runtime::ParamSource = match &weights {
            Some(w) => w,
            None => &random_params,
        };
        let progress = spinner(options.terminal, format!("loading weights and running model {}", graph.name));
        let outputs = executor.execute(&compiled.program, &inputs, params).map_err(|e| e.to_string());
        progress.finish_and_clear();
        let outputs = outputs?;
        let _ = writeln!(
            err,
            "note: compiled and ran `{}` ({} kernels) in {:.1} ms",
            graph.name,
            compiled.kernels.len(),
            start.elapsed().as_secs_f64() * 1e3
        );
        outputs
    };
    // `--output FILE.safetensors`: every output in one file, keyed by output name (`grad.<param key>` for
    // gradients, so PyTorch loads them by parameter name); written atomically.
    let file = options.output.as_ref().filter(|p| p.extension().is_some_and(|e| e == "safetensors"));
    if let Some(file) = file {
        let file = if several {
            file.with_file_name(format!(
                "{}.{}.safetensors",
                file.file_stem().unwrap_or_default().to_string_lossy(),
                graph.name
            ))
        } else {
            file.clone()
        };
        let named: Vec<(String, Tensor)> =
            graph.outputs.iter().zip(&outputs).map(|(decl, t)| (decl.name.clone(), t.clone())).collect();
        tdsl_runtime::save_safetensors(&file, &named).map_err(|e| e.to_string())?;
    }
    let dir = options
        .output
        .as_ref()
        .filter(|_| file.is_none())
        .map(|d| if several { d.join(&graph.name) } else { d.clone() });
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    for (output, decl) in outputs.iter().zip(&graph.outputs) {
        let _ = writeln!(out, "{}: {}", decl.name, output.preview());
        if let Some(dir) = &dir {
            let path = dir.join(format!("{}.npy", decl.name));
            tdsl_runtime::write_npy(&path, output).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The model's params as a weights file must hold them; a symbolic dimension matches any size here (binding
/// checks it against the inputs afterwards). The same rule as a bundle's (`tdsl_runtime::session::param_specs`).
fn param_specs(graph: &ir::Graph) -> Vec<tdsl_runtime::ParamSpec> {
    graph
        .params
        .iter()
        .filter_map(|&id| {
            let node = graph.node(id);
            let ir::Op::Param { key } = &node.op else { return None };
            let shape = node.ty.shape.iter().map(|d| d.as_const().and_then(|v| usize::try_from(v).ok())).collect();
            Some(tdsl_runtime::ParamSpec { name: key.clone(), dtype: node.ty.dtype, shape })
        })
        .collect()
}
