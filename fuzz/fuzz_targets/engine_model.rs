//! Commands (with clock advances) over 2 tenants, 6 calls and 3 queues, applied to the engine
//! and to the reference model; every result, event, figure and listing must agree and the
//! engine's invariants must hold after each step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waitline_check::model::{run, Op};

fuzz_target!(|input: Vec<Op>| {
    if let Err(e) = run(&input) {
        panic!("{e}");
    }
});
