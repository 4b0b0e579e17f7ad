//! Rate limits per tenant: a token bucket each, refilled at the configured rate up to the
//! burst; every authenticated request takes one token. Each tenant's bucket has its own
//! lock, so a tenant at its limit never waits on, or slows, another.
//!
//! Time comes from a [`waitline::Clock`], so tests drive the buckets with a manual clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use waitline::{Clock, Timestamp};

/// The configured limit: requests per second for each tenant, and how many may come at
/// once after a quiet spell.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: u32,
    /// Most tokens held (at least 1).
    pub burst: u32,
    /// Where the buckets read the time.
    pub clock: Clock,
}

impl RateLimit {
    /// `per_second` requests a second, a burst of one second's worth.
    #[must_use]
    pub fn per_second(per_second: u32) -> Self {
        Self { per_second, burst: per_second.max(1), clock: Clock::default() }
    }
}

/// One tenant's bucket.
#[derive(Debug)]
pub struct Bucket {
    limit: Arc<RateLimit>,
    state: Mutex<Fill>,
}

#[derive(Debug)]
struct Fill {
    /// Tokens held, in millionths (whole requests are 1,000,000).
    micro_tokens: u64,
    /// When `micro_tokens` was last brought up to date.
    at: Timestamp,
}

const WHOLE: u64 = 1_000_000;

impl Bucket {
    fn new(limit: Arc<RateLimit>) -> Self {
        let full = u64::from(limit.burst.max(1)) * WHOLE;
        let at = limit.clock.now();
        Self { limit, state: Mutex::new(Fill { micro_tokens: full, at }) }
    }

    /// Takes one token; when there is none, the whole seconds to wait until there is
    /// (at least 1: `Retry-After` is whole seconds, and 0 would invite a retry at once).
    ///
    /// # Errors
    /// The bucket is empty: the seconds to wait.
    pub fn take(&self) -> Result<(), u64> {
        let now = self.limit.clock.now();
        let rate = u64::from(self.limit.per_second);
        let full = u64::from(self.limit.burst.max(1)) * WHOLE;
        let mut fill = self.state.lock();
        // A clock set backwards adds nothing (and takes nothing).
        if now > fill.at {
            // micro_tokens added = elapsed µs × rate / 1 s, i.e. µs × rate millionths.
            let elapsed = now.as_micros() - fill.at.as_micros();
            fill.micro_tokens = fill.micro_tokens.saturating_add(elapsed.saturating_mul(rate)).min(full);
            fill.at = now;
        }
        if fill.micro_tokens >= WHOLE {
            fill.micro_tokens -= WHOLE;
            return Ok(());
        }
        if rate == 0 {
            return Err(u64::MAX);
        }
        let missing = WHOLE - fill.micro_tokens;
        // µs until one token: missing / rate, rounded up to whole seconds.
        let wait = Duration::from_micros(missing.div_ceil(rate));
        Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }
}

/// Every tenant's bucket under one limit. A tenant's bucket lives as long as the limiter:
/// reloading keys keeps the buckets of the tenants that stay.
#[derive(Debug)]
pub struct RateLimiter {
    limit: Arc<RateLimit>,
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
}

impl RateLimiter {
    /// A limiter with no bucket yet.
    #[must_use]
    pub fn new(limit: RateLimit) -> Self {
        Self { limit: Arc::new(limit), buckets: Mutex::default() }
    }

    /// The bucket of `tenant` (made full on first use). Looked up when keys are loaded, not
    /// per request.
    #[must_use]
    pub fn bucket(&self, tenant: &str) -> Arc<Bucket> {
        self.buckets
            .lock()
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Bucket::new(self.limit.clone())))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, burst: u32) -> (RateLimiter, waitline::ManualClock) {
        let (clock, hand) = Clock::manual(Timestamp::from_secs(1_000));
        (RateLimiter::new(RateLimit { per_second, burst, clock }), hand)
    }

    #[test]
    fn a_burst_then_the_rate() {
        let (limiter, hand) = limiter(2, 3);
        let a = limiter.bucket("a");
        assert_eq!((a.take(), a.take(), a.take()), (Ok(()), Ok(()), Ok(())));
        // Empty: one token comes in half a second, announced as a whole second.
        assert_eq!(a.take(), Err(1));
        hand.advance(Duration::from_millis(499));
        assert_eq!(a.take(), Err(1));
        hand.advance(Duration::from_millis(1));
        assert_eq!((a.take(), a.take()), (Ok(()), Err(1)));
        // A long quiet spell refills up to the burst, not beyond.
        hand.advance(Duration::from_secs(3600));
        assert_eq!((a.take(), a.take(), a.take(), a.take()), (Ok(()), Ok(()), Ok(()), Err(1)));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let (limiter, hand) = limiter(1, 1);
        let a = limiter.bucket("a");
        assert_eq!((a.take(), a.take()), (Ok(()), Err(1)));
        hand.advance(Duration::from_millis(100));
        assert_eq!(a.take(), Err(1), "0.9 s rounds up to 1");
        hand.advance(Duration::from_millis(900));
        assert_eq!(a.take(), Ok(()));
        let zero = RateLimiter::new(RateLimit { per_second: 0, burst: 1, clock: Clock::Manual(hand) });
        let z = zero.bucket("z");
        assert_eq!((z.take(), z.take()), (Ok(()), Err(u64::MAX)), "rate 0: the burst, then never");
    }

    #[test]
    fn tenants_have_their_own_buckets_and_keep_them() {
        let (limiter, hand) = limiter(1, 2);
        let a = limiter.bucket("a");
        assert_eq!((a.take(), a.take(), a.take()), (Ok(()), Ok(()), Err(1)));
        let b = limiter.bucket("b");
        assert_eq!((b.take(), b.take()), (Ok(()), Ok(())), "b is untouched by a");
        // Asking again (a key reload) gives the same, still empty, bucket.
        assert_eq!(limiter.bucket("a").take(), Err(1));
        hand.set(Timestamp::from_secs(10));
        assert_eq!(a.take(), Err(1), "a clock set backwards adds nothing");
    }

    #[test]
    fn concurrent_takers_get_exactly_the_burst() {
        let (limiter, _hand) = limiter(1, 50);
        let a = limiter.bucket("a");
        let b = limiter.bucket("b");
        let granted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if a.take().is_ok() {
                            granted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
            // Meanwhile b gets every one of its tokens.
            s.spawn(|| assert!((0..50).all(|_| b.take().is_ok())));
        });
        assert_eq!(granted.into_inner(), 50);
        assert!(b.take().is_err());
    }
}
