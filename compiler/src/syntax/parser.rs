//! The recovering parser (spec/language.md section 2): tokens from `lexer` -> `SourceFileAst`, with every
//! syntax error reported and an `Error` node where it recovered. It never panics and never stops early.
//!
//! Parsing runs in three steps. `balance` makes the delimiters of the token stream match (reporting and
//! repairing stray or missing ones), so that the chumsky grammar can always recover a bracketed region with
//! `nested_delimiters`. `excise_too_deep` replaces every item with nesting deeper than `MAX_NESTING` by one
//! `Token::TooDeep` (E0005), which bounds the parser's recursion. Then the chumsky grammar runs; it is
//! factored so that every choice is made on the next one or two tokens, which keeps it linear on bad input.
//! Expression trees are kept at most `MAX_EXPR_HEIGHT` deep (deeper ones become `Error`, E0005), so later
//! passes may recurse over expressions without overflowing the stack.

use chumsky::error::{RichPattern, RichReason};
use chumsky::input::{Checkpoint, Cursor, ValueInput};
use chumsky::inspector::Inspector;
use chumsky::prelude::*;

use super::ast::*;
use super::lexer::{lex, Token};
use crate::diag::{Code, Diagnostic};
use crate::span::{FileId, Span};

/// The deepest nesting of `(`, `[` and `{` that is accepted (R2.2).
pub const MAX_NESTING: usize = 256;
/// The greatest height of an expression tree (operators, calls, accesses, reductions, lists; literals and
/// names have height 0). Higher expressions are replaced by `ExprKind::Error` with an E0005 diagnostic.
pub const MAX_EXPR_HEIGHT: u32 = 256;
/// How deeply expression parsing may recurse (through parentheses, arguments and `else` defaults) before it
/// gives up with E0005. Larger than `MAX_NESTING` so that every accepted nesting is parsed.
const MAX_RECURSION: u32 = 2 * MAX_NESTING as u32;

const TOO_DEEP_EXPR: &str = "expression nested too deeply";

/// Parses one file. Always returns a tree: regions that could not be read are `Error` nodes, and each
/// problem is in the returned diagnostics (sorted by position).
pub fn parse(file: FileId, text: &str) -> (SourceFileAst, Vec<Diagnostic>) {
    let (tokens, mut diags) = lex(file, text);
    let eoi = text.len();
    // Bad characters were reported by the lexer; dropping them lets the parser read the rest as written.
    let tokens: Vec<(Token, SimpleSpan)> = tokens
        .into_iter()
        .filter(|(token, _)| *token != Token::Error)
        .map(|(token, span)| (token, SimpleSpan::from(span.range())))
        .collect();
    let (tokens, synthetic) = balance(file, eoi, tokens, &mut diags);
    let tokens = excise_too_deep(file, tokens, &mut diags);

    let input = tokens.as_slice().map(SimpleSpan::from(eoi..eoi), |(t, s)| (t, s));
    let (ast, errors) = file_parser(file, text).parse_with_state(input, &mut Depth(0)).into_output_errors();
    for error in errors {
        let span = *error.span();
        // A zero-width error sits on a closing delimiter that `balance` inserted (or at the end of input
        // after one): that problem was already reported as an unclosed delimiter.
        if span.start == span.end && synthetic.binary_search(&span.start).is_ok() {
            continue;
        }
        diags.push(to_diagnostic(file, &error));
    }
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    diags.dedup_by(|a, b| a.code == b.code && a.span == b.span && a.message == b.message);
    (ast.unwrap_or(SourceFileAst { items: Vec::new() }), diags)
}

// ---------------------------------------------------------------------------------------------------------
// Token pre-passes

fn closer_of(token: &Token) -> Option<Token> {
    match token {
        Token::LParen => Some(Token::RParen),
        Token::LBracket => Some(Token::RBracket),
        Token::LBrace => Some(Token::RBrace),
        _ => None,
    }
}

fn is_closer(token: &Token) -> bool {
    matches!(token, Token::RParen | Token::RBracket | Token::RBrace)
}

fn is_item_keyword(token: &Token) -> bool {
    matches!(token, Token::KwFn | Token::KwModel | Token::KwImport)
}

/// Makes every opening delimiter match a closing one of the same kind. A closer that matches an outer opener
/// closes the inner ones; a closer that matches nothing is dropped; `fn`, `model` and `import` (which only
/// start items) and the end of input close everything still open. Each repair is reported (E0002); the
/// inserted closers are zero-width and their positions are returned, sorted.
fn balance(
    file: FileId,
    eoi: usize,
    tokens: Vec<(Token, SimpleSpan)>,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<(Token, SimpleSpan)>, Vec<usize>) {
    let mut out: Vec<(Token, SimpleSpan)> = Vec::with_capacity(tokens.len());
    let mut synthetic = Vec::new();
    // (closer, opener, opener span)
    let mut stack: Vec<(Token, Token, SimpleSpan)> = Vec::new();
    let sp = |s: SimpleSpan| Span::new(file, s.into_range());

    let close_all = |stack: &mut Vec<(Token, Token, SimpleSpan)>,
                     out: &mut Vec<(Token, SimpleSpan)>,
                     synthetic: &mut Vec<usize>,
                     at: usize| {
        while let Some((closer, _, _)) = stack.pop() {
            out.push((closer, SimpleSpan::from(at..at)));
            synthetic.push(at);
        }
    };
    let unclosed = |stack: &[(Token, Token, SimpleSpan)], why: &str| -> Option<Diagnostic> {
        let (_, opener, span) = stack.last()?;
        let mut diag = Diagnostic::new(Code::E0002, sp(*span), format!("unclosed delimiter `{}`", opener.symbol()))
            .label(why.to_string())
            .rule("R2.1");
        for (_, opener, span) in stack.iter().rev().skip(1).take(3) {
            diag = diag.with_label(sp(*span), format!("this `{}` is not closed either", opener.symbol()));
        }
        Some(diag)
    };

    for (token, span) in tokens {
        if is_item_keyword(&token) && !stack.is_empty() {
            diags.extend(unclosed(&stack, "not closed before the next item"));
            close_all(&mut stack, &mut out, &mut synthetic, span.start);
        }
        if let Some(closer) = closer_of(&token) {
            stack.push((closer, token.clone(), span));
            out.push((token, span));
        } else if is_closer(&token) {
            match stack.iter().rposition(|(closer, _, _)| *closer == token) {
                Some(pos) => {
                    if pos + 1 < stack.len() {
                        let (expected, opener, open_span) = &stack[stack.len() - 1];
                        diags.push(
                            Diagnostic::new(
                                Code::E0002,
                                sp(span),
                                format!(
                                    "mismatched closing delimiter: expected `{}`, found `{}`",
                                    expected.symbol(),
                                    token.symbol()
                                ),
                            )
                            .label("mismatched")
                            .with_label(sp(*open_span), format!("this `{}` is not closed", opener.symbol()))
                            .rule("R2.1"),
                        );
                        while stack.len() > pos + 1 {
                            if let Some((closer, _, _)) = stack.pop() {
                                out.push((closer, SimpleSpan::from(span.start..span.start)));
                                synthetic.push(span.start);
                            }
                        }
                    }
                    stack.pop();
                    out.push((token, span));
                }
                None => diags.push(
                    Diagnostic::new(Code::E0002, sp(span), format!("unexpected closing delimiter `{}`", token.symbol()))
                        .label("no matching opening delimiter")
                        .rule("R2.1"),
                ),
            }
        } else {
            out.push((token, span));
        }
    }
    if !stack.is_empty() {
        diags.extend(unclosed(&stack, "not closed before the end of the file"));
        close_all(&mut stack, &mut out, &mut synthetic, eoi);
    }
    synthetic.sort_unstable();
    synthetic.dedup();
    (out, synthetic)
}

/// Replaces each item (from its `fn`/`model`/`import`, or the start of the file, to the next one) that nests
/// delimiters deeper than `MAX_NESTING` by a single `Token::TooDeep`, reporting E0005 once per item. Works on
/// a balanced stream, where item keywords are always at depth 0.
fn excise_too_deep(
    file: FileId,
    tokens: Vec<(Token, SimpleSpan)>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(Token, SimpleSpan)> {
    let mut out: Vec<(Token, SimpleSpan)> = Vec::with_capacity(tokens.len());
    let mut item_start = 0;
    let mut depth = 0usize;
    let mut iter = tokens.into_iter().peekable();
    while let Some((token, span)) = iter.next() {
        if is_item_keyword(&token) {
            item_start = out.len();
            depth = 0;
        }
        if closer_of(&token).is_some() {
            if depth == MAX_NESTING {
                diags.push(
                    Diagnostic::new(
                        Code::E0005,
                        Span::new(file, span.into_range()),
                        format!("nesting deeper than {MAX_NESTING} levels of parentheses, brackets or braces"),
                    )
                    .label(format!("this delimiter is at level {}", MAX_NESTING + 1))
                    .note("the whole item containing it is skipped")
                    .rule("R2.2"),
                );
                let start = out.get(item_start).map_or(span.start, |(_, s)| s.start);
                let mut end = span.end;
                while let Some((next, next_span)) = iter.peek() {
                    if is_item_keyword(next) {
                        break;
                    }
                    end = end.max(next_span.end);
                    iter.next();
                }
                out.truncate(item_start);
                out.push((Token::TooDeep, SimpleSpan::from(start..end)));
                item_start = out.len();
                depth = 0;
                continue;
            }
            depth += 1;
        } else if is_closer(&token) {
            depth = depth.saturating_sub(1);
        }
        out.push((token, span));
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// Errors

fn to_diagnostic(file: FileId, error: &Rich<'_, Token, SimpleSpan>) -> Diagnostic {
    let span = Span::new(file, error.span().into_range());
    match error.reason() {
        RichReason::Custom(message) if message == TOO_DEEP_EXPR => Diagnostic::new(Code::E0005, span, message.clone())
            .label("too deep")
            .note(format!(
                "an expression may nest at most {MAX_EXPR_HEIGHT} levels of operators, calls and accesses"
            ))
            .rule("R2.2"),
        RichReason::Custom(message) => Diagnostic::new(Code::E0002, span, message.clone()).rule("R2.1"),
        RichReason::ExpectedFound { expected, found } => {
            let found = found.as_deref().map_or_else(|| "end of input".to_string(), Token::describe);
            let expected = describe_expected(expected);
            let (message, label) = if expected.is_empty() {
                (format!("unexpected {found}"), "unexpected".to_string())
            } else {
                (format!("expected {expected}, found {found}"), format!("expected {expected}"))
            };
            Diagnostic::new(Code::E0002, span, message).label(label).rule("R2.1")
        }
    }
}

/// "`)`, `,` or expression": labels first, then tokens, sorted; three or more operators collapse into
/// "operator".
fn describe_expected(expected: &[RichPattern<'_, Token>]) -> String {
    const OPERATORS: &[&str] =
        &["+", "-", "*", "/", "%", "@", "^", "<", "<=", ">", ">=", "==", "!=", "&&", "||"];
    let mut labels: Vec<String> = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    let mut operators = Vec::new();
    for pattern in expected {
        match pattern {
            RichPattern::Token(token) => {
                let symbol = token.symbol();
                if OPERATORS.contains(&symbol) {
                    operators.push(token.describe());
                } else {
                    tokens.push(token.describe());
                }
            }
            RichPattern::Label(label) => labels.push(label.to_string()),
            RichPattern::Identifier(name) => tokens.push(format!("`{name}`")),
            RichPattern::EndOfInput => tokens.push("end of input".to_string()),
            RichPattern::Any | RichPattern::SomethingElse => {}
        }
    }
    if operators.len() >= 3 {
        labels.push("operator".to_string());
    } else {
        tokens.extend(operators);
    }
    labels.sort();
    labels.dedup();
    tokens.sort();
    tokens.dedup();
    let all: Vec<String> = labels.into_iter().chain(tokens).collect();
    match all.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The grammar

/// Current recursion depth of expression parsing; restored on backtracking through chumsky's checkpoints.
struct Depth(u32);

impl<'src, I: chumsky::input::Input<'src>> Inspector<'src, I> for Depth {
    type Checkpoint = u32;
    fn on_token(&mut self, _: &I::Token) {}
    fn on_save<'parse>(&self, _: &Cursor<'src, 'parse, I>) -> u32 {
        self.0
    }
    fn on_rewind<'parse>(&mut self, marker: &Checkpoint<'src, 'parse, I, u32>) {
        self.0 = *marker.inspector();
    }
}

type Extra<'src> = extra::Full<Rich<'src, Token, SimpleSpan>, Depth, ()>;

/// An expression under construction, with its height and, when it was cut for being too high, where.
struct Ex {
    expr: Expr,
    height: u32,
    too_deep: Option<SimpleSpan>,
}

impl Ex {
    fn leaf(kind: ExprKind, span: Span) -> Ex {
        Ex { expr: Expr { kind, span }, height: 0, too_deep: None }
    }
    fn error(span: Span) -> Ex {
        Ex::leaf(ExprKind::Error, span)
    }
}

/// Builds a node over `children` (moved into `make` in order), or an `Error` leaf when that would exceed
/// `MAX_EXPR_HEIGHT` or a child was already cut. Iterative callers never build a tree deeper than the limit.
fn node(span: Span, children: Vec<Ex>, make: impl FnOnce(Vec<Expr>) -> ExprKind) -> Ex {
    let height = 1 + children.iter().map(|c| c.height).max().unwrap_or(0);
    let cut = children.iter().find_map(|c| c.too_deep);
    let cut = cut.or_else(|| (height > MAX_EXPR_HEIGHT).then(|| SimpleSpan::from(span.range())));
    if let Some(at) = cut {
        return Ex { expr: Expr { kind: ExprKind::Error, span }, height: 0, too_deep: Some(at) };
    }
    let exprs = children.into_iter().map(|c| c.expr).collect();
    Ex { expr: Expr { kind: make(exprs), span }, height, too_deep: None }
}

fn boxed_pair(exprs: Vec<Expr>, span: Span) -> (Box<Expr>, Box<Expr>) {
    let mut it = exprs.into_iter();
    let a = it.next().unwrap_or(Expr { kind: ExprKind::Error, span });
    let b = it.next().unwrap_or(Expr { kind: ExprKind::Error, span });
    (Box::new(a), Box::new(b))
}

fn binary(op: BinOp, a: Ex, b: Ex) -> Ex {
    let span = a.expr.span.to(b.expr.span);
    node(span, vec![a, b], |exprs| {
        let (a, b) = boxed_pair(exprs, span);
        ExprKind::Binary(op, a, b)
    })
}

fn unary(op: UnaryOp, op_span: Span, operand: Ex) -> Ex {
    let span = op_span.to(operand.expr.span);
    node(span, vec![operand], |exprs| {
        let operand = exprs.into_iter().next().unwrap_or(Expr { kind: ExprKind::Error, span });
        ExprKind::Unary(op, Box::new(operand))
    })
}

/// `ops0 p0 ^ ops1 p1 ^ ... opsN pN` is `ops0 (p0 ^ (ops1 (p1 ^ ...)))`: prefix operators bind looser than
/// `^` on their right, and `^` is right associative. Folded iteratively from the right.
fn fold_power(segments: Vec<(Vec<(UnaryOp, Span)>, Ex)>) -> Ex {
    let mut acc: Option<Ex> = None;
    for (ops, operand) in segments.into_iter().rev() {
        let mut e = match acc.take() {
            None => operand,
            Some(exponent) => binary(BinOp::Pow, operand, exponent),
        };
        for (op, op_span) in ops.into_iter().rev() {
            e = unary(op, op_span, e);
        }
        acc = Some(e);
    }
    acc.unwrap_or_else(|| Ex::error(Span::default()))
}

/// Reports (once) an expression that was cut for being too deep.
fn report_too_deep<'src>(mut ex: Ex, emitter: &mut chumsky::input::Emitter<Rich<'src, Token, SimpleSpan>>) -> Ex {
    if let Some(at) = ex.too_deep.take() {
        emitter.emit(Rich::custom(at, TOO_DEEP_EXPR));
    }
    ex
}

enum Suffix {
    Call(Option<Vec<(Option<Ident>, Ex)>>),
    PrefixedCall(StrLit, Option<Vec<(Option<Ident>, Ex)>>),
    Access(Option<Vec<Ex>>, Option<Ex>),
}

fn call(span: Span, callee: Path, prefix: Option<StrLit>, args: Vec<(Option<Ident>, Ex)>) -> Ex {
    let (names, values): (Vec<Option<Ident>>, Vec<Ex>) = args.into_iter().unzip();
    node(span, values, |exprs| ExprKind::Call {
        callee,
        prefix,
        args: names.into_iter().zip(exprs).map(|(name, value)| CallArg { name, value }).collect(),
    })
}

fn postfix(span: Span, path: Path, suffix: Option<Suffix>) -> Ex {
    match suffix {
        None => Ex::leaf(ExprKind::Name(path), span),
        Some(Suffix::Call(Some(args))) => call(span, path, None, args),
        Some(Suffix::PrefixedCall(prefix, Some(args))) => call(span, path, Some(prefix), args),
        Some(Suffix::Access(Some(indices), default)) => {
            let count = indices.len();
            let mut children = indices;
            children.extend(default);
            node(span, children, |mut exprs| {
                let default = (exprs.len() > count).then(|| exprs.pop()).flatten().map(Box::new);
                ExprKind::Access { tensor: path, indices: exprs, default }
            })
        }
        Some(Suffix::Call(None) | Suffix::PrefixedCall(_, None) | Suffix::Access(None, _)) => Ex::error(span),
    }
}

fn reduce(span: Span, op: Reducer, indices: Option<Vec<(Ident, Option<Ex>)>>, body: Option<Option<Ex>>) -> Ex {
    let (Some(indices), Some(Some(body))) = (indices, body) else {
        return Ex::error(span);
    };
    let mut names = Vec::with_capacity(indices.len());
    let mut children = Vec::new();
    for (name, extent) in indices {
        names.push((name, extent.is_some()));
        children.extend(extent);
    }
    children.push(body);
    node(span, children, |exprs| {
        let mut exprs = exprs.into_iter();
        let indices = names
            .into_iter()
            .map(|(name, has_extent)| IndexDecl { name, extent: if has_extent { exprs.next() } else { None } })
            .collect();
        let body = exprs.next().unwrap_or(Expr { kind: ExprKind::Error, span });
        ExprKind::Reduce { op, indices, body: Box::new(body) }
    })
}

fn reducer_of(name: &str) -> Option<Reducer> {
    match name {
        "sum" => Some(Reducer::Sum),
        "max" => Some(Reducer::Max),
        "min" => Some(Reducer::Min),
        "mean" => Some(Reducer::Mean),
        "prod" => Some(Reducer::Prod),
        _ => None,
    }
}

/// `open inner close`, recovering a malformed region (the stream is balanced, so this always succeeds once
/// `open` is there) as `None` after reporting the error.
fn group<'src, I, O, P>(open: Token, close: Token, inner: P) -> impl Parser<'src, I, Option<O>, Extra<'src>> + Clone
where
    I: ValueInput<'src, Token = Token, Span = SimpleSpan>,
    P: Parser<'src, I, O, Extra<'src>> + Clone,
{
    let others = match open {
        Token::LParen => [(Token::LBracket, Token::RBracket), (Token::LBrace, Token::RBrace)],
        Token::LBracket => [(Token::LParen, Token::RParen), (Token::LBrace, Token::RBrace)],
        _ => [(Token::LParen, Token::RParen), (Token::LBracket, Token::RBracket)],
    };
    inner
        .map(Some)
        .delimited_by(just(open.clone()), just(close.clone()))
        .recover_with(via_parser(nested_delimiters(open, close, others, |_| None)))
}

/// One token other than a delimiter, or a whole balanced delimited group.
fn token_tree<'src, I>() -> impl Parser<'src, I, (), Extra<'src>> + Clone
where
    I: ValueInput<'src, Token = Token, Span = SimpleSpan>,
{
    recursive(|tree| {
        let inner = tree.repeated();
        choice((
            inner.clone().delimited_by(just(Token::LParen), just(Token::RParen)),
            inner.clone().delimited_by(just(Token::LBracket), just(Token::RBracket)),
            inner.delimited_by(just(Token::LBrace), just(Token::RBrace)),
            none_of([
                Token::LParen,
                Token::RParen,
                Token::LBracket,
                Token::RBracket,
                Token::LBrace,
                Token::RBrace,
            ])
            .ignored(),
        ))
    })
}

fn file_parser<'src, I>(file: FileId, text: &'src str) -> impl Parser<'src, I, SourceFileAst, Extra<'src>>
where
    I: ValueInput<'src, Token = Token, Span = SimpleSpan>,
{
    let sp = move |s: SimpleSpan| Span::new(file, s.into_range());

    let ident = select! { Token::Ident(name) = e => Ident { name, span: sp(e.span()) } }
        .labelled("identifier")
        .boxed();
    let number_segment = select! { Token::Int(_) = e => {
        let span: SimpleSpan = e.span();
        Ident { name: text.get(span.into_range()).unwrap_or("0").to_string(), span: sp(span) }
    } };
    let path = ident
        .clone()
        .then(just(Token::Dot).ignore_then(ident.clone().or(number_segment)).repeated().collect::<Vec<_>>())
        .map_with(move |(first, rest), e| {
            let mut segments = vec![first];
            segments.extend(rest);
            Path { segments, span: sp(e.span()) }
        })
        .boxed();
    let string = select! { Token::Str(value) = e => StrLit { value, span: sp(e.span()) } }.labelled("string");

    let expr = recursive(|expr| {
        let ixdecl = ident.clone().then(just(Token::Colon).ignore_then(expr.clone()).or_not());
        let ixdecls = group(
            Token::LBracket,
            Token::RBracket,
            ixdecl.separated_by(just(Token::Comma)).at_least(1).collect::<Vec<(Ident, Option<Ex>)>>(),
        )
        .boxed();

        let unary_expr = recursive(|unary_expr| {
            let literal = select! {
                Token::Int(value) = e => Ex::leaf(ExprKind::Int(value), sp(e.span())),
                Token::Float(value) = e => Ex::leaf(ExprKind::Float(value), sp(e.span())),
                Token::KwTrue = e => Ex::leaf(ExprKind::Bool(true), sp(e.span())),
                Token::KwFalse = e => Ex::leaf(ExprKind::Bool(false), sp(e.span())),
            }
            .labelled("literal");
            let paren = group(Token::LParen, Token::RParen, expr.clone())
                .map_with(move |inner, e| inner.unwrap_or_else(|| Ex::error(sp(e.span()))));
            let list = group(
                Token::LBracket,
                Token::RBracket,
                expr.clone().separated_by(just(Token::Comma)).collect::<Vec<Ex>>(),
            )
            .map_with(move |items, e| match items {
                Some(items) => node(sp(e.span()), items, ExprKind::List),
                None => Ex::error(sp(e.span())),
            });
            // After `sum[` the parser is committed to a reduction; a missing body is reported and recovered.
            let reduction = select! { Token::Ident(name) if reducer_of(&name).is_some() => reducer_of(&name) }
                .then(ixdecls.clone())
                .then(
                    group(Token::LParen, Token::RParen, expr.clone())
                        .map(Some)
                        .recover_with(via_parser(empty().map(|_| None))),
                )
                .map_with(move |((op, indices), body), e| {
                    reduce(sp(e.span()), op.unwrap_or(Reducer::Sum), indices, body)
                });

            let callarg = ident.clone().then_ignore(just(Token::Colon)).or_not().then(expr.clone());
            let callargs = group(
                Token::LParen,
                Token::RParen,
                callarg.separated_by(just(Token::Comma)).allow_trailing().collect::<Vec<_>>(),
            )
            .boxed();
            let indices = group(
                Token::LBracket,
                Token::RBracket,
                expr.clone().separated_by(just(Token::Comma)).at_least(1).collect::<Vec<Ex>>(),
            );
            let suffix = choice((
                callargs.clone().map(Suffix::Call),
                string
                    .delimited_by(just(Token::LBracket), just(Token::RBracket))
                    .then(callargs)
                    .map(|(prefix, args)| Suffix::PrefixedCall(prefix, args)),
                indices
                    .then(just(Token::KwElse).ignore_then(unary_expr.clone()).or_not())
                    .map(|(indices, default)| Suffix::Access(indices, default)),
            ))
            .or_not();
            let path_expr = path.clone().then(suffix).map_with(move |(path, suffix), e| postfix(sp(e.span()), path, suffix));

            let atom = choice((literal, paren, list, reduction, path_expr));
            let prefix_op = select! {
                Token::Minus = e => (UnaryOp::Neg, sp(e.span())),
                Token::Bang = e => (UnaryOp::Not, sp(e.span())),
            };
            let chain = prefix_op
                .repeated()
                .collect::<Vec<_>>()
                .then(atom)
                .separated_by(just(Token::Caret))
                .at_least(1)
                .collect::<Vec<_>>()
                .map(fold_power)
                .validate(|ex, _, emitter| report_too_deep(ex, emitter));

            let enter = custom(|inp| {
                let here = inp.cursor();
                let span = inp.span_since(&here);
                let depth: &mut Depth = inp.state();
                if depth.0 >= MAX_RECURSION {
                    return Err(Rich::custom(span, TOO_DEEP_EXPR));
                }
                depth.0 += 1;
                Ok(())
            });
            let exit = custom(|inp| {
                let depth: &mut Depth = inp.state();
                depth.0 = depth.0.saturating_sub(1);
                Ok(())
            });
            enter.ignore_then(chain).then_ignore(exit).labelled("expression").boxed()
        });

        let term = binary_level(
            unary_expr,
            choice((
                just(Token::Star).to(BinOp::Mul),
                just(Token::Slash).to(BinOp::Div),
                just(Token::Percent).to(BinOp::Rem),
                just(Token::At).to(BinOp::MatMul),
            )),
        );
        let additive =
            binary_level(term, choice((just(Token::Plus).to(BinOp::Add), just(Token::Minus).to(BinOp::Sub))));
        let comparison_op = choice((
            just(Token::Lt).to(BinOp::Lt),
            just(Token::Le).to(BinOp::Le),
            just(Token::Gt).to(BinOp::Gt),
            just(Token::Ge).to(BinOp::Ge),
            just(Token::EqEq).to(BinOp::Eq),
            just(Token::NotEq).to(BinOp::Ne),
        ))
        .map_with(|op, e| (op, e.span()));
        // Comparisons do not associate: a chain is read left to right but reported.
        let comparison = additive
            .clone()
            .then(comparison_op.then(additive).repeated().collect::<Vec<_>>())
            .validate(|(first, rest), _, emitter| {
                if let Some(((_, op_span), _)) = rest.get(1) {
                    emitter.emit(Rich::custom(
                        *op_span,
                        "comparison operators cannot be chained; use parentheses",
                    ));
                }
                let ex = rest.into_iter().fold(first, |a, ((op, _), b)| binary(op, a, b));
                report_too_deep(ex, emitter)
            })
            .boxed();
        let and = binary_level(comparison, just(Token::AndAnd).to(BinOp::And));
        let or = binary_level(and, just(Token::OrOr).to(BinOp::Or));
        or.labelled("expression").boxed()
    });
    let expr_out = expr.clone().map(|ex: Ex| ex.expr).boxed();

    let ty = ident
        .clone()
        .then(
            choice((
                just(Token::Ellipsis).map_with(move |_, e| DimExpr::Ellipsis(sp(e.span()))),
                expr_out.clone().map(DimExpr::Expr),
            ))
            .separated_by(just(Token::Comma))
            .collect::<Vec<_>>()
            .delimited_by(just(Token::LBracket), just(Token::RBracket)),
        )
        .map_with(move |(dtype, dims), e| TypeExpr { dtype, dims, span: sp(e.span()) })
        .labelled("type")
        .boxed();

    let ixdecls = group(
        Token::LBracket,
        Token::RBracket,
        ident
            .clone()
            .then(just(Token::Colon).ignore_then(expr_out.clone()).or_not())
            .map(|(name, extent)| IndexDecl { name, extent })
            .separated_by(just(Token::Comma))
            .at_least(1)
            .collect::<Vec<_>>(),
    );

    let block = recursive(|block| {
        enum Rhs {
            Assign(Expr),
            Define(Option<Vec<IndexDecl>>, Expr),
        }
        let param = just(Token::KwParam)
            .ignore_then(path.clone())
            .then_ignore(just(Token::Colon))
            .then(ty.clone())
            .map_with(move |(path, ty), e| Stmt::Param { path, ty, span: sp(e.span()) });
        let assign_or_define = ident
            .clone()
            .then(choice((
                just(Token::Assign).ignore_then(expr_out.clone()).map(Rhs::Assign),
                ixdecls
                    .clone()
                    .then_ignore(just(Token::Assign))
                    .then(expr_out.clone())
                    .map(|(indices, value)| Rhs::Define(indices, value)),
            )))
            .map_with(move |(name, rhs), e| {
                let span = sp(e.span());
                match rhs {
                    Rhs::Assign(value) => Stmt::Assign { name, value, span },
                    Rhs::Define(Some(indices), value) => Stmt::Define { name, indices, value, span },
                    Rhs::Define(None, _) => Stmt::Error(span),
                }
            });
        let for_loop = just(Token::KwFor)
            .ignore_then(ident.clone())
            .then_ignore(just(Token::KwIn))
            .then(expr_out.clone())
            .then_ignore(just(Token::DotDot))
            .then(expr_out.clone())
            .then(block)
            .map_with(move |(((var, start), end), body), e| Stmt::For { var, start, end, body, span: sp(e.span()) });
        let ret = just(Token::KwReturn)
            .ignore_then(expr_out.clone())
            .map_with(move |value, e| Stmt::Return { value, span: sp(e.span()) });
        let stmt = choice((param, assign_or_define, for_loop, ret)).map(Some).or(just(Token::Semi).to(None));

        let any_ident = select! { Token::Ident(_) => () };
        let bracket_tree = token_tree().and_is(just(Token::LBracket).rewind());
        let stmt_start = choice((
            one_of([Token::KwParam, Token::KwFor, Token::KwReturn, Token::Semi]).ignored(),
            any_ident.then(just(Token::Assign)).ignored(),
            any_ident.then(bracket_tree).then(just(Token::Assign)).ignored(),
        ));
        // Skips a bad statement: at least one token (or bracketed group), then up to the next statement start
        // or the end of the block.
        let skip_stmt = token_tree().then(token_tree().and_is(stmt_start.not()).repeated()).ignored();
        let stmt = stmt
            .labelled("statement")
            .recover_with(via_parser(skip_stmt.map_with(move |_, e| Some(Stmt::Error(sp(e.span()))))));

        group(Token::LBrace, Token::RBrace, stmt.repeated().collect::<Vec<Option<Stmt>>>())
            .map_with(move |stmts, e| {
                let span = sp(e.span());
                let stmts = match stmts {
                    Some(stmts) => stmts.into_iter().flatten().collect(),
                    None => vec![Stmt::Error(span)],
                };
                Block { stmts, span }
            })
            .labelled("block")
            .boxed()
    });

    let arg_type = choice((
        just(Token::KwInt).map_with(move |_, e| ArgType::Int(sp(e.span()))),
        just(Token::KwFloat).map_with(move |_, e| ArgType::Float(sp(e.span()))),
        just(Token::KwBool).map_with(move |_, e| ArgType::Bool(sp(e.span()))),
        ty.clone().map(ArgType::Tensor),
    ));
    let arg = ident
        .clone()
        .then_ignore(just(Token::Colon))
        .then(arg_type)
        .then(just(Token::Assign).ignore_then(expr_out.clone()).or_not())
        .map_with(move |((name, ty), default), e| ArgDecl { name, ty, default, span: sp(e.span()) });
    let args = arg
        .separated_by(just(Token::Comma))
        .allow_trailing()
        .collect::<Vec<_>>()
        .delimited_by(just(Token::LParen), just(Token::RParen))
        .boxed();

    let import = just(Token::KwImport)
        .ignore_then(string)
        .then(just(Token::KwAs).ignore_then(ident.clone()).or_not())
        .map_with(move |(path, alias), e| Item::Import(Import { path, alias, span: sp(e.span()) }));
    let function = just(Token::KwFn)
        .ignore_then(ident.clone())
        .then(args.clone())
        .then_ignore(just(Token::Arrow))
        .then(ty.clone())
        .then(block.clone())
        .map_with(move |(((name, args), ret), body), e| {
            Item::Fn(FnDef { name, args, ret, body, span: sp(e.span()) })
        });
    let output = ident
        .clone()
        .then_ignore(just(Token::Colon))
        .then(ty.clone())
        .map_with(move |(name, ty), e| OutputDecl { name, ty, span: sp(e.span()) });
    let model = just(Token::KwModel)
        .ignore_then(ident.clone())
        .then(args)
        .then_ignore(just(Token::Arrow))
        .then(
            output
                .separated_by(just(Token::Comma))
                .at_least(1)
                .allow_trailing()
                .collect::<Vec<_>>()
                .delimited_by(just(Token::LParen), just(Token::RParen)),
        )
        .then(block)
        .map_with(move |(((name, args), outputs), body), e| {
            Item::Model(ModelDef { name, args, outputs, body, span: sp(e.span()) })
        });
    let too_deep = just(Token::TooDeep).map_with(move |_, e| Item::Error(sp(e.span())));

    let item_keyword = one_of([Token::KwFn, Token::KwModel, Token::KwImport]);
    let skip_item = any().then(any().and_is(item_keyword.not()).repeated()).ignored();
    let item = choice((import, function, model, too_deep))
        .labelled("item")
        .recover_with(via_parser(skip_item.map_with(move |_, e| Item::Error(sp(e.span())))));

    item.repeated().collect::<Vec<_>>().then_ignore(end()).map(|items| SourceFileAst { items })
}

/// A left-associative level `lower (op lower)*`, folded iteratively.
fn binary_level<'src, I, L, O>(lower: L, op: O) -> impl Parser<'src, I, Ex, Extra<'src>> + Clone
where
    I: ValueInput<'src, Token = Token, Span = SimpleSpan>,
    L: Parser<'src, I, Ex, Extra<'src>> + Clone + 'src,
    O: Parser<'src, I, BinOp, Extra<'src>> + Clone + 'src,
{
    lower
        .clone()
        .foldl(op.then(lower).repeated(), |a, (op, b)| binary(op, a, b))
        .validate(|ex, _, emitter| report_too_deep(ex, emitter))
        .boxed()
}
