//! Durable records per second through the store: `WRITERS` threads, each appending a
//! 120-byte record and waiting until it is durable, for `SECS` seconds per policy, in a
//! temporary directory (on the disk that holds the system's temporary directory, or in
//! `TMPDIR`).
//!
//! `cargo run --release -p waitline-benches --bin store_load -- [SECS] [WRITERS] [POSTGRES_URL]`
//!
//! With a PostgreSQL URL, the same again over PostgreSQL (a schema made for the run and
//! dropped after it; the store holding every bucket's lease).

use std::time::{Duration, Instant};

use waitline_store::{Fsync, Options, PgConfig, Store};

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let writers: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let postgres = args.next();
    println!("| store | policy | writers | durable records/s | p50 wait | p99 wait | records per commit |");
    println!("|---|---|---|---|---|---|---|");
    for fsync in [Fsync::Always, Fsync::Periodic] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(dir.path(), Options { fsync, ..Options::default() }).expect("open");
        measure("SQLite", &store, fsync, secs, writers);
    }
    if let Some(url) = postgres {
        for fsync in [Fsync::Always, Fsync::Periodic] {
            // A schema of its own per policy: each starts every tenant at record 1.
            let schema = format!("store_load_{}_{fsync:?}", std::process::id()).to_lowercase();
            let config = PgConfig { schema: schema.clone(), ..PgConfig::new(url.clone()) };
            let store = Store::open_postgres(&config, Options { fsync, ..Options::default() }).expect("open");
            store.acquire_all().expect("leases");
            measure("PostgreSQL", &store, fsync, secs, writers);
            drop(store);
            waitline_store::test_support::execute(&url, &format!("DROP SCHEMA {schema} CASCADE"));
        }
    }
}

/// Appends and waits from `writers` threads for `secs` seconds; prints a table row.
fn measure(label: &str, store: &Store, fsync: Fsync, secs: f64, writers: usize) {
    {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut waits: Vec<Duration> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    let store = store.clone();
                    s.spawn(move || {
                        let tenant = format!("tenant-{w}");
                        let payload = [0x5a_u8; 120];
                        let mut waits = Vec::new();
                        let mut seq = 0;
                        while Instant::now() < until {
                            seq += 1;
                            let t = Instant::now();
                            store
                                .wait(store.append(&tenant, seq, &payload).expect("append"))
                                .expect("durable");
                            waits.push(t.elapsed());
                        }
                        waits
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        let elapsed = start.elapsed();
        waits.sort();
        let pct = |p: f64| {
            waits.get(((waits.len() as f64 * p) as usize).min(waits.len().saturating_sub(1))).copied()
        };
        let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
        println!(
            "| {label} | {fsync:?} | {writers} | {:.0} | {:.2} ms | {:.2} ms | {:.1} |",
            waits.len() as f64 / elapsed.as_secs_f64(),
            ms(pct(0.5)),
            ms(pct(0.99)),
            waits.len() as f64 / store.commits().max(1) as f64
        );
    }
}
