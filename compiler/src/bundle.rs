//! Ahead-of-time bundles from the compiler's side: `build` checks a `.tdsl` file, compiles every model and
//! writes the runtime's `.tdslb` format (`tdsl_runtime::bundle`, spec/bundle.md); `build_script` does the
//! same from a Cargo build script. The format itself (reading, checking, writing) lives in the runtime,
//! so there is one definition of it; the compiler only fills a `Bundle` (each model's `Program`, its buffer
//! plan and its kernels' device requirements) and asks for its bytes. Deterministic: the same source and
//! compiler give the same bytes.

use std::path::{Path, PathBuf};

use tdsl_runtime::{Bundle, BundledModel};

use crate::driver::Root;
use crate::pipeline;
use crate::{codegen, render};

/// Who wrote a bundle (`Bundle::producer`).
pub const PRODUCER: &str = concat!("tdslc ", env!("CARGO_PKG_VERSION"));

/// Why a bundle could not be built: the rendered diagnostics of the source, or a compile error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{rendered}{file}: {count} error(s)")]
    Diagnostics { file: String, rendered: String, count: usize },
    #[error("{file}: no model in this file (a bundle holds models)")]
    NoModel { file: String },
    #[error("model `{model}`: {message}")]
    Compile { model: String, message: String },
    #[error("cannot write `{}`: {message}", .path.display())]
    Write { path: PathBuf, message: String },
    #[error("{0} is not set; build_script must run inside a Cargo build script")]
    NotABuildScript(&'static str),
}

/// Called before each model is compiled with (model index, model count, model name).
pub type Progress<'a> = &'a dyn Fn(usize, usize, &str);

/// Called once with the rendered warnings of a source that has warnings but no errors (W codes, which do
/// not stop a build).
pub type Warnings<'a> = &'a dyn Fn(&str);

/// What `build` may do besides compiling.
#[derive(Clone, Copy, Default)]
pub struct BuildOptions<'a> {
    /// Fusion off (one kernel per IR node), as `--no-fuse`.
    pub no_fuse: bool,
    /// The device profile the kernels are scheduled for (`codegen::Target`).
    pub target: codegen::Target,
    /// Tile shapes measured by `tdslc tune` (`codegen::tuning`); `None`: the profile's own.
    pub tuning: Option<&'a codegen::tuning::Tuning>,
    /// Colour in rendered diagnostics.
    pub color: bool,
    /// Called before each model is compiled.
    pub progress: Option<Progress<'a>>,
    /// Given the rendered warnings, if any.
    pub warnings: Option<Warnings<'a>>,
    /// Also the training step of one model (`pipeline::check_training`), as the model `<name>.train`, which
    /// the runtime's `Trainer` runs.
    pub train: Option<&'a pipeline::TrainSpec>,
}

/// The bundle of every model in `file`, and the source files it was built from (for rerun-if-changed).
pub fn build(file: &Path, options: &BuildOptions) -> Result<(Bundle, Vec<PathBuf>), BuildError> {
    let checked = pipeline::check(Root::Path(file));
    let name = file.display().to_string();
    if checked.errors() > 0 {
        return Err(BuildError::Diagnostics {
            file: name,
            rendered: render::render(&checked.diagnostics, &checked.program.sources, options.color),
            count: checked.errors(),
        });
    }
    if let Some(warnings) = options.warnings
        && !checked.diagnostics.is_empty()
    {
        warnings(&render::render(&checked.diagnostics, &checked.program.sources, options.color));
    }
    if checked.graphs.is_empty() {
        return Err(BuildError::NoModel { file: name });
    }
    let mut graphs = checked.graphs.clone();
    if let Some(spec) = options.train {
        if !graphs.iter().any(|g| g.name == spec.model) {
            let names: Vec<&str> = graphs.iter().map(|g| g.name.as_str()).collect();
            return Err(BuildError::Compile {
                model: spec.model.clone(),
                message: format!("there is no such model to train in {name} (it has: {})", names.join(", ")),
            });
        }
        let step = pipeline::check_training(Root::Path(file), spec);
        if step.errors() > 0 {
            return Err(BuildError::Diagnostics {
                file: name,
                rendered: render::render(&step.diagnostics, &step.program.sources, options.color),
                count: step.errors(),
            });
        }
        let mut graph = step.graphs.into_iter().find(|g| g.name == spec.model).ok_or_else(|| BuildError::Compile {
            model: spec.model.clone(),
            message: "no training step was built".into(),
        })?;
        graph.name = format!("{}.train", spec.model);
        graphs.push(graph);
    }
    let mut models = Vec::with_capacity(graphs.len());
    for (i, graph) in graphs.iter().enumerate() {
        if let Some(progress) = options.progress {
            progress(i, graphs.len(), &graph.name);
        }
        let compile = pipeline::Options {
            fuse: !options.no_fuse,
            target: options.target,
            tuning: options.tuning.cloned().unwrap_or_default(),
            ..pipeline::Options::default()
        };
        let mut compiled = pipeline::compile_graph(graph, &compile)
            .map_err(|e| BuildError::Compile { model: graph.name.clone(), message: e.to_string() })?;
        compiled.locate(&checked.program.sources);
        models.push(BundledModel::new(compiled.program));
    }
    let sources = checked.program.sources.files().filter_map(|(_, f)| f.path.clone()).collect();
    Ok((Bundle { producer: PRODUCER.to_string(), models }, sources))
}

/// For `build.rs`: compiles `source` (relative to the crate's directory, `CARGO_MANIFEST_DIR`) into
/// `$OUT_DIR/<file stem>.tdslb`, tells Cargo to rerun when the file or anything it imports changes, and
/// returns the bundle's path. Embed it with
/// `include_bytes!(concat!(env!("OUT_DIR"), "/<file stem>.tdslb"))` and load it with
/// `tdsl_runtime::Bundle::from_bytes`.
///
/// ```no_run
/// // in build.rs's `main`: a build script reports failure by failing
/// if let Err(e) = tdsl_compiler::bundle::build_script("model.tdsl") {
///     panic!("{e}");
/// }
/// ```
pub fn build_script(source: impl AsRef<Path>) -> Result<PathBuf, BuildError> {
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").ok_or(BuildError::NotABuildScript("CARGO_MANIFEST_DIR"))?;
    let out_dir = std::env::var_os("OUT_DIR").ok_or(BuildError::NotABuildScript("OUT_DIR"))?;
    let file = Path::new(&manifest_dir).join(source.as_ref());
    println!("cargo:rerun-if-changed={}", file.display());
    // Each line of a warning becomes a `cargo:warning`, which Cargo shows.
    let warn = |text: &str| text.lines().for_each(|line| println!("cargo:warning={line}"));
    let built = build(&file, &BuildOptions { warnings: Some(&warn), ..BuildOptions::default() });
    let (bundle, sources) = built?;
    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
    }
    let stem = file.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let path = Path::new(&out_dir).join(format!("{stem}.tdslb"));
    std::fs::write(&path, bundle.to_bytes())
        .map_err(|e| BuildError::Write { path: path.clone(), message: e.to_string() })?;
    Ok(path)
}
