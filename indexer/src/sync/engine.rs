//! One source's run loop: fetch (ahead, bounded), then begin -> write or revert -> progress
//! -> commit -> publish; waits, retries, pause and stall handling.

use std::time::{Duration, Instant};

use chrono::Utc;
use orrery_entity::source;
use sea_orm::{ActiveModelTrait, DbErr, EntityTrait, Set};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::context::write_progress;
use super::eta::{EtaTracker, Every};
use super::quarantine::{self, Quarantined};
use super::{BatchWriter, Fetched, Progress, Source, SourceError, SyncContext};
use crate::bus::{publish_logged, BusEvent};
use crate::metrics::Metrics;

/// At most one backfill progress line per source this often.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

/// Engine tuning.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A step running this long, or no height progress for this long while the head is
    /// ahead, counts as a stall: the task ends and the supervisor restarts it.
    pub stall_timeout: Duration,
    /// Longest wait between retries after consecutive errors.
    pub max_error_backoff: Duration,
    /// How often a paused source checks whether it was resumed.
    pub pause_check: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(30 * 60),
            max_error_backoff: Duration::from_secs(60),
            pause_check: Duration::from_secs(2),
        }
    }
}

/// Why [`run_source`] returned.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineExit {
    /// Shutdown was requested.
    Cancelled,
    /// No progress within the stall timeout; the message says what was seen.
    Stalled(String),
}

/// Creates the source row when missing; keeps its descriptor fields current.
async fn ensure_row(ctx: &SyncContext) -> Result<source::Model, DbErr> {
    let d = &ctx.source;
    let now = Utc::now();
    if let Some(row) = source::Entity::find_by_id(d.id.clone())
        .one(&ctx.db)
        .await?
    {
        if row.name == d.name && row.kind == d.kind && row.chain_id == d.chain_id {
            return Ok(row);
        }
        let mut am: source::ActiveModel = row.into();
        am.name = Set(d.name.clone());
        am.kind = Set(d.kind.to_string());
        am.chain_id = Set(d.chain_id);
        am.updated_at = Set(now);
        return am.update(&ctx.db).await;
    }
    source::ActiveModel {
        id: Set(d.id.clone()),
        kind: Set(d.kind.to_string()),
        name: Set(d.name.clone()),
        chain_id: Set(d.chain_id),
        head_height: Set(None),
        indexed_height: Set(None),
        cursor: Set(None),
        status: Set("idle".to_string()),
        error_count: Set(0),
        last_error: Set(None),
        last_sync_at: Set(None),
        head_updated_at: Set(None),
        backfill_from: Set(None),
        eta_seconds: Set(None),
        paused: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&ctx.db)
    .await
}

/// Marks the source as failing (status `error`, error count, message) and publishes it.
pub(crate) async fn record_error(ctx: &SyncContext, message: &str) {
    Metrics::global()
        .source_errors
        .with_label_values(&[&ctx.source.id])
        .inc();
    let result = async {
        // A transaction of the engine's: with a lease, a replica that lost it writes nothing.
        let txn = ctx.begin().await?;
        let row = source::Entity::find_by_id(ctx.source.id.clone())
            .one(&txn)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound(ctx.source.id.clone()))?;
        let mut am: source::ActiveModel = row.clone().into();
        am.status = Set("error".to_string());
        am.error_count = Set(row.error_count.saturating_add(1));
        am.last_error = Set(Some(message.chars().take(2000).collect()));
        am.updated_at = Set(Utc::now());
        let row = am.update(&txn).await?;
        txn.commit().await?;
        Ok::<_, DbErr>(row)
    }
    .await;
    match result {
        Ok(row) => {
            ctx.remember(&row);
            ctx.publish_source(&row).await;
        }
        Err(e) => tracing::warn!(source = %ctx.source.id, error = %e, "cannot record source error"),
    }
}

fn record_metrics(id: &str, p: &Progress) {
    let m = Metrics::global();
    for (kind, n) in &p.items {
        m.indexed_items.with_label_values(&[id, kind]).inc_by(*n);
    }
    if let Some(h) = p.head_height {
        m.head_height.with_label_values(&[id]).set(h);
    }
    if let Some(i) = p.indexed_height {
        m.indexed_height.with_label_values(&[id]).set(i);
    }
    if let (Some(h), Some(i)) = (p.head_height, p.indexed_height) {
        m.lag_blocks.with_label_values(&[id]).set((h - i).max(0));
    }
    let lag = match (p.caught_up, p.newest_item_at) {
        (true, _) => 0.0,
        (false, Some(t)) => (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0,
        (false, None) => return,
    };
    m.lag_seconds.with_label_values(&[id]).set(lag);
}

/// Sleeps `d` unless cancelled first; true when cancelled.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Delay after the `consecutive`-th error in a row (1-based): 1 s doubling up to `max`, the
/// ceiling of the crate's one [`crate::backoff::Backoff`] schedule.
fn error_backoff(consecutive: u32, max: Duration) -> Duration {
    crate::backoff::Backoff::unbounded(Duration::from_secs(1), max)
        .ceiling(consecutive.saturating_sub(1))
}

/// Why one pipeline run ended.
enum PipeExit {
    Cancelled,
    Stalled(String),
    Paused,
    Failed(SourceError),
}

/// What the engine remembers across pipeline runs.
struct RunState {
    last_indexed: Option<i64>,
    last_head: Option<i64>,
    last_progress_at: Instant,
    backfill_from: Option<i64>,
    eta: EtaTracker,
    log_every: Every,
}

/// One fetched item and the permit that bounds how far fetching runs ahead.
type Item<B> = (Result<Fetched<B>, SourceError>, OwnedSemaphorePermit);

/// Runs `source` until cancelled or stalled. Errors never end the loop: they are recorded on
/// the source row and retried with exponential backoff, after reloading the source's state
/// from the database.
pub async fn run_source<S: Source>(
    mut source: S,
    ctx: SyncContext,
    config: EngineConfig,
    cancel: CancellationToken,
) -> EngineExit {
    let id = ctx.source.id.clone();
    Metrics::global().touch_source(&id);
    let mut consecutive_errors = 0u32;
    let Some(row) =
        resume_until_ok(&mut source, &ctx, &config, &cancel, &mut consecutive_errors).await
    else {
        return EngineExit::Cancelled;
    };
    tracing::info!(source = %id, cursor = ?row.cursor, height = ?row.indexed_height, "source started");
    let writer = source.writer();
    let mut state = RunState {
        last_indexed: row.indexed_height,
        last_head: row.head_height,
        last_progress_at: Instant::now(),
        backfill_from: row.backfill_from,
        eta: EtaTracker::default(),
        log_every: Every::new(PROGRESS_LOG_EVERY),
    };
    loop {
        if cancel.is_cancelled() {
            return EngineExit::Cancelled;
        }
        match check_paused(&ctx).await {
            Ok(true) => {
                if sleep_or_cancel(config.pause_check, &cancel).await {
                    return EngineExit::Cancelled;
                }
                state.last_progress_at = Instant::now();
                state.eta.reset();
                continue;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(source = %id, error = %e, "cannot read the source row"),
        }
        let (back, exit) = pipeline(
            source,
            writer.as_ref(),
            &ctx,
            &config,
            &cancel,
            &mut state,
            &mut consecutive_errors,
        )
        .await;
        source = back;
        match exit {
            PipeExit::Cancelled => return EngineExit::Cancelled,
            PipeExit::Stalled(msg) => return EngineExit::Stalled(msg),
            PipeExit::Paused => {}
            PipeExit::Failed(e) => {
                consecutive_errors += 1;
                tracing::warn!(source = %id, error = %e, attempt = consecutive_errors, "sync step failed");
                if let SourceError::Data(q) = &e {
                    quarantine_alone(&ctx, q).await;
                }
                record_error(&ctx, &e.to_string()).await;
                state.eta.reset();
                let wait = if e.is_permanent() {
                    config.max_error_backoff
                } else {
                    error_backoff(consecutive_errors, config.max_error_backoff)
                };
                if sleep_or_cancel(wait, &cancel).await {
                    return EngineExit::Cancelled;
                }
            }
        }
        // Batches fetched ahead of the pause or the failure were dropped: start again from
        // the stored row.
        match resume_until_ok(&mut source, &ctx, &config, &cancel, &mut consecutive_errors).await {
            Some(row) => {
                state.last_indexed = row.indexed_height;
                state.backfill_from = row.backfill_from;
            }
            None => return EngineExit::Cancelled,
        }
    }
}

/// Stores a record the source could not step over (its step failed with
/// [`SourceError::Data`]), so operators see it while the step is retried.
async fn quarantine_alone(ctx: &SyncContext, q: &Quarantined) {
    let result = async {
        let txn = ctx.begin().await?;
        let n = quarantine::store(&txn, &ctx.source.id, std::slice::from_ref(q)).await?;
        txn.commit().await?;
        Ok::<_, DbErr>(n)
    }
    .await;
    match result {
        Ok(n) => count_quarantined(&ctx.source.id, n),
        Err(e) => tracing::warn!(source = %ctx.source.id, error = %e, "cannot quarantine a record"),
    }
}

fn count_quarantined(source: &str, n: u64) {
    if n > 0 {
        Metrics::global()
            .quarantined
            .with_label_values(&[source])
            .inc_by(n);
    }
}

/// Ends a step's transaction: the records it quarantined, then the cursor and heights that
/// pass them, committed together; then logs and counts the quarantined records.
async fn commit_step(
    ctx: &SyncContext,
    txn: sea_orm::DatabaseTransaction,
    state: &RunState,
    progress: &Progress,
) -> Result<source::Model, SourceError> {
    let quarantined = quarantine::store(&txn, &ctx.source.id, &progress.quarantined).await?;
    let row = write_progress(
        &txn,
        &ctx.source.id,
        progress,
        state.backfill_from,
        state_eta(state, progress),
    )
    .await?;
    txn.commit().await?;
    log_quarantined(&ctx.source.id, &progress.quarantined);
    count_quarantined(&ctx.source.id, quarantined);
    Ok(row)
}

/// Logs every record a step quarantined.
fn log_quarantined(source: &str, records: &[Quarantined]) {
    for q in records {
        tracing::warn!(source, kind = q.kind, position = %q.position, error = %q.error,
            "record quarantined; the source moves on");
    }
}

/// Makes sure the source row exists and the source has loaded its state; retries with
/// backoff. `None` when cancelled.
async fn resume_until_ok<S: Source>(
    source: &mut S,
    ctx: &SyncContext,
    config: &EngineConfig,
    cancel: &CancellationToken,
    consecutive_errors: &mut u32,
) -> Option<source::Model> {
    loop {
        let attempt = async {
            let row = ensure_row(ctx).await.map_err(SourceError::from)?;
            source.resume(ctx, &row).await?;
            Ok::<_, SourceError>(row)
        };
        match attempt.await {
            Ok(row) => {
                ctx.remember(&row);
                return Some(row);
            }
            Err(e) => {
                *consecutive_errors += 1;
                tracing::warn!(source = %ctx.source.id, error = %e, "source cannot resume");
                record_error(ctx, &e.to_string()).await;
                if sleep_or_cancel(
                    error_backoff(*consecutive_errors, config.max_error_backoff),
                    cancel,
                )
                .await
                {
                    return None;
                }
            }
        }
    }
}

/// True when an operator paused the source (and marks the row `paused` once).
async fn check_paused(ctx: &SyncContext) -> Result<bool, DbErr> {
    let Some(r) = source::Entity::find_by_id(ctx.source.id.clone())
        .one(&ctx.db)
        .await?
    else {
        return Ok(false);
    };
    if !r.paused {
        return Ok(false);
    }
    if r.status != "paused" {
        let mut am: source::ActiveModel = r.into();
        am.status = Set("paused".to_string());
        am.updated_at = Set(Utc::now());
        let row = am.update(&ctx.db).await?;
        ctx.remember(&row);
        ctx.publish_source(&row).await;
        tracing::info!(source = %ctx.source.id, "paused");
    }
    Ok(true)
}

/// Fetches and writes until an error, a pause, a stall or cancellation; gives the source
/// back with the reason. Fetching runs in its own task (so decoding the next batch uses
/// another core while this one writes), up to `source.prefetch()` batches ahead of the
/// writer (a semaphore bounds the batches in flight, so memory stays flat whatever the
/// backlog).
async fn pipeline<S: Source>(
    source: S,
    writer: &dyn BatchWriter<S::Batch>,
    ctx: &SyncContext,
    config: &EngineConfig,
    cancel: &CancellationToken,
    state: &mut RunState,
    consecutive_errors: &mut u32,
) -> (S, PipeExit) {
    let in_flight = Arc::new(Semaphore::new(source.prefetch() + 1));
    let (tx, mut rx) = mpsc::unbounded_channel::<Item<S::Batch>>();
    let poll = source.poll_interval();
    let stop = CancellationToken::new();
    let fetcher = tokio::spawn(fetch_loop(
        source,
        ctx.clone(),
        in_flight,
        tx,
        poll,
        stop.clone(),
    ));
    let writer_loop = async {
        let mut last_pause_check = Instant::now();
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return PipeExit::Cancelled,
                r = tokio::time::timeout(stall_timeout(ctx, config) + poll, rx.recv()) => r,
            };
            let (item, permit) = match next {
                Err(_) => {
                    return PipeExit::Stalled(format!(
                        "one fetch ran longer than the stall timeout ({}s)",
                        stall_timeout(ctx, config).as_secs()
                    ))
                }
                Ok(None) => {
                    return PipeExit::Failed(SourceError::Malformed(
                        "the fetch task ended without a result".into(),
                    ))
                }
                Ok(Some(x)) => x,
            };
            let fetched = match item {
                Ok(f) => f,
                Err(e) => return PipeExit::Failed(e),
            };
            let progress = match apply(ctx, writer, fetched, state).await {
                Ok(p) => p,
                Err(e) => return PipeExit::Failed(e),
            };
            drop(permit);
            *consecutive_errors = 0;
            observe(ctx, state, &progress).await;
            let behind =
                matches!((state.last_head, state.last_indexed), (Some(h), Some(i)) if h > i);
            let stall = stall_timeout(ctx, config);
            if behind && state.last_progress_at.elapsed() > stall {
                return PipeExit::Stalled(format!(
                    "indexed height stuck at {:?} for {}s while head is {:?}",
                    state.last_indexed,
                    stall.as_secs(),
                    state.last_head
                ));
            }
            if last_pause_check.elapsed() >= config.pause_check {
                last_pause_check = Instant::now();
                if matches!(check_paused(ctx).await, Ok(true)) {
                    return PipeExit::Paused;
                }
            }
        }
    };
    let exit = writer_loop.await;
    // The fetch in progress is dropped (the source resumes from the stored row next).
    stop.cancel();
    drop(rx);
    match fetcher.await {
        Ok(source) => (source, exit),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the fetch task of {} was cancelled: {e}", ctx.source.id),
    }
}

/// The fetch side of [`pipeline`]: fetches while permits last, sends each result, stops
/// after a failure, when the writer is gone or when `stop` fires; returns the source.
async fn fetch_loop<S: Source>(
    mut source: S,
    ctx: SyncContext,
    in_flight: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Item<S::Batch>>,
    poll: Duration,
    stop: CancellationToken,
) -> S {
    let ahead = source.prefetch() as u32 + 1;
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return source,
            p = in_flight.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return source,
            },
        };
        let started = Instant::now();
        let r = tokio::select! {
            _ = stop.cancelled() => return source,
            r = source.fetch(&ctx) => r,
        };
        tracing::trace!(source = %ctx.source.id, fetch_ms = started.elapsed().as_millis() as u64, "fetched");
        let failed = r.is_err();
        // Caught up (whatever was fetched): wait the poll interval before the next.
        let idle = matches!(
            &r,
            Ok(Fetched::Idle(p) | Fetched::Batch { progress: p, .. }) if p.caught_up
        );
        if tx.send((r, permit)).is_err() || failed {
            return source;
        }
        if idle {
            // Wait for the writer to record it, then for the poll interval.
            let wait = async {
                let _ = in_flight.acquire_many(ahead).await;
                tokio::time::sleep(poll).await;
            };
            tokio::select! {
                _ = stop.cancelled() => return source,
                () = wait => {}
            }
        }
    }
}

/// `sync.stall_timeout` as in force now (the runtime setting), else the engine's default.
fn stall_timeout(ctx: &SyncContext, config: &EngineConfig) -> Duration {
    ctx.settings
        .as_ref()
        .map_or(config.stall_timeout, |s| s.stall_timeout())
}

/// Writes one fetched item: begin, write or revert, progress, commit, then bus events.
async fn apply<B: Send + Sync + 'static>(
    ctx: &SyncContext,
    writer: &dyn BatchWriter<B>,
    fetched: Fetched<B>,
    state: &mut RunState,
) -> Result<Progress, SourceError> {
    match fetched {
        Fetched::Idle(mut progress) if progress.quarantined.is_empty() => {
            backfill_fields(state, &mut progress);
            ctx.touch(&progress, state.backfill_from, state_eta(state, &progress))
                .await?;
            Ok(progress)
        }
        Fetched::Idle(mut progress) => {
            // Nothing to write but quarantined records: they and the cursor that passes
            // them commit together.
            backfill_fields(state, &mut progress);
            let txn = ctx.begin().await?;
            let row = commit_step(ctx, txn, state, &progress).await?;
            ctx.remember(&row);
            ctx.publish_source(&row).await;
            Ok(progress)
        }
        Fetched::Batch {
            batch,
            mut progress,
        } => {
            backfill_fields(state, &mut progress);
            let started = Instant::now();
            let txn = ctx.begin().await?;
            let began = started.elapsed();
            let written = writer.write(&txn, &batch).await?;
            let wrote = started.elapsed();
            progress.items.extend(written.items);
            let row = commit_step(ctx, txn, state, &progress).await?;
            tracing::debug!(
                source = %ctx.source.id,
                begin_ms = began.as_millis() as u64,
                write_ms = (wrote - began).as_millis() as u64,
                commit_ms = (started.elapsed() - wrote).as_millis() as u64,
                items = ?progress.items,
                "batch committed"
            );
            if let Some(f) = written.after_commit {
                f();
            }
            ctx.remember(&row);
            for e in written.events {
                publish_logged(ctx.bus.as_ref(), e).await;
            }
            ctx.publish_source(&row).await;
            Ok(progress)
        }
        Fetched::Revert { to, mut progress } => {
            let from = state.last_indexed.unwrap_or(to);
            let depth = (from - to).max(0);
            progress.indexed_height = Some(to);
            state.backfill_from = None;
            let txn = ctx.begin().await?;
            let reverted = writer.revert(&txn, to).await?;
            let row = write_progress(&txn, &ctx.source.id, &progress, None, None).await?;
            txn.commit().await?;
            ctx.remember(&row);
            let id = &ctx.source.id;
            let m = Metrics::global();
            m.reorgs.with_label_values(&[id]).inc();
            m.reorg_depth.with_label_values(&[id]).set(depth);
            tracing::warn!(source = %id, ancestor = to, depth, orphaned = reverted.orphaned,
                "reorg: rolled back to the common ancestor");
            let event = BusEvent::new(crate::bus::payload::Reorg {
                chain: ctx.source.chain().to_string(),
                source: id.clone(),
                from_block: to + 1,
                depth,
                orphaned_events: i64::try_from(reverted.orphaned).unwrap_or(i64::MAX),
            });
            publish_logged(ctx.bus.as_ref(), event).await;
            for e in reverted.events {
                publish_logged(ctx.bus.as_ref(), e).await;
            }
            ctx.publish_source(&row).await;
            state.eta.reset();
            Ok(progress)
        }
    }
}

/// Starts (or ends) the backfill range the progress is measured over.
fn backfill_fields(state: &mut RunState, progress: &mut Progress) {
    if progress.caught_up {
        state.backfill_from = None;
        return;
    }
    let behind = matches!((progress.head_height.or(state.last_head), progress.indexed_height), (Some(h), Some(i)) if h > i);
    if behind && state.backfill_from.is_none() {
        state.backfill_from = state
            .last_indexed
            .or(progress.start_height)
            .or(progress.indexed_height);
    }
}

fn state_eta(state: &RunState, progress: &Progress) -> Option<i64> {
    if progress.caught_up {
        return Some(0);
    }
    let (Some(from), Some(i), Some(h)) = (
        state.backfill_from,
        progress.indexed_height.or(state.last_indexed),
        progress.head_height.or(state.last_head),
    ) else {
        return None;
    };
    state.eta.estimate(from, i, h).eta_seconds
}

/// Metrics, stall bookkeeping, the rate estimate and the periodic progress line.
async fn observe(ctx: &SyncContext, state: &mut RunState, progress: &Progress) {
    let id = &ctx.source.id;
    record_metrics(id, progress);
    if progress.head_height.is_some() {
        state.last_head = progress.head_height;
    }
    let now = Instant::now();
    if let Some(i) = progress.indexed_height {
        state.eta.sample(now, i);
        if progress.indexed_height != state.last_indexed {
            state.last_indexed = progress.indexed_height;
            state.last_progress_at = now;
        }
    }
    if progress.caught_up {
        state.last_progress_at = now;
        return;
    }
    if let (Some(from), Some(i), Some(h)) =
        (state.backfill_from, state.last_indexed, state.last_head)
    {
        if h > i && state.log_every.due(now) {
            let e = state.eta.estimate(from, i, h);
            tracing::info!(
                source = %id,
                done = i - from,
                total = h - from,
                percent = format!("{:.1}", e.progress * 100.0),
                rate = format!("{:.0}/s", e.rate.unwrap_or(0.0)),
                eta_seconds = e.eta_seconds,
                "backfill progress"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(60);
        assert_eq!(error_backoff(1, max), Duration::from_secs(1));
        assert_eq!(error_backoff(2, max), Duration::from_secs(2));
        assert_eq!(error_backoff(5, max), Duration::from_secs(16));
        assert_eq!(error_backoff(50, max), max);
    }
}
