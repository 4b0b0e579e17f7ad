//! First core benchmarks (issue 2): enqueue+bridge pairs, and position / removal at
//! 1,000,000 queued calls, each beside the naive baseline in the same run.
//!
//! `cargo bench -p waitline-benches --bench core`

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use waitline::Engine;
use waitline_benches::{NaiveEngine, PairFixture, fill};

const QUEUES: usize = 100;
const MILLION: usize = 1_000_000;

fn rng(seed: &mut u64) -> usize {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed as usize
}

fn pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("enqueue_bridge_pair_100_queues");
    g.throughput(Throughput::Elements(1));
    let engine = Engine::default();
    let f = PairFixture::new(&engine, QUEUES);
    let params: Vec<_> = (0..QUEUES).map(|i| f.params(i, None)).collect();
    let mut i = 0;
    g.bench_function("waitline", |b| {
        b.iter(|| {
            i = (i + 1) % QUEUES;
            f.pair(i, &params[i].0, &params[i].1);
        });
    });
    let naive = NaiveEngine::default();
    let names: Vec<String> = (0..QUEUES).map(|i| format!("queue-{i}")).collect();
    let mut i = 0;
    g.bench_function("naive", |b| {
        b.iter(|| {
            i = (i + 1) % QUEUES;
            naive.enqueue(i as u64, &names[i]);
            black_box(naive.pop(&names[i]));
        });
    });
    g.finish();
}

/// One queue of a million calls in each engine, built only if a benchmark that needs it runs.
struct Million {
    tenant: waitline::Tenant,
    ids: Vec<String>,
    naive: NaiveEngine,
}

fn million() -> &'static Million {
    static FIXTURE: OnceLock<Million> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tenant = Engine::default().default_tenant();
        let ids = fill(&tenant, "big", MILLION);
        let naive = NaiveEngine::default();
        for n in 0..MILLION as u64 {
            naive.enqueue(n, "big");
        }
        Million { tenant, ids, naive }
    })
}

fn at_a_million(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_queue_of_1M");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    g.bench_function("position/waitline", |b| {
        let Million { tenant, ids, .. } = million();
        b.iter(|| black_box(tenant.queue_position("big", &ids[rng(&mut seed) % MILLION]).ok()));
    });
    g.bench_function("position/naive_scan", |b| {
        let naive = &million().naive;
        b.iter(|| black_box(naive.position((rng(&mut seed) % MILLION) as u64)));
    });
    // Remove a random member, then put a call back at the end, so the size stays 1M.
    g.bench_function("remove_middle/waitline", |b| {
        let Million { tenant, ids, .. } = million();
        let p = waitline::EnqueueParams::new("big");
        b.iter_batched(
            || ids[rng(&mut seed) % MILLION].clone(),
            |id| {
                if tenant.remove_queue_call("big", &id).is_ok() {
                    tenant.enqueue(&id, &p).ok();
                }
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("remove_middle/naive", |b| {
        let naive = &million().naive;
        b.iter_batched(
            || (rng(&mut seed) % MILLION) as u64,
            |id| {
                if naive.remove(id) {
                    naive.enqueue(id, "big");
                }
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, pairs, at_a_million);
criterion_main!(benches);
