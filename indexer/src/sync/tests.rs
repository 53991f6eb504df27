//! Engine and supervisor behaviour with scripted sources on an in-memory SQLite database.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orrery_entity::source;
use orrery_migration::{Migrator, MigratorTrait};
use sea_orm::{ActiveModelTrait, Database, EntityTrait, Set};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::bus::LocalBus;

async fn ctx(id: &str) -> SyncContext {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    SyncContext::new(
        db,
        Arc::new(LocalBus::new()),
        SourceDescriptor {
            id: id.into(),
            kind: "bitcoin",
            name: "test".into(),
            chain_id: None,
        },
    )
}

/// Commits heights 1..=target, one per fetch, failing once at height 3 (in fetch), and
/// once writing height `fail_write_at` (the write fails after `prefetch` fetched ahead).
struct Counting {
    height: i64,
    target: i64,
    failed_once: bool,
    prefetch: usize,
    writer: Arc<CountingWriter>,
}

#[derive(Default)]
struct CountingWriter {
    fail_write_at: Option<i64>,
    write_failed: std::sync::atomic::AtomicBool,
    reverted_to: std::sync::Mutex<Vec<i64>>,
}

fn counting(target: i64, failed_once: bool) -> Counting {
    Counting {
        height: 0,
        target,
        failed_once,
        prefetch: 0,
        writer: Arc::new(CountingWriter::default()),
    }
}

#[async_trait]
impl Source for Counting {
    type Batch = i64;

    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            id: "count".into(),
            kind: "bitcoin",
            name: "test".into(),
            chain_id: None,
        }
    }
    async fn resume(
        &mut self,
        _ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.height = stored.indexed_height.unwrap_or(0);
        Ok(())
    }
    async fn fetch(&mut self, _ctx: &SyncContext) -> Result<Fetched<i64>, SourceError> {
        if self.height >= self.target {
            return Ok(Fetched::Idle(Progress {
                head_height: Some(self.target),
                indexed_height: Some(self.height),
                caught_up: true,
                ..Default::default()
            }));
        }
        if self.height == 2 && !self.failed_once {
            self.failed_once = true;
            return Err(SourceError::Malformed("scripted failure".into()));
        }
        self.height += 1;
        Ok(Fetched::Batch {
            batch: self.height,
            progress: Progress {
                head_height: Some(self.target),
                indexed_height: Some(self.height),
                cursor: Some(format!("c{}", self.height)),
                ..Default::default()
            },
        })
    }
    fn writer(&self) -> Arc<dyn BatchWriter<i64>> {
        self.writer.clone()
    }
    fn prefetch(&self) -> usize {
        self.prefetch
    }
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(20)
    }
}

#[async_trait]
impl BatchWriter<i64> for CountingWriter {
    async fn write(
        &self,
        _txn: &sea_orm::DatabaseTransaction,
        height: &i64,
    ) -> Result<Written, sea_orm::DbErr> {
        if Some(*height) == self.fail_write_at && !self.write_failed.swap(true, Ordering::SeqCst) {
            return Err(sea_orm::DbErr::Custom("scripted write failure".into()));
        }
        Ok(Written {
            items: vec![("block", 1)],
            ..Default::default()
        })
    }
    async fn revert(
        &self,
        _txn: &sea_orm::DatabaseTransaction,
        to: i64,
    ) -> Result<Reverted, sea_orm::DbErr> {
        self.reverted_to.lock().unwrap().push(to);
        Ok(Reverted {
            orphaned: 7,
            events: vec![],
        })
    }
}

fn fast() -> EngineConfig {
    EngineConfig {
        stall_timeout: Duration::from_secs(5),
        max_error_backoff: Duration::from_millis(10),
        pause_check: Duration::from_millis(20),
    }
}

async fn wait_for(ctx: &SyncContext, pred: impl Fn(&source::Model) -> bool) -> source::Model {
    for _ in 0..300 {
        if let Some(r) = source::Entity::find_by_id(ctx.source.id.clone())
            .one(&ctx.db)
            .await
            .unwrap()
        {
            if pred(&r) {
                return r;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn commits_progress_retries_errors_and_reports_synced() {
    let ctx = ctx("count").await;
    let mut rx = ctx.bus.subscribe();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_source(
        counting(5, false),
        ctx.clone(),
        fast(),
        cancel.clone(),
    ));
    let row = wait_for(&ctx, |r| r.status == "synced").await;
    assert_eq!(row.indexed_height, Some(5));
    assert_eq!(row.cursor.as_deref(), Some("c5"));
    assert_eq!(row.error_count, 0, "a success clears the error count");
    assert!(row.last_error.is_none());
    cancel.cancel();
    assert_eq!(task.await.unwrap(), EngineExit::Cancelled);
    // The failure was recorded and published at the time.
    let mut saw_error = false;
    while let Ok(e) = rx.try_recv() {
        if let crate::bus::Payload::SourceUpdated(row) = e.payload {
            if row.status == "error" {
                saw_error = true;
                assert!(row
                    .last_error
                    .as_deref()
                    .unwrap()
                    .contains("scripted failure"));
            }
        }
    }
    assert!(saw_error);
}

#[tokio::test]
async fn a_failed_write_discards_the_prefetched_batches_and_resumes_from_the_stored_row() {
    let ctx = ctx("count").await;
    let cancel = CancellationToken::new();
    let mut src = counting(8, true);
    src.prefetch = 3;
    src.writer = Arc::new(CountingWriter {
        fail_write_at: Some(4),
        ..Default::default()
    });
    let writer = src.writer.clone();
    let task = tokio::spawn(run_source(src, ctx.clone(), fast(), cancel.clone()));
    let row = wait_for(&ctx, |r| r.status == "synced").await;
    assert_eq!(row.indexed_height, Some(8));
    assert_eq!(row.cursor.as_deref(), Some("c8"));
    assert!(writer.write_failed.load(Ordering::SeqCst));
    // Every height was counted once: 8 blocks, none lost or doubled by the retry.
    let m = crate::metrics::Metrics::global()
        .indexed_items
        .with_label_values(&["count", "block"])
        .get();
    assert!(m >= 8, "{m}");
    assert_eq!(row.backfill_from, None, "cleared once caught up");
    assert_eq!(row.eta_seconds, Some(0));
    cancel.cancel();
    task.await.unwrap();
}

/// Reaches height 5, then reports a reorg back to 3 once.
struct Reorging {
    inner: Counting,
    reverted: bool,
}

#[async_trait]
impl Source for Reorging {
    type Batch = i64;
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            id: "reorging".into(),
            kind: "bitcoin",
            name: "test".into(),
            chain_id: None,
        }
    }
    async fn resume(
        &mut self,
        ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.inner.resume(ctx, stored).await
    }
    async fn fetch(&mut self, ctx: &SyncContext) -> Result<Fetched<i64>, SourceError> {
        if self.inner.height == 5 && !self.reverted {
            self.reverted = true;
            self.inner.height = 3;
            return Ok(Fetched::Revert {
                to: 3,
                progress: Progress {
                    head_height: Some(5),
                    cursor: Some("c3".into()),
                    ..Default::default()
                },
            });
        }
        self.inner.fetch(ctx).await
    }
    fn writer(&self) -> Arc<dyn BatchWriter<i64>> {
        self.inner.writer()
    }
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(20)
    }
}

#[tokio::test]
async fn reverts_are_written_counted_and_published_by_the_engine() {
    let ctx = ctx("reorging").await;
    let mut rx = ctx.bus.subscribe();
    let cancel = CancellationToken::new();
    let src = Reorging {
        inner: counting(5, true),
        reverted: false,
    };
    let writer = src.inner.writer.clone();
    let before = crate::metrics::Metrics::global()
        .reorgs
        .with_label_values(&["reorging"])
        .get();
    let task = tokio::spawn(run_source(src, ctx.clone(), fast(), cancel.clone()));
    let mut reorg = None;
    for _ in 0..300 {
        while let Ok(e) = rx.try_recv() {
            if let crate::bus::Payload::Reorg(r) = e.payload {
                reorg = Some(r);
            }
        }
        if reorg.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reorg = reorg.expect("a reorg event");
    assert_eq!(
        reorg,
        crate::bus::payload::Reorg {
            chain: "bitcoin".into(),
            source: "reorging".into(),
            from_block: 4,
            depth: 2,
            orphaned_events: 7,
        }
    );
    assert_eq!(*writer.reverted_to.lock().unwrap(), vec![3]);
    let after = crate::metrics::Metrics::global()
        .reorgs
        .with_label_values(&["reorging"])
        .get();
    assert_eq!(after - before, 1);
    let row = wait_for(&ctx, |r| r.status == "synced").await;
    assert_eq!(row.indexed_height, Some(5));
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_paused_source_does_not_step_until_resumed() {
    let ctx = ctx("count").await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_source(
        counting(2, true),
        ctx.clone(),
        fast(),
        cancel.clone(),
    ));
    wait_for(&ctx, |r| r.status == "synced").await;
    let row = source::Entity::find_by_id("count".to_string())
        .one(&ctx.db)
        .await
        .unwrap()
        .unwrap();
    let mut am: source::ActiveModel = row.into();
    am.paused = Set(true);
    am.update(&ctx.db).await.unwrap();
    wait_for(&ctx, |r| r.status == "paused").await;
    cancel.cancel();
    task.await.unwrap();
}

/// Panics on its first two incarnations.
struct Panicky;

#[async_trait]
impl Source for Panicky {
    type Batch = ();

    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            id: "panicky".into(),
            kind: "evm",
            name: "p".into(),
            chain_id: Some(1),
        }
    }
    async fn fetch(&mut self, _ctx: &SyncContext) -> Result<Fetched<()>, SourceError> {
        panic!("scripted panic");
    }
    fn writer(&self) -> Arc<dyn BatchWriter<()>> {
        Arc::new(NoWrites)
    }
}

#[tokio::test]
async fn the_supervisor_restarts_a_panicking_source() {
    let ctx = ctx("panicky").await;
    let built = Arc::new(AtomicU32::new(0));
    let counter = built.clone();
    let mut sup = Supervisor::new();
    sup.spawn(
        factory(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Panicky
        }),
        ctx.clone(),
        fast(),
    );
    let row = wait_for(&ctx, |r| r.status == "error").await;
    assert!(row.last_error.unwrap().contains("panicked"));
    for _ in 0..400 {
        if built.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        built.load(Ordering::SeqCst) >= 2,
        "restarted after the panic"
    );
    sup.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_rewind_command_restarts_the_source_from_the_given_height() {
    let ctx = ctx("count").await;
    let mut sup = Supervisor::new();
    let steps = Arc::new(AtomicU32::new(0));
    let seen = steps.clone();
    sup.spawn(
        factory(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            counting(5, true)
        }),
        ctx.clone(),
        fast(),
    );
    wait_for(&ctx, |r| {
        r.status == "synced" && r.indexed_height == Some(5)
    })
    .await;
    let cmd = commands::enqueue(
        &ctx.db,
        "count",
        commands::REWIND,
        serde_json::json!({"height": 2}),
        "tester",
    )
    .await
    .unwrap();
    // The task is stopped, the row rewound, a fresh instance resumes at 2 and catches up.
    for _ in 0..500 {
        let c = stored_command(&ctx, cmd.id).await;
        if let (Some(result), true) = (&c.result, steps.load(Ordering::SeqCst) >= 2) {
            assert!(result.contains("rewound to height Some(2)"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        steps.load(Ordering::SeqCst) >= 2,
        "a new instance was built"
    );
    wait_for(&ctx, |r| {
        r.status == "synced" && r.indexed_height == Some(5)
    })
    .await;
    // Claimed once only.
    assert!(commands::claim_next(&ctx).await.unwrap().is_none());
    sup.shutdown(Duration::from_secs(2)).await;
}

async fn stored_command(ctx: &SyncContext, id: i64) -> orrery_entity::source_command::Model {
    orrery_entity::source_command::Entity::find_by_id(id)
        .one(&ctx.db)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn breaker_state_is_persisted_and_operator_resets_reach_the_live_breaker() {
    use crate::upstream::{BreakerState, CircuitBreaker};
    let ctx = ctx("b").await;
    let breaker = Arc::new(CircuitBreaker::new(
        "horizon-test",
        2,
        Duration::from_secs(600),
    ));
    breaker_store::restore_and_track(ctx.db.clone(), &breaker)
        .await
        .unwrap();
    breaker.record_failure("boom");
    breaker.record_failure("boom");
    assert_eq!(breaker.state(), BreakerState::Open);
    let mut stored = None;
    for _ in 0..300 {
        let row = orrery_entity::circuit_breaker::Entity::find_by_id("horizon-test".to_string())
            .one(&ctx.db)
            .await
            .unwrap();
        if row.as_ref().is_some_and(|r| r.state == "open") {
            stored = row;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stored.expect("open state persisted").state, "open");
    // A restarted process restores the open state.
    let again = Arc::new(CircuitBreaker::new(
        "horizon-test",
        2,
        Duration::from_secs(600),
    ));
    breaker_store::restore_and_track(ctx.db.clone(), &again)
        .await
        .unwrap();
    assert_eq!(again.state(), BreakerState::Open);
    // An operator reset closes the live breakers.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (before, after) = breaker_store::request_reset(&ctx.db, "horizon-test", "ops")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.state, "open");
    assert_eq!(after.state, "closed");
    for _ in 0..400 {
        if breaker.state() == BreakerState::Closed && again.state() == BreakerState::Closed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(breaker_store::request_reset(&ctx.db, "nope", "ops")
        .await
        .unwrap()
        .is_none());
}

/// Always behind, never advancing.
struct Stuck;

#[async_trait]
impl Source for Stuck {
    type Batch = ();
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            id: "stuck".into(),
            kind: "bitcoin",
            name: "test".into(),
            chain_id: None,
        }
    }
    async fn fetch(&mut self, _ctx: &SyncContext) -> Result<Fetched<()>, SourceError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(Fetched::Idle(Progress {
            head_height: Some(10),
            indexed_height: Some(1),
            ..Default::default()
        }))
    }
    fn writer(&self) -> Arc<dyn BatchWriter<()>> {
        Arc::new(NoWrites)
    }
}

/// A writer for sources that never return a batch.
struct NoWrites;

#[async_trait]
impl BatchWriter<()> for NoWrites {
    async fn write(
        &self,
        _txn: &sea_orm::DatabaseTransaction,
        _batch: &(),
    ) -> Result<Written, sea_orm::DbErr> {
        Err(sea_orm::DbErr::Custom("this source never writes".into()))
    }
    async fn revert(
        &self,
        _txn: &sea_orm::DatabaseTransaction,
        _to: i64,
    ) -> Result<Reverted, sea_orm::DbErr> {
        Err(sea_orm::DbErr::Custom("this source never reverts".into()))
    }
}

#[tokio::test]
async fn the_stall_timeout_follows_the_runtime_setting() {
    use crate::runtime_settings::{RuntimeSettings, Values};
    let mut ctx = ctx("stuck").await;
    crate::config_store::seed_defaults(&ctx.db).await.unwrap();
    let settings = RuntimeSettings::new(Values::default());
    ctx = ctx.with_settings(settings.clone());
    // The engine's own default (here 5 s) would not fire within this test; an operator's
    // `sync.stall_timeout = 1s` does, without a restart of anything.
    crate::config_store::set(&ctx.db, "sync.stall_timeout", "1s", None, None, "ops")
        .await
        .unwrap();
    settings.refresh(&ctx.db).await.unwrap();
    assert_eq!(settings.stall_timeout(), Duration::from_secs(1));
    let started = std::time::Instant::now();
    let exit = tokio::time::timeout(
        Duration::from_secs(4),
        run_source(Stuck, ctx.clone(), fast(), CancellationToken::new()),
    )
    .await
    .expect("stalled before the engine default");
    assert!(
        matches!(exit, EngineExit::Stalled(ref m) if m.contains("1s")),
        "{exit:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
}
