//! A fixed workload for profilers: one queue of `N` calls, then `SAMPLES` positions and
//! `SAMPLES` removals (each followed, untimed, by a re-enqueue at the end) of random
//! members, as in the report's million section. Prints the p50 of each.
//!
//! `cargo run --release -p waitline-benches --bin million_probe -- [N] [SAMPLES] [pos|rem]`
//!
//! Under `valgrind --tool=cachegrind --cache-sim=yes`, the difference between two sample
//! counts gives instructions and simulated cache misses per operation.

use std::hint::black_box;
use std::time::Instant;

use waitline::{Engine, EnqueueParams};

/// As in the report: the caller has just read the id, so it is in cache.
fn warm(id: &str) -> &str {
    black_box((id.as_bytes().first().copied(), id.as_bytes().last().copied()));
    id
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let samples: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let only = args.next();
    let tenant = Engine::default().default_tenant();
    let ids = waitline_benches::fill(&tenant, "big", n);
    let mut seed = 0x9e37_79b9_u64;
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize % n
    };
    let p50 = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    if only.as_deref() != Some("rem") {
        let t: Vec<u64> = (0..samples)
            .map(|_| {
                let id = warm(&ids[rng()]);
                let t = Instant::now();
                black_box(tenant.queue_position("big", id).ok());
                t.elapsed().as_nanos() as u64
            })
            .collect();
        println!("position p50 {} ns", p50(t));
    }
    if only.as_deref() != Some("pos") {
        let p = EnqueueParams::new("big");
        let t: Vec<u64> = (0..samples)
            .map(|_| {
                let id = warm(&ids[rng()]);
                let t = Instant::now();
                let removed = tenant.remove_queue_call("big", id).is_ok();
                let e = t.elapsed().as_nanos() as u64;
                if removed {
                    tenant.enqueue(id, &p).ok();
                }
                e
            })
            .collect();
        println!("removal p50 {} ns", p50(t));
    }
}
