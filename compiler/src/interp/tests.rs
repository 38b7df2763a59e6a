//! Unit tests of the interpreter: every op against hand-computed values, integer and float edge cases, f16
//! rounding, index-notation maps, run-time errors and symbol binding. Graphs are assembled with the IR's
//! test builder (`ir::build`).

use super::*;
use crate::dim::{Dim, SymId};
use crate::ir::build::{Body, Builder, c};
use crate::ir::{ArgOp, BinaryOp, DType, Op, ReduceOp, Scalar, ScalarExpr, ScanOp, UnaryOp, VarId};
use half::f16;

fn no_params() -> HashMap<String, Tensor> {
    HashMap::new()
}

fn run_ok(b: &Builder, inputs: &[Tensor]) -> Vec<Tensor> {
    match run(&b.g, inputs, &no_params()) {
        Ok(out) => out,
        Err(e) => panic!("run failed: {e}"),
    }
}

fn run_err(b: &Builder, inputs: &[Tensor]) -> String {
    match run(&b.g, inputs, &no_params()) {
        Ok(out) => panic!("expected an error, got {out:?}"),
        Err(e) => e.to_string(),
    }
}

/// A graph `out = op(x, y)` over rank-1 tensors of `n` elements.
fn binary_graph(op: BinaryOp, dtype: DType, n: i64) -> Builder {
    let mut b = Builder::new("t");
    let x = b.input("x", dtype, &[c(n)]);
    let y = b.input("y", dtype, &[c(n)]);
    let z = b.binary(op, x, y);
    b.output("z", z);
    b
}

fn unary_graph(op: UnaryOp, dtype: DType, n: i64) -> Builder {
    let mut b = Builder::new("t");
    let x = b.input("x", dtype, &[c(n)]);
    let z = b.unary(op, x);
    b.output("z", z);
    b
}

fn cast_graph(from: DType, to: DType, n: i64) -> Builder {
    let mut b = Builder::new("t");
    let x = b.input("x", from, &[c(n)]);
    let z = b.node(Op::Cast(x), to, &[c(n)]);
    b.output("z", z);
    b
}

fn i32s(t: &Tensor) -> Vec<i32> {
    t.as_i32().expect("i32 tensor").to_vec()
}
fn u32s(t: &Tensor) -> Vec<u32> {
    t.as_u32().expect("u32 tensor").to_vec()
}
fn f32s(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32 tensor").to_vec()
}
fn bools(t: &Tensor) -> Vec<bool> {
    t.as_bool().expect("bool tensor").to_vec()
}
fn f16s(t: &Tensor) -> Vec<f32> {
    match &t.data {
        TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        other => panic!("expected f16, got {other:?}"),
    }
}

#[test]
fn i32_arithmetic_wraps_and_divides_by_zero() {
    let x = vec![i32::MAX, i32::MIN, 7, -7, 7, -7, i32::MIN, 5, -5];
    let y = vec![1, -1, 2, 2, -2, -2, -1, 0, 0];
    let n = x.len() as i64;
    let inputs = [Tensor::i32(&[x.len()], x.clone()), Tensor::i32(&[y.len()], y.clone())];
    let add = run_ok(&binary_graph(BinaryOp::Add, DType::I32, n), &inputs);
    assert_eq!(i32s(&add[0])[..2], [i32::MIN, i32::MAX]);
    let div = run_ok(&binary_graph(BinaryOp::Div, DType::I32, n), &inputs);
    assert_eq!(i32s(&div[0]), vec![i32::MAX, i32::MIN, 3, -3, -3, 3, i32::MIN, 5, -5]);
    let rem = run_ok(&binary_graph(BinaryOp::Rem, DType::I32, n), &inputs);
    assert_eq!(i32s(&rem[0]), vec![0, 0, 1, -1, 1, -1, 0, 0, 0]);
    let mul = run_ok(&binary_graph(BinaryOp::Mul, DType::I32, n), &inputs);
    assert_eq!(i32s(&mul[0])[..3], [i32::MAX, i32::MIN, 14]);
    let min = run_ok(&binary_graph(BinaryOp::Min, DType::I32, n), &inputs);
    assert_eq!(i32s(&min[0])[2..4], [2, -7]);
}

#[test]
fn u32_arithmetic_wraps() {
    let inputs = [Tensor::u32(&[4], vec![0, 7, u32::MAX, 9]), Tensor::u32(&[4], vec![1, 0, 1, 4])];
    let sub = run_ok(&binary_graph(BinaryOp::Sub, DType::U32, 4), &inputs);
    assert_eq!(u32s(&sub[0]), vec![u32::MAX, 7, u32::MAX - 1, 5]);
    let add = run_ok(&binary_graph(BinaryOp::Add, DType::U32, 4), &inputs);
    assert_eq!(u32s(&add[0])[2], 0);
    let div = run_ok(&binary_graph(BinaryOp::Div, DType::U32, 4), &inputs);
    assert_eq!(u32s(&div[0]), vec![0, 7, u32::MAX, 2]);
    let rem = run_ok(&binary_graph(BinaryOp::Rem, DType::U32, 4), &inputs);
    assert_eq!(u32s(&rem[0]), vec![0, 0, 0, 1]);
    let neg = run_ok(&unary_graph(UnaryOp::Neg, DType::U32, 4), &inputs[..1]);
    assert_eq!(u32s(&neg[0]), vec![0, u32::MAX - 6, 1, u32::MAX - 8]);
}

#[test]
fn integer_unary_ops() {
    let x = [Tensor::i32(&[4], vec![i32::MIN, -3, 0, 4])];
    assert_eq!(i32s(&run_ok(&unary_graph(UnaryOp::Abs, DType::I32, 4), &x)[0]), vec![i32::MIN, 3, 0, 4]);
    assert_eq!(i32s(&run_ok(&unary_graph(UnaryOp::Neg, DType::I32, 4), &x)[0]), vec![i32::MIN, 3, 0, -4]);
    assert_eq!(i32s(&run_ok(&unary_graph(UnaryOp::Relu, DType::I32, 4), &x)[0]), vec![0, 0, 0, 4]);
}

#[test]
fn float_binary_ops() {
    let nan = f32::NAN;
    let inputs =
        [Tensor::f32(&[5], vec![-7.5, 7.5, nan, 1.0, 2.0]), Tensor::f32(&[5], vec![2.0, -2.0, 1.0, nan, 10.0])];
    let rem = f32s(&run_ok(&binary_graph(BinaryOp::Rem, DType::F32, 5), &inputs)[0]);
    assert_eq!(rem[..2], [-1.5, 1.5]);
    assert!(rem[2].is_nan());
    let max = f32s(&run_ok(&binary_graph(BinaryOp::Max, DType::F32, 5), &inputs)[0]);
    assert_eq!(max[..2], [2.0, 7.5]);
    assert!(max[2].is_nan() && max[3].is_nan());
    let min = f32s(&run_ok(&binary_graph(BinaryOp::Min, DType::F32, 5), &inputs)[0]);
    assert!(min[2].is_nan() && min[3].is_nan());
    assert_eq!(min[4], 2.0);
    let pow = f32s(&run_ok(&binary_graph(BinaryOp::Pow, DType::F32, 5), &inputs)[0]);
    assert_eq!(pow[4], 1024.0);
    let div = f32s(&run_ok(&binary_graph(BinaryOp::Div, DType::F32, 5), &inputs)[0]);
    assert_eq!(div[0], -3.75);
    let lt = bools(&run_ok(&binary_graph(BinaryOp::Lt, DType::F32, 5), &inputs)[0]);
    assert_eq!(lt, vec![true, false, false, false, true]);
    let ne = bools(&run_ok(&binary_graph(BinaryOp::Ne, DType::F32, 5), &inputs)[0]);
    assert_eq!(ne, vec![true, true, true, true, true]);
    let eq = bools(&run_ok(&binary_graph(BinaryOp::Eq, DType::F32, 5), &inputs)[0]);
    assert_eq!(eq, vec![false; 5]);
}

#[test]
fn zero_signs_in_min_max_and_relu() {
    let inputs = [Tensor::f32(&[2], vec![-0.0, 0.0]), Tensor::f32(&[2], vec![0.0, -0.0])];
    let max = f32s(&run_ok(&binary_graph(BinaryOp::Max, DType::F32, 2), &inputs)[0]);
    assert!(max.iter().all(|x| *x == 0.0 && x.is_sign_positive()));
    let min = f32s(&run_ok(&binary_graph(BinaryOp::Min, DType::F32, 2), &inputs)[0]);
    assert!(min.iter().all(|x| *x == 0.0 && x.is_sign_negative()));
    let relu = f32s(&run_ok(&unary_graph(UnaryOp::Relu, DType::F32, 2), &inputs[..1])[0]);
    assert!(relu[0].is_sign_positive());
}

#[test]
fn float_unary_ops() {
    let x = [Tensor::f32(&[4], vec![0.5, -1.0, 4.0, -2.5])];
    let erf = f32s(&run_ok(&unary_graph(UnaryOp::Erf, DType::F32, 4), &x)[0]);
    assert_eq!(erf[0], 0.520_499_877_813_046_5_f64 as f32);
    assert_eq!(erf[1], -0.842_700_792_949_714_9_f64 as f32);
    let rsqrt = f32s(&run_ok(&unary_graph(UnaryOp::Rsqrt, DType::F32, 4), &x)[0]);
    assert_eq!(rsqrt[2], 0.5);
    assert!(rsqrt[1].is_nan());
    let sigmoid = f32s(&run_ok(&unary_graph(UnaryOp::Sigmoid, DType::F32, 4), &x)[0]);
    assert_eq!(sigmoid[0], 1.0 / (1.0 + (-0.5f32).exp()));
    let relu = f32s(&run_ok(&unary_graph(UnaryOp::Relu, DType::F32, 4), &x)[0]);
    assert_eq!(relu, vec![0.5, 0.0, 4.0, 0.0]);
    let floor = f32s(&run_ok(&unary_graph(UnaryOp::Floor, DType::F32, 4), &x)[0]);
    assert_eq!(floor, vec![0.0, -1.0, 4.0, -3.0]);
    let ceil = f32s(&run_ok(&unary_graph(UnaryOp::Ceil, DType::F32, 4), &x)[0]);
    assert_eq!(ceil, vec![1.0, -1.0, 4.0, -2.0]);
    let log = f32s(&run_ok(&unary_graph(UnaryOp::Log, DType::F32, 4), &x)[0]);
    assert!(log[1].is_nan());
    assert_eq!(log[2], 4.0f64.ln() as f32);
}

#[test]
fn f16_rounds_after_every_op() {
    let x = Tensor::f16_from_f32(&[4], &[2048.0, 2050.0, 65504.0, 1.0]);
    let y = Tensor::f16_from_f32(&[4], &[1.0, 1.0, 16.0, 0.000_488_281_25]);
    let sum = run_ok(&binary_graph(BinaryOp::Add, DType::F16, 4), &[x, y]);
    assert_eq!(sum[0].dtype, DType::F16);
    // Ties go to even: 2049 -> 2048, 2051 -> 2052; 65520 overflows to infinity; 1 + 2^-11 -> 1.
    assert_eq!(f16s(&sum[0]), vec![2048.0, 2052.0, f32::INFINITY, 1.0]);
}

#[test]
fn f16_reduction_accumulates_in_f32() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F16, &[c(3)]);
    let s = b.node(Op::Reduce { op: ReduceOp::Sum, input: x, axes: vec![0] }, DType::F16, &[]);
    b.output("s", s);
    // Rounding after each step would give 2048; accumulating in f32 gives 2050.
    let out = run_ok(&b, &[Tensor::f16_from_f32(&[3], &[2048.0, 1.0, 1.0])]);
    assert_eq!(f16s(&out[0]), vec![2050.0]);
}

#[test]
fn casts_truncate_saturate_and_wrap() {
    let x = [Tensor::f32(&[7], vec![1.9, -1.9, f32::NAN, 3e9, -3e9, f32::INFINITY, -0.0])];
    assert_eq!(
        i32s(&run_ok(&cast_graph(DType::F32, DType::I32, 7), &x)[0]),
        vec![1, -1, 0, i32::MAX, i32::MIN, i32::MAX, 0]
    );
    assert_eq!(
        u32s(&run_ok(&cast_graph(DType::F32, DType::U32, 7), &x)[0]),
        vec![1, 0, 0, 3_000_000_000, 0, u32::MAX, 0]
    );
    assert_eq!(
        bools(&run_ok(&cast_graph(DType::F32, DType::Bool, 7), &x)[0]),
        vec![true, true, true, true, true, true, false]
    );
    let i = [Tensor::i32(&[3], vec![-1, 2049, 0])];
    assert_eq!(u32s(&run_ok(&cast_graph(DType::I32, DType::U32, 3), &i)[0]), vec![u32::MAX, 2049, 0]);
    assert_eq!(f16s(&run_ok(&cast_graph(DType::I32, DType::F16, 3), &i)[0]), vec![-1.0, 2048.0, 0.0]);
    let u = [Tensor::u32(&[2], vec![u32::MAX, 5])];
    assert_eq!(i32s(&run_ok(&cast_graph(DType::U32, DType::I32, 2), &u)[0]), vec![-1, 5]);
    let bl = [Tensor::bool(&[2], vec![true, false])];
    assert_eq!(f32s(&run_ok(&cast_graph(DType::Bool, DType::F32, 2), &bl)[0]), vec![1.0, 0.0]);
    assert_eq!(i32s(&run_ok(&cast_graph(DType::Bool, DType::I32, 2), &bl)[0]), vec![1, 0]);
    let h = [Tensor::f16_from_f32(&[2], &[-2.5, 65504.0])];
    assert_eq!(i32s(&run_ok(&cast_graph(DType::F16, DType::I32, 2), &h)[0]), vec![-2, 65504]);
    let tiny = [Tensor::f32(&[2], vec![1e-8, 1.0 + 1.0 / 4096.0])];
    assert_eq!(f16s(&run_ok(&cast_graph(DType::F32, DType::F16, 2), &tiny)[0]), vec![0.0, 1.0]);
}

#[test]
fn select_and_logic() {
    let mut b = Builder::new("t");
    let cnd = b.input("c", DType::Bool, &[c(3)]);
    let d = b.input("d", DType::Bool, &[c(3)]);
    let x = b.input("x", DType::I32, &[c(3)]);
    let y = b.input("y", DType::I32, &[c(3)]);
    let and = b.binary(BinaryOp::And, cnd, d);
    let or = b.binary(BinaryOp::Or, cnd, d);
    let not = b.unary(UnaryOp::Not, cnd);
    let sel = b.node(Op::Select { cond: cnd, on_true: x, on_false: y }, DType::I32, &[c(3)]);
    let eq = b.binary(BinaryOp::Eq, cnd, d);
    for (name, id) in [("and", and), ("or", or), ("not", not), ("sel", sel), ("eq", eq)] {
        b.output(name, id);
    }
    let out = run_ok(
        &b,
        &[
            Tensor::bool(&[3], vec![true, false, true]),
            Tensor::bool(&[3], vec![true, true, false]),
            Tensor::i32(&[3], vec![1, 2, 3]),
            Tensor::i32(&[3], vec![10, 20, 30]),
        ],
    );
    assert_eq!(bools(&out[0]), vec![true, false, false]);
    assert_eq!(bools(&out[1]), vec![true, true, true]);
    assert_eq!(bools(&out[2]), vec![false, true, false]);
    assert_eq!(i32s(&out[3]), vec![1, 20, 3]);
    assert_eq!(bools(&out[4]), vec![true, false, false]);
}

#[test]
fn constants_and_dim_values() {
    let mut b = Builder::new("t");
    let n = b.sym("N");
    let x = b.input("x", DType::F32, std::slice::from_ref(&n));
    let k = b.node(Op::Constant(Scalar::Float(0.1)), DType::F16, &[]);
    let i = b.node(Op::Constant(Scalar::Int(-1)), DType::U32, &[]);
    let d = b.node(Op::DimValue(n.scale(3).unwrap().add(&c(1)).unwrap()), DType::F32, &[]);
    b.output("k", k);
    b.output("i", i);
    b.output("d", d);
    b.output("x", x);
    let out = run_ok(&b, &[Tensor::f32(&[4], vec![0.0; 4])]);
    assert_eq!(f16s(&out[0]), vec![f16::from_f64(0.1).to_f32()]);
    assert_eq!(u32s(&out[1]), vec![u32::MAX]);
    assert_eq!(f32s(&out[2]), vec![13.0]);
    assert_eq!(out[3].shape, vec![4]);
}

#[test]
fn dim_value_that_does_not_fit_is_an_error() {
    let mut b = Builder::new("t");
    let n = b.sym("N");
    b.input("x", DType::F32, std::slice::from_ref(&n));
    let big = n.mul(&n).unwrap().mul(&n).unwrap().mul(&n).unwrap().mul(&n).unwrap();
    let d = b.node(Op::DimValue(big), DType::I32, &[]);
    b.output("d", d);
    let msg = run_err(&b, &[Tensor::f32(&[100], vec![0.0; 100])]);
    assert!(msg.contains("does not fit i32"), "{msg}");
    // 100000^5 overflows i64.
    let mut b2 = Builder::new("t");
    let n = b2.sym("N");
    b2.input("x", DType::F32, std::slice::from_ref(&n));
    let big = n.mul(&n).unwrap().mul(&n).unwrap().mul(&n).unwrap().mul(&n).unwrap();
    let d = b2.node(Op::DimValue(big), DType::F32, &[]);
    b2.output("d", d);
    let msg = run_err(&b2, &[Tensor::f32(&[100_000], vec![0.0; 100_000])]);
    assert!(msg.contains("overflows"), "{msg}");
}

#[test]
fn shape_overflow_is_an_error() {
    let mut b = Builder::new("t");
    let n = b.sym("N");
    let x = b.input("x", DType::F32, std::slice::from_ref(&n));
    let shape = [n.clone(), n.clone(), n.clone(), n.clone(), n.clone()];
    let y = b.node(Op::Broadcast(x), DType::F32, &shape);
    b.output("y", y);
    let msg = run_err(&b, &[Tensor::f32(&[100_000], vec![0.0; 100_000])]);
    assert!(msg.starts_with("%1 (broadcast):"), "{msg}");
}

#[test]
fn broadcast_permute_reshape_slice_concat() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::I32, &[c(2), c(3)]);
    let row = b.input("row", DType::I32, &[c(3)]);
    let col = b.input("col", DType::I32, &[c(2), c(1)]);
    let br = b.node(Op::Broadcast(row), DType::I32, &[c(2), c(3)]);
    let bc = b.node(Op::Broadcast(col), DType::I32, &[c(2), c(3)]);
    let pt = b.node(Op::Permute(x, vec![1, 0]), DType::I32, &[c(3), c(2)]);
    let rs = b.node(Op::Reshape(x), DType::I32, &[c(3), c(2)]);
    let sl = b.node(Op::Slice { input: x, axis: 1, start: c(0), step: 2 }, DType::I32, &[c(2), c(2)]);
    let c0 = b.node(Op::Concat { inputs: vec![x, br], axis: 0 }, DType::I32, &[c(4), c(3)]);
    let c1 = b.node(Op::Concat { inputs: vec![x, col, x], axis: 1 }, DType::I32, &[c(2), c(7)]);
    for (name, id) in [("br", br), ("bc", bc), ("pt", pt), ("rs", rs), ("sl", sl), ("c0", c0), ("c1", c1)] {
        b.output(name, id);
    }
    let out = run_ok(
        &b,
        &[
            Tensor::i32(&[2, 3], vec![1, 2, 3, 4, 5, 6]),
            Tensor::i32(&[3], vec![7, 8, 9]),
            Tensor::i32(&[2, 1], vec![10, 20]),
        ],
    );
    assert_eq!(i32s(&out[0]), vec![7, 8, 9, 7, 8, 9]);
    assert_eq!(i32s(&out[1]), vec![10, 10, 10, 20, 20, 20]);
    assert_eq!(i32s(&out[2]), vec![1, 4, 2, 5, 3, 6]);
    assert_eq!(out[2].shape, vec![3, 2]);
    assert_eq!(i32s(&out[3]), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(out[3].shape, vec![3, 2]);
    assert_eq!(i32s(&out[4]), vec![1, 3, 4, 6]);
    assert_eq!(i32s(&out[5]), vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 7, 8, 9]);
    assert_eq!(i32s(&out[6]), vec![1, 2, 3, 10, 1, 2, 3, 4, 5, 6, 20, 4, 5, 6]);
}

#[test]
fn permute_rank3_and_strided_slice() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(2), c(3), c(4)]);
    let p = b.node(Op::Permute(x, vec![2, 0, 1]), DType::F32, &[c(4), c(2), c(3)]);
    let v = b.input("v", DType::F32, &[c(10)]);
    let s = b.node(Op::Slice { input: v, axis: 0, start: c(1), step: 3 }, DType::F32, &[c(3)]);
    b.output("p", p);
    b.output("s", s);
    let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let out = run_ok(&b, &[Tensor::f32(&[2, 3, 4], data), Tensor::f32(&[10], (0..10).map(|i| i as f32).collect())]);
    // p[k, i, j] = x[i, j, k] = 12i + 4j + k
    let p = f32s(&out[0]);
    for k in 0..4 {
        for i in 0..2 {
            for j in 0..3 {
                assert_eq!(p[k * 6 + i * 3 + j], (12 * i + 4 * j + k) as f32);
            }
        }
    }
    assert_eq!(f32s(&out[1]), vec![1.0, 4.0, 7.0]);
}

#[test]
fn slice_past_the_end_is_an_error() {
    let mut b = Builder::new("t");
    let n = b.sym("N");
    let v = b.input("v", DType::F32, std::slice::from_ref(&n));
    let s = b.node(Op::Slice { input: v, axis: 0, start: n.sub(&c(2)).unwrap(), step: 2 }, DType::F32, &[c(2)]);
    b.output("s", s);
    let msg = run_err(&b, &[Tensor::f32(&[5], vec![0.0; 5])]);
    assert!(msg.contains("up to index 5"), "{msg}");
}

#[test]
fn gather_rows_and_errors() {
    let mut b = Builder::new("t");
    let t = b.input("t", DType::F32, &[c(3), c(2)]);
    let i = b.input("i", DType::I32, &[c(2), c(2)]);
    let g0 = b.node(Op::Gather { table: t, indices: i, axis: 0 }, DType::F32, &[c(2), c(2), c(2)]);
    b.output("g0", g0);
    let table = Tensor::f32(&[3, 2], vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0]);
    let out = run_ok(&b, &[table.clone(), Tensor::i32(&[2, 2], vec![2, 0, 1, 1])]);
    assert_eq!(f32s(&out[0]), vec![20.0, 21.0, 0.0, 1.0, 10.0, 11.0, 10.0, 11.0]);

    let msg = run_err(&b, &[table.clone(), Tensor::i32(&[2, 2], vec![0, 1, 3, 0])]);
    assert_eq!(
        msg,
        "%2 (gather): index 3 at [1, 0] of the indices %1 is out of range for axis 0 of the table (size 3)"
    );
    let msg = run_err(&b, &[table.clone(), Tensor::i32(&[2, 2], vec![0, -1, 0, 0])]);
    assert!(msg.contains("index -1 at [0, 1]"), "{msg}");

    let mut b = Builder::new("t");
    let t = b.input("t", DType::F32, &[c(3), c(2)]);
    let i = b.input("i", DType::U32, &[c(3)]);
    let g1 = b.node(Op::Gather { table: t, indices: i, axis: 1 }, DType::F32, &[c(3), c(3)]);
    b.output("g1", g1);
    let out = run_ok(&b, &[table, Tensor::u32(&[3], vec![1, 0, 1])]);
    assert_eq!(f32s(&out[0]), vec![1.0, 0.0, 1.0, 11.0, 10.0, 11.0, 21.0, 20.0, 21.0]);
}

#[test]
fn take_along_axis_reads_each_fiber_at_its_indices() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(2), c(3)]);
    let i = b.input("i", DType::I32, &[c(2), c(2)]);
    let j = b.input("j", DType::I32, &[c(1), c(3)]);
    let t1 = b.node(Op::TakeAlongAxis { input: x, indices: i, axis: 1 }, DType::F32, &[c(2), c(2)]);
    let t0 = b.node(Op::TakeAlongAxis { input: x, indices: j, axis: 0 }, DType::F32, &[c(1), c(3)]);
    b.output("t1", t1);
    b.output("t0", t0);
    let x = Tensor::f32(&[2, 3], vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
    let out = run_ok(&b, &[x.clone(), Tensor::i32(&[2, 2], vec![2, 2, 0, 1]), Tensor::i32(&[1, 3], vec![1, 0, 1])]);
    assert_eq!(f32s(&out[0]), vec![2.0, 2.0, 10.0, 11.0]);
    assert_eq!(f32s(&out[1]), vec![10.0, 1.0, 12.0]);
    let msg = run_err(&b, &[x, Tensor::i32(&[2, 2], vec![0, 0, 3, 0]), Tensor::i32(&[1, 3], vec![0, 0, 0])]);
    assert_eq!(
        msg,
        "%3 (take_along_axis): index 3 at [1, 0] of the indices %1 is out of range for axis 1 of the input (size 3)"
    );
}

#[test]
fn scatter_add_adds_in_source_order_from_the_base() {
    let mut b = Builder::new("t");
    let base = b.input("base", DType::F32, &[c(2), c(3)]);
    let i = b.input("i", DType::I32, &[c(2), c(4)]);
    let src = b.input("src", DType::F32, &[c(2), c(4)]);
    let a = b.node(Op::ScatterAdd { base, indices: i, src, axis: 1 }, DType::F32, &[c(2), c(3)]);
    b.output("a", a);
    let base = Tensor::f32(&[2, 3], vec![0.0, 100.0, -0.0, 1.0, 2.0, 3.0]);
    let src = Tensor::f32(&[2, 4], vec![1e8, 1.0, -1e8, 5.0, 1.0, 2.0, 4.0, 8.0]);
    // Row 0: element 0 gets 0 + 1e8 + 1 - 1e8 in that order (1 is lost to rounding), element 2 keeps -0.0.
    let out = run_ok(&b, &[base.clone(), Tensor::i32(&[2, 4], vec![0, 0, 0, 1, 2, 2, 0, 2]), src.clone()]);
    let got = f32s(&out[0]);
    assert_eq!(got, vec![0.0, 105.0, -0.0, 5.0, 2.0, 14.0]);
    assert!(got[2].is_sign_negative());
    let msg = run_err(&b, &[base, Tensor::i32(&[2, 4], vec![0, -2, 0, 0, 0, 0, 0, 0]), src]);
    assert!(msg.contains("%3 (scatter_add): index -2 at [0, 1]"), "{msg}");

    let mut b = Builder::new("t");
    let base = b.input("base", DType::I32, &[c(3)]);
    let i = b.input("i", DType::I32, &[c(2)]);
    let src = b.input("src", DType::I32, &[c(2)]);
    let a = b.node(Op::ScatterAdd { base, indices: i, src, axis: 0 }, DType::I32, &[c(3)]);
    b.output("a", a);
    let out = run_ok(
        &b,
        &[Tensor::i32(&[3], vec![i32::MAX, 0, 7]), Tensor::i32(&[2], vec![0, 0]), Tensor::i32(&[2], vec![1, 2])],
    );
    assert_eq!(i32s(&out[0]), vec![i32::MIN + 2, 0, 7]);
}

#[test]
fn argsort_is_stable_with_nan_largest_and_zeros_equal() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(8)]);
    let up = b.node(Op::Argsort { input: x, axis: 0, descending: false }, DType::I32, &[c(8)]);
    let down = b.node(Op::Argsort { input: x, axis: 0, descending: true }, DType::I32, &[c(8)]);
    b.output("up", up);
    b.output("down", down);
    let nan = f32::NAN;
    let x = Tensor::f32(&[8], vec![1.0, nan, -0.0, f32::NEG_INFINITY, 0.0, -nan, 1.0, f32::INFINITY]);
    let out = run_ok(&b, &[x]);
    // Ascending: -inf, the zeros in order, the ones in order, inf, the NaNs in order.
    assert_eq!(i32s(&out[0]), vec![3, 2, 4, 0, 6, 7, 1, 5]);
    // Descending: the NaNs in order, inf, the ones, the zeros, -inf (equal values keep their order).
    assert_eq!(i32s(&out[1]), vec![1, 5, 7, 0, 6, 2, 4, 3]);

    let mut b = Builder::new("t");
    let k = b.input("k", DType::I32, &[c(2), c(3)]);
    let col = b.node(Op::Argsort { input: k, axis: 0, descending: false }, DType::I32, &[c(2), c(3)]);
    let u = b.input("u", DType::U32, &[c(3)]);
    let ud = b.node(Op::Argsort { input: u, axis: 0, descending: true }, DType::I32, &[c(3)]);
    b.output("col", col);
    b.output("ud", ud);
    let out = run_ok(
        &b,
        &[Tensor::i32(&[2, 3], vec![5, i32::MIN, 0, -5, i32::MAX, 0]), Tensor::u32(&[3], vec![1, u32::MAX, 1])],
    );
    assert_eq!(i32s(&out[0]), vec![1, 0, 0, 0, 1, 1]);
    assert_eq!(i32s(&out[1]), vec![1, 0, 2]);
}

#[test]
fn reductions() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(2), c(3), c(2)]);
    let s1 = b.node(Op::Reduce { op: ReduceOp::Sum, input: x, axes: vec![1] }, DType::F32, &[c(2), c(2)]);
    let s02 = b.node(Op::Reduce { op: ReduceOp::Sum, input: x, axes: vec![0, 2] }, DType::F32, &[c(3)]);
    let mx = b.node(Op::Reduce { op: ReduceOp::Max, input: x, axes: vec![2] }, DType::F32, &[c(2), c(3)]);
    let mn = b.node(Op::Reduce { op: ReduceOp::Mean, input: x, axes: vec![0, 1, 2] }, DType::F32, &[]);
    let pr = b.node(Op::Reduce { op: ReduceOp::Prod, input: x, axes: vec![0] }, DType::F32, &[c(3), c(2)]);
    let id = b.node(Op::Reduce { op: ReduceOp::Min, input: x, axes: vec![] }, DType::F32, &[c(2), c(3), c(2)]);
    for (name, id) in [("s1", s1), ("s02", s02), ("mx", mx), ("mn", mn), ("pr", pr), ("id", id)] {
        b.output(name, id);
    }
    let data: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let mut with_nan = data.clone();
    with_nan[5] = f32::NAN;
    let out = run_ok(&b, &[Tensor::f32(&[2, 3, 2], data.clone())]);
    // x[i, j, k] = 6i + 2j + k
    assert_eq!(f32s(&out[0]), vec![6.0, 9.0, 24.0, 27.0]);
    assert_eq!(f32s(&out[1]), vec![14.0, 22.0, 30.0]);
    assert_eq!(f32s(&out[2]), vec![1.0, 3.0, 5.0, 7.0, 9.0, 11.0]);
    assert_eq!(f32s(&out[3]), vec![5.5]);
    assert_eq!(f32s(&out[4]), vec![0.0, 7.0, 16.0, 27.0, 40.0, 55.0]);
    assert_eq!(f32s(&out[5]), data);
    let out = run_ok(&b, &[Tensor::f32(&[2, 3, 2], with_nan)]);
    let mx = f32s(&out[2]);
    assert!(mx[2].is_nan());
    assert_eq!(mx[1], 3.0);
}

#[test]
fn argmax_and_argmin_take_the_first_extreme_and_nan() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(4), c(4)]);
    let k = b.input("k", DType::U32, &[c(2), c(3)]);
    let rows_max = b.node(Op::ArgReduce { op: ArgOp::Max, input: x, axis: 1 }, DType::I32, &[c(4)]);
    let rows_min = b.node(Op::ArgReduce { op: ArgOp::Min, input: x, axis: 1 }, DType::I32, &[c(4)]);
    let cols_max = b.node(Op::ArgReduce { op: ArgOp::Max, input: x, axis: 0 }, DType::I32, &[c(4)]);
    let ints = b.node(Op::ArgReduce { op: ArgOp::Min, input: k, axis: 1 }, DType::I32, &[c(2)]);
    for (name, id) in [("rows_max", rows_max), ("rows_min", rows_min), ("cols_max", cols_max), ("ints", ints)] {
        b.output(name, id);
    }
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    #[rustfmt::skip]
    let data = vec![
        1.0, 3.0, -2.0, 3.0,   // ties: the first 3 and the only -2
        0.0, nan, 5.0, nan,    // the first NaN is both the largest and the smallest
        -inf, -inf, -inf, -inf, // all equal: position 0
        -0.0, 0.0, inf, -0.0,  // signed zeros are equal: the first is the minimum
    ];
    let out = run_ok(&b, &[Tensor::f32(&[4, 4], data), Tensor::u32(&[2, 3], vec![4, 1, 1, 0, 7, 0])]);
    assert_eq!(i32s(&out[0]), vec![1, 1, 0, 2]);
    assert_eq!(i32s(&out[1]), vec![2, 1, 0, 0]);
    assert_eq!(i32s(&out[2]), vec![0, 1, 3, 1]);
    assert_eq!(i32s(&out[3]), vec![1, 0]);
}

#[test]
fn cumsum_adds_in_order_from_zero_both_ways() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(2), c(3)]);
    let h = b.input("h", DType::F16, &[c(3)]);
    let k = b.input("k", DType::I32, &[c(3)]);
    let scan = |b: &mut Builder, input, axis, reverse, dtype, shape: &[Dim]| {
        b.node(Op::Scan { op: ScanOp::Sum, input, axis, reverse }, dtype, shape)
    };
    let rows = scan(&mut b, x, 1, false, DType::F32, &[c(2), c(3)]);
    let cols = scan(&mut b, x, 0, false, DType::F32, &[c(2), c(3)]);
    let back = scan(&mut b, x, 1, true, DType::F32, &[c(2), c(3)]);
    let half = scan(&mut b, h, 0, false, DType::F16, &[c(3)]);
    let ints = scan(&mut b, k, 0, false, DType::I32, &[c(3)]);
    for (name, id) in [("rows", rows), ("cols", cols), ("back", back), ("half", half), ("ints", ints)] {
        b.output(name, id);
    }
    let x = Tensor::f32(&[2, 3], vec![-0.0, -0.0, 1.0, 1e8, 1.0, -1e8]);
    let h = Tensor::f16_from_f32(&[3], &[2048.0, 1.0, 1.0]);
    let out = run_ok(&b, &[x, h, Tensor::i32(&[3], vec![i32::MAX, 1, 2])]);
    let rows = f32s(&out[0]);
    // From 0: a running sum of -0.0 is +0.0 (as torch.cumsum); in f32, 1e8 + 1 is 1e8.
    assert!(rows[0] == 0.0 && rows[0].is_sign_positive());
    assert_eq!(rows[1..], [0.0, 1.0, 1e8, 1e8, 0.0]);
    assert_eq!(f32s(&out[1]), vec![0.0, 0.0, 1.0, 1e8, 1.0, -1e8 + 1.0]);
    assert_eq!(f32s(&out[2])[3..], [0.0, -1e8, -1e8]);
    // The running value stays f32 (2050 is an f16); each output rounds once.
    assert_eq!(f16s(&out[3]), vec![2048.0, 2048.0, 2050.0]);
    assert_eq!(i32s(&out[4]), vec![i32::MAX, i32::MIN, i32::MIN + 2]);
}

#[test]
fn integer_reductions_wrap() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::I32, &[c(3)]);
    let s = b.node(Op::Reduce { op: ReduceOp::Sum, input: x, axes: vec![0] }, DType::I32, &[]);
    let p = b.node(Op::Reduce { op: ReduceOp::Prod, input: x, axes: vec![0] }, DType::I32, &[]);
    let m = b.node(Op::Reduce { op: ReduceOp::Min, input: x, axes: vec![0] }, DType::I32, &[]);
    b.output("s", s);
    b.output("p", p);
    b.output("m", m);
    let out = run_ok(&b, &[Tensor::i32(&[3], vec![i32::MAX, 2, -5])]);
    assert_eq!(i32s(&out[0]), vec![i32::MAX.wrapping_add(2).wrapping_sub(5)]);
    assert_eq!(i32s(&out[1]), vec![i32::MAX.wrapping_mul(2).wrapping_mul(-5)]);
    assert_eq!(i32s(&out[2]), vec![-5]);
}

#[test]
fn matmul_plain_and_batched() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(2), c(2), c(3)]);
    let y = b.input("y", DType::F32, &[c(2), c(3), c(2)]);
    let z = b.node(Op::MatMul(x, y), DType::F32, &[c(2), c(2), c(2)]);
    b.output("z", z);
    let xs: Vec<f32> = (1..=12).map(|i| i as f32).collect();
    let ys: Vec<f32> = vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0, 0.0, 2.0, 0.0, 0.0];
    let out = run_ok(&b, &[Tensor::f32(&[2, 2, 3], xs), Tensor::f32(&[2, 3, 2], ys)]);
    // batch 0: [[1,2,3],[4,5,6]] @ [[1,0],[0,1],[1,1]] = [[4,5],[10,11]]
    // batch 1: [[7,8,9],[10,11,12]] @ [[2,0],[0,2],[0,0]] = [[14,16],[20,22]]
    assert_eq!(f32s(&out[0]), vec![4.0, 5.0, 10.0, 11.0, 14.0, 16.0, 20.0, 22.0]);
}

#[test]
fn map_matmul_with_reduction() {
    // out[i, j] = sum[k](a[i, k] * b[k, j])
    let mut b = Builder::new("t");
    let a = b.input("a", DType::F32, &[c(2), c(3)]);
    let w = b.input("w", DType::F32, &[c(3), c(2)]);
    let mut body = Body::default();
    let la = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[(2, 1)], 0)], None);
    let lw = body.load(1, DType::F32, &[(&[(2, 1)], 0), (&[(1, 1)], 0)], None);
    let m = body.bin(BinaryOp::Mul, la, lw, DType::F32);
    let s = body.reduce(ReduceOp::Sum, &[2], m, DType::F32);
    let op = body.finish(vec![a, w], vec![c(2), c(2), c(3)], s);
    let out = b.node(op, DType::F32, &[c(2), c(2)]);
    b.output("out", out);
    let res = run_ok(
        &b,
        &[
            Tensor::f32(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            Tensor::f32(&[3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
        ],
    );
    assert_eq!(f32s(&res[0]), vec![4.0, 5.0, 10.0, 11.0]);
}

#[test]
fn map_padded_loads_and_index_values() {
    // y[i] = x[i - 1] else 0 + 2 * x[i + 1] else -1 + i
    let mut b = Builder::new("t");
    let n = b.sym("N");
    let x = b.input("x", DType::I32, std::slice::from_ref(&n));
    let mut body = Body::default();
    let l = body.load(0, DType::I32, &[(&[(0, 1)], -1)], Some(Scalar::Int(0)));
    let r = body.load(0, DType::I32, &[(&[(0, 1)], 1)], Some(Scalar::Int(-1)));
    let two = body.add(ScalarExpr::Const(Scalar::Int(2)), DType::I32);
    let r2 = body.bin(BinaryOp::Mul, two, r, DType::I32);
    let sum = body.bin(BinaryOp::Add, l, r2, DType::I32);
    let i = body.add(ScalarExpr::Var(VarId(0)), DType::I32);
    let total = body.bin(BinaryOp::Add, sum, i, DType::I32);
    let op = body.finish(vec![x], vec![n.clone()], total);
    let y = b.node(op, DType::I32, &[n]);
    b.output("y", y);
    let out = run_ok(&b, &[Tensor::i32(&[4], vec![10, 20, 30, 40])]);
    // i=0: 0 + 40 + 0; i=1: 10 + 60 + 1; i=2: 20 + 80 + 2; i=3: 30 - 2 + 3
    assert_eq!(i32s(&out[0]), vec![40, 71, 102, 31]);
}

#[test]
fn map_conv1d_with_padding_inside_a_reduction() {
    // y[o] = sum[k](x[o + k - 1] else 0.0 * w[k]), o < N, k < 3
    let mut b = Builder::new("t");
    let n = b.sym("N");
    let x = b.input("x", DType::F32, std::slice::from_ref(&n));
    let w = b.input("w", DType::F32, &[c(3)]);
    let mut body = Body::default();
    let lx = body.load(0, DType::F32, &[(&[(0, 1), (1, 1)], -1)], Some(Scalar::Float(0.0)));
    let lw = body.load(1, DType::F32, &[(&[(1, 1)], 0)], None);
    let m = body.bin(BinaryOp::Mul, lx, lw, DType::F32);
    let s = body.reduce(ReduceOp::Sum, &[1], m, DType::F32);
    let op = body.finish(vec![x, w], vec![n.clone(), c(3)], s);
    let y = b.node(op, DType::F32, &[n]);
    b.output("y", y);
    let xs: Vec<f32> = (1..=2000).map(|i| i as f32).collect();
    let out = run_ok(&b, &[Tensor::f32(&[2000], xs.clone()), Tensor::f32(&[3], vec![1.0, 10.0, 100.0])]);
    let y = f32s(&out[0]);
    let get = |i: i64| if (0..2000).contains(&i) { xs[i as usize] } else { 0.0 };
    for (o, &v) in y.iter().enumerate() {
        let o = o as i64;
        let expected = ((0.0 + get(o - 1) * 1.0) + get(o) * 10.0) + get(o + 1) * 100.0;
        assert_eq!(v, expected, "at {o}");
    }
}

#[test]
fn map_nested_reductions_and_hoisting() {
    // out[i] = max[j](sum[k](x[i, j, k]) + x[i, 0, 0]) + sum[m](x[i, 1, 1])   (x: [2, 2, 3])
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(2), c(2), c(3)]);
    let mut body = Body::default();
    let inner = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[(1, 1)], 0), (&[(2, 1)], 0)], None);
    let s = body.reduce(ReduceOp::Sum, &[2], inner, DType::F32);
    let corner = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[], 0), (&[], 0)], None);
    let plus = body.bin(BinaryOp::Add, s, corner, DType::F32);
    let mx = body.reduce(ReduceOp::Max, &[1], plus, DType::F32);
    let fixed = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[], 1), (&[], 1)], None);
    let rep = body.reduce(ReduceOp::Sum, &[3], fixed, DType::F32);
    let total = body.bin(BinaryOp::Add, mx, rep, DType::F32);
    let op = body.finish(vec![x], vec![c(2), c(2), c(3), c(4)], total);
    let out = b.node(op, DType::F32, &[c(2)]);
    b.output("out", out);
    let data: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let res = run_ok(&b, &[Tensor::f32(&[2, 2, 3], data)]);
    // i=0: rows sums 3, 12; + x[0,0,0]=0 -> max 12; + 4 * x[0,1,1] = 4*4 = 16 -> 28
    // i=1: rows 21, 30; + 6 -> 36; + 4 * x[1,1,1] = 4*10 = 40 -> 76
    assert_eq!(f32s(&res[0]), vec![28.0, 76.0]);
}

#[test]
fn map_shares_a_node_between_sibling_reductions() {
    // out[i] = sum[k](x[i, k]) * max[k](x[i, k]), with one load node used by both reductions over k.
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(2), c(3)]);
    let mut body = Body::default();
    let l = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[(1, 1)], 0)], None);
    let s = body.reduce(ReduceOp::Sum, &[1], l, DType::F32);
    let m = body.reduce(ReduceOp::Max, &[1], l, DType::F32);
    let p = body.bin(BinaryOp::Mul, s, m, DType::F32);
    let op = body.finish(vec![x], vec![c(2), c(3)], p);
    let out = b.node(op, DType::F32, &[c(2)]);
    b.output("out", out);
    let res = run_ok(&b, &[Tensor::f32(&[2, 3], vec![1.0, 5.0, 2.0, -1.0, -2.0, -3.0])]);
    assert_eq!(f32s(&res[0]), vec![40.0, 6.0]);
}

#[test]
fn map_many_chunks_and_f16() {
    // y[i, j] = x[j, i] * 0.1 in f16 over a shape larger than one chunk.
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F16, &[c(40), c(70)]);
    let mut body = Body::default();
    let l = body.load(0, DType::F16, &[(&[(1, 1)], 0), (&[(0, 1)], 0)], None);
    let h = body.add(ScalarExpr::Const(Scalar::Float(0.1)), DType::F16);
    let m = body.bin(BinaryOp::Mul, l, h, DType::F16);
    let op = body.finish(vec![x], vec![c(70), c(40)], m);
    let y = b.node(op, DType::F16, &[c(70), c(40)]);
    b.output("y", y);
    let xs: Vec<f32> = (0..2800).map(|i| i as f32).collect();
    let out = run_ok(&b, &[Tensor::f16_from_f32(&[40, 70], &xs)]);
    let y = f16s(&out[0]);
    let tenth = f16::from_f64(0.1).to_f32();
    for i in 0..70 {
        for j in 0..40 {
            let xv = f16::from_f32(xs[j * 70 + i]).to_f32();
            assert_eq!(y[i * 40 + j], f16::from_f32(xv * tenth).to_f32());
        }
    }
}

#[test]
fn map_load_out_of_range_without_default_is_an_error() {
    let mut b = Builder::new("t");
    let n = b.sym("N");
    let x = b.input("x", DType::F32, std::slice::from_ref(&n));
    let mut body = Body::default();
    let l = body.load(0, DType::F32, &[(&[(0, 1)], 1)], None);
    let op = body.finish(vec![x], vec![n.clone()], l);
    let y = b.node(op, DType::F32, &[n]);
    b.output("y", y);
    let msg = run_err(&b, &[Tensor::f32(&[3], vec![0.0; 3])]);
    assert_eq!(msg, "%1 (map): s0 reads input 0 at [3], outside its shape [3], and has no default");
}

#[test]
fn outputs_may_repeat_and_alias_inputs() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(2)]);
    let r = b.node(Op::Reshape(x), DType::F32, &[c(1), c(2)]);
    let s = b.node(Op::Reshape(r), DType::F32, &[c(2), c(1)]);
    b.output("a", s);
    b.output("b", s);
    b.output("x", x);
    let out = run_ok(&b, &[Tensor::f32(&[2], vec![1.0, 2.0])]);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], out[1]);
    assert_eq!(out[0].shape, vec![2, 1]);
    assert_eq!(f32s(&out[2]), vec![1.0, 2.0]);
}

#[test]
fn malformed_graph_is_rejected_before_running() {
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(2)]);
    let y = b.node(Op::Unary(UnaryOp::Exp, x), DType::F32, &[c(3)]);
    b.output("y", y);
    let msg = run_err(&b, &[Tensor::f32(&[2], vec![0.0; 2])]);
    assert!(msg.starts_with("the graph is malformed:"), "{msg}");
}

/// `model m(x: f32[B, 4], y: i32[B, 2*S]) { param w: f32[S, H] }`.
fn signature() -> Builder {
    let mut b = Builder::new("m");
    let bd = b.sym("B");
    let s = b.sym("S");
    let h = b.sym("H");
    b.input("x", DType::F32, &[bd.clone(), c(4)]);
    b.input("y", DType::I32, &[bd, s.scale(2).unwrap()]);
    b.param("w", DType::F32, &[s, h]);
    b
}

fn params(entries: Vec<(&str, Tensor)>) -> HashMap<String, Tensor> {
    entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[test]
fn binds_symbols_from_inputs_and_params() {
    let b = signature();
    let syms = bind_symbols(
        &b.g,
        &[Tensor::zeros(DType::F32, &[3, 4]), Tensor::zeros(DType::I32, &[3, 10])],
        &params(vec![("w", Tensor::zeros(DType::F32, &[5, 7])), ("unused", Tensor::zeros(DType::F32, &[1]))]),
    );
    assert_eq!(syms, Ok(vec![3, 5, 7]));
}

fn bind_message(inputs: &[Tensor], p: Vec<(&str, Tensor)>) -> String {
    match bind_symbols(&signature().g, inputs, &params(p)) {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bind_errors_name_the_tensor_and_its_type() {
    let w = || ("w", Tensor::zeros(DType::F32, &[5, 7]));
    let msg = bind_message(&[Tensor::zeros(DType::F32, &[3, 4])], vec![w()]);
    assert_eq!(msg, "model `m` takes 2 input(s) (x: f32[B, 4], y: i32[B, 2*S]), but 1 were given");

    let msg = bind_message(&[Tensor::zeros(DType::F32, &[3, 5]), Tensor::zeros(DType::I32, &[3, 10])], vec![w()]);
    assert_eq!(msg, "input `x`: expected f32[B, 4], got f32[3, 5]: axis 1 is 5, expected 4");

    let msg = bind_message(&[Tensor::zeros(DType::F32, &[3, 4]), Tensor::zeros(DType::I32, &[3, 11])], vec![w()]);
    assert_eq!(
        msg,
        "input `y`: expected i32[B, 2*S], got i32[3, 11]: axis 1 is 11, expected 2*S = 10 where S = 5 (axis 0 of param `w`)"
    );

    let msg = bind_message(&[Tensor::zeros(DType::F32, &[3, 4]), Tensor::zeros(DType::F32, &[3, 10])], vec![w()]);
    assert_eq!(msg, "input `y`: expected i32[B, 2*S], got f32[3, 10]: dtype is f32, expected i32");

    let msg = bind_message(&[Tensor::zeros(DType::F32, &[3, 4, 1]), Tensor::zeros(DType::I32, &[3, 10])], vec![w()]);
    assert_eq!(msg, "input `x`: expected f32[B, 4], got f32[3, 4, 1]: rank is 3, expected 2");

    let msg = bind_message(&[Tensor::zeros(DType::F32, &[3, 4]), Tensor::zeros(DType::I32, &[2, 10])], vec![w()]);
    assert_eq!(msg, "symbol `B` is 3 (axis 0 of input `x`) but 2 (axis 0 of input `y`)");

    let msg = bind_message(&[Tensor::zeros(DType::F32, &[0, 4]), Tensor::zeros(DType::I32, &[0, 10])], vec![w()]);
    assert_eq!(msg, "symbol `B` is 0 (axis 0 of input `x`), but every dimension must be at least 1");
}

#[test]
fn param_problems_are_reported_together() {
    let mut b = signature();
    let h = Dim::sym(SymId(2));
    b.param("v", DType::F16, &[h]);
    b.param("u", DType::F32, &[c(2)]);
    let inputs = [Tensor::zeros(DType::F32, &[3, 4]), Tensor::zeros(DType::I32, &[3, 10])];
    let p = params(vec![("w", Tensor::zeros(DType::F32, &[5, 7])), ("v", Tensor::zeros(DType::F32, &[8]))]);
    let err = bind_symbols(&b.g, &inputs, &p).unwrap_err();
    let RunError::Bind(problems) = &err else { panic!("{err}") };
    assert_eq!(problems.len(), 3);
    assert_eq!(
        err.to_string(),
        "3 problems with the inputs and params:\n  \
         - param `u` (f32[2]) is missing\n  \
         - param `v`: expected f16[H], got f32[8]: dtype is f32, expected f16\n  \
         - symbol `H` is 7 (axis 1 of param `w`) but 8 (axis 0 of param `v`)"
    );
}

#[test]
fn malformed_tensors_are_bind_errors() {
    let bad = Tensor { dtype: DType::F32, shape: vec![3, 4], data: TensorData::F32(vec![0.0; 5]) };
    let msg =
        bind_message(&[bad, Tensor::zeros(DType::I32, &[3, 10])], vec![("w", Tensor::zeros(DType::F32, &[5, 7]))]);
    assert_eq!(
        msg,
        "input `x`: expected f32[B, 4], got f32[3, 4]: the tensor is malformed: 5 f32 values for shape [3, 4]"
    );
}

/// Not a benchmark (no timing assertions): runs the sizes the interpreter must handle quickly and prints
/// how long they took (`cargo test --release -p tdsl-compiler --lib interp::tests::speed -- --nocapture`).
#[test]
fn speed_of_large_matmul_and_map() {
    use std::time::Instant;
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(512), c(384)]);
    let w = b.input("w", DType::F32, &[c(384), c(384)]);
    let z = b.node(Op::MatMul(x, w), DType::F32, &[c(512), c(384)]);
    b.output("z", z);
    let xs: Vec<f32> = (0..512 * 384).map(|i| (i % 7) as f32 * 0.25).collect();
    let ws: Vec<f32> = (0..384 * 384).map(|i| (i % 5) as f32 * 0.5).collect();
    let inputs = [Tensor::f32(&[512, 384], xs), Tensor::f32(&[384, 384], ws)];
    let start = Instant::now();
    let matmul = run_ok(&b, &inputs);
    eprintln!("matmul [512, 384] x [384, 384]: {:?}", start.elapsed());
    assert_eq!(matmul[0].shape, vec![512, 384]);

    // y[i, j] = max(x[i, j] * 2 + x[i, j - 1] else 0, 0) over 1M elements: 7 scalar nodes.
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(1024), c(1024)]);
    let mut body = Body::default();
    let l = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[(1, 1)], 0)], None);
    let two = body.add(ScalarExpr::Const(Scalar::Float(2.0)), DType::F32);
    let m = body.bin(BinaryOp::Mul, l, two, DType::F32);
    let left = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[(1, 1)], -1)], Some(Scalar::Float(0.0)));
    let s = body.bin(BinaryOp::Add, m, left, DType::F32);
    let zero = body.add(ScalarExpr::Const(Scalar::Float(0.0)), DType::F32);
    let r = body.bin(BinaryOp::Max, s, zero, DType::F32);
    let op = body.finish(vec![x], vec![c(1024), c(1024)], r);
    let y = b.node(op, DType::F32, &[c(1024), c(1024)]);
    b.output("y", y);
    let xs: Vec<f32> = (0..1 << 20).map(|i| (i % 11) as f32 - 5.0).collect();
    let input = [Tensor::f32(&[1024, 1024], xs.clone())];
    let start = Instant::now();
    let out = run_ok(&b, &input);
    eprintln!("map over 1M elements, 7 nodes: {:?}", start.elapsed());
    let y = f32s(&out[0]);
    assert_eq!(y[1], (xs[1] * 2.0 + xs[0]).max(0.0));
    assert_eq!(y[1024], (xs[1024] * 2.0).max(0.0));

    // The same matmul written in index notation: out[i, j] = sum[k](x[i, k] * w[k, j]).
    let mut b = Builder::new("t");
    let x = b.input("x", DType::F32, &[c(512), c(384)]);
    let w = b.input("w", DType::F32, &[c(384), c(384)]);
    let mut body = Body::default();
    let lx = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[(2, 1)], 0)], None);
    let lw = body.load(1, DType::F32, &[(&[(2, 1)], 0), (&[(1, 1)], 0)], None);
    let m = body.bin(BinaryOp::Mul, lx, lw, DType::F32);
    let s = body.reduce(ReduceOp::Sum, &[2], m, DType::F32);
    let op = body.finish(vec![x, w], vec![c(512), c(384), c(384)], s);
    let z = b.node(op, DType::F32, &[c(512), c(384)]);
    b.output("z", z);
    let start = Instant::now();
    let via_map = run_ok(&b, &inputs);
    eprintln!("index-notation matmul [512, 384] x [384, 384]: {:?}", start.elapsed());
    assert_eq!(via_map[0], matmul[0], "index notation and matmul accumulate in the same order");
}
