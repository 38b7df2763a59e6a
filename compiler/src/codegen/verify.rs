//! The grouping verifier: checks that a fusion decision (`fuse::Grouping`) can be lowered to kernels in its
//! order. It never mutates and never decides anything; the pipeline runs it after fusion when verification
//! is on (`pipeline::Options::verify`), and tests run it on every grouping they make.
//!
//! Rules: every node a group names exists; a node is stored by at most one group (cheap nodes may be
//! recomputed inline by several); inputs and params are never computed by a group; groups come in
//! dependency order (every operand a group reads from outside itself is an input, a param, or stored by an
//! earlier group); every output is stored by a group or is an input or param; every unfused edge joins two
//! nodes that exist.

use std::collections::HashMap;
use std::fmt;

use super::fuse::Grouping;
use crate::ir::{Graph, NodeId, Op};

/// One broken rule of a grouping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupingError {
    /// The group (kernel index) at fault, if one is.
    pub group: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for GroupingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.group {
            Some(g) => write!(f, "group {g}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Checks `grouping` against `graph` (see the module comment); every problem is listed.
pub fn verify_grouping(graph: &Graph, grouping: &Grouping) -> Result<(), Vec<GroupingError>> {
    let mut errors = Vec::new();
    let mut fail = |group: Option<usize>, message: String| errors.push(GroupingError { group, message });
    let exists = |id: NodeId| id.index() < graph.nodes.len();
    let leaf = |id: NodeId| matches!(graph.node(id).op, Op::Input { .. } | Op::Param { .. });
    // Which group stores each node.
    let mut owner: HashMap<NodeId, usize> = HashMap::new();
    for (g, group) in grouping.groups.iter().enumerate() {
        let members = group.roots().map(|id| (id, true)).chain(group.inline.iter().map(|&id| (id, false)));
        for (id, stored) in members {
            if !exists(id) {
                fail(Some(g), format!("names %{}, which is not a node of the graph", id.index()));
                continue;
            }
            if leaf(id) {
                fail(Some(g), format!("computes %{} ({}), an input or param", id.index(), graph.node(id).op.name()));
            }
            if stored && let Some(other) = owner.insert(id, g) {
                fail(Some(g), format!("stores %{}, which group {other} stores too", id.index()));
            }
        }
    }
    for (g, group) in grouping.groups.iter().enumerate() {
        let members = group.roots().chain(group.inline.iter().copied()).filter(|&id| exists(id));
        for id in members {
            for operand in graph.node(id).op.operands() {
                if !exists(operand) || group.contains(operand) || leaf(operand) {
                    continue;
                }
                match owner.get(&operand) {
                    Some(&producer) if producer < g => {}
                    Some(&producer) => fail(
                        Some(g),
                        format!(
                            "reads %{} before group {producer} stores it (groups must be in dependency order)",
                            operand.index()
                        ),
                    ),
                    None => fail(Some(g), format!("reads %{}, which no group stores", operand.index())),
                }
            }
        }
    }
    for output in &graph.outputs {
        if exists(output.node) && !owner.contains_key(&output.node) && !leaf(output.node) {
            fail(None, format!("output `{}` (%{}) is not stored by any group", output.name, output.node.index()));
        }
    }
    for edge in &grouping.unfused {
        if !exists(edge.producer) || !exists(edge.consumer) {
            fail(
                None,
                format!(
                    "an unfused edge names a missing node (%{} -> %{})",
                    edge.producer.index(),
                    edge.consumer.index()
                ),
            );
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}
