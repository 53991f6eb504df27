//! `audit_log`: one row per administrative action.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One audited action.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// When the action happened.
    pub at: DateTimeUtc,
    /// Who acted (token subject).
    #[sea_orm(column_type = "Text")]
    pub actor: String,
    /// Role the actor held.
    #[sea_orm(column_type = "Text")]
    pub role: String,
    /// Action name, e.g. the mutation name.
    #[sea_orm(column_type = "Text")]
    pub action: String,
    /// Object acted upon.
    #[sea_orm(column_type = "Text", nullable)]
    pub target: Option<String>,
    /// Arguments of the action.
    #[sea_orm(column_type = "JsonBinary")]
    pub arguments: Json,
    /// State before the action.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub before: Option<Json>,
    /// State after the action.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub after: Option<Json>,
    /// Client address.
    #[sea_orm(column_type = "Text", nullable)]
    pub client_addr: Option<String>,
    /// `ok` | `error`.
    #[sea_orm(column_type = "Text")]
    pub outcome: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
