//! Webhooks: every Telnyx event of a call is POSTed in the Telnyx envelope, signed with
//! Ed25519 exactly as Telnyx signs (`telnyx-timestamp`, and `telnyx-signature-ed25519` over
//! `"{timestamp}|{body}"`), to the call's `webhook_url` or the configured one. A failed
//! delivery is retried with exponential backoff, then sent to the failover URL.
//!
//! Commands never wait for delivery: the engine hands events to a reader task, which puts
//! them in a bounded outbox per worker; a call always maps to the same worker, so its events
//! arrive in order. What does not fit in a full outbox is dropped, counted and logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use waitline::{Engine, Event, Subscription};

use crate::durable::Durability;

/// Signs webhook bodies.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("public_key", &self.public_key_base64()).finish()
    }
}

impl Signer {
    /// From the base64 of a 32-byte Ed25519 seed.
    ///
    /// # Errors
    /// Not base64, or not 32 bytes.
    pub fn from_base64_seed(seed: &str) -> Result<Self, String> {
        let bytes = BASE64.decode(seed.trim()).map_err(|e| format!("signing key is not base64: {e}"))?;
        let seed: [u8; 32] =
            bytes.try_into().map_err(|_| "signing key must be the base64 of 32 bytes".to_owned())?;
        Ok(Self { key: SigningKey::from_bytes(&seed) })
    }

    /// A fresh random key.
    ///
    /// # Panics
    /// If the operating system has no randomness to give.
    #[must_use]
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the OS random source");
        Self { key: SigningKey::from_bytes(&seed) }
    }

    /// The secret seed, base64 (what `from_base64_seed` reads): for keeping it in the data
    /// directory, never for a log.
    #[must_use]
    pub fn seed_base64(&self) -> String {
        BASE64.encode(self.key.to_bytes())
    }

    /// The public key, base64 (what receivers verify with).
    #[must_use]
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.key.verifying_key().as_bytes())
    }

    /// The two signature headers for `body` sent at Unix time `timestamp`.
    #[must_use]
    pub fn sign(&self, timestamp: u64, body: &[u8]) -> (String, String) {
        let mut message = format!("{timestamp}|").into_bytes();
        message.extend_from_slice(body);
        (timestamp.to_string(), BASE64.encode(self.key.sign(&message).to_bytes()))
    }
}

/// Where and how webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Used for calls dialed without a `webhook_url`.
    pub url: Option<String>,
    /// Tried after every attempt at the primary URL failed.
    pub failover_url: Option<String>,
    /// Attempts per URL (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubles after each.
    pub backoff: Duration,
    /// Time allowed for one attempt.
    pub timeout: Duration,
    /// Number of workers (parallel deliveries; one call always uses the same one).
    pub workers: usize,
    /// Events waiting per worker before new ones are dropped.
    pub outbox_capacity: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: None,
            failover_url: None,
            attempts: 3,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
            workers: 16,
            outbox_capacity: 10_000,
        }
    }
}

/// Counters of the outbox.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Accepted with a 2xx.
    pub delivered: AtomicU64,
    /// Failed on every URL.
    pub failed: AtomicU64,
    /// Dropped because an outbox was full (or the engine's channel overflowed).
    pub dropped: AtomicU64,
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
}

#[derive(Debug)]
struct Running {
    /// Sent (or dropped) to stop the reader.
    stop: oneshot::Sender<()>,
    reader: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

struct Delivery {
    signer: Signer,
    config: WebhookConfig,
    client: reqwest::Client,
    stats: Arc<WebhookStats>,
    tracker: Arc<Tracker>,
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

    /// Starts the reader task and the workers if they are not running (inside a tokio
    /// runtime). Events committed before this are not delivered.
    ///
    /// # Panics
    /// If the HTTP client cannot be made, or outside a tokio runtime.
    pub fn ensure_started(&self) {
        let mut running = self.running.lock();
        if running.is_some() {
            return;
        }
        let stats = self.stats.clone();
        let (stop, stopped) = oneshot::channel();
        let client = reqwest::Client::builder().timeout(self.config.timeout).build().expect("HTTP client");
        let (workers_n, capacity) = (self.config.workers.max(1), self.config.outbox_capacity.max(1));
        let tracker =
            Arc::new(Tracker { durability: self.durability.clone(), tenants: parking_lot::Mutex::default() });
        let delivery = Arc::new(Delivery {
            signer: self.signer.clone(),
            config: self.config.clone(),
            client,
            stats: stats.clone(),
            tracker: tracker.clone(),
        });
        let mut senders = Vec::with_capacity(workers_n);
        let mut workers = Vec::with_capacity(workers_n);
        for _ in 0..workers_n {
            let (tx, rx) = mpsc::channel::<Event>(capacity);
            senders.push(tx);
            workers.push(tokio::spawn(worker(rx, delivery.clone())));
        }
        let events = self.engine.subscribe();
        let outbox = Outbox { senders, tracker, stats };
        let backlog = self.durability.take_backlog();
        let reader = tokio::spawn(read(events, backlog, self.durability.clone(), outbox, stopped));
        *running = Some(Running { stop, reader, workers });
    }

    /// Stops taking events, then waits for the outboxes to drain, at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let Some(mut running) = self.running.lock().take() else { return };
        let _ = running.stop.send(());
        let _ = running.reader.await;
        let drain = futures_util::future::join_all(running.workers.drain(..));
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("webhook outbox not drained within the shutdown grace period");
        }
    }
}

/// Where the reader puts events: the workers' queues, and the tracker of what is handled.
struct Outbox {
    senders: Vec<mpsc::Sender<Event>>,
    tracker: Arc<Tracker>,
    stats: Arc<WebhookStats>,
}

/// Awaits the engine's events and routes each to its worker's outbox, until `stop` (or until
/// the engine is gone); then hands over what is already committed and closes the outboxes.
/// The events of `backlog` (made again by the replay after a restart) go first.
async fn read(
    mut events: Subscription,
    backlog: Vec<Event>,
    durability: Durability,
    outbox: Outbox,
    mut stop: oneshot::Receiver<()>,
) {
    for event in backlog {
        outbox.route(event);
    }
    let mut lost_upstream = 0;
    loop {
        // `recv_async` is cancel-safe: an event is taken only when it is returned. Each event
        // spends the task's budget, so a busy engine does not keep the other tasks waiting.
        let event = tokio::select! {
            biased;
            _ = &mut stop => break,
            event = tokio::task::coop::cooperative(events.recv_async()) => event,
        };
        let Some(event) = event else { break };
        // Only a change on disk is told: its record was appended before its event was
        // published, so the store's latest mark covers it.
        if let Err(why) = durability.settled().await {
            tracing::error!(why = %why, "webhooks stopped: the store cannot keep changes");
            break;
        }
        outbox.route(event);
        let lost = events.dropped();
        if lost > lost_upstream {
            outbox.stats.dropped.fetch_add(lost - lost_upstream, Ordering::Relaxed);
            tracing::warn!(lost = lost - lost_upstream, "webhook events lost: the engine channel overflowed");
            lost_upstream = lost;
        }
    }
    let committed = events.drain();
    if durability.settled().await.is_ok() {
        for event in committed {
            outbox.route(event);
        }
    }
}

impl Outbox {
    /// Puts an event in the outbox of its call's worker.
    fn route(&self, event: Event) {
        let Some(subject) = event.kind.subject() else {
            // [ext] queue events: streams only, handled at once.
            self.tracker.handled(&event.tenant, event.seq(), false);
            return;
        };
        let worker = (subject.call.call_leg_id.as_u128() % self.senders.len() as u128) as usize;
        self.tracker.handled(&event.tenant, event.seq(), true);
        if let Err(e) = self.senders[worker].try_send(event) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            let ev = match e {
                mpsc::error::TrySendError::Full(ev) => {
                    tracing::warn!(event = ev.event_type(), id = %ev.id, "webhook outbox full: event dropped");
                    ev
                }
                mpsc::error::TrySendError::Closed(ev) => ev,
            };
            self.tracker.done(&ev.tenant, ev.seq());
        }
    }
}

/// What the outbox has handled, per tenant, so that a restart sends again only the events
/// not handled: the mark is the highest number below which every event is delivered or
/// given up on, kept in the store with its next commit.
#[derive(Debug)]
struct Tracker {
    durability: Durability,
    tenants: parking_lot::Mutex<std::collections::HashMap<Arc<str>, Handled>>,
}

#[derive(Debug, Default)]
struct Handled {
    /// Numbers with events in the outbox, and how many each.
    pending: std::collections::BTreeMap<u64, u32>,
    /// The highest number routed.
    routed: u64,
    /// The mark last kept.
    marked: u64,
}

impl Tracker {
    /// An event of `tenant` numbered `seq` was routed: into the outbox (`queued`), or
    /// handled at once.
    fn handled(&self, tenant: &Arc<str>, seq: u64, queued: bool) {
        if !self.durability.is_durable() {
            return; // nothing to keep: no bookkeeping either
        }
        let mut tenants = self.tenants.lock();
        let h = tenants.entry(tenant.clone()).or_default();
        h.routed = h.routed.max(seq);
        if queued {
            *h.pending.entry(seq).or_default() += 1;
        }
        self.remark(tenant, h);
    }

    /// An event from the outbox was delivered or given up on.
    fn done(&self, tenant: &Arc<str>, seq: u64) {
        if !self.durability.is_durable() {
            return;
        }
        let mut tenants = self.tenants.lock();
        let Some(h) = tenants.get_mut(tenant) else { return };
        if let std::collections::btree_map::Entry::Occupied(mut e) = h.pending.entry(seq) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        self.remark(tenant, h);
    }

    fn remark(&self, tenant: &str, h: &mut Handled) {
        let mark = h.pending.first_key_value().map_or(h.routed, |(first, _)| first - 1);
        if mark > h.marked {
            h.marked = mark;
            self.durability.mark_delivered(tenant, mark);
        }
    }
}

async fn worker(mut rx: mpsc::Receiver<Event>, delivery: Arc<Delivery>) {
    while let Some(event) = rx.recv().await {
        delivery.deliver(&event).await;
        delivery.tracker.done(&event.tenant, event.seq());
    }
}

impl Delivery {
    async fn deliver(&self, event: &Event) {
        let own = event.kind.subject().and_then(|s| s.call.webhook_url.as_deref());
        let Some(primary) = own.or(self.config.url.as_deref()) else { return };
        let urls = std::iter::once(primary).chain(self.config.failover_url.as_deref());
        let mut attempt = 0;
        for url in urls {
            let mut backoff = self.config.backoff;
            for try_no in 0..self.config.attempts.max(1) {
                if try_no > 0 {
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                attempt += 1;
                match self.post(url, event, attempt).await {
                    Ok(()) => {
                        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(why) => tracing::debug!(%url, attempt, %why, "webhook attempt failed"),
                }
            }
        }
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(event = event.event_type(), id = %event.id, attempts = attempt, "webhook not delivered");
    }

    async fn post(&self, url: &str, event: &Event, attempt: u32) -> Result<(), String> {
        let body = serde_json::to_vec(&envelope(event, attempt, url)).map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let (timestamp, signature) = self.signer.sign(now.as_secs(), &body);
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("telnyx-timestamp", timestamp)
            .header("telnyx-signature-ed25519", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() { Ok(()) } else { Err(format!("status {}", response.status())) }
    }
}

/// The Telnyx envelope: `{"data": event, "meta": {"attempt", "delivered_to"}}`.
#[must_use]
pub fn envelope(event: &Event, attempt: u32, delivered_to: &str) -> serde_json::Value {
    json!({ "data": event, "meta": { "attempt": attempt, "delivered_to": delivered_to } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    #[test]
    fn signature_verifies_over_timestamp_pipe_body() {
        let signer = Signer::from_base64_seed(&BASE64.encode([7u8; 32])).unwrap();
        let (ts, sig) = signer.sign(1_700_000_000, b"{\"a\":1}");
        let public: [u8; 32] = BASE64.decode(signer.public_key_base64()).unwrap().try_into().unwrap();
        let sig: [u8; 64] = BASE64.decode(sig).unwrap().try_into().unwrap();
        let key = VerifyingKey::from_bytes(&public).unwrap();
        assert_eq!(ts, "1700000000");
        assert!(key.verify(b"1700000000|{\"a\":1}", &Signature::from_bytes(&sig)).is_ok());
        assert!(key.verify(b"1700000001|{\"a\":1}", &Signature::from_bytes(&sig)).is_err());
        assert!(Signer::from_base64_seed("AAAA").is_err());
    }
}
