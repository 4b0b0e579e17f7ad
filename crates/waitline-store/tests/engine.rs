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
