//! Webhooks: every Telnyx event of a call is POSTed in the Telnyx envelope, signed with
//! Ed25519 exactly as Telnyx signs (`telnyx-timestamp`, and `telnyx-signature-ed25519` over
//! `"{timestamp}|{body}"`), to the call's `webhook_url` (with its tenant's key,
//! `webhook_signer`) or the configured one (with the configured key). A failed
//! delivery is retried with exponential backoff, then sent to the failover URL.
//!
//! Commands never wait for delivery, and no event is dropped: the engine hands every event
//! to a reader task through a subscription that is never full, and the reader, which only
//! routes, hands each to its tenant's lane (`webhook_lane`), where it waits until it is
//! delivered or finally failed. Each lane delivers its calls side by side, each call's
//! events in order, so one tenant's slow endpoint delays no other tenant. Where a URL chosen
//! by an API client may point is `webhook_destination`'s policy; the requests themselves are
//! `webhook_delivery`'s.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use waitline::{Engine, Event, Subscription, Timestamp};

use crate::durable::Durability;
use crate::webhook_delivery::Delivery;
use crate::webhook_destination::{DestinationPolicy, Refusal};
use crate::webhook_lane::{Lane, LaneContext};
pub use crate::webhook_signer::Signer;

/// Where and how webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Used for calls dialed without a `webhook_url`. Trusted: not held to `allow`.
    pub url: Option<String>,
    /// Tried after every attempt at the primary URL failed. Trusted.
    pub failover_url: Option<String>,
    /// Where a call's own `webhook_url` may point besides public addresses.
    pub allow: DestinationPolicy,
    /// Attempts per URL (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubles after each.
    pub backoff: Duration,
    /// Time allowed for one attempt.
    pub timeout: Duration,
    /// Requests in flight at once per tenant (each call's events still go one at a time).
    pub lane_requests: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: None,
            failover_url: None,
            allow: DestinationPolicy::default(),
            attempts: 3,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
            lane_requests: 16,
        }
    }
}

/// Counters of the outbox.
#[derive(Debug)]
pub struct WebhookStats {
    /// Accepted with a 2xx.
    pub delivered: AtomicU64,
    /// Finally failed: every attempt at every URL failed, or no URL was allowed (each also
    /// logged and kept in [`Webhooks::failures`]).
    pub failed: AtomicU64,
    /// Times a call's own URL was not sent to because the destination policy refused it
    /// (a literal address, or a host name that resolved to no allowed address).
    pub refused: AtomicU64,
    /// Events waiting in the lanes or being delivered.
    pub pending: AtomicU64,
    /// How long each attempt (one POST) took, whatever its outcome.
    pub attempt_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for WebhookStats {
    fn default() -> Self {
        Self {
            delivered: AtomicU64::default(),
            failed: AtomicU64::default(),
            refused: AtomicU64::default(),
            pending: AtomicU64::default(),
            attempt_seconds: crate::metrics::attempt_histogram(),
        }
    }
}

/// A webhook never delivered (every attempt at every URL failed, or no URL was allowed), as
/// `GET /v2/webhook_failures` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailedDelivery {
    /// `"webhook_failure"`.
    pub record_type: &'static str,
    /// The event's id.
    pub event_id: uuid::Uuid,
    /// Its type.
    pub event_type: &'static str,
    /// The call it is about.
    pub call_control_id: String,
    /// Requests tried.
    pub attempts: u32,
    /// Why the last one failed.
    pub error: String,
    /// When it was given up on.
    pub failed_at: Timestamp,
}

/// How many failed deliveries are kept per tenant (the oldest go first).
pub const FAILURES_KEPT_PER_TENANT: usize = 100;

/// The latest failed deliveries of each tenant, kept in memory and bounded: the log has every
/// failure, and this list lets a tenant see its recent ones (`GET /v2/webhook_failures`)
/// without the operator's log. Not in the store: for a dead endpoint the failures grow with
/// the tenant's traffic, and a restart only forgets this view, never an undelivered event
/// (a failed event is past the delivery mark and is not sent again).
#[derive(Debug, Default)]
pub struct Failures {
    tenants: parking_lot::Mutex<HashMap<Arc<str>, VecDeque<FailedDelivery>>>,
}

impl Failures {
    /// Logs and keeps a finally failed delivery.
    pub(crate) fn record(&self, event: &Event, attempts: u32, why: String) {
        tracing::warn!(
            tenant = %event.tenant,
            event = event.event_type(),
            id = %event.id,
            attempts,
            why = %why,
            "webhook not delivered"
        );
        let failed = FailedDelivery {
            record_type: "webhook_failure",
            event_id: event.id,
            event_type: event.event_type(),
            call_control_id: event
                .kind
                .subject()
                .map(|s| s.call.call_control_id.to_string())
                .unwrap_or_default(),
            attempts,
            error: why,
            failed_at: Timestamp::now_utc(),
        };
        let mut tenants = self.tenants.lock();
        let kept = tenants.entry(event.tenant.clone()).or_default();
        if kept.len() == FAILURES_KEPT_PER_TENANT {
            kept.pop_front();
        }
        kept.push_back(failed);
    }

    /// The tenant's latest failed deliveries, oldest first.
    #[must_use]
    pub fn of(&self, tenant: &str) -> Vec<FailedDelivery> {
        self.tenants.lock().get(tenant).map(|k| k.iter().cloned().collect()).unwrap_or_default()
    }
}

/// The outbox. It starts on first need: at once when a default URL is configured, otherwise
/// before the first call that brings its own `webhook_url` is dialed, so that a server with
/// nowhere to send webhooks does not build and route events for nothing.
#[derive(Debug)]
pub struct Webhooks {
    engine: Engine,
    durability: Durability,
    signer: Signer,
    config: WebhookConfig,
    running: parking_lot::Mutex<Option<Running>>,
    /// Delivery counters.
    pub stats: Arc<WebhookStats>,
    /// Deliveries given up on, latest per tenant.
    pub failures: Arc<Failures>,
}

#[derive(Debug)]
struct Running {
    /// Sent (or dropped) to stop the reader.
    stop: oneshot::Sender<()>,
    /// Ends with the lanes it made.
    reader: JoinHandle<Lanes>,
}

impl Webhooks {
    /// The outbox of `engine`; nothing runs until [`Webhooks::ensure_started`].
    #[must_use]
    pub fn new(engine: &Engine, durability: Durability, signer: Signer, config: WebhookConfig) -> Self {
        Self {
            engine: engine.clone(),
            durability,
            signer,
            config,
            running: parking_lot::Mutex::new(None),
            stats: Arc::default(),
            failures: Arc::default(),
        }
    }

    /// Whether the outbox runs (it starts with a default URL, or at the first call with a
    /// URL of its own).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.running.lock().is_some()
    }

    /// Whether a default URL is configured.
    #[must_use]
    pub fn has_default_url(&self) -> bool {
        self.config.url.is_some()
    }

    /// Whether an API client may have a call's webhooks sent to `url` (checked at dial; a
    /// host name is checked again at every connection, against what it resolves to).
    ///
    /// # Errors
    /// Why not.
    pub fn check_destination(&self, url: &str) -> Result<(), Refusal> {
        self.config.allow.check_url(url).map(drop)
    }

    /// Starts the reader task if it is not running (inside a tokio runtime); lanes start
    /// with their tenant's first event. Events committed before this are not delivered.
    ///
    /// # Panics
    /// If the HTTP clients cannot be made, or outside a tokio runtime.
    pub fn ensure_started(&self) {
        let mut running = self.running.lock();
        if running.is_some() {
            return;
        }
        let (stop, stopped) = oneshot::channel();
        let context = LaneContext {
            delivery: Arc::new(Delivery::new(self.signer.clone(), self.config.clone(), self.stats.clone())),
            durability: self.durability.clone(),
            failures: self.failures.clone(),
            requests: self.config.lane_requests,
        };
        // Never full: the reader only routes, and a lane takes every event it is given.
        let events = self.engine.subscribe_bounded(usize::MAX);
        let backlog = self.durability.take_backlog();
        let lanes = Lanes { context, lanes: HashMap::new() };
        let reader = tokio::spawn(read(events, backlog, self.durability.clone(), lanes, stopped));
        *running = Some(Running { stop, reader });
    }

    /// Stops taking events, then waits for the lanes to drain, at most `grace` (then they
    /// are stopped).
    pub async fn shutdown(&self, grace: Duration) {
        let Some(running) = self.running.lock().take() else { return };
        let _ = running.stop.send(());
        let Ok(lanes) = running.reader.await else { return };
        let tasks: Vec<JoinHandle<()>> = lanes.lanes.into_values().map(Lane::close).collect();
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(grace, futures_util::future::join_all(tasks)).await.is_err() {
            tracing::warn!("webhook outbox not drained within the shutdown grace period");
            // Given up: nothing more is sent (their marks stay, so the next owner sends them).
            for abort in aborts {
                abort.abort();
            }
        }
    }
}

/// The most events the reader takes before waiting for the store once for them all.
const READ_BATCH: usize = 1024;

/// The lanes, one per tenant, made as their tenants' first events come.
#[derive(Debug)]
struct Lanes {
    context: LaneContext,
    lanes: HashMap<Arc<str>, Lane>,
}

impl Lanes {
    /// Hands `event` to its tenant's lane.
    fn route(&mut self, event: Event) {
        let context = &self.context;
        let lane = self
            .lanes
            .entry(event.tenant.clone())
            .or_insert_with(|| Lane::spawn(event.tenant.clone(), context.clone()));
        lane.push(event);
    }
}

/// Awaits the engine's events and hands each to its tenant's lane, until `stop` (or until
/// the engine is gone); then hands over what is already committed. The events of `backlog`
/// (made again by the replay after a restart) go first, and those added later (a bucket
/// taken over) as soon as they are. Returns the lanes, to be drained.
async fn read(
    mut events: Subscription,
    backlog: Vec<Event>,
    durability: Durability,
    mut lanes: Lanes,
    mut stop: oneshot::Receiver<()>,
) -> Lanes {
    for event in backlog {
        lanes.route(event);
    }
    loop {
        // `recv_async` is cancel-safe: an event is taken only when it is returned. Each event
        // spends the task's budget, so a busy engine does not keep the other tasks waiting.
        let event = tokio::select! {
            biased;
            _ = &mut stop => break,
            // A bucket taken over while running: what its former owner did not deliver goes
            // before any new event of its tenants (they are served only after this is added).
            () = durability.backlog_added() => {
                for event in durability.take_backlog() {
                    lanes.route(event);
                }
                continue;
            }
            event = tokio::task::coop::cooperative(events.recv_async()) => event,
        };
        let Some(event) = event else { break };
        // With the events published meanwhile: one wait for the store covers them all, so
        // that a busy engine's reader waits for a commit per batch, not per event (it would
        // fall behind, holding ever more events).
        let mut batch = vec![event];
        while batch.len() < READ_BATCH
            && let Some(event) = events.try_recv()
        {
            batch.push(event);
        }
        // A bucket taken over meanwhile: its backlog before any new event of its tenants.
        for event in durability.take_backlog() {
            lanes.route(event);
        }
        // Another node's, or made again by a takeover's replay: dropped without a wait.
        batch.retain(|event| !durability.not_to_tell(&event.tenant, event.seq()));
        if batch.is_empty() {
            continue;
        }
        // Only a change on disk is told: its record was appended before its event was
        // published, so the store's latest mark covers it.
        let settled = durability.settled().await;
        for event in batch {
            match durability.may_tell(settled.clone(), &event.tenant, event.seq()) {
                Ok(true) => lanes.route(event),
                Ok(false) => {} // its bucket moved: the new owner sends it
                Err(why) => {
                    tracing::error!(why = %why, "webhooks stopped: the store cannot keep changes");
                    return lanes;
                }
            }
        }
    }
    let committed = events.drain();
    let settled = durability.settled().await;
    for event in committed {
        if durability.may_tell(settled.clone(), &event.tenant, event.seq()) == Ok(true) {
            lanes.route(event);
        }
    }
    lanes
}

/// The Telnyx envelope: `{"data": event, "meta": {"attempt", "delivered_to"}}`.
#[must_use]
pub fn envelope(event: &impl serde::Serialize, attempt: u32, delivered_to: &str) -> serde_json::Value {
    json!({ "data": event, "meta": { "attempt": attempt, "delivered_to": delivered_to } })
}
