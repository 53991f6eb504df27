//! Stellar history from a SEP-54 data lake end to end: devnet writes its seeded ledgers in
//! Galexie's layout (`.config.json`, `<partition>/<batch>.xdr.zst`) beside its Horizon and
//! Stellar RPC; the real binary backfills from the directory.
//!
//! - The data-lake backfill (`orrery stellar backfill`) gives exactly the rows the RPC path
//!   gives over the same ledgers, table by table. Size: `ORRERY_TEST_DATALAKE_LEDGERS`
//!   ledgers (default 3,000; the 100,000 with `ORRERY_TEST_DATALAKE_LEDGERS=100000`).
//! - `kill -9` five times during the backfill: exact at the end.
//! - Corrupt objects (bad zstd, truncated XDR, wrong batch bounds) are reported on the
//!   source's status with the object's key and never passed: the cursor stops before them
//!   and continues once they are repaired.
//! - Handoff: backfill from the lake to the RPC node's oldest ledger while ledgers keep
//!   closing (the handoff ledger moves during the switch), then RPC: no gap, no duplicate.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::stellar_balances::{expected, stored};
use common::{base_env, run_cli, Server, TestDb};
use orrery_devnet::stellar::datalake::LakeConfig;
use orrery_devnet::{Devnet, DevnetConfig};
use orrery_entity::{
    price_point, source, stellar_account, stellar_account_operation, stellar_balance,
    stellar_balance_history, stellar_operation, stellar_transaction,
};
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait, QueryOrder};

const SOURCE: &str = "stellar:rpc";
/// The transactions stream (`stellar.index_transactions`).
const TX_SOURCE: &str = "stellar:rpc:tx";

fn unique_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "orrery_lake_{tag}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ledgers_wanted() -> usize {
    std::env::var("ORRERY_TEST_DATALAKE_LEDGERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// A devnet of about `ledgers` ledgers (fees charged) whose data lake is written to `lake`.
async fn devnet(ledgers: usize, lake: LakeConfig, retention: Option<u32>) -> Devnet {
    devnet_with(ledgers, lake, retention, true).await
}

/// [`devnet`], with or without CAP-67 events for classic movements in its meta.
async fn devnet_with(
    ledgers: usize,
    lake: LakeConfig,
    retention: Option<u32>,
    classic_events: bool,
) -> Devnet {
    let mut c = DevnetConfig::default();
    c.stellar.rpc_classic_events = classic_events;
    c.stellar.accounts = 200;
    c.stellar.ops_per_ledger = 4;
    c.stellar.initial_operations = ledgers * 4;
    c.stellar.fee_stroops = 100;
    c.stellar.rpc_retention_ledgers = retention;
    c.stellar.datalake = Some(lake);
    c.evm_chains.clear();
    Devnet::start(c).await.unwrap()
}

fn lake_url(dir: &Path) -> String {
    url::Url::from_directory_path(dir).unwrap().to_string()
}

/// Server/CLI env on `db`: XLM and every devnet asset; `extra` joins `[stellar]`.
fn env_for(db: &TestDb, d: &Devnet, extra: &str) -> Vec<(String, String)> {
    let issuer = d.control().stellar_issuer();
    let assets: Vec<String> = std::iter::once("\"XLM\"".to_string())
        .chain(
            ["UBEC", "UBECrc", "UBECgpi", "UBECtt"]
                .iter()
                .map(|c| format!("\"{c}:{issuer}\"")),
        )
        .collect();
    let path = unique_dir("cfg").join("orrery.toml");
    std::fs::write(
        &path,
        format!(
            "[stellar]\nsource = \"rpc\"\nassets = [{}]\npoll_interval_ms = 100\n\
             breaker_recovery_secs = 1\nrequest_timeout_secs = 5\n{extra}",
            assets.join(", ")
        ),
    )
    .unwrap();
    let mut env = base_env(db);
    env.push(("ORRERY_CONFIG".into(), path.display().to_string()));
    env
}

async fn source_row(db: &DatabaseConnection) -> Option<source::Model> {
    source_row_of(db, SOURCE).await
}

async fn source_row_of(db: &DatabaseConnection, id: &str) -> Option<source::Model> {
    source::Entity::find_by_id(id.to_string())
        .one(db)
        .await
        .unwrap()
}

/// Every row the Stellar token-event path writes, table by table (ids, timestamps of the
/// write and per-page bookkeeping left out).
#[derive(Debug, PartialEq, Eq)]
struct Rows {
    accounts: Vec<(String, bool, Option<String>)>,
    balances: Vec<(String, String, String, String, i64, Option<i64>)>,
    history: Vec<HistoryRow>,
}

/// One balance-history row: account, asset code, issuer, then the amounts and positions.
type HistoryRow = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    i64,
    i64,
    Option<i64>,
);

async fn rows(db: &DatabaseConnection) -> Rows {
    let mut accounts: Vec<_> = stellar_account::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.account_id, a.watched, a.discovered_via))
        .collect();
    accounts.sort();
    let mut balances: Vec<_> = stellar_balance::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|b| {
            (
                b.account_id,
                b.asset_type,
                b.asset_code,
                b.asset_issuer,
                b.balance_stroops,
                b.last_modified_ledger,
            )
        })
        .collect();
    balances.sort();
    let mut history: Vec<_> = stellar_balance_history::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|h| {
            (
                h.account_id,
                h.asset_code,
                h.asset_issuer,
                h.operation_id,
                h.ledger,
                h.at.timestamp(),
                h.delta_stroops,
                h.balance_stroops,
            )
        })
        .collect();
    history.sort();
    Rows {
        accounts,
        balances,
        history,
    }
}

/// Every row the transactions stream writes, table by table (price point ids left out).
#[derive(Debug, PartialEq)]
struct TxRows {
    operations: Vec<stellar_operation::Model>,
    links: Vec<stellar_account_operation::Model>,
    transactions: Vec<stellar_transaction::Model>,
    prices: Vec<price_point::Model>,
}

async fn tx_rows(db: &DatabaseConnection) -> TxRows {
    let operations = stellar_operation::Entity::find()
        .order_by_asc(stellar_operation::Column::Id)
        .all(db)
        .await
        .unwrap();
    let mut links = stellar_account_operation::Entity::find()
        .all(db)
        .await
        .unwrap();
    links.sort_by(|a, b| (&a.account_id, a.operation_id).cmp(&(&b.account_id, b.operation_id)));
    let transactions = stellar_transaction::Entity::find()
        .order_by_asc(stellar_transaction::Column::Hash)
        .all(db)
        .await
        .unwrap();
    let mut prices = price_point::Entity::find().all(db).await.unwrap();
    for p in &mut prices {
        p.id = 0;
    }
    prices.sort_by(|a, b| (&a.pair, &a.source, a.at).cmp(&(&b.pair, &b.source, b.at)));
    TxRows {
        operations,
        links,
        transactions,
        prices,
    }
}

/// `[stellar]` lines that index the transactions of `watched` devnet accounts and price
/// XLM/UBEC from the trades.
fn tx_settings(d: &Devnet, watched: usize) -> String {
    let accounts: Vec<String> = d
        .control()
        .stellar_accounts()
        .into_iter()
        .take(watched)
        .map(|a| format!("\"{a}\""))
        .collect();
    format!(
        "index_transactions = true\naccounts = [{}]\ndex_pairs = [\"XLM/UBEC\"]\n\
         dex_resolution_ms = 60000\n",
        accounts.join(", ")
    )
}

/// `orrery stellar backfill --from from --to to`: exit code, stdout, stderr.
fn backfill(env: &[(String, String)], from: u32, to: u32) -> (i32, String, String) {
    let (from, to) = (from.to_string(), to.to_string());
    run_cli(
        env,
        &[
            "--no-progress",
            "stellar",
            "backfill",
            "--from",
            &from,
            "--to",
            &to,
        ],
    )
}

fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits until the source has indexed `ledger`.
async fn wait_indexed(db: &DatabaseConnection, ledger: u32, server: &Server, limit: Duration) {
    wait_source(db, SOURCE, ledger, server, limit).await
}

/// Waits until source `id` has indexed `ledger`.
async fn wait_source(
    db: &DatabaseConnection,
    id: &str,
    ledger: u32,
    server: &Server,
    limit: Duration,
) {
    let start = Instant::now();
    loop {
        let row = source_row_of(db, id).await;
        if row.as_ref().and_then(|r| r.indexed_height) >= Some(i64::from(ledger)) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "not at ledger {ledger} after {limit:?}: {row:?}\nlogs:\n{}",
            tail(&server.logs())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_exact(db: &DatabaseConnection, d: &Devnet, server: &Server, limit: Duration) {
    let start = Instant::now();
    loop {
        let latest = d.control().latest_ledger();
        let row = source_row(db).await;
        let want = expected(d);
        if row.as_ref().and_then(|r| r.indexed_height) >= Some(i64::from(latest)) {
            let got = stored(db, d).await;
            if got == want {
                return;
            }
            if start.elapsed() > limit {
                let diff: Vec<_> = want
                    .iter()
                    .filter(|(k, v)| got.get(*k) != Some(v))
                    .take(10)
                    .collect();
                panic!(
                    "balances differ ({} expected, {} stored): {diff:?}\nlogs:\n{}",
                    want.len(),
                    got.len(),
                    tail(&server.logs())
                );
            }
        } else if start.elapsed() > limit {
            panic!(
                "not caught up after {limit:?}: {row:?}\nlogs:\n{}",
                tail(&server.logs())
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn datalake_backfill_gives_the_rows_of_the_rpc_path() {
    let dir = unique_dir("same");
    let d = devnet(ledgers_wanted(), LakeConfig::in_dir(&dir), None).await;
    let latest = d.control().latest_ledger();
    assert!(dir.join(".config.json").exists());

    // The RPC path over every ledger.
    // Transactions too: the operations of 20 watched accounts and the XLM/UBEC prices.
    let txs = tx_settings(&d, 20);
    let rpc_db = TestDb::new().await;
    let rpc_conn = rpc_db.connect().await;
    let env = env_for(
        &rpc_db,
        &d,
        &format!("rpc_urls = [\"{}\"]\n{txs}", d.urls().stellar_rpc),
    );
    let mut server = Server::start(&env);
    wait_indexed(&rpc_conn, latest, &server, Duration::from_secs(600)).await;
    wait_source(
        &rpc_conn,
        TX_SOURCE,
        latest,
        &server,
        Duration::from_secs(600),
    )
    .await;
    server.terminate(Duration::from_secs(10));

    // The data lake over the same ledgers, through the operator's CLI.
    let lake_db = TestDb::new().await;
    let lake_conn = lake_db.connect().await;
    let env = env_for(
        &lake_db,
        &d,
        &format!(
            "datalake_url = \"{}\"\ndatalake_concurrency = 8\n{txs}",
            lake_url(&dir)
        ),
    );
    let (code, out, err) = backfill(&env, 1, latest);
    assert_eq!(code, 0, "stdout {out}\nstderr {}", tail(&err));
    assert!(out.contains(&format!("{latest} ledgers")), "{out}");
    // Events on every ledger; their entry changes agree with them.
    assert!(out.contains(" 0 ledgers from entry changes"), "{out}");
    assert!(!err.contains("balance disagreement"), "{}", tail(&err));
    assert!(
        out.contains("ledgers/s") && out.contains("operations/s"),
        "{out}"
    );
    let row = source_row(&lake_conn).await.unwrap();
    assert_eq!(
        row.cursor.as_deref(),
        Some(format!("datalake:{latest}").as_str())
    );

    let a = rows(&rpc_conn).await;
    let b = rows(&lake_conn).await;
    assert!(!a.history.is_empty() && !a.balances.is_empty());
    assert_eq!(a.accounts, b.accounts, "stellar_account differs");
    assert_eq!(
        a.balances.len(),
        b.balances.len(),
        "stellar_balance row count"
    );
    assert_eq!(a.balances, b.balances, "stellar_balance differs");
    assert_eq!(
        a.history.len(),
        b.history.len(),
        "stellar_balance_history row count"
    );
    assert_eq!(a.history, b.history, "stellar_balance_history differs");
    let tx_row = source_row_of(&lake_conn, TX_SOURCE).await.unwrap();
    assert_eq!(
        tx_row.cursor.as_deref(),
        Some(format!("datalake:{latest}").as_str())
    );
    let (a, b) = (tx_rows(&rpc_conn).await, tx_rows(&lake_conn).await);
    assert!(!a.operations.is_empty() && !a.links.is_empty() && !a.prices.is_empty());
    for (what, x, y) in [
        ("stellar_operation", a.operations.len(), b.operations.len()),
        ("stellar_account_operation", a.links.len(), b.links.len()),
        (
            "stellar_transaction",
            a.transactions.len(),
            b.transactions.len(),
        ),
        ("price_point", a.prices.len(), b.prices.len()),
    ] {
        assert_eq!(x, y, "{what} row count");
    }
    assert_eq!(a.operations, b.operations, "stellar_operation differs");
    assert_eq!(a.links, b.links, "stellar_account_operation differs");
    assert_eq!(
        a.transactions, b.transactions,
        "stellar_transaction differs"
    );
    assert_eq!(a.prices, b.prices, "price_point differs");

    // Run again over the same range: nothing to do, nothing doubled.
    let (code, out, _) = backfill(&env, 1, latest);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to do"), "{out}");
    // A later start would leave a gap: refused.
    let (code, _, err) = backfill(&env, latest + 5, latest + 9);
    assert_ne!(code, 0);
    assert!(err.contains("gap"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Ledgers written without CAP-67 events for classic movements (before Protocol 23, or by
/// a Core without `EMIT_CLASSIC_EVENTS`): balances come from the account and trustline
/// entry changes in the transaction meta, exact to the ledger's own entries, fees included.
#[tokio::test]
async fn datalake_without_classic_events_derives_from_entry_changes() {
    let dir = unique_dir("entries");
    let d = devnet_with(1_000, LakeConfig::in_dir(&dir), None, false).await;
    let latest = d.control().latest_ledger();
    let db = TestDb::new().await;
    let conn = db.connect().await;
    let env = env_for(&db, &d, &format!("datalake_url = \"{}\"\n", lake_url(&dir)));
    let (code, out, err) = backfill(&env, 1, latest);
    assert_eq!(code, 0, "stdout {out}\nstderr {}", tail(&err));
    // Every ledger but the genesis one, which has no transaction.
    assert!(
        out.contains(&format!("{} ledgers from entry changes", latest - 1)),
        "{out}"
    );
    let want = expected(&d);
    assert!(want.len() > 100, "{} balances", want.len());
    assert_eq!(stored(&conn, &d).await, want, "balances from entry changes");
    assert!(
        stellar_balance_history::Entity::find()
            .count(&conn)
            .await
            .unwrap()
            > 1_000
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn datalake_backfill_is_exact_through_five_kill9() {
    let dir = unique_dir("kill");
    // About 8,000 ledgers and 70,000 token events: a dozen commits to kill between.
    let d = devnet(8_000, LakeConfig::in_dir(&dir), None).await;
    let db = TestDb::new().await;
    let conn = db.connect().await;
    let env = env_for(
        &db,
        &d,
        &format!(
            "datalake_url = \"{}\"\ndatalake_concurrency = 4\ndatalake_start_ledger = 1\n",
            lake_url(&dir)
        ),
    );
    let latest = i64::from(d.control().latest_ledger());
    let step = latest / 7;
    let mut last = 0;
    for round in 0..5 {
        let mut server = Server::start(&env);
        let start = Instant::now();
        loop {
            let h = source_row(&conn)
                .await
                .and_then(|r| r.indexed_height)
                .unwrap_or(0);
            if h >= last + step || h >= latest {
                last = h;
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "round {round}: no progress past ledger {last}\n{}",
                tail(&server.logs())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill9();
    }
    let server = Server::start(&env);
    wait_exact(&conn, &d, &server, Duration::from_secs(300)).await;
    // Nothing was applied twice: one history row per (holder, asset, TOID).
    let n = stellar_balance_history::Entity::find()
        .count(&conn)
        .await
        .unwrap();
    assert!(n > 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn corrupt_objects_are_reported_with_their_key_never_passed() {
    let dir = unique_dir("corrupt");
    let lake = LakeConfig::in_dir(&dir);
    let d = devnet(600, lake.clone(), None).await;
    let latest = d.control().latest_ledger();
    let db = TestDb::new().await;
    let conn = db.connect().await;
    let env = env_for(
        &db,
        &d,
        &format!(
            "datalake_url = \"{}\"\ndatalake_concurrency = 4\ndatalake_start_ledger = 1\n",
            lake_url(&dir)
        ),
    );
    // Three objects spoiled three ways before the server starts.
    let good = |l: u32| std::fs::read(dir.join(lake.object_key(l))).unwrap();
    let spoil = |l: u32, bytes: &[u8]| std::fs::write(dir.join(lake.object_key(l)), bytes).unwrap();
    let (k1, k2, k3) = (100, 250, 400);
    let (g1, g2, g3) = (good(k1), good(k2), good(k3));
    spoil(k1, b"this is not zstd");
    let xdr = zstd::decode_all(&g2[..]).unwrap();
    spoil(k2, &zstd::encode_all(&xdr[..xdr.len() - 9], 3).unwrap());
    // The object of another ledger under k3's key: wrong batch bounds.
    spoil(k3, &good(k3 + 1));

    let server = Server::start(&env);
    for (k, g, what) in [
        (k1, &g1, "bad zstd"),
        (k2, &g2, "malformed"),
        (k3, &g3, "wrong batch bounds"),
    ] {
        let key = lake.object_key(k);
        let start = Instant::now();
        loop {
            let row = source_row(&conn).await;
            if let Some(r) = &row {
                if r.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains(&key) && e.contains(what))
                {
                    // Never past the corrupt object.
                    assert!(r.indexed_height.unwrap_or(0) < i64::from(k), "{r:?}");
                    break;
                }
                assert!(
                    r.indexed_height.unwrap_or(0) < i64::from(k),
                    "passed {key}: {r:?}"
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{key} ({what}) not reported: {row:?}\n{}",
                tail(&server.logs())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Still running (no panic); repaired, it continues.
        assert_eq!(server.get("/health").await.0 / 100, 2);
        spoil(k, g);
    }
    wait_indexed(&conn, latest, &server, Duration::from_secs(120)).await;
    wait_exact(&conn, &d, &server, Duration::from_secs(60)).await;
    assert!(!server.logs().contains("panicked"));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn handoff_to_rpc_while_the_window_moves() {
    let dir = unique_dir("handoff");
    // RPC keeps the last 300 ledgers of about 2,000; ledgers keep closing throughout.
    let d = devnet(2_000, LakeConfig::in_dir(&dir), Some(300)).await;
    let db = TestDb::new().await;
    let conn = db.connect().await;
    let env = env_for(
        &db,
        &d,
        &format!(
            "rpc_urls = [\"{}\"]\ndatalake_url = \"{}\"\ndatalake_concurrency = 4\n\
             datalake_start_ledger = 1\nreconcile = false\n{}",
            d.urls().stellar_rpc,
            // Over HTTP this time: devnet serves the directory.
            d.urls()
                .stellar_datalake
                .expect("devnet serves its data lake"),
            // The transactions stream hands over too.
            tx_settings(&d, 20),
        ),
    );
    let c = d.control();
    let closer = {
        let c = c.clone();
        tokio::spawn(async move {
            // About 40 ledgers a second for 12 s: the oldest retained ledger moves past
            // wherever the backfill stands when it switches.
            for _ in 0..240 {
                c.advance_ledgers(2).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let server = Server::start(&env);
    closer.await.unwrap();
    wait_exact(&conn, &d, &server, Duration::from_secs(300)).await;
    let row = source_row(&conn).await.unwrap();
    let cursor = row.cursor.unwrap_or_default();
    assert!(
        !cursor.starts_with("datalake:"),
        "still on the data lake: {cursor}\n{}",
        tail(&server.logs())
    );
    let logs = server.logs();
    assert!(logs.contains("following RPC"), "{}", tail(&logs));

    // Transactions: every operation of each watched account, from the lake then from RPC,
    // none missing and none twice across the switch.
    let latest = c.latest_ledger();
    wait_source(&conn, TX_SOURCE, latest, &server, Duration::from_secs(300)).await;
    let tx_cursor = source_row_of(&conn, TX_SOURCE)
        .await
        .and_then(|r| r.cursor)
        .unwrap_or_default();
    assert!(
        !tx_cursor.is_empty() && !tx_cursor.starts_with("datalake:"),
        "transactions still on the data lake: {tx_cursor:?}\n{}",
        tail(&server.logs())
    );
    let ops: std::collections::HashMap<i64, String> = stellar_operation::Entity::find()
        .all(&conn)
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.id, o.op_type))
        .collect();
    let links = stellar_account_operation::Entity::find()
        .all(&conn)
        .await
        .unwrap();
    let mut compared = 0;
    for a in c.stellar_accounts().into_iter().take(20) {
        let want: Vec<i64> = c
            .operations(Some(&a))
            .unwrap()
            .into_iter()
            .filter(|o| o.ledger <= latest)
            .map(|o| o.id)
            .collect();
        let mut got: Vec<i64> = links
            .iter()
            .filter(|l| l.account_id == a)
            .map(|l| l.operation_id)
            // DEX trades are transactions of their own, not among devnet's operations.
            .filter(|id| ops.get(id).is_some_and(|t| t != "manage_sell_offer"))
            .collect();
        got.sort();
        assert_eq!(got, want, "operations of {a}");
        compared += want.len();
    }
    assert!(compared > 100, "only {compared} operations compared");
    std::fs::remove_dir_all(&dir).ok();
}
