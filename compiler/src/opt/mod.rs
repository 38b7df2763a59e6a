//! The optimizer: IR-to-IR passes run from one ordered list (`PASSES`), each in its own file;
//! `pipeline::optimize` runs them, with the verifier after each when verification is on. Passes keep the
//! graph's signature (inputs, params, outputs) and its meaning as the interpreter defines it, bit for bit.
//!
//! Order: `simplify` (algebraic identities that are exact in IEEE arithmetic, constant folding through the
//! interpreter, permute/reshape/broadcast chains), then `cse` (structurally equal nodes merged), then `dce`
//! (nodes no output needs removed). Fusion is not an IR rewrite: it is the grouping analysis in
//! `codegen/fuse.rs`, run on the optimized graph.

mod cse;
mod dce;
mod rewrite;
mod simplify;

#[cfg(test)]
mod tests;

use crate::ir::Graph;

/// One optimization pass.
pub struct Pass {
    pub name: &'static str,
    pub run: fn(&Graph) -> Graph,
}

/// Every pass, in the order `pipeline::optimize` runs them.
pub const PASSES: &[Pass] = &[
    Pass { name: "simplify", run: simplify::run },
    Pass { name: "cse", run: cse::run },
    Pass { name: "dce", run: dce::run },
];
