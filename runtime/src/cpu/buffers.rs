//! Float buffers recycled between a model's runs: a tensor freed after its last reader gives its buffer
//! back, and the next large result of about its size takes it instead of fresh memory, so a steady stream
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
    /// A buffer of `n` floats whose contents the caller overwrites: a kept one with room for `n` (the
    /// smallest such), else a new one.
    pub fn take(&self, n: usize) -> Vec<f32> {
        if n >= MIN_LEN {
            let mut kept = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let best = kept
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= n && b.capacity() <= 2 * n)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let mut buffer = kept.swap_remove(i);
                buffer.resize(n, 0.0);
                buffer.truncate(n);
                return buffer;
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
    fn a_freed_buffer_is_taken_again_only_when_it_fits() {
        let buffers = Buffers::default();
        let value = Value::new(Vals::F(vec![1.0; MIN_LEN * 2]), vec![MIN_LEN * 2]);
        let held = value.clone();
        buffers.recycle(value);
        // Still held elsewhere: not kept.
        assert_eq!(buffers.take(MIN_LEN * 2).iter().sum::<f32>(), 0.0);
        buffers.recycle(held);
        // Too large for a small request, the right size for a close one.
        assert_eq!(buffers.take(MIN_LEN / 2).len(), MIN_LEN / 2);
        let again = buffers.take(MIN_LEN * 2 - 5);
        assert_eq!(again.len(), MIN_LEN * 2 - 5);
        assert_eq!(again[0], 1.0, "the kept buffer was reused");
    }
}
