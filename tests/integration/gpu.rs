//! Differential tests of the GPU path: programs are checked, compiled (`pipeline::compile_graph`) and run on the
//! real Vulkan device (lavapipe on a machine without a GPU) through the runtime's `Gpu::execute`, and every
//! output is compared with the reference interpreter (`interp::run`), the definition of every op.
//! No adapter is a failure, not a skip: these tests exist to exercise the device. The device is opened once
//! and shared by every test.
//!
//! Submodules: `along` (take_along_axis, scatter_add, sort, argsort and topk with ties and NaN, their
//! run-time errors and the sort kernel's fiber limit); `device` (one device shared by several threads); `elementwise` (unary/binary/select/cast
//! edge values: NaN, infinities, signed zeros, integer wrapping); `models` (every example and every
//! `fixtures/ok` model with seeded inputs and params); `targeted` (one program per op family: layout,
//! reductions, matmul, index notation, integer division, f16, bool, size-1 dims, scalars, pass-through and
//! constant outputs); `errors` (run-time errors: gather indices and index-notation loads out of range);
//! `random` (proptest: random well-typed programs); `resident` (a loaded model run on several sizes, its
//! output fed on the device to another model); `contractions` (proptest and fixed extremes: matmul
//! over tile-edge shapes, transposed/batched/broadcast/attention layouts and fused epilogues).
//!
//! Tolerances (`Tol`), with `EPS = 2^-23` (one f32 ulp at 1). A float element passes when
//! `|gpu - interp| <= atol + rtol * |interp|`, or both are NaN, or both are the same infinity:
//! - ints and bools: exact (`Tol::Exact`); floats where the sign of zero matters, and layout ops: equal bits.
//! - f32 arithmetic (`+ - * /`, min/max, sqrt, casts, select): `atol = rtol = 16 EPS` (`ARITH`; division
//!   and sqrt may differ by an ulp or two, and a driver may contract `a * b + c` into a fused multiply-add).
//! - f32 `exp log tanh pow erf sigmoid sin cos`: `atol = rtol = 64 EPS` (`TRANSCENDENTAL`); the codegen's
//!   erf (Abramowitz-Stegun 7.1.26) is good to 1.5e-7 absolute, about 1.3 EPS.
//! - reductions, matmul and index-notation reductions over `n` elements: `atol = rtol = 16 EPS * n`
//!   (`Tol::reduction(n)`): each accumulation step may round differently once its operands differ.
//! - f16 (computed in f32, rounded to f16 after every op, subnormals included): `rtol = 2^-10` (one f16
//!   ulp) and `atol = 2^-24` (one subnormal step; a flushed subnormal fails) (`F16`); where several roundings can each
//!   go either way (transcendental functions), a test allows that many ulps of the operands' magnitude.
//! - whole models (`models`): `Tol::Scaled`, a number of f32 ulps of the output's largest magnitude, from
//!   the model's most expensive path of per-op costs (see `models.rs`).
//! - random programs (`random`): every generated value carries a bound on its magnitude and on its error,
//!   derived op by op (first-order error propagation); an output is compared within twice its bound, or
//!   exactly when no rounding reaches it (see `random.rs`).

mod along;
mod contractions;
mod device;
mod elementwise;
mod errors;
mod gl;
mod models;
mod random;
mod random_grad;
mod resident;
mod targeted;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::util::single_graph;
use tdsl_compiler::codegen;
use tdsl_compiler::dim::SymId;
use tdsl_compiler::interp::{self, Tensor};
use tdsl_compiler::ir::{DType, Graph, Op};
use tdsl_runtime::gpu::{Gpu, GpuOptions};
use tdsl_runtime::random::seeded_tensor;
use tdsl_runtime::{Cpu, ExecError};

/// One f32 ulp at 1.
pub const EPS: f64 = f32::EPSILON as f64;

/// How an output is compared.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tol {
    /// `|gpu - interp| <= atol + rtol * |interp|` (floats); NaN matches NaN, an infinity itself.
    Close { atol: f64, rtol: f64 },
    /// Equal values (ints, bools; `-0 == +0`); NaN matches NaN.
    Exact,
    /// Equal bits (floats where the sign of zero matters); NaN matches any NaN.
    Bits,
    /// `|gpu - interp| <= k * max(1, max |interp|)`, the maximum over the whole output (whole models).
    Scaled(f64),
}

/// f32 arithmetic, casts and select.
pub const ARITH: Tol = Tol::Close { atol: 16.0 * EPS, rtol: 16.0 * EPS };
/// f32 transcendental functions.
pub const TRANSCENDENTAL: Tol = Tol::Close { atol: 64.0 * EPS, rtol: 64.0 * EPS };
/// f16 results: one f16 ulp, or one subnormal step near zero (subnormals are rounded, never flushed).
pub const F16: Tol = Tol::Close { atol: 1.0 / 16_777_216.0, rtol: 1.0 / 1024.0 };

impl Tol {
    /// A reduction or contraction over `n` elements.
    pub fn reduction(n: usize) -> Tol {
        let t = 16.0 * EPS * n.max(1) as f64;
        Tol::Close { atol: t, rtol: t }
    }

    /// `self` with both tolerances multiplied by `k` (Exact and Bits stay as they are).
    pub fn times(self, k: f64) -> Tol {
        match self {
            Tol::Close { atol, rtol } => Tol::Close { atol: atol * k, rtol: rtol * k },
            other => other,
        }
    }

    /// `got` (GPU) is close enough to `want` (interpreter) in an output whose largest magnitude is `scale`.
    fn accepts(self, got: f64, want: f64, scale: f64) -> bool {
        if got.is_nan() || want.is_nan() {
            return got.is_nan() && want.is_nan();
        }
        match self {
            Tol::Exact => got == want,
            Tol::Bits => got.to_bits() == want.to_bits(),
            Tol::Close { atol, rtol } => got == want || (got - want).abs() <= atol + rtol * want.abs(),
            Tol::Scaled(k) => got == want || (got - want).abs() <= k * scale.max(1.0),
        }
    }
}

/// The usual tolerance for an output of `dtype`: exact for ints and bools, `F16` for f16, `float` for f32.
pub fn by_dtype(dtype: DType, float: Tol) -> Tol {
    match dtype {
        DType::F32 => float,
        DType::F16 => F16,
        DType::I32 | DType::U32 | DType::Bool => Tol::Exact,
    }
}

/// One tolerance per output of `graph`, by its dtype (see `by_dtype`).
pub fn tols_by_dtype(graph: &Graph, float: Tol) -> Vec<Tol> {
    graph.outputs.iter().map(|o| by_dtype(graph.node(o.node).ty.dtype, float)).collect()
}

/// The shared device. Opening it fails the calling test with a clear message when there is no adapter.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    match GPU.get_or_init(|| Gpu::new(&GpuOptions::default()).map_err(|err| err.to_string())) {
        Ok(gpu) => gpu,
        Err(err) => panic!(
            "the GPU differential tests need a Vulkan adapter (they fail rather than skip; install Mesa's \
             lavapipe, package mesa-vulkan-drivers, on a machine without a GPU): {err}"
        ),
    }
}

/// Compiles `graph` and runs it through `Gpu::execute`; a compile error fails the test. Runs take turns:
/// lavapipe spreads one dispatch over every core anyway, and `device.rs` tests concurrent runs on its own.
pub fn run_gpu(graph: &Graph, inputs: &[Tensor], params: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, ExecError> {
    run_gpu_with(graph, inputs, params, true)
}

/// `run_gpu`, fused or unfused.
pub fn run_gpu_with(
    graph: &Graph,
    inputs: &[Tensor],
    params: &HashMap<String, Tensor>,
    fuse: bool,
) -> Result<Vec<Tensor>, ExecError> {
    let target = codegen::Target::for_gpu(gpu());
    run_gpu_for(graph, inputs, params, &crate::util::options(fuse, target))
}

/// `run_gpu` compiled with `options` (e.g. another device profile than the device's own).
pub fn run_gpu_for(
    graph: &Graph,
    inputs: &[Tensor],
    params: &HashMap<String, Tensor>,
    options: &tdsl_compiler::pipeline::Options,
) -> Result<Vec<Tensor>, ExecError> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let compiled = crate::util::compile_with(graph, options)
        .unwrap_or_else(|err| panic!("{} does not compile: {err}", graph.name));
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    gpu().execute(&compiled.program, inputs, params)
}

/// The CPU executor, shared by every test: two threads (CI's machine has two cores) on every machine, so
/// the work split between threads and the batches run slice by slice (`CpuModel::chains`, at least two
/// positions per thread) are the same everywhere.
pub fn cpu() -> &'static Cpu {
    static CPU: OnceLock<Cpu> = OnceLock::new();
    CPU.get_or_init(|| Cpu::new(Some(2)).expect("the CPU executor starts"))
}

/// Compiles `graph` (fused, for the device's profile) and runs it on the CPU executor (`Cpu::execute`).
pub fn run_cpu(graph: &Graph, inputs: &[Tensor], params: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, ExecError> {
    run_cpu_for(graph, inputs, params, &crate::util::options(true, codegen::Target::for_gpu(gpu())))
}

/// `run_cpu` compiled with `options` (another profile's fusion decisions, or unfused).
pub fn run_cpu_for(
    graph: &Graph,
    inputs: &[Tensor],
    params: &HashMap<String, Tensor>,
    options: &tdsl_compiler::pipeline::Options,
) -> Result<Vec<Tensor>, ExecError> {
    let compiled = crate::util::compile_with(graph, options)
        .unwrap_or_else(|err| panic!("{} does not compile: {err}", graph.name));
    cpu().execute(&compiled.program, inputs, params)
}

/// `run_cpu_for` twice on one loaded model: the second run finds every weight as the first left it, so
/// large products go by the CPU executor's panels (weights packed on their second run), the first run
/// through `gemm`; both runs' outputs, in order.
pub fn run_cpu_twice_for(
    graph: &Graph,
    inputs: &[Tensor],
    params: &HashMap<String, Tensor>,
    options: &tdsl_compiler::pipeline::Options,
) -> Result<[Vec<Tensor>; 2], ExecError> {
    let compiled = crate::util::compile_with(graph, options)
        .unwrap_or_else(|err| panic!("{} does not compile: {err}", graph.name));
    cpu().check(&compiled.program)?;
    let mut model = cpu().load(&compiled.program, params)?;
    let first = model.run(inputs)?;
    Ok([first, model.run(inputs)?])
}

/// Symbol values of `graph`: each symbol's size from `sizes` by name, else `default`.
pub fn symbol_values(graph: &Graph, sizes: &[(&str, i64)], default: i64) -> Vec<i64> {
    graph.symbols.iter().map(|s| sizes.iter().find(|(name, _)| *name == s.name).map_or(default, |&(_, v)| v)).collect()
}

/// The concrete shape of `node` under `symbols`.
pub fn node_shape(graph: &Graph, node: tdsl_compiler::ir::NodeId, symbols: &[i64]) -> Vec<usize> {
    let env = |s: SymId| symbols[s.0 as usize];
    graph
        .node(node)
        .ty
        .shape
        .iter()
        .map(|d| {
            let v = d.eval(&env).unwrap_or_else(|| panic!("dimension {} overflows", graph.dim_to_string(d)));
            usize::try_from(v).unwrap_or_else(|_| panic!("dimension {} is {v}", graph.dim_to_string(d)))
        })
        .collect()
}

/// Seeded inputs (signature order) and params (by key) for `graph` under `symbols` (`seeded_tensor`: floats
/// in [-1, 1), integers 0 or 1, fair bools; batch norms' running variances positive, `util::seeded_param`).
pub fn seeded_bindings(graph: &Graph, symbols: &[i64], seed: u64) -> (Vec<Tensor>, HashMap<String, Tensor>) {
    let inputs = graph
        .inputs
        .iter()
        .map(|&id| {
            let Op::Input { name } = &graph.node(id).op else { panic!("input node is not an input") };
            seeded_tensor(name, graph.node(id).ty.dtype, &node_shape(graph, id, symbols), seed)
        })
        .collect();
    let params = graph
        .params
        .iter()
        .map(|&id| {
            let Op::Param { key } = &graph.node(id).op else { panic!("param node is not a param") };
            (
                key.clone(),
                crate::util::seeded_param(key, graph.node(id).ty.dtype, &node_shape(graph, id, symbols), seed),
            )
        })
        .collect();
    (inputs, params)
}

/// Checks `text` (one model), runs it on both sides with seeded inputs (symbols from `sizes`, others 3) and
/// compares output `i` under `tols[i]`.
pub fn seeded(name: &str, text: &str, sizes: &[(&str, i64)], tols: &[Tol]) {
    let graph = single_graph(name, text);
    let symbols = symbol_values(&graph, sizes, 3);
    let (inputs, params) = seeded_bindings(&graph, &symbols, 7);
    compare(name, &graph, &inputs, &params, tols);
}

/// Like `seeded`, with every output compared by its dtype (`tols_by_dtype`) except those named in
/// `overrides`, which get their own tolerance.
pub fn seeded_by_dtype(name: &str, text: &str, sizes: &[(&str, i64)], float: Tol, overrides: &[(&str, Tol)]) {
    let graph = single_graph(name, text);
    let mut tols = tols_by_dtype(&graph, float);
    for (output, tol) in overrides {
        let i = graph.outputs.iter().position(|o| o.name == *output).unwrap_or_else(|| panic!("no output {output}"));
        tols[i] = *tol;
    }
    let symbols = symbol_values(&graph, sizes, 3);
    let (inputs, params) = seeded_bindings(&graph, &symbols, 7);
    compare(name, &graph, &inputs, &params, &tols);
}

/// Checks `text` and compares both sides on the given inputs (no params), every output by its dtype.
pub fn given(name: &str, text: &str, inputs: Vec<Tensor>, float: Tol) {
    let graph = single_graph(name, text);
    let tols = tols_by_dtype(&graph, float);
    compare(name, &graph, &inputs, &HashMap::new(), &tols);
}

/// Runs `graph` on both sides and compares output `i` under `tols[i]`; every mismatch (the first few per
/// output, with the inputs at that element when shapes allow) is reported in one failure.
/// The program is compiled for the device's own profile and, where that is another, for the `gpu` profile
/// too (workgroup rows with subgroup reductions where the device has subgroups, shared-memory tiles), so
/// both schedule families run on every device the tests run on.
pub fn compare(name: &str, graph: &Graph, inputs: &[Tensor], params: &HashMap<String, Tensor>, tols: &[Tol]) {
    assert_eq!(graph.outputs.len(), tols.len(), "{name}: one tolerance per output");
    let expected = interp::run(graph, inputs, params).unwrap_or_else(|err| panic!("{name}: interpreter: {err}"));
    let mut failures = Vec::new();
    for target in profiles() {
        let actual = run_gpu_for(graph, inputs, params, &crate::util::options(true, target))
            .unwrap_or_else(|err| panic!("{name}: GPU ({} profile): {err}", target.name));
        let what = format!("{name} ({} profile)", target.name);
        failures.extend(mismatches(&what, graph, inputs, &expected, &actual, tols));
    }
    let options = crate::util::options(true, codegen::Target::for_gpu(gpu()));
    let runs =
        run_cpu_twice_for(graph, inputs, params, &options).unwrap_or_else(|err| panic!("{name}: CPU executor: {err}"));
    for (run, actual) in ["first", "second"].iter().zip(&runs) {
        let what = format!("{name} (CPU executor, {run} run)");
        failures.extend(mismatches(&what, graph, inputs, &expected, actual, tols));
    }
    assert!(
        failures.is_empty(),
        "GPU ({}) or the CPU executor disagrees with the interpreter:\n{}",
        gpu().describe(),
        failures.join("\n")
    );
}

/// The device's own profile, then the `gpu` profile (with subgroups only where the device has them) when
/// that is another.
pub fn profiles() -> Vec<codegen::Target> {
    let own = codegen::Target::for_gpu(gpu());
    let mut gpu_profile = codegen::Target::default();
    gpu_profile.subgroups &= gpu().device.features().contains(tdsl_runtime::wgpu::Features::SUBGROUP);
    if gpu_profile == own { vec![own] } else { vec![own, gpu_profile] }
}

/// The mismatches between `expected` (interpreter) and `actual` (GPU), as messages.
pub fn mismatches(
    name: &str,
    graph: &Graph,
    inputs: &[Tensor],
    expected: &[Tensor],
    actual: &[Tensor],
    tols: &[Tol],
) -> Vec<String> {
    let mut failures = Vec::new();
    if expected.len() != actual.len() {
        failures.push(format!(
            "{name}: {} outputs from the GPU, {} from the interpreter",
            actual.len(),
            expected.len()
        ));
        return failures;
    }
    for (((output, want), got), tol) in graph.outputs.iter().zip(expected).zip(actual).zip(tols) {
        if want.dtype != got.dtype || want.shape != got.shape {
            failures.push(format!(
                "{name} output {}: GPU gives {}, the interpreter {}",
                output.name,
                got.type_string(),
                want.type_string()
            ));
            continue;
        }
        let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
        let scale = w.iter().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
        let mut bad = 0;
        for (i, (&x, &y)) in g.iter().zip(&w).enumerate() {
            if tol.accepts(x, y, scale) {
                continue;
            }
            bad += 1;
            if bad <= 5 {
                let mut inputs_here = String::new();
                for t in inputs {
                    let v = t.to_f64_vec();
                    if v.len() == w.len() {
                        inputs_here.push_str(&format!(" {:?}", v[i]));
                    }
                }
                let at = if inputs_here.is_empty() { String::new() } else { format!("; inputs here:{inputs_here}") };
                failures.push(format!(
                    "{name} output {} element {i} of {:?}: gpu {x:?} vs interp {y:?} (diff {:e}, {tol:?}{at})",
                    output.name,
                    want.shape,
                    (x - y).abs()
                ));
            }
        }
        if bad > 5 {
            failures.push(format!("{name} output {}: {bad} mismatches of {} elements", output.name, w.len()));
        }
    }
    failures
}
