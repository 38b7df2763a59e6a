//! One kernel for one elementwise IR node: `Unary`, `Binary`, `Select`, `Cast` and `Broadcast` over f32,
//! i32, u32 and bool (stored as `u32` 0/1). Each invocation computes one output element.
//!
//! Covered: every `UnaryOp` on f32 (erf by Abramowitz-Stegun 7.1.26, absolute error at most 1.5e-7 plus f32
//! rounding; sigmoid as `1 / (1 + exp(-x))`; rsqrt as `inverseSqrt`; relu as `max(x, 0)`), neg/abs/relu on
//! i32 and u32, not on bool; add/sub/mul/div/rem/pow/min/max and comparisons on f32; add/sub/mul/min/max and
//! comparisons on i32 and u32; and/or/eq/ne on bool; select; casts among f32/i32/u32/bool with the IR's
//! semantics (float to int truncates and saturates, NaN gives 0); broadcast by index arithmetic.
//! Not yet: integer div/rem (the IR's divide-by-zero rules need checking against naga's polyfills), f16.

use std::collections::BTreeMap;

use naga::{
    AddressSpace, ArraySize, BinaryOperator, Binding, BuiltIn, EntryPoint, Expression, FunctionArgument,
    GlobalVariable, Handle, MathFunction, MemoryDecorations, ResourceBinding, Scalar, ScalarKind, ShaderStage,
    Statement, StorageAccess, StructMember, TypeInner, UnaryOperator, VectorSize,
};

use super::builder::{FnBuilder, dim_to_expr};
use super::{BIND_GROUP, BindingRole, CodegenError, Kernel, KernelBinding, WORKGROUP_SIZE};
use crate::dim::{Dim, SymId};
use crate::ir::{BinaryOp, DType, Graph, NodeId, Op, UnaryOp};

type Expr = Handle<Expression>;

/// The kernel computing `node` of `graph`, which must be an elementwise op (see the module comment).
pub fn elementwise_kernel(graph: &Graph, node: NodeId) -> Result<Kernel, CodegenError> {
    let out = graph.node(node);
    let op = &out.op;
    if !matches!(op, Op::Unary(..) | Op::Binary(..) | Op::Select { .. } | Op::Cast(_) | Op::Broadcast(_)) {
        return Err(unsupported(graph, node));
    }
    let operands = op.operands();
    let shapes: Vec<&[Dim]> = operands
        .iter()
        .map(|&id| graph.node(id).ty.shape.as_slice())
        .chain(std::iter::once(out.ty.shape.as_slice()))
        .collect();
    let mut symbols: Vec<SymId> = shapes.iter().flat_map(|shape| shape.iter().flat_map(Dim::symbols)).collect();
    symbols.sort();
    symbols.dedup();
    let name = kernel_name(graph, node);
    let internal = |message: &str| CodegenError::Internal { kernel: name.clone(), message: message.to_string() };

    let mut b = FnBuilder::new();
    let mut bindings = Vec::new();
    let mut inputs = Vec::new();
    for (i, &id) in operands.iter().enumerate() {
        let dtype = graph.node(id).ty.dtype;
        let access = StorageAccess::LOAD;
        inputs.push(
            storage_buffer(&mut b, &format!("in{i}"), i as u32, dtype, access)
                .ok_or_else(|| unsupported(graph, node))?,
        );
        bindings.push(KernelBinding { binding: i as u32, role: BindingRole::Input { node: id, dtype } });
    }
    let out_binding = operands.len() as u32;
    let output = storage_buffer(&mut b, "out", out_binding, out.ty.dtype, StorageAccess::LOAD | StorageAccess::STORE)
        .ok_or_else(|| unsupported(graph, node))?;
    bindings.push(KernelBinding { binding: out_binding, role: BindingRole::Output { node, dtype: out.ty.dtype } });
    let (dims, dims_size) = dims_block(&mut b, graph, &symbols, out_binding + 1);
    bindings.push(KernelBinding {
        binding: out_binding + 1,
        role: BindingRole::Dims { symbols: symbols.clone(), size: dims_size },
    });

    // index = gid.x + gid.y * (num_workgroups.x * 256); return when index >= count.
    let vec3u = b.ty(TypeInner::Vector { size: VectorSize::Tri, scalar: Scalar::U32 });
    let gid = b.expr(Expression::FunctionArgument(0));
    let num_workgroups = b.expr(Expression::FunctionArgument(1));
    let dims_ptr = b.expr(Expression::GlobalVariable(dims));
    let count_ptr = b.expr(Expression::AccessIndex { base: dims_ptr, index: 0 });
    let count = b.load(count_ptr);
    b.name(count, "count");
    let gid_x = b.expr(Expression::AccessIndex { base: gid, index: 0 });
    let gid_y = b.expr(Expression::AccessIndex { base: gid, index: 1 });
    let groups_x = b.expr(Expression::AccessIndex { base: num_workgroups, index: 0 });
    let size = b.u32(WORKGROUP_SIZE);
    let row = b.binary(BinaryOperator::Multiply, groups_x, size);
    let offset = b.binary(BinaryOperator::Multiply, gid_y, row);
    let index = b.binary(BinaryOperator::Add, gid_x, offset);
    b.name(index, "index");
    let past_end = b.binary(BinaryOperator::GreaterEqual, index, count);
    let mut early = naga::Block::new();
    early.push(Statement::Return { value: None }, naga::Span::UNDEFINED);
    b.statement(Statement::If { condition: past_end, accept: early, reject: naga::Block::new() });

    let mut symbol_values = BTreeMap::new();
    for (i, &sym) in symbols.iter().enumerate() {
        let ptr = b.expr(Expression::AccessIndex { base: dims_ptr, index: i as u32 + 1 });
        let value = b.load(ptr);
        symbol_values.insert(sym, value);
    }

    let value = match op {
        Op::Broadcast(input) => {
            let input_ty = &graph.node(*input).ty;
            let source =
                broadcast_index(&mut b, index, &out.ty.shape, &input_ty.shape, &symbol_values).ok_or_else(|| {
                    internal("a broadcast dimension is not expressible as u32 arithmetic on the uniform block")
                })?;
            load_element(&mut b, inputs[0], source, input_ty.dtype)
        }
        _ => {
            let args: Vec<Expr> = operands
                .iter()
                .zip(&inputs)
                .map(|(&id, &buffer)| load_element(&mut b, buffer, index, graph.node(id).ty.dtype))
                .collect();
            let dtypes: Vec<DType> = operands.iter().map(|&id| graph.node(id).ty.dtype).collect();
            compute(&mut b, op, &args, &dtypes, out.ty.dtype).ok_or_else(|| unsupported(graph, node))?
        }
    };
    b.name(value, "value");
    let stored = to_storage(&mut b, value, out.ty.dtype);
    let out_ptr = b.expr(Expression::GlobalVariable(output));
    let element = b.expr(Expression::Access { base: out_ptr, index });
    b.statement(Statement::Store { pointer: element, value: stored });

    let (mut module, mut function) = b.finish();
    function.name = Some("main".to_string());
    function.arguments = vec![
        FunctionArgument {
            name: Some("gid".to_string()),
            ty: vec3u,
            binding: Some(Binding::BuiltIn(BuiltIn::GlobalInvocationId)),
        },
        FunctionArgument {
            name: Some("num_workgroups".to_string()),
            ty: vec3u,
            binding: Some(Binding::BuiltIn(BuiltIn::NumWorkGroups)),
        },
    ];
    module.entry_points.push(EntryPoint {
        name: "main".to_string(),
        stage: ShaderStage::Compute,
        early_depth_test: None,
        workgroup_size: [WORKGROUP_SIZE, 1, 1],
        workgroup_size_overrides: None,
        function,
        mesh_info: None,
        task_payload: None,
        incoming_ray_payload: None,
    });
    Kernel::finish(name, module, bindings)
}

fn unsupported(graph: &Graph, node: NodeId) -> CodegenError {
    let n = graph.node(node);
    let operands: Vec<String> = n.op.operands().iter().map(|&id| graph.type_to_string(&graph.node(id).ty)).collect();
    CodegenError::Unsupported {
        op: format!("{}({}) -> {}", n.op.name(), operands.join(", "), graph.type_to_string(&n.ty)),
    }
}

/// `<op>_<dtype>_n<node>`: readable in logs, unique within a graph.
fn kernel_name(graph: &Graph, node: NodeId) -> String {
    let n = graph.node(node);
    format!("{}_{}_n{}", n.op.name(), n.ty.dtype.name(), node.index())
}

/// The scalar a buffer of `dtype` holds; `None` for f16.
fn storage_scalar(dtype: DType) -> Option<Scalar> {
    match dtype {
        DType::F32 => Some(Scalar::F32),
        DType::I32 => Some(Scalar::I32),
        DType::U32 | DType::Bool => Some(Scalar::U32),
        DType::F16 => None,
    }
}

fn storage_buffer(
    b: &mut FnBuilder,
    name: &str,
    binding: u32,
    dtype: DType,
    access: StorageAccess,
) -> Option<Handle<GlobalVariable>> {
    let scalar = storage_scalar(dtype)?;
    let element = b.ty(TypeInner::Scalar(scalar));
    let array = b.ty(TypeInner::Array { base: element, size: ArraySize::Dynamic, stride: 4 });
    let global = GlobalVariable {
        name: Some(name.to_string()),
        space: AddressSpace::Storage { access },
        binding: Some(ResourceBinding { group: BIND_GROUP, binding }),
        ty: array,
        init: None,
        memory_decorations: MemoryDecorations::empty(),
    };
    Some(b.module.global_variables.append(global, naga::Span::UNDEFINED))
}

/// The uniform block `{ count, <one u32 per symbol> }` and its size in bytes.
fn dims_block(b: &mut FnBuilder, graph: &Graph, symbols: &[SymId], binding: u32) -> (Handle<GlobalVariable>, u32) {
    let u32_ty = b.ty(TypeInner::Scalar(Scalar::U32));
    let names = std::iter::once("count".to_string()).chain(symbols.iter().map(|&s| graph.symbol_name(s)));
    let members: Vec<StructMember> = names
        .enumerate()
        .map(|(i, name)| StructMember { name: Some(name), ty: u32_ty, binding: None, offset: 4 * i as u32 })
        .collect();
    // Uniform blocks are sized in multiples of 16 bytes.
    let size = (4 * members.len() as u32).next_multiple_of(16);
    let block = b.module.types.insert(
        naga::Type { name: Some("Dims".to_string()), inner: TypeInner::Struct { members, span: size } },
        naga::Span::UNDEFINED,
    );
    let global = GlobalVariable {
        name: Some("dims".to_string()),
        space: AddressSpace::Uniform,
        binding: Some(ResourceBinding { group: BIND_GROUP, binding }),
        ty: block,
        init: None,
        memory_decorations: MemoryDecorations::empty(),
    };
    (b.module.global_variables.append(global, naga::Span::UNDEFINED), size)
}

/// Element `index` of `buffer` as a value of `dtype` (bool read as `!= 0`).
fn load_element(b: &mut FnBuilder, buffer: Handle<GlobalVariable>, index: Expr, dtype: DType) -> Expr {
    let base = b.expr(Expression::GlobalVariable(buffer));
    let pointer = b.expr(Expression::Access { base, index });
    let raw = b.load(pointer);
    if dtype == DType::Bool {
        let zero = b.u32(0);
        b.binary(BinaryOperator::NotEqual, raw, zero)
    } else {
        raw
    }
}

/// A value of `dtype` in its storage form (bool as 0/1).
fn to_storage(b: &mut FnBuilder, value: Expr, dtype: DType) -> Expr {
    if dtype == DType::Bool {
        let zero = b.u32(0);
        let one = b.u32(1);
        b.select(value, one, zero)
    } else {
        value
    }
}

/// The input element a broadcast output element reads: decompose `index` over the output shape (row-major)
/// and recombine the coordinates of the axes the input keeps with the input's strides. Input axes of
/// constant size 1 contribute nothing; the input is right-aligned with the output.
fn broadcast_index(
    b: &mut FnBuilder,
    index: Expr,
    out_shape: &[Dim],
    in_shape: &[Dim],
    symbols: &BTreeMap<SymId, Expr>,
) -> Option<Expr> {
    let lead = out_shape.len().checked_sub(in_shape.len())?;
    let mut source: Option<Expr> = None;
    // Walk axes last to first, carrying the output stride (`rest` = index / out_stride) and input stride.
    let mut rest = index;
    let mut in_stride: Option<Expr> = None; // None = 1
    for axis in (0..out_shape.len()).rev() {
        let keeps = axis >= lead && in_shape[axis - lead].as_const() != Some(1);
        let out_dim = if axis == 0 { None } else { Some(dim_to_expr(b, &out_shape[axis], symbols)?) };
        if keeps {
            let coord = match out_dim {
                None => rest,
                Some(dim) => b.binary(BinaryOperator::Modulo, rest, dim),
            };
            let term = match in_stride {
                None => coord,
                Some(stride) => b.binary(BinaryOperator::Multiply, coord, stride),
            };
            source = Some(match source {
                None => term,
                Some(s) => b.binary(BinaryOperator::Add, s, term),
            });
        }
        let Some(out_dim) = out_dim else { break };
        rest = b.binary(BinaryOperator::Divide, rest, out_dim);
        // A kept input axis has the output's extent (the IR's broadcast rule), so its value is reused.
        if keeps {
            in_stride = Some(match in_stride {
                None => out_dim,
                Some(stride) => b.binary(BinaryOperator::Multiply, stride, out_dim),
            });
        }
    }
    Some(source.unwrap_or_else(|| b.u32(0)))
}

/// The value of a non-broadcast elementwise `op` on loaded `args` of `dtypes`; `None` when unsupported.
fn compute(b: &mut FnBuilder, op: &Op, args: &[Expr], dtypes: &[DType], out: DType) -> Option<Expr> {
    match *op {
        Op::Unary(u, _) => unary(b, u, args[0], dtypes[0]),
        Op::Binary(bin, _, _) => binary(b, bin, args[0], args[1], dtypes[0]),
        Op::Select { .. } => storage_scalar(dtypes[1]).map(|_| b.select(args[0], args[1], args[2])),
        Op::Cast(_) => cast(b, args[0], dtypes[0], out),
        _ => None,
    }
}

fn unary(b: &mut FnBuilder, op: UnaryOp, x: Expr, dtype: DType) -> Option<Expr> {
    use MathFunction as M;
    let value = match (dtype, op) {
        (DType::F32, UnaryOp::Neg) | (DType::I32, UnaryOp::Neg) => {
            b.expr(Expression::Unary { op: UnaryOperator::Negate, expr: x })
        }
        (DType::U32, UnaryOp::Neg) => {
            let zero = b.u32(0);
            b.binary(BinaryOperator::Subtract, zero, x)
        }
        (DType::Bool, UnaryOp::Not) => b.expr(Expression::Unary { op: UnaryOperator::LogicalNot, expr: x }),
        (DType::F32 | DType::I32, UnaryOp::Abs) => b.math(M::Abs, &[x]),
        (DType::U32, UnaryOp::Abs | UnaryOp::Relu) => x,
        (DType::F32, UnaryOp::Relu) => {
            let zero = b.f32(0.0);
            float_min_max(b, x, zero, false)
        }
        (DType::I32, UnaryOp::Relu) => {
            let zero = b.i32(0);
            b.math(M::Max, &[x, zero])
        }
        (DType::F32, UnaryOp::Exp) => b.math(M::Exp, &[x]),
        (DType::F32, UnaryOp::Log) => b.math(M::Log, &[x]),
        (DType::F32, UnaryOp::Sqrt) => b.math(M::Sqrt, &[x]),
        (DType::F32, UnaryOp::Rsqrt) => b.math(M::InverseSqrt, &[x]),
        (DType::F32, UnaryOp::Tanh) => b.math(M::Tanh, &[x]),
        (DType::F32, UnaryOp::Sin) => b.math(M::Sin, &[x]),
        (DType::F32, UnaryOp::Cos) => b.math(M::Cos, &[x]),
        (DType::F32, UnaryOp::Floor) => b.math(M::Floor, &[x]),
        (DType::F32, UnaryOp::Ceil) => b.math(M::Ceil, &[x]),
        (DType::F32, UnaryOp::Sigmoid) => {
            let negated = b.expr(Expression::Unary { op: UnaryOperator::Negate, expr: x });
            let exp = b.math(M::Exp, &[negated]);
            let one = b.f32(1.0);
            let denominator = b.binary(BinaryOperator::Add, one, exp);
            b.binary(BinaryOperator::Divide, one, denominator)
        }
        (DType::F32, UnaryOp::Erf) => erf(b, x),
        _ => return None,
    };
    Some(value)
}

/// Abramowitz-Stegun 7.1.26: for `a = |x|`, `t = 1 / (1 + p a)`,
/// `erf(a) = 1 - (a1 t + a2 t^2 + a3 t^3 + a4 t^4 + a5 t^5) exp(-a^2)` with absolute error at most 1.5e-7
/// (plus f32 rounding); odd symmetry gives negative `x`. WGSL has no `erf` builtin.
fn erf(b: &mut FnBuilder, x: Expr) -> Expr {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let a = b.math(MathFunction::Abs, &[x]);
    let p = b.f32(P);
    let one = b.f32(1.0);
    let pa = b.binary(BinaryOperator::Multiply, p, a);
    let denominator = b.binary(BinaryOperator::Add, one, pa);
    let t = b.binary(BinaryOperator::Divide, one, denominator);
    // Horner: t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5)))).
    let mut poly = b.f32(A[4]);
    for &coefficient in A[..4].iter().rev() {
        let scaled = b.binary(BinaryOperator::Multiply, t, poly);
        let c = b.f32(coefficient);
        poly = b.binary(BinaryOperator::Add, c, scaled);
    }
    let poly = b.binary(BinaryOperator::Multiply, t, poly);
    let square = b.binary(BinaryOperator::Multiply, a, a);
    let negated = b.expr(Expression::Unary { op: UnaryOperator::Negate, expr: square });
    let gauss = b.math(MathFunction::Exp, &[negated]);
    let tail = b.binary(BinaryOperator::Multiply, poly, gauss);
    let magnitude = b.binary(BinaryOperator::Subtract, one, tail);
    let sign = b.math(MathFunction::Sign, &[x]);
    b.binary(BinaryOperator::Multiply, sign, magnitude)
}

fn binary(b: &mut FnBuilder, op: BinaryOp, x: Expr, y: Expr, dtype: DType) -> Option<Expr> {
    use BinaryOperator as B;
    let numeric = matches!(dtype, DType::F32 | DType::I32 | DType::U32);
    let operator = match op {
        BinaryOp::Add if numeric => B::Add,
        BinaryOp::Sub if numeric => B::Subtract,
        BinaryOp::Mul if numeric => B::Multiply,
        BinaryOp::Div if dtype == DType::F32 => B::Divide,
        // WGSL's float `%` is `x - y * trunc(x / y)`, the IR's definition.
        BinaryOp::Rem if dtype == DType::F32 => B::Modulo,
        BinaryOp::Lt if numeric => B::Less,
        BinaryOp::Le if numeric => B::LessEqual,
        BinaryOp::Gt if numeric => B::Greater,
        BinaryOp::Ge if numeric => B::GreaterEqual,
        BinaryOp::Eq if dtype != DType::F16 => B::Equal,
        // naga writes float `!=` as an ordered comparison (false for NaN); the IR's `ne` is `!(x == y)`.
        BinaryOp::Ne if dtype == DType::F32 => {
            let equal = b.binary(B::Equal, x, y);
            return Some(b.expr(Expression::Unary { op: UnaryOperator::LogicalNot, expr: equal }));
        }
        BinaryOp::Ne if dtype != DType::F16 => B::NotEqual,
        BinaryOp::And if dtype == DType::Bool => B::LogicalAnd,
        BinaryOp::Or if dtype == DType::Bool => B::LogicalOr,
        BinaryOp::Pow if dtype == DType::F32 => return Some(b.math(MathFunction::Pow, &[x, y])),
        BinaryOp::Min if dtype == DType::F32 => return Some(float_min_max(b, x, y, true)),
        BinaryOp::Max if dtype == DType::F32 => return Some(float_min_max(b, x, y, false)),
        BinaryOp::Min if numeric => return Some(b.math(MathFunction::Min, &[x, y])),
        BinaryOp::Max if numeric => return Some(b.math(MathFunction::Max, &[x, y])),
        _ => return None,
    };
    Some(b.binary(operator, x, y))
}

/// Conversions with the IR's semantics: float to int truncates toward zero and saturates, NaN gives 0; int to
/// int wraps (a bit reinterpretation between i32 and u32); to bool is `x != 0`; from bool is 0 or 1.
fn cast(b: &mut FnBuilder, x: Expr, from: DType, to: DType) -> Option<Expr> {
    let value = match (from, to) {
        _ if from == to => x,
        (DType::F32, DType::I32) => saturate_to_int(b, x, -2_147_483_648.0, 2_147_483_648.0, ScalarKind::Sint),
        (DType::F32, DType::U32) => saturate_to_int(b, x, 0.0, 4_294_967_296.0, ScalarKind::Uint),
        (DType::I32 | DType::U32, DType::F32) => b.convert(x, ScalarKind::Float),
        (DType::I32, DType::U32) => b.bitcast(x, ScalarKind::Uint),
        (DType::U32, DType::I32) => b.bitcast(x, ScalarKind::Sint),
        (DType::F32, DType::Bool) => {
            // `!(x == 0)`, so NaN gives true (naga's float `!=` is ordered).
            let zero = b.f32(0.0);
            let is_zero = b.binary(BinaryOperator::Equal, x, zero);
            b.expr(Expression::Unary { op: UnaryOperator::LogicalNot, expr: is_zero })
        }
        (DType::I32 | DType::U32, DType::Bool) => {
            let zero = zero_of(b, from)?;
            b.binary(BinaryOperator::NotEqual, x, zero)
        }
        (DType::Bool, DType::F32 | DType::I32 | DType::U32) => {
            let zero = zero_of(b, to)?;
            let one = one_of(b, to)?;
            b.select(x, one, zero)
        }
        _ => return None,
    };
    Some(value)
}

/// `x` converted to an integer kind whose range is `[low, high)` as floats: values at or above `high` give
/// the maximum, values below `low` the minimum, NaN gives 0. (Out-of-range conversions are undefined in
/// SPIR-V, so the conversion only ever sees clamped inputs that the selects keep.)
fn saturate_to_int(b: &mut FnBuilder, x: Expr, low: f32, high: f32, kind: ScalarKind) -> Expr {
    let low_literal = b.f32(low);
    let clamped = b.math(MathFunction::Max, &[x, low_literal]);
    let converted = b.convert(clamped, kind);
    let high_literal = b.f32(high);
    let too_big = b.binary(BinaryOperator::GreaterEqual, x, high_literal);
    let (max, zero) = match kind {
        ScalarKind::Sint => (b.i32(i32::MAX), b.i32(0)),
        _ => (b.u32(u32::MAX), b.u32(0)),
    };
    let saturated = b.select(too_big, max, converted);
    let nan = is_nan(b, x);
    b.select(nan, zero, saturated)
}

/// `x` is NaN, tested on its bits: float comparisons may be ordered (naga) or folded away by drivers.
fn is_nan(b: &mut FnBuilder, x: Expr) -> Expr {
    let bits = b.bitcast(x, ScalarKind::Uint);
    let magnitude_mask = b.u32(0x7fff_ffff);
    let magnitude = b.binary(BinaryOperator::And, bits, magnitude_mask);
    let infinity = b.u32(0x7f80_0000);
    b.binary(BinaryOperator::Greater, magnitude, infinity)
}

/// IEEE 754-2019 `minimum` (`is_min`) or `maximum`: NaN if either operand is NaN, and `-0 < +0`. WGSL's
/// `min`/`max` (SPIR-V FMin/FMax) guarantee neither.
fn float_min_max(b: &mut FnBuilder, x: Expr, y: Expr, is_min: bool) -> Expr {
    let plain = b.math(if is_min { MathFunction::Min } else { MathFunction::Max }, &[x, y]);
    // Equal operands differ at most in the sign of zero: the minimum is the negative one.
    let x_bits = b.bitcast(x, ScalarKind::Uint);
    let sign_mask = b.u32(0x8000_0000);
    let x_sign = b.binary(BinaryOperator::And, x_bits, sign_mask);
    let zero_bits = b.u32(0);
    let x_negative = b.binary(BinaryOperator::NotEqual, x_sign, zero_bits);
    let (if_x_negative, otherwise) = if is_min { (x, y) } else { (y, x) };
    let signed = b.select(x_negative, if_x_negative, otherwise);
    let equal = b.binary(BinaryOperator::Equal, x, y);
    let ordered = b.select(equal, signed, plain);
    // Either operand NaN: `x + y` is NaN.
    let x_nan = is_nan(b, x);
    let y_nan = is_nan(b, y);
    let any_nan = b.binary(BinaryOperator::LogicalOr, x_nan, y_nan);
    let nan = b.binary(BinaryOperator::Add, x, y);
    b.select(any_nan, nan, ordered)
}

fn zero_of(b: &mut FnBuilder, dtype: DType) -> Option<Expr> {
    match dtype {
        DType::F32 => Some(b.f32(0.0)),
        DType::I32 => Some(b.i32(0)),
        DType::U32 => Some(b.u32(0)),
        _ => None,
    }
}

fn one_of(b: &mut FnBuilder, dtype: DType) -> Option<Expr> {
    match dtype {
        DType::F32 => Some(b.f32(1.0)),
        DType::I32 => Some(b.i32(1)),
        DType::U32 => Some(b.u32(1)),
        _ => None,
    }
}
