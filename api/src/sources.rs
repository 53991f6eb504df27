//! Starts the indexers the configuration asks for, under one supervisor, and the in-process
//! devnet when it is enabled (pointing every unconfigured upstream at it).

use std::time::Duration;

use orrery_devnet::{Devnet, DevnetConfig, DevnetUrls};
use orrery_indexer::bus::SharedBus;
use orrery_indexer::evm::{EvmChainSettings, EvmContractSettings};
use orrery_indexer::runtime_settings::{self, RuntimeSettings};
use orrery_indexer::stellar::StellarSettings;
use orrery_indexer::sync::lease::{self, LeaseConfig, Leases};
use orrery_indexer::sync::Supervisor;
use sea_orm::DatabaseConnection;

use crate::config::Config;

/// Why sources could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    /// The devnet failed to start.
    #[error("cannot start devnet: {0}")]
    Devnet(#[from] orrery_devnet::DevnetError),
    /// A source rejected its configuration.
    #[error("cannot start {source_name} indexer: {reason}")]
    Source {
        /// Which source.
        source_name: &'static str,
        /// Why.
        reason: String,
    },
}

/// What one `orrery serve` process does (`--role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ServeRole {
    /// Serve the API and index (on PostgreSQL, the sources whose lease it holds).
    #[default]
    All,
    /// Serve the API only: queries, subscriptions (events through Redis), mutations.
    Api,
    /// Index only, still answering `/health`, `/ready` and `/metrics` (and the API).
    Indexer,
}

impl ServeRole {
    /// `all`, `api` or `indexer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Api => "api",
            Self::Indexer => "indexer",
        }
    }

    /// Whether this role runs sources.
    pub fn indexes(self) -> bool {
        self != Self::Api
    }
}

/// What runs besides the HTTP server.
pub struct Running {
    /// Source tasks.
    pub supervisor: Supervisor,
    /// The in-process devnet, when enabled.
    pub devnet: Option<Devnet>,
    /// Trigger action workers (claimed rows are redelivered after their claim expires, so
    /// stopping them mid-delivery loses nothing).
    pub workers: tokio::task::JoinHandle<()>,
    /// The runtime settings the sources follow (`sync.batch_size`, `stellar.rate_limit`,
    /// `sync.stall_timeout`).
    pub settings: RuntimeSettings,
    /// Re-reads `settings` from the `config` table.
    pub settings_refresher: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops sources, then the devnet.
    pub async fn shutdown(self, grace: Duration) {
        self.workers.abort();
        self.settings_refresher.abort();
        self.supervisor.shutdown(grace).await;
        if let Some(d) = self.devnet {
            d.shutdown().await;
        }
    }
}

/// Devnet settings for `orrery serve --devnet`: blocks and ledgers keep coming.
pub fn live_devnet_config(seed: u64) -> DevnetConfig {
    let mut c = DevnetConfig {
        seed,
        ledger_interval: Some(Duration::from_secs(5)),
        ..DevnetConfig::default()
    };
    for chain in &mut c.evm_chains {
        chain.block_interval = Some(Duration::from_secs(3));
    }
    c.bitcoin.block_interval = Some(Duration::from_secs(30));
    c
}

/// Points every upstream the config leaves unset at the devnet.
pub fn apply_devnet_urls(config: &mut Config, urls: &DevnetUrls) {
    let stellar_unset = config.stellar.horizon_url.is_none() && config.stellar.rpc_urls.is_empty();
    if config.stellar.horizon_url.is_none() {
        config.stellar.horizon_url = Some(urls.horizon.clone());
    }
    // With no Stellar upstream configured the devnet's Stellar RPC is followed (Horizon is
    // nearing end-of-life), transactions and operations included
    // (`stellar.index_transactions`), so a first run shows balances, operations and DEX
    // prices. `stellar.source = "horizon"` follows the devnet's Horizon instead.
    if stellar_unset && config.stellar.source.as_deref() != Some("horizon") {
        config.stellar.rpc_urls = vec![urls.stellar_rpc.clone()];
        if config.stellar.source.is_none() {
            config.stellar.index_transactions = true;
        }
    }
    if config.bitcoin.esplora_url.is_none() {
        config.bitcoin.esplora_url = Some(urls.esplora.clone());
    }
    if config.bitcoin.exchange_prices_url.is_none() {
        config.bitcoin.exchange_prices_url = Some(urls.exchange_prices.clone());
    }
    if config.evm.chains.is_empty() {
        config.evm.chains = urls
            .evm
            .iter()
            .map(|e| EvmChainSettings {
                name: e.name.clone(),
                chain_id: e.chain_id,
                rpc_urls: vec![e.url.clone()],
                start_block: 0,
                confirmations: 2,
                contracts: [
                    (&e.contracts.identity, "identity"),
                    (&e.contracts.reputation, "reputation"),
                    (&e.contracts.validation, "validation"),
                ]
                .into_iter()
                .map(|(address, registry)| EvmContractSettings {
                    address: address.clone(),
                    registry: registry.to_string(),
                })
                .collect(),
            })
            .collect();
    }
}

/// Stellar defaults when the source follows the devnet's Horizon and the config names no
/// account or asset: watch every holder of the devnet's assets (as `CODE:ISSUER`), price
/// `XLM/<first asset>` on its DEX, and leave the request budget to the devnet, which
/// announces its own limits in `X-RateLimit-*` headers (the 3,000/hour default is the public
/// Horizon's). Anything the config sets is kept.
pub fn apply_devnet_stellar(stellar: &mut StellarSettings, asset_codes: &[String], issuer: &str) {
    if stellar.accounts.is_empty() && stellar.assets.is_empty() {
        stellar.assets = asset_codes
            .iter()
            .map(|code| format!("{code}:{issuer}"))
            .collect();
    }
    if stellar.dex_pairs.is_empty() {
        if let Some(first) = asset_codes.first() {
            stellar.dex_pairs = vec![format!("XLM/{first}")];
        }
    }
    if stellar.requests_per_hour.is_none() {
        stellar.requests_per_hour = Some(0);
    }
    // Over RPC, lumens are followed too (fees included): the XLM SAC's events.
    if stellar.source_kind() == Ok(orrery_indexer::stellar::settings::SourceKind::Rpc)
        && !stellar.assets.iter().any(|a| a == "XLM")
    {
        stellar.assets.insert(0, "XLM".into());
    }
}

/// The runtime settings' start values: what the file says (`stellar.page_size`,
/// `stellar.requests_per_hour`), used until an operator sets the `config` row.
pub fn runtime_start_values(config: &Config) -> runtime_settings::Values {
    runtime_settings::Values {
        batch_size: config.stellar.page_size.max(1),
        stellar_rate_limit_per_hour: config.stellar.request_budget(),
        ..runtime_settings::Values::default()
    }
}

/// Starts the devnet (when enabled) and every configured source. Sources read on `db` and run
/// their write transactions on `writer` (see [`crate::db::connect_writer`]); the trigger
/// workers, whose reads and writes are all small, use `writer` only.
pub async fn start(
    config: &mut Config,
    db: &DatabaseConnection,
    writer: &DatabaseConnection,
    bus: &SharedBus,
    role: ServeRole,
) -> Result<Running, SourcesError> {
    if !role.indexes() {
        tracing::info!(
            role = role.as_str(),
            "API-only replica: no source runs here"
        );
        let settings = RuntimeSettings::new(runtime_start_values(config));
        let settings_refresher = settings.spawn_refresher(db.clone(), bus.clone());
        let workers = orrery_indexer::triggers::spawn_workers(
            writer.clone(),
            bus.clone(),
            config.triggers.worker_settings(),
        );
        return Ok(Running {
            supervisor: Supervisor::new(),
            devnet: None,
            workers,
            settings,
            settings_refresher,
        });
    }
    let devnet = if config.devnet_enabled() {
        let devnet_config = live_devnet_config(config.devnet.seed);
        let asset_codes = devnet_config.stellar.asset_codes.clone();
        let devnet = Devnet::start(devnet_config).await?;
        let urls = devnet.urls();
        tracing::info!(horizon = %urls.horizon, esplora = %urls.esplora, evm_chains = urls.evm.len(), "devnet started");
        let stellar_on_devnet =
            config.stellar.horizon_url.is_none() && config.stellar.rpc_urls.is_empty();
        apply_devnet_urls(config, &urls);
        if stellar_on_devnet {
            let issuer = devnet.control().stellar_issuer();
            apply_devnet_stellar(&mut config.stellar, &asset_codes, &issuer);
            // Over RPC, operations are indexed for watched accounts only (holders found in
            // token events are not watched): on the devnet, watch its holders, as the
            // Horizon source's holder discovery would.
            if config.stellar.index_transactions
                && config.stellar.accounts.is_empty()
                && config.stellar.source_kind()
                    == Ok(orrery_indexer::stellar::settings::SourceKind::Rpc)
            {
                let c = devnet.control();
                config.stellar.accounts = c
                    .stellar_accounts()
                    .into_iter()
                    .filter(|a| {
                        c.balances(a)
                            .is_ok_and(|b| b.iter().any(|(asset, _)| asset != "native"))
                    })
                    .collect();
            }
            tracing::info!(
                assets = ?config.stellar.assets,
                dex_pairs = ?config.stellar.dex_pairs,
                "stellar: following the devnet's assets (set stellar.accounts or stellar.assets to choose)"
            );
        }
        Some(devnet)
    } else {
        None
    };
    let settings = RuntimeSettings::new(runtime_start_values(config));
    // Read once before the sources start, so their first requests already follow the table.
    if let Err(e) = settings.refresh(db).await {
        tracing::warn!(error = %e, "cannot read runtime settings; start values apply");
    }
    let settings_refresher = settings.spawn_refresher(db.clone(), bus.clone());
    let mut supervisor = Supervisor::new();
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        // Replicas may share this database: each source runs where its lease is.
        let replica = lease::replica_id();
        orrery_indexer::upstream::set_replica(&replica);
        tracing::info!(%replica, role = role.as_str(), "PostgreSQL: sources run under leases");
        supervisor = supervisor.with_leases(Leases::new(
            db.clone(),
            &replica,
            role.as_str(),
            LeaseConfig::default(),
        ));
    }
    // Each source area registers its tasks here.
    orrery_indexer::stellar::spawn_all(
        &config.stellar,
        &mut supervisor,
        db,
        writer,
        bus,
        &settings,
    )
    .await
    .map_err(|e| SourcesError::Source {
        source_name: "stellar",
        reason: e.to_string(),
    })?;
    orrery_indexer::evm::spawn_all(&config.evm, &mut supervisor, db, writer, bus, &settings)
        .await
        .map_err(|e| SourcesError::Source {
            source_name: "evm",
            reason: e.to_string(),
        })?;
    orrery_indexer::bitcoin::spawn_all(
        &config.bitcoin,
        &mut supervisor,
        db,
        writer,
        bus,
        &settings,
    )
    .await
    .map_err(|e| SourcesError::Source {
        source_name: "bitcoin",
        reason: e.to_string(),
    })?;
    let workers = orrery_indexer::triggers::spawn_workers(
        writer.clone(),
        bus.clone(),
        config.triggers.worker_settings(),
    );
    Ok(Running {
        supervisor,
        devnet,
        workers,
        settings,
        settings_refresher,
    })
}
