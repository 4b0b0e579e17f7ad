//! Durability: the engine's journal kept in a data directory and replayed at start; a write
//! is answered, and its events delivered, only once its change is on disk.
//!
//! Every change takes the next number of its tenant's sequence and is appended to the store
//! under the tenant's lock (see `waitline::journal`). Acknowledging waits for the store's
//! latest ticket at the time the command returned: that covers the command's own record
//! (appended before it returned), and perhaps a few later ones that share its commit.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use waitline::{Engine, EngineBuilder, Event};
use waitline_store::engine::StoreJournal;
use waitline_store::{Fsync, Options, PgConfig, Replayed, Store, Ticket};

use crate::replay_backlog::Backlog;

/// The delivery mark last kept for each tenant.
type Marks = Arc<parking_lot::Mutex<HashMap<Box<str>, u64>>>;

/// Where a durable service keeps its journal.
#[derive(Debug)]
pub enum Keep<'a> {
    /// A data directory (SQLite), one process.
    Dir(&'a Path),
    /// PostgreSQL; this node takes every bucket's lease and keeps them renewed; once it
    /// loses one, it no longer serves that bucket's tenants (see
    /// [`Durability::lost_bucket_of`]).
    Postgres(&'a PgConfig),
    /// PostgreSQL, as one node of several reached at `url`: this node takes its share of
    /// the buckets and serves only those (see [`crate::node_share`]).
    Node(&'a PgConfig, &'a str),
}

impl std::fmt::Display for Keep<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "{}", dir.display()),
            Self::Postgres(config) | Self::Node(config, _) => {
                write!(f, "{} (node {})", config.place(), config.node)
            }
        }
    }
}

/// Runs `turn` until it reports done, for at most twice `lease` (a node that died still
/// holds its leases for up to their length), sleeping a tenth of the lease between turns.
/// Returns whether `turn` finished in time.
pub(crate) fn within_two_leases(
    lease: std::time::Duration,
    mut turn: impl FnMut() -> Result<bool, String>,
) -> Result<bool, String> {
    let deadline = std::time::Instant::now() + lease * 2;
    loop {
        if turn()? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep((lease / 10).max(std::time::Duration::from_millis(20)));
    }
}

/// The PostgreSQL store with every bucket's lease, renewed in the background: a single node.
/// Leases still held by a node that died (a `kill -9` before this restart) expire within
/// their length: it waits up to twice that for them, then gives up.
fn every_bucket(config: &PgConfig, options: Options) -> Result<Store, String> {
    let store = Store::open_postgres(config, options).map_err(|e| e.to_string())?;
    let mut taken = Vec::new();
    let all = within_two_leases(config.lease, || {
        taken = store.acquire_all().map_err(|e| e.to_string())?;
        Ok(taken.len() == config.buckets as usize)
    })?;
    if !all {
        let held = (0..config.buckets).find(|b| !taken.iter().any(|t| t.0 == *b)).unwrap_or(0);
        return Err(format!(
            "{}: bucket {held} (and {} in all) is held by another node: a single node needs every bucket",
            config.place(),
            config.buckets as usize - taken.len()
        ));
    }
    store.renew_in_background().map_err(|e| e.to_string())?;
    Ok(store)
}

/// The store behind a durable service; nothing for one in memory. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Durability {
    store: Option<Store>,
    /// Events the replay made again whose webhooks were not handled before (at start, or
    /// when this node took a bucket over), taken once by the webhook outbox.
    backlog: Arc<Backlog>,
    /// The journal (each tenant's last number appended), and the delivery mark last kept
    /// for each tenant while no outbox runs (see [`Durability::mark_all_delivered`]).
    journal: Option<Arc<StoreJournal>>,
    marked: Marks,
    /// Delivery marks handed to the store so far (see [`Durability::marks_written`]).
    marks_written: Arc<std::sync::atomic::AtomicU64>,
    /// The buckets this node serves, when it is one node of several (`None`: every bucket
    /// whose lease it has not lost).
    serving: Option<Arc<crate::node_share::Serving>>,
}

impl Durability {
    /// Nothing is kept.
    #[must_use]
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Opens the store (creating it: a directory, or PostgreSQL's tables, see [`Keep`]),
    /// builds the engine with it as its journal, and
    /// replays what the store holds into it: each tenant's base snapshot (the newest at or
    /// before its delivery mark, so that events not yet delivered are made again), then its
    /// records after it. A tenant is snapshotted every `snapshot_every` records (0: never)
    /// by [`Durability::take_due_snapshots`].
    ///
    /// # Errors
    /// The directory is in use or unusable (or PostgreSQL cannot be reached or used, or
    /// another node holds a bucket), or what it holds is damaged or cannot be replayed: the
    /// message says which file or schema, tenant and record.
    pub fn open(
        keep: &Keep<'_>,
        fsync: Fsync,
        recover_truncate: bool,
        snapshot_every: u64,
        engine: EngineBuilder,
    ) -> Result<(Engine, Self, Replayed), String> {
        let options = Options { fsync, recover_truncate, replay_from_delivered: true, ..Options::default() };
        let store = match keep {
            Keep::Dir(dir) => Store::open(dir, options).map_err(|e| e.to_string())?,
            Keep::Postgres(config) => every_bucket(config, options)?,
            Keep::Node(config, url) => {
                let store = Store::open_postgres(config, options).map_err(|e| e.to_string())?;
                let (serving, taken) = crate::node_share::first_turn(&store, config, url)?;
                let buckets: Vec<u32> = taken.iter().map(|t| t.0).collect();
                let (engine, mut durability, replayed) =
                    crate::node_share::while_renewing(&store, url, &serving, || {
                        Self::over(store.clone(), snapshot_every, engine, Some(&buckets))
                    })?;
                crate::node_share::serve_if_still_held(
                    &engine,
                    &store,
                    url,
                    &serving,
                    &taken,
                    &durability.backlog,
                );
                durability.serving = Some(serving);
                crate::node_share::keep_share(&engine, &durability, url, config.lease)?;
                return Ok((engine, durability, replayed));
            }
        };
        Self::over(store, snapshot_every, engine, None)
    }

    /// Builds the engine with `store` as its journal and replays what it holds into it.
    fn over(
        store: Store,
        snapshot_every: u64,
        engine: EngineBuilder,
        buckets: Option<&[u32]>,
    ) -> Result<(Engine, Self, Replayed), String> {
        if let Some(tail) = store.log_tail().filter(|t| **t != waitline_store::LogTail::Clean) {
            tracing::warn!("{tail}");
        }
        match store.intake_tail() {
            Some(tail @ waitline_store::IntakeTail::Clean { records }) if *records > 0 => {
                tracing::info!("{tail}")
            }
            Some(
                tail @ (waitline_store::IntakeTail::Torn { .. } | waitline_store::IntakeTail::Damaged { .. }),
            ) => {
                tracing::warn!("{tail}");
            }
            _ => {}
        }
        let journal = StoreJournal::with_snapshot_every(store.clone(), snapshot_every);
        let engine = engine.journal(journal.clone()).build();
        let delivered = store.delivered().map_err(|e| e.to_string())?;
        let (replayed, backlog_events) =
            crate::replay_backlog::replay(&engine, &journal, &delivered, buckets)?;
        for (tenant, seq, why) in &replayed.truncated {
            tracing::warn!(tenant = %tenant, seq, why = %why, "damaged journal: dropped this record and the tenant's later ones");
        }
        for (tenant, first, last) in &replayed.completed {
            tracing::warn!(tenant = %tenant, first, last, "a firing of timers was cut by a crash: recorded its missing records again");
        }
        // Read again: a recovery in the replay lowers a cut tenant's mark.
        let delivered = if replayed.truncated.is_empty() {
            delivered
        } else {
            store.delivered().map_err(|e| e.to_string())?
        };
        let marked = Arc::new(parking_lot::Mutex::new(
            delivered.into_iter().map(|(t, s)| (t.into_boxed_str(), s)).collect::<HashMap<_, _>>(),
        ));
        let backlog = Arc::new(Backlog::default());
        backlog.add(backlog_events);
        let durability = Self {
            store: Some(store),
            backlog,
            journal: Some(journal),
            marked,
            marks_written: Arc::default(),
            serving: None,
        };
        Ok((engine, durability, replayed))
    }

    /// Whether changes are kept on disk.
    #[must_use]
    pub const fn is_durable(&self) -> bool {
        self.store.is_some()
    }

    /// Whether a restart left events to send again.
    #[must_use]
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// The events to send again after a restart (once: later calls get none).
    #[must_use]
    pub fn take_backlog(&self) -> Vec<Event> {
        self.backlog.take()
    }

    /// Resolves when events were added to the backlog (a bucket taken over while running).
    pub async fn backlog_added(&self) {
        self.backlog.added().await;
    }

    /// With no webhook outbox running, no event is waiting for delivery: marks every
    /// tenant's events handled up to its last number appended (only where it moved), so that
    /// a restart does not send the whole history again.
    /// `idle` says whether still no outbox runs, asked after the heads are read: an outbox
    /// that started before then may have events of those numbers to deliver.
    pub fn mark_all_delivered(&self, idle: impl Fn() -> bool) {
        let (Some(store), Some(journal)) = (&self.store, &self.journal) else { return };
        let heads = journal.heads();
        if !idle() {
            return;
        }
        let mut marked = self.marked.lock();
        for (tenant, seq) in heads {
            if marked.get(&tenant).is_none_or(|m| *m < seq) {
                self.write_mark(store, &tenant, seq);
                marked.insert(tenant, seq);
            }
        }
    }

    /// Whether some tenant is due for a snapshot (one atomic load).
    #[must_use]
    pub fn snapshots_due(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| j.snapshots_due())
    }

    /// Snapshots every tenant due for one (each holds its tenant's lock while it is made:
    /// call it off the request path); returns how many.
    pub fn take_due_snapshots(&self, engine: &Engine) -> usize {
        let Some(journal) = &self.journal else { return 0 };
        match journal.take_due_snapshots(engine) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("taking snapshots failed: {e}");
                0
            }
        }
    }

    /// Every event of `tenant` up to `seq` has been handled by the webhook outbox.
    pub fn mark_delivered(&self, tenant: &str, seq: u64) {
        if let Some(store) = &self.store {
            self.write_mark(store, tenant, seq);
        }
    }

    fn write_mark(&self, store: &Store, tenant: &str, seq: u64) {
        // Not acknowledged: a mark lost with a failed write leaves events to send again.
        let _ = store.mark_delivered(tenant, seq);
        self.marks_written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many delivery marks were handed to the store (each is a write in its next
    /// commit), for tests and benchmarks.
    #[doc(hidden)]
    #[must_use]
    pub fn marks_written(&self) -> u64 {
        self.marks_written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `tenant`'s delivery mark as stored (`None`: none yet, or in memory), for tests.
    #[doc(hidden)]
    #[must_use]
    pub fn stored_mark(&self, tenant: &str) -> Option<u64> {
        self.store.as_ref()?.delivered().ok()?.get(tenant).copied()
    }

    /// How long the store's commits took (`None` in memory).
    #[must_use]
    pub fn commit_times(&self) -> Option<waitline_store::CommitTimes> {
        self.store.as_ref().map(Store::commit_times)
    }

    /// Whether the store has stopped (a write or a sync failed): no change may be
    /// acknowledged any more, until a restart or (see [`Durability::reconnects`]) until it
    /// reconnects.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.store.as_ref().is_some_and(Store::is_stopped)
    }

    /// Whether this is a node of several whose store works, or stopped only because
    /// PostgreSQL dropped its connection: the share thread reconnects it and loads the
    /// buckets again (see [`crate::node_share`]). A single node's store stops for good.
    #[must_use]
    pub fn reconnects(&self) -> bool {
        self.serving.is_some()
            && self.store.as_ref().is_some_and(|s| !s.is_stopped() || s.can_restart_writer())
    }

    /// Whether a write of `tenant` taken before (see [`Durability::write_begins`]) may be
    /// answered here: as [`Durability::serves`], or its bucket is being given up and waits
    /// for its writes in flight.
    #[must_use]
    pub fn finishes(&self, tenant: &str) -> bool {
        self.bucket_is(tenant, crate::node_share::Serving::finishes)
    }

    /// Counts a write of `tenant` in flight until the guard is dropped, on a node of several
    /// (a bucket given up waits for its writes in flight).
    #[must_use]
    pub fn write_begins(&self, tenant: &str) -> Option<crate::node_share::InFlight> {
        let (serving, store) = self.serving.as_ref().zip(self.store.as_ref())?;
        Some(serving.write_begins(store.bucket_of(tenant)))
    }

    /// The bucket of `tenant` with the epoch lost, if this node lost its lease (another
    /// node took it over, or it lapsed): the tenant is no longer served here, since what
    /// this node holds of it may miss the new owner's changes.
    #[must_use]
    pub fn lost_bucket_of(&self, tenant: &str) -> Option<(u32, u64)> {
        let store = self.store.as_ref()?;
        let lost = store.lost();
        if lost.is_empty() {
            return None; // the common case: no bucket lost, no hash
        }
        let bucket = store.bucket_of(tenant);
        lost.into_iter().find(|l| l.0 == bucket)
    }

    /// Whether this node serves `tenant` now: its bucket's lease was not lost and, for one
    /// node of several, its bucket is taken and loaded here.
    #[must_use]
    pub fn serves(&self, tenant: &str) -> bool {
        self.bucket_is(tenant, crate::node_share::Serving::contains)
    }

    /// Whether `tenant`'s bucket's lease was not lost and, for one node of several, `state`
    /// holds of its bucket here.
    fn bucket_is(&self, tenant: &str, state: fn(&crate::node_share::Serving, u32) -> bool) -> bool {
        if self.lost_bucket_of(tenant).is_some() {
            return false;
        }
        match (&self.serving, &self.store) {
            (Some(serving), Some(store)) => state(serving, store.bucket_of(tenant)),
            _ => true,
        }
    }

    /// The epoch this node holds `tenant`'s bucket under now (`None`: not held; always
    /// `None` without leases). A write is acknowledged only if it is the same before the
    /// command ran and once it settled (the acknowledgement layer compares the two).
    #[must_use]
    pub fn held_epoch_of(&self, tenant: &str) -> Option<u64> {
        self.store.as_ref().and_then(|store| store.held_epoch(store.bucket_of(tenant)))
    }

    /// Gives up `tenant`'s bucket's lease in the store without stopping serving it (for
    /// tests: a write racing a share turn that releases its bucket).
    #[doc(hidden)]
    pub fn release_bucket_of(&self, tenant: &str) {
        if let Some(store) = &self.store {
            let _ = store.release(store.bucket_of(tenant));
        }
    }

    /// The store and journal, for a node loading the buckets it takes.
    pub(crate) fn store_and_journal(&self) -> Option<(&Store, &Arc<StoreJournal>)> {
        self.store.as_ref().zip(self.journal.as_ref())
    }

    /// The backlog of webhooks owed, for a node loading the buckets it takes.
    pub(crate) fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }

    /// Whether this node is ready to serve: its store works, a single node on PostgreSQL
    /// has lost no bucket (it never takes one back: a restart does) and, for one node of
    /// several, its last turn reached PostgreSQL within the lease (see [`crate::readiness`]).
    ///
    /// # Errors
    /// Why not.
    pub fn ready(&self) -> Result<(), String> {
        if self.is_stopped() {
            return Err(if self.reconnects() {
                "PostgreSQL dropped the store's connection: reconnecting".into()
            } else {
                "the store has stopped: restart to recover".into()
            });
        }
        match (&self.serving, &self.store) {
            (Some(serving), _) => serving.ready(),
            (None, Some(store)) => match store.lost().as_slice() {
                [] => Ok(()),
                lost => Err(format!(
                    "{} buckets lost (bucket {} first): a single node serves them again only after a restart",
                    lost.len(),
                    lost[0].0
                )),
            },
            (None, None) => Ok(()),
        }
    }

    /// Resolves once this node no longer serves `tenant` (one node of several gave its
    /// bucket up or lost it): an event stream of it ends, and its client reconnects to the
    /// new owner. Never, for a single node.
    pub fn moved(&self, tenant: &str) -> impl Future<Output = ()> + Send + use<> {
        let (this, tenant) = (self.clone(), tenant.to_owned());
        let stops = self.serving.as_ref().map(|s| s.stops());
        async move {
            let Some(mut stops) = stops else { return std::future::pending().await };
            while this.serves(&tenant) {
                if stops.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// Queries made so far to find a bucket's owner for a forwarded request (the cache had
    /// none, or a wrong one).
    #[must_use]
    pub fn owner_lookups(&self) -> u64 {
        self.serving.as_ref().map_or(0, |s| s.lookups())
    }

    /// Takes `url` as the owner of `tenant`'s bucket until the next refresh (for tests:
    /// an owner known wrong, as after a move).
    #[doc(hidden)]
    pub fn cache_owner(&self, tenant: &str, url: &str) {
        if let (Some(serving), Some(store)) = (&self.serving, &self.store) {
            serving.remember_owner(store.bucket_of(tenant), url);
        }
    }

    /// Makes each later load of buckets this node takes while running wait `pause` first
    /// (for tests: a load longer than the lease).
    #[doc(hidden)]
    pub fn pause_loads(&self, pause: std::time::Duration) {
        if let Some(serving) = &self.serving {
            serving.pause_loads(pause);
        }
    }

    /// Stops taking this node's share (the service stops): see [`crate::node_share::Serving::close`].
    pub fn stop_sharing(&self) {
        if let Some(serving) = &self.serving {
            serving.close();
        }
    }

    /// The buckets this node serves, when it is one node of several.
    pub(crate) fn serving(&self) -> Option<&Arc<crate::node_share::Serving>> {
        self.serving.as_ref()
    }

    /// Whether an event numbered `seq` of `tenant`, made before a mark that settled as
    /// `settled`, may be told (a webhook, an event stream): `Ok(false)` when the tenant's
    /// bucket was lost (its change may not be stored; the new owner replays and tells it) or
    /// is not served here, or when the event was made by loading a bucket taken over (the
    /// webhooks it owes are in the backlog), or when a node's store lost its connection (the
    /// change may not be stored; once its bucket is loaded again, a stored change's event is
    /// in the backlog), `Err` when the store has stopped for good. A lease lost by another bucket fails only its own tickets: the mark's
    /// failure then says nothing about this tenant's change.
    ///
    /// # Errors
    /// The store has stopped (a write or a sync failed).
    pub fn may_tell(&self, settled: Result<(), String>, tenant: &str, seq: u64) -> Result<bool, String> {
        if self.not_to_tell(tenant, seq) {
            return Ok(false);
        }
        match settled {
            Err(_) if self.reconnects() && (self.is_stopped() || !self.lost_any()) => Ok(false),
            Err(why) if self.is_stopped() || !self.lost_any() => Err(why),
            _ => Ok(true),
        }
    }

    /// Whether an event numbered `seq` of `tenant` is surely not this node's to tell, known
    /// without waiting for the store: its bucket was lost or is not served here, or a
    /// loading replay published it (its webhook, if owed, is in the backlog). Checked before
    /// waiting, so that a takeover's replay costs no wait per event.
    #[must_use]
    pub fn not_to_tell(&self, tenant: &str, seq: u64) -> bool {
        self.lost_bucket_of(tenant).is_some()
            || matches!((&self.serving, &self.store), (Some(serving), Some(store))
                if !serving.tells(store.bucket_of(tenant), tenant, seq))
    }

    /// Holds the store's writer back (for tests: a commit that takes long).
    #[doc(hidden)]
    pub fn pause_writer(&self) {
        if let Some(store) = &self.store {
            store.pause_writer();
        }
    }

    #[doc(hidden)]
    pub fn resume_writer(&self) {
        if let Some(store) = &self.store {
            store.resume_writer();
        }
    }

    /// Whether this store works under leases (PostgreSQL), which it may lose.
    #[must_use]
    pub fn has_leases(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.dir().is_none())
    }

    /// A single node (a node of several does it in its share thread): forgets the tenants
    /// of the buckets whose lease was lost and not yet in `forgotten`, then adds them there.
    /// Another node has them now; if this node ever takes them again it loads them afresh.
    pub fn forget_lost(&self, engine: &Engine, forgotten: &mut Vec<(u32, u64)>) {
        let Some(store) = self.store.as_ref().filter(|_| self.serving.is_none()) else { return };
        let fresh: Vec<(u32, u64)> = store.lost().into_iter().filter(|l| !forgotten.contains(l)).collect();
        if fresh.is_empty() {
            return;
        }
        let buckets: Vec<u32> = fresh.iter().map(|l| l.0).collect();
        crate::node_share::forget_tenants(engine, store, &buckets);
        tracing::warn!(buckets = ?buckets, "buckets lost: their tenants are dropped from memory");
        forgotten.extend(fresh);
    }

    /// Whether some bucket's lease was lost.
    #[must_use]
    pub fn lost_any(&self) -> bool {
        self.store.as_ref().is_some_and(|s| !s.lost().is_empty())
    }

    /// A mark covering every change made so far.
    #[must_use]
    pub fn mark(&self) -> Option<Ticket> {
        self.store.as_ref().map(Store::last_ticket)
    }

    /// `Ready(Ok)` once every change up to `mark` is on disk (at once in memory). A change
    /// of a tenant whose bucket's lease was lost may have been refused without a ticket of
    /// its own: check [`Durability::lost_bucket_of`] after this.
    pub fn poll_durable(&self, mark: Option<Ticket>, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        match (&self.store, mark) {
            (Some(store), Some(ticket)) => store.poll_durable(ticket, cx).map_err(|e| e.to_string()),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Blocks until every change made so far is on disk (for code outside a runtime).
    ///
    /// # Errors
    /// The store has stopped.
    pub fn settled_blocking(&self) -> Result<(), String> {
        match &self.store {
            Some(store) => store.flush().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Resolves once every change made so far is on disk.
    ///
    /// # Errors
    /// The store has stopped.
    pub async fn settled(&self) -> Result<(), String> {
        let mark = self.mark();
        std::future::poll_fn(|cx| self.poll_durable(mark, cx)).await
    }
}

/// What a data directory holds, as `waitline inspect` prints it: per tenant its sequence
/// numbers and stored sizes, then (from a replay into an engine in memory) its calls and
/// queues. The directory is locked meanwhile: a running service must be stopped first.
///
/// # Errors
/// The directory is in use, unusable, or cannot be replayed.
pub fn inspect(dir: &Path) -> Result<String, String> {
    use std::fmt::Write;
    if !dir.join(waitline_store::DB_FILE).exists() {
        return Err(format!("{}: no waitline data here", dir.display()));
    }
    // Snapshots are never taken here: inspecting writes nothing but what any start does (what
    // SQLite's recovery would drop from the write-ahead log is cut).
    let (engine, durability, replayed) =
        Durability::open(&Keep::Dir(dir), Fsync::Always, false, 0, Engine::builder())?;
    let Some(store) = &durability.store else { unreachable!("opened on a directory") };
    let tenants = store.describe().map_err(|e| e.to_string())?;
    let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    let db = waitline_store::DB_FILE;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} tenants, {} snapshots restored, {} records replayed; {db} {} bytes, its write-ahead log {} bytes",
        dir.display(),
        replayed.tenants,
        replayed.snapshots,
        replayed.records,
        size(db),
        size(&format!("{db}-wal"))
    );
    if let Some(tail) = store.log_tail().filter(|t| **t != waitline_store::LogTail::Clean) {
        let _ = writeln!(out, "{tail}");
    }
    if let Some(tail) =
        store.intake_tail().filter(|t| **t != waitline_store::IntakeTail::Clean { records: 0 })
    {
        let _ = writeln!(out, "{tail}");
    }
    for t in tenants {
        let tenant = engine.tenant(&t.tenant);
        let snapshots = if t.snapshots.is_empty() {
            "none".to_owned()
        } else {
            let each: Vec<String> =
                t.snapshots.iter().map(|(seq, bytes)| format!("at {seq} ({bytes} bytes)")).collect();
            each.join(", ")
        };
        let base = t.base.map_or_else(|| "the first record".to_owned(), |b| format!("the snapshot at {b}"));
        let _ = writeln!(
            out,
            "tenant {:?}: last sequence number {}, snapshots {snapshots}, journal {} rows of {} records ({} bytes), restarts from {base}, {} live calls",
            t.tenant,
            t.last_seq,
            t.journal_rows,
            t.records,
            t.record_bytes,
            tenant.live_calls()
        );
        for number in 1.. {
            let Ok(page) = tenant.queues(waitline::PageRequest::new(number, 250)) else { break };
            for q in &page.data {
                let _ =
                    writeln!(out, "  queue {:?}: {} waiting (max {})", q.name, q.current_size, q.max_size);
            }
            if number >= page.total_pages as u64 {
                break;
            }
        }
    }
    drop(engine);
    Ok(out)
}

/// Where a secret came from (see [`stored_secret`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretOrigin {
    /// Made now, and kept in the data directory (if there is one).
    Made,
    /// Read from the data directory, as an earlier start left it.
    Stored,
}

/// A secret the service makes when it is not configured (the API key, the signing key),
/// kept in the data directory so that it survives a restart: read from `dir/name` when the
/// file exists, else made by `make` and written there, readable by the owner only (written
/// to a temporary file, synced, then renamed: never half a key). With no directory it is
/// made and not kept.
///
/// # Errors
/// The file cannot be read or written.
pub fn stored_secret(
    dir: Option<&Path>,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<(String, SecretOrigin), String> {
    let Some(dir) = dir else { return Ok((make(), SecretOrigin::Made)) };
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok((text.trim().to_owned(), SecretOrigin::Stored)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let secret = make();
    let temporary = dir.join(format!("{name}.new"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary)?;
        file.write_all(secret.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((secret, SecretOrigin::Made))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (Engine, Durability) {
        let (engine, durability, _) =
            Durability::open(&Keep::Dir(dir), Fsync::Always, false, 0, Engine::builder()).unwrap();
        (engine, durability)
    }

    fn dial(engine: &Engine, tenant: &str) {
        engine.tenant(tenant).dial(&waitline::DialParams::new("+1", "+2", "app")).unwrap();
    }

    #[test]
    fn in_memory_keeps_nothing_and_waits_for_nothing() {
        let memory = Durability::in_memory();
        assert!(!memory.is_durable() && !memory.is_stopped() && !memory.has_backlog());
        assert_eq!(memory.mark(), None);
        memory.settled_blocking().unwrap();
    }

    #[test]
    fn events_not_handled_before_a_restart_are_the_backlog_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (engine, durability) = open(dir.path());
            assert!(durability.is_durable() && !durability.has_backlog());
            dial(&engine, "acme"); // seq 1: call.initiated, call.answered
            dial(&engine, "acme"); // seq 2
            durability.mark_delivered("acme", 1);
            durability.settled_blocking().unwrap();
        }
        let (_engine, durability) = open(dir.path());
        assert!(durability.has_backlog());
        let backlog = durability.take_backlog();
        assert_eq!(backlog.iter().map(|e| e.seq()).collect::<Vec<_>>(), [2, 2], "only past the mark");
        assert!(!durability.has_backlog() && durability.take_backlog().is_empty(), "taken once");
    }

    #[test]
    fn with_no_outbox_the_marks_follow_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (engine, durability) = open(dir.path());
            dial(&engine, "acme");
            dial(&engine, "zeta");
            durability.mark_all_delivered(|| false); // an outbox started meanwhile: no mark
            durability.settled_blocking().unwrap();
        }
        {
            let (engine, durability) = open(dir.path());
            assert_eq!(durability.take_backlog().len(), 4, "nothing was marked");
            dial(&engine, "acme");
            durability.mark_all_delivered(|| true);
            durability.settled_blocking().unwrap();
        }
        let (_engine, durability) = open(dir.path());
        assert!(!durability.has_backlog(), "every event was marked handled");
    }

    /// A recovery that cuts a tenant's journal lowers its delivery mark below the cut; the
    /// server's own copy of the marks follows, so that the new history's events are marked
    /// as they are handled (a copy kept from before the replay would skip them up to the
    /// old mark, and a later restart would send them again).
    #[test]
    fn a_recovery_that_lowers_a_mark_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (engine, durability) = open(dir.path());
            for _ in 0..3 {
                dial(&engine, "acme");
                durability.settled_blocking().unwrap(); // one row per record
            }
            durability.mark_all_delivered(|| true);
            durability.settled_blocking().unwrap();
            assert_eq!(durability.stored_mark("acme"), Some(3));
        }
        // A flipped bit in record 2.
        let db = rusqlite::Connection::open(dir.path().join(waitline_store::DB_FILE)).unwrap();
        let mut row: Vec<u8> = db
            .query_row("SELECT records FROM journal WHERE tenant = 'acme' AND seq = 2", [], |r| r.get(0))
            .unwrap();
        *row.last_mut().unwrap() ^= 1;
        db.execute("UPDATE journal SET records = ?1 WHERE tenant = 'acme' AND seq = 2", [row]).unwrap();
        drop(db);
        let (engine, durability, replayed) =
            Durability::open(&Keep::Dir(dir.path()), Fsync::Always, true, 0, Engine::builder()).unwrap();
        assert_eq!(replayed.truncated.len(), 1);
        assert_eq!(durability.stored_mark("acme"), Some(1));
        dial(&engine, "acme"); // number 2 again, in the new history
        durability.mark_all_delivered(|| true);
        durability.settled_blocking().unwrap();
        assert_eq!(durability.stored_mark("acme"), Some(2));
    }

    /// Snapshots do not lose what was not delivered: the journal after the delivery mark
    /// is kept and replayed (making its events again); once the mark passes the snapshot, a
    /// restart restores it and the journal it covers is gone.
    #[test]
    fn a_restart_from_a_snapshot_still_sends_what_was_not_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let open = |every| {
            Durability::open(&Keep::Dir(dir.path()), Fsync::Always, false, every, Engine::builder()).unwrap()
        };
        {
            let (engine, durability, _) = open(2);
            for _ in 0..3 {
                dial(&engine, "acme");
            }
            durability.mark_delivered("acme", 1);
            assert!(durability.snapshots_due());
            assert_eq!(durability.take_due_snapshots(&engine), 1);
            durability.settled_blocking().unwrap();
        }
        {
            let (engine, durability, replayed) = open(2);
            assert_eq!((replayed.snapshots, replayed.records), (0, 3), "the snapshot is after the mark");
            let seqs: Vec<u64> = durability.take_backlog().iter().map(Event::seq).collect();
            assert_eq!(seqs, [2, 2, 3, 3]);
            assert_eq!(engine.tenant("acme").last_seq(), 3);
            durability.mark_delivered("acme", 3);
            durability.settled_blocking().unwrap();
        }
        let (_engine, durability, replayed) = open(2);
        assert_eq!((replayed.snapshots, replayed.records), (1, 0));
        assert!(!durability.has_backlog());
        drop((_engine, durability));
        let text = inspect(dir.path()).unwrap();
        assert!(text.contains("snapshots at 3 ("), "{text}");
        assert!(
            text.contains("journal 0 rows of 0 records (0 bytes), restarts from the snapshot at 3"),
            "{text}"
        );
    }

    #[test]
    fn inspect_tells_what_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(inspect(dir.path()).unwrap_err().contains("no waitline data here"));
        {
            let (engine, _durability, _) =
                Durability::open(&Keep::Dir(dir.path()), Fsync::Always, false, 0, Engine::builder()).unwrap();
            let t = engine.tenant("acme");
            let c = t.dial(&waitline::DialParams::new("+1", "+2", "app")).unwrap().call_control_id;
            t.enqueue(&c, &waitline::EnqueueParams::new("support")).unwrap();
            _durability.settled_blocking().unwrap();
        }
        let text = inspect(dir.path()).unwrap();
        assert!(text.contains("1 tenants, 0 snapshots restored, 2 records replayed"), "{text}");
        // One row per commit: the two records may share one.
        assert!(text.contains("tenant \"acme\": last sequence number 2, snapshots none, journal "), "{text}");
        assert!(text.contains(" rows of 2 records ("), "{text}");
        assert!(text.contains("restarts from the first record"), "{text}");
        assert!(text.contains("1 live calls"), "{text}");
        assert!(text.contains("queue \"support\": 1 waiting (max 100)"), "{text}");
        assert!(!text.contains("cut short"), "{text}");
    }

    /// A directory as a `kill -9` in the middle of a commit leaves it: its log's last frame
    /// cut short. `inspect` says what SQLite drops.
    #[test]
    fn inspect_tells_of_a_torn_last_transaction() {
        let (dir, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (engine, durability) = open(dir.path());
        dial(&engine, "acme");
        durability.settled_blocking().unwrap();
        let db = waitline_store::DB_FILE;
        std::fs::copy(dir.path().join(db), crashed.path().join(db)).unwrap();
        let wal = std::fs::read(dir.path().join(format!("{db}-wal"))).unwrap();
        std::fs::write(crashed.path().join(format!("{db}-wal")), &wal[..wal.len() - 1]).unwrap();
        let text = inspect(crashed.path()).unwrap();
        assert!(text.contains("ends in a transaction cut short at byte"), "{text}");
    }

    /// A directory as a `kill -9` under `--fsync periodic` leaves it: acknowledged records
    /// in the intake only. `inspect` (a start) takes them and says so.
    #[test]
    fn inspect_tells_of_records_taken_from_the_intake() {
        let (dir, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (engine, durability, _) =
            Durability::open(&Keep::Dir(dir.path()), Fsync::Periodic, false, 0, Engine::builder()).unwrap();
        let store = durability.store.as_ref().unwrap();
        store.pause_writer();
        dial(&engine, "acme");
        dial(&engine, "acme");
        let db = waitline_store::DB_FILE;
        for name in [db.to_owned(), format!("{db}-wal"), "intake".to_owned()] {
            std::fs::copy(dir.path().join(&name), crashed.path().join(&name)).unwrap();
        }
        store.resume_writer();
        let text = inspect(crashed.path()).unwrap();
        assert!(text.contains("2 record(s) taken from the intake"), "{text}");
        assert!(text.contains("tenant \"acme\": last sequence number 2,"), "{text}");
        assert!(text.contains("2 live calls"), "{text}");
    }

    #[test]
    fn a_secret_is_made_once_then_read_back_private() {
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) = stored_secret(Some(dir.path()), "api-key", || "k1".into()).unwrap();
        assert_eq!((first.as_str(), origin), ("k1", SecretOrigin::Made));
        let (again, origin) = stored_secret(Some(dir.path()), "api-key", || "k2".into()).unwrap();
        assert_eq!((again.as_str(), origin), ("k1", SecretOrigin::Stored));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("api-key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(stored_secret(None, "api-key", || "k3".into()).unwrap().0, "k3");
    }
}
