//! One kernel for one group of IR nodes under its stored `Schedule` (`schedule.rs`): the group's roots are
//! stored, every other member is computed inline where they need it, and operands outside the group are
//! read from their device tensors. This is the boundary fusion works with: it only changes which nodes a
//! group holds. `group_kernel` builds the frame every schedule shares (bindings, uniform block, entry
//! point) and hands the body to the schedule's emitter, one file each: `kernel/plain.rs` (one element per
//! invocation), `kernel/vector.rs` (four), `kernel/rows.rs` (row kernels, `rows.rs`), `kernel/tile.rs`
//! (register-tiled contractions, `tiles.rs`), `kernel/shared.rs` (tiles staged in workgroup memory) and
//! `kernel/sort.rs` (a bitonic sort per fiber in workgroup memory).
//! An emitter declares its entry-point arguments by name (`Cx::builtin`, `Grid`, `Workgroups`), keeps its
//! own state, and supplies values to the shared lowering through `Cx::given` (a row's statistic, a cached
//! column, a block's sum) and `Cx::lanes` (vector loads).
//!
//! The core is `value(node, pos)`: the naga expression for `node`'s element at position `pos`, where a
//! position is a flat row-major index, per-axis coordinates, or both (each derived from the other on
//! demand). Layout ops only transform positions (broadcast, permute, reshape, slice, concat, gather), so a
//! chain of them costs index arithmetic, never a copy. Reductions, matmul and index-notation reductions are
//! loops with a local accumulator, accumulating in row-major order as the interpreter does.
//!
//! Every dimension a kernel needs is a *slot* of its uniform block, evaluated by the runtime from the bound
//! symbols (constants are literals instead); slot 0 is the invocation count. Index arithmetic is `u32` and
//! wraps, which is exact while true values stay in range; the `bounds` a kernel reports make the runtime
//! check that before dispatch. Run-time errors (a gather index or an index-notation load out of range) set
//! the program's status buffer and read a clamped, in-range element instead.

use std::collections::{BTreeSet, HashMap};
use tdsl_runtime::program::BoundKind;

use naga::{
    AddressSpace, ArraySize, BinaryOperator, Binding, BuiltIn, EntryPoint, Expression, FunctionArgument,
    GlobalVariable, Handle, MemoryDecorations, ResourceBinding, Scalar, ScalarKind, ShaderStage, Statement,
    StorageAccess, StructMember, TypeInner, VectorSize,
};

use super::builder::FnBuilder;
use super::group::Group;
use super::scalar;
use super::schedule::Schedule;
use super::{BIND_GROUP, CodegenError, Kernel, KernelArg, WORKGROUP_SIZE};
use crate::dim::Dim;
use crate::ir::{ArgOp, DType, Graph, MapOp, NodeId, Op, ReduceOp, ScalarExpr, ScalarId, VarId};

mod plain;
mod rows;
mod scan;
mod shared;
mod sort;
mod tile;
mod vector;

type Expr = Handle<Expression>;
type R<T> = Result<T, CodegenError>;

/// Largest value (`2^32 - 2^24 - 1`) an invocation count may take, so that the folded-grid index
/// `gid.x + gid.y * num_workgroups.x * 256` cannot wrap for any invocation of the grid.
const MAX_INVOCATIONS: i64 = (1 << 32) - (1 << 24) - 1;
/// Largest element count of a tensor a kernel indexes with `u32`.
const MAX_ELEMENTS: i64 = u32::MAX as i64;

/// A value of an IR dtype held in its WGSL type (f16 as f32, bool as bool).
#[derive(Clone, Copy)]
struct Val {
    expr: Expr,
    dtype: DType,
}

/// A position in a tensor of `shape`: a flat row-major index, coordinates, or both (all `u32`).
#[derive(Clone)]
struct Pos {
    shape: Vec<Dim>,
    flat: Option<Expr>,
    coords: Option<Vec<Expr>>,
}

impl Pos {
    fn flat(shape: &[Dim], flat: Expr) -> Pos {
        Pos { shape: shape.to_vec(), flat: Some(flat), coords: None }
    }
    fn coords(shape: &[Dim], coords: Vec<Expr>) -> Pos {
        Pos { shape: shape.to_vec(), flat: None, coords: Some(coords) }
    }
}

/// Keys of values cached per open block (a value emitted inside a block is only valid there).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Slot(usize),
    /// Scalar node of one evaluation (instance) of an index-notation map.
    Scalar(u32, ScalarId),
    /// A node's element at the position with this flat index expression.
    Node(NodeId, Expr),
    /// Vector kernels: the vector of a tensor holding the elements of the invocation's lanes.
    Vector(NodeId),
}

/// An entry-point argument (a built-in input) a schedule declared with `Cx::builtin`: emitters keep it by
/// name and read it with `Cx::arg`, never by position.
#[derive(Clone, Copy)]
struct Arg(u32);

/// The arguments of a kernel whose invocations form one folded grid (`global_index`): plain, vector,
/// register-tiled and serial row kernels.
#[derive(Clone, Copy)]
struct Grid {
    gid: Arg,
    num_workgroups: Arg,
}

impl Grid {
    fn declare(cx: &mut Cx) -> Grid {
        let vec3u = cx.vec3u;
        Grid {
            gid: cx.builtin("gid", vec3u, BuiltIn::GlobalInvocationId),
            num_workgroups: cx.builtin("num_workgroups", vec3u, BuiltIn::NumWorkGroups),
        }
    }
}

/// The arguments of a kernel whose workgroups cooperate (`workgroup_index`): workgroup row kernels and
/// shared-tile contractions.
#[derive(Clone, Copy)]
struct Workgroups {
    wid: Arg,
    num_workgroups: Arg,
    /// The invocation's index in its workgroup.
    lid: Arg,
}

impl Workgroups {
    fn declare(cx: &mut Cx) -> Workgroups {
        let (vec3u, u32_ty) = (cx.vec3u, cx.u32_ty);
        Workgroups {
            wid: cx.builtin("wid", vec3u, BuiltIn::WorkGroupId),
            num_workgroups: cx.builtin("num_workgroups", vec3u, BuiltIn::NumWorkGroups),
            lid: cx.builtin("lid", u32_ty, BuiltIn::LocalInvocationIndex),
        }
    }
}

/// A value the schedule supplies for a node instead of the shared lowering computing it.
#[derive(Clone, Copy)]
enum Given {
    /// The same value at every position the kernel asks for (a row's statistic, a matmul's block sum).
    Value(Val),
    /// A row kernel's cached contraction: element `flat` is `array[flat - base]` in workgroup memory.
    Column { array: Handle<GlobalVariable>, base: Expr },
}

/// The state every schedule's emitter shares: the builder, the group, the bindings and uniform slots, the
/// caches of the per-element lowering (`value`) and what the schedule supplies (`given`, `lanes`).
/// Per-schedule state (a row kernel's scratch arrays, a tile's sums) lives in the schedule's emitter.
struct Cx<'g> {
    graph: &'g Graph,
    b: FnBuilder,
    name: String,
    root: NodeId,
    /// Further stored nodes computed at the root's index (horizontal fusion).
    siblings: Vec<NodeId>,
    inline: &'g BTreeSet<NodeId>,
    /// Code stored in the status buffer on a run-time error (the launch index + 1).
    status_code: u32,
    /// The nodes whose run-time checks the kernel makes, numbered as the status buffer names them.
    checks: Vec<NodeId>,
    /// Tensors read, in binding order.
    reads: Vec<(NodeId, Handle<GlobalVariable>)>,
    uniform: Handle<GlobalVariable>,
    status: Option<Handle<GlobalVariable>>,
    /// Dimensions in the uniform block, slot 0 being the invocation count.
    slots: Vec<Dim>,
    cache: Vec<HashMap<Key, Val>>,
    /// Index variables of the index-notation map being emitted.
    vars: HashMap<VarId, Expr>,
    /// Evaluations of index-notation maps so far (each gets its own scalar cache entries).
    map_instances: u32,
    bounds: Vec<(BoundKind, Dim, i64)>,
    /// Loop accounting (`loop_to`): the trip-count products of the loops being emitted, innermost last.
    loop_scale: Vec<Dim>,
    /// The loop iterations one invocation runs so far, and per node (the node being computed when the
    /// loop was emitted, else the root), for the `LoopIterations` bound.
    loop_iterations: Vec<(NodeId, Dim)>,
    /// The node `compute` is lowering, which loops emitted now are counted against.
    current: Option<NodeId>,
    u32_ty: Handle<naga::Type>,
    vec3u: Handle<naga::Type>,
    /// The entry point's arguments, as the schedule declared them.
    arguments: Vec<FunctionArgument>,
    /// Values the schedule supplies (see `Given`).
    given: HashMap<NodeId, Given>,
    /// Every storage array holds 4-element vectors (`Schedule::vector_storage`).
    vector: bool,
    /// In vector storage, where the four elements being computed are all in range: the vector's index and
    /// the flat index of each of its elements; a tensor read at one of those flat indices is read as one
    /// vector.
    lanes: Option<(Expr, [Expr; 4])>,
}

/// Builds the kernel computing `group` under `schedule` (its stored schedule, `Schedule::choose`): the
/// root and siblings are stored, the inline nodes computed in place (see the module comment); `launch`
/// is its position in the program, stored in the status buffer on a run-time error.
pub fn group_kernel(graph: &Graph, group: &Group, schedule: &Schedule, launch: usize) -> R<Kernel> {
    let (root, inline) = (group.root, &group.inline);
    let out = graph.node(root);
    let name = kernel_name(graph, root);
    let vector = schedule.vector_storage();
    let mut b = FnBuilder::new();
    let u32_ty = b.ty(TypeInner::Scalar(Scalar::U32));
    let output = storage(&mut b, "out", out.ty.dtype, StorageAccess::LOAD | StorageAccess::STORE, vector);
    // The uniform block's type is only known at the end; a placeholder keeps the handle stable.
    let uniform = b.module.global_variables.append(
        GlobalVariable {
            name: Some("dims".to_string()),
            space: AddressSpace::Uniform,
            binding: None,
            ty: u32_ty,
            init: None,
            memory_decorations: MemoryDecorations::empty(),
        },
        naga::Span::UNDEFINED,
    );
    let count: Dim = shape_count(&out.ty.shape).ok_or_else(|| internal(&name, "the element count overflows"))?;
    let emitter = emitter(schedule);
    let (invocations, workgroup) = emitter.launch(graph, &count).map_err(|e| internal(&name, &e))?;
    let siblings: Vec<(NodeId, Handle<GlobalVariable>)> = group
        .siblings
        .iter()
        .enumerate()
        .map(|(k, &id)| {
            let dtype = graph.node(id).ty.dtype;
            (id, storage(&mut b, &format!("out{}", k + 1), dtype, StorageAccess::LOAD | StorageAccess::STORE, vector))
        })
        .collect();
    let vec3u = b.ty(TypeInner::Vector { size: VectorSize::Tri, scalar: Scalar::U32 });
    let mut cx = Cx {
        graph,
        b,
        name,
        root,
        siblings: group.siblings.clone(),
        inline,
        status_code: launch as u32 + 1,
        checks: Vec::new(),
        reads: Vec::new(),
        uniform,
        status: None,
        slots: vec![invocations.clone()],
        cache: vec![HashMap::new()],
        vars: HashMap::new(),
        map_instances: 0,
        bounds: vec![(BoundKind::InvocationCount, invocations, MAX_INVOCATIONS)],
        loop_scale: Vec::new(),
        loop_iterations: Vec::new(),
        current: None,
        u32_ty,
        vec3u,
        arguments: Vec::new(),
        given: HashMap::new(),
        vector,
        lanes: None,
    };
    let outputs: Vec<_> = std::iter::once((root, output)).chain(siblings).collect();
    emitter.emit(&mut cx, &count, &outputs)?;
    cx.finish(workgroup)
}

/// What each schedule's emitter (its file in `kernel/`) provides to `group_kernel`.
trait Emitter {
    /// Invocations to dispatch (slot 0 of the uniform block) and invocations per workgroup, for an
    /// output of `count` elements; `Err` when the count overflows.
    fn launch(&self, graph: &Graph, count: &Dim) -> Result<(Dim, u32), String>;
    /// The kernel's body, storing `outputs` (the root, then the siblings; `count` elements each), after
    /// declaring the entry arguments it reads.
    fn emit(&self, cx: &mut Cx, count: &Dim, outputs: &[(NodeId, Handle<GlobalVariable>)]) -> R<()>;
}

/// The emitter of `schedule`: the one place a schedule is mapped to its file.
fn emitter(schedule: &Schedule) -> Box<dyn Emitter + '_> {
    match schedule {
        Schedule::Plain => Box::new(plain::Plain),
        Schedule::Vector => Box::new(vector::Vector),
        Schedule::Rows(plan) => Box::new(rows::Rows(plan)),
        Schedule::Tiled(plan) => Box::new(tile::Tiled(plan)),
        Schedule::SharedTiled(plan, staged) => Box::new(shared::Shared(plan, staged)),
        Schedule::Sort(plan) => Box::new(sort::Sort(plan)),
        Schedule::Scan(plan) => Box::new(scan::Scan(plan)),
    }
}

impl Cx<'_> {
    /// `node`'s element at `pos`, computed once per position and block.
    fn value(&mut self, id: NodeId, pos: &mut Pos) -> R<Val> {
        match self.given.get(&id) {
            Some(&Given::Value(v)) => return Ok(v),
            Some(&Given::Column { array, base }) => return Ok(self.load_column(id, array, base, pos)),
            None => {}
        }
        let key = pos.flat.map(|flat| Key::Node(id, flat));
        if let Some(key) = key
            && let Some(v) = self.cached(key)
        {
            return Ok(v);
        }
        let value = self.compute(id, pos)?;
        if let Some(key) = key {
            self.remember(key, value);
        }
        Ok(value)
    }

    /// `node`'s element at `pos`, lowered here (loops emitted meanwhile count against `id`).
    fn compute(&mut self, id: NodeId, pos: &mut Pos) -> R<Val> {
        let outer = self.current.replace(id);
        let value = self.lower_node(id, pos);
        self.current = outer;
        value
    }

    fn lower_node(&mut self, id: NodeId, pos: &mut Pos) -> R<Val> {
        let graph = self.graph;
        let node = graph.node(id);
        let dtype = node.ty.dtype;
        let computed_here = id == self.root || self.inline.contains(&id) || self.siblings.contains(&id);
        if !computed_here || matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
            return Ok(self.load(id, pos));
        }
        let unsupported = || unsupported(graph, id);
        let expr = match &node.op {
            Op::Input { .. } | Op::Param { .. } => unreachable!("loaded above"),
            Op::Constant(value) => self.constant(*value, dtype).ok_or_else(unsupported)?,
            Op::DimValue(dim) => self.dim_as(dim, dtype).ok_or_else(unsupported)?,
            Op::Unary(op, a) => {
                let x = self.value(*a, pos)?;
                scalar::unary_op(&mut self.b, *op, x.expr, x.dtype).ok_or_else(unsupported)?
            }
            Op::Binary(op, a, c) => {
                let x = self.value(*a, pos)?;
                let y = self.value(*c, pos)?;
                scalar::binary_op(&mut self.b, *op, x.expr, y.expr, x.dtype).ok_or_else(unsupported)?
            }
            Op::Select { cond, on_true, on_false } => {
                let c = self.value(*cond, pos)?;
                let t = self.value(*on_true, pos)?;
                let f = self.value(*on_false, pos)?;
                self.b.select(c.expr, t.expr, f.expr)
            }
            Op::Cast(a) => {
                let x = self.value(*a, pos)?;
                scalar::cast_op(&mut self.b, x.expr, x.dtype, dtype).ok_or_else(unsupported)?
            }
            Op::Broadcast(_) | Op::Permute(..) | Op::Reshape(_) => {
                let (source, mut inner) = self.moved(id, pos).ok_or_else(unsupported)?;
                return self.value(source, &mut inner);
            }
            Op::Slice { input, axis, start, step } => {
                let mut coords = self.coords(pos);
                let step = self.b.u32(*step as u32);
                let scaled = self.b.binary(BinaryOperator::Multiply, coords[*axis], step);
                let start = self.dim(start);
                coords[*axis] = self.b.binary(BinaryOperator::Add, start, scaled);
                return self.value(*input, &mut Pos::coords(&graph.node(*input).ty.shape, coords));
            }
            Op::Concat { inputs, axis } => return self.concat(inputs, *axis, pos),
            Op::Gather { table, indices, axis } => return self.gather(id, *table, *indices, *axis, pos),
            Op::TakeAlongAxis { input, indices, axis } => {
                return self.take_along_axis(id, *input, *indices, *axis, pos);
            }
            Op::ScatterAdd { base, indices, src, axis } => self.scatter_add(id, *base, *indices, *src, *axis, pos)?,
            // A whole fiber at once: only the sort schedule computes it (`kernel/sort.rs`), always stored.
            Op::Argsort { .. } => return Err(unsupported()),
            // A whole fiber at once: only the scan schedule computes it (`kernel/scan.rs`), always stored.
            Op::Scan { .. } => return Err(unsupported()),
            Op::Reduce { op, input, axes } => self.reduce(*op, *input, axes, dtype, pos)?,
            Op::ArgReduce { op, input, axis } => self.arg_reduce(*op, *input, *axis, pos)?,
            Op::MatMul(a, c) => self.matmul(*a, *c, dtype, pos)?,
            Op::Map(map) => {
                // A map computed inline inside another map's body has variables of its own.
                let coords = self.coords(pos);
                let outer = std::mem::take(&mut self.vars);
                for (v, &c) in coords.iter().enumerate() {
                    self.vars.insert(VarId(v as u32), c);
                }
                self.map_instances += 1;
                let value = self.scalar(id, self.map_instances, map, map.body);
                self.vars = outer;
                return value;
            }
        };
        Ok(Val { expr, dtype })
    }

    /// A pointer to element `flat` of a storage array of vectors: `array[flat / 4][flat % 4]`.
    fn vector_element(&mut self, buffer: Handle<GlobalVariable>, flat: Expr) -> Expr {
        let two = self.b.u32(2);
        let three = self.b.u32(3);
        let word = self.b.binary(BinaryOperator::ShiftRight, flat, two);
        let lane = self.b.binary(BinaryOperator::And, flat, three);
        let base = self.b.expr(Expression::GlobalVariable(buffer));
        let vector = self.b.expr(Expression::Access { base, index: word });
        self.b.expr(Expression::Access { base: vector, index: lane })
    }

    /// For a broadcast, permute or reshape `id`: its operand and the operand's position holding `id`'s
    /// element at `pos` (these ops only move positions).
    fn moved(&mut self, id: NodeId, pos: &mut Pos) -> Option<(NodeId, Pos)> {
        let graph = self.graph;
        let node = graph.node(id);
        Some(match &node.op {
            Op::Broadcast(a) => {
                let coords = self.coords(pos);
                let in_shape = &graph.node(*a).ty.shape;
                let lead = node.ty.rank() - in_shape.len();
                let mut inner = Vec::with_capacity(in_shape.len());
                for (j, dim) in in_shape.iter().enumerate() {
                    inner.push(if dim.as_const() == Some(1) { self.b.u32(0) } else { coords[lead + j] });
                }
                (*a, Pos::coords(in_shape, inner))
            }
            Op::Permute(a, perm) => {
                let coords = self.coords(pos);
                let mut inner = coords.clone();
                for (i, &p) in perm.iter().enumerate() {
                    inner[p] = coords[i];
                }
                (*a, Pos::coords(&graph.node(*a).ty.shape, inner))
            }
            Op::Reshape(a) => {
                let flat = self.flat(pos);
                (*a, Pos::flat(&graph.node(*a).ty.shape, flat))
            }
            _ => return None,
        })
    }

    /// The tensor read and the flat index in it of `id`'s element at `pos`, when `id` is read from a device
    /// tensor or is computed here by broadcasts, permutes and reshapes of one.
    fn address(&mut self, id: NodeId, pos: &mut Pos) -> Option<(NodeId, Expr)> {
        let computed_here = id == self.root || self.inline.contains(&id) || self.siblings.contains(&id);
        if !computed_here || matches!(self.graph.node(id).op, Op::Input { .. } | Op::Param { .. }) {
            return Some((id, self.flat(pos)));
        }
        let (source, mut inner) = self.moved(id, pos)?;
        self.address(source, &mut inner)
    }

    /// The storage array `id` is read from (declared on first use).
    fn read_buffer(&mut self, id: NodeId) -> Handle<GlobalVariable> {
        if let Some(&(_, buffer)) = self.reads.iter().find(|(n, _)| *n == id) {
            return buffer;
        }
        let dtype = self.graph.node(id).ty.dtype;
        let name = format!("in{}", self.reads.len());
        let buffer = storage(&mut self.b, &name, dtype, StorageAccess::LOAD, self.vector);
        self.reads.push((id, buffer));
        if let Some(count) = shape_count(&self.graph.node(id).ty.shape) {
            self.bounds.push((BoundKind::Elements { node: id.index() as u32 }, count, MAX_ELEMENTS));
        }
        buffer
    }

    /// Element `pos` of a tensor read from its device buffer.
    fn load(&mut self, id: NodeId, pos: &mut Pos) -> Val {
        let dtype = self.graph.node(id).ty.dtype;
        let buffer = self.read_buffer(id);
        let index = self.flat(pos);
        let raw = match (self.vector, self.lanes) {
            (false, _) => {
                let base = self.b.expr(Expression::GlobalVariable(buffer));
                let pointer = self.b.expr(Expression::Access { base, index });
                self.b.load(pointer)
            }
            (true, Some((v, lanes))) if lanes.contains(&index) => {
                let lane = lanes.iter().position(|&l| l == index).unwrap_or(0) as u32;
                let whole = match self.cached(Key::Vector(id)) {
                    Some(whole) => whole.expr,
                    None => {
                        let base = self.b.expr(Expression::GlobalVariable(buffer));
                        let pointer = self.b.expr(Expression::Access { base, index: v });
                        let whole = self.b.load(pointer);
                        self.remember(Key::Vector(id), Val { expr: whole, dtype });
                        whole
                    }
                };
                self.b.expr(Expression::AccessIndex { base: whole, index: lane })
            }
            (true, _) => {
                let pointer = self.vector_element(buffer, index);
                self.b.load(pointer)
            }
        };
        let expr = if dtype == DType::Bool {
            let zero = self.b.u32(0);
            self.b.binary(BinaryOperator::NotEqual, raw, zero)
        } else {
            raw
        };
        Val { expr, dtype }
    }

    /// The flat row-major index of `pos`.
    fn flat(&mut self, pos: &mut Pos) -> Expr {
        if let Some(flat) = pos.flat {
            return flat;
        }
        let coords = pos.coords.clone().unwrap_or_default();
        let mut flat: Option<Expr> = None;
        for (axis, &c) in coords.iter().enumerate() {
            flat = Some(match flat {
                None => c,
                Some(f) => {
                    let scaled = match pos.shape[axis].as_const() {
                        Some(1) => f,
                        _ => {
                            let d = self.dim(&pos.shape[axis]);
                            self.b.binary(BinaryOperator::Multiply, f, d)
                        }
                    };
                    self.b.binary(BinaryOperator::Add, scaled, c)
                }
            });
        }
        let flat = flat.unwrap_or_else(|| self.b.u32(0));
        pos.flat = Some(flat);
        flat
    }

    /// The coordinates of `pos`, one per axis of its shape.
    fn coords(&mut self, pos: &mut Pos) -> Vec<Expr> {
        if let Some(coords) = &pos.coords {
            return coords.clone();
        }
        let flat = pos.flat.unwrap_or_else(|| self.b.u32(0));
        let coords = self.delinearize(flat, &pos.shape.clone());
        pos.coords = Some(coords.clone());
        coords
    }

    /// Row-major coordinates of `flat` over `shape` (axes of constant size 1 are the literal 0).
    fn delinearize(&mut self, flat: Expr, shape: &[Dim]) -> Vec<Expr> {
        let mut coords = vec![flat; shape.len()];
        let mut rest = flat;
        for axis in (0..shape.len()).rev() {
            if shape[axis].as_const() == Some(1) {
                coords[axis] = self.b.u32(0);
                continue;
            }
            if axis == 0 || shape[..axis].iter().all(|d| d.as_const() == Some(1)) {
                coords[axis] = rest;
                for c in coords.iter_mut().take(axis) {
                    *c = self.b.u32(0);
                }
                break;
            }
            let d = self.dim(&shape[axis]);
            coords[axis] = self.b.binary(BinaryOperator::Modulo, rest, d);
            rest = self.b.binary(BinaryOperator::Divide, rest, d);
        }
        coords
    }

    /// `dim` as a `u32` value: a literal when constant, else a uniform slot.
    fn dim(&mut self, dim: &Dim) -> Expr {
        if let Some(c) = dim.as_const()
            && let Ok(c) = i32::try_from(c)
        {
            return self.b.u32(c as u32);
        }
        let index = match self.slots.iter().position(|s| s == dim) {
            Some(i) => i,
            None => {
                self.slots.push(dim.clone());
                self.slots.len() - 1
            }
        };
        self.slot(index)
    }

    /// An IR constant of `dtype`. A float zero (either sign), infinity or NaN is read from a uniform slot
    /// holding its bits instead of being a literal: a driver that sees the literal may fold `x * 0.0` to 0
    /// and `x / 0.0` to 0 whatever `x` is (Vulkan promises IEEE results for infinities, NaN and signed
    /// zeros only under float controls, which naga cannot ask for), so the kernel hides the value from it.
    fn constant(&mut self, value: crate::ir::Scalar, dtype: DType) -> Option<Expr> {
        let literal = scalar::literal_f32(value, dtype).filter(|v| *v == 0.0 || !v.is_finite());
        let Some(special) = literal else { return scalar::literal(&mut self.b, value, dtype) };
        let bits = Dim::constant(i64::from(special.to_bits()));
        let index = match self.slots.iter().position(|s| *s == bits) {
            Some(i) => i,
            None => {
                self.slots.push(bits);
                self.slots.len() - 1
            }
        };
        let word = self.slot(index);
        Some(self.b.bitcast(word, ScalarKind::Float))
    }

    /// The value of uniform slot `index` (loaded once per block).
    fn slot(&mut self, index: usize) -> Expr {
        if let Some(v) = self.cached(Key::Slot(index)) {
            return v.expr;
        }
        let base = self.b.expr(Expression::GlobalVariable(self.uniform));
        let pointer = self.b.expr(Expression::AccessIndex { base, index: index as u32 });
        let expr = self.b.load(pointer);
        self.remember(Key::Slot(index), Val { expr, dtype: DType::U32 });
        expr
    }

    /// `dim`'s value converted to `dtype` (read as `i32` when it may be negative).
    fn dim_as(&mut self, dim: &Dim, dtype: DType) -> Option<Expr> {
        let raw = self.dim(dim);
        let signed = !dim.is_nonneg();
        self.index_as(raw, signed, dtype)
    }

    /// A `u32` index value (reinterpreted as `i32` when `signed`) as a value of `dtype`.
    fn index_as(&mut self, raw: Expr, signed: bool, dtype: DType) -> Option<Expr> {
        Some(match dtype {
            DType::U32 => raw,
            DType::I32 => self.b.bitcast(raw, ScalarKind::Sint),
            DType::F32 | DType::F16 => {
                let source = if signed { self.b.bitcast(raw, ScalarKind::Sint) } else { raw };
                let value = self.b.convert(source, ScalarKind::Float);
                scalar::round(&mut self.b, value, dtype)
            }
            DType::Bool => return None,
        })
    }

    fn cached(&self, key: Key) -> Option<Val> {
        self.cache.iter().rev().find_map(|level| level.get(&key).copied())
    }

    fn remember(&mut self, key: Key, value: Val) {
        if let Some(level) = self.cache.last_mut() {
            level.insert(key, value);
        }
    }

    fn open_block(&mut self) {
        self.b.open_block();
        self.cache.push(HashMap::new());
    }

    fn close_block(&mut self) -> naga::Block {
        self.cache.pop();
        self.b.close_block()
    }

    /// On the GPU a run-time error cannot stop the kernel: when `failed` and no earlier launch failed
    /// (status word 0 is still 0), store this launch's code, `detail` and the number of `node`'s check
    /// (`Kernel::checks`) in the status buffer; the runtime reports the first failing launch and the op
    /// after the run.
    fn fail_if(&mut self, node: NodeId, failed: Expr, detail: Expr, unsigned: bool) {
        let check = match self.checks.iter().position(|&n| n == node) {
            Some(i) => i,
            None => {
                self.checks.push(node);
                self.checks.len() - 1
            }
        };
        let status = match self.status {
            Some(s) => s,
            None => {
                let s = storage(&mut self.b, "status", DType::U32, StorageAccess::LOAD | StorageAccess::STORE, false);
                self.status = Some(s);
                s
            }
        };
        let base = self.b.expr(Expression::GlobalVariable(status));
        let first_ptr = self.b.expr(Expression::AccessIndex { base, index: 0 });
        let first = self.b.load(first_ptr);
        let zero = self.b.u32(0);
        let clean = self.b.binary(BinaryOperator::Equal, first, zero);
        let failed = self.b.binary(BinaryOperator::LogicalAnd, failed, clean);
        self.open_block();
        let code_ptr = self.b.expr(Expression::AccessIndex { base, index: 0 });
        let code = self.b.u32(self.status_code);
        self.b.store(code_ptr, code);
        let detail_ptr = self.b.expr(Expression::AccessIndex { base, index: 1 });
        self.b.store(detail_ptr, detail);
        if unsigned {
            let kind_ptr = self.b.expr(Expression::AccessIndex { base, index: 2 });
            let one = self.b.u32(1);
            self.b.store(kind_ptr, one);
        }
        if check > 0 {
            let check_ptr = self.b.expr(Expression::AccessIndex { base, index: 3 });
            let number = self.b.u32(check as u32);
            self.b.store(check_ptr, number);
        }
        let accept = self.close_block();
        self.b.statement(Statement::If { condition: failed, accept, reject: naga::Block::new() });
    }

    /// `for (var i = 0u; i < count; i++) { body(i) }` with `body` emitting into the loop.
    fn counted_loop(&mut self, name: &str, count: &Dim, body: &mut dyn FnMut(&mut Self, Expr) -> R<()>) -> R<()> {
        self.stepped_loop(name, None, count, 1, body)
    }

    /// `for (var i = start; i < count; i += step) { body(i) }` with `body` emitting into the loop; no
    /// `start` is a literal 0.
    fn stepped_loop(
        &mut self,
        name: &str,
        start: Option<Expr>,
        count: &Dim,
        step: u32,
        body: &mut dyn FnMut(&mut Self, Expr) -> R<()>,
    ) -> R<()> {
        // At most `ceil(count / step)` trips, whatever `start` (below `step` where it is not 0).
        let trips = match step {
            1 => Ok(count.clone()),
            _ => count.add(&Dim::constant(i64::from(step) - 1)).and_then(|n| n.div(&Dim::constant(i64::from(step)))),
        };
        let trips = trips.map_err(|e| internal(&self.name, &e.to_string()))?;
        let count = self.dim(count);
        let start = start.unwrap_or_else(|| self.b.u32(0));
        self.loop_to(name, start, count, &trips, (BinaryOperator::Add, step), body)
    }

    /// `for (var i = start; i < count; i = i op by) { body(i) }` (`update` = `(op, by)`), up to a count
    /// already computed (the same in every iteration), running at most `trips` times: counted, times the
    /// trips of the loops around it, in the invocation's loop iterations (`BoundKind::LoopIterations`).
    fn loop_to(
        &mut self,
        name: &str,
        start: Expr,
        count: Expr,
        trips: &Dim,
        (op, by): (BinaryOperator, u32),
        body: &mut dyn FnMut(&mut Self, Expr) -> R<()>,
    ) -> R<()> {
        let scale = match self.loop_scale.last() {
            Some(outer) => outer.mul(trips),
            None => Ok(trips.clone()),
        };
        let scale = scale.map_err(|_| internal(&self.name, "the loop iteration count overflows"))?;
        let node = self.current.unwrap_or(self.root);
        match self.loop_iterations.iter_mut().find(|(n, _)| *n == node) {
            Some((_, total)) => {
                *total = total.add(&scale).map_err(|_| internal(&self.name, "the loop iteration count overflows"))?
            }
            None => self.loop_iterations.push((node, scale.clone())),
        }
        self.loop_scale.push(scale);
        let emitted = self.loop_body(name, start, count, (op, by), body);
        self.loop_scale.pop();
        emitted
    }

    fn loop_body(
        &mut self,
        name: &str,
        start: Expr,
        count: Expr,
        (op, by): (BinaryOperator, u32),
        body: &mut dyn FnMut(&mut Self, Expr) -> R<()>,
    ) -> R<()> {
        let counter = self.b.local(name, self.u32_ty);
        self.b.store(counter, start);
        self.open_block();
        let i = self.b.load(counter);
        let done = self.b.binary(BinaryOperator::GreaterEqual, i, count);
        let mut exit = naga::Block::new();
        exit.push(Statement::Break, naga::Span::UNDEFINED);
        self.b.statement(Statement::If { condition: done, accept: exit, reject: naga::Block::new() });
        body(self, i)?;
        let body_block = self.close_block();
        self.open_block();
        let current = self.b.load(counter);
        let by = self.b.u32(by);
        let next = self.b.binary(op, current, by);
        self.b.store(counter, next);
        let continuing = self.close_block();
        self.b.statement(Statement::Loop { body: body_block, continuing, break_if: None });
        Ok(())
    }

    /// A local accumulator of `dtype`'s held type, set to `init`.
    fn accumulator(&mut self, dtype: DType, init: Expr) -> Expr {
        let scalar = match dtype {
            DType::F32 | DType::F16 => Scalar::F32,
            DType::I32 => Scalar::I32,
            DType::U32 => Scalar::U32,
            DType::Bool => Scalar::BOOL,
        };
        let ty = self.b.ty(TypeInner::Scalar(scalar));
        let acc = self.b.local("acc", ty);
        self.b.store(acc, init);
        acc
    }

    /// `op` over `body(i)` for `i` in `0..total`, in order, from the identity: floats accumulate in f32 and
    /// an f16 result is rounded once at the end; `mean` divides the sum by `total`. `node` names the IR node
    /// in errors.
    fn reduction(
        &mut self,
        node: NodeId,
        op: ReduceOp,
        dtype: DType,
        total: &Dim,
        body: &mut dyn FnMut(&mut Self, Expr) -> R<Expr>,
    ) -> R<Expr> {
        let acc = self.fold_start(node, op, dtype)?;
        self.counted_loop("r", total, &mut |cx, i| {
            let x = body(cx, i)?;
            cx.fold_in(node, op, dtype, acc, x)
        })?;
        let sum = self.b.load(acc);
        self.fold_result(node, op, dtype, sum, total)
    }

    /// A local accumulator for `op` over `dtype` values, set to the identity (the start of every fold:
    /// `reduction`, serial rows, workgroup reductions).
    fn fold_start(&mut self, node: NodeId, op: ReduceOp, dtype: DType) -> R<Expr> {
        let graph = self.graph;
        let init = scalar::reduce_init(&mut self.b, op, dtype).ok_or_else(|| unsupported(graph, node))?;
        Ok(self.accumulator(dtype, init))
    }

    /// `acc = acc op x`.
    fn fold_in(&mut self, node: NodeId, op: ReduceOp, dtype: DType, acc: Expr, x: Expr) -> R<()> {
        let graph = self.graph;
        let current = self.b.load(acc);
        let next = scalar::reduce_step(&mut self.b, op, current, x, dtype).ok_or_else(|| unsupported(graph, node))?;
        self.b.store(acc, next);
        Ok(())
    }

    /// The fold's value from its total: `mean` divides by `count`; f16 is rounded once, here.
    fn fold_result(&mut self, node: NodeId, op: ReduceOp, dtype: DType, total: Expr, count: &Dim) -> R<Expr> {
        let graph = self.graph;
        let value = if op == ReduceOp::Mean {
            let count = self.dim_as(count, DType::F32).ok_or_else(|| unsupported(graph, node))?;
            self.b.binary(BinaryOperator::Divide, total, count)
        } else {
            total
        };
        Ok(scalar::round(&mut self.b, value, dtype))
    }

    fn reduce(&mut self, op: ReduceOp, input: NodeId, axes: &[usize], dtype: DType, pos: &mut Pos) -> R<Expr> {
        let graph = self.graph;
        let out_coords = self.coords(pos);
        let in_shape = graph.node(input).ty.shape.clone();
        let reduced: Vec<Dim> = axes.iter().map(|&a| in_shape[a].clone()).collect();
        let total = shape_count(&reduced).ok_or_else(|| internal(&self.name, "the reduction size overflows"))?;
        self.bounds.push((BoundKind::ReductionSize, total.clone(), MAX_ELEMENTS));
        self.reduction(self.root, op, dtype, &total, &mut |cx, r| {
            let inner = cx.delinearize(r, &reduced);
            let mut coords = Vec::with_capacity(in_shape.len());
            let (mut kept, mut folded) = (out_coords.iter(), inner.iter());
            for axis in 0..in_shape.len() {
                let next = if axes.contains(&axis) { folded.next() } else { kept.next() };
                coords.push(*next.ok_or_else(|| internal(&cx.name, "reduction axes do not match the shapes"))?);
            }
            Ok(cx.value(input, &mut Pos::coords(&in_shape, coords))?.expr)
        })
    }

    /// The `i32` position of the first extreme along `axis`: one pass from position 0 with a value and a
    /// position accumulator, the value replaced where the element beats it (`scalar::arg_beats`).
    fn arg_reduce(&mut self, op: ArgOp, input: NodeId, axis: usize, pos: &mut Pos) -> R<Expr> {
        let graph = self.graph;
        let node = self.current.unwrap_or(self.root);
        let out_coords = self.coords(pos);
        let in_shape = graph.node(input).ty.shape.clone();
        let in_dtype = graph.node(input).ty.dtype;
        let count = in_shape[axis].clone();
        self.bounds.push((BoundKind::ReductionSize, count.clone(), MAX_ELEMENTS));
        let (best, at) = self.arg_start(node, in_dtype)?;
        self.counted_loop("r", &count, &mut |cx, k| {
            let mut coords = out_coords.clone();
            coords.insert(axis, k);
            let x = cx.value(input, &mut Pos::coords(&in_shape, coords))?.expr;
            cx.arg_fold_in(node, op, in_dtype, (best, at), (x, k), true)
        })?;
        let at = self.b.load(at);
        Ok(self.arg_result(at))
    }

    /// The value and position accumulators of an index reduction over `dtype` values, empty: the position
    /// is `EMPTY_POSITION` until the first element or partial result is folded in (`arg_fold_in`).
    fn arg_start(&mut self, node: NodeId, dtype: DType) -> R<(Expr, Expr)> {
        let graph = self.graph;
        let init = scalar::reduce_init(&mut self.b, ReduceOp::Sum, dtype).ok_or_else(|| unsupported(graph, node))?;
        let best = self.accumulator(dtype, init);
        let empty = self.b.u32(EMPTY_POSITION);
        let at = self.accumulator(DType::U32, empty);
        Ok((best, at))
    }

    /// `(best, at) = (x, k)` where the candidate wins: folding elements in rising positions (`in_order`:
    /// an empty accumulator takes it, else it must beat the value, `scalar::arg_beats`) or combining
    /// partial results in any order (`arg_merge`).
    fn arg_fold_in(
        &mut self,
        node: NodeId,
        op: ArgOp,
        dtype: DType,
        (best, at): (Expr, Expr),
        (x, k): (Expr, Expr),
        in_order: bool,
    ) -> R<()> {
        let graph = self.graph;
        let current = self.b.load(best);
        let current_at = self.b.load(at);
        let (value, position) = if in_order {
            let empty = self.b.u32(EMPTY_POSITION);
            let first = self.b.binary(BinaryOperator::Equal, current_at, empty);
            let beats =
                scalar::arg_beats(&mut self.b, op, current, x, dtype).ok_or_else(|| unsupported(graph, node))?;
            let take = self.b.binary(BinaryOperator::LogicalOr, first, beats);
            (self.b.select(take, x, current), self.b.select(take, k, current_at))
        } else {
            self.arg_merge(node, op, dtype, (current, current_at), (x, k))?
        };
        self.b.store(best, value);
        self.b.store(at, position);
        Ok(())
    }

    /// Two partial results of an index reduction combined: the candidate `(x, k)` wins where it is not
    /// empty and the other is, or it beats the value or ties with it at an earlier position
    /// (`scalar::arg_takes`); so any order of combining gives the first extreme, as the interpreter.
    fn arg_merge(
        &mut self,
        node: NodeId,
        op: ArgOp,
        dtype: DType,
        (best, at): (Expr, Expr),
        (x, k): (Expr, Expr),
    ) -> R<(Expr, Expr)> {
        let graph = self.graph;
        let empty = self.b.u32(EMPTY_POSITION);
        let mine_empty = self.b.binary(BinaryOperator::Equal, at, empty);
        let other_full = self.b.binary(BinaryOperator::NotEqual, k, empty);
        let takes =
            scalar::arg_takes(&mut self.b, op, (best, at), (x, k), dtype).ok_or_else(|| unsupported(graph, node))?;
        let wins = self.b.binary(BinaryOperator::LogicalOr, mine_empty, takes);
        let take = self.b.binary(BinaryOperator::LogicalAnd, other_full, wins);
        Ok((self.b.select(take, x, best), self.b.select(take, k, at)))
    }

    /// An index reduction's `i32` result from its position accumulator.
    fn arg_result(&mut self, at: Expr) -> Expr {
        self.b.expr(Expression::As { expr: at, kind: naga::ScalarKind::Sint, convert: Some(4) })
    }

    fn matmul(&mut self, a: NodeId, c: NodeId, dtype: DType, pos: &mut Pos) -> R<Expr> {
        let graph = self.graph;
        let coords = self.coords(pos);
        let a_shape = graph.node(a).ty.shape.clone();
        let c_shape = graph.node(c).ty.shape.clone();
        let rank = coords.len();
        let k_extent = a_shape[rank - 1].clone();
        let zero = self.b.f32(0.0);
        let acc = self.accumulator(dtype, zero);
        self.counted_loop("k", &k_extent, &mut |cx, k| {
            let mut a_coords = coords.clone();
            a_coords[rank - 1] = k;
            let mut c_coords = coords.clone();
            c_coords[rank - 2] = k;
            let x = cx.value(a, &mut Pos::coords(&a_shape, a_coords))?;
            let y = cx.value(c, &mut Pos::coords(&c_shape, c_coords))?;
            let product = cx.b.binary(BinaryOperator::Multiply, x.expr, y.expr);
            let current = cx.b.load(acc);
            let next = cx.b.binary(BinaryOperator::Add, current, product);
            cx.b.store(acc, next);
            Ok(())
        })?;
        let sum = self.b.load(acc);
        Ok(scalar::round(&mut self.b, sum, dtype))
    }

    fn concat(&mut self, inputs: &[NodeId], axis: usize, pos: &mut Pos) -> R<Val> {
        let graph = self.graph;
        let coords = self.coords(pos);
        let c = coords[axis];
        let mut offset = Dim::constant(0);
        let mut branches = Vec::with_capacity(inputs.len());
        for &input in inputs {
            let shape = graph.node(input).ty.shape.clone();
            // c - offset wraps below the input's range; clamping keeps the (unselected) load in bounds.
            let start = self.dim(&offset);
            let local = self.b.binary(BinaryOperator::Subtract, c, start);
            let last = shape[axis].sub(&Dim::constant(1)).map_err(|e| internal(&self.name, &e.to_string()))?;
            let last = self.dim(&last);
            let clamped = self.b.math(naga::MathFunction::Min, &[local, last]);
            let mut inner = coords.clone();
            inner[axis] = clamped;
            let value = self.value(input, &mut Pos::coords(&shape, inner))?;
            offset = offset.add(&shape[axis]).map_err(|e| internal(&self.name, &e.to_string()))?;
            let end = self.dim(&offset);
            branches.push((value, end));
        }
        let (last, _) = branches.pop().ok_or_else(|| internal(&self.name, "concat of nothing"))?;
        let mut result = last.expr;
        for (value, end) in branches.into_iter().rev() {
            let inside = self.b.binary(BinaryOperator::Less, c, end);
            result = self.b.select(inside, value.expr, result);
        }
        Ok(Val { expr: result, dtype: last.dtype })
    }

    fn gather(&mut self, id: NodeId, table: NodeId, indices: NodeId, axis: usize, pos: &mut Pos) -> R<Val> {
        let graph = self.graph;
        let coords = self.coords(pos);
        let index_shape = graph.node(indices).ty.shape.clone();
        let table_shape = graph.node(table).ty.shape.clone();
        let ri = index_shape.len();
        let index = self.value(indices, &mut Pos::coords(&index_shape, coords[axis..axis + ri].to_vec()))?;
        let (raw, inside) = self.checked_index(id, index, &table_shape[axis])?;
        let zero = self.b.u32(0);
        let clamped = self.b.select(inside, raw, zero);
        let mut table_coords = coords[..axis].to_vec();
        table_coords.push(clamped);
        table_coords.extend_from_slice(&coords[axis + ri..]);
        self.value(table, &mut Pos::coords(&table_shape, table_coords))
    }

    /// The `i32` index `index` as `u32` and whether it is below `extent` (a negative index is a huge `u32`,
    /// so one unsigned comparison checks both ends); outside, the kernel reports a run-time error for `id`.
    fn checked_index(&mut self, id: NodeId, index: Val, extent: &Dim) -> R<(Expr, Expr)> {
        let raw = match index.dtype {
            DType::I32 => self.b.bitcast(index.expr, ScalarKind::Uint),
            DType::U32 => index.expr,
            _ => return Err(unsupported(self.graph, id)),
        };
        let extent = self.dim(extent);
        let inside = self.b.binary(BinaryOperator::Less, raw, extent);
        let outside = self.b.expr(Expression::Unary { op: naga::UnaryOperator::LogicalNot, expr: inside });
        self.fail_if(id, outside, raw, index.dtype == DType::U32);
        Ok((raw, inside))
    }

    /// torch.gather: the input at `pos` with the index read at `pos` along `axis` (the indices have the
    /// output's shape); an index out of range reads position 0 and reports the error.
    fn take_along_axis(&mut self, id: NodeId, input: NodeId, indices: NodeId, axis: usize, pos: &mut Pos) -> R<Val> {
        let graph = self.graph;
        let input_shape = graph.node(input).ty.shape.clone();
        let index = self.value(indices, pos)?;
        let mut coords = self.coords(pos);
        let (raw, inside) = self.checked_index(id, index, &input_shape[axis])?;
        let zero = self.b.u32(0);
        coords[axis] = self.b.select(inside, raw, zero);
        self.value(input, &mut Pos::coords(&input_shape, coords))
    }

    /// torch.scatter_add, deterministically: the base at `pos` plus, for `j` increasing along `axis`, every
    /// `src[.., j, ..]` whose index is `pos`'s coordinate there (the interpreter's order; floats add in
    /// `f32`, an `f16` result rounded once). Each invocation checks the indices it reads.
    fn scatter_add(
        &mut self,
        id: NodeId,
        base: NodeId,
        indices: NodeId,
        src: NodeId,
        axis: usize,
        pos: &mut Pos,
    ) -> R<Expr> {
        let graph = self.graph;
        let dtype = graph.node(id).ty.dtype;
        let extent = graph.node(base).ty.shape[axis].clone();
        let src_shape = graph.node(src).ty.shape.clone();
        let coords = self.coords(pos);
        let start = self.value(base, pos)?;
        let acc = self.accumulator(dtype, start.expr);
        let target = coords[axis];
        self.counted_loop("j", &src_shape[axis], &mut |cx, j| {
            let mut at = coords.clone();
            at[axis] = j;
            let index = cx.value(indices, &mut Pos::coords(&src_shape, at.clone()))?;
            let (raw, _) = cx.checked_index(id, index, &extent)?;
            let hit = cx.b.binary(BinaryOperator::Equal, raw, target);
            let x = cx.value(src, &mut Pos::coords(&src_shape, at))?;
            let current = cx.b.load(acc);
            let sum = cx.b.binary(BinaryOperator::Add, current, x.expr);
            let next = cx.b.select(hit, sum, current);
            cx.b.store(acc, next);
            Ok(())
        })?;
        let total = self.b.load(acc);
        Ok(scalar::round(&mut self.b, total, dtype))
    }

    /// Scalar node `s` of the index-notation `map` of graph node `node`, with the output and open reduction
    /// variables in `self.vars`; `instance` identifies this evaluation of the map.
    fn scalar(&mut self, node: NodeId, instance: u32, map: &MapOp, s: ScalarId) -> R<Val> {
        if let Some(v) = self.cached(Key::Scalar(instance, s)) {
            return Ok(v);
        }
        let graph = self.graph;
        let unsupported = || unsupported(graph, node);
        let dtype = map.exprs[s].dtype;
        let expr = match &map.exprs[s].expr {
            ScalarExpr::Const(value) => self.constant(*value, dtype).ok_or_else(unsupported)?,
            ScalarExpr::Dim(dim) => self.dim_as(dim, dtype).ok_or_else(unsupported)?,
            ScalarExpr::Var(v) => {
                let raw = *self.vars.get(v).ok_or_else(|| internal(&self.name, "an index variable is unbound"))?;
                self.index_as(raw, false, dtype).ok_or_else(unsupported)?
            }
            ScalarExpr::Unary(op, a) => {
                let x = self.scalar(node, instance, map, *a)?;
                scalar::unary_op(&mut self.b, *op, x.expr, x.dtype).ok_or_else(unsupported)?
            }
            ScalarExpr::Binary(op, a, c) => {
                let x = self.scalar(node, instance, map, *a)?;
                let y = self.scalar(node, instance, map, *c)?;
                scalar::binary_op(&mut self.b, *op, x.expr, y.expr, x.dtype).ok_or_else(unsupported)?
            }
            ScalarExpr::Select { cond, on_true, on_false } => {
                let c = self.scalar(node, instance, map, *cond)?;
                let t = self.scalar(node, instance, map, *on_true)?;
                let f = self.scalar(node, instance, map, *on_false)?;
                self.b.select(c.expr, t.expr, f.expr)
            }
            ScalarExpr::Cast(a) => {
                let x = self.scalar(node, instance, map, *a)?;
                scalar::cast_op(&mut self.b, x.expr, x.dtype, dtype).ok_or_else(unsupported)?
            }
            ScalarExpr::Load { input, indices, default } => {
                let input_node = *map.inputs.get(*input).ok_or_else(|| internal(&self.name, "a load of no input"))?;
                let shape = graph.node(input_node).ty.shape.clone();
                let mut coords = Vec::with_capacity(indices.len());
                let mut all_inside: Option<Expr> = None;
                // Each axis's index and range test, for the error report.
                let mut checks: Vec<(Expr, Expr)> = Vec::new();
                for (axis, affine) in indices.iter().enumerate() {
                    let proven = in_range(map, affine, &shape[axis]);
                    if !proven {
                        self.affine_bounds(map, affine, &shape[axis], node, s, axis);
                    }
                    let mut index: Option<Expr> =
                        (affine.offset.as_const() != Some(0)).then(|| self.dim(&affine.offset));
                    for (var, coef) in &affine.terms {
                        let v =
                            *self.vars.get(var).ok_or_else(|| internal(&self.name, "an index variable is unbound"))?;
                        let term = match coef.as_const() {
                            Some(1) => v,
                            _ => {
                                let k = self.dim(coef);
                                self.b.binary(BinaryOperator::Multiply, k, v)
                            }
                        };
                        index = Some(match index {
                            None => term,
                            Some(i) => self.b.binary(BinaryOperator::Add, i, term),
                        });
                    }
                    let index = index.unwrap_or_else(|| self.b.u32(0));
                    if affine.div != 1 {
                        // The quotient, in range iff the sum is below `div * extent` (negative sums are huge
                        // as u32) and `div` divides it.
                        let scaled = shape[axis].scale(affine.div).map_err(|e| internal(&self.name, &e.to_string()))?;
                        let limit = self.dim(&scaled);
                        let below = self.b.binary(BinaryOperator::Less, index, limit);
                        let div = self.b.u32(affine.div as u32);
                        let rem = self.b.binary(BinaryOperator::Modulo, index, div);
                        let zero = self.b.u32(0);
                        let exact = self.b.binary(BinaryOperator::Equal, rem, zero);
                        let inside = self.b.binary(BinaryOperator::LogicalAnd, below, exact);
                        let quotient = self.b.binary(BinaryOperator::Divide, index, div);
                        coords.push(self.b.select(inside, quotient, zero));
                        all_inside = Some(match all_inside {
                            None => inside,
                            Some(all) => self.b.binary(BinaryOperator::LogicalAnd, all, inside),
                        });
                        checks.push((quotient, inside));
                        continue;
                    }
                    if proven {
                        coords.push(index);
                        continue;
                    }
                    // In range iff 0 <= index < extent: negative indices are huge as u32.
                    let extent = self.dim(&shape[axis]);
                    let inside = self.b.binary(BinaryOperator::Less, index, extent);
                    let zero = self.b.u32(0);
                    coords.push(self.b.select(inside, index, zero));
                    all_inside = Some(match all_inside {
                        None => inside,
                        Some(all) => self.b.binary(BinaryOperator::LogicalAnd, all, inside),
                    });
                    checks.push((index, inside));
                }
                let value = self.value(input_node, &mut Pos::coords(&shape, coords))?;
                match (all_inside, default) {
                    (None, _) => value.expr,
                    (Some(inside), Some(default)) => {
                        let fallback = self.constant(*default, dtype).ok_or_else(unsupported)?;
                        self.b.select(inside, value.expr, fallback)
                    }
                    (Some(inside), None) => {
                        let outside =
                            self.b.expr(Expression::Unary { op: naga::UnaryOperator::LogicalNot, expr: inside });
                        // The index of the first axis out of range (as i32 bits).
                        let mut detail = checks.last().map_or(inside, |c| c.0);
                        for &(index, axis_inside) in checks.iter().rev().skip(1) {
                            detail = self.b.select(axis_inside, detail, index);
                        }
                        self.fail_if(node, outside, detail, false);
                        value.expr
                    }
                }
            }
            ScalarExpr::Reduce { op, vars, body } => {
                let extents: Vec<Dim> = vars.iter().map(|v| map.extents[v.0 as usize].clone()).collect();
                let total =
                    shape_count(&extents).ok_or_else(|| internal(&self.name, "the reduction size overflows"))?;
                self.bounds.push((
                    BoundKind::MapReductionSize { scalar: s.index() as u32 },
                    total.clone(),
                    MAX_ELEMENTS,
                ));
                let value = self.reduction(node, *op, dtype, &total, &mut |cx, r| {
                    let values = cx.delinearize(r, &extents);
                    for (var, value) in vars.iter().zip(values) {
                        cx.vars.insert(*var, value);
                    }
                    Ok(cx.scalar(node, instance, map, *body)?.expr)
                })?;
                for var in vars {
                    self.vars.remove(var);
                }
                value
            }
        };
        let value = Val { expr, dtype };
        self.remember(Key::Scalar(instance, s), value);
        Ok(value)
    }

    /// Index `axis` of load `s` is `offset + sum(coef * var)` (divided by `div`) computed in wrapping `u32`: exact, and its
    /// range test sound, while every term stays below `2^31 / (terms + 1)` in magnitude, so the runtime checks
    /// each term's extreme (`coef * (extent - 1)`) and the offset against that.
    fn affine_bounds(
        &mut self,
        map: &MapOp,
        affine: &crate::ir::Affine,
        extent: &Dim,
        node: NodeId,
        s: ScalarId,
        axis: usize,
    ) {
        let limit = (1i64 << 31) / (affine.terms.len() as i64 + 1);
        let what = BoundKind::LoadIndex { axis: axis as u32, scalar: s.index() as u32, node: node.index() as u32 };
        let mut extremes = vec![affine.offset.clone()];
        // A divided index is compared against `div * extent`, which must stay in range too.
        if affine.div != 1
            && let Ok(scaled) = extent.scale(affine.div)
        {
            extremes.push(scaled);
        }
        for (var, coef) in &affine.terms {
            let last = map.extents[var.0 as usize].sub(&Dim::constant(1));
            if let Ok(term) = last.and_then(|l| l.mul(coef)) {
                extremes.push(term);
            }
        }
        for e in extremes {
            let fits = e.as_const().is_some_and(|c| c.abs() < limit);
            if fits {
                continue;
            }
            if let Ok(negated) = e.neg() {
                self.bounds.push((what, negated, limit - 1));
            }
            self.bounds.push((what, e, limit - 1));
        }
    }

    /// Declares entry-point argument `name`, the built-in `builtin` of type `ty`.
    fn builtin(&mut self, name: &str, ty: Handle<naga::Type>, builtin: BuiltIn) -> Arg {
        self.arguments.push(FunctionArgument {
            name: Some(name.to_string()),
            ty,
            binding: Some(Binding::BuiltIn(builtin)),
        });
        Arg(self.arguments.len() as u32 - 1)
    }

    /// The value of a declared argument.
    fn arg(&mut self, arg: Arg) -> Expr {
        self.b.expr(Expression::FunctionArgument(arg.0))
    }

    /// The invocation's flat index `gid.x + gid.y * (num_workgroups.x * per_workgroup)` in a grid that may
    /// be folded into two dimensions.
    fn global_index(&mut self, grid: Grid, per_workgroup: u32) -> Expr {
        let gid = self.arg(grid.gid);
        let num_workgroups = self.arg(grid.num_workgroups);
        let gid_x = self.b.expr(Expression::AccessIndex { base: gid, index: 0 });
        let gid_y = self.b.expr(Expression::AccessIndex { base: gid, index: 1 });
        let groups_x = self.b.expr(Expression::AccessIndex { base: num_workgroups, index: 0 });
        let size = self.b.u32(per_workgroup);
        let row = self.b.binary(BinaryOperator::Multiply, groups_x, size);
        let offset = self.b.binary(BinaryOperator::Multiply, gid_y, row);
        self.b.binary(BinaryOperator::Add, gid_x, offset)
    }

    /// The flat index of a plain or vector kernel's invocation (`index`), returning past the invocation
    /// count (slot 0).
    fn element_index(&mut self, grid: Grid) -> Expr {
        let count_value = self.slot(0);
        self.b.name(count_value, "count");
        let index = self.global_index(grid, WORKGROUP_SIZE);
        self.b.name(index, "index");
        let past_end = self.b.binary(BinaryOperator::GreaterEqual, index, count_value);
        self.return_if(past_end);
        index
    }

    /// `wid.x + wid.y * num_workgroups.x`: this workgroup's index in a folded grid, uniform in the
    /// workgroup.
    fn workgroup_index(&mut self, args: Workgroups) -> Expr {
        let wid = self.arg(args.wid);
        let num_workgroups = self.arg(args.num_workgroups);
        let wid_x = self.b.expr(Expression::AccessIndex { base: wid, index: 0 });
        let wid_y = self.b.expr(Expression::AccessIndex { base: wid, index: 1 });
        let groups_x = self.b.expr(Expression::AccessIndex { base: num_workgroups, index: 0 });
        let offset = self.b.binary(BinaryOperator::Multiply, wid_y, groups_x);
        self.b.binary(BinaryOperator::Add, wid_x, offset)
    }

    /// `if condition { return; }`.
    fn return_if(&mut self, condition: Expr) {
        let mut early = naga::Block::new();
        early.push(Statement::Return { value: None }, naga::Span::UNDEFINED);
        self.b.statement(Statement::If { condition, accept: early, reject: naga::Block::new() });
    }

    /// `out[index] = value` in the storage form.
    fn store_output(&mut self, output: Handle<GlobalVariable>, index: Expr, value: Val) {
        let stored = to_storage(&mut self.b, value);
        let element = if self.vector {
            self.vector_element(output, index)
        } else {
            let out_ptr = self.b.expr(Expression::GlobalVariable(output));
            self.b.expr(Expression::Access { base: out_ptr, index })
        };
        self.b.store(element, stored);
    }

    fn barrier(&mut self) {
        self.b.statement(Statement::ControlBarrier(naga::Barrier::WORK_GROUP));
    }

    /// A workgroup-memory array of `len` elements of `scalar`.
    fn workgroup_array(&mut self, name: &str, scalar: Scalar, len: u32) -> Handle<GlobalVariable> {
        let element = self.b.ty(TypeInner::Scalar(scalar));
        let size = std::num::NonZeroU32::new(len.max(1)).map(ArraySize::Constant).unwrap_or(ArraySize::Dynamic);
        let array = self.b.ty(TypeInner::Array { base: element, size, stride: 4 });
        self.b.module.global_variables.append(
            GlobalVariable {
                name: Some(name.to_string()),
                space: AddressSpace::WorkGroup,
                binding: None,
                ty: array,
                init: None,
                memory_decorations: MemoryDecorations::empty(),
            },
            naga::Span::UNDEFINED,
        )
    }

    /// Element `pos` of `id` given as a column of a workgroup array (`Given::Column`).
    fn load_column(&mut self, id: NodeId, array: Handle<GlobalVariable>, base: Expr, pos: &mut Pos) -> Val {
        let dtype = self.graph.node(id).ty.dtype;
        let flat = self.flat(pos);
        let column = self.b.binary(BinaryOperator::Subtract, flat, base);
        let pointer = self.b.expr(Expression::GlobalVariable(array));
        let element = self.b.expr(Expression::Access { base: pointer, index: column });
        let raw = self.b.load(element);
        let expr = if dtype == DType::Bool {
            let zero = self.b.u32(0);
            self.b.binary(BinaryOperator::NotEqual, raw, zero)
        } else {
            raw
        };
        Val { expr, dtype }
    }

    /// The `LoopIterations` bound: every loop's iterations per invocation added up, naming the node whose
    /// loops run most at `NOMINAL_SYMBOL` sizes. A kernel without loops has none.
    fn loop_bound(&mut self) -> R<()> {
        let Some(&(first, _)) = self.loop_iterations.first() else { return Ok(()) };
        let nominal = |d: &Dim| d.eval(&|_| tdsl_runtime::exec::NOMINAL_SYMBOL).unwrap_or(i64::MAX);
        let mut total = Dim::constant(0);
        let mut most = (first, i64::MIN);
        for (node, iterations) in &self.loop_iterations {
            total = total.add(iterations).map_err(|_| internal(&self.name, "the loop iteration count overflows"))?;
            if nominal(iterations) > most.1 {
                most = (*node, nominal(iterations));
            }
        }
        let what = BoundKind::LoopIterations { node: most.0.index() as u32 };
        self.bounds.push((what, total, i64::MAX));
        Ok(())
    }

    /// Sets bindings and the uniform block's type, adds the entry point (with the declared arguments and
    /// `workgroup` invocations per workgroup), and validates.
    fn finish(mut self, workgroup: u32) -> R<Kernel> {
        self.loop_bound()?;
        let members: Vec<StructMember> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, dim)| StructMember {
                name: Some(slot_name(self.graph, i, dim)),
                ty: self.u32_ty,
                binding: None,
                offset: 4 * i as u32,
            })
            .collect();
        let span = (4 * members.len() as u32).next_multiple_of(16);
        let block = self.b.module.types.insert(
            naga::Type { name: Some("Dims".to_string()), inner: TypeInner::Struct { members, span } },
            naga::Span::UNDEFINED,
        );
        self.b.module.global_variables[self.uniform].ty = block;
        let invocations = self.slots[0].clone();
        let (mut module, mut function) = self.b.finish();
        function.name = Some("main".to_string());
        function.arguments = std::mem::take(&mut self.arguments);
        module.entry_points.push(EntryPoint {
            name: "main".to_string(),
            stage: ShaderStage::Compute,
            early_depth_test: None,
            workgroup_size: [workgroup, 1, 1],
            workgroup_size_overrides: None,
            function,
            mesh_info: None,
            task_payload: None,
            incoming_ray_payload: None,
        });
        // Bindings are numbered after compaction, so a read whose value turned out unused (e.g. `x % 0`)
        // leaves no gap: binding `i` is `args[i]`, as the pipeline layout derived from the shader expects.
        naga::compact::compact(&mut module, naga::compact::KeepUnused::No);
        let mut args = Vec::new();
        let candidates = self
            .reads
            .iter()
            .enumerate()
            .map(|(i, (node, _))| (format!("in{i}"), KernelArg::Read(*node)))
            .chain([("out".to_string(), KernelArg::Write(self.root))])
            .chain(self.siblings.iter().enumerate().map(|(k, &id)| (format!("out{}", k + 1), KernelArg::Write(id))))
            .chain([
                ("dims".to_string(), KernelArg::Uniform(self.slots.clone())),
                ("status".to_string(), KernelArg::Status),
            ]);
        for (name, arg) in candidates {
            let global = module.global_variables.iter().find(|(_, g)| g.name.as_deref() == Some(name.as_str()));
            if let Some((handle, _)) = global {
                let binding = args.len() as u32;
                module.global_variables[handle].binding = Some(ResourceBinding { group: BIND_GROUP, binding });
                args.push(arg);
            }
        }
        Kernel::finish(self.name, module, args, invocations, workgroup, self.bounds, self.checks)
    }
}

/// Whether `affine` provably stays in `0..extent` for every value of its variables and every symbol value
/// (`Dim::is_nonneg` is sound): every coefficient and the offset are nonnegative, and the largest index,
/// `offset + sum(coef * (var extent - 1))`, is at most `extent - 1`. Such a load needs no run-time check.
fn in_range(map: &MapOp, affine: &crate::ir::Affine, extent: &Dim) -> bool {
    if affine.div != 1 || !affine.offset.is_nonneg() {
        return false;
    }
    let mut largest = affine.offset.clone();
    for (var, coef) in &affine.terms {
        if !coef.is_nonneg() {
            return false;
        }
        let Some(var_extent) = map.extents.get(var.0 as usize) else { return false };
        let term = var_extent.sub(&Dim::constant(1)).and_then(|last| last.mul(coef));
        match term.and_then(|t| largest.add(&t)) {
            Ok(sum) => largest = sum,
            Err(_) => return false,
        }
    }
    extent.sub(&Dim::constant(1)).and_then(|last| last.sub(&largest)).is_ok_and(|slack| slack.is_nonneg())
}

/// The uniform member for slot `i`: `count`, a symbol's name, or `d<i>`.
fn slot_name(graph: &Graph, i: usize, dim: &Dim) -> String {
    match (i, dim.as_sym()) {
        (0, _) => "count".to_string(),
        (_, Some(sym)) => {
            let name = graph.symbol_name(sym);
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("__") {
                format!("{name}_")
            } else {
                format!("d{i}")
            }
        }
        _ => format!("d{i}"),
    }
}

/// The product of `shape`'s dimensions.
fn shape_count(shape: &[Dim]) -> Option<Dim> {
    shape.iter().try_fold(Dim::constant(1), |acc, d| acc.mul(d).ok())
}

/// A read-only or read-write storage array holding `dtype` in its device layout (f16 as f32, bool as u32),
/// as scalars or, in vector kernels (`vector`), as 4-element vectors (buffers are padded to 16 bytes).
fn storage(b: &mut FnBuilder, name: &str, dtype: DType, access: StorageAccess, vector: bool) -> Handle<GlobalVariable> {
    let scalar = storage_scalar(dtype);
    let element = match vector {
        true => b.ty(TypeInner::Vector { size: VectorSize::Quad, scalar }),
        false => b.ty(TypeInner::Scalar(scalar)),
    };
    let stride = if vector { 16 } else { 4 };
    let array = b.ty(TypeInner::Array { base: element, size: ArraySize::Dynamic, stride });
    b.module.global_variables.append(
        GlobalVariable {
            name: Some(name.to_string()),
            space: AddressSpace::Storage { access },
            binding: None,
            ty: array,
            init: None,
            memory_decorations: MemoryDecorations::empty(),
        },
        naga::Span::UNDEFINED,
    )
}

/// The scalar type holding `dtype` in memory (f16 as f32, bool as u32).
/// The position accumulator of an index reduction before any element: no position is this large, as
/// tensors have fewer than 2^32 - 1 elements along an axis (`MAX_ELEMENTS`).
const EMPTY_POSITION: u32 = u32::MAX;

fn storage_scalar(dtype: DType) -> Scalar {
    match dtype {
        DType::F32 | DType::F16 => Scalar::F32,
        DType::I32 => Scalar::I32,
        DType::U32 | DType::Bool => Scalar::U32,
    }
}

fn held_name(scalar: Scalar) -> &'static str {
    match scalar.kind {
        ScalarKind::Float => "f32",
        ScalarKind::Sint => "i32",
        _ => "u32",
    }
}

/// A value in its storage form (bool as 0/1).
fn to_storage(b: &mut FnBuilder, value: Val) -> Expr {
    if value.dtype == DType::Bool {
        let zero = b.u32(0);
        let one = b.u32(1);
        b.select(value.expr, one, zero)
    } else {
        value.expr
    }
}

/// `<op>_<dtype>_n<node>`: readable in logs, unique within a graph.
pub(super) fn kernel_name(graph: &Graph, node: NodeId) -> String {
    let n = graph.node(node);
    format!("{}_{}_n{}", n.op.name(), n.ty.dtype.name(), node.index())
}

fn internal(kernel: &str, message: &str) -> CodegenError {
    CodegenError::Internal { kernel: kernel.to_string(), message: message.to_string() }
}

pub(super) fn unsupported(graph: &Graph, node: NodeId) -> CodegenError {
    let n = graph.node(node);
    let operands: Vec<String> = n.op.operands().iter().map(|&id| graph.type_to_string(&graph.node(id).ty)).collect();
    CodegenError::Unsupported {
        op: format!("{}({}) -> {}", n.op.name(), operands.join(", "), graph.type_to_string(&n.ty)),
    }
}

/// Element `index` of the workgroup (or storage) array `array`.
fn load_element(cx: &mut Cx, array: naga::Handle<naga::GlobalVariable>, index: Expr) -> Expr {
    let base = cx.b.expr(Expression::GlobalVariable(array));
    let pointer = cx.b.expr(Expression::Access { base, index });
    cx.b.load(pointer)
}

/// Stores `value` into element `index` of the array `array`.
fn store_element(cx: &mut Cx, array: naga::Handle<naga::GlobalVariable>, index: Expr, value: Expr) {
    let base = cx.b.expr(Expression::GlobalVariable(array));
    let pointer = cx.b.expr(Expression::Access { base, index });
    cx.b.store(pointer, value);
}
