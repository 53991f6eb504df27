//! `erc8004_validation`: ERC-8004 validation registry requests and responses.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One validation request and its response, if any.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "erc8004_validation")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Chain name.
    #[sea_orm(column_type = "Text")]
    pub chain: String,
    /// Request hash (0x hex).
    #[sea_orm(column_type = "Text")]
    pub request_hash: String,
    /// Agent id (uint256 as a decimal string).
    #[sea_orm(column_type = "Text")]
    pub agent_id: String,
    /// Validator address.
    #[sea_orm(column_type = "Text")]
    pub validator_address: String,
    /// Request URI.
    #[sea_orm(column_type = "Text", nullable)]
    pub request_uri: Option<String>,
    /// Response (0..=100), once given.
    pub response: Option<i32>,
    /// Response URI.
    #[sea_orm(column_type = "Text", nullable)]
    pub response_uri: Option<String>,
    /// Response tag.
    #[sea_orm(column_type = "Text", nullable)]
    pub tag: Option<String>,
    /// Block of the request.
    pub requested_block: i64,
    /// Block of the response.
    pub responded_block: Option<i64>,
    /// Transaction hash of the latest event.
    #[sea_orm(column_type = "Text")]
    pub tx_hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
