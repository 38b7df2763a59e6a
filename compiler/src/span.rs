//! Source locations: files in a `SourceMap` and byte-offset `Span`s into them.

use std::path::PathBuf;

/// Identifies one source file in a `SourceMap`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A byte range `start..end` in one file. Spans are provenance only: AST and IR equality ignore them where
/// nodes are compared (see `syntax::print::erase_spans`, `Arena`'s `PartialEq`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, range: std::ops::Range<usize>) -> Span {
        let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Span { file, start: clamp(range.start), end: clamp(range.end) }
    }
    /// The smallest span covering both (same file assumed; `self`'s file wins).
    pub fn to(self, other: Span) -> Span {
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One loaded source file.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics (a path as given, or `<std>/nn.tdsl`).
    pub name: String,
    /// Where it was read from; `None` for embedded standard-library files.
    pub path: Option<PathBuf>,
    pub text: String,
}

/// All source files of one compilation, addressed by `FileId`.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        FileId((self.files.len() - 1) as u32)
    }
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }
    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }
    /// Where `span` starts: its file's name, the line and the column (in characters), both from 1; `None`
    /// when the span names no file of this map or lies past its end.
    pub fn line_column(&self, span: Span) -> Option<(&str, u32, u32)> {
        let file = self.files.get(span.file.0 as usize)?;
        let before = file.text.get(..span.start as usize)?;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        Some((&file.name, u32::try_from(line).ok()?, u32::try_from(column).ok()?))
    }
}
