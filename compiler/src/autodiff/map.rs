//! The adjoint of index notation: the gradient with respect to an input of a map is itself a map, over that
//! input's index space. For a load `x[A(v)]` of the body, every index variable that alone determines one axis
//! of the load (its "pivot") is solved from the input position `u`: `v = (u - rest) / c`, so a stride becomes
//! an exact division (`Affine::div`) and a guard (`c` divides, `0 <= v < extent`), and the remaining variables
//! are summed over. The input gradient of a convolution, a pooling window or a shifted read is therefore a
//! convolution-like map again, not a scatter. A load no variable can pivot (`x[i, i]`) sums over everything
//! under an equality guard. Reductions nested inside a body are first split out as maps of their own, so
//! each body has at most one reduction, at its root; a max or min reduction sends the gradient to the first
//! element (in the order of its reduction variables, the last fastest) equal to the result, as PyTorch's
//! `max_pool2d` and `max(dim)` do.

use super::Tensors;
use super::rules::{self, Algebra};
use crate::arena::Arena;
use crate::dim::Dim;
use crate::ir::{
    Affine, BinaryOp, DType, MapOp, NodeId, Op, ReduceOp, Scalar, ScalarExpr, ScalarId, ScalarNode, TensorType,
    UnaryOp, VarId,
};
use crate::span::Span;
use std::collections::{BTreeSet, HashMap};

/// The contributions of map node `id` (gradient `g`) to its inputs' gradients.
pub(super) fn vjp(t: &mut Tensors, id: NodeId, g: NodeId, need: &dyn Fn(NodeId) -> bool) -> Vec<(NodeId, NodeId)> {
    let Op::Map(map) = &t.graph.nodes[id].op else { return vec![] };
    let map = (**map).clone();
    if !t.graph.nodes[id].ty.dtype.is_float() {
        return vec![];
    }
    let nested = nested_reductions(&map);
    if nested.is_empty() {
        return simple(t, id, &map, g, need);
    }
    // Split the nested reductions out as maps of their own ("parts"), differentiate the rewritten map, then
    // each part with the gradient that reached it.
    let (rewritten, parts) = split(t, id, &map, &nested);
    let Op::Map(rmap) = &t.graph.nodes[rewritten].op else { return vec![] };
    let rmap = (**rmap).clone();
    let inner_need = |o: NodeId| need(o) || parts.contains(&o);
    let mut out = Vec::new();
    let mut reached: Vec<(NodeId, NodeId)> = Vec::new();
    for (operand, grad) in simple(t, rewritten, &rmap, g, &inner_need) {
        if !parts.contains(&operand) {
            out.push((operand, grad));
            continue;
        }
        match reached.iter_mut().find(|(p, _)| *p == operand) {
            Some((_, sum)) => {
                let ty = t.ty(operand);
                *sum = t.add(Op::Binary(BinaryOp::Add, *sum, grad), ty);
            }
            None => reached.push((operand, grad)),
        }
    }
    for (part, grad) in reached {
        out.extend(vjp(t, part, grad, need));
    }
    out
}

/// Scalar nodes reachable from `from` (operands before users, `from` last).
fn reachable(map: &MapOp, from: ScalarId, stop: &dyn Fn(ScalarId) -> bool) -> Vec<ScalarId> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(s) = stack.pop() {
        if !seen.insert(s) || (s != from && stop(s)) {
            continue;
        }
        stack.extend(operands(&map.exprs[s].expr));
    }
    seen.into_iter().collect()
}

fn operands(expr: &ScalarExpr) -> Vec<ScalarId> {
    match expr {
        ScalarExpr::Unary(_, a) | ScalarExpr::Cast(a) => vec![*a],
        ScalarExpr::Binary(_, a, b) => vec![*a, *b],
        ScalarExpr::Select { cond, on_true, on_false } => vec![*cond, *on_true, *on_false],
        ScalarExpr::Reduce { body, .. } => vec![*body],
        ScalarExpr::Load { .. } | ScalarExpr::Var(_) | ScalarExpr::Dim(_) | ScalarExpr::Const(_) => vec![],
    }
}

/// The reductions of the body other than a reduction at its root, outermost only.
fn nested_reductions(map: &MapOp) -> Vec<ScalarId> {
    let start = match &map.exprs[map.body].expr {
        ScalarExpr::Reduce { body, .. } => *body,
        _ => map.body,
    };
    let is_reduce = |s: ScalarId| matches!(map.exprs[s].expr, ScalarExpr::Reduce { .. });
    if is_reduce(start) {
        return vec![start];
    }
    reachable(map, start, &is_reduce).into_iter().filter(|&s| is_reduce(s)).collect()
}

/// The index variables each scalar node reads without binding them.
fn free_vars(map: &MapOp) -> Vec<BTreeSet<u32>> {
    let mut free: Vec<BTreeSet<u32>> = Vec::with_capacity(map.exprs.len());
    for (_, node) in map.exprs.iter() {
        let mut f = BTreeSet::new();
        match &node.expr {
            ScalarExpr::Load { indices, .. } => f.extend(indices.iter().flat_map(|a| a.terms.iter().map(|(v, _)| v.0))),
            ScalarExpr::Var(v) => {
                f.insert(v.0);
            }
            ScalarExpr::Reduce { vars, body, .. } => {
                f.extend(free[body.index()].iter().copied());
                for v in vars {
                    f.remove(&v.0);
                }
            }
            other => {
                for o in operands(other) {
                    f.extend(free[o.index()].iter().copied());
                }
            }
        }
        free.push(f);
    }
    free
}

/// Every index variable named inside `from`'s subtree, free or bound.
fn named_vars(map: &MapOp, from: ScalarId) -> BTreeSet<u32> {
    let mut vars = BTreeSet::new();
    for s in reachable(map, from, &|_| false) {
        match &map.exprs[s].expr {
            ScalarExpr::Load { indices, .. } => {
                vars.extend(indices.iter().flat_map(|a| a.terms.iter().map(|(v, _)| v.0)));
            }
            ScalarExpr::Var(v) => {
                vars.insert(v.0);
            }
            ScalarExpr::Reduce { vars: bound, .. } => vars.extend(bound.iter().map(|v| v.0)),
            _ => {}
        }
    }
    vars
}

fn plain(var: u32) -> Affine {
    Affine::new(vec![(VarId(var), Dim::constant(1))], Dim::constant(0))
}

/// Splits each nested reduction `r` of `map` into a map of its own over the variables `r` reads freely, and
/// returns the map rewritten to load those instead, with the new maps.
fn split(t: &mut Tensors, id: NodeId, map: &MapOp, nested: &[ScalarId]) -> (NodeId, Vec<NodeId>) {
    let free = free_vars(map);
    let mut parts = Vec::new();
    let mut replace: HashMap<ScalarId, (usize, Vec<u32>)> = HashMap::new();
    for &r in nested {
        let outer: Vec<u32> = free[r.index()].iter().copied().collect();
        let inner: Vec<u32> = named_vars(map, r).into_iter().filter(|v| !outer.contains(v)).collect();
        let mut subs: Vec<Affine> = (0..map.extents.len()).map(|v| plain(v as u32)).collect();
        for (i, &v) in outer.iter().chain(&inner).enumerate() {
            subs[v as usize] = plain(i as u32);
        }
        let extents: Vec<Dim> = outer.iter().chain(&inner).map(|&v| map.extents[v as usize].clone()).collect();
        let mut dst = Scalars::new(t.span);
        let inputs: Vec<usize> = (0..map.inputs.len()).collect();
        let mut cloner = Cloner::new(map, subs, inputs, HashMap::new());
        let body = cloner.clone(&mut dst, r);
        let dtype = map.exprs[r].dtype;
        let shape = outer.iter().map(|&v| map.extents[v as usize].clone()).collect();
        let part_map = MapOp { inputs: map.inputs.clone(), extents, exprs: dst.exprs, body };
        let part = t.add(Op::Map(Box::new(part_map)), TensorType { dtype, shape });
        replace.insert(r, (map.inputs.len() + parts.len(), outer));
        parts.push(part);
    }
    let mut dst = Scalars::new(t.span);
    let mut replaced = HashMap::new();
    for (&r, (input, outer)) in &replace {
        let indices = outer.iter().map(|&v| plain(v)).collect();
        let load = dst.add(ScalarExpr::Load { input: *input, indices, default: None }, map.exprs[r].dtype);
        replaced.insert(r, load);
    }
    let subs = (0..map.extents.len()).map(|v| plain(v as u32)).collect();
    let mut cloner = Cloner::new(map, subs, (0..map.inputs.len()).collect(), replaced);
    let body = cloner.clone(&mut dst, map.body);
    let mut inputs = map.inputs.clone();
    inputs.extend(&parts);
    let ty = t.ty(id);
    let rewritten = MapOp { inputs, extents: map.extents.clone(), exprs: dst.exprs, body };
    (t.add(Op::Map(Box::new(rewritten)), ty), parts)
}

/// The gradients of a map whose body has at most one reduction, at its root.
fn simple(t: &mut Tensors, id: NodeId, map: &MapOp, g: NodeId, need: &dyn Fn(NodeId) -> bool) -> Vec<(NodeId, NodeId)> {
    let (root, inner, red_vars) = match &map.exprs[map.body].expr {
        ScalarExpr::Reduce { op, vars, body } => (Some(*op), *body, vars.clone()),
        _ => (None, map.body, vec![]),
    };
    let loads: Vec<ScalarId> = reachable(map, inner, &|_| false)
        .into_iter()
        .filter(|&s| match &map.exprs[s].expr {
            ScalarExpr::Load { input, .. } => map.exprs[s].dtype.is_float() && need(map.inputs[*input]),
            _ => false,
        })
        .collect();
    if loads.is_empty() {
        return vec![];
    }
    let first = matches!(root, Some(ReduceOp::Max | ReduceOp::Min)).then(|| first_hit(t, id, map, inner, &red_vars));
    let mut out = Vec::new();
    for load in loads {
        let ScalarExpr::Load { input, .. } = &map.exprs[load].expr else { continue };
        let target = map.inputs[*input];
        let cx = Adjoint { id, map, root, inner, red_vars: &red_vars, g, first };
        if let Some(grad) = cx.build(t, load, target) {
            out.push((target, grad));
        }
    }
    out
}

/// For a max or min reduction at the root: per output element, the position (`reduction_position`) of the
/// first reduced element equal to the result, as an `i32` map.
fn first_hit(t: &mut Tensors, id: NodeId, map: &MapOp, inner: ScalarId, red_vars: &[VarId]) -> NodeId {
    let ty = t.ty(id);
    let mut dst = Scalars::new(t.span);
    let subs: Vec<Affine> = (0..map.extents.len()).map(|v| plain(v as u32)).collect();
    let mut cloner = Cloner::new(map, subs.clone(), (0..map.inputs.len()).collect(), HashMap::new());
    let value = cloner.clone(&mut dst, inner);
    let indices = (0..ty.rank() as u32).map(plain).collect();
    let y = dst.add(ScalarExpr::Load { input: map.inputs.len(), indices, default: None }, ty.dtype);
    let hit = dst.binary(BinaryOp::Eq, value, y);
    let position = reduction_position(&mut dst, map, red_vars, &subs);
    let past = red_vars.iter().try_fold(Dim::constant(1), |n, v| n.mul(&map.extents[v.0 as usize]));
    let past = dst.add(ScalarExpr::Dim(past.unwrap_or_else(|_| Dim::constant(i32::MAX as i64))), DType::I32);
    let candidate = dst.select(hit, position, past);
    let body = dst.add(ScalarExpr::Reduce { op: ReduceOp::Min, vars: red_vars.to_vec(), body: candidate }, DType::I32);
    let mut inputs = map.inputs.clone();
    inputs.push(id);
    let first = MapOp { inputs, extents: map.extents.clone(), exprs: dst.exprs, body };
    t.add(Op::Map(Box::new(first)), TensorType { dtype: DType::I32, shape: ty.shape })
}

/// The row-major position of the reduction variables `red_vars` (the last fastest), each variable `v`
/// standing for `subs[v]`: `r0 * (E1 * E2 ...) + r1 * (E2 ...) + ...`, an `i32`.
fn reduction_position(dst: &mut Scalars, map: &MapOp, red_vars: &[VarId], subs: &[Affine]) -> ScalarId {
    let mut position = dst.int(0);
    let mut stride = Dim::constant(1);
    for r in red_vars.iter().rev() {
        let value = dst.affine_value(&subs[r.0 as usize]);
        let k = dst.add(ScalarExpr::Dim(stride.clone()), DType::I32);
        let term = dst.binary(BinaryOp::Mul, value, k);
        position = dst.binary(BinaryOp::Add, position, term);
        stride = stride.mul(&map.extents[r.0 as usize]).unwrap_or_else(|_| Dim::constant(i32::MAX as i64));
    }
    position
}

/// What building the adjoint of one load needs to know about its map.
struct Adjoint<'m> {
    id: NodeId,
    map: &'m MapOp,
    root: Option<ReduceOp>,
    inner: ScalarId,
    red_vars: &'m [VarId],
    g: NodeId,
    /// For a max or min reduction: `first_hit`.
    first: Option<NodeId>,
}

impl Adjoint<'_> {
    /// The gradient contribution of `load` to its input `target`, as a map over `target`'s shape.
    fn build(&self, t: &mut Tensors, load: ScalarId, target: NodeId) -> Option<NodeId> {
        let map = self.map;
        let ScalarExpr::Load { indices, .. } = &map.exprs[load].expr else { return None };
        let target_ty = t.ty(target);
        let rank_u = target_ty.rank();
        let n_vars = map.extents.len();
        let out_rank = t.ty(self.id).rank();

        // Pivots: per axis of the load, a variable with a constant coefficient that appears on no other axis;
        // the one with the largest extent, so the sum left over is the short one (a kernel window).
        let mut axes_of = vec![0usize; n_vars];
        for index in indices {
            for (v, c) in &index.terms {
                if c.as_const() != Some(0) {
                    axes_of[v.0 as usize] += 1;
                }
            }
        }
        let mut pivot: Vec<Option<(usize, i64)>> = vec![None; n_vars]; // per var: (axis, coefficient)
        for (axis, index) in indices.iter().enumerate() {
            if index.div != 1 {
                continue;
            }
            let best = index
                .terms
                .iter()
                .filter_map(|(v, c)| {
                    let c = c.as_const().filter(|&c| c != 0)?;
                    (axes_of[v.0 as usize] == 1).then_some((*v, c))
                })
                .max_by_key(|(v, c)| (map.extents[v.0 as usize].as_const().unwrap_or(i64::MAX), c.abs() == 1));
            if let Some((v, c)) = best {
                pivot[v.0 as usize] = Some((axis, c));
            }
        }
        // Adjoint variables: `u` (the target's axes), then every non-pivot variable of the map, then the
        // variables of a recomputed product.
        let mut subs: Vec<Affine> = Vec::with_capacity(n_vars);
        let mut summed: Vec<(VarId, Dim)> = Vec::new();
        // Variables a split-out reduction bound are not read here any more.
        let live = |v: usize| v < out_rank || self.red_vars.iter().any(|r| r.0 as usize == v);
        for (v, (p, extent)) in pivot.iter().zip(&map.extents).enumerate() {
            if p.is_none() && live(v) {
                let new = VarId((rank_u + summed.len()) as u32);
                summed.push((new, extent.clone()));
                subs.push(plain(new.0));
            } else {
                subs.push(plain(0)); // a pivot (replaced below) or a variable nothing reads
            }
        }
        for v in 0..n_vars {
            let Some((axis, c)) = pivot[v] else { continue };
            // index = offset + c v + rest = u  =>  v = (u - offset - rest) / c
            let index = &indices[axis];
            let sign = c.signum();
            let mut terms = vec![(VarId(axis as u32), Dim::constant(sign))];
            for (w, cw) in &index.terms {
                if w.0 as usize == v {
                    continue;
                }
                let Ok(k) = cw.scale(-sign) else { return None };
                terms.extend(subs[w.0 as usize].terms.iter().map(|(x, _)| (*x, k.clone())));
            }
            let offset = index.offset.scale(-sign).ok()?;
            subs[v] = Affine { terms, offset, div: c.abs() };
        }

        let mut dst = Scalars::new(t.span);
        let mut inputs = map.inputs.clone();
        let mut input = |node: NodeId| match inputs.iter().position(|&i| i == node) {
            Some(i) => i,
            None => {
                inputs.push(node);
                inputs.len() - 1
            }
        };
        let g_input = input(self.g);
        let first_input = self.first.map(&mut input);
        let pivots: Vec<bool> = pivot.iter().map(Option::is_some).collect();
        let mut cloner = Cloner::new(map, subs.clone(), (0..map.inputs.len()).collect(), HashMap::new());
        cloner.pivots = pivots.clone();

        // The guard: each pivot is a whole number in range, and each axis without a pivot reads `u` exactly.
        let mut guard: Option<ScalarId> = None;
        let mut both = |dst: &mut Scalars, c: ScalarId| {
            guard = Some(match guard {
                None => c,
                Some(g) => dst.binary(BinaryOp::And, g, c),
            })
        };
        for (v, p) in pivot.iter().enumerate() {
            let Some((_, c)) = *p else { continue };
            let num = dst.affine_numerator(&subs[v]);
            let zero = dst.int(0);
            let nonneg = dst.binary(BinaryOp::Ge, num, zero);
            both(&mut dst, nonneg);
            let limit = dst.add(ScalarExpr::Dim(map.extents[v].scale(c.abs()).ok()?), DType::I32);
            let below = dst.binary(BinaryOp::Lt, num, limit);
            both(&mut dst, below);
            if c.abs() != 1 {
                let k = dst.int(c.abs());
                let rem = dst.binary(BinaryOp::Rem, num, k);
                let exact = dst.binary(BinaryOp::Eq, rem, zero);
                both(&mut dst, exact);
            }
        }
        for (axis, index) in indices.iter().enumerate() {
            if pivot.iter().any(|p| p.is_some_and(|(a, _)| a == axis)) {
                continue;
            }
            // num(index under subs) == u * div
            let substituted = cloner.substitute(index)?;
            let num = dst.affine_numerator(&Affine { div: 1, ..substituted.clone() });
            let u = dst.add(ScalarExpr::Var(VarId(axis as u32)), DType::I32);
            let scaled = if substituted.div == 1 {
                u
            } else {
                let k = dst.int(substituted.div);
                dst.binary(BinaryOp::Mul, u, k)
            };
            let eq = dst.binary(BinaryOp::Eq, num, scaled);
            both(&mut dst, eq);
        }

        // The gradient reaching the reduction's body at (v, r).
        let mut inner_extents: Vec<Dim> = Vec::new();
        let dtype = map.exprs[self.inner].dtype;
        let g_indices: Vec<Affine> = (0..out_rank).map(|i| subs[i].clone()).collect();
        let g_default = pivots[..out_rank].iter().any(|&p| p).then_some(Scalar::Float(0.0));
        let g_load =
            dst.add(ScalarExpr::Load { input: g_input, indices: g_indices.clone(), default: g_default }, dtype);
        let coefficient = match self.root {
            None | Some(ReduceOp::Sum) => g_load,
            Some(ReduceOp::Mean) => {
                let n =
                    self.red_vars.iter().try_fold(Dim::constant(1), |n, v| n.mul(&map.extents[v.0 as usize])).ok()?;
                let n = dst.add(ScalarExpr::Dim(n), dtype);
                dst.binary(BinaryOp::Div, g_load, n)
            }
            Some(ReduceOp::Max | ReduceOp::Min) => {
                // The element at `first`, the first position whose value is the result, is the one chosen:
                // `position == first` alone says so (no position equals the `-1` read outside).
                let first_default = g_default.map(|_| Scalar::Int(-1));
                let first = dst.add(
                    ScalarExpr::Load { input: first_input?, indices: g_indices, default: first_default },
                    DType::I32,
                );
                let position = reduction_position(&mut dst, map, self.red_vars, &subs);
                let chosen = dst.binary(BinaryOp::Eq, position, first);
                let zero = dst.constant(0.0, g_load);
                dst.select(chosen, g_load, zero)
            }
            Some(ReduceOp::Prod) => {
                // The product of the other elements: the body again over fresh variables, with 1 in place
                // of the element itself.
                let mut fresh_subs = subs.clone();
                let mut fresh = Vec::new();
                let mut same: Option<ScalarId> = None;
                for r in self.red_vars {
                    let new = VarId((rank_u + summed.len() + fresh.len()) as u32);
                    fresh.push((new, map.extents[r.0 as usize].clone()));
                    fresh_subs[r.0 as usize] = plain(new.0);
                    let a = dst.add(ScalarExpr::Var(new), DType::I32);
                    let b = dst.affine_value(&subs[r.0 as usize]);
                    let eq = dst.binary(BinaryOp::Eq, a, b);
                    same = Some(match same {
                        None => eq,
                        Some(s) => dst.binary(BinaryOp::And, s, eq),
                    });
                }
                let mut again = Cloner::new(map, fresh_subs, (0..map.inputs.len()).collect(), HashMap::new());
                again.pivots = pivots.clone();
                let value = again.clone(&mut dst, self.inner);
                let one = dst.constant(1.0, value);
                let factor = dst.select(same?, one, value);
                let vars = fresh.iter().map(|(v, _)| *v).collect();
                let others = dst.add(ScalarExpr::Reduce { op: ReduceOp::Prod, vars, body: factor }, dtype);
                inner_extents.extend(fresh.into_iter().map(|(_, e)| e));
                dst.binary(BinaryOp::Mul, g_load, others)
            }
        };

        // Reverse mode over the body, along the paths that reach `load`.
        let mut leads = vec![false; self.inner.index() + 1];
        for s in reachable(map, self.inner, &|_| false) {
            leads[s.index()] = s == load || operands(&map.exprs[s].expr).iter().any(|o| leads[o.index()]);
        }
        let mut adjoint: HashMap<ScalarId, ScalarId> = HashMap::new();
        adjoint.insert(self.inner, coefficient);
        let give = |dst: &mut Scalars, adjoint: &mut HashMap<ScalarId, ScalarId>, s: ScalarId, v: Option<ScalarId>| {
            let Some(v) = v.filter(|_| leads[s.index()]) else { return };
            let total = match adjoint.get(&s) {
                Some(&sum) => dst.binary(BinaryOp::Add, sum, v),
                None => v,
            };
            adjoint.insert(s, total);
        };
        for index in (load.index() + 1..=self.inner.index()).rev() {
            let s = ScalarId::new(index);
            if !leads[index] {
                continue;
            }
            let Some(&gs) = adjoint.get(&s) else { continue };
            match map.exprs[s].expr.clone() {
                ScalarExpr::Unary(op, a) => {
                    let (x, y) = (cloner.clone(&mut dst, a), cloner.clone(&mut dst, s));
                    let ga = rules::unary(&mut dst, op, x, y, gs);
                    give(&mut dst, &mut adjoint, a, ga);
                }
                ScalarExpr::Binary(op, a, b) => {
                    let (x, z, y) = (cloner.clone(&mut dst, a), cloner.clone(&mut dst, b), cloner.clone(&mut dst, s));
                    let (ga, gb) = rules::binary(&mut dst, op, x, z, y, gs);
                    give(&mut dst, &mut adjoint, a, ga);
                    give(&mut dst, &mut adjoint, b, gb);
                }
                ScalarExpr::Select { cond, on_true, on_false } => {
                    let c = cloner.clone(&mut dst, cond);
                    let (gt, gf) = rules::select(&mut dst, c, gs);
                    give(&mut dst, &mut adjoint, on_true, Some(gt));
                    give(&mut dst, &mut adjoint, on_false, Some(gf));
                }
                ScalarExpr::Cast(a) => {
                    let from = map.exprs[a].dtype;
                    let ga = rules::cast(&mut dst, from, map.exprs[s].dtype, gs);
                    give(&mut dst, &mut adjoint, a, ga);
                }
                // Split out before differentiation (`split`), so never inside a body here.
                ScalarExpr::Reduce { .. } => return None,
                ScalarExpr::Load { .. } | ScalarExpr::Var(_) | ScalarExpr::Dim(_) | ScalarExpr::Const(_) => {}
            }
        }
        let value = *adjoint.get(&load)?;
        let guarded = match guard {
            Some(guard) => {
                let zero = dst.constant(0.0, value);
                dst.select(guard, value, zero)
            }
            None => value,
        };
        let body = if summed.is_empty() {
            guarded
        } else {
            let vars = summed.iter().map(|(v, _)| *v).collect();
            dst.add(ScalarExpr::Reduce { op: ReduceOp::Sum, vars, body: guarded }, dtype)
        };
        let mut extents = target_ty.shape.clone();
        extents.extend(summed.into_iter().map(|(_, e)| e));
        extents.extend(inner_extents);
        Some(t.add(Op::Map(Box::new(MapOp { inputs, extents, exprs: dst.exprs, body })), target_ty))
    }
}

/// Builds scalar nodes of a new map body: the scalar side of `Algebra`.
pub(crate) struct Scalars {
    pub(crate) exprs: Arena<ScalarNode>,
    span: Span,
}

impl Scalars {
    fn new(span: Span) -> Scalars {
        Scalars { exprs: Arena::new(), span }
    }

    fn add(&mut self, expr: ScalarExpr, dtype: DType) -> ScalarId {
        self.exprs.append(ScalarNode { expr, dtype }, self.span)
    }

    fn int(&mut self, v: i64) -> ScalarId {
        self.add(ScalarExpr::Const(Scalar::Int(v)), DType::I32)
    }

    /// `offset + sum(coef * var)` of `a` as an `i32` (its divisor not applied).
    fn affine_numerator(&mut self, a: &Affine) -> ScalarId {
        let mut sum = self.add(ScalarExpr::Dim(a.offset.clone()), DType::I32);
        for (v, c) in &a.terms {
            let var = self.add(ScalarExpr::Var(*v), DType::I32);
            let term = if c.as_const() == Some(1) {
                var
            } else {
                let k = self.add(ScalarExpr::Dim(c.clone()), DType::I32);
                self.binary(BinaryOp::Mul, var, k)
            };
            sum = self.binary(BinaryOp::Add, sum, term);
        }
        sum
    }

    /// The value of `a` as an `i32` (exact where its division is).
    fn affine_value(&mut self, a: &Affine) -> ScalarId {
        let num = self.affine_numerator(a);
        if a.div == 1 {
            return num;
        }
        let k = self.int(a.div);
        self.binary(BinaryOp::Div, num, k)
    }
}

impl Algebra for Scalars {
    type V = ScalarId;
    fn dtype(&self, v: ScalarId) -> DType {
        self.exprs[v].dtype
    }
    fn unary(&mut self, op: UnaryOp, a: ScalarId) -> ScalarId {
        let dtype = self.dtype(a);
        self.add(ScalarExpr::Unary(op, a), dtype)
    }
    fn binary(&mut self, op: BinaryOp, a: ScalarId, b: ScalarId) -> ScalarId {
        let dtype = if op.is_comparison() { DType::Bool } else { self.dtype(a) };
        self.add(ScalarExpr::Binary(op, a, b), dtype)
    }
    fn select(&mut self, cond: ScalarId, on_true: ScalarId, on_false: ScalarId) -> ScalarId {
        let dtype = self.dtype(on_true);
        self.add(ScalarExpr::Select { cond, on_true, on_false }, dtype)
    }
    fn cast(&mut self, a: ScalarId, dtype: DType) -> ScalarId {
        self.add(ScalarExpr::Cast(a), dtype)
    }
    fn constant(&mut self, value: f64, like: ScalarId) -> ScalarId {
        let dtype = self.dtype(like);
        self.add(ScalarExpr::Const(Scalar::Float(value)), dtype)
    }
}

/// Copies scalar nodes of one map into a new body, each index variable `v` replaced by the affine
/// expression `subs[v]` of the new body's variables.
struct Cloner<'m> {
    src: &'m MapOp,
    subs: Vec<Affine>,
    /// The new body's input number for each of the source map's inputs.
    inputs: Vec<usize>,
    memo: HashMap<ScalarId, ScalarId>,
    /// The source variables solved for (pivots): their values may leave their ranges where the adjoint's
    /// guard discards the result, so a load that reads them gets a default.
    pivots: Vec<bool>,
}

impl<'m> Cloner<'m> {
    fn new(src: &'m MapOp, subs: Vec<Affine>, inputs: Vec<usize>, memo: HashMap<ScalarId, ScalarId>) -> Self {
        Cloner { src, subs, inputs, memo, pivots: Vec::new() }
    }

    /// `index` with every variable substituted: `sum(c_x * (n_x / q_x)) + offset` over one common divisor.
    fn substitute(&self, index: &Affine) -> Option<Affine> {
        let q = index.terms.iter().fold(1i64, |q, (v, _)| lcm(q, self.subs[v.0 as usize].div));
        let mut terms: Vec<(VarId, Dim)> = Vec::new();
        let mut offset = index.offset.scale(q).ok()?;
        for (v, c) in &index.terms {
            let s = &self.subs[v.0 as usize];
            let k = c.scale(q / s.div).ok()?;
            for (w, cw) in &s.terms {
                let term = cw.mul(&k).ok()?;
                match terms.iter_mut().find(|(x, _)| x == w) {
                    Some((_, sum)) => *sum = sum.add(&term).ok()?,
                    None => terms.push((*w, term)),
                }
            }
            offset = offset.add(&s.offset.mul(&k).ok()?).ok()?;
        }
        terms.retain(|(_, c)| c.as_const() != Some(0));
        Some(Affine { terms, offset, div: q.checked_mul(index.div)? })
    }

    /// The copy of `root` (and of every node it reads) in `dst`.
    fn clone(&mut self, dst: &mut Scalars, root: ScalarId) -> ScalarId {
        let memo = &self.memo;
        let order = reachable(self.src, root, &|s| memo.contains_key(&s));
        for s in order {
            if self.memo.contains_key(&s) {
                continue;
            }
            let node = &self.src.exprs[s];
            let m = |x: &ScalarId| self.memo[x];
            let expr = match &node.expr {
                ScalarExpr::Load { input, indices, default } => {
                    let mut new = Vec::with_capacity(indices.len());
                    let mut leaves = false;
                    for index in indices {
                        // Substitution keeps integer coefficients, so it cannot fail on a checked map.
                        let sub = self.substitute(index).unwrap_or_else(|| index.clone());
                        leaves |= index.terms.iter().any(|(v, _)| self.pivots.get(v.0 as usize) == Some(&true));
                        new.push(sub);
                    }
                    let default = default.or_else(|| {
                        leaves.then_some(match node.dtype {
                            DType::Bool => Scalar::Bool(false),
                            d if d.is_float() => Scalar::Float(0.0),
                            _ => Scalar::Int(0),
                        })
                    });
                    ScalarExpr::Load { input: self.inputs[*input], indices: new, default }
                }
                ScalarExpr::Var(v) => {
                    let sub = self.subs[v.0 as usize].clone();
                    let value = dst.affine_value(&sub);
                    let value = if node.dtype == DType::I32 { value } else { dst.cast(value, node.dtype) };
                    self.memo.insert(s, value);
                    continue;
                }
                ScalarExpr::Dim(d) => ScalarExpr::Dim(d.clone()),
                ScalarExpr::Const(c) => ScalarExpr::Const(*c),
                ScalarExpr::Unary(op, a) => ScalarExpr::Unary(*op, m(a)),
                ScalarExpr::Binary(op, a, b) => ScalarExpr::Binary(*op, m(a), m(b)),
                ScalarExpr::Select { cond, on_true, on_false } => {
                    ScalarExpr::Select { cond: m(cond), on_true: m(on_true), on_false: m(on_false) }
                }
                ScalarExpr::Cast(a) => ScalarExpr::Cast(m(a)),
                ScalarExpr::Reduce { op, vars, body } => ScalarExpr::Reduce {
                    op: *op,
                    vars: vars.iter().map(|v| self.subs[v.0 as usize].terms.first().map_or(*v, |(w, _)| *w)).collect(),
                    body: m(body),
                },
            };
            let id = dst.add(expr, node.dtype);
            self.memo.insert(s, id);
        }
        self.memo[&root]
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

fn lcm(a: i64, b: i64) -> i64 {
    a / gcd(a, b) * b
}
