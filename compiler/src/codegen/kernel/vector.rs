//! The vector-kernel emitter (`Schedule::Vector`, loop-free groups on targets with `vector`): every
//! storage array holds 4-element vectors and invocation `v` computes elements `4v .. 4v + 3` of every
//! stored node, reading tensors at those positions as whole vectors (`Cx::lanes`) where all four are in
//! range. Entry arguments: a folded `Grid`.

use naga::{BinaryOperator, Expression, GlobalVariable, Handle, Statement, TypeInner, VectorSize};
use tdsl_runtime::program::BoundKind;

use super::{Cx, Emitter, Grid, MAX_ELEMENTS, Pos, R, storage_scalar, to_storage};
use crate::codegen::WORKGROUP_SIZE;
use crate::dim::Dim;
use crate::ir::{Graph, NodeId};

/// The vector schedule's emitter.
pub(super) struct Vector;

impl Emitter for Vector {
    /// One invocation per 4 output elements.
    fn launch(&self, _: &Graph, count: &Dim) -> Result<(Dim, u32), String> {
        let vectors = count
            .add(&Dim::constant(3))
            .and_then(|d| d.div(&Dim::constant(4)))
            .map_err(|_| "the invocation count overflows".to_string())?;
        Ok((vectors, WORKGROUP_SIZE))
    }

    fn emit(&self, cx: &mut Cx, count: &Dim, outputs: &[(NodeId, Handle<GlobalVariable>)]) -> R<()> {
        cx.vector_kernel(count, outputs)
    }
}

impl Cx<'_> {
    /// The vector kernel: invocation `v` computes elements `4v .. 4v + 3` of every output. When
    /// all four are in range, tensors read at those positions are read as whole vectors and each output is
    /// stored as one; the last, partial vector is computed and stored element by element (a count that is
    /// a multiple of 4 for every symbol value has no partial vector, and the kernel no element path).
    fn vector_kernel(&mut self, count_dim: &Dim, outputs: &[(NodeId, Handle<GlobalVariable>)]) -> R<()> {
        let graph = self.graph;
        let grid = Grid::declare(self);
        let v = self.element_index(grid);
        self.bounds.push((BoundKind::OutputElements, count_dim.clone(), MAX_ELEMENTS));
        // Every coefficient a multiple of 4 (symbols are integers): no partial vector, no element path.
        let whole_vectors = count_dim.terms().all(|(_, coefficient)| coefficient % 4 == 0);
        let four = self.b.u32(4);
        let base = self.b.binary(BinaryOperator::Multiply, v, four);
        self.b.name(base, "first");

        self.open_block();
        let mut lanes = [base; 4];
        for (c, lane) in lanes.iter_mut().enumerate().skip(1) {
            let offset = self.b.u32(c as u32);
            *lane = self.b.binary(BinaryOperator::Add, base, offset);
        }
        self.lanes = Some((v, lanes));
        for &(id, buffer) in outputs {
            let shape = graph.node(id).ty.shape.clone();
            let mut components = Vec::with_capacity(4);
            for &flat in &lanes {
                let value = self.value(id, &mut Pos::flat(&shape, flat))?;
                components.push(to_storage(&mut self.b, value));
            }
            let ty = self
                .b
                .ty(TypeInner::Vector { size: VectorSize::Quad, scalar: storage_scalar(graph.node(id).ty.dtype) });
            let composed = self.b.expr(Expression::Compose { ty, components });
            let array = self.b.expr(Expression::GlobalVariable(buffer));
            let pointer = self.b.expr(Expression::Access { base: array, index: v });
            self.b.store(pointer, composed);
        }
        self.lanes = None;
        let vectors = self.close_block();
        if whole_vectors {
            self.b.statement(Statement::Block(vectors));
            return Ok(());
        }
        let count = self.dim(count_dim);
        let whole = self.b.binary(BinaryOperator::Divide, count, four);
        let full = self.b.binary(BinaryOperator::Less, v, whole);

        self.open_block();
        for c in 0..4u32 {
            let offset = self.b.u32(c);
            let flat = self.b.binary(BinaryOperator::Add, base, offset);
            let inside = self.b.binary(BinaryOperator::Less, flat, count);
            self.open_block();
            for &(id, buffer) in outputs {
                let shape = graph.node(id).ty.shape.clone();
                let value = self.value(id, &mut Pos::flat(&shape, flat))?;
                let stored = to_storage(&mut self.b, value);
                let pointer = self.vector_element(buffer, flat);
                self.b.store(pointer, stored);
            }
            let accept = self.close_block();
            self.b.statement(Statement::If { condition: inside, accept, reject: naga::Block::new() });
        }
        let elements = self.close_block();
        self.b.statement(Statement::If { condition: full, accept: vectors, reject: elements });
        Ok(())
    }
}
