//! The `tdslc` command line, driven in-process through `tdsl_compiler::cli::main` with captured output:
//! exit codes, where output goes, and the messages a user sees. `emit` prints or writes every kernel;
//! `run` on the GPU (`--device gpu`, the default backend: lavapipe in CI; no adapter fails the test) and on
//! the CPU executor (`--device cpu`) agrees with `run --reference`, with inputs and weights from `.npy` and safetensors files written into a temp dir,
//! and every bad file or argument is exit code 1 with a message naming it.

use crate::util::{assert_close, check_path};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tdsl_compiler::ir::{Graph, Op};
use tdsl_compiler::random::seeded_tensor;
use tdsl_runtime::{DType, Tensor, TensorData};

/// Runs `tdslc ARGS` and returns (exit code, stdout, stderr).
pub fn tdslc(args: &[&str]) -> (i32, String, String) {
    let argv: Vec<OsString> = std::iter::once("tdslc").chain(args.iter().copied()).map(OsString::from).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = tdsl_compiler::cli::main(argv, &mut out, &mut err, false);
    (code, String::from_utf8(out).expect("utf-8"), String::from_utf8(err).expect("utf-8"))
}

#[test]
fn check_accepts_clean_files_silently() {
    let (code, out, err) = tdslc(&["check", "../examples/mlp.tdsl", "../examples/cnn.tdsl"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
}

#[test]
fn check_reports_every_diagnostic_of_every_file_and_fails() {
    let (code, out, err) = tdslc(&[
        "check",
        "fixtures/err/E0101_unknown_names.tdsl",
        "../examples/mlp.tdsl",
        "fixtures/err/E0301_broadcast_mismatch.tdsl",
    ]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(err.matches("error[E0101]").count(), 2, "{err}");
    assert!(err.contains("error[E0301]"), "{err}");
    assert!(err.contains("fixtures/err/E0101_unknown_names.tdsl: 2 error(s)"), "{err}");
    assert!(!err.contains('\u{1b}'), "no colour unless asked for");
}

/// A root file that is missing, binary or a directory has its own code, not E0104 "import not found".
#[test]
fn root_files_that_cannot_be_read_have_their_own_codes() {
    let (code, _, err) = tdslc(&["check", "no/such/file.tdsl"]);
    assert_eq!(code, 1);
    assert!(err.contains("error[E0111]: cannot read `no/such/file.tdsl`"), "{err}");
    assert!(!err.contains("E0104") && !err.contains("import"), "{err}");
    let (code, _, err) = tdslc(&["run", "--reference", "fixtures/err/E0112_binary_file.tdsl"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "error[E0112]: file `fixtures/err/E0112_binary_file.tdsl` is not a text file: it has the byte 0x93 at \
             byte 0, which is not UTF-8"
        ),
        "{err}"
    );
    let temp = tempfile::tempdir().expect("temp dir");
    let nul = arg(temp.path(), "nul.tdsl");
    std::fs::write(&nul, "model m(x: f32[N]) -> (y: f32[N]) {\0 y = x }").expect("write");
    let (code, _, err) = tdslc(&["check", &nul]);
    assert_eq!(code, 1);
    assert!(err.contains("error[E0112]") && err.contains("it has a NUL byte at byte 35"), "{err}");
    let (code, _, err) = tdslc(&["emit", "ir", "fixtures/err/imports/folder.tdsl"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[E0113]: file `fixtures/err/imports/folder.tdsl` is a directory, not a source file"),
        "{err}"
    );
}

/// Warnings (`W` codes) are printed but do not fail `check` or stop `run`.
#[test]
fn warnings_do_not_fail() {
    let file = "fixtures/err/W0001_operator_after_else.tdsl";
    let (code, out, err) = tdslc(&["check", file]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("warning[W0001]") && err.contains(&format!("{file}: 1 warning(s)")), "{err}");
    let (code, out, err) = tdslc(&["run", "--reference", file, "--dim", "N=3"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning[W0001]"), "{err}");
    assert!(out.starts_with("y: f32[3] = ["), "{out}");
    let temp = tempfile::tempdir().expect("temp dir");
    let bundle = arg(temp.path(), "shared.tdslb");
    let (code, _, err) = tdslc(&["build", "fixtures/err/W0002_shared_param.tdsl", "-o", &bundle]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("warning[W0002]").count(), 4, "{err}");
    assert!(Path::new(&bundle).exists());
}

#[test]
fn colour_is_on_only_when_asked_for() {
    let (_, _, err) = tdslc(&["check", "--color", "always", "fixtures/err/E0102_unknown_function.tdsl"]);
    assert!(err.contains('\u{1b}'));
}

#[test]
fn emit_ir_prints_the_model() {
    let (code, out, err) = tdslc(&["emit", "ir", "../examples/mlp.tdsl"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("model mlp(x: f32[B, 784]) -> (probs: f32[B, 10])\n"), "{out}");
    assert!(out.contains("param \"fc1.weight\" : f32[128, 784]"), "{out}");
}

#[test]
fn emit_ir_of_a_file_without_models_is_an_error() {
    let (code, _, err) = tdslc(&["emit", "ir", "fixtures/ok/lib/blocks.tdsl"]);
    assert_eq!(code, 1);
    assert!(err.contains("no model in this file"), "{err}");
}

#[test]
fn run_reference_prints_outputs_and_says_what_was_random() {
    let (code, out, err) = tdslc(&["run", "--reference", "../examples/mlp.tdsl", "--dim", "B=3", "--seed", "5"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("probs: f32[3, 10] = ["), "{out}");
    assert!(err.contains("1 input(s) (x) and 4 param(s) of `mlp` are seeded random values (seed 5)"), "{err}");
    // The same seed gives the same output; another seed another.
    assert_eq!(tdslc(&["run", "--reference", "../examples/mlp.tdsl", "--dim", "B=3", "--seed", "5"]).1, out);
    assert_ne!(tdslc(&["run", "--reference", "../examples/mlp.tdsl", "--dim", "B=3", "--seed", "6"]).1, out);
}

#[test]
fn run_rejects_bad_dimension_arguments() {
    let (code, _, err) = tdslc(&["run", "--reference", "../examples/mlp.tdsl", "--dim", "Q=3"]);
    assert_eq!(code, 1);
    assert!(err.contains("model `mlp` has no dimension `Q`"), "{err}");
    let (code, _, err) = tdslc(&["run", "--reference", "../examples/mlp.tdsl", "--dim", "B=0"]);
    assert_eq!(code, 2, "clap rejects it");
    assert!(err.contains("must be at least 1"), "{err}");
}

/// A name given twice to `--dim` or `--input` is an error (it used to resolve silently, first or last wins).
#[test]
fn repeated_dims_and_inputs_are_errors() {
    let (code, out, err) = tdslc(&["run", "../examples/mlp.tdsl", "--dim", "B=2", "--dim", "B=3"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("error: --dim B is given twice; give each name once"), "{err}");
    let (code, _, err) = tdslc(&["run", "../examples/mlp.tdsl", "--input", "x=a.npy", "--input", "x=b.npy"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("error: --input x is given twice"), "{err}");
    let (code, _, err) = tdslc(&["explain", "../examples/mlp.tdsl", "--dim", "B=2", "--dim", "B=2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--dim B is given twice"), "{err}");
}

/// A `--dim` that a given input's shape contradicts is an error naming the dimension, the value given and
/// the input (it used to be ignored: the file's size won), in `tdslc run` on both paths.
#[test]
fn a_dim_contradicted_by_an_input_is_an_error() {
    let temp = tempfile::tempdir().expect("temp dir");
    let x = arg(temp.path(), "x.npy");
    write_npy(Path::new(&x), &seeded_tensor("x", DType::F32, &[3, 784], 0));
    run_fails_everywhere(
        MLP,
        &["--dim", "B=2", "--input", &format!("x={x}")],
        &["input `x` of `mlp` (f32[B, 784]) contradicts --dim B=2: axis 0 of the file is 3, not B = 2"],
    );
    // Agreeing values are fine.
    tdslc_ok(&["run", "--reference", MLP, "--dim", "B=3", "--input", &format!("x={x}")]);
}

const TWO_MODELS: &str = "fixtures/cli/two_models.tdsl";

/// `--model NAME` runs one model of a file with several; without it every model runs, so the options must
/// fit each: one that does not is an error naming the models and `--model`, before any model runs.
#[test]
fn model_chooses_one_of_several() {
    let hint = "note: fixtures/cli/two_models.tdsl has several models (scale, shift); choose one with --model NAME";
    let (code, out, err) = tdslc(&["run", "--reference", TWO_MODELS, "--dim", "B=3"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("error: model `shift` has no dimension `B`") && err.contains(hint), "{err}");
    let (code, out, err) = tdslc(&["run", "--reference", TWO_MODELS, "--model", "scale", "--dim", "B=3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("y: f32[3, 4] = [") && !out.contains("u:"), "{out}");
    let (code, out, err) = tdslc(&["run", "--reference", TWO_MODELS, "--model", "shift", "--dim", "N=5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("u: f32[5] = ["), "{out}");
    // No options: both models run.
    let (code, out, err) = tdslc(&["run", "--reference", TWO_MODELS]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("y: f32[2, 4]") && out.contains("u: f32[2]"), "{out}");
    // Inputs and weights must fit every model too.
    let temp = tempfile::tempdir().expect("temp dir");
    let t = arg(temp.path(), "t.npy");
    write_npy(Path::new(&t), &seeded_tensor("t", DType::F32, &[5], 0));
    let (code, out, err) = tdslc(&["run", "--reference", TWO_MODELS, "--input", &format!("t={t}")]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("model `scale` has no input `t` (its inputs: x)") && err.contains(hint), "{err}");
    let weights = arg(temp.path(), "w.safetensors");
    write_safetensors(Path::new(&weights), &[("offset".to_string(), seeded_tensor("o", DType::F32, &[5], 0))]);
    let (code, out, err) = tdslc(&["run", "--reference", TWO_MODELS, "--weights", &weights]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("model `scale`") && err.contains("proj.weight") && err.contains(hint), "{err}");
    let args = ["run", TWO_MODELS, "--model", "shift", "--input", &format!("t={t}"), "--weights", &weights];
    let (code, out, err) = tdslc(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("u: f32[5] = ["), "{out}");
    // An unknown model, and the other subcommands.
    let (code, _, err) = tdslc(&["run", TWO_MODELS, "--model", "shifted"]);
    assert_eq!(code, 1);
    assert!(err.contains("fixtures/cli/two_models.tdsl has no model `shifted` (its models: scale, shift)"), "{err}");
    let (code, _, err) = tdslc(&["explain", TWO_MODELS, "--dim", "N=5"]);
    assert_eq!(code, 1);
    assert!(err.contains("model `scale` has no dimension `N`") && err.contains(hint), "{err}");
    let (code, out, err) = tdslc(&["explain", TWO_MODELS, "--model", "shift", "--dim", "N=5", "--json"]);
    assert_eq!(code, 0, "{err}");
    let document: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(document["models"].as_array().map(Vec::len), Some(1), "{out}");
    let (code, _, err) = tdslc(&["tune", TWO_MODELS, "--model", "shifted"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no model `shifted` (its models: scale, shift)"), "{err}");
    let (code, _, err) = tdslc(&["bench", TWO_MODELS, "../examples/mlp.tdsl", "--model", "shifted"]);
    assert_eq!(code, 1);
    let listed =
        "fixtures/cli/two_models.tdsl, ../examples/mlp.tdsl has no model `shifted` (its models: scale, shift, mlp)";
    assert!(err.contains(listed), "{err}");
}

/// `explain --json` prints one JSON document for a file, however many models it has.
#[test]
fn explain_json_is_one_document_for_every_model() {
    let (code, out, err) = tdslc(&["explain", "../examples/kernels.tdsl", "--json"]);
    assert_eq!(code, 0, "{err}");
    let document: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    let models = document["models"].as_array().expect("a models array");
    let checked = check_path(Path::new("../examples/kernels.tdsl"));
    assert_eq!(models.len(), checked.graphs.len(), "one report per model");
    assert!(models.len() > 1, "the example has several models");
    assert!(models.iter().all(|m| m["kernels"].is_array()), "{out}");
}

/// Sizes too large for a tensor are an error naming the tensor and its size, checked before anything is
/// allocated (the seeded-data generator used to abort allocating 313.6 GB), on the GPU and the reference
/// path alike; `explain` reports them too instead of printing an empty grid.
#[test]
fn sizes_too_large_for_a_tensor_are_errors() {
    let too_large = "input `x` of `mlp` (f32[B, 784]) would have shape [100000000, 784]: 78400000000 elements, \
                     more than the 2147483648 a tensor may have";
    for reference in [true, false] {
        let mut args = vec!["run", "../examples/mlp.tdsl", "--dim", "B=100000000"];
        if reference {
            args.push("--reference");
        }
        let (code, out, err) = tdslc(&args);
        assert_eq!((code, out.as_str()), (1, ""), "{err}");
        assert!(err.contains(too_large), "{err}");
    }
    let (code, out, err) = tdslc(&["explain", "../examples/mlp.tdsl", "--dim", "B=99999999999"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains(
            "input x would have 78399999999216 elements at these sizes, more than the 2147483648 a tensor may have"
        ),
        "{err}"
    );
}

#[test]
fn help_explains_the_commands() {
    let (code, out, _) = tdslc(&["--help"]);
    assert_eq!(code, 0);
    for command in ["check", "emit", "run"] {
        assert!(out.contains(command), "{out}");
    }
    let (code, _, err) = tdslc(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unrecognized subcommand"), "{err}");
}

const MLP: &str = "../examples/mlp.tdsl";

/// A path in `dir` as a `&str` argument.
fn arg(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("utf-8 temp path").to_string()
}

/// `tdslc ARGS` must succeed; returns stderr.
fn tdslc_ok(args: &[&str]) -> String {
    let (code, _, err) = tdslc(args);
    assert_eq!(code, 0, "tdslc {}:\n{err}", args.join(" "));
    err
}

/// `tdslc ARGS` must fail with exit code 1 and say each of `expected`; returns stderr.
fn tdslc_fails(args: &[&str], expected: &[&str]) -> String {
    let (code, out, err) = tdslc(args);
    assert_eq!(code, 1, "tdslc {}:\nstdout: {out}\nstderr: {err}", args.join(" "));
    for text in expected {
        assert!(err.contains(text), "tdslc {}: stderr lacks {text:?}:\n{err}", args.join(" "));
    }
    err
}

pub fn mlp_graph() -> Graph {
    let checked = check_path(Path::new(MLP));
    assert!(checked.diagnostics.is_empty());
    checked.graphs.into_iter().next().expect("the mlp model")
}

/// Every param of `graph` (all of constant shape) with seeded values that are not the CLI's.
pub fn params_of(graph: &Graph, seed: u64) -> Vec<(String, Tensor)> {
    graph
        .params
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            let Op::Param { key } = &node.op else { panic!("param node") };
            let shape: Vec<usize> =
                node.ty.shape.iter().map(|d| d.as_const().expect("constant param shape") as usize).collect();
            (key.clone(), seeded_tensor(&format!("test {key}"), node.ty.dtype, &shape, seed))
        })
        .collect()
}

/// Writes `entries` as a safetensors file.
pub fn write_safetensors(path: &Path, entries: &[(String, Tensor)]) {
    tdsl_runtime::save_safetensors(path, entries).expect("write safetensors");
}

fn write_npy(path: &Path, tensor: &Tensor) {
    tdsl_runtime::write_npy(path, tensor).expect("write npy");
}

/// `DIR/probs.npy` as written by `run --output DIR` for mlp with batch `rows`.
fn read_probs(dir: &Path, rows: usize) -> Vec<f64> {
    let probs = tdsl_runtime::read_npy(&dir.join("probs.npy")).expect("probs.npy");
    assert_eq!((probs.dtype, probs.shape.as_slice()), (DType::F32, [rows, 10].as_slice()));
    let values = probs.to_f64_vec();
    for row in values.chunks(10) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4, "softmax rows sum to 1: {row:?}");
    }
    values
}

/// Runs mlp on the GPU, on the CPU executor and on the reference interpreter with `args`, writing to
/// `dir/gpu`, `dir/cpu` and `dir/ref`; asserts all wrote the same probabilities (within 1e-5) and returns them.
fn run_both(dir: &Path, args: &[&str], rows: usize) -> Vec<f64> {
    let mut written = Vec::new();
    for (device, note) in [("gpu", "note: running on "), ("cpu", "note: running on the CPU executor (")] {
        let out = dir.join(device);
        let mut device_args = vec!["run", MLP, "--device", device, "--output", out.to_str().expect("utf-8")];
        device_args.extend_from_slice(args);
        let err = tdslc_ok(&device_args);
        assert!(err.contains(note), "{err}");
        written.push(read_probs(&out, rows));
    }
    let reference = dir.join("ref");
    let mut ref_args = vec!["run", "--reference", MLP, "--output", reference.to_str().expect("utf-8")];
    ref_args.extend_from_slice(args);
    let err = tdslc_ok(&ref_args);
    assert!(err.contains("note: reference interpreter ran `mlp`"), "{err}");
    let on_reference = read_probs(&reference, rows);
    for on_device in &written {
        assert_close(on_device, &on_reference, 1e-5, 0.0);
    }
    written.swap_remove(0)
}

#[test]
fn emit_wgsl_prints_every_kernel() {
    let compiled = crate::util::compile(&mlp_graph()).expect("mlp compiles");
    let (code, out, err) = tdslc(&["emit", "wgsl", MLP]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out.matches("// kernel ").count(), compiled.kernels.len(), "{out}");
    for kernel in &compiled.kernels {
        assert!(out.contains(&format!("// kernel {} of model mlp\n{}", kernel.name, kernel.wgsl())), "{}", kernel.name);
    }
    for kernel in &compiled.kernels {
        let size = format!("@compute @workgroup_size({}, 1, 1)", kernel.workgroup_size);
        assert!(kernel.wgsl().contains(&size), "{}: {size}", kernel.name);
    }
    assert_eq!(out.matches("@compute @workgroup_size(").count(), compiled.kernels.len());
}

#[test]
fn emit_spvasm_disassembles_every_kernel() {
    let compiled = crate::util::compile(&mlp_graph()).expect("mlp compiles");
    let (code, out, err) = tdslc(&["emit", "spvasm", MLP]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out.matches("; kernel ").count(), compiled.kernels.len(), "{out}");
    assert_eq!(out.matches("OpEntryPoint GLCompute").count(), compiled.kernels.len(), "{out}");
    assert!(out.contains("OpExecutionMode %") && out.contains("LocalSize 256 1 1"), "{out}");
}

#[test]
fn emit_spirv_writes_one_module_per_kernel() {
    let compiled = crate::util::compile(&mlp_graph()).expect("mlp compiles");
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("new/spv");
    let (code, out, err) = tdslc(&["emit", "spirv", MLP, "-o", dir.to_str().expect("utf-8")]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains(&format!("wrote {} SPIR-V module(s)", compiled.kernels.len())), "{err}");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("output dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert_eq!(files.len(), compiled.kernels.len(), "{files:?}");
    for kernel in &compiled.kernels {
        let bytes = std::fs::read(dir.join(format!("mlp.{}.spv", kernel.name))).expect("one file per kernel");
        assert_eq!(bytes[..4], 0x0723_0203u32.to_le_bytes(), "{}: SPIR-V magic", kernel.name);
        let words: Vec<u32> = bytes.chunks(4).map(|w| u32::from_le_bytes(w.try_into().expect("whole words"))).collect();
        assert_eq!(words, kernel.spirv(), "{}", kernel.name);
    }
}

#[test]
fn run_on_the_gpu_agrees_with_the_reference() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (code, out, err) = tdslc(&["run", MLP, "--dim", "B=3", "--seed", "5"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("probs: f32[3, 10] = ["), "{out}");
    assert!(err.contains("note: compiled and ran `mlp` ("), "{err}");
    run_both(temp.path(), &["--dim", "B=3", "--seed", "5"], 3);
}

/// `--device`: auto says which executor it took and why (on a machine whose only adapter is lavapipe, the
/// CPU executor); cpu prints exactly what the reference prints; a bad name and `--reference` with
/// `--device` are errors.
#[test]
fn run_device_choice_is_said_and_checked() {
    let (code, out, err) = tdslc(&["run", MLP, "--dim", "B=2"]);
    assert_eq!(code, 0, "{err}");
    let gpu = crate::gpu::gpu();
    if gpu.info.device_type == tdsl_runtime::wgpu::DeviceType::Cpu {
        assert!(
            err.contains("note: running on the CPU executor (")
                && err.contains("no GPU found (lavapipe is an emulation; --device gpu uses it)"),
            "{err}"
        );
    } else {
        assert!(err.contains("(a GPU: "), "{err}");
    }
    let (code, cpu_out, err) = tdslc(&["run", MLP, "--dim", "B=2", "--device", "cpu"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("note: running on the CPU executor (") && !err.contains("no GPU found"), "{err}");
    let (_, reference_out, _) = tdslc(&["run", MLP, "--dim", "B=2", "--reference"]);
    assert_eq!(cpu_out, reference_out, "the printed previews agree");
    assert_eq!(out, reference_out);
    let (code, _, err) = tdslc(&["run", MLP, "--device", "tpu"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`tpu` is not a device; use auto, gpu or cpu"), "{err}");
    let (code, _, err) = tdslc(&["run", MLP, "--device", "cpu", "--reference"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn run_reads_inputs_from_npy_files() {
    let temp = tempfile::tempdir().expect("temp dir");
    let seeded = run_both(&temp.path().join("seeded"), &["--dim", "B=4", "--seed", "1"], 4);
    let x = arg(temp.path(), "x.npy");
    write_npy(Path::new(&x), &seeded_tensor("test x", DType::F32, &[4, 784], 2));
    // The input file fixes B; only the params are random.
    let err = tdslc_ok(&["run", MLP, "--input", &format!("x={x}"), "--seed", "1"]);
    assert!(err.contains("0 input(s) and 4 param(s) of `mlp` are seeded random values"), "{err}");
    let given = run_both(&temp.path().join("given"), &["--input", &format!("x={x}"), "--seed", "1"], 4);
    assert_ne!(given, seeded, "the input file is used");
}

#[test]
fn run_reads_weights_from_safetensors() {
    let temp = tempfile::tempdir().expect("temp dir");
    let params = params_of(&mlp_graph(), 3);
    assert_eq!(params.len(), 4);
    let weights = arg(temp.path(), "mlp.safetensors");
    write_safetensors(Path::new(&weights), &params);
    let x = arg(temp.path(), "x.npy");
    write_npy(Path::new(&x), &seeded_tensor("test x", DType::F32, &[2, 784], 4));
    let input = format!("x={x}");

    let seeded = run_both(&temp.path().join("seeded"), &["--input", &input], 2);
    let err = tdslc_ok(&["run", MLP, "--input", &input, "--weights", &weights]);
    assert!(!err.contains("seeded random"), "nothing is random: {err}");
    let loaded = run_both(&temp.path().join("loaded"), &["--input", &input, "--weights", &weights], 2);
    assert_ne!(loaded, seeded, "the weights file is used");
    // Random inputs with weights from the file.
    let err = tdslc_ok(&["run", MLP, "--weights", &weights, "--dim", "B=2"]);
    assert!(err.contains("1 input(s) (x) and 0 param(s)"), "{err}");
}

/// Every failing `run` is checked on both the GPU and the reference interpreter.
fn run_fails_everywhere(file: &str, args: &[&str], expected: &[&str]) {
    for reference in [false, true] {
        let mut all = vec!["run", file];
        if reference {
            all.push("--reference");
        }
        all.extend_from_slice(args);
        tdslc_fails(&all, expected);
    }
}

#[test]
fn run_reports_a_missing_input_file() {
    let temp = tempfile::tempdir().expect("temp dir");
    let x = arg(temp.path(), "no-such.npy");
    run_fails_everywhere(MLP, &["--input", &format!("x={x}")], &["input `x`", &x, "cannot read the file"]);
}

#[test]
fn run_reports_inputs_of_the_wrong_shape() {
    let temp = tempfile::tempdir().expect("temp dir");
    let x = arg(temp.path(), "x.npy");
    write_npy(Path::new(&x), &seeded_tensor("x", DType::F32, &[784], 0));
    run_fails_everywhere(MLP, &["--input", &format!("x={x}")], &["input `x`", "rank is 1, expected 2"]);
    write_npy(Path::new(&x), &seeded_tensor("x", DType::F32, &[2, 783], 0));
    run_fails_everywhere(MLP, &["--input", &format!("x={x}")], &["input `x`", "axis 1 is 783, expected 784"]);

    // Two inputs disagreeing about a symbol: S is 3 in `x` and 4 in `mask`.
    let mask = arg(temp.path(), "mask.npy");
    write_npy(Path::new(&x), &seeded_tensor("x", DType::F32, &[2, 3, 64], 0));
    write_npy(Path::new(&mask), &Tensor::i32(&[2, 4], vec![1; 8]));
    run_fails_everywhere(
        "../examples/encoder_layer.tdsl",
        &["--input", &format!("x={x}"), "--input", &format!("mask={mask}")],
        &["symbol `S`", "input `x`", "input `mask`"],
    );
}

#[test]
fn run_reports_an_input_of_the_wrong_dtype() {
    let temp = tempfile::tempdir().expect("temp dir");
    let x = arg(temp.path(), "x.npy");
    write_npy(Path::new(&x), &Tensor::i32(&[2, 784], vec![1; 2 * 784]));
    run_fails_everywhere(MLP, &["--input", &format!("x={x}")], &["input `x`", "dtype is i32, expected f32"]);
}

#[test]
fn run_reports_a_corrupt_npy_file() {
    let temp = tempfile::tempdir().expect("temp dir");
    let x = arg(temp.path(), "x.npy");
    let garbage: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&x, &garbage).expect("write garbage");
    run_fails_everywhere(MLP, &["--input", &format!("x={x}")], &["input `x`", &x, "not a .npy file"]);
    // A valid header whose data is cut short.
    let mut truncated = tdsl_runtime::to_npy_bytes(&Tensor::f32(&[2, 784], vec![0.5; 2 * 784]));
    truncated.truncate(truncated.len() - 10);
    std::fs::write(&x, &truncated).expect("write truncated");
    run_fails_everywhere(MLP, &["--input", &format!("x={x}")], &["input `x`", &x, "the data is"]);
}

#[test]
fn run_reports_an_unknown_input_name() {
    let temp = tempfile::tempdir().expect("temp dir");
    let y = arg(temp.path(), "y.npy");
    write_npy(Path::new(&y), &seeded_tensor("y", DType::F32, &[2, 784], 0));
    run_fails_everywhere(MLP, &["--input", &format!("y={y}")], &["model `mlp` has no input `y` (its inputs: x)"]);
}

#[test]
fn run_reports_every_weights_mismatch_at_once() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut params = params_of(&mlp_graph(), 3);
    let index = |params: &[(String, Tensor)], key: &str| params.iter().position(|(k, _)| k == key).expect(key);
    // Missing fc2.bias, an extra entry, fc1.bias of the wrong shape and fc2.weight of the wrong dtype.
    params.remove(index(&params, "fc2.bias"));
    params.push(("fc3.weight".to_string(), Tensor::f32(&[2, 2], vec![0.0; 4])));
    let i = index(&params, "fc1.bias");
    params[i].1 = Tensor::f32(&[127], vec![0.0; 127]);
    let i = index(&params, "fc2.weight");
    let shape = params[i].1.shape.clone();
    let count = shape.iter().product();
    params[i].1 = Tensor { dtype: DType::I32, shape, data: TensorData::I32(vec![1; count]) };
    let weights = arg(temp.path(), "bad.safetensors");
    write_safetensors(Path::new(&weights), &params);
    run_fails_everywhere(
        MLP,
        &["--weights", &weights],
        &[
            "does not match the model's params (4 problems)",
            "missing: `fc2.bias`",
            "extra: `fc3.weight` (f32[2, 2])",
            "wrong shape: `fc1.bias` is f32[127]",
            "wrong dtype: `fc2.weight` is i32[",
        ],
    );
}

#[test]
fn run_reports_a_corrupt_weights_file() {
    let temp = tempfile::tempdir().expect("temp dir");
    let weights = arg(temp.path(), "garbage.safetensors");
    let garbage: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8).collect();
    std::fs::write(&weights, &garbage).expect("write garbage");
    run_fails_everywhere(MLP, &["--weights", &weights], &[&weights, "is not a valid safetensors file"]);
}

#[test]
fn run_reports_a_missing_weights_file() {
    let temp = tempfile::tempdir().expect("temp dir");
    let weights = arg(temp.path(), "no-such.safetensors");
    run_fails_everywhere(MLP, &["--weights", &weights], &[&format!("cannot read `{weights}`")]);
}

/// `tdslc tune` measures the tiled contraction of a model, stores the fastest tile in the file it is given,
/// and `run --tuning` and `build --tuning` read it; a tuned tile replaces the profile's own for exactly that kernel.
#[test]
fn tune_writes_a_tuning_file_that_build_and_compile_use() {
    use tdsl_compiler::codegen::{Target, tuning::Tuning};
    use tdsl_compiler::pipeline::Options;
    let temp = tempfile::tempdir().expect("temp dir");
    let source = "model proj(x: f32[M, 64], w: f32[48, 64], b: f32[48]) -> (y: f32[M, 48]) {\n    y = relu(x @ transpose(w) + b)\n}\n";
    let file = temp.path().join("proj.tdsl");
    std::fs::write(&file, source).expect("write the model");
    let tuning = temp.path().join("tuning.json");
    let text = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let (code, out, err) = tdslc(&["tune", &text(&file), "--dim", "M=64", "--repeat", "1", "--tuning", &text(&tuning)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("relu_f32_n"), "{out}");
    let table = Tuning::load(&tuning).expect("a well-formed file").expect("written");
    assert_eq!(table.tiles.len(), 1, "{table:?}");
    let (code, _, err) = tdslc(&[
        "build",
        &text(&file),
        "--target",
        &table.target,
        "--tuning",
        &text(&tuning),
        "-o",
        &text(&temp.path().join("p.tdslb")),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = tdslc(&["run", &text(&file), "--dim", "M=5", "--tuning", &text(&tuning), "--device", "gpu"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("y: f32[5, 48]"), "{out}");

    // A hand-made entry: the cpu profile's kernel keyed by its WGSL gets a 2x4 tile instead of 8x8.
    let graph = check_path(&file).graphs.remove(0);
    let cpu = Target::named("cpu").expect("cpu profile");
    let own = crate::util::compile_with(&graph, &crate::util::options(true, cpu)).expect("compiles");
    let small = crate::util::compile_with(&graph, &crate::util::options(true, Target { tile: (2, 4), ..cpu }))
        .expect("compiles");
    assert_ne!(own.kernels[0].wgsl(), small.kernels[0].wgsl());
    let mut hand = Tuning { adapter: "test".into(), target: "cpu".into(), ..Tuning::default() };
    hand.tiles.insert(Tuning::key(own.kernels[0].wgsl()), (2, 4));
    let tuned = crate::util::compile_with(&graph, &Options { tuning: hand.clone(), ..crate::util::options(true, cpu) })
        .expect("compiles");
    assert_eq!(tuned.kernels[0].wgsl(), small.kernels[0].wgsl());
    // Saved and loaded unchanged; a malformed file and a missing one named in `build --tuning` are errors.
    let path = temp.path().join("hand.json");
    hand.save(&path).expect("saves");
    assert_eq!(Tuning::load(&path).expect("loads"), Some(hand));
    std::fs::write(&path, r#"{"format": 1, "adapter": "a", "target": "cpu", "kernels": {"k": [0, 4]}}"#)
        .expect("write");
    let e = Tuning::load(&path).expect_err("a zero tile");
    assert!(e.0.contains("kernel k: expected [rows, cols], each 1 to 16"), "{e}");
    let (code, _, err) = tdslc(&[
        "build",
        &text(&file),
        "--tuning",
        &text(&temp.path().join("none.json")),
        "-o",
        &text(&temp.path().join("q.tdslb")),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("none.json does not exist"), "{err}");
}

/// `--output FILE.safetensors` writes every output into one safetensors file keyed by output name (the
/// gradients by `grad.<param key>`), with the same values as the `.npy` files of `--output DIR`.
#[test]
fn run_writes_outputs_as_one_safetensors_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("out.safetensors");
    let npy = dir.path().join("npy");
    let source = "fixtures/ok/gradients.tdsl";
    tdslc_ok(&["run", "--reference", source, "--output", file.to_str().expect("utf-8")]);
    tdslc_ok(&["run", "--reference", source, "--output", npy.to_str().expect("utf-8")]);
    let weights = tdsl_runtime::Weights::open(&file).expect("a safetensors file");
    let names: Vec<&str> = weights.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["dx", "grad.fc1.bias", "grad.fc1.weight", "grad.fc2.bias", "grad.fc2.weight", "loss"]);
    for name in names {
        let from_npy = tdsl_runtime::read_npy(&npy.join(format!("{name}.npy"))).expect("the .npy output");
        assert_eq!(weights.tensor(name).expect("loads"), from_npy, "{name}");
    }
}

/// `--ignore-weights PATTERN` leaves out checkpoint entries a model does not use (torchvision's
/// `num_batches_tracked`), on `tdslc check` and `tdslc run`; a pattern that matches nothing is an error.
#[test]
fn ignored_weights_entries_are_neither_matched_nor_extra() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("w.safetensors");
    let mut tensors: Vec<(String, Tensor)> =
        [("fc1.weight", &[64usize, 64][..]), ("fc1.bias", &[64]), ("fc2.weight", &[10, 64]), ("fc2.bias", &[10])]
            .iter()
            .map(|(k, shape)| (k.to_string(), Tensor::f32(shape, vec![0.01; shape.iter().product()])))
            .collect();
    tensors.push(("bn.num_batches_tracked".into(), Tensor::i32(&[], vec![7])));
    tdsl_runtime::save_safetensors(&path, &tensors).expect("saves");
    let w = path.display().to_string();
    let (code, _, err) = tdslc(&["check", "../examples/digits/mlp.tdsl", "--weights", &w]);
    assert_eq!(code, 1);
    assert!(err.contains("extra: `bn.num_batches_tracked`"), "{err}");
    let ignore = ["--ignore-weights", "*.num_batches_tracked"];
    let (code, out, err) = tdslc(&[&["check", "../examples/digits/mlp.tdsl", "--weights", &w][..], &ignore].concat());
    assert_eq!(code, 0, "{out}{err}");
    let run = ["run", "../examples/digits/mlp.tdsl", "--weights", &w, "--reference"];
    let (code, out, err) = tdslc(&[&run[..], &ignore].concat());
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = tdslc(&[&run[..], &["--ignore-weights", "running_*"]].concat());
    assert_eq!(code, 1);
    assert!(err.contains("has no entry matching the ignore pattern `running_*`"), "{err}");
}
