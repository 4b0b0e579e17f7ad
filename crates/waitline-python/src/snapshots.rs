//! Read-only snapshots handed to Python: queues, queue members and events.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::json_to_py;

/// A queue's state and figures at one instant.
#[pyclass(frozen, module = "waitline._native", name = "Queue", get_all)]
#[derive(Debug)]
pub struct PyQueue {
    name: String,
    id: String,
    current_size: usize,
    max_size: usize,
    average_wait_time_secs: u64,
    created_at: String,
    updated_at: String,
    longest_wait_time_secs: u64,
    estimated_wait_time_secs: u64,
    total_enqueued: u64,
    total_dequeued: Py<PyDict>,
    explicit: bool,
    service_level_secs: u64,
    bridged_within_service_level: u64,
    today: Py<PyAny>,
    wait_histogram: Py<PyAny>,
    length_last_hour: Vec<u32>,
}

impl PyQueue {
    pub(crate) fn new(py: Python<'_>, q: waitline::QueueInfo) -> PyResult<Self> {
        let totals = PyDict::new(py);
        totals.set_item("bridged", q.total_dequeued.bridged)?;
        totals.set_item("hangup", q.total_dequeued.hangup)?;
        totals.set_item("leave", q.total_dequeued.leave)?;
        totals.set_item("timeout", q.total_dequeued.timeout)?;
        Ok(Self {
            name: q.name,
            id: q.id.to_string(),
            current_size: q.current_size,
            max_size: q.max_size,
            average_wait_time_secs: q.average_wait_time_secs,
            created_at: q.created_at.to_string(),
            updated_at: q.updated_at.to_string(),
            longest_wait_time_secs: q.longest_wait_time_secs,
            estimated_wait_time_secs: q.estimated_wait_time_secs,
            total_enqueued: q.total_enqueued,
            total_dequeued: totals.unbind(),
            explicit: q.explicit,
            service_level_secs: q.service_level_secs,
            bridged_within_service_level: q.bridged_within_service_level,
            today: figures_to_py(py, &q.today)?,
            wait_histogram: figures_to_py(py, &q.wait_histogram)?,
            length_last_hour: q.length_last_hour,
        })
    }
}

/// A figure as the dict of its JSON form (the same keys as the HTTP service's).
fn figures_to_py(py: Python<'_>, figure: &impl serde::Serialize) -> PyResult<Py<PyAny>> {
    let value =
        serde_json::to_value(figure).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    json_to_py(py, &value).map(Bound::unbind)
}

#[pymethods]
impl PyQueue {
    fn __repr__(&self) -> String {
        format!(
            "Queue(name={:?}, current_size={}, max_size={}, average_wait_time_secs={})",
            self.name, self.current_size, self.max_size, self.average_wait_time_secs
        )
    }
}

/// A member of a queue at one instant.
#[pyclass(frozen, module = "waitline._native", name = "QueueCall", get_all)]
#[derive(Debug)]
pub struct PyQueueCall {
    call_control_id: String,
    call_leg_id: String,
    call_session_id: String,
    connection_id: String,
    from_: String,
    to: String,
    queue_name: String,
    queue_id: String,
    queue_position: usize,
    wait_time_secs: u64,
    enqueued_at: String,
    is_alive: bool,
    priority: u8,
    keep_after_hangup: bool,
    estimated_wait_time_secs: u64,
}

impl From<waitline::QueueCallInfo> for PyQueueCall {
    fn from(c: waitline::QueueCallInfo) -> Self {
        Self {
            call_control_id: c.call_control_id,
            call_leg_id: c.call_leg_id.to_string(),
            call_session_id: c.call_session_id.to_string(),
            connection_id: c.connection_id,
            from_: c.from,
            to: c.to,
            queue_name: c.queue_name,
            queue_id: c.queue_id.to_string(),
            queue_position: c.queue_position,
            wait_time_secs: c.wait_time_secs,
            enqueued_at: c.enqueued_at.to_string(),
            is_alive: c.is_alive,
            priority: c.priority,
            keep_after_hangup: c.keep_after_hangup,
            estimated_wait_time_secs: c.estimated_wait_time_secs,
        }
    }
}

#[pymethods]
impl PyQueueCall {
    fn __repr__(&self) -> String {
        format!(
            "QueueCall(call_control_id={:?}, queue={:?}, queue_position={}, wait_time_secs={}, is_alive={})",
            self.call_control_id,
            self.queue_name,
            self.queue_position,
            self.wait_time_secs,
            if self.is_alive { "True" } else { "False" }
        )
    }
}

/// One event, as the webhook of docs/behaviour.md §4 would carry it.
#[pyclass(frozen, module = "waitline._native", name = "Event")]
#[derive(Debug)]
pub struct PyEvent {
    #[pyo3(get)]
    event_type: &'static str,
    #[pyo3(get)]
    id: String,
    #[pyo3(get)]
    occurred_at: String,
    #[pyo3(get)]
    tenant: String,
    data: serde_json::Value,
}

/// Made from the event as delivered, read in place (no owned `waitline::Event` between).
impl From<waitline::EventRef<'_>> for PyEvent {
    fn from(e: waitline::EventRef<'_>) -> Self {
        Self {
            event_type: e.event_type(),
            id: e.id().to_string(),
            occurred_at: e.occurred_at().to_string(),
            tenant: e.tenant().to_owned(),
            data: serde_json::to_value(e).unwrap_or_default(),
        }
    }
}

#[pymethods]
impl PyEvent {
    /// The payload object, exactly the webhook's `data.payload` (an absent value, such as a
    /// call's `client_state` when it has none, is a missing key, never `None`).
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.data["payload"])
    }

    /// The whole webhook envelope: `{"data": {...}, "meta": {"attempt": 1}}` (no
    /// `delivered_to`: an event read in-process was delivered to no URL, and an absent value is
    /// a missing key, never `None`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let envelope = serde_json::json!({ "data": self.data, "meta": { "attempt": 1 } });
        json_to_py(py, &envelope)
    }

    fn __repr__(&self) -> String {
        let call = self.data["payload"]["call_control_id"].as_str().unwrap_or("-");
        format!("Event({} {call} at {})", self.event_type, self.occurred_at)
    }
}
