//! all-MiniLM-L6-v2 end to end against PyTorch: `tests/fixtures/minilm/reference.json` holds the token ids
//! and embeddings sentence-transformers produced (script: `scripts/minilm-reference.py`) for varied sentences;
//! the model written in tdsl, with the real weights, must reproduce them on the GPU and on the CPU executor, for the whole batch at
//! once and for each sentence alone (so padding cannot change an embedding). Tolerances (the issue's): max
//! absolute difference <= 1e-4 and cosine similarity >= 0.9999 per sentence; token ids exactly. The model
//! stays loaded between batches: after the first, a batch uploads only its inputs.
//!
//! The weights come from `scripts/fetch-minilm.sh` (CI's `.ci/run` runs it; the cache lies outside the
//! clone). Without them the test fails and says how to get them; it never skips.

use std::path::Path;

use tdsl_minilm::{Encoder, cosine, is_complete, model_dir};
use tdsl_runtime::gpu::device_bytes;
use tdsl_runtime::{DType, ExecutorRef, Gpu, GpuOptions, Loaded};

struct Reference {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Vec<Reference> {
    let text = std::fs::read_to_string("fixtures/minilm/reference.json").expect("reference.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("reference.json is JSON");
    let sentences = json["sentences"].as_array().expect("a `sentences` array");
    sentences
        .iter()
        .map(|s| Reference {
            text: s["text"].as_str().expect("text").to_string(),
            ids: s["input_ids"].as_array().expect("input_ids").iter().map(|v| v.as_u64().expect("id") as u32).collect(),
            embedding: s["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|v| v.as_f64().expect("float") as f32)
                .collect(),
        })
        .collect()
}

/// A device of the encoder's own, so that its `GpuStats` count only its uploads.
fn own_gpu() -> Gpu {
    Gpu::new(&GpuOptions::default()).unwrap_or_else(|e| {
        panic!("the MiniLM test needs a Vulkan adapter (install Mesa's lavapipe, mesa-vulkan-drivers): {e}")
    })
}

fn encoder_on<'a>(executor: impl Into<ExecutorRef<'a>>) -> Encoder<'a> {
    let dir = model_dir();
    assert!(
        is_complete(&dir),
        "the MiniLM weights are not in `{}`: run `scripts/fetch-minilm.sh` (or set TDSL_MINILM_DIR)",
        dir.display()
    );
    Encoder::load(Path::new(&dir), executor, true).expect("the model loads and compiles")
}

fn gpu_stats(encoder: &Encoder) -> tdsl_runtime::GpuStats {
    match encoder.executor() {
        ExecutorRef::Gpu(gpu) => gpu.stats(),
        ExecutorRef::Cpu(_) => panic!("the encoder runs on the GPU"),
    }
}

/// Max absolute difference and cosine similarity of `got` against `want`, asserted within tolerance.
fn assert_close(label: &str, got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "{label}: embedding length");
    let max_abs = got.iter().zip(want).map(|(a, b)| f64::from((a - b).abs())).fold(0.0, f64::max);
    let cos = cosine(got, want);
    assert!(max_abs <= 1e-4 && cos >= 0.9999, "{label}: max abs difference {max_abs:e}, cosine {cos}");
    (max_abs, cos)
}

#[test]
fn minilm_matches_sentence_transformers() {
    let reference = reference();
    assert!(reference.len() >= 8, "the fixture has at least 8 sentences");
    let gpu = own_gpu();
    let encoder = encoder_on(&gpu);
    let texts: Vec<&str> = reference.iter().map(|r| r.text.as_str()).collect();

    let batch = encoder.tokenize(&texts).expect("tokenizes");
    for (r, ids) in reference.iter().zip(&batch.ids) {
        assert_eq!(ids, &r.ids, "token ids of {:?}", r.text);
    }
    let together = encoder.run(&batch).expect("runs the batch");
    let mut worst = (0.0f64, 1.0f64);
    for (r, got) in reference.iter().zip(&together) {
        let (d, c) = assert_close(&format!("{:?} in the batch", r.text), got, &r.embedding);
        worst = (worst.0.max(d), worst.1.min(c));
    }
    // The weights stay on the device: each later batch uploads only its three `i32[1, S]` inputs, and
    // since every one is smaller than the whole batch, it allocates no buffer.
    let after_batch = gpu_stats(&encoder);
    let mut input_bytes = 0;
    for r in &reference {
        let alone = encoder.embed(&[r.text.as_str()]).expect("runs one sentence");
        let (d, c) = assert_close(&format!("{:?} alone", r.text), &alone[0], &r.embedding);
        worst = (worst.0.max(d), worst.1.min(c));
        input_bytes += 3 * device_bytes(DType::I32, r.ids.len());
    }
    let after_singles = gpu_stats(&encoder);
    let resident = match &*encoder.model() {
        Loaded::Gpu(model) => model.param_bytes(),
        Loaded::Cpu(_) => 0,
    };
    assert!(resident > 80 << 20, "the weights are resident");
    assert_eq!(after_singles.uploaded_bytes - after_batch.uploaded_bytes, input_bytes, "only inputs uploaded");
    assert_eq!(after_singles.buffers_created, after_batch.buffers_created, "smaller batches allocate nothing");
    eprintln!("minilm: worst max abs difference {:e}, worst cosine {}", worst.0, worst.1);
}

/// The same reference on the CPU executor, with the same tolerances: the batch twice, then each sentence
/// alone.
#[test]
fn minilm_on_the_cpu_executor_matches_sentence_transformers() {
    let reference = reference();
    let cpu = tdsl_runtime::Cpu::new(None).expect("the CPU executor starts");
    let encoder = encoder_on(&cpu);
    let texts: Vec<&str> = reference.iter().map(|r| r.text.as_str()).collect();
    // Twice: the second run finds the weights packed on the first and computes the batch's 1,080-row
    // products by panels, feeding GELU and the layer norms as it goes.
    let batch = encoder.tokenize(&texts).expect("tokenizes");
    for run in ["first", "second"] {
        let together = encoder.run(&batch).expect("runs the batch");
        assert_eq!(together.len(), reference.len());
        for (r, got) in reference.iter().zip(&together) {
            assert_close(&format!("{:?} in the batch on the CPU ({run} run)", r.text), got, &r.embedding);
        }
    }
    for r in &reference {
        let alone = encoder.embed(&[r.text.as_str()]).expect("runs one sentence");
        assert_close(&format!("{:?} alone on the CPU", r.text), &alone[0], &r.embedding);
    }
}

#[test]
fn paraphrases_score_higher_than_unrelated_sentences() {
    let gpu = own_gpu();
    let encoder = encoder_on(&gpu);
    let e = encoder
        .embed(&["A man is playing a guitar.", "Someone plays the guitar.", "The bank raised its interest rates."])
        .expect("embeds");
    let (para, unrelated) = (cosine(&e[0], &e[1]), cosine(&e[0], &e[2]));
    assert!(para > unrelated + 0.3, "paraphrase {para}, unrelated {unrelated}");
}
