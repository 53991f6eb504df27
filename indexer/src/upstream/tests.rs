//! The client against a real local HTTP server (axum on 127.0.0.1:0) scripted to fail in
//! the ways upstreams do: 5xx, 429, invalid JSON, cut-off bodies, hangs, dead hosts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use url::Url;

use super::*;
use crate::metrics::Metrics;

/// One scripted answer.
#[derive(Clone)]
enum Reply {
    /// Status and body.
    Plain(u16, &'static str),
    /// Status, body and extra headers.
    Headers(u16, &'static str, Vec<(&'static str, &'static str)>),
    /// Answer 200 with this body only after a delay.
    Hang(Duration, &'static str),
    /// 200 whose body breaks off after a few bytes.
    Broken,
    /// 200 echoing the request body (checks method and content type).
    Echo,
}

#[derive(Clone, Default)]
struct Shared {
    hits: Arc<AtomicUsize>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

struct TestServer {
    url: Url,
    shared: Shared,
}

impl TestServer {
    /// Serves `script` in order, repeating the last reply forever.
    async fn start(script: Vec<Reply>) -> Self {
        let shared = Shared::default();
        *shared.script.lock().unwrap() = script.into();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: Url::parse(&format!("http://{addr}/api/")).unwrap(),
            shared,
        }
    }

    fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    fn set_script(&self, script: Vec<Reply>) {
        *self.shared.script.lock().unwrap() = script.into();
    }

    fn paths(&self) -> Vec<String> {
        self.shared.paths.lock().unwrap().clone()
    }
}

async fn handle(State(shared): State<Shared>, req: axum::extract::Request) -> Response {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    shared.paths.lock().unwrap().push(
        parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    );
    let reply = {
        let mut script = shared.script.lock().unwrap();
        if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script.front().cloned().unwrap()
        }
    };
    let respond = |status: u16, body: Body| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    };
    match reply {
        Reply::Plain(status, body) => respond(status, Body::from(body)),
        Reply::Headers(status, body, headers) => {
            let mut response = respond(status, Body::from(body));
            for (k, v) in headers {
                response
                    .headers_mut()
                    .insert(k, HeaderValue::from_static(v));
            }
            response
        }
        Reply::Hang(delay, body) => {
            tokio::time::sleep(delay).await;
            respond(200, Body::from(body))
        }
        Reply::Broken => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"records\": [")),
                Err(std::io::Error::other("connection reset")),
            ];
            respond(200, Body::from_stream(futures::stream::iter(chunks)))
        }
        Reply::Echo => {
            let is_json = parts
                .headers
                .get("content-type")
                .is_some_and(|v| v == "application/json");
            if parts.method != Method::POST || !is_json {
                return respond(400, Body::from("expected a JSON POST"));
            }
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            respond(StatusCode::OK.as_u16(), Body::from(bytes))
        }
    }
}

/// Fast settings: no local budget, short timeout and backoff, breaker out of the way.
fn config(name: &str, urls: Vec<Url>) -> UpstreamConfig {
    UpstreamConfig {
        requests_per_hour: 0,
        burst: 10,
        timeout: Duration::from_millis(500),
        max_retries: 3,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
        breaker_threshold: 100,
        breaker_recovery: Duration::from_millis(200),
        ..UpstreamConfig::new(name, urls)
    }
}

fn requests(name: &str, status: &str) -> u64 {
    Metrics::global()
        .upstream_requests
        .with_label_values(&[name, status])
        .get()
}

fn retries(name: &str) -> u64 {
    Metrics::global()
        .upstream_retries
        .with_label_values(&[name])
        .get()
}

const GOOD: &str = r#"{"ok": true}"#;

#[tokio::test]
async fn server_error_is_retried_then_succeeds() {
    let name = "t-5xx-retry";
    let server = TestServer::start(vec![Reply::Plain(500, "oops"), Reply::Plain(200, GOOD)]).await;
    let client = UpstreamClient::new(config(name, vec![server.url.clone()])).unwrap();
    let value: Value = client.get_json("/ledgers?limit=1").await.unwrap();
    assert_eq!(value, json!({"ok": true}));
    assert_eq!(server.hits(), 2);
    assert_eq!(server.paths(), vec!["/api/ledgers?limit=1"; 2]);
    assert_eq!(requests(name, "500"), 1);
    assert_eq!(requests(name, "200"), 1);
    assert_eq!(retries(name), 1);
    // The success reset the failure streak.
    assert_eq!(client.breaker().snapshot().failure_count, 0);
}

#[tokio::test]
async fn persistent_server_error_gives_up_after_max_retries() {
    let name = "t-5xx-give-up";
    let server = TestServer::start(vec![Reply::Plain(503, "maintenance")]).await;
    let client = UpstreamClient::new(UpstreamConfig {
        max_retries: 2,
        ..config(name, vec![server.url.clone()])
    })
    .unwrap();
    let err = client.get_json::<Value>("/x").await.unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Status { status: 503, body, .. } if body == "maintenance"),
        "{err}"
    );
    assert!(err.is_transient());
    assert_eq!(server.hits(), 3);
    assert_eq!(retries(name), 2);
    let snap = client.breaker().snapshot();
    assert_eq!(snap.failure_count, 3);
    assert!(snap.last_error.unwrap().contains("HTTP 503"));
}

#[tokio::test]
async fn too_many_requests_waits_retry_after() {
    let name = "t-429";
    let server = TestServer::start(vec![
        Reply::Headers(429, "slow down", vec![("retry-after", "1")]),
        Reply::Plain(200, GOOD),
    ])
    .await;
    let client = UpstreamClient::new(config(name, vec![server.url.clone()])).unwrap();
    let started = Instant::now();
    let value: Value = client.get_json("/x").await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(value["ok"], json!(true));
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1900), "{elapsed:?}");
    assert_eq!(server.hits(), 2);
    assert_eq!(requests(name, "429"), 1);
    assert!(
        Metrics::global()
            .rate_limit_waits
            .with_label_values(&[name])
            .get()
            >= 1
    );
    // Being rate limited is not the upstream failing.
    assert_eq!(client.breaker().snapshot().failure_count, 0);
    assert_eq!(client.breaker().state(), BreakerState::Closed);
}

#[tokio::test]
async fn rate_limited_to_the_end_reports_rate_limited() {
    let name = "t-429-exhausted";
    let server = TestServer::start(vec![Reply::Headers(429, "", vec![("retry-after", "0")])]).await;
    let client = UpstreamClient::new(UpstreamConfig {
        max_retries: 1,
        ..config(name, vec![server.url.clone()])
    })
    .unwrap();
    let err = client.get_text("/x").await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::RateLimited { retry_after: Some(d), .. } if d.is_zero()),
        "{err}"
    );
    assert_eq!(err.status(), Some(429));
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn ratelimit_headers_block_until_reset() {
    let name = "t-x-ratelimit";
    let server = TestServer::start(vec![Reply::Headers(
        200,
        GOOD,
        vec![
            ("x-ratelimit-limit", "3600"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1"),
        ],
    )])
    .await;
    let client = UpstreamClient::new(UpstreamConfig {
        requests_per_hour: 3600,
        burst: 50,
        ..config(name, vec![server.url.clone()])
    })
    .unwrap();
    assert_eq!(client.rate_limiter().remaining(), 50);
    let _: Value = client.get_json("/x").await.unwrap();
    assert_eq!(client.rate_limiter().remaining(), 0);
    assert_eq!(client.rate_limiter().server_limit(), Some(3600));
    let blocked = client.rate_limiter().blocked_for().unwrap();
    assert!(blocked > Duration::from_millis(800), "{blocked:?}");
    assert_eq!(
        Metrics::global()
            .rate_limit_remaining
            .with_label_values(&[name])
            .get(),
        0.0
    );
    let started = Instant::now();
    let _: Value = client.get_json("/x").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn invalid_json_is_retried_then_decoded() {
    let name = "t-decode";
    let server = TestServer::start(vec![
        Reply::Plain(200, r#"{"ok": tru"#),
        Reply::Plain(200, GOOD),
    ])
    .await;
    let client = UpstreamClient::new(config(name, vec![server.url.clone()])).unwrap();
    let value: Value = client.get_json("/x").await.unwrap();
    assert_eq!(value["ok"], json!(true));
    assert_eq!(server.hits(), 2);
    assert_eq!(requests(name, "decode"), 1);
    assert_eq!(requests(name, "200"), 1);
}

#[tokio::test]
async fn invalid_json_to_the_end_is_a_decode_error_with_a_snippet() {
    let name = "t-decode-exhausted";
    let server = TestServer::start(vec![Reply::Plain(200, "<html>bad gateway</html>")]).await;
    let client = UpstreamClient::new(UpstreamConfig {
        max_retries: 1,
        ..config(name, vec![server.url.clone()])
    })
    .unwrap();
    let err = client.get_json::<Value>("/x").await.unwrap_err();
    match &err {
        UpstreamError::Decode {
            name: n,
            url,
            snippet,
            ..
        } => {
            assert_eq!(n, name);
            assert!(url.ends_with("/api/x"), "{url}");
            assert_eq!(snippet, "<html>bad gateway</html>");
        }
        other => panic!("expected a decode error, got {other}"),
    }
    assert_eq!(server.hits(), 2);
    // The same body is fine as text.
    assert_eq!(
        client.get_text("/x").await.unwrap(),
        "<html>bad gateway</html>"
    );
}

#[tokio::test]
async fn a_body_cut_short_is_retried() {
    let name = "t-broken-body";
    let server = TestServer::start(vec![Reply::Broken, Reply::Plain(200, GOOD)]).await;
    let client = UpstreamClient::new(config(name, vec![server.url.clone()])).unwrap();
    let value: Value = client.get_json("/x").await.unwrap();
    assert_eq!(value["ok"], json!(true));
    assert_eq!(server.hits(), 2);
    assert_eq!(requests(name, "error"), 1);
}

#[tokio::test]
async fn a_hanging_request_times_out_and_is_retried() {
    let name = "t-timeout";
    let server = TestServer::start(vec![
        Reply::Hang(Duration::from_secs(3), GOOD),
        Reply::Plain(200, GOOD),
    ])
    .await;
    let client = UpstreamClient::new(UpstreamConfig {
        timeout: Duration::from_millis(150),
        ..config(name, vec![server.url.clone()])
    })
    .unwrap();
    let started = Instant::now();
    let value: Value = client.get_json("/x").await.unwrap();
    assert_eq!(value["ok"], json!(true));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(150) && elapsed < Duration::from_secs(1),
        "{elapsed:?}"
    );
    assert_eq!(requests(name, "timeout"), 1);

    server.set_script(vec![Reply::Hang(Duration::from_secs(3), GOOD)]);
    let no_retry = UpstreamClient::new(UpstreamConfig {
        timeout: Duration::from_millis(100),
        max_retries: 0,
        ..config("t-timeout-no-retry", vec![server.url.clone()])
    })
    .unwrap();
    let err = no_retry.get_json::<Value>("/x").await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::Timeout { timeout, .. } if timeout == Duration::from_millis(100)),
        "{err}"
    );
}

#[tokio::test]
async fn client_errors_are_returned_at_once_and_matchable() {
    let name = "t-404";
    let server = TestServer::start(vec![Reply::Plain(404, r#"{"status": 404}"#)]).await;
    let client = UpstreamClient::new(config(name, vec![server.url.clone()])).unwrap();
    let err = client
        .get_json::<Value>("/accounts/GXYZ")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Status { status: 404, url, .. } if url.ends_with("/api/accounts/GXYZ")),
        "{err}"
    );
    assert!(err.is_not_found());
    assert!(err.to_string().contains(name));
    assert_eq!(server.hits(), 1);
    assert_eq!(retries(name), 0);
    assert_eq!(client.breaker().snapshot().failure_count, 0);
}

#[tokio::test]
async fn breaker_opens_fails_fast_and_recovers_through_a_probe() {
    let name = "t-breaker";
    let server = TestServer::start(vec![Reply::Plain(500, "down")]).await;
    let client = UpstreamClient::new(UpstreamConfig {
        max_retries: 0,
        breaker_threshold: 3,
        breaker_recovery: Duration::from_millis(200),
        ..config(name, vec![server.url.clone()])
    })
    .unwrap();
    let mut changes = client.breaker().subscribe();
    for _ in 0..3 {
        let err = client.get_json::<Value>("/x").await.unwrap_err();
        assert_eq!(err.status(), Some(500));
    }
    assert_eq!(client.breaker().state(), BreakerState::Open);
    assert_eq!(changes.borrow_and_update().state, BreakerState::Open);

    // Open: fail fast without reaching the server.
    let err = client.get_json::<Value>("/x").await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::CircuitOpen { retry_in, .. } if retry_in <= Duration::from_millis(200)),
        "{err}"
    );
    assert_eq!(server.hits(), 3);
    assert_eq!(requests(name, "circuit_open"), 1);
    assert_eq!(
        Metrics::global()
            .breaker_state
            .with_label_values(&[name])
            .get(),
        2
    );

    // After the recovery timeout one probe goes through; it fails: open again.
    tokio::time::sleep(Duration::from_millis(220)).await;
    let err = client.get_json::<Value>("/x").await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(server.hits(), 4);
    assert!(matches!(
        client.get_json::<Value>("/x").await,
        Err(UpstreamError::CircuitOpen { .. })
    ));
    assert_eq!(server.hits(), 4);

    // Next probe succeeds: closed, requests flow.
    server.set_script(vec![Reply::Plain(200, GOOD)]);
    tokio::time::sleep(Duration::from_millis(220)).await;
    let _: Value = client.get_json("/x").await.unwrap();
    assert_eq!(client.breaker().state(), BreakerState::Closed);
    assert_eq!(changes.borrow_and_update().state, BreakerState::Closed);
    let _: Value = client.get_json("/x").await.unwrap();
    assert_eq!(server.hits(), 6);
    let transitions = |to: &str| {
        Metrics::global()
            .breaker_transitions
            .with_label_values(&[name, to])
            .get()
    };
    assert_eq!(transitions("open"), 2);
    assert_eq!(transitions("half_open"), 2);
    assert_eq!(transitions("closed"), 1);
}

#[tokio::test]
async fn an_opening_breaker_stops_the_retries() {
    let name = "t-breaker-stops-retries";
    let server = TestServer::start(vec![Reply::Plain(502, "bad gateway")]).await;
    let client = UpstreamClient::new(UpstreamConfig {
        max_retries: 10,
        breaker_threshold: 2,
        breaker_recovery: Duration::from_secs(60),
        ..config(name, vec![server.url.clone()])
    })
    .unwrap();
    let err = client.get_json::<Value>("/x").await.unwrap_err();
    assert!(matches!(err, UpstreamError::CircuitOpen { .. }), "{err}");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn fails_over_to_the_next_base_url() {
    let name = "t-failover";
    // A port nobody listens on: bind, note, release.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        Url::parse(&format!("http://{addr}/api/")).unwrap()
    };
    let server = TestServer::start(vec![Reply::Plain(200, GOOD)]).await;
    let client = UpstreamClient::new(config(name, vec![dead.clone(), server.url.clone()])).unwrap();
    let value: Value = client.get_json("/x").await.unwrap();
    assert_eq!(value["ok"], json!(true));
    assert_eq!(requests(name, "error"), 1);
    assert_eq!(client.current_base_url(), &server.url);
    // Later requests go straight to the working URL, absolute ones included.
    let next = format!("{}/x?cursor=5", dead.as_str().trim_end_matches('/'));
    let _: Value = client.get_json(&next).await.unwrap();
    assert_eq!(requests(name, "error"), 1);
    assert_eq!(server.hits(), 2);
    assert_eq!(server.paths(), vec!["/api/x", "/api/x?cursor=5"]);
}

#[tokio::test]
async fn post_json_sends_and_decodes_json() {
    let name = "t-post";
    let server = TestServer::start(vec![Reply::Echo]).await;
    let client = UpstreamClient::new(config(name, vec![server.url.clone()])).unwrap();
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []});
    let answer: Value = client.post_json("", &request).await.unwrap();
    assert_eq!(answer, request);
    assert_eq!(server.paths(), vec!["/api/"]);
}

#[tokio::test]
async fn get_raw_streams_once_without_retry() {
    let name = "t-raw";
    let server = TestServer::start(vec![
        Reply::Plain(200, "data: hello\n\n"),
        Reply::Plain(503, "busy"),
    ])
    .await;
    let client = UpstreamClient::new(config(name, vec![server.url.clone()])).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("accept", "text/event-stream".parse().unwrap());
    let response = client
        .get_raw("/ledgers?cursor=now", headers)
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "data: hello\n\n");
    let err = client
        .get_raw("/ledgers", reqwest::header::HeaderMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(server.hits(), 2);
    assert_eq!(client.breaker().snapshot().failure_count, 1);
    assert_eq!(retries(name), 0);
}

#[tokio::test]
async fn clones_share_limiter_and_breaker() {
    let name = "t-clone";
    let server = TestServer::start(vec![Reply::Plain(500, "x")]).await;
    let client = UpstreamClient::new(UpstreamConfig {
        max_retries: 0,
        breaker_threshold: 1,
        breaker_recovery: Duration::from_secs(60),
        ..config(name, vec![server.url.clone()])
    })
    .unwrap();
    let other = client.clone();
    assert!(client.get_json::<Value>("/x").await.is_err());
    assert!(matches!(
        other.get_json::<Value>("/x").await,
        Err(UpstreamError::CircuitOpen { .. })
    ));
    assert_eq!(other.name(), name);
    assert_eq!(server.hits(), 1);
}
