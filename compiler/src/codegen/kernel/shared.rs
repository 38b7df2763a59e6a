//! The emitter of contractions tiled through workgroup memory (`Schedule::SharedTiled`, the `gpu`
//! profile's): a workgroup of 16 x 16 invocations computes a `16 rows x 16 cols` tile of the output. Per
//! `k_step` slice of `k`, all invocations stage the left operand's tile rows and the right operand's tile
//! columns in workgroup memory (consecutive invocations loading consecutive elements of the tensor read),
//! meet at a barrier, multiply their blocks out of workgroup memory, and meet again before the next
//! slice overwrites it. Invocation `(ty, tx)` owns rows `ty + 16 r` and columns `tx + 16 s` of the tile, so
//! neighbouring invocations read neighbouring words and store neighbouring columns. Staged elements past
//! an edge of `m`, `n` or `k` are zeros (loaded from a clamped, in-range position first), so every sum
//! adds exactly the interpreter's products, in `k` order from zero; past-the-edge outputs are not stored.

use naga::{BinaryOperator, Expression, GlobalVariable, Handle};
use tdsl_runtime::program::BoundKind;

use super::tile::Contraction;
use super::{Cx, Emitter, Expr, MAX_ELEMENTS, Pos, R, Workgroups, internal, storage_scalar, unsupported};
use crate::codegen::WORKGROUP_SIZE;
use crate::codegen::scalar;
use crate::codegen::tiles::{SHARED_SIDE, SharedTile, TilePlan};
use crate::dim::Dim;
use crate::ir::{Graph, NodeId, ReduceOp};

/// The shared-tile schedule's emitter.
pub(super) struct Shared<'p>(pub &'p TilePlan, pub &'p SharedTile);

impl Emitter for Shared<'_> {
    /// One `WORKGROUP_SIZE` workgroup per output tile of `TilePlan::workgroup_tile`.
    fn launch(&self, graph: &Graph, _: &Dim) -> Result<(Dim, u32), String> {
        let shape = &graph.node(self.0.matmuls[0].1).ty.shape;
        let groups = super::tile::block_count(shape, self.0.workgroup_tile())?;
        let invocations =
            groups.scale(i64::from(WORKGROUP_SIZE)).map_err(|_| "the invocation count overflows".to_string())?;
        Ok((invocations, WORKGROUP_SIZE))
    }

    fn emit(&self, cx: &mut Cx, count: &Dim, outputs: &[(NodeId, Handle<GlobalVariable>)]) -> R<()> {
        cx.shared_tile_kernel(self.0, self.1, count, outputs)
    }
}

/// One operand's staged tile: its workgroup array, the words per `k` row, and the tile's side.
struct Staged {
    array: Handle<GlobalVariable>,
    stride: u32,
    side: u32,
}

impl Cx<'_> {
    /// Emits the shared-memory tiled kernel for `plan` (output element count `count`), storing
    /// `plan.matmuls[i].0` into `outputs[i]`; one workgroup per output tile (`tile::block_count` with the
    /// workgroup's tile). Entry arguments: `Workgroups` (`wid`, `num_workgroups`, `lid`).
    fn shared_tile_kernel(
        &mut self,
        plan: &TilePlan,
        shared: &SharedTile,
        count: &Dim,
        outputs: &[(NodeId, Handle<GlobalVariable>)],
    ) -> R<()> {
        let graph = self.graph;
        self.bounds.push((BoundKind::OutputElements, count.clone(), MAX_ELEMENTS));
        let args = Workgroups::declare(self);
        let Contraction { operands, shape, m, n, k: k_extent } = self.contraction(plan)?;
        let rank = shape.len();
        let [tile_rows, tile_cols] = plan.workgroup_tile();
        let name = self.name.clone();
        let fail = |e: String| internal(&name, &e);
        let tiles_m = super::tile::blocks(&m, tile_rows).map_err(fail)?;
        let tiles_n = super::tile::blocks(&n, tile_cols).map_err(fail)?;
        let groups = super::tile::block_count(&shape, [tile_rows, tile_cols]).map_err(fail)?;

        // group = wid.x + wid.y * num_workgroups.x, uniform in the workgroup, so returning past the end
        // keeps every barrier below in uniform control flow.
        let group = self.workgroup_index(args);
        let lid = self.arg(args.lid);
        self.b.name(group, "tile");
        let group_count = self.dim(&groups);
        let past_end = self.b.binary(BinaryOperator::GreaterEqual, group, group_count);
        self.return_if(past_end);
        let (tile_row, tile_col, batch) = self.tile_origin(group, [&tiles_m, &tiles_n], &shape[..rank - 2]);
        let side = self.b.u32(SHARED_SIDE);
        let tx = self.b.binary(BinaryOperator::Modulo, lid, side);
        let ty = self.b.binary(BinaryOperator::Divide, lid, side);
        let tile_rows_value = self.b.u32(tile_rows);
        let tile_cols_value = self.b.u32(tile_cols);
        let row0 = self.b.binary(BinaryOperator::Multiply, tile_row, tile_rows_value);
        let col0 = self.b.binary(BinaryOperator::Multiply, tile_col, tile_cols_value);
        self.b.name(row0, "row0");
        self.b.name(col0, "col0");
        let rows = self.strided(row0, ty, plan.rows);
        let cols = self.strided(col0, tx, plan.cols);
        let m_value = self.dim(&m);
        let n_value = self.dim(&n);
        let k_value = self.dim(&k_extent);

        let block = (plan.rows * plan.cols) as usize;
        let mut sums = Vec::with_capacity(block * operands.len());
        let mut staged = Vec::with_capacity(operands.len());
        for (t, &(_, matmul)) in plan.matmuls.iter().enumerate() {
            let dtype = graph.node(matmul).ty.dtype;
            for _ in 0..block {
                let zero =
                    scalar::reduce_init(&mut self.b, ReduceOp::Sum, dtype).ok_or_else(|| unsupported(graph, matmul))?;
                sums.push(self.accumulator(dtype, zero));
            }
            let (left_k, right_k) = shared.along_k.get(t).copied().unwrap_or_default();
            let stage = |cx: &mut Self, name: &str, side: u32, along_k: bool| {
                let stride = SharedTile::stride(side, along_k);
                let array = cx.workgroup_array(&format!("{name}{t}"), storage_scalar(dtype), shared.k_step * stride);
                Staged { array, stride, side }
            };
            let left = stage(self, "left", tile_rows, left_k);
            let right = stage(self, "right", tile_cols, right_k);
            staged.push((left, left_k, right, right_k));
        }

        let k_steps = super::tile::blocks(&k_extent, shared.k_step).map_err(fail)?;
        self.counted_loop("k0", &k_steps, &mut |cx, step| {
            let k_step = cx.b.u32(shared.k_step);
            let k0 = cx.b.binary(BinaryOperator::Multiply, step, k_step);
            for (&(a, c), (left, left_k, right, right_k)) in operands.iter().zip(&staged) {
                cx.stage(a, left, *left_k, shared.k_step, [row0, m_value], [k0, k_value], &batch, true, lid)?;
                cx.stage(c, right, *right_k, shared.k_step, [col0, n_value], [k0, k_value], &batch, false, lid)?;
            }
            cx.barrier();
            cx.counted_loop("k", &Dim::constant(i64::from(shared.k_step)), &mut |cx, k| {
                for (t, (left, _, right, _)) in staged.iter().enumerate() {
                    let left: Vec<Expr> = (0..plan.rows).map(|r| cx.staged_value(left, k, ty, r)).collect();
                    let right: Vec<Expr> = (0..plan.cols).map(|s| cx.staged_value(right, k, tx, s)).collect();
                    cx.multiply_add(&sums[t * block..(t + 1) * block], &left, &right);
                }
                Ok(())
            })?;
            cx.barrier();
            Ok(())
        })?;
        self.tile_epilogues(plan, outputs, &sums, &batch, [&rows, &cols], [m_value, n_value])
    }

    /// `first + own + 16 i` for `i` in `0..count`: the rows or columns of the tile an invocation owns.
    fn strided(&mut self, first: Expr, own: Expr, count: u32) -> Vec<Expr> {
        let start = self.b.binary(BinaryOperator::Add, first, own);
        (0..count)
            .map(|i| {
                let step = self.b.u32(SHARED_SIDE * i);
                self.b.binary(BinaryOperator::Add, start, step)
            })
            .collect()
    }

    /// Stages operand `id`'s tile for the slice of `k` from `k0`: `side` rows (`left`) or columns from
    /// `origin`, each invocation storing `k_step * side / 256` elements, zero past `extent` or `k`.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &mut self,
        id: NodeId,
        staged: &Staged,
        along_k: bool,
        k_step: u32,
        [origin, extent]: [Expr; 2],
        [k0, k_extent]: [Expr; 2],
        batch: &[Expr],
        left: bool,
        lid: Expr,
    ) -> R<()> {
        let shape = self.graph.node(id).ty.shape.clone();
        let dtype = self.graph.node(id).ty.dtype;
        let one = self.b.u32(1);
        let last_index = self.b.binary(BinaryOperator::Subtract, extent, one);
        let last_k = self.b.binary(BinaryOperator::Subtract, k_extent, one);
        let zero = scalar::reduce_init(&mut self.b, ReduceOp::Sum, dtype).ok_or_else(|| unsupported(self.graph, id))?;
        for i in 0..k_step * staged.side / WORKGROUP_SIZE {
            let offset = self.b.u32(i * WORKGROUP_SIZE);
            let e = self.b.binary(BinaryOperator::Add, lid, offset);
            // `k` fastest when the tensor runs along `k`, else the rows or columns: either way consecutive
            // invocations load consecutive elements.
            let fast = if along_k { k_step } else { staged.side };
            let fast_value = self.b.u32(fast);
            let minor = self.b.binary(BinaryOperator::Modulo, e, fast_value);
            let major = self.b.binary(BinaryOperator::Divide, e, fast_value);
            let (along, kk) = if along_k { (major, minor) } else { (minor, major) };
            let index = self.b.binary(BinaryOperator::Add, origin, along);
            let k = self.b.binary(BinaryOperator::Add, k0, kk);
            let index_in = self.b.binary(BinaryOperator::Less, index, extent);
            let k_in = self.b.binary(BinaryOperator::Less, k, k_extent);
            let inside = self.b.binary(BinaryOperator::LogicalAnd, index_in, k_in);
            let index = self.b.math(naga::MathFunction::Min, &[index, last_index]);
            let k = self.b.math(naga::MathFunction::Min, &[k, last_k]);
            let mut coords = batch.to_vec();
            coords.extend(if left { [index, k] } else { [k, index] });
            let value = self.value(id, &mut Pos::coords(&shape, coords))?.expr;
            let value = self.b.select(inside, value, zero);
            let stride = self.b.u32(staged.stride);
            let row = self.b.binary(BinaryOperator::Multiply, kk, stride);
            let word = self.b.binary(BinaryOperator::Add, row, along);
            let array = self.b.expr(Expression::GlobalVariable(staged.array));
            let pointer = self.b.expr(Expression::Access { base: array, index: word });
            self.b.store(pointer, value);
        }
        Ok(())
    }

    /// The staged element at `k` of the invocation's `i`-th row or column (`own + 16 i` in the tile).
    fn staged_value(&mut self, staged: &Staged, k: Expr, own: Expr, i: u32) -> Expr {
        let stride = self.b.u32(staged.stride);
        let row = self.b.binary(BinaryOperator::Multiply, k, stride);
        let offset = self.b.u32(SHARED_SIDE * i);
        let along = self.b.binary(BinaryOperator::Add, own, offset);
        let word = self.b.binary(BinaryOperator::Add, row, along);
        let array = self.b.expr(Expression::GlobalVariable(staged.array));
        let pointer = self.b.expr(Expression::Access { base: array, index: word });
        self.b.load(pointer)
    }
}
