//! What only the SQLite store does: its data directory (private, one process at a time) and
//! the upgrade of an older file. The contract both databases keep is in `contract.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{record, replay_all};
use waitline_store::{Error, Options, Store};

#[test]
fn a_store_of_the_previous_version_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(waitline_store::DB_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO meta VALUES ('schema', 2);
             CREATE TABLE journal (tenant TEXT NOT NULL, seq INTEGER NOT NULL, last INTEGER NOT NULL,
                 records BLOB NOT NULL, PRIMARY KEY (tenant, seq)) WITHOUT ROWID;
             CREATE TABLE snapshots (tenant TEXT PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE delivered (tenant TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
    }
    let store = Store::open(dir.path(), Options::default()).unwrap();
    for seq in 1..=3 {
        store.append("acme", seq, &record(seq)).unwrap();
    }
    store.snapshot("acme", 2, b"state at 2").unwrap();
    store.snapshot("zeta", 0, b"empty").unwrap();
    store.flush().unwrap();
    let (seen, _) = replay_all(&store);
    assert_eq!(
        seen.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(),
        [("snapshot", 2), ("record", 3), ("snapshot", 0)]
    );
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join(waitline_store::DB_FILE)).unwrap();
    let version: i64 =
        conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 3);
}

#[test]
fn one_process_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let second = Store::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(second, Error::Locked(_)));
    assert!(second.to_string().contains("in use by another waitline process"));
    drop(store);
    // Free again once the first is closed. (A child process that another test forks may
    // hold the lock's file for an instant, until its exec closes it: retry briefly.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir.path(), Options::default()) {
            Ok(_) => break,
            Err(Error::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("still locked after the first closed: {e}"),
        }
    }
}

#[cfg(unix)]
#[test]
fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new");
    let _store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
}
