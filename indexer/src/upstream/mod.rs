//! The shared upstream HTTP client: every source reaches its chain through an
//! [`UpstreamClient`], which applies a token-bucket rate limit (budget plus the server's
//! `X-Ratelimit-*` / `Retry-After` signals), a circuit breaker, retries with exponential
//! backoff and full jitter, failover between base URLs and a per-request timeout, and
//! records each decision in the `orrery_upstream_*`, `orrery_rate_limit_*` and
//! `orrery_circuit_breaker_*` metrics.
//!
//! The policies are pure modules with injected time: [`rate_limit::TokenBucket`],
//! [`breaker::BreakerCore`], [`crate::backoff::Backoff`] (shared with the sync engine and the
//! trigger workers).

/// Re-exported from [`crate::backoff`], where the one retry schedule of the crate lives.
pub use crate::backoff;
pub mod breaker;
pub mod client;
pub mod rate_limit;

#[cfg(test)]
mod tests;

pub use backoff::Backoff;
pub use breaker::{BreakerPermit, BreakerSnapshot, BreakerState, CircuitBreaker};
pub use client::{UpstreamClient, UpstreamConfig, UpstreamError};
pub use rate_limit::{RateLimiter, TokenBucket};

static REPLICA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process in the `User-Agent` of every upstream client built afterwards
/// (`orrery/VERSION (replica ID)`), so an upstream operator can tell replicas apart. Only
/// the first call counts.
pub fn set_replica(id: &str) {
    let _ = REPLICA.set(id.to_string());
}

/// The `User-Agent` upstream clients send.
pub fn user_agent() -> String {
    let base = concat!("orrery/", env!("CARGO_PKG_VERSION"));
    match REPLICA.get() {
        Some(id) => format!("{base} (replica {id})"),
        None => base.to_string(),
    }
}
