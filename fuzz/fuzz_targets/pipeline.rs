//! Fuzz target: any bytes (as lossy UTF-8) through the whole compiler: the front end (`pipeline::check`)
//! and, for every model of a program that checks clean, the back end (`pipeline::compile_graph`: the IR
//! verifier, the IR passes, fusion and its verifier, codegen with naga validation, `Program::validate`).
//! The first byte chooses fusion on (even) or off (odd); the rest is the source. It must never panic, hang
//! or overflow the stack, and a checked program must compile: the only `CompileError` a checked program may
//! produce is `Codegen(Unsupported)` (an op with no GPU kernel yet, printed once per op so a run lists them);
//! every other error is an internal compiler error and a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::sync::Mutex;
use tdsl_compiler::codegen::CodegenError;
use tdsl_compiler::driver::Root;
use tdsl_compiler::pipeline::{CompileError, Options, check, compile_graph};

static UNSUPPORTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, source)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(source);
    let checked = check(Root::Text { name: "fuzz.tdsl", text: &text });
    if !checked.diagnostics.is_empty() {
        return;
    }
    let options = Options { fuse: mode % 2 == 0, verify: true, ..Options::default() };
    for graph in &checked.graphs {
        match compile_graph(graph, &options) {
            Ok(_) => {}
            Err(CompileError::Codegen(CodegenError::Unsupported { op })) => {
                let mut seen = UNSUPPORTED.lock().unwrap_or_else(|e| e.into_inner());
                if seen.get_or_insert_with(HashSet::new).insert(op.clone()) {
                    eprintln!("pipeline fuzz: no GPU kernel for `{op}`");
                }
            }
            Err(e) => panic!("a checked program does not compile (fuse {}): {e}", options.fuse),
        }
    }
});
