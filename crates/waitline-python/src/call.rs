//! `waitline.Call`: a handle on one call, with the call-centric commands of Telnyx's Python
//! examples (`call.enqueue("support")`, `call.bridge(queue=...)`, `call.leave_queue()`).

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyString;
use waitline::{
    AfterUnbridge, BridgeParams, CallInfo, CommandOptions, EnqueueParams, Tenant, TransferParams,
};

use crate::convert::{opt_bounded, opt_str, opt_text};
use crate::errors::IntoPyResult;

/// A call of the engine. Its ids are fixed; `state`, `queue`, `bridged_with` and `is_alive`
/// are read from the engine at each access.
#[pyclass(frozen, module = "waitline._native", name = "Call")]
#[derive(Debug)]
pub struct PyCall {
    tenant: Tenant,
    #[pyo3(get)]
    call_control_id: String,
    #[pyo3(get)]
    call_leg_id: String,
    #[pyo3(get)]
    call_session_id: String,
}

impl PyCall {
    pub(crate) fn new(tenant: Tenant, info: &CallInfo) -> Self {
        Self {
            tenant,
            call_control_id: info.call_control_id.clone(),
            call_leg_id: info.call_leg_id.to_string(),
            call_session_id: info.call_session_id.to_string(),
        }
    }

    fn info(&self, py: Python<'_>) -> PyResult<CallInfo> {
        self.tenant.call(&self.call_control_id).or_raise(py)
    }
}

/// `client_state` and `command_id`, read from their Python strings when given.
#[inline(always)]
pub(crate) fn options(
    client_state: Option<&Bound<'_, PyString>>,
    command_id: Option<&Bound<'_, PyString>>,
) -> PyResult<CommandOptions> {
    Ok(CommandOptions { client_state: opt_text(client_state)?, command_id: opt_text(command_id)? })
}

/// The enqueue parameters shared by `Call.enqueue` and `Engine.enqueue_many`; the queue name
/// is the Python string's text, lent for the command.
#[inline(always)]
pub(crate) fn enqueue_params<'a>(
    py: Python<'_>,
    queue_name: &'a Bound<'_, PyString>,
    max_wait_time_secs: Option<&Bound<'_, PyAny>>,
    max_size: Option<&Bound<'_, PyAny>>,
    keep_after_hangup: bool,
    priority: Option<&Bound<'_, PyAny>>,
    options: CommandOptions,
) -> PyResult<EnqueueParams<&'a str>> {
    Ok(EnqueueParams {
        queue_name: queue_name.to_str()?,
        max_wait: opt_bounded::<u64>(py, max_wait_time_secs, waitline::MAX_WAIT_TIME_SECS)?
            .map(Duration::from_secs),
        max_size: opt_bounded(py, max_size, waitline::QUEUE_MAX_SIZE)?,
        keep_after_hangup,
        priority: opt_bounded(py, priority, waitline::PRIORITY)?,
        options,
    })
}

#[pymethods]
impl PyCall {
    /// `'active'`, `'queued'`, `'bridged'` or `'ended'`.
    #[getter]
    fn state(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.info(py)?.state.as_str())
    }

    /// The queue the call is in, if any.
    #[getter]
    fn queue(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.info(py)?.queue)
    }

    /// The `call_control_id` of the call this one is bridged with, if any.
    #[getter]
    fn bridged_with(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.info(py)?.bridged_with)
    }

    /// Not hung up.
    #[getter]
    fn is_alive(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.info(py)?.is_alive)
    }

    /// The last client state supplied.
    #[getter]
    fn client_state(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.info(py)?.client_state)
    }

    #[pyo3(signature = (queue_name, max_wait_time_secs=None, max_size=None, keep_after_hangup=false, priority=None, client_state=None, command_id=None))]
    fn enqueue(
        &self,
        py: Python<'_>,
        queue_name: &Bound<'_, PyString>,
        max_wait_time_secs: Option<&Bound<'_, PyAny>>,
        max_size: Option<&Bound<'_, PyAny>>,
        keep_after_hangup: bool,
        priority: Option<&Bound<'_, PyAny>>,
        client_state: Option<&Bound<'_, PyString>>,
        command_id: Option<&Bound<'_, PyString>>,
    ) -> PyResult<()> {
        let p = enqueue_params(
            py,
            queue_name,
            max_wait_time_secs,
            max_size,
            keep_after_hangup,
            priority,
            options(client_state, command_id)?,
        )?;
        self.tenant.enqueue(&self.call_control_id, &p).or_raise(py)
    }

    #[pyo3(signature = (client_state=None, command_id=None))]
    fn leave_queue(
        &self,
        py: Python<'_>,
        client_state: Option<&Bound<'_, PyString>>,
        command_id: Option<&Bound<'_, PyString>>,
    ) -> PyResult<()> {
        let o = options(client_state, command_id)?;
        self.tenant.leave_queue(&self.call_control_id, &o).or_raise(py)
    }

    #[pyo3(signature = (call_control_id=None, queue=None, park_after_unbridge=None, client_state=None, command_id=None))]
    fn bridge(
        &self,
        py: Python<'_>,
        call_control_id: Option<&Bound<'_, PyString>>,
        queue: Option<&Bound<'_, PyString>>,
        park_after_unbridge: Option<&Bound<'_, PyString>>,
        client_state: Option<&Bound<'_, PyString>>,
        command_id: Option<&Bound<'_, PyString>>,
    ) -> PyResult<()> {
        let after_unbridge = opt_str(park_after_unbridge)?;
        let p = BridgeParams {
            call_control_id: opt_str(call_control_id)?,
            queue: opt_str(queue)?,
            after_unbridge: AfterUnbridge::from_wire(after_unbridge).or_raise(py)?,
            media: None,
            options: options(client_state, command_id)?,
        };
        self.tenant.bridge(&self.call_control_id, &p).or_raise(py)
    }

    #[pyo3(signature = (client_state=None, command_id=None))]
    fn hangup(
        &self,
        py: Python<'_>,
        client_state: Option<&Bound<'_, PyString>>,
        command_id: Option<&Bound<'_, PyString>>,
    ) -> PyResult<()> {
        let o = options(client_state, command_id)?;
        self.tenant.hangup(&self.call_control_id, &o).or_raise(py)
    }

    /// Makes a new call to `to` and bridges this call with it; returns the new call.
    #[pyo3(signature = (to, from_=None, client_state=None, command_id=None))]
    fn transfer(
        &self,
        py: Python<'_>,
        to: String,
        from_: Option<String>,
        client_state: Option<&Bound<'_, PyString>>,
        command_id: Option<&Bound<'_, PyString>>,
    ) -> PyResult<Self> {
        let p = TransferParams { to, from: from_, options: options(client_state, command_id)? };
        let info = self.tenant.transfer(&self.call_control_id, &p).or_raise(py)?;
        Ok(Self::new(self.tenant.clone(), &info))
    }

    fn __repr__(&self) -> String {
        format!("Call({:?})", self.call_control_id)
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.call_control_id == other.call_control_id && self.tenant.name() == other.tenant.name()
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.call_control_id.hash(&mut h);
        h.finish()
    }
}
