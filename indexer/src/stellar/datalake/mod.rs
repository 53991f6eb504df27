//! Stellar history from a ledger data lake in the SEP-54 layout (Galexie's; the public
//! buckets of every network): [`layout`] (config and object keys), [`store`] (S3, GCS,
//! HTTP or a local directory through `object_store`), [`object`] (zstd + XDR
//! `LedgerCloseMetaBatch`, reduced to token events), [`pipeline`] (parallel, ordered,
//! bounded reading) and [`source`] (balances derived as on the RPC path; the handoff to
//! RPC).

pub mod layout;
pub mod object;
pub mod pipeline;
pub mod source;
pub mod store;

pub use layout::Schema;
pub use source::{HandoffSource, LakeSource, LakeStats};
pub use store::{LakeStore, StoreOptions};

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

/// Registers the data-lake source when `stellar.datalake_url` is set: with
/// `stellar.rpc_urls` too, the source that backfills from the lake and hands over to RPC;
/// otherwise the lake alone. Returns false when no data lake is configured.
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
    let ctx = SyncContext::new(db.clone(), bus.clone(), source::descriptor())
        .with_writer(writer.clone())
        .with_settings(runtime.clone());
    let settings = settings.clone();
    match super::rpc::client(&settings)? {
        Some(rpc) => {
            crate::sync::breaker_store::restore_and_track(db.clone(), rpc.upstream().breaker())
                .await?;
            let factory = crate::sync::factory(move || {
                HandoffSource::new(store.clone(), rpc.clone(), settings.clone())
            });
            supervisor.spawn(factory, ctx, EngineConfig::default());
        }
        None => {
            let factory =
                crate::sync::factory(move || LakeSource::new(store.clone(), settings.clone()));
            supervisor.spawn(factory, ctx, EngineConfig::default());
        }
    }
    Ok(true)
}
