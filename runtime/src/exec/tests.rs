//! Tests of `Gpu::execute` on a real device (lavapipe in CI; no adapter is a failure, never a skip):
//! hand-written `Program`s with hand-written WGSL kernels check outputs, symbols bound from inputs and read
//! from uniform blocks, every binding error's whole message, bounds, uniform ranges, grid folding on a
//! 20-million-element tensor, status-buffer errors naming their launch, oversized tensors, `validate`, and
//! params from a safetensors file (all mismatches in one error) or a map.

use super::*;
use crate::dim::{Dim, SymId};
use crate::gpu::tests::gpu;
use crate::program::{Arg, Bound, BoundKind, Launch, SourceLocation, TensorDecl};
use crate::weights::Weights;
use safetensors::tensor::TensorView;
use std::collections::HashMap;
use std::path::PathBuf;

fn n() -> Dim {
    Dim::sym(SymId(0))
}

fn times(coef: i64, dim: Dim) -> Dim {
    dim.scale(coef).expect("no overflow")
}

fn plus(a: Dim, b: Dim) -> Dim {
    a.add(&b).expect("no overflow")
}

fn decl(name: &str, role: TensorRole, dtype: DType, shape: Vec<Dim>) -> TensorDecl {
    TensorDecl { name: name.into(), role, dtype, shape }
}

fn input(name: &str, dtype: DType, shape: Vec<Dim>) -> TensorDecl {
    decl(&format!("input {name}"), TensorRole::Input(name.into()), dtype, shape)
}

fn param(key: &str, dtype: DType, shape: Vec<Dim>) -> TensorDecl {
    decl(&format!("param {key}"), TensorRole::Param(key.into()), dtype, shape)
}

fn computed(name: &str, dtype: DType, shape: Vec<Dim>) -> TensorDecl {
    decl(name, TensorRole::Computed, dtype, shape)
}

fn launch(name: &str, wgsl: &str, args: Vec<Arg>, invocations: Dim, workgroup_size: u32) -> Launch {
    Launch {
        name: name.into(),
        wgsl: wgsl.into(),
        spirv: vec![],
        args,
        invocations,
        workgroup_size,
        bounds: vec![],
        requires: Default::default(),
        checks: vec![],
        ops: Default::default(),
    }
}

fn ids(list: &[u32]) -> Vec<TensorId> {
    list.iter().map(|&i| TensorId(i)).collect()
}

fn no_params() -> HashMap<String, Tensor> {
    HashMap::new()
}

/// The flat invocation index of a folded grid, as `Launch::invocations` documents it, for workgroups of 64.
const FLAT_64: &str = "let i = gid.x + gid.y * groups.x * 64u;";

/// `out[i] = a[i] + b[2i] + b[2i + 1]` for `i < n`: `a: f32[N]`, `b: f32[2*N]`, `n` from the uniform block.
fn pairs_wgsl() -> String {
    format!(
        "struct Dims {{ n: u32 }}\n\
         @group(0) @binding(0) var<storage, read> a: array<f32>;\n\
         @group(0) @binding(1) var<storage, read> b: array<f32>;\n\
         @group(0) @binding(2) var<storage, read_write> out: array<f32>;\n\
         @group(0) @binding(3) var<uniform> dims: Dims;\n\
         @compute @workgroup_size(64)\n\
         fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {{\n\
             {FLAT_64}\n\
             if (i >= dims.n) {{ return; }}\n\
             out[i] = a[i] + b[2u * i] + b[2u * i + 1u];\n\
         }}\n"
    )
}

/// `out[i] = x[i] * s` for `i < n`, with `s` and `n` in the uniform block.
fn scale_wgsl() -> String {
    format!(
        "struct Dims {{ n: u32, s: u32 }}\n\
         @group(0) @binding(0) var<storage, read> x: array<f32>;\n\
         @group(0) @binding(1) var<storage, read_write> out: array<f32>;\n\
         @group(0) @binding(2) var<uniform> dims: Dims;\n\
         @compute @workgroup_size(64)\n\
         fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {{\n\
             {FLAT_64}\n\
             if (i >= dims.n) {{ return; }}\n\
             out[i] = x[i] * f32(dims.s);\n\
         }}\n"
    )
}

/// `model pairs(a: f32[N], b: f32[2*N]) -> (sum, a, tripled)`: `sum = a + pairs of b`, `tripled = 3 * sum`.
fn pairs_program() -> Program {
    Program {
        name: "pairs".into(),
        symbols: vec!["N".into()],
        tensors: vec![
            input("a", DType::F32, vec![n()]),
            input("b", DType::F32, vec![times(2, n())]),
            computed("%2 add", DType::F32, vec![n()]),
            computed("%3 mul", DType::F32, vec![n()]),
        ],
        inputs: ids(&[0, 1]),
        params: vec![],
        outputs: vec![("sum".into(), TensorId(2)), ("a".into(), TensorId(0)), ("tripled".into(), TensorId(3))],
        launches: vec![
            launch(
                "add_2",
                &pairs_wgsl(),
                vec![Arg::Read(TensorId(0)), Arg::Read(TensorId(1)), Arg::Write(TensorId(2)), Arg::Uniform(vec![n()])],
                n(),
                64,
            ),
            launch(
                "mul_3",
                &scale_wgsl(),
                vec![Arg::Read(TensorId(2)), Arg::Write(TensorId(3)), Arg::Uniform(vec![n(), Dim::constant(3)])],
                n(),
                64,
            ),
        ],
        ..Program::default()
    }
}

fn ramp(n: usize, scale: f32) -> Tensor {
    Tensor::f32(&[n], (0..n).map(|i| i as f32 * scale).collect())
}

fn exec_err(program: &Program, inputs: &[Tensor], params: &dyn ParamSource) -> String {
    match gpu().execute(program, inputs, params) {
        Ok(outputs) => panic!("expected an error, got {outputs:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn runs_launches_in_order_with_symbols_from_the_inputs() {
    let program = pairs_program();
    assert_eq!(program.validate(), Ok(()));
    // 1000 elements: 16 workgroups of 64, the last one partly past the end.
    let len = 1000;
    let (a, b) = (ramp(len, 1.0), ramp(2 * len, 0.5));
    let outputs = gpu().execute(&program, &[a.clone(), b], &no_params()).unwrap();
    let sum: Vec<f32> = (0..len).map(|i| i as f32 + (2 * i) as f32 * 0.5 + (2 * i + 1) as f32 * 0.5).collect();
    let tripled: Vec<f32> = sum.iter().map(|x| x * 3.0).collect();
    assert_eq!(outputs, vec![Tensor::f32(&[len], sum), a, Tensor::f32(&[len], tripled)]);
    // The same program again with another size: the pipelines come from the cache, the symbols are new.
    let outputs = gpu().execute(&program, &[ramp(3, 1.0), ramp(6, 1.0)], &no_params()).unwrap();
    assert_eq!(outputs[0], Tensor::f32(&[3], vec![1.0, 6.0, 11.0]));
}

#[test]
fn binding_errors_are_reported_with_their_whole_message() {
    let program = pairs_program();
    let cases: Vec<(Vec<Tensor>, &str)> = vec![
        (vec![ramp(3, 1.0)], "model `pairs` takes 2 input(s) (a: f32[N], b: f32[2*N]), but 1 were given"),
        (
            vec![Tensor::zeros(DType::F32, &[3, 1]), ramp(6, 1.0)],
            "input `a`: expected f32[N], got f32[3, 1]: rank is 2, expected 1",
        ),
        (
            vec![Tensor::zeros(DType::I32, &[3]), ramp(6, 1.0)],
            "input `a`: expected f32[N], got i32[3]: dtype is i32, expected f32",
        ),
        (
            vec![ramp(4, 1.0), ramp(7, 1.0)],
            "input `b`: expected f32[2*N], got f32[7]: axis 0 is 7, expected 2*N = 8 where N = 4 (axis 0 of input `a`)",
        ),
        (
            vec![Tensor::zeros(DType::F32, &[0]), ramp(0, 1.0)],
            "symbol `N` is 0 (axis 0 of input `a`), but every dimension must be at least 1",
        ),
        (
            vec![Tensor::zeros(DType::U32, &[2, 2]), Tensor::zeros(DType::Bool, &[5])],
            "3 problems with the inputs and params:\n  \
             - input `a`: expected f32[N], got u32[2, 2]: dtype is u32, expected f32\n  \
             - input `a`: expected f32[N], got u32[2, 2]: rank is 2, expected 1\n  \
             - input `b`: expected f32[2*N], got bool[5]: dtype is bool, expected f32",
        ),
    ];
    for (inputs, expected) in &cases {
        assert_eq!(exec_err(&program, inputs, &no_params()), *expected);
    }

    // A symbol two inputs disagree on.
    let mut conflicting = pairs_program();
    conflicting.tensors[1].shape = vec![n()];
    assert_eq!(
        exec_err(&conflicting, &[ramp(3, 1.0), ramp(4, 1.0)], &no_params()),
        "symbol `N` is 3 (axis 0 of input `a`) but 4 (axis 0 of input `b`)"
    );
}

#[test]
fn bounds_uniform_ranges_and_invocation_counts_are_checked_before_running() {
    let mut program = pairs_program();
    program.launches[1].bounds = vec![Bound {
        what: BoundKind::Elements { node: 3 },
        value: plus(times(2, n()), Dim::constant(-1)),
        max: 9,
        op: None,
    }];
    let inputs = [ramp(8, 1.0), ramp(16, 1.0)];
    assert_eq!(
        exec_err(&program, &inputs, &no_params()),
        "launch 1 (mul_3): elements of %3 (2*N - 1) is 15, more than 9"
    );
    assert!(gpu().execute(&program, &[ramp(5, 1.0), ramp(10, 1.0)], &no_params()).is_ok());
    // The loop bound's limit is the device's, whatever the compiler's `max`; its op is named.
    let mut looping = pairs_program();
    let op =
        Check { node: 3, op: "sum".into(), source: Some(SourceLocation { file: "m.tdsl".into(), line: 2, column: 9 }) };
    looping.launches[1].bounds =
        vec![Bound { what: BoundKind::LoopIterations { node: 3 }, value: times(3, n()), max: i64::MAX, op: Some(op) }];
    let limits = |max_loop_iterations| DeviceLimits { max_loop_iterations, ..DeviceLimits::of(&gpu().device.limits()) };
    assert!(plan_launches(&looping, &[8], &limits(24)).is_ok());
    assert_eq!(gpu().limits().max_loop_iterations, gpu().max_loop_iterations());
    assert_eq!(
        plan_launches(&looping, &[9], &limits(24)).unwrap_err().to_string(),
        "launch 1 (mul_3): one invocation would run 3*N = 27 loop iterations, most of them in %3 (sum) at m.tdsl:2:9, \
         more than this device runs per invocation (24; llvmpipe ends every loop of an invocation beyond that without \
         an error; TDSL_MAX_LOOP_ITERATIONS overrides the limit)"
    );
    program.launches[1].bounds[0].value = times(i64::MAX, n());
    assert_eq!(
        exec_err(&program, &[ramp(5, 1.0), ramp(10, 1.0)], &no_params()),
        "launch 1 (mul_3): elements of %3 (9223372036854775807*N) is beyond 64-bit integers, more than 9"
    );

    let mut program = pairs_program();
    program.launches[1].args[2] = Arg::Uniform(vec![n(), times(1 << 32, n())]);
    assert_eq!(
        exec_err(&program, &inputs, &no_params()),
        "launch 1 (mul_3): uniform word 1 of binding 2 (4294967296*N) is 34359738368, outside -2^31..2^32"
    );
    program.launches[1].args[2] = Arg::Uniform(vec![n(), plus(times(-1, n()), Dim::constant(-(1 << 31)))]);
    assert_eq!(
        exec_err(&program, &inputs, &no_params()),
        "launch 1 (mul_3): uniform word 1 of binding 2 (-N - 2147483648) is -2147483656, outside -2^31..2^32"
    );

    let mut program = pairs_program();
    program.launches[0].invocations = plus(n(), Dim::constant(-10));
    assert_eq!(exec_err(&program, &inputs, &no_params()), "launch 0 (add_2): its invocation count (N - 10) is -2");
}

#[test]
fn uniform_words_hold_the_low_32_bits_of_each_value() {
    let wgsl = "struct Dims { a: u32, b: u32, c: u32, d: u32, e: u32 }\n\
                @group(0) @binding(0) var<storage, read_write> out: array<u32>;\n\
                @group(0) @binding(1) var<uniform> dims: Dims;\n\
                @compute @workgroup_size(1)\n\
                fn main() { out[0] = dims.a; out[1] = dims.b; out[2] = dims.c; out[3] = dims.d; out[4] = dims.e; }\n";
    let words = vec![
        Dim::constant(-(1 << 31)),
        Dim::constant(-1),
        Dim::constant((1 << 32) - 1),
        Dim::constant(0),
        plus(n(), Dim::constant(-1)),
    ];
    let program = Program {
        name: "words".into(),
        symbols: vec!["N".into()],
        tensors: vec![input("x", DType::U32, vec![n()]), computed("%1 words", DType::U32, vec![Dim::constant(5)])],
        inputs: ids(&[0]),
        outputs: vec![("words".into(), TensorId(1))],
        launches: vec![launch("words", wgsl, vec![Arg::Write(TensorId(1)), Arg::Uniform(words)], Dim::constant(1), 1)],
        ..Program::default()
    };
    let outputs = gpu().execute(&program, &[Tensor::u32(&[7], vec![0; 7])], &no_params()).unwrap();
    assert_eq!(outputs, vec![Tensor::u32(&[5], vec![0x8000_0000, u32::MAX, u32::MAX, 0, 6])]);
}

/// `out[i] = i` for every `i < n` of a grid with workgroups of 256.
const IOTA_WGSL: &str = "struct Dims { n: u32 }\n\
    @group(0) @binding(0) var<storage, read_write> out: array<u32>;\n\
    @group(0) @binding(1) var<uniform> dims: Dims;\n\
    @compute @workgroup_size(256)\n\
    fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {\n\
        let i = gid.x + gid.y * groups.x * 256u;\n\
        if (i < dims.n) { out[i] = i; }\n\
    }\n";

fn iota_program(len: i64, invocations: Dim) -> Program {
    let len = Dim::constant(len);
    Program {
        name: "iota".into(),
        tensors: vec![computed("%0 iota", DType::U32, vec![len.clone()])],
        outputs: vec![("iota".into(), TensorId(0))],
        launches: vec![launch(
            "iota",
            IOTA_WGSL,
            vec![Arg::Write(TensorId(0)), Arg::Uniform(vec![len])],
            invocations,
            256,
        )],
        ..Program::default()
    }
}

#[test]
fn grids_beyond_one_dimension_are_folded() {
    // 20M invocations are 78125 workgroups of 256, more than 65535 in x: folded into [39063, 2, 1].
    let len = 20_000_000;
    let program = iota_program(len, Dim::constant(len));
    let limits = DeviceLimits::of(&gpu().device.limits());
    assert_eq!(limits.max_workgroups_per_dimension, 65535);
    let plans = plan_launches(&program, &[], &limits).unwrap();
    assert_eq!(plans[0].grid, Some([39063, 2, 1]));
    let outputs = gpu().execute(&program, &[], &no_params()).unwrap();
    let values = outputs[0].as_u32().unwrap();
    assert_eq!(values.len(), len as usize);
    if let Some(i) = values.iter().enumerate().position(|(i, &v)| v != i as u32) {
        panic!("element {i} is {}", values[i]);
    }

    assert_eq!(fold_grid(1, 65535), Some([1, 1, 1]));
    assert_eq!(fold_grid(65535, 65535), Some([65535, 1, 1]));
    assert_eq!(fold_grid(65536, 65535), Some([32768, 2, 1]));
    assert_eq!(fold_grid(65535 * 65535, 65535), Some([65535, 65535, 1]));
    assert_eq!(fold_grid(65535 * 65535 + 1, 65535), None);
    let tight =
        DeviceLimits { max_storage_bytes: 1 << 30, max_workgroups_per_dimension: 10, max_loop_iterations: i64::MAX };
    let e = plan_launches(&iota_program(100 * 256 + 1, Dim::constant(100 * 256 + 1)), &[], &tight).unwrap_err();
    assert_eq!(
        e.to_string(),
        "launch 0 (iota): 25601 invocations need 101 workgroups of 256, more than the device can dispatch (10 x 10)"
    );
}

#[test]
fn a_launch_with_no_invocations_is_skipped() {
    let outputs = gpu().execute(&iota_program(5, Dim::constant(0)), &[], &no_params()).unwrap();
    assert_eq!(outputs, vec![Tensor::u32(&[5], vec![0; 5])]);
}

#[test]
fn tensors_larger_than_a_storage_buffer_are_errors_naming_them() {
    let limit = DeviceLimits::of(&gpu().device.limits()).max_storage_bytes;
    let len = (limit / 4 + 1) as i64;
    let msg = exec_err(&iota_program(len, Dim::constant(1)), &[], &no_params());
    assert_eq!(
        msg,
        format!(
            "tensor `%0 iota` (u32[{len}]) needs {} bytes on the device, more than the device's limit of {limit} \
             bytes per storage buffer",
            len * 4
        )
    );
    let small =
        DeviceLimits { max_storage_bytes: 1000, max_workgroups_per_dimension: 65535, max_loop_iterations: i64::MAX };
    let program = pairs_program();
    assert_eq!(tensor_shapes(&program, &[100], &small).unwrap()[1], vec![200]);
    assert_eq!(
        tensor_shapes(&program, &[200], &small).unwrap_err().to_string(),
        "tensor `input b` (f32[400]) needs 1600 bytes on the device, more than the device's limit of 1000 bytes \
         per storage buffer"
    );
}

/// `model lookup(table: f32[T], idx: i32[N])`: launch 0 doubles the table, launch 1 gathers from it and
/// reports an index outside `0..T` through the status buffer as launch 1 (word 0 = 2).
fn lookup_program() -> Program {
    let t = Dim::sym(SymId(1));
    let gather = format!(
        "struct Dims {{ n: u32, t: u32 }}\n\
         @group(0) @binding(0) var<storage, read> table: array<f32>;\n\
         @group(0) @binding(1) var<storage, read> idx: array<i32>;\n\
         @group(0) @binding(2) var<storage, read_write> out: array<f32>;\n\
         @group(0) @binding(3) var<uniform> dims: Dims;\n\
         @group(0) @binding(4) var<storage, read_write> status: array<u32>;\n\
         @compute @workgroup_size(64)\n\
         fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {{\n\
             {FLAT_64}\n\
             if (i >= dims.n) {{ return; }}\n\
             let j = idx[i];\n\
             if (j < 0 || u32(j) >= dims.t) {{\n\
                 if (status[0] == 0u) {{ status[0] = 2u; status[1] = bitcast<u32>(j); }}\n\
                 return;\n\
             }}\n\
             out[i] = table[u32(j)];\n\
         }}\n"
    );
    Program {
        name: "lookup".into(),
        symbols: vec!["N".into(), "T".into()],
        tensors: vec![
            input("table", DType::F32, vec![t.clone()]),
            input("idx", DType::I32, vec![n()]),
            computed("%2 mul", DType::F32, vec![t.clone()]),
            computed("%3 gather", DType::F32, vec![n()]),
        ],
        inputs: ids(&[0, 1]),
        outputs: vec![("out".into(), TensorId(3))],
        launches: vec![
            launch(
                "mul_2",
                &scale_wgsl(),
                vec![Arg::Read(TensorId(0)), Arg::Write(TensorId(2)), Arg::Uniform(vec![t.clone(), Dim::constant(2)])],
                t.clone(),
                64,
            ),
            launch(
                "gather_3",
                &gather,
                vec![
                    Arg::Read(TensorId(2)),
                    Arg::Read(TensorId(1)),
                    Arg::Write(TensorId(3)),
                    Arg::Uniform(vec![n(), t.clone()]),
                    Arg::Status,
                ],
                n(),
                64,
            ),
        ],
        ..Program::default()
    }
}

#[test]
fn a_kernel_error_in_the_status_buffer_names_its_launch() {
    let program = lookup_program();
    let table = Tensor::f32(&[4], vec![1.0, 2.0, 3.0, 4.0]);
    let run = |idx: Vec<i32>| gpu().execute(&program, &[table.clone(), Tensor::i32(&[idx.len()], idx)], &no_params());
    assert_eq!(run(vec![3, 0, 0, 2, 1]).unwrap(), vec![Tensor::f32(&[5], vec![8.0, 2.0, 2.0, 6.0, 4.0])]);
    assert_eq!(run(vec![0, 7, 1]).unwrap_err().to_string(), "launch 1 (gather_3): an index was out of range (value 7)");
    assert_eq!(
        run(vec![-1, 1]).unwrap_err().to_string(),
        "launch 1 (gather_3): an index was out of range (value -1, bits 0xffffffff)"
    );
    // The status buffer is zeroed for every run: a good run after a failed one succeeds.
    assert!(run(vec![1]).is_ok());

    let mut lying = lookup_program();
    lying.launches[1].wgsl = lying.launches[1].wgsl.replace("status[0] = 2u", "status[0] = 9u");
    let e = gpu().execute(&lying, &[table.clone(), Tensor::i32(&[1], vec![4])], &no_params()).unwrap_err();
    assert_eq!(e.to_string(), "the status buffer holds 9 (detail 4), but the program has only 2 launch(es)");
}

#[test]
fn a_kernel_that_fails_to_compile_is_named() {
    let mut program = pairs_program();
    program.launches[1].wgsl = "fn main( {".into();
    let msg = exec_err(&program, &[ramp(2, 1.0), ramp(4, 1.0)], &no_params());
    assert!(msg.starts_with("kernel mul_3 failed to compile: "), "{msg}");
}

#[test]
fn validate_lists_every_broken_invariant() {
    let sym = |s| Dim::sym(SymId(s));
    let mut k0 =
        launch("k", "", vec![Arg::Read(TensorId(4)), Arg::Write(TensorId(3)), Arg::Write(TensorId(0))], n(), 0);
    k0.bounds = vec![Bound { what: BoundKind::OutputElements, value: sym(7), max: 1, op: None }];
    let k1 =
        launch("k", "", vec![Arg::Read(TensorId(3)), Arg::Write(TensorId(3)), Arg::Uniform(vec![sym(2)])], n(), 64);
    let k2 = launch("k2", "", vec![Arg::Read(TensorId(3))], n(), 64);
    let program = Program {
        name: "broken".into(),
        symbols: vec!["N".into(), "N".into()],
        tensors: vec![
            input("x", DType::F32, vec![n()]),
            decl("input x again", TensorRole::Input("x".into()), DType::F32, vec![sym(5)]),
            param("w", DType::F32, vec![n()]),
            computed("%3 a", DType::F32, vec![n()]),
            computed("%4 b", DType::F32, vec![n()]),
        ],
        inputs: ids(&[0, 0, 3, 9]),
        params: vec![],
        outputs: vec![("y".into(), TensorId(4)), ("z".into(), TensorId(12))],
        launches: vec![k0, k1, k2],
        ..Program::default()
    };
    let expected = [
        "two symbols are named `N`",
        "the shape of tensor 1 (`input x again`) uses symbol 5, but the program has 2 symbol(s)",
        "two inputs are named `x`",
        "`inputs` lists tensor 0 (`input x`) twice",
        "`inputs[2]` is tensor 3 (`%3 a`), which is computed, not an input",
        "`inputs[3]` names tensor 9, but the program has 5 tensor(s)",
        "tensor 1 (`input x again`) is an input but `inputs` does not list it",
        "tensor 2 (`param w`) is a param but `params` does not list it",
        "launch 0 (k) has workgroup size 0",
        "the bound `elements of the output` of launch 0 (k) uses symbol 7, but the program has 2 symbol(s)",
        "launch 0 (k) reads tensor 4 (`%4 b`) before any launch writes it",
        "launch 0 (k) writes tensor 0 (`input x`), which is an input, not computed",
        "two launches are named `k`",
        "uniform word 0 of binding 2 of launch 1 (k) uses symbol 2, but the program has 2 symbol(s)",
        "launch 1 (k) binds tensor 3 (`%3 a`) again besides writing it",
        "launch 2 (k2) writes no tensor; a launch writes at least one",
        "output `y` is tensor 4 (`%4 b`), which no launch writes",
        "output `z` names tensor 12, but the program has 5 tensor(s)",
    ];
    let problems = program.validate().unwrap_err();
    let got: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(got, expected);
    let msg = exec_err(&program, &[], &no_params());
    let listed: String = expected.iter().map(|p| format!("\n  - {p}")).collect();
    assert_eq!(msg, format!("program `broken` is malformed:{listed}"));
    for good in [pairs_program(), lookup_program(), iota_program(3, Dim::constant(3)), affine_program()] {
        assert_eq!(good.validate(), Ok(()), "{}", good.name);
    }
}

/// `model affine(x: f32[N]) { param layer.w: f32[N]; param layer.h: f16[N]; param layer.mask: bool[N] }`:
/// `out = mask ? x * w + h : 0`, reading the f16 param as f32 words and the bool one as u32 words.
fn affine_program() -> Program {
    let wgsl = format!(
        "struct Dims {{ n: u32 }}\n\
         @group(0) @binding(0) var<storage, read> x: array<f32>;\n\
         @group(0) @binding(1) var<storage, read> w: array<f32>;\n\
         @group(0) @binding(2) var<storage, read> h: array<f32>;\n\
         @group(0) @binding(3) var<storage, read> mask: array<u32>;\n\
         @group(0) @binding(4) var<storage, read_write> out: array<f32>;\n\
         @group(0) @binding(5) var<uniform> dims: Dims;\n\
         @compute @workgroup_size(64)\n\
         fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {{\n\
             {FLAT_64}\n\
             if (i >= dims.n) {{ return; }}\n\
             out[i] = select(0.0, x[i] * w[i] + h[i], mask[i] == 1u);\n\
         }}\n"
    );
    Program {
        name: "affine".into(),
        symbols: vec!["N".into()],
        tensors: vec![
            input("x", DType::F32, vec![n()]),
            param("layer.w", DType::F32, vec![n()]),
            param("layer.h", DType::F16, vec![n()]),
            param("layer.mask", DType::Bool, vec![n()]),
            computed("%4 affine", DType::F32, vec![n()]),
        ],
        inputs: ids(&[0]),
        params: ids(&[1, 2, 3]),
        outputs: vec![("out".into(), TensorId(4))],
        launches: vec![launch(
            "affine_4",
            &wgsl,
            vec![
                Arg::Read(TensorId(0)),
                Arg::Read(TensorId(1)),
                Arg::Read(TensorId(2)),
                Arg::Read(TensorId(3)),
                Arg::Write(TensorId(4)),
                Arg::Uniform(vec![n()]),
            ],
            n(),
            64,
        )],
        ..Program::default()
    }
}

/// A safetensors file of `(name, dtype, shape, bytes)` entries in a temporary directory (removed when
/// the returned guard drops), written with the `safetensors` crate.
fn weights_file(entries: &[(&str, safetensors::Dtype, &[usize], Vec<u8>)]) -> (PathBuf, tempfile::TempDir) {
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(name, dtype, shape, data)| (name.to_string(), TensorView::new(*dtype, shape.to_vec(), data).unwrap()))
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, bytes).unwrap();
    (path, dir)
}

fn le_bytes(tensor: &Tensor) -> Vec<u8> {
    tensor.data.to_le_bytes()
}

#[test]
fn params_come_from_a_safetensors_file_or_a_map() {
    use safetensors::Dtype;
    let w = Tensor::f32(&[4], vec![1.0, 2.0, -1.0, 0.5]);
    let h = Tensor::f16_from_f32(&[4], &[0.5, -0.25, 1024.0, 0.125]);
    let mask = Tensor::bool(&[4], vec![true, true, false, true]);
    let (path, _dir) = weights_file(&[
        ("layer.w", Dtype::F32, &[4], le_bytes(&w)),
        ("layer.h", Dtype::F16, &[4], le_bytes(&h)),
        ("layer.mask", Dtype::BOOL, &[4], le_bytes(&mask)),
    ]);
    let weights = Weights::open(&path).unwrap();
    let program = affine_program();
    let x = [Tensor::f32(&[4], vec![3.0, 4.0, 5.0, 6.0])];
    let expected = vec![Tensor::f32(&[4], vec![3.5, 7.75, 0.0, 3.125])];
    assert_eq!(gpu().execute(&program, &x, &weights).unwrap(), expected);
    let map: HashMap<String, Tensor> =
        [("layer.w", w), ("layer.h", h.clone()), ("layer.mask", mask.clone())].map(|(k, t)| (k.to_string(), t)).into();
    assert_eq!(gpu().execute(&program, &x, &map).unwrap(), expected);

    // A map reports missing and mismatched params as binding problems and ignores extra entries.
    let mut partial = map.clone();
    partial.remove("layer.w");
    partial.insert("layer.mask".into(), Tensor::u32(&[4], vec![1; 4]));
    partial.insert("stray".into(), Tensor::f32(&[1], vec![0.0]));
    assert_eq!(
        exec_err(&program, &x, &partial),
        "2 problems with the inputs and params:\n  \
         - param `layer.w` (f32[N]) is missing\n  \
         - param `layer.mask`: expected bool[N], got u32[4]: dtype is u32, expected bool"
    );

    // A weights file with a missing, an extra, a mis-shaped and a mis-typed entry: one error lists them all.
    let (bad_path, _bad_dir) = weights_file(&[
        ("layer.w", Dtype::F32, &[5], vec![0; 20]),
        ("layer.mask", Dtype::U32, &[4], vec![0; 16]),
        ("stray", Dtype::F32, &[1], vec![0; 4]),
    ]);
    let bad = Weights::open(&bad_path).unwrap();
    let listed = format!(
        "`{}` does not match the model's params (4 problems):\n  \
         wrong shape: `layer.w` is f32[5], the model expects f32[4]\n  \
         missing: `layer.h` (the model expects f16[4])\n  \
         wrong dtype: `layer.mask` is u32[4], the model expects bool[4]\n  \
         extra: `stray` (f32[1]) is not a param of the model",
        bad_path.display()
    );
    assert_eq!(exec_err(&program, &x, &bad), listed);
    // Problems with the inputs found on the way come first, in the same error.
    let msg = exec_err(&program, &[Tensor::i32(&[4], vec![0; 4])], &bad);
    assert_eq!(msg, format!("input `x`: expected f32[N], got i32[4]: dtype is i32, expected f32\n{listed}"));

    // A param whose size only the weights give (no input binds N) still binds from the file.
    let mut from_params = affine_program();
    from_params.tensors[0].shape = vec![Dim::constant(4)];
    assert_eq!(gpu().execute(&from_params, &x, &weights).unwrap(), expected);
    let (short_path, _short_dir) = weights_file(&[
        ("layer.w", Dtype::F32, &[4], vec![0; 16]),
        ("layer.h", Dtype::F16, &[3], vec![0; 6]),
        ("layer.mask", Dtype::BOOL, &[4], vec![0; 4]),
    ]);
    let short = Weights::open(&short_path).unwrap();
    assert_eq!(
        exec_err(&from_params, &x, &short),
        "symbol `N` is 4 (axis 0 of param `layer.w`) but 3 (axis 0 of param `layer.h`)"
    );
}

/// A device opened with plain wgpu calls, as an application opens its own, wrapped with `Gpu::from_device`.
/// Each test that counts bytes or buffers has its own, so other tests' work does not show in its `stats`.
fn own_device() -> Gpu {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("a Vulkan adapter (lavapipe in CI)");
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).expect("a device");
    Gpu::from_device(adapter, device, queue)
}

/// `affine`'s params for `N = n` as a map, and its input.
fn affine_data(n: usize) -> (HashMap<String, Tensor>, Tensor) {
    let w = Tensor::f32(&[n], (0..n).map(|i| i as f32 * 0.5 - 3.0).collect());
    let h = Tensor::f16_from_f32(&[n], &(0..n).map(|i| i as f32 * 0.25).collect::<Vec<_>>());
    let mask = Tensor::bool(&[n], (0..n).map(|i| i % 3 != 0).collect());
    let params = [("layer.w", w), ("layer.h", h), ("layer.mask", mask)].map(|(k, t)| (k.to_string(), t)).into();
    (params, Tensor::f32(&[n], (0..n).map(|i| 1.0 + i as f32).collect()))
}

/// The device bytes `tensors` take (`GpuStats::uploaded_bytes` counts exactly these).
fn device_size(tensors: &[&Tensor]) -> u64 {
    tensors.iter().map(|t| crate::gpu::device_bytes(t.dtype, t.len())).sum()
}

#[test]
fn a_model_on_an_applications_device_uploads_its_params_once() {
    let gpu = own_device();
    let (params, x) = affine_data(100);
    let program = affine_program();
    let expected = crate::gpu::tests::gpu().execute(&program, std::slice::from_ref(&x), &params).unwrap();
    let before = gpu.stats();
    let mut model = gpu.load(&program, &params).unwrap();
    let loaded = gpu.stats();
    let param_bytes = device_size(&params.values().collect::<Vec<_>>());
    assert_eq!(loaded.uploaded_bytes - before.uploaded_bytes, param_bytes);
    assert_eq!(model.param_bytes(), param_bytes);

    // The first run writes its input (and the uniform block); every later one only its input.
    assert_eq!(model.run(std::slice::from_ref(&x)).unwrap(), expected);
    let first = gpu.stats();
    assert_eq!(first.uploaded_bytes - loaded.uploaded_bytes, device_size(&[&x]));
    assert_eq!(first.uniform_bytes - loaded.uniform_bytes, 16);
    for _ in 0..3 {
        assert_eq!(model.run(std::slice::from_ref(&x)).unwrap(), expected);
    }
    let later = gpu.stats();
    assert_eq!(later.uploaded_bytes - first.uploaded_bytes, 3 * device_size(&[&x]), "no params re-uploaded");
    assert_eq!(later.uniform_bytes, first.uniform_bytes, "the same sizes rewrite no uniform block");
    assert_eq!(later.buffers_created, first.buffers_created, "the same sizes allocate nothing");

    // `Gpu::execute` uploads everything each time, which is what the resident model saves.
    gpu.execute(&program, std::slice::from_ref(&x), &params).unwrap();
    assert_eq!(gpu.stats().uploaded_bytes - later.uploaded_bytes, param_bytes + device_size(&[&x]));
}

#[test]
fn buffers_grow_for_larger_shapes_and_are_reused_for_smaller_ones() {
    let gpu = own_device();
    let mut model = gpu.load(pairs_program(), &no_params()).unwrap();
    let sum = |n: usize| {
        Tensor::f32(&[n], (0..n).map(|i| i as f32 + (2 * i) as f32 * 0.5 + (2 * i + 1) as f32 * 0.5).collect())
    };
    let run = |model: &mut Model, n: usize| {
        let outputs = model.run(&[ramp(n, 1.0), ramp(2 * n, 0.5)]).unwrap();
        assert_eq!(outputs[0], sum(n), "N = {n}");
    };
    run(&mut model, 1000);
    let large = gpu.stats();
    for n in [10, 999, 1, 1000] {
        run(&mut model, n);
    }
    assert_eq!(gpu.stats().buffers_created, large.buffers_created, "smaller shapes allocate nothing");
    run(&mut model, 1001);
    let grown = gpu.stats();
    assert!(grown.buffers_created > large.buffers_created, "a larger shape grows the buffers");
    assert!(grown.bytes_allocated > large.bytes_allocated);
    run(&mut model, 7);
    assert_eq!(gpu.stats().buffers_created, grown.buffers_created);

    // Outputs kept on the device: a dropped output's buffer is reused, a held one is never written again.
    let a = ramp(500, 1.0);
    let b = ramp(1000, 0.5);
    drop(model.call(&[Input::Host(&a), Input::Host(&b)]).unwrap());
    let called = gpu.stats();
    drop(model.call(&[Input::Host(&ramp(20, 1.0)), Input::Host(&ramp(40, 0.5))]).unwrap());
    assert_eq!(gpu.stats().buffers_created, called.buffers_created, "dropped outputs' buffers are reused");
    let held = model.call(&[Input::Host(&a), Input::Host(&b)]).unwrap();
    let again = model.call(&[Input::Host(&ramp(20, 1.0)), Input::Host(&ramp(40, 0.5))]).unwrap();
    assert_eq!(held.get("sum").unwrap().download(&gpu).unwrap(), sum(500), "a held output is left alone");
    assert_eq!(again.get("sum").unwrap().download(&gpu).unwrap(), sum(20));
}

#[test]
fn inputs_and_outputs_by_name() {
    let mut model = gpu().load(pairs_program(), &no_params()).unwrap();
    let (a, b) = (ramp(6, 1.0), ramp(12, 0.25));
    let positional = model.run(&[a.clone(), b.clone()]).unwrap();
    let named = model.run_named(&[("b", &b), ("a", &a)]).unwrap();
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["sum", "a", "tripled"]);
    assert_eq!(named.into_iter().map(|(_, t)| t).collect::<Vec<_>>(), positional);
    let outputs = model.call_named(&[("a", Input::Host(&a)), ("b", Input::Host(&b))]).unwrap();
    assert_eq!(outputs.names(), ["sum", "a", "tripled"]);
    assert_eq!(outputs.get("tripled").unwrap().download(gpu()).unwrap(), positional[2]);
    assert_eq!(outputs.get("a").unwrap().download(gpu()).unwrap(), a);
    assert!(outputs.get("nothing").is_none());
    let downloaded: Vec<Tensor> = outputs.download(gpu()).unwrap().into_iter().map(|(_, t)| t).collect();
    assert_eq!(downloaded, positional);

    let error = model.run_named(&[("a", &a), ("c", &b), ("a", &a)]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "model `pairs`:\n  - there is no input `c`\n  - input `a` is given twice\n  - input `b` is not given"
    );
}

#[test]
fn an_output_on_the_device_feeds_another_model_and_the_next_call() {
    let gpu = gpu();
    let (params, _) = affine_data(8);
    let mut pairs = gpu.load(pairs_program(), &no_params()).unwrap();
    let mut affine = gpu.load(affine_program(), &params).unwrap();
    let (a, b) = (ramp(8, 1.0), ramp(16, 0.5));

    // pairs -> affine on the device, against the same two models through the host.
    let on_device = pairs.call(&[Input::Host(&a), Input::Host(&b)]).unwrap();
    let sum = on_device.get("sum").unwrap();
    assert_eq!((sum.dtype(), sum.shape()), (DType::F32, &[8][..]));
    let fed = affine.call(&[Input::Device(sum)]).unwrap();
    let host_sum = pairs.run(&[a.clone(), b.clone()]).unwrap().remove(0);
    let through_host = affine.run(std::slice::from_ref(&host_sum)).unwrap();
    assert_eq!(fed.download(gpu).unwrap().remove(0).1, through_host[0]);
    assert_eq!(gpu.execute(&affine_program(), &[host_sum], &params).unwrap(), through_host);

    // A call's output as the same model's next input (state kept on the device), three times over.
    let mut state = pairs.call(&[Input::Host(&a), Input::Host(&b)]).unwrap();
    let mut host_state = pairs.run(&[a.clone(), b.clone()]).unwrap();
    for _ in 0..3 {
        let next = pairs.call(&[Input::Device(state.get("tripled").unwrap()), Input::Host(&b)]).unwrap();
        host_state = pairs.run(&[host_state[2].clone(), b.clone()]).unwrap();
        state = next;
    }
    let state: Vec<Tensor> = state.download(gpu).unwrap().into_iter().map(|(_, t)| t).collect();
    assert_eq!(state, host_state);

    // A device tensor of another device is an error naming the input.
    let elsewhere = own_device().to_device(&a).unwrap();
    let error = pairs.call(&[Input::Device(&elsewhere), Input::Host(&b)]).unwrap_err().to_string();
    assert!(error.starts_with("input `a`: a f32[8] device tensor belongs to another device"), "{error}");
    // A device tensor of the wrong shape is a binding error, as a host one is.
    let short = gpu.to_device(&ramp(3, 1.0)).unwrap();
    assert_eq!(
        pairs.call(&[Input::Device(&short), Input::Host(&b)]).unwrap_err().to_string(),
        "input `b`: expected f32[2*N], got f32[16]: axis 0 is 16, expected 2*N = 6 where N = 3 (axis 0 of input `a`)"
    );
}
