//! Retention of finished trigger actions (`triggers.retention_days`), on the run's backend
//! (SQLite, or PostgreSQL with `ORRERY_TEST_PG_URL`): the batched prune deletes exactly the
//! finished rows older than the cutoff, and a running server prunes on its own with the
//! `[triggers]` settings of its config file.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{base_env, Server, TestDb};
use orrery_entity::{action_run, trigger};
use orrery_indexer::triggers::{prune_finished, status};
use orrery_migration::{Migrator, MigratorTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Set,
};

async fn add_trigger(db: &DatabaseConnection) -> i64 {
    let now = Utc::now();
    trigger::ActiveModel {
        name: Set("retention".into()),
        chain: Set("c".into()),
        contract: Set(None),
        event_name: Set("E".into()),
        conditions: Set(serde_json::json!([])),
        sink: Set("webhook".into()),
        webhook_url: Set("http://127.0.0.1:9/".into()),
        secret: Set("secret".into()),
        // Disabled: the server's workers must not deliver (and so update) the queued rows.
        enabled: Set(false),
        max_attempts: Set(3),
        failure_threshold: Set(5),
        recovery_secs: Set(30),
        breaker_state: Set("closed".into()),
        breaker_failures: Set(0),
        breaker_opened_at: Set(None),
        breaker_last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap()
    .id
}

/// Inserts `n` rows of `status` last updated at `at`; returns their ids.
async fn add_runs(
    db: &DatabaseConnection,
    trigger: i64,
    st: &str,
    at: DateTime<Utc>,
    n: usize,
) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let key = format!("{st}-{}-{}", at.timestamp_micros(), ids.len());
        let row = action_run::ActiveModel {
            trigger_id: Set(trigger),
            event_key: Set(format!("c:0x0:{key}")),
            idempotency_key: Set(key),
            payload: Set(serde_json::json!({})),
            status: Set(st.into()),
            attempts: Set(1),
            next_attempt_at: Set(at),
            created_at: Set(at),
            updated_at: Set(at),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
        ids.push(row.id);
    }
    ids
}

async fn remaining(db: &DatabaseConnection) -> Vec<i64> {
    action_run::Entity::find()
        .order_by_asc(action_run::Column::Id)
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

#[tokio::test]
async fn prune_deletes_only_old_finished_rows_in_batches() {
    let tdb = TestDb::new().await;
    let db = tdb.connect().await;
    Migrator::up(&db, None).await.unwrap();
    let t = add_trigger(&db).await;
    let now = Utc::now();
    let old = now - chrono::Duration::days(40);
    let cutoff = now - chrono::Duration::days(30);
    // Due: 7 succeeded and 4 dead rows older than the cutoff (more than two batches of 4).
    let mut due = add_runs(&db, t, status::SUCCEEDED, old, 7).await;
    due.extend(add_runs(&db, t, status::DEAD, old, 4).await);
    // Kept: finished but recent, and old rows that are not finished.
    let mut kept = add_runs(&db, t, status::SUCCEEDED, now, 2).await;
    kept.extend(
        add_runs(
            &db,
            t,
            status::DEAD,
            cutoff + chrono::Duration::minutes(1),
            1,
        )
        .await,
    );
    for st in [status::PENDING, status::RUNNING, status::FAILED] {
        kept.extend(add_runs(&db, t, st, old, 2).await);
    }
    kept.sort_unstable();

    assert_eq!(prune_finished(&db, cutoff, 4).await.unwrap(), 11);
    assert_eq!(remaining(&db).await, kept);
    // Nothing more is due: a second prune deletes nothing.
    assert_eq!(prune_finished(&db, cutoff, 4).await.unwrap(), 0);
    assert_eq!(remaining(&db).await, kept);
    // An exact multiple of the batch size ends too (the last batch comes back empty).
    add_runs(&db, t, status::SUCCEEDED, old, 8).await;
    assert_eq!(prune_finished(&db, cutoff, 4).await.unwrap(), 8);
    assert_eq!(remaining(&db).await, kept);
}

#[tokio::test]
async fn serve_prunes_with_the_triggers_settings_of_its_config() {
    let tdb = TestDb::new().await;
    let db = tdb.connect().await;
    Migrator::up(&db, None).await.unwrap();
    let t = add_trigger(&db).await;
    let now = Utc::now();
    let old = now - chrono::Duration::days(3);
    add_runs(&db, t, status::SUCCEEDED, old, 5).await;
    add_runs(&db, t, status::DEAD, old, 3).await;
    let mut kept = add_runs(&db, t, status::SUCCEEDED, now, 2).await;
    kept.extend(add_runs(&db, t, status::PENDING, old, 2).await);
    kept.sort_unstable();

    let dir = std::env::temp_dir().join(format!(
        "orrery_retention_{}_{}",
        std::process::id(),
        now.timestamp_nanos_opt().unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("orrery.toml"),
        "[triggers]\nretention_days = 1\nprune_interval_secs = 1\nlease_secs = 30\nconcurrency = 2\n",
    )
    .unwrap();
    let mut server = Server::start_in(&dir, &base_env(&tdb), &["serve"]);
    let started = Instant::now();
    loop {
        let finished_old = action_run::Entity::find()
            .filter(action_run::Column::Status.is_in([status::SUCCEEDED, status::DEAD]))
            .filter(action_run::Column::UpdatedAt.lt(now - chrono::Duration::days(1)))
            .count(&db)
            .await
            .unwrap();
        if finished_old == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{finished_old} old finished rows still there; logs:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(remaining(&db).await, kept);
    // The line is written after the delete commits: it may reach the captured logs a moment
    // after the rows are gone.
    let logged = Instant::now();
    while !server.logs().contains("pruned finished action runs") {
        assert!(
            logged.elapsed() < Duration::from_secs(10),
            "no prune line; logs:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.terminate(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}
