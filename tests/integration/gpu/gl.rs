//! The GL backend (issue 20: `--backend gl` failed on every kernel, because SPIR-V passthrough was used
//! wherever the adapter reported `PASSTHROUGH_SHADERS`, and GL takes only GLSL there). On GL the runtime
//! builds each kernel from its WGSL; these tests open a GL device of their own (Mesa's llvmpipe over EGL
//! on a machine without a GPU: Debian packages libegl-mesa0 and libgl1-mesa-dri, which `.ci/run`
//! installs; no adapter is a failure, not a skip) and run programs that cover the kernel families and
//! this numerics there, against the interpreter. The whole GPU suite also runs on GL with
//! `TDSL_BACKEND=gl`, but slowly: lavapipe's GL compiles large kernels far more slowly than its Vulkan.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::{Tol, mismatches, seeded_bindings, symbol_values};
use crate::util::single_graph;
use tdsl_compiler::interp::{self, Tensor};
use tdsl_runtime::gpu::{BackendChoice, Gpu, GpuOptions};

fn gl() -> &'static Gpu {
    static GL: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let options = GpuOptions { backend: Some(BackendChoice::Gl), ..GpuOptions::default() };
    match GL.get_or_init(|| Gpu::new(&options).map_err(|err| err.to_string())) {
        Ok(gpu) => gpu,
        Err(err) => panic!(
            "the GL tests need a GL adapter (install Mesa's llvmpipe GL, packages libegl-mesa0 and \
             libgl1-mesa-dri, on a machine without a GPU): {err}"
        ),
    }
}

/// Runs `text` on the GL device and on the interpreter and compares output `i` under `tols[i]`.
fn agree_on_gl(name: &str, text: &str, inputs: &[Tensor], params: &HashMap<String, Tensor>, tols: &[Tol]) {
    let graph = single_graph(name, text);
    let expected = interp::run(&graph, inputs, params).unwrap_or_else(|err| panic!("{name}: interpreter: {err}"));
    let compiled = compile_for_gl(&graph);
    let actual = gl().execute(&compiled.program, inputs, params).unwrap_or_else(|err| panic!("{name} on GL: {err}"));
    let failures = mismatches(name, &graph, inputs, &expected, &actual, tols);
    assert!(failures.is_empty(), "GL ({}) disagrees with the interpreter:\n{}", gl().describe(), failures.join("\n"));
}

/// `graph` compiled for the GL device's own profile (llvmpipe's GL has no subgroups).
fn compile_for_gl(graph: &tdsl_compiler::ir::Graph) -> tdsl_compiler::codegen::Compiled {
    let options = crate::util::options(true, tdsl_compiler::codegen::Target::for_gpu(gl()));
    crate::util::compile_with(graph, &options).unwrap_or_else(|err| panic!("{}: {err}", graph.name))
}

#[test]
fn gl_builds_kernels_from_wgsl() {
    assert_eq!(gl().info.backend, tdsl_runtime::wgpu::Backend::Gl);
    assert!(!gl().takes_spirv(), "GL takes no SPIR-V");
}

/// Literal zero, infinite and NaN operands and f16 subnormals agree bit for bit on GL as on Vulkan.
#[test]
fn ieee_literal_operands_and_f16_subnormals_on_gl() {
    let x = vec![f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0, 0.0, 1.0, -2.5, 1e-40, 3e38, 7.0];
    let tiny = 2f32.powi(-24);
    let h = vec![tiny, -tiny, 3.0 * tiny, 1023.0 * tiny, 2f32.powi(-14), 0.5, -0.0, 9.0e-6, 60000.0, 1.0];
    let len = x.len();
    let inputs = vec![Tensor::f32(&[len], x), Tensor::f16_from_f32(&[len], &h)];
    agree_on_gl(
        "gl_numerics.tdsl",
        "model m(x: f32[L], h: f16[L]) -> (a: f32[L], b: f32[L], k: f32[L], d: f32[L], s: f16[L], c: f16[L]) {
            a = x / 0.0
            b = x * 0.0
            k = 0.0 / x
            d = x + 0.0
            s = h * 0.25 + h * 0.001
            c = f16(x * 0.000001)
        }",
        &inputs,
        &HashMap::new(),
        &[Tol::Bits; 6],
    );
}

/// Reductions, row kernels, a contraction and index notation on GL.
#[test]
fn reductions_rows_matmul_and_index_notation_on_gl() {
    let text = "model m(x: f32[N, D], w: f32[D, K], k: i32[N, D])
        -> (s: f32[N], p: f32[N, D], y: f32[N, K], c: f32[N, D], t: i32[D]) {
        s = sum(x * x, axis: 1)
        p = softmax(x, axis: 1)
        y = x @ w
        c[i: N, j: D] = sum[r: 3](x[i, j + r - 1] else 0.0)
        t = sum(k, axis: 0)
    }";
    let graph = single_graph("gl_families.tdsl", text);
    let symbols = symbol_values(&graph, &[("N", 5), ("D", 37), ("K", 3)], 3);
    let (inputs, params) = seeded_bindings(&graph, &symbols, 7);
    let tols = [Tol::reduction(37), Tol::reduction(37).times(4.0), Tol::reduction(37), Tol::reduction(3), Tol::Exact];
    agree_on_gl("gl_families.tdsl", text, &inputs, &params, &tols);
}

/// A run-time error on GL names its launch, the op and the value, as on Vulkan.
#[test]
fn gather_out_of_range_on_gl_is_an_error_naming_the_op() {
    let graph = single_graph(
        "gl_gather.tdsl",
        "model m(t: f32[V, D], ids: i32[N]) -> (y: f32[N, D]) {
            y = gather(t, ids) * 2.0
        }",
    );
    let compiled = compile_for_gl(&graph);
    let inputs = vec![Tensor::f32(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]), Tensor::i32(&[2], vec![1, -4])];
    let err =
        gl().execute(&compiled.program, &inputs, &HashMap::<String, Tensor>::new()).expect_err("-4 is out of range");
    let message = err.to_string();
    assert!(message.contains("value -4") && message.contains("(gather)"), "{message}");
}
