//! The IR's text dump (`tdslc emit ir`, snapshot tests): one line per node, `%N = op operands attrs : type`,
//! with `Map` bodies as indented blocks of scalar nodes `sN = ...`. The format is stable and deterministic
//! (no hash-map order, floats in Rust's shortest round-trip form); it is for reading, not for parsing back.

use super::{Affine, Graph, MapOp, Op, Scalar, ScalarExpr};
use crate::dim::Dim;
use std::fmt::Write;

/// The whole graph: a `model` header with the signature, the nodes in order, and a `return` line.
pub fn print(graph: &Graph) -> String {
    let mut out = String::new();
    let inputs: Vec<String> = graph
        .inputs
        .iter()
        .map(|&id| match graph.nodes.get(id) {
            Some(node) => match &node.op {
                Op::Input { name } => format!("{name}: {}", graph.type_to_string(&node.ty)),
                _ => format!("%{}: {}", id.index(), graph.type_to_string(&node.ty)),
            },
            None => format!("%{}: ?", id.index()),
        })
        .collect();
    let outputs: Vec<String> = graph
        .outputs
        .iter()
        .map(|o| match graph.nodes.get(o.node) {
            Some(node) => format!("{}: {}", o.name, graph.type_to_string(&node.ty)),
            None => format!("{}: ?", o.name),
        })
        .collect();
    let _ = writeln!(out, "model {}({}) -> ({})", graph.name, inputs.join(", "), outputs.join(", "));
    for (id, node) in graph.nodes.iter() {
        let _ = write!(out, "  %{} = ", id.index());
        op_text(graph, &node.op, &mut out);
        let _ = write!(out, " : {}", graph.type_to_string(&node.ty));
        if let Some((_, init)) = graph.inits.iter().find(|(p, _)| *p == id) {
            let symbols: Vec<String> = graph.symbols.iter().map(|s| s.name.clone()).collect();
            let _ = write!(out, " = {}", init.describe(&symbols));
        }
        if let Op::Map(map) = &node.op {
            out.push_str(" {\n");
            map_body(graph, map, &mut out);
            out.push_str("  }");
        }
        out.push('\n');
    }
    let returns: Vec<String> = graph.outputs.iter().map(|o| format!("{} = %{}", o.name, o.node.index())).collect();
    let _ = writeln!(out, "  return {}", returns.join(", "));
    for update in &graph.updates {
        let name = graph.outputs.get(update.output).map_or("?", |o| o.name.as_str());
        let _ = writeln!(out, "  carry {name} -> %{}", update.param.index());
    }
    out
}

fn op_text(graph: &Graph, op: &Op, out: &mut String) {
    let refs = |ids: &[super::NodeId]| ids.iter().map(|id| format!("%{}", id.index())).collect::<Vec<_>>().join(", ");
    let dim = |d: &Dim| graph.dim_to_string(d);
    let text = match op {
        Op::Input { name } => format!("input {name}"),
        Op::Param { key } => format!("param {key:?}"),
        Op::Constant(s) => format!("constant {}", scalar_text(s)),
        Op::DimValue(d) => format!("dim {}", dim(d)),
        Op::Unary(u, a) => format!("{} %{}", u.name(), a.index()),
        Op::Binary(b, x, y) => format!("{} %{}, %{}", b.name(), x.index(), y.index()),
        Op::Select { cond, on_true, on_false } => format!("select {}", refs(&[*cond, *on_true, *on_false])),
        Op::Cast(a) => format!("cast %{}", a.index()),
        Op::Broadcast(a) => format!("broadcast %{}", a.index()),
        Op::Reduce { op, input, axes } => format!("{} %{} axes {axes:?}", op.name(), input.index()),
        Op::ArgReduce { op, input, axis } => format!("{} %{} axis {axis}", op.name(), input.index()),
        Op::Scan { op, input, axis, reverse } => {
            let reverse = if *reverse { " reverse" } else { "" };
            format!("{} %{} axis {axis}{reverse}", op.name(), input.index())
        }
        Op::MatMul(a, b) => format!("matmul %{}, %{}", a.index(), b.index()),
        Op::Permute(a, perm) => format!("permute %{} {perm:?}", a.index()),
        Op::Reshape(a) => format!("reshape %{}", a.index()),
        Op::Slice { input, axis, start, step } => {
            format!("slice %{} axis {axis} start {} step {step}", input.index(), dim(start))
        }
        Op::Concat { inputs, axis } => format!("concat {} axis {axis}", refs(inputs)),
        Op::Gather { table, indices, axis } => format!("gather %{}, %{} axis {axis}", table.index(), indices.index()),
        Op::TakeAlongAxis { input, indices, axis } => {
            format!("take_along_axis %{}, %{} axis {axis}", input.index(), indices.index())
        }
        Op::ScatterAdd { base, indices, src, axis } => {
            format!("scatter_add {} axis {axis}", refs(&[*base, *indices, *src]))
        }
        Op::Argsort { input, axis, descending } => {
            format!("argsort %{} axis {axis}{}", input.index(), if *descending { " descending" } else { "" })
        }
        Op::Map(map) => {
            let extents: Vec<String> =
                map.extents.iter().enumerate().map(|(i, e)| format!("v{i} < {}", dim(e))).collect();
            format!("map({}) [{}]", refs(&map.inputs), extents.join(", "))
        }
    };
    out.push_str(&text);
}

fn map_body(graph: &Graph, map: &MapOp, out: &mut String) {
    for (sid, snode) in map.exprs.iter() {
        let text = match &snode.expr {
            ScalarExpr::Load { input, indices, default } => {
                let idx: Vec<String> = indices.iter().map(|a| affine_text(graph, a)).collect();
                let default = default.map(|d| format!(" else {}", scalar_text(&d))).unwrap_or_default();
                format!("load in{input}[{}]{default}", idx.join(", "))
            }
            ScalarExpr::Var(v) => format!("var v{}", v.0),
            ScalarExpr::Dim(d) => format!("dim {}", graph.dim_to_string(d)),
            ScalarExpr::Const(s) => format!("const {}", scalar_text(s)),
            ScalarExpr::Unary(op, a) => format!("{} s{}", op.name(), a.index()),
            ScalarExpr::Binary(op, a, b) => format!("{} s{}, s{}", op.name(), a.index(), b.index()),
            ScalarExpr::Select { cond, on_true, on_false } => {
                format!("select s{}, s{}, s{}", cond.index(), on_true.index(), on_false.index())
            }
            ScalarExpr::Cast(a) => format!("cast s{}", a.index()),
            ScalarExpr::Reduce { op, vars, body } => {
                let vars: Vec<String> = vars.iter().map(|v| format!("v{}", v.0)).collect();
                format!("{}[{}] s{}", op.name(), vars.join(", "), body.index())
            }
        };
        let _ = writeln!(out, "      s{} = {text} : {}", sid.index(), snode.dtype.name());
    }
    let _ = writeln!(out, "      yield s{}", map.body.index());
}

fn scalar_text(s: &Scalar) -> String {
    match s {
        Scalar::Float(f) => format!("{f:?}"),
        Scalar::Int(i) => i.to_string(),
        Scalar::Bool(b) => b.to_string(),
    }
}

/// `2*v0 + v1 - 1`, `(H - 1)*v2 + B`: constant coefficients and offsets fold their sign into the joiner,
/// symbolic ones are parenthesised when they have several terms.
fn affine_text(graph: &Graph, affine: &Affine) -> String {
    let mut parts: Vec<(bool, String)> = Vec::new(); // (negative, magnitude text)
    for (var, coef) in &affine.terms {
        let v = format!("v{}", var.0);
        let part = match coef.as_const() {
            Some(1) => (false, v),
            Some(-1) => (true, v),
            Some(c) => (c < 0, format!("{}*{v}", c.unsigned_abs())),
            None => (false, format!("{}*{v}", grouped(graph, coef))),
        };
        parts.push(part);
    }
    match affine.offset.as_const() {
        Some(0) if !parts.is_empty() => {}
        Some(c) => parts.push((c < 0, c.unsigned_abs().to_string())),
        None => parts.push((false, grouped(graph, &affine.offset))),
    }
    let mut text = String::new();
    for (i, (negative, part)) in parts.iter().enumerate() {
        match (i, negative) {
            (0, true) => text.push('-'),
            (0, false) => {}
            (_, true) => text.push_str(" - "),
            (_, false) => text.push_str(" + "),
        }
        text.push_str(part);
    }
    if affine.div != 1 {
        text = format!("({text})/{}", affine.div);
    }
    text
}

fn grouped(graph: &Graph, dim: &Dim) -> String {
    let text = graph.dim_to_string(dim);
    if text.contains(' ') { format!("({text})") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::build::{Body, Builder, c};
    use crate::ir::{BinaryOp, DType, ReduceOp, UnaryOp};

    #[test]
    fn prints_every_kind_of_line() {
        let mut b = Builder::new("mlp");
        let bd = b.sym("B");
        let x = b.input("x", DType::F32, &[bd.clone(), c(4)]);
        let w = b.param("fc1.weight", DType::F32, &[c(3), c(4)]);
        let wt = b.node(Op::Permute(w, vec![1, 0]), DType::F32, &[c(4), c(3)]);
        let h = b.node(Op::MatMul(x, wt), DType::F32, &[bd.clone(), c(3)]);
        let k = b.node(Op::Constant(Scalar::Float(1e-5)), DType::F32, &[]);
        let kb = b.node(Op::Broadcast(k), DType::F32, &[bd.clone(), c(3)]);
        let r = b.binary(BinaryOp::Add, h, kb);
        let e = b.unary(UnaryOp::Tanh, r);
        let s = b.node(Op::Slice { input: e, axis: 1, start: c(0), step: 2 }, DType::F32, &[bd.clone(), c(2)]);
        let d = b.node(Op::DimValue(bd.sub(&c(1)).unwrap()), DType::I32, &[]);
        let mut body = Body::default();
        let l = body.load(0, DType::F32, &[(&[(0, 1)], 0), (&[(1, 2), (2, -1)], 1)], Some(Scalar::Float(0.0)));
        let sum = body.reduce(ReduceOp::Sum, &[2], l, DType::F32);
        let v = body.add(ScalarExpr::Var(crate::ir::VarId(1)), DType::F32);
        let out = body.bin(BinaryOp::Mul, sum, v, DType::F32);
        let op = body.finish(vec![s], vec![bd.clone(), c(2), c(2)], out);
        let m = b.node(op, DType::F32, &[bd.clone(), c(2)]);
        let red = b.node(Op::Reduce { op: ReduceOp::Max, input: m, axes: vec![1] }, DType::F32, &[bd]);
        b.output("y", red);
        b.output("d", d);
        let expected = "\
model mlp(x: f32[B, 4]) -> (y: f32[B], d: i32[])
  %0 = input x : f32[B, 4]
  %1 = param \"fc1.weight\" : f32[3, 4]
  %2 = permute %1 [1, 0] : f32[4, 3]
  %3 = matmul %0, %2 : f32[B, 3]
  %4 = constant 1e-5 : f32[]
  %5 = broadcast %4 : f32[B, 3]
  %6 = add %3, %5 : f32[B, 3]
  %7 = tanh %6 : f32[B, 3]
  %8 = slice %7 axis 1 start 0 step 2 : f32[B, 2]
  %9 = dim B - 1 : i32[]
  %10 = map(%8) [v0 < B, v1 < 2, v2 < 2] : f32[B, 2] {
      s0 = load in0[v0, 2*v1 - v2 + 1] else 0.0 : f32
      s1 = sum[v2] s0 : f32
      s2 = var v1 : f32
      s3 = mul s1, s2 : f32
      yield s3
  }
  %11 = max %10 axes [1] : f32[B]
  return y = %11, d = %9
";
        assert_eq!(print(&b.g), expected);
    }
}
