//! Chains of launches run slice by slice. Consecutive launches that compute each position of a shared
//! symbolic leading axis (a batch) from the same position of what they read, and whose intermediate results
//! no other launch reads, run one slice of that axis at a time: every launch of the chain in turn on a few
//! positions, the slices spread over the pool's threads. The intermediates then live in the core's cache
//! instead of going through memory: attention's scores and probabilities, 14 MB each per layer in MiniLM at
//! 32 x 98, become 0.5 MB per sentence. Nothing is recomputed; each launch runs its own plan (`group.rs`) on
//! its slice, so the numbers are those of the whole launches. A slice reads the chain's inputs in place
//! (a window of each tensor, `fused::Run::windows`), not copies of them.
//!
//! `chains` finds them once, from the typed ops: `sliced_nodes` types each node of a launch as *sliced*
//! (its leading axis is the chain's, and its positions there depend only on the same positions of its sliced
//! operands) or *whole* (it has no such axis: a constant, a weight, a broadcast row), and a launch belongs
//! to a chain when every node is one or the other and every store is sliced. `Chain::run` decides per run
//! whether slicing is worth it (enough positions for every thread) and how many positions a slice takes.

use std::ops::Range;

use rayon::prelude::*;

use super::buffers::Buffers;
use super::group::{GroupPlan, Slice};
use super::value::Value;
use crate::dim::Dim;
use crate::eval::values::Vals;
use crate::exec::CpuFailure;
use crate::program::{GroupOps, OpRef, Program, TensorId, TensorOp};

/// Bytes of a chain's largest intermediate a slice should hold (the rest of a 2 MiB L2 holds its operands
/// and the next intermediate).
const SLICE_BYTES: usize = 512 * 1024;

/// Launches run slice by slice (see the module comment).
#[derive(Debug)]
pub struct Chain {
    /// The launches, consecutive.
    pub launches: Range<usize>,
    /// The shared leading axis.
    lead: Dim,
    /// Per launch, per node: sliced or whole (`sliced_nodes`).
    sliced: Vec<Vec<bool>>,
    /// Per launch: the intermediates whose last reader it is (dropped after it, so the next slice on the
    /// thread takes their buffers while they are in cache).
    drops: Vec<Vec<TensorId>>,
    /// The intermediates: every store of the chain's launches but the last one's.
    internal: Vec<TensorId>,
}

/// The chains of `program`: maximal runs of two or more consecutive launches sliced along one symbolic
/// leading axis, every result of each but the last read only by later launches of the run (never an
/// output).
pub fn chains(program: &Program) -> Vec<Chain> {
    let launches = &program.launches;
    // Each launch's leading axis and node types, when it can run sliced.
    let sliceable: Vec<Option<(Dim, Vec<bool>)>> = launches
        .iter()
        .map(|launch| {
            let ops = &launch.ops;
            let first = ops.stores.first()?;
            let lead = ops.nodes.get(first.node.index())?.shape.first()?.clone();
            if lead.as_const().is_some() {
                return None;
            }
            let sliced = sliced_nodes(ops, &lead)?;
            ops.stores.iter().all(|s| sliced.get(s.node.index()) == Some(&true)).then_some((lead, sliced))
        })
        .collect();
    // The last launch reading each tensor, and whether it is an output.
    let mut last_reader = vec![None::<usize>; program.tensors.len()];
    for (index, launch) in launches.iter().enumerate() {
        for node in &launch.ops.nodes {
            if let TensorOp::Tensor(t) = node.op
                && let Some(slot) = last_reader.get_mut(t.0 as usize)
            {
                *slot = Some(index);
            }
        }
    }
    let output = |t: TensorId| program.outputs.iter().any(|(_, o)| *o == t);
    // How far a launch's results are read: `usize::MAX` for an output.
    let reach = |index: usize| {
        launches[index]
            .ops
            .stores
            .iter()
            .map(|s| if output(s.tensor) { usize::MAX } else { last_reader[s.tensor.0 as usize].unwrap_or(index) })
            .max()
            .unwrap_or(index)
    };
    let mut chains = Vec::new();
    let mut start = 0;
    while start < launches.len() {
        let Some((lead, _)) = &sliceable[start] else {
            start += 1;
            continue;
        };
        // The longest run from `start` whose intermediates are read inside it.
        let (mut end, mut best, mut reached) = (start, None, reach(start));
        while end + 1 < launches.len() && sliceable[end + 1].as_ref().is_some_and(|(l, _)| l == lead) {
            end += 1;
            if reached <= end {
                best = Some(end);
            }
            reached = reached.max(reach(end));
        }
        let Some(last) = best else {
            start += 1;
            continue;
        };
        let range = start..last + 1;
        let internal: Vec<TensorId> =
            launches[start..last].iter().flat_map(|l| l.ops.stores.iter().map(|s| s.tensor)).collect();
        let drops = range
            .clone()
            .map(|index| internal.iter().copied().filter(|t| last_reader[t.0 as usize] == Some(index)).collect())
            .collect();
        let sliced =
            range.clone().map(|index| sliceable[index].as_ref().map_or_else(Vec::new, |(_, s)| s.clone())).collect();
        chains.push(Chain { launches: range, lead: lead.clone(), sliced, drops, internal });
        start = last + 1;
    }
    chains
}

/// Whether each node of `ops` is sliced along `lead` (see the module comment); `None` when some node is
/// neither: it mixes positions of the leading axis (a reduction over it, a permute moving it, a reshape
/// merging it, a matmul contracting it) or mixes sliced and whole operands where that has no meaning.
fn sliced_nodes(ops: &GroupOps, lead: &Dim) -> Option<Vec<bool>> {
    let nodes = &ops.nodes;
    let mut sliced: Vec<bool> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let leads = node.shape.first() == Some(lead);
        let of = |r: &OpRef| sliced.get(r.index()).copied();
        let operands = node.op.operands();
        let all = |want: bool| operands.iter().all(|r| of(r) == Some(want));
        // Sliced when the sliced operands allow it, whole when every operand is whole.
        let either = |slices: bool| {
            if all(true) && slices {
                Some(true)
            } else if all(false) {
                Some(false)
            } else {
                None
            }
        };
        let part = match &node.op {
            TensorOp::Tensor(_) => Some(leads),
            TensorOp::Constant(_) | TensorOp::DimValue(_) => Some(false),
            TensorOp::Unary(..) | TensorOp::Binary(..) | TensorOp::Select { .. } | TensorOp::Cast(_) => either(true),
            TensorOp::Reshape(_) => either(leads),
            TensorOp::Permute(_, perm) => either(perm.first() == Some(&0)),
            TensorOp::Broadcast(x) => {
                let from = &nodes.get(x.index())?.shape;
                match of(x)? {
                    true => (leads && from.len() == node.shape.len()).then_some(true),
                    // A whole operand repeated along the leading axis: each slice repeats it as often.
                    false => Some(
                        leads && (from.len() < node.shape.len() || from.first().and_then(Dim::as_const) == Some(1)),
                    ),
                }
            }
            TensorOp::MatMul(a, b) => match (of(a)?, of(b)?) {
                (true, true) => (node.shape.len() >= 3).then_some(true),
                // Rows of the left operand times the whole right one.
                (true, false) => (node.shape.len() == 2).then_some(true),
                (false, false) => Some(false),
                (false, true) => None,
            },
            TensorOp::Reduce { axes, .. } => either(!axes.contains(&0)),
            TensorOp::ArgReduce { axis, .. }
            | TensorOp::Scan { axis, .. }
            | TensorOp::Slice { axis, .. }
            | TensorOp::Argsort { axis, .. }
            | TensorOp::Concat { axis, .. }
            | TensorOp::TakeAlongAxis { axis, .. } => either(*axis != 0),
            TensorOp::Gather { table, indices, axis } => match (of(table)?, of(indices)?) {
                // Rows of a whole table picked by sliced indices.
                (false, true) => (*axis == 0).then_some(true),
                (true, false) => (*axis != 0).then_some(true),
                (false, false) => Some(false),
                (true, true) => None,
            },
            TensorOp::ScatterAdd { .. } | TensorOp::Map(_) => either(false),
        }?;
        // Whole nodes are computed again for every slice: only leaves, layout and elementwise ops (a row, a
        // constant) are worth that.
        let cheap = matches!(
            node.op,
            TensorOp::Tensor(_)
                | TensorOp::Constant(_)
                | TensorOp::DimValue(_)
                | TensorOp::Reshape(_)
                | TensorOp::Permute(..)
                | TensorOp::Broadcast(_)
        ) || node.op.is_elementwise();
        if part && !leads || !part && !cheap {
            return None;
        }
        sliced.push(part);
    }
    Some(sliced)
}

impl Chain {
    /// Runs the chain's launches slice by slice on the current pool, or `None` (nothing run) when this run's
    /// sizes make slicing not worth it: fewer than two positions of the axis per thread, or an axis that is
    /// not a size. A slice holds as many positions as keep the largest intermediate's part near
    /// `SLICE_BYTES`, while leaving two slices per thread. Returns the last launch's results, whole.
    pub fn run(
        &self,
        program: &Program,
        plans: &[GroupPlan],
        tensors: &[Option<Value>],
        shapes: &[Vec<usize>],
        symbols: &[i64],
        buffers: &Buffers,
    ) -> Option<Result<Vec<(TensorId, Value)>, CpuFailure>> {
        let positions = usize::try_from(self.lead.eval_at(symbols)?).ok()?;
        let most = positions / (2 * rayon::current_num_threads().max(1));
        if most == 0 {
            return None;
        }
        let largest = self
            .internal
            .iter()
            .filter_map(|t| shapes.get(t.0 as usize))
            .map(|shape| shape.iter().product::<usize>() * 4)
            .max()
            .unwrap_or(0);
        let len = (SLICE_BYTES / (largest / positions).max(1)).clamp(1, most);
        let result = || -> Result<Vec<(TensorId, Value)>, CpuFailure> {
            let last = self.launches.end - 1;
            let starts: Vec<usize> = (0..positions).step_by(len).collect();
            let slices = starts
                .par_iter()
                .map(|&start| {
                    let len = len.min(positions - start);
                    let mut local: Vec<(TensorId, Value)> = Vec::new();
                    for (i, index) in self.launches.clone().enumerate() {
                        let slice = Slice { sliced: &self.sliced[i], start, len, local: &local };
                        let results = plans[index].run(program, tensors, shapes, symbols, buffers, Some(&slice))?;
                        if index == last {
                            for (_, value) in local.drain(..) {
                                buffers.recycle(value);
                            }
                            return Ok(results);
                        }
                        let (dropped, kept): (Vec<_>, Vec<_>) =
                            local.drain(..).partition(|(t, _)| self.drops[i].contains(t));
                        for (_, value) in dropped {
                            buffers.recycle(value);
                        }
                        local = kept;
                        local.extend(results);
                    }
                    Ok(Vec::new())
                })
                .collect::<Result<Vec<Vec<(TensorId, Value)>>, CpuFailure>>()?;
            // Each result's slices, joined along the leading axis.
            let stores = &program.launches[last].ops.stores;
            let mut joined = Vec::with_capacity(stores.len());
            for (s, store) in stores.iter().enumerate() {
                let parts: Vec<&Value> = slices.iter().filter_map(|r| r.get(s)).map(|(_, v)| v).collect();
                let shape = shapes.get(store.tensor.0 as usize).cloned().unwrap_or_default();
                let value = join(&parts, shape, buffers).ok_or_else(|| {
                    CpuFailure::internal(last, &program.launches[last].name, "a chain's slices do not join".to_string())
                })?;
                joined.push((store.tensor, value));
            }
            for slice in slices {
                for (_, value) in slice {
                    buffers.recycle(value);
                }
            }
            Ok(joined)
        };
        Some(result())
    }
}

/// `parts` (slices along the leading axis, in order) as one value of `shape`; `None` when they are not its
/// elements.
fn join(parts: &[&Value], shape: Vec<usize>, buffers: &Buffers) -> Option<Value> {
    let total: usize = shape.iter().product();
    if parts.iter().map(|p| p.0.data.len()).sum::<usize>() != total {
        return None;
    }
    let first = parts.first()?;
    let data = match &first.0.data {
        Vals::F(_) => {
            let mut out = buffers.take(total);
            let mut chunks = Vec::with_capacity(parts.len());
            let mut rest = &mut out[..];
            for part in parts {
                let Vals::F(v) = &part.0.data else { return None };
                let (chunk, tail) = rest.split_at_mut(v.len());
                chunks.push((chunk, &v[..]));
                rest = tail;
            }
            chunks.into_par_iter().for_each(|(chunk, v)| chunk.copy_from_slice(v));
            Vals::F(out)
        }
        // Other element types are small (masks, indices): the interpreter's concatenation.
        _ => {
            let typed: Vec<(&Vals, &[usize])> = parts.iter().map(|p| (&p.0.data, &p.0.shape[..])).collect();
            crate::eval::layout::concat(&typed, 0)?
        }
    };
    (data.len() == total).then(|| Value::new(data, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;
    use crate::dim::SymId;
    use crate::ops::{BinaryOp, ReduceOp};
    use crate::program::{OpNode, Store};

    /// A dimension: a constant, `-1` for the symbol `B`, `-2` for `B * 3`.
    fn dim(d: i64) -> Dim {
        match d {
            -1 => Dim::sym(SymId(0)),
            -2 => Dim::sym(SymId(0)).scale(3).unwrap(),
            d => Dim::constant(d),
        }
    }

    fn ops(nodes: Vec<(TensorOp, &[i64])>) -> GroupOps {
        let last = nodes.len() - 1;
        GroupOps {
            nodes: nodes
                .into_iter()
                .map(|(op, shape)| OpNode {
                    op,
                    dtype: DType::F32,
                    shape: shape.iter().map(|&d| dim(d)).collect(),
                    ir: 0,
                })
                .collect(),
            stores: vec![Store { node: OpRef(last as u32), tensor: TensorId(9) }],
        }
    }

    fn r(k: u32) -> OpRef {
        OpRef(k)
    }

    const B: i64 = -1;

    #[test]
    fn nodes_keeping_the_batch_axis_are_sliced_and_others_whole() {
        // Attention's scores plus a scale and a bias row: q [B, 3, 4] @ permute(k [B, 5, 4]) * 0.5 + b [5].
        let scores = ops(vec![
            (TensorOp::Tensor(TensorId(0)), &[B, 3, 4]),
            (TensorOp::Tensor(TensorId(1)), &[B, 5, 4]),
            (TensorOp::Permute(r(1), vec![0, 2, 1]), &[B, 4, 5]),
            (TensorOp::MatMul(r(0), r(2)), &[B, 3, 5]),
            (TensorOp::Constant(crate::ops::Scalar::Float(0.5)), &[]),
            (TensorOp::Broadcast(r(4)), &[B, 3, 5]),
            (TensorOp::Binary(BinaryOp::Mul, r(3), r(5)), &[B, 3, 5]),
            (TensorOp::Tensor(TensorId(2)), &[5]),
            (TensorOp::Broadcast(r(7)), &[B, 3, 5]),
            (TensorOp::Binary(BinaryOp::Add, r(6), r(8)), &[B, 3, 5]),
            (TensorOp::Reduce { op: ReduceOp::Max, input: r(9), axes: vec![2] }, &[B, 3]),
        ]);
        let lead = dim(B);
        assert_eq!(
            sliced_nodes(&scores, &lead),
            Some(vec![true, true, true, true, false, true, true, false, true, true, true])
        );
        // Rows of a batch times a whole weight.
        let rows = ops(vec![
            (TensorOp::Tensor(TensorId(0)), &[B, 4]),
            (TensorOp::Tensor(TensorId(1)), &[4, 6]),
            (TensorOp::MatMul(r(0), r(1)), &[B, 6]),
        ]);
        assert_eq!(sliced_nodes(&rows, &lead), Some(vec![true, false, true]));
    }

    #[test]
    fn nodes_mixing_the_batch_axis_are_refused() {
        let lead = dim(B);
        let reduce = ops(vec![
            (TensorOp::Tensor(TensorId(0)), &[B, 4]),
            (TensorOp::Reduce { op: ReduceOp::Sum, input: r(0), axes: vec![0] }, &[4]),
        ]);
        assert_eq!(sliced_nodes(&reduce, &lead), None, "a sum over the batch");
        let permute =
            ops(vec![(TensorOp::Tensor(TensorId(0)), &[B, 4]), (TensorOp::Permute(r(0), vec![1, 0]), &[4, B])]);
        assert_eq!(sliced_nodes(&permute, &lead), None, "the batch axis moved");
        let merge = ops(vec![(TensorOp::Tensor(TensorId(0)), &[B, 3, 4]), (TensorOp::Reshape(r(0)), &[-2, 4])]);
        assert_eq!(sliced_nodes(&merge, &lead), None, "the batch merged with another axis");
        let contract = ops(vec![
            (TensorOp::Tensor(TensorId(0)), &[3, B]),
            (TensorOp::Tensor(TensorId(1)), &[B, 5]),
            (TensorOp::MatMul(r(0), r(1)), &[3, 5]),
        ]);
        assert_eq!(sliced_nodes(&contract, &lead), None, "a product over the batch");
        let whole_product = ops(vec![
            (TensorOp::Tensor(TensorId(0)), &[4, 4]),
            (TensorOp::MatMul(r(0), r(0)), &[4, 4]),
            (TensorOp::Broadcast(r(1)), &[B, 4, 4]),
        ]);
        assert_eq!(sliced_nodes(&whole_product, &lead), None, "a product computed again for every slice");
    }
}
