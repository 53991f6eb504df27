//! `quarantine`: upstream records that could not be stored as they are (a permanent data
//! error on one record), kept with their raw payload so they can be replayed after a fix.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One quarantined record.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "quarantine")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Source id (`stellar`, `evm:sepolia`, ...).
    #[sea_orm(column_type = "Text")]
    pub source: String,
    /// What the record is (`stellar.operation`, `evm.log`, ...): names its decoder.
    #[sea_orm(column_type = "Text")]
    pub kind: String,
    /// Where the record sits upstream (an operation id, `block:tx:log`, ...).
    #[sea_orm(column_type = "Text")]
    pub position: String,
    /// The record as the upstream served it (JSON text).
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    /// Why it could not be stored.
    #[sea_orm(column_type = "Text")]
    pub error: String,
    /// When it was quarantined.
    pub quarantined_at: DateTimeUtc,
    /// When a replay stored it (then it is no longer pending).
    pub replayed_at: Option<DateTimeUtc>,
    /// Why the last replay failed, if it did.
    #[sea_orm(column_type = "Text", nullable)]
    pub replay_error: Option<String>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
