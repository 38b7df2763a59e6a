//! The one public diagnostic type: a stable code, a message, a primary span with labels, notes and the spec
//! rule it enforces. Every front-end and checker problem becomes a `Diagnostic`; `render` prints them.
//! Codes starting with `E` are errors; those starting with `W` are warnings, which never fail a check.

use crate::span::Span;

macro_rules! codes {
    ($($code:ident => $summary:literal,)*) => {
        /// Stable diagnostic codes. Codes are never reused or renumbered; each has a fixture in
        /// `tests/fixtures/err/` and is listed in `spec/language.md`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($code,)* }
        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$code,)*];
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$code => stringify!($code),)* }
            }
            /// One line saying what the code means in general.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$code => $summary,)* }
            }
        }
    };
}

codes! {
    E0001 => "invalid character",
    E0002 => "syntax error",
    E0003 => "unterminated string",
    E0004 => "numeric literal out of range",
    E0005 => "nesting too deep",
    E0101 => "unknown name",
    E0102 => "unknown function",
    E0103 => "duplicate definition",
    E0104 => "import not found",
    E0105 => "import cycle",
    E0106 => "wrong arguments in call",
    E0107 => "recursive call",
    E0108 => "missing return or output",
    E0109 => "unknown dtype",
    E0110 => "program too large to unroll",
    E0111 => "cannot read the file",
    E0112 => "file is not UTF-8 text",
    E0113 => "file is a directory",
    E0114 => "several values where one is expected",
    E0115 => "wrong number of names in a destructuring",
    E0116 => "wrong number of values returned",
    E0201 => "dtype mismatch",
    E0202 => "operation not defined for dtype",
    E0203 => "wrong kind of value",
    E0301 => "shapes do not broadcast",
    E0302 => "matmul dimension mismatch",
    E0303 => "rank mismatch",
    E0304 => "shape does not match declared type",
    E0305 => "axis out of range",
    E0306 => "reshape changes element count",
    E0307 => "dimension bound inconsistently",
    E0308 => "cannot infer index extent",
    E0309 => "conflicting index extents",
    E0310 => "dimension not determined",
    E0311 => "invalid dimension",
    E0312 => "slice out of range",
    E0401 => "index may be out of bounds",
    E0402 => "index is not affine",
    E0403 => "index variable reused",
    E0501 => "gradient of a non-scalar value",
    E0502 => "gradient of a non-float value",
    E0503 => "gradient with respect to a non-float value",
    E0504 => "invalid param initialiser",
    E0505 => "model cannot be trained",
    W0001 => "operator after an `else` default",
    W0002 => "param shared by calls without a prefix",
}

impl Code {
    /// Warnings (`W` codes) are reported like errors but do not fail a check or stop compilation.
    pub fn is_warning(self) -> bool {
        self.as_str().starts_with('W')
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem in the user's program, located in its source.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    /// The primary location; its label is `primary_label` when given.
    pub span: Span,
    pub primary_label: Option<String>,
    /// Secondary locations (e.g. "declared here", "called from here").
    pub labels: Vec<(Span, String)>,
    pub notes: Vec<String>,
    /// The spec rule this enforces, e.g. `R6.1`.
    pub rule: Option<&'static str>,
}

impl Diagnostic {
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            span,
            primary_label: None,
            labels: Vec::new(),
            notes: Vec::new(),
            rule: None,
        }
    }
    pub fn rule(mut self, rule: &'static str) -> Self {
        self.rule = Some(rule);
        self
    }
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.primary_label = Some(label.into());
        self
    }
    pub fn with_label(mut self, span: Span, label: impl Into<String>) -> Self {
        self.labels.push((span, label.into()));
        self
    }
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}
