//! Runs a tdsl bundle with the runtime alone: `run-bundle BUNDLE [WEIGHTS.safetensors] [NAME=SIZE ...]
//! [--device=auto|gpu|cpu]`. Builds nothing at run time: the bundle (from `tdslc build model.tdsl -o
//! model.tdslb`) holds the kernels and each launch's ops, so it runs on a real GPU when there is one and on the
//! CPU executor otherwise (default `auto`; stderr says which).
//! Inputs are seeded random values shaped by the NAME=SIZE arguments; without a weights file the params are
//! seeded random values too. Prints each output's type and first values.
//!
//! ```sh
//! cargo run --release -p tdsl-compiler --bin tdslc -- build examples/mlp.tdsl -o mlp.tdslb
//! cargo run --release -p run-bundle -- mlp.tdslb B=4
//! ```

use std::path::Path;

use tdsl_runtime::{Bundle, DeviceChoice, Executor, GpuOptions, ParamSource, Session, Tensor, Weights};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(bundle) = args.first() else {
        eprintln!("usage: run-bundle BUNDLE [WEIGHTS.safetensors] [NAME=SIZE ...] [--device=auto|gpu|cpu]");
        std::process::exit(2);
    };
    let device = match args.iter().find_map(|a| a.strip_prefix("--device=")) {
        None => DeviceChoice::Auto,
        Some(name) => DeviceChoice::from_name(name).unwrap_or_else(|| {
            eprintln!("error: `{name}` is not a device; use auto, gpu or cpu");
            std::process::exit(2);
        }),
    };
    let weights = args.iter().skip(1).find(|a| a.ends_with(".safetensors"));
    let dims: Vec<(String, i64)> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .filter_map(|a| a.split_once('='))
        .filter_map(|(name, size)| Some((name.to_string(), size.parse().ok()?)))
        .collect();
    match run(Path::new(bundle), weights.map(Path::new), &dims, device) {
        Ok(outputs) => {
            for (name, tensor) in outputs {
                println!("{name}: {}", tensor.preview());
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// Loads `bundle`, checks `weights` against its params (or seeds them), runs its only model on seeded
/// inputs shaped by `dims` on the executor `device` picks, and returns the outputs by name.
pub fn run(
    bundle: &Path,
    weights: Option<&Path>,
    dims: &[(String, i64)],
    device: DeviceChoice,
) -> Result<Vec<(String, Tensor)>, Box<dyn std::error::Error>> {
    // 1. Load the bundle: format, checksum and program checks, no device yet.
    let bundle = Bundle::read(bundle)?;
    let model = bundle.model(None).ok_or("the bundle holds several models; pick one with Bundle::model")?;
    // 2. Open the executor (a real GPU, else the CPU executor) and make the model ready on it (device check,
    //    pipelines on the GPU; every launch's ops on the CPU).
    let opened = Executor::open(device, &GpuOptions::default(), None)?;
    eprintln!("note: {}", opened.note);
    let session = Session::new(&opened.executor, model)?;
    // 3. Bind weights: a safetensors file checked against every param at once, or seeded values.
    let dims: Vec<(&str, i64)> = dims.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let file = weights.map(Weights::open).transpose()?;
    let seeded = session.seeded_params(&dims, 0)?;
    let params: &dyn ParamSource = match &file {
        Some(w) => {
            session.check_weights(w)?;
            w
        }
        None => &seeded,
    };
    // 4. Run with inputs and read the outputs.
    let inputs = session.seeded_inputs(&dims, 0)?;
    let outputs = session.run(&inputs, params)?;
    Ok(session.outputs().into_iter().map(String::from).zip(outputs).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the mlp example into a bundle (the compiler is only a dev-dependency) and runs it.
    #[test]
    fn runs_the_mlp_bundle() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mlp.tdslb");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mlp.tdsl");
        let options = tdsl_compiler::bundle::BuildOptions::default();
        let (bundle, _) = tdsl_compiler::bundle::build(&source, &options).expect("mlp builds");
        std::fs::write(&path, bundle.to_bytes()).expect("write the bundle");
        for device in [DeviceChoice::Auto, DeviceChoice::Cpu] {
            let outputs = run(&path, None, &[("B".to_string(), 3)], device).expect("the bundle runs");
            assert_eq!(outputs.len(), 1);
            let (name, probs) = &outputs[0];
            assert_eq!((name.as_str(), probs.shape.as_slice()), ("probs", [3, 10].as_slice()));
            for row in probs.to_f64_vec().chunks(10) {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{device}: softmax rows sum to 1: {row:?}");
            }
        }
    }
}
