//! Worker tasks running queued actions: claim due rows with a conditional `UPDATE`, deliver
//! through the trigger's [`Sink`], then record success, a scheduled retry (`failed`, with
//! exponential backoff) or the dead letter (`dead`). A circuit breaker per trigger
//! ([`BreakerCore`]) holds that trigger's rows back while open (they wait, they do not fail);
//! its state is written to the trigger row so GraphQL shows it and a restart restores it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use orrery_entity::{action_run, trigger};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio::task::JoinHandle;

use super::sink::{Sink, SinkError, WebhookSink};
use super::{status, ACTION_QUEUED};
use crate::backoff::Backoff;
use crate::bus::SharedBus;
use crate::metrics::Metrics;
use crate::upstream::breaker::{Admission, BreakerCore, BreakerSnapshot, BreakerState};

/// Worker tuning (process-wide; per-trigger limits live on the trigger row).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Name written to `claimed_by` (unique per process).
    pub worker_id: String,
    /// Wait between polls when no wake-up arrives.
    pub poll_interval: Duration,
    /// A `running` row older than this is presumed abandoned (crash) and claimed again.
    pub lease: Duration,
    /// Deliveries in flight.
    pub concurrency: usize,
    /// Timeout of one delivery (must stay well below `lease`).
    pub delivery_timeout: Duration,
    /// First retry delay; doubles per attempt.
    pub base_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Finished (`succeeded`/`dead`) rows last updated longer ago than this are deleted;
    /// `None` keeps them forever.
    pub retention: Option<Duration>,
    /// Wait between two prunes.
    pub prune_interval: Duration,
    /// Rows deleted per statement by a prune (short transactions, however much is due).
    pub prune_batch: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            worker_id: format!(
                "{}-{}",
                std::process::id(),
                Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ),
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(20),
            concurrency: 8,
            delivery_timeout: Duration::from_secs(5),
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            retention: Some(Duration::from_secs(30 * 86_400)),
            prune_interval: Duration::from_secs(3600),
            prune_batch: 1_000,
        }
    }
}

/// Sinks by kind (`trigger.sink`).
pub type Sinks = HashMap<String, Arc<dyn Sink>>;

/// Delay before retry number `attempts` (1-based): `base * 2^(attempts-1)`, capped.
/// The ceiling of the crate's one [`Backoff`] schedule.
pub fn backoff(settings: &WorkerSettings, attempts: i32) -> Duration {
    let attempt = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0);
    Backoff::unbounded(settings.base_backoff, settings.max_backoff).ceiling(attempt)
}

/// Starts the action workers with the webhook sink; they run until the process exits (rows in
/// flight then are reclaimed after the lease by the next process).
pub fn spawn_workers(
    db: DatabaseConnection,
    bus: SharedBus,
    settings: WorkerSettings,
) -> JoinHandle<()> {
    let mut sinks: Sinks = HashMap::new();
    match WebhookSink::new(settings.delivery_timeout) {
        Ok(s) => {
            sinks.insert(s.kind().to_string(), Arc::new(s));
        }
        Err(e) => tracing::error!(error = %e, "cannot build the webhook client"),
    }
    spawn_workers_with(db, bus, settings, sinks)
}

/// Same with an explicit set of sinks.
pub fn spawn_workers_with(
    db: DatabaseConnection,
    bus: SharedBus,
    settings: WorkerSettings,
    sinks: Sinks,
) -> JoinHandle<()> {
    let shared = Arc::new(Shared {
        db,
        settings,
        sinks,
        breakers: Mutex::new(HashMap::new()),
        slots: Arc::new(Semaphore::new(0)),
        wake: Notify::new(),
    });
    shared.slots.add_permits(shared.settings.concurrency.max(1));
    tokio::spawn(run(shared, bus))
}

struct TriggerBreaker {
    core: BreakerCore,
    config: (i32, i64),
}

struct Shared {
    db: DatabaseConnection,
    settings: WorkerSettings,
    sinks: Sinks,
    breakers: Mutex<HashMap<i64, TriggerBreaker>>,
    slots: Arc<Semaphore>,
    wake: Notify,
}

/// Aborts its task when dropped (the pruner ends with the workers' task).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run(shared: Arc<Shared>, bus: SharedBus) {
    let _pruner = shared.settings.retention.map(|retention| {
        let db = shared.db.clone();
        let (every, batch) = (shared.settings.prune_interval, shared.settings.prune_batch);
        AbortOnDrop(tokio::spawn(prune_loop(db, retention, every, batch)).abort_handle())
    });
    let mut events = bus.subscribe();
    tracing::info!(worker = %shared.settings.worker_id, "trigger action workers started");
    loop {
        if let Err(e) = dispatch(&shared).await {
            tracing::warn!(error = %e, "action worker poll failed");
        }
        match queue_depth(&shared.db).await {
            Ok(n) => Metrics::global()
                .action_queue_depth
                .set(i64::try_from(n).unwrap_or(i64::MAX)),
            Err(e) => tracing::debug!(error = %e, "cannot count queued actions"),
        }
        let wait = tokio::time::sleep(shared.settings.poll_interval);
        tokio::pin!(wait);
        let mut bus_open = true;
        loop {
            tokio::select! {
                _ = &mut wait => break,
                _ = shared.wake.notified() => break,
                ev = events.recv(), if bus_open => match ev {
                    Ok(e) if e.topic() == ACTION_QUEUED => break,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        bus_open = false;
                        events = bus.subscribe();
                    }
                },
            }
        }
    }
}

/// Prunes finished rows older than `retention` now and then every `every`.
async fn prune_loop(db: DatabaseConnection, retention: Duration, every: Duration, batch: u64) {
    loop {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        match prune_finished(&db, cutoff, batch).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, %cutoff, "pruned finished action runs"),
            Err(e) => tracing::warn!(error = %e, "cannot prune finished action runs"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Deletes the finished (`succeeded` or `dead`) rows last updated before `cutoff`, `batch` at
/// a time (one short statement each: `DELETE ... WHERE id IN (SELECT id ... LIMIT batch)`,
/// on SQLite and PostgreSQL alike, using `idx_action_run_finished`). Rows still queued,
/// running or waiting for a retry are never touched. Returns the number deleted.
pub async fn prune_finished(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    batch: u64,
) -> Result<u64, DbErr> {
    let batch = batch.max(1);
    let mut total = 0u64;
    loop {
        let ids = sea_orm::sea_query::Query::select()
            .column(action_run::Column::Id)
            .from(action_run::Entity)
            .and_where(action_run::Column::Status.is_in([status::SUCCEEDED, status::DEAD]))
            .and_where(action_run::Column::UpdatedAt.lt(cutoff))
            .order_by(action_run::Column::Id, sea_orm::Order::Asc)
            .limit(batch)
            .to_owned();
        let res = action_run::Entity::delete_many()
            .filter(action_run::Column::Id.in_subquery(ids))
            .exec(db)
            .await?;
        total += res.rows_affected;
        if res.rows_affected < batch {
            return Ok(total);
        }
        // Let deliveries and other writers in between two batches.
        tokio::task::yield_now().await;
    }
}

async fn queue_depth(db: &DatabaseConnection) -> Result<u64, DbErr> {
    action_run::Entity::find()
        .filter(action_run::Column::Status.is_in([
            status::PENDING,
            status::FAILED,
            status::RUNNING,
        ]))
        .count(db)
        .await
}

/// Rows a worker may claim now: due `pending`/`failed` ones, and `running` ones whose lease
/// expired.
fn claimable(now: DateTime<Utc>, lease: Duration) -> Condition {
    let expired = now - chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    Condition::any()
        .add(
            Condition::all()
                .add(action_run::Column::Status.is_in([status::PENDING, status::FAILED]))
                .add(action_run::Column::NextAttemptAt.lte(now)),
        )
        .add(
            Condition::all()
                .add(action_run::Column::Status.eq(status::RUNNING))
                .add(action_run::Column::ClaimedAt.lt(expired)),
        )
}

fn snapshot_of(t: &trigger::Model) -> BreakerSnapshot {
    BreakerSnapshot {
        name: format!("trigger:{}", t.id),
        state: t.breaker_state.parse().unwrap_or(BreakerState::Closed),
        failure_count: u32::try_from(t.breaker_failures).unwrap_or(0),
        opened_at: t.breaker_opened_at,
        last_error: t.breaker_last_error.clone(),
    }
}

impl Shared {
    /// Asks trigger `t`'s breaker for admission (creating or re-tuning it from the row).
    fn admit(&self, t: &trigger::Model) -> Option<Admission> {
        let mut map = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let config = (t.failure_threshold, t.recovery_secs);
        let entry = map.entry(t.id).or_insert_with(|| TriggerBreaker {
            core: BreakerCore::new(0, Duration::ZERO),
            config: (-1, -1),
        });
        if entry.config != config {
            let mut core = BreakerCore::new(
                u32::try_from(t.failure_threshold).unwrap_or(1),
                Duration::from_secs(u64::try_from(t.recovery_secs).unwrap_or(0)),
            );
            core.restore(&snapshot_of(t), Instant::now(), Utc::now());
            *entry = TriggerBreaker { core, config };
        }
        entry.core.try_acquire(Instant::now()).ok()
    }

    /// Applies `f` to trigger `id`'s breaker; returns the snapshot when anything changed.
    fn with_breaker(&self, id: i64, f: impl FnOnce(&mut BreakerCore)) -> Option<BreakerSnapshot> {
        let mut map = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.get_mut(&id)?;
        let before = b.core.snapshot("");
        f(&mut b.core);
        let after = b.core.snapshot("");
        (before != after).then_some(after)
    }
}

async fn dispatch(shared: &Arc<Shared>) -> Result<(), DbErr> {
    let free = shared.slots.available_permits();
    if free == 0 {
        return Ok(());
    }
    let triggers: HashMap<i64, trigger::Model> = trigger::Entity::find()
        .all(&shared.db)
        .await?
        .into_iter()
        .map(|t| (t.id, t))
        .collect();
    let now = Utc::now();
    // Triggers whose breaker refuses are excluded from the query so their waiting rows
    // do not starve the others.
    let mut held: HashSet<i64> = HashSet::new();
    let mut claimed = 0usize;
    let mut skip_ids: Vec<i64> = Vec::new();
    while claimed < free {
        let mut q = action_run::Entity::find()
            .filter(claimable(now, shared.settings.lease))
            .order_by_asc(action_run::Column::NextAttemptAt)
            .order_by_asc(action_run::Column::Id)
            .limit(((free - claimed) * 4) as u64);
        if !held.is_empty() {
            q = q.filter(action_run::Column::TriggerId.is_not_in(held.iter().copied()));
        }
        if !skip_ids.is_empty() {
            q = q.filter(action_run::Column::Id.is_not_in(skip_ids.iter().copied()));
        }
        let rows = q.all(&shared.db).await?;
        if rows.is_empty() {
            break;
        }
        let mut progressed = false;
        for row in rows {
            if claimed >= free {
                break;
            }
            if held.contains(&row.trigger_id) {
                continue;
            }
            let Some(t) = triggers.get(&row.trigger_id) else {
                bury(shared, &row, "trigger deleted").await?;
                progressed = true;
                continue;
            };
            if !t.enabled {
                held.insert(t.id);
                progressed = true;
                continue;
            }
            let Some(admission) = shared.admit(t) else {
                held.insert(t.id);
                progressed = true;
                continue;
            };
            if !claim(shared, &row, now).await? {
                // Another worker took it first.
                shared.with_breaker(t.id, |c| c.release(admission));
                skip_ids.push(row.id);
                progressed = true;
                continue;
            }
            let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
                shared.with_breaker(t.id, |c| c.release(admission));
                return Ok(());
            };
            claimed += 1;
            progressed = true;
            let mut run = row.clone();
            run.attempts += 1;
            run.status = status::RUNNING.to_string();
            let shared2 = shared.clone();
            let owned = t.clone();
            tokio::spawn(async move {
                execute(&shared2, &owned, run, admission).await;
                drop(permit);
                shared2.wake.notify_one();
            });
            if admission == Admission::Probe {
                // Only one probe per half-open breaker.
                held.insert(t.id);
            }
        }
        if !progressed {
            break;
        }
    }
    Ok(())
}

/// Conditional claim: succeeds for exactly one worker.
async fn claim(
    shared: &Shared,
    row: &action_run::Model,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let res = action_run::Entity::update_many()
        .col_expr(action_run::Column::Status, Expr::value(status::RUNNING))
        .col_expr(
            action_run::Column::ClaimedBy,
            Expr::value(shared.settings.worker_id.clone()),
        )
        .col_expr(action_run::Column::ClaimedAt, Expr::value(now))
        .col_expr(
            action_run::Column::Attempts,
            sea_orm::sea_query::ExprTrait::add(Expr::col(action_run::Column::Attempts), 1),
        )
        .col_expr(action_run::Column::UpdatedAt, Expr::value(now))
        .filter(action_run::Column::Id.eq(row.id))
        .filter(action_run::Column::Status.eq(row.status.clone()))
        .filter(action_run::Column::Attempts.eq(row.attempts))
        .filter(claimable(now, shared.settings.lease))
        .exec(&shared.db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Dead-letters a row that can never run.
async fn bury(shared: &Shared, row: &action_run::Model, why: &str) -> Result<(), DbErr> {
    let now = Utc::now();
    action_run::Entity::update_many()
        .col_expr(action_run::Column::Status, Expr::value(status::DEAD))
        .col_expr(action_run::Column::LastError, Expr::value(why))
        .col_expr(action_run::Column::UpdatedAt, Expr::value(now))
        .filter(action_run::Column::Id.eq(row.id))
        .filter(action_run::Column::Status.eq(row.status.clone()))
        .exec(&shared.db)
        .await?;
    Metrics::global()
        .action_runs
        .with_label_values(&[&row.trigger_id.to_string(), status::DEAD])
        .inc();
    Ok(())
}

async fn execute(
    shared: &Shared,
    t: &trigger::Model,
    run: action_run::Model,
    admission: Admission,
) {
    let label = t.id.to_string();
    let body = serde_json::to_vec(&run.payload).unwrap_or_default();
    let outcome = match shared.sinks.get(&t.sink) {
        Some(sink) => sink.deliver(t, &run, &body).await,
        None => Err(SinkError::Permanent(format!("unknown sink {:?}", t.sink))),
    };
    let now = Utc::now();
    let (new_status, error, http) = match &outcome {
        Ok(d) => (status::SUCCEEDED, None, d.status),
        Err(e) => {
            let dead = matches!(e, SinkError::Permanent(_)) || run.attempts >= t.max_attempts;
            let s = if dead { status::DEAD } else { status::FAILED };
            (s, Some(e.to_string()), e.status())
        }
    };
    let next = now
        + chrono::Duration::from_std(backoff(&shared.settings, run.attempts))
            .unwrap_or(chrono::Duration::zero());
    let update = action_run::Entity::update_many()
        .col_expr(action_run::Column::Status, Expr::value(new_status))
        .col_expr(action_run::Column::LastError, Expr::value(error.clone()))
        .col_expr(
            action_run::Column::ResponseStatus,
            Expr::value(http.map(i32::from)),
        )
        .col_expr(action_run::Column::NextAttemptAt, Expr::value(next))
        .col_expr(action_run::Column::UpdatedAt, Expr::value(now))
        .filter(action_run::Column::Id.eq(run.id))
        .filter(action_run::Column::Status.eq(status::RUNNING))
        .filter(action_run::Column::ClaimedBy.eq(shared.settings.worker_id.clone()))
        .filter(action_run::Column::Attempts.eq(run.attempts))
        .exec(&shared.db)
        .await;
    if let Err(e) = update {
        // The row stays `running`; the lease hands it to a worker again (at-least-once).
        tracing::warn!(run = run.id, error = %e, "cannot record an action outcome");
    }
    let m = Metrics::global();
    m.action_runs.with_label_values(&[&label, new_status]).inc();
    let changed = match &outcome {
        Ok(_) => shared.with_breaker(t.id, |c| c.on_success(admission)),
        Err(SinkError::Permanent(_)) => shared.with_breaker(t.id, |c| c.release(admission)),
        Err(e) => {
            m.action_failures.with_label_values(&[&label]).inc();
            tracing::info!(trigger = t.id, run = run.id, attempt = run.attempts, error = %e, status = new_status, "action delivery failed");
            shared.with_breaker(t.id, |c| {
                c.on_failure(admission, e.to_string(), Instant::now(), now)
            })
        }
    };
    if let Some(s) = changed {
        if let Err(e) = persist_breaker(&shared.db, t.id, &s).await {
            tracing::warn!(trigger = t.id, error = %e, "cannot store a trigger breaker");
        }
    }
}

async fn persist_breaker(
    db: &DatabaseConnection,
    id: i64,
    s: &BreakerSnapshot,
) -> Result<(), DbErr> {
    trigger::Entity::update_many()
        .col_expr(trigger::Column::BreakerState, Expr::value(s.state.as_str()))
        .col_expr(
            trigger::Column::BreakerFailures,
            Expr::value(i32::try_from(s.failure_count).unwrap_or(i32::MAX)),
        )
        .col_expr(trigger::Column::BreakerOpenedAt, Expr::value(s.opened_at))
        .col_expr(
            trigger::Column::BreakerLastError,
            Expr::value(s.last_error.clone()),
        )
        .filter(trigger::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::LocalBus;
    use crate::triggers::sink::Delivery;
    use async_trait::async_trait;
    use orrery_migration::{Migrator, MigratorTrait};
    use sea_orm::{ActiveModelTrait, Database, Set};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Fake {
        kind: &'static str,
        failing: AtomicBool,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Sink for Fake {
        fn kind(&self) -> &'static str {
            self.kind
        }
        async fn deliver(
            &self,
            _t: &trigger::Model,
            _r: &action_run::Model,
            _b: &[u8],
        ) -> Result<Delivery, SinkError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                Err(SinkError::Status(500))
            } else {
                Ok(Delivery { status: Some(200) })
            }
        }
    }

    fn fake(kind: &'static str) -> Arc<Fake> {
        Arc::new(Fake {
            kind,
            failing: AtomicBool::new(true),
            calls: AtomicUsize::new(0),
        })
    }

    async fn add_trigger(
        db: &DatabaseConnection,
        sink: &str,
        attempts: i32,
        threshold: i32,
    ) -> i64 {
        let now = Utc::now();
        trigger::ActiveModel {
            name: Set(sink.into()),
            chain: Set("c".into()),
            contract: Set(None),
            event_name: Set("E".into()),
            conditions: Set(serde_json::json!([])),
            sink: Set(sink.into()),
            webhook_url: Set("http://127.0.0.1:9/".into()),
            secret: Set("secret".into()),
            enabled: Set(true),
            max_attempts: Set(attempts),
            failure_threshold: Set(threshold),
            recovery_secs: Set(1),
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

    async fn add_runs(db: &DatabaseConnection, trigger: i64, n: usize) {
        let now = Utc::now();
        for i in 0..n {
            action_run::ActiveModel {
                trigger_id: Set(trigger),
                event_key: Set(format!("c:0x{trigger}:{i}")),
                idempotency_key: Set(format!("{trigger}-{i}")),
                payload: Set(serde_json::json!({"i": i})),
                status: Set(status::PENDING.into()),
                attempts: Set(0),
                next_attempt_at: Set(now),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            }
            .insert(db)
            .await
            .unwrap();
        }
    }

    async fn count(db: &DatabaseConnection, trigger: i64, st: &str) -> u64 {
        action_run::Entity::find()
            .filter(action_run::Column::TriggerId.eq(trigger))
            .filter(action_run::Column::Status.eq(st))
            .count(db)
            .await
            .unwrap()
    }

    async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
        let started = Instant::now();
        while !f().await {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "timed out: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_dead_letter_and_breaker_holds_then_recovers() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let dying = fake("dying");
        let flaky = fake("flaky");
        let mut sinks: Sinks = HashMap::new();
        sinks.insert("dying".into(), dying.clone());
        sinks.insert("flaky".into(), flaky.clone());
        // Retries exhaust at 2 attempts; a high threshold keeps its breaker closed.
        let d = add_trigger(&db, "dying", 2, 100).await;
        // Its breaker opens after 2 failures and probes after 1 s.
        let f = add_trigger(&db, "flaky", 100, 2).await;
        add_runs(&db, d, 3).await;
        add_runs(&db, f, 5).await;
        let settings = WorkerSettings {
            poll_interval: Duration::from_millis(20),
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..WorkerSettings::default()
        };
        let bus: SharedBus = Arc::new(LocalBus::new());
        let handle = spawn_workers_with(db.clone(), bus, settings, sinks);

        until("dead letters", async || {
            count(&db, d, status::DEAD).await == 3
        })
        .await;
        assert_eq!(dying.calls.load(Ordering::SeqCst), 6, "2 attempts each");

        until("breaker opens", async || {
            trigger::Entity::find_by_id(f)
                .one(&db)
                .await
                .unwrap()
                .is_some_and(|t| t.breaker_state == "open")
        })
        .await;
        let calls = flaky.calls.load(Ordering::SeqCst);
        assert!(calls >= 2, "{calls}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            flaky.calls.load(Ordering::SeqCst),
            calls,
            "no calls while open"
        );
        assert_eq!(count(&db, f, status::DEAD).await, 0, "rows wait, not fail");
        assert_eq!(count(&db, f, status::SUCCEEDED).await, 0);

        // The receiver recovers: the half-open probe closes the breaker and all rows run.
        flaky.failing.store(false, Ordering::SeqCst);
        until("recovery", async || {
            count(&db, f, status::SUCCEEDED).await == 5
        })
        .await;
        let t = trigger::Entity::find_by_id(f)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.breaker_state.as_str(), t.breaker_failures),
            ("closed", 0)
        );
        handle.abort();
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = WorkerSettings {
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            ..WorkerSettings::default()
        };
        let d: Vec<u64> = (1..=6).map(|a| backoff(&s, a).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(&s, 0).as_secs(), 1);
    }
}
