//! `bitcoin_block`: indexed Bitcoin block headers.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One Bitcoin block header.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "bitcoin_block")]
pub struct Model {
    /// Block height.
    #[sea_orm(primary_key, auto_increment = false)]
    pub height: i64,
    /// Block hash (hex).
    #[sea_orm(unique, column_type = "Text")]
    pub hash: String,
    /// Previous block hash (hex).
    #[sea_orm(column_type = "Text")]
    pub prev_hash: String,
    /// Block time.
    pub time: DateTimeUtc,
    /// Number of transactions.
    pub tx_count: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
