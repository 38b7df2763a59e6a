//! The meaning of every op on host buffers: elementwise arithmetic (`kernels.rs`, where every op's per-element
//! semantics is defined: wrapping integers, IEEE min/max, `libm` transcendental functions, `f16` rounded
//! after every op), reductions, index reductions, scans and matmul (`reduce.rs`), layout ops (`layout.rs`),
//! take_along_axis, scatter-add and argsort (`along.rs`) and index notation (`map.rs`; `fold.rs` first folds
//! the index arithmetic its variables' ranges decide), on flat row-major
//! `Vals` (`values.rs`); `vmath.rs`: `exp` and `erf` over slices, libm's bits without branches. The compiler's reference interpreter runs them node by node over whole tensors (it
//! is the simple definition of semantics); the CPU executor (`cpu/`) runs them where it has no faster
//! kernel of its own and checks its own kernels against them.

pub mod along;
pub mod fold;
pub mod kernels;
pub mod layout;
pub mod map;
pub mod reduce;
pub mod values;
pub mod vmath;
