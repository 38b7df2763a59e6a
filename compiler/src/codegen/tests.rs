//! Codegen unit tests: every elementwise op on every dtype it takes, reductions, matmul, f16 and integer
//! division yield a module that naga validates, WGSL, and SPIR-V that `spirv-val --target-env vulkan1.1`
//! accepts (the tool must be installed: a missing `spirv-val` fails the test rather than skipping the
//! check); the kernel frame (bindings, uniform slots) is as documented. Whole programs are tested in the
//! integration binary (snapshots, spirv-val on every kernel, GPU against the interpreter).

use super::*;
use crate::ir::build::{Builder, c};
use crate::ir::{BinaryOp, DType, Op, UnaryOp};

const SPIRV_VAL: &str = "spirv-val";

/// Validates `kernel`'s SPIR-V with `spirv-val` and checks both outputs are present.
fn check(kernel: &Kernel) {
    let wgsl = kernel.wgsl().to_string();
    assert!(wgsl.contains("fn main("), "{}: WGSL without an entry point:\n{wgsl}", kernel.name);
    let words = kernel.spirv().to_vec();
    assert_eq!(words.first(), Some(&0x0723_0203), "{}: not SPIR-V", kernel.name);
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    // Tests run in parallel and kernel names repeat across graphs, so every file gets its own number.
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let file = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("tdsl-codegen-{}-{file}-{}.spv", std::process::id(), kernel.name);
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, bytes).expect("write the SPIR-V to a temp file");
    let result = std::process::Command::new(SPIRV_VAL).arg("--target-env").arg("vulkan1.1").arg(&path).output();
    let _ = std::fs::remove_file(&path);
    let output = result.unwrap_or_else(|err| {
        panic!("could not run `{SPIRV_VAL}` ({err}); install SPIRV-Tools (Debian: apt-get install spirv-tools)")
    });
    assert!(
        output.status.success(),
        "{}: spirv-val rejected the module:\n{}{}\nWGSL:\n{wgsl}",
        kernel.name,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn kernel_of(b: &Builder, node: crate::ir::NodeId) -> Kernel {
    crate::ir::verify(&b.g).unwrap_or_else(|errs| panic!("test graph does not verify: {errs:?}"));
    let group = group::Group { root: node, inline: Default::default(), siblings: Vec::new() };
    let schedule = Schedule::choose(&b.g, &group, &Target::default());
    group_kernel(&b.g, &group, &schedule, 0).unwrap_or_else(|err| panic!("{err}"))
}

fn unary_kernel(op: UnaryOp, dtype: DType) -> Kernel {
    let mut b = Builder::new("unary");
    let n = b.sym("N");
    let x = b.input("x", dtype, &[n]);
    let y = b.unary(op, x);
    b.output("y", y);
    kernel_of(&b, y)
}

fn binary_kernel(op: BinaryOp, dtype: DType) -> Kernel {
    let mut b = Builder::new("binary");
    let n = b.sym("N");
    let x = b.input("x", dtype, &[n.clone(), c(3)]);
    let y = b.input("y", dtype, &[n, c(3)]);
    let z = b.binary(op, x, y);
    b.output("z", z);
    kernel_of(&b, z)
}

#[test]
fn float_unary_ops() {
    for op in UnaryOp::ALL.into_iter().filter(|op| *op != UnaryOp::Not) {
        check(&unary_kernel(op, DType::F32));
    }
}

#[test]
fn integer_and_bool_unary_ops() {
    for dtype in [DType::I32, DType::U32] {
        for op in [UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Relu] {
            check(&unary_kernel(op, dtype));
        }
    }
    check(&unary_kernel(UnaryOp::Not, DType::Bool));
}

#[test]
fn float_binary_ops() {
    use BinaryOp::*;
    for op in [Add, Sub, Mul, Div, Rem, Pow, Min, Max, Lt, Le, Gt, Ge, Eq, Ne] {
        check(&binary_kernel(op, DType::F32));
    }
}

#[test]
fn integer_and_bool_binary_ops() {
    use BinaryOp::*;
    for dtype in [DType::I32, DType::U32] {
        for op in [Add, Sub, Mul, Min, Max, Lt, Le, Gt, Ge, Eq, Ne] {
            check(&binary_kernel(op, dtype));
        }
    }
    for op in [And, Or, Eq, Ne] {
        check(&binary_kernel(op, DType::Bool));
    }
}

#[test]
fn select_on_every_dtype() {
    for dtype in [DType::F32, DType::I32, DType::U32, DType::Bool] {
        let mut b = Builder::new("select");
        let shape = [b.sym("N")];
        let cond = b.input("c", DType::Bool, &shape);
        let x = b.input("x", dtype, &shape);
        let y = b.input("y", dtype, &shape);
        let z = b.node(Op::Select { cond, on_true: x, on_false: y }, dtype, &shape);
        b.output("z", z);
        check(&kernel_of(&b, z));
    }
}

#[test]
fn casts_between_all_supported_dtypes() {
    let dtypes = [DType::F32, DType::I32, DType::U32, DType::Bool];
    for from in dtypes {
        for to in dtypes {
            let mut b = Builder::new("cast");
            let x = b.input("x", from, &[c(5)]);
            let y = b.node(Op::Cast(x), to, &[c(5)]);
            b.output("y", y);
            check(&kernel_of(&b, y));
        }
    }
}

#[test]
fn broadcasts_with_symbolic_and_derived_dimensions() {
    let mut b = Builder::new("broadcast");
    let batch = b.sym("B");
    let seq = b.sym("S");
    // An axis of (S + 1) / 2 exercises floor division; 2*S + B sums and products.
    let half = seq.add(&c(1)).unwrap().div(&c(2)).unwrap();
    let wide = seq.scale(2).unwrap().add(&batch).unwrap();
    let x = b.input("x", DType::F32, &[half.clone(), c(1), wide.clone()]);
    let y = b.node(Op::Broadcast(x), DType::F32, &[batch.clone(), half.clone(), c(4), wide.clone()]);
    b.output("y", y);
    let kernel = kernel_of(&b, y);
    check(&kernel);
    // The uniform block holds the count and each derived dimension once; constants are literals.
    let slots = kernel.args.iter().find_map(|arg| match arg {
        KernelArg::Uniform(dims) => Some(dims.clone()),
        _ => None,
    });
    let slots = slots.expect("a uniform block");
    assert_eq!(slots[0], kernel.invocations);
    assert!(slots.contains(&half) && slots.contains(&wide), "{slots:?}");
    assert!(slots.iter().all(|d| d.as_const().is_none()), "{slots:?}");
    // A scalar broadcast to a matrix, and a bool row broadcast over rows.
    let s = b.input("s", DType::I32, &[]);
    let m = b.node(Op::Broadcast(s), DType::I32, &[c(3), batch.clone()]);
    let r = b.input("r", DType::Bool, std::slice::from_ref(&batch));
    let rows = b.node(Op::Broadcast(r), DType::Bool, &[seq, batch]);
    check(&kernel_of(&b, m));
    check(&kernel_of(&b, rows));
}

#[test]
fn add_kernel_layout_and_wgsl() {
    let kernel = binary_kernel(BinaryOp::Add, DType::F32);
    let wgsl = kernel.wgsl();
    assert!(wgsl.contains("@compute"), "{wgsl}");
    assert!(wgsl.contains("@workgroup_size(256"), "{wgsl}");
    assert!(matches!(kernel.args[0], KernelArg::Read(_)), "{:?}", kernel.args);
    assert!(matches!(kernel.args[1], KernelArg::Read(_)), "{:?}", kernel.args);
    assert!(matches!(kernel.args[2], KernelArg::Write(_)), "{:?}", kernel.args);
    assert!(matches!(kernel.args[3], KernelArg::Uniform(_)), "{:?}", kernel.args);
    assert_eq!(kernel.args.len(), 4, "no status buffer in a kernel that cannot fail");
    assert_eq!(kernel.module.entry_points.len(), 1);
}

#[test]
fn reductions_matmul_f16_and_integer_division_build() {
    let mut b = Builder::new("mixed");
    let n = b.sym("N");
    let x = b.input("x", DType::F32, &[n.clone(), c(3)]);
    let sum = b.node(
        Op::Reduce { op: crate::ir::ReduceOp::Mean, input: x, axes: vec![1] },
        DType::F32,
        std::slice::from_ref(&n),
    );
    let w = b.input("w", DType::F32, &[c(3), c(2)]);
    let mm = b.node(Op::MatMul(x, w), DType::F32, &[n.clone(), c(2)]);
    let half = b.input("h", DType::F16, std::slice::from_ref(&n));
    let half_exp = b.unary(UnaryOp::Exp, half);
    let i = b.input("i", DType::I32, std::slice::from_ref(&n));
    let j = b.input("j", DType::I32, std::slice::from_ref(&n));
    let int_div = b.binary(BinaryOp::Div, i, j);
    let int_rem = b.binary(BinaryOp::Rem, i, j);
    for node in [sum, mm, half_exp, int_div, int_rem] {
        check(&kernel_of(&b, node));
    }
}

/// Every kernel that loops states the loop iterations one invocation runs (`BoundKind::LoopIterations`):
/// nested loops multiply, sequential ones add, a workgroup's strided loop counts its share of the row, and
/// the op named is the one whose loops run most. A loop-free kernel states none.
#[test]
fn kernels_state_their_loop_iterations() {
    let loops = |kernel: &Kernel| -> Vec<(BoundKind, Dim)> {
        let found = kernel.bounds.iter().filter(|(what, ..)| matches!(what, BoundKind::LoopIterations { .. }));
        found.map(|(what, value, _)| (*what, value.clone())).collect()
    };
    let mut b = Builder::new("loops");
    let n = b.sym("N");
    let x = b.input("x", DType::F32, &[n.clone(), c(8)]);
    let w = b.input("w", DType::F32, &[c(8), c(5)]);
    let y = b.node(Op::MatMul(x, w), DType::F32, &[n.clone(), c(5)]);
    let s = b.node(
        Op::Reduce { op: crate::ir::ReduceOp::Sum, input: y, axes: vec![1] },
        DType::F32,
        std::slice::from_ref(&n),
    );
    let e = b.unary(UnaryOp::Exp, x);
    b.output("s", s);
    b.output("e", e);
    crate::ir::verify(&b.g).unwrap_or_else(|errs| panic!("{errs:?}"));
    // One invocation per output: 5 reduction trips, each computing the matmul's 8.
    let group = group::Group { root: s, inline: [y].into(), siblings: Vec::new() };
    let kernel = group_kernel(&b.g, &group, &Schedule::Plain, 0).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(loops(&kernel), [(BoundKind::LoopIterations { node: y.index() as u32 }, Dim::constant(5 + 5 * 8))]);
    assert!(loops(&kernel_of(&b, e)).is_empty(), "an elementwise kernel does not loop");
    // A whole-tensor sum on a workgroup of 256: ceil(64N / 256) trips each, plus the subgroup steps.
    let mut b = Builder::new("sum");
    let n = b.sym("N");
    let x = b.input("x", DType::F32, &[n, c(64)]);
    let total = b.node(Op::Reduce { op: crate::ir::ReduceOp::Sum, input: x, axes: vec![0, 1] }, DType::F32, &[]);
    b.output("total", total);
    let kernel = kernel_of(&b, total);
    let [(what, value)] = &loops(&kernel)[..] else { panic!("one loop bound: {:?}", kernel.bounds) };
    assert_eq!(*what, BoundKind::LoopIterations { node: total.index() as u32 });
    let symbols = |n: i64| [n];
    // 64 * 1024 elements over 256 invocations: 256 trips, then 8 shuffle steps and at most 256 subgroups.
    assert_eq!(value.eval_at(&symbols(1024)), Some(256 + 8 + 256));
}
