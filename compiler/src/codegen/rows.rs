//! Row kernels: whether a group can run one workgroup per row of its root, so that reductions over the row
//! (softmax's max and sum, layer_norm's mean and variance, an L2 norm) are computed in the same kernel as the
//! values that use them. An analysis over the typed IR returning a side table (`RowPlan`); fusion uses it to
//! merge row statistics into their consumer's group, `schedule.rs` to choose `Schedule::Rows`, and
//! `kernel/rows.rs` to build the kernel.
//!
//! A row kernel for a root of shape `F = K ++ C` (`C` the trailing `t` axes) runs one workgroup per row (a
//! position in `K`); its invocations stride over the row's `cols = |C|` elements. Every node of the group
//! that depends on a *row reduction* (an inline reduce over exactly the trailing `t` axes of an `F`-shaped
//! value, or an argmax/argmin over its last axis, `t = 1`) or on a *cached contraction* is typed:
//! - `Elem`: evaluated only at the root's own flat position (`row * cols + j`): elementwise ops and reshapes
//!   between it and the root, the operands of row reductions, cached contractions;
//! - `Row`: evaluated only at the row's position (flat index `row`): row reductions, elementwise ops and
//!   reshapes of row values, the operands of *back-broadcasts* (a broadcast from `K ++ [1; t]` to `F`).
//!
//! A group where some such node would need another position (a permute, slice, gather or contraction of a
//! row value, or two different types) is not a row kernel. The kernel then computes, in order: each cached
//! contraction once per element into workgroup memory (only for constant `cols`, so an element feeding
//! several passes is not recomputed), each `Row` node once per row (reductions as workgroup tree
//! reductions), and finally the root, one element per invocation and stride. Nodes depending on neither are
//! unconstrained: they are computed wherever they are needed, as in any kernel.
//!
//! Constant rows of at most `SHORT_ROW` columns share a workgroup: `rows_per_workgroup` rows, each taken by
//! the row length rounded up to a power of two of invocations, reducing by trees within those lanes.
//!
//! On targets with `subgroups`, each reduction combines within subgroups by shuffles and across them
//! through workgroup memory (two barriers) instead of a tree over the whole workgroup.
//!
//! Targets with `serial_rows` (CPU devices, where a barrier switches between every lane of the workgroup)
//! run one invocation per row instead, several rows per workgroup: the reductions become loops over the
//! row, and there is no workgroup memory, so no contraction is cached (fusion leaves such a contraction in a
//! tiled kernel of its own).
//!
//! A stored reduction (the root itself reduces its input's trailing axes, e.g. `sum(x)`) may run as a row
//! kernel too: its rows are its output elements, each reduced by a workgroup and stored once by the row's
//! first invocation. `Schedule::choose` prefers that to one invocation per output only for long reductions
//! (`loops.rs`), and a reducing root never runs serial rows nor caches a contraction.
//!
//! Serial rows whose single invocation would loop longer than llvmpipe allows (`loops::LOOP_BUDGET`, at
//! nominal or known sizes) run one workgroup per row instead, on every target.

use std::collections::{BTreeSet, HashMap};

use super::Target;
use super::loops::{ElementLoops, LOOP_BUDGET, nominal};
use crate::dim::Dim;
use crate::ir::{Graph, NodeId, Op};

/// Largest bytes of workgroup memory a row kernel uses (WebGPU's guaranteed
/// `maxComputeWorkgroupStorageSize`); the reduction scratch takes `4 * workgroup size` of it.
pub const WORKGROUP_BYTES: i64 = 16384;
/// Invocations per workgroup of a row kernel whose row length is not a constant.
pub const DEFAULT_ROW_WORKGROUP: u32 = 64;
/// Constant rows this long or shorter share a workgroup of `DEFAULT_ROW_WORKGROUP` invocations.
pub const SHORT_ROW: i64 = 16;

/// Where a node of a row kernel is evaluated (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Elem,
    Row,
}

/// How a group runs as a row kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowPlan {
    /// The root's leading axes, one row per position.
    pub row_shape: Vec<Dim>,
    /// Number of rows (the product of `row_shape`).
    pub rows: Dim,
    /// Elements per row (the product of the trailing axes).
    pub cols: Dim,
    /// Invocations per workgroup (a power of two).
    pub workgroup: u32,
    /// Rows per workgroup: `workgroup` for serial rows; otherwise 1, or for short constant rows (`SHORT_ROW` columns or fewer)
    /// several, each taken by `workgroup / rows_per_workgroup` invocations (the row's columns rounded up
    /// to a power of two), so a workgroup is not mostly idle.
    pub rows_per_workgroup: u32,
    /// One invocation per row (`workgroup` rows per workgroup), reductions as loops, no barriers; else one
    /// workgroup per row.
    pub serial: bool,
    /// Serial rows of a constant multiple of 4 columns on targets with vector kernels: each row is walked
    /// 4-element vector by vector, tensors read at the row's own positions loaded as whole vectors.
    pub vector: bool,
    /// One workgroup per row, reducing within subgroups by shuffles and across them through workgroup
    /// memory (`Target::subgroups`); else workgroup tree reductions.
    pub subgroups: bool,
    /// The root is itself a row reduction (of its input's trailing axes, over `cols` elements): each row
    /// stores one value, the reduction's. Never serial.
    pub reduce_root: bool,
    /// Nodes placed per row or per element, in dependency order.
    pub places: Vec<(NodeId, Place)>,
    /// Row reductions (`Row` nodes computed by the whole workgroup).
    pub reductions: BTreeSet<NodeId>,
    /// Contractions computed once per element into workgroup memory, in dependency order.
    pub cached: Vec<NodeId>,
}

/// The row plan of the group `root` + `inline`, or `None` when it is not a row kernel (see the module
/// comment for the conditions).
pub fn plan(graph: &Graph, root: NodeId, inline: &BTreeSet<NodeId>, target: &Target) -> Option<RowPlan> {
    let reduce_root = reduces_trailing_axes(graph, root);
    let full = &full_shape(graph, root);
    let rank = full.len();
    if !(graph.node(root).op.is_elementwise() || reduce_root) || rank == 0 {
        return None;
    }
    // Row reductions: inline reduces of an F-shaped value over trailing axes, all over the same axes.
    let mut trailing = None;
    let mut reductions = BTreeSet::new();
    for &id in inline.iter().chain(reduce_root.then_some(&root)) {
        if let Some((input, axes)) = row_reduction(graph, id)
            && graph.node(input).ty.shape == *full
        {
            let t = axes.len();
            if t == 0 || axes.iter().enumerate().any(|(i, &a)| a != rank - t + i) || *trailing.get_or_insert(t) != t {
                return None;
            }
            reductions.insert(id);
        }
    }
    let t = trailing?;
    let row_shape = full[..rank - t].to_vec();
    let rows = product(&row_shape)?;
    let cols = product(&full[rank - t..])?;
    let in_group = |id: NodeId| id == root || inline.contains(&id);
    // A reducing root reads each column once (in its reduction), so it caches nothing: its contractions
    // are computed where they are read, like any inline node.
    let cached: Vec<NodeId> = inline
        .iter()
        .copied()
        .filter(|&id| !reduce_root && graph.node(id).op.is_contraction() && !reductions.contains(&id))
        .collect();

    // Nodes depending on a row reduction or a cached contraction (ids are in dependency order).
    let mut dependent = BTreeSet::new();
    let members: Vec<NodeId> = inline.iter().copied().chain([root]).collect::<BTreeSet<_>>().into_iter().collect();
    for &id in &members {
        if reductions.contains(&id)
            || cached.contains(&id)
            || graph.node(id).op.operands().iter().any(|o| dependent.contains(o))
        {
            dependent.insert(id);
        }
    }
    if !dependent.contains(&root) {
        return None;
    }

    // Places, consumers first.
    let root_place = if reduce_root { Place::Row } else { Place::Elem };
    let mut place: HashMap<NodeId, Place> = HashMap::from([(root, root_place)]);
    for &id in members.iter().rev() {
        if !dependent.contains(&id) {
            continue;
        }
        let here = *place.get(&id)?;
        let node = graph.node(id);
        for operand in node.op.operands() {
            if !in_group(operand) || !dependent.contains(&operand) {
                continue;
            }
            let shape = &graph.node(operand).ty.shape;
            let wanted = match (&node.op, here) {
                _ if cached.contains(&id) => return None,
                (op, _) if op.is_elementwise() && *shape == node.ty.shape => here,
                (Op::Reshape(_), _) => here,
                (Op::Reduce { .. } | Op::ArgReduce { .. }, Place::Row) if reductions.contains(&id) => Place::Elem,
                (Op::Broadcast(_), Place::Elem)
                    if shape.len() == rank
                        && shape[..rank - t] == full[..rank - t]
                        && shape[rank - t..].iter().all(|d| d.as_const() == Some(1)) =>
                {
                    Place::Row
                }
                _ => return None,
            };
            if *place.entry(operand).or_insert(wanted) != wanted {
                return None;
            }
        }
    }
    if reductions.iter().any(|r| place.get(r) != Some(&Place::Row))
        || cached.iter().any(|c| place.get(c) != Some(&Place::Elem))
    {
        return None;
    }
    let serial_rows = target.serial_rows.filter(|_| {
        // One invocation per row loops over the row once per reduction and once to store it.
        let member = |id: NodeId| in_group(id);
        let mut loops = ElementLoops::new(graph, &member, &reductions);
        let passes = reductions.iter().fold(loops.of(root).saturating_add(1), |n, &r| {
            let input = graph.node(r).op.operands()[0];
            n.saturating_add(loops.of(input).saturating_add(1))
        });
        // A group with contractions to cache is no serial row kernel at all (below), however long.
        !reduce_root && (!cached.is_empty() || nominal(&cols).saturating_mul(passes) <= LOOP_BUDGET)
    });
    if let Some(rows_per_workgroup) = serial_rows {
        // One invocation per row has no workgroup memory to cache a contraction in.
        if !cached.is_empty() {
            return None;
        }
        let places = members.iter().filter_map(|id| place.get(id).map(|p| (*id, *p))).collect();
        let vector = target.vector && cols.as_const().is_some_and(|n| n > 0 && n % 4 == 0);
        return Some(RowPlan {
            row_shape,
            rows,
            cols,
            workgroup: rows_per_workgroup,
            rows_per_workgroup,
            serial: true,
            vector,
            subgroups: false,
            reduce_root,
            places,
            reductions,
            cached,
        });
    }
    let workgroup = match cols.as_const() {
        Some(n) => (n.max(1) as u64).next_power_of_two().clamp(32, 256) as u32,
        // A stored reduction is a row kernel only where its rows are long.
        None if reduce_root => 256,
        None => DEFAULT_ROW_WORKGROUP,
    };
    if !cached.is_empty() {
        // Cached contractions need a constant row that fits in workgroup memory beside the scratch.
        let n = cols.as_const()?;
        let bytes = 4 * n * cached.len() as i64 + 4 * i64::from(workgroup);
        if bytes > WORKGROUP_BYTES {
            return None;
        }
    }
    // Short constant rows without caches: several rows per workgroup, a power of two of lanes each; their
    // reductions are trees within each row's lanes (few levels), not subgroup shuffles.
    let short = cols.as_const().filter(|&n| n <= SHORT_ROW && cached.is_empty());
    let (workgroup, rows_per_workgroup) = match short {
        Some(n) => {
            let lanes = (n.max(1) as u32).next_power_of_two();
            (DEFAULT_ROW_WORKGROUP, DEFAULT_ROW_WORKGROUP / lanes)
        }
        None => (workgroup, 1),
    };
    let places = members.iter().filter_map(|id| place.get(id).map(|p| (*id, *p))).collect();
    Some(RowPlan {
        row_shape,
        rows,
        cols,
        workgroup,
        rows_per_workgroup,
        serial: false,
        vector: false,
        subgroups: target.subgroups && rows_per_workgroup == 1,
        reduce_root,
        places,
        reductions,
        cached,
    })
}

/// The input and reduced axes of a reduction (`reduce`, or an index reduction over its one axis) that a
/// row kernel can compute per row; `None` for other ops.
pub fn row_reduction(graph: &Graph, id: NodeId) -> Option<(NodeId, Vec<usize>)> {
    match &graph.node(id).op {
        Op::Reduce { input, axes, .. } => Some((*input, axes.clone())),
        Op::ArgReduce { input, axis, .. } => Some((*input, vec![*axis])),
        _ => None,
    }
}

/// Whether `id` is a reduction over trailing axes of its input (a row kernel's root may be one): a
/// `reduce`, or an `argmax`/`argmin` of the last axis.
pub fn reduces_trailing_axes(graph: &Graph, id: NodeId) -> bool {
    match row_reduction(graph, id) {
        Some((input, axes)) => {
            let rank = graph.node(input).ty.rank();
            !axes.is_empty() && axes.iter().enumerate().all(|(i, &a)| a == rank - axes.len() + i)
        }
        None => false,
    }
}

/// The shape `F` a row kernel of root `id` walks: the root's, or a reducing root's input's.
pub fn full_shape(graph: &Graph, id: NodeId) -> Vec<Dim> {
    match row_reduction(graph, id) {
        Some((input, _)) if reduces_trailing_axes(graph, id) => graph.node(input).ty.shape.clone(),
        _ => graph.node(id).ty.shape.clone(),
    }
}

fn product(dims: &[Dim]) -> Option<Dim> {
    dims.iter().try_fold(Dim::constant(1), |acc, d| acc.mul(d).ok())
}
