//! Common-subexpression elimination: structurally equal nodes (same op on the same operands, same type) become
//! one. The graph is in dependency order, so one pass of hash-consing merges whole equal subtrees.

use super::rewrite::Rewriter;
use crate::ir::Graph;

pub fn run(graph: &Graph) -> Graph {
    let mut r = Rewriter::new(graph, true);
    for (id, _) in graph.nodes.iter() {
        r.copy(id);
    }
    r.finish()
}
