//! Check functions shared by the model-based tests, the fuzz targets (`fuzz/`) and the corpus
//! replay that runs in the normal test suite. Each takes an input and returns `Err` with a
//! description when waitline misbehaves; a fuzz target panics on `Err`.

pub mod concurrent;
pub mod http;
pub mod json_bodies;
pub mod model;
