//! The canonical printer: `SourceFileAst` -> deterministic source text (4-space indentation, one statement
//! per line, a blank line between items, only the parentheses the grammar needs). For every tree the parser
//! can produce without `Error` nodes, `parse(print(ast))` gives back `ast` up to spans (`erase_spans`);
//! `Error` nodes print as `<error>`, which does not parse. Floats print with `{:?}`, which round-trips.

use std::fmt::Write as _;

use super::ast::*;
use crate::span::Span;

/// Prints a whole file.
pub fn print(ast: &SourceFileAst) -> String {
    let mut out = String::new();
    for (i, item) in ast.items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        print_item(&mut out, item);
    }
    out
}

/// Prints one expression as it would appear on the right of `=`.
pub fn print_expr(expr: &Expr) -> String {
    let mut out = String::new();
    write_expr(&mut out, expr, Prec::Or);
    out
}

/// Sets every span in the tree to `Span::default()`, so that trees can be compared modulo positions.
pub fn erase_spans(ast: &mut SourceFileAst) {
    for item in &mut ast.items {
        match item {
            Item::Import(import) => {
                import.span = Span::default();
                import.path.span = Span::default();
                if let Some(alias) = &mut import.alias {
                    alias.span = Span::default();
                }
            }
            Item::Fn(f) => {
                f.span = Span::default();
                f.name.span = Span::default();
                f.args.iter_mut().for_each(erase_arg);
                for result in &mut f.results {
                    result.span = Span::default();
                    if let Some(name) = &mut result.name {
                        name.span = Span::default();
                    }
                    erase_type(&mut result.ty);
                }
                erase_block(&mut f.body);
            }
            Item::Model(m) => {
                m.span = Span::default();
                m.name.span = Span::default();
                m.args.iter_mut().for_each(erase_arg);
                for output in &mut m.outputs {
                    output.span = Span::default();
                    output.name.span = Span::default();
                    erase_type(&mut output.ty);
                }
                for g in &mut m.grads {
                    g.span = Span::default();
                    g.keyword.span = Span::default();
                    g.loss.span = Span::default();
                }
                erase_block(&mut m.body);
            }
            Item::Error(span) => *span = Span::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Items and statements

fn print_item(out: &mut String, item: &Item) {
    match item {
        Item::Import(import) => {
            out.push_str("import ");
            write_string(out, &import.path.value);
            if let Some(alias) = &import.alias {
                let _ = write!(out, " as {}", alias.name);
            }
            out.push('\n');
        }
        Item::Fn(f) => {
            let _ = write!(out, "fn {}(", f.name.name);
            write_args(out, &f.args);
            out.push_str(") -> ");
            write_results(out, &f.results);
            out.push(' ');
            write_block(out, &f.body, 0);
            out.push('\n');
        }
        Item::Model(m) => {
            let _ = write!(out, "model {}(", m.name.name);
            write_args(out, &m.args);
            out.push_str(") -> (");
            for (i, output) in m.outputs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{}: ", output.name.name);
                write_type(out, &output.ty);
            }
            for (i, g) in m.grads.iter().enumerate() {
                if i > 0 || !m.outputs.is_empty() {
                    out.push_str(", ");
                }
                let _ = write!(out, "{}({})", g.keyword.name, g.loss.name);
            }
            out.push_str(") ");
            write_block(out, &m.body, 0);
            out.push('\n');
        }
        Item::Error(_) => out.push_str("<error>\n"),
    }
}

/// `T[N]` for one unnamed result, `(h: T[N], T[M])` otherwise.
fn write_results(out: &mut String, results: &[ResultDecl]) {
    if let [ResultDecl { name: None, ty, .. }] = results {
        write_type(out, ty);
        return;
    }
    out.push('(');
    for (i, result) in results.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if let Some(name) = &result.name {
            let _ = write!(out, "{}: ", name.name);
        }
        write_type(out, &result.ty);
    }
    out.push(')');
}

fn write_args(out: &mut String, args: &[ArgDecl]) {
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}: ", arg.name.name);
        match &arg.ty {
            ArgType::Tensor(ty) => write_type(out, ty),
            ArgType::Int(_) => out.push_str("int"),
            ArgType::Float(_) => out.push_str("float"),
            ArgType::Bool(_) => out.push_str("bool"),
        }
        if let Some(default) = &arg.default {
            out.push_str(" = ");
            write_expr(out, default, Prec::Or);
        }
    }
}

fn write_type(out: &mut String, ty: &TypeExpr) {
    out.push_str(&ty.dtype.name);
    out.push('[');
    for (i, dim) in ty.dims.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match dim {
            DimExpr::Ellipsis(_) => out.push_str("..."),
            DimExpr::Expr(e) => write_expr(out, e, Prec::Or),
        }
    }
    out.push(']');
}

/// Writes `{`, the statements one per line at `indent + 1`, and `}` at `indent` (no trailing newline).
fn write_block(out: &mut String, block: &Block, indent: usize) {
    out.push_str("{\n");
    for stmt in &block.stmts {
        push_indent(out, indent + 1);
        write_stmt(out, stmt, indent + 1);
        out.push('\n');
    }
    push_indent(out, indent);
    out.push('}');
}

fn push_indent(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push_str("    ");
    }
}

fn write_stmt(out: &mut String, stmt: &Stmt, indent: usize) {
    match stmt {
        Stmt::Param { key, path, ty, init, .. } => {
            out.push_str("param ");
            if let Some(key) = key {
                write_string(out, &key.value);
                out.push_str(" as ");
            }
            let _ = write!(out, "{}: ", path.text());
            write_type(out, ty);
            if let Some(init) = init {
                out.push_str(" = ");
                write_expr(out, init, Prec::Or);
            }
        }
        Stmt::Assign { name, value, .. } => {
            let _ = write!(out, "{} = ", name.name);
            write_expr(out, value, Prec::Or);
        }
        Stmt::Destructure { names, value, .. } => {
            let names: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
            let _ = write!(out, "({}) = ", names.join(", "));
            write_expr(out, value, Prec::Or);
        }
        Stmt::Define { name, indices, value, .. } => {
            out.push_str(&name.name);
            write_index_decls(out, indices);
            out.push_str(" = ");
            write_expr(out, value, Prec::Or);
        }
        Stmt::For { var, start, end, body, .. } => {
            let _ = write!(out, "for {} in ", var.name);
            write_expr(out, start, Prec::Or);
            out.push_str("..");
            write_expr(out, end, Prec::Or);
            out.push(' ');
            write_block(out, body, indent);
        }
        Stmt::Return { value, .. } => {
            out.push_str("return ");
            write_expr(out, value, Prec::Or);
        }
        Stmt::Error(_) => out.push_str("<error>"),
    }
}

fn write_index_decls(out: &mut String, indices: &[IndexDecl]) {
    out.push('[');
    for (i, index) in indices.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&index.name.name);
        if let Some(extent) = &index.extent {
            out.push_str(": ");
            write_expr(out, extent, Prec::Or);
        }
    }
    out.push(']');
}

// ---------------------------------------------------------------------------------------------------------
// Expressions

/// Binding strength, loosest first; mirrors the grammar's levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Prec {
    Or,
    And,
    Compare,
    Additive,
    Term,
    /// `-x`, `!x`, and an access with `else` (whose default is a unary that would swallow a following `^`).
    Unary,
    Power,
    Postfix,
}

fn binary_prec(op: BinOp) -> Prec {
    match op {
        BinOp::Or => Prec::Or,
        BinOp::And => Prec::And,
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => Prec::Compare,
        BinOp::Add | BinOp::Sub => Prec::Additive,
        BinOp::Mul | BinOp::Div | BinOp::Rem | BinOp::MatMul => Prec::Term,
        BinOp::Pow => Prec::Power,
    }
}

fn expr_prec(expr: &Expr) -> Prec {
    match &expr.kind {
        ExprKind::Binary(op, _, _) => binary_prec(*op),
        ExprKind::Unary(..) => Prec::Unary,
        ExprKind::Access { default: Some(_), .. } => Prec::Unary,
        _ => Prec::Postfix,
    }
}

/// Writes `expr` so that it parses back at a position that needs at least `min` binding strength.
fn write_expr(out: &mut String, expr: &Expr, min: Prec) {
    if expr_prec(expr) < min {
        out.push('(');
        write_expr(out, expr, Prec::Or);
        out.push(')');
        return;
    }
    match &expr.kind {
        ExprKind::Int(v) => {
            let _ = write!(out, "{v}");
        }
        ExprKind::Float(v) => {
            let _ = write!(out, "{v:?}");
        }
        ExprKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ExprKind::Name(path) => out.push_str(&path.text()),
        ExprKind::Unary(op, operand) => {
            out.push(match op {
                UnaryOp::Neg => '-',
                UnaryOp::Not => '!',
            });
            write_expr(out, operand, Prec::Unary);
        }
        ExprKind::Binary(op, a, b) => {
            let prec = binary_prec(*op);
            let (left, right) = match prec {
                // `power = postfix [ "^" unary ]`
                Prec::Power => (Prec::Postfix, Prec::Unary),
                // Comparisons do not associate.
                Prec::Compare => (Prec::Additive, Prec::Additive),
                // Left associative: the right operand must bind tighter.
                _ => (prec, next(prec)),
            };
            write_expr(out, a, left);
            let _ = write!(out, " {} ", op.symbol());
            write_expr(out, b, right);
        }
        ExprKind::Call { callee, prefix, args } => {
            out.push_str(&callee.text());
            if let Some(prefix) = prefix {
                out.push('[');
                write_string(out, &prefix.value);
                out.push(']');
            }
            out.push('(');
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if let Some(name) = &arg.name {
                    let _ = write!(out, "{}: ", name.name);
                }
                write_expr(out, &arg.value, Prec::Or);
            }
            out.push(')');
        }
        ExprKind::Access { tensor, indices, default } => {
            out.push_str(&tensor.text());
            write_list(out, indices);
            if let Some(default) = default {
                out.push_str(" else ");
                write_expr(out, default, Prec::Unary);
            }
        }
        ExprKind::Reduce { op, indices, body } => {
            out.push_str(op.name());
            write_index_decls(out, indices);
            out.push('(');
            write_expr(out, body, Prec::Or);
            out.push(')');
        }
        ExprKind::List(items) => write_list(out, items),
        ExprKind::Tuple(items) => {
            out.push('(');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, item, Prec::Or);
            }
            out.push(')');
        }
        ExprKind::Error => out.push_str("<error>"),
    }
}

fn next(prec: Prec) -> Prec {
    match prec {
        Prec::Or => Prec::And,
        Prec::And => Prec::Compare,
        Prec::Compare => Prec::Additive,
        Prec::Additive => Prec::Term,
        Prec::Term => Prec::Unary,
        Prec::Unary => Prec::Power,
        Prec::Power | Prec::Postfix => Prec::Postfix,
    }
}

fn write_list(out: &mut String, items: &[Expr]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_expr(out, item, Prec::Or);
    }
    out.push(']');
}

fn write_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------------------
// Span erasure

fn erase_arg(arg: &mut ArgDecl) {
    arg.span = Span::default();
    arg.name.span = Span::default();
    match &mut arg.ty {
        ArgType::Tensor(ty) => erase_type(ty),
        ArgType::Int(span) | ArgType::Float(span) | ArgType::Bool(span) => *span = Span::default(),
    }
    if let Some(default) = &mut arg.default {
        erase_expr(default);
    }
}

fn erase_type(ty: &mut TypeExpr) {
    ty.span = Span::default();
    ty.dtype.span = Span::default();
    for dim in &mut ty.dims {
        match dim {
            DimExpr::Ellipsis(span) => *span = Span::default(),
            DimExpr::Expr(e) => erase_expr(e),
        }
    }
}

fn erase_block(block: &mut Block) {
    block.span = Span::default();
    for stmt in &mut block.stmts {
        match stmt {
            Stmt::Param { key, path, ty, init, span } => {
                *span = Span::default();
                if let Some(key) = key {
                    key.span = Span::default();
                }
                erase_path(path);
                erase_type(ty);
                if let Some(init) = init {
                    erase_expr(init);
                }
            }
            Stmt::Assign { name, value, span } => {
                *span = Span::default();
                name.span = Span::default();
                erase_expr(value);
            }
            Stmt::Destructure { names, value, span } => {
                *span = Span::default();
                names.iter_mut().for_each(|n| n.span = Span::default());
                erase_expr(value);
            }
            Stmt::Define { name, indices, value, span } => {
                *span = Span::default();
                name.span = Span::default();
                indices.iter_mut().for_each(erase_index_decl);
                erase_expr(value);
            }
            Stmt::For { var, start, end, body, span } => {
                *span = Span::default();
                var.span = Span::default();
                erase_expr(start);
                erase_expr(end);
                erase_block(body);
            }
            Stmt::Return { value, span } => {
                *span = Span::default();
                erase_expr(value);
            }
            Stmt::Error(span) => *span = Span::default(),
        }
    }
}

fn erase_index_decl(index: &mut IndexDecl) {
    index.name.span = Span::default();
    if let Some(extent) = &mut index.extent {
        erase_expr(extent);
    }
}

fn erase_path(path: &mut Path) {
    path.span = Span::default();
    for segment in &mut path.segments {
        segment.span = Span::default();
    }
}

fn erase_expr(expr: &mut Expr) {
    expr.span = Span::default();
    match &mut expr.kind {
        ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Bool(_) | ExprKind::Error => {}
        ExprKind::Name(path) => erase_path(path),
        ExprKind::Unary(_, operand) => erase_expr(operand),
        ExprKind::Binary(_, a, b) => {
            erase_expr(a);
            erase_expr(b);
        }
        ExprKind::Call { callee, prefix, args } => {
            erase_path(callee);
            if let Some(prefix) = prefix {
                prefix.span = Span::default();
            }
            for arg in args {
                if let Some(name) = &mut arg.name {
                    name.span = Span::default();
                }
                erase_expr(&mut arg.value);
            }
        }
        ExprKind::Access { tensor, indices, default } => {
            erase_path(tensor);
            indices.iter_mut().for_each(erase_expr);
            if let Some(default) = default {
                erase_expr(default);
            }
        }
        ExprKind::Reduce { indices, body, .. } => {
            indices.iter_mut().for_each(erase_index_decl);
            erase_expr(body);
        }
        ExprKind::List(items) | ExprKind::Tuple(items) => items.iter_mut().for_each(erase_expr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::FileId;
    use crate::syntax::parse;
    use proptest::prelude::*;

    fn round_trip(ast: &SourceFileAst) -> Result<(), TestCaseError> {
        let text = print(ast);
        let (mut back, diags) = parse(FileId(0), &text);
        prop_assert!(diags.is_empty(), "{text}\n{diags:#?}");
        erase_spans(&mut back);
        prop_assert_eq!(&back, ast, "{}", text);
        prop_assert_eq!(print(&back), text);
        Ok(())
    }

    #[test]
    fn parentheses_only_where_needed() {
        let cases = [
            ("(a + b) * c", "(a + b) * c"),
            ("a + (b * c)", "a + b * c"),
            ("(a - b) - c", "a - b - c"),
            ("a - (b - c)", "a - (b - c)"),
            ("(-x) ^ 2", "(-x) ^ 2"),
            ("-(x ^ 2)", "-x ^ 2"),
            ("(a ^ b) ^ c", "(a ^ b) ^ c"),
            ("a ^ (b ^ c)", "a ^ b ^ c"),
            ("(a < b) == c", "(a < b) == c"),
            ("(x[i] else 0) ^ 2", "(x[i] else 0) ^ 2"),
            ("(x[i] else 0) * 2", "x[i] else 0 * 2"),
            ("x[i] else (y + 1)", "x[i] else (y + 1)"),
            ("!(a && b) || c", "!(a && b) || c"),
            ("- - 1.0", "--1.0"),
            ("f[\"a\\\"b\\\\c\\n\"](x)", "f[\"a\\\"b\\\\c\\n\"](x)"),
        ];
        for (src, want) in cases {
            let (ast, diags) = parse(FileId(0), &format!("model m() -> (y: f32[]) {{ y = {src} }}"));
            assert!(diags.is_empty(), "{src}: {diags:?}");
            let Item::Model(m) = &ast.items[0] else { panic!() };
            let Stmt::Assign { value, .. } = &m.body.stmts[0] else { panic!() };
            assert_eq!(print_expr(value), want, "{src}");
        }
    }

    #[test]
    fn erase_spans_clears_every_span() {
        let (mut ast, _) = parse(
            FileId(3),
            "import \"x\" as y\nfn f(a: int = 1) -> T[..., a] { for i in 0..a { z[j: 2] = sum[k](q[j, k]) } return g[\"p\"](x: [1]) }\nmodel m() -> (o: f32[]) { param w.0: f32[] o = w.0 }",
        );
        erase_spans(&mut ast);
        let debug = format!("{ast:?}");
        assert!(!debug.contains("FileId(3)"), "{debug}");
        assert!(!debug.contains("start: 1"), "{debug}");
    }

    const RESERVED: &[&str] = &[
        "fn", "model", "param", "import", "for", "in", "return", "else", "true", "false", "int", "float", "bool", "as",
        "sum", "max", "min", "mean", "prod",
    ];

    fn ident() -> impl Strategy<Value = Ident> {
        "[a-zA-Z_][a-zA-Z0-9_]{0,4}"
            .prop_filter("reserved word", |s| !RESERVED.contains(&s.as_str()))
            .prop_map(|name| Ident { name, span: Span::default() })
    }

    fn path() -> impl Strategy<Value = Path> {
        let segment = prop_oneof![3 => ident(), 1 => (0u32..2000).prop_map(|n| Ident { name: n.to_string(), span: Span::default() })];
        (ident(), proptest::collection::vec(segment, 0..3)).prop_map(|(first, rest)| {
            let mut segments = vec![first];
            segments.extend(rest);
            Path { segments, span: Span::default() }
        })
    }

    fn string() -> impl Strategy<Value = StrLit> {
        proptest::collection::vec(
            proptest::sample::select(vec!['a', 'Z', '.', '{', '}', '"', '\\', '\n', ' ', 'é']),
            0..8,
        )
        .prop_map(|chars| StrLit { value: chars.into_iter().collect(), span: Span::default() })
    }

    fn leaf(kind: ExprKind) -> Expr {
        Expr { kind, span: Span::default() }
    }

    fn index_decls(e: impl Strategy<Value = Expr> + Clone) -> impl Strategy<Value = Vec<IndexDecl>> {
        proptest::collection::vec(
            (ident(), proptest::option::of(e)).prop_map(|(name, extent)| IndexDecl { name, extent }),
            1..3,
        )
    }

    fn expr() -> impl Strategy<Value = Expr> + Clone {
        let leaves = prop_oneof![
            (0..=i64::MAX).prop_map(|v| leaf(ExprKind::Int(v))),
            any::<f64>().prop_filter("finite", |v| v.is_finite()).prop_map(|v| leaf(ExprKind::Float(v.abs()))),
            (0u32..100).prop_map(|v| leaf(ExprKind::Float(f64::from(v) / 8.0))),
            any::<bool>().prop_map(|b| leaf(ExprKind::Bool(b))),
            path().prop_map(|p| leaf(ExprKind::Name(p))),
        ];
        leaves.prop_recursive(4, 48, 4, |e| {
            let unary_op = prop_oneof![Just(UnaryOp::Neg), Just(UnaryOp::Not)];
            let bin_op = proptest::sample::select(vec![
                BinOp::Add,
                BinOp::Sub,
                BinOp::Mul,
                BinOp::Div,
                BinOp::Rem,
                BinOp::MatMul,
                BinOp::Pow,
                BinOp::Lt,
                BinOp::Le,
                BinOp::Gt,
                BinOp::Ge,
                BinOp::Eq,
                BinOp::Ne,
                BinOp::And,
                BinOp::Or,
            ]);
            let reducer = proptest::sample::select(vec![Reducer::Sum, Reducer::Max, Reducer::Min, Reducer::Mean, Reducer::Prod]);
            let call_arg = (proptest::option::of(ident()), e.clone()).prop_map(|(name, value)| CallArg { name, value });
            prop_oneof![
                1 => (unary_op, e.clone()).prop_map(|(op, x)| leaf(ExprKind::Unary(op, Box::new(x)))),
                3 => (bin_op, e.clone(), e.clone()).prop_map(|(op, a, b)| leaf(ExprKind::Binary(op, Box::new(a), Box::new(b)))),
                1 => (path(), proptest::option::of(string()), proptest::collection::vec(call_arg, 0..3))
                    .prop_map(|(callee, prefix, args)| leaf(ExprKind::Call { callee, prefix, args })),
                1 => (path(), proptest::collection::vec(e.clone(), 1..3), proptest::option::of(e.clone())).prop_map(
                    |(tensor, indices, default)| leaf(ExprKind::Access { tensor, indices, default: default.map(Box::new) })
                ),
                1 => (reducer, index_decls(e.clone()), e.clone())
                    .prop_map(|(op, indices, body)| leaf(ExprKind::Reduce { op, indices, body: Box::new(body) })),
                1 => proptest::collection::vec(e.clone(), 0..3).prop_map(|items| leaf(ExprKind::List(items))),
                1 => proptest::collection::vec(e, 2..4).prop_map(|items| leaf(ExprKind::Tuple(items))),
            ]
        })
    }

    fn type_expr() -> impl Strategy<Value = TypeExpr> {
        let dim = prop_oneof![1 => Just(DimExpr::Ellipsis(Span::default())), 4 => expr().prop_map(DimExpr::Expr)];
        (ident(), proptest::collection::vec(dim, 0..3)).prop_map(|(dtype, dims)| TypeExpr {
            dtype,
            dims,
            span: Span::default(),
        })
    }

    fn block() -> impl Strategy<Value = Block> {
        let simple = prop_oneof![
            1 => (proptest::option::of(string()), path(), type_expr(), proptest::option::of(expr()))
                .prop_map(|(key, path, ty, init)| Stmt::Param { key, path, ty, init, span: Span::default() }),
            1 => (proptest::collection::vec(ident(), 1..4), expr())
                .prop_map(|(names, value)| Stmt::Destructure { names, value, span: Span::default() }),
            3 => (ident(), expr()).prop_map(|(name, value)| Stmt::Assign { name, value, span: Span::default() }),
            1 => (ident(), index_decls(expr()), expr())
                .prop_map(|(name, indices, value)| Stmt::Define { name, indices, value, span: Span::default() }),
            1 => expr().prop_map(|value| Stmt::Return { value, span: Span::default() }),
        ];
        let stmt = simple.prop_recursive(2, 12, 3, |stmt| {
            (ident(), expr(), expr(), proptest::collection::vec(stmt, 0..3)).prop_map(|(var, start, end, stmts)| {
                Stmt::For { var, start, end, body: Block { stmts, span: Span::default() }, span: Span::default() }
            })
        });
        proptest::collection::vec(stmt, 0..4).prop_map(|stmts| Block { stmts, span: Span::default() })
    }

    fn args() -> impl Strategy<Value = Vec<ArgDecl>> {
        let ty = prop_oneof![
            3 => type_expr().prop_map(ArgType::Tensor),
            1 => Just(ArgType::Int(Span::default())),
            1 => Just(ArgType::Float(Span::default())),
            1 => Just(ArgType::Bool(Span::default())),
        ];
        let arg = (ident(), ty, proptest::option::of(expr())).prop_map(|(name, ty, default)| ArgDecl {
            name,
            ty,
            default,
            span: Span::default(),
        });
        proptest::collection::vec(arg, 0..3)
    }

    fn item() -> impl Strategy<Value = Item> {
        let output = (ident(), type_expr()).prop_map(|(name, ty)| OutputDecl { name, ty, span: Span::default() });
        let grads = (ident(), ident()).prop_map(|(keyword, loss)| GradOutputs { keyword, loss, span: Span::default() });
        let result = (proptest::option::of(ident()), type_expr()).prop_map(|(name, ty)| ResultDecl {
            name,
            ty,
            span: Span::default(),
        });
        prop_oneof![
            (string(), proptest::option::of(ident())).prop_map(|(path, alias)| Item::Import(Import {
                path,
                alias,
                span: Span::default()
            })),
            (ident(), args(), proptest::collection::vec(result, 1..3), block()).prop_map(
                |(name, args, results, body)| Item::Fn(FnDef { name, args, results, body, span: Span::default() })
            ),
            (ident(), args(), proptest::collection::vec(output, 1..3), proptest::collection::vec(grads, 0..2), block())
                .prop_map(|(name, args, outputs, grads, body)| {
                    Item::Model(ModelDef { name, args, outputs, grads, body, span: Span::default() })
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn expressions_round_trip(value in expr()) {
            let name = Ident { name: "y".to_string(), span: Span::default() };
            let body = Block { stmts: vec![Stmt::Assign { name, value, span: Span::default() }], span: Span::default() };
            let ty = TypeExpr { dtype: Ident { name: "f32".to_string(), span: Span::default() }, dims: vec![], span: Span::default() };
            let results = vec![ResultDecl { name: None, ty, span: Span::default() }];
            let f = FnDef { name: Ident { name: "f".to_string(), span: Span::default() }, args: vec![], results, body, span: Span::default() };
            round_trip(&SourceFileAst { items: vec![Item::Fn(f)] })?;
        }

        #[test]
        fn files_round_trip(items in proptest::collection::vec(item(), 0..4)) {
            round_trip(&SourceFileAst { items })?;
        }
    }
}
