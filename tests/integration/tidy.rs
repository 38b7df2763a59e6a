//! Tidy checks on the source tree itself: every Rust source file opens with a `//!` paragraph,
//! ARCHITECTURE.md quotes the pipeline exactly as `compiler/src/pipeline.rs` has it, and no two sibling
//! modules of a crate import each other, directly or around a cycle.
//!
//! The module graph is read off the source text: every `crate::a::b` and `super::x` path (and the names
//! inside `use crate::{..}` groups) is an edge from the file's module to the module it names. An edge between
//! two modules counts between their top-most distinct ancestors under a common parent (`codegen::fuse` ->
//! `codegen::tiles::x` is `fuse -> tiles` under `codegen`); edges between a module and its own descendants
//! are structure, not layering, and are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The source roots of the workspace's crates, relative to `tests/`.
const CRATES: &[&str] = &["../compiler/src", "../runtime/src", "../examples/minilm/src"];

#[test]
fn every_source_file_opens_with_a_module_comment() {
    let mut files = Vec::new();
    for root in CRATES.iter().chain(&["../examples/run-bundle/src", "../examples/embed-bundle/src", "integration"]) {
        files.extend(crate::util::files(Path::new(root), "rs", true));
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).expect("read").trim_start().starts_with("//!"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a `//!` paragraph: {missing:?}");
}

/// The text of `pub fn NAME` through its closing brace in `source`.
fn function_text<'a>(source: &'a str, name: &str) -> &'a str {
    let start = source.find(&format!("pub fn {name}(")).unwrap_or_else(|| panic!("no `pub fn {name}`"));
    let end = source[start..].find("\n}\n").map(|e| start + e + 2).expect("the function's end");
    &source[start..end]
}

#[test]
fn architecture_quotes_the_pipeline_as_it_is() {
    let pipeline = std::fs::read_to_string("../compiler/src/pipeline.rs").expect("pipeline.rs");
    let architecture = std::fs::read_to_string("../ARCHITECTURE.md").expect("ARCHITECTURE.md");
    for name in ["check", "compile_graph"] {
        let text = function_text(&pipeline, name);
        assert!(architecture.contains(text), "ARCHITECTURE.md does not quote `pipeline::{name}` as it is now:\n{text}");
    }
}

/// `compiler/src/codegen/kernel/tile.rs` -> `["codegen", "kernel", "tile"]`; `mod.rs`, `lib.rs` and
/// `main.rs` are their directory's module.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(root).expect("under the root");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The module paths `source` refers to, resolved against `module` (the file's own module).
fn references(module: &[String], source: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // The identifiers of a path, up to the first character that is neither part of one nor `::`.
    let words = |text: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text.trim_start();
        loop {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            out.push(rest[..end].to_string());
            match rest[end..].strip_prefix("::") {
                Some(next) => rest = next,
                None => break,
            }
        }
        out
    };
    for line in source.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a, b::c, ..}`: the first word of each item at depth one.
                let mut depth = 0;
                let mut item = String::new();
                for ch in group.chars() {
                    match ch {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            out.push(words(&item));
                            item.clear();
                        }
                        _ if depth == 0 => item.push(ch),
                        _ => {}
                    }
                }
                out.push(words(&item));
            } else {
                out.push(words(rest));
            }
        }
        for (at, _) in line.match_indices("super::") {
            if at >= 7 && &line[at - 7..at] == "super::" {
                continue;
            }
            let mut rest = &line[at..];
            // `super` is the module's parent (the module path already says whether a file is `mod.rs`).
            let mut base: Vec<String> = module.to_vec();
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            base.extend(words(rest));
            out.push(base);
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

#[test]
fn sibling_modules_form_no_cycle() {
    let mut cycles = Vec::new();
    for root in CRATES {
        let root = Path::new(root);
        let files = crate::util::files(root, "rs", true);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(root, f)).collect();
        // Edges between siblings, grouped by their common parent.
        let mut edges: BTreeMap<Vec<String>, BTreeSet<(String, String)>> = BTreeMap::new();
        for file in &files {
            let from = module_of(root, file);
            let source = std::fs::read_to_string(file).expect("read");
            for target in references(&from, &source) {
                // The longest prefix of the path that is a module of this crate.
                let Some(to) = (1..=target.len()).rev().map(|n| target[..n].to_vec()).find(|m| modules.contains(m))
                else {
                    continue;
                };
                let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    continue;
                }
                edges.entry(from[..common].to_vec()).or_default().insert((from[common].clone(), to[common].clone()));
            }
        }
        for (parent, edges) in &edges {
            if let Some(cycle) = find_cycle(edges) {
                cycles.push(format!("{}: under `{}`: {}", root.display(), parent.join("::"), cycle.join(" -> ")));
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

/// A cycle in the directed graph `edges`, as the nodes around it (first repeated at the end).
fn find_cycle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    fn visit<'a>(
        node: &'a String,
        edges: &'a BTreeSet<(String, String)>,
        state: &mut BTreeMap<&'a String, u8>,
        stack: &mut Vec<&'a String>,
    ) -> Option<Vec<String>> {
        state.insert(node, 1);
        stack.push(node);
        for (_, next) in edges.iter().filter(|(a, _)| a == node) {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|n| *n == next).expect("on the stack");
                    let mut cycle: Vec<String> = stack[start..].iter().map(|n| n.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node, 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in nodes {
        if state.get(node).copied().unwrap_or(0) == 0
            && let Some(cycle) = visit(node, edges, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// The checker above finds what it should: a made-up pair of files that import each other.
#[test]
fn the_cycle_check_finds_a_cycle() {
    let a = references(&["a".to_string()], "use crate::b::Thing;\n");
    let b = references(&["b".to_string()], "use crate::{a::Other, c};\n");
    assert_eq!(a, vec![vec!["b".to_string(), "Thing".to_string()]]);
    assert_eq!(b, vec![vec!["a".to_string(), "Other".to_string()], vec!["c".to_string()]]);
    let edges: BTreeSet<(String, String)> =
        [("a", "b"), ("b", "a"), ("b", "c")].iter().map(|(x, y)| (x.to_string(), y.to_string())).collect();
    assert_eq!(find_cycle(&edges), Some(vec!["a".to_string(), "b".to_string(), "a".to_string()]));
    let sup = references(&["codegen".to_string(), "kernel".to_string(), "tile".to_string()], "use super::super::fuse;");
    assert_eq!(sup, vec![vec!["codegen".to_string(), "fuse".to_string()]]);
}
