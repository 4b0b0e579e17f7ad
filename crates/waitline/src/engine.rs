//! The engine handle, its builder, tenants, and the maintenance that fires timers.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::call::CallIdentity;
use crate::clock::{Clock, Timestamp};
use crate::error::{Error, Result};
use crate::event::{EventBus, Subscription};
use crate::shard::Shards;
use crate::timers::Timer;

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
/// Default number of lock shards. Many, so that threads working on unrelated calls and
/// queues rarely take the same lock (each time they do, its cache line crosses cores): with
/// 2 threads, 1024 shards gave 1.4x the pairs per second of 64 (`report --only pairs`).
pub const DEFAULT_SHARDS: usize = 1024;
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
    shards: usize,
    event_capacity: usize,
    clock: Clock,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            queue_idle_ttl: DEFAULT_QUEUE_IDLE_TTL,
            ended_call_retention: DEFAULT_ENDED_CALL_RETENTION,
            max_live_calls: DEFAULT_MAX_LIVE_CALLS,
            max_ended_calls: DEFAULT_MAX_ENDED_CALLS,
            max_queues: DEFAULT_MAX_QUEUES,
            shards: DEFAULT_SHARDS,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            clock: Clock::System,
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

    /// Number of lock shards, rounded up to a power of two (default 1024). More shards mean
    /// less contention between commands on unrelated calls and queues.
    #[must_use]
    pub const fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Depth of each subscriber's channel in command batches (default 65 536); a subscriber
    /// that falls further behind loses batches, counted by [`Subscription::dropped`].
    #[must_use]
    pub const fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// The clock (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the engine.
    #[must_use]
    pub fn build(self) -> Engine {
        let shards = self.shards.clamp(1, 1 << 16).next_power_of_two();
        Engine {
            inner: Arc::new(Inner {
                config: Config {
                    queue_idle_ttl: self.queue_idle_ttl,
                    ended_call_retention: self.ended_call_retention,
                    max_live_calls: self.max_live_calls,
                    max_ended_calls: self.max_ended_calls,
                    max_queues: self.max_queues,
                    event_capacity: self.event_capacity,
                },
                clock: self.clock,
                shards: Shards::new(shards),
                bus: EventBus::default(),
                tenants: RwLock::default(),
                next_due: AtomicU64::new(u64::MAX),
                maintenance: Mutex::new(()),
            }),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) queue_idle_ttl: Duration,
    pub(crate) ended_call_retention: Duration,
    pub(crate) max_live_calls: usize,
    pub(crate) max_ended_calls: usize,
    pub(crate) max_queues: usize,
    pub(crate) event_capacity: usize,
}

/// What the engine keeps per tenant besides its calls and queues (which live in the shards).
#[derive(Debug)]
pub(crate) struct TenantState {
    pub(crate) index: u32,
    pub(crate) name: Arc<str>,
    pub(crate) live_calls: AtomicUsize,
    /// Names of the tenant's queues, sorted: the queue list and the queue cap. Taken only
    /// while shard locks are held, never the other way round.
    pub(crate) queue_names: Mutex<BTreeSet<Arc<str>>>,
    /// Ended calls in the order they ended (some may be forgotten already): the cap on kept
    /// ended calls forgets from the front. Same lock order as `queue_names`.
    pub(crate) ended: Mutex<VecDeque<(Timestamp, Arc<CallIdentity>)>>,
}

impl TenantState {
    /// Counts one more live call, unless the cap is reached.
    pub(crate) fn reserve_call(&self, cap: usize) -> Result<()> {
        self.live_calls
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1))
            .map(|_| ())
            .map_err(|_| Error::LimitReached { what: "live calls", limit: cap })
    }

    pub(crate) fn release_call(&self) {
        self.live_calls.fetch_sub(1, Ordering::AcqRel);
    }

    /// Registers a queue name, unless the cap is reached.
    pub(crate) fn reserve_queue(&self, name: &Arc<str>, cap: usize) -> Result<()> {
        let mut names = self.queue_names.lock();
        if names.len() >= cap {
            return Err(Error::LimitReached { what: "queues", limit: cap });
        }
        names.insert(name.clone());
        Ok(())
    }

    pub(crate) fn release_queue(&self, name: &str) {
        self.queue_names.lock().remove(name);
    }
}

#[derive(Debug, Default)]
struct TenantRegistry {
    by_name: hashbrown::HashMap<Arc<str>, Arc<TenantState>>,
    by_index: Vec<Arc<TenantState>>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) clock: Clock,
    pub(crate) shards: Shards,
    pub(crate) bus: EventBus,
    tenants: RwLock<TenantRegistry>,
    /// A lower bound on the earliest pending timer of any shard (`u64::MAX`: none). Read by
    /// every command, written only when an earlier timer is set: it stays shared between
    /// cores instead of bouncing.
    pub(crate) next_due: AtomicU64,
    /// One maintenance run at a time; commands that find timers due wait for it, so that
    /// no command sees a state in which a due timer has not fired.
    maintenance: Mutex<()>,
}

impl Inner {
    pub(crate) fn tenants(&self) -> Vec<Arc<TenantState>> {
        self.tenants.read().by_index.clone()
    }

    pub(crate) fn tenant_by_index(&self, index: u32) -> Option<Arc<TenantState>> {
        self.tenants.read().by_index.get(index as usize).cloned()
    }

    /// Reads the clock once and fires whatever is due first.
    pub(crate) fn begin(&self) -> Timestamp {
        let now = self.clock.now();
        if now.as_micros() >= self.next_due.load(Ordering::Acquire) {
            self.run_due(now);
        }
        now
    }

    pub(crate) fn note_timer(&self, at: Timestamp) {
        // Read first: a store only when it lowers the bound, so the line stays shared.
        if at.as_micros() < self.next_due.load(Ordering::Acquire) {
            self.next_due.fetch_min(at.as_micros(), Ordering::AcqRel);
        }
    }

    /// Fires every timer due at `now` in exact time order (ties: deadlines in enqueue order,
    /// then idle queues, then forgetting calls), each at its own instant. A timer set while
    /// firing (an idle check set again for later) that is due too is merged in at its place.
    pub(crate) fn run_due(&self, now: Timestamp) -> usize {
        let _one_at_a_time = self.maintenance.lock();
        let mut fired = 0;
        // Sorted latest first, so the next to fire is popped from the end.
        let mut due: Vec<(Timestamp, Timer)> = Vec::new();
        loop {
            let next_set = self.next_due.load(Ordering::Acquire);
            let next_taken = due.last().map_or(u64::MAX, |(at, _)| at.as_micros());
            if next_set <= now.as_micros() && next_set <= next_taken {
                // Something due is still in the shards (first pass, or set while firing).
                self.collect_due(now, &mut due);
                continue;
            }
            let Some((at, timer)) = due.pop() else { break };
            fired += self.fire(at, timer, &mut due, next_set);
        }
        fired
    }

    /// Fires one due timer at its own instant; returns how many changed something. A
    /// deadline takes with it the deadlines of the same queue that come right after it in
    /// firing order (and before any timer set meanwhile): one transaction for the batch, the
    /// order of firing unchanged.
    fn fire(&self, at: Timestamp, timer: Timer, due: &mut Vec<(Timestamp, Timer)>, next_set: u64) -> usize {
        const BATCH: usize = 64;
        let Some(tenant) = self.tenant_by_index(timer.tenant()) else { return 0 };
        match timer {
            Timer::Deadline { queue, call, .. } => {
                let mut batch = vec![(at, call)];
                while batch.len() < BATCH {
                    match due.last() {
                        Some((at, Timer::Deadline { queue: q, .. }))
                            if *q == queue && at.as_micros() <= next_set =>
                        {
                            if let Some((at, Timer::Deadline { call, .. })) = due.pop() {
                                batch.push((at, call));
                            }
                        }
                        _ => break,
                    }
                }
                crate::rules::fire_deadlines(self, &tenant, &queue, &batch)
            }
            Timer::Idle { queue } => usize::from(crate::rules::fire_idle(self, &tenant, at, &queue)),
            Timer::Forget { call, .. } => usize::from(crate::rules::fire_forget(self, &tenant, at, &call)),
        }
    }

    /// Moves every timer due at `now` from the shards into `due`, kept sorted latest first.
    fn collect_due(&self, now: Timestamp, due: &mut Vec<(Timestamp, Timer)>) {
        // Reset first: a timer set concurrently lowers it again after this store.
        self.next_due.store(u64::MAX, Ordering::Release);
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            s.timers.take_due(now, due);
            if let Some(at) = s.timers.earliest() {
                self.note_timer(at);
            }
        }
        due.sort_by(|a, b| (b.0, b.1.tie_key()).cmp(&(a.0, a.1.tie_key())));
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
            return Tenant { engine: self.clone(), state: state.clone() };
        }
        let mut reg = self.inner.tenants.write();
        let state = if let Some(state) = reg.by_name.get(name) {
            state.clone()
        } else {
            let state = Arc::new(TenantState {
                index: u32::try_from(reg.by_index.len()).expect("fewer than 2^32 tenants"),
                name: name.into(),
                live_calls: AtomicUsize::new(0),
                queue_names: Mutex::default(),
                ended: Mutex::default(),
            });
            reg.by_index.push(state.clone());
            reg.by_name.insert(state.name.clone(), state.clone());
            state
        };
        Tenant { engine: self.clone(), state }
    }

    /// The handle for the tenant named `"default"`.
    #[must_use]
    pub fn default_tenant(&self) -> Tenant {
        self.tenant(DEFAULT_TENANT)
    }

    /// Every event of every tenant from now on.
    #[must_use]
    pub fn subscribe(&self) -> Subscription {
        self.inner.bus.subscribe(None, self.inner.config.event_capacity)
    }

    /// Every event of one tenant from now on.
    #[must_use]
    pub fn subscribe_tenant(&self, tenant: &str) -> Subscription {
        self.subscribe_tenant_bounded(tenant, self.inner.config.event_capacity)
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

    /// Fires every timer due now (max-wait expiry, idle queues, forgetting ended calls) and
    /// returns how many changed something. Commands do this on their own when they find
    /// work due; frontends also call it periodically so timers fire without traffic.
    pub fn run_pending_tasks(&self) -> usize {
        let now = self.inner.clock.now();
        self.inner.run_due(now)
    }

    /// When the earliest pending timer is due, if any: a frontend sleeps until then.
    #[must_use]
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        match self.inner.next_due.load(Ordering::Acquire) {
            u64::MAX => None,
            t => Some(Timestamp::from_micros(t)),
        }
    }

    /// Checks the engine's invariants (every queued call in exactly the queue that lists it,
    /// positions dense, sizes equal to members, bridges symmetric, counters right). Takes
    /// every lock: for tests and fuzzing, not for production paths.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        crate::invariants::check(&self.inner)
    }

    /// How long a maintenance loop may sleep: until the next timer is due, but at least 1 ms
    /// (no busy loop) and at most `cap` (so a timer set meanwhile is not missed). Read on the
    /// engine's own clock.
    #[must_use]
    pub fn sleep_until_next_wakeup(&self, cap: Duration) -> Duration {
        let now = self.inner.clock.now().as_micros();
        let until = self.next_wakeup().map_or(u64::MAX, |t| t.as_micros().saturating_sub(now));
        Duration::from_micros(until).clamp(Duration::from_millis(1).min(cap), cap)
    }

    /// How long an empty auto queue is kept.
    #[must_use]
    pub fn queue_idle_ttl(&self) -> Duration {
        self.inner.config.queue_idle_ttl
    }
}

/// Runs commands for one tenant. Cheap to clone; another tenant's calls and queues answer
/// exactly as if they did not exist.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub(crate) engine: Engine,
    pub(crate) state: Arc<TenantState>,
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
        self.state.live_calls.load(Ordering::Acquire)
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
}
