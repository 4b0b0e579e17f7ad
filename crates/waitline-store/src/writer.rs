//! The one thread that writes: it takes every operation waiting when it wakes, writes them
//! in one transaction (one sync for all: group commit), then tells the waiters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::Fsync;

/// With [`Fsync::Periodic`], the longest time between two syncs.
pub(crate) const PERIODIC_SYNC: Duration = Duration::from_secs(1);

/// One write, in the order it was asked for.
#[derive(Debug)]
pub(crate) enum Op {
    /// A journal record (already framed).
    Record { tenant: Box<str>, seq: u64, stored: Vec<u8> },
    /// A tenant's snapshot at `seq` (framed); the journal up to `seq` is deleted with it.
    Snapshot { tenant: Box<str>, seq: u64, stored: Vec<u8> },
    /// Deletes a tenant's records from `seq` on (recovery from a bad record).
    Truncate { tenant: Box<str>, seq: u64 },
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
pub(crate) fn run(channel: &Channel, mut conn: Connection, fsync: Fsync) {
    let mut last_sync = Instant::now();
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
            if let Err(e) = write_batch(&mut conn, &ops) {
                channel.fail(format!("writing the journal failed: {e}"));
                return;
            }
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

fn write_batch(conn: &mut Connection, ops: &[Op]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO journal (tenant, seq, record) VALUES (?1, ?2, ?3)")?;
        for op in ops {
            match op {
                Op::Record { tenant, seq, stored } => {
                    insert.execute(params![&**tenant, sql_seq(*seq), stored])?;
                }
                Op::Snapshot { tenant, seq, stored } => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO snapshots (tenant, seq, data) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![&**tenant, sql_seq(*seq), stored])?;
                    tx.prepare_cached("DELETE FROM journal WHERE tenant = ?1 AND seq <= ?2")?
                        .execute(params![&**tenant, sql_seq(*seq)])?;
                }
                Op::Truncate { tenant, seq } => {
                    tx.prepare_cached("DELETE FROM journal WHERE tenant = ?1 AND seq >= ?2")?
                        .execute(params![&**tenant, sql_seq(*seq)])?;
                }
            }
        }
    }
    tx.commit()
}

/// SQLite integers are signed 64-bit: sequence numbers above `i64::MAX` cannot be stored
/// (the store refuses them before they get here).
pub(crate) fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
