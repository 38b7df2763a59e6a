//! Binding symbolic dimensions for the interpreter: the rules and messages live in the runtime
//! (`tdsl_runtime::bind`, shared with the GPU executor); this adapts a graph's signature to the runtime's
//! form (the graph's `Dim`s are the runtime's own type) and re-exports its types.
//! The graph must be verified: input and param handles that name no node are skipped.

use super::RunError;
use super::Tensor;
use crate::ir::{Graph, Op};
use std::collections::HashMap;
use tdsl_runtime::bind::{Declared, Given, Signature};

pub use tdsl_runtime::bind::{BindError, Binding, Site, bind_message};

/// Binds every symbol of `graph` (indexed by `SymId`) from the shapes of `inputs` (in signature order) and
/// `params` (by key; extra entries are ignored), and checks every declared type against its tensor.
pub fn bind_symbols(graph: &Graph, inputs: &[Tensor], params: &HashMap<String, Tensor>) -> Result<Vec<i64>, RunError> {
    let (symbols, declared_inputs, declared_params) = signature(graph);
    let signature =
        Signature { model: &graph.name, symbols: &symbols, inputs: &declared_inputs, params: &declared_params };
    tdsl_runtime::bind::bind_symbols(&signature, inputs, &|key| params.get(key).map(Given::Tensor))
        .map_err(RunError::Bind)
}

/// `graph`'s signature in the runtime's form: symbol names, inputs in signature order and params, each with
/// its shape (what `tdsl_runtime::random::fill_signature` and binding take).
pub fn signature(graph: &Graph) -> (Vec<String>, Vec<Declared>, Vec<Declared>) {
    let symbols: Vec<String> = graph.symbols.iter().map(|s| s.name.clone()).collect();
    let declared = |ids: &[crate::ir::NodeId]| -> Vec<Declared> {
        ids.iter()
            .filter_map(|&id| {
                let node = graph.nodes.get(id)?;
                let site = match &node.op {
                    Op::Input { name } => Site::Input(name.clone()),
                    Op::Param { key } => Site::Param(key.clone()),
                    _ => return None,
                };
                Some(Declared { site, dtype: node.ty.dtype, shape: node.ty.shape.clone() })
            })
            .collect()
    };
    (symbols, declared(&graph.inputs), declared(&graph.params))
}
