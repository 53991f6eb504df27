//! `config_entry`: database-backed configuration values.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One configuration key and its textual value.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "config_entry")]
pub struct Model {
    /// Dotted key, e.g. `sync.batch_size`.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub key: String,
    /// Value in its textual form, interpreted per `value_type`.
    #[sea_orm(column_type = "Text")]
    pub value: String,
    /// `string` | `integer` | `decimal` | `boolean` | `json` | `duration`.
    #[sea_orm(column_type = "Text")]
    pub value_type: String,
    /// What the key controls.
    #[sea_orm(column_type = "Text", nullable)]
    pub description: Option<String>,
    /// Last update time.
    pub updated_at: DateTimeUtc,
    /// Who made the last update.
    #[sea_orm(column_type = "Text", nullable)]
    pub updated_by: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
