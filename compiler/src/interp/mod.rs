//! The CPU reference interpreter: runs a verified `ir::Graph` on host tensors. It is the executable
//! definition of every op (spec/ops.md describes what it does; where they disagree, this is right), and the
//! oracle GPU results are compared against, so it favours exactness and clear errors over speed while
//! staying fast enough for models of a few megabytes (matmul and `Map` bodies work on whole rows/batches).
//!
//! `run` verifies the graph, binds symbols from the actual shapes (`bind.rs`), evaluates the nodes in order
//! and frees each intermediate after its last use. It never panics on bad input: malformed graphs, wrong
//! tensors, out-of-range gathers and loads, and dimension overflow are all `RunError`s.
//!
//! Each op's kernel is the runtime's `tdsl_runtime::eval` (host buffers, elementwise arithmetic, data
//! movement, take-along-axis, scatter-add, argsort, reductions, matmul, index notation), shared with the CPU
//! executor, which runs it where it has no faster kernel; this module walks the graph and `bind.rs` binds
//! the symbols. The public `Tensor` is the runtime's (`tdsl_runtime::tensor`), re-exported here.

mod bind;

#[cfg(test)]
pub(crate) mod tests;

pub use bind::{BindError, Binding, Site, bind_symbols, signature};
/// The host tensor lives in the runtime (`tdsl_runtime::tensor`), which reads and writes it; the
/// interpreter takes and returns it.
pub use tdsl_runtime::tensor::{MAX_ELEMENTS, ShapeMismatch, Tensor, TensorData, element_count};

use crate::ir::verify::VerifyError;
use crate::ir::{Graph, NodeId, Op, verify};
use kernels::KindMismatch;
use std::collections::HashMap;
use tdsl_runtime::eval::{along, kernels, layout, map, reduce, values};
use tdsl_runtime::program::OpRef;
use values::{Lit, Val, Vals};

/// Why a graph could not be run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("the graph is malformed:{}", list(.0))]
    Malformed(Vec<VerifyError>),
    #[error("{}", bind::bind_message(.0))]
    Bind(Vec<BindError>),
    /// A run-time failure of one node: an index out of range, a dimension that overflows or is below 1.
    #[error("%{} ({op}): {message}", node.index())]
    Node { node: NodeId, op: &'static str, message: String },
}

fn list(errors: &[VerifyError]) -> String {
    errors.iter().map(|e| format!("\n  {e}")).collect()
}

/// Runs `graph` on `inputs` (in signature order) with `params` (by key); returns the outputs in
/// `graph.outputs` order.
pub fn run(graph: &Graph, inputs: &[Tensor], params: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, RunError> {
    verify(graph).map_err(RunError::Malformed)?;
    let syms = bind_symbols(graph, inputs, params)?;
    let shapes = node_shapes(graph, &syms)?;

    let len = graph.nodes.len();
    let mut is_output = vec![false; len];
    for o in &graph.outputs {
        is_output[o.node.index()] = true;
    }
    let mut last_use: Vec<Option<usize>> = vec![None; len];
    for (id, node) in graph.nodes.iter() {
        for o in node.op.operands() {
            last_use[o.index()] = Some(id.index());
        }
    }
    let input_pos: HashMap<NodeId, usize> = graph.inputs.iter().enumerate().map(|(i, &id)| (id, i)).collect();

    let mut values: Vec<Option<Val>> = (0..len).map(|_| None).collect();
    for (id, node) in graph.nodes.iter() {
        let fail = |message: String| RunError::Node { node: id, op: node.op.name(), message };
        let i = id.index();
        let shape = shapes[i].clone();
        // An operand used for the last time by a `Reshape` can give its buffer away instead of being copied.
        let data = if let Op::Reshape(a) = &node.op
            && last_use[a.index()] == Some(i)
            && !is_output[a.index()]
            && let Some(val) = values[a.index()].take()
        {
            val.data
        } else {
            let ctx = NodeCx { graph, values: &values, syms: &syms, inputs, params, input_pos: &input_pos };
            eval_node(&ctx, id, &shape).map_err(fail)?
        };
        values[i] = Some(Val { shape, data });
        for o in node.op.operands() {
            if last_use[o.index()] == Some(i) && !is_output[o.index()] {
                values[o.index()] = None;
            }
        }
        if last_use[i].is_none() && !is_output[i] {
            values[i] = None;
        }
    }

    let mut outputs = Vec::with_capacity(graph.outputs.len());
    for o in &graph.outputs {
        let node = &graph.nodes[o.node];
        let Some(val) = values[o.node.index()].clone() else {
            return Err(RunError::Node {
                node: o.node,
                op: node.op.name(),
                message: "internal error: output was freed".into(),
            });
        };
        outputs.push(val.data.into_tensor(node.ty.dtype, val.shape));
    }
    Ok(outputs)
}

/// Every node's concrete shape, checking that each dimension is at least 1 and each tensor fits.
fn node_shapes(graph: &Graph, syms: &[i64]) -> Result<Vec<Vec<usize>>, RunError> {
    let env = |s: crate::dim::SymId| syms.get(s.0 as usize).copied().unwrap_or(0);
    let mut shapes = Vec::with_capacity(graph.nodes.len());
    for (id, node) in graph.nodes.iter() {
        let fail = |message: String| RunError::Node { node: id, op: node.op.name(), message };
        let mut shape = Vec::with_capacity(node.ty.rank());
        for (axis, dim) in node.ty.shape.iter().enumerate() {
            let text = graph.dim_to_string(dim);
            let value =
                dim.eval(&env).ok_or_else(|| fail(format!("dimension {axis} ({text}) overflows 64-bit integers")))?;
            if value < 1 {
                return Err(fail(format!("dimension {axis} ({text}) is {value}; every dimension must be at least 1")));
            }
            shape.push(usize::try_from(value).map_err(|_| fail(format!("dimension {axis} ({text}) is too large")))?);
        }
        match element_count(&shape) {
            Some(n) if n <= MAX_ELEMENTS => {}
            _ => {
                let ty = graph.type_to_string(&node.ty);
                return Err(fail(format!("{ty} = {shape:?} has more than {MAX_ELEMENTS} elements")));
            }
        }
        shapes.push(shape);
    }
    Ok(shapes)
}

struct NodeCx<'a> {
    graph: &'a Graph,
    values: &'a [Option<Val>],
    syms: &'a [i64],
    inputs: &'a [Tensor],
    params: &'a HashMap<String, Tensor>,
    input_pos: &'a HashMap<NodeId, usize>,
}

impl NodeCx<'_> {
    fn get(&self, id: NodeId) -> Result<&Val, String> {
        self.values
            .get(id.index())
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("internal error: operand %{} is not available", id.index()))
    }
}

fn internal(_: KindMismatch) -> String {
    "internal error: operands have the wrong storage kind".to_string()
}

/// The value of one node of shape `shape`.
fn eval_node(cx: &NodeCx, id: NodeId, shape: &[usize]) -> Result<Vals, String> {
    let node = &cx.graph.nodes[id];
    let dtype = node.ty.dtype;
    let n: usize = shape.iter().product();
    let eval_dim = |dim: &crate::dim::Dim| {
        dim.eval(&|s| cx.syms.get(s.0 as usize).copied().unwrap_or(0))
            .ok_or_else(|| "dimension arithmetic overflows 64-bit integers".to_string())
    };
    Ok(match &node.op {
        Op::Input { .. } => {
            let pos = cx.input_pos.get(&id).ok_or("internal error: input not in the signature")?;
            Vals::from_tensor(&cx.inputs[*pos])
        }
        Op::Param { key } => Vals::from_tensor(cx.params.get(key).ok_or("internal error: param not bound")?),
        Op::Constant(s) => Vals::splat(Lit::from_scalar(*s, dtype), 1),
        Op::DimValue(dim) => {
            let value = eval_dim(dim)?;
            let lit = Lit::from_int(value, dtype).ok_or_else(|| {
                format!("dimension {} = {value} does not fit {}", cx.graph.dim_to_string(dim), dtype.name())
            })?;
            Vals::splat(lit, 1)
        }
        Op::Unary(op, a) => {
            let mut out = Vals::zeros(dtype, n);
            kernels::unary(*op, dtype, &cx.get(*a)?.data, &mut out, n).map_err(internal)?;
            out
        }
        Op::Binary(op, a, b) => {
            let mut out = Vals::zeros(dtype, n);
            kernels::binary(*op, dtype, &cx.get(*a)?.data, &cx.get(*b)?.data, &mut out, n).map_err(internal)?;
            out
        }
        Op::Select { cond, on_true, on_false } => {
            let mut out = Vals::zeros(dtype, n);
            let (c, t, f) = (&cx.get(*cond)?.data, &cx.get(*on_true)?.data, &cx.get(*on_false)?.data);
            kernels::select(c, t, f, &mut out, n).map_err(internal)?;
            out
        }
        Op::Cast(a) => {
            let mut out = Vals::zeros(dtype, n);
            kernels::cast(&cx.get(*a)?.data, dtype, &mut out, n).map_err(internal)?;
            out
        }
        Op::Broadcast(a) => {
            let a = cx.get(*a)?;
            layout::broadcast(&a.data, &a.shape, shape)
        }
        Op::Reduce { op, input, axes } => {
            let a = cx.get(*input)?;
            reduce::reduce(*op, dtype, &a.data, &a.shape, axes).map_err(internal)?
        }
        Op::ArgReduce { op, input, axis } => {
            let a = cx.get(*input)?;
            reduce::arg_reduce(*op, &a.data, &a.shape, *axis).map_err(internal)?
        }
        Op::Scan { op, input, axis, reverse } => {
            let a = cx.get(*input)?;
            reduce::scan(*op, dtype, &a.data, &a.shape, *axis, *reverse).map_err(internal)?
        }
        Op::MatMul(a, b) => {
            let (a, b) = (cx.get(*a)?, cx.get(*b)?);
            reduce::matmul(dtype, &a.data, &a.shape, &b.data, &b.shape).map_err(internal)?
        }
        Op::Permute(a, perm) => {
            let a = cx.get(*a)?;
            layout::permute(&a.data, &a.shape, perm)
        }
        Op::Reshape(a) => cx.get(*a)?.data.clone(),
        Op::Slice { input, axis, start, step } => {
            let a = cx.get(*input)?;
            layout::slice(&a.data, &a.shape, *axis, eval_dim(start)?, *step, shape[*axis])?
        }
        Op::Concat { inputs, axis } => {
            let mut parts = Vec::with_capacity(inputs.len());
            for &i in inputs {
                let v = cx.get(i)?;
                parts.push((&v.data, &v.shape[..]));
            }
            layout::concat(&parts, *axis).ok_or_else(|| internal(KindMismatch))?
        }
        Op::Gather { table, indices, axis } => {
            let (t, idx) = (cx.get(*table)?, cx.get(*indices)?);
            layout::gather(&t.data, &t.shape, &idx.data, *axis)
                .map_err(|bad| bad_index(&bad, &idx.shape, *indices, *axis, "table", t.shape[*axis]))?
        }
        Op::TakeAlongAxis { input, indices, axis } => {
            let (x, idx) = (cx.get(*input)?, cx.get(*indices)?);
            along::take_along_axis(&x.data, &x.shape, &idx.data, &idx.shape, *axis)
                .map_err(|bad| bad_index(&bad, &idx.shape, *indices, *axis, "input", x.shape[*axis]))?
        }
        Op::ScatterAdd { base, indices, src, axis } => {
            let (b, idx, s) = (cx.get(*base)?, cx.get(*indices)?, cx.get(*src)?);
            along::scatter_add(dtype, &b.data, &b.shape, &idx.data, &s.data, &s.shape, *axis)
                .map_err(|bad| bad_index(&bad, &idx.shape, *indices, *axis, "base", b.shape[*axis]))?
                .ok_or_else(|| internal(KindMismatch))?
        }
        Op::Argsort { input, axis, descending } => {
            let x = cx.get(*input)?;
            along::argsort(&x.data, &x.shape, *axis, *descending).ok_or_else(|| internal(KindMismatch))?
        }
        Op::Map(map) => {
            let mut inputs = Vec::with_capacity(map.inputs.len());
            for &i in &map.inputs {
                inputs.push(cx.get(i)?);
            }
            map::run_map(&map.to_ops(|_| OpRef(0)), dtype, shape, &inputs, cx.syms)?
        }
    })
}

/// The message of an index out of range: its value, its position in the indices tensor `indices` (of
/// `shape`) and the `what` axis it missed.
fn bad_index(bad: &layout::BadIndex, shape: &[usize], indices: NodeId, axis: usize, what: &str, size: usize) -> String {
    let mut position = vec![0; shape.len()];
    let mut rest = bad.position;
    for (p, &d) in position.iter_mut().zip(shape).rev() {
        *p = rest % d;
        rest /= d;
    }
    format!(
        "index {} at {position:?} of the indices %{} is out of range for axis {axis} of the {what} (size {size})",
        bad.value,
        indices.index(),
    )
}
