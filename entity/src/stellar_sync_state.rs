//! `stellar_sync_state`: per-account Stellar sync state.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Sync state of one watched account.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "stellar_sync_state")]
pub struct Model {
    /// `G...` account id.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub account_id: String,
    /// Last ledger synced.
    pub last_ledger: Option<i64>,
    /// Horizon paging token to resume from.
    #[sea_orm(column_type = "Text", nullable)]
    pub cursor: Option<String>,
    /// Last successful sync.
    pub last_sync_at: Option<DateTimeUtc>,
    /// `synced` | `syncing` | `error`.
    #[sea_orm(column_type = "Text")]
    pub status: String,
    /// `incremental` | `full` | `targeted`.
    #[sea_orm(column_type = "Text")]
    pub mode: String,
    /// Consecutive errors.
    pub error_count: i32,
    /// Last error message.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// Bumped by every full resync.
    pub generation: i32,
    /// Last update time.
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
