//! Persists circuit-breaker state in the `circuit_breaker` table so it survives restarts and
//! every replica (and GraphQL) can read it.

use chrono::Utc;
use orrery_entity::circuit_breaker;
use sea_orm::{ActiveModelTrait, DatabaseConnection, DbErr, EntityTrait, Set};

use crate::upstream::{BreakerSnapshot, BreakerState, CircuitBreaker};

/// Writes `snap` (insert or update).
pub async fn save(db: &DatabaseConnection, snap: &BreakerSnapshot) -> Result<(), DbErr> {
    let row = circuit_breaker::ActiveModel {
        name: Set(snap.name.clone()),
        state: Set(snap.state.as_str().to_string()),
        failure_count: Set(snap.failure_count.min(i32::MAX as u32) as i32),
        opened_at: Set(snap.opened_at),
        last_failure_at: Set(snap.last_error.as_ref().map(|_| Utc::now())),
        last_error: Set(snap.last_error.clone()),
        updated_at: Set(Utc::now()),
    };
    if circuit_breaker::Entity::find_by_id(snap.name.clone())
        .one(db)
        .await?
        .is_some()
    {
        row.update(db).await?;
    } else {
        row.insert(db).await?;
    }
    Ok(())
}

/// Restores `breaker` from its stored row (if any), then keeps the row current on every
/// state change until the breaker is dropped.
pub async fn restore_and_track(
    db: DatabaseConnection,
    breaker: &CircuitBreaker,
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
    save(&db, &breaker.snapshot()).await?;
    let mut rx = breaker.subscribe();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let snap = rx.borrow_and_update().clone();
            if let Err(e) = save(&db, &snap).await {
                tracing::warn!(breaker = %snap.name, error = %e, "cannot persist breaker state");
            }
        }
    });
    Ok(())
}
