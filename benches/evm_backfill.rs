//! EVM backfill benchmark (issue "write path"): a devnet chain of N ERC-8004 logs; measures,
//! in the same run, how long a plain `eth_getLogs` sweep of one client takes (the upstream's
//! own limit) and how long `orrery serve` (this build) takes from process start until every
//! log is indexed, with the server's peak RSS. Prints a Markdown table and writes it to
//! `$CARGO_TARGET_DIR/bench-evm-backfill.md`.
//!
//! ```sh
//! cargo bench --bench evm_backfill                       # SQLite, 100k and 1M logs
//! ORRERY_BENCH_SIZES=100000 cargo bench --bench evm_backfill
//! ORRERY_TEST_PG_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres \
//!   ORRERY_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench evm_backfill
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{base_env, Server, TestDb};
use orrery_devnet::{Devnet, DevnetConfig};
use serde_json::{json, Value};

const CONFIRMATIONS: u64 = 2;

fn sizes() -> Vec<usize> {
    std::env::var("ORRERY_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000])
}

/// One client, 2,000-block windows, every log read: the upstream's own serving time.
async fn sweep(url: &str, head: u64) -> (u64, Duration) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut logs = 0u64;
    let mut from = 0u64;
    while from <= head {
        let to = (from + 1_999).min(head);
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
            "params": [{"fromBlock": format!("0x{from:x}"), "toBlock": format!("0x{to:x}")}]});
        let r: Value = client
            .post(url)
            .json(&body)
            .send()
            .await
            .expect("devnet answers")
            .json()
            .await
            .expect("JSON");
        logs += r["result"].as_array().map_or(0, |a| a.len() as u64);
        from = to + 1;
    }
    (logs, started.elapsed())
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

async fn indexed(server: &Server, id: &str) -> (Option<i64>, Option<f64>, Option<i64>) {
    let r = server
        .graphql(
            "query($id: String!) { chain(id: $id) { indexedHeight progress etaSeconds } }",
            json!({ "id": id }),
        )
        .await;
    let c = &r["data"]["chain"];
    (
        c["indexedHeight"].as_i64(),
        c["progress"].as_f64(),
        c["etaSeconds"].as_i64(),
    )
}

async fn run(n: usize) -> String {
    let mut cfg = DevnetConfig::default();
    cfg.evm_chains.truncate(1);
    for c in &mut cfg.evm_chains {
        c.initial_blocks = 20;
        c.max_block_range = 10_000;
        c.max_logs_per_query = 10_000;
    }
    let devnet = Devnet::start(cfg).await.expect("devnet");
    let urls = devnet.urls();
    let ep = urls.evm[0].clone();
    let control = devnet.control();
    control.generate_evm_logs(&ep.name, n).expect("logs");
    let head = control.evm_head(&ep.name).expect("head");
    let target = head - CONFIRMATIONS;
    let (swept, sweep_time) = sweep(&ep.url, head).await;

    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("orrery_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = dir.join(format!("evm_{n}.toml"));
    let conf = common::evm_chain_toml(&ep, CONFIRMATIONS);
    std::fs::write(&toml, conf).expect("config");
    let mut env = base_env(&db);
    env.push(("ORRERY_CONFIG".into(), toml.display().to_string()));
    env.push((
        "ORRERY_LOG".into(),
        std::env::var("ORRERY_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
    ));
    // Extra server environment for experiments, e.g. allocator settings: `K=V,K=V`.
    if let Ok(extra) = std::env::var("ORRERY_BENCH_SERVER_ENV") {
        for kv in extra.split(',').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                env.push((k.to_string(), v.to_string()));
            }
        }
    }
    let started = Instant::now();
    let server = Server::start(&env);
    let id = format!("evm:{}", ep.name);
    let mut first_rows = None;
    let mut mid = None;
    loop {
        let (h, progress, eta) = indexed(&server, &id).await;
        if first_rows.is_none() && h.is_some_and(|h| h > 0) {
            first_rows = Some(started.elapsed());
        }
        if mid.is_none() && progress.is_some_and(|p| (0.5..1.0).contains(&p)) {
            mid = Some((progress, eta));
        }
        if h == Some(target as i64) {
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
    let conn = db.connect().await;
    use sea_orm::{EntityTrait, PaginatorTrait};
    let stored = orrery_entity::evm_event::Entity::find()
        .count(&conn)
        .await
        .expect("count");
    let backend = if common::pg_admin_url().is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    format!(
        "| {backend} | {swept} | {:.1} s | {:.1} s | {:.2}x | {:.0} | {:.1} s | {} MB | {stored} | {:?} |",
        sweep_time.as_secs_f64(),
        took.as_secs_f64(),
        took.as_secs_f64() / sweep_time.as_secs_f64(),
        swept as f64 / took.as_secs_f64(),
        first_rows.unwrap_or_default().as_secs_f64(),
        rss.map_or("?".into(), |kb| (kb / 1024).to_string()),
        mid,
    )
}

#[tokio::main]
async fn main() {
    let mut lines = vec![
        "| backend | logs | devnet sweep (1 client) | orrery start to all indexed | ratio | logs/s | first rows after | peak RSS | events stored | (progress, etaSeconds) seen mid-way |".to_string(),
        "|---|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for n in sizes() {
        let line = run(n).await;
        println!("{line}");
        lines.push(line);
    }
    let report = lines.join("\n");
    println!("\n{report}");
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{dir}/bench-evm-backfill.md"), report + "\n");
}
