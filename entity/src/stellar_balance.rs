//! `stellar_balance`: current balance of an account in one asset.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Current balance of one account in one asset.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "stellar_balance")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Account holding the balance.
    #[sea_orm(column_type = "Text")]
    pub account_id: String,
    /// `native` | `credit_alphanum4` | `credit_alphanum12` | ...
    #[sea_orm(column_type = "Text")]
    pub asset_type: String,
    /// Asset code, `XLM` for native.
    #[sea_orm(column_type = "Text")]
    pub asset_code: String,
    /// Asset issuer, empty for native.
    #[sea_orm(column_type = "Text")]
    pub asset_issuer: String,
    /// Balance in stroops.
    pub balance_stroops: i64,
    /// Trustline limit in stroops.
    pub limit_stroops: Option<i64>,
    /// Ledger of the last modification.
    pub last_modified_ledger: Option<i64>,
    /// Last update time.
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
