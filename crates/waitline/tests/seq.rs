//! The per-tenant sequence: every state-changing command (and timer firing) of a tenant
//! takes the next number, its events carry it, rejected commands and reads take none, and
//! tenants count independently.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use waitline::*;

fn dial(t: &Tenant) -> String {
    t.dial(&DialParams::new("+1", "+2", "app")).unwrap().call_control_id
}

/// Runs `f` and returns by how much it moved the tenant's sequence, and the sequence
/// numbers its events carry.
fn step<R>(f: &mut Fixture, run: impl FnOnce(&Tenant) -> R) -> (u64, Vec<u64>) {
    let before = f.t.last_seq();
    run(&f.t);
    let seqs = f.take_events().iter().map(Event::seq).collect();
    (f.t.last_seq() - before, seqs)
}

#[test]
fn each_state_change_takes_the_next_number_and_its_events_share_it() {
    let mut f = Fixture::new();
    assert_eq!(f.t.last_seq(), 0);
    let (d, seqs) = step(&mut f, dial);
    assert_eq!((d, seqs), (1, vec![1, 1]), "dial: initiated and answered share number 1");
    let a = {
        let a = dial(&f.t);
        f.take_events();
        a
    };
    assert_eq!(f.t.last_seq(), 2);
    let b = dial(&f.t);
    f.take_events();
    // enqueue into a new queue: queue.created and call.enqueued, one number.
    let (d, seqs) = step(&mut f, |t| t.enqueue(&a, &EnqueueParams::new("q")).unwrap());
    assert_eq!((d, seqs), (1, vec![4, 4]));
    // bridge from the queue: dequeued and two bridged events, one number.
    let (d, seqs) = step(&mut f, |t| t.bridge(&b, &BridgeParams::queue("q")).unwrap());
    assert_eq!((d, seqs), (1, vec![5, 5, 5]));
    // A change without events still takes a number.
    let (d, seqs) = step(&mut f, |t| t.create_queue("explicit", None).unwrap());
    assert_eq!((d, seqs.len()), (1, 1));
    let (d, seqs) = step(&mut f, |t| t.update_queue("explicit", 5).unwrap());
    assert_eq!((d, seqs), (1, vec![]));
    // hangup of a bridged leg: both legs end, one number.
    let (d, seqs) = step(&mut f, |t| t.hangup(&a, &none()).unwrap());
    assert_eq!(d, 1);
    assert_eq!(seqs, vec![8, 8], "two hangups");
    assert_eq!(f.t.last_seq(), 8);
}

/// A command with what it must answer.
type Check<'a> = Box<dyn Fn(&Tenant) -> bool + 'a>;

#[test]
fn rejected_commands_and_reads_take_no_number() {
    let mut f = Fixture::with(Engine::builder().max_live_calls_per_tenant(2).max_queues_per_tenant(1));
    let a = dial(&f.t);
    let b = dial(&f.t);
    f.t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
    f.take_events();
    let seq = f.t.last_seq();
    let refused: Vec<Check<'_>> = vec![
        Box::new(|t| t.dial(&DialParams::new("+1", "+2", "app")).is_err()), // live-call cap
        Box::new(|t| t.enqueue("nope", &EnqueueParams::new("q")).is_err()),
        Box::new(|t| t.enqueue(&a, &EnqueueParams::new("q")).is_err()), // already there
        Box::new(|t| t.enqueue(&b, &EnqueueParams::new("other")).is_err()), // queue cap
        Box::new(|t| t.leave_queue(&b, &none()).is_err()),
        Box::new(|t| t.bridge(&b, &BridgeParams::queue("empty")).is_err()),
        Box::new(|t| t.bridge(&b, &BridgeParams::call(&b)).is_err()),
        Box::new(|t| t.delete_queue("q").is_err()), // not empty
        Box::new(|t| t.create_queue("q", None).is_err()),
        Box::new(|t| t.update_queue("nope", 3).is_err()),
        Box::new(|t| t.remove_queue_call("q", &b).is_err()),
        Box::new(|t| t.transfer(&a, &TransferParams::new("+3")).is_err()), // live-call cap
        Box::new(|t| t.call(&a).is_ok()),
        Box::new(|t| t.queue("q").is_ok()),
        Box::new(|t| t.queues(PageRequest::new(1, 10)).is_ok()),
        Box::new(|t| t.queue_calls("q", PageRequest::new(1, 10)).is_ok()),
        Box::new(|t| t.queue_position("q", &a).is_ok()),
    ];
    for (i, cmd) in refused.iter().enumerate() {
        assert!(cmd(&f.t), "case {i} answered as expected");
        assert_eq!(f.t.last_seq(), seq, "case {i} took no number");
    }
    assert!(f.take_events().is_empty());
    // A repeated command id is answered with success and changes nothing.
    let opts = CommandOptions { command_id: Some("once".into()), client_state: None };
    f.t.leave_queue(&a, &opts).unwrap();
    assert_eq!(f.t.last_seq(), seq + 1);
    f.t.leave_queue(&a, &opts).unwrap();
    assert_eq!(f.t.last_seq(), seq + 1);
}

#[test]
fn tenants_count_independently() {
    let (clock, _hand) = Clock::manual(START);
    let engine = Engine::builder().clock(clock).build();
    let mut events = engine.subscribe();
    let (x, y) = (engine.tenant("x"), engine.tenant("y"));
    for _ in 0..3 {
        dial(&x);
    }
    dial(&y);
    assert_eq!((x.last_seq(), y.last_seq()), (3, 1));
    let mut by_tenant: HashMap<String, Vec<u64>> = HashMap::new();
    for e in events.drain() {
        by_tenant.entry(e.tenant.to_string()).or_default().push(e.seq());
    }
    assert_eq!(by_tenant["x"], [1, 1, 2, 2, 3, 3]);
    assert_eq!(by_tenant["y"], [1, 1]);
}

#[test]
fn each_timer_firing_that_changes_state_takes_its_own_number() {
    let mut f = Fixture::with(Engine::builder().queue_idle_ttl(Duration::from_secs(10)));
    let (a, b) = (f.dial(), f.dial());
    f.t.enqueue(&a, &EnqueueParams::new("q").max_wait_time_secs(5)).unwrap();
    f.t.enqueue(&b, &EnqueueParams::new("q").max_wait_time_secs(5)).unwrap();
    f.take_events();
    let seq = f.t.last_seq();
    // Two deadlines at the same instant: two firings, two numbers, in enqueue order.
    f.advance(5);
    let got: Vec<_> = f.take_events().iter().map(|e| (e.event_type(), e.seq())).collect();
    assert_eq!(got, [("call.dequeued", seq + 1), ("call.dequeued", seq + 2)]);
    // A command that finds the idle timer due fires it first, with its own number.
    f.clock.advance(Duration::from_secs(10));
    let info = f.t.call(&a).unwrap();
    assert_eq!(info.state, CallState::Active);
    let got: Vec<_> = f.take_events().iter().map(|e| (e.event_type(), e.seq())).collect();
    assert_eq!(got, [("queue.deleted", seq + 3)]);
    assert_eq!(f.t.last_seq(), seq + 3, "the read itself took none");
    assert_eq!(f.engine.run_pending_tasks(), 0);
}

#[test]
fn numbers_are_dense_and_increasing_under_concurrency() {
    const THREADS: usize = 4;
    const CALLS: usize = 200;
    let engine = Engine::builder().event_capacity(1 << 20).build();
    let mut events = engine.subscribe();
    let names = ["a", "b"];
    std::thread::scope(|s| {
        for w in 0..THREADS {
            let t = engine.tenant(names[w % names.len()]);
            s.spawn(move || {
                for i in 0..CALLS {
                    let c = dial(&t);
                    let q = format!("q{}", i % 3);
                    t.enqueue(&c, &EnqueueParams::new(q.clone())).unwrap();
                    if i % 2 == 0 {
                        t.leave_queue(&c, &none()).unwrap();
                    }
                    assert!(t.leave_queue("missing", &none()).is_err());
                    t.hangup(&c, &none()).unwrap();
                }
            });
        }
    });
    engine.check_invariants().unwrap();
    let mut last: HashMap<String, u64> = HashMap::new();
    for e in events.drain() {
        let prev = last.entry(e.tenant.to_string()).or_default();
        // A tenant's events arrive in its order: the same number again (same command) or
        // the next one (no gaps: every command here makes events).
        assert!(e.seq() == *prev || e.seq() == *prev + 1, "{} after {prev}", e.seq());
        *prev = e.seq();
    }
    for name in names {
        let t = engine.tenant(name);
        assert_eq!(last[name], t.last_seq());
        // Per call: dial, enqueue, (leave,) hangup; half leave first. Queues are made once.
        let calls = (THREADS / names.len() * CALLS) as u64;
        assert_eq!(t.last_seq(), calls * 3 + calls / 2);
    }
}

/// Four threads on one tenant, each running enqueue+bridge pairs on lanes of its own as
/// fast as it can (the contended lock's every path: taken at once, after backing off, after
/// parking): no command is lost or run twice, the numbers are dense and in order, each
/// lane's caller was enqueued and bridged exactly once a pair, and the invariants hold.
#[test]
fn one_tenant_under_contending_threads_loses_and_repeats_nothing() {
    const THREADS: usize = 4;
    const LANES: usize = 3;
    const PAIRS: usize = 3_000;
    let engine = Engine::builder().event_capacity(1 << 22).build();
    let mut events = engine.subscribe();
    let t = engine.tenant("one");
    // Per thread, per lane: a caller, an agent parked after each unbridge, a queue.
    let lanes: Vec<Vec<(String, String, String)>> = (0..THREADS)
        .map(|w| (0..LANES).map(|l| (dial(&t), dial(&t), format!("q{w}-{l}"))).collect())
        .collect();
    let start = t.last_seq();
    std::thread::scope(|s| {
        for lanes in &lanes {
            let t = &t;
            s.spawn(move || {
                for i in 0..PAIRS {
                    let (caller, agent, queue) = &lanes[i % LANES];
                    t.enqueue(caller, &EnqueueParams::new(queue.clone())).unwrap();
                    t.bridge(agent, &BridgeParams::queue(queue.clone()).park_after_unbridge()).unwrap();
                }
            });
        }
    });
    engine.check_invariants().unwrap();
    // Each pair is two changes: the enqueue (which unbridges the caller from its agent
    // after the first pair) and the bridge.
    assert_eq!(t.last_seq() - start, (THREADS * PAIRS * 2) as u64);
    let mut last = start;
    let mut enqueued: HashMap<String, usize> = HashMap::new();
    let mut bridged: HashMap<String, usize> = HashMap::new();
    for e in events.drain() {
        if e.seq() <= start {
            continue;
        }
        assert!(e.seq() == last || e.seq() == last + 1, "{} after {last}", e.seq());
        last = e.seq();
        match &e.kind {
            EventKind::CallEnqueued { subject, .. } => {
                *enqueued.entry(subject.call.call_control_id.to_string()).or_default() += 1;
            }
            EventKind::CallBridged(subject) => {
                *bridged.entry(subject.call.call_control_id.to_string()).or_default() += 1;
            }
            _ => {}
        }
    }
    assert_eq!(last, t.last_seq());
    for (caller, agent, _) in lanes.iter().flatten() {
        assert_eq!(enqueued.get(caller), Some(&(PAIRS / LANES)), "enqueues of {caller}");
        // A bridge reports both legs.
        assert_eq!(bridged.get(caller), Some(&(PAIRS / LANES)), "bridges of {caller}");
        assert_eq!(bridged.get(agent), Some(&(PAIRS / LANES)), "bridges of {agent}");
    }
}

/// Event ids are derived from the tenant, the sequence number and the event's place in its
/// command (a UUID of version 8): every engine that makes the same changes makes the same
/// ids, and they are unique.
#[test]
fn event_ids_are_derived_the_same_in_every_engine() {
    let run = || {
        let engine = Engine::default();
        let mut events = engine.subscribe();
        for tenant in ["acme", "globex"] {
            let t = engine.tenant(tenant);
            let mut p = DialParams::new("+1", "+2", "app");
            p.call_control_id = Some("leg-a".into());
            let a = t.dial(&p).unwrap().call_control_id;
            let b = dial(&t);
            t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
            t.bridge(&b, &BridgeParams::queue("q")).unwrap();
            t.hangup(&a, &CommandOptions::default()).unwrap();
        }
        events.drain().iter().map(|e| (e.seq(), e.id)).collect::<Vec<_>>()
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second);
    let ids: std::collections::HashSet<_> = first.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), first.len(), "unique");
    assert!(first.iter().all(|(_, id)| id.get_version_num() == 8));
    assert!(first.iter().all(|(seq, id)| id.as_u64_pair().1 & ((1 << 62) - 1) == *seq));
}
