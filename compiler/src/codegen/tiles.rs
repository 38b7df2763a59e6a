//! Register-tiled contraction kernels: which groups get one, and with which tile. A group qualifies when
//! its root is a matmul, or elementwise ops and reshapes over exactly one matmul (the epilogue: bias,
//! activation, scale, residual add, and the reshape back from a Linear layer's flattened rows), so that
//! the root's element at flat index `f` needs only the matmul's element `f`; and so is each sibling of horizontal fusion (the Q, K and V
//! projections), with the same contraction length; each invocation then computes a `rows x cols` block of
//! every output, keeping the block's sums in registers so every operand element it loads serves `rows` or `cols`
//! multiply-adds instead of one. Each output element still sums its products in `k` order from zero, as
//! the interpreter does, so tiling changes no result beyond a device's multiply-add contraction.
//!
//! The kernel (`kernel/tile.rs`; staged through workgroup memory, `kernel/shared.rs`): invocation `t` is output block (batch, tile row, tile column)
//! with the column fastest, so neighbouring invocations read neighbouring columns of the right operand;
//! rows and columns past the edge are clamped for loading and skipped when storing, so any size works.

use super::group::Group;
use crate::dim::Dim;
use crate::ir::{DType, Graph, NodeId, Op};

/// The tiling of one contraction group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TilePlan {
    /// Each stored node of the group (the root, then siblings of horizontal fusion) with the matmul whose
    /// sums are held in registers for it; all have the root's shape and the same contraction length.
    pub matmuls: Vec<(NodeId, NodeId)>,
    /// Output rows per invocation.
    pub rows: u32,
    /// Output columns per invocation.
    pub cols: u32,
    /// Every operand runs along `k` in rows of a tensor the kernel reads, contiguous and 16-byte aligned
    /// (`contiguous`), and `k`'s length is a constant multiple of 4: operands are loaded four `k` at a
    /// time as vectors (the sums still add the products one `k` after another). Never with a `SharedTile`
    /// (whose staging loads are scalar).
    pub vector_k: bool,
}

/// Invocations along each side of a shared-memory tiled workgroup: 16 x 16 invocations, each computing a
/// `rows x cols` block, so a workgroup computes a `16 rows x 16 cols` tile of the output.
pub const SHARED_SIDE: u32 = 16;
// A shared-tile workgroup is one plain workgroup: its invocations stage the tiles together.
const _: () = assert!(SHARED_SIDE * SHARED_SIDE == crate::codegen::WORKGROUP_SIZE);
/// Workgroup memory a shared-memory tiled kernel may use: WebGPU's guaranteed minimum, so every device has it.
pub const SHARED_BYTES: u32 = 16384;
/// The `k_step`s a shared tile may take, preferred first.
pub const K_STEPS: [u32; 2] = [16, 8];

/// A contraction tiled through workgroup memory (the schedule of discrete GPUs): the workgroup's
/// invocations load a `k_step`-long slice of the left operand's rows and of the right operand's columns
/// together (consecutive invocations reading consecutive elements), wait at a barrier, then each
/// multiplies its block out of workgroup memory, so every element loaded from the device serves `16 x
/// rows` (or `16 x cols`) multiply-adds. Sums still run over `k` in order from zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedTile {
    /// Elements of `k` staged per step (one barrier pair each).
    pub k_step: u32,
    /// Per matmul of `TilePlan::matmuls`: whether its left and right operands run along `k` in the tensor
    /// they are read from (then the staging loads walk `k` fastest, else the rows or columns).
    pub along_k: Vec<(bool, bool)>,
}

impl SharedTile {
    /// Workgroup-memory words per `k` row of an operand tile `side` long; a tile staged `k` fastest gets
    /// one word of padding so the invocations storing one `k` each hit different memory banks.
    pub fn stride(side: u32, along_k: bool) -> u32 {
        side + u32::from(along_k)
    }
}

/// The tile shape (rows, columns per invocation) a target uses for contractions.
pub type TileShape = (u32, u32);

/// The left and right operands of matmul `m` (`None` when `m` is no matmul): the one place the tile
/// analysis, its checks and both contraction emitters read them from.
pub fn operands(graph: &Graph, m: NodeId) -> Option<(NodeId, NodeId)> {
    match graph.node(m).op {
        Op::MatMul(a, b) => Some((a, b)),
        _ => None,
    }
}

/// The tile plan of `group`, when it is a contraction with an elementwise epilogue (see the module
/// comment) and `tile` is not 1x1.
pub fn plan(graph: &Graph, group: &Group, tile: TileShape) -> Option<TilePlan> {
    if tile.0 * tile.1 <= 1 {
        return None;
    }
    let count = |shape: &[Dim]| shape.iter().try_fold(Dim::constant(1), |n, d| n.mul(d).ok());
    let contraction_length = |m: NodeId| operands(graph, m).and_then(|(a, _)| graph.node(a).ty.shape.last().cloned());
    let mut matmuls = Vec::new();
    for stored in group.roots() {
        let matmul = spine_matmul(graph, group, stored)?;
        let shape = &graph.node(matmul).ty.shape;
        if shape.len() < 2
            || count(shape) != count(&graph.node(stored).ty.shape)
            || matmuls.iter().any(|&(_, m): &(NodeId, NodeId)| {
                m == matmul || contraction_length(m) != contraction_length(matmul) || graph.node(m).ty.shape != *shape
            })
        {
            return None;
        }
        matmuls.push((stored, matmul));
    }
    let vector_k = matmuls.iter().all(|&(_, m)| {
        let node = graph.node(m);
        let Some((a, b)) = operands(graph, m) else { return false };
        let rank = node.ty.rank();
        node.ty.dtype == DType::F32
            && contraction_length(m).and_then(|k| k.as_const()).is_some_and(|k| k % 4 == 0)
            && contiguous(graph, group, a, rank - 1)
            && contiguous(graph, group, b, rank - 2)
    });
    Some(TilePlan { matmuls, rows: tile.0, cols: tile.1, vector_k })
}

impl TilePlan {
    /// The output tile of one shared-memory workgroup: `[16 * rows, 16 * cols]`.
    pub fn workgroup_tile(&self) -> [u32; 2] {
        [SHARED_SIDE * self.rows, SHARED_SIDE * self.cols]
    }

    /// How this plan stages its operands through workgroup memory (`SharedTile`), when the tiles fit
    /// `SHARED_BYTES` and neither output side is a constant shorter than the workgroup's tile (a small
    /// product would leave most of the workgroup idle; the register-tiled kernel suits it better).
    pub fn staged(&self, graph: &Graph, group: &Group) -> Option<SharedTile> {
        let shape = &graph.node(self.matmuls[0].1).ty.shape;
        let rank = shape.len();
        let [tile_rows, tile_cols] = self.workgroup_tile();
        if [(&shape[rank - 2], tile_rows), (&shape[rank - 1], tile_cols)]
            .iter()
            .any(|(d, side)| d.as_const().is_some_and(|n| n < i64::from(*side)))
        {
            return None;
        }
        let along_k: Vec<(bool, bool)> = self
            .matmuls
            .iter()
            .map(|&(_, m)| match operands(graph, m) {
                Some((a, b)) => {
                    (runs_along(graph, group, a, rank - 1, false), runs_along(graph, group, b, rank - 2, false))
                }
                None => (false, false),
            })
            .collect();
        let k_step = K_STEPS
            .into_iter()
            .find(|&k| self.stages_whole(k) && self.staged_words(k, &along_k) * 4 <= SHARED_BYTES)?;
        Some(SharedTile { k_step, along_k })
    }

    /// Whether each invocation stages `k_step * 16 * rows / 256` left and `.. cols ..` right elements:
    /// whole numbers.
    pub fn stages_whole(&self, k_step: u32) -> bool {
        (k_step * self.rows).is_multiple_of(SHARED_SIDE) && (k_step * self.cols).is_multiple_of(SHARED_SIDE)
    }

    /// Workgroup-memory words the staged tiles take for `k_step` with operands running as `along_k` says.
    pub fn staged_words(&self, k_step: u32, along_k: &[(bool, bool)]) -> u32 {
        let [tile_rows, tile_cols] = self.workgroup_tile();
        along_k
            .iter()
            .map(|&(a, b)| k_step * (SharedTile::stride(tile_rows, a) + SharedTile::stride(tile_cols, b)))
            .sum()
    }
}

/// Whether moving along `axis` of `id` moves along the last axis of a tensor the kernel reads (through
/// broadcasts, permutes and reshapes computed in the group), and that tensor's rows are constant multiples
/// of 4 elements, so four consecutive elements along `axis`, from a multiple of 4, are one aligned vector.
fn contiguous(graph: &Graph, group: &Group, id: NodeId, axis: usize) -> bool {
    runs_along(graph, group, id, axis, true)
}

/// Whether moving along `axis` of `id` moves along the last axis of a tensor the kernel reads (through
/// broadcasts, permutes and reshapes computed in the group); with `aligned`, also that the tensor is `f32`
/// with rows of a constant multiple of 4 elements (`contiguous`).
fn runs_along(graph: &Graph, group: &Group, id: NodeId, axis: usize, aligned: bool) -> bool {
    let node = graph.node(id);
    let shape = &node.ty.shape;
    let last = shape.len().wrapping_sub(1);
    let multiple_of_4 = |d: &Dim| !aligned || d.as_const().is_some_and(|n| n > 0 && n % 4 == 0);
    if !group.contains(id) || matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
        return axis == last && multiple_of_4(&shape[axis]) && (!aligned || node.ty.dtype == DType::F32);
    }
    match &node.op {
        Op::Permute(a, perm) => runs_along(graph, group, *a, perm[axis], aligned),
        Op::Broadcast(a) => {
            let inner = &graph.node(*a).ty.shape;
            let lead = shape.len() - inner.len();
            axis >= lead
                && inner[axis - lead].as_const() != Some(1)
                && runs_along(graph, group, *a, axis - lead, aligned)
        }
        // A reshape splitting the last axis (or keeping it): a row of the result is part of a row of the
        // operand, starting at a multiple of its length.
        Op::Reshape(a) => {
            let inner = &graph.node(*a).ty.shape;
            let (Some(out_len), Some(in_len)) =
                (shape.last().and_then(Dim::as_const), inner.last().and_then(Dim::as_const))
            else {
                return false;
            };
            axis == last
                && out_len > 0
                && multiple_of_4(&Dim::constant(out_len))
                && in_len % out_len == 0
                && runs_along(graph, group, *a, inner.len() - 1, aligned)
        }
        _ => false,
    }
}

/// The one matmul that stored node `id` depends on through elementwise ops (whose operands on the way
/// have their shape) and reshapes computed in the group, so that `id`'s element at flat index `f` uses only
/// the matmul's element at flat index `f`; `None` when there is none, several, or the dependence passes
/// through anything else (a broadcast, permute or reduction).
fn spine_matmul(graph: &Graph, group: &Group, id: NodeId) -> Option<NodeId> {
    let mut found = None;
    let mut stack = vec![id];
    let mut seen = std::collections::HashSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(n) {
            continue;
        }
        let node = graph.node(n);
        let spine =
            |o: &NodeId| group.contains(*o) && !group.roots().any(|r| r == *o) && depends_on_matmul(graph, group, *o);
        match &node.op {
            Op::MatMul(..) => {
                if found.replace(n).is_some_and(|f| f != n) {
                    return None;
                }
            }
            Op::Unary(..) | Op::Cast(_) | Op::Binary(..) | Op::Select { .. } => {
                for o in node.op.operands().iter().filter(|o| spine(o)) {
                    if graph.node(*o).ty.shape != node.ty.shape {
                        return None;
                    }
                    stack.push(*o);
                }
            }
            Op::Reshape(a) if spine(a) => stack.push(*a),
            _ => return None,
        }
    }
    found
}

/// Whether `id`, computed in the group, reads a matmul computed in the group.
fn depends_on_matmul(graph: &Graph, group: &Group, id: NodeId) -> bool {
    let mut stack = vec![id];
    let mut seen = std::collections::HashSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(n) || !group.contains(n) {
            continue;
        }
        if matches!(graph.node(n).op, Op::MatMul(..)) {
            return true;
        }
        stack.extend(graph.node(n).op.operands());
    }
    false
}
