//! `Tenant::enqueue_many` is the sequence of single enqueues it stands for: the same final
//! state, the same events (with the same ids and sequence numbers), the same refusals; it
//! stops at the first refused call, which changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use waitline::*;

/// A tenant with calls `c0`..`c{n}` (client-given ids, so that two engines name them alike)
/// and some history: `c0` waits in `x`, `c1` in `y`, `c2` is bridged with `c3`, `c4` has
/// ended.
fn world(builder: EngineBuilder, n: usize) -> (Fixture, Vec<String>) {
    let mut f = Fixture::with(builder);
    let ids = setup(&f.t, n);
    f.take_events();
    (f, ids)
}

fn setup(t: &Tenant, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    for id in &ids {
        let mut p = DialParams::new("+15550001", "+15550002", "conn");
        p.call_control_id = Some(id.clone());
        t.dial(&p).unwrap();
    }
    t.enqueue("c0", &EnqueueParams::new("x")).unwrap();
    t.enqueue("c1", &EnqueueParams::new("y")).unwrap();
    t.bridge("c2", &BridgeParams::call("c3")).unwrap();
    t.hangup("c4", &none()).unwrap();
    ids
}

/// The same world with nobody listening: a batch then takes its other way (its calls
/// join the queue as a run, counted at once; no event reads the queue between them).
struct Quiet {
    engine: Engine,
    clock: ManualClock,
    t: Tenant,
}

impl Quiet {
    fn new(builder: EngineBuilder, n: usize) -> Self {
        let (clock, hand) = Clock::manual(START);
        let engine = builder.clock(clock).build();
        let t = engine.default_tenant();
        setup(&t, n);
        Self { engine, clock: hand, t }
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
        self.engine.run_pending_tasks();
    }
}

fn params(queue: &str) -> EnqueueParams {
    EnqueueParams {
        max_wait: Some(Duration::from_secs(30)),
        max_size: Some(1_000),
        priority: Some(3),
        ..EnqueueParams::new(queue)
    }
}

/// Everything an observer can see of an event, but its random ids (leg, session, queue).
fn observed(events: &[Event]) -> Vec<serde_json::Value> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("call_leg_id");
                m.remove("call_session_id");
                m.remove("queue_id");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    events
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap();
            strip(&mut v);
            serde_json::json!({ "seq": e.seq(), "event": v })
        })
        .collect()
}

/// The state an observer can see: every call's status, every queue and its members.
fn state(t: &Tenant, ids: &[String]) -> String {
    let mut out = String::new();
    for id in ids {
        match t.call(id) {
            Ok(c) => out += &format!("{id}: {:?} {:?} {:?}\n", c.state, c.queue, c.bridged_with),
            Err(e) => out += &format!("{id}: {e:?}\n"),
        }
    }
    let queues = t.queues(PageRequest::new(1, 250)).unwrap().data;
    for q in queues {
        out += &format!(
            "{} size {} avg {} {:?}\n",
            q.name, q.current_size, q.average_wait_time_secs, q.total_dequeued
        );
        for page in 1.. {
            let members = t.queue_calls(&q.name, PageRequest::new(page, 250)).unwrap().data;
            for m in &members {
                out += &format!(
                    "  {} {} {} {} {}\n",
                    m.call_control_id, m.queue_position, m.priority, m.enqueued_at, m.wait_time_secs
                );
            }
            if members.len() < 250 {
                break;
            }
        }
    }
    out + &format!("seq {} live {}\n", t.last_seq(), t.live_calls())
}

/// Runs `ids` as single enqueues on one world and as one batch on a twin, and checks that
/// both answer, change and tell alike.
fn same_as_singles(builder: impl Fn() -> EngineBuilder, n: usize, batch: &[&str], p: &EnqueueParams) {
    same_as_singles_after(builder, n, |_| {}, batch, p);
}

/// [`same_as_singles`], once `prepare` ran on both worlds.
fn same_as_singles_after(
    builder: impl Fn() -> EngineBuilder,
    n: usize,
    prepare: impl Fn(&Tenant),
    batch: &[&str],
    p: &EnqueueParams,
) {
    let (mut single, ids) = world(builder(), n);
    let (mut many, _) = world(builder(), n);
    for f in [&mut single, &mut many] {
        prepare(&f.t);
        f.take_events();
    }
    let mut answer = Ok(batch.len());
    for (index, id) in batch.iter().enumerate() {
        if let Err(error) = single.t.enqueue(id, p) {
            answer = Err(BatchError { index, error });
            break;
        }
    }
    assert_eq!(many.t.enqueue_many(batch, p), answer);
    assert_eq!(state(&many.t, &ids), state(&single.t, &ids));
    assert_eq!(observed(&many.take_events()), observed(&single.take_events()));
    many.check();
    // With nobody listening the batch takes its other way: the same state again.
    let quiet = Quiet::new(builder(), n);
    prepare(&quiet.t);
    assert_eq!(quiet.t.enqueue_many(batch, p), answer);
    assert_eq!(state(&quiet.t, &ids), state(&single.t, &ids));
    assert_eq!(figures(&quiet.t), figures(&single.t));
    quiet.engine.check_invariants().unwrap();
    // And they all go on alike: the deadlines the batch set fire as the singles' do.
    single.advance(31);
    many.advance(31);
    quiet.advance(31);
    assert_eq!(state(&many.t, &ids), state(&single.t, &ids));
    assert_eq!(state(&quiet.t, &ids), state(&single.t, &ids));
    assert_eq!(figures(&quiet.t), figures(&single.t));
    assert_eq!(observed(&many.take_events()), observed(&single.take_events()));
    quiet.engine.check_invariants().unwrap();
}

/// Every queue's figures as JSON (counts, sums, the day's outcomes, the hour's lengths).
fn figures(t: &Tenant) -> Vec<serde_json::Value> {
    let queues = t.queues(PageRequest::new(1, 250)).unwrap().data;
    let without_id = |q: &QueueInfo| {
        let mut v = serde_json::to_value(q).unwrap();
        v.as_object_mut().unwrap().remove("id");
        v
    };
    queues.iter().map(without_id).collect()
}

#[test]
fn a_batch_is_the_sequence_of_single_enqueues() {
    // A new queue; calls leaving another queue, one bridged (its partner hangs up), and
    // more than one chunk of calls.
    let n = 2 * ENQUEUE_MANY_CHUNK + 50;
    let (_, ids) = world(Engine::builder(), n);
    let mut batch: Vec<&str> =
        ids.iter().map(String::as_str).filter(|id| *id != "c4" && *id != "c3").collect();
    batch.rotate_left(5);
    same_as_singles(Engine::builder, n, &batch, &params("z"));
    // Into a queue that exists (c0 waits in x).
    same_as_singles(Engine::builder, n, &["c1", "c2", "c5"], &params("x"));
    // Into a queue with members of other bands and holes where members left: the room the
    // batch makes for itself renumbers them in the order.
    let holes = |t: &Tenant| {
        for i in 5..60 {
            let p = EnqueueParams { priority: Some(i % 4), ..EnqueueParams::new("x") };
            t.enqueue(&format!("c{i}"), &p).unwrap();
        }
        for i in (5..60).step_by(3) {
            t.leave_queue(&format!("c{i}"), &none()).unwrap();
        }
    };
    let rest: Vec<&str> = ids[60..300].iter().map(String::as_str).collect();
    same_as_singles_after(Engine::builder, 300, holes, &rest, &params("x"));
    // With a cap of one ended call: c2's enqueue hangs up its partner c3, which makes the
    // tenant forget c4 at the end of that command, so the next one no longer finds c4.
    let one_ended = || Engine::builder().max_ended_calls_per_tenant(1);
    same_as_singles(one_ended, 8, &["c2", "c4", "c5"], &params("z"));
    let (f, _) = world(one_ended(), 8);
    assert_eq!(
        f.t.enqueue_many(&["c2", "c4"], &params("z")).map_err(|e| (e.index, e.error)),
        Err((1, Error::CallNotFound))
    );
    // With a command id: the second enqueue of c5 repeats it, so it answers success and
    // changes nothing (where a plain one would be refused: c5 is in the queue by then).
    let once =
        EnqueueParams { options: CommandOptions { command_id: Some("cmd".into()), ..none() }, ..params("z") };
    same_as_singles(Engine::builder, 8, &["c5", "c6", "c5", "c7"], &once);
    let (f, _) = world(Engine::builder(), 8);
    assert_eq!(f.t.enqueue_many(&["c5", "c6", "c5", "c7"], &once), Ok(4));
}

#[test]
fn a_timer_that_comes_due_in_a_batch_fires_between_its_commands() {
    // With no idle time, the queue a call leaves empty is collected before the next
    // command, exactly as between single enqueues.
    let idle_now = || Engine::builder().queue_idle_ttl(Duration::ZERO);
    same_as_singles(idle_now, 8, &["c0", "c1", "c5"], &params("z"));
    let (mut f, _) = world(idle_now(), 8);
    f.t.enqueue_many(&["c0", "c1"], &params("z")).unwrap();
    let seen: Vec<(&str, u64)> = f.take_events().iter().map(|e| (e.event_type(), e.seq())).collect();
    // (y, emptied by the last command, goes at the next command or maintenance.)
    let first = f.t.last_seq() - 3;
    assert_eq!(
        seen,
        [
            ("call.dequeued", first + 1),
            ("queue.created", first + 1),
            ("call.enqueued", first + 1),
            ("queue.deleted", first + 2),
            ("call.dequeued", first + 3),
            ("call.enqueued", first + 3),
        ]
    );
}

#[test]
fn a_batch_stops_at_the_first_refusal_which_changes_nothing() {
    let cases: [(&[&str], EnqueueParams, usize, &str); 6] = [
        (&["c5", "c6", "nope", "c7"], params("z"), 2, "90015"), // unknown call
        (&["c5", "c4", "c6"], params("z"), 1, "90018"),         // ended call
        (&["c5", "c6", "c5", "c7"], params("z"), 2, "90038"),   // already in the queue
        (&["c5", "c0", "c6"], params("x"), 1, "90038"),         // already in it before
        (&["c5", "c6", "c1", "c7"], EnqueueParams { max_size: Some(2), ..params("z") }, 2, "90036"),
        (&["c5", "c6"], EnqueueParams { priority: Some(10), ..params("z") }, 0, "10033"),
    ];
    for (batch, p, index, code) in cases {
        let (mut f, ids) = world(Engine::builder(), 8);
        let err = f.t.enqueue_many(batch, &p).unwrap_err();
        assert_eq!((err.index, err.error.code()), (index, code), "{batch:?}");
        same_as_singles(Engine::builder, 8, batch, &p);
        // Only the calls before the refused one moved.
        let (expected, _) = world(Engine::builder(), 8);
        expected.t.enqueue_many(&batch[..index], &p).unwrap();
        f.take_events();
        assert_eq!(state(&f.t, &ids), state(&expected.t, &ids), "{batch:?}");
    }
}

#[test]
fn a_refusal_at_the_first_call_changes_nothing_at_all() {
    let (mut f, ids) = world(Engine::builder(), 8);
    f.t.update_queue("x", 1).unwrap();
    f.take_events();
    let before = state(&f.t, &ids);
    let err = f.t.enqueue_many(&["c1", "c5"], &params("x")).unwrap_err();
    assert_eq!((err.index, err.error), (0, Error::QueueFull));
    assert_eq!(state(&f.t, &ids), before, "c1 still waits in y, nothing numbered");
    assert!(f.take_events().is_empty());
}

#[test]
fn an_empty_batch_is_no_command() {
    let (mut f, ids) = world(Engine::builder(), 8);
    let before = state(&f.t, &ids);
    let none: &[&str] = &[];
    // Not even its parameters are checked: no single enqueue would have checked them.
    assert_eq!(f.t.enqueue_many(none, &EnqueueParams::new("")), Ok(0));
    assert_eq!(f.t.enqueue_many(none, &params("z")), Ok(0));
    assert_eq!(state(&f.t, &ids), before);
    assert!(f.take_events().is_empty());
}

#[test]
fn a_batch_error_names_the_refused_call() {
    let e = BatchError { index: 3, error: Error::CallNotFound };
    assert_eq!(e.to_string(), format!("item 3 refused: {}", Error::CallNotFound));
}

#[test]
fn a_batch_is_journaled_as_its_single_enqueues_and_replays() {
    use waitline::journal::{Change, Record};
    let journal = std::sync::Arc::new(Recorded::default());
    let (clock, _) = Clock::manual(START);
    let engine = Engine::builder().clock(clock).journal(journal.clone()).build();
    let t = engine.default_tenant();
    let ids: Vec<String> =
        (0..300).map(|_| t.dial(&DialParams::new("+1", "+2", "app")).unwrap().call_control_id).collect();
    t.enqueue(&ids[7], &EnqueueParams::new("other")).unwrap();
    let before = t.last_seq();
    let p = params("z");
    let mut batch: Vec<&str> = ids.iter().map(String::as_str).collect();
    batch.push("nope");
    assert_eq!(t.enqueue_many(&batch, &p).map_err(|e| e.index), Err(300));
    let records = journal.0.lock().unwrap().clone();
    // One record per enqueue that changed something, numbered as the changes, none for the
    // refusal.
    let mine: Vec<(u64, Change)> = records
        .iter()
        .filter(|(seq, _)| *seq > before)
        .map(|(seq, bytes)| (*seq, Record::decode(bytes).unwrap().change))
        .collect();
    let expected: Vec<(u64, Change)> = ids
        .iter()
        .zip(before + 1..)
        .map(|(id, seq)| (seq, Change::Enqueue { call: id.clone(), params: p.clone() }))
        .collect();
    assert_eq!(mine, expected);
    assert_eq!(t.last_seq(), before + 300);
    // Replaying the whole journal rebuilds the same state, the queue's random id included.
    let (clock2, _) = Clock::manual(START);
    let t2 = Engine::builder().clock(clock2).build().default_tenant();
    for (seq, bytes) in &records {
        t2.replay(*seq, bytes).unwrap();
    }
    let view = |t: &Tenant| {
        let q = t.queue("z").unwrap();
        let members: Vec<String> = t
            .queue_calls("z", PageRequest::new(1, 250))
            .unwrap()
            .data
            .into_iter()
            .map(|m| m.call_control_id)
            .collect();
        (q.id, q.current_size, members, t.queue("other").unwrap().current_size, t.last_seq())
    };
    assert_eq!(view(&t2), view(&t));
}

/// `q` holds 3 members in slots 7..10 of 16 (7 left from the head) when the snapshot is
/// taken, and its restored order's slot array is only as long as its slots used; a batch of
/// 10 (nobody listening: one run, one reserve at the same capacity, which must not compact
/// in place an array that short) then joins it.
#[test]
fn a_restored_sparse_queue_takes_a_batch() {
    let engine = Engine::builder().build();
    let t = engine.tenant("a");
    for i in 0..30 {
        let mut p = DialParams::new("+15550001", "+15550002", "conn");
        p.call_control_id = Some(format!("c{i}"));
        t.dial(&p).unwrap();
    }
    for i in 0..10 {
        t.enqueue(&format!("c{i}"), &EnqueueParams::new("q")).unwrap();
    }
    for i in 0..7 {
        t.leave_queue(&format!("c{i}"), &CommandOptions::default()).unwrap();
    }
    let (_, bytes) = t.snapshot();
    let restored = Engine::builder().build();
    let t2 = restored.tenant("a");
    t2.restore(&bytes).unwrap();
    let ids: Vec<String> = (10..20).map(|i| format!("c{i}")).collect();
    assert_eq!(t2.enqueue_many(&ids, &EnqueueParams::new("q")), Ok(10));
    assert_eq!(t2.queue("q").unwrap().current_size, 13);
    restored.check_invariants().unwrap();
}
