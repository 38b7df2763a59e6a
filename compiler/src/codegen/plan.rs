//! From a grouped graph to a runtime `Program`: builds each group's kernel under its stored schedule
//! (verified first, replaced by a tuned one where `Tuning` has an entry) and lists the device tensors
//! (inputs, params, and one per group root) and launches in dependency order. The stages before this one
//! (verification, the IR passes, fusion and scheduling) are in `pipeline.rs`.

use std::collections::HashMap;

use tdsl_runtime::program::{
    Arg, Bound, BoundKind, Check, Launch, Program, SourceLocation, TensorDecl, TensorId, TensorRole,
};

use super::Target;
use super::fuse;
use super::kernel::group_kernel;
use super::schedule::{Schedule, verify};
use super::tuning::Tuning;
use super::{CodegenError, Kernel, KernelArg};
use crate::ir::{Graph, NodeId, Op};
use crate::span::SourceMap;

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

impl Compiled {
    /// Fills in where the op behind each launch's run-time check (and each bound naming an op) was
    /// written (`Check::source`), from the optimized graph's spans, so that a failure on the device leads
    /// to the source line as the interpreter's node does. Checks whose span `sources` does not hold keep
    /// `None`.
    pub fn locate(&mut self, sources: &SourceMap) {
        let checks = self.program.launches.iter_mut().flat_map(|l| {
            let bound_ops = l.bounds.iter_mut().filter_map(|b| b.op.as_mut());
            l.checks.iter_mut().chain(bound_ops)
        });
        for check in checks {
            let id = NodeId::new(check.node as usize);
            if self.graph.nodes.get(id).is_none() {
                continue;
            }
            check.source = sources.line_column(self.graph.nodes.span(id)).map(|(file, line, column)| SourceLocation {
                file: file.to_string(),
                line,
                column,
            });
        }
    }
}

/// Lowers a verified, optimized `graph` with its fusion decision: one kernel per group under its stored
/// schedule, and the runtime `Program` listing the device tensors (inputs, params, one per stored node) and
/// the launches in group order. Each tiled contraction takes its tile from `tuning` where it has an entry
/// for the kernel (`tuning.rs`): the group's stored schedule is replaced by the same schedule with that tile
/// (`Schedule::with_tile`), so `grouping.schedules` holds what each kernel runs. Every schedule passes
/// `schedule::verify` before its kernel is built. `pipeline::compile_graph` is the caller.
pub fn lower(
    graph: &Graph,
    grouping: &mut fuse::Grouping,
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
    for (group, schedule) in grouping.groups.iter().zip(grouping.schedules.iter_mut()) {
        let checked = |schedule: &Schedule| {
            verify(graph, group, schedule, target).map_err(|error| CodegenError::Internal {
                kernel: super::kernel::kernel_name(graph, group.root),
                message: error.to_string(),
            })
        };
        checked(schedule)?;
        let mut kernel = group_kernel(graph, group, schedule, kernels.len())?;
        // Tuning picks another schedule value for the kernel it knows (by its key under the chosen one).
        if !tuning.tiles.is_empty()
            && let Some(&tile) = tuning.tiles.get(&Tuning::key(kernel.wgsl()))
            && tile != target.tile
            && let Some(tuned) = schedule.with_tile(graph, group, target, tile)
        {
            checked(&tuned)?;
            kernel = group_kernel(graph, group, &tuned, kernels.len())?;
            *schedule = tuned;
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
        let ops = super::ops::group_ops(graph, group, &tensor_of).map_err(|node| CodegenError::Internal {
            kernel: kernel.name.clone(),
            message: format!("the group reads %{}, which has no tensor", node.index()),
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
                .map(|(what, value, max)| {
                    // The loop and sort bounds name their op, so that a refusal leads to the source line.
                    let op = match what {
                        BoundKind::LoopIterations { node } | BoundKind::SortLength { node } => Some(Check {
                            node: *node,
                            op: graph.node(NodeId::new(*node as usize)).op.name().to_string(),
                            source: None,
                        }),
                        _ => None,
                    };
                    Bound { what: *what, value: value.clone(), max: *max, op }
                })
                .collect(),
            requires: kernel.requires.clone(),
            // Sources are filled in by `Compiled::locate`, which has the source map.
            checks: kernel
                .checks
                .iter()
                .map(|&id| Check { node: id.index() as u32, op: graph.node(id).op.name().to_string(), source: None })
                .collect(),
            ops,
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
    let param_tensor = |node: NodeId| {
        tensor_of.get(&node).copied().ok_or_else(|| CodegenError::Internal {
            kernel: graph.name.clone(),
            message: format!("param %{} has no tensor", node.index()),
        })
    };
    for (node, init) in &graph.inits {
        program.inits.push((param_tensor(*node)?, init.clone()));
    }
    for update in &graph.updates {
        program.updates.push(tdsl_runtime::Update { output: update.output, param: param_tensor(update.param)? });
    }
    Ok((program, kernels))
}
