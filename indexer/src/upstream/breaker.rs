//! Circuit breaker: stop calling an upstream that keeps failing, probe it again later.
//!
//! States: `Closed` (requests flow; consecutive failures are counted) -> `Open` after
//! `failure_threshold` consecutive failures (requests fail fast) -> `HalfOpen` once
//! `recovery_timeout` has passed (exactly one probe request at a time) -> `Closed` when the
//! probe succeeds, `Open` again (new timeout) when it fails.
//!
//! [`BreakerCore`] is the pure state machine; time is passed in by the caller.
//! [`CircuitBreaker`] wraps it for shared use: admission through a [`BreakerPermit`] guard,
//! metrics, and a `tokio::sync::watch` channel carrying a [`BreakerSnapshot`] after every
//! state change so the sync engine can persist it (and [`CircuitBreaker::restore`] it).

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow normally.
    Closed,
    /// Recovery timeout elapsed: one probe request is allowed through.
    HalfOpen,
    /// Requests fail fast until the recovery timeout elapses.
    Open,
}

impl BreakerState {
    /// The stored/displayed name: `closed`, `half_open`, `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    /// The value of the `orrery_circuit_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn metric_value(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a breaker state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown circuit breaker state {0:?} (expected closed, half_open or open)")]
pub struct UnknownBreakerState(pub String);

impl FromStr for BreakerState {
    type Err = UnknownBreakerState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "closed" => Ok(BreakerState::Closed),
            "half_open" | "half-open" => Ok(BreakerState::HalfOpen),
            "open" => Ok(BreakerState::Open),
            other => Err(UnknownBreakerState(other.to_owned())),
        }
    }
}

/// What is persisted (table `circuit_breaker`) and shown for one breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    /// The upstream the breaker guards.
    pub name: String,
    /// Current state.
    pub state: BreakerState,
    /// Consecutive failures counted so far.
    pub failure_count: u32,
    /// When the breaker last opened (wall clock), while it is open or half-open.
    pub opened_at: Option<DateTime<Utc>>,
    /// The last failure recorded.
    pub last_error: Option<String>,
}

/// How a request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed.
    Normal,
    /// The single half-open probe.
    Probe,
}

/// The pure circuit breaker state machine.
#[derive(Debug, Clone)]
pub struct BreakerCore {
    failure_threshold: u32,
    recovery_timeout: Duration,
    state: BreakerState,
    failure_count: u32,
    /// While open: when the half-open probe becomes allowed.
    open_until: Option<Instant>,
    opened_at: Option<DateTime<Utc>>,
    probe_in_flight: bool,
    last_error: Option<String>,
}

impl BreakerCore {
    /// A closed breaker opening after `failure_threshold` (at least 1) consecutive failures
    /// and probing again after `recovery_timeout`.
    pub fn new(failure_threshold: u32, recovery_timeout: Duration) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            recovery_timeout,
            state: BreakerState::Closed,
            failure_count: 0,
            open_until: None,
            opened_at: None,
            probe_in_flight: false,
            last_error: None,
        }
    }

    /// The current state (an open breaker whose timeout elapsed stays `Open` until a request
    /// asks for admission and becomes the probe).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Consecutive failures counted.
    pub fn failure_count(&self) -> u32 {
        self.failure_count
    }

    /// Asks to send a request. `Err` carries how long until a probe may be allowed.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Admission, Duration> {
        match self.state {
            BreakerState::Closed => Ok(Admission::Normal),
            BreakerState::Open => {
                let until = self.open_until.unwrap_or(now);
                if now >= until {
                    self.state = BreakerState::HalfOpen;
                    self.probe_in_flight = true;
                    Ok(Admission::Probe)
                } else {
                    Err(until.saturating_duration_since(now))
                }
            }
            BreakerState::HalfOpen => {
                if self.probe_in_flight {
                    // Another request is probing; its outcome decides soon.
                    Err(self.recovery_timeout.min(Duration::from_secs(1)))
                } else {
                    self.probe_in_flight = true;
                    Ok(Admission::Probe)
                }
            }
        }
    }

    /// Records a successful request admitted as `admission`.
    pub fn on_success(&mut self, admission: Admission) {
        match (admission, self.state) {
            (Admission::Probe, _) => {
                self.state = BreakerState::Closed;
                self.failure_count = 0;
                self.open_until = None;
                self.opened_at = None;
                self.probe_in_flight = false;
            }
            (Admission::Normal, BreakerState::Closed) => self.failure_count = 0,
            // A request admitted before the breaker opened came back late: the probe decides.
            (Admission::Normal, _) => {}
        }
    }

    /// Records a failed request admitted as `admission`.
    pub fn on_failure(
        &mut self,
        admission: Admission,
        error: String,
        now: Instant,
        wall: DateTime<Utc>,
    ) {
        self.last_error = Some(error);
        self.failure_count = self.failure_count.saturating_add(1);
        match (admission, self.state) {
            (Admission::Probe, _) => {
                self.probe_in_flight = false;
                self.open(now, wall);
            }
            (Admission::Normal, BreakerState::Closed) => {
                if self.failure_count >= self.failure_threshold {
                    self.open(now, wall);
                }
            }
            // Late failure of a request admitted before opening: the timer keeps running.
            (Admission::Normal, _) => {}
        }
    }

    /// Gives back an admission without an outcome (request abandoned, or the upstream only
    /// rate-limited us): a probe slot becomes free again.
    pub fn release(&mut self, admission: Admission) {
        if admission == Admission::Probe && self.state == BreakerState::HalfOpen {
            self.probe_in_flight = false;
        }
    }

    fn open(&mut self, now: Instant, wall: DateTime<Utc>) {
        self.state = BreakerState::Open;
        self.open_until = Some(now + self.recovery_timeout);
        self.opened_at = Some(wall);
    }

    /// The persistable view of this breaker.
    pub fn snapshot(&self, name: &str) -> BreakerSnapshot {
        BreakerSnapshot {
            name: name.to_owned(),
            state: self.state,
            failure_count: self.failure_count,
            opened_at: self.opened_at,
            last_error: self.last_error.clone(),
        }
    }

    /// Restores a persisted snapshot. An open breaker keeps the part of its recovery timeout
    /// not yet elapsed (wall clock `wall` vs `opened_at`); a half-open one comes back open
    /// with its probe due immediately (the probe in flight when it was saved is gone).
    pub fn restore(&mut self, snapshot: &BreakerSnapshot, now: Instant, wall: DateTime<Utc>) {
        self.failure_count = snapshot.failure_count;
        self.last_error = snapshot.last_error.clone();
        self.probe_in_flight = false;
        match snapshot.state {
            BreakerState::Closed => {
                self.state = BreakerState::Closed;
                self.open_until = None;
                self.opened_at = None;
            }
            BreakerState::Open => {
                let opened_at = snapshot.opened_at.unwrap_or(wall);
                let elapsed = (wall - opened_at).to_std().unwrap_or(Duration::ZERO);
                self.state = BreakerState::Open;
                self.open_until = Some(now + self.recovery_timeout.saturating_sub(elapsed));
                self.opened_at = Some(opened_at);
            }
            BreakerState::HalfOpen => {
                self.state = BreakerState::Open;
                self.open_until = Some(now);
                self.opened_at = Some(snapshot.opened_at.unwrap_or(wall));
            }
        }
    }
}

/// The shared circuit breaker of one upstream.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    core: Mutex<BreakerCore>,
    changes: watch::Sender<BreakerSnapshot>,
}

/// The current instant on tokio's clock (pausable in tests) as a std `Instant`.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl CircuitBreaker {
    /// A closed breaker for upstream `name` (see [`BreakerCore::new`]).
    pub fn new(
        name: impl Into<String>,
        failure_threshold: u32,
        recovery_timeout: Duration,
    ) -> Self {
        let name = name.into();
        let core = BreakerCore::new(failure_threshold, recovery_timeout);
        let (changes, _) = watch::channel(core.snapshot(&name));
        Metrics::global()
            .breaker_state
            .with_label_values(&[name.as_str()])
            .set(core.state().metric_value());
        Self {
            name,
            core: Mutex::new(core),
            changes,
        }
    }

    /// Runs `f` on the core; on a state change updates metrics, logs and notifies watchers.
    fn update<R>(&self, count_transition: bool, f: impl FnOnce(&mut BreakerCore) -> R) -> R {
        let mut core = self
            .core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = core.state();
        let result = f(&mut core);
        let after = core.state();
        if before != after || !count_transition {
            let snapshot = core.snapshot(&self.name);
            drop(core);
            let m = Metrics::global();
            m.breaker_state
                .with_label_values(&[self.name.as_str()])
                .set(after.metric_value());
            if before != after && count_transition {
                m.breaker_transitions
                    .with_label_values(&[self.name.as_str(), after.as_str()])
                    .inc();
                match after {
                    BreakerState::Open => tracing::warn!(
                        upstream = %self.name,
                        failures = snapshot.failure_count,
                        last_error = snapshot.last_error.as_deref().unwrap_or(""),
                        "circuit breaker opened"
                    ),
                    _ => {
                        tracing::info!(upstream = %self.name, from = %before, to = %after, "circuit breaker state changed")
                    }
                }
            }
            self.changes.send_replace(snapshot);
        }
        result
    }

    /// Asks to send a request: a permit to report the outcome on, or `Err(retry_in)` when
    /// the breaker is open (or half-open with its probe already in flight).
    pub fn try_acquire(&self) -> Result<BreakerPermit<'_>, Duration> {
        let admission = self.update(true, |core| core.try_acquire(now()))?;
        Ok(BreakerPermit {
            breaker: self,
            admission,
            settled: false,
        })
    }

    /// Records a failure outside a permit (e.g. a stream that broke after it was opened).
    pub fn record_failure(&self, error: impl fmt::Display) {
        let error = error.to_string();
        self.update(true, |core| {
            core.on_failure(Admission::Normal, error, now(), Utc::now())
        });
    }

    /// Records a success outside a permit.
    pub fn record_success(&self) {
        self.update(true, |core| core.on_success(Admission::Normal));
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.snapshot().state
    }

    /// The persistable view of the breaker now.
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snapshot(&self.name)
    }

    /// Restores a persisted snapshot (see [`BreakerCore::restore`]); the snapshot's name is
    /// ignored in favour of this breaker's. Watchers are notified; no transition is counted.
    pub fn restore(&self, snapshot: &BreakerSnapshot) {
        self.update(false, |core| core.restore(snapshot, now(), Utc::now()));
    }

    /// A receiver seeing a fresh snapshot after every state change (and restore).
    pub fn subscribe(&self) -> watch::Receiver<BreakerSnapshot> {
        self.changes.subscribe()
    }

    /// The upstream this breaker guards.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Admission of one request through a [`CircuitBreaker`]; report the outcome with
/// [`success`](Self::success) or [`failure`](Self::failure). Dropping it unreported (or
/// [`release`](Self::release)) records nothing and frees the half-open probe slot.
#[derive(Debug)]
#[must_use = "report the request's outcome on the permit"]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    admission: Admission,
    settled: bool,
}

impl BreakerPermit<'_> {
    /// Whether this request is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.admission == Admission::Probe
    }

    /// The request succeeded (the upstream answered properly).
    pub fn success(mut self) {
        self.settled = true;
        let admission = self.admission;
        self.breaker.update(true, |core| core.on_success(admission));
    }

    /// The request failed in a way that counts against the upstream.
    pub fn failure(mut self, error: impl fmt::Display) {
        self.settled = true;
        let admission = self.admission;
        let error = error.to_string();
        self.breaker.update(true, |core| {
            core.on_failure(admission, error, now(), Utc::now())
        });
    }

    /// No outcome to report (e.g. rate limited): frees the probe slot.
    pub fn release(self) {}
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let admission = self.admission;
            self.breaker.update(true, |core| core.release(admission));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fail(core: &mut BreakerCore, admission: Admission, now: Instant) {
        core.on_failure(admission, "boom".into(), now, Utc::now());
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = BreakerCore::new(3, ms(1000));
        for _ in 0..2 {
            assert_eq!(b.try_acquire(t0), Ok(Admission::Normal));
            fail(&mut b, Admission::Normal, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // A success resets the streak.
        b.on_success(Admission::Normal);
        assert_eq!(b.failure_count(), 0);
        for _ in 0..3 {
            fail(&mut b, Admission::Normal, t0);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire(t0 + ms(400)), Err(ms(600)));
        let snap = b.snapshot("x");
        assert_eq!(snap.failure_count, 3);
        assert!(snap.opened_at.is_some());
        assert_eq!(snap.last_error.as_deref(), Some("boom"));
    }

    #[test]
    fn half_open_allows_exactly_one_probe_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = BreakerCore::new(1, ms(100));
        fail(&mut b, Admission::Normal, t0);
        assert_eq!(b.state(), BreakerState::Open);
        let t1 = t0 + ms(100);
        assert_eq!(b.try_acquire(t1), Ok(Admission::Probe));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire(t1).is_err(), "second probe must wait");
        b.on_success(Admission::Probe);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.failure_count(), 0);
        assert_eq!(b.snapshot("x").opened_at, None);
        assert_eq!(b.try_acquire(t1), Ok(Admission::Normal));
    }

    #[test]
    fn failed_probe_reopens_with_a_fresh_timeout() {
        let t0 = Instant::now();
        let mut b = BreakerCore::new(1, ms(100));
        fail(&mut b, Admission::Normal, t0);
        let t1 = t0 + ms(150);
        assert_eq!(b.try_acquire(t1), Ok(Admission::Probe));
        fail(&mut b, Admission::Probe, t1);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire(t1 + ms(50)), Err(ms(50)));
        assert_eq!(b.try_acquire(t1 + ms(100)), Ok(Admission::Probe));
    }

    #[test]
    fn released_probe_frees_the_slot() {
        let t0 = Instant::now();
        let mut b = BreakerCore::new(1, ms(10));
        fail(&mut b, Admission::Normal, t0);
        let t1 = t0 + ms(10);
        assert_eq!(b.try_acquire(t1), Ok(Admission::Probe));
        b.release(Admission::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(t1), Ok(Admission::Probe));
    }

    #[test]
    fn late_outcomes_of_normal_requests_do_not_disturb_an_open_breaker() {
        let t0 = Instant::now();
        let mut b = BreakerCore::new(1, ms(100));
        fail(&mut b, Admission::Normal, t0);
        b.on_success(Admission::Normal);
        assert_eq!(b.state(), BreakerState::Open);
        fail(&mut b, Admission::Normal, t0 + ms(90));
        // The timer was not restarted by the late failure.
        assert_eq!(b.try_acquire(t0 + ms(100)), Ok(Admission::Probe));
    }

    #[test]
    fn restore_keeps_the_remaining_recovery_time() {
        let t0 = Instant::now();
        let wall = Utc::now();
        let mut b = BreakerCore::new(5, Duration::from_secs(60));
        let snap = BreakerSnapshot {
            name: "horizon".into(),
            state: BreakerState::Open,
            failure_count: 5,
            opened_at: Some(wall - chrono::Duration::seconds(45)),
            last_error: Some("HTTP 503".into()),
        };
        b.restore(&snap, t0, wall);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire(t0), Err(Duration::from_secs(15)));
        assert_eq!(
            b.try_acquire(t0 + Duration::from_secs(15)),
            Ok(Admission::Probe)
        );
        let restored = b.snapshot("horizon");
        assert_eq!(restored.failure_count, 5);
        assert_eq!(restored.last_error.as_deref(), Some("HTTP 503"));

        // Opened long ago: the probe is due at once. Half-open restores as probe-due.
        let mut b = BreakerCore::new(5, Duration::from_secs(60));
        let old = BreakerSnapshot {
            opened_at: Some(wall - chrono::Duration::hours(2)),
            ..snap.clone()
        };
        b.restore(&old, t0, wall);
        assert_eq!(b.try_acquire(t0), Ok(Admission::Probe));
        let mut b = BreakerCore::new(5, Duration::from_secs(60));
        b.restore(
            &BreakerSnapshot {
                state: BreakerState::HalfOpen,
                ..snap.clone()
            },
            t0,
            wall,
        );
        assert_eq!(b.try_acquire(t0), Ok(Admission::Probe));
        let mut b = BreakerCore::new(5, Duration::from_secs(60));
        b.restore(
            &BreakerSnapshot {
                state: BreakerState::Closed,
                failure_count: 4,
                opened_at: None,
                ..snap
            },
            t0,
            wall,
        );
        fail(&mut b, Admission::Normal, t0);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn state_names_round_trip() {
        for s in [
            BreakerState::Closed,
            BreakerState::HalfOpen,
            BreakerState::Open,
        ] {
            assert_eq!(s.as_str().parse::<BreakerState>(), Ok(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
        assert!("ajar".parse::<BreakerState>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn shared_breaker_notifies_watchers_and_updates_metrics() {
        let name = "test-breaker-shared";
        let breaker = CircuitBreaker::new(name, 2, ms(500));
        let mut rx = breaker.subscribe();
        let m = Metrics::global();
        let transitions = |to: &str| m.breaker_transitions.with_label_values(&[name, to]).get();
        let gauge = || m.breaker_state.with_label_values(&[name]).get();

        breaker.try_acquire().unwrap().failure("HTTP 500");
        assert!(!rx.has_changed().unwrap(), "no transition yet");
        breaker.try_acquire().unwrap().failure("HTTP 502");
        assert!(rx.has_changed().unwrap());
        let snap = rx.borrow_and_update().clone();
        assert_eq!(snap.state, BreakerState::Open);
        assert_eq!(snap.name, name);
        assert_eq!(snap.last_error.as_deref(), Some("HTTP 502"));
        assert_eq!(transitions("open"), 1);
        assert_eq!(gauge(), 2);

        let retry_in = breaker.try_acquire().unwrap_err();
        assert_eq!(retry_in, ms(500));
        tokio::time::advance(ms(500)).await;
        let probe = breaker.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert_eq!(gauge(), 1);
        assert_eq!(transitions("half_open"), 1);
        assert!(breaker.try_acquire().is_err(), "one probe at a time");
        drop(probe);
        // The abandoned probe freed the slot.
        let probe = breaker.try_acquire().unwrap();
        probe.success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(gauge(), 0);
        assert_eq!(transitions("closed"), 1);
        assert_eq!(rx.borrow_and_update().state, BreakerState::Closed);

        let persisted = BreakerSnapshot {
            name: "other".into(),
            state: BreakerState::Open,
            failure_count: 2,
            opened_at: Some(Utc::now()),
            last_error: Some("persisted".into()),
        };
        breaker.restore(&persisted);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.snapshot().name, name);
        assert_eq!(rx.borrow_and_update().state, BreakerState::Open);
        assert_eq!(gauge(), 2);
        assert_eq!(transitions("open"), 1, "restore is not a transition");
    }
}
