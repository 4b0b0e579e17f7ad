//! Sharded state and the transaction that locks the shards a command needs.
//!
//! Calls and queues are spread over shards by hash; each shard is one mutex. A command
//! locks the shards of everything it reads or changes (the call, its queue, the other leg
//! of its bridge, ...) in ascending shard order, so no two commands can wait on each other
//! in a cycle. It learns what it needs by reading; see [`Txn::need`] for how it takes a
//! shard it did not know it needed, and when it has to release everything and start again
//! with that shard added (the set only grows, so this ends). Commands validate everything before they change anything, which
//! makes the retry safe and gives "a rejected command changes nothing".

use std::hash::BuildHasher;
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use smallvec::SmallVec;
use uuid::Uuid;

use crate::call::{CallIdentity, CallKey, CallRecord};
use crate::clock::Timestamp;
use crate::engine::{Inner, TenantState};
use crate::event::{CallSubject, Event, EventKind};
use crate::queue::Queue;
use crate::timers::{Timer, Timers};

/// Calls and queues of a shard, in tables keyed by hashes computed once per key
/// ([`Shards::call_key`], [`Shards::queue_hash`]).
#[derive(Debug, Default)]
pub(crate) struct Shard {
    pub(crate) calls: HashTable<CallRecord>,
    pub(crate) queues: HashTable<Queue>,
    pub(crate) timers: Timers,
}

impl Shard {
    pub(crate) fn call(&self, tenant: u32, key: CallKey<'_>) -> Option<&CallRecord> {
        self.calls.find(key.hash, |r| r.tenant == tenant && *r.ident.call_control_id == *key.id)
    }

    /// Found by identity: the record holds the very `Arc` every other reference shares.
    fn call_mut(&mut self, ident: &CallIdentity) -> Option<&mut CallRecord> {
        self.calls.find_mut(ident.key_hash, |r| std::ptr::eq(&*r.ident, ident))
    }

    pub(crate) fn queue(&self, tenant: u32, hash: u64, name: &str) -> Option<&Queue> {
        self.queues.find(hash, |q| q.tenant == tenant && *q.name == *name)
    }

    fn queue_mut(&mut self, tenant: u32, hash: u64, name: &str) -> Option<&mut Queue> {
        self.queues.find_mut(hash, |q| q.tenant == tenant && *q.name == *name)
    }

    /// Drops the timers that would do nothing when they fire. Every timer checks state of
    /// its own shard, so this needs no other lock.
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
            Timer::Forget { tenant, call } => calls
                .find(call.key_hash, |r| r.tenant == *tenant && Arc::ptr_eq(&r.ident, call))
                .is_some_and(CallRecord::is_ended),
        });
    }
}

#[derive(Debug)]
pub(crate) struct Shards {
    pub(crate) shards: Box<[CachePadded<Mutex<Shard>>]>,
    mask: usize,
    /// Seeded per engine, so that clients cannot pick ids that collide on purpose.
    hasher: foldhash::fast::RandomState,
}

impl Shards {
    pub(crate) fn new(n: usize) -> Self {
        debug_assert!(n.is_power_of_two());
        Self {
            shards: (0..n).map(|_| CachePadded::new(Mutex::new(Shard::default()))).collect(),
            mask: n - 1,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Mutex<Shard>> {
        self.shards.iter().map(|s| &**s)
    }

    pub(crate) fn call_hash(&self, tenant: u32, id: &str) -> u64 {
        self.hasher.hash_one((0u8, tenant, id))
    }

    pub(crate) fn queue_hash(&self, tenant: u32, name: &str) -> u64 {
        self.hasher.hash_one((1u8, tenant, name))
    }

    /// The shard of a key hash. Bits 32.. so that the shard does not correlate with the bits
    /// the tables use (low bits for the bucket, top 7 for the tag).
    pub(crate) const fn of_hash(&self, hash: u64) -> usize {
        (hash >> 32) as usize & self.mask
    }
}

/// "Lock shard N too, then start again."
#[derive(Debug)]
pub(crate) struct NeedLock(usize);

/// The result of a step of a command's body.
pub(crate) type Step<T> = Result<T, NeedLock>;

/// A command in progress: the shards it holds, the time it runs at, the events it made.
pub(crate) struct Txn<'e> {
    pub(crate) inner: &'e Inner,
    pub(crate) tenant: &'e TenantState,
    pub(crate) now: Timestamp,
    locked: SmallVec<[(usize, MutexGuard<'e, Shard>); 4]>,
    /// `None` when nobody listens: events are then not even built.
    events: Option<Vec<Event>>,
    /// Set by the first change; a lock request after it would be a bug.
    changed: bool,
    /// Set when the command ended a call: the tenant may now keep too many ended calls.
    pub(crate) ended_calls: bool,
}

impl<'e> Txn<'e> {
    /// Runs `body` with every shard it needs locked; see the module comment.
    pub(crate) fn run<R>(
        inner: &'e Inner,
        tenant: &'e TenantState,
        now: Timestamp,
        first: &[usize],
        mut body: impl FnMut(&mut Txn<'e>) -> Step<R>,
    ) -> R {
        let mut want: SmallVec<[usize; 6]> = SmallVec::from_slice(first);
        loop {
            want.sort_unstable();
            want.dedup();
            let mut locked = SmallVec::new();
            for &i in &want {
                locked.push((i, inner.shards.shards[i].lock()));
            }
            let events = inner.bus.has_subscribers().then(Vec::new);
            let mut txn = Txn { inner, tenant, now, locked, events, changed: false, ended_calls: false };
            match body(&mut txn) {
                Ok(r) => {
                    let ended_calls = txn.ended_calls;
                    txn.commit();
                    if ended_calls {
                        // With every lock released: forgetting takes the calls' own shards.
                        crate::rules::forget_excess_ended(inner, tenant, now);
                    }
                    return r;
                }
                Err(NeedLock(i)) => {
                    assert!(!txn.changed, "a command asked for a lock after changing state");
                    want.push(i);
                }
            }
        }
    }

    fn commit(mut self) {
        if let Some(mut events) = self.events.take() {
            // docs/behaviour.md §4: within a command, events go by kind (stable within a kind).
            events.sort_by_key(|e| e.kind.rank());
            self.inner.bus.publish(&self.tenant.name, events);
        }
        // Guards drop here, after publishing: see `event` for why.
    }

    /// `locked` is kept sorted by shard: a command holds a handful (a scan is quickest), a
    /// batch of timers may hold every shard (a binary search then).
    fn index_of(&self, shard: usize) -> Step<usize> {
        let locked = self.locked.as_slice();
        if locked.len() <= 8 {
            return locked.iter().position(|(i, _)| *i == shard).ok_or(NeedLock(shard));
        }
        locked.binary_search_by_key(&shard, |(i, _)| *i).map_err(|_| NeedLock(shard))
    }

    fn shard(&self, shard: usize) -> Step<&Shard> {
        let pos = self.index_of(shard)?;
        Ok(&self.locked[pos].1)
    }

    fn shard_mut(&mut self, shard: usize) -> Step<&mut Shard> {
        let pos = self.index_of(shard)?;
        self.changed = true;
        Ok(&mut self.locked[pos].1)
    }

    /// Locks one more shard if that is safe without starting again: waiting is safe for a
    /// shard above every shard held (the order stays ascending), and taking a lower one is
    /// safe when it is free right now (no waiting, so no cycle). Otherwise the command starts
    /// again with the shard in its set. Either way no two commands wait on each other in a
    /// cycle: a command only ever waits for a shard above all it holds.
    pub(crate) fn need(&mut self, shard: usize) -> Step<()> {
        if self.index_of(shard).is_ok() {
            return Ok(());
        }
        let mutex = &self.inner.shards.shards[shard];
        let highest = self.locked.last().map(|(i, _)| *i);
        let guard = if highest.is_none_or(|h| shard > h) { Some(mutex.lock()) } else { mutex.try_lock() };
        let guard = guard.ok_or(NeedLock(shard))?;
        debug_assert!(!self.changed, "a command asked for a lock after changing state");
        let at = self.locked.partition_point(|(i, _)| *i < shard);
        self.locked.insert(at, (shard, guard));
        Ok(())
    }

    /// The key of a call id of this command's tenant.
    pub(crate) fn key<'k>(&self, id: &'k str) -> CallKey<'k> {
        CallKey { hash: self.inner.shards.call_hash(self.tenant.index, id), id }
    }

    pub(crate) fn call_shard(&self, key: CallKey<'_>) -> usize {
        self.inner.shards.of_hash(key.hash)
    }

    pub(crate) fn queue_hash(&self, name: &str) -> u64 {
        self.inner.shards.queue_hash(self.tenant.index, name)
    }

    pub(crate) fn queue_shard(&self, name: &str) -> usize {
        self.inner.shards.of_hash(self.queue_hash(name))
    }

    /// Locks the shard of a call.
    pub(crate) fn need_call(&mut self, key: CallKey<'_>) -> Step<()> {
        self.need(self.call_shard(key))
    }

    /// Locks the shard of a queue.
    pub(crate) fn need_queue(&mut self, name: &str) -> Step<()> {
        self.need(self.queue_shard(name))
    }

    pub(crate) fn call(&self, key: CallKey<'_>) -> Step<Option<&CallRecord>> {
        Ok(self.shard(self.call_shard(key))?.call(self.tenant.index, key))
    }

    pub(crate) fn queue(&self, name: &str) -> Step<Option<&Queue>> {
        let hash = self.queue_hash(name);
        Ok(self.shard(self.inner.shards.of_hash(hash))?.queue(self.tenant.index, hash, name))
    }

    /// A call this command has already found (and so locked).
    pub(crate) fn call_mut(&mut self, ident: &CallIdentity) -> &mut CallRecord {
        let shard = self.inner.shards.of_hash(ident.key_hash);
        self.shard_mut(shard).ok().and_then(|s| s.call_mut(ident)).expect("call checked before the change")
    }

    /// A queue this command has already found (and so locked).
    pub(crate) fn queue_mut(&mut self, name: &str) -> &mut Queue {
        let (tenant, hash) = (self.tenant.index, self.queue_hash(name));
        let shard = self.inner.shards.of_hash(hash);
        self.shard_mut(shard)
            .ok()
            .and_then(|s| s.queue_mut(tenant, hash, name))
            .expect("queue checked before the change")
    }

    pub(crate) fn insert_call(&mut self, record: CallRecord) {
        let hash = record.ident.key_hash;
        let shard = self.inner.shards.of_hash(hash);
        let s = self.shard_mut(shard).expect("shard checked before the change");
        s.calls.insert_unique(hash, record, |r| r.ident.key_hash);
    }

    pub(crate) fn remove_call(&mut self, key: CallKey<'_>) -> Option<CallRecord> {
        let (tenant, shard) = (self.tenant.index, self.call_shard(key));
        let s = self.shard_mut(shard).ok()?;
        let entry = s
            .calls
            .find_entry(key.hash, |r| r.tenant == tenant && *r.ident.call_control_id == *key.id)
            .ok()?;
        Some(entry.remove().0)
    }

    pub(crate) fn insert_queue(&mut self, queue: Queue) {
        let hash = queue.key_hash;
        let shard = self.inner.shards.of_hash(hash);
        let s = self.shard_mut(shard).expect("shard checked before the change");
        s.queues.insert_unique(hash, queue, |q| q.key_hash);
    }

    pub(crate) fn remove_queue(&mut self, name: &str) -> Option<Queue> {
        let (tenant, hash) = (self.tenant.index, self.queue_hash(name));
        let s = self.shard_mut(self.inner.shards.of_hash(hash)).ok()?;
        let entry = s.queues.find_entry(hash, |q| q.tenant == tenant && *q.name == *name).ok()?;
        Some(entry.remove().0)
    }

    /// Sets a timer in `shard` (the shard of what the timer checks when it fires).
    pub(crate) fn schedule(&mut self, shard: usize, at: Timestamp, timer: Timer) {
        let s = self.shard_mut(shard).expect("shard checked before the change");
        s.timers.schedule(at, timer);
        if s.timers.wants_purge() {
            s.purge_stale_timers();
        }
        self.inner.note_timer(at);
    }

    /// Records an event, building it (which may read state, see [`Txn::subject`]) only if
    /// somebody listens.
    pub(crate) fn emit(&mut self, at: Timestamp, kind: impl FnOnce(&Self) -> EventKind) {
        if self.events.is_none() {
            return;
        }
        let event =
            Event { id: Uuid::new_v4(), occurred_at: at, tenant: self.tenant.name.clone(), kind: kind(self) };
        if let Some(events) = &mut self.events {
            events.push(event);
        }
    }

    /// The subject of an event about a call, with its current client state.
    pub(crate) fn subject(&self, ident: &Arc<CallIdentity>) -> CallSubject {
        let client_state = self.call(ident.key()).ok().flatten().and_then(|r| r.client_state.clone());
        CallSubject { call: ident.clone(), client_state }
    }
}
