//! `stellar_operation`: indexed Stellar operations.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One Stellar operation.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "stellar_operation")]
pub struct Model {
    /// Horizon operation id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    /// Horizon paging token.
    #[sea_orm(column_type = "Text")]
    pub paging_token: String,
    /// Hash of the enclosing transaction.
    #[sea_orm(column_type = "Text")]
    pub transaction_hash: String,
    /// Ledger sequence, when known.
    pub ledger: Option<i64>,
    /// Close time of the ledger.
    pub created_at: DateTimeUtc,
    /// Horizon operation type, e.g. `payment`.
    #[sea_orm(column_type = "Text")]
    pub op_type: String,
    /// Operation source account.
    #[sea_orm(column_type = "Text")]
    pub source_account: String,
    /// Sender, for payment-like operations.
    #[sea_orm(column_type = "Text", nullable)]
    pub from_account: Option<String>,
    /// Receiver, for payment-like operations.
    #[sea_orm(column_type = "Text", nullable)]
    pub to_account: Option<String>,
    /// `native` | `credit_alphanum4` | `credit_alphanum12`.
    #[sea_orm(column_type = "Text", nullable)]
    pub asset_type: Option<String>,
    /// Asset code.
    #[sea_orm(column_type = "Text", nullable)]
    pub asset_code: Option<String>,
    /// Asset issuer.
    #[sea_orm(column_type = "Text", nullable)]
    pub asset_issuer: Option<String>,
    /// Amount in stroops.
    pub amount_stroops: Option<i64>,
    /// Whether the enclosing transaction succeeded.
    pub successful: bool,
    /// Full Horizon record.
    #[sea_orm(column_type = "JsonBinary")]
    pub details: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
