//! The optimizer and fusion: every pass's output verifies and means exactly what the original graph means
//! (bit-identical interpreter results on every example and fixture); fusion outcomes pinned for the cases
//! the design promises (an elementwise chain is one kernel, `relu(x @ w + b)` is one kernel, prologues fuse
//! into reductions); the fused program equals the unfused one on the GPU; and the `tdslc explain` report of
//! every example is a snapshot, so a change in fusion shows up in review.

use std::path::{Path, PathBuf};

use crate::gpu::{gpu, seeded_bindings, symbol_values};
use crate::util::{check_path, same_bits, single_graph};
use tdsl_compiler::codegen;
use tdsl_compiler::interp;
use tdsl_compiler::ir::{Graph, NodeId, Op};

fn examples() -> Vec<PathBuf> {
    let mut files = vec![
        PathBuf::from("../examples/mlp.tdsl"),
        PathBuf::from("../examples/cnn.tdsl"),
        PathBuf::from("../examples/encoder_layer.tdsl"),
        PathBuf::from("../examples/minilm/minilm.tdsl"),
    ];
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir("fixtures/ok")
        .expect("fixtures/ok")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tdsl"))
        .collect();
    fixtures.sort();
    files.extend(fixtures);
    files
}

fn graphs(path: &Path) -> Vec<Graph> {
    let checked = check_path(path);
    assert!(checked.diagnostics.is_empty(), "{} does not check", path.display());
    checked.graphs
}

#[test]
fn every_pass_verifies_and_keeps_the_meaning() {
    for path in examples() {
        for graph in graphs(&path) {
            let symbols = symbol_values(&graph, &[("B", 2), ("S", 5), ("N", 3)], 3);
            let (inputs, params) = seeded_bindings(&graph, &symbols, 11);
            let want = interp::run(&graph, &inputs, &params).expect("the original runs");
            let stages = crate::util::optimize_stages(&graph).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for (pass, stage) in &stages {
                let got = interp::run(stage, &inputs, &params).expect("the optimized graph runs");
                assert!(same_bits(&want, &got), "{}: after `{pass}` the interpreter's results differ", path.display());
                assert_eq!(stage.inputs.len(), graph.inputs.len(), "{pass} keeps the inputs");
                assert_eq!(stage.params.len(), graph.params.len(), "{pass} keeps the params");
            }
            let (_, last) = stages.last().expect("passes ran");
            assert!(last.nodes.len() <= graph.nodes.len(), "{}: optimizing never grows the graph", path.display());
        }
    }
}

#[test]
fn simplify_removes_identities_and_folds_constants() {
    let graph = single_graph(
        "identities.tdsl",
        "model m(x: f32[N, 3], i: i32[N]) -> (a: f32[N, 3], b: f32[N, 3], c: i32[N], d: f32[3, N]) {
            a = x * 1.0 / 1.0 - 0.0
            b = x + 0.0
            c = i + 0
            d = transpose(transpose(transpose(x)))
        }",
    );
    let (_, optimized) = crate::util::optimize_stages(&graph).expect("verifies").pop().expect("passes ran");
    let printed = tdsl_compiler::ir::print::print(&optimized);
    // `a` and `c` are the inputs themselves; `x + 0.0` must stay (it turns -0.0 into +0.0); three transposes
    // are one.
    let output = |name: &str| optimized.outputs.iter().find(|o| o.name == name).expect("output").node;
    assert_eq!(output("a"), optimized.inputs[0], "{printed}");
    assert_eq!(output("c"), optimized.inputs[1], "{printed}");
    assert_ne!(output("b"), optimized.inputs[0], "x + 0.0 is not x:\n{printed}");
    assert_eq!(printed.matches("permute").count(), 1, "{printed}");
}

/// Kernels of the fused program of `text` for the default (gpu) device profile; `kernel_counts` gives them for
/// each built-in profile.
fn kernel_count(text: &str) -> usize {
    let graph = single_graph("fusion.tdsl", text);
    crate::util::compile(&graph).expect("compiles").kernels.len()
}

/// Kernels of the fused program of `text` for the gpu, cpu and naive profiles, in that order.
fn kernel_counts(text: &str) -> [usize; 3] {
    let graph = single_graph("fusion.tdsl", text);
    ["gpu", "cpu", "naive"].map(|name| {
        let target = codegen::Target::named(name).expect("a built-in target");
        crate::util::compile_with(&graph, &crate::util::options(true, target)).expect("compiles").kernels.len()
    })
}

#[test]
fn fusion_outcomes() {
    // An elementwise chain with broadcasts and a cast: one kernel.
    assert_eq!(
        kernel_count(
            "model m(x: f32[N, 4], b: f32[4]) -> (y: f32[N, 4]) { y = tanh(relu(x * 2.0 + b) - 1.0) * f32(x > 0.0) }"
        ),
        1
    );
    assert_eq!(kernel_count(&tdsl_compiler::bench::chain_source(8)), 1);
    // A contraction with its epilogue: one kernel.
    assert_eq!(
        kernel_count("model m(x: f32[N, 8], w: f32[8, 4], b: f32[4]) -> (y: f32[N, 4]) { y = relu(x @ w + b) }"),
        1
    );
    // A prologue fused into a reduction: one kernel.
    assert_eq!(kernel_count("model m(x: f32[N, 8]) -> (y: f32[N]) { y = sum(exp(x) * 2.0, axis: 1) }"), 1);
    // Reductions read back through a broadcast along the reduced axes run in the kernel that uses them, as
    // workgroup reductions (row kernels): softmax, layer_norm and an L2 normalisation are one kernel each.
    assert_eq!(kernel_count("model m(x: f32[N, 8]) -> (y: f32[N, 8]) { y = softmax(x) }"), 1);
    assert_eq!(kernel_count("model m(x: f32[N, S]) -> (y: f32[N, S]) { y = softmax(x) }"), 1);
    assert_eq!(
        kernel_count(
            "import \"std/nn\"\nmodel m(x: f32[B, S, 32], g: f32[32], b: f32[32]) -> (y: f32[B, S, 32]) { y = layer_norm(x, g, b, eps: 1e-5) }"
        ),
        1
    );
    assert_eq!(kernel_count("import \"std/nn\"\nmodel m(x: f32[B, 16]) -> (y: f32[B, 16]) { y = l2_normalize(x) }"), 1);
    // A contraction feeding a row kernel is computed once per element into workgroup memory when the row has
    // a constant length: layer_norm(x + h @ w) is one kernel. Not on CPU devices, whose row kernels run one
    // invocation per row with no workgroup memory: there the matmul is a register-tiled kernel of its own.
    assert_eq!(
        kernel_counts(
            "import \"std/nn\"\nmodel m(x: f32[N, 32], h: f32[N, 64], w: f32[64, 32], g: f32[32], b: f32[32]) -> (y: f32[N, 32]) { y = layer_norm(x + h @ w, g, b, eps: 1e-5) }"
        ),
        [1, 2, 1]
    );
    // ... but not when the row length is symbolic (no bound on workgroup memory): softmax(q @ k) is two.
    assert_eq!(kernel_count("model m(q: f32[N, 8], k: f32[8, S]) -> (y: f32[N, S]) { y = softmax(q @ k) }"), 2);
    // A cheap value read many times (an attention mask as an additive bias) is recomputed, not stored.
    assert_eq!(
        kernel_count(
            "import \"std/nn\"\nmodel m(s: f32[N, B, S], mask: i32[B, S]) -> (y: f32[N, B, S]) { y = s + mask_bias(mask) }"
        ),
        1
    );
    // Horizontal fusion: projections of one input share a kernel (and, tiled, its contraction loop) while it
    // binds at most 8 storage buffers.
    assert_eq!(
        kernel_counts(
            "model m(x: f32[N, 8], a: f32[8, 4], b: f32[8, 4]) -> (y: f32[N, 4], z: f32[N, 4]) { y = x @ a\n z = x @ b }"
        ),
        [1, 1, 1]
    );
    // The transformer encoder layer (examples/encoder_layer.tdsl): Q and K projections (1: with their
    // biases, Q, K and V together would bind 10 buffers), V projection (1), attention scores (1), softmax (1),
    // context (1), output projection + residual + layer_norm (1), FFN up + GELU (1), FFN down + residual +
    // layer_norm (1). On CPU devices the two projections feeding a layer_norm are kernels of their own: 10.
    let encoder = std::fs::read_to_string("../examples/encoder_layer.tdsl").expect("example");
    assert_eq!(kernel_counts(&encoder), [8, 10, 8]);
}

#[test]
fn every_group_has_one_verified_schedule_on_every_profile() {
    use codegen::schedule::{Schedule, verify};
    for path in examples() {
        for graph in graphs(&path) {
            for target in codegen::target::TARGETS {
                for fuse in [true, false] {
                    let compiled =
                        crate::util::compile_with(&graph, &crate::util::options(fuse, target)).expect("compiles");
                    let grouping = &compiled.grouping;
                    assert_eq!(grouping.schedules.len(), grouping.groups.len(), "{}", path.display());
                    for ((group, schedule), kernel) in
                        grouping.groups.iter().zip(&grouping.schedules).zip(&compiled.kernels)
                    {
                        let place = format!("{} {} on {}", path.display(), kernel.name, target.name);
                        assert_eq!(verify(&compiled.graph, group, schedule, &target), Ok(()), "{place}");
                        assert_eq!(*schedule, Schedule::choose(&compiled.graph, group, &target), "{place}");
                        // The stored schedule is the one the kernel was built with.
                        let workgroup = match schedule {
                            Schedule::Rows(plan) => plan.workgroup,
                            _ => codegen::WORKGROUP_SIZE,
                        };
                        assert_eq!(kernel.workgroup_size, workgroup, "{place}");
                        let storage = if schedule.vector_storage() { "array<vec4<" } else { "array<" };
                        assert!(kernel.wgsl().contains(&format!("var<storage, read_write> out: {storage}")), "{place}");
                    }
                }
            }
        }
    }
}

#[test]
fn fused_and_unfused_agree_on_the_gpu() {
    for path in examples() {
        for graph in graphs(&path) {
            let symbols = symbol_values(&graph, &[("B", 2), ("S", 5), ("N", 3)], 3);
            let (inputs, params) = seeded_bindings(&graph, &symbols, 5);
            let mut results = Vec::new();
            for fuse in [false, true] {
                let compiled = crate::util::compile_with(&graph, &crate::util::options(fuse, Default::default()))
                    .expect("compiles");
                results.push(gpu().execute(&compiled.program, &inputs, &params).expect("runs"));
            }
            for (unfused, fused) in results[0].iter().zip(&results[1]) {
                let (a, b) = (unfused.to_f64_vec(), fused.to_f64_vec());
                let scale = a.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                    // Same operations; workgroup reductions (row kernels) add in a different order than the serial
                    // loops of the unfused program, and a*b+c may contract into an FMA.
                    assert!(
                        (x - y).abs() <= 1e-5 * scale || x.is_nan() && y.is_nan(),
                        "{}: element {i}: unfused {x}, fused {y}",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn explain_reports_of_the_examples() {
    for path in examples().into_iter().take(4) {
        for graph in graphs(&path) {
            let compiled = crate::util::compile(&graph).expect("compiles");
            let symbols = symbol_values(&graph, &[("B", 2), ("S", 16), ("N", 4)], 2);
            let report = tdsl_compiler::explain::explain(&compiled, &symbols, true).expect("explains");
            let json = report.json();
            assert_eq!(json["kernels"].as_array().map(Vec::len), Some(compiled.kernels.len()));
            assert!(json["peak_bytes"].as_u64() <= json["unshared_bytes"].as_u64());
            let name = path.file_name().and_then(|f| f.to_str()).unwrap_or("model").to_string();
            insta::assert_snapshot!(format!("explain_{name}"), report.text());
        }
    }
}

/// The test suite verifies after every stage (`.cargo/config.toml` sets `TDSL_VERIFY`): if that setting
/// went missing, `Options::default()` would quietly stop verifying in the tests that use it.
#[test]
fn the_test_suite_verifies_after_every_stage() {
    assert!(tdsl_compiler::pipeline::verify_from_env(), "TDSL_VERIFY is not set for the tests");
    assert!(tdsl_compiler::pipeline::Options::default().verify);
}

/// The grouping verifier accepts every example's fusion decision and rejects broken ones: groups out of
/// dependency order, a node stored by two groups, an output no group stores, a group computing an input.
#[test]
fn the_grouping_verifier_rejects_broken_groupings() {
    use tdsl_compiler::codegen::verify_grouping;
    let mut checked = 0;
    for path in examples() {
        for graph in graphs(&path) {
            let compiled = crate::util::compile(&graph).expect("compiles");
            let (graph, grouping) = (&compiled.graph, &compiled.grouping);
            verify_grouping(graph, grouping).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            if grouping.groups.len() < 2 {
                continue;
            }
            checked += 1;
            // A consumer moved before the group that stores what it reads.
            let reads = |g: &tdsl_compiler::codegen::fuse::Group, stored: NodeId| {
                g.roots().chain(g.inline.iter().copied()).any(|m| graph.node(m).op.operands().contains(&stored))
            };
            let pair = (0..grouping.groups.len()).find_map(|j| {
                (0..j).find(|&i| grouping.groups[i].roots().any(|r| reads(&grouping.groups[j], r))).map(|i| (i, j))
            });
            if let Some((i, j)) = pair {
                let mut swapped = grouping.clone();
                swapped.groups.swap(i, j);
                let errors = verify_grouping(graph, &swapped).expect_err("a consumer before its producer");
                assert!(errors.iter().any(|e| e.message.contains("dependency order")), "{errors:?}");
            }

            let mut twice = grouping.clone();
            let root = twice.groups[0].root;
            twice.groups[1].siblings.push(root);
            let errors = verify_grouping(graph, &twice).expect_err("a node stored by two groups");
            assert!(errors.iter().any(|e| e.message.contains("stores too")), "{errors:?}");

            let mut dropped = grouping.clone();
            let output = graph.outputs.iter().find(|o| dropped.groups.iter().any(|g| g.root == o.node));
            if let Some(output) = output {
                dropped.groups.retain(|g| g.root != output.node);
                let errors = verify_grouping(graph, &dropped).expect_err("an output not stored");
                assert!(errors.iter().any(|e| e.message.contains("not stored")), "{errors:?}");
            }

            let mut leaf = grouping.clone();
            if let Some(&input) = graph.inputs.first() {
                leaf.groups[0].inline.insert(input);
                let errors = verify_grouping(graph, &leaf).expect_err("an input computed");
                assert!(errors.iter().any(|e| e.message.contains("an input or param")), "{errors:?}");
            }
        }
    }
    assert!(checked > 0, "no example has two kernels");
}

/// A straight chain of 20,000 statements (one per line, 40,000 ops): fusion splits it into kernels whose
/// inline chains stay within `MAX_INLINE_DEPTH` (code generation recursed once per inline op and overflowed
/// the stack on such chains), the compiled program validates, and the GPU agrees with the interpreter
/// exactly (integer arithmetic wraps the same on both sides).
#[test]
fn a_long_chain_of_statements_splits_into_bounded_kernels() {
    const STATEMENTS: usize = 20_000;
    let mut text = String::from("model chain(x: i32[B, 4]) -> (y: i32[B, 4]) {\n");
    for i in 0..STATEMENTS {
        text.push_str(if i % 2 == 0 { "    x = x * 3 + 1\n" } else { "    x = x - 7\n" });
    }
    text.push_str("    y = x\n}\n");
    let graph = single_graph("chain.tdsl", &text);
    let compiled = crate::util::compile(&graph).expect("a long chain compiles");
    // The longest chain of inline nodes in each group, constants aside (a node on leaves only, such as a
    // broadcast constant, may add one more level).
    let cap = codegen::fuse::MAX_INLINE_DEPTH + 1;
    for group in &compiled.grouping.groups {
        let mut depth: std::collections::HashMap<NodeId, usize> = Default::default();
        for &id in &group.inline {
            if matches!(compiled.graph.node(id).op, Op::Constant(_) | Op::DimValue(_)) {
                continue;
            }
            let below = compiled.graph.node(id).op.operands().iter().filter_map(|o| depth.get(o)).max().copied();
            depth.insert(id, 1 + below.unwrap_or(0));
        }
        let deepest = depth.values().max().copied().unwrap_or(0);
        assert!(deepest <= cap, "kernel of %{} inlines a chain of {deepest} ops", group.root.index());
    }
    let least = compiled.graph.nodes.len() / cap;
    assert!(compiled.kernels.len() >= least, "{} kernels, expected at least {least}", compiled.kernels.len());

    let input: Vec<i32> = (0..8).map(|i| i * 11 - 40).collect();
    let want: Vec<i32> = input
        .iter()
        .map(|&v| {
            (0..STATEMENTS)
                .fold(v, |x, i| if i % 2 == 0 { x.wrapping_mul(3).wrapping_add(1) } else { x.wrapping_sub(7) })
        })
        .collect();
    let inputs = vec![interp::Tensor::i32(&[2, 4], input)];
    let got = interp::run(&graph, &inputs, &Default::default()).expect("the interpreter runs the chain");
    assert_eq!(got[0].as_i32(), Some(&want[..]), "the interpreter computes the chain");
    crate::gpu::compare("chain", &graph, &inputs, &Default::default(), &[crate::gpu::Tol::Exact]);
}
