//! `tdslc train`: compiles a model's training step (`pipeline::check_training`) and its forward pass, then
//! trains it on a dataset with the runtime's `Trainer`: seeded split and shuffled batches, a learning-rate
//! schedule, a validation pass after every epoch, a progress bar on a terminal, metrics as JSON lines, an SVG
//! plot of the curves and checkpoints that resume exactly (spec/training.md).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use tdsl_runtime::Tensor;
use tdsl_runtime::data::Dataset;
use tdsl_runtime::train::{self, LrSchedule, Trainer};

use crate::driver::Root;
use crate::pipeline::{self, Optimizer, TrainSpec};

/// The options of `tdslc train`.
#[derive(Args)]
pub(super) struct TrainArgs {
    /// The .tdsl file with the model.
    file: PathBuf,
    /// The model to train (default: the only model of FILE).
    #[arg(long, value_name = "NAME")]
    model: Option<String>,
    /// The dataset: a .safetensors or .npz file, or a directory of .npy files; each array is the model input
    /// of its name, its first axis the samples.
    #[arg(long, value_name = "PATH")]
    data: PathBuf,
    /// An output to report as accuracy (default: `accuracy`, when the model has it).
    #[arg(long, value_name = "OUTPUT")]
    accuracy: Option<String>,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    epochs: u64,
    /// Stop after this many steps in all (counting those before `--resume`), even mid-epoch.
    #[arg(long, value_name = "N")]
    max_steps: Option<u64>,
    /// Samples per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Leave out each epoch's last batch when it is shorter than --batch-size.
    #[arg(long)]
    drop_last: bool,
    /// The fraction of the dataset held out for validation (chosen by a shuffle seeded by --seed).
    #[arg(long, default_value_t = 0.2)]
    val_split: f64,
    /// Seed for the initial params, the split and each epoch's shuffle (epoch e shuffles with seed + e).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Initial weights (safetensors, keys as the model's params); params not in it use their initialiser.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Continue from a checkpoint written by --save (params, optimizer state and step count).
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
    /// Write a checkpoint here after every epoch and at the end (the optimizer state beside it, in
    /// NAME.optim.safetensors).
    #[arg(long, value_name = "FILE.safetensors")]
    save: Option<PathBuf>,
    #[command(flatten)]
    step: StepArgs,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning-rate schedule over epochs: constant, step (StepLR) or cosine (CosineAnnealingLR, T_max =
    /// --epochs).
    #[arg(long, value_enum, default_value_t = ScheduleName::Constant)]
    lr_schedule: ScheduleName,
    /// StepLR's step size, in epochs.
    #[arg(long, default_value_t = 10)]
    lr_step_size: u64,
    /// StepLR's gamma.
    #[arg(long, default_value_t = 0.1)]
    lr_gamma: f64,
    /// Linear warm-up over this many steps first (LinearLR from a third of the rate).
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    /// Read the loss back every N steps (the steps between are not waited on for results).
    #[arg(long, value_name = "N", default_value_t = 10)]
    log_every: u64,
    /// Write metrics as JSON lines here (one per logged step and one per epoch).
    #[arg(long, value_name = "FILE.jsonl")]
    metrics: Option<PathBuf>,
    /// Write the loss and accuracy curves as an SVG plot here (rewritten after every epoch).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// After training, time each kernel (launch) of one step on its own and print the slowest (on the CPU
    /// executor: wall time per launch).
    #[arg(long)]
    profile: bool,
    /// Where to train: auto (a real GPU when there is one, else the CPU executor), gpu (any wgpu adapter,
    /// lavapipe included) or cpu (the CPU executor; threads: TDSL_CPU_THREADS, default every core).
    #[arg(long, value_name = "auto|gpu|cpu", default_value = "auto", value_parser = tdsl_runtime::args::parse_device)]
    device: tdsl_runtime::DeviceChoice,
    /// GPU backend: vulkan (default), gl or any; overrides TDSL_BACKEND.
    #[arg(long)]
    backend: Option<String>,
}

/// What the compiled training step is: the loss and the optimizer (`tdslc train`, `tdslc build --train`).
#[derive(Args)]
pub(super) struct StepArgs {
    /// The model's scalar loss output.
    #[arg(long, value_name = "OUTPUT", default_value = "loss")]
    loss: String,
    /// The optimizer, as torch.optim defines it.
    #[arg(long, value_enum, default_value_t = OptimizerName::Adamw)]
    optimizer: OptimizerName,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.0)]
    momentum: f64,
    /// SGD dampening.
    #[arg(long, default_value_t = 0.0)]
    dampening: f64,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// Weight decay (default: 0, or 0.01 for AdamW, as torch.optim).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Adam's beta1.
    #[arg(long, default_value_t = 0.9)]
    beta1: f64,
    /// Adam's beta2.
    #[arg(long, default_value_t = 0.999)]
    beta2: f64,
    /// Adam's eps.
    #[arg(long, default_value_t = 1e-8)]
    eps: f64,
    /// Clip gradients to this global norm (torch.nn.utils.clip_grad_norm_).
    #[arg(long, value_name = "MAX_NORM")]
    clip_norm: Option<f64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerName {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleName {
    Constant,
    Step,
    Cosine,
}

impl StepArgs {
    /// The training step of `model`.
    pub(super) fn spec(&self, model: &str) -> TrainSpec {
        TrainSpec {
            model: model.to_string(),
            loss: self.loss.clone(),
            optimizer: self.optimizer(),
            clip_norm: self.clip_norm,
        }
    }

    fn optimizer(&self) -> Optimizer {
        match self.optimizer {
            OptimizerName::Sgd => Optimizer::Sgd {
                momentum: self.momentum,
                dampening: self.dampening,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay.unwrap_or(0.0),
            },
            OptimizerName::Adam | OptimizerName::Adamw => {
                let decoupled = matches!(self.optimizer, OptimizerName::Adamw);
                Optimizer::Adam {
                    beta1: self.beta1,
                    beta2: self.beta2,
                    eps: self.eps,
                    weight_decay: self.weight_decay.unwrap_or(if decoupled { 0.01 } else { 0.0 }),
                    decoupled,
                }
            }
        }
    }

    /// Problems with the numbers given.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, value, ok) in [
            ("--momentum", self.momentum, self.momentum.is_finite() && self.momentum >= 0.0),
            ("--dampening", self.dampening, self.dampening.is_finite()),
            ("--beta1", self.beta1, (0.0..1.0).contains(&self.beta1)),
            ("--beta2", self.beta2, (0.0..1.0).contains(&self.beta2)),
            ("--eps", self.eps, self.eps.is_finite() && self.eps >= 0.0),
        ] {
            if !ok {
                problems.push(format!("{name} {value} is out of range"));
            }
        }
        if let Some(wd) = self.weight_decay.filter(|wd| !(wd.is_finite() && *wd >= 0.0)) {
            problems.push(format!("--weight-decay {wd} must be finite and at least 0"));
        }
        if let Some(c) = self.clip_norm.filter(|c| !(c.is_finite() && *c > 0.0)) {
            problems.push(format!("--clip-norm {c} must be finite and above 0"));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            problems.push("--nesterov needs --momentum above 0 and no --dampening (as torch.optim.SGD)".into());
        }
        if !matches!(self.optimizer, OptimizerName::Sgd) && (self.momentum != 0.0 || self.nesterov) {
            problems.push("--momentum and --nesterov are SGD's; Adam has --beta1".into());
        }
        problems
    }
}

impl TrainArgs {
    fn schedule(&self) -> LrSchedule {
        let per_epoch = match self.lr_schedule {
            ScheduleName::Constant => train::EpochSchedule::Constant,
            ScheduleName::Step => train::EpochSchedule::Step { step_size: self.lr_step_size, gamma: self.lr_gamma },
            ScheduleName::Cosine => train::EpochSchedule::Cosine { t_max: self.epochs, eta_min: 0.0 },
        };
        LrSchedule { base: self.lr, per_epoch, warmup_steps: self.warmup_steps, warmup_start: 1.0 / 3.0 }
    }

    /// Problems with the numbers given, all at once.
    fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.batch_size == 0 {
            problems.push("--batch-size must be at least 1".to_string());
        }
        if self.epochs == 0 {
            problems.push("--epochs must be at least 1".to_string());
        }
        if self.log_every == 0 {
            problems.push("--log-every must be at least 1".to_string());
        }
        for (name, value, ok) in [
            ("--lr", self.lr, self.lr.is_finite() && self.lr >= 0.0),
            ("--lr-gamma", self.lr_gamma, self.lr_gamma.is_finite()),
        ] {
            if !ok {
                problems.push(format!("{name} {value} is out of range"));
            }
        }
        problems.extend(self.step.problems());
        if matches!(self.lr_schedule, ScheduleName::Step) && self.lr_step_size == 0 {
            problems.push("--lr-step-size must be at least 1".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
    }
}

/// Runs `tdslc train`.
pub(super) fn train(
    args: &TrainArgs,
    color: bool,
    terminal: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Option<String>> {
    args.check().map_err(Some)?;
    // The forward pass (for validation) and the model's name.
    let checked = super::checked_file(&args.file, color, err)?;
    let graphs = super::selected(&args.file, checked.graphs.clone(), args.model.as_deref()).map_err(Some)?;
    let forward = match graphs.as_slice() {
        [graph] => graph.clone(),
        _ => {
            let names: Vec<&str> = graphs.iter().map(|g| g.name.as_str()).collect();
            let file = args.file.display().to_string();
            return Err(Some(tdsl_runtime::args::choose_a_model(&file, &names)));
        }
    };
    let accuracy = match &args.accuracy {
        Some(name) if !forward.outputs.iter().any(|o| &o.name == name) => {
            return Err(Some(format!("model `{}` has no output `{name}` (--accuracy)", forward.name)));
        }
        Some(name) => Some(name.clone()),
        None => forward.outputs.iter().any(|o| o.name == "accuracy").then(|| "accuracy".to_string()),
    };
    let spec = args.step.spec(&forward.name);
    let checked_step = pipeline::check_training(Root::Path(&args.file), &spec);
    if !super::report(&args.file, &checked_step, color, err) {
        return Err(None);
    }
    let step_graph = checked_step
        .graphs
        .iter()
        .find(|g| g.name == forward.name)
        .cloned()
        .ok_or_else(|| Some(format!("model `{}` has no training step", forward.name)))?;

    let executor = super::open_executor(args.device, args.backend.as_deref(), err).map_err(Some)?;
    let target = crate::codegen::Target::for_executor(&executor);
    let options = pipeline::Options { target, ..pipeline::Options::default() };
    let compile = |graph: &crate::ir::Graph, what: &str| {
        let mut compiled = pipeline::compile_graph(graph, &options)
            .map_err(|e| Some(format!("model `{}` ({what}): {e}", graph.name)))?;
        compiled.locate(&checked_step.program.sources);
        Ok::<_, Option<String>>(compiled.program)
    };
    let started = Instant::now();
    let step_program = compile(&step_graph, "training step")?;
    let forward_program = compile(&forward, "forward pass")?;
    let _ = writeln!(
        err,
        "note: compiled `{}`: training step {} kernels, forward {} kernels, in {:.0} ms; running on {}",
        forward.name,
        step_program.launches.len(),
        forward_program.launches.len(),
        started.elapsed().as_secs_f64() * 1e3,
        executor.describe()
    );

    // Data: the model's data inputs by name.
    let dataset = Dataset::open(&args.data).map_err(|e| Some(e.to_string()))?;
    let needed: Vec<String> = forward.inputs.iter().filter_map(|&i| input_name(&forward, i)).collect();
    let missing: Vec<&String> = needed.iter().filter(|n| !dataset.names().any(|d| d == n.as_str())).collect();
    if !missing.is_empty() {
        let have: Vec<&str> = dataset.names().collect();
        return Err(Some(format!(
            "{}: the model's input(s) {} are not in the dataset, which has: {}",
            args.data.display(),
            missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
            have.join(", ")
        )));
    }
    let (training, validation) = dataset.split(args.val_split, args.seed).map_err(|e| Some(e.to_string()))?;

    // Starting values: weights, then a checkpoint over them, then initialisers for the rest.
    let mut given: HashMap<String, Tensor> = HashMap::new();
    if let Some(path) = &args.weights {
        let weights = tdsl_runtime::Weights::open(path).map_err(|e| Some(e.to_string()))?;
        given.extend(weights.tensors().map_err(|e| Some(e.to_string()))?);
    }
    if let Some(path) = &args.resume {
        given.extend(train::load_checkpoint(path).map_err(|e| Some(e.to_string()))?);
    }
    let start = train::initial_params(&step_program, &given, args.seed).map_err(|e| Some(e.to_string()))?;
    let mut trainer = Trainer::new(&executor, &step_program, None, &start).map_err(|e| Some(e.to_string()))?;

    let samples = training.samples();
    let per_epoch = (if args.drop_last { samples / args.batch_size } else { samples.div_ceil(args.batch_size) }) as u64;
    if per_epoch == 0 {
        return Err(Some(format!(
            "the training set has {} samples: no batch of {} with --drop-last",
            training.samples(),
            args.batch_size
        )));
    }
    let total = (per_epoch * args.epochs).min(args.max_steps.unwrap_or(u64::MAX));
    for path in [&args.save, &args.metrics, &args.plot].into_iter().flatten() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Some(format!("{}: {e}", dir.display())))?;
        }
    }
    let mut metrics = match &args.metrics {
        Some(path) => Some(std::fs::File::create(path).map_err(|e| Some(format!("{}: {e}", path.display())))?),
        None => None,
    };
    let bar = progress_bar(terminal, total, trainer.steps());
    let mut curves = Curves::default();
    let schedule = args.schedule();
    let mut read: Vec<&str> = vec![&args.step.loss];
    if let Some(a) = &accuracy {
        read.push(a);
    }
    let timer = Instant::now();
    let mut stepping = std::time::Duration::ZERO;
    let first_step = trainer.steps();
    let mut last = (f64::NAN, None);
    while trainer.steps() < total {
        let epoch = trainer.steps() / per_epoch;
        let skip = (trainer.steps() % per_epoch) as usize;
        let batches = training
            .batches(args.batch_size, Some(args.seed + epoch), args.drop_last)
            .map_err(|e| Some(e.to_string()))?;
        for batch in batches.iter().skip(skip) {
            if trainer.steps() >= total {
                break;
            }
            let step = trainer.steps();
            let lr = schedule.at(step, epoch);
            let named = model_inputs(batch, &needed);
            let logged = (step + 1) % args.log_every == 0 || step + 1 == total || (step + 1) % per_epoch == 0;
            let before = Instant::now();
            let values = trainer
                .step(&named, lr as f32, if logged { &read } else { &[] })
                .map_err(|e| Some(format!("step {}: {e}", step + 1)))?;
            stepping += before.elapsed();
            if logged {
                let loss = scalar(&values[0]);
                let acc = values.get(1).map(scalar);
                last = (loss, acc);
                curves.train_loss.push(((step + 1) as f64, loss));
                if let Some(acc) = acc {
                    curves.train_accuracy.push(((step + 1) as f64, acc));
                }
                let rate = (trainer.steps() - first_step) as f64 / stepping.as_secs_f64().max(1e-9);
                let mut line = format!(
                    "{{\"step\":{},\"epoch\":{},\"lr\":{},\"loss\":{},\"steps_per_s\":{:.3}",
                    step + 1,
                    epoch,
                    json_number(lr),
                    json_number(loss),
                    rate
                );
                if let Some(acc) = acc {
                    line += &format!(",\"accuracy\":{}", json_number(acc));
                }
                line += "}";
                write_metric(&mut metrics, &line)?;
                bar.set_message(match acc {
                    Some(acc) => format!("loss {loss:.4} acc {:.1}%", acc * 100.0),
                    None => format!("loss {loss:.4}"),
                });
            }
            bar.set_position(trainer.steps());
        }
        let finished_epoch = trainer.steps() % per_epoch == 0 || trainer.steps() >= total;
        if !finished_epoch {
            continue;
        }
        let params: HashMap<String, Tensor> = trainer.params().map_err(|e| Some(e.to_string()))?.into_iter().collect();
        let (val_loss, val_acc) = if validation.samples() > 0 {
            evaluate(&executor, &forward_program, &params, &validation, args, &needed, accuracy.as_deref())?
        } else {
            (f64::NAN, None)
        };
        let epoch_done = trainer.steps().div_ceil(per_epoch);
        curves.val_loss.push((trainer.steps() as f64, val_loss));
        if let Some(acc) = val_acc {
            curves.val_accuracy.push((trainer.steps() as f64, acc));
        }
        let mut line =
            format!("{{\"epoch\":{},\"step\":{},\"val_loss\":{}", epoch_done, trainer.steps(), json_number(val_loss));
        if let Some(acc) = val_acc {
            line += &format!(",\"val_accuracy\":{}", json_number(acc));
        }
        line += "}";
        write_metric(&mut metrics, &line)?;
        let summary = format!(
            "epoch {epoch_done}/{}: loss {:.4}{} · val loss {:.4}{}",
            args.epochs,
            last.0,
            last.1.map_or(String::new(), |a| format!(" acc {:.2}%", a * 100.0)),
            val_loss,
            val_acc.map_or(String::new(), |a| format!(" val acc {:.2}%", a * 100.0)),
        );
        bar.suspend(|| {
            let _ = writeln!(out, "{summary}");
        });
        if let Some(path) = &args.save {
            trainer.save(path).map_err(|e| Some(e.to_string()))?;
        }
        if let Some(path) = &args.plot {
            let svg = curves.svg(&forward.name);
            tdsl_runtime::plot::write_svg(path, &svg).map_err(|e| Some(e.to_string()))?;
        }
    }
    bar.finish_and_clear();
    let seconds = timer.elapsed().as_secs_f64();
    let done = trainer.steps() - first_step;
    let _ = writeln!(
        out,
        "trained `{}` for {done} steps in {seconds:.1} s: {:.1} steps/s over {:.1} s of steps (the rest \
         validation, checkpoints and plots)",
        forward.name,
        done as f64 / stepping.as_secs_f64().max(1e-9),
        stepping.as_secs_f64()
    );
    if args.profile {
        let batch = training.batches(args.batch_size, None, args.drop_last).map_err(|e| Some(e.to_string()))?;
        let first = batch.first().ok_or_else(|| Some("no batch to profile".to_string()))?;
        let named = model_inputs(first, &needed);
        let lr = schedule.at(trainer.steps(), trainer.steps() / per_epoch) as f32;
        let (mut times, timing) = trainer.profile(&named, lr, 5).map_err(|e| Some(e.to_string()))?;
        let total: f64 = times.iter().map(|(_, t)| t.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "profile of one step ({} kernels, {:.2} ms in all, {}):",
            times.len(),
            total * 1e3,
            timing.name()
        );
        times.sort_by_key(|t| std::cmp::Reverse(t.1));
        for (name, t) in times.iter().take(12) {
            let ms = t.as_secs_f64() * 1e3;
            let _ = writeln!(out, "  {ms:9.3} ms  {:5.1}%  {name}", 100.0 * t.as_secs_f64() / total.max(1e-12));
        }
    }
    let (params, state, working) = trainer.device_bytes();
    let kib = |b: u64| b as f64 / 1024.0;
    if executor.gpu().is_some() {
        let _ = writeln!(
            out,
            "device memory: params {:.1} KiB, optimizer state {:.1} KiB, batch, activations and gradients {:.1} KiB",
            kib(params),
            kib(state),
            kib(working)
        );
    } else {
        // The CPU executor allocates the batch, activations and gradients per step and frees them after it.
        let _ = writeln!(
            out,
            "memory held between steps (CPU executor): params {:.1} KiB, optimizer state {:.1} KiB",
            kib(params),
            kib(state)
        );
    }
    if let Some(path) = &args.save {
        let _ = writeln!(
            out,
            "checkpoint: {} (optimizer state: {})",
            path.display(),
            train::optimizer_path(path).display()
        );
    }
    Ok(())
}

/// The mean loss (and accuracy) of `forward` over `data`, in batches, weighting each batch by its size.
fn evaluate(
    executor: &tdsl_runtime::Executor,
    forward: &tdsl_runtime::Program,
    params: &HashMap<String, Tensor>,
    data: &Dataset,
    args: &TrainArgs,
    needed: &[String],
    accuracy: Option<&str>,
) -> Result<(f64, Option<f64>), Option<String>> {
    let mut model = executor
        .load(forward, &tdsl_runtime::LoadOptions::default(), params)
        .map_err(|e| Some(format!("validation: {e}")))?;
    let names = model.program().outputs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let loss_at = names.iter().position(|n| n == &args.step.loss);
    let acc_at = accuracy.and_then(|a| names.iter().position(|n| n == a));
    let (mut loss, mut acc, mut seen) = (0.0, 0.0, 0usize);
    for batch in data.batches(args.batch_size, None, false).map_err(|e| Some(e.to_string()))? {
        let named = model_inputs(&batch, needed);
        let outputs = model.run_named(&named).map_err(|e| Some(format!("validation: {e}")))?;
        let n = batch.samples();
        if let Some(k) = loss_at {
            loss += scalar(&outputs[k].1) * n as f64;
        }
        if let Some(k) = acc_at {
            acc += scalar(&outputs[k].1) * n as f64;
        }
        seen += n;
    }
    let seen = seen.max(1) as f64;
    Ok((if loss_at.is_some() { loss / seen } else { f64::NAN }, acc_at.map(|_| acc / seen)))
}

/// The curves the plot shows.
#[derive(Default)]
struct Curves {
    train_loss: Vec<(f64, f64)>,
    val_loss: Vec<(f64, f64)>,
    train_accuracy: Vec<(f64, f64)>,
    val_accuracy: Vec<(f64, f64)>,
}

impl Curves {
    fn svg(&self, model: &str) -> String {
        use tdsl_runtime::plot::{Panel, Series};
        let series = |name: &str, points: &[(f64, f64)]| Series { name: name.to_string(), points: points.to_vec() };
        let mut panels = vec![Panel {
            title: "loss".into(),
            x_label: "step".into(),
            y_label: "cross-entropy".into(),
            series: vec![series("training (batch)", &self.train_loss), series("validation", &self.val_loss)],
        }];
        if !self.train_accuracy.is_empty() || !self.val_accuracy.is_empty() {
            panels.push(Panel {
                title: "accuracy".into(),
                x_label: "step".into(),
                y_label: "accuracy".into(),
                series: vec![
                    series("training (batch)", &self.train_accuracy),
                    series("validation", &self.val_accuracy),
                ],
            });
        }
        tdsl_runtime::plot::svg(&format!("training {model}"), &panels)
    }
}

/// The arrays of a batch that are inputs of the model (`needed`), by name.
fn model_inputs<'d>(batch: &'d Dataset, needed: &[String]) -> Vec<(&'d str, &'d Tensor)> {
    batch.arrays().iter().filter(|(name, _)| needed.contains(name)).map(|(name, t)| (name.as_str(), t)).collect()
}

fn input_name(graph: &crate::ir::Graph, id: crate::ir::NodeId) -> Option<String> {
    match &graph.node(id).op {
        crate::ir::Op::Input { name } => Some(name.clone()),
        _ => None,
    }
}

fn scalar(t: &Tensor) -> f64 {
    t.to_f64_vec().first().copied().unwrap_or(f64::NAN)
}

/// A JSON number, or `null` for NaN and infinities (JSON has none).
fn json_number(v: f64) -> String {
    if v.is_finite() { format!("{v}") } else { "null".to_string() }
}

fn write_metric(file: &mut Option<std::fs::File>, line: &str) -> Result<(), Option<String>> {
    if let Some(file) = file {
        writeln!(file, "{line}").map_err(|e| Some(format!("writing metrics: {e}")))?;
    }
    Ok(())
}

fn progress_bar(terminal: bool, total: u64, done: u64) -> indicatif::ProgressBar {
    if !terminal {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total).with_position(done);
    let style = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps · {msg} · {per_sec} · ETA {eta}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}
