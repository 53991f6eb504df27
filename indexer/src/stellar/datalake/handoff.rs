//! Backfill from the data lake up to the Stellar RPC node's oldest retained ledger, then
//! follow RPC from the next ledger ([`Handoff`]): one source id and one cursor, so no gap
//! and no duplicate. When the node's window moves past the handoff ledger during the
//! switch (the RPC half's first start is refused as outside retention), the lake reads on
//! to the new oldest ledger and switches again.
//!
//! The same handoff serves both Stellar streams: token-event balances ([`LakeSource`] then
//! [`RpcSource`]) and transactions ([`LakeTxSource`] then [`RpcTxSource`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orrery_entity::source;

use super::reader::LedgerReader;
use super::source::{parse_cursor, LakeSource, LakeStats};
use super::store::LakeStore;
use super::transactions::LakeTxSource;
use crate::stellar::rpc::source::source_error;
use crate::stellar::rpc::{RpcClient, RpcSource, RpcTxSource};
use crate::stellar::settings::StellarSettings;
use crate::sync::{
    BatchWriter, Fetched, Progress, Source, SourceDescriptor, SourceError, SyncContext,
};

/// The data-lake half of a handoff.
pub trait LakeHalf: Source {
    /// Its ordered ledger reader.
    fn reader(&self) -> &LedgerReader;
    /// The same, to move.
    fn reader_mut(&mut self) -> &mut LedgerReader;
    /// The next ledger it would read.
    fn next_ledger(&self) -> u32 {
        self.reader().next_ledger()
    }
    /// The upstream head to report.
    fn set_head(&mut self, head: u32);
    /// The last ledger to read (inclusive).
    fn set_end(&mut self, end: Option<u32>) {
        self.reader_mut().set_end(end);
    }
    /// Moves to just after `cursor` (its own, or the RPC half's), dropping what was read
    /// ahead.
    fn position(&mut self, cursor: Option<&str>);
    /// Stops reading ahead (the RPC half takes over).
    fn stop(&mut self) {
        self.reader_mut().stop();
    }
    /// The RPC half's cursor to start from when the lake stopped inside a ledger the RPC
    /// half had begun (after a switch back), else `None` (start at the next ledger).
    fn rpc_cursor(&self) -> Option<String>;
    /// Progress of a step that read nothing.
    fn idle(&self, caught_up: bool) -> Progress;
    /// Its counters.
    fn stats(&self) -> Arc<LakeStats> {
        self.reader().stats()
    }
}

/// The RPC half of a handoff.
pub trait RpcHalf: Source {
    /// A source following `rpc` from `ledger` on (unless resumed from a cursor).
    fn starting_at(rpc: RpcClient, settings: StellarSettings, ledger: u32) -> Self;
    /// The next ledger after the RPC half's `cursor` (`None`: not one of its cursors).
    fn ledger_after(cursor: &str) -> Option<u32>;
}

/// Which half of the stream a [`Handoff`] is in.
enum Phase<R> {
    /// Backfilling from the data lake up to the RPC node's oldest ledger.
    Lake,
    /// Following RPC.
    Rpc(Box<R>),
}

/// The data lake, then RPC (see the module docs).
pub struct Handoff<L, R> {
    lake: L,
    rpc: RpcClient,
    settings: StellarSettings,
    phase: Phase<R>,
    /// The row last resumed from (the RPC half resumes from it).
    stored: Option<source::Model>,
}

/// Token-event balances: the data lake, then `getEvents`.
pub type HandoffSource = Handoff<LakeSource, RpcSource>;

/// Transactions and operations: the data lake, then `getTransactions`.
pub type TxHandoffSource = Handoff<LakeTxSource, RpcTxSource>;

impl HandoffSource {
    /// The balance stream reading `store`, then `rpc`.
    pub fn new(store: Arc<LakeStore>, rpc: RpcClient, settings: StellarSettings) -> Self {
        Self::of(LakeSource::new(store, settings.clone()), rpc, settings)
    }
}

impl TxHandoffSource {
    /// The transaction stream reading `store`, then `rpc`.
    pub fn new(store: Arc<LakeStore>, rpc: RpcClient, settings: StellarSettings) -> Self {
        Self::of(LakeTxSource::new(store, settings.clone()), rpc, settings)
    }
}

impl<L: LakeHalf, R: RpcHalf<Batch = L::Batch>> Handoff<L, R> {
    /// `lake`, then `rpc`.
    pub fn of(lake: L, rpc: RpcClient, settings: StellarSettings) -> Self {
        Self {
            lake,
            rpc,
            settings,
            phase: Phase::Lake,
            stored: None,
        }
    }

    /// Its data-lake half's counters.
    pub fn stats(&self) -> Arc<LakeStats> {
        self.lake.stats()
    }

    fn rpc_from(&self, ledger: u32) -> R {
        R::starting_at(self.rpc.clone(), self.settings.clone(), ledger)
    }
}

#[async_trait]
impl<L: LakeHalf, R: RpcHalf<Batch = L::Batch>> Source for Handoff<L, R> {
    type Batch = L::Batch;

    fn descriptor(&self) -> SourceDescriptor {
        self.lake.descriptor()
    }

    async fn resume(
        &mut self,
        ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.stored = Some(stored.clone());
        match stored.cursor.as_deref() {
            Some(c) if parse_cursor(c).is_none() => {
                let mut rpc = self.rpc_from(1);
                rpc.resume(ctx, stored).await?;
                self.phase = Phase::Rpc(Box::new(rpc));
            }
            c => {
                self.lake.position(c);
                self.phase = Phase::Lake;
            }
        }
        Ok(())
    }

    async fn fetch(&mut self, ctx: &SyncContext) -> Result<Fetched<L::Batch>, SourceError> {
        if let Phase::Rpc(rpc) = &mut self.phase {
            return match rpc.fetch(ctx).await {
                Err(SourceError::Config(msg)) => {
                    // The window may have moved past where RPC starts: back to the lake.
                    let health = self.rpc.get_health().await.map_err(source_error)?;
                    let stored = ctx.last_row().or_else(|| self.stored.clone());
                    let cursor = stored.as_ref().and_then(|r| r.cursor.clone());
                    let resume_at = cursor.as_deref().and_then(|c| {
                        parse_cursor(c)
                            .map(|l| l + 1)
                            .or_else(|| R::ledger_after(c))
                    });
                    match resume_at {
                        Some(n) if n < health.oldest_ledger => {
                            tracing::warn!(next = n, oldest = health.oldest_ledger, "stellar: the RPC window moved past the handoff ledger; reading on from the data lake");
                            self.lake.position(cursor.as_deref());
                            self.phase = Phase::Lake;
                            Ok(Fetched::Idle(self.lake.idle(false)))
                        }
                        _ => Err(SourceError::Config(msg)),
                    }
                }
                r => r,
            };
        }
        let health = self.rpc.get_health().await.map_err(source_error)?;
        let next = self.lake.next_ledger();
        if next >= health.oldest_ledger && next <= health.latest_ledger.saturating_add(1) {
            tracing::info!(
                source = %self.lake.descriptor().id,
                ledger = next,
                oldest = health.oldest_ledger,
                "stellar: data lake backfill done; following RPC"
            );
            let mut rpc = self.rpc_from(next);
            let mut row = self
                .stored
                .clone()
                .or_else(|| ctx.last_row())
                .ok_or_else(|| {
                    SourceError::Malformed("handoff: no source row to resume RPC from".into())
                })?;
            // Inside a ledger the RPC half had begun: what it did up to its cursor is done.
            row.cursor = self.lake.rpc_cursor();
            rpc.resume(ctx, &row).await?;
            self.lake.stop();
            self.phase = Phase::Rpc(Box::new(rpc));
            return Ok(Fetched::Idle(self.lake.idle(false)));
        }
        self.lake.set_head(health.latest_ledger);
        self.lake.set_end(Some(
            health
                .oldest_ledger
                .saturating_sub(1)
                .max(next.saturating_sub(1)),
        ));
        match self.lake.fetch(ctx).await? {
            // The lake is done up to the window: not caught up, switch on the next fetch.
            Fetched::Idle(mut p) => {
                p.caught_up = self.lake.next_ledger() < health.oldest_ledger;
                Ok(Fetched::Idle(p))
            }
            Fetched::Batch {
                batch,
                mut progress,
            } => {
                progress.caught_up = false;
                Ok(Fetched::Batch { batch, progress })
            }
            other => Ok(other),
        }
    }

    fn writer(&self) -> Arc<dyn BatchWriter<L::Batch>> {
        self.lake.writer()
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms.max(1))
    }
}

impl RpcHalf for RpcSource {
    fn starting_at(rpc: RpcClient, mut settings: StellarSettings, ledger: u32) -> Self {
        settings.rpc_start_ledger = Some(ledger);
        RpcSource::new(rpc, settings)
    }

    /// `<TOID>-<index>`: the ledger the event is in, plus one.
    fn ledger_after(cursor: &str) -> Option<u32> {
        let ledger = crate::stellar::rpc::source::cursor_ledger(cursor)?;
        u32::try_from(ledger).ok()?.checked_add(1)
    }
}

impl RpcHalf for RpcTxSource {
    fn starting_at(rpc: RpcClient, mut settings: StellarSettings, ledger: u32) -> Self {
        settings.rpc_start_ledger = Some(ledger);
        RpcTxSource::new(rpc, settings)
    }

    /// A `getTransactions` cursor is a TOID: its ledger, plus one.
    fn ledger_after(cursor: &str) -> Option<u32> {
        let ledger = crate::stellar::rpc::transactions::cursor_ledger(cursor)?;
        u32::try_from(ledger).ok()?.checked_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_cursors_name_the_ledger_after_them() {
        let toid = (7i64 << 32) | (3 << 12);
        assert_eq!(
            <RpcSource as RpcHalf>::ledger_after(&format!("{toid:019}-0000000002")),
            Some(8)
        );
        assert_eq!(<RpcSource as RpcHalf>::ledger_after("datalake:7"), None);
        assert_eq!(
            <RpcTxSource as RpcHalf>::ledger_after(&toid.to_string()),
            Some(8)
        );
        assert_eq!(<RpcTxSource as RpcHalf>::ledger_after("x"), None);
    }
}
