//! Subscriptions at scale (issue 14, part 6): N graphql-ws clients on one `blockIndexed`
//! stream of one `orrery serve` (this build, in-process bus). Records the server's RSS
//! before and after the clients connect, then triggers events (a devnet block each, indexed
//! by the server and published on its bus) and reads the server's own delivery histogram
//! `orrery_subscription_delivery_seconds` (commit timestamp to frame written to the socket).
//! Every client must receive every event.
//!
//! ```sh
//! cargo bench --bench subscriptions                       # 10,000 clients
//! ORRERY_BENCH_CLIENTS=2000 ORRERY_BENCH_EVENTS=20 cargo bench --bench subscriptions
//! # ORRERY_BENCH_WRITE=0 leaves BENCHMARKS.md alone
//! ```
//!
//! The table goes to `$CARGO_TARGET_DIR/bench-subscriptions.md` and replaces the block
//! between its markers in BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{base_env, Server, TestDb};
use futures::{SinkExt, StreamExt};
use orrery_devnet::{Devnet, DevnetConfig};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Raises the soft open-files limit to the hard one (the server inherits it).
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        l.rlim_cur
    }
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// `(upper bound in seconds, cumulative count)` of the delivery histogram, and its count.
fn delivery_buckets(metrics: &str) -> Vec<(f64, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with("orrery_subscription_delivery_seconds_bucket{"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let v = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, v))
        })
        .collect()
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The `q` quantile of the samples between two snapshots of a cumulative histogram
/// (linear inside the bucket); also the sample count.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> (f64, f64) {
    let diff: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, v)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, v)| *v);
            (*le, v - b)
        })
        .collect();
    let total = diff.last().map_or(0.0, |(_, v)| *v);
    if total <= 0.0 {
        return (f64::NAN, 0.0);
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, c) in &diff {
        if *c >= rank {
            if le.is_infinite() {
                return (prev.0, total);
            }
            let span = c - prev.1;
            let frac = if span > 0.0 {
                (rank - prev.1) / span
            } else {
                1.0
            };
            return (prev.0 + (le - prev.0) * frac, total);
        }
        prev = (*le, *c);
    }
    (f64::NAN, total)
}

async fn metrics(server: &Server) -> String {
    server.get("/metrics").await.1
}

/// The length of the last `next` frame a client of the server got.
static FRAME_LEN: AtomicU64 = AtomicU64::new(0);

/// One client: connects, subscribes, counts `next` frames until the socket ends.
async fn client(url: String, received: Arc<AtomicU64>, ready: Arc<AtomicU64>) {
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let mut ws = loop {
        match tokio_tungstenite::connect_async(req.clone()).await {
            Ok((ws, _)) => break ws,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let init = json!({"type": "connection_init", "payload": {}}).to_string();
    ws.send(Message::Text(init.into())).await.expect("init");
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            if t.contains("connection_ack") {
                break;
            }
        }
    }
    let sub = json!({"id": "1", "type": "subscribe",
        "payload": {"query": "subscription { blockIndexed { chain fromBlock number hash parentHash } }"}})
    .to_string();
    ws.send(Message::Text(sub.into())).await.expect("subscribe");
    ready.fetch_add(1, Ordering::Relaxed);
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            if t.starts_with(r#"{"type":"next""#) || t.contains(r#""type":"next""#) {
                FRAME_LEN.store(t.len() as u64, Ordering::Relaxed);
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The limit of the delivery path on this machine, measured in the same run: a bare axum
/// WebSocket endpoint (this binary again, as a child process with 2 worker threads, as the
/// server has) writing each broadcast frame to every connected socket, one task per socket.
/// `POST /send` broadcasts its body; `GET /connected` and `GET /samples` (each frame's
/// delay from the broadcast to the written frame, in seconds) report. A process of its own,
/// so its sockets do not count against this process's open-files limit.
fn serve_bare() {
    use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
    use axum::routing::{get, post};
    type Tx = tokio::sync::broadcast::Sender<(Instant, Arc<str>)>;
    let rt = common::two_worker_runtime();
    rt.block_on(async move {
        let (tx, _) = tokio::sync::broadcast::channel::<(Instant, Arc<str>)>(16);
        let connected = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
        async fn socket_task(
            mut socket: WebSocket,
            mut rx: tokio::sync::broadcast::Receiver<(Instant, Arc<str>)>,
            samples: Arc<std::sync::Mutex<Vec<f64>>>,
        ) {
            while let Ok((at, text)) = rx.recv().await {
                let frame = AxMessage::Text(text.to_string().into());
                if socket.send(frame).await.is_err() {
                    return;
                }
                let secs = at.elapsed().as_secs_f64();
                samples.lock().expect("samples").push(secs);
            }
        }
        let (t1, c1, s1) = (tx.clone(), connected.clone(), samples.clone());
        let (t2, c2, s2) = (tx.clone(), connected.clone(), samples.clone());
        let app = axum::Router::new()
            .route(
                "/ws",
                get(move |ws: WebSocketUpgrade| {
                    let (tx, connected, samples): (Tx, _, _) = (t1.clone(), c1.clone(), s1.clone());
                    async move {
                        ws.on_upgrade(move |socket| {
                            let rx = tx.subscribe();
                            connected.fetch_add(1, Ordering::Relaxed);
                            socket_task(socket, rx, samples)
                        })
                    }
                }),
            )
            .route(
                "/send",
                post(move |body: String| {
                    let tx: Tx = t2.clone();
                    async move {
                        let _ = tx.send((Instant::now(), body.into()));
                    }
                }),
            )
            .route(
                "/connected",
                get(move || {
                    let c = c2.clone();
                    async move { c.load(Ordering::Relaxed).to_string() }
                }),
            )
            .route(
                "/samples",
                get(move || {
                    let s = s2.clone();
                    async move { serde_json::to_string(&*s.lock().expect("samples")).expect("json") }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("bare listening on {}", listener.local_addr().expect("addr"));
        axum::serve(listener, app).await.expect("bare server");
    });
}

/// A client of the bare endpoint: counts the text frames until the socket ends.
async fn bare_client(url: String, received: Arc<AtomicU64>) {
    let mut ws = loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => break ws,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(_) = m {
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the bare endpoint, opens `clients` clients on it, broadcasts `events` frames of
/// `frame_len` bytes (like the server's), each once every client has the previous; returns
/// (p50, p99) of the delivery delay in seconds.
async fn measure_bare(clients: u64, events: u64, frame_len: usize) -> (f64, f64) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env("ORRERY_BENCH_BARE_SERVER", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("bare endpoint");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("bare address");
    let addr = line
        .trim()
        .strip_prefix("bare listening on ")
        .unwrap_or_else(|| panic!("bare endpoint said {line:?}"))
        .to_string();
    let http = reqwest::Client::new();
    let connected = || {
        let (http, addr) = (http.clone(), addr.clone());
        async move {
            http.get(format!("http://{addr}/connected"))
                .send()
                .await
                .expect("connected")
                .text()
                .await
                .expect("connected")
                .parse::<u64>()
                .expect("a count")
        }
    };
    let url = format!("ws://{addr}/ws");
    let received = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let opened = Instant::now();
    for _ in 0..clients {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        let (url, received) = (url.clone(), received.clone());
        tokio::spawn(async move {
            let c = tokio::spawn(bare_client(url, received));
            // The upgrade takes one round trip; a short hold paces the connects.
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(permit);
            let _ = c.await;
        });
    }
    while connected().await < clients {
        assert!(
            opened.elapsed() < Duration::from_secs(600),
            "bare clients: {} of {clients}",
            connected().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let payload = format!(
        r#"{{"type":"next","id":"1","payload":{{"data":{{"blockIndexed":{{"x":"{}"}}}}}}}}"#,
        "0".repeat(frame_len.saturating_sub(60))
    );
    for _ in 0..events {
        let expect = received.load(Ordering::Relaxed) + clients;
        let t = Instant::now();
        http.post(format!("http://{addr}/send"))
            .body(payload.clone())
            .send()
            .await
            .expect("send");
        while received.load(Ordering::Relaxed) < expect {
            assert!(t.elapsed() < Duration::from_secs(60), "bare frames");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut s: Vec<f64> = http
        .get(format!("http://{addr}/samples"))
        .send()
        .await
        .expect("samples")
        .json()
        .await
        .expect("samples");
    let _ = child.kill();
    let _ = child.wait();
    s.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| s.get(((s.len() as f64 * q) as usize).min(s.len().saturating_sub(1)));
    (
        at(0.50).copied().unwrap_or(f64::NAN),
        at(0.99).copied().unwrap_or(f64::NAN),
    )
}

fn write_benchmarks(block: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let begin = "<!-- subscriptions:begin -->";
    let end = "<!-- subscriptions:end -->";
    let new_block = format!("{begin}\n{block}{end}");
    let updated = match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{}{}", &text[..b], new_block, &text[e + end.len()..])
        }
        _ => format!("{}\n{}\n", text.trim_end(), new_block),
    };
    let _ = std::fs::write(path, updated);
}

fn main() {
    let fds = raise_fd_limit();
    if std::env::var_os("ORRERY_BENCH_BARE_SERVER").is_some() {
        serve_bare();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(fds));
}

async fn run(fds: u64) {
    let clients = env_num("ORRERY_BENCH_CLIENTS", 10_000);
    let events = env_num("ORRERY_BENCH_EVENTS", 20);
    assert!(
        fds > clients + 500,
        "open-files limit {fds} is too low for {clients} clients (raise the hard limit)"
    );

    let mut cfg = DevnetConfig::default();
    cfg.evm_chains.truncate(1);
    for c in &mut cfg.evm_chains {
        c.initial_blocks = 20;
        c.block_interval = None;
    }
    let devnet = Devnet::start(cfg).await.expect("devnet");
    let ep = devnet.urls().evm[0].clone();
    let control = devnet.control();
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("orrery_sbench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = dir.join("evm.toml");
    std::fs::write(&toml, common::evm_chain_toml(&ep, 0)).expect("config");
    let mut env = base_env(&db);
    env.retain(|(k, _)| k != "REDIS_URL");
    env.push(("ORRERY_CONFIG".into(), toml.display().to_string()));
    env.push(("ORRERY_LOG".into(), "warn".into()));
    let mut server = Server::start(&env);
    let pid = server.pid().expect("pid");
    let head = control.evm_head(&ep.name).expect("head");
    let id = format!("evm:{}", ep.name);
    let wait_indexed = |target: u64| {
        let server = &server;
        let id = id.clone();
        async move {
            let started = Instant::now();
            loop {
                let r = server
                    .graphql(
                        "query($id: String!) { chain(id: $id) { indexedHeight } }",
                        json!({ "id": id }),
                    )
                    .await;
                if r["data"]["chain"]["indexedHeight"].as_i64() >= Some(target as i64) {
                    return;
                }
                assert!(started.elapsed() < Duration::from_secs(120), "not indexed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_indexed(head).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kb(pid, "VmRSS:");

    let url = format!("{}/graphql/ws", server.base.replace("http://", "ws://"));
    let received = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let opened = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    for _ in 0..clients {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        let (url, received, ready) = (url.clone(), received.clone(), ready.clone());
        let before = ready.load(Ordering::Relaxed);
        tokio::spawn(async move {
            let r2 = ready.clone();
            let c = tokio::spawn(client(url, received, ready));
            // Hold the permit until this client has subscribed.
            while r2.load(Ordering::Relaxed) <= before && !c.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            drop(permit);
            let _ = c.await;
        });
    }
    loop {
        let m = metrics(&server).await;
        if gauge(&m, "orrery_subscriptions_open") as u64 >= clients {
            break;
        }
        assert!(
            opened.elapsed() < Duration::from_secs(600),
            "only {} of {clients} subscribed",
            gauge(&m, "orrery_subscriptions_open")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let open_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kb(pid, "VmRSS:");
    let before = delivery_buckets(&metrics(&server).await);

    let mut last = head;
    let mut fanout_ms = Vec::new();
    for _ in 0..events {
        let expect = received.load(Ordering::Relaxed) + clients;
        last = control.advance_blocks(&ep.name, 1).expect("advance");
        let t = Instant::now();
        wait_indexed(last).await;
        // Every client gets the event before the next one.
        while received.load(Ordering::Relaxed) < expect {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{} of {expect} frames",
                received.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        fanout_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after_metrics = metrics(&server).await;
    let after = delivery_buckets(&after_metrics);
    let rss_after = rss_kb(pid, "VmRSS:");
    let hwm = rss_kb(pid, "VmHWM:");
    let (p50, n) = quantile(&before, &after, 0.50);
    let (p99, _) = quantile(&before, &after, 0.99);
    let (p100, _) = quantile(&before, &after, 1.0);
    fanout_ms.sort_by(|a, b| a.total_cmp(b));
    let delivered = received.load(Ordering::Relaxed);
    eprintln!(
        "server: {delivered} frames; delivery p50 {:.2} ms, p99 {:.2} ms",
        p50 * 1000.0,
        p99 * 1000.0
    );
    // The server's clients end with it; then the same number on the bare endpoint.
    server.terminate(Duration::from_secs(10));
    let frame_len = FRAME_LEN.load(Ordering::Relaxed) as usize;
    let (bare_p50, bare_p99) = measure_bare(clients, events, frame_len).await;
    let per_client = (rss_idle.saturating_sub(rss_before)) as f64 / clients as f64;
    let block = format!(
        "{clients} graphql-transport-ws clients on `blockIndexed`, {events} events (one devnet block each), \
         SQLite, in-process bus; all {} frames delivered; clients connected in {open_secs:.1} s.\n\n\
         | server RSS before | with clients (idle) | after the events | peak | per client | delivery p50 | delivery p99 | delivery max bucket | frames measured | block advanced to last client frame (median, client side) |\n\
         |---|---|---|---|---|---|---|---|---|---|\n\
         | {} MB | {} MB | {} MB | {} MB | {:.1} KB | {:.2} ms | {:.2} ms | {:.1} ms | {n:.0} | {:.0} ms |\n",
        delivered,
        rss_before / 1024,
        rss_idle / 1024,
        rss_after / 1024,
        hwm / 1024,
        per_client,
        p50 * 1000.0,
        p99 * 1000.0,
        p100 * 1000.0,
        fanout_ms.get(fanout_ms.len() / 2).copied().unwrap_or(f64::NAN),
    ) + &format!(
        "\nSame run, the limit of this machine: a bare axum WebSocket endpoint (2 worker threads, \
         one task per socket, no GraphQL) writing a {frame_len}-byte frame to {clients} sockets, \
         {events} broadcasts: delivery p50 {:.2} ms, p99 {:.2} ms (server p99 / bare p99 = {:.2}).\n",
        bare_p50 * 1000.0,
        bare_p99 * 1000.0,
        p99 / bare_p99,
    );
    println!("\n{block}");
    let dir_t = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{dir_t}/bench-subscriptions.md"), &block);
    if std::env::var("ORRERY_BENCH_WRITE").as_deref() != Ok("0") {
        write_benchmarks(&block);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = last;
    std::process::exit(0);
}
