//! A group's ops as the runtime's typed `GroupOps` (`tdsl_runtime::program::GroupOps`): the same nodes the
//! group's kernel computes (stored roots and inline nodes, in graph order), with every operand the group
//! does not compute read as a device tensor. `plan::lower` attaches one to each launch, so the CPU executor
//! runs what the GPU kernel runs: one description, two executors.

use std::collections::HashMap;

use tdsl_runtime::program::{GroupOps, OpNode, OpRef, Store, TensorId, TensorOp};

use super::group::Group;
use crate::ir::{Graph, NodeId, Op};

/// `group`'s ops, reading the tensors `tensor_of` gives for the nodes it does not compute. `None` names a
/// node the group reads that has no tensor (a broken grouping, which the grouping verifier rules out).
pub fn group_ops(graph: &Graph, group: &Group, tensor_of: &HashMap<NodeId, TensorId>) -> Result<GroupOps, NodeId> {
    let mut members: Vec<NodeId> = group.roots().chain(group.inline.iter().copied()).collect();
    members.sort();
    members.dedup();
    let mut ops = GroupOps::default();
    let mut refs: HashMap<NodeId, OpRef> = HashMap::new();
    let push = |ops: &mut GroupOps, id: NodeId, op: TensorOp| {
        let node = graph.node(id);
        let r = OpRef(ops.nodes.len() as u32);
        ops.nodes.push(OpNode { op, dtype: node.ty.dtype, shape: node.ty.shape.clone(), ir: id.index() as u32 });
        r
    };
    for &id in &members {
        for operand in graph.node(id).op.operands() {
            if group.contains(operand) || refs.contains_key(&operand) {
                continue;
            }
            let tensor = *tensor_of.get(&operand).ok_or(operand)?;
            let r = push(&mut ops, operand, TensorOp::Tensor(tensor));
            refs.insert(operand, r);
        }
        let op = tensor_op(&graph.node(id).op, &|n| refs[&n]).ok_or(id)?;
        let r = push(&mut ops, id, op);
        refs.insert(id, r);
    }
    for root in group.roots() {
        let tensor = *tensor_of.get(&root).ok_or(root)?;
        ops.stores.push(Store { node: refs[&root], tensor });
    }
    Ok(ops)
}

/// `op` with its operands as `r(operand)`; `None` for the graph's inputs and params, which a group never
/// computes (they are tensors).
fn tensor_op(op: &Op, r: &dyn Fn(NodeId) -> OpRef) -> Option<TensorOp> {
    Some(match op {
        Op::Input { .. } | Op::Param { .. } => return None,
        Op::Constant(value) => TensorOp::Constant(*value),
        Op::DimValue(dim) => TensorOp::DimValue(dim.clone()),
        Op::Unary(u, a) => TensorOp::Unary(*u, r(*a)),
        Op::Binary(b, x, y) => TensorOp::Binary(*b, r(*x), r(*y)),
        Op::Select { cond, on_true, on_false } => {
            TensorOp::Select { cond: r(*cond), on_true: r(*on_true), on_false: r(*on_false) }
        }
        Op::Cast(a) => TensorOp::Cast(r(*a)),
        Op::Broadcast(a) => TensorOp::Broadcast(r(*a)),
        Op::Reduce { op, input, axes } => TensorOp::Reduce { op: *op, input: r(*input), axes: axes.clone() },
        Op::ArgReduce { op, input, axis } => TensorOp::ArgReduce { op: *op, input: r(*input), axis: *axis },
        Op::Scan { op, input, axis, reverse } => {
            TensorOp::Scan { op: *op, input: r(*input), axis: *axis, reverse: *reverse }
        }
        Op::MatMul(a, b) => TensorOp::MatMul(r(*a), r(*b)),
        Op::Permute(a, perm) => TensorOp::Permute(r(*a), perm.clone()),
        Op::Reshape(a) => TensorOp::Reshape(r(*a)),
        Op::Slice { input, axis, start, step } => {
            TensorOp::Slice { input: r(*input), axis: *axis, start: start.clone(), step: *step }
        }
        Op::Concat { inputs, axis } => TensorOp::Concat { inputs: inputs.iter().map(|&i| r(i)).collect(), axis: *axis },
        Op::Gather { table, indices, axis } => TensorOp::Gather { table: r(*table), indices: r(*indices), axis: *axis },
        Op::TakeAlongAxis { input, indices, axis } => {
            TensorOp::TakeAlongAxis { input: r(*input), indices: r(*indices), axis: *axis }
        }
        Op::ScatterAdd { base, indices, src, axis } => {
            TensorOp::ScatterAdd { base: r(*base), indices: r(*indices), src: r(*src), axis: *axis }
        }
        Op::Argsort { input, axis, descending } => {
            TensorOp::Argsort { input: r(*input), axis: *axis, descending: *descending }
        }
        Op::Map(map) => TensorOp::Map(Box::new(map.to_ops(r))),
    })
}
