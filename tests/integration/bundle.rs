//! Ahead-of-time bundles (spec/bundle.md): builds are byte-identical; a bundle round-trips through the
//! reader; `tdsl-run BUNDLE` prints and writes exactly what `tdslc run FILE` does on every example (same
//! seed, same values, bit-identical `.npy` outputs, on the GPU: no adapter fails the test); every kind of bad
//! bundle (truncated, not a bundle, wrong version, flags, trailing bytes, corrupted, malformed manifest,
//! broken program, buffer plan or grid formula, bad SPIR-V) and every device shortfall is an error naming
//! the problem (snapshots); any single byte flip and any truncation is detected (proptest and an exhaustive
//! loop); weights are checked against the params with every problem listed, by `tdslc check` and
//! `tdsl-run` alike; and the runtime's dependency tree holds no compiler, chumsky or logos.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tdsl_compiler::bundle::{BuildOptions, build};
use tdsl_runtime::bundle::seal;
use tdsl_runtime::{
    Arg, Bound, BoundKind, Bundle, BundledModel, DType, Dim, ExecutorRef, Feature, Input, Launch, Limit, Loaded,
    Program, Requirements, Session, SymId, Tensor, TensorData, TensorDecl, TensorId, TensorRole,
};

use crate::cli::{mlp_graph, params_of, tdslc, write_safetensors};
use crate::gpu::gpu;

/// Every example, with the `--dim` arguments its runs use (small, so lavapipe is quick).
const EXAMPLES: &[(&str, &[&str])] = &[
    ("../examples/mlp.tdsl", &["--dim", "B=3"]),
    ("../examples/cnn.tdsl", &[]),
    ("../examples/encoder_layer.tdsl", &["--dim", "S=5"]),
    ("../examples/minilm/minilm.tdsl", &["--dim", "B=2", "--dim", "S=7"]),
];

/// The bundle of `file`'s models, as bytes.
fn bundle_bytes(file: &str) -> Vec<u8> {
    let (bundle, _) = build(Path::new(file), &BuildOptions::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
    bundle.to_bytes()
}

fn mlp_bundle() -> Vec<u8> {
    static MLP: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    MLP.get_or_init(|| bundle_bytes("../examples/mlp.tdsl")).clone()
}

/// A small bundle written by hand, independent of codegen (so the snapshots below change only when the
/// format or its messages do): `z = k2(k1(k0(x, w)))` over `f32[N]`, with placeholder kernels that never
/// reach a device (the checks under test come first).
fn fixed_bundle() -> Bundle {
    let n = || vec![Dim::sym(SymId(0))];
    let tensor = |name: &str, role| TensorDecl { name: name.into(), role, dtype: DType::F32, shape: n() };
    let launch = |name: &str, mut args: Vec<Arg>| {
        args.push(Arg::Uniform(n()));
        Launch {
            name: name.into(),
            wgsl: format!("// {name}\n@compute @workgroup_size(64) fn main() {{}}\n"),
            spirv: vec![0x0723_0203, 0x0001_0000, 0, 8, 0],
            args,
            invocations: Dim::sym(SymId(0)),
            workgroup_size: 64,
            bounds: vec![Bound {
                what: BoundKind::OutputElements,
                value: Dim::sym(SymId(0)),
                max: u32::MAX as i64,
                op: None,
            }],
            requires: Requirements::default(),
            checks: Vec::new(),
            ops: Default::default(),
        }
    };
    let program = Program {
        name: "chain".into(),
        symbols: vec!["N".into()],
        tensors: vec![
            tensor("input x", TensorRole::Input("x".into())),
            tensor("param w", TensorRole::Param("w".into())),
            tensor("h", TensorRole::Computed),
            tensor("y", TensorRole::Computed),
            tensor("z", TensorRole::Computed),
        ],
        inputs: vec![TensorId(0)],
        params: vec![TensorId(1)],
        outputs: vec![("z".into(), TensorId(4))],
        launches: vec![
            launch("k0", vec![Arg::Read(TensorId(0)), Arg::Read(TensorId(1)), Arg::Write(TensorId(2))]),
            launch("k1", vec![Arg::Read(TensorId(2)), Arg::Write(TensorId(3))]),
            launch("k2", vec![Arg::Read(TensorId(3)), Arg::Write(TensorId(4)), Arg::Status]),
        ],
        inits: vec![(TensorId(1), tdsl_runtime::Init::Uniform { low: -0.5, high: 0.5 })],
        updates: Vec::new(),
    };
    let model = BundledModel::new(program);
    assert_eq!(model.buffer_slots, [None, None, Some(0), Some(1), Some(0)], "z reuses h's buffer");
    Bundle { producer: "tdslc (test)".into(), models: vec![model] }
}

/// Runs `tdsl-run ARGS` in-process; returns (exit code, stdout, stderr).
fn tdsl_run(args: &[&str]) -> (i32, String, String) {
    let argv: Vec<OsString> = std::iter::once("tdsl-run").chain(args.iter().copied()).map(OsString::from).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = tdsl_runtime::cli::main(argv, &mut out, &mut err, false);
    (code, String::from_utf8(out).expect("utf-8"), String::from_utf8(err).expect("utf-8"))
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// The error `from_bytes` gives for `bytes` (which must fail; `what` names the case).
fn load_error(what: &str, bytes: &[u8]) -> String {
    match Bundle::from_bytes(bytes) {
        Ok(_) => panic!("a bad bundle loaded: {what}"),
        Err(e) => e.to_string(),
    }
}

/// `bytes` with its manifest edited as JSON and sealed again with a valid checksum.
fn edit_manifest(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let (manifest, blobs) = Bundle::sections(bytes).expect("a good bundle");
    let mut value: serde_json::Value = serde_json::from_slice(manifest).expect("manifest JSON");
    edit(&mut value);
    seal(&serde_json::to_vec(&value).expect("JSON"), blobs)
}

#[test]
fn builds_are_byte_identical() {
    let temp = tempfile::tempdir().expect("temp dir");
    for (file, _) in EXAMPLES {
        assert_eq!(bundle_bytes(file), bundle_bytes(file), "{file}: two builds differ");
    }
    // Through the command line too, into two files.
    let (a, b) = (temp.path().join("a.tdslb"), temp.path().join("b.tdslb"));
    for out in [&a, &b] {
        let (code, _, err) = tdslc(&["build", "../examples/encoder_layer.tdsl", "-o", text(out)]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(" bytes: 1 model(s), "), "{err}");
    }
    let (a, b) = (std::fs::read(a).expect("a"), std::fs::read(b).expect("b"));
    assert_eq!(a, b, "tdslc build is not reproducible");
    assert_eq!(a, bundle_bytes("../examples/encoder_layer.tdsl"));
}

#[test]
fn bundles_round_trip_through_the_reader() {
    let mut files: Vec<PathBuf> = EXAMPLES.iter().map(|(f, _)| PathBuf::from(f)).collect();
    for entry in std::fs::read_dir("fixtures/ok").expect("fixtures/ok") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "tdsl") {
            files.push(path);
        }
    }
    let mut models = 0;
    for file in &files {
        let (bundle, _) = build(file, &BuildOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let bytes = bundle.to_bytes();
        let loaded = Bundle::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(loaded, bundle, "{}", file.display());
        assert_eq!(loaded.to_bytes(), bytes, "{}", file.display());
        models += bundle.models.len();
    }
    assert!(models >= 13, "only {models} models were bundled");
}

/// `tdslc run FILE` and `tdsl-run BUNDLE` with the same seed and dims print the same outputs and write
/// bit-identical `.npy` files, on every example.
#[test]
fn tdsl_run_matches_tdslc_run_on_every_example() {
    let temp = tempfile::tempdir().expect("temp dir");
    // A file with two models: each gets DIR/<model>/ for its outputs.
    let two = temp.path().join("two.tdsl");
    std::fs::write(
        &two,
        "model double(x: f32[N]) -> (y: f32[N]) { y = x * 2.0 }\n\
         model gate(x: f32[N], m: bool[N]) -> (y: f32[N], count: i32[]) {\n    \
         y = where(m, x, 0.0)\n    count = sum(i32(m))\n}\n",
    )
    .expect("write two.tdsl");
    let mut runs: Vec<(&str, &[&str])> = EXAMPLES.to_vec();
    runs.push((text(&two), &["--dim", "N=9"]));
    // Both sides schedule for the same device profile (each profile once), so results agree bit for bit.
    // Each on the GPU and on the CPU executor (both tools on the same one).
    let cases = runs.iter().flat_map(|run| ["gpu", "cpu"].map(move |target| (run, target)));
    let cases = cases.flat_map(|case| ["gpu", "cpu"].map(move |device| (case, device)));
    for (i, (((file, dims), target), device)) in cases.enumerate() {
        let bundle = temp.path().join(format!("{i}.tdslb"));
        let (code, _, err) = tdslc(&["build", file, "-o", text(&bundle), "--target", target]);
        assert_eq!(code, 0, "{file}: {err}");
        let (from_source, from_bundle) =
            (temp.path().join(format!("{i}-source")), temp.path().join(format!("{i}-bundle")));
        let mut source_args =
            vec!["run", file, "--seed", "11", "--output", text(&from_source), "--target", target, "--device", device];
        source_args.extend_from_slice(dims);
        let (code, source_out, err) = tdslc(&source_args);
        assert_eq!(code, 0, "{file}: {err}");
        let mut bundle_args = vec![text(&bundle), "--seed", "11", "--output", text(&from_bundle), "--device", device];
        bundle_args.extend_from_slice(dims);
        let (code, bundle_out, err) = tdsl_run(&bundle_args);
        assert_eq!(code, 0, "{file}: {err}");
        assert!(err.contains("are seeded random values (seed 11)"), "{err}");
        let note = if device == "cpu" { "note: running on the CPU executor" } else { "note: running on " };
        assert!(err.contains(note), "{file}: {err}");
        assert_eq!(bundle_out, source_out, "{file} on {device}: tdsl-run and tdslc run print different outputs");
        assert!(!source_out.is_empty());
        let compared = same_files(&from_source, &from_bundle);
        assert!(compared >= 1, "{file}: no outputs written");
    }
}

/// A bundle of several models: options that do not fit every model are an error naming the models and
/// `--model` (checked before any model runs), and `--model` runs the one named.
#[test]
fn tdsl_run_model_chooses_one_of_several() {
    let temp = tempfile::tempdir().expect("temp dir");
    let bundle = temp.path().join("two.tdslb");
    let (code, _, err) = tdslc(&["build", TWO_MODELS, "-o", text(&bundle)]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = tdsl_run(&[text(&bundle), "--dim", "B=3"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("error: model `shift` has no dimension `B`"), "{err}");
    let hint = format!("note: {} has several models (scale, shift); choose one with --model NAME", bundle.display());
    assert!(err.contains(&hint), "{err}");
    let (code, out, err) = tdsl_run(&[text(&bundle), "--model", "scale", "--dim", "B=3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("y: f32[3, 4] = [") && !out.contains("u:"), "{out}");
    let (code, _, err) = tdsl_run(&[text(&bundle), "--model", "shifted"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no model `shifted` (its models: scale, shift)"), "{err}");
    // A --dim that an input file contradicts is an error here too (as in `tdslc run`).
    let x = temp.path().join("x.npy");
    let tensor = tdsl_runtime::random::seeded_tensor("x", tdsl_runtime::DType::F32, &[3, 4], 0);
    tdsl_runtime::write_npy(&x, &tensor).expect("write x.npy");
    let input = format!("x={}", text(&x));
    let (code, out, err) = tdsl_run(&[text(&bundle), "--model", "scale", "--dim", "B=2", "--input", &input]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains("input `x` of `scale` (f32[B, 4]) contradicts --dim B=2: axis 0 of the file is 3, not B = 2"),
        "{err}"
    );
}

const TWO_MODELS: &str = "fixtures/cli/two_models.tdsl";

/// Asserts every file under `a` (recursively) has a byte-identical twin under `b`; returns the count.
fn same_files(a: &Path, b: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(a).expect("a directory of outputs") {
        let entry = entry.expect("entry");
        let (path, twin) = (entry.path(), b.join(entry.file_name()));
        if path.is_dir() {
            count += same_files(&path, &twin);
        } else {
            let (x, y) = (std::fs::read(&path).expect("output"), std::fs::read(&twin));
            assert_eq!(Some(x), y.ok(), "{} and {} differ", path.display(), twin.display());
            count += 1;
        }
    }
    count
}

/// The runtime API on its own: load, check the weights, run with inputs, get outputs; the bundle's buffer
/// plan reuses buffers and gives the same outputs as `Gpu::execute` on the compiled program.
#[test]
fn session_api_runs_a_bundle_with_weights() {
    let temp = tempfile::tempdir().expect("temp dir");
    let weights_path = temp.path().join("mlp.safetensors");
    let params = params_of(&mlp_graph(), 3);
    write_safetensors(&weights_path, &params);
    let bundle = Bundle::from_bytes(&mlp_bundle()).expect("the mlp bundle");
    let model = bundle.model(None).expect("one model");
    let session = Session::new(gpu(), model).expect("session");
    let weights = tdsl_runtime::Weights::open(&weights_path).expect("weights");
    session.check_weights(&weights).expect("the weights match");
    let inputs = session.seeded_inputs(&[("B", 4)], 9).expect("inputs");
    assert_eq!(session.outputs(), ["probs"]);
    let outputs = session.run(&inputs, &weights).expect("run");
    let direct = gpu().execute(&model.program, &inputs, &weights).expect("execute");
    assert_eq!(outputs, direct, "the bundle's buffer plan changes no result");

    // A model with buffers to share: the bundle's plan shares them and changes no output.
    let bundle = Bundle::from_bytes(&bundle_bytes("../examples/encoder_layer.tdsl")).expect("encoder layer");
    let model = bundle.model(None).expect("one model");
    let session = Session::new(gpu(), model).expect("session");
    let (inputs, params) = (
        session.seeded_inputs(&[("S", 6)], 2).expect("inputs"),
        session.seeded_params(&[("S", 6)], 2).expect("params"),
    );
    let Loaded::Gpu(mut loaded) = session.load(&params).expect("load") else { panic!("a GPU session") };
    let staged: Vec<Input> = inputs.iter().map(Input::Host).collect();
    let prepared = loaded.prepare(&staged).expect("prepare");
    prepared.run().expect("run");
    assert!(prepared.memory.peak_bytes < prepared.memory.unshared_bytes, "buffers are shared");
    assert_eq!(prepared.outputs().expect("outputs"), gpu().execute(&model.program, &inputs, &params).expect("execute"));
}

/// The same API on the CPU executor: a `Session` on `&Cpu` runs the mlp bundle with its weights file and
/// agrees with the reference interpreter (1e-5), and the encoder layer's bundle with the GPU's outputs
/// (a model's tolerance: 1e-4 of the output's scale).
#[test]
fn session_api_runs_a_bundle_on_the_cpu_executor() {
    let temp = tempfile::tempdir().expect("temp dir");
    let weights_path = temp.path().join("mlp.safetensors");
    let params = params_of(&mlp_graph(), 3);
    write_safetensors(&weights_path, &params);
    let bundle = Bundle::from_bytes(&mlp_bundle()).expect("the mlp bundle");
    let model = bundle.model(None).expect("one model");
    let session = Session::new(crate::gpu::cpu(), model).expect("a CPU session");
    assert!(matches!(session.executor(), ExecutorRef::Cpu(_)));
    let weights = tdsl_runtime::Weights::open(&weights_path).expect("weights");
    session.check_weights(&weights).expect("the weights match");
    let inputs = session.seeded_inputs(&[("B", 4)], 9).expect("inputs");
    let mut loaded = session.load(&weights).expect("load");
    assert!(matches!(loaded, Loaded::Cpu(_)));
    let outputs = loaded.run(&inputs).expect("run");
    let by_key: std::collections::HashMap<String, Tensor> = params.into_iter().collect();
    let reference = tdsl_compiler::interp::run(&mlp_graph(), &inputs, &by_key).expect("the interpreter runs");
    crate::util::assert_close(&outputs[0].to_f64_vec(), &reference[0].to_f64_vec(), 1e-5, 0.0);
    assert_eq!(loaded.run(&inputs).expect("runs again"), outputs, "a second run gives the same outputs");

    let bundle = Bundle::from_bytes(&bundle_bytes("../examples/encoder_layer.tdsl")).expect("encoder layer");
    let model = bundle.model(None).expect("one model");
    let session = Session::new(crate::gpu::cpu(), model).expect("a CPU session");
    let (inputs, params) = (
        session.seeded_inputs(&[("S", 6)], 2).expect("inputs"),
        session.seeded_params(&[("S", 6)], 2).expect("params"),
    );
    let on_cpu = session.run(&inputs, &params).expect("runs on the CPU");
    let on_gpu = Session::new(gpu(), model).expect("session").run(&inputs, &params).expect("runs on the GPU");
    assert_eq!(on_cpu.len(), on_gpu.len());
    for (c, g) in on_cpu.iter().zip(&on_gpu) {
        let (c, g) = (c.to_f64_vec(), g.to_f64_vec());
        let scale = g.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        crate::util::assert_close(&c, &g, 1e-4 * scale, 0.0);
    }
}

/// A bundle whose launch lost its ops (valid: a kernel only the GPU runs) still runs on the GPU; on the CPU
/// executor `Session::new` refuses it, naming the launch, and `tdsl-run --device cpu` says so too.
#[test]
fn a_launch_without_ops_is_a_clear_error_on_the_cpu() {
    let mut bundle = Bundle::from_bytes(&mlp_bundle()).expect("the mlp bundle");
    let launch = bundle.models[0].program.launches.len() - 1;
    bundle.models[0].program.launches[launch].ops = Default::default();
    let name = bundle.models[0].program.launches[launch].name.clone();
    let bytes = bundle.to_bytes();
    let bundle = Bundle::from_bytes(&bytes).expect("a launch without ops is a valid bundle");
    let model = &bundle.models[0];
    Session::new(gpu(), model).expect("the GPU runs its kernels");
    let error = match Session::new(crate::gpu::cpu(), model) {
        Ok(_) => panic!("the CPU executor accepted a launch without ops"),
        Err(e) => e.to_string(),
    };
    let want = format!("launch {launch} ({name})");
    assert!(error.contains(&want) && error.contains("carries no ops"), "{error}");
    let temp = tempfile::tempdir().expect("temp dir");
    let path = temp.path().join("no-ops.tdslb");
    std::fs::write(&path, &bytes).expect("write");
    let (code, _, err) = tdsl_run(&[text(&path), "--device", "cpu"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&want) && err.contains("carries no ops"), "{err}");
}

#[test]
fn bad_bundles_are_errors_naming_the_problem() {
    let good = fixed_bundle().to_bytes();
    assert_eq!(Bundle::from_bytes(&good), Ok(fixed_bundle()));
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x10;
    let mut version = good.clone();
    version[8] = tdsl_runtime::bundle::FORMAT_VERSION as u8 + 1;
    let mut flags = good.clone();
    flags[12] = 1;
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"junk");
    let bad_spirv = {
        // The first word of the first launch's SPIR-V, resealed so only the blob check can catch it.
        let (manifest, blobs) = Bundle::sections(&good).expect("sections");
        let value: serde_json::Value = serde_json::from_slice(manifest).expect("json");
        let at = value["models"][0]["launches"][0]["spirv"]["offset"].as_u64().expect("offset") as usize;
        let mut blobs = blobs.to_vec();
        blobs[at] ^= 0xff;
        seal(manifest, &blobs)
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("magic only", good[..8].to_vec()),
        ("cut in the header", good[..20].to_vec()),
        ("cut in the blobs", good[..good.len() - 100].to_vec()),
        ("not a bundle", b"PK\x03\x04 a zip file".to_vec()),
        ("text-mode transfer", good.iter().copied().filter(|&b| b != b'\r').collect()),
        ("future version", version),
        ("unknown flags", flags),
        ("trailing bytes", trailing),
        ("a flipped bit", flipped),
        ("manifest not JSON", seal(b"{\"producer\": ", b"")),
        ("manifest with an unknown field", edit_manifest(&good, |m| m["extra"] = 1.into())),
        ("no models", edit_manifest(&good, |m| m["models"] = serde_json::json!([]))),
        ("unknown dtype", edit_manifest(&good, |m| m["models"][0]["tensors"][0]["dtype"] = "f64".into())),
        ("unknown symbol", edit_manifest(&good, |m| m["models"][0]["symbols"][0]["name"] = "Q".into())),
        (
            "a blob out of range",
            edit_manifest(&good, |m| m["models"][0]["launches"][1]["wgsl"]["len"] = u64::MAX.into()),
        ),
        ("bad SPIR-V", bad_spirv),
        (
            "a read of an unknown tensor",
            edit_manifest(&good, |m| m["models"][0]["launches"][0]["args"][0] = serde_json::json!({"read": 99})),
        ),
        (
            "a launch writing an input",
            edit_manifest(&good, |m| {
                let args = m["models"][0]["launches"][0]["args"].as_array_mut().expect("args");
                let write = args.iter_mut().find(|a| a.get("write").is_some()).expect("a write");
                *write = serde_json::json!({"write": 0});
            }),
        ),
        (
            "overlapping buffers",
            edit_manifest(&good, |m| {
                let slots = m["models"][0]["buffer_slots"].as_array_mut().expect("slots");
                for slot in slots.iter_mut().filter(|s| !s.is_null()) {
                    *slot = 0.into();
                }
            }),
        ),
        (
            "a feature this runtime does not know",
            edit_manifest(&good, |m| {
                m["models"][0]["launches"][0]["requires"]["features"] = serde_json::json!(["teleportation"])
            }),
        ),
        (
            "a limit this runtime does not know",
            edit_manifest(&good, |m| {
                m["models"][0]["launches"][1]["requires"]["limits"]["max_quantum_entanglement"] = 1.into()
            }),
        ),
        (
            "a wrong grid formula",
            edit_manifest(&good, |m| m["models"][0]["launches"][1]["workgroups"] = serde_json::json!([[7, []]])),
        ),
    ];
    // A compiled bundle's launches carry their ops (`GroupOps`), checked like the rest.
    let mlp = mlp_bundle();
    let ops = |edit: fn(&mut serde_json::Value)| {
        edit_manifest(&mlp, move |m| edit(&mut m["models"][0]["launches"][0]["ops"]))
    };
    let cases = cases.into_iter().chain([
        ("ops reading a later node", ops(|o| o["nodes"][0]["op"] = serde_json::json!({"unary": ["neg", 7]}))),
        ("ops storing into a tensor the launch does not write", ops(|o| o["stores"][0]["tensor"] = 0.into())),
        ("ops storing nothing", ops(|o| o["stores"] = serde_json::json!([]))),
        ("ops with an unknown symbol", ops(|o| o["nodes"][0]["shape"][0] = serde_json::json!([[1, [{"sym": 9}]]]))),
        ("ops with an unknown op", ops(|o| o["nodes"][0]["op"] = serde_json::json!({"teleport": 0}))),
    ]);
    let mut report = String::new();
    for (what, bytes) in cases {
        report.push_str(&format!("{what}:\n  {}\n", load_error(what, &bytes).replace('\n', "\n  ")));
    }
    insta::assert_snapshot!("bad_bundles", report);
}

#[test]
fn tdsl_run_names_the_bundle_file_in_errors() {
    let temp = tempfile::tempdir().expect("temp dir");
    let path = temp.path().join("cut.tdslb");
    std::fs::write(&path, &mlp_bundle()[..1000]).expect("write");
    let (code, out, err) = tdsl_run(&[text(&path)]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains(&format!("error: bundle `{}`: truncated: it is 1000 bytes", path.display())), "{err}");
    let (code, _, err) = tdsl_run(&[text(&temp.path().join("none.tdslb"))]);
    assert_eq!(code, 1);
    assert!(err.contains("none.tdslb`: cannot read it"), "{err}");
    let good = temp.path().join("mlp.tdslb");
    std::fs::write(&good, mlp_bundle()).expect("write");
    let (code, _, err) = tdsl_run(&[text(&good), "--model", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{} has no model `nope` (its models: mlp)", good.display())), "{err}");
    let (code, _, err) = tdsl_run(&[text(&good), "--dim", "Q=2"]);
    assert_eq!(code, 1);
    assert!(err.contains("model `mlp` has no dimension `Q`"), "{err}");
    let (code, _, err) = tdsl_run(&[text(&good), "--dim", "B=2", "--dim", "B=3"]);
    assert_eq!(code, 1);
    assert!(err.contains("--dim B is given twice; give each name once"), "{err}");
}

/// A kernel needing a feature or limit the device lacks is an error listing every shortfall by launch,
/// before any pipeline is built.
#[test]
fn a_bundle_the_device_cannot_run_is_an_error() {
    let mut bundle = fixed_bundle();
    let launches = &mut bundle.models[0].program.launches;
    launches[0].requires.features.insert(Feature::ShaderF16);
    launches[2].requires.limits.insert(Limit::StorageBuffersPerShaderStage, 1 << 20);
    launches[2].requires.limits.insert(Limit::ComputeWorkgroupStorageSize, 1 << 40);
    let bundle = Bundle::from_bytes(&bundle.to_bytes()).expect("requirements are data, not a format error");
    let error = match Session::new(gpu(), &bundle.models[0]) {
        Ok(_) => panic!("the device cannot run it"),
        Err(e) => e.to_string(),
    };
    // Loading the program without a bundle checks the same requirements first, with the same message.
    let no_params = std::collections::HashMap::<String, Tensor>::new();
    match gpu().load(&bundle.models[0].program, &no_params) {
        Ok(_) => panic!("the device cannot run it"),
        Err(e) => assert_eq!(e.to_string(), error),
    }
    // The adapter name and the device's own limit vary between machines.
    let adapter = &gpu().info.name;
    let limits = gpu().device.limits();
    let error = error
        .replace(adapter.as_str(), "ADAPTER")
        .replace(&format!("allows {}", limits.max_storage_buffers_per_shader_stage), "allows N")
        .replace(&format!("allows {}", limits.max_compute_workgroup_storage_size), "allows M");
    insta::assert_snapshot!("device_shortfalls", error);
}

/// Row kernels of the `gpu` profile reduce with subgroup shuffles: exactly those launches require the
/// `subgroup` feature, and none does with `subgroups=off`; the device here (which has the feature) runs it.
/// Shared-memory tiles need workgroup memory (the staged operand tiles, padded rows included) and no feature.
#[test]
fn subgroup_row_kernels_require_the_subgroup_feature() {
    let file = Path::new("fixtures/schedules/schedules.tdsl");
    for (spec, expected) in [("gpu", true), ("gpu,subgroups=off", false), ("cpu", false)] {
        let target = tdsl_compiler::codegen::Target::parse(spec).expect("a profile");
        let (bundle, _) = build(file, &BuildOptions { target, ..BuildOptions::default() }).expect("build");
        let rows = bundle.models.iter().find(|m| m.program.name == "rows").expect("model rows");
        for launch in &rows.program.launches {
            let reduces = launch.wgsl.contains("workgroupBarrier") || launch.wgsl.contains("subgroupShuffleXor");
            let wants = launch.requires.features.contains(&Feature::Subgroup);
            assert_eq!(wants, expected && reduces, "{spec}: launch {} needs {:?}", launch.name, launch.requires);
        }
        let tiled = bundle.models.iter().find(|m| m.program.name == "shared_tile").expect("model shared_tile");
        assert!(tiled.program.launches.iter().all(|l| l.requires.features.is_empty()), "{spec}");
        let staged: Vec<u64> = tiled
            .program
            .launches
            .iter()
            .filter_map(|l| l.requires.limits.get(&Limit::ComputeWorkgroupStorageSize).copied())
            .collect();
        if spec == "gpu" {
            // Two 64 x 16 operand tiles of f32, one padded by a word per staged row: 8 KiB and a little more.
            assert!(staged.iter().any(|&b| (8192..=16384).contains(&b)), "{spec}: {staged:?}");
        } else if spec == "cpu" {
            assert!(staged.is_empty(), "{spec}: {staged:?}");
        }
        if expected {
            let launches = &rows.program.launches;
            assert!(launches.iter().any(|l| l.requires.features.contains(&Feature::Subgroup)), "{spec}");
            Session::new(gpu(), &rows.clone()).expect("the test device has subgroups");
        }
    }
}

#[test]
fn weights_are_checked_by_tdslc_check_and_tdsl_run_with_every_problem_listed() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut params = params_of(&mlp_graph(), 3);
    let index = |params: &[(String, Tensor)], key: &str| params.iter().position(|(k, _)| k == key).expect(key);
    params.remove(index(&params, "fc2.bias"));
    params.push(("fc3.weight".to_string(), Tensor::f32(&[2, 2], vec![0.0; 4])));
    let i = index(&params, "fc1.bias");
    params[i].1 = Tensor::f32(&[127], vec![0.0; 127]);
    let i = index(&params, "fc2.weight");
    let shape = params[i].1.shape.clone();
    let count = shape.iter().product();
    params[i].1 = Tensor { dtype: DType::I32, shape, data: TensorData::I32(vec![1; count]) };
    let weights = temp.path().join("bad.safetensors");
    write_safetensors(&weights, &params);
    let bundle = temp.path().join("mlp.tdslb");
    std::fs::write(&bundle, mlp_bundle()).expect("write");

    let (code, _, check_err) = tdslc(&["check", "../examples/mlp.tdsl", "--weights", text(&weights)]);
    assert_eq!(code, 1, "{check_err}");
    let (code, out, run_err) = tdsl_run(&[text(&bundle), "--weights", text(&weights)]);
    assert_eq!((code, out.as_str()), (1, ""), "{run_err}");
    let shown = |s: &str| s.replace(text(&weights), "bad.safetensors");
    // Both tools say the same thing, and say it before opening a device.
    assert_eq!(shown(&check_err), shown(&run_err));
    assert!(!run_err.contains("note: running on"), "{run_err}");
    insta::assert_snapshot!("weights_mismatch", shown(&run_err));

    // Good weights pass `tdslc check` silently.
    let good = temp.path().join("good.safetensors");
    write_safetensors(&good, &params_of(&mlp_graph(), 3));
    assert_eq!(tdslc(&["check", "../examples/mlp.tdsl", "--weights", text(&good)]), (0, String::new(), String::new()));
}

#[test]
fn timings_and_the_pipeline_cache_are_reported() {
    let temp = tempfile::tempdir().expect("temp dir");
    let bundle = temp.path().join("mlp.tdslb");
    std::fs::write(&bundle, mlp_bundle()).expect("write");
    let cache = temp.path().join("cache/pipelines.bin");
    let (code, _, first) = tdsl_run(&[text(&bundle), "--timings", "--pipeline-cache", text(&cache), "--device", "gpu"]);
    assert_eq!(code, 0, "{first}");
    for part in ["timings: bundle load ", "pipelines ", "first run ", "start-up (bundle load + pipelines + first run) "]
    {
        assert!(first.contains(part), "{first}");
    }
    if gpu().device.features().contains(tdsl_runtime::wgpu::Features::PIPELINE_CACHE) {
        assert!(first.contains("pipeline cache: new"), "{first}");
        assert!(cache.exists(), "the cache file is written");
        let (code, _, second) =
            tdsl_run(&[text(&bundle), "--timings", "--pipeline-cache", text(&cache), "--device", "gpu"]);
        assert_eq!(code, 0, "{second}");
        assert!(second.contains("pipeline cache: loaded "), "{second}");
    }
    // The CPU executor reports its own start-up: no pipelines, the launches planned from their ops.
    let (code, _, cpu) = tdsl_run(&[text(&bundle), "--timings", "--device", "cpu"]);
    assert_eq!(code, 0, "{cpu}");
    for part in [
        "note: running on the CPU executor (",
        "timings: bundle load ",
        "launches as typed ops (CPU executor)",
        "launches planned ",
        "first run ",
        "second run ",
    ] {
        assert!(cpu.contains(part), "{part}: {cpu}");
    }
}

/// Every truncation of a bundle is an error, at every length.
#[test]
fn every_truncation_is_detected() {
    let good = mlp_bundle();
    for len in 0..good.len() {
        assert!(Bundle::from_bytes(&good[..len]).is_err(), "a bundle cut to {len} bytes loaded");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// CRC-32 detects every change confined to 32 consecutive bits, so any one changed byte is an error
    /// (spec/bundle.md B2.3); a change in the header is caught even before the checksum.
    #[test]
    fn any_byte_flip_is_detected(position in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let mut bytes = mlp_bundle();
        let at = position.index(bytes.len());
        bytes[at] ^= xor;
        prop_assert!(Bundle::from_bytes(&bytes).is_err(), "flipping byte {} with {:#04x} went unnoticed", at, xor);
    }
}

/// `tdsl-runtime` must never depend on the compiler or its parser crates: `cargo tree` of the runtime
/// (normal dependencies) lists none, and neither does its manifest. The library alone pulls no command-line
/// crates either: clap and indicatif come only with the `cli` feature (the `tdsl-run` binary).
#[test]
fn the_runtime_depends_on_no_compiler_crate() {
    let manifest = std::fs::read_to_string("../runtime/Cargo.toml").expect("runtime/Cargo.toml");
    let tree = |features: &[&str]| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let output = std::process::Command::new(cargo)
            .args(["tree", "--offline", "-p", "tdsl-runtime", "-e", "normal", "--prefix", "none", "--manifest-path"])
            .arg("../Cargo.toml")
            .args(features)
            .output()
            .expect("cargo tree runs");
        assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
        let tree = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(tree.lines().any(|l| l.starts_with("wgpu ")), "the tree lists the runtime's dependencies:\n{tree}");
        tree
    };
    let has = |tree: &str, name: &str| tree.lines().any(|l| l.starts_with(&format!("{name} ")));
    let (library, with_cli) = (tree(&[]), tree(&["--features", "cli"]));
    for forbidden in ["tdsl-compiler", "chumsky", "logos"] {
        assert!(!has(&library, forbidden) && !has(&with_cli, forbidden), "{forbidden} in:\n{with_cli}");
        assert!(!manifest.contains(forbidden), "runtime/Cargo.toml names {forbidden}");
    }
    for command_line in ["clap", "indicatif"] {
        assert!(!has(&library, command_line), "the library without `cli` pulls {command_line}:\n{library}");
        assert!(has(&with_cli, command_line), "`cli` brings {command_line}:\n{with_cli}");
    }
}

/// A run-time error leads to the source on every path (issue 20): an out-of-range gather index fails
/// `tdslc run` on the GPU, on the CPU executor and on the reference and `tdsl-run` on the file's bundle (GPU
/// and CPU), and each names the op
/// and the line and column that wrote it (the bundle carries the location in its launch's `checks`).
#[test]
fn a_run_time_error_names_the_op_and_its_source_line_everywhere() {
    let temp = tempfile::tempdir().expect("temp dir");
    let file = temp.path().join("lookup.tdsl");
    std::fs::write(
        &file,
        "model lookup(t: f32[V, D], ids: i32[N]) -> (y: f32[N, D], z: f32[V, D]) {\n    z = t * 2.0\n    \
         y = gather(exp(t), ids) + 1.0\n}\n",
    )
    .expect("write the model");
    let ids = temp.path().join("ids.npy");
    tdsl_runtime::write_npy(&ids, &Tensor::i32(&[3], vec![1, 7, 0])).expect("write ids");
    let file_arg = file.to_str().expect("utf-8 path");
    let ids_arg = format!("ids={}", ids.to_str().expect("utf-8 path"));
    let run = ["--input", ids_arg.as_str(), "--dim", "V=4", "--dim", "D=3"];
    let at = format!("{file_arg}:3:9");
    // The GPU says the index's value, the CPU executor says it as the interpreter does.
    for (device, value) in [("gpu", "value 7"), ("cpu", "index 7")] {
        let mut args = vec!["run", file_arg, "--device", device];
        args.extend_from_slice(&run);
        let (code, _, err) = tdslc(&args);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(value) && err.contains("(gather) at ") && err.contains(&at), "{device}: {err}");
    }
    let mut reference_args = vec!["run", "--reference", file_arg];
    reference_args.extend_from_slice(&run);
    let (code, _, reference_err) = tdslc(&reference_args);
    assert_eq!(code, 1, "{reference_err}");
    assert!(reference_err.contains("(gather)") && reference_err.contains(&at), "{reference_err}");
    let bundle = temp.path().join("lookup.tdslb");
    let (code, _, err) = tdslc(&["build", file_arg, "-o", bundle.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{err}");
    for (device, value) in [("gpu", "value 7"), ("cpu", "index 7")] {
        let mut bundle_args = vec![bundle.to_str().expect("utf-8 path"), "--device", device];
        bundle_args.extend_from_slice(&run);
        let (code, _, bundle_err) = tdsl_run(&bundle_args);
        assert_eq!(code, 1, "{bundle_err}");
        assert!(
            bundle_err.contains(value) && bundle_err.contains("(gather) at ") && bundle_err.contains(&at),
            "{device}: {bundle_err}"
        );
    }
}
