//! `Rewriter`: rebuilds a graph node by node into a new arena, remapping operands; passes decide per node
//! what to emit. With `hash_cons` on, a node structurally equal to one already emitted (same op with the
//! same remapped operands, same type) is not emitted again: that is common-subexpression elimination.

use std::collections::HashMap;

use crate::ir::{Graph, Node, NodeId, Op, Output, Update};
use crate::span::Span;

pub(super) struct Rewriter<'g> {
    pub old: &'g Graph,
    pub new: Graph,
    /// `map[i]`: the new node standing for old node `i`.
    map: Vec<Option<NodeId>>,
    hash_cons: bool,
    seen: HashMap<Node, NodeId>,
}

impl<'g> Rewriter<'g> {
    pub fn new(old: &'g Graph, hash_cons: bool) -> Rewriter<'g> {
        let new = Graph { name: old.name.clone(), symbols: old.symbols.clone(), ..Graph::default() };
        Rewriter { old, new, map: vec![None; old.nodes.len()], hash_cons, seen: HashMap::new() }
    }

    /// The new node for old node `id` (already visited, since operands precede users).
    pub fn get(&self, id: NodeId) -> NodeId {
        self.map[id.index()].expect("operands are rewritten before their users")
    }

    /// Records that old node `old` is `new` in the rewritten graph.
    pub fn set(&mut self, old: NodeId, new: NodeId) {
        self.map[old.index()] = Some(new);
    }

    /// `op` with every operand remapped to the new graph.
    pub fn remap(&self, op: &Op) -> Op {
        op.map_operands(|id| self.get(id))
    }

    /// Appends `node` (operands already in the new graph), or returns its existing twin when hash-consing.
    /// Inputs and params are never merged: each is its own signature entry.
    pub fn emit(&mut self, node: Node, span: Span) -> NodeId {
        let signature = matches!(node.op, Op::Input { .. } | Op::Param { .. });
        let key = (self.hash_cons && !signature).then(|| node.clone());
        if let Some(key) = &key
            && let Some(&id) = self.seen.get(key)
        {
            return id;
        }
        let id = self.new.nodes.append(node, span);
        match &self.new.nodes[id].op {
            Op::Input { .. } => self.new.inputs.push(id),
            Op::Param { .. } => self.new.params.push(id),
            _ => {}
        }
        if let Some(key) = key {
            self.seen.insert(key, id);
        }
        id
    }

    /// Copies old node `id` with remapped operands.
    pub fn copy(&mut self, id: NodeId) -> NodeId {
        let node = &self.old.nodes[id];
        let new = Node { op: self.remap(&node.op), ty: node.ty.clone() };
        let new_id = self.emit(new, self.old.nodes.span(id));
        self.set(id, new_id);
        new_id
    }

    /// The finished graph, with outputs remapped. Inputs keep their signature order because the old
    /// graph's inputs are in node order.
    pub fn finish(mut self) -> Graph {
        self.new.outputs =
            self.old.outputs.iter().map(|o| Output { name: o.name.clone(), node: self.get(o.node) }).collect();
        self.new.inits = self.old.inits.iter().map(|(p, init)| (self.get(*p), init.clone())).collect();
        self.new.updates =
            self.old.updates.iter().map(|u| Update { output: u.output, param: self.get(u.param) }).collect();
        self.new
    }
}
