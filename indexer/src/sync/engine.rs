//! One source's run loop: step, commit, wait, retry; pause and stall handling.

use std::time::{Duration, Instant};

use chrono::Utc;
use orrery_entity::source;
use sea_orm::{ActiveModelTrait, DbErr, EntityTrait, Set};
use tokio_util::sync::CancellationToken;

use super::{Progress, Source, SourceError, SyncContext};
use crate::metrics::Metrics;

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
        let row = source::Entity::find_by_id(ctx.source.id.clone())
            .one(&ctx.db)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound(ctx.source.id.clone()))?;
        let mut am: source::ActiveModel = row.clone().into();
        am.status = Set("error".to_string());
        am.error_count = Set(row.error_count.saturating_add(1));
        am.last_error = Set(Some(message.chars().take(2000).collect()));
        am.updated_at = Set(Utc::now());
        am.update(&ctx.db).await
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

fn error_backoff(consecutive: u32, max: Duration) -> Duration {
    let secs = 1u64
        .checked_shl(consecutive.saturating_sub(1).min(16))
        .unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(max)
}

/// Runs `source` until cancelled or stalled. Errors never end the loop: they are recorded on
/// the source row and retried with exponential backoff.
pub async fn run_source(
    mut source: Box<dyn Source>,
    ctx: SyncContext,
    config: EngineConfig,
    cancel: CancellationToken,
) -> EngineExit {
    let id = ctx.source.id.clone();
    Metrics::global().touch_source(&id);
    let mut consecutive_errors = 0u32;
    // Set up: the row, then the source's own state.
    let row = loop {
        let attempt = async {
            let row = ensure_row(&ctx).await.map_err(SourceError::from)?;
            source.resume(&ctx, &row).await?;
            Ok::<_, SourceError>(row)
        };
        match attempt.await {
            Ok(row) => break row,
            Err(e) => {
                consecutive_errors += 1;
                tracing::warn!(source = %id, error = %e, "source cannot resume");
                record_error(&ctx, &e.to_string()).await;
                if sleep_or_cancel(
                    error_backoff(consecutive_errors, config.max_error_backoff),
                    &cancel,
                )
                .await
                {
                    return EngineExit::Cancelled;
                }
            }
        }
    };
    ctx.remember(&row);
    let mut last_indexed = row.indexed_height;
    let mut last_head = row.head_height;
    let mut last_progress_at = Instant::now();
    tracing::info!(source = %id, cursor = ?row.cursor, height = ?row.indexed_height, "source started");

    loop {
        if cancel.is_cancelled() {
            return EngineExit::Cancelled;
        }
        match source::Entity::find_by_id(id.clone()).one(&ctx.db).await {
            Ok(Some(r)) if r.paused => {
                if r.status != "paused" {
                    let mut am: source::ActiveModel = r.into();
                    am.status = Set("paused".to_string());
                    am.updated_at = Set(Utc::now());
                    if let Ok(row) = am.update(&ctx.db).await {
                        ctx.remember(&row);
                        ctx.publish_source(&row).await;
                    }
                    tracing::info!(source = %id, "paused");
                }
                if sleep_or_cancel(config.pause_check, &cancel).await {
                    return EngineExit::Cancelled;
                }
                last_progress_at = Instant::now();
                continue;
            }
            _ => {}
        }

        let step = tokio::select! {
            _ = cancel.cancelled() => return EngineExit::Cancelled,
            r = tokio::time::timeout(config.stall_timeout, source.step(&ctx)) => r,
        };
        let wait = match step {
            Err(_) => {
                return EngineExit::Stalled(format!(
                    "one step ran longer than the stall timeout ({}s)",
                    config.stall_timeout.as_secs()
                ))
            }
            Ok(Ok(progress)) => {
                consecutive_errors = 0;
                record_metrics(&id, &progress);
                let committed: u64 = progress.items.iter().map(|(_, n)| n).sum();
                if committed == 0 {
                    if let Err(e) = ctx.touch(&progress).await {
                        tracing::warn!(source = %id, error = %e, "cannot record source progress");
                    }
                }
                if progress.head_height.is_some() {
                    last_head = progress.head_height;
                }
                if progress.indexed_height.is_some() && progress.indexed_height != last_indexed {
                    last_indexed = progress.indexed_height;
                    last_progress_at = Instant::now();
                }
                if progress.caught_up {
                    last_progress_at = Instant::now();
                    Some(source.poll_interval())
                } else {
                    None
                }
            }
            Ok(Err(e)) => {
                consecutive_errors += 1;
                tracing::warn!(source = %id, error = %e, attempt = consecutive_errors, "sync step failed");
                record_error(&ctx, &e.to_string()).await;
                Some(error_backoff(consecutive_errors, config.max_error_backoff))
            }
        };
        let behind = matches!((last_head, last_indexed), (Some(h), Some(i)) if h > i);
        if behind && last_progress_at.elapsed() > config.stall_timeout {
            return EngineExit::Stalled(format!(
                "indexed height stuck at {:?} for {}s while head is {:?}",
                last_indexed,
                config.stall_timeout.as_secs(),
                last_head
            ));
        }
        if let Some(wait) = wait {
            if sleep_or_cancel(wait, &cancel).await {
                return EngineExit::Cancelled;
            }
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
