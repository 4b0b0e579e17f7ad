//! A crash in the middle of a write, and a bit flipped on the way to disk: the store's files
//! are copied while it runs (as a crash leaves them), then the write-ahead log is cut or
//! damaged at many offsets of its last frames. Opening must never panic and never show wrong
//! data: each tenant's records come back as a dense prefix of what was written (SQLite drops
//! a torn or damaged tail of its log), or the damage is named.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use waitline_store::{DB_FILE, Entry, LogTail, Options, Store};

const RECORDS: u64 = 40;

fn record(n: u64) -> Vec<u8> {
    format!("record {n} {}", "x".repeat((n as usize * 37) % 300)).into_bytes()
}

/// A data directory as a crash leaves it: every record committed on its own, the log not
/// yet folded into the database.
fn crashed_copy() -> (tempfile::TempDir, Vec<u8>) {
    let live = tempfile::tempdir().unwrap();
    let store = Store::open(live.path(), Options::default()).unwrap();
    for seq in 1..=RECORDS {
        store.wait(store.append("acme", seq, &record(seq)).unwrap()).unwrap();
    }
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(live.path().join(DB_FILE), copy.path().join(DB_FILE)).unwrap();
    let wal = std::fs::read(live.path().join(format!("{DB_FILE}-wal"))).unwrap();
    drop(store);
    (copy, wal)
}

/// Opens `dir` with `wal` as its log: `Ok(n)` when it replays records 1..=n exactly as
/// written, `Err` when it names damage; anything else fails the test.
fn open_with(dir: &Path, wal: &[u8]) -> Result<u64, String> {
    let scratch = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join(DB_FILE), scratch.path().join(DB_FILE)).unwrap();
    std::fs::write(scratch.path().join(format!("{DB_FILE}-wal")), wal).unwrap();
    let store = Store::open(scratch.path(), Options::default()).map_err(|e| e.to_string())?;
    let mut last = 0;
    store
        .replay(|e| {
            let Entry::Record { tenant, seq, data } = e else { panic!("no snapshot was written") };
            assert_eq!((tenant, seq), ("acme", last + 1), "records come back dense");
            assert_eq!(data, record(seq), "record {seq} comes back as written");
            last = seq;
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(last)
}

#[test]
fn a_log_cut_anywhere_in_its_last_frames_gives_a_prefix() {
    // The checkpointer may copy part of the log into the database file while the records
    // are written (a pass every 200 ms): without the log, a copy opens with that part. The
    // cuts below need the last records to be in the log only; a pass right after the last
    // write is rare, and then the copy is made again.
    let (dir, wal, in_the_database) = (0..5)
        .map(|_| {
            let (dir, wal) = crashed_copy();
            let in_the_database = open_with(dir.path(), &[]).unwrap_or_else(|e| panic!("no log: {e}"));
            (dir, wal, in_the_database)
        })
        .find(|(_, _, in_the_database)| *in_the_database < RECORDS - 1)
        .expect("the last records were still only in the log in one of five copies");
    assert_eq!(open_with(dir.path(), &wal), Ok(RECORDS), "the whole log: everything");
    // WAL frames are a 24-byte header and a page; cut at every 16th byte of the last four
    // pages, and around each frame boundary.
    let page = 4096 + 24;
    let from = wal.len().saturating_sub(4 * page);
    let mut cuts: Vec<usize> = (from..wal.len()).step_by(16).collect();
    for k in 0..=wal.len() / page {
        let edge = 32 + k * page;
        cuts.extend([edge.saturating_sub(1), edge, edge + 1, edge + 24]);
    }
    cuts.retain(|c| *c <= wal.len());
    let mut last_seen = in_the_database;
    cuts.sort_unstable();
    for cut in cuts {
        // A crash cuts the log: never taken for damage before committed transactions.
        let tail =
            log_tail_of(dir.path(), &wal[..cut], false).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert!(!matches!(tail, LogTail::Damaged { .. }), "cut at {cut}: {tail:?}");
        let n = open_with(dir.path(), &wal[..cut]).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert!(n >= last_seen, "a longer log never gives fewer records ({cut}: {n} < {last_seen})");
        last_seen = n;
    }
    assert!(last_seen >= RECORDS - 1);
}

#[test]
fn a_bit_flipped_in_the_last_frames_gives_a_prefix_or_names_the_damage() {
    let (dir, wal) = crashed_copy();
    let from = wal.len().saturating_sub(2 * (4096 + 24));
    let mut prefixes = 0;
    for at in (from..wal.len()).step_by(7) {
        let mut bad = wal.clone();
        bad[at] ^= 1 << (at % 8);
        match open_with(dir.path(), &bad) {
            Ok(n) => {
                assert!(n <= RECORDS);
                prefixes += 1;
            }
            Err(named) => assert!(named.contains(DB_FILE), "damage at {at} not named: {named}"),
        }
    }
    assert!(prefixes > 0);
}

/// Opens `dir` with `wal` as its log and tells what the store found past the log's last
/// complete transaction.
fn log_tail_of(dir: &Path, wal: &[u8], recover_truncate: bool) -> Result<LogTail, String> {
    let scratch = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join(DB_FILE), scratch.path().join(DB_FILE)).unwrap();
    std::fs::write(scratch.path().join(format!("{DB_FILE}-wal")), wal).unwrap();
    let store = Store::open(scratch.path(), Options { recover_truncate, ..Options::default() })
        .map_err(|e| e.to_string())?;
    Ok(store.log_tail().unwrap().clone())
}

/// The frames of the current log (its salts, from the top): their offsets, and whether each
/// commits.
fn current_frames(wal: &[u8]) -> Vec<(usize, bool)> {
    let be = |at: usize| u32::from_be_bytes(wal[at..at + 4].try_into().unwrap());
    let frame = 24 + be(8) as usize;
    let mut frames = Vec::new();
    let mut at = 32;
    while at + frame <= wal.len() && (be(at + 8), be(at + 12)) == (be(16), be(20)) {
        frames.push((at, be(at + 4) != 0));
        at += frame;
    }
    frames
}

/// SQLite drops everything after the first bad frame of its log, committed transactions
/// too, without a word. A bit flipped in a transaction followed by a committed one stops the
/// start, naming the log and the byte (unless recovery is asked for); one in the last
/// transaction is its torn tail: dropped, and reported.
#[test]
fn damage_before_a_committed_transaction_stops_the_start_and_a_torn_last_one_is_reported() {
    let (dir, wal) = crashed_copy();
    let frames = current_frames(&wal);
    let commits: Vec<usize> = (0..frames.len()).filter(|&k| frames[k].1).collect();
    assert!(commits.len() >= 3, "{} commits in the log", commits.len());
    let [before, last] = [commits[commits.len() - 3] + 1, commits[commits.len() - 2] + 1];
    let flip = |k: usize| {
        let mut bad = wal.clone();
        bad[frames[k].0 + 24 + 100] ^= 0x10;
        bad
    };
    // The last frame damaged: torn (dropped, reported). An earlier frame of the last
    // transaction damaged, its commit frame whole: no crash leaves that, so it is named too.
    let final_frame = frames.len() - 1;
    let tail = log_tail_of(dir.path(), &flip(final_frame), false).unwrap();
    assert!(matches!(tail, LogTail::Torn { offset, .. } if offset == frames[last].0 as u64), "{tail:?}");
    assert_eq!(open_with(dir.path(), &flip(final_frame)), Ok(RECORDS - 1));
    for k in last..final_frame {
        assert!(log_tail_of(dir.path(), &flip(k), false).unwrap_err().contains("damaged at byte"));
    }
    for (k, &(offset, _)) in frames.iter().enumerate().take(last).skip(before) {
        let refused = log_tail_of(dir.path(), &flip(k), false).unwrap_err();
        let named = format!("{DB_FILE}-wal: damaged at byte {offset}");
        assert!(refused.contains(&named) && refused.contains("--recover-truncate"), "{refused}");
        let recovered = log_tail_of(dir.path(), &flip(k), true).unwrap();
        assert!(matches!(recovered, LogTail::Damaged { offset: at, .. } if at == offset as u64));
    }
    assert_eq!(log_tail_of(dir.path(), &wal, false), Ok(LogTail::Clean));
}

/// A start that recovered past damage cuts the log where SQLite's recovery ends it: else the
/// frames dropped would stay past the frames written next, with the log's salts, and a
/// crash then would show them as committed transactions after damage (a start refused at a
/// byte that is not damaged).
#[test]
fn a_crash_after_a_recovered_start_starts() {
    let (dir, wal) = crashed_copy();
    let frames = current_frames(&wal);
    let commits: Vec<usize> = (0..frames.len()).filter(|&k| frames[k].1).collect();
    let k = commits[commits.len() - 20] + 1;
    let mut bad = wal;
    bad[frames[k].0 + 24 + 100] ^= 0x10;
    assert!(log_tail_of(dir.path(), &bad, false).is_err(), "refused");
    let live = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join(DB_FILE), live.path().join(DB_FILE)).unwrap();
    std::fs::write(live.path().join(format!("{DB_FILE}-wal")), &bad).unwrap();
    let store = Store::open(live.path(), Options { recover_truncate: true, ..Options::default() }).unwrap();
    assert!(
        matches!(store.log_tail(), Some(LogTail::Damaged { kept, .. }) if *kept < frames[k].0 as u64 + 1)
    );
    let last = last_record(&store);
    store.wait(store.append("acme", last + 1, &record(last + 1)).unwrap()).unwrap();
    // A crash now: the files as they are.
    let crashed = tempfile::tempdir().unwrap();
    for name in [DB_FILE.to_owned(), format!("{DB_FILE}-wal")] {
        std::fs::copy(live.path().join(&name), crashed.path().join(&name)).unwrap();
    }
    drop(store);
    let again = Store::open(crashed.path(), Options::default()).unwrap();
    assert_eq!(last_record(&again), last + 1, "every record written since the recovery");
}

/// An idle store's log is all copied into the database file (the checkpointer passes every
/// 200 ms; the log starts over only at the next write). Damage in it then loses nothing if
/// the log is dropped whole, where SQLite's recovery would read the older pages of the frames
/// before the damage over the database's later ones: the store drops it, as SQLite's index of
/// the log (`-shm`) says all of it was copied.
#[test]
fn damage_in_a_log_the_database_holds_whole_loses_nothing() {
    let live = tempfile::tempdir().unwrap();
    let store = Store::open(live.path(), Options::default()).unwrap();
    for seq in 1..=RECORDS {
        store.wait(store.append("acme", seq, &record(seq)).unwrap()).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    let copy = tempfile::tempdir().unwrap();
    for name in [DB_FILE.to_owned(), format!("{DB_FILE}-wal"), format!("{DB_FILE}-shm")] {
        std::fs::copy(live.path().join(&name), copy.path().join(&name)).unwrap();
    }
    drop(store);
    let wal_path = copy.path().join(format!("{DB_FILE}-wal"));
    let mut wal = std::fs::read(&wal_path).unwrap();
    let frames = current_frames(&wal);
    assert!(frames.len() > 10, "{} frames", frames.len());
    wal[frames[5].0 + 24 + 100] ^= 0x10;
    std::fs::write(&wal_path, &wal).unwrap();
    let scratch = |with_index: bool| {
        let dir = tempfile::tempdir().unwrap();
        for name in [DB_FILE.to_owned(), format!("{DB_FILE}-wal"), format!("{DB_FILE}-shm")] {
            if with_index || !name.ends_with("-shm") {
                std::fs::copy(copy.path().join(&name), dir.path().join(&name)).unwrap();
            }
        }
        dir
    };
    let dir = scratch(true);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert!(
        matches!(store.log_tail(), Some(LogTail::Copied { offset, .. }) if *offset == frames[5].0 as u64)
    );
    assert_eq!(last_record(&store), RECORDS, "nothing lost");
    // Without the index nothing says the database holds it all: refused.
    let refused = Store::open(scratch(false).path(), Options::default()).map(drop).unwrap_err();
    assert!(refused.to_string().contains("damaged at byte"), "{refused}");
}

/// The number of the last record `store` replays.
fn last_record(store: &Store) -> u64 {
    let mut last = 0;
    store
        .replay(|e| {
            if let Entry::Record { seq, .. } = e {
                last = seq;
            }
            Ok(())
        })
        .unwrap();
    last
}

/// Records with a snapshot every 10 (each committed on its own, so the log holds snapshot
/// rows, the deletions they make, and records after them), cut anywhere in its last frames:
/// what opens is the newest snapshot that survived and the records after it, dense and as
/// written, or named damage; never a snapshot without the records up to it being covered.
#[test]
fn a_log_cut_among_snapshot_rows_gives_a_snapshot_and_a_prefix_after_it() {
    let live = tempfile::tempdir().unwrap();
    let store = Store::open(live.path(), Options::default()).unwrap();
    for seq in 1..=RECORDS {
        store.wait(store.append("acme", seq, &record(seq)).unwrap()).unwrap();
        if seq % 10 == 0 {
            let ticket = store.snapshot("acme", seq, format!("state {seq}").as_bytes()).unwrap();
            store.wait(ticket).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(live.path().join(DB_FILE), dir.path().join(DB_FILE)).unwrap();
    let wal = std::fs::read(live.path().join(format!("{DB_FILE}-wal"))).unwrap();
    drop(store);
    let page = 4096 + 24;
    let from = wal.len().saturating_sub(8 * page);
    let mut cuts: Vec<usize> = (from..=wal.len()).step_by(64).collect();
    cuts.push(wal.len());
    let mut snapshots = std::collections::BTreeSet::new();
    for cut in cuts {
        let scratch = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join(DB_FILE), scratch.path().join(DB_FILE)).unwrap();
        std::fs::write(scratch.path().join(format!("{DB_FILE}-wal")), &wal[..cut]).unwrap();
        let store = Store::open(scratch.path(), Options::default()).unwrap();
        let mut last = 0;
        let result = store.replay(|e| {
            match e {
                Entry::Snapshot { seq, data, .. } => {
                    assert_eq!(last, 0, "the snapshot comes first");
                    assert_eq!(data, format!("state {seq}").as_bytes(), "snapshot {seq} as written");
                    snapshots.insert(seq);
                    last = seq;
                }
                Entry::Record { seq, data, .. } => {
                    assert_eq!(seq, last + 1, "records come dense after the snapshot (cut at {cut})");
                    assert_eq!(data, record(seq));
                    last = seq;
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            assert!(e.to_string().contains(DB_FILE), "cut at {cut}: damage not named: {e}");
        }
    }
    assert!(snapshots.len() >= 2, "cuts fell before and after a snapshot: {snapshots:?}");
}
