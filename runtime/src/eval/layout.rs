//! Data-movement ops (`Broadcast`, `Permute`, `Slice`, `Concat`, `Gather`) on row-major buffers. The first
//! three are one strided copy each: the result is read from the operand at `offset + sum(index * stride)`,
//! with stride 0 for broadcast axes. Shapes were evaluated and checked by the caller; `Slice` and `Gather`
//! check the run-time values (start, indices) themselves.

use super::values::{Vals, map_vals};

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    let mut s = 1;
    for (o, &d) in out.iter_mut().zip(shape).rev() {
        *o = s;
        s *= d;
    }
    out
}

/// The row-major tensor of `shape` whose element at index `i` is `src[offset + sum(i[k] * strides[k])]`.
pub fn strided_copy<T: Copy>(src: &[T], offset: usize, shape: &[usize], strides: &[usize]) -> Vec<T> {
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(total);
    let Some((&inner, outer_shape)) = shape.split_last() else {
        out.push(src[offset]);
        return out;
    };
    if total == 0 {
        return out;
    }
    let inner_stride = strides[shape.len() - 1];
    let mut index = vec![0usize; outer_shape.len()];
    let mut base = offset;
    loop {
        match inner_stride {
            1 => out.extend_from_slice(&src[base..base + inner]),
            0 => out.extend(std::iter::repeat_n(src[base], inner)),
            s => out.extend((0..inner).map(|j| src[base + j * s])),
        }
        // Advance the odometer over the outer axes, last fastest.
        let mut axis = outer_shape.len();
        loop {
            if axis == 0 {
                return out;
            }
            axis -= 1;
            index[axis] += 1;
            base += strides[axis];
            if index[axis] < outer_shape[axis] {
                break;
            }
            base -= strides[axis] * outer_shape[axis];
            index[axis] = 0;
        }
    }
}

/// NumPy broadcast of `data` (shape `from`) to `to`: right-aligned, size-1 axes repeat.
pub fn broadcast(data: &Vals, from: &[usize], to: &[usize]) -> Vals {
    let src_strides = strides(from);
    let lead = to.len() - from.len();
    let mut st = vec![0; to.len()];
    for (i, (&d, &s)) in from.iter().zip(&src_strides).enumerate() {
        st[lead + i] = if d == 1 { 0 } else { s };
    }
    map_vals!(data, v => strided_copy(v, 0, to, &st))
}

/// Result axis `i` is operand axis `perm[i]`. A permutation that is, with neighbouring axes that stay
/// neighbours merged, a batch of 2-D transposes (`[b, p, q]` to `[b, q, p]`) is copied in square tiles, so
/// both sides stay in cache; any other is one strided copy.
pub fn permute(data: &Vals, from: &[usize], perm: &[usize]) -> Vals {
    if let Some((batch, rows, cols)) = transposes(from, perm) {
        return map_vals!(data, v => transpose(v, batch, rows, cols));
    }
    let src_strides = strides(from);
    let shape: Vec<usize> = perm.iter().map(|&p| from[p]).collect();
    let st: Vec<usize> = perm.iter().map(|&p| src_strides[p]).collect();
    map_vals!(data, v => strided_copy(v, 0, &shape, &st))
}

/// `perm` of `from` as `batch` transposes of `[rows, cols]` matrices, when it is that (and not the identity).
fn transposes(from: &[usize], perm: &[usize]) -> Option<(usize, usize, usize)> {
    // Runs of result axes that read consecutive operand axes, as operand axis ranges in result order.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for &p in perm {
        match groups.last_mut() {
            Some((_, end)) if *end == p => *end += 1,
            _ => groups.push((p, p + 1)),
        }
    }
    let size = |(a, b): (usize, usize)| from[a..b].iter().product::<usize>();
    match groups[..] {
        [(a, b), (c, d)] if c == 0 && d == a => Some((1, size((c, d)), size((a, b)))),
        [g, (a, b), (c, d)] if g == (0, c) && d == a => Some((size(g), size((c, d)), size((a, b)))),
        _ => None,
    }
}

/// `batch` row-major `[rows, cols]` matrices of `src`, each transposed: whole 8 x 8 blocks through a
/// register-sized tile (eight contiguous reads of a row piece, eight contiguous writes of a column piece,
/// which the compiler turns into vector loads, shuffles and stores), the ragged edges element by element.
fn transpose<T: Copy>(src: &[T], batch: usize, rows: usize, cols: usize) -> Vec<T> {
    const B: usize = 8;
    let Some(&first) = src.first() else { return Vec::new() };
    let mut out = vec![first; src.len()];
    let (whole_rows, whole_cols) = (rows - rows % B, cols - cols % B);
    for (s, o) in src.chunks_exact(rows * cols).zip(out.chunks_exact_mut(rows * cols)).take(batch) {
        for r0 in (0..whole_rows).step_by(B) {
            for c0 in (0..whole_cols).step_by(B) {
                let mut tile = [[first; B]; B];
                for (i, t) in tile.iter_mut().enumerate() {
                    t.copy_from_slice(&s[(r0 + i) * cols + c0..][..B]);
                }
                for j in 0..B {
                    let column: [T; B] = std::array::from_fn(|i| tile[i][j]);
                    o[(c0 + j) * rows + r0..][..B].copy_from_slice(&column);
                }
            }
        }
        // The last columns (every row), then the last rows (the whole columns).
        for r in 0..rows {
            for c in whole_cols..cols {
                o[c * rows + r] = s[r * cols + c];
            }
        }
        for r in whole_rows..rows {
            for c in 0..whole_cols {
                o[c * rows + r] = s[r * cols + c];
            }
        }
    }
    out
}

/// Elements `start, start + step, ...` along `axis`, `count` of them; `Err` describes a range that leaves
/// the operand.
pub fn slice(data: &Vals, from: &[usize], axis: usize, start: i64, step: i64, count: usize) -> Result<Vals, String> {
    let len = from[axis] as i128;
    let last = start as i128 + step as i128 * (count as i128 - 1);
    if start < 0 || last >= len || step < 1 {
        return Err(format!(
            "slice start {start} step {step} takes {count} elements, up to index {last}, but axis {axis} has {len}"
        ));
    }
    let src_strides = strides(from);
    let mut shape = from.to_vec();
    shape[axis] = count;
    let mut st = src_strides.clone();
    st[axis] *= step as usize;
    let offset = start as usize * src_strides[axis];
    Ok(map_vals!(data, v => strided_copy(v, offset, &shape, &st)))
}

/// Joins `parts` (data and shape) along `axis`; they agree on every other axis.
pub fn concat(parts: &[(&Vals, &[usize])], axis: usize) -> Option<Vals> {
    let (first, first_shape) = parts.first()?;
    let outer: usize = first_shape[..axis].iter().product();
    let inner: usize = first_shape[axis + 1..].iter().product();
    fn join<T: Copy>(parts: &[(&[T], usize)], outer: usize) -> Vec<T> {
        let total: usize = parts.iter().map(|(v, _)| v.len()).sum();
        let mut out = Vec::with_capacity(total);
        for o in 0..outer {
            for (v, chunk) in parts {
                out.extend_from_slice(&v[o * chunk..(o + 1) * chunk]);
            }
        }
        out
    }
    macro_rules! join_kind {
        ($kind:ident) => {{
            let mut typed = Vec::with_capacity(parts.len());
            for (vals, shape) in parts {
                let Vals::$kind(v) = vals else { return None };
                typed.push((&v[..], shape[axis] * inner));
            }
            Vals::$kind(join(&typed, outer))
        }};
    }
    Some(match first {
        Vals::F(_) => join_kind!(F),
        Vals::I(_) => join_kind!(I),
        Vals::U(_) => join_kind!(U),
        Vals::B(_) => join_kind!(B),
    })
}

/// Where a gather index is bad: its flat position in the indices tensor and its value.
pub struct BadIndex {
    /// The flat position of the index in the indices tensor.
    pub position: usize,
    /// Its value.
    pub value: i64,
}

/// Elements a gather's result must have to be copied in parallel.
const PARALLEL_GATHER: usize = 1 << 16;

/// `out[p.., i.., s..] = table[p.., indices[i..], s..]`, `p` the axes before `axis`.
pub fn gather(table: &Vals, table_shape: &[usize], indices: &Vals, axis: usize) -> Result<Vals, BadIndex> {
    let idx: Vec<i64> = match indices {
        Vals::I(v) => v.iter().map(|&x| x as i64).collect(),
        Vals::U(v) => v.iter().map(|&x| x as i64).collect(),
        _ => return Err(BadIndex { position: 0, value: -1 }),
    };
    let len = table_shape[axis];
    if let Some(position) = idx.iter().position(|&i| i < 0 || i as u64 >= len as u64) {
        return Err(BadIndex { position, value: idx[position] });
    }
    let outer: usize = table_shape[..axis].iter().product();
    let inner: usize = table_shape[axis + 1..].iter().product();
    fn pick<T: Copy + Default + Send + Sync>(v: &[T], idx: &[i64], outer: usize, len: usize, inner: usize) -> Vec<T> {
        let total = outer * idx.len() * inner;
        // Many long rows (an embedding table's): copied on every core, row by row.
        if total >= PARALLEL_GATHER && inner >= 16 {
            use rayon::prelude::*;
            let mut out = vec![T::default(); total];
            out.par_chunks_mut(inner).enumerate().for_each(|(r, dst)| {
                let start = ((r / idx.len()) * len + idx[r % idx.len()] as usize) * inner;
                dst.copy_from_slice(&v[start..start + inner]);
            });
            return out;
        }
        let mut out = Vec::with_capacity(total);
        for p in 0..outer {
            for &i in idx {
                let start = (p * len + i as usize) * inner;
                out.extend_from_slice(&v[start..start + inner]);
            }
        }
        out
    }
    Ok(map_vals!(table, v => pick(v, &idx, outer, len, inner)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `permute` (tiled where it is a batch of transposes: whole 8 x 8 blocks and ragged edges) equals the
        /// strided copy that defines it.
        #[test]
        fn a_permute_equals_its_strided_copy(
            from in prop::collection::vec(1usize..12, 1..5),
            order in prop::collection::vec(any::<u32>(), 4),
        ) {
            let mut perm: Vec<usize> = (0..from.len()).collect();
            perm.sort_by_key(|&i| order[i]);
            let total: usize = from.iter().product();
            let data = Vals::I((0..total as i32).collect());
            let src_strides = strides(&from);
            let shape: Vec<usize> = perm.iter().map(|&p| from[p]).collect();
            let st: Vec<usize> = perm.iter().map(|&p| src_strides[p]).collect();
            let Vals::I(v) = &data else { unreachable!() };
            prop_assert_eq!(permute(&data, &from, &perm), Vals::I(strided_copy(v, 0, &shape, &st)));
        }
    }

    /// Shapes that are transposes once merged are found as such, with their sizes.
    #[test]
    fn merged_transposes_are_recognised() {
        assert_eq!(transposes(&[4, 5, 6], &[2, 0, 1]), Some((1, 20, 6)));
        assert_eq!(transposes(&[3, 4, 5], &[0, 2, 1]), Some((3, 4, 5)));
        assert_eq!(transposes(&[2, 3, 4, 5], &[0, 3, 1, 2]), Some((2, 12, 5)));
        assert_eq!(transposes(&[3, 4, 5], &[0, 1, 2]), None);
        assert_eq!(transposes(&[3, 4, 5], &[1, 0, 2]), None);
    }
}
