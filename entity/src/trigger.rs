//! `trigger`: a stored rule matching decoded EVM events to an action sink, with the state of
//! its circuit breaker.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One trigger.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "trigger")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Human name.
    #[sea_orm(column_type = "Text")]
    pub name: String,
    /// Chain name the trigger watches.
    #[sea_orm(column_type = "Text")]
    pub chain: String,
    /// Emitting contract (0x hex, lower case); None for any contract.
    #[sea_orm(column_type = "Text", nullable)]
    pub contract: Option<String>,
    /// Event name, e.g. `NewFeedback`.
    #[sea_orm(column_type = "Text")]
    pub event_name: String,
    /// Conditions on the decoded arguments (JSON array of `{field, op, value}`).
    #[sea_orm(column_type = "JsonBinary")]
    pub conditions: Json,
    /// Sink kind (`webhook`).
    #[sea_orm(column_type = "Text")]
    pub sink: String,
    /// Webhook URL.
    #[sea_orm(column_type = "Text")]
    pub webhook_url: String,
    /// HMAC-SHA256 secret signing webhook bodies (never shown).
    #[sea_orm(column_type = "Text")]
    #[serde(skip_serializing)]
    pub secret: String,
    /// Whether new events are matched.
    pub enabled: bool,
    /// Attempts before an action is dead-lettered.
    pub max_attempts: i32,
    /// Consecutive failures opening the breaker.
    pub failure_threshold: i32,
    /// Seconds an open breaker waits before a probe.
    pub recovery_secs: i64,
    /// `closed` | `open` | `half_open`.
    #[sea_orm(column_type = "Text")]
    pub breaker_state: String,
    /// Consecutive failures counted by the breaker.
    pub breaker_failures: i32,
    /// When the breaker last opened.
    pub breaker_opened_at: Option<DateTimeUtc>,
    /// Last failure seen by the breaker.
    #[sea_orm(column_type = "Text", nullable)]
    pub breaker_last_error: Option<String>,
    /// Creation time.
    pub created_at: DateTimeUtc,
    /// Last change.
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
