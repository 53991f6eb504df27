//! Prices end to end: UTXOracle over devnet Esplora (daily path, low data, one-shot CLI),
//! the bitcoin and exchange sources (reorg, exchange outage), GraphQL, export and prune.
//! SQLite by default; PostgreSQL + Redis when `ORRERY_TEST_PG_URL` / `ORRERY_TEST_REDIS_URL`
//! are set.

mod common;

use std::time::{Duration, Instant};

use common::{base_env, run_cli, Server, TestDb};
use orrery_devnet::{Devnet, DevnetConfig};
use orrery_indexer::bitcoin::esplora::EsploraClient;
use orrery_indexer::bitcoin::oneshot;
use serde_json::{json, Value};

const DAY: i64 = 86_400;

async fn devnet(initial_blocks: u64, txs_per_block: u32) -> Devnet {
    let mut c = DevnetConfig::default();
    c.bitcoin.initial_blocks = initial_blocks;
    c.bitcoin.txs_per_block = txs_per_block;
    Devnet::start(c).await.unwrap()
}

fn day_string(devnet: &Devnet, day: i64) -> String {
    let start = devnet.control().daily_prices()[0].0 + day * DAY;
    chrono::DateTime::from_timestamp(start, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

/// 30 days of 144 blocks on a set price path: every daily estimate within 1%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_estimates_follow_a_30_day_price_path_within_one_percent() {
    let devnet = devnet(30 * 144 + 7, 60).await;
    let path: Vec<f64> = (0..30).map(|i| 40_000.0 * 1.045f64.powi(i)).collect();
    devnet.control().set_price_path(path.clone()).unwrap();
    let client = EsploraClient::new(&devnet.urls().esplora, 0).unwrap();
    let days: Vec<(usize, chrono::NaiveDate)> = (0..30)
        .map(|d| {
            let s = day_string(&devnet, d as i64);
            (
                d,
                chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d").unwrap(),
            )
        })
        .collect();
    let results = futures::future::join_all(days.iter().map(|(d, date)| {
        let client = client.clone();
        async move { (*d, oneshot::daily(&client, *date).await.unwrap()) }
    }))
    .await;
    for (d, r) in results {
        assert_eq!(r.blocks, 144, "day {d}: {r:?}");
        let price = r.price_usd.unwrap_or_else(|| panic!("day {d}: {r:?}"));
        let err = (price - path[d]).abs() / path[d];
        assert!(
            err < 0.01,
            "day {d}: estimate {price} vs {} ({err})",
            path[d]
        );
        assert!(r.is_valid && r.confidence >= 0.3, "day {d}: {r:?}");
    }
    devnet.shutdown().await;
}

/// Too few transactions: the one-shot CLI prints a flagged result as one JSON line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_outputs_give_no_confidence_and_invalid() {
    let devnet = devnet(2 * 144 + 7, 3).await;
    let date = day_string(&devnet, 1);
    let esplora = devnet.urls().esplora;
    let env = vec![("ORRERY_DEVNET".to_string(), "false".to_string())];
    let (code, out, err) = run_cli(
        &env,
        &[
            "prices",
            "utxoracle",
            "--date",
            &date,
            "--esplora-url",
            &esplora,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["is_valid"], false, "{v}");
    assert_eq!(v["confidence"], 0.0, "{v}");
    assert_eq!(v["price_usd"], Value::Null, "{v}");
    assert_eq!(v["blocks"], 144, "{v}");
    assert!(v["qualifying_outputs"].as_u64().unwrap() < 1000, "{v}");
    assert!(v["error"].as_str().unwrap().contains("too few"), "{v}");
    devnet.shutdown().await;
}

/// The one-shot CLI on a normal day and on the recent blocks matches the in-process result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utxoracle_cli_prints_one_json_line() {
    let devnet = devnet(2 * 144 + 7, 60).await;
    let truth = devnet.control().daily_prices();
    let esplora = devnet.urls().esplora;
    let env = vec![("ORRERY_DEVNET".to_string(), "false".to_string())];
    let date = day_string(&devnet, 1);
    let (code, out, err) = run_cli(
        &env,
        &[
            "prices",
            "utxoracle",
            "--date",
            &date,
            "--esplora-url",
            &esplora,
        ],
    );
    assert_eq!(code, 0, "{err}");
    // Not a terminal: plain progress lines on stderr, the JSON line alone on stdout.
    assert_progress(&err, "prices utxoracle", "locating the first block");
    assert_progress(&err, "prices utxoracle", "fetching blocks");
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        err.contains(&format!(
            "progress: prices utxoracle: done, {} blocks in",
            v["blocks"]
        )),
        "{err}"
    );
    let price = v["price_usd"].as_f64().unwrap();
    assert!(
        (price - truth[1].1).abs() / truth[1].1 < 0.01,
        "{v} vs {}",
        truth[1].1
    );
    assert_eq!(v["is_valid"], true);
    assert!(v["qualifying_outputs"].as_u64().unwrap() >= 1000);
    let (code, out, err) = run_cli(
        &env,
        &[
            "prices",
            "utxoracle",
            "--recent-blocks",
            "144",
            "--esplora-url",
            &esplora,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let client = EsploraClient::new(&esplora, 0).unwrap();
    let direct = oneshot::recent(&client, 144).await.unwrap();
    assert_eq!(v["price_usd"].as_f64(), direct.price_usd);
    assert_eq!(v["blocks"], 144);
    let (code, _, err) = run_cli(
        &env,
        &[
            "prices",
            "utxoracle",
            "--date",
            "2025-13-01",
            "--esplora-url",
            &esplora,
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("2025-13-01") || err.contains("invalid"),
        "{err}"
    );
    devnet.shutdown().await;
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const LATEST: &str = "query($s: String!) { latestPrice(pair: \"BTC/USD\", source: $s) { price at confidence volume details } }";
const COMPARISONS: &str = "query($inv: Boolean!) { priceComparisons(onlyInvalid: $inv, first: 100) { totalCount edges { node { at utxoraclePrice exchangePrice diff diffPercent confidence isValid reason } } } }";

fn write_config(dir: &std::path::Path, devnet: &Devnet) -> String {
    let urls = devnet.urls();
    // One file per call: tests run concurrently and each points at its own devnet.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = dir.join(format!("orrery_prices_{}_{n}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "[bitcoin]\nesplora_url = \"{}\"\nexchange_prices_url = \"{}\"\nrecent_blocks = 144\ninterval_secs = 2\npoll_interval_secs = 1\nexchange_backfill_secs = 120\n",
            urls.esplora, urls.exchange_prices
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// The sources index blocks, survive a reorg (stored blocks and the window's price equal a
/// fresh index of the new branch) and an exchange outage (flagged, then filled); GraphQL
/// serves latest prices, OHLC buckets, comparisons and the price subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_handle_reorgs_and_exchange_outages() {
    let db = TestDb::new().await;
    let devnet = devnet(150, 60).await;
    let dir = std::env::temp_dir();
    let config = write_config(&dir, &devnet);
    let env = base_env(&db);
    let server = Server::start_with_args(&env, &["--config", &config, "serve"]);
    let client = EsploraClient::new(&devnet.urls().esplora, 0).unwrap();

    // First estimate over the last 144 blocks.
    let first = wait_for("a UTXOracle price", Duration::from_secs(40), || async {
        let r = server.graphql(LATEST, json!({"s": "UTXORACLE"})).await;
        let p = r["data"]["latestPrice"].clone();
        if p.is_null() && std::env::var("PRICES_DEBUG").is_ok() {
            eprintln!("{}", server.logs());
        }
        (!p.is_null()).then_some(p)
    })
    .await;
    assert_eq!(first["details"]["blocks"], 144, "{first}");

    // Subscription sees the next stored price.
    let mut sub = server
        .subscribe(
            "graphql-transport-ws",
            "subscription { priceUpdated(pair: \"BTC/USD\", source: \"UTXORACLE\") { price source details } }",
        )
        .await;

    // Reorg: the last 3 blocks are replaced.
    let tip = devnet.control().bitcoin_tip();
    devnet.control().reorg_bitcoin(3).unwrap();
    let new_tip_hash = client.hash_at(tip).await.unwrap();
    let after = wait_for(
        "a price over the new branch",
        Duration::from_secs(40),
        || async {
            let r = server.graphql(LATEST, json!({"s": "UTXORACLE"})).await;
            let p = r["data"]["latestPrice"].clone();
            (p["details"]["tip_hash"] == json!(new_tip_hash)).then_some(p)
        },
    )
    .await;
    let fresh = oneshot::recent(&client, 144).await.unwrap();
    assert_eq!(
        after["price"].as_f64(),
        fresh.price_usd,
        "{after} vs {fresh:?}"
    );
    assert_eq!(
        after["volume"].as_f64(),
        Some(fresh.qualifying_outputs as f64)
    );
    let pushed = sub.next_data().await;
    assert_eq!(pushed["priceUpdated"]["source"], "UTXORACLE", "{pushed}");

    // Stored headers equal the best chain.
    {
        use orrery_entity::bitcoin_block;
        use sea_orm::{EntityTrait, QueryOrder};
        let conn = db.connect().await;
        let rows = bitcoin_block::Entity::find()
            .order_by_asc(bitcoin_block::Column::Height)
            .all(&conn)
            .await
            .unwrap();
        assert!(rows.len() >= 144, "{}", rows.len());
        assert_eq!(rows.last().unwrap().height as u64, tip);
        for r in rows.iter().rev().take(6) {
            assert_eq!(r.hash, client.hash_at(r.height as u64).await.unwrap());
        }
        for w in rows.windows(2) {
            assert_eq!(w[1].prev_hash, w[0].hash, "chain broken at {}", w[1].height);
        }
    }

    // Exchange outage: comparisons keep coming, flagged; filled in when it returns.
    devnet.control().set_fault(
        "exchange",
        orrery_devnet::Fault {
            status: Some(503),
            ..Default::default()
        },
    );
    let missing = wait_for(
        "a comparison without exchange price",
        Duration::from_secs(30),
        || async {
            let r = server.graphql(COMPARISONS, json!({"inv": true})).await;
            r["data"]["priceComparisons"]["edges"]
                .as_array()
                .and_then(|e| {
                    e.iter()
                        .find(|n| {
                            n["node"]["exchangePrice"].is_null()
                                && !n["node"]["utxoraclePrice"].is_null()
                        })
                        .cloned()
                })
        },
    )
    .await;
    assert_eq!(missing["node"]["isValid"], false);
    assert!(missing["node"]["reason"]
        .as_str()
        .unwrap()
        .contains("exchange price missing"));
    let at = missing["node"]["at"].clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    devnet.control().clear_faults();
    let filled = wait_for(
        "the comparison filled in",
        Duration::from_secs(40),
        || async {
            let r = server.graphql(COMPARISONS, json!({"inv": false})).await;
            r["data"]["priceComparisons"]["edges"]
                .as_array()
                .and_then(|e| e.iter().find(|n| n["node"]["at"] == at).cloned())
                .filter(|n| !n["node"]["exchangePrice"].is_null())
        },
    )
    .await;
    let n = &filled["node"];
    let (u, x) = (
        n["utxoraclePrice"].as_f64().unwrap(),
        n["exchangePrice"].as_f64().unwrap(),
    );
    assert!((n["diff"].as_f64().unwrap() - (u - x)).abs() < 1e-6, "{n}");
    assert!(
        (n["diffPercent"].as_f64().unwrap() - (u - x) / x * 100.0).abs() < 1e-6,
        "{n}"
    );
    assert_eq!(n["isValid"], true, "{n}");
    // No gap: every comparison made since the first price has a UTXOracle side.
    let all = server.graphql(COMPARISONS, json!({"inv": false})).await;
    let edges = all["data"]["priceComparisons"]["edges"]
        .as_array()
        .unwrap()
        .clone();
    assert!(edges.len() >= 3, "{all}");
    assert!(
        edges.iter().all(|e| !e["node"]["utxoraclePrice"].is_null()),
        "{all}"
    );

    // OHLC buckets in SQL agree with the raw points.
    let r = server
        .graphql(
            "query($f: DateTime!, $t: DateTime!) { prices(pair: \"BTC/USD\", source: \"EXCHANGE\", from: $f, to: $t, interval: \"1h\") { start open high low close count } }",
            json!({"f": (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339(), "t": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339()}),
        )
        .await;
    let buckets = r["data"]["prices"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"));
    assert!(!buckets.is_empty(), "{r}");
    let stored = {
        use orrery_entity::price_point;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        price_point::Entity::find()
            .filter(price_point::Column::Source.eq("EXCHANGE"))
            .all(&db.connect().await)
            .await
            .unwrap()
    };
    let counted: i64 = buckets.iter().map(|b| b["count"].as_i64().unwrap()).sum();
    assert!(
        counted as usize <= stored.len() && counted >= 2,
        "{counted} vs {}",
        stored.len()
    );
    let max = stored.iter().map(|p| p.price).fold(f64::MIN, f64::max);
    assert!(
        buckets.iter().any(|b| b["high"].as_f64() == Some(max)),
        "{r}"
    );
    for b in buckets {
        let (o, h, l, c) = (
            b["open"].as_f64().unwrap(),
            b["high"].as_f64().unwrap(),
            b["low"].as_f64().unwrap(),
            b["close"].as_f64().unwrap(),
        );
        assert!(l <= o && o <= h && l <= c && c <= h, "{b}");
        assert!(b["count"].as_i64().unwrap() >= 1);
    }
    let bad = server
        .graphql(
            "{ prices(pair: \"BTC/USD\", source: \"EXCHANGE\", from: \"2000-01-01T00:00:00Z\", to: \"2000-01-02T00:00:00Z\", interval: \"7m\") { count } }",
            json!({}),
        )
        .await;
    assert_eq!(
        bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{bad}"
    );
    assert!(server.logs().contains("bitcoin reorg"), "no reorg logged");
    drop(server);
    devnet.shutdown().await;
}

fn csv_ids(text: &str) -> Vec<i64> {
    text.lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect()
}

/// At least one plain `progress: TASK: STAGE: ...` line is on stderr.
fn assert_progress(stderr: &str, task: &str, stage: &str) {
    let prefix = format!("progress: {task}: {stage}: ");
    assert!(
        stderr.lines().any(|l| l.starts_with(&prefix)),
        "no {prefix:?} line in stderr:\n{stderr}"
    );
}

/// An export larger than one page: every row once, in order, with plain progress lines on
/// stderr and the usual single JSON line on stdout.
#[tokio::test]
async fn a_large_export_reads_pages_and_reports_progress() {
    use orrery_entity::price_point;
    use sea_orm::{EntityTrait, Set};
    let db = TestDb::new().await;
    let env = base_env(&db);
    let (code, _, err) = run_cli(&env, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    let conn = db.connect().await;
    let base = 1_735_689_600i64; // 2025-01-01
    let n = 12_345i64;
    let rows: Vec<price_point::ActiveModel> = (0..n)
        .map(|i| price_point::ActiveModel {
            pair: Set("BTC/USD".into()),
            // Two sources per minute: rows share `at` across page boundaries.
            source: Set(if i % 2 == 0 { "UTXORACLE" } else { "EXCHANGE" }.into()),
            at: Set(chrono::DateTime::from_timestamp(base + (i / 2) * 60, 0).unwrap()),
            price: Set(90_000.0 + i as f64),
            confidence: Set(None),
            volume: Set(None),
            details: Set(None),
            ..Default::default()
        })
        .collect();
    for chunk in rows.chunks(500) {
        price_point::Entity::insert_many(chunk.to_vec())
            .exec(&conn)
            .await
            .unwrap();
    }
    let dir = std::env::temp_dir().join(format!("orrery_large_export_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("points.csv");
    let (code, stdout, err) = run_cli(
        &env,
        &["prices", "export", "--output", &out.display().to_string()],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["rows"], n, "{v}");
    assert!(
        err.contains(&format!(
            "progress: prices export: reading: 0/{n} rows (0%)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("progress: prices export: done, {n} rows in")),
        "{err}"
    );
    assert!(!dir.join("points.csv.partial").exists());
    let csv = std::fs::read_to_string(&out).unwrap();
    let ids = csv_ids(&csv);
    assert_eq!(ids.len() as i64, n);
    let expected: Vec<i64> = store_ids(&conn).await;
    assert_eq!(ids, expected, "every row once, in (at, id) order");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn store_ids(conn: &sea_orm::DatabaseConnection) -> Vec<i64> {
    orrery_indexer::bitcoin::store::points_in(conn, None, None)
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect()
}

/// `prices export` then `prices prune`: the exported file holds exactly the pruned rows.
#[tokio::test]
async fn export_then_prune_round_trips() {
    use orrery_indexer::bitcoin::comparison::Thresholds;
    use orrery_indexer::bitcoin::store::{self, ComparisonRow, PricePointRow};
    let db = TestDb::new().await;
    let env = base_env(&db);
    let (code, _, err) = run_cli(&env, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert_progress(&err, "migrate", "applying");
    assert!(err.contains("progress: migrate: done, "), "{err}");
    let conn = db.connect().await;
    let base = 1_735_689_600i64; // 2025-01-01
    for i in 0..48i64 {
        let at = chrono::DateTime::from_timestamp(base + i * 3600, 0).unwrap();
        for (src, price) in [("UTXORACLE", 90_000.0 + i as f64), ("EXCHANGE", 90_100.0)] {
            store::upsert_point(
                &conn,
                &PricePointRow {
                    pair: "BTC/USD".into(),
                    source: src.into(),
                    at,
                    price,
                    confidence: Some(0.5),
                    volume: None,
                    details: Some(json!({"note": "a, \"quoted\" value"})),
                },
            )
            .await
            .unwrap();
        }
        store::upsert_comparison(
            &conn,
            &ComparisonRow {
                at,
                oracle: Some((90_000.0 + i as f64, 0.5)),
                oracle_error: None,
                exchange_price: (i % 5 != 0).then_some(90_100.0),
            },
            &Thresholds::default(),
        )
        .await
        .unwrap();
    }
    let dir = std::env::temp_dir().join(format!("orrery_prices_export_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("points.csv");
    let out_s = out.display().to_string();
    let (code, stdout, err) = run_cli(
        &env,
        &[
            "prices",
            "export",
            "--to",
            "2025-01-02",
            "--format",
            "csv",
            "--output",
            &out_s,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("\"rows\":48"), "{stdout}");
    assert!(
        err.contains("progress: prices export: reading: 0/48 rows (0%)"),
        "{err}"
    );
    assert!(
        err.contains("progress: prices export: done, 48 rows in"),
        "{err}"
    );
    let exported = std::fs::read_to_string(&out).unwrap();
    let out = dir.join("points.parquet");
    let out_s = out.display().to_string();
    let (code, stdout, err) = run_cli(
        &env,
        &[
            "prices",
            "export",
            "--to",
            "2025-01-02",
            "--format",
            "parquet",
            "--output",
            &out_s,
            "--no-progress",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("\"rows\":48"), "{stdout}");
    assert!(!err.contains("progress:"), "--no-progress: {err}");
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        bytes.len() > 8 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"),
        "not a parquet file"
    );
    let (code, stdout, err) = run_cli(
        &env,
        &[
            "prices",
            "export",
            "--to",
            "2025-01-02",
            "--format",
            "parquet",
            "--table",
            "comparisons",
            "--output",
            &dir.join("comparisons.parquet").display().to_string(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("\"rows\":24"), "{stdout}");
    let archive = dir.join("archive");
    let (code, stdout, err) = run_cli(
        &env,
        &[
            "prices",
            "prune",
            "--before",
            "2025-01-02",
            "--archive-dir",
            &archive.display().to_string(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["price_points"], 48, "{v}");
    assert_eq!(v["price_comparisons"], 24, "{v}");
    let archived =
        std::fs::read_to_string(archive.join("price_points_20250102T000000Z.csv")).unwrap();
    assert_eq!(archived, exported, "archive and export differ");
    // What is left is exactly what was not exported.
    let left = store::points_in(&conn, None, None).await.unwrap();
    assert_eq!(left.len(), 48);
    let exported_ids = csv_ids(&exported);
    assert_eq!(exported_ids.len(), 48);
    assert!(left.iter().all(|p| !exported_ids.contains(&p.id)));
    assert!(left.iter().all(|p| p.at.timestamp() >= base + DAY));
    let comparisons =
        std::fs::read_to_string(archive.join("price_comparisons_20250102T000000Z.csv")).unwrap();
    assert_eq!(csv_ids(&comparisons).len(), 24);
    assert_eq!(comparisons.matches(",false,").count(), 5, "{comparisons}");
    // Nothing older remains to prune.
    let (code, stdout, _) = run_cli(&env, &["prices", "prune", "--before", "2025-01-02"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("\"price_points\":0"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// After a restart the window is rebuilt from the stored headers: the next price covers a
/// full window and equals a fresh computation over the same blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_rebuilds_the_window() {
    let db = TestDb::new().await;
    let devnet = devnet(146, 60).await;
    let config = write_config(&std::env::temp_dir(), &devnet);
    let env = base_env(&db);
    let client = EsploraClient::new(&devnet.urls().esplora, 0).unwrap();
    let mut server = Server::start_with_args(&env, &["--config", &config, "serve"]);
    wait_for("a first price", Duration::from_secs(40), || async {
        let r = server.graphql(LATEST, json!({"s": "UTXORACLE"})).await;
        let p = r["data"]["latestPrice"].clone();
        (!p.is_null()).then_some(p)
    })
    .await;
    let (status, _) = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let tip = devnet.control().advance_bitcoin_blocks(2).unwrap();
    let server = Server::start_with_args(&env, &["--config", &config, "serve"]);
    let p = wait_for(
        "a price at the new tip",
        Duration::from_secs(40),
        || async {
            let r = server.graphql(LATEST, json!({"s": "UTXORACLE"})).await;
            let p = r["data"]["latestPrice"].clone();
            (p["details"]["tip_height"] == json!(tip)).then_some(p)
        },
    )
    .await;
    assert_eq!(p["details"]["blocks"], 144, "{p}");
    let fresh = oneshot::recent(&client, 144).await.unwrap();
    assert_eq!(p["price"].as_f64(), fresh.price_usd, "{p} vs {fresh:?}");
    drop(server);
    devnet.shutdown().await;
}

async fn daily_points(db: &TestDb) -> Vec<orrery_entity::price_point::Model> {
    use orrery_entity::price_point;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    price_point::Entity::find()
        .filter(price_point::Column::Source.eq("UTXORACLE_DAILY"))
        .order_by_asc(price_point::Column::At)
        .all(&db.connect().await)
        .await
        .unwrap()
}

/// Daily mode: after indexing 3 days (+7 blocks) from the chain start, each finished day has
/// one `UTXORACLE_DAILY` point within 1% of the devnet's price, over exactly its 144 blocks;
/// the unfinished day has none; a reorg reaching into the last finished day recomputes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_prices_are_stored_for_finished_days() {
    let db = TestDb::new().await;
    let devnet = devnet(3 * 144 + 7, 60).await;
    let path = vec![61_000.0, 64_500.0, 58_200.0, 70_000.0];
    devnet.control().set_price_path(path.clone()).unwrap();
    let truth = devnet.control().daily_prices();
    let start_height = devnet.control().bitcoin_tip() - (3 * 144 + 7) + 1;
    let config =
        std::env::temp_dir().join(format!("orrery_prices_daily_{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[bitcoin]\nesplora_url = \"{}\"\nrecent_blocks = 144\ninterval_secs = 2\npoll_interval_secs = 1\nstart_height = {start_height}\n",
            devnet.urls().esplora
        ),
    )
    .unwrap();
    let env = base_env(&db);
    let server =
        Server::start_with_args(&env, &["--config", &config.display().to_string(), "serve"]);
    let points = wait_for("three daily prices", Duration::from_secs(90), || async {
        let p = daily_points(&db).await;
        if std::env::var("PRICES_DEBUG").is_ok() {
            eprintln!("{} daily points\n{}", p.len(), server.logs());
        }
        (p.len() >= 3).then(|| serde_json::to_value(&p).unwrap())
    })
    .await;
    let points: Vec<orrery_entity::price_point::Model> = serde_json::from_value(points).unwrap();
    assert_eq!(points.len(), 3, "{points:?}");
    for (d, p) in points.iter().enumerate() {
        assert_eq!(p.at.timestamp(), truth[d].0, "{p:?}");
        assert_eq!(p.pair, "BTC/USD");
        let err = (p.price - truth[d].1).abs() / truth[d].1;
        assert!(err < 0.01, "day {d}: {} vs {} ({err})", p.price, truth[d].1);
        let details = p.details.as_ref().unwrap();
        assert_eq!(details["blocks"], 144, "{details}");
        assert_eq!(
            details["first_height"],
            json!(start_height + 144 * d as u64)
        );
        assert_eq!(
            details["last_height"],
            json!(start_height + 144 * d as u64 + 143)
        );
        assert!(p.confidence.unwrap() >= 0.3, "{p:?}");
        assert_eq!(
            details["qualifying_outputs"].as_f64(),
            p.volume,
            "{details}"
        );
    }
    // The unfinished day (7 blocks) has no point, even after a few more steps.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = daily_points(&db).await;
    assert!(now.iter().all(|p| p.at.timestamp() < truth[3].0), "{now:?}");
    assert_eq!(now.len(), 3);

    // A reorg replacing the last 79 blocks reaches 72 blocks into day 2: it is recomputed
    // over the new branch (equal to a fresh one-shot estimate of that day).
    let client = EsploraClient::new(&devnet.urls().esplora, 0).unwrap();
    let date = chrono::DateTime::from_timestamp(truth[2].0, 0)
        .unwrap()
        .date_naive();
    let before = oneshot::daily(&client, date).await.unwrap();
    assert_eq!(before.price_usd, Some(now[2].price));
    devnet.control().reorg_bitcoin(79).unwrap();
    let after = oneshot::daily(&client, date).await.unwrap();
    assert_ne!(
        after.price_usd, before.price_usd,
        "the reorg changed nothing"
    );
    let want = after.price_usd.unwrap();
    wait_for("day 2 recomputed", Duration::from_secs(60), || async {
        let p = daily_points(&db).await;
        (p.len() == 3 && p[2].price == want).then_some(Value::Null)
    })
    .await;
    assert!(server.logs().contains("bitcoin reorg"), "no reorg logged");
    drop(server);
    let _ = std::fs::remove_file(&config);
    devnet.shutdown().await;
}
