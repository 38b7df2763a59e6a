//! The abstract syntax tree of a `.tdsl` file, exactly as written (no resolution, no types). Every node
//! carries a byte `Span`; the parser produces `Error` nodes where it recovered, so a tree always exists.

use crate::span::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct SourceFileAst {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Import(Import),
    Fn(FnDef),
    Model(ModelDef),
    /// An item the parser could not read; its errors were reported.
    Error(Span),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// `a.b.0.c`: a dotted name (function names, param keys, qualified calls).
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    pub segments: Vec<Ident>,
    pub span: Span,
}

impl Path {
    /// The segments joined with `.`.
    pub fn text(&self) -> String {
        let names: Vec<&str> = self.segments.iter().map(|s| s.name.as_str()).collect();
        names.join(".")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct StrLit {
    /// The value with escapes resolved.
    pub value: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Import {
    pub path: StrLit,
    pub alias: Option<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FnDef {
    pub name: Ident,
    pub args: Vec<ArgDecl>,
    /// The result types: one for `-> T[N]`, one or more for `-> (T[N], T[M])` or `-> (h: T[N], c: T[M])`
    /// (a function with several results is called as `(h, c) = f(...)`, R5.6).
    pub results: Vec<ResultDecl>,
    pub body: Block,
    pub span: Span,
}

/// One result of a function: its type, and an optional name (for documentation and diagnostics).
#[derive(Clone, Debug, PartialEq)]
pub struct ResultDecl {
    pub name: Option<Ident>,
    pub ty: TypeExpr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelDef {
    pub name: Ident,
    pub args: Vec<ArgDecl>,
    pub outputs: Vec<OutputDecl>,
    /// `grad(loss)` entries of the output list: the gradient of `loss` with respect to every param, one
    /// output per param after the named outputs.
    pub grads: Vec<GradOutputs>,
    pub body: Block,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ArgDecl {
    pub name: Ident,
    pub ty: ArgType,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ArgType {
    Tensor(TypeExpr),
    /// `int`: a compile-time integer, usable as a dimension.
    Int(Span),
    /// `float`: a compile-time float.
    Float(Span),
    /// `bool`: a compile-time boolean.
    Bool(Span),
}

/// `grad(loss)` in a model's output list (`keyword` is checked to be `grad`).
#[derive(Clone, Debug, PartialEq)]
pub struct GradOutputs {
    pub keyword: Ident,
    pub loss: Ident,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutputDecl {
    pub name: Ident,
    pub ty: TypeExpr,
    pub span: Span,
}

/// `f32[B, S, 384]`; `dtype` is an identifier (a dtype name or, in signatures, a dtype variable).
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub dtype: Ident,
    pub dims: Vec<DimExpr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DimExpr {
    /// `...`: any number of leading dimensions (signatures only).
    Ellipsis(Span),
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `param word_embeddings.weight: f32[V, H]`, with an optional initialiser: `= normal(0.0, 1.0)`.
    /// `param "weight_ih_l{l}" as w_ih: T[4 * H, I]` gives the key as a string (with `{name}` replaced by
    /// integer variables, R4.3) and names the variable `path`.
    Param { key: Option<StrLit>, path: Path, ty: TypeExpr, init: Option<Expr>, span: Span },
    /// `h = expr`
    Assign { name: Ident, value: Expr, span: Span },
    /// `(h, c) = expr`: the results of a call of a function with several results, one name each (R5.6).
    Destructure { names: Vec<Ident>, value: Expr, span: Span },
    /// `y[n, d] = expr`: index notation.
    Define { name: Ident, indices: Vec<IndexDecl>, value: Expr, span: Span },
    /// `for i in 0..6 { ... }`
    For { var: Ident, start: Expr, end: Expr, body: Block, span: Span },
    /// `return expr`
    Return { value: Expr, span: Span },
    /// A statement the parser could not read; its errors were reported.
    Error(Span),
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Param { span, .. }
            | Stmt::Assign { span, .. }
            | Stmt::Destructure { span, .. }
            | Stmt::Define { span, .. }
            | Stmt::For { span, .. }
            | Stmt::Return { span, .. }
            | Stmt::Error(span) => *span,
        }
    }
}

/// An index variable with an optional explicit extent: `h` or `h: H - R + 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexDecl {
    pub name: Ident,
    pub extent: Option<Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// Non-negative; `-3` is `Unary(Neg, Int(3))`.
    Int(i64),
    /// Finite and non-negative.
    Float(f64),
    Bool(bool),
    Name(Path),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `f(args)` or `f["prefix"](args)`.
    Call {
        callee: Path,
        prefix: Option<StrLit>,
        args: Vec<CallArg>,
    },
    /// `x[i, j]` or `x[i - 1, j] else 0.0`.
    Access {
        tensor: Path,
        indices: Vec<Expr>,
        default: Option<Box<Expr>>,
    },
    /// `sum[k](body)`.
    Reduce {
        op: Reducer,
        indices: Vec<IndexDecl>,
        body: Box<Expr>,
    },
    /// `[a, b, c]`.
    List(Vec<Expr>),
    /// `(a, b)`: two or more values, as written after `return` in a function with several results or on
    /// the right of `(x, y) = ...` (R5.6); anywhere else it is an error (E0114).
    Tuple(Vec<Expr>),
    /// An expression the parser could not read; its errors were reported.
    Error,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CallArg {
    /// `Some` for named arguments (`axis: 1`).
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    MatMul,
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::MatMul => "@",
            BinOp::Pow => "^",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reducer {
    Sum,
    Max,
    Min,
    Mean,
    Prod,
}

impl Reducer {
    pub fn name(self) -> &'static str {
        match self {
            Reducer::Sum => "sum",
            Reducer::Max => "max",
            Reducer::Min => "min",
            Reducer::Mean => "mean",
            Reducer::Prod => "prod",
        }
    }
}
