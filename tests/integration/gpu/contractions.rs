//! Matrix products (`@`) on the GPU against the interpreter, over the shapes and layouts where a
//! register-tiled contraction kernel (each invocation computing a block of outputs, with tails where a size
//! is not a multiple of the block) would index wrongly. A proptest draws M, K and N from sizes that are 1,
//! primes (3, 5, 7, 13, 31, 67) or just below, at and above multiples of 4, 8, 16, 32, 64 and 128 (up to
//! 129), a batch and a head count of 1 to 3, and makes each of M, K, N, B and H a symbolic or a constant
//! dimension (a kernel may be specialised for constant sizes); then one layout: `a @ w`, a transposed left,
//! right or both operands, batched `[B, M, K] @ [B, K, N]`, a batch times a matrix and a matrix times a
//! batch (broadcast batch dims), `[B, 1, M, K] @ [H, K, N]`, attention's scores (`[B, H, M, K] @
//! [B, H, K, N]`, both permuted from `[B, S, H, D]`) and context (the right operand permuted, the result
//! permuted back and reshaped to `[B, M, H * N]`), and std/nn's `Linear` (a param weight, transposed, plus
//! a bias); and one epilogue the kernel may fuse: none, `relu(y + bias)`, `y * 0.125 + r` with a residual
//! `r`, `softmax(y)` or `layer_norm(y + r, g, beta)` (these two, when N is constant, one row kernel that
//! caches the product per row).
//! Inputs are seeded values in [-1, 1) from a drawn seed. Fixed tests cover the extremes of every layout:
//! M = 1 (also a rank-1 vector times a matrix), N = 1 (a matrix times a vector), K = 1 (an outer
//! product) and 1 x 1 x 1 (and dot products).
//!
//! Every program runs fused and unfused on the GPU, fused once more with the `gpu` profile (contractions
//! tiled through workgroup memory) where the device's own profile is another, and on the CPU executor with
//! each fused profile's decisions, twice on one loaded model (the second run's products go by panels);
//! each is compared with the interpreter, and fused with unfused, under
//! one tolerance: `Tol::reduction(K)` for a plain product (each of the K accumulation steps may round
//! differently: a tiled or differently ordered sum, a fused multiply-add). Every add after the
//! product (a bias, a residual; `Linear`'s bias) counts as one more step and doubles the tolerance, since
//! the product's error stays absolute while the magnitude the relative part is measured against moves by
//! up to the addend's 1; the factors below multiply this one. `softmax` turns an absolute error of its
//! argument into a relative error of each result and adds the relative errors of its `exp` (a few ulps
//! per unit of argument, and arguments are at most 2K) and of a sum over N: four times
//! `Tol::reduction(K + N)`, as a purely relative tolerance (its results average 1 / N and may be far
//! smaller, so an absolute part of that size would hide a wrong small probability; only a flushed
//! subnormal is allowed for). `layer_norm` divides the error by the row's standard deviation, which the
//! seeded residual keeps near 0.6 or more: eight times `Tol::reduction(K + N)`. Fused and unfused run on
//! the same device with the same kind of roundings, so they must agree within the same tolerance, not
//! twice it. A tail or indexing bug (a lost partial tile, a clamped or wrapped row or column, a skipped
//! tail of K) moves a result by about one product term (around 0.3) or more, far outside every tolerance.
//! With N = 1, `softmax` and `layer_norm` do not depend on the product (a softmax of one value is 1); the
//! fixed tests avoid them there, the proptest draws them like any other case.
//! The proptest configuration is fixed (a fixed seed, no failure persistence), so CI is deterministic.

use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError};

use super::{Tol, gpu, mismatches, run_cpu_twice_for, run_gpu_for, seeded_bindings};
use crate::util::{check_text, rendered};
use tdsl_compiler::interp;

fn config() -> Config {
    Config {
        cases: 96,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0xc0_47ac_7105),
        max_shrink_iters: 200,
        max_shrink_time: 120_000,
        ..Config::default()
    }
}

/// 1, primes, and sizes just below, at and above multiples of the block sizes a tiled kernel may use.
const SIZES: [usize; 21] = [1, 3, 4, 5, 7, 8, 9, 13, 15, 16, 17, 31, 32, 33, 63, 64, 65, 67, 127, 128, 129];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn products_agree_over_shapes_layouts_and_epilogues(
        layout in prop::sample::select(Layout::ALL.to_vec()),
        epilogue in prop::sample::select(Epilogue::ALL.to_vec()),
        [m, k, n] in prop::array::uniform3(prop::sample::select(SIZES.to_vec())),
        [batch, heads] in prop::array::uniform2(1usize..=3),
        symbolic in prop::array::uniform5(any::<bool>()),
        seed in any::<u64>(),
    ) {
        let case = Case::new(layout, epilogue, [m, k, n, batch, heads], symbolic);
        run_program(&case.program(), seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn m_is_one() {
    let rank1 = Rank1 { k: 67, n: 129, ..Rank1::ALL_ONE };
    check_extremes([1, 67, 129, 2, 3], &[rank1.vector_times_matrix(false), rank1.vector_times_matrix(true)]);
}

#[test]
fn n_is_one() {
    let rank1 = Rank1 { m: 129, k: 65, ..Rank1::ALL_ONE };
    check_extremes([129, 65, 1, 2, 3], &[rank1.matrix_times_vector(false), rank1.matrix_times_vector(true)]);
}

/// Products of a few hundred rows with every epilogue (`Linear` among them, its batch folded into 262 rows):
/// the sizes where the CPU executor's products split their rows among threads and its row passes and
/// epilogue trees run over many blocks.
#[test]
fn many_rows() {
    check_extremes([129, 67, 63, 2, 3], &[]);
    let programs: Vec<Program> = Epilogue::ALL
        .iter()
        .map(|&epilogue| Case::new(Layout::Linear, epilogue, [131, 65, 129, 2, 1], [true; 5]).program())
        .collect();
    let failures: Vec<String> = programs.iter().filter_map(|p| run_program(p, 11).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn k_is_one() {
    check_extremes([65, 1, 63, 3, 2], &[]);
}

#[test]
fn one_by_one_by_one() {
    let one = Rank1::ALL_ONE;
    let long = Rank1 { k: 129, ..one };
    let rank1 = [
        one.vector_times_matrix(false),
        one.matrix_times_vector(true),
        one.dot(false),
        long.dot(true),
        long.dot(false),
    ];
    check_extremes([1, 1, 1, 1, 1], &rank1);
}

/// Every layout at `[m, k, n, batch, heads]`, once with constant dimensions and no epilogue and once with
/// symbolic ones and an epilogue (taking turns by layout; not `softmax` or `layer_norm` when N is 1, where
/// their result does not depend on the product), then the given rank-1 programs; every failing program is
/// reported in one failure.
fn check_extremes(sizes: [usize; 5], rank1: &[Program]) {
    let epilogues: &[Epilogue] = if sizes[2] == 1 { &Epilogue::ALL[1..3] } else { &Epilogue::ALL[1..] };
    let mut programs = Vec::new();
    for (i, &layout) in Layout::ALL.iter().enumerate() {
        programs.push(Case::new(layout, Epilogue::None, sizes, [false; 5]).program());
        programs.push(Case::new(layout, epilogues[i % epilogues.len()], sizes, [true; 5]).program());
    }
    programs.extend(rank1.iter().cloned());
    let failures: Vec<String> = programs.iter().filter_map(|p| run_program(p, 7).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} programs fail:\n\n{}",
        failures.len(),
        programs.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------------------
// Programs

/// How the operands reach the product, and what happens to it after the epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `a @ w`.
    Plain,
    /// `transpose(at) @ w`.
    TransposedLeft,
    /// `a @ transpose(wt)`.
    TransposedRight,
    /// `transpose(at) @ transpose(wt)`.
    TransposedBoth,
    /// `[B, M, K] @ [B, K, N]`.
    Batched,
    /// `[B, M, K] @ [K, N]` (the checker folds the batch into M).
    BatchTimesMatrix,
    /// `[M, K] @ [B, K, N]` (the left operand broadcast over the batch).
    MatrixTimesBatch,
    /// `[B, 1, M, K] @ [H, K, N]`: both operands broadcast, to `[B, H, M, N]`.
    BroadcastBatch,
    /// Attention scores: `permute(q, [0, 2, 1, 3]) @ permute(kv, [0, 2, 3, 1])` from `[B, S, H, D]` inputs.
    AttentionScores,
    /// Attention context: `p @ permute(v, [0, 2, 1, 3])`, the result permuted back and reshaped to
    /// `[B, M, H * N]`.
    AttentionContext,
    /// std/nn's `Linear` on `[B, M, K]`: `x @ transpose(weight) + bias` with params (N is always constant).
    Linear,
}

impl Layout {
    const ALL: [Layout; 11] = [
        Layout::Plain,
        Layout::TransposedLeft,
        Layout::TransposedRight,
        Layout::TransposedBoth,
        Layout::Batched,
        Layout::BatchTimesMatrix,
        Layout::MatrixTimesBatch,
        Layout::BroadcastBatch,
        Layout::AttentionScores,
        Layout::AttentionContext,
        Layout::Linear,
    ];
}

/// What consumes the product (`y`) inside the model, where fusion may put it into the product's kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Epilogue {
    None,
    /// `relu(y + bias)`, `bias: f32[N]`.
    BiasRelu,
    /// `y * 0.125 + r`, `r` shaped like `y`.
    ScaleResidual,
    /// `softmax(y)` over N.
    Softmax,
    /// `layer_norm(y + r, g, beta)` over N.
    LayerNorm,
}

impl Epilogue {
    const ALL: [Epilogue; 5] =
        [Epilogue::None, Epilogue::BiasRelu, Epilogue::ScaleResidual, Epilogue::Softmax, Epilogue::LayerNorm];
}

/// One dimension: its size and whether the program declares it as a symbol (named as in `Case::NAMES`).
#[derive(Clone, Copy, Debug)]
struct Size {
    value: usize,
    symbolic: bool,
}

/// A product of `[M, K]` by `[K, N]` (batched by B, and H where the layout has heads) in one layout, with
/// one epilogue.
#[derive(Clone, Copy, Debug)]
struct Case {
    layout: Layout,
    epilogue: Epilogue,
    /// M, K, N, B, H.
    sizes: [Size; 5],
}

/// A program ready to run: its source, the sizes of its symbols, one tolerance per output.
#[derive(Clone, Debug)]
struct Program {
    source: String,
    symbols: Vec<(&'static str, i64)>,
    tols: Vec<Tol>,
}

impl Case {
    const NAMES: [&'static str; 5] = ["M", "K", "N", "B", "H"];

    fn new(layout: Layout, epilogue: Epilogue, values: [usize; 5], symbolic: [bool; 5]) -> Case {
        let mut sizes = [0, 1, 2, 3, 4].map(|i| Size { value: values[i], symbolic: symbolic[i] });
        if layout == Layout::Linear {
            // `Linear`'s N is an `int` argument.
            sizes[2].symbolic = false;
        }
        Case { layout, epilogue, sizes }
    }

    /// How the program writes dimension `i`: its symbol or its value.
    fn dim(&self, i: usize) -> String {
        let size = self.sizes[i];
        if size.symbolic { Self::NAMES[i].to_string() } else { size.value.to_string() }
    }

    fn program(&self) -> Program {
        let [m, k, n, b, h] = [0, 1, 2, 3, 4].map(|i| self.dim(i));
        let f32s =
            |dims: &[&String]| format!("f32[{}]", dims.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", "));
        // The operands, the product, and its shape.
        let (mut inputs, product, shape): (Vec<String>, String, Vec<&String>) = match self.layout {
            Layout::Plain => (
                vec![format!("a: {}", f32s(&[&m, &k])), format!("w: {}", f32s(&[&k, &n]))],
                "a @ w".into(),
                vec![&m, &n],
            ),
            Layout::TransposedLeft => (
                vec![format!("at: {}", f32s(&[&k, &m])), format!("w: {}", f32s(&[&k, &n]))],
                "transpose(at) @ w".into(),
                vec![&m, &n],
            ),
            Layout::TransposedRight => (
                vec![format!("a: {}", f32s(&[&m, &k])), format!("wt: {}", f32s(&[&n, &k]))],
                "a @ transpose(wt)".into(),
                vec![&m, &n],
            ),
            Layout::TransposedBoth => (
                vec![format!("at: {}", f32s(&[&k, &m])), format!("wt: {}", f32s(&[&n, &k]))],
                "transpose(at) @ transpose(wt)".into(),
                vec![&m, &n],
            ),
            Layout::Batched => (
                vec![format!("a: {}", f32s(&[&b, &m, &k])), format!("w: {}", f32s(&[&b, &k, &n]))],
                "a @ w".into(),
                vec![&b, &m, &n],
            ),
            Layout::BatchTimesMatrix => (
                vec![format!("a: {}", f32s(&[&b, &m, &k])), format!("w: {}", f32s(&[&k, &n]))],
                "a @ w".into(),
                vec![&b, &m, &n],
            ),
            Layout::MatrixTimesBatch => (
                vec![format!("a: {}", f32s(&[&m, &k])), format!("w: {}", f32s(&[&b, &k, &n]))],
                "a @ w".into(),
                vec![&b, &m, &n],
            ),
            Layout::BroadcastBatch => (
                vec![format!("a: {}", f32s(&[&b, &"1".to_string(), &m, &k])), format!("w: {}", f32s(&[&h, &k, &n]))],
                "a @ w".into(),
                vec![&b, &h, &m, &n],
            ),
            Layout::AttentionScores => (
                vec![format!("q: {}", f32s(&[&b, &m, &h, &k])), format!("kv: {}", f32s(&[&b, &n, &h, &k]))],
                "permute(q, [0, 2, 1, 3]) @ permute(kv, [0, 2, 3, 1])".into(),
                vec![&b, &h, &m, &n],
            ),
            Layout::AttentionContext => (
                vec![format!("p: {}", f32s(&[&b, &h, &m, &k])), format!("v: {}", f32s(&[&b, &k, &h, &n]))],
                "p @ permute(v, [0, 2, 1, 3])".into(),
                vec![&b, &h, &m, &n],
            ),
            Layout::Linear => {
                (vec![format!("x: {}", f32s(&[&b, &m, &k]))], format!("Linear[\"fc\"](x, {n})"), vec![&b, &m, &n])
            }
        };
        let consumed = match self.epilogue {
            Epilogue::None => "y".to_string(),
            Epilogue::BiasRelu => {
                inputs.push(format!("bias: {}", f32s(&[&n])));
                "relu(y + bias)".into()
            }
            Epilogue::ScaleResidual => {
                inputs.push(format!("r: {}", f32s(&shape)));
                "y * 0.125 + r".into()
            }
            Epilogue::Softmax => "softmax(y)".into(),
            Epilogue::LayerNorm => {
                inputs.push(format!("r: {}", f32s(&shape)));
                inputs.push(format!("g: {}", f32s(&[&n])));
                inputs.push(format!("beta: {}", f32s(&[&n])));
                "layer_norm(y + r, g, beta, eps: 1e-5)".into()
            }
        };
        let (result, out) = if self.layout == Layout::AttentionContext {
            let heads_n = format!("{h} * {n}");
            (format!("reshape(permute({consumed}, [0, 2, 1, 3]), [{b}, {m}, {heads_n}])"), f32s(&[&b, &m, &heads_n]))
        } else {
            (consumed, f32s(&shape))
        };
        let import = if self.layout == Layout::Linear { "import \"std/nn\"\n" } else { "" };
        let source = format!(
            "{import}model contraction({}) -> (c: {out}) {{\n    y = {product}\n    c = {result}\n}}\n",
            inputs.join(", ")
        );
        let symbols =
            (0..5).filter(|&i| self.sizes[i].symbolic).map(|i| (Self::NAMES[i], self.sizes[i].value as i64)).collect();
        Program { source, symbols, tols: vec![self.tol()] }
    }

    /// The tolerance of the output (see the module comment).
    fn tol(&self) -> Tol {
        let [k, n] = [self.sizes[1].value, self.sizes[2].value];
        let adds = usize::from(self.layout == Layout::Linear)
            + usize::from(matches!(self.epilogue, Epilogue::BiasRelu | Epilogue::ScaleResidual | Epilogue::LayerNorm));
        let factor = f64::from(1u32 << adds);
        match self.epilogue {
            Epilogue::None | Epilogue::BiasRelu | Epilogue::ScaleResidual => Tol::reduction(k + adds).times(factor),
            Epilogue::Softmax => softmax_tol(k + adds, n, factor),
            Epilogue::LayerNorm => Tol::reduction(k + adds + n).times(8.0 * factor),
        }
    }
}

/// `softmax` over `n` values, each from a product over `k` (times `factor`): four times
/// `Tol::reduction(k + n)`, relative only (see the module comment).
fn softmax_tol(k: usize, n: usize, factor: f64) -> Tol {
    let Tol::Close { rtol, .. } = Tol::reduction(k + n).times(4.0 * factor) else { unreachable!("reduction is Close") };
    Tol::Close { atol: f64::from(f32::MIN_POSITIVE), rtol }
}

/// Products with a rank-1 operand (`[K]` is `[1, K]` on the left, `[K, 1]` on the right), at sizes M, K,
/// N and batch B.
#[derive(Clone, Copy, Debug)]
struct Rank1 {
    m: usize,
    k: usize,
    n: usize,
    b: usize,
}

impl Rank1 {
    const ALL_ONE: Rank1 = Rank1 { m: 1, k: 1, n: 1, b: 1 };

    /// `M`, `K`, `N` and `B` in `template` replaced by their values unless `symbolic`.
    fn program(&self, template: &str, symbolic: bool, tols: Vec<Tol>) -> Program {
        let sizes = [("M", self.m), ("K", self.k), ("N", self.n), ("B", self.b)];
        let mut source = String::new();
        // Dimensions are the single capital letters; nothing else in the templates is.
        for c in template.chars() {
            match sizes.iter().find(|(name, _)| name.starts_with(c)) {
                Some((_, value)) if !symbolic => {
                    let _ = write!(source, "{value}");
                }
                _ => source.push(c),
            }
        }
        let symbols = if symbolic {
            sizes.iter().filter(|(name, _)| template.contains(name)).map(|&(name, v)| (name, v as i64)).collect()
        } else {
            Vec::new()
        };
        Program { source, symbols, tols }
    }

    /// M = 1 as a rank-1 left operand: `v @ w`, `v @ transpose(wt)`, `v @ [B, K, N]`, `relu(v @ w + bias)`.
    fn vector_times_matrix(&self, symbolic: bool) -> Program {
        let template = "model vm(v: f32[K], w: f32[K, N], wt: f32[N, K], bw: f32[B, K, N], bias: f32[N])
            -> (y: f32[N], yt: f32[N], yb: f32[B, N], yr: f32[N]) {
            y = v @ w
            yt = v @ transpose(wt)
            yb = v @ bw
            yr = relu(v @ w + bias)
        }";
        let reduce = Tol::reduction(self.k);
        self.program(template, symbolic, vec![reduce, reduce, reduce, Tol::reduction(self.k + 1).times(2.0)])
    }

    /// N = 1 as a rank-1 right operand: `a @ u`, `transpose(at) @ u`, `[B, M, K] @ u`, `softmax(a @ u)`.
    fn matrix_times_vector(&self, symbolic: bool) -> Program {
        let template = "model mv(a: f32[M, K], at: f32[K, M], ba: f32[B, M, K], u: f32[K])
            -> (y: f32[M], yt: f32[M], yb: f32[B, M], ys: f32[M]) {
            y = a @ u
            yt = transpose(at) @ u
            yb = ba @ u
            ys = softmax(a @ u)
        }";
        let reduce = Tol::reduction(self.k);
        self.program(template, symbolic, vec![reduce, reduce, reduce, softmax_tol(self.k, self.m, 1.0)])
    }

    /// M = N = 1 with both operands rank 1 (a rank-0 result) and as `[1, K] @ [K, 1]`.
    fn dot(&self, symbolic: bool) -> Program {
        let template = "model dot(u: f32[K], v: f32[K], row: f32[1, K], col: f32[K, 1]) -> (d: f32[], p: f32[1, 1]) {
            d = u @ v
            p = row @ col
        }";
        let reduce = Tol::reduction(self.k);
        self.program(template, symbolic, vec![reduce, reduce])
    }
}

// ---------------------------------------------------------------------------------------------------------
// Running a program

/// Checks `program`, runs it on the interpreter and fused and unfused on the GPU with inputs seeded by
/// `seed`, and compares fused and unfused each with the interpreter and with each other.
fn run_program(program: &Program, seed: u64) -> Result<(), String> {
    let name = "contraction.tdsl";
    let source = &program.source;
    let context = || format!("program (symbols {:?}, seed {seed}):\n{source}", program.symbols);
    let checked = check_text(name, source);
    if !checked.diagnostics.is_empty() {
        return Err(format!("the program does not check:\n{}\n{}", rendered(&checked), context()));
    }
    let graph = checked.graphs.into_iter().next().ok_or_else(|| format!("no model\n{}", context()))?;
    let mut symbols = Vec::with_capacity(graph.symbols.len());
    for symbol in &graph.symbols {
        let size = program.symbols.iter().find(|(name, _)| *name == symbol.name);
        symbols.push(size.ok_or_else(|| format!("no size for symbol {}\n{}", symbol.name, context()))?.1);
    }
    let (inputs, params) = seeded_bindings(&graph, &symbols, seed);
    let expected = interp::run(&graph, &inputs, &params).map_err(|e| format!("interpreter: {e}\n{}", context()))?;
    // Fused with the device's own profile and with the `gpu` profile (workgroup shared-memory tiles),
    // whichever the device is, so both contraction schedules run here; unfused as the plain reference.
    let profiles = super::profiles();
    let own = profiles[0];
    let mut runs = vec![("fused", crate::util::options(true, own))];
    if let Some(&gpu_profile) = profiles.get(1) {
        runs.push(("fused (gpu profile)", crate::util::options(true, gpu_profile)));
    }
    runs.push(("unfused", crate::util::options(false, own)));
    let mut results = Vec::new();
    for (what, options) in &runs {
        let actual =
            run_gpu_for(&graph, &inputs, &params, options).map_err(|e| format!("GPU ({what}): {e}\n{}", context()))?;
        results.push(actual);
    }
    let mut failures = Vec::new();
    let unfused = results.last().ok_or("no runs")?;
    for (actual, (what, _)) in results.iter().zip(&runs) {
        for f in mismatches(name, &graph, &inputs, &expected, actual, &program.tols) {
            failures.push(format!("{what} program against the interpreter: {f}"));
        }
        if *what != "unfused" {
            for f in mismatches(name, &graph, &inputs, unfused, actual, &program.tols) {
                failures.push(format!("{what} against unfused: {f}"));
            }
        }
    }
    // The CPU executor on each fused profile's decisions (a product and its epilogue in one launch: gemm,
    // dot products or panels, the epilogue as a row pass or an elementwise tree, or fed by the panels).
    for (what, options) in runs.iter().filter(|(what, _)| *what != "unfused") {
        // Twice on one model: the second run finds its weights unchanged and goes by panels.
        let runs = run_cpu_twice_for(&graph, &inputs, &params, options)
            .map_err(|e| format!("CPU executor ({what}): {e}\n{}", context()))?;
        for (run, cpu) in ["first", "second"].iter().zip(&runs) {
            for f in mismatches(name, &graph, &inputs, &expected, cpu, &program.tols) {
                failures.push(format!("CPU executor ({what}, {run} run) against the interpreter: {f}"));
            }
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    Err(format!("GPU ({}) or the CPU executor disagrees:\n{}\n{}", gpu().describe(), failures.join("\n"), context()))
}
