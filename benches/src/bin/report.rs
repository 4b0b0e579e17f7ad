//! The core benchmark report: every table of BENCHMARKS.md's core section, waitline beside
//! the naive baseline in the same run, with the ratio and the target.
//!
//! `cargo run --release -p waitline-benches --bin report [-- --quick] [--only SECTION]`
//!
//! Machines here are shared and noisy: each figure is the best of a few repetitions, and the
//! ratios (both sides measured in the same run) are what count.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use waitline::{BridgeParams, Clock, Engine, EnqueueParams, Tenant, Timestamp};
use waitline_benches::{NaiveEngine, PairFixture, dial, naive_pairs};

struct Scale {
    pairs: usize,
    million: usize,
    samples: usize,
    reps: usize,
}

fn rng(seed: &mut u64) -> usize {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed as usize
}

/// Best (shortest) of `reps` runs of `f`, which returns its own elapsed time.
fn best(reps: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..reps).map(|_| f()).min().unwrap_or_default()
}

fn ns(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

fn row(name: &str, ours: f64, base: f64, unit: &str, ratio: f64, target: &str, met: bool) {
    println!(
        "| {name} | {ours:.1} {unit} | {base:.1} {unit} | {ratio:.2}x | {target} | {} |",
        if met { "yes" } else { "**no**" }
    );
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

/// One row of p50/p99 latencies (nanoseconds) with the ratio of the p50s.
fn latency_row(name: &str, mut ours: Vec<u64>, mut theirs: Vec<u64>, target: f64) {
    ours.sort_unstable();
    theirs.sort_unstable();
    let r = percentile(&theirs, 0.5) as f64 / percentile(&ours, 0.5) as f64;
    println!(
        "| {name} | {} ns / {} ns | {} ns / {} ns | {r:.0}x | >= {target}x | {} |",
        percentile(&ours, 0.5),
        percentile(&ours, 0.99),
        percentile(&theirs, 0.5),
        percentile(&theirs, 0.99),
        if r >= target { "yes" } else { "**no**" }
    );
}

fn engine_pairs(
    f: &PairFixture,
    lanes: std::ops::Range<usize>,
    n: usize,
    max_wait: Option<Duration>,
) -> Duration {
    engine_pairs_then(f, lanes, n, max_wait, |_| {})
}

/// Pairs with `after(k)` run (and timed) after pair `k`. Out of line, as the naive engine's
/// loop: the rest of the report does not change how the loop is compiled.
#[inline(never)]
fn engine_pairs_then(
    f: &PairFixture,
    lanes: std::ops::Range<usize>,
    n: usize,
    max_wait: Option<Duration>,
    mut after: impl FnMut(usize),
) -> Duration {
    let params: Vec<_> = lanes.map(|i| (i, f.params(i, max_wait))).collect();
    let t = Instant::now();
    for k in 0..n {
        let (i, (e, b)) = &params[k % params.len()];
        f.pair(*i, e, b);
        after(k);
    }
    t.elapsed()
}

/// Two threads, each on its own half of the lanes; wall time of the slower.
fn two_threads(run: impl Fn(usize) -> Duration + Sync) -> Duration {
    let barrier = Barrier::new(2);
    let start = std::sync::Mutex::new(None::<Instant>);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|t| {
                let (barrier, run, start) = (&barrier, &run, &start);
                s.spawn(move || {
                    barrier.wait();
                    start
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get_or_insert_with(Instant::now);
                    run(t)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_default()).max().unwrap_or_default()
    })
}

/// The pair rows of the Core v2 targets: one thread with and without an event subscriber,
/// two threads on different tenants and on one tenant, and a deadline on every enqueue.
fn pairs_section(s: &Scale) {
    println!("\n### Enqueue + bridge-from-queue pairs, 100 queues\n");
    println!(
        "| case | waitline | naive | ratio (naive time / waitline time) | target | met |\n|---|---|---|---|---|---|"
    );
    let engine = Engine::default();
    let f = PairFixture::new(&engine, 100);
    let naive = NaiveEngine::default();
    let names: Vec<String> = (0..100).map(|i| format!("queue-{i}")).collect();
    let w1 = best(s.reps, || engine_pairs(&f, 0..100, s.pairs, None));
    let n1 = best(s.reps, || naive_pairs(&naive, &names, s.pairs, 0));
    let r1 = n1.as_secs_f64() / w1.as_secs_f64();
    row(
        "1 thread, no subscriber, per pair",
        ns(w1, s.pairs),
        ns(n1, s.pairs),
        "ns",
        r1,
        ">= 0.67x",
        r1 >= 0.67,
    );

    // The same pairs with a subscriber that takes every event (read in place every 256
    // pairs, in the same thread, so the cost of building, publishing and reading them is all
    // counted).
    let sub_engine = Engine::default();
    let sf = PairFixture::new(&sub_engine, 100);
    let mut events = sub_engine.subscribe();
    let ws = best(s.reps, || {
        engine_pairs_then(&sf, 0..100, s.pairs, None, |k| {
            if k % 256 == 255 || k + 1 == s.pairs {
                while let Some(ev) = events.try_next() {
                    black_box(ev.seq());
                }
            }
        })
    });
    assert_eq!(events.dropped(), 0, "the subscriber must see every event");
    let rs = n1.as_secs_f64() / ws.as_secs_f64();
    row(
        "1 thread, a subscriber draining every event",
        ns(ws, s.pairs),
        ns(n1, s.pairs),
        "ns",
        rs,
        ">= 0.33x (within 3x)",
        rs >= 1.0 / 3.0,
    );

    // 2 threads on different tenants (each its own fixture), each does s.pairs / 2.
    let half = s.pairs / 2;
    let tenants =
        [PairFixture::in_tenant(engine.tenant("t0"), 50), PairFixture::in_tenant(engine.tenant("t1"), 50)];
    let wt = best(s.reps, || two_threads(|t| engine_pairs(&tenants[t], 0..50, half, None)));
    let wt1 = best(s.reps, || engine_pairs(&tenants[0], 0..50, s.pairs, None));
    let scale = wt1.as_secs_f64() / wt.as_secs_f64();
    println!(
        "| waitline 2 threads on 2 tenants vs 1 thread | {:.0} pairs/s | {:.0} pairs/s | {scale:.2}x | >= 1.8x | {} |",
        s.pairs as f64 / wt.as_secs_f64(),
        s.pairs as f64 / wt1.as_secs_f64(),
        if scale >= 1.8 { "yes" } else { "**no**" }
    );
    // 2 threads on one tenant (different queues): they share the tenant's lock.
    let w2 = best(s.reps, || two_threads(|t| engine_pairs(&f, t * 50..t * 50 + 50, half, None)));
    let n2 = best(s.reps, || {
        two_threads(|t| naive_pairs(&naive, &names[t * 50..t * 50 + 50], half, 1_000_000 * (t as u64 + 1)))
    });
    let r2 = n2.as_secs_f64() / w2.as_secs_f64();
    let w2ns = ns(w2, s.pairs);
    row(
        "2 threads, one tenant, per pair (wall)",
        w2ns,
        ns(n2, s.pairs),
        "ns",
        r2,
        "<= 120 ns",
        w2ns <= 120.0,
    );

    let wd = best(s.reps, || engine_pairs(&f, 0..100, s.pairs, Some(Duration::from_secs(3600))));
    let cost = wd.as_secs_f64() / w1.as_secs_f64();
    println!(
        "| deadline on every enqueue (waitline with / without) | {:.1} ns | {:.1} ns | {cost:.2}x slower | <= 1.15x | {} |",
        ns(wd, s.pairs),
        ns(w1, s.pairs),
        if cost <= 1.15 { "yes" } else { "**no**" }
    );
}

struct Big {
    tenant: Tenant,
    ids: Vec<String>,
    naive: NaiveEngine,
}

fn big(n: usize) -> Big {
    let tenant = Engine::default().default_tenant();
    let ids = waitline_benches::fill(&tenant, "big", n);
    let naive = NaiveEngine::default();
    for i in 0..n as u64 {
        naive.enqueue(i, "big");
    }
    Big { tenant, ids, naive }
}

/// The id a caller passes in, brought into cache first: a caller has just read it (from a
/// request, say), and the baseline's integer id costs no memory access either. Without this
/// the timing would include the benchmark's own misses on its table of a million ids.
fn warm(id: &str) -> &str {
    black_box((id.as_bytes().first().copied(), id.as_bytes().last().copied()));
    id
}

fn million_section(s: &Scale, b: &Big) {
    let n = b.ids.len();
    println!("\n### One queue of {n} calls\n");
    println!(
        "| operation | waitline p50 / p99 | naive p50 / p99 | ratio of p50 | target | met |\n|---|---|---|---|---|---|"
    );
    let mut seed = 0x9e37_79b9_u64;
    let ours: Vec<u64> = (0..s.samples)
        .map(|_| {
            let id = warm(&b.ids[rng(&mut seed) % n]);
            let t = Instant::now();
            black_box(b.tenant.queue_position("big", id).ok());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    let theirs: Vec<u64> = (0..(s.samples / 100).max(20))
        .map(|_| {
            let id = (rng(&mut seed) % n) as u64;
            let t = Instant::now();
            black_box(b.naive.position(id));
            t.elapsed().as_nanos() as u64
        })
        .collect();
    latency_row("position of a random call", ours, theirs, 1000.0);
    // Remove a random member and put a call back at the end, so the size stays.
    let p = EnqueueParams::new("big");
    let ours: Vec<u64> = (0..s.samples / 10)
        .map(|_| {
            let id = warm(&b.ids[rng(&mut seed) % n]);
            let t = Instant::now();
            let removed = b.tenant.remove_queue_call("big", id).is_ok();
            let e = t.elapsed().as_nanos() as u64;
            if removed {
                b.tenant.enqueue(id, &p).ok();
            }
            e
        })
        .collect();
    let theirs: Vec<u64> = (0..(s.samples / 100).max(20))
        .map(|_| {
            let id = (rng(&mut seed) % n) as u64;
            let t = Instant::now();
            let removed = b.naive.remove(id);
            let e = t.elapsed().as_nanos() as u64;
            if removed {
                b.naive.enqueue(id, "big");
            }
            e
        })
        .collect();
    latency_row("remove a random call from the middle", ours, theirs, 1000.0);
}

fn expiry_section(n: usize) {
    let (clock, hand) = Clock::manual(Timestamp::from_secs(1_767_225_600));
    let engine = Engine::builder().clock(clock).build();
    let tenant = engine.default_tenant();
    let p = EnqueueParams::new("expiring").max_size(1_000_000).max_wait_time_secs(60);
    for _ in 0..n {
        tenant.enqueue(&dial(&tenant), &p).ok();
    }
    hand.advance(Duration::from_secs(60));
    let t = Instant::now();
    let fired = engine.run_pending_tasks();
    let e = t.elapsed();
    let rate = fired as f64 / e.as_secs_f64();
    println!("\n### Expiring due calls\n");
    println!("| case | waitline | target | met |\n|---|---|---|---|");
    println!(
        "| {fired} calls due at once, one maintenance run | {:.2} M calls/s ({:.0} ns each) | >= 10 M/s | {} |",
        rate / 1e6,
        ns(e, fired.max(1)),
        if rate >= 10e6 { "yes" } else { "**no**" }
    );
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// What the engine holds per queued call: resident memory grows by its records, ids,
/// identities, order and indexes. The ids are not kept here (a caller keeps its own ids
/// wherever it likes): a table of a million `String`s would add ~72 bytes a call (24 of
/// `String`, 48 on the heap) that are the benchmark's, not the engine's.
fn memory_section(n: usize) {
    let before = resident_bytes();
    let tenant = Engine::default().default_tenant();
    let mut id_len = 0;
    waitline_benches::fill_each(&tenant, "mem", n, |id| id_len = id.len());
    let after = resident_bytes();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    let strings = id_len + "+15550001".len() + "+15550002".len() + "bench".len();
    println!("\n### Memory per queued call at {n}\n");
    println!(
        "| resident memory per queued call (call record + queue member + indexes; the benchmark keeps no ids) | bytes of the strings it holds (id, from, to, connection) | target | met |\n|---|---|---|---|"
    );
    println!("| {per:.0} B | {strings} B | <= 400 B | {} |", if per <= 400.0 { "yes" } else { "**no**" });
    drop(tenant);
}

fn growth_section(quick: bool) {
    println!("\n### Growth: cost per operation as queues grow\n");
    println!("| setting | pair (enqueue + bridge) | position | remove + re-enqueue |\n|---|---|---|---|");
    let lengths: &[usize] = if quick { &[1_000, 10_000] } else { &[1_000, 100_000, 1_000_000] };
    for &len in lengths {
        let (pair, pos, rem) = measure_at(1, len);
        println!("| 1 queue of {len} | {pair:.0} ns | {pos:.0} ns | {rem:.0} ns |");
    }
    let counts: &[usize] = if quick { &[1, 100] } else { &[1, 100, 10_000] };
    for &queues in counts {
        let (pair, pos, rem) = measure_at(queues, 10);
        println!("| {queues} queues of 10 | {pair:.0} ns | {pos:.0} ns | {rem:.0} ns |");
    }
}

/// Per-operation costs with `queues` queues of `len` calls each.
fn measure_at(queues: usize, len: usize) -> (f64, f64, f64) {
    let tenant = Engine::default().default_tenant();
    let names: Vec<String> = (0..queues).map(|q| format!("g{q}")).collect();
    let members: Vec<Vec<String>> = names.iter().map(|n| waitline_benches::fill(&tenant, n, len)).collect();
    let agents: Vec<String> = (0..queues).map(|_| dial(&tenant)).collect();
    let ops = 20_000;
    let mut seed = 42u64;
    // Pair: the call the agent holds goes back to the end, the agent takes the head.
    let mut held: Vec<Option<String>> = vec![None; queues];
    let t = Instant::now();
    for k in 0..ops {
        let q = k % queues;
        if let Some(h) = held[q].take() {
            tenant.enqueue(&h, &EnqueueParams::new(names[q].clone()).max_size(1_000_000)).ok();
        }
        tenant.bridge(&agents[q], &BridgeParams::queue(names[q].clone()).park_after_unbridge()).ok();
        held[q] = tenant.call(&agents[q]).ok().and_then(|c| c.bridged_with);
    }
    let pair = ns(t.elapsed(), ops);
    // The rotation changed who is queued; sample members that are.
    let queued: Vec<(usize, &String)> =
        members.iter().enumerate().flat_map(|(q, ids)| ids.iter().map(move |id| (q, id))).collect();
    let t = Instant::now();
    for _ in 0..ops {
        let (q, id) = queued[rng(&mut seed) % queued.len()];
        black_box(tenant.queue_position(&names[q], id).ok());
    }
    let pos = ns(t.elapsed(), ops);
    let t = Instant::now();
    for _ in 0..ops {
        let (q, id) = queued[rng(&mut seed) % queued.len()];
        if tenant.remove_queue_call(&names[q], id).is_ok() {
            tenant.enqueue(id, &EnqueueParams::new(names[q].clone()).max_size(1_000_000)).ok();
        }
    }
    let rem = ns(t.elapsed(), ops);
    (pair, pos, rem)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let s = if quick {
        Scale { pairs: 20_000, million: 20_000, samples: 2_000, reps: 1 }
    } else {
        Scale { pairs: 1_000_000, million: 1_000_000, samples: 100_000, reps: 3 }
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!(
        "## Core (criterion-free report)\n\nCPU: {cpu}, {} cores. Build: release.",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    // `--only SECTION` (memory, pairs, million, expiry, growth) runs one section.
    let args: Vec<String> = std::env::args().collect();
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).map(String::as_str);
    let run = |section: &str| only.is_none_or(|o| o == section);
    // First, while nothing has been allocated and freed yet, so resident memory grows by what
    // the calls take.
    if run("memory") {
        memory_section(s.million);
    }
    if run("pairs") {
        pairs_section(&s);
    }
    if run("million") {
        let b = big(s.million);
        million_section(&s, &b);
        drop(b);
    }
    if run("expiry") {
        expiry_section(s.million);
    }
    if run("growth") {
        growth_section(quick);
    }
}
