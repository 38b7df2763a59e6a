//! `minilm`: sentence embeddings with all-MiniLM-L6-v2 written in tdsl. Sets the machine up on first use
//! (`scripts/setup.sh`: the model's files and, for `--device gpu`, a Vulkan driver when missing), compiles
//! `minilm.tdsl`, runs the batch on the executor `--device` picks (auto: a real GPU when there is one, else the
//! CPU executor, which needs no Vulkan) and prints the cosine similarity matrix of the sentences, or with
//! `--json` their embeddings. `--bench` times the GPU path and the CPU executor side by side.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use tdsl_minilm::{Encoder, Setup, cosine, fetch, is_complete, model_dir};
use tdsl_runtime::{BackendChoice, Cpu, DeviceChoice, DeviceError, Executor, Gpu, GpuError, GpuOptions, Input, Loaded};

/// Sentences used when none are given: two paraphrase pairs and an unrelated sentence.
const DEFAULT_SENTENCES: [&str; 5] = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The new movie is awesome.",
    "The new film is so great.",
    "The bank raised its interest rates.",
];

#[derive(Parser)]
#[command(
    name = "minilm",
    about = "Sentence embeddings with all-MiniLM-L6-v2, compiled by tdsl and run on the GPU or the CPU executor"
)]
struct Args {
    /// Sentences to embed (default: a few examples).
    sentences: Vec<String>,
    /// Print `{"embeddings": [[...384 floats...], ...]}` in input order instead of the similarity matrix.
    #[arg(long)]
    json: bool,
    /// Where the model's files are (default: $TDSL_MINILM_DIR or ~/.cache/tdsl/minilm, fetched if missing).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Where to run: auto (a real GPU when there is one, else the CPU executor), gpu (any wgpu adapter,
    /// lavapipe included) or cpu (the CPU executor; threads: TDSL_CPU_THREADS, default every core). With
    /// `--bench`, auto times both the GPU path (when an adapter opens) and the CPU executor.
    #[arg(long, value_name = "auto|gpu|cpu", default_value = "auto", value_parser = tdsl_runtime::args::parse_device)]
    device: DeviceChoice,
    /// GPU backend: vulkan (default), gl or any.
    #[arg(long)]
    backend: Option<String>,
    /// Run the unfused program (one kernel per operation), for comparison.
    #[arg(long)]
    no_fuse: bool,
    /// Benchmark instead: batch 32 x 98 tokens and 1 x 16 (the same ids as scripts/minilm-torch-bench.py),
    /// on the GPU fused and unfused and on the CPU executor; prints compile time, kernels, peak device memory
    /// and the median latency of `--runs` runs after a warm-up run, and the CPU's time next to the GPU's.
    #[arg(long)]
    bench: bool,
    /// Timed runs per configuration for `--bench`.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Embed the sentences this many times, one batch each, and print each batch's latency on stderr
    /// (the first includes what a model pays once).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Batches for `--bench` as BxS (default: 32x98 and 1x16).
    #[arg(long = "batch", value_parser = parse_batch)]
    batches: Vec<(usize, usize)>,
}

fn parse_batch(text: &str) -> Result<(usize, usize), String> {
    let (b, s) = text.split_once('x').ok_or("expected BxS, e.g. 32x98")?;
    let b: usize = b.parse().map_err(|_| format!("{b:?} is not a batch size"))?;
    let s: usize = s.parse().map_err(|_| format!("{s:?} is not a token count"))?;
    if b == 0 || !(2..=tdsl_minilm::MAX_TOKENS).contains(&s) {
        return Err(format!("need B >= 1 and 2 <= S <= {}", tdsl_minilm::MAX_TOKENS));
    }
    Ok((b, s))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let backend = match args.backend.as_deref() {
        Some(name) => Some(
            BackendChoice::from_name(name)
                .ok_or_else(|| format!("--backend {name:?} is not a backend; use vulkan, gl or any"))?,
        ),
        None => None,
    };
    let options = GpuOptions { backend, ..GpuOptions::default() };
    // Only `--device gpu` needs a Vulkan driver set up; auto runs the CPU executor where there is no GPU.
    let setup = if args.device == DeviceChoice::Gpu { Setup::Gpu } else { Setup::Cpu };
    let mut fetched = false;
    let dir = match &args.model_dir {
        Some(dir) => dir.clone(),
        None if is_complete(&model_dir()) => model_dir(),
        None => {
            fetched = true;
            fetch(setup).map_err(|e| e.to_string())?
        }
    };
    if args.bench {
        let batches = if args.batches.is_empty() { vec![(32, 98), (1, 16)] } else { args.batches.clone() };
        return bench(&dir, args.device, &options, &batches, args.runs.max(1));
    }
    let opened = match Executor::open(args.device, &options, None) {
        // `--device gpu` and no adapter on a machine not yet set up: install the driver (`scripts/setup.sh`)
        // and try once more.
        Err(DeviceError::Gpu(GpuError::NoAdapter { .. }))
            if args.device == DeviceChoice::Gpu && args.model_dir.is_none() && !fetched =>
        {
            fetch(Setup::Gpu).map_err(|e| e.to_string())?;
            Executor::open(args.device, &options, None)
        }
        opened => opened,
    }
    .map_err(|e| e.to_string())?;
    eprintln!("note: {}", opened.note);
    let start = Instant::now();
    let encoder = Encoder::load(&dir, &opened.executor, !args.no_fuse).map_err(|e| e.to_string())?;
    let loaded = start.elapsed();
    let sentences: Vec<&str> = if args.sentences.is_empty() {
        DEFAULT_SENTENCES.to_vec()
    } else {
        args.sentences.iter().map(String::as_str).collect()
    };
    let start = Instant::now();
    let mut embeddings = encoder.embed(&sentences).map_err(|e| e.to_string())?;
    if args.repeat > 1 {
        let mut times = vec![start.elapsed().as_secs_f64() * 1e3];
        for _ in 1..args.repeat {
            let batch = Instant::now();
            embeddings = encoder.embed(&sentences).map_err(|e| e.to_string())?;
            times.push(batch.elapsed().as_secs_f64() * 1e3);
        }
        let mut rest = times[1..].to_vec();
        rest.sort_by(f64::total_cmp);
        eprintln!(
            "note: {} batches of {} sentence(s): first {:.1} ms, then median {:.1} ms (min {:.1}, max {:.1})",
            args.repeat,
            sentences.len(),
            times[0],
            rest[rest.len() / 2],
            rest[0],
            rest[rest.len() - 1]
        );
    }
    eprintln!(
        "note: {} sentence(s) on {}: compiled {} kernels and loaded the weights in {:.2} s, embedded in {:.2} s",
        sentences.len(),
        encoder.executor().describe(),
        encoder.kernels(),
        loaded.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    let mut out = std::io::stdout().lock();
    let text = if args.json { json(&embeddings) } else { matrix(&sentences, &embeddings) };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

/// `--bench`: per batch shape, on the GPU the fused and the unfused program, each loaded once (pipelines,
/// weights on the device), its inputs staged (`Model::prepare`), run once to warm up, then `runs` times;
/// latency is the median run (dispatch to finished, no upload or download). On the CPU executor the fused
/// program (compiled for the `cpu` profile), loaded once, run once to warm up, then `runs` times; latency is
/// the median `run` (inputs in, outputs out), with its GFLOP/s (the kernels' arithmetic as `tdslc explain`
/// counts it) against a plain gemm of its largest matmul timed in the same run. `load` is compiling the model, opening the tokenizer and weights
/// and uploading (decoding) them; `prepare` is input uploads, buffers and the warm-up run. `device` says which
/// executors run: auto both (the GPU when an adapter opens, lavapipe included), gpu or cpu only one.
fn bench(
    dir: &std::path::Path,
    device: DeviceChoice,
    options: &GpuOptions,
    batches: &[(usize, usize)],
    runs: usize,
) -> Result<(), String> {
    let gpu = match device {
        DeviceChoice::Cpu => None,
        DeviceChoice::Gpu => Some(Gpu::new(options).map_err(|e| e.to_string())?),
        DeviceChoice::Auto => match Gpu::new(options) {
            Ok(gpu) => Some(gpu),
            Err(e) => {
                eprintln!("note: no GPU path to time ({e}); timing the CPU executor alone");
                None
            }
        },
    };
    let cpu = match device {
        DeviceChoice::Gpu => None,
        _ => Some(Cpu::new(None).map_err(|e| e.to_string())?),
    };
    let mut encoders = Vec::new();
    if let Some(gpu) = &gpu {
        for fuse in [true, false] {
            let start = Instant::now();
            let encoder = Encoder::load(dir, gpu, fuse).map_err(|e| e.to_string())?;
            encoders.push((if fuse { "fused" } else { "unfused" }, encoder, start.elapsed().as_secs_f64()));
        }
        println!("GPU: {}", gpu.describe());
    }
    if let Some(cpu) = &cpu {
        let start = Instant::now();
        let encoder = Encoder::load(dir, cpu, true).map_err(|e| e.to_string())?;
        encoders.push(("cpu", encoder, start.elapsed().as_secs_f64()));
        println!("CPU executor: {}", cpu.describe());
    }
    println!("minilm, median of {runs} run(s) after a warm-up");
    println!(
        "{:<8} {:<8} {:>8} {:>12} {:>12} {:>12} {:>12}",
        "batch", "program", "kernels", "load s", "prepare s", "peak MiB", "latency ms"
    );
    for &(b, s) in batches {
        let batch = tdsl_minilm::bench_batch(b, s);
        let mut latencies: Vec<(&str, f64)> = Vec::new();
        for (label, encoder, compile) in &encoders {
            let start = Instant::now();
            let mut model = encoder.model();
            let mut times = Vec::with_capacity(runs);
            let (launches, peak) = match &mut *model {
                Loaded::Gpu(model) => {
                    let inputs: Vec<Input> = batch.inputs.iter().map(Input::Host).collect();
                    let prepared = model.prepare(&inputs).map_err(|e| e.to_string())?;
                    prepared.run().map_err(|e| e.to_string())?;
                    let prepare = start.elapsed().as_secs_f64();
                    for _ in 0..runs {
                        let start = Instant::now();
                        prepared.run().map_err(|e| e.to_string())?;
                        times.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                    (prepared.dispatches(), Some((prepare, prepared.memory.peak_bytes)))
                }
                Loaded::Cpu(model) => {
                    model.run(&batch.inputs).map_err(|e| e.to_string())?;
                    for _ in 0..runs {
                        let start = Instant::now();
                        model.run(&batch.inputs).map_err(|e| e.to_string())?;
                        times.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                    (model.program().launches.len(), None)
                }
            };
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            latencies.push((label, median));
            let (prepare, peak) = match peak {
                Some((prepare, bytes)) => (format!("{prepare:.2}"), format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))),
                None => ("-".to_string(), "-".to_string()),
            };
            println!(
                "{:<8} {:<8} {:>8} {:>12.2} {:>12} {:>12} {:>12.1}",
                format!("{b}x{s}"),
                label,
                launches,
                compile,
                prepare,
                peak,
                median
            );
        }
        let time = |label: &str| latencies.iter().find(|(l, _)| *l == label).map(|(_, t)| *t);
        if let (Some(fused), Some(unfused)) = (time("fused"), time("unfused")) {
            println!("{:<8} speed-up of fusion on the GPU: {:.2}x", format!("{b}x{s}"), unfused / fused);
        }
        if let (Some(cpu), Some(executor)) = (time("cpu"), &cpu) {
            // The CPU's practical limit, measured now on the same pool size: a plain gemm of the largest
            // matmul at this batch.
            let (flops, largest) = tdsl_minilm::arithmetic(b, s).map_err(|e| e.to_string())?;
            let mut line = format!(
                "{:<8} CPU executor {:.1} GFLOP/s ({:.2} GFLOP in {cpu:.1} ms)",
                format!("{b}x{s}"),
                flops as f64 / cpu / 1e6,
                flops as f64 / 1e9
            );
            if let Some([m, n, k, count]) = largest {
                let gemm = tdsl_compiler::bench::plain_gemm(executor.threads(), [m, n, k, count], runs).as_secs_f64();
                let gemm_gflops = 2.0 * (m * n * k * count) as f64 / gemm / 1e9;
                line.push_str(&format!(
                    "; plain gemm of its largest matmul ({count} x {m}x{k} @ {k}x{n}) {gemm_gflops:.1} GFLOP/s: {:.2} of it",
                    flops as f64 / cpu / 1e6 / gemm_gflops
                ));
            }
            println!("{line}");
        }
        if let (Some(gpu), Some(cpu)) = (time("fused"), time("cpu")) {
            println!(
                "{:<8} CPU executor {cpu:.1} ms, GPU (fused) {gpu:.1} ms: the CPU takes {:.2}x the GPU's time",
                format!("{b}x{s}"),
                cpu / gpu
            );
        }
    }
    Ok(())
}

fn json(embeddings: &[Vec<f32>]) -> String {
    let value = serde_json::json!({ "embeddings": embeddings });
    format!("{value}\n")
}

/// The cosine-similarity matrix, one row per sentence, labelled by index.
fn matrix(sentences: &[&str], embeddings: &[Vec<f32>]) -> String {
    let mut text = String::new();
    for (i, sentence) in sentences.iter().enumerate() {
        text.push_str(&format!("[{i}] {sentence}\n"));
    }
    text.push_str("\ncosine similarity\n     ");
    for j in 0..sentences.len() {
        text.push_str(&format!("{:>7}", format!("[{j}]")));
    }
    text.push('\n');
    for (i, a) in embeddings.iter().enumerate() {
        text.push_str(&format!("{:<5}", format!("[{i}]")));
        for b in embeddings {
            text.push_str(&format!("{:>7.3}", cosine(a, b)));
        }
        text.push('\n');
    }
    text
}
