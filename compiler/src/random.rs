//! Seeded test data: a SplitMix64 generator and `seeded_tensor`, which gives every named input or param its
//! own stream (the seed mixed with the name), so adding one tensor does not change the others' values.
//! Floats are uniform in [-1, 1); integers are 0 or 1 (valid as masks and as ids for any table); bools are
//! fair coin flips.

use crate::interp::Tensor;
use crate::ir::DType;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for test data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), with 24 random bits.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// A tensor of `dtype` and `shape`: floats uniform in [-1, 1), integers in `0..int_range`.
    pub fn tensor(&mut self, dtype: DType, shape: &[usize], int_range: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let range = int_range.max(1);
        match dtype {
            DType::F32 => Tensor::f32(shape, (0..n).map(|_| self.unit()).collect()),
            DType::F16 => Tensor::f16(shape, (0..n).map(|_| half::f16::from_f32(self.unit())).collect()),
            DType::I32 => Tensor::i32(shape, (0..n).map(|_| (self.next_u64() % range) as i32).collect()),
            DType::U32 => Tensor::u32(shape, (0..n).map(|_| (self.next_u64() % range) as u32).collect()),
            DType::Bool => Tensor::bool(shape, (0..n).map(|_| self.next_u64() & 1 == 1).collect()),
        }
    }
}

/// The seeded value of the input or param called `name` (integers are 0 or 1).
pub fn seeded_tensor(name: &str, dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    // FNV-1a of the name, mixed with the seed.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    SplitMix64::new(seed ^ hash).tensor(dtype, shape, 2)
}
