//! Stellar RPC (JSON-RPC) support: the client ([`client`]), its wire types ([`types`]),
//! XDR/strkey decoding with limits ([`xdr`]), SAC contract ids ([`sac`]), SAC token events
//! ([`events`]), ledgers/transactions/entries decoding ([`decode`]), and the `stellar`
//! source that rebuilds balances from token events ([`source`], [`writer`]).

pub mod batch;
pub mod client;
pub mod decode;
pub mod dex;
pub mod events;
pub mod meta;
pub mod operations;
pub mod reconcile;
pub mod sac;
pub mod source;
pub mod transactions;
pub mod types;
pub mod writer;
pub mod xdr;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod tx_fixture_tests;

pub use client::{EventFilter, RpcClient, RpcError, Start};
pub use source::RpcSource;
pub use transactions::RpcTxSource;
pub use writer::RpcWriter;

use sea_orm::DatabaseConnection;
use url::Url;

use super::{StellarSettings, StellarStartError};
use crate::bus::SharedBus;
use crate::runtime_settings::RuntimeSettings;
use crate::sync::{EngineConfig, Supervisor, SyncContext};
use crate::upstream::{UpstreamClient, UpstreamConfig};

/// The RPC client for `settings.rpc_urls` (upstream name `stellar-rpc`; failover in
/// order), or `None` when no URL is set.
pub fn client(settings: &StellarSettings) -> Result<Option<RpcClient>, StellarStartError> {
    if settings.rpc_urls.is_empty() {
        return Ok(None);
    }
    let mut urls = Vec::with_capacity(settings.rpc_urls.len());
    for u in &settings.rpc_urls {
        let url = Url::parse(u).map_err(|_| StellarStartError::RpcUrl(u.clone()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(StellarStartError::RpcUrl(u.clone()));
        }
        urls.push(url);
    }
    let mut cfg = UpstreamConfig::new("stellar-rpc", urls);
    cfg.requests_per_hour = settings.rpc_requests_per_hour;
    cfg.breaker_threshold = settings.breaker_threshold.max(1);
    cfg.breaker_recovery = std::time::Duration::from_secs(settings.breaker_recovery_secs.max(1));
    cfg.timeout = std::time::Duration::from_secs(settings.request_timeout_secs.max(1));
    Ok(Some(RpcClient::new(UpstreamClient::new(cfg)?)))
}

/// Registers the RPC token-event source with `supervisor` when `stellar.rpc_urls` is set.
pub async fn spawn(
    settings: &StellarSettings,
    supervisor: &mut Supervisor,
    db: &DatabaseConnection,
    writer: &DatabaseConnection,
    bus: &SharedBus,
    runtime: &RuntimeSettings,
) -> Result<(), StellarStartError> {
    let Some(rpc) = client(settings)? else {
        return Ok(());
    };
    crate::sync::breaker_store::restore_and_track(db.clone(), rpc.upstream().breaker()).await?;
    if settings.index_transactions {
        spawn_transactions(settings, rpc.clone(), supervisor, db, writer, bus, runtime);
    }
    let settings = settings.clone();
    let factory = crate::sync::factory(move || RpcSource::new(rpc.clone(), settings.clone()));
    supervisor.spawn(
        factory,
        SyncContext::new(db.clone(), bus.clone(), source::descriptor())
            .with_writer(writer.clone())
            .with_settings(runtime.clone()),
        EngineConfig::default(),
    );
    Ok(())
}

/// Registers the `stellar:rpc:tx` source (`stellar.index_transactions`).
fn spawn_transactions(
    settings: &StellarSettings,
    rpc: RpcClient,
    supervisor: &mut Supervisor,
    db: &DatabaseConnection,
    writer: &DatabaseConnection,
    bus: &SharedBus,
    runtime: &RuntimeSettings,
) {
    let settings = settings.clone();
    let factory =
        crate::sync::factory(move || transactions::RpcTxSource::new(rpc.clone(), settings.clone()));
    supervisor.spawn(
        factory,
        SyncContext::new(db.clone(), bus.clone(), transactions::descriptor())
            .with_writer(writer.clone())
            .with_settings(runtime.clone()),
        EngineConfig::default(),
    );
}
