//! Dead-code elimination: nodes no output depends on are dropped. Inputs and params always stay (they are the
//! model's signature, and a weights file is checked against every declared param).

use super::rewrite::Rewriter;
use crate::ir::{Graph, Op};

pub fn run(graph: &Graph) -> Graph {
    let live = live(graph);
    let mut r = Rewriter::new(graph, false);
    for (id, node) in graph.nodes.iter() {
        if live[id.index()] || matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
            r.copy(id);
        }
    }
    r.finish()
}

/// `live[i]`: node `i` contributes to an output.
pub fn live(graph: &Graph) -> Vec<bool> {
    let mut live = vec![false; graph.nodes.len()];
    for output in &graph.outputs {
        live[output.node.index()] = true;
    }
    let nodes: Vec<_> = graph.nodes.iter().collect();
    for (id, node) in nodes.into_iter().rev() {
        if live[id.index()] {
            for operand in node.op.operands() {
                live[operand.index()] = true;
            }
        }
    }
    live
}
