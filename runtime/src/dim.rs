//! Symbolic dimensions: integer polynomials over named symbols, with floor division by constants as an atom.
//!
//! Every `Dim` is kept in one canonical form (sorted terms, no zero coefficients, constants folded, floor
//! divisions simplified), so structural equality is semantic equality for everything the language can write:
//! `S*2`, `2*S` and `S+S` are the same `Dim`. `is_nonneg` is a sound (never wrong, sometimes unsure) prover
//! used by bounds checking; it relies on every symbol being at least 1 (spec R3.3).
//!
//! The one symbolic-dimension type of both crates: the compiler's IR types and the runtime's `Program`
//! (tensor shapes, uniform blocks, grids, bounds) hold the same `Dim`, so what the checker proved is what
//! the runtime evaluates, and both print it alike. Symbols are indices into the owner's symbol table.

use std::collections::BTreeMap;
use std::fmt;

/// A symbolic dimension's identity: an index into the owner's symbol table (`ir::Graph::symbols` in the
/// compiler, `Program::symbols` in the runtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymId(pub u32);

/// An indivisible factor of a term.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Atom {
    /// A symbol's value.
    Sym(SymId),
    /// `floor(numerator / divisor)` with `divisor >= 2`; the numerator has no constant term outside
    /// `0..divisor` and no term divisible by `divisor` (those are pulled out when it is built).
    FloorDiv(Box<Dim>, i64),
}

/// A product of atoms (sorted, repeated for powers); empty for the constant term.
type Monomial = Vec<Atom>;

/// A canonical integer polynomial over atoms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    /// Sorted by monomial; no zero coefficients.
    terms: Vec<(Monomial, i64)>,
}

/// Why a dimension computation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DimError {
    /// A coefficient or constant left the 64-bit range.
    #[error("dimension arithmetic overflows 64-bit integers")]
    Overflow,
    /// A division by the constant 0.
    #[error("division by zero")]
    DivisionByZero,
    /// A division by a negative constant.
    #[error("division by a negative number")]
    NegativeDivisor,
    /// A division by a symbolic dimension that is not exact.
    #[error("division by a symbolic dimension that does not divide the numerator exactly")]
    SymbolicDivisor,
}

impl Dim {
    /// The constant `value`.
    pub fn constant(value: i64) -> Dim {
        Dim::from_terms(BTreeMap::from([(Vec::new(), value as i128)])).expect("a constant fits")
    }

    /// The bare symbol `id`.
    pub fn sym(id: SymId) -> Dim {
        Dim { terms: vec![(vec![Atom::Sym(id)], 1)] }
    }

    fn from_terms(map: BTreeMap<Monomial, i128>) -> Result<Dim, DimError> {
        let mut terms = Vec::with_capacity(map.len());
        for (mono, coef) in map {
            if coef != 0 {
                terms.push((mono, i64::try_from(coef).map_err(|_| DimError::Overflow)?));
            }
        }
        Ok(Dim { terms })
    }

    fn term_map(&self) -> BTreeMap<Monomial, i128> {
        self.terms.iter().map(|(m, c)| (m.clone(), *c as i128)).collect()
    }

    /// The value when it does not depend on any symbol.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.as_slice() {
            [] => Some(0),
            [(mono, c)] if mono.is_empty() => Some(*c),
            _ => None,
        }
    }

    /// The single symbol this dimension is, if it is exactly one symbol.
    pub fn as_sym(&self) -> Option<SymId> {
        match self.terms.as_slice() {
            [(mono, 1)] => match mono.as_slice() {
                [Atom::Sym(id)] => Some(*id),
                _ => None,
            },
            _ => None,
        }
    }

    /// The canonical terms, `coefficient * product(atoms)` each, for consumers that lower a `Dim` to another
    /// representation (codegen turns them into shader arithmetic). Read-only: the canonical form stays here.
    pub fn terms(&self) -> impl Iterator<Item = (&[Atom], i64)> {
        self.terms.iter().map(|(mono, coef)| (mono.as_slice(), *coef))
    }

    /// Every symbol this dimension mentions, sorted and deduplicated.
    pub fn symbols(&self) -> Vec<SymId> {
        let mut out = Vec::new();
        self.collect_symbols(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_symbols(&self, out: &mut Vec<SymId>) {
        for (mono, _) in &self.terms {
            for atom in mono {
                match atom {
                    Atom::Sym(id) => out.push(*id),
                    Atom::FloorDiv(num, _) => num.collect_symbols(out),
                }
            }
        }
    }

    /// `self + other`.
    pub fn add(&self, other: &Dim) -> Result<Dim, DimError> {
        let mut map = self.term_map();
        for (mono, coef) in &other.terms {
            *map.entry(mono.clone()).or_insert(0) += *coef as i128;
        }
        Dim::from_terms(map)
    }

    /// `-self`.
    pub fn neg(&self) -> Result<Dim, DimError> {
        self.scale(-1)
    }

    /// `self - other`.
    pub fn sub(&self, other: &Dim) -> Result<Dim, DimError> {
        self.add(&other.neg()?)
    }

    /// `k * self`.
    pub fn scale(&self, k: i64) -> Result<Dim, DimError> {
        let map = self.terms.iter().map(|(m, c)| (m.clone(), *c as i128 * k as i128)).collect();
        Dim::from_terms(map)
    }

    /// `self * other`.
    pub fn mul(&self, other: &Dim) -> Result<Dim, DimError> {
        let mut map: BTreeMap<Monomial, i128> = BTreeMap::new();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &other.terms {
                let mut mono = ma.clone();
                mono.extend(mb.iter().cloned());
                mono.sort();
                let coef = (*ca as i128).checked_mul(*cb as i128).ok_or(DimError::Overflow)?;
                let slot = map.entry(mono).or_insert(0);
                *slot = slot.checked_add(coef).ok_or(DimError::Overflow)?;
            }
        }
        Dim::from_terms(map)
    }

    /// Division as the language defines it (R3.2): exact when the divisor divides every term, floor
    /// division by a positive constant otherwise; a symbolic divisor must divide exactly.
    pub fn div(&self, divisor: &Dim) -> Result<Dim, DimError> {
        if let Some(c) = divisor.as_const() {
            return self.div_const(c);
        }
        // A single-term symbolic divisor that divides every term exactly.
        let [(dmono, dcoef)] = divisor.terms.as_slice() else {
            return Err(DimError::SymbolicDivisor);
        };
        let mut map = BTreeMap::new();
        for (mono, coef) in &self.terms {
            if coef % dcoef != 0 {
                return Err(DimError::SymbolicDivisor);
            }
            let mut rest = mono.clone();
            for atom in dmono {
                let pos = rest.iter().position(|a| a == atom).ok_or(DimError::SymbolicDivisor)?;
                rest.remove(pos);
            }
            map.insert(rest, (coef / dcoef) as i128);
        }
        Dim::from_terms(map)
    }

    fn div_const(&self, c: i64) -> Result<Dim, DimError> {
        match c {
            0 => return Err(DimError::DivisionByZero),
            c if c < 0 => return Err(DimError::NegativeDivisor),
            1 => return Ok(self.clone()),
            _ => {}
        }
        // floor((c*A + B + k) / c) = A + q + floor((B + r) / c) where k = q*c + r, 0 <= r < c.
        let mut quotient: BTreeMap<Monomial, i128> = BTreeMap::new();
        let mut rest: BTreeMap<Monomial, i128> = BTreeMap::new();
        for (mono, coef) in &self.terms {
            let coef = *coef as i128;
            let c = c as i128;
            if mono.is_empty() {
                quotient.insert(Vec::new(), coef.div_euclid(c));
                if coef.rem_euclid(c) != 0 {
                    rest.insert(Vec::new(), coef.rem_euclid(c));
                }
            } else if coef % c == 0 {
                quotient.insert(mono.clone(), coef / c);
            } else {
                rest.insert(mono.clone(), coef);
            }
        }
        let only_constant_rest = rest.keys().all(|m| m.is_empty());
        if !only_constant_rest {
            let numerator = Dim::from_terms(rest)?;
            *quotient.entry(vec![Atom::FloorDiv(Box::new(numerator), c)]).or_insert(0) += 1;
        }
        // A constant remainder in 0..c contributes floor(r / c) = 0.
        Dim::from_terms(quotient)
    }

    /// The value with every symbol given by `env`; `None` on overflow or division by zero.
    pub fn eval(&self, env: &dyn Fn(SymId) -> i64) -> Option<i64> {
        self.eval_with(&|id| Some(env(id)))
    }

    /// The value with symbol `i` = `values[i]`; `None` on overflow or a symbol past the end of `values`.
    pub fn eval_at(&self, values: &[i64]) -> Option<i64> {
        self.eval_with(&|id| values.get(id.0 as usize).copied())
    }

    /// The one evaluator behind `eval` and `eval_at`: `None` when `env` has no value for a symbol, on
    /// overflow, or (never, by construction) a division by less than 1. Also evaluates with only some
    /// symbols known (`None` unless every symbol the dimension uses is).
    pub fn eval_with(&self, env: &dyn Fn(SymId) -> Option<i64>) -> Option<i64> {
        let mut total: i64 = 0;
        for (mono, coef) in &self.terms {
            let mut value = *coef;
            for atom in mono {
                let factor = match atom {
                    Atom::Sym(id) => env(*id)?,
                    Atom::FloorDiv(num, d) => num.eval_with(env)?.div_euclid(*d),
                };
                value = value.checked_mul(factor)?;
            }
            total = total.checked_add(value)?;
        }
        Some(total)
    }

    /// Human-readable form with symbol `i` named `names[i]` (`?i` past the end).
    pub fn named<'a>(&'a self, names: &'a [String]) -> impl fmt::Display + 'a {
        NamedDim { dim: self, names }
    }

    /// Replaces symbols by dimensions (used when a function's signature binds its names).
    pub fn substitute(&self, map: &dyn Fn(SymId) -> Option<Dim>) -> Result<Dim, DimError> {
        let mut total = Dim::constant(0);
        for (mono, coef) in &self.terms {
            let mut value = Dim::constant(*coef);
            for atom in mono {
                let factor = match atom {
                    Atom::Sym(id) => map(*id).unwrap_or_else(|| Dim::sym(*id)),
                    Atom::FloorDiv(num, d) => num.substitute(map)?.div_const(*d)?,
                };
                value = value.mul(&factor)?;
            }
            total = total.add(&value)?;
        }
        Ok(total)
    }

    /// True when `self >= 0` is proven for every assignment of symbols to integers >= 1. `false` means
    /// "not proven", not "negative".
    pub fn is_nonneg(&self) -> bool {
        self.is_nonneg_depth(0)
    }

    fn is_nonneg_depth(&self, depth: usize) -> bool {
        if depth > 8 {
            return false;
        }
        // Eliminate one floor atom that occurs linearly, using c*F in [P - c + 1, P] and multiplying the
        // whole inequality by c > 0.
        for (mono, coef) in &self.terms {
            if let [Atom::FloorDiv(num, c)] = mono.as_slice() {
                let a = *coef;
                let Ok(rest) = self.sub(&Dim { terms: vec![(mono.clone(), a)] }) else { return false };
                let Ok(scaled_rest) = rest.scale(*c) else { return false };
                let bound =
                    if a > 0 { num.sub(&Dim::constant(c - 1)).and_then(|lower| lower.scale(a)) } else { num.scale(a) };
                let Ok(next) = bound.and_then(|b| b.add(&scaled_rest)) else { return false };
                return next.is_nonneg_depth(depth + 1);
            }
        }
        if self.terms.iter().any(|(m, _)| m.iter().any(|a| matches!(a, Atom::FloorDiv(..)))) {
            return false;
        }
        // A polynomial in symbols >= 1: substitute s = 1 + t with t >= 0 and require every coefficient of
        // the expansion to be non-negative.
        let mut expanded: BTreeMap<Vec<SymId>, i128> = BTreeMap::new();
        for (mono, coef) in &self.terms {
            let syms: Vec<SymId> = mono
                .iter()
                .map(|a| match a {
                    Atom::Sym(id) => *id,
                    Atom::FloorDiv(..) => unreachable!("floor atoms were excluded above"),
                })
                .collect();
            // (1 + t_1)(1 + t_2)...: every subset of the factors.
            if syms.len() > 16 {
                return false;
            }
            for mask in 0u32..(1 << syms.len()) {
                let mut picked: Vec<SymId> =
                    syms.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, s)| *s).collect();
                picked.sort();
                *expanded.entry(picked).or_insert(0) += *coef as i128;
            }
        }
        expanded.values().all(|c| *c >= 0)
    }

    /// Human-readable form with symbol names from `names`.
    pub fn display<'a>(&'a self, names: &'a dyn Fn(SymId) -> String) -> DimDisplay<'a> {
        DimDisplay { dim: self, names }
    }
}

struct NamedDim<'a> {
    dim: &'a Dim,
    names: &'a [String],
}

impl fmt::Display for NamedDim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |id: SymId| self.names.get(id.0 as usize).cloned().unwrap_or_else(|| format!("?{}", id.0));
        self.dim.display(&name).fmt(f)
    }
}

/// Formats a `Dim` with symbol names; terms of higher degree first, the constant last: `2*B*S - H + 1`.
pub struct DimDisplay<'a> {
    dim: &'a Dim,
    names: &'a dyn Fn(SymId) -> String,
}

impl fmt::Display for DimDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut terms: Vec<&(Monomial, i64)> = self.dim.terms.iter().collect();
        terms.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        if terms.is_empty() {
            return f.write_str("0");
        }
        for (i, (mono, coef)) in terms.iter().enumerate() {
            let magnitude = coef.unsigned_abs();
            if i == 0 {
                if *coef < 0 {
                    f.write_str("-")?;
                }
            } else if *coef < 0 {
                f.write_str(" - ")?;
            } else {
                f.write_str(" + ")?;
            }
            let factors: Vec<String> = mono
                .iter()
                .map(|atom| match atom {
                    Atom::Sym(id) => (self.names)(*id),
                    Atom::FloorDiv(num, d) => {
                        let inner = num.display(self.names).to_string();
                        if num.terms.len() > 1 { format!("({inner}) / {d}") } else { format!("{inner} / {d}") }
                    }
                })
                .collect();
            let floor_in_product = factors.len() > 1 || magnitude != 1;
            let factors: Vec<String> = factors
                .into_iter()
                .zip(mono.iter())
                .map(|(s, atom)| match atom {
                    Atom::FloorDiv(..) if floor_in_product => format!("({s})"),
                    _ => s,
                })
                .collect();
            match (magnitude, factors.is_empty()) {
                (m, true) => write!(f, "{m}")?,
                (1, false) => f.write_str(&factors.join("*"))?,
                (m, false) => write!(f, "{m}*{}", factors.join("*"))?,
            }
        }
        Ok(())
    }
}

/// A `Dim` in a bundle's ops (`program::GroupOps`): its terms as `[coefficient, [factors]]`, each factor a
/// symbol by index or a floor division. Decoding rebuilds the value through `Dim`'s own arithmetic, so it is
/// canonical whatever was written; `Program::validate` checks the symbol indices.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum FactorForm {
    Sym(u32),
    FloorDiv { of: Vec<(i64, Vec<FactorForm>)>, by: i64 },
}

/// Floor divisions nested deeper than this are refused when decoding (no program writes more than a few).
const MAX_SERDE_DEPTH: usize = 32;

fn to_form(dim: &Dim) -> Vec<(i64, Vec<FactorForm>)> {
    dim.terms()
        .map(|(atoms, coef)| {
            let factors = atoms
                .iter()
                .map(|atom| match atom {
                    Atom::Sym(s) => FactorForm::Sym(s.0),
                    Atom::FloorDiv(of, by) => FactorForm::FloorDiv { of: to_form(of), by: *by },
                })
                .collect();
            (coef, factors)
        })
        .collect()
}

fn from_form(form: &[(i64, Vec<FactorForm>)], depth: usize) -> Result<Dim, String> {
    if depth > MAX_SERDE_DEPTH {
        return Err(format!("floor divisions nest deeper than {MAX_SERDE_DEPTH}"));
    }
    let mut total = Dim::constant(0);
    for (coef, factors) in form {
        let mut term = Dim::constant(*coef);
        for factor in factors {
            let value = match factor {
                FactorForm::Sym(id) => Dim::sym(SymId(*id)),
                FactorForm::FloorDiv { of, by } => {
                    if *by < 1 {
                        return Err(format!("a floor division by {by}; a divisor must be at least 1"));
                    }
                    from_form(of, depth + 1)?.div(&Dim::constant(*by)).map_err(|e| e.to_string())?
                }
            };
            term = term.mul(&value).map_err(|e| e.to_string())?;
        }
        total = total.add(&term).map_err(|e| e.to_string())?;
    }
    Ok(total)
}

impl serde::Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&to_form(self), s)
    }
}

impl<'de> serde::Deserialize<'de> for Dim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dim, D::Error> {
        let form: Vec<(i64, Vec<FactorForm>)> = serde::Deserialize::deserialize(d)?;
        from_form(&form, 0).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(i: u32) -> Dim {
        Dim::sym(SymId(i))
    }
    fn c(v: i64) -> Dim {
        Dim::constant(v)
    }
    fn show(d: &Dim) -> String {
        let names = |id: SymId| ["B", "S", "H", "R"][id.0 as usize].to_string();
        d.display(&names).to_string()
    }

    #[test]
    fn canonical_forms_agree() {
        assert_eq!(s(1).scale(2).unwrap(), c(2).mul(&s(1)).unwrap());
        assert_eq!(s(1).add(&s(1)).unwrap(), s(1).scale(2).unwrap());
        assert_eq!(s(2).sub(&s(3)).unwrap().add(&c(1)).unwrap(), c(1).sub(&s(3)).unwrap().add(&s(2)).unwrap());
        assert_eq!(show(&s(2).sub(&s(3)).unwrap().add(&c(1)).unwrap()), "H - R + 1");
        assert_eq!(show(&s(0).mul(&s(1)).unwrap().scale(2).unwrap()), "2*B*S");
    }

    #[test]
    fn division() {
        assert_eq!(c(384).div(&c(12)).unwrap(), c(32));
        assert_eq!(c(7).div(&c(2)).unwrap(), c(3));
        assert_eq!(s(1).scale(4).unwrap().div(&c(2)).unwrap(), s(1).scale(2).unwrap());
        assert_eq!(s(0).mul(&s(1)).unwrap().div(&s(0)).unwrap(), s(1));
        assert_eq!(s(0).div(&s(1)), Err(DimError::SymbolicDivisor));
        assert_eq!(s(0).div(&c(0)), Err(DimError::DivisionByZero));
        // (H + 3) / 2 = 1 + (H + 1) / 2
        let d = s(2).add(&c(3)).unwrap().div(&c(2)).unwrap();
        assert_eq!(show(&d), "(H + 1) / 2 + 1");
        let env = |_: SymId| 6;
        assert_eq!(d.eval(&env), Some(4));
    }

    #[test]
    fn prover() {
        // H - 1 >= 0, but not H - 2.
        assert!(s(2).sub(&c(1)).unwrap().is_nonneg());
        assert!(!s(2).sub(&c(2)).unwrap().is_nonneg());
        // B*S - B >= 0
        assert!(s(0).mul(&s(1)).unwrap().sub(&s(0)).unwrap().is_nonneg());
        // H - 2*floor(H/2) >= 0
        let half = s(2).div(&c(2)).unwrap();
        assert!(s(2).sub(&half.scale(2).unwrap()).unwrap().is_nonneg());
        // 2*floor(H/2) - H >= 0 is false for odd H: must not be proven.
        assert!(!half.scale(2).unwrap().sub(&s(2)).unwrap().is_nonneg());
        // H - R >= 0 is unknown.
        assert!(!s(2).sub(&s(3)).unwrap().is_nonneg());
    }

    /// Every way a `Dim` prints (signs, coefficients, degrees, nested floor divisions) prints the same by
    /// symbol table (`named`, the runtime's messages) as by closure (the compiler's), and evaluates alike.
    #[test]
    fn named_and_indexed_forms_agree() {
        let names = ["B", "S", "H"].map(String::from);
        let b_s = s(0).mul(&s(1)).unwrap();
        let halves = s(1).sub(&c(1)).unwrap().div(&c(2)).unwrap();
        let dims = [
            c(0),
            c(7),
            c(-3),
            s(1),
            s(1).scale(2).unwrap(),
            s(1).neg().unwrap(),
            c(1).sub(&s(2)).unwrap(),
            s(2).sub(&s(1)).unwrap().add(&c(1)).unwrap(),
            b_s.scale(2).unwrap().sub(&s(2)).unwrap(),
            b_s.mul(&s(1)).unwrap().add(&s(0)).unwrap(),
            halves.clone(),
            s(1).div(&c(2)).unwrap(),
            halves.scale(3).unwrap(),
            halves.mul(&s(0)).unwrap().add(&c(5)).unwrap(),
            halves.add(&s(2)).unwrap().div(&c(3)).unwrap().sub(&s(0)).unwrap(),
            s(0).mul(&s(2)).unwrap().add(&s(1)).unwrap().div(&c(4)).unwrap(),
        ];
        let values = [3i64, 8, 5];
        for dim in &dims {
            let by_id = |id: SymId| names[id.0 as usize].clone();
            assert_eq!(dim.named(&names).to_string(), dim.display(&by_id).to_string(), "{dim:?}");
            assert_eq!(dim.eval_at(&values), dim.eval(&|id: SymId| values[id.0 as usize]), "{dim:?}");
            let json = serde_json::to_string(dim).unwrap();
            assert_eq!(&serde_json::from_str::<Dim>(&json).unwrap(), dim, "{json}");
        }
        let deep = (0..40).fold(String::from("[[1,[{\"sym\":0}]]]"), |of, _| {
            format!("[[1,[{{\"floor_div\":{{\"of\":{of},\"by\":2}}}}]]]")
        });
        assert!(serde_json::from_str::<Dim>(&deep).is_err());
        assert!(serde_json::from_str::<Dim>("[[1,[{\"floor_div\":{\"of\":[[1,[]]],\"by\":0}}]]]").is_err());
    }
}
