//! A launch's index-notation maps, planned once per set of shapes: each `Map` node is recognised as a
//! contraction or not when the launch is planned (`contract.rs`), and keeps the plans it made for the last
//! few output shapes, input shapes and symbol values it ran with (`eval::map::MapPlan`, or a contraction's
//! factor plans), so a steady stream of runs (training steps, a server's batches of one size) plans each
//! map once instead of on every run. A plan is used only for exactly the shapes and values it was made
//! for, so what a run computes never depends on what ran before.

use std::sync::{Arc, Mutex};

use super::buffers::Buffers;
use super::contract::{MapContraction, Prepared};
use crate::DType;
use crate::eval::map::MapPlan;
use crate::eval::values::{Val, Vals};
use crate::program::MapOps;

/// Plans kept per map node: a training loop alternates between its batch size and a last partial batch,
/// validation adds one or two more.
const KEPT: usize = 4;

/// One `Map` node of a launch: how it runs, and the plans it made.
#[derive(Debug)]
pub struct MapNode {
    /// The contraction the map is, when it is one (then its factors are what is planned per shape).
    contraction: Option<MapContraction>,
    /// The plans made, most recently used last.
    plans: Mutex<Vec<Arc<Planned>>>,
}

/// What a plan was made for: the output's shape, each input's shape, every symbol's value.
#[derive(Debug, PartialEq)]
struct Key {
    out_shape: Vec<usize>,
    input_shapes: Vec<Vec<usize>>,
    syms: Vec<i64>,
}

impl Key {
    fn matches(&self, out_shape: &[usize], inputs: &[&Val], syms: &[i64]) -> bool {
        self.out_shape == out_shape
            && self.syms == syms
            && self.input_shapes.len() == inputs.len()
            && self.input_shapes.iter().zip(inputs).all(|(s, v)| *s == v.shape)
    }
}

struct Planned {
    key: Key,
    how: How,
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned").field("key", &self.key).finish_non_exhaustive()
    }
}

enum How {
    Contraction(Box<Prepared>),
    Map(Box<MapPlan>),
}

impl MapNode {
    /// The map node `map`, of `rank` output axes and dtype `dtype`.
    pub fn new(map: &MapOps, rank: usize, dtype: DType) -> MapNode {
        MapNode { contraction: MapContraction::plan(map, rank, dtype), plans: Mutex::new(Vec::new()) }
    }

    /// The map's value of `out_shape` from `inputs` and the symbol values `syms`, planned for them the first
    /// time they are seen; float results (and a contraction's factors) are written into buffers from
    /// `buffers`.
    pub fn run(
        &self,
        map: &MapOps,
        dtype: DType,
        out_shape: &[usize],
        inputs: &[&Val],
        syms: &[i64],
        buffers: &Buffers,
    ) -> Result<Vals, String> {
        let planned = self.planned(map, out_shape, inputs, syms)?;
        match (&planned.how, &self.contraction) {
            (How::Contraction(prepared), Some(c)) => c.run(prepared, map, out_shape, inputs, syms, buffers),
            (How::Map(plan), _) if matches!(dtype, DType::F32 | DType::F16) => {
                plan.run_into(dtype, inputs, Vals::F(buffers.take(out_shape.iter().product())))
            }
            (How::Map(plan), _) => plan.run(dtype, inputs),
            (How::Contraction(_), None) => Err("internal error: a contraction plan for a map that is none".into()),
        }
    }

    /// The plan for these shapes and values: a kept one, else made now and kept (the least recently used
    /// one dropped when `KEPT` are held).
    fn planned(
        &self,
        map: &MapOps,
        out_shape: &[usize],
        inputs: &[&Val],
        syms: &[i64],
    ) -> Result<Arc<Planned>, String> {
        {
            let mut plans = self.plans.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(i) = plans.iter().position(|p| p.key.matches(out_shape, inputs, syms)) {
                let hit = plans.remove(i);
                plans.push(hit.clone());
                return Ok(hit);
            }
        }
        let shapes: Vec<&[usize]> = inputs.iter().map(|v| &v.shape[..]).collect();
        let how = match &self.contraction {
            Some(c) => How::Contraction(Box::new(c.prepare(map, out_shape, &shapes, syms)?)),
            None => How::Map(Box::new(MapPlan::new(map, out_shape, &shapes, syms)?)),
        };
        let key = Key {
            out_shape: out_shape.to_vec(),
            input_shapes: shapes.iter().map(|s| s.to_vec()).collect(),
            syms: syms.to_vec(),
        };
        let planned = Arc::new(Planned { key, how });
        let mut plans = self.plans.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if plans.len() >= KEPT {
            plans.remove(0);
        }
        plans.push(planned.clone());
        Ok(planned)
    }

    /// How many plans are kept (tests).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.plans.lock().map_or(0, |p| p.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dim::Dim;
    use crate::ops::{Affine, Scalar, VarId};
    use crate::program::{OpRef, ScalarNode, ScalarOp, ScalarRef};

    /// `out[i] = x[i + 1]` (default 0) over an extent of symbol 0: a plain map (no contraction).
    fn shifted() -> MapOps {
        MapOps {
            inputs: vec![OpRef(0)],
            extents: vec![Dim::sym(crate::dim::SymId(0))],
            exprs: vec![ScalarNode {
                expr: ScalarOp::Load {
                    input: 0,
                    indices: vec![Affine::new(vec![(VarId(0), Dim::constant(1))], Dim::constant(1))],
                    default: Some(Scalar::Float(0.0)),
                },
                dtype: DType::F32,
            }],
            body: ScalarRef(0),
        }
    }

    /// Each run equals a fresh evaluation whatever ran before, plans are made once per set of shapes and
    /// values, and no more than `KEPT` are held.
    #[test]
    fn a_kept_plan_serves_only_its_own_shapes() {
        let map = shifted();
        let node = MapNode::new(&map, 1, DType::F32);
        let buffers = Buffers::default();
        let input = |n: usize| Val { shape: vec![n], data: Vals::F((0..n).map(|i| i as f32 + 0.5).collect()) };
        for (round, n) in [5usize, 9, 5, 9, 2, 3, 4, 5, 6, 5].into_iter().enumerate() {
            let x = input(n);
            let got = node.run(&map, DType::F32, &[n], &[&x], &[n as i64], &buffers).unwrap();
            let want = crate::eval::map::run_map(&map, DType::F32, &[n], &[&x], &[n as i64]).unwrap();
            assert_eq!(got, want, "round {round}, n = {n}");
            assert!(node.kept() <= KEPT);
        }
        // Same shapes, other symbol values: planned apart (the extent is the symbol's value).
        let x = input(6);
        let got = node.run(&map, DType::F32, &[4], &[&x], &[4], &buffers).unwrap();
        assert_eq!(got, crate::eval::map::run_map(&map, DType::F32, &[4], &[&x], &[4]).unwrap());
    }
}
