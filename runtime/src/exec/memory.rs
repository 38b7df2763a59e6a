//! Buffer planning: computed tensors share device buffers by liveness, so peak memory is far below the sum
//! of all intermediates. Walking the launches in order, each launch's result takes the smallest free buffer
//! that is large enough (or a new one), and after the launch every tensor read for the last time frees its
//! buffer. Outputs are never freed, and a result never shares a buffer with a tensor its own launch reads
//! (frees happen after the launch's allocation). Inputs and params keep buffers of their own.
//!
//! A bundle carries its plan as *slots* (`plan_slots`): the same walk with nominal sizes (every symbol 64),
//! so the assignment holds for every size; at run time a slot's buffer is as large as its largest tensor
//! (`memory_from_slots`). `check_slots` verifies a carried plan before anything runs: two tensors share a
//! slot only when the first is read for the last time before the second is written, and an output shares
//! with nothing written after it.

use crate::program::{Arg, Program, TensorRole};

/// Where every tensor lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// For each computed tensor, its buffer (an index into `buffers`); `None` for inputs and params.
    pub buffer_of: Vec<Option<usize>>,
    /// Byte size of each shared buffer.
    pub buffers: Vec<u64>,
    /// Bytes of inputs and params (one buffer each).
    pub signature_bytes: u64,
    /// Device bytes of the whole run: inputs, params and the shared buffers.
    pub peak_bytes: u64,
    /// What the run would take with one buffer per tensor.
    pub unshared_bytes: u64,
}

/// Plans buffers for `program` whose tensors have the byte sizes `bytes` (one per tensor).
pub fn plan_memory(program: &Program, bytes: &[u64]) -> MemoryPlan {
    let n = program.tensors.len();
    let mut last_read: Vec<Option<usize>> = vec![None; n];
    for (i, launch) in program.launches.iter().enumerate() {
        for arg in &launch.args {
            if let Arg::Read(t) = arg
                && let Some(slot) = last_read.get_mut(t.0 as usize)
            {
                *slot = Some(i);
            }
        }
    }
    let mut pinned = vec![false; n];
    for (_, t) in &program.outputs {
        if let Some(p) = pinned.get_mut(t.0 as usize) {
            *p = true;
        }
    }
    let size = |t: usize| bytes.get(t).copied().unwrap_or(4).max(4);
    let mut plan = MemoryPlan {
        buffer_of: vec![None; n],
        buffers: Vec::new(),
        signature_bytes: 0,
        peak_bytes: 0,
        unshared_bytes: 0,
    };
    for (t, decl) in program.tensors.iter().enumerate() {
        plan.unshared_bytes += size(t);
        if decl.role != TensorRole::Computed {
            plan.signature_bytes += size(t);
        }
    }
    let mut free: Vec<usize> = Vec::new();
    for (i, launch) in program.launches.iter().enumerate() {
        for arg in &launch.args {
            let Arg::Write(t) = arg else { continue };
            let t = t.0 as usize;
            if t >= n || plan.buffer_of[t].is_some() {
                continue;
            }
            let need = size(t);
            let best = free
                .iter()
                .enumerate()
                .filter(|&(_, &b)| plan.buffers[b] >= need)
                .min_by_key(|&(_, &b)| plan.buffers[b])
                .map(|(k, _)| k);
            let buffer = match best {
                Some(k) => free.swap_remove(k),
                None => {
                    plan.buffers.push(need);
                    plan.buffers.len() - 1
                }
            };
            plan.buffer_of[t] = Some(buffer);
        }
        for (t, last) in last_read.iter().enumerate() {
            if *last == Some(i)
                && !pinned[t]
                && let Some(b) = plan.buffer_of[t]
            {
                free.push(b);
            }
        }
    }
    plan.peak_bytes = plan.signature_bytes + plan.buffers.iter().sum::<u64>();
    plan
}

/// The symbol value `plan_slots` sizes tensors with.
pub const NOMINAL_SYMBOL: i64 = 64;

/// A buffer plan valid for every symbol value: for each tensor, its slot (`None` for inputs, params and
/// computed tensors no launch writes), chosen by `plan_memory` with every symbol at `NOMINAL_SYMBOL`.
pub fn plan_slots(program: &Program) -> Vec<Option<usize>> {
    let symbols = vec![NOMINAL_SYMBOL; program.symbols.len()];
    let bytes: Vec<u64> = program
        .tensors
        .iter()
        .map(|decl| {
            let count = decl
                .shape
                .iter()
                .fold(1u64, |n, dim| n.saturating_mul(dim.eval_at(&symbols).map_or(u64::MAX, |v| v.max(0) as u64)));
            count.saturating_mul(decl.dtype.size() as u64)
        })
        .collect();
    plan_memory(program, &bytes).buffer_of
}

/// One way a carried buffer plan is wrong (`check_slots`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotProblem {
    /// Not one entry per tensor.
    #[error("it has {got} entries, but the program has {tensors} tensors")]
    Length {
        /// Entries in the plan.
        got: usize,
        /// Tensors in the program.
        tensors: usize,
    },
    /// An input, param or unwritten tensor with a slot.
    #[error("tensor {id} (`{tensor}`) is {what} and must have no slot, but has slot {slot}")]
    Unexpected {
        /// The tensor's index.
        id: usize,
        /// Its name.
        tensor: String,
        /// What it is.
        what: &'static str,
        /// The slot it was given.
        slot: usize,
    },
    /// A written tensor without a slot.
    #[error("tensor {id} (`{tensor}`) is written by launch {launch} but has no slot")]
    Missing {
        /// The tensor's index.
        id: usize,
        /// Its name.
        tensor: String,
        /// The launch writing it.
        launch: usize,
    },
    /// Slot numbers with a gap.
    #[error("slot {slot} holds no tensor (slots must be numbered 0, 1, ... without gaps)")]
    Gap {
        /// The empty slot.
        slot: usize,
    },
    /// Two tensors live in one slot at the same time.
    #[error(
        "slot {slot} holds tensor {first} (`{first_name}`, live from launch {first_start} to {first_end}) and \
         tensor {second} (`{second_name}`, written by launch {second_start}) at the same time"
    )]
    Overlap {
        /// The slot.
        slot: usize,
        /// The tensor written first (index).
        first: usize,
        /// Its name.
        first_name: String,
        /// The launch writing it.
        first_start: usize,
        /// Its last read (a launch, or "the end" for an output).
        first_end: String,
        /// The tensor written while the first is live (index).
        second: usize,
        /// Its name.
        second_name: String,
        /// The launch writing it.
        second_start: usize,
    },
}

/// Checks a carried plan (`slots[t]` for tensor `t`) against `program`, which must already have passed
/// `Program::validate`; every problem is listed.
pub fn check_slots(program: &Program, slots: &[Option<usize>]) -> Result<(), Vec<SlotProblem>> {
    let n = program.tensors.len();
    if slots.len() != n {
        return Err(vec![SlotProblem::Length { got: slots.len(), tensors: n }]);
    }
    // Live range of each computed tensor: [first write, last read or write], `None` end = to the end (outputs).
    let mut start: Vec<Option<usize>> = vec![None; n];
    let mut end: Vec<Option<usize>> = vec![None; n];
    for (i, launch) in program.launches.iter().enumerate() {
        for arg in &launch.args {
            if let Arg::Read(t) | Arg::Write(t) = arg
                && let Some(slot) = end.get_mut(t.0 as usize)
            {
                *slot = Some(i);
                if matches!(arg, Arg::Write(_)) {
                    start[t.0 as usize].get_or_insert(i);
                }
            }
        }
    }
    let mut problems = Vec::new();
    let mut owners: Vec<Vec<usize>> = Vec::new();
    for (t, decl) in program.tensors.iter().enumerate() {
        let what = match (&decl.role, start[t]) {
            (TensorRole::Input(_), _) => Some("an input"),
            (TensorRole::Param(_), _) => Some("a param"),
            (TensorRole::Computed, None) => Some("written by no launch"),
            (TensorRole::Computed, Some(_)) => None,
        };
        match (slots[t], what, start[t]) {
            (Some(slot), Some(what), _) => {
                problems.push(SlotProblem::Unexpected { id: t, tensor: decl.name.clone(), what, slot })
            }
            (None, None, Some(launch)) => {
                problems.push(SlotProblem::Missing { id: t, tensor: decl.name.clone(), launch })
            }
            (Some(slot), None, _) => {
                if slot >= n {
                    problems.push(SlotProblem::Gap { slot });
                    continue;
                }
                if owners.len() <= slot {
                    owners.resize(slot + 1, Vec::new());
                }
                owners[slot].push(t);
            }
            _ => {}
        }
    }
    let outputs: Vec<usize> = program.outputs.iter().map(|(_, t)| t.0 as usize).collect();
    for (slot, tensors) in owners.iter_mut().enumerate() {
        if tensors.is_empty() {
            problems.push(SlotProblem::Gap { slot });
            continue;
        }
        tensors.sort_by_key(|&t| start[t]);
        for pair in tensors.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (a_start, b_start) = (start[a].unwrap_or(0), start[b].unwrap_or(0));
            let a_end = if outputs.contains(&a) { None } else { end[a] };
            if a_end.is_none_or(|e| e >= b_start) {
                problems.push(SlotProblem::Overlap {
                    slot,
                    first: a,
                    first_name: program.tensors[a].name.clone(),
                    first_start: a_start,
                    first_end: a_end.map_or_else(|| "the end (an output)".to_string(), |e| e.to_string()),
                    second: b,
                    second_name: program.tensors[b].name.clone(),
                    second_start: b_start,
                });
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// The concrete plan of checked `slots` for tensors of byte sizes `bytes`: each slot's buffer is as large as
/// its largest tensor.
pub fn memory_from_slots(program: &Program, slots: &[Option<usize>], bytes: &[u64]) -> MemoryPlan {
    let size = |t: usize| bytes.get(t).copied().unwrap_or(4).max(4);
    let mut plan = MemoryPlan {
        buffer_of: slots.to_vec(),
        buffers: Vec::new(),
        signature_bytes: 0,
        peak_bytes: 0,
        unshared_bytes: 0,
    };
    for (t, decl) in program.tensors.iter().enumerate() {
        plan.unshared_bytes += size(t);
        if decl.role != TensorRole::Computed {
            plan.signature_bytes += size(t);
        }
        if let Some(&Some(slot)) = slots.get(t) {
            if plan.buffers.len() <= slot {
                plan.buffers.resize(slot + 1, 4);
            }
            plan.buffers[slot] = plan.buffers[slot].max(size(t));
        }
    }
    plan.peak_bytes = plan.signature_bytes + plan.buffers.iter().sum::<u64>();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;
    use crate::dim::Dim;
    use crate::program::{Launch, TensorDecl, TensorId};

    fn tensor(name: &str, role: TensorRole) -> TensorDecl {
        TensorDecl { name: name.into(), role, dtype: DType::F32, shape: vec![Dim::constant(4)] }
    }

    fn launch(reads: &[u32], write: u32) -> Launch {
        let mut args: Vec<Arg> = reads.iter().map(|&t| Arg::Read(TensorId(t))).collect();
        args.push(Arg::Write(TensorId(write)));
        Launch {
            name: format!("k{write}"),
            wgsl: String::new(),
            spirv: vec![],
            args,
            invocations: Dim::constant(4),
            workgroup_size: 256,
            bounds: vec![],
            requires: Default::default(),
            checks: vec![],
            ops: Default::default(),
        }
    }

    /// x -> a -> b -> c -> out, with `a` also read by the last launch: three buffers serve four computed tensors.
    #[test]
    fn a_chain_reuses_two_buffers_and_never_an_operand_or_output() {
        let mut program = Program { name: "chain".into(), ..Program::default() };
        program.tensors.push(tensor("x", TensorRole::Input("x".into())));
        for name in ["a", "b", "c", "out"] {
            program.tensors.push(tensor(name, TensorRole::Computed));
        }
        program.inputs = vec![TensorId(0)];
        program.outputs = vec![("out".into(), TensorId(4))];
        program.launches = vec![launch(&[0], 1), launch(&[1], 2), launch(&[2], 3), launch(&[3, 1], 4)];
        let bytes = [16, 16, 16, 8, 16];
        let plan = plan_memory(&program, &bytes);
        let of = |t: usize| plan.buffer_of[t].expect("computed tensors have buffers");
        assert_eq!(plan.buffer_of[0], None);
        // `a` is read by the last launch, so it is live throughout; `c` needs a buffer while `b` is still
        // being read; `b` dies after launch 2, so `out` takes its buffer.
        assert_ne!(of(1), of(2));
        assert_ne!(of(2), of(3));
        assert_ne!(of(1), of(3));
        assert_ne!(of(4), of(3), "a result never shares with its operand");
        assert_ne!(of(4), of(1), "a result never shares with its operand");
        assert_eq!(of(4), of(2), "the output reuses the dead intermediate");
        assert_eq!(plan.signature_bytes, 16);
        assert_eq!(plan.unshared_bytes, 72);
        assert_eq!(plan.buffers.len(), 3, "a, b (reused by out) and c");
        assert_eq!(plan.peak_bytes, 16 + plan.buffers.iter().sum::<u64>());
        assert!(plan.peak_bytes < plan.unshared_bytes);
    }

    fn chain() -> Program {
        let mut program = Program { name: "chain".into(), ..Program::default() };
        program.tensors.push(tensor("x", TensorRole::Input("x".into())));
        for name in ["a", "b", "c", "out"] {
            program.tensors.push(tensor(name, TensorRole::Computed));
        }
        program.inputs = vec![TensorId(0)];
        program.outputs = vec![("out".into(), TensorId(4))];
        program.launches = vec![launch(&[0], 1), launch(&[1], 2), launch(&[2], 3), launch(&[3, 1], 4)];
        program
    }

    /// A carried plan: `plan_slots` passes `check_slots`, and each slot's buffer is its largest tensor.
    #[test]
    fn slots_are_checked_and_sized_by_their_largest_tensor() {
        let program = chain();
        let slots = plan_slots(&program);
        assert_eq!(check_slots(&program, &slots), Ok(()));
        assert_eq!(slots, plan_memory(&program, &[16; 5]).buffer_of);
        let plan = memory_from_slots(&program, &slots, &[16, 40, 8, 12, 24]);
        let (b, out) = (slots[2].expect("b has a slot"), slots[4].expect("out has a slot"));
        assert_eq!(b, out, "out reuses b's slot");
        assert_eq!(plan.buffers[b], 24, "the larger of b (8) and out (24)");
        assert_eq!(plan.peak_bytes, 16 + plan.buffers.iter().sum::<u64>());
    }

    #[test]
    fn a_plan_sharing_live_tensors_is_refused() {
        let program = chain();
        // `a` is read by the last launch, so `c` cannot take its slot; `out` cannot share with its operand `c`.
        let bad = vec![None, Some(0), Some(1), Some(0), Some(0)];
        let problems = check_slots(&program, &bad).expect_err("overlaps");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|p| matches!(p, SlotProblem::Overlap { slot: 0, .. })), "{problems:?}");
        let gaps = vec![None, Some(0), Some(2), Some(3), Some(4)];
        assert!(check_slots(&program, &gaps).expect_err("gap").contains(&SlotProblem::Gap { slot: 1 }));
        let input = vec![Some(0), Some(0), Some(1), Some(2), Some(3)];
        assert!(matches!(check_slots(&program, &input).expect_err("input")[0], SlotProblem::Unexpected { id: 0, .. }));
        assert_eq!(check_slots(&program, &[None]), Err(vec![SlotProblem::Length { got: 1, tensors: 5 }]));
    }
}
