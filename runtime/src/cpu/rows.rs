//! Row passes: the part of a launch built around reductions over the trailing axes of one row space
//! (softmax, layer norm, cross-entropy rows) runs as one pass over blocks of whole rows instead of node by
//! node. In a block every node of the pass is computed once, into block-sized buffers that stay in cache:
//! the reductions' operands, the per-row results (`max`, `sum`, `mean`), the nodes that use them (a per-row
//! value broadcast along its rows is applied row by row, never expanded) and the results the launch keeps,
//! written into their place. The launch's other nodes (a matmul, index notation, a reduction of another
//! shape) run node by node: before the pass when it reads them (through views), after it when they read it.
//! The pass uses the fused chunks' kernels and row folds, so its results are the same bits.

use std::cell::RefCell;

use rayon::prelude::*;

use super::fused::{self, Part, Run};
use super::value::Value;
use super::view::View;
use crate::DType;
use crate::eval::kernels::{self, reduce_finish, reduce_init};
use crate::eval::values::{Lit, Vals};
use crate::ops::{BinaryOp, ReduceOp, UnaryOp};
use crate::program::{GroupOps, OpNode, TensorOp};

/// Elements per block, in whole rows (at least one): a block's buffers stay in the core's caches.
const BLOCK: usize = 4096;

thread_local! {
    /// Float buffers of blocks finished on this thread, for the next block's nodes: a block's buffers are
    /// fully overwritten, so reusing them saves the allocator and the zero-filling.
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

thread_local! {
    /// This thread's panel of a fed product's rows (`Fed`), kept for its next panel: all panels of a product
    /// but its last have one size.
    static PANEL: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Buffers shorter than this are left to the allocator; at most `SCRATCH_KEPT` are kept per thread.
const SCRATCH_MIN: usize = 1024;
const SCRATCH_KEPT: usize = 32;

/// A float buffer of `n` elements whose contents the caller overwrites.
fn scratch(n: usize) -> Vec<f32> {
    let mut v = if n >= SCRATCH_MIN { SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default() } else { Vec::new() };
    v.resize(n, 0.0);
    v
}

/// Gives a finished block's float buffers back for the next block on this thread.
fn recycle(vals: Vec<Option<Blk>>) {
    SCRATCH.with(|s| {
        let mut kept = s.borrow_mut();
        for blk in vals.into_iter().flatten() {
            if let Blk::Owned(Vals::F(v)) = blk
                && v.len() >= SCRATCH_MIN
                && kept.len() < SCRATCH_KEPT
            {
                kept.push(v);
            }
        }
    });
}

/// What the pass does for one of its nodes in each block.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    /// Read through a view made before the pass: a node computed before it, or a layout op of such nodes.
    Leaf,
    /// Node `a`'s elements (a `Reshape`, or a `Broadcast` that only adds size-1 axes).
    Same(usize),
    /// Per-row node `a`, repeated along each row (a `Broadcast` into the rows).
    Expand(usize),
    /// An elementwise op on its operands' block values.
    Elementwise,
    /// Each row of node `a` folded.
    Reduce(ReduceOp, usize),
    /// `softmax` of node `a`'s rows, `exp(a - max) * (1 / sum(exp(a - max)))`, one row at a time in the
    /// core's first-level cache: the steps of its maximum, difference, exponentials, sum and scaling, fused
    /// (`fuse`; `softmax_rows`), within the sums' tolerance of those steps.
    Softmax(usize),
    /// GELU's erf form of node `a`, `(0.5 * a) * (1 + erf(a * c))`, in one pass (`vmath::gelu_erf_fast`)
    /// instead of five (`fuse`): the same operations, so the same bits.
    Gelu(usize, f32),
    /// Layer normalisation of node `x`'s rows with gain `w`, shift `b` (nodes of the rows' size) and `eps`,
    /// `(x - mean) * rsqrt(mean((x - mean)^2) + eps) * w + b`, a row at a time (`fuse`; `layer_norm_rows`),
    /// within the means' tolerance of its steps.
    LayerNorm { x: usize, w: usize, b: usize, eps: f32 },
}

/// A launch's row pass, planned from its ops and evaluated shapes (`RowPass::plan`).
#[derive(Debug)]
pub struct RowPass {
    /// Elements per row.
    pub row: usize,
    /// Rows in all.
    pub rows: usize,
    /// The pass's nodes in order: the node, whether it holds whole rows (else one value per row), its step.
    steps: Vec<(usize, bool, Step)>,
    /// Whether each node of the launch is computed by the pass.
    pub in_pass: Vec<bool>,
    /// Whether each node outside the pass reads it (directly or not): those run after it.
    pub after: Vec<bool>,
    /// The pass's nodes whose whole values the launch keeps: stored, or read after the pass.
    outputs: Vec<usize>,
    /// Per step: the nodes it reads for the last time in a block (none of them kept), whose buffers go back
    /// to this thread's scratch as soon as the step is done, so the next step writes into a buffer still in
    /// the core's first-level cache (`freed_after`).
    frees: Vec<Vec<usize>>,
}

impl Step {
    /// The nodes a fused step reads (`Softmax`, `Gelu`, `LayerNorm`); none for the others.
    fn inputs(self) -> Vec<usize> {
        match self {
            Step::Softmax(x) | Step::Gelu(x, _) => vec![x],
            Step::LayerNorm { x, w, b, .. } => vec![x, w, b],
            _ => Vec::new(),
        }
    }
}

/// A leaf of a pass that a matrix product computes as the pass reads it: the product's rows `m0..m1`
/// (`panels.rs`) for the blocks of those rows, on the thread that runs them, so they are read from cache.
/// The leaf is the product (or its bias sum) in row-major order: `m x n` elements, `n` a multiple of the
/// pass's row.
pub struct Fed<'a> {
    /// The node the product's rows are the value of.
    pub leaf: usize,
    /// The product's left operand (`m x k`).
    pub a: &'a super::panels::Lhs,
    /// Its right operand, packed.
    pub b: &'a super::panels::PackedB,
    /// A bias row (`n` floats) the product is added to.
    pub bias: Option<&'a [f32]>,
    pub m: usize,
    pub n: usize,
    /// Rows of the product per panel.
    pub panel: usize,
}

/// One block's value of a node.
enum Blk<'l> {
    /// Floats borrowed from a row-major leaf.
    Slice(&'l [f32]),
    /// One float everywhere.
    Splat(f32),
    Owned(Vals),
    /// Per-row node `a`'s values repeated along each row.
    Expand(usize),
    /// Node `a`'s value.
    Same(usize),
}

/// A block's part of one kept result.
enum Out<'o> {
    F(&'o mut [f32]),
    I(&'o mut [i32]),
    U(&'o mut [u32]),
    B(&'o mut [bool]),
}

impl RowPass {
    /// The row pass of a launch, if it has one worth running: `stored` are the nodes the launch stores,
    /// `outside` nodes the pass must not compute (a matmul's bias `Add`, computed by the matmul).
    pub fn plan(ops: &GroupOps, shapes: &[Vec<usize>], stored: &[usize], outside: &[usize]) -> Option<RowPass> {
        let nodes = &ops.nodes;
        let n = nodes.len();
        let count = |k: usize| shapes.get(k).map(|s| s.iter().product::<usize>());
        let trailing = |k: usize| match &nodes[k].op {
            TensorOp::Reduce { input, axes, .. } => {
                let r = shapes.get(input.index()).map_or(0, Vec::len);
                !axes.is_empty()
                    && axes.iter().enumerate().all(|(i, &a)| a + axes.len() == r + i)
                    && matches!(nodes[k].dtype, DType::F32 | DType::F16)
            }
            _ => false,
        };
        // The row space: that of the first float reduction over trailing axes.
        let first = (0..n).find(|&k| trailing(k))?;
        let TensorOp::Reduce { input, .. } = &nodes[first].op else { return None };
        let (total, rows) = (count(input.index())?, count(first)?);
        if rows == 0 || total <= rows || !total.is_multiple_of(rows) {
            return None;
        }
        let row = total / rows;
        // Nodes the pass can compute: elementwise and layout ops of the row space's two sizes, and its
        // reductions. A broadcast of a node it computes must be an identity or a per-row value along rows.
        let mut eligible = vec![false; n];
        for k in 0..n {
            let c = count(k)?;
            let op = &nodes[k].op;
            let sized = c == total || c == rows;
            eligible[k] = sized
                && !outside.contains(&k)
                && match op {
                    TensorOp::Reduce { input, .. } => trailing(k) && count(input.index()) == Some(total) && c == rows,
                    TensorOp::Broadcast(a) => {
                        !eligible[a.index()]
                            || count(a.index()) == Some(c)
                            || (c == total && along_rows(&shapes[a.index()], &shapes[k], row))
                    }
                    op => op.is_elementwise() || matches!(op, TensorOp::Reshape(_)),
                };
        }
        // The pass: eligible nodes on a path of eligible nodes into a reduction or out of one.
        let is_reduce = |k: usize| matches!(nodes[k].op, TensorOp::Reduce { .. });
        let mut feeds = vec![false; n];
        for k in (0..n).rev() {
            if eligible[k] && (is_reduce(k) || feeds[k]) {
                feeds[k] = true;
                for o in nodes[k].op.operands() {
                    if eligible[o.index()] {
                        feeds[o.index()] = true;
                    }
                }
            }
        }
        let mut in_pass = feeds;
        for k in 0..n {
            if eligible[k] && nodes[k].op.operands().iter().any(|o| in_pass[o.index()]) {
                in_pass[k] = true;
            }
        }
        let mut after = vec![false; n];
        for k in 0..n {
            after[k] = !in_pass[k] && nodes[k].op.operands().iter().any(|o| in_pass[o.index()] || after[o.index()]);
        }
        let steps = steps(nodes, shapes, &in_pass, &after, total)?;
        if steps.iter().filter(|(_, _, s)| !matches!(s, Step::Leaf)).count() < 2 {
            return None;
        }
        let outputs: Vec<usize> = (0..n)
            .filter(|&k| {
                in_pass[k]
                    && (stored.contains(&k)
                        || (0..n).any(|u| !in_pass[u] && nodes[u].op.operands().iter().any(|o| o.index() == k)))
            })
            .collect();
        let steps = fuse(nodes, steps, &outputs);
        let frees = freed_after(nodes, &steps, &outputs);
        Some(RowPass { row, rows, steps, in_pass, after, outputs, frees })
    }

    /// How many softmaxes, GELUs and layer norms the pass runs fused (`Step::Softmax`, `Step::Gelu`,
    /// `Step::LayerNorm`).
    #[cfg(test)]
    pub fn fused(&self) -> (usize, usize, usize) {
        let count = |f: fn(&Step) -> bool| self.steps.iter().filter(|(.., step)| f(step)).count();
        (
            count(|s| matches!(s, Step::Softmax(_))),
            count(|s| matches!(s, Step::Gelu(..))),
            count(|s| matches!(s, Step::LayerNorm { .. })),
        )
    }

    /// The elementwise tree rooted at `root` as `Run::materialize` sees it (`root` and the elementwise and
    /// `Reshape` nodes under it not computed yet; everything else read through views) as a pass of rows of
    /// one element: blocks of elements, each node of the tree computed once per block into a reused buffer.
    /// `fed` is a node read as a leaf though not computed: a fed matmul's leaf (`Fed`).
    pub fn tree(run: &Run, root: usize, fed: Option<usize>) -> Option<RowPass> {
        let nodes = &run.ops.nodes;
        let n = nodes.len();
        let computed = |k: usize| matches!(run.values.get(k), Some(Some(_)));
        let mut in_pass = vec![false; n];
        let mut stack = vec![root];
        while let Some(k) = stack.pop() {
            let op = &nodes.get(k)?.op;
            if in_pass[k] || computed(k) || Some(k) == fed {
                continue;
            }
            if op.is_elementwise() || matches!(op, TensorOp::Reshape(_)) {
                in_pass[k] = true;
                stack.extend(op.operands().iter().map(|o| o.index()));
            } else if k == root && matches!(op, TensorOp::Broadcast(_) | TensorOp::Permute(..)) {
                in_pass[k] = true;
            }
        }
        let total: usize = run.shapes.get(root)?.iter().product();
        let after = vec![false; n];
        let steps = steps(nodes, run.shapes, &in_pass, &after, total)?;
        let outputs = vec![root];
        let steps = fuse(nodes, steps, &outputs);
        let frees = freed_after(nodes, &steps, &outputs);
        Some(RowPass { row: 1, rows: total, steps, in_pass, after, outputs, frees })
    }

    /// Runs the pass: every node it reads from outside is computed in `run`'s values (or an inline node
    /// computed on the way), except the `fed` leaf, whose rows a matrix product computes panel by panel on
    /// the thread that reads them (`Fed`). Returns the kept results, by node.
    pub fn run(&self, run: &Run, fed: Option<&Fed>) -> Result<Vec<(usize, Value)>, String> {
        let nodes = &run.ops.nodes;
        let (row, rows) = (self.row, self.rows);
        let fed_leaf = fed.map(|f| f.leaf);
        // Views of what the pass reads from outside, made once.
        let mut leaves: Vec<(usize, View, Option<Vec<f32>>)> = Vec::new();
        for &(k, _, step) in &self.steps {
            let read: Vec<usize> = match step {
                Step::Leaf => vec![k],
                Step::Elementwise | Step::Reduce(..) => {
                    nodes[k].op.operands().iter().map(|o| o.index()).filter(|&o| !self.in_pass[o]).collect()
                }
                Step::Softmax(_) | Step::Gelu(..) | Step::LayerNorm { .. } => {
                    step.inputs().into_iter().filter(|&o| !self.in_pass[o]).collect()
                }
                _ => Vec::new(),
            };
            for o in read {
                if Some(o) != fed_leaf && !leaves.iter().any(|(l, ..)| *l == o) {
                    let view = run.view(o)?;
                    view.check()?;
                    leaves.push((o, view, None));
                }
            }
        }
        let full = |k: usize| run.shapes[k].iter().product::<usize>() == rows * row;
        let per_block = (BLOCK / row).max(1);
        // A leaf repeating one stretch of floats that divides the row (a broadcast bias, a layer norm's gain
        // and shift) has the same elements in every block: gathered once, not once per block.
        for (_, view, repeated) in &mut leaves {
            if row > 1 && view.shape.iter().product::<usize>() == rows * row {
                *repeated = repeated_rows(view, row)
                    .map(|period| period.iter().copied().cycle().take(per_block.min(rows) * row).collect());
            }
        }
        // The blocks of rows, in groups each run in order on one thread: a block each, or with a fed leaf
        // the blocks of one panel of the product's rows.
        let blocks = |lo: usize, hi: usize| (lo..hi).step_by(per_block).map(move |r| (r, (r + per_block).min(hi)));
        let groups: Vec<Vec<(usize, usize)>> = match fed {
            None => blocks(0, rows).map(|b| vec![b]).collect(),
            Some(f) => {
                if f.m * f.n != rows * row || f.n % row != 0 || f.panel == 0 {
                    return Err("internal error: a matrix product does not cover a row pass".to_string());
                }
                let per_panel = f.panel * f.n / row;
                (0..rows).step_by(per_panel).map(|lo| blocks(lo, (lo + per_panel).min(rows)).collect()).collect()
            }
        };
        // The kept results, and each block's part of them.
        let mut kept: Vec<Vals> = self
            .outputs
            .iter()
            .map(|&k| {
                let len = if full(k) { rows * row } else { rows };
                match nodes[k].dtype {
                    DType::F32 | DType::F16 => Vals::F(run.buffers.take(len)),
                    dtype => Vals::zeros(dtype, len),
                }
            })
            .collect();
        let mut parts: Vec<Vec<Vec<Out>>> =
            groups.iter().map(|g| g.iter().map(|_| Vec::with_capacity(kept.len())).collect()).collect();
        for (&k, vals) in self.outputs.iter().zip(&mut kept) {
            let per_row = if full(k) { row } else { 1 };
            macro_rules! split {
                ($v:expr, $kind:ident) => {{
                    let mut rest = &mut $v[..];
                    for (group, outs) in groups.iter().zip(&mut parts) {
                        for (&(r0, r1), out) in group.iter().zip(outs) {
                            let (chunk, tail) = std::mem::take(&mut rest).split_at_mut((r1 - r0) * per_row);
                            out.push(Out::$kind(chunk));
                            rest = tail;
                        }
                    }
                }};
            }
            match vals {
                Vals::F(v) => split!(v, F),
                Vals::I(v) => split!(v, I),
                Vals::U(v) => split!(v, U),
                Vals::B(v) => split!(v, B),
            }
        }
        groups.into_par_iter().zip(parts).try_for_each(|(group, outs)| {
            let Some(f) = fed else {
                return group
                    .into_iter()
                    .zip(outs)
                    .try_for_each(|((r0, r1), o)| self.block(run, &leaves, r0, r1, o, None));
            };
            // The panel of the product's rows under this group's blocks, computed here, read while hot.
            let (e0, e1) = (group[0].0 * row, group[group.len() - 1].1 * row);
            let (m0, m1) = (e0 / f.n, e1 / f.n);
            let mut panel = PANEL.with(|p| p.take());
            panel.resize(e1 - e0, 0.0);
            if let Some(bias) = f.bias {
                super::panels::fill_rows(&mut panel, bias);
            }
            f.a.product_rows(f.b, m0, m1, &mut panel, f.n, f.bias.is_some())?;
            for ((r0, r1), o) in group.into_iter().zip(outs) {
                self.block(run, &leaves, r0, r1, o, Some((f.leaf, &panel[r0 * row - e0..r1 * row - e0])))?;
            }
            PANEL.with(|p| p.replace(panel));
            Ok(())
        })?;
        Ok(self.outputs.iter().zip(kept).map(|(&k, vals)| (k, Value::new(vals, run.shapes[k].clone()))).collect())
    }

    /// Rows `r0..r1`: every step in order, the kept results written to `outs`.
    fn block<'l>(
        &self,
        run: &Run,
        leaves: &'l [(usize, View, Option<Vec<f32>>)],
        r0: usize,
        r1: usize,
        outs: Vec<Out>,
        fed: Option<(usize, &'l [f32])>,
    ) -> Result<(), String> {
        let mut outs: Vec<Option<Out>> = outs.into_iter().map(Some).collect();
        let nodes = &run.ops.nodes;
        let row = self.row;
        let nr = r1 - r0;
        let mut vals: Vec<Option<Blk>> = (0..nodes.len()).map(|_| None).collect();
        for (k, view, repeated) in leaves {
            if let Some(block) = repeated {
                vals[*k] = Some(Blk::Slice(&block[..nr * row]));
                continue;
            }
            let (lo, hi) =
                if view.shape.iter().product::<usize>() == self.rows { (r0, r1) } else { (r0 * row, r1 * row) };
            vals[*k] = Some(leaf_part(view, lo, hi));
        }
        if let Some((leaf, rows)) = fed {
            vals[leaf] = Some(Blk::Slice(rows));
        }
        let mismatch = |_| "its operands have the wrong element types".to_string();
        for (j, &(k, full, step)) in self.steps.iter().enumerate() {
            if j > 0 {
                free(&mut vals, &self.frees[j - 1]);
            }
            let n = if full { nr * row } else { nr };
            let node = &nodes[k];
            let value = match step {
                Step::Leaf => continue,
                Step::Same(a) => Blk::Same(a),
                Step::Expand(a) => Blk::Expand(a),
                Step::Reduce(op, a) => {
                    let Lit::F(init) = reduce_init(op, node.dtype) else { return Err(mismatch(())) };
                    let data = dense_floats(&vals, a, nr * row, row)?;
                    let mut out = vec![0.0f32; nr];
                    fused::fold_rows(op, init, &data, row, &mut out);
                    let mut out = Vals::F(out);
                    reduce_finish(op, node.dtype, &mut out, nr, row);
                    Blk::Owned(out)
                }
                Step::Softmax(_) | Step::Gelu(..) | Step::LayerNorm { .. } => {
                    let inputs = step.inputs();
                    let floats =
                        inputs.iter().map(|&i| dense_floats(&vals, i, n, row)).collect::<Result<Vec<_>, _>>()?;
                    let run = |o: &mut [f32]| match step {
                        Step::Gelu(_, c) => crate::eval::vmath::gelu_erf_fast(&floats[0], c, o),
                        Step::LayerNorm { eps, .. } => layer_norm_rows(&floats[0], &floats[1], &floats[2], row, eps, o),
                        _ => softmax_rows(&floats[0], row, o),
                    };
                    // A kept result is computed straight into its place.
                    let kept = self.outputs.iter().position(|&o| o == k);
                    if let Some(i) = kept
                        && let Some(Out::F(dst)) = outs[i].take()
                    {
                        run(dst);
                        vals[k] = Some(Blk::Slice(dst));
                        continue;
                    }
                    let mut out = scratch(n);
                    run(&mut out);
                    Blk::Owned(Vals::F(out))
                }
                Step::Elementwise => {
                    // A kept float result is computed straight into its place.
                    let kept = self.outputs.iter().position(|&o| o == k);
                    if let Some(i) = kept
                        && matches!(node.dtype, DType::F32 | DType::F16)
                        && let Some(Out::F(dst)) = outs[i].take()
                    {
                        if float_into(&node.op, node.dtype, &vals, n, row, dst)? {
                            vals[k] = Some(Blk::Slice(dst));
                            continue;
                        }
                        outs[i] = Some(Out::F(dst));
                    }
                    elementwise(&node.op, node.dtype, &vals, n, row)?
                }
            };
            vals[k] = Some(value);
        }
        for (&k, out) in self.outputs.iter().zip(outs) {
            // Already written in place.
            let Some(mut out) = out else { continue };
            let full = run.shapes[k].iter().product::<usize>() != self.rows;
            let n = if full { nr * row } else { nr };
            // Floats straight from where they are; anything else through a buffer.
            if let Out::F(o) = &mut out {
                match at(&vals, k)? {
                    Blk::Slice(s) => {
                        o.copy_from_slice(s);
                        continue;
                    }
                    Blk::Owned(Vals::F(v)) => {
                        o.copy_from_slice(v);
                        continue;
                    }
                    Blk::Splat(x) => {
                        o.fill(*x);
                        continue;
                    }
                    _ => {}
                }
            }
            let data = dense(&vals, k, n, row)?;
            match (out, &data) {
                (Out::F(o), Vals::F(d)) => o.copy_from_slice(&d[..n]),
                (Out::I(o), Vals::I(d)) => o.copy_from_slice(&d[..n]),
                (Out::U(o), Vals::U(d)) => o.copy_from_slice(&d[..n]),
                (Out::B(o), Vals::B(d)) => o.copy_from_slice(&d[..n]),
                _ => return Err(mismatch(())),
            }
        }
        recycle(vals);
        Ok(())
    }
}

/// Each node's step in `steps`, by node (`None` for the nodes the pass does not compute).
fn kinds(nodes: &[OpNode], steps: &[(usize, bool, Step)]) -> Vec<Option<Step>> {
    let mut kind = vec![None; nodes.len()];
    for &(k, _, step) in steps {
        kind[k] = Some(step);
    }
    kind
}

/// Per step of `steps`, the nodes whose last reader in the pass it is, when the pass computes them into
/// buffers of its own: neither kept (`outputs`, nor what a kept node is the `Same` of) nor a leaf. A `Same`
/// or `Expand` node is read where its readers are, so they extend its source's life.
fn freed_after(nodes: &[OpNode], steps: &[(usize, bool, Step)], outputs: &[usize]) -> Vec<Vec<usize>> {
    let kind = kinds(nodes, steps);
    let mut last: Vec<Option<usize>> = vec![None; nodes.len()];
    fn mark(kind: &[Option<Step>], last: &mut [Option<usize>], o: usize, j: usize) {
        let Some(slot) = last.get_mut(o) else { return };
        *slot = Some(j);
        if let Some(Step::Same(a) | Step::Expand(a)) = kind[o] {
            mark(kind, last, a, j);
        }
    }
    for (j, &(k, _, step)) in steps.iter().enumerate() {
        match step {
            Step::Elementwise => {
                for o in nodes[k].op.operands() {
                    mark(&kind, &mut last, o.index(), j);
                }
            }
            Step::Reduce(_, a) => mark(&kind, &mut last, a, j),
            Step::Softmax(_) | Step::Gelu(..) | Step::LayerNorm { .. } => {
                for a in step.inputs() {
                    mark(&kind, &mut last, a, j);
                }
            }
            Step::Leaf | Step::Same(_) | Step::Expand(_) => {}
        }
    }
    // A kept node is read at the end, and so is what it is the `Same` of.
    for &o in outputs {
        mark(&kind, &mut last, o, steps.len());
    }
    let mut frees = vec![Vec::new(); steps.len()];
    for &(k, _, step) in steps {
        if !matches!(step, Step::Leaf | Step::Same(_) | Step::Expand(_))
            && let Some(j) = last[k]
            && j < steps.len()
        {
            frees[j].push(k);
        }
    }
    frees
}

/// The steps with the three hot patterns of transformer layers each fused into one step at its result's
/// place, when nothing else reads their intermediates and none is kept (all `f32`; reshapes between them
/// are seen through, each product and sum in either order):
/// - `Step::Softmax(x)`: `y = e * r` where `e = exp(x - m)`, `m` the rows' maximum of `x` repeated along
///   them, and `r = 1 / s` repeated along them, `s` the rows' sum of `e`;
/// - `Step::Gelu(x, c)`: `y = (0.5 * x) * (1 + erf(x * c))`;
/// - `Step::LayerNorm { x, w, b, eps }`: `y = n * w + b` where `n = c * r`, `r = rsqrt(mean(c * c) + eps)`
///   repeated along the rows and `c = x - mean(x)`, the mean repeated along them.
fn fuse(nodes: &[OpNode], steps: Vec<(usize, bool, Step)>, outputs: &[usize]) -> Vec<(usize, bool, Step)> {
    let kind = kinds(nodes, &steps);
    // The node a chain of `Same` steps (reshapes) ends at, and the one a chain of `Same` and one `Expand`
    // ends at (a per-row value repeated along its rows); the nodes passed on the way go to `path`.
    let same = |mut k: usize, path: &mut Vec<usize>| {
        while let Some(Step::Same(a)) = kind[k] {
            path.push(k);
            k = a;
        }
        k
    };
    let expanded = |k: usize, path: &mut Vec<usize>| {
        let k = same(k, path);
        let Some(Step::Expand(a)) = kind[k] else { return None };
        path.push(k);
        Some(same(a, path))
    };
    let f32s = |k: usize| nodes[k].dtype == DType::F32;
    // The `f32` constant node `k` is, through broadcasts and reshapes.
    let constant = |mut k: usize| loop {
        match &nodes[k].op {
            TensorOp::Broadcast(a) | TensorOp::Reshape(a) => k = a.index(),
            TensorOp::Constant(c) if f32s(k) => match Lit::from_scalar(*c, DType::F32) {
                Lit::F(v) => return Some(v),
                _ => return None,
            },
            _ => return None,
        }
    };
    // `op(a, b)` of node `k` as (the operand that is a constant, the other), in either order.
    let with_constant = |k: usize, op: BinaryOp| {
        let TensorOp::Binary(o, a, b) = nodes[k].op else { return None };
        if o != op {
            return None;
        }
        [(a.index(), b.index()), (b.index(), a.index())].into_iter().find_map(|(c, x)| Some((constant(c)?, x)))
    };
    // The `x` of node `d = x - m`, with `m` the rows' `op` of `x` repeated along them (softmax's shift by
    // the maximum, layer norm's centring by the mean).
    let centered = |d: usize, op: ReduceOp, path: &mut Vec<usize>| {
        let d = same(d, path);
        let TensorOp::Binary(BinaryOp::Sub, x, em) = nodes[d].op else { return None };
        let x = same(x.index(), path);
        let m = expanded(em.index(), path)?;
        let TensorOp::Reduce { op: o, input, .. } = nodes[m].op else { return None };
        (o == op && same(input.index(), path) == x).then(|| {
            path.extend([d, m]);
            x
        })
    };
    let full_node = |x: usize| steps.iter().any(|&(k, full, _)| k == x && full);
    let mut fused: Vec<(usize, Step, Vec<usize>)> = Vec::new();
    for &(y, full, step) in &steps {
        let TensorOp::Binary(top, p, q) = nodes[y].op else { continue };
        if !full || !matches!(step, Step::Elementwise) || !f32s(y) {
            continue;
        }
        let sides = [(p.index(), q.index()), (q.index(), p.index())];
        let softmax = sides.into_iter().filter(|_| top == BinaryOp::Mul).find_map(|(e, r)| {
            let mut path = Vec::new();
            let e = same(e, &mut path);
            let TensorOp::Unary(UnaryOp::Exp, d) = nodes[e].op else { return None };
            let r = expanded(r, &mut path)?;
            let TensorOp::Binary(BinaryOp::Div, c, s) = nodes[r].op else { return None };
            let s = same(s.index(), &mut path);
            let TensorOp::Reduce { op: ReduceOp::Sum, input, .. } = nodes[s].op else { return None };
            if constant(c.index()) != Some(1.0) || same(input.index(), &mut path) != e {
                return None;
            }
            let x = centered(d.index(), ReduceOp::Max, &mut path)?;
            path.extend([e, r, s]);
            Some((Step::Softmax(x), path))
        });
        let gelu = || {
            sides.into_iter().filter(|_| top == BinaryOp::Mul).find_map(|(h, g)| {
                let mut path = Vec::new();
                let h = same(h, &mut path);
                let (half, x) = with_constant(h, BinaryOp::Mul)?;
                let x = same(x, &mut path);
                let g = same(g, &mut path);
                let (one, e) = with_constant(g, BinaryOp::Add)?;
                let e = same(e, &mut path);
                let TensorOp::Unary(UnaryOp::Erf, z) = nodes[e].op else { return None };
                let z = same(z.index(), &mut path);
                let (c, xz) = with_constant(z, BinaryOp::Mul)?;
                if half != 0.5 || one != 1.0 || same(xz, &mut path) != x {
                    return None;
                }
                path.extend([h, g, e, z]);
                Some((Step::Gelu(x, c), path))
            })
        };
        let layer_norm = || {
            sides.into_iter().filter(|_| top == BinaryOp::Add).find_map(|(g, b)| {
                let mut path = Vec::new();
                let g = same(g, &mut path);
                let TensorOp::Binary(BinaryOp::Mul, g1, g2) = nodes[g].op else { return None };
                [(g1.index(), g2.index()), (g2.index(), g1.index())].into_iter().find_map(|(nn, w)| {
                    let mut path = path.clone();
                    let nn = same(nn, &mut path);
                    let TensorOp::Binary(BinaryOp::Mul, n1, n2) = nodes[nn].op else { return None };
                    [(n1.index(), n2.index()), (n2.index(), n1.index())].into_iter().find_map(|(c, er)| {
                        let mut path = path.clone();
                        let c = same(c, &mut path);
                        let r = expanded(er, &mut path)?;
                        let TensorOp::Unary(UnaryOp::Rsqrt, ve) = nodes[r].op else { return None };
                        let ve = same(ve.index(), &mut path);
                        let (eps, v) = with_constant(ve, BinaryOp::Add)?;
                        let v = same(v, &mut path);
                        let TensorOp::Reduce { op: ReduceOp::Mean, input: sq, .. } = nodes[v].op else { return None };
                        let sq = same(sq.index(), &mut path);
                        let TensorOp::Binary(BinaryOp::Mul, s1, s2) = nodes[sq].op else { return None };
                        if same(s1.index(), &mut path) != c || same(s2.index(), &mut path) != c {
                            return None;
                        }
                        let x = centered(c, ReduceOp::Mean, &mut path)?;
                        path.extend([g, nn, r, ve, v, sq]);
                        Some((Step::LayerNorm { x, w, b, eps }, path))
                    })
                })
            })
        };
        let Some((step, path)) = softmax.or_else(gelu).or_else(layer_norm) else { continue };
        let computed = |k: usize| matches!(kind[k], Some(Step::Elementwise | Step::Reduce(..)));
        let own = path.iter().all(|&k| f32s(k) && kind[k].is_some() && !outputs.contains(&k))
            && path.iter().all(|&k| !matches!(kind[k], Some(Step::Leaf)))
            && path.iter().filter(|&&k| !matches!(kind[k], Some(Step::Same(_) | Step::Expand(_)))).all(|&k| computed(k))
            && step.inputs().iter().all(|&x| f32s(x) && (kind[x].is_none() || full_node(x)) && !path.contains(&x))
            // Nothing outside the pattern reads its intermediates.
            && (0..nodes.len())
                .filter(|u| !path.contains(u) && *u != y)
                .all(|u| nodes[u].op.operands().iter().all(|o| !path.contains(&o.index())));
        if own {
            fused.push((y, step, path));
        }
    }
    let dropped: Vec<usize> = fused.iter().flat_map(|(_, _, path)| path.iter().copied()).collect();
    steps
        .into_iter()
        .filter(|(k, ..)| !dropped.contains(k))
        .map(|(k, full, step)| match fused.iter().find(|(y, ..)| *y == k) {
            Some(&(_, fused, _)) => (k, full, fused),
            None => (k, full, step),
        })
        .collect()
}

/// `o` = the softmax of each row of `x` (rows of `row` floats), a row at a time: its maximum, `exp` of the
/// differences, their sum and the scaling by its reciprocal, in AVX-512 registers where the machine has
/// them (`vmath::softmax_rows_fast`, its sum in another order), else (and for a row holding a NaN) with the
/// kernels and folds the separate steps use, in their order.
fn softmax_rows(x: &[f32], row: usize, o: &mut [f32]) {
    let lowest = match reduce_init(ReduceOp::Max, DType::F32) {
        Lit::F(v) => v,
        _ => f32::NEG_INFINITY,
    };
    let mut d = vec![0.0f32; row];
    let mut general = |x: &[f32], o: &mut [f32]| {
        let (mut m, mut s) = ([0.0f32], [0.0f32]);
        fused::fold_rows(ReduceOp::Max, lowest, x, row, &mut m);
        d.iter_mut().zip(x).for_each(|(d, &x)| *d = x - m[0]);
        crate::eval::vmath::exp_fast(&d, o);
        fused::fold_rows(ReduceOp::Sum, 0.0, o, row, &mut s);
        let r = 1.0 / s[0];
        o.iter_mut().for_each(|o| *o *= r);
    };
    if !crate::eval::vmath::softmax_rows_fast(x, row, o, &mut general) {
        x.chunks_exact(row).zip(o.chunks_exact_mut(row)).for_each(|(x, o)| general(x, o));
    }
}

/// `o` = the layer normalisation of each row of `x` (rows of `row` floats) with gain `w` and shift `b` (of
/// `x`'s length) and `eps`, a row at a time: its mean, the differences, the mean of their squares, and
/// `((x - mean) * rsqrt(variance + eps)) * w + b`, in AVX-512 registers where the machine has them
/// (`vmath::layer_norm_row_fast`, the means' sums in another order than a row fold's), else with the row
/// folds.
fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], row: usize, eps: f32, o: &mut [f32]) {
    let rows = x.chunks_exact(row).zip(w.chunks_exact(row)).zip(b.chunks_exact(row));
    let mut squares = Vec::new();
    for (((x, w), b), o) in rows.zip(o.chunks_exact_mut(row)) {
        if crate::eval::vmath::layer_norm_row_fast(x, w, b, eps, o) {
            continue;
        }
        let n = row as f32;
        let mut sum = [0.0f32];
        fused::fold_rows(ReduceOp::Sum, 0.0, x, row, &mut sum);
        let mean = sum[0] / n;
        o.iter_mut().zip(x).for_each(|(o, &x)| *o = x - mean);
        squares.clear();
        squares.extend(o.iter().map(|&c| c * c));
        fused::fold_rows(ReduceOp::Sum, 0.0, &squares, row, &mut sum);
        let r = 1.0 / (sum[0] / n + eps).sqrt();
        o.iter_mut().zip(w).zip(b).for_each(|((o, &w), &b)| *o = *o * r * w + b);
    }
}

/// Gives the float buffers of `nodes` (computed by the pass, read by no later step) back to this thread's
/// scratch.
fn free(vals: &mut [Option<Blk>], nodes: &[usize]) {
    for &k in nodes {
        if matches!(vals.get(k), Some(Some(Blk::Owned(Vals::F(_)))))
            && let Some(Blk::Owned(Vals::F(v))) = vals[k].take()
            && v.len() >= SCRATCH_MIN
        {
            SCRATCH.with(|s| {
                let mut kept = s.borrow_mut();
                if kept.len() < SCRATCH_KEPT {
                    kept.push(v);
                }
            });
        }
    }
}

/// The steps of a pass computing the nodes of `in_pass` (those of `total` elements hold whole rows), or
/// `None` when a node the pass reads through a view runs after it.
fn steps(
    nodes: &[crate::program::OpNode],
    shapes: &[Vec<usize>],
    in_pass: &[bool],
    after: &[bool],
    total: usize,
) -> Option<Vec<(usize, bool, Step)>> {
    let count = |k: usize| shapes.get(k).map(|s| s.iter().product::<usize>());
    let mut steps = Vec::new();
    for k in (0..nodes.len()).filter(|&k| in_pass[k]) {
        let operands = nodes[k].op.operands();
        let inner: Vec<usize> = operands.iter().map(|o| o.index()).filter(|&o| in_pass[o]).collect();
        let step = match &nodes[k].op {
            TensorOp::Reshape(_) | TensorOp::Broadcast(_) | TensorOp::Permute(..) if inner.is_empty() => Step::Leaf,
            TensorOp::Reshape(a) => Step::Same(a.index()),
            TensorOp::Broadcast(a) if count(a.index()) == count(k) => Step::Same(a.index()),
            TensorOp::Broadcast(a) => Step::Expand(a.index()),
            TensorOp::Reduce { op, input, .. } => Step::Reduce(*op, input.index()),
            _ => Step::Elementwise,
        };
        // A node read through a view is computed before the pass: never after it.
        let read: Vec<usize> = match step {
            Step::Leaf => operands.iter().map(|o| o.index()).collect(),
            Step::Elementwise | Step::Reduce(..) => {
                operands.iter().map(|o| o.index()).filter(|&o| !in_pass[o]).collect()
            }
            _ => Vec::new(),
        };
        if read.iter().any(|&o| after[o]) {
            return None;
        }
        steps.push((k, count(k) == Some(total), step));
    }
    Some(steps)
}

/// Whether broadcasting `from` to `to` repeats one value per row of `row` elements: `from`'s axes (aligned
/// from the right) are `to`'s up to trailing axes of `row` elements in all, where `from` has size 1.
fn along_rows(from: &[usize], to: &[usize], row: usize) -> bool {
    if from.len() > to.len() {
        return false;
    }
    let padded: Vec<usize> = std::iter::repeat_n(1, to.len() - from.len()).chain(from.iter().copied()).collect();
    let mut inner = 1;
    for t in (0..=to.len()).rev() {
        if inner == row {
            return padded[t..].iter().all(|&d| d == 1) && padded[..t] == to[..t];
        }
        if t == 0 || inner > row {
            return false;
        }
        inner *= to[t - 1];
    }
    false
}

/// The floats a view repeats (`View::repeated`) when that stretch is longer than one float and divides
/// `row`: every run of `row` elements is that stretch repeated.
fn repeated_rows(view: &View, row: usize) -> Option<&[f32]> {
    view.repeated().filter(|stretch| stretch.len() > 1 && row.is_multiple_of(stretch.len()))
}

/// Elements `lo..hi` of a leaf's view (`fused::view_part`) as a block value.
fn leaf_part(view: &View, lo: usize, hi: usize) -> Blk<'_> {
    match fused::view_part(view, lo, hi) {
        Part::Slice(s) => Blk::Slice(s),
        Part::Splat(x) => Blk::Splat(x),
        Part::Owned(v) => Blk::Owned(v),
    }
}

/// Node `k`'s block value, following `Same`.
fn at<'v, 'l>(vals: &'v [Option<Blk<'l>>], mut k: usize) -> Result<&'v Blk<'l>, String> {
    loop {
        match vals.get(k).and_then(Option::as_ref) {
            Some(Blk::Same(a)) => k = *a,
            Some(blk) => return Ok(blk),
            None => return Err(format!("internal error: node {k} of a row pass is read before it is computed")),
        }
    }
}

/// Node `k`'s block value as a float part when it is one without expanding (`None` for `Expand`).
fn part<'v>(vals: &'v [Option<Blk>], k: usize) -> Result<Option<Part<'v>>, String> {
    Ok(match at(vals, k)? {
        Blk::Slice(s) => Some(Part::Slice(s)),
        Blk::Splat(x) => Some(Part::Splat(*x)),
        Blk::Owned(Vals::F(v)) => Some(Part::Slice(v)),
        _ => None,
    })
}

/// Node `k`'s `n` block elements as a buffer (`row` elements per row where it repeats a per-row value).
fn dense(vals: &[Option<Blk>], k: usize, n: usize, row: usize) -> Result<Vals, String> {
    Ok(match at(vals, k)? {
        Blk::Slice(s) => Vals::F(s.to_vec()),
        Blk::Splat(x) => Vals::F(vec![*x; n]),
        Blk::Owned(v) => v.clone(),
        Blk::Expand(a) => match dense(vals, *a, n / row, row)? {
            Vals::F(v) => Vals::F(v.iter().flat_map(|&x| std::iter::repeat_n(x, row)).collect()),
            Vals::I(v) => Vals::I(v.iter().flat_map(|&x| std::iter::repeat_n(x, row)).collect()),
            Vals::U(v) => Vals::U(v.iter().flat_map(|&x| std::iter::repeat_n(x, row)).collect()),
            Vals::B(v) => Vals::B(v.iter().flat_map(|&x| std::iter::repeat_n(x, row)).collect()),
        },
        Blk::Same(_) => unreachable!("`at` follows `Same`"),
    })
}

/// Node `k`'s `n` block elements as floats, borrowed where they are stored.
fn dense_floats<'v>(
    vals: &'v [Option<Blk>],
    k: usize,
    n: usize,
    row: usize,
) -> Result<std::borrow::Cow<'v, [f32]>, String> {
    if let Some(Part::Slice(s)) = part(vals, k)? {
        return Ok(std::borrow::Cow::Borrowed(s));
    }
    match dense(vals, k, n, row)? {
        Vals::F(v) => Ok(std::borrow::Cow::Owned(v)),
        _ => Err("its operands have the wrong element types".to_string()),
    }
}

/// An elementwise op's `n` block elements: float ops on float parts without copies (a per-row operand
/// applied row by row), anything else on buffers with the shared kernels.
fn elementwise<'l>(
    op: &TensorOp,
    dtype: DType,
    vals: &[Option<Blk<'l>>],
    n: usize,
    row: usize,
) -> Result<Blk<'l>, String> {
    let mismatch = |_| "its operands have the wrong element types".to_string();
    if matches!(dtype, DType::F32 | DType::F16) {
        // One float everywhere stays one float.
        match op {
            TensorOp::Unary(op, a) => {
                if let Some(Part::Splat(x)) = part(vals, a.index())? {
                    let mut one = [0.0f32];
                    fused::unary_f32(*op, dtype, &[x], &mut one).map_err(mismatch)?;
                    return Ok(Blk::Splat(one[0]));
                }
            }
            TensorOp::Binary(op, a, b) if !op.is_comparison() => {
                if let (Some(Part::Splat(s)), Some(Part::Splat(t))) = (part(vals, a.index())?, part(vals, b.index())?) {
                    let mut one = [0.0f32];
                    kernels::binary_f32(*op, dtype, &[s], &[t], &mut one).map_err(mismatch)?;
                    return Ok(Blk::Splat(one[0]));
                }
            }
            _ => {}
        }
        let mut out = scratch(n);
        if float_into(op, dtype, vals, n, row, &mut out)? {
            return Ok(Blk::Owned(Vals::F(out)));
        }
    }
    if let Some(blk) = compare_or_select(op, dtype, vals, n)? {
        return Ok(blk);
    }
    match fused::elementwise_vals(op, dtype, n, |r| dense(vals, r.index(), n, row))? {
        Some(out) => Ok(Blk::Owned(out)),
        None => Err("internal error: a row pass step is not elementwise".to_string()),
    }
}

/// A comparison of float parts, or a float select on a `bool` block between float parts (a ReLU's
/// gradient, `select(x > 0, g, 0)`), read in place with a scalar kept one value: the results of
/// `kernels::binary` and `kernels::select` without copying the operands out; `None` for anything else.
fn compare_or_select<'l>(
    op: &TensorOp,
    dtype: DType,
    vals: &[Option<Blk<'l>>],
    n: usize,
) -> Result<Option<Blk<'l>>, String> {
    /// `out[i] = f(x[i], y[i])` where a side may be one value.
    fn each<T: Copy>(x: &Part, y: &Part, out: &mut [T], f: impl Fn(f32, f32) -> T) -> Option<()> {
        match (x, y) {
            (Part::Splat(a), Part::Splat(b)) => out.fill(f(*a, *b)),
            (Part::Splat(a), y) => out.iter_mut().zip(y.floats()?).for_each(|(o, &b)| *o = f(*a, b)),
            (x, Part::Splat(b)) => out.iter_mut().zip(x.floats()?).for_each(|(o, &a)| *o = f(a, *b)),
            (x, y) => out.iter_mut().zip(x.floats()?).zip(y.floats()?).for_each(|((o, &a), &b)| *o = f(a, b)),
        }
        Some(())
    }
    let fits = |p: &Part| p.floats().is_none_or(|v| v.len() >= n);
    match op {
        TensorOp::Binary(cmp, a, b) if cmp.is_comparison() && dtype == DType::Bool => {
            let (Some(x), Some(y)) = (part(vals, a.index())?, part(vals, b.index())?) else { return Ok(None) };
            if !fits(&x) || !fits(&y) {
                return Ok(None);
            }
            let mut out = vec![false; n];
            let done = match cmp {
                BinaryOp::Lt => each(&x, &y, &mut out, |a, b| a < b),
                BinaryOp::Le => each(&x, &y, &mut out, |a, b| a <= b),
                BinaryOp::Gt => each(&x, &y, &mut out, |a, b| a > b),
                BinaryOp::Ge => each(&x, &y, &mut out, |a, b| a >= b),
                BinaryOp::Eq => each(&x, &y, &mut out, |a, b| a == b),
                BinaryOp::Ne => each(&x, &y, &mut out, |a, b| a != b),
                _ => None,
            };
            Ok(done.map(|()| Blk::Owned(Vals::B(out))))
        }
        TensorOp::Select { cond, on_true, on_false } if matches!(dtype, DType::F32 | DType::F16) => {
            let Blk::Owned(Vals::B(c)) = at(vals, cond.index())? else { return Ok(None) };
            let (Some(t), Some(f)) = (part(vals, on_true.index())?, part(vals, on_false.index())?) else {
                return Ok(None);
            };
            if c.len() < n || !fits(&t) || !fits(&f) {
                return Ok(None);
            }
            // The bits picked as `kernels::select` picks them.
            let mut out = scratch(n);
            let pick = |c: bool, t: f32, f: f32| f32::from_bits(kernels::select_bits(c, t.to_bits(), f.to_bits()));
            let c = &c[..n];
            match (&t, &f) {
                (Part::Splat(t), Part::Splat(f)) => {
                    out.iter_mut().zip(c).for_each(|(o, &c)| *o = pick(c, *t, *f));
                }
                (Part::Splat(t), f) => {
                    let f = f.floats().unwrap_or_default();
                    out.iter_mut().zip(c).zip(f).for_each(|((o, &c), &f)| *o = pick(c, *t, f));
                }
                (t, Part::Splat(f)) => {
                    let t = t.floats().unwrap_or_default();
                    out.iter_mut().zip(c).zip(t).for_each(|((o, &c), &t)| *o = pick(c, t, *f));
                }
                (t, f) => {
                    let (t, f) = (t.floats().unwrap_or_default(), f.floats().unwrap_or_default());
                    out.iter_mut().zip(c).zip(t).zip(f).for_each(|(((o, &c), &t), &f)| *o = pick(c, t, f));
                }
            }
            Ok(Some(Blk::Owned(Vals::F(out))))
        }
        _ => Ok(None),
    }
}

/// A float unary or arithmetic op's `n` block elements written into `out` (a per-row operand applied row by
/// row, float parts read in place); `false`, writing nothing, for any other op.
fn float_into(
    op: &TensorOp,
    dtype: DType,
    vals: &[Option<Blk>],
    n: usize,
    row: usize,
    out: &mut [f32],
) -> Result<bool, String> {
    let mismatch = |_| "its operands have the wrong element types".to_string();
    match op {
        TensorOp::Unary(op, a) => {
            let x = dense_floats(vals, a.index(), n, row)?;
            fused::unary_f32(*op, dtype, &x, out).map_err(mismatch)?;
            Ok(true)
        }
        TensorOp::Binary(op, a, b) if !op.is_comparison() => {
            let (a, b) = (a.index(), b.index());
            // A per-row operand on one side: each row's value as a scalar operand.
            for (rows_side, other, left) in [(a, b, true), (b, a, false)] {
                if let Blk::Expand(p) = at(vals, rows_side)?
                    && !matches!(at(vals, other)?, Blk::Expand(_))
                {
                    let per_row = dense_floats(vals, *p, n / row, row)?;
                    let x = dense_floats(vals, other, n, row)?;
                    kernels::binary_f32_rows(*op, dtype, &x, &per_row, row, left, out).map_err(mismatch)?;
                    return Ok(true);
                }
            }
            if let (Some(x), Some(y)) = (part(vals, a)?, part(vals, b)?)
                && let Some(done) = fused::binary_parts(*op, dtype, &x, &y, out)
            {
                done.map_err(mismatch)?;
                return Ok(true);
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::{along_rows, repeated_rows};
    use crate::cpu::value::Value;
    use crate::cpu::view::View;
    use crate::eval::values::Vals;

    #[test]
    fn a_broadcast_row_is_repeated_when_it_divides_the_row() {
        let gain = View::whole(Value::new(Vals::F(vec![1.0, 2.0, 3.0, 4.0]), vec![4]));
        let rows = gain.clone().broadcast(&[3, 4]);
        assert_eq!(repeated_rows(&rows, 4), Some(&[1.0, 2.0, 3.0, 4.0][..]));
        assert_eq!(repeated_rows(&rows, 8), Some(&[1.0, 2.0, 3.0, 4.0][..]));
        assert_eq!(repeated_rows(&rows, 6), None, "4 does not divide 6");
        let plain = View::whole(Value::new(Vals::F((0..12).map(|x| x as f32).collect()), vec![3, 4]));
        assert_eq!(repeated_rows(&plain, 4), None, "every row differs");
        let columns = View::whole(Value::new(Vals::F(vec![1.0, 2.0, 3.0]), vec![3, 1])).broadcast(&[3, 4]);
        assert_eq!(repeated_rows(&columns, 4), None, "one value per row is not a repeated row");
    }

    #[test]
    fn a_broadcast_along_rows_is_recognised() {
        assert!(along_rows(&[4, 3, 1], &[4, 3, 5], 5));
        assert!(!along_rows(&[4, 3], &[4, 3, 5], 5));
        assert!(along_rows(&[4, 1, 1], &[4, 3, 5], 15));
        assert!(!along_rows(&[4, 1, 1], &[4, 3, 5], 5));
        assert!(!along_rows(&[1, 3, 1], &[4, 3, 5], 5));
        assert!(!along_rows(&[3, 1], &[4, 3, 5], 5));
        assert!(!along_rows(&[1], &[4, 3, 5], 15));
    }
}
