//! The examples and the standard library: all check clean, and every example model runs on the reference
//! interpreter with seeded inputs and weights, giving finite outputs of the declared shapes.

use crate::util::{check_path, rendered};
use std::collections::HashMap;
use std::path::Path;
use tdsl_compiler::dim::SymId;
use tdsl_compiler::driver::STD_FILES;
use tdsl_compiler::interp::{self, Tensor};
use tdsl_compiler::ir::Graph;
use tdsl_compiler::random::seeded_tensor;

#[test]
fn examples_check_clean() {
    let files = crate::util::files(Path::new("../examples"), "tdsl", true);
    assert!(files.len() >= 4, "expected the MLP, CNN, encoder layer and MiniLM examples");
    for path in files {
        let checked = check_path(&path);
        assert!(checked.diagnostics.is_empty(), "{}:\n{}", path.display(), rendered(&checked));
        assert!(!checked.graphs.is_empty(), "{} has no model", path.display());
    }
}

#[test]
fn standard_library_checks_clean() {
    for (name, _) in STD_FILES {
        let checked = tdsl_compiler::pipeline::check(tdsl_compiler::driver::Root::Std(name));
        assert!(checked.diagnostics.is_empty(), "std/{name}:\n{}", rendered(&checked));
    }
}

/// Seeded inputs and params for `graph` with every symbol bound to `size`; integer inputs are 0 or 1.
pub fn random_bindings(graph: &Graph, size: i64, seed: u64) -> (Vec<Tensor>, HashMap<String, Tensor>) {
    let env = |_: SymId| size;
    let shape_of = |id| -> Vec<usize> {
        graph.node(id).ty.shape.iter().map(|d| d.eval(&env).expect("dims evaluate") as usize).collect()
    };
    let inputs = graph
        .inputs
        .iter()
        .map(|&id| {
            let tdsl_compiler::ir::Op::Input { name } = &graph.node(id).op else { panic!("input node") };
            seeded_tensor(name, graph.node(id).ty.dtype, &shape_of(id), seed)
        })
        .collect();
    let params = graph
        .params
        .iter()
        .map(|&id| {
            let tdsl_compiler::ir::Op::Param { key } = &graph.node(id).op else { panic!("param node") };
            (key.clone(), crate::util::seeded_param(key, graph.node(id).ty.dtype, &shape_of(id), seed))
        })
        .collect();
    (inputs, params)
}

#[test]
fn examples_run_on_the_interpreter() {
    for path in crate::util::files(Path::new("../examples"), "tdsl", true) {
        let checked = check_path(Path::new(&path));
        for graph in &checked.graphs {
            let (inputs, params) = random_bindings(graph, 3, 7);
            let outputs = interp::run(graph, &inputs, &params).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(outputs.len(), graph.outputs.len());
            for (out, decl) in outputs.iter().zip(&graph.outputs) {
                let values = out.to_f64_vec();
                assert!(!values.is_empty());
                assert!(values.iter().all(|v| v.is_finite()), "{}: output {} not finite", path.display(), decl.name);
            }
        }
    }
}
