//! Snapshots against the journal: engine A runs a scenario with a journal and each tenant
//! is snapshotted at some step; engine B restores the snapshots and replays A's records
//! after them. B must then be A exactly: the same events (ids included) from the replay,
//! byte-identical snapshots at the end, and the reference model's state, both right after
//! the restore and at the end. Also the `snapshot_decode` fuzz target's check: any bytes
//! restore into a consistent tenant or are refused, never a panic.

use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use waitline::{Clock, DialParams, EnqueueParams, Event, Timestamp};

use crate::model::{Model, Op, START, TENANTS, VecJournal, compare_state, run_engine, scenario_engine};

/// What a scenario exercised across its snapshot, so that tests can require it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SnapshotRun {
    /// Timers were pending when the snapshots were taken.
    pub timers_pending: bool,
    /// Records replayed after the snapshots.
    pub records_after: usize,
    /// Bytes of the snapshots.
    pub snapshot_bytes: usize,
}

/// Runs `ops` on engine A, snapshots every tenant after step `cut` (reduced modulo the
/// steps + 1), restores the snapshots into engine B and replays A's later records into it.
///
/// # Errors
/// Where B differs from A or from the model, or a restore or a replay failed.
pub fn check_snapshot_replay(ops: &[Op], cut: usize) -> Result<SnapshotRun, String> {
    let (clock, hand) = Clock::manual(START);
    let journal = Arc::new(VecJournal::default());
    let a = scenario_engine(clock).journal(journal.clone()).build();
    let mut sub = a.subscribe();
    let tenants: Vec<_> = TENANTS.iter().map(|n| a.tenant(n)).collect();
    let mut model = Model::at_start();
    let cut = cut % (ops.len() + 1);
    let mut run = SnapshotRun::default();
    let mut snapshots = Vec::new();
    let mut events_after: Vec<Event> = Vec::new();
    for (step, op) in std::iter::once(None).chain(ops.iter().map(Some)).enumerate() {
        if let Some(op) = op {
            let op = op.normalized();
            if let Op::Advance { secs } = op {
                hand.advance(Duration::from_secs(secs));
                a.run_pending_tasks();
                model.advance_to(hand.now().as_micros());
            }
            let (got, new_id) = run_engine(&tenants, &op);
            let want = model.apply(&op, new_id.as_deref());
            if got != want {
                return Err(format!("engine A and the model differ on {op:?}: {got} vs {want}"));
            }
            model.events.clear();
        }
        let events = sub.drain();
        if step == cut {
            run.timers_pending = a.next_wakeup().is_some();
            snapshots = tenants.iter().map(waitline::Tenant::snapshot).collect();
            run.snapshot_bytes = snapshots.iter().map(|s| s.1.len()).sum();
        } else if step > cut {
            events_after.extend(events);
        }
        if step == cut {
            // The model at the cut, for B right after its restore.
            let (b, b_hand) = restored(&snapshots)?;
            b_hand.set(hand.now());
            let replicas: Vec<_> = TENANTS.iter().map(|n| b.tenant(n)).collect();
            b.check_invariants()?;
            compare_state(&model, &replicas).map_err(|e| format!("right after the restore: {e}"))?;
        }
    }

    // B: the snapshots, then A's records after them.
    let (b, b_hand) = restored(&snapshots)?;
    let mut replayed_events = b.subscribe();
    for (ti, name) in TENANTS.iter().enumerate() {
        let tenant = b.tenant(name);
        for (_, seq, bytes) in journal.records().iter().filter(|r| r.0 == *name && r.1 > snapshots[ti].0) {
            tenant.replay(*seq, bytes).map_err(|e| format!("tenant {name}: record {seq}: {e}"))?;
            run.records_after += 1;
        }
    }
    let replayed = replayed_events.drain();
    for name in TENANTS {
        let live: Vec<&Event> = events_after.iter().filter(|e| *e.tenant == *name).collect();
        let again: Vec<&Event> = replayed.iter().filter(|e| *e.tenant == *name).collect();
        if live != again {
            return Err(format!("tenant {name}: the replay after the snapshot made other events"));
        }
    }
    b_hand.set(hand.now());
    b.check_invariants()?;
    let replicas: Vec<_> = TENANTS.iter().map(|n| b.tenant(n)).collect();
    compare_state(&model, &replicas).map_err(|e| format!("at the end: {e}"))?;
    for (original, replica) in tenants.iter().zip(&replicas) {
        if original.snapshot() != replica.snapshot() {
            return Err(format!("tenant {}: the states differ at the end", original.name()));
        }
    }
    Ok(run)
}

/// A fresh engine B with every tenant restored from `snapshots` (in `TENANTS` order).
fn restored(snapshots: &[(u64, Vec<u8>)]) -> Result<(waitline::Engine, waitline::ManualClock), String> {
    let (clock, hand) = Clock::manual(START);
    let b = scenario_engine(clock).build();
    for (name, (seq, bytes)) in TENANTS.iter().zip(snapshots) {
        let got = b.tenant(name).restore(bytes).map_err(|e| format!("tenant {name}: {e}"))?;
        if got != *seq {
            return Err(format!("tenant {name}: restored at {got}, taken at {seq}"));
        }
    }
    Ok((b, hand))
}

/// Bytes to restore a tenant from: a real snapshot with bytes flipped (each index reduced
/// modulo its length), or raw bytes.
#[derive(Debug, Clone, Arbitrary)]
pub enum SnapshotBytes {
    Flipped { ops: Vec<Op>, flips: Vec<(u16, u8)> },
    Raw(RawBytes),
}

/// Bytes taken as they are: as the last input, the rest of the fuzzer's bytes (a seed is
/// the variant's 4 bytes, then a snapshot).
#[derive(Debug, Clone)]
pub struct RawBytes(pub Vec<u8>);

impl<'a> Arbitrary<'a> for RawBytes {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.arbitrary_len::<u8>()?;
        Ok(Self(u.bytes(n)?.to_vec()))
    }

    fn arbitrary_take_rest(u: arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self(u.take_rest().to_vec()))
    }
}

/// Restores a tenant from the bytes: refused, or a tenant whose invariants hold and that
/// runs commands and timers without panicking.
///
/// # Errors
/// A restored tenant that is inconsistent.
pub fn check_snapshot_decode(input: &SnapshotBytes) -> Result<(), String> {
    let bytes = match input {
        SnapshotBytes::Raw(RawBytes(bytes)) => bytes.clone(),
        SnapshotBytes::Flipped { ops, flips } => {
            let mut bytes = scenario_snapshot(ops);
            for &(at, mask) in flips {
                let i = usize::from(at) % bytes.len();
                bytes[i] ^= mask;
            }
            bytes
        }
    };
    let (clock, hand) = Clock::manual(START);
    let engine = scenario_engine(clock).build();
    let tenant = engine.tenant(TENANTS[0]);
    if tenant.restore(&bytes).is_err() {
        return if tenant.last_seq() == 0 {
            Ok(())
        } else {
            Err("a refused snapshot changed the tenant".into())
        };
    }
    engine.check_invariants().map_err(|e| format!("accepted: {e}"))?;
    // A few commands and the timers, which must not panic whatever they answer.
    let call =
        tenant.dial(&DialParams::new("+1", "+2", "app")).map(|c| c.call_control_id).unwrap_or_default();
    let _ = tenant.enqueue(&call, &EnqueueParams::new("q0").max_wait_time_secs(5));
    let _ = tenant.bridge(&call, &waitline::BridgeParams::queue("q1"));
    for name in ["q0", "q1", "q 2/x"] {
        let _ = tenant.queue_calls(name, waitline::PageRequest::new(1, 250));
        if let Ok(q) = tenant.queue(name) {
            if let Ok(page) = tenant.queue_calls(name, waitline::PageRequest::new(1, 250)) {
                if page.data.len() != q.current_size.min(250) {
                    return Err(format!("queue {name} lists {} of {}", page.data.len(), q.current_size));
                }
            }
        }
    }
    hand.set(Timestamp::from_micros(hand.now().as_micros().saturating_add(2_000 * 1_000_000)));
    engine.run_pending_tasks();
    engine.check_invariants().map_err(|e| format!("accepted, then after its timers: {e}"))
}

/// The snapshot of the first tenant after `ops` (at most 64 steps).
#[must_use]
pub fn scenario_snapshot(ops: &[Op]) -> Vec<u8> {
    let (clock, hand) = Clock::manual(START);
    let engine = scenario_engine(clock).build();
    let tenants: Vec<_> = TENANTS.iter().map(|n| engine.tenant(n)).collect();
    for op in ops.iter().take(64) {
        let op = op.normalized();
        if let Op::Advance { secs } = op {
            hand.advance(Duration::from_secs(secs));
            engine.run_pending_tasks();
        }
        run_engine(&tenants, &op);
    }
    tenants[0].snapshot().1
}
