//! Fusion: which IR nodes are stored to their own tensor (the roots of kernel groups) and which are computed
//! inline inside their consumers' kernels. An analysis over the typed IR returning a side table
//! (`Grouping`); kernels are then built per group (`kernel.rs`), so fusion never touches generated code.
//!
//! Decisions, made consumers-first (reverse dependency order) so each node knows how its consumers will be
//! evaluated:
//! - inputs and params are tensors; outputs are always stored; constants and dimension values are always
//!   inlined (a literal or a uniform load);
//! - *amplification*: a consumer that reads each element of an operand many times per stored element
//!   (a broadcast that widens, a matmul operand, an index-notation load, a gather's table, a concat's parts,
//!   all recomputing clamped reads) makes inlining a computation there a recompute; only index-only ops
//!   (layout ops) are inlined through amplification, and a node inlined into an amplified consumer is
//!   amplified too;
//! - contractions and reductions (`matmul`, `reduce`, index notation) are inlined only into a single
//!   elementwise or layout consumer that is neither amplified nor shared (computed in several kernels): that
//!   is epilogue fusion (`relu(x @ w + b)` is one kernel, also through the reshapes of a batched `Linear`);
//! - a tiny elementwise computation on one loaded element (`cheap_to_recompute`) is recomputed even where
//!   it is amplified or needed by several kernels;
//! - elementwise ops are inlined when all their consumers end up in one kernel (prologue fusion into
//!   reductions and contractions included, unless amplified; a value read twice at one position in a kernel
//!   is computed once there); when they are needed by several kernels `recompute` (the cost model) decides;
//! - then *row fusion* (`merge_rows`): row statistics (softmax's max and sum, layer_norm's mean and
//!   variance) and a contraction feeding them join the kernel that reads them back, which becomes a row
//!   kernel (`rows.rs`: one workgroup per row, workgroup reductions).

use std::collections::BTreeSet;

use super::{Target, rows, tiles};
use crate::ir::{Graph, NodeId, Op};

/// The fusion decision for a graph.
#[derive(Clone, Debug, Default)]
pub struct Grouping {
    /// One group per stored node, in dependency order.
    pub groups: Vec<Group>,
    /// For every edge from a stored producer (other than inputs and params) to a consumer in another
    /// kernel: why it was not fused.
    pub unfused: Vec<Unfused>,
}

/// One kernel: `root` is stored; `inline` are computed inside it where the root needs them; `siblings` are
/// further stored nodes of the same shape computed by the same invocations (horizontal fusion), none of
/// which depends on another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub root: NodeId,
    pub inline: BTreeSet<NodeId>,
    pub siblings: Vec<NodeId>,
}

impl Group {
    /// The stored nodes of the kernel: the root, then the siblings.
    pub fn roots(&self) -> impl Iterator<Item = NodeId> + '_ {
        std::iter::once(self.root).chain(self.siblings.iter().copied())
    }

    /// Whether the kernel computes `id` (stored or inline).
    pub fn contains(&self, id: NodeId) -> bool {
        self.root == id || self.inline.contains(&id) || self.siblings.contains(&id)
    }
}

/// A producer-consumer edge that crosses kernels, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfused {
    pub producer: NodeId,
    pub consumer: NodeId,
    pub reason: String,
}

/// How a node is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Home {
    /// Not needed by any output.
    Dead,
    /// An input or param tensor.
    Tensor,
    /// Stored by its own kernel.
    Stored,
    /// Computed inline in every consumer; `amplified` when some consumer evaluates each element many times,
    /// `shared` when it is computed in more than one kernel (it or a consumer it is inlined into has several
    /// consumers).
    Inline { amplified: bool, shared: bool },
}

/// Ops that only compute an index into their operand (no arithmetic on values).
fn is_layout(op: &Op) -> bool {
    matches!(op, Op::Broadcast(_) | Op::Permute(..) | Op::Reshape(_) | Op::Slice { .. } | Op::Gather { .. })
}

fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(..) | Op::Binary(..) | Op::Select { .. } | Op::Cast(_))
}

fn is_contraction(op: &Op) -> bool {
    matches!(op, Op::MatMul(..) | Op::Reduce { .. } | Op::Map(_))
}

/// Whether `consumer` reads each element of its operand `operand` more than once per element it computes.
fn amplifies(graph: &Graph, consumer: NodeId, operand: NodeId) -> bool {
    let c = graph.node(consumer);
    match &c.op {
        Op::Broadcast(_) => {
            let (from, to) = (&graph.node(operand).ty.shape, &c.ty.shape);
            from.len() != to.len() || from.iter().zip(to).any(|(a, b)| a != b)
        }
        Op::MatMul(..) | Op::Map(_) | Op::Concat { .. } => true,
        Op::Gather { table, .. } => *table == operand,
        _ => false,
    }
}

/// The cost model for a value with several consumers: recompute it in each consumer's kernel, or store it
/// once and load it in each? Storing costs a 4-byte write plus a 4-byte read per consumer for every element;
/// recomputing costs the op again per extra consumer. With GPU kernels of this kind bound by memory traffic,
/// one byte moved is worth about `OPS_PER_BYTE` simple ops; a transcendental function counts `8` ops.
/// Only elementwise ops are candidates (contractions are never recomputed).
pub fn recompute(op: &Op, consumers: usize) -> bool {
    const OPS_PER_BYTE: usize = 2;
    let cost = match op {
        Op::Unary(u, _) if u.float_only() => 8,
        Op::Binary(crate::ir::BinaryOp::Pow, ..) => 8,
        Op::Unary(..) | Op::Binary(..) | Op::Select { .. } | Op::Cast(_) => 1,
        _ => return false,
    };
    let extra_compute = cost * (consumers - 1);
    let traffic = OPS_PER_BYTE * 4 * (consumers + 1);
    extra_compute <= traffic
}

/// The cost model's rule for amplified reads: a value that a consumer reads many times per element (and
/// may be needed by several kernels) is still recomputed there when its whole computation is at most
/// `MAX_OPS` elementwise ops on at most one loaded tensor element (constants and layout ops are free):
/// each read then costs one load, as reading the stored value would, plus a few ops, and the value needs
/// no kernel or tensor of its own (e.g. an attention mask turned into an additive bias).
pub fn cheap_to_recompute(graph: &Graph, id: NodeId) -> bool {
    const MAX_OPS: usize = 4;
    fn cone(graph: &Graph, id: NodeId, ops: &mut usize, loads: &mut BTreeSet<NodeId>) -> bool {
        let op = &graph.node(id).op;
        match op {
            Op::Constant(_) | Op::DimValue(_) => true,
            Op::Input { .. } | Op::Param { .. } => {
                loads.insert(id);
                true
            }
            Op::Broadcast(_) | Op::Reshape(_) | Op::Permute(..) | Op::Slice { .. } => {
                op.operands().iter().all(|&o| cone(graph, o, ops, loads))
            }
            _ if is_elementwise(op) => {
                *ops += 1;
                op.operands().iter().all(|&o| cone(graph, o, ops, loads))
            }
            _ => false,
        }
    }
    let (mut ops, mut loads) = (0, BTreeSet::new());
    is_elementwise(&graph.node(id).op) && cone(graph, id, &mut ops, &mut loads) && ops <= MAX_OPS && loads.len() <= 1
}

/// Groups every live computed node of `graph`. With `fuse` off, every computed node is its own group (only
/// constants and dimension values are inlined): the unfused program, for comparison.
pub fn group(graph: &Graph, fuse: bool, target: &Target) -> Grouping {
    let n = graph.nodes.len();
    let mut consumers: Vec<Vec<NodeId>> = vec![Vec::new(); n];
    for (id, node) in graph.nodes.iter() {
        for operand in node.op.operands() {
            if !consumers[operand.index()].contains(&id) {
                consumers[operand.index()].push(id);
            }
        }
    }
    let mut is_output = vec![false; n];
    for output in &graph.outputs {
        is_output[output.node.index()] = true;
    }

    let mut home = vec![Home::Dead; n];
    // For inline nodes: the roots of the kernels computing them.
    let mut roots: Vec<BTreeSet<NodeId>> = vec![BTreeSet::new(); n];
    let mut unfused = Vec::new();
    let nodes: Vec<_> = graph.nodes.iter().collect();
    for &(id, node) in nodes.iter().rev() {
        let live_consumers: Vec<NodeId> =
            consumers[id.index()].iter().copied().filter(|c| home[c.index()] != Home::Dead).collect();
        if !is_output[id.index()] && live_consumers.is_empty() {
            continue;
        }
        if matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
            home[id.index()] = Home::Tensor;
            continue;
        }
        let amplified = live_consumers
            .iter()
            .any(|&c| amplifies(graph, c, id) || matches!(home[c.index()], Home::Inline { amplified: true, .. }));
        // The kernels this node would be computed in if inlined: its consumers' kernels.
        let kernels: BTreeSet<NodeId> = live_consumers
            .iter()
            .flat_map(|&c| match home[c.index()] {
                Home::Inline { .. } => roots[c.index()].clone(),
                _ => BTreeSet::from([c]),
            })
            .collect();
        let shared = kernels.len() > 1;
        let decision: Result<(), String> = if is_output[id.index()] {
            Err("it is an output".to_string())
        } else if matches!(node.op, Op::Constant(_) | Op::DimValue(_)) {
            Ok(())
        } else if !fuse {
            Err("fusion is off".to_string())
        } else if is_layout(&node.op) {
            Ok(())
        } else if amplified && !cheap_to_recompute(graph, id) {
            Err("the consumer reads each element many times (recomputing it is not worth it)".to_string())
        } else if is_contraction(&node.op) {
            match live_consumers.as_slice() {
                _ if shared => Err(format!(
                    "it is needed by {} kernels and a {} is never recomputed",
                    kernels.len(),
                    node.op.name()
                )),
                [c] if is_elementwise(&graph.node(*c).op) || is_layout(&graph.node(*c).op) => Ok(()),
                [c] => Err(format!(
                    "a {} is fused only into an elementwise or layout consumer, not a {}",
                    node.op.name(),
                    graph.node(*c).op.name()
                )),
                many => Err(format!("value has {} consumers and a {} is never recomputed", many.len(), node.op.name())),
            }
        } else if !shared || recompute(&node.op, kernels.len()) || (amplified && cheap_to_recompute(graph, id)) {
            Ok(())
        } else {
            Err(format!(
                "value is needed by {} kernels and recomputing `{}` costs more than storing it",
                kernels.len(),
                node.op.name()
            ))
        };
        home[id.index()] = match decision {
            Ok(()) => {
                roots[id.index()] = kernels;
                Home::Inline { amplified, shared }
            }
            Err(reason) => {
                for &c in &live_consumers {
                    unfused.push(Unfused { producer: id, consumer: c, reason: reason.clone() });
                }
                Home::Stored
            }
        };
    }
    unfused.reverse();

    let mut groups = Vec::new();
    for &(id, _) in &nodes {
        if home[id.index()] != Home::Stored {
            continue;
        }
        // Everything inline reachable from the root without passing a stored node or a tensor.
        let mut inline = BTreeSet::new();
        let mut stack = graph.node(id).op.operands();
        while let Some(o) = stack.pop() {
            if matches!(home[o.index()], Home::Inline { .. }) && inline.insert(o) {
                stack.extend(graph.node(o).op.operands());
            }
        }
        groups.push(Group { root: id, inline, siblings: Vec::new() });
    }
    if fuse {
        merge_rows(graph, &consumers, &is_output, &mut groups, &mut unfused, target);
        merge_horizontal(graph, &mut groups, target);
    }
    Grouping { groups, unfused }
}

/// Row fusion: a stored value whose consumers are all in one group is merged into that group when the
/// result is a row kernel (`rows::plan`) in which the value is a row reduction, is computed from one, or is
/// a contraction cached per row: softmax's max and sum, layer_norm's mean and variance, and the matmul
/// feeding a layer_norm join the kernel that uses them. Consumers first, so a chain of statistics merges
/// step by step.
fn merge_rows(
    graph: &Graph,
    consumers: &[Vec<NodeId>],
    is_output: &[bool],
    groups: &mut Vec<Group>,
    unfused: &mut Vec<Unfused>,
    target: &Target,
) {
    let mut i = groups.len();
    while i > 0 {
        i -= 1;
        let s = groups[i].root;
        if is_output[s.index()] {
            continue;
        }
        let holding: BTreeSet<usize> = consumers[s.index()]
            .iter()
            .flat_map(|&c| groups.iter().enumerate().filter(move |(_, g)| g.contains(c)).map(|(j, _)| j))
            .collect();
        let [j] = holding.into_iter().collect::<Vec<_>>()[..] else { continue };
        if j == i {
            continue;
        }
        let mut merged = groups[j].inline.clone();
        merged.insert(s);
        merged.extend(groups[i].inline.iter().copied());
        let placed =
            rows::plan(graph, groups[j].root, &merged, target).is_some_and(|p| p.places.iter().any(|&(n, _)| n == s));
        if placed {
            groups[j].inline = merged;
            groups.remove(i);
            unfused.retain(|u| u.producer != s);
        }
    }
}

/// Storage buffers one kernel may bind after horizontal fusion (WebGPU's default
/// `maxStorageBuffersPerShaderStage`, so a merged kernel runs wherever its parts did).
pub const MAX_STORAGE_BINDINGS: usize = 8;

/// Horizontal fusion: a group joins an earlier one (as a sibling) when both are plain (not row) kernels
/// with outputs of the same shape, they read a tensor in common (the Q, K and V projections of one input),
/// everything the later one reads exists before the earlier one runs (so neither depends on the other),
/// and the merged kernel binds at most `MAX_STORAGE_BINDINGS` storage buffers. One launch then computes
/// both at each position.
fn merge_horizontal(graph: &Graph, groups: &mut Vec<Group>, target: &Target) {
    let reads = |g: &Group| -> BTreeSet<NodeId> {
        let mut reads = BTreeSet::new();
        for id in g.roots().chain(g.inline.iter().copied()) {
            for o in graph.node(id).op.operands() {
                if !g.contains(o) && !matches!(graph.node(o).op, Op::Constant(_) | Op::DimValue(_)) {
                    reads.insert(o);
                }
            }
        }
        reads
    };
    let status = |g: &Group| {
        g.roots().chain(g.inline.iter().copied()).any(|id| matches!(graph.node(id).op, Op::Gather { .. } | Op::Map(_)))
    };
    let mut i = 0;
    while i < groups.len() {
        // Row kernels never merge; register-tiled contractions merge only with each other (sharing the
        // contraction loop), plain kernels with plain kernels.
        let tiled = |g: &Group| tiles::plan(graph, g, target.tile).is_some();
        if rows::plan(graph, groups[i].root, &groups[i].inline, target).is_some() {
            i += 1;
            continue;
        }
        // Nodes stored before group i runs.
        let before: BTreeSet<NodeId> = groups[..i].iter().flat_map(|g| g.roots()).collect();
        let mut j = i + 1;
        while j < groups.len() {
            let (a, b) = (&groups[i], &groups[j]);
            let (reads_a, reads_b) = (reads(a), reads(b));
            let available =
                |o: &NodeId| before.contains(o) || matches!(graph.node(*o).op, Op::Input { .. } | Op::Param { .. });
            let outputs = 1 + a.siblings.len() + 1 + b.siblings.len();
            let bindings = reads_a.union(&reads_b).count() + outputs + usize::from(status(a) || status(b));
            let fits = graph.node(a.root).ty.shape == graph.node(b.root).ty.shape
                && !reads_a.is_disjoint(&reads_b)
                && reads_b.iter().all(available)
                && bindings <= MAX_STORAGE_BINDINGS
                && rows::plan(graph, b.root, &b.inline, target).is_none();
            let mut merged = a.clone();
            merged.siblings.extend(b.roots());
            merged.inline.extend(b.inline.iter().copied());
            if fits && tiled(a) == tiled(&merged) && tiled(b) == tiled(&merged) {
                groups.remove(j);
                groups[i] = merged;
            } else {
                j += 1;
            }
        }
        i += 1;
    }
}
