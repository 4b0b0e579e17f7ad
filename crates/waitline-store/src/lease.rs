//! Which buckets this store may write, under which epoch, and which it has lost. Kept in
//! memory, beside the `leases` table of a PostgreSQL store: an append takes its bucket's
//! epoch from here, and the writer's fencing (in the database, in the batch's transaction)
//! is what makes a stale epoch harmless.

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// The leases this store holds and has lost.
#[derive(Debug, Default)]
pub(crate) struct Held(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    owned: BTreeMap<u32, u64>,
    lost: BTreeMap<u32, u64>,
    /// Losses not yet told by [`Held::untold_losses`] (found by the writer's fencing
    /// between two turns of a node's share, say).
    untold: BTreeMap<u32, u64>,
}

impl Held {
    /// The epoch this store writes `bucket` under, if it holds it.
    pub(crate) fn epoch(&self, bucket: u32) -> Option<u64> {
        self.0.lock().owned.get(&bucket).copied()
    }

    /// Leases taken (or renewed under the same epoch).
    pub(crate) fn gained(&self, leases: &[(u32, u64)]) {
        let mut s = self.0.lock();
        for &(bucket, epoch) in leases {
            s.owned.insert(bucket, epoch);
            s.lost.remove(&bucket);
        }
    }

    /// The lease of `bucket` under `epoch` is gone (taken over, or expired); a newer epoch
    /// held meanwhile stays.
    pub(crate) fn lose(&self, bucket: u32, epoch: u64) {
        let mut s = self.0.lock();
        if s.owned.get(&bucket) == Some(&epoch) {
            s.owned.remove(&bucket);
            s.lost.insert(bucket, epoch);
            s.untold.insert(bucket, epoch);
        }
    }

    /// Gives up `bucket` (not a loss); returns the epoch it was held under.
    pub(crate) fn give_up(&self, bucket: u32) -> Option<u64> {
        self.0.lock().owned.remove(&bucket)
    }

    pub(crate) fn owned(&self) -> Vec<(u32, u64)> {
        self.0.lock().owned.iter().map(|(b, e)| (*b, *e)).collect()
    }

    /// The losses found since this was last asked, each told once, even those of buckets
    /// taken again since (under a new epoch: what was held of them is stale all the same).
    pub(crate) fn untold_losses(&self) -> Vec<(u32, u64)> {
        std::mem::take(&mut self.0.lock().untold).into_iter().collect()
    }

    pub(crate) fn lost(&self) -> Vec<(u32, u64)> {
        self.0.lock().lost.iter().map(|(b, e)| (*b, *e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_of_an_old_epoch_leaves_a_newer_one() {
        let held = Held::default();
        held.gained(&[(3, 1), (4, 1)]);
        held.lose(3, 1);
        assert_eq!((held.epoch(3), held.epoch(4)), (None, Some(1)));
        assert_eq!(held.lost(), [(3, 1)]);
        held.gained(&[(3, 2)]);
        held.lose(3, 1); // a batch under the old epoch, refused late
        assert_eq!(held.epoch(3), Some(2));
        assert!(held.lost().is_empty());
        assert_eq!(held.give_up(4), Some(1));
        assert_eq!(held.owned(), [(3, 2)]);
    }

    #[test]
    fn each_loss_is_told_once_even_of_a_bucket_taken_again() {
        let held = Held::default();
        held.gained(&[(3, 1), (4, 1)]);
        held.lose(3, 1);
        held.lose(4, 1);
        held.gained(&[(4, 2)]); // what was held of it is stale all the same
        assert_eq!(held.untold_losses(), [(3, 1), (4, 1)]);
        assert!(held.untold_losses().is_empty(), "told once");
        assert_eq!(held.lost(), [(3, 1)]);
    }
}
