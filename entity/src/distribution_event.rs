//! `distribution_event`: status transitions of a distribution.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One status transition.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "distribution_event")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Parent distribution.
    pub distribution_id: i64,
    /// Previous status (none on creation).
    #[sea_orm(column_type = "Text", nullable)]
    pub from_status: Option<String>,
    /// New status.
    #[sea_orm(column_type = "Text")]
    pub to_status: String,
    /// Why the transition happened.
    #[sea_orm(column_type = "Text", nullable)]
    pub reason: Option<String>,
    /// Who caused the transition.
    #[sea_orm(column_type = "Text", nullable)]
    pub actor: Option<String>,
    /// When the transition happened.
    pub at: DateTimeUtc,
}

/// Relations of a distribution event.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The parent distribution.
    #[sea_orm(
        belongs_to = "super::distribution::Entity",
        from = "Column::DistributionId",
        to = "super::distribution::Column::Id",
        on_update = "Cascade",
        on_delete = "Cascade"
    )]
    Distribution,
}

impl Related<super::distribution::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Distribution.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
