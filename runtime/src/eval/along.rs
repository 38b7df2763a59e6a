//! The along-axis ops on row-major buffers: `TakeAlongAxis` (torch.gather), `ScatterAdd`
//! (torch.scatter_add, each output element adding its contributions in increasing source position) and
//! `Argsort` (a stable sort by `sort_key`, which the GPU kernel uses too). Every tensor is seen as
//! `[outer, axis, inner]`; the indices' `outer` and `inner` equal the data's (the verifier's rule). Indices
//! out of range are reported with their flat position, never read.

use super::layout::BadIndex;
use super::values::{Vals, finish};
use crate::DType;

/// `(outer, inner)`: the element counts before and after `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize) {
    (shape[..axis].iter().product(), shape[axis + 1..].iter().product())
}

/// The indices as `i64`, each checked to be in `0..len`.
fn checked(indices: &Vals, len: usize) -> Result<Vec<usize>, BadIndex> {
    let Vals::I(v) = indices else { return Err(BadIndex { position: 0, value: -1 }) };
    let mut out = Vec::with_capacity(v.len());
    for (position, &i) in v.iter().enumerate() {
        if i < 0 || i as usize >= len {
            return Err(BadIndex { position, value: i64::from(i) });
        }
        out.push(i as usize);
    }
    Ok(out)
}

/// `out[o, j, i] = data[o, indices[o, j, i], i]`; the result has the indices' shape.
pub fn take_along_axis(
    data: &Vals,
    shape: &[usize],
    indices: &Vals,
    index_shape: &[usize],
    axis: usize,
) -> Result<Vals, BadIndex> {
    let len = shape[axis];
    let idx = checked(indices, len)?;
    let (outer, inner) = split(shape, axis);
    let count = index_shape[axis];
    fn pick<T: Copy>(v: &[T], idx: &[usize], (outer, len, count, inner): (usize, usize, usize, usize)) -> Vec<T> {
        let mut out = Vec::with_capacity(idx.len());
        for o in 0..outer {
            for j in 0..count {
                for i in 0..inner {
                    let at = (o * count + j) * inner + i;
                    out.push(v[(o * len + idx[at]) * inner + i]);
                }
            }
        }
        out
    }
    Ok(super::values::map_vals!(data, v => pick(v, &idx, (outer, len, count, inner))))
}

/// `base` plus each `src[o, j, i]` added at `[o, indices[o, j, i], i]`, `j` increasing: every output
/// element starts from `base` and adds its contributions in that order, floats in `f32` with an `f16`
/// result rounded once at the end, integers wrapping. `None` for a dtype without addition (bool).
pub fn scatter_add(
    dtype: DType,
    base: &Vals,
    shape: &[usize],
    indices: &Vals,
    src: &Vals,
    src_shape: &[usize],
    axis: usize,
) -> Result<Option<Vals>, BadIndex> {
    let len = shape[axis];
    let idx = checked(indices, len)?;
    let (outer, inner) = split(shape, axis);
    let count = src_shape[axis];
    fn add_into<T: Copy>(out: &mut [T], src: &[T], idx: &[usize], dims: [usize; 4], add: impl Fn(T, T) -> T) {
        let [outer, len, count, inner] = dims;
        for o in 0..outer {
            for j in 0..count {
                for i in 0..inner {
                    let at = (o * count + j) * inner + i;
                    let to = (o * len + idx[at]) * inner + i;
                    out[to] = add(out[to], src[at]);
                }
            }
        }
    }
    let dims = [outer, len, count, inner];
    Ok(Some(match (base, src) {
        (Vals::F(b), Vals::F(s)) => {
            let mut out = b.clone();
            add_into(&mut out, s, &idx, dims, |a, b| a + b);
            finish(dtype, &mut out);
            Vals::F(out)
        }
        (Vals::I(b), Vals::I(s)) => {
            let mut out = b.clone();
            add_into(&mut out, s, &idx, dims, i32::wrapping_add);
            Vals::I(out)
        }
        (Vals::U(b), Vals::U(s)) => {
            let mut out = b.clone();
            add_into(&mut out, s, &idx, dims, u32::wrapping_add);
            Vals::U(out)
        }
        _ => return Ok(None),
    }))
}

/// The `u32` whose unsigned order is the sort order of float `x`: `-0.0` as `0.0`, every NaN as one NaN
/// above `+inf`, negative values' bits inverted and non-negative ones' sign bit set (the GPU kernel
/// computes the same key).
pub fn float_key(x: f32) -> u32 {
    let x = if x == 0.0 { 0.0 } else { x };
    let bits = if x.is_nan() { 0x7FC0_0000 } else { x.to_bits() };
    if bits & 0x8000_0000 != 0 { !bits } else { bits | 0x8000_0000 }
}

/// The positions sorting each fiber along `axis` by value (`descending`: largest first), equal keys in
/// their original order; `None` for bool.
pub fn argsort(data: &Vals, shape: &[usize], axis: usize, descending: bool) -> Option<Vals> {
    let keys: Vec<u32> = match data {
        Vals::F(v) => v.iter().map(|&x| float_key(x)).collect(),
        Vals::I(v) => v.iter().map(|&x| (x as u32) ^ 0x8000_0000).collect(),
        Vals::U(v) => v.clone(),
        Vals::B(_) => return None,
    };
    let keys: Vec<u32> = if descending { keys.iter().map(|k| !k).collect() } else { keys };
    let (outer, inner) = split(shape, axis);
    let len = shape[axis];
    let mut out = vec![0i32; keys.len()];
    let mut order: Vec<usize> = Vec::with_capacity(len);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            order.clear();
            order.extend(0..len);
            // `sort_by_key` is stable: equal keys keep their positions' order.
            order.sort_by_key(|&j| keys[at(j)]);
            for (j, &p) in order.iter().enumerate() {
                out[at(j)] = p as i32;
            }
        }
    }
    Some(Vals::I(out))
}
