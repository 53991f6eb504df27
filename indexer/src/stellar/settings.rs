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
}

/// The public Horizon's hourly request limit: the budget when `requests_per_hour` is unset.
pub const DEFAULT_REQUESTS_PER_HOUR: u32 = 3000;

impl StellarSettings {
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
        }
    }
}
