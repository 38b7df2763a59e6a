//! Parsers for the command-line arguments `tdsl-run` and `tdslc` share (`--dim NAME=SIZE`,
//! `--input NAME=PATH`, `--device auto|gpu|cpu`). Outside the `cli` feature, so the compiler's command line uses them without the
//! runtime's own (clap is the caller's business: each parser is a plain function with a typed error, which
//! clap's `value_parser` takes as it is).

use std::path::PathBuf;

/// Why a command-line argument could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// No `=` in the argument.
    #[error("expected {expected}, e.g. {example}")]
    NoEquals {
        /// The form expected.
        expected: &'static str,
        /// An example of it.
        example: &'static str,
    },
    /// The size is not an integer.
    #[error("`{text}` is not an integer")]
    NotAnInteger {
        /// The text after `=`.
        text: String,
    },
    /// One name given twice to the same option.
    #[error("{option} {name} is given twice; give each name once")]
    Repeated {
        /// The option, e.g. `--dim`.
        option: &'static str,
        /// The name repeated.
        name: String,
    },
    /// `--device` names no device.
    #[error("`{text}` is not a device; use auto, gpu or cpu")]
    NotADevice {
        /// The text given.
        text: String,
    },
    /// The size is below 1.
    #[error("dimension {name} must be at least 1, got {size}")]
    TooSmall {
        /// The dimension's name.
        name: String,
        /// The size given.
        size: i64,
    },
}

/// `--device auto|gpu|cpu` (`DeviceChoice::from_name`).
pub fn parse_device(text: &str) -> Result<crate::device::DeviceChoice, ArgError> {
    crate::device::DeviceChoice::from_name(text).ok_or_else(|| ArgError::NotADevice { text: text.to_string() })
}

/// `NAME=SIZE` of a `--dim` argument (size at least 1).
pub fn parse_dim(text: &str) -> Result<(String, i64), ArgError> {
    let (name, size) = text.split_once('=').ok_or(ArgError::NoEquals { expected: "NAME=SIZE", example: "B=4" })?;
    let size: i64 = size.trim().parse().map_err(|_| ArgError::NotAnInteger { text: size.to_string() })?;
    if size < 1 {
        return Err(ArgError::TooSmall { name: name.trim().to_string(), size });
    }
    Ok((name.trim().to_string(), size))
}

/// `Err` for the first name that `pairs` (the values of one repeatable `NAME=VALUE` option) gives twice:
/// a repeated `--dim B=2 --dim B=3` or `--input x=a --input x=b` is a mistake, never resolved silently.
pub fn distinct_names<T>(option: &'static str, pairs: &[(String, T)]) -> Result<(), ArgError> {
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(ArgError::Repeated { option, name: name.clone() });
        }
    }
    Ok(())
}

/// What an error about options that do not fit one of several models adds: `FILE has several models (a,
/// b); choose one with --model NAME`. With several models and no `--model`, both tools run every model, so
/// every `--dim`, `--input` and `--weights` must fit each of them.
pub fn choose_a_model(file: &str, models: &[&str]) -> String {
    format!("{file} has several models ({}); choose one with --model NAME", models.join(", "))
}

/// The error for a `--model` that `file` does not have: `FILE has no model `c` (its models: a, b)`.
pub fn unknown_model(file: &str, name: &str, models: &[&str]) -> String {
    format!("{file} has no model `{name}` (its models: {})", models.join(", "))
}

/// `NAME=PATH` of an `--input` argument.
pub fn parse_input(text: &str) -> Result<(String, PathBuf), ArgError> {
    let (name, path) =
        text.split_once('=').ok_or(ArgError::NoEquals { expected: "NAME=PATH", example: "input_ids=ids.npy" })?;
    Ok((name.trim().to_string(), PathBuf::from(path)))
}

/// The weights file `path` without the entries `--ignore-weights` patterns match (`Weights::ignoring`).
pub fn open_weights(path: &std::path::Path, ignore: &[String]) -> Result<crate::Weights, String> {
    crate::Weights::open(path).and_then(|w| w.ignoring(ignore)).map_err(|e| e.to_string())
}
