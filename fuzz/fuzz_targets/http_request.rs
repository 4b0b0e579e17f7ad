//! Arbitrary methods, paths, queries, auth headers and bodies sent to the server's router:
//! never a panic, never a 5xx, errors in the Telnyx shape, refused requests change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waitline_check::http::{check_requests, HttpRequest};

fuzz_target!(|input: Vec<HttpRequest>| {
    if let Err(e) = check_requests(&input) {
        panic!("{e}");
    }
});
