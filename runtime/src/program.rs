//! `Program`: a compiled model as the runtime runs it, with no compiler types in sight: its signature
//! (inputs and params with symbolic shapes), every device tensor it needs, and the ordered kernel launches of
//! one forward pass. The compiler builds one (`tdsl_compiler::codegen::compile`); later an ahead-of-time
//! bundle stores one. `DimExpr` is the runtime's form of a symbolic dimension: evaluated once the symbols
//! are bound from the actual input shapes (`bind.rs`), it sizes buffers, fills each launch's uniform block
//! and decides its workgroup grid.
//!
//! Invariants (the compiler guarantees them; `Program::validate` checks them before anything runs, see
//! `validate.rs`): every `TensorId` names a tensor and every `DimAtom::Sym` a symbol, floor divisors are at
//! least 1; `inputs` and `params` list exactly the tensors of role `Input` and `Param`, each once, with
//! distinct names; each launch writes at least one tensor, each a computed one it does not also read, after
//! the launches producing every computed tensor it reads; every computed output is written; launch names
//! are distinct and workgroup sizes at least 1; kernel binding `i` is `args[i]` (not checkable here: a
//! mismatch fails when the launch runs).
//!
//! Device layout (`gpu/buffer.rs`): `f32`, `i32`, `u32` are 4-byte words; `f16` is held as `f32` words
//! (converted exactly on upload, rounded to nearest on download), so kernels need no `SHADER_F16`; `bool`
//! is a `u32` word holding 0 or 1.

mod validate;

use std::fmt;

use crate::DType;
pub use validate::ProgramError;

/// Index of a tensor in `Program::tensors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub u32);

/// One factor of a `DimExpr` term.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DimAtom {
    /// The value of symbol `Program::symbols[i]`.
    Sym(u32),
    /// `floor(numerator / divisor)`, `divisor >= 1`.
    FloorDiv(Box<DimExpr>, i64),
}

/// An integer polynomial over symbols: the sum of `coef * product(atoms)` over `terms`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DimExpr {
    /// `(coefficient, factors)` pairs; no terms is 0.
    pub terms: Vec<(i64, Vec<DimAtom>)>,
}

impl DimExpr {
    /// The constant `value`.
    pub fn constant(value: i64) -> DimExpr {
        DimExpr { terms: if value == 0 { vec![] } else { vec![(value, vec![])] } }
    }

    /// The bare symbol `index`.
    pub fn sym(index: u32) -> DimExpr {
        DimExpr { terms: vec![(1, vec![DimAtom::Sym(index)])] }
    }

    /// The symbol this is exactly, if it is one bare symbol.
    pub fn as_sym(&self) -> Option<u32> {
        match self.terms.as_slice() {
            [(1, atoms)] => match atoms.as_slice() {
                [DimAtom::Sym(s)] => Some(*s),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value with symbol `i` = `symbols[i]`; `None` on overflow, a missing symbol or a divisor below 1.
    pub fn eval(&self, symbols: &[i64]) -> Option<i64> {
        let mut total: i64 = 0;
        for (coef, atoms) in &self.terms {
            let mut value = *coef;
            for atom in atoms {
                let factor = match atom {
                    DimAtom::Sym(s) => *symbols.get(*s as usize)?,
                    DimAtom::FloorDiv(numerator, divisor) if *divisor >= 1 => {
                        numerator.eval(symbols)?.div_euclid(*divisor)
                    }
                    DimAtom::FloorDiv(..) => return None,
                };
                value = value.checked_mul(factor)?;
            }
            total = total.checked_add(value)?;
        }
        Some(total)
    }

    /// The symbols this mentions, sorted and unique.
    pub fn symbols(&self) -> Vec<u32> {
        let mut out = Vec::new();
        self.collect_symbols(&mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    fn collect_symbols(&self, out: &mut Vec<u32>) {
        for (_, atoms) in &self.terms {
            for atom in atoms {
                match atom {
                    DimAtom::Sym(s) => out.push(*s),
                    DimAtom::FloorDiv(numerator, _) => numerator.collect_symbols(out),
                }
            }
        }
    }

    /// Prints with symbol names from `names` (`2*S + 1`, `(S - 1) / 2`).
    pub fn display<'a>(&'a self, names: &'a [String]) -> impl fmt::Display + 'a {
        DimExprDisplay { dim: self, names }
    }
}

struct DimExprDisplay<'a> {
    dim: &'a DimExpr,
    names: &'a [String],
}

impl fmt::Display for DimExprDisplay<'_> {
    /// The compiler's `Dim` display exactly, so messages read the same on both sides: terms of higher degree
    /// first (stable, so a canonical `Dim`'s order is kept among equal degrees), the constant last, and a
    /// floor division parenthesized when it is a factor of a product or its numerator has several terms.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut terms: Vec<&(i64, Vec<DimAtom>)> = self.dim.terms.iter().collect();
        terms.sort_by_key(|(_, atoms)| std::cmp::Reverse(atoms.len()));
        if terms.is_empty() {
            return write!(f, "0");
        }
        for (i, (coef, atoms)) in terms.into_iter().enumerate() {
            let magnitude = coef.unsigned_abs();
            match (i, *coef < 0) {
                (0, true) => write!(f, "-")?,
                (0, false) => {}
                (_, true) => write!(f, " - ")?,
                (_, false) => write!(f, " + ")?,
            }
            let in_product = atoms.len() > 1 || magnitude != 1;
            let factors: Vec<String> = atoms
                .iter()
                .map(|atom| match atom {
                    DimAtom::Sym(s) => match self.names.get(*s as usize) {
                        Some(name) => name.clone(),
                        None => format!("?{s}"),
                    },
                    DimAtom::FloorDiv(numerator, divisor) => {
                        let inner = numerator.display(self.names).to_string();
                        let quotient = if numerator.terms.len() > 1 {
                            format!("({inner}) / {divisor}")
                        } else {
                            format!("{inner} / {divisor}")
                        };
                        if in_product { format!("({quotient})") } else { quotient }
                    }
                })
                .collect();
            match (magnitude, factors.is_empty()) {
                (m, true) => write!(f, "{m}")?,
                (1, false) => write!(f, "{}", factors.join("*"))?,
                (m, false) => write!(f, "{m}*{}", factors.join("*"))?,
            }
        }
        Ok(())
    }
}

/// Where a device tensor's contents come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorRole {
    /// The model input of this name.
    Input(String),
    /// The weight of this key.
    Param(String),
    /// Written by a launch (intermediates and outputs).
    Computed,
}

/// One device tensor. The name is for messages: `input x`, `param encoder.w`, `%12 matmul`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDecl {
    /// The name, for messages.
    pub name: String,
    /// Where its contents come from.
    pub role: TensorRole,
    /// Its element type.
    pub dtype: DType,
    /// Its symbolic shape.
    pub shape: Vec<DimExpr>,
}

/// What kernel binding `i` of a launch is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A tensor the kernel only reads (`var<storage, read>`).
    Read(TensorId),
    /// The tensor the kernel writes (`var<storage, read_write>`).
    Write(TensorId),
    /// A uniform block of `u32` words, one per expression, in order. Each value must lie in
    /// `-2^31 .. 2^32` (kernels read it as `u32` or reinterpret it as `i32`); it is stored as its low 32 bits.
    Uniform(Vec<DimExpr>),
    /// The program's status buffer (`var<storage, read_write>` of `u32`, zeroed before the run): a kernel
    /// that meets a run-time error (a gather index out of range) stores the launch's index + 1 in word 0
    /// and a detail (the offending value, as `u32` bits) in word 1, and 1 in word 2 when that value is a
    /// `u32` (else it reads as an `i32`), only while word 0 is still 0 so the first failing launch is the one
    /// reported. `Gpu::execute` reads it after the run: `launch 3 (gather_7):
    /// an index was out of range (value -1, bits 0xffffffff)`.
    Status,
}

/// A value a launch's index arithmetic relies on staying below a limit (e.g. a flat index in `u32`, a
/// padded coordinate in `i32`). Checked once the symbols are bound, before anything is dispatched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    /// What the value is, for the error message: `flat index of %12 matmul`.
    pub what: String,
    /// The value, in the program's symbols.
    pub value: DimExpr,
    /// The value must be at most this.
    pub max: i64,
}

/// One compute dispatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The kernel's name (unique in the program): errors and profiles name it.
    pub name: String,
    /// The kernel as WGSL, entry point `main`, bindings `@group(0) @binding(i)` = `args[i]`.
    pub wgsl: String,
    /// The same kernel as SPIR-V words.
    pub spirv: Vec<u32>,
    /// What each binding is bound to, in binding order.
    pub args: Vec<Arg>,
    /// Invocations wanted; the grid is `ceil(invocations / workgroup_size)` workgroups, folded into
    /// `[x, y, 1]` with `x, y <=` the device's `max_compute_workgroups_per_dimension` (65535 on most) when it
    /// is larger (kernels compute their flat invocation index as
    /// `gid.x + gid.y * num_workgroups.x * workgroup_size` and return past the end). A launch with 0
    /// invocations is not dispatched.
    pub invocations: DimExpr,
    /// Invocations per workgroup (x only).
    pub workgroup_size: u32,
    /// Values the kernel's index arithmetic relies on, checked before dispatch.
    pub bounds: Vec<Bound>,
}

/// A compiled model: see the module comment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// The model's name.
    pub name: String,
    /// Symbolic dimension names; `DimAtom::Sym(i)` is `symbols[i]`.
    pub symbols: Vec<String>,
    /// Every device tensor; `TensorId(i)` is `tensors[i]`.
    pub tensors: Vec<TensorDecl>,
    /// `TensorRole::Input` tensors, in signature order.
    pub inputs: Vec<TensorId>,
    /// `TensorRole::Param` tensors.
    pub params: Vec<TensorId>,
    /// Output names and the tensors holding them (any role: an input can be an output).
    pub outputs: Vec<(String, TensorId)>,
    /// The dispatches, in order.
    pub launches: Vec<Launch>,
}

impl Program {
    /// The tensor `id` (which `validate` guarantees exists).
    pub fn tensor(&self, id: TensorId) -> &TensorDecl {
        &self.tensors[id.0 as usize]
    }

    /// `f32[B, S, 384]` with this program's symbol names.
    pub fn type_string(&self, decl: &TensorDecl) -> String {
        type_string(decl.dtype, &decl.shape, &self.symbols)
    }
}

/// `f32[B, S, 384]`: a symbolic tensor type with symbol names from `symbols`.
pub fn type_string(dtype: DType, shape: &[DimExpr], symbols: &[String]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.display(symbols).to_string()).collect();
    format!("{}[{}]", dtype.name(), dims.join(", "))
}
