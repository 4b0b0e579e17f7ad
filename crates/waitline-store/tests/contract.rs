//! The store's contract, one set of cases run against both databases: what is acknowledged
//! is replayed, in order, after a reopen; batches share a commit; a second history is
//! refused; snapshots compact the journal; delivery marks; damage is found and named.
//! Each case runs once over SQLite (a temporary directory) and once over PostgreSQL (a
//! schema of its own in the database of `WAITLINE_TEST_POSTGRES_URL`; see `common`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

mod common;

use common::{Backend, record, replay_all};
use waitline_store::{Entry, Error, Fsync, Options, Store};

/// Runs each case over both databases: `sqlite::case` and `postgres::case`.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    super::$case(&super::common::Sqlite::new());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $case() {
                    if let Some(backend) = super::common::Postgres::new(concat!("contract_", stringify!($case))) {
                        super::$case(&backend);
                    }
                }
            )*
        }
    };
}

contract!(
    what_was_acknowledged_is_replayed_in_order_after_a_reopen,
    appends_waiting_together_share_one_commit,
    a_record_out_of_turn_is_a_second_history_and_stops_the_store,
    recovery_cuts_a_row_of_many_records_at_the_damage,
    concurrent_appenders_each_see_their_records_durable_and_dense,
    a_snapshot_replaces_the_journal_it_covers,
    undelivered_events_keep_the_journal_after_the_delivery_mark,
    with_no_snapshot_before_the_mark_and_no_journal_from_one_the_oldest_snapshot_is_the_base,
    a_flipped_bit_is_named_and_only_recovery_truncates_it,
    a_missing_record_is_named,
    a_damaged_snapshot_stops_even_a_recovery,
    a_refusal_of_the_replaying_code_stops_the_replay,
    a_failed_write_stops_the_store_for_everyone,
    sequence_numbers_beyond_sqlite_integers_are_refused,
    a_task_is_woken_when_its_ticket_is_durable,
    a_row_cut_between_two_records_is_named,
    delivery_marks_survive_a_restart_and_never_move_back,
    what_was_appended_is_written_when_the_last_handle_goes,
    a_record_after_a_snapshot_in_the_same_batch_follows_it,
    recovery_forgets_the_snapshots_and_the_mark_past_the_cut,
    recovery_of_damage_the_base_snapshot_covers_keeps_the_snapshot,
);

/// Records `seqs` of `acme` in one batch (one row), durable on return.
fn in_one_row(store: &Store, seqs: std::ops::RangeInclusive<u64>) {
    store.pause_writer();
    for seq in seqs {
        store.append("acme", seq, &record(seq)).unwrap();
    }
    store.resume_writer();
    store.flush().unwrap();
}

/// Five records of two tenants, each record committed on its own (one row each).
fn fill(b: &dyn Backend) {
    let store = b.open(Options::default());
    for seq in 1..=5 {
        store.append("acme", seq, &record(seq)).unwrap();
        store.append("zeta", seq, &record(seq)).unwrap();
        store.flush().unwrap();
    }
}

fn what_was_acknowledged_is_replayed_in_order_after_a_reopen(b: &dyn Backend) {
    // Each policy writes its own two tenants; the second reopen sees both policies' writes.
    let mut want = Vec::new();
    for fsync in [Fsync::Always, Fsync::Periodic] {
        let (acme, zeta) = (format!("acme-{fsync:?}"), format!("zeta-{fsync:?}"));
        {
            let store = b.open(Options { fsync, ..Options::default() });
            for seq in 1..=5 {
                let t = store.append(&acme, seq, &record(seq)).unwrap();
                store.wait(t).unwrap();
            }
            let t = store.append(&zeta, 1, b"other tenant").unwrap();
            store.wait(t).unwrap();
        }
        let store = b.open(Options::default());
        let (seen, summary) = replay_all(&store);
        want.extend((1..=5).map(|s| (acme.clone(), "record", s, record(s))));
        want.push((zeta, "record", 1, b"other tenant".to_vec()));
        want.sort();
        let mut seen = seen;
        seen.sort();
        assert_eq!(seen, want, "{fsync:?}");
        assert_eq!((summary.records, summary.snapshots), (want.len(), 0));
    }
}

fn appends_waiting_together_share_one_commit(b: &dyn Backend) {
    let store = b.open(Options::default());
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

fn a_record_out_of_turn_is_a_second_history_and_stops_the_store(b: &dyn Backend) {
    let store = b.open(Options::default());
    store.wait(store.append("acme", 1, b"one").unwrap()).unwrap();
    let skipped = store.append("acme", 3, b"three").unwrap();
    let err = store.wait(skipped).unwrap_err();
    assert!(
        err.to_string().contains("record 3 of tenant \"acme\" does not follow 1: two histories"),
        "{err}"
    );
    drop(store);
    // A restart knows where each tenant is, from what is stored.
    let store = b.open(Options::default());
    assert!(store.wait(store.append("acme", 1, b"again").unwrap()).is_err());
}

fn recovery_cuts_a_row_of_many_records_at_the_damage(b: &dyn Backend) {
    in_one_row(&b.open(Options::default()), 1..=6);
    // One row holds the six; damage the fourth.
    let mut stored = b.records("acme", 1);
    let fourth = 3 * (8 + record(1).len()) + 8;
    stored[fourth] ^= 1;
    b.set_records("acme", 1, &stored);
    let store = b.open(Options { recover_truncate: true, ..Options::default() });
    let (seen, summary) = replay_all(&store);
    assert_eq!(seen.iter().map(|e| e.2).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(summary.truncated, vec![("acme".to_owned(), 4, "checksum mismatch".to_owned())]);
    store.wait(store.append("acme", 4, b"new 4").unwrap()).unwrap();
    drop(store);
    let store = b.open(Options::default());
    let (seen, _) = replay_all(&store);
    assert_eq!(seen.iter().map(|e| e.2).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(seen[3].3, b"new 4");
}

fn concurrent_appenders_each_see_their_records_durable_and_dense(b: &dyn Backend) {
    let store = b.open(Options::default());
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
    let store = b.open(Options::default());
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

fn a_snapshot_replaces_the_journal_it_covers(b: &dyn Backend) {
    let store = b.open(Options::default());
    // Two rows, 1..=8 and 9..=10: each batch waits until the writer is let go.
    for batch in [1..=8, 9..=10] {
        in_one_row(&store, batch);
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
    let store = b.open(Options::default());
    store.wait(store.append("acme", 11, &record(11)).unwrap()).unwrap();
    assert_eq!(replay_all(&store).0.len(), 2);
}

/// With `replay_from_delivered`, a tenant restarts from the newest snapshot at or before its
/// delivery mark, and the journal after that is kept; when the mark passes a newer snapshot,
/// that one becomes the base and what it covers goes.
fn undelivered_events_keep_the_journal_after_the_delivery_mark(b: &dyn Backend) {
    let options = Options { replay_from_delivered: true, ..Options::default() };
    let store = b.open(options);
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
    let store = b.open(Options::default());
    assert_eq!(replay_all(&store).0, [("acme".to_owned(), "snapshot", 30, b"state at 30".to_vec())]);
}

/// A journal compacted to its newest snapshot by a store without delivery marks, then
/// opened with them and a mark before that snapshot: the oldest snapshot is the base (the
/// journal before it is gone).
fn with_no_snapshot_before_the_mark_and_no_journal_from_one_the_oldest_snapshot_is_the_base(b: &dyn Backend) {
    {
        let store = b.open(Options::default());
        for seq in 1..=4 {
            store.wait(store.append("acme", seq, &record(seq)).unwrap()).unwrap();
        }
        store.snapshot("acme", 3, b"state at 3").unwrap();
        store.mark_delivered("acme", 1).unwrap();
        store.flush().unwrap();
    }
    let store = b.open(Options { replay_from_delivered: true, ..Options::default() });
    let (seen, _) = replay_all(&store);
    assert_eq!(seen.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), [("snapshot", 3), ("record", 4)]);
}

fn a_flipped_bit_is_named_and_only_recovery_truncates_it(b: &dyn Backend) {
    fill(b);
    // Flip one bit of the payload of acme's record 3.
    let mut stored = b.records("acme", 3);
    stored[9] ^= 0x10; // a byte of the payload, after the length and the checksum
    b.set_records("acme", 3, &stored);
    {
        let store = b.open(Options::default());
        match store.replay(|_| Ok(())) {
            Err(Error::Corrupt { place, what, tenant, seq, detail }) => {
                assert_eq!(place, b.place());
                assert_eq!(
                    (what, tenant.as_str(), seq, detail.as_str()),
                    ("record", "acme", 3, "checksum mismatch")
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    let store = b.open(Options { recover_truncate: true, ..Options::default() });
    let (seen, summary) = replay_all(&store);
    assert_eq!(summary.truncated, vec![("acme".to_owned(), 3, "checksum mismatch".to_owned())]);
    let acme: Vec<u64> = seen.iter().filter(|e| e.0 == "acme").map(|e| e.2).collect();
    let zeta: Vec<u64> = seen.iter().filter(|e| e.0 == "zeta").map(|e| e.2).collect();
    assert_eq!((acme, zeta), (vec![1, 2], vec![1, 2, 3, 4, 5]));
    drop(store);
    // The damage is gone from disk: a plain start works and sees the same.
    let store = b.open(Options::default());
    assert_eq!(replay_all(&store).1.records, 7);
    // The tenant's journal goes on from where it now ends.
    store.wait(store.append("acme", 3, b"new 3").unwrap()).unwrap();
}

fn a_missing_record_is_named(b: &dyn Backend) {
    fill(b);
    b.tamper("DELETE FROM journal WHERE tenant = 'zeta' AND seq = 2");
    let store = b.open(Options::default());
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

fn a_damaged_snapshot_stops_even_a_recovery(b: &dyn Backend) {
    {
        let store = b.open(Options::default());
        store.append("acme", 1, b"x").unwrap();
        store.snapshot("acme", 1, b"state").unwrap();
        store.flush().unwrap();
    }
    b.tamper("UPDATE snapshots SET data = substr(data, 1, 5)");
    let store = b.open(Options { recover_truncate: true, ..Options::default() });
    assert!(matches!(store.replay(|_| Ok(())), Err(Error::Corrupt { what: "snapshot", seq: 1, .. })));
}

fn a_refusal_of_the_replaying_code_stops_the_replay(b: &dyn Backend) {
    fill(b);
    let store = b.open(Options::default());
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

fn a_failed_write_stops_the_store_for_everyone(b: &dyn Backend) {
    let store = b.open(Options::default());
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
    let store = b.open(Options::default());
    let (seen, _) = replay_all(&store);
    assert_eq!(seen, vec![("acme".to_owned(), "record", 1, b"one".to_vec())]);
}

fn sequence_numbers_beyond_sqlite_integers_are_refused(b: &dyn Backend) {
    let store = b.open(Options::default());
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

fn a_task_is_woken_when_its_ticket_is_durable(b: &dyn Backend) {
    let store = b.open(Options::default());
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

fn a_row_cut_between_two_records_is_named(b: &dyn Backend) {
    in_one_row(&b.open(Options::default()), 1..=3);
    // Keep only the first record's bytes: every frame left is whole.
    b.tamper(&format!("UPDATE journal SET records = substr(records, 1, {})", 8 + record(1).len()));
    let store = b.open(Options::default());
    let err = store.replay(|_| Ok(())).unwrap_err();
    assert!(
        err.to_string().contains("at sequence number 2 is damaged: missing (its row ends at 1, not 3)"),
        "{err}"
    );
}

fn delivery_marks_survive_a_restart_and_never_move_back(b: &dyn Backend) {
    {
        let store = b.open(Options::default());
        store.mark_delivered("acme", 5).unwrap();
        store.mark_delivered("acme", 3).unwrap();
        store.mark_delivered("zeta", 1).unwrap();
        store.flush().unwrap();
    }
    let store = b.open(Options::default());
    let marks = store.delivered().unwrap();
    assert_eq!((marks["acme"], marks["zeta"], marks.len()), (5, 1, 2));
}

fn what_was_appended_is_written_when_the_last_handle_goes(b: &dyn Backend) {
    {
        let store = b.open(Options::default());
        assert!(format!("{store:?}").starts_with("Store {"), "{store:?}");
        for seq in 1..=50 {
            store.append("acme", seq, &record(seq)).unwrap(); // nobody waits
        }
    } // dropped: the writer finishes what is queued, then stops
    let store = b.open(Options::default());
    assert_eq!(replay_all(&store).1.records, 50);
}

/// Records, a snapshot and a record after it, all in one batch: the record after the
/// snapshot follows the records before it (their row was written for the snapshot).
fn a_record_after_a_snapshot_in_the_same_batch_follows_it(b: &dyn Backend) {
    let store = b.open(Options::default());
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

/// A recovery cuts the damaged history whole: its snapshots past the cut and its delivery
/// mark past the cut go with its records. Kept, the old snapshot at 8 would be restored
/// under a new history's 9 and 10 (and, with the new history short of it, would make the
/// tenant's head 8, refusing its next record 7), and the mark at 6 would count the new
/// history's events 5 and 6 as delivered.
fn recovery_forgets_the_snapshots_and_the_mark_past_the_cut(b: &dyn Backend) {
    let options = Options { replay_from_delivered: true, ..Options::default() };
    {
        let store = b.open(options);
        for seq in 1..=10 {
            store.wait(store.append("acme", seq, &record(seq)).unwrap()).unwrap();
            match seq {
                3 => store.wait(store.snapshot("acme", 3, b"state at 3").unwrap()).unwrap(),
                6 => store.wait(store.mark_delivered("acme", 6).unwrap()).unwrap(),
                8 => store.wait(store.snapshot("acme", 8, b"old state at 8").unwrap()).unwrap(),
                _ => {}
            }
        }
    }
    let mut stored = b.records("acme", 5);
    let last = stored.len() - 1;
    stored[last] ^= 1;
    b.set_records("acme", 5, &stored);
    {
        let store = b.open(Options { recover_truncate: true, ..options });
        let (seen, summary) = replay_all(&store);
        assert_eq!(summary.truncated.len(), 1, "{:?}", summary.truncated);
        assert_eq!(seen.iter().map(|e| e.2).collect::<Vec<_>>(), vec![3, 4], "from the snapshot at 3");
        assert_eq!(
            store.delivered().unwrap().get("acme").copied(),
            Some(4),
            "the mark is lowered to the cut"
        );
        for seq in 5..=6 {
            store.wait(store.append("acme", seq, format!("new {seq}").as_bytes()).unwrap()).unwrap();
        }
    }
    // The new history is short of the old snapshot: it goes on at 7.
    let store = b.open(options);
    let (seen, _) = replay_all(&store);
    assert!(seen.iter().all(|e| e.3 != b"old state at 8"), "the old history's snapshot came back");
    assert_eq!(seen.iter().map(|e| e.2).collect::<Vec<_>>(), vec![3, 4, 5, 6]);
    store.wait(store.append("acme", 7, b"new 7").unwrap()).unwrap();
}

/// Damage in a record the base snapshot covers (its row, one commit's, straddles the
/// snapshot): the recovery keeps the snapshot and cuts after it, where the row can no longer
/// be read. Cut at the damage, it would delete the snapshot the replay had just restored.
fn recovery_of_damage_the_base_snapshot_covers_keeps_the_snapshot(b: &dyn Backend) {
    {
        let store = b.open(Options::default());
        in_one_row(&store, 1..=6);
        store.wait(store.snapshot("acme", 4, b"state at 4").unwrap()).unwrap();
    }
    let mut stored = b.records("acme", 1);
    // A byte of record 2's payload: after record 1's frame and record 2's header.
    let in_record_2 = crate::FRAME_HEADER + record(1).len() + crate::FRAME_HEADER;
    stored[in_record_2] ^= 1;
    b.set_records("acme", 1, &stored);
    let kinds = |seen: &[common::Seen]| seen.iter().map(|e| (e.1, e.2)).collect::<Vec<_>>();
    {
        let store = b.open(Options { recover_truncate: true, ..Options::default() });
        let (seen, summary) = replay_all(&store);
        assert_eq!(kinds(&seen), vec![("snapshot", 4)]);
        let [(tenant, cut, why)] = &summary.truncated[..] else { panic!("{:?}", summary.truncated) };
        assert_eq!((tenant.as_str(), *cut), ("acme", 5));
        assert!(why.contains("record 2, which the snapshot at 4 covers"), "{why}");
        store.wait(store.append("acme", 5, b"new 5").unwrap()).unwrap();
    }
    let store = b.open(Options::default());
    assert_eq!(kinds(&replay_all(&store).0), vec![("snapshot", 4), ("record", 5)]);
}

/// The bytes before a stored record's payload (its length and checksum).
const FRAME_HEADER: usize = 8;
