//! Two threads on one tenant: the report's "2 threads, one tenant" row as a probe. Each
//! thread runs 100,000 enqueue+bridge pairs per round on its own 50 of the tenant's 100
//! queues, so the two share nothing but the tenant (its lock and its state); a round's
//! time is the wall time of both halves divided by the 200,000 pairs.
//!
//! `cargo run --release -p waitline-benches --bin contend_probe -- [ROUNDS]`
//!
//! After the rounds it prints, per thread, its time on a CPU and its time waiting in a run
//! queue for one (`/proc/thread-self/schedstat`: when the two threads did not run at the
//! same time, the row measures the scheduler, not the lock), and its voluntary and
//! involuntary context switches (`/proc/thread-self/status`): a voluntary one is a thread
//! that parked on the lock (a futex wait), so they count the contended lock's parks
//! without a profiler.

use std::sync::Barrier;
use std::time::{Duration, Instant};

const PAIRS: usize = 100_000;
const QUEUES: usize = 100;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let engine = waitline::Engine::default();
    let f = waitline_benches::PairFixture::new(&engine, QUEUES);
    let params: Vec<_> = (0..QUEUES).map(|i| f.params(i, None)).collect();
    let barrier = Barrier::new(2);
    let switches = std::thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (f, params, barrier) = (&f, &params, &barrier);
                s.spawn(move || {
                    let before = context_switches();
                    let sched_before = schedstat();
                    let mut times = Vec::with_capacity(rounds);
                    for _ in 0..rounds {
                        barrier.wait();
                        let start = Instant::now();
                        for n in 0..PAIRS {
                            let i = t * QUEUES / 2 + n % (QUEUES / 2);
                            f.pair(i, &params[i].0, &params[i].1);
                        }
                        times.push((start, Instant::now()));
                    }
                    let after = context_switches();
                    let sched_after = schedstat();
                    let sched = (sched_after.0 - sched_before.0, sched_after.1 - sched_before.1);
                    (times, (after.0 - before.0, after.1 - before.1), sched)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|h| h.join().expect("thread")).collect();
        for round in 0..rounds {
            let start = results.iter().map(|r| r.0[round].0).min().unwrap_or_else(Instant::now);
            let end = results.iter().map(|r| r.0[round].1).max().unwrap_or(start);
            let wall: Duration = end - start;
            println!("round {round}: {:.1} ns per pair (wall, 2 threads)", wall.as_secs_f64() * 1e9 / (2 * PAIRS) as f64);
        }
        let wall: Duration = results.iter().filter_map(|r| r.0.last().map(|l| l.1)).max().unwrap_or_else(Instant::now)
            - results.iter().filter_map(|r| r.0.first().map(|f| f.0)).min().unwrap_or_else(Instant::now);
        let pairs = (2 * PAIRS * rounds) as f64;
        for (t, r) in results.iter().enumerate() {
            let (ran, waited) = r.2;
            println!(
                "thread {t}: on a CPU {:.1} ns per pair of the run, waiting for one {:.1} ns ({:.0}% and {:.0}% of the {:.1} ms of the rounds)",
                ran as f64 / pairs,
                waited as f64 / pairs,
                ran as f64 / wall.as_nanos() as f64 * 100.0,
                waited as f64 / wall.as_nanos() as f64 * 100.0,
                wall.as_secs_f64() * 1e3
            );
        }
        results.into_iter().map(|r| r.1).collect::<Vec<_>>()
    });
    let pairs = (2 * PAIRS * rounds) as f64;
    for (t, (voluntary, involuntary)) in switches.iter().enumerate() {
        println!(
            "thread {t}: {voluntary} voluntary ({:.4} per pair), {involuntary} involuntary context switches",
            *voluntary as f64 / pairs * 2.0
        );
    }
}

/// This thread's time on a CPU and time waiting in a run queue for one, in nanoseconds
/// (from `/proc/thread-self/schedstat` on Linux; zeros where the kernel does not tell).
fn schedstat() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut fields = stat.split_whitespace().map(|v| v.parse().unwrap_or(0));
    (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
}

/// This thread's (voluntary, involuntary) context switches so far; zeros where the kernel
/// does not tell.
fn context_switches() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("voluntary_ctxt_switches:"), field("nonvoluntary_ctxt_switches:"))
}
