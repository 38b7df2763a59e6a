//! Binding symbolic dimensions from the actual inputs and params: a declared dimension that is exactly one
//! symbol binds it (first binding wins; a different later value is a conflict naming both places), then every
//! declared dimension is evaluated and compared with the actual size. All problems are collected, so a
//! weights file with several wrong params is reported in one error.

use super::RunError;
use super::{Tensor, element_count};
use crate::dim::{Dim, SymId};
use crate::ir::{Graph, Op, TensorType};
use std::collections::HashMap;
use std::fmt;

/// Where a tensor given to the interpreter comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Site {
    Input(String),
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
    pub value: i64,
    pub site: Site,
    pub axis: usize,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (axis {} of {})", self.value, self.axis, self.site)
    }
}

/// One problem with the inputs or params given to `run`/`bind_symbols`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("model `{model}` takes {expected} input(s) ({signature}), but {got} were given")]
    InputCount { model: String, expected: usize, got: usize, signature: String },
    /// Wrong dtype, rank or dimension, or a tensor whose data does not fit its own shape.
    #[error("{site}: expected {expected}, got {got}: {problem}")]
    Mismatch { site: Site, expected: String, got: String, problem: String },
    #[error("param `{key}` ({expected}) is missing")]
    MissingParam { key: String, expected: String },
    #[error("symbol `{symbol}` is {first} but {second}")]
    SymbolConflict { symbol: String, first: Binding, second: Binding },
    #[error("symbol `{symbol}` is {binding}, but every dimension must be at least 1")]
    SymbolTooSmall { symbol: String, binding: Binding },
    #[error("symbol `{symbol}` is not bound: no input or param has it as a whole dimension")]
    Unbound { symbol: String },
}

/// Binds every symbol of `graph` (indexed by `SymId`) from the shapes of `inputs` (in signature order) and
/// `params` (by key; extra entries are ignored), and checks every declared type against its tensor.
pub fn bind_symbols(graph: &Graph, inputs: &[Tensor], params: &HashMap<String, Tensor>) -> Result<Vec<i64>, RunError> {
    let mut problems = Vec::new();
    if inputs.len() != graph.inputs.len() {
        let signature: Vec<String> = graph
            .inputs
            .iter()
            .filter_map(|&id| graph.nodes.get(id))
            .map(|n| match &n.op {
                Op::Input { name } => format!("{name}: {}", graph.type_to_string(&n.ty)),
                _ => graph.type_to_string(&n.ty),
            })
            .collect();
        problems.push(BindError::InputCount {
            model: graph.name.clone(),
            expected: graph.inputs.len(),
            got: inputs.len(),
            signature: signature.join(", "),
        });
        return Err(RunError::Bind(problems));
    }
    let mut sites: Vec<(Site, &TensorType, &Tensor)> = Vec::new();
    for (&id, tensor) in graph.inputs.iter().zip(inputs) {
        let Some(node) = graph.nodes.get(id) else { continue };
        let name = match &node.op {
            Op::Input { name } => name.clone(),
            _ => format!("%{}", id.index()),
        };
        sites.push((Site::Input(name), &node.ty, tensor));
    }
    for &id in &graph.params {
        let Some(node) = graph.nodes.get(id) else { continue };
        let Op::Param { key } = &node.op else { continue };
        match params.get(key) {
            Some(tensor) => sites.push((Site::Param(key.clone()), &node.ty, tensor)),
            None => {
                problems.push(BindError::MissingParam { key: key.clone(), expected: graph.type_to_string(&node.ty) })
            }
        }
    }

    let mismatch = |site: &Site, ty: &TensorType, t: &Tensor, problem: String| BindError::Mismatch {
        site: site.clone(),
        expected: graph.type_to_string(ty),
        got: t.type_string(),
        problem,
    };
    // Tensors whose shape can be trusted for binding.
    let mut usable = vec![true; sites.len()];
    let mut any_unusable = false;
    for (i, (site, ty, t)) in sites.iter().enumerate() {
        if element_count(&t.shape) != Some(t.data.len()) || t.data.dtype() != t.dtype {
            let problem = format!(
                "the tensor is malformed: {} {} values for shape {:?}",
                t.data.len(),
                t.data.dtype().name(),
                t.shape
            );
            problems.push(mismatch(site, ty, t, problem));
            usable[i] = false;
            any_unusable = true;
            continue;
        }
        if t.dtype != ty.dtype {
            problems.push(mismatch(site, ty, t, format!("dtype is {}, expected {}", t.dtype.name(), ty.dtype.name())));
        }
        if t.shape.len() != ty.rank() {
            problems.push(mismatch(site, ty, t, format!("rank is {}, expected {}", t.shape.len(), ty.rank())));
            usable[i] = false;
            any_unusable = true;
        }
    }

    // Bind bare symbols, first binding wins.
    let n_syms = graph.symbols.len();
    let mut bound: Vec<Option<Binding>> = vec![None; n_syms];
    let mut bad_symbol = vec![false; n_syms];
    for (i, (site, ty, t)) in sites.iter().enumerate() {
        if !usable[i] {
            continue;
        }
        for (axis, (dim, &actual)) in ty.shape.iter().zip(&t.shape).enumerate() {
            let Some(sym) = dim.as_sym() else { continue };
            let Some(slot) = bound.get_mut(sym.0 as usize) else { continue };
            let binding = Binding { value: i64::try_from(actual).unwrap_or(i64::MAX), site: site.clone(), axis };
            match slot {
                None => {
                    if binding.value < 1 {
                        problems.push(BindError::SymbolTooSmall {
                            symbol: graph.symbol_name(sym),
                            binding: binding.clone(),
                        });
                        bad_symbol[sym.0 as usize] = true;
                    }
                    *slot = Some(binding);
                }
                Some(first) if first.value != binding.value => {
                    problems.push(BindError::SymbolConflict {
                        symbol: graph.symbol_name(sym),
                        first: first.clone(),
                        second: binding,
                    });
                    bad_symbol[sym.0 as usize] = true;
                }
                Some(_) => {}
            }
        }
    }

    // Check every declared dimension that is not a bare symbol.
    let values: Vec<i64> = bound.iter().map(|b| b.as_ref().map_or(0, |b| b.value)).collect();
    for (i, (site, ty, t)) in sites.iter().enumerate() {
        if !usable[i] {
            continue;
        }
        for (axis, (dim, &actual)) in ty.shape.iter().zip(&t.shape).enumerate() {
            if dim.as_sym().is_some() {
                continue;
            }
            let syms = dim.symbols();
            let known = syms.iter().all(|s| {
                let k = s.0 as usize;
                k < n_syms && bound[k].is_some() && !bad_symbol[k]
            });
            if !known {
                continue;
            }
            let expected = dim.eval(&|s: SymId| values[s.0 as usize]);
            if expected.is_some_and(|e| i64::try_from(actual).is_ok_and(|a| a == e)) {
                continue;
            }
            let shown = describe_dim(graph, dim, expected, &syms, &bound);
            problems.push(mismatch(site, ty, t, format!("axis {axis} is {actual}, expected {shown}")));
        }
    }

    if !any_unusable {
        for (k, b) in bound.iter().enumerate() {
            if b.is_none() {
                problems.push(BindError::Unbound { symbol: graph.symbol_name(SymId(k as u32)) });
            }
        }
    }
    if problems.is_empty() { Ok(values) } else { Err(RunError::Bind(problems)) }
}

/// `2*S = 8 (S = 4 (axis 0 of input `y`))`.
fn describe_dim(graph: &Graph, dim: &Dim, value: Option<i64>, syms: &[SymId], bound: &[Option<Binding>]) -> String {
    let text = graph.dim_to_string(dim);
    if syms.is_empty() {
        return text;
    }
    let value = value.map_or_else(|| "a value that overflows".to_string(), |v| v.to_string());
    let wheres: Vec<String> = syms
        .iter()
        .filter_map(|s| bound.get(s.0 as usize)?.as_ref().map(|b| format!("{} = {b}", graph.symbol_name(*s))))
        .collect();
    format!("{text} = {value} where {}", wheres.join(", "))
}

/// The message of `RunError::Bind`.
pub(crate) fn bind_message(problems: &[BindError]) -> String {
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
