//! Optimizer tests.
