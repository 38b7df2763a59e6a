//! Training against PyTorch, step by step: `examples/digits` (a CNN and an MLP) trained with SGD with
//! momentum and with AdamW from the initial weights, split and batch order PyTorch used
//! (`tests/fixtures/train/*.safetensors`, written by `scripts/digits-reference.py`). Checked: the loss of each
//! of the first 50 steps, the params after 50 steps, and after the full run (20 epochs, 460 steps) the test
//! accuracy and the params. Also: resuming from a checkpoint continues exactly, a training bundle trains with
//! the runtime alone, and initialisers draw PyTorch's distributions. The step-by-step check and the training
//! bundle run on the GPU and on the CPU executor (the same tolerances), `tdslc train --device cpu` too.
//!
//! The data come from `scripts/fetch-digits.sh` (scripts/test runs it; the cache lies outside the clone).
//! Without them the test fails and says how to get them; it never skips.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tdsl_compiler::driver::Root;
use tdsl_compiler::pipeline::{self, Optimizer, TrainSpec};
use tdsl_runtime::data::Dataset;
use tdsl_runtime::train::{self, Trainer};
use tdsl_runtime::{ExecutorRef, Program, Tensor, Weights};

use crate::gpu::gpu;

use crate::util;

/// The digits dataset `scripts/fetch-digits.sh` caches.
fn digits() -> Dataset {
    let path = PathBuf::from(digits_path());
    assert!(path.exists(), "the digits dataset is not at `{}`: run `scripts/fetch-digits.sh`", path.display());
    Dataset::from_safetensors(&path).expect("the digits dataset reads")
}

/// One PyTorch reference run.
struct Reference {
    init: HashMap<String, Tensor>,
    step50: HashMap<String, Tensor>,
    last: HashMap<String, Tensor>,
    losses: Vec<f32>,
    test_accuracy: Vec<f32>,
}

fn reference(model: &str, optimizer: &str) -> Reference {
    let path = format!("fixtures/train/digits_{model}_{optimizer}.safetensors");
    let all = Weights::open(Path::new(&path)).and_then(|w| w.tensors()).expect("the reference reads");
    let prefixed = |prefix: &str| -> HashMap<String, Tensor> {
        all.iter().filter_map(|(k, t)| Some((k.strip_prefix(prefix)?.to_string(), t.clone()))).collect()
    };
    let floats = |name: &str| all[name].as_f32().expect("f32").to_vec();
    Reference {
        init: prefixed("init."),
        step50: prefixed("step50."),
        last: prefixed("final."),
        losses: floats("losses"),
        test_accuracy: floats("test_accuracy"),
    }
}

/// The training step and the forward pass of `examples/digits/<model>.tdsl`, compiled.
fn programs(model: &str, optimizer: Optimizer) -> (Program, Program) {
    compiled(Path::new(&format!("../examples/digits/{model}.tdsl")), model, optimizer)
}

/// The training step (loss `loss`) and the forward pass of `model` in `path`, compiled.
pub fn compiled(path: &Path, model: &str, optimizer: Optimizer) -> (Program, Program) {
    let spec = TrainSpec { model: model.to_string(), loss: "loss".into(), optimizer, clip_norm: None };
    let checked = pipeline::check_training(Root::Path(path), &spec);
    assert_eq!(checked.errors(), 0, "{}", util::rendered(&checked));
    let step = util::compile(&checked.graphs[0]).expect("the training step compiles").program;
    let forward = util::check_path(path);
    let forward = util::compile(&forward.graphs[0]).expect("the forward pass compiles").program;
    (step, forward)
}

const SGD: Optimizer = Optimizer::Sgd { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.0 };
const ADAMW: Optimizer = Optimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decoupled: true };

/// The batch inputs of a dataset batch.
pub fn named(batch: &Dataset) -> Vec<(&str, &Tensor)> {
    batch.arrays().iter().map(|(n, t)| (n.as_str(), t)).collect()
}

/// The mean over the samples of `data` of the scalar output `output` of the forward pass with `params`, in
/// batches of `batch` (as `tdslc train` validates).
pub fn mean_output(
    forward: &Program,
    params: &HashMap<String, Tensor>,
    data: &Dataset,
    batch: usize,
    output: &str,
) -> f64 {
    mean_output_on(gpu(), forward, params, data, batch, output)
}

/// `mean_output` on `executor`.
pub fn mean_output_on<'a>(
    executor: impl Into<ExecutorRef<'a>>,
    forward: &'a Program,
    params: &HashMap<String, Tensor>,
    data: &Dataset,
    batch: usize,
    output: &str,
) -> f64 {
    let mut model = executor.into().load(forward, &Default::default(), params).expect("the forward pass loads");
    let (mut total, mut seen) = (0.0, 0);
    for batch in data.batches(batch, None, false).expect("batches") {
        let outputs = model.run_named(&named(&batch)).expect("runs");
        let value = outputs.iter().find(|(n, _)| n == output).expect("the output").1.to_f64_vec()[0];
        total += value * batch.samples() as f64;
        seen += batch.samples();
    }
    total / seen as f64
}

/// Largest |a - b| over every param, and the largest relative L2 distance of one param.
fn distance(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> (f64, f64) {
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for (key, want) in b {
        let got = a.get(key).unwrap_or_else(|| panic!("param `{key}` is missing"));
        let (got, want) = (got.to_f64_vec(), want.to_f64_vec());
        assert_eq!(got.len(), want.len(), "param `{key}`");
        let diff: f64 = got.iter().zip(&want).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = want.iter().map(|y| y * y).sum::<f64>().sqrt();
        max_rel = max_rel.max(diff / norm.max(1e-30));
        max_abs = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(max_abs, f64::max);
    }
    (max_abs, max_rel)
}

/// Tolerances (the issue asks for losses within 1e-4 relative and accuracy within 0.5 points): losses of
/// the first 50 steps within 1e-5 relative; params after 50 steps within 1e-4 relative L2 per param; after
/// 460 steps, SGD's params within 1e-4 relative L2 and AdamW's within 5e-2 (Adam divides by the root of the
/// second moment, so float rounding in parameters whose gradients are nearly zero grows step by step; the
/// losses and accuracy still agree); final test accuracy within 0.5 percentage points.
#[test]
fn digits_training_matches_pytorch_step_by_step() {
    digits_training_matches_pytorch_on(gpu().into());
}

/// The same check, with the same tolerances, on the CPU executor.
#[test]
fn digits_training_on_the_cpu_executor_matches_pytorch_step_by_step() {
    digits_training_matches_pytorch_on(crate::gpu::cpu().into());
}

fn digits_training_matches_pytorch_on<'a>(executor: ExecutorRef<'a>) {
    let (training, test) = digits().split(0.2, 0).expect("the split");
    assert_eq!((training.samples(), test.samples()), (1438, 359), "PyTorch's split sizes");
    let mut report = Vec::new();
    for (model, name, optimizer, lr, final_tolerance) in [
        ("cnn", "sgd", SGD, 0.05, 1e-4),
        ("cnn", "adamw", ADAMW, 0.003, 5e-2),
        ("mlp", "sgd", SGD, 0.05, 1e-4),
        ("mlp", "adamw", ADAMW, 0.003, 5e-2),
    ] {
        let want = reference(model, name);
        let (step, forward) = programs(model, optimizer);
        let start = train::initial_params(&step, &want.init, 0).expect("initial params");
        let mut trainer = Trainer::new(executor, &step, None, &start).expect("the trainer loads");
        let mut losses = Vec::new();
        for epoch in 0..20 {
            for batch in training.batches(64, Some(epoch), false).expect("batches") {
                let read: &[&str] = if trainer.steps() < 50 { &["loss"] } else { &[] };
                let out = trainer.step(&named(&batch), lr, read).expect("a training step");
                if let Some(loss) = out.first() {
                    losses.push(loss.to_f64_vec()[0]);
                }
                if trainer.steps() == 50 {
                    let params: HashMap<String, Tensor> = trainer.params().expect("params").into_iter().collect();
                    let (abs, rel) = distance(&params, &want.step50);
                    assert!(rel <= 1e-4, "{model} {name}: params after 50 steps differ by {rel:e} relative ({abs:e})");
                    report.push(format!("{model} {name}: step 50 params {rel:.1e} relative, {abs:.1e} absolute"));
                }
            }
        }
        assert_eq!(trainer.steps(), 460, "20 epochs of 23 batches");
        let worst = losses
            .iter()
            .zip(&want.losses)
            .map(|(got, &want)| (got - f64::from(want)).abs() / f64::from(want).abs())
            .fold(0.0, f64::max);
        assert_eq!(losses.len(), 50);
        assert!(worst <= 1e-5, "{model} {name}: the first 50 losses differ by up to {worst:e} relative");
        let params: HashMap<String, Tensor> = trainer.params().expect("params").into_iter().collect();
        let (abs, rel) = distance(&params, &want.last);
        assert!(rel <= final_tolerance, "{model} {name}: final params differ by {rel:e} relative L2 ({abs:e})");
        let got = mean_output_on(executor, &forward, &params, &test, 64, "accuracy");
        let torch = f64::from(*want.test_accuracy.last().expect("accuracies"));
        assert!((got - torch).abs() <= 0.005, "{model} {name}: test accuracy {got:.4}, PyTorch's {torch:.4}");
        report.push(format!(
            "{model} {name}: losses {worst:.1e}, final params {rel:.1e} rel ({abs:.1e} abs), test accuracy {:.2}% \
             (PyTorch {:.2}%)",
            got * 100.0,
            torch * 100.0
        ));
    }
    eprintln!("{}:\n{}", executor.describe(), report.join("\n"));
}

/// The digits dataset's path (`scripts/fetch-digits.sh`'s cache), for `tdslc train --data`.
fn digits_path() -> String {
    let dir = std::env::var_os("TDSL_DIGITS_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"));
        cache.join("tdsl/digits")
    });
    dir.join("digits.safetensors").display().to_string()
}

/// Every tensor of a checkpoint (params and optimizer state).
fn checkpoint(path: &Path) -> HashMap<String, Tensor> {
    train::load_checkpoint(path).expect("the checkpoint reads")
}

/// Train 20 steps = train 10, save, resume, train 10: identical params and optimizer state, bit for bit.
#[test]
fn resuming_a_checkpoint_continues_exactly() {
    for device in ["gpu", "cpu"] {
        resuming_continues_exactly_on(device);
    }
}

/// `resuming_a_checkpoint_continues_exactly` with `tdslc train --device DEVICE`.
fn resuming_continues_exactly_on(device: &str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = digits_path();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let base = [
        "train",
        "../examples/digits/mlp.tdsl",
        "--data",
        &data,
        "--optimizer",
        "adamw",
        "--lr",
        "0.003",
        "--batch-size",
        "64",
        "--epochs",
        "2",
        "--lr-schedule",
        "cosine",
        "--warmup-steps",
        "5",
        "--device",
        device,
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, out, err) = crate::cli::tdslc(&args);
        assert_eq!(code, 0, "tdslc {}:\n{out}{err}", args.join(" "));
        let note = if device == "cpu" { "note: running on the CPU executor (" } else { "note: running on " };
        assert!(err.contains(note), "{err}");
    };
    // 30 steps crosses the end of the first epoch (23 batches), so the resumed run restarts mid-epoch.
    let (straight, first, second) = (at("straight.safetensors"), at("first.safetensors"), at("second.safetensors"));
    let (metrics, plot) = (at("metrics.jsonl"), at("training.svg"));
    run(&["--max-steps", "30", "--save", &straight, "--metrics", &metrics, "--plot", &plot]);
    // Metrics: steps 10, 20, the end of epoch 1 (23) and 30, each with its loss, and one line per epoch.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .expect("the metrics file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let steps: Vec<u64> =
        lines.iter().filter(|l| l.get("loss").is_some()).map(|l| l["step"].as_u64().expect("step")).collect();
    assert_eq!(steps, [10, 20, 23, 30]);
    assert!(lines.iter().filter(|l| l.get("loss").is_some()).all(|l| l["loss"].as_f64().is_some_and(f64::is_finite)));
    let epochs: Vec<u64> =
        lines.iter().filter(|l| l.get("val_loss").is_some()).map(|l| l["epoch"].as_u64().expect("epoch")).collect();
    assert_eq!(epochs, [1, 2], "one line per finished epoch and one at the end");
    let svg = std::fs::read_to_string(&plot).expect("the plot");
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(80)]);
    assert_eq!(svg.matches("<polyline").count(), 4, "loss and accuracy, training and validation");
    run(&["--max-steps", "12", "--save", &first]);
    run(&["--max-steps", "30", "--resume", &first, "--save", &second]);
    let (a, b) = (checkpoint(Path::new(&straight)), checkpoint(Path::new(&second)));
    assert_eq!(a.len(), b.len());
    assert_eq!(a[train::STEP_KEY].as_f32(), Some(&[30.0f32][..]), "the step count is saved");
    for (key, tensor) in &a {
        assert_eq!(Some(tensor), b.get(key), "{device}: `{key}` differs after resuming");
    }
    // The params file alone is what `tdslc run --weights` and PyTorch's load_state_dict read.
    let params = Weights::open(Path::new(&straight)).expect("opens");
    let keys: Vec<&str> = params.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(keys, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
    let (code, out, err) = crate::cli::tdslc(&["run", "../examples/digits/mlp.tdsl", "--weights", &straight]);
    assert_eq!(code, 0, "{out}{err}");
}

/// `tdslc train --profile` times each launch of one step on either executor: the header counts the launches
/// and gives their total, and every listed launch has a time and a share of it.
#[test]
fn a_training_step_is_profiled_on_both_executors() {
    let data = digits_path();
    for device in ["gpu", "cpu"] {
        let args = [
            "train",
            "../examples/digits/mlp.tdsl",
            "--data",
            &data,
            "--max-steps",
            "2",
            "--profile",
            "--device",
            device,
        ];
        let (code, out, err) = crate::cli::tdslc(&args);
        assert_eq!(code, 0, "{device}:\n{out}{err}");
        let header = out.lines().find(|l| l.starts_with("profile of one step (")).unwrap_or_else(|| panic!("{out}"));
        let launches: usize = header["profile of one step (".len()..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{header}"));
        assert!(launches > 3, "{header}");
        let rows: Vec<&str> = out
            .lines()
            .skip_while(|l| !l.starts_with("profile of one step ("))
            .skip(1)
            .take_while(|l| l.contains(" ms "))
            .collect();
        assert_eq!(rows.len(), launches.min(12), "{out}");
        for row in rows {
            let ms: f64 = row.split_whitespace().next().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("{row}"));
            assert!(ms >= 0.0 && row.contains('%'), "{row}");
        }
        if device == "cpu" {
            assert!(header.contains("wall"), "{header}");
        }
    }
}

/// `tdslc build --train` bundles the training step; the runtime alone (no compiler types) trains with it and
/// takes the same first steps as PyTorch.
#[test]
fn a_training_bundle_trains_with_the_runtime_alone() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bundle = dir.path().join("mlp.tdslb").display().to_string();
    let (code, out, err) = crate::cli::tdslc(&[
        "build",
        "../examples/digits/mlp.tdsl",
        "-o",
        &bundle,
        "--train",
        "mlp",
        "--optimizer",
        "sgd",
        "--momentum",
        "0.9",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let bundle = tdsl_runtime::Bundle::read(Path::new(&bundle)).expect("the bundle reads");
    let names: Vec<&str> = bundle.models.iter().map(|m| m.program.name.as_str()).collect();
    assert_eq!(names, ["mlp", "mlp.train"]);
    let model = bundle.model(Some("mlp.train")).expect("the training step");
    assert!(!model.program.updates.is_empty() && !model.program.inits.is_empty());
    let want = reference("mlp", "sgd");
    let start = train::initial_params(&model.program, &want.init, 0).expect("initial params");
    let (training, _) = digits().split(0.2, 0).expect("the split");
    let executors: [ExecutorRef; 2] = [gpu().into(), crate::gpu::cpu().into()];
    for executor in executors {
        let mut trainer = Trainer::new(executor, &model.program, Some(&model.buffer_slots), &start).expect("loads");
        for (k, batch) in training.batches(64, Some(0), false).expect("batches").iter().take(8).enumerate() {
            let loss = trainer.step(&named(batch), 0.05, &["loss"]).expect("a step")[0].to_f64_vec()[0];
            let torch = f64::from(want.losses[k]);
            let at = executor.describe();
            assert!((loss - torch).abs() <= 1e-5 * torch.abs(), "{at}: step {}: loss {loss}, PyTorch {torch}", k + 1);
        }
    }
}

/// Without weights, params start from their declared initialisers (std/nn: PyTorch's defaults) drawn from
/// the seed, optimizer state at zero; a param with no initialiser and no weights is an error naming it.
#[test]
fn initialisers_draw_pytorch_default_distributions() {
    let (step, _) = programs("cnn", ADAMW);
    let a = train::initial_params(&step, &HashMap::new(), 7).expect("initial params");
    let b = train::initial_params(&step, &HashMap::new(), 7).expect("initial params");
    let c = train::initial_params(&step, &HashMap::new(), 8).expect("initial params");
    assert_eq!(a, b, "the same seed gives the same params");
    assert_ne!(a["conv1.weight"], c["conv1.weight"], "another seed gives other params");
    // Linear and Conv2d: uniform on +-1/sqrt(fan_in), so the standard deviation is bound / sqrt(3).
    for (key, fan_in) in [("conv1.weight", 9.0), ("conv2.weight", 72.0), ("fc.weight", 64.0), ("fc.bias", 64.0)] {
        let v = a[key].to_f64_vec();
        let bound = 1.0 / f64::sqrt(fan_in);
        assert!(v.iter().all(|x| x.abs() <= bound), "{key} leaves +-{bound}");
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        if v.len() >= 500 {
            let want = bound / f64::sqrt(3.0);
            assert!((std - want).abs() <= 0.1 * want, "{key}: std {std}, want {want}");
            assert!(mean.abs() <= 0.1 * bound, "{key}: mean {mean}");
        }
    }
    assert!(a["optim.step"].to_f64_vec() == [0.0]);
    assert!(a["optim.exp_avg.fc.weight"].to_f64_vec().iter().all(|&x| x == 0.0));
    // Embedding: N(0, 1); LayerNorm: ones and zeros; a bare param: an error naming it.
    let text = "import \"std/nn\"\n\
                model m(ids: i32[B], x: f32[B, 16]) -> (loss: f32[]) {\n\
                    param scale: f32[16]\n\
                    e = Embedding[\"emb\"](ids, 1000, 16)\n\
                    loss = mean(LayerNorm[\"norm\"](e + x * scale))\n\
                }\n";
    let checked = pipeline::check_training(
        Root::Text { name: "m.tdsl", text },
        &TrainSpec { model: "m".into(), loss: "loss".into(), optimizer: SGD, clip_norm: None },
    );
    assert_eq!(checked.errors(), 0, "{}", util::rendered(&checked));
    let step = util::compile(&checked.graphs[0]).expect("compiles").program;
    let err = train::initial_params(&step, &HashMap::new(), 0).expect_err("`scale` has no initialiser");
    assert!(err.to_string().contains("param `scale` has no initialiser: give its weights"), "{err}");
    let given = HashMap::from([("scale".to_string(), Tensor::f32(&[16], vec![1.0; 16]))]);
    let p = train::initial_params(&step, &given, 0).expect("initial params");
    let e = p["emb.weight"].to_f64_vec();
    let mean = e.iter().sum::<f64>() / e.len() as f64;
    let std = (e.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / e.len() as f64).sqrt();
    assert!(mean.abs() < 0.03 && (std - 1.0).abs() < 0.03, "embedding: mean {mean}, std {std}");
    assert!(p["norm.weight"].to_f64_vec().iter().all(|&x| x == 1.0));
    assert!(p["norm.bias"].to_f64_vec().iter().all(|&x| x == 0.0));
}

/// E0505: the loss must be a scalar float output of the model.
#[test]
fn a_model_without_a_scalar_loss_cannot_be_trained() {
    let data = digits_path();
    let (code, _, err) = crate::cli::tdslc(&["train", "../examples/digits/mlp.tdsl", "--data", &data, "--loss", "los"]);
    assert_eq!(code, 1);
    assert!(err.contains("error[E0505]: model `mlp` has no output `los`") && err.contains("loss, accuracy"), "{err}");
    let text =
        "model m(x: f32[B, 4]) -> (y: f32[B]) {\n    param w: f32[4] = zeros()\n    y = sum(x * w, axis: 1)\n}\n";
    let checked = pipeline::check_training(
        Root::Text { name: "m.tdsl", text },
        &TrainSpec { model: "m".into(), loss: "y".into(), optimizer: SGD, clip_norm: None },
    );
    let codes: Vec<&str> = checked.diagnostics.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["E0501"], "{}", util::rendered(&checked));
}

/// The runtime's learning-rate schedules against torch.optim.lr_scheduler (the values std/optim's schedule
/// functions are checked against: `fixtures/torch/optim.safetensors`, scripts/grad-reference.py).
#[test]
fn learning_rate_schedules_match_torch() {
    use tdsl_runtime::train::{EpochSchedule, LrSchedule};
    let all = Weights::open(Path::new("fixtures/torch/optim.safetensors")).and_then(|w| w.tensors()).expect("reads");
    let base = LrSchedule { base: 0.1, per_epoch: EpochSchedule::Constant, warmup_steps: 0, warmup_start: 1.0 / 3.0 };
    let cases = [
        ("lr_step", LrSchedule { per_epoch: EpochSchedule::Step { step_size: 3, gamma: 0.5 }, ..base }, true),
        ("lr_cosine", LrSchedule { per_epoch: EpochSchedule::Cosine { t_max: 10, eta_min: 0.001 }, ..base }, true),
        ("lr_warmup", LrSchedule { warmup_steps: 4, warmup_start: 0.25, ..base }, false),
    ];
    for (name, schedule, per_epoch) in cases {
        let want = all[&format!("expected.{name}")].to_f64_vec();
        for (t, want) in want.iter().enumerate() {
            let t = t as u64;
            let got = if per_epoch { schedule.at(0, t) } else { schedule.at(t, 0) };
            assert!((got - want).abs() <= 1e-7, "{name} at {t}: {got}, torch {want}");
        }
    }
}

/// Every optimizer and option of the training step against torch.optim's update formulas, on a model whose
/// gradient is known exactly (`loss = sum(w * x) + 0.5 * sum(w * w)`: the gradient is `x + w`), for four
/// steps on the GPU; with clipping, the update of plain SGD has the global norm `lr * max_norm`.
#[test]
fn every_optimizer_option_follows_torch_formulas() {
    let text = "model lin(x: f32[4]) -> (loss: f32[]) {\n\
                    param w: f32[4] = constant(0.5)\n\
                    param v: f32[2, 2] = constant(-0.25)\n\
                    loss = sum(w * x) + 0.5 * sum(w * w) + sum(v * v)\n\
                }\n";
    let x = [1.0f64, -2.0, 0.5, 3.0];
    // torch.optim, in f64: the state and the params after each step.
    #[derive(Clone, Copy)]
    enum Kind {
        Sgd { momentum: f64, dampening: f64, nesterov: bool, wd: f64 },
        Adam { wd: f64, decoupled: bool },
    }
    let torch = |kind: Kind, lr: f64, steps: usize| -> Vec<f64> {
        let mut p = vec![0.5; 4];
        p.extend([-0.25; 4]);
        let grad = |p: &[f64]| -> Vec<f64> { (0..8).map(|i| if i < 4 { x[i] + p[i] } else { 2.0 * p[i] }).collect() };
        let (mut buf, mut m, mut v) = (vec![0.0; 8], vec![0.0; 8], vec![0.0; 8]);
        for t in 1..=steps {
            let g = grad(&p);
            for i in 0..8 {
                match kind {
                    Kind::Sgd { momentum, dampening, nesterov, wd } => {
                        let d = g[i] + wd * p[i];
                        let d = if momentum == 0.0 {
                            d
                        } else {
                            buf[i] = if t == 1 { d } else { momentum * buf[i] + (1.0 - dampening) * d };
                            if nesterov { d + momentum * buf[i] } else { buf[i] }
                        };
                        p[i] -= lr * d;
                    }
                    Kind::Adam { wd, decoupled } => {
                        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
                        let gi = if decoupled { g[i] } else { g[i] + wd * p[i] };
                        if decoupled {
                            p[i] *= 1.0 - lr * wd;
                        }
                        m[i] = b1 * m[i] + (1.0 - b1) * gi;
                        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                        let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
                        p[i] -= lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + eps);
                    }
                }
            }
        }
        p
    };
    let cases = [
        (
            Optimizer::Sgd { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.1 },
            Kind::Sgd { momentum: 0.0, dampening: 0.0, nesterov: false, wd: 0.1 },
        ),
        (
            Optimizer::Sgd { momentum: 0.8, dampening: 0.3, nesterov: false, weight_decay: 0.0 },
            Kind::Sgd { momentum: 0.8, dampening: 0.3, nesterov: false, wd: 0.0 },
        ),
        (
            Optimizer::Sgd { momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 0.05 },
            Kind::Sgd { momentum: 0.9, dampening: 0.0, nesterov: true, wd: 0.05 },
        ),
        (
            Optimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1, decoupled: false },
            Kind::Adam { wd: 0.1, decoupled: false },
        ),
        (
            Optimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1, decoupled: true },
            Kind::Adam { wd: 0.1, decoupled: true },
        ),
    ];
    let input = Tensor::f32(&[4], x.iter().map(|&v| v as f32).collect());
    for (optimizer, kind) in cases {
        let spec = TrainSpec { model: "lin".into(), loss: "loss".into(), optimizer, clip_norm: None };
        let checked = pipeline::check_training(Root::Text { name: "lin.tdsl", text }, &spec);
        assert_eq!(checked.errors(), 0, "{}", util::rendered(&checked));
        let step = util::compile(&checked.graphs[0]).expect("compiles").program;
        let start = train::initial_params(&step, &HashMap::new(), 0).expect("initial params");
        let mut trainer = Trainer::new(gpu(), &step, None, &start).expect("loads");
        for _ in 0..4 {
            trainer.step(&[("x", &input)], 0.01, &[]).expect("a step");
        }
        let params: HashMap<String, Tensor> = trainer.params().expect("params").into_iter().collect();
        let got: Vec<f64> = params["w"].to_f64_vec().into_iter().chain(params["v"].to_f64_vec()).collect();
        let want = torch(kind, 0.01, 4);
        util::assert_close(&got, &want, 1e-6, 1e-5);
    }
    // Clipping: plain SGD with lr 1 moves the params by exactly the clipped gradient.
    let spec = TrainSpec {
        model: "lin".into(),
        loss: "loss".into(),
        optimizer: Optimizer::Sgd { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 },
        clip_norm: Some(0.01),
    };
    let checked = pipeline::check_training(Root::Text { name: "lin.tdsl", text }, &spec);
    let step = util::compile(&checked.graphs[0]).expect("compiles").program;
    let start = train::initial_params(&step, &HashMap::new(), 0).expect("initial params");
    let mut trainer = Trainer::new(gpu(), &step, None, &start).expect("loads");
    trainer.step(&[("x", &input)], 1.0, &[]).expect("a step");
    let after: HashMap<String, Tensor> = trainer.params().expect("params").into_iter().collect();
    let moved: f64 = ["w", "v"]
        .iter()
        .flat_map(|k| after[*k].to_f64_vec().into_iter().zip(start[*k].to_f64_vec()).map(|(a, b)| (a - b).powi(2)))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = [1.5f64, -1.5, 1.0, 3.5].iter().map(|g| g * g).sum::<f64>() + 4.0 * 0.25;
    let want = 0.01 * norm.sqrt() / (norm.sqrt() + 1e-6);
    assert!((moved - want).abs() <= 1e-6, "clipped update of norm {moved}, want {want}");
}

/// A BF16 or F16 checkpoint (how most models are published) runs like the f32 file of the same values, on the
/// GPU and on the reference interpreter: both widen exactly into the model's f32 params.
#[test]
fn half_precision_weights_load_into_f32_params() {
    use safetensors::{Dtype, tensor::TensorView};
    let init = reference("mlp", "sgd").init;
    let mut keys: Vec<&String> = init.keys().collect();
    keys.sort();
    let dir = tempfile::tempdir().expect("a temporary directory");
    for dtype in [Dtype::BF16, Dtype::F16] {
        // Each value rounded to the half it is stored as (BF16 truncated); the f32 file holds the same numbers.
        let half = |x: f32| -> (u16, f32) {
            if dtype == Dtype::BF16 {
                let bits = (x.to_bits() >> 16) as u16;
                (bits, f32::from_bits(u32::from(bits) << 16))
            } else {
                let h = half::f16::from_f32(x);
                (h.to_bits(), h.to_f32())
            }
        };
        type Halves = (String, Vec<usize>, Vec<u8>, Vec<f32>);
        let halves: Vec<Halves> = keys
            .iter()
            .map(|k| {
                let t = &init[*k];
                let (bits, widened): (Vec<u16>, Vec<f32>) = t.as_f32().expect("f32").iter().map(|&x| half(x)).unzip();
                let bytes = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
                (k.to_string(), t.shape.clone(), bytes, widened)
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = halves
            .iter()
            .map(|(k, shape, bytes, _)| (k.clone(), TensorView::new(dtype, shape.clone(), bytes).expect("view")))
            .collect();
        let halved = dir.path().join(format!("{dtype}.safetensors"));
        std::fs::write(&halved, safetensors::serialize(views, None).expect("serializes")).expect("writes");
        let f32_file = dir.path().join(format!("{dtype}-as-f32.safetensors"));
        let tensors: Vec<(String, Tensor)> =
            halves.iter().map(|(k, shape, _, v)| (k.clone(), Tensor::f32(shape, v.clone()))).collect();
        tdsl_runtime::save_safetensors(&f32_file, &tensors).expect("saves");
        for reference in [false, true] {
            let outputs = |weights: &Path| {
                let name = weights.file_stem().unwrap().display().to_string();
                let out = dir.path().join(format!("{name}-{reference}.out.safetensors"));
                let (w, o) = (weights.display().to_string(), out.display().to_string());
                let mut args =
                    vec!["run", "../examples/digits/mlp.tdsl", "--weights", &w, "--dim", "N=8", "--output", &o];
                if reference {
                    args.push("--reference");
                }
                let (code, stdout, stderr) = crate::cli::tdslc(&args);
                assert_eq!(code, 0, "{stdout}{stderr}");
                Weights::open(&out).and_then(|w| w.tensors()).expect("outputs")
            };
            assert_eq!(outputs(&halved), outputs(&f32_file), "{dtype} and f32 weights (reference: {reference})");
        }
    }
}
