//! `[stellar]` settings.

use serde::Deserialize;

/// Stellar indexing settings (`[stellar]` in `orrery.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StellarSettings {
    /// Horizon base URL, e.g. `https://horizon.stellar.org`. Env `ORRERY_HORIZON_URL`.
    /// Unset: the devnet's Horizon when devnet runs, otherwise Stellar indexing is off.
    pub horizon_url: Option<String>,
    /// `accounts`: accounts to watch (`G...`). Default: none (then discovery decides).
    pub accounts: Vec<String>,
    /// `assets`: assets whose holders are discovered and watched, as `CODE:ISSUER`; a bare
    /// `CODE` has its issuer looked up from the first page of `/operations` (a devnet
    /// convenience: the devnet's issuer is not known in advance). Default: none.
    pub assets: Vec<String>,
    /// `discover`: watch every holder of `assets` found with `/accounts?asset=`. Default true.
    pub discover: bool,
    /// `required_assets`: trustlines every account should hold (codes, matched on the
    /// resolved issuers of `assets`). Default `["UBEC", "UBECrc", "UBECgpi", "UBECtt"]`.
    pub required_assets: Vec<String>,
    /// `page_size`: Horizon page size (1..=200). Default 200.
    pub page_size: u32,
    /// `account_concurrency`: accounts fetched concurrently per step. Default 4.
    pub account_concurrency: usize,
    /// `requests_per_hour`: local Horizon request budget (0 = none; the server's
    /// `X-RateLimit-*` headers and 429s are followed either way). Unset: 3000 (the public
    /// Horizon's limit, [`DEFAULT_REQUESTS_PER_HOUR`]) against a real Horizon, none against
    /// the devnet, which announces its own limits.
    pub requests_per_hour: Option<u32>,
    /// `poll_interval_ms`: wait after a caught-up step (live polling). Default 5000.
    pub poll_interval_ms: u64,
    /// `reconcile`: compare replayed balances with Horizon's account endpoint. Default true.
    pub reconcile: bool,
    /// `max_per_recipient`: distribution rule, largest payout per recipient as a decimal
    /// string (e.g. `"1000"`); unset means no limit.
    pub max_per_recipient: Option<String>,
    /// `distribution_memo_prefix`: a payment's memo must be this prefix followed by the
    /// distribution id to count as its payout. Default `"dist:"`.
    pub distribution_memo_prefix: String,
    /// `dex_pairs`: DEX pairs priced from trade aggregations, `BASE/COUNTER` with `XLM`,
    /// a code of `assets` or `CODE:ISSUER` on each side (e.g. `["XLM/UBEC"]`). Default none.
    pub dex_pairs: Vec<String>,
    /// `dex_resolution_ms`: aggregation bucket (Horizon allows 1m, 5m, 15m, 1h, 1d, 1w).
    /// Default 3600000 (1 hour).
    pub dex_resolution_ms: i64,
    /// `dex_interval_secs`: minimum time between two price rounds. Default 300.
    pub dex_interval_secs: u64,
    /// `stream`: follow new operations over Horizon SSE, falling back to polling when the
    /// stream is refused or breaks. Default true.
    pub stream: bool,
    /// `discover_interval_secs`: how often holders are discovered again once live. Default 600.
    pub discover_interval_secs: u64,
    /// `breaker_threshold`: consecutive Horizon failures that open its circuit breaker.
    /// Default 5.
    pub breaker_threshold: u32,
    /// `breaker_recovery_secs`: how long the Horizon breaker stays open before a probe.
    /// Default 60.
    pub breaker_recovery_secs: u64,
    /// `request_timeout_secs`: per-request Horizon timeout (connect, headers and body; for
    /// the SSE stream only until the headers arrive). Default 30.
    pub request_timeout_secs: u64,
    /// `source`: `"rpc"` (Stellar RPC: balances rebuilt from SAC token events) or
    /// `"horizon"`. Unset: `horizon` when only `horizon_url` is set, otherwise `rpc`.
    pub source: Option<String>,
    /// `rpc_urls`: Stellar RPC endpoints (JSON-RPC), tried in order with failover. Env
    /// `ORRERY_STELLAR_RPC_URL` (one URL, or several separated by commas). Unset: the
    /// devnet's RPC when devnet runs and `source` is not `"horizon"` (with nothing
    /// configured, transactions are indexed too, for the devnet's holders).
    pub rpc_urls: Vec<String>,
    /// `rpc_start_ledger`: first ledger read on the first run (later runs resume from the
    /// stored cursor). Unset: the node's oldest retained ledger. A ledger before the node's
    /// retention window is refused with the window in the error.
    pub rpc_start_ledger: Option<u32>,
    /// `rpc_events_limit`: `getEvents` page size (1..=10000). Default 10000.
    pub rpc_events_limit: u32,
    /// `rpc_batch_events`: `getEvents` pages are read into one batch (one database
    /// transaction, with the cursor) until it holds this many events or the node has no
    /// more; larger batches backfill faster, smaller ones hold less memory. Default 100000.
    pub rpc_batch_events: usize,
    /// `rpc_requests_per_hour`: local RPC request budget (0 = none). Default 0.
    pub rpc_requests_per_hour: u32,
    /// `index_transactions`: with `source = "rpc"`, also follow `getTransactions` and store
    /// the operations of watched accounts (`accounts`, or watched in the admin API) decoded
    /// from the envelopes, into the same tables as Horizon (so operations, distributions and
    /// account queries work), and price `dex_pairs` from the trades in transaction results
    /// (RPC has no trade aggregations). Source `stellar:rpc:tx`. Default false.
    pub index_transactions: bool,
    /// `datalake_url`: a ledger data lake in the SEP-54 layout (Galexie's), read for history
    /// before RPC takes over: `file:///dir`, `https://host/path`, `s3://bucket/path` or
    /// `gs://bucket/path`. Env `ORRERY_STELLAR_DATALAKE_URL`. Unset: no data lake.
    pub datalake_url: Option<String>,
    /// `datalake_region`: the S3 bucket's region (e.g. `us-east-2`). Unset: the store's
    /// default.
    pub datalake_region: Option<String>,
    /// `datalake_anonymous`: unsigned requests to S3/GCS (public buckets). Default true.
    pub datalake_anonymous: bool,
    /// `datalake_concurrency`: objects fetched and decompressed at once (memory holds at
    /// most twice this many). Default 16.
    pub datalake_concurrency: usize,
    /// `datalake_start_ledger`: first ledger read from the data lake on the first run.
    /// Default 2 (the first ledger with transactions).
    pub datalake_start_ledger: Option<u32>,
    /// `datalake_end_ledger`: last ledger read from the data lake when no RPC follows it.
    /// Unset: as far as the lake goes (then polled for new objects).
    pub datalake_end_ledger: Option<u32>,
}

/// Which Stellar source runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Stellar RPC token events.
    Rpc,
    /// Horizon.
    Horizon,
}

/// The public Horizon's hourly request limit: the budget when `requests_per_hour` is unset.
pub const DEFAULT_REQUESTS_PER_HOUR: u32 = 3000;

impl StellarSettings {
    /// The source in force (see `source`), or why `source` is invalid.
    pub fn source_kind(&self) -> Result<SourceKind, String> {
        match self.source.as_deref() {
            Some("rpc") => Ok(SourceKind::Rpc),
            Some("horizon") => Ok(SourceKind::Horizon),
            Some(other) => Err(format!(
                "stellar.source {other:?}: expected \"rpc\" or \"horizon\""
            )),
            None if self.rpc_urls.is_empty() && self.horizon_url.is_some() => {
                Ok(SourceKind::Horizon)
            }
            None => Ok(SourceKind::Rpc),
        }
    }

    /// The local hourly request budget in force (see `requests_per_hour`).
    pub fn request_budget(&self) -> u32 {
        self.requests_per_hour.unwrap_or(DEFAULT_REQUESTS_PER_HOUR)
    }
}

impl Default for StellarSettings {
    fn default() -> Self {
        Self {
            horizon_url: None,
            accounts: Vec::new(),
            assets: Vec::new(),
            discover: true,
            required_assets: ["UBEC", "UBECrc", "UBECgpi", "UBECtt"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            page_size: 200,
            account_concurrency: 4,
            requests_per_hour: None,
            poll_interval_ms: 5000,
            reconcile: true,
            max_per_recipient: None,
            distribution_memo_prefix: "dist:".into(),
            dex_pairs: Vec::new(),
            dex_resolution_ms: 3_600_000,
            dex_interval_secs: 300,
            stream: true,
            discover_interval_secs: 600,
            breaker_threshold: 5,
            breaker_recovery_secs: 60,
            request_timeout_secs: 30,
            source: None,
            rpc_urls: Vec::new(),
            rpc_start_ledger: None,
            rpc_events_limit: 10_000,
            rpc_batch_events: 100_000,
            rpc_requests_per_hour: 0,
            index_transactions: false,
            datalake_url: None,
            datalake_region: None,
            datalake_anonymous: true,
            datalake_concurrency: 16,
            datalake_start_ledger: None,
            datalake_end_ledger: None,
        }
    }
}
