//! Restart time: fills a durable engine with `N` queued calls (a dial and an enqueue each,
//! 2N journal records, appended as fast as the store takes them), closes it, then times
//! opening the data directory and replaying the journal into a fresh engine, as
//! `waitline serve` does at start. Prints the journal's size too. Then snapshots the
//! tenant (timing the pause under its lock), which compacts the journal away, and times a
//! restart from the snapshot; the state restored must equal the state snapshotted, byte
//! for byte.
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
        let engine = Engine::builder().journal(StoreJournal::with_snapshot_every(store.clone(), 0)).build();
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

    let (engine, store) = restart(dir.path(), n, "the journal alone");
    let t = Instant::now();
    let (seq, state) = engine.default_tenant().snapshot();
    let pause = t.elapsed();
    store.wait(store.snapshot(waitline::DEFAULT_TENANT, seq, &state).expect("snapshot")).expect("written");
    let left = store.describe().expect("describe");
    println!(
        "| snapshot of {n} queued calls: pause under the tenant's lock | {:.0} ms | {} bytes, {:.0} B per queued call; journal left: {} rows |",
        pause.as_secs_f64() * 1e3,
        state.len(),
        state.len() as f64 / n as f64,
        left[0].journal_rows
    );
    drop((engine, store));
    let t = Instant::now();
    let restored = Engine::default();
    restored.default_tenant().restore(&state).expect("restore");
    println!("restore alone (no store): {:.2} s", t.elapsed().as_secs_f64());
    drop(restored);
    let (engine, _store) = restart(dir.path(), n, "its snapshot");
    assert!(
        engine.default_tenant().snapshot() == (seq, state),
        "the restored state is the state snapshotted"
    );
}

/// Opens the data directory and replays it into a fresh engine, timed, as `waitline serve`
/// does at start.
fn restart(dir: &std::path::Path, n: usize, from: &str) -> (Engine, Store) {
    let t = Instant::now();
    let store = Store::open(dir, Options::default()).expect("reopen");
    let journal = StoreJournal::with_snapshot_every(store.clone(), 0);
    let engine = Engine::builder().journal(journal.clone()).build();
    let replayed = journal.replay_into(&engine, apply_record).expect("replay");
    let took = t.elapsed();
    let size = engine.default_tenant().queue("big").expect("the queue").current_size;
    assert_eq!(size, n, "every queued call is back");
    println!(
        "| restart with {n} queued calls from {from} ({} snapshots restored, {} records replayed) | {:.2} s | <= 5 s | {} |",
        replayed.snapshots,
        replayed.records,
        took.as_secs_f64(),
        if took.as_secs_f64() <= 5.0 { "yes" } else { "**no**" }
    );
    (engine, store)
}
