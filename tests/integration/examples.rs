//! The examples and the standard library: all check clean, and every example model runs on the reference
//! interpreter with seeded inputs and weights, giving finite outputs of the declared shapes.

use crate::util::{check_path, check_text, rendered};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tdsl_compiler::dim::SymId;
use tdsl_compiler::driver::STD_FILES;
use tdsl_compiler::interp::{self, Tensor};
use tdsl_compiler::ir::{DType, Graph};

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("../examples")
        .expect("examples directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tdsl"))
        .collect();
    files.sort();
    files
}

#[test]
fn examples_check_clean() {
    let files = example_files();
    assert!(files.len() >= 3, "expected the MLP, CNN and encoder examples");
    for path in files {
        let checked = check_path(&path);
        assert!(checked.diagnostics.is_empty(), "{}:\n{}", path.display(), rendered(&checked));
        assert!(!checked.graphs.is_empty(), "{} has no model", path.display());
    }
}

#[test]
fn standard_library_checks_clean() {
    for (name, text) in STD_FILES {
        let checked = check_text(&format!("std/{name}.tdsl"), text);
        assert!(checked.diagnostics.is_empty(), "std/{name}:\n{}", rendered(&checked));
    }
}

/// A small deterministic generator (SplitMix64) for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn tensor(&mut self, dtype: DType, shape: &[usize], int_range: i64) -> Tensor {
        let n: usize = shape.iter().product();
        match dtype {
            DType::F32 => Tensor::f32(shape.to_vec(), (0..n).map(|_| self.unit()).collect()),
            DType::I32 => Tensor::i32(shape.to_vec(), (0..n).map(|_| (self.next_u64() % int_range as u64) as i32).collect()),
            DType::U32 => Tensor::u32(shape.to_vec(), (0..n).map(|_| (self.next_u64() % int_range as u64) as u32).collect()),
            DType::Bool => Tensor::bool(shape.to_vec(), (0..n).map(|_| self.next_u64() % 2 == 0).collect()),
            DType::F16 => Tensor::f16(shape.to_vec(), (0..n).map(|_| half::f16::from_f32(self.unit())).collect()),
        }
    }
}

/// Seeded inputs and params for `graph` with every symbol bound to `size`; integer inputs are 0 or 1.
pub fn random_bindings(graph: &Graph, size: i64, seed: u64) -> (Vec<Tensor>, HashMap<String, Tensor>) {
    let mut rng = Rng::new(seed);
    let env = |_: SymId| size;
    let shape_of = |id| -> Vec<usize> {
        graph.node(id).ty.shape.iter().map(|d| d.eval(&env).expect("dims evaluate") as usize).collect()
    };
    let inputs = graph
        .inputs
        .iter()
        .map(|&id| rng.tensor(graph.node(id).ty.dtype, &shape_of(id), 2))
        .collect();
    let params = graph
        .params
        .iter()
        .map(|&id| {
            let tdsl_compiler::ir::Op::Param { key } = &graph.node(id).op else { panic!("param node") };
            (key.clone(), rng.tensor(graph.node(id).ty.dtype, &shape_of(id), 2))
        })
        .collect();
    (inputs, params)
}

#[test]
fn examples_run_on_the_interpreter() {
    for path in example_files() {
        let checked = check_path(Path::new(&path));
        for graph in &checked.graphs {
            let (inputs, params) = random_bindings(graph, 3, 7);
            let outputs = interp::run(graph, &inputs, &params)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(outputs.len(), graph.outputs.len());
            for (out, decl) in outputs.iter().zip(&graph.outputs) {
                let values = out.to_f64_vec();
                assert!(!values.is_empty());
                assert!(values.iter().all(|v| v.is_finite()), "{}: output {} not finite", path.display(), decl.name);
            }
        }
    }
}
