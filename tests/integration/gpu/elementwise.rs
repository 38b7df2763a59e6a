//! Elementwise kernels (unary, binary, select, cast) on seeded values and on the edge values seeded inputs
//! never reach: NaN, infinities, signed zeros, subnormals, floats past the integer ranges, integer wrapping.

use std::collections::HashMap;

use super::{ARITH, TRANSCENDENTAL, Tol, compare, seeded};
use crate::util::single_graph;
use tdsl_compiler::interp::Tensor;

/// `N` rows of `D` (odd, and more than one workgroup in all).
const SIZES: &[(&str, i64)] = &[("N", 7), ("D", 37)];

/// A bare `erf` output: the codegen's Abramowitz-Stegun 7.1.26 is good to 1.5e-7, plus f32 rounding.
const ERF: Tol = Tol::Close { atol: 1e-6, rtol: 0.0 };

#[test]
fn float_unary_and_broadcast() {
    seeded(
        "gpu_float.tdsl",
        "model m(x: f32[N, D], y: f32[D]) -> (z: f32[N, D], e: f32[N, D], s: f32[N, D]) {
            z = erf(x) * 2.0 + sigmoid(x) - y
            e = erf(x * 3.0)
            s = max(x, y) / (abs(y) + 0.5) - min(x, 0.25)
        }",
        SIZES,
        &[TRANSCENDENTAL, ERF, ARITH],
    );
}

#[test]
fn integer_arithmetic_and_casts() {
    seeded(
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
        SIZES,
        &[Tol::Exact, Tol::Exact, ARITH, Tol::Exact, Tol::Exact],
    );
}

#[test]
fn comparisons_and_where() {
    seeded(
        "gpu_where.tdsl",
        "model m(x: f32[N, D], y: f32[D]) -> (k: bool[N, D], w: f32[N, D], j: i32[N, D], q: bool[N, D]) {
            k = x < y
            w = where(x >= y, x, y * 2.0)
            j = where(k && x > 0.0, i32(x * 100.0), -3)
            q = (x == y) || !(i32(x * 4.0) != 0)
        }",
        SIZES,
        &[Tol::Exact, ARITH, Tol::Exact, Tol::Exact],
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
    [Tol::Exact, Tol::Exact, Tol::Exact, Tol::Bits, Tol::Bits, Tol::Bits, Tol::Exact, ERF, TRANSCENDENTAL, Tol::Bits];

fn special_f32(x: Vec<f32>, y: Vec<f32>) {
    let graph = single_graph("gpu_special_f32.tdsl", SPECIAL_F32);
    let len = x.len();
    let inputs = vec![Tensor::f32(&[len], x), Tensor::f32(&[len], y)];
    compare("gpu_special_f32.tdsl", &graph, &inputs, &HashMap::new(), &SPECIAL_F32_TOLS);
}

/// Edge values the seeded inputs never reach: infinities, zeros of either sign, subnormals, and floats past
/// the integer ranges (casts saturate).
#[test]
fn float_special_values() {
    special_f32(
        vec![
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            3e9,
            -3e9,
            2147483520.0,
            -2147483648.0,
            4294967040.0,
            5e9,
            1.5,
            -1.5,
            -0.7,
            0.7,
            88.0,
            -88.0,
            -100.0,
            100.0,
            1e-40,
            -1e-40,
            2.5,
            0.0,
            -0.0,
            1.0,
            -0.0,
        ],
        vec![
            3.0,
            0.0,
            1.0,
            -2.0,
            -3e9,
            3e9,
            1.0,
            f32::NEG_INFINITY,
            2.0,
            f32::INFINITY,
            1.5,
            2.0,
            0.7,
            -0.7,
            -88.0,
            88.0,
            100.0,
            -100.0,
            -1e-40,
            1e-40,
            0.0,
            5.0,
            -0.0,
            -0.0,
            f32::INFINITY,
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
    compare("gpu_special_i32.tdsl", &graph, &inputs, &HashMap::new(), &tols);
}

/// Literal zero, infinite and NaN operands keep their IEEE results (issue 20): a driver that sees a literal
/// `0.0` may fold `x * 0.0` to 0 and `x / 0.0` to 0 whatever `x` is (lavapipe did: `[0, 0, 0, 0]` for
/// `x / 0.0`), so such literals reach the kernel through its uniform block (spec/runtime.md G2.2).
/// Every output is compared bit for bit (any NaN matches any NaN).
#[test]
fn literal_zero_infinite_and_nan_operands_keep_ieee_results() {
    let graph = single_graph(
        "gpu_literal_special.tdsl",
        "model m(x: f32[L], h: f16[L])
            -> (a: f32[L], b: f32[L], c: f32[L], d: f32[L], e: f32[L], f: f32[L], g: f32[L], k: f32[L],
                n: f32[L], hz: f16[L], hd: f16[L], p: f32[L]) {
            a = x / 0.0
            b = x * 0.0
            c = x * -0.0
            d = x + 0.0
            e = 0.0 - x
            f = x * (1.0 / 0.0)
            g = x / -0.0
            k = 0.0 / x
            n = x * (0.0 / 0.0) + 1.0
            hz = h * 0.0
            hd = h / 0.0
            p = x - (1.0 / 0.0)
        }",
    );
    let x = vec![f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0, 0.0, 1.0, -2.5, 1e-40, -1e-40, 3e38, -3e38, 7.0];
    let len = x.len();
    let h = Tensor::f16_from_f32(&[len], &x);
    let inputs = vec![Tensor::f32(&[len], x), h];
    compare("gpu_literal_special.tdsl", &graph, &inputs, &HashMap::new(), &[Tol::Bits; 12]);
}
