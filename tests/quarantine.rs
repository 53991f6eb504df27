//! The decode-failure policy end to end: devnet serves one malformed Horizon operation
//! among 10,000 (its `transaction_successful` removed, every time it is served) and one EVM
//! log whose event signature no registry knows. Each must end up quarantined exactly once,
//! with its raw record, while everything else is indexed and every source is `synced`;
//! `quarantined` lists them for an operator and refuses a viewer.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::fleet::{self, Size};
use common::{base_env, run_cli, Server, TestDb};
use orrery_devnet::{Corrupt, Fault};
use orrery_entity::{evm_event, quarantine, source, stellar_operation};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Map, Value};

const SECRET: &str = "quarantine-test-secret-0123456789";

fn token(env: &[(String, String)], role: &str) -> String {
    let (code, out, err) = run_cli(env, &["token", "issue", "--role", role, "--subject", "t"]);
    assert_eq!(code, 0, "token issue: {err}");
    out.trim().to_string()
}

fn corrupt(matches: Value, drop: &[&str], set: Value) -> Fault {
    let obj = |v: Value| -> Map<String, Value> { v.as_object().cloned().unwrap_or_default() };
    Fault {
        corrupt: Some(Corrupt {
            matches: obj(matches),
            drop: drop.iter().map(|s| s.to_string()).collect(),
            set: obj(set),
        }),
        ..Fault::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_malformed_record_is_quarantined_and_the_sources_move_on() {
    let d = fleet::devnet(
        77,
        Size {
            stellar_ops: 10_000,
            evm_blocks: 60,
            bitcoin_blocks: 160,
        },
    )
    .await;
    let c = d.control();
    // A payment of a watched holder, in the middle of the history.
    let holders = fleet::holders(&d);
    let holder = holders.iter().next().expect("a holder").clone();
    let ops = c.operations(Some(&holder)).unwrap();
    let bad_op = ops
        .iter()
        .filter(|o| o.kind == "payment")
        .nth(ops.len() / 4)
        .or_else(|| ops.iter().find(|o| o.kind == "payment"))
        .expect("a payment")
        .id;
    c.set_fault(
        "horizon",
        corrupt(
            json!({"id": bad_op.to_string()}),
            &["transaction_successful"],
            json!({}),
        ),
    );
    // An EVM log of the first chain, below the confirmation depth.
    let ep = d.urls().evm[0].clone();
    let logs = c.evm_logs(&ep.name).unwrap();
    let bad_log = logs[logs.len() / 2].clone();
    c.set_fault(
        format!("evm:{}", ep.name).as_str(),
        corrupt(
            json!({
                "blockNumber": format!("0x{:x}", bad_log.block_number),
                "logIndex": format!("0x{:x}", bad_log.log_index),
            }),
            &[],
            json!({"topics": [format!("0x{}", "ab".repeat(32))]}),
        ),
    );

    let db = TestDb::new().await;
    let config = fleet::config_file(&d, "quarantine");
    let mut env = fleet::env(base_env(&db), &config, None, None);
    env.push(("JWT_SECRET".into(), SECRET.into()));
    let server = Server::start(&env);
    let conn = db.connect().await;

    let want_ops: BTreeSet<i64> = holders
        .iter()
        .flat_map(|a| c.operations(Some(a)).unwrap())
        .map(|o| o.id)
        .filter(|id| *id != bad_op)
        .collect();
    let head = c.evm_head(&ep.name).unwrap();
    let upto = head.saturating_sub(fleet::CONFIRMATIONS);
    let want_logs: BTreeSet<(i64, i64)> = logs
        .iter()
        .filter(|l| l.block_number <= upto)
        .map(|l| (l.block_number as i64, l.log_index as i64))
        .filter(|k| *k != (bad_log.block_number as i64, bad_log.log_index as i64))
        .collect();
    let ids = fleet::source_ids(&d);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let sources = source::Entity::find().all(&conn).await.unwrap();
        let synced = ids
            .iter()
            .all(|id| sources.iter().any(|s| &s.id == id && s.status == "synced"));
        let stored: BTreeSet<i64> = stellar_operation::Entity::find()
            .all(&conn)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect();
        let events: BTreeSet<(i64, i64)> = evm_event::Entity::find()
            .filter(evm_event::Column::Chain.eq(ep.name.as_str()))
            .all(&conn)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.block_number <= upto as i64)
            .map(|e| (e.block_number, e.log_index as i64))
            .collect();
        let quarantined = quarantine::Entity::find().all(&conn).await.unwrap();
        if synced && want_ops.is_subset(&stored) && events == want_logs && quarantined.len() == 2 {
            assert!(
                !stored.contains(&bad_op),
                "the malformed operation was stored"
            );
            break;
        }
        last = format!(
            "synced {synced}; {} of {} operations; {} of {} EVM events; quarantined {:?}; sources {:?}",
            want_ops.intersection(&stored).count(),
            want_ops.len(),
            events.len(),
            want_logs.len(),
            quarantined.iter().map(|q| (&q.source, &q.position, &q.error)).collect::<Vec<_>>(),
            sources.iter().map(|s| (&s.id, &s.status, &s.last_error)).collect::<Vec<_>>(),
        );
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "not converged: {last}\n{}",
            fleet::tail(&server.logs(), 40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = last;

    // Exactly the two records, each with its raw payload and the reason.
    let q = quarantine::Entity::find().all(&conn).await.unwrap();
    let op_row = q
        .iter()
        .find(|r| r.source == "stellar")
        .expect("the operation is quarantined");
    assert_eq!(op_row.kind, "stellar.operation");
    assert_eq!(op_row.position, bad_op.to_string());
    assert!(
        op_row.error.contains("transaction_successful"),
        "{}",
        op_row.error
    );
    let payload: Value = serde_json::from_str(&op_row.payload).unwrap();
    assert_eq!(payload["id"], bad_op.to_string());
    assert!(payload.get("transaction_successful").is_none());
    let log_row = q
        .iter()
        .find(|r| r.source == format!("evm:{}", ep.name))
        .expect("the log is quarantined");
    assert_eq!(log_row.kind, "evm.log");
    assert_eq!(
        log_row.position,
        format!("{}:{}", bad_log.block_number, bad_log.log_index)
    );

    // The metric counts them; the operator sees them over GraphQL; a viewer does not.
    let (_, metrics) = server.get("/metrics").await;
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("orrery_quarantined_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, 2.0, "orrery_quarantined_total");
    let query = "query($s: String) { quarantined(source: $s) { totalCount edges { node { source kind position error payload replayedAt } } } }";
    let operator = token(&env, "operator");
    let resp = server
        .graphql_with_headers(
            query,
            json!({"s": "stellar"}),
            &[("authorization", format!("Bearer {operator}"))],
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp}");
    let conn_page = &resp["data"]["quarantined"];
    assert_eq!(conn_page["totalCount"], 1, "{resp}");
    let node = &conn_page["edges"][0]["node"];
    assert_eq!(node["position"], bad_op.to_string());
    assert_eq!(node["kind"], "stellar.operation");
    assert_eq!(node["payload"]["id"], bad_op.to_string());
    assert!(node["replayedAt"].is_null());
    let viewer = token(&env, "viewer");
    let resp = server
        .graphql_with_headers(
            query,
            json!({}),
            &[("authorization", format!("Bearer {viewer}"))],
        )
        .await;
    assert_eq!(
        resp["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{resp}"
    );

    // `orrery quarantine list` shows both; a replay with this build decodes neither (the
    // stored payloads are what the upstream served), so both stay pending with the reason.
    let (code, out, err) = run_cli(&env, &["quarantine", "list"]);
    assert_eq!(code, 0, "list: {err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains(&bad_op.to_string()), "{out}");
    let (code, out, _) = run_cli(&env, &["quarantine", "replay", "--dry-run"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("0 applied, 2 not applied (dry run"), "{out}");
    let untouched = quarantine::Entity::find().all(&conn).await.unwrap();
    assert!(
        untouched.iter().all(|r| r.replay_error.is_none()),
        "{untouched:?}"
    );
    let (code, out, _) = run_cli(&env, &["quarantine", "replay"]);
    assert_eq!(code, 1, "{out}");
    let failed = quarantine::Entity::find().all(&conn).await.unwrap();
    assert!(
        failed.iter().all(|r| r.replayed_at.is_none()
            && r.replay_error
                .as_deref()
                .is_some_and(|e| e.contains("still does not decode"))),
        "{failed:?}"
    );

    // The fix: the upstream serves the records intact again and the stored payloads are
    // the intact records (as a decoder that accepts them would read them). A replay applies
    // both; the operation's accounts are resynced by the running server and every row the
    // fault-free chain has ends up stored.
    c.clear_faults();
    let mut fixed_op = payload.clone();
    fixed_op["transaction_successful"] = json!(true);
    let mut fixed_log: Value = serde_json::from_str(&log_row.payload).unwrap();
    fixed_log["topics"] = json!(bad_log
        .data
        .topics()
        .iter()
        .map(|t| format!("{t:#x}"))
        .collect::<Vec<_>>());
    for (row, fixed) in [(op_row, fixed_op), (log_row, fixed_log)] {
        quarantine::Entity::update_many()
            .col_expr(
                quarantine::Column::Payload,
                sea_orm::sea_query::Expr::value(fixed.to_string()),
            )
            .filter(quarantine::Column::Id.eq(row.id))
            .exec(&conn)
            .await
            .unwrap();
    }
    let only_op = op_row.id.to_string();
    let (code, out, err) = run_cli(&env, &["quarantine", "replay", "--id", &only_op]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 applied, 0 not applied"), "{out}");
    assert!(out.contains("full resync requested"), "{out}");
    let (code, out, err) = run_cli(&env, &["quarantine", "replay"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 applied, 0 not applied"), "{out}");
    let (_, out, _) = run_cli(&env, &["quarantine", "list"]);
    assert!(out.contains("no pending quarantined records"), "{out}");
    let done = quarantine::Entity::find().all(&conn).await.unwrap();
    assert!(done.iter().all(|r| r.replayed_at.is_some()), "{done:?}");
    let stored_op = stellar_operation::Entity::find_by_id(bad_op)
        .one(&conn)
        .await
        .unwrap()
        .expect("the replayed operation is stored");
    assert!(stored_op.successful);
    fleet::wait_ground_truth(&conn, &d, Duration::from_secs(180), || server.logs()).await;
    let resp = server
        .graphql_with_headers(
            query,
            json!({}),
            &[("authorization", format!("Bearer {operator}"))],
        )
        .await;
    assert_eq!(resp["data"]["quarantined"]["totalCount"], 0, "{resp}");
}
