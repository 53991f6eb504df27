//! Stellar sources: Stellar RPC token events ([`rpc`], `stellar.source = "rpc"`) or
//! Horizon (the rest of this module). Horizon:  watched accounts, balances, operations, distributions.
//!
//! Accounts come from `stellar.accounts` plus, with `stellar.discover`, every holder of
//! `stellar.assets`. Each account backfills from its own cursor; then the source follows
//! `/operations` from the cursor recorded before the backfill began (SSE, falling back to
//! polling), so the
//! handoff neither loses nor duplicates. A resync of one account is requested by setting its
//! `stellar_sync_state` row to `status = 'requested'` with `mode` `full`, `incremental` or
//! `targeted:<from>-<to>` (see [`resync`]). Accounts whose `stellar_account.watched` is
//! switched (see [`admin`]) are picked up or dropped within a poll interval, without restart.

pub mod admin;
pub mod amount;
pub mod balance_events;
pub mod batch;
pub mod datalake;
pub mod dex;
pub mod distributions;
pub mod holdings;
pub mod horizon;
pub mod reconciliation;
pub mod resync;
pub mod rpc;
pub mod settings;
pub mod source;
pub mod sse;
pub mod store;
pub mod writer;

#[cfg(test)]
mod fixture_tests;

use sea_orm::DatabaseConnection;
use url::Url;

pub use batch::StellarBatch;
pub use settings::StellarSettings;
pub use source::StellarSource;
pub use writer::StellarWriter;

use crate::bus::SharedBus;
use crate::runtime_settings::RuntimeSettings;
use crate::sync::{EngineConfig, Supervisor, SyncContext};
use crate::upstream::{UpstreamClient, UpstreamConfig};

/// Why the Stellar source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StellarStartError {
    /// `stellar.horizon_url` is not a URL.
    #[error("stellar.horizon_url {0:?} is not a URL")]
    Url(String),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    /// A `stellar.rpc_urls` entry is not an http(s) URL.
    #[error("stellar.rpc_urls: {0:?} is not an http(s) URL")]
    RpcUrl(String),
    /// `stellar.source` is not `rpc` or `horizon`.
    #[error("{0}")]
    SourceKind(String),
    /// `stellar.datalake_url` cannot be opened.
    #[error("{0}")]
    Datalake(String),
    /// The breaker row could not be restored.
    #[error("restoring the horizon breaker: {0}")]
    Db(#[from] sea_orm::DbErr),
}

/// The upstream client for `settings` (name `horizon`).
pub fn client(settings: &StellarSettings) -> Result<Option<UpstreamClient>, StellarStartError> {
    let Some(url) = &settings.horizon_url else {
        return Ok(None);
    };
    let base = Url::parse(url).map_err(|_| StellarStartError::Url(url.clone()))?;
    let mut cfg = UpstreamConfig::new("horizon", vec![base]);
    cfg.requests_per_hour = settings.request_budget();
    cfg.breaker_threshold = settings.breaker_threshold.max(1);
    cfg.breaker_recovery = std::time::Duration::from_secs(settings.breaker_recovery_secs.max(1));
    cfg.timeout = std::time::Duration::from_secs(settings.request_timeout_secs.max(1));
    Ok(Some(UpstreamClient::new(cfg)?))
}

/// Registers the Stellar source with `supervisor` when a Horizon URL is configured; it reads
/// on `db` and writes its batches on `writer` ([`SyncContext::with_writer`]). The
/// Horizon client's budget follows `stellar.rate_limit` and its page size `sync.batch_size`
/// from `runtime` (whose start values should be `requests_per_hour` and `page_size`).
pub async fn spawn_all(
    settings: &StellarSettings,
    supervisor: &mut Supervisor,
    db: &DatabaseConnection,
    writer: &DatabaseConnection,
    bus: &SharedBus,
    runtime: &RuntimeSettings,
) -> Result<(), StellarStartError> {
    if settings
        .source_kind()
        .map_err(StellarStartError::SourceKind)?
        == settings::SourceKind::Rpc
    {
        // A data lake backfills history first (then hands over to RPC when configured).
        if !datalake::spawn(settings, supervisor, db, writer, bus, runtime).await? {
            rpc::spawn(settings, supervisor, db, writer, bus, runtime).await?;
        }
        // RPC has no trade aggregations: with `index_transactions` Orrery aggregates the
        // trades itself; otherwise, with a Horizon URL, DEX pairs are still priced through
        // Horizon, by a Horizon source that watches no account.
        if settings.dex_pairs.is_empty()
            || settings.horizon_url.is_none()
            || settings.index_transactions
        {
            return Ok(());
        }
        let mut dex_only = settings.clone();
        dex_only.accounts.clear();
        dex_only.discover = false;
        dex_only.reconcile = false;
        dex_only.stream = false;
        return spawn_horizon(&dex_only, supervisor, db, writer, bus, runtime).await;
    }
    spawn_horizon(settings, supervisor, db, writer, bus, runtime).await
}

/// Registers the Horizon source (see [`spawn_all`]).
async fn spawn_horizon(
    settings: &StellarSettings,
    supervisor: &mut Supervisor,
    db: &DatabaseConnection,
    writer: &DatabaseConnection,
    bus: &SharedBus,
    runtime: &RuntimeSettings,
) -> Result<(), StellarStartError> {
    let Some(client) = client(settings)? else {
        return Ok(());
    };
    crate::sync::breaker_store::restore_and_track(db.clone(), client.breaker()).await?;
    // Runs as long as the runtime settings exist (the process).
    drop(runtime.follow_stellar_rate_limit(client.clone()));
    let settings = settings.clone();
    let factory = {
        let runtime = runtime.clone();
        crate::sync::factory(move || {
            StellarSource::new(client.clone(), settings.clone()).with_runtime(runtime.clone())
        })
    };
    supervisor.spawn(
        factory,
        SyncContext::new(db.clone(), bus.clone(), source::descriptor())
            .with_writer(writer.clone())
            .with_settings(runtime.clone()),
        EngineConfig::default(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_takes_timeout_and_breaker_from_settings() {
        let mut s = StellarSettings::default();
        assert!(client(&s).unwrap().is_none());
        assert_eq!(s.request_timeout_secs, 30);
        s.horizon_url = Some("http://127.0.0.1:1".into());
        s.request_timeout_secs = 2;
        s.breaker_threshold = 7;
        let c = client(&s).unwrap().unwrap();
        assert_eq!(c.config().timeout, std::time::Duration::from_secs(2));
        assert_eq!(c.config().breaker_threshold, 7);
        s.horizon_url = Some("not a url".into());
        assert!(matches!(client(&s), Err(StellarStartError::Url(_))));
    }
}
