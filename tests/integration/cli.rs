//! The `tdslc` command line, driven in-process through `tdsl_compiler::cli::main` with captured output:
//! exit codes, where output goes, and the messages a user sees.

use std::ffi::OsString;

/// Runs `tdslc ARGS` and returns (exit code, stdout, stderr).
fn tdslc(args: &[&str]) -> (i32, String, String) {
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
    let (code, out, err) =
        tdslc(&["check", "fixtures/err/E0101_unknown_names.tdsl", "../examples/mlp.tdsl", "fixtures/err/E0301_broadcast_mismatch.tdsl"]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(err.matches("error[E0101]").count(), 2, "{err}");
    assert!(err.contains("error[E0301]"), "{err}");
    assert!(err.contains("fixtures/err/E0101_unknown_names.tdsl: 2 error(s)"), "{err}");
    assert!(!err.contains('\u{1b}'), "no colour unless asked for");
}

#[test]
fn check_names_a_missing_file() {
    let (code, _, err) = tdslc(&["check", "no/such/file.tdsl"]);
    assert_eq!(code, 1);
    assert!(err.contains("error[E0104]") && err.contains("cannot read `no/such/file.tdsl`"), "{err}");
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
    assert!(err.contains("1 input(s) and 4 param(s) of `mlp` are seeded random values (seed 5)"), "{err}");
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

#[test]
fn run_without_reference_says_what_is_missing() {
    let (code, _, err) = tdslc(&["run", "../examples/mlp.tdsl"]);
    assert_eq!(code, 1);
    assert!(err.contains("--reference"), "{err}");
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
