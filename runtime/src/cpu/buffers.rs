//! Float buffers recycled between a model's runs: a tensor freed after its last reader gives its buffer
//! back, and the next large result of its length takes it instead of fresh memory, so a steady stream
//! of forward passes stops paying for page faults and zero-filling. A buffer taken is fully overwritten by
//! its kernel (fused chunks, gemm, row reductions), so its old contents never show.

use std::sync::{Arc, Mutex};

use super::value::Value;
use crate::eval::values::Vals;

/// Buffers smaller than this are left to the allocator.
const MIN_LEN: usize = 1 << 14;
/// Buffers kept at most.
const MAX_KEPT: usize = 64;

/// The free buffers of one model.
#[derive(Debug, Default)]
pub struct Buffers(Mutex<Vec<Vec<f32>>>);

impl Buffers {
    /// A buffer of `n` floats whose contents the caller overwrites: a kept one of exactly that length, else
    /// a new one. Only exact lengths are reused: a steady stream of runs asks for the same lengths in the
    /// same order, and taking a longer buffer for a shorter request would shrink it for good (the pool would
    /// drift towards short buffers and long requests towards fresh memory).
    pub fn take(&self, n: usize) -> Vec<f32> {
        if n >= MIN_LEN {
            let mut kept = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(i) = kept.iter().position(|b| b.len() == n) {
                return kept.swap_remove(i);
            }
        }
        vec![0.0; n]
    }

    /// Keeps `value`'s buffer when nothing else holds the value and it is a large float buffer.
    pub fn recycle(&self, value: Value) {
        if let Ok(val) = Arc::try_unwrap(value.0)
            && let Vals::F(buffer) = val.data
            && buffer.capacity() >= MIN_LEN
        {
            let mut kept = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if kept.len() < MAX_KEPT {
                kept.push(buffer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_buffer_is_taken_again_only_at_its_length() {
        let buffers = Buffers::default();
        let value = Value::new(Vals::F(vec![1.0; MIN_LEN * 2]), vec![MIN_LEN * 2]);
        let held = value.clone();
        buffers.recycle(value);
        // Still held elsewhere: not kept.
        assert_eq!(buffers.take(MIN_LEN * 2).iter().sum::<f32>(), 0.0);
        buffers.recycle(held);
        // Another length gets fresh memory; the same length the kept buffer.
        assert_eq!(buffers.take(MIN_LEN * 2 - 5), vec![0.0; MIN_LEN * 2 - 5]);
        let again = buffers.take(MIN_LEN * 2);
        assert_eq!(again.len(), MIN_LEN * 2);
        assert_eq!(again[0], 1.0, "the kept buffer was reused");
    }
}
