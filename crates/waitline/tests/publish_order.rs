//! Events of one command published in order: into a channel that already holds unread
//! events, to two listeners, and for a bridge whose two legs both leave queues.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use waitline::*;

fn kinds(events: &[Event]) -> Vec<(String, Option<String>)> {
    events
        .iter()
        .filter(|e| !matches!(e.event_type(), "call.initiated" | "call.answered"))
        .map(|e| (e.event_type().to_owned(), e.kind.subject().map(|s| s.call.call_control_id.to_string())))
        .collect()
}

/// The texts of an event's payload fields (`?` for one that is not a text).
fn payload_texts(e: &Event, fields: &[&str]) -> Vec<String> {
    let v = serde_json::to_value(e).unwrap();
    fields.iter().map(|k| v["payload"][k].as_str().unwrap_or("?").to_owned()).collect()
}

/// A bridge whose caller is bridged already and whose target waits in a queue makes its
/// events out of order (hangup of the old partner, then dequeued): published into a channel
/// that still holds an unread command's events, they come in publishing order.
#[test]
fn an_unsorted_command_published_after_unread_events_comes_in_order() {
    let mut f = Fixture::new();
    let (a, b, c) = f.bridged_pair_and_queued_call();
    // Nothing read: the channel holds these commands' events.
    f.t.bridge(&a, &BridgeParams::call(&c)).unwrap();
    let all = f.take_events();
    let last_seq = all.last().unwrap().seq();
    let last: Vec<Event> = all.into_iter().filter(|e| e.seq() == last_seq).collect();
    assert_eq!(
        kinds(&last),
        vec![ev("call.dequeued", &c), ev("call.bridged", &a), ev("call.bridged", &c), ev("call.hangup", &b)]
    );
}

/// The same with two listeners: the first channel (not empty) gets a copy, the second
/// (empty) the batch whole; both in publishing order, the same events.
#[test]
fn an_unsorted_command_reaches_two_listeners_in_order() {
    let mut f = Fixture::new();
    let mut second = f.engine.subscribe();
    let (a, b, c) = f.bridged_pair_and_queued_call();
    second.drain();
    f.t.bridge(&a, &BridgeParams::call(&c)).unwrap();
    let want =
        vec![ev("call.dequeued", &c), ev("call.bridged", &a), ev("call.bridged", &c), ev("call.hangup", &b)];
    let first_all = f.take_events();
    let last_seq = first_all.last().unwrap().seq();
    let first_last: Vec<Event> = first_all.into_iter().filter(|e| e.seq() == last_seq).collect();
    let second_all = second.drain();
    assert_eq!(kinds(&first_last), want);
    assert_eq!(kinds(&second_all), want);
    let ids = |v: &[Event]| v.iter().map(|e| (e.id, e.seq(), e.occurred_at)).collect::<Vec<_>>();
    assert_eq!(ids(&first_last), ids(&second_all));
}

/// Commands at different instants, none read in between: each event carries its own
/// command's number, instant, queue name and client state (the header written by the
/// publish in the channel points at the right records and text).
#[test]
fn unread_commands_each_keep_their_number_instant_and_text() {
    let mut f = Fixture::new();
    let mut want = Vec::new();
    for i in 0..4u64 {
        let call = f.dial();
        f.clock.advance(Duration::from_secs(1));
        let mut p = EnqueueParams::new(format!("queue-{i}"));
        p.options.client_state = Some(format!("state-{i}"));
        f.t.enqueue(&call, &p).unwrap();
        want.push((
            f.t.last_seq(),
            START.saturating_add(Duration::from_secs(i + 1)),
            vec![format!("queue-{i}"), format!("state-{i}")],
        ));
    }
    let events = f.take_events();
    let enqueued: Vec<_> = events
        .iter()
        .filter(|e| e.event_type() == "call.enqueued")
        .map(|e| (e.seq(), e.occurred_at, payload_texts(e, &["queue", "client_state"])))
        .collect();
    assert_eq!(enqueued, want);
}

/// A bridge with a queue's head whose caller waits in another queue: the caller leaves its
/// queue first, then the head leaves its own (both with reason `bridged`, in that order).
#[test]
fn a_queued_caller_bridging_with_another_queues_head_leaves_first() {
    let mut f = Fixture::new();
    let (a, b) = (f.dial(), f.dial());
    f.t.enqueue(&a, &EnqueueParams::new("qa")).unwrap();
    f.t.enqueue(&b, &EnqueueParams::new("qb")).unwrap();
    f.take();
    f.t.bridge(&a, &BridgeParams::queue("qb")).unwrap();
    let events = f.take_events();
    let dequeued: Vec<_> = events
        .iter()
        .filter(|e| e.event_type() == "call.dequeued")
        .map(|e| payload_texts(e, &["call_control_id", "queue", "reason"]))
        .collect();
    assert_eq!(dequeued, vec![[a.as_str(), "qa", "bridged"], [b.as_str(), "qb", "bridged"]]);
    assert_eq!(kinds(&events)[2..], [ev("call.bridged", &a), ev("call.bridged", &b)]);
    assert_eq!(f.t.queue("qa").map(|q| q.total_dequeued.bridged).ok(), Some(1));
    assert_eq!(f.t.queue("qb").map(|q| q.total_dequeued.bridged).ok(), Some(1));
    f.check();
}
