//! Model weights from safetensors files: `Weights::open` memory-maps the file and indexes its tensors
//! (name, dtype, shape, byte range); `check_params` matches them against a model's `param`s by name and
//! reports every problem at once (missing, extra, wrong dtype, wrong shape, unsupported dtype);
//! `Weights::bytes` gives a tensor's bytes without copying and `Weights::tensor` copies one into a host
//! `Tensor`. `save` writes tensors as a safetensors file atomically (a checkpoint is either the old file or
//! the whole new one, never a torn write).
//!
//! The safetensors crate parses and validates the header (offsets cover the data exactly, sizes match
//! shapes); a file it rejects is a `WeightsError::Corrupt` naming the file and the problem in plain words.
//! tdsl supports the safetensors dtypes F32, F16, I32, U32 and BOOL, and BF16, which loads as f32 (every
//! bfloat16 is exactly an f32: its 16 bits are the f32's upper half), so the BF16 checkpoints most models are
//! published in bind to `f32` params. Half-precision entries also load into params of another float dtype
//! (`WeightEntry::loads_as`): F16 into `f32` (exact) and BF16 into `f16` (rounded to nearest even; a value
//! beyond f16's range is an error naming it). Other entries (F64, I64, ...) are listed with their dtype and
//! refused when loaded or bound to a param. Limit: the file must not be
//! modified by another process while a `Weights` maps it (the usual memory-mapping caveat).

use crate::DType;
use crate::tensor::{MAX_ELEMENTS, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// An open safetensors file: the mapping and an index of its tensors, sorted by name.
pub struct Weights {
    path: PathBuf,
    map: Mmap,
    entries: Vec<WeightEntry>,
}

/// One tensor of a weights file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightEntry {
    /// Its name (a param's key).
    pub name: String,
    /// The dtype, or `None` when the file's dtype is not one tdsl supports (see `file_dtype`).
    pub dtype: Option<DType>,
    /// The dtype as the file names it: `F32`, `BF16`, ...
    pub file_dtype: String,
    /// How the file stores the elements of `dtype`.
    pub stored: Stored,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Where the tensor's bytes lie in the file.
    pub range: Range<usize>,
}

/// How a weights file stores a tensor's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// As the entry's dtype itself.
    Native,
    /// As bfloat16, widened exactly to the entry's dtype, f32, when loaded.
    Bf16,
}

impl Stored {
    /// Bytes per element in the file, for an entry of `dtype`.
    fn file_size(self, dtype: DType) -> usize {
        match self {
            Stored::Native => dtype.file_size(),
            Stored::Bf16 => 2,
        }
    }
}

/// A model parameter the weights must provide: its full key, dtype and shape, where `None` is a dimension
/// not known until binding (it matches any size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// The param's key.
    pub name: String,
    /// Its dtype.
    pub dtype: DType,
    /// Its shape; `None` matches any size.
    pub shape: Vec<Option<usize>>,
}

/// Why weights could not be opened, loaded, or matched to a model's params.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file cannot be read.
    #[error("cannot read `{}`: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file cannot be written.
    #[error("cannot write `{}`: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a valid safetensors file.
    #[error("`{}` is not a valid safetensors file: {detail}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// An ignore pattern that matches no entry (a misspelt pattern would otherwise ignore nothing silently).
    #[error("`{}` has no entry matching the ignore pattern `{pattern}`", .path.display())]
    IgnoredNothing {
        /// The file.
        path: PathBuf,
        /// The pattern.
        pattern: String,
    },
    /// No tensor of that name.
    #[error("`{}` has no tensor `{name}`", .path.display())]
    NoSuchTensor {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
    },
    /// A tensor of a dtype tdsl does not support.
    #[error(
        "`{}`: tensor `{name}` has dtype {file_dtype}, which tdsl does not support (supported: {SUPPORTED})",
        .path.display()
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its dtype as the file names it.
        file_dtype: String,
    },
    /// A tensor's bytes do not decode.
    #[error("`{}`: tensor `{name}`: {problem}", .path.display())]
    BadData {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// Two tensors to save under one name.
    #[error("cannot write `{}`: the name `{name}` is given twice", .path.display())]
    DuplicateName {
        /// The file.
        path: PathBuf,
        /// The repeated name.
        name: String,
    },
    /// The file does not match the model's params (every problem).
    #[error("{}", mismatch_message(.path, .problems))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Every disagreement.
        problems: Vec<ParamProblem>,
    },
}

/// Writes `tensors` (name, tensor) to the safetensors file `path`, readable by `Weights::open` and by
/// PyTorch's `safetensors.torch.load_file` (names sorted, as the format stores them). The bytes go to a
/// temporary file beside `path`, which is flushed to disk and then renamed over `path`: a reader sees the
/// old file or the complete new one, and a failed write leaves `path` as it was.
pub fn save(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), WeightsError> {
    use std::io::Write as _;
    let io = |source| WeightsError::Write { path: path.to_path_buf(), source };
    let mut seen = HashSet::new();
    for (name, _) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(WeightsError::DuplicateName { path: path.to_path_buf(), name: name.clone() });
        }
    }
    let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let dtype = match t.dtype {
                DType::F32 => Dtype::F32,
                DType::F16 => Dtype::F16,
                DType::I32 => Dtype::I32,
                DType::U32 => Dtype::U32,
                DType::Bool => Dtype::BOOL,
            };
            (name.clone(), t.data.to_le_bytes(), dtype, t.shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, data, dtype, shape)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).map(|v| (name.clone(), v)).map_err(|e| {
                WeightsError::BadData { path: path.to_path_buf(), name: name.clone(), problem: e.to_string() }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let file_bytes = safetensors::serialize(views, None)
        .map_err(|e| WeightsError::Corrupt { path: path.to_path_buf(), detail: e.to_string() })?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(&file_bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io(e));
    }
    Ok(())
}

/// One disagreement between a weights file and a model's params.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamProblem {
    /// A param with no entry in the file.
    Missing {
        /// The param's key.
        name: String,
        /// Its type.
        expected: String,
    },
    /// An entry of the file that is no param of the model.
    Extra {
        /// The entry's name.
        name: String,
        /// Its type.
        actual: String,
    },
    /// An entry whose dtype, shape, or both differ from the param's (`what` says which).
    WrongType {
        /// The param's key.
        name: String,
        /// `dtype`, `shape` or both.
        what: &'static str,
        /// The param's type.
        expected: String,
        /// The entry's type.
        actual: String,
    },
    /// An entry bound to a param whose dtype tdsl does not support.
    UnsupportedDtype {
        /// The param's key.
        name: String,
        /// The entry's type.
        actual: String,
    },
    /// The same param listed twice in the specs.
    DuplicateParam {
        /// The param's key.
        name: String,
    },
}

impl Weights {
    /// Memory-maps and indexes the safetensors file at `path`.
    pub fn open(path: &Path) -> Result<Weights, WeightsError> {
        let io = |source| WeightsError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        if file.metadata().map_err(io)?.is_dir() {
            return Err(io(std::io::Error::other("it is a directory")));
        }
        // SAFETY: the mapping is only read, and `Weights` documents that the file must not change while it
        // is mapped (a concurrent truncation could otherwise fault the reads).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let entries = index(&map).map_err(|detail| WeightsError::Corrupt { path: path.to_path_buf(), detail })?;
        Ok(Weights { path: path.to_path_buf(), map, entries })
    }

    /// The same file without the entries `names`: checkpoint tensors a model knowingly does not use (e.g.
    /// BERT's pooler in a sentence-embedding model), so they are neither matched nor reported as extra.
    /// Naming an entry the file does not have is an error.
    pub fn without(mut self, names: &[&str]) -> Result<Weights, WeightsError> {
        for name in names {
            let before = self.entries.len();
            self.entries.retain(|e| e.name != *name);
            if self.entries.len() == before {
                return Err(WeightsError::NoSuchTensor { path: self.path.clone(), name: name.to_string() });
            }
        }
        Ok(self)
    }

    /// The same file without the entries whose names match any of `patterns` (`*` matches any run of
    /// characters, `?` one character; everything else itself): checkpoint entries a model does not use, such
    /// as torchvision's `*.num_batches_tracked`. A pattern that matches no entry is an error.
    pub fn ignoring(mut self, patterns: &[String]) -> Result<Weights, WeightsError> {
        for pattern in patterns {
            let before = self.entries.len();
            self.entries.retain(|e| !glob(pattern.as_bytes(), e.name.as_bytes()));
            if self.entries.len() == before {
                return Err(WeightsError::IgnoredNothing { path: self.path.clone(), pattern: pattern.clone() });
            }
        }
        Ok(self)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor in the file, sorted by name.
    pub fn entries(&self) -> &[WeightEntry] {
        &self.entries
    }

    /// The entry called `name`.
    pub fn entry(&self, name: &str) -> Option<&WeightEntry> {
        self.entries.binary_search_by(|e| e.name.as_str().cmp(name)).ok().map(|i| &self.entries[i])
    }

    /// The tensor's bytes as stored in the file (little-endian, row-major; `bool` one byte each, unlike in
    /// device buffers), without copying. Entries of unsupported dtypes have bytes too.
    pub fn bytes(&self, name: &str) -> Result<&[u8], WeightsError> {
        Ok(&self.map[self.find(name)?.range.clone()])
    }

    /// The tensor copied into a host `Tensor`.
    pub fn tensor(&self, name: &str) -> Result<Tensor, WeightsError> {
        let (_, dtype) = self.supported(name)?;
        self.tensor_as(name, dtype)
    }

    /// The tensor copied into a host `Tensor` of `dtype`, which the entry must load as
    /// (`WeightEntry::loads_as`; an entry that does not is `BadData`).
    pub fn tensor_as(&self, name: &str, dtype: DType) -> Result<Tensor, WeightsError> {
        let (entry, natural) = self.supported(name)?;
        let bad = |problem: String| WeightsError::BadData { path: self.path.clone(), name: name.to_string(), problem };
        if entry.range.len() / entry.stored.file_size(natural) > MAX_ELEMENTS {
            return Err(bad(format!("it has more than {MAX_ELEMENTS} elements")));
        }
        let data = entry.decode_as(&self.map[entry.range.clone()], dtype).map_err(bad)?;
        Tensor::new(&entry.shape, data).map_err(|e| bad(e.to_string()))
    }

    /// Every tensor copied into host tensors, by name (for the reference interpreter's params).
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>, WeightsError> {
        self.entries.iter().map(|e| Ok((e.name.clone(), self.tensor(&e.name)?))).collect()
    }

    /// The entries `params` name, each as the param's dtype (F16 entries for `f32` params widened, as the
    /// GPU loads them), by name: the reference interpreter's params. Check the file with `check_params`
    /// first.
    pub fn tensors_for(&self, params: &[ParamSpec]) -> Result<HashMap<String, Tensor>, WeightsError> {
        params.iter().map(|p| Ok((p.name.clone(), self.tensor_as(&p.name, p.dtype)?))).collect()
    }

    fn find(&self, name: &str) -> Result<&WeightEntry, WeightsError> {
        self.entry(name).ok_or_else(|| WeightsError::NoSuchTensor { path: self.path.clone(), name: name.to_string() })
    }

    fn supported(&self, name: &str) -> Result<(&WeightEntry, DType), WeightsError> {
        let entry = self.find(name)?;
        match entry.dtype {
            Some(dtype) => Ok((entry, dtype)),
            None => Err(WeightsError::UnsupportedDtype {
                path: self.path.clone(),
                name: name.to_string(),
                file_dtype: entry.file_dtype.clone(),
            }),
        }
    }
}

impl fmt::Debug for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Weights").field("path", &self.path).field("entries", &self.entries).finish()
    }
}

impl WeightEntry {
    /// `f32[384, 384]`, `f32[384, 384] (stored as BF16)`, or `F64[384, 384]` for an unsupported dtype.
    pub fn type_string(&self) -> String {
        let dtype = match self.dtype {
            Some(dtype) => dtype.name(),
            None => &self.file_dtype,
        };
        let stored = if self.stored == Stored::Bf16 { " (stored as BF16)" } else { "" };
        format!("{dtype}[{}]{stored}", join(self.shape.iter().map(|d| d.to_string())))
    }

    /// Whether this entry loads into a param of `dtype`: its own dtype, or a float dtype its half-precision
    /// elements convert to (F16 and BF16 into `f32`, exactly; BF16 into `f16`, rounded).
    pub fn loads_as(&self, dtype: DType) -> bool {
        match self.dtype {
            Some(own) if own == dtype => true,
            _ => matches!((self.file_dtype.as_str(), dtype), ("F16" | "BF16", DType::F32) | ("BF16", DType::F16)),
        }
    }

    /// The elements of this entry from its bytes in the file as `dtype`, which it must load as (`loads_as`):
    /// F16 and BF16 widened to f32 exactly; BF16 narrowed to f16 by rounding to nearest even, where a finite
    /// value beyond f16's range is an error naming its position and value.
    pub fn decode_as(&self, bytes: &[u8], dtype: DType) -> Result<TensorData, String> {
        if !self.loads_as(dtype) {
            return Err(format!("a {} entry does not load as {}", self.file_dtype, dtype.name()));
        }
        let data = self.decode(bytes)?;
        Ok(match (data, dtype) {
            (TensorData::F16(v), DType::F32) => TensorData::F32(v.iter().map(|h| h.to_f32()).collect()),
            (TensorData::F32(v), DType::F16) => {
                let mut out = Vec::with_capacity(v.len());
                for (i, &x) in v.iter().enumerate() {
                    let h = half::f16::from_f32(x);
                    if h.is_infinite() && x.is_finite() {
                        return Err(format!(
                            "element {i} ({x}) is beyond the range of f16 (largest finite 65504), so the \
                             {} entry does not fit the f16 param",
                            self.file_dtype
                        ));
                    }
                    out.push(h);
                }
                TensorData::F16(out)
            }
            (data, _) => data,
        })
    }

    /// The elements of this entry from its bytes in the file, as `dtype` (BF16 widened to f32).
    pub fn decode(&self, bytes: &[u8]) -> Result<TensorData, String> {
        let dtype = self.dtype.ok_or_else(|| format!("dtype {} is not supported", self.file_dtype))?;
        match self.stored {
            Stored::Native => TensorData::from_le_bytes(dtype, bytes).map_err(|e| e.to_string()),
            Stored::Bf16 if !bytes.len().is_multiple_of(2) => {
                Err(format!("{} bytes is not a whole number of BF16s", bytes.len()))
            }
            Stored::Bf16 => Ok(TensorData::F32(
                bytes
                    .chunks_exact(2)
                    .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
                    .collect(),
            )),
        }
    }
}

impl ParamSpec {
    /// `f32[384, ?]`, with `?` for a dimension not known until binding.
    pub fn type_string(&self) -> String {
        let dims = self.shape.iter().map(|d| d.map_or("?".to_string(), |d| d.to_string()));
        format!("{}[{}]", self.dtype.name(), join(dims))
    }

    fn shape_matches(&self, shape: &[usize]) -> bool {
        self.shape.len() == shape.len() && self.shape.iter().zip(shape).all(|(e, &a)| e.is_none_or(|e| e == a))
    }
}

/// Matches the file's tensors against `params` by name; every problem is reported in one
/// `WeightsError::Mismatch`: params in `params` order, then extra entries by name.
pub fn check_params(weights: &Weights, params: &[ParamSpec]) -> Result<(), WeightsError> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for p in params {
        if !seen.insert(p.name.as_str()) {
            problems.push(ParamProblem::DuplicateParam { name: p.name.clone() });
            continue;
        }
        let Some(entry) = weights.entry(&p.name) else {
            problems.push(ParamProblem::Missing { name: p.name.clone(), expected: p.type_string() });
            continue;
        };
        if entry.dtype.is_none() {
            problems.push(ParamProblem::UnsupportedDtype { name: p.name.clone(), actual: entry.type_string() });
            continue;
        }
        let what = match (entry.loads_as(p.dtype), p.shape_matches(&entry.shape)) {
            (true, true) => continue,
            (false, true) => "dtype",
            (true, false) => "shape",
            (false, false) => "dtype and shape",
        };
        problems.push(ParamProblem::WrongType {
            name: p.name.clone(),
            what,
            expected: p.type_string(),
            actual: entry.type_string(),
        });
    }
    for entry in weights.entries() {
        if !seen.contains(entry.name.as_str()) {
            problems.push(ParamProblem::Extra { name: entry.name.clone(), actual: entry.type_string() });
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(WeightsError::Mismatch { path: weights.path.clone(), problems }) }
}

impl fmt::Display for ParamProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamProblem::Missing { name, expected } => write!(f, "missing: `{name}` (the model expects {expected})"),
            ParamProblem::Extra { name, actual } => write!(f, "extra: `{name}` ({actual}) is not a param of the model"),
            ParamProblem::WrongType { name, what, expected, actual } => {
                write!(f, "wrong {what}: `{name}` is {actual}, the model expects {expected}")
            }
            ParamProblem::UnsupportedDtype { name, actual } => {
                write!(f, "unsupported dtype: `{name}` is {actual} (supported: {SUPPORTED})")
            }
            ParamProblem::DuplicateParam { name } => write!(f, "the param `{name}` is listed twice"),
        }
    }
}

const SUPPORTED: &str = "F32, F16 (also into f32 params), BF16 (as f32, or into f16 params), I32, U32, BOOL";

fn mismatch_message(path: &Path, problems: &[ParamProblem]) -> String {
    let count = match problems.len() {
        1 => "1 problem".to_string(),
        n => format!("{n} problems"),
    };
    let mut out = format!("`{}` does not match the model's params ({count}):", path.display());
    for p in problems {
        out.push_str(&format!("\n  {p}"));
    }
    out
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Whether `name` matches the glob `pattern` (`*`: any run, `?`: one byte), by backtracking over the last
/// `*` only, so the work is at most |pattern| * |name|.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn dtype_of(dtype: Dtype) -> Option<DType> {
    match dtype {
        Dtype::F32 | Dtype::BF16 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::I32 => Some(DType::I32),
        Dtype::U32 => Some(DType::U32),
        Dtype::BOOL => Some(DType::Bool),
        _ => None,
    }
}

/// The entries of a safetensors file's bytes, sorted by name, or what is wrong with them in plain words.
fn index(bytes: &[u8]) -> Result<Vec<WeightEntry>, String> {
    let (header_len, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| explain(e, bytes))?;
    let data_start = 8 + header_len;
    let mut entries: Vec<WeightEntry> = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (start, end) = info.data_offsets;
            WeightEntry {
                name,
                dtype: dtype_of(info.dtype),
                file_dtype: info.dtype.to_string(),
                stored: if info.dtype == Dtype::BF16 { Stored::Bf16 } else { Stored::Native },
                shape: info.shape.clone(),
                range: data_start + start..data_start + end,
            }
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The safetensors crate's error in words a user can act on.
fn explain(e: SafeTensorError, bytes: &[u8]) -> String {
    let stated = bytes.get(..8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
    let after = bytes.len().saturating_sub(8);
    match (e, stated) {
        (SafeTensorError::HeaderTooSmall, _) => {
            format!("it is {} bytes, too short for the 8-byte header length", bytes.len())
        }
        (SafeTensorError::HeaderTooLarge, Some(n)) => {
            format!(
                "its first 8 bytes give a header length of {n} bytes, more than safetensors allows (not a \
                 safetensors file?)"
            )
        }
        (SafeTensorError::InvalidHeaderLength, Some(n)) => format!(
            "its first 8 bytes give a header length of {n} bytes but only {after} bytes follow (the file is \
             truncated, or not a safetensors file)"
        ),
        (SafeTensorError::MetadataIncompleteBuffer, Some(n)) => format!(
            "the tensors' offsets do not cover the {} data bytes after the header exactly (the file is truncated \
             or has extra bytes)",
            after.saturating_sub(n as usize)
        ),
        (e, _) => format!("{e}"),
    }
}

#[cfg(test)]
mod tests;
