//! The native part of the `waitline` Python package: a thin layer over the core engine. No
//! rule is decided here.
//!
//! The GIL is released around real work only: `dial_many`, `enqueue_many` (its ids are read
//! first, each holding its string), whole listings, maintenance, and waiting for events. A
//! single command keeps it: the core holds its tenant's lock for well under a microsecond and
//! never calls back into Python, so nothing can wait on the GIL while holding that lock, and
//! releasing and retaking the GIL cost about 1,600 instructions per enqueue + bridge pair (a
//! fifth of the pair, callgrind).
#![allow(unsafe_code)]
// pyo3's macros expand to the FFI glue, which is unsafe by nature.
// Python signatures decide these: keyword arguments, and values pyo3 hands over owned.
#![allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]

mod call;
mod convert;
mod engine;
mod errors;
mod simulate;
mod snapshots;

use pyo3::prelude::*;

// The module's own allocations (the engine's records, a batch's ids, the parameters a
// command keeps) go to mimalloc. With glibc's malloc, the first large allocation after many
// small frees (a batch after `dial_many`) first consolidated every freed chunk: a quarter of
// the batch's instructions. Nothing allocated here is freed by Python, nor the other way round.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `waitline._native`
#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The exception classes, imported once (`waitline` has imported `waitline.errors` first).
    errors::init(m.py())?;
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<engine::EventIterator>()?;
    m.add_class::<call::PyCall>()?;
    m.add_class::<snapshots::PyQueue>()?;
    m.add_class::<snapshots::PyQueueCall>()?;
    m.add_class::<snapshots::PyEvent>()?;
    m.add_function(wrap_pyfunction!(simulate::simulate, m)?)?;
    Ok(())
}
