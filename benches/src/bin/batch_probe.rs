//! A fixed workload for profilers: `Tenant::enqueue_many` of N calls dialled just before into
//! one queue, as the Python benchmark's batch row does (a manual clock, no subscriber).
//! Under `valgrind --tool=callgrind` run it with `N 0` (dial only) and `N 1` (dial, then the
//! batch): the difference of the two totals divided by N is the batch's instructions per id
//! (see BENCHMARKS.md).
//!
//! Or one run, `N 1`, with `--toggle-collect='*batch_probe::batch*'`: the batch alone.
//!
//! `cargo run --release -p waitline-benches --bin batch_probe -- [N] [0|1] [ROUNDS]`

use std::time::Instant;

use waitline::{BatchError, Clock, DialParams, Engine, EnqueueParams, Tenant, Timestamp};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let enqueue = args.next().is_none_or(|a| a != "0");
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut params = EnqueueParams::new("batch");
    params.max_size = Some(1_000_000);
    for round in 0..rounds {
        let (clock, _hand) = Clock::manual(Timestamp::from_secs(1_767_225_600));
        let engine = Engine::builder().clock(clock).build();
        let tenant = engine.default_tenant();
        let dial = DialParams::new("1", "2", "bench");
        let ids: Vec<String> = (0..n).map(|_| tenant.dial(&dial).expect("dial").call_control_id).collect();
        if enqueue {
            let t = Instant::now();
            assert_eq!(batch(&tenant, &ids, &params), Ok(n));
            println!("round {round}: {:?} per id", t.elapsed() / u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
}

/// The batch, out of line: what `--toggle-collect` names.
#[inline(never)]
fn batch(tenant: &Tenant, ids: &[String], params: &EnqueueParams) -> Result<usize, BatchError> {
    tenant.enqueue_many(ids, params)
}
