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
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use uuid::Uuid;

use crate::backoff;
use crate::batch::Batches;
use crate::bus::Listeners;
use crate::call::{CallIdentity, CallInfo, CallRecord, Link, Membership, engine_ix, stamp_slot};
use crate::clock::Timestamp;
use crate::dials::{DIAL_COMMAND_IDS, DialCommands};
use crate::error::{Error, Result};
use crate::event::{DequeueReason, Fact, tenant_event_key};
use crate::queue::{Departure, Queue, QueueCallInfo, QueueInfo};
use crate::slab::{Handle, Slab};
use crate::text;
use crate::timers::{Timer, Timers};

#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) queue_idle_ttl: Duration,
    pub(crate) ended_call_retention: Duration,
    pub(crate) max_live_calls: usize,
    pub(crate) max_ended_calls: usize,
    pub(crate) max_queues: usize,
    pub(crate) event_capacity: usize,
    pub(crate) service_level_threshold: Duration,
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
    /// `config.service_level_threshold` in microseconds (saturating), worked out once
    /// rather than at every departure.
    service_level_micros: u64,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let threshold = config.service_level_threshold;
        let service_level_micros = u64::try_from(threshold.as_micros()).unwrap_or(u64::MAX);
        Self {
            config,
            hasher: foldhash::fast::RandomState::default(),
            next_due: AtomicU64::new(u64::MAX),
            service_level_micros,
        }
    }

    pub(crate) fn call_hash(&self, id: &str) -> u64 {
        self.hash_text(id)
    }

    /// A dial's `command_id`'s hash (chosen by clients, like call ids).
    pub(crate) fn command_hash(&self, command_id: &str) -> u64 {
        self.hash_text(command_id)
    }

    #[inline]
    pub(crate) fn queue_hash(&self, name: &str) -> u64 {
        self.hash_text(name)
    }

    /// A text's hash: its bytes alone, without the 0xFF that `Hash for str` adds to keep a
    /// sequence of strings apart from their concatenation (a key here is one string), and
    /// inline (foldhash's path for up to 16 bytes is one multiply).
    #[inline]
    fn hash_text(&self, s: &str) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(s.as_bytes());
        hasher.finish()
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
    /// The tenant's part of its event ids (see `event::event_id`).
    pub(crate) event_key: u64,
    core: CachePadded<Mutex<Locked>>,
}

/// What a tenant's lock holds: its state, and apart from it the channels that take its
/// events, so that a command can write its events into a channel of the one while its
/// [`Txn`] changes the other (see `bus::Room`). Read and changed as the [`TenantCore`].
#[derive(Debug, Default)]
pub(crate) struct Locked {
    pub(crate) core: TenantCore,
    /// The subscribers' channels that take this tenant's events.
    pub(crate) listeners: Listeners,
}

impl std::ops::Deref for Locked {
    type Target = TenantCore;
    fn deref(&self) -> &TenantCore {
        &self.core
    }
}

impl std::ops::DerefMut for Locked {
    fn deref_mut(&mut self) -> &mut TenantCore {
        &mut self.core
    }
}

impl TenantState {
    pub(crate) fn new(name: Arc<str>) -> Self {
        let event_key = tenant_event_key(&name);
        Self { name, event_key, core: CachePadded::new(Mutex::new(Locked::default())) }
    }

    /// The tenant's lock; a thread that finds it held backs off before it sleeps (see
    /// `backoff`).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Locked> {
        backoff::lock(&self.core)
    }
}

/// All state of one tenant. Read freely; changed only through a [`Txn`].
///
/// Calls and queues live in slabs and are found by slot; a call's id and a queue's name
/// lead to their slot through one hash lookup each. A queued call's membership is in its
/// call record, so a command that found the call has the member.
#[derive(Debug, Default)]
pub(crate) struct TenantCore {
    pub(crate) calls: Slab<CallRecord>,
    /// Call slots by id hash.
    pub(crate) call_ids: HashTable<u32>,
    pub(crate) queues: Slab<Queue>,
    /// Queue slots by name hash.
    pub(crate) queue_ids: HashTable<u32>,
    pub(crate) timers: Timers,
    /// Names of the queues, sorted: the queue list and the queue cap.
    pub(crate) queue_names: BTreeSet<Arc<str>>,
    /// Ended calls in the order they ended (some may be forgotten already): the cap on kept
    /// ended calls forgets from the front.
    pub(crate) ended: VecDeque<(Timestamp, Handle)>,
    pub(crate) live_calls: usize,
    /// The number of the last state-changing command (0: none yet).
    pub(crate) seq: u64,
    /// The last connection id and called number of a new call: the next call with the same
    /// shares them (most calls of a tenant come through a few applications, and inbound
    /// calls to one number), so a million calls do not hold a million copies.
    pub(crate) last_connection: Option<Arc<str>>,
    pub(crate) last_to: Option<Arc<str>>,
    /// The last command's events, emptied by the publish, for the next command's events.
    pub(crate) event_list: Option<Box<Batches>>,
    /// The random values the running command drew, for its journal record: kept here and
    /// emptied when a command starts, so that a command sets nothing up for them.
    pub(crate) drawn: Vec<Uuid>,
    /// The `command_id`s of recent dials, with the calls they made.
    pub(crate) dial_commands: DialCommands,
}

/// A lookup's compare: keeps the slot and record it matched in `found`; returns `hit`.
#[inline(always)]
fn keep_hit<'r, T>(found: &mut Option<(u32, &'r T)>, ix: u32, record: &'r T, hit: bool) -> bool {
    if hit {
        *found = Some((ix, record));
    }
    hit
}

/// Makes `s` the same allocation as the string in `last` if they are equal, else remembers
/// it there.
pub(crate) fn share(last: &mut Option<Arc<str>>, s: &mut Arc<str>) {
    match last {
        Some(l) if **l == **s => *s = l.clone(),
        _ => *last = Some(s.clone()),
    }
}

impl TenantCore {
    /// A call, by id: its slot and its record. The slot an engine-made id names, if it
    /// holds a call with this id (the id's tail in its record, the slot's generation
    /// included, compared in constant time: one record read), else the map of client-given
    /// ids (see `call` for the id layout). The record comes with its slot so that a command
    /// reads it without indexing the slab again. Inlined: every command calls it, and a
    /// call costs a prologue of ~20 instructions; the map's search is out of line.
    #[inline(always)]
    pub(crate) fn call_by_id(&self, shared: &Shared, id: &str) -> Option<(u32, &CallRecord)> {
        if let Some(ix) = engine_ix(id) {
            if let Some(rec) = self.calls.get(ix).filter(|r| r.id_tail.matches(id)) {
                return Some((ix, rec));
            }
        }
        self.client_call(shared, id)
    }

    /// [`TenantCore::call_by_id`] for the ids clients gave at dial.
    #[inline(never)]
    fn client_call(&self, shared: &Shared, id: &str) -> Option<(u32, &CallRecord)> {
        if self.call_ids.is_empty() {
            return None;
        }
        let calls = &self.calls;
        let mut found = None;
        self.call_ids.find(shared.call_hash(id), |&ix| {
            let rec = calls.at(ix);
            keep_hit(&mut found, ix, rec, *rec.ident.call_control_id == *id)
        });
        found
    }

    /// The call in slot `ix`, if there is one (for checks).
    pub(crate) fn call_get(&self, ix: u32) -> Option<&CallRecord> {
        self.calls.get(ix)
    }

    /// The queue in slot `ix`, if there is one (for checks).
    pub(crate) fn queue_get(&self, ix: u32) -> Option<&Queue> {
        self.queues.get(ix)
    }

    /// The call in slot `ix`, which the caller found.
    pub(crate) fn call_at(&self, ix: u32) -> &CallRecord {
        self.calls.at(ix)
    }

    /// A queue, by name: its slot and its record (kept from the lookup's compare, so that
    /// a command reads it without indexing the slab again). A name of 4 to 16 bytes is
    /// compared as its length and two words (see `Queue::name_words`), others byte by byte.
    /// Inlined: left out of line by the compiler, it cost ~11 instructions a command more.
    #[inline(always)]
    pub(crate) fn queue_by_name(&self, hash: u64, name: &str) -> Option<(u32, &Queue)> {
        let queues = &self.queues;
        let mut found = None;
        match text::words(name.as_bytes()) {
            Some(words) => self.queue_ids.find(hash, |&ix| {
                let q = queues.at(ix);
                keep_hit(&mut found, ix, q, q.name_words == words && q.name.len() == name.len())
            }),
            None => self.queue_ids.find(hash, |&ix| {
                let q = queues.at(ix);
                keep_hit(&mut found, ix, q, *q.name == *name)
            }),
        };
        found
    }

    pub(crate) fn calls(&self) -> impl Iterator<Item = (u32, &CallRecord)> {
        self.calls.iter()
    }

    pub(crate) fn queues(&self) -> impl Iterator<Item = (u32, &Queue)> {
        self.queues.iter()
    }

    pub(crate) const fn queue_names(&self) -> &BTreeSet<Arc<str>> {
        &self.queue_names
    }

    /// Calls kept, ended ones included.
    pub(crate) const fn call_count(&self) -> usize {
        self.calls.len()
    }

    pub(crate) const fn live_calls(&self) -> usize {
        self.live_calls
    }

    pub(crate) const fn last_seq(&self) -> u64 {
        self.seq
    }

    /// The status of the call in slot `ix`.
    pub(crate) fn call_info(&self, ix: u32, now: Timestamp) -> CallInfo {
        let rec = self.calls.at(ix);
        let queue = rec.queue().map(|q| &*self.queues.at(q).name);
        let bridged = rec.bridged_with().map(|b| &*self.calls.at(b).ident.call_control_id);
        rec.snapshot(now, queue, bridged)
    }

    /// The state and figures of the queue in slot `ix`.
    pub(crate) fn queue_info(&self, ix: u32, now: Timestamp, service_level: Duration) -> QueueInfo {
        self.queues.at(ix).snapshot(&self.calls, now, service_level)
    }

    /// The membership of the call in slot `call` of the queue in slot `queue`, if it is one.
    pub(crate) fn member(&self, queue: u32, call: u32) -> Option<&Membership> {
        self.calls.at(call).membership().filter(|m| m.queue == queue)
    }

    /// The snapshot of a member of a queue at `position`.
    pub(crate) fn queue_call_info(
        &self,
        queue: u32,
        position: usize,
        call: u32,
        now: Timestamp,
    ) -> QueueCallInfo {
        let rec = self.calls.at(call);
        let m = rec.membership().expect("a member");
        self.queues.at(queue).call_snapshot(position, rec, m, now)
    }

    /// Makes room in a queue for `additional` more members, as far as its `max_size` allows
    /// (bookkeeping: it may renumber the members' slots in the order, which no reader sees).
    pub(crate) fn reserve_members(&mut self, queue: u32, additional: usize) {
        let q = self.queues.at_mut(queue);
        let room = q.max_size.saturating_sub(q.len());
        q.reserve(&mut self.calls, additional.min(room));
    }

    /// Ends a run of joins: its calls become the last members of their band and are
    /// counted, as that many single joins would have left the queue. Part of the changes
    /// of the run's commands, each numbered when it joined.
    pub(crate) fn admit_run(&mut self, run: JoinRun, now: Timestamp) {
        self.queues.at_mut(run.queue).admit_run(run.band, run.first, run.count, run.enqueued_at, now);
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

    /// The order of timers due at the same instant: deadlines (by queue name, then in
    /// enqueue order), then idle queues (by name), then forgetting calls (by id). A stale
    /// timer (its call or queue gone) does nothing when it fires, so where it sorts does
    /// not matter.
    pub(crate) fn timer_order(&self, timer: &Timer) -> (u8, &str, u64) {
        let queue_name = |h: Handle| self.queues.get_handle(h).map_or("", |q| &*q.name);
        match *timer {
            Timer::Deadline { queue, arrival, .. } => (0, queue_name(queue), arrival),
            Timer::Idle { queue } => (1, queue_name(queue), 0),
            Timer::Forget { call } => {
                (2, self.calls.get_handle(call).map_or("", |r| &*r.ident.call_control_id), 0)
            }
        }
    }

    /// Whether a deadline timer set for `call` in `queue` finds it still a member with
    /// deadline `at`.
    pub(crate) fn deadline_holds(&self, queue: Handle, call: Handle, serial: u64, at: Timestamp) -> bool {
        self.calls.get_handle(call).and_then(CallRecord::membership).is_some_and(|m| {
            m.queue == queue.ix
                && m.serial == serial as u32
                && m.deadline() == Some(at)
                && self.queues.handle(m.queue) == queue
        })
    }

    /// The queue an idle timer was set for, if it is still there with that timer pending.
    pub(crate) fn idle_timer_holds(&self, queue: Handle, at: Timestamp) -> bool {
        self.queues.get_handle(queue).is_some_and(|q| q.idle_timer == Some(at))
    }

    /// The call a timer was set for, if it is still there.
    pub(crate) fn call_of(&self, call: Handle) -> Option<&CallRecord> {
        self.calls.get_handle(call)
    }

    /// Whether a timer due at `at` would do something when it fires (else it is stale).
    /// Inline (always: LLVM kept it out of the purge's loop): a purge asks it of every
    /// pending timer.
    #[inline(always)]
    pub(crate) fn timer_holds(&self, at: Timestamp, timer: &Timer) -> bool {
        match *timer {
            Timer::Deadline { queue, call, arrival } => self.deadline_holds(queue, call, arrival, at),
            Timer::Idle { queue } => self.idle_timer_holds(queue, at),
            Timer::Forget { call } => self.call_of(call).is_some_and(|r| r.is_ended() && r.queue().is_none()),
        }
    }

    /// A timer taken from the tenant's timers is about to fire: counts it if it is stale.
    pub(crate) fn note_firing(&mut self, at: Timestamp, timer: &Timer) {
        if !self.timer_holds(at, timer) {
            self.timers.note_stale_fired();
        }
    }

    /// Drops the timers that would do nothing when they fire.
    #[cold]
    #[inline(never)]
    fn purge_stale_timers(&mut self) {
        let mut timers = std::mem::take(&mut self.timers);
        timers.purge(|at, timer| self.timer_holds(at, timer));
        self.timers = timers;
    }

    /// Room for commands' events: the one kept, or a new one.
    pub(crate) fn take_event_list(&mut self) -> Box<Batches> {
        self.event_list.take().unwrap_or_default()
    }

    /// Keeps emptied room for the next command.
    pub(crate) fn keep_event_list(&mut self, list: Box<Batches>) {
        self.event_list = Some(list);
    }

    /// Pending timers, stale ones included.
    #[cfg(test)]
    pub(crate) const fn timer_count(&self) -> usize {
        self.timers.len()
    }
}

/// A member's departure ([`Txn::leave_queue`]), and what it leaves to do.
pub(crate) struct Left {
    /// The queue's slot.
    pub(crate) queue: u32,
    pub(crate) departure: Departure,
    /// The call had ended: a dead member kept after its hangup.
    pub(crate) ended: bool,
    /// The queue wants an idle check ([`Queue::wants_idle_check`]).
    pub(crate) idle_check: bool,
}

/// Calls joining one band of one queue one after the other in a batch
/// ([`crate::Tenant::enqueue_many`]), each by its own command: each gets its slot in the
/// queue's order and its membership as it joins ([`Txn::join_run`]), and the order's marks,
/// the queue's counts and its figures are brought up to date for all of them at once
/// ([`TenantCore::admit_run`]), before anything else reads or changes the queue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JoinRun {
    pub(crate) queue: u32,
    band: u8,
    /// The first call's slot in the order; the others follow it.
    first: u32,
    count: u32,
    /// Every call of the run joins at one instant (the batch reads the clock once per
    /// hold of the lock), so at one enqueue time.
    enqueued_at: Timestamp,
}

impl JoinRun {
    /// Calls joined, not yet admitted.
    pub(crate) const fn len(&self) -> usize {
        self.count as usize
    }
}

/// A command (or one timer firing) in progress on a locked tenant: the time it runs at,
/// its sequence number once it changed something, the events it made.
pub(crate) struct Txn<'e> {
    pub(crate) shared: &'e Shared,
    core: &'e mut TenantCore,
    pub(crate) now: Timestamp,
    /// `None` when nobody listens: events are then not even built. Else where they go: the
    /// tenant's one listening channel lent to the command, or the room the tenant kept from
    /// its last command ([`TenantCore::take_event_list`]) after the events of earlier
    /// commands of the same publish.
    events: Option<&'e mut Batches>,
    /// Taken from the tenant's sequence at the first change.
    seq: Option<u64>,
    /// Set when the command ended a call: the tenant may now keep too many ended calls.
    pub(crate) ended_calls: bool,
    /// The random values of a replayed command, as its record gives them (`None`: drawn,
    /// and kept in `TenantCore::drawn` for its record). Lent by the command: one word to set
    /// up and nothing to drop in every `Txn`.
    replay: Option<&'e mut std::vec::IntoIter<Uuid>>,
}

impl<'e> Txn<'e> {
    #[inline(always)]
    pub(crate) fn new(
        shared: &'e Shared,
        core: &'e mut TenantCore,
        now: Timestamp,
        events: Option<&'e mut Batches>,
        replay: Option<&'e mut std::vec::IntoIter<Uuid>>,
    ) -> Self {
        core.drawn.clear();
        Self { shared, core, now, events, seq: None, ended_calls: false, replay }
    }

    /// A random value for the command (replayed from its record when it is replayed).
    pub(crate) fn draw_uuid(&mut self) -> Uuid {
        match &mut self.replay {
            // A record with fewer draws than the replay asks for has diverged: the nil
            // UUID shows in the state, and `Tenant::replay` reports the leftover check.
            Some(recorded) => recorded.next().unwrap_or_default(),
            None => {
                let u = Uuid::new_v4();
                self.core.drawn.push(u);
                u
            }
        }
    }

    /// The number the command took, if it changed anything, and the values it drew.
    pub(crate) fn outcome(&mut self) -> Option<(u64, Vec<Uuid>)> {
        let drawn = std::mem::take(&mut self.core.drawn);
        self.seq.map(|seq| (seq, drawn))
    }

    /// Closes the command's events, if any, in the room given to [`Txn::new`] as a batch of
    /// its number and instant (see [`Batches::close`]).
    #[inline(always)]
    pub(crate) fn finish(&mut self) {
        if let (Some(events), Some(seq)) = (self.events.take(), self.seq) {
            events.close(seq, self.now);
        }
    }

    /// The command's number if it changed anything, its events left open: for a command
    /// whose events are published at once (the publish, or the lent channel's commit, writes
    /// their batch's header, see [`Batches::append`] and [`crate::bus::Lent::commit`]).
    #[inline(always)]
    pub(crate) const fn finish_open(&self) -> Option<u64> {
        self.seq
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

    /// A call, by id: its slot and its record. Left to the compiler, which keeps it out of
    /// line: forced inline, it made the commands' `Txn::target` too big to inline, and the
    /// pair took ~75 instructions more (two out-of-line calls returning through memory).
    pub(crate) fn call_by_id(&self, id: &str) -> Option<(u32, &CallRecord)> {
        self.core.call_by_id(self.shared, id)
    }

    /// The slot of a call, by id.
    pub(crate) fn find_call(&self, id: &str) -> Option<u32> {
        self.call_by_id(id).map(|(ix, _)| ix)
    }

    /// Completes an id the engine made (see `call`) with the slot the call will have: the
    /// next one [`Txn::insert_call`] fills.
    pub(crate) fn stamp_new_id(&self, ident: &mut Arc<CallIdentity>) {
        let ident = Arc::get_mut(ident).expect("a new identity is not shared yet");
        stamp_slot(&mut ident.call_control_id, self.core.calls.next_handle());
    }

    /// A queue, by name (hashed here, once per command): its slot and its record. Inlined,
    /// as `call_by_id`.
    #[inline(always)]
    pub(crate) fn queue_by_name(&self, name: &str) -> Option<(u32, &Queue)> {
        self.core.queue_by_name(self.shared.queue_hash(name), name)
    }

    /// The queue in slot `known` (a batch's queue, found by its first call), else the one
    /// named `name`.
    #[inline(always)]
    pub(crate) fn queue_at_or_named(&self, known: Option<u32>, name: &str) -> Option<(u32, &Queue)> {
        match known {
            Some(q) => Some((q, self.queue_at(q))),
            None => self.queue_by_name(name),
        }
    }

    /// The slot of a queue, by name.
    #[inline(always)]
    pub(crate) fn find_queue(&self, name: &str) -> Option<u32> {
        self.queue_by_name(name).map(|(ix, _)| ix)
    }

    pub(crate) fn call_at(&self, ix: u32) -> &CallRecord {
        self.core.calls.at(ix)
    }

    pub(crate) fn queue_at(&self, ix: u32) -> &Queue {
        self.core.queues.at(ix)
    }

    /// A call the command has found, for changing.
    pub(crate) fn call_mut(&mut self, ix: u32) -> &mut CallRecord {
        self.change().calls.at_mut(ix)
    }

    /// A queue the command has found, for changing.
    pub(crate) fn queue_mut(&mut self, ix: u32) -> &mut Queue {
        self.change().queues.at_mut(ix)
    }

    /// Puts the call in slot `call` (in no queue) at the end of band `priority` of the queue
    /// in slot `queue`; returns its membership. Inlined: the enqueue, its one caller, is
    /// compiled once per parameter type, and out of line its call cost ~10 instructions.
    #[inline]
    pub(crate) fn join_queue(
        &mut self,
        queue: u32,
        call: u32,
        priority: u8,
        keep_after_hangup: bool,
        max_wait: Option<Duration>,
    ) -> Membership {
        let now = self.now;
        let core = self.change();
        let q = core.queues.at_mut(queue);
        let enqueued_at = q.arrival_time(now);
        let deadline = max_wait.map(|d| enqueued_at.saturating_add(d));
        let arrival = q.push(&mut core.calls, call, priority, enqueued_at, now);
        let serial = q.total_enqueued() as u32; // low bits: see `Membership::serial`
        let m = Membership::new(queue, arrival, priority, keep_after_hangup, serial, enqueued_at, deadline);
        core.calls.at_mut(call).link = Link::Queued(m);
        m
    }

    /// As [`Txn::join_queue`], for a call joining `run` (started here for the queue in
    /// slot `queue`, making room in its order for `room` calls, as far as its `max_size`
    /// allows: the run's calls must fit in it); returns its membership and its arrival
    /// number (see `Membership::serial`). The queue is left as before the run but for its
    /// order's slots until [`TenantCore::admit_run`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn join_run(
        &mut self,
        run: &mut Option<JoinRun>,
        queue: u32,
        call: u32,
        priority: u8,
        keep_after_hangup: bool,
        max_wait: Option<Duration>,
        room: usize,
    ) -> (Membership, u64) {
        let now = self.now;
        let core = self.change();
        let run = match run {
            Some(run) => run,
            None => {
                core.reserve_members(queue, room);
                let enqueued_at = core.queues.at(queue).arrival_time(now);
                run.insert(JoinRun { queue, band: priority, first: 0, count: 0, enqueued_at })
            }
        };
        debug_assert!(run.queue == queue && run.band == priority, "one run joins one band of one queue");
        let q = core.queues.at_mut(queue);
        let arrival = q.append(call);
        if run.count == 0 {
            run.first = arrival;
        }
        run.count += 1;
        let serial = q.total_enqueued() + u64::from(run.count);
        let deadline = max_wait.map(|d| run.enqueued_at.saturating_add(d));
        // Low bits of the arrival number: see `Membership::serial`.
        let m = Membership::new(
            queue,
            arrival,
            priority,
            keep_after_hangup,
            serial as u32,
            run.enqueued_at,
            deadline,
        );
        core.calls.at_mut(call).link = Link::Queued(m);
        (m, serial)
    }

    /// Takes the call in slot `call` out of its queue (`reason` counted, if any); returns
    /// what the departure reports (its position only when someone listens for the event)
    /// and leaves to do, read here while the call and the queue are at hand.
    pub(crate) fn leave_queue(&mut self, call: u32, reason: Option<DequeueReason>) -> Left {
        let now = self.now;
        let with_position = reason.is_some() && self.events.is_some();
        let threshold_micros = self.shared.service_level_micros;
        let core = self.change();
        let rec = core.calls.at_mut(call);
        let ended = rec.is_ended();
        let Link::Queued(m) = std::mem::replace(&mut rec.link, Link::None) else {
            unreachable!("member checked before the change")
        };
        let q = core.queues.at_mut(m.queue);
        let departure = q.remove(&mut core.calls, &m, reason, now, with_position, threshold_micros);
        let idle_check = q.wants_idle_check();
        if m.deadline().is_some() && reason != Some(DequeueReason::Timeout) {
            // Only its own deadline takes a member out with reason `timeout`: any other
            // departure leaves that timer stale.
            core.timers.note_stale();
        }
        Left { queue: m.queue, departure, ended, idle_check }
    }

    /// Marks an idle check of a queue the command has found as pending at `at`, unless
    /// one is pending already; returns the queue's handle for the timer when it marked it.
    /// `None` for `at` clears the mark. Bookkeeping.
    pub(crate) fn mark_idle_check(&mut self, queue: u32, at: Option<Timestamp>) -> Option<Handle> {
        let core = self.bookkeeping();
        let q = core.queues.at_mut(queue);
        if at.is_some() && q.idle_timer.is_some() {
            return None;
        }
        q.idle_timer = at;
        at.map(|_| core.queues.handle(queue))
    }

    /// Adds a call; returns its slot.
    pub(crate) fn insert_call(&mut self, mut record: CallRecord) -> u32 {
        let hash = record.ident.id_hash();
        let core = self.change();
        if let Some(ident) = record.ident.get_mut() {
            share(&mut core.last_connection, &mut ident.connection_id);
            share(&mut core.last_to, &mut ident.to);
        }
        let ix = core.calls.insert(record).ix;
        if let Some(hash) = hash {
            let calls = &core.calls;
            core.call_ids.insert_unique(hash, ix, |&i| calls.at(i).ident.id_hash().unwrap_or_default());
        }
        ix
    }

    /// Forgets the ended call in slot `ix` before its forget timer fires (that timer goes
    /// stale).
    pub(crate) fn forget_early(&mut self, ix: u32) {
        self.remove_call(ix);
        self.core.timers.note_stale();
    }

    /// Forgets the call in slot `ix`.
    pub(crate) fn remove_call(&mut self, ix: u32) -> CallRecord {
        let core = self.change();
        if let Some(hash) = core.calls.at(ix).ident.id_hash() {
            if let Ok(entry) = core.call_ids.find_entry(hash, |&i| i == ix) {
                entry.remove();
            }
        }
        core.calls.remove(ix)
    }

    /// Counts one more live call, unless the cap is reached (then nothing changes).
    /// The call a dial with `command_id` made within the last 60 s, if one did: its slot, or
    /// `None` when that call is forgotten since.
    pub(crate) fn dialled_by(&self, command_id: &str) -> Option<Option<u32>> {
        let hash = self.shared.command_hash(command_id);
        let call = self.core.dial_commands.find(hash, command_id, self.now)?;
        Some(self.core.calls.get_handle(call).map(|_| call.ix))
    }

    /// Remembers that a dial with `command_id` made the call in slot `call`.
    pub(crate) fn remember_dial(&mut self, command_id: &str, call: u32) {
        let (shared, now) = (self.shared, self.now);
        let core = self.change();
        let handle = core.calls.handle(call);
        core.dial_commands.remember(|id| shared.command_hash(id), command_id, handle, now, DIAL_COMMAND_IDS);
    }

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

    /// Adds a queue (and its name), unless the cap is reached (then nothing changes);
    /// returns its slot.
    pub(crate) fn insert_queue(&mut self, queue: Queue) -> Result<u32> {
        let cap = self.shared.config.max_queues;
        if self.core.queue_names.len() >= cap {
            return Err(Error::LimitReached { what: "queues", limit: cap });
        }
        let core = self.change();
        core.queue_names.insert(queue.name.clone());
        let hash = queue.key_hash;
        let ix = core.queues.insert(queue).ix;
        let queues = &core.queues;
        core.queue_ids.insert_unique(hash, ix, |&i| queues.at(i).key_hash);
        Ok(ix)
    }

    /// Removes the queue in slot `ix` (and its name).
    pub(crate) fn remove_queue(&mut self, ix: u32) -> Queue {
        let core = self.change();
        let hash = core.queues.at(ix).key_hash;
        if let Ok(entry) = core.queue_ids.find_entry(hash, |&i| i == ix) {
            entry.remove();
        }
        let q = core.queues.remove(ix);
        core.queue_names.remove(&q.name);
        if q.idle_timer.is_some() {
            core.timers.note_stale(); // its idle check fires on a queue that is gone
        }
        q
    }

    /// The handle of the call in slot `ix`, for timers and the ended list.
    pub(crate) fn call_handle(&self, ix: u32) -> Handle {
        self.core.calls.handle(ix)
    }

    /// The handle of the queue in slot `ix`, for timers.
    pub(crate) fn queue_handle(&self, ix: u32) -> Handle {
        self.core.queues.handle(ix)
    }

    /// The tenant's ended calls in end order, for changing.
    pub(crate) fn ended_mut(&mut self) -> &mut VecDeque<(Timestamp, Handle)> {
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

    /// Records an event about the call in slot `call` (if any), happening now (every event
    /// of a command happens at its instant), that reads state to say what it says: `fact`
    /// runs only if somebody listens.
    pub(crate) fn emit_with(
        &mut self,
        call: Option<u32>,
        fact: impl for<'c> FnOnce(&'c TenantCore) -> Fact<&'c str>,
    ) {
        if let Some((events, core)) = self.event_room() {
            push_event(events, core, call, fact(core));
        }
    }

    /// Records an event that says `fact` about the call in slot `call` (if any), happening
    /// now, if somebody listens. Inlined: while nobody listens it is one test, and it was
    /// left a call where a command emits twice (the bridge).
    #[inline]
    pub(crate) fn emit(&mut self, call: Option<u32>, fact: Fact<&str>) {
        if let Some((events, core)) = self.event_room() {
            push_event(events, core, call, fact);
        }
    }

    /// Where an event goes, and the state to read it from; `None` when nobody listens.
    /// Making an event is a change: it carries the command's number.
    fn event_room(&mut self) -> Option<(&mut Batches, &TenantCore)> {
        self.events.as_ref()?;
        self.change();
        let Self { core, events, .. } = self;
        Some((&mut **events.as_mut()?, &**core))
    }
}

/// Adds an event about the call in slot `call` of `core` (its identity and current client
/// state), if any, to the open command of `events`.
fn push_event(events: &mut Batches, core: &TenantCore, call: Option<u32>, fact: Fact<&str>) {
    let rec = call.map(|ix| core.calls.at(ix));
    events.push(rec.map(|r| &r.ident), rec.and_then(|r| r.client_state.as_deref()), fact);
}
