//! `source`: sync state of each indexer source (one row per source id).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One indexer source and where its sync stands.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "source")]
pub struct Model {
    /// Source id, e.g. `stellar`, `evm:sepolia`, `bitcoin`, `exchange`.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub id: String,
    /// `stellar` | `evm` | `bitcoin` | `exchange`.
    #[sea_orm(column_type = "Text")]
    pub kind: String,
    /// Human-readable name.
    #[sea_orm(column_type = "Text")]
    pub name: String,
    /// EVM chain id, when the source is an EVM chain.
    pub chain_id: Option<i64>,
    /// Latest height known upstream.
    pub head_height: Option<i64>,
    /// Latest height fully indexed.
    pub indexed_height: Option<i64>,
    /// Opaque resume cursor (paging token, block hash, ...).
    #[sea_orm(column_type = "Text", nullable)]
    pub cursor: Option<String>,
    /// `idle` | `syncing` | `synced` | `error` | `paused`.
    #[sea_orm(column_type = "Text")]
    pub status: String,
    /// Consecutive errors since the last success.
    pub error_count: i32,
    /// Last error message.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// Last successful sync step.
    pub last_sync_at: Option<DateTimeUtc>,
    /// When `head_height` was last refreshed.
    pub head_updated_at: Option<DateTimeUtc>,
    /// Height the current backfill started from (cleared once caught up); with
    /// `indexed_height` and `head_height` it gives the backfill's progress.
    pub backfill_from: Option<i64>,
    /// Estimated seconds until the backfill reaches the head (engine's measured rate).
    pub eta_seconds: Option<i64>,
    /// Paused by an operator.
    pub paused: bool,
    /// Row creation time.
    pub created_at: DateTimeUtc,
    /// Last update time.
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
