//! `waitline.Engine`: the engine in-process, for one tenant.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyString;
use waitline::{
    Clock, CommandOptions, DialParams, Engine, ManualClock, PageRequest, QueueCallUpdate, Subscription,
    Tenant, Timestamp,
};
use waitline_store::engine::{StoreJournal, apply_record};
use waitline_store::{Fsync, Options as StoreOptions, Store};

use crate::call::{PyCall, enqueue_params};
use crate::convert::opt_bounded;
use crate::errors::{IntoPyResult, store_err, to_py_err};
use crate::snapshots::{PyEvent, PyQueue, PyQueueCall};

/// A thread owned by the engine: with the real clock it fires due timers (max wait, idle
/// queues) on time with no call from Python; with a data directory it takes the snapshots
/// that became due (one atomic load per round when none is). Dropping the engine stops it.
#[derive(Debug)]
struct Maintenance {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The process that started the thread: a fork of it (`multiprocessing`) has no such
    /// thread to join.
    pid: u32,
}

impl Maintenance {
    fn start(engine: Engine, run_timers: bool, journal: Option<Arc<StoreJournal>>) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let round = Duration::from_millis(100);
        let thread = std::thread::Builder::new()
            .name("waitline-maintenance".into())
            .spawn(move || {
                loop {
                    if run_timers {
                        engine.run_pending_tasks();
                    }
                    if let Some(journal) = &journal {
                        // A store that stopped says so to whoever waits for a write.
                        let _ = journal.take_due_snapshots(&engine);
                    }
                    let wait = if run_timers { engine.sleep_until_next_wakeup(round) } else { round };
                    let mut stopped = flag.0.lock();
                    if *stopped {
                        return;
                    }
                    flag.1.wait_for(&mut stopped, wait);
                    if *stopped {
                        return;
                    }
                }
            })
            .ok();
        Self { stop, thread: Mutex::new(thread), pid: std::process::id() }
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        // In a fork the thread is not there, and it may have held the flag's lock when the
        // parent forked: nothing to stop, and no lock to take.
        if std::process::id() != self.pid {
            return;
        }
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// The call-queue engine. Thread-safe: share it between Python threads.
#[pyclass(frozen, module = "waitline._native", name = "Engine")]
#[derive(Debug)]
pub struct PyEngine {
    engine: Engine,
    tenant: Tenant,
    manual: Option<ManualClock>,
    /// `None` when made with `events=False`: commands then build no events at all.
    events: Option<Mutex<Subscription>>,
    /// Where changes are kept, with `data_dir`.
    store: Option<Store>,
    /// The engine's journal in that store, which knows when snapshots are due.
    journal: Option<Arc<StoreJournal>>,
    _maintenance: Option<Maintenance>,
}

/// The ids of a batch, read with the GIL held before the batch runs without it.
struct BatchIds {
    /// Each keeps its Python string alive and points at its UTF-8 text, copying nothing.
    ids: Vec<PyBackedStr>,
    /// The error of the first id that has no UTF-8 text (a lone surrogate): the ids before it
    /// are enqueued, then it is raised.
    unreadable: Option<PyErr>,
}

impl BatchIds {
    /// Every item must be a `str` (checked for all before anything is enqueued); a `str`
    /// itself is not a sequence of ids.
    fn read(seq: &Bound<'_, PyAny>) -> PyResult<Self> {
        if seq.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err("call_control_ids must be a sequence of str, not a str"));
        }
        let mut ids = Vec::with_capacity(seq.len().unwrap_or(0));
        let mut unreadable = None;
        for item in seq.try_iter()? {
            let id = item?.cast_into::<PyString>()?;
            if unreadable.is_none() {
                match PyBackedStr::try_from(id) {
                    Ok(id) => ids.push(id),
                    Err(e) => unreadable = Some(e),
                }
            }
        }
        Ok(Self { ids, unreadable })
    }
}

/// Pages of the largest size the engine allows.
const PAGE: u32 = waitline::PAGE_SIZE.max as u32;

impl PyEngine {
    fn subscription(&self) -> PyResult<&Mutex<Subscription>> {
        self.events.as_ref().ok_or_else(|| {
            PyRuntimeError::new_err("this engine was made with events=False: it keeps no events")
        })
    }

    fn all_pages<T>(
        mut fetch: impl FnMut(PageRequest) -> waitline::Result<waitline::Page<T>>,
    ) -> waitline::Result<Vec<T>> {
        let mut out = Vec::new();
        for number in 1.. {
            let page = fetch(PageRequest::new(number, PAGE))?;
            let last = page.data.len() < PAGE as usize;
            out.extend(page.data);
            if last {
                break;
            }
        }
        Ok(out)
    }
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (queue_idle_ttl_secs=300.0, manual_clock=false, ended_call_retention_secs=600.0, tenant="default", max_live_calls=None, max_queues=None, events=true, data_dir=None, fsync="always", snapshot_every=waitline_store::engine::DEFAULT_SNAPSHOT_EVERY))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments, each with its default
    fn new(
        py: Python<'_>,
        queue_idle_ttl_secs: f64,
        manual_clock: bool,
        ended_call_retention_secs: f64,
        tenant: &str,
        max_live_calls: Option<usize>,
        max_queues: Option<usize>,
        events: bool,
        data_dir: Option<std::path::PathBuf>,
        fsync: &str,
        snapshot_every: u64,
    ) -> PyResult<Self> {
        let fsync = match fsync {
            "always" => Fsync::Always,
            "periodic" => Fsync::Periodic,
            other => {
                return Err(PyValueError::new_err(format!(
                    "fsync must be 'always' or 'periodic', not {other:?}"
                )));
            }
        };
        let secs = |v: f64, name: &str| {
            Duration::try_from_secs_f64(v).map_err(|_| PyValueError::new_err(format!("{name} must be >= 0")))
        };
        let mut builder = Engine::builder()
            .queue_idle_ttl(secs(queue_idle_ttl_secs, "queue_idle_ttl_secs")?)
            .ended_call_retention(secs(ended_call_retention_secs, "ended_call_retention_secs")?);
        if let Some(n) = max_live_calls {
            builder = builder.max_live_calls_per_tenant(n);
        }
        if let Some(n) = max_queues {
            builder = builder.max_queues_per_tenant(n);
        }
        let manual = manual_clock.then(|| ManualClock::new(Timestamp::now_utc()));
        if let Some(m) = &manual {
            builder = builder.clock(Clock::Manual(m.clone()));
        }
        // With a data directory: its journal is replayed (the GIL released meanwhile) before
        // the engine takes a command; events the replay makes again are not delivered.
        // Each tenant restarts from its newest snapshot (an embedding sends no webhooks:
        // no journal is kept for undelivered events).
        let (engine, store, journal) = match data_dir {
            None => (builder.build(), None, None),
            Some(dir) => {
                let opened = py.detach(|| -> Result<_, waitline_store::Error> {
                    let store = Store::open(&dir, StoreOptions { fsync, ..StoreOptions::default() })?;
                    let journal = StoreJournal::with_snapshot_every(store.clone(), snapshot_every);
                    let engine = builder.journal(journal.clone()).build();
                    journal.replay_into(&engine, apply_record)?;
                    Ok((engine, store, journal))
                });
                let (engine, store, journal) = opened.map_err(|e| store_err(py, &e))?;
                (engine, Some(store), Some(journal))
            }
        };
        // Without a subscriber the engine does not even build events (a third of a command's
        // cost): programs that never read them should not pay for them.
        let events = events.then(|| Mutex::new(engine.subscribe_tenant(tenant)));
        let snapshots = journal.clone().filter(|_| snapshot_every > 0);
        let maintenance = (!manual_clock || snapshots.is_some())
            .then(|| Maintenance::start(engine.clone(), !manual_clock, snapshots));
        Ok(Self {
            tenant: engine.tenant(tenant),
            engine,
            manual,
            events,
            store,
            journal,
            _maintenance: maintenance,
        })
    }

    /// With `data_dir`: takes the snapshots that are due, then waits until every change
    /// made so far is on disk (synced with `fsync="always"`, written to the operating system
    /// with `"periodic"`); many changes share one sync. Without a data directory, returns
    /// at once.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let (Some(store), Some(journal)) = (&self.store, &self.journal) else { return Ok(()) };
        py.detach(|| {
            journal.take_due_snapshots(&self.engine)?;
            store.flush()
        })
        .map_err(|e| store_err(py, &e))
    }

    /// The data directory's store is open (`data_dir` given).
    #[getter]
    fn durable(&self) -> bool {
        self.store.is_some()
    }

    /// Manual clock only: moves time forward and fires what became due. Returns how many
    /// timers changed something.
    fn advance(&self, py: Python<'_>, seconds: f64) -> PyResult<usize> {
        let Some(clock) = &self.manual else {
            return Err(PyRuntimeError::new_err("advance() needs Engine(manual_clock=True)"));
        };
        let d = Duration::try_from_secs_f64(seconds)
            .map_err(|_| PyValueError::new_err("seconds must be >= 0"))?;
        Ok(py.detach(|| {
            clock.advance(d);
            self.engine.run_pending_tasks()
        }))
    }

    /// The engine's current time (ISO 8601, UTC).
    #[getter]
    fn now(&self) -> String {
        self.engine.clock().now().to_string()
    }

    /// Fires every timer due now; returns how many changed something.
    fn run_pending_tasks(&self, py: Python<'_>) -> usize {
        py.detach(|| self.engine.run_pending_tasks())
    }

    #[pyo3(signature = (to, from_, connection_id="default", client_state=None, call_control_id=None, webhook_url=None, command_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn dial(
        &self,
        py: Python<'_>,
        to: String,
        from_: String,
        connection_id: &str,
        client_state: Option<String>,
        call_control_id: Option<String>,
        webhook_url: Option<String>,
        command_id: Option<String>,
    ) -> PyResult<PyCall> {
        let p = DialParams {
            to,
            from: from_,
            connection_id: connection_id.to_owned(),
            client_state,
            webhook_url,
            call_control_id,
            command_id,
        };
        let info = self.tenant.dial(&p).or_raise(py)?;
        Ok(PyCall::new(self.tenant.clone(), &info))
    }

    /// Dials `count` calls at once (bulk work without per-call Python overhead).
    #[pyo3(signature = (count, to, from_, connection_id="default"))]
    fn dial_many(
        &self,
        py: Python<'_>,
        count: usize,
        to: String,
        from_: String,
        connection_id: &str,
    ) -> PyResult<Vec<PyCall>> {
        let p = DialParams::new(to, from_, connection_id);
        let infos = py
            .detach(|| (0..count).map(|_| self.tenant.dial(&p)).collect::<Result<Vec<_>, _>>())
            .or_raise(py)?;
        Ok(infos.iter().map(|i| PyCall::new(self.tenant.clone(), i)).collect())
    }

    /// Enqueues many calls into one queue in one call: the core's batch command, the single
    /// enqueues in order. Stops at the first refusal (raising it as that enqueue would),
    /// leaving the calls before it enqueued. Returns how many were enqueued.
    #[pyo3(signature = (call_control_ids, queue_name, max_wait_time_secs=None, max_size=None, keep_after_hangup=false, priority=None))]
    fn enqueue_many(
        &self,
        py: Python<'_>,
        call_control_ids: &Bound<'_, PyAny>,
        queue_name: &Bound<'_, PyString>,
        max_wait_time_secs: Option<&Bound<'_, PyAny>>,
        max_size: Option<&Bound<'_, PyAny>>,
        keep_after_hangup: bool,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let p = enqueue_params(
            py,
            queue_name,
            max_wait_time_secs,
            max_size,
            keep_after_hangup,
            priority,
            CommandOptions::default(),
        )?;
        let BatchIds { ids, unreadable } = BatchIds::read(call_control_ids)?;
        // The whole batch runs with the GIL released: each id holds its string, so no other
        // thread can free the text it points at, and the core never calls back into Python.
        let done = py.detach(|| self.tenant.enqueue_many(&ids, &p)).map_err(|e| to_py_err(py, &e.error))?;
        unreadable.map_or(Ok(done), Err)
    }

    /// An existing call (`CallNotFoundError` otherwise).
    fn call(&self, py: Python<'_>, call_control_id: &str) -> PyResult<PyCall> {
        let info = self.tenant.call(call_control_id).or_raise(py)?;
        Ok(PyCall::new(self.tenant.clone(), &info))
    }

    #[pyo3(signature = (queue_name, max_size=None))]
    fn create_queue(
        &self,
        py: Python<'_>,
        queue_name: &str,
        max_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyQueue> {
        let size = opt_bounded(py, max_size, waitline::QUEUE_MAX_SIZE)?;
        let q = self.tenant.create_queue(queue_name, size).or_raise(py)?;
        PyQueue::new(py, q)
    }

    fn update_queue(
        &self,
        py: Python<'_>,
        queue_name: &str,
        max_size: &Bound<'_, PyAny>,
    ) -> PyResult<PyQueue> {
        let size = opt_bounded(py, Some(max_size), waitline::QUEUE_MAX_SIZE)?
            .ok_or_else(|| waitline::Error::missing("max_size"))
            .or_raise(py)?;
        let q = self.tenant.update_queue(queue_name, size).or_raise(py)?;
        PyQueue::new(py, q)
    }

    fn delete_queue(&self, py: Python<'_>, queue_name: &str) -> PyResult<()> {
        self.tenant.delete_queue(queue_name).or_raise(py)
    }

    fn queue(&self, py: Python<'_>, queue_name: &str) -> PyResult<PyQueue> {
        let q = self.tenant.queue(queue_name).or_raise(py)?;
        PyQueue::new(py, q)
    }

    /// Every queue, sorted by name.
    fn queues(&self, py: Python<'_>) -> PyResult<Vec<PyQueue>> {
        let all = py.detach(|| Self::all_pages(|p| self.tenant.queues(p))).or_raise(py)?;
        all.into_iter().map(|q| PyQueue::new(py, q)).collect()
    }

    /// Every member of a queue, in service order.
    fn queue_calls(&self, py: Python<'_>, queue_name: &str) -> PyResult<Vec<PyQueueCall>> {
        let all = py.detach(|| Self::all_pages(|p| self.tenant.queue_calls(queue_name, p))).or_raise(py)?;
        Ok(all.into_iter().map(PyQueueCall::from).collect())
    }

    fn queue_call(&self, py: Python<'_>, queue_name: &str, call_control_id: &str) -> PyResult<PyQueueCall> {
        let c = self.tenant.queue_call(queue_name, call_control_id).or_raise(py)?;
        Ok(c.into())
    }

    /// Just the 1-based position of a member: O(log n), no snapshot built.
    fn queue_position(&self, py: Python<'_>, queue_name: &str, call_control_id: &str) -> PyResult<usize> {
        self.tenant.queue_position(queue_name, call_control_id).or_raise(py)
    }

    #[pyo3(signature = (queue_name, call_control_id, keep_after_hangup=None, priority=None))]
    fn update_queue_call(
        &self,
        py: Python<'_>,
        queue_name: &str,
        call_control_id: &str,
        keep_after_hangup: Option<bool>,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyQueueCall> {
        let u =
            QueueCallUpdate { keep_after_hangup, priority: opt_bounded(py, priority, waitline::PRIORITY)? };
        let c = self.tenant.update_queue_call(queue_name, call_control_id, &u).or_raise(py)?;
        Ok(c.into())
    }

    fn remove_queue_call(&self, py: Python<'_>, queue_name: &str, call_control_id: &str) -> PyResult<()> {
        self.tenant.remove_queue_call(queue_name, call_control_id).or_raise(py)
    }

    /// Events taken from the engine, oldest first (at most `max`).
    #[pyo3(signature = (max=None))]
    fn poll_events(&self, py: Python<'_>, max: Option<usize>) -> PyResult<Vec<PyEvent>> {
        let events = self.subscription()?;
        Ok(py.detach(|| {
            let mut sub = events.lock();
            std::iter::from_fn(|| sub.try_next().map(PyEvent::from)).take(max.unwrap_or(usize::MAX)).collect()
        }))
    }

    /// An iterator that blocks (with the GIL released) for the next event; it ends after
    /// `timeout` seconds without one (never, with `None`).
    #[pyo3(signature = (timeout=None))]
    fn events(slf: Py<Self>, timeout: Option<f64>) -> PyResult<EventIterator> {
        slf.get().subscription()?;
        let timeout = timeout
            .map(|t| {
                Duration::try_from_secs_f64(t).map_err(|_| PyValueError::new_err("timeout must be >= 0"))
            })
            .transpose()?;
        Ok(EventIterator { engine: slf, timeout })
    }

    fn __repr__(&self) -> String {
        let py_bool = |b: bool| if b { "True" } else { "False" };
        format!(
            "Engine(tenant={:?}, manual_clock={}, events={})",
            self.tenant.name(),
            py_bool(self.manual.is_some()),
            py_bool(self.events.is_some())
        )
    }
}

/// Longest blocking wait between two checks for signals: Ctrl-C is answered within it.
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

/// Iterates over the engine's events as they happen.
#[pyclass(frozen, module = "waitline._native", name = "EventIterator")]
#[derive(Debug)]
pub struct EventIterator {
    engine: Py<PyEngine>,
    timeout: Option<Duration>,
}

#[pymethods]
impl EventIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyEvent>> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let engine = self.engine.get();
        let events = engine.subscription()?;
        loop {
            // The wait is on the engine's channel (an event wakes it at once), with the GIL
            // released. It is cut in slices of at most SIGNAL_SLICE only because Python runs
            // signal handlers (Ctrl-C's KeyboardInterrupt) on the main thread, between
            // bytecodes: a thread blocked in Rust must come back to let them run.
            let slice = deadline
                .map_or(SIGNAL_SLICE, |d| d.saturating_duration_since(Instant::now()).min(SIGNAL_SLICE));
            if let Some(ev) = py.detach(|| events.lock().next_timeout(slice).map(PyEvent::from)) {
                return Ok(Some(ev));
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }
}
