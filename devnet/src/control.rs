//! Shared devnet state and the control handle (Rust and HTTP `/_devnet/...`).

use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::bitcoin::model::BitcoinChain;
use crate::error::DevnetError;
use crate::evm::model::{EvmChain, RenderedLog};
use crate::faults::{Fault, FaultSet, FaultTarget};
use crate::stellar::model::{Operation, StellarChain};
use crate::stellar::request_log::RequestLog;
use crate::stellar::routes::RateWindow;

/// State shared by every service of one devnet.
#[derive(Debug)]
pub struct Shared {
    /// Seed.
    pub seed: u64,
    /// Stellar network.
    pub stellar: RwLock<StellarChain>,
    /// Latest closed ledger, for SSE streams.
    pub ledger_tx: watch::Sender<u32>,
    /// EVM chains in config order.
    pub evm: Vec<RwLock<EvmChain>>,
    /// Bitcoin chain.
    pub bitcoin: RwLock<BitcoinChain>,
    /// Active faults.
    pub faults: Arc<FaultSet>,
    /// Horizon rate-limit window.
    pub rate: Mutex<RateWindow>,
    /// Horizon base URL (for HAL links).
    pub horizon_base: OnceLock<String>,
    /// The last Horizon requests served.
    pub horizon_requests: RequestLog,
    /// The last successful `eth_getLogs` calls: `CHAIN FROM TO USER-AGENT`.
    pub evm_log_requests: RequestLog,
    /// Becomes true on shutdown.
    pub shutdown: watch::Receiver<bool>,
}

/// Cheap, cloneable handle to drive and inspect a running devnet.
#[derive(Debug, Clone)]
pub struct DevnetControl {
    pub(crate) shared: Arc<Shared>,
}

/// A Stellar operation as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRecord {
    /// Operation id / paging token.
    pub id: i64,
    /// Ledger.
    pub ledger: u32,
    /// "payment", "create_account" or "change_trust".
    pub kind: &'static str,
    /// Sender (funder for create_account, trustor for change_trust).
    pub from: String,
    /// Receiver (created account; trustor for change_trust).
    pub to: String,
    /// "native" or "CODE:ISSUER".
    pub asset: String,
    /// Amount in stroops (trust limit for change_trust).
    pub amount_stroops: i64,
    /// Transaction memo.
    pub memo: Option<String>,
}

fn poisoned<T>(_: T) -> DevnetError {
    DevnetError::Invalid("devnet state lock poisoned".into())
}

impl DevnetControl {
    fn evm_index(&self, chain: &str) -> Result<usize, DevnetError> {
        for (i, c) in self.shared.evm.iter().enumerate() {
            if c.read().map_err(poisoned)?.config.name == chain {
                return Ok(i);
            }
        }
        Err(DevnetError::NotFound(format!("evm chain {chain}")))
    }

    /// Closes `n` Stellar ledgers (with queued payments and generated operations).
    pub fn advance_ledgers(&self, n: u32) -> Result<u32, DevnetError> {
        let latest = {
            let mut c = self.shared.stellar.write().map_err(poisoned)?;
            c.advance(n);
            c.latest_ledger()
        };
        self.shared.ledger_tx.send_replace(latest);
        Ok(latest)
    }

    /// Queues a payment for the next ledger and returns its future operation id.
    /// `asset` is "native", "CODE" or "CODE:ISSUER"; `amount` is a decimal string
    /// with up to 7 decimals ("12.5").
    pub fn submit_payment(
        &self,
        from: &str,
        to: &str,
        asset: &str,
        amount: &str,
        memo: Option<&str>,
    ) -> Result<i64, DevnetError> {
        let stroops = parse_amount(amount)?;
        self.shared
            .stellar
            .write()
            .map_err(poisoned)?
            .submit_payment(from, to, asset, stroops, memo)
    }

    /// Closes ledgers until at least `n` new operations exist; returns the latest ledger.
    pub fn generate_operations(&self, n: usize) -> Result<u32, DevnetError> {
        let latest = {
            let mut c = self.shared.stellar.write().map_err(poisoned)?;
            let target = c.ops.len() + n;
            let per = c.config.ops_per_ledger.max(1);
            while c.ops.len() < target {
                let left = target - c.ops.len();
                c.close_ledger(left.min(per));
            }
            c.latest_ledger()
        };
        self.shared.ledger_tx.send_replace(latest);
        Ok(latest)
    }

    /// Adds blocks to an EVM chain until at least `n` new logs exist; returns the head.
    pub fn generate_evm_logs(&self, chain: &str, n: usize) -> Result<u64, DevnetError> {
        let i = self.evm_index(chain)?;
        let mut c = self.shared.evm[i].write().map_err(poisoned)?;
        if c.config.logs_per_block == 0 && n > 0 {
            return Err(DevnetError::Invalid(format!(
                "{chain} has logs_per_block = 0"
            )));
        }
        let target = c.logs.len() + n;
        while c.logs.len() < target {
            c.advance(1);
        }
        Ok(c.head())
    }

    /// Adds `n` blocks to an EVM chain; returns the new head.
    pub fn advance_blocks(&self, chain: &str, n: u64) -> Result<u64, DevnetError> {
        let i = self.evm_index(chain)?;
        let mut c = self.shared.evm[i].write().map_err(poisoned)?;
        c.advance(n);
        Ok(c.head())
    }

    /// Replaces the last `depth` blocks of an EVM chain with another branch.
    pub fn reorg_evm(&self, chain: &str, depth: u64) -> Result<(), DevnetError> {
        let i = self.evm_index(chain)?;
        self.shared.evm[i].write().map_err(poisoned)?.reorg(depth);
        Ok(())
    }

    /// Adds `n` Bitcoin blocks; returns the new tip height.
    pub fn advance_bitcoin_blocks(&self, n: u64) -> Result<u64, DevnetError> {
        let mut c = self.shared.bitcoin.write().map_err(poisoned)?;
        c.advance(n);
        Ok(c.tip())
    }

    /// Replaces the last `depth` Bitcoin blocks with another branch.
    pub fn reorg_bitcoin(&self, depth: u64) -> Result<(), DevnetError> {
        self.shared.bitcoin.write().map_err(poisoned)?.reorg(depth);
        Ok(())
    }

    /// Sets the daily USD price path (day 0 = `BitcoinConfig::start_time`).
    pub fn set_price_path(&self, prices: Vec<f64>) -> Result<(), DevnetError> {
        if prices.iter().any(|p| !p.is_finite() || *p <= 0.0) {
            return Err(DevnetError::Invalid("prices must be positive".into()));
        }
        self.shared
            .bitcoin
            .write()
            .map_err(poisoned)?
            .set_price_path(prices);
        Ok(())
    }

    /// Injects a fault; `target` is e.g. "horizon", "evm:sepolia", "esplora:/block".
    pub fn set_fault(&self, target: impl Into<FaultTarget>, fault: Fault) {
        self.shared.faults.set(target.into(), fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    // ---- read-only accessors for computing expected results ----

    /// Stellar account ids: [root, issuer, distributor, ordinary...].
    pub fn stellar_accounts(&self) -> Vec<String> {
        self.shared
            .stellar
            .read()
            .map(|c| c.accounts.iter().map(|a| a.id.clone()).collect())
            .unwrap_or_default()
    }

    /// The issuer of every credit asset.
    pub fn stellar_issuer(&self) -> String {
        self.shared
            .stellar
            .read()
            .map(|c| c.issuer().to_string())
            .unwrap_or_default()
    }

    /// Latest closed ledger.
    pub fn latest_ledger(&self) -> u32 {
        self.shared
            .stellar
            .read()
            .map(|c| c.latest_ledger())
            .unwrap_or(0)
    }

    /// Balances of an account in stroops: ("native" | "CODE:ISSUER", stroops).
    pub fn balances(&self, account: &str) -> Result<Vec<(String, i64)>, DevnetError> {
        let c = self.shared.stellar.read().map_err(poisoned)?;
        let i = c.account_index(account)?;
        Ok(c.accounts[i as usize]
            .balances
            .iter()
            .enumerate()
            .filter_map(|(a, b)| b.map(|b| (asset_name(&c, a as u8), b)))
            .collect())
    }

    /// Every `payment` and `create_account` touching `account` (None = all), in order.
    pub fn payments(&self, account: Option<&str>) -> Result<Vec<OperationRecord>, DevnetError> {
        self.collect_ops(account, true)
    }

    /// Every operation touching `account` (None = all), in order.
    pub fn operations(&self, account: Option<&str>) -> Result<Vec<OperationRecord>, DevnetError> {
        self.collect_ops(account, false)
    }

    fn collect_ops(
        &self,
        account: Option<&str>,
        payments_only: bool,
    ) -> Result<Vec<OperationRecord>, DevnetError> {
        let c = self.shared.stellar.read().map_err(poisoned)?;
        let keep = |op: &&Operation| !payments_only || op.is_payment();
        let record = |op: &Operation| OperationRecord {
            id: op.id,
            ledger: op.ledger,
            kind: op.kind.name(),
            from: c.accounts[op.source as usize].id.clone(),
            to: c.accounts[op.to as usize].id.clone(),
            asset: asset_name(&c, op.asset),
            amount_stroops: op.amount,
            memo: op.memo.as_deref().map(String::from),
        };
        Ok(match account {
            Some(id) => {
                let i = c.account_index(id)?;
                c.accounts[i as usize]
                    .ops
                    .iter()
                    .map(|&o| &c.ops[o as usize])
                    .filter(keep)
                    .map(record)
                    .collect()
            }
            None => c.ops.iter().filter(keep).map(record).collect(),
        })
    }

    /// Number of Stellar operations generated so far.
    pub fn operation_count(&self) -> usize {
        self.shared.stellar.read().map(|c| c.ops.len()).unwrap_or(0)
    }

    /// Every canonical log of an EVM chain, rendered.
    pub fn evm_logs(&self, chain: &str) -> Result<Vec<RenderedLog>, DevnetError> {
        let i = self.evm_index(chain)?;
        let c = self.shared.evm[i].read().map_err(poisoned)?;
        Ok(c.logs.iter().map(|l| c.render(l)).collect())
    }

    /// Head block number of an EVM chain.
    pub fn evm_head(&self, chain: &str) -> Result<u64, DevnetError> {
        let i = self.evm_index(chain)?;
        Ok(self.shared.evm[i].read().map_err(poisoned)?.head())
    }

    /// Bitcoin tip height.
    pub fn bitcoin_tip(&self) -> u64 {
        self.shared.bitcoin.read().map(|c| c.tip()).unwrap_or(0)
    }

    /// Daily USD prices of the Bitcoin chain: (UTC day start, price).
    pub fn daily_prices(&self) -> Vec<(i64, f64)> {
        self.shared
            .bitcoin
            .read()
            .map(|c| c.daily_prices())
            .unwrap_or_default()
    }

    /// The last Horizon requests served (path and query, oldest first; at most
    /// [`crate::stellar::request_log::CAPACITY`]).
    pub fn horizon_requests(&self) -> Vec<String> {
        self.shared.horizon_requests.snapshot()
    }

    /// The last successful `eth_getLogs` calls (oldest first, at most
    /// [`crate::stellar::request_log::CAPACITY`]) as `(chain, fromBlock, toBlock, user agent)`
    /// with the block numbers as the client sent them (`0x..` hex).
    pub fn evm_log_requests(&self) -> Vec<(String, String, String, String)> {
        self.shared
            .evm_log_requests
            .snapshot()
            .into_iter()
            .filter_map(|line| {
                let mut parts = line.splitn(4, ' ');
                Some((
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                    parts.next().unwrap_or_default().to_string(),
                ))
            })
            .collect()
    }

    /// HTTP routes exposing this control API under `/_devnet`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/_devnet/state", get(http_state))
            .route("/_devnet/advance_ledgers", post(http_advance_ledgers))
            .route("/_devnet/advance_blocks", post(http_advance_blocks))
            .route(
                "/_devnet/advance_bitcoin_blocks",
                post(http_advance_bitcoin),
            )
            .route("/_devnet/reorg_evm", post(http_reorg_evm))
            .route("/_devnet/reorg_bitcoin", post(http_reorg_bitcoin))
            .route("/_devnet/fault", post(http_fault))
            .route("/_devnet/clear_faults", post(http_clear_faults))
            .route("/_devnet/price_path", post(http_price_path))
            .route("/_devnet/submit_payment", post(http_submit_payment))
            .with_state(self.clone())
    }
}

fn asset_name(c: &StellarChain, a: u8) -> String {
    match c.asset_code(a) {
        None => "native".to_string(),
        Some(code) => format!("{code}:{}", c.issuer()),
    }
}

/// Parses "12.5" into stroops (at most 7 decimals).
pub fn parse_amount(s: &str) -> Result<i64, DevnetError> {
    let bad = || DevnetError::Invalid(format!("bad amount {s:?}"));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 7
        || int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let i: i64 = int.parse().map_err(|_| bad())?;
    let f: i64 = format!("{frac:0<7}").parse().map_err(|_| bad())?;
    i.checked_mul(10_000_000)
        .and_then(|v| v.checked_add(f))
        .ok_or_else(bad)
}

fn respond(r: Result<Value, DevnetError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(DevnetError::NotFound(m)) => {
            (StatusCode::NOT_FOUND, Json(json!({"error": m}))).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct N {
    n: u64,
}
#[derive(Deserialize)]
struct ChainN {
    chain: String,
    #[serde(alias = "depth")]
    n: u64,
}
#[derive(Deserialize)]
struct Depth {
    depth: u64,
}
#[derive(Deserialize)]
struct FaultReq {
    target: String,
    #[serde(default)]
    fault: Fault,
}
#[derive(Deserialize)]
struct Prices {
    prices: Vec<f64>,
}
#[derive(Deserialize)]
struct PaymentReq {
    from: String,
    to: String,
    asset: String,
    amount: String,
    memo: Option<String>,
}

async fn http_state(State(c): State<DevnetControl>) -> Response {
    let mut evm = serde_json::Map::new();
    for chain in &c.shared.evm {
        if let Ok(ch) = chain.read() {
            evm.insert(ch.config.name.clone(), json!(ch.head()));
        }
    }
    respond(Ok(json!({
        "seed": c.shared.seed,
        "stellar_latest_ledger": c.latest_ledger(),
        "stellar_operations": c.operation_count(),
        "evm_heads": evm,
        "bitcoin_tip": c.bitcoin_tip(),
    })))
}

async fn http_advance_ledgers(State(c): State<DevnetControl>, Json(r): Json<N>) -> Response {
    respond(
        c.advance_ledgers(r.n as u32)
            .map(|l| json!({"latest_ledger": l})),
    )
}

async fn http_advance_blocks(State(c): State<DevnetControl>, Json(r): Json<ChainN>) -> Response {
    respond(c.advance_blocks(&r.chain, r.n).map(|h| json!({"head": h})))
}

async fn http_advance_bitcoin(State(c): State<DevnetControl>, Json(r): Json<N>) -> Response {
    respond(c.advance_bitcoin_blocks(r.n).map(|h| json!({"tip": h})))
}

async fn http_reorg_evm(State(c): State<DevnetControl>, Json(r): Json<ChainN>) -> Response {
    respond(c.reorg_evm(&r.chain, r.n).map(|_| json!({"ok": true})))
}

async fn http_reorg_bitcoin(State(c): State<DevnetControl>, Json(r): Json<Depth>) -> Response {
    respond(c.reorg_bitcoin(r.depth).map(|_| json!({"ok": true})))
}

async fn http_fault(State(c): State<DevnetControl>, Json(r): Json<FaultReq>) -> Response {
    c.set_fault(r.target.as_str(), r.fault);
    respond(Ok(json!({"ok": true})))
}

async fn http_clear_faults(State(c): State<DevnetControl>) -> Response {
    c.clear_faults();
    respond(Ok(json!({"ok": true})))
}

async fn http_price_path(State(c): State<DevnetControl>, Json(r): Json<Prices>) -> Response {
    respond(c.set_price_path(r.prices).map(|_| json!({"ok": true})))
}

async fn http_submit_payment(
    State(c): State<DevnetControl>,
    Json(r): Json<PaymentReq>,
) -> Response {
    respond(
        c.submit_payment(&r.from, &r.to, &r.asset, &r.amount, r.memo.as_deref())
            .map(|id| json!({"operation_id": id.to_string()})),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(super::parse_amount("12.5").unwrap(), 125_000_000);
        assert_eq!(super::parse_amount("0.0000001").unwrap(), 1);
        assert_eq!(super::parse_amount("3").unwrap(), 30_000_000);
        assert!(super::parse_amount("1.00000001").is_err());
        assert!(super::parse_amount("-1").is_err());
        assert!(super::parse_amount("x").is_err());
    }
}
