//! The bus that hands commands' events to subscribers.
//!
//! A command's events are handed to every subscriber's channel as one batch at the moment the
//! command commits, while it still holds its tenant's lock (a tenant's one listening channel
//! is lent to the command, which writes them into it directly: [`Room`]): so a tenant's events reach every
//! subscriber in the order of the tenant's sequence numbers ([`Event::seq`]), and a command's
//! events stay together. Subscriber code never runs under an engine lock, and a subscriber that does not
//! keep up loses batches (counted) instead of slowing commands.
//!
//! A [`Subscription`] is read blocking ([`Subscription::recv`], [`Subscription::recv_timeout`])
//! or awaited in any async runtime ([`Subscription::poll_recv`], [`Subscription::recv_async`]),
//! as owned [`Event`]s, or in place as views of the batches it received
//! ([`Subscription::try_next`]; waited for with [`Subscription::next_timeout`], awaited with
//! [`Subscription::poll_ready`]): each subscriber's channel is a [`Batches`] behind one small lock, with the
//! waker of the task awaiting it, which the publish that hands it a batch takes and wakes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::batch::{Batches, Cursor, EventRef, Names};
use crate::clock::Timestamp;
use crate::event::Event;

/// A subscriber's bounded queue of events, with everything its reader may wait on behind
/// one lock: a command of a tenant it is the only listener of writes its events into it
/// under it ([`Lent`]), a publish appends a command's staged events under it, a read swaps
/// the whole queue for the reader's emptied one (no allocation either way once both have
/// grown), and no wake-up can be lost (the reader looks at the queue and registers its
/// waker under the lock the publisher appends under).
#[derive(Debug)]
pub(crate) struct Channel {
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
    /// The waiting events, oldest first, of `batches` publishes.
    events: Batches,
    batches: usize,
    /// The engine is gone: no batch will come.
    disconnected: bool,
    /// The task awaiting a batch (`poll_recv`), taken by the publish that wakes it.
    waker: Option<Waker>,
    /// Threads blocked in `recv` or `recv_timeout`.
    sleeping: usize,
}

impl Channel {
    /// Appends commands' events (and the open one's as the batch `open` says, see
    /// [`Batches::append`]) unless `capacity` batches wait (then counts them as dropped);
    /// `take` moves their calls' identities (the last subscriber) or shares them.
    fn push(&self, events: &mut Batches, open: Option<(u64, Timestamp)>, tenant: &str, key: u64, take: bool) {
        let mut st = self.state.lock();
        if st.batches >= self.capacity {
            drop(st);
            self.dropped.fetch_add(events.len() as u64, Ordering::Relaxed);
            return;
        }
        st.events.append(events, open, tenant, key, take);
        self.added_batch(st);
    }

    /// A batch was added under `st`: counts it, unlocks, and wakes a reader that waits.
    #[inline]
    fn added_batch(&self, mut st: MutexGuard<'_, ChannelState>) {
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

    /// Lends the channel to a command of `tenant` (its events written straight into it, see
    /// [`Lent`]) if nobody holds it (a reader, or another tenant's command: then the command
    /// stages its events and publishes them as usual, so that it does not wait to begin; its
    /// publish waits for the channel as any publish does, at most the other command's end)
    /// and it has room for a batch.
    #[inline]
    fn lend(&self, tenant: &str, key: u64) -> Option<Lent<'_>> {
        let mut st = self.state.try_lock()?;
        if st.batches >= self.capacity {
            return None;
        }
        let run = st.events.open_lent(tenant, key);
        Some(Lent { channel: self, state: st, run })
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

/// A tenant's only listening channel, locked for one of its commands, which writes its events
/// into it directly (no staging, no copy: the usual case, a tenant with one subscriber).
/// Held from before the command's first change to its end, under the tenant's lock, so the
/// tenant's events still arrive in the order of its sequence; a reader that looks meanwhile
/// waits for the command to end. A command that panics unlocks it as the stack unwinds,
/// its events left unclosed: whatever next adds to the channel or reads it forgets them
/// first ([`Batches::discard_unclosed`]).
#[derive(Debug)]
pub(crate) struct Lent<'c> {
    channel: &'c Channel,
    state: MutexGuard<'c, ChannelState>,
    /// The command's tenant's run in the channel's batches.
    run: u32,
}

impl Lent<'_> {
    /// Where the command writes its events.
    #[inline]
    fn events(&mut self) -> &mut Batches {
        &mut self.state.events
    }

    /// Ends the command: its events, if any, become the batch of the number and instant
    /// `open` gives, and the channel is unlocked (and its reader woken).
    #[inline]
    fn commit(self, open: Option<(u64, Timestamp)>) {
        let Self { channel, mut state, run } = self;
        match open {
            Some((seq, at)) if state.events.close_lent(seq, at, run) => channel.added_batch(state),
            _ => state.events.end_lent_without_batch(run),
        }
    }
}

/// Where a command's events go while someone listens to its tenant.
#[derive(Debug)]
pub(crate) enum Room<'c> {
    /// The tenant's one listening channel, written directly.
    Lent(Lent<'c>),
    /// The tenant's own room, published when the command ends ([`EventBus::publish`]).
    Staged(Box<Batches>),
}

impl<'c> Room<'c> {
    /// Where a command of `tenant` (whose event ids start with `key`) writes its events:
    /// `only`, the tenant's one listening channel ([`Listeners::only`]), lent if nobody holds
    /// it (see [`Channel::lend`]) and it has room for a batch; else the tenant's own room,
    /// `staged`.
    #[inline]
    pub(crate) fn new(
        only: Option<&'c Channel>,
        tenant: &str,
        key: u64,
        staged: impl FnOnce() -> Box<Batches>,
    ) -> Self {
        match only.and_then(|channel| channel.lend(tenant, key)) {
            Some(lent) => Self::Lent(lent),
            None => Self::Staged(staged()),
        }
    }

    /// Where the command writes its events.
    #[inline]
    pub(crate) fn events(&mut self) -> &mut Batches {
        match self {
            Self::Lent(lent) => lent.events(),
            Self::Staged(events) => events,
        }
    }

    /// Hands the command's events, left open, to the tenant's `listeners` as the batch
    /// `open` says (none: the command changed nothing); gives back the tenant's own room,
    /// emptied, if it was used.
    #[inline]
    pub(crate) fn publish(
        self,
        bus: &EventBus,
        listeners: &Listeners,
        tenant: &str,
        key: u64,
        open: Option<(u64, Timestamp)>,
    ) -> Option<Box<Batches>> {
        match self {
            Self::Lent(lent) => {
                lent.commit(open);
                None
            }
            Self::Staged(mut events) => {
                bus.publish(tenant, key, listeners, &mut events, open);
                Some(events)
            }
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
    /// Moves on with every change of `subscribers`: each tenant keeps its own list of the
    /// channels that take its events ([`Listeners`]) and makes it again when this moved, so
    /// that a command reads one atomic instead of locking the list and matching names.
    generation: AtomicU64,
}

/// The channels that take one tenant's events, as the bus's list was at `generation`.
#[derive(Debug)]
pub(crate) struct Listeners {
    generation: u64,
    channels: Vec<Arc<Channel>>,
}

impl Default for Listeners {
    /// Made at no generation: the first look makes the list.
    fn default() -> Self {
        Self { generation: u64::MAX, channels: Vec::new() }
    }
}

impl Listeners {
    /// The tenant's one listening channel, if it has one and it is still subscribed (see
    /// [`Room::new`]).
    #[inline]
    pub(crate) fn only(&self) -> Option<&Channel> {
        match self.channels.as_slice() {
            [only] if !only.closed.load(Ordering::Relaxed) => Some(only),
            _ => None,
        }
    }
}

impl EventBus {
    /// Whether anyone takes `tenant`'s events (whose list `listeners` is made up to date
    /// first): a command of a tenant nobody listens to builds no event, and computes none of
    /// their figures.
    #[inline]
    pub(crate) fn listens(&self, tenant: &str, listeners: &mut Listeners) -> bool {
        if listeners.generation != self.generation.load(Ordering::Acquire) {
            self.list_listeners(tenant, listeners);
        }
        !listeners.channels.is_empty()
    }

    #[cold]
    fn list_listeners(&self, tenant: &str, listeners: &mut Listeners) {
        let subs = self.subscribers.read();
        listeners.channels.clear();
        listeners.channels.extend(
            subs.iter()
                .filter(|s| {
                    !s.channel.closed.load(Ordering::Relaxed)
                        && s.tenant.as_deref().is_none_or(|t| t == tenant)
                })
                .map(|s| s.channel.clone()),
        );
        // Read under the lock it moves under: the list is the one of this generation.
        listeners.generation = self.generation.load(Ordering::Acquire);
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
        self.generation.fetch_add(1, Ordering::Release);
        Subscription {
            channel,
            events: Batches::default(),
            cursor: Cursor::default(),
            names: Names::default(),
        }
    }

    /// Hands commands' events to every channel of `listeners` (those of their tenant)
    /// without waiting: copied into each one, the calls' identities moved to the last one
    /// and shared with the others; the open command's, if any, as the batch of the number
    /// and instant `open` gives (its header written in each channel, not in `events`).
    /// Leaves `events` empty, its room kept for later commands.
    pub(crate) fn publish(
        &self,
        tenant: &str,
        key: u64,
        listeners: &Listeners,
        events: &mut Batches,
        open: Option<(u64, Timestamp)>,
    ) {
        if events.is_empty() {
            return;
        }
        if open.is_some() {
            events.order_open();
        }
        match listeners.only() {
            // The usual case: one listener, subscribed.
            Some(only) => only.push(events, open, tenant, key, true),
            None => self.publish_each(&listeners.channels, events, open, tenant, key),
        }
        events.clear();
    }

    /// [`EventBus::publish`] to each of `channels` that is still subscribed (the last one
    /// takes the identities), forgetting those that are not.
    #[inline(never)]
    fn publish_each(
        &self,
        channels: &[Arc<Channel>],
        events: &mut Batches,
        open: Option<(u64, Timestamp)>,
        tenant: &str,
        key: u64,
    ) {
        let mut any_closed = false;
        for (i, channel) in channels.iter().enumerate() {
            if channel.closed.load(Ordering::Relaxed) {
                any_closed = true;
            } else {
                channel.push(events, open, tenant, key, i + 1 == channels.len());
            }
        }
        if any_closed {
            self.forget_closed();
        }
    }

    /// Drops the subscribers that unsubscribed (every tenant makes its list again).
    #[cold]
    fn forget_closed(&self) {
        let mut subs = self.subscribers.write();
        subs.retain(|s| !s.channel.closed.load(Ordering::Relaxed));
        self.generation.fetch_add(1, Ordering::Release);
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
/// (`poll_recv`, `recv_async`), as owned events; or in place (`try_next`, waited for with
/// `next_timeout`, awaited with `poll_ready`). Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    channel: Arc<Channel>,
    /// Events taken from the channel (all it held, in one swap), oldest first.
    events: Batches,
    /// The next of `events` to read.
    cursor: Cursor,
    /// The names of the last owned event made, shared by the next ones with equal names.
    names: Names,
}

impl Drop for Subscription {
    /// Unsubscribes: the channel takes no more events, and lets go of those it holds (tenants
    /// may hold the channel a while, until their next command sees it closed).
    fn drop(&mut self) {
        self.channel.closed.store(true, Ordering::Relaxed);
        let waiting = std::mem::take(&mut self.channel.state.lock().events);
        drop(waiting);
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
    /// emptied before).
    fn fetch_locked(events: &mut Batches, cursor: &mut Cursor, st: &mut ChannelState) -> Fetch {
        st.events.discard_unclosed();
        if !st.events.is_empty() {
            std::mem::swap(events, &mut st.events);
            st.batches = 0;
            cursor.reset();
            Fetch::Events
        } else if st.disconnected {
            Fetch::Disconnected
        } else {
            Fetch::Empty
        }
    }

    /// Empties the events at hand, all read, before the channel's lock is taken (their
    /// identities are released here). A burst's room is not kept for ever: the emptied
    /// queue given to the channel keeps at most `KEPT_EVENTS` of it.
    fn release_read(&mut self) {
        if !self.events.is_empty() {
            self.events.clear_to(KEPT_EVENTS);
            self.cursor.reset();
        }
    }

    /// Takes the waiting events once every one at hand was read, waiting until `deadline` (`None`: not at all; `Some(None)`:
    /// as long as it takes). False when there are none by then, or the engine is gone.
    fn fetch(&mut self, deadline: Option<Option<Instant>>) -> bool {
        let Self { channel, events, cursor, .. } = self;
        let mut st = channel.state.lock();
        loop {
            match Self::fetch_locked(events, cursor, &mut st) {
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
                        return matches!(Self::fetch_locked(events, cursor, &mut st), Fetch::Events);
                    }
                }
            }
        }
    }

    /// The next event at hand, as an owned [`Event`] (its tenant's and queue's names shared
    /// with the previous ones' when they are equal).
    fn take_owned(&mut self) -> Option<Event> {
        let Self { events, cursor, names, .. } = self;
        let ev = cursor.next(events)?;
        Some(ev.to_event_with(names))
    }

    /// Whether an event is at hand, else whether one came from the channel by `deadline`
    /// (see [`Subscription::fetch`]).
    #[inline]
    fn ready(&mut self, deadline: Option<Option<Instant>>) -> bool {
        !self.cursor.done(&self.events) || self.refill(deadline)
    }

    /// Every event at hand was read: releases them and fetches more.
    fn refill(&mut self, deadline: Option<Option<Instant>>) -> bool {
        self.release_read();
        self.fetch(deadline)
    }

    /// The next event: from those at hand, else from the channel.
    fn next_with(&mut self, deadline: Option<Option<Instant>>) -> Option<Event> {
        if self.ready(deadline) { self.take_owned() } else { None }
    }

    /// The next event if one is waiting, read in place: the cheapest way to read events
    /// (nothing is copied or counted; [`EventRef::to_event`] makes an owned one).
    #[inline]
    pub fn try_next(&mut self) -> Option<EventRef<'_>> {
        if self.ready(None) { self.cursor.next(&self.events) } else { None }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.next_with(None)
    }

    /// The next event, waiting at most `timeout`, read in place (see
    /// [`Subscription::try_next`]).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<EventRef<'_>> {
        let deadline = Instant::now() + timeout;
        if self.ready(Some(Some(deadline))) { self.cursor.next(&self.events) } else { None }
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
        self.poll_ready(cx).map(|ready| if ready { self.take_owned() } else { None })
    }

    /// Polls for an event to read in place: `Ready(true)` when one is waiting (the next
    /// [`Subscription::try_next`] gives it), `Ready(false)` once the engine is gone (and
    /// every event it sent has been read), else `Pending`, woken as [`Subscription::poll_recv`]
    /// is.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if !self.cursor.done(&self.events) {
            return Poll::Ready(true);
        }
        self.release_read();
        let mut st = self.channel.state.lock();
        match Self::fetch_locked(&mut self.events, &mut self.cursor, &mut st) {
            Fetch::Events => Poll::Ready(true),
            Fetch::Disconnected => Poll::Ready(false),
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

    use uuid::Uuid;

    use super::*;
    use crate::clock::Timestamp;
    use crate::event::{EventKind, Fact, event_id};

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
            id: event_id(0, n as u64, 0),
            occurred_at: Timestamp::from_secs(1),
            tenant: "t".into(),
            seq: n as u64,
            kind: EventKind::QueueCreated { queue: "q".into(), queue_id: Uuid::from_u128(n) },
        }
    }

    /// A batch of one command per number in `ns` (its sequence number), each making the
    /// queue.created event `event(n)`.
    fn batch(ns: &[u128]) -> Batches {
        let mut b = Batches::default();
        for &n in ns {
            b.push(None, None, Fact::QueueCreated { queue: "q", queue_id: Uuid::from_u128(n) });
            b.close(n as u64, Timestamp::from_secs(1));
        }
        b
    }

    /// Publishes `batch` as tenant "t"'s.
    fn send(bus: &EventBus, mut batch: Batches) {
        let mut listeners = Listeners::default();
        bus.listens("t", &mut listeners);
        bus.publish("t", 0, &listeners, &mut batch, None);
    }

    #[test]
    fn the_last_listener_takes_the_batch_and_others_get_copies() {
        let bus = EventBus::default();
        let mut first = bus.subscribe(None, 8);
        let mut listeners = Listeners::default();
        bus.listens("t", &mut listeners);
        let mut staged = batch(&[1]);
        bus.publish("t", 0, &listeners, &mut staged, None);
        // The only listener's channel was empty: it took the staged batch whole, and the
        // tenant keeps the channel's room (none yet).
        assert!(!staged.has_room(), "the batch was handed over, not copied");
        let mut second = bus.subscribe(None, 8);
        bus.listens("t", &mut listeners);
        let mut staged = batch(&[2]);
        bus.publish("t", 0, &listeners, &mut staged, None);
        // Two listeners: the first one's (non-empty) channel gets a copy, the second's
        // (empty) takes the batch.
        assert!(!staged.has_room());
        assert_eq!(first.drain(), [event(1), event(2)]);
        assert_eq!(second.drain(), [event(2)]);
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
        send(&bus, batch(&[1, 2]));
        assert_eq!(count.get(), 1, "the publish wakes the waiting task");
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(1))));
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(2))));
        assert_eq!(poll(&mut sub, &waker), Poll::Pending);
        // Another tenant's batch neither reaches a tenant subscriber nor wakes it.
        let mut only_u = bus.subscribe(Some("u".into()), 8);
        let other = Arc::new(Count::default());
        assert_eq!(poll(&mut only_u, &Waker::from(other.clone())), Poll::Pending);
        send(&bus, batch(&[3]));
        assert_eq!((count.get(), other.get()), (2, 0));
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(3))));
        // No one waiting: a publish wakes nothing and the events wait in the channel.
        send(&bus, batch(&[4]));
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
                    send(&bus, batch(&[i]));
                }
            })
        };
        let got: Vec<u128> =
            (0..n).map(|_| block_on(sub.recv_async()).expect("event").seq().into()).collect();
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
                std::thread::spawn(move || send(&bus, batch(&[7])))
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
        send(&bus, batch(&[1]));
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
        send(&bus, batch(&[1, 2]));
        send(&bus, batch(&[3, 4, 5])); // the channel holds one batch
        assert_eq!(sub.dropped(), 3);
        assert_eq!(count.get(), 1, "a lost batch wakes no one");
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(1))));
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(2))));
        assert_eq!(poll(&mut sub, &waker), Poll::Pending);
        send(&bus, batch(&[6]));
        assert_eq!(poll(&mut sub, &waker), Poll::Ready(Some(event(6))));
        assert_eq!(sub.dropped(), 3);
    }

    /// One command of tenant "t" numbered `seq`, making the queue.created events `event(n)`
    /// for each of `ns` through the room its listeners give it, then published, as
    /// `Tenant::run` does (`staged`: the tenant's own room). Whether the channel was lent.
    fn command(
        bus: &EventBus,
        listeners: &Listeners,
        staged: &mut Option<Box<Batches>>,
        ns: &[u128],
    ) -> bool {
        let mut room = Room::new(listeners.only(), "t", 0, || staged.take().unwrap_or_default());
        let lent = matches!(room, Room::Lent(_));
        for &n in ns {
            room.events().push(None, None, Fact::QueueCreated { queue: "q", queue_id: Uuid::from_u128(n) });
        }
        let seq = ns.first().map(|&n| (n as u64, Timestamp::from_secs(1)));
        if let Some(own) = room.publish(bus, listeners, "t", 0, seq) {
            *staged = Some(own);
        }
        lent
    }

    fn listeners_of_t(bus: &EventBus) -> Listeners {
        let mut listeners = Listeners::default();
        bus.listens("t", &mut listeners);
        listeners
    }

    /// A bus with one subscriber to every tenant, of `capacity` batches, and tenant "t"'s
    /// listeners.
    fn one_subscriber(capacity: usize) -> (EventBus, Subscription, Listeners) {
        let bus = EventBus::default();
        let sub = bus.subscribe(None, capacity);
        let listeners = listeners_of_t(&bus);
        (bus, sub, listeners)
    }

    #[test]
    fn a_command_writes_into_its_tenants_one_channel_read_after_later_publishes() {
        let (bus, mut sub, listeners) = one_subscriber(8);
        let mut staged = None;
        assert!(command(&bus, &listeners, &mut staged, &[1]), "the one channel, free, is lent");
        assert!(staged.is_none(), "the tenant's own room is not even taken");
        // The reader takes the channel's buffer and reads part of it...
        assert_eq!(sub.try_recv(), Some(event(1)));
        // ... while commands write into the buffer it gave back, and a staged publish comes.
        assert!(command(&bus, &listeners, &mut staged, &[2]));
        send(&bus, batch(&[3]));
        assert!(command(&bus, &listeners, &mut staged, &[4]));
        // A command that changed nothing adds no batch.
        assert!(command(&bus, &listeners, &mut staged, &[]));
        let ids: Vec<Uuid> = std::iter::from_fn(|| sub.try_next().map(|e| e.id())).collect();
        assert_eq!(ids, [2, 3, 4].map(|n| event(n).id));
        assert!(sub.try_next().is_none());
    }

    #[test]
    fn a_held_channel_makes_the_command_stage_its_events() {
        let (bus, mut sub, listeners) = one_subscriber(8);
        let held = sub.channel.state.lock();
        let mut room = Room::new(listeners.only(), "t", 0, Box::<Batches>::default);
        assert!(matches!(room, Room::Staged(_)), "a held channel is not lent");
        room.events().push(None, None, Fact::QueueCreated { queue: "q", queue_id: Uuid::from_u128(5) });
        drop(held);
        let own = room.publish(&bus, &listeners, "t", 0, Some((5, Timestamp::from_secs(1))));
        assert!(own.is_some_and(|b| b.is_empty()), "published, and the room given back emptied");
        assert_eq!(sub.drain(), [event(5)]);
    }

    #[test]
    fn a_full_channel_counts_what_a_command_loses_and_lends_again_once_read() {
        let (bus, mut sub, listeners) = one_subscriber(1);
        let mut staged = None;
        assert!(command(&bus, &listeners, &mut staged, &[1]));
        assert!(!command(&bus, &listeners, &mut staged, &[2, 3]), "a full channel is not lent");
        assert_eq!(sub.dropped(), 2, "the second command's two events are counted lost");
        assert!(staged.as_ref().is_some_and(|b| b.is_empty()), "its room kept, emptied");
        assert_eq!(sub.drain(), [event(1)]);
        assert!(command(&bus, &listeners, &mut staged, &[4]));
        assert_eq!(sub.drain(), [event(4)]);
        assert_eq!(sub.dropped(), 2);
    }

    #[test]
    fn two_subscribers_each_get_every_command_and_one_left_is_lent_again() {
        let bus = EventBus::default();
        let (mut first, mut second) = (bus.subscribe(None, 8), bus.subscribe(Some("t".into()), 8));
        let mut listeners = listeners_of_t(&bus);
        let mut staged = None;
        assert!(!command(&bus, &listeners, &mut staged, &[1]), "two listeners: staged, copied");
        assert_eq!(first.drain(), [event(1)]);
        drop(first);
        // Until the tenant sees the bus change, its list has the dropped one.
        assert!(!command(&bus, &listeners, &mut staged, &[2]));
        bus.listens("t", &mut listeners);
        assert!(command(&bus, &listeners, &mut staged, &[3]), "the one left is lent");
        assert_eq!(second.drain(), [event(1), event(2), event(3)]);
        drop(second);
        // Its only listener gone: nothing is lent, nothing published.
        assert!(!command(&bus, &listeners, &mut staged, &[4]));
        assert!(!bus.listens("t", &mut listeners));
    }

    #[test]
    fn a_subscriber_dropped_while_its_channel_is_lent_lets_go_of_every_event() {
        let call = crate::call::tests::identity("call-a", Some(0));
        let (bus, mut sub, listeners) = one_subscriber(8);
        let mut staged = None;
        assert!(command(&bus, &listeners, &mut staged, &[1]));
        assert_eq!(sub.try_recv(), Some(event(1)), "the reader holds a buffer");
        let mut room = Room::new(listeners.only(), "t", 0, Box::<Batches>::default);
        assert!(matches!(room, Room::Lent(_)));
        let record = crate::call::CallRecord::new(call.clone(), None);
        room.events().push(Some(&record.ident), None, Fact::CallBridged);
        drop(record);
        let channel = sub.channel.clone();
        // The drop waits for the command to end, then takes what the channel holds.
        let dropping = std::thread::spawn(move || drop(sub));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(Arc::strong_count(&call), 2, "the command's event holds the call");
        assert!(room.publish(&bus, &listeners, "t", 0, Some((2, Timestamp::from_secs(1)))).is_none());
        dropping.join().expect("drop");
        assert!(channel.closed.load(Ordering::Relaxed));
        assert_eq!(Arc::strong_count(&call), 1, "released with the channel's events");
        assert!(channel.state.lock().events.is_empty());
    }

    /// A lent command that pushed events about calls and panicked leaves none of their
    /// identities held by the idle channel: forgotten calls are freed at once, not when an
    /// event is next read.
    #[test]
    fn a_command_that_panics_holds_none_of_its_calls_in_its_lent_channel() {
        let (bus, mut sub, listeners) = one_subscriber(8);
        let mut staged = None;
        // An unread event before: its call stays held, the panicking commands' do not.
        let first = crate::call::CallRecord::new(crate::call::tests::identity("call-first", Some(0)), None);
        let mut room = Room::new(listeners.only(), "t", 0, Box::<Batches>::default);
        assert!(matches!(room, Room::Lent(_)));
        room.events().push(Some(&first.ident), None, Fact::CallBridged);
        assert!(room.publish(&bus, &listeners, "t", 0, Some((1, Timestamp::from_secs(1)))).is_none());
        let calls: Vec<_> =
            (0..20).map(|i| crate::call::tests::identity(&format!("call-{i}"), Some(0))).collect();
        for call in &calls {
            let record = crate::call::CallRecord::new(call.clone(), None);
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut room = Room::new(listeners.only(), "t", 0, Box::<Batches>::default);
                assert!(matches!(room, Room::Lent(_)));
                room.events().push(Some(&record.ident), None, Fact::CallBridged);
                room.events().push(Some(&first.ident), None, Fact::CallBridged);
                panic!("a command's bug");
            }));
            assert!(panicked.is_err());
            drop(record);
            // Its unclosed events hold it until the channel is next touched; the earlier
            // panicked commands' calls are let go.
            assert_eq!(calls.iter().filter(|c| Arc::strong_count(c) > 1).count(), 1);
        }
        assert!(command(&bus, &listeners, &mut staged, &[2]));
        assert_eq!(
            calls.iter().filter(|c| Arc::strong_count(c) > 1).count(),
            0,
            "every panicked command's call let go"
        );
        let read: Vec<_> = std::iter::from_fn(|| {
            sub.try_next().map(|e| (e.seq(), e.call().map(|c| c.call_control_id.to_string())))
        })
        .collect();
        let first_id = Some("call-first".to_owned());
        assert_eq!(
            read,
            [(1, first_id), (2, None)],
            "the unread event before the panics is kept, with its call"
        );
        assert_eq!(Arc::strong_count(&first.ident), 1, "released once read");
    }

    #[test]
    fn a_command_that_panics_leaves_none_of_its_events_in_its_lent_channel() {
        let (bus, mut sub, listeners) = one_subscriber(8);
        let mut staged = None;
        // A command that writes an event into its room, then panics.
        let panic_in_a_command = || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut room = Room::new(listeners.only(), "t", 0, Box::<Batches>::default);
                room.events().push(None, None, Fact::QueueCreated { queue: "q", queue_id: Uuid::nil() });
                panic!("a command's bug");
            }))
            .is_err()
        };
        assert!(command(&bus, &listeners, &mut staged, &[1]));
        assert!(panic_in_a_command());
        assert!(command(&bus, &listeners, &mut staged, &[3]), "unlocked as the stack unwound");
        assert_eq!(sub.drain(), [event(1), event(3)]);
        // Left unclosed, forgotten by whatever comes next: a reader, or a staged publish.
        assert!(panic_in_a_command());
        assert_eq!(sub.try_recv(), None);
        assert!(command(&bus, &listeners, &mut staged, &[4]));
        assert!(panic_in_a_command());
        send(&bus, batch(&[5]));
        assert_eq!(sub.drain(), [event(4), event(5)]);
    }

    /// Commands that make no event (reads, refused commands) of two tenants in turn, each
    /// lent one channel to every tenant: none leaves its tenant's run or name behind (the
    /// reader of an idle channel, which finds no event, would never take them).
    #[test]
    fn commands_without_events_of_two_tenants_leave_an_idle_lent_channel_empty() {
        let engine = crate::Engine::default();
        let mut sub = engine.subscribe_bounded(8);
        let (a, b) = (engine.tenant("tenant-a"), engine.tenant("tenant-b"));
        for _ in 0..1_000 {
            assert!(a.queue("nope").is_err());
            assert!(b.hangup("nope", &crate::CommandOptions::default()).is_err());
        }
        assert!(sub.try_next().is_none(), "no event was made");
        assert_eq!(sub.channel.state.lock().events.footprint(), (0, 0), "an idle channel holds nothing");
        // A command with events after them names its own tenant, and is read whole.
        a.dial(&crate::DialParams::new("+15550001", "+15550002", "app")).expect("dial");
        assert!(b.queue("nope").is_err());
        let read: Vec<String> =
            std::iter::from_fn(|| sub.try_next().map(|e| e.tenant().to_owned())).collect();
        assert_eq!(read, ["tenant-a", "tenant-a"], "the dial's two events");
        assert_eq!(sub.channel.state.lock().events.footprint(), (0, 0));
    }

    #[test]
    fn lent_commands_of_two_tenants_name_each_its_own() {
        let bus = EventBus::default();
        let mut sub = bus.subscribe(None, 8);
        let (t, u) = (String::from("tenant-t"), String::from("tenant-u"));
        let mut listeners = Listeners::default();
        bus.listens(&t, &mut listeners);
        for (seq, tenant, key) in [(1, &t, 10), (2, &u, 20), (3, &u, 20), (4, &t, 10)] {
            let mut room = Room::new(listeners.only(), tenant, key, Box::<Batches>::default);
            assert!(matches!(room, Room::Lent(_)));
            room.events().push(None, None, Fact::QueueCreated { queue: "q", queue_id: Uuid::nil() });
            assert!(
                room.publish(&bus, &listeners, tenant, key, Some((seq, Timestamp::from_secs(seq)))).is_none()
            );
        }
        let read: Vec<(String, u64, Uuid)> =
            std::iter::from_fn(|| sub.try_next().map(|e| (e.tenant().to_owned(), e.seq(), e.id()))).collect();
        let want = [(&t, 1, 10), (&u, 2, 20), (&u, 3, 20), (&t, 4, 10)]
            .map(|(tenant, seq, key)| (tenant.clone(), seq, event_id(key, seq, 0)));
        assert_eq!(read, want);
    }
}
