//! The `tdsl-run` command line: runs every model of a bundle (or `--model NAME`) with inputs from `.npy`
//! files, weights from a safetensors file and seeded random values for the rest, exactly as `tdslc run`
//! does for the source file (the same `random::fill_signature`, the same printed outputs), so
//! `tdslc run FILE --seed N` and `tdsl-run FILE.tdslb --seed N` print the same lines. `--timings` reports
//! the start-up cost: bundle load, pipeline creation and the first run. Lives in the library (the binary is
//! a thin `main`) so tests drive it with in-memory output streams. `--device auto|gpu|cpu` picks the executor
//! (`device.rs`; auto: a real GPU, else the CPU executor) and says on stderr which one runs.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::args::{choose_a_model, distinct_names, parse_device, parse_dim, parse_input, unknown_model};
use crate::bundle::{Bundle, BundledModel};
use crate::device::{DeviceChoice, Executor, ExecutorRef, Loaded};
use crate::exec::Input;
use crate::exec::param_specs;
use crate::gpu::{BackendChoice, GpuOptions, PipelineCacheState};
use crate::session::Session;
use crate::weights::{Weights, check_params};
use crate::{ParamSource, Tensor};

/// Runs a tdsl bundle (built with `tdslc build`) on the GPU or the CPU executor and prints a summary of each output. Inputs and
/// params not given get seeded random values (said on stderr), the same values `tdslc run --seed` uses.
#[derive(Parser)]
#[command(name = "tdsl-run", version, about, long_about = None)]
struct Args {
    /// The bundle (.tdslb).
    bundle: PathBuf,
    /// Run only this model of the bundle.
    #[arg(long)]
    model: Option<String>,
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
    /// Write each output as DIR/<output>.npy (DIR/<model>/<output>.npy when the bundle has several models).
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Where to run: auto (a real GPU when there is one, else the CPU executor), gpu (any wgpu adapter,
    /// lavapipe included) or cpu (the CPU executor; threads: TDSL_CPU_THREADS, default every core).
    #[arg(long, value_name = "auto|gpu|cpu", default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// GPU backend: vulkan (default), gl or any; overrides TDSL_BACKEND.
    #[arg(long)]
    backend: Option<String>,
    /// Keep compiled pipelines in this file between runs (wgpu's pipeline cache; Vulkan only).
    #[arg(long, value_name = "PATH")]
    pipeline_cache: Option<PathBuf>,
    /// Report the start-up cost on stderr: bundle load, device, pipelines, first run.
    #[arg(long)]
    timings: bool,
    /// Print the bundle's manifest as JSON and exit.
    #[arg(long)]
    manifest: bool,
}

/// Runs `tdsl-run` with `args` (including the program name), writing to `out` and `err`; returns the exit
/// code. Progress bars are drawn only when `stderr_is_terminal`.
pub fn main(
    args: impl IntoIterator<Item = OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    stderr_is_terminal: bool,
) -> i32 {
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let text = if stderr_is_terminal { e.render().ansi().to_string() } else { e.render().to_string() };
            let _ = if e.use_stderr() { write!(err, "{text}") } else { write!(out, "{text}") };
            return e.exit_code();
        }
    };
    match run(&args, out, err, stderr_is_terminal) {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            1
        }
    }
}

fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write, terminal: bool) -> Result<(), String> {
    let start = Instant::now();
    distinct_names("--dim", &args.dims).map_err(|e| e.to_string())?;
    distinct_names("--input", &args.inputs).map_err(|e| e.to_string())?;
    if args.manifest {
        let bytes = std::fs::read(&args.bundle)
            .map_err(|e| format!("bundle `{}`: cannot read it: {e}", args.bundle.display()))?;
        let json = Bundle::manifest_json(&bytes).map_err(|e| format!("`{}`: {e}", args.bundle.display()))?;
        let _ = writeln!(out, "{json}");
        return Ok(());
    }
    let bundle = Bundle::read(&args.bundle).map_err(|e| e.to_string())?;
    let loaded = start.elapsed();
    let file = args.bundle.display().to_string();
    let names: Vec<&str> = bundle.models.iter().map(|m| m.program.name.as_str()).collect();
    let models: Vec<&BundledModel> = match &args.model {
        Some(name) => vec![bundle.model(Some(name)).ok_or_else(|| unknown_model(&file, name, &names))?],
        None => bundle.models.iter().collect(),
    };
    let mut given: HashMap<String, Tensor> = HashMap::new();
    for (name, path) in &args.inputs {
        let tensor = crate::read_npy(path).map_err(|e| format!("input `{name}`: {e}"))?;
        given.insert(name.clone(), tensor);
    }
    let weights = match &args.weights {
        Some(path) => Some(crate::args::open_weights(path, &args.ignore_weights)?),
        None => None,
    };
    // Input and dimension names and the weights are checked against every model to run before the device
    // is opened; with several models they must fit each (or `--model` chooses one).
    let given_names: Vec<&str> = args.inputs.iter().map(|(name, _)| name.as_str()).collect();
    for model in &models {
        let program = &model.program;
        let declared = crate::exec::declared(program, &program.inputs);
        let inputs: Vec<&str> = declared.iter().map(|d| d.site.name()).collect();
        let fits = crate::random::check_names(&program.name, &program.symbols, &inputs, &given_names, &args.dims)
            .map_err(|e| e.to_string())
            .and_then(|()| match &weights {
                Some(weights) => {
                    check_params(weights, &param_specs(program)).map_err(|e| format!("model `{}`: {e}", program.name))
                }
                None => Ok(()),
            });
        if let Err(message) = fits {
            return Err(if models.len() > 1 {
                format!("{message}\nnote: {}", choose_a_model(&file, &names))
            } else {
                message
            });
        }
    }
    let backend = match &args.backend {
        Some(name) => Some(
            BackendChoice::from_name(name)
                .ok_or_else(|| format!("--backend {name:?} is not a backend; use vulkan, gl or any"))?,
        ),
        None => None,
    };
    let device_start = Instant::now();
    let options = GpuOptions { backend, pipeline_cache: args.pipeline_cache.clone(), ..GpuOptions::default() };
    let opened = Executor::open(args.device, &options, None).map_err(|e| e.to_string())?;
    let device = device_start.elapsed();
    let _ = writeln!(err, "note: {}", opened.note);
    let executor = &opened.executor;
    if args.timings {
        let kernels = match executor {
            Executor::Gpu(gpu) => format!(
                "kernels as {}; pipeline cache: {}",
                if gpu.takes_spirv() { "SPIR-V (passthrough)" } else { "WGSL" },
                cache_state(gpu.pipeline_cache_state())
            ),
            Executor::Cpu(_) => "launches as typed ops (CPU executor)".to_string(),
        };
        let _ = writeln!(
            err,
            "timings: bundle load {} ({} bytes, {} model(s)); device open {}; {kernels}",
            ms(loaded),
            std::fs::metadata(&args.bundle).map_or(0, |m| m.len()),
            bundle.models.len(),
            ms(device),
        );
    }
    let several = models.len() > 1;
    for model in models {
        run_model(executor.into(), model, args, &given, weights.as_ref(), several, loaded, terminal, out, err)?;
    }
    if let Some(gpu) = executor.gpu()
        && let Some(bytes) = gpu.save_pipeline_cache().map_err(|e| e.to_string())?
        && args.timings
    {
        let path = args.pipeline_cache.as_deref().unwrap_or(Path::new(""));
        let _ = writeln!(err, "timings: saved {bytes} bytes of pipeline cache to {}", path.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_model(
    executor: ExecutorRef,
    model: &BundledModel,
    args: &Args,
    given: &HashMap<String, Tensor>,
    weights: Option<&Weights>,
    several: bool,
    loaded: Duration,
    terminal: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), String> {
    let program = &model.program;
    let name = program.name.as_str();
    let pipelines_start = Instant::now();
    let bar = progress_bar(terminal, program.launches.len() as u64, "building pipelines");
    let session =
        Session::with_progress(executor, model, &|done, _| bar.set_position(done as u64)).map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let pipelines = pipelines_start.elapsed();

    let declared_params = session.params();
    let random_params = weights.is_none().then_some(declared_params.as_slice());
    let filled = crate::random::fill_signature(
        name,
        &program.symbols,
        &session.inputs(),
        random_params,
        given.clone(),
        &args.dims,
        args.seed,
    )
    .map_err(|e| e.to_string())?;
    for note in filled.notes(name, args.seed) {
        let _ = writeln!(err, "{note}");
    }
    let params: &dyn ParamSource = match weights {
        Some(w) => w,
        None => &filled.params,
    };

    let run_start = Instant::now();
    let bar = progress_bar(terminal, 0, "uploading weights");
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let loaded_model = session.load_with_progress(params, Some(&progress)).map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let load = run_start.elapsed();
    let outputs = match loaded_model {
        Loaded::Gpu(mut loaded_model) => {
            let inputs: Vec<Input> = filled.inputs.iter().map(Input::Host).collect();
            let prepare_start = Instant::now();
            let prepared = loaded_model.prepare(&inputs).map_err(|e| e.to_string())?;
            let prepare = prepare_start.elapsed();
            let dispatch_start = Instant::now();
            prepared.run().map_err(|e| e.to_string())?;
            let dispatch = dispatch_start.elapsed();
            let read_start = Instant::now();
            let outputs = prepared.outputs().map_err(|e| e.to_string())?;
            let read = read_start.elapsed();
            if args.timings {
                let first_run = run_start.elapsed();
                // A second run shows what the first one paid for once (drivers that compile on first dispatch).
                let again = Instant::now();
                prepared.run().map_err(|e| e.to_string())?;
                let second_run = again.elapsed();
                let _ = writeln!(
                    err,
                    "timings: model `{name}`: pipelines {} ({} kernels); first run {} (load and upload weights {}, \
                     prepare and upload inputs {}, dispatch {}, read back {}); start-up (bundle load + pipelines + \
                     first run) {}; second run (dispatch) {}; device memory {} bytes",
                    ms(pipelines),
                    program.launches.len(),
                    ms(first_run),
                    ms(load),
                    ms(prepare),
                    ms(dispatch),
                    ms(read),
                    ms(loaded + pipelines + first_run),
                    ms(second_run),
                    prepared.memory.peak_bytes,
                );
            }
            outputs
        }
        Loaded::Cpu(mut loaded_model) => {
            let compute_start = Instant::now();
            let outputs = loaded_model.run(&filled.inputs).map_err(|e| e.to_string())?;
            let compute = compute_start.elapsed();
            if args.timings {
                let first_run = run_start.elapsed();
                let again = Instant::now();
                loaded_model.run(&filled.inputs).map_err(|e| e.to_string())?;
                let second_run = again.elapsed();
                let _ = writeln!(
                    err,
                    "timings: model `{name}`: launches planned {} ({} launches); first run {} (load and decode \
                     weights {}, compute {}); start-up (bundle load + planning + first run) {}; second run {}",
                    ms(pipelines),
                    program.launches.len(),
                    ms(first_run),
                    ms(load),
                    ms(compute),
                    ms(loaded + pipelines + first_run),
                    ms(second_run),
                );
            }
            outputs
        }
    };
    let dir = args.output.as_ref().map(|d| if several { d.join(name) } else { d.clone() });
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    for ((output, _), tensor) in program.outputs.iter().zip(&outputs) {
        let _ = writeln!(out, "{output}: {}", tensor.preview());
        if let Some(dir) = &dir {
            crate::write_npy(&dir.join(format!("{output}.npy")), tensor).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal, else a hidden one.
fn progress_bar(terminal: bool, len: u64, message: &'static str) -> indicatif::ProgressBar {
    if !terminal {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_message(message);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}") {
        bar.set_style(style);
    }
    bar
}

fn cache_state(state: PipelineCacheState) -> String {
    match state {
        PipelineCacheState::Off => "off".into(),
        PipelineCacheState::Unsupported => "not supported by this backend".into(),
        PipelineCacheState::Created => "new".into(),
        PipelineCacheState::Loaded { bytes } => format!("loaded {bytes} bytes"),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
