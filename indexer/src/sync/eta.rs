//! Backfill progress and time left: a pure estimator fed with (time, height) samples.
//!
//! The rate is an exponentially weighted average of heights per second between samples, so
//! a burst or a pause moves the estimate gradually instead of making it jump.

use std::time::{Duration, Instant};

/// Weight of the newest rate sample.
const ALPHA: f64 = 0.3;

/// Tracks one source's backfill.
#[derive(Debug, Clone, Default)]
pub struct EtaTracker {
    last: Option<(Instant, i64)>,
    /// Heights per second (smoothed).
    rate: Option<f64>,
}

/// A snapshot for logs and the `source` row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Fraction of the backfill range done, 0..=1.
    pub progress: f64,
    /// Heights per second.
    pub rate: Option<f64>,
    /// Seconds left at the current rate.
    pub eta_seconds: Option<i64>,
}

/// Fraction of `[from, head]` covered by `indexed`, clamped to 0..=1 (1 when the range is
/// empty).
pub fn progress(from: i64, indexed: i64, head: i64) -> f64 {
    if head <= from {
        return 1.0;
    }
    ((indexed - from) as f64 / (head - from) as f64).clamp(0.0, 1.0)
}

impl EtaTracker {
    /// Records that `indexed` was reached at `now`.
    pub fn sample(&mut self, now: Instant, indexed: i64) {
        if let Some((t, h)) = self.last {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            if dt <= 0.0 || indexed < h {
                // A rollback or a clock that did not move: restart the measurement.
                self.last = Some((now, indexed));
                if indexed < h {
                    self.rate = None;
                }
                return;
            }
            let r = (indexed - h) as f64 / dt;
            self.rate = Some(match self.rate {
                Some(old) => old * (1.0 - ALPHA) + r * ALPHA,
                None => r,
            });
        }
        self.last = Some((now, indexed));
    }

    /// Forgets the rate (after a restart of the pipeline or a pause).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// The estimate for a backfill of `[from, head]` standing at `indexed`.
    pub fn estimate(&self, from: i64, indexed: i64, head: i64) -> Estimate {
        let left = (head - indexed).max(0);
        let eta_seconds = match self.rate {
            _ if left == 0 => Some(0),
            Some(r) if r > 0.0 => {
                let secs = left as f64 / r;
                (secs.is_finite() && secs < 1e12).then(|| secs.ceil() as i64)
            }
            _ => None,
        };
        Estimate {
            progress: progress(from, indexed, head),
            rate: self.rate,
            eta_seconds,
        }
    }
}

/// Whether a progress line is due, at most one per `every`.
#[derive(Debug)]
pub struct Every {
    every: Duration,
    last: Option<Instant>,
}

impl Every {
    /// At most once per `every`.
    pub fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// True (and remembers `now`) when `every` has passed since the last true.
    pub fn due(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) < self.every)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_the_covered_fraction() {
        assert_eq!(progress(100, 100, 200), 0.0);
        assert_eq!(progress(100, 150, 200), 0.5);
        assert_eq!(progress(100, 250, 200), 1.0);
        assert_eq!(progress(100, 90, 200), 0.0);
        assert_eq!(progress(200, 200, 200), 1.0);
    }

    #[test]
    fn eta_follows_the_smoothed_rate() {
        let t0 = Instant::now();
        let mut e = EtaTracker::default();
        e.sample(t0, 0);
        assert_eq!(e.estimate(0, 0, 1000).eta_seconds, None, "no rate yet");
        e.sample(t0 + Duration::from_secs(1), 100);
        let est = e.estimate(0, 100, 1000);
        assert_eq!(est.rate, Some(100.0));
        assert_eq!(est.eta_seconds, Some(9));
        // A slower second: the rate moves a third of the way.
        e.sample(t0 + Duration::from_secs(2), 150);
        let r = e.estimate(0, 150, 1000).rate.unwrap();
        assert!((r - 85.0).abs() < 1e-9, "{r}");
        assert_eq!(e.estimate(0, 1000, 1000).eta_seconds, Some(0));
    }

    #[test]
    fn a_rollback_restarts_the_measurement() {
        let t0 = Instant::now();
        let mut e = EtaTracker::default();
        e.sample(t0, 100);
        e.sample(t0 + Duration::from_secs(1), 200);
        e.sample(t0 + Duration::from_secs(2), 150);
        assert_eq!(e.estimate(0, 150, 1000).rate, None);
    }

    #[test]
    fn lines_are_rate_limited() {
        let t0 = Instant::now();
        let mut every = Every::new(Duration::from_secs(5));
        assert!(every.due(t0));
        assert!(!every.due(t0 + Duration::from_secs(4)));
        assert!(every.due(t0 + Duration::from_secs(5)));
    }
}
