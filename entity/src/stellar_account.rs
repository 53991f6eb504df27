//! `stellar_account`: Stellar accounts known to the indexer.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One Stellar account.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "stellar_account")]
pub struct Model {
    /// `G...` account id.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub account_id: String,
    /// Whether the account's operations are indexed.
    pub watched: bool,
    /// Account sequence number.
    pub sequence: Option<i64>,
    /// Number of subentries (trustlines, offers, ...).
    pub subentry_count: Option<i32>,
    /// Ledger of the last modification.
    pub last_modified_ledger: Option<i64>,
    /// Time of the last modification.
    pub last_modified_at: Option<DateTimeUtc>,
    /// How the account was found (config, payment, admin, ...).
    #[sea_orm(column_type = "Text", nullable)]
    pub discovered_via: Option<String>,
    /// Row creation time.
    pub created_at: DateTimeUtc,
    /// Last update time.
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
