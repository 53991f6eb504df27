//! Bitcoin source (Esplora) feeding the UTXOracle estimator, exchange prices, comparisons.
//!
//! - [`source::BitcoinSource`] (`bitcoin`): headers, reorgs, rolling window, a price and a
//!   comparison every `bitcoin.interval_secs`;
//! - [`exchange::ExchangeSource`] (`exchange`): `/api/v1/prices` every interval, fills
//!   comparisons made while it was down;
//! - [`daily`]: daily mode of the `bitcoin` source (`UTXORACLE_DAILY`, one price per
//!   finished UTC day);
//! - [`parquet_export`]: `orrery prices export --format parquet`;
//! - [`oneshot`]: `orrery prices utxoracle` (compute and print, write nothing);
//! - [`store`]: price rows, export and prune.

pub mod buffer;
pub mod comparison;
pub mod daily;
pub mod esplora;
pub mod exchange;
pub mod oneshot;
pub mod parquet_export;
pub mod settings;
pub mod source;
pub mod store;

use std::time::Duration;

use sea_orm::DatabaseConnection;
use url::Url;

pub use settings::BitcoinSettings;

use crate::bus::SharedBus;
use crate::sync::{breaker_store, EngineConfig, SourceError, Supervisor, SyncContext};
use crate::upstream::{UpstreamClient, UpstreamConfig};

/// The exchange upstream client (upstream name `exchange`; breaker recovers within one
/// interval so a returning endpoint is seen promptly).
pub fn exchange_client(
    base_url: &str,
    interval: Duration,
    timeout: Duration,
) -> Result<UpstreamClient, SourceError> {
    let url = Url::parse(base_url).map_err(|e| {
        SourceError::Config(format!("bitcoin.exchange_prices_url {base_url:?}: {e}"))
    })?;
    let mut config = UpstreamConfig::new("exchange", vec![url]);
    config.breaker_recovery = interval.clamp(Duration::from_secs(1), Duration::from_secs(60));
    config.max_retries = 1;
    config.timeout = timeout;
    Ok(UpstreamClient::new(config)?)
}

/// Starts the `bitcoin` source (when `esplora_url` is set) and the `exchange` source (when
/// `exchange_prices_url` is set) under `supervisor`. Both read on `db` and write their batches on
/// `writer` ([`SyncContext::with_writer`]).
pub async fn spawn_all(
    settings: &BitcoinSettings,
    supervisor: &mut Supervisor,
    db: &DatabaseConnection,
    writer: &DatabaseConnection,
    bus: &SharedBus,
    runtime: &crate::runtime_settings::RuntimeSettings,
) -> Result<(), SourceError> {
    let interval = Duration::from_secs(settings.interval_secs.max(1));
    let timeout = Duration::from_secs(settings.request_timeout_secs.max(1));
    let engine = EngineConfig {
        max_error_backoff: interval.clamp(Duration::from_secs(1), Duration::from_secs(60)),
        ..EngineConfig::default()
    };
    if let Some(url) = &settings.esplora_url {
        let esplora = esplora::EsploraClient::with_limits(
            url,
            settings.requests_per_hour,
            timeout,
            Duration::from_secs(settings.breaker_recovery_secs.max(1)),
        )?;
        breaker_store::restore_and_track(db.clone(), esplora.upstream().breaker()).await?;
        let buffer = buffer::PriceBuffer::new(settings.write_buffer);
        let (daily, start_height) = (settings.daily, settings.start_height);
        let (recent, poll) = (
            settings.recent_blocks,
            Duration::from_secs(settings.poll_interval_secs.max(1)),
        );
        let factory = crate::sync::factory(move || {
            source::BitcoinSource::new(esplora.clone(), recent, interval, poll, buffer.clone())
                .with_daily(daily)
                .with_start_height(start_height)
        });
        let ctx = SyncContext::new(
            db.clone(),
            bus.clone(),
            source::BitcoinSource::descriptor_static(),
        )
        .with_writer(writer.clone())
        .with_settings(runtime.clone());
        supervisor.spawn(factory, ctx, engine.clone());
    }
    if let Some(url) = &settings.exchange_prices_url {
        let client = exchange_client(url, interval, timeout)?;
        breaker_store::restore_and_track(db.clone(), client.breaker()).await?;
        let backfill = Duration::from_secs(settings.exchange_backfill_secs);
        let factory = crate::sync::factory(move || {
            exchange::ExchangeSource::new(client.clone(), interval, backfill)
        });
        let ctx = SyncContext::new(
            db.clone(),
            bus.clone(),
            exchange::ExchangeSource::descriptor_static(),
        )
        .with_writer(writer.clone())
        .with_settings(runtime.clone());
        supervisor.spawn(factory, ctx, engine);
    }
    Ok(())
}
