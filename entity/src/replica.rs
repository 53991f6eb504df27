//! `replica`: heartbeats of the running `orrery serve` processes on a shared database.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One replica.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "replica")]
pub struct Model {
    /// Replica id (`ORRERY_REPLICA_ID`, else `host:pid:random`).
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub id: String,
    /// `all`, `indexer` or `api`.
    #[sea_orm(column_type = "Text")]
    pub role: String,
    /// Process start.
    pub started_at: DateTimeUtc,
    /// Last heartbeat.
    pub seen_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
