//! `erc8004_feedback`: ERC-8004 reputation registry feedback.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One feedback given to an agent.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "erc8004_feedback")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Chain name.
    #[sea_orm(column_type = "Text")]
    pub chain: String,
    /// Agent id (uint256 as a decimal string).
    #[sea_orm(column_type = "Text")]
    pub agent_id: String,
    /// Client giving the feedback.
    #[sea_orm(column_type = "Text")]
    pub client_address: String,
    /// Feedback index per client (uint64 as a decimal string).
    #[sea_orm(column_type = "Text", nullable)]
    pub feedback_index: Option<String>,
    /// Score (0..=100).
    pub score: i32,
    /// First tag.
    #[sea_orm(column_type = "Text", nullable)]
    pub tag1: Option<String>,
    /// Second tag.
    #[sea_orm(column_type = "Text", nullable)]
    pub tag2: Option<String>,
    /// Off-chain feedback file URI.
    #[sea_orm(column_type = "Text", nullable)]
    pub uri: Option<String>,
    /// Hash of the feedback file.
    #[sea_orm(column_type = "Text", nullable)]
    pub file_hash: Option<String>,
    /// Whether the client revoked the feedback.
    pub revoked: bool,
    /// Block of the feedback.
    pub block_number: i64,
    /// Transaction hash.
    #[sea_orm(column_type = "Text")]
    pub tx_hash: String,
    /// Log index.
    pub log_index: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
