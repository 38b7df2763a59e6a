//! The tdsl lexer (spec/language.md section 1): turns source text into `(Token, Span)` pairs with byte spans.
//! It never fails and never panics: a run of bad characters becomes one `Token::Error` (E0001), an
//! out-of-range number becomes one `Token::BadNumber` (E0004), an unterminated string ends at the end of its
//! line, or before the first `]` when it is a param prefix (E0003), and lexing always goes on to the end of
//! the text.

use std::ops::Range;

use logos::Logos;

use crate::diag::{Code, Diagnostic};
use crate::span::{FileId, Span};

/// One token. Reducer names (`sum`, `max`, ...) and dtype names are plain identifiers; the parser decides
/// what they mean from the token that follows.
#[derive(Logos, Clone, Debug, PartialEq)]
#[logos(extras = Vec<(Range<usize>, LexProblem)>)]
#[logos(skip r"[ \t\r\n\f]+")]
// Comments run to the end of the line by definition, so the greedy repetition is intended.
#[logos(skip(r"(//|#)[^\n]*", allow_greedy = true))]
pub enum Token {
    #[regex(r"[A-Za-z_][A-Za-z0-9_]*", |lex| lex.slice().to_string())]
    Ident(String),
    /// Decimal integer literal (`lex` turns one that does not fit in an `i64` into `BadNumber`).
    #[regex(r"[0-9]+", lex_int)]
    Int(i64),
    /// Float literal with a fraction or an exponent (`lex` turns one that is not finite into `BadNumber`).
    #[regex(r"[0-9]+\.[0-9]+([eE][+-]?[0-9]+)?", lex_float)]
    #[regex(r"[0-9]+[eE][+-]?[0-9]+", lex_float)]
    Float(f64),
    /// String literal with escapes resolved.
    #[token("\"", lex_string)]
    Str(String),

    #[token("fn")]
    KwFn,
    #[token("model")]
    KwModel,
    #[token("param")]
    KwParam,
    #[token("import")]
    KwImport,
    #[token("for")]
    KwFor,
    #[token("in")]
    KwIn,
    #[token("return")]
    KwReturn,
    #[token("else")]
    KwElse,
    #[token("true")]
    KwTrue,
    #[token("false")]
    KwFalse,
    #[token("int")]
    KwInt,
    #[token("float")]
    KwFloat,
    #[token("bool")]
    KwBool,
    #[token("as")]
    KwAs,

    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token(",")]
    Comma,
    #[token(":")]
    Colon,
    #[token(";")]
    Semi,
    #[token("=")]
    Assign,
    #[token("==")]
    EqEq,
    #[token("!=")]
    NotEq,
    #[token("<")]
    Lt,
    #[token("<=")]
    Le,
    #[token(">")]
    Gt,
    #[token(">=")]
    Ge,
    #[token("+")]
    Plus,
    #[token("-")]
    Minus,
    #[token("*")]
    Star,
    #[token("/")]
    Slash,
    #[token("%")]
    Percent,
    #[token("@")]
    At,
    #[token("^")]
    Caret,
    #[token("!")]
    Bang,
    #[token("&&")]
    AndAnd,
    #[token("||")]
    OrOr,
    #[token("->")]
    Arrow,
    #[token(".")]
    Dot,
    #[token("..")]
    DotDot,
    #[token("...")]
    Ellipsis,

    /// A run of characters that start no token (already reported as E0001).
    Error,
    /// An integer or float literal that is out of range (already reported as E0004). The parser reads it as
    /// an `Error` expression, so that no later pass works with a made-up value.
    BadNumber,
    /// Produced by the parser's pre-pass, never by `lex`: an item that contained nesting deeper than the
    /// limit, already reported as E0005 and replaced by this one token.
    TooDeep,
    /// Produced by the parser's pre-pass, never by `lex`: an identifier that starts a statement (one followed
    /// by `=`, or by `[...]` and `=`). It is read wherever an identifier is, except as an operand.
    StmtName(String),
    /// Produced by the parser's pre-pass, never by `lex`: a zero-width marker before the `(` of a
    /// destructuring statement `(a, b) = ...` (a parenthesised group followed by `=`), so that the `(` is
    /// never read as a call's arguments or an operand.
    Destructure,
}

/// A problem found while lexing, turned into a `Diagnostic` by `lex`.
#[derive(Clone, Debug, PartialEq)]
pub enum LexProblem {
    IntOutOfRange,
    FloatOutOfRange,
    UnterminatedString,
    BadEscape(char),
}

impl Token {
    /// How the token is named in diagnostics, e.g. "`)`" or "identifier `x`".
    pub fn describe(&self) -> String {
        match self {
            Token::Ident(name) | Token::StmtName(name) => format!("identifier `{name}`"),
            Token::Int(_) => "integer literal".to_string(),
            Token::Float(_) => "float literal".to_string(),
            Token::Str(_) => "string literal".to_string(),
            Token::Error => "invalid character".to_string(),
            Token::BadNumber => "number literal".to_string(),
            Token::TooDeep => "deeply nested code".to_string(),
            Token::Destructure => "`(`".to_string(),
            other => format!("`{}`", other.symbol()),
        }
    }

    /// The fixed spelling of a keyword or punctuation token (empty for tokens with a payload).
    pub fn symbol(&self) -> &'static str {
        match self {
            Token::KwFn => "fn",
            Token::KwModel => "model",
            Token::KwParam => "param",
            Token::KwImport => "import",
            Token::KwFor => "for",
            Token::KwIn => "in",
            Token::KwReturn => "return",
            Token::KwElse => "else",
            Token::KwTrue => "true",
            Token::KwFalse => "false",
            Token::KwInt => "int",
            Token::KwFloat => "float",
            Token::KwBool => "bool",
            Token::KwAs => "as",
            Token::LParen => "(",
            Token::RParen => ")",
            Token::LBracket => "[",
            Token::RBracket => "]",
            Token::LBrace => "{",
            Token::RBrace => "}",
            Token::Comma => ",",
            Token::Colon => ":",
            Token::Semi => ";",
            Token::Assign => "=",
            Token::EqEq => "==",
            Token::NotEq => "!=",
            Token::Lt => "<",
            Token::Le => "<=",
            Token::Gt => ">",
            Token::Ge => ">=",
            Token::Plus => "+",
            Token::Minus => "-",
            Token::Star => "*",
            Token::Slash => "/",
            Token::Percent => "%",
            Token::At => "@",
            Token::Caret => "^",
            Token::Bang => "!",
            Token::AndAnd => "&&",
            Token::OrOr => "||",
            Token::Arrow => "->",
            Token::Dot => ".",
            Token::DotDot => "..",
            Token::Ellipsis => "...",
            Token::Ident(_)
            | Token::Int(_)
            | Token::Float(_)
            | Token::Str(_)
            | Token::Error
            | Token::BadNumber
            | Token::TooDeep
            | Token::StmtName(_)
            | Token::Destructure => "",
        }
    }
}

/// Lexes a whole file. Every problem is reported and lexing goes on; the token list never contains two
/// adjacent `Error` tokens.
pub fn lex(file: FileId, text: &str) -> (Vec<(Token, Span)>, Vec<Diagnostic>) {
    let mut tokens: Vec<(Token, Range<usize>)> = Vec::new();
    let mut lexer = Token::lexer(text);
    while let Some(result) = lexer.next() {
        let range = lexer.span();
        match result {
            Ok(token) => push_token(text, &mut tokens, &mut lexer.extras, token, range),
            Err(()) => match tokens.last_mut() {
                Some((Token::Error, last)) if last.end == range.start => last.end = range.end,
                _ => tokens.push((Token::Error, range)),
            },
        }
    }
    let mut diags = Vec::new();
    for (token, range) in &tokens {
        if *token == Token::Error {
            let range = char_aligned(text, range.clone());
            let bad = text.get(range.clone()).unwrap_or("");
            let what = if bad.chars().count() == 1 { "character" } else { "characters" };
            diags.push(
                Diagnostic::new(
                    Code::E0001,
                    Span::new(file, range),
                    format!("invalid {what} `{}`", bad.escape_debug()),
                )
                .label("not part of any token")
                .rule("R1.6"),
            );
        }
    }
    for (range, problem) in std::mem::take(&mut lexer.extras) {
        let span = Span::new(file, range);
        diags.push(match problem {
            LexProblem::IntOutOfRange => Diagnostic::new(Code::E0004, span, "integer literal does not fit in an i64")
                .label("out of range")
                .rule("R1.4"),
            LexProblem::FloatOutOfRange => Diagnostic::new(Code::E0004, span, "float literal is not finite as an f64")
                .label("out of range")
                .rule("R1.4"),
            LexProblem::UnterminatedString => Diagnostic::new(Code::E0003, span, "unterminated string literal")
                .label("the string needs a closing `\"` on this line")
                .rule("R1.5"),
            LexProblem::BadEscape(c) => {
                Diagnostic::new(Code::E0001, span, format!("unknown escape `\\{}` in string literal", c.escape_debug()))
                    .label("only `\\\"`, `\\\\` and `\\n` are escapes")
                    .rule("R1.5")
            }
        });
    }
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    let tokens = tokens.into_iter().map(|(t, r)| (t, Span::new(file, r))).collect();
    (tokens, diags)
}

/// Pushes one token; a float right after `.` that is really two path segments (`layer.0.1`) is split into
/// `Int Dot Int` (and its range problems are those of the two integers). A number whose range problem was
/// just recorded becomes `BadNumber`.
fn push_token(
    text: &str,
    tokens: &mut Vec<(Token, Range<usize>)>,
    problems: &mut Vec<(Range<usize>, LexProblem)>,
    token: Token,
    range: Range<usize>,
) {
    if let (Token::Float(_), Some((Token::Dot, _))) = (&token, tokens.last()) {
        let slice = text.get(range.clone()).unwrap_or("");
        if let Some(dot) = slice.find('.').filter(|_| slice.bytes().all(|b| b.is_ascii_digit() || b == b'.')) {
            problems.retain(|(r, _)| *r != range);
            let (a, b) = (range.start..range.start + dot, range.start + dot + 1..range.end);
            let mut int = |r: &Range<usize>| match text.get(r.clone()).and_then(|s| s.parse::<i64>().ok()) {
                Some(value) => Token::Int(value),
                None => {
                    problems.push((r.clone(), LexProblem::IntOutOfRange));
                    Token::BadNumber
                }
            };
            tokens.push((int(&a), a.clone()));
            tokens.push((Token::Dot, a.end..b.start));
            tokens.push((int(&b), b));
            return;
        }
    }
    let out_of_range = matches!(
        problems.last(),
        Some((r, LexProblem::IntOutOfRange | LexProblem::FloatOutOfRange)) if *r == range
    );
    if out_of_range && matches!(token, Token::Int(_) | Token::Float(_)) {
        tokens.push((Token::BadNumber, range));
        return;
    }
    tokens.push((token, range));
}

/// Widens a byte range to whole characters (logos error spans can end inside a multi-byte character).
fn char_aligned(text: &str, range: Range<usize>) -> Range<usize> {
    let mut start = range.start.min(text.len());
    let mut end = range.end.clamp(start, text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

fn lex_int(lex: &mut logos::Lexer<Token>) -> i64 {
    match lex.slice().parse::<i64>() {
        Ok(value) => value,
        Err(_) => {
            let span = lex.span();
            lex.extras.push((span, LexProblem::IntOutOfRange));
            0
        }
    }
}

fn lex_float(lex: &mut logos::Lexer<Token>) -> f64 {
    match lex.slice().parse::<f64>() {
        Ok(value) if value.is_finite() => value,
        _ => {
            let span = lex.span();
            lex.extras.push((span, LexProblem::FloatOutOfRange));
            0.0
        }
    }
}

/// Called after the opening `"`: consumes the rest of the string by hand so that escapes and a missing
/// closing quote are reported precisely. An unterminated string ends at the end of its line (a trailing `\r`
/// excluded). When it is a param prefix (right after `[`, as in `Block["layer.{i}](x)`), it ends before the
/// first `]` on its line instead, so that the rest of the line is read as the code it almost certainly is.
fn lex_string(lex: &mut logos::Lexer<Token>) -> String {
    let start = lex.span().start;
    let is_prefix = lex.source().get(..start).is_some_and(|before| before.trim_end().ends_with('['));
    let rest = lex.remainder();
    let line = rest.get(..rest.find('\n').unwrap_or(rest.len())).unwrap_or(rest);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut scan = scan_string(start, line);
    if let Some(bracket) = line.find(']').filter(|_| scan.unterminated && is_prefix) {
        scan = scan_string(start, line.get(..bracket).unwrap_or(line));
    }
    lex.bump(scan.consumed);
    lex.extras.extend(scan.problems);
    scan.value
}

struct StringScan {
    value: String,
    /// Bytes after the opening quote that belong to the token (the closing quote included).
    consumed: usize,
    unterminated: bool,
    problems: Vec<(Range<usize>, LexProblem)>,
}

/// Reads string contents from `body` (the text after the opening quote at `start`, up to where an
/// unterminated string must end) up to and including the closing quote.
fn scan_string(start: usize, body: &str) -> StringScan {
    let mut value = String::new();
    let mut chars = body.char_indices();
    let mut problems = Vec::new();
    let (consumed, unterminated) = loop {
        match chars.next() {
            None => break (body.len(), true),
            Some((i, '"')) => break (i + 1, false),
            Some((i, '\\')) => match chars.next() {
                Some((_, '"')) => value.push('"'),
                Some((_, '\\')) => value.push('\\'),
                Some((_, 'n')) => value.push('\n'),
                None => break (body.len(), true),
                Some((j, c)) => {
                    problems.push((start + 1 + i..start + 1 + j + c.len_utf8(), LexProblem::BadEscape(c)));
                    value.push(c);
                }
            },
            Some((_, c)) => value.push(c),
        }
    };
    if unterminated {
        problems.push((start..start + 1 + consumed, LexProblem::UnterminatedString));
    }
    StringScan { value, consumed, unterminated, problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Token> {
        let (tokens, diags) = lex(FileId(0), text);
        assert!(diags.is_empty(), "{diags:?}");
        tokens.into_iter().map(|(t, _)| t).collect()
    }

    fn ident(s: &str) -> Token {
        Token::Ident(s.to_string())
    }

    #[test]
    fn ranges_paths_and_floats() {
        use Token::*;
        assert_eq!(toks("0..6"), vec![Int(0), DotDot, Int(6)]);
        assert_eq!(toks("layer.0.weight"), vec![ident("layer"), Dot, Int(0), Dot, ident("weight")]);
        assert_eq!(toks("layer.0.1"), vec![ident("layer"), Dot, Int(0), Dot, Int(1)]);
        let (tokens, diags) = lex(FileId(0), &format!("a.{}.1", "9".repeat(400)));
        assert_eq!(
            tokens.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(),
            vec![ident("a"), Dot, BadNumber, Dot, Int(1)]
        );
        assert_eq!(diags.iter().map(|d| (d.code, d.span.range())).collect::<Vec<_>>(), vec![(Code::E0004, 2..402)]);
        assert_eq!(toks("1e-12 2.5 1.0e3 7E+2"), vec![Float(1e-12), Float(2.5), Float(1000.0), Float(700.0)]);
        assert_eq!(toks(".5"), vec![Dot, Int(5)]);
        assert_eq!(toks("1.0..n"), vec![Float(1.0), DotDot, ident("n")]);
        assert_eq!(toks("T[..., D]"), vec![ident("T"), LBracket, Ellipsis, Comma, ident("D"), RBracket]);
        assert_eq!(toks("1e"), vec![Int(1), ident("e")]);
    }

    #[test]
    fn keywords_operators_and_comments() {
        use Token::*;
        assert_eq!(
            toks("fn fnx model in int as // c\n # d\n->&&||==!=<=>=!^@%"),
            vec![
                KwFn,
                ident("fnx"),
                KwModel,
                KwIn,
                KwInt,
                KwAs,
                Arrow,
                AndAnd,
                OrOr,
                EqEq,
                NotEq,
                Le,
                Ge,
                Bang,
                Caret,
                At,
                Percent
            ]
        );
        assert_eq!(toks("sum[k]"), vec![ident("sum"), LBracket, ident("k"), RBracket]);
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(toks(r#""a\"b\\c\nd" "{i}""#), vec![Token::Str("a\"b\\c\nd".into()), Token::Str("{i}".into())]);
    }

    #[test]
    fn errors_are_reported_and_lexing_continues() {
        let (tokens, diags) = lex(FileId(0), "x $$ y \u{e9} \"abc\nz 99999999999999999999 1e999 \"\\t\"");
        let codes: Vec<Code> = diags.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec![Code::E0001, Code::E0001, Code::E0003, Code::E0004, Code::E0004, Code::E0001]);
        assert_eq!(diags[0].span.range(), 2..4);
        assert_eq!(diags[1].span.range(), 7..9);
        let kinds: Vec<Token> = tokens.into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            kinds,
            vec![
                ident("x"),
                Token::Error,
                ident("y"),
                Token::Error,
                Token::Str("abc".into()),
                ident("z"),
                Token::BadNumber,
                Token::BadNumber,
                Token::Str("t".into())
            ]
        );
    }

    type Spanned = Vec<(Token, Range<usize>)>;

    fn unterminated(text: &str) -> (Spanned, Vec<Range<usize>>) {
        let (tokens, diags) = lex(FileId(0), text);
        assert!(diags.iter().all(|d| d.code == Code::E0003), "{diags:?}");
        (tokens.into_iter().map(|(t, s)| (t, s.range())).collect(), diags.iter().map(|d| d.span.range()).collect())
    }

    #[test]
    fn unterminated_string_ends_at_end_of_line() {
        let (tokens, diags) = unterminated("import \"std/nn\r\nfn");
        assert_eq!(tokens, vec![(Token::KwImport, 0..6), (Token::Str("std/nn".into()), 7..14), (Token::KwFn, 16..18)]);
        assert_eq!(diags, vec![7..14]);
        // Only a param prefix stops at `]`.
        let (tokens, diags) = unterminated("x = \"a](b)\n");
        assert_eq!(tokens.last(), Some(&(Token::Str("a](b)".into()), 4..10)));
        assert_eq!(diags, vec![4..10]);
    }

    #[test]
    fn unterminated_param_prefix_ends_before_bracket() {
        use Token::*;
        let (tokens, diags) = unterminated("L[ \"enc.{i}](x)\n");
        let kinds: Vec<Token> = tokens.into_iter().map(|(t, _)| t).collect();
        assert_eq!(kinds, vec![ident("L"), LBracket, Str("enc.{i}".into()), RBracket, LParen, ident("x"), RParen]);
        assert_eq!(diags, vec![3..11]);
        // Without a `]` on the line it runs to the end of the line.
        let (tokens, _) = unterminated("L[\"enc(x)\ny");
        assert_eq!(tokens[2], (Str("enc(x)".into()), 2..9));
    }

    #[test]
    fn unterminated_string_at_end_of_input() {
        let (tokens, diags) = lex(FileId(0), "\"abc\\");
        assert_eq!(tokens.len(), 1);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, Code::E0003);
    }
}
