//! `source_command`: an operator's request to a running source (rewind, restart).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One command; pending while `applied_at` is null.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "source_command")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The source it targets.
    #[sea_orm(column_type = "Text")]
    pub source_id: String,
    /// `rewind` or `restart`.
    #[sea_orm(column_type = "Text")]
    pub command: String,
    /// Command arguments (`{"height": .., "cursor": ..}` for a rewind).
    #[sea_orm(column_type = "JsonBinary")]
    pub arguments: Json,
    /// Who asked.
    #[sea_orm(column_type = "Text")]
    pub requested_by: String,
    /// When it was asked.
    pub created_at: DateTimeUtc,
    /// When a supervisor applied it.
    pub applied_at: Option<DateTimeUtc>,
    /// What happened.
    #[sea_orm(column_type = "Text", nullable)]
    pub result: Option<String>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
