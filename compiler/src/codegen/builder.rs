//! `FnBuilder`: appends expressions and statements to one naga entry-point function under the
//! `Emitter`/`Statement::Emit` discipline (every computed expression is covered by exactly one `Emit`; the
//! "pre-emitted" kinds — literals, globals, arguments, locals — never are), with a stack of open blocks for
//! `if` bodies and loops, plus small typed helpers.
//!
//! Statements go into the innermost open block in order. An expression emitted inside a block is only used
//! inside it (callers keep per-block caches, see `kernel.rs`), so every use is dominated by its definition.

use naga::{
    BinaryOperator, Block, Expression, Function, Handle, Literal, LocalVariable, MathFunction, Module, ScalarKind,
    Span, Statement, Type, TypeInner,
};

pub(super) struct FnBuilder {
    pub module: Module,
    pub fun: Function,
    /// Open blocks, outermost first; never empty.
    blocks: Vec<Block>,
    emitter: naga::proc::Emitter,
}

impl FnBuilder {
    pub fn new() -> FnBuilder {
        let fun = Function::default();
        let mut emitter = naga::proc::Emitter::default();
        emitter.start(&fun.expressions);
        FnBuilder { module: Module::default(), fun, blocks: vec![Block::new()], emitter }
    }

    pub fn ty(&mut self, inner: TypeInner) -> Handle<Type> {
        self.module.types.insert(Type { name: None, inner }, Span::UNDEFINED)
    }

    /// Appends `expr`, keeping pre-emitted kinds out of `Emit` ranges.
    pub fn expr(&mut self, expr: Expression) -> Handle<Expression> {
        if expr.needs_pre_emit() {
            self.flush();
            let handle = self.fun.expressions.append(expr, Span::UNDEFINED);
            self.emitter.start(&self.fun.expressions);
            handle
        } else {
            self.fun.expressions.append(expr, Span::UNDEFINED)
        }
    }

    /// Appends `statement` after everything emitted so far, in the innermost open block.
    pub fn statement(&mut self, statement: Statement) {
        self.flush();
        self.current().push(statement, Span::UNDEFINED);
        self.emitter.start(&self.fun.expressions);
    }

    /// Opens a nested block: what follows goes into it until `close_block`.
    pub fn open_block(&mut self) {
        self.flush();
        self.blocks.push(Block::new());
        self.emitter.start(&self.fun.expressions);
    }

    /// Closes the innermost block and returns it (to be placed in an `If` or `Loop`).
    pub fn close_block(&mut self) -> Block {
        self.flush();
        let block = if self.blocks.len() > 1 { self.blocks.pop().unwrap_or_default() } else { Block::new() };
        self.emitter.start(&self.fun.expressions);
        block
    }

    /// A new function-local variable of type `ty` (no initializer; callers store the first value).
    pub fn local(&mut self, name: &str, ty: Handle<Type>) -> Handle<Expression> {
        let var = self
            .fun
            .local_variables
            .append(LocalVariable { name: Some(name.to_string()), ty, init: None }, Span::UNDEFINED);
        self.expr(Expression::LocalVariable(var))
    }

    pub fn store(&mut self, pointer: Handle<Expression>, value: Handle<Expression>) {
        self.statement(Statement::Store { pointer, value });
    }

    /// Gives `expr` a name in the output (`let name = ...` in WGSL).
    pub fn name(&mut self, expr: Handle<Expression>, name: &str) {
        self.fun.named_expressions.insert(expr, name.to_string());
    }

    /// `subgroupShuffleXor(value, mask)` of a scalar of type `ty`: the result expression is never inside an
    /// `Emit` (naga's rule for statement results), so the emitter is flushed around the statement.
    pub fn shuffle_xor(
        &mut self,
        value: Handle<Expression>,
        mask: Handle<Expression>,
        ty: Handle<Type>,
    ) -> Handle<Expression> {
        self.flush();
        let result = self.fun.expressions.append(Expression::SubgroupOperationResult { ty }, Span::UNDEFINED);
        let gather = Statement::SubgroupGather { mode: naga::GatherMode::ShuffleXor(mask), argument: value, result };
        self.current().push(gather, Span::UNDEFINED);
        self.emitter.start(&self.fun.expressions);
        result
    }

    /// The finished function body, ending in `return`.
    pub fn finish(mut self) -> (Module, Function) {
        while self.blocks.len() > 1 {
            let inner = self.close_block();
            self.current().extend_block(inner);
        }
        self.statement(Statement::Return { value: None });
        self.flush();
        self.fun.body = self.blocks.pop().unwrap_or_default();
        (self.module, self.fun)
    }

    fn current(&mut self) -> &mut Block {
        if self.blocks.is_empty() {
            self.blocks.push(Block::new());
        }
        let last = self.blocks.len() - 1;
        &mut self.blocks[last]
    }

    fn flush(&mut self) {
        let emitted = self.emitter.finish(&self.fun.expressions);
        if let Some(emit) = emitted {
            self.current().push(emit.0, emit.1);
        }
    }

    pub fn u32(&mut self, value: u32) -> Handle<Expression> {
        self.expr(Expression::Literal(Literal::U32(value)))
    }
    pub fn i32(&mut self, value: i32) -> Handle<Expression> {
        self.expr(Expression::Literal(Literal::I32(value)))
    }
    /// An f32 constant; infinities and NaN (which WGSL literals cannot spell) as a bitcast of their bits.
    pub fn f32(&mut self, value: f32) -> Handle<Expression> {
        if value.is_finite() {
            self.expr(Expression::Literal(Literal::F32(value)))
        } else {
            let bits = self.u32(value.to_bits());
            self.bitcast(bits, ScalarKind::Float)
        }
    }
    pub fn binary(
        &mut self,
        op: BinaryOperator,
        left: Handle<Expression>,
        right: Handle<Expression>,
    ) -> Handle<Expression> {
        self.expr(Expression::Binary { op, left, right })
    }
    pub fn math(&mut self, fun: MathFunction, args: &[Handle<Expression>]) -> Handle<Expression> {
        let arg = |i: usize| args.get(i).copied();
        self.expr(Expression::Math { fun, arg: args[0], arg1: arg(1), arg2: arg(2), arg3: arg(3) })
    }
    /// `condition ? accept : reject`.
    pub fn select(
        &mut self,
        condition: Handle<Expression>,
        accept: Handle<Expression>,
        reject: Handle<Expression>,
    ) -> Handle<Expression> {
        self.expr(Expression::Select { condition, accept, reject })
    }
    /// A value conversion to a 32-bit `kind` (WGSL `f32(x)`, `i32(x)`, `u32(x)`).
    pub fn convert(&mut self, expr: Handle<Expression>, kind: ScalarKind) -> Handle<Expression> {
        self.expr(Expression::As { expr, kind, convert: Some(4) })
    }
    /// A bit reinterpretation (WGSL `bitcast<T>(x)`).
    pub fn bitcast(&mut self, expr: Handle<Expression>, kind: ScalarKind) -> Handle<Expression> {
        self.expr(Expression::As { expr, kind, convert: None })
    }
    pub fn load(&mut self, pointer: Handle<Expression>) -> Handle<Expression> {
        self.expr(Expression::Load { pointer })
    }
}
