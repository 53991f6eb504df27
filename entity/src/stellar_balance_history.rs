//! `stellar_balance_history`: balance changes, one per holding (account and asset) and
//! operation.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One balance change caused by one operation.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "stellar_balance_history")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The `(account, asset)` pair: `stellar_holding.id` (unique with `operation_id`).
    pub holding_id: i64,
    /// Account whose balance changed.
    #[sea_orm(column_type = "Text")]
    pub account_id: String,
    /// Asset code, `XLM` for native.
    #[sea_orm(column_type = "Text")]
    pub asset_code: String,
    /// Asset issuer, empty for native.
    #[sea_orm(column_type = "Text")]
    pub asset_issuer: String,
    /// Operation causing the change.
    pub operation_id: i64,
    /// Ledger sequence, when known.
    pub ledger: Option<i64>,
    /// When the change happened.
    pub at: DateTimeUtc,
    /// Signed change in stroops.
    pub delta_stroops: i64,
    /// Balance after the change, in stroops, when known.
    pub balance_stroops: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
