//! Commands from up to 4 threads at once; invariants and enqueue/dequeue accounting must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waitline_check::concurrent::{check_threads, ThreadOp};

fuzz_target!(|input: Vec<Vec<ThreadOp>>| {
    if let Err(e) = check_threads(&input) {
        panic!("{e}");
    }
});
