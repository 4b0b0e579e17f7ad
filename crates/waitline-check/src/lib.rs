//! Check functions shared by the model-based tests, the fuzz targets (`fuzz/`) and the corpus
//! replay that runs in the normal test suite. Each takes an input and returns `Err` with a
//! description when waitline misbehaves; a fuzz target panics on `Err`.

pub mod concurrent;
pub mod http;
pub mod journal;
pub mod json_bodies;
pub mod model;
pub mod snapshot;
pub mod wal;
pub mod webhook_destinations;

/// The repository README's Rust example, compiled and run by `cargo test` as a doctest, so the
/// example a reader pastes keeps working.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
