//! Which buckets this store may write, under which epoch, and which it has lost. Kept in
//! memory, beside the `leases` table of a PostgreSQL store: an append takes its bucket's
//! epoch from here, and the writer's fencing (in the database, in the batch's transaction)
//! is what makes a stale epoch harmless. Each lease also has a deadline by this process's
//! clock, so that a node that was paused (or cut off) past it stops serving before it has
//! even heard that the lease is gone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The leases this store holds and has lost.
#[derive(Debug)]
pub(crate) struct Held {
    state: Mutex<State>,
    /// The lease's length.
    lease: Duration,
}

#[derive(Debug, Default)]
struct State {
    owned: BTreeMap<u32, u64>,
    lost: BTreeMap<u32, u64>,
    /// Losses not yet told by [`Held::untold_losses`] (found by the writer's fencing
    /// between two turns of a node's share, say).
    untold: BTreeMap<u32, u64>,
    /// When each lease held runs out at the earliest: a lease's length after its taking or
    /// renewal was asked for (the database counts it from later, its own `now()`).
    current_until: BTreeMap<u32, Instant>,
}

impl Held {
    /// No lease held yet; each lasts `lease`.
    pub(crate) fn new(lease: Duration) -> Self {
        Self { state: Mutex::default(), lease }
    }

    /// The epoch this store writes `bucket` under, if it holds it.
    pub(crate) fn epoch(&self, bucket: u32) -> Option<u64> {
        self.state.lock().owned.get(&bucket).copied()
    }

    /// Leases taken (or renewed under the same epoch) by a request sent at `asked`.
    pub(crate) fn gained(&self, leases: &[(u32, u64)], asked: Instant) {
        let mut s = self.state.lock();
        for &(bucket, epoch) in leases {
            s.owned.insert(bucket, epoch);
            s.lost.remove(&bucket);
            s.current_until.insert(bucket, asked + self.lease);
        }
    }

    /// Leases renewed by a request sent at `asked` (each still held under the same epoch).
    pub(crate) fn renewed(&self, leases: &[(u32, u64)], asked: Instant) {
        let mut s = self.state.lock();
        for &(bucket, epoch) in leases {
            if s.owned.get(&bucket) == Some(&epoch) {
                s.current_until.insert(bucket, asked + self.lease);
            }
        }
    }

    /// Whether the lease of `bucket` is held and cannot have run out yet by this process's
    /// clock.
    pub(crate) fn current(&self, bucket: u32) -> bool {
        self.state.lock().current_until.get(&bucket).is_some_and(|until| Instant::now() < *until)
    }

    /// The lease of `bucket` under `epoch` is gone (taken over, or expired); a newer epoch
    /// held meanwhile stays.
    pub(crate) fn lose(&self, bucket: u32, epoch: u64) {
        let mut s = self.state.lock();
        if s.owned.get(&bucket) == Some(&epoch) {
            s.owned.remove(&bucket);
            s.current_until.remove(&bucket);
            s.lost.insert(bucket, epoch);
            s.untold.insert(bucket, epoch);
        }
    }

    /// Gives up `bucket` (not a loss); returns the epoch it was held under.
    pub(crate) fn give_up(&self, bucket: u32) -> Option<u64> {
        let mut s = self.state.lock();
        s.current_until.remove(&bucket);
        s.owned.remove(&bucket)
    }

    pub(crate) fn owned(&self) -> Vec<(u32, u64)> {
        self.state.lock().owned.iter().map(|(b, e)| (*b, *e)).collect()
    }

    /// The losses found since this was last asked, each told once, even those of buckets
    /// taken again since (under a new epoch: what was held of them is stale all the same).
    pub(crate) fn untold_losses(&self) -> Vec<(u32, u64)> {
        std::mem::take(&mut self.state.lock().untold).into_iter().collect()
    }

    pub(crate) fn lost(&self) -> Vec<(u32, u64)> {
        self.state.lock().lost.iter().map(|(b, e)| (*b, *e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_of_an_old_epoch_leaves_a_newer_one() {
        let held = Held::new(Duration::from_secs(60));
        held.gained(&[(3, 1), (4, 1)], Instant::now());
        held.lose(3, 1);
        assert_eq!((held.epoch(3), held.epoch(4)), (None, Some(1)));
        assert_eq!(held.lost(), [(3, 1)]);
        assert!(!held.current(3) && held.current(4));
        held.gained(&[(3, 2)], Instant::now());
        held.lose(3, 1); // a batch under the old epoch, refused late
        assert_eq!(held.epoch(3), Some(2));
        assert!(held.lost().is_empty());
        assert_eq!(held.give_up(4), Some(1));
        assert_eq!(held.owned(), [(3, 2)]);
        assert!(held.current(3) && !held.current(4));
    }

    #[test]
    fn each_loss_is_told_once_even_of_a_bucket_taken_again() {
        let held = Held::new(Duration::from_secs(60));
        held.gained(&[(3, 1), (4, 1)], Instant::now());
        held.lose(3, 1);
        held.lose(4, 1);
        held.gained(&[(4, 2)], Instant::now()); // what was held of it is stale all the same
        assert_eq!(held.untold_losses(), [(3, 1), (4, 1)]);
        assert!(held.untold_losses().is_empty(), "told once");
        assert_eq!(held.lost(), [(3, 1)]);
    }

    #[test]
    fn a_lease_not_renewed_within_its_length_is_no_longer_current() {
        let held = Held::new(Duration::from_millis(100));
        let long_ago = Instant::now().checked_sub(Duration::from_millis(150)).unwrap();
        held.gained(&[(1, 1)], long_ago);
        held.gained(&[(2, 1)], Instant::now());
        assert!(!held.current(1), "asked 150 ms ago for 100 ms");
        assert!(held.current(2));
        assert_eq!(held.epoch(1), Some(1), "still held: only the database says it is lost");
        held.renewed(&[(1, 1), (5, 1)], Instant::now());
        assert!(held.current(1));
        assert!(!held.current(5) && held.epoch(5).is_none(), "a renewal takes nothing");
    }
}
