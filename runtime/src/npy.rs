//! NumPy `.npy` files, the interchange format for inputs and outputs: `read_npy`/`read_npy_bytes` and
//! `write_npy`/`to_npy_bytes` for the five tdsl dtypes (`<f4` f32, `<f2` f16, `<i4` i32, `<u4` u32, `|b1`
//! bool) in C order. Reading also converts NumPy's default dtypes: `<i8` (int64) to i32, where every value
//! must fit (the first that does not is an error naming its index and value), and `<f8` (float64) to f32,
//! rounded to nearest (a finite value beyond f32's range is an error; NaN and infinities stay).
//!
//! Reading accepts format versions 1.0, 2.0 and 3.0 and parses the header's Python dict literal with a small
//! bounded parser (no evaluation). Anything else (other dtypes, big-endian data, Fortran order, a data
//! section whose length does not match the shape, bool bytes other than 0 or 1, more than `MAX_ELEMENTS`
//! elements) is an `NpyError` naming the file and the problem; no input bytes make the reader panic or
//! allocate more than the file's size. Writing produces what `np.save` does: version 1.0 when the header
//! fits (2.0 otherwise), the header padded with spaces so the data starts at a multiple of 64 bytes.

use crate::DType;
use crate::tensor::{DecodeError, MAX_ELEMENTS, Tensor, TensorData, element_count};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a `.npy` file could not be read or written: which file (`None` for in-memory bytes) and what.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", origin(.path))]
pub struct NpyError {
    /// The file; `None` for bytes in memory.
    pub path: Option<PathBuf>,
    /// What is wrong.
    pub problem: NpyProblem,
}

/// What was wrong with a `.npy` file or with a tensor to be written.
#[derive(Debug, thiserror::Error)]
pub enum NpyProblem {
    /// The file cannot be read.
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    /// The file cannot be written.
    #[error("cannot write the file: {0}")]
    Write(std::io::Error),
    /// No `.npy` magic string.
    #[error("not a .npy file (it does not start with the magic string \\x93NUMPY)")]
    BadMagic,
    /// A format version other than 1.0, 2.0 or 3.0.
    #[error("unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)")]
    UnsupportedVersion {
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
    },
    /// The file ends inside its header.
    #[error("the header is truncated: it needs {needed} bytes but the file has {got}")]
    TruncatedHeader {
        /// Bytes the header needs.
        needed: u64,
        /// Bytes in the file.
        got: usize,
    },
    /// The header dictionary does not parse.
    #[error("malformed header: {detail}; the header is {header}")]
    MalformedHeader {
        /// What is wrong with it.
        detail: String,
        /// The header's text.
        header: String,
    },
    /// An int64 or float64 element that the tdsl dtype it converts to cannot hold.
    #[error("element {index} ({value}) does not fit in {dtype}, which {from} data converts to")]
    OutOfRange {
        /// Its flat (C-order) index.
        index: usize,
        /// Its value, as written.
        value: String,
        /// The tdsl dtype.
        dtype: &'static str,
        /// The file's dtype (`int64`, `float64`).
        from: &'static str,
    },
    /// A dtype string tdsl has no dtype for.
    #[error("unsupported dtype {0} (supported: {SUPPORTED})")]
    UnsupportedDtype(String),
    /// A big-endian dtype string.
    #[error("big-endian dtype {0} is not supported: save the array as little-endian (supported: {SUPPORTED})")]
    BigEndian(String),
    /// A Fortran-order array.
    #[error("Fortran-order arrays are not supported: save the array in C order (np.ascontiguousarray)")]
    FortranOrder,
    /// More elements than `MAX_ELEMENTS`.
    #[error("shape {shape} has more than {MAX_ELEMENTS} elements")]
    TooManyElements {
        /// The shape, as written.
        shape: String,
    },
    /// The data is not as long as the shape and dtype say.
    #[error("the data is {got} bytes but {ty} needs {expected}")]
    DataLength {
        /// The declared type.
        ty: String,
        /// Bytes it needs.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// The data does not decode as its dtype.
    #[error("{0}")]
    Data(DecodeError),
    /// The tensor to write does not fit its own shape.
    #[error("the tensor is malformed: {0}")]
    MalformedTensor(String),
}

/// Reads a `.npy` file into a host tensor.
pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    let at = |problem| NpyError { path: Some(path.to_path_buf()), problem };
    let bytes = std::fs::read(path).map_err(|e| at(NpyProblem::Read(e)))?;
    parse(&bytes).map_err(at)
}

/// Reads the bytes of a `.npy` file into a host tensor.
pub fn read_npy_bytes(bytes: &[u8]) -> Result<Tensor, NpyError> {
    parse(bytes).map_err(|problem| NpyError { path: None, problem })
}

/// Writes `t` as a `.npy` file; a malformed tensor (data not matching its shape or dtype) is refused.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    let at = |problem| NpyError { path: Some(path.to_path_buf()), problem };
    if element_count(&t.shape) != Some(t.data.len()) || t.data.dtype() != t.dtype {
        let detail = format!("{} {} values for shape {:?}", t.data.len(), t.data.dtype().name(), t.shape);
        return Err(at(NpyProblem::MalformedTensor(detail)));
    }
    std::fs::write(path, to_npy_bytes(t)).map_err(|e| at(NpyProblem::Write(e)))
}

/// The bytes of `t` as a `.npy` file. The dtype written is that of `t.data`; a malformed tensor (whose data
/// does not hold its shape's element count) gives bytes that `read_npy_bytes` rejects.
pub fn to_npy_bytes(t: &Tensor) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        descr(t.data.dtype()),
        shape_tuple(&t.shape)
    );
    // As `np.save`: the prefix, the dict, spaces and a newline make a multiple of 64 bytes (64 spaces when
    // the dict alone would already end on the boundary); version 2.0 only when 1.0's u16 length overflows.
    let padded = |prefix: usize| dict.len() + 1 + ALIGN - (prefix + dict.len() + 1) % ALIGN;
    let (version, prefix) = if padded(10) <= u16::MAX as usize { (1u8, 10) } else { (2u8, 12) };
    let header_len = padded(prefix);
    let pad = header_len - dict.len() - 1;

    let data = t.data.to_le_bytes();
    let mut out = Vec::with_capacity(prefix + header_len + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    out.extend_from_slice(&data);
    out
}

const MAGIC: &[u8; 6] = b"\x93NUMPY";
const ALIGN: usize = 64;
const SUPPORTED: &str =
    "'<f4' (f32), '<f2' (f16), '<i4' (i32), '<u4' (u32), '|b1' (bool), '<i8' (to i32), '<f8' (to f32)";
/// Deepest nesting of tuples, lists and dicts the header parser follows.
const MAX_DEPTH: usize = 16;

fn origin(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("`{}`", p.display()),
        None => ".npy data".to_string(),
    }
}

fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::I32 => "<i4",
        DType::U32 => "<u4",
        DType::Bool => "|b1",
    }
}

/// How a file's elements become a tdsl dtype's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// As the dtype itself.
    Native,
    /// int64, converted to i32.
    I64,
    /// float64, rounded to f32.
    F64,
}

/// The dtype of a header's `descr` (which may also be a list, a structured dtype, or some other value) and
/// how the file stores it.
fn dtype_of_descr(descr: &Value) -> Result<(DType, Stored), NpyProblem> {
    let quoted = || descr.to_string();
    let Value::Str(descr) = descr else {
        return Err(NpyProblem::UnsupportedDtype(quoted()));
    };
    let native = |dtype| Ok((dtype, Stored::Native));
    match descr.as_str() {
        "<f4" => native(DType::F32),
        "<f2" => native(DType::F16),
        "<i4" => native(DType::I32),
        "<u4" => native(DType::U32),
        "<i8" => Ok((DType::I32, Stored::I64)),
        "<f8" => Ok((DType::F32, Stored::F64)),
        // One byte per element: the byte-order character means nothing.
        "|b1" | "<b1" | ">b1" | "=b1" => native(DType::Bool),
        ">f4" | ">f2" | ">i4" | ">u4" | ">i8" | ">f8" => Err(NpyProblem::BigEndian(quoted())),
        _ => Err(NpyProblem::UnsupportedDtype(quoted())),
    }
}

/// int64 or float64 data converted, every value checked.
fn convert(stored: Stored, data: &[u8]) -> Result<TensorData, NpyProblem> {
    let words = data.chunks_exact(8).map(|b| [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    match stored {
        Stored::I64 => words
            .enumerate()
            .map(|(index, w)| {
                let v = i64::from_le_bytes(w);
                i32::try_from(v).map_err(|_| NpyProblem::OutOfRange {
                    index,
                    value: v.to_string(),
                    dtype: "i32",
                    from: "int64",
                })
            })
            .collect::<Result<_, _>>()
            .map(TensorData::I32),
        _ => words
            .enumerate()
            .map(|(index, w)| {
                let v = f64::from_le_bytes(w);
                let f = v as f32;
                if v.is_finite() && f.is_infinite() {
                    return Err(NpyProblem::OutOfRange {
                        index,
                        value: format!("{v:e}"),
                        dtype: "f32",
                        from: "float64",
                    });
                }
                Ok(f)
            })
            .collect::<Result<_, _>>()
            .map(TensorData::F32),
    }
}

/// `()`, `(5,)`, `(2, 3)`: a shape as Python writes the tuple.
fn shape_tuple(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

fn type_string(dtype: DType, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{}[{}]", dtype.name(), dims.join(", "))
}

fn parse(bytes: &[u8]) -> Result<Tensor, NpyProblem> {
    let magic_seen = bytes.len().min(MAGIC.len());
    if bytes.is_empty() || bytes[..magic_seen] != MAGIC[..magic_seen] {
        return Err(NpyProblem::BadMagic);
    }
    let truncated = |needed: usize| NpyProblem::TruncatedHeader { needed: needed as u64, got: bytes.len() };
    let (major, minor) = match bytes.get(6..8) {
        Some(v) => (v[0], v[1]),
        None => return Err(truncated(10)),
    };
    let len_bytes = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => return Err(NpyProblem::UnsupportedVersion { major, minor }),
    };
    let prefix = 8 + len_bytes;
    let Some(len_field) = bytes.get(8..prefix) else {
        return Err(truncated(prefix));
    };
    let header_len = len_field.iter().rev().fold(0u64, |acc, &b| (acc << 8) | b as u64);
    let header_end = prefix as u64 + header_len;
    if (bytes.len() as u64) < header_end {
        return Err(NpyProblem::TruncatedHeader { needed: header_end, got: bytes.len() });
    }
    let header_end = header_end as usize;
    let header_bytes = &bytes[prefix..header_end];
    // Versions 1.0 and 2.0 encode the header in latin-1, 3.0 in UTF-8; the dict's syntax is ASCII either way.
    let header = read_header(header_bytes).map_err(|detail| {
        let text = if major == 3 {
            String::from_utf8_lossy(header_bytes).into_owned()
        } else {
            header_bytes.iter().map(|&b| b as char).collect()
        };
        NpyProblem::MalformedHeader { detail, header: show_header(&text) }
    })?;

    let (dtype, stored) = dtype_of_descr(&header.descr)?;
    let element_size = if stored == Stored::Native { dtype.file_size() } else { 8 };
    if header.fortran_order {
        return Err(NpyProblem::FortranOrder);
    }
    let expected = match element_count(&header.shape) {
        Some(n) if n <= MAX_ELEMENTS => n.checked_mul(element_size),
        _ => None,
    };
    let Some(expected) = expected else {
        return Err(NpyProblem::TooManyElements { shape: shape_tuple(&header.shape) });
    };
    let data = &bytes[header_end..];
    if data.len() != expected {
        return Err(NpyProblem::DataLength { ty: type_string(dtype, &header.shape), expected, got: data.len() });
    }
    let data = match stored {
        Stored::Native => TensorData::from_le_bytes(dtype, data).map_err(NpyProblem::Data)?,
        wide => convert(wide, data)?,
    };
    Ok(Tensor { dtype, shape: header.shape, data })
}

/// The header for an error message: escaped, and cut short when long.
fn show_header(text: &str) -> String {
    const SHOWN: usize = 200;
    let trimmed = text.trim_end_matches([' ', '\n']);
    let mut shown: String = trimmed.chars().take(SHOWN).collect();
    if trimmed.chars().count() > SHOWN {
        shown.push_str("...");
    }
    format!("{shown:?}")
}

struct Header {
    descr: Value,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A value of the Python literal subset `np.save` writes.
#[derive(Debug)]
enum Value {
    Str(String),
    Bool(bool),
    None,
    /// A non-negative integer; `None` when it does not fit `usize`.
    Int(Option<usize>),
    NegativeInt(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, open: &str, items: &[Value], close: &str) -> fmt::Result {
            f.write_str(open)?;
            for (i, v) in items.iter().enumerate() {
                write!(f, "{}{v}", if i > 0 { ", " } else { "" })?;
            }
            if open == "(" && items.len() == 1 {
                f.write_str(",")?;
            }
            f.write_str(close)
        }
        match self {
            Value::Str(s) => write!(f, "'{}'", s.escape_default()),
            Value::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Value::None => f.write_str("None"),
            Value::Int(Some(n)) => write!(f, "{n}"),
            Value::Int(None) => f.write_str("(a huge integer)"),
            Value::NegativeInt(s) => f.write_str(s),
            Value::Tuple(items) => seq(f, "(", items, ")"),
            Value::List(items) => seq(f, "[", items, "]"),
            Value::Dict(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    write!(f, "{}{k}: {v}", if i > 0 { ", " } else { "" })?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Parses the header dict and checks it has exactly the keys `descr`, `fortran_order` and `shape`.
fn read_header(text: &[u8]) -> Result<Header, String> {
    let mut p = Parser { text, pos: 0 };
    let value = p.value(0)?;
    p.skip_space();
    if p.pos < text.len() {
        return Err(format!("unexpected {} after the dict", p.describe_next()));
    }
    let Value::Dict(entries) = value else {
        return Err(format!("expected a dict, found {value}"));
    };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    for (key, value) in entries {
        let Value::Str(key) = key else {
            return Err(format!("the key {key} is not a string"));
        };
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran_order,
            "shape" => &mut shape,
            _ => {
                return Err(format!(
                    "unexpected key '{}' (expected 'descr', 'fortran_order', 'shape')",
                    key.escape_debug()
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(format!("the key '{key}' appears twice"));
        }
    }
    let missing = |key: &str| format!("the key '{key}' is missing");
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let fortran_order = match fortran_order.ok_or_else(|| missing("fortran_order"))? {
        Value::Bool(b) => b,
        other => return Err(format!("'fortran_order' is {other}, not True or False")),
    };
    let shape = match shape.ok_or_else(|| missing("shape"))? {
        Value::Tuple(dims) => dims
            .iter()
            .map(|d| match d {
                Value::Int(Some(n)) => Ok(*n),
                Value::Int(None) => Err("a dimension of 'shape' does not fit in 64 bits".to_string()),
                other => Err(format!("'shape' has the dimension {other}, not a non-negative integer")),
            })
            .collect::<Result<Vec<usize>, String>>()?,
        other => return Err(format!("'shape' is {other}, not a tuple")),
    };
    Ok(Header { descr, fortran_order, shape })
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.text.get(self.pos).is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn describe_next(&self) -> String {
        match self.text.get(self.pos) {
            Some(&c) if c.is_ascii_graphic() => format!("'{}' at byte {}", c as char, self.pos),
            Some(&c) => format!("byte {c:#04x} at byte {}", self.pos),
            None => "end of header".to_string(),
        }
    }

    fn expected(&self, what: &str) -> String {
        format!("expected {what}, found {}", self.describe_next())
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested more than {MAX_DEPTH} deep"));
        }
        self.skip_space();
        let Some(&c) = self.text.get(self.pos) else {
            return Err(self.expected("a value"));
        };
        match c {
            b'{' => {
                self.pos += 1;
                let mut entries = Vec::new();
                while !self.sequence_ends(b'}', entries.is_empty())? {
                    let key = self.value(depth + 1)?;
                    self.skip_space();
                    if self.text.get(self.pos) != Some(&b':') {
                        return Err(self.expected("':'"));
                    }
                    self.pos += 1;
                    entries.push((key, self.value(depth + 1)?));
                }
                Ok(Value::Dict(entries))
            }
            b'(' | b'[' => {
                self.pos += 1;
                let close = if c == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                while !self.sequence_ends(close, items.is_empty())? {
                    items.push(self.value(depth + 1)?);
                }
                Ok(if c == b'(' { Value::Tuple(items) } else { Value::List(items) })
            }
            b'\'' | b'"' => self.string(c),
            b'-' | b'0'..=b'9' => self.int(),
            _ if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.text.get(self.pos).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                    self.pos += 1;
                }
                match &self.text[start..self.pos] {
                    b"True" => Ok(Value::Bool(true)),
                    b"False" => Ok(Value::Bool(false)),
                    b"None" => Ok(Value::None),
                    word => Err(format!("unknown name '{}' at byte {start}", String::from_utf8_lossy(word))),
                }
            }
            _ => Err(self.expected("a value")),
        }
    }

    /// Before each item of a sequence: consumes `close` (true: the sequence ended) or, unless this is the
    /// first item, the separating comma. A trailing comma is allowed.
    fn sequence_ends(&mut self, close: u8, first: bool) -> Result<bool, String> {
        self.skip_space();
        if self.text.get(self.pos) == Some(&close) {
            self.pos += 1;
            return Ok(true);
        }
        if first {
            return Ok(false);
        }
        if self.text.get(self.pos) != Some(&b',') {
            return Err(self.expected(&format!("',' or '{}'", close as char)));
        }
        self.pos += 1;
        self.skip_space();
        if self.text.get(self.pos) == Some(&close) {
            self.pos += 1;
            return Ok(true);
        }
        Ok(false)
    }

    fn string(&mut self, quote: u8) -> Result<Value, String> {
        let start = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.text.get(self.pos) {
                None => return Err(format!("the string starting at byte {start} is not closed")),
                Some(&c) if c == quote => break,
                Some(b'\\') => {
                    self.pos += 1;
                    match self.text.get(self.pos) {
                        Some(&c) => out.push(c),
                        None => return Err(format!("the string starting at byte {start} is not closed")),
                    }
                }
                Some(&c) => out.push(c),
            }
            self.pos += 1;
        }
        self.pos += 1;
        Ok(Value::Str(String::from_utf8_lossy(&out).into_owned()))
    }

    /// A decimal integer, optionally negative, optionally with Python 2's `L` suffix (old `np.save` files).
    fn int(&mut self) -> Result<Value, String> {
        let start = self.pos;
        let negative = self.text[self.pos] == b'-';
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        let mut n: Option<usize> = Some(0);
        while let Some(&c) = self.text.get(self.pos).filter(|c| c.is_ascii_digit()) {
            n = n.and_then(|n| n.checked_mul(10)).and_then(|n| n.checked_add((c - b'0') as usize));
            self.pos += 1;
        }
        if self.pos == digits_start {
            return Err(self.expected("a digit"));
        }
        let text = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
        if self.text.get(self.pos) == Some(&b'L') {
            self.pos += 1;
        }
        Ok(if negative && n != Some(0) { Value::NegativeInt(text) } else { Value::Int(n) })
    }
}

#[cfg(test)]
mod tests;
