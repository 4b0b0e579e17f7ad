//! One node of several (`--node-url`): which buckets it serves, and the thread that keeps
//! its share, every third of the lease (`Store::take_share`): it loads the buckets it
//! gains before serving them, stops serving those it lost, and gives up (releases) those
//! another live node prefers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use waitline::Engine;
use waitline_store::engine::{StoreJournal, apply_record};
use waitline_store::{PgConfig, Share, Store, placement};

use crate::durable::Durability;

/// The buckets a node serves: taken and loaded into its engine.
#[derive(Debug, Default)]
pub struct Serving {
    buckets: parking_lot::RwLock<HashSet<u32>>,
    /// Set when the service stops: the share thread ends (no more heartbeats).
    closed: AtomicBool,
}

impl Serving {
    /// Ends the share thread at its next turn: this node no longer says it is alive, and
    /// its leases lapse.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether `bucket` is served here.
    #[must_use]
    pub fn contains(&self, bucket: u32) -> bool {
        self.buckets.read().contains(&bucket)
    }

    /// The buckets served here, in order.
    #[must_use]
    pub fn buckets(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.buckets.read().iter().copied().collect();
        all.sort_unstable();
        all
    }

    fn start(&self, buckets: &[u32]) {
        self.buckets.write().extend(buckets);
    }

    fn stop(&self, bucket: u32) {
        self.buckets.write().remove(&bucket);
    }
}

/// The first turn, before serving: takes this node's share and returns the buckets taken
/// (to replay into the engine), served from then on. Buckets it prefers that another node
/// still holds (a node that died and left its leases, or one that releases them once it sees
/// this one) are waited for, up to twice the lease, as a single node waits; those still held
/// then are taken later by the share thread.
///
/// # Errors
/// PostgreSQL refused or is out of reach.
pub fn first_turn(store: &Store, config: &PgConfig, url: &str) -> Result<(Arc<Serving>, Vec<u32>), String> {
    // Past the deadline it serves what it holds; the background turns take the rest.
    crate::durable::within_two_leases(config.lease, || {
        store.take_share(url).map_err(|e| e.to_string())?;
        let live = store.live_nodes().map_err(|e| e.to_string())?;
        let ids: Vec<&str> = live.iter().map(|n| n.id.as_str()).collect();
        let owned = store.owned();
        Ok(placement::preferred_buckets(config.buckets, &config.node, &ids)
            .into_iter()
            .all(|b| owned.iter().any(|o| o.0 == b)))
    })?;
    let taken: Vec<u32> = store.owned().iter().map(|o| o.0).collect();
    let serving = Arc::new(Serving::default());
    serving.start(&taken);
    Ok((serving, taken))
}

/// Starts the thread that keeps this node's share every third of `lease`, until the
/// service's [`Durability`] is dropped.
///
/// # Errors
/// The thread cannot be started.
pub fn keep_share(
    engine: &Engine,
    durability: &Durability,
    url: &str,
    lease: Duration,
) -> Result<(), String> {
    let (Some((store, journal)), Some(serving)) = (durability.store_and_journal(), durability.serving())
    else {
        return Ok(());
    };
    let turn = Turn {
        engine: engine.clone(),
        store: store.clone(),
        journal: journal.clone(),
        serving: Arc::downgrade(serving),
        url: url.to_owned(),
    };
    std::thread::Builder::new()
        .name("waitline-share".into())
        .spawn(move || {
            loop {
                std::thread::sleep(lease / 3);
                if !turn.run() {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("the share thread: {e}"))
}

/// What the share thread holds: never the service's state itself, so that it ends with it.
struct Turn {
    engine: Engine,
    store: Store,
    journal: Arc<StoreJournal>,
    serving: Weak<Serving>,
    url: String,
}

impl Turn {
    /// One turn; `false` once the service has stopped.
    fn run(&self) -> bool {
        let Some(serving) = self.serving.upgrade().filter(|s| !s.closed.load(Ordering::Relaxed)) else {
            return false;
        };
        let share: Share = match self.store.take_share(&self.url) {
            Ok(share) => share,
            Err(e) => {
                // Tried again next turn; a lease that lapses meanwhile is found lost.
                tracing::warn!("taking this node's share failed: {e}");
                return true;
            }
        };
        for (bucket, epoch) in &share.lost {
            tracing::warn!(bucket, epoch, "bucket lost: its tenants are no longer served here");
            serving.stop(*bucket);
        }
        for &bucket in &share.surplus {
            serving.stop(bucket);
            if let Err(e) = self.store.release(bucket) {
                tracing::warn!(bucket, "releasing a bucket another node prefers failed: {e}");
            }
        }
        let gone: Vec<u32> = share.lost.iter().map(|l| l.0).chain(share.surplus.iter().copied()).collect();
        if !gone.is_empty() {
            self.forget(&gone);
        }
        let gained: Vec<u32> = share.gained.iter().map(|g| g.0).collect();
        if !gained.is_empty() {
            self.load(&serving, &gained);
        }
        true
    }

    /// Forgets the state of `buckets`' tenants held here: another node has (or had) them.
    fn forget(&self, buckets: &[u32]) {
        for tenant in self.engine.tenants() {
            if tenant.last_seq() != 0 && buckets.contains(&self.store.bucket_of(tenant.name())) {
                tenant.forget();
            }
        }
    }

    /// Replays the tenants of `gained` into the engine (what this node held of them
    /// before is forgotten first), then serves them.
    fn load(&self, serving: &Serving, gained: &[u32]) {
        self.forget(gained);
        match self.journal.replay_buckets_into(&self.engine, gained, apply_record) {
            Ok(replayed) => {
                tracing::info!(
                    buckets = gained.len(),
                    tenants = replayed.tenants,
                    "buckets taken and loaded"
                );
                serving.start(gained);
            }
            Err(e) => {
                tracing::error!("loading taken buckets failed, released: {e}");
                self.forget(gained);
                for &bucket in gained {
                    let _ = self.store.release(bucket);
                }
            }
        }
    }
}
