//! From a verified graph to a runtime `Program`: decides the kernel groups, builds each group's kernel and
//! lists the device tensors (inputs, params, and one per group root) and launches in dependency order.
//!
//! Grouping today: every live computed node is the root of its own group; `Constant` and `DimValue` nodes
//! are computed inline by their users (they cost a literal or a uniform load) and get a group of their own
//! only when they are outputs. Nodes no output depends on get no kernel.

use std::collections::{BTreeSet, HashMap};

use tdsl_runtime::program::{Arg, Bound, DimExpr, Launch, Program, TensorDecl, TensorId, TensorRole};

use super::kernel::group_kernel;
use super::{CodegenError, Kernel, KernelArg, WORKGROUP_SIZE};
use crate::dim::Dim;
use crate::ir::{Graph, NodeId, Op};

/// A compiled graph: the program the runtime runs and the validated kernels behind its launches
/// (`kernels[i]` is `program.launches[i]`).
#[derive(Debug)]
pub struct Compiled {
    pub program: Program,
    pub kernels: Vec<Kernel>,
}

/// Compiles `graph`, which must verify (anything else is an internal error: codegen takes verified IR only).
pub fn compile(graph: &Graph) -> Result<Compiled, CodegenError> {
    crate::ir::verify(graph).map_err(|errors| CodegenError::Internal {
        kernel: graph.name.clone(),
        message: format!(
            "codegen was given an IR graph that does not verify: {}",
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
        ),
    })?;
    let live = live_nodes(graph);
    let is_output: BTreeSet<NodeId> = graph.outputs.iter().map(|o| o.node).collect();

    let mut program = Program {
        name: graph.name.clone(),
        symbols: graph.symbols.iter().map(|s| s.name.clone()).collect(),
        ..Program::default()
    };
    let mut tensor_of: HashMap<NodeId, TensorId> = HashMap::new();
    let add_tensor = |program: &mut Program,
                      tensor_of: &mut HashMap<NodeId, TensorId>,
                      node: NodeId,
                      name: String,
                      role: TensorRole| {
        let ty = &graph.node(node).ty;
        let id = TensorId(program.tensors.len() as u32);
        program.tensors.push(TensorDecl { name, role, dtype: ty.dtype, shape: ty.shape.iter().map(to_dim_expr).collect() });
        tensor_of.insert(node, id);
        id
    };
    for &id in &graph.inputs {
        if let Op::Input { name } = &graph.node(id).op {
            let t = add_tensor(&mut program, &mut tensor_of, id, format!("input {name}"), TensorRole::Input(name.clone()));
            program.inputs.push(t);
        }
    }
    for &id in &graph.params {
        if let Op::Param { key } = &graph.node(id).op {
            let t = add_tensor(&mut program, &mut tensor_of, id, format!("param {key}"), TensorRole::Param(key.clone()));
            program.params.push(t);
        }
    }

    let mut kernels = Vec::new();
    for (id, node) in graph.nodes.iter() {
        let inline_only = matches!(node.op, Op::Constant(_) | Op::DimValue(_)) && !is_output.contains(&id);
        if !live[id.index()] || inline_only || matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
            continue;
        }
        let inline: BTreeSet<NodeId> = node
            .op
            .operands()
            .into_iter()
            .filter(|&o| matches!(graph.node(o).op, Op::Constant(_) | Op::DimValue(_)))
            .collect();
        let kernel = group_kernel(graph, id, &inline, kernels.len())?;
        add_tensor(&mut program, &mut tensor_of, id, format!("%{} {}", id.index(), node.op.name()), TensorRole::Computed);
        let args = kernel
            .args
            .iter()
            .map(|arg| match arg {
                KernelArg::Read(n) => tensor_of.get(n).copied().map(Arg::Read),
                KernelArg::Write(n) => tensor_of.get(n).copied().map(Arg::Write),
                KernelArg::Uniform(dims) => Some(Arg::Uniform(dims.iter().map(to_dim_expr).collect())),
                KernelArg::Status => Some(Arg::Status),
            })
            .collect::<Option<Vec<Arg>>>()
            .ok_or_else(|| CodegenError::Internal {
                kernel: kernel.name.clone(),
                message: "the kernel reads a node that has no tensor".to_string(),
            })?;
        program.launches.push(Launch {
            name: kernel.name.clone(),
            wgsl: kernel.wgsl().to_string(),
            spirv: kernel.spirv().to_vec(),
            args,
            invocations: to_dim_expr(&kernel.invocations),
            workgroup_size: WORKGROUP_SIZE,
            bounds: kernel
                .bounds
                .iter()
                .map(|(what, value, max)| Bound { what: what.clone(), value: to_dim_expr(value), max: *max })
                .collect(),
        });
        kernels.push(kernel);
    }
    for output in &graph.outputs {
        let tensor = tensor_of.get(&output.node).copied().ok_or_else(|| CodegenError::Internal {
            kernel: graph.name.clone(),
            message: format!("output `{}` has no tensor", output.name),
        })?;
        program.outputs.push((output.name.clone(), tensor));
    }
    Ok(Compiled { program, kernels })
}

/// `live[i]`: node `i` contributes to an output.
fn live_nodes(graph: &Graph) -> Vec<bool> {
    let mut live = vec![false; graph.nodes.len()];
    for output in &graph.outputs {
        live[output.node.index()] = true;
    }
    for (id, node) in graph.nodes.iter().collect::<Vec<_>>().into_iter().rev() {
        if live[id.index()] {
            for operand in node.op.operands() {
                live[operand.index()] = true;
            }
        }
    }
    live
}

/// The runtime's form of a dimension.
pub fn to_dim_expr(dim: &Dim) -> DimExpr {
    dim.to_expr()
}
