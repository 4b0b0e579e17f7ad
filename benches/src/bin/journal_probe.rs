//! The journal's cost on the calling thread, for instruction counts: `N` x 100,000
//! enqueues, each moving one of 64 queued calls to the other of two queues (the HTTP
//! benchmark's workload), on an engine without a journal (`none`) or with the store's
//! (`store`: SQLite in a temporary directory, `Fsync::Periodic`, its writer on its own
//! thread). Nobody waits for durability; the store is flushed once at the end.
//!
//! `valgrind --tool=callgrind --separate-threads=yes target/release/journal_probe N MODE`
//! for N = 1 and 2: the difference of the main thread's totals / 100,000 is one enqueue.

use waitline::{DialParams, Engine, EnqueueParams};
use waitline_store::engine::StoreJournal;
use waitline_store::{Fsync, Options, Store};

const CALLS: usize = 64;

// The server's allocator: a record's allocations are part of the cost measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mode = args.next().unwrap_or_else(|| "store".to_owned());
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = (mode == "store").then(|| {
        Store::open(dir.path(), Options { fsync: Fsync::Periodic, ..Options::default() }).expect("open")
    });
    let engine = match &store {
        Some(store) => Engine::builder().journal(StoreJournal::with_snapshot_every(store.clone(), 0)).build(),
        None => Engine::default(),
    };
    let tenant = engine.default_tenant();
    let ids: Vec<String> = (0..CALLS)
        .map(|_| {
            tenant.dial(&DialParams::new("+15550001", "+15550002", "bench")).expect("dial").call_control_id
        })
        .collect();
    let queues = [EnqueueParams::new("bench-0"), EnqueueParams::new("bench-1")];
    for k in 0..n * 100_000 {
        tenant.enqueue(&ids[k % CALLS], &queues[(k / CALLS) % 2]).expect("enqueue");
    }
    if let Some(store) = &store {
        store.flush().expect("flush");
    }
}
