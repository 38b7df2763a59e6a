//! Run-time errors: a gather index out of range (negative or too large, i32 and u32, along several axes) and
//! an index-notation load without a default that leaves its input. The interpreter, `Gpu::execute` and the
//! CPU executor (`Cpu::execute`) must all fail: the GPU's and the CPU's errors name the failing launch
//! (`launch N (gather_...)`) and the op (`in %7 (gather)`; `tdslc run` adds its source line, tested in
//! `cli.rs`) and, for a gather, the index value. The device keeps working after a failed run. A launch that would loop longer per
//! invocation than the device allows is refused before dispatch.
//!
//! The checker proves every load without `else` in bounds (R7.5), so the failing loads are made by taking
//! the `else` away from a checked graph whose load is padded; the verifier cannot refute symbolic bounds,
//! so such a graph still verifies, and only the run-time check stands between it and a wrong read.

use std::collections::HashMap;

use super::{ARITH, compare, run_cpu, run_gpu, tols_by_dtype};
use crate::util::single_graph;
use tdsl_compiler::interp::{self, Tensor};
use tdsl_compiler::ir::{DType, Graph, Op, ScalarExpr};
use tdsl_compiler::random::seeded_tensor;
use tdsl_runtime::Arg;

/// Every side fails on `inputs`; the GPU's and the CPU executor's messages name the launch that writes output
/// `output` and one of its checks, and contain every string of `gpu_says` (on the CPU, which words its errors
/// as the interpreter does, `value N` reads `index N` and `out of range` reads `outside its shape`). Returns the interpreter's and the GPU's messages
/// (all three are printed, for `--nocapture`).
fn both_fail(graph: &Graph, inputs: &[Tensor], output: &str, gpu_says: &[&str]) -> (String, String) {
    let interp_error = match interp::run(graph, inputs, &HashMap::new()) {
        Ok(_) => panic!("{}: the interpreter accepted an out-of-range index", graph.name),
        Err(err) => err.to_string(),
    };
    let compiled = crate::util::compile(graph).unwrap_or_else(|err| panic!("{}: {err}", graph.name));
    let program = &compiled.program;
    let tensor =
        program.outputs.iter().find(|(name, _)| name == output).unwrap_or_else(|| panic!("no output {output}")).1;
    let launch = program
        .launches
        .iter()
        .position(|l| l.args.contains(&Arg::Write(tensor)))
        .unwrap_or_else(|| panic!("no launch writes output {output} in {:?}", names(program)));
    let gpu_error = match run_gpu(graph, inputs, &HashMap::new()) {
        Ok(outputs) => panic!("{}: the GPU accepted an out-of-range index and gave {outputs:?}", graph.name),
        Err(err) => err.to_string(),
    };
    let name = &program.launches[launch].name;
    let want = format!("launch {launch} ({name})");
    assert!(gpu_error.contains(&want), "the GPU's error `{gpu_error}` does not name `{want}`");
    // The op that failed, as the interpreter names its node (`%7 (gather)`).
    let checks: Vec<String> = program.launches[launch].checks.iter().map(|c| c.to_string()).collect();
    assert!(
        checks.iter().any(|c| gpu_error.contains(&format!("in {c}"))),
        "the GPU's error `{gpu_error}` names none of its launch's checks {checks:?}"
    );
    for s in gpu_says {
        assert!(gpu_error.contains(s), "the GPU's error `{gpu_error}` does not say `{s}`");
    }
    let cpu_error = match run_cpu(graph, inputs, &HashMap::new()) {
        Ok(outputs) => panic!("{}: the CPU executor accepted an out-of-range index and gave {outputs:?}", graph.name),
        Err(err) => err.to_string(),
    };
    assert!(cpu_error.contains(&want), "the CPU executor's error `{cpu_error}` does not name `{want}`");
    assert!(
        checks.iter().any(|c| cpu_error.contains(&format!("in {c}"))),
        "the CPU executor's error `{cpu_error}` names none of its launch's checks {checks:?}"
    );
    for s in gpu_says {
        let s = s.replace("value ", "index ").replace("out of range", "outside its shape");
        assert!(cpu_error.contains(&s), "the CPU executor's error `{cpu_error}` does not say `{s}`");
    }
    eprintln!("interpreter: {interp_error}\nGPU: {gpu_error}\nCPU: {cpu_error}");
    (interp_error, gpu_error)
}

fn names(program: &tdsl_runtime::Program) -> Vec<&str> {
    program.launches.iter().map(|l| l.name.as_str()).collect()
}

const GATHER: &str = "model m(t: f32[V, D], ids: i32[N], u: u32[N], t3: f32[P, V, D])
    -> (g: f32[N, D], h: f32[N, D], k: f32[P, N, D]) {
    g = gather(t * 2.0, ids)
    h = gather(t, u)
    k = gather(t3, ids, axis: 1)
}";

fn gather_inputs(ids: Vec<i32>, u: Vec<u32>) -> Vec<Tensor> {
    let n = ids.len();
    vec![
        seeded_tensor("t", DType::F32, &[5, 3], 7),
        Tensor::i32(&[n], ids),
        Tensor::u32(&[n], u),
        seeded_tensor("t3", DType::F32, &[2, 5, 3], 7),
    ]
}

#[test]
fn gather_indices_in_range_agree() {
    let graph = single_graph("gpu_gather_ok.tdsl", GATHER);
    let inputs = gather_inputs(vec![4, 0, 3, 1], vec![0, 4, 2, 2]);
    compare("gpu_gather_ok.tdsl", &graph, &inputs, &HashMap::new(), &tols_by_dtype(&graph, ARITH));
}

#[test]
fn negative_gather_index_is_an_error_naming_the_launch_and_value() {
    let graph = single_graph("gpu_gather_neg.tdsl", GATHER);
    let (interp_error, _) = both_fail(&graph, &gather_inputs(vec![4, 0, -3, 1], vec![0; 4]), "g", &["value -3"]);
    assert!(interp_error.contains("-3"), "{interp_error}");
}

#[test]
fn too_large_gather_index_is_an_error_naming_the_launch_and_value() {
    let graph = single_graph("gpu_gather_big.tdsl", GATHER);
    let (interp_error, _) = both_fail(&graph, &gather_inputs(vec![4, 5, 0, 1], vec![0; 4]), "g", &["value 5"]);
    assert!(interp_error.contains("index 5"), "{interp_error}");
}

#[test]
fn too_large_u32_gather_index_is_an_error() {
    let graph = single_graph("gpu_gather_u32.tdsl", GATHER);
    let (interp_error, _) =
        both_fail(&graph, &gather_inputs(vec![0; 4], vec![1, 2, 4_000_000_000, 3]), "h", &["value 4000000000"]);
    assert!(interp_error.contains("4000000000"), "{interp_error}");
}

/// The failing launch is not the first: an earlier launch succeeds, the gather along axis 1 fails.
#[test]
fn gather_along_a_later_axis_fails_in_its_own_launch() {
    let graph = single_graph(
        "gpu_gather_axis.tdsl",
        "model m(t3: f32[P, V, D], ids: i32[N]) -> (a: f32[P, V, D], k: f32[P, N, D]) {
            a = exp(t3)
            k = gather(a, ids, axis: 1)
        }",
    );
    let inputs = vec![seeded_tensor("t3", DType::F32, &[2, 5, 3], 7), Tensor::i32(&[3], vec![1, 7, 2])];
    both_fail(&graph, &inputs, "k", &["value 7"]);
}

/// `y[i: N] = x[i + shift] else 0.0` with the `else` taken away from the IR.
fn unpadded_load(shift: &str) -> Graph {
    let mut graph = single_graph(
        "gpu_load.tdsl",
        &format!(
            "model m(x: f32[N]) -> (y: f32[N]) {{
            y[i: N] = x[i {shift}] else 0.0
        }}"
        ),
    );
    let mut stripped = 0;
    let ids: Vec<_> = graph.nodes.handles().collect();
    for id in ids {
        if let Op::Map(map) = &mut graph.nodes[id].op {
            for s in map.exprs.handles().collect::<Vec<_>>() {
                if let ScalarExpr::Load { default, .. } = &mut map.exprs[s].expr {
                    *default = None;
                    stripped += 1;
                }
            }
        }
    }
    assert_eq!(stripped, 1, "one padded load");
    tdsl_compiler::ir::verify(&graph).expect("a symbolic out-of-range load still verifies");
    graph
}

#[test]
fn index_notation_load_past_the_end_is_an_error() {
    let graph = unpadded_load("+ 1");
    let (interp_error, _) = both_fail(&graph, &[seeded_tensor("x", DType::F32, &[5], 7)], "y", &["out of range"]);
    assert!(interp_error.contains("outside its shape [5]"), "{interp_error}");
}

#[test]
fn index_notation_load_below_zero_is_an_error() {
    let graph = unpadded_load("- 2");
    let (interp_error, _) = both_fail(&graph, &[seeded_tensor("x", DType::F32, &[5], 7)], "y", &["out of range"]);
    assert!(interp_error.contains("at [-2]"), "{interp_error}");
}

/// After failed runs the device still runs programs correctly.
#[test]
fn the_device_works_after_a_failed_run() {
    let graph = single_graph("gpu_gather_again.tdsl", GATHER);
    let bad = gather_inputs(vec![9, 0, 0, 0], vec![0; 4]);
    assert!(run_gpu(&graph, &bad, &HashMap::new()).is_err());
    let good = gather_inputs(vec![1, 2, 3, 4], vec![4, 3, 2, 1]);
    compare("gpu_gather_again.tdsl", &graph, &good, &HashMap::new(), &tols_by_dtype(&graph, ARITH));
}

/// A derived dimension that evaluates to 0 (`N - 1` with `N = 1`) is an error on both sides (R3.3), naming
/// the dimension, not an empty tensor on the GPU.
#[test]
fn a_derived_dimension_of_zero_is_an_error_on_both_sides() {
    let graph = single_graph(
        "gpu_zero_dim.tdsl",
        "model m(x: f32[N]) -> (y: f32[N - 1], z: f32[N]) {
            y[i: N - 1] = x[i + 1]
            z = x * 2.0
        }",
    );
    let inputs = [seeded_tensor("x", DType::F32, &[1], 7)];
    let interp_error = interp::run(&graph, &inputs, &HashMap::new()).expect_err("N - 1 = 0 on the interpreter");
    assert!(interp_error.to_string().contains("at least 1"), "{interp_error}");
    let gpu_error = match run_gpu(&graph, &inputs, &HashMap::new()) {
        Ok(outputs) => panic!("the GPU accepted a dimension of 0 and gave {outputs:?}"),
        Err(err) => err.to_string(),
    };
    assert!(gpu_error.contains("N - 1") && gpu_error.contains("is 0"), "{gpu_error}");
    assert!(gpu_error.contains("at least 1"), "{gpu_error}");
    // With N = 2 both sides run and agree.
    let inputs = vec![seeded_tensor("x", DType::F32, &[2], 7)];
    compare("gpu_zero_dim.tdsl", &graph, &inputs, &HashMap::new(), &tols_by_dtype(&graph, ARITH));
}

/// Two checks in one kernel: the second gather's index fails, and the error names that gather (status word
/// 3 numbers the kernel's checks), not the first.
#[test]
fn the_failing_check_of_a_kernel_with_several_is_the_one_named() {
    let graph = single_graph(
        "gpu_two_gathers.tdsl",
        "model m(t: f32[V, D], a: i32[N], b: i32[N]) -> (y: f32[N, D]) {
            y = gather(t, a) + gather(t * 2.0, b)
        }",
    );
    let inputs =
        vec![seeded_tensor("t", DType::F32, &[5, 3], 7), Tensor::i32(&[2], vec![1, 2]), Tensor::i32(&[2], vec![0, 9])];
    let compiled = crate::util::compile(&graph).unwrap_or_else(|err| panic!("{err}"));
    let launch = compiled.program.launches.iter().find(|l| l.checks.len() == 2).expect("one kernel, both gathers");
    let second = launch.checks.iter().find(|c| {
        let node = tdsl_compiler::ir::NodeId::new(c.node as usize);
        matches!(compiled.graph.node(node).op, Op::Gather { indices, .. } if graph_input(&compiled.graph, indices) == "b")
    });
    let second = second.expect("a check for the gather of b").to_string();
    let first = launch.checks.iter().map(|c| c.to_string()).find(|c| *c != second).expect("two distinct checks");
    let (_, gpu_error) = both_fail(&graph, &inputs, "y", &["value 9", &format!("in {second}")]);
    assert!(!gpu_error.contains(&format!("in {first}")), "{gpu_error}");
    let cpu_error = run_cpu(&graph, &inputs, &HashMap::new()).expect_err("the CPU executor fails").to_string();
    assert!(!cpu_error.contains(&format!("in {first}")), "{cpu_error}");
}

/// The input name of `node`, or "" when it is not an input.
fn graph_input(graph: &Graph, node: tdsl_compiler::ir::NodeId) -> &str {
    match &graph.node(node).op {
        Op::Input { name } => name,
        _ => "",
    }
}

/// A launch whose invocations would loop more than the device runs per invocation (llvmpipe stops every loop
/// of an invocation after 65535 iterations, silently) is refused before dispatch, naming the launch, its
/// kernel, the op and its line, and the device's limit. A small limit (`GpuOptions::max_loop_iterations`,
/// as `TDSL_MAX_LOOP_ITERATIONS` sets it) makes a short contraction too long, on any device.
#[test]
fn a_launch_looping_past_the_device_limit_is_refused() {
    let text = "model m(a: f32[M, K], b: f32[K, N]) -> (y: f32[M, N]) {
        y = a @ b
    }";
    let checked = crate::util::check_text("gpu_loops.tdsl", text);
    let graph = checked.graphs.first().expect("one model");
    let mut compiled = crate::util::compile(graph).unwrap_or_else(|err| panic!("{err}"));
    compiled.locate(&checked.program.sources);
    let options = tdsl_runtime::GpuOptions { max_loop_iterations: Some(100), ..Default::default() };
    let small = tdsl_runtime::Gpu::new(&options).unwrap_or_else(|err| panic!("a device: {err}"));
    assert_eq!(small.max_loop_iterations(), 100);
    let inputs = [seeded_tensor("a", DType::F32, &[2, 500], 7), seeded_tensor("b", DType::F32, &[500, 3], 7)];
    let error = match small.execute(&compiled.program, &inputs, &HashMap::new()) {
        Ok(outputs) => panic!("a launch looping 500 times ran under a limit of 100: {outputs:?}"),
        Err(err) => err.to_string(),
    };
    let launch = &compiled.program.launches[0];
    for says in [&format!("launch 0 ({})", launch.name), "loop iterations", "(matmul) at gpu_loops.tdsl:2:13", "(100;"]
    {
        assert!(error.contains(says), "the error `{error}` does not say `{says}`");
    }
    // The same program within the limit runs, and agrees with the interpreter.
    let inputs = [seeded_tensor("a", DType::F32, &[2, 40], 7), seeded_tensor("b", DType::F32, &[40, 3], 7)];
    small.execute(&compiled.program, &inputs, &HashMap::new()).unwrap_or_else(|err| panic!("{err}"));
    compare("gpu_loops.tdsl", graph, &inputs, &HashMap::new(), &tols_by_dtype(graph, ARITH.times(4.0)));
}
