//! Algebraic simplification and constant folding, exact under the interpreter's semantics (so never `x + 0.0
//! -> x` on floats: `-0.0 + 0.0` is `+0.0`):
//! - casts to the same dtype, broadcasts and reshapes to the same shape, identity permutes: dropped;
//! - `broadcast(broadcast(x))`, `reshape(reshape(x))`: one op; `permute(permute(x, p), q)`: one permute;
//! - `x * 1`, `1 * x`, `x / 1`, `x - 0`, `x + -0.0`, `-0.0 + x`, and for integers `x + 0`, `0 + x`: `x`
//!   (a constant operand is a rank-0 `Constant` or a `Broadcast` of one);
//! - elementwise ops whose operands are all rank-0 constants: folded by running the reference interpreter on
//!   that one op, so folding means exactly what running would.

use std::collections::HashMap;

use super::rewrite::Rewriter;
use crate::ir::{BinaryOp, DType, Graph, Node, NodeId, Op, Output, Scalar, TensorType};

pub fn run(graph: &Graph) -> Graph {
    let mut r = Rewriter::new(graph, false);
    for (id, node) in graph.nodes.iter() {
        let op = r.remap(&node.op);
        match simplify(&r.new, &op, &node.ty) {
            Some(Rewrite::To(existing)) => r.set(id, existing),
            Some(Rewrite::Op(op)) => {
                let new = r.emit(Node { op, ty: node.ty.clone() }, graph.nodes.span(id));
                r.set(id, new);
            }
            None => {
                let new = r.emit(Node { op, ty: node.ty.clone() }, graph.nodes.span(id));
                r.set(id, new);
            }
        }
    }
    r.finish()
}

enum Rewrite {
    /// The node is this existing node.
    To(NodeId),
    /// The node is this op instead (same type).
    Op(Op),
}

/// The simpler form of `op` (operands in `g`) with result type `ty`, if there is one.
fn simplify(g: &Graph, op: &Op, ty: &TensorType) -> Option<Rewrite> {
    let node = |id: NodeId| &g.nodes[id];
    match op {
        Op::Cast(a) if node(*a).ty.dtype == ty.dtype => Some(Rewrite::To(*a)),
        Op::Broadcast(a) if node(*a).ty.shape == ty.shape => Some(Rewrite::To(*a)),
        Op::Broadcast(a) => match &node(*a).op {
            Op::Broadcast(inner) => Some(Rewrite::Op(Op::Broadcast(*inner))),
            _ => None,
        },
        Op::Reshape(a) if node(*a).ty.shape == ty.shape => Some(Rewrite::To(*a)),
        Op::Reshape(a) => match &node(*a).op {
            Op::Reshape(inner) if node(*inner).ty.shape == ty.shape => Some(Rewrite::To(*inner)),
            Op::Reshape(inner) => Some(Rewrite::Op(Op::Reshape(*inner))),
            _ => None,
        },
        Op::Permute(a, perm) if perm.iter().enumerate().all(|(i, &p)| i == p) => Some(Rewrite::To(*a)),
        Op::Permute(a, outer) => match &node(*a).op {
            // Result axis i is the inner result's axis outer[i], which is x's axis inner[outer[i]].
            Op::Permute(x, inner) => {
                let composed: Vec<usize> = outer.iter().map(|&o| inner[o]).collect();
                if composed.iter().enumerate().all(|(i, &p)| i == p) {
                    Some(Rewrite::To(*x))
                } else {
                    Some(Rewrite::Op(Op::Permute(*x, composed)))
                }
            }
            _ => None,
        },
        Op::Binary(bop, x, y) => identity(g, *bop, *x, *y, ty).or_else(|| fold(g, op, ty)),
        Op::Unary(..) | Op::Cast(_) | Op::Select { .. } => fold(g, op, ty),
        _ => None,
    }
}

/// `x op c` or `c op x` that is exactly `x`.
fn identity(g: &Graph, op: BinaryOp, x: NodeId, y: NodeId, ty: &TensorType) -> Option<Rewrite> {
    if op.is_comparison() || op.is_logical() || g.nodes[x].ty != *ty || g.nodes[y].ty != *ty {
        return None;
    }
    let int = ty.dtype.is_int();
    let is = |id: NodeId, want: f64| match constant_of(g, id) {
        Some(Scalar::Float(v)) => v == want && v.is_sign_negative() == want.is_sign_negative(),
        Some(Scalar::Int(v)) => v as f64 == want && want.is_sign_positive(),
        _ => false,
    };
    let zero = |id: NodeId| is(id, 0.0) && int;
    let keep_x = match op {
        BinaryOp::Mul => is(y, 1.0),
        BinaryOp::Div => is(y, 1.0),
        BinaryOp::Sub => is(y, 0.0) || is(y, -0.0),
        BinaryOp::Add => zero(y) || is(y, -0.0),
        _ => false,
    };
    let keep_y = match op {
        BinaryOp::Mul => is(x, 1.0),
        BinaryOp::Add => zero(x) || is(x, -0.0),
        _ => false,
    };
    if keep_x {
        Some(Rewrite::To(x))
    } else if keep_y {
        Some(Rewrite::To(y))
    } else {
        None
    }
}

/// The value of a rank-0 `Constant` node, or of a `Broadcast` of one.
fn constant_of(g: &Graph, id: NodeId) -> Option<Scalar> {
    match &g.nodes[id].op {
        Op::Constant(c) => Some(*c),
        Op::Broadcast(inner) => match &g.nodes[*inner].op {
            Op::Constant(c) => Some(*c),
            _ => None,
        },
        _ => None,
    }
}

/// An elementwise op on rank-0 constants, evaluated by the interpreter.
fn fold(g: &Graph, op: &Op, ty: &TensorType) -> Option<Rewrite> {
    if ty.rank() != 0 {
        return None;
    }
    let operands = op.operands();
    if operands.is_empty() || !operands.iter().all(|&o| matches!(g.nodes[o].op, Op::Constant(_))) {
        return None;
    }
    // A one-op graph: the constants, the op, one output.
    let mut tiny = Graph { name: "fold".to_string(), symbols: g.symbols.clone(), ..Graph::default() };
    let mut map = HashMap::new();
    for &o in &operands {
        let id = tiny.nodes.append(g.nodes[o].clone(), crate::span::Span::default());
        map.insert(o, id);
    }
    if !op.is_elementwise() {
        return None;
    }
    let remapped = op.map_operands(|o| map[&o]);
    let out = tiny.nodes.append(Node { op: remapped, ty: ty.clone() }, crate::span::Span::default());
    tiny.outputs.push(Output { name: "value".to_string(), node: out });
    let values = crate::interp::run(&tiny, &[], &HashMap::new()).ok()?;
    let value = values.first()?;
    let scalar = match ty.dtype {
        DType::F32 | DType::F16 => Scalar::Float(*value.to_f64_vec().first()?),
        DType::I32 => Scalar::Int(i64::from(*value.as_i32()?.first()?)),
        DType::U32 => Scalar::Int(i64::from(*value.as_u32()?.first()?)),
        DType::Bool => Scalar::Bool(*value.as_bool()?.first()?),
    };
    Some(Rewrite::Op(Op::Constant(scalar)))
}
