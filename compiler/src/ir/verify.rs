//! The IR verifier: checks the invariants documented in `ir/mod.rs` (dependency order, signature lists, and
//! the type rule of every op and every scalar node of a `Map` body) and reports every violation it finds.
//!
//! It never mutates the graph and never panics, however malformed the graph is: a node whose operands are
//! out of order is reported and its type rule skipped. Symbolic dimensions are compared structurally (they are
//! canonical), so a rule that needs arithmetic (`Reshape`, `Concat`) builds the expected `Dim` and compares.
//! Bounds of `Slice` and `Load` are checked here only when every dimension involved is a constant; the
//! interpreter checks them at run time.

use super::{
    Affine, BinaryOp, DType, Graph, MapOp, Node, NodeId, Op, ReduceOp, Scalar, ScalarExpr, ScalarId, TensorType,
    UnaryOp, VarId,
};
use crate::dim::Dim;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

/// One violated invariant: the node (`None` for a problem with the graph's signature lists), its op name and
/// what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct VerifyError {
    pub node: Option<NodeId>,
    pub op: &'static str,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(node) => write!(f, "%{} ({}): {}", node.index(), self.op, self.message),
            None => write!(f, "graph: {}", self.message),
        }
    }
}

/// Checks every invariant of `graph`; returns all violations, in node order, signature problems last.
pub fn verify(graph: &Graph) -> Result<(), Vec<VerifyError>> {
    let mut v = Verifier { graph, errors: Vec::new() };
    for (id, node) in graph.nodes.iter() {
        v.node(id, node);
    }
    v.signature();
    if v.errors.is_empty() { Ok(()) } else { Err(v.errors) }
}

struct Verifier<'g> {
    graph: &'g Graph,
    errors: Vec<VerifyError>,
}

/// Reports problems of one node; `fail!` returns from the rule after the first problem that makes the rest
/// meaningless.
struct NodeCx<'a, 'g> {
    v: &'a mut Verifier<'g>,
    id: NodeId,
    op: &'static str,
}

impl NodeCx<'_, '_> {
    fn err(&mut self, message: impl Into<String>) {
        self.v.errors.push(VerifyError { node: Some(self.id), op: self.op, message: message.into() });
    }
    fn ty(&self, id: NodeId) -> &TensorType {
        &self.v.graph.nodes[id].ty
    }
    fn show_ty(&self, ty: &TensorType) -> String {
        self.v.graph.type_to_string(ty)
    }
    fn show_dim(&self, dim: &Dim) -> String {
        self.v.graph.dim_to_string(dim)
    }
    fn show_shape(&self, shape: &[Dim]) -> String {
        let dims: Vec<String> = shape.iter().map(|d| self.show_dim(d)).collect();
        format!("[{}]", dims.join(", "))
    }
    /// Requires `actual == expected` shape, naming `what` in the message.
    fn expect_shape(&mut self, what: &str, actual: &[Dim], expected: &[Dim]) -> bool {
        if actual == expected {
            return true;
        }
        let msg = format!("{what} has shape {}, expected {}", self.show_shape(actual), self.show_shape(expected));
        self.err(msg);
        false
    }
    fn expect_dtype(&mut self, what: &str, actual: DType, expected: DType) -> bool {
        if actual == expected {
            return true;
        }
        self.err(format!("{what} has dtype {}, expected {}", actual.name(), expected.name()));
        false
    }
    /// Checks the symbols of `dim` exist and, when it is constant, that it is at least 1.
    fn check_extent(&mut self, what: &str, dim: &Dim) {
        self.check_dim_symbols(what, dim);
        if let Some(c) = dim.as_const()
            && c < 1
        {
            self.err(format!("{what} is {c}; every dimension must be at least 1"));
        }
    }
    fn check_dim_symbols(&mut self, what: &str, dim: &Dim) {
        let count = self.v.graph.symbols.len();
        for sym in dim.symbols() {
            if sym.0 as usize >= count {
                self.err(format!("{what} mentions symbol ?{} but the graph has {count} symbols", sym.0));
            }
        }
    }
}

impl<'g> Verifier<'g> {
    fn node(&mut self, id: NodeId, node: &Node) {
        let mut cx = NodeCx { v: self, id, op: node.op.name() };
        let mut ordered = true;
        for operand in node.op.operands() {
            if operand >= id {
                cx.err(format!("operand %{} does not precede its user", operand.index()));
                ordered = false;
            }
        }
        for (axis, dim) in node.ty.shape.iter().enumerate() {
            cx.check_extent(&format!("result dimension {axis}"), dim);
        }
        if ordered {
            type_rule(&mut cx, node);
        }
    }

    fn signature(&mut self) {
        let graph = self.graph;
        let mut errors = Vec::new();
        let mut err = |message: String| errors.push(VerifyError { node: None, op: "graph", message });
        let len = graph.nodes.len();
        let kind_of = |id: NodeId| graph.nodes.get(id).map(|n| n.op.name());

        let mut listed_inputs: HashMap<usize, usize> = HashMap::new();
        for (i, &id) in graph.inputs.iter().enumerate() {
            match kind_of(id) {
                None => err(format!("inputs[{i}] is %{}, past the last node (%{})", id.index(), len as i64 - 1)),
                Some("input") => *listed_inputs.entry(id.index()).or_insert(0) += 1,
                Some(other) => err(format!("inputs[{i}] is %{}, a {other} node, not an input", id.index())),
            }
        }
        let mut listed_params: HashMap<usize, usize> = HashMap::new();
        for (i, &id) in graph.params.iter().enumerate() {
            match kind_of(id) {
                None => err(format!("params[{i}] is %{}, past the last node (%{})", id.index(), len as i64 - 1)),
                Some("param") => *listed_params.entry(id.index()).or_insert(0) += 1,
                Some(other) => err(format!("params[{i}] is %{}, a {other} node, not a param", id.index())),
            }
        }
        let mut input_names: HashMap<&str, NodeId> = HashMap::new();
        let mut param_keys: HashMap<&str, NodeId> = HashMap::new();
        for (id, node) in graph.nodes.iter() {
            let (listed, list, name, seen) = match &node.op {
                Op::Input { name } => (&listed_inputs, "inputs", name, &mut input_names),
                Op::Param { key } => (&listed_params, "params", key, &mut param_keys),
                _ => continue,
            };
            match listed.get(&id.index()).copied().unwrap_or(0) {
                1 => {}
                0 => err(format!("%{} ({}) is not listed in `{list}`", id.index(), node.op.name())),
                n => err(format!("%{} ({}) is listed {n} times in `{list}`", id.index(), node.op.name())),
            }
            if let Some(first) = seen.insert(name.as_str(), id) {
                err(format!("%{} and %{} are both {} nodes named `{name}`", first.index(), id.index(), node.op.name()));
            }
        }
        let mut output_names: HashMap<&str, usize> = HashMap::new();
        for (i, output) in graph.outputs.iter().enumerate() {
            if output.node.index() >= len {
                err(format!("output `{}` is %{}, past the last node", output.name, output.node.index()));
            }
            if let Some(first) = output_names.insert(output.name.as_str(), i) {
                err(format!("outputs[{first}] and outputs[{i}] are both named `{}`", output.name));
            }
        }
        let is_param = |id: NodeId| id.index() < len && matches!(graph.nodes[id].op, Op::Param { .. });
        let mut initialised = HashSet::new();
        for (i, (param, _)) in graph.inits.iter().enumerate() {
            if !is_param(*param) {
                err(format!("inits[{i}] names %{}, which is not a param", param.index()));
            } else if !initialised.insert(*param) {
                err(format!("inits[{i}]: %{} has two initialisers", param.index()));
            }
        }
        let mut updated = HashSet::new();
        for (i, update) in graph.updates.iter().enumerate() {
            let Some(output) = graph.outputs.get(update.output) else {
                err(format!("updates[{i}] reads outputs[{}], past the last output", update.output));
                continue;
            };
            if !is_param(update.param) {
                err(format!("updates[{i}] writes %{}, which is not a param", update.param.index()));
            } else if !updated.insert(update.param) {
                err(format!("updates[{i}]: %{} is updated twice", update.param.index()));
            } else if output.node.index() < len && graph.nodes[output.node].ty != graph.nodes[update.param].ty {
                err(format!(
                    "updates[{i}]: output `{}` is {}, but %{} is {}",
                    output.name,
                    graph.type_to_string(&graph.nodes[output.node].ty),
                    update.param.index(),
                    graph.type_to_string(&graph.nodes[update.param].ty)
                ));
            }
        }
        self.errors.extend(errors);
    }
}

/// Whether a scalar literal can be given `dtype`: floats only as floats, integers as any number, booleans
/// only as `bool`.
fn scalar_fits(scalar: &Scalar, dtype: DType) -> bool {
    match scalar {
        Scalar::Float(_) => dtype.is_float(),
        Scalar::Int(_) => dtype.is_numeric(),
        Scalar::Bool(_) => dtype == DType::Bool,
    }
}

/// The dtype rule of a unary op, shared by tensor and scalar nodes; `Err` says what is wrong.
pub(crate) fn unary_rule(op: UnaryOp, operand: DType) -> Result<(), String> {
    match op {
        UnaryOp::Not if operand != DType::Bool => Err(format!("`not` needs bool, got {}", operand.name())),
        UnaryOp::Not => Ok(()),
        _ if !operand.is_numeric() => Err(format!("`{}` needs a numeric operand, got bool", op.name())),
        _ if op.float_only() && !operand.is_float() => {
            Err(format!("`{}` is defined on floats only, got {}", op.name(), operand.name()))
        }
        _ => Ok(()),
    }
}

/// The dtype rule of a binary op: operand dtypes `a`, `b` to the result dtype, or what is wrong.
pub(crate) fn binary_rule(op: BinaryOp, a: DType, b: DType) -> Result<DType, String> {
    if a != b {
        return Err(format!("operand dtypes differ: {} and {}", a.name(), b.name()));
    }
    if op.is_logical() {
        return if a == DType::Bool {
            Ok(DType::Bool)
        } else {
            Err(format!("`{}` needs bool, got {}", op.name(), a.name()))
        };
    }
    // `==` and `!=` also compare booleans (the checker accepts them, R6.1).
    let bool_ok = matches!(op, BinaryOp::Eq | BinaryOp::Ne);
    if !a.is_numeric() && !bool_ok {
        return Err(format!("`{}` needs numeric operands, got bool", op.name()));
    }
    if op == BinaryOp::Pow && !a.is_float() {
        return Err(format!("`pow` is defined on floats only, got {}", a.name()));
    }
    Ok(if op.is_comparison() { DType::Bool } else { a })
}

/// The dtype rule of a reduction over values of `dtype`.
pub(crate) fn reduce_rule(op: ReduceOp, dtype: DType) -> Result<(), String> {
    if !dtype.is_numeric() {
        return Err(format!("`{}` needs a numeric operand, got bool", op.name()));
    }
    if op == ReduceOp::Mean && !dtype.is_float() {
        return Err(format!("`mean` is defined on floats only, got {}", dtype.name()));
    }
    Ok(())
}

fn type_rule(cx: &mut NodeCx, node: &Node) {
    let ty = &node.ty;
    match &node.op {
        Op::Input { .. } | Op::Param { .. } => {}
        Op::Constant(scalar) => {
            if ty.rank() != 0 {
                cx.err(format!("constants are rank 0, result type is {}", cx.show_ty(ty)));
            }
            if !scalar_fits(scalar, ty.dtype) {
                cx.err(format!("constant {scalar:?} cannot have dtype {}", ty.dtype.name()));
            }
        }
        Op::DimValue(dim) => {
            if ty.rank() != 0 {
                cx.err(format!("dimension values are rank 0, result type is {}", cx.show_ty(ty)));
            }
            cx.check_dim_symbols("the dimension", dim);
        }
        Op::Unary(op, a) => {
            let a_ty = cx.ty(*a).clone();
            if let Err(msg) = unary_rule(*op, a_ty.dtype) {
                cx.err(msg);
            }
            cx.expect_dtype("the result", ty.dtype, a_ty.dtype);
            cx.expect_shape("the result", &ty.shape, &a_ty.shape);
        }
        Op::Binary(op, a, b) => {
            let (a_ty, b_ty) = (cx.ty(*a).clone(), cx.ty(*b).clone());
            match binary_rule(*op, a_ty.dtype, b_ty.dtype) {
                Ok(dtype) => {
                    cx.expect_dtype("the result", ty.dtype, dtype);
                }
                Err(msg) => cx.err(msg),
            }
            if cx.expect_shape("the right operand", &b_ty.shape, &a_ty.shape) {
                cx.expect_shape("the result", &ty.shape, &a_ty.shape);
            }
        }
        Op::Select { cond, on_true, on_false } => {
            let (c, t, f) = (cx.ty(*cond).clone(), cx.ty(*on_true).clone(), cx.ty(*on_false).clone());
            cx.expect_dtype("the condition", c.dtype, DType::Bool);
            cx.expect_dtype("the true branch", t.dtype, ty.dtype);
            cx.expect_dtype("the false branch", f.dtype, ty.dtype);
            cx.expect_shape("the condition", &c.shape, &ty.shape);
            cx.expect_shape("the true branch", &t.shape, &ty.shape);
            cx.expect_shape("the false branch", &f.shape, &ty.shape);
        }
        Op::Cast(a) => {
            let a_ty = cx.ty(*a).clone();
            cx.expect_shape("the result", &ty.shape, &a_ty.shape);
        }
        Op::Broadcast(a) => {
            let a_ty = cx.ty(*a).clone();
            cx.expect_dtype("the result", ty.dtype, a_ty.dtype);
            if a_ty.rank() > ty.rank() {
                cx.err(format!("cannot broadcast {} to the lower rank of {}", cx.show_ty(&a_ty), cx.show_ty(ty)));
                return;
            }
            let lead = ty.rank() - a_ty.rank();
            for (i, dim) in a_ty.shape.iter().enumerate() {
                let target = &ty.shape[lead + i];
                if dim != target && dim.as_const() != Some(1) {
                    cx.err(format!(
                        "operand dimension {i} is {}, which is neither 1 nor the result's {}",
                        cx.show_dim(dim),
                        cx.show_dim(target)
                    ));
                }
            }
        }
        Op::Reduce { op, input, axes } => {
            let a_ty = cx.ty(*input).clone();
            if let Err(msg) = reduce_rule(*op, a_ty.dtype) {
                cx.err(msg);
            }
            cx.expect_dtype("the result", ty.dtype, a_ty.dtype);
            if !axes.windows(2).all(|w| w[0] < w[1]) {
                cx.err(format!("axes {axes:?} are not sorted and unique"));
                return;
            }
            if let Some(bad) = axes.iter().find(|&&a| a >= a_ty.rank()) {
                cx.err(format!("axis {bad} is out of range for rank {}", a_ty.rank()));
                return;
            }
            let kept: Vec<Dim> =
                a_ty.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| d.clone()).collect();
            cx.expect_shape("the result", &ty.shape, &kept);
        }
        Op::ArgReduce { op, input, axis } => {
            let a_ty = cx.ty(*input).clone();
            if !a_ty.dtype.is_numeric() {
                cx.err(format!("`{}` needs a numeric operand, got bool", op.name()));
            }
            cx.expect_dtype("the result", ty.dtype, DType::I32);
            if *axis >= a_ty.rank() {
                cx.err(format!("axis {axis} is out of range for rank {}", a_ty.rank()));
                return;
            }
            let mut kept = a_ty.shape.clone();
            kept.remove(*axis);
            cx.expect_shape("the result", &ty.shape, &kept);
        }
        Op::Scan { op, input, axis, .. } => {
            let a_ty = cx.ty(*input).clone();
            if !a_ty.dtype.is_numeric() {
                cx.err(format!("`{}` needs a numeric operand, got bool", op.name()));
            }
            cx.expect_dtype("the result", ty.dtype, a_ty.dtype);
            if *axis >= a_ty.rank() {
                cx.err(format!("axis {axis} is out of range for rank {}", a_ty.rank()));
                return;
            }
            cx.expect_shape("the result", &ty.shape, &a_ty.shape);
        }
        Op::MatMul(a, b) => {
            let (a_ty, b_ty) = (cx.ty(*a).clone(), cx.ty(*b).clone());
            if a_ty.dtype != b_ty.dtype || !a_ty.dtype.is_float() {
                cx.err(format!(
                    "matmul needs two float operands of one dtype, got {} and {}",
                    a_ty.dtype.name(),
                    b_ty.dtype.name()
                ));
            }
            cx.expect_dtype("the result", ty.dtype, a_ty.dtype);
            let r = a_ty.rank();
            if r < 2 || b_ty.rank() != r {
                cx.err(format!(
                    "matmul needs operands of one rank >= 2, got {} and {}",
                    cx.show_ty(&a_ty),
                    cx.show_ty(&b_ty)
                ));
                return;
            }
            if a_ty.shape[..r - 2] != b_ty.shape[..r - 2] {
                cx.err(format!(
                    "batch dimensions differ: {} and {}",
                    cx.show_shape(&a_ty.shape[..r - 2]),
                    cx.show_shape(&b_ty.shape[..r - 2])
                ));
            }
            if a_ty.shape[r - 1] != b_ty.shape[r - 2] {
                cx.err(format!(
                    "inner dimensions differ: {} and {}",
                    cx.show_dim(&a_ty.shape[r - 1]),
                    cx.show_dim(&b_ty.shape[r - 2])
                ));
            }
            let mut expected = a_ty.shape[..r - 1].to_vec();
            expected.push(b_ty.shape[r - 1].clone());
            cx.expect_shape("the result", &ty.shape, &expected);
        }
        Op::Permute(a, perm) => {
            let a_ty = cx.ty(*a).clone();
            cx.expect_dtype("the result", ty.dtype, a_ty.dtype);
            let mut sorted = perm.clone();
            sorted.sort();
            if sorted != (0..a_ty.rank()).collect::<Vec<_>>() {
                cx.err(format!("{perm:?} is not a permutation of the {} axes", a_ty.rank()));
                return;
            }
            let expected: Vec<Dim> = perm.iter().map(|&p| a_ty.shape[p].clone()).collect();
            cx.expect_shape("the result", &ty.shape, &expected);
        }
        Op::Reshape(a) => {
            let a_ty = cx.ty(*a).clone();
            cx.expect_dtype("the result", ty.dtype, a_ty.dtype);
            let product = |shape: &[Dim]| shape.iter().try_fold(Dim::constant(1), |acc, d| acc.mul(d));
            match (product(&a_ty.shape), product(&ty.shape)) {
                (Ok(from), Ok(to)) if from == to => {}
                (Ok(from), Ok(to)) => cx.err(format!(
                    "element counts differ: {} has {} elements, the result {}",
                    cx.show_ty(&a_ty),
                    cx.show_dim(&from),
                    cx.show_dim(&to)
                )),
                _ => cx.err("element count overflows 64-bit integers"),
            }
        }
        Op::Slice { input, axis, start, step } => {
            let a_ty = cx.ty(*input).clone();
            cx.expect_dtype("the result", ty.dtype, a_ty.dtype);
            cx.check_dim_symbols("the start", start);
            if *step < 1 {
                cx.err(format!("step is {step}, must be at least 1"));
            }
            if *axis >= a_ty.rank() || ty.rank() != a_ty.rank() {
                cx.err(format!("axis {axis} does not fit {} -> {}", cx.show_ty(&a_ty), cx.show_ty(ty)));
                return;
            }
            let mut expected = a_ty.shape.clone();
            expected[*axis] = ty.shape[*axis].clone();
            cx.expect_shape("the result", &ty.shape, &expected);
            if let (Some(s), Some(len), Some(count)) =
                (start.as_const(), a_ty.shape[*axis].as_const(), ty.shape[*axis].as_const())
            {
                let last = (s as i128) + (*step as i128) * (count as i128 - 1);
                if s < 0 || last >= len as i128 {
                    cx.err(format!(
                        "elements {s}, {}, ... {last} are not all inside 0..{len}",
                        s as i128 + *step as i128
                    ));
                }
            }
        }
        Op::Concat { inputs, axis } => {
            if inputs.is_empty() {
                cx.err("concat needs at least one operand");
                return;
            }
            if *axis >= ty.rank() {
                cx.err(format!("axis {axis} is out of range for {}", cx.show_ty(ty)));
                return;
            }
            let mut total = Dim::constant(0);
            for (i, &input) in inputs.iter().enumerate() {
                let in_ty = cx.ty(input).clone();
                cx.expect_dtype(&format!("operand {i}"), in_ty.dtype, ty.dtype);
                if in_ty.rank() != ty.rank() {
                    cx.err(format!("operand {i} is {}, of another rank than {}", cx.show_ty(&in_ty), cx.show_ty(ty)));
                    return;
                }
                let mut expected = ty.shape.clone();
                expected[*axis] = in_ty.shape[*axis].clone();
                cx.expect_shape(&format!("operand {i}"), &in_ty.shape, &expected);
                match total.add(&in_ty.shape[*axis]) {
                    Ok(sum) => total = sum,
                    Err(_) => {
                        cx.err("the joined dimension overflows 64-bit integers");
                        return;
                    }
                }
            }
            if total != ty.shape[*axis] {
                cx.err(format!(
                    "the operands' dimensions {axis} add up to {}, the result's is {}",
                    cx.show_dim(&total),
                    cx.show_dim(&ty.shape[*axis])
                ));
            }
        }
        Op::Gather { table, indices, axis } => {
            let (t_ty, i_ty) = (cx.ty(*table).clone(), cx.ty(*indices).clone());
            cx.expect_dtype("the result", ty.dtype, t_ty.dtype);
            if !i_ty.dtype.is_int() {
                cx.err(format!("indices must be i32 or u32, got {}", i_ty.dtype.name()));
            }
            if *axis >= t_ty.rank() {
                cx.err(format!("axis {axis} is out of range for the table {}", cx.show_ty(&t_ty)));
                return;
            }
            let mut expected = t_ty.shape[..*axis].to_vec();
            expected.extend(i_ty.shape.iter().cloned());
            expected.extend(t_ty.shape[*axis + 1..].iter().cloned());
            cx.expect_shape("the result", &ty.shape, &expected);
        }
        Op::TakeAlongAxis { input, indices, axis } => {
            let (x_ty, i_ty) = (cx.ty(*input).clone(), cx.ty(*indices).clone());
            cx.expect_dtype("the result", ty.dtype, x_ty.dtype);
            cx.expect_dtype("the index tensor", i_ty.dtype, DType::I32);
            if !along_axis_shapes(cx, &x_ty, &i_ty, *axis) {
                return;
            }
            cx.expect_shape("the result", &ty.shape, &i_ty.shape);
        }
        Op::ScatterAdd { base, indices, src, axis } => {
            let (b_ty, i_ty, s_ty) = (cx.ty(*base).clone(), cx.ty(*indices).clone(), cx.ty(*src).clone());
            cx.expect_dtype("the result", ty.dtype, b_ty.dtype);
            cx.expect_dtype("the source", s_ty.dtype, b_ty.dtype);
            cx.expect_dtype("the index tensor", i_ty.dtype, DType::I32);
            if !ty.dtype.is_float() && !ty.dtype.is_int() {
                cx.err(format!("scatter-add of {}", ty.dtype.name()));
            }
            if !along_axis_shapes(cx, &b_ty, &i_ty, *axis) {
                return;
            }
            cx.expect_shape("the source", &s_ty.shape, &i_ty.shape);
            cx.expect_shape("the result", &ty.shape, &b_ty.shape);
        }
        Op::Argsort { input, axis, .. } => {
            let x_ty = cx.ty(*input).clone();
            cx.expect_dtype("the result", ty.dtype, DType::I32);
            if x_ty.dtype == DType::Bool {
                cx.err("argsort of bool");
            }
            if *axis >= x_ty.rank() {
                cx.err(format!("axis {axis} is out of range for {}", cx.show_ty(&x_ty)));
                return;
            }
            cx.expect_shape("the result", &ty.shape, &x_ty.shape);
        }
        Op::Map(map) => map_rule(cx, map, ty),
    }
}

/// `indices` has `data`'s rank and dimensions except along `axis` (which is in range): the operand rule of
/// `TakeAlongAxis` and `ScatterAdd`.
fn along_axis_shapes(cx: &mut NodeCx, data: &TensorType, indices: &TensorType, axis: usize) -> bool {
    if axis >= data.rank() || indices.rank() != data.rank() {
        cx.err(format!("axis {axis} and the indices {} do not fit {}", cx.show_ty(indices), cx.show_ty(data)));
        return false;
    }
    let mut expected = data.shape.clone();
    expected[axis] = indices.shape[axis].clone();
    cx.expect_shape("the index tensor", &indices.shape, &expected)
}

fn map_rule(cx: &mut NodeCx, map: &MapOp, ty: &TensorType) {
    let rank = ty.rank();
    if map.extents.len() < rank {
        cx.err(format!("{} extents for a result of rank {rank}", map.extents.len()));
        return;
    }
    for (i, extent) in map.extents.iter().enumerate() {
        cx.check_extent(&format!("the extent of v{i}"), extent);
        if i < rank && *extent != ty.shape[i] {
            let msg = format!(
                "the extent of v{i} is {}, the result's dimension {}",
                cx.show_dim(extent),
                cx.show_dim(&ty.shape[i])
            );
            cx.err(msg);
        }
    }
    let input_types: Vec<TensorType> = map.inputs.iter().map(|&i| cx.ty(i).clone()).collect();
    let n_vars = map.extents.len();
    // Per scalar node: the index variables it reads without binding them, and those bound by reductions
    // inside it (both sorted sets); `None` once the node is known to be malformed.
    let mut free: Vec<Option<BTreeSet<u32>>> = Vec::with_capacity(map.exprs.len());
    let mut bound: Vec<BTreeSet<u32>> = Vec::with_capacity(map.exprs.len());
    for (sid, snode) in map.exprs.iter() {
        let mut scx = ScalarCx { cx, sid, ok: true };
        let (f, b) = scalar_rule(&mut scx, map, snode, &input_types, n_vars, rank, &free, &bound);
        let ok = scx.ok;
        free.push(if ok { Some(f) } else { None });
        bound.push(b);
    }
    if map.body.index() >= map.exprs.len() {
        cx.err(format!("the body s{} is past the last scalar node", map.body.index()));
        return;
    }
    let body_dtype = map.exprs[map.body].dtype;
    if body_dtype != ty.dtype {
        cx.err(format!("the body has dtype {}, the result {}", body_dtype.name(), ty.dtype.name()));
    }
    if let Some(Some(f)) = free.get(map.body.index())
        && let Some(v) = f.iter().find(|&&v| v as usize >= rank)
    {
        cx.err(format!("the body reads v{v} outside of any reduction over it"));
    }
}

struct ScalarCx<'a, 'b, 'g> {
    cx: &'a mut NodeCx<'b, 'g>,
    sid: ScalarId,
    /// False when the node's operands are unusable, so its free variables are unknown.
    ok: bool,
}

impl ScalarCx<'_, '_, '_> {
    fn err(&mut self, message: impl std::fmt::Display) {
        let msg = format!("s{}: {message}", self.sid.index());
        self.cx.err(msg);
    }
    fn var(&mut self, var: VarId, n_vars: usize) -> bool {
        if (var.0 as usize) < n_vars {
            return true;
        }
        self.err(format!("v{} has no extent ({n_vars} index variables)", var.0));
        false
    }
}

#[allow(clippy::too_many_arguments)]
fn scalar_rule(
    scx: &mut ScalarCx,
    map: &MapOp,
    snode: &super::ScalarNode,
    inputs: &[TensorType],
    n_vars: usize,
    rank: usize,
    free: &[Option<BTreeSet<u32>>],
    bound: &[BTreeSet<u32>],
) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let sid = scx.sid;
    let dtype = snode.dtype;
    let mut f = BTreeSet::new();
    let mut b = BTreeSet::new();
    let operands: Vec<ScalarId> = match &snode.expr {
        ScalarExpr::Unary(_, a) | ScalarExpr::Cast(a) => vec![*a],
        ScalarExpr::Binary(_, a, c) => vec![*a, *c],
        ScalarExpr::Select { cond, on_true, on_false } => vec![*cond, *on_true, *on_false],
        ScalarExpr::Reduce { body, .. } => vec![*body],
        _ => vec![],
    };
    for &o in &operands {
        if o >= sid {
            scx.err(format!("operand s{} does not precede its user", o.index()));
            scx.ok = false;
        }
    }
    if !scx.ok {
        return (f, b);
    }
    for &o in &operands {
        match &free[o.index()] {
            Some(of) => f.extend(of.iter().copied()),
            None => scx.ok = false, // already reported at the operand
        }
        b.extend(bound[o.index()].iter().copied());
    }
    let dt = |o: ScalarId| map.exprs[o].dtype;
    match &snode.expr {
        ScalarExpr::Load { input, indices, default } => {
            let Some(in_ty) = inputs.get(*input) else {
                scx.err(format!("load of input {input}, but the map has {} inputs", inputs.len()));
                return (f, b);
            };
            if indices.len() != in_ty.rank() {
                scx.err(format!("{} indices for input {input} of rank {}", indices.len(), in_ty.rank()));
            }
            if dtype != in_ty.dtype {
                scx.err(format!("load has dtype {}, input {input} is {}", dtype.name(), in_ty.dtype.name()));
            }
            if let Some(d) = default
                && !scalar_fits(d, dtype)
            {
                scx.err(format!("default {d:?} cannot have dtype {}", dtype.name()));
            }
            for (axis, index) in indices.iter().enumerate() {
                affine_rule(scx, index, n_vars, &mut f);
                if index.div < 1 {
                    scx.err(format!("axis {axis}: divisor {} is not positive", index.div));
                }
                if index.div != 1 && default.is_none() {
                    scx.err(format!("axis {axis} is divided by {} but the load has no default", index.div));
                }
                if default.is_none() && axis < in_ty.rank() {
                    constant_bounds(scx, map, index, &in_ty.shape[axis], axis, *input);
                }
            }
        }
        ScalarExpr::Var(var) => {
            if scx.var(*var, n_vars) {
                f.insert(var.0);
            }
            if !dtype.is_numeric() {
                scx.err("index variables are numbers, not bool");
            }
        }
        ScalarExpr::Dim(dim) => {
            let known = dim.symbols().iter().all(|s| (s.0 as usize) < scx.cx.v.graph.symbols.len());
            if !known {
                scx.err("the dimension mentions an unknown symbol");
            }
        }
        ScalarExpr::Const(scalar) => {
            if !scalar_fits(scalar, dtype) {
                scx.err(format!("constant {scalar:?} cannot have dtype {}", dtype.name()));
            }
        }
        ScalarExpr::Unary(op, a) => {
            if let Err(msg) = unary_rule(*op, dt(*a)) {
                scx.err(msg);
            }
            if dt(*a) != dtype {
                scx.err(format!("result dtype {} differs from the operand's {}", dtype.name(), dt(*a).name()));
            }
        }
        ScalarExpr::Binary(op, a, c) => match binary_rule(*op, dt(*a), dt(*c)) {
            Ok(result) if result != dtype => {
                scx.err(format!("result dtype is {}, expected {}", dtype.name(), result.name()))
            }
            Ok(_) => {}
            Err(msg) => scx.err(msg),
        },
        ScalarExpr::Select { cond, on_true, on_false } => {
            if dt(*cond) != DType::Bool {
                scx.err(format!("the condition has dtype {}, expected bool", dt(*cond).name()));
            }
            if dt(*on_true) != dtype || dt(*on_false) != dtype {
                scx.err(format!(
                    "branches have dtypes {} and {}, the result {}",
                    dt(*on_true).name(),
                    dt(*on_false).name(),
                    dtype.name()
                ));
            }
        }
        ScalarExpr::Cast(_) => {}
        ScalarExpr::Reduce { op, vars, body } => {
            if let Err(msg) = reduce_rule(*op, dt(*body)) {
                scx.err(msg);
            }
            if dt(*body) != dtype {
                scx.err(format!("result dtype {} differs from the body's {}", dtype.name(), dt(*body).name()));
            }
            let mut seen = BTreeSet::new();
            for var in vars {
                if !scx.var(*var, n_vars) {
                    continue;
                }
                if (var.0 as usize) < rank {
                    scx.err(format!("reduces over v{}, an output index variable", var.0));
                }
                if !seen.insert(var.0) {
                    scx.err(format!("reduces over v{} twice", var.0));
                }
                if b.contains(&var.0) {
                    scx.err(format!("reduces over v{}, which a reduction inside it also binds", var.0));
                }
            }
            for var in &seen {
                f.remove(var);
                b.insert(*var);
            }
        }
    }
    (f, b)
}

fn affine_rule(scx: &mut ScalarCx, index: &Affine, n_vars: usize, free: &mut BTreeSet<u32>) {
    let n_syms = scx.cx.v.graph.symbols.len();
    let dims_ok = index
        .terms
        .iter()
        .map(|(_, c)| c)
        .chain([&index.offset])
        .all(|d| d.symbols().iter().all(|s| (s.0 as usize) < n_syms));
    if !dims_ok {
        scx.err("an index mentions an unknown symbol");
    }
    for (var, _) in &index.terms {
        if scx.var(*var, n_vars) {
            free.insert(var.0);
        }
    }
}

/// Reports a load without default that certainly leaves its input, when everything is constant.
fn constant_bounds(scx: &mut ScalarCx, map: &MapOp, index: &Affine, dim: &Dim, axis: usize, input: usize) {
    let Some(len) = dim.as_const() else { return };
    let Some(offset) = index.offset.as_const() else { return };
    let (mut lo, mut hi) = (offset as i128, offset as i128);
    for (var, coef) in &index.terms {
        let (Some(c), Some(extent)) = (coef.as_const(), map.extents.get(var.0 as usize).and_then(Dim::as_const)) else {
            return;
        };
        let reach = c as i128 * (extent as i128 - 1).max(0);
        lo += reach.min(0);
        hi += reach.max(0);
    }
    if lo < 0 || hi >= len as i128 {
        scx.err(format!("axis {axis} of input {input} is read at {lo}..={hi}, outside 0..{len}, without a default"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::build::{Body, Builder, c};
    use crate::ir::{ArgOp, ScanOp};
    use crate::span::Span;

    fn errors(b: &Builder) -> Vec<String> {
        match verify(&b.g) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// `y = exp(x) + x`, `z = sum[k](x[i, k])` with `x: f32[B, 4]`.
    fn good() -> Builder {
        let mut b = Builder::new("m");
        let bd = b.sym("B");
        let x = b.input("x", DType::F32, &[bd.clone(), c(4)]);
        let e = b.unary(UnaryOp::Exp, x);
        let y = b.binary(BinaryOp::Add, e, x);
        let mut body = Body::default();
        let l = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[(1, 1)], 0)], None);
        let s = body.reduce(ReduceOp::Sum, &[1], l, DType::F32);
        let op = body.finish(vec![x], vec![bd.clone(), c(4)], s);
        let z = b.node(op, DType::F32, &[bd]);
        b.output("y", y);
        b.output("z", z);
        b
    }

    #[test]
    fn accepts_a_well_formed_graph() {
        assert_eq!(errors(&good()), Vec::<String>::new());
    }

    #[test]
    fn rejects_an_operand_after_its_user() {
        let mut b = Builder::new("m");
        b.node(Op::Unary(UnaryOp::Exp, NodeId::new(1)), DType::F32, &[c(2)]);
        b.input("x", DType::F32, &[c(2)]);
        assert_eq!(errors(&b), ["%0 (exp): operand %1 does not precede its user"]);
    }

    #[test]
    fn rejects_wrong_shapes_and_dtypes() {
        let mut b = Builder::new("m");
        let x = b.input("x", DType::F32, &[c(2), c(3)]);
        let y = b.input("y", DType::F32, &[c(3), c(2)]);
        let i = b.input("i", DType::I32, &[c(2), c(3)]);
        b.node(Op::Binary(BinaryOp::Add, x, y), DType::F32, &[c(2), c(3)]);
        b.node(Op::Binary(BinaryOp::Lt, x, x), DType::F32, &[c(2), c(3)]);
        b.node(Op::Unary(UnaryOp::Exp, i), DType::I32, &[c(2), c(3)]);
        b.node(Op::Unary(UnaryOp::Not, x), DType::F32, &[c(2), c(3)]);
        b.node(Op::MatMul(x, x), DType::F32, &[c(2), c(3)]);
        b.node(Op::Reduce { op: ReduceOp::Sum, input: x, axes: vec![1, 0] }, DType::F32, &[]);
        b.node(Op::Reduce { op: ReduceOp::Mean, input: i, axes: vec![1] }, DType::I32, &[c(2)]);
        b.node(Op::Permute(x, vec![0, 0]), DType::F32, &[c(2), c(2)]);
        b.node(Op::Reshape(x), DType::F32, &[c(5)]);
        b.node(Op::Broadcast(x), DType::F32, &[c(4), c(3)]);
        b.node(Op::Slice { input: x, axis: 1, start: c(1), step: 0 }, DType::F32, &[c(2), c(1)]);
        b.node(Op::Slice { input: x, axis: 1, start: c(1), step: 2 }, DType::F32, &[c(2), c(2)]);
        b.node(Op::Concat { inputs: vec![x, x], axis: 0 }, DType::F32, &[c(5), c(3)]);
        b.node(Op::Gather { table: x, indices: x, axis: 0 }, DType::F32, &[c(2), c(3), c(3)]);
        b.node(Op::Constant(Scalar::Float(1.5)), DType::I32, &[]);
        b.node(Op::ArgReduce { op: ArgOp::Max, input: x, axis: 1 }, DType::F32, &[c(2)]);
        b.node(Op::ArgReduce { op: ArgOp::Min, input: x, axis: 2 }, DType::I32, &[c(2)]);
        b.node(Op::Scan { op: ScanOp::Sum, input: x, axis: 0, reverse: false }, DType::F32, &[c(3), c(2)]);
        assert_eq!(
            errors(&b),
            [
                "%3 (add): the right operand has shape [3, 2], expected [2, 3]",
                "%4 (lt): the result has dtype f32, expected bool",
                "%5 (exp): `exp` is defined on floats only, got i32",
                "%6 (not): `not` needs bool, got f32",
                "%7 (matmul): inner dimensions differ: 3 and 2",
                "%8 (sum): axes [1, 0] are not sorted and unique",
                "%9 (mean): `mean` is defined on floats only, got i32",
                "%10 (permute): [0, 0] is not a permutation of the 2 axes",
                "%11 (reshape): element counts differ: f32[2, 3] has 6 elements, the result 5",
                "%12 (broadcast): operand dimension 0 is 2, which is neither 1 nor the result's 4",
                "%13 (slice): step is 0, must be at least 1",
                "%14 (slice): elements 1, 3, ... 3 are not all inside 0..3",
                "%15 (concat): the operands' dimensions 0 add up to 4, the result's is 5",
                "%16 (gather): indices must be i32 or u32, got f32",
                "%17 (constant): constant Float(1.5) cannot have dtype i32",
                "%18 (argmax): the result has dtype f32, expected i32",
                "%19 (argmin): axis 2 is out of range for rank 2",
                "%20 (cumsum): the result has shape [3, 2], expected [2, 3]",
            ]
        );
    }

    #[test]
    fn rejects_wrong_along_axis_ops() {
        let mut b = Builder::new("m");
        let x = b.input("x", DType::F32, &[c(2), c(3)]);
        let i = b.input("i", DType::I32, &[c(2), c(4)]);
        let u = b.input("u", DType::U32, &[c(2), c(4)]);
        let flag = b.input("flag", DType::Bool, &[c(2), c(3)]);
        b.node(Op::TakeAlongAxis { input: x, indices: i, axis: 0 }, DType::F32, &[c(2), c(4)]);
        b.node(Op::TakeAlongAxis { input: x, indices: u, axis: 1 }, DType::F32, &[c(2), c(4)]);
        b.node(Op::TakeAlongAxis { input: x, indices: i, axis: 1 }, DType::F32, &[c(2), c(3)]);
        b.node(Op::ScatterAdd { base: x, indices: i, src: x, axis: 1 }, DType::F32, &[c(2), c(3)]);
        b.node(Op::ScatterAdd { base: flag, indices: i, src: flag, axis: 2 }, DType::Bool, &[c(2), c(3)]);
        b.node(Op::Argsort { input: x, axis: 1, descending: false }, DType::F32, &[c(2), c(3)]);
        b.node(Op::Argsort { input: flag, axis: 2, descending: true }, DType::I32, &[c(2), c(3)]);
        assert_eq!(
            errors(&b),
            [
                "%4 (take_along_axis): the index tensor has shape [2, 4], expected [2, 3]",
                "%5 (take_along_axis): the index tensor has dtype u32, expected i32",
                "%6 (take_along_axis): the result has shape [2, 3], expected [2, 4]",
                "%7 (scatter_add): the source has shape [2, 3], expected [2, 4]",
                "%8 (scatter_add): scatter-add of bool",
                "%8 (scatter_add): axis 2 and the indices i32[2, 4] do not fit bool[2, 3]",
                "%9 (argsort): the result has dtype f32, expected i32",
                "%10 (argsort): argsort of bool",
                "%10 (argsort): axis 2 is out of range for bool[2, 3]",
            ]
        );
    }

    #[test]
    fn booleans_compare_only_for_equality() {
        let mut b = Builder::new("m");
        let x = b.input("x", DType::Bool, &[c(2)]);
        b.node(Op::Binary(BinaryOp::Eq, x, x), DType::Bool, &[c(2)]);
        b.node(Op::Binary(BinaryOp::Lt, x, x), DType::Bool, &[c(2)]);
        b.node(Op::Binary(BinaryOp::Add, x, x), DType::Bool, &[c(2)]);
        assert_eq!(
            errors(&b),
            ["%2 (lt): `lt` needs numeric operands, got bool", "%3 (add): `add` needs numeric operands, got bool"]
        );
    }

    #[test]
    fn symbolic_reshape_compares_products() {
        let mut b = Builder::new("m");
        let bd = b.sym("B");
        let x = b.input("x", DType::F32, &[bd.clone(), c(4)]);
        b.node(Op::Reshape(x), DType::F32, &[bd.scale(2).unwrap(), c(2)]);
        b.node(Op::Reshape(x), DType::F32, &[bd.clone(), c(3)]);
        assert_eq!(errors(&b), ["%2 (reshape): element counts differ: f32[B, 4] has 4*B elements, the result 3*B"]);
    }

    #[test]
    fn rejects_bad_signature_lists() {
        let mut b = Builder::new("m");
        let x = b.input("x", DType::F32, &[c(2)]);
        let p = b.param("p", DType::F32, &[c(2)]);
        b.node(Op::Input { name: "stray".into() }, DType::F32, &[c(2)]);
        b.g.inputs.push(p);
        b.g.params.push(p);
        b.g.outputs.push(crate::ir::Output { name: "o".into(), node: x });
        b.g.outputs.push(crate::ir::Output { name: "o".into(), node: NodeId::new(9) });
        assert_eq!(
            errors(&b),
            [
                "graph: inputs[1] is %1, a param node, not an input",
                "graph: %1 (param) is listed 2 times in `params`",
                "graph: %2 (input) is not listed in `inputs`",
                "graph: output `o` is %9, past the last node",
                "graph: outputs[0] and outputs[1] are both named `o`",
            ]
        );
    }

    #[test]
    fn rejects_malformed_map_bodies() {
        let mut b = Builder::new("m");
        let x = b.input("x", DType::F32, &[c(2), c(4)]);
        // Reads the reduction variable v1 outside its reduction, and a load with too few indices.
        let mut body = Body::default();
        let l = body.load(0, DType::F32, &[(&[(0, 1), (1, 1)], 0)], None);
        let op = body.finish(vec![x], vec![c(2), c(4)], l);
        b.node(op, DType::F32, &[c(2)]);
        // Reduces over an output variable, with a body of another dtype, and reads v5 (no extent).
        let mut body = Body::default();
        let l = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[(5, 1)], 0)], None);
        let s = body.reduce(ReduceOp::Sum, &[0], l, DType::F32);
        let op = body.finish(vec![x], vec![c(2)], s);
        b.node(op, DType::I32, &[c(2)]);
        // A scalar operand after its user, and a nested reduction over the same variable.
        let mut body = Body::default();
        body.exprs.append(
            crate::ir::ScalarNode { expr: ScalarExpr::Unary(UnaryOp::Neg, ScalarId::new(1)), dtype: DType::F32 },
            Span::default(),
        );
        let l = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[(1, 1)], 0)], None);
        let inner = body.reduce(ReduceOp::Sum, &[1], l, DType::F32);
        let outer = body.reduce(ReduceOp::Max, &[1], inner, DType::F32);
        let op = body.finish(vec![x], vec![c(2), c(4)], outer);
        b.node(op, DType::F32, &[c(2)]);
        // A constant out-of-range load without default.
        let mut body = Body::default();
        let l = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[(1, 1)], 1)], None);
        let op = body.finish(vec![x], vec![c(2), c(4)], l);
        b.node(op, DType::F32, &[c(2), c(4)]);
        assert_eq!(
            errors(&b),
            [
                "%1 (map): s0: 1 indices for input 0 of rank 2",
                "%1 (map): s0: axis 0 of input 0 is read at 0..=4, outside 0..2, without a default",
                "%1 (map): the body reads v1 outside of any reduction over it",
                "%2 (map): s0: v5 has no extent (1 index variables)",
                "%2 (map): s1: reduces over v0, an output index variable",
                "%2 (map): the body has dtype f32, the result i32",
                "%3 (map): s0: operand s1 does not precede its user",
                "%3 (map): s3: reduces over v1, which a reduction inside it also binds",
                "%4 (map): s0: axis 1 of input 0 is read at 1..=4, outside 0..4, without a default",
            ]
        );
    }
}
