//! Bytes restored as a tenant's snapshot (raw, or a real snapshot with bytes flipped): a
//! restore must refuse them or give a tenant whose invariants hold and that runs commands
//! and timers; it must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waitline_check::snapshot::{check_snapshot_decode, SnapshotBytes};

fuzz_target!(|input: SnapshotBytes| {
    if let Err(e) = check_snapshot_decode(&input) {
        panic!("{e}");
    }
});
