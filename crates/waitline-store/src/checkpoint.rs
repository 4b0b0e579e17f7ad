//! The checkpointer of a SQLite store: a thread with a connection of its own that copies the
//! write-ahead log into the database file (a `PASSIVE` checkpoint, which never waits for the
//! writer) every [`PASS_EVERY`], and with [`Fsync::Periodic`] syncs the log once a second.
//! Both used to run in the writer's loop, where every request of the next batch waited for
//! their syncs.
//!
//! SQLite starts the log over only when a transaction begins while every frame of it is
//! copied, which a writer committing without pause rarely meets; so once the log holds
//! [`HARD_LIMIT`] frames the checkpointer holds the writer between two transactions (the
//! gate) for one pass, and the writer's next transaction starts the log over.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;

use crate::{Error, Fsync, Result};

/// With [`Fsync::Periodic`], the longest time between two syncs of the log.
pub(crate) const PERIODIC_SYNC: Duration = Duration::from_secs(1);

/// How often the log is copied into the database file.
const PASS_EVERY: Duration = if cfg!(test) { Duration::from_millis(5) } else { Duration::from_millis(200) };

/// Frames in the log past which a pass holds the writer so that the log starts over
/// (4 KiB pages: 16 MiB). With 16,384 the `always` server used 1.4-2.1 µs more CPU per
/// request than with SQLite's own checkpoints (three noisy runs, BENCHMARKS.md), with
/// 4,096 0.3 µs more (one run).
const HARD_LIMIT: u64 = if cfg!(test) { 64 } else { 4_096 };

/// The checkpointer of one writer connection: stopped (after a last pass and, with
/// [`Fsync::Periodic`], a last sync) when dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    stopping: bool,
    /// The checkpointer wants the writer held before its next transaction.
    hold: bool,
    /// The writer is in a transaction.
    in_transaction: bool,
    /// Why a pass or a sync failed: the writer's next transaction fails with it, which
    /// stops the store.
    failed: Option<Error>,
}

impl Checkpointer {
    /// Starts the checkpointer of the database `db` (whose writer has turned SQLite's own
    /// checkpoints off).
    pub(crate) fn start(db: &Path, fsync: Fsync) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = {
            let (shared, path) = (Arc::clone(&shared), db.to_path_buf());
            std::thread::Builder::new()
                .name("waitline-checkpoint".into())
                .spawn(move || {
                    if let Err(e) = run(&shared, &path, fsync) {
                        shared.state.lock().failed = Some(e);
                    }
                })
                .map_err(|e| Error::io(db, e))?
        };
        Ok(Self { shared, thread: Some(thread) })
    }

    /// Before the writer's transaction: waits while a pass holds the writer; fails if a
    /// pass or a sync has failed.
    pub(crate) fn enter(&self) -> Result<()> {
        let mut state = self.shared.state.lock();
        while state.hold && !state.stopping {
            self.shared.changed.wait(&mut state);
        }
        if let Some(e) = state.failed.take() {
            return Err(e);
        }
        state.in_transaction = true;
        Ok(())
    }

    /// After the writer's transaction (committed or not).
    pub(crate) fn leave(&self) {
        let mut state = self.shared.state.lock();
        state.in_transaction = false;
        if state.hold {
            self.shared.changed.notify_all();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.state.lock().stopping = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// Holds the writer out of its next transaction (until [`Shared::release`]), once the
    /// one in progress has ended; `false` if the writer stopped inside one.
    fn hold(&self) -> bool {
        let mut state = self.state.lock();
        state.hold = true;
        while state.in_transaction && !state.stopping {
            self.changed.wait(&mut state);
        }
        !state.in_transaction
    }

    fn release(&self) {
        self.state.lock().hold = false;
        self.changed.notify_all();
    }
}

/// Copies the log every [`PASS_EVERY`] and syncs it (with [`Fsync::Periodic`]) until
/// stopped; a last pass and sync then.
fn run(shared: &Shared, db: &Path, fsync: Fsync) -> Result<()> {
    let sql = |source| Error::Sqlite { path: db.to_path_buf(), source };
    let conn = Connection::open(db).map_err(sql)?;
    // A checkpoint syncs the log before copying it and the database file after, unless
    // the connection's `synchronous` is OFF.
    conn.execute_batch("PRAGMA synchronous = NORMAL;").map_err(sql)?;
    let mut log = FileSync::log_of(db);
    // With `Fsync::Periodic`, what the writer has not committed yet waits in the intake.
    let mut intake = FileSync { path: db.with_file_name(crate::intake::INTAKE_FILE), dir_synced: false };
    let mut next_sync = Instant::now() + PERIODIC_SYNC;
    // The log's frames at the last pass that held the writer: not held again until the
    // log changed (a reader can keep a pass from copying everything, and an idle writer
    // does not start the log over).
    let mut held_at = None;
    loop {
        let stopping = {
            let mut state = shared.state.lock();
            if !state.stopping {
                shared.changed.wait_for(&mut state, PASS_EVERY);
            }
            state.stopping
        };
        let frames = checkpoint(&conn).map_err(sql)?;
        if frames >= HARD_LIMIT && held_at != Some(frames) {
            let done = if shared.hold() { checkpoint(&conn) } else { Ok(frames) };
            shared.release();
            held_at = Some(done.map_err(sql)?);
        }
        if fsync == Fsync::Periodic && (stopping || Instant::now() >= next_sync) {
            intake.sync()?;
            log.sync()?;
            next_sync = Instant::now() + PERIODIC_SYNC;
        }
        if stopping {
            return Ok(());
        }
    }
}

/// One `PASSIVE` checkpoint: copies what no reader still needs; returns the frames in the
/// log.
fn checkpoint(conn: &Connection) -> rusqlite::Result<u64> {
    // -1 when the database is not in WAL mode (yet).
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
        .map(|f| f.max(0).unsigned_abs())
}

/// Syncs a file of the store's: the write-ahead log itself (a checkpoint syncs it only when
/// it has frames to copy, which a reader can hold back), and the intake (whose stores into
/// its mapping the system writes back when the file is synced).
struct FileSync {
    path: PathBuf,
    /// The directory's entry of the file is synced once, with its first sync here.
    dir_synced: bool,
}

impl FileSync {
    fn log_of(db: &Path) -> Self {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        Self { path: path.into(), dir_synced: false }
    }

    fn sync(&mut self) -> Result<()> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            // Nothing written yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        file.sync_data().map_err(|e| Error::io(&self.path, e))?;
        if !self.dir_synced {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
            self.dir_synced = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{Options, Store};

    /// Size of the write-ahead log file: SQLite writes it over from the start when the log
    /// starts over, so the file grows only as far as the log ever got.
    fn log_bytes(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(format!("{}-wal", crate::DB_FILE))).map_or(0, |m| m.len())
    }

    /// `commits` commits of a record each, a pass's time apart every few.
    fn commit_slowly(store: &Store, first: u64, commits: u64) {
        for seq in first..first + commits {
            store.wait(store.append("t", seq, &[7; 200]).unwrap()).unwrap();
            if seq % 8 == 0 {
                std::thread::sleep(2 * PASS_EVERY);
            }
        }
    }

    /// SQLite's own checkpoints are off: the checkpointer's passes are what let the log
    /// start over. Without them the log would hold a frame or more per commit.
    #[test]
    fn passes_let_the_log_start_over() {
        for fsync in [Fsync::Periodic, Fsync::Always] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), Options { fsync, ..Options::default() }).unwrap();
            let commits = 12 * HARD_LIMIT;
            commit_slowly(&store, 1, commits);
            let bytes = log_bytes(dir.path());
            let frame = 4096 + 24;
            assert!(bytes > 0 && bytes < commits / 3 * frame, "{fsync:?}: log of {bytes} bytes");
        }
    }

    /// The writer waits at its next transaction while a pass holds it, and a pass that
    /// holds it waits for the transaction in progress.
    #[test]
    fn a_hold_waits_for_the_transaction_and_holds_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let checkpointer = Checkpointer::start(&dir.path().join("db"), Fsync::Always).unwrap();
        checkpointer.enter().unwrap();
        let shared = Arc::clone(&checkpointer.shared);
        let holder = std::thread::spawn(move || {
            assert!(shared.hold());
            let held_at = Instant::now();
            std::thread::sleep(Duration::from_millis(50));
            shared.release();
            held_at
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!holder.is_finished(), "the hold did not wait for the transaction");
        checkpointer.leave();
        while !checkpointer.shared.state.lock().hold {
            std::thread::yield_now();
        }
        checkpointer.enter().unwrap();
        let entered_at = Instant::now();
        let held_at = holder.join().unwrap();
        assert!(entered_at >= held_at + Duration::from_millis(50), "the writer entered while held");
        checkpointer.leave();
    }
}
