//! The bundle manifest: the JSON form of each model's `Program`, buffer plan and device requirements, and
//! the kernel blobs it points into (spec/bundle.md §B3 gives the schema). Encoding is deterministic: serde
//! writes struct fields in declaration order and the only map (`limits`) is a `BTreeMap`. Decoding rejects
//! unknown fields, names no symbol that is not declared, and checks every blob range, every WGSL blob (UTF-8)
//! and SPIR-V blob (whole words, the SPIR-V magic number) and each launch's grid formula; the first problem
//! is the error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Bundle, BundleProblem, BundledModel};
use crate::DType;
use crate::program::{Arg, Bound, DimAtom, DimExpr, Launch, Program, TensorDecl, TensorId, TensorRole};

/// The first word of every SPIR-V module.
const SPIRV_MAGIC: u32 = 0x0723_0203;

/// What one kernel needs from the device beyond what every device offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Optional features by name: `shader-f16` (`wgpu::Features::SHADER_F16`, f16 arithmetic in the
    /// kernel), `shader-f16-in-f32` (the downlevel capability behind `quantizeToF16`) or `subgroup`
    /// (`wgpu::Features::SUBGROUP`: subgroup built-ins and shuffles).
    pub features: Vec<String>,
    /// Device limits by their `wgpu::Limits` field name, each the least value the kernel needs.
    pub limits: BTreeMap<String, u64>,
}

impl Requirements {
    /// What `launch` needs: one bind group holding its bindings (storage buffers and uniform blocks counted
    /// apart), its workgroup size, its largest uniform block, its workgroup memory, and the features its
    /// kernel text uses.
    pub fn of(launch: &Launch) -> Requirements {
        let storage = launch.args.iter().filter(|a| !matches!(a, Arg::Uniform(_))).count() as u64;
        let uniforms = launch.args.iter().filter(|a| matches!(a, Arg::Uniform(_))).count() as u64;
        let uniform_bytes = launch
            .args
            .iter()
            .map(|a| if let Arg::Uniform(words) = a { 4 * words.len().max(1) as u64 } else { 0 })
            .max()
            .unwrap_or(0);
        let size = u64::from(launch.workgroup_size);
        let limits = [
            ("max_bind_groups", 1),
            ("max_bindings_per_bind_group", launch.args.len() as u64),
            ("max_storage_buffers_per_shader_stage", storage),
            ("max_uniform_buffers_per_shader_stage", uniforms),
            ("max_uniform_buffer_binding_size", uniform_bytes),
            ("max_compute_workgroup_size_x", size),
            ("max_compute_invocations_per_workgroup", size),
        ];
        let mut limits: BTreeMap<String, u64> = limits.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let shared = workgroup_bytes(&launch.wgsl);
        if shared > 0 {
            limits.insert("max_compute_workgroup_storage_size".to_string(), shared);
        }
        let mut features = Vec::new();
        if launch.wgsl.contains("enable f16;") {
            features.push("shader-f16".to_string());
        }
        if launch.wgsl.contains("quantizeToF16") {
            features.push("shader-f16-in-f32".to_string());
        }
        if launch.wgsl.contains("@builtin(subgroup") || launch.wgsl.contains("subgroupShuffle") {
            features.push("subgroup".to_string());
        }
        Requirements { features, limits }
    }
}

/// Bytes of workgroup memory the WGSL declares (`var<workgroup> name: array<f32, 256>;` is 1024); a type
/// this does not recognise counts as 16 bytes per element, more than any scalar or vector of 4 words needs.
fn workgroup_bytes(wgsl: &str) -> u64 {
    let scalar = |ty: &str| match ty.trim() {
        "f16" => 2,
        "f32" | "i32" | "u32" | "bool" => 4,
        _ => 16,
    };
    wgsl.lines()
        .filter_map(|line| line.trim().strip_prefix("var<workgroup>"))
        .filter_map(|rest| rest.split_once(':').map(|(_, ty)| ty.trim().trim_end_matches(';').trim()))
        .map(|ty| match ty.strip_prefix("array<").and_then(|t| t.strip_suffix('>')).and_then(|t| t.rsplit_once(',')) {
            Some((element, count)) => count.trim().parse::<u64>().map_or(u64::MAX / 2, |n| n * scalar(element)),
            None => scalar(ty),
        })
        .fold(0u64, |total, bytes| total.saturating_add(bytes))
}

/// The grid formula of a launch: `floor((invocations + workgroup_size - 1) / workgroup_size)` workgroups
/// (before folding into two dimensions, spec/runtime.md G2.3).
pub fn workgroups(invocations: &DimExpr, workgroup_size: u32) -> DimExpr {
    let mut numerator = invocations.clone();
    let extra = i64::from(workgroup_size.max(1)) - 1;
    match numerator.terms.iter_mut().find(|(_, atoms)| atoms.is_empty()) {
        Some(term) => term.0 = term.0.saturating_add(extra),
        None if extra != 0 => numerator.terms.push((extra, vec![])),
        None => {}
    }
    numerator.terms.retain(|(coef, _)| *coef != 0);
    DimExpr { terms: vec![(1, vec![DimAtom::FloorDiv(Box::new(numerator), i64::from(workgroup_size.max(1)))])] }
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
    shape: Vec<Dim>,
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

/// A `DimExpr` as its terms, each `[coefficient, [factors]]`.
type Dim = Vec<(i64, Vec<Factor>)>;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Factor {
    /// A symbol, by name.
    Sym(String),
    /// `floor(of / by)`.
    FloorDiv { of: Dim, by: i64 },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchEntry {
    name: String,
    wgsl: Blob,
    spirv: Blob,
    args: Vec<ArgEntry>,
    invocations: Dim,
    workgroup_size: u32,
    /// `workgroups(invocations, workgroup_size)`, for readers; checked on load.
    workgroups: Dim,
    bounds: Vec<BoundEntry>,
    requires: RequirementsEntry,
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
    Uniform(Vec<Dim>),
    Status,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoundEntry {
    what: String,
    value: Dim,
    max: i64,
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
            let dim = |d: &DimExpr| encode_dim(d, &p.symbols);
            let launches = p
                .launches
                .iter()
                .enumerate()
                .map(|(i, launch)| {
                    let wgsl = push(launch.wgsl.as_bytes());
                    let spirv_bytes: Vec<u8> = launch.spirv.iter().flat_map(|w| w.to_le_bytes()).collect();
                    let spirv = push(&spirv_bytes);
                    let requires = model.requirements.get(i).cloned().unwrap_or_default();
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
                            .map(|b| BoundEntry { what: b.what.clone(), value: dim(&b.value), max: b.max })
                            .collect(),
                        requires: RequirementsEntry { features: requires.features, limits: requires.limits },
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
            }
        })
        .collect();
    let manifest = Manifest { producer: bundle.producer.clone(), models };
    // Serializing plain structs, strings and integers cannot fail.
    let json = serde_json::to_vec(&manifest).unwrap_or_default();
    (json, blobs)
}

fn encode_dim(dim: &DimExpr, symbols: &[String]) -> Dim {
    dim.terms
        .iter()
        .map(|(coef, atoms)| {
            let factors = atoms
                .iter()
                .map(|atom| match atom {
                    DimAtom::Sym(s) => Factor::Sym(symbols.get(*s as usize).cloned().unwrap_or_default()),
                    DimAtom::FloorDiv(numerator, divisor) => {
                        Factor::FloorDiv { of: encode_dim(numerator, symbols), by: *divisor }
                    }
                })
                .collect();
            (*coef, factors)
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
            return Err(here(format!("symbol `{}` has minimum {}; version 1 bundles say 1", symbol.name, symbol.min)));
        }
    }
    let dim = |d: &Dim, place: &str| decode_dim(d, &symbols).map_err(|e| here(format!("{place}: {e}")));
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
    let mut requirements = Vec::with_capacity(model.launches.len());
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
                grid.display(&symbols),
                l.workgroup_size,
                workgroups(&invocations, l.workgroup_size).display(&symbols)
            ))));
        }
        let bounds = l
            .bounds
            .iter()
            .map(|b| Ok(Bound { what: b.what.clone(), value: dim(&b.value, &place(&b.what))?, max: b.max }))
            .collect::<Result<_, BundleProblem>>()?;
        launches.push(Launch {
            name: l.name.clone(),
            wgsl,
            spirv,
            args,
            invocations,
            workgroup_size: l.workgroup_size,
            bounds,
        });
        requirements.push(Requirements { features: l.requires.features.clone(), limits: l.requires.limits.clone() });
    }
    let program = Program {
        name: model.name.clone(),
        symbols,
        tensors,
        inputs: model.inputs.iter().map(|&t| TensorId(t)).collect(),
        params: model.params.iter().map(|&t| TensorId(t)).collect(),
        outputs: model.outputs.iter().map(|o| (o.name.clone(), TensorId(o.tensor))).collect(),
        launches,
    };
    Ok(BundledModel { program, buffer_slots: model.buffer_slots, requirements })
}

fn blob<'a>(blobs: &'a [u8], at: &Blob) -> Option<&'a [u8]> {
    let start = usize::try_from(at.offset).ok()?;
    let end = start.checked_add(usize::try_from(at.len).ok()?)?;
    blobs.get(start..end)
}

/// Nesting limit for floor divisions (the compiler's dimensions nest a few levels at most).
const MAX_DEPTH: usize = 32;

fn decode_dim(dim: &Dim, symbols: &[String]) -> Result<DimExpr, String> {
    decode_dim_at(dim, symbols, 0)
}

fn decode_dim_at(dim: &Dim, symbols: &[String], depth: usize) -> Result<DimExpr, String> {
    if depth > MAX_DEPTH {
        return Err(format!("floor divisions nest deeper than {MAX_DEPTH}"));
    }
    let mut terms = Vec::with_capacity(dim.len());
    for (coef, factors) in dim {
        let mut atoms = Vec::with_capacity(factors.len());
        for factor in factors {
            atoms.push(match factor {
                Factor::Sym(name) => DimAtom::Sym(
                    symbols.iter().position(|s| s == name).ok_or_else(|| format!("unknown symbol `{name}`"))? as u32,
                ),
                Factor::FloorDiv { of, by } => {
                    if *by < 1 {
                        return Err(format!("a floor division by {by}; a divisor must be at least 1"));
                    }
                    DimAtom::FloorDiv(Box::new(decode_dim_at(of, symbols, depth + 1)?), *by)
                }
            });
        }
        terms.push((*coef, atoms));
    }
    Ok(DimExpr { terms })
}
