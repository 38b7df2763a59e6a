//! tdsl compiler: parses and checks `.tdsl` programs, lowers them to a typed tensor IR, and runs that IR on
//! the CPU reference interpreter (the executable definition of every op).
//!
//! The pipeline, in order: `driver::load` (files and imports) -> `syntax::parse` (AST + diagnostics) ->
//! `check::elaborate` (names, dtypes, shapes, bounds; functions inlined; typed `ir::Graph`) ->
//! `ir::verify` -> `interp::run`.

pub mod arena;
pub mod autodiff;
pub mod bench;
pub mod bundle;
pub mod check;
pub mod cli;
pub mod codegen;
pub mod diag;
pub use tdsl_runtime::dim;
pub mod driver;
pub mod explain;
pub mod interp;
pub mod ir;
pub mod opt;
pub mod pipeline;
pub mod random;
pub mod render;
pub mod span;
pub mod syntax;
