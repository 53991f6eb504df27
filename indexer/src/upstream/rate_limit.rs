//! Client-side rate limiting: a token bucket with an hourly budget that also obeys what the
//! server says (`X-Ratelimit-*` headers, `429 Retry-After`).
//!
//! [`TokenBucket`] is the pure core: every method takes the current [`Instant`] from the
//! caller, so tests drive time by hand. [`RateLimiter`] wraps it for async callers, sleeping
//! (with `tokio::time`) until a token is available and recording the waits in metrics.
//! The hourly budget can be changed at run time ([`RateLimiter::set_rate`]); requests
//! already waiting re-plan their wait at the new pace.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Seconds in the hour the budget is expressed in.
const HOUR_SECS: f64 = 3600.0;

/// A token bucket refilled continuously at `requests_per_hour / 3600` tokens per second,
/// holding at most `capacity` tokens, that can additionally be blocked until an instant
/// (server said "no more until ...").
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    /// Tokens per second; `None` means no local budget (only server signals apply).
    refill_per_sec: Option<f64>,
    tokens: f64,
    last: Instant,
    blocked_until: Option<Instant>,
    server_limit: Option<u64>,
    server_remaining: Option<u64>,
}

impl TokenBucket {
    /// A full bucket holding `burst` tokens (at least 1) refilled at `requests_per_hour`.
    /// `requests_per_hour == 0` disables the local budget; server signals still apply.
    pub fn new(requests_per_hour: u32, burst: u32, now: Instant) -> Self {
        let capacity = f64::from(burst.max(1));
        Self {
            capacity,
            refill_per_sec: (requests_per_hour > 0)
                .then(|| f64::from(requests_per_hour) / HOUR_SECS),
            tokens: capacity,
            last: now,
            blocked_until: None,
            server_limit: None,
            server_remaining: None,
        }
    }

    /// Changes the hourly budget from `now` on (0 disables the local budget). Tokens accrued
    /// so far at the old rate are kept; the bucket size and server signals are unchanged.
    pub fn set_rate(&mut self, requests_per_hour: u32, now: Instant) {
        self.refill(now);
        self.refill_per_sec =
            (requests_per_hour > 0).then(|| f64::from(requests_per_hour) / HOUR_SECS);
    }

    /// The local hourly budget (0 when there is none).
    pub fn requests_per_hour(&self) -> u32 {
        // The rate was built from a u32, so the product is back in range.
        self.refill_per_sec
            .map_or(0, |rate| (rate * HOUR_SECS).round() as u32)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        if let Some(rate) = self.refill_per_sec {
            self.tokens = (self.tokens + elapsed * rate).min(self.capacity);
        }
        if now > self.last {
            self.last = now;
        }
        if self.blocked_until.is_some_and(|until| until <= now) {
            self.blocked_until = None;
        }
    }

    /// Takes one token, or says how long to wait before one may be available.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if let Some(until) = self.blocked_until {
            return Err(until.saturating_duration_since(now));
        }
        let Some(rate) = self.refill_per_sec else {
            return Ok(());
        };
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - self.tokens;
        // Round up to the next microsecond so the caller never wakes a hair too early.
        let wait = Duration::from_secs_f64(missing / rate) + Duration::from_micros(1);
        Err(wait)
    }

    /// Applies the server's view (`X-Ratelimit-Limit/Remaining/Reset`): the local bucket
    /// never holds more tokens than the server has left, and when the server has none left
    /// the bucket is blocked until its window resets (`reset` from now).
    pub fn observe_headers(
        &mut self,
        limit: Option<u64>,
        remaining: u64,
        reset: Duration,
        now: Instant,
    ) {
        self.refill(now);
        if limit.is_some() {
            self.server_limit = limit;
        }
        self.server_remaining = Some(remaining);
        // u64 -> f64 only loses precision far beyond any real budget.
        let remaining_f = remaining as f64;
        if self.tokens > remaining_f {
            self.tokens = remaining_f;
        }
        if remaining == 0 {
            self.block_until(now + reset);
        }
    }

    /// Obeys a `429 Too Many Requests`: no request until `retry_after` has passed, and the
    /// bucket is emptied so requests resume at the budgeted pace rather than in a burst.
    pub fn penalize(&mut self, retry_after: Duration, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.min(0.0);
        self.block_until(now + retry_after);
    }

    fn block_until(&mut self, until: Instant) {
        self.blocked_until = Some(match self.blocked_until {
            Some(existing) if existing > until => existing,
            _ => until,
        });
    }

    /// Whole tokens available now (for status display). Without a local budget this is
    /// what the server last reported, or `u32::MAX` when it never did.
    pub fn remaining(&mut self, now: Instant) -> u32 {
        self.refill(now);
        if self.blocked_until.is_some() {
            return 0;
        }
        if self.refill_per_sec.is_none() {
            return self
                .server_remaining
                .map_or(u32::MAX, |r| u32::try_from(r).unwrap_or(u32::MAX));
        }
        // Tokens are bounded by `capacity`, itself a u32.
        self.tokens.max(0.0).floor() as u32
    }

    /// How long until requests are allowed again if the bucket is blocked by the server.
    pub fn blocked_for(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|until| *until > now)
            .map(|until| until.saturating_duration_since(now))
    }

    /// The limit the server last announced (`X-Ratelimit-Limit`), if any.
    pub fn server_limit(&self) -> Option<u64> {
        self.server_limit
    }

    /// The bucket size.
    pub fn capacity(&self) -> u32 {
        self.capacity as u32
    }
}

/// The async, shareable rate limiter of one upstream (see [`TokenBucket`]).
#[derive(Debug)]
pub struct RateLimiter {
    name: String,
    bucket: Mutex<TokenBucket>,
    /// Wakes waiting [`RateLimiter::acquire`] calls when the budget changes.
    rate_changed: Notify,
}

/// The current instant on tokio's clock (pausable in tests) as a std `Instant`.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl RateLimiter {
    /// A limiter for upstream `name` with an hourly budget and a burst size (see
    /// [`TokenBucket::new`]).
    pub fn new(name: impl Into<String>, requests_per_hour: u32, burst: u32) -> Self {
        let limiter = Self {
            name: name.into(),
            bucket: Mutex::new(TokenBucket::new(requests_per_hour, burst, now())),
            rate_changed: Notify::new(),
        };
        limiter.publish_budget(requests_per_hour);
        limiter.publish_remaining();
        limiter
    }

    /// Changes the hourly budget at run time (see [`TokenBucket::set_rate`]); requests
    /// waiting for a token re-plan their wait at the new pace. Shown in
    /// `orrery_rate_limit_budget_per_hour`.
    pub fn set_rate(&self, requests_per_hour: u32) {
        let before = self.with_bucket(|b| {
            let before = b.requests_per_hour();
            b.set_rate(requests_per_hour, now());
            before
        });
        if before != requests_per_hour {
            tracing::info!(upstream = %self.name, from = before, to = requests_per_hour, "rate limit budget changed");
        }
        self.publish_budget(requests_per_hour);
        self.publish_remaining();
        self.rate_changed.notify_waiters();
    }

    /// The local hourly budget in force (0 when there is none).
    pub fn requests_per_hour(&self) -> u32 {
        self.with_bucket(|b| b.requests_per_hour())
    }

    fn publish_budget(&self, requests_per_hour: u32) {
        Metrics::global()
            .rate_limit_budget
            .with_label_values(&[self.name.as_str()])
            .set(f64::from(requests_per_hour));
    }

    fn with_bucket<R>(&self, f: impl FnOnce(&mut TokenBucket) -> R) -> R {
        // The bucket holds plain numbers; a panic elsewhere cannot leave it inconsistent.
        let mut guard = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    fn publish_remaining(&self) {
        let remaining = self.with_bucket(|b| b.remaining(now()));
        Metrics::global()
            .rate_limit_remaining
            .with_label_values(&[self.name.as_str()])
            .set(f64::from(remaining));
    }

    /// Waits until a token is available and takes it; returns the time spent waiting.
    /// Waits are counted in `rate_limit_waits` / `rate_limit_wait_seconds`.
    pub async fn acquire(&self) -> Duration {
        let started = tokio::time::Instant::now();
        let mut waited = false;
        loop {
            // Registered before the check so a budget change in between is not missed.
            let rate_changed = self.rate_changed.notified();
            tokio::pin!(rate_changed);
            rate_changed.as_mut().enable();
            match self.with_bucket(|b| b.try_acquire(now())) {
                Ok(()) => break,
                Err(wait) => {
                    if !waited {
                        waited = true;
                        tracing::debug!(upstream = %self.name, wait_ms = wait.as_millis(), "rate limit: waiting for a token");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = rate_changed => {}
                    }
                }
            }
        }
        let elapsed = started.elapsed();
        if waited {
            let m = Metrics::global();
            m.rate_limit_waits
                .with_label_values(&[self.name.as_str()])
                .inc();
            m.rate_limit_wait_seconds
                .with_label_values(&[self.name.as_str()])
                .add(elapsed.as_secs_f64());
        }
        self.publish_remaining();
        elapsed
    }

    /// Takes a token if one is available right now, without waiting.
    pub fn try_acquire(&self) -> bool {
        let ok = self.with_bucket(|b| b.try_acquire(now())).is_ok();
        self.publish_remaining();
        ok
    }

    /// See [`TokenBucket::observe_headers`].
    pub fn observe_headers(&self, limit: Option<u64>, remaining: u64, reset: Duration) {
        self.with_bucket(|b| b.observe_headers(limit, remaining, reset, now()));
        self.publish_remaining();
    }

    /// See [`TokenBucket::penalize`].
    pub fn penalize(&self, retry_after: Duration) {
        tracing::warn!(upstream = %self.name, retry_after_ms = retry_after.as_millis(), "rate limited by upstream");
        self.with_bucket(|b| b.penalize(retry_after, now()));
        self.publish_remaining();
    }

    /// Whole tokens available now (see [`TokenBucket::remaining`]).
    pub fn remaining(&self) -> u32 {
        self.with_bucket(|b| b.remaining(now()))
    }

    /// How long requests stay blocked by a server signal, if they are.
    pub fn blocked_for(&self) -> Option<Duration> {
        self.with_bucket(|b| b.blocked_for(now()))
    }

    /// The limit the server last announced, if any.
    pub fn server_limit(&self) -> Option<u64> {
        self.with_bucket(|b| b.server_limit())
    }

    /// The upstream this limiter belongs to.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn burst_then_paced_at_the_hourly_budget() {
        let t0 = Instant::now();
        // 3600/h = one token per second, burst 3.
        let mut b = TokenBucket::new(3600, 3, t0);
        assert_eq!(b.remaining(t0), 3);
        for _ in 0..3 {
            assert!(b.try_acquire(t0).is_ok());
        }
        let wait = b.try_acquire(t0).unwrap_err();
        assert!(wait >= secs(1.0) && wait < secs(1.01), "{wait:?}");
        // Half a second later half a token has accrued: wait about half a second more.
        let wait = b.try_acquire(t0 + secs(0.5)).unwrap_err();
        assert!(wait >= secs(0.5) && wait < secs(0.51), "{wait:?}");
        assert!(b.try_acquire(t0 + secs(1.0)).is_ok());
        assert!(b.try_acquire(t0 + secs(1.0)).is_err());
    }

    #[test]
    fn default_budget_of_3000_per_hour() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3000, 1, t0);
        assert!(b.try_acquire(t0).is_ok());
        let wait = b.try_acquire(t0).unwrap_err();
        // 3600 s / 3000 = 1.2 s per request.
        assert!(wait >= secs(1.2) && wait < secs(1.21), "{wait:?}");
    }

    #[test]
    fn refill_never_exceeds_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3600, 2, t0);
        assert!(b.try_acquire(t0).is_ok());
        assert_eq!(b.remaining(t0 + secs(1000.0)), 2);
    }

    #[test]
    fn server_remaining_clamps_the_local_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3600, 100, t0);
        b.observe_headers(Some(3600), 2, secs(60.0), t0);
        assert_eq!(b.server_limit(), Some(3600));
        assert_eq!(b.remaining(t0), 2);
        assert!(b.try_acquire(t0).is_ok());
        assert!(b.try_acquire(t0).is_ok());
        assert!(b.try_acquire(t0).is_err());
        // A server with more left than we have does not raise the local bucket.
        b.observe_headers(None, 1000, secs(60.0), t0);
        assert_eq!(b.remaining(t0), 0);
    }

    #[test]
    fn server_exhausted_blocks_until_reset() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3600, 10, t0);
        b.observe_headers(Some(100), 0, secs(30.0), t0);
        assert_eq!(b.try_acquire(t0 + secs(10.0)).unwrap_err(), secs(20.0));
        assert_eq!(b.blocked_for(t0 + secs(10.0)), Some(secs(20.0)));
        // After the reset the bucket has refilled at the local pace.
        assert!(b.try_acquire(t0 + secs(30.0)).is_ok());
        assert_eq!(b.blocked_for(t0 + secs(30.0)), None);
    }

    #[test]
    fn penalize_blocks_and_empties_the_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3600, 10, t0);
        b.penalize(secs(5.0), t0);
        assert_eq!(b.remaining(t0), 0);
        assert_eq!(b.try_acquire(t0 + secs(1.0)).unwrap_err(), secs(4.0));
        // 5 s at 1 token/s: 5 tokens accrued by the time the block lifts.
        assert!(b.try_acquire(t0 + secs(5.0)).is_ok());
        assert_eq!(b.remaining(t0 + secs(5.0)), 4);
    }

    #[test]
    fn a_shorter_penalty_does_not_shorten_a_longer_block() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3600, 10, t0);
        b.penalize(secs(10.0), t0);
        b.penalize(secs(1.0), t0);
        assert_eq!(b.blocked_for(t0), Some(secs(10.0)));
    }

    #[test]
    fn zero_budget_means_only_server_signals_limit() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 1, t0);
        for _ in 0..10_000 {
            assert!(b.try_acquire(t0).is_ok());
        }
        assert_eq!(b.remaining(t0), u32::MAX);
        b.observe_headers(None, 7, secs(1.0), t0);
        assert_eq!(b.remaining(t0), 7);
        b.penalize(secs(2.0), t0);
        assert_eq!(b.try_acquire(t0).unwrap_err(), secs(2.0));
        assert!(b.try_acquire(t0 + secs(2.0)).is_ok());
    }

    #[test]
    fn set_rate_changes_the_pace_and_keeps_accrued_tokens() {
        let t0 = Instant::now();
        // 3600/h = one token per second, burst 10.
        let mut b = TokenBucket::new(3600, 10, t0);
        assert_eq!(b.requests_per_hour(), 3600);
        for _ in 0..10 {
            assert!(b.try_acquire(t0).is_ok());
        }
        // Half a token accrued at the old pace, then 7200/h = two per second.
        b.set_rate(7200, t0 + secs(0.5));
        assert_eq!(b.requests_per_hour(), 7200);
        let wait = b.try_acquire(t0 + secs(0.5)).unwrap_err();
        assert!(wait >= secs(0.25) && wait < secs(0.26), "{wait:?}");
        assert!(b.try_acquire(t0 + secs(0.75)).is_ok());
        // Down to 360/h = one per 10 s.
        b.set_rate(360, t0 + secs(0.75));
        let wait = b.try_acquire(t0 + secs(0.75)).unwrap_err();
        assert!(wait >= secs(10.0) && wait < secs(10.01), "{wait:?}");
        // 0 switches the local budget off; a rate switches it back on.
        b.set_rate(0, t0 + secs(1.0));
        assert_eq!(b.requests_per_hour(), 0);
        for _ in 0..100 {
            assert!(b.try_acquire(t0 + secs(1.0)).is_ok());
        }
        b.set_rate(3600, t0 + secs(1.0));
        assert!(b.try_acquire(t0 + secs(1.0)).is_err());
        assert!(b.try_acquire(t0 + secs(2.0)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_raised_rate_wakes_a_waiting_acquire() {
        let name = "test-rate-limit-set-rate";
        // One token per hour, burst 1: the second acquire would wait an hour.
        let limiter = std::sync::Arc::new(RateLimiter::new(name, 1, 1));
        let budget = || {
            Metrics::global()
                .rate_limit_budget
                .with_label_values(&[name])
                .get()
        };
        assert_eq!(budget(), 1.0);
        assert_eq!(limiter.acquire().await, Duration::ZERO);
        let waiting = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire().await })
        };
        tokio::time::sleep(secs(1.0)).await;
        assert!(!waiting.is_finished());
        // 3600/h: the waiter re-plans and gets a token within a second, not an hour.
        limiter.set_rate(3600);
        assert_eq!(limiter.requests_per_hour(), 3600);
        assert_eq!(budget(), 3600.0);
        let waited = waiting.await.unwrap();
        assert!(waited < secs(2.1), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_sleeps_until_a_token_and_records_the_wait() {
        let name = "test-rate-limit-acquire";
        // One token per second, burst 1.
        let limiter = RateLimiter::new(name, 3600, 1);
        let waits = || {
            Metrics::global()
                .rate_limit_waits
                .with_label_values(&[name])
                .get()
        };
        assert_eq!(limiter.acquire().await, Duration::ZERO);
        assert_eq!(waits(), 0);
        let waited = limiter.acquire().await;
        assert!(waited >= secs(1.0) && waited < secs(1.1), "{waited:?}");
        assert_eq!(waits(), 1);
        let seconds = Metrics::global()
            .rate_limit_wait_seconds
            .with_label_values(&[name])
            .get();
        assert!((1.0..1.1).contains(&seconds), "{seconds}");
        assert_eq!(limiter.remaining(), 0);

        limiter.penalize(secs(3.0));
        assert!(!limiter.try_acquire());
        let waited = limiter.acquire().await;
        assert!(waited >= secs(3.0) && waited < secs(3.1), "{waited:?}");
        assert_eq!(waits(), 2);
    }
}
