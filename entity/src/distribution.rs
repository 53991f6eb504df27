//! `distribution`: a planned or executed token distribution.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One distribution of an asset from a source account to recipients.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "distribution")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Name of the distribution.
    #[sea_orm(column_type = "Text")]
    pub name: String,
    /// Asset code distributed.
    #[sea_orm(column_type = "Text")]
    pub asset_code: String,
    /// Asset issuer.
    #[sea_orm(column_type = "Text")]
    pub asset_issuer: String,
    /// Paying account.
    #[sea_orm(column_type = "Text")]
    pub source_account: String,
    /// Total budget in stroops.
    pub total_budget_stroops: i64,
    /// `draft` | `approved` | `executing` | `completed` | `failed` | `cancelled`.
    #[sea_orm(column_type = "Text")]
    pub status: String,
    /// Whether the distribution rules passed, once evaluated.
    pub rules_passed: Option<bool>,
    /// Detailed rule evaluation.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub rules_result: Option<Json>,
    /// Creator.
    #[sea_orm(column_type = "Text", nullable)]
    pub created_by: Option<String>,
    /// Row creation time.
    pub created_at: DateTimeUtc,
    /// Last update time.
    pub updated_at: DateTimeUtc,
}

/// Relations of a distribution.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// Recipients of the distribution.
    #[sea_orm(has_many = "super::distribution_recipient::Entity")]
    Recipient,
    /// Status transitions of the distribution.
    #[sea_orm(has_many = "super::distribution_event::Entity")]
    Event,
}

impl Related<super::distribution_recipient::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Recipient.def()
    }
}

impl Related<super::distribution_event::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Event.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
