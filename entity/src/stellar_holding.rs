//! `stellar_holding`: one `(account, asset)` pair with balance history, named by an integer
//! id that the history rows carry (a compact unique key for them).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One account's holding of one asset.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "stellar_holding")]
pub struct Model {
    /// Auto-increment id, `stellar_balance_history.holding_id`.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The holder (an account, or a `B...`/`L...`/`C...` address found in token events).
    #[sea_orm(column_type = "Text")]
    pub account_id: String,
    /// Asset code, `XLM` for native.
    #[sea_orm(column_type = "Text")]
    pub asset_code: String,
    /// Asset issuer, empty for native.
    #[sea_orm(column_type = "Text")]
    pub asset_issuer: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
