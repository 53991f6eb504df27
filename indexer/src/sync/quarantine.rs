//! The decode-failure policy, one for all sources: a record that cannot be stored as the
//! upstream served it (a missing required field, an amount that is not an amount, a log
//! that does not decode) is a permanent data error on that record. The source puts it in
//! its step's [`super::Progress::quarantined`]; the engine stores it in the `quarantine`
//! table in the same transaction as the cursor that moves past it, so the record is never
//! lost and never blocks the records after it. Transient errors (HTTP, timeouts, a page
//! that is not JSON) are not quarantined: they are retried with the shared backoff.

use std::fmt;

use chrono::Utc;
use orrery_entity::quarantine;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, Set};

/// One record that cannot be stored: what it is, where it sits upstream, the record as
/// served and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// What the record is (`stellar.operation`, `evm.log`, ...): names its decoder.
    pub kind: &'static str,
    /// Where it sits upstream (an operation id, `block:tx:log`, an event id).
    pub position: String,
    /// The record as served (JSON text), so it can be replayed.
    pub payload: String,
    /// Why it was refused.
    pub error: String,
}

impl Quarantined {
    /// A record of `kind` at `position` refused for `error`.
    pub fn new(
        kind: &'static str,
        position: impl Into<String>,
        payload: &serde_json::Value,
        error: impl fmt::Display,
    ) -> Self {
        Self {
            kind,
            position: position.into(),
            payload: payload.to_string(),
            error: error.to_string(),
        }
    }
}

impl fmt::Display for Quarantined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.kind, self.position, self.error)
    }
}

/// Stores `records` of `source` (a record already quarantined is left as it is); returns
/// how many were new.
pub async fn store<C: ConnectionTrait>(
    db: &C,
    source: &str,
    records: &[Quarantined],
) -> Result<u64, DbErr> {
    if records.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    let rows = records.iter().map(|q| quarantine::ActiveModel {
        source: Set(source.to_string()),
        kind: Set(q.kind.to_string()),
        position: Set(q.position.clone()),
        payload: Set(q.payload.clone()),
        error: Set(q.error.chars().take(2000).collect()),
        quarantined_at: Set(now),
        replayed_at: Set(None),
        replay_error: Set(None),
        ..Default::default()
    });
    let inserted = quarantine::Entity::insert_many(rows)
        .on_conflict_do_nothing_on([
            quarantine::Column::Source,
            quarantine::Column::Kind,
            quarantine::Column::Position,
        ])
        .exec_without_returning(db)
        .await?;
    Ok(match inserted {
        sea_orm::TryInsertResult::Inserted(n) => n,
        _ => 0,
    })
}

/// Deletes the pending records of `source` and `kind` whose height (read from the position
/// by `height_of`) is above `to`: a reorg orphaned the block they came from, and the
/// canonical chain will be read again.
pub async fn forget_above<C: ConnectionTrait>(
    db: &C,
    source: &str,
    kind: &str,
    to: i64,
    height_of: fn(&str) -> Option<i64>,
) -> Result<u64, DbErr> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let pending = quarantine::Entity::find()
        .filter(quarantine::Column::Source.eq(source))
        .filter(quarantine::Column::Kind.eq(kind))
        .filter(quarantine::Column::ReplayedAt.is_null())
        .all(db)
        .await?;
    let orphaned: Vec<i64> = pending
        .iter()
        .filter(|q| height_of(&q.position).is_some_and(|h| h > to))
        .map(|q| q.id)
        .collect();
    if orphaned.is_empty() {
        return Ok(0);
    }
    let r = quarantine::Entity::delete_many()
        .filter(quarantine::Column::Id.is_in(orphaned))
        .exec(db)
        .await?;
    Ok(r.rows_affected)
}
