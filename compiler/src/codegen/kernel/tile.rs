//! The register-tiled contraction emitter (`Schedule::Tiled`; `tiles.rs` decides which groups get one): each
//! invocation computes a `rows x cols` block of the output, holding the block's sums in local variables
//! while `k` runs, then evaluates the group's epilogue at each element of the block with the matmul's
//! value taken from its sum.

use naga::{BinaryOperator, Expression, GlobalVariable, Handle, Statement};
use tdsl_runtime::program::BoundKind;

use super::{Cx, Emitter, Expr, Given, Grid, MAX_ELEMENTS, Pos, R, Val, internal, shape_count, unsupported};
use crate::codegen::tiles::{self, TilePlan};
use crate::codegen::{WORKGROUP_SIZE, scalar};
use crate::dim::Dim;
use crate::ir::{Graph, NodeId, ReduceOp};

/// The register-tiled schedule's emitter.
pub(super) struct Tiled<'p>(pub &'p TilePlan);

impl Emitter for Tiled<'_> {
    /// One invocation per `rows x cols` block.
    fn launch(&self, graph: &Graph, _: &Dim) -> Result<(Dim, u32), String> {
        let shape = &graph.node(self.0.matmuls[0].1).ty.shape;
        Ok((block_count(shape, [self.0.rows, self.0.cols])?, WORKGROUP_SIZE))
    }

    fn emit(&self, cx: &mut Cx, count: &Dim, outputs: &[(NodeId, Handle<GlobalVariable>)]) -> R<()> {
        cx.tile_kernel(self.0, count, outputs)
    }
}

/// What both contraction schedules need of a tile plan's matmuls: their operands, their (common) shape,
/// its last two extents and the contraction length.
pub(super) struct Contraction {
    pub operands: Vec<(NodeId, NodeId)>,
    pub shape: Vec<Dim>,
    pub m: Dim,
    pub n: Dim,
    pub k: Dim,
}

impl Cx<'_> {
    /// The matmuls of `plan` as a `Contraction`; records the contraction length's launch bound.
    pub(super) fn contraction(&mut self, plan: &TilePlan) -> R<Contraction> {
        let graph = self.graph;
        let mut operands = Vec::with_capacity(plan.matmuls.len());
        for &(_, matmul) in &plan.matmuls {
            let pair =
                tiles::operands(graph, matmul).ok_or_else(|| internal(&self.name, "a tile plan without a matmul"))?;
            operands.push(pair);
        }
        let shape = graph.node(plan.matmuls[0].1).ty.shape.clone();
        let rank = shape.len();
        let (m, n) = (shape[rank - 2].clone(), shape[rank - 1].clone());
        let k = graph.node(operands[0].0).ty.shape[rank - 1].clone();
        self.bounds.push((BoundKind::ContractionLength, k.clone(), MAX_ELEMENTS));
        Ok(Contraction { operands, shape, m, n, k })
    }

    /// Emits the tiled kernel for `plan` (output element count `count`), storing `plan.matmuls[i].0` into
    /// `outputs[i]`; the invocation count (slot 0) is the number of blocks. Entry arguments: a folded `Grid`.
    fn tile_kernel(&mut self, plan: &TilePlan, count: &Dim, outputs: &[(NodeId, Handle<GlobalVariable>)]) -> R<()> {
        let graph = self.graph;
        self.bounds.push((BoundKind::OutputElements, count.clone(), MAX_ELEMENTS));
        let grid = Grid::declare(self);
        // The blocks tile the matmuls' shape; stored nodes are evaluated at the same flat index.
        let Contraction { operands, shape, m, n, k: k_extent } = self.contraction(plan)?;
        let rank = shape.len();
        let tiles_n = blocks(&n, plan.cols).map_err(|e| internal(&self.name, &e))?;
        let tiles_m = blocks(&m, plan.rows).map_err(|e| internal(&self.name, &e))?;

        // Return when block >= blocks.
        let count = self.slot(0);
        let index = self.global_index(grid, WORKGROUP_SIZE);
        self.b.name(index, "block");
        let past_end = self.b.binary(BinaryOperator::GreaterEqual, index, count);
        self.return_if(past_end);

        let (tile_row, tile_col, batch) = self.tile_origin(index, [&tiles_m, &tiles_n], &shape[..rank - 2]);
        let rows_per = self.b.u32(plan.rows);
        let cols_per = self.b.u32(plan.cols);
        let row0 = self.b.binary(BinaryOperator::Multiply, tile_row, rows_per);
        let col0 = self.b.binary(BinaryOperator::Multiply, tile_col, cols_per);
        self.b.name(row0, "row0");
        self.b.name(col0, "col0");
        let m_value = self.dim(&m);
        let n_value = self.dim(&n);
        // Unclamped indices decide what is stored; clamped ones are loaded, so edge blocks stay in range.
        let (rows, rows_clamped) = self.block_indices(row0, plan.rows, m_value);
        let (cols, cols_clamped) = self.block_indices(col0, plan.cols, n_value);

        let block = (plan.rows * plan.cols) as usize;
        let mut sums = Vec::with_capacity(block * operands.len());
        for &(_, matmul) in &plan.matmuls {
            let dtype = graph.node(matmul).ty.dtype;
            for _ in 0..block {
                let zero =
                    scalar::reduce_init(&mut self.b, ReduceOp::Sum, dtype).ok_or_else(|| unsupported(graph, matmul))?;
                sums.push(self.accumulator(dtype, zero));
            }
        }
        if plan.vector_k {
            // Each operand row starts at an aligned vector and runs along `k` contiguously, so vector `q` of
            // a row is its first vector's index plus `q`: the indices are computed once, before the loop.
            let quads = k_extent.div(&Dim::constant(4)).map_err(|e| internal(&self.name, &e.to_string()))?;
            let zero = self.b.u32(0);
            let mut starts = Vec::with_capacity(operands.len());
            for &(a, c) in &operands {
                let mut left = Vec::with_capacity(rows_clamped.len());
                for &i in &rows_clamped {
                    let mut coords = batch.clone();
                    coords.extend([i, zero]);
                    left.push(self.first_quad(a, coords)?);
                }
                let mut right = Vec::with_capacity(cols_clamped.len());
                for &j in &cols_clamped {
                    let mut coords = batch.clone();
                    coords.extend([zero, j]);
                    right.push(self.first_quad(c, coords)?);
                }
                starts.push((left, right));
            }
            return self
                .counted_loop("k4", &quads, &mut |cx, q| {
                    for (t, (left, right)) in starts.iter().enumerate() {
                        let left: Vec<Expr> = left.iter().map(|&(buffer, first)| cx.quad(buffer, first, q)).collect();
                        let right: Vec<Expr> = right.iter().map(|&(buffer, first)| cx.quad(buffer, first, q)).collect();
                        for (r, &x) in left.iter().enumerate() {
                            for (s, &y) in right.iter().enumerate() {
                                let acc = sums[t * block + r * right.len() + s];
                                let product = cx.b.math(naga::MathFunction::Dot, &[x, y]);
                                let current = cx.b.load(acc);
                                let next = cx.b.binary(BinaryOperator::Add, current, product);
                                cx.b.store(acc, next);
                            }
                        }
                    }
                    Ok(())
                })
                .and_then(|()| self.tile_epilogues(plan, outputs, &sums, &batch, [&rows, &cols], [m_value, n_value]));
        }
        self.counted_loop("k", &k_extent, &mut |cx, k| {
            for (t, &(a, c)) in operands.iter().enumerate() {
                let a_shape = graph.node(a).ty.shape.clone();
                let c_shape = graph.node(c).ty.shape.clone();
                let mut left = Vec::with_capacity(rows_clamped.len());
                for &i in &rows_clamped {
                    let mut coords = batch.clone();
                    coords.extend([i, k]);
                    left.push(cx.value(a, &mut Pos::coords(&a_shape, coords))?.expr);
                }
                let mut right = Vec::with_capacity(cols_clamped.len());
                for &j in &cols_clamped {
                    let mut coords = batch.clone();
                    coords.extend([k, j]);
                    right.push(cx.value(c, &mut Pos::coords(&c_shape, coords))?.expr);
                }
                cx.multiply_add(&sums[t * block..(t + 1) * block], &left, &right);
            }
            Ok(())
        })?;
        self.tile_epilogues(plan, outputs, &sums, &batch, [&rows, &cols], [m_value, n_value])
    }

    /// The tile row, tile column and batch coordinates of tile `index`, numbered
    /// `(batch * tiles_m + tile_row) * tiles_n + tile_col`.
    pub(super) fn tile_origin(
        &mut self,
        index: Expr,
        [tiles_m, tiles_n]: [&Dim; 2],
        batch: &[Dim],
    ) -> (Expr, Expr, Vec<Expr>) {
        let tn = self.dim(tiles_n);
        let tile_col = self.b.binary(BinaryOperator::Modulo, index, tn);
        let rest = self.b.binary(BinaryOperator::Divide, index, tn);
        let tm = self.dim(tiles_m);
        let tile_row = self.b.binary(BinaryOperator::Modulo, rest, tm);
        let batch_flat = self.b.binary(BinaryOperator::Divide, rest, tm);
        (tile_row, tile_col, self.delinearize(batch_flat, batch))
    }

    /// `first + i` for `i` in `0..count`, and the same clamped to `extent - 1`.
    fn block_indices(&mut self, first: Expr, count: u32, extent: Expr) -> (Vec<Expr>, Vec<Expr>) {
        let one = self.b.u32(1);
        let last = self.b.binary(BinaryOperator::Subtract, extent, one);
        (0..count)
            .map(|i| {
                let step = self.b.u32(i);
                let index = self.b.binary(BinaryOperator::Add, first, step);
                (index, self.b.math(naga::MathFunction::Min, &[index, last]))
            })
            .unzip()
    }

    /// `sums[r * cols + s] += left[r] * right[s]` for the whole block.
    pub(super) fn multiply_add(&mut self, sums: &[Expr], left: &[Expr], right: &[Expr]) {
        for (r, &x) in left.iter().enumerate() {
            for (s, &y) in right.iter().enumerate() {
                let acc = sums[r * right.len() + s];
                let product = self.b.binary(BinaryOperator::Multiply, x, y);
                let current = self.b.load(acc);
                let next = self.b.binary(BinaryOperator::Add, current, product);
                self.b.store(acc, next);
            }
        }
    }

    /// The storage array and vector index holding elements `0 .. 4` along the contraction axis of matmul
    /// operand `id` at `coords` (whose contraction coordinate is 0); `TilePlan::vector_k` guarantees the
    /// row is contiguous and aligned.
    fn first_quad(&mut self, id: NodeId, coords: Vec<Expr>) -> R<(Handle<GlobalVariable>, Expr)> {
        let shape = self.graph.node(id).ty.shape.clone();
        let (tensor, flat) = self
            .address(id, &mut Pos::coords(&shape, coords))
            .ok_or_else(|| internal(&self.name, "a vector operand is not a moved tensor"))?;
        let buffer = self.read_buffer(tensor);
        let two = self.b.u32(2);
        Ok((buffer, self.b.binary(BinaryOperator::ShiftRight, flat, two)))
    }

    /// Vector `q` of a row whose first vector is `buffer[first]`.
    fn quad(&mut self, buffer: Handle<GlobalVariable>, first: Expr, q: Expr) -> Expr {
        let index = self.b.binary(BinaryOperator::Add, first, q);
        let array = self.b.expr(Expression::GlobalVariable(buffer));
        let pointer = self.b.expr(Expression::Access { base: array, index });
        self.b.load(pointer)
    }

    /// The epilogues of a tiled kernel, element by element, for the elements inside the output.
    pub(super) fn tile_epilogues(
        &mut self,
        plan: &TilePlan,
        outputs: &[(NodeId, Handle<GlobalVariable>)],
        sums: &[Expr],
        batch: &[Expr],
        [rows, cols]: [&[Expr]; 2],
        [m_value, n_value]: [Expr; 2],
    ) -> R<()> {
        let graph = self.graph;
        let shape = graph.node(plan.matmuls[0].1).ty.shape.clone();
        let block = (plan.rows * plan.cols) as usize;
        for r in 0..plan.rows as usize {
            for s in 0..plan.cols as usize {
                let row_in = self.b.binary(BinaryOperator::Less, rows[r], m_value);
                let col_in = self.b.binary(BinaryOperator::Less, cols[s], n_value);
                let inside = self.b.binary(BinaryOperator::LogicalAnd, row_in, col_in);
                self.open_block();
                for (t, (&(stored, matmul), &(_, output))) in plan.matmuls.iter().zip(outputs).enumerate() {
                    let dtype = graph.node(matmul).ty.dtype;
                    let sum = self.b.load(sums[t * block + r * plan.cols as usize + s]);
                    let value = scalar::round(&mut self.b, sum, dtype);
                    self.given.insert(matmul, Given::Value(Val { expr: value, dtype }));
                    let mut coords = batch.to_vec();
                    coords.extend([rows[r], cols[s]]);
                    let flat = self.flat(&mut Pos::coords(&shape, coords));
                    let stored_shape = graph.node(stored).ty.shape.clone();
                    let result = self.value(stored, &mut Pos::flat(&stored_shape, flat))?;
                    self.store_output(output, flat, result);
                    self.given.remove(&matmul);
                }
                let accept = self.close_block();
                self.b.statement(Statement::If { condition: inside, accept, reject: naga::Block::new() });
            }
        }
        Ok(())
    }
}

/// `ceil(extent / per)`: the blocks covering `extent`.
pub(super) fn blocks(extent: &Dim, per: u32) -> Result<Dim, String> {
    extent
        .add(&Dim::constant(i64::from(per) - 1))
        .and_then(|d| d.div(&Dim::constant(i64::from(per))))
        .map_err(|e| e.to_string())
}

/// The `rows x cols` blocks covering the last two axes of `shape` (the output's), for every batch: a
/// register-tiled kernel's invocations, or (with a workgroup's tile) a shared-tile kernel's workgroups.
pub(super) fn block_count(shape: &[Dim], [rows, cols]: [u32; 2]) -> Result<Dim, String> {
    let rank = shape.len();
    let batch = shape_count(&shape[..rank - 2]).ok_or("the batch size overflows")?;
    let tiles = blocks(&shape[rank - 2], rows)?.mul(&blocks(&shape[rank - 1], cols)?).map_err(|e| e.to_string())?;
    batch.mul(&tiles).map_err(|e| e.to_string())
}
