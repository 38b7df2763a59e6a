//! Binding symbolic dimensions for the interpreter: the rules and messages live in the runtime
//! (`tdsl_runtime::bind`, shared with the GPU executor); this adapts a graph's signature to the runtime's
//! form (`Dim::to_expr` turns each `Dim` into a `DimExpr`, which prints identically) and re-exports its types.
//! The graph must be verified: input and param handles that name no node are skipped.

use super::RunError;
use super::Tensor;
use crate::dim::Dim;
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
/// its `DimExpr` shape (what `tdsl_runtime::random::fill_signature` and binding take).
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
                Some(Declared { site, dtype: node.ty.dtype, shape: node.ty.shape.iter().map(Dim::to_expr).collect() })
            })
            .collect()
    };
    (symbols, declared(&graph.inputs), declared(&graph.params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dim::SymId;

    /// Every way a `Dim` prints (signs, coefficients, degrees, nested floor divisions) prints the same as its
    /// `DimExpr`, and both evaluate alike: binding messages must not change with the move to the runtime.
    #[test]
    fn dim_exprs_print_and_evaluate_like_dims() {
        let names = ["B", "S", "H"].map(String::from);
        let s = |i| Dim::sym(SymId(i));
        let c = Dim::constant;
        let b_s = s(0).mul(&s(1)).unwrap();
        let halves = s(1).sub(&c(1)).unwrap().div(&c(2)).unwrap();
        let dims = [
            c(0),
            c(7),
            c(-3),
            s(1),
            s(1).scale(2).unwrap(),
            s(1).neg().unwrap(),
            c(1).sub(&s(2)).unwrap(),
            s(2).sub(&s(1)).unwrap().add(&c(1)).unwrap(),
            b_s.scale(2).unwrap().sub(&s(2)).unwrap(),
            b_s.mul(&s(1)).unwrap().add(&s(0)).unwrap(),
            halves.clone(),
            s(1).div(&c(2)).unwrap(),
            halves.scale(3).unwrap(),
            halves.mul(&s(0)).unwrap().add(&c(5)).unwrap(),
            halves.add(&s(2)).unwrap().div(&c(3)).unwrap().sub(&s(0)).unwrap(),
            s(0).mul(&s(2)).unwrap().add(&s(1)).unwrap().div(&c(4)).unwrap(),
        ];
        let values = [3i64, 8, 5];
        for dim in &dims {
            let expr = dim.to_expr();
            let by_id = |id: SymId| names[id.0 as usize].clone();
            assert_eq!(expr.display(&names).to_string(), dim.display(&by_id).to_string(), "{dim:?}");
            assert_eq!(expr.eval(&values), dim.eval(&|id: SymId| values[id.0 as usize]), "{dim:?}");
            assert_eq!(expr.as_sym(), dim.as_sym().map(|id| id.0));
        }
    }
}
