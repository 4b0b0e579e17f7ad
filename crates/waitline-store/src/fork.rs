//! A store does not cross a `fork()`. The child has none of the store's threads, so a wait
//! would never end and a drop would wait forever for a writer that is not there; and it
//! shares the intake's mapping with the parent, so a record it put there would overwrite
//! the parent's. Python's `multiprocessing` forks by default on Linux: a child that uses an
//! engine its parent opened gets a clear error instead.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// Forks since this process began (the count the child inherits, plus one).
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn in_child() {
    // An atomic add only: a handler in the child of a multi-threaded process may do no more
    // than what is async-signal-safe.
    FORKS.fetch_add(1, Ordering::AcqRel);
}

/// The process a value was made in, as the count of forks at that moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Birth(u64);

impl Birth {
    /// Now (the first call has the child's count kept from then on).
    pub(crate) fn now() -> Self {
        static REGISTER: Once = Once::new();
        REGISTER.call_once(|| {
            // SAFETY: registers a handler that only makes an atomic add (see `in_child`);
            // the other two handlers are none. A failure (ENOMEM) leaves forks uncounted,
            // as before this guard.
            #[allow(unsafe_code)]
            unsafe {
                libc::pthread_atfork(None, None, Some(in_child));
            }
        });
        Self(FORKS.load(Ordering::Acquire))
    }

    /// Whether this process is a fork of the one the value was made in.
    pub(crate) fn forked(self) -> bool {
        FORKS.load(Ordering::Acquire) != self.0
    }
}
