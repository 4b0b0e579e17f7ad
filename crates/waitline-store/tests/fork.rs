//! A store does not cross a `fork()` (Python's `multiprocessing` forks by default on
//! Linux): in the child every use is refused with `Error::Forked`, before any of the
//! store's locks is taken, and dropping it returns at once (its writer is not there to
//! join); the parent goes on, its intake untouched.
#![allow(clippy::unwrap_used, unsafe_code)]

use std::time::{Duration, Instant};

mod common;

use common::{Postgres, replay_all};
use waitline_store::bucket::bucket_of;
use waitline_store::{Error, Fsync, Options, Store};

/// What the child finds: a bit set for each use that was not refused as it should be.
fn in_child(store: Store, parents_ticket: waitline_store::Ticket) -> i32 {
    let mut wrong = 0;
    if !matches!(store.append("acme", 2, b"the child's"), Err(Error::Forked { .. })) {
        wrong |= 1;
    }
    if !matches!(store.wait(parents_ticket), Err(Error::Forked { .. })) {
        wrong |= 2;
    }
    if !matches!(store.flush(), Err(Error::Forked { .. })) {
        wrong |= 4;
    }
    if !matches!(store.delivered(), Err(Error::Forked { .. })) {
        wrong |= 16;
    }
    // Lease calls (a PostgreSQL store's; a SQLite store keeps none and says so).
    if !matches!(store.renew(), Err(Error::Forked { .. } | Error::NoLeases)) {
        wrong |= 32;
    }
    match store.mark_delivered("acme", 1) {
        Err(e @ Error::Forked { .. })
            if e.to_string().contains("was opened before this process was forked") => {}
        _ => wrong |= 8,
    }
    // The last handle: returns (the parent's writer is not joined from here).
    drop(store);
    wrong
}

/// The child's part: [`in_child`], then `_exit` with its answer (a panic is 99), so that the
/// child never returns into the test harness.
fn run_child(store: Store, parents_ticket: waitline_store::Ticket) -> ! {
    let wrong = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| in_child(store, parents_ticket)));
    // SAFETY: ends the child without running the test harness's exit.
    unsafe { libc::_exit(wrong.unwrap_or(99)) }
}

/// The child's exit status, waiting at most `limit` (then it is killed: a hang).
fn exit_status(pid: libc::pid_t, limit: Duration) -> i32 {
    let since = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid place for its status.
        let done = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
        if done == pid {
            assert!(libc::WIFEXITED(status), "the child did not exit normally: {status}");
            return libc::WEXITSTATUS(status);
        }
        if since.elapsed() > limit {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the child hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Forks: the child checks that `store` (its last handle there) refuses every use and
/// drops it; the parent waits for its verdict and gets `store` back.
fn refused_in_a_child(store: Store, parents_ticket: waitline_store::Ticket) -> Store {
    // SAFETY: the child only calls the store (which refuses before taking any lock) and
    // leaves with `_exit`, running nothing of the parent's.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        run_child(store, parents_ticket);
    }
    assert!(pid > 0, "fork failed");
    assert_eq!(exit_status(pid, Duration::from_secs(60)), 0, "a use in the child was not refused");
    store
}

/// The (number, data) of every record the store holds.
fn records(store: &Store) -> Vec<(u64, Vec<u8>)> {
    replay_all(store).0.into_iter().map(|(_, _, seq, data)| (seq, data)).collect()
}

#[test]
fn a_store_is_refused_in_a_forked_child_and_the_parent_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { fsync: Fsync::Periodic, ..Options::default() };
    let store = Store::open(dir.path(), options).unwrap();
    store.wait(store.append("acme", 1, b"one").unwrap()).unwrap();
    let queued = store.append("acme", 2, b"two").unwrap();
    let store = refused_in_a_child(store, queued);
    store.wait(queued).unwrap();
    store.wait(store.append("acme", 3, b"three").unwrap()).unwrap();
    drop(store);
    let reopened = Store::open(dir.path(), options).unwrap();
    assert_eq!(records(&reopened), [(1, b"one".to_vec()), (2, b"two".to_vec()), (3, b"three".to_vec())]);
}

/// The same in PostgreSQL, whose connections live on threads of the store's own (none of
/// them in the child either).
#[test]
fn a_postgres_store_is_refused_in_a_forked_child_and_the_parent_goes_on() {
    let Some(pg) = Postgres::new("fork_postgres") else { return };
    let store = Store::open_postgres(&pg.config, Options::default()).unwrap();
    store.acquire(&[bucket_of("acme", pg.config.buckets)]).unwrap();
    store.wait(store.append("acme", 1, b"one").unwrap()).unwrap();
    store.pause_writer();
    let queued = store.append("acme", 2, b"two").unwrap();
    let store = refused_in_a_child(store, queued);
    store.resume_writer();
    store.wait(queued).unwrap();
    assert_eq!(records(&store), [(1, b"one".to_vec()), (2, b"two".to_vec())]);
}
