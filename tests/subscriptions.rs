//! Subscription sockets under load: a client that stops reading is closed with a reason once
//! its bounded queue is full, while the other clients keep receiving; deliveries are timed
//! in `orrery_subscription_delivery_seconds`.

mod common;

use std::time::{Duration, Instant};

use common::{base_env, run_cli, Server, TestDb};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "test-secret-0123456789";

fn operator_token(env: &[(String, String)]) -> String {
    let (code, out, err) = run_cli(
        env,
        &["token", "issue", "--role", "operator", "--ttl", "10m"],
    );
    assert_eq!(code, 0, "token issue failed: {err}");
    out.trim().to_string()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_a_reason_and_others_keep_receiving() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("orrery_slow_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("orrery.toml");
    std::fs::write(&toml, "[subscriptions]\nmax_queued_frames = 8\n").unwrap();
    let mut env = base_env(&db);
    env.push(("JWT_SECRET".into(), SECRET.into()));
    env.push(("ORRERY_CONFIG".into(), toml.display().to_string()));
    let server = Server::start(&env);
    let auth = [("authorization", format!("Bearer {}", operator_token(&env)))];

    // The slow client: a tiny receive buffer, many subscriptions, and it never reads.
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut req = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut slow, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    slow.send(Message::Text(
        json!({"type": "connection_init"}).to_string().into(),
    ))
    .await
    .unwrap();
    loop {
        match slow.next().await {
            Some(Ok(Message::Text(t))) if t.contains("connection_ack") => break,
            Some(Ok(_)) => continue,
            other => panic!("no ack: {other:?}"),
        }
    }
    for id in 0..100 {
        slow.send(Message::Text(
            json!({"id": id.to_string(), "type": "subscribe",
                "payload": {"query": "subscription { configChanged { key value valueType updatedBy updatedAt } }"}})
            .to_string()
            .into(),
        ))
        .await
        .unwrap();
    }

    let mut fast = server
        .subscribe(
            "graphql-transport-ws",
            "subscription { configChanged { key value } }",
        )
        .await;
    // Subscriptions are registered before the first change is published.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let set = "mutation($v: String!) { setConfig(key: \"sync.batch_size\", value: $v) { value } }";
    let started = Instant::now();
    let mut changes = 0u32;
    loop {
        let v = (100 + changes % 100).to_string();
        let r = server
            .graphql_with_headers(set, json!({ "v": v }), &auth)
            .await;
        assert!(r.get("errors").is_none(), "{r}");
        changes += 1;
        let got = fast.next_data().await;
        assert_eq!(got["configChanged"]["value"], v.as_str(), "{got}");
        let m = server.get("/metrics").await.1;
        if metric(&m, "orrery_subscription_slow_closes_total") >= 1.0 {
            break;
        }
        assert!(
            changes < 5_000 && started.elapsed() < Duration::from_secs(240),
            "the slow client was not closed after {changes} changes"
        );
    }

    // Fast clients keep receiving after the slow one is gone.
    for i in 0..3 {
        let v = (10 + i).to_string();
        server
            .graphql_with_headers(set, json!({ "v": v }), &auth)
            .await;
        let got = fast.next_data().await;
        assert_eq!(got["configChanged"]["value"], v.as_str());
    }

    // The slow client finds, after what the socket already held, the close and its reason.
    let close = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = slow.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => continue,
                Err(e) => panic!("socket failed before the close frame: {e}"),
            }
        }
        panic!("socket ended without a close frame");
    })
    .await
    .expect("close frame within 30 s");
    let frame = close.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
    assert!(frame.reason.contains("too slow"), "{frame:?}");

    let m = server.get("/metrics").await.1;
    assert!(
        metric(&m, "orrery_subscription_delivery_seconds_count") >= f64::from(changes),
        "every delivered change was timed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
