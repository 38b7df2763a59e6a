//! Reverse-mode differentiation on the typed IR. `grad` appends to a graph the nodes that compute the
//! gradient of a scalar node with respect to other nodes: one backward sweep over the nodes the loss depends
//! on, in reverse order, each node's rule (`rules.rs`, one per op; index notation in `map.rs`) adding its
//! contributions to its operands' gradients. The result is ordinary IR: the IR passes simplify it and fusion
//! schedules it like any forward graph. The checker calls it where a program writes `grad(loss, x)` or
//! declares `grad(loss)` outputs (after inlining, before the IR passes and fusion).

mod map;
mod rules;

use crate::dim::Dim;
use crate::ir::{BinaryOp, DType, Graph, Node, NodeId, Op, Scalar, TensorType, UnaryOp};
use crate::span::Span;
use std::collections::HashMap;

pub(crate) use rules::Algebra;

/// Why a gradient cannot be taken; the checker reports each with a code of its own (E0501..E0503).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GradError {
    #[error("the differentiated value has rank {0}; `grad` needs a scalar (rank 0)")]
    NotScalar(usize),
    #[error("the differentiated value has dtype {0}; `grad` needs a float")]
    NotFloat(&'static str),
    #[error("the value to differentiate with respect to has dtype {0}; only float values have gradients")]
    WrtNotFloat(&'static str),
}

/// Appends to `graph` the gradient of `loss` (a rank-0 float node) with respect to each of `wrt` (float
/// nodes of `graph`); returns one node per `wrt`, of its type. A value the loss does not depend on has a
/// zero gradient. New nodes carry `span`.
pub fn grad(graph: &mut Graph, loss: NodeId, wrt: &[NodeId], span: Span) -> Result<Vec<NodeId>, GradError> {
    let loss_ty = graph.nodes[loss].ty.clone();
    if loss_ty.rank() != 0 {
        return Err(GradError::NotScalar(loss_ty.rank()));
    }
    if !loss_ty.dtype.is_float() {
        return Err(GradError::NotFloat(loss_ty.dtype.name()));
    }
    if let Some(&w) = wrt.iter().find(|&&w| !graph.nodes[w].ty.dtype.is_float()) {
        return Err(GradError::WrtNotFloat(graph.nodes[w].ty.dtype.name()));
    }
    let n = loss.index() + 1;
    // `depends[i]`: node i is one of `wrt` or reads one (so a gradient flowing into it matters).
    let mut depends = vec![false; n];
    for &w in wrt {
        if w.index() < n {
            depends[w.index()] = true;
        }
    }
    for (id, node) in graph.nodes.iter().take(n) {
        if !depends[id.index()] && node.op.operands().iter().any(|o| depends[o.index()]) {
            depends[id.index()] = true;
        }
    }
    let mut t = Tensors { graph, span };
    let mut adjoint: HashMap<NodeId, NodeId> = HashMap::new();
    let one = t.add(Op::Constant(Scalar::Float(1.0)), loss_ty);
    adjoint.insert(loss, one);
    let need = |o: NodeId| o.index() < n && depends[o.index()];
    // A rule may route a contribution past a node nobody asked the gradient of (`rules::shared_weight`).
    let skip = |o: NodeId| !wrt.contains(&o);
    for index in (0..n).rev() {
        let id = NodeId::new(index);
        if !depends[index] {
            continue;
        }
        let Some(&g) = adjoint.get(&id) else { continue };
        let contributions = match &t.graph.nodes[id].op {
            Op::Map(_) => map::vjp(&mut t, id, g, &need),
            _ => rules::vjp(&mut t, id, g, &need, &skip),
        };
        for (operand, contribution) in contributions {
            let total = match adjoint.get(&operand) {
                Some(&sum) => {
                    let ty = t.graph.nodes[operand].ty.clone();
                    t.add(Op::Binary(BinaryOp::Add, sum, contribution), ty)
                }
                None => contribution,
            };
            adjoint.insert(operand, total);
        }
    }
    Ok(wrt
        .iter()
        .map(|w| match adjoint.get(w) {
            Some(&g) => g,
            None => {
                let ty = t.graph.nodes[*w].ty.clone();
                let zero = t.add(Op::Constant(Scalar::Float(0.0)), TensorType { dtype: ty.dtype, shape: vec![] });
                t.broadcast_to(zero, &ty.shape)
            }
        })
        .collect())
}

/// The key of the output holding a param's gradient: `grad.` and the param's key.
pub fn grad_output_name(param_key: &str) -> String {
    format!("grad.{param_key}")
}

/// Builds gradient nodes into a graph: the tensor side of `Algebra`.
pub(crate) struct Tensors<'g> {
    pub(crate) graph: &'g mut Graph,
    pub(crate) span: Span,
}

impl Tensors<'_> {
    pub(crate) fn add(&mut self, op: Op, ty: TensorType) -> NodeId {
        self.graph.nodes.append(Node { op, ty }, self.span)
    }

    pub(crate) fn ty(&self, id: NodeId) -> TensorType {
        self.graph.nodes[id].ty.clone()
    }

    /// `x` broadcast to `shape` (itself when it already has it).
    pub(crate) fn broadcast_to(&mut self, x: NodeId, shape: &[Dim]) -> NodeId {
        let ty = self.ty(x);
        if ty.shape == shape {
            return x;
        }
        self.add(Op::Broadcast(x), TensorType { dtype: ty.dtype, shape: shape.to_vec() })
    }

    /// `x` with its last two axes swapped.
    pub(crate) fn transpose_last(&mut self, x: NodeId) -> NodeId {
        let ty = self.ty(x);
        let r = ty.rank();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        let shape = perm.iter().map(|&p| ty.shape[p].clone()).collect();
        self.add(Op::Permute(x, perm), TensorType { dtype: ty.dtype, shape })
    }
}

impl Algebra for Tensors<'_> {
    type V = NodeId;
    fn dtype(&self, v: NodeId) -> DType {
        self.graph.nodes[v].ty.dtype
    }
    fn unary(&mut self, op: UnaryOp, a: NodeId) -> NodeId {
        let ty = self.ty(a);
        self.add(Op::Unary(op, a), ty)
    }
    fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        let mut ty = self.ty(a);
        if op.is_comparison() {
            ty.dtype = DType::Bool;
        }
        self.add(Op::Binary(op, a, b), ty)
    }
    fn select(&mut self, cond: NodeId, on_true: NodeId, on_false: NodeId) -> NodeId {
        let ty = self.ty(on_true);
        self.add(Op::Select { cond, on_true, on_false }, ty)
    }
    fn cast(&mut self, a: NodeId, dtype: DType) -> NodeId {
        let ty = self.ty(a);
        self.add(Op::Cast(a), TensorType { dtype, shape: ty.shape })
    }
    fn constant(&mut self, value: f64, like: NodeId) -> NodeId {
        let ty = self.ty(like);
        let c = self.add(Op::Constant(Scalar::Float(value)), TensorType { dtype: ty.dtype, shape: vec![] });
        self.broadcast_to(c, &ty.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ReduceOp;
    use crate::ir::build::{Builder, c};

    /// The checker reports these before calling `grad`; a caller building IR directly gets them as errors.
    #[test]
    fn grad_refuses_what_has_no_gradient() {
        let mut b = Builder::new("g");
        let x = b.input("x", DType::F32, &[c(3)]);
        let ids = b.input("ids", DType::I32, &[c(3)]);
        let y = b.unary(UnaryOp::Exp, x);
        let s = b.node(Op::Reduce { op: ReduceOp::Sum, input: y, axes: vec![0] }, DType::F32, &[]);
        let n = b.node(Op::Reduce { op: ReduceOp::Sum, input: ids, axes: vec![0] }, DType::I32, &[]);
        let span = Span::default();
        assert_eq!(grad(&mut b.g, y, &[x], span), Err(GradError::NotScalar(1)));
        assert_eq!(grad(&mut b.g, n, &[x], span), Err(GradError::NotFloat("i32")));
        assert_eq!(grad(&mut b.g, s, &[ids], span), Err(GradError::WrtNotFloat("i32")));
        let before = b.g.nodes.len();
        let g = grad(&mut b.g, s, &[x], span).expect("a float scalar");
        assert!(b.g.nodes.len() > before, "the gradient is appended to the graph");
        assert_eq!(b.g.nodes[g[0]].ty, b.g.nodes[x].ty);
        crate::ir::verify(&b.g).expect("the graph with its gradient verifies");
    }
}
