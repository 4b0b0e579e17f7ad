//! Events as they are delivered: read in place (`Subscription::try_next`, `EventRef`) they
//! say exactly what the owned `Event`s say, whatever the mix of tenants, queues, calls and
//! subscribers; a tenant nobody listens to makes none; subscriptions made or dropped while
//! commands run are seen by the next command.
#![allow(clippy::unwrap_used)]

use waitline::*;

fn dial(t: &Tenant) -> String {
    t.dial(&DialParams::new("+15550001", "+15550002", "app")).unwrap().call_control_id
}

/// Commands of tenants `a` and `b` in turn, over two queues each, with client states: every
/// kind of event, batches of one tenant after the other's.
fn mixed_traffic(engine: &Engine) {
    let (a, b) = (engine.tenant("a"), engine.tenant("b"));
    for round in 0..3 {
        for (t, q) in [(&a, "qa1"), (&b, "qb1"), (&a, "qa2"), (&b, "qb2")] {
            let caller = dial(t);
            let agent = dial(t);
            let mut p = EnqueueParams::new(q);
            p.options.client_state = Some(format!("state-{round}-{q}"));
            t.enqueue(&caller, &p).unwrap();
            t.bridge(&agent, &BridgeParams::queue(q)).unwrap();
            t.hangup(&agent, &CommandOptions::default()).unwrap();
        }
    }
    a.create_queue("explicit", None).unwrap();
    a.delete_queue("explicit").unwrap();
}

/// Each event read in place, as the JSON and the fields an owned event gives.
fn read_in_place(
    sub: &mut Subscription,
) -> Vec<(serde_json::Value, String, u64, String, Option<String>, bool)> {
    let mut seen = Vec::new();
    while let Some(ev) = sub.try_next() {
        let owned = ev.to_event();
        assert_eq!(owned.id, ev.id());
        assert_eq!(
            (owned.seq(), owned.event_type(), owned.occurred_at),
            (ev.seq(), ev.event_type(), ev.occurred_at())
        );
        seen.push((
            serde_json::to_value(ev).unwrap(),
            ev.tenant().to_owned(),
            ev.seq(),
            ev.id().to_string(),
            ev.call().map(|c| c.call_control_id.to_string()),
            ev.is_webhook_event(),
        ));
    }
    seen
}

/// The same, from owned events.
fn read_owned(sub: &mut Subscription) -> Vec<(serde_json::Value, String, u64, String, Option<String>, bool)> {
    sub.drain()
        .into_iter()
        .map(|e| {
            (
                serde_json::to_value(&e).unwrap(),
                e.tenant.to_string(),
                e.seq(),
                e.id.to_string(),
                e.kind.subject().map(|s| s.call.call_control_id.to_string()),
                e.kind.is_webhook_event(),
            )
        })
        .collect()
}

#[test]
fn events_read_in_place_say_what_owned_events_say() {
    let engine = Engine::default();
    let (mut in_place, mut owned) = (engine.subscribe(), engine.subscribe());
    mixed_traffic(&engine);
    let viewed = read_in_place(&mut in_place);
    let taken = read_owned(&mut owned);
    // Per lane and round: two calls initiated and answered, enqueued, dequeued, bridged
    // twice, hung up twice; a queue.created for each of the four queues; the explicit
    // queue's created and deleted.
    assert_eq!(viewed.len(), 3 * 4 * 10 + 4 + 2);
    assert_eq!(viewed, taken);
    // What the payloads say, spot-checked against the commands.
    let tenants: Vec<&str> = viewed.iter().map(|v| v.1.as_str()).collect();
    assert!(tenants.contains(&"a") && tenants.contains(&"b"));
    for (json, tenant, ..) in &viewed {
        if let Some(queue) = json["payload"]["queue"].as_str() {
            assert!(
                queue.starts_with(if tenant == "a" { "qa" } else { "qb" }) || queue == "explicit",
                "{json}"
            );
        }
        if json["event_type"] == "call.enqueued" {
            let queue = json["payload"]["queue"].as_str().unwrap();
            let state = json["payload"]["client_state"].as_str().unwrap();
            assert!(state.ends_with(queue), "{json}");
        }
    }
    let kinds: Vec<&str> =
        viewed.iter().filter(|v| !v.5).map(|v| v.0["event_type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "queue.created",
            "queue.created",
            "queue.created",
            "queue.created",
            "queue.created",
            "queue.deleted"
        ]
    );
}

#[test]
fn an_event_id_is_the_same_read_in_place_or_owned_and_unique() {
    let engine = Engine::default();
    let mut sub = engine.subscribe();
    mixed_traffic(&engine);
    let ids: Vec<String> = read_in_place(&mut sub).into_iter().map(|v| v.3).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
}

#[test]
fn a_tenant_subscriber_reads_its_tenant_only_and_a_later_subscriber_the_events_after_it() {
    let engine = Engine::default();
    let mut only_b = engine.subscribe_tenant("b");
    let a = engine.tenant("a");
    dial(&a);
    assert!(only_b.try_next().is_none(), "a's events reach no subscriber of b");
    // Subscribed between two commands of a: the next one is read.
    let mut all = engine.subscribe();
    dial(&a);
    dial(&engine.tenant("b"));
    let seen: Vec<(String, u64)> =
        std::iter::from_fn(|| all.try_next().map(|e| (e.tenant().to_owned(), e.seq()))).collect();
    assert_eq!(seen, [("a".into(), 2), ("a".into(), 2), ("b".into(), 1), ("b".into(), 1)]);
    let mine: Vec<String> = std::iter::from_fn(|| only_b.try_next().map(|e| e.tenant().to_owned())).collect();
    assert_eq!(mine, ["b", "b"]);
}

#[test]
fn a_dropped_subscriber_is_forgotten_and_the_others_still_read() {
    let engine = Engine::default();
    let t = engine.default_tenant();
    let (first, mut second) = (engine.subscribe(), engine.subscribe());
    dial(&t);
    drop(first);
    dial(&t);
    dial(&t);
    assert_eq!(
        std::iter::from_fn(|| second.try_next().map(|e| e.seq())).collect::<Vec<_>>(),
        [1, 1, 2, 2, 3, 3]
    );
    // Every subscriber gone: commands make no events, and a new subscriber reads from its
    // own start on.
    drop(second);
    dial(&t);
    let mut third = engine.subscribe();
    dial(&t);
    assert_eq!(third.drain().iter().map(Event::seq).collect::<Vec<_>>(), [5, 5]);
}

#[test]
fn tenants_on_two_threads_reach_one_reader_whole_and_each_in_its_order() {
    // A tenant's one listening channel is lent to each of its commands: with two tenants
    // on two threads and a reader on a third, some commands find it held and publish as
    // before. Every event arrives, each tenant's in its order, each command's together.
    let engine = Engine::default();
    let mut sub = engine.subscribe_bounded(1 << 20);
    let threads: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let tenant = engine.tenant(name);
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    dial(&tenant);
                }
            })
        })
        .collect();
    let mut seen: Vec<(String, u64)> = Vec::new();
    let mut read = |sub: &mut Subscription| {
        while let Some(e) = sub.try_next() {
            seen.push((e.tenant().to_owned(), e.seq()));
        }
    };
    while threads.iter().any(|t| !t.is_finished()) {
        read(&mut sub);
    }
    for t in threads {
        t.join().unwrap();
    }
    read(&mut sub);
    assert_eq!(sub.dropped(), 0);
    for name in ["a", "b"] {
        let seqs: Vec<u64> = seen.iter().filter(|(t, _)| t == name).map(|&(_, s)| s).collect();
        // Each dial: call.initiated and call.answered, one command.
        let want: Vec<u64> = (1..=2_000).flat_map(|s| [s, s]).collect();
        assert_eq!(seqs, want, "tenant {name}");
    }
}

#[test]
fn each_subscriber_reads_every_event_with_the_same_call() {
    let engine = Engine::default();
    let subs: Vec<Subscription> = (0..3).map(|_| engine.subscribe()).collect();
    mixed_traffic(&engine);
    let read: Vec<Vec<Event>> = subs.into_iter().map(|mut s| s.drain()).collect();
    assert_eq!(read[0], read[1]);
    assert_eq!(read[1], read[2]);
    for (x, y) in read[0].iter().zip(&read[2]) {
        if let (Some(x), Some(y)) = (x.kind.subject(), y.kind.subject()) {
            assert!(std::sync::Arc::ptr_eq(&x.call, &y.call), "the call's identity is shared, not copied");
        }
    }
}

#[test]
fn a_reader_that_reads_part_of_a_batch_goes_on_where_it_stopped() {
    let engine = Engine::default();
    let t = engine.default_tenant();
    let mut sub = engine.subscribe();
    let caller = dial(&t);
    let agent = dial(&t);
    t.enqueue(&caller, &EnqueueParams::new("q")).unwrap();
    assert_eq!(sub.try_recv().map(|e| e.seq()), Some(1));
    assert_eq!(sub.try_next().map(|e| e.event_type()), Some("call.answered"));
    t.bridge(&agent, &BridgeParams::queue("q")).unwrap();
    let rest: Vec<&str> = std::iter::from_fn(|| sub.try_recv().map(|e| e.event_type())).collect();
    assert_eq!(
        rest,
        [
            "call.initiated",
            "call.answered",
            "queue.created",
            "call.enqueued",
            "call.dequeued",
            "call.bridged",
            "call.bridged"
        ]
    );
}

/// The id of an event as docs/behaviour.md §4 and `event` derive it: FNV-1a 64 of the
/// tenant's name (its top 48 bits), version 8, the event's index within its command, the
/// variant, the command's sequence number.
fn derived_id(tenant: &str, seq: u64, index: u64) -> (u64, u64) {
    let key = tenant
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    ((key & !0xffff) | (0x8 << 12) | index, (0b10 << 62) | seq)
}

#[test]
fn event_ids_are_derived_from_tenant_number_and_index_within_the_command() {
    let engine = Engine::default();
    let mut sub = engine.subscribe();
    mixed_traffic(&engine);
    let mut index = 0;
    let mut last = None;
    let mut seen = 0;
    while let Some(ev) = sub.try_next() {
        let command = (ev.tenant().to_owned(), ev.seq());
        index = if last.as_ref() == Some(&command) { index + 1 } else { 0 };
        assert_eq!(ev.id().as_u64_pair(), derived_id(ev.tenant(), ev.seq(), index), "{}", ev.event_type());
        last = Some(command);
        seen += 1;
    }
    assert_eq!(seen, 3 * 4 * 10 + 4 + 2);
}

/// A thread that dials one call on the default tenant 50 ms from now (while the test's
/// reader waits).
fn dial_in_a_moment(engine: &Engine) -> std::thread::JoinHandle<()> {
    let t = engine.default_tenant();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        dial(&t);
    })
}

#[test]
fn recv_timeout_waits_for_an_event_made_meanwhile_and_gives_up_after_the_timeout() {
    use std::time::{Duration, Instant};
    let engine = Engine::default();
    let mut sub = engine.subscribe();
    let dialer = dial_in_a_moment(&engine);
    let got = sub.recv_timeout(Duration::from_secs(30));
    dialer.join().unwrap();
    assert_eq!(got.map(|e| e.event_type()), Some("call.initiated"));
    assert_eq!(sub.recv_timeout(Duration::from_secs(30)).map(|e| e.event_type()), Some("call.answered"));
    let start = Instant::now();
    assert!(sub.recv_timeout(Duration::from_millis(50)).is_none());
    assert!(start.elapsed() >= Duration::from_millis(50), "it waited the timeout");
}

#[test]
fn recv_and_the_iterator_block_until_an_event_comes_and_end_with_the_engine() {
    let engine = Engine::default();
    let mut sub = engine.subscribe();
    let dialer = dial_in_a_moment(&engine);
    assert_eq!(sub.recv().map(|e| e.event_type()), Some("call.initiated"));
    assert_eq!(sub.next().map(|e| e.event_type()), Some("call.answered"));
    dialer.join().unwrap();
    drop(engine);
    assert!(sub.recv().is_none(), "the engine is gone");
    assert!(sub.next().is_none());
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Wakes(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Wakes {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn poll_recv_wakes_the_task_that_polled_last() {
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    let engine = Engine::default();
    let mut sub = engine.subscribe();
    let (first, second) = (Arc::new(Wakes::default()), Arc::new(Wakes::default()));
    let (w1, w2) = (Waker::from(first.clone()), Waker::from(second.clone()));
    assert!(sub.poll_recv(&mut Context::from_waker(&w1)).is_pending());
    assert!(sub.poll_recv(&mut Context::from_waker(&w2)).is_pending());
    dial(&engine.default_tenant());
    assert_eq!(second.0.load(std::sync::atomic::Ordering::SeqCst), 1, "the latest poller is woken");
    assert_eq!(first.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(matches!(sub.poll_recv(&mut Context::from_waker(&w2)), Poll::Ready(Some(_))));
}

#[test]
fn next_timeout_reads_in_place_an_event_made_meanwhile_and_gives_up_after_the_timeout() {
    use std::time::{Duration, Instant};
    let engine = Engine::default();
    let mut sub = engine.subscribe();
    let dialer = dial_in_a_moment(&engine);
    let got =
        sub.next_timeout(Duration::from_secs(30)).map(|e| (e.event_type(), e.seq(), e.tenant().to_owned()));
    dialer.join().unwrap();
    assert_eq!(got, Some(("call.initiated", 1, "default".to_owned())));
    assert_eq!(sub.next_timeout(Duration::from_secs(30)).map(|e| e.event_type()), Some("call.answered"));
    let start = Instant::now();
    assert!(sub.next_timeout(Duration::from_millis(50)).is_none());
    assert!(start.elapsed() >= Duration::from_millis(50), "it waited the timeout");
}

#[test]
fn poll_ready_says_when_try_next_has_an_event_and_when_the_engine_is_gone() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Poll, Waker};
    let engine = Engine::default();
    let mut sub = engine.subscribe();
    let wakes = Arc::new(Wakes::default());
    let waker = Waker::from(wakes.clone());
    assert_eq!(sub.poll_ready(&mut Context::from_waker(&waker)), Poll::Pending);
    dial(&engine.default_tenant());
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the publish wakes the task");
    assert_eq!(sub.poll_ready(&mut Context::from_waker(&waker)), Poll::Ready(true));
    // Ready until the events at hand are read: polling again takes nothing.
    assert_eq!(sub.poll_ready(&mut Context::from_waker(&waker)), Poll::Ready(true));
    assert_eq!(sub.try_next().map(|e| e.event_type()), Some("call.initiated"));
    assert_eq!(sub.poll_ready(&mut Context::from_waker(&waker)), Poll::Ready(true));
    assert_eq!(sub.try_next().map(|e| e.event_type()), Some("call.answered"));
    assert_eq!(sub.poll_ready(&mut Context::from_waker(&waker)), Poll::Pending);
    drop(engine);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 2, "the engine's end wakes the task");
    assert_eq!(sub.poll_ready(&mut Context::from_waker(&waker)), Poll::Ready(false));
}

/// Two listeners; the first reads everything after each command (its emptied room goes
/// back to its channel), so the next batch is copied into that emptied channel while the
/// second, the last listener, takes each batch by the swap: every event names its own
/// tenant, and both readers see the same events. (A run of tenants kept past the room's
/// clearing would name a tenant from text that is gone.)
#[test]
fn a_batch_copied_into_a_channel_its_reader_emptied_names_its_tenant() {
    let engine = Engine::default();
    let mut first = engine.subscribe();
    let mut second = engine.subscribe();
    let (long, short) = ("a-tenant-with-a-long-name", "u");
    let (t, u) = (engine.tenant(long), engine.tenant(short));
    let mut seen_first = Vec::new();
    let mut seen_second = Vec::new();
    for tenant in [&t, &t, &u, &t, &u, &u] {
        let mut p = EnqueueParams::new("q");
        p.options.client_state = Some("cs".into());
        let caller = dial(tenant);
        tenant.enqueue(&caller, &p).unwrap();
        for (sub, seen) in [(&mut first, &mut seen_first), (&mut second, &mut seen_second)] {
            while let Some(e) = sub.try_recv() {
                seen.push((e.tenant.to_string(), e.seq(), e.id, e.event_type()));
            }
        }
    }
    // A tenant's first enqueue makes its queue: call.initiated, call.answered,
    // queue.created, call.enqueued; later ones three events.
    let want: Vec<&str> = [(long, 4), (long, 3), (short, 4), (long, 3), (short, 3), (short, 3)]
        .into_iter()
        .flat_map(|(t, n)| std::iter::repeat_n(t, n))
        .collect();
    let tenants: Vec<&str> = seen_first.iter().map(|(t, ..)| t.as_str()).collect();
    assert_eq!(tenants, want);
    assert_eq!(seen_first, seen_second);
}

/// A journal's append (code that is not the engine's) may read the engine's own
/// subscription: a command that records never holds a channel lent to it (it would lock it
/// twice on one thread).
#[test]
fn a_journal_that_reads_a_subscription_does_not_find_the_channel_held() {
    #[derive(Debug, Default)]
    struct Reading(parking_lot::Mutex<Option<Subscription>>, std::sync::atomic::AtomicUsize);
    impl waitline::Journal for Reading {
        fn append(&self, _: &str, _: u64, _: &[u8]) {
            if let Some(sub) = self.0.lock().as_mut() {
                while sub.try_next().is_some() {
                    self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
    let journal = std::sync::Arc::new(Reading::default());
    let engine = Engine::builder().journal(journal.clone()).build();
    *journal.0.lock() = Some(engine.subscribe());
    let tenant = engine.tenant("t");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..3 {
            dial(&tenant);
        }
        tx.send(()).expect("the test waits");
    });
    rx.recv_timeout(std::time::Duration::from_secs(5)).expect("a command whose journal reads events hung");
    assert_eq!(
        journal.1.load(std::sync::atomic::Ordering::Relaxed),
        4,
        "two events a dial, each read by the next dial's append"
    );
}

/// `lanes` calls and agents of tenant `name` (dialled first), then `rounds` times per lane:
/// the lane's call enqueued into its queue and the lane's agent bridged with it (the same
/// calls again and again, as the pair benchmarks do). Returns each lane's two call ids.
fn pairs_of_lanes(tenant: &Tenant, lanes: usize, rounds: usize) -> Vec<[String; 2]> {
    let ids: Vec<[String; 2]> = (0..lanes).map(|_| [dial(tenant), dial(tenant)]).collect();
    for _ in 0..rounds {
        for (lane, [caller, agent]) in ids.iter().enumerate() {
            let queue = format!("lane-{lane}");
            tenant.enqueue(caller, &EnqueueParams::new(queue.clone())).unwrap();
            tenant.bridge(agent, &BridgeParams::queue(queue).park_after_unbridge()).unwrap();
        }
    }
    ids
}

#[test]
fn events_about_calls_seen_again_and_again_name_their_own_call_on_every_path() {
    // Batches hold a call's identity once for all its events, found through a hint in the
    // call's record. Two tenants on two threads share one subscriber to every tenant (lent
    // to one tenant's command at a time: the other stages and publishes), read on this
    // thread as they run; tenant b has a second, own subscriber (its commands always stage
    // and copy). Every call event names a call of the lane its command's number says.
    const LANES: usize = 10;
    const ROUNDS: usize = 200;
    let engine = Engine::default();
    let mut all = engine.subscribe_bounded(1 << 20);
    let mut own_b = engine.subscribe_tenant_bounded("b", 1 << 20);
    let threads: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let tenant = engine.tenant(name);
            std::thread::spawn(move || pairs_of_lanes(&tenant, LANES, ROUNDS))
        })
        .collect();
    let mut seen: Vec<(String, u64, Option<String>)> = Vec::new();
    let mut read = |sub: &mut Subscription| {
        while let Some(e) = sub.try_next() {
            seen.push((e.tenant().to_owned(), e.seq(), e.call().map(|c| c.call_control_id.to_string())));
        }
    };
    while threads.iter().any(|t| !t.is_finished()) {
        read(&mut all);
    }
    let lanes: Vec<Vec<[String; 2]>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    read(&mut all);
    assert_eq!((all.dropped(), own_b.dropped()), (0, 0));
    let own: Vec<(String, u64, Option<String>)> = own_b
        .drain()
        .into_iter()
        .map(|e| {
            (e.tenant.to_string(), e.seq(), e.kind.subject().map(|s| s.call.call_control_id.to_string()))
        })
        .collect();
    let of_b: Vec<_> = seen.iter().filter(|(t, ..)| t == "b").cloned().collect();
    assert_eq!(own, of_b, "b's own subscriber reads what the shared one read of b");
    // The dials took the first 2 * LANES numbers; then each pair two, lane after lane.
    let dials = 2 * LANES as u64;
    let mut calls_seen = 0;
    for (tenant, seq, call) in &seen {
        let lane_calls = &lanes[usize::from(tenant == "b")];
        let Some(call) = call else { continue };
        calls_seen += 1;
        if *seq <= dials {
            assert!(lane_calls.iter().flatten().any(|id| id == call), "{tenant} {seq}: {call}");
            continue;
        }
        let lane = ((seq - dials - 1) / 2) as usize % LANES;
        assert!(lane_calls[lane].contains(call), "{tenant} {seq}: {call} is not of lane {lane}");
    }
    assert!(calls_seen >= 2 * LANES * ROUNDS * 4, "{calls_seen} call events");
}
