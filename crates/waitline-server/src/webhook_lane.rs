//! A tenant's lane: the tenant's undelivered webhooks and the deliveries in flight, in a task
//! of its own, so that a slow or dead endpoint delays only its own tenant.
//!
//! The reader hands the lane every event of its tenant through an unbounded channel (never
//! full, never dropping). The lane keeps each call's events in order and delivers one event
//! of a call at a time; different calls are delivered side by side, with at most
//! `lane_requests` requests of the tenant in flight (a delivery waiting to retry holds none).
//! An event leaves the lane once it is delivered or finally failed: nothing is dropped, so
//! what the lane holds grows with the tenant's event rate times the time its endpoint takes
//! to accept or finally refuse (see docs/behaviour.md §7).
//!
//! With a data directory the lane also keeps the tenant's delivery mark: the highest number
//! such that every event of the tenant numbered up to it is delivered or finally failed.
//! A mark that passes a delivered (or finally failed) event is kept at once, so that a
//! restart or a takeover does not send it again; one that passes only events with nowhere
//! to go (no destination: handled as they come) is kept at most every [`MARK_LINGER`], or
//! when the lane ends: a store write per such event would cost more than the command that
//! made it, and a mark lagging by that much only makes a replay make those events again
//! (and send none of them).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;
use waitline::Event;

use crate::durable::Durability;
use crate::webhook::Failures;
use crate::webhook_delivery::{Delivery, Outcome};

/// Every how many waiting events a growing lane says so in the log.
const BACKLOG_WARNING_STEP: usize = 10_000;

/// How long a mark passing only events with no destination may wait before it is kept.
const MARK_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// The sending end of a lane, and its task.
#[derive(Debug)]
pub(crate) struct Lane {
    events: mpsc::UnboundedSender<Event>,
    pub(crate) task: JoinHandle<()>,
}

/// What a lane task needs besides its events.
#[derive(Debug, Clone)]
pub(crate) struct LaneContext {
    pub(crate) delivery: Arc<Delivery>,
    pub(crate) durability: Durability,
    pub(crate) failures: Arc<Failures>,
    /// Requests in flight at once per lane.
    pub(crate) requests: usize,
}

impl Lane {
    /// Starts the lane of `tenant` (inside a tokio runtime).
    pub(crate) fn spawn(tenant: Arc<str>, context: LaneContext) -> Self {
        let (events, rx) = mpsc::unbounded_channel();
        Self { events, task: tokio::spawn(run(tenant, rx, context)) }
    }

    /// Hands the lane an event of its tenant (in the tenant's order).
    pub(crate) fn push(&self, event: Event) {
        // The lane's task ends only once this sender is dropped.
        let _ = self.events.send(event);
    }

    /// No more events: the task ends once those it holds are handled.
    pub(crate) fn close(self) -> JoinHandle<()> {
        self.task
    }
}

/// The lane's events not yet handled.
#[derive(Debug, Default)]
struct Waiting {
    /// Per call (its leg id), the events behind the one in flight, oldest first.
    calls: HashMap<Uuid, VecDeque<Event>>,
    /// Events in `calls`, for the log.
    len: usize,
}

async fn run(tenant: Arc<str>, mut rx: mpsc::UnboundedReceiver<Event>, context: LaneContext) {
    let slots = Arc::new(Semaphore::new(context.requests.max(1)));
    let signer = Arc::new(context.delivery.signer_of(&tenant));
    let mut marks = Marks::new(tenant.clone(), context.durability.clone());
    let mut waiting = Waiting::default();
    let mut in_flight: JoinSet<(Uuid, Event, Outcome)> = JoinSet::new();
    // Which call and number each delivery task is for (to go on if one ever panicked).
    let mut calls_in_flight: HashMap<tokio::task::Id, (Uuid, u64)> = HashMap::new();
    let start = |event: Event, in_flight: &mut JoinSet<_>, calls: &mut HashMap<_, _>| {
        let (call, seq) = (leg(&event), event.seq());
        let (delivery, signer, slots) = (context.delivery.clone(), signer.clone(), slots.clone());
        let task = in_flight.spawn(async move {
            let outcome = delivery.deliver(&event, &signer, &slots).await;
            (call, event, outcome)
        });
        calls.insert(task.id(), (call, seq));
    };
    let mut open = true;
    loop {
        let keep_at = marks.keep_at();
        tokio::select! {
            event = rx.recv(), if open => {
                let Some(event) = event else { open = false; continue };
                if event.kind.subject().is_none() || !context.delivery.has_destination(&event) {
                    marks.routed(event.seq(), false); // nothing to send: handled at once
                    continue;
                }
                marks.routed(event.seq(), true);
                context.delivery.stats.pending.fetch_add(1, Ordering::Relaxed);
                match waiting.calls.get_mut(&leg(&event)) {
                    Some(behind) => {
                        behind.push_back(event);
                        waiting.len += 1;
                        if waiting.len % BACKLOG_WARNING_STEP == 0 {
                            tracing::warn!(tenant = %tenant, waiting = waiting.len, "webhooks waiting for a slow endpoint");
                        }
                    }
                    None => {
                        waiting.calls.insert(leg(&event), VecDeque::new());
                        start(event, &mut in_flight, &mut calls_in_flight);
                    }
                }
            }
            Some(done) = in_flight.join_next_with_id() => {
                let (call, seq) = match done {
                    Ok((id, (call, event, outcome))) => {
                        calls_in_flight.remove(&id);
                        if let Outcome::Failed { attempts, why } = outcome {
                            context.failures.record(&event, attempts, why);
                            context.delivery.stats.failed.fetch_add(1, Ordering::Relaxed);
                        }
                        (call, event.seq())
                    }
                    Err(e) => {
                        // A delivery cannot panic; if one did, its call's next event goes on.
                        tracing::error!(tenant = %tenant, "webhook delivery task ended: {e}");
                        let Some(at) = calls_in_flight.remove(&e.id()) else { continue };
                        at
                    }
                };
                context.delivery.stats.pending.fetch_sub(1, Ordering::Relaxed);
                marks.done(seq);
                let next = waiting.calls.get_mut(&call).and_then(VecDeque::pop_front);
                match next {
                    Some(event) => {
                        waiting.len -= 1;
                        start(event, &mut in_flight, &mut calls_in_flight);
                    }
                    None => {
                        waiting.calls.remove(&call);
                    }
                }
            }
            () = tokio::time::sleep_until(keep_at.unwrap_or_else(tokio::time::Instant::now)),
                if open && keep_at.is_some() => marks.keep(),
            else => break,
        }
    }
    marks.keep();
}

fn leg(event: &Event) -> Uuid {
    event.kind.subject().map_or(Uuid::nil(), |s| s.call.call_leg_id)
}

/// The tenant's delivery mark, kept in the store (nothing to do in memory).
#[derive(Debug)]
struct Marks {
    tenant: Arc<str>,
    durability: Durability,
    /// Numbers with events in the lane, and how many each.
    pending: BTreeMap<u64, u32>,
    /// The highest number routed.
    routed: u64,
    /// The highest number of an event delivered or finally failed.
    done: u64,
    /// The mark last kept.
    marked: u64,
    /// The mark not kept yet (it passes only events with no destination), and when it is
    /// to be kept.
    due: Option<(u64, tokio::time::Instant)>,
}

impl Marks {
    const fn new(tenant: Arc<str>, durability: Durability) -> Self {
        Self { tenant, durability, pending: BTreeMap::new(), routed: 0, done: 0, marked: 0, due: None }
    }

    /// An event numbered `seq` reached the lane: kept until done (`queued`), or handled.
    fn routed(&mut self, seq: u64, queued: bool) {
        if !self.durability.is_durable() {
            return;
        }
        self.routed = self.routed.max(seq);
        if queued {
            *self.pending.entry(seq).or_default() += 1;
        }
        self.remark();
    }

    /// An event numbered `seq` was delivered or finally failed.
    fn done(&mut self, seq: u64) {
        if !self.durability.is_durable() {
            return;
        }
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.pending.entry(seq) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        self.done = self.done.max(seq);
        self.remark();
    }

    fn remark(&mut self) {
        let mark = self.pending.first_key_value().map_or(self.routed, |(first, _)| first - 1);
        if mark <= self.marked {
            return;
        }
        if self.done > self.marked {
            // A delivered event may be past the old mark: kept now, or it would be sent again.
            self.due = Some((mark, tokio::time::Instant::now()));
            self.keep();
        } else {
            let at = self.due.map_or_else(|| tokio::time::Instant::now() + MARK_LINGER, |(_, at)| at);
            self.due = Some((mark, at));
        }
    }

    /// When the mark not kept yet is to be kept.
    fn keep_at(&self) -> Option<tokio::time::Instant> {
        self.due.map(|(_, at)| at)
    }

    /// Keeps the mark not kept yet, if any.
    fn keep(&mut self) {
        if let Some((mark, _)) = self.due.take() {
            self.marked = mark;
            self.durability.mark_delivered(&self.tenant, mark);
        }
    }
}
