//! `tdslc bench`: each model run fused and unfused on the current device in the same process, with the same
//! seeded inputs and params, so the printed ratio compares like with like. For each program: the kernel
//! counts, the median wall time of one forward pass with the fastest and slowest pass (submit to completion,
//! after a warm-up run; pipelines and uploads are outside the timing), the speed-up of the medians, and the
//! device memory with buffer sharing. Also checks
//! that the two agree (within 1e-3 relative), so a fast wrong answer is reported, not celebrated. The
//! profile of the fused program also runs it on the CPU executor (checked against the GPU's outputs the same
//! way) and prints its time and GFLOP/s beside a plain `gemm` of the program's largest matmul, timed in the
//! same run on as many threads: the ceiling the executor's matmuls aim at.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tdsl_runtime::gpu::median;
use tdsl_runtime::{Gpu, Input, Prepared, Tensor, Timing};

use crate::codegen::Target;
use crate::ir::{Graph, Op};
use crate::pipeline::{self, CompileError, Options};
use crate::random::seeded_tensor;

/// Why a benchmark or tuning run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Exec(#[from] tdsl_runtime::ExecError),
    #[error(transparent)]
    Explain(#[from] crate::explain::ExplainError),
    #[error("a dimension of `{node}` overflows at these sizes")]
    Size { node: String },
    #[error("{name}: fused and unfused results differ (largest relative difference {worst:e})")]
    Mismatch { name: String, worst: f64 },
    #[error("the CPU executor cannot start: {0}")]
    Cpu(String),
    #[error("tile {}x{} changes the kernels of {model}", .tile.0, .tile.1)]
    TileChangesKernels { tile: (u32, u32), model: String },
}

/// One measured program.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub name: String,
    pub kernels_unfused: usize,
    pub kernels_fused: usize,
    /// Median time of one forward pass.
    pub unfused: Duration,
    pub fused: Duration,
    /// Fastest and slowest timed pass, so noisy devices show their spread.
    pub unfused_range: (Duration, Duration),
    pub fused_range: (Duration, Duration),
    pub memory_unfused: u64,
    pub memory_fused: u64,
}

impl Measurement {
    pub fn speedup(&self) -> f64 {
        self.unfused.as_secs_f64() / self.fused.as_secs_f64().max(1e-12)
    }
}

/// The source of a model applying `k` elementwise ops to an `f32[N]` input (alternating `* 1.0001`, `+ 0.5`,
/// `relu`, `- 0.25`), for the chain benchmark.
pub fn chain_source(k: usize) -> String {
    let mut body = String::new();
    for i in 0..k {
        let prev = if i == 0 { "x".to_string() } else { format!("t{}", i - 1) };
        let expr = match i % 4 {
            0 => format!("{prev} * 1.0001"),
            1 => format!("{prev} + 0.5"),
            2 => format!("relu({prev})"),
            _ => format!("{prev} - 0.25"),
        };
        body.push_str(&format!("    t{i} = {expr}\n"));
    }
    format!("model chain{k}(x: f32[N]) -> (y: f32[N]) {{\n{body}    y = t{}\n}}\n", k - 1)
}

/// Runs `graph` fused and unfused `repeat` times each (after one warm-up run) with inputs and params seeded
/// by `seed` and symbol `i` = `sizes[i]`.
pub fn measure(
    gpu: &Gpu,
    target: Target,
    name: &str,
    graph: &Graph,
    sizes: &[i64],
    repeat: usize,
    seed: u64,
) -> Result<Measurement, BenchError> {
    let (inputs, params) = seeded_data(graph, sizes, seed)?;
    let mut results = Vec::new();
    for fuse in [false, true] {
        let compiled = pipeline::compile_graph(graph, &Options { fuse, target, ..Options::default() })?;
        let mut model = gpu.load(&compiled.program, &params)?;
        let prepared = model.prepare(&host_inputs(&inputs))?;
        prepared.run()?;
        let times = run_times(&prepared, repeat)?;
        let outputs = prepared.outputs()?;
        let range = (times[0], times[times.len() - 1]);
        results.push((compiled.kernels.len(), times[times.len() / 2], prepared.memory.peak_bytes, outputs, range));
    }
    let (unfused, fused) = (&results[0], &results[1]);
    for (a, b) in unfused.3.iter().zip(&fused.3) {
        let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f64::max);
        if worst > 1e-3 || a.len() != b.len() {
            return Err(BenchError::Mismatch { name: name.to_string(), worst });
        }
    }
    Ok(Measurement {
        name: name.to_string(),
        kernels_unfused: unfused.0,
        kernels_fused: fused.0,
        unfused: unfused.1,
        fused: fused.1,
        unfused_range: unfused.4,
        fused_range: fused.4,
        memory_unfused: unfused.2,
        memory_fused: fused.2,
    })
}

/// Seeded inputs (in signature order) and params for `graph` with symbol `i` = `sizes[i]`.
pub fn seeded_data(
    graph: &Graph,
    sizes: &[i64],
    seed: u64,
) -> Result<(Vec<Tensor>, HashMap<String, Tensor>), BenchError> {
    let env = |s: crate::dim::SymId| sizes[s.0 as usize];
    let shape_of = |id: crate::ir::NodeId| -> Result<Vec<usize>, BenchError> {
        graph
            .node(id)
            .ty
            .shape
            .iter()
            .map(|d| {
                d.eval(&env)
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| BenchError::Size { node: graph.node(id).op.name().to_string() })
            })
            .collect()
    };
    let mut inputs = Vec::new();
    for &id in &graph.inputs {
        if let Op::Input { name } = &graph.node(id).op {
            inputs.push(seeded_tensor(name, graph.node(id).ty.dtype, &shape_of(id)?, seed));
        }
    }
    let mut params: HashMap<String, Tensor> = HashMap::new();
    for &id in &graph.params {
        if let Op::Param { key } = &graph.node(id).op {
            params.insert(key.clone(), seeded_tensor(key, graph.node(id).ty.dtype, &shape_of(id)?, seed));
        }
    }
    Ok((inputs, params))
}

/// One kernel's measured time with the work it does (from `explain`).
#[derive(Clone, Debug)]
pub struct KernelTime {
    pub name: String,
    pub time: Duration,
    /// Device bytes of the tensors it reads plus those it writes.
    pub bytes: u64,
    pub flops: u64,
}

impl KernelTime {
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.time.as_secs_f64().max(1e-12) / 1e9
    }
    pub fn gflops(&self) -> f64 {
        self.flops as f64 / self.time.as_secs_f64().max(1e-12) / 1e9
    }
}

/// Every kernel of one fused program timed on its own, plus the whole forward pass through the runtime
/// and through raw wgpu calls.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub timing: Timing,
    pub kernels: Vec<KernelTime>,
    /// Median wall time of `Prepared::run` (submit, wait, status check).
    pub run: Duration,
    /// Median wall time of the same dispatches recorded with plain wgpu calls.
    pub raw: Duration,
    /// The same program on the CPU executor.
    pub cpu: CpuTime,
}

/// One program on the CPU executor (`tdsl_runtime::Cpu`, `TDSL_CPU_THREADS` threads, else every core),
/// next to a plain `gemm` of its largest contraction measured in the same run on as many threads.
#[derive(Clone, Debug)]
pub struct CpuTime {
    /// Worker threads.
    pub threads: usize,
    /// Median wall time of one forward pass (inputs in, outputs out).
    pub run: Duration,
    /// Fastest and slowest pass.
    pub range: (Duration, Duration),
    /// Arithmetic operations of the program (the kernels' `flops`).
    pub flops: u64,
    /// The largest contraction (M, N, K and its batch count), with the median time of its matmul(s) as plain
    /// `gemm` calls; `None` without a matmul.
    pub gemm: Option<([usize; 4], Duration)>,
}

impl CpuTime {
    /// The program's GFLOP/s on the CPU executor.
    pub fn gflops(&self) -> f64 {
        self.flops as f64 / self.run.as_secs_f64().max(1e-12) / 1e9
    }

    /// The plain gemm's GFLOP/s.
    pub fn gemm_gflops(&self) -> Option<f64> {
        let ([m, n, k, b], time) = self.gemm?;
        Some(2.0 * (m * n * k * b) as f64 / time.as_secs_f64().max(1e-12) / 1e9)
    }
}

impl Profile {
    pub fn kernel_total(&self) -> Duration {
        self.kernels.iter().map(|k| k.time).sum()
    }
}

/// Profiles the fused (or, with `fuse` off, unfused) program of `graph`: each kernel's median time over
/// `repeat` runs (`Prepared::profile`), and the median wall time of whole runs through the runtime and raw.
#[allow(clippy::too_many_arguments)]
pub fn profile(
    gpu: &Gpu,
    target: Target,
    name: &str,
    graph: &Graph,
    sizes: &[i64],
    repeat: usize,
    seed: u64,
    fuse: bool,
) -> Result<Profile, BenchError> {
    let (inputs, params) = seeded_data(graph, sizes, seed)?;
    let compiled = pipeline::compile_graph(graph, &Options { fuse, target, ..Options::default() })?;
    let report = crate::explain::explain(&compiled, sizes, fuse)?;
    let mut model = gpu.load(&compiled.program, &params)?;
    let prepared = model.prepare(&host_inputs(&inputs))?;
    prepared.run()?;
    let (launches, times) = prepared.profile(repeat)?;
    let kernels = launches
        .iter()
        .zip(&times.times)
        .map(|(&launch, &time)| {
            let k = &report.kernels[launch];
            KernelTime { name: k.name.clone(), time, bytes: k.bytes_read + k.bytes_written, flops: k.flops }
        })
        .collect();
    let runs = run_times(&prepared, repeat)?;
    let raw = prepared.time_raw(repeat)?;
    let flops = report.kernels.iter().map(|k| k.flops).sum();
    let cpu = cpu_time(name, &compiled.program, &inputs, &params, &prepared.outputs()?, flops, graph, sizes, repeat)?;
    Ok(Profile { name: name.to_string(), timing: times.timing, kernels, run: median(runs), raw, cpu })
}

/// Times `program` on the CPU executor (one warm-up run, then `repeat`), checks its outputs against the
/// GPU's (`gpu_outputs`, within 1e-3 relative), and times a plain `gemm` of the graph's largest matmul.
#[allow(clippy::too_many_arguments)]
fn cpu_time(
    name: &str,
    program: &tdsl_runtime::Program,
    inputs: &[Tensor],
    params: &HashMap<String, Tensor>,
    gpu_outputs: &[Tensor],
    flops: u64,
    graph: &Graph,
    sizes: &[i64],
    repeat: usize,
) -> Result<CpuTime, BenchError> {
    let cpu = tdsl_runtime::Cpu::new(None).map_err(|e| BenchError::Cpu(e.to_string()))?;
    let mut model = cpu.load(program, params)?;
    let outputs = model.run(inputs)?;
    for (a, b) in outputs.iter().zip(gpu_outputs) {
        let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f64::max);
        if worst > 1e-3 || a.len() != b.len() {
            return Err(BenchError::Mismatch { name: format!("{name} (CPU against GPU)"), worst });
        }
    }
    let mut times = Vec::with_capacity(repeat.max(1));
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        model.run(inputs)?;
        times.push(start.elapsed());
    }
    times.sort();
    let gemm = largest_matmul(graph, sizes).map(|size| (size, plain_gemm(cpu.threads(), size, repeat)));
    Ok(CpuTime {
        threads: cpu.threads(),
        run: times[times.len() / 2],
        range: (times[0], times[times.len() - 1]),
        flops,
        gemm,
    })
}

/// The `[M, N, K, batch]` of the matmul of `graph` with the most arithmetic at `sizes`.
pub fn largest_matmul(graph: &Graph, sizes: &[i64]) -> Option<[usize; 4]> {
    let size = |d: &crate::dim::Dim| {
        d.eval(&|s: crate::dim::SymId| sizes.get(s.0 as usize).copied().unwrap_or(0)).map_or(0, |v| v.max(0) as usize)
    };
    graph
        .nodes
        .iter()
        .filter_map(|(_, node)| {
            let Op::MatMul(a, _) = &node.op else { return None };
            let shape = &node.ty.shape;
            let r = shape.len();
            let k = graph.node(*a).ty.shape.last().map_or(1, size);
            let batch = shape[..r.checked_sub(2)?].iter().map(size).product();
            Some([size(&shape[r - 2]), size(&shape[r - 1]), k, batch])
        })
        .max_by_key(|[m, n, k, b]| m * n * k * b)
}

/// Median time of `repeat` (at least one, after a warm-up) `[M, K] @ [K, N]` products through `gemm` on a
/// pool of `threads`, `batch` of them per product (in parallel over the batch when there are enough, else
/// each split over the pool), like the CPU executor runs a matmul of row-major operands.
pub fn plain_gemm(threads: usize, [m, n, k, batch]: [usize; 4], repeat: usize) -> Duration {
    use rayon::prelude::*;
    let a = vec![0.5f32; batch * m * k];
    let b = vec![0.25f32; batch * k * n];
    let mut c = vec![0.0f32; batch * m * n];
    let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(threads).build() else { return Duration::MAX };
    let one = |i: usize, dst: &mut [f32], parallelism: gemm::Parallelism| {
        let (a, b) = (&a[i * m * k..(i + 1) * m * k], &b[i * k * n..(i + 1) * k * n]);
        // SAFETY: `a` is m x k, `b` k x n and `dst` m x n, all row-major and exactly that long.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    };
    let mut run = || {
        if batch > 1 && batch >= threads {
            c.par_chunks_mut(m * n).enumerate().for_each(|(i, dst)| one(i, dst, gemm::Parallelism::None));
        } else {
            for (i, dst) in c.chunks_mut(m * n).enumerate() {
                one(i, dst, gemm::Parallelism::Rayon(0));
            }
        }
    };
    pool.install(|| {
        run();
        let mut times: Vec<Duration> = (0..repeat.max(1))
            .map(|_| {
                let start = Instant::now();
                run();
                start.elapsed()
            })
            .collect();
        times.sort();
        times[times.len() / 2]
    })
}

/// Wall times of `repeat` (at least one) forward passes of `prepared` (submit to completion), sorted.
fn run_times(prepared: &Prepared, repeat: usize) -> Result<Vec<Duration>, BenchError> {
    let mut times = Vec::with_capacity(repeat.max(1));
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        prepared.run()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times)
}

/// The per-kernel table of `profile`: time, share of the kernels' total, GB/s (and the fraction of the
/// copy bandwidth `copy_gbps`), GFLOP/s.
pub fn profile_table(profile: &Profile, copy_gbps: f64) -> String {
    let total = profile.kernel_total().as_secs_f64().max(1e-12);
    let mut out = format!(
        "{}: {} kernel(s), {:.3} ms in kernels ({} times), run {:.3} ms, raw wgpu {:.3} ms\n",
        profile.name,
        profile.kernels.len(),
        total * 1e3,
        profile.timing.name(),
        profile.run.as_secs_f64() * 1e3,
        profile.raw.as_secs_f64() * 1e3
    );
    out.push_str(&format!(
        "  {:<40} {:>10} {:>7} {:>9} {:>7} {:>9}\n",
        "kernel", "ms", "share", "GB/s", "copy", "GFLOP/s"
    ));
    for k in &profile.kernels {
        out.push_str(&format!(
            "  {:<40} {:>10.3} {:>6.1}% {:>9.2} {:>6.2}x {:>9.2}\n",
            k.name,
            k.time.as_secs_f64() * 1e3,
            100.0 * k.time.as_secs_f64() / total,
            k.gbps(),
            k.gbps() / copy_gbps.max(1e-12),
            k.gflops()
        ));
    }
    let cpu = &profile.cpu;
    out.push_str(&format!(
        "  CPU executor ({} thread(s)): {:.3} ms [{:.3}, {:.3}], {:.2} GFLOP/s",
        cpu.threads,
        cpu.run.as_secs_f64() * 1e3,
        cpu.range.0.as_secs_f64() * 1e3,
        cpu.range.1.as_secs_f64() * 1e3,
        cpu.gflops()
    ));
    if let (Some(([m, n, k, b], time)), Some(gflops)) = (cpu.gemm, cpu.gemm_gflops()) {
        out.push_str(&format!(
            "; plain gemm of its largest matmul ({b} x {m}x{k} @ {k}x{n}): {:.3} ms, {gflops:.2} GFLOP/s",
            time.as_secs_f64() * 1e3
        ));
    }
    out.push('\n');
    out
}

/// The dispatch-overhead reference: a program of `launches` tiny kernels (an unfused elementwise chain over
/// 64 elements) run through the runtime and through raw wgpu calls; returns (runtime, raw) median wall
/// time per launch.
pub fn dispatch_overhead(
    gpu: &Gpu,
    target: Target,
    chain: &Graph,
    repeat: usize,
) -> Result<(Duration, Duration, usize), BenchError> {
    let sizes = vec![64; chain.symbols.len()];
    let (inputs, params) = seeded_data(chain, &sizes, 0)?;
    let compiled = pipeline::compile_graph(chain, &Options { fuse: false, target, ..Options::default() })?;
    let mut model = gpu.load(&compiled.program, &params)?;
    let prepared = model.prepare(&host_inputs(&inputs))?;
    prepared.run()?;
    let run = median(run_times(&prepared, repeat)?);
    let raw = prepared.time_raw(repeat)?;
    let n = prepared.dispatches().max(1);
    Ok((run / n as u32, raw / n as u32, n))
}

/// The table `tdslc bench` prints.
pub fn table(rows: &[Measurement]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<28} {:>8} {:>8} {:>26} {:>26} {:>8} {:>12} {:>12}\n",
        "program",
        "kernels",
        "fused",
        "unfused ms [min, max]",
        "fused ms [min, max]",
        "speedup",
        "mem unfused",
        "mem fused"
    ));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let timing = |median: Duration, (low, high): (Duration, Duration)| {
        format!("{:.3} [{:.3}, {:.3}]", ms(median), ms(low), ms(high))
    };
    for m in rows {
        out.push_str(&format!(
            "{:<28} {:>8} {:>8} {:>26} {:>26} {:>7.2}x {:>12} {:>12}\n",
            m.name,
            m.kernels_unfused,
            m.kernels_fused,
            timing(m.unfused, m.unfused_range),
            timing(m.fused, m.fused_range),
            m.speedup(),
            crate::explain::human(m.memory_unfused),
            crate::explain::human(m.memory_fused)
        ));
    }
    out
}

/// Tile shapes `tdslc tune` tries for every tiled contraction.
pub const TILE_CANDIDATES: [(u32, u32); 5] = [(2, 4), (4, 4), (4, 8), (8, 4), (8, 8)];

/// One tuned kernel: its key, its time with the profile's own tile, and the fastest tile with its time.
#[derive(Clone, Debug)]
pub struct Tuned {
    pub name: String,
    pub key: String,
    pub default: Duration,
    pub tile: (u32, u32),
    pub best: Duration,
}

/// Times every tiled contraction of `graph`'s fused program (symbol `i` = `sizes[i]`) with each tile of
/// `TILE_CANDIDATES` on `gpu` (median of `repeat` per kernel) and returns the fastest tile per kernel, keyed
/// by the kernel's WGSL under `target`'s own schedule (`Tuning::key`).
pub fn tune(gpu: &Gpu, target: Target, graph: &Graph, sizes: &[i64], repeat: usize) -> Result<Vec<Tuned>, BenchError> {
    use crate::codegen::tuning::Tuning;
    let (inputs, params) = seeded_data(graph, sizes, 0)?;
    let baseline = pipeline::compile_graph(graph, &Options { target, ..Options::default() })?;
    let tiled: Vec<usize> =
        (0..baseline.kernels.len()).filter(|&i| baseline.grouping.schedules[i].tile_plan().is_some()).collect();
    let mut times: Vec<Vec<((u32, u32), Duration)>> = vec![Vec::new(); baseline.kernels.len()];
    let mut candidates = TILE_CANDIDATES.to_vec();
    if !candidates.contains(&target.tile) {
        candidates.push(target.tile);
    }
    // Each candidate is the baseline with every tiled contraction's schedule retiled (`codegen::lower` with a tuning).
    let keys: Vec<String> = tiled.iter().map(|&i| Tuning::key(baseline.kernels[i].wgsl())).collect();
    for tile in candidates {
        let tuning = Tuning { tiles: keys.iter().map(|k| (k.clone(), tile)).collect(), ..Tuning::default() };
        let compiled = pipeline::compile_graph(graph, &Options { target, tuning, ..Options::default() })?;
        if compiled.kernels.len() != baseline.kernels.len() {
            return Err(BenchError::TileChangesKernels { tile, model: graph.name.clone() });
        }
        let mut model = gpu.load(&compiled.program, &params)?;
        let prepared = model.prepare(&host_inputs(&inputs))?;
        prepared.run()?;
        let (launches, measured) = prepared.profile(repeat)?;
        for (&launch, &time) in launches.iter().zip(&measured.times) {
            times[launch].push((tile, time));
        }
    }
    Ok(tiled
        .into_iter()
        .filter_map(|i| {
            let default = times[i].iter().find(|(t, _)| *t == target.tile)?.1;
            let &(tile, best) = times[i].iter().min_by_key(|(_, t)| *t)?;
            Some(Tuned {
                name: baseline.kernels[i].name.clone(),
                key: Tuning::key(baseline.kernels[i].wgsl()),
                default,
                tile,
                best,
            })
        })
        .collect())
}

/// `inputs` as host inputs of a call.
fn host_inputs(inputs: &[Tensor]) -> Vec<Input<'_>> {
    inputs.iter().map(Input::Host).collect()
}
