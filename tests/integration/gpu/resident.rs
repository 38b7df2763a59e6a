//! Resident models on compiled programs: the MLP example (seeded params) is loaded once and runs several
//! batch sizes, larger and smaller, with its input given by name; its output stays on the device and feeds
//! a second compiled model. Every result equals the same programs run one shot through `Gpu::execute`
//! (and, for the second model, its input taken through the host) bit for bit.

use std::collections::HashMap;

use super::{gpu, seeded_bindings, symbol_values};
use crate::util::single_graph;
use tdsl_compiler::codegen;
use tdsl_compiler::interp::Tensor;
use tdsl_compiler::ir::DType;
use tdsl_runtime::Input;
use tdsl_runtime::random::seeded_tensor;

const MLP: &str = include_str!("../../../examples/mlp.tdsl");
const SHIFT: &str = "model shift(p: f32[B, 10]) -> (q: f32[B, 10]) {\n    q = p * 2.0 + 1.0\n}\n";

#[test]
fn a_compiled_model_stays_resident_and_feeds_another_on_the_device() {
    let (mlp, shift) = (single_graph("mlp.tdsl", MLP), single_graph("shift.tdsl", SHIFT));
    let compile = |graph| {
        let options = crate::util::options(true, codegen::Target::for_gpu(gpu()));
        crate::util::compile_with(graph, &options).expect("compiles").program
    };
    let (mlp_program, shift_program) = (compile(&mlp), compile(&shift));
    let (_, params) = seeded_bindings(&mlp, &symbol_values(&mlp, &[("B", 4)], 2), 3);
    let no_params = HashMap::<String, Tensor>::new();
    let gpu = gpu();
    let mut model = gpu.load(&mlp_program, &params).expect("the MLP loads");
    let mut shifted = gpu.load(&shift_program, &no_params).expect("the second model loads");
    for b in [4, 1, 7, 2] {
        let x = seeded_tensor("x", DType::F32, &[b, 784], b as u64);
        let expected = gpu.execute(&mlp_program, std::slice::from_ref(&x), &params).expect("runs");
        let named = model.run_named(&[("x", &x)]).expect("runs by name");
        assert_eq!((named[0].0.as_str(), &named[0].1), ("probs", &expected[0]), "B = {b}");

        let probs = model.call(&[Input::Host(&x)]).expect("runs");
        let on_device = probs.get("probs").expect("an output `probs`");
        let q = shifted.call_named(&[("p", Input::Device(on_device))]).expect("runs on the device tensor");
        let through_host = gpu.execute(&shift_program, &expected, &no_params).expect("runs");
        assert_eq!(q.get("q").expect("an output `q`").download(gpu).expect("downloads"), through_host[0]);
    }
}
