//! The store as the engine's journal: `StoreJournal` appends each record the engine hands
//! over, takes each tenant's snapshot when enough records have piled up since its last one,
//! and `StoreJournal::replay_into` feeds what the store holds back into an engine (each
//! tenant's base snapshot, then its records after it, in order) through the same rules
//! (`Tenant::restore`, `Tenant::replay`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use waitline::journal::{Change, Record};
use waitline::{Engine, Journal, Tenant};

use crate::{Entry, Error, Replayed, Result, Store};

/// Records of a tenant between two snapshots, by default. A restart restores the snapshot
/// and replays at most this many records (about 0.5 s, at about 2 million records a second;
/// with the restore of a million waiting calls, about 0.6 s, it stays near 1 s of the 5 s
/// allowed), and the journal on disk stays below about 100 MB per tenant. A snapshot holds
/// its tenant's lock while it is made (about 0.15 s at a million waiting calls, see
/// BENCHMARKS.md): once per million changes, that pause costs a busy tenant under 1% of its
/// time, where every 100,000 changes it would cost several percent and show in its p99.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1_000_000;

/// Where a tenant is: its last number appended (or replayed), and the number its newest
/// snapshot covers.
#[derive(Clone, Copy, Debug, Default)]
struct Head {
    last: u64,
    snapshot: u64,
}

/// The engine's journal in a store (give it to `EngineBuilder::journal`). It also knows each
/// tenant's last number appended, and which tenants are due for a snapshot.
#[derive(Debug)]
pub struct StoreJournal {
    store: Store,
    /// Looked up on every append: foldhash, as the engine's own maps (SipHash was ~200
    /// instructions an append; tenant names come from the configuration, not from clients).
    heads: Mutex<HashMap<Box<str>, Head, foldhash::fast::RandomState>>,
    /// Records between snapshots of a tenant (0: never snapshot).
    snapshot_every: u64,
    /// Set when some tenant became due: checked cheaply after every write.
    due: AtomicBool,
}

impl StoreJournal {
    /// A journal appending to `store`, snapshotting each tenant every
    /// [`DEFAULT_SNAPSHOT_EVERY`] records.
    #[must_use]
    pub fn new(store: Store) -> Arc<Self> {
        Self::with_snapshot_every(store, DEFAULT_SNAPSHOT_EVERY)
    }

    /// A journal appending to `store`, snapshotting a tenant once `every` records have been
    /// appended since its last snapshot (0: never).
    #[must_use]
    pub fn with_snapshot_every(store: Store, every: u64) -> Arc<Self> {
        Arc::new(Self { store, heads: Mutex::default(), snapshot_every: every, due: AtomicBool::new(false) })
    }

    /// Each tenant's last number replayed or appended through this journal.
    #[must_use]
    pub fn heads(&self) -> HashMap<Box<str>, u64> {
        self.heads.lock().iter().map(|(t, h)| (t.clone(), h.last)).collect()
    }

    /// Whether some tenant is due for a snapshot (one atomic load).
    #[must_use]
    pub fn snapshots_due(&self) -> bool {
        self.due.load(Ordering::Relaxed)
    }

    /// Takes the snapshot of every tenant of `engine` due for one and hands each to the
    /// store, after the records it covers; returns how many it took. Each snapshot holds its
    /// tenant's lock while it is made (see `Tenant::snapshot`); call it from maintenance,
    /// not from a command.
    ///
    /// # Errors
    /// The store has stopped.
    pub fn take_due_snapshots(&self, engine: &Engine) -> Result<usize> {
        if self.snapshot_every == 0 || !self.due.swap(false, Ordering::AcqRel) {
            return Ok(0);
        }
        let due: Vec<Box<str>> = self
            .heads
            .lock()
            .iter()
            .filter(|(_, h)| h.last.saturating_sub(h.snapshot) >= self.snapshot_every)
            .map(|(t, _)| t.clone())
            .collect();
        for tenant in &due {
            // Every record up to `seq` was appended under the tenant's lock before this
            // snapshot took it: the store gets the snapshot after them.
            let (seq, data) = engine.tenant(tenant).snapshot();
            self.store.snapshot(tenant, seq, &data)?;
            if let Some(h) = self.heads.lock().get_mut(tenant) {
                h.snapshot = h.snapshot.max(seq);
            }
        }
        Ok(due.len())
    }
}

impl Journal for StoreJournal {
    fn append(&self, tenant: &str, seq: u64, record: &[u8]) {
        // A store that has stopped refuses; whoever waits for this record hears why.
        let _ = self.store.append(tenant, seq, record);
        let mut heads = self.heads.lock();
        let head = match heads.get_mut(tenant) {
            Some(head) => head,
            None => heads.entry(tenant.into()).or_default(),
        };
        head.last = seq;
        // Once, when the tenant crosses the bound (not a store on every append).
        if self.snapshot_every != 0 && seq.saturating_sub(head.snapshot) == self.snapshot_every {
            self.due.store(true, Ordering::Relaxed);
        }
    }
}

impl StoreJournal {
    /// Replays everything the store holds into `engine`: each tenant's base snapshot is
    /// restored, then each record after it goes to `apply` with its tenant's handle (which
    /// applies it with `Tenant::replay`, and may do more around it, like listening for the
    /// events it makes again). The journal's heads then start at what was replayed.
    ///
    /// # Errors
    /// What [`Store::replay`] refuses, a snapshot the engine refuses, or an `Err` from
    /// `apply`.
    pub fn replay_into(
        &self,
        engine: &Engine,
        apply: impl FnMut(&Tenant, u64, &[u8]) -> Result<(), String>,
    ) -> Result<Replayed> {
        self.replay_some_into(engine, None, apply)
    }

    /// [`StoreJournal::replay_into`] of the tenants of `buckets` only: a node loading the
    /// buckets it took. Their tenants must be empty in `engine` (see `Tenant::forget`); the
    /// journal forgets what it knew of them first.
    ///
    /// # Errors
    /// As [`StoreJournal::replay_into`].
    pub fn replay_buckets_into(
        &self,
        engine: &Engine,
        buckets: &[u32],
        apply: impl FnMut(&Tenant, u64, &[u8]) -> Result<(), String>,
    ) -> Result<Replayed> {
        self.replay_some_into(engine, Some(buckets), apply)
    }

    fn replay_some_into(
        &self,
        engine: &Engine,
        buckets: Option<&[u32]>,
        mut apply: impl FnMut(&Tenant, u64, &[u8]) -> Result<(), String>,
    ) -> Result<Replayed> {
        if let Some(buckets) = buckets {
            // What this journal knew of them is from an earlier holding: the store has the truth.
            self.heads.lock().retain(|tenant, _| !buckets.contains(&self.store.bucket_of(tenant)));
        }
        let newest = self.store.newest_snapshots()?;
        // Each tenant's last record replayed (the buffer reused), for `complete_timer_runs`.
        let mut last_records: HashMap<Box<str>, Vec<u8>, foldhash::fast::RandomState> = HashMap::default();
        let visit = |entry: Entry<'_>| match entry {
            Entry::Snapshot { tenant, seq, data } => {
                let restored = engine.tenant(tenant).restore(data).map_err(|e| e.to_string())?;
                if restored != seq {
                    return Err(format!("the snapshot stored as number {seq} holds the state at {restored}"));
                }
                self.heads.lock().insert(tenant.into(), Head { last: seq, snapshot: seq });
                last_records.remove(tenant);
                Ok(())
            }
            Entry::Record { tenant, seq, data } => {
                apply(&engine.tenant(tenant), seq, data)?;
                let mut heads = self.heads.lock();
                match heads.get_mut(tenant) {
                    Some(head) => head.last = seq,
                    None => drop(heads.insert(tenant.into(), Head { last: seq, snapshot: 0 })),
                }
                let last = match last_records.get_mut(tenant) {
                    Some(last) => last,
                    None => last_records.entry(tenant.into()).or_default(),
                };
                last.clear();
                last.extend_from_slice(data);
                Ok(())
            }
        };
        let mut replayed = match buckets {
            Some(buckets) => self.store.replay_buckets(buckets, visit)?,
            None => self.store.replay(visit)?,
        };
        replayed.completed = self.complete_timer_runs(engine, &last_records)?;
        let mut heads = self.heads.lock();
        for (tenant, head) in heads.iter_mut() {
            head.snapshot = head.snapshot.max(newest.get(&**tenant).copied().unwrap_or(0));
            if self.snapshot_every != 0 && head.last.saturating_sub(head.snapshot) >= self.snapshot_every {
                self.due.store(true, Ordering::Relaxed);
            }
        }
        Ok(replayed)
    }

    /// One firing of timers is recorded as one record per timer that changed something, all
    /// alike and made by its first: replaying the first fires them all again, and replays
    /// accept the others without running them. A crash between the commits of one firing
    /// leaves the engine ahead of the stored journal after a replay; the records it lacks
    /// are appended now, copies of the last one replayed, so that the tenant's next command
    /// follows them instead of being refused as a second history. Returns each tenant so
    /// completed with the numbers appended.
    fn complete_timer_runs(
        &self,
        engine: &Engine,
        last_records: &HashMap<Box<str>, Vec<u8>, foldhash::fast::RandomState>,
    ) -> Result<Vec<(String, u64, u64)>> {
        let mut completed = Vec::new();
        for (tenant, record) in last_records {
            // The tenant's lock, then the heads' (never both: a command holds its tenant's
            // lock while it takes the heads').
            let reached = engine.tenant(tenant).last_seq();
            let Some(last) = self.heads.lock().get(tenant).map(|h| h.last) else { continue };
            if reached <= last {
                continue;
            }
            if !Record::decode(record).is_ok_and(|r| r.change == Change::Timers) {
                return Err(Error::Replay {
                    tenant: tenant.to_string(),
                    seq: last,
                    detail: format!(
                        "replaying it took the tenant to {reached}, and it is not a firing of timers"
                    ),
                });
            }
            let mut ticket = None;
            for seq in last + 1..=reached {
                ticket = Some(self.store.append(tenant, seq, record)?);
            }
            // On disk before anything is told of the events they stand for.
            if let Some(ticket) = ticket {
                self.store.wait(ticket)?;
            }
            if let Some(head) = self.heads.lock().get_mut(tenant) {
                head.last = reached;
            }
            completed.push((tenant.to_string(), last + 1, reached));
        }
        Ok(completed)
    }
}

/// Applies one record (the `apply` of [`StoreJournal::replay_into`] that does nothing more).
///
/// # Errors
/// Why the engine refused it.
pub fn apply_record(tenant: &Tenant, seq: u64, data: &[u8]) -> Result<(), String> {
    tenant.replay(seq, data).map_err(|e| e.to_string())
}
