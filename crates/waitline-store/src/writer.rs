//! The one thread that writes: it takes every operation waiting when it wakes, writes them
//! in one transaction (one sync for all: group commit), then tells the waiters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::compact::compact;
use crate::{Fsync, Options};

/// With [`Fsync::Periodic`], the longest time between two syncs.
pub(crate) const PERIODIC_SYNC: Duration = Duration::from_secs(1);

/// One write, in the order it was asked for.
#[derive(Debug)]
pub(crate) enum Op {
    /// A journal record (already framed).
    Record { tenant: Box<str>, seq: u64, stored: Vec<u8> },
    /// A tenant's snapshot at `seq` (framed); what the tenant's base then covers is deleted
    /// (see `compact`).
    Snapshot { tenant: Box<str>, seq: u64, stored: Vec<u8> },
    /// Deletes a tenant's records from `seq` on (recovery from a bad record).
    Truncate { tenant: Box<str>, seq: u64 },
    /// Every event of the tenant up to `seq` was handled.
    Delivered { tenant: Box<str>, seq: u64 },
}

/// Operations not yet taken by the writer.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) ops: Vec<Op>,
    /// The ticket the next operation gets (tickets start at 1).
    pub(crate) next_ticket: u64,
    /// The store is closing: write what is pending, then stop.
    pub(crate) closing: bool,
    /// Tests hold the writer back to see a batch form.
    pub(crate) paused: bool,
}

/// What the writer has made durable.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Every ticket up to this one is durable.
    pub(crate) durable: u64,
    /// Why the store stopped writing, once it has.
    pub(crate) failed: Option<Arc<str>>,
    /// Tasks waiting for a ticket.
    pub(crate) wakers: Vec<(u64, Waker)>,
}

/// What the store's handles and its writer share.
#[derive(Debug, Default)]
pub(crate) struct Channel {
    pub(crate) pending: Mutex<Pending>,
    pub(crate) writer_wake: Condvar,
    pub(crate) progress: Mutex<Progress>,
    pub(crate) progress_changed: Condvar,
    /// Set with `Progress::failed`, read without its lock by every append.
    pub(crate) failed: AtomicBool,
    /// Transactions committed.
    pub(crate) commits: AtomicU64,
    /// How long each commit took.
    pub(crate) commit_times: crate::timing::CommitTimer,
}

impl Channel {
    /// Stops the store for good: every waiter and every later append gets `why`.
    fn fail(&self, why: String) {
        let wakers = {
            let mut p = self.progress.lock();
            p.failed.get_or_insert_with(|| why.into());
            self.failed.store(true, Ordering::Release);
            std::mem::take(&mut p.wakers)
        };
        self.progress_changed.notify_all();
        wakers.into_iter().for_each(|(_, w)| w.wake());
    }

    fn advance(&self, upto: u64) {
        let ready = {
            let mut p = self.progress.lock();
            p.durable = p.durable.max(upto);
            let (ready, waiting) = std::mem::take(&mut p.wakers).into_iter().partition(|(t, _)| *t <= upto);
            p.wakers = waiting;
            ready
        };
        self.progress_changed.notify_all();
        for (_, w) in ready {
            w.wake();
        }
    }
}

/// Runs until the store closes (after writing what is pending) or a write fails.
pub(crate) fn run(channel: &Channel, mut conn: Connection, options: Options) {
    let fsync = options.fsync;
    let mut last_sync = Instant::now();
    let mut heads = Heads::default();
    loop {
        let (ops, upto, closing) = {
            let mut p = channel.pending.lock();
            loop {
                if p.closing || (!p.ops.is_empty() && !p.paused) {
                    break;
                }
                match fsync {
                    Fsync::Always => channel.writer_wake.wait(&mut p),
                    Fsync::Periodic => {
                        let due = last_sync + PERIODIC_SYNC;
                        if channel.writer_wake.wait_until(&mut p, due).timed_out() {
                            break;
                        }
                    }
                }
            }
            (std::mem::take(&mut p.ops), p.next_ticket.saturating_sub(1), p.closing)
        };
        if !ops.is_empty() {
            let started = Instant::now();
            if let Err(e) = write_batch(&mut conn, &mut heads, &ops, options.replay_from_delivered) {
                channel.fail(format!("writing the journal failed: {e}"));
                return;
            }
            channel.commit_times.observe(started.elapsed());
            channel.commits.fetch_add(1, Ordering::Relaxed);
            channel.advance(upto);
        }
        if fsync == Fsync::Periodic && (closing || last_sync.elapsed() >= PERIODIC_SYNC) {
            // In WAL mode with synchronous=NORMAL a checkpoint is what syncs the log.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                channel.fail(format!("syncing the journal failed: {e}"));
                return;
            }
            last_sync = Instant::now();
        }
        if closing && channel.pending.lock().ops.is_empty() {
            return;
        }
    }
}

/// The last record number of each tenant the writer has written, read from the database
/// the first time a tenant is seen: every record must be the next number (anything else is a
/// second history, and stops the store).
#[derive(Debug, Default)]
pub(crate) struct Heads(std::collections::HashMap<Box<str>, u64>);

impl Heads {
    fn get(&mut self, tx: &rusqlite::Transaction<'_>, tenant: &str) -> rusqlite::Result<u64> {
        if let Some(&last) = self.0.get(tenant) {
            return Ok(last);
        }
        let last: i64 = tx.query_row(
            "SELECT max(coalesce((SELECT max(last) FROM journal WHERE tenant = ?1), 0), \
                        coalesce((SELECT max(seq) FROM snapshots WHERE tenant = ?1), 0))",
            params![tenant],
            |r| r.get(0),
        )?;
        let last = last.unsigned_abs();
        self.0.insert(tenant.into(), last);
        Ok(last)
    }
}

/// A run of one tenant's records with consecutive numbers, becoming one row.
struct Run<'a> {
    tenant: &'a str,
    first: u64,
    last: u64,
    stored: Vec<u8>,
}

/// Why a batch could not be written.
#[derive(Debug)]
pub(crate) enum WriteError {
    Sqlite(rusqlite::Error),
    /// A record that is not its tenant's next number.
    OutOfOrder {
        tenant: String,
        seq: u64,
        last: u64,
    },
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(e) => write!(f, "{e}"),
            Self::OutOfOrder { tenant, seq, last } => {
                write!(f, "record {seq} of tenant {tenant:?} does not follow {last}: two histories")
            }
        }
    }
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

/// Writes `ops` in one transaction: each tenant's consecutive records as one row.
/// `from_delivered`: see [`Options::replay_from_delivered`].
pub(crate) fn write_batch(
    conn: &mut Connection,
    heads: &mut Heads,
    ops: &[Op],
    from_delivered: bool,
) -> Result<(), WriteError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut runs: Vec<Run<'_>> = Vec::new();
    let flush = |tx: &rusqlite::Transaction<'_>, run: Run<'_>| -> rusqlite::Result<()> {
        tx.prepare_cached("INSERT INTO journal (tenant, seq, last, records) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![run.tenant, sql_seq(run.first), sql_seq(run.last), run.stored])?;
        Ok(())
    };
    let result = (|| -> Result<(), WriteError> {
        for op in ops {
            match op {
                Op::Record { tenant, seq, stored } => {
                    let last = match runs.iter().find(|r| r.tenant == &**tenant) {
                        Some(run) => run.last,
                        None => heads.get(&tx, tenant)?,
                    };
                    if *seq != last + 1 {
                        return Err(WriteError::OutOfOrder { tenant: tenant.to_string(), seq: *seq, last });
                    }
                    match runs.iter_mut().find(|r| r.tenant == &**tenant) {
                        Some(run) => {
                            run.last = *seq;
                            run.stored.extend_from_slice(stored);
                        }
                        None => runs.push(Run { tenant, first: *seq, last: *seq, stored: stored.clone() }),
                    }
                }
                Op::Snapshot { tenant, seq, stored } => {
                    if let Some(i) = runs.iter().position(|r| r.tenant == &**tenant) {
                        let run = runs.swap_remove(i);
                        // Later records of this batch follow this run, no longer in `runs`
                        // (a failed batch clears the heads).
                        heads.0.insert(tenant.clone(), run.last);
                        flush(&tx, run)?;
                    }
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO snapshots (tenant, seq, data) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![&**tenant, sql_seq(*seq), stored])?;
                    compact(&tx, tenant, from_delivered)?;
                }
                Op::Delivered { tenant, seq } => {
                    tx.prepare_cached(
                        "INSERT INTO delivered (tenant, seq) VALUES (?1, ?2) \
                         ON CONFLICT (tenant) DO UPDATE SET seq = max(seq, excluded.seq)",
                    )?
                    .execute(params![&**tenant, sql_seq(*seq)])?;
                    if from_delivered {
                        // The mark may have passed a snapshot, which becomes the base. (Rows
                        // not yet written hold only records after every snapshot written.)
                        compact(&tx, tenant, from_delivered)?;
                    }
                }
                Op::Truncate { tenant, seq } => {
                    if let Some(i) = runs.iter().position(|r| r.tenant == &**tenant) {
                        flush(&tx, runs.swap_remove(i))?;
                    }
                    truncate(&tx, tenant, *seq)?;
                    heads.0.insert(tenant.clone(), seq.saturating_sub(1));
                }
            }
        }
        for run in runs.drain(..) {
            flush(&tx, run)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            tx.commit()?;
            for op in ops {
                if let Op::Record { tenant, seq, .. } = op {
                    heads.0.insert(tenant.clone(), *seq);
                }
            }
            Ok(())
        }
        // The transaction rolls back when dropped; the heads read inside it may be stale.
        Err(e) => {
            heads.0.clear();
            Err(e)
        }
    }
}

/// Deletes a tenant's records from `from` on: whole rows after it, and the tail of the row
/// that holds it.
fn truncate(tx: &rusqlite::Transaction<'_>, tenant: &str, from: u64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM journal WHERE tenant = ?1 AND seq >= ?2")?
        .execute(params![tenant, sql_seq(from)])?;
    let straddling: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT seq, records FROM journal WHERE tenant = ?1 AND seq < ?2 AND last >= ?2",
            params![tenant, sql_seq(from)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((first, stored)) = straddling {
        let first = first.unsigned_abs();
        let mut keep = 0;
        for item in crate::frame::decode_run(tenant, first, &stored) {
            match item {
                Ok((seq, payload)) if seq < from => keep += crate::frame::HEADER + payload.len(),
                _ => break,
            }
        }
        tx.prepare_cached("UPDATE journal SET last = ?3, records = ?4 WHERE tenant = ?1 AND seq = ?2")?
            .execute(params![tenant, sql_seq(first), sql_seq(from - 1), &stored[..keep]])?;
    }
    Ok(())
}

/// SQLite integers are signed 64-bit: sequence numbers above `i64::MAX` cannot be stored
/// (the store refuses them before they get here).
pub(crate) fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
