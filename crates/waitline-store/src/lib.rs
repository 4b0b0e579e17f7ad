//! Durable storage for waitline: each tenant's journal of state changes, numbered by the
//! tenant's sequence, and its snapshots, kept in SQLite (write-ahead log, a data directory,
//! one process) or in PostgreSQL (several nodes, each owning buckets of tenants through
//! leases with epochs). One writer thread per store, group commit, the same contract over
//! both.
//!
//! The store knows nothing of calls and queues: records and snapshots are bytes that the
//! engine makes and replays, so the engine stays the only implementation of the rules. The
//! tables are the same in both databases (`journal`, a row per commit and tenant keyed by
//! the tenant and its first sequence number; `snapshots`; `delivered`), PostgreSQL's with
//! each row's bucket and the lease epoch it was written under.
//!
//! ```no_run
//! use waitline_store::{Options, Store};
//! let store = Store::open("waitline-data".as_ref(), Options::default())?;
//! let ticket = store.append("acme", 1, b"a record")?;
//! store.wait(ticket)?; // on disk now
//! # Ok::<(), waitline_store::Error>(())
//! ```
//!
//! Appending never waits for the disk: it queues the record and returns a [`Ticket`]. The
//! writer thread takes everything queued when it wakes, writes it in one transaction, syncs
//! once (with [`Fsync::Always`]) and then marks every ticket of the batch durable; many
//! commands share one `fdatasync`, which costs milliseconds here. Wait for a ticket with
//! [`Store::wait`] (blocking) or [`Store::durable`] (a future for any async runtime). If a
//! write or a sync fails, the store stops: that ticket, every later one and every later
//! append fail, and nothing is retried (after a failed `fsync` the state of the file is not
//! known; restarting replays what is really on disk).
//!
//! Over PostgreSQL ([`Store::open_postgres`]) a store writes only the tenants of the buckets
//! it holds a lease on ([`Store::acquire`], [`Store::renew`], [`Store::release`]); every
//! batch checks, in its own transaction, that each lease it writes under is still this
//! node's at that epoch, and what was written under a lost lease is refused
//! ([`Error::LeaseLost`]) while the other buckets go on.

mod backend;
pub mod bucket;
mod checkpoint;
mod compact;
mod dir;
pub mod engine;
mod fork;
mod frame;
mod intake;
mod lease;
pub mod placement;
mod postgres;
mod reconnect;
mod replay;
mod share;
mod sqlite;
#[doc(hidden)]
pub mod test_support;
mod timing;
pub mod wal;
mod worker;
mod writer;

pub use crate::intake::IntakeTail;
pub use crate::postgres::nodes::Node;
pub use crate::postgres::{PgConfig, PgTls};
pub use crate::share::Share;
pub use crate::sqlite::DB_FILE;
pub use crate::timing::{COMMIT_BUCKETS_MICROS, CommitTimes};
pub use crate::wal::LogTail;

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use crate::backend::Conn;
use crate::lease::Held;
use crate::postgres::{LeaseConn, Postgres};
use crate::sqlite::Sqlite;
use crate::worker::{RemoteConn, Worker};
use crate::writer::{Channel, Claim, Op, Write};

/// When an appended record counts as durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fsync {
    /// After its transaction is synced to the disk (`synchronous=FULL`): survives a power
    /// loss. The default.
    #[default]
    Always,
    /// Once written to the operating system: in a data directory, once copied into the
    /// intake (a file mapped into memory, see the `intake` module; committed within a few
    /// milliseconds); in PostgreSQL, once committed without waiting for its flush. What is
    /// written is synced at least once a second. Survives a crash or a `kill -9` of the
    /// process, but a power loss or a kernel crash can lose up to the last second (like
    /// Redis's `appendfsync everysec`).
    Periodic,
}

/// How to open a store.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// When records count as durable.
    pub fsync: Fsync,
    /// On a bad record, drop it and the tenant's later records (and say so) instead of
    /// refusing to start.
    pub recover_truncate: bool,
    /// Keep, and replay at a restart, each tenant's journal after its delivery mark
    /// ([`Store::mark_delivered`]) even where a snapshot covers it, so that the events not
    /// yet delivered are made again (a service that sends webhooks). Otherwise a tenant
    /// restarts from its newest snapshot. See the `compact` module.
    pub replay_from_delivered: bool,
    /// The intake's size in bytes (0: the default, 32 MiB); tests make it small.
    #[doc(hidden)]
    pub intake_bytes: u64,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process has this data directory open.
    #[error("the data directory {} is in use by another waitline process (its LOCK file is held)", .0.display())]
    Locked(PathBuf),
    /// A file of the data directory could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// SQLite refused an operation.
    #[error("{}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// PostgreSQL refused an operation, or could not be reached.
    #[error("{place}: {detail}")]
    Postgres {
        /// The schema (never the URL, which may hold a password).
        place: String,
        /// What the server said, or why it could not be reached.
        detail: String,
        /// What the client said.
        source: ::postgres::Error,
    },
    /// The CA file for PostgreSQL's certificate cannot be used.
    #[error("{}: not a usable CA file for PostgreSQL: {detail}", path.display())]
    PostgresCa {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A CA file was given for a URL that does not ask for TLS: it would be silently unused.
    #[error(
        "{0}: a CA file is given but the URL does not say sslmode=require (it would connect in plaintext)"
    )]
    PostgresCaUnused(String),
    /// A stored record or snapshot is damaged, or a record is missing.
    #[error(
        "{place}: the {what} of tenant {tenant:?} at sequence number {seq} is damaged: {detail} (start with --recover-truncate to drop it and what follows)"
    )]
    Corrupt {
        /// The database file, or PostgreSQL schema.
        place: String,
        /// `record` or `snapshot`.
        what: &'static str,
        /// The tenant whose data it is.
        tenant: String,
        /// Its sequence number.
        seq: u64,
        /// What is wrong.
        detail: String,
    },
    /// SQLite's write-ahead log is damaged before transactions it committed: opening it
    /// would drop them.
    #[error(
        "{}: damaged at byte {offset}: {detail}; SQLite would drop them (start with --recover-truncate to drop them and go on)",
        path.display()
    )]
    LogDamaged {
        /// The log file.
        path: PathBuf,
        /// Where the damage is.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The intake (where `--fsync periodic` records land before their transaction) is
    /// damaged before records written after it: they were acknowledged.
    #[error(
        "{}: damaged at byte {offset}: {detail}; the records after it were acknowledged (start with --recover-truncate to drop them and go on)",
        path.display()
    )]
    IntakeDamaged {
        /// The intake file.
        path: PathBuf,
        /// Where the damage is.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The store was written by a newer waitline.
    #[error("{place}: tables of a version this waitline does not read ({found})")]
    Schema {
        /// The database file, or PostgreSQL schema.
        place: String,
        /// The version found.
        found: i64,
    },
    /// A PostgreSQL schema name that is not a plain lowercase identifier.
    #[error(
        "{0:?} is not a usable schema name (lowercase letters, digits and _, not starting with a digit, at most 63)"
    )]
    SchemaName(String),
    /// The schema was made with another number of buckets.
    #[error("{place}: made with {stored} buckets, this node is configured with {configured}")]
    Buckets {
        /// The PostgreSQL schema.
        place: String,
        /// The number kept in the schema.
        stored: i64,
        /// This node's.
        configured: u32,
    },
    /// A sequence number the databases cannot hold (above 2^63 - 1).
    #[error("sequence number {0} is out of range")]
    SeqRange(u64),
    /// A record that does not follow its tenant's last one: two histories.
    #[error("record {seq} of tenant {tenant:?} does not follow {last}: two histories")]
    SecondHistory {
        /// The tenant.
        tenant: String,
        /// The record's number.
        seq: u64,
        /// The tenant's last number stored.
        last: u64,
    },
    /// The store stopped after a failed write or sync; restart to recover what is on disk.
    #[error("the store has stopped: {0}")]
    Stopped(Arc<str>),
    /// The code replaying the journal refused an entry.
    #[error("replaying tenant {tenant:?} at sequence number {seq}: {detail}")]
    Replay {
        /// The tenant.
        tenant: String,
        /// The entry's sequence number.
        seq: u64,
        /// What the replaying code said.
        detail: String,
    },
    /// This store holds no lease on the tenant's bucket: another node owns it, or none does.
    #[error("this node does not own bucket {bucket} (no lease held on it)")]
    NotOwner {
        /// The bucket.
        bucket: u32,
    },
    /// The lease this was written under was lost (another node took the bucket over, or it
    /// expired) before it was committed: nothing of it was kept.
    #[error(
        "the lease of bucket {bucket} at epoch {epoch} was lost before this was committed: nothing of it was kept"
    )]
    LeaseLost {
        /// The bucket.
        bucket: u32,
        /// The epoch it was written under.
        epoch: u64,
    },
    /// The store was opened by the process this one was forked from: it has none of the
    /// store's threads here, and shares its files with the parent.
    #[error(
        "{place} was opened before this process was forked from the one that opened it: it cannot be used here; open a store in this process (another data directory, or this one once the parent has closed it)"
    )]
    Forked {
        /// The database file, or PostgreSQL schema.
        place: String,
    },
    /// Leases are kept only by a PostgreSQL store (a SQLite store's data directory is locked
    /// by one process).
    #[error("this store keeps no leases (only a PostgreSQL store does)")]
    NoLeases,
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }

    /// Whether PostgreSQL rolled the transaction back to resolve a conflict with another
    /// (class 40: a deadlock broken, a serialization failure): nothing of it was kept, and
    /// the same work may be tried again.
    pub(crate) fn is_rolled_back_conflict(&self) -> bool {
        let Self::Postgres { source, .. } = self else { return false };
        source.as_db_error().is_some_and(|db| db.code().code().starts_with("40"))
    }

    /// Whether PostgreSQL dropped the connection or could not be reached (a failover, a
    /// restart, a backend terminated): a new connection may work, and what was being
    /// committed may or may not have been.
    #[must_use]
    pub fn is_disconnect(&self) -> bool {
        let Self::Postgres { source, .. } = self else { return false };
        match source.as_db_error() {
            // Class 08: connection exception; 57P01..57P03: shut down, crashed, starting;
            // 25P03 and 57P05: the session ended for idling (in a transaction, or at all).
            Some(db) => {
                let code = db.code().code();
                code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "57P05" | "25P03")
            }
            // Closed, or an I/O error: no answer from the server at all.
            None => {
                source.is_closed()
                    || std::error::Error::source(source).is_some_and(|cause| cause.is::<std::io::Error>())
            }
        }
    }
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stands for one appended record or snapshot until it is durable; tickets are handed out
/// in append order, and a ticket is durable only after every earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// One thing replay hands over, per tenant in this order: its snapshot (if any), then its
/// records in sequence order, dense from the snapshot's number plus one (or from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// The tenant's state as of `seq`.
    Snapshot {
        /// The tenant.
        tenant: &'a str,
        /// The last sequence number it covers.
        seq: u64,
        /// What the engine saved.
        data: &'a [u8],
    },
    /// One state change.
    Record {
        /// The tenant.
        tenant: &'a str,
        /// Its sequence number.
        seq: u64,
        /// What the engine recorded.
        data: &'a [u8],
    },
}

/// What a replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Tenants seen.
    pub tenants: usize,
    /// Snapshots handed over.
    pub snapshots: usize,
    /// Records handed over.
    pub records: usize,
    /// Records dropped by `recover_truncate`: (tenant, first dropped sequence number, why).
    pub truncated: Vec<(String, u64, String)>,
    /// Records appended after the replay to complete a firing of timers that a crash cut
    /// between two commits (see `StoreJournal::replay_into`): (tenant, first, last).
    pub completed: Vec<(String, u64, u64)>,
}

/// What is stored for one tenant (see [`Store::describe`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantSummary {
    /// The tenant.
    pub tenant: String,
    /// Its snapshots, oldest first: the sequence number each covers, and its bytes.
    pub snapshots: Vec<(u64, u64)>,
    /// The snapshot a restart begins with, if any (see [`Options::replay_from_delivered`]).
    pub base: Option<u64>,
    /// Rows of its journal (one per commit).
    pub journal_rows: u64,
    /// Records in those rows.
    pub records: u64,
    /// Bytes of those rows.
    pub record_bytes: u64,
    /// Its last sequence number on disk.
    pub last_seq: u64,
}

/// A durable store: a cheap-to-clone handle, safe to share between threads. The writer
/// stops (after writing what is queued) when the last handle is dropped; a PostgreSQL store
/// then gives up the leases it holds.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    /// How messages name the database.
    place: String,
    location: Location,
    options: Options,
    /// Whether records go into an intake first (then the writer lingers, and whoever waits
    /// for a commit says so).
    intake: bool,
    channel: Arc<Channel>,
    writer: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// Opens the writer's connection (again, after PostgreSQL dropped it: see `reconnect`).
    make: MakeConn,
    /// The process that opened the store: in a fork of it, the store refuses everything.
    birth: fork::Birth,
}

/// Opens a writer's connection, on the writer's thread.
type MakeConn = Arc<dyn Fn() -> Result<Box<dyn Conn>> + Send + Sync>;

/// Where the tables are.
// One per store, behind its `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Location {
    Sqlite {
        dir: PathBuf,
        db: PathBuf,
        /// Held (locked) for the life of the store.
        _lock: File,
        /// What the write-ahead log held past its last complete transaction at open.
        log_tail: LogTail,
        /// What the intake held past what the database held, at open.
        intake_tail: IntakeTail,
    },
    Postgres {
        config: PgConfig,
        /// The connection that takes and renews leases, on a thread of its own (replaced
        /// when PostgreSQL dropped it: see `reconnect`).
        leases: parking_lot::Mutex<Arc<Worker<LeaseConn>>>,
        held: Arc<Held>,
    },
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("place", &self.shared.place)
            .field("options", &self.shared.options)
            .finish()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // In a fork, the writer is not there to join (and a lock may have been held by a
        // thread of the parent when it forked): the parent closes the store, not the child.
        if self.birth.forked() {
            return;
        }
        self.channel.pending.lock().closing = true;
        self.channel.writer_wake.notify_one();
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
        // Everything queued is written: another node may take the buckets at once.
        if let Location::Postgres { leases, held, .. } = &self.location {
            let owned = held.owned();
            let _ = leases.lock().run(move |l| l.release(&owned));
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and starts its writer. Fails if another
    /// process has it open.
    pub fn open(dir: &Path, options: Options) -> Result<Self> {
        let lock = dir::open_locked(dir)?;
        let db = dir.join(DB_FILE);
        let place = db.display().to_string();
        // Before SQLite opens the log (and drops what it finds past the damage).
        let log = dir.join(format!("{DB_FILE}-wal"));
        let log_tail = wal::inspect(&log, &dir.join(format!("{DB_FILE}-shm")))
            .map_err(|source| Error::Io { path: log.clone(), source })?;
        let keep = match &log_tail {
            LogTail::Clean => None,
            LogTail::Torn { offset, .. } => Some(*offset),
            LogTail::Copied { .. } => Some(0),
            LogTail::Damaged { offset, detail, .. } if !options.recover_truncate => {
                return Err(Error::LogDamaged { path: log, offset: *offset, detail: detail.clone() });
            }
            LogTail::Damaged { kept, .. } => Some(*kept),
        };
        if let Some(len) = keep {
            wal::cut(&log, len).map_err(|source| Error::Io { path: log.clone(), source })?;
        }
        let recovered = intake::recover(dir, &db, options)?;
        let intake = match recovered.heads {
            Some(heads) => {
                let path = dir.join(intake::INTAKE_FILE);
                let bytes =
                    if options.intake_bytes == 0 { intake::DEFAULT_BYTES } else { options.intake_bytes };
                let ring =
                    intake::Intake::open(&path, bytes, recovered.next).map_err(|e| Error::io(&path, e))?;
                Some((ring, heads))
            }
            None => None,
        };
        let intake_tail = recovered.tail;
        let make: MakeConn = {
            let db = db.clone();
            Arc::new(move || Ok(Box::new(Sqlite::open_writer(&db, options.fsync)?) as Box<dyn Conn>))
        };
        let location = Location::Sqlite { dir: dir.to_path_buf(), db, _lock: lock, log_tail, intake_tail };
        Self::start(place, location, make, options, intake)
    }

    /// Opens the store in PostgreSQL (creating its schema and tables if needed) and starts
    /// its writer. It holds no lease yet: take buckets with [`Store::acquire`] before
    /// appending to their tenants.
    pub fn open_postgres(config: &PgConfig, options: Options) -> Result<Self> {
        let make: MakeConn = {
            let config = config.clone();
            Arc::new(move || Ok(Box::new(Postgres::open_writer(&config, options.fsync)?) as Box<dyn Conn>))
        };
        let leases = parking_lot::Mutex::new(Arc::new(reconnect::lease_worker(config)?));
        let location = Location::Postgres { config: config.clone(), leases, held: Arc::new(Held::default()) };
        Self::start(config.place(), location, make, options, None)
    }

    /// Starts the writer thread (see [`spawn_writer`]) and makes the store.
    fn start(
        place: String,
        location: Location,
        make: MakeConn,
        options: Options,
        intake: Option<(intake::Intake, Vec<(String, u64)>)>,
    ) -> Result<Self> {
        let channel = Arc::new(Channel::default());
        let has_intake = intake.is_some();
        {
            let mut pending = channel.pending.lock();
            pending.next_ticket = 1;
            if let Some((ring, heads)) = intake {
                channel.intake_committed.store(ring.next(), Ordering::Release);
                pending.intake = Some(ring);
                pending.last_seqs = heads.into_iter().map(|(tenant, seq)| (tenant.into(), seq)).collect();
            }
        }
        let held = match &location {
            Location::Postgres { held, .. } => Some(Arc::clone(held)),
            Location::Sqlite { .. } => None,
        };
        let writer = spawn_writer(&place, &channel, &make, options, held)?;
        Ok(Self {
            shared: Arc::new(Shared {
                place,
                location,
                options,
                intake: has_intake,
                channel,
                writer: parking_lot::Mutex::new(Some(writer)),
                make,
                birth: fork::Birth::now(),
            }),
        })
    }

    /// What SQLite's write-ahead log held past its last complete transaction when the store
    /// was opened, which SQLite then dropped: a transaction a crash cut ([`LogTail::Torn`],
    /// never acknowledged), or, with [`Options::recover_truncate`], transactions after damage
    /// ([`LogTail::Damaged`]). `None` in PostgreSQL. A service logs it.
    #[must_use]
    pub fn log_tail(&self) -> Option<&LogTail> {
        match &self.shared.location {
            Location::Sqlite { log_tail, .. } => Some(log_tail),
            Location::Postgres { .. } => None,
        }
    }

    /// What the intake (with [`Fsync::Periodic`]) held past what the database held when the
    /// store was opened, now committed: the records a crash left there, and a record it cut
    /// short, if any (never acknowledged). `None` in PostgreSQL. A service logs it.
    #[must_use]
    pub fn intake_tail(&self) -> Option<&IntakeTail> {
        match &self.shared.location {
            Location::Sqlite { intake_tail, .. } => Some(intake_tail),
            Location::Postgres { .. } => None,
        }
    }

    /// The data directory (`None` in PostgreSQL).
    #[must_use]
    pub fn dir(&self) -> Option<&Path> {
        match &self.shared.location {
            Location::Sqlite { dir, .. } => Some(dir),
            Location::Postgres { .. } => None,
        }
    }

    /// Queues record `seq` of `tenant`; it is durable once its ticket is. Records of a
    /// tenant must come in sequence order, each number once (a repeated number stops the
    /// store: it means two histories). In PostgreSQL the tenant's bucket must be held.
    pub fn append(&self, tenant: &str, seq: u64, data: &[u8]) -> Result<Ticket> {
        let seq = checked(seq)?;
        let sum = frame::checksum(tenant, seq, data);
        self.queue(tenant, Some((seq, frame::HEADER + data.len())), |records| {
            let start = records.len();
            frame::put(records, sum, data);
            Write::Record { seq, stored: start..records.len() }
        })
    }

    /// Queues the snapshot of `tenant` as of `seq` (after the records it covers); once it
    /// is durable, what the tenant's base covers is gone (the journal up to `seq`, unless
    /// [`Options::replay_from_delivered`] keeps it for events not yet delivered).
    pub fn snapshot(&self, tenant: &str, seq: u64, data: &[u8]) -> Result<Ticket> {
        let seq = checked(seq)?;
        self.push(tenant, Write::Snapshot { seq, stored: frame::encode(tenant, seq, data) })
    }

    /// Notes that every event of `tenant` up to number `seq` has been handled (delivered,
    /// or given up on): after a restart, only later ones are sent again. Kept with the next
    /// commit; never moves back.
    pub fn mark_delivered(&self, tenant: &str, seq: u64) -> Result<Ticket> {
        self.push(tenant, Write::Delivered { seq: checked(seq)? })
    }

    /// The marks of [`Store::mark_delivered`], per tenant.
    pub fn delivered(&self) -> Result<std::collections::HashMap<String, u64>> {
        self.reader()?.delivered()
    }

    /// The lease `tenant`'s writes go under (`None` in SQLite, which keeps none).
    fn claim(&self, tenant: &str) -> Result<Option<Claim>> {
        let Location::Postgres { config, held, .. } = &self.shared.location else { return Ok(None) };
        let bucket = bucket::bucket_of(tenant, config.buckets);
        match held.epoch(bucket) {
            Some(epoch) => Ok(Some(Claim { bucket, epoch })),
            None => Err(Error::NotOwner { bucket }),
        }
    }

    fn push(&self, tenant: &str, write: Write) -> Result<Ticket> {
        self.queue(tenant, None, |_| write)
    }

    /// Queues the operation `write` makes, given the batch's buffer of framed records (under
    /// the queue's lock: it may frame a record there). `record`: the number and stored
    /// length of the record it frames, if it is one (it then goes into the intake, if there
    /// is one).
    fn queue(
        &self,
        tenant: &str,
        record: Option<(u64, usize)>,
        write: impl FnOnce(&mut Vec<u8>) -> Write,
    ) -> Result<Ticket> {
        self.not_forked()?;
        let channel = &self.shared.channel;
        if channel.failed.load(Ordering::Acquire) {
            return Err(self.stopped());
        }
        let claim = self.claim(tenant)?;
        let mut p = channel.pending.lock();
        let held = match (record, p.intake.is_some()) {
            (Some((seq, len)), true) => {
                let (guard, held) = self.make_room(p, tenant, len)?;
                p = guard;
                // A record out of turn is not acknowledged from the intake (nor left there
                // for every start to trip on): the writer refuses it, which stops the store,
                // as without an intake.
                p.follows(tenant, seq) && held
            }
            _ => false,
        };
        let ticket = p.next_ticket;
        p.next_ticket += 1;
        let tenant = match &p.last_tenant {
            Some(last) if **last == *tenant => Arc::clone(last),
            _ => p.last_tenant.insert(tenant.into()).clone(),
        };
        let write = write(&mut p.records);
        let pending = &mut *p;
        let safe_at_once = match (&write, pending.intake.as_mut()) {
            (Write::Record { seq, stored }, Some(intake)) if held => {
                intake.put(&tenant, *seq, &pending.records[stored.clone()]);
                true
            }
            (Write::Record { .. }, Some(_)) => {
                pending.unheld = ticket;
                false
            }
            // Marks only spare webhooks being sent again after a restart: a crash before
            // their commit costs nothing promised.
            (Write::Delivered { .. }, Some(_)) => true,
            (Write::Truncate { seq }, Some(_)) => {
                // The tenant's numbers from `seq` on are given again.
                pending.set_last_seq(&tenant, seq.saturating_sub(1));
                false
            }
            _ => false,
        };
        let intake = pending.intake.is_some();
        pending.ops.push(Op { tenant, claim, write });
        let first = pending.ops.len() == 1;
        if safe_at_once {
            // Under the queue's lock, in ticket order; unless an earlier ticket is still
            // only queued (a snapshot, a record too large for the intake): then this one
            // waits for their commit.
            let _ = channel.safe.compare_exchange(ticket - 1, ticket, Ordering::AcqRel, Ordering::Acquire);
        }
        drop(p);
        if intake && !safe_at_once {
            channel.urge();
        } else if first {
            channel.writer_wake.notify_one();
        }
        Ok(Ticket(ticket))
    }

    /// With the queue's lock `p` held: waits until a record stored in `len` bytes can go
    /// into the intake; returns the lock and whether it goes there (`false`: too large for
    /// it, it waits for its commit instead).
    fn make_room<'a>(
        &'a self,
        mut p: parking_lot::MutexGuard<'a, writer::Pending>,
        tenant: &str,
        len: usize,
    ) -> Result<(parking_lot::MutexGuard<'a, writer::Pending>, bool)> {
        let channel = &self.shared.channel;
        loop {
            let Some(intake) = p.intake.as_ref() else { return Ok((p, false)) };
            // First: every commit moves it, after the intake position it covers (so that
            // what is read below is at least that commit's), and under the progress lock.
            let durable = channel.durable.load(Ordering::Acquire);
            let committed = channel.intake_committed.load(Ordering::Acquire);
            let fits = intake.fits(tenant, len as u64, committed);
            let unheld_done = p.unheld <= durable;
            match fits {
                None => return Ok((p, false)),
                Some(true) if unheld_done => return Ok((p, true)),
                Some(_) => {}
            }
            // Full, or behind a record that is not there: wait for the writer's next commit.
            drop(p);
            channel.urge();
            {
                let mut progress = channel.progress.lock();
                while channel.durable.load(Ordering::Acquire) == durable && progress.failed.is_none() {
                    channel.progress_changed.wait(&mut progress);
                }
            }
            if channel.failed.load(Ordering::Acquire) {
                return Err(self.stopped());
            }
            p = channel.pending.lock();
        }
    }

    fn stopped(&self) -> Error {
        let why = self.shared.channel.progress.lock().failed.clone();
        Error::Stopped(why.unwrap_or_else(|| "unknown".into()))
    }

    /// Whether `ticket` is durable (`Err` once the store has stopped before it was, or if
    /// its lease was lost before it was committed).
    fn check(&self, progress: &writer::Progress, ticket: Ticket) -> Option<Result<()>> {
        if let Some(why) = progress.dropped(ticket.0) {
            return Some(Err(Error::Stopped(why)));
        }
        if progress.durable >= ticket.0 || self.shared.channel.safe.load(Ordering::Acquire) >= ticket.0 {
            Some(match progress.refused.get(&ticket.0) {
                Some(claim) => Err(Error::LeaseLost { bucket: claim.bucket, epoch: claim.epoch }),
                None => Ok(()),
            })
        } else {
            progress.failed.as_ref().map(|why| Err(Error::Stopped(why.clone())))
        }
    }

    /// Blocks until `ticket` is durable.
    pub fn wait(&self, ticket: Ticket) -> Result<()> {
        self.wait_until(|p| self.check(p, ticket))
    }

    /// [`Error::Forked`] in a fork of the process that opened the store (checked before any
    /// of its locks is taken: a thread of the parent may have held one when it forked), by
    /// every append, wait, flush, read and lease call.
    fn not_forked(&self) -> Result<()> {
        if self.shared.birth.forked() {
            Err(Error::Forked { place: self.shared.place.clone() })
        } else {
            Ok(())
        }
    }

    /// Blocks until `done` says so, asking the writer once not to linger.
    fn wait_until(&self, done: impl Fn(&writer::Progress) -> Option<Result<()>>) -> Result<()> {
        self.not_forked()?;
        let channel = &self.shared.channel;
        let mut p = channel.progress.lock();
        let mut urged = false;
        loop {
            if let Some(done) = done(&p) {
                return done;
            }
            if !urged && self.shared.intake {
                urged = true;
                drop(p);
                channel.urge();
                p = channel.progress.lock();
                continue;
            }
            channel.progress_changed.wait(&mut p);
        }
    }

    /// `Ready` once `ticket` is durable (or the store has stopped); else the task of `cx` is
    /// woken when it is. Needs no particular async runtime.
    pub fn poll_durable(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Err(e) = self.not_forked() {
            return Poll::Ready(Err(e));
        }
        let channel = &self.shared.channel;
        {
            let mut p = channel.progress.lock();
            if let Some(done) = self.check(&p, ticket) {
                return Poll::Ready(done);
            }
            p.wakers.push((ticket.0, cx.waker().clone()));
        }
        // A writer that lingers for a larger batch would keep this waiting.
        if self.shared.intake {
            channel.urge();
        }
        Poll::Pending
    }

    /// Resolves once `ticket` is durable.
    pub fn durable(&self, ticket: Ticket) -> impl Future<Output = Result<()>> + '_ {
        std::future::poll_fn(move |cx| self.poll_durable(ticket, cx))
    }

    /// The ticket of the latest append (or snapshot): once it is durable, so is everything
    /// appended before this call, except (in PostgreSQL) what a lost lease refused: those
    /// tickets fail on their own (see [`Store::lost`]).
    #[must_use]
    pub fn last_ticket(&self) -> Ticket {
        Ticket(self.shared.channel.pending.lock().next_ticket.saturating_sub(1))
    }

    /// Waits until everything appended so far is committed to the database (with an
    /// intake, more than durable: what readers of the database see).
    pub fn flush(&self) -> Result<()> {
        self.not_forked()?;
        let ticket = self.last_ticket();
        self.wait_until(|p| {
            if p.durable >= ticket.0 {
                Some(self.check(p, ticket).unwrap_or(Ok(())))
            } else {
                p.failed.as_ref().map(|why| Err(Error::Stopped(why.clone())))
            }
        })
    }

    /// Whether the store has stopped after a failed write or sync (then every append and
    /// every wait fails).
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.shared.channel.failed.load(Ordering::Acquire)
    }

    /// Transactions committed so far (each may hold many records).
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.shared.channel.commits.load(Ordering::Relaxed)
    }

    /// How long the commits so far took, each the batch written and synced (with
    /// [`Fsync::Periodic`], written to the OS).
    #[must_use]
    pub fn commit_times(&self) -> CommitTimes {
        self.shared.channel.commit_times.read()
    }

    /// A connection that reads (in PostgreSQL, one consistent view while it lives).
    fn reader(&self) -> Result<Box<dyn Conn>> {
        // SQLite forbids carrying its state across a fork: a new connection in the child
        // would share the parent's per-file locks and log mapping.
        self.not_forked()?;
        Ok(match &self.shared.location {
            Location::Sqlite { db, .. } => Box::new(Sqlite::open_reader(db)?),
            Location::Postgres { config, .. } => {
                let config = config.clone();
                let make = move || Ok(Box::new(Postgres::open_reader(&config)?) as Box<dyn Conn>);
                Box::new(RemoteConn(Worker::start("waitline-store-reader", make)?))
            }
        })
    }

    /// What is stored, per tenant, without decoding it.
    pub fn describe(&self) -> Result<Vec<TenantSummary>> {
        let mut conn = self.reader()?;
        let mut out = Vec::new();
        for tenant in conn.tenants()? {
            let snapshots = conn.snapshot_sizes(&tenant)?;
            let journal = conn.journal_size(&tenant)?;
            let newest = snapshots.last().map_or(0, |s| s.0);
            out.push(TenantSummary {
                base: compact::base_snapshot(
                    conn.as_mut(),
                    &tenant,
                    self.shared.options.replay_from_delivered,
                )?,
                last_seq: journal.last.map_or(newest, |l| l.max(newest)),
                tenant,
                snapshots,
                journal_rows: journal.rows,
                records: journal.records,
                record_bytes: journal.bytes,
            });
        }
        Ok(out)
    }

    /// Each tenant's newest snapshot: the number it covers.
    pub fn newest_snapshots(&self) -> Result<std::collections::HashMap<String, u64>> {
        self.reader()?.newest_snapshots()
    }

    /// The number of buckets tenants are hashed into (1 in SQLite: the one process owns
    /// every tenant).
    #[must_use]
    pub fn buckets(&self) -> u32 {
        match &self.shared.location {
            Location::Postgres { config, .. } => config.buckets,
            Location::Sqlite { .. } => 1,
        }
    }

    /// The bucket of `tenant` in this store (see [`bucket::bucket_of`]).
    #[must_use]
    pub fn bucket_of(&self, tenant: &str) -> u32 {
        bucket::bucket_of(tenant, self.buckets())
    }

    fn leases(&self) -> Result<(Arc<Worker<LeaseConn>>, &Held)> {
        // The lease connection's thread is not in a fork: a job sent there is never answered.
        self.not_forked()?;
        match &self.shared.location {
            Location::Postgres { leases, held, .. } => Ok((Arc::clone(&leases.lock()), held)),
            Location::Sqlite { .. } => Err(Error::NoLeases),
        }
    }

    /// Takes the lease of each of `buckets` that is free or has expired (by the database's
    /// clock), each at an epoch one past its last; returns those taken, with their epochs.
    /// Buckets another node holds are left out. A bucket this store holds already is
    /// renewed instead (same epoch); one it believed it held but had lost is taken again
    /// at a new epoch if free. Replay a bucket's tenants ([`Store::replay_buckets`])
    /// after taking it and before serving them.
    pub fn acquire(&self, buckets: &[u32]) -> Result<Vec<(u32, u64)>> {
        let (leases, held) = self.leases()?;
        let (mine, others): (Vec<u32>, Vec<u32>) = buckets.iter().partition(|b| held.epoch(**b).is_some());
        let ask = mine.clone();
        // Ours first: a lease of ours found lost (another node had it meanwhile) is then
        // taken again like any other, if it is free.
        let (mut got, renewed) = leases.run(move |l| {
            let renewed = l.renew(&ask)?;
            let mut free = others;
            free.extend(ask.iter().filter(|b| !renewed.iter().any(|r| r.0 == **b)));
            Ok((l.acquire(&free)?, renewed))
        })?;
        for &bucket in &mine {
            if let Some(epoch) = held.epoch(bucket)
                && !renewed.contains(&(bucket, epoch))
            {
                held.lose(bucket, epoch);
            }
        }
        got.extend(renewed);
        got.sort_unstable();
        held.gained(&got);
        Ok(got)
    }

    /// [`Store::acquire`] of every bucket.
    pub fn acquire_all(&self) -> Result<Vec<(u32, u64)>> {
        self.acquire(&(0..self.buckets()).collect::<Vec<_>>())
    }

    /// Extends every lease this store holds; returns those found lost (taken over, or
    /// expired before the renewal), which it no longer writes. Call it well within the
    /// lease's length (a third of it, say).
    pub fn renew(&self) -> Result<Vec<(u32, u64)>> {
        self.renew_with_heartbeat(None)
    }

    /// [`Store::renew`], first writing this node's heartbeat with `url` when given (in the
    /// same turn of the lease connection).
    pub(crate) fn renew_with_heartbeat(&self, url: Option<String>) -> Result<Vec<(u32, u64)>> {
        let (leases, held) = self.leases()?;
        let owned = held.owned();
        let buckets: Vec<u32> = owned.iter().map(|o| o.0).collect();
        let renewed = leases.run(move |l| {
            if let Some(url) = &url {
                l.heartbeat(url)?;
            }
            l.renew(&buckets)
        })?;
        let lost: Vec<(u32, u64)> = owned.into_iter().filter(|o| !renewed.contains(o)).collect();
        for &(bucket, epoch) in &lost {
            held.lose(bucket, epoch);
        }
        Ok(lost)
    }

    /// Gives up `bucket`: later appends to its tenants are refused, what is queued is
    /// written, then its lease ends at once so that another node can take it.
    pub fn release(&self, bucket: u32) -> Result<()> {
        self.release_buckets(&[bucket])
    }

    /// [`Store::release`] of each of `buckets`, with one flush and one statement: a node
    /// giving up many buckets at once does not wait for a commit and a round trip each.
    pub fn release_buckets(&self, buckets: &[u32]) -> Result<()> {
        let (leases, held) = self.leases()?;
        let given_up: Vec<(u32, u64)> =
            buckets.iter().filter_map(|&bucket| held.give_up(bucket).map(|epoch| (bucket, epoch))).collect();
        if given_up.is_empty() {
            return Ok(());
        }
        // Whatever else failed is reported to its own waiters.
        let _ = self.flush();
        leases.run(move |l| l.release(&given_up))
    }

    /// Starts a thread that renews this store's leases every third of their length (by
    /// [`Store::renew`]; a failed renewal is tried again at the next turn, and a lease
    /// that lapses meanwhile is found lost by fencing) until the store is dropped.
    pub fn renew_in_background(&self) -> Result<()> {
        let Location::Postgres { config, .. } = &self.shared.location else { return Err(Error::NoLeases) };
        let every = config.lease / 3;
        let store = Arc::downgrade(&self.shared);
        std::thread::Builder::new()
            .name("waitline-leases".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let Some(shared) = store.upgrade() else { return };
                    let _ = Store { shared }.renew();
                }
            })
            .map_err(|e| Error::io(Path::new(&self.shared.place), e))?;
        Ok(())
    }

    /// The buckets this store holds, with their epochs (none in SQLite, which needs none).
    #[must_use]
    pub fn owned(&self) -> Vec<(u32, u64)> {
        self.leases().map(|(_, held)| held.owned()).unwrap_or_default()
    }

    /// The epoch this store holds `bucket` under now, if it holds it (none in SQLite).
    /// Epochs only grow: the same epoch before and after a request means the bucket was
    /// held throughout, neither given up nor lost and taken again meanwhile.
    #[must_use]
    pub fn held_epoch(&self, bucket: u32) -> Option<u64> {
        self.leases().ok().and_then(|(_, held)| held.epoch(bucket))
    }

    /// The losses of leases found since this was last asked (by a renewal or by fencing),
    /// each told once (a bucket taken again meanwhile too).
    pub(crate) fn untold_losses(&self) -> Vec<(u32, u64)> {
        self.leases().map(|(_, held)| held.untold_losses()).unwrap_or_default()
    }

    /// The buckets whose lease this store lost (found by [`Store::renew`] or by fencing)
    /// and has not taken again, with the epoch lost.
    #[must_use]
    pub fn lost(&self) -> Vec<(u32, u64)> {
        self.leases().map(|(_, held)| held.lost()).unwrap_or_default()
    }

    /// Holds the writer back (appends queue up) until [`Store::resume_writer`]: lets tests
    /// see one batch form.
    #[doc(hidden)]
    pub fn pause_writer(&self) {
        self.shared.channel.pending.lock().paused = true;
    }

    #[doc(hidden)]
    pub fn resume_writer(&self) {
        self.shared.channel.pending.lock().paused = false;
        self.shared.channel.writer_wake.notify_one();
    }
}

/// Starts a writer thread, which opens its connection with `make` (on that thread: see the
/// `worker` module) and then writes until the store closes or a write fails; returns once
/// the connection is open.
fn spawn_writer(
    place: &str,
    channel: &Arc<Channel>,
    make: &MakeConn,
    options: Options,
    held: Option<Arc<Held>>,
) -> Result<JoinHandle<()>> {
    let (opened, opened_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
    let writer = {
        let (channel, make) = (Arc::clone(channel), Arc::clone(make));
        std::thread::Builder::new()
            .name("waitline-store".into())
            .spawn(move || match make() {
                Ok(conn) => {
                    let _ = opened.send(Ok(()));
                    writer::run(&channel, conn, options, held.as_deref());
                }
                Err(e) => drop(opened.send(Err(e))),
            })
            .map_err(|e| Error::io(Path::new(place), e))?
    };
    let ready = opened_rx.recv().unwrap_or_else(|_| Err(Error::Stopped("the writer thread ended".into())));
    if let Err(e) = ready {
        let _ = writer.join();
        return Err(e);
    }
    Ok(writer)
}

fn checked(seq: u64) -> Result<u64> {
    if i64::try_from(seq).is_ok() { Ok(seq) } else { Err(Error::SeqRange(seq)) }
}
