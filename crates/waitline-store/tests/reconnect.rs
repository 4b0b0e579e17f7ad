//! A PostgreSQL store after the server dropped its connections (as a failover or a restart
//! does): the write in flight fails and the store stops, then new connections replace the
//! old ones without a new store; the tickets of that time stay failed, the leases are taken
//! again at new epochs, and the journal goes on from what was committed. A SQLite store
//! never reconnects.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

mod common;

use common::{Backend, Sqlite, record, replay_all};
use waitline_store::bucket::bucket_of;
use waitline_store::test_support::{drop_connections, fresh_database};
use waitline_store::{Error, Options, PgConfig, Store};

#[test]
fn a_store_whose_connections_were_dropped_reconnects_and_takes_its_buckets_again() {
    let Some(url) = fresh_database("store_reconnect") else { return };
    let config = PgConfig { node: "a".into(), lease: Duration::from_secs(30), ..PgConfig::new(url.clone()) };
    let store = Store::open_postgres(&config, Options::default()).unwrap();
    let bucket = bucket_of("acme", config.buckets);
    let taken = store.acquire(&[bucket]).unwrap();
    let epoch = taken[0].1;
    store.wait(store.append("acme", 1, &record(1)).unwrap()).unwrap();
    assert!(!store.can_restart_writer(), "a working store has nothing to restart");
    assert!(store.restart_writer().is_err());

    drop_connections(&url);
    let in_the_gap = store.append("acme", 2, &record(2)).unwrap();
    let failed = store.wait(in_the_gap).unwrap_err();
    assert!(matches!(failed, Error::Stopped(_)), "{failed}");
    assert!(store.is_stopped() && store.can_restart_writer());
    let refused = store.acquire(&[bucket]).unwrap_err();
    assert!(refused.is_disconnect(), "the lease connection was dropped too: {refused}");

    store.reconnect_leases().unwrap();
    store.restart_writer().unwrap();
    assert!(!store.is_stopped() && !store.can_restart_writer());
    assert!(matches!(store.wait(in_the_gap), Err(Error::Stopped(_))), "a ticket of the gap stays failed");
    assert!(store.owned().is_empty() && store.lost().is_empty(), "its leases are forgotten");
    assert!(matches!(store.append("acme", 2, &record(2)), Err(Error::NotOwner { .. })));
    assert_eq!(store.acquire(&[bucket]).unwrap(), [(bucket, epoch + 1)], "its own lease, at the next epoch");
    // Record 2 never reached PostgreSQL: the journal goes on from 1.
    store.wait(store.append("acme", 2, &record(2)).unwrap()).unwrap();
    drop(store);
    let again = Store::open_postgres(&PgConfig { node: "b".into(), ..config }, Options::default()).unwrap();
    let seqs: Vec<u64> = replay_all(&again).0.iter().map(|seen| seen.2).collect();
    assert_eq!(seqs, [1, 2]);
}

#[test]
fn a_sqlite_store_never_reconnects() {
    let dir = Sqlite::new();
    let store = dir.open(Options::default());
    assert!(!store.can_restart_writer());
    assert!(matches!(store.restart_writer(), Err(Error::NoLeases)));
    assert!(matches!(store.reconnect_leases(), Err(Error::NoLeases)));
}
