//! Multi-threaded stress: threads enqueue, bridge, leave, hang up and expire thousands of
//! calls across queues, of one tenant or of several (threads sharing a tenant and threads
//! on different ones), while another checks the invariants (taking each tenant's lock in
//! turn). At the end every call is accounted for exactly once, every enqueue has exactly one
//! matching dequeue or is still queued, each tenant's events came in the order of its
//! sequence, and no tenant sees another's calls.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use waitline::*;

const THREADS: usize = 4;
const CALLS_PER_THREAD: usize = 300;
const OPS_PER_THREAD: usize = 20_000;
const QUEUES: usize = 8;

/// xorshift: deterministic per thread, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn concurrent_commands_lose_and_duplicate_nothing() {
    run(&["default"]);
}

#[test]
fn tenants_on_several_threads_stay_apart() {
    // 4 threads on 3 tenants: two threads share the first, the others have one each.
    run(&["a", "b", "c"]);
}

fn run(names: &[&str]) {
    let (clock, hand) = Clock::manual(common::START);
    let engine = Engine::builder()
        .clock(clock)
        .event_capacity(1 << 22)
        .ended_call_retention(Duration::from_secs(1_000_000))
        // Small, so that forgetting ended calls past the cap runs alongside everything else.
        .max_ended_calls_per_tenant(8)
        .build();
    let mut events = engine.subscribe();
    let tenants: Vec<Tenant> = names.iter().map(|n| engine.tenant(n)).collect();
    // Each tenant's pool: CALLS_PER_THREAD for each thread working on it.
    let pools: Vec<Arc<Vec<String>>> = tenants
        .iter()
        .enumerate()
        .map(|(i, tenant)| {
            let threads = (0..THREADS).filter(|w| w % tenants.len() == i).count();
            Arc::new(
                (0..threads * CALLS_PER_THREAD)
                    .map(|_| tenant.dial(&DialParams::new("+1", "+2", "c")).unwrap().call_control_id)
                    .collect(),
            )
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));

    let workers: Vec<_> = (0..THREADS)
        .map(|w| {
            let (tenant, calls) = (tenants[w % tenants.len()].clone(), pools[w % tenants.len()].clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((w as u64 + 1) * 0x1234_5678));
                let mut refused = 0;
                for _ in 0..OPS_PER_THREAD {
                    let id = &calls[rng.below(calls.len())];
                    let q = format!("q{}", rng.below(QUEUES));
                    let r = match rng.below(10) {
                        0..=3 => {
                            let mut p = EnqueueParams::new(q).priority(rng.below(3) as u8);
                            if rng.below(4) == 0 {
                                p = p.max_wait_time_secs(1 + rng.below(5) as u64);
                            }
                            p = p.keep_after_hangup(rng.below(8) == 0);
                            tenant.enqueue(id, &p)
                        }
                        4..=5 => tenant.bridge(id, &BridgeParams::queue(q).park_after_unbridge()),
                        6 => tenant.leave_queue(id, &CommandOptions::default()),
                        7 => tenant.bridge(id, &BridgeParams::call(&calls[rng.below(calls.len())])),
                        8 => tenant.remove_queue_call(&q, &calls[rng.below(calls.len())]),
                        _ => {
                            // Hang up rarely, so the pool stays mostly alive.
                            if rng.below(20) == 0 {
                                tenant.hangup(id, &CommandOptions::default())
                            } else {
                                Ok(())
                            }
                        }
                    };
                    if let Err(e) = r {
                        // Only the documented refusals of these commands.
                        assert!(
                            ["90015", "90018", "90036", "90038", "95001", "95002", "10005", "10033"]
                                .contains(&e.code()),
                            "unexpected {e:?}"
                        );
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();

    // Time moves and the invariants are checked while the workers run.
    let checker = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut checks = 0;
            while !stop.load(Ordering::Relaxed) {
                hand.advance(Duration::from_millis(700));
                engine.run_pending_tasks();
                engine.check_invariants().unwrap();
                checks += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            checks
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(checker.join().unwrap() > 0);
    engine.run_pending_tasks();
    engine.check_invariants().unwrap();

    // Tenants never see each other's calls.
    if tenants.len() > 1 {
        for id in pools[0].iter().take(20) {
            assert!(matches!(tenants[1].call(id), Err(Error::CallNotFound)), "{id} seen by another tenant");
        }
    }
    // Replay the events per tenant: its sequence never goes back, and per call enqueues minus
    // dequeues is 1 exactly when it is a member.
    assert_eq!(events.dropped(), 0);
    let mut balances: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for e in events.drain() {
        let seq = last_seq.entry(e.tenant.to_string()).or_default();
        assert!(e.seq() >= *seq, "tenant {}: event of {} after {seq}", e.tenant, e.seq());
        *seq = e.seq();
        let Some(s) = e.kind.subject() else { continue };
        let id = s.call.call_control_id.to_string();
        let balance = balances.entry(e.tenant.to_string()).or_default();
        match e.kind {
            EventKind::CallEnqueued { .. } => *balance.entry(id).or_default() += 1,
            EventKind::CallDequeued { .. } => {
                let b = balance.entry(id.clone()).or_default();
                *b -= 1;
                assert!(*b >= 0, "{id} dequeued more often than enqueued");
            }
            _ => {}
        }
    }
    for (tenant, calls) in tenants.iter().zip(&pools) {
        assert!(last_seq.get(tenant.name()).copied().unwrap_or(0) <= tenant.last_seq());
        check_tenant(tenant, calls, &balances.remove(tenant.name()).unwrap_or_default());
    }
}

/// The accounting of one tenant at the end.
fn check_tenant(tenant: &Tenant, calls: &[String], balance: &HashMap<String, i64>) {
    let mut members = 0;
    for q in 0..QUEUES {
        let name = format!("q{q}");
        let Ok(info) = tenant.queue(&name) else { continue };
        let mut listed = Vec::new();
        let mut page = 1;
        loop {
            let p = tenant.queue_calls(&name, PageRequest::new(page, 250)).unwrap();
            listed.extend(p.data.into_iter().map(|c| (c.call_control_id, c.queue_position)));
            if page as usize >= p.total_pages {
                break;
            }
            page += 1;
        }
        assert_eq!(listed.len(), info.current_size);
        for (i, (id, pos)) in listed.iter().enumerate() {
            assert_eq!(*pos, i + 1, "positions are dense");
            assert_eq!(
                balance.get(id),
                Some(&1),
                "{id} listed in {name} once, enqueued once more than dequeued"
            );
        }
        members += listed.len();
    }
    // An open enqueue is either a membership, or a dead kept call that the queue API dropped
    // (docs/behaviour.md §3: silently, so without a dequeue event).
    let members_set: std::collections::HashSet<String> = (0..QUEUES)
        .filter_map(|q| tenant.queue_calls(&format!("q{q}"), PageRequest::new(1, 250)).ok())
        .flat_map(|p| p.data.into_iter().map(|c| c.call_control_id))
        .collect();
    // `None`: ended and forgotten (past the cap on kept ended calls).
    let state = |id: &str| match tenant.call(id) {
        Ok(c) => Some(c.state),
        Err(Error::CallNotFound) => None,
        Err(e) => panic!("{id}: {e}"),
    };
    let mut open = 0;
    for (id, b) in balance {
        if *b == 1 {
            open += 1;
            if !members_set.contains(id) {
                assert!(
                    matches!(state(id), None | Some(CallState::Ended)),
                    "{id} has an open enqueue but is in no queue"
                );
                open -= 1;
            }
        }
    }
    assert_eq!(open, members, "every call with an open enqueue is a member of exactly one queue");
    assert!(balance.values().all(|b| *b == 0 || *b == 1));
    let mut by_state: HashMap<Option<CallState>, usize> = HashMap::new();
    for id in calls {
        *by_state.entry(state(id)).or_default() += 1;
    }
    assert!(by_state.get(&Some(CallState::Queued)).copied().unwrap_or(0) <= members);
    let kept_ended =
        calls.iter().filter(|id| !members_set.contains(*id) && state(id) == Some(CallState::Ended)).count();
    assert!(kept_ended <= 8, "{kept_ended} ended calls kept past the cap of 8");
}
