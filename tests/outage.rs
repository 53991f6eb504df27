//! Dependencies going away and coming back while the server runs: health turns unhealthy
//! within one check and recovers without a restart.

mod common;

use std::time::{Duration, Instant};

use common::services::ThrowawayRedis;
use common::{base_env, pg_admin_url, Server, TestDb};
use serde_json::Value;

async fn health(server: &Server) -> (u16, Value) {
    let (status, body) = server.get("/api/v1/health").await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn eventually(server: &Server, what: &str, pred: impl Fn(u16, &Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, v) = health(server).await;
        if pred(status, &v) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} not reached; last: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn redis_outage_is_reported_and_recovers_without_restart() {
    let Some(mut redis) = ThrowawayRedis::spawn() else {
        eprintln!("redis-server is not installed: Redis outage test skipped");
        return;
    };
    let db = TestDb::new().await;
    let mut env = base_env(&db);
    env.retain(|(k, _)| k != "REDIS_URL");
    env.push(("REDIS_URL".into(), redis.url()));
    let server = Server::start(&env);
    let v = eventually(&server, "healthy", |s, v| {
        s == 200 && v["redis"] == "connected"
    })
    .await;
    assert_eq!(v["status"], "healthy");

    redis.stop();
    let v = eventually(&server, "redis down", |s, v| {
        s == 503 && v["redis"] == "disconnected"
    })
    .await;
    assert_eq!(v["services"]["bus"]["status"], "unhealthy");
    assert_eq!(v["database"], "connected");
    let (ready, _) = server.get("/ready").await;
    assert_eq!(ready, 503, "not ready without the bus");

    redis.start();
    eventually(&server, "recovered", |s, v| {
        s == 200 && v["redis"] == "connected" && v["status"] == "healthy"
    })
    .await;
    let (ready, _) = server.get("/ready").await;
    assert_eq!(ready, 200);
}

#[tokio::test]
async fn database_outage_is_reported_and_recovers_without_restart() {
    let Some(admin) = pg_admin_url() else {
        eprintln!("needs ORRERY_TEST_PG_URL (a SQLite file cannot be taken away from a running process): skipped");
        return;
    };
    let db = TestDb::new().await;
    let server = Server::start(&base_env(&db));
    eventually(&server, "healthy", |s, v| {
        s == 200 && v["database"] == "connected"
    })
    .await;
    let name = url::Url::parse(&db.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    let conn = sea_orm::Database::connect(&admin).await.unwrap();
    use sea_orm::ConnectionTrait;
    conn.execute_unprepared(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ))
    .await
    .unwrap();
    conn.execute_unprepared(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await
    .unwrap();
    let v = eventually(&server, "db down", |s, v| {
        s == 503 && v["database"] == "disconnected"
    })
    .await;
    assert_eq!(v["services"]["database"]["status"], "unhealthy");
    let (ready, _) = server.get("/ready").await;
    assert_eq!(ready, 503);
    conn.execute_unprepared(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    eventually(&server, "recovered", |s, v| {
        s == 200 && v["database"] == "connected"
    })
    .await;
    let (ready, _) = server.get("/ready").await;
    assert_eq!(ready, 200);
}
