//! `balance_reconciliation`: the last balance check of each account and asset by a source.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One asset of one account, as last compared by a source.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "balance_reconciliation")]
pub struct Model {
    /// Source id (`stellar`, `stellar:rpc`).
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub source: String,
    /// `G...` account id.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub account_id: String,
    /// Asset code (`XLM` for lumens).
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub asset_code: String,
    /// Asset issuer (empty for lumens).
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub asset_issuer: String,
    /// The upstream's balance in stroops (Horizon's account record, or the ledger entry).
    pub expected_stroops: i64,
    /// The balance the source built from operations or events, in stroops.
    pub actual_stroops: i64,
    /// `expected == actual`.
    pub agrees: bool,
    /// When the check ran.
    pub checked_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
