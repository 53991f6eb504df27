//! `stellar_transaction`: indexed Stellar transactions.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One Stellar transaction.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "stellar_transaction")]
pub struct Model {
    /// Transaction hash (hex).
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub hash: String,
    /// Source account.
    #[sea_orm(column_type = "Text")]
    pub source_account: String,
    /// Ledger sequence.
    pub ledger: i64,
    /// Close time of the ledger.
    pub created_at: DateTimeUtc,
    /// Fee charged, in stroops.
    pub fee_charged: i64,
    /// Number of operations.
    pub operation_count: i32,
    /// Whether the transaction succeeded.
    pub successful: bool,
    /// `none` | `text` | `id` | `hash` | `return`.
    #[sea_orm(column_type = "Text", nullable)]
    pub memo_type: Option<String>,
    /// Memo value.
    #[sea_orm(column_type = "Text", nullable)]
    pub memo: Option<String>,
    /// Horizon paging token.
    #[sea_orm(column_type = "Text")]
    pub paging_token: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
