//! Query throughput benchmark (issue 14, part 3): in one run, builds a database of ~100k EVM
//! events (a devnet backfill through the real server), restarts `orrery serve` (this build)
//! on it without sources, starts a bare axum endpoint returning a fixed JSON body (the limit
//! of the HTTP path on this machine), and drives each with the same load generator: 32
//! keep-alive HTTP/1.1 connections on one thread (like `wrk -t1 -c32`). Rounds alternate the
//! targets; the report quotes medians of the rounds and the ratios to the bare endpoint.
//!
//! ```sh
//! cargo bench --bench query_throughput                      # SQLite
//! ORRERY_TEST_PG_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres \
//!   cargo bench --bench query_throughput                    # PostgreSQL
//! # ORRERY_BENCH_LOGS (default 100000), ORRERY_BENCH_ROUNDS (5), ORRERY_BENCH_SECS (5),
//! # ORRERY_BENCH_CONNECTIONS (32), ORRERY_BENCH_WRITE=0 to leave BENCHMARKS.md alone,
//! # ORRERY_BENCH_ONLY=N to drive only target N (and the bare endpoint), e.g. to profile it.
//! ```
//!
//! The table goes to `$CARGO_TARGET_DIR/bench-query-throughput-<backend>.md` and replaces
//! this backend's block in BENCHMARKS.md (between its markers).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{base_env, Server, TestDb};
use orrery_devnet::{Devnet, DevnetConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIRMATIONS: u64 = 2;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One target of the load: where to send which body.
#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: String,
    request: Arc<Vec<u8>>,
}

impl Target {
    fn new(name: &'static str, base: &str, path: &str, body: &str) -> Self {
        let addr = base.trim_start_matches("http://").to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Self {
            name,
            addr,
            request: Arc::new(request.into_bytes()),
        }
    }
}

/// What one round measured.
#[derive(Clone, Copy, Debug)]
struct Round {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// Reads one HTTP/1.1 response (Content-Length framed) from `stream`; returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let (head_end, len) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..pos]).map_err(std::io::Error::other)?;
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| std::io::Error::other("response without Content-Length"))?;
            break (pos + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = buf
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(status)
}

/// One connection's loop until `stop`; latencies in microseconds (only while `record`).
async fn connection(
    target: Target,
    stop: Arc<AtomicBool>,
    record: Arc<AtomicBool>,
) -> (Vec<u32>, u64) {
    let mut stream = TcpStream::connect(&target.addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut latencies = Vec::with_capacity(200_000);
    let mut errors = 0;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let ok = match stream.write_all(&target.request).await {
            Ok(()) => matches!(read_response(&mut stream, &mut buf).await, Ok(200)),
            Err(_) => false,
        };
        if !ok {
            errors += 1;
            stream = TcpStream::connect(&target.addr).await.expect("reconnect");
            stream.set_nodelay(true).expect("nodelay");
            continue;
        }
        if record.load(Ordering::Relaxed) {
            latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
    (latencies, errors)
}

/// Drives `target` with `conns` connections on one thread: `warmup`, then `secs` measured.
fn drive(target: &Target, conns: usize, warmup: Duration, secs: Duration) -> Round {
    let target = target.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("load runtime");
        rt.block_on(async move {
            let stop = Arc::new(AtomicBool::new(false));
            let record = Arc::new(AtomicBool::new(false));
            let tasks: Vec<_> = (0..conns)
                .map(|_| tokio::spawn(connection(target.clone(), stop.clone(), record.clone())))
                .collect();
            tokio::time::sleep(warmup).await;
            record.store(true, Ordering::Relaxed);
            let started = Instant::now();
            tokio::time::sleep(secs).await;
            record.store(false, Ordering::Relaxed);
            let elapsed = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            let mut all = Vec::new();
            let mut errors = 0;
            for t in tasks {
                let (l, e) = t.await.expect("connection task");
                all.extend(l);
                errors += e;
            }
            all.sort_unstable();
            let pct = |p: f64| {
                all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                    .map_or(f64::NAN, |us| *us as f64 / 1000.0)
            };
            Round {
                rps: all.len() as f64 / elapsed.as_secs_f64(),
                p50_ms: pct(0.50),
                p99_ms: pct(0.99),
                errors,
            }
        })
    })
    .join()
    .expect("load thread")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// The bare endpoint: axum on its own 2-worker runtime, answering `body` to every POST.
fn start_bare(body: String) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = common::two_worker_runtime();
        rt.block_on(async move {
            let body: &'static str = Box::leak(body.into_boxed_str());
            let app = axum::Router::new().route(
                "/graphql",
                axum::routing::post(move || async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let _ = tx.send(listener.local_addr().expect("addr"));
            axum::serve(listener, app).await.expect("bare serve");
        });
    });
    format!("http://{}", rx.recv().expect("bare started"))
}

/// A devnet chain of `n` logs indexed by a real server into `db`; returns the chain name.
async fn build_database(db: &TestDb, n: usize) -> String {
    let mut cfg = DevnetConfig::default();
    cfg.evm_chains.truncate(1);
    for c in &mut cfg.evm_chains {
        c.initial_blocks = 20;
        c.max_block_range = 10_000;
        c.max_logs_per_query = 10_000;
    }
    let devnet = Devnet::start(cfg).await.expect("devnet");
    let ep = devnet.urls().evm[0].clone();
    let control = devnet.control();
    control.generate_evm_logs(&ep.name, n).expect("logs");
    let target = control.evm_head(&ep.name).expect("head") - CONFIRMATIONS;
    let dir = std::env::temp_dir().join(format!("orrery_qbench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = dir.join("evm.toml");
    std::fs::write(&toml, common::evm_chain_toml(&ep, CONFIRMATIONS)).expect("config");
    let mut env = base_env(db);
    env.push(("ORRERY_CONFIG".into(), toml.display().to_string()));
    env.push(("ORRERY_LOG".into(), "warn".into()));
    let mut server = Server::start(&env);
    let id = format!("evm:{}", ep.name);
    let started = Instant::now();
    loop {
        let r = server
            .graphql(
                "query($id: String!) { chain(id: $id) { indexedHeight } }",
                json!({ "id": id }),
            )
            .await;
        if r["data"]["chain"]["indexedHeight"].as_i64() == Some(target as i64) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1_800),
            "not indexed in 30 min:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "indexed {n} logs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    server.terminate(Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
    ep.name
}

/// Replaces (or appends) the block between this backend's markers in BENCHMARKS.md.
fn write_benchmarks(backend: &str, block: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let begin = format!("<!-- query_throughput:{backend}:begin -->");
    let end = format!("<!-- query_throughput:{backend}:end -->");
    let new_block = format!("{begin}\n{block}{end}");
    let updated = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{}{}", &text[..b], new_block, &text[e + end.len()..])
        }
        _ => format!("{}\n{}\n", text.trim_end(), new_block),
    };
    let _ = std::fs::write(path, updated);
}

#[tokio::main]
async fn main() {
    let logs = env_num("ORRERY_BENCH_LOGS", 100_000) as usize;
    let rounds = env_num("ORRERY_BENCH_ROUNDS", 5) as usize;
    let secs = Duration::from_secs(env_num("ORRERY_BENCH_SECS", 5));
    let conns = env_num("ORRERY_BENCH_CONNECTIONS", 32) as usize;
    let warmup = Duration::from_secs(1);
    let backend = if common::pg_admin_url().is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };

    let db = TestDb::new().await;
    let chain = build_database(&db, logs).await;
    let mut env = base_env(&db);
    // Queries only: no sources, no Redis (the read path is what is measured).
    env.retain(|(k, _)| k != "REDIS_URL");
    env.push(("ORRERY_LOG".into(), "warn".into()));
    if let Ok(extra) = std::env::var("ORRERY_BENCH_SERVER_ENV") {
        for kv in extra.split(',').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                env.push((k.to_string(), v.to_string()));
            }
        }
    }
    let server = Server::start(&env);
    // The same server with the response cache off: what a miss costs, every time.
    let cfg_dir = std::env::temp_dir().join(format!("orrery_qbench_nc_{}", std::process::id()));
    std::fs::create_dir_all(&cfg_dir).expect("temp dir");
    let no_cache_toml = cfg_dir.join("no-cache.toml");
    std::fs::write(&no_cache_toml, "[graphql]\nresponse_cache_ms = 0\n").expect("config");
    let mut env_nc = env.clone();
    env_nc.push(("ORRERY_CONFIG".into(), no_cache_toml.display().to_string()));
    let uncached = Server::start(&env_nc);
    let events: i64 = {
        let conn = db.connect().await;
        use sea_orm::{EntityTrait, PaginatorTrait};
        orrery_entity::evm_event::Entity::find()
            .count(&conn)
            .await
            .expect("count") as i64
    };
    let first = server
        .graphql(
            "query($c: String!) { agents(chain: $c, first: 1) { nodes { agentId } } }",
            json!({ "c": chain }),
        )
        .await;
    let agent_id = first["data"]["agents"]["nodes"][0]["agentId"]
        .as_str()
        .unwrap_or_else(|| panic!("an agent exists: {first}"))
        .to_string();

    let point_query =
        format!("{{ agent(chain: \"{chain}\", agentId: \"{agent_id}\") {{ agentId owner uri }} }}");
    let events_query =
        "{ events(first: 50) { nodes { chain blockNumber txHash logIndex contract name args } } }";
    let health_query = "{ health { status } }";
    let body = |q: &str| json!({ "query": q }).to_string();
    // Every query answers data, not errors, before it is measured.
    for q in [point_query.as_str(), events_query, health_query] {
        let r: Value = server.graphql(q, json!({})).await;
        assert!(
            r.get("errors").is_none() && r["data"].is_object(),
            "{q}: {r}"
        );
    }
    let point_body = reqwest::Client::new()
        .post(format!("{}/graphql", server.base))
        .header("content-type", "application/json")
        .body(body(&point_query))
        .send()
        .await
        .expect("point query")
        .text()
        .await
        .expect("body");
    let bare = start_bare(point_body);

    let targets = [
        Target::new("bare axum (fixed JSON body)", &bare, "/graphql", "{}"),
        Target::new(
            "agent(chain, agentId) { agentId owner uri }",
            &server.base,
            "/graphql",
            &body(&point_query),
        ),
        Target::new(
            "events(first: 50) { nodes { ... } }",
            &server.base,
            "/graphql",
            &body(events_query),
        ),
        Target::new(
            "agent(...), response cache off",
            &uncached.base,
            "/graphql",
            &body(&point_query),
        ),
        Target::new(
            "events(first: 50), response cache off",
            &uncached.base,
            "/graphql",
            &body(events_query),
        ),
        Target::new(
            "health { status }",
            &server.base,
            "/graphql",
            &body(health_query),
        ),
    ];
    // `ORRERY_BENCH_ONLY=2` drives only target 2 (e.g. to profile it); the bare endpoint
    // (0) always runs so ratios stay comparable.
    let only: Option<usize> = std::env::var("ORRERY_BENCH_ONLY")
        .ok()
        .and_then(|s| s.parse().ok());
    eprintln!(
        "server pid {} (response cache off: {})",
        server.pid().unwrap_or(0),
        uncached.pid().unwrap_or(0)
    );
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); targets.len()];
    for round in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            if only.is_some_and(|o| o != i && i != 0) {
                results[i].push(Round {
                    rps: f64::NAN,
                    p50_ms: f64::NAN,
                    p99_ms: f64::NAN,
                    errors: 0,
                });
                continue;
            }
            let r = drive(t, conns, warmup, secs);
            eprintln!(
                "round {round}: {:<45} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
                t.name, r.rps, r.p50_ms, r.p99_ms, r.errors
            );
            results[i].push(r);
        }
    }
    let rss_kb = server.pid().and_then(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()?
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    });

    let cache_counts = {
        let text = reqwest::get(format!("{}/metrics", server.base))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        let count = |result: &str| {
            common::tokens::metric(
                &text,
                "orrery_graphql_response_cache_total",
                ("result", result),
            )
            .unwrap_or(0.0)
        };
        (count("hit"), count("miss"))
    };
    let _ = std::fs::remove_dir_all(&cfg_dir);

    let bare_rps = median(results[0].iter().map(|r| r.rps).collect());
    let mut block = format!(
        "{backend}, {events} events, {conns} connections, {rounds} rounds of {} s (medians; ratio = median of the per-round ratios to the bare endpoint in the same round); server peak RSS {} MB:\n\n\
         | target | req/s | ratio to bare axum | p50 | p99 | errors |\n|---|---|---|---|---|---|\n",
        secs.as_secs(),
        rss_kb.map_or("?".into(), |kb| (kb / 1024).to_string()),
    );
    for (i, t) in targets.iter().enumerate() {
        let rs = &results[i];
        let ratio = median(
            rs.iter()
                .zip(&results[0])
                .map(|(r, b)| r.rps / b.rps)
                .collect(),
        );
        block.push_str(&format!(
            "| {} | {:.0} | {:.0}% | {:.2} ms | {:.2} ms | {} |\n",
            t.name,
            median(rs.iter().map(|r| r.rps).collect()),
            ratio * 100.0,
            median(rs.iter().map(|r| r.p50_ms).collect()),
            median(rs.iter().map(|r| r.p99_ms).collect()),
            rs.iter().map(|r| r.errors).sum::<u64>(),
        ));
    }
    block.push_str(&format!(
        "\nBare endpoint median: {bare_rps:.0} req/s. Response cache (default server): {:.0} hits, {:.0} misses.\n",
        cache_counts.0, cache_counts.1
    ));
    println!("\n{block}");
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(
        format!("{dir}/bench-query-throughput-{}.md", backend.to_lowercase()),
        &block,
    );
    if std::env::var("ORRERY_BENCH_WRITE").as_deref() != Ok("0") && only.is_none() {
        write_benchmarks(backend, &block);
    }
}
