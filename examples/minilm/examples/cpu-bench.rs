//! MiniLM on the CPU executor: loads minilm.tdsl with its real weights on `Cpu` and times the forward pass on
//! the benchmark batches of `scripts/minilm-torch-bench.py` (32 x 98 and 1 x 16 tokens), printing medians.
//!
//!     TDSL_CPU_THREADS=2 cargo run --release -p tdsl-minilm --example cpu-bench -- [runs] [--profile]
//!
//! With `--profile` it also times each launch on its own and prints the slowest.
//! Compare with `scripts/minilm-torch-bench.py --threads 2` (PyTorch CPU, the same ids).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let profile = args.iter().any(|a| a == "--profile");
    let runs: usize = args.iter().find(|a| *a != "--profile").map(|a| a.parse()).transpose()?.unwrap_or(10);
    let dir = tdsl_minilm::model_dir();
    let report = tdsl_minilm::cpu_bench(&dir, &[(32, 98), (1, 16)], runs, profile)?;
    println!("{report}");
    Ok(())
}
