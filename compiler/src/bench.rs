//! `tdslc bench`: each model run fused and unfused on the current device in the same process, with the same
//! seeded inputs and params, so the printed ratio compares like with like. For each program: the kernel
//! counts, the median wall time of one forward pass with the fastest and slowest pass (submit to completion,
//! after a warm-up run; pipelines and uploads are outside the timing), the speed-up of the medians, and the
//! device memory with buffer sharing. Also checks
//! that the two agree (within 1e-3 relative), so a fast wrong answer is reported, not celebrated.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tdsl_runtime::{Gpu, Tensor};

use crate::codegen::{self, Options};
use crate::ir::{Graph, Op};
use crate::random::seeded_tensor;

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
pub fn measure(gpu: &Gpu, name: &str, graph: &Graph, sizes: &[i64], repeat: usize, seed: u64) -> Result<Measurement, String> {
    let env = |s: crate::dim::SymId| sizes[s.0 as usize];
    let shape_of = |id: crate::ir::NodeId| -> Result<Vec<usize>, String> {
        graph
            .node(id)
            .ty
            .shape
            .iter()
            .map(|d| d.eval(&env).and_then(|v| usize::try_from(v).ok()).ok_or_else(|| "a dimension overflows".to_string()))
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
    let mut results = Vec::new();
    for fuse in [false, true] {
        let compiled = codegen::compile_with(graph, Options { fuse }).map_err(|e| e.to_string())?;
        let prepared = gpu.prepare(&compiled.program, &inputs, &params).map_err(|e| e.to_string())?;
        prepared.run().map_err(|e| e.to_string())?;
        let mut times = Vec::with_capacity(repeat);
        for _ in 0..repeat.max(1) {
            let start = Instant::now();
            prepared.run().map_err(|e| e.to_string())?;
            times.push(start.elapsed());
        }
        times.sort();
        let outputs = prepared.outputs().map_err(|e| e.to_string())?;
        let range = (times[0], times[times.len() - 1]);
        results.push((compiled.kernels.len(), times[times.len() / 2], prepared.memory.peak_bytes, outputs, range));
    }
    let (unfused, fused) = (&results[0], &results[1]);
    for (a, b) in unfused.3.iter().zip(&fused.3) {
        let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f64::max);
        if worst > 1e-3 || a.len() != b.len() {
            return Err(format!("{name}: fused and unfused results differ (largest relative difference {worst:e})"));
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

/// The table `tdslc bench` prints.
pub fn table(device: &str, rows: &[Measurement]) -> String {
    let mut out = format!("device: {device}\n");
    out.push_str(&format!(
        "{:<28} {:>8} {:>8} {:>26} {:>26} {:>8} {:>12} {:>12}\n",
        "program", "kernels", "fused", "unfused ms [min, max]", "fused ms [min, max]", "speedup", "mem unfused", "mem fused"
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
