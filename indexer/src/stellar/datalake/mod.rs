//! Stellar history from a ledger data lake in the SEP-54 layout (Galexie's; the public
//! buckets of every network): [`layout`] (config and object keys), [`store`] (S3, GCS,
//! HTTP or a local directory through `object_store`), [`object`] (zstd + XDR
//! `LedgerCloseMetaBatch`, reduced to token events), [`pipeline`] (parallel, ordered,
//! bounded reading) and [`source`] (balances derived as on the RPC path; the handoff to
//! RPC).

pub mod handoff;
pub mod layout;
pub mod object;
pub mod pipeline;
pub mod reader;
pub mod source;
pub mod store;
pub mod transactions;

pub use handoff::{HandoffSource, TxHandoffSource};
pub use layout::Schema;
pub use source::{LakeSource, LakeStats};
pub use store::{LakeStore, StoreOptions};
pub use transactions::LakeTxSource;

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use super::{StellarSettings, StellarStartError};
use crate::bus::SharedBus;
use crate::runtime_settings::RuntimeSettings;
use crate::sync::{EngineConfig, Supervisor, SyncContext};

/// Opens `stellar.datalake_url`, or `None` when it is unset.
pub fn open(settings: &StellarSettings) -> Result<Option<Arc<LakeStore>>, StellarStartError> {
    let Some(url) = &settings.datalake_url else {
        return Ok(None);
    };
    let options = StoreOptions {
        region: settings.datalake_region.clone(),
        anonymous: settings.datalake_anonymous,
    };
    LakeStore::open(url, &options)
        .map(|s| Some(Arc::new(s)))
        .map_err(|e| StellarStartError::Datalake(e.to_string()))
}

/// Registers the data-lake sources when `stellar.datalake_url` is set (balances, and with
/// `stellar.index_transactions` transactions too): with `stellar.rpc_urls` as well, each
/// backfills from the lake and hands over to RPC; otherwise the lake alone. Returns false
/// when no data lake is configured.
pub async fn spawn(
    settings: &StellarSettings,
    supervisor: &mut Supervisor,
    db: &DatabaseConnection,
    writer: &DatabaseConnection,
    bus: &SharedBus,
    runtime: &RuntimeSettings,
) -> Result<bool, StellarStartError> {
    let Some(store) = open(settings)? else {
        return Ok(false);
    };
    let ctx = |d| {
        SyncContext::new(db.clone(), bus.clone(), d)
            .with_writer(writer.clone())
            .with_settings(runtime.clone())
    };
    let settings = settings.clone();
    let with_txs = settings.index_transactions;
    match super::rpc::client(&settings)? {
        Some(rpc) => {
            crate::sync::breaker_store::restore_and_track(db.clone(), rpc.upstream().breaker())
                .await?;
            let (s, r, l) = (settings.clone(), rpc.clone(), store.clone());
            let factory =
                crate::sync::factory(move || HandoffSource::new(l.clone(), r.clone(), s.clone()));
            supervisor.spawn(factory, ctx(source::descriptor()), EngineConfig::default());
            if with_txs {
                let factory = crate::sync::factory(move || {
                    TxHandoffSource::new(store.clone(), rpc.clone(), settings.clone())
                });
                let d = transactions::descriptor();
                supervisor.spawn(factory, ctx(d), EngineConfig::default());
            }
        }
        None => {
            let (s, l) = (settings.clone(), store.clone());
            let factory = crate::sync::factory(move || LakeSource::new(l.clone(), s.clone()));
            supervisor.spawn(factory, ctx(source::descriptor()), EngineConfig::default());
            if with_txs {
                let factory = crate::sync::factory(move || {
                    LakeTxSource::new(store.clone(), settings.clone())
                });
                let d = transactions::descriptor();
                supervisor.spawn(factory, ctx(d), EngineConfig::default());
            }
        }
    }
    Ok(true)
}
