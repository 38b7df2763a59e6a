//! A builder of IR graphs for unit tests (the interpreter's, the verifier's, the printer's and codegen's):
//! assembles a `Graph` node by node straight from IR types, with no front end involved.

use crate::arena::Arena;
use crate::dim::{Dim, SymId};
use crate::ir::{
    Affine, BinaryOp, DType, Graph, MapOp, Node, NodeId, Op, Output, ReduceOp, Scalar, ScalarExpr, ScalarId,
    ScalarNode, Symbol, TensorType, UnaryOp, VarId,
};
use crate::span::Span;

/// Builds a `Graph` node by node.
pub(crate) struct Builder {
    pub g: Graph,
}

pub(crate) fn c(v: i64) -> Dim {
    Dim::constant(v)
}

pub(crate) fn ty(dtype: DType, shape: &[Dim]) -> TensorType {
    TensorType { dtype, shape: shape.to_vec() }
}

impl Builder {
    pub fn new(name: &str) -> Builder {
        Builder { g: Graph { name: name.to_string(), ..Graph::default() } }
    }
    pub fn sym(&mut self, name: &str) -> Dim {
        self.g.symbols.push(Symbol { name: name.to_string() });
        Dim::sym(SymId(self.g.symbols.len() as u32 - 1))
    }
    pub fn node(&mut self, op: Op, dtype: DType, shape: &[Dim]) -> NodeId {
        self.g.nodes.append(Node { op, ty: ty(dtype, shape) }, Span::default())
    }
    pub fn input(&mut self, name: &str, dtype: DType, shape: &[Dim]) -> NodeId {
        let id = self.node(Op::Input { name: name.to_string() }, dtype, shape);
        self.g.inputs.push(id);
        id
    }
    pub fn param(&mut self, key: &str, dtype: DType, shape: &[Dim]) -> NodeId {
        let id = self.node(Op::Param { key: key.to_string() }, dtype, shape);
        self.g.params.push(id);
        id
    }
    pub fn output(&mut self, name: &str, node: NodeId) {
        self.g.outputs.push(Output { name: name.to_string(), node });
    }
    pub fn ty_of(&self, id: NodeId) -> TensorType {
        self.g.nodes[id].ty.clone()
    }
    /// A same-shaped elementwise binary node.
    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        let t = self.ty_of(a);
        let dtype = if op.is_comparison() { DType::Bool } else { t.dtype };
        self.node(Op::Binary(op, a, b), dtype, &t.shape)
    }
    pub fn unary(&mut self, op: UnaryOp, a: NodeId) -> NodeId {
        let t = self.ty_of(a);
        self.node(Op::Unary(op, a), t.dtype, &t.shape)
    }
}

/// Builds the scalar body of a map.
#[derive(Default)]
pub(crate) struct Body {
    pub exprs: Arena<ScalarNode>,
}

impl Body {
    pub fn add(&mut self, expr: ScalarExpr, dtype: DType) -> ScalarId {
        self.exprs.append(ScalarNode { expr, dtype }, Span::default())
    }
    /// `inputs[input][indices]` with indices given as `(terms, offset)`.
    pub fn load(
        &mut self,
        input: usize,
        dtype: DType,
        indices: &[(&[(u32, i64)], i64)],
        default: Option<Scalar>,
    ) -> ScalarId {
        let indices = indices
            .iter()
            .map(|(terms, offset)| Affine::new(terms.iter().map(|&(v, k)| (VarId(v), c(k))).collect(), c(*offset)))
            .collect();
        self.add(ScalarExpr::Load { input, indices, default }, dtype)
    }
    pub fn bin(&mut self, op: BinaryOp, a: ScalarId, b: ScalarId, dtype: DType) -> ScalarId {
        self.add(ScalarExpr::Binary(op, a, b), dtype)
    }
    pub fn reduce(&mut self, op: ReduceOp, vars: &[u32], body: ScalarId, dtype: DType) -> ScalarId {
        self.add(ScalarExpr::Reduce { op, vars: vars.iter().map(|&v| VarId(v)).collect(), body }, dtype)
    }
    pub fn finish(self, inputs: Vec<NodeId>, extents: Vec<Dim>, body: ScalarId) -> Op {
        Op::Map(Box::new(MapOp { inputs, extents, exprs: self.exprs, body }))
    }
}
