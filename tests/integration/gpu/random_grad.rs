//! proptest: the random programs of `random.rs`, differentiated. Each generated program gets a loss, the
//! sum of its float outputs (each cast to f32), and the gradient of that loss with respect to every float
//! input (`autodiff::grad`, as `grad(loss, x)` would append it); the backward graph must pass the verifier
//! after every optimizer pass with the interpreter's results bit for bit, and the GPU (fused) and the CPU
//! executor must agree with the interpreter on every gradient within `Tol::Scaled`: `1e-3` of the gradient's largest magnitude
//! (at least 1), or `2e-2` when the program computes in f16 (whose every op rounds to an f16 ulp, `2^-10`).
//! Whether the rules are right is `grad.rs`'s question (finite differences, PyTorch); this one is whether
//! backward programs of every shape the generator reaches compile and run as the interpreter says.
//! Cases whose loss or gradients are not finite are skipped. The configuration is fixed (32 cases, a fixed
//! seed, no failure persistence), so CI is deterministic.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError};

use super::random::generate;
use super::{Tol, mismatches, run_cpu, run_gpu_with};
use crate::util::{check_text, optimize_stages, same_bits};
use tdsl_compiler::interp;
use tdsl_compiler::ir::{BinaryOp, DType, Graph, Node, NodeId, Op, Output, ReduceOp, TensorType};
use tdsl_compiler::span::Span;

fn config() -> Config {
    Config {
        cases: 32,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x9ad_0e5e),
        max_shrink_iters: 200,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn differentiated_random_programs_agree(choices in prop::collection::vec(any::<u32>(), 16..240)) {
        run_case(&choices)?;
    }
}

fn add(graph: &mut Graph, op: Op, ty: TensorType) -> NodeId {
    graph.nodes.append(Node { op, ty }, Span::default())
}

/// Appends `loss = sum of every float output` and `d_<input> = grad(loss, input)` for every float input;
/// `false` when the program has no float output or input.
fn differentiate(graph: &mut Graph) -> bool {
    let scalar = TensorType { dtype: DType::F32, shape: vec![] };
    let mut loss: Option<NodeId> = None;
    for o in graph.outputs.clone() {
        let ty = graph.node(o.node).ty.clone();
        if !ty.dtype.is_float() {
            continue;
        }
        let mut x = o.node;
        if ty.dtype != DType::F32 {
            x = add(graph, Op::Cast(x), TensorType { dtype: DType::F32, shape: ty.shape.clone() });
        }
        if ty.rank() > 0 {
            let axes = (0..ty.rank()).collect();
            x = add(graph, Op::Reduce { op: ReduceOp::Sum, input: x, axes }, scalar.clone());
        }
        loss = Some(match loss {
            None => x,
            Some(l) => add(graph, Op::Binary(BinaryOp::Add, l, x), scalar.clone()),
        });
    }
    let wrt: Vec<NodeId> = graph.inputs.iter().copied().filter(|&i| graph.node(i).ty.dtype.is_float()).collect();
    let Some(loss) = loss else { return false };
    if wrt.is_empty() {
        return false;
    }
    let grads = tdsl_compiler::autodiff::grad(graph, loss, &wrt, Span::default()).expect("a float scalar loss");
    graph.outputs = vec![Output { name: "loss".into(), node: loss }];
    for (w, g) in wrt.into_iter().zip(grads) {
        let Op::Input { name } = &graph.node(w).op else { unreachable!("inputs are inputs") };
        graph.outputs.push(Output { name: format!("d_{name}"), node: g });
    }
    true
}

fn run_case(choices: &[u32]) -> Result<(), TestCaseError> {
    let case = generate(choices);
    let checked = check_text("random.tdsl", &case.source);
    let mut graph = checked.graphs.into_iter().next().expect("one model");
    if !differentiate(&mut graph) {
        return Ok(());
    }
    tdsl_compiler::ir::verify(&graph)
        .map_err(|e| TestCaseError::fail(format!("the backward graph does not verify: {e:?}\n{}", case.source)))?;
    let params = HashMap::new();
    // A program the interpreter refuses (a derived dimension of 0) is `gpu::random`'s to check.
    let Ok(expected) = interp::run(&graph, &case.inputs, &params) else { return Ok(()) };
    // Programs with infinite or NaN values (the generator writes `x * (1.0 / 0.0)`) have no meaningful
    // gradient; `gpu::random` compares their forward values bit for bit.
    let finite = |t: &interp::Tensor| match &t.data {
        tdsl_runtime::TensorData::F32(v) => v.iter().all(|x| x.is_finite()),
        _ => true,
    };
    if !expected.iter().all(finite) {
        return Ok(());
    }
    let stages = optimize_stages(&graph)
        .map_err(|e| TestCaseError::fail(format!("the verifier rejects a pass's output: {e}\n{}", case.source)))?;
    for (pass, stage) in &stages {
        let got = interp::run(stage, &case.inputs, &params)
            .map_err(|e| TestCaseError::fail(format!("interpreter after `{pass}`: {e}\n{}", case.source)))?;
        if !same_bits(&expected, &got) {
            return Err(TestCaseError::fail(format!("after `{pass}` the results differ\n{}", case.source)));
        }
    }
    let f16 = graph.nodes.iter().any(|(_, n)| n.ty.dtype == DType::F16);
    let tol = Tol::Scaled(if f16 { 2e-2 } else { 1e-3 });
    let tols: Vec<Tol> = graph.outputs.iter().map(|_| tol).collect();
    let actual = run_gpu_with(&graph, &case.inputs, &params, true)
        .map_err(|e| TestCaseError::fail(format!("GPU: {e}\n{}", case.source)))?;
    let mut failures = mismatches("random.tdsl", &graph, &case.inputs, &expected, &actual, &tols);
    let actual = run_cpu(&graph, &case.inputs, &params)
        .map_err(|e| TestCaseError::fail(format!("CPU executor: {e}\n{}", case.source)))?;
    for f in mismatches("random.tdsl", &graph, &case.inputs, &expected, &actual, &tols) {
        failures.push(format!("CPU executor: {f}"));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!("{}\nprogram:\n{}", failures.join("\n"), case.source)))
    }
}

/// The generator's programs reach the gradient rules: most have a float input and a float output.
#[test]
fn most_random_programs_have_gradients() {
    let mut differentiated = 0;
    for seed in 0..64u64 {
        let mut rng = tdsl_compiler::random::SplitMix64::new(seed);
        let choices: Vec<u32> = (0..160).map(|_| rng.next_u64() as u32).collect();
        let case = generate(&choices);
        let mut graph = check_text("random.tdsl", &case.source).graphs.into_iter().next().expect("one model");
        differentiated += usize::from(differentiate(&mut graph));
    }
    assert!(differentiated >= 24, "only {differentiated} of 64 generated programs have a gradient");
}
