//! A queue's service figures, counted as callers come and go: what happened to its callers
//! today (UTC), how long they waited when they left, and its length over the last hour.
//! Supervisors read them on a wallboard, operations teams in metrics; counting them here
//! keeps the one definition of each (service level included) in the engine.

use std::time::Duration;

use serde::ser::SerializeStruct;

use crate::clock::Timestamp;
use crate::event::DequeueReason;

/// Upper bounds, in seconds, of the buckets of [`WaitHistogram`]; a last bucket counts the
/// waits above the largest.
pub const WAIT_BUCKETS_SECS: [u64; 11] = [5, 10, 15, 20, 30, 45, 60, 120, 300, 600, 1800];
/// Minutes of queue length kept: the last hour.
pub const LENGTH_HISTORY_MINUTES: usize = 60;
/// The default service-level threshold: answered within 20 s (the contact-center "80/20").
pub const DEFAULT_SERVICE_LEVEL_THRESHOLD: Duration = Duration::from_secs(20);

const MICROS_PER_DAY: u64 = 86_400_000_000;
const MICROS_PER_MINUTE: u64 = 60_000_000;

/// [`WAIT_BUCKETS_SECS`] in microseconds: a wait in whole microseconds is above `b` seconds
/// exactly when it is above `b * 1_000_000` of them, so no wait is rounded to seconds.
const WAIT_BUCKETS_MICROS: [u64; WAIT_BUCKETS_SECS.len()] = {
    let mut micros = [0; WAIT_BUCKETS_SECS.len()];
    let mut i = 0;
    while i < micros.len() {
        micros[i] = WAIT_BUCKETS_SECS[i] * 1_000_000;
        i += 1;
    }
    micros
};

/// Waits up to this many seconds find their bucket by [`WAIT_BUCKET_BY_SPAN`].
const SHORT_WAIT_SECS: u64 = 60;
/// The span of [`WAIT_BUCKET_BY_SPAN`]: every bound up to [`SHORT_WAIT_SECS`] is a multiple
/// of it, so all the waits of one span share a bucket.
const WAIT_SPAN_SECS: u64 = 5;
/// Bounds up to [`SHORT_WAIT_SECS`].
const SHORT_BOUNDS: usize = {
    let mut n = 0;
    while n < WAIT_BUCKETS_SECS.len() && WAIT_BUCKETS_SECS[n] <= SHORT_WAIT_SECS {
        assert!(WAIT_BUCKETS_SECS[n] % WAIT_SPAN_SECS == 0, "a bound inside a span");
        n += 1;
    }
    n
};
/// The bucket of the waits in the `k`-th span (`(k - 1) * 5, k * 5]` seconds; 0 s for `k`
/// = 0): how many bounds are below its end.
const WAIT_BUCKET_BY_SPAN: [u8; (SHORT_WAIT_SECS / WAIT_SPAN_SECS) as usize + 1] = {
    let mut by_span = [0; (SHORT_WAIT_SECS / WAIT_SPAN_SECS) as usize + 1];
    let mut k = 0;
    while k < by_span.len() {
        let mut below = 0;
        while WAIT_BUCKETS_SECS[below] < k as u64 * WAIT_SPAN_SECS {
            below += 1;
        }
        by_span[k] = below as u8;
        k += 1;
    }
    by_span
};

/// The bucket of [`WaitHistogram`] that counts a wait: how many bounds are below it. A
/// wait of up to a minute (most) reads it from its span, with no search; a longer one
/// counts the larger bounds below it.
fn wait_bucket(wait_micros: u64) -> usize {
    const SPAN_MICROS: u64 = WAIT_SPAN_SECS * 1_000_000;
    if wait_micros <= SHORT_WAIT_SECS * 1_000_000 {
        // `div_ceil` as one add and one division (a multiply; `div_ceil` also tests the
        // remainder): no overflow below a minute, and the compiler then sees the span
        // within the table, with no bounds check.
        #[allow(clippy::manual_div_ceil)]
        usize::from(WAIT_BUCKET_BY_SPAN[((wait_micros + SPAN_MICROS - 1) / SPAN_MICROS) as usize])
    } else {
        SHORT_BOUNDS + WAIT_BUCKETS_MICROS[SHORT_BOUNDS..].iter().filter(|&&b| b < wait_micros).count()
    }
}

/// The last microsecond of the `n`-th span of `unit` microseconds since the epoch; the
/// end of time for a span that runs past it (no instant is later, as none is after it).
const fn last_micros(n: u64, unit: u64) -> u64 {
    n.saturating_mul(unit).saturating_add(unit - 1)
}

/// What happened to a queue's callers over a span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcomes {
    /// Callers who joined.
    pub enqueued: u64,
    /// Callers who left bridged to an agent (or another call).
    pub bridged: u64,
    /// Of those, the ones who had waited no longer than the service-level threshold.
    pub bridged_within_service_level: u64,
    /// Callers who hung up while waiting (abandoned).
    pub hangup: u64,
    /// Callers who left by `leave_queue`, a move to another queue or removal by the API.
    pub leave: u64,
    /// Callers whose `max_wait_time_secs` ran out.
    pub timeout: u64,
}

impl Outcomes {
    /// The share of callers answered within the threshold, of those who left by being
    /// answered, hanging up or timing out (callers moved away by `leave` are neither);
    /// `None` before any did.
    #[must_use]
    pub fn service_level(&self) -> Option<f64> {
        let offered = self.bridged + self.hangup + self.timeout;
        (offered > 0).then(|| self.bridged_within_service_level as f64 / offered as f64)
    }
}

/// A queue's outcomes since the start of the current UTC day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayFigures {
    /// Midnight UTC that started the day counted.
    pub since: Timestamp,
    /// What happened since then.
    pub outcomes: Outcomes,
}

/// Serialized flat, with the service level beside the counts.
impl serde::Serialize for DayFigures {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = &self.outcomes;
        let mut st = s.serialize_struct("DayFigures", 8)?;
        st.serialize_field("since", &self.since)?;
        st.serialize_field("enqueued", &o.enqueued)?;
        st.serialize_field("bridged", &o.bridged)?;
        st.serialize_field("bridged_within_service_level", &o.bridged_within_service_level)?;
        st.serialize_field("hangup", &o.hangup)?;
        st.serialize_field("leave", &o.leave)?;
        st.serialize_field("timeout", &o.timeout)?;
        st.serialize_field("service_level", &o.service_level())?;
        st.end()
    }
}

/// Waits of the callers who left a queue (any reason), in the buckets of
/// [`WAIT_BUCKETS_SECS`]: `counts[i]` holds the waits in `(bound[i-1], bound[i]]` seconds,
/// the last entry those above the largest bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WaitHistogram {
    /// Departures per bucket.
    pub counts: [u64; WAIT_BUCKETS_SECS.len() + 1],
    /// Sum of the waits counted, in microseconds.
    pub sum_micros: u64,
}

impl WaitHistogram {
    /// Departures counted.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What a queue keeps to answer for its figures. In `repr(C)` order: what every arrival
/// and departure reads and updates (the instant up to which it starts no new minute or
/// day, the day's counts) fills one cache line; the current minute's peak length, the sum
/// of the waits and the first wait buckets the next one (the waits are kept as two fields,
/// the sum first, rather than as a [`WaitHistogram`], whose sum comes after its 96 bytes of
/// counts: a departure would write one more line).
/// Aligned to a line, so that the day's counts fill one wherever the struct sits.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub(crate) struct Figures {
    /// The earlier of `minute_last_micros` and `day_last_micros`: a change up to it starts
    /// neither a new minute nor a new day, known by one compare (a day ends with a minute,
    /// but a departure counted by no reason rolls the minute alone, so the day can end
    /// first).
    quiet_until_micros: u64,
    /// The last microsecond of the current minute ([`Figures::minute`]), the one `peak`
    /// is for.
    minute_last_micros: u64,
    /// Today's [`Outcomes`] ([`Figures::outcomes`]): callers who joined, ...
    today_enqueued: u64,
    /// ... who left, by [`DequeueReason::index`], ...
    today_left: [u64; DequeueReason::COUNT],
    /// ... and who were bridged within the service level.
    today_in_time: u64,
    /// The longest the queue was in `minute`: kept here, not in `lengths`, so that an
    /// arrival or departure writes no line of the hour's 240 bytes (they are written once
    /// a minute).
    pub(crate) peak: u32,
    /// Over the queue's life; the other life totals are the queue's own counters.
    pub(crate) bridged_within_service_level: u64,
    /// The waits' sum, read as [`WaitHistogram::sum_micros`] up to `u64::MAX`: in 128 bits
    /// a departure adds with no saturating test (no sum of 2^64 waits reaches 2^128).
    pub(crate) wait_sum_micros: u128,
    pub(crate) wait_counts: [u64; WAIT_BUCKETS_SECS.len() + 1],
    /// The longest the queue was in each earlier minute of the hour, by `minute % 60`; the
    /// slot of `minute` itself holds 0 (its length is `peak`).
    lengths: [u32; LENGTH_HISTORY_MINUTES],
    /// The last microsecond of the UTC day `today` counts ([`Figures::day`]): a change
    /// after it starts a new day, found by a compare rather than a division per change
    /// (read only past `quiet_until_micros`).
    day_last_micros: u64,
}

impl Figures {
    pub(crate) fn new(now: Timestamp) -> Self {
        Self {
            quiet_until_micros: 0,
            day_last_micros: last_micros(now.as_micros() / MICROS_PER_DAY, MICROS_PER_DAY),
            today_enqueued: 0,
            today_left: [0; DequeueReason::COUNT],
            today_in_time: 0,
            bridged_within_service_level: 0,
            wait_sum_micros: 0,
            wait_counts: [0; WAIT_BUCKETS_SECS.len() + 1],
            minute_last_micros: last_micros(now.as_micros() / MICROS_PER_MINUTE, MICROS_PER_MINUTE),
            peak: 0,
            lengths: [0; LENGTH_HISTORY_MINUTES],
        }
        .with_quiet_until()
    }

    /// Sets `quiet_until_micros` from the ends of the minute and of the day counted.
    const fn with_quiet_until(mut self) -> Self {
        self.note_ends();
        self
    }

    const fn note_ends(&mut self) {
        self.quiet_until_micros = if self.minute_last_micros < self.day_last_micros {
            self.minute_last_micros
        } else {
            self.day_last_micros
        };
    }

    /// Figures read back from a snapshot: `lengths` must hold the hour, and the day and
    /// minute must be instants a clock can show.
    pub(crate) fn from_parts(
        day: u64,
        today: Outcomes,
        bridged_within_service_level: u64,
        waits: WaitHistogram,
        minute: u64,
        lengths: &[u32],
    ) -> Result<Self, String> {
        let mut lengths = <[u32; LENGTH_HISTORY_MINUTES]>::try_from(lengths).map_err(|_| {
            format!("{} minutes of queue length, not {LENGTH_HISTORY_MINUTES}", lengths.len())
        })?;
        if day > u64::MAX / MICROS_PER_DAY || minute > u64::MAX / MICROS_PER_MINUTE {
            return Err("a day or minute past the end of time".into());
        }
        let peak = std::mem::take(&mut lengths[minute_slot(minute)]);
        Ok(Self {
            quiet_until_micros: 0,
            day_last_micros: last_micros(day, MICROS_PER_DAY),
            today_enqueued: today.enqueued,
            today_left: [today.bridged, today.hangup, today.leave, today.timeout],
            today_in_time: today.bridged_within_service_level,
            bridged_within_service_level,
            wait_sum_micros: u128::from(waits.sum_micros),
            wait_counts: waits.counts,
            minute_last_micros: last_micros(minute, MICROS_PER_MINUTE),
            peak,
            lengths,
        }
        .with_quiet_until())
    }

    /// The UTC day `today` counts (days since the epoch).
    pub(crate) const fn day(&self) -> u64 {
        self.day_last_micros / MICROS_PER_DAY
    }

    /// The current minute (since the epoch): the one whose longest length is `peak`.
    pub(crate) const fn minute(&self) -> u64 {
        self.minute_last_micros / MICROS_PER_MINUTE
    }

    /// The waits of the callers who left since the queue was made.
    pub(crate) const fn waits(&self) -> WaitHistogram {
        let sum = self.wait_sum_micros;
        let sum_micros = if sum > u64::MAX as u128 { u64::MAX } else { sum as u64 };
        WaitHistogram { counts: self.wait_counts, sum_micros }
    }

    /// What happened to the callers of the day counted ([`Figures::day`]).
    pub(crate) const fn outcomes(&self) -> Outcomes {
        let [bridged, hangup, leave, timeout] = self.today_left;
        Outcomes {
            enqueued: self.today_enqueued,
            bridged,
            bridged_within_service_level: self.today_in_time,
            hangup,
            leave,
            timeout,
        }
    }

    fn observe_wait(&mut self, wait_micros: u64) {
        self.wait_counts[wait_bucket(wait_micros)] += 1;
        self.wait_sum_micros += u128::from(wait_micros);
    }

    /// The longest length of each minute of the hour up to `minute`, by `minute % 60` (as a
    /// snapshot keeps them).
    pub(crate) fn lengths(&self) -> [u32; LENGTH_HISTORY_MINUTES] {
        let mut lengths = self.lengths;
        lengths[minute_slot(self.minute())] = self.peak;
        lengths
    }

    /// Starts a new day's counts past the day counted. A clock set back stays in the day
    /// counted: only a later day starts a new one.
    fn roll_day(&mut self, now: Timestamp) {
        let now = now.as_micros();
        if now > self.day_last_micros {
            self.day_last_micros = last_micros(now / MICROS_PER_DAY, MICROS_PER_DAY);
            self.today_enqueued = 0;
            self.today_left = [0; DequeueReason::COUNT];
            self.today_in_time = 0;
        }
    }

    /// A change at `now` past `quiet_until_micros`: a new minute, when it is one (the queue
    /// had `before` members as it began), and a new day, when it is one and `count_day`
    /// (a change that counts a caller). Out of line: at most twice a minute, but for the
    /// uncounted drops after midnight that come before the day's first counted change (each
    /// comes here, and finds the day still to start).
    #[cold]
    #[inline(never)]
    fn roll(&mut self, now: Timestamp, before: usize, count_day: bool) {
        self.roll_minute(now, before);
        if count_day {
            self.roll_day(now);
        }
        self.note_ends();
    }

    /// `count` callers joined at once; the queue went from `len - count` to `len` members.
    /// Inlined: a compare and two counts (the roll-over is out of line), left a call in
    /// some compiled enqueues.
    #[inline]
    pub(crate) fn joined(&mut self, now: Timestamp, len: usize, count: u32) {
        if now.as_micros() > self.quiet_until_micros {
            self.roll(now, len.saturating_sub(count as usize), true);
        }
        self.today_enqueued += u64::from(count);
        // A queue holds at most `QUEUE_MAX_SIZE` (1,000,000) members: its length fits, with
        // no saturating conversion on every arrival.
        self.peak = self.peak.max(len as u32);
    }

    /// A caller left after waiting `wait_micros`; the queue went from `len + 1` to `len`
    /// members. `reason` `None`: the caller is dropped uncounted (only the length changes).
    /// It was answered in time if it waited no longer than `threshold_micros`.
    pub(crate) fn left(
        &mut self,
        now: Timestamp,
        reason: Option<DequeueReason>,
        wait_micros: u64,
        threshold_micros: u64,
        len: usize,
    ) {
        // Only a new minute has work here: the peak is at least the length before (every
        // join raised it, a new minute starts from it), so never below the length after.
        if now.as_micros() > self.quiet_until_micros {
            self.roll(now, len + 1, reason.is_some());
        }
        let Some(reason) = reason else { return };
        self.observe_wait(wait_micros);
        // Counted by index and flag: no branch per reason.
        let in_time = u64::from(reason == DequeueReason::Bridged && wait_micros <= threshold_micros);
        self.today_left[reason.index()] += 1;
        self.today_in_time += in_time;
        self.bridged_within_service_level += in_time;
    }

    /// Past the current minute: the minute that ended gets its peak, the minutes after it
    /// with no change the length `before` (the length the queue had at the end of the one
    /// before), and the new minute starts from it.
    fn roll_minute(&mut self, now: Timestamp, before: usize) {
        if now.as_micros() > self.minute_last_micros {
            let (ended, minute) = (self.minute(), now.as_micros() / MICROS_PER_MINUTE);
            // The minute that ended goes into the hour first: a gap of an hour or more
            // overwrites its slot below.
            self.lengths[minute_slot(ended)] = self.peak;
            let carried = u32::try_from(before).unwrap_or(u32::MAX);
            let gap = (minute - ended).min(LENGTH_HISTORY_MINUTES as u64);
            for m in minute + 1 - gap..minute {
                self.lengths[minute_slot(m)] = carried;
            }
            self.lengths[minute_slot(minute)] = 0;
            self.minute_last_micros = last_micros(minute, MICROS_PER_MINUTE);
            self.peak = carried;
        }
    }

    pub(crate) fn today(&self, now: Timestamp) -> DayFigures {
        let (day, counted) = (now.as_micros() / MICROS_PER_DAY, self.day());
        let outcomes = if day > counted { Outcomes::default() } else { self.outcomes() };
        DayFigures { since: Timestamp::from_micros(day.max(counted) * MICROS_PER_DAY), outcomes }
    }

    /// The longest length of each of the last 60 minutes, oldest first, the current minute
    /// last; `len` is the length now. Minutes before the queue existed read 0: their slots
    /// are written only by minutes after `minute - 60`, outside this window.
    pub(crate) fn length_last_hour(&self, now: Timestamp, len: usize) -> Vec<u32> {
        let minute = self.minute();
        let now_minute = (now.as_micros() / MICROS_PER_MINUTE).max(minute);
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let window = LENGTH_HISTORY_MINUTES as u64;
        // In the clock's first hour the window starts before minute 0: those minutes read 0.
        let before_time = (window - 1).saturating_sub(now_minute);
        // Every minute of the window up to `minute` is within its last hour.
        let minutes = (now_minute + 1 + before_time - window..=now_minute).map(|m| match m.cmp(&minute) {
            std::cmp::Ordering::Greater => len,
            std::cmp::Ordering::Equal => self.peak,
            std::cmp::Ordering::Less => self.lengths[minute_slot(m)],
        });
        std::iter::repeat_n(0, before_time as usize).chain(minutes).collect()
    }
}

/// The slot of `minute` in the hour of lengths.
const fn minute_slot(minute: u64) -> usize {
    (minute % LENGTH_HISTORY_MINUTES as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
    fn at(secs: u64) -> Timestamp {
        Timestamp::from_micros(T0 + secs * 1_000_000)
    }
    const SL: u64 = 20_000_000;
    const fn secs(s: u64) -> u64 {
        s * 1_000_000
    }

    #[test]
    fn service_level_counts_answers_in_time_among_answered_abandoned_and_timed_out() {
        let mut f = Figures::new(at(0));
        for len in 1..=6 {
            f.joined(at(0), len, 1);
        }
        f.left(at(10), Some(DequeueReason::Bridged), secs(10), SL, 5); // in time
        f.left(at(20), Some(DequeueReason::Bridged), secs(20), SL, 4); // in time (inclusive)
        f.left(at(21), Some(DequeueReason::Bridged), 20_000_001, SL, 3);
        f.left(at(30), Some(DequeueReason::Hangup), secs(30), SL, 2);
        f.left(at(30), Some(DequeueReason::Leave), secs(30), SL, 1);
        f.left(at(40), Some(DequeueReason::Timeout), secs(40), SL, 0);
        let today = f.today(at(41)).outcomes;
        assert_eq!(
            today,
            Outcomes {
                enqueued: 6,
                bridged: 3,
                bridged_within_service_level: 2,
                hangup: 1,
                leave: 1,
                timeout: 1
            }
        );
        assert_eq!(today.service_level(), Some(0.4), "2 in time of 3 answered + 1 abandoned + 1 timed out");
        assert_eq!(f.bridged_within_service_level, 2);
        assert_eq!(Outcomes::default().service_level(), None);
    }

    #[test]
    fn a_new_utc_day_starts_from_zero() {
        let mut f = Figures::new(at(86_400 - 10));
        f.joined(at(86_400 - 10), 1, 1);
        f.left(at(86_400 - 1), Some(DequeueReason::Hangup), secs(9), SL, 0);
        assert_eq!(f.today(at(86_400 - 1)).outcomes.hangup, 1);
        // Read after midnight, before anything happened: nothing yet today.
        let next = f.today(at(86_400));
        assert_eq!(next.outcomes, Outcomes::default());
        assert_eq!(next.since, at(86_400));
        f.joined(at(86_400 + 5), 1, 1);
        assert_eq!(f.today(at(86_400 + 6)).outcomes, Outcomes { enqueued: 1, ..Outcomes::default() });
        // A clock set back does not bring the old day back.
        f.joined(at(86_400 - 100), 2, 1);
        assert_eq!(f.today(at(86_400 + 6)).outcomes.enqueued, 2);
    }

    /// The bucket read from a short wait's span, or counted for a longer one, is the
    /// search's: at every bound, a microsecond either side, and many waits between.
    #[test]
    fn a_waits_bucket_is_the_searchs() {
        let search = |w: u64| WAIT_BUCKETS_MICROS.partition_point(|&b| b < w);
        let near_bounds = WAIT_BUCKETS_MICROS.iter().flat_map(|&b| [b - 1, b, b + 1]);
        let spread = (0..200_000u64).map(|i| i * i * 97 % 4_000_000_000);
        for w in near_bounds.chain(spread).chain([0, 1, u64::MAX]) {
            assert_eq!(wait_bucket(w), search(w), "a wait of {w} us");
        }
    }

    /// Today's counts share the first line with the day's and minute's ends: what every
    /// arrival and departure writes.
    #[test]
    fn todays_counts_fill_the_first_line() {
        use std::mem::offset_of;
        assert!(offset_of!(Figures, today_in_time) + 8 <= 64);
        assert!(offset_of!(Figures, today_left) + 8 * DequeueReason::COUNT <= 64);
        assert!(offset_of!(Figures, today_enqueued) + 8 <= 64);
    }

    /// Only a bridge counts within the service level: a caller who hangs up, leaves or
    /// times out within the threshold does not.
    #[test]
    fn only_a_bridge_counts_within_the_service_level() {
        let mut f = Figures::new(at(0));
        for reason in [DequeueReason::Hangup, DequeueReason::Leave, DequeueReason::Timeout] {
            f.joined(at(1), 1, 1);
            f.left(at(2), Some(reason), 1_000_000, 20_000_000, 0);
        }
        assert_eq!((f.outcomes().bridged_within_service_level, f.bridged_within_service_level), (0, 0));
        f.joined(at(3), 1, 1);
        f.left(at(4), Some(DequeueReason::Bridged), 1_000_000, 20_000_000, 0);
        assert_eq!((f.outcomes().bridged_within_service_level, f.bridged_within_service_level), (1, 1));
    }

    #[test]
    fn the_histogram_puts_each_wait_in_its_bucket() {
        let mut f = Figures::new(at(0));
        for (waited, len) in [(0, 5), (5, 4), (6, 3), (1800, 2), (1801, 1)] {
            f.left(at(0), Some(DequeueReason::Bridged), secs(waited), SL, len);
        }
        f.left(at(0), None, secs(3), SL, 0);
        let mut want = [0; WAIT_BUCKETS_SECS.len() + 1];
        want[0] = 2; // 0 s and 5 s: at most 5
        want[1] = 1; // 6 s
        want[10] = 1; // 1800 s
        want[11] = 1; // above
        assert_eq!(f.waits().counts, want);
        assert_eq!(f.waits().count(), 5, "an uncounted drop is not a wait");
        assert_eq!(f.waits().sum_micros, (5 + 6 + 1800 + 1801) * 1_000_000);
        // A microsecond past a bound is in the next bucket.
        let mut g = Figures::new(at(0));
        g.left(at(0), Some(DequeueReason::Leave), secs(5) + 1, SL, 1);
        g.left(at(0), Some(DequeueReason::Leave), secs(1800) + 1, SL, 0);
        assert_eq!((g.waits().counts[1], g.waits().counts[11]), (1, 1), "{:?}", g.waits().counts);
    }

    #[test]
    fn the_hour_of_lengths_carries_quiet_minutes_and_forgets_old_ones() {
        let mut f = Figures::new(at(0));
        f.joined(at(10), 1, 1);
        f.joined(at(20), 2, 1);
        f.left(at(50), Some(DequeueReason::Bridged), secs(30), SL, 1);
        // Minute 0 peaked at 2; nothing happens in minutes 1-2; minute 3 gets a third caller.
        f.joined(at(185), 2, 1);
        let hour = f.length_last_hour(at(185), 2);
        assert_eq!(hour.len(), LENGTH_HISTORY_MINUTES);
        assert_eq!(&hour[56..], &[2, 1, 1, 2], "{hour:?}");
        assert!(hour[..56].iter().all(|&n| n == 0), "before the queue existed: {hour:?}");
        // As a snapshot keeps them (by minute % 60), and read back the same.
        assert_eq!(&f.lengths()[..4], &[2, 1, 1, 2]);
        let back = |f: &Figures| {
            Figures::from_parts(
                f.day(),
                f.outcomes(),
                f.bridged_within_service_level,
                f.waits(),
                f.minute(),
                &f.lengths(),
            )
        };
        assert_eq!(back(&f).as_ref(), Ok(&f));
        // Read two minutes later with no change: the current length fills them.
        assert_eq!(&f.length_last_hour(at(305), 2)[54..], &[2, 1, 1, 2, 2, 2]);
        // Ninety minutes later the first hour is gone; the last hour is the length carried.
        f.left(at(90 * 60), Some(DequeueReason::Hangup), secs(10), SL, 1);
        let hour = f.length_last_hour(at(90 * 60), 1);
        assert!(hour[..59].iter().all(|&n| n == 2), "{hour:?}");
        assert_eq!(hour[59], 2, "the minute's longest");
        assert_eq!(back(&f).as_ref(), Ok(&f));
        assert!(f.lengths().iter().all(|&n| n == 2));
    }
}

#[cfg(test)]
mod boundary_tests {
    use super::*;

    /// The day and the minute turn at their first microsecond, not one before, and at the
    /// end of time (whose day and minute run past it) never.
    #[test]
    fn a_day_and_a_minute_turn_at_their_first_microsecond() {
        const MIDNIGHT: u64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
        let mut f = Figures::new(Timestamp::from_micros(MIDNIGHT - 60_000_000));
        f.joined(Timestamp::from_micros(MIDNIGHT - 1), 3, 1);
        assert_eq!(
            (f.day(), f.minute()),
            ((MIDNIGHT - 1) / MICROS_PER_DAY, (MIDNIGHT - 1) / MICROS_PER_MINUTE)
        );
        assert_eq!((f.outcomes().enqueued, f.peak), (1, 3));
        f.joined(Timestamp::from_micros(MIDNIGHT), 1, 1);
        assert_eq!((f.day(), f.minute()), (MIDNIGHT / MICROS_PER_DAY, MIDNIGHT / MICROS_PER_MINUTE));
        assert_eq!(
            (f.outcomes().enqueued, f.peak),
            (1, 1),
            "a new day counts from zero, a new minute from the length carried"
        );
        assert_eq!(f.lengths()[minute_slot(f.minute() - 1)], 3);

        let end = Timestamp::from_micros(u64::MAX);
        let mut last = Figures::new(end);
        assert_eq!((last.day(), last.minute()), (u64::MAX / MICROS_PER_DAY, u64::MAX / MICROS_PER_MINUTE));
        last.joined(end, 2, 1);
        last.joined(end, 4, 1);
        last.left(end, Some(DequeueReason::Bridged), 0, 0, 3);
        assert_eq!(
            (last.outcomes().enqueued, last.outcomes().bridged, last.peak),
            (2, 1, 4),
            "still the same day and minute"
        );
    }

    /// A dead member dropped (a departure counted by no reason) past midnight rolls the
    /// minute alone: the day counted stays until a counted change, which still starts the
    /// new day within the same minute.
    #[test]
    fn a_drop_past_midnight_leaves_the_day_to_the_next_counted_change() {
        const MIDNIGHT: u64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
        let mut f = Figures::new(Timestamp::from_micros(MIDNIGHT - 1));
        f.joined(Timestamp::from_micros(MIDNIGHT - 1), 2, 1);
        f.left(Timestamp::from_micros(MIDNIGHT + 1), None, 0, 0, 1);
        assert_eq!((f.day(), f.minute()), ((MIDNIGHT - 1) / MICROS_PER_DAY, MIDNIGHT / MICROS_PER_MINUTE));
        assert_eq!(f.outcomes().enqueued, 1, "no new day yet");
        f.left(Timestamp::from_micros(MIDNIGHT + 2), Some(DequeueReason::Leave), 0, 0, 0);
        assert_eq!(f.day(), MIDNIGHT / MICROS_PER_DAY);
        assert_eq!((f.outcomes().enqueued, f.outcomes().leave), (0, 1), "the new day's counts");
        f.joined(Timestamp::from_micros(MIDNIGHT + 3), 1, 1);
        assert_eq!((f.outcomes().enqueued, f.peak), (1, 2));
    }

    /// The waits' sum reads as it did when it saturated at `u64::MAX`, before and after a
    /// snapshot's round trip.
    #[test]
    fn the_waits_sum_reads_at_most_u64_max() {
        let mut f = Figures::new(Timestamp::from_micros(0));
        f.left(Timestamp::from_micros(1), Some(DequeueReason::Leave), u64::MAX - 1, 0, 0);
        assert_eq!(f.waits().sum_micros, u64::MAX - 1);
        f.left(Timestamp::from_micros(2), Some(DequeueReason::Leave), 5, 0, 0);
        assert_eq!((f.waits().sum_micros, f.waits().count()), (u64::MAX, 2));
        let back =
            Figures::from_parts(f.day(), f.outcomes(), 0, f.waits(), f.minute(), &f.lengths()).unwrap();
        assert_eq!(back.waits(), f.waits());
        let mut back = back;
        back.left(Timestamp::from_micros(3), Some(DequeueReason::Leave), 1, 0, 0);
        assert_eq!(back.waits().sum_micros, u64::MAX);
    }

    /// A change at a minute's last microsecond is still in that minute: its peak is kept.
    #[test]
    fn a_change_at_a_minutes_last_microsecond_keeps_its_peak() {
        const MIDNIGHT: u64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
        let mut f = Figures::new(Timestamp::from_micros(MIDNIGHT));
        f.joined(Timestamp::from_micros(MIDNIGHT), 5, 5);
        for len in (2..5).rev() {
            f.left(Timestamp::from_micros(MIDNIGHT + 1), None, 1, 0, len);
        }
        f.left(Timestamp::from_micros(MIDNIGHT + MICROS_PER_MINUTE - 1), None, 1, 0, 1);
        assert_eq!(f.peak, 5);
        f.joined(Timestamp::from_micros(MIDNIGHT + MICROS_PER_MINUTE), 2, 1);
        assert_eq!(f.lengths()[minute_slot(MIDNIGHT / MICROS_PER_MINUTE)], 5);
    }

    /// In the clock's first hour the hour of lengths still has 60 minutes, those before
    /// minute 0 reading 0.
    #[test]
    fn the_hour_of_lengths_at_the_start_of_time() {
        let mut f = Figures::new(Timestamp::from_micros(0));
        f.joined(Timestamp::from_micros(0), 3, 3);
        let hour = f.length_last_hour(Timestamp::from_micros(0), 3);
        assert_eq!(hour.len(), LENGTH_HISTORY_MINUTES);
        assert!(hour[..LENGTH_HISTORY_MINUTES - 1].iter().all(|&l| l == 0));
        assert_eq!(hour[LENGTH_HISTORY_MINUTES - 1], 3);
        let later = f.length_last_hour(Timestamp::from_micros(2 * MICROS_PER_MINUTE), 3);
        assert_eq!(later.len(), LENGTH_HISTORY_MINUTES);
        assert_eq!(later[LENGTH_HISTORY_MINUTES - 3..], [3, 3, 3]);
        assert!(later[..LENGTH_HISTORY_MINUTES - 3].iter().all(|&l| l == 0));
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;

    #[test]
    fn figures_from_a_snapshot_are_checked() {
        let f = Figures::new(Timestamp::from_secs(1_767_225_600));
        let back = |day, minute, lengths: &[u32]| {
            Figures::from_parts(day, f.outcomes(), 0, f.waits(), minute, lengths).map(|g| g.lengths.len())
        };
        assert_eq!(back(f.day(), f.minute(), &f.lengths), Ok(LENGTH_HISTORY_MINUTES));
        assert!(back(f.day(), f.minute(), &f.lengths[1..]).is_err(), "an hour is 60 minutes");
        assert!(back(u64::MAX / MICROS_PER_DAY + 1, f.minute(), &f.lengths).is_err());
        assert!(back(f.day(), u64::MAX / MICROS_PER_MINUTE + 1, &f.lengths).is_err());
        assert!(back(u64::MAX / MICROS_PER_DAY, u64::MAX / MICROS_PER_MINUTE, &f.lengths).is_ok());
        // The last instants a clock can show still read without overflow.
        let last = Figures::from_parts(
            u64::MAX / MICROS_PER_DAY,
            f.outcomes(),
            0,
            f.waits(),
            u64::MAX / MICROS_PER_MINUTE,
            &f.lengths,
        )
        .expect("valid");
        assert_eq!(last.length_last_hour(Timestamp::from_micros(0), 3).len(), LENGTH_HISTORY_MINUTES);
        let _ = last.today(Timestamp::from_micros(0));
    }
}
