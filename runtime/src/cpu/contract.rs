//! Index notation that is a contraction, run as a matrix product: a map whose body is `sum over R of
//! x * y`, where `x` reads only output variables `A` (and `R`) and `y` only the other output variables `B`
//! (and `R`) — a convolution, its input and weight gradients, a batched product written by hand — is
//! computed as `X[A, R]` and `Y[B, R]` (each evaluated by the shared index-notation evaluator, `eval::map`,
//! padding defaults and guards included), one `gemm` `X * Y^T` of `|A| x |B|` over `|R|`, and a permutation
//! of the result's axes into the output's order. Each factor is laid out (`[A, R]` or `[R, A]`, variables
//! reordered within a group) so that its gather writes contiguously along the variable of largest extent,
//! and read by `gemm` through its strides. Recognised once per launch (`MapContraction::plan`), its factors
//! planned once per set of shapes (`MapContraction::prepare`, kept by `maps.rs`); maps
//! of any other form run on `eval::map` as they are. f32 only. The sum's order differs from the
//! interpreter's sequential one, within the reduction tolerance spec/ops.md states.

use std::collections::{BTreeMap, BTreeSet};

use super::buffers::Buffers;
use super::matmul::matmul;
use super::value::Value;
use super::view::View;
use crate::DType;
use crate::eval::layout;
use crate::eval::map::{MapPlan, run_map};
use crate::eval::values::{Lit, Val, Vals};
use crate::ops::{Affine, BinaryOp, ReduceOp, Scalar, VarId};
use crate::program::{MapOps, ScalarNode, ScalarOp, ScalarRef};

/// A contraction map, planned: the two factors and how their product becomes the output.
#[derive(Debug)]
pub struct MapContraction {
    /// The factors `x` (over output variables `a` and the reduction variables) and `y` (over `b` and them),
    /// and the guard conjuncts each takes.
    x: ScalarRef,
    y: ScalarRef,
    gx: Vec<ScalarRef>,
    gy: Vec<ScalarRef>,
    /// Output variables of `x` and of `y`, increasing.
    a: Vec<u32>,
    b: Vec<u32>,
    /// The reduction variables.
    r: Vec<u32>,
}

impl MapContraction {
    /// The contraction `map` (of `rank` output axes and dtype `dtype`) is, if it is one. The product may sit
    /// under a guard, `sum[R] select(g, x * y, 0)` (what differentiation writes for a convolution's input
    /// gradient): each conjunct of `g` goes to the factor whose variables it reads.
    pub fn plan(map: &MapOps, rank: usize, dtype: DType) -> Option<MapContraction> {
        if dtype != DType::F32 {
            return None;
        }
        let node = |r: ScalarRef| map.exprs.get(r.index());
        let ScalarOp::Reduce { op: ReduceOp::Sum, vars, body } = &node(map.body)?.expr else { return None };
        let (product, guard) = match &node(*body)?.expr {
            ScalarOp::Select { cond, on_true, on_false } if matches!(node(*on_false)?.expr, ScalarOp::Const(Scalar::Float(z)) if z.to_bits() == 0) => {
                (*on_true, Some(*cond))
            }
            _ => (*body, None),
        };
        let ScalarOp::Binary(BinaryOp::Mul, x, y) = &node(product)?.expr else { return None };
        let (fx, fy) = (free_vars(map, *x)?, free_vars(map, *y)?);
        let outputs: BTreeSet<u32> = (0..rank as u32).collect();
        let a: Vec<u32> = fx.intersection(&outputs).copied().collect();
        let b: Vec<u32> = fy.intersection(&outputs).copied().collect();
        let r: Vec<u32> = vars.iter().map(|v| v.0).collect();
        let covered: BTreeSet<u32> = a.iter().chain(&b).copied().collect();
        let reduced: BTreeSet<u32> = r.iter().copied().collect();
        let disjoint = a.iter().all(|v| !b.contains(v)) && covered == outputs && reduced.len() == r.len();
        let bound = fx.union(&fy).all(|v| outputs.contains(v) || reduced.contains(v));
        if !disjoint || !bound || node(*x)?.dtype != DType::F32 || node(*y)?.dtype != DType::F32 {
            return None;
        }
        // Each conjunct of the guard joins the factor whose output variables it reads.
        let (mut gx, mut gy) = (Vec::new(), Vec::new());
        for conjunct in guard.map(|g| conjuncts(map, g)).unwrap_or_default() {
            let vars = free_vars(map, conjunct)?;
            if !vars.iter().all(|v| reduced.contains(v) || outputs.contains(v)) {
                return None;
            }
            let outer: Vec<u32> = vars.intersection(&outputs).copied().collect();
            if outer.iter().all(|v| a.contains(v)) {
                gx.push(conjunct);
            } else if outer.iter().all(|v| b.contains(v)) {
                gy.push(conjunct);
            } else {
                return None;
            }
        }
        // `run` copies the factors out in the variable order it picks (`factor`); what that needs beyond the
        // checks above is an extent for every variable.
        if a.iter().chain(&b).chain(&r).any(|&v| map.extents.get(v as usize).is_none()) {
            return None;
        }
        Some(MapContraction { x: *x, y: *y, gx, gy, a, b, r })
    }

    /// The factors planned for an output of `out_shape`, inputs of `input_shapes` and the symbol values
    /// `syms`: their layouts and their maps' plans (`Prepared`), made once for a stream of runs alike.
    pub fn prepare(
        &self,
        map: &MapOps,
        out_shape: &[usize],
        input_shapes: &[&[usize]],
        syms: &[i64],
    ) -> Result<Prepared, String> {
        // Every variable's extent, evaluated once (the guards' folding below reads them all).
        let extents = map
            .extents
            .iter()
            .map(|dim| dim.eval_at(syms).and_then(|e| usize::try_from(e).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or("an extent is not a size")?;
        let sizes = |vars: &[u32]| {
            vars.iter()
                .map(|&v| extents.get(v as usize).copied().ok_or_else(|| "an index variable has no extent".to_string()))
                .collect::<Result<Vec<usize>, String>>()
        };
        // The factors are gathers whose runs go along the variable of largest extent (a batch): it is put
        // last in its group, and `X` is laid out `[R, A]` when it is in `A`, so those runs write contiguously.
        let all: Vec<u32> = self.a.iter().chain(&self.b).chain(&self.r).copied().collect();
        let sizes_all = sizes(&all)?;
        let along = all.iter().zip(&sizes_all).max_by_key(|&(&v, &e)| (e, v)).map(|(&v, _)| v);
        let last = |vars: &[u32]| -> Vec<u32> {
            let mut vars = vars.to_vec();
            if let Some(i) = vars.iter().position(|&v| Some(v) == along) {
                let v = vars.remove(i);
                vars.push(v);
            }
            vars
        };
        let (a, b, r) = (last(&self.a), last(&self.b), last(&self.r));
        let (sa, sb, sr) = (sizes(&a)?, sizes(&b)?, sizes(&r)?);
        let (m, n, k) = (sa.iter().product::<usize>(), sb.iter().product::<usize>(), sr.iter().product::<usize>());
        if m * n != out_shape.iter().product::<usize>() {
            return Err("the contraction's extents disagree with the output's shape".to_string());
        }
        // `Y` in rows of `R` (`[B, R]`, read transposed) or of `B` (`[R, B]`): gemm 0.18 on a Zen 4 core
        // multiplies `[16, 1024] x [1024, 72]` (a weight gradient) in 26 us from rows of `B` and 71 us from
        // rows of `R`, `[8, 4096] x [4096, 9]` in 16 and 12 us; shapes with few columns are alike either way.
        let rows_of_b = n >= 32;
        let columns_of_x = a.last().is_some() && a.last() == along.as_ref();
        let group = |first: &[usize], then: &[usize]| first.iter().chain(then).copied().collect::<Vec<usize>>();
        let shape_x = if columns_of_x { group(&sr, &sa) } else { group(&sa, &sr) };
        let shape_y = if rows_of_b { group(&sr, &sb) } else { group(&sb, &sr) };
        let lost = || "a factor of the contraction does not copy out".to_string();
        // Conjuncts the variables' ranges decide true here (`v1 < 8` where `v1` has extent 8) are dropped:
        // they zero nothing, so the other factor need not be checked for values that would not multiply to
        // zero.
        let folded = crate::eval::fold::fold(map, &extents, syms, input_shapes);
        let open = |guards: &[ScalarRef]| -> Vec<ScalarRef> {
            let holds = |g: &ScalarRef| matches!(folded.known.get(g.index()), Some(Some(Lit::B(true))));
            guards.iter().copied().filter(|g| !holds(g)).collect()
        };
        let (gx, gy) = (open(&self.gx), open(&self.gy));
        let (x_vars, y_vars) =
            (if columns_of_x { (&r, &a) } else { (&a, &r) }, if rows_of_b { (&r, &b) } else { (&b, &r) });
        let x_map = factor(map, self.x, &gx, x_vars.0, x_vars.1).ok_or_else(lost)?;
        let y_map = factor(map, self.y, &gy, y_vars.0, y_vars.1).ok_or_else(lost)?;
        // `c` is [A.., B..]; the output's axis `i` is variable `i`.
        let from: Vec<usize> = sa.iter().chain(&sb).copied().collect();
        let order: Vec<u32> = a.iter().chain(&b).copied().collect();
        let perm: Vec<usize> = (0..order.len() as u32)
            .map(|v| order.iter().position(|&o| o == v).ok_or("an output variable is missing"))
            .collect::<Result<_, _>>()?;
        Ok(Prepared {
            x_guarded: !gx.is_empty(),
            y_guarded: !gy.is_empty(),
            x: MapPlan::new(&x_map, &shape_x, input_shapes, syms)?,
            y: MapPlan::new(&y_map, &shape_y, input_shapes, syms)?,
            m,
            n,
            k,
            columns_of_x,
            rows_of_b,
            from,
            perm,
        })
    }

    /// The map's value of `out_shape` from its inputs and the bound symbols, with the factors `prepared`
    /// for them (`prepare`); the factors and the product are written into buffers from `buffers`, and the
    /// factors' given back.
    pub fn run(
        &self,
        prepared: &Prepared,
        map: &MapOps,
        out_shape: &[usize],
        inputs: &[&Val],
        syms: &[i64],
        buffers: &Buffers,
    ) -> Result<Vals, String> {
        let Prepared { m, n, k, columns_of_x, rows_of_b, .. } = *prepared;
        let Vals::F(xs) = prepared.x.run_into(DType::F32, inputs, Vals::F(buffers.take(m * k)))? else {
            return Err("a factor is not f32".to_string());
        };
        let Vals::F(ys) = prepared.y.run_into(DType::F32, inputs, Vals::F(buffers.take(n * k)))? else {
            return Err("a factor is not f32".to_string());
        };
        // In blocks, so the test vectorizes.
        let finite = |v: &[f32]| v.chunks(256).all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()));
        // `X` is zero where its conjuncts fail: `Y` must be finite for the product to be the map's `0` there,
        // and the other way round.
        if (prepared.x_guarded && !finite(&ys)) || (prepared.y_guarded && !finite(&xs)) {
            return run_map(map, DType::F32, out_shape, inputs, syms);
        }
        // X [m, k] times Y^T, each read in place (transposed through its strides where it was laid out so):
        // the executor's matmul.
        let xv = Value::new(Vals::F(xs), if columns_of_x { vec![k, m] } else { vec![m, k] });
        let yv = Value::new(Vals::F(ys), if rows_of_b { vec![k, n] } else { vec![n, k] });
        let x = if columns_of_x { View::whole(xv.clone()).permute(&[1, 0]) } else { View::whole(xv.clone()) };
        let y = if rows_of_b { View::whole(yv.clone()) } else { View::whole(yv.clone()).permute(&[1, 0]) };
        let product = matmul(DType::F32, &x, &y, buffers.take(m * n), false)?;
        drop((x, y));
        buffers.recycle(xv);
        buffers.recycle(yv);
        // `c` is already the output where the variables come in order (a weight gradient's).
        if prepared.perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(product);
        }
        let out = layout::permute(&product, &prepared.from, &prepared.perm);
        buffers.recycle(Value::new(product, prepared.from.clone()));
        Ok(out)
    }
}

/// A contraction's factors planned for one set of shapes and symbol values: each factor's map plan and
/// layout, the product's size `m x n` over `k`, and the permutation of its axes into the output's.
pub struct Prepared {
    /// Whether each factor keeps a guard conjunct the ranges leave open: then `0 * inf` could stand where the
    /// map has `0` (the factor zeroed by its guard times a non-finite value of the other), so where the
    /// other factor holds a non-finite value the map runs as it is.
    x_guarded: bool,
    y_guarded: bool,
    x: MapPlan,
    y: MapPlan,
    m: usize,
    n: usize,
    k: usize,
    /// `X` laid out `[R, A]` (read transposed), else `[A, R]`; `Y` `[R, B]`, else `[B, R]` (read transposed).
    columns_of_x: bool,
    rows_of_b: bool,
    /// The product's shape `[A.., B..]` and the permutation that makes it the output's.
    from: Vec<usize>,
    perm: Vec<usize>,
}

/// The variables `r`'s subtree reads, or `None` when it holds a reduction of its own (not planned here).
fn free_vars(map: &MapOps, r: ScalarRef) -> Option<BTreeSet<u32>> {
    let mut vars = BTreeSet::new();
    for i in subtree(map, r)? {
        match &map.exprs[i].expr {
            ScalarOp::Reduce { .. } => return None,
            ScalarOp::Var(v) => {
                vars.insert(v.0);
            }
            ScalarOp::Load { indices, .. } => {
                vars.extend(indices.iter().flat_map(|a| a.terms.iter().map(|(v, _)| v.0)))
            }
            _ => {}
        }
    }
    Some(vars)
}

/// The conjuncts of the `bool` expression `g` (split at `and`).
fn conjuncts(map: &MapOps, g: ScalarRef) -> Vec<ScalarRef> {
    match map.exprs.get(g.index()).map(|n| &n.expr) {
        Some(ScalarOp::Binary(BinaryOp::And, a, b)) => {
            let mut out = conjuncts(map, *a);
            out.extend(conjuncts(map, *b));
            out
        }
        _ => vec![g],
    }
}

/// The scalar nodes `r` depends on (itself included), increasing; `None` for a reference out of range.
fn subtree(map: &MapOps, r: ScalarRef) -> Option<Vec<usize>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![r.index()];
    while let Some(i) = stack.pop() {
        if seen.insert(i) {
            stack.extend(map.exprs.get(i)?.expr.operands().iter().map(|o| o.index()));
        }
    }
    Some(seen.into_iter().collect())
}

/// The map `out[outer.., r..] = guards ? root : 0`: the nodes of `root` and `guards` copied in order with
/// variables renumbered (`outer` first, then `r`), reading the same inputs.
fn factor(map: &MapOps, root: ScalarRef, guards: &[ScalarRef], outer: &[u32], r: &[u32]) -> Option<MapOps> {
    let renumber: BTreeMap<u32, u32> = outer.iter().chain(r).enumerate().map(|(new, &old)| (old, new as u32)).collect();
    let var = |v: VarId| renumber.get(&v.0).map(|&n| VarId(n));
    let mut nodes: BTreeSet<usize> = subtree(map, root)?.into_iter().collect();
    for &g in guards {
        nodes.extend(subtree(map, g)?);
    }
    let nodes: Vec<usize> = nodes.into_iter().collect();
    let position: BTreeMap<usize, u32> = nodes.iter().enumerate().map(|(new, &old)| (old, new as u32)).collect();
    let s = |o: ScalarRef| position.get(&o.index()).map(|&p| ScalarRef(p));
    let mut exprs = Vec::with_capacity(nodes.len());
    for &i in &nodes {
        let node = &map.exprs[i];
        let expr = match &node.expr {
            ScalarOp::Load { input, indices, default } => ScalarOp::Load {
                input: *input,
                indices: indices
                    .iter()
                    .map(|a| {
                        let terms = a.terms.iter().map(|(v, c)| Some((var(*v)?, c.clone()))).collect::<Option<_>>()?;
                        Some(Affine { terms, offset: a.offset.clone(), div: a.div })
                    })
                    .collect::<Option<_>>()?,
                default: *default,
            },
            ScalarOp::Var(v) => ScalarOp::Var(var(*v)?),
            ScalarOp::Dim(d) => ScalarOp::Dim(d.clone()),
            ScalarOp::Const(c) => ScalarOp::Const(*c),
            ScalarOp::Unary(op, a) => ScalarOp::Unary(*op, s(*a)?),
            ScalarOp::Binary(op, a, b) => ScalarOp::Binary(*op, s(*a)?, s(*b)?),
            ScalarOp::Select { cond, on_true, on_false } => {
                ScalarOp::Select { cond: s(*cond)?, on_true: s(*on_true)?, on_false: s(*on_false)? }
            }
            ScalarOp::Cast(a) => ScalarOp::Cast(s(*a)?),
            ScalarOp::Reduce { .. } => return None,
        };
        exprs.push(ScalarNode { expr, dtype: node.dtype });
    }
    let mut body = s(root)?;
    if let Some((&first, rest)) = guards.split_first() {
        let mut push = |expr, dtype| {
            exprs.push(ScalarNode { expr, dtype });
            ScalarRef(exprs.len() as u32 - 1)
        };
        let mut cond = s(first)?;
        for &g in rest {
            cond = push(ScalarOp::Binary(BinaryOp::And, cond, s(g)?), DType::Bool);
        }
        let zero = push(ScalarOp::Const(Scalar::Float(0.0)), DType::F32);
        body = push(ScalarOp::Select { cond, on_true: body, on_false: zero }, DType::F32);
    }
    let extents = outer.iter().chain(r).map(|&v| map.extents.get(v as usize).cloned()).collect::<Option<_>>()?;
    Some(MapOps { inputs: map.inputs.clone(), extents, exprs, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dim::Dim;
    use crate::program::OpRef;

    /// `planned`'s value: prepared for the inputs' shapes, then run.
    fn run(planned: &MapContraction, map: &MapOps, out_shape: &[usize], inputs: &[&Val]) -> Vals {
        let shapes: Vec<&[usize]> = inputs.iter().map(|v| &v.shape[..]).collect();
        let prepared = planned.prepare(map, out_shape, &shapes, &[]).unwrap();
        planned.run(&prepared, map, out_shape, inputs, &[], &Buffers::default()).unwrap()
    }

    fn load(input: usize, terms: &[(u32, i64)], offset: i64) -> ScalarOp {
        let terms = terms.iter().map(|&(v, c)| (VarId(v), Dim::constant(c))).collect();
        ScalarOp::Load {
            input,
            indices: vec![Affine::new(terms, Dim::constant(offset))],
            default: Some(crate::ops::Scalar::Float(0.0)),
        }
    }

    /// A 1-D convolution with padding, `out[c, i] = sum_{d, k} x[d, i + k - 1] * w[c, d, k]`, written as two
    /// flat loads, against the shared evaluator, with `Y` in either layout.
    #[test]
    fn a_padded_convolution_equals_the_evaluator() {
        // 3 output channels (`Y` in rows of `R`) and 40 (`Y` in rows of `B`).
        for c in [3usize, 40] {
            convolution_case(c);
        }
    }

    fn convolution_case(c: usize) {
        let f = |expr| ScalarNode { expr, dtype: DType::F32 };
        let (i, d, k) = (7usize, 2usize, 3usize);
        // x: [d, i] flat: d * 7 + (i + k - 1); w: [c, d, k] flat: c * 6 + d * 3 + k. Loads are 1-D here.
        let map = MapOps {
            inputs: vec![OpRef(0), OpRef(1)],
            extents: [c, i, d, k].iter().map(|&e| Dim::constant(e as i64)).collect(),
            exprs: vec![
                f(load(0, &[(2, 7), (1, 1), (3, 1)], -1)),
                f(load(1, &[(0, 6), (2, 3), (3, 1)], 0)),
                f(ScalarOp::Binary(BinaryOp::Mul, ScalarRef(0), ScalarRef(1))),
                f(ScalarOp::Reduce { op: ReduceOp::Sum, vars: vec![VarId(2), VarId(3)], body: ScalarRef(2) }),
            ],
            body: ScalarRef(3),
        };
        let x = Val { shape: vec![d * i], data: Vals::F((0..d * i).map(|v| (v as f32 * 0.37).sin()).collect()) };
        let w =
            Val { shape: vec![c * d * k], data: Vals::F((0..c * d * k).map(|v| (v as f32 * 0.91).cos()).collect()) };
        let planned = MapContraction::plan(&map, 2, DType::F32).expect("a contraction");
        assert_eq!((planned.a.clone(), planned.b.clone(), planned.r.clone()), (vec![1], vec![0], vec![2, 3]));
        let got = run(&planned, &map, &[c, i], &[&x, &w]);
        let want = run_map(&map, DType::F32, &[c, i], &[&x, &w], &[]).unwrap();
        let (Vals::F(got), Vals::F(want)) = (got, want) else { panic!("f32") };
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{got:?} vs {want:?}");
        }
        // Under a guard split between the factors (i >= 1 on x's side, c < 2 on y's, d < 1 a reduction's),
        // and again with an infinity in a factor where its own guard is false (zeroed in the factor), and
        // where the other factor's guard is false (then the map runs as it is).
        let mut guarded = map.clone();
        let int = |expr| ScalarNode { expr, dtype: DType::I32 };
        let b = |expr| ScalarNode { expr, dtype: DType::Bool };
        guarded.exprs.truncate(3);
        guarded.exprs.extend([
            int(ScalarOp::Var(VarId(1))),
            int(ScalarOp::Const(Scalar::Int(1))),
            b(ScalarOp::Binary(BinaryOp::Ge, ScalarRef(3), ScalarRef(4))),
            int(ScalarOp::Var(VarId(0))),
            int(ScalarOp::Const(Scalar::Int(2))),
            b(ScalarOp::Binary(BinaryOp::Lt, ScalarRef(6), ScalarRef(7))),
            int(ScalarOp::Var(VarId(2))),
            b(ScalarOp::Binary(BinaryOp::Lt, ScalarRef(9), ScalarRef(4))),
            b(ScalarOp::Binary(BinaryOp::And, ScalarRef(5), ScalarRef(8))),
            b(ScalarOp::Binary(BinaryOp::And, ScalarRef(11), ScalarRef(10))),
            f(ScalarOp::Const(Scalar::Float(0.0))),
            f(ScalarOp::Select { cond: ScalarRef(12), on_true: ScalarRef(2), on_false: ScalarRef(13) }),
            f(ScalarOp::Reduce { op: ReduceOp::Sum, vars: vec![VarId(2), VarId(3)], body: ScalarRef(14) }),
        ]);
        guarded.body = ScalarRef(15);
        let planned = MapContraction::plan(&guarded, 2, DType::F32).expect("a guarded contraction");
        let mut w_inf = w.clone();
        if let Vals::F(v) = &mut w_inf.data {
            v[2 * 6] = f32::INFINITY; // c = 2, where the guard is false
        }
        let mut w_inf_d1 = w.clone();
        if let Vals::F(v) = &mut w_inf_d1.data {
            v[3] = f32::INFINITY; // c = 0, d = 1: x's guard (d < 1) is false
        }
        for w in [&w, &w_inf, &w_inf_d1] {
            let got = run(&planned, &guarded, &[c, i], &[&x, w]);
            let want = run_map(&guarded, DType::F32, &[c, i], &[&x, w], &[]).unwrap();
            let (Vals::F(got), Vals::F(want)) = (got, want) else { panic!("f32") };
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{got:?} vs {want:?}");
            }
        }
        // Not a contraction: both factors read output variable 0.
        let mut shared = map.clone();
        shared.exprs[0] = f(load(0, &[(0, 1), (2, 1)], 0));
        assert!(MapContraction::plan(&shared, 2, DType::F32).is_none());
    }
}
