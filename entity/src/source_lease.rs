//! `source_lease`: the replica that runs a source (PostgreSQL scale-out), with its fencing
//! token and expiry.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One source's lease.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "source_lease")]
pub struct Model {
    /// The source id (`evm:sepolia`, `stellar`, ...).
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub source_id: String,
    /// Replica id of the holder.
    #[sea_orm(column_type = "Text")]
    pub holder: String,
    /// Fencing token: grows by one at every change of holder.
    pub token: i64,
    /// When the current holder took the lease.
    pub acquired_at: DateTimeUtc,
    /// The holder's last renewal.
    pub renewed_at: DateTimeUtc,
    /// When the lease lapses unless renewed.
    pub expires_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
