//! The README's run command on a fresh machine: `orrery serve` with no config file and no
//! upstream configured indexes every devnet system, and the data is visible within seconds.

mod common;

use std::time::{Duration, Instant};

use common::{redis_url, Server, TestDb};
use serde_json::{json, Value};

/// What a new user should see, checked together.
const FIRST_RUN: &str = r#"{
  accounts(first: 100) { edges { node { accountId balances { assetCode balance } } } }
  evm: chains(kind: "evm") { edges { node { name } } }
  utxoracle: latestPrice(pair: "BTC/USD", source: "UTXORACLE") { price }
  exchange: latestPrice(pair: "BTC/USD", source: "EXCHANGE") { price }
  dex: latestPrice(pair: "XLM/UBEC", source: "STELLAR_DEX") { price }
  priceComparisons(first: 1) { totalCount }
  indexerStatus(first: 100) { edges { node { id status isSynced } } }
}"#;

#[derive(Default, Debug)]
struct Seen {
    accounts_with_balances: Option<Duration>,
    agents_on_every_chain: Option<Duration>,
    utxoracle: Option<Duration>,
    exchange: Option<Duration>,
    comparisons: Option<Duration>,
    dex: Option<Duration>,
    all_synced: Option<Duration>,
}

impl Seen {
    fn complete(&self) -> bool {
        self.accounts_with_balances.is_some()
            && self.agents_on_every_chain.is_some()
            && self.utxoracle.is_some()
            && self.exchange.is_some()
            && self.comparisons.is_some()
            && self.dex.is_some()
            && self.all_synced.is_some()
    }
}

fn mark(slot: &mut Option<Duration>, now: Duration, yes: bool) {
    if yes && slot.is_none() {
        *slot = Some(now);
    }
}

async fn agents_on_every_chain(server: &Server, evm: &Value) -> bool {
    let Some(chains) = evm["edges"].as_array() else {
        return false;
    };
    if chains.len() < 2 {
        return false;
    }
    for chain in chains {
        let name = chain["node"]["name"].as_str().unwrap_or_default();
        let r = server
            .graphql(
                "query($c: String!) { agents(chain: $c, first: 1) { totalCount } }",
                json!({ "c": name }),
            )
            .await;
        if r["data"]["agents"]["totalCount"].as_i64().unwrap_or(0) == 0 {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn serve_with_no_config_shows_every_devnet_system_within_30_seconds() {
    // A fresh, empty working directory: no orrery.toml, the default SQLite file lands here.
    let dir = std::env::temp_dir().join(format!(
        "orrery_first_run_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut env = vec![("ORRERY_LISTEN".to_string(), "127.0.0.1:0".to_string())];
    // The PostgreSQL + Redis run points the same binary at those, still with no config file.
    let _db = if common::pg_admin_url().is_some() {
        let db = TestDb::new().await;
        env.push(("DATABASE_URL".to_string(), db.url.clone()));
        if let Some(r) = redis_url() {
            env.push(("REDIS_URL".to_string(), r));
        }
        Some(db)
    } else {
        None
    };
    let started = Instant::now();
    let server = Server::start_in(&dir, &env, &["serve"]);
    let mut seen = Seen::default();
    let mut last = Value::Null;
    while started.elapsed() < Duration::from_secs(30) && !seen.complete() {
        let now = started.elapsed();
        let r = server.graphql(FIRST_RUN, json!({})).await;
        let d = &r["data"];
        let with_balances = d["accounts"]["edges"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| {
                        e["node"]["balances"]
                            .as_array()
                            .is_some_and(|b| b.iter().any(|b| b["assetCode"] == "UBEC"))
                    })
                    .count()
            })
            .unwrap_or(0);
        mark(&mut seen.accounts_with_balances, now, with_balances >= 5);
        if seen.agents_on_every_chain.is_none() {
            let yes = agents_on_every_chain(&server, &d["evm"]).await;
            mark(&mut seen.agents_on_every_chain, now, yes);
        }
        mark(
            &mut seen.utxoracle,
            now,
            d["utxoracle"]["price"].as_f64().is_some_and(|p| p > 0.0),
        );
        mark(
            &mut seen.exchange,
            now,
            d["exchange"]["price"].as_f64().is_some_and(|p| p > 0.0),
        );
        mark(
            &mut seen.dex,
            now,
            d["dex"]["price"].as_f64().is_some_and(|p| p > 0.0),
        );
        mark(
            &mut seen.comparisons,
            now,
            d["priceComparisons"]["totalCount"].as_i64().unwrap_or(0) > 0,
        );
        let statuses = d["indexerStatus"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let all_synced = statuses.len() >= 5
            && statuses
                .iter()
                .all(|e| e["node"]["status"] == "synced" && e["node"]["isSynced"] == true);
        mark(&mut seen.all_synced, now, all_synced);
        last = r;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("first run timings: {seen:?}");
    assert!(
        seen.complete(),
        "after 30 s not everything is visible: {seen:?}\nlast answer: {last:#}\nlogs:\n{}",
        server.logs()
    );
    let logs = server.logs();
    assert!(!logs.contains("watching accounts=0"), "{logs}");

    // What the status page lists: the newest events and operations first, paged by keyset.
    let q = r#"query($after: String) {
      events(chain: "sepolia", first: 5, order: NEWEST_FIRST, after: $after) { edges { cursor node { blockNumber logIndex } } }
      old: events(chain: "sepolia", first: 5) { edges { node { blockNumber } } }
      operations(first: 5, order: NEWEST_FIRST) { edges { node { id } } }
    }"#;
    let page1 = server.graphql(q, json!({})).await;
    let keys = |page: &Value| -> Vec<(i64, i64)> {
        page["data"]["events"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["node"]["blockNumber"].as_i64().unwrap(),
                    e["node"]["logIndex"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let first_keys = keys(&page1);
    assert_eq!(first_keys.len(), 5, "{page1}");
    assert!(
        first_keys.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {first_keys:?}"
    );
    let oldest = page1["data"]["old"]["edges"][0]["node"]["blockNumber"]
        .as_i64()
        .unwrap();
    assert!(first_keys[0].0 >= oldest);
    let cursor = page1["data"]["events"]["edges"][4]["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let page2 = server.graphql(q, json!({ "after": cursor })).await;
    let second_keys = keys(&page2);
    assert!(
        second_keys.first().is_some_and(|k| *k < first_keys[4]),
        "{page2}"
    );
    let ops: Vec<String> = page1["data"]["operations"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ops.len(), 5, "{page1}");
    let numeric: Vec<i64> = ops.iter().map(|id| id.parse().unwrap()).collect();
    assert!(
        numeric.windows(2).all(|w| w[0] > w[1]),
        "operations not newest first: {ops:?}"
    );
    assert!(dir.join("orrery.db").exists() || common::pg_admin_url().is_some());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
