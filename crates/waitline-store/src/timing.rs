//! How long the writer's commits take (the batch written and synced), counted in fixed
//! buckets with atomics: the writer thread adds one observation per commit, a reader (a
//! metrics scrape) takes a copy without stopping it. No metrics crate: the frontend
//! translates [`CommitTimes`] into its own format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in microseconds, of the buckets of [`CommitTimes`]; a last bucket counts
/// the commits above the largest.
pub const COMMIT_BUCKETS_MICROS: [u64; 12] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

/// The commits so far by duration: `counts[i]` holds those in
/// `(bound[i-1], bound[i]]` microseconds of [`COMMIT_BUCKETS_MICROS`], the last entry those
/// above the largest bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitTimes {
    /// Commits per bucket (not cumulative).
    pub counts: [u64; COMMIT_BUCKETS_MICROS.len() + 1],
    /// Sum of the durations counted, in microseconds.
    pub sum_micros: u64,
}

impl CommitTimes {
    /// Commits counted.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What the writer adds to.
#[derive(Debug, Default)]
pub(crate) struct CommitTimer {
    counts: [AtomicU64; COMMIT_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl CommitTimer {
    pub(crate) fn observe(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = COMMIT_BUCKETS_MICROS.partition_point(|&b| b < micros);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// A copy; a commit counted meanwhile may show in one field and not yet the other.
    pub(crate) fn read(&self) -> CommitTimes {
        CommitTimes {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_buckets() {
        let timer = CommitTimer::default();
        for micros in [0, 100, 101, 1_000_000, 1_000_001] {
            timer.observe(Duration::from_micros(micros));
        }
        let times = timer.read();
        assert_eq!(times.counts[0], 2, "up to and with the first bound");
        assert_eq!(times.counts[1], 1);
        assert_eq!(times.counts[COMMIT_BUCKETS_MICROS.len() - 1], 1, "the largest bound itself");
        assert_eq!(times.counts[COMMIT_BUCKETS_MICROS.len()], 1, "above every bound");
        assert_eq!((times.count(), times.sum_micros), (5, 2_000_202));
    }
}
