//! One test per rule of docs/behaviour.md §1 to §4 and §6, each error code included, and the
//! "a rejected command changes nothing" rule.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use waitline::*;

fn code<T: std::fmt::Debug>(r: Result<T>) -> &'static str {
    r.expect_err("must be refused").code()
}

/// Everything observable about a tenant, to show that a refused command changed nothing.
fn observe(f: &Fixture, calls: &[&str]) -> String {
    let mut s = String::new();
    for q in f.t.queues(PageRequest::new(1, 250)).unwrap().data {
        s += &format!("{q:?}\n{:?}\n", f.t.queue_calls(&q.name, PageRequest::new(1, 250)).unwrap());
    }
    for c in calls {
        s += &format!("{:?}\n", f.t.call(c));
    }
    s
}

#[test]
fn dial_makes_an_active_call_with_telnyx_style_ids() {
    let mut f = Fixture::new();
    let info = f.t.dial(&DialParams::new("+1555", "+1666", "app")).unwrap();
    assert!(info.call_control_id.starts_with("v3:"));
    assert_eq!(info.call_control_id.len(), 43);
    assert!(info.call_control_id[3..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_ne!(info.call_leg_id, info.call_session_id);
    assert_eq!((info.state, info.is_alive, info.start_time), (CallState::Active, true, START));
    let types: Vec<_> = f.take_events().iter().map(|e| e.event_type()).collect();
    assert_eq!(types, ["call.initiated", "call.answered"]);
}

#[test]
fn dial_validates_and_adopts_external_ids() {
    let f = Fixture::new();
    let mut p = DialParams::new("+1", "+2", "app");
    p.call_control_id = Some("sip-leg-1".into());
    assert_eq!(f.t.dial(&p).unwrap().call_control_id, "sip-leg-1");
    assert_eq!(code(f.t.dial(&p)), "90015");
    let empty = DialParams { to: String::new(), ..DialParams::new("+1", "+2", "app") };
    assert_eq!(f.t.dial(&empty).unwrap_err().parameter(), Some("to"));
    let mut url = DialParams::new("+1", "+2", "app");
    url.webhook_url = Some("ftp://x".into());
    assert_eq!(code(f.t.dial(&url)), "10033");
    assert_eq!(f.t.live_calls(), 1);
}

/// Engine ids name their call's slot, but only the whole id finds it: an id with another
/// secret, or the id of a forgotten call whose slot is used again, answers like an unknown
/// id; client ids of any shape (the engine's included) keep working.
#[test]
fn only_the_whole_id_finds_a_call() {
    let (clock, hand) = Clock::manual(START);
    let e = Engine::builder().clock(clock).ended_call_retention(Duration::from_secs(1)).build();
    let t = e.default_tenant();
    let a = t.dial(&DialParams::new("+1", "+2", "app")).unwrap().call_control_id;
    let mut forged = a.clone();
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(42..43, last);
    assert_eq!(code(t.call(&forged)), "90015");
    assert_eq!(code(t.hangup(&forged, &CommandOptions::default())), "90015");
    let mut shaped = DialParams::new("+1", "+2", "app");
    shaped.call_control_id = Some(forged.clone());
    assert_eq!(t.dial(&shaped).unwrap().call_control_id, forged, "a client id of the engine's shape");
    assert_eq!(t.call(&forged).unwrap().call_control_id, forged);
    assert_eq!(t.call(&a).unwrap().call_control_id, a);
    assert_eq!(code(t.dial(&shaped)), "90015");
    let mut taken = DialParams::new("+1", "+2", "app");
    taken.call_control_id = Some(a.clone());
    assert_eq!(code(t.dial(&taken)), "90015", "an engine id is taken too");
    t.hangup(&a, &CommandOptions::default()).unwrap();
    hand.advance(Duration::from_secs(2));
    let b = t.dial(&DialParams::new("+1", "+2", "app")).unwrap().call_control_id;
    assert_eq!((&a[..13], a[13..14] == b[13..14]), (&b[..13], false), "the same slot, a new generation");
    assert_eq!(code(t.call(&a)), "90015", "forgotten, its slot used again");
    assert_eq!(t.call(&b).unwrap().call_control_id, b);
    e.check_invariants().unwrap();
}

#[test]
fn live_call_cap_answers_95004() {
    let f = Fixture::with(Engine::builder().max_live_calls_per_tenant(2));
    let a = f.dial();
    f.dial();
    assert_eq!(code(f.t.dial(&DialParams::new("+1", "+2", "c"))), "95004");
    assert_eq!(code(f.t.transfer(&a, &TransferParams::new("+3"))), "95004");
    f.t.hangup(&a, &none()).unwrap();
    f.dial();
    f.check();
}

#[test]
fn enqueue_appends_to_the_end_with_one_based_positions() {
    let mut f = Fixture::new();
    let (a, b) = (f.dial(), f.dial());
    f.take_events();
    f.t.enqueue(&a, &EnqueueParams::new("support")).unwrap();
    f.clock.advance(Duration::from_secs(10));
    f.t.enqueue(&b, &EnqueueParams::new("support")).unwrap();
    let evs = f.take_events();
    let enq: Vec<_> = evs.iter().filter(|e| e.event_type() == "call.enqueued").collect();
    let payload = |e: &Event| serde_json::to_value(e.payload()).unwrap();
    assert_eq!(payload(enq[0])["current_position"], 1);
    assert_eq!(payload(enq[1])["current_position"], 2);
    assert_eq!(payload(enq[1])["queue_avg_wait_time_secs"], 5);
    assert_eq!(payload(enq[1])["queue"], "support");
    let q = f.t.queue("support").unwrap();
    assert_eq!(
        (q.current_size, q.max_size, q.average_wait_time_secs, q.longest_wait_time_secs),
        (2, 100, 5, 10)
    );
    assert_eq!(f.t.queue_call("support", &b).unwrap().queue_position, 2);
    assert_eq!(f.t.call(&a).unwrap().queue.as_deref(), Some("support"));
}

#[test]
fn enqueue_refusals_change_nothing() {
    let f = Fixture::new();
    let (a, b, c) = (f.dial(), f.dial(), f.dial());
    f.t.enqueue(&a, &EnqueueParams::new("small").max_size(1)).unwrap();
    f.t.enqueue(&b, &EnqueueParams::new("other")).unwrap();
    f.t.hangup(&c, &none()).unwrap();
    let before = observe(&f, &[&a, &b, &c]);
    assert_eq!(code(f.t.enqueue("nope", &EnqueueParams::new("small"))), "90015");
    assert_eq!(code(f.t.enqueue(&c, &EnqueueParams::new("small"))), "90018");
    assert_eq!(code(f.t.enqueue(&a, &EnqueueParams::new("small"))), "90038");
    // b stays in "other": the full queue refuses before b leaves.
    assert_eq!(code(f.t.enqueue(&b, &EnqueueParams::new("small"))), "90036");
    assert_eq!(code(f.t.enqueue(&b, &EnqueueParams::new("x").max_wait_time_secs(0))), "10033");
    assert_eq!(code(f.t.enqueue(&b, &EnqueueParams::default())), "10033");
    assert_eq!(observe(&f, &[&a, &b, &c]), before);
    f.check();
}

#[test]
fn enqueue_into_another_queue_moves_the_call() {
    let mut f = Fixture::new();
    let a = f.dial();
    f.t.enqueue(&a, &EnqueueParams::new("one")).unwrap();
    f.take();
    f.t.enqueue(&a, &EnqueueParams::new("two")).unwrap();
    assert_eq!(f.take(), vec![ev("call.dequeued", &a), ev("call.enqueued", &a)]);
    assert_eq!(f.t.queue("one").unwrap().total_dequeued.leave, 1);
    assert_eq!(f.t.queue("two").unwrap().current_size, 1);
}

#[test]
fn max_size_is_used_only_when_the_enqueue_makes_the_queue() {
    let f = Fixture::new();
    let (a, b) = (f.dial(), f.dial());
    f.t.enqueue(&a, &EnqueueParams::new("q").max_size(5)).unwrap();
    f.t.enqueue(&b, &EnqueueParams::new("q").max_size(50)).unwrap();
    assert_eq!(f.t.queue("q").unwrap().max_size, 5);
}

#[test]
fn max_wait_expires_exactly_on_time_and_leaves_the_call_active() {
    let mut f = Fixture::new();
    let a = f.dial();
    f.t.enqueue(&a, &EnqueueParams::new("q").max_wait_time_secs(30)).unwrap();
    f.take();
    f.clock.advance(Duration::from_micros(29_999_999));
    assert_eq!(f.t.call(&a).unwrap().state, CallState::Queued);
    assert_eq!(f.engine.next_wakeup(), Some(START.saturating_add(Duration::from_secs(30))));
    f.clock.advance(Duration::from_micros(1));
    // No maintenance call: the next command fires what is due first.
    assert_eq!(f.t.call(&a).unwrap().state, CallState::Active);
    let evs = f.take_events();
    assert_eq!(evs.len(), 1);
    let p = serde_json::to_value(evs[0].payload()).unwrap();
    assert_eq!((p["reason"].as_str(), p["wait_time_secs"].as_u64()), (Some("timeout"), Some(30)));
    assert_eq!(evs[0].occurred_at, START.saturating_add(Duration::from_secs(30)));
    assert_eq!(f.t.queue("q").unwrap().total_dequeued.timeout, 1);
}

/// A call that leaves and joins again within one instant is a new stay: its deadline comes
/// after those of calls that joined in between, even when all are due at the same instant.
#[test]
fn a_stay_begun_again_in_the_same_instant_times_out_in_its_new_place() {
    let mut f = Fixture::new();
    let (x, y) = (f.dial(), f.dial());
    let p = EnqueueParams::new("q").max_wait_time_secs(10);
    f.t.enqueue(&x, &p).unwrap();
    f.t.leave_queue(&x, &none()).unwrap();
    f.t.enqueue(&y, &p).unwrap();
    f.t.enqueue(&x, &p).unwrap();
    f.take();
    f.advance(10);
    assert_eq!(f.take(), [ev("call.dequeued", &y), ev("call.dequeued", &x)]);
    assert_eq!(f.t.queue("q").unwrap().total_dequeued.timeout, 2);
    f.check();
}

#[test]
fn deadlines_are_per_call() {
    let f = Fixture::new();
    let (a, b, c) = (f.dial(), f.dial(), f.dial());
    f.t.enqueue(&a, &EnqueueParams::new("q").max_wait_time_secs(100)).unwrap();
    f.t.enqueue(&b, &EnqueueParams::new("q").max_wait_time_secs(10)).unwrap();
    f.t.enqueue(&c, &EnqueueParams::new("q")).unwrap();
    f.advance(10);
    let ids: Vec<_> =
        f.t.queue_calls("q", PageRequest::default())
            .unwrap()
            .data
            .into_iter()
            .map(|c| c.call_control_id)
            .collect();
    assert_eq!(ids, vec![a.clone(), c]);
    // Leaving and re-joining drops the old deadline.
    f.t.leave_queue(&a, &none()).unwrap();
    f.t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
    f.advance(200);
    assert_eq!(f.t.queue("q").unwrap().current_size, 2);
}

#[test]
fn priority_bands_are_served_highest_first_fifo_within() {
    let f = Fixture::new();
    let calls: Vec<_> = (0..4).map(|_| f.dial()).collect();
    for (c, p) in calls.iter().zip([0, 5, 0, 5]) {
        f.t.enqueue(c, &EnqueueParams::new("q").priority(p)).unwrap();
    }
    let order = |f: &Fixture| -> Vec<String> {
        f.t.queue_calls("q", PageRequest::default())
            .unwrap()
            .data
            .into_iter()
            .map(|c| c.call_control_id)
            .collect()
    };
    assert_eq!(order(&f), vec![calls[1].clone(), calls[3].clone(), calls[0].clone(), calls[2].clone()]);
    // A priority change keeps arrival order inside the new band.
    let u = QueueCallUpdate { priority: Some(5), keep_after_hangup: None };
    let info = f.t.update_queue_call("q", &calls[2], &u).unwrap();
    // calls[2] arrived before calls[3], so it goes ahead of it in band 5.
    assert_eq!(info.queue_position, 2);
    assert_eq!(order(&f), vec![calls[1].clone(), calls[2].clone(), calls[3].clone(), calls[0].clone()]);
    let agent = f.dial();
    f.t.bridge(&agent, &BridgeParams::queue("q")).unwrap();
    assert_eq!(f.t.call(&calls[1]).unwrap().bridged_with.as_deref(), Some(agent.as_str()));
}

#[test]
fn leave_queue() {
    let mut f = Fixture::new();
    let a = f.dial();
    assert_eq!(code(f.t.leave_queue(&a, &none())), "95002");
    assert_eq!(code(f.t.leave_queue("zz", &none())), "90015");
    f.t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
    f.take();
    f.t.leave_queue(&a, &none()).unwrap();
    assert_eq!(f.take(), vec![ev("call.dequeued", &a)]);
    assert_eq!(f.t.call(&a).unwrap().state, CallState::Active);
    f.t.hangup(&a, &none()).unwrap();
    assert_eq!(code(f.t.leave_queue(&a, &none())), "90018");
}

/// `call.dequeued` gives the wait in whole seconds, rounded down.
#[test]
fn a_dequeued_events_wait_is_floored_to_whole_seconds() {
    let mut f = Fixture::new();
    let (a, b) = (f.dial(), f.dial());
    f.t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
    f.t.enqueue(&b, &EnqueueParams::new("q")).unwrap();
    f.clock.advance(Duration::from_micros(1_999_999));
    f.t.leave_queue(&a, &none()).unwrap();
    f.clock.advance(Duration::from_micros(1));
    f.t.leave_queue(&b, &none()).unwrap();
    let waits: Vec<u64> = f
        .take_events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CallDequeued { wait_time_secs, .. } => Some(*wait_time_secs),
            _ => None,
        })
        .collect();
    assert_eq!(waits, [1, 2]);
}

/// A threshold too long for microseconds counts every wait in time (it saturates).
#[test]
fn a_threshold_too_long_for_microseconds_counts_every_wait_in_time() {
    let f = Fixture::with(Engine::builder().service_level_threshold(Duration::MAX));
    let caller = f.dial();
    f.t.enqueue(&caller, &EnqueueParams::new("q")).unwrap();
    let agent = f.dial();
    f.clock.advance(Duration::from_secs(3));
    f.t.bridge(&agent, &BridgeParams::queue("q")).unwrap();
    let q = f.t.queue("q").unwrap();
    assert_eq!((q.today.outcomes.bridged, q.bridged_within_service_level), (1, 1));
}

#[test]
fn bridge_to_a_queue_takes_the_head_and_ignores_call_control_id() {
    let mut f = Fixture::new();
    let (c1, c2, agent) = (f.dial(), f.dial(), f.dial());
    f.t.enqueue(&c1, &EnqueueParams::new("q")).unwrap();
    f.t.enqueue(&c2, &EnqueueParams::new("q")).unwrap();
    f.take();
    let mut p = BridgeParams::queue("q");
    p.call_control_id = Some("whatever the SDK sends".into());
    f.t.bridge(&agent, &p).unwrap();
    assert_eq!(f.take(), vec![ev("call.dequeued", &c1), ev("call.bridged", &agent), ev("call.bridged", &c1)]);
    assert_eq!(f.t.queue_call("q", &c2).unwrap().queue_position, 1);
    assert_eq!(f.t.queue("q").unwrap().total_dequeued.bridged, 1);
}

#[test]
fn bridge_refusals() {
    let f = Fixture::new();
    let (a, b, ended) = (f.dial(), f.dial(), f.dial());
    f.t.hangup(&ended, &none()).unwrap();
    f.t.enqueue(&b, &EnqueueParams::new("q")).unwrap();
    let before = observe(&f, &[&a, &b, &ended]);
    assert_eq!(code(f.t.bridge(&a, &BridgeParams::queue("empty"))), "95001");
    assert_eq!(code(f.t.bridge(&a, &BridgeParams::default())), "10004");
    assert_eq!(code(f.t.bridge(&a, &BridgeParams::call(&a))), "10033");
    assert_eq!(code(f.t.bridge(&a, &BridgeParams::call("unknown"))), "90015");
    assert_eq!(code(f.t.bridge(&a, &BridgeParams::call(&ended))), "90018");
    assert_eq!(code(f.t.bridge(&ended, &BridgeParams::call(&a))), "90018");
    assert_eq!(code(f.t.bridge(&b, &BridgeParams::queue("q"))), "10033");
    let mut bad = BridgeParams::queue("q");
    bad.media.get_or_insert_default().record = Some("always".into());
    assert_eq!(code(f.t.bridge(&a, &bad)), "10032");
    assert_eq!(observe(&f, &[&a, &b, &ended]), before);
    f.check();
}

#[test]
fn bridge_to_a_dead_kept_head_fails_with_callback_details_and_removes_it() {
    let mut f = Fixture::new();
    let (dead, alive, agent) = (f.dial(), f.dial(), f.dial());
    let mut p = EnqueueParams::new("q").keep_after_hangup(true);
    p.options.client_state = Some("Y2I=".into());
    f.t.enqueue(&dead, &p).unwrap();
    f.t.enqueue(&alive, &EnqueueParams::new("q")).unwrap();
    f.t.hangup(&dead, &none()).unwrap();
    let qc = f.t.queue_call("q", &dead).unwrap();
    assert!(!qc.is_alive);
    assert_eq!(f.t.queue("q").unwrap().current_size, 2);
    f.take();
    let err = f.t.bridge(&agent, &BridgeParams::queue("q")).unwrap_err();
    let Error::CallEnded { callback: Some(cb) } = &err else { panic!("{err:?}") };
    assert_eq!(
        (&*cb.call_control_id, &*cb.from, cb.client_state.as_deref()),
        (dead.as_str(), "+15550002", Some("Y2I="))
    );
    assert_eq!(f.take(), vec![ev("call.dequeued", &dead)]);
    assert_eq!(f.t.call(&agent).unwrap().state, CallState::Active);
    f.t.bridge(&agent, &BridgeParams::queue("q")).unwrap();
    assert_eq!(f.t.call(&alive).unwrap().state, CallState::Bridged);
    f.check();
}

#[test]
fn unbridge_hangs_up_the_other_leg_unless_it_asked_to_park() {
    let mut f = Fixture::new();
    let (a, b, c) = (f.dial(), f.dial(), f.dial());
    // a issued with park: when b hangs up, a is parked.
    f.t.bridge(&a, &BridgeParams::call(&b).park_after_unbridge()).unwrap();
    f.take();
    f.t.hangup(&b, &none()).unwrap();
    assert_eq!(f.take(), vec![ev("call.hangup", &b)]);
    assert_eq!(f.t.call(&a).unwrap().state, CallState::Active);
    // c issued without park: when a enqueues, c is hung up (source callee).
    f.t.bridge(&c, &BridgeParams::call(&a)).unwrap();
    f.take_events();
    f.t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
    let evs = f.take_events();
    let hangup = evs.iter().find(|e| e.event_type() == "call.hangup").unwrap();
    assert_eq!(serde_json::to_value(hangup.payload()).unwrap()["hangup_source"], "callee");
    assert_eq!(f.t.call(&c).unwrap().state, CallState::Ended);
    f.check();
}

#[test]
fn bridging_elsewhere_unbridges_first_and_queued_legs_leave_with_reason_bridged() {
    let mut f = Fixture::new();
    let (a, b, c) = f.bridged_pair_and_queued_call();
    f.take();
    f.t.bridge(&a, &BridgeParams::call(&c)).unwrap();
    assert_eq!(
        f.take(),
        vec![ev("call.dequeued", &c), ev("call.bridged", &a), ev("call.bridged", &c), ev("call.hangup", &b)]
    );
    assert_eq!(f.t.queue("q").unwrap().total_dequeued.bridged, 1);
    // Bridging the same pair again changes nothing.
    f.t.bridge(&c, &BridgeParams::call(&a)).unwrap();
    assert!(f.take().is_empty());
    f.check();
}

#[test]
fn hangup_rules() {
    let mut f = Fixture::new();
    let (a, kept) = (f.dial(), f.dial());
    f.t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
    f.t.enqueue(&kept, &EnqueueParams::new("q").keep_after_hangup(true)).unwrap();
    f.take();
    f.t.hangup(&a, &none()).unwrap();
    f.t.hangup(&kept, &none()).unwrap();
    assert_eq!(f.take(), vec![ev("call.dequeued", &a), ev("call.hangup", &a), ev("call.hangup", &kept)]);
    assert_eq!(code(f.t.hangup(&a, &none())), "90018");
    assert_eq!(code(f.t.hangup("unknown", &none())), "90015");
    let info = f.t.call(&kept).unwrap();
    assert_eq!((info.state, info.is_alive, info.queue.as_deref()), (CallState::Ended, false, Some("q")));
    assert_eq!(f.t.queue("q").unwrap().current_size, 1);
    let h = f.take_events();
    assert!(h.is_empty());
    f.check();
}

#[test]
fn hangup_event_payload_has_the_telnyx_fields() {
    let mut f = Fixture::new();
    let a = f.dial();
    f.take_events();
    f.t.hangup(&a, &CommandOptions { client_state: Some("aGk=".into()), command_id: None }).unwrap();
    let e = &f.take_events()[0];
    let v = serde_json::to_value(e).unwrap();
    assert_eq!(v["record_type"], "event");
    assert_eq!(v["event_type"], "call.hangup");
    let p = &v["payload"];
    for (k, want) in [
        ("hangup_cause", "normal_clearing"),
        ("hangup_source", "caller"),
        ("state", "hangup"),
        ("client_state", "aGk="),
        ("connection_id", "conn"),
        ("call_control_id", a.as_str()),
    ] {
        assert_eq!(p[k], want, "{k}");
    }
    for k in ["call_leg_id", "call_session_id", "from", "to", "start_time", "sip_hangup_cause"] {
        assert!(p[k].is_string(), "{k}");
    }
    assert!(v["occurred_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn an_absent_client_state_is_left_out_of_event_payloads() {
    let mut f = Fixture::new();
    let (a, b) = (f.dial(), f.dial());
    f.t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
    f.t.bridge(&b, &BridgeParams::queue("q")).unwrap();
    f.t.hangup(&b, &none()).unwrap();
    let events = f.take_events();
    let types: std::collections::BTreeSet<_> =
        events.iter().filter(|e| e.kind.is_webhook_event()).map(Event::event_type).collect();
    assert_eq!(types.len(), 6, "every call event type: {types:?}");
    for e in &events {
        let v = serde_json::to_value(e).unwrap();
        let payload = v["payload"].as_object().unwrap();
        assert!(!payload.contains_key("client_state"), "{}: {payload:?}", e.event_type());
        assert!(payload.values().all(|x| !x.is_null()), "{}: {payload:?}", e.event_type());
    }
}

#[test]
fn transfer_makes_a_new_call_and_bridges_it() {
    let mut f = Fixture::new();
    let a = f.dial();
    f.t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
    f.take_events();
    let b = f.t.transfer(&a, &TransferParams::new("+1999")).unwrap();
    assert_eq!((b.from.as_str(), b.to.as_str(), b.connection_id.as_str()), ("+15550001", "+1999", "conn"));
    assert_eq!(b.state, CallState::Bridged);
    let types: Vec<_> = f.take_events().iter().map(Event::event_type).collect();
    assert_eq!(types, ["call.initiated", "call.answered", "call.dequeued", "call.bridged", "call.bridged"]);
    assert_eq!(f.t.queue("q").unwrap().total_dequeued.bridged, 1);
    assert_eq!(code(f.t.transfer(&a, &TransferParams::default())), "10033");
}

#[test]
fn command_id_is_not_executed_twice_within_60_seconds() {
    let mut f = Fixture::new();
    let a = f.dial();
    let opts = CommandOptions { client_state: None, command_id: Some("cmd-1".into()) };
    let mut p = EnqueueParams::new("q");
    p.options = opts;
    f.t.enqueue(&a, &p).unwrap();
    f.t.leave_queue(&a, &none()).unwrap();
    f.take();
    f.t.enqueue(&a, &p).unwrap();
    assert!(f.take().is_empty(), "a repeat is answered with success and not executed");
    assert_eq!(f.t.call(&a).unwrap().state, CallState::Active);
    f.advance(60);
    f.t.enqueue(&a, &p).unwrap();
    assert_eq!(f.take(), vec![ev("call.enqueued", &a)]);
    // A repeated hangup after the call ended still answers success.
    f.t.hangup(&a, &opts_with("h")).unwrap();
    f.t.hangup(&a, &opts_with("h")).unwrap();
    assert_eq!(code(f.t.hangup(&a, &opts_with("other"))), "90018");
}

/// A dial's `command_id` is remembered by the tenant (the dial has no call yet): a repeat
/// within 60 s answers the first dial's call as it is now, and makes nothing.
#[test]
fn a_dial_repeated_with_its_command_id_makes_no_second_call() {
    let mut f = Fixture::with(Engine::builder().ended_call_retention(Duration::from_secs(90)));
    let dial = |command_id: &str| {
        let mut p = DialParams::new("+15550001", "+15550002", "conn");
        p.command_id = Some(command_id.into());
        p
    };
    let a = f.t.dial(&dial("d1")).unwrap().call_control_id;
    assert_eq!(f.take_events().len(), 2, "call.initiated and call.answered");
    f.t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
    f.take_events();
    let seq = f.t.last_seq();
    // Even with other parameters: the first call, in its state now.
    let mut other = dial("d1");
    other.to = "+1999".into();
    let again = f.t.dial(&other).unwrap();
    assert_eq!((&*again.call_control_id, again.state, &*again.to), (&*a, CallState::Queued, "+15550001"));
    assert!(f.take_events().is_empty());
    assert_eq!((f.t.last_seq(), f.t.live_calls()), (seq, 1));
    // Another id makes another call; so does the same id in another tenant.
    let b = f.t.dial(&dial("d2")).unwrap().call_control_id;
    assert_ne!(a, b);
    let elsewhere = f.engine.tenant("other").dial(&dial("d1")).unwrap().call_control_id;
    assert_ne!(elsewhere, a);
    // After a hangup the repeat still answers (the call, ended), not 90018.
    f.t.hangup(&a, &none()).unwrap();
    f.advance(59);
    assert_eq!(f.t.dial(&dial("d1")).unwrap().state, CallState::Ended);
    // After 60 s the id makes a new call.
    f.advance(1);
    let c = f.t.dial(&dial("d1")).unwrap().call_control_id;
    assert_ne!(c, a);
    assert_eq!(f.t.dial(&dial("d1")).unwrap().call_control_id, c);
    f.check();
}

#[test]
fn a_dial_refused_is_not_remembered_and_a_forgotten_call_is_not_made_again() {
    let f = Fixture::with(Engine::builder().ended_call_retention(Duration::from_secs(10)));
    let dial = |command_id: &str, adopt: Option<&str>| {
        let mut p = DialParams::new("+15550001", "+15550002", "conn");
        p.command_id = Some(command_id.into());
        p.call_control_id = adopt.map(Into::into);
        f.t.dial(&p)
    };
    let mut bad = DialParams::new("+1", "+2", "conn");
    bad.command_id = Some(String::new());
    let refused = f.t.dial(&bad).unwrap_err();
    assert_eq!((refused.code(), refused.parameter()), ("10033", Some("command_id")));
    bad.command_id = Some("x".repeat(256));
    assert_eq!(code(f.t.dial(&bad)), "10033");
    // Refused for its adopted id, then accepted with a free one: the id was not remembered.
    let a = dial("d1", Some("mine")).unwrap().call_control_id;
    assert_eq!(code(dial("d2", Some("mine"))), "90015");
    let b = dial("d2", None).unwrap().call_control_id;
    assert_ne!(a, b);
    // A repeat is still checked first, as every command.
    let mut repeat = DialParams::new("+15550001", "+15550002", "conn");
    repeat.command_id = Some("d2".into());
    repeat.webhook_url = Some("ftp://x".into());
    assert_eq!(code(f.t.dial(&repeat)), "10033");
    // The first call forgotten within the window: its repeat answers 90015 and makes nothing.
    f.t.hangup(&a, &none()).unwrap();
    f.advance(11);
    assert_eq!(code(f.t.call(&a)), "90015");
    let seq = f.t.last_seq();
    assert_eq!(code(dial("d1", Some("mine"))), "90015");
    assert_eq!(code(dial("d1", None)), "90015");
    assert_eq!((f.t.last_seq(), f.t.live_calls()), (seq, 1));
    f.check();
}

fn opts_with(id: &str) -> CommandOptions {
    CommandOptions { client_state: None, command_id: Some(id.into()) }
}

#[test]
fn queue_crud() {
    let mut f = Fixture::new();
    let q = f.t.create_queue("sales", None).unwrap();
    assert_eq!((q.max_size, q.current_size, q.explicit), (300, 0, true));
    assert_eq!(code(f.t.create_queue("sales", Some(5))), "95003");
    assert_eq!(code(f.t.create_queue("x", Some(0))), "10033");
    assert_eq!(code(f.t.create_queue("", None)), "10033");
    assert_eq!(f.t.update_queue("sales", 1).unwrap().max_size, 1);
    assert_eq!(code(f.t.update_queue("sales", 0)), "10033");
    assert_eq!(code(f.t.update_queue("nope", 3)), "10005");
    let (a, b) = (f.dial(), f.dial());
    f.t.enqueue(&a, &EnqueueParams::new("sales")).unwrap();
    assert_eq!(code(f.t.enqueue(&b, &EnqueueParams::new("sales"))), "90036");
    assert_eq!(code(f.t.delete_queue("sales")), "90050");
    assert_eq!(code(f.t.delete_queue("nope")), "10005");
    f.t.leave_queue(&a, &none()).unwrap();
    f.take_events();
    f.t.delete_queue("sales").unwrap();
    assert_eq!(f.take_events()[0].event_type(), "queue.deleted");
    assert_eq!(code(f.t.queue("sales")), "10005");
}

#[test]
fn lowering_max_size_removes_nobody() {
    let f = Fixture::new();
    let calls: Vec<_> = (0..3).map(|_| f.dial()).collect();
    for c in &calls {
        f.t.enqueue(c, &EnqueueParams::new("q")).unwrap();
    }
    f.t.update_queue("q", 1).unwrap();
    assert_eq!(f.t.queue("q").unwrap().current_size, 3);
    let extra = f.dial();
    assert_eq!(code(f.t.enqueue(&extra, &EnqueueParams::new("q"))), "90036");
}

#[test]
fn queue_cap_answers_95004() {
    let f = Fixture::with(Engine::builder().max_queues_per_tenant(1));
    f.t.create_queue("a", None).unwrap();
    assert_eq!(code(f.t.create_queue("b", None)), "95004");
    let c = f.dial();
    assert_eq!(code(f.t.enqueue(&c, &EnqueueParams::new("b"))), "95004");
    assert_eq!(f.t.call(&c).unwrap().state, CallState::Active);
    f.check();
}

#[test]
fn lists_are_sorted_and_paginated() {
    let f = Fixture::new();
    for name in ["c", "a", "b"] {
        f.t.create_queue(name, None).unwrap();
    }
    let p = f.t.queues(PageRequest::new(2, 2)).unwrap();
    assert_eq!(p.data.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), ["c"]);
    assert_eq!((p.page_number, p.page_size, p.total_pages, p.total_results), (2, 2, 2, 3));
    assert_eq!(code(f.t.queues(PageRequest::new(0, 2))), "10033");
    assert_eq!(code(f.t.queues(PageRequest::new(1, 251))), "10033");
    let calls: Vec<_> = (0..5).map(|_| f.dial()).collect();
    for c in &calls {
        f.t.enqueue(c, &EnqueueParams::new("a")).unwrap();
    }
    let p = f.t.queue_calls("a", PageRequest::new(2, 2)).unwrap();
    let got: Vec<_> = p.data.iter().map(|c| (c.call_control_id.clone(), c.queue_position)).collect();
    assert_eq!(got, vec![(calls[2].clone(), 3), (calls[3].clone(), 4)]);
    assert_eq!(p.total_pages, 3);
    assert_eq!(code(f.t.queue_calls("zz", PageRequest::default())), "10005");
    assert_eq!(code(f.t.queue_call("a", "zz")), "10005");
    assert_eq!(code(f.t.queue_call("zz", &calls[0])), "10005");
}

#[test]
fn remove_queue_call() {
    let mut f = Fixture::new();
    let (a, dead) = (f.dial(), f.dial());
    f.t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
    f.t.enqueue(&dead, &EnqueueParams::new("q").keep_after_hangup(true)).unwrap();
    f.t.hangup(&dead, &none()).unwrap();
    f.take();
    f.t.remove_queue_call("q", &a).unwrap();
    f.t.remove_queue_call("q", &dead).unwrap();
    assert_eq!(f.take(), vec![ev("call.dequeued", &a)], "a dead kept call is dropped silently");
    assert_eq!(f.t.call(&a).unwrap().state, CallState::Active);
    assert_eq!(code(f.t.remove_queue_call("q", &a)), "10005");
    assert_eq!(code(f.t.update_queue_call("q", &a, &QueueCallUpdate::default())), "10005");
    f.check();
}

#[test]
fn idle_auto_queues_are_collected_on_time_explicit_never() {
    let mut f = Fixture::new();
    let a = f.dial();
    f.t.create_queue("explicit", None).unwrap();
    f.t.enqueue(&a, &EnqueueParams::new("auto")).unwrap();
    f.advance(100);
    f.t.leave_queue(&a, &none()).unwrap();
    f.take_events();
    f.advance(299);
    assert!(f.t.queue("auto").is_ok());
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(code(f.t.queue("auto")), "10005");
    let evs = f.take_events();
    assert_eq!(evs.len(), 1);
    assert_eq!(serde_json::to_value(evs[0].payload()).unwrap()["reason"], "idle");
    f.advance(10_000);
    assert!(f.t.queue("explicit").is_ok());
    // A re-made queue gets a new id.
    let id1 = {
        f.t.enqueue(&a, &EnqueueParams::new("auto")).unwrap();
        f.t.queue("auto").unwrap().id
    };
    f.t.leave_queue(&a, &none()).unwrap();
    f.advance(200);
    f.t.update_queue("auto", 7).unwrap(); // a change: the idle clock restarts
    f.advance(200);
    assert_eq!(f.t.queue("auto").unwrap().id, id1);
    f.advance(100);
    assert_eq!(code(f.t.queue("auto")), "10005");
    f.check();
}

#[test]
fn ended_calls_stay_readable_for_the_retention_time() {
    let f = Fixture::new();
    let a = f.dial();
    f.t.hangup(&a, &none()).unwrap();
    f.advance(599);
    let info = f.t.call(&a).unwrap();
    assert_eq!((info.state, info.end_time), (CallState::Ended, Some(START)));
    f.advance(1);
    assert_eq!(code(f.t.call(&a)), "90015");
}

#[test]
fn figures_average_longest_estimated() {
    let f = Fixture::new();
    let agent = f.dial();
    let calls: Vec<_> = (0..6).map(|_| f.dial()).collect();
    for c in &calls {
        f.t.enqueue(c, &EnqueueParams::new("q")).unwrap();
        f.advance(10);
    }
    // Waits: 60, 50, 40, 30, 20, 10 -> mean 35.
    let q = f.t.queue("q").unwrap();
    assert_eq!((q.average_wait_time_secs, q.longest_wait_time_secs, q.estimated_wait_time_secs), (35, 60, 0));
    // Bridge-dequeues 30 s apart -> 30 s per position.
    f.t.bridge(&agent, &BridgeParams::queue("q").park_after_unbridge()).unwrap();
    f.advance(30);
    f.t.bridge(&agent, &BridgeParams::queue("q").park_after_unbridge()).unwrap();
    let q = f.t.queue("q").unwrap();
    assert_eq!(q.current_size, 4);
    assert_eq!(q.estimated_wait_time_secs, 5 * 30);
    assert_eq!(f.t.queue_call("q", &calls[2]).unwrap().estimated_wait_time_secs, 30);
    assert_eq!(q.total_enqueued, 6);
}

#[test]
fn tenants_are_isolated() {
    let f = Fixture::new();
    let other = f.engine.tenant("other");
    let a = f.dial();
    f.t.enqueue(&a, &EnqueueParams::new("q")).unwrap();
    assert_eq!(code(other.call(&a)), "90015");
    assert_eq!(code(other.hangup(&a, &none())), "90015");
    assert_eq!(code(other.queue("q")), "10005");
    assert_eq!(
        code(other.bridge(
            &other.dial(&DialParams::new("+1", "+2", "c")).unwrap().call_control_id,
            &BridgeParams::queue("q")
        )),
        "95001"
    );
    assert_eq!(other.queues(PageRequest::default()).unwrap().total_results, 0);
    // The same external id may exist in two tenants.
    let mut p = DialParams::new("+1", "+2", "c");
    p.call_control_id = Some("shared".into());
    f.t.dial(&p).unwrap();
    other.dial(&p).unwrap();
    other.hangup("shared", &none()).unwrap();
    assert_eq!(f.t.call("shared").unwrap().state, CallState::Active);
    let mut sub = f.engine.subscribe_tenant("other");
    f.t.hangup("shared", &none()).unwrap();
    assert!(sub.try_recv().is_none());
    let names: Vec<String> = f.engine.tenants().iter().map(|t| t.name().to_owned()).collect();
    assert_eq!(names, [f.t.name(), "other"], "every tenant, in the order made");
    assert_eq!(f.engine.tenants()[1].live_calls(), other.live_calls());
    f.check();
}

#[test]
fn a_slow_subscriber_loses_events_but_never_blocks_commands() {
    let f = Fixture::with(Engine::builder().event_capacity(2));
    let slow = f.engine.subscribe();
    for _ in 0..100 {
        f.dial();
    }
    assert!(slow.dropped() > 0);
    drop(slow);
    f.dial();
}

#[test]
fn a_subscriber_with_room_for_every_batch_loses_none() {
    let f = Fixture::with(Engine::builder().event_capacity(2));
    let mut all = f.engine.subscribe_bounded(usize::MAX);
    for _ in 0..100 {
        f.dial();
    }
    assert_eq!((all.dropped(), all.drain().len()), (0, 200), "initiated and answered per dial");
}

#[test]
fn errors_carry_telnyx_code_title_and_status() {
    let f = Fixture::new();
    let e = f.t.hangup("nope", &none()).unwrap_err();
    assert_eq!((e.code(), e.title(), e.http_status()), ("90015", "Invalid Call Control ID", 422));
    let e = f.t.delete_queue("nope").unwrap_err();
    assert_eq!((e.code(), e.title(), e.http_status()), ("10005", "Resource not found", 404));
}

#[test]
fn timers_made_stale_by_churn_are_purged_and_valid_ones_still_fire() {
    let mut f = Fixture::new();
    let (a, b) = (f.dial(), f.dial());
    for _ in 0..20_000 {
        f.t.enqueue(&a, &EnqueueParams::new("q").max_wait_time_secs(100)).unwrap();
        f.t.leave_queue(&a, &none()).unwrap();
    }
    f.t.enqueue(&b, &EnqueueParams::new("q").max_wait_time_secs(50)).unwrap();
    f.t.enqueue(&a, &EnqueueParams::new("q").max_wait_time_secs(100)).unwrap();
    f.take();
    f.advance(50);
    assert_eq!(f.take(), vec![ev("call.dequeued", &b)]);
    f.advance(50);
    assert_eq!(f.take(), vec![ev("call.dequeued", &a)]);
    f.advance(300);
    assert_eq!(code(f.t.queue("q")), "10005", "the idle timer survived the purges");
}

/// The queue's member index keeps short ids inline and compares long ones through the call:
/// ids of every length, and long ids that share a long prefix, are told apart.
#[test]
fn queue_members_are_found_by_ids_of_any_length() {
    let f = Fixture::new();
    let prefix = "x".repeat(49);
    let ids: Vec<String> =
        ["a".into(), "b".repeat(50), format!("{prefix}1"), format!("{prefix}12"), format!("{prefix}13")]
            .into_iter()
            .chain(std::iter::once("z".repeat(200)))
            .collect();
    for id in &ids {
        let mut p = DialParams::new("+1", "+2", "app");
        p.call_control_id = Some(id.clone());
        f.t.dial(&p).unwrap();
        f.t.enqueue(id, &EnqueueParams::new("q")).unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(f.t.queue_position("q", id).unwrap(), i + 1, "{id}");
        assert_eq!(f.t.queue_call("q", id).unwrap().call_control_id, *id);
    }
    assert_eq!(code(f.t.queue_position("q", &format!("{prefix}14"))), "10005");
    assert_eq!(code(f.t.queue_position("q", &"b".repeat(51))), "10005");
    f.t.update_queue_call("q", &ids[4], &QueueCallUpdate { priority: Some(5), ..Default::default() })
        .unwrap();
    assert_eq!(f.t.queue_position("q", &ids[4]).unwrap(), 1);
    f.t.remove_queue_call("q", &ids[3]).unwrap();
    assert_eq!(code(f.t.queue_position("q", &ids[3])), "10005");
    assert_eq!(f.t.queue_position("q", &ids[2]).unwrap(), 4);
    assert_eq!(f.t.queue_position("q", &ids[5]).unwrap(), 5);
    f.engine.check_invariants().unwrap();
}

/// Deadlines of one queue fire in batches: the order of firing stays exact across queues
/// and across batch boundaries (ties: by queue, then enqueue order), and each member leaves
/// at its own instant.
#[test]
fn many_deadlines_fire_in_exact_order_across_queues_and_batches() {
    let mut f = Fixture::new();
    let (mut in_a, mut in_b) = (Vec::new(), Vec::new());
    // 600 calls spread over two queues, all due at the same instant.
    for i in 0..600 {
        let c = f.dial();
        let (q, list) = if i % 3 == 0 { ("b", &mut in_b) } else { ("a", &mut in_a) };
        f.t.enqueue(&c, &EnqueueParams::new(q).max_size(1000).max_wait_time_secs(30)).unwrap();
        list.push(c);
    }
    // And one that waits less, enqueued last but due first.
    let early = f.dial();
    f.t.enqueue(&early, &EnqueueParams::new("a").max_size(1000).max_wait_time_secs(10)).unwrap();
    f.take();
    f.clock.advance(Duration::from_millis(10_500));
    f.engine.run_pending_tasks();
    assert_eq!(f.take(), vec![ev("call.dequeued", &early)]);
    f.advance(20);
    let events = f.events.drain();
    let got: Vec<String> =
        events.iter().filter_map(|e| e.kind.subject()).map(|s| s.call.call_control_id.to_string()).collect();
    let expected: Vec<String> = in_a.iter().chain(&in_b).cloned().collect();
    assert!(got == expected, "deadlines fired out of order ({} events)", got.len());
    let deadline = START.saturating_add(Duration::from_secs(30));
    assert!(events.iter().all(|e| e.event_type() == "call.dequeued" && e.occurred_at == deadline));
    assert_eq!(f.t.queue("a").unwrap().total_dequeued.timeout, 401);
    assert_eq!(f.t.queue("b").unwrap().total_dequeued.timeout, 200);
    f.engine.check_invariants().unwrap();
}

/// Past the cap on kept ended calls, the longest-ended are forgotten at once; a call kept in
/// a queue after hangup stays; a new call reusing a forgotten id is not touched.
#[test]
fn ended_calls_past_the_cap_are_forgotten_oldest_first() {
    let f = Fixture::with(Engine::builder().max_ended_calls_per_tenant(2));
    let kept = f.dial();
    f.t.enqueue(&kept, &EnqueueParams::new("q").keep_after_hangup(true)).unwrap();
    f.t.hangup(&kept, &none()).unwrap();
    let mut p = DialParams::new("+1", "+2", "app");
    p.call_control_id = Some("reused".into());
    f.t.dial(&p).unwrap();
    f.t.hangup("reused", &none()).unwrap();
    let ended: Vec<String> = (0..3).map(|_| f.dial()).collect();
    for c in &ended {
        f.t.hangup(c, &none()).unwrap();
    }
    assert_eq!(f.t.call(&kept).unwrap().state, CallState::Ended, "a dead queue member stays");
    assert_eq!(code(f.t.call("reused")), "90015");
    assert_eq!(code(f.t.call(&ended[0])), "90015");
    assert_eq!(f.t.call(&ended[1]).unwrap().state, CallState::Ended);
    assert_eq!(f.t.call(&ended[2]).unwrap().state, CallState::Ended);
    // The id is free again; the new call is not taken for the forgotten one.
    f.t.dial(&p).unwrap();
    let more = f.dial();
    f.t.hangup(&more, &none()).unwrap();
    assert_eq!(f.t.call("reused").unwrap().state, CallState::Active);
    assert_eq!(code(f.t.call(&ended[1])), "90015");
    // The dead member leaves its queue: from then on it counts like any ended call.
    f.t.remove_queue_call("q", &kept).unwrap();
    assert_eq!(f.t.call(&kept).unwrap().state, CallState::Ended);
    for _ in 0..2 {
        let c = f.dial();
        f.t.hangup(&c, &none()).unwrap();
    }
    assert_eq!(code(f.t.call(&kept)), "90015");
    f.engine.check_invariants().unwrap();
}

/// Two callers bridged one after the other from queue "q" of an engine whose service-level
/// threshold is `threshold`: the first after exactly `threshold`, the second a microsecond
/// later.
fn bridged_at_and_just_after(threshold: Duration) -> QueueInfo {
    let f = Fixture::with(Engine::builder().service_level_threshold(threshold));
    let callers: Vec<String> = (0..2).map(|_| f.dial()).collect();
    for c in &callers {
        f.t.enqueue(c, &EnqueueParams::new("q")).unwrap();
    }
    let agent = f.dial();
    let park = BridgeParams { after_unbridge: AfterUnbridge::Park, ..BridgeParams::queue("q") };
    f.clock.advance(threshold);
    f.t.bridge(&agent, &park).unwrap(); // callers[0] after exactly the threshold: in time
    f.t.hangup(&callers[0], &none()).unwrap();
    f.clock.advance(Duration::from_micros(1));
    f.t.bridge(&agent, &park).unwrap(); // callers[1] a microsecond later: late
    f.t.queue("q").unwrap()
}

/// The threshold and the waits compare to the microsecond: a threshold of 12.5 s takes in a
/// wait of exactly 12.5 s and leaves out one a microsecond longer.
#[test]
fn a_service_level_threshold_counts_to_the_microsecond() {
    let q = bridged_at_and_just_after(Duration::from_millis(12_500));
    assert_eq!((q.today.outcomes.bridged, q.bridged_within_service_level), (2, 1));
    assert_eq!(q.wait_histogram.sum_micros, 25_000_001);
}

/// The threshold's microseconds below the millisecond count too.
#[test]
fn a_sub_millisecond_service_level_threshold_counts() {
    let q = bridged_at_and_just_after(Duration::from_micros(12_000_500));
    assert_eq!((q.today.outcomes.bridged, q.bridged_within_service_level), (2, 1));
}

#[test]
fn queue_figures_count_service_level_waits_and_the_hour_of_lengths() {
    // A 15 s threshold instead of the default 20 s: answered after 10 s is in time, 30 s is not.
    let f = Fixture::with(Engine::builder().service_level_threshold(Duration::from_secs(15)));
    f.t.create_queue("q", None).unwrap(); // made by the create call: never idle-collected
    let callers: Vec<String> = (0..4).map(|_| f.dial()).collect();
    for c in &callers {
        f.t.enqueue(c, &EnqueueParams::new("q")).unwrap();
    }
    let agent = f.dial();
    let park = BridgeParams { after_unbridge: AfterUnbridge::Park, ..BridgeParams::queue("q") };
    f.advance(10);
    f.t.bridge(&agent, &park).unwrap(); // callers[0] after 10 s: in time
    f.t.hangup(&callers[0], &none()).unwrap();
    f.advance(20);
    f.t.bridge(&agent, &park).unwrap(); // callers[1] after 30 s: late
    f.t.hangup(&callers[2], &none()).unwrap(); // abandoned after 30 s
    f.t.leave_queue(&callers[3], &none()).unwrap(); // moved away: neither
    let q = f.t.queue("q").unwrap();
    assert_eq!(q.service_level_secs, 15);
    assert_eq!(q.bridged_within_service_level, 1);
    let today = q.today.outcomes;
    assert_eq!(
        today,
        Outcomes {
            enqueued: 4,
            bridged: 2,
            bridged_within_service_level: 1,
            hangup: 1,
            leave: 1,
            timeout: 0
        }
    );
    assert_eq!(today.service_level(), Some(1.0 / 3.0), "1 in time of 2 answered and 1 abandoned");
    assert_eq!(q.today.since, START, "the clock starts at midnight UTC");
    let mut waits = [0u64; WAIT_BUCKETS_SECS.len() + 1];
    waits[1] = 1; // 10 s
    waits[4] = 3; // 30 s, three times
    assert_eq!(q.wait_histogram, WaitHistogram { counts: waits, sum_micros: 100_000_000 });
    // Everything happened in the first minute, when the queue reached 4.
    assert_eq!(q.length_last_hour.len(), LENGTH_HISTORY_MINUTES);
    assert_eq!(q.length_last_hour.last(), Some(&4));
    // A day later nothing has happened today, and the queue has been empty for the hour.
    f.advance(86_400);
    let q = f.t.queue("q").unwrap();
    assert_eq!(q.today.outcomes, Outcomes::default());
    assert_eq!(q.today.since, Timestamp::from_secs(START.as_secs() + 86_400));
    assert!(q.length_last_hour.iter().all(|&n| n == 0), "{:?}", q.length_last_hour);
    assert_eq!(q.bridged_within_service_level, 1, "the life total stays");
}
