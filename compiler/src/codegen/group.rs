//! The kernel boundary: a `Group` of IR nodes (a stored root, nodes computed inline, and the siblings of
//! horizontal fusion), the unit that fusion (`fuse.rs`) decides, that a schedule (`schedule.rs`) is chosen
//! for, and that `kernel.rs` turns into one kernel. Its own module so the analyses that look at groups
//! (`rows.rs`, `tiles.rs`, `schedule.rs`) do not depend on fusion.

use std::collections::BTreeSet;

use crate::ir::NodeId;

/// One kernel: `root` is stored; `inline` are computed inside it where the root needs them; `siblings` are
/// further stored nodes of the same shape computed by the same invocations (horizontal fusion), none of
/// which depends on another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub root: NodeId,
    pub inline: BTreeSet<NodeId>,
    pub siblings: Vec<NodeId>,
}

impl Group {
    /// The stored nodes of the kernel: the root, then the siblings.
    pub fn roots(&self) -> impl Iterator<Item = NodeId> + '_ {
        std::iter::once(self.root).chain(self.siblings.iter().copied())
    }

    /// Whether the kernel computes `id` (stored or inline).
    pub fn contains(&self, id: NodeId) -> bool {
        self.root == id || self.inline.contains(&id) || self.siblings.contains(&id)
    }
}
