//! `tdslc explain`: what the optimizer made of a model, kernel by kernel: the IR ops each kernel computes, its
//! grid, the bytes it reads and writes at given symbol sizes, and for every producer it reads from another
//! kernel why that edge was not fused; plus the device memory the run takes after buffer sharing. Printed as
//! text or as JSON (`{"model", "fused", "kernels": [{"name", "ops", "invocations", "grid", "bytes_read",
//! "bytes_written", "unfused": [{"producer", "kernel", "reason"}]}], "peak_bytes", "unshared_bytes",
//! "stored": [{"tensor", "type", "bytes"}]}`); `stored` lists the intermediate tensors kept between
//! kernels (the activations a backward pass reads among them) with their bytes.

use std::collections::HashMap;

use serde_json::json;
use tdsl_runtime::program::Arg;
use tdsl_runtime::{fold_grid, plan_memory};

use crate::codegen::Compiled;
use crate::dim::{Dim, SymId};
use crate::interp::MAX_ELEMENTS;
use crate::ir::{Graph, NodeId, Op, ScalarExpr, ScalarId, VarId};

/// One kernel of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelReport {
    pub name: String,
    /// Op names of the nodes it computes, in dependency order (constants left out).
    pub ops: Vec<String>,
    pub invocations: u64,
    pub grid: [u32; 3],
    /// Device bytes of the distinct tensors it reads.
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Arithmetic operations of the IR nodes it computes (`flops`), each counted once.
    pub flops: u64,
    /// (producer description, producing kernel, reason) for every operand computed by another kernel.
    pub unfused: Vec<(String, String, String)>,
}

/// The whole report for one model at given symbol sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub model: String,
    pub fused: bool,
    /// `name = value` of every symbol the numbers assume.
    pub sizes: Vec<(String, i64)>,
    pub kernels: Vec<KernelReport>,
    pub peak_bytes: u64,
    pub unshared_bytes: u64,
    /// The intermediate tensors kernels store for later kernels (activations: what a backward pass reads of
    /// the forward, among others), as (name, type, bytes), largest first; inputs, params and outputs are
    /// left out.
    pub stored: Vec<(String, String, u64)>,
}

/// Why a program cannot be explained at the given sizes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("the size of {tensor} overflows")]
    Overflow { tensor: String },
    #[error("{tensor} would have {elements} elements at these sizes, more than the {MAX_ELEMENTS} a tensor may have")]
    TooLarge { tensor: String, elements: u64 },
    #[error(
        "kernel `{kernel}` would need {invocations} invocations at these sizes, more than a grid of 65535 x 65535 \
         workgroups of {workgroup_size} holds"
    )]
    GridTooLarge { kernel: String, invocations: String, workgroup_size: u32 },
}

/// Explains `compiled` with symbol `i` = `sizes[i]`.
pub fn explain(compiled: &Compiled, sizes: &[i64], fused: bool) -> Result<Report, ExplainError> {
    let program = &compiled.program;
    let graph = &compiled.graph;
    let bytes: Vec<u64> = program
        .tensors
        .iter()
        .map(|t| {
            let count = t.shape.iter().try_fold(1u64, |n, d| {
                d.eval_at(sizes).and_then(|v| u64::try_from(v).ok()).and_then(|v| n.checked_mul(v))
            });
            match count {
                Some(c) if c > MAX_ELEMENTS as u64 => {
                    Err(ExplainError::TooLarge { tensor: t.name.clone(), elements: c })
                }
                Some(c) => Ok((c * t.dtype.size() as u64).max(4)),
                None => Err(ExplainError::Overflow { tensor: t.name.clone() }),
            }
        })
        .collect::<Result<_, _>>()?;
    let memory = plan_memory(program, &bytes);
    let kernel_of_root: HashMap<_, usize> =
        compiled.grouping.groups.iter().enumerate().flat_map(|(k, g)| g.roots().map(move |r| (r, k))).collect();

    let mut kernels = Vec::new();
    for ((launch, group), kernel) in program.launches.iter().zip(&compiled.grouping.groups).zip(&compiled.kernels) {
        let mut members: Vec<_> = group.inline.iter().copied().chain(group.roots()).collect();
        members.sort();
        let ops = members
            .iter()
            .filter(|&&id| !matches!(graph.node(id).op, Op::Constant(_) | Op::DimValue(_)))
            .map(|&id| graph.node(id).op.name().to_string())
            .collect();
        let too_large = |invocations: String| ExplainError::GridTooLarge {
            kernel: kernel.name.clone(),
            invocations,
            workgroup_size: launch.workgroup_size,
        };
        let invocations = launch
            .invocations
            .eval_at(sizes)
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| too_large("more than 2^63".to_string()))?;
        let grid = fold_grid(invocations.div_ceil(u64::from(launch.workgroup_size)), 65535)
            .ok_or_else(|| too_large(invocations.to_string()))?;
        let mut bytes_read = 0;
        let mut bytes_written = 0;
        for arg in &launch.args {
            match arg {
                Arg::Read(t) => bytes_read += bytes[t.0 as usize],
                Arg::Write(t) => bytes_written += bytes[t.0 as usize],
                _ => {}
            }
        }
        let unfused = compiled
            .grouping
            .unfused
            .iter()
            .filter(|u| group.contains(u.consumer))
            .map(|u| {
                let producer = format!("%{} {}", u.producer.index(), graph.node(u.producer).op.name());
                let from =
                    kernel_of_root.get(&u.producer).map_or_else(String::new, |&k| program.launches[k].name.clone());
                (producer, from, u.reason.to_string())
            })
            .collect();
        let flops = members.iter().map(|&id| flops(graph, id, sizes)).sum();
        kernels.push(KernelReport {
            name: kernel.name.clone(),
            ops,
            invocations,
            grid,
            bytes_read,
            bytes_written,
            flops,
            unfused,
        });
    }
    let mut stored: Vec<(String, String, u64)> = program
        .tensors
        .iter()
        .enumerate()
        .filter(|(i, t)| {
            matches!(t.role, tdsl_runtime::program::TensorRole::Computed)
                && !program.outputs.iter().any(|(_, o)| o.0 as usize == *i)
        })
        .map(|(i, t)| (t.name.clone(), program.type_string(t), bytes[i]))
        .collect();
    stored.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    Ok(Report {
        model: program.name.clone(),
        fused,
        sizes: program.symbols.iter().cloned().zip(sizes.iter().copied()).collect(),
        kernels,
        peak_bytes: memory.peak_bytes,
        unshared_bytes: memory.unshared_bytes,
        stored,
    })
}

impl Report {
    pub fn text(&self) -> String {
        let sizes: Vec<String> = self.sizes.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let mut out = format!(
            "model {}: {} kernel(s){}{}; device memory {} (without buffer sharing {})\n",
            self.model,
            self.kernels.len(),
            if self.fused { "" } else { " (fusion off)" },
            if sizes.is_empty() { String::new() } else { format!(" at {}", sizes.join(", ")) },
            human(self.peak_bytes),
            human(self.unshared_bytes),
        );
        for (k, kernel) in self.kernels.iter().enumerate() {
            out.push_str(&format!(
                "{k:>3} {}: {} invocation(s), grid {:?}, reads {}, writes {}\n      ops: {}\n",
                kernel.name,
                kernel.invocations,
                kernel.grid,
                human(kernel.bytes_read),
                human(kernel.bytes_written),
                kernel.ops.join(", ")
            ));
            for (producer, from, reason) in &kernel.unfused {
                out.push_str(&format!("      not fused: {producer} (from {from}): {reason}\n"));
            }
        }
        let total: u64 = self.stored.iter().map(|s| s.2).sum();
        out.push_str(&format!("  stored between kernels: {} tensor(s), {}\n", self.stored.len(), human(total)));
        for (name, ty, bytes) in &self.stored {
            out.push_str(&format!("      {name}: {ty}, {}\n", human(*bytes)));
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "model": self.model,
            "fused": self.fused,
            "sizes": self.sizes.iter().map(|(n, v)| (n.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "kernels": self.kernels.iter().map(|k| json!({
                "name": k.name,
                "ops": k.ops,
                "invocations": k.invocations,
                "grid": k.grid,
                "bytes_read": k.bytes_read,
                "bytes_written": k.bytes_written,
                "flops": k.flops,
                "unfused": k.unfused.iter().map(|(p, f, r)| json!({"producer": p, "kernel": f, "reason": r})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "peak_bytes": self.peak_bytes,
            "unshared_bytes": self.unshared_bytes,
            "stored": self.stored.iter().map(|(n, t, b)| json!({"tensor": n, "type": t, "bytes": b})).collect::<Vec<_>>(),
        })
    }
}

/// The arithmetic operations computing node `id` takes at symbol sizes `sizes`: one per element for
/// elementwise ops, one per input element for reductions, two per multiply-add for matmul, and for index
/// notation one per scalar op per evaluation (a reduction's body once per reduced index). Layout ops,
/// loads and constants cost nothing. Saturates instead of overflowing.
pub fn flops(graph: &Graph, id: NodeId, sizes: &[i64]) -> u64 {
    let size =
        |d: &Dim| d.eval(&|s: SymId| sizes.get(s.0 as usize).copied().unwrap_or(0)).map_or(0, |v| v.max(0) as u64);
    let count = |shape: &[Dim]| shape.iter().fold(1u64, |n, d| n.saturating_mul(size(d)));
    let node = graph.node(id);
    let elements = count(&node.ty.shape);
    match &node.op {
        Op::Unary(..) | Op::Binary(..) | Op::Select { .. } | Op::Cast(_) => elements,
        Op::Reduce { input, .. } | Op::ArgReduce { input, .. } => count(&graph.node(*input).ty.shape),
        // The scan kernel adds each element twice (its chunk's total, then its running value).
        Op::Scan { .. } => elements.saturating_mul(2),
        Op::MatMul(a, _) => {
            let k = graph.node(*a).ty.shape.last().map_or(1, size);
            elements.saturating_mul(k).saturating_mul(2)
        }
        Op::Map(map) => {
            let extent =
                |vars: &[VarId]| vars.iter().fold(1u64, |n, v| n.saturating_mul(size(&map.extents[v.0 as usize])));
            // Evaluations of each scalar node: the output's elements, times every enclosing reduction.
            let mut times = vec![0u64; map.exprs.len()];
            times[map.body.index()] = elements;
            let mut total = 0u64;
            for s in (0..map.exprs.len()).rev() {
                let n = times[s];
                let mut visit = |operand: ScalarId, n: u64| times[operand.index()] = times[operand.index()].max(n);
                match &map.exprs[ScalarId::new(s)].expr {
                    ScalarExpr::Unary(_, a) | ScalarExpr::Cast(a) => {
                        total = total.saturating_add(n);
                        visit(*a, n);
                    }
                    ScalarExpr::Binary(_, a, b) => {
                        total = total.saturating_add(n);
                        visit(*a, n);
                        visit(*b, n);
                    }
                    ScalarExpr::Select { cond, on_true, on_false } => {
                        total = total.saturating_add(n);
                        for operand in [*cond, *on_true, *on_false] {
                            visit(operand, n);
                        }
                    }
                    ScalarExpr::Reduce { vars, body, .. } => {
                        let inner = n.saturating_mul(extent(vars));
                        total = total.saturating_add(inner);
                        visit(*body, inner);
                    }
                    ScalarExpr::Load { .. } | ScalarExpr::Var(_) | ScalarExpr::Dim(_) | ScalarExpr::Const(_) => {}
                }
            }
            total
        }
        _ => 0,
    }
}

/// `1.5 MiB`, `12.0 KiB`, `16 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
