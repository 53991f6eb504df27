//! Runs source tasks and restarts the ones that panic or stall, with backoff; a failing
//! source never takes the server down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::commands;
use super::engine::record_error;
use super::{run_source, EngineConfig, EngineExit, Source, SyncContext};
use crate::metrics::Metrics;

/// How often a running source's pending commands are checked.
const COMMAND_POLL: Duration = Duration::from_secs(2);

/// Starts a fresh instance of a source under the engine (after a restart the old one is
/// gone); build one with [`factory`].
pub type SourceFactory = Arc<
    dyn Fn(SyncContext, EngineConfig, CancellationToken) -> BoxFuture<'static, EngineExit>
        + Send
        + Sync,
>;

/// A [`SourceFactory`] running the sources `make` builds.
pub fn factory<S: Source, F>(make: F) -> SourceFactory
where
    F: Fn() -> S + Send + Sync + 'static,
{
    Arc::new(move |ctx, config, cancel| Box::pin(run_source(make(), ctx, config, cancel)))
}

/// Owns every source task.
pub struct Supervisor {
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    /// An empty supervisor.
    pub fn new() -> Self {
        Self {
            cancel: CancellationToken::new(),
            tasks: JoinSet::new(),
        }
    }

    /// The token that stops every task.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs a source built by `factory`, restarting it after a panic or stall.
    pub fn spawn(&mut self, factory: SourceFactory, ctx: SyncContext, config: EngineConfig) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            let id = ctx.source.id.clone();
            let mut restarts = 0u32;
            loop {
                let started = Instant::now();
                let child = cancel.child_token();
                let mut task = tokio::spawn(factory(ctx.clone(), config.clone(), child.clone()));
                let mut poll = tokio::time::interval(COMMAND_POLL);
                let joined = loop {
                    tokio::select! {
                        r = &mut task => break Some(r),
                        _ = poll.tick() => {
                            match commands::claim_next(&ctx).await {
                                Ok(Some(cmd)) => {
                                    // Stop the task first so it cannot commit over the command.
                                    child.cancel();
                                    let _ = (&mut task).await;
                                    commands::apply(&ctx, &cmd).await;
                                    break None;
                                }
                                Ok(None) => {}
                                Err(e) => tracing::warn!(source = %id, error = %e, "cannot read source commands"),
                            }
                        }
                    }
                };
                let Some(joined) = joined else {
                    // A command was applied: start again at once from the stored state.
                    continue;
                };
                let reason = match joined {
                    Ok(EngineExit::Cancelled) => return,
                    Ok(EngineExit::Stalled(msg)) => {
                        tracing::error!(source = %id, reason = %msg, "source stalled; restarting");
                        record_error(&ctx, &format!("stalled: {msg}")).await;
                        "stall"
                    }
                    Err(e) if e.is_panic() => {
                        tracing::error!(source = %id, "source task panicked; restarting");
                        record_error(&ctx, "source task panicked; restarted").await;
                        "panic"
                    }
                    Err(_) => return,
                };
                Metrics::global()
                    .source_restarts
                    .with_label_values(&[&id, reason])
                    .inc();
                if started.elapsed() > Duration::from_secs(300) {
                    restarts = 0;
                }
                restarts += 1;
                let wait = Duration::from_secs(1u64 << restarts.min(6));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// Stops every task, waiting at most `grace`.
    pub async fn shutdown(mut self, grace: Duration) {
        self.cancel.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            self.tasks.abort_all();
        }
    }
}
