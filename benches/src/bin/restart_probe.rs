//! Restart time: fills a durable engine with `N` queued calls (a dial and an enqueue each,
//! 2N journal records, appended as fast as the store takes them), closes it, then times
//! opening the data directory and replaying the journal into a fresh engine, as
//! `waitline serve` does at start. Prints the journal's size too. Then snapshots the
//! tenant (timing the pause under its lock), which compacts the journal away, and times a
//! restart from the snapshot; the state restored must equal the state snapshotted, byte
//! for byte.
//!
//! With a PostgreSQL URL, the takeover instead: one store fills the tenant's bucket in
//! PostgreSQL (a schema made for the run and dropped after it) through the engine, then
//! gives the bucket up; a second store (another node) takes its lease and replays it into a
//! fresh engine, timed, as a node taking over a bucket does (`Store::acquire` and
//! `StoreJournal::replay_buckets_into`). Then again from a snapshot. What a real takeover
//! adds (the lease's expiry, the share's turn) is not in these figures: see BENCHMARKS.md.
//!
//! `cargo run --release -p waitline-benches --bin restart_probe -- [N] [POSTGRES_URL]`
//! (N defaults to 1,000,000)

use std::time::Instant;

use waitline::{DialParams, Engine, EnqueueParams};
use waitline_store::engine::{StoreJournal, apply_record};
use waitline_store::{Options, PgConfig, Store};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    match args.next() {
        Some(url) => takeover(n, &url),
        None => restart_from_directory(n),
    }
}

fn restart_from_directory(n: usize) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = Options { fsync: waitline_store::Fsync::Periodic, ..Options::default() };
    let t = Instant::now();
    fill(&Store::open(dir.path(), options).expect("open"), n);
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

    let reopen = || Store::open(dir.path(), Options::default()).expect("reopen");
    let (engine, store) = load(reopen, None, n, "restart", "the journal alone");
    let (seq, state) = snapshot(&engine, &store, n);
    drop((engine, store));
    let t = Instant::now();
    let restored = Engine::default();
    restored.default_tenant().restore(&state).expect("restore");
    println!("restore alone (no store): {:.2} s", t.elapsed().as_secs_f64());
    drop(restored);
    let (engine, _store) = load(reopen, None, n, "restart", "its snapshot");
    assert!(
        engine.default_tenant().snapshot() == (seq, state),
        "the restored state is the state snapshotted"
    );
}

/// The takeover of the default tenant's bucket holding `n` queued calls in PostgreSQL at
/// `url`: from the journal alone, then from a snapshot.
fn takeover(n: usize, url: &str) {
    // A schema of its own: the run starts the tenant at record 1 and leaves nothing behind.
    let schema = format!("restart_probe_{}", std::process::id());
    let node = |name: &str| {
        let config = PgConfig { schema: schema.clone(), node: name.into(), ..PgConfig::new(url) };
        let options = Options { fsync: waitline_store::Fsync::Always, ..Options::default() };
        Store::open_postgres(&config, options).expect("open PostgreSQL")
    };
    let first = node("first");
    let bucket = first.bucket_of(waitline::DEFAULT_TENANT);
    first.acquire(&[bucket]).expect("lease");
    let t = Instant::now();
    fill(&first, n);
    println!(
        "filled {n} queued calls ({} records) into PostgreSQL in {:.1} s",
        2 * n,
        t.elapsed().as_secs_f64()
    );
    // Given up, not left to expire: the figures are the loading alone.
    first.release(bucket).expect("release");
    drop(first);

    let (engine, second) = load(|| node("second"), Some(bucket), n, "takeover", "the journal alone");
    let (seq, state) = snapshot(&engine, &second, n);
    second.release(bucket).expect("release");
    drop((engine, second));
    let (engine, _third) = load(|| node("third"), Some(bucket), n, "takeover", "its snapshot");
    assert!(
        engine.default_tenant().snapshot() == (seq, state),
        "the state taken over is the state snapshotted"
    );
    drop((engine, _third));
    // Every store of the schema is closed: nothing holds its tables.
    waitline_store::test_support::execute(url, &format!("DROP SCHEMA {schema} CASCADE"));
}

/// `n` queued calls in the default tenant of an engine journaling into `store`, flushed.
fn fill(store: &Store, n: usize) {
    let engine = Engine::builder().journal(StoreJournal::with_snapshot_every(store.clone(), 0)).build();
    let tenant = engine.default_tenant();
    let p = EnqueueParams::new("big").max_size(1_000_000);
    for _ in 0..n {
        let id =
            tenant.dial(&DialParams::new("+15550001", "+15550002", "bench")).expect("dial").call_control_id;
        tenant.enqueue(&id, &p).expect("enqueue");
    }
    store.flush().expect("flush");
}

/// Snapshots the default tenant (timing the pause under its lock) into `store`, which
/// compacts its journal away; returns what was snapshotted.
fn snapshot(engine: &Engine, store: &Store, n: usize) -> (u64, Vec<u8>) {
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
    (seq, state)
}

/// Replays what the store `open` opens into a fresh engine, timed from the opening to the
/// end of the replay: everything, as `waitline serve` does at start, or with `bucket` the
/// lease of that bucket taken then its tenants replayed, as a node taking the bucket over
/// does.
fn load(
    open: impl FnOnce() -> Store,
    bucket: Option<u32>,
    n: usize,
    what: &str,
    from: &str,
) -> (Engine, Store) {
    let t = Instant::now();
    let store = open();
    let journal = StoreJournal::with_snapshot_every(store.clone(), 0);
    let engine = Engine::builder().journal(journal.clone()).build();
    let replayed = match bucket {
        Some(bucket) => {
            let taken = store.acquire(&[bucket]).expect("lease");
            assert_eq!(taken.len(), 1, "the bucket given up is free to take");
            journal.replay_buckets_into(&engine, &[bucket], apply_record)
        }
        None => journal.replay_into(&engine, apply_record),
    }
    .expect("replay");
    let took = t.elapsed();
    let size = engine.default_tenant().queue("big").expect("the queue").current_size;
    assert_eq!(size, n, "every queued call is back");
    println!(
        "| {what} with {n} queued calls from {from} ({} snapshots restored, {} records replayed) | {:.2} s | <= 5 s | {} |",
        replayed.snapshots,
        replayed.records,
        took.as_secs_f64(),
        if took.as_secs_f64() <= 5.0 { "yes" } else { "**no**" }
    );
    (engine, store)
}
