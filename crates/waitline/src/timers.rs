//! Per-tenant timers: queue-member deadlines, idle queues and ended-call retention.
//!
//! Timers are bucketed by whole second. The bucket of second `s` sits in slot `s % 64` of a
//! ring when that slot is free or already holds `s` (deadlines under a minute ahead find
//! their slot; timers minutes ahead often find it held), else in a `BTreeMap` of the
//! others; so scheduling costs
//! a slot check and a push (a lookup among the seconds of the map otherwise), and taking
//! the due ones is proportional to what is due (and the ring's 64 slots, when anything is).
//! A timer is never cancelled: when it fires the engine checks that what it
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

/// The timers of one second, in the order they were set.
#[derive(Debug)]
struct Bucket {
    /// The earliest of them, in microseconds (`u64::MAX`: none).
    earliest: u64,
    items: Vec<(Timestamp, Timer)>,
}

impl Default for Bucket {
    fn default() -> Self {
        Self { earliest: u64::MAX, items: Vec::new() }
    }
}

impl Bucket {
    fn push(&mut self, at: Timestamp, timer: Timer) {
        self.earliest = self.earliest.min(at.as_micros());
        self.items.push((at, timer));
    }

    /// Moves the timers due at `now` into `out` (all of them for a second before `now`'s);
    /// returns how many.
    fn take_due(&mut self, second: u64, now: Timestamp, out: &mut Vec<(Timestamp, Timer)>) -> usize {
        if self.earliest > now.as_micros() {
            return 0;
        }
        let before = self.items.len();
        if second < now.as_secs() {
            out.append(&mut self.items);
        } else {
            // The bucket of the current second: take what is due, keep the rest in order.
            self.items.retain(|item| {
                let due = item.0 <= now;
                if due {
                    out.push(*item);
                }
                !due
            });
        }
        self.recount();
        before - self.items.len()
    }

    /// Keeps the timers for which `valid` says yes; returns how many it dropped.
    fn retain(&mut self, valid: &mut impl FnMut(Timestamp, &Timer) -> bool) -> usize {
        let before = self.items.len();
        self.items.retain(|(at, t)| valid(*at, t));
        self.recount();
        before - self.items.len()
    }

    fn recount(&mut self) {
        self.earliest = self.items.iter().map(|(at, _)| at.as_micros()).min().unwrap_or(u64::MAX);
    }
}

/// Slots of the ring: seconds `s` and `s + 64` share one.
const RING_SLOTS: usize = 64;

/// The most timers' room a free slot of the ring keeps (640 bytes: a tenant keeps at most
/// 40 KiB for seconds to come; none at all once it has no timer).
const KEPT_ROOM: usize = 16;

/// Below this many timers a tenant never purges.
const PURGE_FLOOR: usize = 4096;

#[derive(Debug)]
pub(crate) struct Timers {
    /// The bucket of second `s` in slot `s % RING_SLOTS` (empty until the first timer),
    /// and the second each slot holds.
    ring: Vec<(u64, Bucket)>,
    /// Bit `i`: slot `i` of the ring holds timers. An empty slot keeps its bucket's room.
    occupied: u64,
    /// The buckets of the seconds whose ring slot holds another second.
    spilled: BTreeMap<u64, Bucket>,
    /// The earliest pending timer in microseconds (`u64::MAX`: none), read by every command.
    next: u64,
    len: usize,
    /// How many pending timers (here or taken and not yet fired) are stale.
    stale: usize,
}

impl Default for Timers {
    fn default() -> Self {
        Self { ring: Vec::new(), occupied: 0, spilled: BTreeMap::new(), next: u64::MAX, len: 0, stale: 0 }
    }
}

impl Timers {
    pub(crate) fn schedule(&mut self, at: Timestamp, timer: Timer) {
        let second = at.as_secs();
        let slot = (second % RING_SLOTS as u64) as usize;
        // The usual case inline: the slot holds the second already.
        let held = self.occupied & (1 << slot) != 0 && self.ring[slot].0 == second;
        let bucket = if held { &mut self.ring[slot].1 } else { self.bucket_mut(second) };
        bucket.push(at, timer);
        self.len += 1;
        self.next = self.next.min(at.as_micros());
    }

    /// The bucket of `second`, made if needed: in its ring slot if the slot is free or
    /// holds it, else in the map (where it stays until it empties: one bucket per second).
    #[cold]
    #[inline(never)]
    fn bucket_mut(&mut self, second: u64) -> &mut Bucket {
        if self.ring.is_empty() {
            self.ring.resize_with(RING_SLOTS, Default::default);
        }
        let slot = (second % RING_SLOTS as u64) as usize;
        let bit = 1 << slot;
        if self.occupied & bit == 0 && !self.spilled.contains_key(&second) {
            self.occupied |= bit;
            self.ring[slot].0 = second;
        }
        if self.occupied & bit != 0 && self.ring[slot].0 == second {
            return &mut self.ring[slot].1;
        }
        self.spilled.entry(second).or_default()
    }

    /// When the earliest pending timer is due, in microseconds (`u64::MAX`: none).
    pub(crate) const fn next_due(&self) -> u64 {
        self.next
    }

    /// The occupied slots of the ring.
    fn occupied_slots(&self) -> impl Iterator<Item = usize> + use<> {
        let mut bits = self.occupied;
        std::iter::from_fn(move || {
            let slot = (bits != 0).then(|| bits.trailing_zeros() as usize)?;
            bits &= bits - 1;
            Some(slot)
        })
    }

    /// Marks ring slots left empty as free, and works out the earliest timer again. With
    /// no timer left the ring's room is given back (an idle tenant keeps none).
    fn refresh(&mut self) {
        if self.len == 0 {
            self.ring = Vec::new();
            self.occupied = 0;
            self.next = u64::MAX;
            return;
        }
        let mut next = self.spilled.values().next().map_or(u64::MAX, |b| b.earliest);
        for slot in self.occupied_slots() {
            let bucket = &mut self.ring[slot].1;
            if bucket.items.is_empty() {
                self.occupied &= !(1 << slot);
                // A usual second's room is kept for the next; a burst's is given back.
                if bucket.items.capacity() > KEPT_ROOM {
                    bucket.items = Vec::new();
                }
            }
            next = next.min(bucket.earliest);
        }
        self.next = next;
    }

    /// Checks the count, the earliest due time and the ring's rules: an occupied slot holds
    /// timers of its own second only, a free one none, the map no second the ring holds
    /// and no empty bucket (for [`crate::Engine::check_invariants`]).
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut count = 0;
        let mut earliest = u64::MAX;
        for (slot, (second, bucket)) in self.ring.iter().enumerate() {
            let occupied = self.occupied & (1 << slot) != 0;
            if occupied && (bucket.items.is_empty() || *second % RING_SLOTS as u64 != slot as u64) {
                return Err(format!(
                    "timer ring slot {slot} occupied by second {second} with {} timers",
                    bucket.items.len()
                ));
            }
            if !occupied && !bucket.items.is_empty() {
                return Err(format!("free timer ring slot {slot} holds timers"));
            }
            if occupied && self.spilled.contains_key(second) {
                return Err(format!("timer second {second} both in the ring and in the map"));
            }
        }
        if self.ring.is_empty() && self.occupied != 0 {
            return Err("timer ring slots occupied in no ring".to_owned());
        }
        for (second, items) in self.buckets() {
            if items.is_empty() {
                return Err(format!("an empty bucket of timers at second {second}"));
            }
            for (at, _) in items {
                if at.as_secs() != second {
                    return Err(format!(
                        "a timer due at {} µs in the bucket of second {second}",
                        at.as_micros()
                    ));
                }
                earliest = earliest.min(at.as_micros());
            }
            count += items.len();
        }
        if count != self.len || earliest != self.next {
            return Err(format!(
                "timers counted {} (next due {}) but holding {count} (earliest {earliest})",
                self.len, self.next
            ));
        }
        Ok(())
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
        // One loop over every bucket (a free slot's is empty): `valid` inlined once.
        let ring = self.ring.iter_mut().map(|(_, bucket)| bucket);
        for bucket in ring.chain(self.spilled.values_mut()) {
            self.len -= bucket.retain(&mut valid);
        }
        self.spilled.retain(|_, bucket| !bucket.items.is_empty());
        self.stale = 0;
        self.refresh();
    }

    #[cfg(test)]
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// The stale count (for a snapshot).
    pub(crate) const fn stale(&self) -> usize {
        self.stale
    }

    /// The buckets, seconds increasing: each second with its timers in the order they
    /// were set (for a snapshot: the order of timers due at one instant is the order they
    /// fire in).
    pub(crate) fn buckets(&self) -> impl ExactSizeIterator<Item = (u64, &[(Timestamp, Timer)])> + Clone {
        let ring = self.occupied_slots().map(|slot| {
            let (second, bucket) = &self.ring[slot];
            (*second, bucket.items.as_slice())
        });
        let spilled = self.spilled.iter().map(|(second, b)| (*second, b.items.as_slice()));
        let mut all: Vec<_> = ring.chain(spilled).collect();
        all.sort_unstable_by_key(|(second, _)| *second);
        all.into_iter()
    }

    /// Timers with these buckets (as [`Timers::buckets`] gave them: seconds increasing,
    /// none empty, each timer in the bucket of its second) and this stale count.
    pub(crate) fn from_parts(
        buckets: Vec<(u64, Vec<(Timestamp, Timer)>)>,
        stale: usize,
    ) -> Result<Self, String> {
        let mut timers = Self { stale, ..Self::default() };
        let mut last = None;
        for (second, items) in buckets {
            if last.is_some_and(|last| last >= second) {
                return Err(format!("timer second {second} out of order"));
            }
            last = Some(second);
            if let Some((at, _)) = items.iter().find(|(at, _)| at.as_secs() != second) {
                return Err(format!("a timer due at {} µs in the bucket of second {second}", at.as_micros()));
            }
            if items.is_empty() {
                return Err(format!("an empty bucket of timers at second {second}"));
            }
            for (at, timer) in items {
                timers.schedule(at, timer);
            }
        }
        Ok(timers)
    }

    /// The earliest pending timer, exactly.
    #[cfg(test)]
    pub(crate) fn earliest(&self) -> Option<Timestamp> {
        self.buckets().filter_map(|(_, items)| items.iter().map(|(at, _)| *at).min()).min()
    }

    /// Moves every timer due at `now` into `out`, in no particular order (the caller sorts
    /// them into the order they fire in).
    pub(crate) fn take_due(&mut self, now: Timestamp, out: &mut Vec<(Timestamp, Timer)>) {
        for slot in self.occupied_slots() {
            let (second, bucket) = &mut self.ring[slot];
            self.len -= bucket.take_due(*second, now, out);
        }
        while let Some(mut entry) = self.spilled.first_entry() {
            let second = *entry.key();
            let taken = entry.get_mut().take_due(second, now, out);
            if taken == 0 {
                break;
            }
            self.len -= taken;
            if entry.get().items.is_empty() {
                entry.remove();
            } else {
                break;
            }
        }
        self.refresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forget(n: u32) -> Timer {
        Timer::Forget { call: Handle { ix: n, generation: 0 } }
    }

    /// Seconds near each other take their ring slots (scheduling them is then a slot check
    /// and a push); a second whose slot another holds goes to the map.
    #[test]
    fn near_seconds_take_their_ring_slots() {
        let mut t = Timers::default();
        for (second, n) in [(5, 1), (6, 2), (5, 3), (69, 4)] {
            t.schedule(Timestamp::from_secs(second), forget(n));
        }
        assert_eq!(t.occupied, (1 << 5) | (1 << 6));
        assert_eq!((t.ring[5].0, t.ring[5].1.items.len(), t.ring[6].0), (5, 2, 6));
        assert_eq!(t.spilled.keys().copied().collect::<Vec<_>>(), [69]);
        t.check().unwrap();
    }

    /// A slot emptied with the room of a usual second keeps it for the next.
    #[test]
    fn an_emptied_slot_keeps_a_usual_seconds_room() {
        let mut t = Timers::default();
        t.schedule(Timestamp::from_secs(40), forget(0)); // still pending after
        for n in 1..=KEPT_ROOM as u32 {
            t.schedule(Timestamp::from_secs(3), forget(n));
        }
        let room = t.ring[3].1.items.capacity();
        assert_eq!(room, KEPT_ROOM, "room for exactly as many as a free slot keeps");
        t.take_due(Timestamp::from_secs(4), &mut Vec::new());
        assert_eq!((t.occupied, t.ring[3].1.items.capacity()), (1 << 40, room));
    }

    /// The check finds each way the timers' own bookkeeping can be wrong.
    #[test]
    fn the_check_finds_broken_timers() {
        let good = || {
            let mut t = Timers::default();
            t.schedule(Timestamp::from_secs(5), forget(1));
            t.schedule(Timestamp::from_secs(69), forget(2));
            t.check().unwrap();
            t
        };
        let mut t = good();
        t.len += 1;
        assert!(t.check().is_err(), "a count that is not the timers'");
        let mut t = good();
        t.next = Timestamp::from_secs(6).as_micros();
        assert!(t.check().is_err(), "an earliest due time that is not the earliest");
        let mut t = good();
        t.occupied |= 1 << 7;
        assert!(t.check().is_err(), "an occupied slot without timers");
        let mut t = good();
        t.occupied &= !(1 << 5);
        assert!(t.check().is_err(), "a free slot holding timers");
        let mut t = good();
        t.ring[5].0 = 6;
        assert!(t.check().is_err(), "a slot holding another slot's second");
        let mut t = good();
        t.spilled.entry(5).or_default().push(Timestamp::from_secs(5), forget(3));
        t.len += 1;
        assert!(t.check().is_err(), "a second both in the ring and in the map");
        let mut t = good();
        t.spilled.insert(70, Bucket::default());
        assert!(t.check().is_err(), "an empty bucket in the map");
        let mut t = good();
        t.spilled.get_mut(&69).unwrap().items[0].0 = Timestamp::from_secs(70);
        assert!(t.check().is_err(), "a timer in another second's bucket");
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

    /// Seconds that share a ring slot: the later ones wait in the map, one bucket per
    /// second even when the slot frees while a second still waits there, and all come out
    /// due in time and in the snapshot's order.
    #[test]
    fn seconds_sharing_a_ring_slot_keep_one_bucket_each() {
        let slots = RING_SLOTS as u64;
        let mut t = Timers::default();
        let at = |s: u64, us: u64| Timestamp::from_micros(s * 1_000_000 + us);
        t.schedule(at(5, 0), forget(1));
        t.schedule(at(5 + slots, 1), forget(2)); // the map: slot 5 holds second 5
        t.schedule(at(5 + 2 * slots, 2), forget(3)); // the map too
        t.schedule(at(5, 3), forget(4));
        let seconds = |t: &Timers| t.buckets().map(|(s, items)| (s, items.len())).collect::<Vec<_>>();
        assert_eq!(seconds(&t), [(5, 2), (5 + slots, 1), (5 + 2 * slots, 1)]);
        let mut out = Vec::new();
        t.take_due(at(6, 0), &mut out);
        assert_eq!(out, [(at(5, 0), forget(1)), (at(5, 3), forget(4))]);
        assert_eq!(t.next_due(), at(5 + slots, 1).as_micros());
        // Slot 5 is free, and second 5 + 64 still waits in the map: it gets no second bucket.
        t.schedule(at(5 + slots, 0), forget(5));
        assert_eq!(seconds(&t), [(5 + slots, 2), (5 + 2 * slots, 1)]);
        assert_eq!(t.earliest(), Some(at(5 + slots, 0)));
        let parts = t.buckets().map(|(s, items)| (s, items.to_vec())).collect::<Vec<_>>();
        let again = Timers::from_parts(parts.clone(), 0).unwrap();
        assert_eq!(again.buckets().map(|(s, items)| (s, items.to_vec())).collect::<Vec<_>>(), parts);
        out.clear();
        t.take_due(at(5 + 2 * slots, 2), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!((t.len(), t.next_due(), t.buckets().len()), (0, u64::MAX, 0));
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

/// The ring against a map of buckets (the design it replaced), operation by operation.
#[cfg(test)]
mod ring_tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Default)]
    struct Old {
        buckets: BTreeMap<u64, Vec<(Timestamp, Timer)>>,
    }

    impl Old {
        fn schedule(&mut self, at: Timestamp, t: Timer) {
            self.buckets.entry(at.as_secs()).or_default().push((at, t));
        }
        fn next(&self) -> u64 {
            self.buckets
                .values()
                .next()
                .map_or(u64::MAX, |b| b.iter().map(|(a, _)| a.as_micros()).min().unwrap())
        }
        fn take_due(&mut self, now: Timestamp, out: &mut Vec<(Timestamp, Timer)>) {
            while let Some(mut e) = self.buckets.first_entry() {
                let second = *e.key();
                let earliest = e.get().iter().map(|(a, _)| a.as_micros()).min().unwrap();
                if earliest > now.as_micros() {
                    break;
                }
                if second < now.as_secs() {
                    out.extend(e.remove());
                    continue;
                }
                let (due, rest): (Vec<_>, Vec<_>) = e.get_mut().drain(..).partition(|i| i.0 <= now);
                out.extend(due);
                if rest.is_empty() {
                    e.remove();
                } else {
                    *e.get_mut() = rest;
                }
                break;
            }
        }
        fn purge(&mut self, mut valid: impl FnMut(Timestamp, &Timer) -> bool) {
            self.buckets.retain(|_, b| {
                b.retain(|(a, t)| valid(*a, t));
                !b.is_empty()
            });
        }
        fn len(&self) -> usize {
            self.buckets.values().map(Vec::len).sum()
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A timer `us` microseconds after base second `s`.
        Schedule(u64, u64),
        /// Now moves to `s` seconds + `us` (may go back).
        Take(u64, u64),
        Purge(u32),
        Restore,
    }

    fn op(span: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..span, 0..3u64).prop_map(|(s, us)| Op::Schedule(s, us * 400_000)),
            2 => (0..span, 0..3u64).prop_map(|(s, us)| Op::Take(s, us * 400_000)),
            1 => (2..5u32).prop_map(Op::Purge),
            1 => Just(Op::Restore),
        ]
    }

    fn parts(t: &Timers) -> Vec<(u64, Vec<(Timestamp, Timer)>)> {
        t.buckets().map(|(s, items)| (s, items.to_vec())).collect()
    }

    fn run(base: u64, ops: &[Op]) {
        let (mut new, mut old) = (Timers::default(), Old::default());
        let mut n = 0u32;
        for op in ops {
            match *op {
                Op::Schedule(s, us) => {
                    let at = Timestamp::from_micros((base + s) * 1_000_000 + us);
                    let t = Timer::Forget { call: Handle { ix: n, generation: 0 } };
                    n += 1;
                    new.schedule(at, t);
                    old.schedule(at, t);
                }
                Op::Take(s, us) => {
                    let now = Timestamp::from_micros((base + s) * 1_000_000 + us);
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    new.take_due(now, &mut a);
                    old.take_due(now, &mut b);
                    // The ring gives them in no order: by second (stable) they must be the old order.
                    a.sort_by_key(|(at, _)| at.as_secs());
                    assert_eq!(a, b, "taken at {now:?}");
                }
                Op::Purge(m) => {
                    let keep =
                        |_: Timestamp, t: &Timer| matches!(t, Timer::Forget { call } if call.ix % m != 0);
                    new.purge(keep);
                    old.purge(keep);
                }
                Op::Restore => {
                    new = Timers::from_parts(parts(&new), new.stale()).unwrap();
                }
            }
            let want: Vec<_> = old.buckets.iter().map(|(s, b)| (*s, b.clone())).collect();
            assert_eq!(parts(&new), want, "after {op:?}");
            assert_eq!(new.next_due(), old.next(), "after {op:?}");
            assert_eq!(new.len(), old.len(), "after {op:?}");
            assert_eq!(new.buckets().len(), want.len());
            new.check().unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// Seconds close together (the ring) and far apart (many sharing slots).
        #[test]
        fn ring_matches_the_map_near(ops in proptest::collection::vec(op(70), 1..200)) {
            run(1_767_225_600, &ops);
        }
        #[test]
        fn ring_matches_the_map_far(ops in proptest::collection::vec(op(400), 1..200)) {
            run(0, &ops);
        }
        #[test]
        fn ring_matches_the_map_colliding(ops in proptest::collection::vec(
            (0..6u64, 0..3u64, any::<bool>()).prop_map(|(k, us, take)| if take {
                Op::Take(k * 64, us * 400_000) } else { Op::Schedule(k * 64, us * 400_000) }), 1..200)) {
            run(5, &ops);
        }
    }

    /// The last instants a clock can show.
    #[test]
    fn timers_at_the_end_of_time() {
        let mut t = Timers::default();
        let end = Timestamp::from_micros(u64::MAX);
        t.schedule(end, Timer::Forget { call: Handle { ix: 1, generation: 0 } });
        t.schedule(
            Timestamp::from_micros(u64::MAX - 64_000_000),
            Timer::Forget { call: Handle { ix: 2, generation: 0 } },
        );
        let again = Timers::from_parts(parts(&t), 0).unwrap();
        assert_eq!(parts(&again), parts(&t));
        let mut out = Vec::new();
        t.take_due(end, &mut out);
        assert_eq!((out.len(), t.len(), t.next_due()), (2, 0, u64::MAX));
    }

    /// A burst in one second: the slot's room given back when it empties, and the ring's
    /// when no timer is left.
    #[test]
    fn a_burst_gives_its_room_back() {
        let mut t = Timers::default();
        for n in 0..10_000 {
            t.schedule(
                Timestamp::from_micros(3_000_000 + u64::from(n)),
                Timer::Forget { call: Handle { ix: n, generation: 0 } },
            );
        }
        let mut out = Vec::new();
        t.take_due(Timestamp::from_secs(3), &mut out);
        assert_eq!(out.len(), 1);
        // Another timer still pending: the ring stays, the burst's slot keeps little room.
        t.schedule(Timestamp::from_secs(10), Timer::Forget { call: Handle { ix: 10_000, generation: 0 } });
        t.take_due(Timestamp::from_secs(4), &mut out);
        assert_eq!(out.len(), 10_000);
        assert!(t.ring[3].1.items.capacity() <= KEPT_ROOM);
        // None pending: no room kept at all (an idle tenant).
        t.take_due(Timestamp::from_secs(10), &mut out);
        assert_eq!((t.len(), t.ring.capacity(), t.occupied), (0, 0, 0));
        t.check().unwrap();
    }
    /// A second waiting in the map (its slot holds another) that is only partly due keeps
    /// the rest: nothing is lost, and the next due time is the rest's.
    #[test]
    fn a_spilled_second_partly_due_keeps_the_rest() {
        let at = |s: u64, us: u64| Timestamp::from_micros(s * 1_000_000 + us);
        let f = |n| Timer::Forget { call: Handle { ix: n, generation: 0 } };
        let mut t = Timers::default();
        t.schedule(at(5, 0), f(1)); // slot 5
        t.schedule(at(69, 100), f(2)); // the map: slot 5 holds second 5
        t.schedule(at(69, 900_000), f(3)); // the map
        let mut out = Vec::new();
        t.take_due(at(69, 500_000), &mut out);
        assert_eq!(out, [(at(5, 0), f(1)), (at(69, 100), f(2))]);
        assert_eq!((t.len(), t.next_due()), (1, at(69, 900_000).as_micros()));
        assert_eq!(parts(&t), [(69, vec![(at(69, 900_000), f(3))])]);
    }

    /// A purge drops the stale timers of the seconds in the map too.
    #[test]
    fn a_purge_reaches_the_spilled_seconds() {
        let at = |s: u64| Timestamp::from_secs(s);
        let f = |n| Timer::Forget { call: Handle { ix: n, generation: 0 } };
        let mut t = Timers::default();
        t.schedule(at(5), f(1)); // slot 5
        t.schedule(at(69), f(2)); // the map
        t.schedule(at(69), f(3)); // the map
        t.purge(|_, timer| *timer != f(2));
        assert_eq!(t.len(), 2);
        assert_eq!(parts(&t), [(5, vec![(at(5), f(1))]), (69, vec![(at(69), f(3))])]);
        t.check().unwrap();
    }
}
