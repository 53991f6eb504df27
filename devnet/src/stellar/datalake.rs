//! The devnet's ledgers as a SEP-54 data lake (Galexie's layout): `.config.json` and
//! `<partition>/<batch>.xdr.zst` objects, each a zstd-compressed XDR
//! `LedgerCloseMetaBatch`, written to a directory from the same seeded chain as its Horizon
//! and Stellar RPC, and served over HTTP at `<horizon>/datalake/`.
//!
//! Every ledger's close meta (V2) holds its transactions' envelopes (one generalized
//! transaction set phase), results and meta V4: the same XDR `getTransactions` returns,
//! CAP-67 token events included. Only complete batches are written, as new ledgers close,
//! each through a temporary file renamed into place (a reader never sees half an object).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use stellar_xdr::{LedgerCloseMeta, LedgerCloseMetaBatch, Limits, WriteXdr};

use super::model::StellarChain;
use super::rpc::{RpcState, PASSPHRASE};
use crate::control::Shared;

/// Where and how the devnet writes its data lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeConfig {
    /// Directory (created when missing).
    pub dir: PathBuf,
    /// `ledgersPerBatch`.
    pub ledgers_per_batch: u32,
    /// `batchesPerPartition`.
    pub batches_per_partition: u32,
    /// First ledger written.
    pub first_ledger: u32,
}

impl LakeConfig {
    /// One ledger per object, 64,000 per partition (the public data lake's layout),
    /// from ledger 1.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ledgers_per_batch: 1,
            batches_per_partition: 64_000,
            first_ledger: 1,
        }
    }

    /// First ledger of the object holding `ledger`.
    pub fn batch_start(&self, ledger: u32) -> u32 {
        ledger - ledger % self.ledgers_per_batch
    }

    /// Key of the object holding `ledger` (SEP-54 naming).
    pub fn object_key(&self, ledger: u32) -> String {
        let name = |start: u32, end: u32| {
            if start == end {
                format!("{:08X}--{start}", u32::MAX - start)
            } else {
                format!("{:08X}--{start}-{end}", u32::MAX - start)
            }
        };
        let start = self.batch_start(ledger);
        let file = format!(
            "{}.xdr.zst",
            name(start, start + (self.ledgers_per_batch - 1))
        );
        if self.batches_per_partition == 1 {
            return file;
        }
        let size = u64::from(self.ledgers_per_batch) * u64::from(self.batches_per_partition);
        let p = (u64::from(ledger) / size * size) as u32;
        format!(
            "{}/{file}",
            name(p, (u64::from(p) + size - 1).min(u64::from(u32::MAX)) as u32)
        )
    }

    /// The `.config.json` value.
    pub fn config_json(&self) -> String {
        serde_json::json!({
            "networkPassphrase": PASSPHRASE,
            "version": "1.0",
            "compression": "zstd",
            "ledgersPerBatch": self.ledgers_per_batch,
            "batchesPerPartition": self.batches_per_partition,
        })
        .to_string()
    }
}

/// The close meta of `ledger`: the very one `getLedgers` serves (the same transactions,
/// DEX trades included, with their true envelope hashes).
pub fn close_meta(
    state: &RpcState,
    chain: &StellarChain,
    ledger: u32,
) -> std::io::Result<LedgerCloseMeta> {
    if ledger == 0 || chain.ledgers.get(ledger as usize - 1).is_none() {
        return Err(std::io::Error::other(format!("no ledger {ledger}")));
    }
    Ok(super::rpc::close_meta(state, chain, ledger))
}

/// The compressed object starting at `start` (`ledgers_per_batch` ledgers).
pub fn object_bytes(
    state: &RpcState,
    chain: &StellarChain,
    cfg: &LakeConfig,
    start: u32,
) -> std::io::Result<Vec<u8>> {
    let end = start + (cfg.ledgers_per_batch - 1);
    let metas = (start..=end)
        .map(|l| close_meta(state, chain, l))
        .collect::<std::io::Result<Vec<_>>>()?;
    let batch = LedgerCloseMetaBatch {
        start_sequence: start,
        end_sequence: end,
        ledger_close_metas: metas.try_into().map_err(std::io::Error::other)?,
    };
    let xdr = batch
        .to_xdr(Limits::none())
        .map_err(std::io::Error::other)?;
    zstd::encode_all(&xdr[..], 3)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Writes the config and every complete object after `written` (the last ledger already
/// written) through the chain's latest ledger; returns the new last ledger written.
pub fn write_through(shared: &Arc<Shared>, cfg: &LakeConfig, written: u32) -> std::io::Result<u32> {
    let state = RpcState::new(shared.clone());
    std::fs::create_dir_all(&cfg.dir)?;
    let config = cfg.dir.join(".config.json");
    if !config.exists() {
        write_atomic(&config, cfg.config_json().as_bytes())?;
    }
    let mut start = if written == 0 {
        cfg.batch_start(cfg.first_ledger.max(1))
    } else {
        written + 1
    };
    loop {
        let end = start + (cfg.ledgers_per_batch - 1);
        // Read under the lock, one object at a time: closing ledgers is not held up long.
        let bytes = {
            let chain = shared
                .stellar
                .read()
                .map_err(|_| std::io::Error::other("stellar chain lock poisoned"))?;
            if end > chain.latest_ledger() {
                return Ok(start - 1);
            }
            if start == 0 {
                // Ledger 0 does not exist: the first object of a multi-ledger layout
                // starts at ledger 1's batch; such layouts begin with the next batch.
                start = cfg.ledgers_per_batch;
                continue;
            }
            object_bytes(&state, &chain, cfg, start)?
        };
        write_atomic(&cfg.dir.join(cfg.object_key(start)), &bytes)?;
        start = end + 1;
    }
}

/// Writes the lake now, then keeps writing as ledgers close, until shutdown.
pub async fn spawn(
    shared: Arc<Shared>,
    cfg: LakeConfig,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let s = shared.clone();
    let c = cfg.clone();
    let mut written = tokio::task::spawn_blocking(move || write_through(&s, &c, 0))
        .await
        .map_err(std::io::Error::other)??;
    let mut ledgers = shared.ledger_tx.subscribe();
    let mut shutdown = shared.shutdown.clone();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                r = ledgers.changed() => if r.is_err() { break },
                _ = shutdown.wait_for(|v| *v) => break,
            }
            let s = shared.clone();
            let c = cfg.clone();
            match tokio::task::spawn_blocking(move || write_through(&s, &c, written)).await {
                Ok(Ok(w)) => written = w,
                Ok(Err(e)) => tracing::warn!(error = %e, "devnet data lake: write failed"),
                Err(e) => tracing::warn!(error = %e, "devnet data lake: writer task failed"),
            }
        }
    }))
}

/// Serves `dir` at `/datalake/<key>`.
pub fn router(dir: PathBuf) -> Router {
    Router::new()
        .route("/datalake/{*key}", get(object))
        .with_state(Arc::new(dir))
}

async fn object(State(dir): State<Arc<PathBuf>>, UrlPath(key): UrlPath<String>) -> Response {
    if key
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(dir.join(&key)).await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_sep54() {
        let mut c = LakeConfig::in_dir("/x");
        assert_eq!(
            c.object_key(1_000_000),
            "FFF159FF--960000-1023999/FFF0BDBF--1000000.xdr.zst"
        );
        c.ledgers_per_batch = 200;
        c.batches_per_partition = 2;
        assert_eq!(
            c.object_key(300),
            "FFFFFFFF--0-399/FFFFFF37--200-399.xdr.zst"
        );
    }
}
