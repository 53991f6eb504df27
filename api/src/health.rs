//! Component health: each check returns a typed status with a message under a timeout, and
//! the overall status follows the UBEC seed's rule (all healthy -> healthy; any unhealthy ->
//! unhealthy; otherwise degraded).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use orrery_entity::{circuit_breaker, source};
use orrery_indexer::config_store;
use orrery_indexer::metrics::Metrics;
use sea_orm::{ConnectionTrait, EntityTrait};
use serde::Serialize;

use crate::state::AppState;

/// How long one component check may take before it counts as unhealthy.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the background task re-checks every component for [`HealthSnapshot`].
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// A component's (or the whole system's) health.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working as expected.
    Healthy,
    /// Working, but something needs attention (lagging, paused, optional part down).
    Degraded,
    /// Not working.
    Unhealthy,
}

impl HealthStatus {
    /// The HTTP status a health endpoint answers with.
    pub fn http_status(self) -> axum::http::StatusCode {
        match self {
            HealthStatus::Healthy | HealthStatus::Degraded => axum::http::StatusCode::OK,
            HealthStatus::Unhealthy => axum::http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Value of the `orrery_health_status` gauge.
    pub fn gauge(self) -> i64 {
        self as i64
    }

    /// Exit code of `orrery health`: 0 healthy, 1 degraded, 2 unhealthy.
    pub fn exit_code(self) -> i32 {
        self as i32
    }
}

/// One component's health.
#[derive(SimpleObject, Clone, Debug, Serialize)]
pub struct ComponentHealth {
    /// Component name: `database`, `bus`, or `source:<id>`.
    pub name: String,
    /// Its status.
    pub status: HealthStatus,
    /// What was found.
    pub message: String,
    /// How long the check took, in milliseconds.
    pub latency_ms: u64,
}

/// Counts by status.
#[derive(SimpleObject, Clone, Debug, Serialize, Default)]
pub struct HealthSummary {
    /// Components checked.
    pub total: u32,
    /// Healthy components.
    pub healthy: u32,
    /// Degraded components.
    pub degraded: u32,
    /// Unhealthy components.
    pub unhealthy: u32,
}

/// The whole report.
#[derive(SimpleObject, Clone, Debug, Serialize)]
pub struct HealthReport {
    /// Overall status.
    pub status: HealthStatus,
    /// When the checks ran.
    pub timestamp: DateTime<Utc>,
    /// Server version.
    pub version: String,
    /// Seconds since the process started.
    pub uptime_seconds: u64,
    /// Per-component results.
    pub components: Vec<ComponentHealth>,
    /// Counts by status.
    pub summary: HealthSummary,
}

impl HealthReport {
    /// Builds a report from component results.
    pub fn from_components(components: Vec<ComponentHealth>, uptime_seconds: u64) -> Self {
        let mut summary = HealthSummary::default();
        for c in &components {
            summary.total += 1;
            match c.status {
                HealthStatus::Healthy => summary.healthy += 1,
                HealthStatus::Degraded => summary.degraded += 1,
                HealthStatus::Unhealthy => summary.unhealthy += 1,
            }
        }
        let status = if summary.unhealthy > 0 {
            HealthStatus::Unhealthy
        } else if summary.degraded > 0 {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        Self {
            status,
            timestamp: Utc::now(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds,
            components,
            summary,
        }
    }

    /// The named component, if checked.
    pub fn component(&self, name: &str) -> Option<&ComponentHealth> {
        self.components.iter().find(|c| c.name == name)
    }
}

async fn timed<F, Fut>(name: &str, check: F) -> ComponentHealth
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = (HealthStatus, String)>,
{
    let start = Instant::now();
    let (status, message) = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
        Ok(r) => r,
        Err(_) => (
            HealthStatus::Unhealthy,
            format!("check timed out after {}s", CHECK_TIMEOUT.as_secs()),
        ),
    };
    ComponentHealth {
        name: name.to_string(),
        status,
        message,
        latency_ms: start.elapsed().as_millis() as u64,
    }
}

/// Checks the database with a round trip.
pub async fn check_database(state: &AppState) -> ComponentHealth {
    timed("database", || async {
        match state.db.execute_unprepared("SELECT 1").await {
            Ok(_) => (
                HealthStatus::Healthy,
                format!("{:?} reachable", state.db.get_database_backend()),
            ),
            Err(e) => (HealthStatus::Unhealthy, format!("unreachable: {e}")),
        }
    })
    .await
}

/// Checks the event bus. Redis down degrades the service (queries still work; live
/// subscriptions across replicas do not).
pub async fn check_bus(state: &AppState) -> ComponentHealth {
    let kind = state.bus.kind();
    timed("bus", || async {
        match state.bus.ping().await {
            Ok(()) => (HealthStatus::Healthy, format!("{kind} bus reachable")),
            Err(e) => (HealthStatus::Unhealthy, format!("{kind} bus: {e}")),
        }
    })
    .await
}

/// One entry per indexer source, from its stored sync state.
pub async fn check_sources(state: &AppState) -> Vec<ComponentHealth> {
    let start = Instant::now();
    let rows =
        match tokio::time::timeout(CHECK_TIMEOUT, source::Entity::find().all(&state.db)).await {
            Ok(Ok(rows)) => rows,
            // The database component already reports the failure.
            _ => return Vec::new(),
        };
    let lag_threshold = match config_store::get(&state.db, "alerts.sync_lag_blocks").await {
        Ok(Some(e)) => e.value.parse::<i64>().unwrap_or(100),
        _ => 100,
    };
    rows.into_iter()
        .map(|s| {
            let lag = match (s.head_height, s.indexed_height) {
                (Some(h), Some(i)) => Some((h - i).max(0)),
                _ => None,
            };
            let (status, message) = if s.status == "error" {
                (
                    HealthStatus::Unhealthy,
                    format!("error: {}", s.last_error.clone().unwrap_or_default()),
                )
            } else if s.paused {
                (HealthStatus::Degraded, "paused by an operator".to_string())
            } else if lag.is_some_and(|l| l > lag_threshold) {
                (
                    HealthStatus::Degraded,
                    format!(
                        "lagging {} behind head (threshold {lag_threshold})",
                        lag.unwrap_or(0)
                    ),
                )
            } else {
                (
                    HealthStatus::Healthy,
                    format!(
                        "{} at height {}",
                        s.status,
                        s.indexed_height.map_or("-".into(), |h| h.to_string())
                    ),
                )
            };
            ComponentHealth {
                name: format!("source:{}", s.id),
                status,
                message,
                latency_ms: start.elapsed().as_millis() as u64,
            }
        })
        .collect()
}

/// One entry per upstream, from its persisted circuit breaker: open is unhealthy, half-open
/// (probing) degraded.
pub async fn check_upstreams(state: &AppState) -> Vec<ComponentHealth> {
    let start = Instant::now();
    let rows = match tokio::time::timeout(
        CHECK_TIMEOUT,
        circuit_breaker::Entity::find().all(&state.db),
    )
    .await
    {
        Ok(Ok(rows)) => rows,
        _ => return Vec::new(),
    };
    rows.into_iter()
        .map(|b| {
            let (status, message) = match b.state.as_str() {
                "open" => (
                    HealthStatus::Unhealthy,
                    format!(
                        "circuit open after {} failures: {}",
                        b.failure_count,
                        b.last_error.clone().unwrap_or_default()
                    ),
                ),
                "half_open" => (
                    HealthStatus::Degraded,
                    "circuit half-open: probing".to_string(),
                ),
                _ => (HealthStatus::Healthy, "circuit closed".to_string()),
            };
            ComponentHealth {
                name: format!("upstream:{}", b.name),
                status,
                message,
                latency_ms: start.elapsed().as_millis() as u64,
            }
        })
        .collect()
}

/// The last periodic health report: GraphQL `health` and `/api/v1/health` read it instead
/// of probing every component per request (a request costs a clone, not five queries).
#[derive(Clone)]
pub struct HealthSnapshot(Arc<RwLock<Arc<HealthReport>>>);

impl HealthSnapshot {
    /// A snapshot that says no check has run yet (replaced before the server listens, see
    /// [`HealthSnapshot::refresh`]).
    pub fn pending() -> Self {
        let report = HealthReport::from_components(
            vec![ComponentHealth {
                name: "health".to_string(),
                status: HealthStatus::Unhealthy,
                message: "no health check has run yet".to_string(),
                latency_ms: 0,
            }],
            0,
        );
        Self(Arc::new(RwLock::new(Arc::new(report))))
    }

    /// The last report.
    pub fn latest(&self) -> Arc<HealthReport> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs every check now and stores the report.
    pub async fn refresh(&self, state: &AppState) -> Arc<HealthReport> {
        let report = Arc::new(check_all(state).await);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = report.clone();
        report
    }

    /// Refreshes `state.health` every [`REFRESH_INTERVAL`] (after the previous check ended)
    /// for as long as the process runs.
    pub fn spawn_refresher(state: AppState) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_INTERVAL).await;
                state.health.refresh(&state).await;
            }
        })
    }
}

/// Runs every check concurrently and records the results in metrics.
pub async fn check_all(state: &AppState) -> HealthReport {
    let (db, bus, sources, upstreams) = tokio::join!(
        check_database(state),
        check_bus(state),
        check_sources(state),
        check_upstreams(state)
    );
    let mut components = vec![db, bus];
    components.extend(sources);
    components.extend(upstreams);
    let metrics = Metrics::global();
    for c in &components {
        metrics
            .health_status
            .with_label_values(&[&c.name])
            .set(c.status.gauge());
    }
    HealthReport::from_components(components, state.started_at.elapsed().as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, status: HealthStatus) -> ComponentHealth {
        ComponentHealth {
            name: name.into(),
            status,
            message: String::new(),
            latency_ms: 0,
        }
    }

    #[test]
    fn overall_status_follows_the_seed_rule() {
        let r = HealthReport::from_components(vec![c("a", HealthStatus::Healthy)], 0);
        assert_eq!(r.status, HealthStatus::Healthy);
        let r = HealthReport::from_components(
            vec![
                c("a", HealthStatus::Healthy),
                c("b", HealthStatus::Degraded),
            ],
            0,
        );
        assert_eq!(r.status, HealthStatus::Degraded);
        let r = HealthReport::from_components(
            vec![
                c("a", HealthStatus::Degraded),
                c("b", HealthStatus::Unhealthy),
            ],
            0,
        );
        assert_eq!(r.status, HealthStatus::Unhealthy);
        assert_eq!(r.summary.total, 2);
        assert_eq!(r.summary.unhealthy, 1);
        assert_eq!(r.summary.degraded, 1);
    }
}
