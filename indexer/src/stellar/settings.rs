//! `[stellar]` settings.

use serde::Deserialize;

/// Stellar indexing settings (`[stellar]` in `orrery.toml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StellarSettings {
    /// Horizon base URL, e.g. `https://horizon.stellar.org`. Env `ORRERY_HORIZON_URL`.
    /// Unset: the devnet's Horizon when devnet runs, otherwise Stellar indexing is off.
    pub horizon_url: Option<String>,
}
