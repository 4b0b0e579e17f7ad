//! Durable storage for waitline: each tenant's journal of state changes, numbered by the
//! tenant's sequence, and its latest snapshot, kept in SQLite (write-ahead log, one writer
//! thread, group commit).
//!
//! The store knows nothing of calls and queues: records and snapshots are bytes that the
//! engine makes and replays, so the engine stays the only implementation of the rules. The
//! same two tables (`journal`, a row per commit and tenant keyed by the tenant and its first
//! sequence number; `snapshots` by tenant) are what a PostgreSQL store keeps for several
//! nodes.
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

mod compact;
mod dir;
pub mod engine;
mod frame;
mod timing;
mod writer;

pub use crate::timing::{COMMIT_BUCKETS_MICROS, CommitTimes};

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::writer::{Channel, Op, sql_seq};

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "journal.sqlite3";

/// Version of the tables this code reads and writes.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
    tenant TEXT NOT NULL,
    seq INTEGER NOT NULL,
    last INTEGER NOT NULL,
    records BLOB NOT NULL,
    PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    tenant TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delivered (tenant TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
";

/// When an appended record counts as durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fsync {
    /// After its transaction is synced to the disk (`synchronous=FULL`): survives a power
    /// loss. The default.
    #[default]
    Always,
    /// After its transaction is written to the operating system; the log is synced at least
    /// once a second. Survives a crash or a `kill -9` of the process, but a power loss or a
    /// kernel crash can lose up to the last second (like Redis's `appendfsync everysec`).
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
    /// A stored record or snapshot is damaged, or a record is missing.
    #[error(
        "{}: the {what} of tenant {tenant:?} at sequence number {seq} is damaged: {detail} (start with --recover-truncate to drop it and what follows)",
        file.display()
    )]
    Corrupt {
        /// The database file.
        file: PathBuf,
        /// `record` or `snapshot`.
        what: &'static str,
        /// The tenant whose data it is.
        tenant: String,
        /// Its sequence number.
        seq: u64,
        /// What is wrong.
        detail: String,
    },
    /// The data directory was written by a newer waitline.
    #[error("{}: tables of version {found}, this waitline reads version {SCHEMA_VERSION}", file.display())]
    Schema {
        /// The database file.
        file: PathBuf,
        /// The version found.
        found: i64,
    },
    /// A sequence number SQLite cannot hold (above 2^63 - 1).
    #[error("sequence number {0} is out of range")]
    SeqRange(u64),
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
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
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
/// stops (after writing what is queued) when the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    db: PathBuf,
    options: Options,
    channel: Arc<Channel>,
    writer: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// Held (locked) for the life of the store.
    _lock: File,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("dir", &self.shared.dir).field("options", &self.shared.options).finish()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.channel.pending.lock().closing = true;
        self.channel.writer_wake.notify_one();
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and starts its writer. Fails if another
    /// process has it open.
    pub fn open(dir: &Path, options: Options) -> Result<Self> {
        let lock = dir::open_locked(dir)?;
        let db = dir.join(DB_FILE);
        let sql = |source| Error::Sqlite { path: db.clone(), source };
        let conn = Connection::open(&db).map_err(sql)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(sql)?;
        debug_assert_eq!(mode, "wal");
        let synchronous = match options.fsync {
            Fsync::Always => "FULL",
            Fsync::Periodic => "NORMAL",
        };
        conn.execute_batch(&format!("PRAGMA synchronous = {synchronous};")).map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        let found: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        match found {
            None => {
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?1)", params![SCHEMA_VERSION])
                    .map_err(sql)?;
            }
            Some(SCHEMA_VERSION) => {}
            // Version 2 kept one snapshot per tenant (and wrote none): the same rows, keyed
            // by tenant and number.
            Some(2) => conn
                .execute_batch(
                    "BEGIN IMMEDIATE;
                     ALTER TABLE snapshots RENAME TO snapshots_v2;
                     CREATE TABLE snapshots (tenant TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
                         PRIMARY KEY (tenant, seq)) WITHOUT ROWID;
                     INSERT INTO snapshots SELECT tenant, seq, data FROM snapshots_v2;
                     DROP TABLE snapshots_v2;
                     UPDATE meta SET value = 3 WHERE key = 'schema';
                     COMMIT;",
                )
                .map_err(sql)?,
            Some(found) => return Err(Error::Schema { file: db, found }),
        }
        let channel = Arc::new(Channel::default());
        channel.pending.lock().next_ticket = 1;
        let writer = {
            let channel = Arc::clone(&channel);
            std::thread::Builder::new()
                .name("waitline-store".into())
                .spawn(move || writer::run(&channel, conn, options))
                .map_err(|e| Error::io(dir, e))?
        };
        Ok(Self {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                db,
                options,
                channel,
                writer: parking_lot::Mutex::new(Some(writer)),
                _lock: lock,
            }),
        })
    }

    /// The data directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Queues record `seq` of `tenant`; it is durable once its ticket is. Records of a
    /// tenant must come in sequence order, each number once (a repeated number stops the
    /// store: it means two histories).
    pub fn append(&self, tenant: &str, seq: u64, data: &[u8]) -> Result<Ticket> {
        self.push(Op::Record {
            tenant: tenant.into(),
            seq: checked(seq)?,
            stored: frame::encode(tenant, seq, data),
        })
    }

    /// Queues the snapshot of `tenant` as of `seq` (after the records it covers); once it
    /// is durable, what the tenant's base covers is gone (the journal up to `seq`, unless
    /// [`Options::replay_from_delivered`] keeps it for events not yet delivered).
    pub fn snapshot(&self, tenant: &str, seq: u64, data: &[u8]) -> Result<Ticket> {
        self.push(Op::Snapshot {
            tenant: tenant.into(),
            seq: checked(seq)?,
            stored: frame::encode(tenant, seq, data),
        })
    }

    /// Notes that every event of `tenant` up to number `seq` has been handled (delivered,
    /// or given up on): after a restart, only later ones are sent again. Kept with the next
    /// commit; never moves back.
    pub fn mark_delivered(&self, tenant: &str, seq: u64) -> Result<Ticket> {
        self.push(Op::Delivered { tenant: tenant.into(), seq: checked(seq)? })
    }

    /// The marks of [`Store::mark_delivered`], per tenant.
    pub fn delivered(&self) -> Result<std::collections::HashMap<String, u64>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare("SELECT tenant, seq FROM delivered").map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, stored_seq(r.get(1)?))))
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sql(e))
    }

    fn push(&self, op: Op) -> Result<Ticket> {
        let channel = &self.shared.channel;
        if channel.failed.load(Ordering::Acquire) {
            return Err(self.stopped());
        }
        let (ticket, was_empty) = {
            let mut p = channel.pending.lock();
            let ticket = p.next_ticket;
            p.next_ticket += 1;
            p.ops.push(op);
            (ticket, p.ops.len() == 1)
        };
        if was_empty {
            channel.writer_wake.notify_one();
        }
        Ok(Ticket(ticket))
    }

    fn stopped(&self) -> Error {
        let why = self.shared.channel.progress.lock().failed.clone();
        Error::Stopped(why.unwrap_or_else(|| "unknown".into()))
    }

    /// Whether `ticket` is durable (`Err` once the store has stopped before it was).
    fn check(&self, progress: &writer::Progress, ticket: Ticket) -> Option<Result<()>> {
        if progress.durable >= ticket.0 {
            Some(Ok(()))
        } else {
            progress.failed.as_ref().map(|why| Err(Error::Stopped(why.clone())))
        }
    }

    /// Blocks until `ticket` is durable.
    pub fn wait(&self, ticket: Ticket) -> Result<()> {
        let channel = &self.shared.channel;
        let mut p = channel.progress.lock();
        loop {
            if let Some(done) = self.check(&p, ticket) {
                return done;
            }
            channel.progress_changed.wait(&mut p);
        }
    }

    /// `Ready` once `ticket` is durable (or the store has stopped); else the task of `cx` is
    /// woken when it is. Needs no particular async runtime.
    pub fn poll_durable(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut p = self.shared.channel.progress.lock();
        if let Some(done) = self.check(&p, ticket) {
            return Poll::Ready(done);
        }
        p.wakers.push((ticket.0, cx.waker().clone()));
        Poll::Pending
    }

    /// Resolves once `ticket` is durable.
    pub fn durable(&self, ticket: Ticket) -> impl Future<Output = Result<()>> + '_ {
        std::future::poll_fn(move |cx| self.poll_durable(ticket, cx))
    }

    /// The ticket of the latest append (or snapshot): once it is durable, so is everything
    /// appended before this call.
    #[must_use]
    pub fn last_ticket(&self) -> Ticket {
        Ticket(self.shared.channel.pending.lock().next_ticket.saturating_sub(1))
    }

    /// Waits until everything appended so far is durable.
    pub fn flush(&self) -> Result<()> {
        self.wait(self.last_ticket())
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

    fn reader(&self) -> Result<Connection> {
        Connection::open_with_flags(
            &self.shared.db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| self.sql(source))
    }

    fn sql(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite { path: self.shared.db.clone(), source }
    }

    /// Hands every tenant's snapshot and journal to `visit`, tenant by tenant (see
    /// [`Entry`] for the order). A damaged record, or a missing one, stops the replay with
    /// [`Error::Corrupt`]; with `recover_truncate` it and the tenant's later records are
    /// deleted instead (reported in [`Replayed::truncated`]) and the other tenants go on.
    /// A damaged snapshot always stops it. An `Err` from `visit` stops it too.
    pub fn replay(&self, mut visit: impl FnMut(Entry<'_>) -> Result<(), String>) -> Result<Replayed> {
        let conn = self.reader()?;
        let mut out = Replayed::default();
        let tenants = self.tenants(&conn)?;
        let mut snapshot = conn
            .prepare("SELECT seq, data FROM snapshots WHERE tenant = ?1 AND seq = ?2")
            .map_err(|e| self.sql(e))?;
        let mut rows = conn
            .prepare("SELECT seq, last, records FROM journal WHERE tenant = ?1 AND last > ?2 ORDER BY seq")
            .map_err(|e| self.sql(e))?;
        let refused = |tenant: &str, seq, detail| Error::Replay { tenant: tenant.into(), seq, detail };
        for tenant in &tenants {
            out.tenants += 1;
            let mut last = 0;
            let base = compact::base_snapshot(&conn, tenant, self.shared.options.replay_from_delivered)
                .map_err(|e| self.sql(e))?;
            let snap: Option<(i64, Vec<u8>)> = match base {
                Some(seq) => snapshot
                    .query_row(params![tenant, sql_seq(seq)], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(|e| self.sql(e))?,
                None => None,
            };
            if let Some((seq, stored)) = snap {
                let seq = stored_seq(seq);
                let data = match frame::decode_run(tenant, seq, &stored).next() {
                    Some(Ok((_, data))) => data,
                    Some(Err((_, why))) => return Err(self.corrupt("snapshot", tenant, seq, why)),
                    None => return Err(self.corrupt("snapshot", tenant, seq, "empty")),
                };
                visit(Entry::Snapshot { tenant, seq, data }).map_err(|d| refused(tenant, seq, d))?;
                out.snapshots += 1;
                last = seq;
            }
            let mut found = rows.query(params![tenant, sql_seq(last)]).map_err(|e| self.sql(e))?;
            let mut damage: Option<(u64, String)> = None;
            'rows: while let Some(row) = found.next().map_err(|e| self.sql(e))? {
                let first = stored_seq(row.get(0).map_err(|e| self.sql(e))?);
                let row_last = stored_seq(row.get(1).map_err(|e| self.sql(e))?);
                let stored: Vec<u8> = row.get(2).map_err(|e| self.sql(e))?;
                if first > last + 1 {
                    damage = Some((last + 1, format!("missing (the next record stored is number {first})")));
                    break;
                }
                for item in frame::decode_run(tenant, first, &stored) {
                    match item {
                        // Covered by the snapshot (a row can straddle it).
                        Ok((seq, _)) if seq <= last => {}
                        Ok((seq, data)) => {
                            visit(Entry::Record { tenant, seq, data })
                                .map_err(|d| refused(tenant, seq, d))?;
                            out.records += 1;
                            last = seq;
                        }
                        Err((seq, why)) => {
                            damage = Some((seq, why.to_owned()));
                            break 'rows;
                        }
                    }
                }
                if last < row_last {
                    damage = Some((last + 1, format!("missing (its row ends at {last}, not {row_last})")));
                    break;
                }
            }
            drop(found);
            if let Some((first_bad, detail)) = damage {
                if !self.shared.options.recover_truncate {
                    return Err(self.corrupt("record", tenant, first_bad, &detail));
                }
                out.truncated.push((tenant.clone(), first_bad, detail));
                let ticket = self.push(Op::Truncate { tenant: tenant.as_str().into(), seq: first_bad })?;
                self.wait(ticket)?;
            }
        }
        Ok(out)
    }

    fn corrupt(&self, what: &'static str, tenant: &str, seq: u64, detail: &str) -> Error {
        Error::Corrupt {
            file: self.shared.db.clone(),
            what,
            tenant: tenant.into(),
            seq,
            detail: detail.into(),
        }
    }

    fn tenants(&self, conn: &Connection) -> Result<Vec<String>> {
        let mut stmt = conn
            .prepare("SELECT tenant FROM snapshots UNION SELECT DISTINCT tenant FROM journal ORDER BY 1")
            .map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<Vec<String>>>().map_err(|e| self.sql(e))
    }

    /// What is stored, per tenant, without decoding it.
    pub fn describe(&self) -> Result<Vec<TenantSummary>> {
        let conn = self.reader()?;
        let mut out = Vec::new();
        let mut snapshots = conn
            .prepare("SELECT seq, length(data) FROM snapshots WHERE tenant = ?1 ORDER BY seq")
            .map_err(|e| self.sql(e))?;
        for tenant in self.tenants(&conn)? {
            let snapshots: Vec<(u64, u64)> = snapshots
                .query_map([&tenant], |r| Ok((stored_seq(r.get(0)?), stored_seq(r.get(1)?))))
                .and_then(Iterator::collect)
                .map_err(|e| self.sql(e))?;
            let (rows, records, record_bytes, last): (i64, i64, i64, Option<i64>) = conn
                .query_row(
                    "SELECT count(*), coalesce(sum(last - seq + 1), 0), coalesce(sum(length(records)), 0), max(last) \
                     FROM journal WHERE tenant = ?1",
                    params![&tenant],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .map_err(|e| self.sql(e))?;
            let newest = snapshots.last().map_or(0, |s| s.0);
            out.push(TenantSummary {
                base: compact::base_snapshot(&conn, &tenant, self.shared.options.replay_from_delivered)
                    .map_err(|e| self.sql(e))?,
                last_seq: last.map_or(newest, stored_seq).max(newest),
                tenant,
                snapshots,
                journal_rows: stored_seq(rows),
                records: stored_seq(records),
                record_bytes: stored_seq(record_bytes),
            });
        }
        Ok(out)
    }

    /// Each tenant's newest snapshot: the number it covers.
    pub fn newest_snapshots(&self) -> Result<std::collections::HashMap<String, u64>> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare("SELECT tenant, max(seq) FROM snapshots GROUP BY tenant")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, stored_seq(r.get(1)?))))
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.sql(e))
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

fn checked(seq: u64) -> Result<u64> {
    if i64::try_from(seq).is_ok() { Ok(seq) } else { Err(Error::SeqRange(seq)) }
}

fn stored_seq(seq: i64) -> u64 {
    seq.unsigned_abs()
}
