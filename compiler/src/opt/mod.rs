//! The optimizer: IR-to-IR passes run from one ordered list (`PASSES`), each in its own file, with the
//! verifier after every pass in debug and test builds. Passes keep the graph's signature (inputs, params,
//! outputs) and its meaning as the interpreter defines it, bit for bit.
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

use crate::ir::{Graph, verify};

/// One optimization pass.
pub struct Pass {
    pub name: &'static str,
    pub run: fn(&Graph) -> Graph,
}

/// Every pass, in the order `optimize` runs them.
pub const PASSES: &[Pass] = &[
    Pass { name: "simplify", run: simplify::run },
    Pass { name: "cse", run: cse::run },
    Pass { name: "dce", run: dce::run },
];

/// Runs every pass of `PASSES` in order. In debug builds the verifier runs after each pass and a failure is
/// a panic naming the pass (a compiler bug, never a user error); tests use `optimize_verified`.
pub fn optimize(graph: &Graph) -> Graph {
    let mut current = graph.clone();
    for pass in PASSES {
        current = (pass.run)(&current);
        if cfg!(debug_assertions)
            && let Err(errors) = verify(&current)
        {
            panic!("the `{}` pass produced an IR graph that does not verify: {errors:?}", pass.name);
        }
    }
    current
}

/// `optimize` with the verifier after every pass in any build: the graph after each pass, or the first pass
/// whose output does not verify and why.
pub fn optimize_verified(graph: &Graph) -> Result<Vec<(&'static str, Graph)>, String> {
    let mut stages = Vec::new();
    let mut current = graph.clone();
    for pass in PASSES {
        current = (pass.run)(&current);
        verify(&current).map_err(|errors| format!("pass `{}`: {errors:?}", pass.name))?;
        stages.push((pass.name, current.clone()));
    }
    Ok(stages)
}
