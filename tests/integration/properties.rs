//! Front-end properties: any input (random bytes, token soup, mutated examples, deep nesting) gets
//! diagnostics and never a panic; printing a parsed program and parsing it again gives the same tree.

use crate::util::check_text;
use proptest::prelude::*;
use tdsl_compiler::span::FileId;
use tdsl_compiler::syntax::{parse, print};

const VOCABULARY: &[&str] = &[
    "fn",
    "model",
    "param",
    "import",
    "for",
    "in",
    "return",
    "else",
    "true",
    "false",
    "int",
    "float",
    "bool",
    "as",
    "x",
    "y",
    "B",
    "S",
    "f32",
    "i32",
    "T",
    "sum",
    "max",
    "mean",
    "softmax",
    "reshape",
    "Linear",
    "gelu",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ";",
    ".",
    "..",
    "...",
    "=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "@",
    "^",
    "<",
    "<=",
    "==",
    "!=",
    "&&",
    "||",
    "!",
    "->",
    "0",
    "1",
    "2",
    "384",
    "1.5",
    "1e-12",
    "99999999999999999999999",
    "\"std/nn\"",
    "\"a.{i}\"",
    "\"unterminated",
    "$",
    "\u{e9}",
    "\n",
    " ",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCABULARY), 0..80).prop_map(|tokens| tokens.join(" "))
}

/// Examples with a random span of bytes removed or duplicated: near-valid programs reach the checker.
fn mutated_example() -> impl Strategy<Value = String> {
    let examples: Vec<String> = ["mlp", "cnn", "encoder_layer", "minilm/minilm"]
        .iter()
        .map(|n| std::fs::read_to_string(format!("../examples/{n}.tdsl")).expect("example"))
        .collect();
    (prop::sample::select(examples), any::<u16>(), 0usize..12, any::<bool>()).prop_map(|(text, at, len, dup)| {
        let bytes = text.into_bytes();
        let start = at as usize % bytes.len();
        let end = (start + len).min(bytes.len());
        let mut out = bytes[..start].to_vec();
        if dup {
            out.extend_from_slice(&bytes[start..end]);
            out.extend_from_slice(&bytes[start..end]);
        }
        out.extend_from_slice(&bytes[end..]);
        String::from_utf8_lossy(&out).into_owned()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = check_text("bytes.tdsl", &text);
    }

    #[test]
    fn token_soup_never_panics(text in token_soup()) {
        let _ = check_text("soup.tdsl", &text);
    }

    #[test]
    fn mutated_examples_never_panic(text in mutated_example()) {
        let _ = check_text("mutated.tdsl", &text);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for open in ["(", "[", "{"] {
        let text = format!("model m(x: f32[1]) -> (y: f32[1]) {{ y = {} }}", open.repeat(100_000));
        let checked = check_text("deep.tdsl", &text);
        assert!(!checked.diagnostics.is_empty());
    }
}

#[test]
fn huge_literals_are_errors() {
    let checked = check_text("huge.tdsl", "model m(x: f32[99999999999999999999]) -> (y: f32[1]) { y = x }");
    assert!(checked.diagnostics.iter().any(|d| d.code.as_str() == "E0004"));
}

#[test]
fn printing_examples_and_std_round_trips() {
    let mut texts: Vec<(String, String)> = ["mlp", "cnn", "encoder_layer", "minilm/minilm"]
        .iter()
        .map(|n| (n.to_string(), std::fs::read_to_string(format!("../examples/{n}.tdsl")).expect("example")))
        .collect();
    for (name, text) in tdsl_compiler::driver::STD_FILES {
        texts.push((name.to_string(), text.to_string()));
    }
    for (name, text) in texts {
        let (mut first, errors) = parse(FileId(0), &text);
        assert!(errors.is_empty(), "{name} parses");
        let printed = print::print(&first);
        let (mut second, errors) = parse(FileId(0), &printed);
        assert!(errors.is_empty(), "{name}: printed form parses:\n{printed}");
        print::erase_spans(&mut first);
        print::erase_spans(&mut second);
        assert_eq!(first, second, "{name}: print then parse gives the same tree");
        assert_eq!(print::print(&second), printed, "{name}: printing is stable");
    }
}
