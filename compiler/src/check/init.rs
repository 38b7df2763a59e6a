//! Param initialisers: `param weight: T[N, K] = fan_in_uniform(K)` declares how a param starts when no
//! weights are given (PyTorch's default initialisers, spec/language.md R4.3). The initialiser is one call of
//! `zeros()`, `ones()`, `constant(v)`, `uniform(low, high)`, `normal(mean, std)` or `fan_in_uniform(n)`
//! with compile-time arguments (`n` may be a symbolic dimension); anything else is E0504.

use super::{Elab, Scope, Value};
use crate::diag::{Code, Diagnostic};
use crate::dim::Dim;
use crate::ir::{Init, TensorType};
use crate::syntax::ast;

/// The initialisers and their parameter names, for messages and named arguments.
const INITS: [(&str, &[&str]); 6] = [
    ("zeros", &[]),
    ("ones", &[]),
    ("constant", &["value"]),
    ("uniform", &["low", "high"]),
    ("normal", &["mean", "std"]),
    ("fan_in_uniform", &["fan_in"]),
];

impl Elab<'_> {
    /// The initialiser `init` of a param of type `ty`, or `None` (reported as E0504).
    pub(super) fn param_init(&mut self, scope: &mut Scope, init: &ast::Expr, ty: &TensorType) -> Option<Init> {
        let bad = |message: String| {
            let known: Vec<String> =
                INITS.iter().map(|(name, params)| format!("`{name}({})`", params.join(", "))).collect();
            Diagnostic::new(Code::E0504, init.span, message)
                .note(format!("an initialiser is one of {}", known.join(", ")))
                .rule("R4.3")
        };
        if !ty.dtype.is_float() {
            let message = format!("an initialiser for a param of dtype {}", ty.dtype.name());
            self.error(bad(message).label("only float params are initialised"));
            return None;
        }
        let ast::ExprKind::Call { callee, prefix: None, args } = &init.kind else {
            self.error(bad("a param initialiser must be a call of an initialiser".into()));
            return None;
        };
        let name = callee.text();
        let Some(&(_, params)) = INITS.iter().find(|(n, _)| *n == name) else {
            self.error(bad(format!("unknown initialiser `{name}`")).label("not an initialiser"));
            return None;
        };
        // Arguments: positional first, then by name, each once.
        let mut values: Vec<Option<(Value, crate::span::Span)>> = vec![None; params.len()];
        let mut ok = true;
        for (position, arg) in args.iter().enumerate() {
            let slot = match &arg.name {
                None => position,
                Some(n) => match params.iter().position(|p| *p == n.name) {
                    Some(k) => k,
                    None => {
                        self.error(bad(format!("`{name}` has no parameter `{}`", n.name)));
                        ok = false;
                        continue;
                    }
                },
            };
            if slot >= params.len() || values[slot].is_some() {
                self.error(bad(format!("`{name}` takes {} argument(s)", params.len())).label("this one is extra"));
                ok = false;
                continue;
            }
            let value = self.expr(scope, &arg.value);
            values[slot] = Some((value, arg.value.span));
        }
        if !ok {
            return None;
        }
        let mut missing = params.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(p, _)| *p);
        if let Some(param) = missing.next() {
            self.error(bad(format!("`{name}` needs its argument `{param}`")));
            return None;
        }
        let values: Vec<(Value, crate::span::Span)> = values.into_iter().flatten().collect();
        let mut floats = Vec::with_capacity(values.len());
        for (value, span) in &values {
            match value {
                Value::Float(v) => floats.push(*v),
                Value::Int(d) => match d.as_const() {
                    Some(v) => floats.push(v as f64),
                    // A symbolic fan-in, evaluated when the param's symbols are known.
                    None if name == "fan_in_uniform" => floats.push(f64::NAN),
                    None => {
                        let message = format!("`{name}` of the symbolic dimension {}", self.show_dim(d));
                        self.error(
                            Diagnostic::new(Code::E0504, *span, message)
                                .label("not a compile-time number")
                                .rule("R4.3"),
                        );
                        return None;
                    }
                },
                Value::Error => return None,
                other => {
                    let message = format!("`{name}` needs compile-time numbers, found {}", other.kind());
                    self.error(
                        Diagnostic::new(Code::E0504, *span, message)
                            .label("not a compile-time number")
                            .note("initialisers run before the first step, so their arguments are constants")
                            .rule("R4.3"),
                    );
                    return None;
                }
            }
        }
        let init = match name.as_str() {
            "zeros" => Init::Constant(0.0),
            "ones" => Init::Constant(1.0),
            "constant" => Init::Constant(floats[0]),
            "uniform" => Init::Uniform { low: floats[0], high: floats[1] },
            "normal" => Init::Normal { mean: floats[0], std: floats[1] },
            _ => {
                let fan_in = match &values[0].0 {
                    Value::Int(d) => d.clone(),
                    _ if floats[0].fract() == 0.0 && floats[0].abs() < 1e15 => Dim::constant(floats[0] as i64),
                    _ => {
                        self.error(bad(format!("`fan_in_uniform({})`: the fan-in is a count", floats[0])));
                        return None;
                    }
                };
                if fan_in.as_const().is_some_and(|n| n < 1) {
                    let message = format!("`fan_in_uniform` of a fan-in of {}", self.show_dim(&fan_in));
                    self.error(bad(message).label("the fan-in must be at least 1"));
                    return None;
                }
                return Some(Init::FanInUniform(fan_in));
            }
        };
        let problem = match &init {
            Init::Constant(v) if !v.is_finite() => Some(format!("constant({v}) is not finite")),
            Init::Uniform { low, high } if !(low.is_finite() && high.is_finite() && low <= high) => {
                Some(format!("uniform({low}, {high}) is not a finite range with low <= high"))
            }
            Init::Normal { mean, std } if !(mean.is_finite() && std.is_finite() && *std >= 0.0) => {
                Some(format!("normal({mean}, {std}) needs a finite mean and a finite std >= 0"))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            self.error(bad(problem));
            return None;
        }
        Some(init)
    }
}
