//! The journal: one record per number of a tenant's sequence, nothing for reads and
//! refusals, and a replay through the same rules that rebuilds the same ids, events and
//! state, or says why it cannot.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use waitline::journal::{Change, Record};
use waitline::*;

#[derive(Debug, Default)]
struct Recorded(Mutex<Vec<(String, u64, Vec<u8>)>>);

impl Journal for Recorded {
    fn append(&self, tenant: &str, seq: u64, record: &[u8]) {
        self.0.lock().unwrap().push((tenant.into(), seq, record.to_vec()));
    }
}

impl Recorded {
    fn take(&self) -> Vec<(String, u64, Vec<u8>)> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

const START: Timestamp = Timestamp::from_secs(1_767_225_600);

fn engine(journal: Option<Arc<Recorded>>) -> (Engine, ManualClock) {
    let (clock, hand) = Clock::manual(START);
    let mut b = Engine::builder().clock(clock);
    if let Some(j) = journal {
        b = b.journal(j);
    }
    (b.build(), hand)
}

fn changes(records: &[(String, u64, Vec<u8>)]) -> Vec<(u64, &'static str)> {
    records.iter().map(|(_, seq, bytes)| (*seq, Record::decode(bytes).unwrap().change.name())).collect()
}

#[test]
fn each_change_is_recorded_once_reads_and_refusals_never() {
    let journal = Arc::new(Recorded::default());
    let (engine, hand) = engine(Some(journal.clone()));
    let t = engine.default_tenant();
    let caller = t.dial(&DialParams::new("+1", "+2", "app")).unwrap().call_control_id;
    let agent = t.dial(&DialParams::new("+3", "+4", "app")).unwrap().call_control_id;
    t.enqueue(&caller, &EnqueueParams::new("support").max_wait_time_secs(5)).unwrap();
    assert!(t.enqueue(&caller, &EnqueueParams::new("support")).is_err(), "refused: no record");
    t.call(&caller).unwrap();
    t.queue("support").unwrap();
    assert_eq!(changes(&journal.take()), [(1, "dial"), (2, "dial"), (3, "enqueue")]);
    // The deadline passes; a read fires it, and the firing (not the read) is recorded,
    // with the time of the read.
    hand.advance(Duration::from_secs(6));
    t.call(&agent).unwrap();
    let records = journal.take();
    assert_eq!(changes(&records), [(4, "timers")]);
    assert_eq!(Record::decode(&records[0].2).unwrap().at(), hand.now());
    // A repeated command id changes nothing: no record.
    let opts = CommandOptions { command_id: Some("once".into()), client_state: None };
    t.leave_queue(&agent, &opts).unwrap_err();
    t.hangup(&agent, &opts).unwrap();
    t.hangup(&agent, &opts).unwrap();
    assert_eq!(changes(&journal.take()), [(5, "hangup")]);
}

#[test]
fn a_dial_records_the_random_values_it_drew() {
    let journal = Arc::new(Recorded::default());
    let (engine, _) = engine(Some(journal.clone()));
    let info = engine.default_tenant().dial(&DialParams::new("+1", "+2", "app")).unwrap();
    let record = Record::decode(&journal.take()[0].2).unwrap();
    assert_eq!(record.change, Change::Dial(DialParams::new("+1", "+2", "app")));
    // The id's secret (two draws), then the leg and session ids.
    assert_eq!(record.draws.len(), 4);
    assert_eq!(record.draws[2..], [info.call_leg_id, info.call_session_id]);
    assert_eq!(record.at(), START);
}

#[test]
fn replay_rebuilds_ids_events_and_state() {
    let journal = Arc::new(Recorded::default());
    let (live, hand) = engine(Some(journal.clone()));
    let mut live_events = live.subscribe();
    let t = live.tenant("acme");
    let a = t.dial(&DialParams::new("+1", "+2", "app")).unwrap().call_control_id;
    let b = t.dial(&DialParams::new("+3", "+4", "app")).unwrap().call_control_id;
    t.enqueue(&a, &EnqueueParams::new("sales").max_wait_time_secs(30)).unwrap();
    t.enqueue(&b, &EnqueueParams::new("sales").priority(5)).unwrap();
    hand.advance(Duration::from_secs(31));
    live.run_pending_tasks(); // a times out
    let agent = t.transfer(&a, &TransferParams::new("+5")).unwrap().call_control_id;
    t.bridge(&agent, &BridgeParams::queue("sales")).unwrap(); // leaves a for b, the head
    t.create_queue("empty", Some(3)).unwrap();
    let records = journal.take();
    assert_eq!(
        records.iter().map(|r| r.1).collect::<Vec<_>>(),
        (1..=records.len() as u64).collect::<Vec<_>>()
    );

    let (again, hand_again) = engine(None);
    let mut replayed_events = again.subscribe();
    let t2 = again.tenant("acme");
    for (_, seq, bytes) in &records {
        t2.replay(*seq, bytes).unwrap();
    }
    hand_again.set(hand.now());
    assert_eq!(t2.last_seq(), t.last_seq());
    assert_eq!(replayed_events.drain(), live_events.drain(), "same events, same event ids");
    for id in [&a, &b, &agent] {
        assert_eq!(t2.call(id).unwrap(), t.call(id).unwrap());
    }
    assert_eq!(t2.queues(PageRequest::default()).unwrap(), t.queues(PageRequest::default()).unwrap());
    again.check_invariants().unwrap();
    // Replaying adds nothing to a journal of the replaying engine.
    assert!(journal.take().is_empty());
}

#[test]
fn a_record_out_of_turn_or_damaged_is_refused_and_changes_nothing() {
    let journal = Arc::new(Recorded::default());
    let (live, _) = engine(Some(journal.clone()));
    let t = live.default_tenant();
    for _ in 0..3 {
        t.dial(&DialParams::new("+1", "+2", "app")).unwrap();
    }
    let records = journal.take();
    let (again, _) = engine(None);
    let t2 = again.default_tenant();
    assert_eq!(t2.replay(2, &records[1].2), Err(ReplayError::OutOfOrder { got: 2, last: 0 }));
    assert!(matches!(t2.replay(1, &records[0].2[..3]), Err(ReplayError::Decode(_))));
    assert_eq!(t2.last_seq(), 0);
    t2.replay(1, &records[0].2).unwrap();
    assert_eq!(
        t2.replay(1, &records[0].2),
        Err(ReplayError::OutOfOrder { got: 1, last: 1 }),
        "no second time"
    );
    assert_eq!(t2.live_calls(), 1);
}

#[test]
fn a_replay_that_cannot_make_the_recorded_change_says_so() {
    let journal = Arc::new(Recorded::default());
    let (live, _) = engine(Some(journal.clone()));
    live.default_tenant().dial(&DialParams::new("+1", "+2", "app")).unwrap();
    let records = journal.take();
    // An engine whose caps refuse what the live one accepted cannot replay it.
    let (clock, _) = Clock::manual(START);
    let strict = Engine::builder().clock(clock).max_live_calls_per_tenant(0).build();
    let err = strict.default_tenant().replay(1, &records[0].2).unwrap_err();
    assert_eq!(err, ReplayError::Diverged { seq: 1, change: "dial", reached: 0 });
    assert!(err.to_string().contains("the journal and the rules disagree"));
}

#[test]
fn a_deadline_that_passed_while_down_fires_at_start_with_the_wait_up_to_it() {
    let journal = Arc::new(Recorded::default());
    let (live, _) = engine(Some(journal.clone()));
    let t = live.default_tenant();
    let call = t.dial(&DialParams::new("+1", "+2", "app")).unwrap().call_control_id;
    t.enqueue(&call, &EnqueueParams::new("support").max_wait_time_secs(10)).unwrap();
    let records = journal.take();
    drop(live); // the process stops before the deadline

    // It starts again a minute later: the journal is replayed, then maintenance runs.
    let (again, hand) = engine(None);
    let mut events = again.subscribe();
    let t2 = again.default_tenant();
    for (_, seq, bytes) in &records {
        t2.replay(*seq, bytes).unwrap();
    }
    events.drain();
    hand.advance(Duration::from_secs(60));
    assert_eq!(again.run_pending_tasks(), 1);
    let fired = events.drain();
    let EventKind::CallDequeued { reason, wait_time_secs, .. } = &fired[0].kind else { panic!("{fired:?}") };
    assert_eq!((*reason, *wait_time_secs), (DequeueReason::Timeout, 10));
    assert_eq!(fired[0].occurred_at, START.saturating_add(Duration::from_secs(10)), "at the deadline itself");
    assert_eq!(t2.call(&call).unwrap().state, CallState::Active, "parked, as a timeout leaves it");
}

/// Parameters lent for a command (`&str`, as the Python module passes them) are recorded as
/// the owned ones are: the journal, and so a replay, cannot tell them apart.
#[test]
fn lent_parameters_are_recorded_as_owned_ones() {
    let run = |lent: bool| {
        let journal = Arc::new(Recorded::default());
        let (engine, _hand) = engine(Some(journal.clone()));
        let t = engine.default_tenant();
        let caller = t.dial(&DialParams::new("+1", "+2", "app")).unwrap().call_control_id;
        let agent = t.dial(&DialParams::new("+3", "+4", "app")).unwrap().call_control_id;
        let opts = CommandOptions { client_state: Some("YQ==".into()), command_id: Some("c1".into()) };
        let owned = EnqueueParams { options: opts, ..EnqueueParams::new("support").max_wait_time_secs(60) };
        let bridge = BridgeParams::queue("support").park_after_unbridge();
        if lent {
            let p = EnqueueParams {
                queue_name: "support",
                max_wait: owned.max_wait,
                max_size: None,
                keep_after_hangup: false,
                priority: None,
                options: owned.options.clone(),
            };
            t.enqueue(&caller, &p).unwrap();
            let b = BridgeParams {
                call_control_id: None,
                queue: Some("support"),
                after_unbridge: bridge.after_unbridge,
                media: None,
                options: CommandOptions::default(),
            };
            t.bridge(&agent, &b).unwrap();
        } else {
            t.enqueue(&caller, &owned).unwrap();
            t.bridge(&agent, &bridge).unwrap();
        }
        let records = journal.take();
        let decoded: Vec<_> =
            records[2..].iter().map(|(_, _, bytes)| Record::decode(bytes).unwrap().change).collect();
        assert_eq!(decoded.len(), 2);
        assert!(matches!(&decoded[0], Change::Enqueue { params, .. } if *params == owned));
        assert!(matches!(&decoded[1], Change::Bridge { params, .. } if *params == bridge));
        (t.call(&caller).unwrap().state, t.call(&agent).unwrap().bridged_with == Some(caller.clone()))
    };
    assert_eq!(run(true), run(false));
    assert_eq!(run(true), (CallState::Bridged, true));
}

/// A dial with a `command_id` is recorded as a change of its own kind, and replayed into the
/// same memory: after the replay, a repeat answers the first call and records nothing.
#[test]
fn a_dial_with_a_command_id_is_recorded_and_remembered_again_by_the_replay() {
    let journal = Arc::new(Recorded::default());
    let (live, hand) = engine(Some(journal.clone()));
    let t = live.tenant("acme");
    let mut p = DialParams::new("+1", "+2", "app");
    p.command_id = Some("dial-1".into());
    let first = t.dial(&p).unwrap().call_control_id;
    assert_eq!(t.dial(&p).unwrap().call_control_id, first);
    let records = journal.take();
    assert_eq!(changes(&records), [(1, "dial")], "the repeat records nothing");
    let params = DialParams::new("+1", "+2", "app");
    let change = Record::decode(&records[0].2).unwrap().change;
    assert_eq!(change, Change::DialWithCommandId { params, command_id: "dial-1".into() });

    let (again, hand_again) = engine(None);
    let t2 = again.tenant("acme");
    t2.replay(1, &records[0].2).unwrap();
    hand_again.set(hand.now());
    assert_eq!(t2.dial(&p).unwrap().call_control_id, first);
    assert_eq!(t2.last_seq(), 1);
    again.check_invariants().unwrap();
}

/// Records of dials written before dial took a `command_id` read as they did: the variant
/// and its fields keep their places (the bytes are pinned).
#[test]
fn a_dial_record_keeps_its_bytes() {
    let mut p = DialParams::new("+1", "+2", "app");
    let record = Record { at_micros: 1, draws: Vec::new(), change: Change::Dial(p.clone()) };
    let bytes = [1, 0, 0, 2, 43, 49, 2, 43, 50, 3, 97, 112, 112, 0, 0, 0];
    assert_eq!(record.encode(), bytes);
    assert_eq!(Record::decode(&bytes).unwrap(), record);
    // The command id is not in a plain dial's record: it has its own kind.
    p.command_id = Some("x".into());
    let record = Record { change: Change::Dial(p), ..record };
    assert_eq!(record.encode(), bytes);
}

/// The dials' memory does not depend on the configuration: with a live-call cap of 2, a
/// third dial does not push the first one's `command_id` out, and a restart under another
/// cap replays the same answers.
#[test]
fn the_dials_memory_is_the_same_under_any_live_call_cap() {
    let journal = Arc::new(Recorded::default());
    let (clock, _hand) = Clock::manual(START);
    let live = Engine::builder().clock(clock).journal(journal.clone()).max_live_calls_per_tenant(2).build();
    let t = live.tenant("acme");
    let dial = |t: &Tenant, cmd: &str| {
        let mut p = DialParams::new("+1", "+2", "app");
        p.command_id = Some(cmd.into());
        t.dial(&p).unwrap().call_control_id
    };
    let a = dial(&t, "a");
    t.hangup(&a, &CommandOptions::default()).unwrap();
    let b = dial(&t, "b");
    t.hangup(&b, &CommandOptions::default()).unwrap();
    dial(&t, "c");
    assert_eq!(dial(&t, "a"), a, "a repeat within 60 s");
    let records = journal.take();
    for cap in [2, 3, 100] {
        let (clock, _hand) = Clock::manual(START);
        let replayed = Engine::builder().clock(clock).max_live_calls_per_tenant(cap).build();
        let t2 = replayed.tenant("acme");
        for (_, seq, bytes) in &records {
            t2.replay(*seq, bytes).unwrap();
        }
        assert_eq!(dial(&t2, "a"), a, "cap {cap}");
    }
}
