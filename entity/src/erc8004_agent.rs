//! `erc8004_agent`: ERC-8004 identity registry agents.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One registered agent.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "erc8004_agent")]
pub struct Model {
    /// Chain name.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub chain: String,
    /// Agent id (uint256 as a decimal string).
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub agent_id: String,
    /// Current owner address.
    #[sea_orm(column_type = "Text")]
    pub owner: String,
    /// Registration file URI.
    #[sea_orm(column_type = "Text", nullable)]
    pub uri: Option<String>,
    /// On-chain metadata entries.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub metadata: Option<Json>,
    /// Block of registration.
    pub registered_block: i64,
    /// Block of the last change.
    pub updated_block: i64,
    /// Last update time.
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
