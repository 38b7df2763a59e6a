//! Loading a program: reads the root file, the always-imported prelude and every import (standard library
//! files are embedded in the compiler), parses each file once, and reports missing files and cycles.
//! The front end's entry point, which calls this and then the checker, is `pipeline::check`.

use crate::diag::{Code, Diagnostic};
use crate::span::{FileId, SourceFile, SourceMap, Span};
use crate::syntax::{self, ast};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The standard library, embedded: `import "std/NAME"` loads `std/NAME.tdsl` from here.
pub const STD_FILES: &[(&str, &str)] = &[
    ("prelude", include_str!("../std/prelude.tdsl")),
    ("nn", include_str!("../std/nn.tdsl")),
    ("optim", include_str!("../std/optim.tdsl")),
];

/// Every file of one program, parsed, in load order (the root file first, then the prelude, then imports).
#[derive(Debug, Default)]
pub struct Program {
    pub sources: SourceMap,
    pub files: Vec<LoadedFile>,
}

#[derive(Debug)]
pub struct LoadedFile {
    pub id: FileId,
    pub ast: ast::SourceFileAst,
    /// The alias this file's functions are imported under (`import "x" as m` gives `m.f`).
    pub alias: Option<String>,
    /// True for the file the user named (its models become graphs).
    pub is_root: bool,
}

/// Where a program's root text comes from.
pub enum Root<'a> {
    Path(&'a Path),
    Text {
        name: &'a str,
        text: &'a str,
    },
    /// A standard-library module as the root (e.g. `prelude`, `nn`), for checking the library itself.
    Std(&'a str),
}

/// Loads and parses the root file and everything it imports. Never fails: problems are diagnostics.
pub fn load(root: Root<'_>) -> (Program, Vec<Diagnostic>) {
    load_with(root, &[])
}

/// `load`, also importing the standard-library modules `std` (without an alias), as a training step
/// imports `optim`.
pub fn load_with(root: Root<'_>, std: &[&str]) -> (Program, Vec<Diagnostic>) {
    let mut loader = Loader::default();
    let root_key = match root {
        Root::Path(path) => {
            let key = ImportKey::File(canonical(path));
            match read_source(path) {
                Ok(text) => {
                    let file = SourceFile { name: path.display().to_string(), path: Some(path.to_path_buf()), text };
                    loader.add_file(key.clone(), file, None, true);
                }
                Err(problem) => {
                    let file = SourceFile { name: path.display().to_string(), path: None, text: String::new() };
                    let id = loader.program.sources.add(file);
                    loader.diags.push(problem.diagnostic(Span::new(id, 0..0), path, false));
                    return (loader.program, loader.diags);
                }
            }
            key
        }
        Root::Text { name, text } => {
            let key = ImportKey::File(PathBuf::from(name));
            let file = SourceFile { name: name.to_string(), path: None, text: text.to_string() };
            loader.add_file(key.clone(), file, None, true);
            key
        }
        Root::Std(name) => {
            let Some(index) = loader.import_std(name, None, None) else {
                let file = SourceFile { name: format!("<std>/{name}.tdsl"), path: None, text: String::new() };
                let id = loader.program.sources.add(file);
                loader.diags.push(Diagnostic::new(
                    Code::E0104,
                    Span::new(id, 0..0),
                    format!("no standard library module `std/{name}`"),
                ));
                return (loader.program, loader.diags);
            };
            loader.program.files[index].is_root = true;
            ImportKey::Std(name.to_string())
        }
    };
    // The prelude is imported by every program (R4.1).
    loader.import_std("prelude", None, None);
    for module in std {
        loader.import_std(module, None, None);
    }
    loader.follow_imports(0, vec![root_key]);
    (loader.program, loader.diags)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ImportKey {
    File(PathBuf),
    Std(String),
}

#[derive(Default)]
struct Loader {
    program: Program,
    diags: Vec<Diagnostic>,
    loaded: HashMap<ImportKey, usize>,
}

impl Loader {
    fn add_file(&mut self, key: ImportKey, file: SourceFile, alias: Option<String>, is_root: bool) -> usize {
        let text = file.text.clone();
        let id = self.program.sources.add(file);
        let (ast, diags) = syntax::parse(id, &text);
        self.diags.extend(diags);
        self.program.files.push(LoadedFile { id, ast, alias, is_root });
        let index = self.program.files.len() - 1;
        self.loaded.insert(key, index);
        index
    }

    fn import_std(&mut self, name: &str, alias: Option<String>, span: Option<Span>) -> Option<usize> {
        let key = ImportKey::Std(name.to_string());
        if let Some(&index) = self.loaded.get(&key) {
            return Some(index);
        }
        let Some((_, text)) = STD_FILES.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = STD_FILES.iter().map(|(n, _)| *n).collect();
            if let Some(span) = span {
                self.diags.push(
                    Diagnostic::new(Code::E0104, span, format!("no standard library module `std/{name}`"))
                        .note(format!("the standard library has: {}", names.join(", ")))
                        .rule("R4.1"),
                );
            }
            return None;
        };
        let file = SourceFile { name: format!("<std>/{name}.tdsl"), path: None, text: text.to_string() };
        let index = self.add_file(key.clone(), file, alias, false);
        self.follow_imports(index, vec![key]);
        Some(index)
    }

    /// The display name of a loaded file.
    fn key_name(&self, key: &ImportKey) -> String {
        match self.loaded.get(key) {
            Some(&index) => self.program.sources.get(self.program.files[index].id).name.clone(),
            None => match key {
                ImportKey::Std(name) => format!("<std>/{name}.tdsl"),
                ImportKey::File(path) => path.display().to_string(),
            },
        }
    }

    /// Loads the imports of file `index`; `stack` is the chain of files being loaded (for cycles).
    fn follow_imports(&mut self, index: usize, stack: Vec<ImportKey>) {
        let imports: Vec<ast::Import> = self.program.files[index]
            .ast
            .items
            .iter()
            .filter_map(|item| match item {
                ast::Item::Import(import) => Some(import.clone()),
                _ => None,
            })
            .collect();
        let base = self.program.sources.get(self.program.files[index].id).path.clone();
        let base_name = self.program.sources.get(self.program.files[index].id).name.clone();
        for import in imports {
            let alias = import.alias.as_ref().map(|a| a.name.clone());
            let target = &import.path.value;
            let key = match target.strip_prefix("std/") {
                Some(name) => ImportKey::Std(name.trim_end_matches(".tdsl").to_string()),
                None => {
                    let mut path = match &base {
                        Some(base) => base.parent().unwrap_or(Path::new(".")).join(target),
                        None => PathBuf::from(target),
                    };
                    if path.extension().is_none() {
                        path.set_extension("tdsl");
                    }
                    ImportKey::File(canonical(&path))
                }
            };
            if let Some(pos) = stack.iter().position(|k| *k == key) {
                let mut chain: Vec<String> = stack[pos..].iter().map(|k| self.key_name(k)).collect();
                chain.push(self.key_name(&key));
                self.diags.push(
                    Diagnostic::new(Code::E0105, import.span, format!("import cycle: {}", chain.join(" -> ")))
                        .label("this import closes the cycle")
                        .note("imports must not form a cycle; move the shared functions into a third file")
                        .rule("R4.1"),
                );
                continue;
            }
            if let Some(&loaded) = self.loaded.get(&key) {
                if alias.is_some() && self.program.files[loaded].alias != alias {
                    self.program.files[loaded].alias = alias;
                }
                continue;
            }
            let mut next_stack = stack.clone();
            next_stack.push(key.clone());
            match &key {
                ImportKey::Std(name) => {
                    let name = name.clone();
                    self.import_std(&name, alias, Some(import.path.span));
                }
                ImportKey::File(path) => {
                    // Shown relative to the importing file's name, as the user wrote it.
                    let mut shown = Path::new(&base_name).parent().unwrap_or(Path::new("")).join(target);
                    if shown.extension().is_none() {
                        shown.set_extension("tdsl");
                    }
                    match read_source(path) {
                        Ok(text) => {
                            let file = SourceFile { name: shown.display().to_string(), path: Some(path.clone()), text };
                            let new_index = self.add_file(key.clone(), file, alias, false);
                            self.follow_imports(new_index, next_stack);
                        }
                        Err(problem) => self.diags.push(problem.diagnostic(import.path.span, &shown, true)),
                    }
                }
            }
        }
    }
}

/// Why a source file (the root or an import) could not be loaded.
#[derive(Debug)]
enum ReadProblem {
    /// Missing, or unreadable for another reason the system gives.
    Unreadable(std::io::Error),
    /// The path is a directory.
    Directory,
    /// Not UTF-8 text: an invalid UTF-8 sequence or a NUL byte (binary data) at this byte offset.
    NotText { offset: usize, byte: u8 },
}

/// The text of the source file at `path`, which must be a UTF-8 text file without NUL bytes (R1.7).
fn read_source(path: &Path) -> Result<String, ReadProblem> {
    if path.is_dir() {
        return Err(ReadProblem::Directory);
    }
    let bytes = std::fs::read(path).map_err(ReadProblem::Unreadable)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        ReadProblem::NotText { offset, byte: e.as_bytes()[offset] }
    })?;
    match text.bytes().position(|b| b == 0) {
        Some(offset) => Err(ReadProblem::NotText { offset, byte: 0 }),
        None => Ok(text),
    }
}

impl ReadProblem {
    /// The diagnostic at `span`: the root file's (E0111, E0112, E0113) or, when `imported`, the import
    /// statement's (E0104, E0112, E0113); `path` as the user would write it.
    fn diagnostic(&self, span: Span, path: &Path, imported: bool) -> Diagnostic {
        let (what, rule) = if imported { ("imported file", "R4.1") } else { ("file", "R1.7") };
        let shown = path.display();
        match self {
            ReadProblem::Unreadable(err) if imported => {
                Diagnostic::new(Code::E0104, span, format!("cannot read imported file `{shown}`: {err}")).rule(rule)
            }
            ReadProblem::Unreadable(err) => {
                let diag = Diagnostic::new(Code::E0111, span, format!("cannot read `{shown}`: {err}")).rule(rule);
                if err.kind() == std::io::ErrorKind::NotFound {
                    diag.note("the path is taken relative to the current directory")
                } else {
                    diag
                }
            }
            ReadProblem::Directory => {
                let diag =
                    Diagnostic::new(Code::E0113, span, format!("{what} `{shown}` is a directory, not a source file"))
                        .note("give the path of a .tdsl file")
                        .rule("R1.7");
                if imported { diag.label("imported here") } else { diag }
            }
            ReadProblem::NotText { offset, byte } => {
                let found = if *byte == 0 {
                    format!("a NUL byte at byte {offset}")
                } else {
                    format!("the byte 0x{byte:02x} at byte {offset}, which is not UTF-8")
                };
                let diag =
                    Diagnostic::new(Code::E0112, span, format!("{what} `{shown}` is not a text file: it has {found}"))
                        .note("tdsl source files are UTF-8 text; is this a binary file (a bundle, .npy or weights)?")
                        .rule("R1.7");
                if imported { diag.label("imported here") } else { diag }
            }
        }
    }
}

/// The standard-library module that defines function `name`, if any (for "add an import" hints): each
/// module is parsed (the standard library parses clean) and its function items are compared by name.
pub fn std_module_defining(name: &str) -> Option<&'static str> {
    STD_FILES.iter().enumerate().find_map(|(i, (module, text))| {
        let (file, _) = syntax::parse(FileId(i as u32), text);
        let defines = file.items.iter().any(|item| matches!(item, ast::Item::Fn(f) if f.name.name == name));
        defines.then_some(*module)
    })
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
