//! What a run needs once the symbols are bound, computed before any buffer exists: every tensor's concrete
//! shape and device size (checked against the storage-buffer limit), and per launch its checked bounds,
//! its uniform blocks as bytes and its workgroup grid (folded into two dimensions when one is not enough;
//! `None` for a launch with no invocations; a launch whose invocations would loop more than the device
//! allows is refused, as llvmpipe would silently cut its loops short). Pure functions of the program, the symbols and the device
//! limits, so they are tested without a device.

use super::ExecError;
use crate::dim::Dim;
use crate::program::{Arg, BoundKind, Program};

/// The device limits a plan is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// The largest storage buffer a kernel can bind, in bytes.
    pub max_storage_bytes: u64,
    /// The most workgroups per grid dimension.
    pub max_workgroups_per_dimension: u32,
    /// The most loop iterations one invocation may run (`BoundKind::LoopIterations`); `i64::MAX` where
    /// the device has no such limit. Not a wgpu limit: the driver's (`Gpu::max_loop_iterations`).
    pub max_loop_iterations: i64,
}

impl DeviceLimits {
    /// The limits that matter here, from a device's wgpu limits, with no loop limit (`Gpu::limits` adds
    /// the driver's).
    pub fn of(limits: &wgpu::Limits) -> DeviceLimits {
        DeviceLimits {
            max_storage_bytes: limits.max_buffer_size.min(limits.max_storage_buffer_binding_size),
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_loop_iterations: i64::MAX,
        }
    }
}

/// One launch, ready to dispatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchPlan {
    /// `None`: no invocations, nothing to dispatch.
    pub grid: Option<[u32; 3]>,
    /// The bytes of each `Arg::Uniform`, in argument order.
    pub uniforms: Vec<Vec<u8>>,
}

/// Every tensor's shape with `symbols` bound; each dimension must be at least 1 (R3.3) and each tensor
/// fit one storage buffer.
pub fn tensor_shapes(program: &Program, symbols: &[i64], limits: &DeviceLimits) -> Result<Vec<Vec<usize>>, ExecError> {
    let mut shapes = Vec::with_capacity(program.tensors.len());
    for decl in &program.tensors {
        let mut shape = Vec::with_capacity(decl.shape.len());
        for (axis, dim) in decl.shape.iter().enumerate() {
            let fail = |problem: String| ExecError::Shape {
                tensor: decl.name.clone(),
                axis,
                dim: dim.named(&program.symbols).to_string(),
                problem,
            };
            let value = dim.eval_at(symbols).ok_or_else(|| fail("overflows 64-bit integers".into()))?;
            // R3.3, as the interpreter: a derived dimension (`N - 1` with `N = 1`) may reach 0 or less.
            if value < 1 {
                return Err(fail(format!("is {value}, but every dimension must be at least 1")));
            }
            shape.push(usize::try_from(value).map_err(|_| fail(format!("is {value}, too large for this machine")))?);
        }
        let count = shape.iter().fold(1u128, |n, &d| n.saturating_mul(d as u128));
        let bytes = count.saturating_mul(decl.dtype.size() as u128).max(4);
        if bytes > limits.max_storage_bytes as u128 {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            return Err(ExecError::TooLarge {
                tensor: decl.name.clone(),
                shape: format!("{}[{}]", decl.dtype.name(), dims.join(", ")),
                bytes,
                limit: limits.max_storage_bytes,
            });
        }
        shapes.push(shape);
    }
    Ok(shapes)
}

/// Each launch's bounds checked, uniform blocks filled and grid folded, in launch order.
pub fn plan_launches(program: &Program, symbols: &[i64], limits: &DeviceLimits) -> Result<Vec<LaunchPlan>, ExecError> {
    let text = |dim: &Dim| dim.named(&program.symbols).to_string();
    let mut plans = Vec::with_capacity(program.launches.len());
    for (index, launch) in program.launches.iter().enumerate() {
        let name = || launch.name.clone();
        for bound in &launch.bounds {
            let value = bound.value.eval_at(symbols);
            if let BoundKind::LoopIterations { .. } = bound.what
                && value.is_none_or(|v| v > limits.max_loop_iterations)
            {
                return Err(ExecError::LoopIterations {
                    launch: index,
                    name: name(),
                    expr: text(&bound.value),
                    value,
                    op: bound.op.clone().map(Box::new),
                    limit: limits.max_loop_iterations,
                });
            }
            if value.is_none_or(|v| v > bound.max) {
                return Err(ExecError::Bound {
                    launch: index,
                    name: name(),
                    what: bound.what,
                    expr: text(&bound.value),
                    value,
                    max: bound.max,
                });
            }
        }
        let mut uniforms = Vec::new();
        for (binding, arg) in launch.args.iter().enumerate() {
            let Arg::Uniform(words) = arg else { continue };
            let mut bytes = Vec::with_capacity(4 * words.len());
            for (word, dim) in words.iter().enumerate() {
                let value = dim.eval_at(symbols);
                match value {
                    Some(v) if (-(1i64 << 31)..1i64 << 32).contains(&v) => bytes.extend((v as u32).to_le_bytes()),
                    _ => {
                        return Err(ExecError::Uniform {
                            launch: index,
                            name: name(),
                            binding,
                            word,
                            expr: text(dim),
                            value,
                        });
                    }
                }
            }
            uniforms.push(bytes);
        }
        let invocations = launch.invocations.eval_at(symbols);
        let grid = match invocations {
            Some(0) => None,
            Some(n) if n > 0 && launch.workgroup_size > 0 => {
                let groups = (n as u64).div_ceil(launch.workgroup_size as u64);
                let limit = limits.max_workgroups_per_dimension;
                Some(fold_grid(groups, limit).ok_or(ExecError::Grid {
                    launch: index,
                    name: name(),
                    invocations: n,
                    workgroup_size: launch.workgroup_size,
                    groups,
                    limit,
                })?)
            }
            _ => {
                let expr = text(&launch.invocations);
                return Err(ExecError::Invocations { launch: index, name: name(), expr, value: invocations });
            }
        };
        plans.push(LaunchPlan { grid, uniforms });
    }
    Ok(plans)
}

/// `groups` workgroups as `[x, y, 1]` with `x, y <= limit` and `x * y >= groups` (wasting fewer than `y`
/// workgroups), or `None` when even `limit * limit` is too few. `groups >= 1`.
pub fn fold_grid(groups: u64, limit: u32) -> Option<[u32; 3]> {
    let limit = limit.max(1) as u64;
    let y = groups.div_ceil(limit);
    if y > limit {
        return None;
    }
    let x = groups.div_ceil(y.max(1));
    Some([x as u32, y.max(1) as u32, 1])
}
