//! The plain-kernel emitter (`Schedule::Plain`): one invocation per output element; the root and each
//! sibling of horizontal fusion are computed by the shared lowering (`Cx::value`) at the invocation's flat
//! index and stored there. Entry arguments: a folded `Grid`.

use naga::{GlobalVariable, Handle};

use super::{Cx, Emitter, Grid, Pos, R};
use crate::codegen::WORKGROUP_SIZE;
use crate::dim::Dim;
use crate::ir::{Graph, NodeId};

/// The plain schedule's emitter.
pub(super) struct Plain;

impl Emitter for Plain {
    /// One invocation per output element.
    fn launch(&self, _: &Graph, count: &Dim) -> Result<(Dim, u32), String> {
        Ok((count.clone(), WORKGROUP_SIZE))
    }

    /// Each output (the root first, then siblings, all of the root's shape) at the invocation's index.
    fn emit(&self, cx: &mut Cx, _: &Dim, outputs: &[(NodeId, Handle<GlobalVariable>)]) -> R<()> {
        let graph = cx.graph;
        let grid = Grid::declare(cx);
        let index = cx.element_index(grid);
        for (k, &(id, buffer)) in outputs.iter().enumerate() {
            let value = cx.value(id, &mut Pos::flat(&graph.node(id).ty.shape, index))?;
            if k == 0 {
                cx.b.name(value.expr, "value");
            }
            cx.store_output(buffer, index, value);
        }
        Ok(())
    }
}
