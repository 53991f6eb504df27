//! `/metrics` exposes every metric defined in `indexer/src/metrics.rs` once the server runs
//! with devnet sources, under the conventional names.

mod common;

use std::time::{Duration, Instant};

use common::{base_env, Server, TestDb};
use serde_json::json;

/// Metric names defined in the one metrics file.
fn defined_metrics() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/indexer/src/metrics.rs"
    ))
    .unwrap();
    let mut names: Vec<String> = text
        .split('"')
        .filter(|s| {
            s.starts_with("orrery_") && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Emitted only once their event happens (a trigger runs, a reorg is seen): checked by the
/// tests of those features, not here.
const ON_EVENT: &[&str] = &[
    "orrery_action_runs_total",
    "orrery_action_failures_total",
    "orrery_reorg_depth_blocks",
    "orrery_price_usd",
    "orrery_balance_reconciliation_mismatches",
    "orrery_rate_limit_remaining",
    "orrery_source_lag_seconds",
    // Only after a Redis outage, and only on PostgreSQL (leases).
    "orrery_bus_reconnects_total",
    "orrery_lease_changes_total",
];

#[tokio::test]
async fn every_defined_metric_is_exposed_with_conventional_names() {
    let names = defined_metrics();
    assert!(
        names.len() > 25,
        "metric names read from metrics.rs: {names:?}"
    );
    for n in &names {
        let conventional = n.ends_with("_total")
            || n.ends_with("_seconds")
            || n.ends_with("_height")
            || n.ends_with("_blocks")
            || n.ends_with("_open")
            || n.ends_with("_depth")
            || n.ends_with("_info")
            || n.ends_with("_connections")
            || n.ends_with("_status")
            || n.ends_with("_state")
            || n.ends_with("_remaining")
            || n.ends_with("_per_hour")
            || n.ends_with("_usd")
            || n.ends_with("_buffered")
            || n.ends_with("_mismatches");
        assert!(conventional, "{n} does not end in a unit or _total");
    }
    let db = TestDb::new().await;
    let server = Server::start_with_args(&base_env(&db), &["serve", "--devnet"]);
    // Exercise the API so request metrics exist.
    server.graphql("{ health { status } }", json!({})).await;
    let _ = server.get("/ready").await;
    let start = Instant::now();
    loop {
        let (_, text) = server.get("/metrics").await;
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !ON_EVENT.contains(&n.as_str()))
            .filter(|n| !text.lines().any(|l| l.starts_with(n.as_str())))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "metrics never exposed: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
