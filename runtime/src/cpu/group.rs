//! One launch on the CPU: its `GroupOps` planned once (`GroupPlan::new`) and run (`GroupPlan::run`) node by
//! node on host buffers, each intermediate freed after its last reader inside the group. Every op has a
//! kernel: the fast ones of this executor where it has them (`Kernel`), else the shared definitions in
//! `eval/` (the same code the reference interpreter runs). Shapes are evaluated from the symbols and every
//! op's operand shapes checked against its rule before its kernel runs, so a damaged bundle is an error
//! naming the launch and the op, never a panic.

use super::buffers::Buffers;
use super::fused::Run;
use super::maps::MapNode;
use super::matmul;
use super::panels::{self, Lhs, PackedB, strided};
use super::rows::{Fed, RowPass};
use super::value::Value;
use super::view::View;
use crate::DType;
use crate::eval::kernels::{self, KindMismatch};
use crate::eval::values::{Lit, Val, Vals};
use crate::eval::{along, layout, reduce};
use crate::exec::CpuFailure;
use crate::ops::BinaryOp;
use crate::program::{Check, Launch, OpNode, Program, TensorId, TensorOp};
use rayon::prelude::*;
use std::sync::{Arc, Mutex, Weak};

impl CpuFailure {
    pub(crate) fn internal(launch: usize, name: &str, problem: String) -> CpuFailure {
        CpuFailure { launch, name: name.to_string(), op: None, problem }
    }
}

/// One slice of a chain's run (`chain.rs`), as a launch of it sees it (`GroupPlan::run`).
#[derive(Debug)]
pub struct Slice<'a> {
    /// Per node of the launch: whether it is sliced (its shape's leading axis holds `len` positions).
    pub sliced: &'a [bool],
    /// The slice's first position along the leading axis.
    pub start: usize,
    /// Its positions.
    pub len: usize,
    /// This slice of the tensors earlier launches of the chain computed.
    pub local: &'a [(TensorId, Value)],
}

impl Slice<'_> {
    /// This slice of `tensor`, when an earlier launch of the chain computed it.
    pub fn local(&self, tensor: TensorId) -> Option<&Value> {
        self.local.iter().find(|(t, _)| *t == tensor).map(|(_, v)| v)
    }
}

/// A launch planned for the CPU.
#[derive(Debug)]
pub struct GroupPlan {
    index: usize,
    name: String,
    ops: crate::program::GroupOps,
    /// The launch's run-time checks, to name the op and its source line in a failure.
    checks: Vec<Check>,
    /// For each node, the last node of the group whose evaluation reads it (its own index when none does).
    last_use: Vec<usize>,
    /// Whether each node is computed inside its one reader's evaluation (see `new`).
    inline: Vec<bool>,
    /// For a `MatMul` whose one reader (through reshapes) adds a broadcast to it (a bias): that `Add` and the
    /// broadcast. The product is accumulated onto the bias's rows and is the `Add`'s value; the matmul's own
    /// value is never read.
    bias: Vec<Option<(usize, usize)>>,
    /// For each `Map` node, its plans (`maps.rs`); `None` for other nodes.
    maps: Vec<Option<MapNode>>,
    /// Each node's tree root: itself, or the root of the elementwise tree it is computed in.
    eval_at: Vec<usize>,
    /// For a `MatMul` whose product only a row pass or one tree reads: how the pass reads it (`Feed`).
    feeds: Vec<Option<Feed>>,
    /// For each `MatMul`, its right operand packed by the last run (reused while the operand is the same
    /// buffer, as a param's weight is from run to run).
    packed: Vec<PackCache>,
    /// Runs started, numbering each (`packed_b` packs a weight seen unchanged in two different runs).
    runs: std::sync::atomic::AtomicUsize,
}

/// What a matmul remembers of its right operand between runs (`GroupPlan::packed_b`).
#[derive(Debug)]
enum Packing {
    /// Seen once, not packed: its buffer (weakly: a training step's old weights are freed; the allocation of
    /// a live `Weak` is never reused, so pointer equality cannot be fooled) and the view's layout.
    Seen { run: usize, buffer: Weak<Val>, offset: usize, shape: Vec<usize>, strides: Vec<usize> },
    /// Seen again unchanged: packed, the view kept with its buffer.
    Packed(View, Arc<PackedB>),
}

type PackCache = Mutex<Option<Packing>>;

/// A matmul whose product the launch reads only through one node, `leaf` (the product, its bias sum, or a
/// reshape of either), read only by elementwise nodes: a row pass or the tree around them can compute the
/// product's rows as it reads them (`rows::Fed`) instead of the product being a tensor of its own.
#[derive(Debug, Clone)]
struct Feed {
    leaf: usize,
    /// The bias `Add` and its broadcast row, when the product is accumulated onto a bias.
    bias: Option<(usize, usize)>,
    /// The nodes between the matmul and `leaf` (with both), never computed on their own when fed.
    chain: Vec<usize>,
}

impl GroupPlan {
    /// Plans `launch` (number `index`); a launch without ops (a hand-written GPU kernel) is refused by name.
    pub fn new(index: usize, launch: &Launch) -> Result<GroupPlan, CpuFailure> {
        if launch.ops.nodes.is_empty() {
            return Err(CpuFailure::internal(
                index,
                &launch.name,
                "the launch carries no ops (a kernel only the GPU can run); the CPU executor needs the ops the \
                 compiler writes beside each kernel"
                    .to_string(),
            ));
        }
        let nodes = &launch.ops.nodes;
        let stored: Vec<usize> = launch.ops.stores.iter().map(|s| s.node.index()).collect();
        // Each node's readers (one entry per operand reference).
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (k, node) in nodes.iter().enumerate() {
            for operand in node.op.operands() {
                if let Some(u) = users.get_mut(operand.index()) {
                    u.push(k);
                }
            }
        }
        // Inline: an elementwise or layout node, not stored, whose readers all belong to one elementwise tree
        // (elementwise and `Reshape` nodes evaluated in their root's turn, each once per block): computed
        // inside that tree (or read through strides) instead of as a tensor of its own. `eval_at` is the
        // tree's root, the node itself for a root.
        let layout =
            |op: &TensorOp| matches!(op, TensorOp::Reshape(_) | TensorOp::Broadcast(_) | TensorOp::Permute(..));
        let mut eval_at: Vec<usize> = (0..nodes.len()).collect();
        for k in (0..nodes.len()).rev() {
            let node = &nodes[k];
            if !(node.op.is_elementwise() || layout(&node.op)) || stored.contains(&k) || users[k].is_empty() {
                continue;
            }
            let root = eval_at[users[k][0]];
            let tree_root = nodes[root].op.is_elementwise() || layout(&nodes[root].op);
            let one_tree = tree_root
                && users[k].iter().all(|&u| {
                    u > k
                        && eval_at[u] == root
                        && (nodes[u].op.is_elementwise() || matches!(nodes[u].op, TensorOp::Reshape(_)))
                });
            // A node read once joins its reader's turn whatever that is (a layout op read through strides).
            if one_tree || (users[k].len() == 1 && users[k][0] > k) {
                eval_at[k] = root;
            }
        }
        let inline: Vec<bool> = (0..nodes.len()).map(|k| eval_at[k] != k).collect();
        let mut last_use: Vec<usize> = (0..nodes.len()).collect();
        for (k, readers) in users.iter().enumerate() {
            for &u in readers {
                last_use[k] = last_use[k].max(eval_at[u]);
            }
        }
        let bias: Vec<Option<(usize, usize)>> = nodes
            .iter()
            .enumerate()
            .map(|(k, node)| {
                // The one reader, through reshapes read once.
                let mut read = k;
                let u = loop {
                    let [u] = users[read][..] else { return None };
                    match nodes[u].op {
                        TensorOp::Reshape(_) if !stored.contains(&u) => read = u,
                        _ => break u,
                    }
                };
                let TensorOp::Binary(BinaryOp::Add, x, y) = nodes[u].op else { return None };
                let other = if x.index() == read { y.index() } else { x.index() };
                let f32s = node.dtype == DType::F32 && nodes[u].dtype == DType::F32;
                // Not when the `Add` is inside a tree: the tree adds the bias in cache.
                (matches!(node.op, TensorOp::MatMul(..))
                    && f32s
                    && eval_at[u] == u
                    && u > k
                    && x != y
                    && !stored.contains(&k)
                    && matches!(nodes[other].op, TensorOp::Broadcast(_))
                    && layout_of_tensors(nodes, other))
                .then_some((u, other))
            })
            .collect();
        let maps = nodes
            .iter()
            .map(|node| match &node.op {
                TensorOp::Map(map) => Some(MapNode::new(map, node.shape.len(), node.dtype)),
                _ => None,
            })
            .collect();
        let feeds: Vec<Option<Feed>> = (0..nodes.len())
            .map(|k| {
                if !matches!(nodes[k].op, TensorOp::MatMul(..)) || nodes[k].dtype != DType::F32 || stored.contains(&k) {
                    return None;
                }
                // Along the chain of single readers: reshapes, and the bias `Add` the product is accumulated onto.
                // A bias added inside an elementwise tree (GELU's) joins too: the panels start from it.
                let mut chain = vec![k];
                let mut at = k;
                let mut bias: Option<(usize, usize)> = bias[k];
                loop {
                    let next = match users[at][..] {
                        [u] if !stored.contains(&u) => u,
                        _ => break,
                    };
                    let tree_bias = match nodes[next].op {
                        TensorOp::Binary(BinaryOp::Add, x, y)
                            if bias.is_none() && x != y && nodes[next].dtype == DType::F32 =>
                        {
                            let other = if x.index() == at { y.index() } else { x.index() };
                            (matches!(nodes[other].op, TensorOp::Broadcast(_)) && layout_of_tensors(nodes, other))
                                .then_some((next, other))
                        }
                        _ => None,
                    };
                    let joins = matches!(nodes[next].op, TensorOp::Reshape(_))
                        || bias.is_some_and(|(add, _)| add == next)
                        || tree_bias.is_some();
                    if !joins {
                        break;
                    }
                    bias = bias.or(tree_bias);
                    chain.push(next);
                    at = next;
                }
                // The bias `Add`, when there is one, is on the chain.
                if bias.is_some_and(|(add, _)| !chain.contains(&add)) {
                    return None;
                }
                let leaf = at;
                let readers_elementwise =
                    !users[leaf].is_empty() && users[leaf].iter().all(|&u| u > leaf && nodes[u].op.is_elementwise());
                (readers_elementwise && !stored.contains(&leaf)).then_some(Feed { leaf, bias, chain })
            })
            .collect();
        let packed = (0..nodes.len()).map(|_| Mutex::new(None)).collect();
        Ok(GroupPlan {
            index,
            name: launch.name.clone(),
            ops: launch.ops.clone(),
            checks: launch.checks.clone(),
            last_use,
            inline,
            bias,
            maps,
            eval_at,
            feeds,
            packed,
            runs: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Runs the launch: `tensors` holds every tensor available before it (by `TensorId`), `shapes` every
    /// tensor's evaluated shape, `symbols` the bound symbol values. Returns the stored tensors' values.
    pub fn run(
        &self,
        program: &Program,
        tensors: &[Option<Value>],
        shapes: &[Vec<usize>],
        symbols: &[i64],
        buffers: &Buffers,
        slice: Option<&Slice>,
    ) -> Result<Vec<(TensorId, Value)>, CpuFailure> {
        let run_id = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nodes = &self.ops.nodes;
        let mut values: Vec<Option<Value>> = vec![None; nodes.len()];
        // A sliced tensor is read in place: its whole value, a window of it (`Run::windows`).
        let mut windows: Vec<Option<usize>> = vec![None; nodes.len()];
        let stored: Vec<usize> = self.ops.stores.iter().map(|s| s.node.index()).collect();
        let mut node_shapes = nodes
            .iter()
            .map(|node| eval_shape(node, symbols).map_err(|problem| self.failure(node, problem)))
            .collect::<Result<Vec<_>, _>>()?;
        // A slice's sliced nodes hold `len` positions of their leading axis; the whole shapes are kept to
        // check the tensors sliced from.
        let full_shapes = slice.map(|_| node_shapes.clone());
        if let Some(slice) = slice {
            for (k, shape) in node_shapes.iter_mut().enumerate() {
                if slice.sliced.get(k) == Some(&true) {
                    match shape.first_mut() {
                        Some(lead) if *lead >= slice.start + slice.len => *lead = slice.len,
                        _ => {
                            return Err(self.failure(
                                &nodes[k],
                                format!(
                                    "its leading axis does not hold the slice {}..{}",
                                    slice.start,
                                    slice.start + slice.len
                                ),
                            ));
                        }
                    }
                }
            }
        }
        // The rules of the ops fused chunks evaluate, checked before any runs.
        for (node, shape) in nodes.iter().zip(&node_shapes) {
            let operand_shapes: Vec<&[usize]> =
                node.op.operands().iter().map(|r| node_shapes.get(r.index()).map_or(&[][..], |s| &s[..])).collect();
            layout_rule(&node.op, shape, &operand_shapes).map_err(|problem| self.failure(node, problem))?;
        }
        // The tensors read, first (a bias is read before the matmul it is added to).
        for (k, node) in nodes.iter().enumerate() {
            let TensorOp::Tensor(t) = &node.op else { continue };
            let fail = |problem: String| self.failure(node, problem);
            let name = || program.tensor(*t).name.clone();
            let sliced = slice.filter(|s| s.sliced.get(k) == Some(&true));
            // A tensor an earlier launch of the chain computed for this slice.
            if let Some(local) = sliced.and_then(|s| s.local(*t)) {
                if local.0.shape != node_shapes[k] {
                    return Err(fail(format!("tensor `{}` does not have the slice's shape", name())));
                }
                values[k] = Some(local.clone());
                continue;
            }
            let value = tensors
                .get(t.0 as usize)
                .and_then(Option::as_ref)
                .ok_or_else(|| fail(format!("tensor `{}` is not available", name())))?;
            let shape = &full_shapes.as_ref().unwrap_or(&node_shapes)[k];
            if shapes.get(t.0 as usize) != Some(shape) || &value.0.shape != shape {
                return Err(fail(format!("tensor `{}` does not have the shape {shape:?}", name())));
            }
            if let Some(s) = sliced {
                windows[k] = Some(s.start * shape[1..].iter().product::<usize>());
            }
            values[k] = Some(value.clone());
        }
        // A row pass, when the launch has one, computes its nodes in one go: the nodes it reads run before
        // it, those that read it after it (`PASS` marks its turn), and intermediates are freed at the end.
        const PASS: usize = usize::MAX;
        // Nodes a row pass must leave to others: bias `Add`s their matmuls compute, and the leaf of a matmul
        // that may be fed to the pass (which then reads it as computed).
        let mut outside: Vec<usize> = self.bias.iter().flatten().map(|&(add, _)| add).collect();
        let bias_count = outside.len();
        outside.extend(self.feed_candidate(&node_shapes).map(|(_, feed)| feed.leaf));
        let mut pass = RowPass::plan(&self.ops, &node_shapes, &stored, &outside);
        // A matmul whose rows the pass (or the tree around its product) computes as it reads them.
        let fed = self.fed(&node_shapes, &values, &windows, buffers, pass.as_ref(), run_id);
        if fed.as_ref().is_none_or(|(.., root)| root.is_some()) && outside.len() > bias_count {
            // Not fed after all: the pass computes the candidate's leaf as usual.
            outside.truncate(bias_count);
            pass = RowPass::plan(&self.ops, &node_shapes, &stored, &outside);
        }
        let fed_chain: &[usize] = fed.as_ref().map_or(&[], |(feed, ..)| &feed.chain);
        let order: Vec<usize> = match &pass {
            Some(p) => {
                let mut order: Vec<usize> = (0..nodes.len()).filter(|&k| !p.in_pass[k] && !p.after[k]).collect();
                order.push(PASS);
                order.extend((0..nodes.len()).filter(|&k| p.after[k]));
                order
            }
            None => (0..nodes.len()).collect(),
        };
        for k in order {
            if k == PASS {
                let Some(p) = &pass else { continue };
                let run = Run { ops: &self.ops, values: &values, windows: &windows, shapes: &node_shapes, buffers };
                let feed = fed.as_ref().filter(|(.., root)| root.is_none()).map(|(_, f, _)| f.as_fed());
                let kept = p
                    .run(&run, feed.as_ref())
                    .map_err(|problem| CpuFailure::internal(self.index, &self.name, problem))?;
                for (k, value) in kept {
                    values[k] = Some(value);
                }
                continue;
            }
            let node = &nodes[k];
            // An inline node, a tensor, a bias `Add` its matmul computed, or a fed matmul's chain.
            if self.inline[k] || values[k].is_some() || fed_chain.contains(&k) {
                continue;
            }
            let fail = |problem: String| self.failure(node, problem);
            let shape = &node_shapes[k];
            let run = Run { ops: &self.ops, values: &values, windows: &windows, shapes: &node_shapes, buffers };
            let mut alias = None;
            let value = match &node.op {
                TensorOp::Tensor(_) => return Err(fail("internal error: a tensor leaf read late".to_string())),
                op if op.is_elementwise()
                    || matches!(op, TensorOp::Reshape(_) | TensorOp::Broadcast(_) | TensorOp::Permute(..)) =>
                {
                    // The node's tree, one block of elements at a time.
                    let fed_leaf = fed.as_ref().filter(|(.., root)| *root == Some(k)).map(|(feed, ..)| feed.leaf);
                    let tree = RowPass::tree(&run, k, fed_leaf)
                        .ok_or_else(|| fail("internal error: a node out of range".to_string()))?;
                    let feed = fed.as_ref().filter(|(.., root)| *root == Some(k)).map(|(_, f, _)| f.as_fed());
                    let mut kept = tree.run(&run, feed.as_ref()).map_err(&fail)?;
                    kept.pop()
                        .map(|(_, value)| value)
                        .ok_or_else(|| fail("internal error: a tree kept nothing".to_string()))?
                }
                TensorOp::MatMul(a, b) => {
                    let (sa, sb) = (&node_shapes[a.index()], &node_shapes[b.index()]);
                    matmul_rule(shape, sa, sb).map_err(&fail)?;
                    // A reshape of a view no strides express (attention's context, heads merged): its rows
                    // gathered per panel when the product goes by panels, else all at once.
                    let lhs = Lhs::of(&run, a.index(), sa).map_err(&fail)?;
                    let vb = run.view(b.index()).map_err(&fail)?;
                    let mut out = buffers.take(count(shape));
                    // A bias row under every output row: written first, the product accumulated onto it.
                    let bias_add = self.bias[k].filter(|&(add, _)| {
                        node_shapes[add].last() == shape.last() && count(&node_shapes[add]) == count(shape)
                    });
                    let row = match bias_add {
                        Some((_, other)) => {
                            bias_row(&run.view(other).map_err(&fail)?, *shape.last().unwrap_or(&0)).map(<[f32]>::to_vec)
                        }
                        None => None,
                    };
                    // Enough rows of a 2-D float product: by panels, each writing its bias rows first.
                    let by_panels = match (bias_add, &row) {
                        (Some(_), None) => None,
                        _ => self.panel_product(k, &lhs, &vb, row.as_deref(), &mut out, run_id),
                    };
                    let (product, bias) = match by_panels {
                        Some(done) => {
                            done.map_err(&fail)?;
                            (Vals::F(out), bias_add.map(|(add, _)| add))
                        }
                        None => {
                            let va = lhs.into_view();
                            let bias = match bias_add {
                                Some((add, other)) => {
                                    let view = run.view(other).map_err(&fail)?;
                                    bias_rows(&view, &mut out).then_some(add)
                                }
                                None => None,
                            };
                            (matmul::matmul(node.dtype, &va, &vb, out, bias.is_some()).map_err(&fail)?, bias)
                        }
                    };
                    alias = bias;
                    Value::new(product, bias.map_or_else(|| shape.clone(), |add| node_shapes[add].clone()))
                }
                TensorOp::Reduce { op, input, axes }
                    if reduce_rule(shape, &node_shapes[input.index()], axes).is_ok()
                        && run.rows_fit(k, input.index(), axes) =>
                {
                    run.reduce_rows(k, *op, input.index(), axes).map_err(&fail)?
                }
                _ => {
                    let operands = node
                        .op
                        .operands()
                        .iter()
                        .map(|r| run.get(r.index()))
                        .collect::<Result<Vec<Value>, String>>()
                        .map_err(&fail)?;
                    let data = match (&node.op, &self.maps[k]) {
                        // A map with the plans it keeps (`eval_op` would plan it afresh).
                        (TensorOp::Map(map), Some(planned)) => {
                            run_map_node(planned, map, node.dtype, shape, &operands, symbols, buffers)
                        }
                        _ => eval_op(node, shape, &operands, symbols),
                    }
                    .map_err(&fail)?;
                    Value::new(data, shape.clone())
                }
            };
            match alias {
                Some(add) => values[add] = Some(value),
                None => values[k] = Some(value),
            }
            // Free the nodes whose last reader this is (stored nodes are kept).
            if pass.is_some() {
                continue;
            }
            for (i, slot) in values.iter_mut().enumerate().take(k) {
                if self.last_use[i] == k
                    && !stored.contains(&i)
                    && let Some(value) = slot.take()
                {
                    buffers.recycle(value);
                }
            }
        }
        let results = self
            .ops
            .stores
            .iter()
            .map(|store| {
                let k = store.node.index();
                let missing = || format!("node {} was not computed", store.node.0);
                let value = match values.get(k).and_then(Option::as_ref) {
                    // A window of a tensor stored as it is: its elements copied out.
                    Some(_) if windows[k].is_some() => {
                        let run =
                            Run { ops: &self.ops, values: &values, windows: &windows, shapes: &node_shapes, buffers };
                        run.get(k)
                    }
                    Some(value) => Ok(value.clone()),
                    None => Err(missing()),
                }
                .map_err(|problem| CpuFailure::internal(self.index, &self.name, problem))?;
                Ok((store.tensor, value))
            })
            .collect();
        for (i, slot) in values.iter_mut().enumerate() {
            if !stored.contains(&i)
                && let Some(value) = slot.take()
            {
                buffers.recycle(value);
            }
        }
        results
    }

    /// The candidate matmul (`feed_candidate`) fed this run into its row pass (root `None`) or into the tree
    /// of root `Some(r)`: its `Feed`, its operands (the right one packed) and the bias row. `None` when it
    /// cannot be fed: no candidate, operands not available as views before the launch's nodes run, a product
    /// not covering the pass's rows, or a weight not packed yet (`packed_b`).
    fn fed(
        &self,
        shapes: &[Vec<usize>],
        values: &[Option<Value>],
        windows: &[Option<usize>],
        buffers: &Buffers,
        pass: Option<&RowPass>,
        run_id: usize,
    ) -> Option<(&Feed, Fedding, Option<usize>)> {
        let nodes = &self.ops.nodes;
        let run = Run { ops: &self.ops, values, windows, shapes, buffers };
        self.feed_candidate(shapes).and_then(|(k, feed)| {
            let TensorOp::MatMul(a, b) = nodes[k].op else { return None };
            let (sa, sb) = (&shapes[a.index()], &shapes[b.index()]);
            let (&[m, depth], &[depth_b, n]) = (&sa[..], &sb[..]) else { return None };
            let total = m * n;
            if depth != depth_b || matmul_rule(&shapes[k], sa, sb).is_err() {
                return None;
            }
            if !layout_of_tensors(nodes, a.index()) || !layout_of_tensors(nodes, b.index()) {
                return None;
            }
            let readers: Vec<usize> = (feed.leaf + 1..nodes.len())
                .filter(|&u| nodes[u].op.operands().iter().any(|o| o.index() == feed.leaf))
                .collect();
            let root = match pass {
                Some(p) => {
                    // The leaf read by the pass (or one of its leaf steps, a reshape of the product), the rest of
                    // the chain outside it.
                    let covered = p.rows * p.row == total && n % p.row == 0;
                    let outside = feed.chain.iter().all(|&c| !p.in_pass[c] || c == feed.leaf)
                        && (!p.in_pass[feed.leaf]
                            || nodes[feed.leaf].op.operands().iter().all(|o| !p.in_pass[o.index()]));
                    (covered && outside && readers.iter().all(|&u| p.in_pass[u])).then_some(None)?
                }
                None => {
                    let root = self.eval_at[feed.leaf];
                    let whole = count(&shapes[root]) == total && root != feed.leaf;
                    (whole && readers.iter().all(|&u| self.eval_at[u] == root)).then_some(Some(root))?
                }
            };
            let bias = match feed.bias {
                Some((_, other)) => Some(bias_row(&run.view(other).ok()?, n)?.to_vec()),
                None => None,
            };
            let va = Lhs::of(&run, a.index(), sa).ok()?;
            let vb = run.view(b.index()).ok()?;
            if !va.fits() {
                return None;
            }
            vb.check().ok()?;
            let packed = self.packed_b(k, vb, depth, n, run_id)?;
            Some((feed, Fedding { leaf: feed.leaf, a: va, b: packed, bias, m, n, panel: panel_rows(m) }, root))
        })
    }

    /// The first matmul with a feed whose shapes allow panels (2-D, at least `FEED_ROWS` rows, AVX-512), and
    /// its feed: the one `fed` considers, and the one whose leaf a row pass leaves outside.
    fn feed_candidate(&self, shapes: &[Vec<usize>]) -> Option<(usize, &Feed)> {
        if !panels::available() {
            return None;
        }
        self.feeds.iter().enumerate().find_map(|(k, feed)| {
            let TensorOp::MatMul(a, _) = self.ops.nodes[k].op else { return None };
            let feed = feed.as_ref()?;
            (shapes[a.index()].len() == 2 && shapes[a.index()][0] >= FEED_ROWS).then_some((k, feed))
        })
    }

    /// Matmul `k`'s right operand `b` (`depth x n`) packed for `panels.rs`, or `None` the first time this
    /// view of this buffer is seen: a weight the same from run to run (inference) is packed on its second run
    /// and kept, while one replaced every run (a training step's params, activations) is never packed, its
    /// products staying with `gemm`, which packs as it goes in parallel.
    fn packed_b(&self, k: usize, b: View, depth: usize, n: usize, run: usize) -> Option<Arc<PackedB>> {
        let mut cache = self.packed[k].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*cache {
            Some(Packing::Packed(view, packed)) if view.same(&b) => return Some(packed.clone()),
            Some(Packing::Seen { run: seen, buffer, offset, shape, strides })
                if *seen != run
                    && std::ptr::eq(buffer.as_ptr(), Arc::as_ptr(&b.value.0))
                    && *offset == b.offset
                    && *shape == b.shape
                    && *strides == b.strides =>
            {
                let packed = Arc::new(PackedB::new(strided(&b)?, depth, n)?);
                *cache = Some(Packing::Packed(b, packed.clone()));
                return Some(packed);
            }
            _ => {}
        }
        *cache = Some(Packing::Seen {
            run,
            buffer: Arc::downgrade(&b.value.0),
            offset: b.offset,
            shape: b.shape.clone(),
            strides: b.strides.clone(),
        });
        None
    }

    /// Matmul `k` (left operand `a`, right operand view `b`, both 2-D) by panels of rows in parallel
    /// (`panels.rs`), each panel first filled with `bias` rows when given; `None` when the product is not one
    /// for panels (too few rows, not `f32`, no AVX-512, an operand that is not a float matrix).
    fn panel_product(
        &self,
        k: usize,
        a: &Lhs,
        b: &View,
        bias: Option<&[f32]>,
        out: &mut [f32],
        run_id: usize,
    ) -> Option<Result<(), String>> {
        let (&[m, depth], &[_, n]) = (a.shape(), &b.shape[..]) else { return None };
        if !panels::available()
            || self.ops.nodes[k].dtype != DType::F32
            || m < FEED_ROWS
            || out.len() != m * n
            || n == 0
        {
            return None;
        }
        if !a.fits() {
            return None;
        }
        b.check().ok()?;
        let packed = self.packed_b(k, b.clone(), depth, n, run_id)?;
        let panel = panel_rows(m);
        Some(out.par_chunks_mut(panel * n).enumerate().try_for_each(|(i, chunk)| {
            if let Some(row) = bias {
                panels::fill_rows(chunk, row);
            }
            let r0 = i * panel;
            a.product_rows(&packed, r0, r0 + chunk.len() / n, chunk, n, bias.is_some())
        }))
    }

    fn failure(&self, node: &OpNode, problem: String) -> CpuFailure {
        let op = self.checks.iter().find(|c| c.node == node.ir).cloned().unwrap_or(Check {
            node: node.ir,
            op: node.op.name().to_string(),
            source: None,
        });
        CpuFailure { launch: self.index, name: self.name.clone(), op: Some(Box::new(op)), problem }
    }
}

/// Whether node `k` is tensors read through layout ops only (`Broadcast`, `Reshape`, `Permute`): a view
/// available before any node of the launch runs.
fn layout_of_tensors(nodes: &[OpNode], k: usize) -> bool {
    match &nodes[k].op {
        TensorOp::Tensor(_) => true,
        TensorOp::Broadcast(a) | TensorOp::Reshape(a) | TensorOp::Permute(a, _) => {
            a.index() < k && layout_of_tensors(nodes, a.index())
        }
        _ => false,
    }
}

/// Products of fewer rows are not fed to row passes (too few panels to share among the threads).
const FEED_ROWS: usize = 128;
/// Register tiles of rows per fed panel at most (120 rows: the panel's share of `B` is reused by 20 tiles).
const PANEL_TILES: usize = 20;

/// Rows per panel of a product of `m` rows computed by `panels.rs`: about four panels per thread, whole
/// register tiles, at most `PANEL_TILES` of them.
fn panel_rows(m: usize) -> usize {
    m.div_ceil(rayon::current_num_threads() * 4).div_ceil(panels::MR).clamp(1, PANEL_TILES) * panels::MR
}

/// What a fed matmul's pass needs, owned (`rows::Fed` borrows it).
struct Fedding {
    leaf: usize,
    a: Lhs,
    b: Arc<PackedB>,
    bias: Option<Vec<f32>>,
    m: usize,
    n: usize,
    panel: usize,
}

impl Fedding {
    fn as_fed(&self) -> Fed<'_> {
        Fed {
            leaf: self.leaf,
            a: &self.a,
            b: &self.b,
            bias: self.bias.as_deref(),
            m: self.m,
            n: self.n,
            panel: self.panel,
        }
    }
}

/// The one row of `n` floats a broadcast bias view repeats (`View::repeated`); `None` when it is not one.
fn bias_row(view: &View, n: usize) -> Option<&[f32]> {
    view.repeated().filter(|row| row.len() == n)
}

/// Elements per parallel block of `bias_rows`.
const BIAS_BLOCK: usize = 1 << 16;

/// Writes the rows of `view` into `out` (a buffer of its size) when it repeats one contiguous float row (a
/// broadcast bias); false, writing nothing, otherwise.
fn bias_rows(view: &View, out: &mut [f32]) -> bool {
    let Some(row) = view.shape.last().and_then(|&n| bias_row(view, n)) else { return false };
    let n = row.len();
    if n == 0 || !out.len().is_multiple_of(n) {
        return false;
    }
    // In parallel blocks of whole rows: the output is large and not yet in any cache.
    out.par_chunks_mut(n * (BIAS_BLOCK / n).max(1)).for_each(|block| panels::fill_rows(block, row));
    true
}

/// A node's evaluated shape.
fn eval_shape(node: &OpNode, symbols: &[i64]) -> Result<Vec<usize>, String> {
    node.shape
        .iter()
        .enumerate()
        .map(|(axis, dim)| {
            dim.eval_at(symbols)
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v >= 1)
                .ok_or_else(|| format!("dimension {axis} of its shape is not a size of at least 1"))
        })
        .collect()
}

fn mismatch(_: KindMismatch) -> String {
    "its operands have the wrong element types".to_string()
}

/// `shape`'s element count.
fn count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Checks `ok`, else the op's shape rule is broken (a damaged bundle).
fn rule(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(format!("its operand shapes break its rule ({what})")) }
}

/// The value of one op of `node` with result shape `shape` from its operands' values.
fn eval_op(node: &OpNode, shape: &[usize], operands: &[Value], symbols: &[i64]) -> Result<Vals, String> {
    let dtype = node.dtype;
    let n = count(shape);
    let v = |i: usize| &operands[i].0;
    let eval_dim = |dim: &crate::dim::Dim| {
        dim.eval_at(symbols).ok_or_else(|| "dimension arithmetic overflows 64-bit integers".to_string())
    };
    let same_shape = |ok: &mut bool| {
        for o in operands {
            *ok &= o.0.shape == shape;
        }
    };
    Ok(match &node.op {
        TensorOp::Tensor(_) => return Err("a tensor leaf is not an op".to_string()),
        TensorOp::Constant(s) => Vals::splat(Lit::from_scalar(*s, dtype), 1),
        TensorOp::DimValue(dim) => {
            let value = eval_dim(dim)?;
            let lit = Lit::from_int(value, dtype)
                .ok_or_else(|| format!("dimension {value} does not fit {}", dtype.name()))?;
            Vals::splat(lit, 1)
        }
        TensorOp::Unary(..) | TensorOp::Binary(..) | TensorOp::Select { .. } | TensorOp::Cast(_) => {
            let mut ok = true;
            same_shape(&mut ok);
            rule(ok, "elementwise operands have the result's shape")?;
            let mut out = Vals::zeros(dtype, n);
            match &node.op {
                TensorOp::Unary(op, _) => kernels::unary(*op, dtype, &v(0).data, &mut out, n),
                TensorOp::Binary(op, _, _) => kernels::binary(*op, dtype, &v(0).data, &v(1).data, &mut out, n),
                TensorOp::Select { .. } => kernels::select(&v(0).data, &v(1).data, &v(2).data, &mut out, n),
                _ => kernels::cast(&v(0).data, dtype, &mut out, n),
            }
            .map_err(mismatch)?;
            out
        }
        TensorOp::Broadcast(_) => {
            let from = &v(0).shape;
            rule(
                from.len() <= shape.len() && from.iter().rev().zip(shape.iter().rev()).all(|(&f, &t)| f == t || f == 1),
                "each operand dimension is the result's or 1",
            )?;
            layout::broadcast(&v(0).data, from, shape)
        }
        TensorOp::Reduce { op, axes, .. } => {
            let from = &v(0).shape;
            reduce_rule(shape, from, axes)?;
            reduce::reduce(*op, dtype, &v(0).data, from, axes).map_err(mismatch)?
        }
        TensorOp::ArgReduce { op, axis, .. } => {
            let from = &v(0).shape;
            rule(*axis < from.len() && removed(from, *axis) == shape, "the axis removed")?;
            reduce::arg_reduce(*op, &v(0).data, from, *axis).map_err(mismatch)?
        }
        TensorOp::Scan { op, axis, reverse, .. } => {
            rule(*axis < shape.len() && v(0).shape == shape, "same shape")?;
            reduce::scan(*op, dtype, &v(0).data, shape, *axis, *reverse).map_err(mismatch)?
        }
        TensorOp::MatMul(..) => {
            let (a, b) = (&v(0).shape, &v(1).shape);
            matmul_rule(shape, a, b)?;
            reduce::matmul(dtype, &v(0).data, a, &v(1).data, b).map_err(mismatch)?
        }
        TensorOp::Permute(_, perm) => {
            let from = &v(0).shape;
            let mut seen = vec![false; from.len()];
            let valid = perm.len() == from.len()
                && perm.iter().all(|&p| p < from.len() && !std::mem::replace(&mut seen[p], true))
                && perm.iter().map(|&p| from[p]).eq(shape.iter().copied());
            rule(valid, "a permutation of the operand's axes")?;
            layout::permute(&v(0).data, from, perm)
        }
        TensorOp::Reshape(_) => {
            rule(count(&v(0).shape) == n, "same element count")?;
            v(0).data.clone()
        }
        TensorOp::Slice { axis, start, step, .. } => {
            let from = &v(0).shape;
            rule(*axis < from.len() && *step >= 1 && from.len() == shape.len(), "along one axis")?;
            layout::slice(&v(0).data, from, *axis, eval_dim(start)?, *step, shape[*axis])?
        }
        TensorOp::Concat { axis, .. } => {
            let total: usize = operands.iter().map(|o| o.0.shape.get(*axis).copied().unwrap_or(0)).sum();
            let valid = *axis < shape.len()
                && total == shape[*axis]
                && operands.iter().all(|o| {
                    o.0.shape.len() == shape.len()
                        && o.0.shape.iter().zip(shape).enumerate().all(|(a, (x, y))| a == *axis || x == y)
                });
            rule(valid, "equal dimensions off the axis")?;
            let parts: Vec<(&Vals, &[usize])> = operands.iter().map(|o| (&o.0.data, &o.0.shape[..])).collect();
            layout::concat(&parts, *axis).ok_or_else(|| mismatch(KindMismatch))?
        }
        TensorOp::Gather { axis, .. } => {
            let (t, idx) = (v(0), v(1));
            let mut want = t.shape.get(..*axis).map(<[usize]>::to_vec).unwrap_or_default();
            want.extend(&idx.shape);
            want.extend(t.shape.get(*axis + 1..).unwrap_or_default());
            rule(*axis < t.shape.len() && want == shape, "table and indices")?;
            layout::gather(&t.data, &t.shape, &idx.data, *axis)
                .map_err(|bad| bad_index(&bad, &idx.shape, *axis, "table", t.shape[*axis]))?
        }
        TensorOp::TakeAlongAxis { axis, .. } => {
            let (x, idx) = (v(0), v(1));
            let valid = *axis < x.shape.len()
                && idx.shape == shape
                && x.shape.len() == shape.len()
                && x.shape.iter().zip(shape).enumerate().all(|(a, (p, q))| a == *axis || p == q);
            rule(valid, "indices of the result's shape")?;
            along::take_along_axis(&x.data, &x.shape, &idx.data, &idx.shape, *axis)
                .map_err(|bad| bad_index(&bad, &idx.shape, *axis, "input", x.shape[*axis]))?
        }
        TensorOp::ScatterAdd { axis, .. } => {
            let (b, idx, s) = (v(0), v(1), v(2));
            let valid = *axis < shape.len()
                && b.shape == shape
                && idx.shape == s.shape
                && s.shape.len() == shape.len()
                && s.shape.iter().zip(shape).enumerate().all(|(a, (p, q))| a == *axis || p == q);
            rule(valid, "base, indices and source")?;
            along::scatter_add(dtype, &b.data, &b.shape, &idx.data, &s.data, &s.shape, *axis)
                .map_err(|bad| bad_index(&bad, &idx.shape, *axis, "base", b.shape[*axis]))?
                .ok_or_else(|| mismatch(KindMismatch))?
        }
        TensorOp::Argsort { axis, descending, .. } => {
            rule(*axis < shape.len() && v(0).shape == shape, "same shape")?;
            along::argsort(&v(0).data, shape, *axis, *descending).ok_or_else(|| mismatch(KindMismatch))?
        }
        TensorOp::Map(map) => {
            let planned = MapNode::new(map, shape.len(), dtype);
            run_map_node(&planned, map, dtype, shape, operands, symbols, &Buffers::default())?
        }
    })
}

/// A `Map` node's value with `planned`'s plans, its rule checked first.
fn run_map_node(
    planned: &MapNode,
    map: &crate::program::MapOps,
    dtype: DType,
    shape: &[usize],
    operands: &[Value],
    symbols: &[i64],
    buffers: &Buffers,
) -> Result<Vals, String> {
    rule(map.extents.len() >= shape.len(), "an extent per output axis")?;
    let inputs: Vec<&Val> = operands.iter().map(|o| &*o.0).collect();
    planned.run(map, dtype, shape, &inputs, symbols, buffers)
}

/// `MatMul`'s shape rule: `[..., M, K] @ [..., K, N]` gives `[..., M, N]`.
fn matmul_rule(shape: &[usize], a: &[usize], b: &[usize]) -> Result<(), String> {
    let r = shape.len();
    rule(
        r >= 2
            && a.len() == r
            && b.len() == r
            && a[..r - 2] == shape[..r - 2]
            && b[..r - 2] == shape[..r - 2]
            && a[r - 2] == shape[r - 2]
            && b[r - 1] == shape[r - 1]
            && a[r - 1] == b[r - 2],
        "[..., M, K] @ [..., K, N]",
    )
}

/// `Reduce`'s shape rule: the reduced axes (sorted, unique, in range) removed.
fn reduce_rule(shape: &[usize], from: &[usize], axes: &[usize]) -> Result<(), String> {
    let kept: Vec<usize> = (0..from.len()).filter(|a| !axes.contains(a)).map(|a| from[a]).collect();
    rule(
        axes.iter().all(|&a| a < from.len()) && axes.windows(2).all(|w| w[0] < w[1]) && kept == shape,
        "reduced axes removed",
    )
}

/// The shape rules of the ops fused chunks and views evaluate (elementwise, `Broadcast`, `Permute`,
/// `Reshape`), from the operands' evaluated shapes; other ops pass (their kernels check their own).
fn layout_rule(op: &TensorOp, shape: &[usize], operands: &[&[usize]]) -> Result<(), String> {
    match op {
        op if op.is_elementwise() => {
            rule(operands.iter().all(|o| *o == shape), "elementwise operands have the result's shape")
        }
        TensorOp::Broadcast(_) => {
            let from = operands.first().copied().unwrap_or_default();
            rule(
                from.len() <= shape.len() && from.iter().rev().zip(shape.iter().rev()).all(|(&f, &t)| f == t || f == 1),
                "each operand dimension is the result's or 1",
            )
        }
        TensorOp::Permute(_, perm) => {
            let from = operands.first().copied().unwrap_or_default();
            let mut seen = vec![false; from.len()];
            let valid = perm.len() == from.len()
                && perm.iter().all(|&p| p < from.len() && !std::mem::replace(&mut seen[p], true))
                && perm.iter().map(|&p| from[p]).eq(shape.iter().copied());
            rule(valid, "a permutation of the operand's axes")
        }
        TensorOp::Reshape(_) => rule(operands.first().map(|o| count(o)) == Some(count(shape)), "same element count"),
        _ => Ok(()),
    }
}

/// `shape` without `axis`.
fn removed(shape: &[usize], axis: usize) -> Vec<usize> {
    shape.iter().enumerate().filter(|&(a, _)| a != axis).map(|(_, &d)| d).collect()
}

/// The message of an index out of range (as the interpreter words it).
fn bad_index(bad: &layout::BadIndex, shape: &[usize], axis: usize, what: &str, size: usize) -> String {
    let mut position = vec![0; shape.len()];
    let mut rest = bad.position;
    for (p, &d) in position.iter_mut().zip(shape).rev() {
        *p = rest % d;
        rest /= d;
    }
    format!(
        "index {} at {position:?} of the indices is out of range for axis {axis} of the {what} (size {size})",
        bad.value
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;
    use crate::dim::Dim;
    use crate::ops::{BinaryOp, ReduceOp, UnaryOp};
    use crate::program::{GroupOps, OpRef, Store};
    use proptest::prelude::*;

    fn node(op: TensorOp, shape: &[usize]) -> OpNode {
        OpNode { op, dtype: DType::F32, shape: shape.iter().map(|&d| Dim::constant(d as i64)).collect(), ir: 0 }
    }

    fn data(n: usize, seed: u32) -> Vals {
        Vals::F(
            (0..n).map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5).collect(),
        )
    }

    /// Every node of `ops` evaluated in order with `eval_op` (the reference the planned run is checked
    /// against), tensors taken from `tensors` by id.
    fn node_by_node(ops: &GroupOps, tensors: &[Option<Value>]) -> Vec<Value> {
        let mut values: Vec<Value> = Vec::new();
        for node in &ops.nodes {
            let shape = eval_shape(node, &[]).unwrap();
            let value = match node.op {
                TensorOp::Tensor(t) => tensors[t.0 as usize].clone().unwrap(),
                _ => {
                    let operands: Vec<Value> = node.op.operands().iter().map(|r| values[r.index()].clone()).collect();
                    Value::new(eval_op(node, &shape, &operands, &[]).unwrap(), shape)
                }
            };
            values.push(value);
        }
        values
    }

    /// A softmax-like group with a layout tail and a matmul: `x * broadcast(w)`, exp, the row max, minus
    /// it, then permuted, reshaped and multiplied by `m`; the difference and the product are stored.
    fn group(a: usize, b: usize, c: usize, d: usize) -> GroupOps {
        let r = |i: u32| OpRef(i);
        let nodes = vec![
            node(TensorOp::Tensor(TensorId(0)), &[a, b, c]),
            node(TensorOp::Tensor(TensorId(1)), &[c]),
            node(TensorOp::Broadcast(r(1)), &[a, b, c]),
            node(TensorOp::Binary(BinaryOp::Mul, r(0), r(2)), &[a, b, c]),
            node(TensorOp::Unary(UnaryOp::Exp, r(3)), &[a, b, c]),
            node(TensorOp::Reduce { op: ReduceOp::Max, input: r(4), axes: vec![2] }, &[a, b]),
            node(TensorOp::Reshape(r(5)), &[a, b, 1]),
            node(TensorOp::Broadcast(r(6)), &[a, b, c]),
            node(TensorOp::Binary(BinaryOp::Sub, r(4), r(7)), &[a, b, c]),
            node(TensorOp::Permute(r(8), vec![2, 0, 1]), &[c, a, b]),
            node(TensorOp::Reshape(r(9)), &[c, a * b]),
            node(TensorOp::Tensor(TensorId(2)), &[a * b, d]),
            node(TensorOp::MatMul(r(10), r(11)), &[c, d]),
            node(TensorOp::Reduce { op: ReduceOp::Mean, input: r(12), axes: vec![1] }, &[c]),
        ];
        let stores = vec![
            Store { node: r(13), tensor: TensorId(3) },
            Store { node: r(8), tensor: TensorId(4) },
            Store { node: r(12), tensor: TensorId(5) },
        ];
        GroupOps { nodes, stores }
    }

    proptest! {
        /// The planned run (fused chunks, row reductions, gemm on strided views) equals the node-by-node
        /// evaluation with `eval::` (`eval_op` on every node): the exp and what follows within a few ulps (the
        /// executor's `exp_fast`), the matmul and what follows it within the matmul tolerance.
        #[test]
        fn planned_run_matches_node_by_node_eval(a in 1usize..5, b in 1usize..7, c in 1usize..2100, d in 1usize..9) {
            let ops = group(a, b, c, d);
            let launch = launch("test", ops.clone());
            let shapes = vec![vec![a, b, c], vec![c], vec![a * b, d]];
            let leaves = [data(a * b * c, 1), data(c, 2), data(a * b * d, 3)];
            let tensors: Vec<Option<Value>> =
                leaves.iter().zip(&shapes).map(|(v, s)| Some(Value::new(v.clone(), s.clone()))).collect();
            let plan = GroupPlan::new(0, &launch).unwrap();
            let got = plan.run(&Program::default(), &tensors, &shapes, &[], &Buffers::default(), None).unwrap();
            // The reference: every node in order with `eval_op`.
            let want = node_by_node(&ops, &tensors);
            // exp within one ulp of the exact function (`exp_fast`; eval has libm's bits) of values in
            // [0.77, 1.3], then the row max subtracted: a few ulps of 1.3 apart.
            prop_assert_eq!(&got[1].1.0.shape, &want[8].0.shape);
            for (g, w) in floats(&got[1].1).iter().zip(floats(&want[8])) {
                prop_assert!((g - w).abs() <= 4.0 * 1.3 * f32::EPSILON, "{g} vs {w}");
            }
            let k = (a * b) as f32;
            for (store, index) in [(0, 13), (2, 12)] {
                prop_assert_eq!(&got[store].1.0.shape, &want[index].0.shape);
                for (g, w) in floats(&got[store].1).iter().zip(floats(&want[index])) {
                    // |entries| <= 1 and |m| <= 0.5, so the sum of absolute products is at most k / 2.
                    prop_assert!((g - w).abs() <= 16.0 * f32::EPSILON * k * (k / 2.0 + 1.0), "{g} vs {w}");
                }
            }
        }
    }

    /// A layer-norm-like row pass: `h = x + broadcast(b)`, its row mean (stored: a per-row result), the
    /// centred rows, their variance, `rsqrt(var + eps)` applied along each row, then `select(y > 0, y, 0)`
    /// (a comparison and a select in the pass) stored.
    fn norm_group(a: usize, c: usize) -> GroupOps {
        let r = |i: u32| OpRef(i);
        let mean = |input| node(TensorOp::Reduce { op: ReduceOp::Mean, input: r(input), axes: vec![1] }, &[a]);
        let mut nodes = vec![
            node(TensorOp::Tensor(TensorId(0)), &[a, c]),
            node(TensorOp::Tensor(TensorId(1)), &[c]),
            node(TensorOp::Broadcast(r(1)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Add, r(0), r(2)), &[a, c]),
            mean(3),
            node(TensorOp::Reshape(r(4)), &[a, 1]),
            node(TensorOp::Broadcast(r(5)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Sub, r(3), r(6)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Mul, r(7), r(7)), &[a, c]),
            mean(8),
            node(TensorOp::Constant(crate::ops::Scalar::Float(1e-5)), &[]),
            node(TensorOp::Broadcast(r(10)), &[a]),
            node(TensorOp::Binary(BinaryOp::Add, r(9), r(11)), &[a]),
            node(TensorOp::Unary(UnaryOp::Rsqrt, r(12)), &[a]),
            node(TensorOp::Reshape(r(13)), &[a, 1]),
            node(TensorOp::Broadcast(r(14)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Mul, r(7), r(15)), &[a, c]),
            node(TensorOp::Broadcast(r(10)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Gt, r(16), r(17)), &[a, c]),
        ];
        nodes[18].dtype = DType::Bool;
        nodes.push(node(TensorOp::Select { cond: r(18), on_true: r(16), on_false: r(17) }, &[a, c]));
        let stores = vec![Store { node: r(19), tensor: TensorId(2) }, Store { node: r(4), tensor: TensorId(3) }];
        GroupOps { nodes, stores }
    }

    proptest! {
        /// A row pass (blocks of whole rows, per-row values applied along rows) equals the node-by-node
        /// evaluation within the reductions' tolerance, for rows shorter and longer than a block.
        #[test]
        fn a_row_pass_matches_node_by_node_eval(a in 1usize..40, c in 2usize..5000) {
            let ops = norm_group(a, c);
            let shapes = vec![vec![a, c], vec![c]];
            let leaves = [data(a * c, 5), data(c, 6)];
            let tensors: Vec<Option<Value>> =
                leaves.iter().zip(&shapes).map(|(v, s)| Some(Value::new(v.clone(), s.clone()))).collect();
            let plan = GroupPlan::new(0, &launch("norm", ops.clone())).unwrap();
            let node_shapes: Vec<Vec<usize>> = ops.nodes.iter().map(|n| eval_shape(n, &[]).unwrap()).collect();
            let pass = RowPass::plan(&ops, &node_shapes, &[19, 4], &[]).expect("a row pass");
            prop_assert!(pass.in_pass[19] && pass.in_pass[4] && !pass.in_pass[0]);
            let got = plan.run(&Program::default(), &tensors, &shapes, &[], &Buffers::default(), None).unwrap();
            let want = node_by_node(&ops, &tensors);
            // Entries of x + b in [-1, 1]: the means within c ulps of 1; the normalised rows, scaled by up to
            // 1 / sqrt(eps), a relative error of a few times c ulps.
            for (store, index, tol) in [(1, 4, 4.0), (0, 19, 16.0)] {
                prop_assert_eq!(&got[store].1.0.shape, &want[index].0.shape);
                for (g, w) in floats(&got[store].1).iter().zip(floats(&want[index])) {
                    let bound = tol * c as f32 * f32::EPSILON * (1.0 + w.abs());
                    prop_assert!((g - w).abs() <= bound, "{g} vs {w}");
                }
            }
        }
    }

    /// The fused steps of `ops`'s row pass (`RowPass::fused`), and its first store as the planned launch
    /// computes it from `tensors` next to the node-by-node evaluation's.
    fn pass_and_run(ops: GroupOps, tensors: &[Option<Value>]) -> ((usize, usize, usize), Vec<f32>, Vec<f32>) {
        let node_shapes: Vec<Vec<usize>> = ops.nodes.iter().map(|n| eval_shape(n, &[]).unwrap()).collect();
        let stored: Vec<usize> = ops.stores.iter().map(|s| s.node.index()).collect();
        let pass = RowPass::plan(&ops, &node_shapes, &stored, &[]).expect("a row pass");
        let shapes: Vec<Vec<usize>> = tensors.iter().flatten().map(|t| t.0.shape.clone()).collect();
        let plan = GroupPlan::new(0, &launch("pass", ops.clone())).unwrap();
        let got = plan.run(&Program::default(), tensors, &shapes, &[], &Buffers::default(), None).unwrap();
        let want = node_by_node(&ops, tensors);
        (pass.fused(), floats(&got[0].1), floats(&want[stored[0]]))
    }

    fn floats(v: &Value) -> Vec<f32> {
        match &v.0.data {
            Vals::F(x) => x.clone(),
            _ => unreachable!("a float value"),
        }
    }

    /// A softmax launch as the prelude's `softmax` lowers: `x * 0.5` (`[a, c]`), its rows' maximum through a
    /// keepdims reshape, `exp` of the difference, the rows' sum, and the product with `1 / sum`, stored
    /// (node 15); with `keep_sum`, the sum stored too (node 9).
    fn softmax_group(a: usize, c: usize, keep_sum: bool) -> GroupOps {
        let r = |i: u32| OpRef(i);
        let reduce = |op, input| node(TensorOp::Reduce { op, input: r(input), axes: vec![1] }, &[a]);
        let nodes = vec![
            node(TensorOp::Tensor(TensorId(0)), &[a, c]),
            node(TensorOp::Constant(crate::ops::Scalar::Float(0.5)), &[]),
            node(TensorOp::Broadcast(r(1)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Mul, r(0), r(2)), &[a, c]),
            reduce(ReduceOp::Max, 3),
            node(TensorOp::Reshape(r(4)), &[a, 1]),
            node(TensorOp::Broadcast(r(5)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Sub, r(3), r(6)), &[a, c]),
            node(TensorOp::Unary(UnaryOp::Exp, r(7)), &[a, c]),
            reduce(ReduceOp::Sum, 8),
            node(TensorOp::Reshape(r(9)), &[a, 1]),
            node(TensorOp::Constant(crate::ops::Scalar::Float(1.0)), &[]),
            node(TensorOp::Broadcast(r(11)), &[a, 1]),
            node(TensorOp::Binary(BinaryOp::Div, r(12), r(10)), &[a, 1]),
            node(TensorOp::Broadcast(r(13)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Mul, r(8), r(14)), &[a, c]),
        ];
        let mut stores = vec![Store { node: r(15), tensor: TensorId(1) }];
        if keep_sum {
            stores.push(Store { node: r(9), tensor: TensorId(2) });
        }
        GroupOps { nodes, stores }
    }

    proptest! {
        /// A softmax's steps in a row pass run fused, a row at a time (`rows::Step::Softmax`), unless one of
        /// its intermediates is kept; either way the result equals the node-by-node evaluation (libm's `exp`, the
        /// sums in order) within the rows' sums' tolerance, for rows shorter and longer than a block, and a row
        /// holding a NaN is all NaN there as it is in the evaluation.
        #[test]
        fn a_fused_softmax_matches_node_by_node_eval(
            a in 1usize..40, c in 2usize..5000, keep_sum in any::<bool>(), nan in any::<bool>(),
        ) {
            // A NaN in the last row: that row (and only it) is NaN, as the separate steps make it.
            let Vals::F(mut x) = data(a * c, 7) else { unreachable!() };
            if nan {
                x[a * c - 1] = f32::NAN;
            }
            let tensors = vec![Some(Value::new(Vals::F(x), vec![a, c]))];
            let (fused, got, want) = pass_and_run(softmax_group(a, c, keep_sum), &tensors);
            prop_assert_eq!(fused, (usize::from(!keep_sum), 0, 0));
            for (g, w) in got.iter().zip(want) {
                // `exp` within an ulp of libm's, then the sum of `c` of them in another order.
                let bound = 2.0 * (c as f32 + 4.0) * f32::EPSILON * w.abs().max(f32::MIN_POSITIVE);
                prop_assert!((g - w).abs() <= bound || (g.is_nan() && w.is_nan()), "{g} vs {w}");
            }
        }
    }

    /// A residual sum and layer norm as the prelude's `layer_norm` lowers: `x + y` (`[a, c]`), centred by its
    /// rows' mean through a keepdims reshape, scaled by `rsqrt` of the mean square plus `1e-5`, times a gain
    /// and plus a shift (`[c]`, broadcast), stored (node 22); with `keep_mean`, the mean stored too (node 5).
    fn layer_norm_group(a: usize, c: usize, keep_mean: bool) -> GroupOps {
        let r = |i: u32| OpRef(i);
        let mean = |input| node(TensorOp::Reduce { op: ReduceOp::Mean, input: r(input), axes: vec![1] }, &[a]);
        let mut nodes = vec![
            node(TensorOp::Tensor(TensorId(0)), &[a, c]),
            node(TensorOp::Tensor(TensorId(1)), &[a, c]),
            node(TensorOp::Tensor(TensorId(2)), &[c]),
            node(TensorOp::Tensor(TensorId(3)), &[c]),
            node(TensorOp::Binary(BinaryOp::Add, r(0), r(1)), &[a, c]),
            mean(4),
            node(TensorOp::Reshape(r(5)), &[a, 1]),
            node(TensorOp::Broadcast(r(6)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Sub, r(4), r(7)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Mul, r(8), r(8)), &[a, c]),
            mean(9),
            node(TensorOp::Reshape(r(10)), &[a, 1]),
            node(TensorOp::Constant(crate::ops::Scalar::Float(1e-5)), &[]),
            node(TensorOp::Broadcast(r(12)), &[a, 1]),
            node(TensorOp::Binary(BinaryOp::Add, r(11), r(13)), &[a, 1]),
            node(TensorOp::Unary(UnaryOp::Rsqrt, r(14)), &[a, 1]),
            node(TensorOp::Broadcast(r(15)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Mul, r(8), r(16)), &[a, c]),
            node(TensorOp::Broadcast(r(2)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Mul, r(17), r(18)), &[a, c]),
            node(TensorOp::Broadcast(r(3)), &[a, c]),
            node(TensorOp::Binary(BinaryOp::Add, r(19), r(20)), &[a, c]),
        ];
        nodes.push(node(TensorOp::Reshape(r(21)), &[a * c]));
        let mut stores = vec![Store { node: r(22), tensor: TensorId(4) }];
        if keep_mean {
            stores.push(Store { node: r(5), tensor: TensorId(5) });
        }
        GroupOps { nodes, stores }
    }

    proptest! {
        /// A layer norm's steps in a row pass run fused, a row at a time (`rows::Step::LayerNorm`), unless
        /// one of its intermediates is kept; either way the result equals the node-by-node evaluation (the
        /// means summed in order) within the means' tolerance, for rows shorter and longer than a block.
        #[test]
        fn a_fused_layer_norm_matches_node_by_node_eval(a in 1usize..40, c in 2usize..5000, keep_mean in any::<bool>()) {
            let shapes = [vec![a, c], vec![a, c], vec![c], vec![c]];
            let leaves = [data(a * c, 5), data(a * c, 6), data(c, 7), data(c, 8)];
            let tensors: Vec<Option<Value>> =
                leaves.iter().zip(&shapes).map(|(v, s)| Some(Value::new(v.clone(), s.clone()))).collect();
            let (fused, got, want) = pass_and_run(layer_norm_group(a, c, keep_mean), &tensors);
            prop_assert_eq!(fused, (0, 0, usize::from(!keep_mean)));
            // Rows of x + y in [-1, 1] normalised (scaled by up to 1 / sqrt(eps)), times a gain in [-0.5, 0.5]:
            // a relative error of a few times c ulps, as the row pass's own test.
            for (g, w) in got.iter().zip(want) {
                let bound = 16.0 * c as f32 * f32::EPSILON * (1.0 + w.abs());
                prop_assert!((g - w).abs() <= bound, "{g} vs {w}");
            }
        }
    }

    /// GELU's erf form as the prelude's `gelu` lowers, `0.5 * x * (1 + erf(x * c))` on `[n]`, stored (node
    /// 9); with `keep_erf`, the `erf` stored too (node 6).
    fn gelu_group(n: usize, keep_erf: bool) -> GroupOps {
        let r = |i: u32| OpRef(i);
        let constant = |v: f64| node(TensorOp::Constant(crate::ops::Scalar::Float(v)), &[]);
        let nodes = vec![
            node(TensorOp::Tensor(TensorId(0)), &[n]),
            constant(0.5),
            node(TensorOp::Broadcast(r(1)), &[n]),
            node(TensorOp::Binary(BinaryOp::Mul, r(2), r(0)), &[n]),
            constant(std::f64::consts::FRAC_1_SQRT_2),
            node(TensorOp::Broadcast(r(4)), &[n]),
            node(TensorOp::Binary(BinaryOp::Mul, r(0), r(5)), &[n]),
            node(TensorOp::Unary(UnaryOp::Erf, r(6)), &[n]),
            node(TensorOp::Constant(crate::ops::Scalar::Float(1.0)), &[]),
            node(TensorOp::Broadcast(r(8)), &[n]),
            node(TensorOp::Binary(BinaryOp::Add, r(9), r(7)), &[n]),
            node(TensorOp::Binary(BinaryOp::Mul, r(3), r(10)), &[n]),
        ];
        let mut stores = vec![Store { node: r(11), tensor: TensorId(1) }];
        if keep_erf {
            stores.push(Store { node: r(7), tensor: TensorId(2) });
        }
        GroupOps { nodes, stores }
    }

    proptest! {
        /// GELU's steps in an elementwise tree run fused in one pass (`rows::Step::Gelu`) unless one of its
        /// intermediates is kept; either way the result equals the node-by-node evaluation (libm's `erf`)
        /// within a few ulps of `x`.
        #[test]
        fn a_fused_gelu_matches_node_by_node_eval(n in 1usize..9000, scale in 0.1f32..8.0, keep_erf in any::<bool>()) {
            let ops = gelu_group(n, keep_erf);
            let shapes: Vec<Vec<usize>> = ops.nodes.iter().map(|n| eval_shape(n, &[]).unwrap()).collect();
            let Vals::F(x) = data(n, 3) else { unreachable!() };
            let x: Vec<f32> = x.iter().map(|v| v * scale).collect();
            let tensors = vec![Some(Value::new(Vals::F(x.clone()), vec![n]))];
            let want = node_by_node(&ops, &tensors);
            // The launch computes a stored `erf` first (its own tree); the GELU's tree then reads it.
            let mut values: Vec<Option<Value>> = vec![None; ops.nodes.len()];
            values[0] = tensors[0].clone();
            if keep_erf {
                values[7] = Some(want[7].clone());
            }
            let windows = vec![None; ops.nodes.len()];
            let buffers = Buffers::default();
            let run = Run { ops: &ops, values: &values, windows: &windows, shapes: &shapes, buffers: &buffers };
            let tree = RowPass::tree(&run, 11, None).expect("a tree");
            prop_assert_eq!(tree.fused(), (0, usize::from(!keep_erf), 0));
            let plan = GroupPlan::new(0, &launch("gelu", ops.clone())).unwrap();
            let got = plan.run(&Program::default(), &tensors, &[vec![n]], &[], &buffers, None).unwrap();
            for ((g, w), x) in floats(&got[0].1).iter().zip(floats(&want[11])).zip(&x) {
                let bound = 4.0 * f32::EPSILON * (x.abs() + w.abs());
                prop_assert!((g - w).abs() <= bound, "{g} vs {w} at {x}");
            }
        }
    }

    /// A launch carrying `ops` (its kernel is never built: only the CPU executor runs it).
    fn launch(name: &str, ops: GroupOps) -> Launch {
        Launch {
            name: name.to_string(),
            wgsl: String::new(),
            spirv: Vec::new(),
            args: Vec::new(),
            invocations: Dim::constant(1),
            workgroup_size: 1,
            bounds: Vec::new(),
            requires: Default::default(),
            checks: Vec::new(),
            ops,
        }
    }

    /// A linear layer's launch: `x [m, k] @ permute(w [n, k])`, reshaped to `[2, m / 2, n]`, plus a broadcast
    /// bias, then doubled (the sum read twice). The bias is accumulated under the product (`bias` plan) when
    /// it repeats one row, and added after it otherwise (a `[2, m / 2, 1]` column); both equal the
    /// node-by-node evaluation within the matmul tolerance.
    #[test]
    fn a_bias_under_a_matmul_equals_the_addition_after_it() {
        let r = |i: u32| OpRef(i);
        for (case, (m, k, n)) in [(2, 3, 4), (6, 40, 9), (64, 17, 33)].into_iter().enumerate() {
            for row_bias in [true, false] {
                let bias_shape = if row_bias { vec![n] } else { vec![2, m / 2, 1] };
                let nodes = vec![
                    node(TensorOp::Tensor(TensorId(0)), &[m, k]),
                    node(TensorOp::Tensor(TensorId(1)), &[n, k]),
                    node(TensorOp::Permute(r(1), vec![1, 0]), &[k, n]),
                    node(TensorOp::MatMul(r(0), r(2)), &[m, n]),
                    node(TensorOp::Reshape(r(3)), &[2, m / 2, n]),
                    node(TensorOp::Tensor(TensorId(2)), &bias_shape),
                    node(TensorOp::Broadcast(r(5)), &[2, m / 2, n]),
                    node(TensorOp::Binary(BinaryOp::Add, r(4), r(6)), &[2, m / 2, n]),
                    node(TensorOp::Binary(BinaryOp::Add, r(7), r(7)), &[2, m / 2, n]),
                ];
                // The sum stored as well (a root: the bias goes under the matmul), or only read by the tree
                // of node 8 (which adds the bias in cache instead).
                let stored_sum = (case + usize::from(row_bias)).is_multiple_of(2);
                let mut stores = vec![Store { node: r(8), tensor: TensorId(3) }];
                if stored_sum {
                    stores.push(Store { node: r(7), tensor: TensorId(4) });
                }
                let ops = GroupOps { nodes, stores };
                let plan = GroupPlan::new(0, &launch("linear", ops.clone())).unwrap();
                let want_bias = stored_sum.then_some((7, 6));
                assert_eq!(plan.bias[3], want_bias, "the plan finds the bias through the reshape, unless in a tree");
                let bias_count: usize = bias_shape.iter().product();
                let shapes = vec![vec![m, k], vec![n, k], bias_shape.clone()];
                let leaves = [data(m * k, 1), data(n * k, 2), data(bias_count, 3)];
                let tensors: Vec<Option<Value>> =
                    leaves.iter().zip(&shapes).map(|(v, s)| Some(Value::new(v.clone(), s.clone()))).collect();
                let got = plan.run(&Program::default(), &tensors, &shapes, &[], &Buffers::default(), None).unwrap();
                let want = node_by_node(&ops, &tensors);
                let (Vals::F(got), Vals::F(want)) = (&got[0].1.0.data, &want[8].0.data) else { unreachable!() };
                assert_eq!(got.len(), 2 * (m / 2) * n);
                for (g, w) in got.iter().zip(want) {
                    // |entries| <= 0.5: the sum of absolute products and the bias is at most k / 4 + 1.
                    let tol = 2.0 * 16.0 * f32::EPSILON * (k as f32 + 1.0) * (k as f32 / 4.0 + 1.0);
                    assert!((g - w).abs() <= tol, "{m}x{k}x{n} row bias {row_bias}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn a_broken_shape_rule_is_an_error_naming_the_op() {
        let mut ops = group(2, 3, 4, 5);
        // The broadcast's operand no longer fits its result.
        ops.nodes[1] = node(TensorOp::Tensor(TensorId(1)), &[3]);
        let launch = launch("broken", ops);
        let shapes = vec![vec![2, 3, 4], vec![3], vec![6, 5]];
        let tensors = vec![
            Some(Value::new(data(24, 1), vec![2, 3, 4])),
            Some(Value::new(data(3, 2), vec![3])),
            Some(Value::new(data(30, 3), vec![6, 5])),
        ];
        let error = GroupPlan::new(0, &launch)
            .unwrap()
            .run(&Program::default(), &tensors, &shapes, &[], &Buffers::default(), None)
            .unwrap_err();
        assert_eq!(error.op.map(|c| c.op), Some("broadcast".to_string()));
        assert!(error.problem.contains("each operand dimension is the result's or 1"), "{}", error.problem);
    }
}
