//! End to end: triggers created through GraphQL queue webhook actions as EVM events commit;
//! a receiver sees every matching event with exactly one idempotency key each, correctly
//! signed, across a `kill -9` of the server mid-delivery; a second trigger whose receiver
//! answers 500 opens its own breaker while the first keeps delivering.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use common::{base_env, Server, TestDb};
use hmac::{Hmac, Mac};
use orrery_api::auth::{Claims, Role};
use orrery_devnet::{Devnet, DevnetConfig, EvmEndpoint};
use orrery_entity::{action_run, evm_event};
use orrery_indexer::triggers::{event_key, idempotency_key};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use sha2::Sha256;

const JWT: &str = "triggers-test-secret-0123456789";
const OK_SECRET: &str = "ok-receiver-secret";
const FAIL_SECRET: &str = "fail-receiver-secret";
const CONFIRMATIONS: u64 = 2;

#[derive(Default)]
struct Received {
    /// (idempotency key, body) of every request to /ok.
    ok: Vec<(String, Value)>,
    /// Requests to /fail.
    failed: usize,
    /// Requests whose signature or key header was wrong.
    bad: Vec<String>,
}

type Shared = Arc<Mutex<Received>>;

fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(String, Value), String> {
    let sig = headers
        .get("x-orrery-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or("no signature")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if sig != want {
        return Err(format!("bad signature {sig}"));
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .ok_or("no idempotency key")?
        .to_string();
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if v["idempotencyKey"] != key.as_str() {
        return Err(format!(
            "key header {key} differs from body {}",
            v["idempotencyKey"]
        ));
    }
    Ok((key, v))
}

async fn ok_handler(State(r): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // Slow enough that a kill lands while deliveries are in flight.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut g = r.lock().unwrap();
    match verify(OK_SECRET, &headers, &body) {
        Ok(entry) => {
            g.ok.push(entry);
            StatusCode::OK
        }
        Err(e) => {
            g.bad.push(e);
            StatusCode::BAD_REQUEST
        }
    }
}

async fn fail_handler(State(r): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut g = r.lock().unwrap();
    if let Err(e) = verify(FAIL_SECRET, &headers, &body) {
        g.bad.push(e);
    }
    g.failed += 1;
    StatusCode::INTERNAL_SERVER_ERROR
}

async fn start_receiver() -> (String, Shared) {
    let shared: Shared = Arc::default();
    let app = Router::new()
        .route("/ok", post(ok_handler))
        .route("/fail", post(fail_handler))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), shared)
}

fn token() -> String {
    let now = Utc::now().timestamp() as u64;
    let c = Claims {
        sub: "trigger-operator".into(),
        role: Role::Operator,
        exp: now + 3600,
        nbf: now - 60,
        iat: now - 60,
        iss: "orrery".into(),
        aud: "orrery".into(),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &c,
        &jsonwebtoken::EncodingKey::from_secret(JWT.as_bytes()),
    )
    .unwrap()
}

fn config_toml(c: &EvmEndpoint) -> String {
    let mut s = String::from("[evm]\npoll_interval_ms = 200\n");
    s.push_str(&format!(
        "\n[[evm.chains]]\nname = \"{}\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = {CONFIRMATIONS}\n",
        c.name, c.chain_id, c.url
    ));
    for (addr, reg) in [
        (&c.contracts.identity, "identity"),
        (&c.contracts.reputation, "reputation"),
        (&c.contracts.validation, "validation"),
    ] {
        s.push_str(&format!(
            "[[evm.chains.contracts]]\naddress = \"{addr}\"\nregistry = \"{reg}\"\n"
        ));
    }
    s
}

async fn indexed_height(server: &Server, chain: &str) -> Option<i64> {
    let r = server
        .graphql(
            "query($id: String!) { chain(id: $id) { indexedHeight } }",
            json!({"id": format!("evm:{chain}")}),
        )
        .await;
    r["data"]["chain"]["indexedHeight"].as_i64()
}

async fn wait_for_height(server: &Server, chain: &str, height: u64) {
    let started = Instant::now();
    while indexed_height(server, chain).await != Some(height as i64) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{chain} did not reach {height}; logs:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_trigger(server: &Server, input: Value) -> i64 {
    let r = server
        .graphql_with_headers(
            "mutation($input: CreateTriggerInput!) { createTrigger(input: $input) { id breaker { state } } }",
            json!({ "input": input }),
            &[("authorization", format!("Bearer {}", token()))],
        )
        .await;
    assert_eq!(
        r["data"]["createTrigger"]["breaker"]["state"], "closed",
        "{r}"
    );
    r["data"]["createTrigger"]["id"].as_i64().unwrap()
}

async fn runs(server: &Server, trigger: i64, status: &str) -> i64 {
    let r = server
        .graphql(
            "query($t: Int!, $s: ActionRunStatus) { actionRuns(trigger: $t, status: $s, first: 1) { totalCount } }",
            json!({ "t": trigger, "s": status }),
        )
        .await;
    r["data"]["actionRuns"]["totalCount"]
        .as_i64()
        .unwrap_or_else(|| panic!("{r}"))
}

async fn breaker_state(server: &Server, trigger: i64) -> String {
    let r = server
        .graphql(
            "{ triggers(first: 50) { edges { node { id breaker { state failureCount } } } } }",
            json!({}),
        )
        .await;
    r["data"]["triggers"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"]["id"] == trigger)
        .map(|e| e["node"]["breaker"]["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("trigger {trigger} not listed: {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_exactly_once_per_key_across_kill9_and_breaker_isolates_failures() {
    let mut cfg = DevnetConfig {
        seed: 42,
        ..DevnetConfig::default()
    };
    for c in &mut cfg.evm_chains {
        c.initial_blocks = 10;
    }
    let devnet = Devnet::start(cfg).await.unwrap();
    let ep = devnet.urls().evm[0].clone();
    let chain = ep.name.clone();
    let control = devnet.control();
    let (receiver, received) = start_receiver().await;

    let db = TestDb::new().await;
    let toml = std::env::temp_dir().join(format!(
        "orrery_triggers_{}_{}.toml",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap()
    ));
    std::fs::write(&toml, config_toml(&ep)).unwrap();
    let mut env = base_env(&db);
    env.push(("ORRERY_CONFIG".into(), toml.display().to_string()));
    env.push(("JWT_SECRET".into(), JWT.into()));

    let mut server = Server::start(&env);
    let before = control.evm_head(&chain).unwrap() - CONFIRMATIONS;
    wait_for_height(&server, &chain, before).await;

    // Agents registered so far; new feedback picks among all agents, so the first trigger
    // (every other known agent) matches part of it.
    let conn = db.connect().await;
    let agents: BTreeSet<u64> = control
        .evm_logs(&chain)
        .unwrap()
        .iter()
        .filter(|l| l.block_number <= before && l.data.topics().len() > 1)
        .map(|l| {
            let s = format!("{:#x}", l.data.topics()[1]);
            u64::from_str_radix(&s[s.len() - 16..], 16).unwrap()
        })
        .collect();
    let wanted: BTreeSet<String> = agents.iter().step_by(2).map(|a| a.to_string()).collect();
    assert!(!wanted.is_empty(), "devnet registered no agents");

    let a = create_trigger(
        &server,
        json!({
            "name": "feedback-half", "chain": chain, "eventName": "NewFeedback",
            "contract": ep.contracts.reputation,
            "conditions": [{"field": "agentId", "op": "in", "value": wanted}],
            "webhookUrl": format!("{receiver}/ok"), "secret": OK_SECRET,
            "maxAttempts": 10, "failureThreshold": 5, "recoverySeconds": 5,
        }),
    )
    .await;
    let b = create_trigger(
        &server,
        json!({
            "name": "always-500", "chain": chain, "eventName": "NewFeedback",
            "webhookUrl": format!("{receiver}/fail"), "secret": FAIL_SECRET,
            "maxAttempts": 50, "failureThreshold": 2, "recoverySeconds": 600,
        }),
    )
    .await;

    // New blocks: matched as they commit.
    let head = control.generate_evm_logs(&chain, 300).unwrap();
    let upto = head - CONFIRMATIONS;
    wait_for_height(&server, &chain, upto).await;
    let events = evm_event::Entity::find()
        .filter(evm_event::Column::Chain.eq(chain.as_str()))
        .filter(evm_event::Column::BlockNumber.gt(before as i64))
        .filter(evm_event::Column::Name.eq("NewFeedback"))
        .all(&conn)
        .await
        .unwrap();
    let feedback = events.len();
    let expected: HashMap<String, String> = events
        .iter()
        .filter(|e| wanted.contains(e.args["agentId"].as_str().unwrap()))
        .map(|e| {
            let k = event_key(&chain, &e.block_hash, e.log_index as u64);
            (idempotency_key(a, &k), k)
        })
        .collect();
    assert!(
        expected.len() >= 5 && expected.len() < feedback,
        "{} of {feedback} feedback events match",
        expected.len()
    );

    // Kill -9 while deliveries are in flight, then restart on the same database.
    let started = Instant::now();
    while received.lock().unwrap().ok.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no delivery; logs:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    let at_kill = received.lock().unwrap().ok.len();
    assert!(
        at_kill < expected.len(),
        "all {at_kill} delivered before the kill; make the receiver slower"
    );
    let server = Server::start(&env);

    // Every matching event is delivered; all runs succeed.
    let started = Instant::now();
    loop {
        let done = runs(&server, a, "SUCCEEDED").await;
        if done == expected.len() as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{done} of {} runs succeeded; logs:\n{}",
            expected.len(),
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = action_run::Entity::find()
        .filter(action_run::Column::TriggerId.eq(a))
        .all(&conn)
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        expected.len(),
        "one queued action per matching event"
    );
    let (ok, bad, failed_hits) = {
        let g = received.lock().unwrap();
        (g.ok.clone(), g.bad.clone(), g.failed)
    };
    assert!(bad.is_empty(), "bad requests: {bad:?}");
    let keys: BTreeSet<&String> = ok.iter().map(|(k, _)| k).collect();
    let want: BTreeSet<&String> = expected.keys().collect();
    assert_eq!(
        keys, want,
        "each matching event delivered under its own key"
    );
    for (k, body) in &ok {
        let e = &body["event"];
        let ek = format!(
            "{}:{}:{}",
            e["chain"].as_str().unwrap(),
            e["blockHash"].as_str().unwrap(),
            e["logIndex"]
        );
        assert_eq!(expected[k], ek, "body event matches its key");
        assert!(wanted.contains(e["args"]["agentId"].as_str().unwrap()));
        assert_eq!(body["trigger"]["id"], a);
    }
    // Redeliveries happen only for actions in flight at the kill (at-least-once).
    let duplicates = ok.len() - keys.len();
    assert!(duplicates <= 8, "{duplicates} redeliveries");
    println!(
        "triggers: {} matching of {feedback} feedback events, {at_kill} delivered before kill -9, {duplicates} redelivered after",
        expected.len()
    );

    // The failing trigger opened its breaker and holds its actions back (not dead).
    assert_eq!(breaker_state(&server, a).await, "closed");
    assert_eq!(breaker_state(&server, b).await, "open");
    assert!(
        failed_hits >= 2,
        "{failed_hits} requests to the failing receiver"
    );
    assert_eq!(runs(&server, b, "SUCCEEDED").await, 0);
    assert_eq!(runs(&server, b, "DEAD").await, 0);
    let waiting = runs(&server, b, "PENDING").await + runs(&server, b, "FAILED").await;
    assert_eq!(
        waiting as usize, feedback,
        "its actions wait while the breaker is open"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        received.lock().unwrap().failed,
        failed_hits,
        "no calls while open"
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "orrery_action_runs_total{{status=\"succeeded\",trigger=\"{a}\"}}"
        )),
        "run metric of the delivering trigger"
    );
    assert!(metrics.contains("orrery_action_queue_depth "));

    // Mutations: refused without a token; update and delete are audited; deleting the
    // failing trigger dead-letters its waiting actions.
    let denied = server
        .graphql("mutation { deleteTrigger(id: 1) { id } }", json!({}))
        .await;
    assert_eq!(
        denied["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{denied}"
    );
    let auth = [("authorization", format!("Bearer {}", token()))];
    let r = server
        .graphql_with_headers(
            "mutation($id: Int!) { updateTrigger(id: $id, input: {enabled: false, maxAttempts: 3}) { enabled maxAttempts } }",
            json!({ "id": b }),
            &auth,
        )
        .await;
    assert_eq!(
        r["data"]["updateTrigger"],
        json!({"enabled": false, "maxAttempts": 3}),
        "{r}"
    );
    let bad = server
        .graphql_with_headers(
            "mutation($id: Int!) { updateTrigger(id: $id, input: {conditions: [{field: \"x\", op: \"gt\", value: \"ten\"}]}) { id } }",
            json!({ "id": b }),
            &auth,
        )
        .await;
    assert_eq!(
        bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{bad}"
    );
    let r = server
        .graphql_with_headers(
            "mutation($id: Int!) { deleteTrigger(id: $id) { id } }",
            json!({ "id": b }),
            &auth,
        )
        .await;
    assert_eq!(r["data"]["deleteTrigger"]["id"], b, "{r}");
    assert_eq!(runs(&server, b, "DEAD").await as usize, feedback);
    let mut audit = orrery_entity::audit_log::Entity::find()
        .all(&conn)
        .await
        .unwrap();
    audit.sort_by_key(|a| a.id);
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "createTrigger",
            "createTrigger",
            "updateTrigger",
            "deleteTrigger"
        ]
    );
    assert!(audit
        .iter()
        .all(|a| !a.arguments.to_string().contains(OK_SECRET)
            && !a.arguments.to_string().contains(FAIL_SECRET)
            && a.after
                .as_ref()
                .is_none_or(|v| !v.to_string().contains(FAIL_SECRET))));
    let _ = std::fs::remove_file(&toml);
}
