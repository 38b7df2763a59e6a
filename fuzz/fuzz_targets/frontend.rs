//! Fuzz target: any bytes through the whole front end (lexer, parser, imports of the embedded standard
//! library, checker, lowering, verifier). It must never panic, hang or overflow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tdsl_compiler::driver::Root;
use tdsl_compiler::pipeline::check;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let checked = check(Root::Text { name: "fuzz.tdsl", text: &text });
    if checked.errors() == 0 {
        for graph in &checked.graphs {
            // A program the checker accepts must lower to a graph the verifier accepts.
            tdsl_compiler::ir::verify(graph).expect("checked programs lower to verified IR");
        }
    }
});
