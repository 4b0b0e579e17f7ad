//! A fixed workload for profilers: `ROUNDS` x 100,000 enqueue+bridge pairs over 100 queues.
//! Under `valgrind --tool=callgrind` it gives instruction counts that do not depend on how
//! busy the machine is (see BENCHMARKS.md for the command).
//!
//! `cargo run --release -p waitline-benches --bin pair_probe -- [ROUNDS]`

use std::time::Instant;

const PAIRS: usize = 100_000;
const QUEUES: usize = 100;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let engine = waitline::Engine::default();
    let f = waitline_benches::PairFixture::new(&engine, QUEUES);
    let params: Vec<_> = (0..QUEUES).map(|i| f.params(i, None)).collect();
    for round in 0..rounds {
        let t = Instant::now();
        for n in 0..PAIRS {
            let i = n % QUEUES;
            f.pair(i, &params[i].0, &params[i].1);
        }
        println!("round {round}: {:?} per pair", t.elapsed() / PAIRS as u32);
    }
}
