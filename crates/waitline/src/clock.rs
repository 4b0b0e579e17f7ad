//! Time: a microsecond [`Timestamp`] and an injectable [`Clock`].
//!
//! The engine reads the clock once per command (maintenance: once per round). By default it
//! reads a coarse clock ([`Clock::Coarse`]: the system time as a background thread read it
//! at most about a millisecond ago, one atomic load instead of a system clock read);
//! [`Clock::System`] reads the system clock exactly. Tests (and the Python package) use a
//! [`ManualClock`], which is exact, so that expiry and idle collection fire at exactly known
//! instants.

use std::fmt;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The system time as last read by the upkeep thread (`0`: not started).
static COARSE_NOW: AtomicU64 = AtomicU64::new(0);
static COARSE_UPKEEP: Once = Once::new();

/// The coarse clock: starts its upkeep thread at the first read (one per process, for every
/// engine), then reads what the thread last stored. If the thread cannot be started, every
/// read goes to the system clock.
fn coarse_now() -> Timestamp {
    COARSE_UPKEEP.call_once(|| {
        COARSE_NOW.store(Timestamp::now_utc().0, Ordering::Relaxed);
        let upkeep = std::thread::Builder::new().name("waitline-clock".into()).spawn(|| {
            loop {
                std::thread::sleep(COARSE_CLOCK_TICK);
                COARSE_NOW.store(Timestamp::now_utc().0, Ordering::Relaxed);
            }
        });
        if upkeep.is_err() {
            COARSE_NOW.store(0, Ordering::Relaxed);
        }
    });
    match COARSE_NOW.load(Ordering::Relaxed) {
        0 => Timestamp::now_utc(),
        t => Timestamp(t),
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
    /// serves every engine with this clock; it starts at the first read and never stops.
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
            Self::Coarse => coarse_now(),
            Self::Manual(m) => m.now(),
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
    fn coarse_clock_follows_the_system_clock_within_its_tick() {
        let before = Timestamp::now_utc();
        let coarse = Clock::Coarse.now();
        assert!(coarse.as_micros() + 1_000_000 > before.as_micros(), "{coarse} vs {before}");
        std::thread::sleep(Duration::from_millis(20));
        let later = Clock::Coarse.now();
        assert!(later > coarse, "the upkeep thread moves it");
        assert!(later <= Timestamp::now_utc());
    }

    #[test]
    fn manual_clock_is_shared_by_clones() {
        let (clock, hand) = Clock::manual(Timestamp::from_secs(10));
        hand.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), Timestamp::from_micros(11_500_000));
        assert_eq!(clock.now().secs_since(Timestamp::from_secs(10)), 1);
    }
}
