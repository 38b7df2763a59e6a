//! Binding symbolic dimensions from the actual inputs and params of a run, shared by the compiler's
//! reference interpreter (which adapts its `ir::Graph` signature to a `Signature`) and the GPU executor. A
//! declared dimension that is exactly one symbol binds it (first binding wins; a different later value is a
//! conflict naming both places), then every other declared dimension is evaluated and compared with the
//! actual size. All problems are collected, so a weights file with several wrong params is reported in one
//! error. Symbols must be at least 1; a symbol no input or param has as a whole dimension is unbound.

use crate::DType;
use crate::dim::{Dim, SymId};
use crate::program::type_string;
use crate::tensor::{Tensor, element_count};
use std::fmt;

/// Where a tensor given to a run comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Site {
    /// An input, by name.
    Input(String),
    /// A param, by its weight-file key.
    Param(String),
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Site::Input(name) => write!(f, "input `{name}`"),
            Site::Param(key) => write!(f, "param `{key}`"),
        }
    }
}

/// Where a symbol got its value: a tensor and an axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The symbol's value there.
    pub value: i64,
    /// The tensor that gave it.
    pub site: Site,
    /// The axis of that tensor.
    pub axis: usize,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (axis {} of {})", self.value, self.axis, self.site)
    }
}

/// One problem with the inputs or params given to a run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The wrong number of inputs.
    #[error("model `{model}` takes {expected} input(s) ({signature}), but {got} were given")]
    InputCount {
        /// The model's name.
        model: String,
        /// Inputs it takes.
        expected: usize,
        /// Inputs given.
        got: usize,
        /// Its inputs with their types, for the message.
        signature: String,
    },
    /// Wrong dtype, rank or dimension, or a tensor whose data does not fit its own shape.
    #[error("{site}: expected {expected}, got {got}: {problem}")]
    Mismatch {
        /// The tensor.
        site: Site,
        /// Its declared type.
        expected: String,
        /// The type given.
        got: String,
        /// What differs.
        problem: String,
    },
    /// A declared param that the params source does not have.
    #[error("param `{key}` ({expected}) is missing")]
    MissingParam {
        /// The param's key.
        key: String,
        /// Its declared type.
        expected: String,
    },
    /// Two tensors give a symbol different values.
    #[error("symbol `{symbol}` is {first} but {second}")]
    SymbolConflict {
        /// The symbol's name.
        symbol: String,
        /// The binding that came first (and wins).
        first: Binding,
        /// The one that disagrees.
        second: Binding,
    },
    /// A symbol bound to a value below 1.
    #[error("symbol `{symbol}` is {binding}, but every dimension must be at least 1")]
    SymbolTooSmall {
        /// The symbol's name.
        symbol: String,
        /// Where it got its value.
        binding: Binding,
    },
    /// A symbol no tensor binds.
    #[error("symbol `{symbol}` is not bound: no input or param has it as a whole dimension")]
    Unbound {
        /// The symbol's name.
        symbol: String,
    },
}

/// A tensor a signature declares: where it comes from and its symbolic type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    /// Input or param, with its name.
    pub site: Site,
    /// Its element type.
    pub dtype: DType,
    /// Its symbolic shape.
    pub shape: Vec<Dim>,
}

/// What a run was given for a declared tensor.
#[derive(Clone, Copy, Debug)]
pub enum Given<'a> {
    /// A host tensor; its data must fit its shape (checked here, since the fields are public).
    Tensor(&'a Tensor),
    /// Only a dtype and a shape, e.g. an entry of a weights file, whose format already ties data to shape.
    Shape {
        /// The element type.
        dtype: DType,
        /// The shape.
        shape: &'a [usize],
    },
}

/// What binding needs to know about a model: its name and symbols (for messages; `SymId(i)` is
/// `symbols[i]`), its inputs in signature order and its params (`Site::Param` each).
#[derive(Clone, Copy, Debug)]
pub struct Signature<'a> {
    /// The model's name.
    pub model: &'a str,
    /// Symbol names, indexed by `SymId`.
    pub symbols: &'a [String],
    /// The inputs, in signature order.
    pub inputs: &'a [Declared],
    /// The params.
    pub params: &'a [Declared],
}

/// Binds every symbol of `signature` from the shapes of `inputs` (in signature order) and the params
/// (`params(key)`; `None` is a missing param; entries the signature does not declare are never asked for),
/// and checks every declared type against its tensor. The values are indexed like `signature.symbols`.
pub fn bind_symbols<'t>(
    signature: &Signature,
    inputs: &'t [Tensor],
    params: &dyn Fn(&str) -> Option<Given<'t>>,
) -> Result<Vec<i64>, Vec<BindError>> {
    let inputs: Vec<Given<'t>> = inputs.iter().map(Given::Tensor).collect();
    bind_given(signature, &inputs, params)
}

/// `bind_symbols` with each input given as a `Given` (a host tensor, or the dtype and shape of a tensor
/// already on the device).
pub fn bind_given<'t>(
    signature: &Signature,
    inputs: &[Given<'t>],
    params: &dyn Fn(&str) -> Option<Given<'t>>,
) -> Result<Vec<i64>, Vec<BindError>> {
    if inputs.len() != signature.inputs.len() {
        return Err(vec![input_count(signature, inputs.len())]);
    }
    let mut missing = Vec::new();
    let mut entries: Vec<(&Declared, Given)> = signature.inputs.iter().zip(inputs).map(|(d, g)| (d, *g)).collect();
    for declared in signature.params {
        match params(declared.site.name()) {
            Some(given) => entries.push((declared, given)),
            None => missing.push(BindError::MissingParam {
                key: declared.site.name().to_string(),
                expected: type_string(declared.dtype, &declared.shape, signature.symbols),
            }),
        }
    }
    let partial = bind_partial(signature.symbols, &entries);
    let mut problems = missing;
    problems.extend(partial.problems.iter().cloned());
    problems.extend(partial.unbound(signature.symbols));
    if problems.is_empty() { Ok(partial.values().into_iter().map(|v| v.unwrap_or(0)).collect()) } else { Err(problems) }
}

/// The message of a list of binding problems: the problem itself when there is one, else a count and one
/// `  - ` line each.
pub fn bind_message(problems: &[BindError]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let mut text = format!("{} problems with the inputs and params:", many.len());
            for p in many {
                text.push_str("\n  - ");
                text.push_str(&p.to_string());
            }
            text
        }
    }
}

impl Site {
    /// The input's name or the param's key.
    pub fn name(&self) -> &str {
        match self {
            Site::Input(name) | Site::Param(name) => name,
        }
    }
}

/// `BindError::InputCount` for `got` inputs.
pub(crate) fn input_count(signature: &Signature, got: usize) -> BindError {
    let listed: Vec<String> = signature
        .inputs
        .iter()
        .map(|d| format!("{}: {}", d.site.name(), type_string(d.dtype, &d.shape, signature.symbols)))
        .collect();
    BindError::InputCount {
        model: signature.model.to_string(),
        expected: signature.inputs.len(),
        got,
        signature: listed.join(", "),
    }
}

/// The outcome of binding some of a signature's tensors, before unbound symbols are judged.
pub(crate) struct Partial {
    bound: Vec<Option<Binding>>,
    /// Symbols that conflict or are below 1: their values are not to be trusted.
    bad: Vec<bool>,
    /// Some tensor's shape could not be used (malformed, wrong rank), so unbound symbols are not reported.
    any_unusable: bool,
    pub problems: Vec<BindError>,
}

impl Partial {
    /// Each symbol's value when it is bound and trustworthy.
    pub fn values(&self) -> Vec<Option<i64>> {
        self.bound.iter().zip(&self.bad).map(|(b, &bad)| b.as_ref().filter(|_| !bad).map(|b| b.value)).collect()
    }

    /// `Unbound` for each symbol nothing bound, unless some shape was unusable (it may have bound it).
    pub fn unbound(&self, symbols: &[String]) -> Vec<BindError> {
        if self.any_unusable {
            return Vec::new();
        }
        (self.bound.iter().enumerate())
            .filter(|(_, b)| b.is_none())
            .map(|(k, _)| BindError::Unbound { symbol: symbol_name(symbols, k) })
            .collect()
    }
}

/// Binds symbols from `entries` and checks each declared type against what was given.
pub(crate) fn bind_partial(symbols: &[String], entries: &[(&Declared, Given)]) -> Partial {
    let mut problems = Vec::new();
    let mismatch = |d: &Declared, given: &Given, problem: String| BindError::Mismatch {
        site: d.site.clone(),
        expected: type_string(d.dtype, &d.shape, symbols),
        got: given.type_string(),
        problem,
    };
    // Tensors whose shape can be trusted for binding.
    let mut usable = vec![true; entries.len()];
    let mut any_unusable = false;
    for (i, (d, given)) in entries.iter().enumerate() {
        if let Given::Tensor(t) = given
            && (element_count(&t.shape) != Some(t.data.len()) || t.data.dtype() != t.dtype)
        {
            let problem = format!(
                "the tensor is malformed: {} {} values for shape {:?}",
                t.data.len(),
                t.data.dtype().name(),
                t.shape
            );
            problems.push(mismatch(d, given, problem));
            usable[i] = false;
            any_unusable = true;
            continue;
        }
        let (dtype, shape) = given.parts();
        if dtype != d.dtype {
            problems.push(mismatch(d, given, format!("dtype is {}, expected {}", dtype.name(), d.dtype.name())));
        }
        if shape.len() != d.shape.len() {
            problems.push(mismatch(d, given, format!("rank is {}, expected {}", shape.len(), d.shape.len())));
            usable[i] = false;
            any_unusable = true;
        }
    }

    // Bind bare symbols, first binding wins.
    let n_syms = symbols.len();
    let mut bound: Vec<Option<Binding>> = vec![None; n_syms];
    let mut bad = vec![false; n_syms];
    for (i, (d, given)) in entries.iter().enumerate() {
        if !usable[i] {
            continue;
        }
        for (axis, (dim, &actual)) in d.shape.iter().zip(given.parts().1).enumerate() {
            let Some(sym) = dim.as_sym().map(|s| s.0 as usize) else { continue };
            let Some(slot) = bound.get_mut(sym) else { continue };
            let binding = Binding { value: i64::try_from(actual).unwrap_or(i64::MAX), site: d.site.clone(), axis };
            match slot {
                None => {
                    if binding.value < 1 {
                        let symbol = symbol_name(symbols, sym);
                        problems.push(BindError::SymbolTooSmall { symbol, binding: binding.clone() });
                        bad[sym] = true;
                    }
                    *slot = Some(binding);
                }
                Some(first) if first.value != binding.value => {
                    let symbol = symbol_name(symbols, sym);
                    problems.push(BindError::SymbolConflict { symbol, first: first.clone(), second: binding });
                    bad[sym] = true;
                }
                Some(_) => {}
            }
        }
    }

    // Check every declared dimension that is not a bare symbol.
    let values: Vec<i64> = bound.iter().map(|b| b.as_ref().map_or(0, |b| b.value)).collect();
    for (i, (d, given)) in entries.iter().enumerate() {
        if !usable[i] {
            continue;
        }
        for (axis, (dim, &actual)) in d.shape.iter().zip(given.parts().1).enumerate() {
            if dim.as_sym().is_some() {
                continue;
            }
            let syms = dim.symbols();
            let known = syms.iter().all(|&s| {
                let k = s.0 as usize;
                k < n_syms && bound[k].is_some() && !bad[k]
            });
            if !known {
                continue;
            }
            let expected = dim.eval_at(&values);
            if expected.is_some_and(|e| i64::try_from(actual).is_ok_and(|a| a == e)) {
                continue;
            }
            let shown = describe_dim(symbols, dim, expected, &syms, &bound);
            problems.push(mismatch(d, given, format!("axis {axis} is {actual}, expected {shown}")));
        }
    }
    Partial { bound, bad, any_unusable, problems }
}

impl Given<'_> {
    fn parts(&self) -> (DType, &[usize]) {
        match self {
            Given::Tensor(t) => (t.dtype, &t.shape),
            Given::Shape { dtype, shape } => (*dtype, shape),
        }
    }

    fn type_string(&self) -> String {
        match self {
            Given::Tensor(t) => t.type_string(),
            Given::Shape { dtype, shape } => {
                let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                format!("{}[{}]", dtype.name(), dims.join(", "))
            }
        }
    }
}

fn symbol_name(symbols: &[String], k: usize) -> String {
    symbols.get(k).cloned().unwrap_or_else(|| format!("?{k}"))
}

/// `2*S = 8 where S = 4 (axis 0 of input `y`)`.
fn describe_dim(
    symbols: &[String],
    dim: &Dim,
    value: Option<i64>,
    syms: &[SymId],
    bound: &[Option<Binding>],
) -> String {
    let text = dim.named(symbols).to_string();
    if syms.is_empty() {
        return text;
    }
    let value = value.map_or_else(|| "a value that overflows".to_string(), |v| v.to_string());
    let wheres: Vec<String> = syms
        .iter()
        .filter_map(|&s| {
            let b = bound.get(s.0 as usize)?.as_ref()?;
            Some(format!("{} = {b}", symbol_name(symbols, s.0 as usize)))
        })
        .collect();
    format!("{text} = {value} where {}", wheres.join(", "))
}
