//! Events: one per state change (docs/behaviour.md §4), and the bus that hands them to
//! subscribers.
//!
//! A command's events are handed to every subscriber's channel as one batch at the moment the
//! command commits, while it still holds its tenant's lock: so a tenant's events reach every
//! subscriber in the order of the tenant's sequence numbers ([`Event::seq`]), and a command's
//! events stay together. Subscriber code never runs under an engine lock, and a subscriber that does not
//! keep up loses batches (counted) instead of slowing commands.
//!
//! A [`Subscription`] is read blocking ([`Subscription::recv`], [`Subscription::recv_timeout`])
//! or awaited in any async runtime ([`Subscription::poll_recv`], [`Subscription::recv_async`]):
//! each subscriber's channel is a queue of events behind one small lock, with the waker of
//! the task awaiting it, which the publish that hands it a batch takes and wakes.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use uuid::Uuid;

use crate::call::CallIdentity;
use crate::clock::Timestamp;

/// Why a call left a queue (typed removal cause).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DequeueReason {
    /// Bridged with another call (an agent's bridge to the queue, or a direct bridge).
    Bridged,
    /// Hung up while waiting (or found dead at the head, when kept after hangup).
    Hangup,
    /// `leave_queue`, a move to another queue, or removal through the queue API.
    Leave,
    /// `max_wait_time_secs` ran out.
    Timeout,
}

impl DequeueReason {
    /// The reason's name on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bridged => "bridged",
            Self::Hangup => "hangup",
            Self::Leave => "leave",
            Self::Timeout => "timeout",
        }
    }
}

/// Which party ended a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HangupSource {
    /// The call itself hung up (a hangup command).
    Caller,
    /// The other leg of its bridge went away (the unbridge rule, docs/behaviour.md §2.5).
    Callee,
}

/// Why a queue was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueDeletedReason {
    /// By the delete call.
    Explicit,
    /// Empty and unchanged for `queue_idle_ttl`.
    Idle,
}

/// The call an event is about, with its client state at the time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSubject {
    /// The call.
    pub call: Arc<CallIdentity>,
    /// Its client state when the event happened.
    pub client_state: Option<Arc<str>>,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A call was created (dial or transfer).
    CallInitiated(CallSubject),
    /// A call was answered (at once, for dialed calls).
    CallAnswered(CallSubject),
    /// A call left a queue.
    CallDequeued {
        /// The call.
        subject: CallSubject,
        /// The queue's name.
        queue: Arc<str>,
        /// The position it had when it left.
        queue_position: usize,
        /// Why it left.
        reason: DequeueReason,
        /// Whole seconds waited.
        wait_time_secs: u64,
    },
    /// A call was bridged (one event per leg).
    CallBridged(CallSubject),
    /// A call hung up.
    CallHangup {
        /// The call.
        subject: CallSubject,
        /// Who ended it.
        source: HangupSource,
    },
    /// A call joined a queue.
    CallEnqueued {
        /// The call.
        subject: CallSubject,
        /// The queue's name.
        queue: Arc<str>,
        /// Its 1-based position.
        current_position: usize,
        /// The queue's average wait when it joined.
        queue_avg_wait_time_secs: u64,
    },
    /// \[ext\] A queue was created (stream subscribers only, never webhooks).
    QueueCreated {
        /// The queue's name.
        queue: Arc<str>,
        /// Its new id.
        queue_id: Uuid,
    },
    /// \[ext\] A queue was deleted (stream subscribers only, never webhooks).
    QueueDeleted {
        /// The queue's name.
        queue: Arc<str>,
        /// Its id.
        queue_id: Uuid,
        /// Why.
        reason: QueueDeletedReason,
    },
}

impl EventKind {
    /// The `event_type` on the wire.
    #[must_use]
    pub const fn event_type(&self) -> &'static str {
        match self {
            Self::CallInitiated(_) => "call.initiated",
            Self::CallAnswered(_) => "call.answered",
            Self::CallDequeued { .. } => "call.dequeued",
            Self::CallBridged(_) => "call.bridged",
            Self::CallHangup { .. } => "call.hangup",
            Self::CallEnqueued { .. } => "call.enqueued",
            Self::QueueCreated { .. } => "queue.created",
            Self::QueueDeleted { .. } => "queue.deleted",
        }
    }

    /// The order of kinds within one command (docs/behaviour.md §4: dequeued, bridged, hangup,
    /// enqueued; a call is created before anything happens to it, a queue before a call
    /// joins it).
    pub(crate) const fn rank(&self) -> u8 {
        match self {
            Self::CallInitiated(_) => 0,
            Self::CallAnswered(_) => 1,
            Self::CallDequeued { .. } => 2,
            Self::QueueDeleted { .. } => 3,
            Self::CallBridged(_) => 4,
            Self::CallHangup { .. } => 5,
            Self::QueueCreated { .. } => 6,
            Self::CallEnqueued { .. } => 7,
        }
    }

    /// The call the event is about, if it is a call event.
    #[must_use]
    pub const fn subject(&self) -> Option<&CallSubject> {
        match self {
            Self::CallInitiated(s) | Self::CallAnswered(s) | Self::CallBridged(s) => Some(s),
            Self::CallDequeued { subject, .. }
            | Self::CallHangup { subject, .. }
            | Self::CallEnqueued { subject, .. } => Some(subject),
            Self::QueueCreated { .. } | Self::QueueDeleted { .. } => None,
        }
    }

    /// Whether the event goes to webhooks (the Telnyx ones) or only to streams (\[ext\]).
    #[must_use]
    pub const fn is_webhook_event(&self) -> bool {
        self.subject().is_some()
    }
}

/// The stable 64-bit key of a tenant in its event ids: FNV-1a (64-bit) of the tenant's name.
/// A fixed, documented function, so that event ids come out the same in every process.
pub(crate) fn tenant_event_key(tenant: &str) -> u64 {
    tenant.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The id of an event, derived (not drawn at random) from where the event stands: its
/// tenant, the sequence number of the command that made it, and its index among that
/// command's events (in publishing order). The same change gets the same id in every
/// process, so a journal replayed after a restart reproduces its events' ids. A UUID of
/// version 8 (RFC 9562, custom layout), big-endian:
///
/// ```text
///  bits   0..48   the top 48 bits of the tenant's key (FNV-1a 64 of its name)
///  bits  48..52   version: 8
///  bits  52..64   the event's index within its command (12 bits)
///  bits  64..66   variant: 0b10
///  bits  66..128  the command's sequence number (62 bits)
/// ```
///
/// Within a tenant the ids are unique (a sequence number never repeats, and a command makes
/// far fewer than 4096 events); tenants whose keys share their top 48 bits would share ids.
pub(crate) fn event_id(tenant_key: u64, seq: u64, index: usize) -> Uuid {
    let index = (index as u64) & 0xfff;
    let high = (tenant_key & !0xffff) | (0x8 << 12) | index;
    let low = (0b10 << 62) | (seq & ((1 << 62) - 1));
    Uuid::from_u64_pair(high, low)
}

/// One event, serialised as the `data` object of the Telnyx envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Unique id of the event: a UUID of version 8 derived from the tenant, the sequence
    /// number and the event's index within its command (the same in every process).
    pub id: Uuid,
    /// When the change happened (for a timeout: the deadline itself).
    pub occurred_at: Timestamp,
    /// The tenant whose call or queue changed.
    pub tenant: Arc<str>,
    /// What happened.
    pub kind: EventKind,
    /// The tenant's sequence number of the command that made the event (see
    /// [`Event::seq`]). Not part of the Telnyx JSON.
    pub(crate) seq: u64,
}

impl Event {
    /// The number the tenant's sequence gave the command (or timer firing) that made this
    /// event: every event of one command carries the same number, and the numbers of a
    /// tenant's state-changing commands are dense and increasing (see
    /// [`Tenant::last_seq`](crate::Tenant::last_seq)).
    #[must_use]
    pub const fn seq(&self) -> u64 {
        self.seq
    }

    /// The `event_type` on the wire.
    #[must_use]
    pub const fn event_type(&self) -> &'static str {
        self.kind.event_type()
    }

    /// The payload object alone (docs/behaviour.md §4).
    #[must_use]
    pub const fn payload(&self) -> Payload<'_> {
        Payload(self)
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("record_type", "event")?;
        m.serialize_entry("event_type", self.event_type())?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("occurred_at", &self.occurred_at)?;
        m.serialize_entry("payload", &Payload(self))?;
        m.end()
    }
}

/// The `payload` object of an event.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a>(&'a Event);

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(subject) = self.0.kind.subject() {
            let c = &subject.call;
            m.serialize_entry("call_control_id", &*c.call_control_id)?;
            m.serialize_entry("call_leg_id", &c.call_leg_id)?;
            m.serialize_entry("call_session_id", &c.call_session_id)?;
            m.serialize_entry("connection_id", &*c.connection_id)?;
            // Telnyx's schemas type client_state as a string: absent, it is left out (no null).
            if let Some(state) = subject.client_state.as_deref() {
                m.serialize_entry("client_state", state)?;
            }
        }
        match &self.0.kind {
            EventKind::CallInitiated(s) => {
                m.serialize_entry("from", &*s.call.from)?;
                m.serialize_entry("to", &*s.call.to)?;
                m.serialize_entry("direction", "outgoing")?;
                m.serialize_entry("state", "bridging")?;
            }
            EventKind::CallAnswered(s) => {
                m.serialize_entry("from", &*s.call.from)?;
                m.serialize_entry("to", &*s.call.to)?;
                m.serialize_entry("start_time", &s.call.start_time)?;
                m.serialize_entry("state", "answered")?;
            }
            EventKind::CallDequeued { queue, queue_position, reason, wait_time_secs, .. } => {
                m.serialize_entry("queue", &**queue)?;
                m.serialize_entry("queue_position", queue_position)?;
                m.serialize_entry("reason", reason)?;
                m.serialize_entry("wait_time_secs", wait_time_secs)?;
            }
            EventKind::CallBridged(s) => {
                m.serialize_entry("from", &*s.call.from)?;
                m.serialize_entry("to", &*s.call.to)?;
            }
            EventKind::CallHangup { subject, source } => {
                m.serialize_entry("from", &*subject.call.from)?;
                m.serialize_entry("to", &*subject.call.to)?;
                m.serialize_entry("start_time", &subject.call.start_time)?;
                m.serialize_entry("hangup_cause", "normal_clearing")?;
                m.serialize_entry("hangup_source", source)?;
                m.serialize_entry("sip_hangup_cause", "unspecified")?;
                m.serialize_entry("state", "hangup")?;
            }
            EventKind::CallEnqueued { queue, current_position, queue_avg_wait_time_secs, .. } => {
                m.serialize_entry("queue", &**queue)?;
                m.serialize_entry("current_position", current_position)?;
                m.serialize_entry("queue_avg_wait_time_secs", queue_avg_wait_time_secs)?;
            }
            EventKind::QueueCreated { queue, queue_id } => {
                m.serialize_entry("queue", &**queue)?;
                m.serialize_entry("queue_id", queue_id)?;
            }
            EventKind::QueueDeleted { queue, queue_id, reason } => {
                m.serialize_entry("queue", &**queue)?;
                m.serialize_entry("queue_id", queue_id)?;
                m.serialize_entry("reason", reason)?;
            }
        }
        m.end()
    }
}

/// Room for the events of most commands (a bridge from a queue makes three, a transfer
/// five), so that a list is allocated once.
const EVENTS_PER_COMMAND: usize = 4;

/// An empty list for a command's events: `kept` if it has room, else a new one.
pub(crate) fn event_list(kept: Vec<Event>) -> Vec<Event> {
    if kept.capacity() == 0 { Vec::with_capacity(EVENTS_PER_COMMAND) } else { kept }
}

/// A subscriber's bounded queue of events, with everything its reader may wait on behind
/// one lock: a publish appends a command's events under it, a read swaps the whole queue
/// for the reader's emptied one (no allocation either way once both have grown), and no
/// wake-up can be lost (the reader looks at the queue and registers its waker under the
/// lock the publisher appends under).
#[derive(Debug)]
struct Channel {
    state: Mutex<ChannelState>,
    /// Signalled for a thread blocked in `recv` or `recv_timeout`.
    ready: Condvar,
    /// How many command batches may wait.
    capacity: usize,
    dropped: AtomicU64,
    /// The subscription was dropped.
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct ChannelState {
    /// The waiting events, oldest first, of `batches` commands.
    events: VecDeque<Event>,
    batches: usize,
    /// The engine is gone: no batch will come.
    disconnected: bool,
    /// The task awaiting a batch (`poll_recv`), taken by the publish that wakes it.
    waker: Option<Waker>,
    /// Threads blocked in `recv` or `recv_timeout`.
    sleeping: usize,
}

impl Channel {
    /// Appends a command's events unless `capacity` batches wait (then counts them as
    /// dropped); `take` moves them (the last subscriber) or clones them.
    fn push(&self, events: &mut Vec<Event>, take: bool) {
        let mut st = self.state.lock();
        if st.batches >= self.capacity {
            drop(st);
            self.dropped.fetch_add(events.len() as u64, Ordering::Relaxed);
            return;
        }
        if take {
            st.events.extend(events.drain(..));
        } else {
            st.events.extend(events.iter().cloned());
        }
        st.batches += 1;
        let waker = st.waker.take();
        let sleeping = st.sleeping > 0;
        drop(st);
        if sleeping {
            self.ready.notify_one();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether the channel holds as many batches as it can (tests).
    #[cfg(test)]
    fn is_full(&self) -> bool {
        self.state.lock().batches >= self.capacity
    }

    /// The engine is gone: wakes whoever waits, to see it.
    fn disconnect(&self) {
        let mut st = self.state.lock();
        st.disconnected = true;
        let waker = st.waker.take();
        drop(st);
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[derive(Debug)]
struct Subscriber {
    tenant: Option<Arc<str>>,
    channel: Arc<Channel>,
}

/// Fan-out of committed event batches to subscribers.
#[derive(Debug, Default)]
pub(crate) struct EventBus {
    subscribers: RwLock<Vec<Subscriber>>,
    /// Read on every command to skip building events nobody will read.
    count: AtomicUsize,
}

impl EventBus {
    pub(crate) fn has_subscribers(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn subscribe(&self, tenant: Option<Arc<str>>, capacity: usize) -> Subscription {
        let channel = Arc::new(Channel {
            state: Mutex::new(ChannelState::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let mut subs = self.subscribers.write();
        subs.retain(|s| !s.channel.closed.load(Ordering::Relaxed));
        subs.push(Subscriber { tenant, channel: channel.clone() });
        self.count.store(subs.len(), Ordering::Relaxed);
        Subscription { channel, events: VecDeque::new() }
    }

    /// Hands a command's events to every subscriber of its tenant without waiting: moved to
    /// the last one, cloned for the others. Leaves `events` empty, its room kept for a
    /// later command.
    pub(crate) fn publish(&self, tenant: &str, events: &mut Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut any_closed = false;
        {
            let subs = self.subscribers.read();
            let takes = |s: &Subscriber| {
                !s.channel.closed.load(Ordering::Relaxed) && s.tenant.as_deref().is_none_or(|t| t == tenant)
            };
            let last = subs.iter().rposition(takes);
            for (i, sub) in subs.iter().enumerate() {
                if sub.channel.closed.load(Ordering::Relaxed) {
                    any_closed = true;
                } else if takes(sub) {
                    sub.channel.push(events, Some(i) == last);
                }
            }
        }
        events.clear();
        if any_closed {
            let mut subs = self.subscribers.write();
            subs.retain(|s| !s.channel.closed.load(Ordering::Relaxed));
            self.count.store(subs.len(), Ordering::Relaxed);
        }
    }
}

impl Drop for EventBus {
    /// The engine is gone: every channel disconnects, and whoever awaits it is woken to see it.
    fn drop(&mut self) {
        for Subscriber { channel, .. } in self.subscribers.get_mut().drain(..) {
            channel.disconnect();
        }
    }
}

/// A stream of events; each subscriber gets its own copy of every batch.
///
/// Read it blocking (`recv`, `recv_timeout`, the `Iterator`) or await it in any async runtime
/// (`poll_recv`, `recv_async`). Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    channel: Arc<Channel>,
    /// Events taken from the channel (all it held, in one swap), oldest first.
    events: VecDeque<Event>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.channel.closed.store(true, Ordering::Relaxed);
    }
}

/// How much room (in events) an emptied queue keeps when a reader hands it to its channel.
const KEPT_EVENTS: usize = 4096;

/// What a look at the channel found.
enum Fetch {
    Events,
    Empty,
    Disconnected,
}

impl Subscription {
    /// Under the channel's lock: takes every waiting event (swapping queues: the reader's is
    /// empty).
    fn fetch_locked(events: &mut VecDeque<Event>, st: &mut ChannelState) -> Fetch {
        if !st.events.is_empty() {
            // A burst's room is not kept for ever: the emptied queue given to the channel
            // keeps at most `KEPT_EVENTS` of it.
            events.shrink_to(KEPT_EVENTS);
            std::mem::swap(events, &mut st.events);
            st.batches = 0;
            Fetch::Events
        } else if st.disconnected {
            Fetch::Disconnected
        } else {
            Fetch::Empty
        }
    }

    /// Takes the waiting events, waiting until `deadline` (`None`: not at all; `Some(None)`:
    /// as long as it takes). False when there are none by then, or the engine is gone.
    fn fetch(&mut self, deadline: Option<Option<Instant>>) -> bool {
        let Self { channel, events } = self;
        let mut st = channel.state.lock();
        loop {
            match Self::fetch_locked(events, &mut st) {
                Fetch::Events => return true,
                Fetch::Disconnected => return false,
                Fetch::Empty => {}
            }
            match deadline {
                None => return false,
                Some(None) => {
                    st.sleeping += 1;
                    channel.ready.wait(&mut st);
                    st.sleeping -= 1;
                }
                Some(Some(at)) => {
                    st.sleeping += 1;
                    let timed_out = channel.ready.wait_until(&mut st, at).timed_out();
                    st.sleeping -= 1;
                    if timed_out {
                        return matches!(Self::fetch_locked(events, &mut st), Fetch::Events);
                    }
                }
            }
        }
    }

    /// The next event: from those at hand, else from the channel.
    fn next_with(&mut self, deadline: Option<Option<Instant>>) -> Option<Event> {
        if let Some(ev) = self.events.pop_front() {
            return Some(ev);
        }
        if self.fetch(deadline) { self.events.pop_front() } else { None }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.next_with(None)
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        self.next_with(Some(Some(deadline)))
    }

    /// The next event, waiting as long as it takes (`None` once the engine is gone).
    pub fn recv(&mut self) -> Option<Event> {
        self.next_with(Some(None))
    }

    /// Polls for the next event: `Ready(Some)` when one is waiting, `Ready(None)` once the
    /// engine is gone (and every event it sent has been read), else `Pending`, and the task of
    /// `cx` is woken when a batch arrives or the engine goes away. Needs no particular async
    /// runtime. Only the waker of the latest call is kept.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if let Some(ev) = self.events.pop_front() {
            return Poll::Ready(Some(ev));
        }
        let mut st = self.channel.state.lock();
        match Self::fetch_locked(&mut self.events, &mut st) {
            Fetch::Events => {
                drop(st);
                Poll::Ready(self.events.pop_front())
            }
            Fetch::Disconnected => Poll::Ready(None),
            // Registered under the lock a publish appends under: no wake-up is lost.
            Fetch::Empty => {
                match &mut st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    other => *other = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// The next event, awaited (`None` once the engine is gone). Cancel-safe: dropping the
    /// future loses no event.
    pub fn recv_async(&mut self) -> impl Future<Output = Option<Event>> + '_ {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }

    /// Every event waiting now, oldest first.
    pub fn drain(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.try_recv()).collect()
    }

    /// Events this subscriber lost because its channel was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.channel.dropped.load(Ordering::Relaxed)
    }
}

impl Iterator for Subscription {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.recv()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn event(n: u128) -> Event {
        Event {
            id: Uuid::from_u128(n),
            occurred_at: Timestamp::from_secs(1),
            tenant: "t".into(),
            seq: n as u64,
            kind: EventKind::QueueCreated { queue: "q".into(), queue_id: Uuid::from_u128(n) },
        }
    }

    fn poll(sub: &mut Subscription, waker: &Waker) -> Poll<Option<Event>> {
        sub.poll_recv(&mut Context::from_waker(waker))
    }

    #[test]
    fn poll_recv_is_woken_by_a_publish() {
        let bus = EventBus::default();
        let mut sub = bus.subscribe(None, 8);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        assert_eq!(poll(&mut sub, &waker), Poll::Pending);
        assert_eq!(count.get(), 0);
        bus.publish("t", &mut vec![event(1), event(2)]);
        assert_eq!(count.get(), 1, "the publish wakes the waiting task");
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(1))));
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(2))));
        assert_eq!(poll(&mut sub, &waker), Poll::Pending);
        // Another tenant's batch neither reaches a tenant subscriber nor wakes it.
        let mut only_u = bus.subscribe(Some("u".into()), 8);
        let other = Arc::new(Count::default());
        assert_eq!(poll(&mut only_u, &Waker::from(other.clone())), Poll::Pending);
        bus.publish("t", &mut vec![event(3)]);
        assert_eq!((count.get(), other.get()), (2, 0));
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(3))));
        // No one waiting: a publish wakes nothing and the events wait in the channel.
        bus.publish("t", &mut vec![event(4)]);
        assert_eq!(count.get(), 2);
        assert_eq!(sub.try_recv(), Some(event(4)));
    }

    #[test]
    fn recv_async_under_a_plain_executor() {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        fn block_on<F: Future>(f: F) -> F::Output {
            let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
            let mut cx = Context::from_waker(&waker);
            let mut f = std::pin::pin!(f);
            loop {
                if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                    return v;
                }
                std::thread::park();
            }
        }
        let bus = Arc::new(EventBus::default());
        let mut sub = bus.subscribe(None, 1024);
        let n = 2000;
        let full = sub.channel.clone();
        let publisher = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    // A full channel drops; the reader below counts those too.
                    while full.is_full() {
                        std::thread::yield_now();
                    }
                    bus.publish("t", &mut vec![event(i)]);
                }
            })
        };
        let got: Vec<u128> =
            (0..n).map(|_| block_on(sub.recv_async()).expect("event").id.as_u128()).collect();
        publisher.join().expect("publisher");
        assert_eq!(got, (0..n).collect::<Vec<_>>(), "every event, in order, none lost");
        assert_eq!(sub.dropped(), 0);
        drop(Arc::into_inner(bus).expect("last reference"));
        assert_eq!(block_on(sub.recv_async()), None);
    }

    #[test]
    fn no_lost_wake_up_between_check_and_register() {
        // Publishes race with polls on another thread: whenever a poll says Pending, a wake-up
        // must follow for any batch sent after it, so the reader never waits forever.
        for _ in 0..200 {
            let bus = Arc::new(EventBus::default());
            let mut sub = bus.subscribe(None, 64);
            let count = Arc::new(Count::default());
            let waker = Waker::from(count.clone());
            let publisher = {
                let bus = bus.clone();
                std::thread::spawn(move || bus.publish("t", &mut vec![event(7)]))
            };
            let mut wakes_seen = 0;
            let got = loop {
                match poll(&mut sub, &waker) {
                    Poll::Ready(ev) => break ev,
                    Poll::Pending => {
                        // Pending: the event must come with a wake-up (within seconds).
                        let start = std::time::Instant::now();
                        while count.get() == wakes_seen {
                            assert!(start.elapsed() < Duration::from_secs(10), "lost wake-up");
                            std::thread::yield_now();
                        }
                        wakes_seen = count.get();
                    }
                }
            };
            assert_eq!(got, Some(event(7)));
            publisher.join().expect("publisher");
        }
    }

    #[test]
    fn none_once_the_engine_is_gone() {
        let engine = crate::Engine::builder().build();
        let mut sub = engine.subscribe();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        assert_eq!(poll(&mut sub, &waker), Poll::Pending);
        drop(engine);
        assert_eq!(count.get(), 1, "dropping the engine wakes the waiting task");
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(None));
        // Events sent before the engine went are read first.
        let bus = EventBus::default();
        let mut sub = bus.subscribe(None, 8);
        bus.publish("t", &mut vec![event(1)]);
        drop(bus);
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(1))));
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(None));
    }

    #[test]
    fn dropped_counts_what_a_full_channel_loses() {
        let bus = EventBus::default();
        let mut sub = bus.subscribe(None, 1);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        assert_eq!(poll(&mut sub, &waker), Poll::Pending);
        bus.publish("t", &mut vec![event(1), event(2)]);
        bus.publish("t", &mut vec![event(3), event(4), event(5)]); // the channel holds one batch
        assert_eq!(sub.dropped(), 3);
        assert_eq!(count.get(), 1, "a lost batch wakes no one");
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(1))));
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(2))));
        assert_eq!(poll(&mut sub, &waker), Poll::Pending);
        bus.publish("t", &mut vec![event(6)]);
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(6))));
        assert_eq!(sub.dropped(), 3);
    }

    /// The layout is a promise to journals: these values must never change.
    #[test]
    fn event_ids_have_a_fixed_layout() {
        assert_eq!(tenant_event_key(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(tenant_event_key("a"), 0xaf63_dc4c_8601_ec8c);
        let key = tenant_event_key("default");
        let id = event_id(key, 7, 2);
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (high, low) = id.as_u64_pair();
        assert_eq!(high >> 16, key >> 16);
        assert_eq!(high & 0xfff, 2);
        assert_eq!(low & ((1 << 62) - 1), 7);
        assert_ne!(event_id(key, 7, 3), id);
        assert_ne!(event_id(key, 8, 2), id);
        assert_ne!(event_id(tenant_event_key("other"), 7, 2), id);
        assert_eq!(id.to_string(), event_id(tenant_event_key("default"), 7, 2).to_string());
    }
}
