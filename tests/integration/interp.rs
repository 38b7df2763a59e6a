//! The language's meaning, end to end: programs are checked, lowered and run on the reference interpreter,
//! and the results are compared with values computed independently here (plain Rust loops) or by hand.

use crate::util::{assert_close, run, single_graph};
use proptest::prelude::*;
use tdsl_compiler::interp::Tensor;
use tdsl_compiler::random::SplitMix64 as Rng;

fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
        }
    }
    out
}

#[test]
fn hand_computed_values() {
    let graph = single_graph(
        "hand.tdsl",
        "model m(x: f32[2, 3], y: f32[3]) -> (a: f32[2, 3], s: f32[2], t: f32[3, 2], p: f32[2, 3]) {
            a = x * 2.0 + y
            s = sum(x, axis: 1)
            t = transpose(x)
            p[i, j] = x[i, j] ^ 2 - max[k](x[i, k])
        }",
    );
    let x = Tensor::f32(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = Tensor::f32(&[3], vec![10.0, 20.0, 30.0]);
    let out = run(&graph, vec![x, y], &[]);
    assert_eq!(out[0].to_f64_vec(), vec![12.0, 24.0, 36.0, 18.0, 30.0, 42.0]);
    assert_eq!(out[1].to_f64_vec(), vec![6.0, 15.0]);
    assert_eq!(out[2].to_f64_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(out[3].to_f64_vec(), vec![-2.0, 1.0, 6.0, 10.0, 19.0, 30.0]);
}

#[test]
fn integer_semantics_follow_wgsl() {
    let graph = single_graph(
        "ints.tdsl",
        "model m(a: i32[4], b: i32[4]) -> (q: i32[4], r: i32[4], c: bool[4]) {
            q = a / b
            r = a % b
            c = a < b
        }",
    );
    let a = Tensor::i32(&[4], vec![7, -7, 5, i32::MIN]);
    let b = Tensor::i32(&[4], vec![2, 2, 0, -1]);
    let out = run(&graph, vec![a, b], &[]);
    // Truncating division, x / 0 = x, wrapping i32::MIN / -1; x % 0 = 0.
    assert_eq!(out[0].to_f64_vec(), vec![3.0, -3.0, 5.0, i32::MIN as f64]);
    assert_eq!(out[1].to_f64_vec(), vec![1.0, -1.0, 0.0, 0.0]);
    assert_eq!(out[2].to_f64_vec(), vec![0.0, 1.0, 0.0, 1.0]);
}

#[test]
fn matmul_and_index_notation_contraction_agree_with_loops() {
    let graph = single_graph(
        "mm.tdsl",
        "model m(a: f32[M, K], b: f32[K, N]) -> (c: f32[M, N], d: f32[M, N]) {
            c = a @ b
            d[i, j] = sum[k](a[i, k] * b[k, j])
        }",
    );
    let mut rng = Rng::new(1);
    let (m, k, n) = (5, 7, 3);
    let a = rng.tensor(tdsl_compiler::ir::DType::F32, &[m, k], 1);
    let b = rng.tensor(tdsl_compiler::ir::DType::F32, &[k, n], 1);
    let expected = naive_matmul(a.as_f32().expect("f32"), b.as_f32().expect("f32"), m, k, n);
    let out = run(&graph, vec![a, b], &[]);
    assert_close(&out[0].to_f64_vec(), &expected, 1e-5, 1e-5);
    assert_close(&out[1].to_f64_vec(), &expected, 1e-5, 1e-5);
}

#[test]
fn conv2d_and_pooling_agree_with_loops() {
    let graph = single_graph(
        "conv.tdsl",
        "import \"std/nn\"
        model m(x: f32[1, 2, 5, 6], w: f32[3, 2, 3, 3]) -> (y: f32[1, 3, 3, 3], p: f32[1, 2, 2, 3]) {
            y = conv2d(x, w, stride: 2, padding: 1)
            p = max_pool2d(x, 2, 2)
        }",
    );
    let mut rng = Rng::new(2);
    let x = rng.tensor(tdsl_compiler::ir::DType::F32, &[1, 2, 5, 6], 1);
    let w = rng.tensor(tdsl_compiler::ir::DType::F32, &[3, 2, 3, 3], 1);
    let (xs, ws) = (x.as_f32().expect("f32").to_vec(), w.as_f32().expect("f32").to_vec());
    let at = |c: usize, h: i64, wi: i64| -> f64 {
        if !(0..5).contains(&h) || !(0..6).contains(&wi) {
            0.0
        } else {
            xs[c * 30 + h as usize * 6 + wi as usize] as f64
        }
    };
    let mut conv = Vec::new();
    for k in 0..3 {
        for i in 0..3i64 {
            for j in 0..3i64 {
                let mut acc = 0.0;
                for c in 0..2 {
                    for r in 0..3i64 {
                        for s in 0..3i64 {
                            acc += at(c, 2 * i + r - 1, 2 * j + s - 1)
                                * ws[((k * 2 + c) * 3 + r as usize) * 3 + s as usize] as f64;
                        }
                    }
                }
                conv.push(acc);
            }
        }
    }
    let mut pool = Vec::new();
    for c in 0..2 {
        for i in 0..2i64 {
            for j in 0..3i64 {
                let v = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(r, s)| at(c, 2 * i + r, 2 * j + s))
                    .fold(f64::MIN, f64::max);
                pool.push(v);
            }
        }
    }
    let out = run(&graph, vec![x, w], &[]);
    assert_close(&out[0].to_f64_vec(), &conv, 1e-5, 1e-5);
    assert_close(&out[1].to_f64_vec(), &pool, 0.0, 0.0);
}

#[test]
fn gather_slice_concat_and_where() {
    let graph = single_graph(
        "layout.tdsl",
        "model m(t: f32[4, 2], ids: i32[3]) -> (g: f32[3, 2], s: f32[2, 2], c: f32[6, 2], w: f32[4, 2], v: f32[4, 2]) {
            g = gather(t, ids)
            s = slice(t, axis: 0, start: 1, end: 4, step: 2)
            c = concat(t, slice(t, axis: 0, start: 0, end: 2), axis: 0)
            w = where(t > 0.0, t, 0.0)
            v[i, j] = select(t[i, j] < 0.0, -1.0, 1.0)
        }",
    );
    let t = Tensor::f32(&[4, 2], vec![0.0, 1.0, -2.0, 3.0, 4.0, -5.0, 6.0, 7.0]);
    let ids = Tensor::i32(&[3], vec![3, 0, 3]);
    let out = run(&graph, vec![t, ids], &[]);
    assert_eq!(out[0].to_f64_vec(), vec![6.0, 7.0, 0.0, 1.0, 6.0, 7.0]);
    assert_eq!(out[1].to_f64_vec(), vec![-2.0, 3.0, 6.0, 7.0]);
    assert_eq!(out[2].to_f64_vec(), vec![0.0, 1.0, -2.0, 3.0, 4.0, -5.0, 6.0, 7.0, 0.0, 1.0, -2.0, 3.0]);
    assert_eq!(out[3].to_f64_vec(), vec![0.0, 1.0, 0.0, 3.0, 4.0, 0.0, 6.0, 7.0]);
    assert_eq!(out[4].to_f64_vec(), vec![1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0]);
}

#[test]
fn gelu_and_erf_match_reference_values() {
    let graph = single_graph("gelu.tdsl", "model m(x: f32[4]) -> (y: f32[4], e: f32[4]) { y = gelu(x) e = erf(x) }");
    let x = Tensor::f32(&[4], vec![-2.0, -0.5, 0.5, 3.0]);
    let out = run(&graph, vec![x], &[]);
    // Values of x * Phi(x) and erf(x), computed independently to 1e-9.
    assert_close(&out[0].to_f64_vec(), &[-0.0455002639, -0.1542687694, 0.3457312306, 2.9959502254], 1e-6, 1e-6);
    assert_close(&out[1].to_f64_vec(), &[-0.9953222650, -0.5204998778, 0.5204998778, 0.9999779095], 1e-6, 1e-6);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn softmax_rows_sum_to_one(rows in 1usize..6, cols in 1usize..40, seed in any::<u64>(), scale in 0.1f32..30.0) {
        let graph = single_graph("softmax.tdsl", "model m(x: f32[R, C]) -> (y: f32[R, C]) { y = softmax(x) }");
        let mut rng = Rng::new(seed);
        let data: Vec<f32> = (0..rows * cols).map(|_| rng.unit() * scale).collect();
        let out = run(&graph, vec![Tensor::f32(&[rows, cols], data)], &[]);
        let y = out[0].to_f64_vec();
        for r in 0..rows {
            let row = &y[r * cols..(r + 1) * cols];
            prop_assert!(row.iter().all(|v| (0.0..=1.0).contains(v)));
            let total: f64 = row.iter().sum();
            prop_assert!((total - 1.0).abs() < 1e-5, "row {} sums to {}", r, total);
        }
    }

    #[test]
    fn layer_norm_rows_have_mean_zero_and_variance_one(rows in 1usize..5, cols in 2usize..64, seed in any::<u64>(), offset in -50.0f32..50.0) {
        let graph = single_graph(
            "ln.tdsl",
            "model m(x: f32[R, D], g: f32[D], b: f32[D]) -> (y: f32[R, D]) { y = layer_norm(x, g, b, eps: 1e-12) }",
        );
        let mut rng = Rng::new(seed);
        let data: Vec<f32> = (0..rows * cols).map(|_| rng.unit() * 3.0 + offset).collect();
        let ones = Tensor::f32(&[cols], vec![1.0; cols]);
        let zeros = Tensor::f32(&[cols], vec![0.0; cols]);
        let out = run(&graph, vec![Tensor::f32(&[rows, cols], data.clone()), ones, zeros], &[]);
        let y = out[0].to_f64_vec();
        for r in 0..rows {
            let row = &y[r * cols..(r + 1) * cols];
            let mean = row.iter().sum::<f64>() / cols as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
            // f32 rounding of `x - mean(x)` is about one ulp of |x|, which normalisation divides by the
            // row's standard deviation: nearly constant rows far from zero are ill-conditioned.
            let input: Vec<f64> = data[r * cols..(r + 1) * cols].iter().map(|&v| f64::from(v)).collect();
            let in_mean = input.iter().sum::<f64>() / cols as f64;
            let in_std = (input.iter().map(|v| (v - in_mean).powi(2)).sum::<f64>() / cols as f64).sqrt();
            let magnitude = input.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let rounding = 8.0 * f64::from(f32::EPSILON) * magnitude / in_std.max(1e-30);
            prop_assert!(mean.abs() < 1e-4 + rounding, "mean {} (rounding bound {})", mean, rounding);
            // Rows whose values are all equal normalise to zeros.
            prop_assert!((var - 1.0).abs() < 1e-3 + 2.0 * rounding || var < 1e-6, "variance {}", var);
        }
    }
}
