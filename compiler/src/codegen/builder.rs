//! `FnBuilder`: appends expressions and statements to one naga entry-point function under the
//! `Emitter`/`Statement::Emit` discipline (every computed expression is covered by exactly one `Emit`; the
//! "pre-emitted" kinds — literals, globals, arguments — never are), plus the small typed helpers the kernels
//! use and `dim_to_expr`, which turns a symbolic `Dim` into `u32` arithmetic.
//!
//! All statements go into one flat block in order, so every expression dominates everything after it; a
//! nested block is only ever a single `return`.

use std::collections::BTreeMap;

use naga::{
    BinaryOperator, Block, Expression, Function, Handle, Literal, MathFunction, Module, ScalarKind, Span, Statement,
    Type, TypeInner,
};

use crate::dim::{Atom, Dim, SymId};

pub(super) struct FnBuilder {
    pub module: Module,
    pub fun: Function,
    body: Block,
    emitter: naga::proc::Emitter,
}

impl FnBuilder {
    pub fn new() -> FnBuilder {
        let fun = Function::default();
        let mut emitter = naga::proc::Emitter::default();
        emitter.start(&fun.expressions);
        FnBuilder { module: Module::default(), fun, body: Block::new(), emitter }
    }

    pub fn ty(&mut self, inner: TypeInner) -> Handle<Type> {
        self.module.types.insert(Type { name: None, inner }, Span::UNDEFINED)
    }

    /// Appends `expr`, keeping pre-emitted kinds out of `Emit` ranges.
    pub fn expr(&mut self, expr: Expression) -> Handle<Expression> {
        if expr.needs_pre_emit() {
            self.flush();
            let handle = self.fun.expressions.append(expr, Span::UNDEFINED);
            self.emitter.start(&self.fun.expressions);
            handle
        } else {
            self.fun.expressions.append(expr, Span::UNDEFINED)
        }
    }

    /// Appends `statement` after everything emitted so far.
    pub fn statement(&mut self, statement: Statement) {
        self.flush();
        self.body.push(statement, Span::UNDEFINED);
        self.emitter.start(&self.fun.expressions);
    }

    /// Gives `expr` a name in the output (`let name = ...` in WGSL).
    pub fn name(&mut self, expr: Handle<Expression>, name: &str) {
        self.fun.named_expressions.insert(expr, name.to_string());
    }

    /// The finished function body, ending in `return`.
    pub fn finish(mut self) -> (Module, Function) {
        self.statement(Statement::Return { value: None });
        self.flush();
        self.fun.body = self.body;
        (self.module, self.fun)
    }

    fn flush(&mut self) {
        let emitted = self.emitter.finish(&self.fun.expressions);
        self.body.extend(emitted);
    }

    pub fn u32(&mut self, value: u32) -> Handle<Expression> {
        self.expr(Expression::Literal(Literal::U32(value)))
    }
    pub fn i32(&mut self, value: i32) -> Handle<Expression> {
        self.expr(Expression::Literal(Literal::I32(value)))
    }
    pub fn f32(&mut self, value: f32) -> Handle<Expression> {
        self.expr(Expression::Literal(Literal::F32(value)))
    }
    pub fn binary(
        &mut self,
        op: BinaryOperator,
        left: Handle<Expression>,
        right: Handle<Expression>,
    ) -> Handle<Expression> {
        self.expr(Expression::Binary { op, left, right })
    }
    pub fn math(&mut self, fun: MathFunction, args: &[Handle<Expression>]) -> Handle<Expression> {
        let arg = |i: usize| args.get(i).copied();
        self.expr(Expression::Math { fun, arg: args[0], arg1: arg(1), arg2: arg(2), arg3: arg(3) })
    }
    /// `condition ? accept : reject`.
    pub fn select(
        &mut self,
        condition: Handle<Expression>,
        accept: Handle<Expression>,
        reject: Handle<Expression>,
    ) -> Handle<Expression> {
        self.expr(Expression::Select { condition, accept, reject })
    }
    /// A value conversion to a 32-bit `kind` (WGSL `f32(x)`, `i32(x)`, `u32(x)`).
    pub fn convert(&mut self, expr: Handle<Expression>, kind: ScalarKind) -> Handle<Expression> {
        self.expr(Expression::As { expr, kind, convert: Some(4) })
    }
    /// A bit reinterpretation (WGSL `bitcast<T>(x)`).
    pub fn bitcast(&mut self, expr: Handle<Expression>, kind: ScalarKind) -> Handle<Expression> {
        self.expr(Expression::As { expr, kind, convert: None })
    }
    pub fn load(&mut self, pointer: Handle<Expression>) -> Handle<Expression> {
        self.expr(Expression::Load { pointer })
    }
}

/// `dim` as `u32` arithmetic over the symbol values in `symbols` (loaded from the uniform block).
///
/// Sums, products and constants wrap modulo 2^32, which is exact whenever the true value is in `0..2^32`
/// (wrapping arithmetic is a ring homomorphism, so intermediate negatives such as `S - 3` are harmless).
/// `floor(n / d)` is computed on `n` reinterpreted as `i32` with a floor correction, so it is exact when `n`
/// lies in `i32` range, negative numerators included. `None` when `dim` names a symbol missing from `symbols`
/// or divides by a constant beyond `i32`.
pub(super) fn dim_to_expr(
    b: &mut FnBuilder,
    dim: &Dim,
    symbols: &BTreeMap<SymId, Handle<Expression>>,
) -> Option<Handle<Expression>> {
    let mut total: Option<Handle<Expression>> = None;
    for (atoms, coef) in dim.terms() {
        let mut product: Option<Handle<Expression>> = None;
        for atom in atoms {
            let factor = match atom {
                Atom::Sym(id) => *symbols.get(id)?,
                Atom::FloorDiv(numerator, divisor) => {
                    let numerator = dim_to_expr(b, numerator, symbols)?;
                    floor_div(b, numerator, i32::try_from(*divisor).ok()?)
                }
            };
            product = Some(match product {
                None => factor,
                Some(p) => b.binary(BinaryOperator::Multiply, p, factor),
            });
        }
        // Subtract negative terms from what came before, for readable output; wrap everything else.
        let (magnitude, negate) = match total {
            Some(_) if coef < 0 => (coef.unsigned_abs() as u32, true),
            _ => (coef as u32, false),
        };
        let term = match product {
            None => b.u32(magnitude),
            Some(p) if magnitude == 1 => p,
            Some(p) => {
                let k = b.u32(magnitude);
                b.binary(BinaryOperator::Multiply, k, p)
            }
        };
        total = Some(match total {
            None => term,
            Some(t) if negate => b.binary(BinaryOperator::Subtract, t, term),
            Some(t) => b.binary(BinaryOperator::Add, t, term),
        });
    }
    Some(total.unwrap_or_else(|| b.u32(0)))
}

/// `floor(n / d)` for `n` read as `i32` and a constant `d >= 2`, back as `u32` bits.
fn floor_div(b: &mut FnBuilder, numerator: Handle<Expression>, divisor: i32) -> Handle<Expression> {
    let n = b.bitcast(numerator, ScalarKind::Sint);
    let d = b.i32(divisor);
    let quotient = b.binary(BinaryOperator::Divide, n, d);
    let remainder = b.binary(BinaryOperator::Modulo, n, d);
    let zero = b.i32(0);
    let one = b.i32(1);
    let negative = b.binary(BinaryOperator::Less, remainder, zero);
    let correction = b.select(negative, one, zero);
    let floor = b.binary(BinaryOperator::Subtract, quotient, correction);
    b.bitcast(floor, ScalarKind::Uint)
}
