//! The response cache of a running server (`graphql.response_cache_ms`): a repeated query is
//! answered from it byte for byte, a different `Authorization` is its own entry, a mutation
//! drops it at once (long before the time limit), errors are never cached, a write no bus
//! carries waits for the time limit, and with the cache off every query reads the database.

mod common;

use chrono::Utc;
use common::{base_env, Server, TestDb};
use orrery_api::auth::Role;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use serde_json::{json, Value};

const SECRET: &str = "response-cache-test-secret-0123456";
const QUERY: &str = r#"{ config(key: "sync.batch_size") { value } }"#;

fn token(role: Role, sub: &str) -> String {
    common::tokens::signed(SECRET, role, sub, 600)
}

fn start(db: &TestDb, cache_ms: u64) -> Server {
    let path = common::config_file(
        "orrery_rcache",
        &format!("[graphql]\nresponse_cache_ms = {cache_ms}\n"),
    );
    let mut env = base_env(db);
    env.push(("ORRERY_CONFIG".into(), path.display().to_string()));
    env.push(("JWT_SECRET".into(), SECRET.into()));
    Server::start(&env)
}

/// The raw body of `query` sent with `auth` (if any).
async fn raw(server: &Server, query: &str, auth: Option<&str>) -> String {
    let mut req = reqwest::Client::new()
        .post(format!("{}/graphql", server.base))
        .json(&json!({ "query": query }));
    if let Some(t) = auth {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().text().await.unwrap()
}

async fn value(server: &Server) -> String {
    let body: Value = serde_json::from_str(&raw(server, QUERY, None).await).unwrap();
    body["data"]["config"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_string()
}

/// `orrery_graphql_response_cache_total{result}`.
async fn count(server: &Server, result: &str) -> f64 {
    let (_, text) = server.get("/metrics").await;
    common::tokens::metric(
        &text,
        "orrery_graphql_response_cache_total",
        ("result", result),
    )
    .unwrap_or(0.0)
}

/// Writes `sync.batch_size` straight into the database: no bus event, no mutation.
async fn write_behind_the_server(db: &TestDb, value: &str) {
    let conn = db.connect().await;
    let found = orrery_entity::config_entry::Entity::find_by_id("sync.batch_size".to_string())
        .one(&conn)
        .await
        .unwrap();
    match found {
        Some(row) => {
            let mut row: orrery_entity::config_entry::ActiveModel = row.into();
            row.value = Set(value.to_string());
            row.update(&conn).await.unwrap();
        }
        None => {
            orrery_entity::config_entry::ActiveModel {
                key: Set("sync.batch_size".into()),
                value: Set(value.to_string()),
                value_type: Set("integer".into()),
                description: Set(None),
                updated_at: Set(Utc::now()),
                updated_by: Set(None),
            }
            .insert(&conn)
            .await
            .unwrap();
        }
    }
}

#[tokio::test]
async fn repeated_queries_are_served_from_the_cache_until_a_write() {
    let db = TestDb::new().await;
    let server = start(&db, 60_000);
    let first = raw(&server, QUERY, None).await;
    assert!(first.contains("\"value\""), "{first}");
    let hits = count(&server, "hit").await;
    let again = raw(&server, QUERY, None).await;
    assert_eq!(again, first, "the same bytes");
    assert_eq!(count(&server, "hit").await, hits + 1.0);

    // Another caller is another entry.
    let viewer = token(Role::Viewer, "cache-viewer");
    let _ = raw(&server, QUERY, Some(&viewer)).await;
    assert_eq!(
        count(&server, "hit").await,
        hits + 1.0,
        "a new Authorization misses"
    );
    let _ = raw(&server, QUERY, Some(&viewer)).await;
    assert_eq!(count(&server, "hit").await, hits + 2.0);

    // A mutation drops the cache at once, 60 s limit or not.
    let operator = token(Role::Operator, "cache-operator");
    let set = raw(
        &server,
        r#"mutation { setConfig(key: "sync.batch_size", value: "321") { value } }"#,
        Some(&operator),
    )
    .await;
    assert!(set.contains("321") && !set.contains("errors"), "{set}");
    assert_eq!(value(&server).await, "321");

    // A write no bus carries is not seen before the time limit (documented), ...
    write_behind_the_server(&db, "654").await;
    assert_eq!(value(&server).await, "321", "served from the cache");

    // ... and errors are never cached.
    let misses = count(&server, "miss").await;
    for _ in 0..2 {
        let e = raw(&server, r#"{ config(key: "no.such.key") { value } }"#, None).await;
        assert!(e.contains("errors"), "{e}");
    }
    assert_eq!(count(&server, "miss").await, misses + 2.0);
}

#[tokio::test]
async fn the_time_limit_bounds_writes_no_bus_carries_and_zero_turns_it_off() {
    let db = TestDb::new().await;
    let short = start(&db, 300);
    let off = start(&db, 0);
    let before = value(&short).await;
    assert_eq!(value(&off).await, before);
    write_behind_the_server(&db, "777").await;
    // Off: the database is read every time.
    assert_eq!(value(&off).await, "777");
    assert_eq!(count(&off, "hit").await + count(&off, "miss").await, 0.0);
    // 300 ms: the new value shows once the entry is older than that.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(value(&short).await, "777");
}
