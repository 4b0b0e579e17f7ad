//! The store's contract: what is acknowledged is replayed, in order, after a reopen or a
//! `kill -9`; batches share a commit; damage is found and named; one process per directory.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

mod common;

use common::{record, replay_all};
use waitline_store::{Entry, Error, Fsync, Options, Store};

#[test]
fn what_was_acknowledged_is_replayed_in_order_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    for fsync in [Fsync::Always, Fsync::Periodic] {
        let path = dir.path().join(format!("{fsync:?}"));
        {
            let store = Store::open(&path, Options { fsync, ..Options::default() }).unwrap();
            for seq in 1..=5 {
                let t = store.append("acme", seq, &record(seq)).unwrap();
                store.wait(t).unwrap();
            }
            let t = store.append("zeta", 1, b"other tenant").unwrap();
            store.wait(t).unwrap();
        }
        let store = Store::open(&path, Options::default()).unwrap();
        let (seen, summary) = replay_all(&store);
        let mut want: Vec<_> = (1..=5).map(|s| ("acme".to_owned(), "record", s, record(s))).collect();
        want.push(("zeta".into(), "record", 1, b"other tenant".to_vec()));
        assert_eq!(seen, want, "{fsync:?}");
        assert_eq!((summary.tenants, summary.records, summary.snapshots), (2, 6, 0));
    }
}

#[test]
fn appends_waiting_together_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store.pause_writer();
    let tickets: Vec<_> = (1..=100).map(|s| store.append("acme", s, &record(s)).unwrap()).collect();
    assert!(tickets.windows(2).all(|w| w[0] < w[1]), "tickets follow append order");
    let before = store.commits();
    let timed_before = store.commit_times();
    store.resume_writer();
    store.wait(tickets[99]).unwrap();
    assert_eq!(store.commits() - before, 1, "100 records, one transaction");
    let timed = store.commit_times();
    assert_eq!(timed.count() - timed_before.count(), 1, "each commit is timed once");
    assert!(timed.sum_micros > timed_before.sum_micros, "a synced commit takes some time");
    // An earlier ticket is durable once a later one is.
    store.wait(tickets[0]).unwrap();
    let (seen, _) = replay_all(&store);
    assert_eq!(seen, (1..=100).map(|s| ("acme".to_owned(), "record", s, record(s))).collect::<Vec<_>>());
    let d = store.describe().unwrap();
    assert_eq!((d[0].records, d[0].last_seq), (100, 100));
}

#[test]
fn a_record_out_of_turn_is_a_second_history_and_stops_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store.wait(store.append("acme", 1, b"one").unwrap()).unwrap();
    let skipped = store.append("acme", 3, b"three").unwrap();
    let err = store.wait(skipped).unwrap_err();
    assert!(
        err.to_string().contains("record 3 of tenant \"acme\" does not follow 1: two histories"),
        "{err}"
    );
    drop(store);
    // A restart knows where each tenant is, from what is stored.
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert!(store.wait(store.append("acme", 1, b"again").unwrap()).is_err());
    let store = Store::open(dir.path(), Options::default());
    assert!(matches!(store, Err(Error::Locked(_))) || store.is_ok());
}

#[test]
fn recovery_cuts_a_row_of_many_records_at_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store.pause_writer();
        for seq in 1..=6 {
            store.append("acme", seq, &record(seq)).unwrap();
        }
        store.resume_writer();
        store.flush().unwrap();
    }
    // One row holds the six; damage the fourth.
    {
        let conn = rusqlite::Connection::open(dir.path().join(waitline_store::DB_FILE)).unwrap();
        let mut stored: Vec<u8> = conn.query_row("SELECT records FROM journal", [], |r| r.get(0)).unwrap();
        let fourth = 3 * (8 + record(1).len()) + 8;
        stored[fourth] ^= 1;
        conn.execute("UPDATE journal SET records = ?1", [stored]).unwrap();
    }
    let store = Store::open(dir.path(), Options { recover_truncate: true, ..Options::default() }).unwrap();
    let (seen, summary) = replay_all(&store);
    assert_eq!(seen.iter().map(|e| e.2).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(summary.truncated, vec![("acme".to_owned(), 4, "checksum mismatch".to_owned())]);
    store.wait(store.append("acme", 4, b"new 4").unwrap()).unwrap();
    drop(store);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let (seen, _) = replay_all(&store);
    assert_eq!(seen.iter().map(|e| e.2).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(seen[3].3, b"new 4");
}

#[test]
fn concurrent_appenders_each_see_their_records_durable_and_dense() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let store = store.clone();
            s.spawn(move || {
                let tenant = format!("t{t}");
                for seq in 1..=200 {
                    let ticket = store.append(&tenant, seq, &record(seq)).unwrap();
                    if seq % 10 == 0 {
                        store.wait(ticket).unwrap();
                    }
                }
                store.flush().unwrap();
            });
        }
    });
    let commits = store.commits();
    drop(store);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let (seen, summary) = replay_all(&store);
    assert_eq!(summary.records, 1600);
    let mut per_tenant: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (tenant, _, seq, data) in seen {
        assert_eq!(data, record(seq));
        per_tenant.entry(tenant).or_default().push(seq);
    }
    for seqs in per_tenant.values() {
        assert_eq!(*seqs, (1..=200).collect::<Vec<_>>());
    }
    assert!(commits < 1600, "group commit: {commits} commits for 1600 records");
}

#[test]
fn a_snapshot_replaces_the_journal_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    // Two rows, 1..=8 and 9..=10: each batch waits until the writer is let go.
    for batch in [1..=8, 9..=10] {
        store.pause_writer();
        for seq in batch {
            store.append("acme", seq, &record(seq)).unwrap();
        }
        store.resume_writer();
        store.flush().unwrap();
    }
    store.snapshot("acme", 6, b"state at 6").unwrap();
    store.flush().unwrap();
    let (seen, summary) = replay_all(&store);
    assert_eq!((summary.tenants, summary.snapshots, summary.records), (1, 1, 4));
    let mut want = vec![("acme".to_owned(), "snapshot", 6, b"state at 6".to_vec())];
    want.extend((7..=10).map(|s| ("acme".to_owned(), "record", s, record(s))));
    assert_eq!(seen, want);
    let d = store.describe().unwrap();
    assert_eq!(d.len(), 1);
    // The row 1..=8 straddles the snapshot: kept whole.
    assert_eq!((d[0].base, d[0].journal_rows, d[0].records, d[0].last_seq), (Some(6), 2, 10, 10));
    assert_eq!(d[0].snapshots, [(6, 8 + 10)], "length and checksum, then the data");
    // A later snapshot covering the first row deletes it and the older snapshot.
    store.snapshot("acme", 9, b"state at 9").unwrap();
    store.flush().unwrap();
    let d = store.describe().unwrap();
    assert_eq!((d[0].base, d[0].journal_rows, d[0].records, d[0].last_seq), (Some(9), 1, 2, 10));
    assert_eq!(d[0].snapshots, [(9, 8 + 10)]);
    // One covering everything leaves no journal.
    store.snapshot("acme", 10, b"state at 10").unwrap();
    store.flush().unwrap();
    let d = store.describe().unwrap();
    assert_eq!((d[0].base, d[0].journal_rows, d[0].last_seq), (Some(10), 0, 10));
    drop(store);
    // The next record after a reopen follows the snapshot.
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store.wait(store.append("acme", 11, &record(11)).unwrap()).unwrap();
    assert_eq!(replay_all(&store).0.len(), 2);
}

/// With `replay_from_delivered`, a tenant restarts from the newest snapshot at or before its
/// delivery mark, and the journal after that is kept; when the mark passes a newer snapshot,
/// that one becomes the base and what it covers goes.
#[test]
fn undelivered_events_keep_the_journal_after_the_delivery_mark() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { replay_from_delivered: true, ..Options::default() };
    let store = Store::open(dir.path(), options).unwrap();
    let summary = |store: &Store| {
        let d = store.describe().unwrap().remove(0);
        (d.base, d.snapshots.iter().map(|s| s.0).collect::<Vec<_>>(), d.journal_rows)
    };
    for seq in 1..=30 {
        store.wait(store.append("acme", seq, &record(seq)).unwrap()).unwrap(); // a row each
        if seq % 10 == 0 {
            store.snapshot("acme", seq, format!("state at {seq}").as_bytes()).unwrap();
        }
    }
    store.flush().unwrap();
    assert_eq!(summary(&store), (None, vec![10, 20, 30], 30), "no mark: everything kept, from record 1");
    let (seen, _) = replay_all(&store);
    assert_eq!((seen.len(), seen[0].1), (30, "record"));
    store.mark_delivered("acme", 15).unwrap();
    store.flush().unwrap();
    assert_eq!(summary(&store), (Some(10), vec![10, 20, 30], 20));
    let (seen, _) = replay_all(&store);
    assert_eq!((seen[0].1, seen[0].2, seen.len()), ("snapshot", 10, 21), "the base, then 11..=30");
    store.mark_delivered("acme", 30).unwrap();
    store.flush().unwrap();
    assert_eq!(summary(&store), (Some(30), vec![30], 0));
    drop(store);
    // Opened without the option (as an embedding does), the newest snapshot is the base.
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(replay_all(&store).0, [("acme".to_owned(), "snapshot", 30, b"state at 30".to_vec())]);
}

/// A journal compacted to its newest snapshot by a store without delivery marks, then
/// opened with them and a mark before that snapshot: the oldest snapshot is the base (the
/// journal before it is gone).
#[test]
fn with_no_snapshot_before_the_mark_and_no_journal_from_one_the_oldest_snapshot_is_the_base() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        for seq in 1..=4 {
            store.wait(store.append("acme", seq, &record(seq)).unwrap()).unwrap();
        }
        store.snapshot("acme", 3, b"state at 3").unwrap();
        store.mark_delivered("acme", 1).unwrap();
        store.flush().unwrap();
    }
    let store =
        Store::open(dir.path(), Options { replay_from_delivered: true, ..Options::default() }).unwrap();
    let (seen, _) = replay_all(&store);
    assert_eq!(seen.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), [("snapshot", 3), ("record", 4)]);
}

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

/// Changes stored bytes behind the store's back, as a bad disk would.
fn tamper(dir: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join(waitline_store::DB_FILE)).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// Five records of two tenants, each record committed on its own (one row each).
fn fill(dir: &std::path::Path) {
    let store = Store::open(dir, Options::default()).unwrap();
    for seq in 1..=5 {
        store.append("acme", seq, &record(seq)).unwrap();
        store.append("zeta", seq, &record(seq)).unwrap();
        store.flush().unwrap();
    }
}

#[test]
fn a_flipped_bit_is_named_and_only_recovery_truncates_it() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    // Flip one bit of the payload of acme's record 3.
    {
        let conn = rusqlite::Connection::open(dir.path().join(waitline_store::DB_FILE)).unwrap();
        let get = "SELECT records FROM journal WHERE tenant = 'acme' AND seq = 3";
        let mut stored: Vec<u8> = conn.query_row(get, [], |r| r.get(0)).unwrap();
        stored[9] ^= 0x10; // a byte of the payload, after the length and the checksum
        conn.execute("UPDATE journal SET records = ?1 WHERE tenant = 'acme' AND seq = 3", [stored]).unwrap();
    }
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        match store.replay(|_| Ok(())) {
            Err(Error::Corrupt { file, what, tenant, seq, detail }) => {
                assert!(file.ends_with(waitline_store::DB_FILE));
                assert_eq!(
                    (what, tenant.as_str(), seq, detail.as_str()),
                    ("record", "acme", 3, "checksum mismatch")
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    let store = Store::open(dir.path(), Options { recover_truncate: true, ..Options::default() }).unwrap();
    let (seen, summary) = replay_all(&store);
    assert_eq!(summary.truncated, vec![("acme".to_owned(), 3, "checksum mismatch".to_owned())]);
    let acme: Vec<u64> = seen.iter().filter(|e| e.0 == "acme").map(|e| e.2).collect();
    let zeta: Vec<u64> = seen.iter().filter(|e| e.0 == "zeta").map(|e| e.2).collect();
    assert_eq!((acme, zeta), (vec![1, 2], vec![1, 2, 3, 4, 5]));
    drop(store);
    // The damage is gone from disk: a plain start works and sees the same.
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(replay_all(&store).1.records, 7);
    // The tenant's journal goes on from where it now ends.
    store.wait(store.append("acme", 3, b"new 3").unwrap()).unwrap();
}

#[test]
fn a_missing_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    tamper(dir.path(), "DELETE FROM journal WHERE tenant = 'zeta' AND seq = 2");
    let store = Store::open(dir.path(), Options::default()).unwrap();
    match store.replay(|_| Ok(())) {
        Err(e @ Error::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(text.contains("\"zeta\" at sequence number 2"), "{text}");
            assert!(text.contains("missing (the next record stored is number 3)"), "{text}");
            assert!(text.contains("--recover-truncate"), "{text}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_damaged_snapshot_stops_even_a_recovery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store.append("acme", 1, b"x").unwrap();
        store.snapshot("acme", 1, b"state").unwrap();
        store.flush().unwrap();
    }
    tamper(dir.path(), "UPDATE snapshots SET data = substr(data, 1, 5)");
    let store = Store::open(dir.path(), Options { recover_truncate: true, ..Options::default() }).unwrap();
    assert!(matches!(store.replay(|_| Ok(())), Err(Error::Corrupt { what: "snapshot", seq: 1, .. })));
}

#[test]
fn a_refusal_of_the_replaying_code_stops_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let err = store
        .replay(|e| match e {
            Entry::Record { seq: 4, .. } => Err("cannot apply".into()),
            _ => Ok(()),
        })
        .unwrap_err();
    assert!(
        matches!(err, Error::Replay { ref tenant, seq: 4, ref detail } if tenant == "acme" && detail == "cannot apply")
    );
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

#[test]
fn a_failed_write_stops_the_store_for_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store.wait(store.append("acme", 1, b"one").unwrap()).unwrap();
    assert!(!store.is_stopped());
    // The same number twice is two histories: the write fails and the store stops.
    let twice = store.append("acme", 1, b"again").unwrap();
    let err = store.wait(twice).unwrap_err();
    assert!(store.is_stopped());
    assert!(matches!(err, Error::Stopped(ref why) if why.contains("writing the journal failed")), "{err}");
    assert!(matches!(store.append("acme", 2, b"two"), Err(Error::Stopped(_))));
    drop(store);
    // What was durable before is still there, the refused batch is not.
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let (seen, _) = replay_all(&store);
    assert_eq!(seen, vec![("acme".to_owned(), "record", 1, b"one".to_vec())]);
}

#[test]
fn sequence_numbers_beyond_sqlite_integers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert!(matches!(store.append("acme", u64::MAX, b"x"), Err(Error::SeqRange(u64::MAX))));
    store.wait(store.append("acme", 1, b"x").unwrap()).unwrap();
}

#[derive(Default)]
struct CountWakes(AtomicUsize);

impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_task_is_woken_when_its_ticket_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let wakes = Arc::new(CountWakes::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    store.pause_writer();
    let ticket = store.append("acme", 1, b"x").unwrap();
    assert!(store.poll_durable(ticket, &mut cx).is_pending());
    store.resume_writer();
    store.flush().unwrap();
    // The writer wakes tasks just after it tells blocking waiters: give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while wakes.0.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert!(matches!(store.poll_durable(ticket, &mut cx), Poll::Ready(Ok(()))));
}

#[test]
fn a_row_cut_between_two_records_is_named() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store.pause_writer();
        for seq in 1..=3 {
            store.append("acme", seq, &record(seq)).unwrap();
        }
        store.resume_writer();
        store.flush().unwrap();
    }
    // Keep only the first record's bytes: every frame left is whole.
    tamper(dir.path(), &format!("UPDATE journal SET records = substr(records, 1, {})", 8 + record(1).len()));
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let err = store.replay(|_| Ok(())).unwrap_err();
    assert!(
        err.to_string().contains("at sequence number 2 is damaged: missing (its row ends at 1, not 3)"),
        "{err}"
    );
}

#[test]
fn delivery_marks_survive_a_restart_and_never_move_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store.mark_delivered("acme", 5).unwrap();
        store.mark_delivered("acme", 3).unwrap();
        store.mark_delivered("zeta", 1).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let marks = store.delivered().unwrap();
    assert_eq!((marks["acme"], marks["zeta"], marks.len()), (5, 1, 2));
}

#[test]
fn what_was_appended_is_written_when_the_last_handle_goes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        assert!(format!("{store:?}").starts_with("Store {"), "{store:?}");
        for seq in 1..=50 {
            store.append("acme", seq, &record(seq)).unwrap(); // nobody waits
        }
    } // dropped: the writer finishes what is queued, then stops
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(replay_all(&store).1.records, 50);
}

/// Records, a snapshot and a record after it, all in one batch: the record after the
/// snapshot follows the records before it (their row was written for the snapshot).
#[test]
fn a_record_after_a_snapshot_in_the_same_batch_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store.pause_writer();
    for seq in 1..=3 {
        store.append("acme", seq, &record(seq)).unwrap();
    }
    store.snapshot("acme", 3, b"state at 3").unwrap();
    store.append("acme", 4, &record(4)).unwrap();
    store.resume_writer();
    store.flush().unwrap();
    let (seen, _) = replay_all(&store);
    assert_eq!(seen.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), [("snapshot", 3), ("record", 4)]);
}
