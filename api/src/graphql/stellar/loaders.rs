//! Batched loaders of the lists nested in Stellar objects (balances and sync state by
//! account, recipients and events by distribution).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, Result};
use orrery_entity::{
    balance_reconciliation, distribution_event, distribution_recipient, stellar_balance,
    stellar_sync_state,
};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};

use super::types::{
    BalanceCheck, DistributionEvent, DistributionRecipient, StellarBalance, StellarSyncStatus,
};
use crate::graphql::error::internal;

/// The batched loaders of this module (registered as schema data).
pub struct StellarLoaders {
    pub(super) balances: DataLoader<BalanceLoader>,
    pub(super) sync: DataLoader<SyncLoader>,
    pub(super) recipients: DataLoader<RecipientLoader>,
    pub(super) events: DataLoader<EventLoader>,
    pub(super) checks: DataLoader<CheckLoader>,
}

impl StellarLoaders {
    /// Loaders reading from `db` (no cache: every request sees fresh rows).
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            balances: DataLoader::new(BalanceLoader(db.clone()), tokio::spawn),
            sync: DataLoader::new(SyncLoader(db.clone()), tokio::spawn),
            recipients: DataLoader::new(RecipientLoader(db.clone()), tokio::spawn),
            events: DataLoader::new(EventLoader(db.clone()), tokio::spawn),
            checks: DataLoader::new(CheckLoader(db), tokio::spawn),
        }
    }
}

pub(super) fn loaders<'a>(ctx: &Context<'a>) -> Result<&'a StellarLoaders> {
    ctx.data::<StellarLoaders>()
        .map_err(|_| internal("stellar loaders", "not registered"))
}

/// Loads balances by account id.
pub struct BalanceLoader(DatabaseConnection);
/// Loads sync state by account id.
pub struct SyncLoader(DatabaseConnection);
/// Loads recipients by distribution id.
pub struct RecipientLoader(DatabaseConnection);
/// Loads events by distribution id.
pub struct EventLoader(DatabaseConnection);
/// Loads balance checks by account id.
pub struct CheckLoader(DatabaseConnection);

impl Loader<String> for CheckLoader {
    type Value = Vec<BalanceCheck>;
    type Error = Arc<DbErr>;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = balance_reconciliation::Entity::find()
            .filter(balance_reconciliation::Column::AccountId.is_in(keys.to_vec()))
            .order_by_asc(balance_reconciliation::Column::Source)
            .order_by_asc(balance_reconciliation::Column::AssetCode)
            .order_by_asc(balance_reconciliation::Column::AssetIssuer)
            .all(&self.0)
            .await
            .map_err(Arc::new)?;
        let mut out: HashMap<String, Vec<BalanceCheck>> = HashMap::new();
        for r in rows {
            out.entry(r.account_id.clone()).or_default().push(r.into());
        }
        Ok(out)
    }
}

impl Loader<String> for BalanceLoader {
    type Value = Vec<StellarBalance>;
    type Error = Arc<DbErr>;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = stellar_balance::Entity::find()
            .filter(stellar_balance::Column::AccountId.is_in(keys.to_vec()))
            .order_by_asc(stellar_balance::Column::AssetCode)
            .all(&self.0)
            .await
            .map_err(Arc::new)?;
        let mut out: HashMap<String, Vec<StellarBalance>> = HashMap::new();
        for r in rows {
            out.entry(r.account_id.clone()).or_default().push(r.into());
        }
        Ok(out)
    }
}

impl Loader<String> for SyncLoader {
    type Value = StellarSyncStatus;
    type Error = Arc<DbErr>;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = stellar_sync_state::Entity::find()
            .filter(stellar_sync_state::Column::AccountId.is_in(keys.to_vec()))
            .all(&self.0)
            .await
            .map_err(Arc::new)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.account_id.clone(), r.into()))
            .collect())
    }
}

impl Loader<i64> for RecipientLoader {
    type Value = Vec<DistributionRecipient>;
    type Error = Arc<DbErr>;
    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let rows = distribution_recipient::Entity::find()
            .filter(distribution_recipient::Column::DistributionId.is_in(keys.to_vec()))
            .order_by_asc(distribution_recipient::Column::Id)
            .all(&self.0)
            .await
            .map_err(Arc::new)?;
        let mut out: HashMap<i64, Vec<DistributionRecipient>> = HashMap::new();
        for r in rows {
            out.entry(r.distribution_id).or_default().push(r.into());
        }
        Ok(out)
    }
}

impl Loader<i64> for EventLoader {
    type Value = Vec<DistributionEvent>;
    type Error = Arc<DbErr>;
    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let rows = distribution_event::Entity::find()
            .filter(distribution_event::Column::DistributionId.is_in(keys.to_vec()))
            .order_by_asc(distribution_event::Column::Id)
            .all(&self.0)
            .await
            .map_err(Arc::new)?;
        let mut out: HashMap<i64, Vec<DistributionEvent>> = HashMap::new();
        for r in rows {
            out.entry(r.distribution_id).or_default().push(r.into());
        }
        Ok(out)
    }
}
