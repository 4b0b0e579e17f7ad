//! Two threads on one tenant: the report's "2 threads, one tenant" row as a probe. Each
//! thread runs `PAIRS` enqueue+bridge pairs per round on its own 50 of the tenant's 100
//! queues, so the two share nothing but the tenant (its lock and its state); a round's
//! time is the wall time of both halves divided by the pairs of both.
//!
//! `cargo run --release -p waitline-benches --bin contend_probe -- [ROUNDS]`
//!
//! On a machine shared with other work the two threads often do not run at the same time
//! (each waits for a CPU while the other runs), and then a round measures the scheduler,
//! not the tenant's lock. So each round also prints how much of its wall time each thread
//! spent on a CPU (`/proc/thread-self/schedstat`, Linux): compare the rounds where both
//! ran nearly throughout ("both on a CPU >= 80%"), whose best and median it prints last.
//! It also prints each thread's voluntary context switches (`/proc/thread-self/status`): a
//! thread that parked on the lock (a futex wait) makes one.

use std::sync::Barrier;
use std::time::{Duration, Instant};

const PAIRS: usize = 50_000;
const QUEUES: usize = 100;
/// A round counts as both threads running at once when each was on a CPU this much of it.
const OVERLAP: f64 = 0.8;

/// One thread's round: its start and end, and its time on a CPU during it (ns).
struct Round {
    start: Instant,
    end: Instant,
    on_cpu: u64,
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let engine = waitline::Engine::default();
    let f = waitline_benches::PairFixture::new(&engine, QUEUES);
    let params: Vec<_> = (0..QUEUES).map(|i| f.params(i, None)).collect();
    let barrier = Barrier::new(2);
    let results: Vec<(Vec<Round>, u64)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (f, params, barrier) = (&f, &params, &barrier);
                s.spawn(move || {
                    let parks_before = voluntary_switches();
                    let mut times = Vec::with_capacity(rounds);
                    for _ in 0..rounds {
                        barrier.wait();
                        let cpu = on_cpu();
                        let start = Instant::now();
                        for n in 0..PAIRS {
                            let i = t * QUEUES / 2 + n % (QUEUES / 2);
                            f.pair(i, &params[i].0, &params[i].1);
                        }
                        let end = Instant::now();
                        times.push(Round { start, end, on_cpu: on_cpu() - cpu });
                    }
                    (times, voluntary_switches() - parks_before)
                })
            })
            .collect();
        threads.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let mut overlapped = Vec::new();
    for round in 0..rounds {
        let start = results.iter().map(|r| r.0[round].start).min().unwrap_or_else(Instant::now);
        let end = results.iter().map(|r| r.0[round].end).max().unwrap_or(start);
        let wall: Duration = end - start;
        let per_pair = wall.as_secs_f64() * 1e9 / (2 * PAIRS) as f64;
        let shares: Vec<f64> =
            results.iter().map(|r| r.0[round].on_cpu as f64 / wall.as_nanos() as f64).collect();
        let both = shares.iter().all(|&s| s >= OVERLAP);
        if both {
            overlapped.push(per_pair);
        }
        println!(
            "round {round}: {per_pair:.1} ns per pair (wall); on a CPU {:.0}% and {:.0}% of it{}",
            shares[0] * 100.0,
            shares[1] * 100.0,
            if both { "" } else { " (not both running)" }
        );
    }
    for (t, r) in results.iter().enumerate() {
        println!("thread {t}: {} voluntary context switches (parks)", r.1);
    }
    overlapped.sort_by(f64::total_cmp);
    match (overlapped.first(), overlapped.get(overlapped.len() / 2)) {
        (Some(best), Some(median)) => println!(
            "both on a CPU >= 80%: {} of {rounds} rounds, best {best:.1} ns, median {median:.1} ns per pair",
            overlapped.len()
        ),
        _ => println!("both on a CPU >= 80%: no round of {rounds}"),
    }
}

/// This thread's time on a CPU so far, in nanoseconds (`/proc/thread-self/schedstat`, Linux;
/// 0 where the kernel does not tell).
fn on_cpu() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    stat.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// This thread's voluntary context switches so far (`/proc/thread-self/status`, Linux; 0
/// where the kernel does not tell).
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
