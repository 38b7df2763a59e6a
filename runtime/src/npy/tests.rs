//! Tests of `.npy` reading and writing: the bytes `np.save` writes, every header form the reader accepts,
//! one test per error (asserting the whole message), and properties: any bytes are an `Ok` or an error,
//! never a panic, and writing then reading gives back the tensor for every dtype.

use super::*;
use half::f16;
use proptest::prelude::*;

/// A `.npy` file of the given version with `dict` as its header (padded like `np.save`) and `data`.
fn npy(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let prefix = if major == 1 { 10 } else { 12 };
    let pad = 64 - (prefix + dict.len() + 1) % 64;
    let header_len = dict.len() + pad + 1;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[major, 0]);
    if major == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out.extend_from_slice(data);
    out
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn read_err(bytes: &[u8]) -> String {
    match read_npy_bytes(bytes) {
        Ok(t) => panic!("expected an error, read {t}"),
        Err(e) => e.to_string(),
    }
}

fn dict(descr: &str, shape: &str) -> String {
    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
}

/// A unique path in the temporary directory, removed when dropped.
struct TempPath(std::path::PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TempPath(std::env::temp_dir().join(format!("tdsl-npy-{}-{n}-{name}", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn writes_what_np_save_writes() {
    let t = Tensor::f32(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let bytes = to_npy_bytes(&t);
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert_eq!(&bytes[..10], b"\x93NUMPY\x01\x00\x76\x00");
    assert_eq!(&bytes[10..10 + header.len()], header.as_bytes());
    assert!(bytes[10 + header.len()..127].iter().all(|&b| b == b' '));
    assert_eq!(bytes[127], b'\n');
    assert_eq!(&bytes[128..], &f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])[..]);
    assert_eq!(bytes, npy(1, header, &f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])));

    let descrs = [
        (Tensor::f16_from_f32(&[1], &[1.0]), "'<f2'"),
        (Tensor::i32(&[], vec![-1]), "'<i4'"),
        (Tensor::u32(&[0], vec![]), "'<u4'"),
        (Tensor::bool(&[1, 1], vec![true]), "'|b1'"),
    ];
    for (t, descr) in descrs {
        let text = String::from_utf8_lossy(&to_npy_bytes(&t)).into_owned();
        assert!(text.contains(descr), "{text}");
    }
    let text = String::from_utf8_lossy(&to_npy_bytes(&Tensor::i32(&[], vec![-1]))).into_owned();
    assert!(text.contains("'shape': (), }"));
    let text = String::from_utf8_lossy(&to_npy_bytes(&Tensor::u32(&[0], vec![]))).into_owned();
    assert!(text.contains("'shape': (0,), }"));
}

#[test]
fn reads_every_header_form() {
    let cases: [(u8, &str); 6] = [
        (1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"),
        (1, "{\"shape\":(2,),\"fortran_order\":False,\"descr\":\"<f4\"}"),
        // Python 2 era files wrote long integers with an `L`.
        (1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L,)}"),
        (1, "{ 'descr' : '<f4' ,\n 'fortran_order' : False , 'shape' : ( 2 , ) , }"),
        (2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"),
        (3, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"),
    ];
    for (major, header) in cases {
        let t = read_npy_bytes(&npy(major, header, &f32_bytes(&[0.5, -2.0]))).unwrap();
        assert_eq!(t, Tensor::f32(&[2], vec![0.5, -2.0]), "{header}");
    }
    let scalar = read_npy_bytes(&npy(1, &dict("<i4", "()"), &7i32.to_le_bytes())).unwrap();
    assert_eq!(scalar, Tensor::i32(&[], vec![7]));
    let empty = read_npy_bytes(&npy(1, &dict("<u4", "(3, 0, 2)"), &[])).unwrap();
    assert_eq!(empty, Tensor::u32(&[3, 0, 2], vec![]));
    let bools = read_npy_bytes(&npy(1, &dict("|b1", "(3,)"), &[1, 0, 1])).unwrap();
    assert_eq!(bools, Tensor::bool(&[3], vec![true, false, true]));
    let halves = read_npy_bytes(&npy(1, &dict("<f2", "(1, 1)"), &f16::from_f32(-1.5).to_le_bytes())).unwrap();
    assert_eq!(halves, Tensor::f16_from_f32(&[1, 1], &[-1.5]));
    // The header need not be padded to 64 bytes (old writers padded to 16).
    let mut short = MAGIC.to_vec();
    let header = dict("<i4", "(1,)") + "\n";
    short.extend_from_slice(&[1, 0, header.len() as u8, 0]);
    short.extend_from_slice(header.as_bytes());
    short.extend_from_slice(&5i32.to_le_bytes());
    assert_eq!(read_npy_bytes(&short).unwrap(), Tensor::i32(&[1], vec![5]));
}

#[test]
fn writes_version_2_when_the_header_is_too_long_for_version_1() {
    let shape = vec![1usize; 30_000];
    let t = Tensor::f32(&shape, vec![3.0]);
    let bytes = to_npy_bytes(&t);
    assert_eq!(&bytes[6..8], &[2, 0]);
    let header_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    assert_eq!((12 + header_len) % 64, 0);
    assert_eq!(read_npy_bytes(&bytes).unwrap(), t);

    // Version 1.0 is used up to the last header length its u16 can hold.
    let versions: Vec<(u8, usize)> = (21_800..21_900)
        .map(|rank| {
            let bytes = to_npy_bytes(&Tensor::bool(&vec![1; rank], vec![true]));
            let len = if bytes[6] == 1 { u16::from_le_bytes([bytes[8], bytes[9]]) as usize } else { 65_536 };
            (bytes[6], len)
        })
        .collect();
    let first_v2 = versions.iter().position(|&(v, _)| v == 2).expect("some rank needs version 2.0");
    assert!(versions[..first_v2].iter().all(|&(v, _)| v == 1));
    assert!(versions[first_v2 - 1].1 > 65_535 - 64, "{:?}", versions[first_v2 - 1]);
}

#[test]
fn files_round_trip() {
    let path = TempPath::new("round-trip.npy");
    let t = Tensor::u32(&[2, 2], vec![1, 2, 3, u32::MAX]);
    write_npy(&path.0, &t).unwrap();
    assert_eq!(read_npy(&path.0).unwrap(), t);
}

#[test]
fn file_errors_name_the_file() {
    let path = TempPath::new("missing.npy");
    let e = read_npy(&path.0).unwrap_err().to_string();
    let prefix = format!("`{}`: cannot read the file: ", path.0.display());
    assert!(e.starts_with(&prefix), "{e}");

    let dir = TempPath::new("no-such-dir");
    let e = write_npy(&dir.0.join("x.npy"), &Tensor::i32(&[], vec![1])).unwrap_err().to_string();
    let prefix = format!("`{}`: cannot write the file: ", dir.0.join("x.npy").display());
    assert!(e.starts_with(&prefix), "{e}");

    let corrupt = TempPath::new("corrupt.npy");
    std::fs::write(&corrupt.0, b"PK\x03\x04 not numpy").unwrap();
    let e = read_npy(&corrupt.0).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("`{}`: not a .npy file (it does not start with the magic string \\x93NUMPY)", corrupt.0.display())
    );
}

#[test]
fn malformed_tensors_are_not_written() {
    let path = TempPath::new("malformed.npy");
    let bad = Tensor { dtype: DType::F32, shape: vec![2, 2], data: TensorData::F32(vec![1.0]) };
    let e = write_npy(&path.0, &bad).unwrap_err().to_string();
    assert_eq!(e, format!("`{}`: the tensor is malformed: 1 f32 values for shape [2, 2]", path.0.display()));
    let mixed = Tensor { dtype: DType::F32, shape: vec![1], data: TensorData::I32(vec![1]) };
    assert!(write_npy(&path.0, &mixed).is_err());
    assert!(!path.0.exists());
    // `to_npy_bytes` writes what it is given; reading refuses the result.
    assert!(read_npy_bytes(&to_npy_bytes(&bad)).is_err());
}

#[test]
fn each_problem_has_a_clear_message() {
    let ok = npy(1, &dict("<f4", "(2,)"), &f32_bytes(&[1.0, 2.0]));
    let mut v4 = ok.clone();
    v4[6] = 4;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "not a .npy file (it does not start with the magic string \\x93NUMPY)"),
        (b"\x93NUMPX\x01\x00".to_vec(), "not a .npy file (it does not start with the magic string \\x93NUMPY)"),
        (b"\x93NUM".to_vec(), "the header is truncated: it needs 10 bytes but the file has 4"),
        (v4, "unsupported .npy format version 4.0 (supported: 1.0, 2.0, 3.0)"),
        (b"\x93NUMPY\x02\x00\x10\x00".to_vec(), "the header is truncated: it needs 12 bytes but the file has 10"),
        (ok[..100].to_vec(), "the header is truncated: it needs 128 bytes but the file has 100"),
        (
            npy(
                1,
                &dict("<i8", "(3,)"),
                &[[7i64.to_le_bytes(), (1i64 << 40).to_le_bytes(), 0i64.to_le_bytes()].concat()].concat(),
            ),
            "element 1 (1099511627776) does not fit in i32, which int64 data converts to",
        ),
        (
            npy(1, &dict("<f8", "(2,)"), &[1.5f64.to_le_bytes(), 1e300f64.to_le_bytes()].concat()),
            "element 1 (1e300) does not fit in f32, which float64 data converts to",
        ),
        (
            npy(1, &dict("|u1", "(2,)"), &[0; 2]),
            "unsupported dtype '|u1' (supported: '<f4' (f32), '<f2' (f16), '<i4' (i32), '<u4' (u32), '|b1' (bool), '<i8' (to i32), '<f8' (to f32))",
        ),
        (
            npy(1, &dict(">f4", "(2,)"), &[0; 8]),
            "big-endian dtype '>f4' is not supported: save the array as little-endian (supported: '<f4' (f32), \
             '<f2' (f16), '<i4' (i32), '<u4' (u32), '|b1' (bool), '<i8' (to i32), '<f8' (to f32))",
        ),
        (
            npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", &[0; 16]),
            "Fortran-order arrays are not supported: save the array in C order (np.ascontiguousarray)",
        ),
        (
            npy(1, "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,)}", &[0; 8]),
            "unsupported dtype [('a', '<f4'), ('b', '<i4')] (supported: '<f4' (f32), '<f2' (f16), '<i4' (i32), \
             '<u4' (u32), '|b1' (bool), '<i8' (to i32), '<f8' (to f32))",
        ),
        (npy(1, &dict("<f4", "(2, 3)"), &[0; 20]), "the data is 20 bytes but f32[2, 3] needs 24"),
        (npy(1, &dict("<f4", "(2,)"), &[0; 12]), "the data is 12 bytes but f32[2] needs 8"),
        (npy(1, &dict("<f2", "(65536, 65536)"), &[]), "shape (65536, 65536) has more than 2147483648 elements"),
        (
            npy(1, &dict("<i4", "(4294967296, 4294967296, 4294967296)"), &[]),
            "shape (4294967296, 4294967296, 4294967296) has more than 2147483648 elements",
        ),
        (npy(1, &dict("|b1", "(3,)"), &[1, 0, 7]), "bool element 2 is the byte 0x07, not 0 or 1"),
    ];
    for (bytes, message) in cases {
        assert_eq!(read_err(&bytes), format!(".npy data: {message}"));
    }
}

#[test]
fn malformed_headers_say_what_is_wrong() {
    let cases = [
        ("", "expected a value, found end of header"),
        ("[1, 2]", "expected a dict, found [1, 2]"),
        ("{'descr': '<f4', 'fortran_order': False}", "the key 'shape' is missing"),
        ("{'descr': '<f4', 'shape': (1,)}", "the key 'fortran_order' is missing"),
        ("{'fortran_order': False, 'shape': (1,)}", "the key 'descr' is missing"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
            "unexpected key 'extra' (expected 'descr', 'fortran_order', 'shape')",
        ),
        ("{'descr': '<f4', 'descr': '<f4'}", "the key 'descr' appears twice"),
        ("{1: 2}", "the key 1 is not a string"),
        ("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "'fortran_order' is 0, not True or False"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': 5}", "'shape' is 5, not a tuple"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': [5]}", "'shape' is [5], not a tuple"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "'shape' has the dimension -1, not a non-negative integer",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, None)}",
            "'shape' has the dimension None, not a non-negative integer",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
            "a dimension of 'shape' does not fit in 64 bits",
        ),
        ("{'descr' '<f4'}", "expected ':', found ''' at byte 9"),
        ("{'descr': '<f4' 'shape': (1,)}", "expected ',' or '}', found ''' at byte 16"),
        ("{'descr': '<f4}", "the string starting at byte 10 is not closed"),
        ("{'descr': nope}", "unknown name 'nope' at byte 10"),
        ("{'shape': (1,,)}", "expected a value, found ',' at byte 13"),
        ("{'shape': (-)}", "expected a digit, found ')' at byte 12"),
        ("{} extra", "unexpected 'e' at byte 3 after the dict"),
        ("{'descr': \u{1}}", "expected a value, found byte 0x01 at byte 10"),
        ("((((((((((((((((((((1))))))))))))))))))))", "nested more than 16 deep"),
    ];
    for (header, detail) in cases {
        let message = read_err(&npy(1, header, &[]));
        let shown = format!("{:?}", header.trim_end());
        assert_eq!(message, format!(".npy data: malformed header: {detail}; the header is {shown}"), "{header}");
    }
    let long = format!("{{'descr': '<f4', 'x': '{}'}}", "y".repeat(300));
    let message = read_err(&npy(1, &long, &[]));
    assert!(message.ends_with(&format!("{}...\"", "y".repeat(176))), "{message}");
}

fn any_tensor() -> impl Strategy<Value = Tensor> {
    let shape = prop::collection::vec(0usize..4, 0..4);
    (shape, 0..5usize).prop_flat_map(|(shape, kind)| {
        let n: usize = shape.iter().product();
        let data = match kind {
            0 => prop::collection::vec(any::<f32>(), n).prop_map(TensorData::F32).boxed(),
            1 => prop::collection::vec(any::<u16>().prop_map(f16::from_bits), n).prop_map(TensorData::F16).boxed(),
            2 => prop::collection::vec(any::<i32>(), n).prop_map(TensorData::I32).boxed(),
            3 => prop::collection::vec(any::<u32>(), n).prop_map(TensorData::U32).boxed(),
            _ => prop::collection::vec(any::<bool>(), n).prop_map(TensorData::Bool).boxed(),
        };
        data.prop_map(move |data| Tensor::new(&shape, data).expect("sized to the shape"))
    })
}

/// Equal dtype, shape and bits (so NaNs compare equal to themselves).
fn same(a: &Tensor, b: &Tensor) -> bool {
    a.dtype == b.dtype && a.shape == b.shape && a.data.to_le_bytes() == b.data.to_le_bytes()
}

proptest! {
    #[test]
    fn write_then_read_gives_the_tensor_back(t in any_tensor()) {
        let back = read_npy_bytes(&to_npy_bytes(&t)).unwrap();
        prop_assert!(same(&t, &back), "{t} became {back}");
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), magic in any::<bool>()) {
        let mut input = if magic { b"\x93NUMPY\x01\x00".to_vec() } else { vec![] };
        input.extend_from_slice(&bytes);
        let _ = read_npy_bytes(&input);
    }

    #[test]
    fn damaged_files_never_panic(
        t in any_tensor(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let bytes = to_npy_bytes(&t);
        let _ = read_npy_bytes(&bytes[..cut.index(bytes.len() + 1)]);
        let mut flipped = bytes.clone();
        for (at, value) in flips {
            let i = at.index(flipped.len());
            flipped[i] = value;
        }
        let _ = read_npy_bytes(&flipped);
    }

    #[test]
    fn random_headers_never_panic(tokens in prop::collection::vec(
        prop::sample::select(vec![
            "{", "}", "(", ")", "[", "]", ":", ",", " ", "'descr'", "'shape'", "'fortran_order'", "'<f4'",
            "'|b1'", "True", "False", "None", "0", "3", "-1", "99999999999999999999", "L", "'", "\"", "\\",
        ]),
        0..40,
    )) {
        let header: String = tokens.concat();
        let _ = read_npy_bytes(&npy(1, &header, &[0; 12]));
        let _ = read_npy_bytes(&npy(3, &header, &[]));
    }
}

/// NumPy's default dtypes convert: int64 to i32 and float64 to f32 (rounded; NaN and infinities kept).
#[test]
fn int64_and_float64_convert() {
    let ints: Vec<u8> = [-3i64, 2147483647, -2147483648].iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = read_npy_bytes(&npy(1, &dict("<i8", "(3,)"), &ints)).expect("reads");
    assert_eq!(t, Tensor::i32(&[3], vec![-3, i32::MAX, i32::MIN]));
    let floats: Vec<u8> = [0.1f64, f64::NEG_INFINITY, 1e-50].iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = read_npy_bytes(&npy(1, &dict("<f8", "(3,)"), &floats)).expect("reads");
    assert_eq!(t, Tensor::f32(&[3], vec![0.1f32, f32::NEG_INFINITY, 0.0]));
}
