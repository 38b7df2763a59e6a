//! MiniLM (all-MiniLM-L6-v2) forward on candle's CPU backend: the BERT encoder on the token ids of
//! scripts/minilm-torch-bench.py (32 x 98 and 1 x 16), median of N timed runs after one untimed, printed as
//! JSON lines. scripts/cpu-bench.sh runs it beside tdsl's CPU executor and PyTorch.
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

fn main() {
    // The weights where scripts/fetch-minilm.sh puts them (`TDSL_MINILM_DIR` overrides).
    let dir = std::env::var_os("TDSL_MINILM_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tdsl/minilm"));
    let config: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let device = Device::Cpu;
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &device).unwrap() };
    let model = BertModel::load(vb, &config).unwrap();
    let runs: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(5);
    for (b, s) in [(32usize, 98usize), (1, 16)] {
        // The token ids of scripts/minilm-torch-bench.py (and tdsl_minilm::bench_batch).
        let ids: Vec<u32> = (0..b)
            .flat_map(|row| {
                (0..s).map(move |col| match col {
                    0 => 101,
                    c if c == s - 1 => 102,
                    c => (1997 + (row * 7919 + c * 104729) % 28000) as u32,
                })
            })
            .collect();
        let ids = Tensor::from_vec(ids, (b, s), &device).unwrap();
        let types = ids.zeros_like().unwrap();
        let mask = Tensor::ones((b, s), DType::U32, &device).unwrap();
        let _ = model.forward(&ids, &types, Some(&mask)).unwrap();
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = std::time::Instant::now();
            let out = model.forward(&ids, &types, Some(&mask)).unwrap();
            let _ = out.sum_all().unwrap().to_scalar::<f32>().unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("{{\"engine\": \"candle\", \"batch\": {b}, \"seq\": {s}, \"median_ms\": {:.2}}}", times[times.len() / 2]);
    }
}
