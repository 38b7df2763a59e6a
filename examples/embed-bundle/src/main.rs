//! A program with its model inside: the build script compiled `examples/mlp.tdsl` into a bundle, embedded
//! here with `include_bytes!`, so the binary needs no model file and links only the runtime. Runs the model
//! on seeded inputs and params (batch 2) on a real GPU when there is one, else on the CPU executor (stderr
//! says which), and prints the probabilities.

use tdsl_runtime::{Bundle, DeviceChoice, Executor, GpuOptions, Session, Tensor};

/// The bundle the build script wrote.
static MODEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mlp.tdslb"));

fn main() {
    match classify(2) {
        Ok(probs) => println!("probs: {}", probs.preview()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs the embedded model on `batch` seeded inputs with seeded params; returns the probabilities.
fn classify(batch: i64) -> Result<Tensor, Box<dyn std::error::Error>> {
    let bundle = Bundle::from_bytes(MODEL)?;
    let model = bundle.model(Some("mlp")).ok_or("the bundle has no model `mlp`")?;
    let opened = Executor::open(DeviceChoice::Auto, &GpuOptions::default(), None)?;
    eprintln!("note: {}", opened.note);
    let session = Session::new(&opened.executor, model)?;
    let dims = [("B", batch)];
    let params = session.seeded_params(&dims, 0)?;
    let inputs = session.seeded_inputs(&dims, 0)?;
    let mut outputs = session.run(&inputs, &params)?;
    Ok(outputs.remove(0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_model_runs() {
        let probs = super::classify(2).expect("the embedded bundle runs");
        assert_eq!(probs.shape, [2, 10]);
        for row in probs.to_f64_vec().chunks(10) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4, "softmax rows sum to 1: {row:?}");
        }
    }
}
