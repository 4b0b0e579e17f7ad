//! A fixed workload for profilers: `ROUNDS` x 100,000 enqueue+bridge pairs over 100 queues.
//! Under `valgrind --tool=callgrind` it gives instruction counts that do not depend on how
//! busy the machine is (see BENCHMARKS.md for the command).
//!
//! `cargo run --release -p waitline-benches --bin pair_probe -- [ROUNDS] [sub|owned|none|deadline|naive] [QUEUES]`
//!
//! `QUEUES` (default 100) spreads the pairs over that many queues: with 1, every line a pair
//! touches stays in the first-level cache, so the time against the default's says how much
//! of a pair is memory and how much is the instructions themselves.
//!
//! With `sub`, an event subscriber takes every event, read in place (`Subscription::try_next`)
//! on the same thread every 256 pairs (as in the report's subscriber row); with `owned`, the
//! same as owned `Event`s (`Subscription::try_recv`, what the server's webhooks and streams
//! read). With `deadline`, no subscriber, and every enqueue carries `max_wait` of 60 s (as
//! the report's deadline row): the difference with `none` is what a deadline costs a pair.
//! With `naive`, no subscriber, and each round of waitline's pairs is followed by a round of
//! the naive engine's (the report's baseline) in the same process: the host's slow and fast
//! phases (tens of milliseconds each here) then fall on both alike, and the ratio of the
//! best rounds and the median of the rounds' ratios are printed at the end.

use std::time::Instant;

const PAIRS: usize = 100_000;
const DEFAULT_QUEUES: usize = 100;
/// The deadline of every enqueue in `deadline` mode, as in the report's deadline row.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mode = args.next();
    let owned = mode.as_deref() == Some("owned");
    let subscribed = owned || mode.as_deref() == Some("sub");
    let max_wait = (mode.as_deref() == Some("deadline")).then_some(MAX_WAIT);
    let versus_naive = mode.as_deref() == Some("naive");
    let queues: usize = args.next().and_then(|s| s.parse().ok()).filter(|&q| q > 0).unwrap_or(DEFAULT_QUEUES);
    let engine = waitline::Engine::default();
    let f = waitline_benches::PairFixture::new(&engine, queues);
    let params: Vec<_> = (0..queues).map(|i| f.params(i, max_wait)).collect();
    let mut events = subscribed.then(|| engine.subscribe());
    let mut seen = 0usize;
    let mut versus = versus_naive.then(|| Versus::new(&f));
    for round in 0..rounds {
        let t = Instant::now();
        for n in 0..PAIRS {
            let i = n % queues;
            f.pair(i, &params[i].0, &params[i].1);
            if let Some(sub) = events.as_mut().filter(|_| n % 256 == 255 || n + 1 == PAIRS) {
                seen += drain(sub, owned);
            }
        }
        let ours = t.elapsed() / PAIRS as u32;
        match versus.as_mut() {
            Some(v) => v.round(round, ours),
            None => println!("round {round}: {ours:?} per pair"),
        }
    }
    if let Some(v) = &versus {
        v.print();
    }
    if let Some(sub) = &events {
        assert_eq!(sub.dropped(), 0, "the subscriber must see every event");
        println!("{seen} events");
    }
}

/// The naive engine's rounds, each run after one of waitline's (`naive` mode). Out of line,
/// as `drain`: the loop of pairs, into which the engine's commands are inlined, is then the
/// same in every mode (more code in `main` changes how the compiler lays out the pair:
/// +68 instructions a pair when this was inlined).
struct Versus {
    naive: waitline_benches::NaiveEngine,
    names: Vec<String>,
    /// (waitline, naive) seconds a pair, per round.
    rounds: Vec<(f64, f64)>,
}

impl Versus {
    #[inline(never)]
    fn new(f: &waitline_benches::PairFixture) -> Self {
        let names = f.lanes.iter().map(|lane| lane.2.clone()).collect();
        Self { naive: waitline_benches::NaiveEngine::default(), names, rounds: Vec::new() }
    }

    /// Runs the naive engine's round after waitline's round `round`, which took `ours` a pair.
    #[inline(never)]
    fn round(&mut self, round: usize, ours: std::time::Duration) {
        let theirs = waitline_benches::naive_pairs(&self.naive, &self.names, PAIRS, 0) / PAIRS as u32;
        println!("round {round}: {ours:?} per pair, naive {theirs:?}");
        self.rounds.push((ours.as_secs_f64(), theirs.as_secs_f64()));
    }

    /// The best rounds of both engines, their ratio (naive time / waitline time, as the
    /// report's pair row) and the median of the rounds' own ratios.
    #[inline(never)]
    fn print(&self) {
        let best = |pick: fn(&(f64, f64)) -> f64| self.rounds.iter().map(pick).fold(f64::INFINITY, f64::min);
        let (ours, theirs) = (best(|r| r.0), best(|r| r.1));
        let mut ratios: Vec<f64> = self.rounds.iter().map(|(o, t)| t / o).collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "best rounds: waitline {:.1} ns, naive {:.1} ns, {:.2}x; median of the rounds' ratios {:.2}x",
            ours * 1e9,
            theirs * 1e9,
            theirs / ours,
            ratios[ratios.len() / 2]
        );
    }
}

/// Reads every waiting event (in place, or as owned `Event`s); returns how many. Out of
/// line, so that the loop of pairs is the same with either reader.
#[inline(never)]
fn drain(sub: &mut waitline::Subscription, owned: bool) -> usize {
    let mut seen = 0;
    if owned {
        while let Some(ev) = sub.try_recv() {
            seen += usize::from(ev.seq() > 0);
        }
    } else {
        while let Some(ev) = sub.try_next() {
            seen += usize::from(ev.seq() > 0);
        }
    }
    seen
}
