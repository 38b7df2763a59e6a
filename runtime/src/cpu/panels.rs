//! Matrix products by row panels in AVX-512 registers: `C (+)= A @ B` computed one block of rows at a time
//! by the thread that asked for it, so a fused epilogue (a bias, GELU, a residual and layer norm) runs on
//! those rows while they are still in the core's cache (`rows.rs` feeds its row passes this way, `group.rs`
//! decides when). `B` is packed once (`PackedB`; `group.rs` keeps it across runs while the weight is the same
//! buffer) into panels of `NR` columns, in blocks of at most `KC` rows; `A` is read in place (copied
//! row-major first when its columns are strided). A register tile of 6 rows and up to 64 columns (up to 24
//! accumulators, each row's `A` element broadcast into one fused multiply-add per 16 columns; a panel's
//! last columns, or a product narrower than a panel such as a head's `P @ V`, take only the vectors they
//! need) sums every product in `k` order, so the result equals
//! in-order fused multiply-add sums bit for bit. Loop order as `gemm`'s: per block of `k`, per block of `JB`
//! column panels (in L2), per tile's rows of `A` (in L1), per panel.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::fused::Run;
use super::value::Value;
use super::view::View;
use crate::eval::values::Vals;
use crate::program::TensorOp;

/// Rows of `C` per register tile.
pub const MR: usize = 6;
/// 16-lane vectors per row of a register tile.
const NV: usize = 4;
/// Columns of `C` per register tile.
pub const NR: usize = 16 * NV;
/// The longest stretch of `k` per packed block (a tile's rows of `A` for one block, `MR x KC` floats, stay
/// in L1; a block of `JB` panels of `B`, `KC x JB x NR` floats, in L2).
const KC: usize = 256;
/// Column panels of `B` per block.
const JB: usize = 8;
/// Floats per 64-byte line: packed buffers start on a line so the tile's vector loads never split one.
const LINE: usize = 16;

/// Whether this machine runs the panels (AVX-512F).
pub fn available() -> bool {
    super::dot::available()
}

/// A strided matrix in a float slice: element `(i, j)` at `data[offset + i * row + j * col]`.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub row: usize,
    pub col: usize,
}

impl Strided<'_> {
    /// Whether every element of a `rows x cols` matrix is inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1)
                .checked_mul(self.row)
                .and_then(|x| x.checked_add((cols - 1).checked_mul(self.col)?))
                .and_then(|x| x.checked_add(self.offset))
                .is_some_and(|last| last < self.data.len())
    }
}

/// A product's left operand (`m x k`) as a view of its elements: strided, or (`Rows`) a view whose
/// row-major elements are the operand's where no strides express the reshape between them (attention's
/// context with its heads merged), its rows gathered per panel by the thread that computes the panel.
#[derive(Debug)]
pub enum Lhs {
    View(View),
    Rows(View, Vec<usize>),
}

impl Lhs {
    /// Node `k` of `run` as a left operand of `shape`: a reshape no strides express is `Rows`.
    pub fn of(run: &Run, k: usize, shape: &[usize]) -> Result<Lhs, String> {
        if let TensorOp::Reshape(x) = run.ops.nodes[k].op
            && matches!(run.values.get(k), Some(None))
        {
            let from = run.view(x.index())?;
            return Ok(match from.reshape(shape) {
                Some(view) => Lhs::View(view),
                None => Lhs::Rows(from, shape.to_vec()),
            });
        }
        run.view(k).map(Lhs::View)
    }

    /// Its shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Lhs::View(view) => &view.shape,
            Lhs::Rows(_, shape) => shape,
        }
    }

    /// Whether it is a float matrix inside its buffer, as `product_rows` needs.
    pub fn fits(&self) -> bool {
        match self {
            Lhs::View(view) => view.check().is_ok() && strided(view).is_some(),
            Lhs::Rows(from, shape) => {
                from.check().is_ok()
                    && shape.len() == 2
                    && from.shape.iter().product::<usize>() == shape.iter().product::<usize>()
                    && matches!(from.value.0.data, Vals::F(_))
            }
        }
    }

    /// The whole operand as one view (its rows gathered when `Rows`), for a product not made by panels.
    pub fn into_view(self) -> View {
        match self {
            Lhs::View(view) => view,
            Lhs::Rows(from, shape) => {
                let n = shape.iter().product();
                View::whole(Value::new(from.gather(0, n), shape))
            }
        }
    }

    /// Rows `r0..r1` of the product with `packed` (`rows`).
    pub fn product_rows(
        &self,
        packed: &PackedB,
        r0: usize,
        r1: usize,
        c: &mut [f32],
        c_row: usize,
        accumulate: bool,
    ) -> Result<(), String> {
        match self {
            Lhs::View(view) => {
                let a = strided(view).ok_or("internal error: a product's operand is not a float matrix")?;
                rows(a, packed, r0, r1, c, c_row, accumulate)
            }
            Lhs::Rows(from, _) => {
                // This panel's rows, gathered here (in parallel with the other panels).
                let k = packed.k;
                let Vals::F(data) = from.gather(r0 * k, r1 * k) else {
                    return Err("internal error: a product's operand is not floats".to_string());
                };
                rows(Strided { data: &data, offset: 0, row: k, col: 1 }, packed, 0, r1 - r0, c, c_row, accumulate)
            }
        }
    }
}

/// Writes `row` into every row of `out` (a whole number of rows): the bias under a product's rows.
pub fn fill_rows(out: &mut [f32], row: &[f32]) {
    out.chunks_exact_mut(row.len()).for_each(|r| r.copy_from_slice(row));
}

/// A float matrix view as `Strided`; `None` for another element type or rank.
pub fn strided(view: &View) -> Option<Strided<'_>> {
    let Vals::F(data) = &view.value.0.data else { return None };
    let &[row, col] = &view.strides[..] else { return None };
    Some(Strided { data, offset: view.offset, row, col })
}

/// `B` (`k x n`) packed: for each block of `k` (`blocks`), for each panel of `NR` columns, `kc` rows of `NR`
/// floats (zeros past column `n`).
#[derive(Debug)]
pub struct PackedB {
    pub k: usize,
    pub n: usize,
    /// Each block of `k`: its first row and its length.
    blocks: Vec<(usize, usize)>,
    data: Vec<f32>,
    /// Where the packed floats start in `data` (on a 64-byte line).
    start: usize,
}

impl PackedB {
    /// Packs `b` (`k x n`); `None` when it leaves its slice.
    pub fn new(b: Strided, k: usize, n: usize) -> Option<PackedB> {
        if !b.fits(k, n) {
            return None;
        }
        let panels = n.div_ceil(NR);
        let count = k.div_ceil(KC).max(1);
        let per = k.div_ceil(count);
        let blocks: Vec<(usize, usize)> = (0..count).map(|i| (i * per, per.min(k - (i * per).min(k)))).collect();
        let (mut data, start) = aligned(panels * NR * k);
        let out = &mut data[start..];
        for &(k0, kc) in &blocks {
            let block = &mut out[k0 * panels * NR..(k0 + kc) * panels * NR];
            for (jp, panel) in block.chunks_exact_mut(kc * NR).enumerate() {
                let cols = NR.min(n - jp * NR);
                let first = b.offset + k0 * b.row + jp * NR * b.col;
                if b.col == 1 {
                    // Rows of `B` are runs of the buffer: copied whole.
                    for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                        let src = first + p * b.row;
                        dst[..cols].copy_from_slice(&b.data[src..src + cols]);
                    }
                } else if b.row == 1 {
                    // Columns of `B` are runs (a transposed operand): each read along the run.
                    for j in 0..cols {
                        let src = &b.data[first + j * b.col..][..kc];
                        for (dst, &x) in panel.chunks_exact_mut(NR).zip(src) {
                            dst[j] = x;
                        }
                    }
                } else {
                    for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                        for (j, d) in dst[..cols].iter_mut().enumerate() {
                            *d = b.data[first + p * b.row + j * b.col];
                        }
                    }
                }
            }
        }
        Some(PackedB { k, n, blocks, data, start })
    }

    /// Block `bi`'s panel `jp`.
    fn panel(&self, bi: usize, jp: usize) -> &[f32] {
        let (k0, kc) = self.blocks[bi];
        let panels = self.n.div_ceil(NR);
        let at = self.start + k0 * panels * NR + jp * kc * NR;
        &self.data[at..at + kc * NR]
    }
}

/// A zeroed buffer of at least `n` floats and the index of its first float on a 64-byte line.
fn aligned(n: usize) -> (Vec<f32>, usize) {
    let data = vec![0.0f32; n + LINE];
    let misalign = (data.as_ptr() as usize / size_of::<f32>()) % LINE;
    let start = (LINE - misalign) % LINE;
    (data, start)
}

thread_local! {
    /// Each thread's row-major copy of a strided `A`'s rows (kept between calls).
    static COPY: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows `r0..r1` of `C = A @ B` (`A`: `m x k`, `packed`: `k x n`) into `c`, whose row `i - r0` starts at
/// `c[(i - r0) * c_row]`; with `accumulate`, added to `c`'s contents. Runs on the calling thread. `Err` when
/// an operand leaves its slice or the machine lacks AVX-512F.
pub fn rows(
    a: Strided,
    packed: &PackedB,
    r0: usize,
    r1: usize,
    c: &mut [f32],
    c_row: usize,
    accumulate: bool,
) -> Result<(), String> {
    let (k, n) = (packed.k, packed.n);
    let rows = r1.saturating_sub(r0);
    if rows == 0 || n == 0 {
        return Ok(());
    }
    if !a.fits(r1, k) || c_row < n || (rows - 1) * c_row + n > c.len() {
        return Err("a matrix product's operand leaves its buffer (a damaged op)".to_string());
    }
    if !available() {
        return Err("the panel kernels need AVX-512F".to_string());
    }
    if k == 0 {
        if !accumulate {
            c.chunks_mut(c_row).take(rows).for_each(|r| r[..n].fill(0.0));
        }
        return Ok(());
    }
    // A's rows as the tiles read them: in place when its columns are contiguous, else copied row-major.
    let in_place = a.col == 1;
    COPY.with(|copy| {
        let mut copy = copy.borrow_mut();
        let (a_rows, a_base, a_row): (&[f32], usize, usize) = if in_place {
            (a.data, a.offset + r0 * a.row, a.row)
        } else {
            copy.clear();
            for i in r0..r1 {
                let base = a.offset + i * a.row;
                copy.extend((0..k).map(|p| a.data[base + p * a.col]));
            }
            (&copy[..], 0, k)
        };
        let micro = rows.div_ceil(MR);
        let all = n.div_ceil(NR);
        for (bi, &(k0, kc)) in packed.blocks.iter().enumerate() {
            let load = accumulate || bi > 0;
            // Column blocks of `JB` panels: a block of `B` stays in L2 while each tile's rows of `A` (in L1)
            // meet every panel of it.
            for jb in (0..all).step_by(JB) {
                for ip in 0..micro {
                    let live = MR.min(rows - ip * MR);
                    let first = a_base + ip * MR * a_row + k0;
                    for jp in jb..(jb + JB).min(all) {
                        let bpanel = packed.panel(bi, jp);
                        let cols = NR.min(n - jp * NR);
                        let at = ip * MR * c_row + jp * NR;
                        let t = Tile {
                            kc,
                            a: a_rows[first..].as_ptr(),
                            a_row,
                            b: bpanel.as_ptr(),
                            c: c[at..].as_mut_ptr(),
                            c_row,
                            load,
                        };
                        // SAFETY: the tile reads `live` rows of `A` from `first` (`a_row` apart, `kc`
                        // each: inside `a_rows`, checked by `a.fits` or the copy's size) and `kc x NR` floats of
                        // `bpanel`; it writes rows `ip * MR .. + live` of `c`, columns `jp * NR .. + cols`, inside
                        // `c` (row `rows - 1` ends at `(rows - 1) * c_row + n <= c.len()`); AVX-512F was checked.
                        unsafe { tile(live, cols, &t) };
                    }
                }
            }
        }
    });
    Ok(())
}

/// One register tile's operands: `kc` columns of rows of `A` from `a` (`a_row` apart), `kc` rows of a
/// packed panel of `B` (`NR` floats each) from `b`, and rows of `C` from `c` (`c_row` apart), loaded first
/// when `load` (a bias, or the sums of earlier blocks of `k`).
struct Tile {
    kc: usize,
    a: *const f32,
    a_row: usize,
    b: *const f32,
    c: *mut f32,
    c_row: usize,
    load: bool,
}

/// `live` rows and `cols` columns of `C` (+)= their rows of `A` times the panel of `B`: the kernel of that
/// many rows and of as many vectors as the columns need (a panel's last columns, or a product narrower than
/// a panel, compute no vector that is wholly past them), masked to those columns.
///
/// # Safety
/// AVX-512F is available; `t.a` starts `live` rows of `t.kc` floats `t.a_row` apart, `t.b` holds
/// `t.kc * NR` floats, and `t.c` starts `live` rows whose first `cols` floats (`t.c_row` apart) are in bounds.
#[cfg(target_arch = "x86_64")]
unsafe fn tile(live: usize, cols: usize, t: &Tile) {
    let masks: [u16; NV] = std::array::from_fn(|v| crate::eval::vmath::first_lanes(cols.saturating_sub(16 * v)));
    macro_rules! rows {
        ($v:literal: $($r:literal)*) => {
            match live {
                $($r => unsafe { kernel::<$r, $v>(t, masks) },)*
                _ => unreachable!("a tile has 1 to {MR} rows"),
            }
        };
    }
    match cols.div_ceil(16) {
        1 => rows!(1: 1 2 3 4 5 6),
        2 => rows!(2: 1 2 3 4 5 6),
        3 => rows!(3: 1 2 3 4 5 6),
        _ => rows!(4: 1 2 3 4 5 6),
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(_: usize, _: usize, _: &Tile) {
    unreachable!("`available` is false off x86-64")
}

/// `R` rows of `C` (+)= the tile's rows of `A` times the first `V` vectors of its panel of `B`, the lanes of
/// `masks` of each row's vectors read and written.
///
/// # Safety
/// As `tile`, with `live = R`, `V <= NV` and `masks` the lanes of its `cols` (none past the `V`th vector).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize, const V: usize>(t: &Tile, masks: [u16; NV]) {
    let Tile { kc, a, a_row, b, c, c_row, load } = *t;
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        let rows: [*const f32; R] = std::array::from_fn(|i| a.add(i * a_row));
        if load {
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, lane) in row.iter_mut().enumerate() {
                    *lane = _mm512_maskz_loadu_ps(masks[v], c.add(i * c_row + 16 * v));
                }
            }
        }
        for p in 0..kc {
            let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(p * NR + 16 * v)));
            for (i, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*rows[i].add(p));
                for (lane, &bv) in row.iter_mut().zip(&bv) {
                    *lane = _mm512_fmadd_ps(x, bv, *lane);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &lane) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(c.add(i * c_row + 16 * v), masks[v], lane);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_values as values;
    use proptest::prelude::*;

    proptest! {
        /// Rows `r0..r1` of the product equal `k`-ordered fused multiply-add sums bit for bit (the tile sums
        /// in that order), for every row and column tail, `k` over several packed blocks, `A` in place or
        /// strided (transposed in its buffer, copied), `B` given as a `[n, k]` weight, written or added to a
        /// bias; `C`'s padding past column `n` is never written. On a machine without AVX-512F it refuses.
        #[test]
        fn panels_equal_in_order_sums(
            m in 1usize..40, k in 1usize..600, n in 1usize..140, pad in 0usize..3,
            cut in 0usize..40, a_transposed in any::<bool>(), accumulate in any::<bool>(),
        ) {
            let (r0, r1, c_row) = (cut.min(m - 1), m, n + pad);
            let a_data = values(m * k, 3);
            let w = values(n * k, 5);
            let a = if a_transposed {
                Strided { data: &a_data, offset: 0, row: 1, col: m }
            } else {
                Strided { data: &a_data, offset: 0, row: k, col: 1 }
            };
            let b = Strided { data: &w, offset: 0, row: 1, col: k };
            let packed = PackedB::new(b, k, n).unwrap();
            let start = values((r1 - r0) * c_row, 9);
            let mut c = start.clone();
            if !available() {
                prop_assert!(rows(a, &packed, r0, r1, &mut c, c_row, accumulate).is_err());
                return Ok(());
            }
            rows(a, &packed, r0, r1, &mut c, c_row, accumulate).unwrap();
            for i in r0..r1 {
                for j in 0..c_row {
                    let (got, before) = (c[(i - r0) * c_row + j], start[(i - r0) * c_row + j]);
                    if j >= n {
                        prop_assert_eq!(got.to_bits(), before.to_bits(), "padding ({}, {}) was written", i, j);
                        continue;
                    }
                    let mut want = if accumulate { before } else { 0.0 };
                    for p in 0..k {
                        want = a.data[i * a.row + p * a.col].mul_add(w[j * k + p], want);
                    }
                    prop_assert_eq!(got.to_bits(), want.to_bits(), "row {} column {}", i, j);
                }
            }
        }
    }

    #[test]
    fn operands_outside_their_buffers_are_refused() {
        let data = values(12, 1);
        assert!(PackedB::new(Strided { data: &data, offset: 0, row: 4, col: 1 }, 4, 4).is_none());
        let packed = PackedB::new(Strided { data: &data, offset: 0, row: 4, col: 1 }, 3, 4).unwrap();
        let a = Strided { data: &data, offset: 0, row: 3, col: 1 };
        let mut c = vec![0.0; 8];
        assert!(rows(a, &packed, 0, 5, &mut c, 4, false).is_err(), "A has 4 rows of 3");
        assert!(rows(a, &packed, 0, 3, &mut c, 4, false).is_err(), "C holds 2 rows of 4");
    }
}
