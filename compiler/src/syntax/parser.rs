//! The recovering parser (spec/language.md section 2): tokens from `lexer` -> `SourceFileAst`, with every
//! syntax error reported and an `Error` node where it recovered. It never panics and never stops early.
//!
//! Parsing runs in four steps. `balance` makes the delimiters of the token stream match (reporting and
//! repairing stray or missing ones), so that the chumsky grammar can always recover a bracketed region with
//! `nested_delimiters`. `excise_too_deep` replaces every item with nesting deeper than `MAX_NESTING` by one
//! `Token::TooDeep` (E0005), which bounds the parser's recursion. `mark_statement_names` marks the names that
//! start statements, which are never operands. Then the chumsky grammar runs; it is factored so that every
//! choice is made on the next one or two tokens, which keeps it linear on bad input.
//! Expression trees are kept at most `MAX_EXPR_HEIGHT` high and expression parsing recurses at most
//! `MAX_RECURSION` deep (beyond either, the expression becomes `Error`, E0005), so neither the parser nor
//! later passes that recurse over expressions can overflow the stack.

use chumsky::error::{RichPattern, RichReason};
use chumsky::input::{Checkpoint, Cursor, ValueInput};
use chumsky::inspector::Inspector;
use chumsky::label::LabelError;
use chumsky::prelude::*;

use super::ast::*;
use super::lexer::{Token, lex};
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
    // The lexer reports each unterminated string (E0003) with exactly the span of its token.
    let unterminated: Vec<SimpleSpan> =
        diags.iter().filter(|d| d.code == Code::E0003).map(|d| SimpleSpan::from(d.span.range())).collect();
    // Bad characters were reported by the lexer; dropping them lets the parser read the rest as written.
    let tokens: Vec<(Token, SimpleSpan)> = tokens
        .into_iter()
        .filter(|(token, _)| *token != Token::Error)
        .map(|(token, span)| (token, SimpleSpan::from(span.range())))
        .collect();
    // Where the text after an unterminated string is read as code again: parse errors from the string up to
    // there are consequences of the missing quote, already reported as E0003.
    let shadows: Vec<(usize, usize)> = unterminated
        .iter()
        .map(|string| {
            let next = tokens.get(tokens.partition_point(|(_, s)| s.start < string.end)).map_or(eoi, |(_, s)| s.start);
            (string.start, next)
        })
        .collect();
    let (tokens, synthetic) = balance(file, text, tokens, &unterminated, &mut diags);
    let tokens = mark_statement_names(excise_too_deep(file, tokens, &mut diags));

    let input = tokens.as_slice().map(SimpleSpan::from(eoi..eoi), |(t, s)| (t, s));
    let (ast, errors) = file_parser(file, text).parse_with_state(input, &mut Depth(0)).into_output_errors();
    for error in errors {
        let span = *error.span();
        // A zero-width error sits on a closing delimiter that `balance` inserted (or at the end of input
        // after one): that problem was already reported as an unclosed delimiter.
        if span.start == span.end && synthetic.binary_search(&span.start).is_ok() {
            continue;
        }
        let diag = to_diagnostic(file, &error);
        let at = diag.span.start as usize;
        if shadows.iter().any(|&(start, end)| start <= at && at <= end) {
            continue;
        }
        diags.push(diag);
    }
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    diags.dedup_by(|a, b| a.code == b.code && a.span == b.span && a.message == b.message);
    // One too-deep expression can be cut both for its height and for the parser's recursion: report it once.
    diags.dedup_by(|later, earlier| {
        later.message == TOO_DEEP_EXPR && earlier.message == TOO_DEEP_EXPR && later.span.start <= earlier.span.end
    });
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
///
/// An unterminated string (already reported as E0003) has swallowed the rest of its line, closers included.
/// Without a repair, what follows would be read inside the delimiters that those closers were meant to
/// close. So the closers in the string's text (less those its own openers match) close the innermost open
/// delimiters (a `{` only when it was opened on the string's line), and a string that runs to the end of its
/// line also ends the statement: the `(` and `[` still open in the current block are closed. These repairs
/// are not reported.
fn balance(
    file: FileId,
    text: &str,
    tokens: Vec<(Token, SimpleSpan)>,
    unterminated: &[SimpleSpan],
    diags: &mut Vec<Diagnostic>,
) -> (Vec<(Token, SimpleSpan)>, Vec<usize>) {
    let eoi = text.len();
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
        if matches!(token, Token::Str(_)) && unterminated.contains(&span) {
            out.push((token, span));
            let at = span.end;
            let mut close = |stack: &mut Vec<(Token, Token, SimpleSpan)>| {
                if let Some((closer, _, _)) = stack.pop() {
                    out.push((closer, SimpleSpan::from(at..at)));
                    synthetic.push(at);
                }
            };
            let mut inner = 0usize;
            for c in text.get(span.start + 1..span.end).unwrap_or("").chars() {
                match c {
                    '(' | '[' | '{' => inner += 1,
                    ')' | ']' | '}' if inner > 0 => inner -= 1,
                    ')' | ']' | '}' => {
                        // A block opened on an earlier line is more likely closed on a later one.
                        let earlier_block = matches!(stack.last(), Some((Token::RBrace, _, open))
                            if text.get(open.start..span.start).is_none_or(|between| between.contains('\n')));
                        if !earlier_block {
                            close(&mut stack);
                        }
                    }
                    _ => {}
                }
            }
            let rest = text.get(at..).unwrap_or("");
            if rest.is_empty() || rest.starts_with(['\n', '\r']) {
                while matches!(stack.last(), Some((Token::RParen | Token::RBracket, _, _))) {
                    close(&mut stack);
                }
            }
            continue;
        }
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
                    Diagnostic::new(
                        Code::E0002,
                        sp(span),
                        format!("unexpected closing delimiter `{}`", token.symbol()),
                    )
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

/// Turns each identifier that starts a statement (`name = ...` or `name[...] = ...`; spec section 2) into a
/// `Token::StmtName`, and puts a `Token::Destructure` before each `(` of `(a, b) = ...`. The grammar never reads one as an operand, so an unfinished expression stops at the
/// next statement instead of swallowing it. Works on a balanced stream.
fn mark_statement_names(mut tokens: Vec<(Token, SimpleSpan)>) -> Vec<(Token, SimpleSpan)> {
    let mut closing = vec![usize::MAX; tokens.len()];
    let mut open = Vec::new();
    for (i, (token, _)) in tokens.iter().enumerate() {
        if closer_of(token).is_some() {
            open.push(i);
        } else if is_closer(token)
            && let Some(opener) = open.pop()
        {
            closing[opener] = i;
        }
    }
    let mut destructures = Vec::new();
    for i in 0..tokens.len() {
        let after = match tokens.get(i + 1) {
            Some((Token::LBracket, _)) => closing[i + 1].saturating_add(1),
            _ => i + 1,
        };
        if let (Some((Token::Assign, _)), (Token::Ident(name), span)) = (tokens.get(after), &tokens[i]) {
            tokens[i] = (Token::StmtName(name.clone()), *span);
        }
        if tokens[i].0 == Token::LParen && matches!(tokens.get(closing[i].saturating_add(1)), Some((Token::Assign, _)))
        {
            destructures.push(i);
        }
    }
    // `(a, b) = ...`: a marker before the `(` starts the statement (inserted last, so indices stay valid).
    for &i in destructures.iter().rev() {
        let at = tokens[i].1.start;
        tokens.insert(i, (Token::Destructure, SimpleSpan::from(at..at)));
    }
    tokens
}

// ---------------------------------------------------------------------------------------------------------
// Errors

/// Separates the message, the label and the notes of a custom error, which chumsky carries as one string.
const PART: char = '\u{1f}';

/// A custom syntax error (E0002) with a label and notes.
fn custom_error<'src>(span: SimpleSpan, message: &str, label: &str, notes: &[String]) -> Rich<'src, Token, SimpleSpan> {
    let mut text = format!("{message}{PART}{label}");
    for note in notes {
        text.push(PART);
        text.push_str(note);
    }
    Rich::custom(span, text)
}

fn to_diagnostic(file: FileId, error: &Rich<'_, Token, SimpleSpan>) -> Diagnostic {
    // An empty span between two tokens comes out as `next.start..previous.end`.
    let range = error.span().into_range();
    let span = Span::new(file, range.start.min(range.end)..range.end.max(range.start));
    match error.reason() {
        RichReason::Custom(message) if message == TOO_DEEP_EXPR => Diagnostic::new(Code::E0005, span, message.clone())
            .label("too deep")
            .note(format!("an expression may nest at most {MAX_EXPR_HEIGHT} levels of operators, calls and accesses"))
            .rule("R2.2"),
        RichReason::Custom(message) => {
            let mut parts = message.split(PART);
            let mut diag = Diagnostic::new(Code::E0002, span, parts.next().unwrap_or_default()).rule("R2.1");
            if let Some(label) = parts.next().filter(|label| !label.is_empty()) {
                diag = diag.label(label);
            }
            parts.fold(diag, Diagnostic::note)
        }
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
    const OPERATORS: &[&str] = &["+", "-", "*", "/", "%", "@", "^", "<", "<=", ">", ">=", "==", "!=", "&&", "||"];
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
    inner.map(Some).delimited_by(just(open.clone()), just(close.clone())).recover_with(via_parser(nested_delimiters(
        open,
        close,
        others,
        |_| None,
    )))
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
            none_of([Token::LParen, Token::RParen, Token::LBracket, Token::RBracket, Token::LBrace, Token::RBrace])
                .ignored(),
        ))
    })
}

/// The first token of a statement: `param`, `for`, `return`, `;`, or the name in `name =` or `name[...] =`
/// (see `mark_statement_names`).
fn stmt_start<'src, I>() -> impl Parser<'src, I, (), Extra<'src>> + Clone
where
    I: ValueInput<'src, Token = Token, Span = SimpleSpan>,
{
    select! {
        Token::StmtName(_) | Token::Destructure | Token::KwParam | Token::KwFor | Token::KwReturn | Token::Semi => ()
    }
}

/// Looks at (without consuming) what can follow an expression that was cut short: the start of the next
/// statement or the end of the block. Outputs that token and the one after it; when it fails it expects
/// nothing that error messages name.
fn statement_end<'src, I>() -> impl Parser<'src, I, (Token, Option<Token>), Extra<'src>> + Clone
where
    I: ValueInput<'src, Token = Token, Span = SimpleSpan>,
{
    select! {
        token @ (Token::StmtName(_)
        | Token::Destructure
        | Token::KwParam
        | Token::KwFor
        | Token::KwReturn
        | Token::Semi
        | Token::RBrace) => token,
    }
    .then(any().or_not())
    .rewind()
}

/// `operator operand`, where `op` outputs its value and the span of the operator to name. When the operand
/// is missing because the next statement or the end of the block follows, that is reported at the operator
/// and the operand becomes an `Error` node (passed through `missing`): a new statement is never read as an
/// operand.
fn then_operand<'src, I, T, X, O, L>(
    file: FileId,
    text: &'src str,
    op: O,
    operand: L,
    missing: fn(Ex) -> X,
) -> impl Parser<'src, I, (T, X), Extra<'src>> + Clone
where
    I: ValueInput<'src, Token = Token, Span = SimpleSpan>,
    O: Parser<'src, I, (T, SimpleSpan), Extra<'src>> + Clone,
    L: Parser<'src, I, X, Extra<'src>> + Clone,
{
    op.then(operand.map(Ok).or(statement_end().map(Err))).validate(move |((value, at), operand), _, emitter| {
        match operand {
            Ok(operand) => (value, operand),
            Err(next) => {
                emitter.emit(missing_operand(text, at, next));
                (value, missing(Ex::error(Span::new(file, at.into_range()))))
            }
        }
    })
}

fn missing_operand<'src>(text: &str, at: SimpleSpan, next: (Token, Option<Token>)) -> Rich<'src, Token, SimpleSpan> {
    let op = text.get(at.into_range()).unwrap_or("operator");
    let message = format!("expected an expression after `{op}`, found {}", next.0.describe());
    let starts = match next {
        (Token::StmtName(name), Some(Token::LBracket)) => format!("`{name}[...] = ...`"),
        (Token::StmtName(name), _) => format!("`{name} = ...`"),
        (Token::Destructure, _) => "`(...) = ...`".to_string(),
        (Token::KwParam | Token::KwFor | Token::KwReturn, _) => format!("`{}`", next.0.symbol()),
        _ => return custom_error(at, &message, "expected an expression after this", &[]),
    };
    let note = format!("{starts} starts a new statement (a statement ends where the next one begins)");
    custom_error(at, &message, "expected an expression after this", &[note])
}

/// `name = value` in a call's arguments: reported with a hint, then read as `name: value`.
fn named_argument_with_assign<'src>(
    text: &str,
    name: &Ident,
    at: SimpleSpan,
    value: &Ex,
) -> Rich<'src, Token, SimpleSpan> {
    let value = text.get(value.expr.span.range()).filter(|v| v.len() <= 24 && !v.contains('\n')).unwrap_or("...");
    custom_error(
        at,
        &format!("expected `:` after argument name `{}`, found `=`", name.name),
        "expected `:`",
        &[format!("named arguments use `:`, e.g. `{}: {value}`", name.name)],
    )
}

fn file_parser<'src, I>(file: FileId, text: &'src str) -> impl Parser<'src, I, SourceFileAst, Extra<'src>>
where
    I: ValueInput<'src, Token = Token, Span = SimpleSpan>,
{
    let sp = move |s: SimpleSpan| Span::new(file, s.into_range());

    let ident = select! { Token::Ident(name) | Token::StmtName(name) = e => Ident { name, span: sp(e.span()) } }
        .labelled("identifier")
        .boxed();
    let number_segment = select! { Token::Int(_) = e => e.span(), Token::BadNumber = e => e.span() }.map(move |span| {
        let span: SimpleSpan = span;
        Ident { name: text.get(span.into_range()).unwrap_or("0").to_string(), span: sp(span) }
    });
    // `bool` is a keyword (for `bool` arguments) but also a dtype: `bool[N]` types and `bool(x)` casts.
    let dtype_name = ident
        .clone()
        .or(just(Token::KwBool).map_with(move |_, e| Ident { name: "bool".to_string(), span: sp(e.span()) }))
        .boxed();
    let path_from = |head: Boxed<'src, 'src, I, Ident, Extra<'src>>| {
        head.then(just(Token::Dot).ignore_then(ident.clone().or(number_segment)).repeated().collect::<Vec<_>>())
            .map_with(move |(first, rest), e| {
                let mut segments = vec![first];
                segments.extend(rest);
                Path { segments, span: sp(e.span()) }
            })
            .boxed()
    };
    let path = path_from(dtype_name.clone());
    // In an expression a path cannot start with the name that starts a statement.
    let operand_path = path_from(
        select! { Token::Ident(name) = e => Ident { name, span: sp(e.span()) } }
            .labelled("identifier")
            .or(just(Token::KwBool).map_with(move |_, e| Ident { name: "bool".to_string(), span: sp(e.span()) }))
            .boxed(),
    );
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
                // Out of range, already reported (E0004).
                Token::BadNumber = e => Ex::error(sp(e.span())),
                Token::KwTrue = e => Ex::leaf(ExprKind::Bool(true), sp(e.span())),
                Token::KwFalse = e => Ex::leaf(ExprKind::Bool(false), sp(e.span())),
            }
            .labelled("literal");
            // There is no parenthesis node: the inner expression's span grows to cover the parentheses.
            // `(a, b)` is a tuple (R5.6); `(a)` is `a`.
            let paren = group(
                Token::LParen,
                Token::RParen,
                expr.clone().separated_by(just(Token::Comma)).at_least(1).allow_trailing().collect::<Vec<Ex>>(),
            )
            .map_with(move |items, e| match items {
                Some(items) if items.len() == 1 => {
                    let mut inner = items.into_iter().next().unwrap_or_else(|| Ex::error(sp(e.span())));
                    inner.expr.span = sp(e.span());
                    inner
                }
                Some(items) => node(sp(e.span()), items, ExprKind::Tuple),
                None => Ex::error(sp(e.span())),
            });
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

            // `name = value` (a common slip for `name: value`) is reported and read as `name: value`.
            let arg_name = ident
                .clone()
                .then(choice((just(Token::Colon).to(None), just(Token::Assign).map_with(|_, e| Some(e.span())))));
            let callarg = arg_name
                .or_not()
                .then(expr.clone())
                .validate(move |(name, value): (Option<(Ident, Option<SimpleSpan>)>, Ex), _, emitter| {
                    let name = name.map(|(name, assign)| {
                        if let Some(at) = assign {
                            emitter.emit(named_argument_with_assign(text, &name, at, &value));
                        }
                        name
                    });
                    (name, value)
                })
                .labelled("argument");
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
                    .then(
                        then_operand(file, text, keyword(Token::KwElse), unary_expr.clone(), |ex| ex)
                            .map(|((), ex)| ex)
                            .or_not(),
                    )
                    .map(|(indices, default)| Suffix::Access(indices, default)),
            ))
            .or_not();
            let path_expr = operand_path
                .clone()
                .then(suffix)
                .map_with(move |(path, suffix), e| postfix(sp(e.span()), path, suffix));

            let atom = choice((literal, paren, list, reduction, path_expr)).boxed();
            let prefix_op = select! {
                Token::Minus = e => (UnaryOp::Neg, sp(e.span())),
                Token::Bang = e => (UnaryOp::Not, sp(e.span())),
            };
            let prefix_ops = prefix_op.repeated().at_least(1).collect::<Vec<_>>().map_with(|ops, e| {
                let last = ops.last().map_or(e.span(), |(_, span): &(UnaryOp, Span)| SimpleSpan::from(span.range()));
                (ops, last)
            });
            let segment = choice((
                atom.clone().map(|atom| (Vec::new(), atom)),
                then_operand(file, text, prefix_ops, atom, |ex| ex),
            ))
            .boxed();
            let chain = segment
                .clone()
                .then(
                    then_operand(file, text, keyword(Token::Caret), segment, |ex| (Vec::new(), ex))
                        .map(|((), segment)| segment)
                        .repeated()
                        .collect::<Vec<_>>(),
                )
                .map(|(first, rest)| fold_power(std::iter::once(first).chain(rest).collect()))
                .validate(|ex, _, emitter| report_too_deep(ex, emitter));

            // Recursion is bounded: past `MAX_RECURSION` the rest of the expression (up to the end of its group
            // or the next statement) becomes one `Error` node, reported once. The guards fail with an empty
            // error, which adds nothing to the error of whatever else fails at the same place.
            let nothing_expected = |span: SimpleSpan| {
                <Rich<'src, Token, SimpleSpan> as LabelError<'src, I, RichPattern<'src, Token>>>::expected_found(
                    None, None, span,
                )
            };
            let enter = empty().try_map_with(move |(), e| {
                let span: SimpleSpan = e.span();
                let depth: &mut Depth = e.state();
                if depth.0 >= MAX_RECURSION {
                    return Err(nothing_expected(span));
                }
                depth.0 += 1;
                Ok(())
            });
            // `custom` and `try_map_with` run in chumsky's check mode too (`map_with` would not).
            let exit = custom(|inp| {
                let depth: &mut Depth = inp.state();
                depth.0 = depth.0.saturating_sub(1);
                Ok(())
            });
            let too_deep = empty()
                .try_map_with(move |(), e| {
                    let span: SimpleSpan = e.span();
                    let depth: &mut Depth = e.state();
                    if depth.0 >= MAX_RECURSION { Ok(()) } else { Err(nothing_expected(span)) }
                })
                .ignore_then(token_tree().and_is(stmt_start().not()).repeated())
                .validate(move |(), e, emitter| {
                    let span: SimpleSpan = e.span();
                    emitter.emit(Rich::custom(span, TOO_DEEP_EXPR));
                    Ex::error(sp(span))
                });
            enter.ignore_then(chain).then_ignore(exit).labelled("expression").or(too_deep).boxed()
        });

        let term = binary_level(
            file,
            text,
            unary_expr,
            choice((
                just(Token::Star).to(BinOp::Mul),
                just(Token::Slash).to(BinOp::Div),
                just(Token::Percent).to(BinOp::Rem),
                just(Token::At).to(BinOp::MatMul),
            )),
        );
        let additive = binary_level(
            file,
            text,
            term,
            choice((just(Token::Plus).to(BinOp::Add), just(Token::Minus).to(BinOp::Sub))),
        );
        let comparison_op = choice((
            just(Token::Lt).to(BinOp::Lt),
            just(Token::Le).to(BinOp::Le),
            just(Token::Gt).to(BinOp::Gt),
            just(Token::Ge).to(BinOp::Ge),
            just(Token::EqEq).to(BinOp::Eq),
            just(Token::NotEq).to(BinOp::Ne),
        ))
        .map_with(|op, e| ((op, e.span()), e.span()));
        // Comparisons do not associate: a chain is read left to right but reported.
        let comparison = additive
            .clone()
            .then(then_operand(file, text, comparison_op, additive, |ex| ex).repeated().collect::<Vec<_>>())
            .validate(|(first, rest), _, emitter| {
                if let Some(((_, op_span), _)) = rest.get(1) {
                    emitter.emit(Rich::custom(*op_span, "comparison operators cannot be chained; use parentheses"));
                }
                let ex = rest.into_iter().fold(first, |a, ((op, _), b)| binary(op, a, b));
                report_too_deep(ex, emitter)
            })
            .boxed();
        let and = binary_level(file, text, comparison, just(Token::AndAnd).to(BinOp::And));
        let or = binary_level(file, text, and, just(Token::OrOr).to(BinOp::Or));
        or.labelled("expression").boxed()
    });
    let expr_out = expr.clone().map(|ex: Ex| ex.expr).boxed();
    // The value after `=` or `return`; a missing one is reported there (see `then_operand`).
    let value_after = {
        let expr = expr.clone();
        move |token: Token| {
            then_operand(file, text, keyword(token), expr.clone(), |ex| ex).map(|((), ex)| ex.expr).boxed()
        }
    };

    let ty = dtype_name
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
        // `param path: type` or `param "key{l}" as path: type`.
        let param = just(Token::KwParam)
            .ignore_then(string.then_ignore(just(Token::KwAs)).or_not())
            .then(path.clone())
            .then_ignore(just(Token::Colon))
            .then(ty.clone())
            .then(value_after(Token::Assign).or_not())
            .map_with(move |(((key, path), ty), init), e| Stmt::Param { key, path, ty, init, span: sp(e.span()) });
        let destructure = just(Token::Destructure)
            .ignore_then(group(
                Token::LParen,
                Token::RParen,
                ident.clone().separated_by(just(Token::Comma)).at_least(1).allow_trailing().collect::<Vec<_>>(),
            ))
            .then(value_after(Token::Assign))
            .map_with(move |(names, value), e| match names {
                Some(names) => Stmt::Destructure { names, value, span: sp(e.span()) },
                None => Stmt::Error(sp(e.span())),
            });
        let assign_or_define = ident
            .clone()
            .then(choice((
                value_after(Token::Assign).map(Rhs::Assign),
                ixdecls.clone().then(value_after(Token::Assign)).map(|(indices, value)| Rhs::Define(indices, value)),
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
        let ret = value_after(Token::KwReturn).map_with(move |value, e| Stmt::Return { value, span: sp(e.span()) });
        let stmt =
            choice((param, destructure, assign_or_define, for_loop, ret)).map(Some).or(just(Token::Semi).to(None));

        // Skips a bad statement: at least one token (or bracketed group), then up to the next statement start
        // or the end of the block.
        let skip_stmt = token_tree().then(token_tree().and_is(stmt_start().not()).repeated()).ignored();
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
        ty.clone().map(ArgType::Tensor),
        just(Token::KwInt).map_with(move |_, e| ArgType::Int(sp(e.span()))),
        just(Token::KwFloat).map_with(move |_, e| ArgType::Float(sp(e.span()))),
        just(Token::KwBool).map_with(move |_, e| ArgType::Bool(sp(e.span()))),
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
    // `-> T[N]`, or several results in parentheses, each `name: type` or a bare type (R5.6).
    let result = ident
        .clone()
        .then_ignore(just(Token::Colon))
        .or_not()
        .then(ty.clone())
        .map_with(move |(name, ty), e| ResultDecl { name, ty, span: sp(e.span()) });
    let results = choice((
        ty.clone().map_with(move |ty, e| vec![ResultDecl { name: None, ty, span: sp(e.span()) }]),
        result
            .separated_by(just(Token::Comma))
            .at_least(1)
            .allow_trailing()
            .collect::<Vec<_>>()
            .delimited_by(just(Token::LParen), just(Token::RParen)),
    ));
    let function = just(Token::KwFn)
        .ignore_then(ident.clone())
        .then(args.clone())
        .then_ignore(just(Token::Arrow))
        .then(results)
        .then(block.clone())
        .map_with(move |(((name, args), results), body), e| {
            Item::Fn(FnDef { name, args, results, body, span: sp(e.span()) })
        });
    let output = ident
        .clone()
        .then_ignore(just(Token::Colon))
        .then(ty.clone())
        .map_with(move |(name, ty), e| Ok(OutputDecl { name, ty, span: sp(e.span()) }));
    let grad_outputs = ident
        .clone()
        .then(ident.clone().delimited_by(just(Token::LParen), just(Token::RParen)))
        .map_with(move |(keyword, loss), e| Err(GradOutputs { keyword, loss, span: sp(e.span()) }));
    let model = just(Token::KwModel)
        .ignore_then(ident.clone())
        .then(args)
        .then_ignore(just(Token::Arrow))
        .then(
            choice((grad_outputs, output))
                .separated_by(just(Token::Comma))
                .at_least(1)
                .allow_trailing()
                .collect::<Vec<_>>()
                .delimited_by(just(Token::LParen), just(Token::RParen)),
        )
        .then(block)
        .map_with(move |(((name, args), entries), body), e| {
            let (mut outputs, mut grads) = (Vec::new(), Vec::new());
            for entry in entries {
                match entry {
                    Ok(output) => outputs.push(output),
                    Err(g) => grads.push(g),
                }
            }
            Item::Model(ModelDef { name, args, outputs, grads, body, span: sp(e.span()) })
        });
    let too_deep = just(Token::TooDeep).map_with(move |_, e| Item::Error(sp(e.span())));

    let item_keyword = one_of([Token::KwFn, Token::KwModel, Token::KwImport]);
    let skip_item = any().then(any().and_is(item_keyword.not()).repeated()).ignored();
    let item = choice((import, function, model, too_deep))
        .labelled("item")
        .recover_with(via_parser(skip_item.map_with(move |_, e| Item::Error(sp(e.span())))));

    item.repeated().collect::<Vec<_>>().then_ignore(end()).map(|items| SourceFileAst { items })
}

/// A token, with its span for `then_operand`.
fn keyword<'src, I>(token: Token) -> impl Parser<'src, I, ((), SimpleSpan), Extra<'src>> + Clone
where
    I: ValueInput<'src, Token = Token, Span = SimpleSpan>,
{
    just(token).map_with(|_, e| ((), e.span()))
}

/// A left-associative level `lower (op lower)*`, folded iteratively.
fn binary_level<'src, I, L, O>(
    file: FileId,
    text: &'src str,
    lower: L,
    op: O,
) -> impl Parser<'src, I, Ex, Extra<'src>> + Clone
where
    I: ValueInput<'src, Token = Token, Span = SimpleSpan>,
    L: Parser<'src, I, Ex, Extra<'src>> + Clone + 'src,
    O: Parser<'src, I, BinOp, Extra<'src>> + Clone + 'src,
{
    let op = op.map_with(|op, e| (op, e.span()));
    lower
        .clone()
        .foldl(then_operand(file, text, op, lower, |ex| ex).repeated(), |a, (op, b)| binary(op, a, b))
        .validate(|ex, _, emitter| report_too_deep(ex, emitter))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::print::{erase_spans, print};

    const SAMPLE: &str = r#"import "std/nn"
// comment
fn layer_norm(x: T[..., D], g: T[D], b: T[D], eps: float = 1e-5) -> T[..., D] {
    m = mean(x, axis: -1, keepdims: true)
    v = mean((x - m) ^ 2, axis: -1, keepdims: true)
    return (x - m) * rsqrt(v + eps) * g + b
}
fn conv(x: f32[C, H, W], w: f32[K, C, R, R]) -> f32[K, H, W] {
    y[k, h: H, w2: W] = sum[c, r, s](x[c, h + r - 1, w2 + s - 1] else 0.0 * w[k, c, r, s])
    return y
}
model m(x: f32[B, 784]) -> (logits: f32[B, 10]) {
    param fc.weight: f32[10, 784]
    h = x @ transpose(fc.weight)
    for i in 0..6 { h = Block["encoder.layer.{i}"](h, heads: 12); }
    logits = reshape(h, [B, 10]) + 1.5e-3
}
"#;

    fn parse_ok(text: &str) -> SourceFileAst {
        let (ast, diags) = parse(FileId(0), text);
        assert!(diags.is_empty(), "unexpected diagnostics for {text:?}: {diags:#?}");
        ast
    }

    fn codes(text: &str) -> Vec<Code> {
        parse(FileId(0), text).1.iter().map(|d| d.code).collect()
    }

    /// The value of the single statement `y = <src>` of a model, as a fully parenthesised S-expression.
    fn sexpr(src: &str) -> String {
        let ast = parse_ok(&format!("model m() -> (y: f32[]) {{ y = {src} }}"));
        let Item::Model(model) = &ast.items[0] else { panic!("not a model") };
        let Stmt::Assign { value, .. } = &model.body.stmts[0] else { panic!("not an assignment") };
        show(value)
    }

    fn show(e: &Expr) -> String {
        let list = |es: &[Expr]| es.iter().map(show).collect::<Vec<_>>().join(" ");
        match &e.kind {
            ExprKind::Int(v) => v.to_string(),
            ExprKind::Float(v) => format!("{v:?}"),
            ExprKind::Bool(b) => b.to_string(),
            ExprKind::Name(p) => p.text(),
            ExprKind::Unary(UnaryOp::Neg, x) => format!("(neg {})", show(x)),
            ExprKind::Unary(UnaryOp::Not, x) => format!("(not {})", show(x)),
            ExprKind::Binary(op, a, b) => format!("({} {} {})", op.symbol(), show(a), show(b)),
            ExprKind::Call { callee, prefix, args } => {
                let args: Vec<String> = args
                    .iter()
                    .map(|a| match &a.name {
                        Some(n) => format!("{}:{}", n.name, show(&a.value)),
                        None => show(&a.value),
                    })
                    .collect();
                let prefix = prefix.as_ref().map(|p| format!("[{:?}]", p.value)).unwrap_or_default();
                format!("(call {}{prefix} {})", callee.text(), args.join(" "))
            }
            ExprKind::Access { tensor, indices, default } => match default {
                Some(d) => format!("(at {} [{}] else {})", tensor.text(), list(indices), show(d)),
                None => format!("(at {} [{}])", tensor.text(), list(indices)),
            },
            ExprKind::Reduce { op, indices, body } => {
                let ix: Vec<String> = indices
                    .iter()
                    .map(|i| match &i.extent {
                        Some(x) => format!("{}:{}", i.name.name, show(x)),
                        None => i.name.name.clone(),
                    })
                    .collect();
                format!("({} [{}] {})", op.name(), ix.join(" "), show(body))
            }
            ExprKind::List(items) => format!("[{}]", list(items)),
            ExprKind::Tuple(items) => format!("(tuple {})", list(items)),
            ExprKind::Error => "<error>".to_string(),
        }
    }

    #[test]
    fn sample_program_parses_and_prints_canonically() {
        let ast = parse_ok(SAMPLE);
        assert_eq!(ast.items.len(), 4);
        let expected = r#"import "std/nn"

fn layer_norm(x: T[..., D], g: T[D], b: T[D], eps: float = 1e-5) -> T[..., D] {
    m = mean(x, axis: -1, keepdims: true)
    v = mean((x - m) ^ 2, axis: -1, keepdims: true)
    return (x - m) * rsqrt(v + eps) * g + b
}

fn conv(x: f32[C, H, W], w: f32[K, C, R, R]) -> f32[K, H, W] {
    y[k, h: H, w2: W] = sum[c, r, s](x[c, h + r - 1, w2 + s - 1] else 0.0 * w[k, c, r, s])
    return y
}

model m(x: f32[B, 784]) -> (logits: f32[B, 10]) {
    param fc.weight: f32[10, 784]
    h = x @ transpose(fc.weight)
    for i in 0..6 {
        h = Block["encoder.layer.{i}"](h, heads: 12)
    }
    logits = reshape(h, [B, 10]) + 0.0015
}
"#;
        assert_eq!(print(&ast), expected);
        let mut again = parse_ok(&print(&ast));
        let mut ast = ast;
        erase_spans(&mut ast);
        erase_spans(&mut again);
        assert_eq!(ast, again);
    }

    #[test]
    fn sample_program_tree() {
        let ast = parse_ok(SAMPLE);
        let Item::Fn(conv) = &ast.items[2] else { panic!() };
        let Stmt::Define { name, indices, value, .. } = &conv.body.stmts[0] else { panic!() };
        assert_eq!(name.name, "y");
        assert_eq!(indices.len(), 3);
        assert!(indices[0].extent.is_none());
        assert_eq!(indices[1].extent.as_ref().map(show), Some("H".to_string()));
        assert_eq!(show(value), "(sum [c r s] (* (at x [c (- (+ h r) 1) (- (+ w2 s) 1)] else 0.0) (at w [k c r s])))");
        let Item::Model(model) = &ast.items[3] else { panic!() };
        assert_eq!(model.outputs[0].name.name, "logits");
        let Stmt::Param { path, ty, .. } = &model.body.stmts[0] else { panic!() };
        assert_eq!(path.text(), "fc.weight");
        assert_eq!(ty.dtype.name, "f32");
        let Stmt::For { var, start, end, body, .. } = &model.body.stmts[2] else { panic!() };
        assert_eq!((var.name.as_str(), show(start), show(end)), ("i", "0".into(), "6".into()));
        let Stmt::Assign { value, .. } = &body.stmts[0] else { panic!() };
        assert_eq!(show(value), r#"(call Block["encoder.layer.{i}"] h heads:12)"#);
        let Item::Fn(layer_norm) = &ast.items[1] else { panic!() };
        assert!(matches!(layer_norm.args[3].ty, ArgType::Float(_)));
        assert_eq!(layer_norm.args[3].default.as_ref().map(show), Some("1e-5".to_string()));
        assert!(matches!(layer_norm.results[0].ty.dims[0], DimExpr::Ellipsis(_)));
    }

    #[test]
    fn spans_are_byte_offsets() {
        let text = "model m() -> (y: f32[]) {\n    y = a + b\n}\n";
        let ast = parse_ok(text);
        let Item::Model(model) = &ast.items[0] else { panic!() };
        assert_eq!(model.span.range(), 0..text.len() - 1);
        let Stmt::Assign { value, span, .. } = &model.body.stmts[0] else { panic!() };
        assert_eq!(&text[span.range()], "y = a + b");
        assert_eq!(&text[value.span.range()], "a + b");
        // Parentheses belong to the expression they enclose.
        let text = "model m() -> (y: f32[]) { y = -(a + b) * f((c)) }";
        let ast = parse_ok(text);
        let Item::Model(model) = &ast.items[0] else { panic!() };
        let Stmt::Assign { value, .. } = &model.body.stmts[0] else { panic!() };
        assert_eq!(&text[value.span.range()], "-(a + b) * f((c))");
        let ExprKind::Binary(_, lhs, rhs) = &value.kind else { panic!() };
        let ExprKind::Unary(_, operand) = &lhs.kind else { panic!() };
        assert_eq!(&text[operand.span.range()], "(a + b)");
        let ExprKind::Call { args, .. } = &rhs.kind else { panic!() };
        assert_eq!(&text[args[0].value.span.range()], "(c)");
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(sexpr("-x^2"), "(neg (^ x 2))");
        assert_eq!(sexpr("a ^ b ^ c"), "(^ a (^ b c))");
        assert_eq!(sexpr("2 ^ -x ^ 2"), "(^ 2 (neg (^ x 2)))");
        assert_eq!(sexpr("-3"), "(neg 3)");
        assert_eq!(sexpr("a - b - c"), "(- (- a b) c)");
        assert_eq!(sexpr("a + b * c @ d % e"), "(+ a (% (@ (* b c) d) e))");
        assert_eq!(sexpr("a < b + 1 && c == d || !e"), "(|| (&& (< a (+ b 1)) (== c d)) (not e))");
        assert_eq!(sexpr("a || b && c || d"), "(|| (|| a (&& b c)) d)");
        assert_eq!(sexpr("x[i, j] else 0.0 * w"), "(* (at x [i j] else 0.0) w)");
        assert_eq!(sexpr("x[i] else -1 ^ 2"), "(at x [i] else (neg (^ 1 2)))");
        assert_eq!(sexpr("-x[i] else 0"), "(neg (at x [i] else 0))");
        assert_eq!(sexpr("(a + b) * c"), "(* (+ a b) c)");
    }

    #[test]
    fn postfix_forms() {
        assert_eq!(sexpr("f[\"p.{i}\"](x, axis: 1,)"), "(call f[\"p.{i}\"] x axis:1)");
        assert_eq!(sexpr("max(a, b)"), "(call max a b)");
        assert_eq!(sexpr("max[k: N](x[k])"), "(max [k:N] (at x [k]))");
        assert_eq!(sexpr("sum[r, s](1)"), "(sum [r s] 1)");
        assert_eq!(sexpr("[a, b, 3]"), "[a b 3]");
        assert_eq!(sexpr("[]"), "[]");
        assert_eq!(sexpr("layer.0.weight"), "layer.0.weight");
        assert_eq!(sexpr("layer.0.1[i]"), "(at layer.0.1 [i])");
        assert_eq!(sexpr("nn.linear(x)"), "(call nn.linear x)");
        assert_eq!(sexpr("true && !false"), "(&& true (not false))");
        assert_eq!(sexpr("1e-12 + 2.5"), "(+ 1e-12 2.5)");
    }

    #[test]
    fn statements_need_no_terminator() {
        let ast = parse_ok("fn f(x: f32[N], n: int) -> f32[N] {\n x = a\n y[n] = x[n];;\n return y }");
        let Item::Fn(f) = &ast.items[0] else { panic!() };
        assert_eq!(f.body.stmts.len(), 3);
        assert!(matches!(f.body.stmts[0], Stmt::Assign { .. }));
        assert!(matches!(f.body.stmts[1], Stmt::Define { .. }));
        assert!(matches!(f.body.stmts[2], Stmt::Return { .. }));
        assert!(matches!(f.args[1].ty, ArgType::Int(_)));
    }

    #[test]
    fn several_results_tuples_destructuring_and_param_keys() {
        let text = "fn cell(x: T[B, I], l: int) -> (h: T[B, H], T[B, H]) {\n param \"w_l{l}\" as w: T[H, I]\n \
                    y = f(x)\n (a, b) = g[\"p{l}\"](y, 2)\n (c, d,) = (b, a)\n return (a, (b))\n}";
        let ast = parse_ok(text);
        let Item::Fn(f) = &ast.items[0] else { panic!() };
        assert_eq!(f.results.len(), 2);
        assert_eq!(f.results[0].name.as_ref().map(|n| n.name.as_str()), Some("h"));
        assert!(f.results[1].name.is_none());
        let Stmt::Param { key: Some(key), path, .. } = &f.body.stmts[0] else { panic!("{:?}", f.body.stmts[0]) };
        assert_eq!((key.value.as_str(), path.text().as_str()), ("w_l{l}", "w"));
        // `f(x)` stops before the next line's `(`: it is not read as a call `f(x)(a, b)`.
        let Stmt::Assign { value, .. } = &f.body.stmts[1] else { panic!() };
        assert_eq!(show(value), "(call f x)");
        let Stmt::Destructure { names, value, .. } = &f.body.stmts[2] else { panic!("{:?}", f.body.stmts[2]) };
        assert_eq!(names.len(), 2);
        assert_eq!(show(value), "(call g[\"p{l}\"] y 2)");
        let Stmt::Destructure { names, value, .. } = &f.body.stmts[3] else { panic!() };
        assert_eq!((names.len(), show(value)), (2, "(tuple b a)".to_string()));
        let Stmt::Return { value, .. } = &f.body.stmts[4] else { panic!() };
        assert_eq!(show(value), "(tuple a b)");
        // A one-result signature in parentheses is the same as without them.
        let one = parse_ok("fn f(x: T[N]) -> (T[N]) { return x }");
        let Item::Fn(f) = &one.items[0] else { panic!() };
        assert_eq!(f.results.len(), 1);
        assert_eq!(codes("fn f() -> (a: T[]) { (x, 1) = g() }"), [Code::E0002]);
        assert_eq!(codes("fn f() -> () { return 1 }"), [Code::E0002]);
    }

    #[test]
    fn bool_is_also_a_dtype_name() {
        let ast = parse_ok("fn f(m: bool[N], b: bool, x: f32[N]) -> bool[N] { return bool(x) && m }");
        let Item::Fn(f) = &ast.items[0] else { panic!() };
        assert!(matches!(&f.args[0].ty, ArgType::Tensor(t) if t.dtype.name == "bool"));
        assert!(matches!(f.args[1].ty, ArgType::Bool(_)));
        assert_eq!(f.results[0].ty.dtype.name, "bool");
        let Stmt::Return { value, .. } = &f.body.stmts[0] else { panic!() };
        assert_eq!(show(value), "(&& (call bool x) m)");
    }

    #[test]
    fn imports_with_alias() {
        let ast = parse_ok("import \"a/b\" as ab import \"c\"");
        let [Item::Import(a), Item::Import(c)] = &ast.items[..] else { panic!() };
        assert_eq!(a.path.value, "a/b");
        assert_eq!(a.alias.as_ref().map(|i| i.name.as_str()), Some("ab"));
        assert_eq!(c.path.value, "c");
        assert!(c.alias.is_none());
    }

    #[test]
    fn every_error_is_reported_and_parsing_recovers() {
        let text = r#"fn f(x: f32[N]) -> f32[N] {
    b = f(x, +, 2)
    c = (x * )
    d = 1 2
    return x
}
model bad(x: f32[B] -> (y: f32[B]) { y = x }
fn g( -> T[] { }
model ok(x: f32[B]) -> (y: f32[B]) { y = x < 1 < 2 }
"#;
        let (ast, diags) = parse(FileId(0), text);
        let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert!(diags.iter().all(|d| d.code == Code::E0002 && d.rule == Some("R2.1")), "{diags:#?}");
        assert!(messages.contains(&"expected argument or `)`, found `+`"), "{messages:#?}");
        assert!(messages.contains(&"expected expression, found `)`"), "{messages:#?}");
        assert!(messages.contains(&"comparison operators cannot be chained; use parentheses"), "{messages:#?}");
        assert!(diags.len() >= 6, "{messages:#?}");
        // The first function keeps its good statements around the bad ones.
        let Item::Fn(f) = &ast.items[0] else { panic!("{:?}", ast.items[0]) };
        let kinds: Vec<String> = f.body.stmts.iter().map(|s| format!("{:?}", std::mem::discriminant(s))).collect();
        assert_eq!(f.body.stmts.len(), 5, "{kinds:?}");
        assert!(matches!(f.body.stmts[4], Stmt::Return { .. }));
        let Stmt::Assign { value, .. } = &f.body.stmts[0] else { panic!() };
        assert_eq!(value.kind, ExprKind::Error);
        assert!(matches!(ast.items[1], Item::Error(_)));
        assert!(matches!(ast.items[2], Item::Error(_)));
        assert!(matches!(&ast.items[3], Item::Model(m) if m.name.name == "ok"));
    }

    #[test]
    fn error_messages_name_what_was_expected() {
        let (_, diags) = parse(FileId(0), "model m() -> (y: f32[]) { y = (a + b; }");
        assert_eq!(diags[0].message, "expected operator, `(`, `)`, `,`, `.` or `[`, found `;`");
        assert_eq!(diags[0].span.range(), 36..37);
        let (_, diags) = parse(FileId(0), "fn f() -> f32[] { return }");
        assert_eq!(diags[0].message, "expected an expression after `return`, found `}`");
        assert_eq!(diags[0].span.range(), 18..24);
        let (_, diags) = parse(FileId(0), "x = 1");
        assert_eq!(diags[0].message, "expected item, found identifier `x`");
        let (_, diags) = parse(FileId(0), "model m() -> (y: f32[]) { y = sum[k] + 1 }");
        assert_eq!(diags[0].message, "expected `(`, found `+`");
    }

    #[test]
    fn unbalanced_delimiters_are_reported_once() {
        let (ast, diags) = parse(FileId(0), "fn f() -> f32[] { y = g(1\n return y }\nfn h() -> f32[] { return 1 }");
        assert!(matches!(&ast.items[1], Item::Fn(h) if h.name.name == "h"), "{:?}", ast.items);
        assert!(diags.iter().any(|d| d.message.starts_with("mismatched closing delimiter")), "{diags:#?}");
        let (ast, diags) = parse(FileId(0), "fn f() -> f32[] { return 1 ) }\nfn g() -> f32[] { return (2");
        assert_eq!(ast.items.len(), 2);
        let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(messages, vec!["unexpected closing delimiter `)`", "unclosed delimiter `(`"], "{diags:#?}");
    }

    #[test]
    fn lexer_errors_do_not_cascade() {
        let (ast, diags) = parse(FileId(0), "model m() -> (y: f32[]) { y = 1 $ + 2 }");
        assert_eq!(diags.iter().map(|d| d.code).collect::<Vec<_>>(), vec![Code::E0001]);
        assert!(matches!(&ast.items[0], Item::Model(_)));
        // The unterminated string swallows the `}`, which still closes the block; a string is no expression,
        // but that is not reported on top of the E0003.
        let (ast, diags) = parse(FileId(0), "model m() -> (y: f32[]) { y = 99999999999999999999 + \"x }");
        assert_eq!(diags.iter().map(|d| d.code).collect::<Vec<_>>(), vec![Code::E0004, Code::E0003]);
        let Item::Model(m) = &ast.items[0] else { panic!() };
        let Stmt::Assign { value, .. } = &m.body.stmts[0] else { panic!("{:?}", m.body.stmts) };
        assert_eq!(value.kind, ExprKind::Error);
    }

    fn model_body(text: &str) -> (Vec<Stmt>, Vec<Diagnostic>) {
        let (ast, diags) = parse(FileId(0), text);
        let Some(Item::Model(m)) = ast.items.into_iter().next() else { panic!("no model in {text:?}") };
        (m.body.stmts, diags)
    }

    #[test]
    fn a_new_statement_stops_an_unfinished_expression() {
        let text = "model m(x: f32[N]) -> (y: f32[N]) {\n    h = relu(x) +\n    y = h\n}";
        let (stmts, diags) = model_body(text);
        assert_eq!(diags.len(), 1, "{diags:#?}");
        assert_eq!(diags[0].message, "expected an expression after `+`, found identifier `y`");
        assert_eq!(&text[diags[0].span.range()], "+");
        assert_eq!(
            diags[0].notes,
            vec!["`y = ...` starts a new statement (a statement ends where the next one begins)"]
        );
        let [Stmt::Assign { value, .. }, Stmt::Assign { name, .. }] = &stmts[..] else { panic!("{stmts:?}") };
        assert_eq!(show(value), "(+ (call relu x) <error>)");
        assert_eq!(name.name, "y");
        // Every operator, `else`, `=` and `return` stop there, before `name = `, `name[...] =`, a keyword or `}`.
        for (unfinished, next, op) in [
            ("a *", "y = 1", "*"),
            ("a == -", "y[i] = 1", "-"),
            ("a ^", "return a", "^"),
            ("!a &&", "for i in 0..2 { }", "&&"),
            ("x[0] else", "param p: f32[]", "else"),
            ("", "y = 1", "="),
            ("a ||", "", "||"),
        ] {
            let text = format!("model m() -> (y: f32[]) {{\n h = {unfinished}\n {next}\n}}");
            let (stmts, diags) = model_body(&text);
            assert_eq!(diags.len(), 1, "{text}: {diags:#?}");
            assert!(diags[0].message.starts_with(&format!("expected an expression after `{op}`, found")), "{diags:#?}");
            assert!(matches!(&stmts[0], Stmt::Assign { name, .. } if name.name == "h"), "{stmts:?}");
            assert_eq!(stmts.len(), if next.is_empty() { 1 } else { 2 }, "{text}: {stmts:?}");
        }
        // `return` at the end of a block.
        let (_, diags) = parse(FileId(0), "fn f() -> f32[] { return }");
        assert_eq!(diags[0].message, "expected an expression after `return`, found `}`");
        // Comparisons with `==` and names followed by `[...]` without `=` are still operands.
        assert_eq!(sexpr("a +\n b == c[i]"), "(== (+ a b) (at c [i]))");
    }

    #[test]
    fn named_arguments_written_with_assign_get_a_hint() {
        let text = "model m() -> (y: f32[]) { y = softmax(h, axis=-1) }";
        let (stmts, diags) = model_body(text);
        assert_eq!(diags.len(), 1, "{diags:#?}");
        assert_eq!(diags[0].message, "expected `:` after argument name `axis`, found `=`");
        assert_eq!(&text[diags[0].span.range()], "=");
        assert_eq!(diags[0].notes, vec!["named arguments use `:`, e.g. `axis: -1`"]);
        let Stmt::Assign { value, .. } = &stmts[0] else { panic!() };
        assert_eq!(show(value), "(call softmax h axis:(neg 1))");
    }

    #[test]
    fn unterminated_strings_do_not_cascade() {
        // A param prefix stops before `]`: the rest of the line is read as code.
        let text = "model m(x: f32[B]) -> (y: f32[B]) {\n h = relu(L[\"enc.fc1](x, 128))\n y = L[\"head\"](h, 10)\n}";
        let (stmts, diags) = model_body(text);
        assert_eq!(diags.iter().map(|d| d.code).collect::<Vec<_>>(), vec![Code::E0003]);
        let [Stmt::Assign { value, .. }, Stmt::Assign { .. }] = &stmts[..] else { panic!("{stmts:?}") };
        assert_eq!(show(value), r#"(call relu (call L["enc.fc1"] x 128))"#);
        // Otherwise the string runs to the end of the line, which ends the statement too.
        for bad in ["relu(L[\"enc.fc1(x, 128))", "f(x, \"a", "[1, \"a]", "x + \"(((", "\"a }"] {
            let text =
                format!("model m(x: f32[B]) -> (y: f32[B]) {{\n h = {bad}\n y = h\n}}\nfn f() -> f32[] {{ return 1 }}");
            let (ast, diags) = parse(FileId(0), &text);
            assert_eq!(diags.iter().map(|d| d.code).collect::<Vec<_>>(), vec![Code::E0003], "{text}: {diags:#?}");
            let Item::Model(m) = &ast.items[0] else { panic!() };
            assert!(matches!(m.body.stmts.last(), Some(Stmt::Assign { name, .. }) if name.name == "y"), "{text}");
            assert!(matches!(&ast.items[1], Item::Fn(_)), "{text}: {:?}", ast.items);
        }
        let (stmts, diags) = model_body("model m() -> (y: f32[]) {\n param w: f32[\"N\n y = w\n}");
        assert_eq!(diags.iter().map(|d| d.code).collect::<Vec<_>>(), vec![Code::E0003]);
        assert!(matches!(stmts.last(), Some(Stmt::Assign { .. })), "{stmts:?}");
        let (ast, diags) = parse(FileId(0), "import \"std/nn\nfn f() -> f32[] { return 1 }");
        assert_eq!(diags.iter().map(|d| d.code).collect::<Vec<_>>(), vec![Code::E0003]);
        assert!(matches!(&ast.items[..], [Item::Import(i), Item::Fn(_)] if i.path.value == "std/nn"));
    }

    #[test]
    fn out_of_range_literals_are_error_nodes() {
        let big = "99999999999999999999";
        let (stmts, diags) =
            model_body(&format!("model m() -> (y: f32[]) {{ param t: f32[{big}, 2] y = {big} + 1e999 }}"));
        assert_eq!(diags.iter().map(|d| d.code).collect::<Vec<_>>(), vec![Code::E0004; 3]);
        let [Stmt::Param { ty, .. }, Stmt::Assign { value, .. }] = &stmts[..] else { panic!("{stmts:?}") };
        assert!(matches!(&ty.dims[0], DimExpr::Expr(e) if e.kind == ExprKind::Error));
        assert_eq!(show(value), "(+ <error> <error>)");
        let (stmts, _) = model_body(&format!("model m() -> (y: f32[]) {{ y = layer.{big}.w }}"));
        let Stmt::Assign { value, .. } = &stmts[0] else { panic!() };
        assert_eq!(show(value), format!("layer.{big}.w"));
    }

    fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
        format!("model m() -> (y: f32[]) {{ y = {}{inner}{} }}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn nesting_limit_is_256() {
        assert!(codes(&nested("(", "1", ")", MAX_NESTING - 1)).is_empty());
        assert!(codes(&nested("f(", "1", ")", MAX_NESTING - 1)).is_empty());
        assert_eq!(codes(&nested("(", "1", ")", MAX_NESTING)), vec![Code::E0005]);
        assert_eq!(codes(&nested("[", "1", "]", 1000)), vec![Code::E0005]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "(".repeat(100_000);
        let (ast, diags) = parse(FileId(0), &text);
        assert!(diags.iter().any(|d| d.code == Code::E0005), "{diags:#?}");
        assert_eq!(ast.items.len(), 1);
        // The items around a too-deep one are still parsed.
        let text = format!(
            "fn a() -> f32[] {{ return 1 }}\n{}\nfn b() -> f32[] {{ return 2 }}",
            nested("{", "", "}", 100_000)
        );
        let (ast, diags) = parse(FileId(0), &text);
        assert_eq!(diags.iter().map(|d| d.code).collect::<Vec<_>>(), vec![Code::E0005]);
        assert!(matches!(&ast.items[..], [Item::Fn(_), Item::Error(_), Item::Fn(_)]));
    }

    #[test]
    fn long_operator_chains_are_cut_not_overflowed() {
        for chain in [
            "-".repeat(100_000) + "x",
            "!".repeat(100_000) + "x",
            "x + ".repeat(100_000) + "x",
            "x ^ ".repeat(100_000) + "x",
            "x[0] else ".repeat(100_000) + "0",
            "x && ".repeat(100_000) + "x",
        ] {
            let text = format!("model m() -> (y: f32[]) {{ y = {chain}\n z = 1 }}");
            let (ast, diags) = parse(FileId(0), &text);
            assert_eq!(diags.iter().map(|d| d.code).collect::<Vec<_>>(), vec![Code::E0005], "{:?}", &chain[..20]);
            let Item::Model(m) = &ast.items[0] else { panic!() };
            assert!(matches!(m.body.stmts.last(), Some(Stmt::Assign { name, .. }) if name.name == "z"));
        }
        // A chain as long as the limit is fine.
        let ok = format!("model m() -> (y: f32[]) {{ y = {}x }}", "x + ".repeat(MAX_EXPR_HEIGHT as usize));
        assert!(codes(&ok).is_empty());
    }

    #[test]
    fn odd_inputs_never_panic() {
        for text in [
            "",
            "fn",
            "model",
            "import",
            "fn f(",
            "}}}}",
            ")",
            "\"",
            "fn f() -> T[] { for }",
            "fn f() -> T[] { for i in 0.. }",
            "model m() -> () {}",
            "fn f() -> T[...] { y[] = 1 }",
            "\u{feff}fn",
            "sum[",
            "fn f() -> T[] { x = sum[k](",
            "fn f() -> T[] { x = a[\"p\"] }",
            "fn f() -> T[] { x = a[\"p\"](1 }",
            "import \"a\" as",
            "...",
        ] {
            let _ = parse(FileId(0), text);
        }
    }

    mod fuzz {
        use super::{FileId, SAMPLE, parse};
        use proptest::prelude::*;

        const VOCABULARY: &[&str] = &[
            "fn", "model", "param", "import", "for", "in", "return", "else", "true", "false", "int", "float", "as",
            "(", ")", "[", "]", "{", "}", ",", ":", ";", "=", "==", "<", "+", "-", "*", "^", "!", "&&", "||", "->",
            ".", "..", "...", "x", "sum", "f32", "0", "1.5", "\"s\"", "$", "\n",
        ];

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                let text = String::from_utf8_lossy(&bytes);
                let _ = parse(FileId(0), &text);
            }

            #[test]
            fn random_token_soup_never_panics(words in proptest::collection::vec(proptest::sample::select(VOCABULARY), 0..200)) {
                let text = words.join(" ");
                let (_, diags) = parse(FileId(0), &text);
                for d in &diags {
                    prop_assert!(d.span.end as usize <= text.len());
                }
            }

            #[test]
            fn damaged_sample_never_panics(cut in 0..SAMPLE.len(), len in 0..20usize, insert in proptest::sample::select(VOCABULARY)) {
                let mut text: String = SAMPLE.chars().take(cut).collect();
                text.push_str(insert);
                text.extend(SAMPLE.chars().skip(cut + len));
                let _ = parse(FileId(0), &text);
            }
        }
    }
}
