//! Cost limits and transport errors of `/graphql` against a running server: alias,
//! nesting, `first`-multiplication, token, directive and size bombs are refused before any
//! resolver runs, with an error naming the limit; malformed bodies and batches get GraphQL
//! errors; persisted queries work over GET and POST, and the allow-list mode holds.

mod common;

use common::{base_env, Server, TestDb};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn code(resp: &Value) -> &str {
    resp["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

fn limit(resp: &Value) -> &str {
    resp["errors"][0]["extensions"]["limit"]
        .as_str()
        .unwrap_or("<none>")
}

fn sha(q: &str) -> String {
    hex::encode(Sha256::digest(q.as_bytes()))
}

/// POSTs `body` as JSON text; returns status and the parsed response.
async fn post_raw(server: &Server, body: String) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/graphql", server.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /graphql");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, value)
}

/// POSTs `body` over a plain socket, writing from another thread: a server may answer (413)
/// and close before reading a large body, which an HTTP client reports as a reset.
fn post_unread(server: &Server, body: String) -> (u16, Value) {
    use std::io::{Read, Write};
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    let mut writer = stream.try_clone().unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let w = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(body.as_bytes());
    });
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let _ = w.join();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // A chunked body: take the JSON between the first `{` and the last `}`.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => &body[a..=b],
        _ => body,
    };
    let value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {body:?}"));
    (status, value)
}

async fn post(server: &Server, body: Value) -> (u16, Value) {
    post_raw(server, body.to_string()).await
}

fn assert_refused(resp: &Value, want_code: &str, want_limit: &str) {
    assert_eq!(code(resp), want_code, "{resp}");
    assert_eq!(limit(resp), want_limit, "{resp}");
    assert!(resp["data"].is_null(), "no resolver may run: {resp}");
    let msg = resp["errors"][0]["message"].as_str().unwrap_or("");
    assert!(msg.contains(want_limit), "message names the limit: {msg}");
}

#[tokio::test]
async fn bombs_are_refused_before_any_resolver_runs() {
    let db = TestDb::new().await;
    let server = Server::start(&base_env(&db));

    // The bomb: 2,000 aliased agents with 50 feedback each (about 220 KB).
    let mut bomb = String::from("{");
    for i in 0..2000 {
        bomb.push_str(&format!(
            " a{i}: agent(chain: \"sepolia\", agentId: \"{i}\") {{ feedback(first: 50) {{ edges {{ node {{ score }} }} }} }}"
        ));
    }
    bomb.push('}');
    let (status, resp) = post(&server, json!({ "query": bomb })).await;
    assert_eq!(status, 200);
    assert_refused(&resp, "QUERY_TOO_LARGE", "graphql.max_query_bytes");

    // An alias bomb small enough for the size and token limits.
    let mut aliases = String::from("{");
    for i in 0..100 {
        aliases.push_str(&format!(" h{i}: health {{ status }}"));
    }
    aliases.push('}');
    let (_, resp) = post(&server, json!({ "query": aliases })).await;
    assert_refused(&resp, "QUERY_TOO_COMPLEX", "graphql.max_aliases");

    // A deep-nesting bomb never reaches the parser.
    let deep = format!("{}{}", "{ a ".repeat(500), "}".repeat(500));
    let (_, resp) = post(&server, json!({ "query": deep })).await;
    assert_refused(&resp, "QUERY_TOO_COMPLEX", "graphql.max_depth");
    // Nesting within the bracket bound but over graphql.max_depth is refused after parsing.
    let mut intro = String::from("{ __schema { types { fields { type ");
    intro.push_str(&"{ ofType ".repeat(12));
    intro.push_str("{ name }");
    intro.push_str(&" }".repeat(12 + 3));
    intro.push_str(" }");
    let (_, resp) = post(&server, json!({ "query": intro })).await;
    assert_refused(&resp, "QUERY_TOO_COMPLEX", "graphql.max_depth");
    assert!(resp["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("nested too deep"));

    // A `first`-multiplication bomb: 200 agents x 200 feedback.
    let mult = "{ agents(chain: \"sepolia\", first: 200) { edges { node { feedback(first: 200) { edges { node { score tag1 tag2 uri } } } } } } }";
    let (_, resp) = post(&server, json!({ "query": mult })).await;
    assert_refused(&resp, "QUERY_TOO_COMPLEX", "graphql.max_complexity");
    assert!(resp["errors"][0]["extensions"]["actual"].as_u64().unwrap() > 200 * 200);
    // The same shape at a sensible size runs.
    let small = "{ agents(chain: \"sepolia\", first: 10) { edges { node { feedback(first: 10) { edges { node { score } } } } } } }";
    let (_, resp) = post(&server, json!({ "query": small })).await;
    assert!(resp["errors"].is_null(), "{resp}");
    assert_eq!(resp["data"]["agents"]["edges"], json!([]));

    // Too many tokens (no alias, small text).
    let tokens = format!("{{ {} }}", "__typename ".repeat(2500));
    let (_, resp) = post(&server, json!({ "query": tokens })).await;
    assert_refused(&resp, "QUERY_TOO_COMPLEX", "graphql.max_tokens");

    // Too many directives.
    let directives = format!("{{ __typename {} }}", "@include(if: true) ".repeat(60));
    let (_, resp) = post(&server, json!({ "query": directives })).await;
    assert_refused(&resp, "QUERY_TOO_COMPLEX", "graphql.max_directives");

    // A fragment bomb (2^40 fields from 41 small fragments) is refused without expanding
    // (expanding it would take hours).
    let mut frag = String::from("{ ...F40 }\nfragment F0 on QueryRoot { __typename }\n");
    for i in 1..=40 {
        frag.push_str(&format!(
            "fragment F{i} on QueryRoot {{ ...F{p} ...F{p} }}\n",
            p = i - 1
        ));
    }
    let (_, resp) = post(&server, json!({ "query": frag })).await;
    assert_refused(&resp, "QUERY_TOO_COMPLEX", "graphql.max_complexity");

    // A 5 MB query: the body limit answers, in GraphQL shape.
    let huge = format!("{{ {} }}", "__typename ".repeat(500_000));
    let (status, resp) = post_unread(&server, json!({ "query": huge }).to_string());
    assert_eq!(status, 413, "{resp}");
    assert_eq!(code(&resp), "QUERY_TOO_LARGE", "{resp}");
    assert!(resp["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("http.body_limit_bytes"));

    // The server still answers, and its resolvers ran for none of the above.
    let resp = server.graphql("{ health { status } }", json!({})).await;
    assert_eq!(resp["data"]["health"]["status"], "HEALTHY", "{resp}");
}

#[tokio::test]
async fn malformed_bodies_and_batches_get_graphql_errors() {
    let db = TestDb::new().await;
    let server = Server::start(&base_env(&db));

    let (status, resp) = post_raw(&server, "{not json".to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(code(&resp), "BAD_REQUEST", "{resp}");
    let msg = resp["errors"][0]["message"].as_str().unwrap();
    assert!(
        !msg.contains("InvalidRequest("),
        "no Rust debug text: {msg}"
    );
    assert!(msg.contains("expected"), "{msg}");

    let (status, resp) = post(
        &server,
        json!([{ "query": "{ __typename }" }, { "query": "{ __typename }" }]),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(code(&resp), "BATCH_NOT_ALLOWED", "{resp}");

    // A method /graphql does not serve.
    let resp = reqwest::Client::new()
        .put(format!("{}/graphql", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let body: Value = resp.json().await.expect("GraphQL-shaped 405");
    assert_eq!(code(&body), "BAD_REQUEST", "{body}");
}

#[tokio::test]
async fn batches_run_when_enabled_and_are_bounded() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("orrery-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("orrery.toml");
    std::fs::write(
        &cfg,
        "[graphql]\nbatch_requests = true\nmax_batch_size = 2\n",
    )
    .unwrap();
    let mut env = base_env(&db);
    env.push(("ORRERY_CONFIG".into(), cfg.display().to_string()));
    let server = Server::start(&env);

    let one = json!({ "query": "{ __typename }" });
    let (status, resp) = post(&server, json!([one, one])).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp[1]["data"]["__typename"], "QueryRoot", "{resp}");
    let (status, resp) = post(&server, json!([one, one, one])).await;
    assert_eq!(status, 400);
    assert_eq!(code(&resp), "BATCH_TOO_LARGE", "{resp}");
    assert_eq!(limit(&resp), "graphql.max_batch_size");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn automatic_persisted_queries_over_post_and_get() {
    let db = TestDb::new().await;
    let server = Server::start(&base_env(&db));
    let query = "query Ping { health { status } }";
    let hash = sha(query);
    let ext = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });

    // Unknown hash: the client is told to send the text.
    let (_, resp) = post(&server, json!({ "extensions": ext })).await;
    assert_eq!(code(&resp), "PERSISTED_QUERY_NOT_FOUND", "{resp}");
    assert_eq!(resp["errors"][0]["message"], "PersistedQueryNotFound");
    // GET with only the hash: same.
    let url = |ext: &Value| {
        format!(
            "{}/graphql?extensions={}",
            server.base,
            url::form_urlencoded::byte_serialize(ext.to_string().as_bytes()).collect::<String>()
        )
    };
    let got: Value = reqwest::get(url(&ext)).await.unwrap().json().await.unwrap();
    assert_eq!(code(&got), "PERSISTED_QUERY_NOT_FOUND", "{got}");

    // A wrong hash is refused and registers nothing.
    let wrong = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha("other") } });
    let (_, resp) = post(&server, json!({ "query": query, "extensions": wrong })).await;
    assert_eq!(code(&resp), "PERSISTED_QUERY_HASH_MISMATCH", "{resp}");

    // Hash and text: runs and registers.
    let (_, resp) = post(&server, json!({ "query": query, "extensions": ext })).await;
    assert_eq!(resp["data"]["health"]["status"], "HEALTHY", "{resp}");
    // Then the hash alone runs, over POST and over GET.
    let (_, resp) = post(&server, json!({ "extensions": ext })).await;
    assert_eq!(resp["data"]["health"]["status"], "HEALTHY", "{resp}");
    let got: Value = reqwest::get(url(&ext)).await.unwrap().json().await.unwrap();
    assert_eq!(got["data"]["health"]["status"], "HEALTHY", "{got}");

    // A query that fails the limits is not registered under its hash.
    let mut aliases = String::from("{");
    for i in 0..40 {
        aliases.push_str(&format!(" h{i}: __typename"));
    }
    aliases.push('}');
    let big = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha(&aliases) } });
    let (_, resp) = post(&server, json!({ "query": aliases, "extensions": big })).await;
    assert_eq!(code(&resp), "QUERY_TOO_COMPLEX", "{resp}");
    let (_, resp) = post(&server, json!({ "extensions": big })).await;
    assert_eq!(code(&resp), "PERSISTED_QUERY_NOT_FOUND", "{resp}");

    // GET serves GraphiQL without a query, and refuses mutations.
    let (status, page) = server.get("/graphql").await;
    assert_eq!(status, 200);
    assert!(page.contains("graphiql"));
    let m = "mutation { setConfig(key: \"a.b\", value: \"1\") { key } }";
    let got: Value = reqwest::get(format!(
        "{}/graphql?query={}",
        server.base,
        url::form_urlencoded::byte_serialize(m.as_bytes()).collect::<String>()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(code(&got), "BAD_REQUEST", "{got}");
    assert!(got["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("POST"));
}

#[tokio::test]
async fn persisted_only_runs_the_allow_list_alone() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("orrery-pq-e2e-{}", std::process::id()));
    let queries = dir.join("queries");
    std::fs::create_dir_all(&queries).unwrap();
    let listed = "query Ping { health { status } }\n";
    std::fs::write(queries.join("ping.graphql"), listed).unwrap();
    let cfg = dir.join("orrery.toml");
    std::fs::write(
        &cfg,
        format!(
            "[graphql]\npersisted_only = true\npersisted_queries_path = \"{}\"\n",
            queries.display()
        ),
    )
    .unwrap();
    let mut env = base_env(&db);
    env.push(("ORRERY_CONFIG".into(), cfg.display().to_string()));
    let server = Server::start(&env);

    let ext = |q: &str| json!({ "persistedQuery": { "version": 1, "sha256Hash": sha(q) } });
    let (_, resp) = post(&server, json!({ "extensions": ext(listed) })).await;
    assert_eq!(resp["data"]["health"]["status"], "HEALTHY", "{resp}");
    let (_, resp) = post(&server, json!({ "query": listed })).await;
    assert_eq!(resp["data"]["health"]["status"], "HEALTHY", "{resp}");

    let other = "{ chains { totalCount } }";
    let (_, resp) = post(&server, json!({ "query": other })).await;
    assert_eq!(code(&resp), "PERSISTED_QUERY_NOT_ALLOWED", "{resp}");
    let (_, resp) = post(&server, json!({ "query": other, "extensions": ext(other) })).await;
    assert_eq!(code(&resp), "PERSISTED_QUERY_NOT_ALLOWED", "{resp}");
    let (_, resp) = post(&server, json!({ "extensions": ext(other) })).await;
    assert_eq!(code(&resp), "PERSISTED_QUERY_NOT_FOUND", "{resp}");
    let _ = std::fs::remove_dir_all(&dir);
}
