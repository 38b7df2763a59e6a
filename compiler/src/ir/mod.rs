//! The typed tensor IR: one `Graph` per model, a flat arena of `Node`s in dependency order (every operand
//! handle is smaller than the node using it), each with its result `TensorType`. Functions are already
//! inlined and params named by their full keys. Index-notation definitions are `Op::Map` nodes carrying a
//! small scalar expression arena of their own.
//!
//! Invariants (checked by `verify`): operands precede users; every node's type follows from its op and
//! operand types by the rules in spec/ops.md; elementwise ops see equal shapes (broadcasts are explicit
//! `Broadcast` nodes); inputs, params and outputs lists point at the right node kinds.

#[cfg(test)]
pub(crate) mod build;
pub mod print;
pub mod verify;

use crate::arena::{Arena, Handle};
use crate::dim::{Dim, SymId};
use tdsl_runtime::program::{MapOps, OpRef, ScalarNode as OpScalarNode, ScalarOp, ScalarRef};

pub use verify::{VerifyError, verify};

/// Element types: defined in the runtime (which reads and writes tensors of them and never depends on the
/// compiler) and used by the IR as they are.
pub use tdsl_runtime::DType;
pub use tdsl_runtime::Init;
/// The op vocabulary (scalars, elementwise, reduction and scan operators, index variables and affine
/// indices): defined in the runtime, whose `Program` carries each launch's ops (`GroupOps`) to the CPU
/// executor, and used by the IR as it is.
pub use tdsl_runtime::ops::{Affine, ArgOp, BinaryOp, ReduceOp, Scalar, ScanOp, UnaryOp, VarId};

/// Dtype and shape of a tensor value. Rank 0 is a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

/// The shape of a reduction's result with the reduced `axes` kept as 1 (`keepdims`), from its input's shape.
pub fn kept_shape(shape: &[Dim], axes: &[usize]) -> Vec<Dim> {
    shape.iter().enumerate().map(|(i, d)| if axes.contains(&i) { Dim::constant(1) } else { d.clone() }).collect()
}

pub type NodeId = Handle<Node>;

/// One tensor operation and its result type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    pub op: Op,
    pub ty: TensorType,
}

/// Tensor operations. Result shapes are in `Node::ty`; spec/ops.md gives each op's rule and meaning.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// The model input at `Graph::inputs[index]`.
    Input { name: String },
    /// A weight, looked up by its full key in the weights file.
    Param { key: String },
    /// A rank-0 constant of `ty.dtype`.
    Constant(Scalar),
    /// A rank-0 value of a dimension expression, converted to `ty.dtype`.
    DimValue(Dim),
    /// Elementwise; result dtype = operand dtype.
    Unary(UnaryOp, NodeId),
    /// Elementwise over equal shapes; result dtype = operand dtype, or `bool` for comparisons.
    Binary(BinaryOp, NodeId, NodeId),
    /// Elementwise `cond ? on_true : on_false` over equal shapes; `cond` is `bool`.
    Select { cond: NodeId, on_true: NodeId, on_false: NodeId },
    /// Elementwise conversion to `ty.dtype` (floats to ints truncate toward zero and saturate; NaN -> 0;
    /// to bool: `x != 0`; from bool: 0 or 1).
    Cast(NodeId),
    /// NumPy broadcast to `ty.shape`: the operand's shape is right-aligned with it and each operand
    /// dimension equals the result's or is 1.
    Broadcast(NodeId),
    /// Reduces over `axes` (sorted, unique), which are removed from the shape.
    Reduce { op: ReduceOp, input: NodeId, axes: Vec<usize> },
    /// The `i32` position along `axis` (removed from the shape) of the first largest (smallest) element of
    /// each lane of a numeric `input`; a NaN counts as the extreme (the first NaN wins), as in PyTorch.
    ArgReduce { op: ArgOp, input: NodeId, axis: usize },
    /// Inclusive scan along `axis` of a numeric `input`, same type: `out[.., i, ..] = x[.., 0, ..] op .. op
    /// x[.., i, ..]`, accumulated in order from position 0 (floats in f32). `reverse` scans from the last
    /// position instead (`out[.., i, ..]` combines positions `i..`): the gradient of a scan, which only
    /// differentiation writes.
    Scan { op: ScanOp, input: NodeId, axis: usize, reverse: bool },
    /// `[..., M, K] @ [..., K, N] -> [..., M, N]` with identical batch dimensions; floats only.
    MatMul(NodeId, NodeId),
    /// Result axis `i` is operand axis `perm[i]`.
    Permute(NodeId, Vec<usize>),
    /// Same elements in row-major order, new shape `ty.shape`.
    Reshape(NodeId),
    /// Along `axis`: elements `start, start + step, ...`, `ty.shape[axis]` of them (`step >= 1`).
    Slice { input: NodeId, axis: usize, start: Dim, step: i64 },
    /// Joins operands along `axis`; all other dimensions equal.
    Concat { inputs: Vec<NodeId>, axis: usize },
    /// `out[p.., i.., s..] = table[p.., indices[i..], s..]` where `p` are the axes before `axis`; indices
    /// are `i32`/`u32`; an index out of range is a run-time error.
    Gather { table: NodeId, indices: NodeId, axis: usize },
    /// `torch.gather`: `out[.., j, ..] = input[.., indices[.., j, ..], ..]` with `j` at `axis`; `indices`
    /// (`i32`) has the input's rank and dimensions except along `axis`, and the result has its shape. An
    /// index outside `0..input.shape[axis]` is a run-time error.
    TakeAlongAxis { input: NodeId, indices: NodeId, axis: usize },
    /// `torch.scatter_add`: `base` plus, for every `j` along `axis` in increasing order, `src[.., j, ..]`
    /// added at `out[.., indices[.., j, ..], ..]`. `indices` (`i32`) and `src` have one shape, equal to
    /// `base`'s except along `axis`; the result has `base`'s type. Each output element starts from `base`
    /// and adds its contributions in increasing `j` (deterministic, on the GPU too). An index outside
    /// `0..base.shape[axis]` is a run-time error.
    ScatterAdd { base: NodeId, indices: NodeId, src: NodeId, axis: usize },
    /// `torch.argsort(stable=True)` along `axis`: the `i32` positions that sort each fiber, equal values in
    /// their original order; NaN is the largest value (last ascending, first descending) and `-0.0 == 0.0`.
    Argsort { input: NodeId, axis: usize, descending: bool },
    /// Index notation: `out[v0, .., v(r-1)] = body`.
    Map(Box<MapOp>),
}

impl Op {
    /// The nodes this op reads, in order.
    pub fn operands(&self) -> Vec<NodeId> {
        match self {
            Op::Input { .. } | Op::Param { .. } | Op::Constant(_) | Op::DimValue(_) => vec![],
            Op::Unary(_, a) | Op::Cast(a) | Op::Broadcast(a) | Op::Permute(a, _) | Op::Reshape(a) => vec![*a],
            Op::Reduce { input, .. }
            | Op::ArgReduce { input, .. }
            | Op::Scan { input, .. }
            | Op::Slice { input, .. } => vec![*input],
            Op::Binary(_, a, b) | Op::MatMul(a, b) => vec![*a, *b],
            Op::Select { cond, on_true, on_false } => vec![*cond, *on_true, *on_false],
            Op::Concat { inputs, .. } => inputs.clone(),
            Op::Gather { table, indices, .. } => vec![*table, *indices],
            Op::TakeAlongAxis { input, indices, .. } => vec![*input, *indices],
            Op::ScatterAdd { base, indices, src, .. } => vec![*base, *indices, *src],
            Op::Argsort { input, .. } => vec![*input],
            Op::Map(map) => map.inputs.clone(),
        }
    }

    /// This op with every operand `o` replaced by `f(o)`, in `operands` order (everything else kept):
    /// the one operand remapping graph rebuilders need.
    pub fn map_operands(&self, mut f: impl FnMut(NodeId) -> NodeId) -> Op {
        let mut m = |id: &NodeId| f(*id);
        match self {
            Op::Input { .. } | Op::Param { .. } | Op::Constant(_) | Op::DimValue(_) => self.clone(),
            Op::Unary(u, a) => Op::Unary(*u, m(a)),
            Op::Binary(b, x, y) => Op::Binary(*b, m(x), m(y)),
            Op::Select { cond, on_true, on_false } => {
                Op::Select { cond: m(cond), on_true: m(on_true), on_false: m(on_false) }
            }
            Op::Cast(a) => Op::Cast(m(a)),
            Op::Broadcast(a) => Op::Broadcast(m(a)),
            Op::Reduce { op, input, axes } => Op::Reduce { op: *op, input: m(input), axes: axes.clone() },
            Op::ArgReduce { op, input, axis } => Op::ArgReduce { op: *op, input: m(input), axis: *axis },
            Op::Scan { op, input, axis, reverse } => {
                Op::Scan { op: *op, input: m(input), axis: *axis, reverse: *reverse }
            }
            Op::MatMul(a, b) => Op::MatMul(m(a), m(b)),
            Op::Permute(a, perm) => Op::Permute(m(a), perm.clone()),
            Op::Reshape(a) => Op::Reshape(m(a)),
            Op::Slice { input, axis, start, step } => {
                Op::Slice { input: m(input), axis: *axis, start: start.clone(), step: *step }
            }
            Op::Concat { inputs, axis } => Op::Concat { inputs: inputs.iter().map(m).collect(), axis: *axis },
            Op::Gather { table, indices, axis } => Op::Gather { table: m(table), indices: m(indices), axis: *axis },
            Op::TakeAlongAxis { input, indices, axis } => {
                Op::TakeAlongAxis { input: m(input), indices: m(indices), axis: *axis }
            }
            Op::ScatterAdd { base, indices, src, axis } => {
                Op::ScatterAdd { base: m(base), indices: m(indices), src: m(src), axis: *axis }
            }
            Op::Argsort { input, axis, descending } => {
                Op::Argsort { input: m(input), axis: *axis, descending: *descending }
            }
            Op::Map(map) => {
                let mut map = map.clone();
                map.inputs = map.inputs.iter().map(m).collect();
                Op::Map(map)
            }
        }
    }

    /// Per-element arithmetic on operands of the result's shape (no index movement, no loop).
    pub fn is_elementwise(&self) -> bool {
        matches!(self, Op::Unary(..) | Op::Binary(..) | Op::Select { .. } | Op::Cast(_))
    }

    /// Ops whose every element is a loop over operand elements: reductions, index reductions, scans,
    /// matmul, index notation, scatter-add.
    pub fn is_contraction(&self) -> bool {
        matches!(
            self,
            Op::MatMul(..)
                | Op::Reduce { .. }
                | Op::ArgReduce { .. }
                | Op::Scan { .. }
                | Op::Map(_)
                | Op::ScatterAdd { .. }
        )
    }

    /// Ops that only compute an index into an operand (no arithmetic on values).
    pub fn is_layout(&self) -> bool {
        matches!(
            self,
            Op::Broadcast(_)
                | Op::Permute(..)
                | Op::Reshape(_)
                | Op::Slice { .. }
                | Op::Gather { .. }
                | Op::TakeAlongAxis { .. }
        )
    }

    /// A short name for dumps and diagnostics.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Constant(_) => "constant",
            Op::DimValue(_) => "dim",
            Op::Unary(op, _) => op.name(),
            Op::Binary(op, _, _) => op.name(),
            Op::Select { .. } => "select",
            Op::Cast(_) => "cast",
            Op::Broadcast(_) => "broadcast",
            Op::Reduce { op, .. } => op.name(),
            Op::ArgReduce { op, .. } => op.name(),
            Op::Scan { op, .. } => op.name(),
            Op::MatMul(..) => "matmul",
            Op::Permute(..) => "permute",
            Op::Reshape(_) => "reshape",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Gather { .. } => "gather",
            Op::TakeAlongAxis { .. } => "take_along_axis",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::Argsort { .. } => "argsort",
            Op::Map(_) => "map",
        }
    }
}

pub type ScalarId = Handle<ScalarNode>;

/// An index-notation definition: every output element is `body` evaluated at its index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MapOp {
    /// The tensors the body reads (`ScalarExpr::Load::input` indexes this list).
    pub inputs: Vec<NodeId>,
    /// The extent of every index variable, indexed by `VarId`; the first `rank` are the output's axes.
    pub extents: Vec<Dim>,
    /// The body's expression nodes, operands before users.
    pub exprs: Arena<ScalarNode>,
    /// The value of one output element.
    pub body: ScalarId,
}

/// One scalar expression node with its dtype.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScalarNode {
    pub expr: ScalarExpr,
    pub dtype: DType,
}

/// Scalar expressions of a `MapOp` body.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ScalarExpr {
    /// `inputs[input][indices...]`, or `default` when `default` is given and an index is out of range.
    Load {
        input: usize,
        indices: Vec<Affine>,
        default: Option<Scalar>,
    },
    /// The current value of an index variable (as `i32`/`u32`/float per dtype).
    Var(VarId),
    /// A dimension's value.
    Dim(Dim),
    Const(Scalar),
    Unary(UnaryOp, ScalarId),
    Binary(BinaryOp, ScalarId, ScalarId),
    Select {
        cond: ScalarId,
        on_true: ScalarId,
        on_false: ScalarId,
    },
    Cast(ScalarId),
    /// Reduces `body` over all values of `vars` (in order, last fastest).
    Reduce {
        op: ReduceOp,
        vars: Vec<VarId>,
        body: ScalarId,
    },
}

impl MapOp {
    /// The runtime's form of this map (`tdsl_runtime::program::MapOps`), each input as `r(input)`: what a
    /// launch's ops carry and what the shared evaluator (`tdsl_runtime::eval::map`) runs.
    pub fn to_ops(&self, r: impl Fn(NodeId) -> OpRef) -> MapOps {
        let map = self;
        let s = |id: ScalarId| ScalarRef(id.index() as u32);
        let exprs = map
            .exprs
            .iter()
            .map(|(_, node)| OpScalarNode {
                dtype: node.dtype,
                expr: match &node.expr {
                    ScalarExpr::Load { input, indices, default } => {
                        ScalarOp::Load { input: *input, indices: indices.clone(), default: *default }
                    }
                    ScalarExpr::Var(v) => ScalarOp::Var(*v),
                    ScalarExpr::Dim(d) => ScalarOp::Dim(d.clone()),
                    ScalarExpr::Const(c) => ScalarOp::Const(*c),
                    ScalarExpr::Unary(u, a) => ScalarOp::Unary(*u, s(*a)),
                    ScalarExpr::Binary(b, x, y) => ScalarOp::Binary(*b, s(*x), s(*y)),
                    ScalarExpr::Select { cond, on_true, on_false } => {
                        ScalarOp::Select { cond: s(*cond), on_true: s(*on_true), on_false: s(*on_false) }
                    }
                    ScalarExpr::Cast(a) => ScalarOp::Cast(s(*a)),
                    ScalarExpr::Reduce { op, vars, body } => {
                        ScalarOp::Reduce { op: *op, vars: vars.clone(), body: s(*body) }
                    }
                },
            })
            .collect();
        MapOps {
            inputs: map.inputs.iter().map(|&i| r(i)).collect(),
            extents: map.extents.clone(),
            exprs,
            body: s(map.body),
        }
    }
}

/// A symbolic dimension of the program.
#[derive(Clone, Debug, PartialEq)]
pub struct Symbol {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub name: String,
    pub node: NodeId,
}

/// One model, lowered: nodes in dependency order plus its signature.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub nodes: Arena<Node>,
    /// Symbolic dimensions, indexed by `SymId`.
    pub symbols: Vec<Symbol>,
    /// `Op::Input` nodes in signature order.
    pub inputs: Vec<NodeId>,
    /// `Op::Param` nodes in order of first declaration.
    pub params: Vec<NodeId>,
    pub outputs: Vec<Output>,
    /// Initialisers declared for params (`param w: T[N, K] = fan_in_uniform(K)`), by param node.
    pub inits: Vec<(NodeId, Init)>,
    /// State carried from one run to the next (a training step, spec/training.md): after a run, output
    /// `output`'s value becomes param `param`'s.
    pub updates: Vec<Update>,
}

/// One carried value: `outputs[output]` is the next value of the param node `param`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    pub output: usize,
    pub param: NodeId,
}

impl Graph {
    pub fn symbol_name(&self, id: SymId) -> String {
        self.symbols.get(id.0 as usize).map_or_else(|| format!("?{}", id.0), |s| s.name.clone())
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// `dim` printed with this graph's symbol names.
    pub fn dim_to_string(&self, dim: &Dim) -> String {
        let names = |id: SymId| self.symbol_name(id);
        dim.display(&names).to_string()
    }

    /// `f32[B, S, 384]`.
    pub fn type_to_string(&self, ty: &TensorType) -> String {
        let dims: Vec<String> = ty.shape.iter().map(|d| self.dim_to_string(d)).collect();
        format!("{}[{}]", ty.dtype.name(), dims.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::build::{Builder, c};

    #[test]
    fn map_operands_replaces_exactly_the_operands_in_order() {
        let mut b = Builder::new("ops");
        let x = b.input("x", DType::F32, &[c(2), c(2)]);
        let y = b.input("y", DType::F32, &[c(2), c(2)]);
        let i = b.input("i", DType::I32, &[c(2)]);
        let flag = b.input("flag", DType::Bool, &[c(2), c(2)]);
        let ops = [
            Op::Constant(Scalar::Float(1.0)),
            Op::Unary(UnaryOp::Neg, x),
            Op::Binary(BinaryOp::Sub, x, y),
            Op::Select { cond: flag, on_true: x, on_false: y },
            Op::Cast(x),
            Op::Broadcast(i),
            Op::Reduce { op: ReduceOp::Sum, input: x, axes: vec![1] },
            Op::ArgReduce { op: ArgOp::Max, input: x, axis: 1 },
            Op::Scan { op: ScanOp::Sum, input: x, axis: 0, reverse: false },
            Op::MatMul(x, y),
            Op::Permute(x, vec![1, 0]),
            Op::Reshape(x),
            Op::Slice { input: x, axis: 0, start: c(1), step: 1 },
            Op::Concat { inputs: vec![x, y, x], axis: 0 },
            Op::Gather { table: x, indices: i, axis: 0 },
            Op::TakeAlongAxis { input: x, indices: i, axis: 1 },
            Op::ScatterAdd { base: x, indices: i, src: y, axis: 0 },
            Op::Argsort { input: x, axis: 1, descending: true },
        ];
        let others = [y, x, flag, i];
        for op in ops {
            assert_eq!(op.map_operands(|o| o), op, "identity: {}", op.name());
            let mut next = others.iter().copied().cycle();
            let wanted: Vec<NodeId> = op.operands().iter().map(|_| next.next().unwrap_or(x)).collect();
            let mut given = wanted.iter().copied();
            let mapped = op.map_operands(|_| given.next().unwrap_or(x));
            assert_eq!(mapped.operands(), wanted, "{}", op.name());
            assert_eq!(mapped.name(), op.name());
        }
    }
}
