//! `minilm`: sentence embeddings with all-MiniLM-L6-v2 written in tdsl. Sets the machine up on first use
//! (`scripts/setup.sh`: the model's files and, when missing, a Vulkan driver), compiles `minilm.tdsl`, runs the batch on the GPU and prints the cosine
//! similarity matrix of the sentences, or with `--json` their embeddings.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use tdsl_minilm::{Encoder, cosine, fetch, is_complete, model_dir};
use tdsl_runtime::{BackendChoice, Gpu, GpuError, GpuOptions, Input};

/// Sentences used when none are given: two paraphrase pairs and an unrelated sentence.
const DEFAULT_SENTENCES: [&str; 5] = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The new movie is awesome.",
    "The new film is so great.",
    "The bank raised its interest rates.",
];

#[derive(Parser)]
#[command(name = "minilm", about = "Sentence embeddings with all-MiniLM-L6-v2, compiled by tdsl and run on the GPU")]
struct Args {
    /// Sentences to embed (default: a few examples).
    sentences: Vec<String>,
    /// Print `{"embeddings": [[...384 floats...], ...]}` in input order instead of the similarity matrix.
    #[arg(long)]
    json: bool,
    /// Where the model's files are (default: $TDSL_MINILM_DIR or ~/.cache/tdsl/minilm, fetched if missing).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// GPU backend: vulkan (default), gl or any.
    #[arg(long)]
    backend: Option<String>,
    /// Run the unfused program (one kernel per operation), for comparison.
    #[arg(long)]
    no_fuse: bool,
    /// Benchmark instead: batch 32 x 98 tokens and 1 x 16, fused and unfused (the same ids as
    /// scripts/minilm-torch-bench.py); prints compile time, kernels, peak device memory and the median
    /// latency of `--runs` runs after a warm-up run.
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
    let mut fetched = false;
    let dir = match &args.model_dir {
        Some(dir) => dir.clone(),
        None if is_complete(&model_dir()) => model_dir(),
        None => {
            fetched = true;
            fetch().map_err(|e| e.to_string())?
        }
    };
    let backend = match args.backend.as_deref() {
        Some(name) => Some(
            BackendChoice::from_name(name)
                .ok_or_else(|| format!("--backend {name:?} is not a backend; use vulkan, gl or any"))?,
        ),
        None => None,
    };
    let options = GpuOptions { backend, ..GpuOptions::default() };
    let gpu = match Gpu::new(&options) {
        // No adapter on a machine not yet set up: install the driver (`scripts/setup.sh`) and try once more.
        Err(GpuError::NoAdapter { .. }) if args.model_dir.is_none() && !fetched => {
            fetch().map_err(|e| e.to_string())?;
            Gpu::new(&options)
        }
        gpu => gpu,
    }
    .map_err(|e| e.to_string())?;
    if args.bench {
        let batches = if args.batches.is_empty() { vec![(32, 98), (1, 16)] } else { args.batches.clone() };
        return bench(&dir, gpu, &batches, args.runs.max(1));
    }
    let start = Instant::now();
    let encoder = Encoder::load(&dir, gpu, !args.no_fuse).map_err(|e| e.to_string())?;
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
        encoder.gpu().describe(),
        encoder.kernels(),
        loaded.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    let mut out = std::io::stdout().lock();
    let text = if args.json { json(&embeddings) } else { matrix(&sentences, &embeddings) };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

/// `--bench`: per batch shape, the fused and the unfused program, each loaded once (pipelines, weights on
/// the device), its inputs staged (`Model::prepare`), run once to warm up, then `runs` times; latency is the
/// median run (dispatch to finished, no upload or download). `load` is compiling the model, opening the
/// tokenizer and weights and uploading them; `prepare` is input uploads, buffers and the warm-up run.
fn bench(dir: &std::path::Path, gpu: Gpu, batches: &[(usize, usize)], runs: usize) -> Result<(), String> {
    let mut encoders = Vec::new();
    let mut gpu = Some(gpu);
    for fuse in [true, false] {
        let start = Instant::now();
        let device = match gpu.take() {
            Some(g) => g,
            None => Gpu::new(&GpuOptions::default()).map_err(|e| e.to_string())?,
        };
        let encoder = Encoder::load(dir, device, fuse).map_err(|e| e.to_string())?;
        encoders.push((fuse, encoder, start.elapsed().as_secs_f64()));
    }
    println!("minilm on {}, median of {runs} run(s) after a warm-up", encoders[0].1.gpu().describe());
    println!(
        "{:<8} {:<8} {:>8} {:>12} {:>12} {:>12} {:>12}",
        "batch", "program", "kernels", "load s", "prepare s", "peak MiB", "latency ms"
    );
    for &(b, s) in batches {
        let batch = tdsl_minilm::bench_batch(b, s);
        let mut latencies = Vec::new();
        for (fuse, encoder, compile) in &encoders {
            let start = Instant::now();
            let mut model = encoder.model();
            let inputs: Vec<Input> = batch.inputs.iter().map(Input::Host).collect();
            let prepared = model.prepare(&inputs).map_err(|e| e.to_string())?;
            prepared.run().map_err(|e| e.to_string())?;
            let prepare = start.elapsed().as_secs_f64();
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                let start = Instant::now();
                prepared.run().map_err(|e| e.to_string())?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            latencies.push(median);
            println!(
                "{:<8} {:<8} {:>8} {:>12.2} {:>12.2} {:>12.1} {:>12.1}",
                format!("{b}x{s}"),
                if *fuse { "fused" } else { "unfused" },
                prepared.dispatches(),
                compile,
                prepare,
                prepared.memory.peak_bytes as f64 / (1024.0 * 1024.0),
                median
            );
        }
        println!("{:<8} speed-up of fusion: {:.2}x", format!("{b}x{s}"), latencies[1] / latencies[0]);
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
