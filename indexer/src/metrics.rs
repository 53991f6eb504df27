//! Every Prometheus metric Orrery exports, defined in one place.
//!
//! Code elsewhere only increments or sets these; names, help texts and labels live here so
//! the whole surface can be read (and alert rules written) from one file. All metrics are
//! registered in one [`Registry`] returned by [`Metrics::global`]; `/metrics` encodes it.

use std::sync::OnceLock;

use prometheus::{
    exponential_buckets, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Latency buckets in seconds: 1 ms .. ~16 s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 15).unwrap_or_else(|_| vec![0.001, 0.01, 0.1, 1.0, 10.0])
}

/// The process-wide metric set.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,

    // --- HTTP and GraphQL -------------------------------------------------------------
    /// `orrery_http_requests_total{method,route,status}`.
    pub http_requests: IntCounterVec,
    /// `orrery_http_request_duration_seconds{method,route}`.
    pub http_duration: HistogramVec,
    /// `orrery_graphql_requests_total{operation,status}` (status: ok|error).
    pub graphql_requests: IntCounterVec,
    /// `orrery_graphql_request_duration_seconds{operation}`.
    pub graphql_duration: HistogramVec,
    /// `orrery_graphql_response_cache_total{result}` (result: hit|miss): single HTTP
    /// requests looked up in the response cache.
    pub graphql_response_cache: IntCounterVec,
    /// `orrery_subscriptions_open`: GraphQL subscriptions currently open.
    pub subscriptions_open: IntGauge,
    /// `orrery_subscription_delivery_seconds`: from an event's commit (its bus timestamp)
    /// to its subscription frame being written to the socket, one sample per frame.
    pub subscription_delivery: Histogram,
    /// `orrery_subscription_slow_closes_total`: subscription sockets closed because the
    /// client did not read its frames.
    pub subscription_slow_closes: IntCounter,
    /// `orrery_auth_failures_total{reason}`: rejected tokens and throttled clients.
    pub auth_failures: IntCounterVec,

    // --- Sources and sync -------------------------------------------------------------
    /// `orrery_indexed_items_total{source,kind}`: rows committed by the sync engine.
    pub indexed_items: IntCounterVec,
    /// `orrery_source_head_height{source}`: the upstream's head (ledger/block).
    pub head_height: IntGaugeVec,
    /// `orrery_source_indexed_height{source}`: the last height committed.
    pub indexed_height: IntGaugeVec,
    /// `orrery_source_lag_blocks{source}`: head minus indexed height.
    pub lag_blocks: IntGaugeVec,
    /// `orrery_source_lag_seconds{source}`: age of the newest indexed item.
    pub lag_seconds: GaugeVec,
    /// `orrery_source_errors_total{source}`: failed sync iterations.
    pub source_errors: IntCounterVec,
    /// `orrery_source_restarts_total{source,reason}`: supervisor restarts (stall, panic).
    pub source_restarts: IntCounterVec,
    /// `orrery_reorgs_total{source}`: chain reorganisations handled.
    pub reorgs: IntCounterVec,
    /// `orrery_quarantined_total{source}`: upstream records quarantined (a permanent data
    /// error on one record; the source moved on).
    pub quarantined: IntCounterVec,
    /// `orrery_reorg_depth_blocks{source}`: depth of the last reorg.
    pub reorg_depth: IntGaugeVec,
    /// `orrery_balance_reconciliation_mismatches{source}`: balances that disagree with upstream.
    pub reconciliation_mismatches: IntGaugeVec,

    // --- Upstream client --------------------------------------------------------------
    /// `orrery_upstream_requests_total{upstream,status}` (status: HTTP code, `timeout`, `error`).
    pub upstream_requests: IntCounterVec,
    /// `orrery_upstream_request_duration_seconds{upstream}`.
    pub upstream_duration: HistogramVec,
    /// `orrery_upstream_retries_total{upstream}`.
    pub upstream_retries: IntCounterVec,
    /// `orrery_rate_limit_waits_total{upstream}`: requests that had to wait for a token.
    pub rate_limit_waits: IntCounterVec,
    /// `orrery_rate_limit_wait_seconds_total{upstream}`: time spent waiting for tokens.
    pub rate_limit_wait_seconds: GaugeVec,
    /// `orrery_rate_limit_remaining{upstream}`: tokens left in the budget.
    pub rate_limit_remaining: GaugeVec,
    /// `orrery_rate_limit_budget_per_hour{upstream}`: the local hourly budget in force
    /// (0 = none; changes at run time with `stellar.rate_limit`).
    pub rate_limit_budget: GaugeVec,
    /// `orrery_circuit_breaker_state{name}`: 0 closed, 1 half-open, 2 open.
    pub breaker_state: IntGaugeVec,
    /// `orrery_circuit_breaker_transitions_total{name,to}`.
    pub breaker_transitions: IntCounterVec,

    // --- Bus, queue, database ---------------------------------------------------------
    /// `orrery_bus_events_published_total{topic}`.
    pub bus_published: IntCounterVec,
    /// `orrery_bus_publish_failures_total{topic}`.
    pub bus_publish_failures: IntCounterVec,
    /// `orrery_bus_reconnects_total{bus}`: the bus subscription was lost and restored
    /// (subscribers were told they may have missed events).
    pub bus_reconnects: IntCounterVec,
    /// `orrery_lease_changes_total{source,event}`: leases this replica `acquired`, `lost`
    /// or handed back (`released`) on a shared PostgreSQL database.
    pub lease_changes: IntCounterVec,
    /// `orrery_action_queue_depth`: queued trigger actions not yet run.
    pub action_queue_depth: IntGauge,
    /// `orrery_action_runs_total{trigger,status}`.
    pub action_runs: IntCounterVec,
    /// `orrery_action_failures_total{trigger}`.
    pub action_failures: IntCounterVec,
    /// `orrery_db_pool_connections{state}` (state: in_use|idle|max).
    pub db_pool: IntGaugeVec,
    /// `orrery_health_status{component}`: 0 healthy, 1 degraded, 2 unhealthy.
    pub health_status: IntGaugeVec,
    /// `orrery_build_info{version}`: always 1.
    pub build_info: GaugeVec,
    /// `orrery_price_usd{pair,source}`: the latest stored price.
    pub price: GaugeVec,
    /// `orrery_price_write_buffered`: computed prices held in memory awaiting a DB write.
    pub price_write_buffered: Gauge,
    /// `orrery_runtime_setting_info{key,value}`: always 1; `value` is what this process
    /// applies for a runtime setting of the `config` table (`sync.batch_size`,
    /// `stellar.rate_limit`, `sync.stall_timeout` in seconds).
    pub runtime_setting: GaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    metric
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let metric = GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let metric = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(latency_buckets()),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    metric
}

impl Metrics {
    /// Builds and registers every metric in a fresh registry.
    ///
    /// Panics only on a programming error (a malformed or duplicate definition in this file),
    /// which the unit test below catches.
    pub fn new() -> Self {
        let r = Registry::new();
        let single = |name: &str, help: &str| {
            let g = IntGauge::new(name, help)
                .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
            r.register(Box::new(g.clone()))
                .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
            g
        };
        let subscriptions_open = single(
            "orrery_subscriptions_open",
            "GraphQL subscriptions currently open.",
        );
        let action_queue_depth = single(
            "orrery_action_queue_depth",
            "Queued trigger actions not yet run.",
        );
        let price_write_buffered = Gauge::new(
            "orrery_price_write_buffered",
            "Computed prices held in memory awaiting a database write.",
        )
        .unwrap_or_else(|e| panic!("metric orrery_price_write_buffered is malformed: {e}"));
        r.register(Box::new(price_write_buffered.clone()))
            .unwrap_or_else(|e| panic!("metric orrery_price_write_buffered registered twice: {e}"));

        // Delivery targets are tens of milliseconds: fine buckets there.
        let delivery_buckets = vec![
            0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
            0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0,
        ];
        let subscription_delivery = Histogram::with_opts(
            HistogramOpts::new(
                "orrery_subscription_delivery_seconds",
                "Time from an event's commit to its subscription frame being written to the socket.",
            )
            .buckets(delivery_buckets),
        )
        .unwrap_or_else(|e| panic!("metric orrery_subscription_delivery_seconds is malformed: {e}"));
        r.register(Box::new(subscription_delivery.clone()))
            .unwrap_or_else(|e| {
                panic!("metric orrery_subscription_delivery_seconds registered twice: {e}")
            });
        let subscription_slow_closes = IntCounter::new(
            "orrery_subscription_slow_closes_total",
            "Subscription sockets closed because the client did not read its frames.",
        )
        .unwrap_or_else(|e| {
            panic!("metric orrery_subscription_slow_closes_total is malformed: {e}")
        });
        r.register(Box::new(subscription_slow_closes.clone()))
            .unwrap_or_else(|e| {
                panic!("metric orrery_subscription_slow_closes_total registered twice: {e}")
            });

        let m = Metrics {
            http_requests: counter(
                &r,
                "orrery_http_requests_total",
                "HTTP requests served.",
                &["method", "route", "status"],
            ),
            http_duration: histogram(
                &r,
                "orrery_http_request_duration_seconds",
                "HTTP request latency.",
                &["method", "route"],
            ),
            graphql_requests: counter(
                &r,
                "orrery_graphql_requests_total",
                "GraphQL operations executed.",
                &["operation", "status"],
            ),
            graphql_response_cache: counter(
                &r,
                "orrery_graphql_response_cache_total",
                "Single GraphQL HTTP requests looked up in the response cache, by result.",
                &["result"],
            ),
            graphql_duration: histogram(
                &r,
                "orrery_graphql_request_duration_seconds",
                "GraphQL operation latency.",
                &["operation"],
            ),
            subscriptions_open,
            subscription_delivery,
            subscription_slow_closes,
            auth_failures: counter(
                &r,
                "orrery_auth_failures_total",
                "Rejected authentication attempts.",
                &["reason"],
            ),
            indexed_items: counter(
                &r,
                "orrery_indexed_items_total",
                "Items committed by the sync engine.",
                &["source", "kind"],
            ),
            head_height: int_gauge(
                &r,
                "orrery_source_head_height",
                "Upstream head height (ledger or block).",
                &["source"],
            ),
            indexed_height: int_gauge(
                &r,
                "orrery_source_indexed_height",
                "Last committed height.",
                &["source"],
            ),
            lag_blocks: int_gauge(
                &r,
                "orrery_source_lag_blocks",
                "Head height minus indexed height.",
                &["source"],
            ),
            lag_seconds: gauge(
                &r,
                "orrery_source_lag_seconds",
                "Age in seconds of the newest indexed item.",
                &["source"],
            ),
            source_errors: counter(
                &r,
                "orrery_source_errors_total",
                "Failed sync iterations.",
                &["source"],
            ),
            source_restarts: counter(
                &r,
                "orrery_source_restarts_total",
                "Source tasks restarted by the supervisor.",
                &["source", "reason"],
            ),
            reorgs: counter(
                &r,
                "orrery_reorgs_total",
                "Chain reorganisations handled.",
                &["source"],
            ),
            quarantined: counter(
                &r,
                "orrery_quarantined_total",
                "Upstream records quarantined (a permanent data error on one record).",
                &["source"],
            ),
            reorg_depth: int_gauge(
                &r,
                "orrery_reorg_depth_blocks",
                "Depth of the last reorganisation.",
                &["source"],
            ),
            reconciliation_mismatches: int_gauge(
                &r,
                "orrery_balance_reconciliation_mismatches",
                "Balances that disagree with the upstream's account records.",
                &["source"],
            ),
            upstream_requests: counter(
                &r,
                "orrery_upstream_requests_total",
                "Requests sent to upstreams, by outcome.",
                &["upstream", "status"],
            ),
            upstream_duration: histogram(
                &r,
                "orrery_upstream_request_duration_seconds",
                "Upstream request latency.",
                &["upstream"],
            ),
            upstream_retries: counter(
                &r,
                "orrery_upstream_retries_total",
                "Upstream requests retried.",
                &["upstream"],
            ),
            rate_limit_waits: counter(
                &r,
                "orrery_rate_limit_waits_total",
                "Requests that waited for a rate-limit token.",
                &["upstream"],
            ),
            rate_limit_wait_seconds: gauge(
                &r,
                "orrery_rate_limit_wait_seconds_total",
                "Seconds spent waiting for rate-limit tokens.",
                &["upstream"],
            ),
            rate_limit_remaining: gauge(
                &r,
                "orrery_rate_limit_remaining",
                "Rate-limit tokens left in the current budget.",
                &["upstream"],
            ),
            rate_limit_budget: gauge(
                &r,
                "orrery_rate_limit_budget_per_hour",
                "Local hourly rate-limit budget in force (0 = none).",
                &["upstream"],
            ),
            breaker_state: int_gauge(
                &r,
                "orrery_circuit_breaker_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                &["name"],
            ),
            breaker_transitions: counter(
                &r,
                "orrery_circuit_breaker_transitions_total",
                "Circuit breaker state changes.",
                &["name", "to"],
            ),
            bus_published: counter(
                &r,
                "orrery_bus_events_published_total",
                "Events published on the event bus.",
                &["topic"],
            ),
            bus_publish_failures: counter(
                &r,
                "orrery_bus_publish_failures_total",
                "Event bus publish failures.",
                &["topic"],
            ),
            bus_reconnects: counter(
                &r,
                "orrery_bus_reconnects_total",
                "Event bus subscriptions lost and restored.",
                &["bus"],
            ),
            lease_changes: counter(
                &r,
                "orrery_lease_changes_total",
                "Source leases acquired, lost or released by this replica.",
                &["source", "event"],
            ),
            action_queue_depth,
            action_runs: counter(
                &r,
                "orrery_action_runs_total",
                "Trigger action executions by outcome.",
                &["trigger", "status"],
            ),
            action_failures: counter(
                &r,
                "orrery_action_failures_total",
                "Failed trigger action executions.",
                &["trigger"],
            ),
            db_pool: int_gauge(
                &r,
                "orrery_db_pool_connections",
                "Database pool connections by state (in_use, idle, max).",
                &["state"],
            ),
            health_status: int_gauge(
                &r,
                "orrery_health_status",
                "Component health: 0 healthy, 1 degraded, 2 unhealthy.",
                &["component"],
            ),
            build_info: gauge(
                &r,
                "orrery_build_info",
                "Build information; always 1.",
                &["version"],
            ),
            price: gauge(
                &r,
                "orrery_price_usd",
                "Latest stored price.",
                &["pair", "source"],
            ),
            price_write_buffered,
            runtime_setting: gauge(
                &r,
                "orrery_runtime_setting_info",
                "Always 1; value is what this process applies for a runtime setting of the config table (durations in seconds).",
                &["key", "value"],
            ),
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        m
    }

    /// The process-wide instance.
    pub fn global() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(Metrics::new)
    }

    /// Creates the zero-valued series of a source, so dashboards and alerts see 0, not absence.
    pub fn touch_source(&self, source: &str) {
        self.source_errors.with_label_values(&[source]);
        self.reorgs.with_label_values(&[source]);
        self.quarantined.with_label_values(&[source]);
        for reason in ["panic", "stall"] {
            self.source_restarts.with_label_values(&[source, reason]);
        }
    }

    /// Creates the zero-valued series of an upstream client.
    pub fn touch_upstream(&self, upstream: &str) {
        self.upstream_retries.with_label_values(&[upstream]);
        self.rate_limit_waits.with_label_values(&[upstream]);
        self.rate_limit_wait_seconds.with_label_values(&[upstream]);
        for to in ["open", "half_open", "closed"] {
            self.breaker_transitions.with_label_values(&[upstream, to]);
        }
    }

    /// Creates the zero-valued series of the API side (auth failures, bus topics).
    pub fn touch_api(&self, topics: &[&str]) {
        for reason in ["invalid", "malformed", "not_configured", "throttled"] {
            self.auth_failures.with_label_values(&[reason]);
        }
        for topic in topics {
            self.bus_published.with_label_values(&[topic]);
            self.bus_publish_failures.with_label_values(&[topic]);
        }
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_encodes() {
        let m = Metrics::new();
        m.http_requests
            .with_label_values(&["GET", "/health", "200"])
            .inc();
        m.breaker_state.with_label_values(&["horizon"]).set(2);
        let text = m.encode();
        assert!(text.contains(
            "orrery_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1"
        ));
        assert!(text.contains("orrery_circuit_breaker_state{name=\"horizon\"} 2"));
        assert!(text.contains("orrery_build_info"));
    }
}
