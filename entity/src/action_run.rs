//! `action_run`: the durable queue of trigger actions (one row per trigger and event).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One queued or finished action.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "action_run")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The trigger that matched.
    pub trigger_id: i64,
    /// The event's unique key: `chain:blockHash:logIndex`.
    #[sea_orm(column_type = "Text")]
    pub event_key: String,
    /// sha256(trigger id + event key), hex; unique; sent as `Idempotency-Key`.
    #[sea_orm(column_type = "Text", unique)]
    pub idempotency_key: String,
    /// The body delivered.
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    /// `pending` | `running` | `succeeded` | `failed` (retry scheduled) | `dead`.
    #[sea_orm(column_type = "Text")]
    pub status: String,
    /// Attempts started.
    pub attempts: i32,
    /// Not run before this time.
    pub next_attempt_at: DateTimeUtc,
    /// Worker holding the row while running.
    #[sea_orm(column_type = "Text", nullable)]
    pub claimed_by: Option<String>,
    /// When the running attempt was claimed (lease start).
    pub claimed_at: Option<DateTimeUtc>,
    /// Last failure.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// HTTP status of the last answer.
    pub response_status: Option<i32>,
    /// Creation time (when the event committed).
    pub created_at: DateTimeUtc,
    /// Last change.
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
