//! How a command waits for its tenant's lock when another thread holds it.
//!
//! The critical section of a command is short (~60 ns here), and a tenant's commands run
//! one at a time whatever the lock does, so what the wait decides is how often the
//! tenant's state changes cores and how often a thread sleeps. `parking_lot` alone spins
//! 14 `spin_loop` hints, then yields its CPU up to 7 times, then parks: with two threads
//! on one tenant, each wait of more than ~0.4 µs yields the CPU (on a busy machine, to
//! another process) or parks (a futex wait, and a futex wake for the holder at its next
//! unlock), and the state moves between the cores at almost every command
//! (BENCHMARKS.md, "Two threads on one tenant": 0.2-0.36 parks per 100 commands and
//! 250-283 ns a pair while both threads run, where one thread alone takes ~120 ns).
//!
//! So a waiter backs off first: it spins, looks at the lock (a read, which leaves the
//! line shared with the holder), takes it if it is free, and doubles its spin, from
//! `FIRST` to `LAST` hints (8,188 in all: ~0.2 ms on the AMD EPYC of BENCHMARKS.md, where
//! a hint takes ~25 ns; less on CPUs with a shorter pause). Meanwhile the holder runs a
//! stretch of commands with the tenant's lines in its own cache. Only then does the waiter
//! take `parking_lot`'s own wait (spin, yield, park, and its fairness: a thread parked for
//! ~0.5 ms is handed the lock), so a holder that was preempted costs a bounded spin, not
//! a spinning core. The order of a tenant's commands stays the lock's: one at a time.

use parking_lot::{Mutex, MutexGuard};

/// `spin_loop` hints before a waiter's first look at the lock.
const FIRST: u32 = 4;
/// The longest spin between two looks; the spin doubles from `FIRST` up to this one.
const LAST: u32 = 4096;

/// Locks `mutex`: at once when it is free (one compare-and-swap), else by backing off
/// first (see the module).
#[inline]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.try_lock() {
        Some(guard) => guard,
        None => lock_contended(mutex),
    }
}

#[cold]
#[inline(never)]
fn lock_contended<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    back_off(mutex).unwrap_or_else(|| mutex.lock())
}

/// Spins and looks at the lock as `spins` says, taking it at the first look that finds it
/// free; `None` when every look found it held.
fn back_off<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    for spin in spins() {
        for _ in 0..spin {
            std::hint::spin_loop();
        }
        // Read first: a failed compare-and-swap would take the line from the holder.
        if !mutex.is_locked() {
            if let Some(guard) = mutex.try_lock() {
                return Some(guard);
            }
        }
    }
    None
}

/// The spins between a waiter's looks: `FIRST`, doubled up to `LAST`.
fn spins() -> impl Iterator<Item = u32> {
    std::iter::successors(Some(FIRST), |spin| spin.checked_mul(2)).take_while(|&spin| spin <= LAST)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    use parking_lot::Mutex;

    use super::{back_off, lock, spins};

    /// The back-off is bounded: 11 looks after 4, 8, ..., 4,096 hints, 8,188 in all.
    #[test]
    fn the_spins_double_from_first_to_last() {
        let spins: Vec<u32> = spins().collect();
        assert_eq!(spins, (2..=12).map(|k| 1u32 << k).collect::<Vec<_>>());
        assert_eq!(spins.iter().sum::<u32>(), 8_188);
    }

    #[test]
    fn backing_off_takes_a_lock_it_finds_free() {
        let m = Mutex::new(5);
        let g = back_off(&m).expect("the first look finds it free");
        assert_eq!(*g, 5);
        assert!(m.is_locked());
    }

    #[test]
    fn backing_off_gives_up_on_a_lock_held_throughout() {
        let m = Mutex::new(());
        let _held = m.lock();
        assert!(back_off(&m).is_none());
    }

    #[test]
    fn a_free_lock_is_taken_at_once_and_held() {
        let m = Mutex::new(1);
        let mut g = lock(&m);
        *g += 1;
        assert!(m.is_locked());
        drop(g);
        assert!(!m.is_locked());
        assert_eq!(*lock(&m), 2);
    }

    /// Threads incrementing a plain counter under the lock lose nothing: mutual exclusion
    /// holds on the backing-off path too (four threads on one lock contend all the time).
    #[test]
    fn contending_threads_exclude_each_other() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 20_000;
        let m = Mutex::new((0usize, false));
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..ROUNDS {
                        let mut g = lock(&m);
                        assert!(!g.1, "two holders at once");
                        g.1 = true;
                        g.0 += 1;
                        std::hint::black_box(&mut *g);
                        g.1 = false;
                    }
                });
            }
        });
        assert_eq!(m.lock().0, THREADS * ROUNDS);
    }

    /// A waiter gets the lock only after the holder released it, and does get it.
    #[test]
    fn a_waiter_takes_the_lock_once_it_is_released() {
        let m = Mutex::new(0);
        let released = AtomicBool::new(false);
        let held = lock(&m);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut g = lock(&m);
                *g += 1;
                released.load(Ordering::SeqCst)
            });
            // Whether the waiter is still backing off or has parked by now, it must wait.
            std::thread::sleep(std::time::Duration::from_millis(20));
            released.store(true, Ordering::SeqCst);
            drop(held);
            assert!(waiter.join().expect("waiter"), "the waiter took a held lock");
        });
        assert_eq!(*m.lock(), 1);
    }

    /// A waiter whose holder keeps the lock stops spinning and sleeps (its thread's state
    /// becomes `S`): the back-off is bounded. Polls with a generous limit, no timing claim.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_waiter_sleeps_when_the_holder_keeps_the_lock() {
        let m = Mutex::new(());
        let held = lock(&m);
        let (tid_tx, tid_rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
                tid_tx.send(stat.split_whitespace().next().unwrap_or_default().to_owned()).expect("send");
                drop(lock(&m));
            });
            let tid = tid_rx.recv().expect("tid");
            let state = || {
                let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
                // The state follows the command name, which is in parentheses.
                stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).map(str::to_owned)
            };
            let mut asleep = false;
            for _ in 0..1_000 {
                // Two readings in a row: one could catch a yield between two spins.
                if state().as_deref() == Some("S") {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    if state().as_deref() == Some("S") {
                        asleep = true;
                        break;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            drop(held);
            assert!(asleep, "the waiter still runs after 10 s of a held lock: {:?}", state());
        });
    }
}
