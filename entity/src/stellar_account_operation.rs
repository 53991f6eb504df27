//! `stellar_account_operation`: which watched account an operation was indexed for.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Link between a watched account and one of its operations.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "stellar_account_operation")]
pub struct Model {
    /// Watched account.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub account_id: String,
    /// Horizon operation id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub operation_id: i64,
    /// Close time of the operation's ledger.
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
