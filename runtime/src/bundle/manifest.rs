//! The bundle manifest: the JSON form of each model's `Program`, buffer plan and device requirements, and
//! the kernel blobs it points into (spec/bundle.md §B3 gives the schema). Encoding is deterministic: serde
//! writes struct fields in declaration order and the only map (`limits`) is a `BTreeMap`. Decoding rejects
//! unknown fields, names no symbol that is not declared, and checks every blob range, every WGSL blob (UTF-8)
//! and SPIR-V blob (whole words, the SPIR-V magic number) and each launch's grid formula; the first problem
//! is the error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Bundle, BundleProblem, BundledModel, FORMAT_VERSION};
use crate::DType;
use crate::dim::{Atom, Dim, SymId};
use crate::program::{
    Arg, Bound, BoundKind, Check, Feature, GroupOps, Init, Launch, Limit, Program, Requirements, SourceLocation,
    TensorDecl, TensorId, TensorRole, Update,
};

/// The first word of every SPIR-V module.
const SPIRV_MAGIC: u32 = 0x0723_0203;

/// The grid formula of a launch: `floor((invocations + workgroup_size - 1) / workgroup_size)` workgroups
/// (before folding into two dimensions, spec/runtime.md G2.3).
pub fn workgroups(invocations: &Dim, workgroup_size: u32) -> Dim {
    let size = Dim::constant(i64::from(workgroup_size.max(1)));
    // Overflow only for invocation counts near i64::MAX, which no launch has (bounds keep them below 2^32).
    invocations
        .add(&size)
        .and_then(|n| n.sub(&Dim::constant(1)))
        .and_then(|n| n.div(&size))
        .unwrap_or_else(|_| invocations.clone())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    producer: String,
    models: Vec<Model>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Model {
    name: String,
    symbols: Vec<Symbol>,
    tensors: Vec<Tensor>,
    inputs: Vec<u32>,
    params: Vec<u32>,
    outputs: Vec<Output>,
    launches: Vec<LaunchEntry>,
    /// The shared-buffer slot of each tensor (`null` for inputs and params).
    buffer_slots: Vec<Option<usize>>,
    /// Param initialisers.
    inits: Vec<InitEntry>,
    /// State carried from one run to the next.
    updates: Vec<UpdateEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitEntry {
    tensor: u32,
    init: InitKind,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum InitKind {
    Constant(f64),
    Uniform { low: f64, high: f64 },
    FanInUniform(DimEntry),
    Normal { mean: f64, std: f64 },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateEntry {
    output: usize,
    param: u32,
}

/// A symbolic dimension and its constraint: bound at run time from the input (or param) shapes, at least
/// `min`. (Other constraints are the declared shapes, checked by binding, and the launch bounds.)
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Symbol {
    name: String,
    min: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tensor {
    name: String,
    role: Role,
    dtype: String,
    shape: Vec<DimEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Role {
    Input(String),
    Param(String),
    Computed,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    name: String,
    tensor: u32,
}

/// A `Dim` as its terms, each `[coefficient, [factors]]`.
type DimEntry = Vec<(i64, Vec<Factor>)>;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Factor {
    /// A symbol, by name.
    Sym(String),
    /// `floor(of / by)`.
    FloorDiv { of: DimEntry, by: i64 },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchEntry {
    name: String,
    wgsl: Blob,
    spirv: Blob,
    args: Vec<ArgEntry>,
    invocations: DimEntry,
    workgroup_size: u32,
    /// `workgroups(invocations, workgroup_size)`, for readers; checked on load.
    workgroups: DimEntry,
    bounds: Vec<BoundEntry>,
    requires: RequirementsEntry,
    checks: Vec<CheckEntry>,
    /// What the launch computes, for the CPU executor (dimensions name symbols by index here).
    ops: GroupOps,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckEntry {
    node: u32,
    op: String,
    source: Option<SourceEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceEntry {
    file: String,
    line: u32,
    column: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Blob {
    offset: u64,
    len: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ArgEntry {
    Read(u32),
    Write(u32),
    Uniform(Vec<DimEntry>),
    Status,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoundEntry {
    what: BoundKind,
    value: DimEntry,
    max: i64,
    /// The op the bound is about (`Bound::op`); absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<CheckEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequirementsEntry {
    features: Vec<String>,
    limits: BTreeMap<String, u64>,
}

/// The manifest JSON and the blob section of `bundle`.
pub fn encode(bundle: &Bundle) -> (Vec<u8>, Vec<u8>) {
    let mut blobs = Vec::new();
    let mut push = |bytes: &[u8]| {
        let blob = Blob { offset: blobs.len() as u64, len: bytes.len() as u64 };
        blobs.extend_from_slice(bytes);
        blob
    };
    let models = bundle
        .models
        .iter()
        .map(|model| {
            let p = &model.program;
            let dim = |d: &Dim| encode_dim(d, &p.symbols);
            let launches = p
                .launches
                .iter()
                .map(|launch| {
                    let wgsl = push(launch.wgsl.as_bytes());
                    let spirv_bytes: Vec<u8> = launch.spirv.iter().flat_map(|w| w.to_le_bytes()).collect();
                    let spirv = push(&spirv_bytes);
                    LaunchEntry {
                        name: launch.name.clone(),
                        wgsl,
                        spirv,
                        args: launch
                            .args
                            .iter()
                            .map(|a| match a {
                                Arg::Read(t) => ArgEntry::Read(t.0),
                                Arg::Write(t) => ArgEntry::Write(t.0),
                                Arg::Uniform(words) => ArgEntry::Uniform(words.iter().map(dim).collect()),
                                Arg::Status => ArgEntry::Status,
                            })
                            .collect(),
                        invocations: dim(&launch.invocations),
                        workgroup_size: launch.workgroup_size,
                        workgroups: dim(&workgroups(&launch.invocations, launch.workgroup_size)),
                        bounds: launch
                            .bounds
                            .iter()
                            .map(|b| BoundEntry {
                                what: b.what,
                                value: dim(&b.value),
                                max: b.max,
                                op: b.op.as_ref().map(check_entry),
                            })
                            .collect(),
                        requires: RequirementsEntry {
                            features: launch.requires.features.iter().map(|f| f.name().to_string()).collect(),
                            limits: launch.requires.limits.iter().map(|(l, &v)| (l.name().to_string(), v)).collect(),
                        },
                        checks: launch.checks.iter().map(check_entry).collect(),
                        ops: launch.ops.clone(),
                    }
                })
                .collect();
            Model {
                name: p.name.clone(),
                symbols: p.symbols.iter().map(|name| Symbol { name: name.clone(), min: 1 }).collect(),
                tensors: p
                    .tensors
                    .iter()
                    .map(|t| Tensor {
                        name: t.name.clone(),
                        role: match &t.role {
                            TensorRole::Input(name) => Role::Input(name.clone()),
                            TensorRole::Param(key) => Role::Param(key.clone()),
                            TensorRole::Computed => Role::Computed,
                        },
                        dtype: t.dtype.name().to_string(),
                        shape: t.shape.iter().map(dim).collect(),
                    })
                    .collect(),
                inputs: p.inputs.iter().map(|t| t.0).collect(),
                params: p.params.iter().map(|t| t.0).collect(),
                outputs: p.outputs.iter().map(|(name, t)| Output { name: name.clone(), tensor: t.0 }).collect(),
                launches,
                buffer_slots: model.buffer_slots.clone(),
                inits: p
                    .inits
                    .iter()
                    .map(|(t, init)| InitEntry {
                        tensor: t.0,
                        init: match init {
                            Init::Constant(v) => InitKind::Constant(*v),
                            Init::Uniform { low, high } => InitKind::Uniform { low: *low, high: *high },
                            Init::FanInUniform(fan_in) => InitKind::FanInUniform(dim(fan_in)),
                            Init::Normal { mean, std } => InitKind::Normal { mean: *mean, std: *std },
                        },
                    })
                    .collect(),
                updates: p.updates.iter().map(|u| UpdateEntry { output: u.output, param: u.param.0 }).collect(),
            }
        })
        .collect();
    let manifest = Manifest { producer: bundle.producer.clone(), models };
    // Serializing plain structs, strings and integers cannot fail.
    let json = serde_json::to_vec(&manifest).unwrap_or_default();
    (json, blobs)
}

fn check_entry(c: &Check) -> CheckEntry {
    CheckEntry {
        node: c.node,
        op: c.op.clone(),
        source: c.source.as_ref().map(|at| SourceEntry { file: at.file.clone(), line: at.line, column: at.column }),
    }
}

fn check(c: &CheckEntry) -> Check {
    Check {
        node: c.node,
        op: c.op.clone(),
        source: c.source.as_ref().map(|at| SourceLocation { file: at.file.clone(), line: at.line, column: at.column }),
    }
}

fn encode_dim(dim: &Dim, symbols: &[String]) -> DimEntry {
    dim.terms()
        .map(|(atoms, coef)| {
            let factors = atoms
                .iter()
                .map(|atom| match atom {
                    Atom::Sym(s) => Factor::Sym(symbols.get(s.0 as usize).cloned().unwrap_or_default()),
                    Atom::FloorDiv(numerator, divisor) => {
                        Factor::FloorDiv { of: encode_dim(numerator, symbols), by: *divisor }
                    }
                })
                .collect();
            (coef, factors)
        })
        .collect()
}

/// Decodes the manifest and takes each launch's kernels from `blobs`.
pub fn decode(manifest: &[u8], blobs: &[u8]) -> Result<Bundle, BundleProblem> {
    let manifest: Manifest = serde_json::from_slice(manifest).map_err(|e| BundleProblem::Manifest(e.to_string()))?;
    let models = manifest.models.into_iter().map(|m| decode_model(m, blobs)).collect::<Result<_, _>>()?;
    Ok(Bundle { producer: manifest.producer, models })
}

fn decode_model(model: Model, blobs: &[u8]) -> Result<BundledModel, BundleProblem> {
    let here = |what: String| BundleProblem::Manifest(format!("model `{}`: {what}", model.name));
    let symbols: Vec<String> = model.symbols.iter().map(|s| s.name.clone()).collect();
    for symbol in &model.symbols {
        if symbol.min != 1 {
            return Err(here(format!(
                "symbol `{}` has minimum {}; version {FORMAT_VERSION} bundles say 1",
                symbol.name, symbol.min
            )));
        }
    }
    let dim = |d: &DimEntry, place: &str| decode_dim(d, &symbols).map_err(|e| here(format!("{place}: {e}")));
    let mut tensors = Vec::with_capacity(model.tensors.len());
    for (i, t) in model.tensors.iter().enumerate() {
        let dtype = DType::from_name(&t.dtype)
            .ok_or_else(|| here(format!("tensor {i} (`{}`) has unknown dtype `{}`", t.name, t.dtype)))?;
        let shape = t
            .shape
            .iter()
            .enumerate()
            .map(|(axis, d)| dim(d, &format!("axis {axis} of tensor {i} (`{}`)", t.name)))
            .collect::<Result<_, _>>()?;
        let role = match &t.role {
            Role::Input(name) => TensorRole::Input(name.clone()),
            Role::Param(key) => TensorRole::Param(key.clone()),
            Role::Computed => TensorRole::Computed,
        };
        tensors.push(TensorDecl { name: t.name.clone(), role, dtype, shape });
    }
    let mut launches = Vec::with_capacity(model.launches.len());
    for (i, l) in model.launches.iter().enumerate() {
        let place = |what: &str| format!("launch {i} ({}): {what}", l.name);
        let wgsl_bytes = blob(blobs, &l.wgsl).ok_or_else(|| here(place("its WGSL lies outside the blob section")))?;
        let wgsl = String::from_utf8(wgsl_bytes.to_vec()).map_err(|_| here(place("its WGSL is not UTF-8")))?;
        let spirv_bytes =
            blob(blobs, &l.spirv).ok_or_else(|| here(place("its SPIR-V lies outside the blob section")))?;
        if spirv_bytes.len() % 4 != 0 {
            return Err(here(place("its SPIR-V is not a whole number of 4-byte words")));
        }
        let spirv: Vec<u32> =
            spirv_bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        if spirv.first() != Some(&SPIRV_MAGIC) {
            return Err(here(place("its SPIR-V does not start with the SPIR-V magic number")));
        }
        let mut args = Vec::with_capacity(l.args.len());
        for (b, a) in l.args.iter().enumerate() {
            args.push(match a {
                ArgEntry::Read(t) => Arg::Read(TensorId(*t)),
                ArgEntry::Write(t) => Arg::Write(TensorId(*t)),
                ArgEntry::Status => Arg::Status,
                ArgEntry::Uniform(words) => Arg::Uniform(
                    words
                        .iter()
                        .enumerate()
                        .map(|(w, d)| dim(d, &place(&format!("uniform word {w} of binding {b}"))))
                        .collect::<Result<_, _>>()?,
                ),
            });
        }
        let invocations = dim(&l.invocations, &place("invocations"))?;
        let grid = dim(&l.workgroups, &place("workgroups"))?;
        if grid != workgroups(&invocations, l.workgroup_size) {
            return Err(here(place(&format!(
                "its grid formula ({}) is not ceil(invocations / {}) ({})",
                grid.named(&symbols),
                l.workgroup_size,
                workgroups(&invocations, l.workgroup_size).named(&symbols)
            ))));
        }
        let bounds = l
            .bounds
            .iter()
            .map(|b| {
                let value = dim(&b.value, &place(&b.what.to_string()))?;
                Ok(Bound { what: b.what, value, max: b.max, op: b.op.as_ref().map(check) })
            })
            .collect::<Result<_, BundleProblem>>()?;
        let requires = decode_requirements(&l.requires).map_err(|e| here(place(&e)))?;
        launches.push(Launch {
            name: l.name.clone(),
            wgsl,
            spirv,
            args,
            invocations,
            workgroup_size: l.workgroup_size,
            bounds,
            requires,
            checks: l.checks.iter().map(check).collect(),
            ops: l.ops.clone(),
        });
    }
    let mut inits = Vec::with_capacity(model.inits.len());
    for (k, entry) in model.inits.iter().enumerate() {
        let init = match &entry.init {
            InitKind::Constant(v) => Init::Constant(*v),
            InitKind::Uniform { low, high } => Init::Uniform { low: *low, high: *high },
            InitKind::FanInUniform(fan_in) => Init::FanInUniform(dim(fan_in, &format!("initialiser {k}"))?),
            InitKind::Normal { mean, std } => Init::Normal { mean: *mean, std: *std },
        };
        inits.push((TensorId(entry.tensor), init));
    }
    let program = Program {
        name: model.name.clone(),
        symbols,
        tensors,
        inputs: model.inputs.iter().map(|&t| TensorId(t)).collect(),
        params: model.params.iter().map(|&t| TensorId(t)).collect(),
        outputs: model.outputs.iter().map(|o| (o.name.clone(), TensorId(o.tensor))).collect(),
        launches,
        inits,
        updates: model.updates.iter().map(|u| Update { output: u.output, param: TensorId(u.param) }).collect(),
    };
    Ok(BundledModel { program, buffer_slots: model.buffer_slots })
}

fn blob<'a>(blobs: &'a [u8], at: &Blob) -> Option<&'a [u8]> {
    let start = usize::try_from(at.offset).ok()?;
    let end = start.checked_add(usize::try_from(at.len).ok()?)?;
    blobs.get(start..end)
}

/// Nesting limit for floor divisions (the compiler's dimensions nest a few levels at most).
const MAX_DEPTH: usize = 32;

fn decode_requirements(entry: &RequirementsEntry) -> Result<Requirements, String> {
    let mut requires = Requirements::default();
    for name in &entry.features {
        let feature = Feature::from_name(name).ok_or_else(|| {
            format!("it needs the feature `{name}`, which this runtime does not know (a bundle from a newer compiler?)")
        })?;
        requires.features.insert(feature);
    }
    for (name, &value) in &entry.limits {
        let limit = Limit::from_name(name).ok_or_else(|| {
            format!("it needs the limit `{name}`, which this runtime does not know (a bundle from a newer compiler?)")
        })?;
        requires.limits.insert(limit, value);
    }
    Ok(requires)
}

fn decode_dim(dim: &DimEntry, symbols: &[String]) -> Result<Dim, String> {
    decode_dim_at(dim, symbols, 0)
}

/// Rebuilds the dimension through `Dim`'s own arithmetic, so a decoded dimension is in canonical form
/// whatever the manifest wrote.
fn decode_dim_at(dim: &DimEntry, symbols: &[String], depth: usize) -> Result<Dim, String> {
    if depth > MAX_DEPTH {
        return Err(format!("floor divisions nest deeper than {MAX_DEPTH}"));
    }
    let overflow = |e: crate::dim::DimError| e.to_string();
    let mut total = Dim::constant(0);
    for (coef, factors) in dim {
        let mut term = Dim::constant(*coef);
        for factor in factors {
            let value = match factor {
                Factor::Sym(name) => Dim::sym(SymId(
                    symbols.iter().position(|s| s == name).ok_or_else(|| format!("unknown symbol `{name}`"))? as u32,
                )),
                Factor::FloorDiv { of, by } => {
                    if *by < 1 {
                        return Err(format!("a floor division by {by}; a divisor must be at least 1"));
                    }
                    decode_dim_at(of, symbols, depth + 1)?.div(&Dim::constant(*by)).map_err(overflow)?
                }
            };
            term = term.mul(&value).map_err(overflow)?;
        }
        total = total.add(&term).map_err(overflow)?;
    }
    Ok(total)
}
