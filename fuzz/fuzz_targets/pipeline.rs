//! Fuzz target: the whole compiler: the front end (`pipeline::check`) and, for every model of a program that
//! checks clean, the back end (`pipeline::compile_graph`: the IR verifier, the IR passes, fusion and its
//! verifier, codegen with naga validation, `Program::validate`). It must never panic, hang or overflow the
//! stack, and a checked program must compile: the only `CompileError` a checked program may produce is
//! `Codegen(Unsupported)` (an op with no GPU kernel yet, printed once per op so a run lists them); every
//! other error is an internal compiler error and a finding.
//!
//! The first byte is the mode: bit 0 turns fusion off, bit 1 chooses where the source comes from. With bit
//! 1 clear the rest of the input is the source (as lossy UTF-8), which reaches every corner of the front
//! end but rarely checks clean. With bit 1 set the rest drives `generate`, which writes a well-typed program
//! (elementwise chains with literal operands such as 0, inf and f16 subnormals, prelude activations and
//! normalisations, reductions broadcast back, matmul, index notation with shifts, reversals and `else`,
//! casts and layout round trips) so most inputs reach fusion and codegen. With `TDSL_FUZZ_SHOW` set, each
//! input's program and diagnostics are printed (for replaying a finding by hand).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Mutex;
use tdsl_compiler::codegen::CodegenError;
use tdsl_compiler::driver::Root;
use tdsl_compiler::pipeline::{CompileError, Options, check, compile_graph};

static UNSUPPORTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = if mode & 2 == 0 { String::from_utf8_lossy(rest).into_owned() } else { generate(rest) };
    let checked = check(Root::Text { name: "fuzz.tdsl", text: &text });
    if std::env::var_os("TDSL_FUZZ_SHOW").is_some() {
        // Replaying an input by hand: show the program and what the checker said.
        eprintln!("{text}\n{} diagnostic(s)", checked.diagnostics.len());
        checked.diagnostics.iter().for_each(|d| eprintln!("  {}", d.message));
    }
    if checked.errors() > 0 {
        return;
    }
    let options = Options { fuse: mode & 1 == 0, verify: true, ..Options::default() };
    for graph in &checked.graphs {
        match compile_graph(graph, &options) {
            Ok(_) => {}
            Err(CompileError::Codegen(CodegenError::Unsupported { op })) => {
                let mut seen = UNSUPPORTED.lock().unwrap_or_else(|e| e.into_inner());
                if seen.get_or_insert_with(HashSet::new).insert(op.clone()) {
                    eprintln!("pipeline fuzz: no GPU kernel for `{op}`");
                }
            }
            Err(e) => panic!("a checked program does not compile (fuse {}): {e}\n{text}", options.fuse),
        }
    }
});

/// Functions of one tensor that keep its shape and dtype (`-` is negation).
const UNARY: &[&str] = &[
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "tanh",
    "sin",
    "cos",
    "erf",
    "sigmoid",
    "relu",
    "abs",
    "floor",
    "ceil",
    "gelu",
    "gelu_tanh",
    "silu",
    "-",
];

/// The bytes as choices, 0 when they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> usize {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        usize::from(b)
    }
    fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
        items[self.next() % items.len()]
    }
}

/// A model whose tensors are all `T[B, D]` (T f32 or f16, D symbolic or a literal), built one statement per
/// few bytes from what came before; it checks clean by construction (the target skips it otherwise).
fn generate(data: &[u8]) -> String {
    let mut b = Bytes(data);
    let t = b.pick(&["f32", "f16"]);
    let d = b.pick(&["D", "1", "3", "4", "8", "33", "D", "64"]);
    let mut out = format!(
        "import \"std/nn\"\n\nmodel m(x0: {t}[B, {d}], x1: {t}[B, {d}], w: {t}[{d}, {d}], g: {t}[{d}])\n    \
         -> (y: {t}[B, {d}], z: {t}[B, {d}]) {{\n"
    );
    let literals =
        ["0.0", "1.0", "-1.0", "(1.0 / 0.0)", "(-1.0 / 0.0)", "0.5", "3.0", "1e-7", "65504.0", "6e-8", "1e-40"];
    let mut vars = vec!["x0".to_string(), "x1".to_string()];
    let count = 1 + b.next() % 24;
    for n in 0..count {
        if b.0.is_empty() && n > 0 {
            break;
        }
        let a = vars[b.next() % vars.len()].clone();
        let c = vars[b.next() % vars.len()].clone();
        let v = format!("v{n}");
        let lit = b.pick(&literals);
        let line = match b.next() % 18 {
            0 => format!("{v} = {a} {} {c}", b.pick(&["+", "-", "*", "/", "%"])),
            1 => format!("{v} = {a} {} {lit}", b.pick(&["+", "-", "*", "/", "%"])),
            2 => format!("{v} = {lit} {} {a}", b.pick(&["+", "-", "*", "/"])),
            3 => format!("{v} = {}({a}, {c})", b.pick(&["max", "min"])),
            4 => format!("{v} = {}({a})", b.pick(UNARY)),
            5 => format!("{v} = {}({a})", b.pick(&["softmax", "log_softmax", "l2_normalize"])),
            6 => format!("{v} = layer_norm({a}, g, g)"),
            7 => format!("{v} = {a} @ w"),
            8 => format!(
                "{v} = {a} {} {}({c}, axis: {}, keepdims: true)",
                b.pick(&["-", "/", "*"]),
                b.pick(&["sum", "mean", "max", "min", "prod"]),
                b.pick(&["1", "-1", "0"])
            ),
            9 => format!("{v}[i, j] = sum[k]({a}[i, k] * w[k, j])"),
            10 => format!("{v}[i: B, j: {d}] = {a}[i, j + 1] else {lit}"),
            11 => format!("{v}[i: B, j: {d}] = {a}[i, {d} - 1 - j]"),
            12 => {
                format!("{v}[i: B, j: {d}] = {}[k: {d}]({a}[i, k] + {c}[i, j])", b.pick(&["max", "min", "sum", "mean"]))
            }
            13 => format!("{v} = where({a} {} {c}, {a}, {lit})", b.pick(&["<", ">", "==", "!=", "<="])),
            14 => format!("{v} = {t}({}({a}))", b.pick(&["i32", "u32", "f16", "f32", "bool"])),
            15 => format!("{v} = transpose(transpose(w) @ transpose({a}))"),
            16 => format!("{v} = reshape(reshape({a}, [-1]), [B, {d}]) {} {lit}", b.pick(&["+", "*"])),
            _ => format!("{v} = {a} ^ {}", b.pick(&["2", "3", "0.5", "-1", "2.0"])),
        };
        let _ = writeln!(out, "    {line}");
        vars.push(v);
    }
    let y = vars[vars.len() - 1].clone();
    let z = vars[b.next() % vars.len()].clone();
    let _ = writeln!(out, "    y = {y}\n    z = {z}\n}}");
    out
}
