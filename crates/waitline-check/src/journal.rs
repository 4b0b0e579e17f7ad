//! Damaged journals: a scenario runs on an engine with a journal, some bytes of its records
//! are flipped, and the records are replayed into a fresh engine. Replay may refuse a record
//! (then that tenant stops there), but it must never panic nor leave a broken state; with no
//! byte flipped it must take every record.

use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use waitline::Clock;

use crate::model::{Op, START, TENANTS, VecJournal, run_engine, scenario_engine};

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
