//! Values between Rust and Python.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyString};
use waitline::Bounds;

use crate::errors::IntoPyResult;

/// A JSON value as the Python object `json.loads` would give (dicts, lists, str, int, ...).
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (value.to_string(),))
}

/// The text of an optional `str` argument, lent for the command. The commands take their
/// string arguments as the Python objects (a pointer each) and read them here: pyo3's
/// `String` and `Option<String>` arguments moved each result through memory, in halves the
/// processor could not forward, for every argument, given or not.
#[inline]
pub(crate) fn opt_str<'a>(s: Option<&'a Bound<'_, PyString>>) -> PyResult<Option<&'a str>> {
    s.map(|s| s.to_str()).transpose()
}

/// [`opt_str`], owned (for the parameters the core keeps: client state, command ids).
#[inline]
pub(crate) fn opt_text(s: Option<&Bound<'_, PyString>>) -> PyResult<Option<String>> {
    Ok(opt_str(s)?.map(str::to_owned))
}

/// An optional integer parameter in the engine's type for it. Any Python `int` is accepted,
/// however large or negative: the engine's bounds decide what is out of range, with the
/// engine's error (a huge value is simply out of range there). Inlined: most calls pass none,
/// and the check for that must not cost a call of its own.
#[inline]
pub(crate) fn opt_bounded<T: TryFrom<i64>>(
    py: Python<'_>,
    value: Option<&Bound<'_, PyAny>>,
    bounds: Bounds,
) -> PyResult<Option<T>> {
    match value {
        Some(v) if !v.is_none() => bounded(py, v, bounds).map(Some),
        _ => Ok(None),
    }
}

#[inline(never)]
fn bounded<T: TryFrom<i64>>(py: Python<'_>, v: &Bound<'_, PyAny>, bounds: Bounds) -> PyResult<T> {
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!("{} must be an int", bounds.parameter)));
    }
    let wide = v.extract::<i64>().unwrap_or_else(|_| {
        // Beyond 64 bits: keep the sign, so the bounds report it out of range.
        if v.lt(0).unwrap_or(false) { i64::MIN } else { i64::MAX }
    });
    bounds.convert(wide).or_raise(py)
}
