//! A tenant's state, and the transaction a command runs in.
//!
//! Every call, queue and timer of a tenant, its queue names, its ended calls, its live-call
//! count and its sequence number live in one [`TenantCore`] behind one mutex. A command
//! locks its tenant once and runs on the core through a [`Txn`]: it reads what it needs,
//! checks everything, and only then changes state, so a rejected command changes nothing.
//! Changes go through the `Txn`, which gives the command the tenant's next sequence number
//! at its first change and stamps it on every event the command makes (setting timers is
//! bookkeeping, not a change: what a timer does when it fires is numbered then).

use std::collections::{BTreeSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use uuid::Uuid;

use crate::call::{CallIdentity, CallKey, CallRecord};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::event::{CallSubject, Event, EventKind};
use crate::queue::Queue;
use crate::timers::{QueueInstance, Timer, Timers};

#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) queue_idle_ttl: Duration,
    pub(crate) ended_call_retention: Duration,
    pub(crate) max_live_calls: usize,
    pub(crate) max_ended_calls: usize,
    pub(crate) max_queues: usize,
    pub(crate) event_capacity: usize,
}

/// What every tenant's commands share: the settings, the hasher, and the engine-wide lower
/// bound on the next timer.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// Seeded per engine, so that clients cannot pick ids that collide on purpose.
    hasher: foldhash::fast::RandomState,
    /// A lower bound on the earliest pending timer of any tenant (`u64::MAX`: none), for
    /// [`crate::Engine::next_wakeup`]. Written only when an earlier timer is set, so it stays
    /// shared between cores instead of bouncing.
    pub(crate) next_due: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        Self { config, hasher: foldhash::fast::RandomState::default(), next_due: AtomicU64::new(u64::MAX) }
    }

    pub(crate) fn call_hash(&self, id: &str) -> u64 {
        self.hasher.hash_one((0u8, id))
    }

    pub(crate) fn queue_hash(&self, name: &str) -> u64 {
        self.hasher.hash_one((1u8, name))
    }

    pub(crate) fn note_timer(&self, at: u64) {
        // Read first: a store only when it lowers the bound, so the line stays shared.
        if at < self.next_due.load(Ordering::Acquire) {
            self.next_due.fetch_min(at, Ordering::AcqRel);
        }
    }
}

/// One tenant: its name and, behind one lock, all its state.
#[derive(Debug)]
pub(crate) struct TenantState {
    pub(crate) name: Arc<str>,
    core: CachePadded<Mutex<TenantCore>>,
}

impl TenantState {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self { name, core: CachePadded::new(Mutex::new(TenantCore::default())) }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, TenantCore> {
        self.core.lock()
    }
}

/// All state of one tenant. Read freely; changed only through a [`Txn`].
#[derive(Debug, Default)]
pub(crate) struct TenantCore {
    calls: HashTable<CallRecord>,
    queues: HashTable<Queue>,
    timers: Timers,
    /// Names of the queues, sorted: the queue list and the queue cap.
    queue_names: BTreeSet<Arc<str>>,
    /// Ended calls in the order they ended (some may be forgotten already): the cap on kept
    /// ended calls forgets from the front.
    ended: VecDeque<(Timestamp, Arc<CallIdentity>)>,
    live_calls: usize,
    /// The number of the last state-changing command (0: none yet).
    seq: u64,
}

impl TenantCore {
    pub(crate) fn call(&self, key: CallKey<'_>) -> Option<&CallRecord> {
        self.calls.find(key.hash, |r| *r.ident.call_control_id == *key.id)
    }

    pub(crate) fn queue(&self, hash: u64, name: &str) -> Option<&Queue> {
        self.queues.find(hash, |q| *q.name == *name)
    }

    pub(crate) fn calls(&self) -> impl Iterator<Item = &CallRecord> {
        self.calls.iter()
    }

    pub(crate) fn queues(&self) -> impl Iterator<Item = &Queue> {
        self.queues.iter()
    }

    pub(crate) const fn queue_names(&self) -> &BTreeSet<Arc<str>> {
        &self.queue_names
    }

    pub(crate) const fn live_calls(&self) -> usize {
        self.live_calls
    }

    pub(crate) const fn last_seq(&self) -> u64 {
        self.seq
    }

    /// When the tenant's earliest timer is due, in microseconds (`u64::MAX`: none).
    pub(crate) const fn next_due(&self) -> u64 {
        self.timers.next_due()
    }

    /// Moves every timer due at `now` into `out`. Taking a timer changes nothing the
    /// commands see: what it does happens when it fires, in a `Txn` of its own.
    pub(crate) fn take_due(&mut self, now: Timestamp, out: &mut Vec<(Timestamp, Timer)>) {
        self.timers.take_due(now, out);
    }

    /// Drops the timers that would do nothing when they fire.
    fn purge_stale_timers(&mut self) {
        let (calls, queues) = (&self.calls, &self.queues);
        self.timers.purge(|at, timer| match timer {
            Timer::Deadline { queue, call, .. } => queues
                .find(queue.key_hash, |q| q.id == queue.id)
                .and_then(|q| q.member_of(call))
                .is_some_and(|m| m.deadline == Some(at)),
            Timer::Idle { queue } => {
                queues.find(queue.key_hash, |q| q.id == queue.id).is_some_and(|q| q.idle_timer == Some(at))
            }
            Timer::Forget { call } => {
                calls.find(call.key_hash, |r| Arc::ptr_eq(&r.ident, call)).is_some_and(CallRecord::is_ended)
            }
        });
    }
}

/// A command (or one timer firing) in progress on a locked tenant: the time it runs at,
/// its sequence number once it changed something, the events it made.
pub(crate) struct Txn<'e> {
    pub(crate) shared: &'e Shared,
    tenant: &'e Arc<str>,
    core: &'e mut TenantCore,
    pub(crate) now: Timestamp,
    /// `None` when nobody listens: events are then not even built.
    events: Option<Vec<Event>>,
    /// Taken from the tenant's sequence at the first change.
    seq: Option<u64>,
    /// Set when the command ended a call: the tenant may now keep too many ended calls.
    pub(crate) ended_calls: bool,
}

impl<'e> Txn<'e> {
    pub(crate) fn new(
        shared: &'e Shared,
        tenant: &'e Arc<str>,
        core: &'e mut TenantCore,
        now: Timestamp,
        listening: bool,
    ) -> Self {
        Self { shared, tenant, core, now, events: listening.then(Vec::new), seq: None, ended_calls: false }
    }

    /// The command's events in publishing order (docs/behaviour.md §4: by kind, stable within a kind),
    /// `None` when nobody listens.
    pub(crate) fn finish(self) -> Option<Vec<Event>> {
        let mut events = self.events?;
        events.sort_by_key(|e| e.kind.rank());
        Some(events)
    }

    /// The state, for changing it: the first call gives the command its sequence number.
    fn change(&mut self) -> &mut TenantCore {
        if self.seq.is_none() {
            self.core.seq += 1;
            self.seq = Some(self.core.seq);
        }
        self.core
    }

    /// The state, for bookkeeping that no reader sees and that follows from the numbered
    /// changes (timers, the idle mark of a queue): it takes no sequence number.
    fn bookkeeping(&mut self) -> &mut TenantCore {
        self.core
    }

    pub(crate) const fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The state, for reading.
    pub(crate) fn core(&self) -> &TenantCore {
        self.core
    }

    /// The key of a call id.
    pub(crate) fn key<'k>(&self, id: &'k str) -> CallKey<'k> {
        CallKey { hash: self.shared.call_hash(id), id }
    }

    pub(crate) fn call(&self, key: CallKey<'_>) -> Option<&CallRecord> {
        self.core.call(key)
    }

    pub(crate) fn queue(&self, name: &str) -> Option<&Queue> {
        self.core.queue(self.shared.queue_hash(name), name)
    }

    /// A call the command has checked: it is there.
    pub(crate) fn call_mut(&mut self, ident: &CallIdentity) -> &mut CallRecord {
        self.change()
            .calls
            .find_mut(ident.key_hash, |r| std::ptr::eq(&*r.ident, ident))
            .expect("call checked before the change")
    }

    /// A queue the command has checked: it is there.
    pub(crate) fn queue_mut(&mut self, name: &str) -> &mut Queue {
        let hash = self.shared.queue_hash(name);
        self.change().queues.find_mut(hash, |q| *q.name == *name).expect("queue checked before the change")
    }

    /// Marks an idle check of a queue the command has checked as pending at `at`, unless
    /// one is pending already; returns the queue's instance for the timer when it marked it.
    /// `None` for `at` clears the mark. Bookkeeping.
    pub(crate) fn mark_idle_check(&mut self, name: &str, at: Option<Timestamp>) -> Option<QueueInstance> {
        let hash = self.shared.queue_hash(name);
        let q = self.bookkeeping().queues.find_mut(hash, |q| *q.name == *name);
        let q = q.expect("queue checked before the change");
        if at.is_some() && q.idle_timer.is_some() {
            return None;
        }
        q.idle_timer = at;
        at.map(|_| q.instance())
    }

    pub(crate) fn insert_call(&mut self, record: CallRecord) {
        let hash = record.ident.key_hash;
        self.change().calls.insert_unique(hash, record, |r| r.ident.key_hash);
    }

    pub(crate) fn remove_call(&mut self, key: CallKey<'_>) -> Option<CallRecord> {
        let entry = self.change().calls.find_entry(key.hash, |r| *r.ident.call_control_id == *key.id).ok()?;
        Some(entry.remove().0)
    }

    /// Counts one more live call, unless the cap is reached (then nothing changes).
    pub(crate) fn reserve_call(&mut self) -> Result<()> {
        let cap = self.shared.config.max_live_calls;
        if self.core.live_calls >= cap {
            return Err(Error::LimitReached { what: "live calls", limit: cap });
        }
        self.change().live_calls += 1;
        Ok(())
    }

    pub(crate) fn release_call(&mut self) {
        self.change().live_calls -= 1;
    }

    /// Adds a queue (and its name), unless the cap is reached (then nothing changes).
    pub(crate) fn insert_queue(&mut self, queue: Queue) -> Result<()> {
        let cap = self.shared.config.max_queues;
        if self.core.queue_names.len() >= cap {
            return Err(Error::LimitReached { what: "queues", limit: cap });
        }
        let core = self.change();
        core.queue_names.insert(queue.name.clone());
        core.queues.insert_unique(queue.key_hash, queue, |q| q.key_hash);
        Ok(())
    }

    pub(crate) fn remove_queue(&mut self, name: &str) -> Option<Queue> {
        let hash = self.shared.queue_hash(name);
        let core = self.change();
        let entry = core.queues.find_entry(hash, |q| *q.name == *name).ok()?;
        core.queue_names.remove(name);
        Some(entry.remove().0)
    }

    /// The tenant's ended calls in end order, for changing.
    pub(crate) fn ended_mut(&mut self) -> &mut VecDeque<(Timestamp, Arc<CallIdentity>)> {
        &mut self.change().ended
    }

    pub(crate) fn ended_len(&self) -> usize {
        self.core.ended.len()
    }

    /// Sets a timer (bookkeeping: what the timer does when it fires is what counts).
    pub(crate) fn schedule(&mut self, at: Timestamp, timer: Timer) {
        let core = self.bookkeeping();
        core.timers.schedule(at, timer);
        if core.timers.wants_purge() {
            core.purge_stale_timers();
        }
        self.shared.note_timer(at.as_micros());
    }

    /// Records an event, building it (which may read state, see [`Txn::subject`]) only if
    /// somebody listens. Making an event is a change: it carries the command's number.
    pub(crate) fn emit(&mut self, at: Timestamp, kind: impl FnOnce(&Self) -> EventKind) {
        if self.events.is_none() {
            return;
        }
        self.change();
        let seq = self.seq.unwrap_or_default();
        let event =
            Event { id: Uuid::new_v4(), occurred_at: at, tenant: self.tenant.clone(), kind: kind(self), seq };
        if let Some(events) = &mut self.events {
            events.push(event);
        }
    }

    /// The subject of an event about a call, with its current client state.
    pub(crate) fn subject(&self, ident: &Arc<CallIdentity>) -> CallSubject {
        let client_state = self.call(ident.key()).and_then(|r| r.client_state.clone());
        CallSubject { call: ident.clone(), client_state }
    }
}
