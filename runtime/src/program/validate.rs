//! `Program::validate`: checks the invariants of `program.rs`'s module comment before anything is bound or
//! allocated, so a bad program (a compiler bug, later a damaged bundle) is a list of clear errors rather
//! than an index out of range or a wgpu validation failure mid-run. Every violation is collected. It cannot
//! see inside the WGSL: whether kernel binding `i` really is `args[i]` is only found out when the launch runs.

use super::{Arg, Program, TensorDecl, TensorId, TensorRole};
use crate::dim::Dim;
use std::collections::HashSet;

/// One broken invariant of a `Program`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// A tensor index out of range.
    #[error("{place} names tensor {id}, but the program has {count} tensor(s)")]
    UnknownTensor {
        /// Where, in words (a tensor's axis, a launch's argument, ...).
        place: String,
        /// The tensor's index.
        id: u32,
        /// How many the program has.
        count: usize,
    },
    /// A symbol index out of range.
    #[error("{place} uses symbol {index}, but the program has {count} symbol(s)")]
    UnknownSymbol {
        /// Where, in words (a tensor's axis, a launch's argument, ...).
        place: String,
        /// The symbol's index.
        index: u32,
        /// How many the program has.
        count: usize,
    },
    /// Two items with one name.
    #[error("two {what} are named `{name}`")]
    DuplicateName {
        /// What kind of item.
        what: &'static str,
        /// The name (of the launch's kernel, for launches).
        name: String,
    },
    /// A tensor of the wrong role in a signature list.
    #[error("{place} is tensor {id} (`{tensor}`), which is {actual}, not {expected}")]
    WrongRole {
        /// Where, in words (a tensor's axis, a launch's argument, ...).
        place: String,
        /// The tensor's index.
        id: u32,
        /// The tensor's name.
        tensor: String,
        /// The role it must have.
        expected: &'static str,
        /// The role it has.
        actual: &'static str,
    },
    /// An input or param missing from its list.
    #[error("tensor {id} (`{tensor}`) is {role} but `{list}` does not list it")]
    Unlisted {
        /// The tensor's index.
        id: u32,
        /// The tensor's name.
        tensor: String,
        /// Its role.
        role: &'static str,
        /// The list (`inputs` or `params`).
        list: &'static str,
    },
    /// A tensor listed twice.
    #[error("`{list}` lists tensor {id} (`{tensor}`) twice")]
    ListedTwice {
        /// The tensor's index.
        id: u32,
        /// The tensor's name.
        tensor: String,
        /// The list (`inputs` or `params`).
        list: &'static str,
    },
    /// A launch without a `Write` argument.
    #[error("launch {launch} ({name}) writes no tensor; a launch writes at least one")]
    NoWrite {
        /// The launch's index.
        launch: usize,
        /// The name (of the launch's kernel, for launches).
        name: String,
    },
    /// A launch writing an input or param.
    #[error("launch {launch} ({name}) writes tensor {id} (`{tensor}`), which is {role}, not computed")]
    WritesNonComputed {
        /// The launch's index.
        launch: usize,
        /// The name (of the launch's kernel, for launches).
        name: String,
        /// The tensor's index.
        id: u32,
        /// The tensor's name.
        tensor: String,
        /// Its role.
        role: &'static str,
    },
    /// A launch binding the tensor it writes a second time.
    #[error("launch {launch} ({name}) binds tensor {id} (`{tensor}`) again besides writing it")]
    BindsItsOutputTwice {
        /// The launch's index.
        launch: usize,
        /// The name (of the launch's kernel, for launches).
        name: String,
        /// The tensor's index.
        id: u32,
        /// The tensor's name.
        tensor: String,
    },
    /// A read of a computed tensor no earlier launch wrote.
    #[error("launch {launch} ({name}) reads tensor {id} (`{tensor}`) before any launch writes it")]
    ReadBeforeWrite {
        /// The launch's index.
        launch: usize,
        /// The name (of the launch's kernel, for launches).
        name: String,
        /// The tensor's index.
        id: u32,
        /// The tensor's name.
        tensor: String,
    },
    /// A computed output no launch writes.
    #[error("output `{output}` is tensor {id} (`{tensor}`), which no launch writes")]
    OutputNotWritten {
        /// The output's name.
        output: String,
        /// The tensor's index.
        id: u32,
        /// The tensor's name.
        tensor: String,
    },
    /// An initialiser that names no param, a second one for a param, or a bad one.
    #[error("initialiser {index} (of tensor {id}): {problem}")]
    BadInit {
        /// Its index in `inits`.
        index: usize,
        /// The tensor it names.
        id: u32,
        /// What is wrong.
        problem: String,
    },
    /// An update whose output or param is wrong, or that disagrees with its param.
    #[error("update {index} (output {output} into tensor {param}): {problem}")]
    BadUpdate {
        /// Its index in `updates`.
        index: usize,
        /// The output it reads.
        output: usize,
        /// The param it writes.
        param: u32,
        /// What is wrong.
        problem: String,
    },
    /// A launch whose ops (`GroupOps`) break an invariant of `program/ops.rs`.
    #[error("launch {launch} ({name}), in its ops: {problem}")]
    BadOps {
        /// The launch's index.
        launch: usize,
        /// The launch's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// A launch with workgroup size 0.
    #[error("launch {launch} ({name}) has workgroup size 0")]
    ZeroWorkgroupSize {
        /// The launch's index.
        launch: usize,
        /// The name (of the launch's kernel, for launches).
        name: String,
    },
}

impl Program {
    /// Every broken invariant (see the module comment of `program.rs`), or `Ok` when there is none.
    pub fn validate(&self) -> Result<(), Vec<ProgramError>> {
        let mut v = Validator { program: self, problems: Vec::new() };
        v.symbols_and_shapes();
        v.signature_list("inputs", &self.inputs, Role::Input);
        v.signature_list("params", &self.params, Role::Param);
        let written = v.launches();
        v.outputs(&written);
        v.inits();
        v.updates();
        if v.problems.is_empty() { Ok(()) } else { Err(v.problems) }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Input,
    Param,
    Computed,
}

impl Role {
    fn of(role: &TensorRole) -> Role {
        match role {
            TensorRole::Input(_) => Role::Input,
            TensorRole::Param(_) => Role::Param,
            TensorRole::Computed => Role::Computed,
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Role::Input => "an input",
            Role::Param => "a param",
            Role::Computed => "computed",
        }
    }
}

struct Validator<'a> {
    program: &'a Program,
    problems: Vec<ProgramError>,
}

impl<'a> Validator<'a> {
    fn symbols_and_shapes(&mut self) {
        let p = self.program;
        let mut names = HashSet::new();
        for name in &p.symbols {
            if !names.insert(name.as_str()) {
                self.problems.push(ProgramError::DuplicateName { what: "symbols", name: name.clone() });
            }
        }
        let (mut inputs, mut params) = (HashSet::new(), HashSet::new());
        for (i, decl) in p.tensors.iter().enumerate() {
            for dim in &decl.shape {
                self.dim(dim, &format!("the shape of tensor {i} (`{}`)", decl.name));
            }
            let (seen, what, name) = match &decl.role {
                TensorRole::Input(name) => (&mut inputs, "inputs", name),
                TensorRole::Param(key) => (&mut params, "params", key),
                TensorRole::Computed => continue,
            };
            if !seen.insert(name.as_str()) {
                self.problems.push(ProgramError::DuplicateName { what, name: name.clone() });
            }
        }
    }

    /// `inputs` or `params`: known tensors of the right role, each once, and every tensor of that role.
    fn signature_list(&mut self, list: &'static str, ids: &[TensorId], role: Role) {
        let mut listed = HashSet::new();
        for (k, &id) in ids.iter().enumerate() {
            let place = format!("`{list}[{k}]`");
            let Some(decl) = self.tensor(id, &place) else { continue };
            let actual = Role::of(&decl.role);
            if actual != role {
                self.problems.push(ProgramError::WrongRole {
                    place,
                    id: id.0,
                    tensor: decl.name.clone(),
                    expected: role.describe(),
                    actual: actual.describe(),
                });
            } else if !listed.insert(id) {
                self.problems.push(ProgramError::ListedTwice { id: id.0, tensor: decl.name.clone(), list });
            }
        }
        for (i, decl) in self.program.tensors.iter().enumerate() {
            let id = TensorId(i as u32);
            if Role::of(&decl.role) == role && !listed.contains(&id) {
                self.problems.push(ProgramError::Unlisted {
                    id: id.0,
                    tensor: decl.name.clone(),
                    role: role.describe(),
                    list,
                });
            }
        }
    }

    /// Checks every launch in order; returns the tensors written by some launch.
    fn launches(&mut self) -> HashSet<TensorId> {
        let p = self.program;
        let mut written = HashSet::new();
        let mut names = HashSet::new();
        for (index, launch) in p.launches.iter().enumerate() {
            let name = &launch.name;
            let here = format!("launch {index} ({name})");
            if !names.insert(name.as_str()) {
                self.problems.push(ProgramError::DuplicateName { what: "launches", name: name.clone() });
            }
            if launch.workgroup_size == 0 {
                self.problems.push(ProgramError::ZeroWorkgroupSize { launch: index, name: name.clone() });
            }
            self.dim(&launch.invocations, &format!("the invocation count of {here}"));
            for bound in &launch.bounds {
                self.dim(&bound.value, &format!("the bound `{}` of {here}", bound.what));
            }
            let writes: Vec<TensorId> =
                launch.args.iter().filter_map(|a| if let Arg::Write(t) = a { Some(*t) } else { None }).collect();
            if writes.is_empty() {
                self.problems.push(ProgramError::NoWrite { launch: index, name: name.clone() });
            }
            for (binding, arg) in launch.args.iter().enumerate() {
                let place = format!("binding {binding} of {here}");
                match arg {
                    Arg::Uniform(words) => {
                        for (w, dim) in words.iter().enumerate() {
                            self.dim(dim, &format!("uniform word {w} of {place}"));
                        }
                    }
                    Arg::Status => {}
                    Arg::Write(id) => {
                        let Some(decl) = self.tensor(*id, &place) else { continue };
                        let role = Role::of(&decl.role);
                        if role != Role::Computed {
                            self.problems.push(ProgramError::WritesNonComputed {
                                launch: index,
                                name: name.clone(),
                                id: id.0,
                                tensor: decl.name.clone(),
                                role: role.describe(),
                            });
                        }
                    }
                    Arg::Read(id) => {
                        let Some(decl) = self.tensor(*id, &place) else { continue };
                        if decl.role == TensorRole::Computed && !written.contains(id) && !writes.contains(id) {
                            self.problems.push(ProgramError::ReadBeforeWrite {
                                launch: index,
                                name: name.clone(),
                                id: id.0,
                                tensor: decl.name.clone(),
                            });
                        }
                    }
                }
            }
            for &out in &writes {
                let uses =
                    launch.args.iter().filter(|a| matches!(a, Arg::Read(t) | Arg::Write(t) if *t == out)).count();
                if let Some(decl) = p.tensors.get(out.0 as usize)
                    && uses > 1
                {
                    self.problems.push(ProgramError::BindsItsOutputTwice {
                        launch: index,
                        name: name.clone(),
                        id: out.0,
                        tensor: decl.name.clone(),
                    });
                }
            }
            self.ops(index, launch, &writes, &written);
            written.extend(writes);
        }
        written
    }

    /// A launch's ops (none is allowed: a hand-written kernel that only the GPU runs, which the CPU executor
    /// refuses by name): operands before users, tensor leaves inputs, params or tensors earlier launches
    /// write (a map may list an operand its body never loads, which the kernel does not bind), stores exactly
    /// its writes, each with the tensor's type, and every dimension's symbols declared.
    fn ops(&mut self, index: usize, launch: &super::Launch, writes: &[TensorId], written: &HashSet<TensorId>) {
        use super::{ScalarOp, TensorOp};
        let ops = &launch.ops;
        if ops.nodes.is_empty() && ops.stores.is_empty() {
            return;
        }
        let here = format!("launch {index} ({})", launch.name);
        let bad = |problem: String| ProgramError::BadOps { launch: index, name: launch.name.clone(), problem };
        let mut problems = Vec::new();
        let mut dims: Vec<(&Dim, String)> = Vec::new();
        let typed = |decl: &TensorDecl, node: &super::OpNode| decl.dtype == node.dtype && decl.shape == node.shape;
        for (k, node) in ops.nodes.iter().enumerate() {
            let place = format!("node {k} ({})", node.op.name());
            for operand in node.op.operands() {
                if operand.index() >= k {
                    problems.push(bad(format!("{place} reads node {}, which does not come before it", operand.0)));
                }
            }
            for dim in &node.shape {
                dims.push((dim, format!("the shape of {place} in {here}")));
            }
            match &node.op {
                TensorOp::Tensor(id) => match self.program.tensors.get(id.0 as usize) {
                    None => problems.push(bad(format!("{place} reads tensor {}, which does not exist", id.0))),
                    Some(decl) => {
                        if decl.role == TensorRole::Computed && !written.contains(id) {
                            problems.push(bad(format!("{place} reads `{}` before any launch writes it", decl.name)));
                        } else if !typed(decl, node) {
                            problems.push(bad(format!("{place} reads `{}` with another dtype or shape", decl.name)));
                        }
                    }
                },
                TensorOp::DimValue(dim) | TensorOp::Slice { start: dim, .. } => {
                    dims.push((dim, format!("{place} in {here}")))
                }
                TensorOp::Map(map) => {
                    for dim in &map.extents {
                        dims.push((dim, format!("an extent of {place} in {here}")));
                    }
                    let vars = map.extents.len();
                    if map.body.index() >= map.exprs.len() {
                        problems.push(bad(format!("{place} has no scalar node {}", map.body.0)));
                    }
                    for (j, scalar) in map.exprs.iter().enumerate() {
                        for operand in scalar.expr.operands() {
                            if operand.index() >= j {
                                problems.push(bad(format!(
                                    "scalar {j} of {place} reads scalar {}, not before it",
                                    operand.0
                                )));
                            }
                        }
                        let mut var_ids = Vec::new();
                        match &scalar.expr {
                            ScalarOp::Load { input, indices, .. } => {
                                if *input >= map.inputs.len() {
                                    problems.push(bad(format!(
                                        "scalar {j} of {place} loads input {input}, which it lacks"
                                    )));
                                }
                                for affine in indices {
                                    var_ids.extend(affine.terms.iter().map(|(v, _)| *v));
                                    if affine.div < 1 {
                                        problems.push(bad(format!(
                                            "scalar {j} of {place} divides an index by {}",
                                            affine.div
                                        )));
                                    }
                                    dims.push((&affine.offset, format!("scalar {j} of {place} in {here}")));
                                    for (_, coef) in &affine.terms {
                                        dims.push((coef, format!("scalar {j} of {place} in {here}")));
                                    }
                                }
                            }
                            ScalarOp::Var(v) => var_ids.push(*v),
                            ScalarOp::Reduce { vars: reduced, .. } => var_ids.extend(reduced.iter().copied()),
                            ScalarOp::Dim(dim) => dims.push((dim, format!("scalar {j} of {place} in {here}"))),
                            _ => {}
                        }
                        if let Some(v) = var_ids.iter().find(|v| v.0 as usize >= vars) {
                            problems.push(bad(format!("scalar {j} of {place} uses index variable {}, of {vars}", v.0)));
                        }
                    }
                }
                _ => {}
            }
        }
        let mut stored = HashSet::new();
        for store in &ops.stores {
            let Some(node) = ops.nodes.get(store.node.index()) else {
                problems.push(bad(format!(
                    "the store into tensor {} is from node {}, which does not exist",
                    store.tensor.0, store.node.0
                )));
                continue;
            };
            if !writes.contains(&store.tensor) || !stored.insert(store.tensor) {
                problems.push(bad(format!(
                    "the store into tensor {} is not one of the launch's writes, once",
                    store.tensor.0
                )));
            } else if let Some(decl) = self.program.tensors.get(store.tensor.0 as usize)
                && !typed(decl, node)
            {
                problems.push(bad(format!("the store into `{}` is from a node of another dtype or shape", decl.name)));
            }
        }
        if let Some(missing) = writes.iter().find(|t| !stored.contains(t)) {
            problems.push(bad(format!("tensor {}, which the launch writes, is not stored", missing.0)));
        }
        self.problems.extend(problems);
        for (dim, place) in dims {
            self.dim(dim, &place);
        }
    }

    /// Each initialiser names a param, once, with finite numbers (a positive spread) and a valid fan-in.
    fn inits(&mut self) {
        let p = self.program;
        let mut seen = HashSet::new();
        for (index, (id, init)) in p.inits.iter().enumerate() {
            let bad = |problem: String| ProgramError::BadInit { index, id: id.0, problem };
            let problem = match p.tensors.get(id.0 as usize) {
                None => Some(format!("there is no tensor {}", id.0)),
                Some(decl) if !matches!(decl.role, TensorRole::Param(_)) => {
                    Some(format!("tensor `{}` is not a param", decl.name))
                }
                Some(decl) if !seen.insert(*id) => Some(format!("param `{}` has two initialisers", decl.name)),
                Some(decl) if !decl.dtype.is_float() => {
                    Some(format!("param `{}` is {}, not a float tensor", decl.name, decl.dtype.name()))
                }
                Some(_) => match init {
                    super::Init::Constant(v) if !v.is_finite() => Some(format!("constant {v} is not finite")),
                    super::Init::Uniform { low, high } if !(low.is_finite() && high.is_finite() && low <= high) => {
                        Some(format!("uniform({low}, {high}) is not a finite range"))
                    }
                    super::Init::Normal { mean, std } if !(mean.is_finite() && std.is_finite() && *std >= 0.0) => {
                        Some(format!("normal({mean}, {std}) needs a finite mean and a finite std >= 0"))
                    }
                    super::Init::FanInUniform(fan_in) => {
                        self.dim(fan_in, &format!("the fan-in of initialiser {index}"));
                        None
                    }
                    _ => None,
                },
            };
            if let Some(problem) = problem {
                let e = bad(problem);
                self.problems.push(e);
            }
        }
    }

    /// Each update reads an output of the param's dtype and shape into a param, each param at most once.
    fn updates(&mut self) {
        let p = self.program;
        let mut seen = HashSet::new();
        for (index, update) in p.updates.iter().enumerate() {
            let bad = |problem: String| ProgramError::BadUpdate {
                index,
                output: update.output,
                param: update.param.0,
                problem,
            };
            let Some((name, source)) = p.outputs.get(update.output) else {
                self.problems.push(bad(format!("the program has {} output(s)", p.outputs.len())));
                continue;
            };
            let (Some(decl), Some(value)) = (p.tensors.get(update.param.0 as usize), p.tensors.get(source.0 as usize))
            else {
                self.problems.push(bad("it names a tensor the program does not have".into()));
                continue;
            };
            if !matches!(decl.role, TensorRole::Param(_)) {
                self.problems.push(bad(format!("tensor `{}` is not a param", decl.name)));
            } else if !seen.insert(update.param) {
                self.problems.push(bad(format!("param `{}` is updated twice", decl.name)));
            } else if decl.dtype != value.dtype || decl.shape != value.shape {
                self.problems.push(bad(format!(
                    "output `{name}` is {}, param `{}` is {}",
                    p.type_string(value),
                    decl.name,
                    p.type_string(decl)
                )));
            }
        }
    }

    fn outputs(&mut self, written: &HashSet<TensorId>) {
        for (name, id) in &self.program.outputs {
            let Some(decl) = self.tensor(*id, &format!("output `{name}`")) else { continue };
            if decl.role == TensorRole::Computed && !written.contains(id) {
                self.problems.push(ProgramError::OutputNotWritten {
                    output: name.clone(),
                    id: id.0,
                    tensor: decl.name.clone(),
                });
            }
        }
    }

    /// The tensor `id` names, or `None` after recording that it names none.
    fn tensor(&mut self, id: TensorId, place: &str) -> Option<&'a TensorDecl> {
        let tensors = &self.program.tensors;
        let decl = tensors.get(id.0 as usize);
        if decl.is_none() {
            self.problems.push(ProgramError::UnknownTensor {
                place: place.to_string(),
                id: id.0,
                count: tensors.len(),
            });
        }
        decl
    }

    fn dim(&mut self, dim: &Dim, place: &str) {
        for symbol in dim.symbols() {
            if symbol.0 as usize >= self.program.symbols.len() {
                self.problems.push(ProgramError::UnknownSymbol {
                    place: place.to_string(),
                    index: symbol.0,
                    count: self.program.symbols.len(),
                });
            }
        }
    }
}
