//! The one integration test binary: fixture snapshots, the examples and standard library, and properties of
//! the front end and the reference interpreter. Run from the `tests/` package directory (cargo does that).

mod bundle;
mod charlm;
mod cli;
mod examples;
mod fixtures;
mod fusion;
mod gpu;
mod grad;
mod interp;
mod kernels;
mod layers;
mod minilm;
mod models;
mod properties;
mod tidy;
mod train;
mod util;
