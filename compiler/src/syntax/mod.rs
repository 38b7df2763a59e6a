//! The front end's syntax layer: tokens (`lexer`), the AST (`ast`), the recovering parser (`parser`) and the
//! canonical printer (`print`). Nothing here panics on any input.

pub mod ast;
pub mod lexer;
pub mod parser;
pub mod print;

pub use parser::parse;
