//! Functions: the table of every loaded function, signature matching (shape patterns that bind dimension
//! names, dtype variables and `...`), inlining of the body with the caller's shapes, param prefixes, and the
//! stand-alone check of functions no model calls (R5).

use super::{Elab, MAX_CALL_DEPTH, Scope, Value, bare_name, repeated_names};
use crate::diag::{Code, Diagnostic};
use crate::dim::Dim;
use crate::driver::Program;
use crate::ir::{DType, Op, TensorType};
use crate::span::{FileId, Span};
use crate::syntax::ast;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The scope variable holding the dims bound to `...` (not a valid identifier, so users cannot see it).
pub(crate) const ELLIPSIS: &str = "...";

/// One evaluated call argument.
#[derive(Clone, Debug)]
pub(crate) struct ArgValue {
    pub name: Option<ast::Ident>,
    pub value: Value,
    pub span: Span,
}

/// A call being inlined.
pub(crate) struct Frame {
    pub name: String,
    pub call_span: Span,
    /// Numbers the calls inlined in one model, so two runs of one call site (a loop) are told apart.
    pub instance: usize,
    /// The call gave a param prefix (`f["name"](...)`, R5.3).
    pub prefixed: bool,
}

pub(crate) struct FnEntry<'p> {
    pub def: &'p ast::FnDef,
    /// The name it is called by (`alias.name` when imported with an alias).
    pub name: String,
}

/// Every function of every loaded file, by callable name.
pub(crate) struct FnTable<'p> {
    fns: BTreeMap<String, FnEntry<'p>>,
    /// The standard library's files (diagnostics point at the user's calls into them).
    pub std_files: HashSet<FileId>,
}

impl<'p> FnTable<'p> {
    pub(crate) fn build(program: &'p Program, diags: &mut Vec<Diagnostic>) -> Self {
        let mut fns: BTreeMap<String, FnEntry<'p>> = BTreeMap::new();
        for file in &program.files {
            for item in &file.ast.items {
                let ast::Item::Fn(def) = item else { continue };
                // Reported once per definition, whether or not anything calls it.
                diags.extend(repeated_names(&def.args, "parameter", "R5.2").0);
                let name = match &file.alias {
                    Some(alias) => format!("{alias}.{}", def.name.name),
                    None => def.name.name.clone(),
                };
                if let Some(first) = fns.get(&name) {
                    let is_std = |def: &ast::FnDef| program.sources.get(def.name.span.file).name.starts_with("<std>");
                    let (std_first, std_second) = (is_std(first.def), is_std(def));
                    let (user, other) = if std_second && !std_first { (first.def, def) } else { (def, first.def) };
                    let mut diag =
                        Diagnostic::new(Code::E0103, user.name.span, format!("function `{name}` is defined twice"))
                            .with_label(other.name.span, "also defined here")
                            .rule("R4.1");
                    diag = if std_first || std_second {
                        diag.note(format!("the standard library already defines `{name}`; rename this one"))
                    } else {
                        diag.note("rename one, or import one of the files with `as` to keep both")
                    };
                    diags.push(diag);
                    continue;
                }
                fns.insert(name.clone(), FnEntry { def, name });
            }
        }
        let std_files =
            program.sources.files().filter(|(_, file)| file.name.starts_with("<std>")).map(|(id, _)| id).collect();
        FnTable { fns, std_files }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&FnEntry<'p>> {
        self.fns.get(name)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.fns.keys()
    }
}

/// What a signature bound: dimension names, dtype variables and the `...` dims.
#[derive(Default)]
struct Bindings {
    dims: HashMap<String, Dim>,
    dtypes: HashMap<String, DType>,
    ellipsis: Option<Vec<Dim>>,
}

impl<'p> Elab<'p> {
    /// Inlines `entry`, a function with one result, with `args` from the caller (R5.1-R5.4); a function
    /// with several results is E0114 here (R5.6).
    pub(crate) fn instantiate(
        &mut self,
        entry: &FnEntry<'p>,
        caller: &Scope,
        prefix: Option<String>,
        args: Vec<ArgValue>,
        span: Span,
    ) -> Value {
        let count = entry.def.results.len();
        if count != 1 {
            self.error(
                Diagnostic::new(
                    Code::E0114,
                    span,
                    format!("`{}` returns {count} values, but one value is expected here", entry.name),
                )
                .label(format!("this call gives {count} values"))
                .with_label(entry.def.name.span, format!("`{}` is declared with {count} results", entry.name))
                .note(format!(
                    "take the results apart with a destructuring statement: `({}) = {}(...)`",
                    result_names(entry.def).join(", "),
                    entry.name
                ))
                .rule("R5.6"),
            );
            return Value::Error;
        }
        match self.instantiate_all(entry, caller, prefix, args, span) {
            Some(mut results) => results.pop().unwrap_or(Value::Error),
            None => Value::Error,
        }
    }

    /// Inlines `entry` with `args` from the caller (R5.1-R5.4, R5.6): one value per declared result, or
    /// `None` when the call failed (reported).
    pub(crate) fn instantiate_all(
        &mut self,
        entry: &FnEntry<'p>,
        caller: &Scope,
        prefix: Option<String>,
        args: Vec<ArgValue>,
        span: Span,
    ) -> Option<Vec<Value>> {
        let def = entry.def;
        if self.frames.iter().any(|f| f.name == entry.name) {
            self.error(
                Diagnostic::new(Code::E0107, span, format!("`{}` calls itself", entry.name))
                    .note("functions are inlined, so recursion cannot be expanded")
                    .rule("R5.1"),
            );
            return None;
        }
        if self.frames.len() >= MAX_CALL_DEPTH {
            self.error(
                Diagnostic::new(Code::E0107, span, format!("calls nest deeper than {MAX_CALL_DEPTH} levels"))
                    .rule("R5.1"),
            );
            return None;
        }
        if args.iter().any(|a| matches!(a.value, Value::Error)) || !self.within_size_limit(span) {
            return None;
        }
        let matched = self.match_args(entry, args, span)?;
        // A stand-alone check covers one body: callees are checked on their own, so calls inside it stop
        // after the arguments are matched (R5.5).
        if self.generic && !self.frames.is_empty() {
            return None;
        }
        self.called.insert(entry.name.clone());
        self.instances += 1;
        let frame =
            Frame { name: entry.name.clone(), call_span: span, instance: self.instances, prefixed: prefix.is_some() };
        self.frames.push(frame);
        let result = self.inline_body(def, caller, prefix, matched);
        self.frames.pop();
        result
    }

    /// Assigns arguments to parameters: positional first, then by name, then defaults (R5.2).
    fn match_args(&mut self, entry: &FnEntry<'p>, args: Vec<ArgValue>, span: Span) -> Option<Vec<(Value, Span)>> {
        let def = entry.def;
        let mut slots: Vec<Option<(Value, Span)>> = vec![None; def.args.len()];
        let mut position = 0;
        let mut ok = true;
        for arg in args {
            let index = match &arg.name {
                None => {
                    if position >= def.args.len() {
                        self.error(
                            Diagnostic::new(
                                Code::E0106,
                                arg.span,
                                format!("`{}` takes {} arguments, but more were given", entry.name, def.args.len()),
                            )
                            .with_label(def.name.span, "defined here")
                            .rule("R5.2"),
                        );
                        ok = false;
                        continue;
                    }
                    position += 1;
                    position - 1
                }
                Some(ident) => match def.args.iter().position(|a| a.name.name == ident.name) {
                    Some(i) => i,
                    None => {
                        self.error(
                            Diagnostic::new(
                                Code::E0106,
                                ident.span,
                                format!("`{}` has no parameter named `{}`", entry.name, ident.name),
                            )
                            .with_label(def.name.span, "defined here")
                            .rule("R5.2"),
                        );
                        ok = false;
                        continue;
                    }
                },
            };
            if slots[index].is_some() {
                self.error(
                    Diagnostic::new(
                        Code::E0106,
                        arg.span,
                        format!("argument `{}` is given twice", def.args[index].name.name),
                    )
                    .rule("R5.2"),
                );
                ok = false;
                continue;
            }
            slots[index] = Some((arg.value, arg.span));
        }
        let mut out = Vec::new();
        for (slot, decl) in slots.into_iter().zip(&def.args) {
            match slot {
                Some(v) => out.push(v),
                None => match &decl.default {
                    Some(default) => {
                        let value = self.expr(&mut Scope::default(), default);
                        out.push((value, default.span));
                    }
                    None => {
                        self.error(
                            Diagnostic::new(
                                Code::E0106,
                                span,
                                format!("missing argument `{}` in call of `{}`", decl.name.name, entry.name),
                            )
                            .with_label(decl.span, "parameter declared here")
                            .rule("R5.2"),
                        );
                        ok = false;
                    }
                },
            }
        }
        ok.then_some(out)
    }

    fn inline_body(
        &mut self,
        def: &ast::FnDef,
        caller: &Scope,
        prefix: Option<String>,
        args: Vec<(Value, Span)>,
    ) -> Option<Vec<Value>> {
        let mut scope = Scope {
            prefix: match prefix {
                Some(p) if caller.prefix.is_empty() => p,
                Some(p) => format!("{}.{p}", caller.prefix),
                None => caller.prefix.clone(),
            },
            ..Scope::default()
        };
        let mut bindings = Bindings::default();
        // Pass 1: scalar arguments and bare names bind (R5.4).
        for (decl, (value, span)) in def.args.iter().zip(&args) {
            match (&decl.ty, value) {
                (ast::ArgType::Tensor(ty), value) => {
                    self.bind_tensor_pattern(ty, value, *span, &mut bindings, &decl.name.name);
                }
                (ast::ArgType::Int(_), Value::Int(d)) => {
                    bindings.dims.entry(decl.name.name.clone()).or_insert_with(|| d.clone());
                }
                (ast::ArgType::Float(_), Value::Float(_) | Value::Int(_)) | (ast::ArgType::Bool(_), Value::Bool(_)) => {
                }
                (ast::ArgType::Float(_), Value::Error)
                | (ast::ArgType::Int(_), Value::Error)
                | (ast::ArgType::Bool(_), Value::Error) => return None,
                (kind, other) => {
                    let wanted = match kind {
                        ast::ArgType::Int(_) => "an integer",
                        ast::ArgType::Float(_) => "a float",
                        _ => "a bool",
                    };
                    self.error(
                        Diagnostic::new(
                            Code::E0203,
                            *span,
                            format!("argument `{}` must be {wanted}, found {}", decl.name.name, other.kind()),
                        )
                        .with_label(decl.span, "parameter declared here")
                        .rule("R5.2"),
                    );
                    return None;
                }
            }
        }
        for (name, dim) in &bindings.dims {
            scope.vars.insert(name.clone(), Value::Int(dim.clone()));
        }
        scope.dtypes = bindings.dtypes.clone();
        if let Some(dims) = &bindings.ellipsis {
            scope.vars.insert(ELLIPSIS.to_string(), Value::List(dims.iter().cloned().map(Value::Int).collect()));
        }
        // Pass 2: every tensor argument has exactly its declared type.
        let mut ok = true;
        for (decl, (value, span)) in def.args.iter().zip(&args) {
            match &decl.ty {
                ast::ArgType::Tensor(ty) => {
                    if !self.check_tensor_arg(&mut scope, ty, value, *span, &decl.name.name) {
                        ok = false;
                    }
                }
                ast::ArgType::Float(_) => {
                    let v = match value {
                        Value::Int(d) => d.as_const().map(|c| Value::Float(c as f64)),
                        other => Some(other.clone()),
                    };
                    match v {
                        Some(v) => {
                            scope.vars.insert(decl.name.name.clone(), v);
                        }
                        None => {
                            self.error(
                                Diagnostic::new(
                                    Code::E0203,
                                    *span,
                                    format!("argument `{}` must be a known number", decl.name.name),
                                )
                                .rule("R5.2"),
                            );
                            ok = false;
                        }
                    }
                }
                _ => {
                    scope.vars.insert(decl.name.name.clone(), value.clone());
                }
            }
        }
        if !ok {
            return None;
        }
        self.block(&mut scope, &def.body);
        let Some(results) = scope.returned.take() else {
            self.error(
                Diagnostic::new(Code::E0108, def.name.span, format!("function `{}` has no `return`", def.name.name))
                    .label("this function never returns a value")
                    .note("a function body ends with `return value`")
                    .rule("R5.1"),
            );
            return None;
        };
        let (return_span, value_spans) = return_spans(def);
        if results.len() != def.results.len() {
            let declared = def.results.len();
            let wanted = if declared == 1 { "one result".to_string() } else { format!("{declared} results") };
            let given = if results.len() == 1 { "one value".to_string() } else { format!("{} values", results.len()) };
            let hint = if declared == 1 {
                "return one tensor, or declare several results: `-> (T[N], T[M])`".to_string()
            } else {
                format!("return them all in parentheses: `return ({})`", result_names(def).join(", "))
            };
            self.error(
                Diagnostic::new(
                    Code::E0116,
                    return_span,
                    format!("`return` gives {given}, but `{}` declares {wanted}", def.name.name),
                )
                .with_label(def.results.first().map_or(def.name.span, |r| r.span), "results declared here")
                .note(hint)
                .rule("R5.6"),
            );
            return None;
        }
        if results.iter().any(|v| matches!(v, Value::Error)) {
            return None;
        }
        // Each result's type, with every name bound by the signature (R5.4; `shape_of` reports E0310).
        let mut out = Vec::with_capacity(results.len());
        for (index, (decl, result)) in def.results.iter().zip(results).enumerate() {
            let dtype = self.concrete_dtype(&scope, &decl.ty.dtype)?;
            let shape = self.shape_of(&mut scope, &decl.ty)?;
            let declared = TensorType { dtype, shape };
            let what = match (&decl.name, def.results.len()) {
                (_, 1) => format!("the result of `{}`", def.name.name),
                (Some(name), _) => format!("result `{}` of `{}`", name.name, def.name.name),
                (None, _) => format!("result {} of `{}`", index + 1, def.name.name),
            };
            let span = value_spans.get(index).copied().unwrap_or(return_span);
            out.push(Value::Tensor(self.expect_type(result, &declared, span, &what)?));
        }
        Some(out)
    }

    /// Pass 1 for one tensor argument: binds its dtype variable, `...` and bare dimension names.
    fn bind_tensor_pattern(&mut self, ty: &ast::TypeExpr, value: &Value, span: Span, b: &mut Bindings, arg: &str) {
        let Value::Tensor(node) = value else { return };
        let actual = self.ty(*node).clone();
        if DType::from_name(&ty.dtype.name).is_none() {
            b.dtypes.entry(ty.dtype.name.clone()).or_insert(actual.dtype);
        }
        let Some(positions) = pattern_positions(ty, actual.rank()) else { return };
        let _ = (span, arg);
        for (dim, pos) in ty.dims.iter().zip(positions) {
            match (dim, pos) {
                (ast::DimExpr::Ellipsis(_), Position::Many(range)) if b.ellipsis.is_none() => {
                    b.ellipsis = Some(actual.shape[range].to_vec());
                }
                (ast::DimExpr::Expr(e), Position::One(i)) => {
                    if let Some(name) = bare_name(e) {
                        b.dims.entry(name.to_string()).or_insert_with(|| actual.shape[i].clone());
                    }
                }
                _ => {}
            }
        }
    }

    /// Pass 2 for one tensor argument: dtype, rank and every dimension against the bound names.
    fn check_tensor_arg(
        &mut self,
        scope: &mut Scope,
        ty: &ast::TypeExpr,
        value: &Value,
        span: Span,
        arg: &str,
    ) -> bool {
        let node = match value {
            Value::Tensor(node) => *node,
            Value::Error => return false,
            weak if ty.dims.is_empty() => {
                let Some(dtype) = self.concrete_dtype(scope, &ty.dtype) else { return false };
                match self.materialize(weak.clone(), dtype, span) {
                    Some(node) => node,
                    None => return false,
                }
            }
            other => {
                self.error(
                    Diagnostic::new(
                        Code::E0203,
                        span,
                        format!("argument `{arg}` must be a tensor, found {}", other.kind()),
                    )
                    .rule("R5.2"),
                );
                return false;
            }
        };
        let actual = self.ty(node).clone();
        let Some(dtype) = self.concrete_dtype(scope, &ty.dtype) else { return false };
        if dtype != actual.dtype {
            let hint = if DType::from_name(&ty.dtype.name).is_none() {
                format!("`{}` was bound to {} by an earlier argument", ty.dtype.name, dtype.name())
            } else {
                format!("convert it with `{}(...)`", dtype.name())
            };
            self.error(
                Diagnostic::new(
                    Code::E0201,
                    span,
                    format!("argument `{arg}` has dtype {}, expected {}", actual.dtype.name(), dtype.name()),
                )
                .with_label(ty.span, "declared here")
                .note(hint)
                .rule("R5.4"),
            );
            return false;
        }
        let Some(positions) = pattern_positions(ty, actual.rank()) else {
            let fixed = ty.dims.iter().filter(|d| matches!(d, ast::DimExpr::Expr(_))).count();
            let has_ellipsis = fixed != ty.dims.len();
            let expected = if has_ellipsis { format!("at least {fixed}") } else { fixed.to_string() };
            self.error(
                Diagnostic::new(
                    Code::E0303,
                    span,
                    format!("argument `{arg}` has rank {}, expected {expected}", actual.rank()),
                )
                .label(format!("this is {}", self.show_type(&actual)))
                .with_label(ty.span, "declared here")
                .rule("R5.4"),
            );
            return false;
        };
        for (dim, pos) in ty.dims.iter().zip(positions) {
            match (dim, pos) {
                (ast::DimExpr::Ellipsis(_), Position::Many(range)) => {
                    let bound = match scope.vars.get(ELLIPSIS) {
                        Some(Value::List(items)) => items
                            .iter()
                            .filter_map(|v| if let Value::Int(d) = v { Some(d.clone()) } else { None })
                            .collect::<Vec<_>>(),
                        _ => Vec::new(),
                    };
                    if actual.shape[range.clone()] != bound[..] {
                        self.error(
                            Diagnostic::new(
                                Code::E0307,
                                span,
                                format!(
                                    "`...` of argument `{arg}` is {}, but an earlier argument bound it to {}",
                                    self.show_shape(&actual.shape[range]),
                                    self.show_shape(&bound)
                                ),
                            )
                            .rule("R3.4"),
                        );
                        return false;
                    }
                }
                (ast::DimExpr::Expr(e), Position::One(i)) => {
                    let Some(expected) = self.dim_expr(scope, e, "R5.4") else { return false };
                    if expected != actual.shape[i] {
                        let (code, message) = match bare_name(e) {
                            Some(name) => (
                                Code::E0307,
                                format!(
                                    "dimension `{name}` is {} here, but an earlier argument bound it to {}",
                                    self.show_dim(&actual.shape[i]),
                                    self.show_dim(&expected)
                                ),
                            ),
                            None => (
                                Code::E0304,
                                format!(
                                    "dimension {i} of argument `{arg}` is {}, expected {}",
                                    self.show_dim(&actual.shape[i]),
                                    self.show_dim(&expected)
                                ),
                            ),
                        };
                        self.error(
                            Diagnostic::new(code, span, message)
                                .label(format!("this is {}", self.show_type(&actual)))
                                .with_label(e.span, "declared here")
                                .rule("R5.4"),
                        );
                        return false;
                    }
                }
                _ => return false,
            }
        }
        scope.vars.insert(arg.to_string(), Value::Tensor(node));
        true
    }

    /// Checks a function no model calls, with fresh symbols for its dimensions (R5.5).
    pub(crate) fn generic_check(&mut self, name: &str) {
        let Some(entry) = self.fns.get(name) else { return };
        let def = entry.def;
        let mut args = Vec::new();
        let mut symbols: HashMap<String, Dim> = HashMap::new();
        for decl in &def.args {
            let value = match &decl.ty {
                ast::ArgType::Tensor(ty) => {
                    let dtype = DType::from_name(&ty.dtype.name).unwrap_or(DType::F32);
                    let mut shape = Vec::new();
                    for dim in &ty.dims {
                        let key = match dim {
                            ast::DimExpr::Ellipsis(_) => ELLIPSIS.to_string(),
                            ast::DimExpr::Expr(e) => match (bare_name(e), &e.kind) {
                                (Some(n), _) => n.to_string(),
                                (None, ast::ExprKind::Int(v)) if *v >= 1 => {
                                    shape.push(Dim::constant(*v));
                                    continue;
                                }
                                // Composite dims (`H - R + 1`) get a fresh symbol of their own.
                                _ => format!("({})", shape.len()),
                            },
                        };
                        let dim = match symbols.get(&key) {
                            Some(d) if !key.starts_with('(') => d.clone(),
                            _ => {
                                let d = Dim::sym(self.new_symbol(&key));
                                symbols.insert(key, d.clone());
                                d
                            }
                        };
                        shape.push(dim);
                    }
                    let node = self.add_node(
                        Op::Input { name: decl.name.name.clone() },
                        TensorType { dtype, shape },
                        decl.name.span,
                    );
                    Value::Tensor(node)
                }
                ast::ArgType::Int(_) => match &decl.default {
                    Some(default) => self.expr(&mut Scope::default(), default),
                    None => Value::Int(Dim::sym(self.new_symbol(&decl.name.name))),
                },
                ast::ArgType::Float(_) => Value::Float(1.0),
                ast::ArgType::Bool(_) => Value::Bool(false),
            };
            // Positional, so a parameter named like an earlier one (E0103, reported by `FnTable::build`)
            // causes no follow-on errors.
            args.push(ArgValue { name: None, value, span: decl.span });
        }
        let Some(entry) = self.fns.get(name) else { return };
        self.instantiate_all(entry, &Scope::default(), None, args, def.name.span);
    }
}

/// The names of a function's results for suggestions: each result's name, or `r1`, `r2`, ...
pub(crate) fn result_names(def: &ast::FnDef) -> Vec<String> {
    def.results
        .iter()
        .enumerate()
        .map(|(i, r)| r.name.as_ref().map_or_else(|| format!("r{}", i + 1), |n| n.name.clone()))
        .collect()
}

/// The span of the value of a function's last `return`, and of each value it returns (the items of
/// `return (a, b)`, or the one value).
fn return_spans(def: &ast::FnDef) -> (Span, Vec<Span>) {
    let value = def.body.stmts.iter().rev().find_map(|s| match s {
        ast::Stmt::Return { value, .. } => Some(value),
        _ => None,
    });
    match value {
        Some(ast::Expr { kind: ast::ExprKind::Tuple(items), span }) => (*span, items.iter().map(|e| e.span).collect()),
        Some(value) => (value.span, vec![value.span]),
        None => (def.body.span, vec![def.body.span]),
    }
}

/// Where each written dimension of a pattern lands in an actual shape of rank `rank`.
#[derive(Clone, Debug)]
enum Position {
    One(usize),
    Many(std::ops::Range<usize>),
}

fn pattern_positions(ty: &ast::TypeExpr, rank: usize) -> Option<Vec<Position>> {
    let fixed = ty.dims.iter().filter(|d| matches!(d, ast::DimExpr::Expr(_))).count();
    let ellipses = ty.dims.len() - fixed;
    if ellipses > 1 || (ellipses == 0 && rank != fixed) || rank < fixed {
        return None;
    }
    let many = rank - fixed;
    let mut positions = Vec::new();
    let mut i = 0;
    for dim in &ty.dims {
        match dim {
            ast::DimExpr::Ellipsis(_) => {
                positions.push(Position::Many(i..i + many));
                i += many;
            }
            ast::DimExpr::Expr(_) => {
                positions.push(Position::One(i));
                i += 1;
            }
        }
    }
    Some(positions)
}
