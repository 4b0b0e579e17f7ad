//! One queue: its members in service order and its figures.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use crate::call::{CallIdentity, CallKey};
use crate::clock::Timestamp;
use crate::event::DequeueReason;
use crate::order::{MemberOrder, Seq};
use crate::timers::QueueInstance;

/// How many bridge-dequeues the estimated wait looks back on (docs/behaviour.md §3).
const ESTIMATE_WINDOW: usize = 20;

/// Member slots by call, hashed with the calls' own key hashes.
type Index = hashbrown::HashTable<IndexEntry>;

/// Bytes of a call id the member index keeps inline (Telnyx ids have 43).
const INLINE_ID: usize = 50;

/// Where a member is, found by its call id. The id's bytes are kept inline so that a lookup
/// confirms its match without following the pointer to the call, and the band is kept so
/// that a position needs no look at the member's slot: in a queue of a million, each pointer
/// followed is a cache miss. 64 bytes, one cache line.
#[derive(Debug)]
struct IndexEntry {
    call: Arc<CallIdentity>,
    seq: u32,
    band: u8,
    /// Length of the inline id, or `u8::MAX` when it did not fit (then compared via `call`).
    id_len: u8,
    id: [u8; INLINE_ID],
}

impl IndexEntry {
    fn new(call: Arc<CallIdentity>, seq: Seq, band: u8) -> Self {
        let bytes = call.call_control_id.as_bytes();
        let mut id = [0; INLINE_ID];
        let id_len = match id.get_mut(..bytes.len()) {
            Some(inline) => {
                inline.copy_from_slice(bytes);
                u8::try_from(bytes.len()).unwrap_or(u8::MAX)
            }
            None => u8::MAX,
        };
        Self { call, seq: seq_u32(seq), band, id_len, id }
    }

    fn is(&self, key: CallKey<'_>) -> bool {
        match self.id.get(..usize::from(self.id_len)) {
            Some(inline) => inline == key.id.as_bytes(),
            None => *self.call.call_control_id == *key.id,
        }
    }

    fn seq(&self) -> Seq {
        self.seq as Seq
    }
}

/// Matches the index entry of this very call (the engine's shared identity): no id
/// comparison.
fn same_call(call: &Arc<CallIdentity>) -> impl Fn(&IndexEntry) -> bool + '_ {
    move |e| Arc::ptr_eq(&e.call, call)
}

/// Slots are bounded by twice the largest queue size (1,000,000), far below `u32::MAX`.
fn seq_u32(seq: Seq) -> u32 {
    u32::try_from(seq).expect("a slot number fits in 32 bits")
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) call: Arc<CallIdentity>,
    pub(crate) enqueued_at: Timestamp,
    pub(crate) deadline: Option<Timestamp>,
    pub(crate) keep_after_hangup: bool,
    pub(crate) priority: u8,
    /// False once the call hung up while kept in the queue.
    pub(crate) alive: bool,
}

/// A member that left, with what its `call.dequeued` event reports.
#[derive(Debug)]
pub(crate) struct Departure {
    pub(crate) position: usize,
    pub(crate) wait_time_secs: u64,
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

#[derive(Debug)]
pub(crate) struct Queue {
    /// Hash of the name: finds the queue in its tenant's table.
    pub(crate) key_hash: u64,
    pub(crate) name: Arc<str>,
    pub(crate) id: Uuid,
    pub(crate) max_size: usize,
    /// Made by the create call (never idle-collected), not by an enqueue.
    pub(crate) explicit: bool,
    pub(crate) created_at: Timestamp,
    pub(crate) updated_at: Timestamp,
    /// When the one pending idle timer of this queue fires, if one is pending.
    pub(crate) idle_timer: Option<Timestamp>,
    members: MemberOrder<Member>,
    index: Index,
    sum_enqueued_micros: u128,
    /// Enqueue times are kept non-decreasing in arrival order, so the oldest arrival is
    /// the longest waiting.
    last_enqueued_at: Timestamp,
    bridge_dequeue_times: VecDeque<Timestamp>,
    total_enqueued: u64,
    totals: DequeueTotals,
}

impl Queue {
    pub(crate) fn new(
        key_hash: u64,
        name: Arc<str>,
        max_size: usize,
        explicit: bool,
        now: Timestamp,
    ) -> Self {
        Self {
            key_hash,
            name,
            id: Uuid::new_v4(),
            max_size,
            explicit,
            created_at: now,
            updated_at: now,
            idle_timer: None,
            members: MemberOrder::default(),
            index: Index::new(),
            sum_enqueued_micros: 0,
            last_enqueued_at: Timestamp::EPOCH,
            bridge_dequeue_times: VecDeque::with_capacity(ESTIMATE_WINDOW),
            total_enqueued: 0,
            totals: DequeueTotals::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// This incarnation of the queue, for timers.
    pub(crate) fn instance(&self) -> QueueInstance {
        QueueInstance { name: self.name.clone(), key_hash: self.key_hash, id: self.id }
    }

    /// Enqueues since creation; also the arrival number of the latest member.
    pub(crate) const fn total_enqueued(&self) -> u64 {
        self.total_enqueued
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.len() == 0
    }

    pub(crate) fn is_full(&self) -> bool {
        self.members.len() >= self.max_size
    }

    fn entry(&self, key: CallKey<'_>) -> Option<&IndexEntry> {
        self.index.find(key.hash, |e| e.is(key))
    }

    fn slot(&self, key: CallKey<'_>) -> Option<Seq> {
        self.entry(key).map(IndexEntry::seq)
    }

    /// Points the index entry of `call` at `seq` (after a compaction moved it).
    fn relocate(index: &mut Index, call: &Arc<CallIdentity>, seq: Seq) {
        if let Some(entry) = index.find_mut(call.key_hash, same_call(call)) {
            entry.seq = seq_u32(seq);
        }
    }

    pub(crate) fn contains(&self, key: CallKey<'_>) -> bool {
        self.slot(key).is_some()
    }

    /// The enqueue time of a member arriving at `now`: never before the previous arrival, so
    /// that arrival order and enqueue times agree.
    pub(crate) fn arrival_time(&self, now: Timestamp) -> Timestamp {
        now.max(self.last_enqueued_at)
    }

    /// Adds a member (its `enqueued_at` from [`Queue::arrival_time`]) at the end of its
    /// priority band; returns its position.
    pub(crate) fn push(&mut self, member: Member, now: Timestamp) -> usize {
        debug_assert!(member.enqueued_at >= self.last_enqueued_at);
        self.last_enqueued_at = member.enqueued_at;
        self.sum_enqueued_micros += u128::from(member.enqueued_at.as_micros());
        self.total_enqueued += 1;
        self.updated_at = now;
        let (call, band) = (member.call.clone(), member.priority);
        let index = &mut self.index;
        let seq = self.members.push(band, member, |m, s| Self::relocate(index, &m.call, s));
        self.index.insert_unique(call.key_hash, IndexEntry::new(call, seq, band), |e| e.call.key_hash);
        self.members.position_in_band(seq, band)
    }

    /// Removes a member; `reason` is counted in the totals (`None`: dropped without a count).
    pub(crate) fn remove(
        &mut self,
        call: &Arc<CallIdentity>,
        reason: Option<DequeueReason>,
        now: Timestamp,
    ) -> Option<Departure> {
        let entry = self.index.find_entry(call.key_hash, same_call(call)).ok()?;
        let (entry, _) = entry.remove();
        let seq = entry.seq();
        let position = self.members.position_in_band(seq, entry.band);
        let index = &mut self.index;
        let member = self.members.remove(seq, |m, s| Self::relocate(index, &m.call, s));
        self.sum_enqueued_micros -= u128::from(member.enqueued_at.as_micros());
        self.updated_at = now;
        if let Some(reason) = reason {
            self.count(reason, now);
        }
        let wait_time_secs = now.secs_since(member.enqueued_at);
        Some(Departure { position, wait_time_secs })
    }

    fn count(&mut self, reason: DequeueReason, now: Timestamp) {
        match reason {
            DequeueReason::Bridged => {
                self.totals.bridged += 1;
                if self.bridge_dequeue_times.len() == ESTIMATE_WINDOW {
                    self.bridge_dequeue_times.pop_front();
                }
                self.bridge_dequeue_times.push_back(now);
            }
            DequeueReason::Hangup => self.totals.hangup += 1,
            DequeueReason::Leave => self.totals.leave += 1,
            DequeueReason::Timeout => self.totals.timeout += 1,
        }
    }

    pub(crate) fn head(&self) -> Option<&Member> {
        self.members.head().map(|s| self.members.get(s))
    }

    pub(crate) fn member(&self, key: CallKey<'_>) -> Option<&Member> {
        self.slot(key).map(|s| self.members.get(s))
    }

    /// The member that is this very call (the engine's shared identity): no id comparison.
    pub(crate) fn member_of(&self, call: &Arc<CallIdentity>) -> Option<&Member> {
        let entry = self.index.find(call.key_hash, same_call(call))?;
        Some(self.members.get(entry.seq()))
    }

    pub(crate) fn member_mut(&mut self, key: CallKey<'_>) -> Option<&mut Member> {
        let seq = self.slot(key)?;
        Some(self.members.get_mut(seq))
    }

    pub(crate) fn position(&self, key: CallKey<'_>) -> Option<usize> {
        self.entry(key).map(|e| self.members.position_in_band(e.seq(), e.band))
    }

    pub(crate) fn set_priority(&mut self, key: CallKey<'_>, priority: u8, now: Timestamp) {
        if let Some(entry) = self.index.find_mut(key.hash, |e| e.is(key)) {
            entry.band = priority;
            let seq = entry.seq();
            self.members.get_mut(seq).priority = priority;
            self.members.set_band(seq, priority);
            self.updated_at = now;
        }
    }

    /// Members at 1-based positions `from..from+count`, in service order.
    pub(crate) fn page(&self, from: usize, count: usize) -> impl Iterator<Item = (usize, &Member)> {
        (from..from.saturating_add(count))
            .map_while(move |p| self.members.seq_at(p).map(|s| (p, self.members.get(s))))
    }

    pub(crate) fn members_in_arrival_order(&self) -> impl Iterator<Item = &Member> {
        self.members.iter()
    }

    /// Floor of the mean wait of the current members, 0 when empty.
    pub(crate) fn average_wait_secs(&self, now: Timestamp) -> u64 {
        let n = self.members.len() as u128;
        if n == 0 {
            return 0;
        }
        let total = u128::from(now.as_micros()) * n;
        let waited = total.saturating_sub(self.sum_enqueued_micros);
        u64::try_from(waited / n / 1_000_000).unwrap_or(u64::MAX)
    }

    pub(crate) fn longest_wait_secs(&self, now: Timestamp) -> u64 {
        self.members.oldest().map_or(0, |m| now.secs_since(m.enqueued_at))
    }

    /// Estimated wait at `position`: position times the mean interval between the recent
    /// bridge-dequeues; 0 with fewer than two of them.
    pub(crate) fn estimated_wait_secs(&self, position: usize) -> u64 {
        let times = &self.bridge_dequeue_times;
        let (Some(first), Some(last)) = (times.front(), times.back()) else { return 0 };
        if times.len() < 2 {
            return 0;
        }
        let span = u128::from(last.as_micros().saturating_sub(first.as_micros()));
        let mean = span / (times.len() as u128 - 1);
        u64::try_from(mean * position as u128 / 1_000_000).unwrap_or(u64::MAX)
    }

    pub(crate) fn snapshot(&self, now: Timestamp) -> QueueInfo {
        QueueInfo {
            record_type: "queue",
            id: self.id,
            name: self.name.to_string(),
            current_size: self.len(),
            max_size: self.max_size,
            average_wait_time_secs: self.average_wait_secs(now),
            created_at: self.created_at,
            updated_at: self.updated_at,
            longest_wait_time_secs: self.longest_wait_secs(now),
            estimated_wait_time_secs: self.estimated_wait_secs(self.len() + 1),
            total_enqueued: self.total_enqueued,
            total_dequeued: self.totals,
            explicit: self.explicit,
        }
    }

    pub(crate) fn call_snapshot(&self, position: usize, m: &Member, now: Timestamp) -> QueueCallInfo {
        QueueCallInfo {
            record_type: "queue_call",
            call_control_id: m.call.call_control_id.to_string(),
            call_leg_id: m.call.call_leg_id,
            call_session_id: m.call.call_session_id,
            connection_id: m.call.connection_id.to_string(),
            from: m.call.from.to_string(),
            to: m.call.to.to_string(),
            enqueued_at: m.enqueued_at,
            wait_time_secs: now.secs_since(m.enqueued_at),
            queue_position: position,
            queue_id: self.id,
            queue_name: self.name.to_string(),
            is_alive: m.alive,
            priority: m.priority,
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
