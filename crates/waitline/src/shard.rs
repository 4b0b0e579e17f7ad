//! Sharded state and the transaction that locks the shards a command needs.
//!
//! Calls and queues are spread over shards by hash; each shard is one mutex. A command
//! locks the shards of everything it reads or changes (the call, its queue, the other leg
//! of its bridge, ...) in ascending shard order, so no two commands can wait on each other
//! in a cycle. It learns what it needs by reading: when it meets a shard it has not
//! locked, it releases everything and starts again with that shard added. The set only
//! grows, so this ends. Commands validate everything before they change anything, which
//! makes the retry safe and gives "a rejected command changes nothing".

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use hashbrown::Equivalent;
use parking_lot::{Mutex, MutexGuard};
use smallvec::SmallVec;
use uuid::Uuid;

use crate::call::{CallIdentity, CallRecord, CallRef};
use crate::clock::Timestamp;
use crate::engine::{Inner, TenantState};
use crate::event::{CallSubject, Event, EventKind};
use crate::queue::Queue;
use crate::timers::{Timer, Timers};

type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A call's key: its tenant and id.
#[derive(Clone, Debug)]
pub(crate) struct CallKey {
    pub(crate) tenant: u32,
    pub(crate) call: CallRef,
}

impl Hash for CallKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.tenant.hash(h);
        self.call.0.call_control_id.hash(h);
    }
}
impl PartialEq for CallKey {
    fn eq(&self, o: &Self) -> bool {
        self.tenant == o.tenant && self.call == o.call
    }
}
impl Eq for CallKey {}

/// Borrowed form of [`CallKey`] for lookups.
#[derive(Hash)]
pub(crate) struct CallLookup<'a> {
    tenant: u32,
    id: &'a str,
}
impl<'a> CallLookup<'a> {
    pub(crate) const fn new(tenant: u32, id: &'a str) -> Self {
        Self { tenant, id }
    }
}
impl Equivalent<CallKey> for CallLookup<'_> {
    fn equivalent(&self, k: &CallKey) -> bool {
        self.tenant == k.tenant && self.id == &*k.call.0.call_control_id
    }
}

/// A queue's key: its tenant and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct QueueKey {
    tenant: u32,
    name: Arc<str>,
}

impl QueueKey {
    pub(crate) const fn tenant(&self) -> u32 {
        self.tenant
    }
}

#[derive(Hash)]
pub(crate) struct QueueLookup<'a> {
    tenant: u32,
    name: &'a str,
}
impl<'a> QueueLookup<'a> {
    pub(crate) const fn new(tenant: u32, name: &'a str) -> Self {
        Self { tenant, name }
    }
}
impl Equivalent<QueueKey> for QueueLookup<'_> {
    fn equivalent(&self, k: &QueueKey) -> bool {
        self.tenant == k.tenant && self.name == &*k.name
    }
}

#[derive(Debug, Default)]
pub(crate) struct Shard {
    pub(crate) calls: Map<CallKey, CallRecord>,
    pub(crate) queues: Map<QueueKey, Queue>,
    pub(crate) timers: Timers,
}

impl Shard {
    /// Drops the timers that would do nothing when they fire. Every timer checks state of
    /// its own shard, so this needs no other lock.
    fn purge_stale_timers(&mut self, idle_ttl: std::time::Duration) {
        let (calls, queues) = (&self.calls, &self.queues);
        self.timers.purge(|at, timer| match timer {
            Timer::Deadline { tenant, queue, call, .. } => queues
                .get(&QueueLookup::new(*tenant, queue))
                .and_then(|q| q.member(call))
                .is_some_and(|m| m.deadline == Some(at)),
            Timer::Idle { tenant, queue, queue_id } => {
                queues.get(&QueueLookup::new(*tenant, queue)).is_some_and(|q| {
                    q.id == *queue_id && q.is_empty() && !q.explicit && q.updated_at.saturating_add(idle_ttl) == at
                })
            }
            Timer::Forget { tenant, call } => {
                calls.get(&CallLookup::new(*tenant, call)).is_some_and(crate::call::CallRecord::is_ended)
            }
        });
    }
}

#[derive(Debug)]
pub(crate) struct Shards {
    pub(crate) shards: Box<[CachePadded<Mutex<Shard>>]>,
    mask: usize,
    placement: foldhash::fast::FixedState,
}

impl Shards {
    pub(crate) fn new(n: usize) -> Self {
        debug_assert!(n.is_power_of_two());
        Self {
            shards: (0..n).map(|_| CachePadded::new(Mutex::new(Shard::default()))).collect(),
            mask: n - 1,
            placement: foldhash::fast::FixedState::with_seed(0x5eed_ca11_0000_0001),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Mutex<Shard>> {
        self.shards.iter().map(|s| &**s)
    }

    fn place(&self, kind: u8, tenant: u32, name: &str) -> usize {
        let mut h = self.placement.build_hasher();
        kind.hash(&mut h);
        tenant.hash(&mut h);
        name.hash(&mut h);
        // The high bits: the low ones also pick the bucket inside the shard's map.
        (h.finish() >> 40) as usize & self.mask
    }

    pub(crate) fn of_call(&self, tenant: u32, id: &str) -> usize {
        self.place(0, tenant, id)
    }

    pub(crate) fn of_queue(&self, tenant: u32, name: &str) -> usize {
        self.place(1, tenant, name)
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
        let mut want: SmallVec<[usize; 6]> = first.iter().copied().collect();
        loop {
            want.sort_unstable();
            want.dedup();
            let mut txn = Txn {
                inner,
                tenant,
                now,
                locked: want.iter().map(|&i| (i, inner.shards.shards[i].lock())).collect(),
                events: inner.bus.has_subscribers().then(Vec::new),
                changed: false,
            };
            match body(&mut txn) {
                Ok(r) => {
                    txn.commit();
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
            // SPEC.md 4: within a command, events go by kind (stable within a kind).
            events.sort_by_key(|e| e.kind.rank());
            self.inner.bus.publish(&self.tenant.name, events);
        }
        // Guards drop here, after publishing: see `event` for why.
    }

    fn index_of(&self, shard: usize) -> Step<usize> {
        self.locked.iter().position(|(i, _)| *i == shard).ok_or(NeedLock(shard))
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

    pub(crate) fn call_shard(&self, id: &str) -> usize {
        self.inner.shards.of_call(self.tenant.index, id)
    }

    pub(crate) fn queue_shard(&self, name: &str) -> usize {
        self.inner.shards.of_queue(self.tenant.index, name)
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
        let highest = self.locked.iter().map(|(i, _)| *i).max();
        let guard = if highest.is_none_or(|h| shard > h) { Some(mutex.lock()) } else { mutex.try_lock() };
        let guard = guard.ok_or(NeedLock(shard))?;
        debug_assert!(!self.changed, "a command asked for a lock after changing state");
        self.locked.push((shard, guard));
        Ok(())
    }

    pub(crate) fn call(&self, id: &str) -> Step<Option<&CallRecord>> {
        let lookup = CallLookup { tenant: self.tenant.index, id };
        Ok(self.shard(self.call_shard(id))?.calls.get(&lookup))
    }

    pub(crate) fn queue(&self, name: &str) -> Step<Option<&Queue>> {
        let lookup = QueueLookup { tenant: self.tenant.index, name };
        Ok(self.shard(self.queue_shard(name))?.queues.get(&lookup))
    }

    /// A call this command has already found (and so locked).
    pub(crate) fn call_mut(&mut self, id: &str) -> &mut CallRecord {
        let lookup = CallLookup { tenant: self.tenant.index, id };
        let shard = self.call_shard(id);
        self.shard_mut(shard)
            .ok()
            .and_then(|s| s.calls.get_mut(&lookup))
            .expect("call checked before the change")
    }

    /// A queue this command has already found (and so locked).
    pub(crate) fn queue_mut(&mut self, name: &str) -> &mut Queue {
        let lookup = QueueLookup { tenant: self.tenant.index, name };
        let shard = self.queue_shard(name);
        self.shard_mut(shard)
            .ok()
            .and_then(|s| s.queues.get_mut(&lookup))
            .expect("queue checked before the change")
    }

    pub(crate) fn insert_call(&mut self, record: CallRecord) {
        let shard = self.call_shard(&record.ident.call_control_id);
        let key = CallKey { tenant: self.tenant.index, call: CallRef(record.ident.clone()) };
        self.shard_mut(shard).expect("shard checked before the change").calls.insert(key, record);
    }

    pub(crate) fn remove_call(&mut self, id: &str) -> Option<CallRecord> {
        let lookup = CallLookup { tenant: self.tenant.index, id };
        let shard = self.call_shard(id);
        self.shard_mut(shard).ok()?.calls.remove(&lookup)
    }

    pub(crate) fn insert_queue(&mut self, queue: Queue) {
        let shard = self.queue_shard(&queue.name);
        let key = QueueKey { tenant: self.tenant.index, name: queue.name.clone() };
        self.shard_mut(shard).expect("shard checked before the change").queues.insert(key, queue);
    }

    pub(crate) fn remove_queue(&mut self, name: &str) -> Option<Queue> {
        let lookup = QueueLookup { tenant: self.tenant.index, name };
        let shard = self.queue_shard(name);
        self.shard_mut(shard).ok()?.queues.remove(&lookup)
    }

    /// Sets a timer in `shard` (the shard of what the timer checks when it fires).
    pub(crate) fn schedule(&mut self, shard: usize, at: Timestamp, timer: Timer) {
        let idle_ttl = self.inner.config.queue_idle_ttl;
        let s = self.shard_mut(shard).expect("shard checked before the change");
        s.timers.schedule(at, timer);
        if s.timers.wants_purge() {
            s.purge_stale_timers(idle_ttl);
        }
        self.inner.note_timer(at);
    }

    /// Records an event, building it only if somebody listens.
    pub(crate) fn emit(&mut self, at: Timestamp, kind: impl FnOnce() -> EventKind) {
        if let Some(events) = &mut self.events {
            events.push(Event {
                id: Uuid::new_v4(),
                occurred_at: at,
                tenant: self.tenant.name.clone(),
                kind: kind(),
            });
        }
    }

    /// The subject of an event about call `id`, with its current client state.
    pub(crate) fn subject(&self, ident: &Arc<CallIdentity>) -> CallSubject {
        let client_state =
            self.call(&ident.call_control_id).ok().flatten().and_then(|r| r.client_state.clone());
        CallSubject { call: ident.clone(), client_state }
    }
}
