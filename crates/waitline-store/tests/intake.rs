//! The intake (`Fsync::Periodic` in a data directory): a record is durable once copied there,
//! before its transaction; a start commits what the intake holds past the database. A crash
//! is a copy of the data directory's files taken while the writer holds records back (the
//! mapping's stores are in the files, as they are in the system's page cache after a
//! `kill -9`; `tests/kill.rs` kills a real process).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{record, replay_all};
use waitline_store::{DB_FILE, Error, Fsync, IntakeTail, Options, Store};

const INTAKE: &str = "intake";

fn periodic(bytes: u64) -> Options {
    Options { fsync: Fsync::Periodic, intake_bytes: bytes, ..Options::default() }
}

/// A store with `periodic(bytes)` in a data directory of its own (kept while the caller
/// holds it).
fn open_periodic(bytes: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), periodic(bytes)).unwrap();
    (dir, store)
}

/// The data directory's files as a crash at this moment leaves them.
fn crash_copy(from: &Path, to: &Path) {
    for name in [DB_FILE.to_owned(), format!("{DB_FILE}-wal"), INTAKE.to_owned()] {
        if from.join(&name).exists() {
            std::fs::copy(from.join(&name), to.join(&name)).unwrap();
        }
    }
}

/// Runs `before_the_crash` with the writer held back, then returns a copy of `dir` as a
/// crash leaves it (the store is then let go: what it commits after does not count).
fn crash_while_held(store: Store, dir: &Path, before_the_crash: impl FnOnce(&Store)) -> tempfile::TempDir {
    store.pause_writer();
    before_the_crash(&store);
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir, crashed.path());
    store.resume_writer();
    drop(store);
    crashed
}

/// Each tenant's records, checked dense and as appended; the last number of each.
fn stored(store: &Store) -> Vec<(String, u64)> {
    let (seen, _) = replay_all(store);
    let mut last: Vec<(String, u64)> = Vec::new();
    for (tenant, kind, seq, data) in seen {
        assert_eq!(kind, "record");
        assert_eq!(data, record(seq), "{tenant} {seq}");
        match last.iter_mut().find(|(t, _)| *t == tenant) {
            Some((_, prev)) => {
                assert_eq!(seq, *prev + 1, "{tenant}: dense");
                *prev = seq;
            }
            None => {
                assert_eq!(seq, 1, "{tenant}: from 1");
                last.push((tenant, seq));
            }
        }
    }
    last
}

/// Appends records `seqs` to each tenant, waiting for each.
fn append(store: &Store, tenants: &[&str], seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        for tenant in tenants {
            store.wait(store.append(tenant, seq, &record(seq)).unwrap()).unwrap();
        }
    }
}

#[test]
fn records_only_in_the_intake_survive_a_crash_after_laps_of_a_small_ring() {
    let (dir, store) = open_periodic(4096);
    // About 40 records a lap: the ring is full many times over, and waits for commits.
    append(&store, &["a", "bb"], 1..=300);
    store.flush().unwrap();
    let commits = store.commits();
    let crashed = crash_while_held(store, dir.path(), |store| {
        append(store, &["a", "bb"], 301..=310);
        assert_eq!(store.commits(), commits, "the last records are in the intake only");
    });

    let reopened = Store::open(crashed.path(), periodic(4096)).unwrap();
    assert_eq!(reopened.intake_tail(), Some(&IntakeTail::Clean { records: 20 }));
    assert_eq!(stored(&reopened), vec![("a".into(), 310), ("bb".into(), 310)]);
    // The next run goes on, and a start after it finds nothing new in the intake.
    append(&reopened, &["a"], 311..=320);
    drop(reopened);
    let again = Store::open(crashed.path(), Options::default()).unwrap();
    assert_eq!(again.intake_tail(), Some(&IntakeTail::Clean { records: 0 }));
    assert_eq!(stored(&again), vec![("a".into(), 320), ("bb".into(), 310)]);
}

#[test]
fn a_record_waited_for_is_durable_before_its_commit_and_flush_commits() {
    let (_dir, store) = open_periodic(0);
    store.pause_writer();
    let ticket = store.append("t", 1, &record(1)).unwrap();
    // Paused, the writer commits nothing: the wait returns because the intake holds it.
    store.wait(ticket).unwrap();
    assert_eq!(store.commits(), 0);
    store.resume_writer();
    store.flush().unwrap();
    assert_eq!(store.commits(), 1);
    assert_eq!(stored(&store), vec![("t".into(), 1)]);
}

#[test]
fn a_snapshot_queued_before_a_record_makes_its_wait_a_commit() {
    let (_dir, store) = open_periodic(0);
    store.append("t", 1, &record(1)).unwrap();
    store.pause_writer();
    store.snapshot("t", 1, b"state").unwrap();
    let ticket = store.append("t", 2, &record(2)).unwrap();
    waits_for_the_commit(&store, ticket, "the snapshot before it is not durable yet");
}

/// `ticket`'s wait goes on while the writer is paused, and ends once it commits.
fn waits_for_the_commit(store: &Store, ticket: waitline_store::Ticket, why: &str) {
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || store.wait(ticket))
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!waiter.is_finished(), "{why}");
    store.resume_writer();
    waiter.join().unwrap().unwrap();
}

#[test]
fn a_record_too_large_for_the_intake_waits_for_its_commit_and_the_next_ones_follow() {
    let (dir, store) = open_periodic(4096);
    append(&store, &["t"], 1..=3);
    store.pause_writer();
    let large = store.append("t", 4, &[9; 2000]).unwrap();
    waits_for_the_commit(&store, large, "not in the intake: it waits for its commit");
    // The next record goes into the intake only once the large one is committed, and a
    // crash then loses neither.
    let crashed = crash_while_held(store, dir.path(), |store| append(store, &["t"], 5..=5));
    let reopened = Store::open(crashed.path(), Options::default()).unwrap();
    let (seen, _) = replay_all(&reopened);
    let seqs: Vec<u64> = seen.iter().map(|s| s.2).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(seen[3].3, vec![9; 2000]);
}

#[test]
fn damage_before_acknowledged_records_stops_the_start_unless_recovering() {
    let (dir, store) = open_periodic(0);
    append(&store, &["t"], 1..=2);
    store.flush().unwrap();
    let crashed = crash_while_held(store, dir.path(), |store| append(store, &["t"], 3..=8));

    // A byte of record 4's frame: the first frame past the committed point is record 3's.
    let intake = crashed.path().join(INTAKE);
    let mut ring = std::fs::read(&intake).unwrap();
    // A frame: its position (here its offset: the first lap), length, checksum, then the
    // record's number, its tenant's length and its tenant.
    let frames: Vec<usize> = (0..ring.len() - 32)
        .filter(|&i| {
            ring[i..i + 8] == (i as u64).to_le_bytes()
                && ring[i + 16..i + 24] == 4u64.to_le_bytes()
                && ring[i + 24..i + 29] == [1, 0, 0, 0, b't']
        })
        .collect();
    assert_eq!(frames.len(), 1, "record 4's frame");
    ring[frames[0] + 40] ^= 0x10;
    std::fs::write(&intake, &ring).unwrap();

    match Store::open(crashed.path(), periodic(0)) {
        Err(Error::IntakeDamaged { path, offset, detail }) => {
            assert_eq!(path, intake);
            assert_eq!(offset, frames[0] as u64);
            assert!(detail.contains("checksum"), "{detail}");
        }
        other => panic!("expected the start refused, got {other:?}"),
    }
    let recovered = Store::open(crashed.path(), Options { recover_truncate: true, ..periodic(0) }).unwrap();
    assert!(matches!(recovered.intake_tail(), Some(IntakeTail::Damaged { records: 1, .. })));
    assert_eq!(stored(&recovered), vec![("t".into(), 3)]);
}

#[test]
fn a_store_reopened_under_always_takes_the_intake_and_later_under_periodic_reads_nothing_old() {
    let (dir, store) = open_periodic(0);
    let crashed = crash_while_held(store, dir.path(), |store| append(store, &["t"], 1..=5));
    let always = Store::open(crashed.path(), Options::default()).unwrap();
    assert_eq!(always.intake_tail(), Some(&IntakeTail::Clean { records: 5 }));
    append(&always, &["t"], 6..=7);
    drop(always);
    let periodic_again = Store::open(crashed.path(), periodic(0)).unwrap();
    assert_eq!(periodic_again.intake_tail(), Some(&IntakeTail::Clean { records: 0 }));
    assert_eq!(stored(&periodic_again), vec![("t".into(), 7)]);
}

/// As without an intake (`contract.rs`, `a_record_out_of_turn_is_a_second_history_and_stops_the_store`):
/// a record out of turn is refused and stops the store. It is never acknowledged from the
/// intake, nor left there for every start to trip on.
#[test]
fn a_record_out_of_turn_is_not_acknowledged_and_the_next_start_has_the_rest() {
    let (dir, store) = open_periodic(0);
    store.wait(store.append("acme", 1, &record(1)).unwrap()).unwrap();
    store.wait(store.append("other", 1, &record(1)).unwrap()).unwrap();
    let skipped = store.append("acme", 3, &record(3)).unwrap();
    assert!(matches!(store.wait(skipped), Err(Error::Stopped(_))));
    assert!(store.is_stopped());
    drop(store);
    for options in [periodic(0), Options::default()] {
        let reopened = Store::open(dir.path(), options).unwrap();
        assert_eq!(stored(&reopened), vec![("acme".into(), 1), ("other".into(), 1)]);
    }
}

/// A tenant's records before this run count: its first record here must follow them.
#[test]
fn the_first_record_of_a_run_must_follow_what_the_database_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    append(&store, &["t"], 1..=4);
    drop(store);
    let store = Store::open(dir.path(), periodic(0)).unwrap();
    store.wait(store.append("t", 5, &record(5)).unwrap()).unwrap();
    assert!(store.wait(store.append("t", 7, &record(7)).unwrap()).is_err());
    drop(store);
    let store = Store::open(dir.path(), periodic(0)).unwrap();
    assert!(store.wait(store.append("t", 5, &record(5)).unwrap()).is_err(), "5 is taken");
}

/// A store whose intake was used says so in its schema's version, so that an earlier
/// waitline, which reads no intake, refuses it instead of starting without the records only
/// the intake holds.
#[test]
fn a_store_with_an_intake_is_marked_for_earlier_versions() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), Options::default()).unwrap());
    let schema = || {
        let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        db.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get::<_, i64>(0)).unwrap()
    };
    assert_eq!(schema(), 3);
    drop(Store::open(dir.path(), periodic(0)).unwrap());
    assert_eq!(schema(), 4);
    // This version reads both.
    drop(Store::open(dir.path(), Options::default()).unwrap());
    assert_eq!(schema(), 4);
}

/// An intake file lost or cut short (a crash while it was made again at another size): the
/// next frames go past the position the database names, so a crash before the next commit
/// still finds them.
#[test]
fn a_missing_or_short_intake_starts_past_the_committed_position() {
    for cut in [None, Some(8), Some(0)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), periodic(4096)).unwrap();
        append(&store, &["t"], 1..=100);
        drop(store);
        let intake = dir.path().join(INTAKE);
        match cut {
            None => std::fs::remove_file(&intake).unwrap(),
            Some(len) => std::fs::OpenOptions::new().write(true).open(&intake).unwrap().set_len(len).unwrap(),
        }
        let store = Store::open(dir.path(), periodic(4096)).unwrap();
        let crashed = crash_while_held(store, dir.path(), |store| append(store, &["t"], 101..=103));
        let reopened = Store::open(crashed.path(), periodic(4096)).unwrap();
        assert_eq!(reopened.intake_tail(), Some(&IntakeTail::Clean { records: 3 }), "{cut:?}");
        assert_eq!(stored(&reopened), vec![("t".into(), 103)], "{cut:?}");
    }
}

/// An append waiting for room (behind a record too large for the intake) is woken by the
/// commit it waits for, whenever it looked.
#[test]
fn an_append_behind_a_record_too_large_for_the_intake_goes_on_after_its_commit() {
    let (_dir, store) = open_periodic(4096);
    for round in 0..50 {
        let seq = 1 + 2 * round;
        store.append("t", seq, &[9; 2000]).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let appender = {
            let store = store.clone();
            std::thread::spawn(move || {
                let done = store.append("t", seq + 1, &record(seq + 1)).and_then(|t| store.wait(t));
                tx.send(done.is_ok()).unwrap();
            })
        };
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(true), "round {round}");
        appender.join().unwrap();
    }
}

/// Whether `wait` for the ticket `queue` gets returns within a second while the writer is
/// held back.
fn returns_while_held(store: &Store, queue: impl FnOnce(&Store) -> waitline_store::Ticket) -> bool {
    store.pause_writer();
    let ticket = queue(store);
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || tx.send(store.wait(ticket).is_ok()).unwrap())
    };
    let returned = rx.recv_timeout(std::time::Duration::from_secs(1)) == Ok(true);
    store.resume_writer();
    waiter.join().unwrap();
    returned
}

#[test]
fn a_record_of_a_fifth_of_the_ring_is_durable_before_its_commit() {
    let (_dir, store) = open_periodic(4096);
    let large = |store: &Store| store.append("t", 1, &[5; 800]).unwrap();
    assert!(returns_while_held(&store, large), "an 800-byte record fits a quarter of 4,096");
}

#[test]
fn a_delivery_mark_is_durable_at_once() {
    let (_dir, store) = open_periodic(0);
    append(&store, &["t"], 1..=1);
    let mark = |store: &Store| store.mark_delivered("t", 1).unwrap();
    assert!(returns_while_held(&store, mark), "losing a mark only sends webhooks again");
    store.flush().unwrap();
    assert_eq!(store.delivered().unwrap().get("t"), Some(&1));
}

#[test]
fn a_record_behind_one_too_large_for_the_intake_waits_to_go_in() {
    let (_dir, store) = open_periodic(4096);
    store.pause_writer();
    store.append("t", 1, &[9; 2000]).unwrap();
    let next = {
        let store = store.clone();
        std::thread::spawn(move || store.append("u", 1, &record(1)).unwrap())
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!next.is_finished(), "not in the intake before the large record is committed");
    store.resume_writer();
    store.wait(next.join().unwrap()).unwrap();
}

/// After a start that cut a damaged record and the ones after it (`recover_truncate`), the
/// tenant's numbers from the cut go into the intake again.
#[test]
fn after_a_recovery_cuts_a_tenant_its_next_record_goes_into_the_intake() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store.pause_writer();
    for seq in 1..=6 {
        store.append("acme", seq, &record(seq)).unwrap();
    }
    store.resume_writer();
    store.flush().unwrap();
    drop(store);
    // One row holds the six: damage the fourth.
    let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let mut stored: Vec<u8> = db
        .query_row("SELECT records FROM journal WHERE tenant = 'acme' AND seq = 1", [], |r| r.get(0))
        .unwrap();
    stored[3 * (8 + record(1).len()) + 8] ^= 1;
    db.execute("UPDATE journal SET records = ?1 WHERE tenant = 'acme' AND seq = 1", [&stored]).unwrap();
    drop(db);
    let store = Store::open(dir.path(), Options { recover_truncate: true, ..periodic(0) }).unwrap();
    let (seen, _) = replay_all(&store);
    assert_eq!(seen.iter().map(|e| e.2).collect::<Vec<_>>(), [1, 2, 3]);
    let next = |store: &Store| store.append("acme", 4, &record(4)).unwrap();
    assert!(returns_while_held(&store, next), "4 follows the cut");
}

/// The future's side (what the HTTP service waits with): pending while the ticket is only
/// queued behind a snapshot, ready once committed.
#[test]
fn poll_durable_is_pending_until_a_ticket_behind_a_snapshot_is_committed() {
    let (_dir, store) = open_periodic(0);
    append(&store, &["t"], 1..=1);
    store.pause_writer();
    let held = store.append("u", 1, &record(1)).unwrap();
    store.snapshot("t", 1, b"state").unwrap();
    let behind = store.append("t", 2, &record(2)).unwrap();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(matches!(store.poll_durable(held, &mut cx), std::task::Poll::Ready(Ok(()))));
    assert!(store.poll_durable(behind, &mut cx).is_pending());
    store.resume_writer();
    store.flush().unwrap();
    assert!(matches!(store.poll_durable(behind, &mut cx), std::task::Poll::Ready(Ok(()))));
}

#[test]
fn an_intake_that_cannot_be_read_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), Options::default()).unwrap());
    std::fs::create_dir(dir.path().join(INTAKE)).unwrap();
    for options in [Options::default(), periodic(0)] {
        match Store::open(dir.path(), options) {
            Err(Error::Io { path, .. }) => assert_eq!(path, dir.path().join(INTAKE)),
            other => panic!("expected the intake named, got {other:?}"),
        }
    }
}
