//! One small program per op family, each compared with the interpreter: layout ops (permute, reshape, slice
//! with steps and a symbolic start, concat of two and three operands along every axis, gather with i32 and
//! u32 indices along several axes), reductions (every reducer over one, several and all axes, for f32, i32
//! and u32), matmul (batched, rank-1 operands, size-1 and odd dimensions), index notation (padding with
//! `else`, strides, reversal, conv2d and pooling from std/nn), integer division and remainder (by zero,
//! `i32::MIN / -1`), row kernels (softmax, layer_norm, row statistics; long, short and many rows), long
//! reductions (a whole tensor's sum, a fused accuracy: within llvmpipe's loop limit on every profile), f16 arithmetic and casts, bools, size-1 dimensions and broadcasting, rank-0 values,
//! and outputs that are an input or a constant.
//!
//! Layout results must be bit-identical (`Tol::Bits`); other tolerances are the module's (see `gpu.rs`).

use std::collections::HashMap;

use half::f16;

use super::{ARITH, F16, Tol, compare, given, seeded, seeded_by_dtype, tols_by_dtype};
use crate::util::single_graph;
use tdsl_compiler::interp::Tensor;
use tdsl_compiler::ir::DType;
use tdsl_compiler::random::seeded_tensor;

/// A seeded tensor for a test that lists its inputs by hand (some seeded, some chosen).
fn seeded_input(name: &str, dtype: DType, shape: &[usize]) -> Tensor {
    seeded_tensor(name, dtype, shape, 7)
}

/// `len` indices spread over `0..size` (every value hit when `len >= size`), in a scrambled order.
fn spread(len: usize, size: usize) -> Vec<i64> {
    (0..len).map(|i| ((i * 7 + 3) % size) as i64).collect()
}

/// `k` f16 ulps of values up to `magnitude`: several roundings to f16, each of which may go either way
/// when the f32 values before it differ in their last bits (transcendental functions).
fn f16_ulps(k: f64, magnitude: f64) -> Tol {
    Tol::Close { atol: k * magnitude / 1024.0, rtol: k / 1024.0 }
}

fn i32s(shape: &[usize], values: Vec<i64>) -> Tensor {
    Tensor::i32(shape, values.into_iter().map(|v| v as i32).collect())
}

fn u32s(shape: &[usize], values: Vec<i64>) -> Tensor {
    Tensor::u32(shape, values.into_iter().map(|v| v as u32).collect())
}

// ---------------------------------------------------------------------------------------------------------
// Layout

#[test]
fn permute_and_transpose() {
    seeded_by_dtype(
        "gpu_permute.tdsl",
        "model m(x: f32[A, B, C], k: i32[A, B, C], b: bool[A, B, C], w: f32[A, 1, B, C], h: f16[A, B, C])
            -> (p: f32[C, A, B], q: i32[B, C, A], t: bool[A, C, B], u: f32[C, B, A], v: f32[B, C, A, 1],
                pp: f32[A, B, C], ph: f16[B, A, C], e: f32[C, A, B]) {
            p = permute(x, [2, 0, 1])
            q = permute(k, [1, 2, 0])
            t = transpose(b)
            u = transpose(x, 0, 2)
            v = permute(w, [2, 3, 0, 1])
            pp = permute(permute(x, [2, 0, 1]), [1, 2, 0])
            ph = permute(h, [1, 0, 2])
            e = permute(x * 2.0, [2, 0, 1])
        }",
        &[("A", 3), ("B", 5), ("C", 7)],
        Tol::Bits,
        &[],
    );
}

#[test]
fn reshape_of_contiguous_and_permuted_values() {
    seeded_by_dtype(
        "gpu_reshape.tdsl",
        "model m(x: f32[A, B, C], k: i32[A, B, C], b: bool[A, B])
            -> (r: f32[B, A * C], flat: f32[A * B * C], back: f32[A, B, C], ones: f32[1, A, 1, B * C, 1],
                pr: i32[C, A * B], s: f32[A * B, C], bb: bool[B, A], sq: f32[A, B * C]) {
            r = reshape(x, [B, A * C])
            flat = reshape(x, [-1])
            back = reshape(flat, [A, B, C])
            ones = reshape(x, [1, A, 1, -1, 1])
            pr = reshape(permute(k, [2, 0, 1]), [C, A * B])
            s = reshape(permute(x, [1, 0, 2]), [A * B, C])
            bb = reshape(b, [B, A])
            sq = squeeze(reshape(unsqueeze(x, 0), [1, A, B * C]), 0)
        }",
        &[("A", 3), ("B", 5), ("C", 7)],
        Tol::Bits,
        &[],
    );
}

#[test]
fn slices_with_steps_and_symbolic_starts() {
    seeded_by_dtype(
        "gpu_slice.tdsl",
        "model m(x: f32[3, 7, 9], z: f32[K + 9, C], k: i32[K], y: f32[A, B + 1, C], b: bool[7], w: f32[B])
            -> (s1: f32[3, 3, 9], s2: f32[3, 7, 3], s3: f32[3, C], s4: f32[1, 7, 9], s5: f32[3, 1, 9],
                s6: f32[A, B, C], s7: f32[A, B + 1, 1], s8: f32[2, C], s9: f32[A, B + 1, C], sb: bool[3],
                ss: f32[3, 2, 9], sc: f32[A, B, C]) {
            s1 = slice(x, axis: 1, start: 1, end: 7, step: 2)
            s2 = slice(x, axis: -1, start: 0, end: 9, step: 4)
            s3 = slice(z, axis: 0, start: K, end: K + 9, step: 4)
            s4 = slice(x, axis: 0, start: 2, end: 3)
            s5 = slice(x, 1, 6, 7, step: 5)
            s6 = slice(y, axis: 1, start: 1, end: B + 1)
            s7 = slice(y, axis: 2, start: C - 1, end: C)
            s8 = slice(z, axis: 0, start: K + 2, end: K + 9, step: 6)
            s9 = slice(y, axis: 0, start: 0, end: A)
            sb = slice(b, axis: 0, start: 1, end: 7, step: 2)
            ss = slice(slice(x, axis: 1, start: 1, end: 7, step: 2), axis: 1, start: 1, end: 3)
            sc = slice(y * 3.0, axis: 1, start: 1, end: B + 1)
        }",
        &[("A", 3), ("B", 5), ("C", 7), ("K", 4)],
        Tol::Bits,
        &[],
    );
}

#[test]
fn concat_along_every_axis() {
    seeded_by_dtype(
        "gpu_concat.tdsl",
        "model m(a: f32[A, B, C], b: f32[A, 1, C], c: f32[A, 2, C], d: f32[1, B, C], e: f32[A, B, 1],
                 k: i32[A, B], l: i32[A, 3], p: bool[A, B], q: bool[1, B], u: u32[A], w: u32[2])
            -> (c1: f32[A, B + 3, C], c0: f32[A + 1, B, C], c2: f32[A, B, 2 * C + 1], ci: i32[A, B + 3],
                cb: bool[A + 1, B], cu: u32[A + 2 + A], cx: f32[A, B + 1, C], cs: f32[A, 2, C]) {
            c1 = concat(a, b, c, axis: 1)
            c0 = concat(a, d, axis: 0)
            c2 = concat(a, e, a, axis: 2)
            ci = concat(k, l, axis: -1)
            cb = concat(p, q)
            cu = concat(u, w, u)
            cx = concat(a * 2.0, permute(b, [0, 1, 2]) - 1.0, axis: 1)
            cs = slice(concat(a, b, c, axis: 1), axis: 1, start: B - 1, end: B + 1)
        }",
        &[("A", 3), ("B", 5), ("C", 7)],
        Tol::Bits,
        &[],
    );
}

#[test]
fn gather_with_i32_and_u32_indices_along_several_axes() {
    let graph = single_graph(
        "gpu_gather.tdsl",
        "model m(t: f32[V, D], ids: i32[A, B], uids: u32[A], t3: f32[P, V, D], idx: i32[E], bt: bool[V, D],
                 kt: i32[V], dix: u32[E], one: i32[])
            -> (g0: f32[A, B, D], g1: f32[A, D], g2: f32[P, E, D], g3: f32[P, V, E], gb: bool[A, B, D],
                gk: i32[A, B], g4: f32[P, A, B, D], gs: f32[D], gc: f32[A, B, D]) {
            g0 = gather(t, ids)
            g1 = gather(t, uids)
            g2 = gather(t3, idx, axis: 1)
            g3 = gather(t3, dix, axis: -1)
            gb = gather(bt, ids, axis: 0)
            gk = gather(kt, ids)
            g4 = gather(t3, ids, axis: 1)
            gs = gather(t, one)
            gc = gather(t * 2.0, (ids + 1) % V)
        }",
    );
    let (v, d, a, b, p, e) = (11, 5, 3, 7, 2, 9);
    let inputs = vec![
        seeded_input("t", DType::F32, &[v, d]),
        i32s(&[a, b], spread(a * b, v)),
        u32s(&[a], spread(a, v)),
        seeded_input("t3", DType::F32, &[p, v, d]),
        i32s(&[e], spread(e, v)),
        seeded_input("bt", DType::Bool, &[v, d]),
        i32s(&[v], (0..v as i64).map(|i| i * 1000 - 5000).collect()),
        u32s(&[e], spread(e, d)),
        i32s(&[], vec![v as i64 - 1]),
    ];
    compare("gpu_gather.tdsl", &graph, &inputs, &HashMap::new(), &tols_by_dtype(&graph, Tol::Bits));
}

// ---------------------------------------------------------------------------------------------------------
// Reductions and matmul

#[test]
fn float_reductions_over_one_several_and_all_axes() {
    // The largest reduction is over all 3 * 5 * 7 = 105 elements.
    seeded(
        "gpu_reduce_f32.tdsl",
        "model m(x: f32[A, B, C])
            -> (s0: f32[B, C], s1: f32[A, C], s12: f32[A], sall: f32[], mx: f32[A, C], mn: f32[C], me: f32[A, B],
                mek: f32[A, 1, C], pr: f32[A, B], mxall: f32[], mnk: f32[1, 1, 1], sp: f32[C, A], se: f32[A],
                pall: f32[], mean_all: f32[]) {
            s0 = sum(x, axis: 0)
            s1 = sum(x, axis: 1)
            s12 = sum(x, axis: [1, 2])
            sall = sum(x)
            mx = max(x, axis: 1)
            mn = min(x, axis: [0, 1])
            me = mean(x, axis: -1)
            mek = mean(x, axis: 1, keepdims: true)
            pr = prod(x, axis: 2)
            mxall = max(x)
            mnk = min(x, axis: [0, 1, 2], keepdims: true)
            sp = sum(permute(x, [2, 0, 1]), axis: 2)
            se = sum(exp(x), axis: [1, 2])
            pall = prod(x + 1.0)
            mean_all = mean(x)
        }",
        &[("A", 3), ("B", 5), ("C", 7)],
        &[
            Tol::reduction(3),
            Tol::reduction(5),
            Tol::reduction(35),
            Tol::reduction(105),
            Tol::Bits,
            Tol::Bits,
            Tol::reduction(7),
            Tol::reduction(5),
            Tol::reduction(7),
            Tol::Bits,
            Tol::Bits,
            Tol::reduction(5),
            Tol::reduction(35).times(4.0),
            Tol::reduction(105),
            Tol::reduction(105),
        ],
    );
}

#[test]
fn integer_reductions_wrap() {
    let graph = single_graph(
        "gpu_reduce_int.tdsl",
        "model m(k: i32[A, B, C], u: u32[A, B, C])
            -> (ks: i32[B, C], kmax: i32[A], kmin: i32[], kp: i32[A, C], kall: i32[], big: i32[A],
                us: u32[C], umax: u32[A, B], umin: u32[A], up: u32[], ubig: u32[], kpw: i32[A, B]) {
            ks = sum(k, axis: 0)
            kmax = max(k, axis: [1, 2])
            kmin = min(k)
            kp = prod(k, axis: 1)
            kall = sum(k)
            big = sum(k * 400000000, axis: [1, 2])
            us = sum(u, axis: [0, 1])
            umax = max(u, axis: 2)
            umin = min(u, axis: [1, 2])
            up = prod(u % 3 + 1)
            ubig = sum(u * 3000000000)
            kpw = prod(k * 1000, axis: 2)
        }",
    );
    let (a, b, c) = (3, 5, 7);
    let n = a * b * c;
    let k: Vec<i64> = (0..n as i64).map(|i| (i * 37 % 23) - 11).collect();
    let u: Vec<i64> = (0..n as i64).map(|i| if i % 17 == 3 { u32::MAX as i64 - i } else { i * 13 % 29 }).collect();
    let inputs = vec![i32s(&[a, b, c], k), u32s(&[a, b, c], u)];
    compare("gpu_reduce_int.tdsl", &graph, &inputs, &HashMap::new(), &[Tol::Exact; 12]);
}

const MATMUL: &str = "model m(a: f32[M, K], b: f32[K, N], v: f32[K], ba: f32[B, M, K], bb: f32[B, K, N],
                              one: f32[1, K], col: f32[K, 1], b4a: f32[B, 1, M, K], b4b: f32[1, H, K, N],
                              h: f16[M, K], hb: f16[K, N], w: f32[M])
    -> (c: f32[M, N], mv: f32[M], vm: f32[N], vv: f32[], bc: f32[B, M, N], bw: f32[B, M, N], oc: f32[1, 1],
        outer: f32[K, K], b4: f32[B, H, M, N], hc: f16[M, N], wa: f32[K], ct: f32[N, M], chain: f32[M, N]) {
    c = a @ b
    mv = a @ v
    vm = v @ b
    vv = v @ v
    bc = ba @ bb
    bw = ba @ b
    oc = one @ col
    outer = col @ one
    b4 = b4a @ b4b
    hc = h @ hb
    wa = w @ a
    ct = transpose(b) @ transpose(a)
    chain = (a @ transpose(a)) @ (a @ b)
}";

#[test]
fn row_kernels_over_long_short_and_many_rows() {
    // Row kernels (one workgroup per row, workgroup tree reductions): a symbolic row of 300 (workgroup 64,
    // five strides), a constant row of 700 (workgroup 256, three strides), 70000 rows of 3 (more workgroups
    // than one grid dimension holds: the grid folds), an integer row statistic, and a matmul cached per row
    // in workgroup memory under a layer_norm. Each output is one kernel (`fusion.rs` pins that).
    seeded(
        "gpu_rows.tdsl",
        "import \"std/nn\"
        model m(x: f32[R, C], y: f32[M, 3], z: f32[R, 700], k: i32[R, C], g: f32[700], b: f32[700],
                h: f32[R, 40], w: f32[40, 700])
            -> (sm: f32[R, C], many: f32[M, 3], ln: f32[R, 700], ci: i32[R, C], lnmm: f32[R, 700], l2: f32[R, C]) {
            sm = softmax(x)
            many = softmax(y)
            ln = layer_norm(z, g, b, eps: 1e-5)
            ci = k - max(k, axis: 1, keepdims: true) + sum(k, axis: 1, keepdims: true)
            lnmm = layer_norm(h @ w + z, g, b, eps: 1e-5)
            l2 = l2_normalize(x)
        }",
        &[("R", 5), ("C", 300), ("M", 70000)],
        &[
            Tol::reduction(300).times(4.0),
            Tol::reduction(3).times(4.0),
            Tol::reduction(700).times(4.0),
            Tol::Exact,
            Tol::reduction(700).times(8.0),
            Tol::reduction(300),
        ],
    );
}

/// Short constant rows share a workgroup on the gpu profile (a power of two of lanes per row, several rows
/// per workgroup): row lengths 1, 3, 5 and 16, and 37 rows, so the last workgroup has rows past the end
/// (they must store nothing); an integer row statistic must be exact.
#[test]
fn short_rows_sharing_a_workgroup() {
    seeded(
        "gpu_short_rows.tdsl",
        "import \"std/nn\"
        model m(w: f32[R, 1], x: f32[R, 3], y: f32[R, 16], k: i32[R, 5])
            -> (a: f32[R, 1], b: f32[R, 3], c: f32[R, 16], d: i32[R, 5]) {
            a = softmax(w)
            b = softmax(x)
            c = LayerNorm[\"n\"](y, eps: 1e-5)
            d = k - max(k, axis: 1, keepdims: true) + sum(k, axis: 1, keepdims: true)
        }",
        &[("R", 37)],
        &[Tol::reduction(1).times(4.0), Tol::reduction(3).times(4.0), Tol::reduction(16).times(8.0), Tol::Exact],
    );
}

/// Row max and min keep the interpreter's rules for NaN (any NaN in the row gives NaN) and signed zeros
/// (max(-0, +0) = +0, min = -0) however the row is split across invocations and subgroups: `1 / max` turns
/// the sign of a zero into an infinity, and both row lengths (a symbolic 100: 64 invocations; a constant
/// 700: 256) put the special values in different invocations and subgroups. The root adds an input of
/// zeros (not `x * 0.0`, which drivers may fold to 0 even for an infinite or NaN `x`: Vulkan does not
/// promise NaN and infinity preservation without float controls).
#[test]
fn row_max_and_min_keep_nan_and_signed_zero_rules() {
    let row = |len: usize, r: usize| -> Vec<f32> {
        (0..len)
            .map(|j| match r {
                0 if j == 77 => f32::NAN,
                1 => {
                    if j % 3 == 0 {
                        0.0
                    } else {
                        -0.0
                    }
                }
                2 => {
                    if j == len - 1 {
                        0.0
                    } else {
                        -0.0
                    }
                }
                3 => {
                    if j == 5 {
                        f32::NEG_INFINITY
                    } else {
                        -0.0
                    }
                }
                _ => ((j * 37 + r * 11) % 101) as f32 - 50.0,
            })
            .collect()
    };
    let rows = |len: usize| Tensor::f32(&[5, len], (0..5).flat_map(|r| row(len, r)).collect());
    let zeros = |len: usize| Tensor::f32(&[5, len], vec![0.0; 5 * len]);
    given(
        "row_signs.tdsl",
        "model m(x: f32[R, C], y: f32[R, 700], zx: f32[R, C], zy: f32[R, 700])
            -> (a: f32[R, C], b: f32[R, C], c: f32[R, 700], d: f32[R, 700]) {
            a = zx + 1.0 / max(x, axis: 1, keepdims: true)
            b = zx + 1.0 / min(x, axis: 1, keepdims: true)
            c = zy + 1.0 / max(y, axis: 1, keepdims: true)
            d = zy + 1.0 / min(y, axis: 1, keepdims: true)
        }",
        vec![rows(100), rows(700), zeros(100), zeros(700)],
        Tol::Exact,
    );
}

/// argmax and argmin give the interpreter's first extreme (PyTorch's) however a row is split across
/// invocations, subgroups and workgroup trees: rows of few distinct values (ties everywhere, the first
/// maximum late in the row), rows with NaN at two places (the first wins), all -inf, signed zeros. Stored
/// long rows (1500 and a symbolic 2000: one workgroup per row), an argmax inline in a row kernel read back
/// by every element (keepdims), short rows sharing a workgroup, axis 0 and the whole tensor (one
/// invocation per output), integers and f16.
#[test]
fn argmax_and_argmin_keep_the_first_extreme_on_every_schedule() {
    let row = |len: usize, r: usize| -> Vec<f32> {
        (0..len)
            .map(|j| match r {
                0 => ((j * 37 + 11) % 5) as f32,
                1 if j == len / 3 || j == len - 2 => f32::NAN,
                2 => f32::NEG_INFINITY,
                3 => {
                    if j % 2 == 0 {
                        0.0
                    } else {
                        -0.0
                    }
                }
                4 if j == len - 1 || j == len / 2 => 9.0,
                _ => ((j * 13 + r * 7) % 11) as f32 - 5.0,
            })
            .collect()
    };
    let rows = |n: usize, len: usize| Tensor::f32(&[n, len], (0..n).flat_map(|r| row(len, r % 6)).collect());
    let ints =
        |n: usize, len: usize| Tensor::i32(&[n, len], (0..n * len).map(|i| ((i * 7919) % 5) as i32 - 2).collect());
    let halves = |n: usize, len: usize| {
        Tensor::f16_from_f32(&[n, len], &(0..n).flat_map(|r| row(len, r % 6)).collect::<Vec<_>>())
    };
    given(
        "gpu_argmax.tdsl",
        "model m(x: f32[6, 1500], y: f32[6, C], s: f32[7, 5], k: i32[5, 700], h: f16[6, 40])
            -> (a: i32[6], b: i32[6], c: i32[6], d: i32[6], e: f32[6, C], f: f32[7, 5], g: i32[1500],
                all: i32[], ka: i32[5], kb: i32[700], ha: i32[6], hb: i32[40]) {
            a = argmax(x, axis: 1)
            b = argmin(x * 2.0, axis: -1)
            c = argmax(y, axis: 1)
            d = argmin(y, axis: 1)
            e = y - f32(argmax(y, axis: 1, keepdims: true))
            f = s + f32(argmin(s, axis: 1, keepdims: true))
            g = argmax(x, axis: 0)
            all = argmin(x)
            ka = argmax(k, axis: 1)
            kb = argmin(k, axis: 0)
            ha = argmax(h, axis: 1)
            hb = argmin(h, axis: 0)
        }",
        vec![rows(6, 1500), rows(6, 2000), rows(7, 5), ints(5, 700), halves(6, 40)],
        Tol::Exact,
    );
}

/// cumsum along every axis of f32, f16, i32 and u32 tensors, symbolic and constant, with a producer fused
/// in. The scan kernel adds chunk totals before the chunk (`kernel/scan.rs`), not in the interpreter's
/// order: floats within a reduction's tolerance over the longest axis (f16 one ulp, rounded once), integers
/// exact (they wrap alike in any order).
#[test]
fn cumsum_matches_the_interpreter() {
    seeded_by_dtype(
        "gpu_cumsum.tdsl",
        "model m(x: f32[A, B, C], h: f16[A, B], k: i32[A, B], u: u32[B, C])
            -> (c0: f32[A, B, C], c1: f32[A, B, C], c2: f32[A, B, C], ch: f16[A, B], ck: i32[A, B], cu: u32[B, C],
                fused: f32[A, B, C]) {
            c0 = cumsum(x, axis: 0)
            c1 = cumsum(x, axis: 1)
            c2 = cumsum(x, axis: -1)
            ch = cumsum(h, axis: 1)
            ck = cumsum(k, axis: 0)
            cu = cumsum(u, axis: 1)
            fused = relu(cumsum(x * 2.0 - 1.0, axis: 2))
        }",
        &[("A", 3), ("B", 37), ("C", 300)],
        Tol::reduction(300),
        &[],
    );
}

/// A fiber of 200000 elements, far past what one invocation may loop over on llvmpipe (65535 iterations):
/// the scan kernel's `W` lanes (`SYMBOLIC_SCAN_LANES` for a symbolic length) loop `2 (ceil(N / W) + 16) +
/// W` times each. The f32 sums are within the chunked order's rounding bound of the exact (f64) prefix
/// sums, that many times EPS times the prefix's sum of magnitudes, and the i32 sums (wrapping) equal the
/// interpreter's exactly. Under a small loop limit the same launch is refused before dispatch, naming the op.
#[test]
fn a_long_cumsum_scans_in_chunks() {
    let graph = single_graph(
        "gpu_cumsum_long.tdsl",
        "model m(x: f32[N], k: i32[N]) -> (c: f32[N], ck: i32[N]) {
            c = cumsum(x * 2.0, axis: 0)
            ck = cumsum(k, axis: 0)
        }",
    );
    let n = 200_000usize;
    let ints: Vec<i32> = (0..n).map(|i| (i as i32).wrapping_mul(2_654_435_761u32 as i32)).collect();
    let inputs = vec![seeded_tensor("x", DType::F32, &[n], 7), Tensor::i32(&[n], ints)];
    let want = tdsl_compiler::interp::run(&graph, &inputs, &HashMap::new()).unwrap_or_else(|err| panic!("{err}"));
    let got = super::run_gpu(&graph, &inputs, &HashMap::new()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(got[1].data, want[1].data, "i32 prefix sums wrap alike");
    let lanes = tdsl_compiler::codegen::schedule::SYMBOLIC_SCAN_LANES as usize;
    let depth = (2 * (n.div_ceil(lanes) + 16) + lanes) as f64;
    let (mut exact, mut magnitude, mut worst_gpu, mut worst_interp) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for ((x, g), w) in inputs[0].to_f64_vec().iter().zip(got[0].to_f64_vec()).zip(want[0].to_f64_vec()) {
        exact += 2.0 * x;
        magnitude += (2.0 * x).abs();
        let error = (g - exact).abs();
        assert!(error <= depth * super::EPS * magnitude, "{g} against the exact {exact} ({magnitude} in magnitudes)");
        worst_gpu = worst_gpu.max(error / magnitude);
        worst_interp = worst_interp.max((w - exact).abs() / magnitude);
    }
    eprintln!("cumsum of {n}: worst error / prefix magnitude: GPU {worst_gpu:e}, interpreter {worst_interp:e}");
    let compiled = crate::util::compile(&graph).unwrap_or_else(|err| panic!("{err}"));
    let options = tdsl_runtime::GpuOptions { max_loop_iterations: Some(1000), ..Default::default() };
    let small = tdsl_runtime::Gpu::new(&options).unwrap_or_else(|err| panic!("a device: {err}"));
    let error = match small.execute(&compiled.program, &inputs, &HashMap::new()) {
        Ok(_) => panic!("a scan looping {depth} times per invocation ran under a limit of 1000"),
        Err(err) => err.to_string(),
    };
    for says in ["loop iterations", "(cumsum)", "(1000;"] {
        assert!(error.contains(says), "the error `{error}` does not say `{says}`");
    }
}

#[test]
fn matmul_with_size_one_and_odd_dimensions() {
    let shapes: [[i64; 5]; 5] = [[1, 1, 1, 1, 1], [3, 5, 7, 2, 3], [5, 1, 3, 1, 2], [1, 9, 1, 3, 1], [17, 33, 9, 2, 1]];
    for [m, k, n, b, h] in shapes {
        let name = format!("gpu_matmul_m{m}_k{k}_n{n}_b{b}_h{h}.tdsl");
        let sizes = [("M", m), ("K", k), ("N", n), ("B", b), ("H", h)];
        // `chain` contracts over K, then M: its error grows with both.
        let reduce = Tol::reduction(k as usize);
        let chain = Tol::reduction((k * m * 2) as usize);
        let tols = [
            reduce,
            reduce,
            reduce,
            reduce,
            reduce,
            reduce,
            reduce,
            Tol::Bits,
            reduce,
            F16,
            Tol::reduction(m as usize),
            reduce,
            chain,
        ];
        seeded(&name, MATMUL, &sizes, &tols);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Long reductions: llvmpipe ends every loop of an invocation after 65535 iterations in all, silently, so a
// reduction one invocation would loop over that long runs as a row kernel (a workgroup per output).

/// The loop iterations one invocation of each launch of `graph` runs at `sizes`, for every profile, are
/// within llvmpipe's limit (so the schedules avoid it on every device, not only where it is checked).
fn assert_within_llvmpipe(graph: &tdsl_compiler::ir::Graph, sizes: &[(&str, i64)]) {
    let symbols = super::symbol_values(graph, sizes, 3);
    for target in tdsl_compiler::codegen::target::TARGETS {
        let compiled = crate::util::compile_with(graph, &crate::util::options(true, target))
            .unwrap_or_else(|err| panic!("{}: {err}", graph.name));
        for launch in &compiled.program.launches {
            for bound in &launch.bounds {
                let tdsl_runtime::BoundKind::LoopIterations { .. } = bound.what else { continue };
                let iterations = bound.value.eval_at(&symbols).expect("the loop count evaluates");
                assert!(
                    iterations <= tdsl_runtime::gpu::LLVMPIPE_LOOP_LIMIT,
                    "{} ({} profile): launch {} loops {iterations} times per invocation",
                    graph.name,
                    target.name,
                    launch.name
                );
            }
        }
    }
}

#[test]
fn whole_tensor_sums_split_across_a_workgroup() {
    let text = "model m(x: f32[N, K], c: f32[1024, 256]) -> (total: f32[], mean: f32[], rows: f32[N]) {
        total = sum(x)
        mean = mean(c * 2.0)
        rows = sum(x, axis: 1)
    }";
    let graph = crate::util::single_graph("gpu_long_sum.tdsl", text);
    let sizes = [("N", 1024), ("K", 256)];
    assert_within_llvmpipe(&graph, &sizes);
    let ones = Tensor::f32(&[1024, 256], vec![1.0; 1024 * 256]);
    let inputs = vec![ones.clone(), seeded_input("c", DType::F32, &[1024, 256])];
    let expected = crate::util::run(&graph, inputs.clone(), &[]);
    assert_eq!(expected[0].to_f64_vec(), [262144.0], "the interpreter's sum of ones");
    let actual = super::run_gpu(&graph, &inputs, &HashMap::new()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(actual[0].to_f64_vec(), [262144.0], "every one of the 262144 ones is counted");
    super::compare("gpu_long_sum.tdsl", &graph, &inputs, &HashMap::new(), &[Tol::Exact, Tol::reduction(1024), ARITH]);
}

/// An accuracy: per row, whether the target's logit is the largest, averaged over the rows; fused into
/// one kernel whose root reduces the rows and whose rows each reduce their columns twice.
#[test]
fn fused_accuracy_counts_every_row() {
    let (n, k) = (1024usize, 256usize);
    let logits = seeded_input("logits", DType::F32, &[n, k]);
    let values: Vec<f64> = logits.to_f64_vec();
    let mut onehot = vec![0.0f32; n * k];
    for row in 0..n {
        let cells = &values[row * k..(row + 1) * k];
        let best = (0..k).fold(0, |b, j| if cells[j] > cells[b] { j } else { b });
        // Every other row right, the others (mostly) wrong.
        onehot[row * k + if row % 2 == 0 { best } else { (row * 7) % k }] = 1.0;
    }
    let inputs = vec![Tensor::f32(&[n, k], onehot), logits];
    for (name, shape) in [("gpu_accuracy.tdsl", "N, K"), ("gpu_accuracy_fixed.tdsl", "1024, 256")] {
        let text = format!(
            "model m(onehot: f32[{shape}], logits: f32[{shape}]) -> (accuracy: f32[]) {{
                accuracy = mean(f32(sum(onehot * logits, axis: 1) >= max(logits, axis: 1)))
            }}"
        );
        let graph = crate::util::single_graph(name, &text);
        let compiled = crate::util::compile(&graph).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(compiled.program.launches.len(), 1, "{name}: one fused kernel");
        assert_within_llvmpipe(&graph, &[("N", 1024), ("K", 256)]);
        let expected = crate::util::run(&graph, inputs.clone(), &[]);
        let accuracy = expected[0].to_f64_vec()[0];
        assert!((0.5..0.52).contains(&accuracy), "{name}: the interpreter's accuracy is {accuracy}");
        super::compare(name, &graph, &inputs, &HashMap::new(), &[Tol::Exact]);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Index notation

#[test]
fn index_notation_with_padding_strides_and_reversal() {
    seeded(
        "gpu_map.tdsl",
        "model m(x: f32[N], g: f32[H, W], k: i32[N], u: u32[H, W], h: f16[N])
            -> (shift: f32[N], wide: f32[N + 2], blur: f32[H, W], rev: f32[N], kk: i32[N], down: f32[N / 2],
                edge: u32[H + 1, W + 1], tr: f32[W, H], ramp: i32[H, W], hh: f16[N + 1], mx: f32[H],
                where_pad: f32[N], cumsum: f32[N]) {
            shift[i: N] = x[i - 1] else 0.0
            wide[i: N + 2] = x[i - 1] else -1.5
            blur[i: H, j: W] = sum[r: 3, s: 3](g[i + r - 1, j + s - 1] else 0.0) / 9.0
            rev[i: N] = x[N - 1 - i]
            kk[i: N] = k[i + 1] else -7
            down[i: N / 2] = x[2 * i + 1]
            edge[i: H + 1, j: W + 1] = u[i - 1, j] else 4000000000
            tr[j, i] = g[i, j]
            ramp[i: H, j: W] = i * W + j - 3
            hh[i: N + 1] = h[i] else 0.5
            mx[i] = max[j](g[i, j] * 2.0)
            where_pad[i: N] = where(x[i] > 0.0, x[i - 1] else 2.0, x[i + 1] else -2.0)
            cumsum[i: N] = sum[j: N](where(j <= i, x[j], 0.0))
        }",
        &[("N", 9), ("H", 5), ("W", 7)],
        &[
            Tol::Bits,
            Tol::Bits,
            ARITH.times(9.0),
            Tol::Bits,
            Tol::Exact,
            Tol::Bits,
            Tol::Exact,
            Tol::Bits,
            Tol::Exact,
            F16,
            Tol::Bits,
            Tol::Bits,
            Tol::reduction(9),
        ],
    );
}

#[test]
fn convolution_and_pooling_from_std_nn() {
    // conv2d sums C * 3 * 3 = 27 products; avg pooling 3 * 3 = 9 values.
    let text = "import \"std/nn\"
        model m(x: f32[B, C, H, W], w: f32[K, C, 3, 3], w2: f32[K, C, 2, 2])
            -> (c1: f32[B, K, H, W], c2: f32[B, K, (H - 1) / 2 + 1, (W - 1) / 2 + 1],
                c3: f32[B, K, (H - 2) / 3 + 1, (W - 2) / 3 + 1], mp: f32[B, C, (H - 2) / 2 + 1, (W - 2) / 2 + 1],
                ap: f32[B, C, (H - 3) / 2 + 1, (W - 3) / 2 + 1], g: f32[B, C], c4: f32[B, K, H + 2, W + 2]) {
            c1 = conv2d(x, w, padding: 1)
            c2 = conv2d(x, w, stride: 2, padding: 1)
            c3 = conv2d(x, w2, stride: 3)
            mp = max_pool2d(x, 2, 2)
            ap = avg_pool2d(x, 3, 2)
            g = global_avg_pool(x)
            c4 = conv2d(x, w, padding: 2)
        }";
    for (h, w) in [(7, 9), (5, 5), (8, 3)] {
        let conv = Tol::reduction(27);
        let tols = [conv, conv, Tol::reduction(12), Tol::Bits, Tol::reduction(9), Tol::reduction(h * w), conv];
        let sizes = [("B", 2), ("C", 3), ("H", h as i64), ("W", w as i64), ("K", 4)];
        seeded(&format!("gpu_conv_{h}x{w}.tdsl"), text, &sizes, &tols);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Integer division, f16, bool

#[test]
fn integer_division_and_remainder_follow_wgsl() {
    let text = "model m(a: i32[L], b: i32[L], c: u32[L], d: u32[L], x: f32[L], y: f32[L])
        -> (q: i32[L], r: i32[L], uq: u32[L], ur: u32[L], mq: i32[L], mr: i32[L], m1: i32[L], m1r: i32[L],
            fr: f32[L], muq: u32[L], neg: i32[L]) {
        q = a / b
        r = a % b
        uq = c / d
        ur = c % d
        mq[i] = a[i] / b[i]
        mr[i] = a[i] % b[i]
        m1 = a / -1
        m1r = a % -1
        fr = x % y
        muq[i] = c[i] / d[i] + c[i] % d[i]
        neg = -a / 3 + (-a) % 3
    }";
    let min = i32::MIN as i64;
    let max = i32::MAX as i64;
    let a = vec![7, -7, 7, -7, min, min, 5, 0, -1, max, 13, -13, min, max, 1, -1, 100, -100];
    let b = vec![2, 2, -2, -2, -1, 1, 0, 0, 0, -1, 5, 0, min, min, max, min, 7, -7];
    let umax = u32::MAX as i64;
    let c = vec![7, 0, umax, umax, 5, 0, 1, 100, 3000000000, 13, 2, umax, 9, 0, 1, 2, 3, 4];
    let d = vec![2, 0, 0, 1, umax, 3, umax, 7, 7, 0, 3, 2, 9, 0, 1, 3, 4, 5];
    let len = a.len();
    let x: Vec<f32> = (0..len).map(|i| (i as f32 - 7.5) * 0.7).collect();
    let y: Vec<f32> = (0..len).map(|i| if i % 3 == 0 { -1.25 } else { 0.5 + i as f32 * 0.1 }).collect();
    let inputs = vec![
        i32s(&[len], a),
        i32s(&[len], b),
        u32s(&[len], c),
        u32s(&[len], d),
        Tensor::f32(&[len], x),
        Tensor::f32(&[len], y),
    ];
    given("gpu_int_div.tdsl", text, inputs, ARITH);
}

/// A literal zero divisor: the interpreter gives `x / 0 = x` and `x % 0 = 0`, as for a zero read at run
/// time. (This found that a zero divisor the kernel sees as a constant makes naga reject the module.)
#[test]
fn integer_division_by_a_literal_zero() {
    let text = "model m(a: i32[L], c: u32[L])
        -> (z: i32[L], zr: i32[L], uz: u32[L], uzr: u32[L], mz: i32[L], mzr: u32[L]) {
        z = a / 0
        zr = a % 0
        uz = c / 0
        uzr = c % 0
        mz[i] = a[i] / 0
        mzr[i] = c[i] % 0
    }";
    let a = vec![7, -7, 0, i32::MIN as i64, i32::MAX as i64];
    let c = vec![7, 0, 1, u32::MAX as i64, 3];
    given("gpu_int_div_zero.tdsl", text, vec![i32s(&[5], a), u32s(&[5], c)], Tol::Exact);
}

#[test]
fn f16_arithmetic_casts_and_reductions() {
    // Every f16 result is one rounding from values both sides compute alike, so one f16 ulp; the f32
    // outputs computed from f16 values are exact or one f32 op away.
    seeded_by_dtype(
        "gpu_f16.tdsl",
        "model m(h: f16[N, D], g: f16[D], x: f32[N, D], k: i32[N, D])
            -> (s: f16[N, D], p: f16[N, D], q: f16[N, D], e: f16[N, D], r: f16[N, D], c32: f32[N, D],
                c16: f16[N, D], ci: i32[N, D], cu: u32[N, D], cb: bool[N, D], ki: f16[N, D], hs: f16[N],
                hm: f16[D], hmax: f16[N], lt: bool[N, D], w: f16[N, D], ov: f16[N, D], tiny: f16[N, D],
                pw: f16[N, D], lg: f16[N, D], sg: f16[N, D], hp: f16[N], mi: f16[N, D]) {
            s = h + g
            p = h * g - h
            q = h / (abs(g) + 0.5)
            e = exp(h) + tanh(g)
            r = sqrt(abs(h)) + rsqrt(abs(h) + 1.0)
            c32 = f32(h) * 3.0
            c16 = f16(x)
            ci = i32(h * 100.0)
            cu = u32(abs(h) * 50.0)
            cb = bool(h)
            ki = f16(k) + h
            hs = sum(h, axis: 1)
            hm = mean(h, axis: 0)
            hmax = max(h, axis: 1)
            lt = h < g
            w = where(h > g, h, g * 2.0)
            ov = f16(x * 100000.0)
            tiny = f16(x * 0.00001)
            pw = (abs(h) + 0.5) ^ g + h ^ 3
            lg = log(abs(h) + 0.25) + erf(h) + sigmoid(g) + sin(h) * cos(g)
            sg = -h + relu(g) - floor(h * 4.0) + ceil(g * 4.0)
            hp = prod(h + 1.0, axis: 1)
            mi = min(h, g) - max(h, 0.25)
        }",
        &[("N", 5), ("D", 11)],
        ARITH,
        &[
            ("e", f16_ulps(2.0, 4.0)),
            ("r", f16_ulps(2.0, 2.0)),
            ("q", F16.times(2.0)),
            ("pw", f16_ulps(4.0, 2.0)),
            ("lg", f16_ulps(4.0, 4.0)),
        ],
    );
}

#[test]
fn f16_special_values() {
    let text = "model m(h: f16[L], x: f32[L])
        -> (s: f16[L], i: i32[L], b: bool[L], c: f16[L], f: f32[L], lo: f16[L], q: f16[L]) {
        s = h * 2.0
        i = i32(h)
        b = bool(h)
        c = f16(x)
        f = f32(h)
        lo = min(h, f16(x))
        q = h / f16(x)
    }";
    let h: Vec<f32> = vec![
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        65504.0,
        -65504.0,
        6.1e-5,
        1.0,
        -2.5,
        40000.0,
        0.333_251_95,
        3e4,
    ];
    let x: Vec<f32> =
        vec![1.0, f32::NAN, 70000.0, 0.0, -0.0, 65520.0, -65519.0, 1e-8, 1.000_488_3, 1.000_976_6, 0.5, 2049.0, -0.0];
    let len = h.len();
    let inputs = vec![Tensor::f16_from_f32(&[len], &h), Tensor::f32(&[len], x)];
    given("gpu_f16_special.tdsl", text, inputs, F16);
}

#[test]
fn bool_logic_selects_and_casts() {
    seeded_by_dtype(
        "gpu_bool.tdsl",
        "model m(p: bool[N, D], q: bool[D], x: f32[N, D])
            -> (a: bool[N, D], o: bool[N, D], n: bool[N, D], e: bool[N, D], ne: bool[N, D], w: bool[N, D],
                i: i32[N, D], f: f32[N, D], u: u32[N, D], wf: f32[N, D], t: bool[D, N], cat: bool[N + 1, D],
                lit: bool[N, D], cmp: bool[N, D], h: f16[N, D]) {
            a = p && q
            o = p || !q
            n = !p
            e = p == q
            ne = p != q
            w = where(p, q, !q)
            i = i32(p) + i32(q)
            f = f32(p) - f32(q) * 0.5
            u = u32(p && q)
            wf = where(p, x, -x)
            t = transpose(p)
            cat = concat(p, reshape(q, [1, D]))
            lit = where(p, true, q)
            cmp = (x > 0.0) == p
            h = f16(p) * 0.5
        }",
        &[("N", 7), ("D", 5)],
        ARITH,
        &[],
    );
}

// ---------------------------------------------------------------------------------------------------------
// Shapes: size-1 dimensions, broadcasting, rank 0, pass-through and constant outputs

const BROADCAST: &str = "model m(a: f32[1, N], b: f32[M, 1], c: f32[1, 1, 1], s: f32[], v: f32[N], k: i32[1],
                                 one: f32[B, 1, N], kb: i32[M, 1])
    -> (ab: f32[M, N], abc: f32[1, M, N], sv: f32[N], bt: f32[B, M, N], kk: i32[M, N], st: f32[M, N],
        bb: f32[3, M, N], vb: f32[M, N], sel: f32[B, M, N], ki: i32[M, N]) {
    ab = a + b
    abc = a * b - c
    sv = s * v + s
    bt = one + b
    kk = i32(b > 0.0) + i32(a > 0.0) + k
    st = broadcast_to(s, [M, N])
    bb = broadcast_to(a, [3, M, N])
    vb = v - b
    sel = where(one > 0.0, b, a)
    ki = kb * k + kb + i32(a < 0.0)
}";

#[test]
fn size_one_dimensions_and_broadcasting() {
    for (m, n, b) in [(5, 7, 3), (1, 1, 1), (1, 9, 2), (4, 1, 1)] {
        let sizes = [("M", m), ("N", n), ("B", b)];
        seeded_by_dtype(&format!("gpu_broadcast_{m}_{n}_{b}.tdsl"), BROADCAST, &sizes, ARITH, &[]);
    }
}

#[test]
fn scalars_pass_through_and_constant_outputs() {
    seeded(
        "gpu_scalars.tdsl",
        "model m(x: f32[N], s: f32[], k: i32[], t: f32[V, D], i: i32[], hb: f16[])
            -> (total: f32[], sc: f32[], kc: i32[], same: f32[N], again: f32[N], c: f32[], ci: i32[], n: i32[],
                cb: bool[], cv: f32[N], sk: i32[], g: f32[D], nf: f32[], hs: f16[], ts: f32[V, D], cm: f32[2, 3],
                rs: f32[1], bs: bool[]) {
            total = sum(x)
            sc = s * 2.0 + 1.0
            kc = k * 3 - 1
            same = x
            again = x
            c = 2.5
            ci = 7
            n = N * V + 1
            cb = true
            cv = broadcast_to(1.5, [N])
            sk = k
            g = gather(t, i)
            nf = f32(N) / 2.0
            hs = hb * 3.0
            ts = t
            cm = broadcast_to(-0.5, [2, 3])
            rs = reshape(s, [1])
            bs = s > 0.0
        }",
        &[("N", 5), ("V", 3), ("D", 7)],
        &[
            Tol::reduction(5),
            Tol::Bits,
            Tol::Exact,
            Tol::Bits,
            Tol::Bits,
            Tol::Bits,
            Tol::Exact,
            Tol::Exact,
            Tol::Exact,
            Tol::Bits,
            Tol::Exact,
            Tol::Bits,
            Tol::Bits,
            F16,
            Tol::Bits,
            Tol::Bits,
            Tol::Bits,
            Tol::Exact,
        ],
    );
}

/// Large element counts: more than one row of 65535 workgroups would need a folded 2-D grid, so a tensor
/// of 2^24 + 3 elements exercises `gid.y`.
#[test]
fn a_folded_grid_covers_every_element() {
    let text = "model m(x: f32[N]) -> (y: f32[N], s: f32[N / 4]) {
        y = x * 2.0 + 1.0
        s[i: N / 4] = x[4 * i + 3]
    }";
    let n = (1 << 24) + 3;
    let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.001).collect();
    given("gpu_folded.tdsl", text, vec![Tensor::f32(&[n], x)], ARITH);
}

/// f16 tensors through every layout op stay bit-identical.
#[test]
fn f16_layout() {
    let h: Vec<f16> = (0..105).map(|i| f16::from_f32((i as f32 - 52.0) / 7.0)).collect();
    let text = "model m(h: f16[3, 5, 7], ids: i32[4])
        -> (p: f16[7, 3, 5], r: f16[15, 7], s: f16[3, 2, 7], c: f16[3, 10, 7], g: f16[3, 4, 7], b: f16[2, 3, 5, 7]) {
        p = permute(h, [2, 0, 1])
        r = reshape(h, [15, 7])
        s = slice(h, axis: 1, start: 1, end: 5, step: 2)
        c = concat(h, h, axis: 1)
        g = gather(h, ids, axis: 1)
        b = broadcast_to(h, [2, 3, 5, 7])
    }";
    given("gpu_f16_layout.tdsl", text, vec![Tensor::f16(&[3, 5, 7], h), i32s(&[4], vec![4, 0, 2, 4])], Tol::Bits);
}

/// f16 subnormals (magnitudes below 2^-14, multiples of 2^-24) round as the interpreter rounds them
/// (`half`: to nearest, ties to even) instead of flushing to zero (`quantizeToF16` may flush, spec G2.2):
/// products and quotients landing in the subnormal range, f32 values cast to f16 across the whole range
/// (ties included), and subnormal inputs passed through arithmetic. Compared bit for bit.
#[test]
fn f16_subnormals_round_as_the_interpreter_rounds() {
    let graph = single_graph(
        "gpu_f16_subnormal.tdsl",
        "model m(h: f16[L], x: f32[L]) -> (a: f16[L], b: f16[L], c: f16[L], d: f16[L], e: f16[L], s: f16[L]) {
            a = h * 0.001
            b = h / 3000.0
            c = f16(x)
            d = h + h
            e = -h * 0.5
            s = f16(x * 0.25) - h
        }",
    );
    let tiny = 2f32.powi(-24);
    let mut x = vec![
        tiny,
        -tiny,
        0.5 * tiny,
        1.5 * tiny,
        2.5 * tiny,
        0.49 * tiny,
        0.51 * tiny,
        1023.0 * tiny,
        1023.5 * tiny,
        1024.0 * tiny,
        -1000.3 * tiny,
        2f32.powi(-15),
        3.3e-6,
        -4.7e-7,
        1e-9,
        6.0e-5,
        0.0,
        -0.0,
        1.0,
        0.02,
    ];
    x.extend((0..44).map(|i| (i as f32 - 21.7) * 1.37e-6));
    let len = x.len();
    let h: Vec<f32> = x.iter().map(|&v| (v * 9000.0).clamp(-60000.0, 60000.0)).collect();
    let inputs = vec![Tensor::f16_from_f32(&[len], &h), Tensor::f32(&[len], x)];
    compare("gpu_f16_subnormal.tdsl", &graph, &inputs, &HashMap::new(), &[Tol::Bits; 6]);
}

/// Products whose left operand merges attention heads (`reshape(permute(ctx, [0, 2, 1, 3]), ..)`, a reshape
/// no strides express), one with a bias alone and one under a residual and a layer norm, over 150 rows: the
/// CPU executor gathers that operand's rows panel by panel (and feeds the layer norm its panels) there.
/// Tolerances: a sum over K = 48 plus the bias (and the residual), doubled per add as in `contractions.rs`;
/// the layer norm's eight times that over K + N.
#[test]
fn products_of_merged_heads() {
    seeded_by_dtype(
        "gpu_merged_heads.tdsl",
        "import \"std/nn\"
        model m(ctx: f32[B, H, S, 16], r: f32[B, S, 40]) -> (y: f32[B, S, 40], z: f32[B, S, 40]) {
            merged = reshape(permute(ctx, [0, 2, 1, 3]), [B, S, H * 16])
            y = Linear[\"proj\"](merged, 40)
            z = LayerNorm[\"norm\"](r + Linear[\"out\"](merged, 40), eps: 1e-5)
        }",
        &[("B", 3), ("H", 3), ("S", 50)],
        Tol::reduction(48).times(2.0),
        &[("z", Tol::reduction(48 + 40).times(8.0 * 4.0))],
    );
}

/// Attention over a batch of six sentences: the CPU executor runs its scores, softmax and `P @ V` launches
/// one sentence at a time (a chain, `cpu/chain.rs`; the tests' executor has two threads, so a batch of four
/// or more is sliced), with a padding mask (seeded 0/1, so some keys are masked) and a causal mask from
/// index notation. The chain must form, and both runs of the CPU executor agree with the interpreter.
/// Tolerances: the projections sum over 24, the scores over 8, `P @ V` over 20; the softmax's exp and sum
/// between them, eight times the sum of those.
#[test]
fn attention_in_slices() {
    let name = "gpu_attention_slices.tdsl";
    let graph = single_graph(
        name,
        "import \"std/nn\"
        model m(x: f32[B, S, 24], mask: i32[B, S]) -> (y: f32[B, S, 24], c: f32[B, 3, S, 8]) {
            q = Linear[\"q\"](x, 24)
            k = Linear[\"k\"](x, 24)
            v = Linear[\"v\"](x, 24)
            y = attention(q, k, v, mask_bias(mask), heads: 3)
            heads = permute(reshape(q, [B, S, 3, 8]), [0, 2, 1, 3])
            c = sdpa_causal(heads, heads, heads)
        }",
    );
    let symbols = super::symbol_values(&graph, &[("B", 6), ("S", 20)], 3);
    let (inputs, params) = super::seeded_bindings(&graph, &symbols, 7);
    let options = crate::util::options(true, tdsl_compiler::codegen::Target::for_gpu(super::gpu()));
    let compiled = crate::util::compile_with(&graph, &options).unwrap_or_else(|err| panic!("{name}: {err}"));
    let model = super::cpu().load(&compiled.program, &params).unwrap_or_else(|err| panic!("{name}: {err}"));
    assert!(model.chains().next().is_some(), "{name}: no launches run slice by slice");
    let tol = Tol::reduction(24 + 8 + 20).times(8.0);
    compare(name, &graph, &inputs, &params, &[tol, tol]);
}
