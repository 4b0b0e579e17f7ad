//! The floor under any lookup of one random call among a million: the time of one
//! dependent random load from a working set of `MB` mebibytes (a chain of cache lines in
//! random order, each holding the index of the next, so no load can start before the last
//! one ends and no prefetcher can guess the next).
//!
//! `cargo run --release -p waitline-benches --bin latency_probe -- [MB ...]`
//!
//! A position or a removal at a million members reads the call's record, which is one such
//! load into a table of ~110 MB (BENCHMARKS.md, "One queue of 1,000,000 calls"); the scan
//! it is compared with streams 8 MB, which the prefetchers serve at the memory's bandwidth.

use std::time::Instant;

const LINE_WORDS: usize = 8;
const LOADS: usize = 2_000_000;

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    for mb in if sizes.is_empty() { vec![1, 8, 128] } else { sizes } {
        println!("{mb} MiB: {:.1} ns per dependent random load", chase(mb));
    }
}

/// Builds one random cycle through every cache line of `mb` MiB and walks it.
fn chase(mb: usize) -> f64 {
    let lines = (mb << 20) / (LINE_WORDS * 8);
    let mut order: Vec<usize> = (0..lines).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..lines).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let mut next = vec![0usize; lines * LINE_WORDS];
    for (k, &line) in order.iter().enumerate() {
        next[line * LINE_WORDS] = order[(k + 1) % lines] * LINE_WORDS;
    }
    let mut at = order[0] * LINE_WORDS;
    let t = Instant::now();
    for _ in 0..LOADS {
        at = next[at];
    }
    let ns = t.elapsed().as_nanos() as f64 / LOADS as f64;
    std::hint::black_box(at);
    ns
}
