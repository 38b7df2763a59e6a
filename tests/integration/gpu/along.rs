//! The along-axis ops on the device against the interpreter: `take_along_axis` and `scatter_add` along
//! every axis with repeated indices (scatter-add is deterministic, so its floats are compared bit for bit),
//! and `sort`, `argsort`, `topk` with ties, NaN, infinities and both zeros, ascending and descending, for
//! f32, f16, i32 and u32, over fibers of 1, odd, power-of-two, more-than-a-workgroup and the largest
//! length a sort kernel takes (`SORT_CAPACITY`); then the errors: an index out of range (both sides fail,
//! naming the op) and a fiber longer than a sort kernel holds (refused before dispatch).

use std::collections::HashMap;

use half::f16;

use super::{Tol, compare, run_gpu, tols_by_dtype};
use crate::util::single_graph;
use tdsl_compiler::codegen::SORT_CAPACITY;
use tdsl_compiler::interp::{self, Tensor};
use tdsl_compiler::ir::DType;
use tdsl_compiler::random::seeded_tensor;

/// `len` indices over `0..size` with repeats, scrambled.
fn spread(len: usize, size: usize) -> Vec<i32> {
    (0..len).map(|i| ((i * 7 + 3) % size) as i32).collect()
}

/// `n` floats with ties, NaN, both infinities and both zeros among seeded values.
fn awkward(n: usize, salt: usize) -> Vec<f32> {
    let special = [f32::NAN, 1.5, -0.0, 0.0, f32::INFINITY, -1.5, 1.5, f32::NEG_INFINITY, -f32::NAN, 1.5, 2.0];
    (0..n)
        .map(|i| match (i * 5 + salt) % 4 {
            0 => special[(i + salt) % special.len()],
            _ => (((i * 37 + salt * 11) % 23) as f32 - 11.0) / 4.0,
        })
        .collect()
}

#[test]
fn take_along_axis_and_scatter_add_along_every_axis() {
    let graph = single_graph(
        "gpu_along.tdsl",
        "model m(x: f32[A, B, C], i0: i32[J, B, C], i1: i32[A, J, C], i2: i32[A, B, J], k: i32[A, B, C],
                 s0: f32[J, B, C], s2: f32[A, B, J], h: f16[A, B, C], hs: f16[A, J, C], ks: i32[A, B, J])
            -> (t0: f32[J, B, C], t1: f32[A, J, C], t2: f32[A, B, J], tk: i32[A, J, C], tx: f32[A, B, J],
                a0: f32[A, B, C], a2: f32[A, B, C], ah: f16[A, B, C], ak: i32[A, B, C], ax: f32[A, B, C]) {
            t0 = take_along_axis(x, i0, axis: 0)
            t1 = take_along_axis(x, i1, axis: 1)
            t2 = take_along_axis(x, i2, axis: -1)
            tk = take_along_axis(k, i1, axis: 1)
            tx = take_along_axis(exp(x), (i2 + 1) % C, axis: 2)
            a0 = scatter_add(x, i0, s0, axis: 0)
            a2 = scatter_add(x, i2, s2, axis: 2)
            ah = scatter_add(h, i1, hs, axis: 1)
            ak = scatter_add(k, i2, ks, axis: 2)
            ax = scatter_add(x * 2.0, i2, s2 * s2, axis: 2)
        }",
    );
    let (a, b, c, j) = (3, 5, 7, 11);
    let seeded = |name: &str, dtype: DType, shape: &[usize]| seeded_tensor(name, dtype, shape, 7);
    let inputs = vec![
        seeded("x", DType::F32, &[a, b, c]),
        Tensor::i32(&[j, b, c], spread(j * b * c, a)),
        Tensor::i32(&[a, j, c], spread(a * j * c, b)),
        Tensor::i32(&[a, b, j], spread(a * b * j, c)),
        seeded("k", DType::I32, &[a, b, c]),
        seeded("s0", DType::F32, &[j, b, c]),
        seeded("s2", DType::F32, &[a, b, j]),
        seeded("h", DType::F16, &[a, b, c]),
        seeded("hs", DType::F16, &[a, j, c]),
        seeded("ks", DType::I32, &[a, b, j]),
    ];
    let mut tols = tols_by_dtype(&graph, Tol::Bits);
    // `exp` may differ by an ulp or two on the device; everything else is data movement or the same sums
    // in the same order.
    tols[4] = super::TRANSCENDENTAL;
    compare("gpu_along.tdsl", &graph, &inputs, &HashMap::new(), &tols);
}

const SORTS: &str = "model m(x: f32[R, N], y: f32[N, R], h: f16[R, N], k: i32[R, N], u: u32[R, N])
    -> (s: f32[R, N], si: i32[R, N], d: f32[R, N], di: i32[R, N], c: f32[N, R], ci: i32[N, R],
        hs: f16[R, N], ks: i32[R, N], kd: i32[R, N], us: u32[R, N], ud: i32[R, N],
        t: f32[R, K], ti: i32[R, K], e: f32[R, N]) {
    s = sort(x)
    si = argsort(x)
    d = sort(x, descending: true)
    di = argsort(x, axis: 1, descending: true)
    c = sort(y, axis: 0)
    ci = argsort(y, axis: -2, descending: true)
    hs = sort(h, descending: true)
    ks = sort(k)
    kd = argsort(k, descending: true)
    us = sort(u)
    ud = argsort(u, descending: true)
    t = topk(x, K)
    ti = topk_indices(x, K)
    e = sort(x * 2.0 + 1.0)
}";

/// Sorting inputs of `r` fibers of `n`: awkward floats (ties, NaN, infinities, zeros), ints with repeats.
fn sort_inputs(r: usize, n: usize) -> Vec<Tensor> {
    let x = awkward(r * n, 1);
    let y = awkward(r * n, 2);
    let h: Vec<f16> = awkward(r * n, 3).into_iter().map(f16::from_f32).collect();
    let k: Vec<i32> = (0..r * n).map(|i| [i32::MIN, -3, 0, 7, i32::MAX, 7, -3][(i * 3) % 7] + (i % 3) as i32).collect();
    let u: Vec<u32> = (0..r * n).map(|i| [0, u32::MAX, 5, 5, 1 << 31, 2][(i * 5) % 6]).collect();
    vec![
        Tensor::f32(&[r, n], x),
        Tensor::f32(&[n, r], y),
        Tensor::f16(&[r, n], h),
        Tensor::i32(&[r, n], k),
        Tensor::u32(&[r, n], u),
    ]
}

#[test]
fn sorts_with_ties_nan_and_zeros_over_every_fiber_length() {
    for (r, n, k) in [(3, 1, 1), (2, 7, 3), (3, 16, 16), (2, 300, 5), (1, SORT_CAPACITY as usize, 9)] {
        // `topk` needs `k` provably at most the axis' size, so the sizes are written into the program.
        let text = SORTS
            .replace("K]", &format!("{k}]"))
            .replace("(x, K)", &format!("(x, {k})"))
            .replace("N]", &format!("{n}]"))
            .replace("[N,", &format!("[{n},"));
        let graph = single_graph("gpu_sort.tdsl", &text);
        let inputs = sort_inputs(r, n);
        compare(&format!("gpu_sort.tdsl (R = {r}, N = {n})"), &graph, &inputs, &HashMap::new(), &{
            let mut tols = tols_by_dtype(&graph, Tol::Bits);
            // `x * 2.0 + 1.0` may be one fused multiply-add on the device.
            tols[13] = super::ARITH;
            tols
        });
    }
}

/// An index out of range in `take_along_axis` or `scatter_add` fails on both sides, naming the op.
#[test]
fn along_axis_indices_out_of_range_fail_on_both_sides() {
    let graph = single_graph(
        "gpu_along_errors.tdsl",
        "model m(x: f32[A, B], i: i32[A, J], s: f32[A, J]) -> (t: f32[A, J], a: f32[A, B]) {
            t = take_along_axis(x, i, axis: 1)
            a = scatter_add(x, i, s, axis: 1)
        }",
    );
    for bad in [5, -1] {
        let inputs = vec![
            seeded_tensor("x", DType::F32, &[2, 5], 7),
            Tensor::i32(&[2, 3], vec![0, 1, 2, 3, bad, 4]),
            seeded_tensor("s", DType::F32, &[2, 3], 7),
        ];
        let interp_error =
            interp::run(&graph, &inputs, &HashMap::new()).expect_err("the interpreter fails").to_string();
        assert!(interp_error.contains(&format!("index {bad} at [1, 1]")), "{interp_error}");
        let gpu_error = run_gpu(&graph, &inputs, &HashMap::new()).expect_err("the GPU fails").to_string();
        let op = if gpu_error.contains("(take_along_axis)") { "take_along_axis" } else { "scatter_add" };
        assert!(gpu_error.contains(&format!("({op})")), "{gpu_error}");
        assert!(gpu_error.contains(&format!("{}", bad as u32)) || gpu_error.contains(&bad.to_string()), "{gpu_error}");
    }
}

/// A fiber longer than `SORT_CAPACITY` is refused before dispatch (never sorted wrongly); one of exactly
/// `SORT_CAPACITY` is sorted (above).
#[test]
fn a_fiber_longer_than_a_sort_kernel_holds_is_refused() {
    let graph = single_graph("gpu_sort_long.tdsl", "model m(x: f32[N]) -> (y: i32[N]) { y = argsort(x) }");
    let n = SORT_CAPACITY as usize + 1;
    let inputs = vec![seeded_tensor("x", DType::F32, &[n], 7)];
    interp::run(&graph, &inputs, &HashMap::new()).expect("the interpreter sorts any length");
    let error = run_gpu(&graph, &inputs, &HashMap::new()).expect_err("the GPU refuses").to_string();
    assert!(error.contains("length of the fibers"), "{error}");
    assert!(error.contains(&SORT_CAPACITY.to_string()), "{error}");
}

/// Each output element of a scatter-add loops over its source fiber, so a long fiber is bounded by the
/// device's loop limit like a reduction: past it the launch is refused before dispatch, naming the op,
/// never cut short (llvmpipe would silently stop the loop and give a wrong sum).
#[test]
fn a_scatter_add_looping_past_the_device_limit_is_refused() {
    let graph = single_graph(
        "gpu_scatter_loops.tdsl",
        "model m(x: f32[A, B], i: i32[A, J], s: f32[A, J]) -> (y: f32[A, B]) {
            y = scatter_add(x, i, s, axis: 1)
        }",
    );
    let compiled = crate::util::compile(&graph).unwrap_or_else(|err| panic!("{err}"));
    let options = tdsl_runtime::GpuOptions { max_loop_iterations: Some(100), ..Default::default() };
    let small = tdsl_runtime::Gpu::new(&options).unwrap_or_else(|err| panic!("a device: {err}"));
    let inputs = |j: usize| {
        vec![
            seeded_tensor("x", DType::F32, &[2, 5], 7),
            Tensor::i32(&[2, j], spread(2 * j, 5)),
            seeded_tensor("s", DType::F32, &[2, j], 7),
        ]
    };
    let error = match small.execute(&compiled.program, &inputs(500), &HashMap::new()) {
        Ok(outputs) => panic!("a scatter-add looping 500 times ran under a limit of 100: {outputs:?}"),
        Err(err) => err.to_string(),
    };
    for says in ["loop iterations", "(scatter_add)", "(100;"] {
        assert!(error.contains(says), "the error `{error}` does not say `{says}`");
    }
    let within = inputs(40);
    let got = small.execute(&compiled.program, &within, &HashMap::new()).unwrap_or_else(|err| panic!("{err}"));
    let want = interp::run(&graph, &within, &HashMap::new()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(got[0].data, want[0].data, "the same sums in the same order");
}
