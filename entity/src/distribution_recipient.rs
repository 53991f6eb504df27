//! `distribution_recipient`: one recipient of a distribution.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One recipient and its payment state.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "distribution_recipient")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Parent distribution.
    pub distribution_id: i64,
    /// Receiving account.
    #[sea_orm(column_type = "Text")]
    pub account_id: String,
    /// Amount due in stroops.
    pub amount_stroops: i64,
    /// `pending` | `paid` | `failed`.
    #[sea_orm(column_type = "Text")]
    pub status: String,
    /// Why the recipient is included or failed.
    #[sea_orm(column_type = "Text", nullable)]
    pub reason: Option<String>,
    /// Horizon id of the payment operation.
    pub payment_operation_id: Option<i64>,
    /// Hash of the payment transaction.
    #[sea_orm(column_type = "Text", nullable)]
    pub transaction_hash: Option<String>,
    /// When the payment was confirmed.
    pub paid_at: Option<DateTimeUtc>,
}

/// Relations of a distribution recipient.
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
