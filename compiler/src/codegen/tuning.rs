//! Tuned schedules: per-kernel tile shapes that `tdslc tune` measured on one adapter, stored on disk and
//! applied by `codegen::lower` (used by `tdslc run`, `bench` and `build --tuning`), so no start-up runs a
//! tuner. Applying one replaces a group's stored `Schedule` by the same contraction with the tuned tile
//! (`Schedule::with_tile`); `tdslc tune` measures its candidates the same way. A kernel is identified by the hash of the WGSL it has under the profile's own schedule, so the
//! same kernel in another model (or another layer) finds the same entry, and any change to the kernel (or
//! to the compiler's output for it) simply misses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::tiles::TileShape;

/// File format version written by `save` and required by `load`.
const FORMAT: u64 = 1;

/// A tuning file that cannot be read, written or used here; the message names the file and the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TuningError(pub String);

/// The tuned tile shapes of one adapter and device profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    /// The adapter measured (`Gpu::describe`).
    pub adapter: String,
    /// The device profile the kernels were compiled for (`Target::name`).
    pub target: String,
    /// Kernel key (`Tuning::key`) to the fastest tile found.
    pub tiles: BTreeMap<String, TileShape>,
}

impl Tuning {
    /// The key of a kernel: FNV-1a (64-bit) of its WGSL under the profile's own schedule, in hex.
    pub fn key(wgsl: &str) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in wgsl.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    /// Where `tdslc tune` keeps the tuning of `adapter` by default:
    /// `$XDG_CACHE_HOME/tdsl/tuning/<adapter>.json` (else `~/.cache/...`), the adapter's name reduced to
    /// letters, digits, `-` and `_`.
    pub fn default_path(adapter: &str) -> Option<PathBuf> {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        let name: String =
            adapter.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(120).collect();
        Some(cache.join("tdsl").join("tuning").join(format!("{name}.json")))
    }

    /// `Err` naming both when this tuning was measured on another adapter or for another profile.
    pub fn check_for(&self, path: &Path, adapter: &str, target: &str) -> Result<(), TuningError> {
        if self.adapter == adapter && self.target == target {
            return Ok(());
        }
        Err(TuningError(format!(
            "{} holds tuning for {} (target {}), not this adapter ({adapter}, target {target})",
            path.display(),
            self.adapter,
            self.target
        )))
    }

    /// Reads a tuning file; a missing file is `Ok(None)`, anything malformed an error naming the problem.
    pub fn load(path: &Path) -> Result<Option<Tuning>, TuningError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TuningError(format!("cannot read tuning file {}: {e}", path.display()))),
        };
        let bad = |what: &str| TuningError(format!("tuning file {} is malformed: {what}", path.display()));
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        if value.get("format").and_then(|f| f.as_u64()) != Some(FORMAT) {
            return Err(bad(&format!("expected \"format\": {FORMAT}")));
        }
        let text_field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
        let adapter = text_field("adapter").ok_or_else(|| bad("no \"adapter\""))?;
        let target = text_field("target").ok_or_else(|| bad("no \"target\""))?;
        let mut tiles = BTreeMap::new();
        let kernels = value.get("kernels").and_then(|k| k.as_object()).ok_or_else(|| bad("no \"kernels\" object"))?;
        for (key, tile) in kernels {
            let shape = tile
                .as_array()
                .filter(|a| a.len() == 2)
                .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
                .filter(|&(r, c)| (1..=16).contains(&r) && (1..=16).contains(&c))
                .ok_or_else(|| bad(&format!("kernel {key}: expected [rows, cols], each 1 to 16")))?;
            tiles.insert(key.clone(), (shape.0 as u32, shape.1 as u32));
        }
        Ok(Some(Tuning { adapter, target, tiles }))
    }

    /// Writes the tuning to `path` (creating its directory), through a temporary file renamed into place.
    pub fn save(&self, path: &Path) -> Result<(), TuningError> {
        let kernels: serde_json::Map<String, serde_json::Value> =
            self.tiles.iter().map(|(k, &(r, c))| (k.clone(), json!([r, c]))).collect();
        let text = serde_json::to_string_pretty(&json!({
            "format": FORMAT,
            "adapter": self.adapter,
            "target": self.target,
            "kernels": kernels,
        }))
        .map_err(|e| TuningError(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| TuningError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, text)
            .map_err(|e| TuningError(format!("cannot write {}: {e}", temporary.display())))?;
        std::fs::rename(&temporary, path).map_err(|e| TuningError(format!("cannot write {}: {e}", path.display())))
    }
}
