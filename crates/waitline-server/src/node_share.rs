//! One node of several (`--node-url`): which buckets it serves, and the thread that keeps
//! its share, every third of the lease (`Store::take_share`): it loads the buckets it
//! gains before serving them, stops serving those it lost, and gives up (releases) those
//! another live node prefers. When PostgreSQL drops the store's connections (a failover,
//! a restart), it reconnects them at its next turns, and after a failed commit (whose
//! outcome is unknown) it first stops serving and forgets every tenant, then takes its share
//! again and loads it from the store, as at start.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use waitline::Engine;
use waitline_store::engine::StoreJournal;
use waitline_store::{PgConfig, Share, Store, placement};

use crate::durable::Durability;
use crate::replay_backlog::Backlog;

/// The buckets a node serves (taken and loaded into its engine), where the other buckets'
/// owners are, and whether this node is in touch with PostgreSQL.
#[derive(Debug)]
pub struct Serving {
    served: parking_lot::RwLock<Served>,
    /// Each bucket's owner's URL as last read: refreshed every turn, so that a forwarded
    /// request costs no query.
    owners: parking_lot::RwLock<HashMap<u32, String>>,
    /// Owner queries made for requests (the cache had no owner, or a wrong one).
    lookups: AtomicU64,
    /// When the last turn that reached PostgreSQL began: the leases it renewed last at
    /// least a lease from then.
    last_turn: parking_lot::Mutex<Instant>,
    lease: Duration,
    /// Bumped each time a bucket stops being served here: event streams of its tenants end.
    stops: tokio::sync::watch::Sender<u64>,
    /// Set when the service stops: the share thread ends (no more heartbeats).
    closed: AtomicBool,
    /// Held while buckets taken are loaded: no timer may fire meanwhile (a timer firing in
    /// a tenant half replayed would take a number its stored journal already has).
    loading: parking_lot::Mutex<()>,
}

#[derive(Debug, Default)]
struct Served {
    buckets: HashSet<u32>,
    /// Per tenant loaded while running, its bucket and its last number when it was loaded:
    /// the replay published its events up to there, and they are not to be told as new
    /// (those owed are the backlog's). Dropped when its bucket stops being served.
    replayed_to: HashMap<Box<str>, (u32, u64)>,
}

impl Serving {
    fn new(lease: Duration, last_turn: Instant) -> Self {
        Self {
            served: parking_lot::RwLock::default(),
            owners: parking_lot::RwLock::default(),
            lookups: AtomicU64::new(0),
            last_turn: parking_lot::Mutex::new(last_turn),
            lease,
            stops: tokio::sync::watch::Sender::new(0),
            closed: AtomicBool::new(false),
            loading: parking_lot::Mutex::new(()),
        }
    }

    /// Ends the share thread at its next turn: this node says it is gone, and its leases
    /// are released when the store's last handle goes.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether `bucket` is served here: taken, loaded, and its lease surely not lapsed (a
    /// node cut off from PostgreSQL stops serving, reads too, before another node can
    /// have taken its buckets over).
    #[must_use]
    pub fn contains(&self, bucket: u32) -> bool {
        self.in_touch() && self.served.read().buckets.contains(&bucket)
    }

    /// Whether the last turn that reached PostgreSQL began within the lease.
    fn in_touch(&self) -> bool {
        self.last_turn.lock().elapsed() < self.lease
    }

    /// The buckets served here, in order.
    #[must_use]
    pub fn buckets(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.served.read().buckets.iter().copied().collect();
        all.sort_unstable();
        all
    }

    /// Whether an event numbered `seq` of `tenant` (of `bucket`) is this node's to tell:
    /// the bucket is served here, and the event is not one its loading replayed.
    #[must_use]
    pub fn tells(&self, bucket: u32, tenant: &str, seq: u64) -> bool {
        let served = self.served.read();
        served.buckets.contains(&bucket) && served.replayed_to.get(tenant).is_none_or(|(_, to)| seq > *to)
    }

    /// Whether this node is ready: its last turn reached PostgreSQL within the lease (else
    /// its leases lapse, and it cannot tell where other tenants are), and it is not stopping.
    ///
    /// # Errors
    /// Why not.
    pub fn ready(&self) -> Result<(), String> {
        if self.closed.load(Ordering::Relaxed) {
            return Err("stopping".into());
        }
        let since = self.last_turn.lock().elapsed();
        if since >= self.lease {
            return Err(format!("PostgreSQL not reached for {} ms", since.as_millis()));
        }
        Ok(())
    }

    /// Fires the engine's due timers, unless buckets are being loaded (then at the next
    /// call: the maintenance task calls it every 100 ms at most).
    pub fn run_timers(&self, engine: &Engine) {
        if let Some(_quiet) = self.loading.try_lock() {
            engine.run_pending_tasks();
        }
    }

    /// Changes each time a bucket stops being served here.
    #[must_use]
    pub fn stops(&self) -> tokio::sync::watch::Receiver<u64> {
        self.stops.subscribe()
    }

    /// The URL of `bucket`'s owner as last read, if known.
    #[must_use]
    pub fn cached_owner(&self, bucket: u32) -> Option<String> {
        self.owners.read().get(&bucket).cloned()
    }

    /// Reads `bucket`'s owner from the store (one query, counted) and keeps it.
    #[must_use]
    pub fn look_up_owner(&self, store: &Store, bucket: u32) -> Option<String> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let url = store.owner(bucket).ok().flatten().map(|node| node.url).filter(|url| !url.is_empty());
        let mut owners = self.owners.write();
        match &url {
            Some(url) => owners.insert(bucket, url.clone()),
            None => owners.remove(&bucket),
        };
        url
    }

    pub(crate) fn remember_owner(&self, bucket: u32, url: &str) {
        self.owners.write().insert(bucket, url.to_owned());
    }

    /// Owner queries made for requests so far (not the share thread's refreshes).
    #[must_use]
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    fn start(&self, buckets: &[u32], replayed_to: Vec<(Box<str>, (u32, u64))>) {
        let mut served = self.served.write();
        served.buckets.extend(buckets);
        served.replayed_to.extend(replayed_to);
    }

    fn stop(&self, bucket: u32) {
        self.stop_served(&[bucket]);
    }

    /// Stops serving those of `buckets` served here (their requests answer 503, their
    /// streams end, their timers are the next owner's), forgetting what their loading
    /// replayed. A bucket taken (again) must be stopped before it is loaded: one lost and
    /// taken again in the same turn is never listed lost.
    fn stop_served(&self, buckets: &[u32]) {
        let mut served = self.served.write();
        let before = served.buckets.len();
        served.buckets.retain(|b| !buckets.contains(b));
        if served.buckets.len() == before {
            return;
        }
        served.replayed_to.retain(|_, (b, _)| !buckets.contains(b));
        drop(served);
        self.stops.send_modify(|n| *n += 1);
    }

    /// Stops serving every bucket (the store lost its connection).
    fn stop_all(&self) {
        *self.served.write() = Served::default();
        self.stops.send_modify(|n| *n += 1);
    }

    fn refresh_owners(&self, store: &Store) {
        match store.owners() {
            Ok(owners) => {
                *self.owners.write() = owners
                    .into_iter()
                    .filter(|(_, node)| !node.url.is_empty())
                    .map(|(bucket, node)| (bucket, node.url))
                    .collect();
            }
            Err(e) => tracing::warn!("reading the buckets' owners failed: {e}"),
        }
    }
}

/// Forgets the state held here of the tenants of `buckets`: another node has (or had) them.
pub(crate) fn forget_tenants(engine: &Engine, store: &Store, buckets: &[u32]) {
    for tenant in engine.tenants() {
        if tenant.last_seq() != 0 && buckets.contains(&store.bucket_of(tenant.name())) {
            tenant.forget();
        }
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
    let mut began = Instant::now();
    crate::durable::within_two_leases(config.lease, || {
        began = Instant::now();
        store.take_share(url).map_err(|e| e.to_string())?;
        let live = store.live_nodes().map_err(|e| e.to_string())?;
        let ids: Vec<&str> = live.iter().map(|n| n.id.as_str()).collect();
        let owned = store.owned();
        Ok(placement::preferred_buckets(config.buckets, &config.node, &ids)
            .into_iter()
            .all(|b| owned.iter().any(|o| o.0 == b)))
    })?;
    let taken: Vec<u32> = store.owned().iter().map(|o| o.0).collect();
    let serving = Arc::new(Serving::new(config.lease, began));
    // Replayed before anything is told: no event of it is published as new.
    serving.start(&taken, Vec::new());
    serving.refresh_owners(store);
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
        backlog: durability.backlog().clone(),
        serving: Arc::downgrade(serving),
        url: url.to_owned(),
        attempts: std::cell::Cell::new(0),
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
    backlog: Arc<Backlog>,
    serving: Weak<Serving>,
    url: String,
    /// Reconnection attempts since PostgreSQL last dropped the store's connections.
    attempts: std::cell::Cell<u32>,
}

impl Turn {
    /// One turn; `false` once the service has stopped.
    fn run(&self) -> bool {
        let Some(serving) = self.serving.upgrade().filter(|s| !s.closed.load(Ordering::Relaxed)) else {
            // Stopping: the other nodes stop counting this one now (its leases are released
            // once the store's last handle goes), so they take its buckets at their next turn.
            if let Err(e) = self.store.leave() {
                tracing::warn!(
                    "saying this node is gone failed (it is counted live for one more lease): {e}"
                );
            }
            return false;
        };
        if self.store.can_restart_writer() && !self.restart_writer(&serving) {
            return true; // tried again next turn
        }
        let began = Instant::now();
        let share: Share = match self.store.take_share(&self.url) {
            Ok(share) => {
                *serving.last_turn.lock() = began;
                if self.attempts.replace(0) > 0 {
                    tracing::info!("PostgreSQL reached again");
                }
                share
            }
            Err(e) => {
                // Tried again next turn; a lease that lapses meanwhile is found lost.
                tracing::warn!("taking this node's share failed: {e}");
                if e.is_disconnect() {
                    self.reconnect_leases();
                }
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
        serving.refresh_owners(&self.store);
        true
    }

    /// The number of this attempt to reconnect, counted and logged (never the URL: it may
    /// hold a password; the store's errors name the schema only).
    fn attempt(&self, what: &str) -> u32 {
        let attempt = self.attempts.get() + 1;
        self.attempts.set(attempt);
        tracing::warn!(attempt, "PostgreSQL dropped the store's connection: reconnecting {what}");
        attempt
    }

    fn reconnect_leases(&self) {
        let attempt = self.attempt("the lease connection");
        if let Err(e) = self.store.reconnect_leases() {
            tracing::warn!(attempt, "reconnecting failed: {e}");
        }
    }

    /// The writer's connection was dropped while it committed: what memory holds may not
    /// be what the journal holds. Stops serving every bucket, forgets every tenant, then
    /// connects a new writer (its leases forgotten: this turn takes the share again at new
    /// epochs and loads it from the store). Whether the writer is back.
    fn restart_writer(&self, serving: &Serving) -> bool {
        serving.stop_all();
        {
            let _quiet = serving.loading.lock();
            for tenant in self.engine.tenants() {
                if tenant.last_seq() != 0 {
                    tenant.forget();
                }
            }
        }
        let attempt = self.attempt("the writer (every bucket stopped and forgotten)");
        match self.store.restart_writer() {
            Ok(()) => {
                tracing::info!(attempt, "store writer reconnected: taking this node's share again");
                // The lease connection was most likely dropped too.
                if let Err(e) = self.store.reconnect_leases() {
                    tracing::warn!(attempt, "reconnecting the lease connection failed: {e}");
                }
                true
            }
            Err(e) => {
                tracing::warn!(attempt, "reconnecting failed: {e}");
                false
            }
        }
    }

    fn forget(&self, buckets: &[u32]) {
        forget_tenants(&self.engine, &self.store, buckets);
    }

    /// Replays the tenants of `gained` into the engine (what this node held of them
    /// before is forgotten first) with the webhooks their former owner did not handle (past
    /// the delivery marks it kept) as backlog, then serves them.
    fn load(&self, serving: &Serving, gained: &[u32]) {
        let _quiet = serving.loading.lock();
        // Lost and taken again at a new epoch in one turn, it is still served: not while
        // it is forgotten and replayed.
        serving.stop_served(gained);
        self.forget(gained);
        let loaded = self.store.delivered().map_err(|e| e.to_string()).and_then(|delivered| {
            crate::replay_backlog::replay(&self.engine, &self.journal, &delivered, Some(gained))
        });
        match loaded {
            Ok((replayed, backlog)) => {
                tracing::info!(
                    buckets = gained.len(),
                    tenants = replayed.tenants,
                    backlog = backlog.len(),
                    "buckets taken and loaded"
                );
                let replayed_to = self
                    .engine
                    .tenants()
                    .into_iter()
                    .filter(|t| gained.contains(&self.store.bucket_of(t.name())))
                    .map(|t| (Box::from(t.name()), (self.store.bucket_of(t.name()), t.last_seq())))
                    .collect();
                // The backlog first: the outbox has it before any new event of these tenants.
                self.backlog.add(backlog);
                serving.start(gained, replayed_to);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loaded_buckets_replayed_events_are_not_told_its_new_ones_are() {
        let serving = Serving::new(Duration::from_secs(5), Instant::now());
        assert!(!serving.tells(7, "acme", 1), "not served yet: another node's, or loading");
        serving.start(&[7], vec![("acme".into(), (7, 4))]);
        assert!(!serving.tells(7, "acme", 4), "made again by the replay: the backlog's to send");
        assert!(serving.tells(7, "acme", 5));
        assert!(serving.tells(7, "zeta", 1), "a tenant new here");
        assert!(!serving.tells(8, "acme", 9));
        let stops = serving.stops();
        serving.stop(7);
        assert!(!serving.tells(7, "acme", 5));
        assert!(stops.has_changed().unwrap(), "streams of its tenants are told to end");
    }

    /// A bucket lost and taken again in one share turn is never listed lost: loading it
    /// stops it first, and what its former loading replayed is not kept to hide new events.
    #[test]
    fn a_bucket_taken_again_is_not_served_while_it_reloads() {
        let serving = Serving::new(Duration::from_secs(5), Instant::now());
        serving.start(&[7, 8], vec![("acme".into(), (7, 4)), ("zeta".into(), (8, 2))]);
        let stops = serving.stops();
        serving.stop_served(&[7, 9]);
        assert!(!serving.contains(7) && serving.contains(8), "stopped while it reloads; 8 goes on");
        assert!(stops.has_changed().unwrap(), "its streams end");
        serving.start(&[7], Vec::new());
        assert!(serving.tells(7, "acme", 3), "the former loading's mark is gone with it");
        assert!(!serving.tells(8, "zeta", 2), "another bucket's mark stays");
        let mut stops = serving.stops();
        stops.mark_unchanged();
        serving.stop_served(&[9]);
        assert!(!stops.has_changed().unwrap(), "nothing served stopped: no stream is woken");
    }

    #[test]
    fn ready_and_serving_while_turns_reach_postgres_within_the_lease() {
        let serving = Serving::new(Duration::from_millis(30), Instant::now());
        serving.start(&[7], Vec::new());
        assert_eq!(serving.ready(), Ok(()));
        assert!(serving.contains(7));
        std::thread::sleep(Duration::from_millis(60));
        assert!(serving.ready().unwrap_err().contains("PostgreSQL not reached"));
        assert!(!serving.contains(7), "its lease may have lapsed: not served, reads neither");
        *serving.last_turn.lock() = Instant::now();
        assert_eq!(serving.ready(), Ok(()));
        assert!(serving.contains(7));
        serving.close();
        assert_eq!(serving.ready(), Err("stopping".to_owned()));
    }
}
