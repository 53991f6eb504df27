//! `[bitcoin]` settings.

use serde::Deserialize;

/// Bitcoin and price settings (`[bitcoin]` in `orrery.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BitcoinSettings {
    /// Esplora base URL, e.g. `https://blockstream.info/api`. Env `ORRERY_ESPLORA_URL`.
    /// Unset: the devnet's Esplora when devnet runs, otherwise Bitcoin indexing is off.
    pub esplora_url: Option<String>,
    /// Base URL of a mempool-style price API (`/api/v1/prices`). Env `ORRERY_EXCHANGE_URL`.
    pub exchange_prices_url: Option<String>,
    /// `bitcoin.recent_blocks`: blocks in the UTXOracle rolling window. Default 144.
    pub recent_blocks: usize,
    /// `bitcoin.interval_secs`: how often the rolling-window price is recomputed (and the
    /// exchange polled). Default 600 (10 minutes, the seed's cron period).
    pub interval_secs: u64,
    /// `bitcoin.poll_interval_secs`: how often the Esplora tip is polled when caught up.
    /// Default 30.
    pub poll_interval_secs: u64,
    /// `bitcoin.requests_per_hour`: local Esplora request budget; 0 (the default) = no local
    /// budget (the seed runs its own electrs; HTTP 429/`Retry-After` are still honoured). Set
    /// it for a public Esplora: the first window alone is ~144 x (2 + txs/25) requests.
    pub requests_per_hour: u32,
    /// `bitcoin.retention_days`: price history kept by `orrery prices prune` without
    /// `--before`. Default 365.
    pub retention_days: u32,
    /// `bitcoin.write_buffer`: computed prices held in memory while the database refuses
    /// writes (oldest dropped beyond this, with an error log). Default 1024.
    pub write_buffer: usize,
    /// `bitcoin.exchange_backfill_secs`: a returning exchange price fills comparisons that
    /// lack one up to this far back. Default 3600.
    pub exchange_backfill_secs: u64,
    /// `bitcoin.daily`: daily mode, the UTXOracle price of each finished UTC day (source
    /// `UTXORACLE_DAILY`, stored once the tip is 6 blocks past midnight). Default true.
    pub daily: bool,
    /// `bitcoin.start_height`: first block indexed on an empty database. Default unset:
    /// the last `recent_blocks` blocks (then daily prices start with the first whole day
    /// indexed).
    pub start_height: Option<u64>,
    /// `bitcoin.request_timeout_secs`: per-request timeout of the Esplora and exchange
    /// clients in seconds (connect, headers and body). Default 30.
    pub request_timeout_secs: u64,
    /// `bitcoin.breaker_recovery_secs`: how long the Esplora circuit breaker stays open
    /// before a probe, in seconds (the exchange's recovers within one `interval_secs`).
    /// Default 60.
    pub breaker_recovery_secs: u64,
}

impl Default for BitcoinSettings {
    fn default() -> Self {
        Self {
            esplora_url: None,
            exchange_prices_url: None,
            recent_blocks: crate::utxoracle::RECENT_BLOCKS,
            interval_secs: 600,
            poll_interval_secs: 30,
            requests_per_hour: 0,
            retention_days: 365,
            write_buffer: 1024,
            exchange_backfill_secs: 3600,
            daily: true,
            start_height: None,
            request_timeout_secs: 30,
            breaker_recovery_secs: 60,
        }
    }
}
