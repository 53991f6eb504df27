//! `evm_event`: decoded EVM contract events (logs).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One decoded log.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "evm_event")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Chain name.
    #[sea_orm(column_type = "Text")]
    pub chain: String,
    /// Block number.
    pub block_number: i64,
    /// Block hash (0x hex).
    #[sea_orm(column_type = "Text")]
    pub block_hash: String,
    /// Transaction hash (0x hex).
    #[sea_orm(column_type = "Text")]
    pub tx_hash: String,
    /// Log index within the block.
    pub log_index: i32,
    /// Emitting contract address (0x hex).
    #[sea_orm(column_type = "Text")]
    pub contract: String,
    /// Event name, e.g. `Registered`.
    #[sea_orm(column_type = "Text")]
    pub name: String,
    /// Decoded arguments (uint256 as decimal strings).
    #[sea_orm(column_type = "JsonBinary")]
    pub args: Json,
    /// Row creation time.
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
