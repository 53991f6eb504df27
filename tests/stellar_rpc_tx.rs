//! Operations, distributions and DEX prices over Stellar RPC (`index_transactions = true`)
//! against the Horizon path, end to end: one devnet (its Horizon and its RPC serve the same
//! seeded ledger), two real `orrery` processes on two databases, one following Horizon, one
//! following RPC; the same distributions paid on chain; then the tables are compared row by
//! row: operations, account links, distributions and recipients, DEX price points. The same
//! GraphQL queries answer the same on both.
//!
//! devnet's Horizon names transactions by synthetic hashes (they embed the operation id so
//! it can resolve them without an index) while its RPC names them by their true envelope
//! hash: rows are compared with each transaction hash replaced by the transaction's TOID,
//! the rest byte for byte.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{base_env, Server, TestDb};
use orrery_devnet::faults::Fault;
use orrery_devnet::{Devnet, DevnetConfig};
use orrery_entity::{
    distribution, distribution_recipient, price_point, source, stellar_account_operation,
    stellar_operation,
};
use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, QueryOrder, Set};
use serde_json::{json, Value};

async fn devnet() -> Devnet {
    let mut c = DevnetConfig::default();
    c.stellar.accounts = 30;
    c.stellar.initial_operations = 2_500;
    c.stellar.ops_per_ledger = 40;
    c.stellar.fee_stroops = 100;
    c.evm_chains.clear();
    Devnet::start(c).await.unwrap()
}

fn config(db: &TestDb, stellar: &str) -> Vec<(String, String)> {
    let dir = std::env::temp_dir().join(format!(
        "orrery_stellar_rpc_tx_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("orrery.toml");
    std::fs::write(&path, format!("[stellar]\n{stellar}")).unwrap();
    let mut env = base_env(db);
    env.push(("ORRERY_CONFIG".into(), path.display().to_string()));
    env
}

/// The `[stellar]` settings both servers share: the same watched accounts, assets, pair
/// and distribution memo prefix.
fn common_settings(d: &Devnet, watched: &[String], xlm: bool) -> String {
    let issuer = d.control().stellar_issuer();
    // Over RPC lumens are an asset of their own (its SAC's events carry the fees).
    let assets: Vec<String> = xlm
        .then(|| "\"XLM\"".to_string())
        .into_iter()
        .chain(
            ["UBEC", "UBECrc", "UBECgpi", "UBECtt"]
                .iter()
                .map(|c| format!("\"{c}:{issuer}\"")),
        )
        .collect();
    let accounts: Vec<String> = watched.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "accounts = [{}]\nassets = [{}]\ndex_pairs = [\"XLM/UBEC\"]\ndex_resolution_ms = 60000\n\
         distribution_memo_prefix = \"odist:\"\npoll_interval_ms = 100\n\
         breaker_recovery_secs = 1\nrequest_timeout_secs = 5\n",
        accounts.join(", "),
        assets.join(", ")
    )
}

/// A transaction hash replaced by the TOID of the operation's transaction.
fn tx_of(op_id: i64) -> String {
    format!("tx@{}", op_id & !0xfff)
}

/// Every operation row, hash normalised, Horizon's `_links` left out of the details.
async fn operations(db: &DatabaseConnection) -> BTreeMap<i64, Value> {
    stellar_operation::Entity::find()
        .order_by_asc(stellar_operation::Column::Id)
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            let mut details = o.details.clone();
            if let Some(m) = details.as_object_mut() {
                m.remove("_links");
                m.insert("transaction_hash".into(), json!(tx_of(o.id)));
            }
            let row = json!({
                "paging_token": o.paging_token, "tx": tx_of(o.id), "ledger": o.ledger,
                "created_at": o.created_at.to_rfc3339(), "type": o.op_type,
                "source": o.source_account, "from": o.from_account, "to": o.to_account,
                "asset_type": o.asset_type, "asset_code": o.asset_code,
                "asset_issuer": o.asset_issuer, "amount": o.amount_stroops,
                "successful": o.successful, "details": details,
            });
            (o.id, row)
        })
        .collect()
}

async fn links(db: &DatabaseConnection) -> Vec<(String, i64, String)> {
    let mut out: Vec<_> = stellar_account_operation::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.account_id, l.operation_id, l.created_at.to_rfc3339()))
        .collect();
    out.sort();
    out
}

async fn distributions(db: &DatabaseConnection) -> Vec<Value> {
    let mut out = Vec::new();
    for d in distribution::Entity::find()
        .order_by_asc(distribution::Column::Id)
        .all(db)
        .await
        .unwrap()
    {
        out.push(
            json!({"id": d.id, "status": d.status, "rules_passed": d.rules_passed,
                        "rules_result": d.rules_result}),
        );
    }
    for r in distribution_recipient::Entity::find()
        .order_by_asc(distribution_recipient::Column::Id)
        .all(db)
        .await
        .unwrap()
    {
        out.push(json!({
            "recipient": r.account_id, "distribution": r.distribution_id,
            "status": r.status, "reason": r.reason, "op": r.payment_operation_id,
            "tx": r.payment_operation_id.map(tx_of), "paid_at": r.paid_at.map(|t| t.to_rfc3339()),
            "tx_hash_set": r.transaction_hash.is_some(),
        }));
    }
    out
}

async fn prices(db: &DatabaseConnection) -> Vec<Value> {
    price_point::Entity::find()
        .order_by_asc(price_point::Column::Pair)
        .order_by_asc(price_point::Column::At)
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.source == "STELLAR_DEX")
        .map(|p| {
            let mut details = p.details.clone().unwrap_or(Value::Null);
            if let Some(m) = details.as_object_mut() {
                m.remove("_links");
            }
            json!({"pair": p.pair, "at": p.at.to_rfc3339(), "price": p.price,
                   "volume": p.volume, "details": details})
        })
        .collect()
}

async fn create_distribution(
    db: &DatabaseConnection,
    issuer: &str,
    source: &str,
    recipients: &[(String, i64)],
) -> i64 {
    let now = chrono::Utc::now();
    let d = distribution::ActiveModel {
        name: Set("payout".into()),
        asset_code: Set("UBEC".into()),
        asset_issuer: Set(issuer.into()),
        source_account: Set(source.into()),
        total_budget_stroops: Set(recipients.iter().map(|r| r.1).sum::<i64>() + 1),
        status: Set("approved".into()),
        created_by: Set(Some("test".into())),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap();
    for (acc, amount) in recipients {
        distribution_recipient::ActiveModel {
            distribution_id: Set(d.id),
            account_id: Set(acc.clone()),
            amount_stroops: Set(*amount),
            status: Set("pending".into()),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
    }
    d.id
}

fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

async fn indexed(db: &DatabaseConnection, id: &str) -> Option<i64> {
    source::Entity::find_by_id(id.to_string())
        .one(db)
        .await
        .unwrap()
        .and_then(|s| s.indexed_height)
}

#[tokio::test]
async fn rpc_operations_distributions_and_prices_equal_horizon_table_by_table() {
    let d = devnet().await;
    let c = d.control();
    let issuer = c.stellar_issuer();
    let accounts = c.stellar_accounts();
    let distributor = accounts[2].clone();
    let ubec = format!("UBEC:{issuer}");
    // Watched: the distributor and the UBEC holders among the first accounts.
    let recipients: Vec<String> = accounts
        .iter()
        .skip(3)
        .filter(|a| {
            c.balances(a)
                .unwrap()
                .iter()
                .any(|(k, v)| *k == ubec && *v > 0)
        })
        .take(6)
        .cloned()
        .collect();
    assert!(recipients.len() >= 3, "{recipients:?}");
    let mut watched = vec![distributor.clone()];
    watched.extend(recipients.iter().cloned());

    let shared = |xlm| common_settings(&d, &watched, xlm);
    let horizon_db = TestDb::new().await;
    let rpc_db = TestDb::new().await;
    let h_env = config(
        &horizon_db,
        &format!(
            "source = \"horizon\"\nhorizon_url = \"{}\"\ndiscover = false\nstream = false\n\
             requests_per_hour = 10000000\ndex_interval_secs = 1\n{}",
            d.urls().horizon,
            shared(false)
        ),
    );
    let r_env = config(
        &rpc_db,
        &format!(
            "source = \"rpc\"\nrpc_urls = [\"{}\"]\nindex_transactions = true\n{}",
            d.urls().stellar_rpc,
            shared(true)
        ),
    );
    let h_conn = horizon_db.connect().await;
    let r_conn = rpc_db.connect().await;
    // Node faults on the RPC side: internal errors (-32603), 503s and truncated bodies.
    c.set_fault(
        "horizon:/rpc",
        Fault {
            jsonrpc_error: Some(-32603),
            every_nth: Some(9),
            ..Default::default()
        },
    );
    c.set_fault(
        "horizon:/rpc",
        Fault {
            truncate_body: true,
            every_nth: Some(13),
            ..Default::default()
        },
    );
    let h = Server::start(&h_env);
    let r = Server::start(&r_env);

    // The same distributions in both databases (ids 1 and 2 in each), paid on chain.
    let mut ids = Vec::new();
    for conn in [&h_conn, &r_conn] {
        let good = create_distribution(
            conn,
            &issuer,
            &distributor,
            &[
                (recipients[0].clone(), 15_000_000),
                (recipients[1].clone(), 25_000_000),
            ],
        )
        .await;
        let bad = create_distribution(
            conn,
            &issuer,
            &distributor,
            &[(recipients[2].clone(), 30_000_000)],
        )
        .await;
        ids.push((good, bad));
    }
    assert_eq!(ids[0], ids[1], "same ids in both databases");
    let (good, bad) = ids[0];
    let memo_good = format!("odist:{good}");
    let memo_bad = format!("odist:{bad}");
    c.submit_payment(
        &distributor,
        &recipients[0],
        "UBEC",
        "1.5",
        Some(&memo_good),
    )
    .unwrap();
    c.submit_payment(
        &distributor,
        &recipients[1],
        "UBEC",
        "2.5",
        Some(&memo_good),
    )
    .unwrap();
    c.submit_payment(&distributor, &recipients[2], "UBEC", "2.9", Some(&memo_bad))
        .unwrap();
    c.advance_ledgers(3).unwrap();

    // Both caught up, distributions settled, and every table equal.
    let start = Instant::now();
    loop {
        let latest = i64::from(c.latest_ledger());
        let h_done = distribution::Entity::find_by_id(bad)
            .one(&h_conn)
            .await
            .unwrap()
            .is_some_and(|x| x.status == "failed");
        let r_done = distribution::Entity::find_by_id(bad)
            .one(&r_conn)
            .await
            .unwrap()
            .is_some_and(|x| x.status == "failed");
        let r_at = indexed(&r_conn, "stellar:rpc:tx").await;
        if h_done && r_done && r_at >= Some(latest) {
            let (ho, ro) = (operations(&h_conn).await, operations(&r_conn).await);
            let (hl, rl) = (links(&h_conn).await, links(&r_conn).await);
            let (hd, rd) = (distributions(&h_conn).await, distributions(&r_conn).await);
            let (hp, rp) = (prices(&h_conn).await, prices(&r_conn).await);
            if ho == ro && hl == rl && hd == rd && hp == rp {
                assert!(ho.len() > 100, "{} operations", ho.len());
                assert!(hp.len() > 1, "{} price buckets", hp.len());
                assert!(hl.len() >= ho.len());
                break;
            }
            if start.elapsed() > Duration::from_secs(180) {
                let first_op = ho
                    .iter()
                    .find(|(k, v)| ro.get(*k) != Some(*v))
                    .map(|(k, v)| (k, v, ro.get(k)));
                let only_rpc = ro.keys().find(|k| !ho.contains_key(*k));
                let first_price = hp.iter().zip(&rp).find(|(a, b)| a != b);
                panic!(
                    "tables differ: ops {} vs {} (first {first_op:?}, rpc-only {only_rpc:?}); \
                     links {} vs {}; distributions equal {}: {hd:?} vs {rd:?}; prices {} vs {} \
                     (first {first_price:?})\nrpc logs:\n{}",
                    ho.len(),
                    ro.len(),
                    hl.len(),
                    rl.len(),
                    hd == rd,
                    hp.len(),
                    rp.len(),
                    tail(&r.logs())
                );
            }
        } else if start.elapsed() > Duration::from_secs(180) {
            panic!(
                "not settled: horizon {h_done}, rpc {r_done} at {r_at:?} of {latest}\nhorizon:\n{}\nrpc:\n{}",
                tail(&h.logs()),
                tail(&r.logs())
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The same GraphQL answers on both (hashes aside).
    let q = r#"query($a: String!) { operations(account: $a, first: 50) {
                 edges { cursor node { id ledger createdAt type sourceAccount from to assetCode assetIssuer } } } }"#;
    for a in &watched[..3] {
        let hv = h.graphql(q, json!({"a": a})).await;
        let rv = r.graphql(q, json!({"a": a})).await;
        assert!(hv["errors"].is_null(), "{hv}");
        assert!(!hv["data"]["operations"]["edges"]
            .as_array()
            .unwrap()
            .is_empty());
        assert_eq!(hv, rv, "operations of {a}");
    }
    let q = "query($id: Int!) { distribution(id: $id) { status recipients { accountId status reason paymentOperationId } } }";
    for id in [good, bad] {
        let hv = h.graphql(q, json!({"id": id})).await;
        let rv = r.graphql(q, json!({"id": id})).await;
        assert_eq!(hv, rv);
    }
    let g = r.graphql(q, json!({"id": good})).await;
    assert_eq!(g["data"]["distribution"]["status"], "completed", "{g}");
    let b = r.graphql(q, json!({"id": bad})).await;
    let reason = b["data"]["distribution"]["recipients"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("expected 3.0000000, paid 2.9000000"),
        "{reason}"
    );
    d.shutdown().await;
}
