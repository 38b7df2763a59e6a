//! Index notation (R7): `y[i, j: N] = body` becomes one `Op::Map`. Builds the scalar body, keeps weakly typed
//! scalars (literals, dimensions, index variables) as small trees until they meet a typed value, infers index
//! extents from bare uses, and proves every access in bounds.

use super::{Elab, Scope, Value, builtins};
use crate::arena::Arena;
use crate::diag::{Code, Diagnostic};
use crate::dim::Dim;
use crate::ir::{
    Affine, BinaryOp, DType, MapOp, NodeId, Op, ReduceOp, Scalar, ScalarExpr, ScalarId, ScalarNode, TensorType,
    UnaryOp, VarId,
};
use crate::span::Span;
use crate::syntax::ast;

/// A scalar whose dtype is not decided yet (R3.5).
#[derive(Clone, Debug)]
enum Weak {
    Int(Dim),
    Float(f64),
    Bool(bool),
    Var(VarId),
    Unary(UnaryOp, Box<Weak>),
    Binary(BinaryOp, Box<Weak>, Box<Weak>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum WeakKind {
    Int,
    Float,
    Bool,
}

impl Weak {
    fn kind(&self) -> WeakKind {
        match self {
            Weak::Int(_) | Weak::Var(_) => WeakKind::Int,
            Weak::Float(_) => WeakKind::Float,
            Weak::Bool(_) => WeakKind::Bool,
            Weak::Unary(UnaryOp::Not, _) => WeakKind::Bool,
            Weak::Unary(op, x) => {
                if op.float_only() {
                    WeakKind::Float
                } else {
                    x.kind()
                }
            }
            Weak::Binary(op, a, b) => {
                if op.is_comparison() || op.is_logical() {
                    WeakKind::Bool
                } else if a.kind() == WeakKind::Float || b.kind() == WeakKind::Float || *op == BinaryOp::Pow {
                    WeakKind::Float
                } else {
                    WeakKind::Int
                }
            }
        }
    }

    fn default_dtype(&self) -> DType {
        match self.kind() {
            WeakKind::Int => DType::I32,
            WeakKind::Float => DType::F32,
            WeakKind::Bool => DType::Bool,
        }
    }
}

#[derive(Clone, Debug)]
enum SVal {
    Strong(ScalarId),
    Weak(Weak),
    Error,
}

struct VarInfo {
    name: String,
    span: Span,
    explicit: Option<Dim>,
    /// Extents from bare uses (`x[i]`): the dimension and where it was used.
    uses: Vec<(Dim, Span)>,
}

/// An access to prove in bounds once extents are known.
struct Access {
    span: Span,
    tensor: String,
    shape: Vec<Dim>,
    indices: Vec<(Affine, Span)>,
}

struct MapBuilder {
    inputs: Vec<NodeId>,
    exprs: Arena<ScalarNode>,
    vars: Vec<VarInfo>,
    /// Index variables in scope, innermost last.
    active: Vec<VarId>,
    accesses: Vec<Access>,
}

impl MapBuilder {
    fn push(&mut self, expr: ScalarExpr, dtype: DType, span: Span) -> ScalarId {
        self.exprs.append(ScalarNode { expr, dtype }, span)
    }

    fn dtype(&self, id: ScalarId) -> DType {
        self.exprs[id].dtype
    }

    fn find_var(&self, name: &str) -> Option<VarId> {
        self.active.iter().rev().copied().find(|v| self.vars[v.0 as usize].name == name)
    }

    fn input_slot(&mut self, node: NodeId) -> usize {
        match self.inputs.iter().position(|n| *n == node) {
            Some(i) => i,
            None => {
                self.inputs.push(node);
                self.inputs.len() - 1
            }
        }
    }
}

impl Elab<'_> {
    /// Elaborates `name[indices] = value` into an `Op::Map` node.
    pub(crate) fn define(
        &mut self,
        scope: &mut Scope,
        name: &ast::Ident,
        indices: &[ast::IndexDecl],
        value: &ast::Expr,
        span: Span,
    ) -> Value {
        let mut mb = MapBuilder { inputs: vec![], exprs: Arena::new(), vars: vec![], active: vec![], accesses: vec![] };
        let rank = indices.len();
        if !self.declare_vars(scope, &mut mb, indices) {
            return Value::Error;
        }
        let body = self.scalar(scope, &mut mb, value);
        let body = match body {
            SVal::Error => return Value::Error,
            SVal::Strong(id) => id,
            SVal::Weak(w) => {
                let dtype = w.default_dtype();
                match self.emit_weak(&mut mb, &w, dtype, value.span) {
                    Some(id) => id,
                    None => return Value::Error,
                }
            }
        };
        let Some(extents) = self.resolve_extents(&mb) else { return Value::Error };
        if !self.check_bounds(&mb, &extents) {
            return Value::Error;
        }
        let dtype = mb.dtype(body);
        let shape = extents[..rank].to_vec();
        let _ = name;
        let map = MapOp { inputs: mb.inputs, extents, exprs: mb.exprs, body };
        Value::Tensor(self.add_node(Op::Map(Box::new(map)), TensorType { dtype, shape }, span))
    }

    /// Declares index variables (output or reduction) and evaluates explicit extents (R7.3, R7.4).
    fn declare_vars(&mut self, scope: &mut Scope, mb: &mut MapBuilder, decls: &[ast::IndexDecl]) -> bool {
        let mut ok = true;
        for decl in decls {
            if mb.find_var(&decl.name.name).is_some() {
                self.error(
                    Diagnostic::new(
                        Code::E0403,
                        decl.name.span,
                        format!("index variable `{}` is already in use", decl.name.name),
                    )
                    .note("each index variable of a definition and its reductions needs its own name")
                    .rule("R7.4"),
                );
                ok = false;
                continue;
            }
            let explicit = match &decl.extent {
                None => None,
                Some(e) => match self.dim_expr(scope, e, "R7.3") {
                    Some(d) => Some(d),
                    None => {
                        ok = false;
                        None
                    }
                },
            };
            let id = VarId(mb.vars.len() as u32);
            mb.vars.push(VarInfo { name: decl.name.name.clone(), span: decl.name.span, explicit, uses: vec![] });
            mb.active.push(id);
        }
        ok
    }

    fn resolve_extents(&mut self, mb: &MapBuilder) -> Option<Vec<Dim>> {
        let mut extents = Vec::new();
        let mut ok = true;
        for var in &mb.vars {
            if let Some(d) = &var.explicit {
                extents.push(d.clone());
                continue;
            }
            let Some((first, first_span)) = var.uses.first() else {
                self.error(
                    Diagnostic::new(
                        Code::E0308,
                        var.span,
                        format!("cannot infer the extent of index variable `{}`", var.name),
                    )
                    .label("it is never used alone as an index")
                    .note(format!("give it explicitly: `{}: N`", var.name))
                    .rule("R7.3"),
                );
                ok = false;
                extents.push(Dim::constant(1));
                continue;
            };
            if let Some((other, other_span)) = var.uses.iter().find(|(d, _)| d != first) {
                self.error(
                    Diagnostic::new(
                        Code::E0309,
                        *other_span,
                        format!(
                            "index variable `{}` ranges over {} here but over {} elsewhere",
                            var.name,
                            self.show_dim(other),
                            self.show_dim(first)
                        ),
                    )
                    .with_label(*first_span, format!("extent {} from this use", self.show_dim(first)))
                    .note(format!(
                        "give the extent explicitly (`{}: N`) and pad the other access with `else`",
                        var.name
                    ))
                    .rule("R7.3"),
                );
                ok = false;
            }
            extents.push(first.clone());
        }
        ok.then_some(extents)
    }

    /// Proves `0 <= index <= dim - 1` for every access without `else` (R7.5).
    fn check_bounds(&mut self, mb: &MapBuilder, extents: &[Dim]) -> bool {
        let mut ok = true;
        for access in &mb.accesses {
            for (axis, ((affine, index_span), dim)) in access.indices.iter().zip(&access.shape).enumerate() {
                let Some((lo, hi)) = affine_range(affine, extents) else {
                    self.error(
                        Diagnostic::new(
                            Code::E0401,
                            *index_span,
                            "cannot bound this index: a coefficient's sign is unknown",
                        )
                        .note("write the access with `else value` to read `value` outside the tensor")
                        .rule("R7.5"),
                    );
                    ok = false;
                    continue;
                };
                let below = lo.is_nonneg();
                let above = dim.sub(&Dim::constant(1)).and_then(|d| d.sub(&hi)).is_ok_and(|d| d.is_nonneg());
                if !(below && above) {
                    let which = match (below, above) {
                        (false, false) => "below 0 and past the end",
                        (false, true) => "below 0",
                        _ => "past the end",
                    };
                    self.error(
                        Diagnostic::new(
                            Code::E0401,
                            *index_span,
                            format!("index into axis {axis} of `{}` may go {which}", access.tensor),
                        )
                        .label(format!(
                            "ranges over {} ..= {}, but the axis has size {}",
                            self.show_dim(&lo),
                            self.show_dim(&hi),
                            self.show_dim(dim)
                        ))
                        .with_label(access.span, "in this access")
                        .note("pad it with `else value` to read `value` outside the tensor")
                        .rule("R7.5"),
                    );
                    ok = false;
                }
            }
        }
        ok
    }

    /// Elaborates a scalar expression of a definition's body.
    fn scalar(&mut self, scope: &mut Scope, mb: &mut MapBuilder, expr: &ast::Expr) -> SVal {
        let span = expr.span;
        match &expr.kind {
            ast::ExprKind::Int(v) => SVal::Weak(Weak::Int(Dim::constant(*v))),
            ast::ExprKind::Float(v) => SVal::Weak(Weak::Float(*v)),
            ast::ExprKind::Bool(b) => SVal::Weak(Weak::Bool(*b)),
            ast::ExprKind::Name(path) => {
                if path.segments.len() == 1
                    && let Some(var) = mb.find_var(&path.segments[0].name)
                {
                    return SVal::Weak(Weak::Var(var));
                }
                match self.expr(scope, expr) {
                    Value::Int(d) => SVal::Weak(Weak::Int(d)),
                    Value::Float(v) => SVal::Weak(Weak::Float(v)),
                    Value::Bool(b) => SVal::Weak(Weak::Bool(b)),
                    Value::Tensor(node) => {
                        let ty = self.ty(node).clone();
                        if ty.rank() != 0 {
                            self.error(
                                Diagnostic::new(
                                    Code::E0303,
                                    span,
                                    format!("tensor `{}` of rank {} used without indices", path.text(), ty.rank()),
                                )
                                .note(format!("read one element, e.g. `{}[...]`", path.text()))
                                .rule("R7.1"),
                            );
                            return SVal::Error;
                        }
                        let input = mb.input_slot(node);
                        SVal::Strong(mb.push(
                            ScalarExpr::Load { input, indices: vec![], default: None },
                            ty.dtype,
                            span,
                        ))
                    }
                    Value::List(_) => {
                        self.error(
                            Diagnostic::new(Code::E0203, span, "a list cannot be used in index notation").rule("R7.1"),
                        );
                        SVal::Error
                    }
                    Value::Error => SVal::Error,
                }
            }
            ast::ExprKind::Access { tensor, indices, default } => {
                self.access(scope, mb, tensor, indices, default.as_deref(), span)
            }
            ast::ExprKind::Unary(op, x) => {
                let x = self.scalar(scope, mb, x);
                let op = match op {
                    ast::UnaryOp::Neg => UnaryOp::Neg,
                    ast::UnaryOp::Not => UnaryOp::Not,
                };
                self.scalar_unary(mb, op, x, span)
            }
            ast::ExprKind::Binary(ast::BinOp::MatMul, ..) => {
                self.error(
                    Diagnostic::new(Code::E0203, span, "`@` inside index notation")
                        .note("write the contraction with `sum[k](a[i, k] * b[k, j])`")
                        .rule("R7.1"),
                );
                SVal::Error
            }
            ast::ExprKind::Binary(op, a, b) => {
                let (left, right) = (a, b);
                let a = self.scalar(scope, mb, left);
                let b = self.scalar(scope, mb, right);
                if matches!(b, SVal::Weak(_)) {
                    self.warn_operator_after_else(*op, left, right);
                }
                self.scalar_binary(mb, super::tensor::ir_binop(*op), a, b, span)
            }
            ast::ExprKind::Call { callee, prefix: _, args } => self.scalar_call(scope, mb, callee, args, span),
            ast::ExprKind::Reduce { op, indices, body } => {
                let before = mb.active.len();
                let first_var = mb.vars.len();
                if !self.declare_vars(scope, mb, indices) {
                    mb.active.truncate(before);
                    return SVal::Error;
                }
                let vars: Vec<VarId> = (first_var..mb.vars.len()).map(|i| VarId(i as u32)).collect();
                let body_val = self.scalar(scope, mb, body);
                mb.active.truncate(before);
                let op = match op {
                    ast::Reducer::Sum => ReduceOp::Sum,
                    ast::Reducer::Max => ReduceOp::Max,
                    ast::Reducer::Min => ReduceOp::Min,
                    ast::Reducer::Mean => ReduceOp::Mean,
                    ast::Reducer::Prod => ReduceOp::Prod,
                };
                let body_id = match body_val {
                    SVal::Error => return SVal::Error,
                    SVal::Strong(id) => id,
                    SVal::Weak(w) => {
                        let dtype = if op == ReduceOp::Mean { DType::F32 } else { w.default_dtype() };
                        match self.emit_weak(mb, &w, dtype, body.span) {
                            Some(id) => id,
                            None => return SVal::Error,
                        }
                    }
                };
                let dtype = mb.dtype(body_id);
                let ok = if op == ReduceOp::Mean { dtype.is_float() } else { dtype.is_numeric() };
                if !ok {
                    self.error(
                        Diagnostic::new(
                            Code::E0202,
                            span,
                            format!("`{}` is not defined for {}", op.name(), dtype.name()),
                        )
                        .rule("R7.4"),
                    );
                    return SVal::Error;
                }
                SVal::Strong(mb.push(ScalarExpr::Reduce { op, vars, body: body_id }, dtype, span))
            }
            ast::ExprKind::List(_) => {
                self.error(Diagnostic::new(Code::E0203, span, "a list cannot be used in index notation").rule("R7.1"));
                SVal::Error
            }
            ast::ExprKind::Tuple(items) => {
                self.error(
                    Diagnostic::new(Code::E0114, span, format!("a tuple of {} values is not one value", items.len()))
                        .label("several values where one element is expected")
                        .rule("R5.6"),
                );
                SVal::Error
            }
            ast::ExprKind::Error => SVal::Error,
        }
    }

    fn access(
        &mut self,
        scope: &mut Scope,
        mb: &mut MapBuilder,
        tensor: &ast::Path,
        indices: &[ast::Expr],
        default: Option<&ast::Expr>,
        span: Span,
    ) -> SVal {
        let node = match self.expr(scope, &ast::Expr { kind: ast::ExprKind::Name(tensor.clone()), span: tensor.span }) {
            Value::Tensor(node) => node,
            Value::Error => return SVal::Error,
            other => {
                self.error(
                    Diagnostic::new(
                        Code::E0203,
                        tensor.span,
                        format!("`{}` is {}, not a tensor", tensor.text(), other.kind()),
                    )
                    .rule("R7.1"),
                );
                return SVal::Error;
            }
        };
        let ty = self.ty(node).clone();
        if indices.len() != ty.rank() {
            self.error(
                Diagnostic::new(
                    Code::E0303,
                    span,
                    format!("`{}` has rank {} but is indexed with {} indices", tensor.text(), ty.rank(), indices.len()),
                )
                .label(format!("`{}` is {}", tensor.text(), self.show_type(&ty)))
                .rule("R7.1"),
            );
            return SVal::Error;
        }
        let mut affines = Vec::new();
        let mut ok = true;
        for (axis, index) in indices.iter().enumerate() {
            if let Some(name) = super::bare_name(index)
                && let Some(var) = mb.find_var(name)
            {
                mb.vars[var.0 as usize].uses.push((ty.shape[axis].clone(), index.span));
            }
            match self.affine(scope, mb, index) {
                Some(a) => affines.push((a, index.span)),
                None => ok = false,
            }
        }
        let default = match default {
            None => None,
            Some(d) => match self.scalar(scope, mb, d) {
                SVal::Weak(Weak::Int(v)) if v.as_const().is_some() && ty.dtype.is_numeric() => {
                    let v = v.as_const().unwrap_or(0);
                    Some(if ty.dtype.is_float() { Scalar::Float(v as f64) } else { Scalar::Int(v) })
                }
                SVal::Weak(Weak::Float(v)) if ty.dtype.is_float() => Some(Scalar::Float(v)),
                SVal::Weak(Weak::Unary(UnaryOp::Neg, inner))
                    if matches!(*inner, Weak::Float(_)) && ty.dtype.is_float() =>
                {
                    let Weak::Float(v) = *inner else { return SVal::Error };
                    Some(Scalar::Float(-v))
                }
                SVal::Weak(Weak::Unary(UnaryOp::Neg, inner))
                    if matches!(&*inner, Weak::Int(d) if d.as_const().is_some()) && ty.dtype.is_numeric() =>
                {
                    let Weak::Int(d) = *inner else { return SVal::Error };
                    let v = -d.as_const().unwrap_or(0);
                    Some(if ty.dtype.is_float() { Scalar::Float(v as f64) } else { Scalar::Int(v) })
                }
                SVal::Weak(Weak::Bool(b)) if ty.dtype == DType::Bool => Some(Scalar::Bool(b)),
                SVal::Error => return SVal::Error,
                // Any other weakly typed scalar (a dimension such as `L`, an `int` argument, an index
                // variable or an expression of them, R3.5) takes the tensor's dtype and is selected where
                // the access leaves the tensor.
                SVal::Weak(weak) => {
                    let Some(value) = self.emit_weak(mb, &weak, ty.dtype, d.span) else { return SVal::Error };
                    let padded = Some(if ty.dtype == DType::Bool {
                        Scalar::Bool(false)
                    } else if ty.dtype.is_float() {
                        Scalar::Float(0.0)
                    } else {
                        Scalar::Int(0)
                    });
                    if !ok {
                        return SVal::Error;
                    }
                    let inside = in_bounds(mb, &affines, &ty.shape, span);
                    let input = mb.input_slot(node);
                    let indices = affines.into_iter().map(|(a, _)| a).collect();
                    let load = mb.push(ScalarExpr::Load { input, indices, default: padded }, ty.dtype, span);
                    let select = ScalarExpr::Select { cond: inside, on_true: load, on_false: value };
                    return SVal::Strong(mb.push(select, ty.dtype, span));
                }
                SVal::Strong(_) => {
                    self.error(
                        Diagnostic::new(
                            Code::E0201,
                            d.span,
                            format!(
                                "the `else` value must be a weakly typed scalar, which takes the tensor's dtype {}",
                                ty.dtype.name()
                            ),
                        )
                        .note("e.g. `else 0.0`, `else 0`, or a dimension such as `else L`; not a tensor's element")
                        .rule("R7.5"),
                    );
                    return SVal::Error;
                }
            },
        };
        if !ok {
            return SVal::Error;
        }
        if default.is_none() {
            mb.accesses.push(Access { span, tensor: tensor.text(), shape: ty.shape.clone(), indices: affines.clone() });
        }
        let input = mb.input_slot(node);
        let indices = affines.into_iter().map(|(a, _)| a).collect();
        SVal::Strong(mb.push(ScalarExpr::Load { input, indices, default }, ty.dtype, span))
    }

    /// An index expression as `offset + sum(coef * var)` (R7.2).
    fn affine(&mut self, scope: &mut Scope, mb: &MapBuilder, expr: &ast::Expr) -> Option<Affine> {
        let not_affine = |this: &mut Self, why: &str| {
            this.error(
                Diagnostic::new(Code::E0402, expr.span, format!("index is not affine: {why}"))
                    .note("indices are sums of index variables times integers, plus integers; use `gather` for data-dependent indices")
                    .rule("R7.2"),
            );
            None
        };
        match &expr.kind {
            ast::ExprKind::Int(v) => Some(Affine::new(vec![], Dim::constant(*v))),
            ast::ExprKind::Name(path) => {
                if path.segments.len() == 1
                    && let Some(var) = mb.find_var(&path.segments[0].name)
                {
                    return Some(Affine::new(vec![(var, Dim::constant(1))], Dim::constant(0)));
                }
                match self.expr(scope, expr) {
                    Value::Int(d) => Some(Affine::new(vec![], d)),
                    Value::Error => None,
                    Value::Tensor(_) => not_affine(self, "a tensor value cannot be an index"),
                    other => not_affine(self, &format!("{} cannot be an index", other.kind())),
                }
            }
            ast::ExprKind::Unary(ast::UnaryOp::Neg, x) => {
                let a = self.affine(scope, mb, x)?;
                scale_affine(&a, &Dim::constant(-1))
            }
            ast::ExprKind::Binary(op @ (ast::BinOp::Add | ast::BinOp::Sub), a, b) => {
                let a = self.affine(scope, mb, a)?;
                let b = self.affine(scope, mb, b)?;
                let b = if *op == ast::BinOp::Sub { scale_affine(&b, &Dim::constant(-1))? } else { b };
                add_affine(&a, &b)
            }
            ast::ExprKind::Binary(ast::BinOp::Mul, a, b) => {
                let a = self.affine(scope, mb, a)?;
                let b = self.affine(scope, mb, b)?;
                match (a.terms.is_empty(), b.terms.is_empty()) {
                    (true, _) => scale_affine(&b, &a.offset),
                    (_, true) => scale_affine(&a, &b.offset),
                    _ => not_affine(self, "a product of index variables"),
                }
            }
            ast::ExprKind::Binary(ast::BinOp::Div, a, b) => {
                let a = self.affine(scope, mb, a)?;
                let b = self.affine(scope, mb, b)?;
                if !a.terms.is_empty() || !b.terms.is_empty() {
                    return not_affine(self, "division of an index variable");
                }
                match a.offset.div(&b.offset) {
                    Ok(d) => Some(Affine::new(vec![], d)),
                    Err(err) => not_affine(self, &err.to_string()),
                }
            }
            ast::ExprKind::Error => None,
            _ => not_affine(self, "only `+`, `-`, `*` by integers and integer `/` are allowed"),
        }
    }

    fn scalar_unary(&mut self, mb: &mut MapBuilder, op: UnaryOp, x: SVal, span: Span) -> SVal {
        match x {
            SVal::Error => SVal::Error,
            SVal::Weak(w) => match (op, &w) {
                (UnaryOp::Neg, Weak::Int(d)) => match d.neg() {
                    Ok(d) => SVal::Weak(Weak::Int(d)),
                    Err(_) => SVal::Error,
                },
                (UnaryOp::Neg, Weak::Float(v)) => SVal::Weak(Weak::Float(-v)),
                (UnaryOp::Not, Weak::Bool(b)) => SVal::Weak(Weak::Bool(!b)),
                _ => {
                    let kind = w.kind();
                    let ok = match op {
                        UnaryOp::Not => kind == WeakKind::Bool,
                        UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => kind != WeakKind::Bool,
                        _ => kind != WeakKind::Bool,
                    };
                    if !ok {
                        self.error(
                            Diagnostic::new(
                                Code::E0202,
                                span,
                                format!("`{}` is not defined for this value", op.name()),
                            )
                            .rule("R6.4"),
                        );
                        return SVal::Error;
                    }
                    SVal::Weak(Weak::Unary(op, Box::new(w)))
                }
            },
            SVal::Strong(id) => {
                let dtype = mb.dtype(id);
                let ok = match op {
                    UnaryOp::Not => dtype == DType::Bool,
                    UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => dtype.is_numeric(),
                    _ => dtype.is_float(),
                };
                if !ok {
                    self.error(
                        Diagnostic::new(
                            Code::E0202,
                            span,
                            format!("`{}` is not defined for {}", op.name(), dtype.name()),
                        )
                        .note("convert first, e.g. `f32(x)`")
                        .rule("R6.4"),
                    );
                    return SVal::Error;
                }
                SVal::Strong(mb.push(ScalarExpr::Unary(op, id), dtype, span))
            }
        }
    }

    fn scalar_binary(&mut self, mb: &mut MapBuilder, op: BinaryOp, a: SVal, b: SVal, span: Span) -> SVal {
        // `x ^ n` with an integer literal: repeated multiplication.
        if op == BinaryOp::Pow
            && let (SVal::Strong(base), SVal::Weak(Weak::Int(n))) = (&a, &b)
            && let Some(n) = n.as_const().filter(|n| (0..=16).contains(n))
        {
            return self.scalar_int_pow(mb, *base, n, span);
        }
        match (a, b) {
            (SVal::Error, _) | (_, SVal::Error) => SVal::Error,
            (SVal::Weak(x), SVal::Weak(y)) => {
                if let (Weak::Int(p), Weak::Int(q)) = (&x, &y) {
                    let folded = match op {
                        BinaryOp::Add => Some(p.add(q)),
                        BinaryOp::Sub => Some(p.sub(q)),
                        BinaryOp::Mul => Some(p.mul(q)),
                        _ => None,
                    };
                    if let Some(Ok(d)) = folded {
                        return SVal::Weak(Weak::Int(d));
                    }
                }
                if let (Weak::Float(p), Weak::Float(q)) = (&x, &y) {
                    let folded = match op {
                        BinaryOp::Add => Some(p + q),
                        BinaryOp::Sub => Some(p - q),
                        BinaryOp::Mul => Some(p * q),
                        BinaryOp::Div => Some(p / q),
                        _ => None,
                    };
                    if let Some(v) = folded {
                        return SVal::Weak(Weak::Float(v));
                    }
                }
                let (kx, ky) = (x.kind(), y.kind());
                let bool_ok = op.is_logical() || matches!(op, BinaryOp::Eq | BinaryOp::Ne);
                let bad = if op.is_logical() {
                    kx != WeakKind::Bool || ky != WeakKind::Bool
                } else {
                    (kx == WeakKind::Bool || ky == WeakKind::Bool) && !(bool_ok && kx == ky)
                };
                if bad {
                    self.error(
                        Diagnostic::new(
                            Code::E0202,
                            span,
                            format!("`{}` is not defined for these operands", super::tensor::op_symbol(op)),
                        )
                        .rule("R6.1"),
                    );
                    return SVal::Error;
                }
                SVal::Weak(Weak::Binary(op, Box::new(x), Box::new(y)))
            }
            (a, b) => {
                let dtype = match (&a, &b) {
                    (SVal::Strong(id), _) | (_, SVal::Strong(id)) => mb.dtype(*id),
                    _ => unreachable!("the weak-weak case is handled above"),
                };
                let Some(x) = self.strong(mb, a, dtype, span) else { return SVal::Error };
                let Some(y) = self.strong(mb, b, dtype, span) else { return SVal::Error };
                let (dx, dy) = (mb.dtype(x), mb.dtype(y));
                if dx != dy {
                    self.error(
                        Diagnostic::new(
                            Code::E0201,
                            span,
                            format!(
                                "`{}` needs operands of the same dtype, found {} and {}",
                                super::tensor::op_symbol(op),
                                dx.name(),
                                dy.name()
                            ),
                        )
                        .note(format!("convert one side, e.g. `{}(...)`", dx.name()))
                        .rule("R6.1"),
                    );
                    return SVal::Error;
                }
                if !super::tensor::binop_accepts(op, dx) {
                    self.error(
                        Diagnostic::new(
                            Code::E0202,
                            span,
                            format!("`{}` is not defined for {}", super::tensor::op_symbol(op), dx.name()),
                        )
                        .rule("R6.4"),
                    );
                    return SVal::Error;
                }
                let out = if op.is_comparison() { DType::Bool } else { dx };
                SVal::Strong(mb.push(ScalarExpr::Binary(op, x, y), out, span))
            }
        }
    }

    fn scalar_int_pow(&mut self, mb: &mut MapBuilder, base: ScalarId, n: i64, span: Span) -> SVal {
        let dtype = mb.dtype(base);
        if !dtype.is_numeric() {
            self.error(Diagnostic::new(Code::E0202, span, "`^` is not defined for bool").rule("R6.4"));
            return SVal::Error;
        }
        if n == 0 {
            let one = if dtype.is_float() { Scalar::Float(1.0) } else { Scalar::Int(1) };
            return SVal::Strong(mb.push(ScalarExpr::Const(one), dtype, span));
        }
        let mut result = base;
        for _ in 1..n {
            result = mb.push(ScalarExpr::Binary(BinaryOp::Mul, result, base), dtype, span);
        }
        SVal::Strong(result)
    }

    /// W0001: `x[...] else d op w`, where `w` is a weakly typed scalar and nothing is parenthesised, reads
    /// `(x[...] else d) op w` (`else` takes one operand, R7.5), but `d op w` would be a valid default too,
    /// so the reader cannot tell which was meant. `left` is the operator's left operand, whose rightmost
    /// part (along `+`, `*`, unary `-`, ...) is the access; `right` is `w`. A tensor read on the right
    /// (`x[i - 1] else 0.0 * w[k]`) cannot be a default and is not ambiguous.
    fn warn_operator_after_else(&mut self, op: ast::BinOp, left: &ast::Expr, right: &ast::Expr) {
        let mut access = left;
        let default = loop {
            match &access.kind {
                ast::ExprKind::Access { default: Some(default), .. } => break default,
                ast::ExprKind::Binary(_, _, inner) | ast::ExprKind::Unary(_, inner) => access = inner,
                _ => return,
            }
        };
        // Parentheses widen an expression's span (there is no parenthesis node): the access and everything
        // between it and the operator are unparenthesised exactly when they all end where the default does.
        if left.span.end != default.span.end {
            return;
        }
        let print = crate::syntax::print::print_expr;
        let (op, default_text, right_text) = (op.symbol(), print(default), print(right));
        self.error(
            Diagnostic::new(
                Code::W0001,
                access.span,
                format!("`else` takes only `{default_text}` as the default; `{op} {right_text}` applies to the result"),
            )
            .label(format!("this is `({})`", print(access)))
            .note(format!(
                "for the default `{default_text} {op} {right_text}`, write `else ({default_text} {op} {right_text})`; \
                 to keep this meaning without the warning, write `({}) {op} {right_text}`",
                print(access)
            ))
            .rule("R7.5"),
        );
    }

    /// A scalar value as a typed node of `dtype` (weak values take it; strong ones keep theirs).
    fn strong(&mut self, mb: &mut MapBuilder, v: SVal, dtype: DType, span: Span) -> Option<ScalarId> {
        match v {
            SVal::Strong(id) => Some(id),
            SVal::Weak(w) => self.emit_weak(mb, &w, dtype, span),
            SVal::Error => None,
        }
    }

    /// Emits a weak tree as nodes of `dtype` (R3.5).
    fn emit_weak(&mut self, mb: &mut MapBuilder, w: &Weak, dtype: DType, span: Span) -> Option<ScalarId> {
        let kind = w.kind();
        let compatible = match kind {
            WeakKind::Int => dtype.is_numeric(),
            WeakKind::Float => dtype.is_float(),
            WeakKind::Bool => dtype == DType::Bool,
        };
        if !compatible {
            let what = match kind {
                WeakKind::Int => "an integer",
                WeakKind::Float => "a float",
                WeakKind::Bool => "a bool",
            };
            self.error(
                Diagnostic::new(Code::E0201, span, format!("{what} cannot be used as {}", dtype.name()))
                    .note(format!("convert explicitly, e.g. `{}(...)`", dtype.name()))
                    .rule("R3.5"),
            );
            return None;
        }
        Some(match w {
            Weak::Int(d) => match d.as_const() {
                Some(v) if dtype.is_float() => mb.push(ScalarExpr::Const(Scalar::Float(v as f64)), dtype, span),
                Some(v) => {
                    let fits = if dtype == DType::U32 { u32::try_from(v).is_ok() } else { i32::try_from(v).is_ok() };
                    if !fits {
                        self.error(
                            Diagnostic::new(Code::E0201, span, format!("integer {v} does not fit in {}", dtype.name()))
                                .rule("R3.5"),
                        );
                        return None;
                    }
                    mb.push(ScalarExpr::Const(Scalar::Int(v)), dtype, span)
                }
                None => mb.push(ScalarExpr::Dim(d.clone()), dtype, span),
            },
            Weak::Float(v) => mb.push(ScalarExpr::Const(Scalar::Float(*v)), dtype, span),
            Weak::Bool(b) => mb.push(ScalarExpr::Const(Scalar::Bool(*b)), dtype, span),
            Weak::Var(var) => mb.push(ScalarExpr::Var(*var), dtype, span),
            Weak::Unary(op, x) => {
                let inner_dtype = if *op == UnaryOp::Not { DType::Bool } else { dtype };
                let x = self.emit_weak(mb, x, inner_dtype, span)?;
                mb.push(ScalarExpr::Unary(*op, x), dtype, span)
            }
            Weak::Binary(op, a, b) => {
                let operand_dtype = if op.is_comparison() {
                    if a.kind() == WeakKind::Float || b.kind() == WeakKind::Float {
                        DType::F32
                    } else {
                        a.default_dtype()
                    }
                } else if op.is_logical() {
                    DType::Bool
                } else {
                    dtype
                };
                let x = self.emit_weak(mb, a, operand_dtype, span)?;
                let y = self.emit_weak(mb, b, operand_dtype, span)?;
                mb.push(ScalarExpr::Binary(*op, x, y), dtype, span)
            }
        })
    }

    /// Calls inside index notation: elementwise built-ins only.
    fn scalar_call(
        &mut self,
        scope: &mut Scope,
        mb: &mut MapBuilder,
        callee: &ast::Path,
        args: &[ast::CallArg],
        span: Span,
    ) -> SVal {
        let name = callee.text();
        if let Some(named) = args.iter().find_map(|a| a.name.as_ref()) {
            self.error(
                Diagnostic::new(Code::E0106, named.span, format!("named argument `{}` in index notation", named.name))
                    .note("elementwise built-ins take positional arguments only")
                    .rule("R7.1"),
            );
            return SVal::Error;
        }
        let values: Vec<SVal> = args.iter().map(|a| self.scalar(scope, mb, &a.value)).collect();
        if values.iter().any(|v| matches!(v, SVal::Error)) {
            return SVal::Error;
        }
        let arity = |this: &mut Self, n: usize| {
            if values.len() != n {
                this.error(
                    Diagnostic::new(
                        Code::E0106,
                        span,
                        format!("`{name}` takes {n} argument(s), found {}", values.len()),
                    )
                    .rule("R5.2"),
                );
                false
            } else {
                true
            }
        };
        if let Some(op) = builtins::unary_op(&name) {
            if !arity(self, 1) {
                return SVal::Error;
            }
            let x = values.into_iter().next().expect("one argument");
            let x = match x {
                SVal::Weak(w) if op.float_only() && w.kind() == WeakKind::Int => {
                    // An integer-valued weak argument of a float function is computed in f32.
                    match self.emit_weak(mb, &w, DType::F32, span) {
                        Some(id) => SVal::Strong(id),
                        None => return SVal::Error,
                    }
                }
                other => other,
            };
            return self.scalar_unary(mb, op, x, span);
        }
        if let Some(dtype) = DType::from_name(&name) {
            if !arity(self, 1) {
                return SVal::Error;
            }
            let x = values.into_iter().next().expect("one argument");
            let id = match x {
                SVal::Strong(id) => id,
                SVal::Weak(w) => {
                    let from = w.default_dtype();
                    match self.emit_weak(mb, &w, from, span) {
                        Some(id) => id,
                        None => return SVal::Error,
                    }
                }
                SVal::Error => return SVal::Error,
            };
            if mb.dtype(id) == dtype {
                return SVal::Strong(id);
            }
            return SVal::Strong(mb.push(ScalarExpr::Cast(id), dtype, span));
        }
        match name.as_str() {
            "max" | "min" => {
                if !arity(self, 2) {
                    return SVal::Error;
                }
                let mut it = values.into_iter();
                let (a, b) = (it.next().expect("two"), it.next().expect("two"));
                let op = if name == "max" { BinaryOp::Max } else { BinaryOp::Min };
                self.scalar_binary(mb, op, a, b, span)
            }
            "where" | "select" => {
                if !arity(self, 3) {
                    return SVal::Error;
                }
                let mut it = values.into_iter();
                let (c, a, b) = (it.next().expect("3"), it.next().expect("3"), it.next().expect("3"));
                let Some(c) = self.strong(mb, c, DType::Bool, span) else { return SVal::Error };
                if mb.dtype(c) != DType::Bool {
                    self.error(Diagnostic::new(Code::E0201, span, "`where` needs a bool condition").rule("R6.3"));
                    return SVal::Error;
                }
                let dtype = match (&a, &b) {
                    (SVal::Strong(id), _) | (_, SVal::Strong(id)) => mb.dtype(*id),
                    (SVal::Weak(w), SVal::Weak(v)) => {
                        if w.kind() == WeakKind::Float || v.kind() == WeakKind::Float {
                            DType::F32
                        } else {
                            w.default_dtype()
                        }
                    }
                    _ => return SVal::Error,
                };
                let Some(a) = self.strong(mb, a, dtype, span) else { return SVal::Error };
                let Some(b) = self.strong(mb, b, dtype, span) else { return SVal::Error };
                if mb.dtype(a) != mb.dtype(b) {
                    self.error(
                        Diagnostic::new(Code::E0201, span, "`where` branches have different dtypes").rule("R6.3"),
                    );
                    return SVal::Error;
                }
                SVal::Strong(mb.push(ScalarExpr::Select { cond: c, on_true: a, on_false: b }, dtype, span))
            }
            _ => {
                let what = if self.fns.get(&name).is_some() || builtins::is_builtin(&name) {
                    format!("`{name}` works on whole tensors and cannot be called inside index notation")
                } else {
                    format!("unknown function `{name}`")
                };
                let code = if what.starts_with("unknown") { Code::E0102 } else { Code::E0203 };
                self.error(
                    Diagnostic::new(code, callee.span, what)
                        .note("inside index notation only elementwise built-ins (exp, max(a, b), where, casts, ...) are allowed")
                        .rule("R7.1"),
                );
                SVal::Error
            }
        }
    }
}

fn scale_affine(a: &Affine, k: &Dim) -> Option<Affine> {
    let terms = a.terms.iter().map(|(v, c)| c.mul(k).ok().map(|c| (*v, c))).collect::<Option<Vec<_>>>()?;
    Some(Affine::new(terms.into_iter().filter(|(_, c)| c.as_const() != Some(0)).collect(), a.offset.mul(k).ok()?))
}

fn add_affine(a: &Affine, b: &Affine) -> Option<Affine> {
    let mut terms = a.terms.clone();
    for (v, c) in &b.terms {
        match terms.iter_mut().find(|(w, _)| w == v) {
            Some((_, existing)) => *existing = existing.add(c).ok()?,
            None => terms.push((*v, c.clone())),
        }
    }
    terms.retain(|(_, c)| c.as_const() != Some(0));
    terms.sort_by_key(|(v, _)| *v);
    Some(Affine::new(terms, a.offset.add(&b.offset).ok()?))
}

/// The smallest and largest value of `affine` over the extents, or `None` when a coefficient's sign is
/// unknown.
fn affine_range(affine: &Affine, extents: &[Dim]) -> Option<(Dim, Dim)> {
    let mut lo = affine.offset.clone();
    let mut hi = affine.offset.clone();
    for (var, coef) in &affine.terms {
        let last = extents[var.0 as usize].sub(&Dim::constant(1)).ok()?;
        let span = coef.mul(&last).ok()?;
        if coef.is_nonneg() {
            hi = hi.add(&span).ok()?;
        } else if coef.neg().ok()?.is_nonneg() {
            lo = lo.add(&span).ok()?;
        } else {
            return None;
        }
    }
    Some((lo, hi))
}

/// A bool scalar node: true where every `affines[axis]` lies in `[0, shape[axis])` (for an `else` default
/// that is not a constant: the load is padded with 0 and this selects the default outside, R7.5).
fn in_bounds(mb: &mut MapBuilder, affines: &[(Affine, Span)], shape: &[Dim], span: Span) -> ScalarId {
    let mut inside: Option<ScalarId> = None;
    for ((affine, _), extent) in affines.iter().zip(shape) {
        let mut index = mb.push(ScalarExpr::Dim(affine.offset.clone()), DType::I32, span);
        for (var, coef) in &affine.terms {
            let var = mb.push(ScalarExpr::Var(*var), DType::I32, span);
            let term = match coef.as_const() {
                Some(1) => var,
                _ => {
                    let coef = mb.push(ScalarExpr::Dim(coef.clone()), DType::I32, span);
                    mb.push(ScalarExpr::Binary(BinaryOp::Mul, coef, var), DType::I32, span)
                }
            };
            index = mb.push(ScalarExpr::Binary(BinaryOp::Add, index, term), DType::I32, span);
        }
        let zero = mb.push(ScalarExpr::Const(Scalar::Int(0)), DType::I32, span);
        let extent = mb.push(ScalarExpr::Dim(extent.clone()), DType::I32, span);
        let above = mb.push(ScalarExpr::Binary(BinaryOp::Le, zero, index), DType::Bool, span);
        let below = mb.push(ScalarExpr::Binary(BinaryOp::Lt, index, extent), DType::Bool, span);
        let axis = mb.push(ScalarExpr::Binary(BinaryOp::And, above, below), DType::Bool, span);
        inside = Some(match inside {
            None => axis,
            Some(all) => mb.push(ScalarExpr::Binary(BinaryOp::And, all, axis), DType::Bool, span),
        });
    }
    inside.unwrap_or_else(|| mb.push(ScalarExpr::Const(Scalar::Bool(true)), DType::Bool, span))
}
