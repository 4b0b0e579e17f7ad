//! Time: a microsecond [`Timestamp`] and an injectable [`Clock`].
//!
//! The engine reads the clock once per command (maintenance: once per round). By default it
//! reads a coarse clock ([`Clock::Coarse`]: the system time as a background thread read it
//! at most about a millisecond ago, one atomic load instead of a system clock read; the
//! thread parks when nobody reads it);
//! [`Clock::System`] reads the system clock exactly. Tests (and the Python package) use a
//! [`ManualClock`], which is exact, so that expiry and idle collection fire at exactly known
//! instants.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);

    /// A timestamp from microseconds since the Unix epoch.
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// A timestamp from whole seconds since the Unix epoch.
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1_000_000))
    }

    /// Microseconds since the Unix epoch.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (rounded down).
    #[must_use]
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000
    }

    /// `self + d`, saturating.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(micros))
    }

    /// Whole seconds from `earlier` to `self`, rounded down; 0 when `earlier` is later.
    #[must_use]
    pub const fn secs_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0) / 1_000_000
    }

    /// The current system time.
    #[must_use]
    pub fn now_utc() -> Self {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }
}

/// ISO 8601 UTC with microseconds and `Z`, e.g. `2026-11-27T11:49:34.123456Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000;
        let micros = self.0 % 1_000_000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A clock the test controls: time moves only when told to.
///
/// Cheap to clone; clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock showing `start`.
    #[must_use]
    pub fn new(start: Timestamp) -> Self {
        Self { micros: Arc::new(AtomicU64::new(start.0)) }
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::AcqRel);
    }

    /// Sets the time; a manual clock may be set backwards, the engine copes.
    pub fn set(&self, t: Timestamp) {
        self.micros.store(t.0, Ordering::Release);
    }

    /// The time shown.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::Acquire))
    }
}

/// How often the coarse clock's thread reads the system clock.
pub const COARSE_CLOCK_TICK: Duration = Duration::from_millis(1);

/// Ticks in one of the coarse clock's stretches (about a second): at the end of each the
/// thread checks that the clock was read during it, and parks when it was not.
const COARSE_CLOCK_STRETCH: u32 = 1000;

/// The coarse clock of the process (every engine with [`Clock::Coarse`] shares it).
static COARSE: CoarseClock = CoarseClock::new(COARSE_CLOCK_STRETCH);

/// The system time as a background thread last read it, a thread that stops when nobody
/// reads it.
///
/// `now` holds the last reading, or `0` for "none fresh": before the first read, while
/// the thread is parked, and from each stretch's end until its first read. A reader that
/// finds `0` reads the system clock itself, puts that reading back (the first of them
/// only) and wakes the thread. The thread, at the end of each stretch, clears `now` if it
/// was read during the stretch (so the next read will tell it so) and parks if it was not:
/// an idle process has no thread waking every millisecond, and a busy one pays one exact
/// read per stretch. A read that finds a reading is one atomic load.
#[derive(Debug)]
struct CoarseClock {
    now: AtomicU64,
    /// Ticks per stretch ([`COARSE_CLOCK_STRETCH`]; fewer in tests).
    stretch: u32,
    /// The thread to wake, started at the first read (`None`: it could not be started,
    /// and every read goes to the system clock).
    upkeep: OnceLock<Option<Thread>>,
    /// Ticks run, and whether the thread is parked: what tests watch.
    ticks: AtomicU64,
    parked: AtomicBool,
}

/// What the upkeep thread does after a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upkeep {
    Tick,
    Park,
}

impl CoarseClock {
    const fn new(stretch: u32) -> Self {
        Self {
            now: AtomicU64::new(0),
            stretch,
            upkeep: OnceLock::new(),
            ticks: AtomicU64::new(0),
            parked: AtomicBool::new(false),
        }
    }

    #[inline]
    fn now(&'static self) -> Timestamp {
        match self.now.load(Ordering::Relaxed) {
            0 => self.now_exact(),
            t => Timestamp(t),
        }
    }

    /// As [`CoarseClock::now`], but a read that finds no reading neither puts one back nor
    /// wakes the thread: it does not count as someone reading.
    fn now_passive(&self) -> Timestamp {
        match self.now.load(Ordering::Relaxed) {
            0 => Timestamp::now_utc(),
            t => Timestamp(t),
        }
    }

    /// No reading is fresh: read the system clock, and have the thread keep the time again.
    #[cold]
    #[inline(never)]
    fn now_exact(&'static self) -> Timestamp {
        let t = Timestamp::now_utc();
        let upkeep = self.upkeep.get_or_init(|| {
            std::thread::Builder::new()
                .name("waitline-clock".into())
                .spawn(|| self.run())
                .ok()
                .map(|handle| handle.thread().clone())
        });
        if let Some(thread) = upkeep.as_ref().filter(|_| self.resume(t)) {
            thread.unpark();
        }
        t
    }

    /// Puts an exact reading in place of "none fresh"; false when another reader or the
    /// thread was first.
    fn resume(&self, t: Timestamp) -> bool {
        self.now.compare_exchange(0, t.0, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// The upkeep thread: ticks, and parks until a reader wakes it when a stretch had no
    /// read.
    fn run(&self) {
        let mut into_stretch = 0;
        loop {
            std::thread::sleep(COARSE_CLOCK_TICK);
            if self.tick(&mut into_stretch) == Upkeep::Park {
                self.parked.store(true, Ordering::Relaxed);
                // A reader that came since the check has put its reading back: no park.
                while self.now.load(Ordering::Relaxed) == 0 {
                    std::thread::park();
                }
                self.parked.store(false, Ordering::Relaxed);
            }
        }
    }

    /// One tick: refresh the reading, or at a stretch's end check that it was read.
    fn tick(&self, into_stretch: &mut u32) -> Upkeep {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        // Only this thread stores anything but a reader's first reading after a `0`, so a
        // reading seen here is not replaced by anyone else before the store below.
        let read = self.now.load(Ordering::Relaxed) != 0;
        *into_stretch += 1;
        if *into_stretch < self.stretch {
            if read {
                self.now.store(Timestamp::now_utc().0, Ordering::Relaxed);
            }
            return Upkeep::Tick;
        }
        *into_stretch = 0;
        if read {
            self.now.store(0, Ordering::Relaxed);
            Upkeep::Tick
        } else {
            Upkeep::Park
        }
    }
}

/// Where the engine gets the time from.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The operating system's wall clock, read exactly, once per command.
    System,
    /// The operating system's wall clock as a background thread last read it: the thread
    /// reads the clock every [`COARSE_CLOCK_TICK`] (1 ms) and a command reads one shared
    /// atomic instead of the clock (a clock read costs about 25 ns, twice per
    /// enqueue-and-bridge pair). The resolution is therefore about a millisecond (more when
    /// the machine is so busy that the thread runs late): a command sees the time up to
    /// about a millisecond late, so its timestamps (`enqueued_at`, `end_time`, ...) are that
    /// coarse, and a timer fires up to that much later; timers still fire in exact order,
    /// each at its own instant (a timeout's event carries its deadline). Waits are counted
    /// in whole seconds, so a millisecond does not show in them. One thread per process
    /// serves every engine with this clock. It starts at the first read and parks after a
    /// stretch of about a second (1,000 ticks) in which nobody read the clock; while it is
    /// parked a read is exact (the system clock) and wakes it, and the first read after
    /// each stretch is exact too (that read is how the thread learns that someone still
    /// reads; maintenance loops read with [`Clock::now_passive`], which does not count).
    /// The default.
    #[default]
    Coarse,
    /// A clock advanced by hand.
    Manual(ManualClock),
}

impl Clock {
    /// A manual clock starting at `start`, and the handle that moves it.
    #[must_use]
    pub fn manual(start: Timestamp) -> (Self, ManualClock) {
        let m = ManualClock::new(start);
        (Self::Manual(m.clone()), m)
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        match self {
            Self::System => Timestamp::now_utc(),
            Self::Coarse => COARSE.now(),
            Self::Manual(m) => m.now(),
        }
    }

    /// The current time, as [`Clock::now`], for a loop that wakes on its own (maintenance):
    /// with [`Clock::Coarse`] it does not keep the clock's thread awake (a read while the
    /// thread is parked reads the system clock and leaves the thread parked), so an engine
    /// with no commands lets the thread stop although its maintenance still runs.
    #[must_use]
    pub fn now_passive(&self) -> Timestamp {
        match self {
            Self::Coarse => COARSE.now_passive(),
            _ => self.now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_iso8601_with_micros() {
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000000Z");
        // 2019-01-23T18:10:02.574Z, the example of the Telnyx description.
        let t = Timestamp::from_micros(1_548_267_002_574_000);
        assert_eq!(t.to_string(), "2019-01-23T18:10:02.574000Z");
        // A leap day.
        let t = Timestamp::from_secs(951_782_400 + 59);
        assert_eq!(t.to_string(), "2000-02-29T00:00:59.000000Z");
    }

    #[test]
    fn adds_a_duration_to_the_microsecond_and_saturates() {
        let t = Timestamp::from_micros(5);
        assert_eq!(t.saturating_add(Duration::new(2, 3_999)).as_micros(), 2_000_008, "sub-micros dropped");
        assert_eq!(t.saturating_add(Duration::from_secs(60)).as_micros(), 60_000_005);
        let max = Timestamp::from_micros(u64::MAX);
        assert_eq!(Timestamp::from_micros(1).saturating_add(Duration::from_micros(u64::MAX)), max);
        assert_eq!(t.saturating_add(Duration::from_secs(u64::MAX / 1_000_000 + 1)), max, "seconds overflow");
        assert_eq!(t.saturating_add(Duration::MAX), max);
    }

    #[test]
    fn coarse_clock_follows_the_system_clock_within_its_tick() {
        let before = Timestamp::now_utc();
        let coarse = Clock::Coarse.now();
        assert!(coarse.as_micros() + 1_000_000 > before.as_micros(), "{coarse} vs {before}");
        std::thread::sleep(Duration::from_millis(20));
        let later = Clock::Coarse.now();
        assert!(later > coarse, "the upkeep thread moves it");
        assert!(later <= Timestamp::now_utc());
    }

    /// The upkeep's rule, driven tick by tick without its thread.
    #[test]
    fn coarse_upkeep_keeps_time_while_read_and_parks_after_a_stretch_unread() {
        let clock = CoarseClock::new(4);
        let mut into_stretch = 0;
        assert!(clock.resume(Timestamp::from_secs(1)), "the first reading after none is kept");
        assert!(!clock.resume(Timestamp::from_secs(2)), "a later one is not");
        for _ in 0..3 {
            assert_eq!(clock.tick(&mut into_stretch), Upkeep::Tick);
            assert!(clock.now.load(Ordering::Relaxed) > 1_000_000, "each tick refreshes it");
        }
        // The stretch ends: it was read (resumed), so the thread goes on and asks again.
        assert_eq!(clock.tick(&mut into_stretch), Upkeep::Tick);
        assert_eq!(clock.now.load(Ordering::Relaxed), 0, "the next read is exact and says so");
        // A read in the middle of a stretch keeps the thread for another one.
        assert_eq!(clock.tick(&mut into_stretch), Upkeep::Tick);
        assert_eq!(clock.now.load(Ordering::Relaxed), 0, "no reading until someone reads");
        assert!(clock.resume(Timestamp::from_secs(3)));
        for _ in 0..2 {
            assert_eq!(clock.tick(&mut into_stretch), Upkeep::Tick);
        }
        assert!(clock.now.load(Ordering::Relaxed) > 3_000_000);
        assert_eq!(clock.tick(&mut into_stretch), Upkeep::Tick);
        // A whole stretch without a read: park.
        for _ in 0..3 {
            assert_eq!(clock.tick(&mut into_stretch), Upkeep::Tick);
            assert_eq!(clock.now.load(Ordering::Relaxed), 0);
        }
        assert_eq!(clock.tick(&mut into_stretch), Upkeep::Park);
        assert_eq!(clock.ticks.load(Ordering::Relaxed), 12);
    }

    /// The thread itself: it stops ticking once idle, and a read wakes it. No timing is
    /// asserted: the waits below are bounds for a loaded machine, and what is checked is
    /// the count of ticks, which a parked thread does not move.
    #[test]
    fn coarse_clock_thread_stops_ticking_when_idle_and_a_read_wakes_it() {
        let clock: &'static CoarseClock = Box::leak(Box::new(CoarseClock::new(3)));
        let wait_for = |what: &str, done: &dyn Fn() -> bool| {
            let give_up = std::time::Instant::now() + Duration::from_secs(60);
            while !done() {
                assert!(std::time::Instant::now() < give_up, "{what} did not happen in 60 s");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let before = Timestamp::now_utc();
        assert!(clock.now() >= before, "a read with no reading is exact");
        wait_for("the thread parks", &|| clock.parked.load(Ordering::Relaxed));
        let ticks = clock.ticks.load(Ordering::Relaxed);
        assert!(ticks >= 3, "it ran at least a stretch: {ticks}");
        std::thread::sleep(COARSE_CLOCK_TICK * 20);
        assert_eq!(clock.ticks.load(Ordering::Relaxed), ticks, "a parked thread does not tick");
        assert_eq!(clock.now.load(Ordering::Relaxed), 0, "nor does it leave a stale reading");
        // A maintenance loop's read is exact and leaves it parked.
        let before = Timestamp::now_utc();
        assert!(clock.now_passive() >= before);
        std::thread::sleep(COARSE_CLOCK_TICK * 20);
        assert_eq!(clock.ticks.load(Ordering::Relaxed), ticks, "a passive read does not wake it");
        assert_eq!(clock.now.load(Ordering::Relaxed), 0);
        let before = Timestamp::now_utc();
        assert!(clock.now() >= before, "a read while it is parked is exact");
        wait_for("the read wakes it", &|| clock.ticks.load(Ordering::Relaxed) > ticks);
        wait_for("it parks again", &|| {
            clock.parked.load(Ordering::Relaxed) && clock.ticks.load(Ordering::Relaxed) > ticks
        });
    }

    #[test]
    fn manual_clock_is_shared_by_clones() {
        let (clock, hand) = Clock::manual(Timestamp::from_secs(10));
        hand.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), Timestamp::from_micros(11_500_000));
        assert_eq!(clock.now().secs_since(Timestamp::from_secs(10)), 1);
    }
}
