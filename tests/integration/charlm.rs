//! A small transformer trains as PyTorch trains it: `examples/charlm` (a one-layer causal character-level
//! language model) on windows of spec/language.md (`tests/fixtures/train/charlm_data.safetensors`), with AdamW
//! from PyTorch's initial weights, split and batch order (`tests/fixtures/train/charlm_adamw.safetensors`;
//! both written by `scripts/charlm-reference.py`). Checked: the loss of each of the first 20 steps, the params
//! after 20 steps, and the validation loss after each of 5 epochs, which must fall.
//!
//! Not checked against PyTorch: the validation accuracy (the reference has none). It once read low on lavapipe,
//! which ends every loop of an invocation after 65535 iterations; long reductions now split across a
//! workgroup and a launch over a device's loop limit is refused (spec/runtime.md G3.1a, G8.6).

use std::collections::HashMap;
use std::path::Path;

use tdsl_compiler::pipeline::Optimizer;
use tdsl_runtime::data::Dataset;
use tdsl_runtime::train::{self, Trainer};
use tdsl_runtime::{Program, Tensor, Weights};

use crate::gpu::gpu;
use crate::train::{compiled, mean_output, named};

const KEY_BIAS: &str = "layer.attn.key.bias";
const ADAMW: Optimizer = Optimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decoupled: true };

/// The training step and the forward pass of examples/charlm/charlm.tdsl, compiled.
fn programs() -> (Program, Program) {
    compiled(Path::new("../examples/charlm/charlm.tdsl"), "charlm", ADAMW)
}

/// The largest relative L2 distance from `want` of one param of `got` whose key passes `which`.
fn relative_distance(got: &HashMap<String, Tensor>, want: &HashMap<String, Tensor>, which: fn(&str) -> bool) -> f64 {
    let mut worst = 0.0f64;
    for (key, want) in want.iter().filter(|(key, _)| which(key)) {
        let got = got.get(key).unwrap_or_else(|| panic!("param `{key}` is missing")).to_f64_vec();
        let want = want.to_f64_vec();
        assert_eq!(got.len(), want.len(), "param `{key}`");
        let diff: f64 = got.iter().zip(&want).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = want.iter().map(|y| y * y).sum::<f64>().sqrt();
        worst = worst.max(diff / norm.max(1e-30));
    }
    worst
}

/// Tolerances as for the digits (tests/integration/train.rs): the first 20 losses within 1e-5 relative, the
/// params after 20 steps within 1e-4 relative L2 per param; the validation losses within 1e-4 relative. The
/// key projection's bias is the exception (1e-3): it adds `q . bias` to every score of a query's row, which
/// the softmax cancels, so its gradient is zero but for rounding (about 5e-11 against 1e-3 for the other
/// attention params), and Adam turns that noise into steps of up to lr * 0.005 whose signs differ between
/// PyTorch and tdsl (3.5e-4 relative after 20 steps).
#[test]
fn charlm_training_matches_pytorch_step_by_step() {
    let data = Dataset::from_safetensors(Path::new("fixtures/train/charlm_data.safetensors")).expect("the data");
    let (training, validation) = data.split(0.1, 0).expect("the split");
    assert_eq!((training.samples(), validation.samples()), (548, 61), "PyTorch's split sizes");
    let all = Weights::open(Path::new("fixtures/train/charlm_adamw.safetensors"))
        .and_then(|w| w.tensors())
        .expect("the reference reads");
    let prefixed = |prefix: &str| -> HashMap<String, Tensor> {
        all.iter().filter_map(|(k, t)| Some((k.strip_prefix(prefix)?.to_string(), t.clone()))).collect()
    };
    let floats = |name: &str| all[name].as_f32().expect("f32").to_vec();
    let (want_losses, want_val) = (floats("losses"), floats("val_loss"));

    let (step, forward) = programs();
    let start = train::initial_params(&step, &prefixed("init."), 0).expect("initial params");
    let mut trainer = Trainer::new(gpu(), &step, None, &start).expect("the trainer loads");
    let (mut losses, mut val, mut step20, mut key_bias) = (Vec::new(), Vec::new(), f64::NAN, f64::NAN);
    for epoch in 0..want_val.len() as u64 {
        for batch in training.batches(32, Some(epoch), false).expect("batches") {
            let read: &[&str] = if trainer.steps() < 20 { &["loss"] } else { &[] };
            let out = trainer.step(&named(&batch), 0.003, read).expect("a training step");
            if let Some(loss) = out.first() {
                losses.push(loss.to_f64_vec()[0]);
            }
            if trainer.steps() == 20 {
                let params: HashMap<String, Tensor> = trainer.params().expect("params").into_iter().collect();
                let want = prefixed("step20.");
                step20 = relative_distance(&params, &want, |key| key != KEY_BIAS);
                key_bias = relative_distance(&params, &want, |key| key == KEY_BIAS);
            }
        }
        let params: HashMap<String, Tensor> = trainer.params().expect("params").into_iter().collect();
        val.push(mean_output(&forward, &params, &validation, 32, "loss"));
    }
    assert_eq!(trainer.steps(), 90, "5 epochs of 18 batches");
    assert_eq!(losses.len(), 20);
    let worst = losses
        .iter()
        .zip(&want_losses)
        .map(|(got, &want)| (got - f64::from(want)).abs() / f64::from(want).abs())
        .fold(0.0, f64::max);
    assert!(worst <= 1e-5, "the first 20 losses differ by up to {worst:e} relative");
    assert!(step20 <= 1e-4, "params after 20 steps differ by {step20:e} relative L2");
    assert!(key_bias <= 1e-3, "{KEY_BIAS} after 20 steps differs by {key_bias:e} relative L2");
    for (epoch, (got, &want)) in val.iter().zip(&want_val).enumerate() {
        let rel = (got - f64::from(want)).abs() / f64::from(want);
        assert!(rel <= 1e-4, "validation loss after epoch {}: {got}, PyTorch's {want}", epoch + 1);
    }
    assert!(val[val.len() - 1] < 0.5 * f64::from(want_losses[0]), "the validation loss falls: {val:?}");
    eprintln!(
        "charlm: losses within {worst:.1e} relative, step 20 params {step20:.1e} ({KEY_BIAS} {key_bias:.1e}); \
         validation loss by epoch {:?}",
        val.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>()
    );
}
