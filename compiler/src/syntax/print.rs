//! The canonical printer: `SourceFileAst` -> deterministic source text (4-space indentation, one statement
//! per line, a blank line between items, only the parentheses the grammar needs). For every tree without
//! `Error` nodes, `parse(print(ast))` gives back `ast` up to spans (`erase_spans`); `Error` nodes print as
//! `<error>`, which does not parse.

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
                erase_type(&mut f.ret);
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
            write_type(out, &f.ret);
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
            out.push_str(") ");
            write_block(out, &m.body, 0);
            out.push('\n');
        }
        Item::Error(_) => out.push_str("<error>\n"),
    }
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
        Stmt::Param { path, ty, .. } => {
            let _ = write!(out, "param {}: ", path.text());
            write_type(out, ty);
        }
        Stmt::Assign { name, value, .. } => {
            let _ = write!(out, "{} = ", name.name);
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
            Stmt::Param { path, ty, span } => {
                *span = Span::default();
                erase_path(path);
                erase_type(ty);
            }
            Stmt::Assign { name, value, span } => {
                *span = Span::default();
                name.span = Span::default();
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
        ExprKind::List(items) => items.iter_mut().for_each(erase_expr),
    }
}
