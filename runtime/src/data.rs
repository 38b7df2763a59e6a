//! Training data: named arrays that share their first (sample) axis, from a directory of `.npy` files, a
//! NumPy `.npz` archive (`np.savez`, stored, or `np.savez_compressed`, deflated) or a safetensors file
//! (`Dataset::open` picks by the path); a seeded split into training and validation sets; and batches in a
//! seeded shuffled order (a Fisher–Yates shuffle driven by `SplitMix64`, so any language can reproduce the
//! order), with or without the last, short batch (`drop_last`). A `.npz` member may decompress to at most
//! `MAX_ELEMENTS` 4-byte elements plus a 1 MiB header, which bounds what a damaged archive can allocate.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use crate::npy::{NpyError, NpyProblem, read_npy, read_npy_bytes};
use crate::random::SplitMix64;
use crate::tensor::{MAX_ELEMENTS, Tensor, TensorData};
use crate::{Weights, WeightsError};

/// Named arrays with as many samples each (their first dimension).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    arrays: Vec<(String, Tensor)>,
    samples: usize,
}

/// Why data cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// No arrays, or arrays without samples.
    #[error("the dataset has no samples")]
    Empty,
    /// An array of rank 0 has no sample axis.
    #[error("array `{name}` is a scalar; every array needs a first (sample) axis")]
    Scalar {
        /// The array.
        name: String,
    },
    /// Arrays disagree on the number of samples.
    #[error("array `{name}` has {samples} samples, `{first}` has {expected}")]
    Samples {
        /// The array.
        name: String,
        /// Its first dimension.
        samples: usize,
        /// The first array's name.
        first: String,
        /// The first array's first dimension.
        expected: usize,
    },
    /// Two arrays of one name.
    #[error("two arrays are named `{name}`")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A batch size of 0.
    #[error("the batch size must be at least 1")]
    ZeroBatch,
    /// A validation fraction outside [0, 1).
    #[error("the validation fraction must be at least 0 and below 1, not {0}")]
    Fraction(f64),
    /// The safetensors file could not be read.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// A `.npy` file of a directory dataset could not be read (the error names the file).
    #[error(transparent)]
    Npy(#[from] NpyError),
    /// A `.npz` archive that cannot be opened or is not a zip archive.
    #[error("`{}`: {problem}", .path.display())]
    Npz {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        problem: NpzProblem,
    },
    /// A member of a `.npz` archive that is not a readable `.npy` array.
    #[error("`{}`, member `{member}`: {problem}", .path.display())]
    NpzMember {
        /// The archive.
        path: PathBuf,
        /// The member's name in the archive (with its `.npy` suffix), or `#i` when the name is unreadable.
        member: String,
        /// What is wrong.
        problem: NpzProblem,
    },
    /// A dataset directory that cannot be listed.
    #[error("`{}`: cannot list the directory: {source}", .dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A directory without `.npy` files.
    #[error("`{}`: the directory has no .npy files", .dir.display())]
    NoNpyFiles {
        /// The directory.
        dir: PathBuf,
    },
    /// A path `Dataset::open` does not know how to read.
    #[error(
        "`{}`: not a dataset: expected a .safetensors file, a .npz archive or a directory of .npy files",
        .path.display()
    )]
    UnsupportedPath {
        /// The path.
        path: PathBuf,
    },
}

/// What is wrong with a `.npz` archive or one of its members.
#[derive(Debug, thiserror::Error)]
pub enum NpzProblem {
    /// The file cannot be read.
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    /// The zip container is damaged or not a zip archive (the zip reader's error).
    #[error("not a readable .npz (zip) archive: {0}")]
    Archive(std::io::Error),
    /// The member cannot be decompressed (the zip reader's error).
    #[error("cannot extract it: {0}")]
    Extract(std::io::Error),
    /// The member's name does not end in `.npy` (a directory, or a file `np.savez` does not write).
    #[error("not a .npy array (a .npz archive holds only `<name>.npy` members)")]
    NotNpy,
    /// The member decompresses to more bytes than the largest array tdsl reads.
    #[error("it is larger than {MAX_MEMBER_BYTES} bytes")]
    TooLarge,
    /// The member is not a valid `.npy` file.
    #[error("{0}")]
    Npy(NpyProblem),
}

/// The most bytes one `.npz` member may decompress to: `MAX_ELEMENTS` 4-byte elements and a 1 MiB header.
/// A bound on what a damaged or hostile archive can make the reader allocate.
const MAX_MEMBER_BYTES: u64 = MAX_ELEMENTS as u64 * 4 + (1 << 20);

impl Dataset {
    /// The arrays, in the given order; all must have a first axis of one length.
    pub fn new(arrays: Vec<(String, Tensor)>) -> Result<Dataset, DataError> {
        let Some((first, head)) = arrays.first() else { return Err(DataError::Empty) };
        let samples = *head.shape.first().ok_or_else(|| DataError::Scalar { name: first.clone() })?;
        for (i, (name, t)) in arrays.iter().enumerate() {
            if arrays[..i].iter().any(|(n, _)| n == name) {
                return Err(DataError::DuplicateName { name: name.clone() });
            }
            let n = *t.shape.first().ok_or_else(|| DataError::Scalar { name: name.clone() })?;
            if n != samples {
                return Err(DataError::Samples {
                    name: name.clone(),
                    samples: n,
                    first: first.clone(),
                    expected: samples,
                });
            }
        }
        if samples == 0 {
            return Err(DataError::Empty);
        }
        Ok(Dataset { arrays, samples })
    }

    /// Every tensor of a safetensors file, by name.
    pub fn from_safetensors(path: &Path) -> Result<Dataset, DataError> {
        let weights = Weights::open(path)?;
        let arrays = weights
            .entries()
            .iter()
            .map(|e| Ok((e.name.clone(), weights.tensor(&e.name)?)))
            .collect::<Result<Vec<_>, WeightsError>>()?;
        Dataset::new(arrays)
    }

    /// Every array of a NumPy `.npz` archive (`np.savez` or `np.savez_compressed`), named by its member
    /// name without the `.npy` suffix, in archive order. Members must be `.npy` arrays of a tdsl dtype.
    pub fn from_npz(path: &Path) -> Result<Dataset, DataError> {
        let npz = |problem| DataError::Npz { path: path.to_path_buf(), problem };
        let file = std::fs::File::open(path).map_err(|e| npz(NpzProblem::Read(e)))?;
        let arrays = npz_arrays(path, std::io::BufReader::new(file))?;
        Dataset::new(arrays)
    }

    /// Every `.npy` file directly in `dir` (other files and subdirectories are ignored), each an array named
    /// by its file stem, sorted by name.
    pub fn from_npy_dir(dir: &Path) -> Result<Dataset, DataError> {
        let read_dir = |source| DataError::ReadDir { dir: dir.to_path_buf(), source };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_dir)? {
            let path = entry.map_err(read_dir)?.path();
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            let npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
            if let (Some(stem), true, true) = (stem, npy, path.is_file()) {
                files.push((stem, path));
            }
        }
        if files.is_empty() {
            return Err(DataError::NoNpyFiles { dir: dir.to_path_buf() });
        }
        files.sort();
        let arrays =
            files.into_iter().map(|(name, path)| Ok((name, read_npy(&path)?))).collect::<Result<_, NpyError>>()?;
        Dataset::new(arrays)
    }

    /// The dataset at `path`, read by its kind: a directory of `.npy` files (`from_npy_dir`), a `.npz`
    /// archive (`from_npz`) or a `.safetensors` file (`from_safetensors`), by extension (any letter case).
    pub fn open(path: &Path) -> Result<Dataset, DataError> {
        if path.is_dir() {
            return Dataset::from_npy_dir(path);
        }
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if extension.eq_ignore_ascii_case("npz") {
            Dataset::from_npz(path)
        } else if extension.eq_ignore_ascii_case("safetensors") {
            Dataset::from_safetensors(path)
        } else {
            Err(DataError::UnsupportedPath { path: path.to_path_buf() })
        }
    }

    /// The number of samples.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The arrays' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.arrays.iter().map(|(n, _)| n.as_str())
    }

    /// The samples at `rows` (in that order), as a dataset of the same arrays.
    pub fn rows(&self, rows: &[usize]) -> Dataset {
        let arrays = self.arrays.iter().map(|(name, t)| (name.clone(), take_rows(t, rows))).collect();
        Dataset { arrays, samples: rows.len() }
    }

    /// The arrays (batch tensors when this is a batch).
    pub fn arrays(&self) -> &[(String, Tensor)] {
        &self.arrays
    }

    /// A seeded split: `round(fraction * samples)` samples, chosen by a shuffle, for validation and the rest
    /// for training, each in the dataset's order. `(training, validation)`.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset), DataError> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(DataError::Fraction(fraction));
        }
        let held = (fraction * self.samples as f64).round() as usize;
        let order = shuffled(self.samples, seed);
        let mut validation: Vec<usize> = order[..held].to_vec();
        let mut training: Vec<usize> = order[held..].to_vec();
        validation.sort_unstable();
        training.sort_unstable();
        if training.is_empty() {
            return Err(DataError::Empty);
        }
        let validation = if validation.is_empty() { Err(DataError::Empty) } else { Ok(self.rows(&validation)) };
        Ok((self.rows(&training), validation?))
    }

    /// The batches of one epoch: in a shuffled order when `shuffle` gives a seed (use a new seed per epoch,
    /// e.g. `seed + epoch`), else in order; `drop_last` leaves out a last batch shorter than `batch`.
    pub fn batches(&self, batch: usize, shuffle: Option<u64>, drop_last: bool) -> Result<Vec<Dataset>, DataError> {
        if batch == 0 {
            return Err(DataError::ZeroBatch);
        }
        let order = match shuffle {
            Some(seed) => shuffled(self.samples, seed),
            None => (0..self.samples).collect(),
        };
        Ok(order.chunks(batch).filter(|c| !drop_last || c.len() == batch).map(|c| self.rows(c)).collect())
    }
}

/// `0..n` in the order of a Fisher–Yates shuffle: for `i` from `n - 1` down to 1, swap `i` with
/// `next_u64() % (i + 1)` of a `SplitMix64` seeded with `seed`.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The arrays of the `.npz` archive read from `reader` (`path` names it in errors), in archive order.
fn npz_arrays(path: &Path, reader: impl Read + Seek) -> Result<Vec<(String, Tensor)>, DataError> {
    let mut archive = zip::ZipArchive::new(reader)
        .map_err(|e| DataError::Npz { path: path.to_path_buf(), problem: NpzProblem::Archive(e.into()) })?;
    let mut arrays = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut member = format!("#{i}");
        let at =
            |member: &str, problem| DataError::NpzMember { path: path.to_path_buf(), member: member.into(), problem };
        let mut file = archive.by_index(i).map_err(|e| at(&member, NpzProblem::Extract(e.into())))?;
        if let Ok(name) = file.name() {
            member = name.into_owned();
        }
        let name = match member.strip_suffix(".npy") {
            Some(name) if !file.is_dir() => name.to_owned(),
            _ => return Err(at(&member, NpzProblem::NotNpy)),
        };
        if file.size() > MAX_MEMBER_BYTES {
            return Err(at(&member, NpzProblem::TooLarge));
        }
        let mut bytes = Vec::new();
        (&mut file)
            .take(MAX_MEMBER_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| at(&member, NpzProblem::Extract(e)))?;
        if bytes.len() as u64 > MAX_MEMBER_BYTES {
            return Err(at(&member, NpzProblem::TooLarge));
        }
        let tensor = read_npy_bytes(&bytes).map_err(|e| at(&member, NpzProblem::Npy(e.problem)))?;
        arrays.push((name, tensor));
    }
    Ok(arrays)
}

/// The rows `rows` of `t` along its first axis.
fn take_rows(t: &Tensor, rows: &[usize]) -> Tensor {
    let row: usize = t.shape[1..].iter().product();
    fn pick<T: Copy>(v: &[T], rows: &[usize], row: usize) -> Vec<T> {
        rows.iter().flat_map(|&r| v[r * row..(r + 1) * row].iter().copied()).collect()
    }
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32(pick(v, rows, row)),
        TensorData::F16(v) => TensorData::F16(pick(v, rows, row)),
        TensorData::I32(v) => TensorData::I32(pick(v, rows, row)),
        TensorData::U32(v) => TensorData::U32(pick(v, rows, row)),
        TensorData::Bool(v) => TensorData::Bool(pick(v, rows, row)),
    };
    let mut shape = t.shape.clone();
    shape[0] = rows.len();
    Tensor { dtype: t.dtype, shape, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Dataset {
        let x = Tensor::f32(&[n, 2], (0..2 * n).map(|i| i as f32).collect());
        let y = Tensor::i32(&[n], (0..n as i32).collect());
        Dataset::new(vec![("x".into(), x), ("y".into(), y)]).expect("a dataset")
    }

    /// The label of each row of a batch of `data`.
    fn labels(d: &Dataset) -> Vec<i32> {
        match &d.arrays()[1].1.data {
            TensorData::I32(v) => v.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_keep_rows_together_and_cover_every_sample_once() {
        let d = data(10);
        let batches = d.batches(4, Some(7), false).expect("batches");
        assert_eq!(batches.iter().map(Dataset::samples).collect::<Vec<_>>(), [4, 4, 2]);
        let mut seen: Vec<i32> = batches.iter().flat_map(labels).collect();
        assert_ne!(seen, (0..10).collect::<Vec<_>>(), "shuffled");
        for b in &batches {
            let TensorData::F32(x) = &b.arrays()[0].1.data else { panic!() };
            for (k, y) in labels(b).into_iter().enumerate() {
                assert_eq!([x[2 * k], x[2 * k + 1]], [2.0 * y as f32, 2.0 * y as f32 + 1.0]);
            }
        }
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(d.batches(4, Some(7), false).expect("batches"), batches, "the same seed, the same order");
        assert_ne!(d.batches(4, Some(8), false).expect("batches"), batches);
        assert_eq!(d.batches(4, Some(7), true).expect("batches").len(), 2, "drop_last");
        assert_eq!(labels(&d.batches(10, None, false).expect("batches")[0]), (0..10).collect::<Vec<_>>());
    }

    /// The order is pinned: a Python script with its own SplitMix64 and Fisher–Yates (the module docs'
    /// recipe) gives these orders, so a PyTorch reference can feed the same batches.
    #[test]
    fn the_shuffle_is_the_documented_fisher_yates() {
        assert_eq!(shuffled(10, 3), [2, 8, 7, 4, 5, 6, 0, 1, 9, 3]);
        assert_eq!(shuffled(10, 0), [6, 3, 2, 9, 8, 1, 4, 7, 0, 5]);
        assert_eq!(shuffled(1, 5), [0]);
    }

    #[test]
    fn split_holds_out_a_seeded_fraction() {
        let d = data(20);
        let (train, val) = d.split(0.25, 1).expect("a split");
        assert_eq!((train.samples(), val.samples()), (15, 5));
        let mut all: Vec<i32> = labels(&train).into_iter().chain(labels(&val)).collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        assert_eq!(d.split(0.25, 1).expect("a split").1, val);
        assert!(matches!(d.split(1.0, 1), Err(DataError::Fraction(_))));
        assert!(matches!(d.split(0.0, 1), Err(DataError::Empty)));
    }

    #[test]
    fn bad_datasets_are_errors() {
        let x = Tensor::f32(&[3, 2], vec![0.0; 6]);
        let y = Tensor::i32(&[4], vec![0; 4]);
        let err = Dataset::new(vec![("x".into(), x.clone()), ("y".into(), y)]).expect_err("lengths differ");
        assert_eq!(err.to_string(), "array `y` has 4 samples, `x` has 3");
        let err = Dataset::new(vec![("s".into(), Tensor::f32(&[], vec![1.0]))]).expect_err("a scalar");
        assert_eq!(err.to_string(), "array `s` is a scalar; every array needs a first (sample) axis");
        let err = Dataset::new(vec![("x".into(), x.clone()), ("x".into(), x.clone())]).expect_err("twice");
        assert_eq!(err.to_string(), "two arrays are named `x`");
        assert!(matches!(Dataset::new(vec![]), Err(DataError::Empty)));
        let d = Dataset::new(vec![("x".into(), x)]).expect("a dataset");
        assert!(matches!(d.batches(0, None, false), Err(DataError::ZeroBatch)));
    }

    #[test]
    fn a_dataset_loads_from_safetensors() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("digits.safetensors");
        let d = data(6);
        crate::weights::save(&path, d.arrays()).expect("saved");
        let loaded = Dataset::from_safetensors(&path).expect("loads");
        assert_eq!(loaded.samples(), 6);
        assert_eq!(loaded.names().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(loaded, d);
    }

    /// A `.npz` archive of `members` (name, bytes), each stored or deflated, as NumPy writes them.
    fn npz(members: &[(&str, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
        use std::io::Write as _;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, bytes) in members {
            zip.start_file(*name, options).expect("a member starts");
            zip.write_all(bytes).expect("a member is written");
        }
        zip.finish().expect("the archive is finished").into_inner()
    }

    /// `data(n)`'s arrays as `.npz` members, `y` first (archive order, not name order, must be kept).
    fn members(n: usize) -> Vec<(&'static str, Vec<u8>)> {
        let d = data(n);
        vec![("y.npy", crate::to_npy_bytes(&d.arrays()[1].1)), ("x.npy", crate::to_npy_bytes(&d.arrays()[0].1))]
    }

    #[test]
    fn a_dataset_loads_from_npz_stored_and_deflated() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let d = data(5);
        let expected = Dataset::new(vec![d.arrays()[1].clone(), d.arrays()[0].clone()]).expect("a dataset");
        for (method, file) in
            [(zip::CompressionMethod::Stored, "stored.npz"), (zip::CompressionMethod::Deflated, "deflated.NPZ")]
        {
            let path = dir.path().join(file);
            let bytes = npz(&members(5), method);
            std::fs::write(&path, &bytes).expect("written");
            let loaded = Dataset::from_npz(&path).expect("loads");
            assert_eq!(loaded.names().collect::<Vec<_>>(), ["y", "x"], "{file}: archive order, suffix dropped");
            assert_eq!(loaded, expected, "{file}: shapes and values");
            assert_eq!(Dataset::open(&path).expect("opens by extension"), expected, "{file}");
        }
    }

    /// `runtime/src/testdata/tiny.npz` was written once by NumPy 2.4.6:
    /// `np.savez_compressed(path, x=np.arange(6, dtype=np.float32).reshape(3, 2), y=np.array([7, 8, 9],
    /// dtype=np.int32))`.
    #[test]
    fn an_npz_written_by_numpy_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testdata/tiny.npz");
        let loaded = Dataset::open(&path).expect("NumPy's archive loads");
        assert_eq!(loaded.names().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(loaded.samples(), 3);
        assert_eq!(loaded.arrays()[0].1, Tensor::f32(&[3, 2], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
        assert_eq!(loaded.arrays()[1].1, Tensor::i32(&[3], vec![7, 8, 9]));
    }

    #[test]
    fn bad_npz_archives_name_the_file_and_member() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("written");
            path
        };
        let whole = npz(&members(4), zip::CompressionMethod::Deflated);
        let truncated = write("truncated.npz", &whole[..whole.len() - 30]);
        let err = Dataset::from_npz(&truncated).expect_err("no central directory");
        assert!(matches!(&err, DataError::Npz { problem: NpzProblem::Archive(_), .. }), "{err:?}");
        let prefix = format!("`{}`: not a readable .npz (zip) archive: ", truncated.display());
        assert!(err.to_string().starts_with(&prefix), "{err}");

        let text = write("text.npz", &npz(&[("notes.txt", b"hello".to_vec())], zip::CompressionMethod::Stored));
        let err = Dataset::from_npz(&text).expect_err("not a .npy member");
        let expected = "member `notes.txt`: not a .npy array (a .npz archive holds only `<name>.npy` members)";
        assert_eq!(err.to_string(), format!("`{}`, {expected}", text.display()));

        let junk = write("junk.npz", &npz(&[("x.npy", b"PK not numpy".to_vec())], zip::CompressionMethod::Deflated));
        let err = Dataset::from_npz(&junk).expect_err("a member that is not .npy data");
        let expected = "member `x.npy`: not a .npy file (it does not start with the magic string \\x93NUMPY)";
        assert_eq!(err.to_string(), format!("`{}`, {expected}", junk.display()));

        // The member's data damaged (the central directory intact): the deflate stream or its CRC fails.
        let mut damaged = npz(&members(4), zip::CompressionMethod::Deflated);
        let data_start = 30 + "y.npy".len();
        for b in &mut damaged[data_start + 5..data_start + 25] {
            *b ^= 0x5a;
        }
        let damaged = write("damaged.npz", &damaged);
        let err = Dataset::from_npz(&damaged).expect_err("a damaged member");
        assert!(matches!(&err, DataError::NpzMember { member, .. } if member == "y.npy"), "{err:?}");

        let missing = dir.path().join("missing.npz");
        let err = Dataset::open(&missing).expect_err("no file");
        assert!(matches!(&err, DataError::Npz { problem: NpzProblem::Read(_), .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("`{}`: cannot read the file: ", missing.display())), "{err}");
    }

    #[test]
    fn a_dataset_loads_from_a_directory_of_npy_files() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let d = data(4);
        // Written in reverse name order; read back sorted by name, other files ignored.
        crate::write_npy(&dir.path().join("y.npy"), &d.arrays()[1].1).expect("written");
        crate::write_npy(&dir.path().join("x.npy"), &d.arrays()[0].1).expect("written");
        std::fs::write(dir.path().join("README.txt"), "not data").expect("written");
        std::fs::create_dir(dir.path().join("more.npy")).expect("a directory named like an array");
        let loaded = Dataset::open(dir.path()).expect("loads");
        assert_eq!(loaded, d);

        let missing = dir.path().join("missing");
        let err = Dataset::from_npy_dir(&missing).expect_err("no directory");
        let prefix = format!("`{}`: cannot list the directory: ", missing.display());
        assert!(err.to_string().starts_with(&prefix), "{err}");

        let empty = tempfile::tempdir().expect("a temporary directory");
        let err = Dataset::open(empty.path()).expect_err("no arrays");
        assert_eq!(err.to_string(), format!("`{}`: the directory has no .npy files", empty.path().display()));

        std::fs::write(dir.path().join("z.npy"), b"junk").expect("written");
        let err = Dataset::open(dir.path()).expect_err("a bad .npy file");
        let bad = dir.path().join("z.npy");
        assert!(err.to_string().starts_with(&format!("`{}`: not a .npy file", bad.display())), "{err}");
    }

    #[test]
    fn open_refuses_other_paths() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let csv = dir.path().join("data.csv");
        std::fs::write(&csv, "1,2\n").expect("written");
        let err = Dataset::open(&csv).expect_err("not a dataset format");
        assert_eq!(
            err.to_string(),
            format!(
                "`{}`: not a dataset: expected a .safetensors file, a .npz archive or a directory of .npy files",
                csv.display()
            )
        );
        let path = dir.path().join("digits.safetensors");
        crate::weights::save(&path, data(3).arrays()).expect("saved");
        assert_eq!(Dataset::open(&path).expect("loads"), data(3));
    }

    proptest::proptest! {
        /// Any damage to an archive (a cut, changed bytes) gives arrays or an error, never a panic.
        #[test]
        fn damaged_npz_archives_never_panic(
            deflated in proptest::prelude::any::<bool>(),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            flips in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                0..4,
            ),
        ) {
            let method = if deflated { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
            let mut bytes = npz(&members(3), method);
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = npz_arrays(Path::new("damaged.npz"), std::io::Cursor::new(bytes));
        }
    }
}
