//! Runtime settings take effect without a restart: `setConfig` on `sync.batch_size`,
//! `stellar.rate_limit` and `sync.stall_timeout` against a real server following a devnet
//! Horizon, observed in the devnet's request log, the server's metrics and its request pace.

mod common;

use std::time::{Duration, Instant};

use common::{base_env, Server, TestDb};
use orrery_api::auth::Role;
use orrery_devnet::stellar::request_log::limit_of;
use orrery_devnet::{Devnet, DevnetConfig};
use serde_json::{json, Value};

const SECRET: &str = "settings-test-secret-0123456789";
/// The file's page size and budget: what applies while the seeded rows are untouched.
const FILE_PAGE_SIZE: u32 = 50;
const FILE_BUDGET: u32 = 10_000_000;

fn operator_token() -> String {
    common::tokens::signed(SECRET, Role::Operator, "settings-operator", 600)
}

fn env_for(db: &TestDb, horizon: &str) -> Vec<(String, String)> {
    let path = common::config_file(
        "orrery_settings",
        &format!(
            "[stellar]\nhorizon_url = \"{horizon}\"\nassets = [\"UBEC\"]\n\
             page_size = {FILE_PAGE_SIZE}\nrequests_per_hour = {FILE_BUDGET}\n\
             poll_interval_ms = 100\nstream = false\nreconcile = false\n"
        ),
    );
    let mut env = base_env(db);
    env.push(("ORRERY_CONFIG".into(), path.display().to_string()));
    env.push(("JWT_SECRET".into(), SECRET.into()));
    env
}

async fn set_config(server: &Server, key: &str, value: &str) {
    let resp = server
        .graphql_with_headers(
            "mutation($k: String!, $v: String!) { setConfig(key: $k, value: $v) { value } }",
            json!({"k": key, "v": value}),
            &[("authorization", format!("Bearer {}", operator_token()))],
        )
        .await;
    assert!(resp["errors"].is_null(), "setConfig {key}: {resp}");
}

/// The value of the first `/metrics` line starting with `series`.
async fn metric(server: &Server, series: &str) -> Option<f64> {
    let (_, text) = server.get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `limit`.
async fn wait_until<F, Fut>(server: &Server, what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > limit {
            panic!("{what} within {limit:?}\n{}", server.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Page limits of the `/operations?cursor=` polls among `requests`.
fn poll_limits(requests: &[String]) -> Vec<u32> {
    requests
        .iter()
        .filter(|r| r.starts_with("/operations?cursor="))
        .filter_map(|r| limit_of(r))
        .collect()
}

#[tokio::test]
async fn runtime_settings_change_a_running_server() {
    let mut c = DevnetConfig::default();
    c.stellar.accounts = 8;
    c.stellar.initial_operations = 40;
    c.evm_chains.clear();
    let devnet = Devnet::start(c).await.unwrap();
    let control = devnet.control();
    let db = TestDb::new().await;
    let server = Server::start(&env_for(&db, &devnet.urls().horizon));
    let budget = "orrery_rate_limit_budget_per_hour{upstream=\"horizon\"}";
    // References the polled futures take by value (`async move`).
    let (ctl, srv) = (&control, &server);

    // Seeded rows say 200 per page and 3000/h; the file's values apply until an operator
    // sets the rows.
    wait_until(
        &server,
        "live polls at the file's page size",
        Duration::from_secs(20),
        || async move { poll_limits(&ctl.horizon_requests()).contains(&FILE_PAGE_SIZE) },
    )
    .await;
    assert!(poll_limits(&control.horizon_requests())
        .iter()
        .all(|l| *l == FILE_PAGE_SIZE));
    assert_eq!(metric(&server, budget).await, Some(f64::from(FILE_BUDGET)));

    // sync.batch_size: the next polls ask for 37 records.
    set_config(&server, "sync.batch_size", "37").await;
    wait_until(
        &server,
        "polls with limit=37",
        Duration::from_secs(5),
        || async move { poll_limits(&ctl.horizon_requests()).last() == Some(&37) },
    )
    .await;

    // stellar.rate_limit: 1 per hour leaves only the burst; Horizon stops hearing from us.
    set_config(&server, "stellar.rate_limit", "1").await;
    wait_until(
        &server,
        "the budget metric at 1/h",
        Duration::from_secs(5),
        || async move { metric(srv, budget).await == Some(1.0) },
    )
    .await;
    // The burst (10 tokens) drains within a couple of 100 ms polls.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = control.horizon_requests().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = control.horizon_requests().len() - before;
    assert!(
        during <= 1,
        "{during} Horizon requests in 1.5 s at a budget of 1/h"
    );
    // Raised again: the waiting request goes out at once instead of in an hour.
    set_config(&server, "stellar.rate_limit", "1000000").await;
    wait_until(
        &server,
        "polling to resume",
        Duration::from_secs(5),
        || async move { ctl.horizon_requests().len() > before + during + 5 },
    )
    .await;
    assert_eq!(metric(&server, budget).await, Some(1_000_000.0));

    // sync.stall_timeout: the engine reads it from the handle; here the handle's value is
    // observed through its metric (the engine's use of it is the engine's tests' business).
    let stall = "orrery_runtime_setting_info{key=\"sync.stall_timeout\",value=\"90\"}";
    assert_eq!(metric(&server, stall).await, None);
    set_config(&server, "sync.stall_timeout", "90s").await;
    wait_until(
        &server,
        "the stall timeout metric at 90 s",
        Duration::from_secs(5),
        || async move { metric(srv, stall).await == Some(1.0) },
    )
    .await;
    let batch = "orrery_runtime_setting_info{key=\"sync.batch_size\",value=\"37\"}";
    assert_eq!(metric(&server, batch).await, Some(1.0));

    // A value that makes no sense is refused by the handle: the one in force stays.
    set_config(&server, "sync.batch_size", "0").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(poll_limits(&control.horizon_requests()).last(), Some(&37));
    assert!(
        server.logs().contains("runtime setting not applied"),
        "{}",
        server.logs()
    );
    let _: Value = server.graphql("{ health { status } }", json!({})).await;
    devnet.shutdown().await;
}
