//! Strided views of host values: a computed buffer read at `offset + sum(index * stride)`, so `Permute`,
//! `Broadcast` (stride 0) and most `Reshape`s of a computed tensor are read in place, without a copy: by the
//! matmul (a transposed weight or `K` in attention goes to `gemm` as strides) and by the fused chunks
//! (`fused.rs`), which gather just the elements of one chunk. Every view is made from checked shapes by
//! methods that keep it inside its buffer, so reading it never indexes out of bounds (`check` tests it again before `unsafe` code reads one).

use super::value::Value;
use crate::eval::layout::strides;
use crate::eval::values::Vals;

/// A value read through strides: element `i` of `shape` is `value.data[offset + sum(i[k] * strides[k])]`.
#[derive(Clone, Debug)]
pub struct View {
    /// The buffer.
    pub value: Value,
    /// The first element.
    pub offset: usize,
    /// The view's shape.
    pub shape: Vec<usize>,
    /// Each axis' stride (0 for a broadcast axis).
    pub strides: Vec<usize>,
}

impl View {
    /// The whole of `value`, row-major.
    pub fn whole(value: Value) -> View {
        let shape = value.0.shape.clone();
        let strides = strides(&shape);
        View { value, offset: 0, shape, strides }
    }

    /// The elements `offset..` of `value` as a row-major value of `shape` (a chain's slice of a tensor).
    pub fn window(value: Value, offset: usize, shape: Vec<usize>) -> View {
        let strides = strides(&shape);
        View { value, offset, shape, strides }
    }

    /// Checks that every element of the view is inside its buffer (views made by this file's methods from
    /// checked shapes always are; `unsafe` readers check again).
    pub fn check(&self) -> Result<(), String> {
        let last = self
            .shape
            .iter()
            .zip(&self.strides)
            .try_fold(self.offset, |acc, (&d, &s)| acc.checked_add(d.checked_sub(1)?.checked_mul(s)?));
        match last {
            Some(last) if self.shape.len() == self.strides.len() && last < len(&self.value.0.data) => Ok(()),
            _ => Err("a strided view leaves its buffer (a damaged op)".to_string()),
        }
    }

    /// The floats the view repeats: its trailing axes' elements when those axes are contiguous row-major in
    /// the buffer and its leading axes are broadcast (stride 0 or size 1), as a bias row or a layer norm's
    /// gain broadcast over rows is (a contiguous view is its one stretch); `None` for any other view or for
    /// non-float elements.
    pub fn repeated(&self) -> Option<&[f32]> {
        let Vals::F(data) = &self.value.0.data else { return None };
        if self.strides.len() != self.shape.len() {
            return None;
        }
        let mut period = 1;
        let mut axis = self.shape.len();
        while axis > 0 && (self.shape[axis - 1] == 1 || self.strides[axis - 1] == period) {
            period *= self.shape[axis - 1];
            axis -= 1;
        }
        let broadcast = self.strides[..axis].iter().zip(&self.shape[..axis]).all(|(&s, &d)| s == 0 || d == 1);
        if broadcast { data.get(self.offset..self.offset + period) } else { None }
    }

    /// Whether both views read the same elements of the same buffer (values are immutable, so the same
    /// elements hold the same numbers while either view lives).
    pub fn same(&self, other: &View) -> bool {
        std::sync::Arc::ptr_eq(&self.value.0, &other.value.0)
            && self.offset == other.offset
            && self.shape == other.shape
            && self.strides == other.strides
    }

    /// Whether the view is its buffer's elements `offset..offset + count` in row-major order.
    pub fn is_contiguous(&self) -> bool {
        // Each axis' row-major stride, from the last axis (without allocating: views are tested per block).
        let mut row_major = 1;
        self.shape.iter().zip(&self.strides).rev().all(|(&d, &s)| {
            let fits = d == 1 || s == row_major;
            row_major *= d;
            fits
        })
    }

    /// Result axis `i` is axis `perm[i]` (a valid permutation, checked by the caller).
    pub fn permute(self, perm: &[usize]) -> View {
        let shape = perm.iter().map(|&p| self.shape[p]).collect();
        let strides = perm.iter().map(|&p| self.strides[p]).collect();
        View { shape, strides, ..self }
    }

    /// NumPy broadcast to `to` (valid, checked by the caller): new leading axes and size-1 axes get stride 0.
    pub fn broadcast(self, to: &[usize]) -> View {
        let lead = to.len() - self.shape.len();
        let mut strides = vec![0; to.len()];
        for (i, (&d, &s)) in self.shape.iter().zip(&self.strides).enumerate() {
            strides[lead + i] = if d == 1 { 0 } else { s };
        }
        View { shape: to.to_vec(), strides, ..self }
    }

    /// The same elements in row-major order with shape `to` (same count, checked by the caller), when strides
    /// can express it; `None` when it needs a copy.
    pub fn reshape(&self, to: &[usize]) -> Option<View> {
        let strides = reshape_strides(&self.shape, &self.strides, to)?;
        Some(View { value: self.value.clone(), offset: self.offset, shape: to.to_vec(), strides })
    }

    /// The view as a row-major value (the buffer itself when it already is one).
    pub fn contiguous(&self) -> Value {
        if self.offset == 0 && self.value.0.shape == self.shape && self.is_contiguous() {
            return self.value.clone();
        }
        let n: usize = self.shape.iter().product();
        let data = self.gather(0, n);
        Value::new(data, self.shape.clone())
    }

    /// Elements `lo..hi` (row-major positions of the view) into a new buffer.
    pub fn gather(&self, lo: usize, hi: usize) -> Vals {
        let v = self;
        match &self.value.0.data {
            Vals::F(s) => Vals::F(gather(s, v, lo, hi)),
            Vals::I(s) => Vals::I(gather(s, v, lo, hi)),
            Vals::U(s) => Vals::U(gather(s, v, lo, hi)),
            Vals::B(s) => Vals::B(gather(s, v, lo, hi)),
        }
    }
}

/// The element count of a buffer.
pub fn len(data: &Vals) -> usize {
    match data {
        Vals::F(v) => v.len(),
        Vals::I(v) => v.len(),
        Vals::U(v) => v.len(),
        Vals::B(v) => v.len(),
    }
}

/// Elements `lo..hi` of `view` (a checked view of `src`).
fn gather<T: Copy>(src: &[T], view: &View, lo: usize, hi: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(hi - lo);
    if view.is_contiguous() {
        out.extend_from_slice(&src[view.offset + lo..view.offset + hi]);
        return out;
    }
    let Some((&inner, outer)) = view.shape.split_last() else {
        out.resize(hi - lo, src[view.offset]);
        return out;
    };
    let inner_stride = view.strides[outer.len()];
    // The position of `lo`: its index on the outer axes, and its column.
    let mut index = vec![0usize; outer.len()];
    let mut rest = lo / inner;
    let mut base = view.offset;
    for axis in (0..outer.len()).rev() {
        index[axis] = rest % outer[axis];
        rest /= outer[axis];
        base += index[axis] * view.strides[axis];
    }
    let mut column = lo % inner;
    let mut pos = lo;
    while pos < hi {
        let take = (inner - column).min(hi - pos);
        let start = base + column * inner_stride;
        match inner_stride {
            1 => out.extend_from_slice(&src[start..start + take]),
            0 => out.extend(std::iter::repeat_n(src[start], take)),
            s => out.extend((0..take).map(|j| src[start + j * s])),
        }
        pos += take;
        column = 0;
        // The next row: advance the odometer over the outer axes, last fastest.
        let mut axis = outer.len();
        while axis > 0 {
            axis -= 1;
            index[axis] += 1;
            base += view.strides[axis];
            if index[axis] < outer[axis] {
                break;
            }
            base -= view.strides[axis] * outer[axis];
            index[axis] = 0;
        }
    }
    out
}

/// Strides that read a view of `shape` and `strides` as shape `to` (same element count), without a copy:
/// each group of old axes that merges or splits into new axes must be contiguous among itself (NumPy's
/// rule). `None` when some group is not.
pub fn reshape_strides(shape: &[usize], strides: &[usize], to: &[usize]) -> Option<Vec<usize>> {
    let (old, old_strides): (Vec<usize>, Vec<usize>) =
        shape.iter().zip(strides).filter(|(d, _)| **d != 1).map(|(&d, &s)| (d, s)).unzip();
    let mut out = vec![0; to.len()];
    let (mut oi, mut oj, mut ni, mut nj) = (0, 1, 0, 1);
    while ni < to.len() && oi < old.len() {
        let (mut np, mut op) = (to[ni], old[oi]);
        while np != op {
            if np < op {
                np = np.checked_mul(*to.get(nj)?)?;
                nj += 1;
            } else {
                op = op.checked_mul(*old.get(oj)?)?;
                oj += 1;
            }
        }
        for k in oi..oj - 1 {
            if old_strides[k] != old[k + 1] * old_strides[k + 1] {
                return None;
            }
        }
        out[nj - 1] = old_strides[oj - 1];
        for k in (ni + 1..nj).rev() {
            out[k - 1] = out[k] * to[k];
        }
        ni = nj;
        nj += 1;
        oi = oj;
        oj += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::layout;
    use proptest::prelude::*;

    fn iota(shape: &[usize]) -> Value {
        let n: usize = shape.iter().product();
        Value::new(Vals::F((0..n).map(|i| i as f32).collect()), shape.to_vec())
    }

    /// A shape of rank 1..=4 with sizes 1..=4, and a permutation of its axes.
    fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        prop::collection::vec(1usize..5, 1..5).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), Just((0..r).collect::<Vec<_>>()).prop_shuffle())
        })
    }

    proptest! {
        /// A permuted view gathers, chunk by chunk, what `eval::layout::permute` copies.
        #[test]
        fn permute_chunks_match_eval((shape, perm) in shape_and_perm(), chunk in 1usize..7) {
            let value = iota(&shape);
            let want = layout::permute(&value.0.data, &shape, &perm);
            let view = View::whole(value).permute(&perm);
            let n: usize = shape.iter().product();
            let mut got = Vec::new();
            let mut lo = 0;
            while lo < n {
                let hi = (lo + chunk).min(n);
                let Vals::F(part) = view.gather(lo, hi) else { unreachable!() };
                got.extend(part);
                lo = hi;
            }
            prop_assert_eq!(Vals::F(got), want);
        }

        /// A reshape of a permuted view, in place when strides allow it, else through a copy, reads the
        /// elements of the copied permute in row-major order.
        #[test]
        fn reshape_of_permute_matches_eval((shape, perm) in shape_and_perm(), split in 0usize..4) {
            let value = iota(&shape);
            let want = layout::permute(&value.0.data, &shape, &perm);
            let view = View::whole(value).permute(&perm);
            // Merge the permuted axes from `split` on into one.
            let cut = split.min(view.shape.len());
            let mut to = view.shape[..cut].to_vec();
            to.push(view.shape[cut..].iter().product());
            let got = match view.reshape(&to) {
                Some(v) => v.gather(0, to.iter().product()),
                None => {
                    let copy = View::whole(view.contiguous());
                    copy.reshape(&to).expect("a row-major view always reshapes").gather(0, to.iter().product())
                }
            };
            prop_assert_eq!(got, want);
        }

        /// A broadcast view gathers what `eval::layout::broadcast` copies.
        #[test]
        fn broadcast_matches_eval(to in prop::collection::vec(1usize..4, 1..5), mask in 0u32..32, keep in 0usize..5) {
            let keep = keep.min(to.len());
            let from: Vec<usize> =
                to[to.len() - keep..].iter().enumerate().map(|(i, &d)| if mask >> i & 1 == 1 { 1 } else { d }).collect();
            let value = iota(&from);
            let want = layout::broadcast(&value.0.data, &from, &to);
            let got = View::whole(value).broadcast(&to).gather(0, to.iter().product());
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_view_past_its_buffer_is_refused() {
        let value = iota(&[2, 3]);
        let view = |offset, shape: Vec<usize>, strides| View { value: value.clone(), offset, shape, strides };
        assert!(view(0, vec![2, 3], vec![3, 1]).check().is_ok());
        assert!(view(0, vec![3, 3], vec![3, 1]).check().is_err());
        assert!(view(1, vec![2, 3], vec![3, 1]).check().is_err());
    }
}
