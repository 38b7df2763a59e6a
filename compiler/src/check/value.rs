//! Values during elaboration: tensors (graph nodes), weakly typed compile-time scalars (R3.5), lists, and the
//! `Error` poison value. Weak scalars fold at compile time and become constants only when they meet a
//! tensor, taking its dtype.

use super::Elab;
use crate::diag::{Code, Diagnostic};
use crate::dim::Dim;
use crate::ir::{DType, NodeId, Op, Scalar, TensorType, UnaryOp};
use crate::span::Span;
use crate::syntax::ast;

#[derive(Clone, Debug)]
pub(crate) enum Value {
    Tensor(NodeId),
    /// A compile-time integer: a literal, an `int` argument, a loop variable or a dimension.
    Int(Dim),
    Float(f64),
    Bool(bool),
    /// `[a, b]`, and the dims bound to `...` in a signature.
    List(Vec<Value>),
    /// Already reported; silences follow-on errors.
    Error,
}

impl Value {
    /// What kind of value this is, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Tensor(_) => "a tensor",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a bool",
            Value::List(_) => "a list",
            Value::Error => "an erroneous value",
        }
    }
}

impl Elab<'_> {
    /// A rank-0 constant node of `dtype` for a weak scalar, or `None` (reported) when the scalar cannot
    /// take that dtype (R3.5).
    pub(crate) fn materialize(&mut self, value: Value, dtype: DType, span: Span) -> Option<NodeId> {
        let ty = TensorType { dtype, shape: vec![] };
        let op = match (&value, dtype) {
            (Value::Tensor(node), _) => return Some(*node),
            (Value::Int(_) | Value::Float(_), DType::Bool) => return self.weak_mismatch(&value, dtype, span),
            (Value::Int(d), _) => match d.as_const() {
                Some(v) if dtype.is_float() => Op::Constant(Scalar::Float(v as f64)),
                Some(v) => {
                    let fits = match dtype {
                        DType::U32 => u32::try_from(v).is_ok(),
                        _ => i32::try_from(v).is_ok(),
                    };
                    if !fits {
                        self.error(
                            Diagnostic::new(Code::E0201, span, format!("integer {v} does not fit in {}", dtype.name()))
                                .rule("R3.5"),
                        );
                        return None;
                    }
                    Op::Constant(Scalar::Int(v))
                }
                None => Op::DimValue(d.clone()),
            },
            (Value::Float(v), d) if d.is_float() => Op::Constant(Scalar::Float(*v)),
            (Value::Float(_), _) => return self.weak_mismatch(&value, dtype, span),
            (Value::Bool(b), DType::Bool) => Op::Constant(Scalar::Bool(*b)),
            (Value::Bool(_), _) => return self.weak_mismatch(&value, dtype, span),
            (Value::List(_), _) => {
                self.error(
                    Diagnostic::new(Code::E0203, span, "a list cannot be used as a tensor")
                        .note("lists are arguments of reshape, permute and broadcast_to")
                        .rule("R3.5"),
                );
                return None;
            }
            (Value::Error, _) => return None,
        };
        Some(self.add_node(op, ty, span))
    }

    fn weak_mismatch(&mut self, value: &Value, dtype: DType, span: Span) -> Option<NodeId> {
        self.error(
            Diagnostic::new(Code::E0201, span, format!("{} cannot be used as {}", value.kind(), dtype.name()))
                .note(format!("convert explicitly, e.g. `{}(...)`", dtype.name()))
                .rule("R3.5"),
        );
        None
    }

    /// The default dtype of a weak scalar used alone (R3.5).
    pub(crate) fn default_dtype(value: &Value) -> Option<DType> {
        match value {
            Value::Int(_) => Some(DType::I32),
            Value::Float(_) => Some(DType::F32),
            Value::Bool(_) => Some(DType::Bool),
            _ => None,
        }
    }

    /// `-x` and `!x`.
    pub(crate) fn unary(&mut self, op: ast::UnaryOp, value: Value, span: Span) -> Value {
        match (op, value) {
            (_, Value::Error) => Value::Error,
            (ast::UnaryOp::Neg, Value::Int(d)) => match d.neg() {
                Ok(d) => Value::Int(d),
                Err(err) => {
                    self.error(Diagnostic::new(Code::E0311, span, err.to_string()).rule("R3.2"));
                    Value::Error
                }
            },
            (ast::UnaryOp::Neg, Value::Float(v)) => Value::Float(-v),
            (ast::UnaryOp::Not, Value::Bool(b)) => Value::Bool(!b),
            (op, Value::Tensor(node)) => {
                let ir_op = match op {
                    ast::UnaryOp::Neg => UnaryOp::Neg,
                    ast::UnaryOp::Not => UnaryOp::Not,
                };
                self.unary_node(ir_op, node, span)
            }
            (op, other) => {
                let symbol = if op == ast::UnaryOp::Neg { "-" } else { "!" };
                self.error(
                    Diagnostic::new(Code::E0202, span, format!("`{symbol}` is not defined for {}", other.kind()))
                        .rule("R6.4"),
                );
                Value::Error
            }
        }
    }

    /// An elementwise unary node with its dtype rule (R6.4).
    pub(crate) fn unary_node(&mut self, op: UnaryOp, node: NodeId, span: Span) -> Value {
        let ty = self.ty(node).clone();
        let ok = match op {
            UnaryOp::Not => ty.dtype == DType::Bool,
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => ty.dtype.is_numeric(),
            _ => ty.dtype.is_float(),
        };
        if !ok {
            let wants = match op {
                UnaryOp::Not => "bool",
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => "a numeric dtype",
                _ => "f32 or f16",
            };
            self.error(
                Diagnostic::new(Code::E0202, span, format!("`{}` is not defined for {}", op.name(), ty.dtype.name()))
                    .label(format!("this is {}; `{}` needs {wants}", self.show_type(&ty), op.name()))
                    .note("convert first, e.g. `f32(x)`")
                    .rule("R6.4"),
            );
            return Value::Error;
        }
        Value::Tensor(self.add_node(Op::Unary(op, node), ty, span))
    }
}
