//! Evaluation of `Op::Map` (index notation). The body is not walked per element: output elements are
//! processed in chunks of up to `CHUNK` consecutive (row-major) elements, "lanes", and each scalar node is
//! evaluated for all lanes of a chunk at once with the elementwise kernels.
//!
//! A plan, built once per map, places every scalar node in a *block*: the top block runs once per chunk, and
//! each `Reduce` node owns a block that runs once per value of its variables. A node goes in the innermost
//! block whose variables it depends on, so work that does not depend on a reduction's variables is hoisted
//! out of its loop. A `Load`'s flat position is split into a per-lane part (output variables, computed once
//! per chunk) and a uniform part (reduction variables); when the whole chunk is in range for the current
//! reduction values, a load is one gather from precomputed offsets. A reduction variable that its sum's
//! guard pins to one value per element (a strided pool's adjoint; `fold::Folded::pins`) is not looped over:
//! it becomes a lane variable computed from the output variables, and the sum is its one term.
//!
//! A map whose value (folded) is one load, as a contraction's im2col factors are, skips the lanes: its
//! elements are read along runs of its longest variable, indices kept up to date by an odometer
//! (`gather_map`).
//!
//! Semantics: every scalar node is evaluated for every element (both branches of a `Select` included), so a
//! `Load` without default that leaves its input is an error even where it would not be selected.

use super::fold::PinOp;
use super::kernels::{self, KindMismatch, accumulate, reduce_finish, reduce_init};
use super::values::{Lit, Val, Vals, finish};
use crate::DType;
use crate::dim::Dim;
use crate::ops::ReduceOp;
use crate::program::{MapOps, ScalarOp};
use std::collections::BTreeSet;

/// Output elements evaluated together.
const CHUNK: usize = 1024;

/// Largest magnitude an index expression may reach, so index arithmetic can never overflow `i64`.
const INDEX_LIMIT: i128 = 1 << 62;

/// Evaluates `map` into a buffer of `out_shape`'s element count; `Err` is a message about the map node.
pub fn run_map(map: &MapOps, dtype: DType, out_shape: &[usize], inputs: &[&Val], syms: &[i64]) -> Result<Vals, String> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|v| &v.shape[..]).collect();
    let plan = Plan::build(map, out_shape, &shapes, syms)?;
    run_planned(&plan, out_shape, inputs, Vals::zeros(dtype, out_shape.iter().product()))
}

/// A map planned for one output shape, one shape per input and one value per symbol: `run_map` in two
/// halves, so that an executor running the same map many times (a training step's) plans it once. Planning
/// (folding the index arithmetic, pinning, placing nodes in blocks) reads only those shapes and values.
pub struct MapPlan {
    plan: Plan,
    out_shape: Vec<usize>,
    input_shapes: Vec<Vec<usize>>,
}

impl MapPlan {
    /// `map` planned for `out_shape`, inputs of `input_shapes` and the symbol values `syms`; `Err` as
    /// `run_map`'s.
    pub fn new(map: &MapOps, out_shape: &[usize], input_shapes: &[&[usize]], syms: &[i64]) -> Result<MapPlan, String> {
        Ok(MapPlan {
            plan: Plan::build(map, out_shape, input_shapes, syms)?,
            out_shape: out_shape.to_vec(),
            input_shapes: input_shapes.iter().map(|s| s.to_vec()).collect(),
        })
    }

    /// The map's value on `inputs`, which must have the shapes it was planned for (an error otherwise: the
    /// plan's strides would read the wrong elements).
    pub fn run(&self, dtype: DType, inputs: &[&Val]) -> Result<Vals, String> {
        self.run_into(dtype, inputs, Vals::zeros(dtype, self.out_shape.iter().product()))
    }

    /// `run`, written into `out` (whose contents are overwritten): a buffer of the output's element count in
    /// `dtype`'s storage kind, as an executor recycling its buffers has one.
    pub fn run_into(&self, dtype: DType, inputs: &[&Val], out: Vals) -> Result<Vals, String> {
        let same = inputs.len() == self.input_shapes.len()
            && inputs.iter().zip(&self.input_shapes).all(|(v, s)| v.shape == *s);
        if !same {
            return Err("internal error: a map plan run on inputs of other shapes than it was made for".to_string());
        }
        let fits = out.len() == self.out_shape.iter().product::<usize>()
            && std::mem::discriminant(&out) == std::mem::discriminant(&Vals::zeros(dtype, 0));
        if !fits {
            return Err("internal error: a map's output buffer has the wrong length or kind".to_string());
        }
        run_planned(&self.plan, &self.out_shape, inputs, out)
    }
}

/// `run_map` with its plan made, into `out` (the output's element count, `dtype`'s storage kind; every
/// element is written).
fn run_planned(plan: &Plan, out_shape: &[usize], inputs: &[&Val], mut out: Vals) -> Result<Vals, String> {
    use rayon::prelude::*;
    if gather_map(plan, out_shape, inputs, &mut out).is_some() {
        return Ok(out);
    }
    let total: usize = out_shape.iter().product();
    if total == 0 {
        return Ok(out);
    }
    // Chunks are independent: large maps are split into ranges of whole chunks evaluated on the current
    // rayon pool (the CPU executor's, or the global one), each writing its own part of `out`; the first
    // failing range's error is the one reported, as in order.
    let chunks = total.div_ceil(CHUNK);
    let parts = rayon::current_num_threads().min(chunks).max(1);
    let per = chunks.div_ceil(parts) * CHUNK;
    if parts == 1 {
        for mut piece in Part::split(&mut out, total) {
            run_range(plan, out_shape, inputs, 0, total, &mut piece)?;
        }
        return Ok(out);
    }
    let done: Vec<Result<(), String>> = Part::split(&mut out, per)
        .into_par_iter()
        .enumerate()
        .map(|(k, mut piece)| {
            let start = k * per;
            run_range(plan, out_shape, inputs, start, (start + per).min(total), &mut piece)
        })
        .collect();
    done.into_iter().collect::<Result<(), String>>()?;
    Ok(out)
}

/// A mutable window of a `Vals`: the part of a map's output one range writes.
enum Part<'a> {
    F(&'a mut [f32]),
    I(&'a mut [i32]),
    U(&'a mut [u32]),
    B(&'a mut [bool]),
}

impl Part<'_> {
    /// `vals` in consecutive windows of `per` elements (the last one shorter); one window when `per` is 0.
    fn split(vals: &mut Vals, per: usize) -> Vec<Part<'_>> {
        let per = per.max(1);
        match vals {
            Vals::F(v) => v.chunks_mut(per).map(Part::F).collect(),
            Vals::I(v) => v.chunks_mut(per).map(Part::I).collect(),
            Vals::U(v) => v.chunks_mut(per).map(Part::U).collect(),
            Vals::B(v) => v.chunks_mut(per).map(Part::B).collect(),
        }
    }

    /// `src`'s first `n` elements at `start`.
    fn copy_at(&mut self, start: usize, src: &Vals, n: usize) -> Result<(), KindMismatch> {
        match (self, src) {
            (Part::F(d), Vals::F(s)) => d[start..start + n].copy_from_slice(&s[..n]),
            (Part::I(d), Vals::I(s)) => d[start..start + n].copy_from_slice(&s[..n]),
            (Part::U(d), Vals::U(s)) => d[start..start + n].copy_from_slice(&s[..n]),
            (Part::B(d), Vals::B(s)) => d[start..start + n].copy_from_slice(&s[..n]),
            _ => return Err(KindMismatch),
        }
        Ok(())
    }
}

/// Output elements `start..end` of the map (in row-major order): `run_range_in` compiled for AVX2 where the
/// CPU has it (the per-lane index arithmetic is 64-bit integer work the baseline's SSE2 emulates), the same
/// results either way.
fn run_range(
    plan: &Plan,
    out_shape: &[usize],
    inputs: &[&Val],
    start: usize,
    end: usize,
    out: &mut Part<'_>,
) -> Result<(), String> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { run_range_avx2(plan, out_shape, inputs, start, end, out) };
    }
    run_range_in(plan, out_shape, inputs, start, end, out)
}

/// A map whose value, folded, is one load at undivided indices of the output variables (an im2col factor of
/// a contraction, a padded shift, a transpose written by hand): every element read along runs of the
/// variable of largest extent (a batch, for a convolution's factors), where each index that variable does
/// not move is checked once per run and the others per element (a run's in-range part found once, then
/// copied). An input read many times over whose axis the runs go along is indexed by that variable alone (a
/// convolution's batch) is first copied with that axis innermost, so the runs read contiguously. The output
/// is written at its row-major positions whatever the order of the runs. `None` for any other map, and
/// where a load without default leaves its input (the general path reports that).
fn gather_map(plan: &Plan, out_shape: &[usize], inputs: &[&Val], out: &mut Vals) -> Option<()> {
    let Step::Load(lp) = plan.steps.get(plan.body)? else { return None };
    if !plan.derived.is_empty() {
        return None;
    }
    if lp.axes.iter().any(|a| a.div != 1 || !a.loop_terms.is_empty()) || out_shape.len() != plan.rank {
        return None;
    }
    let input = inputs.get(lp.input)?;
    let total: usize = out_shape.iter().product();
    let size: usize = input.shape.iter().product();
    let along = Runs::along(out_shape);
    // An input read many times over, whose axis the runs go along is not its innermost (a convolution's
    // batch axis): read from a copy with that axis moved innermost, so each run is a contiguous read.
    let batch_axis = lp
        .axes
        .iter()
        .position(|a| {
            let mut terms = a.lane_terms.iter().filter(|t| t.1 != 0);
            terms.next() == Some(&(along, 1)) && terms.next().is_none() && a.offset == 0 && a.stride != 1
        })
        .filter(|&ax| {
            let reads_along = |a: &AxisPlan| a.lane_terms.iter().any(|&(v, c)| v == along && c != 0);
            lp.axes.iter().enumerate().all(|(b, a)| b == ax || !reads_along(a))
        })
        .filter(|_| total >= 2 * size && input.shape.len() == lp.axes.len());
    let moved;
    let (input, strides): (&Vals, Vec<i64>) = match batch_axis {
        Some(ax) => {
            let rank = input.shape.len();
            let perm: Vec<usize> = (0..rank).filter(|&a| a != ax).chain([ax]).collect();
            moved = super::layout::permute(&input.data, &input.shape, &perm);
            let moved_shape: Vec<usize> = perm.iter().map(|&p| input.shape[p]).collect();
            let moved_strides = super::layout::strides(&moved_shape);
            let mut strides = vec![0i64; rank];
            for (at, &p) in perm.iter().enumerate() {
                strides[p] = moved_strides[at] as i64;
            }
            (&moved, strides)
        }
        None => (&input.data, lp.axes.iter().map(|a| a.stride).collect()),
    };
    let runs = Runs::new(lp, out_shape, &strides)?;
    match (input, lp.default, out) {
        (Vals::F(d), Some(Lit::F(x)), Vals::F(o)) => runs.read(d, Some(x), o),
        (Vals::F(d), None, Vals::F(o)) => runs.read(d, None, o),
        (Vals::I(d), Some(Lit::I(x)), Vals::I(o)) => runs.read(d, Some(x), o),
        (Vals::I(d), None, Vals::I(o)) => runs.read(d, None, o),
        (Vals::U(d), Some(Lit::U(x)), Vals::U(o)) => runs.read(d, Some(x), o),
        (Vals::U(d), None, Vals::U(o)) => runs.read(d, None, o),
        (Vals::B(d), Some(Lit::B(x)), Vals::B(o)) => runs.read(d, Some(x), o),
        (Vals::B(d), None, Vals::B(o)) => runs.read(d, None, o),
        _ => None,
    }
}

/// `gather_map`'s plan: the load's indices and flat position as affine functions of the output variables.
struct Runs {
    extent: Vec<i64>,
    /// Per variable: each axis' index step, the flat position's step, the output position's step.
    steps: Vec<Vec<i64>>,
    flat_steps: Vec<i64>,
    out_steps: Vec<i64>,
    /// Each axis' index at the origin, and its length.
    offset: Vec<i64>,
    len: Vec<u64>,
    flat_offset: i64,
    /// The variable the runs go along.
    along: usize,
}

impl Runs {
    /// The variable runs go along: the one of largest extent (the last of those).
    fn along(out_shape: &[usize]) -> usize {
        (0..out_shape.len()).max_by_key(|&v| (out_shape[v], v)).unwrap_or(0)
    }

    /// The plan of load `lp` over `out_shape`, its input laid out with `strides` (one per axis).
    fn new(lp: &LoadPlan, out_shape: &[usize], strides: &[i64]) -> Option<Runs> {
        let rank = out_shape.len();
        let extent: Vec<i64> = out_shape.iter().map(|&d| d as i64).collect();
        let mut steps = vec![vec![0i64; lp.axes.len()]; rank];
        let mut flat_steps = vec![0i64; rank];
        let mut flat_offset = 0i64;
        for (a, axis) in lp.axes.iter().enumerate() {
            let stride = *strides.get(a)?;
            for &(v, c) in &axis.lane_terms {
                *steps.get_mut(v)?.get_mut(a)? += c;
                flat_steps[v] = flat_steps[v].wrapping_add(c.wrapping_mul(stride));
            }
            flat_offset = flat_offset.wrapping_add(axis.offset.wrapping_mul(stride));
        }
        let out_steps = super::layout::strides(out_shape).into_iter().map(|s| s as i64).collect();
        let along = Runs::along(out_shape);
        Some(Runs {
            extent,
            steps,
            flat_steps,
            out_steps,
            offset: lp.axes.iter().map(|a| a.offset).collect(),
            len: lp.axes.iter().map(|a| a.len as u64).collect(),
            flat_offset,
            along,
        })
    }

    /// The whole map: parallel over parts that are contiguous in the output (`read_part`).
    fn read<T: Copy + Send + Sync>(&self, data: &[T], default: Option<T>, out: &mut [T]) -> Option<()> {
        use rayon::prelude::*;
        let total: usize = self.extent.iter().map(|&e| e as usize).product();
        if out.len() != total {
            return None;
        }
        if total == 0 {
            return Some(());
        }
        let fill = match default {
            Some(d) => d,
            None => *data.first()?,
        };
        out.fill(fill);
        if self.extent.is_empty() {
            // No variables: one element.
            let inside = self.offset.iter().zip(&self.len).all(|(&i, &l)| (i as u64) < l);
            if inside {
                out[0] = *data.get(self.flat_offset as usize)?;
            } else if default.is_none() {
                return None;
            }
            return Some(());
        }
        // Parts (contiguous in the output) for the pool: every value of variables `0..p` and ranges of
        // variable `p`, the first where that makes enough parts; never splitting the runs' variable.
        let threads = rayon::current_num_threads().max(1);
        let rank = self.extent.len();
        let mut p =
            (0..rank).find(|&p| self.extent[..=p].iter().product::<i64>() >= 2 * threads as i64).unwrap_or(rank - 1);
        if self.along < p {
            p = 0;
        }
        let prefix: i64 = self.extent[..p].iter().product();
        let inner: usize = self.extent[p + 1..].iter().map(|&e| e as usize).product();
        let e = self.extent[p];
        let pieces = (2 * threads).div_ceil(prefix.max(1) as usize).clamp(1, e as usize);
        let per = (e as usize).div_ceil(pieces) as i64;
        let mut parts: Vec<(Vec<i64>, i64, i64, &mut [T])> = Vec::new();
        let mut rest: &mut [T] = out;
        for outer in 0..prefix {
            // `outer` as values of variables `0..p`, last fastest.
            let mut fixed = vec![0i64; p];
            let mut o = outer;
            for v in (0..p).rev() {
                fixed[v] = o % self.extent[v];
                o /= self.extent[v];
            }
            let mut lo = 0;
            while lo < e {
                let hi = (lo + per).min(e);
                let (part, tail) = std::mem::take(&mut rest).split_at_mut((hi - lo) as usize * inner);
                parts.push((fixed.clone(), lo, hi, part));
                rest = tail;
                lo = hi;
            }
        }
        let strict = default.is_none();
        let done: Option<()> = parts
            .into_par_iter()
            .map(|(fixed, lo, hi, part)| self.read_part(data, strict, &fixed, lo, hi, part))
            .collect();
        done
    }

    /// The elements whose variables `0..p` are `prefix` (`p` of them) and variable `p` is in `lo..hi`, into
    /// `out` (exactly those, in row-major order), where the default is already written; `None` where `strict`
    /// (no default) and an index leaves the input.
    fn read_part<T: Copy>(
        &self,
        data: &[T],
        strict: bool,
        prefix: &[i64],
        lo: i64,
        hi: i64,
        out: &mut [T],
    ) -> Option<()> {
        let rank = self.extent.len();
        let p = prefix.len();
        // Variable `p` runs over `lo..hi` here.
        let limit = |v: usize| if v == p { hi } else { self.extent[v] };
        let w = self.along;
        let run = if w == p { hi - lo } else { self.extent[w] };
        let (w_steps, w_flat, w_out) = (&self.steps[w], self.flat_steps[w], self.out_steps[w]);
        // Axes the runs move (checked per element) and the others (checked once per run).
        let moving: Vec<usize> = (0..self.len.len()).filter(|&a| w_steps[a] != 0).collect();
        let fixed: Vec<usize> = (0..self.len.len()).filter(|&a| w_steps[a] == 0).collect();
        let others: Vec<usize> = (p..rank).filter(|&v| v != w).collect();
        let mut var = vec![0i64; rank];
        var[..p].copy_from_slice(prefix);
        var[p] = lo;
        let mut idx: Vec<i64> = self.offset.clone();
        let mut flat = self.flat_offset;
        for (v, &x) in var[..=p].iter().enumerate() {
            idx.iter_mut().zip(&self.steps[v]).for_each(|(i, s)| *i += s * x);
            flat = flat.wrapping_add(self.flat_steps[v].wrapping_mul(x));
        }
        let mut pos = 0i64;
        loop {
            if fixed.iter().all(|&a| (idx[a] as u64) < self.len[a]) {
                let (mut f, mut p) = (flat, pos);
                if moving.is_empty() {
                    for _ in 0..run {
                        *out.get_mut(p as usize)? = *data.get(f as usize)?;
                        f = f.wrapping_add(w_flat);
                        p += w_out;
                    }
                } else {
                    // The run's elements inside every moving axis: `t` in `t0..t1`, where
                    // `0 <= idx + step * t < len`.
                    let (mut t0, mut t1) = (0i64, run);
                    for &a in &moving {
                        let (i, step, len) = (idx[a], w_steps[a], self.len[a] as i64);
                        let ceil = |x: i64, d: i64| -(-x).div_euclid(d);
                        if step > 0 {
                            t0 = t0.max(ceil(-i, step));
                            t1 = t1.min(ceil(len - i, step));
                        } else {
                            t0 = t0.max((i - len).div_euclid(-step) + 1);
                            t1 = t1.min(i.div_euclid(-step) + 1);
                        }
                    }
                    if strict && (t0 > 0 || t1 < run) {
                        return None;
                    }
                    let (mut f, mut p) = (f.wrapping_add(w_flat.wrapping_mul(t0)), p + w_out * t0);
                    if w_flat == 1 && w_out == 1 && t1 > t0 {
                        let (f, p, len) = (f as usize, p as usize, (t1 - t0) as usize);
                        out.get_mut(p..p + len)?.copy_from_slice(data.get(f..f + len)?);
                    } else {
                        for _ in t0..t1 {
                            *out.get_mut(p as usize)? = *data.get(f as usize)?;
                            f = f.wrapping_add(w_flat);
                            p += w_out;
                        }
                    }
                }
            } else if strict {
                return None;
            }
            // The next run: the other variables' odometer, last fastest.
            let mut k = others.len();
            loop {
                let Some(next) = k.checked_sub(1) else { return Some(()) };
                k = next;
                let v = others[k];
                var[v] += 1;
                idx.iter_mut().zip(&self.steps[v]).for_each(|(i, s)| *i += s);
                flat = flat.wrapping_add(self.flat_steps[v]);
                pos += self.out_steps[v];
                if var[v] < limit(v) {
                    break;
                }
                if v == p {
                    return Some(());
                }
                let e = self.extent[v];
                var[v] = 0;
                idx.iter_mut().zip(&self.steps[v]).for_each(|(i, s)| *i -= s * e);
                flat = flat.wrapping_sub(self.flat_steps[v].wrapping_mul(e));
                pos -= self.out_steps[v] * e;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_range_avx2(
    plan: &Plan,
    out_shape: &[usize],
    inputs: &[&Val],
    start: usize,
    end: usize,
    out: &mut Part<'_>,
) -> Result<(), String> {
    run_range_in(plan, out_shape, inputs, start, end, out)
}

#[inline(always)]
fn run_range_in(
    plan: &Plan,
    out_shape: &[usize],
    inputs: &[&Val],
    start: usize,
    end: usize,
    out: &mut Part<'_>,
) -> Result<(), String> {
    let total = end - start;
    let lanes = CHUNK.min(total).max(1);
    let scratch = plan.scratch.take(lanes).unwrap_or_else(|| Scratch::new(plan, lanes));
    let mut exec = Exec { plan, inputs, n: 0, s: scratch };
    let mut done = 0;
    while done < total {
        let n = lanes.min(total - done);
        exec.n = n;
        // Each output variable over the chunk's lanes (elements start + done ..): runs of equal values, one
        // axis at a time.
        for d in 0..plan.rank {
            let size = out_shape.get(d).copied().unwrap_or(1).max(1);
            let inner: usize = out_shape.get(d + 1..).unwrap_or_default().iter().map(|&x| x.max(1)).product();
            let pos = start + done;
            let (mut value, mut left) = ((pos / inner) % size, inner - pos % inner);
            let vars = &mut exec.s.lane_vars[d][..n];
            // The values this chunk takes, `first..` for `count` steps (wrapping): their range.
            let (first, mut count) = (value, 0usize);
            if inner == 1 {
                // The last axis: counts up and wraps.
                for x in vars.iter_mut() {
                    *x = value as i64;
                    value = if value + 1 == size { 0 } else { value + 1 };
                }
                count = n;
            } else {
                let mut l = 0;
                while l < n {
                    let run = left.min(n - l);
                    vars[l..l + run].fill(value as i64);
                    l += run;
                    value = if value + 1 == size { 0 } else { value + 1 };
                    left = inner;
                    count += 1;
                }
            }
            exec.s.lane_ranges[d] =
                if first + count > size { (0, size as i64 - 1) } else { (first as i64, (first + count) as i64 - 1) };
        }
        exec.derive_lanes();
        exec.prepare_loads();
        exec.run_block(0)?;
        out.copy_at(done, &exec.s.bufs[plan.body], n).map_err(mismatch)?;
        done += n;
    }
    plan.scratch.keep(exec.s);
    Ok(())
}

/// The working memory of `Exec` for chunks of `lanes` lanes: every buffer is written before it is read
/// within a chunk, so one left by an earlier range (or run) serves the next as it is.
struct Scratch {
    lanes: usize,
    bufs: Vec<Vals>,
    /// Output variable values per lane.
    lane_vars: Vec<Vec<i64>>,
    /// Current values of reduction variables.
    loop_vals: Vec<i64>,
    /// Each lane variable's `(min, max)` over the chunk (output variables': set where they are filled).
    lane_ranges: Vec<(i64, i64)>,
    loads: Vec<LoadLanes>,
    /// For each `Fill` step, how many lanes of its buffer hold its constant.
    filled: Vec<usize>,
}

impl Scratch {
    fn new(plan: &Plan, lanes: usize) -> Scratch {
        Scratch {
            lanes,
            bufs: plan
                .dtypes
                .iter()
                .zip(&plan.used)
                .map(|(&d, &u)| Vals::zeros(d, if u { lanes } else { 0 }))
                .collect(),
            lane_vars: vec![vec![0; lanes]; plan.rank + plan.derived.len()],
            loop_vals: vec![0; plan.extents.len()],
            lane_ranges: vec![(0, 0); plan.rank + plan.derived.len()],
            filled: vec![0; plan.steps.len()],
            loads: plan
                .steps
                .iter()
                .zip(&plan.used)
                .map(|(s, &used)| match s {
                    Step::Load(lp) if lp.shared.is_none() && used => LoadLanes {
                        idx: vec![vec![0; lanes]; lp.axes.len()],
                        indexed: false,
                        flat: vec![0; lanes],
                        lo: vec![0; lp.axes.len()],
                        hi: vec![0; lp.axes.len()],
                        uniform: vec![0; lp.axes.len()],
                        pos: vec![0; lanes],
                        acc: vec![0; lanes],
                    },
                    _ => LoadLanes::default(),
                })
                .collect(),
        }
    }
}

/// A plan's `Scratch`es between ranges: a map planned once and run many times (`MapPlan`) allocates and
/// zeroes its working memory once per worker rather than per run.
#[derive(Default)]
struct Scratches(std::sync::Mutex<Vec<Scratch>>);

impl Scratches {
    /// Kept at most: one per worker of a large pool is plenty.
    const KEPT: usize = 16;

    fn take(&self, lanes: usize) -> Option<Scratch> {
        let mut kept = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let i = kept.iter().position(|s| s.lanes == lanes)?;
        Some(kept.swap_remove(i))
    }

    fn keep(&self, scratch: Scratch) {
        let mut kept = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if kept.len() < Self::KEPT {
            kept.push(scratch);
        }
    }
}

fn mismatch(_: KindMismatch) -> String {
    "internal error: a scalar node's operands have the wrong storage kind".to_string()
}

/// What to do for one scalar node.
enum Step {
    Load(LoadPlan),
    /// An output index variable: different in every lane.
    LaneVar(usize),
    /// A reduction variable: the same in every lane.
    LoopVar(usize),
    /// Index arithmetic that is exactly `offset + sum(coef * lane) + sum(coef * loop variable)` in `i32`
    /// (`fold::Folded::affine`): one step for a chain of adds and multiplies.
    Affine {
        lanes: Vec<(usize, i64)>,
        loops: Vec<(usize, i64)>,
        offset: i64,
    },
    Fill(Lit),
    Unary(crate::ops::UnaryOp, usize),
    Binary(crate::ops::BinaryOp, usize, usize),
    Select(usize, usize, usize),
    Cast(usize),
    Reduce {
        op: ReduceOp,
        vars: Vec<usize>,
        body: usize,
        block: usize,
        count: usize,
    },
}

/// A lane variable computed from the output variables: `op(offset + sum(coef * v))`.
#[derive(Clone, Debug, PartialEq)]
struct Derived {
    terms: Vec<(usize, i64)>,
    offset: i64,
    op: PinOp,
}

struct LoadPlan {
    input: usize,
    axes: Vec<AxisPlan>,
    default: Option<Lit>,
    /// The flat position's part that lane variables give, as `flat_offset + sum(coef * lane)` (wrapping):
    /// each axis' offset and lane terms times its stride, merged by lane.
    flat_offset: i64,
    flat_terms: Vec<(usize, i64)>,
    /// An earlier load whose axes are these (same lengths, strides and indices): its per-chunk state is
    /// this one's too.
    shared: Option<usize>,
}

/// One index of a load: `offset + sum(coef * var)`, split by kind of variable.
#[derive(PartialEq)]
struct AxisPlan {
    len: i64,
    stride: i64,
    offset: i64,
    lane_terms: Vec<(usize, i64)>,
    loop_terms: Vec<(usize, i64)>,
    /// The exact divisor (`Affine::div`).
    div: i64,
}

struct Plan {
    /// Output variables; lane variable `rank + j` is `derived[j]`.
    rank: usize,
    /// Lane variables computed from the output variables: the reduction variables their sums' guards pin to
    /// one value per element (`fold::Folded::pins`), no longer looped over, and the quotients that divided
    /// indices of a pinned variable are.
    derived: Vec<Derived>,
    extents: Vec<usize>,
    dtypes: Vec<DType>,
    steps: Vec<Step>,
    /// Scalar nodes per block, in index order; block 0 runs once per chunk, the others per reduction step.
    blocks: Vec<Vec<usize>>,
    /// Whether each scalar node is in a block (only those get buffers).
    used: Vec<bool>,
    body: usize,
    /// Working memory left by earlier ranges.
    scratch: Scratches,
}

fn eval_dim(dim: &Dim, syms: &[i64]) -> Result<i64, String> {
    dim.eval(&|s| syms.get(s.0 as usize).copied().unwrap_or(0))
        .ok_or_else(|| "dimension arithmetic overflows 64-bit integers".to_string())
}

impl Plan {
    fn build(map: &MapOps, out_shape: &[usize], shapes: &[&[usize]], syms: &[i64]) -> Result<Plan, String> {
        Plan::build_pinned(map, out_shape, shapes, syms, true)
    }

    /// `build`, pinning the reduction variables folding pins only when `pin` (tests compare both ways).
    fn build_pinned(
        map: &MapOps,
        out_shape: &[usize],
        shapes: &[&[usize]],
        syms: &[i64],
        pin: bool,
    ) -> Result<Plan, String> {
        let rank = out_shape.len();
        let mut extents = Vec::with_capacity(map.extents.len());
        for (v, e) in map.extents.iter().enumerate() {
            let value = eval_dim(e, syms)?;
            if value < 1 {
                return Err(format!("index variable v{v} has extent {value}; every extent must be at least 1"));
            }
            extents.push(usize::try_from(value).map_err(|_| format!("extent of v{v} is too large"))?);
        }
        let len = map.exprs.len();
        let mut dtypes = Vec::with_capacity(len);
        let mut steps = Vec::with_capacity(len);
        let mut free: Vec<Vec<usize>> = Vec::with_capacity(len);
        // Index arithmetic the variables' ranges decide, folded first: a decided statement is a constant,
        // and operands are read through their aliases.
        let folded = super::fold::fold(map, &extents, syms, shapes);
        let pins = if pin { folded.pins(map, &extents, syms, rank) } else { Vec::new() };
        // What a pin decides (its guard's conjuncts hold at the pinned value) folds in turn.
        let holds: Vec<usize> = pins.iter().flat_map(|p| p.holds.iter().copied()).collect();
        let folded =
            if holds.is_empty() { folded } else { super::fold::fold_assuming(map, &extents, syms, shapes, &holds) };
        let mut derived: Vec<Derived> = pins
            .iter()
            .map(|p| Derived {
                terms: p.terms.iter().map(|&(v, c)| (v as usize, c)).collect(),
                offset: p.offset,
                op: p.op,
            })
            .collect();
        let pinned: Vec<(usize, usize)> = pins.iter().enumerate().map(|(j, p)| (p.var as usize, rank + j)).collect();
        // The lane a variable varies along, for output and pinned variables.
        let lane_of = |v: usize| {
            if v < rank { Some(v) } else { pinned.iter().find(|&&(p, _)| p == v).map(|&(_, lane)| lane) }
        };
        let at = |r: &crate::program::ScalarRef| folded.alias.get(r.index()).copied().unwrap_or(r.index());
        for (s, snode) in map.exprs.iter().enumerate() {
            let dtype = snode.dtype;
            let mut f: BTreeSet<usize> = BTreeSet::new();
            if let Some(lit) = folded.known[s]
                && !matches!(snode.expr, ScalarOp::Load { .. } | ScalarOp::Reduce { .. })
            {
                dtypes.push(dtype);
                steps.push(Step::Fill(lit));
                free.push(Vec::new());
                continue;
            }
            if let (DType::I32, ScalarOp::Binary(..)) = (dtype, &snode.expr)
                && let Some((terms, offset)) = folded.affine(s)
            {
                let (mut lanes, mut loops) = (Vec::new(), Vec::new());
                for (v, c) in terms {
                    let v = v as usize;
                    if v >= extents.len() {
                        return Err(format!("s{s} reads v{v}, which has no extent"));
                    }
                    f.insert(v);
                    match lane_of(v) {
                        Some(lane) => lanes.push((lane, c)),
                        None => loops.push((v, c)),
                    }
                }
                dtypes.push(dtype);
                steps.push(Step::Affine { lanes, loops, offset });
                free.push(f.into_iter().collect());
                continue;
            }
            let step = match &snode.expr {
                ScalarOp::Load { input, indices, default } => {
                    let shape =
                        *shapes.get(*input).ok_or_else(|| format!("s{s} loads input {input}, which does not exist"))?;
                    let strides = super::layout::strides(shape);
                    let mut axes = Vec::with_capacity(indices.len());
                    for ((affine, &len), &stride) in indices.iter().zip(shape).zip(&strides) {
                        let offset = eval_dim(&affine.offset, syms)?;
                        let mut reach = (offset as i128).abs();
                        let (mut lane_terms, mut loop_terms) = (Vec::new(), Vec::new());
                        for (var, coef) in &affine.terms {
                            let v = var.0 as usize;
                            let c = eval_dim(coef, syms)?;
                            let extent =
                                *extents.get(v).ok_or_else(|| format!("s{s} reads v{v}, which has no extent"))?;
                            reach += (c as i128).abs() * (extent as i128 - 1);
                            f.insert(v);
                            match lane_of(v) {
                                Some(lane) => lane_terms.push((lane, c)),
                                None => loop_terms.push((v, c)),
                            }
                        }
                        if reach >= INDEX_LIMIT {
                            return Err(format!("s{s}: index arithmetic of a load overflows 64-bit integers"));
                        }
                        let mut div = affine.div.max(1);
                        let mut offset = offset;
                        // A divided index whose numerator is `L ± v`, `v` pinned to `∓L mod div`: always exact,
                        // the quotient `±floor(∓L / div)` is a lane of its own and the index is undivided.
                        if let Some((lane, sign)) = quotient(&mut derived, rank, &lane_terms, offset, div)
                            && loop_terms.is_empty()
                        {
                            (lane_terms, offset, div) = (vec![(lane, sign)], 0, 1);
                        }
                        // `(2 * v) / 2` is `v`: a divisor of every coefficient and of the offset divides exactly.
                        if div > 1
                            && offset % div == 0
                            && lane_terms.iter().chain(&loop_terms).all(|&(_, c)| c % div == 0)
                        {
                            offset /= div;
                            for (_, c) in lane_terms.iter_mut().chain(loop_terms.iter_mut()) {
                                *c /= div;
                            }
                            div = 1;
                        }
                        axes.push(AxisPlan {
                            len: len as i64,
                            stride: stride as i64,
                            offset,
                            lane_terms,
                            loop_terms,
                            div,
                        });
                    }
                    let mut flat_offset = 0i64;
                    let mut flat_terms: Vec<(usize, i64)> = Vec::new();
                    for axis in &axes {
                        flat_offset = flat_offset.wrapping_add(axis.offset.wrapping_mul(axis.stride));
                        for &(lane, c) in &axis.lane_terms {
                            match flat_terms.iter_mut().find(|(l, _)| *l == lane) {
                                Some((_, k)) => *k = k.wrapping_add(c.wrapping_mul(axis.stride)),
                                None => flat_terms.push((lane, c.wrapping_mul(axis.stride))),
                            }
                        }
                    }
                    flat_terms.retain(|&(_, c)| c != 0);
                    let default = default.map(|d| Lit::from_scalar(d, dtype));
                    Step::Load(LoadPlan { input: *input, axes, default, flat_offset, flat_terms, shared: None })
                }
                ScalarOp::Var(var) => {
                    let v = var.0 as usize;
                    let extent = *extents.get(v).ok_or_else(|| format!("s{s} reads v{v}, which has no extent"))?;
                    if Lit::from_int(extent as i64 - 1, dtype).is_none() {
                        return Err(format!(
                            "s{s}: v{v} goes up to {}, which does not fit {}",
                            extent - 1,
                            dtype.name()
                        ));
                    }
                    f.insert(v);
                    match lane_of(v) {
                        Some(lane) => Step::LaneVar(lane),
                        None => Step::LoopVar(v),
                    }
                }
                ScalarOp::Dim(dim) => {
                    let value = eval_dim(dim, syms)?;
                    let lit = Lit::from_int(value, dtype)
                        .ok_or_else(|| format!("s{s}: dimension value {value} does not fit {}", dtype.name()))?;
                    Step::Fill(lit)
                }
                ScalarOp::Const(c) => Step::Fill(Lit::from_scalar(*c, dtype)),
                ScalarOp::Unary(op, a) => {
                    f.extend(free[at(a)].iter().copied());
                    Step::Unary(*op, at(a))
                }
                ScalarOp::Binary(op, a, b) => {
                    f.extend(free[at(a)].iter().chain(&free[at(b)]).copied());
                    Step::Binary(*op, at(a), at(b))
                }
                ScalarOp::Select { cond, on_true, on_false } => {
                    for o in [cond, on_true, on_false] {
                        f.extend(free[at(o)].iter().copied());
                    }
                    Step::Select(at(cond), at(on_true), at(on_false))
                }
                ScalarOp::Cast(a) => {
                    f.extend(free[at(a)].iter().copied());
                    Step::Cast(at(a))
                }
                ScalarOp::Reduce { op, vars, body } => {
                    // A pinned variable is a lane variable now: its sum has one term for it.
                    let vars: Vec<usize> =
                        vars.iter().map(|v| v.0 as usize).filter(|&v| lane_of(v).is_none()).collect();
                    let mut count: usize = 1;
                    for &v in &vars {
                        let extent =
                            *extents.get(v).ok_or_else(|| format!("s{s} reduces over v{v}, which has no extent"))?;
                        count = count.checked_mul(extent).ok_or_else(|| format!("s{s}: reduction size overflows"))?;
                    }
                    f.extend(free[at(body)].iter().copied().filter(|v| !vars.contains(v)));
                    Step::Reduce { op: *op, vars, body: at(body), block: 0, count }
                }
            };
            dtypes.push(dtype);
            steps.push(step);
            free.push(f.into_iter().collect());
        }
        let body = at(&map.body);
        let blocks = place(&mut steps, &free, body);
        // Only the statements placed in a block run (the others are folded away or unused).
        let mut used = vec![false; steps.len()];
        for &s in blocks.iter().flatten() {
            used[s] = true;
        }
        // Loads at the same positions of same-shaped inputs (a gradient reads a tensor and an argmax at one
        // index) share their per-chunk positions: each used load with the first used one of its axes.
        for s in 0..steps.len() {
            let leader = match &steps[s] {
                Step::Load(lp) if used[s] => (0..s).find(|&o| {
                    used[o] && matches!(&steps[o], Step::Load(other) if other.axes == lp.axes && other.shared.is_none())
                }),
                _ => continue,
            };
            if let Step::Load(lp) = &mut steps[s] {
                lp.shared = leader;
            }
        }
        Ok(Plan { rank, derived, extents, dtypes, steps, blocks, used, body, scratch: Scratches::default() })
    }
}

/// For a divided index `(offset + sum(terms)) / div` with exactly one pinned lane `v` (a `Mod(div)` lane of
/// `derived`, numbered from `rank`) at coefficient `c = ±1`, and the rest `L` the pin's own affine value
/// (`v = -c * L mod div`): the numerator `L + c * v` is `div * floor(-c * L / div) * -c`, so the index is
/// `-c * q` for the lane `q = floor(pin / div)`, added to `derived` if new. `(q's lane, -c)`.
fn quotient(
    derived: &mut Vec<Derived>,
    rank: usize,
    terms: &[(usize, i64)],
    offset: i64,
    div: i64,
) -> Option<(usize, i64)> {
    if div <= 1 {
        return None;
    }
    let [(lane, c)] = terms.iter().filter(|&&(l, _)| l >= rank).copied().collect::<Vec<_>>()[..] else {
        return None;
    };
    let pin = derived.get(lane - rank)?;
    if pin.op != PinOp::Mod(div) || c.abs() != 1 {
        return None;
    }
    // The pin's affine value is `-c * L`.
    let mut rest: Vec<(usize, i64)> = terms.iter().filter(|&&(l, _)| l < rank).map(|&(l, k)| (l, -c * k)).collect();
    rest.sort_unstable();
    let mut want = pin.terms.clone();
    want.sort_unstable();
    if rest != want || -c * offset != pin.offset {
        return None;
    }
    let q = Derived { terms: pin.terms.clone(), offset: pin.offset, op: PinOp::Floor(div) };
    let j = derived.iter().position(|d| *d == q).unwrap_or_else(|| {
        derived.push(q);
        derived.len() - 1
    });
    Some((rank + j, -c))
}

/// Assigns every scalar node needed by `body` to the blocks it runs in (see the file comment) and numbers the
/// reductions' blocks. Users come after their operands, so one backward pass sees every request for a node
/// before placing it.
fn place(steps: &mut [Step], free: &[Vec<usize>], body: usize) -> Vec<Vec<usize>> {
    let len = steps.len();
    // Block 0 is the top block; block b > 0 belongs to reduction node owner[b].
    let mut owner = vec![usize::MAX];
    for (s, step) in steps.iter_mut().enumerate() {
        if let Step::Reduce { block, .. } = step {
            *block = owner.len();
            owner.push(s);
        }
    }
    let mut blocks: Vec<Vec<usize>> = vec![Vec::new(); owner.len()];
    let mut requests: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); len];
    let mut placed_in: Vec<Vec<usize>> = vec![Vec::new(); len];
    requests[body].insert(0);
    for s in (0..len).rev() {
        let mut placed = BTreeSet::new();
        let mut work: Vec<usize> = requests[s].iter().copied().collect();
        let mut seen = BTreeSet::new();
        while let Some(b) = work.pop() {
            if !seen.insert(b) {
                continue;
            }
            let r = owner[b];
            let binds_a_free_var = match steps.get(r) {
                Some(Step::Reduce { vars, .. }) => vars.iter().any(|v| free[s].contains(v)),
                _ => true, // the top block
            };
            if binds_a_free_var {
                placed.insert(b);
            } else {
                work.extend(placed_in[r].iter().copied());
            }
        }
        let operands: Vec<usize> = match &steps[s] {
            Step::Unary(_, a) | Step::Cast(a) => vec![*a],
            Step::Binary(_, a, b) => vec![*a, *b],
            Step::Select(c, t, f) => vec![*c, *t, *f],
            _ => vec![],
        };
        for &b in &placed {
            blocks[b].push(s);
            for &o in &operands {
                requests[o].insert(b);
            }
        }
        if let Step::Reduce { body, block, .. } = &steps[s]
            && !placed.is_empty()
        {
            requests[*body].insert(*block);
        }
        placed_in[s] = placed.into_iter().collect();
    }
    for block in &mut blocks {
        block.reverse();
    }
    blocks
}

/// Per-chunk state of one load: the per-lane index of every axis (output-variable part only), its range
/// over the chunk, the per-lane flat offset, and scratch space.
#[derive(Default)]
struct LoadLanes {
    idx: Vec<Vec<i64>>,
    /// Whether `idx` holds this chunk's indices.
    indexed: bool,
    lo: Vec<i64>,
    hi: Vec<i64>,
    flat: Vec<i64>,
    uniform: Vec<i64>,
    pos: Vec<usize>,
    acc: Vec<i64>,
}

struct Exec<'p> {
    plan: &'p Plan,
    inputs: &'p [&'p Val],
    /// Lanes in the current chunk.
    n: usize,
    s: Scratch,
}

impl Exec<'_> {
    /// Each derived lane variable over the chunk, from the output variables'.
    #[inline(always)]
    fn derive_lanes(&mut self) {
        let (rank, n) = (self.plan.rank, self.n);
        let (outputs, derived) = self.s.lane_vars.split_at_mut(rank);
        let (output_ranges, derived_ranges) = self.s.lane_ranges.split_at_mut(rank);
        for ((d, lane), range) in self.plan.derived.iter().zip(derived).zip(derived_ranges) {
            let lane = &mut lane[..n];
            if let [(v, 1)] = d.terms[..]
                && v < rank
            {
                // One output variable (a strided pool's `v mod 2`, `v / 2`): one pass, and the range from
                // the variable's (the op is monotone, or wraps at most once over the chunk).
                let (src, offset) = (&outputs[v][..n], d.offset);
                let (lo, hi) = (output_ranges[v].0 + offset, output_ranges[v].1 + offset);
                *range = match d.op {
                    PinOp::Floor(k) if k.count_ones() == 1 => {
                        let shift = k.trailing_zeros();
                        lane.iter_mut().zip(src).for_each(|(x, &s)| *x = (s + offset) >> shift);
                        (lo >> shift, hi >> shift)
                    }
                    PinOp::Mod(m) if m.count_ones() == 1 => {
                        lane.iter_mut().zip(src).for_each(|(x, &s)| *x = (s + offset) & (m - 1));
                        let (a, b) = (lo & (m - 1), hi & (m - 1));
                        if hi - lo >= m - 1 || a > b { (0, m - 1) } else { (a, b) }
                    }
                    PinOp::Floor(k) => {
                        lane.iter_mut().zip(src).for_each(|(x, &s)| *x = (s + offset).div_euclid(k));
                        (lo.div_euclid(k), hi.div_euclid(k))
                    }
                    PinOp::Mod(m) => {
                        lane.iter_mut().zip(src).for_each(|(x, &s)| *x = (s + offset).rem_euclid(m));
                        let (a, b) = (lo.rem_euclid(m), hi.rem_euclid(m));
                        if hi - lo >= m - 1 || a > b { (0, m - 1) } else { (a, b) }
                    }
                };
                continue;
            }
            affine_lanes(lane, d.offset, &d.terms, outputs);
            match d.op {
                // Powers of two (strided pools) by shift and mask, which round toward minus infinity too.
                PinOp::Floor(k) if k.count_ones() == 1 => lane.iter_mut().for_each(|x| *x >>= k.trailing_zeros()),
                PinOp::Mod(m) if m.count_ones() == 1 => lane.iter_mut().for_each(|x| *x &= m - 1),
                PinOp::Floor(k) => lane.iter_mut().for_each(|x| *x = x.div_euclid(k)),
                PinOp::Mod(m) => lane.iter_mut().for_each(|x| *x = x.rem_euclid(m)),
            }
            *range = lane.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        }
    }

    /// Each load's per-chunk state: the bounds of its indices over the chunk (from the lane variables'
    /// ranges: exact for an index of one variable, else a superset), and its flat positions when it has no
    /// divided index. Per-lane indices are computed only where a load needs them (`lane_indices`).
    #[inline(always)]
    fn prepare_loads(&mut self) {
        let n = self.n;
        // The lane variables' ranges were set as they were filled or derived.
        for ((step, lanes), &used) in self.plan.steps.iter().zip(&mut self.s.loads).zip(&self.plan.used) {
            let Step::Load(lp) = step else { continue };
            if lp.shared.is_some() || !used {
                continue;
            }
            lanes.indexed = false;
            for (ax, axis) in lp.axes.iter().enumerate() {
                let (mut lo, mut hi) = (axis.offset, axis.offset);
                for &(v, c) in &axis.lane_terms {
                    let (a, b) = self.s.lane_ranges[v];
                    (lo, hi) = if c >= 0 { (lo + c * a, hi + c * b) } else { (lo + c * b, hi + c * a) };
                }
                (lanes.lo[ax], lanes.hi[ax]) = (lo, hi);
            }
            if lp.axes.iter().any(|a| a.div != 1) {
                continue;
            }
            affine_lanes(&mut lanes.flat[..n], lp.flat_offset, &lp.flat_terms, &self.s.lane_vars);
        }
    }

    /// Runs block `block`'s steps: `run_block_in`, compiled for AVX2 where the CPU has it.
    fn run_block(&mut self, block: usize) -> Result<(), String> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.run_block_avx2(block) };
        }
        self.run_block_in(block)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_block_avx2(&mut self, block: usize) -> Result<(), String> {
        self.run_block_in(block)
    }

    #[inline(always)]
    fn run_block_in(&mut self, block: usize) -> Result<(), String> {
        let plan = self.plan;
        for &s in &plan.blocks[block] {
            self.step(s)?;
        }
        Ok(())
    }

    #[inline(always)]
    fn step(&mut self, s: usize) -> Result<(), String> {
        let plan = self.plan;
        let n = self.n;
        let dtype = plan.dtypes[s];
        if let Step::Reduce { op, vars, body, block, count } = &plan.steps[s] {
            return self.reduce(s, *op, vars, *body, *block, *count);
        }
        let (before, rest) = self.s.bufs.split_at_mut(s);
        let out = &mut rest[0];
        match &plan.steps[s] {
            // A constant's buffer is written by nothing else: filled once per scratch, for the longest chunk.
            Step::Fill(lit) => {
                if self.s.filled[s] < n {
                    out.fill(*lit, n);
                    self.s.filled[s] = n;
                }
            }
            Step::LoopVar(v) => {
                let lit = Lit::from_int(self.s.loop_vals[*v], dtype).ok_or_else(|| mismatch(KindMismatch))?;
                out.fill(lit, n);
            }
            Step::Affine { lanes, loops, offset } => {
                let Vals::I(o) = out else { return Err(mismatch(KindMismatch)) };
                let o = &mut o[..n];
                let base =
                    loops.iter().fold(*offset, |acc, &(v, c)| acc.wrapping_add(c.wrapping_mul(self.s.loop_vals[v])));
                // Exact in `i32` (the fold's ranges say so), so wrapping partial sums end exact too.
                o.fill(base as i32);
                for &(lane, c) in lanes {
                    let (vals, c) = (&self.s.lane_vars[lane][..n], c as i32);
                    o.iter_mut().zip(vals).for_each(|(o, &x)| *o = o.wrapping_add(c.wrapping_mul(x as i32)));
                }
            }
            Step::LaneVar(v) => {
                let vals = &self.s.lane_vars[*v][..n];
                match out {
                    Vals::I(o) => o[..n].iter_mut().zip(vals).for_each(|(o, &x)| *o = x as i32),
                    Vals::U(o) => o[..n].iter_mut().zip(vals).for_each(|(o, &x)| *o = x as u32),
                    Vals::F(o) => {
                        o[..n].iter_mut().zip(vals).for_each(|(o, &x)| *o = x as f32);
                        finish(dtype, &mut o[..n]);
                    }
                    Vals::B(_) => return Err(mismatch(KindMismatch)),
                }
            }
            Step::Unary(op, a) => kernels::unary(*op, dtype, &before[*a], out, n).map_err(mismatch)?,
            Step::Binary(op, a, b) => {
                kernels::binary(*op, dtype, &before[*a], &before[*b], out, n).map_err(mismatch)?
            }
            Step::Select(c, t, f) => {
                kernels::select(&before[*c], &before[*t], &before[*f], out, n).map_err(mismatch)?
            }
            Step::Cast(a) => kernels::cast(&before[*a], dtype, out, n).map_err(mismatch)?,
            Step::Load(lp) => {
                let input = self.inputs.get(lp.input).ok_or_else(|| mismatch(KindMismatch))?;
                let slot = lp.shared.unwrap_or(s);
                load(s, lp, &mut self.s.loads[slot], &self.s.lane_vars, &self.s.loop_vals, input, out, n)?
            }
            Step::Reduce { .. } => unreachable!("handled above"),
        }
        Ok(())
    }

    fn reduce(
        &mut self,
        s: usize,
        op: ReduceOp,
        vars: &[usize],
        body: usize,
        block: usize,
        count: usize,
    ) -> Result<(), String> {
        let n = self.n;
        let dtype = self.plan.dtypes[s];
        self.s.bufs[s].fill(reduce_init(op, dtype), n);
        for &v in vars {
            self.s.loop_vals[v] = 0;
        }
        loop {
            self.run_block(block)?;
            let (before, rest) = self.s.bufs.split_at_mut(s);
            accumulate(op, &mut rest[0], &before[body], n).map_err(mismatch)?;
            // Next combination of the variables, last fastest.
            let mut k = vars.len();
            loop {
                if k == 0 {
                    reduce_finish(op, dtype, &mut self.s.bufs[s], n, count);
                    return Ok(());
                }
                k -= 1;
                let v = vars[k];
                self.s.loop_vals[v] += 1;
                if (self.s.loop_vals[v] as usize) < self.plan.extents[v] {
                    break;
                }
                self.s.loop_vals[v] = 0;
            }
        }
    }
}

/// `out[l] = offset + sum(coef * lanes[v][l])` for every lane `l` of `out`, wrapping (a load's flat
/// position may wrap where it is out of range; indices and derived lanes stay far inside `i64`).
#[inline(always)]
fn affine_lanes(out: &mut [i64], offset: i64, terms: &[(usize, i64)], lanes: &[Vec<i64>]) {
    out.fill(offset);
    for &(v, c) in terms {
        let vals = &lanes[v][..out.len()];
        if c == 1 {
            out.iter_mut().zip(vals).for_each(|(o, &x)| *o = o.wrapping_add(x));
        } else {
            out.iter_mut().zip(vals).for_each(|(o, &x)| *o = o.wrapping_add(x.wrapping_mul(c)));
        }
    }
}

/// Reads one load for all lanes: a straight gather when every lane is in range, else per-lane checks with
/// the default (or an error naming the first bad lane's index).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn load(
    s: usize,
    lp: &LoadPlan,
    lanes: &mut LoadLanes,
    lane_vars: &[Vec<i64>],
    loop_vals: &[i64],
    input: &Val,
    out: &mut Vals,
    n: usize,
) -> Result<(), String> {
    let mut all_in = true;
    let mut uniform_flat: i64 = 0;
    let lane_indices = |lanes: &mut LoadLanes| {
        if !lanes.indexed {
            for (ax, axis) in lp.axes.iter().enumerate() {
                affine_lanes(&mut lanes.idx[ax][..n], axis.offset, &axis.lane_terms, lane_vars);
            }
            lanes.indexed = true;
        }
    };
    for (ax, axis) in lp.axes.iter().enumerate() {
        let u: i64 = axis.loop_terms.iter().map(|&(v, c)| c * loop_vals[v]).sum();
        lanes.uniform[ax] = u;
        all_in &= lanes.lo[ax] + u >= 0 && lanes.hi[ax] + u < axis.len;
        uniform_flat = uniform_flat.wrapping_add(u.wrapping_mul(axis.stride));
    }
    // A divided axis is read at its quotient, and only where the division is exact.
    let divided = lp.axes.iter().any(|a| a.div != 1);
    if all_in && !divided {
        fn gather<T: Copy>(d: &[T], flat: &[i64], add: i64, o: &mut [T]) {
            for (o, &f) in o.iter_mut().zip(flat) {
                *o = d[f.wrapping_add(add) as usize];
            }
        }
        let flat = &lanes.flat[..n];
        match (&input.data, out) {
            (Vals::F(d), Vals::F(o)) => gather(d, flat, uniform_flat, &mut o[..n]),
            (Vals::I(d), Vals::I(o)) => gather(d, flat, uniform_flat, &mut o[..n]),
            (Vals::U(d), Vals::U(o)) => gather(d, flat, uniform_flat, &mut o[..n]),
            (Vals::B(d), Vals::B(o)) => gather(d, flat, uniform_flat, &mut o[..n]),
            _ => return Err(mismatch(KindMismatch)),
        }
        return Ok(());
    }
    const OUTSIDE: usize = usize::MAX;
    lane_indices(lanes);
    // Axis by axis over the lanes (loops that vectorize): each lane's flat position, or -1 once an axis is
    // out of range (or, divided, not exactly divisible).
    let acc = &mut lanes.acc[..n];
    acc.fill(0);
    for (ax, axis) in lp.axes.iter().enumerate() {
        let (u, idx, len, stride) = (lanes.uniform[ax], &lanes.idx[ax][..n], axis.len, axis.stride);
        let div = axis.div;
        if div == 1 {
            for (a, &i) in acc.iter_mut().zip(idx) {
                let i = i + u;
                *a = if *a >= 0 && i >= 0 && i < len { *a + i * stride } else { -1 };
            }
        } else if div & (div - 1) == 0 {
            // A power-of-two divisor (strided pools and convolutions) by mask and shift.
            let (mask, shift) = (div - 1, div.trailing_zeros());
            for (a, &i) in acc.iter_mut().zip(idx) {
                let num = i + u;
                let q = num >> shift;
                *a = if *a >= 0 && num >= 0 && num & mask == 0 && q < len { *a + q * stride } else { -1 };
            }
        } else {
            for (a, &i) in acc.iter_mut().zip(idx) {
                let num = i + u;
                let ok = *a >= 0 && num >= 0 && num % div == 0 && num / div < len;
                *a = if ok { *a + num / div * stride } else { -1 };
            }
        }
    }
    for (l, (p, &a)) in lanes.pos[..n].iter_mut().zip(acc.iter()).enumerate() {
        *p = if a >= 0 {
            a as usize
        } else if lp.default.is_some() {
            OUTSIDE
        } else {
            let index: Vec<String> =
                lp.axes.iter().enumerate().map(|(ax, _)| (lanes.idx[ax][l] + lanes.uniform[ax]).to_string()).collect();
            let shape: Vec<String> = lp.axes.iter().map(|a| a.len.to_string()).collect();
            return Err(format!(
                "s{s} reads input {} at [{}], outside its shape [{}], and has no default",
                lp.input,
                index.join(", "),
                shape.join(", ")
            ));
        };
    }
    fn gather_or<T: Copy>(d: &[T], pos: &[usize], default: T, o: &mut [T]) {
        for (o, &p) in o.iter_mut().zip(pos) {
            *o = if p == OUTSIDE { default } else { d[p] };
        }
    }
    let pos = &lanes.pos[..n];
    // Without a default every lane is inside here; the fill value is never used.
    let default = lp.default.unwrap_or(match &input.data {
        Vals::F(_) => Lit::F(0.0),
        Vals::I(_) => Lit::I(0),
        Vals::U(_) => Lit::U(0),
        Vals::B(_) => Lit::B(false),
    });
    match (&input.data, out, default) {
        (Vals::F(d), Vals::F(o), Lit::F(x)) => gather_or(d, pos, x, &mut o[..n]),
        (Vals::I(d), Vals::I(o), Lit::I(x)) => gather_or(d, pos, x, &mut o[..n]),
        (Vals::U(d), Vals::U(o), Lit::U(x)) => gather_or(d, pos, x, &mut o[..n]),
        (Vals::B(d), Vals::B(o), Lit::B(x)) => gather_or(d, pos, x, &mut o[..n]),
        _ => return Err(mismatch(KindMismatch)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Affine, BinaryOp, Scalar, VarId};
    use crate::program::{OpRef, ScalarNode, ScalarRef};
    use proptest::prelude::*;

    /// Two loads at one index of two same-shaped inputs share their per-chunk positions and still read
    /// their own data: `out[u0, u1] = sum[v < 3] x[u0, u1 + v - 1] * y[u0, u1 + v - 1]` (defaults 0 and
    /// 2), against loops; over several chunks, and from a start inside a row.
    #[test]
    fn loads_at_one_index_read_their_own_inputs() {
        let (rows, cols) = (40usize, 37usize);
        let index = || {
            vec![
                Affine::new(vec![(VarId(0), Dim::constant(1))], Dim::constant(0)),
                Affine::new(vec![(VarId(1), Dim::constant(1)), (VarId(2), Dim::constant(1))], Dim::constant(-1)),
            ]
        };
        let f = |expr| ScalarNode { expr, dtype: DType::F32 };
        let map = MapOps {
            inputs: vec![OpRef(0), OpRef(1)],
            extents: [rows, cols, 3].iter().map(|&e| Dim::constant(e as i64)).collect(),
            exprs: vec![
                f(ScalarOp::Load { input: 0, indices: index(), default: Some(Scalar::Float(0.0)) }),
                f(ScalarOp::Load { input: 1, indices: index(), default: Some(Scalar::Float(2.0)) }),
                f(ScalarOp::Binary(BinaryOp::Mul, ScalarRef(0), ScalarRef(1))),
                f(ScalarOp::Reduce { op: ReduceOp::Sum, vars: vec![VarId(2)], body: ScalarRef(2) }),
            ],
            body: ScalarRef(3),
        };
        let x: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5).collect();
        let y: Vec<f32> = (0..rows * cols).map(|i| 3.0 - i as f32).collect();
        let xv = Val { shape: vec![rows, cols], data: Vals::F(x.clone()) };
        let yv = Val { shape: vec![rows, cols], data: Vals::F(y.clone()) };
        let plan = Plan::build(&map, &[rows, cols], &[&xv.shape, &yv.shape], &[]).unwrap();
        assert!(matches!(&plan.steps[1], Step::Load(lp) if lp.shared == Some(0)));
        let got = run_map(&map, DType::F32, &[rows, cols], &[&xv, &yv], &[]).unwrap();
        let mut want = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                let mut sum = 0.0f32;
                for v in 0..3 {
                    let j = c as i64 + v - 1;
                    let (a, b) = if (0..cols as i64).contains(&j) {
                        (x[r * cols + j as usize], y[r * cols + j as usize])
                    } else {
                        (0.0, 2.0)
                    };
                    sum += a * b;
                }
                want.push(sum);
            }
        }
        let from = 500;
        let part = range(&plan, DType::F32, &[rows, cols], &[&xv, &yv], from, rows * cols).unwrap();
        assert_eq!(part, Vals::F(want[from..].to_vec()));
        // Planned once, run into buffers holding earlier values (NaN here), on pools of one and three
        // threads (one range, three ranges): every element is written.
        let planned = MapPlan::new(&map, &[rows, cols], &[&xv.shape, &yv.shape], &[]).unwrap();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for _ in 0..2 {
                let used = Vals::F(vec![f32::NAN; rows * cols]);
                let again = pool.install(|| planned.run_into(DType::F32, &[&xv, &yv], used)).unwrap();
                assert_eq!(again, Vals::F(want.clone()), "{threads} thread(s)");
            }
        }
        // A buffer of another length or kind is refused.
        assert!(planned.run_into(DType::F32, &[&xv, &yv], Vals::F(vec![0.0; 3])).is_err());
        assert!(planned.run_into(DType::F32, &[&xv, &yv], Vals::I(vec![0; rows * cols])).is_err());
        assert_eq!(got, Vals::F(want));
    }

    /// Elements `start..end` of the map planned as `plan`, as a buffer of their own.
    fn range(
        plan: &Plan,
        dtype: DType,
        out_shape: &[usize],
        inputs: &[&Val],
        start: usize,
        end: usize,
    ) -> Result<Vals, String> {
        let mut out = Vals::zeros(dtype, end - start);
        for mut part in Part::split(&mut out, end - start) {
            run_range_in(plan, out_shape, inputs, start, end, &mut part)?;
        }
        Ok(out)
    }

    proptest! {
        /// A map that is one load (`gather_map`, runs along the variable of largest extent) equals the general
        /// lane-at-a-time evaluation: coefficients of either sign, indices outside the input (the default),
        /// several output variables per axis, and (`batch`) a first axis indexed by the runs' variable alone,
        /// read from a copy with that axis innermost; split into parts for one thread and for three.
        #[test]
        fn a_gather_map_equals_the_general_evaluation(
            extents in prop::collection::vec(1usize..6, 1..4),
            mut coefs in prop::collection::vec(prop::collection::vec(-2i64..3, 3), 2),
            mut offsets in prop::collection::vec(-3i64..4, 2),
            rows in 1usize..7, cols in 1usize..9, batch in any::<bool>(),
        ) {
            let rank = extents.len();
            if batch {
                let along = Runs::along(&extents);
                coefs[0] = (0..3).map(|v| i64::from(v == along)).collect();
                offsets[0] = 0;
            }
            let indices = (0..2)
                .map(|a| {
                    let terms = (0..rank).map(|v| (VarId(v as u32), Dim::constant(coefs[a][v]))).collect();
                    Affine::new(terms, Dim::constant(offsets[a]))
                })
                .collect();
            let map = MapOps {
                inputs: vec![OpRef(0)],
                extents: extents.iter().map(|&e| Dim::constant(e as i64)).collect(),
                exprs: vec![ScalarNode {
                    expr: ScalarOp::Load { input: 0, indices, default: Some(Scalar::Float(-7.5)) },
                    dtype: DType::F32,
                }],
                body: ScalarRef(0),
            };
            let input = Val { shape: vec![rows, cols], data: Vals::F((0..rows * cols).map(|i| i as f32).collect()) };
            let plan = Plan::build(&map, &extents, &[&input.shape], &[]).unwrap();
            let total: usize = extents.iter().product();
            let general = range(&plan, DType::F32, &extents, &[&input], 0, total).unwrap();
            // Split into parts for pools of several sizes.
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                // Into a buffer holding earlier values: every element is written.
                let mut fast = Vals::F(vec![f32::NAN; total]);
                pool.install(|| gather_map(&plan, &extents, &[&input], &mut fast)).expect("a gather map");
                prop_assert_eq!(&fast, &general);
            }
        }

        /// Index arithmetic (`c0 * u0 + c1 * u1 + c2 * v + k`, summed over `v`) equals the same computed
        /// directly with `i32` wrapping: as one affine step where the fold's ranges show it stays in `i32`,
        /// as the statements themselves where it may wrap (coefficients up to `2^30`).
        #[test]
        fn index_arithmetic_equals_its_direct_evaluation(
            coefs in prop::collection::vec(prop::sample::select(vec![-3i64, -1, 0, 1, 2, 5, 1 << 30]), 3),
            k in -5i64..6, extents in (1usize..5, 1usize..6, 1usize..4),
        ) {
            let i = |expr| ScalarNode { expr, dtype: DType::I32 };
            let bin = |op, x: u32, y: u32| ScalarOp::Binary(op, ScalarRef(x), ScalarRef(y));
            let exprs = vec![
                i(ScalarOp::Var(VarId(0))),                       // s0
                i(ScalarOp::Dim(Dim::constant(coefs[0]))),        // s1
                i(bin(BinaryOp::Mul, 1, 0)),                      // s2
                i(ScalarOp::Var(VarId(1))),                       // s3
                i(ScalarOp::Dim(Dim::constant(coefs[1]))),        // s4
                i(bin(BinaryOp::Mul, 3, 4)),                      // s5
                i(bin(BinaryOp::Sub, 2, 5)),                      // s6 = c0 u0 - c1 u1
                i(ScalarOp::Var(VarId(2))),                       // s7
                i(ScalarOp::Dim(Dim::constant(coefs[2]))),        // s8
                i(bin(BinaryOp::Mul, 7, 8)),                      // s9
                i(bin(BinaryOp::Add, 6, 9)),                      // s10
                i(ScalarOp::Dim(Dim::constant(k))),               // s11
                i(bin(BinaryOp::Add, 10, 11)),                    // s12
                i(ScalarOp::Reduce { op: ReduceOp::Sum, vars: vec![VarId(2)], body: ScalarRef(12) }),
            ];
            let (e0, e1, e2) = extents;
            let map = MapOps {
                inputs: vec![],
                extents: [e0, e1, e2].iter().map(|&e| Dim::constant(e as i64)).collect(),
                exprs,
                body: ScalarRef(13),
            };
            let got = run_map(&map, DType::I32, &[e0, e1], &[], &[]).unwrap();
            let c = |x: i64| x as i32;
            let mut want = Vec::new();
            for u0 in 0..e0 as i32 {
                for u1 in 0..e1 as i32 {
                    let mut sum = 0i32;
                    for v in 0..e2 as i32 {
                        let x = c(coefs[0]).wrapping_mul(u0).wrapping_sub(u1.wrapping_mul(c(coefs[1])));
                        sum = sum.wrapping_add(x.wrapping_add(v.wrapping_mul(c(coefs[2]))).wrapping_add(c(k)));
                    }
                    want.push(sum);
                }
            }
            prop_assert_eq!(got, Vals::I(want));
        }

        /// A sum whose guard leaves one term per element (a strided pool's adjoint), evaluated at the pinned
        /// variable only, equals the whole sum bit for bit: `out[u0, u1] = sum[v < e] g ? (x[i] != 1.5 ?
        /// x[i] : 0) : 0` for the three guards folding pins (`(L ± v) % e == 0`, a divided index over `e`,
        /// `0 <= L + c*v < b` with `b <= |c|`), over values with signed zeros, infinities and NaN.
        #[test]
        fn a_pinned_sum_equals_the_whole_sum(
            guard in 0usize..3, e in 2i64..5, sign in prop::sample::select(vec![-1i64, 1]),
            scale in 1i64..4, spread in 0i64..3, offset in -4i64..5, bound in 1i64..4,
            extents in (1usize..7, 1usize..5), from in 0usize..30,
            values in prop::collection::vec(prop::sample::select(vec![
                1.5f32, -2.0, 0.0, -0.0, 3.25, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.5,
            ]), 1..24),
        ) {
            let f = |expr| ScalarNode { expr, dtype: DType::F32 };
            let i = |expr| ScalarNode { expr, dtype: DType::I32 };
            let b = |expr| ScalarNode { expr, dtype: DType::Bool };
            let dim = |c: i64| Dim::constant(c);
            let bin = |op, x: u32, y: u32| ScalarOp::Binary(op, ScalarRef(x), ScalarRef(y));
            // The numerator `L + c*v`, `L = spread * u0 + u1 + offset`, with `c = sign` (or `sign * scale` for
            // the bounds guard, which needs a coefficient of at least `b`).
            let c = if guard == 2 { sign * scale.max(bound) } else { sign };
            let terms = vec![(VarId(0), dim(spread)), (VarId(1), dim(1)), (VarId(2), dim(c))];
            let len = values.len();
            let load = |div: i64| ScalarOp::Load {
                input: 0,
                indices: vec![Affine { terms: terms.clone(), offset: dim(offset), div }],
                default: Some(Scalar::Float(0.0)),
            };
            let mut exprs = vec![
                i(ScalarOp::Var(VarId(0))),                      // s0
                i(ScalarOp::Var(VarId(1))),                      // s1
                i(ScalarOp::Var(VarId(2))),                      // s2
                i(ScalarOp::Dim(dim(spread))),                   // s3
                i(bin(BinaryOp::Mul, 0, 3)),                     // s4 = spread * u0
                i(bin(BinaryOp::Add, 4, 1)),                     // s5 = .. + u1
                i(ScalarOp::Dim(dim(offset))),                   // s6
                i(bin(BinaryOp::Add, 5, 6)),                     // s7 = L
                i(ScalarOp::Dim(dim(c))),                        // s8
                i(bin(BinaryOp::Mul, 2, 8)),                     // s9 = c * v
                i(bin(BinaryOp::Add, 7, 9)),                     // s10 = L + c*v
                i(ScalarOp::Dim(dim(0))),                        // s11
                b(bin(BinaryOp::Ge, 10, 11)),                    // s12 = num >= 0
            ];
            let (cond, x) = match guard {
                0 => {
                    exprs.push(i(ScalarOp::Dim(dim(e))));          // s13
                    exprs.push(i(bin(BinaryOp::Rem, 10, 13)));     // s14
                    exprs.push(b(bin(BinaryOp::Eq, 14, 11)));      // s15
                    exprs.push(b(bin(BinaryOp::And, 12, 15)));     // s16
                    exprs.push(f(load(1)));                        // s17: x[num], undivided
                    (16, 17)
                }
                1 => {
                    exprs.push(f(load(e)));                        // s13: x[num / e]
                    (12, 13)
                }
                _ => {
                    exprs.push(i(ScalarOp::Dim(dim(bound))));      // s13
                    exprs.push(b(bin(BinaryOp::Lt, 10, 13)));      // s14
                    exprs.push(b(bin(BinaryOp::And, 12, 14)));     // s15
                    exprs.push(f(ScalarOp::Load {                  // s16: x[u1 + v]
                        input: 0,
                        indices: vec![Affine::new(vec![(VarId(1), dim(1)), (VarId(2), dim(1))], dim(0))],
                        default: Some(Scalar::Float(0.0)),
                    }));
                    (15, 16)
                }
            };
            let n = exprs.len() as u32;
            exprs.extend([
                f(ScalarOp::Const(Scalar::Float(0.0))),                                      // n
                f(ScalarOp::Const(Scalar::Float(1.5))),                                      // n + 1
                b(bin(BinaryOp::Ne, x, n + 1)),                                              // n + 2
                f(ScalarOp::Select { cond: ScalarRef(n + 2), on_true: ScalarRef(x), on_false: ScalarRef(n) }),
                f(ScalarOp::Select { cond: ScalarRef(cond), on_true: ScalarRef(n + 3), on_false: ScalarRef(n) }),
                f(ScalarOp::Reduce { op: ReduceOp::Sum, vars: vec![VarId(2)], body: ScalarRef(n + 4) }),
            ]);
            let map = MapOps {
                inputs: vec![OpRef(0)],
                extents: vec![dim(extents.0 as i64), dim(extents.1 as i64), dim(e)],
                exprs,
                body: ScalarRef(n + 5),
            };
            let input = Val { shape: vec![len], data: Vals::F(values) };
            let out = [extents.0, extents.1];
            let total = extents.0 * extents.1;
            let pinned = Plan::build(&map, &out, &[&input.shape], &[]).unwrap();
            let whole = Plan::build_pinned(&map, &out, &[&input.shape], &[], false).unwrap();
            // Where the pin applies, it is used: when the ranges leave the guard undecided (the bounds guard
            // pins only where the pin stays in range).
            if guard < 2 && offset >= 0 && extents.1 >= e as usize {
                prop_assert!(!pinned.derived.is_empty());
            }
            // Also from an element inside a row (the lane variables' ranges then start mid-axis).
            let from = from.min(total - 1);
            let got = range(&pinned, DType::F32, &out, &[&input], from, total).unwrap();
            let want = range(&whole, DType::F32, &out, &[&input], from, total).unwrap();
            let (Vals::F(got), Vals::F(want)) = (got, want) else { panic!("f32") };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
