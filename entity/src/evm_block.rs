//! `evm_block`: indexed EVM block headers (for reorg detection).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One EVM block header.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "evm_block")]
pub struct Model {
    /// Chain name, e.g. `sepolia`.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub chain: String,
    /// Block number.
    #[sea_orm(primary_key, auto_increment = false)]
    pub number: i64,
    /// Block hash (0x hex).
    #[sea_orm(column_type = "Text")]
    pub hash: String,
    /// Parent hash (0x hex).
    #[sea_orm(column_type = "Text")]
    pub parent_hash: String,
    /// Block timestamp.
    pub timestamp: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
