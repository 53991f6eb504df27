//! Stellar RPC backfill benchmark (issue 11): a devnet ledger whose Stellar RPC serves about
//! N SAC token events (fees, refunds, transfers, mints); measures, in the same run, how long
//! one client takes to read every event with `getEvents` (10,000 per page: devnet's own
//! serving rate, the limit) and how long `orrery serve` (this build) takes from process
//! start until the `stellar:rpc` source has applied every event into balances and history.
//! Prints a Markdown table and writes it to `$CARGO_TARGET_DIR/bench-stellar-rpc-backfill.md`.
//!
//! ```sh
//! cargo bench --bench stellar_rpc_backfill                    # SQLite, 1M events
//! ORRERY_BENCH_SIZES=100000 cargo bench --bench stellar_rpc_backfill
//! ORRERY_TEST_PG_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres \
//!   ORRERY_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench stellar_rpc_backfill
//! ```
//! `ORRERY_BENCH_BATCH_EVENTS=N` sets `stellar.rpc_batch_events` (events per committed
//! batch; default the server's). `ORRERY_BENCH_CLASSIC_EVENTS=false` runs the fallback feed
//! instead (a node without classic events: balances from ledger entry changes read with
//! `getTransactions`, 200 per page; the devnet line is then a `getTransactions` sweep,
//! counted in transactions).

/// devnet runs in this process: the allocator of the `orrery` binary, so that its serving rate
/// is the one `orrery devnet` has (with glibc's allocator devnet spent half its time in
/// `malloc`/`free`, on the cores the measured server also needs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{base_env, Server, TestDb};
use orrery_devnet::{Devnet, DevnetConfig};
use serde_json::{json, Value};

fn sizes() -> Vec<usize> {
    std::env::var("ORRERY_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000_000])
}

fn classic() -> bool {
    std::env::var("ORRERY_BENCH_CLASSIC_EVENTS").map_or(true, |v| v != "false")
}

async fn rpc(client: &reqwest::Client, url: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let r: Value = client
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("devnet answers")
        .json()
        .await
        .expect("JSON");
    r["result"].clone()
}

/// One client reading every item (events, or transactions without classic events):
/// devnet's own serving time.
async fn sweep(url: &str, contracts: &[String], latest: u32) -> (u64, Duration) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut n = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let page = if classic() {
            let filters = json!([{"type": "contract", "contractIds": contracts}]);
            let params = match &cursor {
                None => {
                    json!({"startLedger": 1, "filters": filters, "pagination": {"limit": 10_000}})
                }
                Some(c) => {
                    json!({"filters": filters, "pagination": {"cursor": c, "limit": 10_000}})
                }
            };
            let r = rpc(&client, url, "getEvents", params).await;
            n += r["events"].as_array().map_or(0, |a| a.len() as u64);
            r
        } else {
            let params = match &cursor {
                None => json!({"startLedger": 1, "pagination": {"limit": 200}}),
                Some(c) => json!({"pagination": {"cursor": c, "limit": 200}}),
            };
            let r = rpc(&client, url, "getTransactions", params).await;
            let got = r["transactions"].as_array().map_or(0, |a| a.len());
            n += got as u64;
            if got < 200 {
                break;
            }
            r
        };
        let c = page["cursor"].as_str().expect("cursor").to_string();
        if classic() {
            let toid: i64 = c
                .split('-')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if toid >> 32 >= i64::from(latest) {
                break;
            }
        }
        cursor = Some(c);
    }
    (n, started.elapsed())
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn run(events: usize) -> String {
    let mut cfg = DevnetConfig::default();
    cfg.evm_chains.clear();
    cfg.stellar.accounts = 1_000;
    // Per transaction: a fee event, a transfer/mint for most, a refund for every seventh.
    cfg.stellar.initial_operations = events * 100 / 214;
    cfg.stellar.ops_per_ledger = 200;
    cfg.stellar.fee_stroops = 100;
    cfg.stellar.rpc_classic_events = classic();
    let devnet = Devnet::start(cfg).await.expect("devnet");
    let urls = devnet.urls();
    let control = devnet.control();
    let latest = control.latest_ledger();
    let issuer = control.stellar_issuer();
    let assets: Vec<String> = std::iter::once("XLM".to_string())
        .chain(
            ["UBEC", "UBECrc", "UBECgpi", "UBECtt"]
                .iter()
                .map(|c| format!("{c}:{issuer}")),
        )
        .collect();
    let passphrase = orrery_devnet::stellar::rpc::PASSPHRASE;
    let contracts: Vec<String> = assets
        .iter()
        .map(|a| {
            orrery_indexer::stellar::rpc::sac::SacAsset::parse(a, passphrase)
                .expect("asset")
                .contract_id
        })
        .collect();
    let (swept, sweep_time) = sweep(&urls.stellar_rpc, &contracts, latest).await;

    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("orrery_bench_rpc_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = dir.join(format!("rpc_{events}.toml"));
    let list: Vec<String> = assets.iter().map(|a| format!("\"{a}\"")).collect();
    std::fs::write(
        &toml,
        format!(
            "[stellar]\nsource = \"rpc\"\nrpc_urls = [\"{}\"]\nassets = [{}]\n\
             rpc_events_limit = 10000\npoll_interval_ms = 100\nreconcile = false\n{}",
            urls.stellar_rpc,
            list.join(", "),
            std::env::var("ORRERY_BENCH_BATCH_EVENTS")
                .ok()
                .filter(|n| !n.is_empty())
                .map(|n| format!("rpc_batch_events = {n}\n"))
                .unwrap_or_default()
        ),
    )
    .expect("config");
    let mut env = base_env(&db);
    env.push(("ORRERY_CONFIG".into(), toml.display().to_string()));
    env.push((
        "ORRERY_LOG".into(),
        std::env::var("ORRERY_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
    ));
    let conn = db.connect().await;
    let started = Instant::now();
    let server = Server::start(&env);
    loop {
        use sea_orm::EntityTrait;
        let row = orrery_entity::source::Entity::find_by_id("stellar:rpc".to_string())
            .one(&conn)
            .await
            .ok()
            .flatten();
        if row.and_then(|r| r.indexed_height) >= Some(i64::from(latest)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3_600),
            "not indexed within an hour; logs:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    if let Ok(path) = std::env::var("ORRERY_BENCH_KEEP_LOG") {
        let _ = std::fs::write(path, server.logs());
    }
    let rss = server.pid().and_then(peak_rss_kb);
    // A plain count (not through the entity), so builds with another history schema can be
    // measured with this bench binary (A/B runs swap the `orrery` binary).
    use sea_orm::ConnectionTrait;
    let rows: i64 = conn
        .query_one_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            "SELECT COUNT(*) AS n FROM stellar_balance_history",
        ))
        .await
        .expect("count")
        .expect("a count row")
        .try_get("", "n")
        .expect("count value");
    let backend = if common::pg_admin_url().is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let feed = if classic() {
        "getEvents"
    } else {
        "getTransactions (no classic events)"
    };
    format!(
        "| {backend} | {feed} | {swept} | {:.1} s ({:.0}/s) | {:.1} s | {:.0} | {:.2}x | {rows} | {} MB |",
        sweep_time.as_secs_f64(),
        swept as f64 / sweep_time.as_secs_f64(),
        took.as_secs_f64(),
        swept as f64 / took.as_secs_f64(),
        took.as_secs_f64() / sweep_time.as_secs_f64(),
        rss.map_or("?".into(), |kb| (kb / 1024).to_string()),
    )
}

#[tokio::main]
async fn main() {
    let mut lines = vec![
        "| backend | feed | items | devnet sweep (1 client) | orrery start to all applied | items/s into orrery | ratio | history rows | peak RSS |".to_string(),
        "|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for n in sizes() {
        let line = run(n).await;
        println!("{line}");
        lines.push(line);
    }
    let report = lines.join("\n");
    println!("\n{report}");
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(
        format!("{dir}/bench-stellar-rpc-backfill.md"),
        report + "\n",
    );
}
