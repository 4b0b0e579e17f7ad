//! One node of several (`--node-url`): which buckets it serves, and the thread that keeps
//! its share, every third of the lease (`Store::take_share`): it loads the buckets it
//! gains before serving them, stops serving those it lost, and gives up (releases) those
//! another live node prefers. When PostgreSQL drops the store's connections (a failover,
//! a restart), it reconnects them at its next turns, and after a failed commit (whose
//! outcome is unknown) it first stops serving and forgets every tenant, then takes its share
//! again and loads it from the store, as at start.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use waitline::Engine;
use waitline_store::engine::StoreJournal;
use waitline_store::{PgConfig, Share, Store, placement};

use crate::durable::Durability;
use crate::replay_backlog::Backlog;

/// A bucket and the epoch its lease was taken at.
pub type Lease = (u32, u64);

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
    /// Per bucket, the writes taken (past the acknowledgement layer's start) and not yet
    /// answered: a bucket given up waits for them (see [`Serving::give_up`]).
    in_flight: Box<[AtomicU32]>,
    /// Test hook: milliseconds each load of buckets taken while running waits first (a load
    /// longer than the lease).
    load_pause_ms: AtomicU64,
}

#[derive(Debug, Default)]
struct Served {
    buckets: HashSet<u32>,
    /// Of `buckets`, those being given up: they take no new command, the writes taken
    /// before are finished and answered.
    draining: HashSet<u32>,
    /// Per tenant loaded while running, its bucket and its last number when it was loaded:
    /// the replay published its events up to there, and they are not to be told as new
    /// (those owed are the backlog's). Dropped when its bucket stops being served.
    replayed_to: HashMap<Box<str>, (u32, u64)>,
}

impl Serving {
    fn new(lease: Duration, last_turn: Instant, buckets: u32) -> Self {
        Self {
            served: parking_lot::RwLock::default(),
            owners: parking_lot::RwLock::default(),
            lookups: AtomicU64::new(0),
            last_turn: parking_lot::Mutex::new(last_turn),
            lease,
            stops: tokio::sync::watch::Sender::new(0),
            closed: AtomicBool::new(false),
            loading: parking_lot::Mutex::new(()),
            in_flight: (0..buckets).map(|_| AtomicU32::new(0)).collect(),
            load_pause_ms: AtomicU64::new(0),
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
    /// A bucket being given up takes no new command.
    #[must_use]
    pub fn contains(&self, bucket: u32) -> bool {
        self.in_touch() && {
            let served = self.served.read();
            served.buckets.contains(&bucket) && !served.draining.contains(&bucket)
        }
    }

    /// Whether a write of `bucket` taken before may still be answered here: the bucket is
    /// served, or being given up and waiting for its writes in flight.
    #[must_use]
    pub fn finishes(&self, bucket: u32) -> bool {
        self.in_touch() && self.served.read().buckets.contains(&bucket)
    }

    /// Counts a write of `bucket` in flight until the guard returned is dropped (once it is
    /// answered).
    #[must_use]
    pub fn write_begins(self: &Arc<Self>, bucket: u32) -> InFlight {
        if let Some(count) = self.in_flight.get(bucket as usize) {
            count.fetch_add(1, Ordering::SeqCst);
        }
        InFlight { serving: Arc::clone(self), bucket }
    }

    /// Gives `buckets` up: they take no new command (503 `10007`, reads too), the writes
    /// in flight are waited for (at most `within`) so that they are answered as usual,
    /// then the buckets stop being served. Returns how many writes were still in flight
    /// (answered 503 `10007`: their change may or may not be kept).
    fn give_up(&self, buckets: &[u32], within: Duration) -> u32 {
        self.served.write().draining.extend(buckets);
        // A write counted after this saw the bucket draining when it was checked (the
        // count comes first), and runs no command.
        let deadline = Instant::now() + within;
        let in_flight = || -> u32 {
            buckets
                .iter()
                .filter_map(|&b| self.in_flight.get(b as usize))
                .map(|c| c.load(Ordering::SeqCst))
                .sum()
        };
        while in_flight() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let left = in_flight();
        self.stop_served(buckets);
        left
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

    /// Makes each later load of buckets taken while running wait `pause` first (for tests:
    /// a load longer than the lease).
    #[doc(hidden)]
    pub fn pause_loads(&self, pause: Duration) {
        self.load_pause_ms.store(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
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
        served.draining.retain(|b| !buckets.contains(b));
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

/// A write in flight, counted by its bucket until dropped (see [`Serving::write_begins`]).
#[derive(Debug)]
pub struct InFlight {
    serving: Arc<Serving>,
    bucket: u32,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(count) = self.serving.in_flight.get(self.bucket as usize) {
            count.fetch_sub(1, Ordering::SeqCst);
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
/// with their epochs (to replay into the engine), served from then on. Buckets it prefers that another node
/// still holds (a node that died and left its leases, or one that releases them once it sees
/// this one) are waited for, up to twice the lease, as a single node waits; those still held
/// then are taken later by the share thread.
///
/// # Errors
/// PostgreSQL refused or is out of reach.
pub fn first_turn(store: &Store, config: &PgConfig, url: &str) -> Result<(Arc<Serving>, Vec<Lease>), String> {
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
    let taken = store.owned();
    let serving = Arc::new(Serving::new(config.lease, began, config.buckets));
    // Replayed before anything is told: no event of it is published as new.
    serving.start(&taken.iter().map(|t| t.0).collect::<Vec<_>>(), Vec::new());
    serving.refresh_owners(store);
    Ok((serving, taken))
}

/// After the start replay of `taken` (buckets with the epochs taken): stops serving, forgets
/// and gives up those whose lease lapsed meanwhile (a replay longer than the lease whose
/// renewals failed), and drops their events from the webhook `backlog` (the next owner
/// sends them), before the node listens.
pub(crate) fn serve_if_still_held(
    engine: &Engine,
    store: &Store,
    url: &str,
    serving: &Serving,
    taken: &[Lease],
    backlog: &Backlog,
) {
    let (kept, lapsed) = still_held(store, url, serving, taken);
    if lapsed.is_empty() {
        return;
    }
    tracing::warn!(?lapsed, "buckets whose lease lapsed during the start replay: dropped, not served");
    serving.stop_served(&lapsed);
    drop_loaded(engine, store, &lapsed);
    backlog.retain(of_buckets(store, &kept));
}

/// Whether an event is of a tenant of `buckets`: a load's backlog keeps only the events of
/// the buckets still held once loaded.
fn of_buckets<'a>(store: &'a Store, buckets: &'a [u32]) -> impl Fn(&waitline::Event) -> bool + 'a {
    move |event| buckets.contains(&store.bucket_of(&event.tenant))
}

/// Forgets what a load of `buckets` put in the engine and gives their leases up (those
/// still held: a lapsed one is another node's, or free).
fn drop_loaded(engine: &Engine, store: &Store, buckets: &[u32]) {
    forget_tenants(engine, store, buckets);
    let _ = store.release_buckets(buckets);
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
        if !share.gained.is_empty() {
            // A bucket lost and taken again in this turn is still counted served: what
            // memory holds of it (a write refused by the store stays there) is not answered
            // from once the store says it is taken, until `load` has replayed it.
            let taken: Vec<u32> = share.gained.iter().map(|g| g.0).collect();
            serving.stop_served(&taken);
        }
        for (bucket, epoch) in &share.lost {
            tracing::warn!(bucket, epoch, "bucket lost: its tenants are no longer served here");
            serving.stop(*bucket);
        }
        if !share.surplus.is_empty() {
            // Renewing meanwhile: a commit slowed down (a busy database) may take a while.
            let left = while_renewing(&self.store, &self.url, &serving, || {
                serving.give_up(&share.surplus, serving.lease)
            });
            if left > 0 {
                tracing::warn!(writes = left, "buckets given up with writes still in flight (answered 503)");
            }
        }
        if let Err(e) = self.store.release_buckets(&share.surplus) {
            tracing::warn!(buckets = ?share.surplus, "releasing buckets another node prefers failed: {e}");
        }
        let gone: Vec<u32> = share.lost.iter().map(|l| l.0).chain(share.surplus.iter().copied()).collect();
        if !gone.is_empty() {
            self.forget(&gone);
        }
        if !share.gained.is_empty() {
            self.load(&serving, &share.gained);
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
    /// the delivery marks it kept) as backlog, then serves those still held at the epoch
    /// taken. Its leases are renewed meanwhile (see [`while_renewing`]).
    fn load(&self, serving: &Serving, gained: &[Lease]) {
        let _quiet = serving.loading.lock();
        let buckets: Vec<u32> = gained.iter().map(|g| g.0).collect();
        // No longer served since the turn took them (see `turn`): forgotten and replayed.
        self.forget(&buckets);
        let loaded = while_renewing(&self.store, &self.url, serving, || {
            let pause = serving.load_pause_ms.load(Ordering::Relaxed);
            if pause > 0 {
                std::thread::sleep(Duration::from_millis(pause));
            }
            let delivered = self.store.delivered().map_err(|e| e.to_string())?;
            crate::replay_backlog::replay(&self.engine, &self.journal, &delivered, Some(&buckets))
        });
        let (replayed, backlog) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!("loading taken buckets failed, released: {e}");
                drop_loaded(&self.engine, &self.store, &buckets);
                return;
            }
        };
        let (kept, lapsed) = still_held(&self.store, &self.url, serving, gained);
        if !lapsed.is_empty() {
            tracing::warn!(?lapsed, "buckets whose lease lapsed while they loaded: dropped, not served");
            drop_loaded(&self.engine, &self.store, &lapsed);
        }
        let backlog: Vec<_> = backlog.into_iter().filter(of_buckets(&self.store, &kept)).collect();
        tracing::info!(
            buckets = kept.len(),
            tenants = replayed.tenants,
            backlog = backlog.len(),
            "buckets taken and loaded"
        );
        let replayed_to = self
            .engine
            .tenants()
            .into_iter()
            .filter(|t| kept.contains(&self.store.bucket_of(t.name())))
            .map(|t| (Box::from(t.name()), (self.store.bucket_of(t.name()), t.last_seq())))
            .collect();
        // The backlog first: the outbox has it before any new event of these tenants.
        self.backlog.add(backlog);
        serving.start(&kept, replayed_to);
    }
}

/// How many leases a load (or a give-up wait) renews this node's leases and heartbeat for,
/// at most: one running longer is taken as hung (a stalled query), its renewals stop, so
/// that its leases lapse, the other nodes take its buckets over and this node stops being
/// ready, instead of holding buckets that answer 503 for ever. Two minutes at the default
/// lease: a replay of one node's share takes far less.
pub const LOAD_RENEWED_FOR_LEASES: u32 = 24;

/// Runs `load` while another thread renews this node's leases and heartbeat every third of
/// the lease (`Store::renew_share`), marking it in touch after each renewal: a load longer
/// than the lease lets no lease lapse, and the buckets already served stay served. The
/// renewals stop after [`LOAD_RENEWED_FOR_LEASES`] leases (the load is hung); what it
/// loaded is then dropped when it ends (its leases lapsed: see [`still_held`]).
pub(crate) fn while_renewing<T>(store: &Store, url: &str, serving: &Serving, load: impl FnOnce() -> T) -> T {
    let (loaded, done) = std::sync::mpsc::channel::<()>();
    let renewed_until = Instant::now() + serving.lease * LOAD_RENEWED_FOR_LEASES;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(serving.lease / 3) {
                if Instant::now() >= renewed_until {
                    tracing::error!(
                        leases = LOAD_RENEWED_FOR_LEASES,
                        "a load (or a wait for writes in flight) is hung: this node's leases are no longer renewed, its buckets go to the other nodes"
                    );
                    return;
                }
                renew(store, url, serving);
            }
        });
        let out = load();
        drop(loaded);
        out
    })
}

/// One renewal of this node's leases and heartbeat; whether PostgreSQL answered. A dropped
/// lease connection is reconnected (tried again at the next renewal).
fn renew(store: &Store, url: &str, serving: &Serving) -> bool {
    let began = Instant::now();
    match store.renew_share(url) {
        Ok(lost) => {
            *serving.last_turn.lock() = began;
            for (bucket, epoch) in lost {
                tracing::warn!(
                    bucket,
                    epoch,
                    "bucket lost while loading or giving buckets up (told at the next turn)"
                );
            }
            true
        }
        Err(e) => {
            tracing::warn!("renewing this node's leases while loading or giving buckets up failed: {e}");
            if e.is_disconnect() {
                if let Err(e) = store.reconnect_leases() {
                    tracing::warn!("reconnecting the lease connection failed: {e}");
                }
            }
            false
        }
    }
}

/// Of the buckets `loaded` (taken at these epochs), those still held at the same epoch,
/// checked by a renewal now, and the others (all of them when PostgreSQL cannot say): a
/// lease that lapsed during the load may have been taken by another node, and what was
/// loaded is then stale.
pub(crate) fn still_held(
    store: &Store,
    url: &str,
    serving: &Serving,
    loaded: &[Lease],
) -> (Vec<u32>, Vec<u32>) {
    // Tried twice: one failed renewal (a dropped connection, reconnected by the first
    // try) does not throw a whole load away.
    let checked = renew(store, url, serving) || renew(store, url, serving);
    let (kept, lapsed): (Vec<&Lease>, Vec<_>) =
        loaded.iter().partition(|&&(bucket, epoch)| checked && store.held_epoch(bucket) == Some(epoch));
    (kept.into_iter().map(|l| l.0).collect(), lapsed.into_iter().map(|l| l.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loaded_buckets_replayed_events_are_not_told_its_new_ones_are() {
        let serving = Serving::new(Duration::from_secs(5), Instant::now(), 256);
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
        let serving = Serving::new(Duration::from_secs(5), Instant::now(), 256);
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

    /// A bucket given up takes no new command at once, but a write taken before is still
    /// answered here; the bucket stops being served once that write is answered.
    #[test]
    fn a_bucket_given_up_waits_for_its_writes_in_flight() {
        let serving = Arc::new(Serving::new(Duration::from_secs(5), Instant::now(), 256));
        serving.start(&[7, 8], Vec::new());
        let write = serving.write_begins(7);
        let other = serving.write_begins(8);
        std::thread::scope(|scope| {
            let giving_up = scope.spawn(|| serving.give_up(&[7], Duration::from_secs(5)));
            while serving.contains(7) {
                std::thread::yield_now();
            }
            assert!(serving.finishes(7), "its write in flight is still answered here");
            assert!(serving.contains(8), "another bucket goes on");
            std::thread::sleep(Duration::from_millis(50));
            assert!(!giving_up.is_finished(), "waits for the write in flight");
            drop(write);
            assert_eq!(giving_up.join().unwrap(), 0, "none left in flight");
        });
        assert!(!serving.finishes(7) && serving.finishes(8));
        drop(other);
        let stuck = serving.write_begins(8);
        assert_eq!(serving.give_up(&[8], Duration::from_millis(20)), 1, "bounded: one left in flight");
        assert!(!serving.finishes(8));
        drop(stuck);
    }

    /// After a load, a bucket whose lease ended behind the node's back (released: same
    /// owner and epoch, no other node took it) or was taken by another node at a new epoch
    /// is not served from what was loaded; one still held is.
    #[test]
    fn only_the_buckets_still_held_at_their_epoch_are_served_after_a_load() {
        use waitline_store::test_support::{execute, fresh_database};
        let Some(url) = fresh_database("node_share_still_held") else { return };
        let config = PgConfig { node: "loader".into(), ..PgConfig::new(url.clone()) };
        let store = Store::open_postgres(&config, waitline_store::Options::default()).unwrap();
        let loaded = store.acquire(&[1, 2, 3]).unwrap();
        assert_eq!(loaded.len(), 3);
        execute(&url, "UPDATE waitline.leases SET expires_at = '-infinity' WHERE bucket = 2");
        execute(
            &url,
            "UPDATE waitline.leases SET owner = 'other', epoch = epoch + 1, \
             expires_at = now() + interval '1 hour' WHERE bucket = 3",
        );
        let serving = Serving::new(config.lease, Instant::now(), config.buckets);
        let (kept, lapsed) = still_held(&store, "http://127.0.0.1:1", &serving, &loaded);
        assert_eq!((kept, lapsed), (vec![1], vec![2, 3]));
    }

    #[test]
    fn ready_and_serving_while_turns_reach_postgres_within_the_lease() {
        let serving = Serving::new(Duration::from_millis(30), Instant::now(), 256);
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
