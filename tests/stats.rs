//! Aggregations over GraphQL against a brute-force recount of the same rows: operations
//! (total, hour/day/week buckets, by type, asset and source account, filtered by account
//! and asset), balances (holders, supply, distribution), EVM events (by name, contract,
//! day), feedback scores per agent and distributions. Runs on SQLite, and on PostgreSQL
//! with `ORRERY_TEST_PG_URL`.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use common::{base_env, Server, TestDb};
use orrery_entity::{
    distribution, distribution_recipient, erc8004_feedback, evm_block, evm_event,
    stellar_account_operation, stellar_balance, stellar_operation,
};
use sea_orm::{ActiveModelTrait, Set};
use serde_json::{json, Value};

/// A deterministic pseudo-random sequence (no dependency, same rows on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn units(stroops: i128) -> String {
    let sign = if stroops < 0 { "-" } else { "" };
    let a = stroops.unsigned_abs();
    format!("{sign}{}.{:07}", a / 10_000_000, a % 10_000_000)
}

/// count, amountCount, sum, min, max of `amounts` as the API shows them.
fn stats(amounts: &[Option<i64>]) -> Value {
    let some: Vec<i64> = amounts.iter().flatten().copied().collect();
    json!({
        "count": amounts.len(),
        "amountCount": some.len(),
        "sum": (!some.is_empty()).then(|| units(some.iter().map(|v| *v as i128).sum())),
        "min": some.iter().min().map(|v| units(*v as i128)),
        "max": some.iter().max().map(|v| units(*v as i128)),
    })
}

const STATS: &str = "{ count amountCount sum min max }";

/// Groups sorted as the API sorts them: most rows first, then by key.
fn ranked(groups: BTreeMap<String, Vec<Option<i64>>>) -> Value {
    let mut v: Vec<(String, Vec<Option<i64>>)> = groups.into_iter().collect();
    v.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    Value::Array(
        v.into_iter()
            .map(|(k, a)| json!({ "key": k, "stats": stats(&a) }))
            .collect(),
    )
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The start of `t`'s bucket of `width` seconds (weeks start on Monday).
fn bucket(t: DateTime<Utc>, width: i64) -> i64 {
    let s = t.timestamp();
    if width == 604_800 {
        (s - 345_600).div_euclid(width) * width + 345_600
    } else {
        s.div_euclid(width) * width
    }
}

fn same_instant(api: &Value, want: i64) -> bool {
    api.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|t| t.timestamp() == want)
}

#[derive(Clone)]
struct Op {
    id: i64,
    at: DateTime<Utc>,
    ty: &'static str,
    source: String,
    asset: Option<(&'static str, &'static str)>,
    amount: Option<i64>,
    linked: bool,
}

fn asset_key(a: (&str, &str)) -> String {
    if a.1.is_empty() {
        a.0.to_string()
    } else {
        format!("{}:{}", a.0, a.1)
    }
}

const ISSUER: &str = "GISSUERAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const WATCHED: &str = "GWATCHEDAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[tokio::test]
async fn aggregations_equal_a_brute_force_recount() {
    let db = TestDb::new().await;
    let server = Server::start(&base_env(&db));
    let conn = db.connect().await;
    let mut rng = Lcg(7);

    // ---- Stellar operations over three weeks, some linked to a watched account.
    let start = Utc.with_ymd_and_hms(2024, 3, 6, 13, 0, 0).unwrap();
    let types = [
        "payment",
        "create_account",
        "path_payment_strict_send",
        "set_options",
    ];
    let assets = [("XLM", ""), ("USDC", ISSUER), ("UBEC", ISSUER)];
    let mut ops = Vec::new();
    for i in 0..400i64 {
        let ty = types[rng.next(4) as usize];
        let asset = (ty != "set_options").then(|| assets[rng.next(3) as usize]);
        let amount = asset.map(|_| 1 + rng.next(9_000_000_000_000) as i64);
        let op = Op {
            id: 1_000 + i,
            at: start + chrono::Duration::seconds(rng.next(21 * 86_400) as i64),
            ty,
            source: format!("GSRC{}", rng.next(5)),
            asset,
            amount,
            linked: rng.next(3) == 0,
        };
        stellar_operation::ActiveModel {
            id: Set(op.id),
            paging_token: Set(op.id.to_string()),
            transaction_hash: Set(format!("tx{i}")),
            ledger: Set(Some(100 + i)),
            created_at: Set(op.at),
            op_type: Set(op.ty.to_string()),
            source_account: Set(op.source.clone()),
            from_account: Set(None),
            to_account: Set(None),
            asset_type: Set(op.asset.map(|a| {
                if a.1.is_empty() {
                    "native"
                } else {
                    "credit_alphanum4"
                }
                .to_string()
            })),
            asset_code: Set(op.asset.map(|a| a.0.to_string())),
            asset_issuer: Set(op.asset.map(|a| a.1.to_string())),
            amount_stroops: Set(op.amount),
            successful: Set(true),
            details: Set(json!({})),
        }
        .insert(&conn)
        .await
        .expect("insert operation");
        if op.linked {
            stellar_account_operation::ActiveModel {
                account_id: Set(WATCHED.to_string()),
                operation_id: Set(op.id),
                created_at: Set(op.at),
            }
            .insert(&conn)
            .await
            .expect("insert link");
        }
        ops.push(op);
    }

    let from = start - chrono::Duration::hours(1);
    let to = start + chrono::Duration::days(21);
    for (interval, width) in [("HOUR", 3_600i64), ("DAY", 86_400), ("WEEK", 604_800)] {
        for (account, asset) in [
            (None, None),
            (Some(WATCHED), None),
            (None, Some(("USDC", ISSUER))),
        ] {
            let chosen: Vec<&Op> = ops
                .iter()
                .filter(|o| account.is_none() || o.linked)
                .filter(|o| asset.is_none() || o.asset == asset)
                .filter(|o| o.at >= from && o.at < to)
                .collect();
            let q = format!(
                "query($account: String, $asset: String) {{ operationStats(account: $account, asset: $asset, interval: {interval}, from: \"{}\", to: \"{}\") {{
                    total {STATS} buckets {{ start stats {STATS} }}
                    byType(first: 200) {{ key stats {STATS} }}
                    byAsset(first: 200) {{ key stats {STATS} }}
                    bySourceAccount(first: 200) {{ key stats {STATS} }} }} }}",
                rfc(from),
                rfc(to)
            );
            let vars = json!({ "account": account, "asset": asset.map(asset_key) });
            let resp = server.graphql(&q, vars).await;
            assert!(
                resp["errors"].is_null(),
                "{interval} {account:?} {asset:?}: {resp}"
            );
            let s = &resp["data"]["operationStats"];
            let amounts = |os: &[&Op]| os.iter().map(|o| o.amount).collect::<Vec<_>>();
            assert_eq!(s["total"], stats(&amounts(&chosen)), "total {interval}");

            let mut by_bucket: BTreeMap<i64, Vec<Option<i64>>> = BTreeMap::new();
            let mut by_type = BTreeMap::new();
            let mut by_asset = BTreeMap::new();
            let mut by_source = BTreeMap::new();
            for o in &chosen {
                by_bucket
                    .entry(bucket(o.at, width))
                    .or_default()
                    .push(o.amount);
                by_type
                    .entry(o.ty.to_string())
                    .or_insert_with(Vec::new)
                    .push(o.amount);
                if let Some(a) = o.asset {
                    by_asset
                        .entry(asset_key(a))
                        .or_insert_with(Vec::new)
                        .push(o.amount);
                }
                by_source
                    .entry(o.source.clone())
                    .or_insert_with(Vec::new)
                    .push(o.amount);
            }
            let buckets = s["buckets"].as_array().unwrap();
            assert_eq!(buckets.len(), by_bucket.len(), "{interval} bucket count");
            for (b, (start, amounts)) in buckets.iter().zip(&by_bucket) {
                assert!(
                    same_instant(&b["start"], *start),
                    "{interval}: {b} vs {start}"
                );
                assert_eq!(b["stats"], stats(amounts), "{interval} bucket {start}");
            }
            assert_eq!(s["byType"], ranked(by_type), "byType {interval}");
            assert_eq!(s["byAsset"], ranked(by_asset), "byAsset {interval}");
            assert_eq!(
                s["bySourceAccount"],
                ranked(by_source),
                "bySource {interval}"
            );
        }
    }

    // ---- Balances of one asset, zero balances and another asset included.
    let mut balances = Vec::new();
    for i in 0..120 {
        let (code, issuer) = if i % 7 == 0 {
            ("XLM", "")
        } else {
            ("UBEC", ISSUER)
        };
        let amount = match rng.next(4) {
            0 => 0,
            1 => rng.next(10_000_000) as i64,
            2 => rng.next(100_000_000_000) as i64,
            _ => rng.next(50_000_000_000_000) as i64,
        };
        stellar_balance::ActiveModel {
            account_id: Set(format!("GHOLDER{i}")),
            asset_type: Set("credit_alphanum4".into()),
            asset_code: Set(code.into()),
            asset_issuer: Set(issuer.into()),
            balance_stroops: Set(amount),
            limit_stroops: Set(None),
            last_modified_ledger: Set(None),
            updated_at: Set(start),
            ..Default::default()
        }
        .insert(&conn)
        .await
        .expect("insert balance");
        if code == "UBEC" {
            balances.push(amount);
        }
    }
    let bounds = ["1", "1000", "100000.5"];
    let bound_stroops = [10_000_000i64, 10_000_000_000, 1_000_005_000_000];
    let resp = server
        .graphql(
            &format!("{{ balanceStats(asset: \"UBEC:{ISSUER}\") {{ asset summary {{ holders stats {STATS} }}
                distribution(bounds: [\"1\", \"1000\", \"100000.5\"]) {{ from to holders total }} }} }}"),
            json!({}),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp}");
    let s = &resp["data"]["balanceStats"];
    let some: Vec<Option<i64>> = balances.iter().map(|b| Some(*b)).collect();
    assert_eq!(s["summary"]["stats"], stats(&some));
    assert_eq!(
        s["summary"]["holders"],
        json!(balances.iter().filter(|b| **b > 0).count())
    );
    let mut edges = vec![0i64];
    edges.extend(bound_stroops);
    let dist = s["distribution"].as_array().unwrap();
    assert_eq!(dist.len(), bounds.len() + 1);
    for (i, d) in dist.iter().enumerate() {
        let lo = edges[i];
        let hi = edges.get(i + 1).copied();
        let inside: Vec<i64> = balances
            .iter()
            .copied()
            .filter(|b| *b >= lo && hi.is_none_or(|h| *b < h) || (i == 0 && *b < 0))
            .collect();
        assert_eq!(d["from"], json!(units(lo as i128)), "{d}");
        assert_eq!(d["to"], json!(hi.map(|h| units(h as i128))), "{d}");
        assert_eq!(d["holders"], json!(inside.len()), "{d}");
        assert_eq!(
            d["total"],
            json!(units(inside.iter().map(|b| *b as i128).sum())),
            "{d}"
        );
    }

    // ---- EVM events with their blocks (one block an hour), two chains.
    let contracts = [
        "0xaaaa000000000000000000000000000000000001",
        "0xbbbb000000000000000000000000000000000002",
    ];
    let names = ["Registered", "NewFeedback", "Transfer"];
    let mut events = Vec::new();
    for n in 0..200i64 {
        let at = start + chrono::Duration::hours(n);
        evm_block::ActiveModel {
            chain: Set("sepolia".into()),
            number: Set(n),
            hash: Set(format!("0xb{n}")),
            parent_hash: Set(format!("0xb{}", n - 1)),
            timestamp: Set(at),
        }
        .insert(&conn)
        .await
        .expect("insert block");
        for k in 0..rng.next(4) {
            let (contract, name) = (contracts[rng.next(2) as usize], names[rng.next(3) as usize]);
            evm_event::ActiveModel {
                chain: Set("sepolia".into()),
                block_number: Set(n),
                block_hash: Set(format!("0xb{n}")),
                tx_hash: Set(format!("0xt{n}")),
                log_index: Set(k as i32),
                contract: Set(contract.into()),
                name: Set(name.into()),
                args: Set(json!({})),
                created_at: Set(at),
                ..Default::default()
            }
            .insert(&conn)
            .await
            .expect("insert event");
            events.push((n, at, contract, name));
        }
    }
    let resp = server
        .graphql(
            "{ eventStats(chain: \"sepolia\", fromBlock: 10, toBlock: 150) { count byName { key count } byContract { key count } buckets(interval: DAY, first: 200) { start count } } }",
            json!({}),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp}");
    let s = &resp["data"]["eventStats"];
    let chosen: Vec<_> = events
        .iter()
        .filter(|e| (10..=150).contains(&e.0))
        .collect();
    assert_eq!(s["count"], json!(chosen.len()));
    let count_ranked = |m: BTreeMap<String, usize>| {
        let mut v: Vec<(String, usize)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Value::Array(
            v.into_iter()
                .map(|(k, n)| json!({ "key": k, "count": n }))
                .collect(),
        )
    };
    let mut by_name = BTreeMap::new();
    let mut by_contract = BTreeMap::new();
    let mut by_day: BTreeMap<i64, usize> = BTreeMap::new();
    for e in &chosen {
        *by_name.entry(e.3.to_string()).or_insert(0) += 1;
        *by_contract.entry(e.2.to_string()).or_insert(0) += 1;
        *by_day.entry(bucket(e.1, 86_400)).or_insert(0) += 1;
    }
    assert_eq!(s["byName"], count_ranked(by_name));
    assert_eq!(s["byContract"], count_ranked(by_contract));
    let days = s["buckets"].as_array().unwrap();
    assert_eq!(days.len(), by_day.len());
    for (d, (start, n)) in days.iter().zip(&by_day) {
        assert!(same_instant(&d["start"], *start), "{d}");
        assert_eq!(d["count"], json!(n), "{d}");
    }

    // ---- Feedback scores per agent, revoked feedback excluded.
    let mut feedback: BTreeMap<String, (Vec<i64>, usize)> = BTreeMap::new();
    for i in 0..150i64 {
        let agent = format!("{}", [1, 2, 10, 11, 100][rng.next(5) as usize]);
        let score = rng.next(101) as i32;
        let revoked = rng.next(5) == 0;
        erc8004_feedback::ActiveModel {
            chain: Set("sepolia".into()),
            agent_id: Set(agent.clone()),
            client_address: Set(format!("0xc{}", rng.next(9))),
            feedback_index: Set(Some(i.to_string())),
            score: Set(score),
            tag1: Set(None),
            tag2: Set(None),
            uri: Set(None),
            file_hash: Set(None),
            revoked: Set(revoked),
            block_number: Set(i),
            tx_hash: Set(format!("0xf{i}")),
            log_index: Set(0),
            ..Default::default()
        }
        .insert(&conn)
        .await
        .expect("insert feedback");
        let e = feedback.entry(agent).or_default();
        if revoked {
            e.1 += 1;
        } else {
            e.0.push(score.into());
        }
    }
    let resp = server
        .graphql(
            "{ feedbackStats(chain: \"sepolia\") { agentId count revoked scoreSum minScore maxScore averageScore } }",
            json!({}),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp}");
    let mut agents: Vec<&String> = feedback.keys().collect();
    agents.sort_by_key(|a| (a.len(), (*a).clone()));
    let want: Vec<Value> = agents
        .iter()
        .map(|a| {
            let (scores, revoked) = &feedback[*a];
            let sum: i64 = scores.iter().sum();
            let avg = (!scores.is_empty()).then(|| {
                let d =
                    rust_decimal::Decimal::from(sum) / rust_decimal::Decimal::from(scores.len());
                d.round_dp(6).normalize().to_string()
            });
            json!({ "agentId": a, "count": scores.len(), "revoked": revoked,
                    "scoreSum": sum.to_string(), "minScore": scores.iter().min(),
                    "maxScore": scores.iter().max(), "averageScore": avg })
        })
        .collect();
    assert_eq!(resp["data"]["feedbackStats"], Value::Array(want));

    // ---- Distributions and recipients by status.
    let statuses = ["draft", "approved", "completed"];
    let mut by_status: BTreeMap<String, Vec<Option<i64>>> = BTreeMap::new();
    let mut by_recipient: BTreeMap<String, Vec<Option<i64>>> = BTreeMap::new();
    for i in 0..12 {
        let status = statuses[rng.next(3) as usize];
        let budget = 1 + rng.next(1_000_000_000_000) as i64;
        let d = distribution::ActiveModel {
            name: Set(format!("d{i}")),
            asset_code: Set("UBEC".into()),
            asset_issuer: Set(ISSUER.into()),
            source_account: Set(WATCHED.into()),
            total_budget_stroops: Set(budget),
            status: Set(status.into()),
            rules_passed: Set(None),
            rules_result: Set(None),
            created_by: Set(None),
            created_at: Set(start),
            updated_at: Set(start),
            ..Default::default()
        }
        .insert(&conn)
        .await
        .expect("insert distribution");
        by_status
            .entry(status.into())
            .or_default()
            .push(Some(budget));
        for r in 0..rng.next(5) {
            let rs = ["pending", "paid", "failed"][rng.next(3) as usize];
            let amount = 1 + rng.next(10_000_000_000) as i64;
            distribution_recipient::ActiveModel {
                distribution_id: Set(d.id),
                account_id: Set(format!("GREC{r}")),
                amount_stroops: Set(amount),
                status: Set(rs.into()),
                reason: Set(None),
                payment_operation_id: Set(None),
                transaction_hash: Set(None),
                paid_at: Set(None),
                ..Default::default()
            }
            .insert(&conn)
            .await
            .expect("insert recipient");
            by_recipient
                .entry(rs.into())
                .or_default()
                .push(Some(amount));
        }
    }
    let resp = server
        .graphql(
            &format!("{{ distributionStats {{ byStatus {{ key stats {STATS} }} recipientsByStatus {{ key stats {STATS} }} }} }}"),
            json!({}),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp}");
    let by_key = |m: BTreeMap<String, Vec<Option<i64>>>| {
        Value::Array(
            m.into_iter()
                .map(|(k, a)| json!({ "key": k, "stats": stats(&a) }))
                .collect(),
        )
    };
    assert_eq!(
        resp["data"]["distributionStats"]["byStatus"],
        by_key(by_status)
    );
    assert_eq!(
        resp["data"]["distributionStats"]["recipientsByStatus"],
        by_key(by_recipient)
    );

    // ---- The same cost limits: a year of hours is refused, bad ranges are named.
    let resp = server
        .graphql(
            "{ operationStats(interval: HOUR, from: \"2023-01-01T00:00:00Z\", to: \"2024-01-01T00:00:00Z\") { buckets { start stats { count sum } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        resp["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{resp}"
    );
    let resp = server
        .graphql(
            "{ operationStats(from: \"2024-01-02T00:00:00Z\", to: \"2024-01-01T00:00:00Z\") { total { count } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        resp["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{resp}"
    );
}
