//! Loop iterations per invocation, estimated before a kernel exists, so that `Schedule::choose` and
//! `rows::plan` can avoid schedules whose single invocations loop longer than a device runs them: llvmpipe
//! (lavapipe, CI's device) ends every loop of an invocation once it has run 65535 iterations in all, with
//! no error. The estimate counts each loop's trips times the trips of the loops around it, at nominal sizes
//! (every symbol `NOMINAL_SYMBOL`, constants as they are) and errs high (a value read twice is counted
//! twice). The kernel builder counts the exact figure as it emits the loops (`BoundKind::LoopIterations`),
//! which the runtime checks against the device before dispatch: that is the guarantee; this is only the
//! preference.

use std::collections::{BTreeSet, HashMap};

use crate::dim::Dim;
use crate::ir::{Graph, NodeId, Op, ScalarExpr};

/// The loop iterations per invocation a schedule should stay below for the nominal or known sizes:
/// llvmpipe's limit less the runtime's margin (`tdsl_runtime::gpu::LLVMPIPE_LOOP_LIMIT`).
pub const LOOP_BUDGET: i64 = tdsl_runtime::gpu::LLVMPIPE_LOOP_LIMIT;

/// `dim` with every symbol at `NOMINAL_SYMBOL` (saturating at `i64::MAX`).
pub fn nominal(dim: &Dim) -> i64 {
    dim.eval(&|_| tdsl_runtime::exec::NOMINAL_SYMBOL).unwrap_or(i64::MAX).max(0)
}

/// The nominal product of `dims`.
pub fn nominal_count(dims: &[Dim]) -> i64 {
    dims.iter().fold(1i64, |n, d| n.saturating_mul(nominal(d)))
}

/// Estimates the loop iterations of computing one element of a group's nodes inline: `members` are the
/// nodes the kernel computes (others are loaded: no loops), `given` those the schedule supplies (a row
/// kernel's statistics: no loops where they are used).
pub struct ElementLoops<'g> {
    graph: &'g Graph,
    members: &'g dyn Fn(NodeId) -> bool,
    given: &'g BTreeSet<NodeId>,
    memo: HashMap<NodeId, i64>,
}

impl<'g> ElementLoops<'g> {
    pub fn new(graph: &'g Graph, members: &'g dyn Fn(NodeId) -> bool, given: &'g BTreeSet<NodeId>) -> Self {
        ElementLoops { graph, members, given, memo: HashMap::new() }
    }

    /// The nominal loop iterations of one element of `id`: a reduction loops over its reduced elements, a
    /// matmul over `k`, an index-notation reduction over its variables, a scatter-add over its source fiber,
    /// each trip also computing its operands' elements; other ops add their operands' loops.
    pub fn of(&mut self, id: NodeId) -> i64 {
        if self.given.contains(&id) || !(self.members)(id) {
            return 0;
        }
        if let Some(&n) = self.memo.get(&id) {
            return n;
        }
        let graph = self.graph;
        let node = graph.node(id);
        let n = match &node.op {
            Op::Input { .. } | Op::Param { .. } | Op::Constant(_) | Op::DimValue(_) => 0,
            Op::Reduce { input, axes, .. } => {
                let shape = &graph.node(*input).ty.shape;
                let reduced: Vec<Dim> = axes.iter().map(|&a| shape[a].clone()).collect();
                nominal_count(&reduced).saturating_mul(self.of(*input).saturating_add(1))
            }
            Op::ArgReduce { input, axis, .. } | Op::Scan { input, axis, .. } => {
                let count = nominal(&graph.node(*input).ty.shape[*axis]);
                count.saturating_mul(self.of(*input).saturating_add(1))
            }
            Op::MatMul(a, c) => {
                let k = graph.node(*a).ty.shape.last().map_or(1, nominal);
                k.saturating_mul(self.of(*a).saturating_add(self.of(*c)).saturating_add(1))
            }
            Op::ScatterAdd { base, indices, src, axis } => {
                let j = nominal(&graph.node(*src).ty.shape[*axis]);
                let per_trip = self.of(*indices).saturating_add(self.of(*src)).saturating_add(1);
                self.of(*base).saturating_add(j.saturating_mul(per_trip))
            }
            Op::Map(map) => {
                let inputs = map.inputs.iter().fold(0i64, |n, &i| n.saturating_add(self.of(i)));
                map.exprs.iter().fold(inputs, |n, (_, s)| match &s.expr {
                    ScalarExpr::Reduce { vars, .. } => {
                        let extents: Vec<Dim> = vars.iter().map(|v| map.extents[v.0 as usize].clone()).collect();
                        n.saturating_add(nominal_count(&extents).saturating_mul(inputs.saturating_add(1)))
                    }
                    _ => n,
                })
            }
            op => op.operands().iter().fold(0i64, |n, &o| n.saturating_add(self.of(o))),
        };
        self.memo.insert(id, n);
        n
    }
}
