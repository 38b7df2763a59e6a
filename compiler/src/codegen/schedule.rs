//! How a group runs: its `Schedule`, a value chosen once per group after fusion (`Schedule::choose`, from
//! the device profile) and stored with the grouping (`fuse::Grouping::schedules`). The kernel builder
//! (`kernel.rs`) and tuning (`plan.rs`, `lower`) take the stored value and never plan again; fusion
//! only asks `choose` whether a merged group would be schedulable (as a row kernel, as a tiled
//! contraction) before it merges. `verify` checks a schedule against its group and target; `lower`
//! runs it on every schedule it builds a kernel with, so a kernel never runs under an inconsistent one.
//!
//! Each schedule is an analysis deciding whether and how a group runs that way (`rows.rs`, `tiles.rs`;
//! plain and vector kernels need none) and an emitter of its own in `kernel/` (`plain.rs`, `vector.rs`,
//! `rows.rs`, `tile.rs`, `shared.rs`, `sort.rs`, `scan.rs`) that declares its entry-point arguments by
//! name and keeps its own state; the per-element lowering (`value(node, pos)` in `kernel.rs`) is shared by
//! all of them.
//!
//! Adding a schedule (e.g. cooperative-matrix contractions or fused attention):
//! 1. its plan: a type and the analysis deciding whether and how a group runs this way (`fn plan(graph,
//!    group, target) -> Option<Plan>`), with the checks `verify` calls, in a file of `codegen/` like
//!    `rows.rs` and `tiles.rs` (public, as `Schedule` carries it); and its emitter in `kernel/<name>.rs`,
//!    an `Emitter` implementation (`launch`: invocations and workgroup size; `emit`: the body, declaring
//!    its built-ins with `Cx::builtin` and keeping its state to itself);
//! 2. one field in `Target` (`target.rs`) switching it on per device profile, set in `TARGETS`;
//! 3. the wiring, one line each: the variant below, its place in `choose`'s priority, its arms in `verify`,
//!    `vector_storage` and `name`, and its line in `kernel::emitter` (plus `mod <name>;` in `kernel.rs`).
//!
//! Everything else (fusion, the program, bounds, tuning, explain) sees only the `Schedule` value.

use std::collections::BTreeSet;

use super::WORKGROUP_SIZE;
use super::group::Group;
use super::loops::{ElementLoops, LOOP_BUDGET, nominal};
use super::rows::{self, Place, RowPlan};
use super::target::Target;
use super::tiles::{self, K_STEPS, SHARED_BYTES, SharedTile, TilePlan, TileShape};
use crate::dim::Dim;
use crate::ir::{DType, Graph, Op, ScalarExpr};

/// How one group's kernel computes its stored nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// One output element per invocation (`kernel/plain.rs`).
    Plain,
    /// Four neighbouring output elements per invocation, tensors read and written as 4-element vectors
    /// where they can be (`kernel/vector.rs`): loop-free groups on targets with `vector`.
    Vector,
    /// One workgroup (or invocation) per row of the root, with the row's reductions in the kernel
    /// (`rows.rs`, `kernel/rows.rs`).
    Rows(RowPlan),
    /// A register-tiled contraction: each invocation computes a block of the output (`tiles.rs`,
    /// `kernel/tile.rs`).
    Tiled(TilePlan),
    /// A contraction whose operand tiles are staged in workgroup memory by the whole workgroup
    /// (`kernel/shared.rs`); the plan's `vector_k` is off.
    SharedTiled(TilePlan, SharedTile),
    /// An `Argsort` root: one workgroup per fiber sorts it in workgroup memory with a bitonic network
    /// (`kernel/sort.rs`); fibers up to `SORT_CAPACITY` elements.
    Sort(SortPlan),
    /// An `Op::Scan` root (`cumsum`): one workgroup of `lanes` invocations per fiber scans it in chunks,
    /// O(n) work per fiber (`kernel/scan.rs`); fibers as long as the per-invocation loop limit allows
    /// (`LoopIterations`).
    Scan(ScanPlan),
}

/// How a scan's fibers are laid out: `fibers` of `length` elements each (along the scanned axis), each
/// scanned by a workgroup of `lanes` invocations (`ScanPlan::lanes_for`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPlan {
    pub fibers: Dim,
    pub length: Dim,
    pub lanes: u32,
}

impl ScanPlan {
    /// The plan of a scan root; `None` for another op or when the fiber count overflows.
    pub fn of(graph: &Graph, root: crate::ir::NodeId) -> Option<ScanPlan> {
        let node = graph.node(root);
        let Op::Scan { axis, .. } = node.op else { return None };
        let mut others = node.ty.shape.clone();
        let length = others.remove(axis);
        let fibers = others.iter().try_fold(Dim::constant(1), |n, d| n.mul(d).ok())?;
        let lanes = ScanPlan::lanes_for(&length);
        Some(ScanPlan { fibers, length, lanes })
    }

    /// The invocations scanning one fiber of `length`: for a known length, a power of two giving chunks of
    /// about `SCAN_CHUNK` elements (1 to `WORKGROUP_SIZE`), so that many short fibers do not each occupy
    /// a whole idle workgroup; for a symbolic one, `SYMBOLIC_SCAN_LANES`, which on llvmpipe (65535 loop
    /// iterations per invocation, `2 (ceil(n / lanes) + SCAN_CHUNK) + lanes` of them) still scans about 2
    /// million.
    pub fn lanes_for(length: &Dim) -> u32 {
        match length.as_const() {
            Some(n) => {
                let wanted = (n.max(1) as u64).div_ceil(u64::from(SCAN_CHUNK)).next_power_of_two();
                wanted.min(u64::from(WORKGROUP_SIZE)) as u32
            }
            None => SYMBOLIC_SCAN_LANES,
        }
    }
}

/// The chunk length a scan aims at per invocation (the lanes of a known length; the lanes a scan kernel
/// uses of its `lanes`, `kernel/scan.rs`).
pub const SCAN_CHUNK: u32 = 16;
/// The invocations per fiber of a scan whose length is symbolic.
pub const SYMBOLIC_SCAN_LANES: u32 = 64;

/// How an argsort's fibers are laid out: `fibers` of `length` elements each (along the sorted axis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortPlan {
    pub fibers: Dim,
    pub length: Dim,
}

impl SortPlan {
    /// The plan of an argsort root; `None` for another op or when the fiber count overflows.
    pub fn of(graph: &Graph, root: crate::ir::NodeId) -> Option<SortPlan> {
        let node = graph.node(root);
        let Op::Argsort { axis, .. } = node.op else { return None };
        let mut others = node.ty.shape.clone();
        let length = others.remove(axis);
        let fibers = others.iter().try_fold(Dim::constant(1), |n, d| n.mul(d).ok())?;
        Some(SortPlan { fibers, length })
    }
}

/// The longest fiber a sort kernel orders: a power of two (the bitonic network's padded length) whose `u32`
/// key and `u32` position per element fit `SHARED_BYTES` of workgroup memory less what a device keeps for
/// itself (lavapipe offers 16352 bytes, not 16384), so half of it. Longer fibers fail the launch bound
/// `SortLength`.
pub const SORT_CAPACITY: u32 = SHARED_BYTES / 16;
const _: () = assert!(SORT_CAPACITY.is_power_of_two() && SORT_CAPACITY.is_multiple_of(crate::codegen::WORKGROUP_SIZE));

impl Schedule {
    /// The schedule of `group` on `target`, first that applies: a row kernel (groups without siblings; for
    /// a stored reduction only where it is long, `long_reduction`), a tiled contraction (staged in workgroup
    /// memory where the target shares tiles and they fit), a vector kernel, else a plain one.
    pub fn choose(graph: &Graph, group: &Group, target: &Target) -> Schedule {
        if let Some(plan) = SortPlan::of(graph, group.root) {
            return Schedule::Sort(plan);
        }
        if let Some(plan) = ScanPlan::of(graph, group.root) {
            return Schedule::Scan(plan);
        }
        if group.siblings.is_empty()
            && let Some(plan) = rows::plan(graph, group.root, &group.inline, target)
            && (!plan.reduce_root || long_reduction(graph, group, &plan))
        {
            return Schedule::Rows(plan);
        }
        if let Some(schedule) = contraction(graph, group, target.tile, target.shared) {
            return schedule;
        }
        if target.vector && loop_free(graph, group) { Schedule::Vector } else { Schedule::Plain }
    }

    /// The same group with contraction tile `tile` (a tuned tile, `tuning.rs`): `None` when that is not a
    /// tiled contraction (a 1x1 tile) or `self` is a row kernel, which no tile changes.
    pub fn with_tile(&self, graph: &Graph, group: &Group, target: &Target, tile: TileShape) -> Option<Schedule> {
        match self {
            Schedule::Rows(_) | Schedule::Sort(_) | Schedule::Scan(_) => None,
            _ => contraction(graph, group, tile, target.shared),
        }
    }

    /// The tile plan of a tiled contraction (register or shared tiles).
    pub fn tile_plan(&self) -> Option<&TilePlan> {
        match self {
            Schedule::Tiled(plan) | Schedule::SharedTiled(plan, _) => Some(plan),
            _ => None,
        }
    }

    /// Whether the kernel's storage arrays hold 4-element vectors.
    pub fn vector_storage(&self) -> bool {
        match self {
            Schedule::Plain | Schedule::SharedTiled(..) | Schedule::Sort(_) | Schedule::Scan(_) => false,
            Schedule::Vector => true,
            Schedule::Rows(plan) => plan.vector,
            Schedule::Tiled(plan) => plan.vector_k,
        }
    }

    /// A short name for dumps and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Schedule::Plain => "plain",
            Schedule::Vector => "vector",
            Schedule::Rows(_) => "rows",
            Schedule::Tiled(_) => "tiled",
            Schedule::SharedTiled(..) => "shared-tiled",
            Schedule::Sort(_) => "sort",
            Schedule::Scan(_) => "scan",
        }
    }
}

/// Loop iterations per output (nominal or known) from which a stored reduction with too few outputs to
/// fill one workgroup of a plain kernel is reduced by a workgroup per output instead.
pub const LONG_REDUCTION: i64 = 1024;

/// Whether the stored reduction of `group` (a reducing root, `plan`) is better run by a workgroup per
/// output than by one invocation per output: when one invocation would loop more than `LOOP_BUDGET`
/// (llvmpipe would silently stop it), or when its outputs are too few to fill a workgroup and each loops
/// long (a whole tensor's `sum(x)`, a batch's accuracy, would otherwise run on one invocation, and
/// overrun llvmpipe's limit at sizes a little above the nominal ones). At nominal sizes where they are
/// symbolic, and again with the reduced extent at `GROWTH` times the nominal symbols: a reduction over a
/// symbolic extent of elements that are loops themselves (ResNet's global average pooling of a convolution
/// computed inline: 49 positions of 4608 products at 224x224, 4 at the nominal 64x64) outgrows the budget
/// at sizes models are run at.
fn long_reduction(graph: &Graph, group: &Group, plan: &RowPlan) -> bool {
    let member = |id| group.contains(id);
    let none = BTreeSet::new();
    let plain = ElementLoops::new(graph, &member, &none).of(group.root);
    let grown = match &graph.node(group.root).op {
        Op::Reduce { input, axes, .. } => {
            let shape = &graph.node(*input).ty.shape;
            let count = |symbol: i64| {
                axes.iter().fold(1i64, |n, &a| n.saturating_mul(shape[a].eval(&|_| symbol).unwrap_or(i64::MAX).max(1)))
            };
            let nominal_symbol = tdsl_runtime::exec::NOMINAL_SYMBOL;
            plain.saturating_mul(count(GROWTH * nominal_symbol)) / count(nominal_symbol)
        }
        _ => plain,
    };
    grown > LOOP_BUDGET || (nominal(&plan.rows) < i64::from(WORKGROUP_SIZE) && plain >= LONG_REDUCTION)
}

/// How far past the nominal symbol sizes `long_reduction` looks: 256 positions, tokens or pixels a side.
const GROWTH: i64 = 4;

/// The tiled-contraction schedule of `group` with `tile`, staged through workgroup memory when `shared`
/// and the plan allows it.
fn contraction(graph: &Graph, group: &Group, tile: TileShape, shared: bool) -> Option<Schedule> {
    let plan = tiles::plan(graph, group, tile)?;
    Some(match shared.then(|| plan.staged(graph, group)).flatten() {
        Some(staged) => Schedule::SharedTiled(TilePlan { vector_k: false, ..plan }, staged),
        None => Schedule::Tiled(plan),
    })
}

/// Whether every member of `group` is elementwise or a layout op (no loops), so the kernel can compute
/// four neighbouring elements per invocation.
fn loop_free(graph: &Graph, group: &Group) -> bool {
    group.roots().chain(group.inline.iter().copied()).all(|id| match &graph.node(id).op {
        Op::Reduce { .. } | Op::ArgReduce { .. } | Op::Scan { .. } | Op::MatMul(..) | Op::ScatterAdd { .. } => false,
        Op::Map(map) => !map.exprs.iter().any(|(_, s)| matches!(s.expr, ScalarExpr::Reduce { .. })),
        _ => true,
    })
}

/// A schedule that does not fit its group or target: which schedule, the group's root node and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{schedule} schedule of %{root}: {rule}")]
pub struct ScheduleError {
    /// The schedule's name (`Schedule::name`).
    pub schedule: &'static str,
    /// The group's root node.
    pub root: u32,
    /// The broken rule.
    pub rule: String,
}

/// Checks that `schedule` is consistent with `group` and `target`: what its emitter relies on holds (the
/// nodes it names are in the group and of the right kind, workgroup sizes and memory fit, the target
/// allows the features it uses). `Err` names the first broken rule.
pub fn verify(graph: &Graph, group: &Group, schedule: &Schedule, target: &Target) -> Result<(), ScheduleError> {
    let fail = |what: &str| {
        Err(ScheduleError { schedule: schedule.name(), root: group.root.index() as u32, rule: what.to_string() })
    };
    match schedule {
        Schedule::Plain => Ok(()),
        Schedule::Vector if !target.vector => fail("the target has no vector kernels"),
        Schedule::Vector if !loop_free(graph, group) => fail("a member loops (reduction, matmul or reducing map)"),
        Schedule::Vector => Ok(()),
        Schedule::Rows(plan) => verify_rows(graph, group, plan, target).or_else(|e| fail(&e)),
        Schedule::Tiled(plan) => verify_tiles(graph, group, plan).or_else(|e| fail(&e)),
        Schedule::SharedTiled(plan, shared) => {
            verify_tiles(graph, group, plan).and_then(|()| verify_shared(plan, shared, target)).or_else(|e| fail(&e))
        }
        Schedule::Sort(_) if !group.siblings.is_empty() => fail("a sort kernel has no siblings"),
        Schedule::Sort(plan) if SortPlan::of(graph, group.root).as_ref() != Some(plan) => {
            fail("the plan is not the argsort root's fibers")
        }
        Schedule::Sort(_) => Ok(()),
        Schedule::Scan(_) if !group.siblings.is_empty() => fail("a scan kernel has no siblings"),
        Schedule::Scan(plan) if ScanPlan::of(graph, group.root).as_ref() != Some(plan) => {
            fail("the plan is not the scan root's fibers")
        }
        Schedule::Scan(plan) if !plan.lanes.is_power_of_two() || plan.lanes > WORKGROUP_SIZE => {
            fail("the lanes are not a power of two up to the workgroup size")
        }
        Schedule::Scan(_) => Ok(()),
    }
}

fn ensure(condition: bool, what: &str) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what.to_string()) }
}

fn verify_rows(graph: &Graph, group: &Group, plan: &RowPlan, target: &Target) -> Result<(), String> {
    let root = graph.node(group.root);
    ensure(group.siblings.is_empty(), "a row kernel has no siblings")?;
    let full = rows::full_shape(graph, group.root);
    let count = |shape: &[Dim]| shape.iter().try_fold(Dim::constant(1), |n, d| n.mul(d).ok());
    ensure(plan.places.iter().all(|&(id, _)| group.contains(id)), "a placed node is not in the group")?;
    if plan.reduce_root {
        ensure(rows::reduces_trailing_axes(graph, group.root), "the root is not a reduction of trailing axes")?;
        ensure(Some(plan.rows.clone()) == count(&root.ty.shape), "rows is not the root's element count")?;
        ensure(plan.reductions.contains(&group.root), "the reducing root is not a row reduction")?;
        ensure(plan.places.contains(&(group.root, Place::Row)), "the reducing root is not placed per row")?;
        ensure(!plan.serial, "a reducing root runs no serial rows")?;
    } else {
        ensure(root.op.is_elementwise(), "the root is not elementwise")?;
        ensure(plan.places.contains(&(group.root, Place::Elem)), "the root is not placed per element")?;
    }
    ensure(plan.rows.mul(&plan.cols).ok() == count(&full), "rows x cols is not the row shape's element count")?;
    for &r in &plan.reductions {
        let reduces_row = rows::row_reduction(graph, r).is_some_and(|(input, _)| graph.node(input).ty.shape == full);
        let member = group.inline.contains(&r) || (plan.reduce_root && r == group.root);
        ensure(member && reduces_row, "a row reduction is not an inline reduce of a row")?;
        ensure(plan.places.contains(&(r, Place::Row)), "a row reduction is not placed per row")?;
    }
    for &c in &plan.cached {
        ensure(
            group.inline.contains(&c) && graph.node(c).op.is_contraction(),
            "a cached node is no inline contraction",
        )?;
        ensure(plan.places.contains(&(c, Place::Elem)), "a cached contraction is not placed per element")?;
    }
    ensure(plan.workgroup.is_power_of_two() && plan.workgroup <= 256, "the workgroup is not a power of two up to 256")?;
    ensure(
        plan.rows_per_workgroup >= 1 && plan.workgroup.is_multiple_of(plan.rows_per_workgroup),
        "rows per workgroup do not divide the workgroup",
    )?;
    // Targets with serial rows run long rows (and reducing roots) by workgroups too (`rows.rs`).
    match target.serial_rows {
        Some(n) if plan.serial => {
            ensure(plan.workgroup == n && plan.rows_per_workgroup == n, "the target runs serial rows of its size")?;
            ensure(plan.cached.is_empty(), "a serial row kernel caches no contraction")?;
        }
        Some(_) => {}
        None => ensure(!plan.serial, "the target has no serial rows")?,
    }
    ensure(!plan.subgroups || (target.subgroups && plan.rows_per_workgroup == 1), "subgroups the target lacks")?;
    let quads = plan.cols.as_const().is_some_and(|n| n > 0 && n % 4 == 0);
    ensure(!plan.vector || (target.vector && plan.serial && quads), "vector rows need serial rows of whole vectors")?;
    ensure(plan.rows_per_workgroup == 1 || plan.serial || plan.cached.is_empty(), "short rows cache nothing")?;
    if !plan.cached.is_empty() {
        let n = plan.cols.as_const().ok_or("a cached row has no constant length")?;
        let bytes = 4 * n * plan.cached.len() as i64 + 4 * i64::from(plan.workgroup);
        ensure(bytes <= rows::WORKGROUP_BYTES, "the cached row does not fit workgroup memory")?;
    }
    Ok(())
}

fn verify_tiles(graph: &Graph, group: &Group, plan: &TilePlan) -> Result<(), String> {
    ensure((1..=16).contains(&plan.rows) && (1..=16).contains(&plan.cols), "a tile side is not 1 to 16")?;
    ensure(plan.rows * plan.cols > 1, "a 1x1 tile")?;
    ensure(
        plan.matmuls.iter().map(|&(stored, _)| stored).eq(group.roots()),
        "the tiled stored nodes are not the group's roots",
    )?;
    let shape = &graph.node(plan.matmuls[0].1).ty.shape;
    ensure(shape.len() >= 2, "a matmul of rank below 2")?;
    for &(_, m) in &plan.matmuls {
        let node = graph.node(m);
        ensure(group.contains(m) && matches!(node.op, Op::MatMul(..)), "a tiled matmul is not in the group")?;
        ensure(node.ty.shape == *shape, "the tiled matmuls differ in shape")?;
        let Some((a, _)) = tiles::operands(graph, m) else { continue };
        let k = graph.node(a).ty.shape.last();
        ensure(
            !plan.vector_k || (node.ty.dtype == DType::F32 && k.and_then(Dim::as_const).is_some_and(|k| k % 4 == 0)),
            "vector k loads of a contraction not of f32 multiples of 4",
        )?;
    }
    Ok(())
}

fn verify_shared(plan: &TilePlan, shared: &SharedTile, target: &Target) -> Result<(), String> {
    ensure(target.shared, "the target does not share tiles")?;
    ensure(!plan.vector_k, "staged tiles load no vectors along k")?;
    ensure(K_STEPS.contains(&shared.k_step) && plan.stages_whole(shared.k_step), "a k step that stages unevenly")?;
    ensure(shared.along_k.len() == plan.matmuls.len(), "not one staging order per matmul")?;
    ensure(plan.staged_words(shared.k_step, &shared.along_k) * 4 <= SHARED_BYTES, "the staged tiles do not fit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::target::TARGETS;
    use crate::ir::build::{Builder, c};
    use crate::ir::{BinaryOp, ReduceOp};

    fn group(root: crate::ir::NodeId, inline: &[crate::ir::NodeId]) -> Group {
        Group { root, inline: inline.iter().copied().collect(), siblings: Vec::new() }
    }

    #[test]
    fn chosen_schedules_verify_on_every_target() {
        let mut b = Builder::new("schedules");
        let n = b.sym("N");
        let x = b.input("x", DType::F32, &[n.clone(), c(64)]);
        let w = b.input("w", DType::F32, &[c(64), c(64)]);
        let y = b.node(Op::MatMul(x, w), DType::F32, &[n.clone(), c(64)]);
        let sum =
            b.node(Op::Reduce { op: ReduceOp::Sum, input: y, axes: vec![1] }, DType::F32, std::slice::from_ref(&n));
        let column = b.node(Op::Reshape(sum), DType::F32, &[n.clone(), c(1)]);
        let back = b.node(Op::Broadcast(column), DType::F32, &[n.clone(), c(64)]);
        let z = b.binary(BinaryOp::Sub, y, back);
        b.output("z", z);
        for target in TARGETS {
            for g in [group(y, &[]), group(z, &[y, sum, column, back]), group(back, &[sum, column])] {
                let schedule = Schedule::choose(&b.g, &g, &target);
                assert_eq!(verify(&b.g, &g, &schedule, &target), Ok(()), "{}: {schedule:?}", target.name);
            }
        }
        let gpu = TARGETS[0];
        assert!(matches!(Schedule::choose(&b.g, &group(y, &[]), &gpu), Schedule::SharedTiled(..)));
        assert!(matches!(Schedule::choose(&b.g, &group(z, &[y, sum, column, back]), &gpu), Schedule::Rows(_)));
    }

    #[test]
    fn reductions_over_symbolic_extents_are_split_before_they_outgrow_the_budget() {
        // Each output sums N elements that loop 500 times each: 32000 iterations at the nominal N = 64,
        // past llvmpipe's limit from N = 128 on (ResNet's average pooling of a convolution at 224x224).
        let mut b = Builder::new("grow");
        let n = b.sym("N");
        let x = b.input("x", DType::F32, &[c(1024), n.clone(), c(500)]);
        let inner = b.node(Op::Reduce { op: ReduceOp::Sum, input: x, axes: vec![2] }, DType::F32, &[c(1024), n]);
        let outer = b.node(Op::Reduce { op: ReduceOp::Sum, input: inner, axes: vec![1] }, DType::F32, &[c(1024)]);
        b.output("y", outer);
        for target in TARGETS {
            let chosen = Schedule::choose(&b.g, &group(outer, &[inner]), &target);
            assert!(matches!(chosen, Schedule::Rows(_)), "{}: {chosen:?}", target.name);
        }
    }

    #[test]
    fn long_reductions_are_split_across_a_workgroup() {
        let mut b = Builder::new("long");
        let n = b.sym("N");
        let x = b.input("x", DType::F32, &[c(1024), c(256)]);
        let s = b.input("s", DType::F32, &[n.clone(), c(8)]);
        let long = b.input("l", DType::F32, &[c(4), c(100_000)]);
        let total = b.node(Op::Reduce { op: ReduceOp::Sum, input: x, axes: vec![0, 1] }, DType::F32, &[]);
        let rows =
            b.node(Op::Reduce { op: ReduceOp::Max, input: s, axes: vec![1] }, DType::F32, std::slice::from_ref(&n));
        let softmax_like = {
            let m = b.node(Op::Reduce { op: ReduceOp::Max, input: long, axes: vec![1] }, DType::F32, &[c(4)]);
            let column = b.node(Op::Reshape(m), DType::F32, &[c(4), c(1)]);
            let back = b.node(Op::Broadcast(column), DType::F32, &[c(4), c(100_000)]);
            let z = b.binary(BinaryOp::Sub, long, back);
            (z, vec![m, column, back])
        };
        b.output("total", total);
        b.output("rows", rows);
        b.output("z", softmax_like.0);
        for target in TARGETS {
            // A whole tensor's sum: one workgroup, each invocation looping 1024 times, not one invocation
            // looping 262144 times.
            let g = group(total, &[]);
            let Schedule::Rows(plan) = Schedule::choose(&b.g, &g, &target) else { panic!("{}: rows", target.name) };
            assert!(plan.reduce_root && !plan.serial && plan.workgroup == 256, "{}: {plan:?}", target.name);
            assert_eq!(verify(&b.g, &g, &Schedule::Rows(plan), &target), Ok(()), "{}", target.name);
            // Short rows stay one invocation per output.
            assert_eq!(Schedule::choose(&b.g, &group(rows, &[]), &target), Schedule::Plain, "{}", target.name);
            // Rows too long for one invocation run by workgroups, also where rows are serial.
            let g = group(softmax_like.0, &softmax_like.1);
            let Schedule::Rows(plan) = Schedule::choose(&b.g, &g, &target) else { panic!("{}: rows", target.name) };
            assert!(!plan.serial && !plan.reduce_root, "{}: {plan:?}", target.name);
            assert_eq!(verify(&b.g, &g, &Schedule::Rows(plan), &target), Ok(()), "{}", target.name);
        }
    }

    #[test]
    fn inconsistent_schedules_are_rejected() {
        let mut b = Builder::new("schedules");
        let x = b.input("x", DType::F32, &[c(8), c(8)]);
        let y = b.node(Op::MatMul(x, x), DType::F32, &[c(8), c(8)]);
        let s = b.node(Op::Reduce { op: ReduceOp::Sum, input: x, axes: vec![1] }, DType::F32, &[c(8)]);
        b.output("y", y);
        b.output("s", s);
        let (gpu, cpu, naive) = (TARGETS[0], TARGETS[1], TARGETS[2]);
        let matmul = group(y, &[]);
        assert!(verify(&b.g, &matmul, &Schedule::Vector, &gpu).is_err(), "a vector matmul");
        assert!(verify(&b.g, &group(x, &[]), &Schedule::Vector, &naive).is_err(), "vectors on naive");
        let Schedule::Tiled(plan) = Schedule::choose(&b.g, &matmul, &cpu) else { panic!("a tiled matmul on cpu") };
        assert_eq!(verify(&b.g, &matmul, &Schedule::Tiled(plan.clone()), &cpu), Ok(()));
        let one = TilePlan { rows: 1, cols: 1, ..plan.clone() };
        assert!(verify(&b.g, &matmul, &Schedule::Tiled(one), &cpu).is_err(), "a 1x1 tile");
        assert!(verify(&b.g, &group(s, &[]), &Schedule::Tiled(plan.clone()), &cpu).is_err(), "another group");
        let staged = SharedTile { k_step: 16, along_k: vec![(true, false)] };
        let shared = Schedule::SharedTiled(TilePlan { vector_k: false, ..plan }, staged);
        let err = verify(&b.g, &matmul, &shared, &cpu).expect_err("shared tiles on cpu");
        assert!(err.rule.contains("does not share tiles"), "{err}");
    }
}
