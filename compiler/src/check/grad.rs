//! Gradients in the checker: `grad(y, x)` and the `grad(loss)` entries of a model's output list are checked
//! here (a scalar float loss, a float value to differentiate with respect to; E0501..E0503, R6.5) and then
//! handed to `autodiff::grad`, which appends the backward nodes to the graph being built.

use super::{Elab, Scope, Value};
use crate::diag::{Code, Diagnostic};
use crate::ir::{self, NodeId, Op};
use crate::span::Span;
use crate::syntax::ast;

impl Elab<'_> {
    /// The value `grad` differentiates: a float tensor of rank 0 (E0501, E0502, R6.5).
    pub(super) fn loss(&mut self, y: Value, span: Span) -> Option<NodeId> {
        let Value::Tensor(node) = y else {
            let msg = format!("`grad` of {}, which does not depend on any tensor", y.kind());
            self.error(
                Diagnostic::new(Code::E0502, span, msg)
                    .label("a compile-time constant has no gradient")
                    .note("differentiate a float tensor computed from the value")
                    .rule("R6.5"),
            );
            return None;
        };
        let ty = self.ty(node).clone();
        if !ty.dtype.is_float() {
            let msg = format!("`grad` of a value of dtype {}", ty.dtype.name());
            self.error(
                Diagnostic::new(Code::E0502, span, msg)
                    .label(format!("this is {}", self.show_type(&ty)))
                    .note("only float values have gradients")
                    .rule("R6.5"),
            );
            return None;
        }
        if ty.rank() != 0 {
            let msg = format!("`grad` of a value of shape {}", self.show_shape(&ty.shape));
            self.error(
                Diagnostic::new(Code::E0501, span, msg)
                    .label("this is not a scalar")
                    .note("reduce it to a scalar loss first, e.g. `sum(y)` or `mean(y)`")
                    .rule("R6.5"),
            );
            return None;
        }
        Some(node)
    }

    /// The value `grad` differentiates with respect to: a float tensor (E0503, R6.5).
    pub(super) fn wrt(&mut self, x: Value, span: Span) -> Option<NodeId> {
        match x {
            Value::Tensor(node) if self.ty(node).dtype.is_float() => Some(node),
            Value::Tensor(node) => {
                let msg = format!("`grad` with respect to a tensor of dtype {}", self.ty(node).dtype.name());
                self.error(
                    Diagnostic::new(Code::E0503, span, msg)
                        .label("not a float tensor")
                        .note("integer and bool values have no gradient")
                        .rule("R6.5"),
                );
                None
            }
            other => {
                let msg = format!("`grad` with respect to {}", other.kind());
                self.error(
                    Diagnostic::new(Code::E0503, span, msg)
                        .label("not a tensor")
                        .note("differentiate with respect to a tensor")
                        .rule("R6.5"),
                );
                None
            }
        }
    }

    /// Appends the gradient of `loss` with respect to each of `wrt` (checked by `loss` and `wrt`).
    pub(super) fn differentiate(&mut self, loss: NodeId, wrt: &[NodeId], span: Span) -> Option<Vec<NodeId>> {
        match crate::autodiff::grad(&mut self.graph, loss, wrt, span) {
            Ok(grads) => Some(grads),
            Err(e) => {
                let code = match e {
                    crate::autodiff::GradError::NotScalar(_) => Code::E0501,
                    crate::autodiff::GradError::NotFloat(_) => Code::E0502,
                    crate::autodiff::GradError::WrtNotFloat(_) => Code::E0503,
                };
                self.error(Diagnostic::new(code, span, e.to_string()).rule("R6.5"));
                None
            }
        }
    }

    /// `grad(loss)` in the output list: one output `grad.<key>` per float param, in param order (R4.2,
    /// R6.5).
    pub(super) fn param_grads(&mut self, scope: &Scope, grads: &ast::GradOutputs) {
        if grads.keyword.name != "grad" {
            let msg = format!("`{}(...)` in an output list", grads.keyword.name);
            self.error(
                Diagnostic::new(Code::E0102, grads.keyword.span, msg)
                    .note("outputs are `name: type`, or `grad(loss)` for the gradient of every param")
                    .rule("R4.2"),
            );
            return;
        }
        let loss = match scope.vars.get(&grads.loss.name).cloned() {
            Some(Value::Error) => return,
            Some(value) => value,
            None => {
                let msg = format!("unknown name `{}`", grads.loss.name);
                self.error(Diagnostic::new(Code::E0101, grads.loss.span, msg).rule("R4.1"));
                return;
            }
        };
        let Some(loss) = self.loss(loss, grads.loss.span) else { return };
        let params: Vec<NodeId> =
            self.graph.params.iter().copied().filter(|&p| self.graph.nodes[p].ty.dtype.is_float()).collect();
        if params.is_empty() {
            self.error(
                Diagnostic::new(Code::E0503, grads.span, "`grad(loss)` in a model without float params")
                    .label("there is no param to differentiate with respect to")
                    .note("declare params, or ask for `grad(loss, x)` of a value")
                    .rule("R6.5"),
            );
            return;
        }
        let Some(result) = self.differentiate(loss, &params, grads.span) else { return };
        for (param, g) in params.into_iter().zip(result) {
            let Op::Param { key } = &self.graph.nodes[param].op else { continue };
            let name = crate::autodiff::grad_output_name(key);
            self.graph.outputs.push(ir::Output { name, node: g });
        }
    }
}
