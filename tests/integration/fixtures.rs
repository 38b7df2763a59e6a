//! Fixture snapshots: every `fixtures/ok/*.tdsl` checks clean and its IR dump is snapshotted; every
//! `fixtures/err/*.tdsl` fails and its rendered diagnostics are snapshotted. Each diagnostic code has a
//! fixture named after it whose diagnostics include that code.

use crate::util::{check_path, rendered};
use std::path::{Path, PathBuf};
use tdsl_compiler::diag::Code;

/// `fixtures/DIR/*.tdsl`, sorted, relative to the `tests/` directory.
fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new("fixtures").join(dir))
        .expect("fixtures directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tdsl"))
        .collect();
    files.sort();
    files
}

fn snapshot_name(path: &Path) -> String {
    path.file_stem().expect("file name").to_string_lossy().into_owned()
}

#[test]
fn ok_fixtures_check_clean_and_match_ir_snapshots() {
    let files = fixtures("ok");
    assert!(!files.is_empty());
    for path in files {
        let checked = check_path(&path);
        assert!(checked.diagnostics.is_empty(), "{} should check clean:\n{}", path.display(), rendered(&checked));
        let mut dump = String::new();
        for graph in &checked.graphs {
            tdsl_compiler::ir::verify(graph).unwrap_or_else(|e| panic!("{}: verifier: {e:?}", path.display()));
            dump.push_str(&tdsl_compiler::ir::print::print(graph));
        }
        insta::assert_snapshot!(format!("ok__{}", snapshot_name(&path)), dump);
    }
}

#[test]
fn err_fixtures_match_diagnostic_snapshots() {
    let files = fixtures("err");
    assert!(!files.is_empty());
    for path in files {
        let checked = check_path(&path);
        assert!(!checked.diagnostics.is_empty(), "{} should fail to check", path.display());
        insta::assert_snapshot!(format!("err__{}", snapshot_name(&path)), rendered(&checked));
    }
}

/// Codes no fixture file can report, each with the test that does: a fixture is a file that exists, so it
/// cannot be a missing root file.
const WITHOUT_FIXTURE: &[(Code, &str)] = &[
    (Code::E0111, "cli::root_files_that_cannot_be_read_have_their_own_codes"),
    // Only a training step (`tdslc train`, `pipeline::check_training`) can report it.
    (Code::E0505, "train::a_model_without_a_scalar_loss_cannot_be_trained"),
];

#[test]
fn every_code_has_a_fixture_that_reports_it() {
    let files = fixtures("err");
    let mut missing = Vec::new();
    for code in Code::ALL.iter().filter(|c| !WITHOUT_FIXTURE.iter().any(|(w, _)| w == *c)) {
        let fixture = files.iter().find(|p| snapshot_name(p).starts_with(code.as_str()));
        match fixture {
            None => missing.push(format!("{code}: no fixtures/err/{code}_*.tdsl")),
            Some(path) => {
                let checked = check_path(path);
                if !checked.diagnostics.iter().any(|d| d.code == *code) {
                    missing.push(format!("{code}: {} does not report it", path.display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "codes without a working fixture:\n{}", missing.join("\n"));
}

#[test]
fn every_diagnostic_cites_a_rule_of_the_spec() {
    let spec = std::fs::read_to_string("../spec/language.md").expect("spec/language.md");
    for path in fixtures("err") {
        for diag in check_path(&path).diagnostics {
            let rule = diag.rule.unwrap_or_else(|| panic!("{}: {} has no rule", path.display(), diag.code));
            assert!(spec.contains(&format!("- {rule} ")), "{}: rule {rule} is not in the spec", path.display());
        }
    }
}

/// The size limit (E0110, R4.5) holds for straight-line code, not only for unrolled loops and inlined
/// calls: a generated model of 25,000 statements (six operations each as elaborated: two constants, their
/// broadcasts, a multiply and an add) is rejected at the statement that passes 131072 operations, once,
/// and nothing else is reported; 20,000 statements (120,000 operations) check clean.
#[test]
fn straight_line_code_is_bounded_by_the_size_limit() {
    let chain = |statements: usize| {
        let mut text = String::from("model chain(x: f32[B, 4]) -> (y: f32[B, 4]) {\n");
        text.push_str(&"    x = x * 1.0001 + 0.001\n".repeat(statements));
        text.push_str("    y = x\n}\n");
        text
    };
    let text = chain(25_000);
    let checked = crate::util::check_text("chain.tdsl", &text);
    let codes: Vec<Code> = checked.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, [Code::E0110], "{}", rendered(&checked));
    let line = text[..checked.diagnostics[0].span.range().start].matches('\n').count() + 1;
    assert!((21_000..22_000).contains(&line), "reported at line {line}");

    let checked = crate::util::check_text("chain.tdsl", &chain(20_000));
    assert!(checked.diagnostics.is_empty(), "{}", rendered(&checked));
}
