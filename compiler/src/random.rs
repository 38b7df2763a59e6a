//! Seeded test data, re-exported from the runtime (`tdsl_runtime::random`), where it lives so that
//! `tdslc run --seed N` and `tdsl-run BUNDLE --seed N` generate the very same inputs and params.

pub use tdsl_runtime::random::*;
