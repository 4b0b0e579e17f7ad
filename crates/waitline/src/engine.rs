//! The engine handle, its builder, and the tenant registry and handles.
//!
//! The commands of a [`Tenant`] and the maintenance of [`Engine::run_pending_tasks`] are in
//! `rules`, which builds on this module; this module builds on `state` only.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::RwLock;

use crate::bus::{EventBus, Subscription};
use crate::clock::{Clock, Timestamp};
use crate::figures::DEFAULT_SERVICE_LEVEL_THRESHOLD;
use crate::journal::{Journal, Replaying};
use crate::state::{Config, Shared, TenantState};

/// Default time an empty auto queue is kept (docs/behaviour.md §3).
pub const DEFAULT_QUEUE_IDLE_TTL: Duration = Duration::from_secs(300);
/// Default time an ended call's status stays readable (docs/behaviour.md §1).
pub const DEFAULT_ENDED_CALL_RETENTION: Duration = Duration::from_secs(600);
/// Default cap on live calls per tenant.
pub const DEFAULT_MAX_LIVE_CALLS: usize = 4_000_000;
/// Default cap on ended calls kept readable per tenant (past it the oldest go early).
pub const DEFAULT_MAX_ENDED_CALLS: usize = 4_000_000;
/// Default cap on queues per tenant.
pub const DEFAULT_MAX_QUEUES: usize = 100_000;
/// Default depth of a subscriber's channel, in command batches.
pub const DEFAULT_EVENT_CAPACITY: usize = 65_536;
/// The tenant of single-tenant embeddings.
pub const DEFAULT_TENANT: &str = "default";

/// Builds an [`Engine`]. Every setting has a documented default.
#[derive(Clone, Debug)]
pub struct EngineBuilder {
    queue_idle_ttl: Duration,
    ended_call_retention: Duration,
    max_live_calls: usize,
    max_ended_calls: usize,
    max_queues: usize,
    event_capacity: usize,
    service_level_threshold: Duration,
    clock: Clock,
    journal: Option<Arc<dyn Journal>>,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            queue_idle_ttl: DEFAULT_QUEUE_IDLE_TTL,
            ended_call_retention: DEFAULT_ENDED_CALL_RETENTION,
            max_live_calls: DEFAULT_MAX_LIVE_CALLS,
            max_ended_calls: DEFAULT_MAX_ENDED_CALLS,
            max_queues: DEFAULT_MAX_QUEUES,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            service_level_threshold: DEFAULT_SERVICE_LEVEL_THRESHOLD,
            clock: Clock::Coarse,
            journal: None,
        }
    }
}

impl EngineBuilder {
    /// How long an empty auto queue with no change is kept (default 300 s).
    #[must_use]
    pub const fn queue_idle_ttl(mut self, ttl: Duration) -> Self {
        self.queue_idle_ttl = ttl;
        self
    }

    /// How long an ended call's status stays readable (default 600 s).
    #[must_use]
    pub const fn ended_call_retention(mut self, retention: Duration) -> Self {
        self.ended_call_retention = retention;
        self
    }

    /// Cap on live (not ended) calls per tenant (default 4 000 000); past it dial answers
    /// `95004`.
    #[must_use]
    pub const fn max_live_calls_per_tenant(mut self, cap: usize) -> Self {
        self.max_live_calls = cap;
        self
    }

    /// Cap on ended calls kept readable per tenant (default 4 000 000). Ended calls are kept
    /// for [`EngineBuilder::ended_call_retention`]; a tenant that ends calls faster than
    /// that would otherwise hold without bound, so past the cap the longest-ended are
    /// forgotten early (a call still kept in a queue after hangup stays).
    #[must_use]
    pub const fn max_ended_calls_per_tenant(mut self, cap: usize) -> Self {
        self.max_ended_calls = cap;
        self
    }

    /// Cap on queues per tenant (default 100 000); past it queue creation answers `95004`.
    #[must_use]
    pub const fn max_queues_per_tenant(mut self, cap: usize) -> Self {
        self.max_queues = cap;
        self
    }

    /// Depth of each subscriber's channel in command batches (default 65 536); a subscriber
    /// that falls further behind loses batches, counted by [`Subscription::dropped`].
    #[must_use]
    pub const fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// The service-level threshold (default 20 s): a caller answered after waiting at most
    /// this long counts as answered in time in the queue's figures ([`crate::Outcomes`]).
    #[must_use]
    pub const fn service_level_threshold(mut self, threshold: Duration) -> Self {
        self.service_level_threshold = threshold;
        self
    }

    /// The clock (default: [`Clock::Coarse`], the system clock at about a millisecond's
    /// resolution; [`Clock::System`] reads it exactly).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Where every state change of every tenant is recorded (default: nowhere), one record
    /// per number of the tenant's sequence, so that [`Tenant::replay`] can rebuild the
    /// state after a restart (see [`crate::journal`]).
    #[must_use]
    pub fn journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Builds the engine.
    #[must_use]
    pub fn build(self) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                shared: Shared::new(Config {
                    queue_idle_ttl: self.queue_idle_ttl,
                    ended_call_retention: self.ended_call_retention,
                    max_live_calls: self.max_live_calls,
                    max_ended_calls: self.max_ended_calls,
                    max_queues: self.max_queues,
                    event_capacity: self.event_capacity,
                    service_level_threshold: self.service_level_threshold,
                }),
                clock: self.clock,
                journal: self.journal,
                bus: EventBus::default(),
                tenants: RwLock::default(),
            }),
        }
    }
}

#[derive(Debug, Default)]
struct TenantRegistry {
    by_name: hashbrown::HashMap<Arc<str>, Arc<TenantState>>,
    /// In the order they were made: maintenance visits them in this order.
    all: Vec<Arc<TenantState>>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) shared: Shared,
    pub(crate) clock: Clock,
    pub(crate) journal: Option<Arc<dyn Journal>>,
    pub(crate) bus: EventBus,
    tenants: RwLock<TenantRegistry>,
}

impl Inner {
    pub(crate) fn tenants(&self) -> Vec<Arc<TenantState>> {
        self.tenants.read().all.clone()
    }

    /// Reads the clock, once per command. Timers due by then fire under the tenant's lock
    /// before the command runs (see `rules`).
    pub(crate) fn begin(&self) -> Timestamp {
        self.clock.now()
    }
}

/// The call-queue engine: a cheap-to-clone handle, safe to share between threads.
///
/// Calls and queues belong to tenants; [`Engine::tenant`] gives the handle that runs
/// commands for one of them, and [`Engine::default_tenant`] the one for single-tenant use.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl Engine {
    /// A builder with every default.
    #[must_use]
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The handle for tenant `name` (made on first use). Keep it: making one takes a lock.
    #[must_use]
    pub fn tenant(&self, name: &str) -> Tenant {
        if let Some(state) = self.inner.tenants.read().by_name.get(name) {
            return Tenant { engine: self.clone(), state: state.clone(), replaying: None };
        }
        let mut reg = self.inner.tenants.write();
        let state = if let Some(state) = reg.by_name.get(name) {
            state.clone()
        } else {
            let state = Arc::new(TenantState::new(name.into()));
            reg.all.push(state.clone());
            reg.by_name.insert(state.name.clone(), state.clone());
            state
        };
        Tenant { engine: self.clone(), state, replaying: None }
    }

    /// The handle for the tenant named `"default"`.
    #[must_use]
    pub fn default_tenant(&self) -> Tenant {
        self.tenant(DEFAULT_TENANT)
    }

    /// A handle for every tenant made so far (by [`Engine::tenant`] or a replay), in the
    /// order they were made: what a metrics scrape reads.
    #[must_use]
    pub fn tenants(&self) -> Vec<Tenant> {
        let states = self.inner.tenants();
        states.into_iter().map(|state| Tenant { engine: self.clone(), state, replaying: None }).collect()
    }

    /// Every event of every tenant from now on: of every command that takes its tenant's
    /// lock after this returns. A command already holding it (a batch enqueue holds it for
    /// up to 256 of its calls) publishes to the subscribers it found when it took the lock,
    /// so a reader that pairs a subscription with a read of the state subscribes first and
    /// reads second, and applies the events numbered after what it read.
    #[must_use]
    pub fn subscribe(&self) -> Subscription {
        self.inner.bus.subscribe(None, self.inner.shared.config.event_capacity)
    }

    /// Every event of every tenant from now on, with a channel of `capacity` command batches
    /// (`usize::MAX`: never full, for a reader that drains promptly and must lose nothing).
    #[must_use]
    pub fn subscribe_bounded(&self, capacity: usize) -> Subscription {
        self.inner.bus.subscribe(None, capacity)
    }

    /// Every event of one tenant from now on.
    #[must_use]
    pub fn subscribe_tenant(&self, tenant: &str) -> Subscription {
        self.subscribe_tenant_bounded(tenant, self.inner.shared.config.event_capacity)
    }

    /// Every event of one tenant from now on, with a channel of `capacity` command batches
    /// (a subscriber that falls further behind loses batches, counted by
    /// [`Subscription::dropped`]).
    #[must_use]
    pub fn subscribe_tenant_bounded(&self, tenant: &str, capacity: usize) -> Subscription {
        self.inner.bus.subscribe(Some(tenant.into()), capacity)
    }

    /// The engine's clock.
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// When the earliest pending timer is due, if any: a frontend sleeps until then. A lower
    /// bound: a timer that fired because a command of its tenant found it due keeps it until
    /// the next [`Engine::run_pending_tasks`].
    #[must_use]
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        match self.inner.shared.next_due.load(Ordering::Acquire) {
            u64::MAX => None,
            t => Some(Timestamp::from_micros(t)),
        }
    }

    /// How long a maintenance loop may sleep: until the next timer is due, but at least 1 ms
    /// (no busy loop) and at most `cap` (so a timer set meanwhile is not missed). Read on the
    /// engine's own clock.
    #[must_use]
    pub fn sleep_until_next_wakeup(&self, cap: Duration) -> Duration {
        let now = self.inner.clock.now_passive().as_micros();
        let until = self.next_wakeup().map_or(u64::MAX, |t| t.as_micros().saturating_sub(now));
        Duration::from_micros(until).clamp(Duration::from_millis(1).min(cap), cap)
    }

    /// How long an empty auto queue is kept.
    #[must_use]
    pub fn queue_idle_ttl(&self) -> Duration {
        self.inner.shared.config.queue_idle_ttl
    }

    /// The service-level threshold of the queues' figures.
    #[must_use]
    pub fn service_level_threshold(&self) -> Duration {
        self.inner.shared.config.service_level_threshold
    }
}

/// Runs commands for one tenant. Cheap to clone; another tenant's calls and queues answer
/// exactly as if they did not exist.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub(crate) engine: Engine,
    pub(crate) state: Arc<TenantState>,
    /// Set on the handle [`Tenant::replay`] runs a recorded command through: its time and
    /// random values come from the record, and nothing is recorded again.
    pub(crate) replaying: Option<Arc<Replaying>>,
}

impl Tenant {
    /// The tenant's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The engine this tenant lives in.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Live (not ended) calls of this tenant.
    #[must_use]
    pub fn live_calls(&self) -> usize {
        self.state.lock().live_calls()
    }

    /// Whether a live call of this tenant sends its webhooks to a URL of its own: a
    /// frontend that starts delivering webhooks only on need asks this after a replay.
    #[must_use]
    pub fn has_live_call_with_webhook_url(&self) -> bool {
        self.state.lock().calls().any(|(_, call)| !call.is_ended() && call.ident.webhook_url.is_some())
    }

    /// The number of the tenant's last state-changing command (0: none yet).
    ///
    /// Every command that changes the tenant's state, and every timer firing that does,
    /// takes the next number of this sequence, and each event it makes carries it
    /// ([`crate::Event::seq`]): the numbers are dense and increasing per tenant, so they
    /// order the tenant's changes for a journal or a replica. A rejected command and a read
    /// take none.
    ///
    /// ```
    /// use waitline::{DialParams, Engine, EnqueueParams};
    ///
    /// let engine = Engine::default();
    /// let mut events = engine.subscribe();
    /// let t = engine.default_tenant();
    /// let call = t.dial(&DialParams::new("+1", "+2", "app"))?.call_control_id;
    /// t.enqueue(&call, &EnqueueParams::new("support"))?; // queue.created + call.enqueued
    /// assert!(t.enqueue(&call, &EnqueueParams::new("support")).is_err()); // refused: no number
    /// t.call(&call)?; // a read: no number
    /// assert_eq!(t.last_seq(), 2);
    /// let seqs: Vec<u64> = events.drain().iter().map(|e| e.seq()).collect();
    /// assert_eq!(seqs, [1, 1, 2, 2]);
    /// # Ok::<(), waitline::Error>(())
    /// ```
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.state.lock().last_seq()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_sleeps_until_the_next_timer_within_bounds() {
        let (clock, hand) = Clock::manual(Timestamp::from_secs(1_000));
        let engine = Engine::builder().clock(clock).build();
        let cap = Duration::from_millis(100);
        assert_eq!(engine.sleep_until_next_wakeup(cap), cap, "no timer: the cap");
        let t = engine.default_tenant();
        let c = t.dial(&crate::DialParams::new("1", "2", "c")).unwrap().call_control_id;
        t.enqueue(&c, &crate::EnqueueParams::new("q").max_wait_time_secs(1)).unwrap();
        hand.advance(Duration::from_millis(950));
        assert_eq!(engine.sleep_until_next_wakeup(cap), Duration::from_millis(50));
        hand.advance(Duration::from_millis(60));
        assert_eq!(engine.sleep_until_next_wakeup(cap), Duration::from_millis(1), "due: no busy loop");
    }

    #[test]
    fn only_a_live_call_with_its_own_url_counts() {
        let t = Engine::builder().build().default_tenant();
        assert!(!t.has_live_call_with_webhook_url(), "no call");
        t.dial(&crate::DialParams::new("1", "2", "c")).unwrap();
        assert!(!t.has_live_call_with_webhook_url(), "no URL of its own");
        let mut own = crate::DialParams::new("1", "2", "c");
        own.webhook_url = Some("https://receiver.invalid/hook".into());
        let c = t.dial(&own).unwrap().call_control_id;
        assert!(t.has_live_call_with_webhook_url());
        t.hangup(&c, &crate::CommandOptions::default()).unwrap();
        assert!(!t.has_live_call_with_webhook_url(), "ended");
    }
}
