//! One queue: its members in service order and its figures.
//!
//! The queue keeps only the order of its members, as slots of the tenant's call slab; what
//! it knows of each member (band, slot in the order, enqueue time, deadline, flags) is in the
//! member's call record ([`Membership`]), so a command that found the call has the member
//! too. Operations that touch members take the call slab.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::call::{CallRecord, Link, Membership};
use crate::clock::Timestamp;
use crate::event::DequeueReason;
use crate::figures::{DayFigures, Figures, WaitHistogram};
use crate::order::{MemberOrder, Seq};
use crate::slab::{Slab, Vacant};
use crate::text;

/// How many bridge-dequeues the estimated wait looks back on (docs/behaviour.md §3).
pub(crate) const ESTIMATE_WINDOW: usize = 20;

/// Slots are bounded by twice the largest queue size (1,000,000), far below `u32::MAX`:
/// a plain conversion (checked in tests), not a test on every arrival.
fn seq_u32(seq: Seq) -> u32 {
    debug_assert!(u32::try_from(seq).is_ok(), "a slot number fits in 32 bits");
    seq as u32
}

/// Points the membership of the call in slot `call` at its new slot in the order (after a
/// compaction moved it).
fn relocate(calls: &mut Slab<CallRecord>, call: u32, seq: Seq) {
    if let Link::Queued(m) = &mut calls.at_mut(call).link {
        m.arrival = seq_u32(seq);
    }
}

/// Slots of [`BridgeTimes`]' ring: a power of two at least [`ESTIMATE_WINDOW`], so that a
/// time's slot is its number masked, with no wrap to test.
const RING_SLOTS: usize = ESTIMATE_WINDOW.next_power_of_two();

/// The times of the last bridge-dequeues of a queue (at most [`ESTIMATE_WINDOW`]), oldest
/// first, in a fixed ring: a bridge writes one slot and counts one more time, with no pop
/// and push of a deque and no index to wrap.
#[derive(Debug, Default)]
pub(crate) struct BridgeTimes {
    /// None in a vacant slot's placeholder, which holds no ring. One pointer (a slice's
    /// length would move the queue's fields).
    times: Option<Box<[Timestamp; RING_SLOTS]>>,
    /// Times pushed since the ring was made: the `n`-th (from 0) is in slot `n %
    /// RING_SLOTS` while it is among the last [`ESTIMATE_WINDOW`].
    pushed: u64,
}

const LIVE_RING: &str = "a live queue has its ring";

impl BridgeTimes {
    /// A live queue's ring, made with the queue (made at its first bridge, it lay apart
    /// from the queue's other allocations: more misses a pair).
    fn new() -> Self {
        Self { times: Some(Box::new([Timestamp::EPOCH; RING_SLOTS])), pushed: 0 }
    }

    /// The slot of the `n`-th time pushed.
    const fn slot(n: u64) -> usize {
        (n % RING_SLOTS as u64) as usize
    }

    /// Adds the latest time; past [`ESTIMATE_WINDOW`] times it replaces the oldest.
    fn push(&mut self, at: Timestamp) {
        let slot = Self::slot(self.pushed);
        self.times.as_deref_mut().expect(LIVE_RING)[slot] = at;
        self.pushed += 1;
    }

    fn times(&self) -> &[Timestamp; RING_SLOTS] {
        self.times.as_deref().expect(LIVE_RING)
    }

    pub(crate) fn len(&self) -> usize {
        self.pushed.min(ESTIMATE_WINDOW as u64) as usize
    }

    /// The number of the oldest time kept.
    fn oldest(&self) -> u64 {
        self.pushed - self.len() as u64
    }

    /// The oldest and the latest time, if any.
    fn span(&self) -> Option<(Timestamp, Timestamp)> {
        (self.pushed > 0)
            .then(|| (self.times()[Self::slot(self.oldest())], self.times()[Self::slot(self.pushed - 1)]))
    }

    /// The times, oldest first.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &Timestamp> + Clone {
        let oldest = self.oldest();
        (0..self.len()).map(move |i| &self.times()[Self::slot(oldest + i as u64)])
    }
}

/// The last [`ESTIMATE_WINDOW`] of the times, oldest first (a snapshot's, checked before).
impl FromIterator<Timestamp> for BridgeTimes {
    fn from_iter<I: IntoIterator<Item = Timestamp>>(times: I) -> Self {
        let mut ring = Self::new();
        for at in times {
            ring.push(at);
        }
        ring
    }
}

/// A member that left, with what its `call.dequeued` event reports.
#[derive(Debug)]
pub(crate) struct Departure {
    pub(crate) position: usize,
    pub(crate) waited_micros: u64,
}

impl Departure {
    /// The whole seconds waited, as the event reports them (worked out only for it).
    pub(crate) const fn wait_time_secs(&self) -> u64 {
        self.waited_micros / 1_000_000
    }
}

/// Counts of calls that left a queue, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DequeueTotals {
    /// Bridged to an agent (or another call).
    pub bridged: u64,
    /// Hung up while waiting.
    pub hangup: u64,
    /// Left by `leave_queue`, by a move to another queue, or removed by the API.
    pub leave: u64,
    /// `max_wait_time_secs` ran out.
    pub timeout: u64,
}

/// In `repr(C)` order, hot fields first and cache-line aligned: a pair (enqueue, then
/// bridge from the queue) reads and writes the first four lines and the figures' counts of
/// the day; the names and times it does not touch come last. With many queues a queue's
/// lines are rarely still in the nearest cache, so each line touched is a miss.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Queue {
    pub(crate) name: Arc<str>,
    /// The name's bytes as [`text::words`] (zero when it is not 4 to 16 bytes long): its
    /// lookup compares them beside the name's length, in the line it reads anyway, instead
    /// of the name's bytes behind their pointer through `memcmp`.
    pub(crate) name_words: [u64; 2],
    pub(crate) max_size: usize,
    /// Call slots in service order.
    pub(crate) members: MemberOrder<u32>,
    /// Hash of the name: finds the queue in its tenant's table.
    pub(crate) key_hash: u64,
    pub(crate) sum_enqueued_micros: u128,
    /// Enqueue times are kept non-decreasing in arrival order, so the oldest arrival is
    /// the longest waiting.
    pub(crate) last_enqueued_at: Timestamp,
    pub(crate) total_enqueued: u64,
    pub(crate) updated_at: Timestamp,
    /// When the one pending idle timer of this queue fires, if one is pending.
    pub(crate) idle_timer: Option<Timestamp>,
    /// Made by the create call (never idle-collected), not by an enqueue.
    pub(crate) explicit: bool,
    /// Departures since creation, by [`DequeueReason::index`] ([`Queue::totals`]).
    pub(crate) departed: [u64; DequeueReason::COUNT],
    pub(crate) bridge_dequeue_times: BridgeTimes,
    pub(crate) figures: Figures,
    pub(crate) id: Uuid,
    pub(crate) created_at: Timestamp,
}

/// What a vacant slot of the queues' slab holds: an empty queue of no name that holds
/// nothing on the heap (a queue's removal allocates nothing: its name is one shared by
/// every vacant slot, a process-wide static as the vacant call's identity; its order has
/// no bands' headers, and it has no ring of bridge times).
impl Vacant for Queue {
    fn vacant() -> Self {
        static NO_NAME: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
        Self::unallocated(0, Arc::clone(&NO_NAME), Uuid::nil(), 0, false, Timestamp::EPOCH)
    }
}

impl Queue {
    /// The queue `unallocated` describes, with its order's bands and its ring of bridge
    /// times (what a placeholder does without): a new queue is
    /// `Queue::unallocated(..).with_room()`. Out of line: a queue is made once, and inlined
    /// into the command that makes it, it changed how the pair's commands were compiled
    /// (+9 instructions a pair).
    #[cold]
    #[inline(never)]
    pub(crate) fn with_room(self) -> Self {
        Self { members: MemberOrder::default(), bridge_dequeue_times: BridgeTimes::new(), ..self }
    }

    /// A queue with nothing on the heap but its name: neither its order's bands nor its
    /// ring of bridge times (see [`Queue::with_room`]).
    pub(crate) fn unallocated(
        key_hash: u64,
        name: Arc<str>,
        id: Uuid,
        max_size: usize,
        explicit: bool,
        now: Timestamp,
    ) -> Self {
        Self {
            key_hash,
            name_words: text::words(name.as_bytes()).unwrap_or_default(),
            name,
            id,
            max_size,
            explicit,
            created_at: now,
            updated_at: now,
            idle_timer: None,
            members: MemberOrder::unallocated(),
            sum_enqueued_micros: 0,
            last_enqueued_at: Timestamp::EPOCH,
            bridge_dequeue_times: BridgeTimes::default(),
            total_enqueued: 0,
            departed: [0; DequeueReason::COUNT],
            figures: Figures::new(now),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Enqueues since creation; also the arrival number of the latest member.
    pub(crate) const fn total_enqueued(&self) -> u64 {
        self.total_enqueued
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.len() == 0
    }

    /// An auto queue with no member and no idle check pending: one must be set, so that
    /// it is collected if it stays idle.
    pub(crate) fn wants_idle_check(&self) -> bool {
        self.is_empty() && !self.explicit && self.idle_timer.is_none()
    }

    /// Whether it is full once `pending` more calls have joined (a batch's run, not yet
    /// admitted; 0 for a single command).
    pub(crate) fn is_full_with(&self, pending: usize) -> bool {
        self.members.len() + pending >= self.max_size
    }

    /// The enqueue time of a member arriving at `now`: never before the previous arrival, so
    /// that arrival order and enqueue times agree.
    pub(crate) fn arrival_time(&self, now: Timestamp) -> Timestamp {
        now.max(self.last_enqueued_at)
    }

    /// Adds the call in slot `call` (enqueued at [`Queue::arrival_time`]) at the end of
    /// `band`; returns its slot in the order. The caller then stores the membership in the
    /// call's record. Inlined, with what it calls: each enqueue's compiled instance
    /// inlines the join, and a call of it (or of its parts) cost ~20 instructions.
    #[inline]
    pub(crate) fn push(
        &mut self,
        calls: &mut Slab<CallRecord>,
        call: u32,
        band: u8,
        enqueued_at: Timestamp,
        now: Timestamp,
    ) -> u32 {
        let slot = seq_u32(self.members.push(band, call, |&c, s| relocate(calls, c, s)));
        self.count_arrivals(1, enqueued_at, now);
        slot
    }

    /// Appends the call in slot `call` to a run of arrivals into one band (a batch's),
    /// which [`Queue::admit_run`] ends; returns its slot in the order. Until then the queue
    /// must not be read or changed otherwise: its order, counts and figures are those of
    /// before the run. The caller made room first ([`Queue::reserve`]).
    pub(crate) fn append(&mut self, call: u32) -> u32 {
        seq_u32(self.members.append_unmarked(call))
    }

    /// Ends a run of `count` arrivals appended from slot `first` on: they become the last
    /// members of `band`, all enqueued at `enqueued_at` (from [`Queue::arrival_time`]), and
    /// are counted as that many single pushes would count them.
    pub(crate) fn admit_run(
        &mut self,
        band: u8,
        first: u32,
        count: u32,
        enqueued_at: Timestamp,
        now: Timestamp,
    ) {
        self.members.mark_run(band, first as Seq, count as usize);
        self.count_arrivals(count, enqueued_at, now);
    }

    /// Counts `count` arrivals at `enqueued_at`, now members.
    #[inline]
    fn count_arrivals(&mut self, count: u32, enqueued_at: Timestamp, now: Timestamp) {
        debug_assert!(enqueued_at >= self.last_enqueued_at);
        self.last_enqueued_at = enqueued_at;
        self.sum_enqueued_micros += u128::from(enqueued_at.as_micros()) * u128::from(count);
        self.total_enqueued += u64::from(count);
        self.updated_at = now;
        self.figures.joined(now, self.members.len(), count);
    }

    /// Slots of the order before it must compact or grow.
    #[cfg(test)]
    pub(crate) const fn order_capacity(&self) -> usize {
        self.members.capacity()
    }

    /// Makes room for `additional` more members (see [`MemberOrder::reserve`]).
    pub(crate) fn reserve(&mut self, calls: &mut Slab<CallRecord>, additional: usize) {
        self.members.reserve(additional, |&c, s| relocate(calls, c, s));
    }

    /// Removes a member (its membership `m`, still in its record); `reason` is counted in
    /// the totals (`None`: dropped without a count). The position it had is worked out only
    /// if `with_position` (someone listens for the event that reports it), else it is 0.
    /// A wait of at most `service_level_micros` was answered in time.
    pub(crate) fn remove(
        &mut self,
        calls: &mut Slab<CallRecord>,
        m: &Membership,
        reason: Option<DequeueReason>,
        now: Timestamp,
        with_position: bool,
        service_level_micros: u64,
    ) -> Departure {
        let seq = m.arrival as Seq;
        let position = if with_position { self.members.position_in_band(seq, m.band) } else { 0 };
        self.members.remove(seq, m.band, |&c, s| relocate(calls, c, s));
        self.sum_enqueued_micros -= u128::from(m.enqueued_at.as_micros());
        self.updated_at = now;
        if let Some(reason) = reason {
            self.departed[reason.index()] += 1;
            if reason == DequeueReason::Bridged {
                self.bridge_dequeue_times.push(now);
            }
        }
        let waited_micros = now.as_micros().saturating_sub(m.enqueued_at.as_micros());
        self.figures.left(now, reason, waited_micros, service_level_micros, self.members.len());
        Departure { position, waited_micros }
    }

    /// Departures since creation, by reason.
    pub(crate) const fn totals(&self) -> DequeueTotals {
        let [bridged, hangup, leave, timeout] = self.departed;
        DequeueTotals { bridged, hangup, leave, timeout }
    }

    /// The call slot of the member served next.
    pub(crate) fn head(&self) -> Option<u32> {
        self.members.head().map(|s| *self.members.get(s))
    }

    /// The call slot at `m`'s place in the order (for checks).
    pub(crate) fn call_at(&self, m: &Membership) -> Option<u32> {
        self.members.try_get(m.arrival as Seq).copied()
    }

    /// The band the order has `m`'s slot in, if it holds it (for checks).
    pub(crate) fn band_at(&self, m: &Membership) -> Option<u8> {
        self.members.band_of(m.arrival as Seq)
    }

    /// The 1-based position of a member: O(log n).
    pub(crate) fn position(&self, m: &Membership) -> usize {
        self.members.position_in_band(m.arrival as Seq, m.band)
    }

    /// Moves a member to another priority band, keeping its arrival order.
    pub(crate) fn set_priority(&mut self, m: &mut Membership, priority: u8, now: Timestamp) {
        self.members.set_band(m.arrival as Seq, m.band, priority);
        m.band = priority;
        self.updated_at = now;
    }

    /// Call slots of the members at 1-based positions `from..from+count`, in service order.
    pub(crate) fn page(&self, from: usize, count: usize) -> impl Iterator<Item = (usize, u32)> + '_ {
        (from..from.saturating_add(count))
            .map_while(move |p| self.members.seq_at(p).map(|s| (p, *self.members.get(s))))
    }

    /// Call slots of the members in arrival order (not service order).
    pub(crate) fn members_in_arrival_order(&self) -> impl Iterator<Item = u32> + '_ {
        self.members.iter().copied()
    }

    /// Floor of the mean wait of the current members, 0 when empty.
    pub(crate) fn average_wait_secs(&self, now: Timestamp) -> u64 {
        mean_wait_secs(now, self.members.len(), self.sum_enqueued_micros)
    }

    pub(crate) fn longest_wait_secs(&self, calls: &Slab<CallRecord>, now: Timestamp) -> u64 {
        let oldest = self.members.oldest().and_then(|&c| calls.at(c).membership());
        oldest.map_or(0, |m| now.secs_since(m.enqueued_at))
    }

    /// Estimated wait at `position`: position times the mean interval between the recent
    /// bridge-dequeues; 0 with fewer than two of them.
    pub(crate) fn estimated_wait_secs(&self, position: usize) -> u64 {
        let times = &self.bridge_dequeue_times;
        let Some((first, last)) = times.span() else { return 0 };
        if times.len() < 2 {
            return 0;
        }
        let span = u128::from(last.as_micros().saturating_sub(first.as_micros()));
        let mean = span / (times.len() as u128 - 1);
        u64::try_from(mean * position as u128 / 1_000_000).unwrap_or(u64::MAX)
    }

    pub(crate) fn snapshot(
        &self,
        calls: &Slab<CallRecord>,
        now: Timestamp,
        service_level: Duration,
    ) -> QueueInfo {
        QueueInfo {
            record_type: "queue",
            id: self.id,
            name: self.name.to_string(),
            current_size: self.len(),
            max_size: self.max_size,
            average_wait_time_secs: self.average_wait_secs(now),
            created_at: self.created_at,
            updated_at: self.updated_at,
            longest_wait_time_secs: self.longest_wait_secs(calls, now),
            estimated_wait_time_secs: self.estimated_wait_secs(self.len() + 1),
            total_enqueued: self.total_enqueued,
            total_dequeued: self.totals(),
            explicit: self.explicit,
            service_level_secs: service_level.as_secs(),
            bridged_within_service_level: self.figures.bridged_within_service_level,
            today: self.figures.today(now),
            wait_histogram: self.figures.waits(),
            length_last_hour: self.figures.length_last_hour(now, self.len()),
        }
    }

    /// A member's snapshot: `rec` is its call, `m` its membership.
    pub(crate) fn call_snapshot(
        &self,
        position: usize,
        rec: &CallRecord,
        m: &Membership,
        now: Timestamp,
    ) -> QueueCallInfo {
        let call = &rec.ident;
        QueueCallInfo {
            record_type: "queue_call",
            call_control_id: call.call_control_id.to_string(),
            call_leg_id: call.call_leg_id,
            call_session_id: call.call_session_id,
            connection_id: call.connection_id.to_string(),
            from: call.from.to_string(),
            to: call.to.to_string(),
            enqueued_at: m.enqueued_at,
            wait_time_secs: now.secs_since(m.enqueued_at),
            queue_position: position,
            queue_id: self.id,
            queue_name: self.name.to_string(),
            is_alive: m.alive,
            priority: m.band,
            keep_after_hangup: m.keep_after_hangup,
            estimated_wait_time_secs: self.estimated_wait_secs(position),
        }
    }
}

/// A queue's state and figures, as read by `GET /v2/queues/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueInfo {
    /// Always `"queue"`.
    pub record_type: &'static str,
    /// New each time a queue of this name is created.
    pub id: Uuid,
    /// The queue's name.
    pub name: String,
    /// Members, dead kept calls included.
    pub current_size: usize,
    /// Enqueues fail at this size.
    pub max_size: usize,
    /// Floor of the mean wait of the current members.
    pub average_wait_time_secs: u64,
    /// When the queue was created.
    pub created_at: Timestamp,
    /// When its members or settings last changed.
    pub updated_at: Timestamp,
    /// \[ext\] Wait of the longest-waiting member.
    pub longest_wait_time_secs: u64,
    /// \[ext\] Estimated wait for a caller joining now.
    pub estimated_wait_time_secs: u64,
    /// \[ext\] Enqueues since the queue was created.
    pub total_enqueued: u64,
    /// \[ext\] Departures since the queue was created, by reason.
    pub total_dequeued: DequeueTotals,
    /// \[ext\] Created by the create call (never idle-collected).
    pub explicit: bool,
    /// \[ext\] The service-level threshold the figures count against (whole seconds).
    pub service_level_secs: u64,
    /// \[ext\] Calls bridged after waiting no longer than the threshold, since creation.
    pub bridged_within_service_level: u64,
    /// \[ext\] What happened to the callers since midnight UTC, with the service level.
    pub today: DayFigures,
    /// \[ext\] Waits of the callers who left, since creation.
    pub wait_histogram: WaitHistogram,
    /// \[ext\] The longest length in each of the last 60 minutes, oldest first.
    pub length_last_hour: Vec<u32>,
}

/// A member of a queue, as read by `GET /v2/queues/{name}/calls/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueCallInfo {
    /// Always `"queue_call"`.
    pub record_type: &'static str,
    /// The call's id.
    pub call_control_id: String,
    /// Unique id of the leg.
    pub call_leg_id: Uuid,
    /// Id of the session.
    pub call_session_id: Uuid,
    /// The connection.
    pub connection_id: String,
    /// The calling party.
    pub from: String,
    /// The called party.
    pub to: String,
    /// When the call joined the queue.
    pub enqueued_at: Timestamp,
    /// Whole seconds waited so far.
    pub wait_time_secs: u64,
    /// 1-based position in service order.
    pub queue_position: usize,
    /// The queue's id.
    pub queue_id: Uuid,
    /// \[ext\] The queue's name.
    pub queue_name: String,
    /// False for a call kept in the queue after hangup.
    pub is_alive: bool,
    /// \[ext\] Priority band, 0..=9, higher served first.
    pub priority: u8,
    /// \[ext\] Whether the call stays in the queue after hangup.
    pub keep_after_hangup: bool,
    /// \[ext\] Estimated wait at this position.
    pub estimated_wait_time_secs: u64,
}

/// Floor of the mean wait in seconds of `members` calls whose enqueue times (in
/// microseconds) sum to `sum_enqueued_micros`, at `now`; 0 for none.
fn mean_wait_secs(now: Timestamp, members: usize, sum_enqueued_micros: u128) -> u64 {
    let n = members as u128;
    if n == 0 {
        return 0;
    }
    let waited = (u128::from(now.as_micros()) * n).saturating_sub(sum_enqueued_micros);
    // Within 64 bits but for ~584,000 years of waits: one 64-bit division instead of two
    // calls of the library's 128-bit one (every `call.enqueued` reads this).
    if let (Ok(waited), Ok(per_member)) = (u64::try_from(waited), u64::try_from(n * 1_000_000)) {
        return waited / per_member;
    }
    u64::try_from(waited / n / 1_000_000).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of, size_of};

    use super::*;

    /// The layout the pair path counts on: the fields an enqueue and a bridge from the queue
    /// touch in the first four cache lines, the day's figures in the fifth.
    #[test]
    fn hot_fields_of_a_queue_fill_its_first_lines() {
        assert_eq!(align_of::<Queue>(), 64);
        assert!(offset_of!(Queue, bridge_dequeue_times) + size_of::<BridgeTimes>() <= 4 * 64);
        let day_figures = offset_of!(Queue, figures);
        assert_eq!(day_figures % 64, 0, "today's counts in one line (see `figures`)");
        // The minute's peak length, the sum of the waits and the first wait buckets share
        // the next line.
        let next_line = day_figures + 64..day_figures + 128;
        for field in [
            offset_of!(Figures, peak),
            offset_of!(Figures, wait_sum_micros),
            offset_of!(Figures, wait_counts),
        ] {
            assert!(next_line.contains(&(day_figures + field)));
        }
        assert!(offset_of!(Queue, id) > day_figures, "the id is read by snapshots only");
    }

    /// The mean wait is floored to whole seconds, the same through the 64-bit division and
    /// past it (waits summing beyond 64 bits of microseconds).
    #[test]
    fn mean_wait_is_floored_on_both_sides_of_64_bits() {
        let at = |micros: u64| Timestamp::from_micros(micros);
        assert_eq!(mean_wait_secs(at(10_000_000), 0, 0), 0);
        // Three members enqueued at 1 s, 2 s and 3.5 s, read at 10 s: waits 9, 8 and
        // 6.5 s, mean 7.83 s.
        assert_eq!(mean_wait_secs(at(10_000_000), 3, 6_500_000), 7);
        // Exactly 8 s: no rounding down past it.
        assert_eq!(mean_wait_secs(at(10_000_000), 2, 4_000_000), 8);
        // Enqueued after `now` (a clock set back): no wait, not an underflow.
        assert_eq!(mean_wait_secs(at(1_000_000), 2, 5_000_000), 0);
        // Two members waiting since time 0 at the largest instant: the waits' sum needs
        // 65 bits, and the mean is the instant itself.
        let last = at(u64::MAX);
        assert_eq!(mean_wait_secs(last, 2, 0), u64::MAX / 1_000_000);
        assert_eq!(mean_wait_secs(last, 2, 1_000_000), (u64::MAX - 500_000) / 1_000_000);
        // The sum exactly at 64 bits' edge, and one past it.
        assert_eq!(mean_wait_secs(last, 1, 0), u64::MAX / 1_000_000);
        assert_eq!(mean_wait_secs(at(u64::MAX / 2 + 1), 2, 0), (u64::MAX / 2 + 1) / 1_000_000);
    }

    /// The ring keeps the last 20 times, oldest first, across many wraps, and the estimate
    /// reads its oldest and latest.
    #[test]
    fn bridge_times_keep_the_last_twenty_in_order() {
        let mut ring = BridgeTimes::new();
        let mut all = Vec::new();
        assert_eq!((ring.len(), ring.span()), (0, None));
        for i in 0..47u64 {
            let at = Timestamp::from_micros(i * i * 1_000 + 7);
            ring.push(at);
            all.push(at);
            let last: Vec<Timestamp> = all.iter().rev().take(ESTIMATE_WINDOW).rev().copied().collect();
            assert_eq!(ring.iter().copied().collect::<Vec<_>>(), last, "after {} times", i + 1);
            assert_eq!(ring.span(), Some((last[0], *last.last().unwrap())));
            let copy: BridgeTimes = ring.iter().copied().collect();
            assert!(copy.iter().eq(ring.iter()), "read back as a snapshot does");
            assert_eq!(copy.span(), ring.span());
        }
        let too_many: BridgeTimes = all.iter().copied().collect();
        assert!(too_many.iter().eq(ring.iter()), "the last 20 of more");
    }

    /// A departure leaves its deadline timer stale unless that timer took it out; a member
    /// with no deadline leaves none (a miscount would purge the timers too early or late).
    #[test]
    fn a_departure_counts_its_deadline_timer_stale_unless_it_fired() {
        use crate::{Clock, CommandOptions, DialParams, Engine, EnqueueParams};
        let start = Timestamp::from_secs(1_767_225_600);
        let (clock, hand) = Clock::manual(start);
        let engine = Engine::builder().clock(clock).build();
        let t = engine.default_tenant();
        let stale = || t.state.lock().timers.stale();
        let none = CommandOptions::default();
        let call = t.dial(&DialParams::new("1", "2", "c")).unwrap().call_control_id;
        t.enqueue(&call, &EnqueueParams::new("q")).unwrap();
        t.leave_queue(&call, &none).unwrap();
        assert_eq!(stale(), 0, "no deadline, no timer");
        t.enqueue(&call, &EnqueueParams::new("q").max_wait_time_secs(60)).unwrap();
        t.leave_queue(&call, &none).unwrap();
        assert_eq!(stale(), 1, "left before its deadline");
        t.enqueue(&call, &EnqueueParams::new("q").max_wait_time_secs(60)).unwrap();
        hand.advance(Duration::from_secs(60));
        engine.run_pending_tasks();
        assert!(t.call(&call).unwrap().queue.is_none(), "timed out");
        // Both timers due then fired: the stale one did nothing and is no longer counted,
        // the one that took the member out was never stale.
        assert_eq!(stale(), 0);
    }
}
