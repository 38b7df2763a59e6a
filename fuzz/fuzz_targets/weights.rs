//! Fuzz target: any bytes through the two tensor-file readers of the runtime. An even first byte sends the
//! rest to the `.npy` reader (`read_npy_bytes`): it must return a tensor or an `NpyError`, and a tensor it
//! returns must write itself back (`to_npy_bytes`) to bytes that read to the same tensor. An odd first byte
//! writes the rest to a file and opens it as safetensors weights (`Weights::open`, the loader `tdslc run
//! --weights` and the MiniLM example use): every entry it lists must lie inside the file with a byte range
//! that fits its dtype and shape, `Weights::tensor` must load it or refuse with a `WeightsError`, and
//! `check_params` must accept the file's own entries as params and refuse them with one dtype changed.
//! Nothing may panic, hang or allocate much more than the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use tdsl_runtime::{DType, ParamSpec, Weights, check_params, read_npy_bytes, to_npy_bytes};

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("tdsl-fuzz-weights-{}.safetensors", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        npy(rest);
    } else {
        safetensors(rest);
    }
});

fn npy(bytes: &[u8]) {
    let Ok(tensor) = read_npy_bytes(bytes) else { return };
    assert_eq!(tdsl_runtime::tensor::element_count(&tensor.shape), Some(tensor.data.len()));
    let again = read_npy_bytes(&to_npy_bytes(&tensor)).expect("a tensor read from .npy writes itself back");
    assert_eq!((&again.shape, again.dtype), (&tensor.shape, tensor.dtype));
    assert_eq!(again.data.to_le_bytes(), tensor.data.to_le_bytes());
}

fn safetensors(bytes: &[u8]) {
    let path = scratch();
    std::fs::write(path, bytes).expect("the scratch file is writable");
    let Ok(weights) = Weights::open(path) else { return };
    let mut params = Vec::new();
    for entry in weights.entries() {
        assert!(entry.range.start <= entry.range.end && entry.range.end <= bytes.len(), "{entry:?}");
        let stored = weights.bytes(&entry.name).expect("a listed entry has bytes");
        assert_eq!(stored.len(), entry.range.len());
        let Some(dtype) = entry.dtype else {
            assert!(weights.tensor(&entry.name).is_err(), "an unsupported dtype loads: {entry:?}");
            continue;
        };
        let count = tdsl_runtime::tensor::element_count(&entry.shape).expect("a listed shape has a count");
        assert_eq!(count.checked_mul(dtype.file_size()), Some(stored.len()), "{entry:?}");
        if let Ok(tensor) = weights.tensor(&entry.name) {
            assert_eq!((&tensor.shape, tensor.dtype), (&entry.shape, dtype));
            assert_eq!(tensor.data.to_le_bytes(), stored);
        }
        params.push(ParamSpec {
            name: entry.name.clone(),
            dtype,
            shape: entry.shape.iter().map(|&d| Some(d)).collect(),
        });
    }
    if weights.entries().iter().all(|e| e.dtype.is_some()) {
        check_params(&weights, &params).expect("a file's own entries match it as params");
    }
    if let Some(first) = params.first_mut() {
        first.dtype = if first.dtype == DType::F32 { DType::I32 } else { DType::F32 };
        assert!(check_params(&weights, &params).is_err(), "a param of the wrong dtype is accepted");
    }
}
