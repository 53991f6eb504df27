//! Stellar end to end: a devnet Horizon, the real binary, kill -9 during backfill, faults,
//! exact comparison with the devnet's own records, live handoff and distributions.
//! Runs on SQLite by default, on PostgreSQL + Redis when `ORRERY_TEST_PG_URL` is set.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{base_env, Server, TestDb};
use orrery_devnet::faults::Fault;
use orrery_devnet::{Devnet, DevnetConfig};
use orrery_entity::{
    distribution, distribution_recipient, stellar_account_operation, stellar_balance,
    stellar_balance_history, stellar_operation, stellar_sync_state,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Set,
};
use serde_json::{json, Value};

async fn devnet(accounts: usize, ops: usize) -> Devnet {
    let mut c = DevnetConfig::default();
    c.stellar.accounts = accounts;
    c.stellar.initial_operations = ops;
    c.evm_chains.clear();
    Devnet::start(c).await.unwrap()
}

/// Server env with a `[stellar]` section pointing at the devnet.
/// `extra` is appended to the `[stellar]` section.
fn env_for(db: &TestDb, horizon: &str, page_size: u32, extra: &str) -> Vec<(String, String)> {
    let dir = std::env::temp_dir().join(format!(
        "orrery_stellar_{}_{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("orrery.toml");
    std::fs::write(
        &path,
        format!(
            "[stellar]\nhorizon_url = \"{horizon}\"\nassets = [\"UBEC\", \"UBECrc\", \"UBECgpi\", \"UBECtt\"]\n\
             page_size = {page_size}\naccount_concurrency = 4\nrequests_per_hour = 10000000\n\
             poll_interval_ms = 100\ndistribution_memo_prefix = \"odist:\"\n\
             dex_pairs = [\"XLM/UBEC\"]\ndex_interval_secs = 1\n{extra}"
        ),
    )
    .unwrap();
    let mut env = base_env(db);
    env.push(("ORRERY_CONFIG".into(), path.display().to_string()));
    env
}

fn rand_u64() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The accounts the indexer should watch: holders of any credit asset.
fn holders(d: &Devnet) -> BTreeSet<String> {
    let c = d.control();
    c.stellar_accounts()
        .into_iter()
        .filter(|a| {
            c.balances(a)
                .map(|b| b.iter().any(|(asset, _)| asset != "native"))
                .unwrap_or(false)
        })
        .collect()
}

async fn links(db: &DatabaseConnection) -> BTreeMap<String, BTreeSet<i64>> {
    let mut out: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for l in stellar_account_operation::Entity::find()
        .all(db)
        .await
        .unwrap()
    {
        out.entry(l.account_id).or_default().insert(l.operation_id);
    }
    out
}

fn expected_links(d: &Devnet, accounts: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<i64>> {
    accounts
        .iter()
        .map(|a| {
            (
                a.clone(),
                d.control()
                    .operations(Some(a))
                    .unwrap()
                    .into_iter()
                    .map(|o| o.id)
                    .collect(),
            )
        })
        .filter(|(_, s): &(String, BTreeSet<i64>)| !s.is_empty())
        .collect()
}

async fn wait_for_links(
    db: &DatabaseConnection,
    want: &BTreeMap<String, BTreeSet<i64>>,
    server: &Server,
    limit: Duration,
) {
    let start = Instant::now();
    let total: u64 = want.values().map(|s| s.len() as u64).sum();
    loop {
        // Cheap count first; the full comparison only when the count matches.
        let n = stellar_account_operation::Entity::find()
            .count(db)
            .await
            .unwrap();
        let got = if n == total {
            links(db).await
        } else {
            BTreeMap::new()
        };
        if &got == want {
            return;
        }
        if start.elapsed() > limit {
            panic!(
                "links never matched: have {n}, want {total}\n{}",
                server.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every watched account's stored and replayed balances equal the devnet's.
async fn assert_balances(db: &DatabaseConnection, d: &Devnet, accounts: &BTreeSet<String>) {
    let issuer = d.control().stellar_issuer();
    for a in accounts {
        let want: BTreeMap<String, i64> = d.control().balances(a).unwrap().into_iter().collect();
        let stored: BTreeMap<String, i64> = stellar_balance::Entity::find()
            .filter(stellar_balance::Column::AccountId.eq(a.clone()))
            .all(db)
            .await
            .unwrap()
            .into_iter()
            .map(|b| {
                let k = if b.asset_issuer.is_empty() {
                    "native".to_string()
                } else {
                    format!("{}:{}", b.asset_code, b.asset_issuer)
                };
                (k, b.balance_stroops)
            })
            .collect();
        assert_eq!(stored, want, "stored balances of {a}");
        if *a == issuer {
            continue;
        }
        let mut replayed: BTreeMap<String, i64> = BTreeMap::new();
        for h in stellar_balance_history::Entity::find()
            .filter(stellar_balance_history::Column::AccountId.eq(a.clone()))
            .order_by_asc(stellar_balance_history::Column::OperationId)
            .all(db)
            .await
            .unwrap()
        {
            let k = if h.asset_issuer.is_empty() {
                "native".to_string()
            } else {
                format!("{}:{}", h.asset_code, h.asset_issuer)
            };
            replayed.insert(k, h.balance_stroops.unwrap());
        }
        for (k, v) in &want {
            assert_eq!(
                replayed.get(k).copied().unwrap_or(0),
                *v,
                "replayed {k} of {a}"
            );
        }
    }
}

async fn wait_synced(db: &DatabaseConnection, server: &Server) {
    let start = Instant::now();
    loop {
        let states = stellar_sync_state::Entity::find().all(db).await.unwrap();
        if !states.is_empty() && states.iter().all(|s| s.status == "synced") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never synced\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A usize from env `key`, `default` when unset or not a number.
fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: the kill schedule's deterministic pseudo-random sequence.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Five kill moments (ms each server lives), spread over a span proportional to `ops`:
/// 600..1600 ms per run at 6,000 operations, scaled linearly above that.
fn kill_schedule(seed: u64, ops: usize) -> Vec<u64> {
    let scale = (ops as f64 / 6_000.0).max(1.0);
    let mut state = seed;
    (0..5)
        .map(|_| ((600 + splitmix(&mut state) % 1_000) as f64 * scale) as u64)
        .collect()
}

#[test]
fn kill_schedule_is_deterministic_and_scales() {
    let a = kill_schedule(42, 6_000);
    assert_eq!(a, kill_schedule(42, 6_000));
    assert_ne!(a, kill_schedule(43, 6_000));
    assert!(a.iter().all(|ms| (600..1_600).contains(ms)), "{a:?}");
    let big = kill_schedule(42, 60_000);
    for (s, b) in a.iter().zip(&big) {
        assert!((*b as i64 - *s as i64 * 10).abs() <= 10, "{a:?} {big:?}");
    }
}

/// Horizon requests of `server` that timed out so far (from its `/metrics`).
async fn horizon_timeouts(server: &Server) -> u64 {
    let Ok(r) = reqwest::get(format!("{}/metrics", server.base)).await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("orrery_upstream_requests_total{")
                && l.contains("status=\"timeout\"")
                && l.contains("upstream=\"horizon\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Sizes: `ORRERY_STELLAR_E2E_ACCOUNTS` (default 60), `ORRERY_STELLAR_E2E_OPS` (default 6000);
/// kill moments from `ORRERY_STELLAR_E2E_SEED` (default: the clock; printed).
#[tokio::test]
async fn backfill_survives_kill9_and_faults_then_follows_live_exactly() {
    let n_accounts = env_usize("ORRERY_STELLAR_E2E_ACCOUNTS", 60);
    let n_ops = env_usize("ORRERY_STELLAR_E2E_OPS", 6_000);
    let seed = std::env::var("ORRERY_STELLAR_E2E_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(rand_u64() as u64);
    let kills = kill_schedule(seed, n_ops);
    println!(
        "stellar e2e: {n_accounts} accounts, {n_ops} operations, seed {seed} \
         (ORRERY_STELLAR_E2E_SEED), kill after {kills:?} ms"
    );
    let started = Instant::now();
    // Final waits grow with the size (90 s at the default size).
    let scale = (n_ops as f64 / 6_000.0).max(1.0);
    let d = devnet(n_accounts, n_ops).await;
    let db = TestDb::new().await;
    // Live following over SSE (the default). A 2 s request timeout so hung requests
    // time out and are retried.
    let env = env_for(&db, &d.urls().horizon, 40, "request_timeout_secs = 2\n");
    let conn = db.connect().await;
    // Faults during the whole backfill: hangs past the client timeout, 503s, 429s with
    // Retry-After (first matching fault wins, so the hang comes first).
    let c = d.control();
    let hang = Fault {
        timeout: Some(Duration::from_secs(10)),
        probability: Some(0.02),
        ..Default::default()
    };
    c.set_fault("horizon", hang.clone());
    c.set_fault(
        "horizon:/accounts",
        Fault {
            status: Some(503),
            probability: Some(0.05),
            ..Default::default()
        },
    );
    c.set_fault(
        "horizon:/operations",
        Fault {
            status: Some(429),
            retry_after: Some(1),
            every_nth: Some(9),
            ..Default::default()
        },
    );
    // kill -9 five times at scattered moments during the backfill.
    let mut timeouts = 0;
    for wait_ms in &kills {
        let mut s = Server::start(&env);
        tokio::time::sleep(Duration::from_millis(*wait_ms)).await;
        timeouts += horizon_timeouts(&s).await;
        s.kill9();
    }
    let partial: usize = links(&conn).await.values().map(BTreeSet::len).sum();
    // The last run finishes the backfill with only the hangs left, so timeouts and their
    // retries are exercised at every size.
    c.clear_faults();
    c.set_fault(
        "horizon",
        Fault {
            probability: Some(0.01),
            ..hang
        },
    );
    let server = Server::start(&env);
    let accounts = holders(&d);
    let want = expected_links(&d, &accounts);
    assert!(
        partial < want.values().map(BTreeSet::len).sum::<usize>(),
        "the kills should land during the backfill"
    );
    println!(
        "stellar e2e: {partial} of {} links stored after the kills ({:.1} s); \
         {timeouts} Horizon request timeouts",
        want.values().map(BTreeSet::len).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    wait_for_links(&conn, &want, &server, Duration::from_secs_f64(90.0 * scale)).await;
    wait_synced(&conn, &server).await;
    let timeouts = timeouts + horizon_timeouts(&server).await;
    c.clear_faults();
    println!(
        "stellar e2e: backfill exact after {:.1} s; {timeouts} Horizon request timeouts in all",
        started.elapsed().as_secs_f64()
    );
    assert!(timeouts > 0, "no request hung past the client timeout");
    // Operation rows: exactly the union, with exact amounts.
    let all: BTreeSet<i64> = want.values().flatten().copied().collect();
    let ops = stellar_operation::Entity::find().all(&conn).await.unwrap();
    assert_eq!(ops.iter().map(|o| o.id).collect::<BTreeSet<_>>(), all);
    let by_id: BTreeMap<i64, i64> = c
        .operations(None)
        .unwrap()
        .into_iter()
        .map(|o| (o.id, o.amount_stroops))
        .collect();
    for o in &ops {
        assert_eq!(o.amount_stroops, Some(by_id[&o.id]), "amount of {}", o.id);
    }
    assert_balances(&conn, &d, &accounts).await;

    // GraphQL: the account, holders ranking, operations, reconciliation.
    let distributor = c.stellar_accounts()[2].clone();
    let r = server
        .graphql(
            "query($id: String!) { account(id: $id) { accountId balances { assetCode balance } \
             syncStatus { status balancesReconciled } missingTrustlines }
             balanceReconciliation { mismatches }
             operations(account: $id, first: 5) { totalCount edges { node { id type amount } } } }",
            json!({"id": distributor}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(r["data"]["account"]["syncStatus"]["status"], "synced");
    assert_eq!(
        r["data"]["account"]["syncStatus"]["balancesReconciled"],
        true
    );
    assert_eq!(r["data"]["balanceReconciliation"]["mismatches"], 0, "{r}");
    assert_eq!(
        r["data"]["operations"]["totalCount"].as_u64().unwrap() as usize,
        want[&distributor].len()
    );
    let issuer = c.stellar_issuer();
    let r = server
        .graphql(
            "query($a: String!) { balances(asset: $a, first: 3) { edges { node { accountId balance } } \
             pageInfo { hasNextPage endCursor } } }",
            json!({"a": format!("UBEC:{issuer}")}),
        )
        .await;
    let edges = r["data"]["balances"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"));
    let mut ranked: Vec<(i64, String)> = accounts
        .iter()
        .filter_map(|a| {
            c.balances(a)
                .unwrap()
                .into_iter()
                .find(|(k, _)| *k == format!("UBEC:{issuer}"))
                .map(|(_, b)| (-b, a.clone()))
        })
        .collect();
    ranked.sort();
    for (e, (_, a)) in edges.iter().zip(&ranked) {
        assert_eq!(e["node"]["accountId"].as_str().unwrap(), a);
    }

    // Live: new ledgers after the backfill are followed with no gap and no duplicate.
    c.generate_operations(400).unwrap();
    let want = expected_links(&d, &accounts);
    wait_for_links(&conn, &want, &server, Duration::from_secs(60)).await;
    // Replayed balances catch up and reconcile again.
    let start = Instant::now();
    loop {
        let r = server
            .graphql("{ balanceReconciliation { mismatches } }", json!({}))
            .await;
        let stored_ok = {
            let mut ok = true;
            for a in &accounts {
                let want: i64 = c
                    .balances(a)
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| k == "native")
                    .map(|x| x.1)
                    .sum();
                let got = stellar_balance::Entity::find()
                    .filter(stellar_balance::Column::AccountId.eq(a.clone()))
                    .filter(stellar_balance::Column::AssetCode.eq("XLM"))
                    .one(&conn)
                    .await
                    .unwrap()
                    .map(|b| b.balance_stroops);
                ok &= got == Some(want);
            }
            ok
        };
        if r["data"]["balanceReconciliation"]["mismatches"] == 0 && stored_ok {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{r}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_balances(&conn, &d, &accounts).await;
    let logs = server.logs();
    assert!(
        !logs.contains("does not stream") && !logs.contains("cannot open the stream"),
        "live following should have used SSE\n{logs}"
    );
    println!(
        "stellar e2e: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    d.shutdown().await;
}

async fn create_distribution(
    conn: &DatabaseConnection,
    name: &str,
    asset_code: &str,
    issuer: &str,
    source: &str,
    recipients: &[(String, i64)],
) -> i64 {
    let now = chrono::Utc::now();
    let d = distribution::ActiveModel {
        name: Set(name.into()),
        asset_code: Set(asset_code.into()),
        asset_issuer: Set(issuer.into()),
        source_account: Set(source.into()),
        total_budget_stroops: Set(recipients.iter().map(|r| r.1).sum::<i64>() + 1),
        status: Set("approved".into()),
        rules_passed: Set(None),
        rules_result: Set(None),
        created_by: Set(Some("test".into())),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
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
        .insert(conn)
        .await
        .unwrap();
    }
    d.id
}

#[tokio::test]
async fn distributions_complete_or_fail_from_on_chain_payments() {
    let d = devnet(20, 800).await;
    let db = TestDb::new().await;
    // Live following by polling (streaming off).
    let env = env_for(
        &db,
        &d.urls().horizon,
        200,
        "stream = false\ndiscover_interval_secs = 1\n",
    );
    let conn = db.connect().await;
    let server = Server::start(&env);
    wait_synced(&conn, &server).await;
    let c = d.control();
    let issuer = c.stellar_issuer();
    let distributor = c.stellar_accounts()[2].clone();
    let ubec = format!("UBEC:{issuer}");
    let recipients: Vec<String> = holders(&d)
        .into_iter()
        .filter(|a| *a != distributor && *a != issuer)
        .filter(|a| c.balances(a).unwrap().iter().any(|(k, _)| *k == ubec))
        .take(3)
        .collect();
    assert_eq!(recipients.len(), 3);
    let good = create_distribution(
        &conn,
        "good",
        "UBEC",
        &issuer,
        &distributor,
        &[
            (recipients[0].clone(), 15_000_000),
            (recipients[1].clone(), 25_000_000),
        ],
    )
    .await;
    let bad = create_distribution(
        &conn,
        "bad",
        "UBEC",
        &issuer,
        &distributor,
        &[(recipients[2].clone(), 30_000_000)],
    )
    .await;
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
    c.advance_ledgers(1).unwrap();
    let q = "query($id: Int!) { distribution(id: $id) { status rulesPassed \
             recipients { accountId status reason paymentOperationId } events { fromStatus toStatus reason } } }";
    let start = Instant::now();
    let (g, b) = loop {
        let g = server.graphql(q, json!({"id": good})).await;
        let b = server.graphql(q, json!({"id": bad})).await;
        if g["data"]["distribution"]["status"] == "completed"
            && b["data"]["distribution"]["status"] == "failed"
        {
            break (g, b);
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "{g}\n{b}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let g = &g["data"]["distribution"];
    assert_eq!(g["rulesPassed"], true, "{g}");
    for r in g["recipients"].as_array().unwrap() {
        assert_eq!(r["status"], "paid");
        assert!(r["paymentOperationId"].is_string());
    }
    let to: Vec<&str> = g["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["toStatus"].as_str().unwrap())
        .collect();
    assert_eq!(to, vec!["executing", "completed"]);
    let b = &b["data"]["distribution"];
    let r: &Value = &b["recipients"][0];
    assert_eq!(r["status"], "failed");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("expected 3.0000000, paid 2.9000000"),
        "{reason}"
    );

    // Full resync of one account: replayed atomically, same links, generation bumped.
    let acc = recipients[0].clone();
    let st = stellar_sync_state::Entity::find_by_id(acc.clone())
        .one(&conn)
        .await
        .unwrap()
        .unwrap();
    let mut a: stellar_sync_state::ActiveModel = st.into();
    a.mode = Set("full".into());
    a.status = Set("requested".into());
    a.update(&conn).await.unwrap();
    let start = Instant::now();
    loop {
        let st = stellar_sync_state::Entity::find_by_id(acc.clone())
            .one(&conn)
            .await
            .unwrap()
            .unwrap();
        if st.generation == 1 && st.status == "synced" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{st:?}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let one = BTreeSet::from([acc.clone()]);
    let want = expected_links(&d, &one);
    let got = links(&conn).await;
    assert_eq!(got.get(&acc), want.get(&acc));
    assert_balances(&conn, &d, &one).await;

    // DEX prices: the stored XLM/UBEC closes equal Horizon's trade aggregations.
    let url = format!(
        "{}/trade_aggregations?base_asset_type=native&counter_asset_type=credit_alphanum4\
         &counter_asset_code=UBEC&counter_asset_issuer={issuer}&resolution=3600000&start_time=0&limit=200",
        d.urls().horizon
    );
    let agg: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let want: BTreeMap<i64, String> = agg["_embedded"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["timestamp"].as_str().unwrap().parse().unwrap(),
                r["close"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!want.is_empty());
    let start = Instant::now();
    loop {
        let got: BTreeMap<i64, String> = orrery_entity::price_point::Entity::find()
            .filter(orrery_entity::price_point::Column::Source.eq("STELLAR_DEX"))
            .all(&conn)
            .await
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p.at.timestamp_millis(),
                    p.details.unwrap()["close_exact"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        if got == want {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{got:?} != {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    d.shutdown().await;
}

/// Peak resident memory (kB) of the server process using `db_url`, from /proc.
fn server_peak_rss_kb(db_url: &str) -> Option<u64> {
    let needle = format!("DATABASE_URL={db_url}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            return line.split_whitespace().nth(1)?.parse().ok();
        }
    }
    None
}

/// Backfill benchmark at the size: 1,000 accounts, 100,000 operations
/// (`ORRERY_BENCH_ACCOUNTS` / `ORRERY_BENCH_OPS` override).
#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_backfill() {
    let var = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let d = devnet(
        var("ORRERY_BENCH_ACCOUNTS", 1_000),
        var("ORRERY_BENCH_OPS", 100_000),
    )
    .await;
    let db = TestDb::new().await;
    let env = env_for(&db, &d.urls().horizon, 200, "");
    let conn = db.connect().await;
    let accounts = holders(&d);
    let want = expected_links(&d, &accounts);
    let links_total: usize = want.values().map(BTreeSet::len).sum();
    let started = Instant::now();
    let server = Server::start(&env);
    wait_for_links(&conn, &want, &server, Duration::from_secs(3_600)).await;
    wait_synced(&conn, &server).await;
    let secs = started.elapsed().as_secs_f64();
    let rss = server_peak_rss_kb(&db.url);
    println!(
        "BENCH stellar backfill: {} accounts, {} operations, {} account links in {:.1} s \
         = {:.0} links/s; server peak RSS {:?} kB",
        accounts.len(),
        d.control().operation_count(),
        links_total,
        secs,
        links_total as f64 / secs,
        rss
    );
    assert_balances(&conn, &d, &accounts).await;
    d.shutdown().await;
}
