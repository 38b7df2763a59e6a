//! From a grouped graph to a runtime `Program`: builds each group's kernel and lists the device tensors
//! (inputs, params, and one per group root) and launches in dependency order. The stages before this one
//! (verification, the IR passes, fusion) are in `pipeline.rs`.

use std::collections::HashMap;

use tdsl_runtime::program::{Arg, Bound, Launch, Program, TensorDecl, TensorId, TensorRole};

use super::Target;
use super::fuse;
use super::kernel::group_kernel;
use super::tuning::Tuning;
use super::{CodegenError, Kernel, KernelArg};
use crate::ir::{Graph, NodeId, Op};

/// A compiled graph: the program the runtime runs and the validated kernels behind its launches
/// (`kernels[i]` is `program.launches[i]`).
#[derive(Debug)]
pub struct Compiled {
    pub program: Program,
    pub kernels: Vec<Kernel>,
    /// The optimized graph the kernels compute (node ids in `grouping` refer to it).
    pub graph: Graph,
    /// The fusion decision: `grouping.groups[i]` is `kernels[i]`.
    pub grouping: fuse::Grouping,
}

/// Lowers a verified, optimized `graph` with its fusion decision: one kernel per group (each tiled
/// contraction taking its tile from `tuning` where it has an entry for the kernel, `tuning.rs`), and the
/// runtime `Program` listing the device tensors (inputs, params, one per stored node) and the launches in
/// group order. `pipeline::compile_graph` is the caller; see there for the stages before this one.
pub fn lower(
    graph: &Graph,
    grouping: &fuse::Grouping,
    target: &Target,
    tuning: &Tuning,
) -> Result<(Program, Vec<Kernel>), CodegenError> {
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
        program.tensors.push(TensorDecl { name, role, dtype: ty.dtype, shape: ty.shape.clone() });
        tensor_of.insert(node, id);
        id
    };
    for &id in &graph.inputs {
        if let Op::Input { name } = &graph.node(id).op {
            let t =
                add_tensor(&mut program, &mut tensor_of, id, format!("input {name}"), TensorRole::Input(name.clone()));
            program.inputs.push(t);
        }
    }
    for &id in &graph.params {
        if let Op::Param { key } = &graph.node(id).op {
            let t =
                add_tensor(&mut program, &mut tensor_of, id, format!("param {key}"), TensorRole::Param(key.clone()));
            program.params.push(t);
        }
    }

    let mut kernels = Vec::new();
    for group in &grouping.groups {
        let mut kernel = group_kernel(graph, group, kernels.len(), target)?;
        if !tuning.tiles.is_empty()
            && let Some(&tile) = tuning.tiles.get(&Tuning::key(kernel.wgsl()))
            && tile != target.tile
            && tile.0 * tile.1 > 1
            && super::tiles::plan(graph, group, tile).is_some()
        {
            kernel = group_kernel(graph, group, kernels.len(), &Target { tile, ..*target })?;
        }
        for id in group.roots() {
            let name = format!("%{} {}", id.index(), graph.node(id).op.name());
            add_tensor(&mut program, &mut tensor_of, id, name, TensorRole::Computed);
        }
        let args = kernel
            .args
            .iter()
            .map(|arg| match arg {
                KernelArg::Read(n) => tensor_of.get(n).copied().map(Arg::Read),
                KernelArg::Write(n) => tensor_of.get(n).copied().map(Arg::Write),
                KernelArg::Uniform(dims) => Some(Arg::Uniform(dims.clone())),
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
            invocations: kernel.invocations.clone(),
            workgroup_size: kernel.workgroup_size,
            bounds: kernel
                .bounds
                .iter()
                .map(|(what, value, max)| Bound { what: what.clone(), value: value.clone(), max: *max })
                .collect(),
            requires: kernel.requires.clone(),
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
    Ok((program, kernels))
}
