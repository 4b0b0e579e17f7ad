//! Restart time: fills a durable engine with `N` queued calls (a dial and an enqueue each,
//! 2N journal records, appended as fast as the store takes them), closes it, then times
//! opening the data directory and replaying the journal into a fresh engine, as
//! `waitline serve` does at start. Prints the journal's size too.
//!
//! `cargo run --release -p waitline-benches --bin restart_probe -- [N]` (default 1,000,000)

use std::time::Instant;

use waitline::{DialParams, Engine, EnqueueParams};
use waitline_store::engine::{StoreJournal, apply_record};
use waitline_store::{Options, Store};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = Options { fsync: waitline_store::Fsync::Periodic, ..Options::default() };
    let t = Instant::now();
    {
        let store = Store::open(dir.path(), options).expect("open");
        let engine = Engine::builder().journal(StoreJournal::new(store.clone())).build();
        let tenant = engine.default_tenant();
        let p = EnqueueParams::new("big").max_size(1_000_000);
        for _ in 0..n {
            let id = tenant
                .dial(&DialParams::new("+15550001", "+15550002", "bench"))
                .expect("dial")
                .call_control_id;
            tenant.enqueue(&id, &p).expect("enqueue");
        }
        store.flush().expect("flush");
    }
    println!("filled {n} queued calls ({} records) in {:.1} s", 2 * n, t.elapsed().as_secs_f64());
    let bytes: u64 = std::fs::read_dir(dir.path())
        .expect("data directory")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "data directory: {:.1} MB ({:.0} B per record)",
        bytes as f64 / 1e6,
        bytes as f64 / (2 * n) as f64
    );

    let t = Instant::now();
    let store = Store::open(dir.path(), Options::default()).expect("reopen");
    let journal = StoreJournal::new(store);
    let engine = Engine::builder().journal(journal.clone()).build();
    let replayed = journal.replay_into(&engine, apply_record).expect("replay");
    let took = t.elapsed();
    let size = engine.default_tenant().queue("big").expect("the queue").current_size;
    assert_eq!(size, n, "every queued call is back");
    println!(
        "| restart with {n} queued calls ({} records replayed) | {:.2} s | <= 5 s | {} |",
        replayed.records,
        took.as_secs_f64(),
        if took.as_secs_f64() <= 5.0 { "yes" } else { "**no**" }
    );
}
