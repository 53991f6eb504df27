//! The running server: start, health, metrics, GraphQL limits, auth, subscriptions, shutdown.
//! Runs on SQLite with the in-process bus by default, on PostgreSQL + Redis when
//! `ORRERY_TEST_PG_URL` / `ORRERY_TEST_REDIS_URL` are set (as `.ci/run` does).

mod common;

use std::time::Duration;

use common::{base_env, pg_admin_url, redis_url, run_cli, Server, TestDb};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-0123456789";

fn with(mut env: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

fn token(env: &[(String, String)], role: &str) -> String {
    let (code, out, err) = run_cli(
        env,
        &[
            "token",
            "issue",
            "--role",
            role,
            "--ttl",
            "10m",
            "--subject",
            &format!("{role}-user"),
        ],
    );
    assert_eq!(code, 0, "token issue failed: {err}");
    out.trim().to_string()
}

fn error_code(resp: &Value) -> &str {
    resp["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

#[tokio::test]
async fn serve_starts_answers_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let mut server = Server::start(&base_env(&db));

    let (status, body) = server.get("/ready").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 200);

    let (status, body) = server.get("/api/v1/health").await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["database"], "connected");
    let expected_redis = if redis_url().is_some() {
        "connected"
    } else {
        "not_configured"
    };
    assert_eq!(health["redis"], expected_redis);
    assert!(health["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(health["summary"]["unhealthy"], 0);

    let resp = server
        .graphql(
            "{ health { status summary { total healthy } components { name status } } }",
            json!({}),
        )
        .await;
    assert_eq!(resp["data"]["health"]["status"], "HEALTHY", "{resp}");
    assert!(resp["data"]["health"]["summary"]["total"].as_u64().unwrap() >= 2);

    // GraphiQL on GET.
    let (status, body) = server.get("/graphql").await;
    assert_eq!(status, 200);
    assert!(body.contains("graphiql"), "GraphiQL page expected");

    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .contains("orrery_http_requests_total{method=\"GET\",route=\"/ready\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "orrery_http_request_duration_seconds_bucket{method=\"POST\",route=\"/graphql\""
    ));
    assert!(
        metrics.contains("orrery_graphql_requests_total{operation=\"anonymous\",status=\"ok\"}")
    );

    // Migrations ran and defaults were seeded.
    let conn = db.connect().await;
    use sea_orm::{EntityTrait, PaginatorTrait};
    let seeded = orrery_entity::config_entry::Entity::find()
        .count(&conn)
        .await
        .unwrap();
    assert!(seeded >= 5, "config defaults seeded, got {seeded}");

    let (status, took) = server.terminate(Duration::from_secs(5));
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5));
}

#[tokio::test]
async fn sigterm_with_an_open_subscription_still_exits_within_five_seconds() {
    let db = TestDb::new().await;
    let mut server = Server::start(&base_env(&db));
    let _sub = server
        .subscribe(
            "graphql-transport-ws",
            "subscription { configChanged { key } }",
        )
        .await;
    let (status, took) = server.terminate(Duration::from_secs(8));
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn bad_config_exits_non_zero_with_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("orrery_cfg_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("orrery.toml");
    std::fs::write(&toml, "listen = \"127.0.0.1:0\"\nlistne = 3\n").unwrap();
    let toml_arg = toml.display().to_string();
    let sqlite = format!("sqlite://{}?mode=rwc", dir.join("x.db").display());
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
            vec!["serve"],
            "cannot connect to database",
        ),
        (
            vec![("DATABASE_URL", "mysql://db/x")],
            vec!["serve"],
            "database_url",
        ),
        (
            vec![("DATABASE_URL", "postgres:///x")],
            vec!["serve"],
            "database_url",
        ),
        (
            vec![("REDIS_URL", "http://redis")],
            vec!["serve"],
            "redis_url",
        ),
        (
            vec![
                ("DATABASE_URL", &sqlite),
                ("REDIS_URL", "redis://127.0.0.1:1"),
            ],
            vec!["serve"],
            "redis",
        ),
        (
            vec![("ORRERY_LISTEN", "nope")],
            vec!["serve"],
            "ORRERY_LISTEN",
        ),
        (vec![], vec!["--config", &toml_arg, "serve"], "listne"),
    ];
    for (env, args, needle) in cases {
        let env: Vec<(String, String)> = env
            .into_iter()
            .chain([("ORRERY_LOG", "warn"), ("ORRERY_DEVNET", "false")])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let start = std::time::Instant::now();
        let (code, _out, err) = run_cli(&env, &args);
        assert_ne!(code, 0, "{args:?} {env:?} must fail");
        let lines: Vec<&str> = err.trim().lines().collect();
        assert_eq!(lines.len(), 1, "one line expected for {env:?}, got:\n{err}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(needle),
            "{needle:?} not in {:?}",
            lines[0]
        );
        assert!(start.elapsed() < Duration::from_secs(30));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn committed_schema_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let (code, _, err) = run_cli(&[], &["export-schema", "--check", "--output", path]);
    assert_eq!(code, 0, "schema.graphql drifted: {err}");
}

#[tokio::test]
async fn connections_are_bounded_paged_and_queries_limited() {
    let db = TestDb::new().await;
    let server = Server::start(&base_env(&db));

    let all = server
        .graphql(
            "{ configEntries(first: 200) { totalCount edges { node { key } } } }",
            json!({}),
        )
        .await;
    let all_keys: Vec<String> = all["data"]["configEntries"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        all["data"]["configEntries"]["totalCount"].as_u64().unwrap() as usize,
        all_keys.len()
    );
    assert!(all_keys.len() >= 5);

    // Walk two at a time.
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let resp = server
            .graphql(
                "query($after: String) { configEntries(first: 2, after: $after) { edges { cursor node { key } } pageInfo { hasNextPage } } }",
                json!({ "after": after }),
            )
            .await;
        let conn = &resp["data"]["configEntries"];
        for e in conn["edges"].as_array().unwrap() {
            walked.push(e["node"]["key"].as_str().unwrap().to_string());
            after = Some(e["cursor"].as_str().unwrap().to_string());
        }
        if !conn["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(walked, all_keys);

    let too_big = server
        .graphql(
            "{ configEntries(first: 1000) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&too_big), "BAD_USER_INPUT", "{too_big}");
    assert!(too_big["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("first"));
    let garbage = server
        .graphql("{ chains(after: \"%%%\") { edges { cursor } } }", json!({}))
        .await;
    assert_eq!(error_code(&garbage), "BAD_USER_INPUT", "{garbage}");
    let bad_kind = server
        .graphql(
            "{ chains(kind: \"solana\") { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&bad_kind), "BAD_USER_INPUT");
    let missing = server
        .graphql("{ config(key: \"no.such.key\") { value } }", json!({}))
        .await;
    assert_eq!(error_code(&missing), "NOT_FOUND");

    let levels = ["__schema", "types", "fields", "type"]
        .into_iter()
        .chain(["ofType"; 10]);
    let mut deep = String::from("{ ");
    let mut depth = 1;
    for field in levels {
        deep.push_str(field);
        deep.push_str(" { ");
        depth += 1;
    }
    deep.push_str("name");
    deep.push_str(&" }".repeat(depth));
    let resp = server.graphql(&deep, json!({})).await;
    assert!(
        resp["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("nested too deep"),
        "{resp}"
    );
}

#[tokio::test]
async fn mutations_need_the_right_role_leave_an_audit_row_and_notify_subscribers() {
    let db = TestDb::new().await;
    let env = with(base_env(&db), &[("JWT_SECRET", SECRET)]);
    let server = Server::start(&env);
    let mut modern = server
        .subscribe(
            "graphql-transport-ws",
            "subscription { configChanged(prefix: \"sync.\") { key value updatedBy } }",
        )
        .await;
    let mut legacy = server
        .subscribe("graphql-ws", "subscription { configChanged { key value } }")
        .await;

    let set = "mutation($v: String!) { setConfig(key: \"sync.batch_size\", value: $v) { key value valueType updatedBy } }";
    let anon = server.graphql(set, json!({"v": "150"})).await;
    assert_eq!(error_code(&anon), "UNAUTHENTICATED", "{anon}");
    let viewer = token(&env, "viewer");
    let resp = server
        .graphql_with_headers(
            set,
            json!({"v": "150"}),
            &[("authorization", format!("Bearer {viewer}"))],
        )
        .await;
    assert_eq!(error_code(&resp), "FORBIDDEN", "{resp}");
    let garbage = server
        .graphql_with_headers(
            set,
            json!({"v": "150"}),
            &[("authorization", "Bearer not.a.jwt".to_string())],
        )
        .await;
    assert_eq!(error_code(&garbage), "UNAUTHENTICATED");

    let operator = token(&env, "operator");
    let auth = [("authorization", format!("Bearer {operator}"))];
    let bad = server
        .graphql_with_headers(set, json!({"v": "lots"}), &auth)
        .await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT", "{bad}");
    let unchanged = server
        .graphql("{ config(key: \"sync.batch_size\") { value } }", json!({}))
        .await;
    assert_eq!(unchanged["data"]["config"]["value"], "200");

    let ok = server
        .graphql_with_headers(set, json!({"v": "150"}), &auth)
        .await;
    assert_eq!(ok["data"]["setConfig"]["value"], "150", "{ok}");
    assert_eq!(ok["data"]["setConfig"]["updatedBy"], "operator-user");

    let got = modern.next_data().await;
    assert_eq!(got["configChanged"]["key"], "sync.batch_size");
    assert_eq!(got["configChanged"]["value"], "150");
    let got = legacy.next_data().await;
    assert_eq!(got["configChanged"]["value"], "150");

    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let conn = db.connect().await;
    let rows = orrery_entity::audit_log::Entity::find()
        .filter(orrery_entity::audit_log::Column::Action.eq("setConfig"))
        .all(&conn)
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "exactly one audit row (failed attempts change nothing)"
    );
    assert_eq!(rows[0].actor, "operator-user");
    assert_eq!(rows[0].role, "operator");
    assert_eq!(rows[0].before.as_ref().unwrap()["value"], "200");
    assert_eq!(rows[0].after.as_ref().unwrap()["value"], "150");

    let (_, metrics) = server.get("/metrics").await;
    assert!(metrics.contains("orrery_auth_failures_total{reason=\"invalid\"}"));
    assert!(
        metrics.contains("orrery_subscriptions_open 2"),
        "two subscriptions open"
    );
}

#[tokio::test]
async fn a_subscription_on_one_replica_sees_events_published_by_another_through_redis() {
    if redis_url().is_none() || pg_admin_url().is_none() {
        eprintln!(
            "needs ORRERY_TEST_REDIS_URL and ORRERY_TEST_PG_URL: skipped in the embedded run"
        );
        return;
    }
    let db = TestDb::new().await;
    let env = with(base_env(&db), &[("JWT_SECRET", SECRET)]);
    let a = Server::start(&env);
    let b = Server::start(&env);
    let mut on_b = b
        .subscribe(
            "graphql-transport-ws",
            "subscription { configChanged(prefix: \"oracle.\") { key value } }",
        )
        .await;
    let mut on_a = a
        .subscribe(
            "graphql-ws",
            "subscription { configChanged(prefix: \"oracle.\") { key value } }",
        )
        .await;

    // A mutation on replica A reaches subscribers on A and B.
    let operator = token(&env, "admin");
    let resp = a
        .graphql_with_headers(
            "mutation { setConfig(key: \"oracle.min_confidence\", value: \"0.4\") { value } }",
            json!({}),
            &[("authorization", format!("Bearer {operator}"))],
        )
        .await;
    assert_eq!(resp["data"]["setConfig"]["value"], "0.4", "{resp}");
    assert_eq!(on_b.next_data().await["configChanged"]["value"], "0.4");
    assert_eq!(on_a.next_data().await["configChanged"]["value"], "0.4");

    // A third process (the CLI) publishes too.
    let (code, _, err) = run_cli(&env, &["config", "set", "oracle.max_price_usd", "600000"]);
    assert_eq!(code, 0, "{err}");
    let got = on_b.next_data().await;
    assert_eq!(got["configChanged"]["key"], "oracle.max_price_usd");
    assert_eq!(got["configChanged"]["value"], "600000");
}
