//! Folding of a map body's index arithmetic before it is planned (`map.rs`): what the index variables'
//! ranges decide. Gradients of index notation carry guards that test every index of an inverted load
//! (`0 + v0 >= 0 && 0 + v0 < N && ...`) and offsets like `0 + v5 * 1`; each is a vector op per lane per
//! reduction step when evaluated as written. Here every `i32` statement gets the interval of its values
//! (a variable `v < extent` is in `[0, extent - 1]`), and a statement whose value the intervals decide
//! becomes that constant; `x + 0`, `x * 1`, `x % c` with `0 <= x < c`, `true && x` and a select on a decided
//! condition become their operand, and `g ? x : 0` becomes `x` when `x` loads with default 0 and `g` only
//! repeats the load's own bounds (a convolution gradient's factor; for a divided index, `num >= 0` and
//! `num % div == 0`: a strided pool's adjoint), also through `c ? x : 0` selects of the load. The results
//! are exact: integer intervals are kept only while they fit `i32` (so no wrapping is ever assumed away),
//! and nothing whose evaluation could fail (a load without a default, as the interpreter checks it) is ever
//! dropped. `Folded::pins` finds the sums whose guard leaves one term per element, and the value of the
//! variable that term is at.

use super::values::Lit;
use crate::DType;
use std::collections::BTreeMap;

use crate::ops::{BinaryOp, ReduceOp, Scalar};
use crate::program::{MapOps, ScalarOp, ScalarRef};

/// What folding found for each statement of a map body.
#[derive(Debug)]
pub struct Folded {
    /// The statement's value when the ranges decide it.
    pub known: Vec<Option<Lit>>,
    /// The statement whose value this one always equals (itself when none).
    pub alias: Vec<usize>,
    /// Each `i32` statement's interval, when it fits `i32`.
    range: Vec<Option<(i64, i64)>>,
    /// Each `i32` statement as a linear form of the variables, where it is one.
    form: Vec<Option<Form>>,
    /// Whether evaluating the statement can fail (it reads a load without a default).
    fallible: Vec<bool>,
}

/// A reduction variable whose value the guard of its sum decides from the output variables
/// (`Folded::pins`): `var = op(offset + sum(coef * v))` with each `v` an output variable.
#[derive(Clone, Debug, PartialEq)]
pub struct Pin {
    /// The pinned reduction variable.
    pub var: u32,
    /// `(output variable, coefficient)`.
    pub terms: Vec<(u32, i64)>,
    /// The affine value's constant.
    pub offset: i64,
    /// Floor division or remainder of the affine value.
    pub op: PinOp,
    /// Statements (`bool` conjuncts of the guard) that hold wherever the variable has its pinned value.
    pub holds: Vec<usize>,
}

/// How a `Pin`'s affine value becomes the variable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PinOp {
    /// Floor division by a positive divisor.
    Floor(i64),
    /// Euclidean remainder (in `0..m`) by a positive modulus.
    Mod(i64),
}

/// `(variable, coefficient)` pairs of an affine value.
type Terms = Vec<(u32, i64)>;

/// A linear form of the index variables: coefficient by variable (none zero), and a constant.
type Form = (BTreeMap<u32, i64>, i64);

/// Folds `map`'s statements with its variables' extents (`extents[v]`, at least 1), the bound symbols and
/// the shapes of the tensors it loads from.
pub fn fold(map: &MapOps, extents: &[usize], syms: &[i64], shapes: &[&[usize]]) -> Folded {
    fold_assuming(map, extents, syms, shapes, &[])
}

/// `fold`, with the `bool` statements `assumed` known true (the conjuncts a `Pin` makes hold, once its
/// variable is pinned), so what they guard folds too.
pub fn fold_assuming(map: &MapOps, extents: &[usize], syms: &[i64], shapes: &[&[usize]], assumed: &[usize]) -> Folded {
    let n = map.exprs.len();
    let mut known: Vec<Option<Lit>> = vec![None; n];
    let mut alias: Vec<usize> = (0..n).collect();
    let mut range: Vec<Option<(i64, i64)>> = vec![None; n];
    let mut fallible = vec![false; n];
    // Each i32 statement as a linear form of the variables, where it is one.
    let mut form: Vec<Option<Form>> = vec![None; n];
    let int = |v: i64| -> Option<(i64, i64)> { i32::try_from(v).ok().map(|_| (v, v)) };
    let fits = |(lo, hi): (i64, i64)| i32::try_from(lo).is_ok() && i32::try_from(hi).is_ok();
    for (s, node) in map.exprs.iter().enumerate() {
        let a = |r: &ScalarRef| alias.get(r.index()).copied().unwrap_or(s);
        let i32s = node.dtype == DType::I32;
        if node.dtype == DType::Bool
            && assumed.contains(&s)
            && node.expr.operands().iter().all(|o| !fallible.get(a(o)).copied().unwrap_or(true))
        {
            known[s] = Some(Lit::B(true));
            continue;
        }
        match &node.expr {
            ScalarOp::Load { default, .. } => fallible[s] = default.is_none(),
            ScalarOp::Var(v) if i32s => {
                range[s] = extents
                    .get(v.0 as usize)
                    .and_then(|&e| i64::try_from(e).ok())
                    .map(|e| (0, e - 1))
                    .filter(|&r| fits(r));
            }
            ScalarOp::Dim(dim) if i32s => {
                if let Some(v) = dim.eval_at(syms) {
                    range[s] = int(v);
                }
            }
            ScalarOp::Const(c) => {
                let lit = Lit::from_scalar(*c, node.dtype);
                if let Lit::I(v) = lit {
                    range[s] = Some((i64::from(v), i64::from(v)));
                }
                if matches!(lit, Lit::B(_)) {
                    known[s] = Some(lit);
                }
            }
            ScalarOp::Unary(_, x) | ScalarOp::Cast(x) => fallible[s] = fallible[a(x)],
            ScalarOp::Reduce { body, .. } => fallible[s] = fallible[a(body)],
            ScalarOp::Select { cond, on_true, on_false } => {
                let (c, t, f) = (a(cond), a(on_true), a(on_false));
                fallible[s] = fallible[c] || fallible[t] || fallible[f];
                // `g ? x : 0` where `x` loads with default 0 and `g` only repeats the load's own bounds: `x`.
                let zero = |r: usize| match &map.exprs[r].expr {
                    ScalarOp::Const(Scalar::Float(z)) => z.to_bits() == 0,
                    ScalarOp::Load { default: Some(Scalar::Float(z)), .. } => z.to_bits() == 0,
                    _ => false,
                };
                // The load `x` reads, when `x` is that load or `c ? x' : 0` of it (zero wherever the load is
                // outside).
                let zero_load = |mut x: usize| loop {
                    match &map.exprs[x].expr {
                        ScalarOp::Load { .. } if zero(x) => return Some(x),
                        ScalarOp::Select { on_true, on_false, .. }
                            if matches!(map.exprs[alias[on_false.index()]].expr, ScalarOp::Const(_))
                                && zero(alias[on_false.index()]) =>
                        {
                            x = alias[on_true.index()];
                        }
                        _ => return None,
                    }
                };
                let guarded_load = || {
                    node.dtype == DType::F32
                        && matches!(map.exprs[f].expr, ScalarOp::Const(_))
                        && zero(f)
                        && !fallible[c]
                        && zero_load(t).is_some_and(|load| {
                            let facts = Facts { known: &known, alias: &alias, range: &range, form: &form };
                            implied_by_load(map, c, load, syms, shapes, facts)
                        })
                };
                let pick = match known[c] {
                    Some(Lit::B(true)) if !fallible[f] => Some(t),
                    Some(Lit::B(false)) if !fallible[t] => Some(f),
                    _ if t == f && !fallible[c] => Some(t),
                    _ if guarded_load() => Some(t),
                    _ => None,
                };
                if let Some(p) = pick {
                    alias[s] = p;
                    (known[s], range[s], fallible[s]) = (known[p], range[p], fallible[p]);
                }
            }
            ScalarOp::Binary(op, x, y) => {
                let (x, y) = (a(x), a(y));
                fallible[s] = fallible[x] || fallible[y];
                let same = |o: usize| o < n && map.exprs[o].dtype == node.dtype;
                match binary(*op, node.dtype, (x, y), &known, &range, &fallible) {
                    Some(Fold::Alias(o)) if same(o) => {
                        alias[s] = o;
                        (known[s], range[s], fallible[s]) = (known[o], range[o], fallible[o]);
                    }
                    Some(Fold::Known(lit)) if !fallible[x] && !fallible[y] => {
                        known[s] = Some(lit);
                        if let Lit::I(v) = lit {
                            range[s] = Some((i64::from(v), i64::from(v)));
                        }
                    }
                    Some(Fold::Range(r)) if i32s && fits(r) => {
                        range[s] = Some(r);
                        if r.0 == r.1 && !fallible[x] && !fallible[y] {
                            known[s] = Some(Lit::I(r.0 as i32));
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        if i32s {
            form[s] = if alias[s] != s {
                form[alias[s]].clone()
            } else if let Some(v) = range[s].filter(|r| r.0 == r.1).map(|r| r.0) {
                Some((BTreeMap::new(), v))
            } else {
                linear(&node.expr, &alias, &form)
            };
        }
    }
    Folded { known, alias, range, form, fallible }
}

impl Folded {
    /// Statement `s` (an `i32`) as `offset + sum(coef * variable)`, when it is a linear form of the variables
    /// whose every step stays inside `i32` (so the form is its exact value): `(terms, offset)`.
    pub fn affine(&self, s: usize) -> Option<(Vec<(u32, i64)>, i64)> {
        let s = *self.alias.get(s)?;
        self.range.get(s).copied().flatten()?;
        let (vars, k) = self.form.get(s)?.as_ref()?;
        Some((vars.iter().map(|(&v, &c)| (v, c)).collect(), *k))
    }

    /// The reduction variables of `f32` sums that a guard pins: in `sum[v] g ? x : 0` (selects of `+0.0`,
    /// possibly nested, their conditions conjunctions), a conjunct of `g` that holds for at most one `v` in
    /// range, that one computed from the output variables (`0..rank`) and in range for every output element:
    /// - `(L ± v) % m == 0` where `v`'s extent is `m` (a strided pool's adjoint over window offsets): `v` is
    ///   `∓L mod m`;
    /// - `0 <= L + c*v < b` with `b <= |c|` (a strided pool's adjoint over pooled positions): `v` is
    ///   `floor(L / |c|)` for negative `c`, `ceil(-L / c)` for positive.
    ///
    /// The sum is then its one term: every other term is `+0.0`, and `0.0 + x` is what the whole sum adds up
    /// to, bit for bit. Sums whose body could fail to evaluate (a load without default) are left alone, as
    /// are variables that more than one reduction binds.
    pub fn pins(&self, map: &MapOps, extents: &[usize], syms: &[i64], rank: usize) -> Vec<Pin> {
        let mut bound: BTreeMap<u32, usize> = BTreeMap::new();
        for node in &map.exprs {
            if let ScalarOp::Reduce { vars, .. } = &node.expr {
                for v in vars {
                    *bound.entry(v.0).or_insert(0) += 1;
                }
            }
        }
        let mut pins = Vec::new();
        for node in &map.exprs {
            let ScalarOp::Reduce { op: ReduceOp::Sum, vars, body } = &node.expr else { continue };
            let body = self.alias[body.index()];
            if node.dtype != DType::F32 || self.fallible[body] {
                continue;
            }
            let (conjuncts, load) = self.guard_conjuncts(map, body);
            for v in vars.iter().map(|v| v.0) {
                if bound.get(&v) != Some(&1) {
                    continue;
                }
                let pin = self
                    .pin(map, &conjuncts, v, extents, rank)
                    .or_else(|| load.and_then(|l| divided_pin(map, l, v, extents, syms, rank)));
                pins.extend(pin);
            }
        }
        pins
    }

    /// The conjuncts of the conditions of the `c ? x : +0.0` selects from `body` down their true branches,
    /// and the load with default `+0.0` the last true branch is, if it is one.
    fn guard_conjuncts(&self, map: &MapOps, mut body: usize) -> (Vec<usize>, Option<usize>) {
        let zero = |r: &ScalarRef| matches!(map.exprs[self.alias[r.index()]].expr, ScalarOp::Const(Scalar::Float(z)) if z.to_bits() == 0);
        let mut conjuncts = Vec::new();
        while let ScalarOp::Select { cond, on_true, on_false } = &map.exprs[body].expr
            && map.exprs[body].dtype == DType::F32
            && zero(on_false)
        {
            let mut work = vec![self.alias[cond.index()]];
            while let Some(c) = work.pop() {
                match &map.exprs[c].expr {
                    ScalarOp::Binary(BinaryOp::And, a, b) => {
                        work.extend([self.alias[a.index()], self.alias[b.index()]])
                    }
                    _ => conjuncts.push(c),
                }
            }
            body = self.alias[on_true.index()];
        }
        let load =
            matches!(&map.exprs[body].expr, ScalarOp::Load { default: Some(Scalar::Float(z)), .. } if z.to_bits() == 0)
                .then_some(body);
        (conjuncts, load)
    }

    /// The pin of reduction variable `v` that one of `conjuncts` (or a pair, for the bounds) gives.
    fn pin(&self, map: &MapOps, conjuncts: &[usize], v: u32, extents: &[usize], rank: usize) -> Option<Pin> {
        let extent = i64::try_from(*extents.get(v as usize)?).ok()?;
        let single = |r: &ScalarRef| {
            let r = self.alias[r.index()];
            self.range[r].filter(|r| r.0 == r.1).map(|r| r.0)
        };
        // Statement `x` as `L + c*v` with `L` over output variables only: (`L`'s terms, its constant, `c`).
        let split = |x: &ScalarRef| -> Option<(Terms, i64, i64)> {
            let x = self.alias[x.index()];
            self.range[x]?;
            let (vars, k) = self.form[x].as_ref()?;
            let c = *vars.get(&v)?;
            let rest: Vec<(u32, i64)> = vars.iter().filter(|&(&u, _)| u != v).map(|(&u, &c)| (u, c)).collect();
            rest.iter().all(|&(u, _)| (u as usize) < rank).then_some((rest, *k, c))
        };
        // `L`'s interval over the output variables.
        let interval = |terms: &[(u32, i64)], k: i64| -> Option<(i64, i64)> {
            terms.iter().try_fold((k, k), |(lo, hi), &(u, c)| {
                let top = c.checked_mul(i64::try_from(*extents.get(u as usize)?).ok()? - 1)?;
                Some((lo.checked_add(top.min(0))?, hi.checked_add(top.max(0))?))
            })
        };
        let negate = |terms: &[(u32, i64)]| terms.iter().map(|&(u, c)| (u, -c)).collect::<Vec<_>>();
        let in_range = |pin: &Pin, (lo, hi): (i64, i64)| {
            // The pin is monotone in `L`: its ends are at `L`'s ends.
            [lo, hi].into_iter().all(|l| {
                let x = match pin.op {
                    PinOp::Floor(d) => l.div_euclid(d),
                    PinOp::Mod(_) => return true,
                };
                (0..extent).contains(&x)
            })
        };
        for &c in conjuncts {
            let ScalarOp::Binary(op, x, y) = &map.exprs[c].expr else { continue };
            match op {
                // `(L + c*v) % m == 0` with `c = ±1`: `v = (-c * L) mod m`, every value of `v` in range.
                BinaryOp::Eq if single(y) == Some(0) => {
                    let ScalarOp::Binary(BinaryOp::Rem, num, m) = &map.exprs[self.alias[x.index()]].expr else {
                        continue;
                    };
                    let (Some(m), Some((terms, k, cv))) = (single(m), split(num)) else { continue };
                    if m == extent
                        && let Some(pin) = mod_pin(v, terms, k, cv, m, vec![c])
                    {
                        return Some(pin);
                    }
                }
                // `L + c*v >= 0` with a matching `L + c*v < b`, `b <= |c|`.
                BinaryOp::Ge if single(y) == Some(0) => {
                    let Some((terms, k, cv)) = split(x) else { continue };
                    let form = &self.form[self.alias[x.index()]];
                    // The upper bounds `L + c*v < b` of the same value.
                    let uppers: Vec<(usize, i64)> = conjuncts
                        .iter()
                        .filter_map(|&u| match &map.exprs[u].expr {
                            ScalarOp::Binary(BinaryOp::Lt, a, b)
                                if &self.form[self.alias[a.index()]] == form
                                    && self.range[self.alias[a.index()]].is_some() =>
                            {
                                single(b).map(|b| (u, b))
                            }
                            _ => None,
                        })
                        .collect();
                    if !uppers.iter().any(|&(_, b)| b <= cv.abs()) {
                        continue;
                    }
                    // At the pin `0 <= L + c*v < |c|`: the lower bound holds, and each upper bound `b >= |c|`.
                    let holds: Vec<usize> = std::iter::once(c)
                        .chain(uppers.iter().filter(|&&(_, b)| b >= cv.abs()).map(|&(u, _)| u))
                        .collect();
                    let l = interval(&terms, k)?;
                    let pin = if cv < 0 {
                        // `0 <= L - |c| v < |c|`: `v = floor(L / |c|)`.
                        Pin { var: v, terms, offset: k, op: PinOp::Floor(-cv), holds }
                    } else {
                        // `0 <= L + c v < c`: `v = ceil(-L / c) = floor((c - 1 - L) / c)`.
                        Pin { var: v, terms: negate(&terms), offset: cv - 1 - k, op: PinOp::Floor(cv), holds }
                    };
                    let l = if cv < 0 { l } else { (cv - 1 - l.1, cv - 1 - l.0) };
                    if in_range(&pin, l) {
                        return Some(pin);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// The pin of reduction variable `v` that a divided index of `load` (default `+0.0`, so `+0.0` wherever the
/// division is inexact) gives: a numerator `L ± v` over a divisor `m` equal to `v`'s extent is exact for
/// `v = ∓L mod m` only.
fn divided_pin(map: &MapOps, load: usize, v: u32, extents: &[usize], syms: &[i64], rank: usize) -> Option<Pin> {
    let ScalarOp::Load { indices, .. } = &map.exprs[load].expr else { return None };
    let extent = i64::try_from(*extents.get(v as usize)?).ok()?;
    indices.iter().filter(|a| a.div > 1 && a.div == extent).find_map(|a| {
        let mut terms = Vec::new();
        let mut cv = 0;
        for (u, c) in &a.terms {
            let c = c.eval_at(syms)?;
            if u.0 == v {
                cv += c;
            } else if (u.0 as usize) < rank {
                terms.push((u.0, c));
            } else {
                return None;
            }
        }
        mod_pin(v, terms, a.offset.eval_at(syms)?, cv, a.div, Vec::new())
    })
}

/// The pin that `(L + c*v) % m == 0` gives for `c = ±1` (`L` = `terms` and `k`): `v = (-c * L) mod m`.
fn mod_pin(v: u32, terms: Terms, k: i64, c: i64, m: i64, holds: Vec<usize>) -> Option<Pin> {
    let (terms, offset) = match c {
        1 => (terms.into_iter().map(|(u, c)| (u, -c)).collect(), -k),
        -1 => (terms, k),
        _ => return None,
    };
    Some(Pin { var: v, terms, offset, op: PinOp::Mod(m), holds })
}

/// `expr` as a linear form from its operands' forms: a variable, a sum or difference, a product by a
/// constant.
fn linear(expr: &ScalarOp, alias: &[usize], form: &[Option<Form>]) -> Option<Form> {
    let f = |r: &ScalarRef| form.get(*alias.get(r.index())?).cloned().flatten();
    let combine = |(mut a, c): Form, (b, d): Form, sign: i64| -> Option<Form> {
        for (v, k) in b {
            let e = a.entry(v).or_insert(0);
            *e = e.checked_add(sign.checked_mul(k)?)?;
            if *e == 0 {
                a.remove(&v);
            }
        }
        Some((a, c.checked_add(sign.checked_mul(d)?)?))
    };
    match expr {
        ScalarOp::Var(v) => Some((BTreeMap::from([(v.0, 1)]), 0)),
        ScalarOp::Binary(BinaryOp::Add, x, y) => combine(f(x)?, f(y)?, 1),
        ScalarOp::Binary(BinaryOp::Sub, x, y) => combine(f(x)?, f(y)?, -1),
        ScalarOp::Binary(BinaryOp::Mul, x, y) => {
            let (a, b) = (f(x)?, f(y)?);
            let ((vars, c), k) = if b.0.is_empty() {
                (a, b.1)
            } else if a.0.is_empty() {
                (b, a.1)
            } else {
                return None;
            };
            let vars =
                vars.into_iter().map(|(v, m)| Some((v, m.checked_mul(k)?))).collect::<Option<BTreeMap<_, _>>>()?;
            Some((vars.into_iter().filter(|&(_, m)| m != 0).collect(), c.checked_mul(k)?))
        }
        _ => None,
    }
}

/// What folding knows of the statements so far (`fold`'s tables).
struct Facts<'a> {
    known: &'a [Option<Lit>],
    alias: &'a [usize],
    range: &'a [Option<(i64, i64)>],
    form: &'a [Option<Form>],
}

/// Whether `cond` (a conjunction) holds wherever load `load` is inside its input: each conjunct is decided
/// true, or bounds one of the load's undivided indices as the load itself does (`i >= 0`, `i < len`).
fn implied_by_load(map: &MapOps, cond: usize, load: usize, syms: &[i64], shapes: &[&[usize]], facts: Facts) -> bool {
    let Facts { known, alias, range, form } = facts;
    let ScalarOp::Load { input, indices, .. } = &map.exprs[load].expr else { return false };
    let Some(shape) = shapes.get(*input) else { return false };
    // The load's indices as forms of their numerators, with each axis' end (length x divisor) and divisor:
    // the load is inside where every numerator is at least 0, a multiple of its divisor and below its end.
    let axes: Vec<(Form, i64, i64)> = indices
        .iter()
        .zip(shape.iter())
        .filter_map(|(a, &len)| {
            let mut vars = BTreeMap::new();
            for (v, c) in &a.terms {
                let c = c.eval_at(syms)?;
                if c != 0 {
                    *vars.entry(v.0).or_insert(0) += c;
                }
            }
            vars.retain(|_, c| *c != 0);
            let div = a.div.max(1);
            Some(((vars, a.offset.eval_at(syms)?), i64::try_from(len).ok()?.checked_mul(div)?, div))
        })
        .collect();
    let single = |r: usize| range.get(r).copied().flatten().filter(|r| r.0 == r.1).map(|r| r.0);
    let mut work = vec![cond];
    while let Some(c) = work.pop() {
        let c = alias[c];
        if known[c] == Some(Lit::B(true)) {
            continue;
        }
        let ScalarOp::Binary(op, x, y) = &map.exprs[c].expr else { return false };
        let (x, y) = (alias[x.index()], alias[y.index()]);
        // Whether statement `x` is the numerator of an axis that `test` (of its end and divisor) accepts.
        let numerator = |x: usize, test: &dyn Fn(i64, i64) -> bool| {
            range[x].is_some()
                && form[x].as_ref().is_some_and(|f| axes.iter().any(|(a, end, div)| a == f && test(*end, *div)))
        };
        let ok = match op {
            BinaryOp::And => {
                work.extend([x, y]);
                true
            }
            BinaryOp::Ge => single(y) == Some(0) && numerator(x, &|_, _| true),
            BinaryOp::Lt => single(y).is_some_and(|b| numerator(x, &|end, _| b == end)),
            // `num % div == 0`.
            BinaryOp::Eq if single(y) == Some(0) => match &map.exprs[x].expr {
                ScalarOp::Binary(BinaryOp::Rem, num, d) => {
                    let (num, d) = (alias[num.index()], alias[d.index()]);
                    single(d).is_some_and(|d| numerator(num, &|_, div| div == d))
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// What a binary statement folds to.
enum Fold {
    Alias(usize),
    Known(Lit),
    Range((i64, i64)),
}

/// Folds `x op y` from its operands' known values and ranges.
fn binary(
    op: BinaryOp,
    dtype: DType,
    (x, y): (usize, usize),
    known: &[Option<Lit>],
    range: &[Option<(i64, i64)>],
    fallible: &[bool],
) -> Option<Fold> {
    let is_int = |o: usize, v: i32| {
        matches!(known[o], Some(Lit::I(k)) if k == v) || range[o] == Some((i64::from(v), i64::from(v)))
    };
    let b = |o: usize| match known[o] {
        Some(Lit::B(v)) => Some(v),
        _ => None,
    };
    match op {
        BinaryOp::And | BinaryOp::Or if dtype == DType::Bool => {
            let absorbing = op == BinaryOp::Or;
            match (b(x), b(y)) {
                (Some(v), _) if v != absorbing => Some(Fold::Alias(y)),
                (_, Some(v)) if v != absorbing => Some(Fold::Alias(x)),
                (Some(_), _) if !fallible[y] => Some(Fold::Known(Lit::B(absorbing))),
                (_, Some(_)) if !fallible[x] => Some(Fold::Known(Lit::B(absorbing))),
                _ => None,
            }
        }
        _ if dtype == DType::I32 && matches!(op, BinaryOp::Add) && is_int(y, 0) => Some(Fold::Alias(x)),
        _ if dtype == DType::I32 && matches!(op, BinaryOp::Add) && is_int(x, 0) => Some(Fold::Alias(y)),
        _ if dtype == DType::I32 && matches!(op, BinaryOp::Sub) && is_int(y, 0) => Some(Fold::Alias(x)),
        _ if dtype == DType::I32 && matches!(op, BinaryOp::Mul) && is_int(y, 1) => Some(Fold::Alias(x)),
        _ if dtype == DType::I32 && matches!(op, BinaryOp::Mul) && is_int(x, 1) => Some(Fold::Alias(y)),
        _ => {
            let ((xl, xh), (yl, yh)) = (range[x]?, range[y]?);
            let decided = |v: Option<bool>| v.map(|v| Fold::Known(Lit::B(v)));
            match op {
                BinaryOp::Add => Some(Fold::Range((xl + yl, xh + yh))),
                BinaryOp::Sub => Some(Fold::Range((xl - yh, xh - yl))),
                BinaryOp::Mul => {
                    let p = [xl * yl, xl * yh, xh * yl, xh * yh];
                    Some(Fold::Range((*p.iter().min()?, *p.iter().max()?)))
                }
                BinaryOp::Min => Some(Fold::Range((xl.min(yl), xh.min(yh)))),
                BinaryOp::Max => Some(Fold::Range((xl.max(yl), xh.max(yh)))),
                // Truncating division and remainder by a positive constant of a non-negative value.
                BinaryOp::Div if yl == yh && yl > 0 && xl >= 0 => Some(Fold::Range((xl / yl, xh / yl))),
                BinaryOp::Rem if yl == yh && yl > 0 && xl >= 0 => {
                    if xh < yl {
                        Some(Fold::Alias(x))
                    } else {
                        Some(Fold::Range((0, xh.min(yl - 1))))
                    }
                }
                BinaryOp::Lt => decided(if xh < yl { Some(true) } else { (xl >= yh).then_some(false) }),
                BinaryOp::Le => decided(if xh <= yl { Some(true) } else { (xl > yh).then_some(false) }),
                BinaryOp::Gt => decided(if xl > yh { Some(true) } else { (xh <= yl).then_some(false) }),
                BinaryOp::Ge => decided(if xl >= yh { Some(true) } else { (xh < yl).then_some(false) }),
                BinaryOp::Eq | BinaryOp::Ne => {
                    let eq = if xh < yl || yh < xl {
                        Some(false)
                    } else {
                        (xl == xh && yl == yh && xl == yl).then_some(true)
                    };
                    decided(eq.map(|e| e == (op == BinaryOp::Eq)))
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dim::Dim;
    use crate::ops::{Affine, Scalar, VarId};
    use crate::program::ScalarNode;

    /// A body built statement by statement.
    struct Body(Vec<ScalarNode>);

    impl Body {
        fn push(&mut self, expr: ScalarOp, dtype: DType) -> ScalarRef {
            self.0.push(ScalarNode { expr, dtype });
            ScalarRef(self.0.len() as u32 - 1)
        }
        fn int(&mut self, v: i64) -> ScalarRef {
            self.push(ScalarOp::Dim(Dim::constant(v)), DType::I32)
        }
        fn var(&mut self, v: u32) -> ScalarRef {
            self.push(ScalarOp::Var(VarId(v)), DType::I32)
        }
        fn bin(&mut self, op: BinaryOp, a: ScalarRef, b: ScalarRef) -> ScalarRef {
            let dtype = if op.is_comparison() || matches!(op, BinaryOp::And | BinaryOp::Or) {
                DType::Bool
            } else {
                self.0[a.0 as usize].dtype
            };
            self.push(ScalarOp::Binary(op, a, b), dtype)
        }
        fn load(&mut self, default: Option<f64>) -> ScalarRef {
            self.load_at(&[(0, 1)], 0, 1, default)
        }
        /// An f32 load of input 0 at `(offset + sum(coef * v)) / div`.
        fn load_at(&mut self, terms: &[(u32, i64)], offset: i64, div: i64, default: Option<f64>) -> ScalarRef {
            let terms = terms.iter().map(|&(v, c)| (VarId(v), Dim::constant(c))).collect();
            let index = Affine { terms, offset: Dim::constant(offset), div };
            self.push(
                ScalarOp::Load { input: 0, indices: vec![index], default: default.map(Scalar::Float) },
                DType::F32,
            )
        }
        fn map(self, body: ScalarRef) -> MapOps {
            MapOps { inputs: vec![], extents: vec![], exprs: self.0, body }
        }
    }

    /// A gradient's guard on `v0 < 8` and `v1 < 3`: `0 + v0 in [0, 8)` is decided true, `v0 - v1 >= 0` is
    /// not; `0 + v0` and `x * 1` read their operand; the select on the decided part reads its branch.
    #[test]
    fn ranges_decide_the_guards_they_can_and_no_others() {
        let mut b = Body(Vec::new());
        let (zero, one, eight) = (b.int(0), b.int(1), b.int(8));
        let v0 = b.var(0);
        let v1 = b.var(1);
        let i = b.bin(BinaryOp::Add, zero, v0);
        let lo = b.bin(BinaryOp::Ge, i, zero);
        let hi = b.bin(BinaryOp::Lt, i, eight);
        let both = b.bin(BinaryOp::And, lo, hi);
        let scaled = b.bin(BinaryOp::Mul, v1, one);
        let d = b.bin(BinaryOp::Sub, i, scaled);
        let open = b.bin(BinaryOp::Ge, d, zero);
        let guard = b.bin(BinaryOp::And, both, open);
        let x = b.load(Some(0.0));
        let y = b.load(None);
        // x loads with a default (cannot fail), y without (can).
        let keep = b.push(ScalarOp::Select { cond: both, on_true: x, on_false: y }, DType::F32);
        let pick = b.push(ScalarOp::Select { cond: both, on_true: y, on_false: x }, DType::F32);
        let rem = b.bin(BinaryOp::Rem, v1, eight);
        let map = b.map(guard);
        let folded = fold(&map, &[8, 3], &[], &[&[8]]);
        let at = |r: ScalarRef| r.0 as usize;
        assert_eq!(folded.alias[at(i)], at(v0));
        for decided in [lo, hi, both] {
            assert_eq!(folded.known[folded.alias[at(decided)]], Some(Lit::B(true)), "s{}", decided.0);
        }
        assert_eq!(folded.alias[at(scaled)], at(v1));
        assert_eq!(folded.known[at(open)], None, "v0 - v1 may be negative");
        assert_eq!(folded.alias[at(guard)], at(open));
        assert_eq!(folded.alias[at(pick)], at(y), "the untaken branch cannot fail: dropped");
        assert_eq!(folded.alias[at(keep)], at(keep), "the untaken branch is a load that can fail: kept");
        assert_eq!(folded.alias[at(rem)], at(v1), "v1 < 3 < 8");
    }

    /// `g ? x[v0 + v1 - 1] : 0` with `x` loading 0 out of range and `g` exactly its bounds (what a
    /// convolution's input-gradient factor carries) is the load; a guard tighter than the bounds, or another
    /// value off the guard, is not.
    #[test]
    fn a_guard_repeating_a_loads_bounds_is_the_load() {
        for (upper, off_value, folds) in [(8, 0.0, true), (7, 0.0, false), (8, 1.0, false)] {
            let mut b = Body(Vec::new());
            let (zero, one, up) = (b.int(0), b.int(1), b.int(upper));
            let v0 = b.var(0);
            let v1 = b.var(1);
            let sum = b.bin(BinaryOp::Add, v0, v1);
            let i = b.bin(BinaryOp::Sub, sum, one);
            let lo = b.bin(BinaryOp::Ge, i, zero);
            let hi = b.bin(BinaryOp::Lt, i, up);
            let g = b.bin(BinaryOp::And, lo, hi);
            let x = b.load_at(&[(0, 1), (1, 1)], -1, 1, Some(0.0));
            let off = b.push(ScalarOp::Const(Scalar::Float(off_value)), DType::F32);
            let sel = b.push(ScalarOp::Select { cond: g, on_true: x, on_false: off }, DType::F32);
            let map = b.map(sel);
            let folded = fold(&map, &[8, 3], &[], &[&[8]]);
            let want = if folds { x.0 as usize } else { sel.0 as usize };
            assert_eq!(folded.alias[sel.0 as usize], want, "upper {upper}, off the guard {off_value}");
        }
    }

    /// A strided read's adjoint: `g ? (c ? x[(v0 - v1) / 2] : 0) : 0` where `g` is `v0 - v1 >= 0` and
    /// `(v0 - v1) % 2 == 0`, exactly where the divided load is inside, is the inner select; with the
    /// divisor 3 in the guard it is not.
    #[test]
    fn a_guard_repeating_a_divided_loads_bounds_folds() {
        for (modulus, folds) in [(2, true), (3, false)] {
            let mut b = Body(Vec::new());
            let (zero, m) = (b.int(0), b.int(modulus));
            let v0 = b.var(0);
            let v1 = b.var(1);
            let num = b.bin(BinaryOp::Sub, v0, v1);
            let lo = b.bin(BinaryOp::Ge, num, zero);
            let rem = b.bin(BinaryOp::Rem, num, m);
            let exact = b.bin(BinaryOp::Eq, rem, zero);
            let g = b.bin(BinaryOp::And, lo, exact);
            let x = b.load_at(&[(0, 1), (1, -1)], 0, 2, Some(0.0));
            let other = b.var(1);
            let c = b.bin(BinaryOp::Eq, other, zero);
            let off = b.push(ScalarOp::Const(Scalar::Float(0.0)), DType::F32);
            let inner = b.push(ScalarOp::Select { cond: c, on_true: x, on_false: off }, DType::F32);
            let outer = b.push(ScalarOp::Select { cond: g, on_true: inner, on_false: off }, DType::F32);
            let map = b.map(outer);
            let folded = fold(&map, &[8, 2], &[], &[&[4]]);
            let want = if folds { inner.0 as usize } else { outer.0 as usize };
            assert_eq!(folded.alias[outer.0 as usize], want, "modulus {modulus}");
        }
    }

    /// Intervals never assume away a wrap: `v0 * 2^30` for `v0 < 4` leaves `i32` and decides nothing.
    #[test]
    fn wrapping_arithmetic_decides_nothing() {
        let mut b = Body(Vec::new());
        let big = b.int(1 << 30);
        let zero = b.int(0);
        let v0 = b.var(0);
        let p = b.bin(BinaryOp::Mul, v0, big);
        let ge = b.bin(BinaryOp::Ge, p, zero);
        let map = b.map(ge);
        let folded = fold(&map, &[4], &[], &[]);
        assert_eq!(folded.known[ge.0 as usize], None);
    }
}
