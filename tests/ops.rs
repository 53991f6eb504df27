//! Admin mutations against every kind of token: only the right role changes anything, and
//! each change leaves exactly one audit row. Also failed-auth throttling, RS256 keys and
//! token-gated queries and subscriptions.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{base_env, Server, TestDb};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use orrery_api::auth::{Claims, Role};
use orrery_entity::{audit_log, circuit_breaker, source};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde_json::{json, Value};

const SECRET: &str = "ops-test-secret-0123456789";

fn claims(role: Role, aud: &str, exp_offset: i64) -> Claims {
    let now = Utc::now().timestamp();
    Claims {
        sub: format!("{}-user", role.as_str()),
        role,
        exp: (now + exp_offset) as u64,
        nbf: (now - 60) as u64,
        iat: (now - 60) as u64,
        iss: "orrery".into(),
        aud: aud.into(),
    }
}

fn hs256(secret: &str, c: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        c,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Tokens that must all be refused, with the code expected.
fn bad_tokens() -> Vec<(&'static str, Option<String>, &'static str)> {
    vec![
        ("missing", None, "UNAUTHENTICATED"),
        (
            "expired",
            Some(hs256(SECRET, &claims(Role::Admin, "orrery", -3600))),
            "UNAUTHENTICATED",
        ),
        (
            "wrong signature",
            Some(hs256(
                "another-secret-abcdefgh",
                &claims(Role::Admin, "orrery", 600),
            )),
            "UNAUTHENTICATED",
        ),
        (
            "wrong audience",
            Some(hs256(SECRET, &claims(Role::Admin, "someone-else", 600))),
            "UNAUTHENTICATED",
        ),
        (
            "viewer role",
            Some(hs256(SECRET, &claims(Role::Viewer, "orrery", 600))),
            "FORBIDDEN",
        ),
    ]
}

async fn seed_rows(db: &TestDb) {
    let conn = db.connect().await;
    use orrery_migration::MigratorTrait;
    orrery_migration::Migrator::up(&conn, None).await.unwrap();
    let now = Utc::now();
    source::ActiveModel {
        id: Set("evm:testnet".into()),
        kind: Set("evm".into()),
        name: Set("testnet".into()),
        chain_id: Set(Some(1)),
        head_height: Set(Some(100)),
        indexed_height: Set(Some(90)),
        cursor: Set(Some("90".into())),
        status: Set("syncing".into()),
        error_count: Set(0),
        last_error: Set(None),
        last_sync_at: Set(Some(now)),
        head_updated_at: Set(Some(now)),
        backfill_from: Set(None),
        eta_seconds: Set(None),
        paused: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&conn)
    .await
    .unwrap();
    circuit_breaker::ActiveModel {
        name: Set("rpc-testnet".into()),
        state: Set("open".into()),
        failure_count: Set(5),
        opened_at: Set(Some(now)),
        last_failure_at: Set(Some(now)),
        last_error: Set(Some("503".into())),
        updated_at: Set(now),
    }
    .insert(&conn)
    .await
    .unwrap();
}

async fn audit_count(db: &TestDb, action: &str) -> u64 {
    audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq(action))
        .count(&db.connect().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_mutation_refuses_bad_tokens_and_audits_the_right_role() {
    let db = TestDb::new().await;
    seed_rows(&db).await;
    let mut env = base_env(&db);
    env.push(("JWT_SECRET".into(), SECRET.into()));
    env.push(("ORRERY_FAILED_AUTH_LIMIT".into(), "1000".into()));
    let server = Server::start(&env);
    let operator = hs256(SECRET, &claims(Role::Operator, "orrery", 600));

    let cases = [
        (
            "setConfig",
            "mutation { setConfig(key: \"sync.batch_size\", value: \"100\") { value } }",
        ),
        (
            "pauseSource",
            "mutation { pauseSource(id: \"evm:testnet\") { paused } }",
        ),
        (
            "resumeSource",
            "mutation { resumeSource(id: \"evm:testnet\") { paused } }",
        ),
        (
            "rewindSource",
            "mutation { rewindSource(id: \"evm:testnet\", height: 50) { id } }",
        ),
        (
            "restartSource",
            "mutation { restartSource(id: \"evm:testnet\") { id } }",
        ),
        (
            "resetCircuitBreaker",
            "mutation { resetCircuitBreaker(name: \"rpc-testnet\") { state } }",
        ),
    ];
    for (action, mutation) in cases {
        for (what, token, code) in bad_tokens() {
            let headers: Vec<(&str, String)> = token
                .iter()
                .map(|t| ("authorization", format!("Bearer {t}")))
                .collect();
            let resp = server
                .graphql_with_headers(mutation, json!({}), &headers)
                .await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], code,
                "{action} with {what} token: {resp}"
            );
            assert!(resp["data"].is_null() || resp["data"][action.to_string()].is_null());
        }
        assert_eq!(
            audit_count(&db, action).await,
            0,
            "{action}: refused calls leave no audit row"
        );
        let resp = server
            .graphql_with_headers(
                mutation,
                json!({}),
                &[("authorization", format!("Bearer {operator}"))],
            )
            .await;
        assert!(resp["errors"].is_null(), "{action} as operator: {resp}");
        assert_eq!(audit_count(&db, action).await, 1, "{action}: one audit row");
    }
    // Side effects happened once, as asked.
    let conn = db.connect().await;
    let src = source::Entity::find_by_id("evm:testnet".to_string())
        .one(&conn)
        .await
        .unwrap()
        .unwrap();
    assert!(!src.paused, "paused then resumed");
    let breaker = circuit_breaker::Entity::find_by_id("rpc-testnet".to_string())
        .one(&conn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(breaker.state, "closed");
    let commands = orrery_entity::source_command::Entity::find()
        .all(&conn)
        .await
        .unwrap();
    assert_eq!(commands.len(), 2, "rewind and restart queued");
    assert_eq!(commands[0].arguments["height"], 50);

    // The audit log is readable by operators, newest first.
    let resp = server
        .graphql_with_headers(
            "{ auditLog(first: 10) { totalCount edges { node { action actor role target } } } }",
            json!({}),
            &[("authorization", format!("Bearer {operator}"))],
        )
        .await;
    let log = &resp["data"]["auditLog"];
    assert_eq!(log["totalCount"], 6, "{resp}");
    assert_eq!(log["edges"][0]["node"]["action"], "resetCircuitBreaker");
    assert_eq!(log["edges"][0]["node"]["actor"], "operator-user");
    let anon = server
        .graphql("{ auditLog { totalCount } }", json!({}))
        .await;
    assert_eq!(anon["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");

    // Bad arguments are refused by name, with nothing written.
    let resp = server
        .graphql_with_headers(
            "mutation { rewindSource(id: \"evm:testnet\") { id } }",
            json!({}),
            &[("authorization", format!("Bearer {operator}"))],
        )
        .await;
    assert_eq!(resp["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let resp = server
        .graphql_with_headers(
            "mutation { pauseSource(id: \"nope\") { id } }",
            json!({}),
            &[("authorization", format!("Bearer {operator}"))],
        )
        .await;
    assert_eq!(resp["errors"][0]["extensions"]["code"], "NOT_FOUND");
    assert_eq!(audit_count(&db, "rewindSource").await, 1);
}

#[tokio::test]
async fn repeated_failures_throttle_the_client_and_are_counted() {
    let db = TestDb::new().await;
    let mut env = base_env(&db);
    env.push(("JWT_SECRET".into(), SECRET.into()));
    let server = Server::start(&env);
    let q = "mutation { setConfig(key: \"sync.batch_size\", value: \"100\") { value } }";
    for _ in 0..10 {
        let r = server
            .graphql_with_headers(q, json!({}), &[("authorization", "Bearer junk".into())])
            .await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    }
    let good = hs256(SECRET, &claims(Role::Admin, "orrery", 600));
    let r = server
        .graphql_with_headers(q, json!({}), &[("authorization", format!("Bearer {good}"))])
        .await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too many failed"),
        "{r}"
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("orrery_auth_failures_total{reason=\"invalid\"} 10"),
        "{metrics}"
    );
    assert!(metrics.contains("orrery_auth_failures_total{reason=\"throttled\"} 1"));
}

#[tokio::test]
async fn rs256_tokens_verify_against_the_public_key_file() {
    let dir = std::env::temp_dir().join(format!("orrery_rsa_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    let public = dir.join("pub.pem");
    let gen = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status();
    if !gen.map(|s| s.success()).unwrap_or(false) {
        eprintln!("openssl is not available: RS256 key test skipped");
        return;
    }
    assert!(std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap()
        .success());
    let db = TestDb::new().await;
    let mut env = base_env(&db);
    env.push(("JWT_PUBLIC_KEY_FILE".into(), public.display().to_string()));
    env.push(("ORRERY_PUBLIC_QUERIES".into(), "false".into()));
    let server = Server::start(&env);
    let pem = std::fs::read(&key).unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims(Role::Viewer, "orrery", 600),
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    // Queries need a viewer token now.
    let anon = server.graphql("{ health { status } }", json!({})).await;
    assert_eq!(
        anon["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{anon}"
    );
    let ok = server
        .graphql_with_headers(
            "{ health { status } }",
            json!({}),
            &[("authorization", format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(ok["data"]["health"]["status"], "HEALTHY", "{ok}");
    // An HS256 token is refused (no secret configured).
    let hs = hs256(SECRET, &claims(Role::Admin, "orrery", 600));
    let r = server
        .graphql_with_headers(
            "{ health { status } }",
            json!({}),
            &[("authorization", format!("Bearer {hs}"))],
        )
        .await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let _ = std::fs::remove_dir_all(dir);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn health_reports_an_open_breaker_as_an_unhealthy_upstream() {
    let db = TestDb::new().await;
    seed_rows(&db).await;
    let server = Server::start(&base_env(&db));
    let (status, body) = server.get("/api/v1/health").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(v["status"], "unhealthy");
    assert_eq!(v["services"]["upstream:rpc-testnet"]["status"], "unhealthy");
    assert_eq!(v["database"], "connected");
    let (code, out, _) = common::run_cli(&[], &["health", "--url", &server.base]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("upstream:rpc-testnet"));
}

/// A JWKS endpoint on 127.0.0.1 serving whatever keys the test puts in it.
async fn jwks_server(
    keys: std::sync::Arc<std::sync::RwLock<Vec<jsonwebtoken::jwk::Jwk>>>,
) -> String {
    let app = axum::Router::new().route(
        "/realms/ops/protocol/openid-connect/certs",
        axum::routing::get(move || {
            let keys = keys.clone();
            async move {
                let set = jsonwebtoken::jwk::JwkSet {
                    keys: keys.read().unwrap().clone(),
                };
                axum::Json(serde_json::to_value(set).unwrap())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/realms/ops/protocol/openid-connect/certs")
}

fn rsa_jwk(pem: &str, kid: &str) -> jsonwebtoken::jwk::Jwk {
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    jwk
}

/// A Keycloak-shaped access token (no `nbf`, roles in `realm_access.roles`, `aud` array).
fn keycloak_token(pem: &str, kid: &str, issuer: &str, roles: &[&str]) -> String {
    let now = Utc::now().timestamp();
    let claims = json!({
        "exp": now + 300, "iat": now, "jti": "0b6e8f5c", "iss": issuer,
        "aud": ["orrery", "account"], "sub": "kc-user-7", "typ": "Bearer",
        "azp": "orrery-dashboard", "realm_access": {"roles": roles},
        "scope": "openid profile", "preferred_username": "ops",
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// The running server takes Keycloak tokens through `JWT_JWKS_URL`, maps their realm roles,
/// follows a key rotation, names the check a refused token failed, and still accepts
/// `orrery token issue` tokens under the same settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_tokens_through_a_jwks_with_rotation() {
    const RSA_A: &str = include_str!("../api/tests-data/jwt/rsa-a.pem");
    const RSA_B: &str = include_str!("../api/tests-data/jwt/rsa-b.pem");
    let keys = std::sync::Arc::new(std::sync::RwLock::new(vec![rsa_jwk(RSA_A, "kc-1")]));
    let url = jwks_server(keys.clone()).await;
    let issuer = "http://127.0.0.1/realms/ops";
    let db = TestDb::new().await;
    let mut env = base_env(&db);
    for (k, v) in [
        ("JWT_JWKS_URL", url.as_str()),
        ("JWT_ISSUER", issuer),
        ("JWT_ROLES_CLAIM", "realm_access.roles"),
        (
            "JWT_ROLE_MAP",
            "orrery-operator=operator,orrery-admin=admin",
        ),
        ("JWT_JWKS_MIN_REFRESH_SECS", "0"),
        ("JWT_SECRET", SECRET),
    ] {
        env.push((k.into(), v.into()));
    }
    let server = Server::start(&env);
    let set =
        "mutation { setConfig(key: \"sync.batch_size\", value: \"120\") { value updatedBy } }";
    let call = |token: String| {
        let server = &server;
        async move {
            server
                .graphql_with_headers(
                    set,
                    json!({}),
                    &[("authorization", format!("Bearer {token}"))],
                )
                .await
        }
    };
    let ok = call(keycloak_token(
        RSA_A,
        "kc-1",
        issuer,
        &["offline_access", "orrery-operator"],
    ))
    .await;
    assert_eq!(ok["data"]["setConfig"]["updatedBy"], "kc-user-7", "{ok}");
    let unmapped = call(keycloak_token(RSA_A, "kc-1", issuer, &["offline_access"])).await;
    assert_eq!(
        unmapped["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    let msg = unmapped["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("role \"offline_access\" at path \"realm_access.roles\" is not mapped"),
        "{msg}"
    );
    // Rotation: a token under a kid the server has not seen yet makes it fetch the set again.
    let rotated = keycloak_token(RSA_B, "kc-2", issuer, &["orrery-admin"]);
    let refused = call(rotated.clone()).await;
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown kid \"kc-2\""),
        "{refused}"
    );
    keys.write().unwrap().push(rsa_jwk(RSA_B, "kc-2"));
    let ok = call(rotated).await;
    assert_eq!(ok["data"]["setConfig"]["value"], "120", "{ok}");
    // `orrery token issue` writes the role where these settings read it.
    let (code, token, err) = common::run_cli(&env, &["token", "issue", "--role", "admin"]);
    assert_eq!(code, 0, "{err}");
    let ok = call(token.trim().to_string()).await;
    assert_eq!(ok["data"]["setConfig"]["updatedBy"], "cli", "{ok}");
}
