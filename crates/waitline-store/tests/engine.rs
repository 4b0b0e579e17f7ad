//! The store as the engine's journal: what an engine does is appended, replayed into a new
//! engine it comes back, and a record the new engine cannot make stops the replay.
#![allow(clippy::unwrap_used)]

use waitline::{DialParams, Engine, EnqueueParams};
use waitline_store::engine::{StoreJournal, apply_record};
use waitline_store::{Error, Options, Store};

#[test]
fn an_engine_on_the_store_comes_back_in_a_new_engine() {
    let dir = tempfile::tempdir().unwrap();
    let (call, leg) = {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let journal = StoreJournal::new(store.clone());
        let engine = Engine::builder().journal(journal.clone()).build();
        let t = engine.tenant("acme");
        let call = t.dial(&DialParams::new("+1", "+2", "app")).unwrap();
        t.enqueue(&call.call_control_id, &EnqueueParams::new("support")).unwrap();
        engine.tenant("zeta").create_queue("other", None).unwrap();
        assert_eq!(journal.heads().get("acme").copied(), Some(2));
        assert_eq!(journal.heads().get("zeta").copied(), Some(1));
        store.flush().unwrap();
        (call.call_control_id, call.call_leg_id)
    };
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let journal = StoreJournal::new(store.clone());
    let engine = Engine::builder().journal(journal.clone()).build();
    let replayed = journal.replay_into(&engine, apply_record).unwrap();
    assert_eq!((replayed.tenants, replayed.records), (2, 3));
    let again = engine.tenant("acme").call(&call).unwrap();
    assert_eq!((again.queue.as_deref(), again.call_leg_id), (Some("support"), leg));
    assert!(engine.tenant("zeta").queue("other").is_ok());
    // New changes go on from where the journal ended.
    engine.tenant("acme").leave_queue(&call, &Default::default()).unwrap();
    store.flush().unwrap();
    assert_eq!(store.describe().unwrap()[0].last_seq, 3);
}

#[test]
fn a_record_the_new_engine_cannot_make_stops_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let engine = Engine::builder().journal(StoreJournal::new(store.clone())).build();
        engine.default_tenant().dial(&DialParams::new("+1", "+2", "app")).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let strict = Engine::builder().max_live_calls_per_tenant(0).build();
    match StoreJournal::new(store).replay_into(&strict, apply_record) {
        Err(Error::Replay { tenant, seq, detail }) => {
            assert_eq!((tenant.as_str(), seq), ("default", 1));
            assert!(detail.contains("the journal and the rules disagree"), "{detail}");
        }
        other => panic!("expected a refused replay, got {other:?}"),
    }
}

/// A tenant is snapshotted once `snapshot_every` records piled up (at maintenance, not
/// before), the journal the snapshot covers goes, and a restart restores the snapshot and
/// replays the rest into exactly the same state.
#[test]
fn due_snapshots_bound_the_journal_and_a_restart_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    let (before, call) = {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let journal = StoreJournal::with_snapshot_every(store.clone(), 10);
        let engine = Engine::builder().journal(journal.clone()).build();
        let t = engine.tenant("acme");
        let mut last = String::new();
        for n in 0..9 {
            last = t.dial(&DialParams::new("+1", "+2", "app")).unwrap().call_control_id;
            t.enqueue(&last, &EnqueueParams::new("support").max_wait_time_secs(600)).unwrap();
            engine.tenant("quiet").create_queue(&format!("q{n}"), None).unwrap();
            if n == 3 {
                assert!(!journal.snapshots_due(), "8 records: not yet");
                assert_eq!(journal.take_due_snapshots(&engine).unwrap(), 0);
            }
        }
        assert!(journal.snapshots_due(), "18 records of acme");
        assert_eq!(journal.take_due_snapshots(&engine).unwrap(), 1, "acme only: quiet has 9");
        assert!(!journal.snapshots_due());
        assert_eq!(journal.take_due_snapshots(&engine).unwrap(), 0, "taken once");
        t.leave_queue(&last, &Default::default()).unwrap(); // 19, after the snapshot
        store.flush().unwrap();
        let d = store.describe().unwrap();
        let acme = d.iter().find(|s| s.tenant == "acme").unwrap();
        assert_eq!((acme.base, acme.journal_rows > 0, acme.last_seq), (Some(18), true, 19));
        assert!(acme.records < 19, "the journal before the snapshot is gone: {acme:?}");
        (t.snapshot(), last)
    };
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let journal = StoreJournal::with_snapshot_every(store, 10);
    let engine = Engine::builder().journal(journal.clone()).build();
    let replayed = journal.replay_into(&engine, apply_record).unwrap();
    assert_eq!((replayed.snapshots, replayed.tenants), (1, 2));
    let t = engine.tenant("acme");
    assert_eq!(t.snapshot(), before, "the same state, byte for byte");
    assert!(t.call(&call).is_ok());
    assert_eq!(journal.heads().get("acme").copied(), Some(19));
    // The count goes on from the restored snapshot: due again 10 records after it.
    for _ in 0..8 {
        t.dial(&DialParams::new("+1", "+2", "app")).unwrap();
    }
    assert!(!journal.snapshots_due());
    t.dial(&DialParams::new("+1", "+2", "app")).unwrap();
    assert!(journal.snapshots_due());
}

#[test]
fn a_snapshot_the_engine_refuses_stops_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store.append("acme", 1, b"x").unwrap();
        store.snapshot("acme", 1, b"not a snapshot").unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let journal = StoreJournal::new(store);
    let err = journal.replay_into(&Engine::default(), apply_record).unwrap_err();
    assert!(
        matches!(&err, Error::Replay { seq: 1, detail, .. } if detail.contains("not a waitline snapshot")),
        "{err}"
    );
}

/// One firing of three timers makes records 7, 8 and 9 (alike, made by the first). A crash
/// after the commit of 7 alone (cut here by deleting 8 and 9, as the disk would hold them)
/// leaves a journal whose replay takes the engine to 9: the missing records are appended
/// again, so the tenant's next command (10) is written, not refused as a second history
/// that would stop the store at every start.
#[test]
fn a_firing_of_timers_cut_by_a_crash_is_completed_at_the_replay() {
    use std::time::Duration;
    use waitline::{Clock, Timestamp};

    /// Commits each record on its own, so that the disk holds one row per record.
    #[derive(Debug)]
    struct CommitEach(std::sync::Arc<StoreJournal>, Store);
    impl waitline::Journal for CommitEach {
        fn append(&self, tenant: &str, seq: u64, record: &[u8]) {
            self.0.append(tenant, seq, record);
            self.1.flush().unwrap();
        }
    }

    const START: Timestamp = Timestamp::from_secs(1_767_225_600);
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let (clock, hand) = Clock::manual(START);
        let journal = std::sync::Arc::new(CommitEach(StoreJournal::new(store.clone()), store.clone()));
        let engine = Engine::builder().clock(clock).journal(journal).build();
        let t = engine.tenant("acme");
        for _ in 0..3 {
            let call = t.dial(&DialParams::new("+1", "+2", "app")).unwrap().call_control_id;
            t.enqueue(&call, &EnqueueParams::new("support").max_wait_time_secs(5)).unwrap();
        }
        hand.advance(Duration::from_secs(6));
        assert_eq!(engine.run_pending_tasks(), 3);
        assert_eq!(t.last_seq(), 9);
        store.flush().unwrap();
    }
    let db = rusqlite::Connection::open(dir.path().join(waitline_store::DB_FILE)).unwrap();
    db.execute("DELETE FROM journal WHERE tenant = 'acme' AND seq > 7", []).unwrap();
    drop(db);

    let reopen = |at: Timestamp| {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let journal = StoreJournal::new(store.clone());
        let (clock, _hand) = Clock::manual(at);
        let engine = Engine::builder().clock(clock).journal(journal.clone()).build();
        let replayed = journal.replay_into(&engine, apply_record).unwrap();
        (store, journal, engine, replayed)
    };
    let later = START.saturating_add(Duration::from_secs(7));
    let (store, journal, engine, replayed) = reopen(later);
    assert_eq!(replayed.completed, vec![("acme".to_owned(), 8, 9)]);
    assert_eq!(journal.heads().get("acme").copied(), Some(9));
    let on_disk = store.describe().unwrap();
    assert_eq!(on_disk[0].last_seq, 9, "the completed records are on disk when the replay returns");
    let t = engine.tenant("acme");
    assert_eq!(t.last_seq(), 9);
    assert_eq!(t.queue("support").map(|q| q.current_size).ok(), Some(0), "every caller timed out");
    t.dial(&DialParams::new("+1", "+2", "app")).unwrap();
    store.flush().unwrap();
    assert!(!store.is_stopped());
    drop((t, store, journal, engine));

    // The completed journal replays to the same state, with nothing more to complete.
    let (store, _journal, engine, replayed) = reopen(later);
    assert!(replayed.completed.is_empty(), "{:?}", replayed.completed);
    assert_eq!(engine.tenant("acme").last_seq(), 10);
    assert!(!store.is_stopped());
}
