//! Device profiles: the schedule choices codegen makes per kind of device (tile shapes, elements per
//! invocation), from a small built-in table keyed by what the adapter reports. The same graph compiled for
//! two targets computes the same values; only speed differs. `tdslc` picks the target of the device it
//! opens; `Target::default()` (the portable profile) is used where no device is known, e.g. snapshots.

use super::tiles::TileShape;

/// The schedule choices for one kind of device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The profile's name, as `tdslc` prints it and `--target` takes it.
    pub name: &'static str,
    /// Output rows x columns each invocation of a contraction kernel computes (1x1: untiled).
    pub tile: TileShape,
    /// Elementwise kernels compute four neighbouring elements per invocation, reading and writing whole
    /// 4-element vectors where they can.
    pub vector: bool,
    /// Row kernels (`rows.rs`): `None`, one workgroup per row with tree reductions over workgroup memory;
    /// `Some(n)`, one invocation per row and `n` rows per workgroup, with no barriers (reductions are loops).
    pub serial_rows: Option<u32>,
    /// Contractions stage operand tiles in workgroup memory (`tiles::SharedTile`): a workgroup of 16 x 16
    /// invocations loads each element once for a `16 rows x 16 cols` output tile; else every invocation
    /// loads its own operands (register tiles only).
    pub shared: bool,
    /// Row kernels with one workgroup per row reduce within each subgroup by shuffles (`subgroupShuffleXor`)
    /// and combine the subgroups' results through workgroup memory: two barriers per reduction instead of
    /// one per level of a tree. Kernels then need the device's subgroup feature.
    pub subgroups: bool,
}

/// The built-in profiles.
pub const TARGETS: [Target; 3] = [
    // Discrete and integrated GPUs: small register tiles keep enough invocations in flight, and operand
    // tiles shared in workgroup memory cut device-memory traffic by the workgroup's side.
    Target { name: "gpu", tile: (4, 4), vector: true, serial_rows: None, shared: true, subgroups: true },
    // CPU devices (lavapipe, SwiftShader): invocations are SIMD lanes of a few threads, so per-invocation
    // work must be large, every loaded operand reused as often as registers allow, and barriers (a switch
    // between all the workgroup's lanes each) avoided.
    Target { name: "cpu", tile: (8, 8), vector: true, serial_rows: Some(8), shared: false, subgroups: false },
    // One output per invocation everywhere: the reference schedule.
    Target { name: "naive", tile: (1, 1), vector: false, serial_rows: None, shared: false, subgroups: false },
];

impl Default for Target {
    fn default() -> Target {
        TARGETS[0]
    }
}

impl Target {
    /// The profile named `name`.
    pub fn named(name: &str) -> Option<Target> {
        TARGETS.iter().copied().find(|t| t.name == name)
    }

    /// A profile from its command-line form: a name, then optional overrides, e.g. `cpu,tile=8x4` or
    /// `gpu,shared=off,subgroups=off`.
    pub fn parse(spec: &str) -> Result<Target, TargetError> {
        let mut parts = spec.split(',');
        let name = parts.next().unwrap_or_default();
        let mut target = Target::named(name).ok_or_else(|| {
            let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            TargetError(format!("unknown target `{name}` (known: {})", names.join(", ")))
        })?;
        for part in parts {
            match part.split_once('=') {
                Some(("tile", shape)) => {
                    let bad =
                        || TargetError(format!("`tile={shape}`: expected ROWSxCOLS with each 1 to 16, e.g. tile=8x4"));
                    let (r, c) = shape.split_once('x').ok_or_else(bad)?;
                    let (r, c): (u32, u32) = (r.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?);
                    if !(1..=16).contains(&r) || !(1..=16).contains(&c) {
                        return Err(bad());
                    }
                    target.tile = (r, c);
                }
                Some(("shared", "on")) => target.shared = true,
                Some(("shared", "off")) => target.shared = false,
                Some(("subgroups", "on")) => target.subgroups = true,
                Some(("subgroups", "off")) => target.subgroups = false,
                Some((option @ ("shared" | "subgroups"), other)) => {
                    return Err(TargetError(format!("`{option}={other}`: expected on or off")));
                }
                _ => {
                    return Err(TargetError(format!(
                        "unknown target option `{part}` (known: tile=ROWSxCOLS, shared=on|off, subgroups=on|off)"
                    )));
                }
            }
        }
        Ok(target)
    }

    /// The profile for an adapter of `device_type` (wgpu's `DeviceType`).
    pub fn for_device(device_type: tdsl_runtime::wgpu::DeviceType) -> Target {
        use tdsl_runtime::wgpu::DeviceType;
        match device_type {
            DeviceType::Cpu => TARGETS[1],
            _ => TARGETS[0],
        }
    }

    /// The profile for the opened device: `for_device`, without subgroup reductions when the device lacks
    /// `Features::SUBGROUP`.
    pub fn for_gpu(gpu: &tdsl_runtime::gpu::Gpu) -> Target {
        let mut target = Target::for_device(gpu.info.device_type);
        target.subgroups &= gpu.device.features().contains(tdsl_runtime::wgpu::Features::SUBGROUP);
        target
    }
}

impl Target {
    /// The profile for an executor: `for_gpu` on the GPU; on the CPU executor, which runs each launch's ops
    /// rather than its kernel, the `cpu` profile (its fusion decisions suit a CPU; its tiles are unused).
    pub fn for_executor<'a>(executor: impl Into<tdsl_runtime::ExecutorRef<'a>>) -> Target {
        match executor.into() {
            tdsl_runtime::ExecutorRef::Gpu(gpu) => Target::for_gpu(gpu),
            tdsl_runtime::ExecutorRef::Cpu(_) => Target::for_device(tdsl_runtime::wgpu::DeviceType::Cpu),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_with_their_overrides() {
        assert_eq!(Target::parse("gpu"), Ok(TARGETS[0]));
        let cpu = Target::parse("cpu,tile=8x4").expect("cpu with a tile");
        assert_eq!((cpu.name, cpu.tile, cpu.shared), ("cpu", (8, 4), false));
        let gpu = Target::parse("gpu,shared=off,tile=2x2").expect("gpu without shared tiles");
        assert_eq!((gpu.tile, gpu.shared, gpu.serial_rows), ((2, 2), false, None));
        assert!(Target::parse("naive,shared=on").expect("naive with shared tiles").shared);
        let plain = Target::parse("gpu,subgroups=off").expect("gpu without subgroups");
        assert!(!plain.subgroups && plain.shared);
    }

    #[test]
    fn bad_profiles_are_named() {
        for (spec, message) in [
            ("tpu", "unknown"),
            ("gpu,tile=0x4", "`tile=0x4`"),
            ("gpu,tile=17x1", "`tile=17x1`"),
            ("gpu,tile=4", "`tile=4`"),
            ("gpu,shared=yes", "`shared=yes`: expected on or off"),
            ("gpu,subgroups=2", "`subgroups=2`: expected on or off"),
            ("gpu,fast", "unknown target option `fast`"),
        ] {
            let err = Target::parse(spec).expect_err(spec);
            assert!(err.0.contains(message), "{spec}: {err}");
        }
    }
}

/// A `--target` specification that names no profile or has a bad option; the message says which and what
/// is accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);
