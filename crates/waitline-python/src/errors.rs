//! The one mapping from engine errors to the Python exception classes of `waitline.errors`.
//!
//! Every engine error has its own class; the classes are imported once, when the module is
//! initialised, and raising one looks nothing up by name.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use waitline::Error;

/// The exception classes of `waitline.errors`, one per engine error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// `WaitlineError` itself: an error of a newer engine than this mapping knows.
    Waitline,
    InvalidParameter,
    CallNotFound,
    CallExists,
    CallEnded,
    QueueFull,
    AlreadyInQueue,
    NotInQueue,
    QueueEmpty,
    QueueNotFound,
    QueueCallNotFound,
    QueueNotEmpty,
    QueueExists,
    LimitReached,
}

impl Class {
    /// Every class, in the order of the enum (the index of the cache).
    const ALL: [Self; 14] = [
        Self::Waitline,
        Self::InvalidParameter,
        Self::CallNotFound,
        Self::CallExists,
        Self::CallEnded,
        Self::QueueFull,
        Self::AlreadyInQueue,
        Self::NotInQueue,
        Self::QueueEmpty,
        Self::QueueNotFound,
        Self::QueueCallNotFound,
        Self::QueueNotEmpty,
        Self::QueueExists,
        Self::LimitReached,
    ];

    /// The class of each engine error. `Error` is non-exhaustive: an error this mapping does
    /// not name yet raises the base class (a test lists every error the engine has now).
    const fn of(e: &Error) -> Self {
        match e {
            Error::InvalidParameter { .. } => Self::InvalidParameter,
            Error::CallNotFound => Self::CallNotFound,
            Error::CallExists => Self::CallExists,
            Error::CallEnded { .. } => Self::CallEnded,
            Error::QueueFull => Self::QueueFull,
            Error::AlreadyInQueue => Self::AlreadyInQueue,
            Error::NotInQueue => Self::NotInQueue,
            Error::QueueEmpty => Self::QueueEmpty,
            Error::QueueNotFound => Self::QueueNotFound,
            Error::QueueCallNotFound => Self::QueueCallNotFound,
            Error::QueueNotEmpty => Self::QueueNotEmpty,
            Error::QueueExists => Self::QueueExists,
            Error::LimitReached { .. } => Self::LimitReached,
            _ => Self::Waitline,
        }
    }

    /// Its name in `waitline.errors`.
    const fn name(self) -> &'static str {
        match self {
            Self::Waitline => "WaitlineError",
            Self::InvalidParameter => "InvalidParameterError",
            Self::CallNotFound => "CallNotFoundError",
            Self::CallExists => "CallExistsError",
            Self::CallEnded => "CallEndedError",
            Self::QueueFull => "QueueFullError",
            Self::AlreadyInQueue => "AlreadyInQueueError",
            Self::NotInQueue => "NotInQueueError",
            Self::QueueEmpty => "QueueEmptyError",
            Self::QueueNotFound => "QueueNotFoundError",
            Self::QueueCallNotFound => "QueueCallNotFoundError",
            Self::QueueNotEmpty => "QueueNotEmptyError",
            Self::QueueExists => "QueueExistsError",
            Self::LimitReached => "LimitReachedError",
        }
    }
}

/// The classes, indexed by `Class as usize`, imported once.
static CLASSES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&'static [Py<PyType>]> {
    let all = CLASSES.get_or_try_init(py, || {
        let module = py.import("waitline.errors")?;
        Class::ALL
            .iter()
            .map(|c| Ok(module.getattr(c.name())?.cast_into::<PyType>()?.unbind()))
            .collect::<PyResult<Vec<_>>>()
    })?;
    Ok(all)
}

/// Imports the classes (at module initialisation, so that a missing one fails the import).
pub(crate) fn init(py: Python<'_>) -> PyResult<()> {
    classes(py)?;
    store_error_class(py).map(drop)
}

fn store_error_class(py: Python<'_>) -> PyResult<&Py<PyType>> {
    STORE_ERROR.get_or_try_init(py, || {
        Ok(py.import("waitline.errors")?.getattr("StoreError")?.cast_into::<PyType>()?.unbind())
    })
}

/// The Python exception for an engine error, with `code`, `title`, `detail`, `parameter` and
/// (for a dead queue head) `meta`.
pub(crate) fn to_py_err(py: Python<'_>, e: &Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = classes(py)?[Class::of(e) as usize].bind(py);
        let kwargs = PyDict::new(py);
        kwargs.set_item("code", e.code())?;
        kwargs.set_item("title", e.title())?;
        kwargs.set_item("parameter", e.parameter())?;
        if let Error::CallEnded { callback: Some(cb) } = e {
            let value = serde_json::json!({ "call": cb });
            kwargs.set_item("meta", crate::convert::json_to_py(py, &value)?)?;
        }
        let instance = class.call((e.to_string(),), Some(&kwargs))?;
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|import_error| {
        PyRuntimeError::new_err(format!("{e} (waitline.errors unavailable: {import_error})"))
    })
}

/// `waitline.errors.StoreError`, imported once.
static STORE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The Python exception for a simulation that could not run: its inputs out of range are a
/// `ValueError`, an engine refusal the engine's own class, an inconsistency a `RuntimeError`.
pub(crate) fn sim_err(py: Python<'_>, e: &waitline_sim::SimError) -> PyErr {
    match e {
        waitline_sim::SimError::Engine(e) => to_py_err(py, e),
        waitline_sim::SimError::Invalid { .. } => PyValueError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

/// The Python exception for a failure of the data directory (`StoreError`: opening,
/// replaying, or keeping a change).
pub(crate) fn store_err(py: Python<'_>, e: &waitline_store::Error) -> PyErr {
    match store_error_class(py) {
        Ok(class) => PyErr::from_type(class.bind(py).clone(), e.to_string()),
        Err(import_error) => {
            PyRuntimeError::new_err(format!("{e} (waitline.errors unavailable: {import_error})"))
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_at_its_index_and_named_once() {
        for (i, c) in Class::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        let mut names: Vec<_> = Class::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Class::ALL.len());
    }
}
