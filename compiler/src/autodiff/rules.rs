//! The gradient rules: one per op, in one place (tinygrad's `gradient.py` in spirit). Elementwise rules are
//! written once over `Algebra`, so the same rule differentiates a tensor op (`Tensors`) and a scalar node of
//! an index-notation body (`map::Scalars`). Structural rules (reductions, matmul, layout ops, gather, take-along-axis, scatter-add) are
//! `vjp`'s arms below; index notation is `map::vjp`, which uses the elementwise rules here. Conventions follow PyTorch (spec/autodiff.md).

use super::Tensors;
use crate::dim::Dim;
use crate::ir::{
    Affine, BinaryOp, DType, MapOp, NodeId, Op, ReduceOp, Scalar, ScalarExpr, ScalarNode, ScanOp, TensorType, UnaryOp,
    VarId,
};

/// The arithmetic a rule is written in: tensor nodes of equal shape, or scalar nodes of a map body.
pub(crate) trait Algebra {
    type V: Copy;
    fn dtype(&self, v: Self::V) -> DType;
    fn unary(&mut self, op: UnaryOp, a: Self::V) -> Self::V;
    fn binary(&mut self, op: BinaryOp, a: Self::V, b: Self::V) -> Self::V;
    fn select(&mut self, cond: Self::V, on_true: Self::V, on_false: Self::V) -> Self::V;
    fn cast(&mut self, a: Self::V, dtype: DType) -> Self::V;
    /// The float `value` with `like`'s dtype and shape.
    fn constant(&mut self, value: f64, like: Self::V) -> Self::V;
}

fn mul<A: Algebra>(al: &mut A, a: A::V, b: A::V) -> A::V {
    al.binary(BinaryOp::Mul, a, b)
}

fn scaled<A: Algebra>(al: &mut A, k: f64, a: A::V) -> A::V {
    let k = al.constant(k, a);
    mul(al, k, a)
}

fn zero_like<A: Algebra>(al: &mut A, a: A::V) -> A::V {
    al.constant(0.0, a)
}

/// `g` where `cond`, else 0.
fn masked<A: Algebra>(al: &mut A, cond: A::V, g: A::V) -> A::V {
    let zero = zero_like(al, g);
    al.select(cond, g, zero)
}

/// The gradient of `y = op(x)` given `g = dL/dy`; `None` where the op has none (integer and bool ops,
/// `floor`, `ceil`, `round`: their gradient is zero).
pub(crate) fn unary<A: Algebra>(al: &mut A, op: UnaryOp, x: A::V, y: A::V, g: A::V) -> Option<A::V> {
    if !al.dtype(x).is_float() {
        return None;
    }
    Some(match op {
        UnaryOp::Neg => al.unary(UnaryOp::Neg, g),
        UnaryOp::Exp => mul(al, g, y),
        UnaryOp::Log => al.binary(BinaryOp::Div, g, x),
        // PyTorch: grad / (2 * result)
        UnaryOp::Sqrt => {
            let two_y = scaled(al, 2.0, y);
            al.binary(BinaryOp::Div, g, two_y)
        }
        // PyTorch: -0.5 * grad * result^3
        UnaryOp::Rsqrt => {
            let y2 = mul(al, y, y);
            let y3 = mul(al, y2, y);
            let gy3 = mul(al, g, y3);
            scaled(al, -0.5, gy3)
        }
        // PyTorch: grad * (1 - result^2)
        UnaryOp::Tanh => {
            let one = al.constant(1.0, y);
            let y2 = mul(al, y, y);
            let d = al.binary(BinaryOp::Sub, one, y2);
            mul(al, g, d)
        }
        // 2 / sqrt(pi) * exp(-x^2)
        UnaryOp::Erf => {
            let x2 = mul(al, x, x);
            let neg = al.unary(UnaryOp::Neg, x2);
            let e = al.unary(UnaryOp::Exp, neg);
            let d = scaled(al, std::f64::consts::FRAC_2_SQRT_PI, e);
            mul(al, g, d)
        }
        // PyTorch: grad * (1 - result) * result
        UnaryOp::Sigmoid => {
            let one = al.constant(1.0, y);
            let d = al.binary(BinaryOp::Sub, one, y);
            let gd = mul(al, g, d);
            mul(al, gd, y)
        }
        // PyTorch: 0 where result <= 0 (so 0 at 0)
        UnaryOp::Relu => {
            let zero = zero_like(al, y);
            let positive = al.binary(BinaryOp::Gt, y, zero);
            masked(al, positive, g)
        }
        // grad * sign(x), sign(0) = 0
        UnaryOp::Abs => {
            let zero = zero_like(al, x);
            let positive = al.binary(BinaryOp::Gt, x, zero);
            let negative = al.binary(BinaryOp::Lt, x, zero);
            let neg_g = al.unary(UnaryOp::Neg, g);
            let inner = masked(al, negative, neg_g);
            al.select(positive, g, inner)
        }
        UnaryOp::Sin => {
            let c = al.unary(UnaryOp::Cos, x);
            mul(al, g, c)
        }
        UnaryOp::Cos => {
            let s = al.unary(UnaryOp::Sin, x);
            let gs = mul(al, g, s);
            al.unary(UnaryOp::Neg, gs)
        }
        // grad / (1 + x^2)
        UnaryOp::Atan => {
            let one = al.constant(1.0, x);
            let square = mul(al, x, x);
            let denominator = al.binary(BinaryOp::Add, one, square);
            al.binary(BinaryOp::Div, g, denominator)
        }
        // Piecewise constant: zero almost everywhere, as PyTorch gives.
        UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round | UnaryOp::Not => return None,
    })
}

/// The gradients of `y = a op b` with respect to `a` and `b`, given `g = dL/dy`.
pub(crate) fn binary<A: Algebra>(
    al: &mut A,
    op: BinaryOp,
    a: A::V,
    b: A::V,
    y: A::V,
    g: A::V,
) -> (Option<A::V>, Option<A::V>) {
    if !al.dtype(a).is_float() || op.is_comparison() || op.is_logical() {
        return (None, None);
    }
    match op {
        BinaryOp::Add => (Some(g), Some(g)),
        BinaryOp::Sub => (Some(g), Some(al.unary(UnaryOp::Neg, g))),
        BinaryOp::Mul => (Some(mul(al, g, b)), Some(mul(al, g, a))),
        // PyTorch: grad / other, -grad * ((self / other) / other)
        BinaryOp::Div => {
            let ga = al.binary(BinaryOp::Div, g, b);
            let q = al.binary(BinaryOp::Div, y, b);
            let gq = mul(al, g, q);
            (Some(ga), Some(al.unary(UnaryOp::Neg, gq)))
        }
        // fmod: grad, -grad * trunc(self / other)
        BinaryOp::Rem => {
            let q = al.binary(BinaryOp::Div, a, b);
            let zero = zero_like(al, q);
            let negative = al.binary(BinaryOp::Lt, q, zero);
            let up = al.unary(UnaryOp::Ceil, q);
            let down = al.unary(UnaryOp::Floor, q);
            let t = al.select(negative, up, down);
            let gt = mul(al, g, t);
            (Some(g), Some(al.unary(UnaryOp::Neg, gt)))
        }
        // PyTorch: where(exponent == 0, 0, grad * exponent * self^(exponent - 1)) and
        // grad * where(self == 0 & exponent >= 0, 0, result * log(self))
        BinaryOp::Pow => {
            let zero = zero_like(al, b);
            let one = al.constant(1.0, b);
            let b1 = al.binary(BinaryOp::Sub, b, one);
            let p = al.binary(BinaryOp::Pow, a, b1);
            let gb = mul(al, g, b);
            let da = mul(al, gb, p);
            let b_zero = al.binary(BinaryOp::Eq, b, zero);
            let ga = al.select(b_zero, zero, da);
            let a_zero = al.binary(BinaryOp::Eq, a, zero);
            let b_nonneg = al.binary(BinaryOp::Ge, b, zero);
            let skip = al.binary(BinaryOp::And, a_zero, b_nonneg);
            let log = al.unary(UnaryOp::Log, a);
            let yl = mul(al, y, log);
            let d = al.select(skip, zero, yl);
            (Some(ga), Some(mul(al, g, d)))
        }
        // PyTorch's maximum/minimum: the chosen operand gets grad, ties split it in half.
        BinaryOp::Max | BinaryOp::Min => {
            let wins = if op == BinaryOp::Max { BinaryOp::Gt } else { BinaryOp::Lt };
            let tie = al.binary(BinaryOp::Eq, a, b);
            let half = scaled(al, 0.5, g);
            let a_wins = al.binary(wins, a, b);
            let b_wins = al.binary(wins, b, a);
            let ga = masked(al, a_wins, g);
            let gb = masked(al, b_wins, g);
            (Some(al.select(tie, half, ga)), Some(al.select(tie, half, gb)))
        }
        _ => (None, None),
    }
}

/// `where(cond, a, b)`: each branch gets the gradient where it was chosen; the condition gets none.
pub(crate) fn select<A: Algebra>(al: &mut A, cond: A::V, g: A::V) -> (A::V, A::V) {
    let zero = zero_like(al, g);
    (al.select(cond, g, zero), al.select(cond, zero, g))
}

/// A cast passes the gradient back between float dtypes; casts to or from integers and bool have none.
pub(crate) fn cast<A: Algebra>(al: &mut A, from: DType, to: DType, g: A::V) -> Option<A::V> {
    (from.is_float() && to.is_float()).then(|| al.cast(g, from))
}

/// The contributions of node `id`, whose gradient is `g`, to the gradients of its operands (those `need`
/// says lead to a differentiated value), in any order; an operand may appear more than once. Every op but
/// index notation (`map::vjp`). A rule may give its contribution to an operand's operand instead, through
/// nodes `skip` allows (those no one asked the gradient of), where that is the same sum computed better.
pub(crate) fn vjp(
    t: &mut Tensors,
    id: NodeId,
    g: NodeId,
    need: &dyn Fn(NodeId) -> bool,
    skip: &dyn Fn(NodeId) -> bool,
) -> Vec<(NodeId, NodeId)> {
    let node = t.graph.nodes[id].clone();
    let mut out = Vec::new();
    let mut give = |operand: NodeId, grad: Option<NodeId>| {
        if let Some(grad) = grad
            && need(operand)
        {
            out.push((operand, grad));
        }
    };
    match &node.op {
        Op::Input { .. } | Op::Param { .. } | Op::Constant(_) | Op::DimValue(_) => {}
        Op::Unary(op, a) => give(*a, unary(t, *op, *a, id, g)),
        Op::Binary(op, a, b) => {
            let (ga, gb) = if need(*a) || need(*b) { binary(t, *op, *a, *b, id, g) } else { (None, None) };
            give(*a, ga.filter(|_| need(*a)));
            give(*b, gb.filter(|_| need(*b)));
        }
        Op::Select { cond, on_true, on_false } => {
            if t.dtype(id).is_float() {
                let (gt, gf) = select(t, *cond, g);
                give(*on_true, Some(gt));
                give(*on_false, Some(gf));
            }
        }
        Op::Cast(a) => {
            let from = t.graph.nodes[*a].ty.dtype;
            give(*a, cast(t, from, node.ty.dtype, g))
        }
        Op::Broadcast(a) => give(*a, Some(unbroadcast(t, g, &t.graph.nodes[*a].ty.clone()))),
        Op::Reduce { op, input, axes } => {
            if need(*input) {
                give(*input, reduce(t, *op, *input, axes, id, g))
            }
        }
        // An index is an integer: no gradient flows through argmax/argmin (torch: not differentiable; the
        // operand gets nothing from it, as from an integer cast).
        Op::ArgReduce { .. } => {}
        // y_i = sum_{j <= i} x_j: dx_j = sum_{i >= j} g_i, the same scan run the other way.
        Op::Scan { op: ScanOp::Sum, input, axis, reverse } => {
            if need(*input) && t.dtype(*input).is_float() {
                let ty = t.ty(*input);
                give(*input, Some(t.add(Op::Scan { op: ScanOp::Sum, input: g, axis: *axis, reverse: !reverse }, ty)));
            }
        }
        // [.., M, K] @ [.., K, N]: dA = g @ B^T, dB = A^T @ g
        Op::MatMul(a, b) => {
            if let Some((w, grad)) = shared_weight(t, *a, *b, g, need, skip) {
                give(w, Some(grad));
            } else if need(*b) {
                let at = t.transpose_last(*a);
                let ty = t.graph.nodes[*b].ty.clone();
                give(*b, Some(t.add(Op::MatMul(at, g), ty)));
            }
            if need(*a) {
                let bt = t.transpose_last(*b);
                let ty = t.graph.nodes[*a].ty.clone();
                give(*a, Some(t.add(Op::MatMul(g, bt), ty)));
            }
        }
        Op::Permute(a, perm) => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            let ty = t.graph.nodes[*a].ty.clone();
            give(*a, Some(t.add(Op::Permute(g, inverse), ty)));
        }
        Op::Reshape(a) => {
            let ty = t.graph.nodes[*a].ty.clone();
            give(*a, Some(t.add(Op::Reshape(g), ty)));
        }
        Op::Slice { input, axis, start, step } => {
            if need(*input) {
                give(*input, Some(unslice(t, *input, *axis, start, *step, g)));
            }
        }
        Op::Concat { inputs, axis } => {
            let mut offset = Dim::constant(0);
            for &x in inputs {
                let ty = t.graph.nodes[x].ty.clone();
                if need(x) {
                    let part = t.add(Op::Slice { input: g, axis: *axis, start: offset.clone(), step: 1 }, ty.clone());
                    give(x, Some(part));
                }
                offset = offset.add(&ty.shape[*axis]).unwrap_or(offset);
            }
        }
        Op::Gather { table, indices, axis } => {
            if need(*table) && t.dtype(*table).is_float() {
                give(*table, Some(scatter_add(t, *table, *indices, *axis, g)));
            }
        }
        // torch.gather's backward: the gradient scattered back to the positions read, added where one was
        // read more than once.
        Op::TakeAlongAxis { input, indices, axis } => {
            if need(*input) && t.dtype(*input).is_float() {
                let ty = t.ty(*input);
                let zero = t.add(Op::Constant(Scalar::Float(0.0)), TensorType { dtype: ty.dtype, shape: vec![] });
                let zeros = t.broadcast_to(zero, &ty.shape);
                give(*input, Some(t.add(Op::ScatterAdd { base: zeros, indices: *indices, src: g, axis: *axis }, ty)));
            }
        }
        // torch.scatter_add's backward: `base` -> g, `src` -> g read where each source element went.
        Op::ScatterAdd { base, indices, src, axis } => {
            if t.dtype(id).is_float() {
                give(*base, Some(g));
                if need(*src) {
                    let ty = t.ty(*src);
                    give(*src, Some(t.add(Op::TakeAlongAxis { input: g, indices: *indices, axis: *axis }, ty)));
                }
            }
        }
        // Integer positions: no gradient (a sort's values are `take_along_axis` of its argsort).
        Op::Argsort { .. } => {}
        // Index notation has its own module (`map::vjp`), called by the sweep.
        Op::Map(_) => {}
    }
    out
}

/// A matmul whose right operand is a weight (`Linear`'s `x @ transpose(w)`): the weight's gradient computed
/// directly rather than as a matmul whose result is then transposed (or summed over a batch), so it is one
/// matmul kernel. `a @ transpose(w)` gives `dw = g^T a`; a weight broadcast over batch dimensions (`w^T` as
/// `[B, K, N]`) gives `dw^T = X^T G` with `X = a` as `[B M, K]` and `G = g` as `[B M, N]` (through a
/// transpose, `dw = G^T X`). Returns the weight and its contribution.
fn shared_weight(
    t: &mut Tensors,
    a: NodeId,
    b: NodeId,
    g: NodeId,
    need: &dyn Fn(NodeId) -> bool,
    skip: &dyn Fn(NodeId) -> bool,
) -> Option<(NodeId, NodeId)> {
    // `a @ transpose(w)`: `dw = (a^T g)^T = g^T a`, one matmul and no transpose of its result.
    if let Op::Permute(w, perm) = &t.graph.nodes[b].op {
        let (w, r) = (*w, perm.len());
        let swaps_last =
            r >= 2 && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p) && perm[r - 2..] == [r - 1, r - 2];
        if !swaps_last || !skip(b) || !need(w) {
            return None;
        }
        let gt = t.transpose_last(g);
        let ty = t.ty(w);
        return Some((w, t.add(Op::MatMul(gt, a), ty)));
    }
    let Op::Broadcast(c) = t.graph.nodes[b].op else { return None };
    let (c_ty, a_ty, g_ty) = (t.ty(c), t.ty(a), t.ty(g));
    let rank = a_ty.rank();
    if c_ty.rank() != 2 || rank < 3 || !skip(b) || !need(c) || c_ty.shape[..] != t.ty(b).shape[rank - 2..] {
        return None;
    }
    let rows = a_ty.shape[..rank - 1].iter().try_fold(Dim::constant(1), |n, d| n.mul(d)).ok()?;
    let (k, n) = (a_ty.shape[rank - 1].clone(), g_ty.shape[rank - 1].clone());
    let dtype = a_ty.dtype;
    let x = t.add(Op::Reshape(a), TensorType { dtype, shape: vec![rows.clone(), k.clone()] });
    let gm = t.add(Op::Reshape(g), TensorType { dtype, shape: vec![rows, n.clone()] });
    if let Op::Permute(w, perm) = &t.graph.nodes[c].op
        && perm == &[1, 0]
        && skip(c)
    {
        let w = *w;
        let gt = t.transpose_last(gm);
        return Some((w, t.add(Op::MatMul(gt, x), TensorType { dtype, shape: vec![n, k] })));
    }
    let xt = t.transpose_last(x);
    Some((c, t.add(Op::MatMul(xt, gm), TensorType { dtype, shape: vec![k, n] })))
}

/// The gradient of a broadcast's operand: `g` summed over the axes the broadcast added or stretched from 1,
/// then shaped like the operand.
pub(crate) fn unbroadcast(t: &mut Tensors, g: NodeId, to: &TensorType) -> NodeId {
    let shape = t.graph.nodes[g].ty.shape.clone();
    let lead = shape.len() - to.rank();
    let axes: Vec<usize> = (0..shape.len())
        .filter(|&i| i < lead || (to.shape[i - lead] == Dim::constant(1) && shape[i] != Dim::constant(1)))
        .collect();
    let summed = if axes.is_empty() {
        g
    } else {
        let kept: Vec<Dim> =
            shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| d.clone()).collect();
        let ty = TensorType { dtype: to.dtype, shape: kept };
        t.add(Op::Reduce { op: ReduceOp::Sum, input: g, axes }, ty)
    };
    if t.graph.nodes[summed].ty.shape == to.shape { summed } else { t.add(Op::Reshape(summed), to.clone()) }
}

/// `g` (shaped like the reduction's result) reshaped with the reduced axes kept as 1 and broadcast back to
/// the input's shape.
fn spread(t: &mut Tensors, g: NodeId, input: &TensorType, axes: &[usize]) -> NodeId {
    let dtype = t.dtype(g);
    let kept = t.add(Op::Reshape(g), TensorType { dtype, shape: crate::ir::kept_shape(&input.shape, axes) });
    t.add(Op::Broadcast(kept), TensorType { dtype, shape: input.shape.clone() })
}

/// Reductions: sum spreads `g`; mean divides it by the count; max and min share it evenly among the
/// elements equal to the result (as `torch.amax`); prod multiplies it by the product of the other
/// elements (exact where elements are zero too).
fn reduce(t: &mut Tensors, op: ReduceOp, input: NodeId, axes: &[usize], y: NodeId, g: NodeId) -> Option<NodeId> {
    let in_ty = t.graph.nodes[input].ty.clone();
    if !in_ty.dtype.is_float() {
        return None;
    }
    Some(match op {
        ReduceOp::Sum => spread(t, g, &in_ty, axes),
        ReduceOp::Mean => {
            let count = axes.iter().try_fold(Dim::constant(1), |n, &a| n.mul(&in_ty.shape[a])).ok()?;
            let n = t.add(Op::DimValue(count), TensorType { dtype: in_ty.dtype, shape: vec![] });
            let n = t.broadcast_to(n, &t.graph.nodes[g].ty.shape.clone());
            let share = t.add(Op::Binary(BinaryOp::Div, g, n), t.graph.nodes[g].ty.clone());
            spread(t, share, &in_ty, axes)
        }
        ReduceOp::Max | ReduceOp::Min => {
            let full = spread(t, y, &in_ty, axes);
            let hit = t.add(Op::Binary(BinaryOp::Eq, input, full), TensorType { dtype: DType::Bool, ..in_ty.clone() });
            let ones = t.add(Op::Cast(hit), in_ty.clone());
            let out_ty = t.graph.nodes[y].ty.clone();
            let count = t.add(Op::Reduce { op: ReduceOp::Sum, input: ones, axes: axes.to_vec() }, out_ty.clone());
            let share = t.add(Op::Binary(BinaryOp::Div, g, count), out_ty);
            let share = spread(t, share, &in_ty, axes);
            masked(t, hit, share)
        }
        ReduceOp::Prod => {
            let others = product_of_others(t, input, axes);
            let gs = spread(t, g, &in_ty, axes);
            t.add(Op::Binary(BinaryOp::Mul, gs, others), in_ty)
        }
    })
}

/// For every element of `x`, the product of the other elements of its reduction: a map over `x`'s shape
/// with a product over the reduced axes that skips the element itself.
fn product_of_others(t: &mut Tensors, x: NodeId, axes: &[usize]) -> NodeId {
    let ty = t.graph.nodes[x].ty.clone();
    let rank = ty.rank() as u32;
    let mut extents = ty.shape.clone();
    let mut exprs = crate::arena::Arena::new();
    let span = t.span;
    let mut add = |expr: ScalarExpr, dtype: DType| exprs.append(ScalarNode { expr, dtype }, span);
    // Reduction variable `rank + j` runs over reduced axis `axes[j]`.
    let indices: Vec<Affine> = (0..rank)
        .map(|i| {
            let var = match axes.iter().position(|&a| a == i as usize) {
                Some(j) => VarId(rank + j as u32),
                None => VarId(i),
            };
            Affine::new(vec![(var, Dim::constant(1))], Dim::constant(0))
        })
        .collect();
    let load = add(ScalarExpr::Load { input: 0, indices, default: None }, ty.dtype);
    let mut same: Option<crate::ir::ScalarId> = None;
    for (j, &a) in axes.iter().enumerate() {
        extents.push(ty.shape[a].clone());
        let own = add(ScalarExpr::Var(VarId(a as u32)), DType::I32);
        let other = add(ScalarExpr::Var(VarId(rank + j as u32)), DType::I32);
        let eq = add(ScalarExpr::Binary(BinaryOp::Eq, own, other), DType::Bool);
        same = Some(match same {
            None => eq,
            Some(s) => add(ScalarExpr::Binary(BinaryOp::And, s, eq), DType::Bool),
        });
    }
    let one = add(ScalarExpr::Const(Scalar::Float(1.0)), ty.dtype);
    let factor = match same {
        Some(s) => add(ScalarExpr::Select { cond: s, on_true: one, on_false: load }, ty.dtype),
        None => load,
    };
    let vars = (0..axes.len() as u32).map(|j| VarId(rank + j)).collect();
    let body = add(ScalarExpr::Reduce { op: ReduceOp::Prod, vars, body: factor }, ty.dtype);
    t.add(Op::Map(Box::new(MapOp { inputs: vec![x], extents, exprs, body })), ty)
}

/// The adjoint of a slice: a map over the operand's shape reading `g` at `(u - start) / step` along
/// `axis` (an exact division; 0 between the picked elements and outside the slice).
fn unslice(t: &mut Tensors, input: NodeId, axis: usize, start: &Dim, step: i64, g: NodeId) -> NodeId {
    let ty = t.graph.nodes[input].ty.clone();
    let span = t.span;
    let mut exprs = crate::arena::Arena::new();
    let indices = (0..ty.rank())
        .map(|i| {
            let var = (VarId(i as u32), Dim::constant(1));
            if i == axis {
                Affine { terms: vec![var], offset: start.neg().unwrap_or(Dim::constant(0)), div: step }
            } else {
                Affine::new(vec![var], Dim::constant(0))
            }
        })
        .collect();
    let zero = Some(Scalar::Float(0.0));
    let body =
        exprs.append(ScalarNode { expr: ScalarExpr::Load { input: 0, indices, default: zero }, dtype: ty.dtype }, span);
    t.add(Op::Map(Box::new(MapOp { inputs: vec![g], extents: ty.shape.clone(), exprs, body })), ty)
}

/// The adjoint of a gather, a deterministic scatter-add over the table:
/// `dtable[p.., r, s..] = sum over i.. of (indices[i..] == r ? g[p.., i.., s..] : 0)`.
/// The gradient of an embedding lookup (a `[V, D]` table gathered along axis 0 by indices of any rank) as
/// one matmul, `onehot^T @ g` with `onehot^T[v, n] = (ids[n] == v)` over the `N` flattened indices: the
/// same sums as the scatter-add op, run by the contraction kernels. `None` for other gathers.
fn embedding_grad(
    t: &mut Tensors,
    ty: &TensorType,
    indices: NodeId,
    idx_ty: &TensorType,
    axis: usize,
    g: NodeId,
) -> Option<NodeId> {
    if axis != 0 || ty.rank() != 2 || idx_ty.rank() == 0 {
        return None;
    }
    let (v, d) = (ty.shape[0].clone(), ty.shape[1].clone());
    let n = idx_ty.shape.iter().try_fold(Dim::constant(1), |n, x| n.mul(x)).ok()?;
    let flat = if idx_ty.rank() == 1 {
        indices
    } else {
        t.add(Op::Reshape(indices), TensorType { dtype: idx_ty.dtype, shape: vec![n.clone()] })
    };
    let g2 = t.add(Op::Reshape(g), TensorType { dtype: ty.dtype, shape: vec![n.clone(), d] });
    let span = t.span;
    let mut exprs = crate::arena::Arena::new();
    let mut add = |expr: ScalarExpr, dtype: DType| exprs.append(ScalarNode { expr, dtype }, span);
    let var = |v: u32| Affine::new(vec![(VarId(v), Dim::constant(1))], Dim::constant(0));
    let id = add(ScalarExpr::Load { input: 0, indices: vec![var(1)], default: None }, idx_ty.dtype);
    let row = add(ScalarExpr::Var(VarId(0)), idx_ty.dtype);
    let hit = add(ScalarExpr::Binary(BinaryOp::Eq, id, row), DType::Bool);
    let one = add(ScalarExpr::Const(Scalar::Float(1.0)), ty.dtype);
    let zero = add(ScalarExpr::Const(Scalar::Float(0.0)), ty.dtype);
    let body = add(ScalarExpr::Select { cond: hit, on_true: one, on_false: zero }, ty.dtype);
    let onehot_t = MapOp { inputs: vec![flat], extents: vec![v.clone(), n.clone()], exprs, body };
    let onehot_t = t.add(Op::Map(Box::new(onehot_t)), TensorType { dtype: ty.dtype, shape: vec![v, n] });
    Some(t.add(Op::MatMul(onehot_t, g2), ty.clone()))
}

/// The adjoint of a gather: the embedding matmul where it applies, else the scatter-add op.
fn scatter_add(t: &mut Tensors, table: NodeId, indices: NodeId, axis: usize, g: NodeId) -> NodeId {
    let ty = t.graph.nodes[table].ty.clone();
    let idx_ty = t.graph.nodes[indices].ty.clone();
    if let Some(dw) = embedding_grad(t, &ty, indices, &idx_ty, axis, g) {
        return dw;
    }
    // As `[P, R, S]` (the table around `axis`) and `[P, N, S]` (`g`, the `N` indices flattened), the adjoint
    // is the scatter-add op along axis 1 with the indices repeated over `P` and `S`: each `dtable` element
    // adds its contributions in increasing `N`, as the interpreter and the GPU both do.
    let count = |dims: &[Dim]| dims.iter().try_fold(Dim::constant(1), |n, d| n.mul(d)).unwrap_or(Dim::constant(1));
    let (p, s) = (count(&ty.shape[..axis]), count(&ty.shape[axis + 1..]));
    let n = count(&idx_ty.shape);
    let dtype = ty.dtype;
    let ids = if idx_ty.dtype == DType::I32 {
        indices
    } else {
        t.add(Op::Cast(indices), TensorType { dtype: DType::I32, shape: idx_ty.shape.clone() })
    };
    let ids = t.add(
        Op::Reshape(ids),
        TensorType { dtype: DType::I32, shape: vec![Dim::constant(1), n.clone(), Dim::constant(1)] },
    );
    let src_shape = vec![p.clone(), n, s.clone()];
    let ids = t.broadcast_to(ids, &src_shape);
    let src = t.add(Op::Reshape(g), TensorType { dtype, shape: src_shape });
    let zero = t.add(Op::Constant(Scalar::Float(0.0)), TensorType { dtype, shape: vec![] });
    let out_shape = vec![p, ty.shape[axis].clone(), s];
    let zeros = t.broadcast_to(zero, &out_shape);
    let sums =
        t.add(Op::ScatterAdd { base: zeros, indices: ids, src, axis: 1 }, TensorType { dtype, shape: out_shape });
    t.add(Op::Reshape(sums), ty)
}
