//! Ahead-of-time bundles (`.tdslb`, specified in spec/bundle.md): one file holding every model of a
//! compiled `.tdsl` file, so a program ships with the runtime alone: no parser, no optimizer, no shader
//! front end and no compile delay at start-up.
//!
//! Layout: a 32-byte header (magic, format version, reserved flags, manifest and blob lengths), the
//! manifest (JSON, `manifest.rs`: each model's `Program`, its buffer plan and what each kernel needs from
//! the device), the kernel blobs (WGSL text and SPIR-V words, addressed from the manifest by offset and
//! length), then a CRC-32 of everything before it. `Bundle::to_bytes` writes it deterministically (fields
//! in a fixed order, no timestamps, no hash-map order), so the same compiler and source give the same bytes.
//!
//! `Bundle::from_bytes` checks, in order and before anything touches a device: the magic, the version, the
//! lengths against the file size, the checksum, the manifest's syntax, every blob range and blob (UTF-8
//! WGSL, SPIR-V with its magic number), each model's `Program::validate`, its buffer plan (`check_slots`)
//! and grid formulas. Any failure is a `BundleError` naming the problem; no input makes it panic (a fuzz
//! target and a byte-flip property test hold it to that). What the device must offer is checked when a
//! model is loaded onto one (`session.rs`).

mod manifest;

use std::path::Path;

use crate::exec::SlotProblem;
use crate::program::{Program, ProgramError};

/// The first 8 bytes of every bundle: a non-ASCII byte, `TDSLB`, and CR LF (so a text-mode transfer that
/// rewrites line ends or strips the high bit is caught at once).
pub const MAGIC: [u8; 8] = *b"\x89TDSLB\r\n";
/// The format version this runtime reads and writes.
pub const FORMAT_VERSION: u32 = 6;
/// Bytes before the manifest.
pub const HEADER_LEN: usize = 32;
/// Bytes of the checksum at the end.
pub const CHECKSUM_LEN: usize = 4;

/// A loaded bundle: who wrote it and its models, each fully checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// The compiler that wrote it, e.g. `tdslc 0.1.0`.
    pub producer: String,
    /// The models of the source file, in source order.
    pub models: Vec<BundledModel>,
}

/// One model of a bundle: the program (each launch carrying its device requirements) and its buffer plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundledModel {
    /// The compiled model.
    pub program: Program,
    /// The buffer plan (`exec::plan_slots`): the shared-buffer slot of each tensor.
    pub buffer_slots: Vec<Option<usize>>,
}

/// Why bytes are not a usable bundle. `origin` names the file (or says it was bytes in memory).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct BundleError {
    /// The file, or `(bytes)` for bytes in memory.
    pub origin: String,
    /// What is wrong.
    pub problem: BundleProblem,
}

/// What is wrong with a bundle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleProblem {
    /// The file cannot be read (the I/O error's text).
    #[error("cannot read it: {0}")]
    Io(String),
    /// The magic bytes are missing.
    #[error("not a tdsl bundle (it does not start with the bundle magic bytes 89 54 44 53 4c 42 0d 0a)")]
    NotABundle,
    /// A format version this runtime does not read.
    #[error(
        "bundle format version {found} is not supported: this runtime reads version {supported}; rebuild the \
         bundle with a tdslc of the same release"
    )]
    UnsupportedVersion {
        /// The bundle's version.
        found: u32,
        /// The version this runtime reads.
        supported: u32,
    },
    /// Header flags this version does not define.
    #[error("header flags {flags:#x} are not supported (version {FORMAT_VERSION} defines none)")]
    UnknownFlags {
        /// The flags word.
        flags: u32,
    },
    /// Fewer bytes than the header or a section needs.
    #[error("truncated: it is {actual} bytes, but {what} {expected} bytes")]
    Truncated {
        /// Bytes present.
        actual: u64,
        /// Bytes needed.
        expected: u64,
        /// What needs them.
        what: &'static str,
    },
    /// Bytes after the checksum.
    #[error("{extra} unexpected bytes after the checksum (the header says the bundle is {expected} bytes)")]
    TrailingBytes {
        /// How many.
        extra: u64,
        /// The bundle's length by its header.
        expected: u64,
    },
    /// The CRC-32 does not match.
    #[error(
        "checksum mismatch: the file says {stored:#010x}, its contents give {computed:#010x}; the file is corrupted"
    )]
    Checksum {
        /// The CRC-32 the bundle stores.
        stored: u32,
        /// The CRC-32 of its contents.
        computed: u32,
    },
    /// The JSON manifest does not parse or describe a valid bundle (the parser's text).
    #[error("the manifest is malformed: {0}")]
    Manifest(String),
    /// No model at all.
    #[error("the bundle holds no model")]
    NoModels,
    /// A model's program breaks invariants (`Program::validate`).
    #[error("model `{model}` is malformed:{}", list(.problems))]
    Program {
        /// The model's name.
        model: String,
        /// Every broken invariant.
        problems: Vec<ProgramError>,
    },
    /// A model's buffer plan is unsafe (`check_slots`).
    #[error("the buffer plan of model `{model}` is wrong:{}", list(.problems))]
    BufferPlan {
        /// The model's name.
        model: String,
        /// Every problem with the plan.
        problems: Vec<SlotProblem>,
    },
}

impl BundledModel {
    /// `program` ready for a bundle, with its buffer plan (`exec::plan_slots`).
    pub fn new(program: Program) -> BundledModel {
        let buffer_slots = crate::exec::plan_slots(&program);
        BundledModel { program, buffer_slots }
    }
}

impl Bundle {
    /// Reads and checks the bundle file at `path` (see the module comment).
    pub fn read(path: &Path) -> Result<Bundle, BundleError> {
        let origin = format!("bundle `{}`", path.display());
        let bytes = std::fs::read(path)
            .map_err(|e| BundleError { origin: origin.clone(), problem: BundleProblem::Io(e.to_string()) })?;
        Bundle::decode(&bytes).map_err(|problem| BundleError { origin, problem })
    }

    /// Checks and decodes a bundle held in memory (e.g. `include_bytes!`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, BundleError> {
        Bundle::decode(bytes).map_err(|problem| BundleError { origin: "bundle".to_string(), problem })
    }

    /// The bundle's bytes (header, manifest, blobs, checksum); deterministic.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (manifest, blobs) = manifest::encode(self);
        seal(&manifest, &blobs)
    }

    /// The manifest and blob sections of bundle bytes after the header, length and checksum checks (for tools and
    /// tests that look inside; `from_bytes` is the way to load one).
    pub fn sections(bytes: &[u8]) -> Result<(&[u8], &[u8]), BundleError> {
        split(bytes).map_err(|problem| BundleError { origin: "bundle".to_string(), problem })
    }

    /// The model called `name`, or the only model when `name` is `None`.
    pub fn model(&self, name: Option<&str>) -> Option<&BundledModel> {
        match name {
            Some(name) => self.models.iter().find(|m| m.program.name == name),
            None if self.models.len() == 1 => self.models.first(),
            None => None,
        }
    }

    /// The manifest of a bundle's bytes as pretty JSON, after the same checks as `from_bytes` (for
    /// `tdsl-run --manifest`).
    pub fn manifest_json(bytes: &[u8]) -> Result<String, BundleError> {
        let fail = |problem| BundleError { origin: "bundle".to_string(), problem };
        let (manifest, _) = split(bytes).map_err(fail)?;
        Bundle::decode(bytes).map_err(fail)?;
        let value: serde_json::Value =
            serde_json::from_slice(manifest).map_err(|e| fail(BundleProblem::Manifest(e.to_string())))?;
        serde_json::to_string_pretty(&value).map_err(|e| fail(BundleProblem::Manifest(e.to_string())))
    }

    fn decode(bytes: &[u8]) -> Result<Bundle, BundleProblem> {
        let (manifest, blobs) = split(bytes)?;
        let bundle = manifest::decode(manifest, blobs)?;
        if bundle.models.is_empty() {
            return Err(BundleProblem::NoModels);
        }
        for model in &bundle.models {
            let name = model.program.name.clone();
            model.program.validate().map_err(|problems| BundleProblem::Program { model: name.clone(), problems })?;
            crate::exec::check_slots(&model.program, &model.buffer_slots)
                .map_err(|problems| BundleProblem::BufferPlan { model: name, problems })?;
        }
        Ok(bundle)
    }
}

/// Bundle bytes around a raw manifest and blob section: header, both, checksum. Nothing is checked, so
/// tests and the fuzz target use it to reach the manifest checks with a valid checksum.
pub fn seal(manifest: &[u8], blobs: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + manifest.len() + blobs.len() + CHECKSUM_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(manifest.len() as u64).to_le_bytes());
    out.extend_from_slice(&(blobs.len() as u64).to_le_bytes());
    out.extend_from_slice(manifest);
    out.extend_from_slice(blobs);
    let checksum = crc32fast::hash(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// Checks the header, lengths and checksum; returns the manifest and the blob section.
fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), BundleProblem> {
    let actual = bytes.len() as u64;
    let magic_len = MAGIC.len().min(bytes.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(BundleProblem::NotABundle);
    }
    let minimum = (HEADER_LEN + CHECKSUM_LEN) as u64;
    if actual < minimum {
        return Err(BundleProblem::Truncated { actual, expected: minimum, what: "a bundle has at least" });
    }
    let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let long = |at: usize| u64::from(word(at)) | (u64::from(word(at + 4)) << 32);
    let version = word(8);
    if version != FORMAT_VERSION {
        return Err(BundleProblem::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    let flags = word(12);
    if flags != 0 {
        return Err(BundleProblem::UnknownFlags { flags });
    }
    let (manifest_len, blobs_len) = (long(16), long(24));
    let expected = manifest_len.checked_add(blobs_len).and_then(|n| n.checked_add(minimum)).unwrap_or(u64::MAX);
    if actual < expected {
        return Err(BundleProblem::Truncated { actual, expected, what: "its header says it has" });
    }
    if actual > expected {
        return Err(BundleProblem::TrailingBytes { extra: actual - expected, expected });
    }
    let body = bytes.len() - CHECKSUM_LEN;
    let stored = word(body);
    let computed = crc32fast::hash(&bytes[..body]);
    if stored != computed {
        return Err(BundleProblem::Checksum { stored, computed });
    }
    let manifest_end = HEADER_LEN + manifest_len as usize;
    Ok((&bytes[HEADER_LEN..manifest_end], &bytes[manifest_end..body]))
}

fn list(problems: &[impl std::fmt::Display]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}
