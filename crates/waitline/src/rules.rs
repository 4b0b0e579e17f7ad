//! The rules of docs/behaviour.md §2 and §3: every command of a [`Tenant`], what each timer
//! does when it fires, and the maintenance that fires them.
//!
//! A command reads the clock once, locks its tenant once ([`Tenant::run`]), fires the
//! tenant's timers that are due, and runs its body on the tenant's state: the body finds
//! what it needs and checks everything first, and only then changes state, so a rejected
//! command changes nothing. Its events are published before the lock is released.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::call::{CallIdentity, CallInfo, CallKey, CallRecord, Link};
use crate::clock::Timestamp;
use crate::engine::{Engine, Inner, Tenant};
use crate::error::{CallbackInfo, Error, Result};
use crate::event::{DequeueReason, Event, EventKind, HangupSource, QueueDeletedReason};
use crate::params::{
    BridgeParams, BridgeTarget, CommandOptions, DEFAULT_EXPLICIT_QUEUE_SIZE, DialParams, EnqueueParams, Page,
    PageRequest, QueueCallUpdate, TransferParams, validate_max_size, validate_queue_name,
};
use crate::queue::{Member, Queue, QueueCallInfo, QueueInfo};
use crate::state::{TenantCore, TenantState, Txn};
use crate::timers::{QueueInstance, Timer};

/// What a command knows of its call once it passed the common checks.
struct CallView {
    ident: Arc<CallIdentity>,
    link: Link,
}

impl CallView {
    fn id(&self) -> &str {
        &self.ident.call_control_id
    }

    fn queue(&self) -> Option<&Arc<str>> {
        match &self.link {
            Link::Queued(q) => Some(q),
            _ => None,
        }
    }
}

/// A fresh Telnyx-style id: `v3:` and 40 URL-safe characters from 240 random bits.
fn new_call_control_id() -> Box<str> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = String::with_capacity(43);
    id.push_str("v3:");
    for _ in 0..2 {
        // 20 characters of 6 bits from the 122 random bits of a v4 UUID.
        let mut bits = Uuid::new_v4().as_u128();
        for _ in 0..20 {
            id.push(char::from(ALPHABET[(bits & 63) as usize]));
            bits >>= 6;
        }
    }
    id.into_boxed_str()
}

fn new_identity(
    key_hash: u64,
    id: Box<str>,
    from: &str,
    to: &str,
    connection_id: Arc<str>,
    webhook_url: Option<&str>,
    now: Timestamp,
) -> Arc<CallIdentity> {
    Arc::new(CallIdentity {
        call_control_id: id,
        call_leg_id: Uuid::new_v4(),
        call_session_id: Uuid::new_v4(),
        connection_id,
        from: from.into(),
        to: to.into(),
        start_time: now,
        webhook_url: webhook_url.map(Into::into),
        key_hash,
    })
}

// ---------------------------------------------------------------------------------------
// Building blocks. The checks come first; the changes run after every check passed.
// ---------------------------------------------------------------------------------------

impl Txn<'_> {
    /// The call a command acts on: `None` for a repeated `command_id` (the command then
    /// answers success and changes nothing).
    fn target(&self, key: CallKey<'_>, command_id: Option<&str>) -> Result<Option<CallView>> {
        let rec = self.call(key).ok_or(Error::CallNotFound)?;
        if command_id.is_some_and(|c| rec.saw_command(c, self.now)) {
            return Ok(None);
        }
        if rec.is_ended() {
            return Err(Error::CallEnded { callback: None });
        }
        Ok(Some(CallView { ident: rec.ident.clone(), link: rec.link.clone() }))
    }

    /// The command is accepted: store its client state and remember its command id.
    fn accept(&mut self, call: &CallIdentity, opts: &CommandOptions) {
        let now = self.now;
        let rec = self.call_mut(call);
        if let Some(cs) = &opts.client_state {
            rec.client_state = Some(cs.as_str().into());
        }
        if let Some(cid) = &opts.command_id {
            rec.remember_command(cid, now);
        }
    }

    /// Takes a call out of its queue with a `call.dequeued` event.
    fn leave(&mut self, ident: &Arc<CallIdentity>, queue: &Arc<str>, reason: DequeueReason) {
        self.remove_member(ident, queue, Some(reason));
    }

    /// Takes a call out of its queue; `reason: None` drops a dead member without an event.
    /// `queue` is the caller's own reference to the name, so that the queue's is not cloned.
    fn remove_member(&mut self, ident: &Arc<CallIdentity>, queue: &Arc<str>, reason: Option<DequeueReason>) {
        let now = self.now;
        let q = self.queue_mut(queue);
        let departure = q.remove(ident, reason, now).expect("member checked before the change");
        let emptied = q.is_empty() && !q.explicit;
        let rec = self.call_mut(ident);
        rec.link = Link::None;
        if rec.is_ended() {
            // A dead member leaving: kept from now on like any ended call, under the cap.
            self.note_ended(ident);
        }
        if emptied {
            self.arm_idle_timer(queue);
        }
        if let Some(reason) = reason {
            self.emit(now, |t| EventKind::CallDequeued {
                subject: t.subject(ident),
                queue: queue.clone(),
                queue_position: departure.position,
                reason,
                wait_time_secs: departure.wait_time_secs,
            });
        }
    }

    /// An auto queue became empty (or changed while empty): make sure a timer will check it
    /// for idleness. One pending timer per queue is enough: when it fires early (the queue
    /// changed since) it sets itself again for `updated_at + queue_idle_ttl`.
    fn arm_idle_timer(&mut self, name: &str) {
        let at = self.now.saturating_add(self.config().queue_idle_ttl);
        self.arm_idle_timer_at(name, at);
    }

    fn arm_idle_timer_at(&mut self, name: &str, at: Timestamp) {
        if let Some(queue) = self.mark_idle_check(name, Some(at)) {
            self.schedule(at, Timer::Idle { queue });
        }
    }

    /// Ends a call: `call.hangup`, and it will be forgotten after the retention time (or
    /// earlier, past the tenant's cap on kept ended calls).
    fn end_call(&mut self, ident: &Arc<CallIdentity>, source: HangupSource) {
        let now = self.now;
        let rec = self.call_mut(ident);
        rec.end_time = Some(now);
        let kept_in_queue = rec.queue().is_some();
        self.release_call();
        if !kept_in_queue {
            // A dead member joins the kept ended calls when it leaves its queue.
            self.note_ended(ident);
        }
        self.emit(now, |t| EventKind::CallHangup { subject: t.subject(ident), source });
        let at = now.saturating_add(self.config().ended_call_retention);
        self.schedule(at, Timer::Forget { call: ident.clone() });
    }

    /// Adds an ended call to the tenant's list in end order, dropping from its front what
    /// the retention time has passed (forgotten by their timers, or about to be).
    fn note_ended(&mut self, ident: &Arc<CallIdentity>) {
        let (now, retention) = (self.now, self.config().ended_call_retention);
        let ended = self.ended_mut();
        prune_ended(ended, now, retention);
        ended.push_back((now, ident.clone()));
        self.ended_calls = true;
    }

    /// docs/behaviour.md §2.5: the leg that stays is parked if it asked for it, else hung up.
    fn release_partner(&mut self, partner: &Arc<CallIdentity>) {
        let rec = self.call_mut(partner);
        let park = matches!(rec.link, Link::Bridged { park_after_unbridge: true, .. });
        rec.link = Link::None;
        if !park {
            self.end_call(partner, HangupSource::Callee);
        }
    }

    /// Frees a call from its queue (with `reason`) and from its bridge.
    fn detach(&mut self, ident: &Arc<CallIdentity>, reason: DequeueReason) {
        match std::mem::replace(&mut self.call_mut(ident).link, Link::None) {
            Link::None => {}
            Link::Queued(q) => self.leave(ident, &q, reason),
            Link::Bridged { with, .. } => self.release_partner(&with),
        }
    }

    fn bridge_pair(&mut self, a: &Arc<CallIdentity>, b: &Arc<CallIdentity>, park_a: bool) {
        self.detach(a, DequeueReason::Bridged);
        self.detach(b, DequeueReason::Bridged);
        self.call_mut(a).link = Link::Bridged { with: b.clone(), park_after_unbridge: park_a };
        self.call_mut(b).link = Link::Bridged { with: a.clone(), park_after_unbridge: false };
        let now = self.now;
        self.emit(now, |t| EventKind::CallBridged(t.subject(a)));
        self.emit(now, |t| EventKind::CallBridged(t.subject(b)));
    }

    fn create_call(&mut self, ident: &Arc<CallIdentity>, client_state: Option<&str>) {
        self.insert_call(CallRecord::new(ident.clone(), client_state.map(Into::into)));
        let now = self.now;
        self.emit(now, |t| EventKind::CallInitiated(t.subject(ident)));
        self.emit(now, |t| EventKind::CallAnswered(t.subject(ident)));
    }

    /// Makes a queue, unless the tenant has its cap of queues (then nothing changes).
    fn create_queue(&mut self, name: &str, max_size: usize, explicit: bool) -> Result<Arc<str>> {
        let name: Arc<str> = name.into();
        let q = Queue::new(self.shared.queue_hash(&name), name.clone(), max_size, explicit, self.now);
        let (queue, queue_id) = (name.clone(), q.id);
        self.insert_queue(q)?;
        let now = self.now;
        self.emit(now, |_| EventKind::QueueCreated { queue, queue_id });
        Ok(name)
    }

    fn delete_queue(&mut self, name: &str, reason: QueueDeletedReason) {
        if let Some(q) = self.remove_queue(name) {
            let now = self.now;
            self.emit(now, |_| EventKind::QueueDeleted { queue: q.name, queue_id: q.id, reason });
        }
    }
}

enum BridgePlan {
    With(Arc<CallIdentity>),
    AlreadyBridged,
    DeadHead { queue: Arc<str>, head: Arc<CallIdentity> },
}

// ---------------------------------------------------------------------------------------
// Commands.
// ---------------------------------------------------------------------------------------

impl Tenant {
    fn inner(&self) -> &Inner {
        &self.engine.inner
    }

    /// The key of a call id, hashed before the lock is taken.
    fn key<'k>(&self, id: &'k str) -> CallKey<'k> {
        CallKey { hash: self.inner().shared.call_hash(id), id }
    }

    /// Runs one command at `now` (read before, with [`Inner::begin`]): locks the tenant
    /// once, fires its timers due by `now`, runs `body`, publishes the events (those of the
    /// timers first) and unlocks.
    fn run<R>(&self, now: Timestamp, body: impl FnOnce(&mut Txn<'_>) -> R) -> R {
        let inner = self.inner();
        let listening = inner.bus.has_subscribers();
        let mut core = self.state.lock();
        if core.next_due() <= now.as_micros() {
            fire_due(inner, &self.state, &mut core, now, listening);
        }
        let mut txn = Txn::new(&inner.shared, &self.state.name, &mut core, now, listening);
        let r = body(&mut txn);
        if let Some(events) = settle(txn) {
            // Under the lock: a tenant's events reach subscribers in the order of its changes.
            inner.bus.publish(&self.state.name, events);
        }
        r
    }

    /// Creates a call in state `active` with fresh ids (docs/behaviour.md §2.1, dial).
    pub fn dial(&self, p: &DialParams) -> Result<CallInfo> {
        let (to, from, connection_id) = p.validate()?;
        let now = self.inner().begin();
        let id = p.call_control_id.as_deref().map_or_else(new_call_control_id, Into::into);
        let hash = self.inner().shared.call_hash(&id);
        let ident = new_identity(hash, id, from, to, connection_id.into(), p.webhook_url.as_deref(), now);
        self.run(now, |txn| {
            if txn.call(ident.key()).is_some() {
                return Err(Error::CallExists);
            }
            txn.reserve_call()?;
            txn.create_call(&ident, p.client_state.as_deref());
            Ok(txn.call(ident.key()).expect("just inserted").snapshot(now))
        })
    }

    /// A call's status (`90015` when unknown or forgotten).
    pub fn call(&self, id: &str) -> Result<CallInfo> {
        let now = self.inner().begin();
        let key = self.key(id);
        self.run(now, |txn| txn.call(key).map(|r| r.snapshot(now)).ok_or(Error::CallNotFound))
    }

    /// Puts the call at the end of a queue (of its priority band), making the queue if
    /// needed (docs/behaviour.md §2.2, enqueue).
    pub fn enqueue(&self, id: &str, p: &EnqueueParams) -> Result<()> {
        let v = p.validate()?;
        let now = self.inner().begin();
        let key = self.key(id);
        self.run(now, |txn| {
            let Some(call) = txn.target(key, p.options.command_id.as_deref())? else { return Ok(()) };
            if call.queue().is_some_and(|q| &**q == v.queue) {
                return Err(Error::AlreadyInQueue);
            }
            let existing = match txn.queue(v.queue) {
                Some(q) if q.is_full() => return Err(Error::QueueFull),
                Some(q) => Some(q.name.clone()),
                None => None,
            };
            // Checked; the first change (the new queue) may still be refused by the cap.
            let queue = match existing {
                Some(name) => name,
                None => txn.create_queue(v.queue, v.max_size, false)?,
            };
            txn.accept(&call.ident, &p.options);
            txn.detach(&call.ident, DequeueReason::Leave);
            let q = txn.queue_mut(&queue);
            let enqueued_at = q.arrival_time(now);
            let deadline = v.max_wait_secs.map(|s| enqueued_at.saturating_add(Duration::from_secs(s)));
            let position = q.push(
                Member {
                    call: call.ident.clone(),
                    enqueued_at,
                    deadline,
                    keep_after_hangup: v.keep_after_hangup,
                    priority: v.priority,
                    alive: true,
                },
                now,
            );
            let avg = q.average_wait_secs(now);
            let arrival = q.total_enqueued();
            let instance = deadline.map(|_| q.instance());
            txn.emit(now, |t| EventKind::CallEnqueued {
                subject: t.subject(&call.ident),
                queue: queue.clone(),
                current_position: position,
                queue_avg_wait_time_secs: avg,
            });
            txn.call_mut(&call.ident).link = Link::Queued(queue);
            if let (Some(at), Some(instance)) = (deadline, instance) {
                txn.schedule(at, Timer::Deadline { queue: instance, call: call.ident.clone(), arrival });
            }
            Ok(())
        })
    }

    /// The call leaves its queue and stays active (`95002` when in none).
    pub fn leave_queue(&self, id: &str, opts: &CommandOptions) -> Result<()> {
        opts.validate()?;
        let now = self.inner().begin();
        let key = self.key(id);
        self.run(now, |txn| {
            let Some(call) = txn.target(key, opts.command_id.as_deref())? else { return Ok(()) };
            let queue = call.queue().ok_or(Error::NotInQueue)?.clone();
            txn.accept(&call.ident, opts);
            txn.leave(&call.ident, &queue, DequeueReason::Leave);
            Ok(())
        })
    }

    /// Bridges the call with another call or with the head of a queue (docs/behaviour.md §2.4, bridge).
    pub fn bridge(&self, id: &str, p: &BridgeParams) -> Result<()> {
        let (target, park) = p.validate()?;
        let now = self.inner().begin();
        let key = self.key(id);
        self.run(now, |txn| {
            let Some(a) = txn.target(key, p.options.command_id.as_deref())? else { return Ok(()) };
            let plan = match target {
                BridgeTarget::Queue(qname) => {
                    if a.queue().is_some_and(|q| &**q == qname) {
                        return Err(Error::out_of_range(
                            "queue",
                            "A call cannot be bridged with the queue it is waiting in.",
                        ));
                    }
                    let q = txn.queue(qname).ok_or(Error::QueueEmpty)?;
                    let head = q.head().ok_or(Error::QueueEmpty)?;
                    if head.alive {
                        BridgePlan::With(head.call.clone())
                    } else {
                        BridgePlan::DeadHead { queue: q.name.clone(), head: head.call.clone() }
                    }
                }
                BridgeTarget::Call(b) => {
                    if b == a.id() {
                        return Err(Error::out_of_range(
                            "call_control_id",
                            "A call cannot be bridged with itself.",
                        ));
                    }
                    let rec = txn.call(txn.key(b)).ok_or(Error::CallNotFound)?;
                    if rec.is_ended() {
                        return Err(Error::CallEnded { callback: None });
                    }
                    if rec.bridged_with().is_some_and(|w| w.call_control_id == a.ident.call_control_id) {
                        BridgePlan::AlreadyBridged
                    } else {
                        BridgePlan::With(rec.ident.clone())
                    }
                }
            };
            match plan {
                BridgePlan::With(b) => {
                    txn.accept(&a.ident, &p.options);
                    txn.bridge_pair(&a.ident, &b, park);
                    Ok(())
                }
                BridgePlan::AlreadyBridged => {
                    txn.accept(&a.ident, &p.options);
                    if let Link::Bridged { park_after_unbridge, .. } = &mut txn.call_mut(&a.ident).link {
                        *park_after_unbridge = park;
                    }
                    Ok(())
                }
                BridgePlan::DeadHead { queue, head } => {
                    // The head is removed even though the bridge fails (docs/behaviour.md §2).
                    txn.leave(&head, &queue, DequeueReason::Hangup);
                    let client_state = txn.call(head.key()).and_then(|r| r.client_state.clone());
                    Err(Error::CallEnded {
                        callback: Some(Box::new(CallbackInfo {
                            call_control_id: head.call_control_id.as_ref().into(),
                            from: head.from.clone(),
                            to: head.to.clone(),
                            connection_id: head.connection_id.clone(),
                            client_state,
                        })),
                    })
                }
            }
        })
    }

    /// Hangs the call up (docs/behaviour.md §2.6, hangup).
    pub fn hangup(&self, id: &str, opts: &CommandOptions) -> Result<()> {
        opts.validate()?;
        let now = self.inner().begin();
        let key = self.key(id);
        self.run(now, |txn| {
            let Some(call) = txn.target(key, opts.command_id.as_deref())? else { return Ok(()) };
            let keep = match &call.link {
                Link::Queued(q) => {
                    txn.queue(q).and_then(|q| q.member_of(&call.ident)).is_some_and(|m| m.keep_after_hangup)
                }
                _ => false,
            };
            txn.accept(&call.ident, opts);
            let mut partner = None;
            match &call.link {
                Link::None => {}
                Link::Queued(q) if keep => {
                    let q = txn.queue_mut(q);
                    q.updated_at = now;
                    if let Some(m) = q.member_mut(call.ident.key()) {
                        m.alive = false;
                    }
                }
                Link::Queued(q) => txn.leave(&call.ident, q, DequeueReason::Hangup),
                Link::Bridged { with, .. } => {
                    txn.call_mut(&call.ident).link = Link::None;
                    partner = Some(with.clone());
                }
            }
            txn.end_call(&call.ident, HangupSource::Caller);
            if let Some(p) = partner {
                txn.release_partner(&p);
            }
            Ok(())
        })
    }

    /// Makes a new call to `to` and bridges the call with it (docs/behaviour.md §2.7, transfer). Returns
    /// the new call (the call itself for a repeated `command_id`, which creates nothing).
    pub fn transfer(&self, id: &str, p: &TransferParams) -> Result<CallInfo> {
        let to = p.validate()?;
        let now = self.inner().begin();
        let key = self.key(id);
        let new_id = new_call_control_id();
        let new_hash = self.inner().shared.call_hash(&new_id);
        self.run(now, |txn| {
            let Some(call) = txn.target(key, p.options.command_id.as_deref())? else {
                return Ok(txn.call(key).expect("found by target").snapshot(now));
            };
            let from = p.from.clone().map_or_else(|| call.ident.to.clone(), Into::into);
            let ident = &call.ident;
            let b = new_identity(
                new_hash,
                new_id,
                &from,
                to,
                ident.connection_id.clone(),
                ident.webhook_url.as_deref(),
                now,
            );
            txn.reserve_call()?;
            txn.accept(&call.ident, &p.options);
            txn.create_call(&b, None);
            txn.bridge_pair(&call.ident, &b, false);
            Ok(txn.call(b.key()).expect("just inserted").snapshot(now))
        })
    }

    // -----------------------------------------------------------------------------------
    // Queues (docs/behaviour.md §3).
    // -----------------------------------------------------------------------------------

    /// Creates an explicit queue (never idle-collected); `max_size` defaults to 300.
    pub fn create_queue(&self, name: &str, max_size: Option<u32>) -> Result<QueueInfo> {
        validate_queue_name("queue_name", name)?;
        let max_size = max_size.map_or(Ok(DEFAULT_EXPLICIT_QUEUE_SIZE), validate_max_size)?;
        let now = self.inner().begin();
        self.run(now, |txn| {
            if txn.queue(name).is_some() {
                return Err(Error::QueueExists);
            }
            txn.create_queue(name, max_size, true)?;
            Ok(txn.queue(name).expect("just inserted").snapshot(now))
        })
    }

    /// A queue's state and figures.
    pub fn queue(&self, name: &str) -> Result<QueueInfo> {
        let now = self.inner().begin();
        self.run(now, |txn| txn.queue(name).map(|q| q.snapshot(now)).ok_or(Error::QueueNotFound))
    }

    /// The tenant's queues sorted by name, one page.
    pub fn queues(&self, page: PageRequest) -> Result<Page<QueueInfo>> {
        let (number, size) = page.validate()?;
        let now = self.inner().begin();
        self.run(now, |txn| {
            let names = txn.core().queue_names();
            let skip = (number - 1).saturating_mul(size);
            let data = names
                .iter()
                .skip(skip)
                .take(size)
                .filter_map(|n| txn.queue(n).map(|q| q.snapshot(now)))
                .collect();
            Ok(Page::new(data, number, size, names.len()))
        })
    }

    /// Sets a queue's `max_size` (1..=1 000 000). Nobody is removed when it drops below the
    /// current size.
    pub fn update_queue(&self, name: &str, max_size: u32) -> Result<QueueInfo> {
        let max_size = validate_max_size(max_size)?;
        let now = self.inner().begin();
        self.run(now, |txn| {
            let q = txn.queue(name).ok_or(Error::QueueNotFound)?;
            let idle = q.is_empty() && !q.explicit;
            let q = txn.queue_mut(name);
            q.max_size = max_size;
            q.updated_at = now;
            let snapshot = q.snapshot(now);
            if idle {
                txn.arm_idle_timer(name);
            }
            Ok(snapshot)
        })
    }

    /// Deletes an empty queue (`90050` when it has members).
    pub fn delete_queue(&self, name: &str) -> Result<()> {
        let now = self.inner().begin();
        self.run(now, |txn| {
            let q = txn.queue(name).ok_or(Error::QueueNotFound)?;
            if !q.is_empty() {
                return Err(Error::QueueNotEmpty);
            }
            txn.delete_queue(name, QueueDeletedReason::Explicit);
            Ok(())
        })
    }

    /// A queue's members in service order, one page.
    pub fn queue_calls(&self, name: &str, page: PageRequest) -> Result<Page<QueueCallInfo>> {
        let (number, size) = page.validate()?;
        let now = self.inner().begin();
        self.run(now, |txn| {
            let q = txn.queue(name).ok_or(Error::QueueNotFound)?;
            let from = (number - 1).saturating_mul(size).saturating_add(1);
            let data = q.page(from, size).map(|(pos, m)| q.call_snapshot(pos, m, now)).collect();
            Ok(Page::new(data, number, size, q.len()))
        })
    }

    /// One member of a queue (`10005` when the call is not a member).
    pub fn queue_call(&self, name: &str, id: &str) -> Result<QueueCallInfo> {
        let now = self.inner().begin();
        let key = self.key(id);
        self.run(now, |txn| {
            let q = txn.queue(name).ok_or(Error::QueueNotFound)?;
            match (q.position(key), q.member(key)) {
                (Some(pos), Some(m)) => Ok(q.call_snapshot(pos, m, now)),
                _ => Err(Error::QueueCallNotFound),
            }
        })
    }

    /// Just the 1-based position of a member (no snapshot is built): O(log n).
    pub fn queue_position(&self, name: &str, id: &str) -> Result<usize> {
        let now = self.inner().begin();
        let key = self.key(id);
        self.run(now, |txn| {
            let q = txn.queue(name).ok_or(Error::QueueNotFound)?;
            q.position(key).ok_or(Error::QueueCallNotFound)
        })
    }

    /// Changes `keep_after_hangup` and/or the priority of a member.
    pub fn update_queue_call(&self, name: &str, id: &str, update: &QueueCallUpdate) -> Result<QueueCallInfo> {
        let priority = update.validate()?;
        let now = self.inner().begin();
        let key = self.key(id);
        self.run(now, |txn| {
            let q = txn.queue(name).ok_or(Error::QueueNotFound)?;
            if !q.contains(key) {
                return Err(Error::QueueCallNotFound);
            }
            let q = txn.queue_mut(name);
            if let Some(keep) = update.keep_after_hangup {
                q.member_mut(key).expect("checked").keep_after_hangup = keep;
                q.updated_at = now;
            }
            if let Some(p) = priority {
                q.set_priority(key, p, now);
            }
            let pos = q.position(key).expect("checked");
            Ok(q.call_snapshot(pos, q.member(key).expect("checked"), now))
        })
    }

    /// Removes a member: a live call stays active (`call.dequeued`, reason `leave`); a dead
    /// kept call is dropped silently.
    pub fn remove_queue_call(&self, name: &str, id: &str) -> Result<()> {
        let now = self.inner().begin();
        let key = self.key(id);
        self.run(now, |txn| {
            let q = txn.queue(name).ok_or(Error::QueueNotFound)?;
            let m = q.member(key).ok_or(Error::QueueCallNotFound)?;
            let (ident, alive, name) = (m.call.clone(), m.alive, q.name.clone());
            txn.remove_member(&ident, &name, alive.then_some(DequeueReason::Leave));
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------
// Timers.
// ---------------------------------------------------------------------------------------

impl Engine {
    /// Fires every timer due now (max-wait expiry, idle queues, forgetting ended calls) and
    /// returns how many changed something. A command fires its own tenant's due timers
    /// before it runs; frontends call this periodically so timers fire without traffic.
    pub fn run_pending_tasks(&self) -> usize {
        let inner = &*self.inner;
        let now = inner.clock.now();
        // Reset first: a timer set concurrently lowers it again after this store.
        inner.shared.next_due.store(u64::MAX, std::sync::atomic::Ordering::Release);
        let listening = inner.bus.has_subscribers();
        let mut fired = 0;
        for tenant in inner.tenants() {
            let mut core = tenant.lock();
            if core.next_due() <= now.as_micros() {
                fired += fire_due(inner, &tenant, &mut core, now, listening);
            }
            inner.shared.note_timer(core.next_due());
        }
        fired
    }
}

/// Ends a command or a timer firing: forgets ended calls past the cap (part of the same
/// change), and hands back its events.
fn settle(mut txn: Txn<'_>) -> Option<Vec<Event>> {
    if txn.ended_calls {
        forget_excess_ended(&mut txn);
    }
    txn.finish()
}

/// Fires every timer of a locked tenant due at `now` in exact time order (ties: deadlines in
/// enqueue order, then idle queues, then forgetting calls), each at its own instant in a
/// `Txn` of its own (so each that changes something takes its own sequence number), and
/// publishes their events as one batch. A timer set while firing that is due too is merged
/// in at its place. Returns how many changed something.
fn fire_due(
    inner: &Inner,
    tenant: &TenantState,
    core: &mut TenantCore,
    now: Timestamp,
    listening: bool,
) -> usize {
    let mut fired = 0;
    let mut events: Option<Vec<Event>> = listening.then(Vec::new);
    // Sorted latest first, so the next to fire is popped from the end.
    let mut due: Vec<(Timestamp, Timer)> = Vec::new();
    loop {
        let next_set = core.next_due();
        let next_taken = due.last().map_or(u64::MAX, |(at, _)| at.as_micros());
        if next_set <= now.as_micros() && next_set <= next_taken {
            // Something due is still pending (first pass, or set while firing).
            core.take_due(now, &mut due);
            due.sort_by(|a, b| (b.0, b.1.tie_key()).cmp(&(a.0, a.1.tie_key())));
            continue;
        }
        let Some((at, timer)) = due.pop() else { break };
        let mut txn = Txn::new(&inner.shared, &tenant.name, core, at, listening);
        let changed = match &timer {
            Timer::Deadline { queue, call, .. } => fire_deadline(&mut txn, queue, call),
            Timer::Idle { queue } => fire_idle(&mut txn, queue),
            Timer::Forget { call } => fire_forget(&mut txn, call),
        };
        fired += usize::from(changed);
        if let (Some(all), Some(mine)) = (events.as_mut(), settle(txn)) {
            all.extend(mine);
        }
    }
    if let Some(events) = events {
        inner.bus.publish(&tenant.name, events);
    }
    fired
}

/// Drops from the front of a tenant's ended calls those the retention time has passed:
/// their own timers forget them (or keep them while they are dead queue members).
fn prune_ended(ended: &mut VecDeque<(Timestamp, Arc<CallIdentity>)>, now: Timestamp, retention: Duration) {
    while ended.front().is_some_and(|(at, _)| at.saturating_add(retention) <= now) {
        ended.pop_front();
    }
}

/// Forgets the longest-ended calls of a tenant while it keeps more than its cap of ended
/// calls. A call still kept in a queue after hangup is not forgotten (it leaves the list; its
/// own timer keeps it while it is a member).
fn forget_excess_ended(txn: &mut Txn<'_>) {
    let cap = txn.config().max_ended_calls;
    while txn.ended_len() > cap {
        let Some((_, call)) = txn.ended_mut().pop_front() else { return };
        let forgettable = txn
            .call(call.key())
            .is_some_and(|r| Arc::ptr_eq(&r.ident, &call) && r.is_ended() && r.queue().is_none());
        if forgettable {
            txn.remove_call(call.key());
        }
    }
}

/// A member's deadline, at its own instant: takes it out of its queue unless it left since
/// or was enqueued again with another deadline (a member re-enqueued within the same
/// instant left equal timers: the first takes it out, the others find it gone). Returns
/// whether it did.
fn fire_deadline(txn: &mut Txn<'_>, queue: &QueueInstance, call: &Arc<CallIdentity>) -> bool {
    let at = txn.now;
    let due = txn
        .queue(&queue.name)
        .filter(|q| q.id == queue.id)
        .and_then(|q| q.member_of(call))
        .is_some_and(|m| m.deadline == Some(at));
    if due {
        txn.leave(call, &queue.name, DequeueReason::Timeout);
    }
    due
}

/// An idle check of a queue, at its own instant: deletes the queue if it is an auto queue
/// left empty and unchanged for `queue_idle_ttl`; returns whether it did.
fn fire_idle(txn: &mut Txn<'_>, queue: &QueueInstance) -> bool {
    let (at, ttl) = (txn.now, txn.config().queue_idle_ttl);
    let Some(q) = txn.queue(&queue.name).filter(|q| q.id == queue.id && q.idle_timer == Some(at)) else {
        return false;
    };
    let (empty_auto, idle_until) = (q.is_empty() && !q.explicit, q.updated_at.saturating_add(ttl));
    txn.mark_idle_check(&queue.name, None);
    if !empty_auto {
        return false; // the next time it empties sets a new timer
    }
    if idle_until <= at {
        txn.delete_queue(&queue.name, QueueDeletedReason::Idle);
        return true;
    }
    txn.arm_idle_timer_at(&queue.name, idle_until);
    false
}

/// The retention of an ended call ran out: forgets it (or keeps it a while longer while it
/// is still a dead member of a queue); returns whether it was forgotten.
fn fire_forget(txn: &mut Txn<'_>, call: &Arc<CallIdentity>) -> bool {
    let (at, retention) = (txn.now, txn.config().ended_call_retention);
    let Some(rec) = txn.call(call.key()) else { return false };
    let Some(end) = rec.end_time else { return false };
    if end.saturating_add(retention) > at {
        return false;
    }
    if rec.queue().is_some() {
        // Still a dead member of a queue: keep it readable a while longer.
        txn.schedule(at.saturating_add(retention), Timer::Forget { call: call.clone() });
        return false;
    }
    txn.remove_call(call.key());
    prune_ended(txn.ended_mut(), at, retention);
    true
}
