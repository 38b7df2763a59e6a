//! `GroupOps`: what one launch computes, as typed data: the fused group's ops (the stored roots, the nodes
//! computed inline, and the device tensors they read), in the op vocabulary of the compiler's IR (`ops.rs`).
//! The GPU runs the launch's kernel; the CPU executor (`cpu/`) runs these ops. One description, two
//! executors: the compiler writes both from the same group (`codegen/ops.rs`), and a bundle carries both.
//!
//! Invariants (`Program::validate` checks them): every `OpRef` names an earlier node; every `Tensor` leaf
//! reads an input, a param or a tensor an earlier launch writes, with that leaf's dtype and shape (the
//! kernel binds the ones it loads: a map may list an operand its body never loads); `stores` lists each
//! tensor the launch writes exactly once, from a node of the tensor's dtype and shape; every dimension names
//! declared symbols. Per-op typing (spec/ops.md) is the compiler's verifier's; the CPU executor checks what it
//! relies on as it runs and reports a broken op as an error, never a panic.

use serde::{Deserialize, Serialize};

use super::TensorId;
use crate::DType;
use crate::dim::Dim;
use crate::ops::{Affine, ArgOp, BinaryOp, ReduceOp, Scalar, ScanOp, UnaryOp, VarId};

/// A node of a `GroupOps`, by index into `GroupOps::nodes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpRef(pub u32);

impl OpRef {
    /// The index into `GroupOps::nodes`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The ops of one launch: see the module comment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupOps {
    /// The nodes, operands before users.
    pub nodes: Vec<OpNode>,
    /// The tensors the launch writes and the node whose value each receives: the group's root first, then
    /// its horizontal-fusion siblings.
    pub stores: Vec<Store>,
}

/// One stored result of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// The node computed.
    pub node: OpRef,
    /// The tensor it is written to.
    pub tensor: TensorId,
}

/// One op with its result type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpNode {
    /// What it computes.
    pub op: TensorOp,
    /// Its element type.
    pub dtype: DType,
    /// Its symbolic shape.
    pub shape: Vec<Dim>,
    /// The compiler's IR node number (`%12`), for messages.
    pub ir: u32,
}

/// The tensor ops of a launch: the compiler's `ir::Op` with operands as `OpRef`s and the graph's inputs and
/// params (and the results of earlier launches) as `Tensor` leaves. spec/ops.md defines each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorOp {
    /// A device tensor the launch reads.
    Tensor(TensorId),
    /// A rank-0 constant of the node's dtype.
    Constant(Scalar),
    /// A rank-0 value of a dimension expression, converted to the node's dtype.
    DimValue(Dim),
    /// Elementwise.
    Unary(UnaryOp, OpRef),
    /// Elementwise over equal shapes.
    Binary(BinaryOp, OpRef, OpRef),
    /// Elementwise `cond ? on_true : on_false`.
    Select {
        /// The `bool` condition.
        cond: OpRef,
        /// Where `cond` holds.
        on_true: OpRef,
        /// Elsewhere.
        on_false: OpRef,
    },
    /// Elementwise conversion to the node's dtype.
    Cast(OpRef),
    /// NumPy broadcast to the node's shape.
    Broadcast(OpRef),
    /// Reduces over `axes` (sorted, unique), removed from the shape.
    Reduce {
        /// The reduction.
        op: ReduceOp,
        /// The operand.
        input: OpRef,
        /// The reduced axes.
        axes: Vec<usize>,
    },
    /// The `i32` position of the first extreme along `axis` (removed).
    ArgReduce {
        /// Which extreme.
        op: ArgOp,
        /// The operand.
        input: OpRef,
        /// The axis.
        axis: usize,
    },
    /// Inclusive scan along `axis`.
    Scan {
        /// The scan.
        op: ScanOp,
        /// The operand.
        input: OpRef,
        /// The axis.
        axis: usize,
        /// From the last position instead.
        reverse: bool,
    },
    /// `[..., M, K] @ [..., K, N]`.
    MatMul(OpRef, OpRef),
    /// Result axis `i` is operand axis `perm[i]`.
    Permute(OpRef, Vec<usize>),
    /// Same elements in row-major order, the node's shape.
    Reshape(OpRef),
    /// Along `axis`: elements `start, start + step, ...`.
    Slice {
        /// The operand.
        input: OpRef,
        /// The axis.
        axis: usize,
        /// The first element.
        start: Dim,
        /// The stride, at least 1.
        step: i64,
    },
    /// Joins operands along `axis`.
    Concat {
        /// The operands.
        inputs: Vec<OpRef>,
        /// The axis.
        axis: usize,
    },
    /// `out[p.., i.., s..] = table[p.., indices[i..], s..]`.
    Gather {
        /// The table.
        table: OpRef,
        /// The `i32`/`u32` indices.
        indices: OpRef,
        /// The axis indexed.
        axis: usize,
    },
    /// `torch.gather`.
    TakeAlongAxis {
        /// The operand.
        input: OpRef,
        /// The `i32` indices.
        indices: OpRef,
        /// The axis.
        axis: usize,
    },
    /// `torch.scatter_add`, contributions added in increasing position.
    ScatterAdd {
        /// The starting values.
        base: OpRef,
        /// The `i32` indices.
        indices: OpRef,
        /// The values added.
        src: OpRef,
        /// The axis.
        axis: usize,
    },
    /// Stable argsort along `axis`.
    Argsort {
        /// The operand.
        input: OpRef,
        /// The axis.
        axis: usize,
        /// Largest first.
        descending: bool,
    },
    /// Index notation.
    Map(Box<MapOps>),
}

impl TensorOp {
    /// The nodes this op reads, in order.
    pub fn operands(&self) -> Vec<OpRef> {
        match self {
            TensorOp::Tensor(_) | TensorOp::Constant(_) | TensorOp::DimValue(_) => vec![],
            TensorOp::Unary(_, a)
            | TensorOp::Cast(a)
            | TensorOp::Broadcast(a)
            | TensorOp::Permute(a, _)
            | TensorOp::Reshape(a) => vec![*a],
            TensorOp::Reduce { input, .. }
            | TensorOp::ArgReduce { input, .. }
            | TensorOp::Scan { input, .. }
            | TensorOp::Slice { input, .. }
            | TensorOp::Argsort { input, .. } => vec![*input],
            TensorOp::Binary(_, a, b) | TensorOp::MatMul(a, b) => vec![*a, *b],
            TensorOp::Select { cond, on_true, on_false } => vec![*cond, *on_true, *on_false],
            TensorOp::Concat { inputs, .. } => inputs.clone(),
            TensorOp::Gather { table, indices, .. } => vec![*table, *indices],
            TensorOp::TakeAlongAxis { input, indices, .. } => vec![*input, *indices],
            TensorOp::ScatterAdd { base, indices, src, .. } => vec![*base, *indices, *src],
            TensorOp::Map(map) => map.inputs.clone(),
        }
    }

    /// A short name for messages (the compiler's `Op::name`).
    pub fn name(&self) -> &'static str {
        match self {
            TensorOp::Tensor(_) => "tensor",
            TensorOp::Constant(_) => "constant",
            TensorOp::DimValue(_) => "dim",
            TensorOp::Unary(op, _) => op.name(),
            TensorOp::Binary(op, _, _) => op.name(),
            TensorOp::Select { .. } => "select",
            TensorOp::Cast(_) => "cast",
            TensorOp::Broadcast(_) => "broadcast",
            TensorOp::Reduce { op, .. } => op.name(),
            TensorOp::ArgReduce { op, .. } => op.name(),
            TensorOp::Scan { op, .. } => op.name(),
            TensorOp::MatMul(..) => "matmul",
            TensorOp::Permute(..) => "permute",
            TensorOp::Reshape(_) => "reshape",
            TensorOp::Slice { .. } => "slice",
            TensorOp::Concat { .. } => "concat",
            TensorOp::Gather { .. } => "gather",
            TensorOp::TakeAlongAxis { .. } => "take_along_axis",
            TensorOp::ScatterAdd { .. } => "scatter_add",
            TensorOp::Argsort { .. } => "argsort",
            TensorOp::Map(_) => "map",
        }
    }

    /// Per-element arithmetic on operands of the result's shape.
    pub fn is_elementwise(&self) -> bool {
        matches!(self, TensorOp::Unary(..) | TensorOp::Binary(..) | TensorOp::Select { .. } | TensorOp::Cast(_))
    }
}

/// Index notation: `out[v0, .., v(r-1)] = body` (the compiler's `ir::MapOp`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapOps {
    /// The tensors the body reads (`ScalarOp::Load::input` indexes this list).
    pub inputs: Vec<OpRef>,
    /// The extent of every index variable, by `VarId`; the first `rank` are the output's axes.
    pub extents: Vec<Dim>,
    /// The body's scalar nodes, operands before users (`ScalarRef` indexes this list).
    pub exprs: Vec<ScalarNode>,
    /// The value of one output element.
    pub body: ScalarRef,
}

/// A scalar node of a `MapOps` body, by index into `MapOps::exprs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScalarRef(pub u32);

impl ScalarRef {
    /// The index into `MapOps::exprs`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One scalar expression with its dtype.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalarNode {
    /// The expression.
    pub expr: ScalarOp,
    /// Its dtype.
    pub dtype: DType,
}

/// Scalar expressions of an index-notation body (the compiler's `ir::ScalarExpr`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalarOp {
    /// `inputs[input][indices...]`, or `default` when given and an index is out of range.
    Load {
        /// Which of `MapOps::inputs`.
        input: usize,
        /// One affine index per axis.
        indices: Vec<Affine>,
        /// The value out of range; without one, an index out of range is a run-time error.
        default: Option<Scalar>,
    },
    /// An index variable's value.
    Var(VarId),
    /// A dimension's value.
    Dim(Dim),
    /// A constant.
    Const(Scalar),
    /// Elementwise.
    Unary(UnaryOp, ScalarRef),
    /// Elementwise.
    Binary(BinaryOp, ScalarRef, ScalarRef),
    /// `cond ? on_true : on_false`.
    Select {
        /// The condition.
        cond: ScalarRef,
        /// Where it holds.
        on_true: ScalarRef,
        /// Elsewhere.
        on_false: ScalarRef,
    },
    /// Conversion to the node's dtype.
    Cast(ScalarRef),
    /// Reduces `body` over all values of `vars` (in order, last fastest).
    Reduce {
        /// The reduction.
        op: ReduceOp,
        /// The variables reduced over.
        vars: Vec<VarId>,
        /// The reduced expression.
        body: ScalarRef,
    },
}

impl ScalarOp {
    /// The scalar nodes this expression reads.
    pub fn operands(&self) -> Vec<ScalarRef> {
        match self {
            ScalarOp::Load { .. } | ScalarOp::Var(_) | ScalarOp::Dim(_) | ScalarOp::Const(_) => vec![],
            ScalarOp::Unary(_, a) | ScalarOp::Cast(a) => vec![*a],
            ScalarOp::Binary(_, a, b) => vec![*a, *b],
            ScalarOp::Select { cond, on_true, on_false } => vec![*cond, *on_true, *on_false],
            ScalarOp::Reduce { body, .. } => vec![*body],
        }
    }
}
