//! Fusion: which IR nodes are stored to their own tensor (the roots of kernel groups) and which are computed
//! inline inside their consumers' kernels. An analysis over the typed IR returning a side table
//! (`Grouping`); kernels are then built per group (`kernel.rs`), so fusion never touches generated code.
//!
//! Decisions, made consumers-first (reverse dependency order) so each node knows how its consumers will be
//! evaluated:
//! - inputs and params are tensors; outputs are always stored; constants and dimension values are always
//!   inlined (a literal or a uniform load);
//! - *amplification*: a consumer that reads each element of an operand many times per stored element
//!   (a broadcast that widens, a matmul operand, a scan's operand, an index-notation load, a gather's
//!   table, a concat's parts, all recomputing clamped reads) makes inlining a computation there a
//!   recompute; only index-only ops (layout ops) are inlined through amplification, and a node inlined
//!   into an amplified consumer is amplified too;
//! - contractions and reductions (`matmul`, `reduce`, index notation) are inlined only into a single
//!   elementwise or layout consumer that is neither amplified nor shared (computed in several kernels): that
//!   is epilogue fusion (`relu(x @ w + b)` is one kernel, also through the reshapes of a batched `Linear`);
//! - a tiny elementwise computation on one loaded element (`cheap_to_recompute`) is recomputed even where
//!   it is amplified or needed by several kernels;
//! - elementwise ops are inlined when all their consumers end up in one kernel (prologue fusion into
//!   reductions and contractions included, unless amplified; a value read twice at one position in a kernel
//!   is computed once there); when they are needed by several kernels `recompute` (the cost model) decides;
//! - a kernel's inline chains are bounded (`MAX_INLINE_DEPTH`): a node that would make a chain of inline
//!   nodes from its kernel's root longer than the cap is stored instead, so a long straight chain of
//!   statements becomes a sequence of kernels of bounded depth (code generation recurses over a group's
//!   inline nodes, and drivers compile one huge kernel slowly);
//! - then *row fusion* (`merge_rows`): row statistics (softmax's max and sum, layer_norm's mean and
//!   variance) and a contraction feeding them join the kernel that reads them back, which becomes a row
//!   kernel (`rows.rs`: one workgroup per row, workgroup reductions);
//! - then *horizontal fusion* (`merge_horizontal`);
//! - finally each group's schedule is chosen, once (`Schedule::choose`), and stored beside it. Fusion asks
//!   `choose` only whether a merged group would be a row kernel or a tiled contraction.

use std::collections::BTreeSet;

pub use super::group::Group;
use super::schedule::Schedule;
use super::target::Target;
use crate::ir::{Graph, NodeId, Op};

/// The fusion decision for a graph.
#[derive(Clone, Debug, Default)]
pub struct Grouping {
    /// One group per stored node, in dependency order.
    pub groups: Vec<Group>,
    /// `schedules[i]` is how `groups[i]` runs: chosen once, after fusion (`Schedule::choose`), and used
    /// as is by the kernel builder and tuning.
    pub schedules: Vec<Schedule>,
    /// For every edge from a stored producer (other than inputs and params) to a consumer in another
    /// kernel: why it was not fused.
    pub unfused: Vec<Unfused>,
}

/// A producer-consumer edge that crosses kernels, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfused {
    pub producer: NodeId,
    pub consumer: NodeId,
    pub reason: Reason,
}

/// Why a producer is stored rather than computed in its consumer's kernel. `Display` is the text
/// `tdslc explain` prints (text and JSON); ops are named as `Op::name` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Outputs are always stored.
    Output,
    /// Fusion is switched off (the unfused program).
    FusionOff,
    /// A consumer reads each element many times and the value is not `cheap_to_recompute`.
    Amplified,
    /// A contraction computed in several kernels (contractions are never recomputed).
    ContractionInKernels { kernels: usize, op: &'static str },
    /// A contraction's one consumer is neither elementwise nor a layout op.
    ContractionConsumer { op: &'static str, consumer: &'static str },
    /// A contraction with several consumers.
    ContractionConsumers { consumers: usize, op: &'static str },
    /// An elementwise value needed by several kernels where `recompute` prefers storing it.
    CostlierThanStoring { kernels: usize, op: &'static str },
    /// An argsort orders whole fibers in a sort kernel of its own (`Schedule::Sort`).
    Sort,
    /// A scan computes whole fibers in a scan kernel of its own (`Schedule::Scan`).
    Scan,
    /// Inlining would make a chain of inline nodes in a consumer's kernel longer than `MAX_INLINE_DEPTH`.
    KernelTooDeep,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Output => write!(f, "it is an output"),
            Reason::FusionOff => write!(f, "fusion is off"),
            Reason::Amplified => {
                write!(f, "the consumer reads each element many times (recomputing it is not worth it)")
            }
            Reason::ContractionInKernels { kernels, op } => {
                write!(f, "it is needed by {kernels} kernels and a {op} is never recomputed")
            }
            Reason::ContractionConsumer { op, consumer } => {
                write!(f, "a {op} is fused only into an elementwise or layout consumer, not a {consumer}")
            }
            Reason::ContractionConsumers { consumers, op } => {
                write!(f, "value has {consumers} consumers and a {op} is never recomputed")
            }
            Reason::CostlierThanStoring { kernels, op } => {
                write!(f, "value is needed by {kernels} kernels and recomputing `{op}` costs more than storing it")
            }
            Reason::Sort => write!(f, "an argsort is computed by a sort kernel of its own"),
            Reason::Scan => write!(f, "a cumsum is computed by a scan kernel of its own"),
            Reason::KernelTooDeep => {
                write!(f, "the consumer's kernel already computes a chain of {MAX_INLINE_DEPTH} ops (the limit)")
            }
        }
    }
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

/// Whether `consumer` reads each element of its operand `operand` more than once per element it computes.
fn amplifies(graph: &Graph, consumer: NodeId, operand: NodeId) -> bool {
    let c = graph.node(consumer);
    match &c.op {
        Op::Broadcast(_) => {
            let (from, to) = (&graph.node(operand).ty.shape, &c.ty.shape);
            from.len() != to.len() || from.iter().zip(to).any(|(a, b)| a != b)
        }
        // A scan kernel (`kernel/scan.rs`) reads each operand element twice: once for its chunk's total,
        // once for the running values.
        Op::MatMul(..) | Op::Map(_) | Op::Concat { .. } => true,
        Op::Gather { table, .. } => *table == operand,
        Op::TakeAlongAxis { input, .. } => *input == operand,
        Op::ScatterAdd { base, .. } => *base != operand,
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
            // Stops as soon as the cone is too large, so a long chain is not walked (nor recursed) through.
            _ if op.is_elementwise() => {
                *ops += 1;
                *ops <= MAX_OPS && op.operands().iter().all(|&o| cone(graph, o, ops, loads))
            }
            _ => false,
        }
    }
    let (mut ops, mut loads) = (0, BTreeSet::new());
    graph.node(id).op.is_elementwise() && cone(graph, id, &mut ops, &mut loads) && ops <= MAX_OPS && loads.len() <= 1
}

/// The longest chain of inline nodes below a kernel's root (the root's operand, its operand, ...). Kernel
/// emission recurses once per link (`kernel.rs`, `value`), so this bounds its stack use, and it splits a long
/// chain of statements into kernels of a size drivers compile quickly.
pub const MAX_INLINE_DEPTH: usize = 256;

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
    // For inline nodes: the longest chain of inline nodes from a kernel's root down to and including it.
    let mut depth = vec![0usize; n];
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
        let op = node.op.name();
        let inline_depth = 1 + live_consumers
            .iter()
            .map(|&c| match home[c.index()] {
                Home::Inline { .. } => depth[c.index()],
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        // A node on leaves only (a broadcast constant or input) adds one level at most and is shared by
        // everything it feeds, so the cap leaves it inline.
        let on_leaves = node.op.operands().iter().all(|&o| {
            matches!(graph.node(o).op, Op::Constant(_) | Op::DimValue(_) | Op::Input { .. } | Op::Param { .. })
        });
        let too_deep = !on_leaves && inline_depth > MAX_INLINE_DEPTH;
        let decision: Result<(), Reason> = if is_output[id.index()] {
            Err(Reason::Output)
        } else if matches!(node.op, Op::Constant(_) | Op::DimValue(_)) {
            Ok(())
        } else if !fuse {
            Err(Reason::FusionOff)
        } else if matches!(node.op, Op::Argsort { .. }) {
            Err(Reason::Sort)
        } else if matches!(node.op, Op::Scan { .. }) {
            Err(Reason::Scan)
        } else if too_deep {
            Err(Reason::KernelTooDeep)
        } else if node.op.is_layout() {
            Ok(())
        } else if amplified && !cheap_to_recompute(graph, id) {
            Err(Reason::Amplified)
        } else if node.op.is_contraction() {
            match live_consumers.as_slice() {
                _ if shared => Err(Reason::ContractionInKernels { kernels: kernels.len(), op }),
                [c] if graph.node(*c).op.is_elementwise() || graph.node(*c).op.is_layout() => Ok(()),
                [c] => Err(Reason::ContractionConsumer { op, consumer: graph.node(*c).op.name() }),
                many => Err(Reason::ContractionConsumers { consumers: many.len(), op }),
            }
        } else if !shared || recompute(&node.op, kernels.len()) || (amplified && cheap_to_recompute(graph, id)) {
            Ok(())
        } else {
            Err(Reason::CostlierThanStoring { kernels: kernels.len(), op })
        };
        home[id.index()] = match decision {
            Ok(()) => {
                depth[id.index()] = inline_depth;
                roots[id.index()] = kernels;
                Home::Inline { amplified, shared }
            }
            Err(reason) => {
                for &c in &live_consumers {
                    unfused.push(Unfused { producer: id, consumer: c, reason });
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
    let schedules = groups.iter().map(|g| Schedule::choose(graph, g, target)).collect();
    Grouping { groups, schedules, unfused }
}

/// Row fusion: a stored value whose consumers are all in one group is merged into that group when the
/// result is a row kernel (`Schedule::Rows`) in which the value is a row reduction, is computed from one, or is
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
        let mut merged = groups[j].clone();
        merged.inline.insert(s);
        merged.inline.extend(groups[i].inline.iter().copied());
        let placed = matches!(Schedule::choose(graph, &merged, target),
            Schedule::Rows(plan) if plan.places.iter().any(|&(n, _)| n == s));
        if placed {
            groups[j] = merged;
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
    // A constant is computed inline where it is used, unless it is an output: then its group stores it and
    // the others read it like any stored node.
    let stored: BTreeSet<NodeId> = groups.iter().flat_map(|g| g.roots()).collect();
    let reads = |g: &Group| -> BTreeSet<NodeId> {
        let mut reads = BTreeSet::new();
        for id in g.roots().chain(g.inline.iter().copied()) {
            for o in graph.node(id).op.operands() {
                let inline_constant =
                    matches!(graph.node(o).op, Op::Constant(_) | Op::DimValue(_)) && !stored.contains(&o);
                if !g.contains(o) && !inline_constant {
                    reads.insert(o);
                }
            }
        }
        reads
    };
    let status = |g: &Group| {
        g.roots().chain(g.inline.iter().copied()).any(|id| {
            matches!(
                graph.node(id).op,
                Op::Gather { .. } | Op::TakeAlongAxis { .. } | Op::ScatterAdd { .. } | Op::Map(_)
            )
        })
    };
    let mut i = 0;
    while i < groups.len() {
        // Row, sort and scan kernels never merge; register-tiled contractions merge only with each other (sharing the
        // contraction loop), plain kernels with plain kernels.
        let schedule = |g: &Group| Schedule::choose(graph, g, target);
        let tiled = |g: &Group| schedule(g).tile_plan().is_some();
        let rows = |g: &Group| matches!(schedule(g), Schedule::Rows(_) | Schedule::Sort(_) | Schedule::Scan(_));
        if rows(&groups[i]) {
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
                && !rows(b);
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
