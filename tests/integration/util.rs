//! Shared helpers: checking a file or a source string, rendering diagnostics without colour, and running a
//! model on the reference interpreter with seeded inputs.

use std::collections::HashMap;
use std::path::Path;
use tdsl_compiler::codegen::{Compiled, Target};
use tdsl_compiler::driver::Root;
use tdsl_compiler::interp::Tensor;
use tdsl_compiler::ir::Graph;
use tdsl_compiler::pipeline::{self, Checked, CompileError, Options};
use tdsl_compiler::render;

/// Every file under `dir` whose name ends in `.{extension}`, sorted; with `recursive`, in subdirectories too.
/// Paths are relative as `dir` is (the tests run in `tests/`, so snapshot names do not depend on the machine).
pub fn files(dir: &Path, extension: &str, recursive: bool) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, extension: &str, recursive: bool, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
            if path.is_dir() {
                if recursive {
                    walk(&path, extension, recursive, out);
                }
            } else if path.extension().is_some_and(|e| e == extension) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, extension, recursive, &mut out);
    out.sort();
    out
}

/// The seeded value of param `key` (`seeded_tensor`: floats uniform in [-1, 1)), except that a batch norm's
/// `running_var` is `|u| + 0.5`: a variance is never negative, and a negative one makes `rsqrt` NaN, which
/// would leave nothing to compare (examples/resnet18.tdsl).
pub fn seeded_param(key: &str, dtype: tdsl_compiler::ir::DType, shape: &[usize], seed: u64) -> Tensor {
    let mut t = tdsl_compiler::random::seeded_tensor(key, dtype, shape, seed);
    if key.ends_with("running_var")
        && let tdsl_runtime::TensorData::F32(values) = &mut t.data
    {
        values.iter_mut().for_each(|v| *v = v.abs() + 0.5);
    }
    t
}

/// Checks a file given relative to the `tests/` directory (so snapshot paths do not depend on the machine).
pub fn check_path(path: &Path) -> Checked {
    pipeline::check(Root::Path(path))
}

/// Checks source text as if it were a file named `name`.
pub fn check_text(name: &str, text: &str) -> Checked {
    pipeline::check(Root::Text { name, text })
}

/// Pipeline options for tests: verification after every stage is always on, whatever the environment.
pub fn options(fuse: bool, target: Target) -> Options {
    Options { fuse, target, verify: true, ..Options::default() }
}

/// Compiles `graph` through the pipeline with `options` (verification forced on).
pub fn compile_with(graph: &Graph, options: &Options) -> Result<Compiled, CompileError> {
    pipeline::compile_graph(graph, &Options { verify: true, ..options.clone() })
}

/// Compiles `graph` with the default profile and fusion, verifying after every stage.
pub fn compile(graph: &Graph) -> Result<Compiled, CompileError> {
    compile_with(graph, &options(true, Target::default()))
}

/// The graph after each IR pass, in order, each verified.
pub fn optimize_stages(graph: &Graph) -> Result<Vec<(&'static str, Graph)>, CompileError> {
    let mut stages = Vec::new();
    pipeline::optimize(graph, &options(true, Target::default()), &mut |pass, g| stages.push((pass.name, g.clone())))?;
    Ok(stages)
}

/// The diagnostics rendered as the CLI prints them, without colour.
pub fn rendered(checked: &Checked) -> String {
    render::render(&checked.diagnostics, &checked.program.sources, false)
}

/// Asserts a clean check and returns the only model's graph.
pub fn single_graph(name: &str, text: &str) -> Graph {
    let checked = check_text(name, text);
    assert!(checked.diagnostics.is_empty(), "unexpected diagnostics:\n{}", rendered(&checked));
    assert_eq!(checked.graphs.len(), 1, "expected one model");
    let graph = checked.graphs.into_iter().next().expect("one graph");
    tdsl_compiler::ir::verify(&graph).expect("verifier accepts the checked graph");
    graph
}

/// Runs `graph` on the interpreter with named inputs and params.
pub fn run(graph: &Graph, inputs: Vec<Tensor>, params: &[(&str, Tensor)]) -> Vec<Tensor> {
    let params: HashMap<String, Tensor> = params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    tdsl_compiler::interp::run(graph, &inputs, &params).expect("interpreter runs")
}

/// `a` and `b` agree elementwise within `atol + rtol * |b|`.
pub fn assert_close(a: &[f64], b: &[f64], atol: f64, rtol: f64) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= atol + rtol * y.abs(), "element {i}: {x} vs {y} (atol {atol}, rtol {rtol})");
    }
}

/// Bit-identical outputs (NaN equal to NaN).
pub fn same_bits(a: &[tdsl_compiler::interp::Tensor], b: &[tdsl_compiler::interp::Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.dtype == y.dtype
                && x.shape == y.shape
                && x.to_f64_vec()
                    .iter()
                    .zip(y.to_f64_vec())
                    .all(|(p, q)| p.to_bits() == q.to_bits() || p.is_nan() && q.is_nan())
        })
}
