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

use crate::bus::{Listeners, Room};
use crate::call::{CallId, CallIdentity, CallInfo, CallRecord, Link, new_call_control_id};
use crate::clock::Timestamp;
use crate::engine::{Engine, Inner, Tenant};
use crate::error::{BatchError, CallbackInfo, Error, Result};
use crate::event::{DequeueReason, Fact, HangupSource, QueueDeletedReason};
use crate::journal::{Change, Journal, Record, ReplayError, Replaying};
use crate::params::{
    BridgeParams, BridgeTarget, CommandOptions, DEFAULT_EXPLICIT_QUEUE_SIZE, DialParams, EnqueueParams, Page,
    PageRequest, QueueCallUpdate, TransferParams, ValidEnqueue, validate_max_size, validate_queue_name,
};
use crate::queue::{Queue, QueueCallInfo, QueueInfo};
use crate::slab::Handle;
use crate::state::{JoinRun, Left, Locked, TenantCore, TenantState, Txn};
use crate::timers::Timer;

/// What a command knows of its call once it passed the common checks: its slot and its link.
#[derive(Clone, Copy)]
struct CallView {
    ix: u32,
    link: Link,
}

impl CallView {
    const fn queue(&self) -> Option<u32> {
        match &self.link {
            Link::Queued(m) => Some(m.queue),
            _ => None,
        }
    }
}

/// A call's identity (its id: one the client gave, with its hash, or one the engine made,
/// see `call`).
fn new_identity(
    txn: &mut Txn<'_>,
    id: CallId,
    from: &str,
    to: &str,
    connection_id: Arc<str>,
    webhook_url: Option<&str>,
) -> Arc<CallIdentity> {
    let now = txn.now;
    Arc::new(CallIdentity {
        call_control_id: id,
        call_leg_id: txn.draw_uuid(),
        call_session_id: txn.draw_uuid(),
        connection_id,
        from: from.into(),
        to: to.into(),
        start_time: now,
        webhook_url: webhook_url.map(Into::into),
    })
}

// ---------------------------------------------------------------------------------------
// Building blocks. The checks come first; the changes run after every check passed.
// ---------------------------------------------------------------------------------------

impl Txn<'_> {
    /// The call a command acts on: `None` for a repeated `command_id` (the command then
    /// answers success and changes nothing).
    #[inline]
    fn target(&self, id: &str, command_id: Option<&str>) -> Result<Option<CallView>> {
        // `let else`, not `ok_or`: an error built in advance is dropped on the common path.
        let Some((ix, rec)) = self.call_by_id(id) else { return Err(Error::CallNotFound) };
        if command_id.is_some_and(|c| rec.saw_command(c, self.now)) {
            return Ok(None);
        }
        if rec.is_ended() {
            return Err(Error::CallEnded { callback: None });
        }
        Ok(Some(CallView { ix, link: rec.link }))
    }

    /// The command is accepted: store its client state and remember its command id.
    /// Inlined: most commands carry neither, and then there is nothing to store (the
    /// command's next change takes its number).
    #[inline]
    fn accept(&mut self, call: u32, opts: &CommandOptions) {
        if opts.client_state.is_some() || opts.command_id.is_some() {
            self.store_options(call, opts);
        }
    }

    fn store_options(&mut self, call: u32, opts: &CommandOptions) {
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
    fn leave(&mut self, call: u32, reason: DequeueReason) {
        self.remove_member(call, Some(reason));
    }

    /// Takes a call out of its queue; `reason: None` drops a dead member without an event.
    fn remove_member(&mut self, call: u32, reason: Option<DequeueReason>) {
        let Left { queue, departure, ended, idle_check } = self.leave_queue(call, reason);
        if ended | idle_check {
            self.after_rare_departure(call, queue, ended, idle_check);
        }
        if let Some(reason) = reason {
            self.emit_with(Some(call), |core| Fact::CallDequeued {
                queue: &core.queues.at(queue).name,
                queue_position: departure.position,
                reason,
                wait_time_secs: departure.wait_time_secs(),
            });
        }
    }

    /// What a departure rarely leaves to do: the member had ended, or its queue wants an
    /// idle check. Out of line, so that a departure saves no registers for it.
    #[cold]
    #[inline(never)]
    fn after_rare_departure(&mut self, call: u32, queue: u32, ended: bool, idle_check: bool) {
        if ended {
            // A dead member leaving: kept from now on like any ended call, under the cap,
            // and forgotten one retention period after it left.
            self.note_ended(call);
            self.schedule_forget(call);
        }
        if idle_check {
            self.set_idle_timer(queue);
        }
    }

    /// An auto queue became empty (or changed while empty): make sure a timer will check it
    /// for idleness.
    fn arm_idle_timer(&mut self, queue: u32) {
        if self.queue_at(queue).wants_idle_check() {
            self.set_idle_timer(queue);
        }
    }

    /// Sets the idle check of a queue that wants one ([`Queue::wants_idle_check`]). One
    /// pending timer per queue is enough (a queue emptied by every bridge finds one): when
    /// it fires early (the queue changed since) it sets itself again for `updated_at +
    /// queue_idle_ttl`.
    fn set_idle_timer(&mut self, queue: u32) {
        let at = self.now.saturating_add(self.config().queue_idle_ttl);
        self.arm_idle_timer_at(queue, at);
    }

    fn arm_idle_timer_at(&mut self, queue: u32, at: Timestamp) {
        if let Some(queue) = self.mark_idle_check(queue, Some(at)) {
            self.schedule(at, Timer::Idle { queue });
        }
    }

    /// Ends a call: `call.hangup`, and it will be forgotten after the retention time (or
    /// earlier, past the tenant's cap on kept ended calls). Out of line: the leg a bridge
    /// leaves is usually parked, and `detach` (where it is inlined through
    /// `release_partner`) then saves and restores no registers for it.
    #[inline(never)]
    fn end_call(&mut self, call: u32, source: HangupSource) {
        let now = self.now;
        let rec = self.call_mut(call);
        rec.end(now);
        let kept_in_queue = rec.queue().is_some();
        self.release_call();
        if !kept_in_queue {
            // A dead member joins the kept ended calls, and gets its forget timer, when it
            // leaves its queue: no timer has to wake up while it waits there.
            self.note_ended(call);
            self.schedule_forget(call);
        }
        self.emit(Some(call), Fact::CallHangup { source });
    }

    fn schedule_forget(&mut self, call: u32) {
        let at = self.now.saturating_add(self.config().ended_call_retention);
        let call = self.call_handle(call);
        self.schedule(at, Timer::Forget { call });
    }

    /// Adds an ended call to the tenant's list in end order, dropping from its front what
    /// the retention time has passed (forgotten by their timers, or about to be).
    fn note_ended(&mut self, call: u32) {
        let (now, retention) = (self.now, self.config().ended_call_retention);
        let handle = self.call_handle(call);
        let ended = self.ended_mut();
        prune_ended(ended, now, retention);
        ended.push_back((now, handle));
        self.ended_calls = true;
    }

    /// docs/behaviour.md §2.5: the leg that stays is parked if it asked for it, else hung up.
    fn release_partner(&mut self, partner: u32) {
        let rec = self.call_mut(partner);
        let park = matches!(rec.link, Link::Bridged { park_after_unbridge: true, .. });
        rec.link = Link::None;
        if !park {
            self.end_call(partner, HangupSource::Callee);
        }
    }

    /// Frees a call from its queue (with `reason`) and from its bridge.
    fn detach(&mut self, call: u32, reason: DequeueReason) {
        match self.call_at(call).link {
            Link::None => {}
            Link::Queued(_) => self.leave(call, reason),
            Link::Bridged { with, .. } => {
                self.call_mut(call).link = Link::None;
                self.release_partner(with);
            }
        }
    }

    /// Bridges call `a` (as the command found it, unchanged since) with call `b` (`b_head`:
    /// the head of a queue, so a member, which leaves it with no look at its link first).
    /// Inlined: with two callers (bridge, transfer) the compiler kept it out of line, a
    /// call whose frame cost a bridge ~20 instructions.
    #[inline]
    fn bridge_pair(&mut self, a: CallView, b: u32, b_head: bool, park_a: bool) {
        if !matches!(a.link, Link::None) {
            // Known from the lookup: the caller of a bridge is usually in no queue or bridge.
            self.detach(a.ix, DequeueReason::Bridged);
        }
        if b_head {
            // Still a member: `a` was in another queue, or in none.
            self.leave(b, DequeueReason::Bridged);
        } else {
            self.detach(b, DequeueReason::Bridged);
        }
        let a = a.ix;
        self.call_mut(a).link = Link::Bridged { with: b, park_after_unbridge: park_a };
        self.call_mut(b).link = Link::Bridged { with: a, park_after_unbridge: false };
        self.emit(Some(a), Fact::CallBridged);
        self.emit(Some(b), Fact::CallBridged);
    }

    /// Adds a call and says so; returns its slot.
    fn create_call(&mut self, ident: Arc<CallIdentity>, client_state: Option<&str>) -> u32 {
        let ix = self.insert_call(CallRecord::new(ident, client_state.map(Into::into)));
        self.emit(Some(ix), Fact::CallInitiated);
        self.emit(Some(ix), Fact::CallAnswered);
        ix
    }

    /// Makes a queue, unless the tenant has its cap of queues (then nothing changes);
    /// returns its slot.
    fn create_queue(&mut self, name: &str, max_size: usize, explicit: bool) -> Result<u32> {
        let name: Arc<str> = name.into();
        let id = self.draw_uuid();
        let q = Queue::unallocated(self.shared.queue_hash(&name), name, id, max_size, explicit, self.now)
            .with_room();
        let ix = self.insert_queue(q)?;
        self.emit_with(None, |core| {
            let q = core.queues.at(ix);
            Fact::QueueCreated { queue: &q.name, queue_id: q.id }
        });
        Ok(ix)
    }

    fn delete_queue(&mut self, queue: u32, reason: QueueDeletedReason) {
        let q = self.remove_queue(queue);
        self.emit(None, Fact::QueueDeleted { queue: &q.name, queue_id: q.id, reason });
    }
}

impl Txn<'_> {
    /// One enqueue command on a locked tenant ([`Tenant::enqueue`], and each call of
    /// [`Tenant::enqueue_many`] while someone listens); `find_queue` gives the queue's slot
    /// and record, if it exists. Returns the slot of the queue the call joined (`None`: a repeated
    /// `command_id`, nothing done).
    #[inline]
    fn enqueue(
        &mut self,
        id: &str,
        options: &CommandOptions,
        v: &ValidEnqueue<'_>,
        find_queue: impl for<'t> FnOnce(&'t Self) -> Option<(u32, &'t Queue)>,
    ) -> Result<Option<u32>> {
        let now = self.now;
        let Some((call, queue)) = self.enter_queue(id, options, v, find_queue, 0)? else { return Ok(None) };
        let max_wait = v.max_wait_secs.map(Duration::from_secs);
        let m = self.join_queue(queue, call, v.priority, v.keep_after_hangup, max_wait);
        self.emit_with(Some(call), |core| {
            let q = core.queues.at(queue);
            Fact::CallEnqueued {
                queue: &q.name,
                current_position: q.position(&m),
                queue_avg_wait_time_secs: q.average_wait_secs(now),
            }
        });
        self.arm_deadline(queue, call, m.deadline(), |txn| txn.queue_at(queue).total_enqueued());
        Ok(Some(queue))
    }

    /// The same command as [`Txn::enqueue`] for a call of a batch while nobody listens (no
    /// event reads the queue between its calls): the call joins `run` (see
    /// [`crate::state::JoinRun`]), which the batch admits before anything else reads the
    /// queue; `room`: how many calls the batch still holds, this one included.
    #[inline]
    fn enqueue_in_run(
        &mut self,
        id: &str,
        options: &CommandOptions,
        v: &ValidEnqueue<'_>,
        run: &mut Option<JoinRun>,
        room: usize,
    ) -> Result<Option<u32>> {
        let pending = run.as_ref().map_or(0, JoinRun::len);
        let queue = run.as_ref().map(|r| r.queue);
        let found = self.enter_queue(id, options, v, |txn| txn.queue_at_or_named(queue, v.queue), pending)?;
        let Some((call, queue)) = found else {
            return Ok(None);
        };
        let max_wait = v.max_wait_secs.map(Duration::from_secs);
        let (m, arrival) = self.join_run(run, queue, call, v.priority, v.keep_after_hangup, max_wait, room);
        self.arm_deadline(queue, call, m.deadline(), |_| arrival);
        Ok(Some(queue))
    }

    /// The checks of an enqueue, and its changes up to joining the queue (made if needed,
    /// `pending` calls of a run already in it): returns the call's and the queue's slots
    /// (`None`: a repeated `command_id`, nothing done).
    #[inline]
    fn enter_queue(
        &mut self,
        id: &str,
        options: &CommandOptions,
        v: &ValidEnqueue<'_>,
        find_queue: impl for<'t> FnOnce(&'t Self) -> Option<(u32, &'t Queue)>,
        pending: usize,
    ) -> Result<Option<(u32, u32)>> {
        let Some(call) = self.target(id, options.command_id.as_deref())? else { return Ok(None) };
        let existing = find_queue(self);
        if call.queue().is_some() && call.queue() == existing.map(|(q, _)| q) {
            return Err(Error::AlreadyInQueue);
        }
        if existing.is_some_and(|(_, q)| q.is_full_with(pending)) {
            return Err(Error::QueueFull);
        }
        // Checked; the first change (the new queue) may still be refused by the cap.
        let queue = match existing {
            Some((q, _)) => q,
            None => self.create_queue(v.queue, v.max_size, false)?,
        };
        self.accept(call.ix, options);
        self.detach(call.ix, DequeueReason::Leave);
        Ok(Some((call.ix, queue)))
    }

    /// Sets the timer of a member's `max_wait_time_secs`, if it has one (`arrival` gives its
    /// arrival number, asked only then).
    fn arm_deadline(
        &mut self,
        queue: u32,
        call: u32,
        deadline: Option<Timestamp>,
        arrival: impl FnOnce(&Self) -> u64,
    ) {
        if let Some(at) = deadline {
            let arrival = arrival(self);
            let timer =
                Timer::Deadline { queue: self.queue_handle(queue), call: self.call_handle(call), arrival };
            self.schedule(at, timer);
        }
    }
}

enum BridgePlan {
    /// With this call; `head`: the head of a queue (alive).
    With {
        call: u32,
        head: bool,
    },
    AlreadyBridged,
    DeadHead(u32),
}

// ---------------------------------------------------------------------------------------
// Commands.
// ---------------------------------------------------------------------------------------

/// How many calls [`Tenant::enqueue_many`] enqueues per hold of the tenant's lock: other
/// commands of the tenant wait at most this many enqueues (tens of microseconds).
pub const ENQUEUE_MANY_CHUNK: usize = 256;

impl Tenant {
    fn inner(&self) -> &Inner {
        &self.engine.inner
    }

    /// The time a command runs at, read once: the clock's, or the record's in a replay.
    /// Inlined: out of line (as the compiler left it in a caller of several commands) its
    /// call cost more than its two tests and the coarse clock's one load.
    #[inline(always)]
    fn begin(&self) -> Timestamp {
        match &self.replaying {
            Some(r) => r.at,
            None => self.inner().begin(),
        }
    }

    /// The journal records go to: none while replaying (the records are already there).
    fn journal(&self) -> Option<&dyn Journal> {
        if self.replaying.is_some() { None } else { self.inner().journal.as_deref() }
    }

    /// Runs one command at `now` (read before, with [`Tenant::begin`]): locks the tenant
    /// once, fires its timers due by `now`, runs `body`, records the change (`change` says
    /// what ran; asked only when there is a journal and the command changed something),
    /// publishes the events (those of the timers first) and unlocks.
    fn run<R>(
        &self,
        now: Timestamp,
        change: impl FnOnce() -> Change,
        body: impl FnOnce(&mut Txn<'_>) -> R,
    ) -> R {
        let inner = self.inner();
        let journal = self.journal();
        let mut core = self.state.lock();
        let listening = inner.bus.listens(&self.state.name, &mut core.listeners);
        if core.next_due() <= now.as_micros() {
            fire_due(inner, journal, &self.state, &mut core, now, listening);
        }
        // The state for the command's `Txn`, the channels apart: a channel lent to the command
        // is borrowed from them. None is lent while a journal records: no code but the
        // engine's runs while a command holds a channel.
        let Locked { core, listeners } = &mut *core;
        let (mut room, mut events) = (None, None);
        if listening {
            let (name, key) = (&*self.state.name, self.state.event_key);
            let only = if journal.is_none() { listeners.only() } else { None };
            events = Some(room.insert(Room::new(only, name, key, || core.take_event_list())).events());
        }
        let mut replay = self.replaying.as_ref().map(|r| r.draws.clone().into_iter());
        let mut txn = Txn::new(&inner.shared, core, now, events, replay.as_mut());
        let r = body(&mut txn);
        if let Some(journal) = journal {
            record(journal, &self.state.name, &mut txn, change);
        }
        let seq = settle_open(&mut txn);
        if let Some(room) = room {
            // Under the lock: a tenant's events reach subscribers in the order of its changes.
            publish_room(inner, &self.state, core, listeners, room, seq.map(|seq| (seq, now)));
        }
        r
    }

    /// Runs a command that only reads (the timers it finds due are recorded by themselves).
    fn read<R>(&self, now: Timestamp, body: impl FnOnce(&mut Txn<'_>) -> R) -> R {
        self.run(
            now,
            || {
                debug_assert!(false, "a read changed the state");
                Change::Timers
            },
            body,
        )
    }

    /// Applies record `seq` of this tenant, as a [`Journal`] received it, through the same
    /// rules that made it: at the record's time, with the record's random values, making
    /// the same change, the same ids and the same events (with the same event ids). Records
    /// are replayed in sequence order from the tenant's next number on; the later records
    /// of one firing of timers are made by its first, and are accepted again.
    ///
    /// # Errors
    /// [`ReplayError`] when the record is not the next one, or when replaying it did not
    /// make the change numbered `seq`: the state after it cannot be trusted.
    pub fn replay(&self, seq: u64, record: &[u8]) -> Result<(), ReplayError> {
        let record = Record::decode(record)?;
        let last = self.last_seq();
        if seq <= last && record.change == Change::Timers {
            return Ok(());
        }
        if seq != last + 1 {
            return Err(ReplayError::OutOfOrder { got: seq, last });
        }
        let at = record.at();
        let t = Self {
            engine: self.engine.clone(),
            state: self.state.clone(),
            replaying: Some(Arc::new(Replaying { at, draws: record.draws })),
        };
        // A command's own answer does not matter here (some change state and still answer
        // an error, like a bridge that finds a dead head): the number it took does.
        let _ = match &record.change {
            Change::Dial(p) => t.dial(p).map(drop),
            Change::DialWithCommandId { params, command_id } => {
                t.dial(&DialParams { command_id: Some(command_id.clone()), ..params.clone() }).map(drop)
            }
            Change::Enqueue { call, params } => t.enqueue(call, params),
            Change::LeaveQueue { call, options } => t.leave_queue(call, options),
            Change::Bridge { call, params } => t.bridge(call, params),
            Change::Hangup { call, options } => t.hangup(call, options),
            Change::Transfer { call, params } => t.transfer(call, params).map(drop),
            Change::CreateQueue { name, max_size } => t.create_queue(name, *max_size).map(drop),
            Change::UpdateQueue { name, max_size } => t.update_queue(name, *max_size).map(drop),
            Change::DeleteQueue { name } => t.delete_queue(name),
            Change::UpdateQueueCall { queue, call, update } => {
                t.update_queue_call(queue, call, update).map(drop)
            }
            Change::RemoveQueueCall { queue, call } => t.remove_queue_call(queue, call),
            Change::Timers => {
                let inner = self.inner();
                let mut core = self.state.lock();
                let listening = inner.bus.listens(&self.state.name, &mut core.listeners);
                fire_due(inner, None, &self.state, &mut core, at, listening);
                Ok(())
            }
        };
        let reached = self.last_seq();
        let made = if record.change == Change::Timers { reached >= seq } else { reached == seq };
        if made { Ok(()) } else { Err(ReplayError::Diverged { seq, change: record.change.name(), reached }) }
    }

    /// Creates a call in state `active` with fresh ids (docs/behaviour.md §2.1, dial). A
    /// repeat of an accepted `command_id` within 60 s creates nothing and answers the call
    /// the first dial made (`90015` if that call is forgotten since).
    pub fn dial(&self, p: &DialParams) -> Result<CallInfo> {
        let (to, from, connection_id) = p.validate()?;
        let now = self.begin();
        let hash = p.call_control_id.as_deref().map(|id| self.inner().shared.call_hash(id));
        self.run(
            now,
            || match &p.command_id {
                None => Change::Dial(p.clone()),
                Some(command_id) => Change::DialWithCommandId {
                    params: DialParams { command_id: None, ..p.clone() },
                    command_id: command_id.clone(),
                },
            },
            |txn| {
                if let Some(first) = p.command_id.as_deref().and_then(|c| txn.dialled_by(c)) {
                    return first.map(|ix| txn.core().call_info(ix, now)).ok_or(Error::CallNotFound);
                }
                // The random values are drawn under the lock, in a fixed order (id, leg, session),
                // so that the record holds them in the order a replay asks for them.
                let id = match (p.call_control_id.as_deref(), hash) {
                    (Some(id), Some(hash)) => CallId::client(id, hash),
                    _ => new_call_control_id(|| txn.draw_uuid()),
                };
                let mut ident =
                    new_identity(txn, id, from, to, connection_id.into(), p.webhook_url.as_deref());
                if hash.is_some() && txn.find_call(&ident.call_control_id).is_some() {
                    return Err(Error::CallExists);
                }
                txn.reserve_call()?;
                if hash.is_none() {
                    txn.stamp_new_id(&mut ident);
                }
                let ix = txn.create_call(ident, p.client_state.as_deref());
                if let Some(command_id) = &p.command_id {
                    txn.remember_dial(command_id, ix);
                }
                Ok(txn.core().call_info(ix, now))
            },
        )
    }

    /// A call's status (`90015` when unknown or forgotten).
    pub fn call(&self, id: &str) -> Result<CallInfo> {
        let now = self.begin();
        self.read(now, |txn| {
            txn.find_call(id).map(|ix| txn.core().call_info(ix, now)).ok_or(Error::CallNotFound)
        })
    }

    /// Puts the call at the end of a queue (of its priority band), making the queue if
    /// needed (docs/behaviour.md §2.2, enqueue).
    pub fn enqueue<S: AsRef<str>>(&self, id: &str, p: &EnqueueParams<S>) -> Result<()> {
        let v = p.validate()?;
        let now = self.begin();
        self.run(
            now,
            || Change::Enqueue { call: id.into(), params: p.to_owned_params() },
            |txn| txn.enqueue(id, &p.options, &v, |txn| txn.queue_by_name(v.queue)).map(drop),
        )
    }

    /// Enqueues each call of `ids`, in order, into one queue: exactly the sequence of
    /// [`Tenant::enqueue`] commands with these parameters (each its own command, with its own
    /// sequence number, events and journal record), run with fewer locks. Stops at the first refusal: the calls
    /// before it stay enqueued, the refused one and those after it are not touched, and the
    /// error gives the refused one's index. Returns how many commands succeeded: `ids.len()`.
    ///
    /// The parameters are validated once and the queue found once per lock hold; the
    /// queue makes room for the rest at once (as far as its `max_size` allows), instead of
    /// growing step by step. While nobody listens for events, the calls of a lock hold join
    /// the queue as a run: each its own command, and the queue's order, counts and figures
    /// brought up to date for all of them at the end of the hold. The lock
    /// is taken once per chunk of [`ENQUEUE_MANY_CHUNK`] calls, so that other commands of
    /// the tenant wait at most one chunk; a chunk's commands share one clock reading, and
    /// a timer due by then fires before the next command, as between single commands.
    ///
    /// ```
    /// use waitline::{DialParams, Engine, EnqueueParams};
    ///
    /// let t = Engine::default().default_tenant();
    /// let dial = || t.dial(&DialParams::new("+1", "+2", "app")).map(|c| c.call_control_id);
    /// let ids = [dial()?, dial()?, dial()?];
    /// assert_eq!(t.enqueue_many(&ids, &EnqueueParams::new("support")), Ok(3));
    /// let refused = t.enqueue_many(&["nope", &ids[0]], &EnqueueParams::new("other")).unwrap_err();
    /// assert_eq!((refused.index, refused.error), (0, waitline::Error::CallNotFound));
    /// # Ok::<(), waitline::Error>(())
    /// ```
    pub fn enqueue_many<S: AsRef<str>, Q: AsRef<str>>(
        &self,
        ids: &[S],
        p: &EnqueueParams<Q>,
    ) -> Result<usize, BatchError> {
        if ids.is_empty() {
            // No command at all, as with no single enqueue: nothing is validated.
            return Ok(0);
        }
        let v = p.validate().map_err(|error| BatchError { index: 0, error })?;
        if self.replaying.is_some() {
            // A replay applies recorded single enqueues; a batch is never one of them, but a
            // handle that replays would run it as those, with the record's clock and values.
            for (index, id) in ids.iter().enumerate() {
                self.enqueue(id.as_ref(), p).map_err(|error| BatchError { index, error })?;
            }
            return Ok(ids.len());
        }
        let inner = self.inner();
        let journal = self.journal();
        let mut done = 0;
        let mut reserved = false;
        while done < ids.len() {
            let chunk = &ids[done..ids.len().min(done + ENQUEUE_MANY_CHUNK)];
            // As `run`, with one `Txn` (journal record, settling) per command.
            let now = self.begin();
            let mut core = self.state.lock();
            let listening = inner.bus.listens(&self.state.name, &mut core.listeners);
            if core.next_due() <= now.as_micros() {
                fire_due(inner, journal, &self.state, &mut core, now, listening);
            }
            let mut events = listening.then(|| core.take_event_list());
            let mut queue = None;
            let mut run = None;
            let mut refused = None;
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 && core.next_due() <= now.as_micros() {
                    // A timer came due (an idle queue with no idle time): the next hold
                    // fires it before the next command, as the next single command would.
                    break;
                }
                let mut txn = Txn::new(&inner.shared, &mut core, now, events.as_deref_mut(), None);
                let id = id.as_ref();
                let r = if listening {
                    // Each event reports the queue as its command left it.
                    txn.enqueue(id, &p.options, &v, |txn| txn.queue_at_or_named(queue, v.queue))
                } else {
                    txn.enqueue_in_run(id, &p.options, &v, &mut run, ids.len() - done)
                };
                if let Some(journal) = journal {
                    record(journal, &self.state.name, &mut txn, || Change::Enqueue {
                        call: id.into(),
                        params: p.to_owned_params(),
                    });
                }
                settle(&mut txn);
                match r {
                    Ok(q) => {
                        queue = q.or(queue);
                        done += 1;
                        if let (false, true, Some(q)) = (reserved, listening, queue) {
                            // Room for the rest of the batch at once (a run makes its own).
                            reserved = true;
                            core.reserve_members(q, ids.len() - done);
                        }
                    }
                    Err(error) => {
                        refused = Some(error);
                        break;
                    }
                }
            }
            if let Some(run) = run {
                core.admit_run(run, now);
            }
            if let Some(events) = events {
                let Locked { core, listeners } = &mut *core;
                publish_staged(inner, &self.state, core, listeners, events);
            }
            drop(core);
            if let Some(error) = refused {
                return Err(BatchError { index: done, error });
            }
        }
        Ok(done)
    }

    /// The call leaves its queue and stays active (`95002` when in none).
    pub fn leave_queue(&self, id: &str, opts: &CommandOptions) -> Result<()> {
        opts.validate()?;
        let now = self.begin();
        self.run(
            now,
            || Change::LeaveQueue { call: id.into(), options: opts.clone() },
            |txn| {
                let Some(call) = txn.target(id, opts.command_id.as_deref())? else { return Ok(()) };
                call.queue().ok_or(Error::NotInQueue)?;
                txn.accept(call.ix, opts);
                txn.leave(call.ix, DequeueReason::Leave);
                Ok(())
            },
        )
    }

    /// Bridges the call with another call or with the head of a queue (docs/behaviour.md §2.4, bridge).
    pub fn bridge<S: AsRef<str>>(&self, id: &str, p: &BridgeParams<S>) -> Result<()> {
        let (target, park) = p.validate()?;
        let now = self.begin();
        self.run(
            now,
            || Change::Bridge { call: id.into(), params: p.to_owned_params() },
            |txn| {
                let Some(a) = txn.target(id, p.options.command_id.as_deref())? else { return Ok(()) };
                let plan = match target {
                    BridgeTarget::Queue(qname) => {
                        let queue = txn.queue_by_name(qname);
                        if a.queue().is_some() && a.queue() == queue.map(|(q, _)| q) {
                            return Err(Error::out_of_range(
                                "queue",
                                "A call cannot be bridged with the queue it is waiting in.",
                            ));
                        }
                        let Some(head) = queue.and_then(|(_, q)| q.head()) else {
                            return Err(Error::QueueEmpty);
                        };
                        if txn.call_at(head).membership().is_some_and(|m| m.alive) {
                            BridgePlan::With { call: head, head: true }
                        } else {
                            BridgePlan::DeadHead(head)
                        }
                    }
                    BridgeTarget::Call(b) => {
                        if *b == *txn.call_at(a.ix).ident.call_control_id {
                            return Err(Error::out_of_range(
                                "call_control_id",
                                "A call cannot be bridged with itself.",
                            ));
                        }
                        let (bix, rec) = txn.call_by_id(b).ok_or(Error::CallNotFound)?;
                        if rec.is_ended() {
                            return Err(Error::CallEnded { callback: None });
                        }
                        if rec.bridged_with() == Some(a.ix) {
                            BridgePlan::AlreadyBridged
                        } else {
                            BridgePlan::With { call: bix, head: false }
                        }
                    }
                };
                match plan {
                    BridgePlan::With { call: b, head } => {
                        txn.accept(a.ix, &p.options);
                        txn.bridge_pair(a, b, head, park);
                        Ok(())
                    }
                    BridgePlan::AlreadyBridged => {
                        txn.accept(a.ix, &p.options);
                        if let Link::Bridged { park_after_unbridge, .. } = &mut txn.call_mut(a.ix).link {
                            *park_after_unbridge = park;
                        }
                        Ok(())
                    }
                    BridgePlan::DeadHead(head) => {
                        // The head is removed even though the bridge fails (docs/behaviour.md §2).
                        txn.leave(head, DequeueReason::Hangup);
                        let rec = txn.call_at(head);
                        let ident = &rec.ident;
                        Err(Error::CallEnded {
                            callback: Some(Box::new(CallbackInfo {
                                call_control_id: ident.call_control_id.as_ref().into(),
                                from: ident.from.clone(),
                                to: ident.to.clone(),
                                connection_id: ident.connection_id.clone(),
                                client_state: rec.client_state.clone(),
                            })),
                        })
                    }
                }
            },
        )
    }

    /// Hangs the call up (docs/behaviour.md §2.6, hangup).
    pub fn hangup(&self, id: &str, opts: &CommandOptions) -> Result<()> {
        opts.validate()?;
        let now = self.begin();
        self.run(
            now,
            || Change::Hangup { call: id.into(), options: opts.clone() },
            |txn| {
                let Some(call) = txn.target(id, opts.command_id.as_deref())? else { return Ok(()) };
                txn.accept(call.ix, opts);
                let mut partner = None;
                match call.link {
                    Link::None => {}
                    Link::Queued(m) if m.keep_after_hangup => {
                        txn.queue_mut(m.queue).updated_at = now;
                        if let Some(m) = txn.call_mut(call.ix).membership_mut() {
                            m.alive = false;
                        }
                    }
                    Link::Queued(_) => txn.leave(call.ix, DequeueReason::Hangup),
                    Link::Bridged { with, .. } => {
                        txn.call_mut(call.ix).link = Link::None;
                        partner = Some(with);
                    }
                }
                txn.end_call(call.ix, HangupSource::Caller);
                if let Some(p) = partner {
                    txn.release_partner(p);
                }
                Ok(())
            },
        )
    }

    /// Makes a new call to `to` and bridges the call with it (docs/behaviour.md §2.7, transfer). Returns
    /// the new call (the call itself for a repeated `command_id`, which creates nothing).
    pub fn transfer(&self, id: &str, p: &TransferParams) -> Result<CallInfo> {
        let to = p.validate()?;
        let now = self.begin();
        self.run(
            now,
            || Change::Transfer { call: id.into(), params: p.clone() },
            |txn| {
                let Some(call) = txn.target(id, p.options.command_id.as_deref())? else {
                    let ix = txn.find_call(id).expect("found by target");
                    return Ok(txn.core().call_info(ix, now));
                };
                let ident = txn.call_at(call.ix).ident.clone();
                let from = p.from.clone().map_or_else(|| ident.to.clone(), Into::into);
                let new_id = new_call_control_id(|| txn.draw_uuid());
                let mut b = new_identity(
                    txn,
                    new_id,
                    &from,
                    to,
                    ident.connection_id.clone(),
                    ident.webhook_url.as_deref(),
                );
                txn.reserve_call()?;
                txn.accept(call.ix, &p.options);
                txn.stamp_new_id(&mut b);
                let b = txn.create_call(b, None);
                txn.bridge_pair(call, b, false, false);
                Ok(txn.core().call_info(b, now))
            },
        )
    }

    // -----------------------------------------------------------------------------------
    // Queues (docs/behaviour.md §3).
    // -----------------------------------------------------------------------------------

    /// Creates an explicit queue (never idle-collected); `max_size` defaults to 300.
    pub fn create_queue(&self, name: &str, max_size: Option<u32>) -> Result<QueueInfo> {
        validate_queue_name("queue_name", name)?;
        let size = max_size.map_or(Ok(DEFAULT_EXPLICIT_QUEUE_SIZE), validate_max_size)?;
        let now = self.begin();
        self.run(
            now,
            || Change::CreateQueue { name: name.into(), max_size },
            |txn| {
                if txn.find_queue(name).is_some() {
                    return Err(Error::QueueExists);
                }
                let ix = txn.create_queue(name, size, true)?;
                Ok(txn.core().queue_info(ix, now, txn.config().service_level_threshold))
            },
        )
    }

    /// A queue's state and figures.
    pub fn queue(&self, name: &str) -> Result<QueueInfo> {
        let now = self.begin();
        self.read(now, |txn| {
            txn.find_queue(name)
                .map(|ix| txn.core().queue_info(ix, now, txn.config().service_level_threshold))
                .ok_or(Error::QueueNotFound)
        })
    }

    /// The tenant's queues sorted by name, one page.
    pub fn queues(&self, page: PageRequest) -> Result<Page<QueueInfo>> {
        let (number, size) = page.validate()?;
        let now = self.begin();
        self.read(now, |txn| {
            let names = txn.core().queue_names();
            let skip = (number - 1).saturating_mul(size);
            let data = names
                .iter()
                .skip(skip)
                .take(size)
                .filter_map(|n| {
                    txn.find_queue(n)
                        .map(|ix| txn.core().queue_info(ix, now, txn.config().service_level_threshold))
                })
                .collect();
            Ok(Page::new(data, number, size, names.len()))
        })
    }

    /// Sets a queue's `max_size` (1..=1 000 000). Nobody is removed when it drops below the
    /// current size.
    pub fn update_queue(&self, name: &str, max_size: u32) -> Result<QueueInfo> {
        let size = validate_max_size(max_size)?;
        let now = self.begin();
        self.run(
            now,
            || Change::UpdateQueue { name: name.into(), max_size },
            |txn| {
                let ix = txn.find_queue(name).ok_or(Error::QueueNotFound)?;
                let q = txn.queue_mut(ix);
                q.max_size = size;
                q.updated_at = now;
                let snapshot = txn.core().queue_info(ix, now, txn.config().service_level_threshold);
                txn.arm_idle_timer(ix);
                Ok(snapshot)
            },
        )
    }

    /// Deletes an empty queue (`90050` when it has members).
    pub fn delete_queue(&self, name: &str) -> Result<()> {
        let now = self.begin();
        self.run(
            now,
            || Change::DeleteQueue { name: name.into() },
            |txn| {
                let ix = txn.find_queue(name).ok_or(Error::QueueNotFound)?;
                if !txn.queue_at(ix).is_empty() {
                    return Err(Error::QueueNotEmpty);
                }
                txn.delete_queue(ix, QueueDeletedReason::Explicit);
                Ok(())
            },
        )
    }

    /// A queue's members in service order, one page.
    pub fn queue_calls(&self, name: &str, page: PageRequest) -> Result<Page<QueueCallInfo>> {
        let (number, size) = page.validate()?;
        let now = self.begin();
        self.read(now, |txn| {
            let ix = txn.find_queue(name).ok_or(Error::QueueNotFound)?;
            let q = txn.queue_at(ix);
            let from = (number - 1).saturating_mul(size).saturating_add(1);
            let data =
                q.page(from, size).map(|(pos, c)| txn.core().queue_call_info(ix, pos, c, now)).collect();
            Ok(Page::new(data, number, size, q.len()))
        })
    }

    /// The queue's slot and the member's call slot, or the error of a queue-call lookup.
    fn find_member(txn: &Txn<'_>, name: &str, id: &str) -> Result<(u32, u32)> {
        let queue = txn.find_queue(name).ok_or(Error::QueueNotFound)?;
        let call = txn.find_call(id).filter(|&c| txn.core().member(queue, c).is_some());
        Ok((queue, call.ok_or(Error::QueueCallNotFound)?))
    }

    /// One member of a queue (`10005` when the call is not a member).
    pub fn queue_call(&self, name: &str, id: &str) -> Result<QueueCallInfo> {
        let now = self.begin();
        self.read(now, |txn| {
            let (queue, call) = Self::find_member(txn, name, id)?;
            let m = txn.core().member(queue, call).expect("found");
            let pos = txn.queue_at(queue).position(m);
            Ok(txn.core().queue_call_info(queue, pos, call, now))
        })
    }

    /// Just the 1-based position of a member (no snapshot is built): O(log n).
    pub fn queue_position(&self, name: &str, id: &str) -> Result<usize> {
        let now = self.begin();
        self.read(now, |txn| {
            let (queue, call) = Self::find_member(txn, name, id)?;
            Ok(txn.queue_at(queue).position(txn.core().member(queue, call).expect("found")))
        })
    }

    /// Changes `keep_after_hangup` and/or the priority of a member.
    pub fn update_queue_call(&self, name: &str, id: &str, update: &QueueCallUpdate) -> Result<QueueCallInfo> {
        let priority = update.validate()?;
        let now = self.begin();
        self.run(
            now,
            || Change::UpdateQueueCall { queue: name.into(), call: id.into(), update: update.clone() },
            |txn| {
                let (queue, call) = Self::find_member(txn, name, id)?;
                let mut m = *txn.core().member(queue, call).expect("found");
                if let Some(keep) = update.keep_after_hangup {
                    m.keep_after_hangup = keep;
                    txn.queue_mut(queue).updated_at = now;
                }
                if let Some(p) = priority {
                    txn.queue_mut(queue).set_priority(&mut m, p, now);
                }
                txn.call_mut(call).link = Link::Queued(m);
                let pos = txn.queue_at(queue).position(&m);
                Ok(txn.core().queue_call_info(queue, pos, call, now))
            },
        )
    }

    /// Removes a member: a live call stays active (`call.dequeued`, reason `leave`); a dead
    /// kept call is dropped silently.
    pub fn remove_queue_call(&self, name: &str, id: &str) -> Result<()> {
        let now = self.begin();
        self.run(
            now,
            || Change::RemoveQueueCall { queue: name.into(), call: id.into() },
            |txn| {
                let (queue, call) = Self::find_member(txn, name, id)?;
                let alive = txn.core().member(queue, call).is_some_and(|m| m.alive);
                txn.remove_member(call, alive.then_some(DequeueReason::Leave));
                Ok(())
            },
        )
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
        // Passive: maintenance alone does not keep the coarse clock's thread awake.
        let now = inner.clock.now_passive();
        // Reset first: a timer set concurrently lowers it again after this store.
        inner.shared.next_due.store(u64::MAX, std::sync::atomic::Ordering::Release);
        let mut fired = 0;
        for tenant in inner.tenants() {
            let mut core = tenant.lock();
            if core.next_due() <= now.as_micros() {
                let listening = inner.bus.listens(&tenant.name, &mut core.listeners);
                fired += fire_due(inner, inner.journal.as_deref(), &tenant, &mut core, now, listening);
            }
            inner.shared.note_timer(core.next_due());
        }
        fired
    }
}

/// Hands the command's record to the journal, if the command changed anything. Out of line:
/// most engines have no journal, and their commands should not carry this code.
#[cold]
#[inline(never)]
fn record(journal: &dyn Journal, tenant: &str, txn: &mut Txn<'_>, change: impl FnOnce() -> Change) {
    if let Some((seq, draws)) = txn.outcome() {
        let record = Record { at_micros: txn.now.as_micros(), draws, change: change() };
        journal.append(tenant, seq, &record.encode());
    }
}

/// Ends a command or a timer firing: forgets ended calls past the cap (part of the same
/// change), and closes its events, if any, as its batch.
#[inline(always)]
fn settle(txn: &mut Txn<'_>) {
    end_change(txn);
    txn.finish();
}

/// [`settle`] for a command whose events are published at once: they are left open; gives
/// its number (see [`Txn::finish_open`]).
#[inline(always)]
fn settle_open(txn: &mut Txn<'_>) -> Option<u64> {
    end_change(txn);
    txn.finish_open()
}

/// Publishes a command's events from `room`, left open, as the batch `open` says (none: the
/// command changed nothing), to the tenant's `listeners`, and keeps the tenant's own room if
/// it was used.
#[inline(never)]
fn publish_room(
    inner: &Inner,
    tenant: &TenantState,
    core: &mut TenantCore,
    listeners: &Listeners,
    room: Room<'_>,
    open: Option<(u64, Timestamp)>,
) {
    if let Some(events) = room.publish(&inner.bus, listeners, &tenant.name, tenant.event_key, open) {
        core.keep_event_list(events);
    }
}

/// Publishes the closed batches staged in the tenant's own room `events` (timers fired, or a
/// chunk of a batch enqueue) to its `listeners`, and keeps the room for the next command.
fn publish_staged(
    inner: &Inner,
    tenant: &TenantState,
    core: &mut TenantCore,
    listeners: &Listeners,
    mut events: Box<crate::batch::Batches>,
) {
    inner.bus.publish(&tenant.name, tenant.event_key, listeners, &mut events, None);
    core.keep_event_list(events);
}

/// Forgets ended calls past the cap, if the command ended any (part of its change).
#[inline(always)]
fn end_change(txn: &mut Txn<'_>) {
    if txn.ended_calls {
        forget_excess_ended(txn);
    }
}

/// Fires every timer of a locked tenant due at `now` in exact time order (ties: deadlines in
/// enqueue order, then idle queues, then forgetting calls), each at its own instant in a
/// `Txn` of its own (so each that changes something takes its own sequence number), and
/// publishes their events as one batch. A timer set while firing that is due too is merged
/// in at its place. Returns how many changed something.
fn fire_due(
    inner: &Inner,
    journal: Option<&dyn Journal>,
    tenant: &TenantState,
    locked: &mut Locked,
    now: Timestamp,
    listening: bool,
) -> usize {
    let Locked { core, listeners } = locked;
    let mut fired = 0;
    let mut events = listening.then(|| core.take_event_list());
    // Sorted latest first, so the next to fire is popped from the end.
    let mut due: Vec<(Timestamp, Timer)> = Vec::new();
    loop {
        let next_set = core.next_due();
        let next_taken = due.last().map_or(u64::MAX, |(at, _)| at.as_micros());
        if next_set <= now.as_micros() && next_set <= next_taken {
            // Something due is still pending (first pass, or set while firing).
            core.take_due(now, &mut due);
            let order = &*core;
            due.sort_by(|a, b| (b.0, order.timer_order(&b.1)).cmp(&(a.0, order.timer_order(&a.1))));
            continue;
        }
        let Some((at, timer)) = due.pop() else { break };
        core.note_firing(at, &timer);
        let mut txn = Txn::new(&inner.shared, core, at, events.as_deref_mut(), None);
        let changed = match timer {
            Timer::Deadline { queue, call, arrival } => fire_deadline(&mut txn, queue, call, arrival),
            Timer::Idle { queue } => fire_idle(&mut txn, queue),
            Timer::Forget { call } => fire_forget(&mut txn, call),
        };
        fired += usize::from(changed);
        if let (Some(journal), Some((seq, _))) = (journal, txn.outcome()) {
            // Recorded with the instant the run fired at (not the timer's own): replaying
            // the first record fires the same timers again.
            let record = Record { at_micros: now.as_micros(), draws: Vec::new(), change: Change::Timers };
            journal.append(&tenant.name, seq, &record.encode());
        }
        settle(&mut txn);
    }
    if let Some(events) = events {
        publish_staged(inner, tenant, core, listeners, events);
    }
    fired
}

/// Drops from the front of a tenant's ended calls those the retention time has passed:
/// their own timers forget them (or keep them while they are dead queue members).
fn prune_ended(ended: &mut VecDeque<(Timestamp, Handle)>, now: Timestamp, retention: Duration) {
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
        let forgettable = txn.core().call_of(call).is_some_and(|r| r.is_ended() && r.queue().is_none());
        if forgettable {
            txn.forget_early(call.ix);
        }
    }
}

/// A member's deadline, at its own instant: takes it out of its queue unless it left since
/// (a member that left and joined again is another stay, with a timer of its own, even when
/// both are due at the same instant). Returns whether it did.
fn fire_deadline(txn: &mut Txn<'_>, queue: Handle, call: Handle, serial: u64) -> bool {
    let due = txn.core().deadline_holds(queue, call, serial, txn.now);
    if due {
        txn.leave(call.ix, DequeueReason::Timeout);
    }
    due
}

/// An idle check of a queue, at its own instant: deletes the queue if it is an auto queue
/// left empty and unchanged for `queue_idle_ttl`; returns whether it did.
fn fire_idle(txn: &mut Txn<'_>, queue: Handle) -> bool {
    let (at, ttl) = (txn.now, txn.config().queue_idle_ttl);
    if !txn.core().idle_timer_holds(queue, at) {
        return false;
    }
    let q = txn.queue_at(queue.ix);
    let (empty_auto, idle_until) = (q.is_empty() && !q.explicit, q.updated_at.saturating_add(ttl));
    txn.mark_idle_check(queue.ix, None);
    if !empty_auto {
        return false; // the next time it empties sets a new timer
    }
    if idle_until <= at {
        txn.delete_queue(queue.ix, QueueDeletedReason::Idle);
        return true;
    }
    txn.arm_idle_timer_at(queue.ix, idle_until);
    false
}

/// The retention of an ended call ran out: forgets it (unless it is still a dead member of
/// a queue); returns whether it was forgotten.
fn fire_forget(txn: &mut Txn<'_>, call: Handle) -> bool {
    let (at, retention) = (txn.now, txn.config().ended_call_retention);
    let Some(rec) = txn.core().call_of(call) else { return false };
    let Some(end) = rec.end_time() else { return false };
    if end.saturating_add(retention) > at {
        return false;
    }
    if rec.queue().is_some() {
        // Still a dead member of a queue (a timer from a snapshot of an older version):
        // leaving the queue sets the timer that forgets it.
        return false;
    }
    txn.remove_call(call.ix);
    prune_ended(txn.ended_mut(), at, retention);
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::{CommandOptions, DialParams, Engine, EnqueueParams};

    /// With no subscriber a batch's calls join as a run; each stay's arrival number is what
    /// tells its deadline timer from one of an earlier stay due at the same instant.
    #[test]
    fn a_batch_numbers_its_arrivals_as_single_enqueues_do() {
        let t = Engine::default().default_tenant();
        let dial = || t.dial(&DialParams::new("+1", "+2", "app")).map(|c| c.call_control_id).unwrap();
        let ids: Vec<String> = (0..5).map(|_| dial()).collect();
        let p = EnqueueParams { max_wait: Some(Duration::from_secs(60)), ..EnqueueParams::new("q") };
        t.enqueue(&ids[0], &p).unwrap();
        t.enqueue(&ids[1], &p).unwrap();
        assert_eq!(t.enqueue_many(&ids[2..], &p), Ok(3));
        let core = t.state.lock();
        let serials: Vec<u32> = core.calls().filter_map(|(_, r)| r.membership().map(|m| m.serial)).collect();
        assert_eq!(serials, [1, 2, 3, 4, 5]);
    }

    /// A batch makes room in its queue for all its calls after the first (as far as the
    /// queue's `max_size` allows), even when it stops early.
    #[test]
    fn a_batch_makes_room_for_itself_at_once() {
        for (max_size, room) in [(100_000, 1024), (500, 512)] {
            let t = Engine::default().default_tenant();
            let dial = || t.dial(&DialParams::new("+1", "+2", "app")).map(|c| c.call_control_id).unwrap();
            let mut ids: Vec<String> = (0..1023).map(|_| dial()).collect();
            ids[2] = "nope".into();
            let p = EnqueueParams { max_size: Some(max_size), ..EnqueueParams::new("q") };
            assert_eq!(t.enqueue_many(&ids, &p).map_err(|e| e.index), Err(2));
            let core = t.state.lock();
            let (_, q) = core.queues().next().unwrap();
            assert_eq!((q.len(), q.order_capacity()), (2, room), "max_size {max_size}");
        }
    }

    /// Calls through the same connection to the same number share those strings.
    #[test]
    fn equal_connection_ids_and_called_numbers_are_shared() {
        let engine = Engine::default();
        let mut events = engine.subscribe();
        let t = engine.default_tenant();
        for (from, to, app) in [("+1", "+2", "app"), ("+3", "+2", "app"), ("+4", "+5", "app")] {
            t.dial(&DialParams::new(to, from, app)).unwrap();
        }
        let calls: Vec<_> = events
            .drain()
            .iter()
            .filter(|e| e.event_type() == "call.initiated")
            .map(|e| e.kind.subject().unwrap().call.clone())
            .collect();
        assert_eq!((&*calls[1].to, &*calls[1].from, &*calls[2].to), ("+2", "+3", "+5"));
        assert!(Arc::ptr_eq(&calls[0].to, &calls[1].to));
        assert!(!Arc::ptr_eq(&calls[0].from, &calls[1].from));
        assert!(Arc::ptr_eq(&calls[0].connection_id, &calls[2].connection_id));
    }

    /// Members that leave before their deadline leave stale timers; once those outnumber
    /// the valid ones the next timer set purges them.
    #[test]
    fn stale_timers_never_outnumber_valid_ones_for_long() {
        // A manual clock: with a moving one, time crossing a second between the steps would
        // set timers this count does not expect.
        let (clock, _hand) = crate::Clock::manual(crate::Timestamp::from_secs(1_767_225_600));
        let engine = Engine::builder().clock(clock).build();
        let t = engine.default_tenant();
        let p = EnqueueParams::new("q").max_wait_time_secs(600).max_size(20_000);
        let calls: Vec<String> =
            (0..10_000).map(|_| t.dial(&DialParams::new("1", "2", "c")).unwrap().call_control_id).collect();
        for c in &calls {
            t.enqueue(c, &p).unwrap();
        }
        // One idle timer for the queue; the deadlines are all valid.
        assert_eq!(t.state.lock().timer_count(), 10_000);
        for c in &calls {
            t.leave_queue(c, &CommandOptions::default()).unwrap();
        }
        t.enqueue(&calls[0], &p).unwrap();
        assert!(t.state.lock().timer_count() <= 3, "purged: {}", t.state.lock().timer_count());
        for _ in 0..100_000 {
            t.leave_queue(&calls[0], &CommandOptions::default()).unwrap();
            t.enqueue(&calls[0], &p).unwrap();
        }
        assert!(t.state.lock().timer_count() <= 4097, "{}", t.state.lock().timer_count());
        engine.check_invariants().unwrap();
    }

    /// A dead member waits in its queue with no timer to forget it (one that rearmed itself
    /// every retention period fired millions of times after a jump of the clock); leaving
    /// the queue sets the timer, one retention period later.
    #[test]
    fn a_dead_member_is_forgotten_one_retention_after_it_leaves() {
        let start = crate::Timestamp::from_secs(1_767_225_600);
        let (clock, hand) = crate::Clock::manual(start);
        let retention = std::time::Duration::from_secs(600);
        let engine = Engine::builder().clock(clock).ended_call_retention(retention).build();
        let t = engine.default_tenant();
        let call = t.dial(&DialParams::new("1", "2", "c")).unwrap().call_control_id;
        t.create_queue("q", None).unwrap(); // explicit: no idle timer once empty
        t.enqueue(&call, &EnqueueParams::new("q").keep_after_hangup(true)).unwrap();
        t.hangup(&call, &CommandOptions::default()).unwrap();
        assert_eq!(t.state.lock().next_due(), u64::MAX, "no timer while it waits");
        let years = std::time::Duration::from_secs(100 * 365 * 86_400);
        hand.advance(years);
        assert_eq!(engine.run_pending_tasks(), 0);
        assert!(t.call(&call).is_ok(), "kept while in its queue");
        t.remove_queue_call("q", &call).unwrap();
        let left = start.saturating_add(years);
        assert_eq!(t.state.lock().next_due(), left.saturating_add(retention).as_micros());
        hand.advance(retention - std::time::Duration::from_secs(1));
        engine.run_pending_tasks();
        assert!(t.call(&call).is_ok(), "kept for the retention after it left");
        hand.advance(std::time::Duration::from_secs(1));
        assert_eq!(engine.run_pending_tasks(), 1);
        assert!(t.call(&call).is_err(), "forgotten");
        engine.check_invariants().unwrap();
    }

    /// The random values kept for the journal are the last command's only: each command
    /// starts the list again, so it does not grow with the engine's life.
    #[test]
    fn the_kept_draws_are_the_last_commands_only() {
        let t = Engine::default().default_tenant();
        let dial = || t.dial(&DialParams::new("1", "2", "c")).unwrap();
        dial();
        let one = t.state.lock().drawn.len();
        assert!(one > 0);
        for _ in 0..10 {
            dial();
        }
        assert_eq!(t.state.lock().drawn.len(), one);
    }
}
