//! Differential test of the GPU codegen: small programs are checked, compiled (`codegen::compile`) and run
//! on the real Vulkan device (lavapipe on a machine without a GPU) through the runtime's `Gpu::execute`,
//! and the outputs are compared with the reference interpreter.
//! No adapter is a failure, not a skip: this test exists to exercise the device.
//!
//! Tolerances: f32 outputs agree within `2e-6 + 2e-6 * |expected|`, a bare `erf` output within `1e-6`
//! absolute (the codegen's Abramowitz-Stegun 7.1.26 is good to 1.5e-7 plus f32 rounding); ints and bools
//! are exact.

use std::collections::HashMap;

use crate::util::single_graph;
use tdsl_compiler::codegen;
use tdsl_compiler::interp::{self, Tensor};
use tdsl_compiler::ir::{Graph, Op};
use tdsl_compiler::random::seeded_tensor;
use tdsl_runtime::gpu::{Gpu, GpuOptions};

const N: usize = 7;
const D: usize = 37;

/// How an output is compared.
#[derive(Clone, Copy, Debug)]
enum Tol {
    /// `|gpu - cpu| <= atol + rtol * |cpu|` (f32).
    Close { atol: f64, rtol: f64 },
    /// Equal values (ints, bools; `-0 == +0`); NaN matches NaN.
    Exact,
    /// Equal bits (f32 where the sign of zero matters); NaN matches any NaN.
    Bits,
}

const F32: Tol = Tol::Close { atol: 2e-6, rtol: 2e-6 };
const ERF: Tol = Tol::Close { atol: 1e-6, rtol: 0.0 };

fn open_gpu() -> Gpu {
    match Gpu::new(&GpuOptions::default()) {
        Ok(gpu) => gpu,
        Err(err) => panic!("the GPU differential test needs an adapter (it fails rather than skips): {err}"),
    }
}

/// Compiles `graph` and runs it on the GPU through the runtime's executor; returns its outputs.
fn run_on_gpu(gpu: &Gpu, graph: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let compiled = codegen::compile(graph).unwrap_or_else(|err| panic!("{} does not compile: {err}", graph.name));
    gpu.execute(&compiled.program, inputs, &HashMap::<String, Tensor>::new())
        .unwrap_or_else(|err| panic!("running {}: {err}", graph.name))
}

/// Checks `text` (one model), runs it on both sides with seeded inputs, and compares output `i` under
/// `tols[i]`.
fn differential(name: &str, text: &str, tols: &[Tol]) {
    let graph = single_graph(name, text);
    let inputs: Vec<Tensor> = graph
        .inputs
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            let Op::Input { name } = &node.op else { panic!("input node is not an input") };
            let shape: Vec<usize> = node
                .ty
                .shape
                .iter()
                .map(|d| match graph.dim_to_string(d).as_str() {
                    "N" => N,
                    "D" => D,
                    other => other.parse().expect("a literal or N or D dimension"),
                })
                .collect();
            seeded_tensor(name, node.ty.dtype, &shape, 7)
        })
        .collect();
    compare(name, &graph, &inputs, tols);
}

/// Runs `graph` on `inputs` on both sides and compares output `i` under `tols[i]`.
fn compare(name: &str, graph: &Graph, inputs: &[Tensor], tols: &[Tol]) {
    assert_eq!(graph.outputs.len(), tols.len(), "one tolerance per output");
    let expected = interp::run(graph, inputs, &HashMap::new()).expect("interpreter runs");
    let gpu = open_gpu();
    let actual = run_on_gpu(&gpu, graph, inputs);
    let mut failures = Vec::new();
    for (((output, want), got), tol) in graph.outputs.iter().zip(&expected).zip(&actual).zip(tols) {
        assert_eq!(want.dtype, got.dtype);
        assert_eq!(want.shape, got.shape);
        let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
        let mut bad = 0;
        for (i, (x, y)) in g.iter().zip(&w).enumerate() {
            let ok = match tol {
                Tol::Exact => x == y || (x.is_nan() && y.is_nan()),
                Tol::Bits => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                Tol::Close { atol, rtol } => (x - y).abs() <= atol + rtol * y.abs() || (x.is_nan() && y.is_nan()),
            };
            if !ok {
                bad += 1;
                if bad <= 5 {
                    let mut inputs_here = String::new();
                    for t in inputs {
                        let v = t.to_f64_vec();
                        let j = if v.len() == w.len() { i } else { i % v.len() };
                        inputs_here.push_str(&format!(" {:?}", v[j]));
                    }
                    failures.push(format!(
                        "{name} output {} element {i}: gpu {x:?} vs interp {y:?} \
                         (diff {:e}, {tol:?}; inputs{inputs_here})",
                        output.name,
                        (x - y).abs()
                    ));
                }
            }
        }
        if bad > 5 {
            failures.push(format!("{name} output {}: {bad} mismatches in all", output.name));
        }
    }
    assert!(failures.is_empty(), "GPU ({}) disagrees with the interpreter:\n{}", gpu.describe(), failures.join("\n"));
}

#[test]
fn float_unary_and_broadcast() {
    differential(
        "gpu_float.tdsl",
        "model m(x: f32[N, D], y: f32[D]) -> (z: f32[N, D], e: f32[N, D], s: f32[N, D]) {
            z = erf(x) * 2.0 + sigmoid(x) - y
            e = erf(x * 3.0)
            s = max(x, y) / (abs(y) + 0.5) - min(x, 0.25)
        }",
        &[F32, ERF, F32],
    );
}

#[test]
fn integer_arithmetic_and_casts() {
    differential(
        "gpu_int.tdsl",
        "model m(x: f32[N, D], y: f32[D], k: i32[N, D])
            -> (s: i32[N, D], lo: i32[N, D], f: f32[N, D], b: bool[N, D], t: i32[N, D]) {
            a = i32(x * 1000.0)
            c = i32(y * 300.0)
            s = a + c * 3 - k
            lo = min(a, c) + max(k, 0)
            f = f32(s) * 0.5
            b = bool(a)
            t = i32(b) + i32(bool(x))
        }",
        &[Tol::Exact, Tol::Exact, F32, Tol::Exact, Tol::Exact],
    );
}

#[test]
fn comparisons_and_where() {
    differential(
        "gpu_where.tdsl",
        "model m(x: f32[N, D], y: f32[D]) -> (k: bool[N, D], w: f32[N, D], j: i32[N, D], q: bool[N, D]) {
            k = x < y
            w = where(x >= y, x, y * 2.0)
            j = where(k && x > 0.0, i32(x * 100.0), -3)
            q = (x == y) || !(i32(x * 4.0) != 0)
        }",
        &[Tol::Exact, F32, Tol::Exact, Tol::Exact],
    );
}

const SPECIAL_F32: &str = "model m(x: f32[L], y: f32[L])
    -> (i: i32[L], u: u32[L], b: bool[L], lo: f32[L], hi: f32[L], r: f32[L], c: bool[L], e: f32[L], s: f32[L],
        q: f32[L]) {
    i = i32(x)
    u = u32(x)
    b = bool(x)
    lo = min(x, y)
    hi = max(x, y)
    r = relu(x)
    c = x <= y
    e = erf(x)
    s = sigmoid(x)
    q = x / y
}";

const SPECIAL_F32_TOLS: [Tol; 10] =
    [Tol::Exact, Tol::Exact, Tol::Exact, Tol::Bits, Tol::Bits, Tol::Bits, Tol::Exact, ERF, F32, Tol::Bits];

fn special_f32(x: Vec<f32>, y: Vec<f32>) {
    let graph = single_graph("gpu_special_f32.tdsl", SPECIAL_F32);
    let len = x.len();
    let inputs = vec![Tensor::f32(&[len], x), Tensor::f32(&[len], y)];
    compare("gpu_special_f32.tdsl", &graph, &inputs, &SPECIAL_F32_TOLS);
}

/// Edge values the seeded inputs never reach: infinities, zeros of either sign, subnormals, and floats past
/// the integer ranges (casts saturate).
#[test]
fn float_special_values() {
    special_f32(
        vec![
            f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 3e9, -3e9, 2147483520.0, -2147483648.0, 4294967040.0, 5e9,
            1.5, -1.5, -0.7, 0.7, 88.0, -88.0, -100.0, 100.0, 1e-40, -1e-40, 2.5, 0.0, -0.0, 1.0, -0.0,
        ],
        vec![
            3.0, 0.0, 1.0, -2.0, -3e9, 3e9, 1.0, f32::NEG_INFINITY, 2.0, f32::INFINITY, 1.5, 2.0, 0.7, -0.7, -88.0,
            88.0, 100.0, -100.0, -1e-40, 1e-40, 0.0, 5.0, -0.0, -0.0, f32::INFINITY,
        ],
    );
}

/// NaN and the order of signed zeros (spec/ops.md): `i32(NaN)` is 0 and `bool(NaN)` true, `min`/`max`/`relu`
/// are IEEE 754-2019 `minimum`/`maximum`. This found that naga writes float `!=` as SPIR-V `OpFOrdNotEqual`
/// (false for NaN) and that `FMin`/`FMax` neither propagate NaN nor order signed zeros; the codegen now tests
/// NaN on bits and builds min/max with explicit selects.
#[test]
fn float_nan_and_signed_zero() {
    special_f32(
        vec![f32::NAN, f32::INFINITY, -0.0, 0.0, 0.0, -f32::NAN, 1.0],
        vec![1.0, f32::NAN, 0.0, -0.0, f32::NAN, 2.0, f32::NAN],
    );
}

/// Integer edge values: wrapping add/sub/mul/neg/abs at the i32 range, i32 <-> u32 reinterpretation, and
/// int -> f32 rounding past 2^24.
#[test]
fn integer_special_values() {
    let graph = single_graph(
        "gpu_special_i32.tdsl",
        "model m(a: i32[L], b: i32[L])
            -> (s: i32[L], d: i32[L], p: i32[L], n: i32[L], v: i32[L], u: u32[L], f: f32[L], lo: i32[L], c: bool[L],
                w: u32[L]) {
            s = a + b
            d = a - b
            p = a * b
            n = -a
            v = abs(a)
            u = u32(a)
            f = f32(a)
            lo = min(a, b)
            c = a >= b
            w = u32(a) + u32(b) * 3
        }",
    );
    let a = vec![i32::MIN, i32::MAX, -1, 0, 1, 16777217, -16777217, 123456789, -5, 2147483600, 65536, -65536, 7];
    let b = vec![-1, 1, i32::MIN, i32::MAX, -1, 3, -3, 987654321, 5, 100, 65536, 65537, -7];
    let len = a.len();
    let inputs = vec![Tensor::i32(&[len], a), Tensor::i32(&[len], b)];
    let mut tols = [Tol::Exact; 10];
    tols[6] = Tol::Bits;
    compare("gpu_special_i32.tdsl", &graph, &inputs, &tols);
}
