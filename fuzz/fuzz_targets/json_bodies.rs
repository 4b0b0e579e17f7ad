//! Each command's JSON body with odd types, sizes, unicode and numbers at the edges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waitline_check::json_bodies::{check_commands, JsonCommand};

fuzz_target!(|input: Vec<JsonCommand>| {
    if let Err(e) = check_commands(&input) {
        panic!("{e}");
    }
});
