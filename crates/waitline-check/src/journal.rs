//! Damaged journals: a scenario runs on an engine with a journal, some bytes of its records
//! are flipped, and the records are replayed into a fresh engine. Replay may refuse a record
//! (then that tenant stops there), but it must never panic nor leave a broken state; with no
//! byte flipped it must take every record.
//!
//! Cut journals: a scenario runs on an engine journaling into the store on disk, and the
//! store's write-ahead log is cut at some byte, as a crash leaves it. What replays from the
//! cut files must be exactly the state of the reference model after some prefix of the
//! scenario.

use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use waitline::Clock;

use crate::model::{Model, Op, START, TENANTS, VecJournal, compare_state, run_engine, scenario_engine};

/// A scenario and the bytes to flip in its records: (record, byte, mask), each index
/// reduced modulo the sizes.
#[derive(Debug, Clone, Arbitrary)]
pub struct DamagedJournal {
    pub ops: Vec<Op>,
    pub flips: Vec<(u16, u16, u8)>,
}

/// Runs the scenario, damages its records, and replays them.
///
/// # Errors
/// A replay that broke the engine's invariants, or refused an undamaged journal.
pub fn check_damaged_journal(input: &DamagedJournal) -> Result<(), String> {
    let (clock, hand) = Clock::manual(START);
    let journal = Arc::new(VecJournal::default());
    let engine = scenario_engine(clock).journal(journal.clone()).build();
    let tenants: Vec<_> = TENANTS.iter().map(|n| engine.tenant(n)).collect();
    for op in input.ops.iter().take(64) {
        let op = op.normalized();
        if let Op::Advance { secs } = op {
            hand.advance(Duration::from_secs(secs));
            engine.run_pending_tasks();
        }
        run_engine(&tenants, &op);
    }
    let mut records = journal.records();
    let mut damaged = false;
    if !records.is_empty() {
        for &(r, b, mask) in &input.flips {
            let at = usize::from(r) % records.len();
            let bytes = &mut records[at].2;
            if !bytes.is_empty() && mask != 0 {
                let i = usize::from(b) % bytes.len();
                bytes[i] ^= mask;
                damaged = true;
            }
        }
    }
    let (clock, _) = Clock::manual(START);
    let again = scenario_engine(clock).build();
    for name in TENANTS {
        let tenant = again.tenant(name);
        for (_, seq, bytes) in records.iter().filter(|r| r.0 == name) {
            if let Err(e) = tenant.replay(*seq, bytes) {
                if !damaged {
                    return Err(format!("tenant {name}: the undamaged record {seq} was refused: {e}"));
                }
                break;
            }
        }
    }
    again.check_invariants()
}

/// A scenario and where to cut the store's write-ahead log (reduced modulo its length + 1;
/// `u32::MAX` keeps it whole).
#[derive(Debug, Clone, Arbitrary)]
pub struct CutJournal {
    pub ops: Vec<Op>,
    pub cut: u32,
}

/// Runs the scenario on an engine journaling into a store (each step synced), copies the
/// store's files as a crash would leave them with the log cut at `cut`, replays them into a
/// fresh engine, and compares it with the model after the prefix of the scenario whose
/// changes it holds. Returns whether a prefix matched (a cut inside the records of one step
/// leaves a state no step boundary had: nothing to compare then).
///
/// # Errors
/// A replay that fails, or a state that differs from the model's after that prefix.
pub fn check_cut_journal(input: &CutJournal) -> Result<bool, String> {
    use waitline_store::engine::{StoreJournal, apply_record};
    use waitline_store::{DB_FILE, Options, Store};

    let live = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = Store::open(live.path(), Options::default()).map_err(|e| e.to_string())?;
    let (clock, hand) = Clock::manual(START);
    let engine = scenario_engine(clock).journal(StoreJournal::new(store.clone())).build();
    let tenants: Vec<_> = TENANTS.iter().map(|n| engine.tenant(n)).collect();
    let mut model = Model::at_start();
    // After each step: each tenant's last number, and the model.
    let mut steps: Vec<(Vec<u64>, Model)> = vec![(vec![0; TENANTS.len()], model.clone())];
    for op in input.ops.iter().take(48) {
        let op = op.normalized();
        if let Op::Advance { secs } = op {
            hand.advance(Duration::from_secs(secs));
            engine.run_pending_tasks();
            model.advance_to(hand.now().as_micros());
        }
        let (_, new_id) = run_engine(&tenants, &op);
        model.apply(&op, new_id.as_deref());
        store.flush().map_err(|e| e.to_string())?;
        steps.push((tenants.iter().map(waitline::Tenant::last_seq).collect(), model.clone()));
    }
    // The files as a crash leaves them: the database, and the log cut.
    let crashed = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::copy(live.path().join(DB_FILE), crashed.path().join(DB_FILE)).map_err(|e| e.to_string())?;
    let wal = std::fs::read(live.path().join(format!("{DB_FILE}-wal"))).unwrap_or_default();
    let cut = if input.cut == u32::MAX { wal.len() } else { input.cut as usize % (wal.len() + 1) };
    std::fs::write(crashed.path().join(format!("{DB_FILE}-wal")), &wal[..cut]).map_err(|e| e.to_string())?;
    drop((engine, store));

    let store = Store::open(crashed.path(), Options::default()).map_err(|e| e.to_string())?;
    let (clock, hand) = Clock::manual(START);
    let again = scenario_engine(clock).build();
    StoreJournal::new(store)
        .replay_into(&again, apply_record)
        .map_err(|e| format!("cut at {cut} of {}: {e}", wal.len()))?;
    let replayed: Vec<_> = TENANTS.iter().map(|n| again.tenant(n)).collect();
    let seqs: Vec<u64> = replayed.iter().map(waitline::Tenant::last_seq).collect();
    // The last step that left exactly these numbers (steps that changed nothing durable
    // share them; only the clock differs, and the replay's clock is set to the step's).
    let Some((_, at_step)) = steps.iter().rev().find(|(s, _)| *s == seqs) else { return Ok(false) };
    hand.set(waitline::Timestamp::from_micros(at_step.now));
    again.check_invariants()?;
    compare_state(at_step, &replayed)
        .map_err(|e| format!("cut at {cut} of {}, state at {seqs:?}: {e}", wal.len()))?;
    Ok(true)
}
