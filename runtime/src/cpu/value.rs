//! `Value`: a tensor on the host as the CPU executor holds it, row-major elements and their shape shared
//! without copying (params stay resident; readers hold it while they need it).

use std::sync::Arc;

use crate::DType;
use crate::eval::values::{Val, Vals};

/// A tensor value on the host: row-major elements and their shape, shared without copying (params stay
/// resident; a reshape is the same buffer).
#[derive(Clone, Debug)]
pub struct Value(pub Arc<Val>);

impl Value {
    /// A value of `data` with `shape`.
    pub fn new(data: Vals, shape: Vec<usize>) -> Value {
        Value(Arc::new(Val { shape, data }))
    }

    /// The value as a `Tensor` of `dtype`.
    pub fn to_tensor(&self, dtype: DType) -> crate::Tensor {
        self.0.data.clone().into_tensor(dtype, self.0.shape.clone())
    }
}
