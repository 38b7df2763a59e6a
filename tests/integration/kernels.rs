//! Kernel snapshots: every model of every example (`examples/**/*.tdsl`) and of every `fixtures/ok/*.tdsl`
//! compiles through the pipeline (the default device profile); each file's distinct kernels (WGSL and
//! SPIR-V disassembly) are one insta snapshot each, beside an index per file (`assert_kernel_snapshots`);
//! `fixtures/schedules/schedules.tdsl` is snapshotted once per built-in device profile
//! (`codegen::target::TARGETS`); and every distinct SPIR-V module passes Khronos `spirv-val --target-env
//! vulkan1.1` (the tool must be installed: a missing `spirv-val` fails the test, it never skips the check).

use crate::util::{check_path, files, rendered};
use std::path::{Path, PathBuf};
use tdsl_compiler::codegen;

const SPIRV_VAL: &str = "spirv-val";

/// The example files and the `ok` fixtures that declare models, relative to the `tests/` directory.
fn files_with_models() -> Vec<PathBuf> {
    let examples = files(Path::new("../examples"), "tdsl", true);
    assert!(
        examples.iter().any(|p| p.ends_with("minilm/minilm.tdsl")),
        "expected examples/minilm/minilm.tdsl among {examples:?}"
    );
    let fixtures: Vec<PathBuf> = files(Path::new("fixtures/ok"), "tdsl", false);
    assert!(!fixtures.is_empty());
    examples.into_iter().chain(fixtures).collect()
}

/// `../examples/minilm/minilm.tdsl` -> `examples__minilm__minilm.tdsl`.
fn snapshot_name(path: &Path) -> String {
    let relative = path.strip_prefix("..").unwrap_or(path);
    relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("__")
}

/// A kernel text shared by one or more kernels (`model.kernel` names, in launch order).
struct Distinct {
    names: Vec<String>,
    wgsl: String,
    spirv: Vec<u32>,
    spvasm: String,
}

/// Compiles every model of `path` and groups its kernels by text (WGSL and SPIR-V), in order of first
/// appearance; also returns the total number of kernels.
fn distinct_kernels(path: &Path) -> (Vec<Distinct>, usize) {
    distinct_kernels_with(path, crate::util::options(true, codegen::Target::default()))
}

/// `distinct_kernels` compiled with `options`.
fn distinct_kernels_with(path: &Path, options: tdsl_compiler::pipeline::Options) -> (Vec<Distinct>, usize) {
    let checked = check_path(path);
    assert!(checked.diagnostics.is_empty(), "{} should check clean:\n{}", path.display(), rendered(&checked));
    assert!(!checked.graphs.is_empty(), "{} has no model", path.display());
    let mut distinct: Vec<Distinct> = Vec::new();
    let mut total = 0;
    for graph in &checked.graphs {
        let compiled = crate::util::compile_with(graph, &options)
            .unwrap_or_else(|e| panic!("{}: model `{}`: {e}", path.display(), graph.name));
        assert_eq!(compiled.kernels.len(), compiled.program.launches.len());
        for kernel in &compiled.kernels {
            total += 1;
            let name = format!("{}.{}", graph.name, kernel.name);
            match distinct.iter_mut().find(|d| d.wgsl == kernel.wgsl() && d.spirv == kernel.spirv()) {
                Some(d) => d.names.push(name),
                None => {
                    let spvasm = codegen::disassemble(kernel.spirv())
                        .unwrap_or_else(|e| panic!("{}: {name}: disassembly: {e}", path.display()));
                    distinct.push(Distinct {
                        names: vec![name],
                        wgsl: kernel.wgsl().to_string(),
                        spirv: kernel.spirv().to_vec(),
                        spvasm,
                    });
                }
            }
        }
    }
    (distinct, total)
}

/// The kernel snapshots of one file: an index (a header, then each distinct kernel's snapshot name and the
/// kernels sharing it), and one snapshot per distinct kernel (its WGSL and SPIR-V), named `{file}__{first
/// kernel}`, all under `snapshots/kernels/`. One file per kernel keeps a codegen change (or a naga upgrade)
/// a reviewable diff of the kernels it touches.
fn assert_kernel_snapshots(file: &str, distinct: &[Distinct], total: usize) {
    let mut index = format!("{}: {total} kernel(s), {} distinct\n", file.replace("__", "/"), distinct.len());
    let mut kernels = Vec::new();
    for d in distinct {
        let name = format!("{file}__{}", d.names[0]);
        index.push_str(&format!("\n{name}: {}", d.names.join(", ")));
        let text = format!("---- WGSL\n{}\n---- SPIR-V\n{}\n", d.wgsl.trim_end(), d.spvasm.trim_end());
        kernels.push((name, text));
    }
    index.push('\n');
    insta::with_settings!({ snapshot_path => "snapshots/kernels", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(file.to_string(), index);
        for (name, text) in kernels {
            insta::assert_snapshot!(name, text);
        }
    });
}

/// Runs `spirv-val --target-env vulkan1.1` on `words`; `Err` with its output when it rejects them.
fn spirv_val(words: &[u32], dir: &Path, file: &str) -> Result<(), String> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let path = dir.join(file);
    std::fs::write(&path, bytes).expect("write the SPIR-V to a temp file");
    let output =
        std::process::Command::new(SPIRV_VAL).arg("--target-env").arg("vulkan1.1").arg(&path).output().unwrap_or_else(
            |err| {
                panic!("could not run `{SPIRV_VAL}` ({err}); install SPIRV-Tools (Debian: apt-get install spirv-tools)")
            },
        );
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
    }
}

#[test]
fn kernels_of_examples_and_fixtures_match_snapshots_and_pass_spirv_val() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut rejected = Vec::new();
    for path in files_with_models() {
        let (distinct, total) = distinct_kernels(&path);
        for (i, d) in distinct.iter().enumerate() {
            assert_eq!(d.spirv.first(), Some(&0x0723_0203), "{}: {}: not SPIR-V", path.display(), d.names[0]);
            let first = &d.names[0];
            assert!(d.spvasm.contains("OpEntryPoint GLCompute"), "{}: {first}: no entry point", path.display());
            let file = format!("{}-{i}.spv", snapshot_name(&path));
            if let Err(message) = spirv_val(&d.spirv, temp.path(), &file) {
                rejected.push(format!(
                    "{}: {} rejected by spirv-val:\n{message}\nWGSL:\n{}",
                    path.display(),
                    d.names.join(", "),
                    d.wgsl
                ));
            }
        }
        assert_kernel_snapshots(&snapshot_name(&path), &distinct, total);
    }
    assert!(rejected.is_empty(), "{} module(s) rejected:\n{}", rejected.len(), rejected.join("\n\n"));
}

/// The same fixed-shape models (`fixtures/schedules/schedules.tdsl`) compiled for every built-in device
/// profile: one snapshot per profile, every module through `spirv-val`.
#[test]
fn schedules_per_device_profile_match_snapshots_and_pass_spirv_val() {
    let temp = tempfile::tempdir().expect("temp dir");
    let path = Path::new("fixtures/schedules/schedules.tdsl");
    for target in codegen::target::TARGETS {
        let (distinct, total) = distinct_kernels_with(path, crate::util::options(true, target));
        for (i, d) in distinct.iter().enumerate() {
            let file = format!("schedules-{}-{i}.spv", target.name);
            if let Err(message) = spirv_val(&d.spirv, temp.path(), &file) {
                panic!("{}: {} rejected by spirv-val:\n{message}\nWGSL:\n{}", target.name, d.names.join(", "), d.wgsl);
            }
        }
        assert_kernel_snapshots(&format!("schedules__{}", target.name), &distinct, total);
    }
}

#[test]
fn identical_kernels_are_listed_once() {
    // MiniLM's six layers compile to the same kernels apart from their names.
    let (distinct, total) = distinct_kernels(Path::new("../examples/minilm/minilm.tdsl"));
    assert!(distinct.len() * 3 < total, "{} distinct of {total} kernels", distinct.len());
    let names: Vec<&String> = distinct.iter().flat_map(|d| &d.names).collect();
    assert_eq!(names.len(), total, "every kernel listed exactly once");
    let unique: std::collections::BTreeSet<&String> = names.iter().copied().collect();
    assert_eq!(unique.len(), total, "kernel names are unique");
}

#[test]
fn spirv_val_rejects_a_broken_module() {
    // The check above is only worth something if `spirv-val` says no: a header with a bound of 0 is invalid.
    let temp = tempfile::tempdir().expect("temp dir");
    let broken = [0x0723_0203, 0x0001_0000, 0, 0, 0];
    assert!(spirv_val(&broken, temp.path(), "broken.spv").is_err());
}
