//! A scenario's journal with bytes flipped, replayed into a fresh engine: replay may refuse
//! a record but must never panic nor break the engine's invariants, and takes every record
//! of an undamaged journal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waitline_check::journal::{check_damaged_journal, DamagedJournal};

fuzz_target!(|input: DamagedJournal| {
    if let Err(e) = check_damaged_journal(&input) {
        panic!("{e}");
    }
});
