//! The rules of docs/behaviour.md §2 and §3: every command, and what each timer does when it
//! fires. Each command checks everything first (taking the locks it needs as it reads), then
//! applies its changes, which cannot fail past the first step.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::call::{CallIdentity, CallInfo, CallKey, CallRecord, Link};
use crate::clock::Timestamp;
use crate::engine::{Inner, Tenant, TenantState};
use crate::error::{CallbackInfo, Error, Result};
use crate::event::{DequeueReason, EventKind, HangupSource, QueueDeletedReason};
use crate::params::{
    BridgeParams, BridgeTarget, CommandOptions, DEFAULT_EXPLICIT_QUEUE_SIZE, DialParams, EnqueueParams, Page,
    PageRequest, QueueCallUpdate, TransferParams, validate_max_size, validate_queue_name,
};
use crate::queue::{Member, Queue, QueueCallInfo, QueueInfo};
use crate::shard::{Step, Txn};
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
// Building blocks of the changes. They run after the checks, with every lock held.
// ---------------------------------------------------------------------------------------

impl Txn<'_> {
    /// The call a command acts on: `Ok(None)` for a repeated `command_id`.
    fn target(&self, key: CallKey<'_>, command_id: Option<&str>) -> Step<Result<Option<CallView>>> {
        let Some(rec) = self.call(key)? else { return Ok(Err(Error::CallNotFound)) };
        if command_id.is_some_and(|c| rec.saw_command(c, self.now)) {
            return Ok(Ok(None));
        }
        if rec.is_ended() {
            return Ok(Err(Error::CallEnded { callback: None }));
        }
        Ok(Ok(Some(CallView { ident: rec.ident.clone(), link: rec.link.clone() })))
    }

    /// Makes sure the shards of the call's queue and of the other leg of its bridge are held.
    fn need_surroundings(&mut self, link: &Link) -> Step<()> {
        match link {
            Link::None => Ok(()),
            Link::Queued(q) => self.need_queue(q),
            Link::Bridged { with, .. } => self.need_call(with.key()),
        }
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
    /// `queue` is the caller's own reference to the name, so that the queue's is not cloned
    /// (its count is one more cache line that threads sharing the queue would pass around).
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
        let at = self.now.saturating_add(self.inner.config.queue_idle_ttl);
        self.arm_idle_timer_at(name, at);
    }

    fn arm_idle_timer_at(&mut self, name: &str, at: Timestamp) {
        let q = self.queue_mut(name);
        if q.idle_timer.is_some() {
            return;
        }
        q.idle_timer = Some(at);
        let queue = q.instance();
        let shard = self.inner.shards.of_hash(queue.key_hash);
        self.schedule(shard, at, Timer::Idle { queue });
    }

    /// Ends a call: `call.hangup`, and it will be forgotten after the retention time (or
    /// earlier, past the tenant's cap on kept ended calls).
    fn end_call(&mut self, ident: &Arc<CallIdentity>, source: HangupSource) {
        let now = self.now;
        let rec = self.call_mut(ident);
        rec.end_time = Some(now);
        let kept_in_queue = rec.queue().is_some();
        self.tenant.release_call();
        if !kept_in_queue {
            // A dead member joins the kept ended calls when it leaves its queue.
            self.note_ended(ident);
        }
        self.emit(now, |t| EventKind::CallHangup { subject: t.subject(ident), source });
        let at = now.saturating_add(self.inner.config.ended_call_retention);
        let timer = Timer::Forget { tenant: self.tenant.index, call: ident.clone() };
        self.schedule(self.call_shard(ident.key()), at, timer);
    }

    /// Adds an ended call to the tenant's list in end order, dropping from its front what
    /// the retention time has passed (forgotten by their timers, or about to be).
    fn note_ended(&mut self, ident: &Arc<CallIdentity>) {
        let mut ended = self.tenant.ended.lock();
        prune_ended(&mut ended, self.now, self.inner.config.ended_call_retention);
        ended.push_back((self.now, ident.clone()));
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
        self.insert_call(CallRecord::new(self.tenant.index, ident.clone(), client_state.map(Into::into)));
        let now = self.now;
        self.emit(now, |t| EventKind::CallInitiated(t.subject(ident)));
        self.emit(now, |t| EventKind::CallAnswered(t.subject(ident)));
    }

    fn create_queue(&mut self, name: &str, max_size: usize, explicit: bool) -> Result<Arc<str>> {
        let name: Arc<str> = name.into();
        self.tenant.reserve_queue(&name, self.inner.config.max_queues)?;
        let q =
            Queue::new(self.tenant.index, self.queue_hash(&name), name.clone(), max_size, explicit, self.now);
        let (queue, queue_id) = (name.clone(), q.id);
        self.insert_queue(q);
        let now = self.now;
        self.emit(now, |_| EventKind::QueueCreated { queue, queue_id });
        Ok(name)
    }

    fn delete_queue(&mut self, name: &str, reason: QueueDeletedReason) {
        if let Some(q) = self.remove_queue(name) {
            self.tenant.release_queue(name);
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

    fn run<R>(&self, now: Timestamp, first: &[usize], body: impl FnMut(&mut Txn<'_>) -> Step<R>) -> R {
        Txn::run(self.inner(), &self.state, now, first, body)
    }

    fn call_hash(&self, id: &str) -> u64 {
        self.inner().shards.call_hash(self.state.index, id)
    }

    fn call_shard(&self, id: &str) -> usize {
        self.inner().shards.of_hash(self.call_hash(id))
    }

    fn queue_shard(&self, name: &str) -> usize {
        self.inner().shards.of_hash(self.inner().shards.queue_hash(self.state.index, name))
    }

    /// The common frame of call commands: the call must exist and be alive, a repeated
    /// `command_id` answers success at once, `check` decides (taking locks), `apply` changes.
    fn call_command<P>(
        &self,
        id: &str,
        opts: &CommandOptions,
        also: Option<usize>,
        mut check: impl FnMut(&mut Txn<'_>, &CallView) -> Step<Result<P>>,
        mut apply: impl FnMut(&mut Txn<'_>, &CallView, P) -> Result<()>,
    ) -> Result<()> {
        let now = self.inner().begin();
        let key = CallKey { hash: self.call_hash(id), id };
        let shard = self.inner().shards.of_hash(key.hash);
        let both = [shard, also.unwrap_or(shard)];
        let first = if also.is_some() { &both[..] } else { &both[..1] };
        self.run(now, first, |txn| {
            let view = match txn.target(key, opts.command_id.as_deref())? {
                Err(e) => return Ok(Err(e)),
                Ok(None) => return Ok(Ok(())),
                Ok(Some(view)) => view,
            };
            let plan = match check(txn, &view)? {
                Err(e) => return Ok(Err(e)),
                Ok(plan) => plan,
            };
            Ok(apply(txn, &view, plan))
        })
    }

    /// Creates a call in state `active` with fresh ids (docs/behaviour.md §2.1, dial).
    pub fn dial(&self, p: &DialParams) -> Result<CallInfo> {
        let (to, from, connection_id) = p.validate()?;
        let inner = self.inner();
        let now = inner.begin();
        let id = p.call_control_id.as_deref().map_or_else(new_call_control_id, Into::into);
        let ident = new_identity(
            self.call_hash(&id),
            id,
            from,
            to,
            connection_id.into(),
            p.webhook_url.as_deref(),
            now,
        );
        self.run(now, &[self.inner().shards.of_hash(ident.key_hash)], |txn| {
            if txn.call(ident.key())?.is_some() {
                return Ok(Err(Error::CallExists));
            }
            if let Err(e) = txn.tenant.reserve_call(inner.config.max_live_calls) {
                return Ok(Err(e));
            }
            txn.create_call(&ident, p.client_state.as_deref());
            Ok(Ok(txn.call(ident.key())?.expect("just inserted").snapshot(now)))
        })
    }

    /// A call's status (`90015` when unknown or forgotten).
    pub fn call(&self, id: &str) -> Result<CallInfo> {
        let now = self.inner().begin();
        self.run(now, &[self.call_shard(id)], |txn| {
            Ok(txn.call(txn.key(id))?.map(|r| r.snapshot(now)).ok_or(Error::CallNotFound))
        })
    }

    /// Puts the call at the end of a queue (of its priority band), making the queue if
    /// needed (docs/behaviour.md §2.2, enqueue).
    pub fn enqueue(&self, id: &str, p: &EnqueueParams) -> Result<()> {
        let v = p.validate()?;
        let qshard = self.queue_shard(v.queue);
        self.call_command(
            id,
            &p.options,
            Some(qshard),
            |txn, call| {
                if call.queue().is_some_and(|q| &**q == v.queue) {
                    return Ok(Err(Error::AlreadyInQueue));
                }
                txn.need_surroundings(&call.link)?;
                match txn.queue(v.queue)? {
                    Some(q) if q.is_full() => Ok(Err(Error::QueueFull)),
                    Some(q) => Ok(Ok(Some(q.name.clone()))),
                    None => Ok(Ok(None)),
                }
            },
            |txn, call, existing| {
                let queue = match existing {
                    Some(name) => name,
                    None => txn.create_queue(v.queue, v.max_size, false)?,
                };
                txn.accept(&call.ident, &p.options);
                txn.detach(&call.ident, DequeueReason::Leave);
                let now = txn.now;
                let q = txn.queue_mut(&queue);
                let enqueued_at = q.arrival_time(now);
                let deadline =
                    v.max_wait_secs.map(|s| enqueued_at.saturating_add(std::time::Duration::from_secs(s)));
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
                    let timer = Timer::Deadline { queue: instance, call: call.ident.clone(), arrival };
                    txn.schedule(qshard, at, timer);
                }
                Ok(())
            },
        )
    }

    /// The call leaves its queue and stays active (`95002` when in none).
    pub fn leave_queue(&self, id: &str, opts: &CommandOptions) -> Result<()> {
        opts.validate()?;
        self.call_command(
            id,
            opts,
            None,
            |txn, call| {
                let Some(q) = call.queue() else { return Ok(Err(Error::NotInQueue)) };
                txn.need_queue(q)?;
                Ok(Ok(q.clone()))
            },
            |txn, call, queue| {
                txn.accept(&call.ident, opts);
                txn.leave(&call.ident, &queue, DequeueReason::Leave);
                Ok(())
            },
        )
    }

    /// Bridges the call with another call or with the head of a queue (docs/behaviour.md §2.4, bridge).
    pub fn bridge(&self, id: &str, p: &BridgeParams) -> Result<()> {
        let (target, park) = p.validate()?;
        let also = match target {
            BridgeTarget::Queue(q) => self.queue_shard(q),
            BridgeTarget::Call(b) => self.call_shard(b),
        };
        self.call_command(
            id,
            &p.options,
            Some(also),
            |txn, a| {
                txn.need_surroundings(&a.link)?;
                match target {
                    BridgeTarget::Queue(qname) => {
                        if a.queue().is_some_and(|q| &**q == qname) {
                            return Ok(Err(Error::out_of_range(
                                "/queue",
                                "A call cannot be bridged with the queue it is waiting in.",
                            )));
                        }
                        let Some(q) = txn.queue(qname)? else { return Ok(Err(Error::QueueEmpty)) };
                        let Some(head) = q.head() else { return Ok(Err(Error::QueueEmpty)) };
                        let (queue, head_call, alive) = (q.name.clone(), head.call.clone(), head.alive);
                        txn.need_call(head_call.key())?;
                        if alive {
                            Ok(Ok(BridgePlan::With(head_call)))
                        } else {
                            Ok(Ok(BridgePlan::DeadHead { queue, head: head_call }))
                        }
                    }
                    BridgeTarget::Call(b) => {
                        if b == a.id() {
                            return Ok(Err(Error::out_of_range(
                                "/call_control_id",
                                "A call cannot be bridged with itself.",
                            )));
                        }
                        let Some(rec) = txn.call(txn.key(b))? else { return Ok(Err(Error::CallNotFound)) };
                        if rec.is_ended() {
                            return Ok(Err(Error::CallEnded { callback: None }));
                        }
                        let already =
                            rec.bridged_with().is_some_and(|w| w.call_control_id == a.ident.call_control_id);
                        let (b_ident, b_link) = (rec.ident.clone(), rec.link.clone());
                        txn.need_surroundings(&b_link)?;
                        if already {
                            return Ok(Ok(BridgePlan::AlreadyBridged));
                        }
                        Ok(Ok(BridgePlan::With(b_ident)))
                    }
                }
            },
            |txn, a, plan| match plan {
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
                    let client_state =
                        txn.call(head.key()).ok().flatten().and_then(|r| r.client_state.clone());
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
            },
        )
    }

    /// Hangs the call up (docs/behaviour.md §2.6, hangup).
    pub fn hangup(&self, id: &str, opts: &CommandOptions) -> Result<()> {
        opts.validate()?;
        self.call_command(
            id,
            opts,
            None,
            |txn, call| {
                txn.need_surroundings(&call.link)?;
                let keep = match &call.link {
                    Link::Queued(q) => txn
                        .queue(q)?
                        .and_then(|q| q.member_of(&call.ident))
                        .is_some_and(|m| m.keep_after_hangup),
                    _ => false,
                };
                Ok(Ok(keep))
            },
            |txn, call, keep| {
                txn.accept(&call.ident, opts);
                let mut partner = None;
                match &call.link {
                    Link::None => {}
                    Link::Queued(q) if keep => {
                        let now = txn.now;
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
            },
        )
    }

    /// Makes a new call to `to` and bridges the call with it (docs/behaviour.md §2.7, transfer). Returns
    /// the new call.
    pub fn transfer(&self, id: &str, p: &TransferParams) -> Result<CallInfo> {
        let to = p.validate()?;
        let new_id = new_call_control_id();
        let mut created = None;
        let new_hash = self.call_hash(&new_id);
        self.call_command(
            id,
            &p.options,
            Some(self.inner().shards.of_hash(new_hash)),
            |txn, call| {
                txn.need_surroundings(&call.link)?;
                let from = p.from.clone().map_or_else(|| call.ident.to.clone(), Into::into);
                Ok(Ok(new_identity(
                    new_hash,
                    new_id.clone(),
                    &from,
                    to,
                    call.ident.connection_id.clone(),
                    call.ident.webhook_url.as_deref(),
                    txn.now,
                )))
            },
            |txn, call, b| {
                txn.tenant.reserve_call(txn.inner.config.max_live_calls)?;
                txn.accept(&call.ident, &p.options);
                txn.create_call(&b, None);
                txn.bridge_pair(&call.ident, &b, false);
                created = Some(b.call_control_id.clone());
                Ok(())
            },
        )?;
        // A repeated command_id creates nothing: answer with the call itself then.
        self.call(created.as_deref().unwrap_or(id))
    }

    // -----------------------------------------------------------------------------------
    // Queues (docs/behaviour.md §3).
    // -----------------------------------------------------------------------------------

    /// Creates an explicit queue (never idle-collected); `max_size` defaults to 300.
    pub fn create_queue(&self, name: Option<&str>, max_size: Option<i64>) -> Result<QueueInfo> {
        let name = name.ok_or_else(|| Error::missing("/queue_name"))?;
        validate_queue_name("/queue_name", name)?;
        let max_size = match max_size {
            None => DEFAULT_EXPLICIT_QUEUE_SIZE,
            some => validate_max_size("/max_size", some)?,
        };
        let now = self.inner().begin();
        self.run(now, &[self.queue_shard(name)], |txn| {
            if txn.queue(name)?.is_some() {
                return Ok(Err(Error::QueueExists));
            }
            Ok(txn.create_queue(name, max_size, true).map(|_| txn.queue_mut(name).snapshot(now)))
        })
    }

    /// A queue's state and figures.
    pub fn queue(&self, name: &str) -> Result<QueueInfo> {
        let now = self.inner().begin();
        self.run(now, &[self.queue_shard(name)], |txn| {
            Ok(txn.queue(name)?.map(|q| q.snapshot(now)).ok_or(Error::QueueNotFound))
        })
    }

    /// The tenant's queues sorted by name, one page.
    pub fn queues(&self, page: PageRequest) -> Result<Page<QueueInfo>> {
        let (number, size) = page.validate()?;
        let now = self.inner().begin();
        let (names, total): (Vec<Arc<str>>, usize) = {
            let all = self.state.queue_names.lock();
            let skip = (number - 1).saturating_mul(size);
            (all.iter().skip(skip).take(size).cloned().collect(), all.len())
        };
        let data = names
            .iter()
            .filter_map(|n| {
                self.run(now, &[self.queue_shard(n)], |txn| Ok(txn.queue(n)?.map(|q| q.snapshot(now))))
            })
            .collect();
        Ok(Page::new(data, number, size, total))
    }

    /// Sets a queue's `max_size` (required, 1..=1 000 000). Nobody is removed when it drops
    /// below the current size.
    pub fn update_queue(&self, name: &str, max_size: Option<i64>) -> Result<QueueInfo> {
        let max_size = validate_max_size("/max_size", max_size)?;
        let now = self.inner().begin();
        self.run(now, &[self.queue_shard(name)], |txn| {
            let Some(q) = txn.queue(name)? else { return Ok(Err(Error::QueueNotFound)) };
            let idle = q.is_empty() && !q.explicit;
            let q = txn.queue_mut(name);
            q.max_size = max_size;
            q.updated_at = now;
            let snapshot = q.snapshot(now);
            if idle {
                txn.arm_idle_timer(name);
            }
            Ok(Ok(snapshot))
        })
    }

    /// Deletes an empty queue (`90050` when it has members).
    pub fn delete_queue(&self, name: &str) -> Result<()> {
        let now = self.inner().begin();
        self.run(now, &[self.queue_shard(name)], |txn| {
            let Some(q) = txn.queue(name)? else { return Ok(Err(Error::QueueNotFound)) };
            if !q.is_empty() {
                return Ok(Err(Error::QueueNotEmpty));
            }
            txn.delete_queue(name, QueueDeletedReason::Explicit);
            Ok(Ok(()))
        })
    }

    /// A queue's members in service order, one page.
    pub fn queue_calls(&self, name: &str, page: PageRequest) -> Result<Page<QueueCallInfo>> {
        let (number, size) = page.validate()?;
        let now = self.inner().begin();
        self.run(now, &[self.queue_shard(name)], |txn| {
            let Some(q) = txn.queue(name)? else { return Ok(Err(Error::QueueNotFound)) };
            let from = (number - 1).saturating_mul(size).saturating_add(1);
            let data = q.page(from, size).map(|(pos, m)| q.call_snapshot(pos, m, now)).collect();
            Ok(Ok(Page::new(data, number, size, q.len())))
        })
    }

    /// One member of a queue (`10005` when the call is not a member).
    pub fn queue_call(&self, name: &str, id: &str) -> Result<QueueCallInfo> {
        let now = self.inner().begin();
        self.run(now, &[self.queue_shard(name)], |txn| {
            let Some(q) = txn.queue(name)? else { return Ok(Err(Error::QueueNotFound)) };
            let key = txn.key(id);
            Ok(match (q.position(key), q.member(key)) {
                (Some(pos), Some(m)) => Ok(q.call_snapshot(pos, m, now)),
                _ => Err(Error::QueueCallNotFound),
            })
        })
    }

    /// Just the 1-based position of a member (no snapshot is built): O(log n).
    pub fn queue_position(&self, name: &str, id: &str) -> Result<usize> {
        let now = self.inner().begin();
        self.run(now, &[self.queue_shard(name)], |txn| {
            let Some(q) = txn.queue(name)? else { return Ok(Err(Error::QueueNotFound)) };
            Ok(q.position(txn.key(id)).ok_or(Error::QueueCallNotFound))
        })
    }

    /// Changes `keep_after_hangup` and/or the priority of a member.
    pub fn update_queue_call(&self, name: &str, id: &str, update: &QueueCallUpdate) -> Result<QueueCallInfo> {
        let priority = update.validate()?;
        let now = self.inner().begin();
        self.run(now, &[self.queue_shard(name)], |txn| {
            let Some(q) = txn.queue(name)? else { return Ok(Err(Error::QueueNotFound)) };
            let key = txn.key(id);
            if !q.contains(key) {
                return Ok(Err(Error::QueueCallNotFound));
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
            Ok(Ok(q.call_snapshot(pos, q.member(key).expect("checked"), now)))
        })
    }

    /// Removes a member: a live call stays active (`call.dequeued`, reason `leave`); a dead
    /// kept call is dropped silently.
    pub fn remove_queue_call(&self, name: &str, id: &str) -> Result<()> {
        let now = self.inner().begin();
        self.run(now, &[self.queue_shard(name), self.call_shard(id)], |txn| {
            let Some(q) = txn.queue(name)? else { return Ok(Err(Error::QueueNotFound)) };
            let Some(m) = q.member(txn.key(id)) else { return Ok(Err(Error::QueueCallNotFound)) };
            let (ident, alive, name) = (m.call.clone(), m.alive, q.name.clone());
            txn.remove_member(&ident, &name, alive.then_some(DequeueReason::Leave));
            Ok(Ok(()))
        })
    }
}

// ---------------------------------------------------------------------------------------
// Timers.
// ---------------------------------------------------------------------------------------

/// Drops from the front of a tenant's ended calls those the retention time has passed:
/// their own timers forget them (or keep them while they are dead queue members).
fn prune_ended(ended: &mut VecDeque<(Timestamp, Arc<CallIdentity>)>, now: Timestamp, retention: Duration) {
    while ended.front().is_some_and(|(at, _)| at.saturating_add(retention) <= now) {
        ended.pop_front();
    }
}

/// Forgets the longest-ended calls of a tenant while it keeps more than its cap of ended
/// calls. A call still kept in a queue after hangup is not forgotten (it leaves the list; its
/// own timer keeps it while it is a member). Runs with no lock held.
pub(crate) fn forget_excess_ended(inner: &Inner, tenant: &TenantState, now: Timestamp) {
    let cap = inner.config.max_ended_calls;
    loop {
        let oldest = {
            let mut ended = tenant.ended.lock();
            if ended.len() <= cap {
                return;
            }
            ended.pop_front()
        };
        let Some((_, call)) = oldest else { return };
        let shard = inner.shards.of_hash(call.key_hash);
        Txn::run(inner, tenant, now, &[shard], |txn| {
            let forgettable = txn
                .call(call.key())?
                .is_some_and(|r| Arc::ptr_eq(&r.ident, &call) && r.is_ended() && r.queue().is_none());
            if forgettable {
                txn.remove_call(call.key());
            }
            Ok(())
        });
    }
}

/// Applies deadlines of one queue, each at its own instant, in the given order, in one
/// transaction; returns how many took their member out. A deadline does nothing when the
/// member left since or was enqueued again with another deadline.
pub(crate) fn fire_deadlines(
    inner: &Inner,
    tenant: &TenantState,
    queue: &QueueInstance,
    batch: &[(Timestamp, Arc<CallIdentity>)],
) -> usize {
    let Some(&(first_at, _)) = batch.first() else { return 0 };
    let shards = &inner.shards;
    Txn::run(inner, tenant, first_at, &[shards.of_hash(queue.key_hash)], |txn| {
        // Check every deadline (taking the locks of the calls) before changing anything.
        // A member re-enqueued within the same instant left equal timers: it goes once.
        let mut due = Vec::with_capacity(batch.len());
        let mut taken = hashbrown::HashSet::with_capacity(batch.len());
        if let Some(q) = txn.queue(&queue.name)?.filter(|q| q.id == queue.id) {
            for (at, call) in batch {
                if q.member_of(call).is_some_and(|m| m.deadline == Some(*at))
                    && taken.insert(Arc::as_ptr(call))
                {
                    due.push((*at, call));
                }
            }
        }
        for (_, call) in &due {
            txn.need_call(call.key())?;
        }
        for (at, call) in &due {
            txn.now = *at;
            txn.leave(call, &queue.name, DequeueReason::Timeout);
        }
        Ok(due.len())
    })
}

/// An idle check of a queue, at its own instant `at`: deletes the queue if it is an auto
/// queue left empty and unchanged for `queue_idle_ttl`; returns whether it did.
pub(crate) fn fire_idle(inner: &Inner, tenant: &TenantState, at: Timestamp, queue: &QueueInstance) -> bool {
    let ttl = inner.config.queue_idle_ttl;
    Txn::run(inner, tenant, at, &[inner.shards.of_hash(queue.key_hash)], |txn| {
        let Some(q) = txn.queue(&queue.name)?.filter(|q| q.id == queue.id && q.idle_timer == Some(at)) else {
            return Ok(false);
        };
        let (empty_auto, idle_until) = (q.is_empty() && !q.explicit, q.updated_at.saturating_add(ttl));
        txn.queue_mut(&queue.name).idle_timer = None;
        if !empty_auto {
            return Ok(false); // the next time it empties sets a new timer
        }
        if idle_until <= at {
            txn.delete_queue(&queue.name, QueueDeletedReason::Idle);
            return Ok(true);
        }
        txn.arm_idle_timer_at(&queue.name, idle_until);
        Ok(false)
    })
}

/// The retention of an ended call ran out at `at`: forgets it (or keeps it a while longer
/// while it is still a dead member of a queue); returns whether it was forgotten.
pub(crate) fn fire_forget(
    inner: &Inner,
    tenant: &TenantState,
    at: Timestamp,
    call: &Arc<CallIdentity>,
) -> bool {
    let retention = inner.config.ended_call_retention;
    let shard = inner.shards.of_hash(call.key_hash);
    Txn::run(inner, tenant, at, &[shard], |txn| {
        let Some(rec) = txn.call(call.key())? else { return Ok(false) };
        let Some(end) = rec.end_time else { return Ok(false) };
        if end.saturating_add(retention) > at {
            return Ok(false);
        }
        if rec.queue().is_some() {
            // Still a dead member of a queue: keep it readable a while longer.
            let timer = Timer::Forget { tenant: tenant.index, call: call.clone() };
            txn.schedule(shard, at.saturating_add(retention), timer);
            return Ok(false);
        }
        txn.remove_call(call.key());
        prune_ended(&mut tenant.ended.lock(), at, retention);
        Ok(true)
    })
}
