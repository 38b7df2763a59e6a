//! The layers of std/nn against PyTorch: every model of `fixtures/layers/` (one per layer family: RMSNorm,
//! Linear without bias, BatchNorm2d in eval mode, GroupNorm, dilated, grouped and depthwise convolutions,
//! transposed convolution, padded max pooling and upsampling, the clamp-style activations, Llama's SwiGLU MLP,
//! scaled dot-product attention with causal and float masks, grouped-query attention, rotary embeddings,
//! argmax/argmin/cumsum, torch.gather, scatter_add, sort, argsort and topk) runs
//! on the reference interpreter and on the GPU (every schedule profile the device gets) with the inputs and
//! params scripts/layers-reference.py drew, and every output is compared with the `expected.<output>` that
//! PyTorch computed.
//!
//! Integer outputs (argmax and argmin positions, integer running sums) must be equal. A float element passes
//! when `|got - want| <= 1e-5 + 1e-5 * |want|`: float32 accumulated in another order (sums
//! of at most a few hundred terms of magnitude about 1) is off by a few ulps, about 1e-6; a wrong index,
//! padding value or scale is off by far more.

use std::collections::HashMap;

use tdsl_compiler::interp;
use tdsl_compiler::ir::{Graph, Op};
use tdsl_runtime::{Tensor, TensorData};

use crate::grad::st_tensor;
use crate::util::{check_path, files, options, rendered};

const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-5;

pub fn f32s(t: &Tensor) -> &[f32] {
    match &t.data {
        TensorData::F32(v) => v,
        other => panic!("not f32: {other:?}"),
    }
}

/// The largest error of `got` against `want` and whether it passes: f32 outputs within the tolerance
/// (`worst`), integer outputs (indices, integer sums) exactly, the error being the largest difference.
fn compare(got: &Tensor, want: &Tensor) -> Result<(f32, bool), String> {
    match (&got.data, &want.data) {
        (TensorData::F32(g), TensorData::F32(w)) => Ok(worst(g, w)),
        (TensorData::I32(g), TensorData::I32(w)) => {
            let largest = g.iter().zip(w).map(|(g, w)| (i64::from(*g) - i64::from(*w)).abs()).max().unwrap_or(0);
            Ok((largest as f32, largest == 0))
        }
        (g, w) => Err(format!("dtypes differ: got {g:?}, want {w:?}")),
    }
}

/// The largest `|got - want|` and whether every element is within `ATOL + RTOL * |want|`.
fn worst(got: &[f32], want: &[f32]) -> (f32, bool) {
    let mut ok = true;
    let mut largest = 0.0f32;
    for (g, w) in got.iter().zip(want) {
        // NaN where PyTorch has NaN, and the same infinity, are exact.
        if (g.is_nan() && w.is_nan()) || (g.is_infinite() && g == w) {
            continue;
        }
        let err = (g - w).abs();
        ok &= err <= ATOL + RTOL * w.abs();
        largest = largest.max(if err.is_nan() { f32::INFINITY } else { err });
    }
    (largest, ok)
}

pub fn inputs_and_params(graph: &Graph, get: &dyn Fn(&str) -> Tensor) -> (Vec<Tensor>, HashMap<String, Tensor>) {
    let inputs = graph
        .inputs
        .iter()
        .map(|&i| match &graph.node(i).op {
            Op::Input { name } => get(&format!("input.{name}")),
            _ => unreachable!("inputs are inputs"),
        })
        .collect();
    let params = graph
        .params
        .iter()
        .map(|&p| match &graph.node(p).op {
            Op::Param { key } => (key.clone(), get(&format!("param.{key}"))),
            _ => unreachable!("params are params"),
        })
        .collect();
    (inputs, params)
}

#[test]
fn layers_match_pytorch() {
    let mut failures = Vec::new();
    let mut compared = 0;
    for path in files(std::path::Path::new("fixtures/layers"), "tdsl", false) {
        let bytes = std::fs::read(path.with_extension("safetensors")).expect("the reference of every model");
        let file = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors file");
        let get =
            |name: &str| st_tensor(&file.tensor(name).unwrap_or_else(|_| panic!("{}: no {name}", path.display())));
        let checked = check_path(&path);
        assert!(checked.diagnostics.is_empty(), "{}:\n{}", path.display(), rendered(&checked));
        let graph = &checked.graphs[0];
        let expected = file.names().into_iter().filter(|n| n.starts_with("expected.")).count();
        assert_eq!(expected, graph.outputs.len(), "{}: one expected value per output", path.display());
        let (inputs, params) = inputs_and_params(graph, &get);
        let mut sides = vec![(
            "interpreter".to_string(),
            interp::run(graph, &inputs, &params).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )];
        for target in crate::gpu::profiles() {
            let outputs = crate::gpu::run_gpu_for(graph, &inputs, &params, &options(true, target))
                .unwrap_or_else(|e| panic!("{} (GPU, {} profile): {e}", path.display(), target.name));
            sides.push((format!("GPU, {} profile", target.name), outputs));
        }
        for (side, outputs) in &sides {
            for (output, got) in graph.outputs.iter().zip(outputs) {
                let want = get(&format!("expected.{}", output.name));
                assert_eq!(got.shape, want.shape, "{}: {}", path.display(), output.name);
                let (largest, ok) = compare(got, &want).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                println!("{} ({side}): {}: largest error {largest:e}", path.display(), output.name);
                compared += 1;
                if !ok {
                    failures.push(format!(
                        "{} ({side}): {}: off by up to {largest:e}, more than {ATOL:e} + {RTOL:e} |want|",
                        path.display(),
                        output.name
                    ));
                }
            }
        }
    }
    assert!(compared >= 2 * 48, "compared {compared} outputs");
    assert!(failures.is_empty(), "outputs differ from PyTorch's:\n{}", failures.join("\n"));
}

/// std/nn's LSTM unrolls its time steps when the model is checked: over a sequence whose length is symbolic,
/// that is one E0203 at the loop (with the user's call labelled), not a panic or a cascade of shape errors.
#[test]
fn lstm_over_a_symbolic_sequence_is_one_error() {
    let text =
        "import \"std/nn\"\nmodel m(x: f32[T, 2, 3]) -> (y: f32[T, 2, 4]) {\n    (y, h, c) = LSTM[\"lstm\"](x, 4)\n}\n";
    let checked = crate::util::check_text("lstm.tdsl", text);
    let codes: Vec<_> = checked.diagnostics.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["E0203"], "{}", rendered(&checked));
    let shown = rendered(&checked);
    assert!(shown.contains("in this call of `LSTM`") && shown.contains("symbolic dimension T"), "{shown}");
}
