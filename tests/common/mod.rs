//! Harness for end-to-end tests: a real `orrery` process, a fresh database per test
//! (a SQLite file, or a uniquely named PostgreSQL database when `ORRERY_TEST_PG_URL` is set)
//! and, when `ORRERY_TEST_REDIS_URL` is set, the Redis event bus.
#![allow(dead_code)]

pub mod fleet;
pub mod services;
pub mod stellar_balances;
pub mod tokens;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_orrery");

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// PostgreSQL admin URL when the PostgreSQL run is on.
pub fn pg_admin_url() -> Option<String> {
    std::env::var("ORRERY_TEST_PG_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Redis URL when the Redis run is on.
pub fn redis_url() -> Option<String> {
    std::env::var("ORRERY_TEST_REDIS_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A database that exists for one test.
pub struct TestDb {
    /// What to pass as `DATABASE_URL`.
    pub url: String,
    dir: Option<PathBuf>,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A fresh, empty database on the backend this run tests.
    pub async fn new() -> Self {
        match pg_admin_url() {
            Some(admin) => {
                use sea_orm::ConnectionTrait;
                let name = unique("orrery_t");
                let conn = sea_orm::Database::connect(&admin)
                    .await
                    .expect("connect to PostgreSQL admin URL");
                conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                let mut url = url::Url::parse(&admin).expect("ORRERY_TEST_PG_URL is a URL");
                url.set_path(&format!("/{name}"));
                TestDb {
                    url: url.to_string(),
                    dir: None,
                    pg: Some((admin, name)),
                }
            }
            None => {
                let dir = std::env::temp_dir().join(unique("orrery_t"));
                std::fs::create_dir_all(&dir).unwrap();
                TestDb {
                    url: format!("sqlite://{}?mode=rwc", dir.join("orrery.db").display()),
                    dir: Some(dir),
                    pg: None,
                }
            }
        }
    }

    /// A connection for checking what the server wrote.
    pub async fn connect(&self) -> sea_orm::DatabaseConnection {
        sea_orm::Database::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin, name)) = self.pg.take() {
            // Drop from a separate thread with its own runtime: Drop may run inside one.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sea_orm::ConnectionTrait;
                    if let Ok(conn) = sea_orm::Database::connect(&admin).await {
                        let _ = conn
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A running `orrery serve`.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: Child,
    stderr_path: PathBuf,
}

/// Environment for a server or CLI process on `db`, with Redis when the run has it.
pub fn base_env(db: &TestDb) -> Vec<(String, String)> {
    let mut env = vec![
        ("DATABASE_URL".to_string(), db.url.clone()),
        ("ORRERY_LISTEN".to_string(), "127.0.0.1:0".to_string()),
        ("ORRERY_LOG".to_string(), "info".to_string()),
        ("ORRERY_DEVNET".to_string(), "false".to_string()),
    ];
    if let Some(r) = redis_url() {
        env.push(("REDIS_URL".to_string(), r));
    }
    env
}

/// A command for the binary with a clean environment plus `env`.
pub fn command(env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "JWT_SECRET",
        "ORRERY_LISTEN",
        "ORRERY_CONFIG",
        "ORRERY_DEVNET",
        "ORRERY_STELLAR_RPC_URL",
        "RUST_LOG",
        "ORRERY_LOG",
        "ORRERY_LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Server {
    /// Starts `orrery serve` with `env` and waits for its "listening" line.
    pub fn start(env: &[(String, String)]) -> Server {
        Self::start_with_args(env, &["serve"])
    }

    /// Same with explicit arguments.
    pub fn start_with_args(env: &[(String, String)], args: &[&str]) -> Server {
        Self::start_in(&std::env::temp_dir(), env, args)
    }

    /// Same, with `dir` as the working directory (where `orrery.toml` and the default
    /// SQLite file are looked for).
    pub fn start_in(dir: &std::path::Path, env: &[(String, String)], args: &[&str]) -> Server {
        let stderr_path = std::env::temp_dir().join(format!("{}.stderr.log", unique("orrery_srv")));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = command(env)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn orrery");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("orrery listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(base) => Server {
                base,
                child,
                stderr_path,
            },
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start; stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        }
    }

    /// The server's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `limit` for exit; returns the exit status and time taken.
    pub fn terminate(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("server did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process at once (SIGKILL).
    /// The server's process id (None once it has exited).
    pub fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// POSTs a GraphQL query and returns the whole JSON response.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.graphql_with_headers(query, variables, &[]).await
    }

    /// Same with extra headers (e.g. Authorization).
    pub async fn graphql_with_headers(
        &self,
        query: &str,
        variables: Value,
        headers: &[(&str, String)],
    ) -> Value {
        let mut req = reqwest::Client::new()
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send()
            .await
            .expect("POST /graphql")
            .json()
            .await
            .expect("GraphQL JSON")
    }

    /// GETs a path; returns status and body text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("{}{}", self.base, path))
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// Opens a subscription over `/graphql/ws` with the given subprotocol.
    pub async fn subscribe(&self, protocol: &str, query: &str) -> Subscription {
        let url = format!("{}/graphql/ws", self.base.replace("http://", "ws://"));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket connect");
        ws.send(Message::Text(
            json!({"type": "connection_init", "payload": {}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        loop {
            let msg = next_json(&mut ws).await;
            if msg["type"] == "connection_ack" {
                break;
            }
        }
        let start = if protocol == "graphql-ws" {
            "start"
        } else {
            "subscribe"
        };
        ws.send(Message::Text(
            json!({"id": "1", "type": start, "payload": {"query": query}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        Subscription { ws }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("websocket closed or timed out: {other:?}"),
        }
    }
}

/// An open subscription.
pub struct Subscription {
    ws: Ws,
}

impl Subscription {
    /// The next result payload, `{data, errors}` (skipping keep-alives); panics after 30 s.
    pub async fn next_payload(&mut self) -> Value {
        loop {
            let msg = next_json(&mut self.ws).await;
            match msg["type"].as_str() {
                Some("next") | Some("data") => return msg["payload"].clone(),
                Some("error") => panic!("subscription error: {msg}"),
                _ => continue,
            }
        }
    }

    /// The next `data` payload (skipping keep-alives); panics after 30 s.
    pub async fn next_data(&mut self) -> Value {
        loop {
            let msg = next_json(&mut self.ws).await;
            match msg["type"].as_str() {
                Some("next") | Some("data") => return msg["payload"]["data"].clone(),
                Some("error") => panic!("subscription error: {msg}"),
                _ => continue,
            }
        }
    }
}

/// Runs the CLI to completion; returns (exit code, stdout, stderr).
pub fn run_cli(env: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let out = command(env)
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run orrery");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Config for one EVM devnet chain with its three registries, `confirmations` behind the head.
/// A tokio runtime with 2 worker threads, as the server has on this machine (for a bare
/// endpoint measured beside it).
pub fn two_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a 2-worker runtime")
}

/// Writes `text` as `orrery.toml` in a fresh temporary directory (named after `prefix`) and
/// returns its path, for `ORRERY_CONFIG`.
pub fn config_file(prefix: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("orrery.toml");
    std::fs::write(&path, text).expect("config file");
    path
}

pub fn evm_chain_toml(ep: &orrery_devnet::EvmEndpoint, confirmations: u64) -> String {
    let mut s =
        String::from("[evm]\nmax_block_range = 10000\nconcurrency = 4\npoll_interval_ms = 200\n");
    s.push_str(&format!(
        "\n[[evm.chains]]\nname = \"{}\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = {confirmations}\n",
        ep.name, ep.chain_id, ep.url
    ));
    for (addr, reg) in [
        (&ep.contracts.identity, "identity"),
        (&ep.contracts.reputation, "reputation"),
        (&ep.contracts.validation, "validation"),
    ] {
        s.push_str(&format!(
            "[[evm.chains.contracts]]\naddress = \"{addr}\"\nregistry = \"{reg}\"\n"
        ));
    }
    s
}
