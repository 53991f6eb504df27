//! Runs source tasks and restarts the ones that panic or stall, with backoff; a failing
//! source never takes the server down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::commands;
use super::engine::record_error;
use super::lease::{LeaseEnd, Leases};
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

/// Hands the source's lease back, when it has one.
async fn release(ctx: &SyncContext) {
    if let Some(lease) = &ctx.lease {
        lease.release().await;
    }
}

/// Owns every source task.
pub struct Supervisor {
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    leases: Option<Leases>,
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
            leases: None,
        }
    }

    /// Runs each source only while this replica holds its lease (several replicas on one
    /// PostgreSQL database); the heartbeat runs until [`Supervisor::shutdown`].
    pub fn with_leases(mut self, leases: Leases) -> Self {
        let heartbeat = leases.spawn_heartbeat(self.cancel.clone());
        self.tasks.spawn(async move {
            let _ = heartbeat.await;
        });
        self.leases = Some(leases);
        self
    }

    /// The token that stops every task.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs a source built by `factory`, restarting it after a panic or stall. With leases,
    /// it runs only while this replica holds the source's lease: it waits for the lease,
    /// stops the task when the lease is lost or handed back, and waits again.
    pub fn spawn(&mut self, factory: SourceFactory, ctx: SyncContext, config: EngineConfig) {
        let cancel = self.cancel.clone();
        let ctx = match &self.leases {
            Some(leases) => {
                let lease = leases.lease(&ctx.source.id);
                ctx.with_lease(lease)
            }
            None => ctx,
        };
        self.tasks.spawn(async move {
            let id = ctx.source.id.clone();
            let mut restarts = 0u32;
            loop {
                if let Some(lease) = &ctx.lease {
                    if lease.token().is_none() && lease.acquire(&cancel).await.is_none() {
                        return;
                    }
                }
                let started = Instant::now();
                let child = cancel.child_token();
                let mut task = tokio::spawn(factory(ctx.clone(), config.clone(), child.clone()));
                let mut poll = tokio::time::interval(COMMAND_POLL);
                let hold = async {
                    match &ctx.lease {
                        Some(lease) => lease.hold(&cancel).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(hold);
                let joined = loop {
                    tokio::select! {
                        r = &mut task => break Some(r),
                        end = &mut hold => {
                            child.cancel();
                            let _ = (&mut task).await;
                            match end {
                                LeaseEnd::Cancelled => {
                                    release(&ctx).await;
                                    return;
                                }
                                LeaseEnd::Shed => {
                                    tracing::info!(source = %id, "lease handed back to spread sources across replicas");
                                    release(&ctx).await;
                                }
                                LeaseEnd::Lost(why) => {
                                    tracing::warn!(source = %id, reason = %why, "lease lost: stopped the source; standing by");
                                }
                            }
                            break None;
                        }
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
                    // A command was applied, or the lease changed hands: start again from the
                    // stored state (after taking the lease again, when leased).
                    continue;
                };
                let reason = match joined {
                    Ok(EngineExit::Cancelled) => {
                        release(&ctx).await;
                        return;
                    }
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
                    Err(_) => {
                        release(&ctx).await;
                        return;
                    }
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
                    _ = cancel.cancelled() => {
                        release(&ctx).await;
                        return;
                    }
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
