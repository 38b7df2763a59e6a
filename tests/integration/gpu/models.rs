//! Whole models on every side: every example under `examples/` (recursively, MiniLM included) and every
//! `fixtures/ok` model, with seeded inputs and params (`seeded_tensor`) and small, odd symbol values
//! (`B = 2`, `S = 7`, ...), on the GPU and on the CPU executor (each compiled program, for every profile
//! run), each against the interpreter with the same tolerances.
//!
//! Tolerance (`graph_tols`): ints and bools exact; a float output within `Tol::Scaled(4 * cost * EPS)`,
//! i.e. `4 * cost` f32 ulps of the output's largest magnitude, where `cost` is the most expensive path
//! from the inputs to the output, adding per op: layout, select, min/max, neg/abs/relu/floor/ceil 0;
//! rounded arithmetic (`+ - *`, casts) 1; division, remainder, sqrt, rsqrt 4; transcendental functions 16;
//! a reduction or contraction over `n` elements `1 + sqrt(n)` (max/min 0); every rounding to f16 half an
//! f16 ulp (2^12 f32 ulps, so two f16 ulps after the factor 4). The path sum assumes the errors of one op
//! are not amplified by the next (values of magnitude about 1, as seeded data gives); the factor 4 is the
//! margin for that. On lavapipe the worst output is within 4 f32 ulps of its scale, MiniLM's within 1,
//! against a tolerance of about 6800 for MiniLM and 650 for the encoder layer.
//! A model whose int or bool output depends on a comparison or cast of an inexact float would make an exact
//! comparison meaningless; `graph_tols` refuses it.

use std::path::{Path, PathBuf};

use super::{EPS, Tol, gpu, mismatches, profiles, run_cpu_for, run_gpu_for, seeded_bindings, symbol_values};
use crate::util::{check_path, rendered};
use tdsl_compiler::dim::{Dim, SymId};
use tdsl_compiler::interp;
use tdsl_compiler::ir::{BinaryOp, DType, Graph, MapOp, Op, ReduceOp, ScalarExpr, ScalarId, UnaryOp};
use tdsl_runtime::ExecError;

/// Sizes of the symbols the models use; any other symbol is 3.
const SIZES: &[(&str, i64)] =
    &[("B", 2), ("S", 7), ("N", 3), ("D", 5), ("H", 3), ("M", 5), ("K", 7), ("L", 9), ("C", 3), ("F", 2), ("V", 11)];

/// Half an f16 ulp at 1, in f32 ulps.
const F16_ROUNDING: f64 = 4096.0;

#[test]
fn examples_match() {
    all_match(crate::util::files(Path::new("../examples"), "tdsl", true), 4);
}

#[test]
fn ok_fixtures_match() {
    let mut files: Vec<PathBuf> = std::fs::read_dir("fixtures/ok")
        .expect("fixtures/ok")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tdsl"))
        .collect();
    files.sort();
    all_match(files, 9);
}

/// The backward programs of `fixtures/grad` (every gradient rule) equal the interpreter's.
#[test]
fn gradient_fixtures_match() {
    all_match(crate::util::files(Path::new("fixtures/grad"), "tdsl", false), 4);
}

/// The tolerance of every output of `graph` under `symbols` (see the module comment).
pub fn graph_tols(graph: &Graph, symbols: &[i64]) -> Vec<Tol> {
    let (costs, tainted) = path_costs(graph, symbols);
    graph
        .outputs
        .iter()
        .map(|o| {
            let i = o.node.index();
            // A float output may select by a comparison of inexact floats (relu's and max's gradients do):
            // a flipped choice is a large mismatch, reported like any other.
            let exact = !graph.node(o.node).ty.dtype.is_float();
            assert!(
                !(exact && tainted[i]),
                "{}: output {} depends on a comparison or cast of an inexact float; it cannot be compared",
                graph.name,
                o.name
            );
            match graph.node(o.node).ty.dtype {
                DType::F32 | DType::F16 => Tol::Scaled(4.0 * costs[i].max(1.0) * EPS),
                DType::I32 | DType::U32 | DType::Bool => Tol::Exact,
            }
        })
        .collect()
}

fn all_match(files: Vec<PathBuf>, at_least: usize) {
    assert!(files.len() >= at_least, "expected at least {at_least} files, found {files:?}");
    let mut failures = Vec::new();
    for path in files {
        failures.extend(model_file(&path));
    }
    assert!(
        failures.is_empty(),
        "GPU ({}) or the CPU executor disagrees with the interpreter:\n{}",
        gpu().describe(),
        failures.join("\n")
    );
}

/// The fixed-shape schedule fixtures compiled for every built-in device profile (not only this device's),
/// so each profile's kernels (tiles, vector kernels, row schedules) run here.
#[test]
fn schedule_fixtures_match_on_every_profile() {
    let mut failures = Vec::new();
    let subgroups = gpu().device.features().contains(tdsl_runtime::wgpu::Features::SUBGROUP);
    for mut target in tdsl_compiler::codegen::target::TARGETS {
        target.subgroups &= subgroups;
        let options = crate::util::options(true, target);
        failures.extend(model_file_with(Path::new("fixtures/schedules/schedules.tdsl"), Some(options)));
    }
    assert!(
        failures.is_empty(),
        "GPU ({}) or the CPU executor disagrees with the interpreter:\n{}",
        gpu().describe(),
        failures.join("\n")
    );
}

/// Runs every model of `path` on both sides and returns the mismatches.
fn model_file(path: &Path) -> Vec<String> {
    model_file_with(path, None)
}

/// `model_file` compiled with `options` (`None`: fused, for this device's profile and the `gpu` profile).
fn model_file_with(path: &Path, options: Option<tdsl_compiler::pipeline::Options>) -> Vec<String> {
    let checked = check_path(path);
    assert!(checked.diagnostics.is_empty(), "{}:\n{}", path.display(), rendered(&checked));
    assert!(!checked.graphs.is_empty(), "{} has no model", path.display());
    let mut failures = Vec::new();
    for graph in &checked.graphs {
        tdsl_compiler::ir::verify(graph)
            .unwrap_or_else(|e| panic!("{}: the graph does not verify: {e:?}", path.display()));
        let name = format!("{} (model {})", path.display(), graph.name);
        let symbols = symbol_values(graph, SIZES, 3);
        let (inputs, params) = seeded_bindings(graph, &symbols, 11);
        let tols = graph_tols(graph, &symbols);
        let expected = interp::run(graph, &inputs, &params).unwrap_or_else(|e| panic!("{name}: interpreter: {e}"));
        // `None`: the device's own profile and the `gpu` profile where that is another (`gpu::profiles`).
        let runs: Vec<_> = match &options {
            Some(options) => vec![options.clone()],
            None => profiles().into_iter().map(|target| crate::util::options(true, target)).collect(),
        };
        for options in runs {
            // The CPU executor has no storage-buffer limit: it runs every model, GPT-2 included.
            let what = format!("{name} ({} profile) on the CPU executor", options.target.name);
            match run_cpu_for(graph, &inputs, &params, &options) {
                Ok(actual) => failures.extend(mismatches(&what, graph, &inputs, &expected, &actual, &tols)),
                Err(e) => failures.push(format!("{what}: {e}")),
            }
            let actual = match run_gpu_for(graph, &inputs, &params, &options) {
                Ok(actual) => actual,
                // GPT-2 small's token embedding (50257 x 768 floats, 154 MB) is larger than lavapipe's 128 MiB
                // storage buffers: the runtime refuses such a model before it runs (spec/runtime.md G5.2), and the
                // interpreter has still run it above.
                Err(ExecError::TooLarge { tensor, bytes, limit, .. }) if tensor.starts_with("param ") => {
                    assert!(bytes > limit as u128, "{name}: {tensor} refused at {bytes} bytes, within {limit}");
                    println!("{name}: not on this GPU: {tensor} needs {bytes} bytes, more than its {limit}");
                    continue;
                }
                Err(e) => panic!("{name}: GPU ({} profile): {e}", options.target.name),
            };
            let what = format!("{name} ({} profile)", options.target.name);
            failures.extend(mismatches(&what, graph, &inputs, &expected, &actual, &tols));
        }
    }
    failures
}

/// For every node: the cost of its most expensive path from the sources (in f32 ulps), and whether it
/// depends on a comparison or cast of an inexact float.
fn path_costs(graph: &Graph, symbols: &[i64]) -> (Vec<f64>, Vec<bool>) {
    let count = |dims: &[Dim]| -> f64 {
        dims.iter().map(|d| d.eval(&|s: SymId| symbols[s.0 as usize]).expect("a dimension evaluates") as f64).product()
    };
    let mut costs = vec![0.0f64; graph.nodes.len()];
    let mut tainted = vec![false; graph.nodes.len()];
    for (id, node) in graph.nodes.iter() {
        let operands = node.op.operands();
        let inherited = operands.iter().map(|o| costs[o.index()]).fold(0.0, f64::max);
        let mut taint = operands.iter().any(|o| tainted[o.index()]);
        let inexact_float_operand =
            operands.iter().any(|o| graph.node(*o).ty.dtype.is_float() && costs[o.index()] > 0.0);
        let own = match &node.op {
            Op::Input { .. } | Op::Param { .. } | Op::Constant(_) | Op::DimValue(_) => 0.0,
            Op::Broadcast(_) | Op::Permute(..) | Op::Reshape(_) | Op::Slice { .. } | Op::Concat { .. } => 0.0,
            Op::Gather { .. } | Op::Select { .. } | Op::TakeAlongAxis { .. } => 0.0,
            // The order depends on comparisons of its input.
            Op::Argsort { .. } => {
                taint |= inexact_float_operand;
                0.0
            }
            Op::ScatterAdd { src, axis, .. } => {
                let shape = &graph.node(*src).ty.shape;
                reduce_cost(ReduceOp::Sum, count(&shape[*axis..*axis + 1]))
            }
            Op::Unary(op, _) => unary_cost(*op),
            Op::Binary(op, _, _) => {
                taint |= op.is_comparison() && inexact_float_operand;
                binary_cost(*op)
            }
            Op::Cast(_) => {
                taint |= !node.ty.dtype.is_float() && inexact_float_operand;
                1.0
            }
            Op::Reduce { op, input, axes } => {
                let shape = &graph.node(*input).ty.shape;
                let reduced: Vec<Dim> = axes.iter().map(|&a| shape[a].clone()).collect();
                reduce_cost(*op, count(&reduced))
            }
            Op::ArgReduce { .. } => {
                // A position picked by comparing inexact values may differ where they nearly tie.
                taint |= inexact_float_operand;
                0.0
            }
            Op::Scan { input, axis, .. } => {
                let shape = &graph.node(*input).ty.shape;
                reduce_cost(ReduceOp::Sum, count(&shape[*axis..=*axis]))
            }
            Op::MatMul(a, _) => {
                let shape = &graph.node(*a).ty.shape;
                reduce_cost(ReduceOp::Sum, count(&shape[shape.len() - 1..]))
            }
            Op::Map(map) => {
                let (body, body_taint) = map_cost(map, &costs, &count);
                taint |= body_taint;
                // The body's loads already carry their inputs' costs.
                costs[id.index()] = body + f16_rounding(node.ty.dtype);
                tainted[id.index()] = taint;
                continue;
            }
        };
        let rounds = own > 0.0 || matches!(node.op, Op::Cast(_));
        costs[id.index()] = inherited + own + if rounds { f16_rounding(node.ty.dtype) } else { 0.0 };
        tainted[id.index()] = taint;
    }
    (costs, tainted)
}

/// The cost of an index-notation body: the same rules on its scalar nodes, loads costing their input's.
fn map_cost(map: &MapOp, costs: &[f64], count: &dyn Fn(&[Dim]) -> f64) -> (f64, bool) {
    let mut scalar = vec![0.0f64; map.exprs.len()];
    let mut tainted = vec![false; map.exprs.len()];
    for (sid, s) in map.exprs.iter() {
        let i = sid.index();
        let inexact = |o: ScalarId, scalar: &[f64]| map.exprs[o].dtype.is_float() && scalar[o.index()] > 0.0;
        let (inherited, own, taint) = match &s.expr {
            ScalarExpr::Load { input, .. } => (costs[map.inputs[*input].index()], 0.0, false),
            ScalarExpr::Var(_) | ScalarExpr::Dim(_) | ScalarExpr::Const(_) => (0.0, 0.0, false),
            ScalarExpr::Unary(op, a) => (scalar[a.index()], unary_cost(*op), tainted[a.index()]),
            ScalarExpr::Binary(op, a, b) => {
                let compares_inexact = op.is_comparison() && (inexact(*a, &scalar) || inexact(*b, &scalar));
                (
                    scalar[a.index()].max(scalar[b.index()]),
                    binary_cost(*op),
                    tainted[a.index()] || tainted[b.index()] || compares_inexact,
                )
            }
            ScalarExpr::Select { cond, on_true, on_false } => (
                scalar[on_true.index()].max(scalar[on_false.index()]),
                0.0,
                tainted[cond.index()] || tainted[on_true.index()] || tainted[on_false.index()],
            ),
            ScalarExpr::Cast(a) => {
                (scalar[a.index()], 1.0, tainted[a.index()] || (!s.dtype.is_float() && inexact(*a, &scalar)))
            }
            ScalarExpr::Reduce { op, vars, body } => {
                let extents: Vec<Dim> = vars.iter().map(|v| map.extents[v.0 as usize].clone()).collect();
                (scalar[body.index()], reduce_cost(*op, count(&extents)), tainted[body.index()])
            }
        };
        scalar[i] = inherited + own + if own > 0.0 { f16_rounding(s.dtype) } else { 0.0 };
        tainted[i] = taint;
    }
    (scalar[map.body.index()], tainted[map.body.index()])
}

fn unary_cost(op: UnaryOp) -> f64 {
    match op {
        UnaryOp::Neg
        | UnaryOp::Not
        | UnaryOp::Abs
        | UnaryOp::Relu
        | UnaryOp::Floor
        | UnaryOp::Ceil
        | UnaryOp::Round => 0.0,
        UnaryOp::Sqrt | UnaryOp::Rsqrt => 4.0,
        UnaryOp::Exp
        | UnaryOp::Log
        | UnaryOp::Tanh
        | UnaryOp::Erf
        | UnaryOp::Sigmoid
        | UnaryOp::Sin
        | UnaryOp::Cos
        | UnaryOp::Atan => 16.0,
    }
}

fn binary_cost(op: BinaryOp) -> f64 {
    match op {
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul => 1.0,
        BinaryOp::Div | BinaryOp::Rem => 4.0,
        BinaryOp::Pow => 16.0,
        _ => 0.0,
    }
}

fn reduce_cost(op: ReduceOp, n: f64) -> f64 {
    match op {
        ReduceOp::Max | ReduceOp::Min => 0.0,
        ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Prod => 1.0 + n.sqrt(),
    }
}

/// The cost of rounding a result to `dtype` beyond f32's.
fn f16_rounding(dtype: DType) -> f64 {
    if dtype == DType::F16 { F16_ROUNDING } else { 0.0 }
}
