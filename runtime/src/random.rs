//! Seeded test data: a SplitMix64 generator and `seeded_tensor`, which gives every named input or param its
//! own stream (the seed mixed with the name), so adding one tensor does not change the others' values.
//! Floats are uniform in [-1, 1); integers are 0 or 1 (valid as masks and as ids for any table); bools are
//! fair coin flips. `fill_signature` decides the shapes of the inputs and params a run was not given (from
//! `--dim`, then from what the given inputs fix, else 2) and fills them; `tdslc run` and `tdsl-run` both
//! call it, so the same seed gives the same values, and the same notes, in both tools.

use crate::bind::{Declared, Site};
use crate::program::type_string;
use crate::tensor::MAX_ELEMENTS;
use crate::{DType, Tensor};
use std::collections::HashMap;

/// Why `fill_signature` could not fill a run's inputs and params.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    /// A given input the model does not have.
    #[error("model `{model}` has no input `{name}` (its inputs: {inputs})")]
    UnknownInput {
        /// The model's name.
        model: String,
        /// The name given.
        name: String,
        /// The model's inputs, for the message.
        inputs: String,
    },
    /// A `--dim` the model does not have.
    #[error("model `{model}` has no dimension `{name}`")]
    UnknownDimension {
        /// The model's name.
        model: String,
        /// The name given.
        name: String,
    },
    /// A given input's shape contradicts the sizes given by `--dim` (checked where every symbol of the
    /// declared dimension has a `--dim` value).
    #[error(transparent)]
    DimContradicted(Box<Contradiction>),
    /// A seeded tensor's dimension evaluates to a negative size or overflows.
    #[error("{site} of `{model}` ({declared}): dimension {dim} is negative or overflows")]
    BadDimension {
        /// The model's name.
        model: String,
        /// The input or param.
        site: Site,
        /// Its declared type.
        declared: String,
        /// The dimension that fails.
        dim: String,
    },
    /// A seeded tensor would have more than `MAX_ELEMENTS` elements (checked before anything is allocated).
    #[error(
        "{site} of `{model}` ({declared}) would have {size}, more than the {max} a tensor may have",
        max = MAX_ELEMENTS
    )]
    TooLarge {
        /// The model's name.
        model: String,
        /// The input or param.
        site: Site,
        /// Its declared type.
        declared: String,
        /// Its shape and element count at the run's sizes (`shape [2, 3]: 6 elements`).
        size: String,
    },
}

/// A given input whose shape contradicts `--dim` (`FillError::DimContradicted`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "input `{input}` of `{model}` ({declared}) contradicts {given}: axis {axis} of the file is {actual}, not \
     {dim} = {expected}"
)]
pub struct Contradiction {
    /// The model's name.
    pub model: String,
    /// The input's name.
    pub input: String,
    /// Its declared type.
    pub declared: String,
    /// The `--dim` options the declared dimension uses (`--dim B=2`).
    pub given: String,
    /// The axis that disagrees.
    pub axis: usize,
    /// Its size in the given tensor.
    pub actual: usize,
    /// The declared dimension (`B`, `B + 1`).
    pub dim: String,
    /// Its value at the `--dim` sizes.
    pub expected: i64,
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for test data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), with 24 random bits.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// A tensor of `dtype` and `shape`: floats uniform in [-1, 1), integers in `0..int_range`.
    pub fn tensor(&mut self, dtype: DType, shape: &[usize], int_range: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let range = int_range.max(1);
        match dtype {
            DType::F32 => Tensor::f32(shape, (0..n).map(|_| self.unit()).collect()),
            DType::F16 => Tensor::f16(shape, (0..n).map(|_| half::f16::from_f32(self.unit())).collect()),
            DType::I32 => Tensor::i32(shape, (0..n).map(|_| (self.next_u64() % range) as i32).collect()),
            DType::U32 => Tensor::u32(shape, (0..n).map(|_| (self.next_u64() % range) as u32).collect()),
            DType::Bool => Tensor::bool(shape, (0..n).map(|_| self.next_u64() & 1 == 1).collect()),
        }
    }
}

/// The seeded value of the input or param called `name` (integers are 0 or 1).
pub fn seeded_tensor(name: &str, dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    // FNV-1a of the name, mixed with the seed.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    SplitMix64::new(seed ^ hash).tensor(dtype, shape, 2)
}

/// The inputs and params of a run: the given inputs, seeded values for the rest (see `fill_signature`).
#[derive(Clone, Debug)]
pub struct Filled {
    /// Every input, in signature order.
    pub inputs: Vec<Tensor>,
    /// Seeded params by key; empty when the run has weights.
    pub params: HashMap<String, Tensor>,
    /// Names of the inputs that are seeded values.
    pub random_inputs: Vec<String>,
    /// Symbols that got the default size 2 (neither `--dim` nor a given input fixed them).
    pub defaulted: Vec<String>,
}

impl Filled {
    /// What a run tells the user about its random values (nothing when none are random):
    /// `note: 1 input(s) (x) and 4 param(s) of `mlp` are seeded random values (seed 5)`.
    pub fn notes(&self, model: &str, seed: u64) -> Vec<String> {
        if self.random_inputs.is_empty() && self.params.is_empty() {
            return Vec::new();
        }
        let mut notes = Vec::new();
        if !self.defaulted.is_empty() {
            notes
                .push(format!("note: dimensions {} set to 2 (choose with --dim NAME=SIZE)", self.defaulted.join(", ")));
        }
        let named =
            if self.random_inputs.is_empty() { String::new() } else { format!(" ({})", self.random_inputs.join(", ")) };
        notes.push(format!(
            "note: {} input(s){named} and {} param(s) of `{model}` are seeded random values (seed {seed})",
            self.random_inputs.len(),
            self.params.len(),
        ));
        notes
    }
}

/// `Err` naming the first of `given` (input names, sorted) and then of `dims` that the model `model`
/// (symbols `symbols`, inputs `inputs`) does not have: the first check of `fill_signature`, on its own so
/// that a tool running several models can check the options against each before it runs any.
pub fn check_names(
    model: &str,
    symbols: &[String],
    inputs: &[&str],
    given: &[&str],
    dims: &[(String, i64)],
) -> Result<(), FillError> {
    let mut unknown: Vec<&str> = given.iter().copied().filter(|n| !inputs.contains(n)).collect();
    unknown.sort();
    if let Some(name) = unknown.first() {
        return Err(FillError::UnknownInput {
            model: model.to_string(),
            name: name.to_string(),
            inputs: inputs.join(", "),
        });
    }
    if let Some((name, _)) = dims.iter().find(|(n, _)| !symbols.contains(n)) {
        return Err(FillError::UnknownDimension { model: model.to_string(), name: name.clone() });
    }
    Ok(())
}

/// The inputs of a run of the model `model` (symbols `symbols`, signature `inputs`, params `params`): each
/// input in `given` (by name) as it is, the others seeded; and, when `params` is `Some`, every param seeded
/// (`None`: the run has weights). Random shapes use the symbol sizes of `dims` (by name), else what a given
/// input fixes where its declared dimension is a bare symbol, else 2. A name in `given` or `dims` that the
/// model does not have is an error naming it, and so is a given input whose shape contradicts `dims`.
pub fn fill_signature(
    model: &str,
    symbols: &[String],
    inputs: &[Declared],
    params: Option<&[Declared]>,
    mut given: HashMap<String, Tensor>,
    dims: &[(String, i64)],
    seed: u64,
) -> Result<Filled, FillError> {
    let input_names: Vec<&str> = inputs.iter().map(|d| d.site.name()).collect();
    let given_names: Vec<&str> = given.keys().map(String::as_str).collect();
    check_names(model, symbols, &input_names, &given_names, dims)?;
    let mut sizes: Vec<Option<i64>> =
        symbols.iter().map(|s| dims.iter().find(|(n, _)| n == s).map(|(_, v)| *v)).collect();
    // A given input must agree with every `--dim` its declared shape uses; a rank mismatch is binding's
    // error (it names the expected rank), so only inputs of the declared rank are compared here.
    let mut given_names: Vec<&String> = given.keys().collect();
    given_names.sort();
    for name in given_names {
        let (Some(declared), Some(tensor)) = (inputs.iter().find(|d| d.site.name() == name), given.get(name)) else {
            continue;
        };
        if declared.shape.len() != tensor.shape.len() {
            continue;
        }
        for (axis, (dim, &actual)) in declared.shape.iter().zip(&tensor.shape).enumerate() {
            let Some(expected) = dim.eval_with(&|id| sizes.get(id.0 as usize).copied().flatten()) else { continue };
            if dim.as_const().is_some() || i64::try_from(actual).ok() == Some(expected) {
                continue;
            }
            let given = dim
                .symbols()
                .iter()
                .filter_map(|id| symbols.get(id.0 as usize))
                .filter_map(|s| dims.iter().find(|(n, _)| n == s))
                .map(|(n, v)| format!("--dim {n}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            return Err(FillError::DimContradicted(Box::new(Contradiction {
                model: model.to_string(),
                input: name.clone(),
                declared: type_string(declared.dtype, &declared.shape, symbols),
                given,
                axis,
                actual,
                dim: dim.named(symbols).to_string(),
                expected,
            })));
        }
    }
    for declared in inputs {
        let Some(tensor) = given.get(declared.site.name()) else { continue };
        for (dim, &actual) in declared.shape.iter().zip(&tensor.shape) {
            if let Some(sym) = dim.as_sym()
                && let Some(slot) = sizes.get_mut(sym.0 as usize)
                && slot.is_none()
            {
                *slot = i64::try_from(actual).ok();
            }
        }
    }
    let defaulted = symbols.iter().zip(&sizes).filter(|(_, v)| v.is_none()).map(|(s, _)| s.clone()).collect();
    let sizes: Vec<i64> = sizes.iter().map(|v| v.unwrap_or(2)).collect();
    let shape_of = |declared: &Declared| -> Result<Vec<usize>, FillError> {
        let shape = declared
            .shape
            .iter()
            .map(|d| {
                d.eval_at(&sizes).and_then(|v| usize::try_from(v).ok()).ok_or_else(|| FillError::BadDimension {
                    model: model.to_string(),
                    site: declared.site.clone(),
                    declared: type_string(declared.dtype, &declared.shape, symbols),
                    dim: d.named(symbols).to_string(),
                })
            })
            .collect::<Result<Vec<usize>, FillError>>()?;
        // Every input and param is sized before the first is allocated, so a run too large fails at once.
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        match count {
            Some(n) if n <= MAX_ELEMENTS => Ok(shape),
            _ => Err(FillError::TooLarge {
                model: model.to_string(),
                site: declared.site.clone(),
                declared: type_string(declared.dtype, &declared.shape, symbols),
                size: format!(
                    "shape {shape:?}: {} elements",
                    count.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
                ),
            }),
        }
    };
    // Sizes first: nothing is allocated unless every seeded tensor fits.
    let seeded_params = params.unwrap_or_default();
    for declared in inputs.iter().filter(|d| !given.contains_key(d.site.name())).chain(seeded_params) {
        shape_of(declared)?;
    }
    let mut filled = Filled { inputs: Vec::new(), params: HashMap::new(), random_inputs: Vec::new(), defaulted };
    for declared in inputs {
        let name = declared.site.name();
        match given.remove(name) {
            Some(tensor) => filled.inputs.push(tensor),
            None => {
                filled.inputs.push(seeded_tensor(name, declared.dtype, &shape_of(declared)?, seed));
                filled.random_inputs.push(name.to_string());
            }
        }
    }
    for declared in seeded_params {
        if let Site::Param(key) = &declared.site {
            let tensor = seeded_tensor(key, declared.dtype, &shape_of(declared)?, seed);
            filled.params.insert(key.clone(), tensor);
        }
    }
    Ok(filled)
}
