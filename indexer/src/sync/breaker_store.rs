//! Persists circuit-breaker state in the `circuit_breaker` table so it survives restarts and
//! every replica (and GraphQL) can read it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orrery_entity::circuit_breaker;
use sea_orm::{ActiveModelTrait, DatabaseConnection, DbErr, EntityTrait, Set};

use crate::upstream::{BreakerSnapshot, BreakerState, CircuitBreaker};

/// How often a tracked breaker looks for an operator reset.
const RESET_POLL: Duration = Duration::from_secs(2);

/// Writes `snap` (insert or update); returns the `updated_at` written.
pub async fn save(db: &DatabaseConnection, snap: &BreakerSnapshot) -> Result<DateTime<Utc>, DbErr> {
    let now = Utc::now();
    let row = circuit_breaker::ActiveModel {
        name: Set(snap.name.clone()),
        state: Set(snap.state.as_str().to_string()),
        failure_count: Set(snap.failure_count.min(i32::MAX as u32) as i32),
        opened_at: Set(snap.opened_at),
        last_failure_at: Set(snap.last_error.as_ref().map(|_| Utc::now())),
        last_error: Set(snap.last_error.clone()),
        updated_at: Set(now),
    };
    // One upsert: replicas starting together (each restoring its breaker) never collide.
    use circuit_breaker::Column as C;
    circuit_breaker::Entity::insert(row)
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(C::Name)
                .update_columns([
                    C::State,
                    C::FailureCount,
                    C::OpenedAt,
                    C::LastFailureAt,
                    C::LastError,
                    C::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(now)
}

/// Restores `breaker` from its stored row (if any), then keeps the row current on every
/// state change, and applies operator resets (a row set back to `closed` by the
/// `resetCircuitBreaker` mutation) to the live breaker.
pub async fn restore_and_track(
    db: DatabaseConnection,
    breaker: &Arc<CircuitBreaker>,
) -> Result<(), DbErr> {
    if let Some(row) = circuit_breaker::Entity::find_by_id(breaker.name().to_string())
        .one(&db)
        .await?
    {
        if let Ok(state) = row.state.parse::<BreakerState>() {
            breaker.restore(&BreakerSnapshot {
                name: row.name,
                state,
                failure_count: row.failure_count.max(0) as u32,
                opened_at: row.opened_at,
                last_error: row.last_error,
            });
        }
    }
    let mut written = save(&db, &breaker.snapshot()).await?;
    let mut rx = breaker.subscribe();
    let breaker = Arc::clone(breaker);
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(RESET_POLL);
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let snap = rx.borrow_and_update().clone();
                    match save(&db, &snap).await {
                        Ok(at) => written = at,
                        Err(e) => tracing::warn!(breaker = %snap.name, error = %e, "cannot persist breaker state"),
                    }
                }
                _ = poll.tick() => {
                    let Ok(Some(row)) = circuit_breaker::Entity::find_by_id(breaker.name().to_string()).one(&db).await else {
                        continue;
                    };
                    if row.updated_at > written && row.state == "closed" && breaker.state() != BreakerState::Closed {
                        tracing::info!(breaker = %row.name, "circuit breaker reset by an operator");
                        written = row.updated_at;
                        breaker.restore(&BreakerSnapshot {
                            name: row.name,
                            state: BreakerState::Closed,
                            failure_count: 0,
                            opened_at: None,
                            last_error: row.last_error,
                        });
                    }
                }
            }
        }
    });
    Ok(())
}

/// Marks the stored breaker `name` closed (the live breaker follows within a few seconds).
/// Returns the row before the reset, or `None` when no such breaker exists.
pub async fn request_reset<C: sea_orm::ConnectionTrait>(
    db: &C,
    name: &str,
    actor: &str,
) -> Result<Option<(circuit_breaker::Model, circuit_breaker::Model)>, DbErr> {
    let Some(row) = circuit_breaker::Entity::find_by_id(name.to_string())
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let mut am: circuit_breaker::ActiveModel = row.clone().into();
    am.state = Set("closed".to_string());
    am.failure_count = Set(0);
    am.opened_at = Set(None);
    am.last_error = Set(Some(format!("reset by {actor}")));
    am.updated_at = Set(Utc::now());
    let after = am.update(db).await?;
    Ok(Some((row, after)))
}
