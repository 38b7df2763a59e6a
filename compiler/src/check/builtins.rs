//! Built-in functions on whole tensors: elementwise math, reductions, `where`, casts and the layout ops
//! (transpose, permute, reshape, squeeze/unsqueeze, slice, concat, gather, broadcast_to) and the along-axis
//! ops (take_along_axis, scatter_add, sort, argsort, topk, topk_indices). Each entry's
//! shape rule is a row of spec/ops.md. Layers such as softmax and layer_norm are not here: they are written
//! in .tdsl in the standard library.

use super::call::ArgValue;
use super::{Elab, Value};
use crate::diag::{Code, Diagnostic};
use crate::dim::Dim;
use crate::ir::{ArgOp, BinaryOp, DType, NodeId, Op, ReduceOp, ScanOp, TensorType, UnaryOp};
use crate::span::Span;

/// Every built-in function name.
pub(crate) const NAMES: &[&str] = &[
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "tanh",
    "erf",
    "sigmoid",
    "relu",
    "abs",
    "sin",
    "cos",
    "floor",
    "ceil",
    "round",
    "atan",
    "max",
    "min",
    "sum",
    "mean",
    "prod",
    "pow",
    "argmax",
    "argmin",
    "cumsum",
    "where",
    "select",
    "f32",
    "f16",
    "i32",
    "u32",
    "bool",
    "transpose",
    "permute",
    "reshape",
    "unsqueeze",
    "squeeze",
    "slice",
    "concat",
    "gather",
    "take_along_axis",
    "scatter_add",
    "sort",
    "argsort",
    "topk",
    "topk_indices",
    "broadcast_to",
    "grad",
];

pub(crate) fn is_builtin(name: &str) -> bool {
    NAMES.contains(&name)
}

pub(crate) fn unary_op(name: &str) -> Option<UnaryOp> {
    UnaryOp::ALL.into_iter().find(|op| op.name() == name && !matches!(op, UnaryOp::Neg | UnaryOp::Not))
}

fn reduce_op(name: &str) -> Option<ReduceOp> {
    [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::Mean, ReduceOp::Prod]
        .into_iter()
        .find(|op| op.name() == name)
}

/// Arguments matched to a built-in's parameter names.
struct Bound {
    slots: Vec<Option<(Value, Span)>>,
}

impl Bound {
    fn get(&self, i: usize) -> Option<(Value, Span)> {
        self.slots.get(i).cloned().flatten()
    }
}

impl Elab<'_> {
    pub(crate) fn builtin(&mut self, name: &str, args: Vec<ArgValue>, name_span: Span, span: Span) -> Value {
        if args.iter().any(|a| matches!(a.value, Value::Error)) {
            return Value::Error;
        }
        if let Some(op) = unary_op(name) {
            let Some(b) = self.bind_builtin(name, &[("x", true)], args, span) else { return Value::Error };
            let (x, x_span) = b.get(0).expect("required");
            return self.unary_builtin(op, x, x_span, span);
        }
        if name == "concat" {
            return self.concat(args, span);
        }
        if let Some(dtype) = DType::from_name(name) {
            let Some(b) = self.bind_builtin(name, &[("x", true)], args, span) else { return Value::Error };
            let (x, x_span) = b.get(0).expect("required");
            return self.cast(x, dtype, x_span, span);
        }
        match name {
            "max" | "min" => {
                let sig = [("x", true), ("y", false), ("axis", false), ("keepdims", false)];
                let Some(b) = self.bind_builtin(name, &sig, args, span) else { return Value::Error };
                let (x, _) = b.get(0).expect("required");
                if let Some((y, _)) = b.get(1) {
                    if b.get(2).is_some() || b.get(3).is_some() {
                        self.error(
                            Diagnostic::new(
                                Code::E0106,
                                span,
                                format!("`{name}(a, b)` is elementwise and takes no `axis`"),
                            )
                            .note(format!("reduce one tensor with `{name}(x, axis: ...)`"))
                            .rule("R6.3"),
                        );
                        return Value::Error;
                    }
                    let op = if name == "max" { BinaryOp::Max } else { BinaryOp::Min };
                    return self.binary_ir(op, x, y, span);
                }
                self.reduce(reduce_op(name).expect("reducer"), &b, span)
            }
            "pow" => {
                let Some(b) = self.bind_builtin(name, &[("x", true), ("exponent", true)], args, span) else {
                    return Value::Error;
                };
                let ((x, _), (y, _)) = (b.get(0).expect("required"), b.get(1).expect("required"));
                self.binary(crate::syntax::ast::BinOp::Pow, x, y, span)
            }
            "sum" | "mean" | "prod" => {
                let sig = [("x", true), ("axis", false), ("keepdims", false)];
                let Some(b) = self.bind_builtin(name, &sig, args, span) else { return Value::Error };
                let b = Bound { slots: vec![b.get(0), None, b.get(1), b.get(2)] };
                self.reduce(reduce_op(name).expect("reducer"), &b, span)
            }
            "argmax" | "argmin" => {
                let sig = [("x", true), ("axis", false), ("keepdims", false)];
                let Some(b) = self.bind_builtin(name, &sig, args, span) else { return Value::Error };
                let op = if name == "argmax" { ArgOp::Max } else { ArgOp::Min };
                self.arg_reduce(op, &b, span)
            }
            "cumsum" => {
                let Some(b) = self.bind_builtin(name, &[("x", true), ("axis", true)], args, span) else {
                    return Value::Error;
                };
                self.scan(ScanOp::Sum, &b, span)
            }
            "where" | "select" => {
                let sig = [("cond", true), ("a", true), ("b", true)];
                let Some(b) = self.bind_builtin(name, &sig, args, span) else { return Value::Error };
                let (c, c_span) = b.get(0).expect("required");
                let (x, _) = b.get(1).expect("required");
                let (y, _) = b.get(2).expect("required");
                self.select(c, c_span, x, y, span)
            }
            "transpose" => {
                let sig = [("x", true), ("a", false), ("b", false)];
                let Some(b) = self.bind_builtin(name, &sig, args, span) else { return Value::Error };
                let Some((x, rank)) = self.tensor_arg(b.get(0), name) else { return Value::Error };
                if rank < 2 && b.get(1).is_none() {
                    self.error(
                        Diagnostic::new(
                            Code::E0303,
                            span,
                            format!("`transpose` needs rank 2 or more, found rank {rank}"),
                        )
                        .rule("R6.3"),
                    );
                    return Value::Error;
                }
                let (ax, bx) = match (b.get(1), b.get(2)) {
                    (None, None) => (rank - 2, rank - 1),
                    (Some(a), Some(bb)) => {
                        let (Some(a), Some(bb)) = (self.axis_arg(a, rank), self.axis_arg(bb, rank)) else {
                            return Value::Error;
                        };
                        (a, bb)
                    }
                    _ => {
                        self.error(
                            Diagnostic::new(Code::E0106, span, "`transpose` takes no axes or two axes").rule("R6.3"),
                        );
                        return Value::Error;
                    }
                };
                let mut perm: Vec<usize> = (0..rank).collect();
                perm.swap(ax, bx);
                self.permute_node(x, perm, span)
            }
            "permute" => {
                let Some(b) = self.bind_builtin(name, &[("x", true), ("dims", true)], args, span) else {
                    return Value::Error;
                };
                let Some((x, rank)) = self.tensor_arg(b.get(0), name) else { return Value::Error };
                let (dims, dims_span) = b.get(1).expect("required");
                let Some(list) = self.int_list(dims, dims_span, "dims") else { return Value::Error };
                let mut perm = Vec::new();
                for v in list {
                    let Some(axis) = self.axis_arg((Value::Int(Dim::constant(v)), dims_span), rank) else {
                        return Value::Error;
                    };
                    perm.push(axis);
                }
                let mut sorted = perm.clone();
                sorted.sort();
                if sorted != (0..rank).collect::<Vec<_>>() {
                    self.error(
                        Diagnostic::new(Code::E0305, dims_span, format!("`permute` needs a permutation of 0..{rank}"))
                            .label(format!("each axis of the rank-{rank} tensor must appear exactly once"))
                            .rule("R6.3"),
                    );
                    return Value::Error;
                }
                self.permute_node(x, perm, span)
            }
            "reshape" | "broadcast_to" => {
                let Some(b) = self.bind_builtin(name, &[("x", true), ("shape", true)], args, span) else {
                    return Value::Error;
                };
                let Some((x, _)) = self.tensor_arg(b.get(0), name) else { return Value::Error };
                let (shape, shape_span) = b.get(1).expect("required");
                if name == "reshape" {
                    self.reshape(x, shape, shape_span, span)
                } else {
                    self.broadcast_builtin(x, shape, shape_span, span)
                }
            }
            "unsqueeze" | "squeeze" => {
                let Some(b) = self.bind_builtin(name, &[("x", true), ("axis", true)], args, span) else {
                    return Value::Error;
                };
                let Some((x, rank)) = self.tensor_arg(b.get(0), name) else { return Value::Error };
                let mut shape = self.ty(x).shape.clone();
                if name == "unsqueeze" {
                    let Some(axis) = self.axis_arg(b.get(1).expect("required"), rank + 1) else { return Value::Error };
                    shape.insert(axis, Dim::constant(1));
                } else {
                    let (axis_value, axis_span) = b.get(1).expect("required");
                    let Some(axis) = self.axis_arg((axis_value, axis_span), rank) else { return Value::Error };
                    if shape[axis] != Dim::constant(1) {
                        let msg = format!("`squeeze` of axis {axis}, which has size {}", self.show_dim(&shape[axis]));
                        self.error(
                            Diagnostic::new(Code::E0304, axis_span, msg)
                                .note("only size-1 axes can be removed")
                                .rule("R6.3"),
                        );
                        return Value::Error;
                    }
                    shape.remove(axis);
                }
                Value::Tensor(self.reshape_node(x, shape, span))
            }
            "slice" => {
                let sig = [("x", true), ("axis", true), ("start", true), ("end", true), ("step", false)];
                let Some(b) = self.bind_builtin(name, &sig, args, span) else { return Value::Error };
                self.slice(&b, span)
            }
            "gather" => {
                let sig = [("table", true), ("indices", true), ("axis", false)];
                let Some(b) = self.bind_builtin(name, &sig, args, span) else { return Value::Error };
                self.gather(&b, span)
            }
            "take_along_axis" => {
                let sig = [("x", true), ("indices", true), ("axis", true)];
                let Some(b) = self.bind_builtin(name, &sig, args, span) else { return Value::Error };
                self.take_along_axis(&b, span)
            }
            "scatter_add" => {
                let sig = [("base", true), ("indices", true), ("src", true), ("axis", true)];
                let Some(b) = self.bind_builtin(name, &sig, args, span) else { return Value::Error };
                self.scatter_add(&b, span)
            }
            "sort" | "argsort" => {
                let sig = [("x", true), ("axis", false), ("descending", false)];
                let Some(b) = self.bind_builtin(name, &sig, args, span) else { return Value::Error };
                let descending = match b.get(2) {
                    None => false,
                    Some(arg) => match self.bool_arg(arg, "descending") {
                        Some(d) => d,
                        None => return Value::Error,
                    },
                };
                let Some((x, order, axis)) = self.argsort(name, b.get(0), b.get(1), descending, span) else {
                    return Value::Error;
                };
                if name == "argsort" {
                    return Value::Tensor(order);
                }
                Value::Tensor(self.take_along_at(x, order, axis, span))
            }
            "topk" | "topk_indices" => {
                let sig = [("x", true), ("k", true), ("axis", false)];
                let Some(b) = self.bind_builtin(name, &sig, args, span) else { return Value::Error };
                let Some((x, order, axis)) = self.argsort(name, b.get(0), b.get(2), true, span) else {
                    return Value::Error;
                };
                let (k_value, k_span) = b.get(1).expect("required");
                let Some(k) = self.int_arg((k_value, k_span), "k") else { return Value::Error };
                let Some(indices) = self.first_k(order, axis, k, k_span, span) else { return Value::Error };
                if name == "topk_indices" {
                    return Value::Tensor(indices);
                }
                Value::Tensor(self.take_along_at(x, indices, axis, span))
            }
            "grad" => {
                let Some(b) = self.bind_builtin(name, &[("y", true), ("x", true)], args, span) else {
                    return Value::Error;
                };
                let (y, y_span) = b.get(0).expect("required");
                let (x, x_span) = b.get(1).expect("required");
                let Some(loss) = self.loss(y, y_span) else { return Value::Error };
                let Some(wrt) = self.wrt(x, x_span) else { return Value::Error };
                self.differentiate(loss, &[wrt], span).map_or(Value::Error, |g| Value::Tensor(g[0]))
            }
            _ => {
                self.error(Diagnostic::new(Code::E0102, name_span, format!("unknown function `{name}`")).rule("R4.1"));
                Value::Error
            }
        }
    }

    /// Matches positional then named arguments to `sig` (name, required) (E0106).
    fn bind_builtin(&mut self, name: &str, sig: &[(&str, bool)], args: Vec<ArgValue>, span: Span) -> Option<Bound> {
        let mut slots: Vec<Option<(Value, Span)>> = vec![None; sig.len()];
        let mut ok = true;
        let mut position = 0;
        for arg in args {
            let index = match &arg.name {
                None => {
                    if position >= sig.len() {
                        self.error(
                            Diagnostic::new(
                                Code::E0106,
                                arg.span,
                                format!("`{name}` takes at most {} arguments", sig.len()),
                            )
                            .note(format!("parameters: {}", signature_text(sig)))
                            .rule("R5.2"),
                        );
                        ok = false;
                        continue;
                    }
                    position += 1;
                    position - 1
                }
                Some(ident) => match sig.iter().position(|(n, _)| *n == ident.name) {
                    Some(i) => i,
                    None => {
                        self.error(
                            Diagnostic::new(
                                Code::E0106,
                                ident.span,
                                format!("`{name}` has no parameter `{}`", ident.name),
                            )
                            .note(format!("parameters: {}", signature_text(sig)))
                            .rule("R5.2"),
                        );
                        ok = false;
                        continue;
                    }
                },
            };
            if slots[index].is_some() {
                self.error(
                    Diagnostic::new(
                        Code::E0106,
                        arg.span,
                        format!("argument `{}` of `{name}` is given twice", sig[index].0),
                    )
                    .rule("R5.2"),
                );
                ok = false;
                continue;
            }
            slots[index] = Some((arg.value, arg.span));
        }
        for (i, (param, required)) in sig.iter().enumerate() {
            if *required && slots[i].is_none() {
                self.error(
                    Diagnostic::new(Code::E0106, span, format!("`{name}` is missing argument `{param}`"))
                        .note(format!("parameters: {}", signature_text(sig)))
                        .rule("R5.2"),
                );
                ok = false;
            }
        }
        ok.then_some(Bound { slots })
    }

    /// A tensor argument and its rank; weak scalars become rank-0 tensors of their default dtype.
    fn tensor_arg(&mut self, arg: Option<(Value, Span)>, name: &str) -> Option<(NodeId, usize)> {
        let (value, span) = arg?;
        let node = match value {
            Value::Tensor(n) => n,
            Value::Error => return None,
            other => match Self::default_dtype(&other) {
                Some(dtype) => self.materialize(other, dtype, span)?,
                None => {
                    self.error(
                        Diagnostic::new(Code::E0203, span, format!("`{name}` needs a tensor, found {}", other.kind()))
                            .rule("R6.3"),
                    );
                    return None;
                }
            },
        };
        Some((node, self.ty(node).rank()))
    }

    /// A known integer.
    fn int_arg(&mut self, (value, span): (Value, Span), what: &str) -> Option<i64> {
        match value {
            Value::Int(d) => match d.as_const() {
                Some(v) => Some(v),
                None => {
                    self.error(
                        Diagnostic::new(Code::E0203, span, format!("`{what}` must be a known integer"))
                            .label(format!("this is the symbolic dimension {}", self.show_dim(&d)))
                            .rule("R6.3"),
                    );
                    None
                }
            },
            Value::Error => None,
            other => {
                self.error(
                    Diagnostic::new(Code::E0203, span, format!("`{what}` must be an integer, found {}", other.kind()))
                        .rule("R6.3"),
                );
                None
            }
        }
    }

    /// An axis of a rank-`rank` tensor; negative axes count from the end (R6.3).
    pub(crate) fn axis_arg(&mut self, arg: (Value, Span), rank: usize) -> Option<usize> {
        let span = arg.1;
        let v = self.int_arg(arg, "axis")?;
        let resolved = if v < 0 { v + rank as i64 } else { v };
        if resolved < 0 || resolved >= rank as i64 {
            self.error(
                Diagnostic::new(Code::E0305, span, format!("axis {v} is out of range for a tensor of rank {rank}"))
                    .note(format!("valid axes are {} to {}", -(rank as i64), rank as i64 - 1))
                    .rule("R6.3"),
            );
            return None;
        }
        Some(resolved as usize)
    }

    fn int_list(&mut self, value: Value, span: Span, what: &str) -> Option<Vec<i64>> {
        match value {
            Value::List(items) => items.into_iter().map(|v| self.int_arg((v, span), what)).collect(),
            Value::Error => None,
            other => {
                self.error(
                    Diagnostic::new(
                        Code::E0203,
                        span,
                        format!("`{what}` must be a list like `[0, 2, 1]`, found {}", other.kind()),
                    )
                    .rule("R6.3"),
                );
                None
            }
        }
    }

    fn bool_arg(&mut self, (value, span): (Value, Span), what: &str) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(b),
            Value::Error => None,
            other => {
                self.error(
                    Diagnostic::new(
                        Code::E0203,
                        span,
                        format!("`{what}` must be `true` or `false`, found {}", other.kind()),
                    )
                    .rule("R6.3"),
                );
                None
            }
        }
    }

    fn unary_builtin(&mut self, op: UnaryOp, x: Value, x_span: Span, span: Span) -> Value {
        match x {
            Value::Tensor(node) => self.unary_node(op, node, span),
            Value::Error => Value::Error,
            Value::Int(ref d) if d.as_const().is_some() && matches!(op, UnaryOp::Abs | UnaryOp::Relu) => {
                let v = d.as_const().unwrap_or(0);
                Value::Int(Dim::constant(if op == UnaryOp::Abs { v.wrapping_abs() } else { v.max(0) }))
            }
            Value::Float(v) => Value::Float(fold_unary(op, v)),
            Value::Int(ref d) if d.as_const().is_some() => {
                Value::Float(fold_unary(op, d.as_const().unwrap_or(0) as f64))
            }
            Value::Int(_) => {
                // A symbolic dimension: computed at run time as an f32 scalar.
                let Some(node) = self.materialize(x, DType::F32, x_span) else { return Value::Error };
                self.unary_node(op, node, span)
            }
            other => {
                self.error(
                    Diagnostic::new(
                        Code::E0202,
                        x_span,
                        format!("`{}` is not defined for {}", op.name(), other.kind()),
                    )
                    .rule("R6.4"),
                );
                Value::Error
            }
        }
    }

    pub(crate) fn cast(&mut self, x: Value, dtype: DType, x_span: Span, span: Span) -> Value {
        let node = match x {
            Value::Tensor(n) => n,
            Value::Error => return Value::Error,
            Value::List(_) => {
                self.error(Diagnostic::new(Code::E0203, x_span, "cannot convert a list").rule("R6.3"));
                return Value::Error;
            }
            weak => {
                let Some(default) = Self::default_dtype(&weak) else { return Value::Error };
                match self.materialize(weak, default, x_span) {
                    Some(n) => n,
                    None => return Value::Error,
                }
            }
        };
        let ty = self.ty(node).clone();
        if ty.dtype == dtype {
            return Value::Tensor(node);
        }
        Value::Tensor(self.add_node(Op::Cast(node), TensorType { dtype, shape: ty.shape }, span))
    }

    /// Reductions: slots are (x, unused, axis, keepdims).
    fn reduce(&mut self, op: ReduceOp, b: &Bound, span: Span) -> Value {
        let Some((x, rank)) = self.tensor_arg(b.get(0), op.name()) else { return Value::Error };
        let ty = self.ty(x).clone();
        let ok = match op {
            ReduceOp::Mean => ty.dtype.is_float(),
            _ => ty.dtype.is_numeric(),
        };
        if !ok {
            let needs = if op == ReduceOp::Mean { "f32 or f16" } else { "a numeric dtype" };
            self.error(
                Diagnostic::new(Code::E0202, span, format!("`{}` is not defined for {}", op.name(), ty.dtype.name()))
                    .note(format!("`{}` needs {needs}", op.name()))
                    .rule("R6.4"),
            );
            return Value::Error;
        }
        let mut axes = match b.get(2) {
            None => (0..rank).collect::<Vec<_>>(),
            Some((Value::List(items), s)) => {
                let mut axes = Vec::new();
                for item in items {
                    let Some(axis) = self.axis_arg((item, s), rank) else { return Value::Error };
                    axes.push(axis);
                }
                axes
            }
            Some(arg) => match self.axis_arg(arg, rank) {
                Some(axis) => vec![axis],
                None => return Value::Error,
            },
        };
        axes.sort();
        axes.dedup();
        let keepdims = match b.get(3) {
            None => false,
            Some(arg) => match self.bool_arg(arg, "keepdims") {
                Some(k) => k,
                None => return Value::Error,
            },
        };
        let reduced: Vec<Dim> =
            ty.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| d.clone()).collect();
        let node = self.add_node(
            Op::Reduce { op, input: x, axes: axes.clone() },
            TensorType { dtype: ty.dtype, shape: reduced },
            span,
        );
        if !keepdims {
            return Value::Tensor(node);
        }
        Value::Tensor(self.reshape_node(node, crate::ir::kept_shape(&ty.shape, &axes), span))
    }

    /// A numeric tensor argument of `name` (E0202 for bool).
    fn numeric_arg(&mut self, arg: Option<(Value, Span)>, name: &str, span: Span) -> Option<(NodeId, usize)> {
        let (x, rank) = self.tensor_arg(arg, name)?;
        let dtype = self.ty(x).dtype;
        if !dtype.is_numeric() {
            self.error(
                Diagnostic::new(Code::E0202, span, format!("`{name}` is not defined for {}", dtype.name()))
                    .note(format!("`{name}` needs a numeric dtype"))
                    .rule("R6.4"),
            );
            return None;
        }
        Some((x, rank))
    }

    /// `argmax`/`argmin`: slots are (x, axis, keepdims). Without `axis`, the position in the flattened
    /// tensor (rank 0), as `torch.argmax(x)`.
    fn arg_reduce(&mut self, op: ArgOp, b: &Bound, span: Span) -> Value {
        let Some((x, rank)) = self.numeric_arg(b.get(0), op.name(), span) else { return Value::Error };
        let ty = self.ty(x).clone();
        let keepdims = match b.get(2) {
            None => false,
            Some(arg) => match self.bool_arg(arg, "keepdims") {
                Some(k) => k,
                None => return Value::Error,
            },
        };
        let (input, axis, kept) = match b.get(1) {
            Some(arg) => {
                let Some(axis) = self.axis_arg(arg, rank) else { return Value::Error };
                (x, axis, crate::ir::kept_shape(&ty.shape, &[axis]))
            }
            None => {
                let Ok(count) = ty.shape.iter().try_fold(Dim::constant(1), |n, d| n.mul(d)) else {
                    self.error(
                        Diagnostic::new(Code::E0202, span, format!("`{}` of a tensor too large to index", op.name()))
                            .note("its element count overflows 64-bit integers")
                            .rule("R6.3"),
                    );
                    return Value::Error;
                };
                (self.reshape_node(x, vec![count], span), 0, vec![Dim::constant(1); rank])
            }
        };
        let mut shape = self.ty(input).shape.clone();
        shape.remove(axis);
        let node = self.add_node(Op::ArgReduce { op, input, axis }, TensorType { dtype: DType::I32, shape }, span);
        if !keepdims {
            return Value::Tensor(node);
        }
        Value::Tensor(self.reshape_node(node, kept, span))
    }

    /// `cumsum`: slots are (x, axis); the result has `x`'s type.
    fn scan(&mut self, op: ScanOp, b: &Bound, span: Span) -> Value {
        let Some((x, rank)) = self.numeric_arg(b.get(0), op.name(), span) else { return Value::Error };
        let Some(axis) = self.axis_arg(b.get(1).expect("required"), rank) else { return Value::Error };
        let ty = self.ty(x).clone();
        Value::Tensor(self.add_node(Op::Scan { op, input: x, axis, reverse: false }, ty, span))
    }

    fn select(&mut self, c: Value, c_span: Span, x: Value, y: Value, span: Span) -> Value {
        if matches!(c, Value::Error) || matches!(x, Value::Error) || matches!(y, Value::Error) {
            return Value::Error;
        }
        let Some(cond) = self.materialize(c, DType::Bool, c_span) else { return Value::Error };
        let c_ty = self.ty(cond).clone();
        if c_ty.dtype != DType::Bool {
            self.error(
                Diagnostic::new(
                    Code::E0201,
                    c_span,
                    format!("`where` needs a bool condition, found {}", c_ty.dtype.name()),
                )
                .note("compare to get a bool, e.g. `mask > 0`")
                .rule("R6.3"),
            );
            return Value::Error;
        }
        let Some((a, b)) = self.unify(x, y, span) else { return Value::Error };
        let (ta, tb) = (self.ty(a).clone(), self.ty(b).clone());
        if ta.dtype != tb.dtype {
            self.error(
                Diagnostic::new(
                    Code::E0201,
                    span,
                    format!("`where` branches have different dtypes {} and {}", ta.dtype.name(), tb.dtype.name()),
                )
                .rule("R6.3"),
            );
            return Value::Error;
        }
        let Some(shape) = self.broadcast_pair(&ta.shape, &tb.shape, span) else { return Value::Error };
        let Some(shape) = self.broadcast_pair(&c_ty.shape, &shape, span) else { return Value::Error };
        let cond = self.broadcast_to(cond, &shape, span);
        let a = self.broadcast_to(a, &shape, span);
        let b = self.broadcast_to(b, &shape, span);
        Value::Tensor(self.add_node(
            Op::Select { cond, on_true: a, on_false: b },
            TensorType { dtype: ta.dtype, shape },
            span,
        ))
    }

    fn permute_node(&mut self, x: NodeId, perm: Vec<usize>, span: Span) -> Value {
        if perm.iter().enumerate().all(|(i, p)| i == *p) {
            return Value::Tensor(x);
        }
        let ty = self.ty(x).clone();
        let shape = perm.iter().map(|&p| ty.shape[p].clone()).collect();
        Value::Tensor(self.add_node(Op::Permute(x, perm), TensorType { dtype: ty.dtype, shape }, span))
    }

    /// The dims of a shape list; `-1` (at most once) is inferred by `reshape`.
    fn shape_list(&mut self, value: Value, span: Span, allow_infer: bool) -> Option<Vec<Option<Dim>>> {
        let Value::List(items) = value else {
            if !matches!(value, Value::Error) {
                self.error(
                    Diagnostic::new(
                        Code::E0203,
                        span,
                        format!("a shape must be a list like `[B, S, 384]`, found {}", value.kind()),
                    )
                    .rule("R6.3"),
                );
            }
            return None;
        };
        let mut dims = Vec::new();
        for item in items {
            match item {
                Value::Int(d) if allow_infer && d.as_const() == Some(-1) && !dims.contains(&None) => dims.push(None),
                Value::Int(d) if d.as_const().is_none_or(|c| c >= 1) => dims.push(Some(d)),
                Value::Int(d) => {
                    self.error(
                        Diagnostic::new(Code::E0311, span, format!("dimension {} in a shape", self.show_dim(&d)))
                            .note("dimensions are at least 1; reshape accepts one -1 to infer a dimension")
                            .rule("R3.3"),
                    );
                    return None;
                }
                Value::Error => return None,
                other => {
                    self.error(
                        Diagnostic::new(Code::E0203, span, format!("a shape holds integers, found {}", other.kind()))
                            .rule("R6.3"),
                    );
                    return None;
                }
            }
        }
        Some(dims)
    }

    fn reshape(&mut self, x: NodeId, shape: Value, shape_span: Span, span: Span) -> Value {
        let Some(dims) = self.shape_list(shape, shape_span, true) else { return Value::Error };
        let from = self.ty(x).shape.clone();
        let total = product(&from);
        let known: Vec<Dim> = dims.iter().flatten().cloned().collect();
        let known_product = product(&known);
        let (Some(total), Some(known_product)) = (total, known_product) else {
            self.error(Diagnostic::new(Code::E0311, span, "dimension arithmetic overflows").rule("R3.2"));
            return Value::Error;
        };
        let mut shape = Vec::new();
        for d in &dims {
            match d {
                Some(d) => shape.push(d.clone()),
                None => match total.div(&known_product) {
                    Ok(q) if q.mul(&known_product).ok().as_ref() == Some(&total) => shape.push(q),
                    _ => {
                        self.error(
                            Diagnostic::new(
                                Code::E0306,
                                shape_span,
                                format!(
                                    "cannot infer `-1`: {} elements do not divide into the other dimensions ({})",
                                    self.show_dim(&total),
                                    self.show_dim(&known_product)
                                ),
                            )
                            .rule("R6.3"),
                        );
                        return Value::Error;
                    }
                },
            }
        }
        let new_total = product(&shape).unwrap_or_default();
        if new_total != total {
            self.error(
                Diagnostic::new(
                    Code::E0306,
                    shape_span,
                    format!(
                        "reshape from {} ({} elements) to {} ({} elements)",
                        self.show_shape(&from),
                        self.show_dim(&total),
                        self.show_shape(&shape),
                        self.show_dim(&new_total)
                    ),
                )
                .note("reshape keeps the number of elements")
                .rule("R6.3"),
            );
            return Value::Error;
        }
        Value::Tensor(self.reshape_node(x, shape, span))
    }

    fn broadcast_builtin(&mut self, x: NodeId, shape: Value, shape_span: Span, span: Span) -> Value {
        let Some(dims) = self.shape_list(shape, shape_span, false) else { return Value::Error };
        let target: Vec<Dim> = dims.into_iter().flatten().collect();
        let from = self.ty(x).shape.clone();
        match super::tensor::broadcast_shapes(&from, &target) {
            Ok(out) if out == target => Value::Tensor(self.broadcast_to(x, &target, span)),
            _ => {
                self.error(
                    Diagnostic::new(
                        Code::E0301,
                        span,
                        format!("cannot broadcast {} to {}", self.show_shape(&from), self.show_shape(&target)),
                    )
                    .note("each dimension must equal the target's or be 1 (aligned from the right)")
                    .rule("R6.1"),
                );
                Value::Error
            }
        }
    }

    fn slice(&mut self, b: &Bound, span: Span) -> Value {
        let Some((x, rank)) = self.tensor_arg(b.get(0), "slice") else { return Value::Error };
        let Some(axis) = self.axis_arg(b.get(1).expect("required"), rank) else { return Value::Error };
        let mut ends = Vec::new();
        for i in [2, 3] {
            match b.get(i).expect("required") {
                (Value::Int(d), _) => ends.push(d),
                (Value::Error, _) => return Value::Error,
                (other, s) => {
                    self.error(
                        Diagnostic::new(Code::E0203, s, format!("slice bounds are integers, found {}", other.kind()))
                            .rule("R6.3"),
                    );
                    return Value::Error;
                }
            }
        }
        let step = match b.get(4) {
            None => 1,
            Some(arg) => {
                let s = arg.1;
                let Some(step) = self.int_arg(arg, "step") else { return Value::Error };
                if step < 1 {
                    self.error(
                        Diagnostic::new(Code::E0312, s, format!("slice step {step} must be at least 1")).rule("R6.3"),
                    );
                    return Value::Error;
                }
                step
            }
        };
        let ty = self.ty(x).clone();
        let dim = ty.shape[axis].clone();
        let (start, end) = (ends[0].clone(), ends[1].clone());
        // 0 <= start < end <= dim.
        let start_ok = start.is_nonneg();
        let nonempty = end.sub(&start).and_then(|d| d.sub(&Dim::constant(1))).is_ok_and(|d| d.is_nonneg());
        let within = dim.sub(&end).is_ok_and(|d| d.is_nonneg());
        if !(start_ok && nonempty && within) {
            self.error(
                Diagnostic::new(
                    Code::E0312,
                    span,
                    format!(
                        "slice {}..{} of axis {axis} (size {}) is not provably inside it and non-empty",
                        self.show_dim(&start),
                        self.show_dim(&end),
                        self.show_dim(&dim)
                    ),
                )
                .note("slices need 0 <= start < end <= size")
                .rule("R6.3"),
            );
            return Value::Error;
        }
        let count =
            end.sub(&start).and_then(|d| d.add(&Dim::constant(step - 1))).and_then(|d| d.div(&Dim::constant(step)));
        let Ok(count) = count else { return Value::Error };
        let mut shape = ty.shape.clone();
        shape[axis] = count;
        if shape == ty.shape {
            return Value::Tensor(x);
        }
        Value::Tensor(self.add_node(
            Op::Slice { input: x, axis, start, step },
            TensorType { dtype: ty.dtype, shape },
            span,
        ))
    }

    fn gather(&mut self, b: &Bound, span: Span) -> Value {
        let Some((table, rank)) = self.tensor_arg(b.get(0), "gather") else { return Value::Error };
        let Some((indices, _)) = self.tensor_arg(b.get(1), "gather") else { return Value::Error };
        let axis = match b.get(2) {
            None => 0,
            Some(arg) => match self.axis_arg(arg, rank) {
                Some(a) => a,
                None => return Value::Error,
            },
        };
        if rank == 0 {
            self.error(Diagnostic::new(Code::E0303, span, "`gather` needs a table of rank 1 or more").rule("R6.3"));
            return Value::Error;
        }
        let (tt, it) = (self.ty(table).clone(), self.ty(indices).clone());
        if !it.dtype.is_int() {
            self.error(
                Diagnostic::new(
                    Code::E0201,
                    b.get(1).expect("required").1,
                    format!("`gather` indices must be i32 or u32, found {}", it.dtype.name()),
                )
                .rule("R6.3"),
            );
            return Value::Error;
        }
        let mut shape: Vec<Dim> = tt.shape[..axis].to_vec();
        shape.extend(it.shape.iter().cloned());
        shape.extend(tt.shape[axis + 1..].iter().cloned());
        Value::Tensor(self.add_node(Op::Gather { table, indices, axis }, TensorType { dtype: tt.dtype, shape }, span))
    }

    /// `take_along_axis(x, indices, axis)`, torch.gather: `indices` is `i32` with `x`'s rank and dimensions
    /// except along `axis`.
    fn take_along_axis(&mut self, b: &Bound, span: Span) -> Value {
        let Some((x, rank)) = self.tensor_arg(b.get(0), "take_along_axis") else { return Value::Error };
        let Some((indices, _)) = self.tensor_arg(b.get(1), "take_along_axis") else { return Value::Error };
        let Some(axis) = self.axis_arg(b.get(2).expect("required"), rank) else { return Value::Error };
        let index_span = b.get(1).expect("required").1;
        if !self.along_axis_indices("take_along_axis", x, indices, index_span, axis) {
            return Value::Error;
        }
        Value::Tensor(self.take_along_at(x, indices, axis, span))
    }

    /// `scatter_add(base, indices, src, axis)`, torch.scatter_add: `indices` (`i32`) and `src` have one
    /// shape, equal to `base`'s except along `axis`; `src` has `base`'s dtype, a number or a bool not.
    fn scatter_add(&mut self, b: &Bound, span: Span) -> Value {
        let Some((base, rank)) = self.tensor_arg(b.get(0), "scatter_add") else { return Value::Error };
        let Some((indices, _)) = self.tensor_arg(b.get(1), "scatter_add") else { return Value::Error };
        let Some((src, _)) = self.tensor_arg(b.get(2), "scatter_add") else { return Value::Error };
        let Some(axis) = self.axis_arg(b.get(3).expect("required"), rank) else { return Value::Error };
        let (index_span, src_span) = (b.get(1).expect("required").1, b.get(2).expect("required").1);
        if !self.along_axis_indices("scatter_add", base, indices, index_span, axis) {
            return Value::Error;
        }
        let (bt, it, st) = (self.ty(base).clone(), self.ty(indices).clone(), self.ty(src).clone());
        if bt.dtype == DType::Bool {
            self.error(Diagnostic::new(Code::E0202, span, "`scatter_add` adds numbers, not bool").rule("R6.3"));
            return Value::Error;
        }
        if st.dtype != bt.dtype {
            self.error(
                Diagnostic::new(
                    Code::E0201,
                    src_span,
                    format!("`scatter_add` of {} into {}", st.dtype.name(), bt.dtype.name()),
                )
                .note("the source needs the base's dtype")
                .rule("R6.3"),
            );
            return Value::Error;
        }
        if st.shape != it.shape {
            self.error(
                Diagnostic::new(
                    Code::E0304,
                    src_span,
                    format!("`scatter_add` source {} with indices {}", self.show_type(&st), self.show_type(&it)),
                )
                .note("the source and the indices need the same shape")
                .rule("R6.3"),
            );
            return Value::Error;
        }
        Value::Tensor(self.add_node(Op::ScatterAdd { base, indices, src, axis }, bt, span))
    }

    /// Checks the indices of an along-axis op on `data`: `i32`, `data`'s rank, `data`'s dimensions except
    /// along `axis` (E0201, E0303, E0304).
    fn along_axis_indices(&mut self, name: &str, data: NodeId, indices: NodeId, span: Span, axis: usize) -> bool {
        let (dt, it) = (self.ty(data).clone(), self.ty(indices).clone());
        if it.dtype != DType::I32 {
            self.error(
                Diagnostic::new(Code::E0201, span, format!("`{name}` indices must be i32, found {}", it.dtype.name()))
                    .note("convert with `i32(indices)`")
                    .rule("R6.3"),
            );
            return false;
        }
        if it.rank() != dt.rank() {
            self.error(
                Diagnostic::new(
                    Code::E0303,
                    span,
                    format!("`{name}` indices of rank {} for a tensor of rank {}", it.rank(), dt.rank()),
                )
                .note("the indices need the tensor's rank")
                .rule("R6.3"),
            );
            return false;
        }
        let mut expected = dt.shape.clone();
        expected[axis] = it.shape[axis].clone();
        if it.shape != expected {
            self.error(
                Diagnostic::new(
                    Code::E0304,
                    span,
                    format!("`{name}` indices {} along axis {axis} of {}", self.show_type(&it), self.show_type(&dt)),
                )
                .note(format!("the indices need the tensor's dimensions on every axis but {axis}"))
                .rule("R6.3"),
            );
            return false;
        }
        true
    }

    /// The positions sorting `x` along `axis` (default the last), for `sort`, `argsort` and `topk`: `x`, the
    /// `Argsort` node and the axis.
    fn argsort(
        &mut self,
        name: &str,
        x: Option<(Value, Span)>,
        axis: Option<(Value, Span)>,
        descending: bool,
        span: Span,
    ) -> Option<(NodeId, NodeId, usize)> {
        let x_span = x.as_ref().map(|(_, s)| *s)?;
        let (x, rank) = self.tensor_arg(x, name)?;
        if rank == 0 {
            self.error(Diagnostic::new(Code::E0303, x_span, format!("`{name}` needs rank 1 or more")).rule("R6.3"));
            return None;
        }
        let axis = match axis {
            None => rank - 1,
            Some(arg) => self.axis_arg(arg, rank)?,
        };
        let ty = self.ty(x).clone();
        if ty.dtype == DType::Bool {
            self.error(
                Diagnostic::new(Code::E0202, x_span, format!("`{name}` orders numbers, not bool"))
                    .note("convert with e.g. `i32(x)`")
                    .rule("R6.3"),
            );
            return None;
        }
        let order = self.add_node(
            Op::Argsort { input: x, axis, descending },
            TensorType { dtype: DType::I32, shape: ty.shape },
            span,
        );
        Some((x, order, axis))
    }

    /// The first `k` positions of an argsort (`topk`), `1 <= k <= size` (E0312).
    fn first_k(&mut self, order: NodeId, axis: usize, k: i64, k_span: Span, span: Span) -> Option<NodeId> {
        let ty = self.ty(order).clone();
        let size = ty.shape[axis].clone();
        let within = size.sub(&Dim::constant(k)).is_ok_and(|d| d.is_nonneg());
        if k < 1 || !within {
            self.error(
                Diagnostic::new(
                    Code::E0312,
                    k_span,
                    format!("`topk` of {k} elements along axis {axis} of size {}", self.show_dim(&size)),
                )
                .note("k needs 1 <= k <= the axis' size")
                .rule("R6.3"),
            );
            return None;
        }
        let mut shape = ty.shape.clone();
        shape[axis] = Dim::constant(k);
        if shape == ty.shape {
            return Some(order);
        }
        Some(self.add_node(
            Op::Slice { input: order, axis, start: Dim::constant(0), step: 1 },
            TensorType { dtype: DType::I32, shape },
            span,
        ))
    }

    /// A `TakeAlongAxis` node: `x` read at `indices` along `axis`.
    fn take_along_at(&mut self, x: NodeId, indices: NodeId, axis: usize, span: Span) -> NodeId {
        let ty = TensorType { dtype: self.ty(x).dtype, shape: self.ty(indices).shape.clone() };
        self.add_node(Op::TakeAlongAxis { input: x, indices, axis }, ty, span)
    }

    fn concat(&mut self, args: Vec<ArgValue>, span: Span) -> Value {
        let mut tensors = Vec::new();
        let mut axis_arg = None;
        for arg in args {
            match &arg.name {
                Some(n) if n.name == "axis" => axis_arg = Some((arg.value, arg.span)),
                Some(n) => {
                    self.error(
                        Diagnostic::new(Code::E0106, n.span, format!("`concat` has no parameter `{}`", n.name))
                            .note("parameters: tensors..., axis")
                            .rule("R5.2"),
                    );
                    return Value::Error;
                }
                None => tensors.push((arg.value, arg.span)),
            }
        }
        if tensors.is_empty() {
            self.error(Diagnostic::new(Code::E0106, span, "`concat` needs at least one tensor").rule("R5.2"));
            return Value::Error;
        }
        let mut nodes = Vec::new();
        let mut spans = Vec::new();
        for t in tensors {
            spans.push(t.1);
            let Some((node, _)) = self.tensor_arg(Some(t), "concat") else { return Value::Error };
            nodes.push(node);
        }
        let first = self.ty(nodes[0]).clone();
        let axis = match axis_arg {
            None => 0,
            Some(arg) => match self.axis_arg(arg, first.rank()) {
                Some(a) => a,
                None => return Value::Error,
            },
        };
        if first.rank() == 0 {
            self.error(Diagnostic::new(Code::E0303, span, "`concat` needs tensors of rank 1 or more").rule("R6.3"));
            return Value::Error;
        }
        let mut total = first.shape[axis].clone();
        for (&node, &arg_span) in nodes[1..].iter().zip(&spans[1..]) {
            let ty = self.ty(node).clone();
            let same_rest = ty.rank() == first.rank()
                && ty.shape.iter().zip(&first.shape).enumerate().all(|(i, (a, b))| i == axis || a == b);
            if ty.dtype != first.dtype {
                self.error(
                    Diagnostic::new(
                        Code::E0201,
                        arg_span,
                        format!("`concat` of {} and {}", first.dtype.name(), ty.dtype.name()),
                    )
                    .with_label(spans[0], format!("the first tensor is {}", self.show_type(&first)))
                    .note("all tensors need the same dtype; convert with e.g. `f32(x)`")
                    .rule("R6.3"),
                );
                return Value::Error;
            }
            if !same_rest {
                self.error(
                    Diagnostic::new(
                        Code::E0304,
                        arg_span,
                        format!("`concat` along axis {axis} of {} and {}", self.show_type(&first), self.show_type(&ty)),
                    )
                    .note("all tensors need the same dtype, rank and dimensions except along the axis")
                    .rule("R6.3"),
                );
                return Value::Error;
            }
            total = match total.add(&ty.shape[axis]) {
                Ok(t) => t,
                Err(_) => return Value::Error,
            };
        }
        if nodes.len() == 1 {
            return Value::Tensor(nodes[0]);
        }
        let mut shape = first.shape.clone();
        shape[axis] = total;
        Value::Tensor(self.add_node(Op::Concat { inputs: nodes, axis }, TensorType { dtype: first.dtype, shape }, span))
    }
}

/// A float function of a compile-time number, in f64 (weak scalars stay weak, R3.5).
fn fold_unary(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Erf => libm::erf(x),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        UnaryOp::Round => x.round_ties_even(),
        UnaryOp::Atan => x.atan(),
        UnaryOp::Not => x,
    }
}

fn product(dims: &[Dim]) -> Option<Dim> {
    dims.iter().try_fold(Dim::constant(1), |acc, d| acc.mul(d).ok())
}

fn signature_text(sig: &[(&str, bool)]) -> String {
    let parts: Vec<String> =
        sig.iter().map(|(n, required)| if *required { n.to_string() } else { format!("{n}?") }).collect();
    parts.join(", ")
}
