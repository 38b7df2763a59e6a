//! Renders `Diagnostic`s as text with ariadne: a header `error[E0101]: message` (`warning[W0001]` for warnings), the source lines with the
//! primary and secondary labels, the notes, and the spec rule. Spans are byte offsets (ariadne is told so);
//! spans past the end of a file or inside a character are clamped, and a span in a file the `SourceMap`
//! does not know is rendered without source. Output is deterministic, and colour-free unless asked for.

use std::fmt;
use std::ops::Range;

use ariadne::{Cache, Color, Config, IndexType, Label, Report, ReportKind, Source};

use crate::diag::Diagnostic;
use crate::span::{FileId, SourceMap, Span};

/// Renders all diagnostics, in order, into one string.
pub fn render(diags: &[Diagnostic], sources: &SourceMap, color: bool) -> String {
    let mut cache = Sources::new(sources);
    let mut out = String::new();
    for diag in diags {
        out.push_str(&render_one(diag, &mut cache, color));
    }
    out
}

fn render_one(diag: &Diagnostic, cache: &mut Sources<'_>, color: bool) -> String {
    let (kind, colour) = if diag.code.is_warning() {
        (format!("warning[{}]", diag.code), Color::Yellow)
    } else {
        (format!("error[{}]", diag.code), Color::Red)
    };
    let mut notes = diag.notes.clone();
    if let Some(rule) = diag.rule {
        notes.push(format!("rule {rule} (spec/language.md)"));
    }
    let Some(primary) = cache.clamp(diag.span) else {
        return render_without_source(&kind, diag, &notes);
    };
    let config = Config::default().with_index_type(IndexType::Byte).with_color(color);
    let mut report = Report::build(ReportKind::Custom(&kind, colour), primary.clone())
        .with_config(config)
        .with_message(&diag.message);
    // ariadne starts a new source section whenever a label is on an earlier line than the one before it, so
    // labels go in by position.
    // The primary span always gets a label (ariadne draws no marker without one): the given label, or the
    // code's one-line summary.
    let primary_label = diag.primary_label.clone().unwrap_or_else(|| diag.code.summary().to_string());
    let mut labels = vec![(primary, Some(primary_label), colour)];
    for (span, message) in &diag.labels {
        if let Some(span) = cache.clamp(*span) {
            labels.push((span, Some(message.clone()), Color::Blue));
        }
    }
    labels.sort_by_key(|((file, range), _, _)| (*file, range.start, range.end));
    for (span, message, color) in labels {
        let mut label = Label::new(span).with_color(color);
        if let Some(message) = message {
            label = label.with_message(message);
        }
        report = report.with_label(label);
    }
    for note in &notes {
        report = report.with_note(note);
    }
    let mut bytes = Vec::new();
    match report.finish().write(&mut *cache, &mut bytes) {
        Ok(()) if color => String::from_utf8_lossy(&bytes).into_owned(),
        // ariadne colours a custom report kind even when colour is off.
        Ok(()) => strip_ansi(&String::from_utf8_lossy(&bytes)),
        Err(_) => render_without_source(&kind, diag, &notes),
    }
}

/// Removes `ESC [ ... letter` sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn render_without_source(kind: &str, diag: &Diagnostic, notes: &[String]) -> String {
    let mut out = format!("{kind}: {}\n", diag.message);
    for note in notes {
        out.push_str(&format!("  = note: {note}\n"));
    }
    out
}

/// The files of a `SourceMap` as ariadne sources, addressed by `FileId`.
struct Sources<'a> {
    files: Vec<(String, Source<&'a str>)>,
}

impl<'a> Sources<'a> {
    fn new(map: &'a SourceMap) -> Self {
        Sources { files: map.files().map(|(_, file)| (file.name.clone(), Source::from(file.text.as_str()))).collect() }
    }

    /// The span as an ariadne span inside its file's text, on character boundaries; `None` for an unknown file.
    fn clamp(&self, span: Span) -> Option<(FileId, Range<usize>)> {
        let (_, source) = self.files.get(span.file.0 as usize)?;
        let text: &str = source.text();
        let floor = |mut i: usize| {
            i = i.min(text.len());
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        let start = floor(span.start as usize);
        let end = floor((span.end as usize).max(start));
        Some((span.file, start..end))
    }
}

impl<'a> Cache<FileId> for Sources<'a> {
    type Storage = &'a str;

    fn fetch(&mut self, id: &FileId) -> Result<&Source<&'a str>, impl fmt::Debug> {
        self.files.get(id.0 as usize).map(|(_, source)| source).ok_or("unknown file")
    }

    fn display<'b>(&self, id: &'b FileId) -> Option<impl fmt::Display + 'b> {
        self.files.get(id.0 as usize).map(|(name, _)| name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Code;
    use crate::span::SourceFile;

    fn map(text: &str) -> SourceMap {
        let mut map = SourceMap::new();
        map.add(SourceFile { name: "main.tdsl".to_string(), path: None, text: text.to_string() });
        map
    }

    #[test]
    fn renders_header_labels_notes_and_rule() {
        let text = "model m(x: f32[B]) -> (y: f32[B]) {\n    y = x + z\n}\n";
        let diag = Diagnostic::new(Code::E0101, Span::new(FileId(0), 48..49), "unknown name `z`")
            .label("not assigned before this use")
            .with_label(Span::new(FileId(0), 6..7), "in this model")
            .note("assign `z` first")
            .rule("R4.4");
        let out = render(&[diag], &map(text), false);
        let expected = "\
error[E0101]: unknown name `z`
   ╭─[ main.tdsl:2:13 ]
   │
 1 │ model m(x: f32[B]) -> (y: f32[B]) {
   │       ┬  
   │       ╰── in this model
 2 │     y = x + z
   │             ┬  
   │             ╰── not assigned before this use
   │ 
   │ Note 1: assign `z` first
   │ 
   │ Note 2: rule R4.4 (spec/language.md)
───╯
";
        assert_eq!(out, expected, "\n{out}");
        assert!(!out.contains('\u{1b}'));
        assert!(
            render(&[Diagnostic::new(Code::E0101, Span::new(FileId(0), 48..49), "x")], &map(text), true)
                .contains('\u{1b}')
        );
    }

    #[test]
    fn out_of_range_spans_are_clamped() {
        let texts = ["", "x", "x\n", "é = 1\n", "a\r\nb\tc"];
        let spans =
            [0..0, 0..1, 1..2, 2..3, 5..900, 900..901, Range { start: 3, end: 1 }, 1..1, usize::MAX - 1..usize::MAX];
        for text in texts {
            for span in spans.clone() {
                let diag = Diagnostic::new(Code::E0002, Span::new(FileId(0), span.clone()), "m")
                    .label("here")
                    .with_label(Span::new(FileId(0), span.clone()), "and here");
                let out = render(&[diag], &map(text), false);
                assert!(out.starts_with("error[E0002]: m\n"), "{text:?} {span:?}: {out}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn rendering_never_panics(
            chars in proptest::collection::vec(proptest::sample::select(vec!['a', ' ', '\n', '\r', '\t', 'é', '😀', '}']), 0..30),
            spans in proptest::collection::vec((0usize..40, 0usize..40), 1..4),
        ) {
            let text: String = chars.into_iter().collect();
            let mut diag = Diagnostic::new(Code::E0002, Span::new(FileId(0), spans[0].0..spans[0].1), "m").label("here");
            for (a, b) in &spans[1..] {
                diag = diag.with_label(Span::new(FileId(0), *a..*b), "there");
            }
            let out = render(&[diag], &map(&text), false);
            proptest::prop_assert!(out.starts_with("error[E0002]: m\n"));
        }
    }

    #[test]
    fn unknown_files_render_without_source() {
        let diag = Diagnostic::new(Code::E0104, Span::new(FileId(7), 0..3), "import not found").rule("R4.1");
        let out = render(&[diag], &map("x"), false);
        assert_eq!(out, "error[E0104]: import not found\n  = note: rule R4.1 (spec/language.md)\n");
    }

    #[test]
    fn parser_diagnostics_render_deterministically() {
        let text = "fn f(x: f32[N]) -> f32[N] {\n    b = f(x, +, 2)\n    return (x\n}\n";
        let (_, diags) = crate::syntax::parse(FileId(0), text);
        let first = render(&diags, &map(text), false);
        assert_eq!(first, render(&diags, &map(text), false));
        assert!(first.contains("error[E0002]: expected argument or `)`, found `+`"), "{first}");
    }
}
