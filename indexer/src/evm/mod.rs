//! EVM source (JSON-RPC): ERC-8004 registries on several chains, reorgs.
//!
//! Each configured chain runs as its own source task (`evm:<name>`) under the supervisor:
//! [`source::EvmSource`] backfills with adaptive `eth_getLogs` ranges, follows the head
//! `confirmations` behind, detects reorgs by block hash and rolls back orphaned rows;
//! [`decode`] turns logs into typed ERC-8004 events; [`store`] writes them.

pub mod decode;
pub mod rpc;
pub mod settings;
pub mod source;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use sea_orm::DatabaseConnection;
use url::Url;

pub use decode::{Erc8004Event, Registry};
pub use settings::{EvmChainSettings, EvmContractSettings, EvmSettings};
pub use source::{source_id, ChainSpec, EvmSource, Tuning};

use crate::bus::SharedBus;
use crate::sync::{breaker_store, EngineConfig, Source, SourceFactory, Supervisor, SyncContext};
use crate::upstream::{UpstreamClient, UpstreamConfig};

/// Why the EVM sources could not start.
#[derive(Debug, thiserror::Error)]
pub enum EvmError {
    /// A chain's settings are invalid.
    #[error("evm chain {chain}: {reason}")]
    Config {
        /// Chain name.
        chain: String,
        /// What is wrong.
        reason: String,
    },
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    /// The breaker state could not be restored.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
}

/// Validates one chain's settings into a [`ChainSpec`] and its RPC URLs.
pub fn chain_spec(chain: &EvmChainSettings) -> Result<(ChainSpec, Vec<Url>), EvmError> {
    let bad = |reason: String| EvmError::Config {
        chain: chain.name.clone(),
        reason,
    };
    if chain.name.trim().is_empty() {
        return Err(bad("empty name".into()));
    }
    if chain.rpc_urls.is_empty() {
        return Err(bad("no rpc_urls".into()));
    }
    let urls = chain
        .rpc_urls
        .iter()
        .map(|u| Url::parse(u).map_err(|e| bad(format!("rpc url {u:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut contracts = HashMap::new();
    for c in &chain.contracts {
        let address: Address = c
            .address
            .parse()
            .map_err(|e| bad(format!("contract address {:?}: {e}", c.address)))?;
        let registry = Registry::parse(&c.registry).ok_or_else(|| {
            bad(format!(
                "registry {:?}: expected identity, reputation or validation",
                c.registry
            ))
        })?;
        contracts.insert(address, registry);
    }
    if contracts.is_empty() {
        return Err(bad("no contracts".into()));
    }
    Ok((
        ChainSpec {
            name: chain.name.clone(),
            chain_id: chain.chain_id,
            start_block: chain.start_block,
            confirmations: chain.confirmations,
            contracts,
        },
        urls,
    ))
}

/// Starts one source task per configured chain under `supervisor`; each reads on `db` and
/// writes its batches on `writer` ([`SyncContext::with_writer`]).
pub async fn spawn_all(
    settings: &EvmSettings,
    supervisor: &mut Supervisor,
    db: &DatabaseConnection,
    writer: &DatabaseConnection,
    bus: &SharedBus,
    runtime: &crate::runtime_settings::RuntimeSettings,
) -> Result<(), EvmError> {
    let tuning = Tuning {
        max_range: settings.max_block_range.max(1),
        concurrency: settings.concurrency.max(1),
        poll_interval: Duration::from_millis(settings.poll_interval_ms.max(50)),
    };
    for chain in &settings.chains {
        let (spec, urls) = chain_spec(chain)?;
        let mut config = UpstreamConfig::new(source_id(&spec.name), urls);
        config.requests_per_hour = settings.requests_per_hour;
        config.timeout = Duration::from_secs(settings.request_timeout_secs.max(1));
        config.breaker_recovery = Duration::from_secs(settings.breaker_recovery_secs.max(1));
        config.burst = config.burst.max(tuning.concurrency as u32 * 2);
        let client = UpstreamClient::new(config)?;
        breaker_store::restore_and_track(db.clone(), client.breaker()).await?;
        let rpc = Arc::new(rpc::RpcClient::new(client));
        let spec = Arc::new(spec);
        let t = tuning.clone();
        let factory: SourceFactory = {
            let spec = spec.clone();
            let rpc = rpc.clone();
            crate::sync::factory(move || EvmSource::new(spec.clone(), rpc.clone(), t.clone()))
        };
        let descriptor = EvmSource::new(spec.clone(), rpc.clone(), tuning.clone()).descriptor();
        tracing::info!(chain = %spec.name, contracts = spec.contracts.len(), "starting evm source");
        supervisor.spawn(
            factory,
            SyncContext::new(db.clone(), bus.clone(), descriptor)
                .with_writer(writer.clone())
                .with_settings(runtime.clone()),
            EngineConfig::default(),
        );
    }
    Ok(())
}
