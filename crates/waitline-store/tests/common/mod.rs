//! What the store's test files share: a record's bytes, and every entry a replay hands over.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use waitline_store::{Entry, Replayed, Store};

/// The bytes of record `n`.
pub fn record(n: u64) -> Vec<u8> {
    format!("record {n}").into_bytes()
}

/// An entry replay handed over: (tenant, "snapshot" or "record", seq, data).
pub type Seen = (String, &'static str, u64, Vec<u8>);

/// Every entry replay hands over.
pub fn replay_all(store: &Store) -> (Vec<Seen>, Replayed) {
    let mut seen = Vec::new();
    let summary = store
        .replay(|e| {
            seen.push(match e {
                Entry::Snapshot { tenant, seq, data } => (tenant.to_owned(), "snapshot", seq, data.to_vec()),
                Entry::Record { tenant, seq, data } => (tenant.to_owned(), "record", seq, data.to_vec()),
            });
            Ok(())
        })
        .expect("replay");
    (seen, summary)
}
