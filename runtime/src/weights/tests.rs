//! Tests of weight files: small safetensors files written to a temporary directory, loaded and matched
//! against params; every error's whole message is asserted (missing, extra, wrong dtype, wrong shape, all
//! together, unsupported dtype, truncated file, garbage bytes), and damaged files never panic.

use super::*;
use half::f16;
use proptest::prelude::*;
use safetensors::tensor::TensorView;

/// Safetensors bytes holding `(name, dtype, shape, data)` entries.
fn safetensors_bytes(entries: &[(&str, Dtype, &[usize], Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(name, dtype, shape, data)| {
            (name.to_string(), TensorView::new(*dtype, shape.to_vec(), data).expect("data sized to the shape"))
        })
        .collect();
    safetensors::serialize(views, None).expect("serializable")
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A temporary directory holding `name` with `bytes`; the path and the directory (removed when dropped).
fn file(name: &str, bytes: &[u8]) -> (PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("writable");
    (path, dir)
}

fn model_file() -> (PathBuf, tempfile::TempDir) {
    let bytes = safetensors_bytes(&[
        ("layer.w", Dtype::F32, &[2, 3], f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
        (
            "layer.b",
            Dtype::F16,
            &[3],
            [0.5f32, -1.0, 2.0].iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
        ),
        ("ids", Dtype::I32, &[2], [-1i32, 7].iter().flat_map(|x| x.to_le_bytes()).collect()),
        ("counts", Dtype::U32, &[], 9u32.to_le_bytes().to_vec()),
        ("mask", Dtype::BOOL, &[2, 2], vec![1, 0, 0, 1]),
        ("norm.scale", Dtype::F64, &[2], [1.0f64, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect()),
    ]);
    file("model.safetensors", &bytes)
}

fn spec(name: &str, dtype: DType, shape: &[Option<usize>]) -> ParamSpec {
    ParamSpec { name: name.to_string(), dtype, shape: shape.to_vec() }
}

/// The specs `model_file` satisfies, all but its F64 entry.
fn model_specs() -> Vec<ParamSpec> {
    vec![
        spec("layer.w", DType::F32, &[Some(2), Some(3)]),
        spec("layer.b", DType::F16, &[None]),
        spec("ids", DType::I32, &[Some(2)]),
        spec("counts", DType::U32, &[]),
        spec("mask", DType::Bool, &[Some(2), Some(2)]),
    ]
}

fn mismatch(weights: &Weights, params: &[ParamSpec]) -> String {
    match check_params(weights, params) {
        Ok(()) => panic!("expected a mismatch"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn opens_lists_and_loads_every_supported_dtype() {
    let (path, _dir) = model_file();
    let w = Weights::open(&path).unwrap();
    let names: Vec<&str> = w.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["counts", "ids", "layer.b", "layer.w", "mask", "norm.scale"]);
    let types: Vec<String> = w.entries().iter().map(|e| e.type_string()).collect();
    assert_eq!(types, ["u32[]", "i32[2]", "f16[3]", "f32[2, 3]", "bool[2, 2]", "F64[2]"]);

    assert_eq!(w.tensor("layer.w").unwrap(), Tensor::f32(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    assert_eq!(w.tensor("layer.b").unwrap(), Tensor::f16_from_f32(&[3], &[0.5, -1.0, 2.0]));
    assert_eq!(w.tensor("ids").unwrap(), Tensor::i32(&[2], vec![-1, 7]));
    assert_eq!(w.tensor("counts").unwrap(), Tensor::u32(&[], vec![9]));
    assert_eq!(w.tensor("mask").unwrap(), Tensor::bool(&[2, 2], vec![true, false, false, true]));
    assert_eq!(w.bytes("ids").unwrap(), &[0xff, 0xff, 0xff, 0xff, 7, 0, 0, 0]);
    assert_eq!(w.bytes("norm.scale").unwrap(), &[0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0x40]);
    let entry = w.entry("ids").unwrap();
    assert_eq!(entry.range.len(), 8);
    assert_eq!(std::fs::read(&path).unwrap()[entry.range.clone()], *w.bytes("ids").unwrap());

    assert!(check_params(&w, &model_specs()).is_err(), "the F64 entry is extra");
    let e = w.tensors().unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "`{}`: tensor `norm.scale` has dtype F64, which tdsl does not support (supported: F32, F16 (also into f32 params), BF16 (as f32, or \
             into f16 params), I32, U32, BOOL)",
            path.display()
        )
    );
}

#[test]
fn matching_params_pass() {
    let bytes = safetensors_bytes(&[("w", Dtype::F32, &[2, 3], vec![0; 24]), ("b", Dtype::F32, &[3], vec![0; 12])]);
    let (path, _dir) = file("ok.safetensors", &bytes);
    let w = Weights::open(&path).unwrap();
    check_params(&w, &[spec("w", DType::F32, &[None, Some(3)]), spec("b", DType::F32, &[Some(3)])]).unwrap();
    assert_eq!(w.tensors().unwrap().len(), 2);
}

#[test]
fn missing_entry() {
    let (path, _dir) = model_file();
    let w = Weights::open(&path).unwrap();
    let mut specs = model_specs();
    specs.push(spec("norm.scale", DType::F32, &[Some(2)]));
    specs.push(spec("head.w", DType::F32, &[Some(384), None]));
    let specs: Vec<ParamSpec> = specs.into_iter().filter(|s| s.name != "norm.scale").collect();
    assert_eq!(
        mismatch(&w, &specs),
        format!(
            "`{}` does not match the model's params (2 problems):\n  missing: `head.w` (the model expects \
             f32[384, ?])\n  extra: `norm.scale` (F64[2]) is not a param of the model",
            path.display()
        )
    );
}

#[test]
fn extra_entries() {
    let (path, _dir) = model_file();
    let w = Weights::open(&path).unwrap();
    let specs: Vec<ParamSpec> = model_specs().into_iter().filter(|s| s.name != "ids").collect();
    assert_eq!(
        mismatch(&w, &specs),
        format!(
            "`{}` does not match the model's params (2 problems):\n  extra: `ids` (i32[2]) is not a param of the \
             model\n  extra: `norm.scale` (F64[2]) is not a param of the model",
            path.display()
        )
    );
}

#[test]
fn wrong_shape_and_rank() {
    let bytes = safetensors_bytes(&[("w", Dtype::F32, &[384, 385], vec![0; 384 * 385 * 4])]);
    let (path, _dir) = file("w.safetensors", &bytes);
    let w = Weights::open(&path).unwrap();
    assert_eq!(
        mismatch(&w, &[spec("w", DType::F32, &[Some(384), Some(384)])]),
        format!(
            "`{}` does not match the model's params (1 problem):\n  wrong shape: `w` is f32[384, 385], the model \
             expects f32[384, 384]",
            path.display()
        )
    );
    assert_eq!(
        mismatch(&w, &[spec("w", DType::F32, &[None])]),
        format!(
            "`{}` does not match the model's params (1 problem):\n  wrong shape: `w` is f32[384, 385], the model \
             expects f32[?]",
            path.display()
        )
    );
}

#[test]
fn wrong_dtype() {
    let bytes = safetensors_bytes(&[("b", Dtype::F16, &[4], vec![0; 8])]);
    let (path, _dir) = file("b.safetensors", &bytes);
    let w = Weights::open(&path).unwrap();
    assert_eq!(
        mismatch(&w, &[spec("b", DType::I32, &[Some(4)])]),
        format!(
            "`{}` does not match the model's params (1 problem):\n  wrong dtype: `b` is f16[4], the model expects \
             i32[4]",
            path.display()
        )
    );
}

#[test]
fn all_problems_together() {
    let (path, _dir) = model_file();
    let w = Weights::open(&path).unwrap();
    let specs = vec![
        spec("layer.w", DType::F32, &[Some(3), Some(2)]),
        spec("layer.b", DType::I32, &[Some(4)]),
        spec("ids", DType::U32, &[Some(2)]),
        spec("norm.scale", DType::F32, &[Some(2)]),
        spec("head.w", DType::F16, &[]),
        spec("head.w", DType::F16, &[]),
        spec("mask", DType::Bool, &[Some(2), Some(2)]),
    ];
    assert_eq!(
        mismatch(&w, &specs),
        format!(
            "`{}` does not match the model's params (7 problems):\n\
             \x20 wrong shape: `layer.w` is f32[2, 3], the model expects f32[3, 2]\n\
             \x20 wrong dtype and shape: `layer.b` is f16[3], the model expects i32[4]\n\
             \x20 wrong dtype: `ids` is i32[2], the model expects u32[2]\n\
             \x20 unsupported dtype: `norm.scale` is F64[2] (supported: F32, F16 (also into f32 params), BF16 (as f32, or into f16 params), I32, U32, BOOL)\n\
             \x20 missing: `head.w` (the model expects f16[])\n\
             \x20 the param `head.w` is listed twice\n\
             \x20 extra: `counts` (u32[]) is not a param of the model",
            path.display()
        )
    );
    let e = check_params(&w, &specs).unwrap_err();
    let WeightsError::Mismatch { problems, .. } = e else { panic!("{e}") };
    assert_eq!(
        problems[2],
        ParamProblem::WrongType {
            name: "ids".to_string(),
            what: "dtype",
            expected: "u32[2]".to_string(),
            actual: "i32[2]".to_string(),
        }
    );
}

#[test]
fn unknown_tensor_names() {
    let (path, _dir) = model_file();
    let w = Weights::open(&path).unwrap();
    let message = format!("`{}` has no tensor `nope`", path.display());
    assert_eq!(w.tensor("nope").unwrap_err().to_string(), message);
    assert_eq!(w.bytes("nope").unwrap_err().to_string(), message);
}

#[test]
fn bool_bytes_other_than_0_or_1_are_an_error() {
    let bytes = safetensors_bytes(&[("m", Dtype::BOOL, &[3], vec![1, 0, 2])]);
    let (path, _dir) = file("m.safetensors", &bytes);
    let w = Weights::open(&path).unwrap();
    assert_eq!(
        w.tensor("m").unwrap_err().to_string(),
        format!("`{}`: tensor `m`: bool element 2 is the byte 0x02, not 0 or 1", path.display())
    );
}

#[test]
fn unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    let e = Weights::open(&missing).unwrap_err().to_string();
    assert!(e.starts_with(&format!("cannot read `{}`: ", missing.display())), "{e}");
    let e = Weights::open(dir.path()).unwrap_err().to_string();
    assert_eq!(e, format!("cannot read `{}`: it is a directory", dir.path().display()));
}

#[test]
fn corrupt_files() {
    let good = safetensors_bytes(&[("w", Dtype::F32, &[2], f32_bytes(&[1.0, 2.0]))]);
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap());
    let mut extra = good.clone();
    extra.push(0);
    let garbage = b"this is certainly not a safetensors file";
    let garbage_len = u64::from_le_bytes(garbage[..8].try_into().unwrap());
    let mut bad_json = good.clone();
    bad_json[8] = b'[';
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("empty", vec![], "it is 0 bytes, too short for the 8-byte header length".to_string()),
        (
            "truncated",
            good[..good.len() - 3].to_vec(),
            "the tensors' offsets do not cover the 5 data bytes after the header exactly (the file is truncated or \
             has extra bytes)"
                .to_string(),
        ),
        (
            "extra",
            extra,
            "the tensors' offsets do not cover the 9 data bytes after the header exactly (the file is truncated or \
             has extra bytes)"
                .to_string(),
        ),
        (
            "header-cut",
            good[..20].to_vec(),
            format!(
                "its first 8 bytes give a header length of {header_len} bytes but only 12 bytes follow (the file is \
                 truncated, or not a safetensors file)"
            ),
        ),
        (
            "garbage",
            garbage.to_vec(),
            format!(
                "its first 8 bytes give a header length of {garbage_len} bytes, more than safetensors allows (not a \
                 safetensors file?)"
            ),
        ),
        ("json", bad_json, "invalid JSON in header: ".to_string()),
    ];
    for (name, bytes, detail) in cases {
        let (path, _dir) = file(name, &bytes);
        let e = Weights::open(&path).unwrap_err().to_string();
        let expected = format!("`{}` is not a valid safetensors file: {detail}", path.display());
        assert!(e.starts_with(&expected), "{name}: {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn damaged_files_never_panic(
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        garbage in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let good = safetensors_bytes(&[
            ("a", Dtype::F32, &[2], f32_bytes(&[1.0, 2.0])),
            ("b", Dtype::BOOL, &[3], vec![1, 0, 1]),
        ]);
        let mut flipped = good.clone();
        for (at, value) in flips {
            let i = at.index(flipped.len());
            flipped[i] = value;
        }
        for bytes in [&good[..cut.index(good.len() + 1)], &flipped[..], &garbage[..]] {
            if let Ok(entries) = index(bytes) {
                for e in entries {
                    prop_assert!(e.range.end <= bytes.len());
                }
            }
        }
    }
}

#[test]
fn saved_tensors_load_back_exactly() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("checkpoint.safetensors");
    let tensors = vec![
        ("layer.weight".to_string(), Tensor::f32(&[2, 3], vec![1.0, -2.5, 3.0, 0.0, f32::MIN_POSITIVE, -0.0])),
        ("layer.scale".to_string(), Tensor::f16(&[2], vec![f16::from_f32(0.5), f16::from_f32(-1.0)])),
        ("step".to_string(), Tensor::i32(&[], vec![7])),
        ("ids".to_string(), Tensor::u32(&[3], vec![0, 1, u32::MAX])),
        ("mask".to_string(), Tensor::bool(&[2], vec![true, false])),
    ];
    save(&path, &tensors).expect("saved");
    let weights = Weights::open(&path).expect("opens");
    assert_eq!(weights.entries().len(), tensors.len());
    for (name, tensor) in &tensors {
        assert_eq!(&weights.tensor(name).expect("loads"), tensor, "{name}");
    }
    // Saving again replaces the file whole, and leaves no temporary file behind.
    save(&path, &tensors[..1]).expect("saved again");
    assert_eq!(Weights::open(&path).expect("opens").entries().len(), 1);
    let names: Vec<_> = std::fs::read_dir(dir.path()).expect("lists").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("checkpoint.safetensors")]);
}

#[test]
fn a_failed_save_leaves_the_old_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("checkpoint.safetensors");
    let old = vec![("w".to_string(), Tensor::f32(&[1], vec![1.0]))];
    save(&path, &old).expect("saved");
    let twice = vec![("w".to_string(), Tensor::f32(&[1], vec![2.0])), ("w".to_string(), Tensor::f32(&[1], vec![3.0]))];
    let err = save(&path, &twice).expect_err("a name twice");
    assert!(err.to_string().contains("the name `w` is given twice"), "{err}");
    let missing_dir = dir.path().join("no/such/dir/checkpoint.safetensors");
    let err = save(&missing_dir, &old).expect_err("no directory");
    assert!(matches!(err, WeightsError::Write { .. }) && err.to_string().starts_with("cannot write"), "{err}");
    assert_eq!(Weights::open(&path).expect("opens").tensor("w").expect("loads"), old[0].1);
}

/// BF16 entries (most published checkpoints) load as f32, exactly: each bfloat16 is the upper half of an f32.
#[test]
fn bf16_entries_widen_exactly_to_f32() {
    let values = [1.0f32, -2.5, f32::from_bits(0x3dcd_0000), f32::INFINITY, -0.0, 9.18355e-41, 3.3895314e38];
    let bits: Vec<u8> = values.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
    let (path, _dir) = file("bf16.safetensors", &safetensors_bytes(&[("w", Dtype::BF16, &[7], bits)]));
    let w = Weights::open(&path).expect("opens");
    assert_eq!(w.entry("w").expect("w").type_string(), "f32[7] (stored as BF16)");
    let t = w.tensor("w").expect("loads");
    let got: Vec<u32> = t.as_f32().expect("f32").iter().map(|v| v.to_bits()).collect();
    let want: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, want);
    let spec = |dtype| ParamSpec { name: "w".into(), dtype, shape: vec![Some(7)] };
    check_params(&w, &[spec(DType::F32)]).expect("binds to an f32 param");
    let err = check_params(&w, &[spec(DType::I32)]).expect_err("not to an i32 param");
    assert!(err.to_string().contains("f32[7] (stored as BF16)"), "{err}");
    // Into an f16 param: rounded to nearest even; 3.39e38 is beyond f16's range, so the file does not fit.
    check_params(&w, &[spec(DType::F16)]).expect("BF16 binds to an f16 param");
    let err = w.tensor_as("w", DType::F16).expect_err("3.39e38 is no f16");
    assert!(err.to_string().contains("element 6 (339, ") || err.to_string().contains("element 6 (3"), "{err}");
    assert!(err.to_string().contains("beyond the range of f16"), "{err}");
}

/// F16 entries load into f32 params exactly (and stay f16 for f16 params); BF16 into f16 params rounds.
#[test]
fn half_precision_entries_load_into_other_float_params() {
    use half::f16;
    let halves = [1.0f32, -2.5, 65504.0, f32::INFINITY, -0.0, 5.9604645e-8, 0.1];
    let bits: Vec<u8> = halves.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect();
    let bf = [1.0f32, f32::from_bits(0x3dcd_0000), -3.0, 65280.0];
    let bf_bits: Vec<u8> = bf.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
    let (path, _dir) = file(
        "half.safetensors",
        &safetensors_bytes(&[("h", Dtype::F16, &[7], bits), ("b", Dtype::BF16, &[4], bf_bits)]),
    );
    let w = Weights::open(&path).expect("opens");
    let spec = |name: &str, dtype, n| ParamSpec { name: name.into(), dtype, shape: vec![Some(n)] };
    check_params(&w, &[spec("h", DType::F32, 7), spec("b", DType::F16, 4)]).expect("both convert");
    check_params(&w, &[spec("h", DType::F16, 7), spec("b", DType::F32, 4)]).expect("both as they are");
    let err = check_params(&w, &[spec("h", DType::I32, 7), spec("b", DType::U32, 4)]).expect_err("no int");
    assert!(err.to_string().contains("`h` is f16[7]"), "{err}");
    let widened = w.tensor_as("h", DType::F32).expect("widens");
    let got: Vec<u32> = widened.as_f32().expect("f32").iter().map(|v| v.to_bits()).collect();
    let want: Vec<u32> = halves.iter().map(|v| f16::from_f32(*v).to_f32().to_bits()).collect();
    assert_eq!(got, want);
    let narrowed = w.tensor_as("b", DType::F16).expect("narrows");
    let want: Vec<f16> = bf.iter().map(|v| f16::from_f32(*v)).collect();
    assert_eq!(narrowed.data, crate::TensorData::F16(want));
    let tensors = w.tensors_for(&[spec("h", DType::F32, 7)]).expect("loads");
    assert_eq!(tensors["h"].dtype, DType::F32);
}

#[test]
fn ignore_patterns_drop_matching_entries_and_must_match_something() {
    for (pattern, name, hit) in [
        ("*.num_batches_tracked", "bn1.num_batches_tracked", true),
        ("*.num_batches_tracked", "bn1.running_mean", false),
        ("layer?.w", "layer1.w", true),
        ("layer?.w", "layer10.w", false),
        ("*", "", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("", "x", false),
    ] {
        assert_eq!(glob(pattern.as_bytes(), name.as_bytes()), hit, "{pattern} on {name}");
    }
    let (path, _dir) = model_file();
    let w = Weights::open(&path).expect("opens").ignoring(&["norm.*".to_string(), "*s".to_string()]).expect("ok");
    let names: Vec<&str> = w.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["layer.b", "layer.w", "mask"]);
    let err = Weights::open(&path).expect("opens").ignoring(&["nothing.*".to_string()]).expect_err("no match");
    assert!(err.to_string().ends_with("has no entry matching the ignore pattern `nothing.*`"), "{err}");
}
