//! Batched reads of source leases: `Chain.leader`, `leaseAgeSeconds` and `leaseToken` of
//! every chain in one response share one query instead of one per field per chain.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::Context;
use orrery_entity::source_lease;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};

use super::error::internal;

/// Loads lease rows by source id (expired leases included: the caller decides).
pub struct LeaseLoader(DatabaseConnection);

impl LeaseLoader {
    /// The loader as schema data (no cache: every request sees the current holder).
    pub fn data_loader(db: DatabaseConnection) -> DataLoader<LeaseLoader> {
        DataLoader::new(LeaseLoader(db), tokio::spawn)
    }
}

impl Loader<String> for LeaseLoader {
    type Value = source_lease::Model;
    type Error = Arc<DbErr>;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = source_lease::Entity::find()
            .filter(source_lease::Column::SourceId.is_in(keys.to_vec()))
            .all(&self.0)
            .await
            .map_err(Arc::new)?;
        Ok(rows.into_iter().map(|r| (r.source_id.clone(), r)).collect())
    }
}

/// The lease row of `source_id` through the request's loader.
pub async fn load_lease(
    ctx: &Context<'_>,
    source_id: &str,
) -> async_graphql::Result<Option<source_lease::Model>> {
    let loader = ctx
        .data::<DataLoader<LeaseLoader>>()
        .map_err(|_| internal("lease loader", "not registered"))?;
    loader
        .load_one(source_id.to_string())
        .await
        .map_err(|e| internal("reading a source lease", e))
}
