//! The shared device itself: `Gpu` is `Sync`, so several threads may execute programs on one device at
//! once; each must get its own results. (The other GPU tests take turns through `run_gpu`.)
//! This found that a download can fail with "the staging buffer was never mapped" when another thread's
//! `device.poll` runs the map callback after this thread's poll has returned (`Gpu::download` checks the
//! channel with `try_recv` right after polling).

use std::collections::HashMap;

use super::gpu;
use crate::util::single_graph;
use tdsl_compiler::interp::{self, Tensor};

#[test]
fn concurrent_executions_on_one_device() {
    let graph = single_graph(
        "gpu_threads.tdsl",
        "model m(x: f32[N]) -> (y: f32[N], s: f32[], a: f32[N], b: f32[N], c: f32[], d: f32[N]) {
            y = x * 3.0 + 1.0
            s = sum(x)
            a = x - 1.0
            b = -x
            c = max(x)
            d = x * x
        }",
    );
    let program = crate::util::compile(&graph).expect("compiles").program;
    let device = gpu();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let (graph, program) = (&graph, &program);
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for run in 0..200 {
                        let n = 1 + (t * 200 + run) % 7;
                        let x: Vec<f32> = (0..n).map(|i| (i + t) as f32 * 0.25).collect();
                        let inputs = vec![Tensor::f32(&[n], x)];
                        let want = interp::run(graph, &inputs, &HashMap::new()).expect("interpreter runs");
                        match device.execute(program, &inputs, &HashMap::<String, Tensor>::new()) {
                            Ok(got) if got == want => {}
                            Ok(got) => failures.push(format!("thread {t} run {run}: {got:?}, expected {want:?}")),
                            Err(err) => failures.push(format!("thread {t} run {run}: {err}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker thread")).collect()
    });
    assert!(failures.is_empty(), "{} of 1600 concurrent runs failed:\n{}", failures.len(), failures.join("\n"));
}
