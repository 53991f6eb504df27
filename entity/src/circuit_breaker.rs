//! `circuit_breaker`: persisted state of each upstream circuit breaker.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One named circuit breaker.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "circuit_breaker")]
pub struct Model {
    /// Breaker name (usually the upstream).
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub name: String,
    /// `closed` | `open` | `half_open`.
    #[sea_orm(column_type = "Text")]
    pub state: String,
    /// Consecutive failures.
    pub failure_count: i32,
    /// When the breaker last opened.
    pub opened_at: Option<DateTimeUtc>,
    /// When the last failure happened.
    pub last_failure_at: Option<DateTimeUtc>,
    /// Last failure message.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// Last update time.
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
