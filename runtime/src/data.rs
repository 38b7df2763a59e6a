//! Training data: named arrays that share their first (sample) axis, from `.npy` files or a safetensors
//! file; a seeded split into training and validation sets; and batches in a seeded shuffled order (a
//! Fisher–Yates shuffle driven by `SplitMix64`, so any language can reproduce the order), with or without
//! the last, short batch (`drop_last`).

use std::path::Path;

use crate::random::SplitMix64;
use crate::tensor::{Tensor, TensorData};
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
}

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
}
