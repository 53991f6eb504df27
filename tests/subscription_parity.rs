//! Every subscription returns exactly the object its matching query returns: each
//! subscription is opened with every leaf field of its type (read by introspection, so a
//! field added later is compared too), an event is triggered on the devnet, and the
//! pushed object is compared field by field with the query's object selected the same way.
//!
//! | subscription | compared with |
//! | --- | --- |
//! | `sourceUpdated` | `chain(id)` |
//! | `configChanged` | `config(key)` |
//! | `balanceChanged` | `account(id) { balances }` |
//! | `operationIndexed` | `operations(account)` |
//! | `priceUpdated` | `latestPrice(pair, source)` |
//! | `eventIndexed` | `events(chain, fromBlock, toBlock)` |
//! | `blockIndexed` | the committed `evm_block` row and `events` count (no query returns it) |
//! | `reorg` | the devnet's reorganisation and the `chain` the source rolled back |
//! | `distributionUpdated` | `distribution(id)` |
//!
//! A source row can change again between the event and the query (every step publishes
//! one), so a pushed object must equal the query's at least once among the next few events,
//! and every pushed object must have the same set of fields.
//!
//! SQLite by default; PostgreSQL + Redis when `ORRERY_TEST_PG_URL` / `ORRERY_TEST_REDIS_URL`
//! are set (events then travel through Redis).

mod common;

use std::time::{Duration, Instant};

use common::{base_env, run_cli, Server, Subscription, TestDb};
use orrery_devnet::{Devnet, DevnetConfig};
use orrery_entity::evm_block;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-0123456789";

/// Fields a resolver computes when it runs, from the clock or a live limiter, not from
/// the stored row: equal only when resolved at the same instant.
const READ_TIME_FIELDS: &[(&str, &str)] = &[
    ("Chain", "lagSeconds"),
    ("Chain", "rateLimitRemaining"),
    // Seconds since the leader took the lease (non-null on PostgreSQL): the clock again.
    ("Chain", "leaseAgeSeconds"),
];

/// Every field of `ty` without arguments whose type is a scalar or enum (lists of them
/// included), as a selection set.
async fn leaf_fields(server: &Server, ty: &str) -> String {
    let r = server
        .graphql(
            "query($t: String!) { __type(name: $t) { fields { name args { name } \
             type { kind ofType { kind ofType { kind ofType { kind } } } } } } }",
            json!({"t": ty}),
        )
        .await;
    let fields = r["data"]["__type"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no type {ty}: {r}"));
    let mut out = Vec::new();
    for f in fields {
        if !f["args"].as_array().is_some_and(|a| a.is_empty()) {
            continue;
        }
        let mut t = &f["type"];
        while matches!(t["kind"].as_str(), Some("NON_NULL") | Some("LIST")) {
            t = &t["ofType"];
        }
        let name = f["name"].as_str().unwrap();
        if READ_TIME_FIELDS.contains(&(ty, name)) {
            continue;
        }
        if matches!(t["kind"].as_str(), Some("SCALAR") | Some("ENUM")) {
            out.push(f["name"].as_str().unwrap().to_string());
        }
    }
    assert!(out.len() >= 3, "{ty}: too few leaf fields: {out:?}");
    out.join(" ")
}

/// Field-by-field comparison; the message names every differing field.
fn diff(pushed: &Value, queried: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (pushed.as_object(), queried.as_object()) else {
        return vec![format!("not objects: {pushed} / {queried}")];
    };
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            Some(w) if w == v => {}
            Some(w) => out.push(format!("{k}: subscription {v} != query {w}")),
            None => out.push(format!("{k}: missing from the query")),
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("{k}: missing from the subscription"));
    }
    out
}

/// Reads pushed objects of `field` until one equals what `query` returns for it (at most
/// `tries` objects, 60 s), checking each has the same fields as the query's.
async fn assert_parity<F, Fut>(
    sub: &mut Subscription,
    field: &str,
    tries: usize,
    mut query: F,
) -> Value
where
    F: FnMut(Value) -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let start = Instant::now();
    let mut last = Vec::new();
    for _ in 0..tries {
        let data = sub.next_data().await;
        let pushed = data[field].clone();
        assert!(pushed.is_object(), "{field}: {data}");
        if let Some(queried) = query(pushed.clone()).await {
            let keys = |v: &Value| {
                let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
                k.sort();
                k
            };
            assert_eq!(keys(&pushed), keys(&queried), "{field}: field sets differ");
            last = diff(&pushed, &queried);
            if last.is_empty() {
                return pushed;
            }
        } else {
            last = vec![format!("the query found nothing for {pushed}")];
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{field}: {last:?}"
        );
    }
    panic!("{field}: no pushed object equalled the query's: {last:?}");
}

fn operator_token(env: &[(String, String)]) -> String {
    let (code, out, err) = run_cli(
        env,
        &["token", "issue", "--role", "operator", "--ttl", "10m"],
    );
    assert_eq!(code, 0, "token issue failed: {err}");
    out.trim().to_string()
}

async fn devnet() -> Devnet {
    let mut cfg = DevnetConfig {
        seed: 4242,
        ..DevnetConfig::default()
    };
    cfg.evm_chains.truncate(1);
    for c in &mut cfg.evm_chains {
        c.initial_blocks = 20;
    }
    cfg.stellar.accounts = 6;
    cfg.stellar.initial_operations = 60;
    cfg.bitcoin.initial_blocks = 20;
    Devnet::start(cfg).await.unwrap()
}

fn config(devnet: &Devnet) -> std::path::PathBuf {
    let urls = devnet.urls();
    let ep = &urls.evm[0];
    let toml = format!(
        "[stellar]\nhorizon_url = \"{}\"\nassets = [\"UBEC\"]\npage_size = 50\n\
         requests_per_hour = 10000000\npoll_interval_ms = 100\n\n\
         [bitcoin]\nesplora_url = \"{}\"\nexchange_prices_url = \"{}\"\nrecent_blocks = 12\n\
         interval_secs = 2\npoll_interval_secs = 1\n\n{}",
        urls.horizon,
        urls.esplora,
        urls.exchange_prices,
        common::evm_chain_toml(ep, 0)
    );
    let path = std::env::temp_dir().join(format!("orrery_parity_{}.toml", std::process::id()));
    std::fs::write(&path, toml).unwrap();
    path
}

async fn wait_for<F, Fut>(what: &str, server: &Server, mut f: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscription_returns_the_object_its_query_returns() {
    let devnet = devnet().await;
    let control = devnet.control();
    let chain = devnet.urls().evm[0].name.clone();
    let evm_source = format!("evm:{chain}");
    let db = TestDb::new().await;
    let conn = db.connect().await;
    let mut env = base_env(&db);
    env.push(("JWT_SECRET".into(), SECRET.into()));
    env.push((
        "ORRERY_CONFIG".into(),
        config(&devnet).display().to_string(),
    ));
    let server = Server::start(&env);
    let auth = [("authorization", format!("Bearer {}", operator_token(&env)))];

    // Initial sync of every source.
    let accounts = control.stellar_accounts();
    let (from, to) = (accounts[1].clone(), accounts[2].clone());
    wait_for("the Stellar accounts", &server, || async {
        let r = server
            .graphql(
                "query($id: String!) { account(id: $id) { syncStatus { status } } }",
                json!({"id": to}),
            )
            .await;
        (r["data"]["account"]["syncStatus"]["status"] == "synced").then_some(r)
    })
    .await;
    wait_for("the EVM source", &server, || async {
        let r = server
            .graphql(
                "query($id: String!) { chain(id: $id) { indexedHeight } }",
                json!({"id": evm_source}),
            )
            .await;
        r["data"]["chain"]["indexedHeight"]
            .as_i64()
            .map(|_| r.clone())
    })
    .await;

    // Selection sets: every leaf field of each subscription's type.
    let chain_f = leaf_fields(&server, "Chain").await;
    let config_f = leaf_fields(&server, "ConfigEntry").await;
    let balance_f = leaf_fields(&server, "StellarBalance").await;
    let op_f = leaf_fields(&server, "StellarOperation").await;
    let price_f = leaf_fields(&server, "PricePoint").await;
    let event_f = leaf_fields(&server, "EvmEvent").await;
    let block_f = leaf_fields(&server, "EvmBlockIndexed").await;
    let reorg_f = leaf_fields(&server, "EvmReorg").await;

    let sub = |q: String| {
        let server = &server;
        async move { server.subscribe("graphql-transport-ws", &q).await }
    };
    let mut source_sub = sub(format!(
        "subscription {{ sourceUpdated(source: \"{evm_source}\") {{ {chain_f} }} }}"
    ))
    .await;
    let mut config_sub = sub(format!(
        "subscription {{ configChanged(prefix: \"sync.\") {{ {config_f} }} }}"
    ))
    .await;
    let mut balance_sub = sub(format!(
        "subscription {{ balanceChanged(account: \"{to}\", asset: \"XLM\") {{ {balance_f} }} }}"
    ))
    .await;
    let mut op_sub = sub(format!(
        "subscription {{ operationIndexed(account: \"{to}\") {{ {op_f} }} }}"
    ))
    .await;
    let mut price_sub = sub(format!(
        "subscription {{ priceUpdated(pair: \"BTC/USD\", source: \"EXCHANGE\") {{ {price_f} }} }}"
    ))
    .await;
    let mut event_sub = sub(format!(
        "subscription {{ eventIndexed(chain: \"{chain}\") {{ {event_f} }} }}"
    ))
    .await;
    let mut block_sub = sub(format!(
        "subscription {{ blockIndexed(chain: \"{chain}\") {{ {block_f} }} }}"
    ))
    .await;
    let mut reorg_sub = sub(format!(
        "subscription {{ reorg(chain: \"{chain}\") {{ {reorg_f} }} }}"
    ))
    .await;
    // Subscriptions are registered before anything is triggered.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // configChanged <-> config(key).
    let r = server
        .graphql_with_headers(
            "mutation { setConfig(key: \"sync.batch_size\", value: \"123\") { key } }",
            json!({}),
            &auth,
        )
        .await;
    assert!(r.get("errors").is_none(), "{r}");
    let q = format!("query($k: String!) {{ config(key: $k) {{ {config_f} }} }}");
    let pushed = assert_parity(&mut config_sub, "configChanged", 1, |p| {
        let (server, q) = (&server, &q);
        async move {
            let r = server.graphql(q, json!({"k": p["key"]})).await;
            Some(r["data"]["config"].clone()).filter(|v| v.is_object())
        }
    })
    .await;
    assert_eq!(pushed["value"], "123");

    // Stellar: a payment to `to` -> operationIndexed and balanceChanged.
    let op_id = control
        .submit_payment(&from, &to, "native", "12.5", None)
        .unwrap();
    control.advance_ledgers(1).unwrap();
    let q = format!(
        "query($a: String!) {{ operations(account: $a, order: NEWEST_FIRST, first: 50) \
         {{ edges {{ node {{ {op_f} }} }} }} }}"
    );
    let pushed = assert_parity(&mut op_sub, "operationIndexed", 5, |p| {
        let (server, q, to) = (&server, &q, &to);
        async move {
            let r = server.graphql(q, json!({"a": to})).await;
            r["data"]["operations"]["edges"]
                .as_array()?
                .iter()
                .map(|e| e["node"].clone())
                .find(|n| n["id"] == p["id"])
        }
    })
    .await;
    assert_eq!(pushed["id"], op_id.to_string(), "{pushed}");
    let q = format!("query($a: String!) {{ account(id: $a) {{ balances {{ {balance_f} }} }} }}");
    let pushed = assert_parity(&mut balance_sub, "balanceChanged", 5, |p| {
        let (server, q, to) = (&server, &q, &to);
        async move {
            let r = server.graphql(q, json!({"a": to})).await;
            r["data"]["account"]["balances"]
                .as_array()?
                .iter()
                .find(|b| b["assetCode"] == p["assetCode"] && b["assetIssuer"] == p["assetIssuer"])
                .cloned()
        }
    })
    .await;
    assert_eq!(pushed["accountId"], to.as_str());
    assert!(
        !pushed["lastModifiedLedger"].is_null(),
        "the stored row's ledger: {pushed}"
    );

    // priceUpdated <-> latestPrice (the exchange source polls every 2 s).
    let q = format!(
        "query($s: String!) {{ latestPrice(pair: \"BTC/USD\", source: $s) {{ {price_f} }} }}"
    );
    assert_parity(&mut price_sub, "priceUpdated", 5, |p| {
        let (server, q) = (&server, &q);
        async move {
            let r = server.graphql(q, json!({"s": p["source"]})).await;
            Some(r["data"]["latestPrice"].clone()).filter(|v| v.is_object())
        }
    })
    .await;

    // EVM: new logs -> eventIndexed, blockIndexed and sourceUpdated.
    control.generate_evm_logs(&chain, 5).unwrap();
    control.advance_blocks(&chain, 2).unwrap();
    let q = format!(
        "query($c: String!, $b: Int!) {{ events(chain: $c, fromBlock: $b, toBlock: $b, first: 100) \
         {{ edges {{ node {{ {event_f} }} }} }} }}"
    );
    assert_parity(&mut event_sub, "eventIndexed", 5, |p| {
        let (server, q, chain) = (&server, &q, &chain);
        async move {
            let r = server
                .graphql(q, json!({"c": chain, "b": p["blockNumber"]}))
                .await;
            r["data"]["events"]["edges"]
                .as_array()?
                .iter()
                .map(|e| e["node"].clone())
                .find(|n| n["logIndex"] == p["logIndex"] && n["blockHash"] == p["blockHash"])
        }
    })
    .await;
    // blockIndexed has no query of its own: its block is the committed row, its count the
    // events the query lists in its range.
    let data = block_sub.next_data().await;
    let b = &data["blockIndexed"];
    let row = evm_block::Entity::find()
        .filter(evm_block::Column::Chain.eq(chain.clone()))
        .filter(evm_block::Column::Number.eq(b["number"].as_i64().unwrap()))
        .one(&conn)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no stored block for {b}"));
    assert_eq!(b["hash"], row.hash.as_str(), "{b}");
    assert_eq!(b["parentHash"], row.parent_hash.as_str(), "{b}");
    let q = "query($c: String!, $f: Int!, $t: Int!) { events(chain: $c, fromBlock: $f, toBlock: $t, first: 100) { edges { cursor } } }";
    let r = server
        .graphql(
            q,
            json!({"c": chain, "f": b["fromBlock"], "t": b["number"]}),
        )
        .await;
    assert_eq!(
        r["data"]["events"]["edges"].as_array().map(Vec::len),
        b["events"].as_u64().map(|n| n as usize),
        "{b} vs {r}"
    );
    let q = format!("query($id: String!) {{ chain(id: $id) {{ {chain_f} }} }}");
    let source_query = |_: Value| {
        let (server, q, id) = (&server, &q, &evm_source);
        async move {
            let r = server.graphql(q, json!({"id": id})).await;
            Some(r["data"]["chain"].clone()).filter(|v| v.is_object())
        }
    };
    assert_parity(&mut source_sub, "sourceUpdated", 20, source_query).await;

    // distributionUpdated <-> distribution(id): a distribution is created, then approved.
    let issuer = control.stellar_issuer();
    let ubec = format!("UBEC:{issuer}");
    let holders: Vec<String> = accounts
        .iter()
        .filter(|a| **a != from)
        .filter(|a| {
            control
                .balances(a)
                .unwrap()
                .iter()
                .any(|(k, b)| *k == ubec && *b > 0)
        })
        .take(2)
        .cloned()
        .collect();
    assert_eq!(holders.len(), 2, "two UBEC holders");
    let input = json!({ "input": {
        "name": "parity", "assetCode": "UBEC", "assetIssuer": issuer,
        "sourceAccount": from, "totalBudget": "10",
        "recipients": [{ "account": holders[0], "amount": "1.5" }, { "account": holders[1], "amount": "2" }]
    }});
    let r = server
        .graphql_with_headers(
            "mutation($input: CreateDistributionInput!) { createDistribution(input: $input) { id } }",
            input,
            &auth,
        )
        .await;
    let id = r["data"]["createDistribution"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{r}"));
    let dist_f = leaf_fields(&server, "Distribution").await;
    let mut dist_sub = sub(format!(
        "subscription {{ distributionUpdated(id: {id}) {{ {dist_f} }} }}"
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = server
        .graphql_with_headers(
            "mutation($id: Int!) { approveDistribution(id: $id) { id } }",
            json!({"id": id}),
            &auth,
        )
        .await;
    assert!(r.get("errors").is_none(), "{r}");
    let q = format!("query($id: Int!) {{ distribution(id: $id) {{ {dist_f} }} }}");
    assert_parity(&mut dist_sub, "distributionUpdated", 5, |p| {
        let (server, q) = (&server, &q);
        async move {
            let r = server.graphql(q, json!({"id": p["id"]})).await;
            Some(r["data"]["distribution"].clone()).filter(|v| v.is_object())
        }
    })
    .await;

    // reorg: the devnet replaces its last blocks; the event names the chain and a depth the
    // source rolled back, and the chain then re-indexes past it.
    control.reorg_evm(&chain, 2).unwrap();
    control.advance_blocks(&chain, 2).unwrap();
    let data = reorg_sub.next_data().await;
    let r = &data["reorg"];
    assert_eq!(r["chain"], chain.as_str(), "{r}");
    assert!(r["depth"].as_i64().unwrap() >= 1, "{r}");
    let from_block = r["fromBlock"].as_i64().unwrap();
    wait_for("re-indexing after the reorg", &server, || async {
        let q = "query($id: String!) { chain(id: $id) { indexedHeight } }";
        let c = server.graphql(q, json!({"id": evm_source})).await;
        (c["data"]["chain"]["indexedHeight"].as_i64() >= Some(from_block)).then_some(c)
    })
    .await;

    devnet.shutdown().await;
}
