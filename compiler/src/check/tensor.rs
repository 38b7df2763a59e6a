//! Whole-tensor operators: elementwise binary ops with NumPy broadcasting (R6.1), `@` (R6.2), `^` with
//! integer exponents, and compile-time folding of weak scalars.

use super::{Elab, Value};
use crate::diag::{Code, Diagnostic};
use crate::dim::Dim;
use crate::ir::{BinaryOp, DType, NodeId, Op, TensorType};
use crate::span::Span;
use crate::syntax::ast;

/// `x ^ n` with an integer literal `|n| <= MAX_POW_EXPANSION` is expanded into multiplications.
const MAX_POW_EXPANSION: i64 = 16;

pub(crate) fn ir_binop(op: ast::BinOp) -> BinaryOp {
    match op {
        ast::BinOp::Add => BinaryOp::Add,
        ast::BinOp::Sub => BinaryOp::Sub,
        ast::BinOp::Mul => BinaryOp::Mul,
        ast::BinOp::Div => BinaryOp::Div,
        ast::BinOp::Rem => BinaryOp::Rem,
        ast::BinOp::Pow => BinaryOp::Pow,
        ast::BinOp::Lt => BinaryOp::Lt,
        ast::BinOp::Le => BinaryOp::Le,
        ast::BinOp::Gt => BinaryOp::Gt,
        ast::BinOp::Ge => BinaryOp::Ge,
        ast::BinOp::Eq => BinaryOp::Eq,
        ast::BinOp::Ne => BinaryOp::Ne,
        ast::BinOp::And => BinaryOp::And,
        ast::BinOp::Or => BinaryOp::Or,
        ast::BinOp::MatMul => unreachable!("`@` is not elementwise; callers handle it first"),
    }
}

/// The symbol users wrote for an IR binary op.
pub(crate) fn op_symbol(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "+",
        BinaryOp::Sub => "-",
        BinaryOp::Mul => "*",
        BinaryOp::Div => "/",
        BinaryOp::Rem => "%",
        BinaryOp::Pow => "^",
        BinaryOp::Min => "min",
        BinaryOp::Max => "max",
        BinaryOp::Lt => "<",
        BinaryOp::Le => "<=",
        BinaryOp::Gt => ">",
        BinaryOp::Ge => ">=",
        BinaryOp::Eq => "==",
        BinaryOp::Ne => "!=",
        BinaryOp::And => "&&",
        BinaryOp::Or => "||",
    }
}

/// Whether `op` accepts operands of `dtype` (R6.1, R6.4).
pub(crate) fn binop_accepts(op: BinaryOp, dtype: DType) -> bool {
    if op.is_logical() {
        dtype == DType::Bool
    } else if op == BinaryOp::Pow {
        dtype.is_float()
    } else if matches!(op, BinaryOp::Eq | BinaryOp::Ne) {
        true
    } else {
        dtype.is_numeric()
    }
}

/// NumPy broadcasting of two shapes: `Err(i)` names the first mismatching position counted from the end.
pub(crate) fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, usize> {
    let rank = a.len().max(b.len());
    let one = Dim::constant(1);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i < rank - a.len() { &one } else { &a[i - (rank - a.len())] };
        let db = if i < rank - b.len() { &one } else { &b[i - (rank - b.len())] };
        if da == db || *db == one {
            out.push(da.clone());
        } else if *da == one {
            out.push(db.clone());
        } else {
            return Err(rank - i);
        }
    }
    Ok(out)
}

impl Elab<'_> {
    /// Elementwise binary operator on any mix of tensors and weak scalars.
    pub(crate) fn binary(&mut self, op: ast::BinOp, a: Value, b: Value, span: Span) -> Value {
        if matches!(a, Value::Error) || matches!(b, Value::Error) {
            return Value::Error;
        }
        if op == ast::BinOp::Pow
            && let (Value::Tensor(base), Value::Int(exp)) = (&a, &b)
            && let Some(n) = exp.as_const().filter(|n| n.abs() <= MAX_POW_EXPANSION)
        {
            return self.int_pow(*base, n, span);
        }
        if !matches!(a, Value::Tensor(_))
            && !matches!(b, Value::Tensor(_))
            && let Some(folded) = self.fold(op, &a, &b, span)
        {
            return folded;
        }
        self.binary_ir(ir_binop(op), a, b, span)
    }

    /// Elementwise binary IR op after weak scalars take the other side's dtype; inserts broadcasts.
    pub(crate) fn binary_ir(&mut self, op: BinaryOp, a: Value, b: Value, span: Span) -> Value {
        let Some((a, b)) = self.unify(a, b, span) else { return Value::Error };
        let (ta, tb) = (self.ty(a).clone(), self.ty(b).clone());
        if ta.dtype != tb.dtype {
            self.error(
                Diagnostic::new(
                    Code::E0201,
                    span,
                    format!(
                        "`{}` needs operands of the same dtype, found {} and {}",
                        op_symbol(op),
                        ta.dtype.name(),
                        tb.dtype.name()
                    ),
                )
                .label(format!("{} {} {}", self.show_type(&ta), op_symbol(op), self.show_type(&tb)))
                .note(format!("convert one side, e.g. `{}(x)`", ta.dtype.name()))
                .rule("R6.1"),
            );
            return Value::Error;
        }
        if !binop_accepts(op, ta.dtype) {
            let needs = if op.is_logical() {
                "bool"
            } else if op == BinaryOp::Pow {
                "f32 or f16 (or an integer literal exponent)"
            } else {
                "a numeric dtype"
            };
            self.error(
                Diagnostic::new(
                    Code::E0202,
                    span,
                    format!("`{}` is not defined for {}", op_symbol(op), ta.dtype.name()),
                )
                .note(format!("`{}` needs {needs}", op_symbol(op)))
                .rule("R6.4"),
            );
            return Value::Error;
        }
        let Some(shape) = self.broadcast_pair(&ta.shape, &tb.shape, span) else { return Value::Error };
        let a = self.broadcast_to(a, &shape, span);
        let b = self.broadcast_to(b, &shape, span);
        let dtype = if op.is_comparison() { DType::Bool } else { ta.dtype };
        Value::Tensor(self.add_node(Op::Binary(op, a, b), TensorType { dtype, shape }, span))
    }

    /// Both operands as nodes, weak scalars taking the dtype of the tensor side.
    pub(crate) fn unify(&mut self, a: Value, b: Value, span: Span) -> Option<(NodeId, NodeId)> {
        let dtype = match (&a, &b) {
            (Value::Tensor(n), _) | (_, Value::Tensor(n)) => self.ty(*n).dtype,
            // Two weak scalars that did not fold (e.g. a symbolic dimension with a float).
            _ => {
                if matches!(a, Value::Float(_)) || matches!(b, Value::Float(_)) {
                    DType::F32
                } else {
                    Self::default_dtype(&a).or(Self::default_dtype(&b)).unwrap_or(DType::I32)
                }
            }
        };
        let a = self.materialize(a, dtype, span)?;
        let b = self.materialize(b, dtype, span)?;
        Some((a, b))
    }

    pub(crate) fn broadcast_pair(&mut self, a: &[Dim], b: &[Dim], span: Span) -> Option<Vec<Dim>> {
        match broadcast_shapes(a, b) {
            Ok(shape) => Some(shape),
            Err(from_end) => {
                let (sa, sb) = (self.show_shape(a), self.show_shape(b));
                let da = a.len().checked_sub(from_end).map(|i| self.show_dim(&a[i])).unwrap_or_default();
                let db = b.len().checked_sub(from_end).map(|i| self.show_dim(&b[i])).unwrap_or_default();
                self.error(
                    Diagnostic::new(Code::E0301, span, format!("shapes {sa} and {sb} do not broadcast"))
                        .label(format!("dimension {from_end} from the end is {da} on the left and {db} on the right"))
                        .note("broadcast dimensions must be equal or 1 (aligned from the right)")
                        .rule("R6.1"),
                );
                None
            }
        }
    }

    /// `node` broadcast to `shape` (no node when it already has it).
    pub(crate) fn broadcast_to(&mut self, node: NodeId, shape: &[Dim], span: Span) -> NodeId {
        let ty = self.ty(node).clone();
        if ty.shape == shape {
            return node;
        }
        self.add_node(Op::Broadcast(node), TensorType { dtype: ty.dtype, shape: shape.to_vec() }, span)
    }

    /// `base ^ n` by repeated squaring; negative `n` is `1 / base ^ -n` (floats only).
    fn int_pow(&mut self, base: NodeId, n: i64, span: Span) -> Value {
        let ty = self.ty(base).clone();
        if !ty.dtype.is_numeric() {
            self.error(Diagnostic::new(Code::E0202, span, "`^` is not defined for bool").rule("R6.4"));
            return Value::Error;
        }
        if n < 0 && !ty.dtype.is_float() {
            self.error(
                Diagnostic::new(Code::E0202, span, format!("negative exponent on {}", ty.dtype.name())).rule("R6.1"),
            );
            return Value::Error;
        }
        let mut result: Option<NodeId> = None;
        let mut square = base;
        let mut k = n.unsigned_abs();
        while k > 0 {
            if k & 1 == 1 {
                result = Some(match result {
                    None => square,
                    Some(r) => self.add_node(Op::Binary(BinaryOp::Mul, r, square), ty.clone(), span),
                });
            }
            k >>= 1;
            if k > 0 {
                square = self.add_node(Op::Binary(BinaryOp::Mul, square, square), ty.clone(), span);
            }
        }
        let positive = match result {
            Some(r) => r,
            None => {
                let one = self.materialize(Value::Int(Dim::constant(1)), ty.dtype, span);
                let Some(one) = one else { return Value::Error };
                return Value::Tensor(self.broadcast_to(one, &ty.shape, span));
            }
        };
        if n < 0 {
            let Some(one) = self.materialize(Value::Int(Dim::constant(1)), ty.dtype, span) else { return Value::Error };
            let one = self.broadcast_to(one, &ty.shape, span);
            return Value::Tensor(self.add_node(Op::Binary(BinaryOp::Div, one, positive), ty, span));
        }
        Value::Tensor(positive)
    }

    /// Folds two weak scalars; `None` when they must become tensors (a symbolic dimension meets a float).
    fn fold(&mut self, op: ast::BinOp, a: &Value, b: &Value, span: Span) -> Option<Value> {
        use ast::BinOp as B;
        let dim_err = |this: &mut Self, err: crate::dim::DimError| {
            this.error(Diagnostic::new(Code::E0311, span, err.to_string()).rule("R3.2"));
            Value::Error
        };
        match (a, b) {
            (Value::Int(x), Value::Int(y)) => {
                let consts = (x.as_const(), y.as_const());
                Some(match op {
                    B::Add => x.add(y).map(Value::Int).unwrap_or_else(|e| dim_err(self, e)),
                    B::Sub => x.sub(y).map(Value::Int).unwrap_or_else(|e| dim_err(self, e)),
                    B::Mul => x.mul(y).map(Value::Int).unwrap_or_else(|e| dim_err(self, e)),
                    B::Div => x.div(y).map(Value::Int).unwrap_or_else(|e| dim_err(self, e)),
                    _ => match consts {
                        (Some(x), Some(y)) => match op {
                            B::Rem if y == 0 => Value::Int(Dim::constant(0)),
                            B::Rem => Value::Int(Dim::constant(x.wrapping_rem(y))),
                            B::Pow if y >= 0 => match x.checked_pow(u32::try_from(y).unwrap_or(u32::MAX)) {
                                Some(v) => Value::Int(Dim::constant(v)),
                                None => dim_err(self, crate::dim::DimError::Overflow),
                            },
                            B::Pow => Value::Float((x as f64).powf(y as f64)),
                            _ => match compare(op, x, y) {
                                Some(b) => Value::Bool(b),
                                None => return self.fold_error(op, a, span),
                            },
                        },
                        _ => {
                            self.error(
                                Diagnostic::new(
                                    Code::E0203,
                                    span,
                                    format!("`{}` on symbolic dimensions is not known at compile time", op.symbol()),
                                )
                                .rule("R3.2"),
                            );
                            Value::Error
                        }
                    },
                })
            }
            (Value::Float(_) | Value::Int(_), Value::Float(_) | Value::Int(_)) => {
                let (Some(x), Some(y)) = (as_f64(a), as_f64(b)) else { return None };
                Some(match op {
                    B::Add => Value::Float(x + y),
                    B::Sub => Value::Float(x - y),
                    B::Mul => Value::Float(x * y),
                    B::Div => Value::Float(x / y),
                    B::Rem => Value::Float(x % y),
                    B::Pow => Value::Float(x.powf(y)),
                    _ => match compare(op, x, y) {
                        Some(b) => Value::Bool(b),
                        None => return self.fold_error(op, a, span),
                    },
                })
            }
            (Value::Bool(x), Value::Bool(y)) => Some(match op {
                B::And => Value::Bool(*x && *y),
                B::Or => Value::Bool(*x || *y),
                B::Eq => Value::Bool(x == y),
                B::Ne => Value::Bool(x != y),
                _ => return self.fold_error(op, a, span),
            }),
            _ => self.fold_error(op, if matches!(a, Value::Bool(_)) { b } else { a }, span),
        }
    }

    fn fold_error(&mut self, op: ast::BinOp, value: &Value, span: Span) -> Option<Value> {
        self.error(
            Diagnostic::new(Code::E0202, span, format!("`{}` is not defined for {}", op.symbol(), value.kind()))
                .rule("R6.1"),
        );
        Some(Value::Error)
    }

    /// `a @ b` (R6.2): rank-1 promotion, batch broadcasting; `[.., M, K] @ [K, N]` folds the batch into M
    /// instead of broadcasting the weight.
    pub(crate) fn matmul(&mut self, a: Value, b: Value, a_span: Span, b_span: Span, span: Span) -> Value {
        let (a, b) = match (a, b) {
            (Value::Tensor(a), Value::Tensor(b)) => (a, b),
            (Value::Error, _) | (_, Value::Error) => return Value::Error,
            (x, y) => {
                let (bad, bad_span) = if matches!(x, Value::Tensor(_)) { (y, b_span) } else { (x, a_span) };
                self.error(
                    Diagnostic::new(Code::E0203, bad_span, format!("`@` needs tensors, found {}", bad.kind()))
                        .note("scale with `*` instead")
                        .rule("R6.2"),
                );
                return Value::Error;
            }
        };
        let (ta, tb) = (self.ty(a).clone(), self.ty(b).clone());
        if ta.dtype != tb.dtype || !ta.dtype.is_float() {
            let (code, msg) = if ta.dtype != tb.dtype {
                (
                    Code::E0201,
                    format!("`@` needs operands of the same dtype, found {} and {}", ta.dtype.name(), tb.dtype.name()),
                )
            } else {
                (Code::E0202, format!("`@` is not defined for {}", ta.dtype.name()))
            };
            self.error(Diagnostic::new(code, span, msg).note("matmul operands are f32 or f16").rule("R6.2"));
            return Value::Error;
        }
        if ta.rank() == 0 || tb.rank() == 0 {
            let bad_span = if ta.rank() == 0 { a_span } else { b_span };
            self.error(
                Diagnostic::new(Code::E0303, bad_span, "`@` needs operands of rank 1 or more")
                    .note("scale with `*` instead")
                    .rule("R6.2"),
            );
            return Value::Error;
        }
        let one = Dim::constant(1);
        // Rank-1 promotion: [K] -> [1, K] on the left, [K] -> [K, 1] on the right.
        let a_shape = if ta.rank() == 1 { vec![one.clone(), ta.shape[0].clone()] } else { ta.shape.clone() };
        let b_shape = if tb.rank() == 1 { vec![tb.shape[0].clone(), one.clone()] } else { tb.shape.clone() };
        let (m, k) = (&a_shape[a_shape.len() - 2], &a_shape[a_shape.len() - 1]);
        let (k2, n) = (&b_shape[b_shape.len() - 2], &b_shape[b_shape.len() - 1]);
        if k != k2 {
            self.error(
                Diagnostic::new(
                    Code::E0302,
                    span,
                    format!(
                        "matmul of {} and {}: inner dimensions {} and {} differ",
                        self.show_shape(&ta.shape),
                        self.show_shape(&tb.shape),
                        self.show_dim(k),
                        self.show_dim(k2)
                    ),
                )
                .with_label(a_span, format!("last dimension is {}", self.show_dim(k)))
                .with_label(b_span, format!("second-to-last dimension is {}", self.show_dim(k2)))
                .note("did you mean to transpose one side, e.g. `x @ transpose(w)`?")
                .rule("R6.2"),
            );
            return Value::Error;
        }
        let (m, k, n) = (m.clone(), k.clone(), n.clone());
        let a_batch = &a_shape[..a_shape.len() - 2];
        let b_batch = &b_shape[..b_shape.len() - 2];
        let Some(batch) = self.broadcast_pair(a_batch, b_batch, span) else { return Value::Error };
        let dtype = ta.dtype;
        let mut out_shape = batch.clone();
        out_shape.push(m.clone());
        out_shape.push(n.clone());
        let result = if b_batch.is_empty() && !a_batch.is_empty() {
            // [.., M, K] @ [K, N]: one [(..)*M, K] @ [K, N] product.
            let Some(rows) = batch.iter().try_fold(m.clone(), |acc, d| acc.mul(d).ok()) else {
                self.error(Diagnostic::new(Code::E0311, span, "dimension arithmetic overflows").rule("R3.2"));
                return Value::Error;
            };
            let a2 = self.reshape_node(a, vec![rows.clone(), k.clone()], span);
            let b2 = self.reshape_node(b, b_shape.clone(), span);
            let prod = self.add_node(Op::MatMul(a2, b2), TensorType { dtype, shape: vec![rows, n.clone()] }, span);
            self.reshape_node(prod, out_shape.clone(), span)
        } else {
            let mut a_full = batch.clone();
            a_full.extend([m.clone(), k.clone()]);
            let mut b_full = batch.clone();
            b_full.extend([k.clone(), n.clone()]);
            let a2 = self.reshape_node(a, a_shape.clone(), span);
            let a2 = self.broadcast_to(a2, &a_full, span);
            let b2 = self.reshape_node(b, b_shape.clone(), span);
            let b2 = self.broadcast_to(b2, &b_full, span);
            self.add_node(Op::MatMul(a2, b2), TensorType { dtype, shape: out_shape.clone() }, span)
        };
        // Undo rank-1 promotion.
        let mut final_shape = batch;
        if ta.rank() > 1 {
            final_shape.push(m);
        }
        if tb.rank() > 1 {
            final_shape.push(n);
        }
        Value::Tensor(self.reshape_node(result, final_shape, span))
    }

    /// A reshape node (none when the shape is unchanged). The caller guarantees equal element counts.
    pub(crate) fn reshape_node(&mut self, node: NodeId, shape: Vec<Dim>, span: Span) -> NodeId {
        let ty = self.ty(node).clone();
        if ty.shape == shape {
            return node;
        }
        self.add_node(Op::Reshape(node), TensorType { dtype: ty.dtype, shape }, span)
    }
}

/// A comparison of two known numbers; `None` when `op` is not a comparison.
fn compare<T: PartialOrd>(op: ast::BinOp, x: T, y: T) -> Option<bool> {
    use ast::BinOp as B;
    Some(match op {
        B::Lt => x < y,
        B::Le => x <= y,
        B::Gt => x > y,
        B::Ge => x >= y,
        B::Eq => x == y,
        B::Ne => x != y,
        _ => return None,
    })
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Float(v) => Some(*v),
        Value::Int(d) => d.as_const().map(|v| v as f64),
        _ => None,
    }
}
