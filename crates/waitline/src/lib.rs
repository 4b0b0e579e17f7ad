//! # waitline
//!
//! An embeddable call-queue engine with the semantics of the Telnyx Call Queue API: calls are
//! enqueued into named queues (made on first use), agents are bridged to the head of a
//! queue, calls leave by hangup, bridge, `leave_queue` or when their `max_wait_time_secs`
//! runs out, empty queues are collected after a period of inactivity, and every change
//! raises a typed [`Event`].
//!
//! ```
//! use waitline::{BridgeParams, CommandOptions, DialParams, Engine, EnqueueParams};
//!
//! let engine = Engine::builder().build();
//! let tenant = engine.default_tenant();
//! let caller = tenant.dial(&DialParams::new("+15550001", "+15550002", "app"))?;
//! let agent = tenant.dial(&DialParams::new("+15550003", "+15550004", "app"))?;
//! tenant.enqueue(&caller.call_control_id, &EnqueueParams::new("support"))?;
//! assert_eq!(tenant.queue("support")?.current_size, 1);
//! tenant.bridge(&agent.call_control_id, &BridgeParams::queue("support"))?;
//! assert_eq!(tenant.call(&caller.call_control_id)?.bridged_with, Some(agent.call_control_id.clone()));
//! tenant.hangup(&agent.call_control_id, &CommandOptions::default())?;
//! # Ok::<(), waitline::Error>(())
//! ```
//!
//! The engine is a cheap-to-clone handle ([`Engine`]); each tenant's state sits behind one
//! lock that a command takes once, and every state-changing command of a tenant gets the
//! next number of the tenant's sequence ([`Tenant::last_seq`], [`Event::seq`]); time comes
//! from an injectable [`Clock`]; timers fire on time through [`Engine::run_pending_tasks`]
//! and on their own whenever a command finds one of its tenant due.

mod backoff;
mod batch;
mod bus;
mod call;
mod clock;
mod dials;
mod engine;
mod error;
mod event;
mod figures;
mod invariants;
pub mod journal;
mod order;
mod params;
mod queue;
mod rules;
mod slab;
pub mod snapshot;
mod state;
mod text;
mod timers;

pub use batch::EventRef;
pub use bus::Subscription;
pub use call::{CallId, CallIdentity, CallInfo, CallState};
pub use clock::{COARSE_CLOCK_TICK, Clock, ManualClock, Timestamp};
pub use engine::{
    DEFAULT_ENDED_CALL_RETENTION, DEFAULT_EVENT_CAPACITY, DEFAULT_MAX_ENDED_CALLS, DEFAULT_MAX_LIVE_CALLS,
    DEFAULT_MAX_QUEUES, DEFAULT_QUEUE_IDLE_TTL, DEFAULT_TENANT, Engine, EngineBuilder, Tenant,
};
pub use error::{BatchError, CallbackInfo, Error, ParamProblem, Result};
pub use event::{CallSubject, DequeueReason, Event, EventKind, HangupSource, Payload, QueueDeletedReason};
pub use figures::{
    DEFAULT_SERVICE_LEVEL_THRESHOLD, DayFigures, LENGTH_HISTORY_MINUTES, Outcomes, WAIT_BUCKETS_SECS,
    WaitHistogram,
};
pub use journal::{Journal, ReplayError};
pub use params::{
    AfterUnbridge, Bounds, BridgeMediaOptions, BridgeParams, CommandOptions, DEFAULT_AUTO_QUEUE_SIZE,
    DEFAULT_EXPLICIT_QUEUE_SIZE, DEFAULT_PAGE_SIZE, DialParams, EnqueueParams, MAX_CLIENT_STATE_LEN,
    MAX_NAME_LEN, MAX_URL_LEN, MAX_WAIT_TIME_SECS, PAGE_NUMBER, PAGE_SIZE, PRIORITY, Page, PageRequest,
    QUEUE_MAX_SIZE, QueueCallUpdate, RECORD_MAX_LENGTH, RECORD_TIMEOUT_SECS, TransferParams,
};
pub use queue::{DequeueTotals, QueueCallInfo, QueueInfo};
pub use rules::ENQUEUE_MANY_CHUNK;
pub use snapshot::SnapshotError;
