//! The plain-kernel emitter (`Schedule::Plain`): one invocation per output element; the root and each
//! sibling of horizontal fusion are computed by the shared lowering (`Cx::value`) at the invocation's flat
//! index and stored there. Entry arguments: a folded `Grid`.

use naga::{GlobalVariable, Handle};

use super::{Cx, Grid, Pos, R};
use crate::codegen::WORKGROUP_SIZE;
use crate::dim::Dim;
use crate::ir::NodeId;

/// Invocations and workgroup size of a plain kernel: one invocation per output element.
pub(super) fn launch(count: &Dim) -> Result<(Dim, u32), String> {
    Ok((count.clone(), WORKGROUP_SIZE))
}

impl Cx<'_> {
    /// The plain kernel storing `outputs` (the root first, then siblings, all of the root's shape).
    pub(super) fn plain_kernel(&mut self, outputs: &[(NodeId, Handle<GlobalVariable>)]) -> R<()> {
        let graph = self.graph;
        let grid = Grid::declare(self);
        let index = self.element_index(grid);
        for (k, &(id, buffer)) in outputs.iter().enumerate() {
            let value = self.value(id, &mut Pos::flat(&graph.node(id).ty.shape, index))?;
            if k == 0 {
                self.b.name(value.expr, "value");
            }
            self.store_output(buffer, index, value);
        }
        Ok(())
    }
}
