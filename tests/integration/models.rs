//! Whole models against PyTorch (scripts/models-reference.py wrote the fixtures of `fixtures/models/`), each
//! on the reference interpreter and on the GPU (the device's own profile):
//!
//! - `gpt2_tiny.tdsl` and `llama_tiny.tdsl` call the functions of examples/gpt2.tdsl and examples/llama.tdsl in
//!   reduced configurations, with the weights of HF transformers' `GPT2LMHeadModel` and `LlamaForCausalLM` in
//!   the same configurations, keyed by their state_dict;
//! - examples/resnet18.tdsl itself, torchvision's full ResNet-18, on a [2, 3, 32, 32] batch and an odd-sized
//!   [1, 3, 40, 56] image, with 11.7 million weights that both sides make from tdsl's seeded test data
//!   (`resnet_param`), so only inputs and logits are stored.
//!
//! A logit passes when `|got - want| <= 1e-5 * max |want| + 1e-4 * |want|`: float32 accumulated in another
//! order (ResNet's convolutions sum up to 4608 products, 18 layers deep) is off by a few ulps of the logits'
//! scale; a wrong weight, index or scale is off by far more.

use std::collections::HashMap;
use std::path::Path;

use tdsl_compiler::interp;
use tdsl_compiler::ir::{DType, Graph, Op};
use tdsl_compiler::random::seeded_tensor;
use tdsl_runtime::Tensor;

use crate::grad::st_tensor;
use crate::layers::{f32s, inputs_and_params};
use crate::util::{check_path, options, rendered};

/// The seed of ResNet-18's weights (scripts/models-reference.py: RESNET_SEED).
const RESNET_SEED: u64 = 16;
const ATOL_OF_SCALE: f32 = 1e-5;
const RTOL: f32 = 1e-4;

/// ResNet-18's weight `key` of `shape`: seeded data `u` in [-1, 1), scaled to keep activations near 1 through
/// the network (a convolution or `fc` weight `u sqrt(3 / fan_in)`, variance 1 / fan_in), running variances
/// in [0.5, 1.5), running means and biases `0.2 u`, batch-norm scales `1 + 0.2 u`. scripts/models-reference.py
/// makes the same values (`resnet_param`).
fn resnet_param(key: &str, shape: &[usize]) -> Tensor {
    let mut t = seeded_tensor(key, DType::F32, shape, RESNET_SEED);
    let fan_in: usize = shape[1..].iter().product();
    let scale = (3.0f64 / fan_in as f64).sqrt() as f32;
    let tdsl_runtime::TensorData::F32(values) = &mut t.data else { unreachable!("f32 params") };
    for v in values.iter_mut() {
        *v = if key.ends_with("running_var") {
            1.0 + 0.5 * *v
        } else if key.ends_with("running_mean") || key.ends_with("bias") {
            0.2 * *v
        } else if shape.len() == 1 {
            1.0 + 0.2 * *v
        } else {
            *v * scale
        };
    }
    t
}

/// Runs `graph` on the interpreter and on the GPU and compares `logits` with `want`; the failures as
/// messages.
fn compare(
    case: &str,
    graph: &Graph,
    inputs: &[Tensor],
    params: &HashMap<String, Tensor>,
    want: &Tensor,
) -> Vec<String> {
    let target = tdsl_compiler::codegen::Target::for_gpu(crate::gpu::gpu());
    let sides = [
        ("interpreter", interp::run(graph, inputs, params).unwrap_or_else(|e| panic!("{case}: {e}"))),
        (
            "GPU",
            crate::gpu::run_gpu_for(graph, inputs, params, &options(true, target))
                .unwrap_or_else(|e| panic!("{case} (GPU): {e}")),
        ),
    ];
    let want = f32s(want);
    let scale = want.iter().fold(0.0f32, |m, w| m.max(w.abs()));
    let mut failures = Vec::new();
    for (side, outputs) in &sides {
        assert_eq!(outputs.len(), 1, "{case}: one output, the logits");
        let got = f32s(&outputs[0]);
        assert_eq!(got.len(), want.len(), "{case} ({side}): logits' size");
        let mut largest = 0.0f32;
        let mut ok = true;
        for (g, w) in got.iter().zip(want) {
            let err = (g - w).abs();
            ok &= err <= ATOL_OF_SCALE * scale + RTOL * w.abs();
            largest = largest.max(if err.is_nan() { f32::INFINITY } else { err });
        }
        println!("{case} ({side}): largest error {largest:e}, logits' scale {scale:e}");
        if !ok {
            failures.push(format!("{case} ({side}): off by up to {largest:e} with logits up to {scale:e}"));
        }
    }
    failures
}

/// The model called `name` of `path`, checked clean.
fn model(path: &Path, name: &str) -> Graph {
    let checked = check_path(path);
    assert!(checked.diagnostics.is_empty(), "{}:\n{}", path.display(), rendered(&checked));
    checked.graphs.into_iter().find(|g| g.name == name).unwrap_or_else(|| panic!("{}: no model {name}", path.display()))
}

#[test]
fn gpt2_and_llama_match_transformers() {
    let mut failures = Vec::new();
    for name in ["gpt2_tiny", "llama_tiny"] {
        let path = Path::new("fixtures/models").join(format!("{name}.tdsl"));
        let bytes = std::fs::read(path.with_extension("safetensors")).expect("the model's reference");
        let file = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors file");
        let get = |key: &str| st_tensor(&file.tensor(key).unwrap_or_else(|_| panic!("{name}: no {key}")));
        let graph = model(&path, name);
        let (inputs, params) = inputs_and_params(&graph, &get);
        let stored = file.names().into_iter().filter(|n| n.starts_with("param.")).count();
        assert_eq!(stored, params.len(), "{name}: every weight of the PyTorch model is a param");
        failures.extend(compare(name, &graph, &inputs, &params, &get("expected.logits")));
    }
    assert!(failures.is_empty(), "logits differ from PyTorch's:\n{}", failures.join("\n"));
}

#[test]
fn resnet18_matches_torchvision() {
    let graph = model(Path::new("../examples/resnet18.tdsl"), "resnet18");
    let params: HashMap<String, Tensor> = graph
        .params
        .iter()
        .map(|&p| {
            let Op::Param { key } = &graph.node(p).op else { unreachable!("params are params") };
            let shape: Vec<usize> =
                graph.node(p).ty.shape.iter().map(|d| d.as_const().expect("fixed param shapes") as usize).collect();
            (key.clone(), resnet_param(key, &shape))
        })
        .collect();
    assert_eq!(params.len(), 102, "torchvision's resnet18 has 102 float weights besides num_batches_tracked");
    let mut failures = Vec::new();
    for case in ["resnet18-2x3x32x32", "resnet18-1x3x40x56"] {
        let bytes = std::fs::read(format!("fixtures/models/{case}.safetensors")).expect("the model's reference");
        let file = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors file");
        let get = |key: &str| st_tensor(&file.tensor(key).unwrap_or_else(|_| panic!("{case}: no {key}")));
        failures.extend(compare(case, &graph, &[get("input.x")], &params, &get("expected.logits")));
    }
    assert!(failures.is_empty(), "logits differ from torchvision's:\n{}", failures.join("\n"));
}
