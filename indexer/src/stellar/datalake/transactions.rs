//! The data-lake transactions source ([`LakeTxSource`], `stellar.index_transactions`):
//! the transactions of each ledger's close meta (envelope from the transaction set,
//! result and meta from its processing), turned into the rows the RPC transactions source
//! stores from `getTransactions` by the same code ([`rows_at`], [`TxDeriver`]):
//! operations of watched accounts with their links and transactions, DEX price buckets,
//! and distribution payouts reconciled once the balances are there.
//!
//! It shares the id `stellar:rpc:tx` with the RPC transactions source, so the handoff
//! ([`super::handoff::TxHandoffSource`]) continues one stream; its cursor is
//! `datalake:<last ledger>`, committed with the rows.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orrery_entity::source;

use super::handoff::LakeHalf;
use super::object::LedgerEvents;
use super::reader::LedgerReader;
use super::source::{parse_cursor, LakeStats};
use super::store::LakeStore;
use crate::stellar::distributions;
use crate::stellar::rpc::operations::{rows_at, TxPlace};
use crate::stellar::rpc::transactions::{
    self as rpc_tx, events_caught_up, TxBatch, TxDeriver, TxRef, TxWriter,
};
use crate::stellar::settings::StellarSettings;
use crate::sync::{
    BatchWriter, Fetched, Progress, Source, SourceDescriptor, SourceError, SyncContext,
};

/// Its descriptor (the RPC transactions source's id).
pub fn descriptor() -> SourceDescriptor {
    SourceDescriptor {
        name: "Stellar (data lake, then RPC transactions)".into(),
        ..rpc_tx::descriptor()
    }
}

/// The data-lake transactions source.
pub struct LakeTxSource {
    settings: StellarSettings,
    reader: LedgerReader,
    /// Rows from the decoded transactions (made on the first fetch).
    deriver: Option<TxDeriver>,
    /// Upstream head to report (the RPC node's latest during a handoff).
    head: Option<u32>,
    /// Transactions at or before this TOID were already stored (after a switch back from
    /// RPC inside a ledger).
    after_tx: Option<i64>,
    start_height: Option<i64>,
    stats: Arc<LakeStats>,
}

impl LakeTxSource {
    /// A source reading `store` from `stellar.datalake_start_ledger` (default 2) through
    /// `stellar.datalake_end_ledger`.
    pub fn new(store: Arc<LakeStore>, settings: StellarSettings) -> Self {
        let stats: Arc<LakeStats> = Arc::default();
        let first = first_ledger(&settings);
        let reader = LedgerReader::new(
            store,
            settings.datalake_concurrency,
            first,
            settings.datalake_end_ledger,
            true,
            stats.clone(),
        );
        Self {
            settings,
            reader,
            deriver: None,
            head: None,
            after_tx: None,
            start_height: None,
            stats,
        }
    }

    fn progress(&self, indexed: Option<u32>, caught_up: bool) -> Progress {
        let inside = self.after_tx.is_some();
        self.reader
            .progress(indexed, inside, self.head, self.start_height, caught_up)
    }

    /// Distribution payouts are matched once the balances have reached `ledger`.
    async fn reconcile(&self, ctx: &SyncContext, ledger: u32) -> Result<(), SourceError> {
        if events_caught_up(ctx, i64::from(ledger)).await? {
            distributions::reconcile(ctx, None, &self.settings).await?;
        }
        Ok(())
    }

    /// The rows of `ledgers`' transactions.
    async fn derive(
        &mut self,
        ctx: &SyncContext,
        ledgers: &[LedgerEvents],
    ) -> Result<(TxBatch, Option<chrono::DateTime<chrono::Utc>>), SourceError> {
        let after = self.after_tx;
        let txs = ledgers.iter().flat_map(|l| {
            l.txs
                .iter()
                .filter(move |t| {
                    let toid = crate::stellar::rpc::meta::tx_toid(l.sequence, t.application_order);
                    after.is_none_or(|a| toid > a)
                })
                .map(move |t| {
                    let place = TxPlace {
                        ledger: l.sequence,
                        application_order: t.application_order,
                        created_at: l.closed_at.timestamp(),
                        successful: t.successful,
                        events: None,
                    };
                    let at = TxRef {
                        ledger: l.sequence,
                        application_order: t.application_order,
                    };
                    (at, rows_at(&place, &t.tx))
                })
        });
        let txs: Vec<_> = txs.collect();
        let deriver = match self.deriver.as_mut() {
            Some(d) => d,
            None => self.deriver.insert(TxDeriver::new(self.settings.clone())?),
        };
        deriver.derive(ctx, txs).await
    }
}

/// The first ledger read when nothing is stored.
fn first_ledger(settings: &StellarSettings) -> u32 {
    settings.datalake_start_ledger.unwrap_or(2).max(1)
}

#[async_trait]
impl Source for LakeTxSource {
    type Batch = TxBatch;

    fn descriptor(&self) -> SourceDescriptor {
        descriptor()
    }

    async fn resume(
        &mut self,
        _ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        LakeHalf::position(self, stored.cursor.as_deref());
        Ok(())
    }

    async fn fetch(&mut self, ctx: &SyncContext) -> Result<Fetched<TxBatch>, SourceError> {
        if !self.reader.ready() {
            self.reader.schema().await?;
        }
        let Some(ledgers) = self.reader.take().await? else {
            if let Some(last) = self.reader.next_ledger().checked_sub(1) {
                self.reconcile(ctx, last).await?;
            }
            return Ok(Fetched::Idle(self.progress(None, true)));
        };
        let (batch, newest_at) = self.derive(ctx, &ledgers).await?;
        let last = ledgers
            .last()
            .map_or(self.reader.next_ledger(), |l| l.sequence);
        let (mut txs, mut ops) = (0, 0);
        for l in &ledgers {
            txs += l.transactions;
            ops += l.operations;
        }
        self.reader.passed(last);
        self.after_tx = None;
        if let Some(d) = self.deriver.as_mut() {
            d.ensured();
        }
        let s = &self.stats;
        s.ledgers.fetch_add(ledgers.len() as u64, Ordering::Relaxed);
        s.transactions.fetch_add(txs, Ordering::Relaxed);
        s.operations.fetch_add(ops, Ordering::Relaxed);
        let done = self.reader.end().is_some_and(|e| last >= e);
        let mut progress = self.progress(Some(last), done);
        progress.newest_item_at = newest_at.or_else(|| ledgers.last().map(|l| l.closed_at));
        progress.items = vec![
            ("ledger", ledgers.len() as u64),
            ("operation", batch.ops.len() as u64),
        ];
        Ok(Fetched::Batch { batch, progress })
    }

    fn writer(&self) -> Arc<dyn BatchWriter<TxBatch>> {
        Arc::new(TxWriter)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms.max(1))
    }
}

impl LakeHalf for LakeTxSource {
    fn reader(&self) -> &LedgerReader {
        &self.reader
    }

    fn reader_mut(&mut self) -> &mut LedgerReader {
        &mut self.reader
    }

    fn set_head(&mut self, head: u32) {
        self.head = Some(head);
    }

    /// A data-lake cursor resumes after its ledger; a `getTransactions` cursor (a TOID)
    /// re-reads its ledger, skipping the transactions up to it.
    fn position(&mut self, cursor: Option<&str>) {
        self.reader.stop();
        self.after_tx = None;
        if let Some(d) = self.deriver.as_mut() {
            d.reset();
        }
        match cursor {
            Some(c) => match parse_cursor(c) {
                Some(l) => self.reader.seek(l.saturating_add(1)),
                None => {
                    if let Some(toid) = c.parse::<i64>().ok().filter(|t| *t >= 0) {
                        self.reader.seek((toid >> 32) as u32);
                        self.after_tx = Some(toid);
                    }
                }
            },
            None => {
                let first = first_ledger(&self.settings);
                self.reader.seek(first);
                self.start_height = Some(i64::from(first));
            }
        }
    }

    fn rpc_cursor(&self) -> Option<String> {
        self.after_tx.map(|t| t.to_string())
    }

    fn idle(&self, caught_up: bool) -> Progress {
        self.progress(None, caught_up)
    }
}
