//! The one thread that writes: it takes every operation waiting when it wakes, writes them
//! in one transaction (one sync for all: group commit), then tells the waiters. What it
//! checks is the same whatever the database: each tenant's records come in number order
//! (anything else is a second history), and, where leases are kept, every operation's
//! lease is still ours at its epoch (fencing, in the same transaction).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::backend::{Conn, NewRow};
use crate::compact::compact;
use crate::intake::Intake;
use crate::lease::Held;
use crate::{Error, Options};

/// With an intake, how long the writer lets a batch fill when nobody waits for it: at the
/// HTTP service's rates, a few hundred records a commit instead of a handful.
pub(crate) const LINGER: Duration = Duration::from_millis(5);

/// The lease an operation is written under: refused when it is no longer current.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Claim {
    pub(crate) bucket: u32,
    pub(crate) epoch: u64,
}

/// One write, in the order it was asked for.
#[derive(Debug)]
pub(crate) struct Op {
    /// Shared by consecutive operations of one tenant (see `Pending::last_tenant`).
    pub(crate) tenant: Arc<str>,
    /// `None` where there are no leases (SQLite).
    pub(crate) claim: Option<Claim>,
    pub(crate) write: Write,
}

/// What an operation writes.
#[derive(Debug)]
pub(crate) enum Write {
    /// A journal record, framed in its batch's buffer (`Pending::records`) at `stored`.
    Record { seq: u64, stored: std::ops::Range<usize> },
    /// The tenant's snapshot at `seq` (framed); what the tenant's base then covers is
    /// deleted (see `compact`).
    Snapshot { seq: u64, stored: Vec<u8> },
    /// Deletes the tenant's records from `seq` on (recovery from a bad record).
    Truncate { seq: u64 },
    /// Every event of the tenant up to `seq` was handled.
    Delivered { seq: u64 },
}

/// Operations not yet taken by the writer.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) ops: Vec<Op>,
    /// The framed records of `ops`, one after another: no allocation per record (nor a free
    /// of it on the writer's thread).
    pub(crate) records: Vec<u8>,
    /// The tenant of the last operation queued, shared by the next one if it is the same.
    pub(crate) last_tenant: Option<Arc<str>>,
    /// The ticket the next operation gets (tickets start at 1).
    pub(crate) next_ticket: u64,
    /// With [`crate::Fsync::Periodic`] in a data directory: where records land first (see
    /// the `intake` module).
    pub(crate) intake: Option<Intake>,
    /// The ticket of the latest record queued without a place in the intake (0: none):
    /// later records go there only once it is committed, so that the intake past the
    /// committed point never misses a record.
    pub(crate) unheld: u64,
    /// With an intake: each tenant's last record number queued (or stored, read at open):
    /// a record goes into the intake only if it follows.
    pub(crate) last_seqs: HashMap<Box<str>, u64, foldhash::fast::RandomState>,
    /// The store is closing: write what is pending, then stop.
    pub(crate) closing: bool,
    /// Tests hold the writer back to see a batch form.
    pub(crate) paused: bool,
}

impl Pending {
    /// Whether record `seq` of `tenant` follows its last one (0: none yet); if so, it is
    /// the last one now. One lookup: this is on every append.
    pub(crate) fn follows(&mut self, tenant: &str, seq: u64) -> bool {
        match self.last_seqs.get_mut(tenant) {
            Some(last) if *last + 1 == seq => *last = seq,
            Some(_) => return false,
            None if seq == 1 => drop(self.last_seqs.insert(tenant.into(), seq)),
            None => return false,
        }
        true
    }

    /// Sets the last record number of `tenant`.
    pub(crate) fn set_last_seq(&mut self, tenant: &str, seq: u64) {
        match self.last_seqs.get_mut(tenant) {
            Some(last) => *last = seq,
            None => drop(self.last_seqs.insert(tenant.into(), seq)),
        }
    }
}

/// What the writer has made durable.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Every ticket up to this one is durable, or refused.
    pub(crate) durable: u64,
    /// Tickets refused because their lease was lost: the lease they were written under.
    /// Only what was in flight when a lease was lost (later appends of the bucket are
    /// refused before they get a ticket).
    pub(crate) refused: HashMap<u64, Claim>,
    /// Why the store stopped writing, once it has.
    pub(crate) failed: Option<Arc<str>>,
    /// Tickets `first..=last` dropped by a reconnect (not known to be written), with why
    /// the store had stopped: they fail, although `durable` passed them.
    pub(crate) dropped: Vec<(u64, u64, Arc<str>)>,
    /// Tasks waiting for a ticket.
    pub(crate) wakers: Vec<(u64, Waker)>,
}

impl Progress {
    /// Why `ticket` failed, if a reconnect dropped it.
    pub(crate) fn dropped(&self, ticket: u64) -> Option<Arc<str>> {
        self.dropped.iter().find(|(first, last, _)| (*first..=*last).contains(&ticket)).map(|d| d.2.clone())
    }
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
    /// Set with `failed` when the write failed because PostgreSQL dropped the connection (or
    /// could not be reached): the store may be reconnected (see `reconnect`).
    pub(crate) reconnectable: AtomicBool,
    /// Every ticket up to this one is durable, or refused (`Progress::durable`, read
    /// without its lock).
    pub(crate) durable: AtomicU64,
    /// Every ticket up to this one is durable or, with an intake, in the intake (what
    /// [`crate::Fsync::Periodic`] promises: it survives the process). Never behind `durable`.
    pub(crate) safe: AtomicU64,
    /// How far into the intake the writer has committed.
    pub(crate) intake_committed: AtomicU64,
    /// With an intake, the writer lets a batch fill for [`LINGER`] unless this is set:
    /// someone waits for a commit.
    pub(crate) urgent: AtomicBool,
    /// Transactions committed.
    pub(crate) commits: AtomicU64,
    /// How long each commit took.
    pub(crate) commit_times: crate::timing::CommitTimer,
}

impl Channel {
    /// Stops the store (for good unless `reconnectable`): every waiter and every later
    /// append gets `why`.
    fn fail(&self, why: String, reconnectable: bool) {
        let wakers = {
            let mut p = self.progress.lock();
            p.failed.get_or_insert_with(|| why.into());
            self.reconnectable.store(reconnectable, Ordering::Release);
            self.failed.store(true, Ordering::Release);
            std::mem::take(&mut p.wakers)
        };
        self.progress_changed.notify_all();
        wakers.into_iter().for_each(|(_, w)| w.wake());
    }

    /// Before a new writer starts: what was queued or being committed when the store
    /// stopped is dropped, its tickets failing with the reason it stopped (each may or may
    /// not have been committed). The store stays stopped (see [`Channel::resume`]).
    pub(crate) fn drop_queued(&self) {
        let mut pending = self.pending.lock();
        pending.ops.clear();
        pending.records.clear();
        pending.last_tenant = None;
        let upto = pending.next_ticket.saturating_sub(1);
        let mut p = self.progress.lock();
        let first = p.durable + 1;
        if first <= upto {
            let why = p.failed.clone().unwrap_or_else(|| "unknown".into());
            p.dropped.push((first, upto, why));
        }
        p.durable = p.durable.max(upto);
        self.durable.store(p.durable, Ordering::Release);
        self.safe.fetch_max(p.durable, Ordering::AcqRel);
    }

    /// Asks the writer to commit what is queued now, without lingering: someone waits.
    pub(crate) fn urge(&self) {
        self.urgent.store(true, Ordering::Release);
        // Through the queue's lock: the writer either has not checked the flag yet or is
        // already waiting, and hears this.
        drop(self.pending.lock());
        self.writer_wake.notify_one();
    }

    /// Once a new writer runs: appends are taken again.
    pub(crate) fn resume(&self) {
        self.progress.lock().failed = None;
        // In this order: a reader never sees the store stopped and not reconnectable.
        self.failed.store(false, Ordering::Release);
        self.reconnectable.store(false, Ordering::Release);
    }

    /// Notes tickets refused by fencing (before `advance` passes them).
    fn refuse(&self, refused: &[(u64, Claim)]) {
        self.progress.lock().refused.extend(refused.iter().copied());
    }

    fn advance(&self, upto: u64) {
        let ready = {
            let mut p = self.progress.lock();
            p.durable = p.durable.max(upto);
            self.durable.store(p.durable, Ordering::Release);
            self.safe.fetch_max(p.durable, Ordering::AcqRel);
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

/// Runs until the store closes (after writing what is pending) or a write fails. `held`:
/// the leases of a store that keeps them, told of every lease fencing finds lost. Syncs
/// that [`crate::Fsync::Periodic`] owes are not made here (SQLite's checkpointer makes them,
/// PostgreSQL's own WAL writer flushes), nor are checkpoints: a batch never waits for them.
pub(crate) fn run(channel: &Channel, mut conn: Box<dyn Conn>, options: Options, held: Option<&Held>) {
    let mut heads = Heads::default();
    // The batch's buffer goes back to the queue once written, so that appends do not grow
    // a new one each time.
    let mut records = Vec::new();
    loop {
        let (ops, upto, closing, intake_end) = {
            let mut p = channel.pending.lock();
            loop {
                if p.closing {
                    break;
                }
                if p.ops.is_empty() || p.paused {
                    channel.writer_wake.wait(&mut p);
                    continue;
                }
                // Everything queued is already safe in the intake unless someone waits: a
                // larger batch costs each record less.
                if p.intake.is_none() || channel.urgent.swap(false, Ordering::AcqRel) {
                    break;
                }
                if channel.writer_wake.wait_for(&mut p, LINGER).timed_out() {
                    break;
                }
            }
            records.clear();
            std::mem::swap(&mut records, &mut p.records);
            let intake_end = p.intake.as_ref().map(Intake::next);
            (std::mem::take(&mut p.ops), p.next_ticket.saturating_sub(1), p.closing, intake_end)
        };
        if !ops.is_empty() {
            let started = Instant::now();
            let first = upto + 1 - ops.len() as u64;
            let tickets = (first..=upto).collect();
            let batch = Batch { ops, records: &records, intake_end };
            if let Err(e) = write_fenced(channel, conn.as_mut(), &mut heads, batch, tickets, options, held) {
                channel.fail(format!("writing the journal failed: {e}"), e.is_disconnect());
                return;
            }
            channel.commit_times.observe(started.elapsed());
            if let Some(end) = intake_end {
                channel.intake_committed.store(end, Ordering::Release);
            }
            channel.commits.fetch_add(1, Ordering::Release);
            channel.advance(upto);
        }
        if closing && channel.pending.lock().ops.is_empty() {
            return;
        }
    }
}

/// Operations taken together, and the buffer their records are framed in.
pub(crate) struct Batch<'a> {
    pub(crate) ops: Vec<Op>,
    pub(crate) records: &'a [u8],
    /// With an intake: its position when the batch was taken, stored with it (every frame
    /// before it is a record of this batch or of an earlier one).
    pub(crate) intake_end: Option<u64>,
}

impl Batch<'_> {
    /// The stored form of a record of this batch.
    fn stored(&self, range: &std::ops::Range<usize>) -> &[u8] {
        // Ranges are handed out by `Store::push` within the buffer taken with them.
        self.records.get(range.clone()).unwrap_or_default()
    }
}

/// Writes `batch` (whose tickets are `tickets`); when fencing finds leases lost, refuses
/// the operations written under them and writes the others again, in a new transaction.
fn write_fenced(
    channel: &Channel,
    conn: &mut dyn Conn,
    heads: &mut Heads,
    mut batch: Batch<'_>,
    mut tickets: Vec<u64>,
    options: Options,
    held: Option<&Held>,
) -> Result<(), Error> {
    let mut conflicts = 0;
    loop {
        let lost = match write_batch(conn, heads, &batch, options.replay_from_delivered) {
            Ok(()) => return Ok(()),
            Err(Failure::Conflict(_)) if conflicts < CONFLICT_RETRIES => {
                conflicts += 1;
                continue;
            }
            Err(Failure::Conflict(e) | Failure::Error(e)) => return Err(e),
            Err(Failure::Fenced(lost)) => lost,
        };
        let mut refused = Vec::new();
        let (mut kept_ops, mut kept_tickets) = (Vec::new(), Vec::new());
        for (op, ticket) in std::mem::take(&mut batch.ops).into_iter().zip(tickets) {
            match op.claim {
                Some(claim) if lost.contains(&claim) => refused.push((ticket, claim)),
                _ => {
                    kept_ops.push(op);
                    kept_tickets.push(ticket);
                }
            }
        }
        if let Some(held) = held {
            for claim in &lost {
                held.lose(claim.bucket, claim.epoch);
            }
        }
        channel.refuse(&refused);
        if kept_ops.is_empty() {
            return Ok(());
        }
        (batch.ops, tickets) = (kept_ops, kept_tickets);
    }
}

/// The last record number of each tenant the writer has written, and the epoch it was read
/// or written under, read from the database the first time a tenant is seen under an
/// epoch (another node may have written it between two leases of ours): every record must
/// be the next number (anything else is a second history, and stops the store).
#[derive(Debug, Default)]
pub(crate) struct Heads(HashMap<Box<str>, (u64, u64)>);

impl Heads {
    fn get(&mut self, conn: &mut dyn Conn, tenant: &str, epoch: u64) -> Result<u64, Error> {
        if let Some(&(known, last)) = self.0.get(tenant)
            && known == epoch
        {
            return Ok(last);
        }
        let last = conn.head(tenant)?;
        self.0.insert(tenant.into(), (epoch, last));
        Ok(last)
    }

    fn set(&mut self, tenant: &str, epoch: u64, last: u64) {
        match self.0.get_mut(tenant) {
            Some(head) => *head = (epoch, last),
            None => drop(self.0.insert(tenant.into(), (epoch, last))),
        }
    }
}

/// Writes `batch` in one transaction, outside the writer's loop (a start's recovery).
pub(crate) fn write_alone(conn: &mut dyn Conn, batch: &Batch<'_>, from_delivered: bool) -> Result<(), Error> {
    match write_batch(conn, &mut Heads::default(), batch, from_delivered) {
        Ok(()) => Ok(()),
        Err(Failure::Conflict(e) | Failure::Error(e)) => Err(e),
        // Only operations written under a lease are fenced.
        Err(Failure::Fenced(lost)) => Err(Error::Stopped(format!("leases lost: {lost:?}").into())),
    }
}

/// Why a batch was not written.
#[derive(Debug)]
enum Failure {
    /// These leases are no longer ours: nothing of the batch was kept.
    Fenced(Vec<Claim>),
    /// The database rolled the transaction back before its commit to resolve a conflict
    /// with another session (a lock cycle with an operator's statement, say): nothing of
    /// it was kept.
    Conflict(Error),
    Error(Error),
}

/// How many times in a row a batch rolled back by a conflict is written again before the
/// store stops: a conflict that keeps coming back is not a passing one.
const CONFLICT_RETRIES: u32 = 3;

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Error(e)
    }
}

/// Writes `ops` in one transaction, each tenant's consecutive records as one row, after
/// checking that every lease they were written under is still current.
/// `from_delivered`: see [`Options::replay_from_delivered`].
fn write_batch(
    conn: &mut dyn Conn,
    heads: &mut Heads,
    batch: &Batch<'_>,
    from_delivered: bool,
) -> Result<(), Failure> {
    conn.begin()?;
    let result = write_in_transaction(conn, heads, batch, from_delivered);
    match result {
        Ok(()) => {
            if let Err(e) = conn.commit() {
                heads.0.clear();
                return Err(e.into());
            }
            for op in &batch.ops {
                if let Write::Record { seq, .. } = op.write {
                    heads.set(&op.tenant, op.claim.map_or(0, |c| c.epoch), seq);
                }
            }
            Ok(())
        }
        // The heads read inside the transaction may be stale.
        Err(e) => {
            conn.rollback();
            heads.0.clear();
            match e {
                Failure::Error(e) if e.is_rolled_back_conflict() => Err(Failure::Conflict(e)),
                e => Err(e),
            }
        }
    }
}

fn write_in_transaction(
    conn: &mut dyn Conn,
    heads: &mut Heads,
    batch: &Batch<'_>,
    from_delivered: bool,
) -> Result<(), Failure> {
    let ops = &batch.ops;
    let mut claims: Vec<(u32, u64)> =
        ops.iter().filter_map(|o| o.claim.map(|c| (c.bucket, c.epoch))).collect();
    claims.sort_unstable();
    claims.dedup();
    if !claims.is_empty() {
        let lost = conn.fence(&claims)?;
        if !lost.is_empty() {
            return Err(Failure::Fenced(
                lost.into_iter().map(|(bucket, epoch)| Claim { bucket, epoch }).collect(),
            ));
        }
    }
    let mut runs: Vec<NewRow<'_>> = Vec::new();
    for op in ops {
        let tenant = &*op.tenant;
        let epoch = op.claim.map_or(0, |c| c.epoch);
        let run_of = |runs: &[NewRow<'_>]| runs.iter().position(|r| r.tenant == tenant);
        match &op.write {
            Write::Record { seq, stored } => {
                let stored = batch.stored(stored);
                let last = match run_of(&runs) {
                    Some(i) => runs[i].last,
                    None => heads.get(conn, tenant, epoch)?,
                };
                if *seq != last + 1 {
                    return Err(Error::SecondHistory { tenant: tenant.to_owned(), seq: *seq, last }.into());
                }
                match run_of(&runs) {
                    Some(i) => {
                        runs[i].last = *seq;
                        runs[i].records.extend_from_slice(stored);
                    }
                    None => {
                        runs.push(NewRow { tenant, first: *seq, last: *seq, epoch, records: stored.to_vec() })
                    }
                }
            }
            Write::Snapshot { seq, stored } => {
                if let Some(i) = run_of(&runs) {
                    let run = runs.swap_remove(i);
                    // Later records of this batch follow this run, no longer in `runs` (a
                    // failed batch clears the heads).
                    heads.set(tenant, epoch, run.last);
                    conn.insert_rows(&[run])?;
                }
                conn.put_snapshot(tenant, *seq, stored)?;
                compact(conn, tenant, from_delivered)?;
            }
            Write::Delivered { seq } => {
                conn.put_delivered(tenant, *seq)?;
                if from_delivered {
                    // The mark may have passed a snapshot, which becomes the base. (Rows
                    // not yet written hold only records after every snapshot written.)
                    compact(conn, tenant, from_delivered)?;
                }
            }
            Write::Truncate { seq } => {
                if let Some(i) = run_of(&runs) {
                    conn.insert_rows(&[runs.swap_remove(i)])?;
                }
                truncate(conn, tenant, *seq)?;
                heads.set(tenant, epoch, seq.saturating_sub(1));
            }
        }
    }
    if !runs.is_empty() {
        conn.insert_rows(&runs)?;
    }
    if let Some(end) = batch.intake_end {
        conn.put_intake(end)?;
    }
    Ok(())
}

/// Deletes a tenant's records from `from` on (whole rows after it, and the tail of the row
/// that holds it), with the snapshots of that history and its delivery mark past the cut:
/// the tenant's numbers from `from` on are given again to a new history.
fn truncate(conn: &mut dyn Conn, tenant: &str, from: u64) -> Result<(), Error> {
    conn.forget_from(tenant, from)?;
    if let Some(row) = conn.row_holding(tenant, from)? {
        let mut keep = 0;
        for item in crate::frame::decode_run(tenant, row.first, &row.records) {
            match item {
                Ok((seq, payload)) if seq < from => keep += crate::frame::HEADER + payload.len(),
                _ => break,
            }
        }
        conn.cut_row(tenant, row.first, from - 1, &row.records[..keep])?;
    }
    Ok(())
}
