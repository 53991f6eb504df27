//! Stellar admin mutations end to end against a devnet Horizon: watch / unwatch without
//! restart, targeted resync, distributions created, approved and cancelled through GraphQL
//! and completed by on-chain payments; refused tokens leave nothing behind; every accepted
//! mutation leaves one audit row. Also a Horizon 503 burst opening and closing the breaker.
//! Runs on SQLite by default, on PostgreSQL + Redis when `ORRERY_TEST_PG_URL` is set.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{base_env, run_cli, Server, TestDb};
use orrery_api::auth::Role;
use orrery_devnet::faults::Fault;
use orrery_devnet::{Devnet, DevnetConfig};
use orrery_entity::{
    audit_log, circuit_breaker, distribution, stellar_account, stellar_account_operation,
    stellar_balance, stellar_sync_state,
};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};

const SECRET: &str = "stellar-admin-secret-0123456789";

async fn devnet(accounts: usize, ops: usize) -> Devnet {
    let mut c = DevnetConfig::default();
    c.stellar.accounts = accounts;
    c.stellar.initial_operations = ops;
    c.evm_chains.clear();
    Devnet::start(c).await.unwrap()
}

/// Server env: `[stellar]` on the devnet plus `extra`, and the JWT secret.
fn env_for(db: &TestDb, horizon: &str, extra: &str) -> Vec<(String, String)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("orrery_stadm_{}_{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("orrery.toml");
    std::fs::write(
        &path,
        format!(
            "[stellar]\nhorizon_url = \"{horizon}\"\nassets = [\"UBEC\"]\npage_size = 50\n\
             requests_per_hour = 10000000\npoll_interval_ms = 100\nstream = false\n\
             distribution_memo_prefix = \"odist:\"\n{extra}"
        ),
    )
    .unwrap();
    let mut env = base_env(db);
    env.push(("ORRERY_CONFIG".into(), path.display().to_string()));
    env.push(("JWT_SECRET".into(), SECRET.into()));
    env.push(("ORRERY_FAILED_AUTH_LIMIT".into(), "1000".into()));
    env
}

fn issue(env: &[(String, String)], role: &str, subject: &str) -> String {
    let (code, out, err) = run_cli(
        env,
        &["token", "issue", "--role", role, "--subject", subject],
    );
    assert_eq!(code, 0, "token issue: {err}");
    out.trim().to_string()
}

fn expired_token() -> String {
    common::tokens::signed(SECRET, Role::Operator, "late-operator", -3600)
}

async fn as_token(server: &Server, token: &str, query: &str, vars: Value) -> Value {
    server
        .graphql_with_headers(query, vars, &[("authorization", format!("Bearer {token}"))])
        .await
}

/// Calls `query` with a viewer, an expired and no token: each refused with its code.
async fn refused(server: &Server, viewer: &str, query: &str, vars: Value) {
    let expired = expired_token();
    for (what, token, code) in [
        ("viewer", Some(viewer), "FORBIDDEN"),
        ("expired", Some(expired.as_str()), "UNAUTHENTICATED"),
        ("missing", None, "UNAUTHENTICATED"),
    ] {
        let resp = match token {
            Some(t) => as_token(server, t, query, vars.clone()).await,
            None => server.graphql(query, vars.clone()).await,
        };
        assert_eq!(
            resp["errors"][0]["extensions"]["code"], code,
            "{what} token on {query}: {resp}"
        );
    }
}

fn ok(resp: &Value, field: &str) -> Value {
    assert!(resp["errors"].is_null(), "{field}: {resp}");
    resp["data"][field].clone()
}

fn bad_input(resp: &Value, argument: &str) -> String {
    let e = &resp["errors"][0];
    assert_eq!(e["extensions"]["code"], "BAD_USER_INPUT", "{resp}");
    assert_eq!(e["extensions"]["argument"], argument, "{resp}");
    e["message"].as_str().unwrap().to_string()
}

async fn audit_rows(conn: &DatabaseConnection) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in audit_log::Entity::find().all(conn).await.unwrap() {
        *out.entry(r.action).or_default() += 1;
    }
    out
}

async fn links_of(conn: &DatabaseConnection, account: &str) -> BTreeSet<i64> {
    stellar_account_operation::Entity::find()
        .filter(stellar_account_operation::Column::AccountId.eq(account))
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.operation_id)
        .collect()
}

fn devnet_ops(d: &Devnet, account: &str) -> BTreeSet<i64> {
    d.control()
        .operations(Some(account))
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect()
}

/// Waits until `cond` holds, polling every 200 ms; panics with the server log after `secs`.
macro_rules! wait_until {
    ($server:expr, $secs:expr, $what:expr, $cond:expr) => {{
        let start = Instant::now();
        loop {
            if $cond {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs($secs),
                "timed out waiting for {}\n{}",
                $what,
                $server.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }};
}

async fn synced(conn: &DatabaseConnection, account: &str) -> bool {
    stellar_sync_state::Entity::find_by_id(account.to_string())
        .one(conn)
        .await
        .unwrap()
        .is_some_and(|s| s.status == "synced")
}

const WATCH: &str = "mutation($id: String!) { watchAccount(id: $id) { accountId watched } }";
const UNWATCH: &str = "mutation($id: String!) { unwatchAccount(id: $id) { accountId watched } }";
const RESYNC: &str = "mutation($id: String!, $mode: ResyncModeInput!, $from: Int, $to: Int) { \
    resyncAccount(id: $id, mode: $mode, fromLedger: $from, toLedger: $to) { accountId status mode } }";
const CREATE: &str = "mutation($input: CreateDistributionInput!) { createDistribution(input: $input) { \
    id status rulesPassed rulesResult totalBudget recipients { accountId amount status } events { toStatus actor } } }";
const APPROVE: &str = "mutation($id: Int!) { approveDistribution(id: $id) { id status } }";
const CANCEL: &str =
    "mutation($id: Int!, $reason: String!) { cancelDistribution(id: $id, reason: $reason) { id status events { toStatus reason actor } } }";

#[tokio::test]
async fn operators_watch_resync_and_run_distributions_with_an_audit_trail() {
    let d = devnet(10, 200).await;
    let c = d.control();
    let issuer = c.stellar_issuer();
    let ubec = format!("UBEC:{issuer}");
    let distributor = c.stellar_accounts()[2].clone();
    let holders: Vec<String> = c
        .stellar_accounts()
        .into_iter()
        .filter(|a| *a != distributor && *a != issuer)
        .filter(|a| c.balances(a).unwrap().iter().any(|(k, _)| *k == ubec))
        .collect();
    assert!(holders.len() >= 4, "devnet has too few UBEC holders");
    let (r0, r1, r2, outsider) = (&holders[0], &holders[1], &holders[2], &holders[3]);
    let db = TestDb::new().await;
    let extra =
        format!("discover = false\naccounts = [\"{distributor}\", \"{r0}\", \"{r1}\", \"{r2}\"]\n");
    let env = env_for(&db, &d.urls().horizon, &extra);
    let operator = issue(&env, "operator", "op-alice");
    let viewer = issue(&env, "viewer", "viewer-bob");
    let conn = db.connect().await;
    let server = Server::start(&env);
    wait_until!(server, 40, "the configured accounts to sync", {
        let states = stellar_sync_state::Entity::find().all(&conn).await.unwrap();
        states.len() == 4 && states.iter().all(|s| s.status == "synced")
    });
    assert!(links_of(&conn, outsider).await.is_empty());

    // Refused tokens: nothing written, no audit row.
    let vars = json!({ "id": outsider });
    refused(&server, &viewer, WATCH, vars.clone()).await;
    assert!(stellar_account::Entity::find_by_id(outsider.clone())
        .one(&conn)
        .await
        .unwrap()
        .is_none());
    assert!(audit_rows(&conn).await.is_empty());

    // Bad input names the argument; unknown ids are NOT_FOUND; nothing written.
    let r = as_token(&server, &operator, WATCH, json!({ "id": "GABC" })).await;
    assert!(bad_input(&r, "id").contains("56"));
    let lower = outsider.to_lowercase();
    bad_input(
        &as_token(&server, &operator, WATCH, json!({ "id": lower })).await,
        "id",
    );
    let unknown = format!("G{}", "A".repeat(55));
    let r = as_token(&server, &operator, UNWATCH, json!({ "id": unknown })).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "NOT_FOUND", "{r}");
    let r = as_token(
        &server,
        &operator,
        RESYNC,
        json!({ "id": distributor, "mode": "TARGETED", "to": 5 }),
    )
    .await;
    bad_input(&r, "fromLedger");
    let r = as_token(
        &server,
        &operator,
        RESYNC,
        json!({ "id": distributor, "mode": "TARGETED", "from": 9, "to": 5 }),
    )
    .await;
    bad_input(&r, "toLedger");
    assert!(audit_rows(&conn).await.is_empty());

    // Watch: picked up without restart, synced exactly.
    let w = ok(
        &as_token(&server, &operator, WATCH, vars.clone()).await,
        "watchAccount",
    );
    assert_eq!(w["watched"], true);
    let want = devnet_ops(&d, outsider);
    assert!(!want.is_empty());
    wait_until!(server, 20, "the watched account to sync", {
        synced(&conn, outsider).await && links_of(&conn, outsider).await == want
    });
    let stored: i64 = stellar_balance::Entity::find()
        .filter(stellar_balance::Column::AccountId.eq(outsider.clone()))
        .filter(stellar_balance::Column::AssetCode.eq("UBEC"))
        .one(&conn)
        .await
        .unwrap()
        .unwrap()
        .balance_stroops;
    let devnet_bal = c
        .balances(outsider)
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == ubec)
        .unwrap()
        .1;
    assert_eq!(stored, devnet_bal);

    // Unwatch: the account's data stays, new operations are no longer fetched for it.
    refused(&server, &viewer, UNWATCH, vars.clone()).await;
    let u = ok(
        &as_token(&server, &operator, UNWATCH, vars.clone()).await,
        "unwatchAccount",
    );
    assert_eq!(u["watched"], false);
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.submit_payment(
        &distributor,
        outsider,
        "UBEC",
        "0.25",
        Some("after-unwatch"),
    )
    .unwrap();
    c.advance_ledgers(1).unwrap();
    let newest = *devnet_ops(&d, outsider).iter().max().unwrap();
    assert!(!want.contains(&newest));
    wait_until!(server, 20, "the distributor to see the new payment", {
        links_of(&conn, &distributor).await.contains(&newest)
    });
    assert_eq!(
        links_of(&conn, outsider).await,
        want,
        "unwatched: untouched"
    );

    // Targeted resync: links of a ledger range deleted behind the indexer's back come back;
    // nothing else changes.
    let before = links_of(&conn, &distributor).await;
    let ledgers: Vec<i64> = before.iter().map(|id| id >> 32).collect();
    let (from, to) = (ledgers[ledgers.len() / 4], ledgers[ledgers.len() / 2]);
    let removed = stellar_account_operation::Entity::delete_many()
        .filter(stellar_account_operation::Column::AccountId.eq(distributor.clone()))
        .filter(stellar_account_operation::Column::OperationId.gte(from << 32))
        .filter(stellar_account_operation::Column::OperationId.lt((to + 1) << 32))
        .exec(&conn)
        .await
        .unwrap()
        .rows_affected;
    assert!(removed > 0);
    let targeted = json!({ "id": distributor, "mode": "TARGETED", "from": from, "to": to });
    refused(&server, &viewer, RESYNC, targeted.clone()).await;
    let r = ok(
        &as_token(&server, &operator, RESYNC, targeted).await,
        "resyncAccount",
    );
    assert_eq!(r["status"], "requested");
    assert_eq!(r["mode"], format!("targeted:{from}-{to}"));
    wait_until!(server, 20, "the targeted resync", {
        let st = stellar_sync_state::Entity::find_by_id(distributor.clone())
            .one(&conn)
            .await
            .unwrap()
            .unwrap();
        st.status != "requested" && links_of(&conn, &distributor).await == before
    });
    assert_eq!(
        links_of(&conn, &distributor).await,
        devnet_ops(&d, &distributor)
    );

    // Distributions: one passes its rules, is approved and completed by payments.
    let input = json!({ "input": {
        "name": "spring payout", "assetCode": "UBEC", "assetIssuer": issuer,
        "sourceAccount": distributor, "totalBudget": "10",
        "recipients": [{ "account": r0, "amount": "1.5" }, { "account": r1, "amount": "2.5000001" }]
    }});
    refused(&server, &viewer, CREATE, input.clone()).await;
    let mut bad = input.clone();
    bad["input"]["totalBudget"] = json!("1.00000001");
    bad_input(
        &as_token(&server, &operator, CREATE, bad).await,
        "totalBudget",
    );
    let mut bad = input.clone();
    bad["input"]["recipients"][1]["amount"] = json!("2,5");
    bad_input(
        &as_token(&server, &operator, CREATE, bad).await,
        "recipients",
    );
    assert_eq!(distribution::Entity::find().count(&conn).await.unwrap(), 0);
    let good = ok(
        &as_token(&server, &operator, CREATE, input).await,
        "createDistribution",
    );
    assert_eq!(good["status"], "draft");
    assert_eq!(good["rulesPassed"], true, "{good}");
    assert_eq!(good["totalBudget"], "10.0000000");
    assert_eq!(good["recipients"][1]["amount"], "2.5000001");
    assert_eq!(good["events"][0]["toStatus"], "draft");
    assert_eq!(good["events"][0]["actor"], "op-alice");
    let good_id = good["id"].as_i64().unwrap();
    refused(&server, &viewer, APPROVE, json!({ "id": good_id })).await;
    let r = as_token(&server, &operator, APPROVE, json!({ "id": 999_999 })).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "NOT_FOUND", "{r}");
    let mut sub = server
        .subscribe(
            "graphql-transport-ws",
            &format!("subscription {{ distributionUpdated(id: {good_id}) {{ id status }} }}"),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = ok(
        &as_token(&server, &operator, APPROVE, json!({ "id": good_id })).await,
        "approveDistribution",
    );
    assert_eq!(a["status"], "approved");
    let pushed = sub.next_data().await;
    assert_eq!(
        pushed["distributionUpdated"]["status"], "approved",
        "{pushed}"
    );
    let memo = format!("odist:{good_id}");
    c.submit_payment(&distributor, r0, "UBEC", "1.5", Some(&memo))
        .unwrap();
    c.submit_payment(&distributor, r1, "UBEC", "2.5000001", Some(&memo))
        .unwrap();
    c.advance_ledgers(1).unwrap();
    let q = "query($id: Int!) { distribution(id: $id) { status recipients { status } events { toStatus } } }";
    wait_until!(server, 30, "the distribution to complete", {
        server.graphql(q, json!({ "id": good_id })).await["data"]["distribution"]["status"]
            == "completed"
    });
    let done = server.graphql(q, json!({ "id": good_id })).await;
    let to: Vec<&str> = done["data"]["distribution"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["toStatus"].as_str().unwrap())
        .collect();
    assert_eq!(to, ["draft", "approved", "executing", "completed"]);

    // Another fails its rules: approval is refused with the reasons; it is cancelled.
    let input = json!({ "input": {
        "name": "too big", "assetCode": "UBEC", "assetIssuer": issuer,
        "sourceAccount": distributor, "totalBudget": "1",
        "recipients": [{ "account": r2, "amount": "3" }]
    }});
    let big = ok(
        &as_token(&server, &operator, CREATE, input).await,
        "createDistribution",
    );
    assert_eq!(big["rulesPassed"], false, "{big}");
    let big_id = big["id"].as_i64().unwrap();
    let r = as_token(&server, &operator, APPROVE, json!({ "id": big_id })).await;
    assert!(bad_input(&r, "id").contains("exceeds the budget"), "{r}");
    let cancel = json!({ "id": big_id, "reason": "budget too small" });
    refused(&server, &viewer, CANCEL, cancel.clone()).await;
    bad_input(
        &as_token(
            &server,
            &operator,
            CANCEL,
            json!({ "id": big_id, "reason": " " }),
        )
        .await,
        "reason",
    );
    let x = ok(
        &as_token(&server, &operator, CANCEL, cancel.clone()).await,
        "cancelDistribution",
    );
    assert_eq!(x["status"], "cancelled");
    let last = x["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "budget too small");
    assert_eq!(last["actor"], "op-alice");
    bad_input(&as_token(&server, &operator, CANCEL, cancel).await, "id");
    let r = as_token(
        &server,
        &operator,
        CANCEL,
        json!({ "id": good_id, "reason": "too late" }),
    )
    .await;
    assert!(bad_input(&r, "id").contains("completed"), "{r}");

    // Exactly one audit row per accepted mutation, with who, what and before/after.
    let rows = audit_rows(&conn).await;
    let want: BTreeMap<String, u64> = [
        ("watchAccount", 1),
        ("unwatchAccount", 1),
        ("resyncAccount", 1),
        ("createDistribution", 2),
        ("approveDistribution", 1),
        ("cancelDistribution", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(rows, want);
    let approve = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("approveDistribution"))
        .one(&conn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(approve.actor, "op-alice");
    assert_eq!(approve.role, "operator");
    assert_eq!(
        approve.target.as_deref(),
        Some(good_id.to_string().as_str())
    );
    assert_eq!(approve.before.unwrap()["status"], "draft");
    assert_eq!(approve.after.unwrap()["status"], "approved");
    let unwatch = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("unwatchAccount"))
        .one(&conn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unwatch.arguments["id"], outsider.as_str());
    assert_eq!(unwatch.before.unwrap()["watched"], true);
    assert_eq!(unwatch.after.unwrap()["watched"], false);
    d.shutdown().await;
}

async fn breaker_state(conn: &DatabaseConnection) -> Option<String> {
    circuit_breaker::Entity::find_by_id("horizon".to_string())
        .one(conn)
        .await
        .unwrap()
        .map(|b| b.state)
}

#[tokio::test]
async fn a_horizon_503_burst_opens_the_breaker_and_data_ends_exact() {
    let d = devnet(6, 120).await;
    let c = d.control();
    let db = TestDb::new().await;
    let env = env_for(
        &db,
        &d.urls().horizon,
        "breaker_threshold = 3\nbreaker_recovery_secs = 2\n",
    );
    let conn = db.connect().await;
    let server = Server::start(&env);
    wait_until!(server, 40, "the first sync", {
        let states = stellar_sync_state::Entity::find().all(&conn).await.unwrap();
        !states.is_empty() && states.iter().all(|s| s.status == "synced")
    });
    assert_eq!(breaker_state(&conn).await.as_deref(), Some("closed"));

    // A burst of 503s while new operations arrive.
    c.set_fault(
        "horizon",
        Fault {
            status: Some(503),
            ..Default::default()
        },
    );
    c.generate_operations(30).unwrap();
    c.advance_ledgers(1).unwrap();
    let q = "{ circuitBreakers(first: 20) { edges { node { name state } } } }";
    wait_until!(server, 30, "the horizon breaker to open", {
        let r = server.graphql(q, json!({})).await;
        r["data"]["circuitBreakers"]["edges"]
            .as_array()
            .is_some_and(|e| {
                e.iter()
                    .any(|n| n["node"]["name"] == "horizon" && n["node"]["state"] == "open")
            })
    });
    wait_until!(server, 30, "health to report horizon unhealthy", {
        let (status, body) = server.get("/api/v1/health").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        status == 503 && v["services"]["upstream:horizon"]["status"] == "unhealthy"
    });

    // Faults cleared: the breaker closes and the data ends equal to the devnet's.
    c.clear_faults();
    wait_until!(server, 40, "the horizon breaker to close", {
        breaker_state(&conn).await.as_deref() == Some("closed")
    });
    let accounts: Vec<String> = stellar_sync_state::Entity::find()
        .all(&conn)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.account_id)
        .collect();
    wait_until!(server, 40, "every watched account to match the devnet", {
        let mut all = true;
        for a in &accounts {
            if links_of(&conn, a).await != devnet_ops(&d, a) {
                all = false;
                break;
            }
        }
        all
    });
    for a in &accounts {
        if *a == c.stellar_issuer() {
            continue;
        }
        let want: BTreeMap<String, i64> = c.balances(a).unwrap().into_iter().collect();
        wait_until!(server, 20, format!("balances of {a}"), {
            let got: BTreeMap<String, i64> = stellar_balance::Entity::find()
                .filter(stellar_balance::Column::AccountId.eq(a.clone()))
                .all(&conn)
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
            got == want
        });
    }
    // Health is served from the last periodic check (refreshed every second).
    wait_until!(server, 10, "the closed breaker in /api/v1/health", {
        let (_, body) = server.get("/api/v1/health").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        v["services"]["upstream:horizon"]["status"] == "healthy"
    });
    d.shutdown().await;
}
