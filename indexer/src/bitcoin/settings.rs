//! `[bitcoin]` settings.

use serde::Deserialize;

/// Bitcoin and price settings (`[bitcoin]` in `orrery.toml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BitcoinSettings {
    /// Esplora base URL, e.g. `https://blockstream.info/api`. Env `ORRERY_ESPLORA_URL`.
    /// Unset: the devnet's Esplora when devnet runs, otherwise Bitcoin indexing is off.
    pub esplora_url: Option<String>,
    /// Base URL of a mempool-style price API (`/api/v1/prices`). Env `ORRERY_EXCHANGE_URL`.
    pub exchange_prices_url: Option<String>,
}
