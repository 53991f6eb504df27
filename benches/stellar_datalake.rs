//! Stellar data-lake backfill benchmark (issue 16): devnet writes N operations of history as
//! a SEP-54 data lake in a local directory (one ledger per object, as the public lake);
//! measures, in the same run, the time to only read and decompress every object (and to
//! also decode its XDR), with the same concurrency, and the time `orrery stellar backfill`
//! (this build) takes to derive and commit every ledger. Prints a Markdown table and writes
//! it to `$CARGO_TARGET_DIR/bench-stellar-datalake.md`.
//!
//! ```sh
//! cargo bench --bench stellar_datalake                     # SQLite, 1M operations
//! ORRERY_BENCH_OPS=100000 cargo bench --bench stellar_datalake
//! ORRERY_TEST_PG_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres \
//!   ORRERY_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench stellar_datalake
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{base_env, run_cli, TestDb};
use futures::StreamExt;
use orrery_devnet::stellar::datalake::LakeConfig;
use orrery_devnet::{Devnet, DevnetConfig};
use orrery_indexer::stellar::datalake::object::{decode_batch, decompress};
use orrery_indexer::stellar::datalake::{LakeStore, StoreOptions};

const CONCURRENCY: usize = 8;

fn ops() -> usize {
    std::env::var("ORRERY_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Reads every object of `1..=latest` `CONCURRENCY` at a time; decompresses it, and with
/// `decode` also decodes its `LedgerCloseMetaBatch`. Returns (bytes read, time).
async fn read_all(store: Arc<LakeStore>, latest: u32, decode: bool) -> (u64, Duration) {
    let schema = store.schema().await.expect("config");
    let started = Instant::now();
    let bytes = futures::stream::iter(1..=latest)
        .map(|l| {
            let store = store.clone();
            let key = schema.object_key(l);
            async move {
                let b = store.get(&key).await.expect("read").expect("object");
                tokio::task::spawn_blocking(move || {
                    let xdr = decompress(&key, &b).expect("zstd");
                    if decode {
                        decode_batch(&key, &xdr, l, l).expect("xdr");
                    }
                    b.len() as u64
                })
                .await
                .expect("task")
            }
        })
        .buffered(CONCURRENCY)
        .fold(0u64, |a, n| async move { a + n })
        .await;
    (bytes, started.elapsed())
}

#[tokio::main]
async fn main() {
    let n = ops();
    let dir = std::env::temp_dir().join(format!("orrery_bench_lake_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = DevnetConfig::default();
    cfg.stellar.accounts = 1_000;
    cfg.stellar.ops_per_ledger = 50;
    cfg.stellar.initial_operations = n;
    cfg.stellar.fee_stroops = 100;
    cfg.stellar.datalake = Some(LakeConfig::in_dir(&dir));
    cfg.evm_chains.clear();
    let written = Instant::now();
    let devnet = Devnet::start(cfg).await.expect("devnet");
    let write_time = written.elapsed();
    let control = devnet.control();
    let latest = control.latest_ledger();
    let operations = control.operation_count();

    let url = url::Url::from_directory_path(&dir)
        .expect("dir url")
        .to_string();
    let store = Arc::new(LakeStore::open(&url, &StoreOptions::default()).expect("store"));
    let (bytes, read_time) = read_all(store.clone(), latest, false).await;
    let (_, decode_time) = read_all(store, latest, true).await;

    let db = TestDb::new().await;
    let issuer = control.stellar_issuer();
    let assets: Vec<String> = std::iter::once("\"XLM\"".to_string())
        .chain(
            ["UBEC", "UBECrc", "UBECgpi", "UBECtt"]
                .iter()
                .map(|c| format!("\"{c}:{issuer}\"")),
        )
        .collect();
    let toml = dir.join("orrery.toml");
    std::fs::write(
        &toml,
        format!(
            "[stellar]\nsource = \"rpc\"\nassets = [{}]\ndatalake_url = \"{url}\"\n\
             datalake_concurrency = {CONCURRENCY}\n",
            assets.join(", ")
        ),
    )
    .expect("config");
    let mut env = base_env(&db);
    env.push(("ORRERY_CONFIG".into(), toml.display().to_string()));
    env.push(("ORRERY_LOG".into(), "warn".into()));
    let started = Instant::now();
    let (code, out, err) = run_cli(
        &env,
        &[
            "--no-progress",
            "stellar",
            "backfill",
            "--from",
            "1",
            "--to",
            &latest.to_string(),
        ],
    );
    let took = started.elapsed();
    assert_eq!(code, 0, "backfill failed: {out}\n{err}");
    let backend = if common::pg_admin_url().is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let secs = took.as_secs_f64();
    let line = format!(
        "| {backend} | {latest} | {operations} | {:.1} MiB | {:.1} s | {:.1} s | {:.1} s | {secs:.1} s | {:.0} | {:.0} | {:.1}x |",
        bytes as f64 / (1 << 20) as f64,
        write_time.as_secs_f64(),
        read_time.as_secs_f64(),
        decode_time.as_secs_f64(),
        f64::from(latest) / secs,
        operations as f64 / secs,
        secs / read_time.as_secs_f64(),
    );
    let report = [
        "| backend | ledgers | operations | objects (zstd) | devnet writes the lake | read + decompress only | read + decompress + XDR decode | `orrery stellar backfill` | ledgers/s | operations/s | backfill / read+decompress |".to_string(),
        "|---|---|---|---|---|---|---|---|---|---|---|".to_string(),
        line,
    ]
    .join("\n");
    println!("{report}\n\nCLI summary: {}", out.trim());
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{target}/bench-stellar-datalake.md"), report + "\n");
    let _ = std::fs::remove_dir_all(&dir);
}
