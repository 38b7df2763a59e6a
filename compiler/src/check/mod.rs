//! Checking and lowering in one walk ("elaboration"): resolves names, checks dtypes, shapes and bounds, inlines
//! every function call, and builds the typed `ir::Graph` of each model. Every problem is a `Diagnostic`; a
//! failed sub-expression becomes `Value::Error`, which silences follow-on errors instead of cascading.
//!
//! Files: `mod.rs` (entry, scopes, statements), `value.rs` (values and weak scalars), `tensor.rs` (whole-
//! tensor operators and broadcasting), `builtins.rs` (built-in functions), `call.rs` (signatures and
//! inlining), `grad.rs` (`grad(y, x)` and `grad(loss)` outputs: their checks and the call into
//! `autodiff`), `map.rs` (index notation and bounds).

mod builtins;
mod call;
mod grad;
mod init;
mod map;
mod tensor;
pub mod train;
mod value;

use crate::diag::{Code, Diagnostic};
use crate::dim::{Dim, SymId};
use crate::driver::Program;
use crate::ir::{self, DType, Graph, NodeId, Op, TensorType};
use crate::span::Span;
use crate::syntax::ast;
use std::collections::{HashMap, HashSet};

pub(crate) use value::Value;

/// Unrolled loop iterations allowed in one model (R4.5); beyond it the program is rejected (E0110).
const MAX_UNROLLED_ITERATIONS: usize = 1 << 12;
/// IR nodes allowed in one model (R4.5): bounds what loops and nested calls can expand to.
const MAX_NODES: usize = 1 << 17;
/// Nested function calls allowed (R5.1).
const MAX_CALL_DEPTH: usize = 64;

/// Checks every model and function of `program`; returns the graphs of the root file's models.
pub fn elaborate(program: &Program) -> (Vec<Graph>, Vec<Diagnostic>) {
    elaborate_with(program, None)
}

/// `elaborate`, with the root model `train.model` turned into its training step (`train.rs`).
pub fn elaborate_with(program: &Program, train: Option<&train::TrainSpec>) -> (Vec<Graph>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let fns = call::FnTable::build(program, &mut diags);
    let mut graphs = Vec::new();
    let mut called: HashSet<String> = HashSet::new();
    let mut model_names: HashMap<String, Span> = HashMap::new();
    for file in &program.files {
        for item in &file.ast.items {
            let ast::Item::Model(model) = item else { continue };
            if let Some(first) = model_names.get(&model.name.name) {
                diags.push(
                    Diagnostic::new(
                        Code::E0103,
                        model.name.span,
                        format!("model `{}` is defined twice", model.name.name),
                    )
                    .with_label(*first, "first defined here")
                    .rule("R4.1"),
                );
                continue;
            }
            model_names.insert(model.name.name.clone(), model.name.span);
            let mut elab = Elab::new(&fns, false);
            elab.model(model);
            if let Some(spec) = train.filter(|s| file.is_root && s.model == model.name.name) {
                elab.training_step(spec, model.name.span);
            }
            called.extend(elab.called.iter().cloned());
            diags.extend(elab.diags);
            if file.is_root {
                graphs.push(elab.graph);
            }
        }
    }
    // Functions no model reaches are still checked once on their own (R5.5).
    for name in fns.names() {
        if called.contains(name) {
            continue;
        }
        let mut elab = Elab::new(&fns, true);
        elab.generic_check(name);
        diags.extend(elab.diags);
    }
    (graphs, diags)
}

/// The state of elaborating one model (or one generic function check).
pub(crate) struct Elab<'p> {
    fns: &'p call::FnTable<'p>,
    pub(crate) graph: Graph,
    pub(crate) diags: Vec<Diagnostic>,
    /// Function names instantiated so far.
    called: HashSet<String>,
    /// The calls being inlined, innermost last.
    frames: Vec<call::Frame>,
    /// Params by full key.
    params: HashMap<String, NodeId>,
    /// Where each param key was first declared.
    param_sites: HashMap<String, ParamSite>,
    /// Calls inlined so far: numbers each `call::Frame`, and bounds the work of calls that add no node (an
    /// identity function, or one whose body failed to parse) (R4.5).
    instances: usize,
    /// Keys and call sites W0002 was reported for (a loop repeats a call, not the warning).
    warned_shares: HashSet<(String, Span)>,
    /// In a generic check, shape and bounds errors depend on unknown values and are not reported (R5.5).
    generic: bool,
    unrolled: usize,
    reported_limit: bool,
    /// Names a model's body assigns (`=`, definitions, params), so an output named like an input is known
    /// to be assigned only when the body really does (R4.2).
    assigned: HashSet<String>,
}

/// Where a param key was declared, for E0103 and W0002 (`Elab::param_site`).
#[derive(Clone, Debug)]
pub(crate) struct ParamSite {
    /// The user's call that declared it (or the `param` statement, outside any call).
    span: Span,
    /// The function that call calls.
    call: Option<String>,
    /// The calls on the way from the model (`call::Frame::instance`, and whether the call gave a prefix).
    calls: Vec<(usize, bool)>,
}

impl ParamSite {
    /// `this call of `Linear` VERB`, or `this param statement VERB`.
    fn describe(&self, verb: &str) -> String {
        match &self.call {
            Some(name) => format!("this call of `{name}` {verb}"),
            None => format!("this statement {verb}"),
        }
    }

    /// Whether this declaration and `first`, of the same key, share it by accident (W0002): they come
    /// through different calls (or runs of one call) and no call from where their paths part gave a prefix,
    /// so nothing the user wrote makes the keys equal. Equal paths (a `param` written twice in one body) and
    /// the same prefix given on both sides (`Linear["tied"](a, 8)`, `Linear["tied"](b, 8)`) share on purpose.
    fn shares_by_accident(&self, first: &ParamSite) -> bool {
        let parted = self.calls.iter().zip(&first.calls).take_while(|(a, b)| a.0 == b.0).count();
        if parted == self.calls.len() && parted == first.calls.len() {
            return false;
        }
        !self.calls[parted..].iter().chain(&first.calls[parted..]).any(|&(_, prefixed)| prefixed)
    }

    /// A prefixed call, for the notes: `Linear["name"](...)`.
    fn example(&self) -> String {
        format!("`{}[\"name\"](...)`", self.call.as_deref().unwrap_or("f"))
    }
}

/// Variables visible in one model or function body.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope {
    vars: HashMap<String, Value>,
    /// Dtype variables bound by the signature.
    dtypes: HashMap<String, DType>,
    /// The param prefix (`encoder.layer.0.attention`), empty at top level.
    prefix: String,
    /// The values of `return` (one, or one per item of `return (a, b)`), once seen.
    returned: Option<Vec<Value>>,
}

impl<'p> Elab<'p> {
    fn new(fns: &'p call::FnTable<'p>, generic: bool) -> Self {
        Elab {
            fns,
            graph: Graph::default(),
            diags: Vec::new(),
            called: HashSet::new(),
            frames: Vec::new(),
            params: HashMap::new(),
            param_sites: HashMap::new(),
            instances: 0,
            warned_shares: HashSet::new(),
            generic,
            unrolled: 0,
            reported_limit: false,
            assigned: HashSet::new(),
        }
    }

    /// Reports a diagnostic, pointing at the call that inlined the current function.
    pub(crate) fn error(&mut self, mut diag: Diagnostic) {
        // A stand-alone check of a function knows names and arity, but not the shapes and dtypes it will be
        // called with: only E00xx and E01xx problems are certain (R5.5).
        if self.generic && !matches!(diag.code.as_str().as_bytes()[2], b'0' | b'1') && diag.code != Code::E0310 {
            return;
        }
        // Label every call on the way from the model to the error (outermost last), so the user's own line is
        // shown; a stand-alone check's synthetic top-level call is not a call.
        // Deep chains show the innermost call and the three outermost ones.
        let frames = &self.frames[usize::from(self.generic).min(self.frames.len())..];
        let shown: Vec<&call::Frame> = if frames.len() > 4 {
            frames.iter().take(3).chain(frames.last()).collect()
        } else {
            frames.iter().collect()
        };
        for frame in shown.into_iter().rev() {
            if frame.call_span != diag.span {
                diag.labels.push((frame.call_span, format!("in this call of `{}`", frame.name)));
            }
        }
        self.diags.push(diag);
    }

    /// False (reported once) when the graph has grown past `MAX_NODES`; loops and calls stop expanding.
    /// Checked before each loop iteration and call, and after every statement, so straight-line code is
    /// bounded too; inlined calls count on their own, so calls that add no nodes cannot expand forever.
    pub(crate) fn within_size_limit(&mut self, span: Span) -> bool {
        if self.graph.nodes.len() <= MAX_NODES && self.instances <= MAX_NODES {
            return true;
        }
        if !self.reported_limit {
            self.reported_limit = true;
            self.error(
                Diagnostic::new(Code::E0110, span, format!("the program expands to more than {MAX_NODES} operations"))
                    .label("the model passes the limit here")
                    .note(
                        "every statement, unrolled loop iteration and inlined function call adds operations; \
                         split the work into several models",
                    )
                    .rule("R4.5"),
            );
        }
        false
    }

    pub(crate) fn add_node(&mut self, op: Op, ty: TensorType, span: Span) -> NodeId {
        self.graph.nodes.append(ir::Node { op, ty }, span)
    }

    pub(crate) fn ty(&self, node: NodeId) -> &TensorType {
        &self.graph.nodes[node].ty
    }

    pub(crate) fn show_dim(&self, dim: &Dim) -> String {
        self.graph.dim_to_string(dim)
    }

    pub(crate) fn show_type(&self, ty: &TensorType) -> String {
        self.graph.type_to_string(ty)
    }

    pub(crate) fn show_shape(&self, shape: &[Dim]) -> String {
        let dims: Vec<String> = shape.iter().map(|d| self.show_dim(d)).collect();
        format!("[{}]", dims.join(", "))
    }

    pub(crate) fn new_symbol(&mut self, name: &str) -> SymId {
        self.graph.symbols.push(ir::Symbol { name: name.to_string() });
        SymId((self.graph.symbols.len() - 1) as u32)
    }

    fn model(&mut self, model: &ast::ModelDef) {
        self.graph.name = model.name.name.clone();
        let mut scope = Scope::default();
        // Inputs: bare dimension names bind new symbols on first use (R3.3).
        let mut pending: Vec<(&ast::Expr, usize, usize)> = Vec::new();
        let mut input_types = Vec::new();
        // A repeated input keeps its type checked (it may bind dimensions) but gets no node (R4.2).
        let repeated_inputs = self.report_repeated_names(&model.args, "input", "R4.2");
        for (arg_index, arg) in model.args.iter().enumerate() {
            let ast::ArgType::Tensor(ty) = &arg.ty else {
                self.error(
                    Diagnostic::new(Code::E0203, arg.span, format!("model input `{}` must be a tensor", arg.name.name))
                        .label("`int`, `float` and `bool` arguments are for functions")
                        .rule("R4.2"),
                );
                continue;
            };
            let dtype = self.concrete_dtype(&scope, &ty.dtype);
            let mut shape = Vec::new();
            let mut valid = dtype.is_some();
            for (pos, dim) in ty.dims.iter().enumerate() {
                match dim {
                    ast::DimExpr::Ellipsis(span) => {
                        self.error(
                            Diagnostic::new(Code::E0311, *span, "`...` is not allowed in a model signature")
                                .note("model inputs need a fixed rank")
                                .rule("R3.4"),
                        );
                        valid = false;
                        shape.push(Dim::constant(1));
                    }
                    ast::DimExpr::Expr(expr) => match bare_name(expr) {
                        Some(name) if !scope.vars.contains_key(name) => {
                            let sym = self.new_symbol(name);
                            scope.vars.insert(name.to_string(), Value::Int(Dim::sym(sym)));
                            shape.push(Dim::sym(sym));
                        }
                        _ => {
                            pending.push((expr, arg_index, pos));
                            shape.push(Dim::constant(1));
                        }
                    },
                }
            }
            match dtype {
                Some(dtype) if valid => input_types.push((arg, TensorType { dtype, shape })),
                // Uses of an input whose type is wrong are not reported again.
                _ => {
                    scope.vars.insert(arg.name.name.clone(), Value::Error);
                }
            }
        }
        let mut invalid_inputs = Vec::new();
        for (expr, arg_index, pos) in pending {
            let unbound = unbound_names(&scope, expr);
            for (name, span) in &unbound {
                self.error(
                    Diagnostic::new(Code::E0310, *span, format!("dimension `{name}` is not bound by any input"))
                        .note(format!(
                            "name `{name}` alone in some input's type so it can be bound from that input's shape"
                        ))
                        .rule("R5.4"),
                );
            }
            let dim = if unbound.is_empty() { self.dim_expr(&mut scope, expr, "R5.4") } else { None };
            match dim {
                Some(dim) => {
                    if let Some((_, ty)) =
                        input_types.iter_mut().find(|(a, _)| std::ptr::eq(*a, &model.args[arg_index]))
                    {
                        ty.shape[pos] = dim;
                    }
                }
                None => invalid_inputs.push(arg_index),
            }
        }
        for (arg, ty) in input_types {
            if repeated_inputs.iter().any(|&i| std::ptr::eq(arg, &model.args[i])) {
                continue;
            }
            if invalid_inputs.iter().any(|&i| std::ptr::eq(arg, &model.args[i])) {
                scope.vars.insert(arg.name.name.clone(), Value::Error);
                continue;
            }
            let node = self.add_node(Op::Input { name: arg.name.name.clone() }, ty, arg.name.span);
            self.graph.inputs.push(node);
            scope.vars.insert(arg.name.name.clone(), Value::Tensor(node));
        }
        self.block(&mut scope, &model.body);
        let mut output_names: HashMap<&str, Span> = HashMap::new();
        for output in &model.outputs {
            if let Some(&first) = output_names.get(output.name.name.as_str()) {
                self.error(
                    Diagnostic::new(
                        Code::E0103,
                        output.name.span,
                        format!("output `{}` is declared twice", output.name.name),
                    )
                    .with_label(first, "first declared here")
                    .note("every output needs its own name")
                    .rule("R4.2"),
                );
                continue;
            }
            output_names.insert(&output.name.name, output.name.span);
            if !self.assigned.contains(&output.name.name)
                && let Some(input) = model.args.iter().find(|a| a.name.name == output.name.name)
            {
                self.error(
                    Diagnostic::new(
                        Code::E0108,
                        output.name.span,
                        format!("output `{}` is never assigned", output.name.name),
                    )
                    .label("declared as an output here")
                    .with_label(input.name.span, "this input of the same name is not the output's value")
                    .note(format!(
                        "assign it in the model body (`{} = ...`), or give the output another name",
                        output.name.name
                    ))
                    .rule("R4.2"),
                );
                continue;
            }
            let Some(dtype) = self.concrete_dtype(&scope, &output.ty.dtype) else { continue };
            let Some(shape) = self.shape_of(&mut scope, &output.ty) else { continue };
            let declared = TensorType { dtype, shape };
            match scope.vars.get(&output.name.name).cloned() {
                None => self.error(
                    Diagnostic::new(
                        Code::E0108,
                        output.name.span,
                        format!("output `{}` is never assigned", output.name.name),
                    )
                    .note(format!("assign it in the model body: `{} = ...`", output.name.name))
                    .rule("R4.2"),
                ),
                Some(Value::Error) => {}
                Some(value) => {
                    let node =
                        self.expect_type(value, &declared, output.span, &format!("output `{}`", output.name.name));
                    if let Some(node) = node {
                        self.graph.outputs.push(ir::Output { name: output.name.name.clone(), node });
                    }
                }
            }
        }
        for grads in &model.grads {
            self.param_grads(&scope, grads);
        }
    }

    /// Checks that `value` is a tensor of exactly `declared` (weak scalars are materialised for rank 0).
    pub(crate) fn expect_type(
        &mut self,
        value: Value,
        declared: &TensorType,
        span: Span,
        what: &str,
    ) -> Option<NodeId> {
        let node = match value {
            Value::Tensor(node) => node,
            Value::Error => return None,
            weak if declared.shape.is_empty() => self.materialize(weak, declared.dtype, span)?,
            other => {
                self.error(
                    Diagnostic::new(
                        Code::E0203,
                        span,
                        format!("{what} must be a tensor of type {}, found {}", self.show_type(declared), other.kind()),
                    )
                    .rule("R4.2"),
                );
                return None;
            }
        };
        let actual = self.ty(node).clone();
        if actual.dtype != declared.dtype {
            self.error(
                Diagnostic::new(
                    Code::E0201,
                    span,
                    format!("{what} has dtype {}, but {} is declared", actual.dtype.name(), declared.dtype.name()),
                )
                .with_label(self.graph.nodes.span(node), format!("this value is {}", self.show_type(&actual)))
                .rule(if self.frames.is_empty() { "R4.2" } else { "R5.1" }),
            );
            return None;
        }
        if actual.shape != declared.shape {
            self.error(
                Diagnostic::new(
                    Code::E0304,
                    span,
                    format!(
                        "{what} has shape {}, but {} is declared",
                        self.show_shape(&actual.shape),
                        self.show_shape(&declared.shape)
                    ),
                )
                .with_label(self.graph.nodes.span(node), format!("this value is {}", self.show_type(&actual)))
                .rule(if self.frames.is_empty() { "R4.2" } else { "R5.1" }),
            );
            return None;
        }
        Some(node)
    }

    /// A dtype written in a type: a dtype name, or a dtype variable bound in `scope`.
    pub(crate) fn concrete_dtype(&mut self, scope: &Scope, ident: &ast::Ident) -> Option<DType> {
        if let Some(dtype) = DType::from_name(&ident.name) {
            return Some(dtype);
        }
        if let Some(dtype) = scope.dtypes.get(&ident.name) {
            return Some(*dtype);
        }
        self.error(
            Diagnostic::new(Code::E0109, ident.span, format!("unknown dtype `{}`", ident.name))
                .note("dtypes are f32, f16, i32, u32 and bool; dtype variables are only allowed in function signatures")
                .rule("R3.1"),
        );
        None
    }

    /// The shape of a written type, every dimension evaluated in `scope`; `None` (reported) when a dimension
    /// is invalid or names something no argument binds (E0310).
    pub(crate) fn shape_of(&mut self, scope: &mut Scope, ty: &ast::TypeExpr) -> Option<Vec<Dim>> {
        let mut shape = Vec::new();
        let mut ok = true;
        for dim in &ty.dims {
            match dim {
                ast::DimExpr::Ellipsis(span) => match scope.vars.get(call::ELLIPSIS).cloned() {
                    Some(Value::List(dims)) => {
                        shape.extend(dims.into_iter().filter_map(|v| match v {
                            Value::Int(d) => Some(d),
                            _ => None,
                        }));
                    }
                    _ => {
                        self.error(
                            Diagnostic::new(Code::E0311, *span, "`...` is only allowed in function signatures")
                                .rule("R3.4"),
                        );
                        ok = false;
                    }
                },
                ast::DimExpr::Expr(expr) => {
                    let unbound = unbound_names(scope, expr);
                    if !unbound.is_empty() {
                        for (name, span) in unbound {
                            let whose = if self.frames.is_empty() { "input" } else { "argument" };
                            self.error(
                                Diagnostic::new(
                                    Code::E0310,
                                    span,
                                    format!("dimension `{name}` is not bound by any {whose}"),
                                )
                                .note(if self.frames.is_empty() {
                                    "a model's dimensions are named by its inputs' types".to_string()
                                } else {
                                    format!("add an argument `{name}: int`, or use `{name}` in an argument's type")
                                })
                                .rule("R5.4"),
                            );
                        }
                        ok = false;
                        continue;
                    }
                    match self.dim_expr(scope, expr, "R3.2") {
                        Some(d) => shape.push(d),
                        None => ok = false,
                    }
                }
            }
        }
        ok.then_some(shape)
    }

    /// Evaluates a dimension expression (R3.2).
    pub(crate) fn dim_expr(&mut self, scope: &mut Scope, expr: &ast::Expr, rule: &'static str) -> Option<Dim> {
        match self.expr(scope, expr) {
            Value::Int(d) => {
                if let Some(c) = d.as_const()
                    && c < 1
                {
                    self.error(
                        Diagnostic::new(Code::E0311, expr.span, format!("dimension evaluates to {c}"))
                            .note("every dimension must be at least 1")
                            .rule("R3.3"),
                    );
                    return None;
                }
                Some(d)
            }
            Value::Error => None,
            other => {
                self.error(
                    Diagnostic::new(
                        Code::E0203,
                        expr.span,
                        format!("a dimension must be an integer expression, found {}", other.kind()),
                    )
                    .rule(rule),
                );
                None
            }
        }
    }

    pub(crate) fn block(&mut self, scope: &mut Scope, block: &ast::Block) {
        for stmt in &block.stmts {
            if scope.returned.is_some() {
                self.error(
                    Diagnostic::new(Code::E0108, stmt.span(), "statement after `return`")
                        .label("this is never reached")
                        .note("`return` must be the last statement of a function")
                        .rule("R5.1"),
                );
                break;
            }
            self.stmt(scope, stmt);
            // Straight-line code grows the graph too (R4.5). Elaboration goes on, so the rest of the model
            // is still checked (without follow-on errors such as an unassigned output).
            self.within_size_limit(stmt.span());
        }
    }

    fn stmt(&mut self, scope: &mut Scope, stmt: &ast::Stmt) {
        match stmt {
            ast::Stmt::Param { key, path, ty, init, span } => {
                self.param(scope, key.as_ref(), path, ty, init.as_ref(), *span)
            }
            ast::Stmt::Destructure { names, value, span } => self.destructure(scope, names, value, *span),
            ast::Stmt::Assign { name, value, .. } => {
                self.note_assignment(&name.name);
                let value = self.expr(scope, value);
                scope.vars.insert(name.name.clone(), value);
            }
            ast::Stmt::Define { name, indices, value, span } => {
                self.note_assignment(&name.name);
                let result = self.define(scope, name, indices, value, *span);
                scope.vars.insert(name.name.clone(), result);
            }
            ast::Stmt::For { var, start, end, body, .. } => self.for_loop(scope, var, start, end, body),
            ast::Stmt::Return { value, span } => {
                if self.frames.is_empty() {
                    self.error(
                        Diagnostic::new(Code::E0108, *span, "`return` in a model")
                            .note("a model assigns each declared output by name instead")
                            .rule("R4.2"),
                    );
                    return;
                }
                let fns = self.fns;
                let values = match &value.kind {
                    ast::ExprKind::Tuple(items) => items.iter().map(|item| self.expr(scope, item)).collect(),
                    // `return f(...)` of a function with several results returns them all (R5.6).
                    ast::ExprKind::Call { callee, prefix, args }
                        if !scope.dtypes.contains_key(&callee.text())
                            && fns.get(&callee.text()).is_some_and(|entry| entry.def.results.len() > 1) =>
                    {
                        match fns.get(&callee.text()) {
                            Some(entry) => self
                                .call_all(scope, entry, prefix.as_ref(), args, value.span)
                                .unwrap_or_else(|| vec![Value::Error; entry.def.results.len()]),
                            None => vec![Value::Error],
                        }
                    }
                    _ => vec![self.expr(scope, value)],
                };
                scope.returned = Some(values);
            }
            ast::Stmt::Error(_) => {}
        }
    }

    /// Records that a model's own body assigns `name` (assignments inside inlined functions are not the model's).
    fn note_assignment(&mut self, name: &str) {
        if self.frames.is_empty() {
            self.assigned.insert(name.to_string());
        }
    }

    /// Reports every argument whose name an earlier argument of the same list already has (E0103, on the
    /// later one, labelled with the first); returns the indices of the repeated ones.
    pub(crate) fn report_repeated_names(
        &mut self,
        args: &[ast::ArgDecl],
        what: &str,
        rule: &'static str,
    ) -> Vec<usize> {
        let (diags, repeated) = repeated_names(args, what, rule);
        for diag in diags {
            self.error(diag);
        }
        repeated
    }

    /// `(a, b) = value` (R5.6): a call of a function with several results, or a tuple `(x, y)`, gives one
    /// value per name; any other value is one value.
    fn destructure(&mut self, scope: &mut Scope, names: &[ast::Ident], value: &ast::Expr, span: Span) {
        for (i, name) in names.iter().enumerate() {
            self.note_assignment(&name.name);
            if let Some(first) = names[..i].iter().find(|n| n.name == name.name) {
                self.error(
                    Diagnostic::new(Code::E0103, name.span, format!("`{}` is named twice on the left", name.name))
                        .with_label(first.span, "first named here")
                        .note("each value needs its own name; the later one would overwrite the earlier")
                        .rule("R5.6"),
                );
            }
        }
        let callee = match &value.kind {
            ast::ExprKind::Call { callee, prefix, args } if !scope.dtypes.contains_key(&callee.text()) => {
                self.fns.get(&callee.text()).map(|entry| (entry, prefix, args))
            }
            _ => None,
        };
        let (count, what) = match (&value.kind, &callee) {
            (_, Some((entry, ..))) => (entry.def.results.len(), format!("`{}` returns", entry.name)),
            (ast::ExprKind::Tuple(items), None) => (items.len(), "the tuple on the right has".to_string()),
            _ => (1, "the right side is".to_string()),
        };
        // A single value is elaborated first: an unknown function or a bad operand is reported as such.
        let single = match (&value.kind, &callee) {
            (ast::ExprKind::Tuple(_), _) | (_, Some(_)) => None,
            _ => Some(self.expr(scope, value)),
        };
        let values = if matches!(single, Some(Value::Error)) {
            None
        } else if count != names.len() {
            let plural = |n: usize, what: &str| if n == 1 { format!("one {what}") } else { format!("{n} {what}s") };
            let mut diag = Diagnostic::new(
                Code::E0115,
                span,
                format!("{} on the left, but {what} {}", plural(names.len(), "name"), plural(count, "value")),
            )
            .with_label(value.span, format!("this gives {}", plural(count, "value")))
            .rule("R5.6");
            if let Some((entry, ..)) = &callee {
                diag = diag
                    .with_label(entry.def.name.span, format!("`{}` is declared here", entry.name))
                    .note(format!("write one name per result: `({}) = ...`", call::result_names(entry.def).join(", ")));
            } else if count == 1 {
                diag = diag
                    .note("only a call of a function with several results, or a tuple `(x, y)`, gives several values");
            }
            self.error(diag);
            None
        } else if let Some((entry, prefix, args)) = callee {
            self.call_all(scope, entry, prefix.as_ref(), args, value.span)
        } else if let ast::ExprKind::Tuple(items) = &value.kind {
            Some(items.iter().map(|item| self.expr(scope, item)).collect())
        } else {
            single.map(|v| vec![v])
        };
        let values = values.unwrap_or_else(|| vec![Value::Error; names.len()]);
        for (name, value) in names.iter().zip(values) {
            scope.vars.insert(name.name.clone(), value);
        }
    }

    /// A call's arguments, each elaborated in the caller's scope.
    fn arg_values(&mut self, scope: &mut Scope, args: &[ast::CallArg]) -> Vec<call::ArgValue> {
        args.iter()
            .map(|arg| call::ArgValue {
                name: arg.name.clone(),
                value: self.expr(scope, &arg.value),
                span: arg.value.span,
            })
            .collect()
    }

    /// A call of the user function `entry` that gives all its results (R5.6).
    fn call_all(
        &mut self,
        scope: &mut Scope,
        entry: &call::FnEntry<'p>,
        prefix: Option<&ast::StrLit>,
        args: &[ast::CallArg],
        span: Span,
    ) -> Option<Vec<Value>> {
        let values = self.arg_values(scope, args);
        let prefix = prefix.and_then(|p| self.interpolate(scope, p, "param prefix"));
        self.instantiate_all(entry, scope, prefix, values, span)
    }

    fn param(
        &mut self,
        scope: &mut Scope,
        written_key: Option<&ast::StrLit>,
        path: &ast::Path,
        ty: &ast::TypeExpr,
        init: Option<&ast::Expr>,
        span: Span,
    ) {
        let local = path.text();
        self.note_assignment(&local);
        // `param "weight_ih_l{l}" as w: ...` is keyed by the string, `{l}` replaced (R4.3).
        let name = match written_key {
            Some(lit) => match self.interpolate(scope, lit, "param key") {
                Some(name) => name,
                None => {
                    scope.vars.insert(local, Value::Error);
                    return;
                }
            },
            None => local.clone(),
        };
        let key = if scope.prefix.is_empty() { name } else { format!("{}.{name}", scope.prefix) };
        let Some(dtype) = self.concrete_dtype(scope, &ty.dtype) else {
            scope.vars.insert(local, Value::Error);
            return;
        };
        let Some(shape) = self.shape_of(scope, ty) else {
            scope.vars.insert(local, Value::Error);
            return;
        };
        let declared = TensorType { dtype, shape };
        let site = self.param_site(span);
        if let Some(&node) = self.params.get(&key) {
            let first = self.param_sites.get(&key).cloned().unwrap_or_else(|| site.clone());
            if self.ty(node) != &declared {
                let message = format!(
                    "param `{key}` is declared again as {} but was first declared as {}",
                    self.show_type(&declared),
                    self.show_type(self.ty(node))
                );
                let mut diag = Diagnostic::new(Code::E0103, site.span, message)
                    .label(site.describe("declares it again"))
                    .with_label(first.span, first.describe("first declared it"))
                    .note("the same key may be declared twice only with the same type (the weight is shared)");
                if site.call.is_some() {
                    diag = diag.with_label(span, "the param declaration");
                    if site.shares_by_accident(&first) && self.warned_shares.insert((key.clone(), site.span)) {
                        diag = diag.note(format!(
                            "for separate weights, give each call its own prefix (R5.3): {}",
                            site.example()
                        ));
                    }
                }
                self.error(diag.rule("R4.3"));
                scope.vars.insert(local, Value::Error);
                return;
            }
            if site.shares_by_accident(&first) && self.warned_shares.insert((key.clone(), site.span)) {
                let mut diag = Diagnostic::new(
                    Code::W0002,
                    site.span,
                    format!("param `{key}` is shared with an earlier declaration: neither has a param prefix"),
                )
                .label(site.describe("declares it again"));
                if first.span != site.span {
                    diag = diag.with_label(first.span, first.describe("first declared it"));
                } else {
                    diag = diag.note(format!(
                        "the call runs more than once (in a loop), declaring the key each time; a prefix with the \
                         loop variable gives each run its own weight: `{}[\"name{{i}}\"](...)`",
                        site.call.as_deref().unwrap_or("f")
                    ));
                }
                diag = diag
                    .note(format!("params are keyed by the call's prefix (R4.3, R5.3), so both use one weight `{key}`"))
                    .note(format!(
                        "give each call its own prefix for separate weights, or the same prefix to share the weight \
                         on purpose without this warning: {}",
                        site.example()
                    ));
                self.error(diag.rule("R4.3"));
            }
            scope.vars.insert(local, Value::Tensor(node));
            return;
        }
        let init = init.and_then(|init| self.param_init(scope, init, &declared));
        let node = self.add_node(Op::Param { key: key.clone() }, declared, path.span);
        self.graph.params.push(node);
        if let Some(init) = init {
            self.graph.inits.push((node, init));
        }
        self.params.insert(key.clone(), node);
        self.param_sites.insert(key, site);
        scope.vars.insert(local, Value::Tensor(node));
    }

    /// Where a `param` statement at `span` is declared from the user's point of view: the innermost call
    /// written outside the standard library (the user's `Linear(x, 8)`, not a line of std/nn.tdsl), or
    /// the statement itself in a model's body.
    fn param_site(&self, span: Span) -> ParamSite {
        let frames = &self.frames[usize::from(self.generic).min(self.frames.len())..];
        let user = frames.iter().rev().find(|f| !self.fns.std_files.contains(&f.call_span.file)).or(frames.last());
        ParamSite {
            span: user.map_or(span, |f| f.call_span),
            call: user.map(|f| f.name.clone()),
            calls: frames.iter().map(|f| (f.instance, f.prefixed)).collect(),
        }
    }

    fn for_loop(&mut self, scope: &mut Scope, var: &ast::Ident, start: &ast::Expr, end: &ast::Expr, body: &ast::Block) {
        let bounds = [start, end].map(|e| match self.expr(scope, e) {
            Value::Int(d) => match d.as_const() {
                Some(v) => Some(v),
                None => {
                    self.error(
                        Diagnostic::new(Code::E0203, e.span, "loop bounds must be known integers")
                            .label(format!("this is the symbolic dimension {}", self.show_dim(&d)))
                            .note(
                                "loops unroll when the model is checked, so a dimension that bounds one must be \
                                 known then: write it as a literal in the model's input type",
                            )
                            .rule("R4.5"),
                    );
                    None
                }
            },
            Value::Error => None,
            other => {
                self.error(
                    Diagnostic::new(
                        Code::E0203,
                        e.span,
                        format!("loop bounds must be integers, found {}", other.kind()),
                    )
                    .rule("R4.5"),
                );
                None
            }
        });
        let [Some(lo), Some(hi)] = bounds else {
            // What the body would have assigned is unknown: later uses are not reported again.
            poison_assigned(scope, body);
            return;
        };
        let header = var.span.to(end.span);
        let saved = scope.vars.get(&var.name).cloned();
        for i in lo..hi {
            self.unrolled += 1;
            if !self.within_size_limit(header) {
                break;
            }
            if self.unrolled > MAX_UNROLLED_ITERATIONS {
                if !self.reported_limit {
                    self.reported_limit = true;
                    self.error(
                        Diagnostic::new(
                            Code::E0110,
                            header,
                            format!("loops unroll to more than {MAX_UNROLLED_ITERATIONS} iterations"),
                        )
                        .label(format!("this loop runs {} times", hi.saturating_sub(lo)))
                        .note("loops are unrolled at compile time; keep them to layer stacks and small fixed counts")
                        .rule("R4.5"),
                    );
                }
                break;
            }
            scope.vars.insert(var.name.clone(), Value::Int(Dim::constant(i)));
            self.block(scope, body);
            if scope.returned.is_some() {
                break;
            }
        }
        match saved {
            Some(v) => scope.vars.insert(var.name.clone(), v),
            None => scope.vars.remove(&var.name),
        };
    }

    /// Elaborates an expression in whole-tensor context.
    pub(crate) fn expr(&mut self, scope: &mut Scope, expr: &ast::Expr) -> Value {
        match &expr.kind {
            ast::ExprKind::Int(v) => Value::Int(Dim::constant(*v)),
            ast::ExprKind::Float(v) => Value::Float(*v),
            ast::ExprKind::Bool(b) => Value::Bool(*b),
            ast::ExprKind::Name(path) => self.lookup(scope, path),
            ast::ExprKind::Unary(op, operand) => {
                let value = self.expr(scope, operand);
                self.unary(*op, value, expr.span)
            }
            ast::ExprKind::Binary(ast::BinOp::MatMul, a, b) => {
                let a_val = self.expr(scope, a);
                let b_val = self.expr(scope, b);
                self.matmul(a_val, b_val, a.span, b.span, expr.span)
            }
            ast::ExprKind::Binary(op, a, b) => {
                let a_val = self.expr(scope, a);
                let b_val = self.expr(scope, b);
                self.binary(*op, a_val, b_val, expr.span)
            }
            ast::ExprKind::Call { callee, prefix, args } => self.call(scope, callee, prefix.as_ref(), args, expr.span),
            ast::ExprKind::Access { tensor, .. } => {
                self.error(
                    Diagnostic::new(
                        Code::E0203,
                        expr.span,
                        format!("element access `{}[...]` outside index notation", tensor.text()),
                    )
                    .note("elements are read on the right of a definition like `y[i] = x[i + 1]`; use `slice` or `gather` on whole tensors")
                    .rule("R7.1"),
                );
                Value::Error
            }
            ast::ExprKind::Reduce { op, .. } => {
                self.error(
                    Diagnostic::new(
                        Code::E0203,
                        expr.span,
                        format!("index-notation reduction `{}[...]` outside a definition", op.name()),
                    )
                    .note(format!(
                        "use it on the right of `y[i] = ...`, or reduce a whole tensor with `{}(x, axis: ...)`",
                        op.name()
                    ))
                    .rule("R7.4"),
                );
                Value::Error
            }
            ast::ExprKind::List(items) => Value::List(items.iter().map(|e| self.expr(scope, e)).collect()),
            ast::ExprKind::Tuple(items) => {
                self.error(
                    Diagnostic::new(Code::E0114, expr.span, format!("a tuple of {} values is not one value", items.len()))
                        .label("several values where one is expected")
                        .note("tuples are written after `return` in a function with several results, or on the right of `(a, b) = ...`")
                        .rule("R5.6"),
                );
                Value::Error
            }
            ast::ExprKind::Error => Value::Error,
        }
    }

    fn lookup(&mut self, scope: &Scope, path: &ast::Path) -> Value {
        let name = path.text();
        if let Some(value) = scope.vars.get(&name) {
            return value.clone();
        }
        // The float literals without digits (R3.6): a variable of the same name shadows them.
        match name.as_str() {
            "inf" => return Value::Float(f64::INFINITY),
            "nan" => return Value::Float(f64::NAN),
            _ => {}
        }
        let mut diag = Diagnostic::new(Code::E0101, path.span, format!("unknown name `{name}`")).rule("R4.4");
        if self.fns.get(&name).is_some() || builtins::is_builtin(&name) {
            diag = diag.note(format!("`{name}` is a function; call it with `{name}(...)`"));
        } else if let Some(similar) = closest(&name, scope.vars.keys()) {
            diag = diag.note(format!("a variable with a similar name exists: `{similar}`"));
        }
        self.error(diag);
        Value::Error
    }

    /// Elaborates a call: user functions first, then built-ins.
    fn call(
        &mut self,
        scope: &mut Scope,
        callee: &ast::Path,
        prefix: Option<&ast::StrLit>,
        args: &[ast::CallArg],
        span: Span,
    ) -> Value {
        let name = callee.text();
        let values = self.arg_values(scope, args);
        if let Some(&dtype) = scope.dtypes.get(&name) {
            // A dtype variable used as a conversion: `T(mask)`.
            if let [arg] = values.as_slice()
                && arg.name.is_none()
            {
                return self.cast(arg.value.clone(), dtype, arg.span, span);
            }
            self.error(
                Diagnostic::new(Code::E0106, span, format!("conversion `{name}(...)` takes one positional argument"))
                    .rule("R5.2"),
            );
            return Value::Error;
        }
        if let Some(entry) = self.fns.get(&name) {
            let prefix = prefix.and_then(|p| self.interpolate(scope, p, "param prefix"));
            return self.instantiate(entry, scope, prefix, values, span);
        }
        if builtins::is_builtin(&name) {
            if let Some(p) = prefix {
                self.error(
                    Diagnostic::new(Code::E0106, p.span, format!("built-in `{name}` takes no param prefix"))
                        .note("only functions that declare params use a prefix")
                        .rule("R5.3"),
                );
            }
            return self.builtin(&name, values, callee.span, span);
        }
        let mut diag = Diagnostic::new(Code::E0102, callee.span, format!("unknown function `{name}`")).rule("R4.1");
        let candidates = self.fns.names().map(|s| s.to_string()).chain(builtins::NAMES.iter().map(|s| s.to_string()));
        let candidates: Vec<String> = candidates.collect();
        if let Some(module) = crate::driver::std_module_defining(&name) {
            diag = diag.note(format!("`{name}` is defined in the standard library: add `import \"std/{module}\"`"));
        } else if let Some(similar) = closest(&name, candidates.iter()) {
            diag = diag.note(format!("did you mean `{similar}`?"));
        }
        self.error(diag);
        Value::Error
    }

    /// Replaces `{name}` in a param prefix or key (`what`) by integer variables' values (R4.3, R5.3).
    fn interpolate(&mut self, scope: &Scope, lit: &ast::StrLit, what: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = lit.value.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                self.error(Diagnostic::new(Code::E0002, lit.span, format!("unclosed `{{` in {what}")).rule("R1.5"));
                return None;
            };
            let name = &rest[open + 1..open + close];
            match scope.vars.get(name).cloned() {
                Some(Value::Int(d)) => match d.as_const() {
                    Some(v) => out.push_str(&v.to_string()),
                    // Only in a stand-alone check, where `int` arguments are symbols: keep the name.
                    None => out.push_str(&format!("{{{name}}}")),
                },
                _ => {
                    self.error(
                        Diagnostic::new(
                            Code::E0101,
                            lit.span,
                            format!("`{{{name}}}` in a {what} must name a known integer variable"),
                        )
                        .rule(if what == "param key" { "R4.3" } else { "R5.3" }),
                    );
                    return None;
                }
            }
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        Some(out)
    }
}

/// The E0103 diagnostics for arguments named like an earlier one of `args`, and the indices of those
/// arguments.
pub(crate) fn repeated_names(args: &[ast::ArgDecl], what: &str, rule: &'static str) -> (Vec<Diagnostic>, Vec<usize>) {
    let mut first: HashMap<&str, Span> = HashMap::new();
    let mut diags = Vec::new();
    let mut repeated = Vec::new();
    for (index, arg) in args.iter().enumerate() {
        match first.get(arg.name.name.as_str()) {
            Some(&span) => {
                diags.push(
                    Diagnostic::new(
                        Code::E0103,
                        arg.name.span,
                        format!("{what} `{}` is declared twice", arg.name.name),
                    )
                    .with_label(span, "first declared here")
                    .note(format!("every {what} needs its own name"))
                    .rule(rule),
                );
                repeated.push(index);
            }
            None => {
                first.insert(&arg.name.name, arg.name.span);
            }
        }
    }
    (diags, repeated)
}

/// Sets every name that `block` assigns (at any depth) to `Value::Error`, for a loop that was not unrolled.
fn poison_assigned(scope: &mut Scope, block: &ast::Block) {
    for stmt in &block.stmts {
        match stmt {
            ast::Stmt::Param { path, .. } => {
                scope.vars.insert(path.text(), Value::Error);
            }
            ast::Stmt::Assign { name, .. } | ast::Stmt::Define { name, .. } => {
                scope.vars.insert(name.name.clone(), Value::Error);
            }
            ast::Stmt::Destructure { names, .. } => {
                for name in names {
                    scope.vars.insert(name.name.clone(), Value::Error);
                }
            }
            ast::Stmt::For { body, .. } => poison_assigned(scope, body),
            ast::Stmt::Return { .. } | ast::Stmt::Error(_) => {}
        }
    }
}

/// `name` when `expr` is a single identifier.
pub(crate) fn bare_name(expr: &ast::Expr) -> Option<&str> {
    match &expr.kind {
        ast::ExprKind::Name(path) if path.segments.len() == 1 => Some(&path.segments[0].name),
        _ => None,
    }
}

/// The candidate closest to `name` by edit distance, if any is close.
/// The candidate closest to `name` by edit distance (ties broken alphabetically, so output is stable), if
/// `name` is long enough for a suggestion to mean something and the candidate is close.
fn closest<'a, I: Iterator<Item = &'a String>>(name: &str, candidates: I) -> Option<String> {
    if name.chars().count() < 3 {
        return None;
    }
    let limit = 1.max(name.chars().count() / 3);
    candidates
        .filter(|c| c.as_str() != name && !c.starts_with('.'))
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c.clone())
}

/// The names in a dimension expression that `scope` does not bind, with their spans.
fn unbound_names(scope: &Scope, expr: &ast::Expr) -> Vec<(String, Span)> {
    let mut out = Vec::new();
    fn walk(scope: &Scope, expr: &ast::Expr, out: &mut Vec<(String, Span)>) {
        match &expr.kind {
            ast::ExprKind::Name(path) => {
                let name = path.text();
                if !scope.vars.contains_key(&name) {
                    out.push((name, path.span));
                }
            }
            ast::ExprKind::Unary(_, x) => walk(scope, x, out),
            ast::ExprKind::Binary(_, a, b) => {
                walk(scope, a, out);
                walk(scope, b, out);
            }
            _ => {}
        }
    }
    walk(scope, expr, &mut out);
    out
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = row;
    }
    prev[b.len()]
}
