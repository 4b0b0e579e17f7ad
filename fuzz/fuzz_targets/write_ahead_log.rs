//! Bytes read as SQLite's write-ahead log by the store before SQLite recovers it (any bytes,
//! or a real log with bytes changed and cut): the reading never panics, and a changed real
//! log opens as it says, with SQLite's own recovery as the oracle.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waitline_check::wal::{check_log_bytes, LogBytes};

fuzz_target!(|input: LogBytes| {
    if let Err(e) = check_log_bytes(&input) {
        panic!("{e}");
    }
});
