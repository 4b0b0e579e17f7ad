//! SQLite's write-ahead log as the store reads it before SQLite recovers it
//! (`waitline_store::wal`), with SQLite's own recovery as the oracle: a real log (records each
//! committed on its own) with bytes changed and cut, written beside its database and opened.
//!
//! Any bytes: the reading never panics, and what it reports lies within them. A real log
//! changed: a log called damaged stops the open, which `recover_truncate` then passes; one
//! called clean loses no record; one called torn loses at most its last transaction's. The
//! last two hold for one damaged byte anywhere (two can hide each other).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use waitline_store::wal::{LogTail, classify};
use waitline_store::{DB_FILE, Entry, Options, Store};

/// Records in the real log.
const RECORDS: u64 = 12;

/// What to read as a log.
#[derive(Debug, Clone, Arbitrary)]
pub enum LogBytes {
    /// The real log with bytes changed, (offset, mask), each offset reduced modulo the log's
    /// size, then cut: `cut` bytes (modulo its size plus one) dropped from its end.
    Changed { changes: Vec<(u32, u8)>, cut: Option<u32> },
    /// Any bytes.
    Raw(Vec<u8>),
}

/// A data directory copied while its store ran (a crash's state): its database file, and
/// the log.
struct RealLog {
    _dir: tempfile::TempDir,
    db: PathBuf,
    wal: Vec<u8>,
}

fn record(n: u64) -> Vec<u8> {
    format!("record {n} {}", "y".repeat((n as usize * 53) % 200)).into_bytes()
}

fn real_log() -> &'static RealLog {
    static LOG: OnceLock<RealLog> = OnceLock::new();
    LOG.get_or_init(|| {
        // A copy whose database file holds no record yet (the checkpointer copies the log
        // into it every 200 ms): else a log cut short would show the database's newer pages
        // beside its own older ones, which no crash leaves.
        (0..10)
            .map(|_| copied_while_running())
            .find(|log| open(&log.db, &[], false) == Ok(0))
            .expect("a copy made before the first checkpoint in ten tries")
    })
}

fn copied_while_running() -> RealLog {
    {
        let live = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(live.path(), Options::default()).expect("a store");
        for seq in 1..=RECORDS {
            store.wait(store.append("acme", seq, &record(seq)).expect("appended")).expect("durable");
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = dir.path().join(DB_FILE);
        std::fs::copy(live.path().join(DB_FILE), &db).expect("the database copied");
        let wal = std::fs::read(live.path().join(format!("{DB_FILE}-wal"))).expect("the log read");
        drop(store);
        RealLog { _dir: dir, db, wal }
    }
}

/// Opens a copy of the real log's database with `wal` as its log: the records it replays
/// (dense, as written), or the open's or the replay's error.
fn open(db: &Path, wal: &[u8], recover_truncate: bool) -> Result<u64, String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::copy(db, scratch.path().join(DB_FILE)).map_err(|e| e.to_string())?;
    std::fs::write(scratch.path().join(format!("{DB_FILE}-wal")), wal).map_err(|e| e.to_string())?;
    let store = Store::open(scratch.path(), Options { recover_truncate, ..Options::default() })
        .map_err(|e| e.to_string())?;
    let mut last = 0;
    let mut wrong = None;
    store
        .replay(|e| {
            match e {
                Entry::Record { tenant: "acme", seq, data } if seq == last + 1 && data == record(seq) => {
                    last = seq
                }
                other => wrong = Some(format!("{other:?} after record {last}")),
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    wrong.map_or(Ok(last), Err)
}

/// Reads the log and, for a changed real log, opens it.
///
/// # Errors
/// A report outside the bytes, or an open that disagrees with the report.
pub fn check_log_bytes(input: &LogBytes) -> Result<(), String> {
    let (bytes, strict, db) = match input {
        LogBytes::Raw(bytes) => (bytes.clone(), None, None),
        LogBytes::Changed { changes, cut } => {
            let real = real_log();
            let mut bytes = real.wal.clone();
            for &(at, mask) in changes.iter().take(8) {
                let at = at as usize % bytes.len();
                bytes[at] ^= mask;
            }
            // One damaged byte is told apart wherever it is; two can hide each other (the
            // second in the checksum the first frame's successor follows from, say).
            let kept = bytes.len() - cut.map_or(0, |c| c as usize % (bytes.len() + 1));
            bytes.truncate(kept);
            // `Some(where)` when at most one byte is damaged (`None` inside: none).
            let mut damaged = (0..kept).filter(|&i| bytes[i] != real.wal[i]);
            let strict = match (damaged.next(), damaged.next()) {
                (first, None) => Some(first),
                _ => None,
            };
            (bytes, strict, Some((&real.db, &real.wal[..kept])))
        }
    };
    let tail = classify(&bytes);
    let len = bytes.len() as u64;
    match &tail {
        LogTail::Clean => {}
        LogTail::Torn { offset, bytes: torn } if offset + torn <= len && *torn > 0 => {}
        LogTail::Damaged { offset, .. } if *offset < len => {}
        _ => return Err(format!("{tail:?} for {len} bytes")),
    }
    let Some((db, unchanged)) = db else { return Ok(()) };
    // The records of the log cut the same way, unchanged: what a crash there leaves.
    let written = open(db, unchanged, false).map_err(|e| format!("the log cut, unchanged: {e}"))?;
    let opened = open(db, &bytes, false);
    match (&tail, opened) {
        (LogTail::Damaged { offset, .. }, Err(e)) if e.contains(&format!("damaged at byte {offset}")) => {
            open(db, &bytes, true).map(drop).map_err(|e| format!("damaged, then with recovery: {e}"))
        }
        (LogTail::Damaged { .. }, other) => Err(format!("{tail:?}, yet the open gave {other:?}")),
        (_, Err(e)) => Err(format!("{tail:?}, yet the open failed: {e}")),
        (LogTail::Clean, Ok(n)) if strict.is_some() && n < written => {
            Err(format!("clean, yet {n} of {written} records"))
        }
        (LogTail::Torn { .. }, Ok(n)) if strict.is_some() && n + 1 < written => {
            Err(format!("a torn last transaction, yet {n} of {written} records"))
        }
        // A damaged byte before the torn part: the transaction dropped was committed and its
        // damage is elsewhere, so it is damage, not a tear.
        (LogTail::Torn { offset, .. }, Ok(_)) if strict.flatten().is_some_and(|at| (at as u64) < *offset) => {
            Err(format!("{tail:?} with the damaged byte at {:?}, before it", strict.flatten()))
        }
        (_, Ok(_)) => Ok(()),
    }
}
