//! Arbitrary webhook URLs, allow lists and resolver answers through the destination policy:
//! never a panic, never a private (loopback, link-local, multicast...) address let through
//! unless allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waitline_check::webhook_destinations::{DestinationCase, check_destination};

fuzz_target!(|case: DestinationCase| {
    if let Err(e) = check_destination(&case) {
        panic!("{e}");
    }
});
