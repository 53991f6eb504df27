//! Measures how fast devnet generates and serves data, so a backfill
//! benchmark can show devnet is never the bottleneck.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target cargo run --release -p orrery-devnet --bin devnet-bench -- \
//!     [--ops 1000000] [--logs 1000000] [--clients 4]
//! ```
//!
//! It generates a Stellar history of `--ops` operations and an EVM chain of
//! about `--logs` ERC-8004 logs, starts the servers, then walks
//! `/operations?limit=200` by cursor and `eth_getLogs` over 2,000-block
//! windows, once with one client and once with `--clients` clients on
//! disjoint ranges. The client is a minimal HTTP/1.1 keep-alive client that
//! only counts records, so the numbers are the server's.

use std::time::Instant;

use orrery_devnet::evm::model::EvmChain;
use orrery_devnet::stellar::model::StellarChain;
use orrery_devnet::{BitcoinConfig, Devnet, DevnetConfig, EvmChainConfig, StellarConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Client {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Client {
    async fn connect(base: &str) -> Result<Self, BoxError> {
        let host = base.trim_start_matches("http://").to_string();
        let stream = TcpStream::connect(&host).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            host,
        })
    }

    async fn request(&mut self, method: &str, path: &str, body: &str) -> Result<String, BoxError> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let mut status = String::new();
        self.stream.read_line(&mut status).await?;
        if !status.contains(" 200 ") {
            return Err(format!("{path}: {status}").into());
        }
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse()?;
                }
            }
        }
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).await?;
        Ok(String::from_utf8(buf)?)
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Walks `/operations` from `start` (exclusive) until `end` (inclusive) or the end.
async fn walk_ops(base: String, start: i64, end: i64) -> Result<u64, BoxError> {
    let mut client = Client::connect(&base).await?;
    let mut cursor = start;
    let mut count = 0u64;
    loop {
        let body = client
            .request("GET", &format!("/operations?limit=200&cursor={cursor}"), "")
            .await?;
        let mut last = None;
        let mut n = 0u64;
        for part in body.split("\"paging_token\":\"").skip(1) {
            let token: i64 = part.split('"').next().unwrap_or("0").parse()?;
            if token > end {
                break;
            }
            n += 1;
            last = Some(token);
        }
        count += n;
        match last {
            Some(t) if n == 200 => cursor = t,
            _ => return Ok(count),
        }
    }
}

/// Fetches every log of blocks `from..=to` in 2,000-block windows.
async fn walk_logs(url: String, from: u64, to: u64) -> Result<u64, BoxError> {
    let mut client = Client::connect(&url).await?;
    let mut count = 0u64;
    let mut start = from;
    while start <= to {
        let end = (start + 1_999).min(to);
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{{"fromBlock":"0x{start:x}","toBlock":"0x{end:x}"}}]}}"#
        );
        let resp = client.request("POST", "/", &body).await?;
        if resp.contains("\"error\"") {
            return Err(resp.into());
        }
        count += resp.matches("\"logIndex\"").count() as u64;
        start = end + 1;
    }
    Ok(count)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let ops = arg("--ops", 1_000_000) as usize;
    let target_logs = arg("--logs", 1_000_000);
    let clients = arg("--clients", 4).max(1);

    let stellar = StellarConfig {
        accounts: 200,
        initial_operations: ops,
        ops_per_ledger: 200,
        ..StellarConfig::default()
    };
    let mut evm = EvmChainConfig::new("bench", 31_337);
    evm.logs_per_block = 10;
    // About 1.36 logs per action and 10 actions per block (measured).
    evm.initial_blocks = (target_logs as f64 / 13.5).ceil() as u64 + 1;
    evm.max_logs_per_query = 100_000;

    let t = Instant::now();
    let chain = StellarChain::new(1, stellar.clone());
    let gen_ops = t.elapsed();
    let n_ops = chain.ops.len();
    drop(chain);
    let t = Instant::now();
    let chain = EvmChain::new(1, evm.clone());
    let gen_logs = t.elapsed();
    let (n_logs, head) = (chain.logs.len(), chain.head());
    drop(chain);
    println!(
        "generate: {n_ops} stellar operations in {:.2}s ({:.0} ops/s); {n_logs} evm logs in {} blocks in {:.2}s ({:.0} logs/s)",
        gen_ops.as_secs_f64(),
        n_ops as f64 / gen_ops.as_secs_f64(),
        head + 1,
        gen_logs.as_secs_f64(),
        n_logs as f64 / gen_logs.as_secs_f64()
    );

    let devnet = Devnet::start(DevnetConfig {
        seed: 1,
        stellar,
        evm_chains: vec![evm],
        bitcoin: BitcoinConfig {
            initial_blocks: 1,
            ..BitcoinConfig::default()
        },
        ..DevnetConfig::default()
    })
    .await?;
    let urls = devnet.urls();
    let first_id = 0i64;

    // Stellar: one client, then `clients` clients over disjoint id ranges.
    let t = Instant::now();
    let served = walk_ops(urls.horizon.clone(), first_id, i64::MAX).await?;
    let dt = t.elapsed().as_secs_f64();
    println!(
        "serve /operations, 1 client: {served} ops in {dt:.2}s = {:.0} ops/s",
        served as f64 / dt
    );

    let ledgers = devnet.control().latest_ledger() as i64;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients as i64 {
        let lo = (ledgers * c / clients as i64) << 32;
        let hi = ((ledgers * (c + 1) / clients as i64) << 32) - 1;
        let hi = if c + 1 == clients as i64 {
            i64::MAX
        } else {
            hi
        };
        tasks.push(tokio::spawn(walk_ops(urls.horizon.clone(), lo, hi)));
    }
    let mut served = 0;
    for t in tasks {
        served += t.await??;
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "serve /operations, {clients} clients: {served} ops in {dt:.2}s = {:.0} ops/s",
        served as f64 / dt
    );

    // EVM.
    let url = urls.evm[0].url.clone();
    let t = Instant::now();
    let served = walk_logs(url.clone(), 0, head).await?;
    let dt = t.elapsed().as_secs_f64();
    println!(
        "serve eth_getLogs, 1 client: {served} logs in {dt:.2}s = {:.0} logs/s",
        served as f64 / dt
    );
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let lo = (head + 1) * c / clients;
        let hi = (head + 1) * (c + 1) / clients - 1;
        tasks.push(tokio::spawn(walk_logs(url.clone(), lo, hi)));
    }
    let mut served = 0;
    for t in tasks {
        served += t.await??;
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "serve eth_getLogs, {clients} clients: {served} logs in {dt:.2}s = {:.0} logs/s",
        served as f64 / dt
    );

    devnet.shutdown().await;
    Ok(())
}
