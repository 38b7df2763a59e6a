//! proptest: random well-typed programs, run on the GPU and on the interpreter. A case is a list of `u32`
//! choices that a deterministic generator turns into `.tdsl` source (so every case is valid by
//! construction and shrinks toward fewer and earlier choices): a few inputs of random dtype and shape (sizes
//! 1, 2, 3, 5, 7 and a symbolic `S` of 1, 2, 3, 5 or 7), then up to 8 statements, each one op on earlier
//! values: unary and binary arithmetic (with broadcasting and weak literals), comparisons, logic, `where`,
//! casts between all dtypes, permute/transpose, reshape, slice, concat, gather (i32 and u32 indices),
//! `broadcast_to`, padded index notation and windowed index-notation reductions, reductions (with and
//! without `keepdims`), `cumsum`, `argmax`/`argmin` of exact values (ties decided alike) and matmul; literal special operands (`x / 0.0`, `x * 0.0`, `0.0 / x`, `x * inf`,
//! `x + 0.0`, `x - inf` on exact values: infinities, NaN and signed zeros, compared bit for bit); derived
//! dimensions (`y[i: S - k] = x[i + k]`, 0 or 1 for small `S`: a 0 must be refused by both sides, R3.3);
//! then outputs, which may be inputs themselves. f16 inputs are sometimes all subnormals (`k * 2^-24`).
//! (Issue 20: each of these diverged between the GPU and the interpreter.)
//!
//! Every value carries a bound on its magnitude and on the difference between the two sides (first-order
//! error propagation from the op; roundings count one ulp of the magnitude bound, f16 results one f16 ulp):
//! an output is compared within twice its bound, or exactly when no rounding reaches it (ints, bools, layout
//! ops). Ops that would make the comparison meaningless are not generated: floats are compared or cast to
//! ints and bools only when exact, `log`/`sqrt`/`rsqrt`/`pow`/division get arguments kept away from zero
//! (`abs(x) + 0.5`), `exp` and `sin` only small arguments, and nothing may grow past 1e5 or lose more than
//! 1e-3 (f16: 1e-2) of its magnitude to error; f16 roundings count at least the subnormal step 2^-24, so a
//! flushed subnormal is a mismatch. Literal zeros are weak operands like any other; a literal zero float
//! divisor appears only in the special operands above.
//! Each case also checks the optimizer (the verifier accepts every pass's output; the interpreter gives
//! bit-identical results on the optimized graph) and runs both the fused and the unfused program on the GPU,
//! and the fused program on the CPU executor (the same bounds).
//! The configuration is fixed (64 cases, a fixed seed, no failure persistence), so CI is deterministic.

use std::collections::HashMap;
use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError};

use super::{EPS, Tol, gpu, mismatches, run_cpu, run_gpu_with};
use crate::util::{check_text, rendered};
use tdsl_compiler::interp::{self, Tensor};
use tdsl_compiler::ir::DType;
use tdsl_compiler::random::{SplitMix64, seeded_tensor};

fn config() -> Config {
    Config {
        cases: 64,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x7d51_9e3a),
        max_shrink_iters: 400,
        max_shrink_time: 120_000,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_programs_agree(choices in prop::collection::vec(any::<u32>(), 16..240)) {
        run_case(&generate(&choices))?;
    }
}

/// A few fixed recipes, so the generator's reach does not depend on the proptest seed alone; they include
/// what diverged in issue 20: literal zero and infinite operands, f16 subnormal inputs, and derived
/// dimensions (`S - 1`, `S - 2`) that are 0 for some `S` (both sides must refuse) and 1 for others; and
/// `cumsum`, `argmax`/`argmin` (issue 16).
#[test]
fn generated_programs_check_clean() {
    let (mut special, mut subnormal, mut derived, mut refused, mut scans, mut args) = (0, 0, 0, 0, 0, 0);
    for seed in 0..64u64 {
        let mut rng = SplitMix64::new(seed);
        let choices: Vec<u32> = (0..160).map(|_| rng.next_u64() as u32).collect();
        let case = generate(&choices);
        let checked = check_text("random.tdsl", &case.source);
        assert!(checked.diagnostics.is_empty(), "{}\n{}", case.source, rendered(&checked));
        special += usize::from(case.source.contains(" 0.0") || case.source.contains("(1.0 / 0.0)"));
        subnormal += usize::from(case.subnormal_inputs);
        scans += usize::from(case.source.contains("cumsum("));
        args += usize::from(case.source.contains("argmax(") || case.source.contains("argmin("));
        if case.source.contains(": S - ") {
            derived += 1;
            let graph = checked.graphs.into_iter().next().expect("one model");
            refused += usize::from(interp::run(&graph, &case.inputs, &HashMap::new()).is_err());
        }
    }
    assert!(
        special >= 8 && subnormal >= 4 && derived >= 4 && refused >= 1 && scans >= 4 && args >= 4,
        "{special} {subnormal} {derived} {refused} {scans} {args}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Running a case

pub(super) struct Case {
    pub(super) source: String,
    pub(super) inputs: Vec<Tensor>,
    tols: Vec<Tol>,
    /// Some input holds f16 subnormals (`Fill::Subnormal`).
    subnormal_inputs: bool,
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let checked = check_text("random.tdsl", &case.source);
    if !checked.diagnostics.is_empty() {
        return Err(TestCaseError::fail(format!(
            "generated an invalid program:\n{}\n{}",
            case.source,
            rendered(&checked)
        )));
    }
    let graph = checked.graphs.into_iter().next().expect("one model");
    let params = HashMap::new();
    let expected = match interp::run(&graph, &case.inputs, &params) {
        Ok(outputs) => outputs,
        // A derived dimension that reaches 0 (`S - 1` with `S = 1`): both sides refuse it (R3.3).
        Err(e) if e.to_string().contains("must be at least 1") => return both_refuse(&graph, case, &e.to_string()),
        Err(e) => return Err(TestCaseError::fail(format!("interpreter: {e}\n{}", case.source))),
    };
    // The optimizer: the verifier accepts every pass's output, and each keeps the interpreter's results
    // bit for bit (spec G7.1: the passes are exact).
    let stages = crate::util::optimize_stages(&graph)
        .map_err(|e| TestCaseError::fail(format!("the verifier rejects a pass's output: {e}\n{}", case.source)))?;
    for (pass, stage) in &stages {
        let got = interp::run(stage, &case.inputs, &params)
            .map_err(|e| TestCaseError::fail(format!("interpreter after `{pass}`: {e}\n{}", case.source)))?;
        if !crate::util::same_bits(&expected, &got) {
            return Err(TestCaseError::fail(format!(
                "after `{pass}` the interpreter's results differ\n{}",
                case.source
            )));
        }
    }
    // The fused and the unfused program each agree with the interpreter within the case's bounds (so with
    // each other within twice them).
    let mut failures = Vec::new();
    for fuse in [true, false] {
        let actual = run_gpu_with(&graph, &case.inputs, &params, fuse)
            .map_err(|e| TestCaseError::fail(format!("GPU (fuse: {fuse}): {e}\n{}", case.source)))?;
        for f in mismatches("random.tdsl", &graph, &case.inputs, &expected, &actual, &case.tols) {
            failures.push(format!("{} program: {f}", if fuse { "fused" } else { "unfused" }));
        }
    }
    // The CPU executor runs the fused program's ops, within the same bounds.
    let actual = run_cpu(&graph, &case.inputs, &params)
        .map_err(|e| TestCaseError::fail(format!("CPU executor: {e}\n{}", case.source)))?;
    for f in mismatches("random.tdsl", &graph, &case.inputs, &expected, &actual, &case.tols) {
        failures.push(format!("CPU executor: {f}"));
    }
    if failures.is_empty() {
        return Ok(());
    }
    let mut inputs = String::new();
    for t in &case.inputs {
        let _ = writeln!(inputs, "  {t:?}");
    }
    Err(TestCaseError::fail(format!(
        "GPU ({}) or the CPU executor disagrees with the interpreter:\n{}\nprogram:\n{}\ninputs:\n{inputs}",
        gpu().describe(),
        failures.join("\n"),
        case.source
    )))
}

/// The interpreter refused a dimension below 1 (`interp_error`); the fused and the unfused GPU program
/// must refuse it too, before running anything, with the same rule.
fn both_refuse(graph: &tdsl_compiler::ir::Graph, case: &Case, interp_error: &str) -> Result<(), TestCaseError> {
    for fuse in [true, false] {
        match run_gpu_with(graph, &case.inputs, &HashMap::new(), fuse) {
            Err(e) if e.to_string().contains("must be at least 1") => {}
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "the interpreter says `{interp_error}` but the GPU (fuse: {fuse}) says `{e}`\n{}",
                    case.source
                )));
            }
            Ok(outputs) => {
                return Err(TestCaseError::fail(format!(
                    "the interpreter says `{interp_error}` but the GPU (fuse: {fuse}) gave {outputs:?}\n{}",
                    case.source
                )));
            }
        }
    }
    match run_cpu(graph, &case.inputs, &HashMap::new()) {
        Err(e) if e.to_string().contains("must be at least 1") => Ok(()),
        Err(e) => Err(TestCaseError::fail(format!(
            "the interpreter says `{interp_error}` but the CPU executor says `{e}`\n{}",
            case.source
        ))),
        Ok(outputs) => Err(TestCaseError::fail(format!(
            "the interpreter says `{interp_error}` but the CPU executor gave {outputs:?}\n{}",
            case.source
        ))),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The generator

/// Reads choices; past the end every choice is 0 (the first option), so shorter lists are simpler cases.
struct Choices<'a> {
    data: &'a [u32],
    at: usize,
}

impl Choices<'_> {
    fn next(&mut self) -> u32 {
        let v = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        v
    }
    fn below(&mut self, n: usize) -> usize {
        if n <= 1 { 0 } else { self.next() as usize % n }
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u32) -> bool {
        self.next() % 100 < percent
    }
}

/// A dimension `c + s * S`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dm {
    c: i64,
    s: i64,
}

impl Dm {
    fn k(c: i64) -> Dm {
        Dm { c, s: 0 }
    }
    const S: Dm = Dm { c: 0, s: 1 };
    fn is_one(self) -> bool {
        self == Dm::k(1)
    }
    fn value(self, s: i64) -> i64 {
        self.c + self.s * s
    }
    fn add(self, o: Dm) -> Dm {
        Dm { c: self.c + o.c, s: self.s + o.s }
    }
    fn text(self) -> String {
        match (self.c, self.s) {
            (c, 0) => c.to_string(),
            (0, 1) => "S".to_string(),
            (0, s) => format!("{s} * S"),
            (c, 1) if c < 0 => format!("S - {}", -c),
            (c, 1) => format!("S + {c}"),
            (c, s) if c < 0 => format!("{s} * S - {}", -c),
            (c, s) => format!("{s} * S + {c}"),
        }
    }
}

fn shape_text(shape: &[Dm]) -> String {
    shape.iter().map(|d| d.text()).collect::<Vec<_>>().join(", ")
}

/// A value of the program: its dtype and shape, a bound on its magnitude and on |gpu - interp|.
#[derive(Clone, Debug)]
struct Var {
    name: String,
    dtype: DType,
    shape: Vec<Dm>,
    mag: f64,
    err: f64,
}

impl Var {
    fn is_float(&self) -> bool {
        self.dtype.is_float()
    }
    fn exact(&self) -> bool {
        self.err == 0.0
    }
    fn ty(&self) -> String {
        format!("{}[{}]", self.dtype.name(), shape_text(&self.shape))
    }
}

/// How an input's values are made.
#[derive(Clone, Copy)]
enum Fill {
    /// `seeded_tensor`: floats in [-1, 1), fair bools.
    Seeded,
    /// Integers uniform in `lo..=hi`.
    Ints(i64, i64),
    /// f16 subnormals: `k * 2^-24` for `k` uniform in `-1023..=1023` (and so zeros of either sign).
    Subnormal,
}

/// The largest f16 subnormal, `1023 * 2^-24`.
const F16_SUBNORMAL_MAX: f64 = 1023.0 / 16_777_216.0;

struct Gen<'a> {
    c: Choices<'a>,
    /// The value of `S`.
    s: i64,
    inputs: Vec<(Var, Fill)>,
    vars: Vec<Var>,
    /// Values holding infinities, NaN or zeros from literal special operands (`ieee`): exact, compared
    /// bit for bit, and read by no other op (their magnitude has no bound).
    specials: Vec<Var>,
    body: String,
    next: usize,
}

const F16_MAX: f64 = 30000.0;
const MAG_MAX: f64 = 1e5;

/// One rounding of a value of magnitude up to `mag` to `dtype` (f16: one f16 ulp, at least the subnormal
/// step 2^-24, since subnormals round as the interpreter rounds them instead of flushing; f32: one ulp,
/// with EPS covering both the ulp and FMA contraction).
fn rounding(dtype: DType, mag: f64) -> f64 {
    match dtype {
        DType::F16 => (mag / 1024.0).max(1.0 / 16_777_216.0),
        _ => EPS * mag,
    }
}

pub(super) fn generate(data: &[u32]) -> Case {
    let mut c = Choices { data, at: 0 };
    let seed = c.next() as u64;
    let s = c.pick(&[3, 1, 2, 5, 7]);
    let mut g = Gen { c, s, inputs: Vec::new(), vars: Vec::new(), specials: Vec::new(), body: String::new(), next: 0 };
    let first = g.random_shape(3);
    let first_dtype = g.c.pick(&[DType::F32, DType::F32, DType::I32, DType::F16, DType::F32, DType::Bool, DType::U32]);
    g.input(first_dtype, first.clone());
    for _ in 0..g.c.below(3) {
        let shape = g.related_shape(&first);
        let dtype = if g.c.chance(50) {
            first_dtype
        } else {
            g.c.pick(&[DType::F32, DType::I32, DType::Bool, DType::F16, DType::U32])
        };
        g.input(dtype, shape);
    }
    let steps = 2 + g.c.below(12);
    for _ in 0..steps {
        g.step();
    }
    g.finish(seed)
}

impl Gen<'_> {
    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    fn random_dim(&mut self, allow_s: bool) -> Dm {
        let sizes: &[Dm] = if allow_s {
            &[Dm::k(3), Dm::S, Dm::k(1), Dm::k(5), Dm::k(2), Dm::k(7)]
        } else {
            &[Dm::k(3), Dm::k(1), Dm::k(5), Dm::k(2), Dm::k(7)]
        };
        self.c.pick(sizes)
    }

    /// A shape of rank `0..=max_rank` with at most one `S`.
    fn random_shape(&mut self, max_rank: usize) -> Vec<Dm> {
        let rank = [2, 3, 1, 2, 3, 0][self.c.below(6)].min(max_rank);
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            let allow_s = !shape.contains(&Dm::S);
            shape.push(self.random_dim(allow_s));
        }
        shape
    }

    /// A shape that broadcasts with `base`: the same, some dims made 1, a suffix, or one more leading dim.
    fn related_shape(&mut self, base: &[Dm]) -> Vec<Dm> {
        match self.c.below(4) {
            0 => base.to_vec(),
            1 => base.iter().map(|&d| if self.c.chance(40) { Dm::k(1) } else { d }).collect(),
            2 => base[self.c.below(base.len() + 1).min(base.len())..].to_vec(),
            _ if base.len() < 4 => {
                let lead = self.random_dim(!base.contains(&Dm::S));
                std::iter::once(lead).chain(base.iter().copied()).collect()
            }
            _ => base.to_vec(),
        }
    }

    fn input(&mut self, dtype: DType, shape: Vec<Dm>) -> Var {
        let name = self.fresh("in");
        let fill = match dtype {
            DType::I32 => Fill::Ints(-20, 20),
            DType::U32 => Fill::Ints(0, 40),
            DType::F16 if self.c.chance(35) => Fill::Subnormal,
            _ => Fill::Seeded,
        };
        self.input_with(name, dtype, shape, fill)
    }

    fn input_with(&mut self, name: String, dtype: DType, shape: Vec<Dm>, fill: Fill) -> Var {
        let mag = match fill {
            Fill::Seeded => 1.0,
            Fill::Ints(lo, hi) => lo.abs().max(hi.abs()) as f64,
            Fill::Subnormal => F16_SUBNORMAL_MAX,
        };
        let var = Var { name, dtype, shape, mag, err: 0.0 };
        self.inputs.push((var.clone(), fill));
        self.vars.push(var.clone());
        var
    }

    /// A recent value (the latest most likely), optionally only those `keep` accepts.
    fn operand(&mut self, keep: &dyn Fn(&Var) -> bool) -> Option<Var> {
        let candidates: Vec<&Var> = self.vars.iter().rev().filter(|v| keep(v)).collect();
        if candidates.is_empty() {
            return None;
        }
        let i = self.c.below(candidates.len().min(4));
        Some(candidates[i].clone())
    }

    /// Appends `name = expr` as a new value unless its bounds are out of range.
    fn define(&mut self, expr: String, dtype: DType, shape: Vec<Dm>, mag: f64, err: f64) -> bool {
        let limit = if dtype == DType::F16 { F16_MAX } else { MAG_MAX };
        let float = dtype.is_float();
        let relative = if dtype == DType::F16 { 1e-2 } else { 1e-3 };
        if float && (!mag.is_finite() || mag > limit || err > relative * mag.max(1.0)) {
            return false;
        }
        let mag = if float { mag } else { mag.min(4_294_967_296.0) };
        let name = self.fresh("v");
        let _ = writeln!(self.body, "    {name} = {expr}");
        self.vars.push(Var { name, dtype, shape, mag, err: if float { err } else { 0.0 } });
        true
    }

    /// One statement; tries a few op kinds, then falls back to one that always applies.
    fn step(&mut self) {
        for _ in 0..6 {
            let done = match self.c.below(20) {
                0 | 1 => self.unary(),
                2 | 3 => self.binary(),
                4 => self.compare(),
                5 => self.logic(),
                6 => self.select(),
                7 => self.cast(),
                8 => self.permute(),
                9 => self.reshape(),
                10 => self.slice_or_concat(),
                11 => self.gather(),
                12 => self.broadcast_or_pad(),
                13 => self.reduce(),
                14 => self.matmul(),
                15 => self.ieee(),
                16 => self.scan_or_arg(),
                _ => self.shift(),
            };
            if done {
                return;
            }
        }
        let x = self.vars.last().expect("an input").clone();
        let expr = if x.dtype == DType::Bool { format!("!{}", x.name) } else { format!("-{}", x.name) };
        let ok = self.define(expr, x.dtype, x.shape.clone(), x.mag, x.err);
        assert!(ok, "negation keeps the bounds");
    }

    fn unary(&mut self) -> bool {
        let Some(x) = self.operand(&|v| v.dtype != DType::Bool) else { return false };
        let (n, dt, ma, ea) = (x.name.clone(), x.dtype, x.mag, x.err);
        let r = |m: f64| rounding(dt, m);
        if !x.is_float() {
            let (expr, mag) = match self.c.below(3) {
                0 => (format!("-{n}"), ma),
                1 => (format!("abs({n})"), ma),
                _ => (format!("relu({n})"), ma),
            };
            return self.define(expr, dt, x.shape, mag, 0.0);
        }
        let (expr, mag, err) = match self.c.below(13) {
            0 => (format!("-{n}"), ma, ea),
            1 => (format!("abs({n})"), ma, ea),
            2 => (format!("relu({n})"), ma, ea),
            3 if x.exact() => (format!("floor({n} * 4.0)"), 4.0 * ma + 1.0, 0.0),
            4 if x.exact() => (format!("ceil({n})"), ma + 1.0, 0.0),
            5 if ma <= 8.0 => {
                let mag = ma.exp();
                (format!("exp({n})"), mag, mag * ea + (3.0 + 2.0 * ma) * r(mag))
            }
            6 => {
                let ea = ea + r(ma + 0.5);
                let mag = (ma + 0.5).ln().max(std::f64::consts::LN_2);
                (format!("log(abs({n}) + 0.5)"), mag, 2.0 * ea + 4.0 * r(mag) + 8.0 * EPS)
            }
            7 => {
                let mag = ma.sqrt();
                (format!("sqrt(abs({n}))"), mag, ea.sqrt() + 4.0 * r(mag))
            }
            8 => {
                let ea = ea + r(ma + 0.5);
                (format!("rsqrt(abs({n}) + 0.5)"), 1.5, 1.5 * ea + 4.0 * r(1.5))
            }
            9 => (format!("tanh({n})"), ma.min(1.0), ea + 8.0 * r(1.0)),
            10 => (format!("sigmoid({n})"), 1.0, ea / 4.0 + 8.0 * r(1.0)),
            11 => (format!("erf({n})"), 1.0, 1.13 * ea + 1.5e-7 + 4.0 * r(1.0)),
            12 if ma <= 16.0 => {
                let f = if self.c.chance(50) { "sin" } else { "cos" };
                (format!("{f}({n})"), 1.0, ea + 8.0 * r(1.0) + 4.0 * EPS * ma)
            }
            _ => return false,
        };
        self.define(expr, dt, x.shape, mag, err)
    }

    /// A partner for a binary op on `x`: a value of the same dtype whose shape broadcasts with `x`'s, and the
    /// result shape; `None` picks a literal instead.
    fn partner(&mut self, x: &Var, keep: &dyn Fn(&Var) -> bool) -> Option<(Var, Vec<Dm>)> {
        let candidates: Vec<(Var, Vec<Dm>)> = self
            .vars
            .iter()
            .rev()
            .filter(|v| v.dtype == x.dtype && keep(v))
            .filter_map(|v| broadcast(&x.shape, &v.shape).map(|s| (v.clone(), s)))
            .collect();
        if candidates.is_empty() || self.c.chance(25) {
            return None;
        }
        let i = self.c.below(candidates.len().min(4));
        Some(candidates[i].clone())
    }

    /// A weak literal of `dtype` and its magnitude. Zero is one: float divisors are kept away from zero
    /// anyway (`abs(b) + 0.5`), and integer `/` and `%` by zero are defined (`x / 0 = x`, `x % 0 = 0`).
    fn literal(&mut self, dtype: DType) -> (String, f64) {
        let text = match dtype {
            DType::F32 | DType::F16 => self.c.pick(&["0.5", "-1.25", "2.0", "3.0", "-0.75", "0.0"]),
            DType::I32 => self.c.pick(&["2", "-3", "7", "-1", "1000", "0"]),
            DType::U32 => self.c.pick(&["2", "3", "7", "4000000000", "1", "0"]),
            DType::Bool => self.c.pick(&["true", "false"]),
        };
        let mag = text.parse::<f64>().map_or(1.0, f64::abs);
        (text.to_string(), mag)
    }

    fn binary(&mut self) -> bool {
        let Some(x) = self.operand(&|v| v.dtype != DType::Bool) else { return false };
        let dt = x.dtype;
        let (y, shape) = match self.partner(&x, &|_| true) {
            Some((y, shape)) => ((y.name.clone(), y.mag, y.err), shape),
            None => {
                let (text, mag) = self.literal(dt);
                ((text, mag, 0.0), x.shape.clone())
            }
        };
        // A literal partner goes on the left now and then: `2.0 - x`.
        let x_triple = (x.name.clone(), x.mag, x.err);
        let literal = y.0.starts_with(|c: char| c.is_ascii_digit() || c == '-');
        let ((a, am, ae), (b, bm, be)) = if literal && self.c.chance(20) { (y, x_triple) } else { (x_triple, y) };
        if !x.is_float() {
            let max = if dt == DType::U32 { 4_294_967_296.0 } else { 2_147_483_648.0 };
            let (expr, mag) = match self.c.below(7) {
                0 => (format!("{a} + {b}"), am + bm),
                1 => (format!("{a} - {b}"), if dt == DType::U32 { max } else { am + bm }),
                2 => (format!("{a} * {b}"), am * bm),
                3 => (format!("{a} / {b}"), am),
                4 => (format!("{a} % {b}"), am.min(bm)),
                5 => (format!("max({a}, {b})"), am.max(bm)),
                _ => (format!("min({a}, {b})"), am.max(bm)),
            };
            return self.define(expr, dt, shape, mag.min(max), 0.0);
        }
        let r = |m: f64| rounding(dt, m);
        let (expr, mag, err) = match self.c.below(9) {
            0 => (format!("{a} + {b}"), am + bm, ae + be + r(am + bm)),
            1 => (format!("{a} - {b}"), am + bm, ae + be + r(am + bm)),
            2 => (format!("{a} * {b}"), am * bm, ae * bm + be * am + ae * be + r(am * bm)),
            3 => {
                // The divisor is kept at least 0.5 away from zero.
                let ed = be + r(bm + 0.5);
                let mag = 2.0 * am;
                (format!("{a} / (abs({b}) + 0.5)"), mag, 2.0 * ae + 4.0 * am * ed + 4.0 * r(mag))
            }
            4 => (format!("max({a}, {b})"), am.max(bm), ae.max(be)),
            5 => (format!("min({a}, {b})"), am.max(bm), ae.max(be)),
            6 if bm <= 3.0 && am <= 4.0 => {
                // (abs(a) + 0.5) ^ b with the base in [0.5, am + 0.5].
                let log_base = (am + 0.5).ln().abs().max(std::f64::consts::LN_2);
                let mag = (bm * log_base).exp();
                let base_err = ae + r(am + 0.5);
                let err = mag * (2.0 * bm * base_err + log_base * be) + 16.0 * r(mag);
                (format!("(abs({a}) + 0.5) ^ {b}"), mag, err)
            }
            7 if ae == 0.0 && be == 0.0 => {
                (format!("{a} % (abs({b}) + 0.5)"), bm + 0.5, 4.0 * r(am + bm + 0.5) + r(bm + 0.5))
            }
            8 => {
                // An integer literal power is repeated multiplication of x alone.
                let k = self.c.pick(&[2, 3]);
                let (ma, ea) = (x.mag, x.err);
                let mag = ma.powi(k);
                let err = k as f64 * ma.max(1.0).powi(k - 1) * ea + k as f64 * r(mag.max(ma));
                return self.define(format!("{} ^ {k}", x.name), dt, x.shape.clone(), mag, err);
            }
            _ => return false,
        };
        self.define(expr, dt, shape, mag, err)
    }

    fn compare(&mut self) -> bool {
        let Some(x) = self.operand(&|v| v.dtype != DType::Bool && v.exact()) else { return false };
        let (y, shape) = match self.partner(&x, &|v| v.exact()) {
            Some((y, shape)) => (y.name, shape),
            None => (self.literal(x.dtype).0, x.shape.clone()),
        };
        let op = self.c.pick(&["<", "<=", ">", ">=", "==", "!="]);
        self.define(format!("{} {op} {y}", x.name), DType::Bool, shape, 1.0, 0.0)
    }

    fn logic(&mut self) -> bool {
        let Some(x) = self.operand(&|v| v.dtype == DType::Bool) else { return false };
        let (y, shape) = match self.partner(&x, &|_| true) {
            Some((y, shape)) => (y.name, shape),
            None => (self.literal(DType::Bool).0, x.shape.clone()),
        };
        let expr = match self.c.below(5) {
            0 => format!("{} && {y}", x.name),
            1 => format!("{} || {y}", x.name),
            2 => format!("{} == {y}", x.name),
            3 => format!("{} != {y}", x.name),
            _ => format!("!({} && !{y})", x.name),
        };
        self.define(expr, DType::Bool, shape, 1.0, 0.0)
    }

    fn select(&mut self) -> bool {
        let Some(x) = self.operand(&|_| true) else { return false };
        let (other, other_mag, other_err, shape) = match self.partner(&x, &|_| true) {
            Some((y, shape)) => (y.name, y.mag, y.err, shape),
            None => {
                let (text, mag) = self.literal(x.dtype);
                (text, mag, 0.0, x.shape.clone())
            }
        };
        let conds: Vec<(Var, Vec<Dm>)> = self
            .vars
            .iter()
            .rev()
            .filter(|v| v.dtype == DType::Bool)
            .filter_map(|v| broadcast(&shape, &v.shape).map(|s| (v.clone(), s)))
            .collect();
        if conds.is_empty() {
            return false;
        }
        let (cond, shape) = conds[self.c.below(conds.len().min(3))].clone();
        let (t, f) = if self.c.chance(50) { (x.name.clone(), other) } else { (other, x.name.clone()) };
        let mag = x.mag.max(other_mag);
        self.define(format!("where({}, {t}, {f})", cond.name), x.dtype, shape, mag, x.err.max(other_err))
    }

    fn cast(&mut self) -> bool {
        let Some(x) = self.operand(&|_| true) else { return false };
        let to = self.c.pick(&[DType::F32, DType::I32, DType::F16, DType::U32, DType::Bool]);
        if to == x.dtype {
            return false;
        }
        let (mag, err) = match (x.dtype, to) {
            (DType::F32, DType::F16) => (x.mag, x.err + rounding(DType::F16, x.mag)),
            (DType::F16, DType::F32) => (x.mag, x.err),
            (DType::F32 | DType::F16, _) if !x.exact() => return false,
            (DType::F32 | DType::F16, DType::I32 | DType::U32) => (x.mag, 0.0),
            (DType::I32 | DType::U32, DType::F16) if x.mag > 2048.0 => return false,
            (DType::I32 | DType::U32, DType::F32 | DType::F16) => (x.mag, 0.0),
            (DType::I32 | DType::U32, DType::I32 | DType::U32) => (4_294_967_296.0, 0.0),
            // From bool, or an exact float to bool.
            _ => (1.0, 0.0),
        };
        let expr = if self.c.chance(20) && x.is_float() && to.is_float() {
            format!("{}({} * 2.0) * 0.5", to.name(), x.name)
        } else {
            format!("{}({})", to.name(), x.name)
        };
        let err = if expr.contains("* 2.0") { err + rounding(to, mag) } else { err };
        self.define(expr, to, x.shape, mag, err)
    }

    fn permute(&mut self) -> bool {
        let Some(x) = self.operand(&|v| v.shape.len() >= 2) else { return false };
        let rank = x.shape.len();
        let mut perm: Vec<usize> = (0..rank).collect();
        for i in (1..rank).rev() {
            let j = self.c.below(i + 1);
            perm.swap(i, j);
        }
        let shape: Vec<Dm> = perm.iter().map(|&p| x.shape[p]).collect();
        let expr = if self.c.chance(30) {
            let mut shape = x.shape.clone();
            shape.swap(rank - 1, rank - 2);
            return self.define(format!("transpose({})", x.name), x.dtype, shape, x.mag, x.err);
        } else {
            format!("permute({}, [{}])", x.name, perm.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "))
        };
        self.define(expr, x.dtype, shape, x.mag, x.err)
    }

    /// Reshape to another factorization of the constant part; a symbolic dim is kept whole.
    fn reshape(&mut self) -> bool {
        let Some(x) = self.operand(&|v| v.shape.iter().filter(|d| d.s != 0).count() <= 1) else { return false };
        let symbolic = x.shape.iter().copied().find(|d| d.s != 0);
        let mut count: i64 = x.shape.iter().filter(|d| d.s == 0).map(|d| d.c).product();
        // Pure multiples of S give their constant to the count and leave S alone.
        let kept = match symbolic {
            Some(d) if d.c == 0 => {
                count *= d.s;
                Some(Dm::S)
            }
            other => other,
        };
        let mut factors = Vec::new();
        let mut rest = count;
        for p in [2, 3, 5, 7] {
            while rest % p == 0 {
                factors.push(p);
                rest /= p;
            }
        }
        if rest > 1 {
            factors.push(rest);
        }
        let axes = 1 + self.c.below(3);
        let mut shape = vec![1i64; axes];
        for f in factors {
            let a = self.c.below(axes);
            shape[a] *= f;
        }
        let mut dims: Vec<Dm> = shape.into_iter().map(Dm::k).collect();
        if let Some(k) = kept {
            let at = self.c.below(dims.len() + 1);
            if k == Dm::S && self.c.chance(40) && !dims.is_empty() {
                // Merge S into a neighbouring axis: `c * S`.
                let a = at.min(dims.len() - 1);
                dims[a] = Dm { c: 0, s: dims[a].c };
            } else {
                dims.insert(at, k);
            }
        }
        let text: Vec<String> = if dims.len() > 1 && self.c.chance(25) {
            let hole = self.c.below(dims.len());
            dims.iter().enumerate().map(|(i, d)| if i == hole { "-1".to_string() } else { d.text() }).collect()
        } else {
            dims.iter().map(|d| d.text()).collect()
        };
        let expr = format!("reshape({}, [{}])", x.name, text.join(", "));
        self.define(expr, x.dtype, dims, x.mag, x.err)
    }

    fn slice_or_concat(&mut self) -> bool {
        let Some(x) = self.operand(&|v| !v.shape.is_empty()) else { return false };
        let rank = x.shape.len();
        let axis = self.c.below(rank);
        let axis_text = if self.c.chance(30) { format!("{}", axis as i64 - rank as i64) } else { axis.to_string() };
        if self.c.chance(50) {
            let d = x.shape[axis];
            if d.s != 0 || d.c < 2 {
                return false;
            }
            let start = self.c.below(d.c as usize) as i64;
            let end = start + 1 + self.c.below((d.c - start) as usize) as i64;
            let step = 1 + self.c.below(3) as i64;
            let mut shape = x.shape.clone();
            shape[axis] = Dm::k((end - start + step - 1) / step);
            let expr = format!("slice({}, axis: {axis_text}, start: {start}, end: {end}, step: {step})", x.name);
            return self.define(expr, x.dtype, shape, x.mag, x.err);
        }
        let fits = |v: &Var| {
            v.dtype == x.dtype
                && v.shape.len() == rank
                && v.shape.iter().zip(&x.shape).enumerate().all(|(i, (a, b))| i == axis || a == b)
        };
        let partners: Vec<Var> = self.vars.iter().rev().filter(|v| fits(v)).cloned().collect();
        let y = partners[self.c.below(partners.len().min(3))].clone();
        let mut operands = vec![x.clone(), y];
        if self.c.chance(30) {
            operands.push(x.clone());
        }
        let mut shape = x.shape.clone();
        shape[axis] = operands[1..].iter().fold(x.shape[axis], |acc, v| acc.add(v.shape[axis]));
        let names: Vec<&str> = operands.iter().map(|v| v.name.as_str()).collect();
        let mag = operands.iter().map(|v| v.mag).fold(0.0, f64::max);
        let err = operands.iter().map(|v| v.err).fold(0.0, f64::max);
        self.define(format!("concat({}, axis: {axis_text})", names.join(", ")), x.dtype, shape, mag, err)
    }

    fn gather(&mut self) -> bool {
        let Some(x) = self.operand(&|v| !v.shape.is_empty()) else { return false };
        let rank = x.shape.len();
        let axis = self.c.below(rank);
        let size = x.shape[axis].value(self.s);
        if size < 1 {
            return false;
        }
        let index_rank = self.c.below(3);
        let index_shape: Vec<Dm> = (0..index_rank).map(|_| Dm::k(self.c.pick(&[3, 1, 2, 4]))).collect();
        let dtype = if self.c.chance(50) { DType::I32 } else { DType::U32 };
        let name = self.fresh("idx");
        let ids = self.input_with(name, dtype, index_shape.clone(), Fill::Ints(0, size - 1));
        let mut shape = x.shape[..axis].to_vec();
        shape.extend(index_shape);
        shape.extend_from_slice(&x.shape[axis + 1..]);
        let expr = if axis == 0 && self.c.chance(50) {
            format!("gather({}, {})", x.name, ids.name)
        } else {
            format!("gather({}, {}, axis: {axis})", x.name, ids.name)
        };
        self.define(expr, x.dtype, shape, x.mag, x.err)
    }

    fn broadcast_or_pad(&mut self) -> bool {
        let Some(x) = self.operand(&|_| true) else { return false };
        if self.c.chance(50) && !x.shape.is_empty() {
            return if x.dtype != DType::Bool && self.c.chance(50) { self.stencil(&x) } else { self.pad(&x) };
        }
        let mut shape: Vec<Dm> = (0..self.c.below(3)).map(|_| Dm::k(self.c.pick(&[2, 1, 3]))).collect();
        for &d in &x.shape {
            shape.push(if d.is_one() && self.c.chance(60) { Dm::k(self.c.pick(&[3, 2, 5])) } else { d });
        }
        let expr = format!("broadcast_to({}, [{}])", x.name, shape_text(&shape));
        self.define(expr, x.dtype, shape, x.mag, x.err)
    }

    /// Index notation: `y[i0: d0, .., ia: da + p, ..] = x[i0, .., ia - q, ..] else c`.
    fn pad(&mut self, x: &Var) -> bool {
        let rank = x.shape.len();
        let axis = self.c.below(rank);
        let p = self.c.below(3) as i64;
        let q = self.c.below(p as usize + 2) as i64;
        let (fill, fill_mag) = match x.dtype {
            DType::F32 | DType::F16 => (self.c.pick(&["0.0", "-1.5", "2.0"]), 2.0),
            DType::I32 => (self.c.pick(&["0", "-7"]), 7.0),
            DType::U32 => (self.c.pick(&["0", "9"]), 9.0),
            DType::Bool => (self.c.pick(&["false", "true"]), 1.0),
        };
        let mut shape = x.shape.clone();
        shape[axis] = shape[axis].add(Dm::k(p));
        let vars: Vec<String> = (0..rank).map(|i| format!("i{i}")).collect();
        let decls: Vec<String> = vars.iter().zip(&shape).map(|(v, d)| format!("{v}: {}", d.text())).collect();
        let reads: Vec<String> = vars
            .iter()
            .enumerate()
            .map(|(i, v)| if i == axis && q > 0 { format!("{v} - {q}") } else { v.clone() })
            .collect();
        let name = self.fresh("v");
        let _ = writeln!(self.body, "    {name}[{}] = {}[{}] else {fill}", decls.join(", "), x.name, reads.join(", "));
        self.vars.push(Var { name, dtype: x.dtype, shape, mag: x.mag.max(fill_mag), err: x.err });
        true
    }

    /// Index notation with a reduction over a window: `y[.., ia: da, ..] = sum[r: w](x[.., ia + r - o, ..]
    /// else 0)` (or max, min, mean, prod), zero-padded at both ends.
    fn stencil(&mut self, x: &Var) -> bool {
        let rank = x.shape.len();
        let axis = self.c.below(rank);
        let w = 1 + self.c.below(3) as i64;
        let o = self.c.below(w as usize) as i64;
        let ops: &[&str] =
            if x.is_float() { &["sum", "max", "mean", "min", "prod"] } else { &["sum", "max", "min", "prod"] };
        let op = self.c.pick(ops);
        let zero = if x.is_float() { "0.0" } else { "0" };
        let vars: Vec<String> = (0..rank).map(|i| format!("i{i}")).collect();
        let decls: Vec<String> = vars.iter().zip(&x.shape).map(|(v, d)| format!("{v}: {}", d.text())).collect();
        let reads: Vec<String> = vars
            .iter()
            .enumerate()
            .map(|(i, v)| if i == axis { format!("{v} + r - {o}") } else { v.clone() })
            .collect();
        let n = w as f64;
        let (ma, ea, dt) = (x.mag, x.err, x.dtype);
        let round = |m: f64| if dt == DType::F16 { rounding(DType::F16, m) } else { 0.0 };
        let (mag, err) = match op {
            "sum" => (n * ma, n * ea + n * EPS * n * ma + round(n * ma)),
            "mean" => (ma, ea + n * EPS * ma + round(ma)),
            "max" | "min" => (ma, ea),
            _ if x.is_float() && ma > 1.25 => return false,
            _ => (ma.max(1.0).powf(n), n * ea * ma.max(1.0).powf(n - 1.0) + n * EPS * ma.max(1.0).powf(n) + round(1.0)),
        };
        let mag = if x.is_float() {
            mag
        } else if op == "sum" || op == "prod" {
            4_294_967_296.0
        } else {
            ma
        };
        let expr_name = self.fresh("v");
        let line = format!(
            "    {expr_name}[{}] = {op}[r: {w}]({}[{}] else {zero})",
            decls.join(", "),
            x.name,
            reads.join(", ")
        );
        let limit = if dt == DType::F16 { F16_MAX } else { MAG_MAX };
        if dt.is_float() && (mag > limit || err > 1e-3 * mag.max(1.0) * if dt == DType::F16 { 10.0 } else { 1.0 }) {
            return false;
        }
        let _ = writeln!(self.body, "{line}");
        self.vars.push(Var {
            name: expr_name,
            dtype: dt,
            shape: x.shape.clone(),
            mag,
            err: if dt.is_float() { err } else { 0.0 },
        });
        true
    }

    /// A literal special operand (issue 20: drivers folded these): `x / 0.0`, `x * 0.0`, `0.0 / x`,
    /// `x * inf`, `x + 0.0` or `x - inf` on a float known exactly or on an earlier special value, so the
    /// result is exact: an infinity, NaN, a zero of either sign or `x` itself.
    fn ieee(&mut self) -> bool {
        let x = if !self.specials.is_empty() && self.c.chance(40) {
            self.specials[self.c.below(self.specials.len())].clone()
        } else {
            match self.operand(&|v| v.is_float() && v.exact()) {
                Some(x) => x,
                None => return false,
            }
        };
        let inf = "(1.0 / 0.0)";
        let n = &x.name;
        let expr = match self.c.below(6) {
            0 => format!("{n} / 0.0"),
            1 => format!("{n} * 0.0"),
            2 => format!("0.0 / {n}"),
            3 => format!("{n} * {inf}"),
            4 => format!("{n} + 0.0"),
            _ => format!("{n} - {inf}"),
        };
        let name = self.fresh("v");
        let _ = writeln!(self.body, "    {name} = {expr}");
        self.specials.push(Var { name, dtype: x.dtype, shape: x.shape, mag: f64::INFINITY, err: 0.0 });
        true
    }

    /// A derived dimension: `y[.., ia: S - k, ..] = x[.., ia + k, ..]` drops the first `k` (1 or 2)
    /// elements of an axis of size `S`, so the result's axis is 0 (an error on both sides, R3.3), 1, or
    /// more, depending on `S`.
    fn shift(&mut self) -> bool {
        let Some(x) = self.operand(&|v| v.shape.contains(&Dm::S)) else { return false };
        let axis = x.shape.iter().position(|&d| d == Dm::S).expect("an axis of size S");
        let k = 1 + self.c.below(2) as i64;
        let mut shape = x.shape.clone();
        shape[axis] = Dm { c: -k, s: 1 };
        let vars: Vec<String> = (0..shape.len()).map(|i| format!("i{i}")).collect();
        let decls: Vec<String> = vars.iter().zip(&shape).map(|(v, d)| format!("{v}: {}", d.text())).collect();
        let reads: Vec<String> =
            vars.iter().enumerate().map(|(i, v)| if i == axis { format!("{v} + {k}") } else { v.clone() }).collect();
        let name = self.fresh("v");
        let _ = writeln!(self.body, "    {name}[{}] = {}[{}]", decls.join(", "), x.name, reads.join(", "));
        self.vars.push(Var { name, dtype: x.dtype, shape, mag: x.mag, err: x.err });
        true
    }

    fn reduce(&mut self) -> bool {
        let Some(x) = self.operand(&|v| !v.shape.is_empty() && v.dtype != DType::Bool) else { return false };
        let rank = x.shape.len();
        let mut axes: Vec<usize> = (0..rank).filter(|_| self.c.chance(50)).collect();
        if axes.is_empty() {
            axes.push(self.c.below(rank));
        }
        let all = axes.len() == rank;
        let n: f64 = axes.iter().map(|&a| x.shape[a].value(self.s) as f64).product();
        let ops: &[&str] =
            if x.is_float() { &["sum", "max", "min", "mean", "prod"] } else { &["sum", "max", "min", "prod"] };
        let op = self.c.pick(ops);
        let keepdims = self.c.chance(30);
        let (ma, ea, dt) = (x.mag, x.err, x.dtype);
        let round = |m: f64| if dt == DType::F16 { rounding(DType::F16, m) } else { 0.0 };
        let (mag, err) = match op {
            "sum" => (n * ma, n * ea + n * EPS * n * ma + round(n * ma)),
            "mean" => (ma, ea + n * EPS * ma + round(ma)),
            "max" | "min" => (ma, ea),
            _ if x.is_float() && (ma > 1.25 || n > 12.0) => return false,
            _ => {
                let m = ma.max(1.0);
                let mag = ma.powf(n);
                (mag, n * ea * m.powf(n - 1.0) + n * EPS * m.powf(n) + round(mag))
            }
        };
        let mag = if x.is_float() {
            mag
        } else if op == "sum" || op == "prod" {
            4_294_967_296.0
        } else {
            ma
        };
        let mut shape = Vec::new();
        for (i, &d) in x.shape.iter().enumerate() {
            if !axes.contains(&i) {
                shape.push(d);
            } else if keepdims {
                shape.push(Dm::k(1));
            }
        }
        let axis_text = if all && self.c.chance(50) {
            String::new()
        } else if axes.len() == 1 {
            format!(", axis: {}", axes[0])
        } else {
            format!(", axis: [{}]", axes.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "))
        };
        let keep_text = if keepdims { ", keepdims: true" } else { "" };
        self.define(format!("{op}({}{axis_text}{keep_text})", x.name), dt, shape, mag, err)
    }

    /// `cumsum` along one axis (bounds as a sum of the axis's length), or `argmax`/`argmin` along one axis or
    /// the whole tensor of an exact operand (a position picked among inexact values could differ where
    /// they nearly tie; exact values tie alike on both sides, and the first position must win on both).
    fn scan_or_arg(&mut self) -> bool {
        let Some(x) = self.operand(&|v| !v.shape.is_empty() && v.dtype != DType::Bool) else { return false };
        let rank = x.shape.len();
        let axis = self.c.below(rank);
        let n = x.shape[axis].value(self.s) as f64;
        let (ma, ea, dt) = (x.mag, x.err, x.dtype);
        if !x.exact() || self.c.chance(50) {
            let round = if dt == DType::F16 { rounding(DType::F16, n * ma) } else { 0.0 };
            let (mag, err) =
                if x.is_float() { (n * ma, n * ea + n * EPS * n * ma + round) } else { (4_294_967_296.0, 0.0) };
            return self.define(format!("cumsum({}, axis: {axis})", x.name), dt, x.shape.clone(), mag, err);
        }
        let op = self.c.pick(&["argmax", "argmin"]);
        if self.c.chance(25) {
            let count: f64 = x.shape.iter().map(|d| d.value(self.s) as f64).product();
            return self.define(format!("{op}({})", x.name), DType::I32, vec![], count, 0.0);
        }
        let keepdims = self.c.chance(30);
        let mut shape = x.shape.clone();
        if keepdims {
            shape[axis] = Dm::k(1);
        } else {
            shape.remove(axis);
        }
        let keep_text = if keepdims { ", keepdims: true" } else { "" };
        self.define(format!("{op}({}, axis: {axis}{keep_text})", x.name), DType::I32, shape, n, 0.0)
    }

    fn matmul(&mut self) -> bool {
        let Some(x) = self.operand(&|v| v.is_float() && !v.shape.is_empty()) else { return false };
        // Its weights are inputs shaped like it, and an input's dimensions must bind (a derived one below
        // 1 would be a binding error, not the dimension error `shift` makes).
        if x.shape.iter().any(|d| d.value(self.s) < 1) {
            return false;
        }
        let rank = x.shape.len();
        let k = x.shape[rank - 1];
        let kv = k.value(self.s) as f64;
        let (ma, ea, dt) = (x.mag, x.err, x.dtype);
        let (expr, shape, mb, eb) = match self.c.below(3) {
            0 if rank >= 2 => {
                let mut shape = x.shape.clone();
                shape[rank - 1] = x.shape[rank - 2];
                (format!("{} @ transpose({})", x.name, x.name), shape, ma, ea)
            }
            1 => {
                let name = self.fresh("w");
                let v = self.input_with(name, dt, vec![k], Fill::Seeded);
                let shape = x.shape[..rank - 1].to_vec();
                (format!("{} @ {}", x.name, v.name), shape, 1.0, 0.0)
            }
            _ => {
                let n = self.c.pick(&[3, 1, 4]);
                let name = self.fresh("w");
                let mut w_shape =
                    if rank >= 3 && self.c.chance(50) { x.shape[..rank - 2].to_vec() } else { Vec::new() };
                w_shape.push(k);
                w_shape.push(Dm::k(n));
                let w = self.input_with(name, dt, w_shape, Fill::Seeded);
                let mut shape = x.shape[..rank - 1].to_vec();
                shape.push(Dm::k(n));
                (format!("{} @ {}", x.name, w.name), shape, 1.0, 0.0)
            }
        };
        let mag = kv * ma * mb;
        let err = kv * (ea * mb + eb * ma + ea * eb)
            + kv * EPS * mag
            + if dt == DType::F16 { rounding(dt, mag) } else { 0.0 };
        self.define(expr, dt, shape, mag, err)
    }

    /// The model text, its inputs and the tolerance of each output.
    fn finish(mut self, seed: u64) -> Case {
        // Outputs: the values no later statement reads (latest first, at most four), so every statement
        // counts, and now and then an input as it is.
        let read: Vec<&str> =
            self.body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
        let inputs: Vec<&str> = self.inputs.iter().map(|(v, _)| v.name.as_str()).collect();
        let mut outputs: Vec<Var> = Vec::new();
        for v in self.specials.iter().rev().chain(self.vars.iter().rev()) {
            let defined = !inputs.contains(&v.name.as_str());
            // A statement's own name occurs once in the body (where it is defined) when nothing reads it.
            if defined && read.iter().filter(|w| **w == v.name).count() == 1 && outputs.len() < 4 {
                outputs.push(v.clone());
            }
        }
        if outputs.is_empty() || self.c.chance(15) {
            let v = self.vars[self.c.below(self.inputs.len())].clone();
            outputs.push(v);
        }
        let args: Vec<String> = self.inputs.iter().map(|(v, _)| format!("{}: {}", v.name, v.ty())).collect();
        let outs: Vec<String> = outputs.iter().enumerate().map(|(i, v)| format!("out{i}: {}", v.ty())).collect();
        let mut source = format!("model random({}) -> ({}) {{\n", args.join(", "), outs.join(", "));
        source.push_str(&self.body);
        for (i, v) in outputs.iter().enumerate() {
            let _ = writeln!(source, "    out{i} = {}", v.name);
        }
        source.push_str("}\n");
        let inputs = self
            .inputs
            .iter()
            .map(|(v, fill)| {
                let shape: Vec<usize> = v.shape.iter().map(|d| d.value(self.s) as usize).collect();
                match *fill {
                    Fill::Seeded => seeded_tensor(&v.name, v.dtype, &shape, seed),
                    Fill::Subnormal => {
                        let mut rng = SplitMix64::new(seed ^ v.name.bytes().fold(11, |h, b| h * 31 + b as u64));
                        let n: usize = shape.iter().product();
                        let values: Vec<f32> =
                            (0..n).map(|_| ((rng.next_u64() % 2047) as f32 - 1023.0) / 16_777_216.0).collect();
                        Tensor::f16_from_f32(&shape, &values)
                    }
                    Fill::Ints(lo, hi) => {
                        let mut rng = SplitMix64::new(seed ^ v.name.bytes().fold(7, |h, b| h * 31 + b as u64));
                        let n: usize = shape.iter().product();
                        let values = (0..n).map(|_| lo + (rng.next_u64() % (hi - lo + 1) as u64) as i64);
                        match v.dtype {
                            DType::U32 => Tensor::u32(&shape, values.map(|x| x as u32).collect()),
                            _ => Tensor::i32(&shape, values.map(|x| x as i32).collect()),
                        }
                    }
                }
            })
            .collect();
        let tols = outputs
            .iter()
            .map(|v| {
                if v.mag.is_infinite() {
                    Tol::Bits
                } else if v.err == 0.0 {
                    Tol::Exact
                } else {
                    Tol::Close { atol: 2.0 * v.err, rtol: 0.0 }
                }
            })
            .collect();
        let subnormal_inputs = self.inputs.iter().any(|(_, fill)| matches!(fill, Fill::Subnormal));
        Case { source, inputs, tols, subnormal_inputs }
    }
}

/// NumPy broadcasting of two shapes (dims equal or literally 1), or `None`.
fn broadcast(a: &[Dm], b: &[Dm]) -> Option<Vec<Dm>> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.len()).checked_sub(rank).map(|j| a[j]);
        let db = (i + b.len()).checked_sub(rank).map(|j| b[j]);
        out.push(match (da, db) {
            (Some(x), Some(y)) if x == y => x,
            (Some(x), Some(y)) if x.is_one() => y,
            (Some(x), Some(y)) if y.is_one() => x,
            (Some(_), Some(_)) => return None,
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => unreachable!("rank is the larger rank"),
        });
    }
    Some(out)
}
