//! Exponential backoff with full jitter: the one retry schedule of the crate.
//!
//! Used by the upstream HTTP client (jittered [`Backoff::delay`], bounded retries), the sync
//! engine's error loop and the trigger workers' delivery retries (the deterministic
//! [`Backoff::ceiling`] of an unbounded schedule, [`Backoff::unbounded`]).
//!
//! The delay before retry `attempt` (0-based) is drawn uniformly from
//! `[0, min(max, base * factor^attempt)]` ("full jitter"), which spreads retries of many
//! clients hitting the same failing upstream. The random source is passed in, so tests use a
//! seeded generator and get deterministic delays.

use std::time::Duration;

use rand::Rng;

/// Retry schedule: exponential ceiling, full jitter, bounded number of retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Ceiling of the first retry's delay.
    pub base: Duration,
    /// Growth of the ceiling per attempt (2.0 doubles it).
    pub factor: f64,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Retries allowed after the first attempt; `delay` returns `None` beyond it.
    pub max_retries: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            factor: 2.0,
            max: Duration::from_secs(30),
            max_retries: 3,
        }
    }
}

impl Backoff {
    /// A schedule doubling from `base` up to `max`, allowing `max_retries` retries.
    pub fn new(base: Duration, max: Duration, max_retries: u32) -> Self {
        Self {
            base,
            factor: 2.0,
            max,
            max_retries,
        }
    }

    /// A schedule doubling from `base` up to `max` that never gives up (for loops that retry
    /// until cancelled and only need the delay of attempt `n`, usually [`Self::ceiling`]).
    pub fn unbounded(base: Duration, max: Duration) -> Self {
        Self::new(base, max, u32::MAX)
    }

    /// The largest delay retry `attempt` (0-based) may wait: `min(max, base * factor^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = if self.factor.is_finite() && self.factor >= 1.0 {
            self.factor
        } else {
            1.0
        };
        // Saturate the exponent: beyond ~1000 doublings every sensible `max` is reached.
        let exp = i32::try_from(attempt.min(1000)).unwrap_or(1000);
        let secs = self.base.as_secs_f64() * factor.powi(exp);
        let max = self.max.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            self.max
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }

    /// The jittered delay before retry `attempt` (0-based), or `None` when `attempt` is not
    /// below `max_retries` (give up).
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Option<Duration> {
        if attempt >= self.max_retries {
            return None;
        }
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(rng.random_range(0..=nanos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn schedule() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 5)
    }

    #[test]
    fn ceiling_grows_exponentially_and_is_capped() {
        let b = schedule();
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(2), Duration::from_millis(400));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(4), Duration::from_secs(1));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn delays_stay_within_the_ceiling_and_stop_after_max_retries() {
        let b = schedule();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..5 {
            for _ in 0..200 {
                let d = b.delay(attempt, &mut rng).unwrap();
                assert!(d <= b.ceiling(attempt), "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(b.delay(5, &mut rng), None);
        assert_eq!(b.delay(6, &mut rng), None);
    }

    #[test]
    fn same_seed_gives_same_delays() {
        let b = schedule();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..5).map(|a| b.delay(a, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let b = schedule();
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..1000).map(|_| b.delay(3, &mut rng).unwrap()).collect();
        let low = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(200))
            .count();
        let high = delays
            .iter()
            .filter(|d| **d > Duration::from_millis(600))
            .count();
        // Uniform on [0, 800 ms]: about a quarter in each tail.
        assert!((150..350).contains(&low), "low tail {low}");
        assert!((150..350).contains(&high), "high tail {high}");
    }

    #[test]
    fn zero_retries_never_delays() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(10), 0);
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(b.delay(0, &mut rng), None);
    }
}
