//! Gradients (`grad(y, x)` and `grad(loss)` outputs) against central finite differences on the reference
//! interpreter, for every model of `fixtures/grad/` (one fixture family per group of rules: elementwise,
//! reductions and matmul, layout ops, index notation). proptest draws the seed of the inputs and params
//! (floats in [-1, 1)); the configuration is fixed (a fixed seed, no failure persistence), so CI is
//! deterministic.
//!
//! For an output `d_<input>` (or `grad.<param key>`), every element `x_j` of that input (or param) is moved
//! by `±h` and `(loss(x + h) - loss(x - h)) / 2h` is compared with the gradient's element `g_j`: it passes
//! when `|fd - g_j| <= 1e-2 * (1 + |g_j|) + 1e-3 * |loss|` for `h = 1e-2` or for `h = 2.5e-3` (the
//! interpreter computes in f32, so the difference quotient carries about `1e-7 |loss| / h` of rounding;
//! the second step size is for points that sit within `h` of a kink of relu, abs, max or min, where one of
//! the two quotients straddles it). A wrong rule is off by far more: typically the whole gradient.

use std::collections::HashMap;

use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use tdsl_compiler::interp;
use tdsl_compiler::ir::{Graph, Op};
use tdsl_runtime::{Tensor, TensorData};

use crate::gpu::{seeded_bindings, symbol_values};
use crate::util::{check_path, files, rendered};

/// Sizes of the symbols the fixtures use; any other symbol is 3.
const SIZES: &[(&str, i64)] = &[("B", 2), ("S", 3), ("D", 4), ("K", 5), ("N", 3), ("L", 7), ("C", 2), ("H", 5)];

/// What a gradient output differentiates with respect to.
enum Wrt {
    Input(usize),
    Param(String),
}

fn graphs() -> Vec<Graph> {
    let mut graphs = Vec::new();
    for path in files(std::path::Path::new("fixtures/grad"), "tdsl", false) {
        let checked = check_path(&path);
        assert!(checked.diagnostics.is_empty(), "{}:\n{}", path.display(), rendered(&checked));
        graphs.extend(checked.graphs);
    }
    assert!(graphs.len() >= 12, "expected the gradient fixtures, found {} models", graphs.len());
    graphs
}

/// The gradient outputs of `graph` and what each differentiates with respect to.
fn gradient_outputs(graph: &Graph) -> Vec<(usize, Wrt)> {
    let input_names: Vec<String> = graph
        .inputs
        .iter()
        .map(|&i| match &graph.node(i).op {
            Op::Input { name } => name.clone(),
            _ => unreachable!("inputs are inputs"),
        })
        .collect();
    graph
        .outputs
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            if let Some(key) = o.name.strip_prefix("grad.") {
                return Some((i, Wrt::Param(key.to_string())));
            }
            let name = o.name.strip_prefix("d_")?;
            let input = input_names.iter().position(|n| n == name)?;
            Some((i, Wrt::Input(input)))
        })
        .collect()
}

fn loss(graph: &Graph, inputs: &[Tensor], params: &HashMap<String, Tensor>) -> f64 {
    let at = graph.outputs.iter().position(|o| o.name == "loss").expect("every fixture model has a `loss`");
    let outputs = interp::run(graph, inputs, params).unwrap_or_else(|e| panic!("{}: {e}", graph.name));
    match &outputs[at].data {
        TensorData::F32(v) => v[0] as f64,
        other => panic!("{}: loss is {other:?}", graph.name),
    }
}

fn f32s(t: &Tensor) -> &Vec<f32> {
    match &t.data {
        TensorData::F32(v) => v,
        other => panic!("not f32: {other:?}"),
    }
}

fn f32s_mut(t: &mut Tensor) -> &mut Vec<f32> {
    match &mut t.data {
        TensorData::F32(v) => v,
        other => panic!("not f32: {other:?}"),
    }
}

/// Checks every gradient output of `graph` at the seeded point `seed`.
fn check(graph: &Graph, seed: u64) -> Result<(), TestCaseError> {
    let symbols = symbol_values(graph, SIZES, 3);
    let (inputs, params) = seeded_bindings(graph, &symbols, seed);
    let outputs = interp::run(graph, &inputs, &params).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    let base = loss(graph, &inputs, &params);
    let wrts = gradient_outputs(graph);
    assert!(!wrts.is_empty(), "{}: no gradient outputs", graph.name);
    for (output, wrt) in wrts {
        let grad = f32s(&outputs[output]).clone();
        let at = |h: f64, j: usize| {
            let (mut inputs, mut params) = (inputs.clone(), params.clone());
            let value = match &wrt {
                Wrt::Input(i) => &mut inputs[*i],
                Wrt::Param(key) => params.get_mut(key).expect("a param of the graph"),
            };
            f32s_mut(value)[j] += h as f32;
            loss(graph, &inputs, &params)
        };
        for (j, &g) in grad.iter().enumerate() {
            let g = g as f64;
            let close = |h: f64| {
                let fd = (at(h, j) - at(-h, j)) / (2.0 * h);
                ((fd - g).abs() <= 1e-2 * (1.0 + g.abs()) + 1e-3 * base.abs(), fd)
            };
            let (ok, fd) = close(1e-2);
            if ok || close(2.5e-3).0 {
                continue;
            }
            return Err(TestCaseError::fail(format!(
                "{}: output {} element {j}: gradient {g}, finite difference {fd} (seed {seed})",
                graph.name, graph.outputs[output].name
            )));
        }
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences() {
    let config =
        Config { cases: 3, failure_persistence: None, rng_seed: RngSeed::Fixed(0x9a_d1ff), ..Config::default() };
    let mut failures = Vec::new();
    for graph in graphs() {
        let mut runner = TestRunner::new(config.clone());
        if let Err(e) = runner.run(&proptest::num::u64::ANY, |seed| check(&graph, seed)) {
            failures.push(format!("{}: {e}", graph.name));
        }
    }
    assert!(failures.is_empty(), "gradients differ from finite differences:\n{}", failures.join("\n"));
}

/// Gradients of values the loss does not depend on are zero; the gradient of a value with respect to
/// itself is one.
#[test]
fn unrelated_values_have_zero_gradients() {
    let text = "model m(x: f32[3], y: f32[3]) -> (loss: f32[], d_y: f32[3], d_loss: f32[]) {
        loss = sum(x * x)
        d_y = grad(loss, y)
        d_loss = grad(loss, loss)
    }";
    let checked = crate::util::check_text("zero.tdsl", text);
    assert!(checked.diagnostics.is_empty(), "{}", rendered(&checked));
    let graph = &checked.graphs[0];
    let (inputs, params) = seeded_bindings(graph, &[], 1);
    let out = interp::run(graph, &inputs, &params).expect("runs");
    assert_eq!(f32s(&out[1]), &vec![0.0; 3]);
    assert_eq!(f32s(&out[2]), &vec![1.0]);
}

/// A tensor of a safetensors file (float32 or int32).
pub fn st_tensor(view: &safetensors::tensor::TensorView<'_>) -> Tensor {
    let shape = view.shape().to_vec();
    let bytes = view.data();
    match view.dtype() {
        safetensors::Dtype::F32 => {
            Tensor::f32(&shape, bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        safetensors::Dtype::I32 => {
            Tensor::i32(&shape, bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        other => panic!("unexpected dtype {other:?}"),
    }
}

/// Every output of the models of `fixtures/torch` against PyTorch (scripts/grad-reference.py wrote the
/// inputs, params and expected values), on the interpreter and on the GPU: every param's gradient against
/// `torch.autograd`, and three steps of each optimizer of std/optim against `torch.optim` (`optim.tdsl`). An element passes when `|got - want| <= 1e-5 * max(1, max |want|) + 1e-4 * |want|`: float32
/// accumulated in another order, relative to the gradient's scale.
#[test]
fn torch_gradients_and_optimizer_steps_match() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for path in files(std::path::Path::new("fixtures/torch"), "tdsl", false) {
        let bytes = std::fs::read(path.with_extension("safetensors")).expect("the reference of every model");
        let file = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors file");
        let get =
            |name: &str| st_tensor(&file.tensor(name).unwrap_or_else(|_| panic!("{}: no {name}", path.display())));
        let checked_file = check_path(&path);
        assert!(checked_file.diagnostics.is_empty(), "{}:\n{}", path.display(), rendered(&checked_file));
        let graph = &checked_file.graphs[0];
        let inputs: Vec<Tensor> = graph
            .inputs
            .iter()
            .map(|&i| match &graph.node(i).op {
                Op::Input { name } => get(&format!("input.{name}")),
                _ => unreachable!("inputs are inputs"),
            })
            .collect();
        let params: HashMap<String, Tensor> = graph
            .params
            .iter()
            .map(|&p| match &graph.node(p).op {
                Op::Param { key } => (key.clone(), get(&format!("param.{key}"))),
                _ => unreachable!("params are params"),
            })
            .collect();
        let interp = interp::run(graph, &inputs, &params).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let device = crate::gpu::run_gpu(graph, &inputs, &params).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (side, outputs) in [("interpreter", &interp), ("GPU", &device)] {
            for (output, got) in graph.outputs.iter().zip(outputs) {
                let want = get(&format!("expected.{}", output.name));
                let (got, want) = (f32s(got), f32s(&want));
                assert_eq!(got.len(), want.len(), "{}: {}", path.display(), output.name);
                let scale = want.iter().fold(1.0f32, |m, w| m.max(w.abs()));
                let worst =
                    got.iter().zip(want).map(|(g, w)| ((g - w).abs() - 1e-4 * w.abs()) / scale).fold(0.0f32, f32::max);
                checked += 1;
                if worst > 1e-5 {
                    failures.push(format!(
                        "{} ({side}): {}: off by {worst:e} of its scale {scale}",
                        path.display(),
                        output.name
                    ));
                }
            }
        }
    }
    assert!(checked >= 2 * (4 + 8 + 16 + 37 + 11), "compared {checked} outputs");
    assert!(failures.is_empty(), "outputs differ from PyTorch's:\n{}", failures.join("\n"));
}
