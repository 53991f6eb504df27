//! Work done once the live stream is caught up, in order: resync requests, reconciliation
//! of accounts the stream touched, distributions, rediscovery, DEX prices. A chore that has
//! rows to write returns them as the fetch's batch; the rest run on the next fetch.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::future::join_all;
use orrery_entity::stellar_sync_state;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::pages::{fetch_page, PageFetch};
use super::StellarSource;
use crate::stellar::batch::{StellarBatch, TargetedRange};
use crate::stellar::resync::{self, ResyncMode, REQUESTED};
use crate::stellar::{dex, distributions};
use crate::sync::{Fetched, Progress, SourceError, SyncContext};

/// One piece of caught-up work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chore {
    /// Resync requests (`status = 'requested'`).
    Requests,
    /// Balances of accounts the stream touched, a few per fetch.
    Reconcile,
    /// Distribution rules and payments.
    Distributions,
    /// New holders, every `discover_interval_secs`.
    Rediscover,
    /// DEX prices, every `dex_interval_secs`.
    Prices,
}

impl Chore {
    /// Every chore, in the order they run.
    pub(super) const ALL: [Chore; 5] = [
        Chore::Requests,
        Chore::Reconcile,
        Chore::Distributions,
        Chore::Rediscover,
        Chore::Prices,
    ];
}

/// A batch written while the source follows the stream.
fn caught_up(batch: StellarBatch) -> Fetched<StellarBatch> {
    Fetched::Batch {
        batch,
        progress: Progress {
            caught_up: true,
            ..Default::default()
        },
    }
}

impl StellarSource {
    /// Runs queued chores until one has a batch to write.
    pub(super) async fn run_chores(
        &mut self,
        ctx: &SyncContext,
    ) -> Result<Option<Fetched<StellarBatch>>, SourceError> {
        while let Some(chore) = self.chores.pop_front() {
            let fetched = match chore {
                Chore::Requests => {
                    let f = self.pick_requests(ctx).await?;
                    if f.is_some() {
                        // More requests may be waiting behind this one.
                        self.chores.push_front(Chore::Requests);
                    }
                    f
                }
                Chore::Reconcile => self.reconcile(ctx).await?,
                Chore::Distributions => {
                    // Distributions keep their own rows and transactions.
                    distributions::reconcile(ctx, Some(&self.client), &self.settings).await?;
                    None
                }
                Chore::Rediscover => self.rediscover().await?,
                Chore::Prices => {
                    self.sync_prices(ctx).await?;
                    None
                }
            };
            if fetched.is_some() {
                return Ok(fetched);
            }
        }
        Ok(None)
    }

    /// Takes up resync requests of watched accounts: `full` ones replay on the next backfill
    /// round, incremental ones are marked taken (a `Picked` batch) and caught up from their
    /// cursor, a targeted one is fetched (one per fetch).
    async fn pick_requests(
        &mut self,
        ctx: &SyncContext,
    ) -> Result<Option<Fetched<StellarBatch>>, SourceError> {
        let rows = stellar_sync_state::Entity::find()
            .filter(stellar_sync_state::Column::Status.eq(REQUESTED))
            .all(&ctx.db)
            .await?;
        let mut picked = Vec::new();
        let mut targeted = None;
        for r in rows {
            // Requests of unwatched accounts wait until the account is watched again.
            let Some(st) = self.accounts.get_mut(&r.account_id) else {
                continue;
            };
            match ResyncMode::parse(&r.mode) {
                Some(ResyncMode::Targeted {
                    from_ledger,
                    to_ledger,
                }) => {
                    if targeted.is_none() {
                        targeted =
                            Some((r.account_id, r.mode, from_ledger, to_ledger, st.caught_up));
                    }
                }
                Some(ResyncMode::Full) => {
                    st.caught_up = false;
                    st.full = true;
                }
                // Anything else requested is an incremental catch-up.
                _ => {
                    st.caught_up = false;
                    picked.push((r.account_id, r.mode));
                }
            }
        }
        if !picked.is_empty() {
            return Ok(Some(Fetched::Batch {
                batch: StellarBatch::Picked { requests: picked },
                progress: Progress::default(),
            }));
        }
        let Some((account, mode, from, to, caught_up)) = targeted else {
            return Ok(None);
        };
        let (ops, quarantined) =
            resync::fetch_range(&self.client, &account, from, to, self.limit()).await?;
        Ok(Some(Fetched::Batch {
            batch: StellarBatch::Targeted(TargetedRange {
                account,
                mode,
                from,
                to,
                ops,
                caught_up,
            }),
            progress: Progress {
                caught_up: true,
                quarantined,
                ..Default::default()
            },
        }))
    }

    /// Reconciles a few accounts the live stream touched: their new operations (if any) and
    /// their record, compared with the replayed balances. Accounts due for a backfill round
    /// are left to it (it takes the record too).
    async fn reconcile(
        &mut self,
        ctx: &SyncContext,
    ) -> Result<Option<Fetched<StellarBatch>>, SourceError> {
        if !self.settings.reconcile {
            return Ok(None);
        }
        let batch: Vec<(String, i64)> = self
            .dirty
            .iter()
            .filter_map(|a| {
                let st = self.accounts.get(a)?;
                (st.caught_up && !st.full).then(|| (a.clone(), st.cursor))
            })
            .take(self.settings.account_concurrency.max(1))
            .collect();
        if batch.is_empty() {
            return Ok(None);
        }
        let limit = self.limit();
        let futs = batch
            .into_iter()
            .map(|(a, c)| fetch_page(&self.client, a, c, limit, false, true));
        let fetched: Result<Vec<PageFetch>, SourceError> =
            join_all(futs).await.into_iter().collect();
        self.stage_pages(ctx, fetched?, true).await.map(Some)
    }

    /// Re-runs discovery every `discover_interval_secs`: new holders are stored (a
    /// `Discover` batch) and, once committed, picked up by the watched-set check and
    /// backfilled from the start; the live stream applies to them only what comes after
    /// their own cursor. Holders an operator unwatched stay unwatched: the database decides.
    async fn rediscover(&mut self) -> Result<Option<Fetched<StellarBatch>>, SourceError> {
        let due = self.settings.discover
            && self.last_discovery.is_some_and(|t| {
                t.elapsed() >= Duration::from_secs(self.settings.discover_interval_secs)
            });
        if !due {
            return Ok(None);
        }
        let mut new: Vec<(String, String)> = self
            .holders()
            .await?
            .into_iter()
            .filter(|(id, _)| !self.accounts.contains_key(id))
            .collect();
        self.last_discovery = Some(Instant::now());
        let mut seen = BTreeSet::new();
        new.retain(|(id, _)| seen.insert(id.clone()));
        if new.is_empty() {
            return Ok(None);
        }
        tracing::info!(new = new.len(), "stellar: discovered new holders");
        // The next fetch compares the watched set with the database again.
        self.last_watch_check = None;
        Ok(Some(caught_up(StellarBatch::Discover { accounts: new })))
    }

    /// Fetches and stores DEX prices every `dex_interval_secs` (their own rows).
    async fn sync_prices(&mut self, ctx: &SyncContext) -> Result<(), SourceError> {
        let due = self
            .last_prices
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(self.settings.dex_interval_secs));
        if !self.pairs.is_empty() && due {
            dex::sync_prices(
                ctx,
                &self.client,
                &self.pairs,
                self.settings.dex_resolution_ms,
            )
            .await?;
            self.last_prices = Some(Instant::now());
        }
        Ok(())
    }
}
