//! The one mapping from engine errors to the Python exception classes of `waitline.errors`.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use waitline::Error;

use crate::convert::json_to_py;

/// The `waitline.errors` class of each engine error.
fn class_name(e: &Error) -> &'static str {
    match e {
        Error::InvalidParameter { .. } => "InvalidParameterError",
        Error::CallNotFound | Error::CallExists => "CallNotFoundError",
        Error::CallEnded { .. } => "CallEndedError",
        Error::QueueFull => "QueueFullError",
        Error::AlreadyInQueue => "AlreadyInQueueError",
        Error::NotInQueue => "NotInQueueError",
        Error::QueueEmpty => "QueueEmptyError",
        Error::QueueNotFound | Error::QueueCallNotFound => "QueueNotFoundError",
        Error::QueueNotEmpty => "QueueNotEmptyError",
        Error::QueueExists => "QueueExistsError",
        Error::LimitReached { .. } => "LimitReachedError",
    }
}

/// The Python exception for an engine error, with `code`, `title`, `detail`, `pointer` and
/// (for a dead queue head) `meta`.
pub(crate) fn to_py_err(py: Python<'_>, e: &Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = py.import("waitline.errors")?.getattr(class_name(e))?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("code", e.code())?;
        kwargs.set_item("title", e.title())?;
        kwargs.set_item("pointer", e.pointer())?;
        if let Error::CallEnded { callback: Some(cb) } = e {
            let value = serde_json::json!({ "call": cb });
            kwargs.set_item("meta", json_to_py(py, &value)?)?;
        }
        let instance = class.call((e.to_string(),), Some(&kwargs))?;
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|import_error| {
        PyRuntimeError::new_err(format!("{e} (waitline.errors unavailable: {import_error})"))
    })
}

/// `?` for engine results in Python-facing code.
pub(crate) trait IntoPyResult<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py_err(py, &e))
    }
}
