//! Per-tenant timers: queue-member deadlines, idle queues and ended-call retention.
//!
//! Timers are bucketed by whole second in a `BTreeMap`, so scheduling costs a lookup among
//! the few distinct seconds in use plus a push, and taking the due ones is proportional to
//! what is due. A timer is never cancelled: when it fires the engine checks that what it
//! was set for still holds (the member is still there with that deadline, the queue is still
//! idle, the call is still ended), so leaving a queue costs nothing here. Timers hold plain
//! keys (slab handles: slot and generation), so a stale timer keeps nothing alive. So that
//! timers made stale by churn cannot pile up, the tenant counts them as they go stale (a
//! member with a deadline leaves other than by it, a queue with an idle check pending is
//! deleted, an ended call is forgotten early) and purges once they outnumber the valid ones:
//! stale timers never exceed the valid ones (or a small floor), and a purge costs O(1)
//! amortised over the stale timers it drops (see `Txn::schedule`).

use std::collections::BTreeMap;

use crate::clock::Timestamp;
use crate::slab::Handle;

/// A timer holds plain keys: slab handles (slot and generation) of the call and of the
/// queue it was set for, checked when it fires, so a timer keeps nothing alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A member's `max_wait_time_secs` runs out; `arrival` breaks ties between equal
    /// deadlines in enqueue order.
    Deadline { queue: Handle, call: Handle, arrival: u64 },
    /// An auto queue may have been idle for `queue_idle_ttl`.
    Idle { queue: Handle },
    /// An ended call may be forgotten.
    Forget { call: Handle },
}

#[derive(Debug, Default)]
struct Bucket {
    earliest: u64,
    items: Vec<(Timestamp, Timer)>,
}

/// Below this many timers a tenant never purges.
const PURGE_FLOOR: usize = 4096;

#[derive(Debug)]
pub(crate) struct Timers {
    buckets: BTreeMap<u64, Bucket>,
    /// The earliest pending timer in microseconds (`u64::MAX`: none), read by every command.
    next: u64,
    len: usize,
    /// How many pending timers (here or taken and not yet fired) are stale.
    stale: usize,
}

impl Default for Timers {
    fn default() -> Self {
        Self { buckets: BTreeMap::new(), next: u64::MAX, len: 0, stale: 0 }
    }
}

impl Timers {
    pub(crate) fn schedule(&mut self, at: Timestamp, timer: Timer) {
        let bucket = self
            .buckets
            .entry(at.as_secs())
            .or_insert_with(|| Bucket { earliest: u64::MAX, items: Vec::new() });
        bucket.earliest = bucket.earliest.min(at.as_micros());
        bucket.items.push((at, timer));
        self.len += 1;
        self.next = self.next.min(at.as_micros());
    }

    /// When the earliest pending timer is due, in microseconds (`u64::MAX`: none).
    pub(crate) const fn next_due(&self) -> u64 {
        self.next
    }

    fn refresh_next(&mut self) {
        self.next = self.buckets.values().next().map_or(u64::MAX, |b| b.earliest);
    }

    /// Whether enough timers piled up that a purge pays for itself.
    pub(crate) const fn wants_purge(&self) -> bool {
        self.len >= PURGE_FLOOR && self.stale * 2 > self.len
    }

    /// A pending timer went stale (it will do nothing when it fires).
    pub(crate) const fn note_stale(&mut self) {
        self.stale += 1;
    }

    /// A stale timer fired (and did nothing).
    pub(crate) const fn note_stale_fired(&mut self) {
        self.stale = self.stale.saturating_sub(1);
    }

    /// Drops every timer for which `valid` says no.
    pub(crate) fn purge(&mut self, mut valid: impl FnMut(Timestamp, &Timer) -> bool) {
        self.buckets.retain(|_, bucket| {
            bucket.items.retain(|(at, t)| valid(*at, t));
            bucket.earliest = bucket.items.iter().map(|(at, _)| at.as_micros()).min().unwrap_or(u64::MAX);
            !bucket.items.is_empty()
        });
        self.len = self.buckets.values().map(|b| b.items.len()).sum();
        self.stale = 0;
        self.refresh_next();
    }

    #[cfg(test)]
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// The stale count (for a snapshot).
    pub(crate) const fn stale(&self) -> usize {
        self.stale
    }

    /// The buckets: each second with its timers in the order they were set (for a
    /// snapshot: the order of timers due at one instant is the order they fire in).
    pub(crate) fn buckets(&self) -> impl ExactSizeIterator<Item = (u64, &[(Timestamp, Timer)])> + Clone {
        self.buckets.iter().map(|(second, b)| (*second, b.items.as_slice()))
    }

    /// Timers with these buckets (as [`Timers::buckets`] gave them: seconds increasing,
    /// none empty, each timer in the bucket of its second) and this stale count.
    pub(crate) fn from_parts(
        buckets: Vec<(u64, Vec<(Timestamp, Timer)>)>,
        stale: usize,
    ) -> Result<Self, String> {
        let mut timers = Self { stale, ..Self::default() };
        for (second, items) in buckets {
            if timers.buckets.last_key_value().is_some_and(|(last, _)| *last >= second) {
                return Err(format!("timer second {second} out of order"));
            }
            if let Some((at, _)) = items.iter().find(|(at, _)| at.as_secs() != second) {
                return Err(format!("a timer due at {} µs in the bucket of second {second}", at.as_micros()));
            }
            let Some(earliest) = items.iter().map(|(at, _)| at.as_micros()).min() else {
                return Err(format!("an empty bucket of timers at second {second}"));
            };
            timers.len += items.len();
            timers.next = timers.next.min(earliest);
            timers.buckets.insert(second, Bucket { earliest, items });
        }
        Ok(timers)
    }

    /// The earliest pending timer, exactly.
    #[cfg(test)]
    pub(crate) fn earliest(&self) -> Option<Timestamp> {
        self.buckets.values().next().map(|b| Timestamp::from_micros(b.earliest))
    }

    /// Moves every timer due at `now` into `out`.
    pub(crate) fn take_due(&mut self, now: Timestamp, out: &mut Vec<(Timestamp, Timer)>) {
        self.take_due_inner(now, out);
        self.refresh_next();
    }

    fn take_due_inner(&mut self, now: Timestamp, out: &mut Vec<(Timestamp, Timer)>) {
        while let Some(mut entry) = self.buckets.first_entry() {
            let second = *entry.key();
            let bucket = entry.get_mut();
            if bucket.earliest > now.as_micros() {
                break;
            }
            if second < now.as_secs() {
                let items = entry.remove().items;
                self.len -= items.len();
                out.extend(items);
                continue;
            }
            // The bucket of the current second: take what is due, keep the rest.
            let mut rest = Vec::new();
            for item in bucket.items.drain(..) {
                if item.0 <= now {
                    out.push(item);
                    self.len -= 1;
                } else {
                    rest.push(item);
                }
            }
            if rest.is_empty() {
                entry.remove();
            } else {
                bucket.earliest = rest.iter().map(|(at, _)| at.as_micros()).min().unwrap_or(u64::MAX);
                bucket.items = rest;
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forget(n: u32) -> Timer {
        Timer::Forget { call: Handle { ix: n, generation: 0 } }
    }

    #[test]
    fn takes_exactly_what_is_due() {
        let mut t = Timers::default();
        t.schedule(Timestamp::from_micros(2_500_000), forget(1));
        t.schedule(Timestamp::from_micros(2_000_001), forget(2));
        t.schedule(Timestamp::from_micros(7_000_000), forget(3));
        assert_eq!(t.earliest(), Some(Timestamp::from_micros(2_000_001)));
        assert_eq!(t.next_due(), 2_000_001);
        let mut out = Vec::new();
        t.take_due(Timestamp::from_micros(2_000_000), &mut out);
        assert!(out.is_empty());
        t.take_due(Timestamp::from_micros(2_000_001), &mut out);
        assert_eq!(out, vec![(Timestamp::from_micros(2_000_001), forget(2))]);
        assert_eq!(t.earliest(), Some(Timestamp::from_micros(2_500_000)));
        out.clear();
        t.take_due(Timestamp::from_secs(100), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(t.earliest(), None);
        assert_eq!(t.next_due(), u64::MAX);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn parts_round_trip_in_order_and_bad_buckets_are_refused() {
        let mut t = Timers::default();
        t.schedule(Timestamp::from_micros(5_000_002), forget(1));
        t.schedule(Timestamp::from_micros(5_000_001), forget(2));
        t.schedule(Timestamp::from_secs(9), forget(3));
        t.note_stale();
        let parts = |t: &Timers| t.buckets().map(|(s, items)| (s, items.to_vec())).collect::<Vec<_>>();
        let mut again = Timers::from_parts(parts(&t), t.stale()).unwrap();
        assert_eq!((again.len(), again.stale(), again.next_due()), (3, 1, 5_000_001));
        let mut out = Vec::new();
        again.take_due(Timestamp::from_secs(6), &mut out);
        assert_eq!(out.iter().map(|(_, t)| *t).collect::<Vec<_>>(), [forget(1), forget(2)], "set order kept");
        let at = |s| (s, vec![(Timestamp::from_secs(s), forget(0))]);
        assert!(Timers::from_parts(vec![at(2), at(1)], 0).is_err(), "seconds out of order");
        assert!(Timers::from_parts(vec![at(2), at(2)], 0).is_err(), "a second twice");
        assert!(Timers::from_parts(vec![(3, vec![(Timestamp::from_secs(4), forget(0))])], 0).is_err());
        assert!(Timers::from_parts(vec![(3, Vec::new())], 0).is_err(), "an empty bucket");
    }

    #[test]
    fn purge_keeps_only_valid_timers() {
        let mut t = Timers::default();
        for n in 0..10_000 {
            t.schedule(Timestamp::from_secs(u64::from(n % 7)), forget(n));
        }
        assert!(!t.wants_purge());
        for _ in 0..5_000 {
            t.note_stale();
        }
        assert!(!t.wants_purge(), "as many stale as valid");
        t.note_stale();
        assert!(t.wants_purge());
        t.purge(|_, timer| matches!(timer, Timer::Forget { call } if call.ix % 2 == 0));
        assert_eq!(t.len(), 5_000);
        assert!(!t.wants_purge());
        assert_eq!(t.earliest(), Some(Timestamp::from_secs(0)));
    }
}
