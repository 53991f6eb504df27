//! The `stellar:rpc:tx` source (`stellar.index_transactions = true`): follows
//! `getTransactions` and stores what the Horizon path stores for watched accounts:
//! operations decoded from the envelopes ([`super::operations`]), the accounts' links to
//! them, their transactions (memo from the envelope), distribution payouts matched against
//! them, and DEX price buckets of `stellar.dex_pairs` aggregated from the trades in the
//! transaction results ([`super::dex`]).
//!
//! Each fetch reads one page (<= 200 transactions) after the stored cursor (or from the
//! start ledger on the first run); the engine commits its rows together with the page's
//! cursor, so restarts neither lose nor duplicate a transaction (rows are also idempotent:
//! operations and links are keyed by TOID, price buckets are written whole).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orrery_entity::{price_point, source, stellar_account, stellar_transaction};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::client::{RpcClient, RpcError, Start, MAX_PAGE_LIMIT};
use super::dex::{Aggregator, Bucket};
use super::operations::{decode_record, OpError, RpcTx, TxRow};
use super::source::source_error;
use crate::bus::payload::OperationIndexed;
use crate::bus::BusEvent;
use crate::stellar::dex::{self as horizon_dex, Pair, PRICE_SOURCE};
use crate::stellar::horizon::{AssetKey, DecodedOp};
use crate::stellar::settings::StellarSettings;
use crate::stellar::{distributions, store};
use crate::sync::{
    BatchWriter, Fetched, Progress, Reverted, Source, SourceDescriptor, SourceError, SyncContext,
    Written,
};

/// Source id in the `source` table.
pub const SOURCE_ID: &str = "stellar:rpc:tx";

/// `discovered_via` of accounts named in `stellar.accounts`.
pub const CONFIGURED: &str = "config";

/// Its descriptor.
pub fn descriptor() -> SourceDescriptor {
    SourceDescriptor {
        id: SOURCE_ID.into(),
        kind: "stellar",
        name: "Stellar (RPC transactions)".into(),
        chain_id: None,
    }
}

/// One page's rows.
#[derive(Debug, Clone, Default)]
pub struct TxBatch {
    /// Configured accounts to store as watched (first batch after a start).
    pub accounts: Vec<(String, String)>,
    /// Operations touching a watched account, ascending by id.
    pub ops: Vec<DecodedOp>,
    /// `(account, index into ops)` links of watched participants.
    pub links: Vec<(String, usize)>,
    /// Transactions of those operations.
    pub txs: Vec<TxRow>,
    /// Price buckets changed, `(pair, bucket)`, each whole.
    pub prices: Vec<(String, Bucket)>,
}

/// Writes [`TxBatch`]es.
#[derive(Debug, Clone, Copy, Default)]
pub struct TxWriter;

#[async_trait]
impl BatchWriter<TxBatch> for TxWriter {
    async fn write(&self, txn: &DatabaseTransaction, b: &TxBatch) -> Result<Written, DbErr> {
        store::ensure_accounts(txn, &b.accounts, true).await?;
        let ops: Vec<&DecodedOp> = b.ops.iter().collect();
        store::insert_operations(txn, &ops).await?;
        let links: Vec<(&str, &DecodedOp)> = b
            .links
            .iter()
            .filter_map(|(a, i)| b.ops.get(*i).map(|op| (a.as_str(), op)))
            .collect();
        store::insert_account_links(txn, &links).await?;
        insert_transactions(txn, &b.txs).await?;
        upsert_prices(txn, &b.prices).await?;
        let events = links
            .iter()
            .map(|(a, op)| {
                BusEvent::new(OperationIndexed {
                    account_id: a.to_string(),
                    operation_id: op.id,
                })
            })
            .collect();
        Ok(Written {
            items: vec![
                ("operation", b.ops.len() as u64),
                ("price_point", b.prices.len() as u64),
            ],
            events,
            after_commit: None,
        })
    }

    /// Ledgers are final: the source never reverts.
    async fn revert(&self, _txn: &DatabaseTransaction, _to: i64) -> Result<Reverted, DbErr> {
        Ok(Reverted::default())
    }
}

/// Rows per multi-row statement (SQLite's bound-variable limit).
const CHUNK: usize = 200;

async fn insert_transactions(txn: &DatabaseTransaction, txs: &[TxRow]) -> Result<(), DbErr> {
    for chunk in txs.chunks(CHUNK) {
        let rows = chunk.iter().map(|t| stellar_transaction::ActiveModel {
            hash: Set(t.hash.clone()),
            source_account: Set(t.source_account.clone()),
            ledger: Set(t.ledger),
            created_at: Set(t.created_at),
            fee_charged: Set(t.fee_charged),
            operation_count: Set(t.operation_count),
            successful: Set(t.successful),
            memo_type: Set(Some(t.memo_type.clone())),
            memo: Set(t.memo.clone()),
            paging_token: Set(t.paging_token.clone()),
        });
        stellar_transaction::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([stellar_transaction::Column::Hash])
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

async fn upsert_prices(
    txn: &DatabaseTransaction,
    prices: &[(String, Bucket)],
) -> Result<(), DbErr> {
    use price_point::Column as P;
    for chunk in prices.chunks(CHUNK) {
        let rows: Vec<price_point::ActiveModel> = chunk
            .iter()
            .filter_map(|(pair, b)| {
                let (price, volume) = b.price_and_volume();
                Some(price_point::ActiveModel {
                    pair: Set(pair.clone()),
                    source: Set(PRICE_SOURCE.into()),
                    at: Set(b.at()?),
                    price: Set(price),
                    confidence: Set(None),
                    volume: Set(Some(volume)),
                    details: Set(Some(b.details())),
                    ..Default::default()
                })
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        price_point::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([P::Pair, P::Source, P::At])
                    .update_columns([P::Price, P::Volume, P::Details])
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// What both transaction sources (RPC `getTransactions`, the data lake) do with decoded
/// transactions: keep the operations of watched accounts with their links and
/// transactions, and aggregate the DEX fills of `stellar.dex_pairs` into price buckets
/// continuing the newest stored ones.
pub struct TxDeriver {
    settings: StellarSettings,
    pairs: Vec<Pair>,
    agg: Aggregator,
    /// The newest stored bucket of each pair must be reloaded before aggregating.
    reload: bool,
    /// Configured accounts stored in this run.
    ensured: bool,
    /// Records skipped since start (undecodable).
    skipped: u64,
}

impl TxDeriver {
    /// A deriver for `settings`; `stellar.dex_pairs` is checked against `stellar.assets`.
    pub fn new(settings: StellarSettings) -> Result<Self, SourceError> {
        let known: Vec<AssetKey> = settings
            .assets
            .iter()
            .filter_map(|a| AssetKey::parse(a))
            .collect();
        let mut pairs = Vec::new();
        for p in &settings.dex_pairs {
            let pair = horizon_dex::parse_pair(p, &known).ok_or_else(|| {
                SourceError::Config(format!(
                    "stellar.dex_pairs: {p:?} is not BASE/COUNTER of XLM, CODE:ISSUER or a code of stellar.assets"
                ))
            })?;
            pairs.push(pair);
        }
        Ok(Self {
            settings,
            pairs,
            agg: Aggregator::default(),
            reload: true,
            ensured: false,
            skipped: 0,
        })
    }

    /// After a restart from the stored row: buckets are reloaded, accounts ensured again.
    pub fn reset(&mut self) {
        self.reload = true;
        self.ensured = false;
    }

    /// Loads the newest stored bucket of every pair.
    async fn reload_buckets(&mut self, ctx: &SyncContext) -> Result<(), SourceError> {
        self.agg = Aggregator::default();
        for p in &self.pairs {
            let last = price_point::Entity::find()
                .filter(price_point::Column::Pair.eq(p.name.clone()))
                .filter(price_point::Column::Source.eq(PRICE_SOURCE))
                .order_by_desc(price_point::Column::At)
                .one(&ctx.db)
                .await?;
            if let Some(b) = last
                .and_then(|l| l.details)
                .as_ref()
                .and_then(Bucket::from_details)
            {
                self.agg.current.insert(p.name.clone(), b);
            }
        }
        self.reload = false;
        Ok(())
    }

    async fn watched(&self, ctx: &SyncContext) -> Result<BTreeSet<String>, SourceError> {
        let ids: Vec<String> = stellar_account::Entity::find()
            .select_only()
            .column(stellar_account::Column::AccountId)
            .filter(stellar_account::Column::Watched.eq(true))
            .into_tuple()
            .all(&ctx.db)
            .await?;
        let mut out: BTreeSet<String> = ids.into_iter().collect();
        out.extend(self.settings.accounts.iter().cloned());
        Ok(out)
    }

    /// The batch of `txs` (decoded in order; a failure is logged and skipped), and the
    /// close time of the newest.
    pub async fn derive(
        &mut self,
        ctx: &SyncContext,
        txs: impl IntoIterator<Item = (TxRef, Result<RpcTx, OpError>)>,
    ) -> Result<(TxBatch, Option<DateTime<Utc>>), SourceError> {
        if self.reload {
            self.reload_buckets(ctx).await?;
        }
        let mut batch = TxBatch::default();
        if !self.ensured {
            batch.accounts = self
                .settings
                .accounts
                .iter()
                .map(|a| (a.clone(), CONFIGURED.to_string()))
                .collect();
        }
        let watched = self.watched(ctx).await?;
        let mut fills = Vec::new();
        let mut newest_at = None;
        let mut skipped = 0u64;
        for (at, tx) in txs {
            let tx = match tx {
                Ok(tx) => tx,
                Err(e) => {
                    tracing::warn!(ledger = at.ledger, order = at.application_order, error = %e, "stellar: transaction skipped");
                    skipped += 1;
                    continue;
                }
            };
            for d in &tx.disagreements {
                tracing::warn!(tx = %tx.row.hash, "stellar: {d}; the event's amount is stored");
            }
            newest_at = Some(tx.row.created_at);
            fills.extend(tx.fills);
            let mut kept = false;
            for op in tx.ops {
                let linked: Vec<&String> = op
                    .participants
                    .iter()
                    .filter(|p| watched.contains(*p))
                    .collect();
                if linked.is_empty() {
                    continue;
                }
                let i = batch.ops.len();
                batch
                    .links
                    .extend(linked.into_iter().map(|a| (a.clone(), i)));
                batch.ops.push(op);
                kept = true;
            }
            if kept {
                batch.txs.push(tx.row);
            }
        }
        if skipped > 0 {
            self.skipped += skipped;
            tracing::info!(
                skipped,
                total = self.skipped,
                "stellar: undecodable transactions skipped"
            );
        }
        batch.prices = self
            .agg
            .add(&self.pairs, &fills, self.settings.dex_resolution_ms);
        Ok((batch, newest_at))
    }

    /// Marks the configured accounts stored (call once a batch of [`Self::derive`] is
    /// handed to the engine).
    pub fn ensured(&mut self) {
        self.ensured = true;
    }

    /// Whether `batch` has nothing to write.
    pub fn is_empty(batch: &TxBatch) -> bool {
        batch.ops.is_empty() && batch.prices.is_empty() && batch.accounts.is_empty()
    }
}

/// Where a transaction sits (for the message when it does not decode).
#[derive(Debug, Clone, Copy)]
pub struct TxRef {
    /// Ledger.
    pub ledger: u32,
    /// 1-based position in the ledger.
    pub application_order: u32,
}

/// The RPC transactions source.
pub struct RpcTxSource {
    rpc: RpcClient,
    settings: StellarSettings,
    writer: Arc<TxWriter>,
    /// Network passphrase (hashes are checked against it), read on the first fetch.
    passphrase: Option<String>,
    /// Rows from the decoded transactions (made on the first fetch).
    deriver: Option<TxDeriver>,
    cursor: Option<String>,
}

impl RpcTxSource {
    /// A source for `settings` talking through `rpc`.
    pub fn new(rpc: RpcClient, settings: StellarSettings) -> Self {
        Self {
            rpc,
            settings,
            writer: Arc::new(TxWriter),
            passphrase: None,
            deriver: None,
            cursor: None,
        }
    }

    async fn init(&mut self) -> Result<String, SourceError> {
        if let Some(p) = &self.passphrase {
            return Ok(p.clone());
        }
        let network = self.rpc.get_network().await.map_err(source_error)?;
        if self.deriver.is_none() {
            self.deriver = Some(TxDeriver::new(self.settings.clone())?);
        }
        self.passphrase = Some(network.passphrase.clone());
        Ok(network.passphrase)
    }

    /// First ledger of the first run; a ledger outside the retention window is refused.
    async fn start_ledger(&self) -> Result<u32, SourceError> {
        let health = self.rpc.get_health().await.map_err(source_error)?;
        let start = self
            .settings
            .rpc_start_ledger
            .unwrap_or(health.oldest_ledger);
        if start < health.oldest_ledger || start > health.latest_ledger.saturating_add(1) {
            return Err(source_error(RpcError::OutsideRetention {
                method: "getTransactions",
                start,
                oldest: health.oldest_ledger,
                latest: health.latest_ledger,
            }));
        }
        Ok(start.max(1))
    }
}

/// Whether the token-event source (`stellar:rpc`) has indexed through `ledger`: payouts
/// are matched against the balances it builds, so distributions wait for it.
pub async fn events_caught_up(ctx: &SyncContext, ledger: i64) -> Result<bool, SourceError> {
    let row = source::Entity::find_by_id(super::source::SOURCE_ID.to_string())
        .one(&ctx.db)
        .await?;
    Ok(row
        .and_then(|r| r.indexed_height)
        .is_some_and(|h| h >= ledger))
}

/// The ledger a `getTransactions` cursor (a TOID) has reached.
pub(crate) fn cursor_ledger(cursor: &str) -> Option<i64> {
    let toid: i64 = cursor.parse().ok()?;
    Some(toid >> 32)
}

#[async_trait]
impl Source for RpcTxSource {
    type Batch = TxBatch;

    fn descriptor(&self) -> SourceDescriptor {
        descriptor()
    }

    async fn resume(
        &mut self,
        _ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.cursor = stored.cursor.clone();
        if let Some(d) = self.deriver.as_mut() {
            d.reset();
        }
        Ok(())
    }

    async fn fetch(&mut self, ctx: &SyncContext) -> Result<Fetched<TxBatch>, SourceError> {
        let passphrase = self.init().await?;
        let start = match &self.cursor {
            Some(c) => Start::Cursor(c.clone()),
            None => Start::Ledger(self.start_ledger().await?),
        };
        let page = self
            .rpc
            .get_transactions(&start, MAX_PAGE_LIMIT)
            .await
            .map_err(source_error)?;
        let deriver = self
            .deriver
            .as_mut()
            .ok_or_else(|| SourceError::Malformed("stellar rpc: not initialised".into()))?;
        let txs = page.transactions.iter().map(|t| {
            let at = TxRef {
                ledger: t.ledger,
                application_order: t.application_order,
            };
            (at, decode_record(t, &passphrase))
        });
        let (batch, newest_at) = deriver.derive(ctx, txs).await?;

        let latest = i64::from(page.latest_ledger);
        let caught_up = page.transactions.len() < MAX_PAGE_LIMIT as usize;
        let reached = if caught_up {
            latest
        } else {
            cursor_ledger(&page.cursor)
                .or_else(|| page.transactions.last().map(|t| i64::from(t.ledger)))
                .unwrap_or(latest)
        };
        if caught_up && events_caught_up(ctx, latest).await? {
            // Payouts are matched against what earlier pages committed; the rules read the
            // balances the token-event source builds, so it must have reached the head.
            distributions::reconcile(ctx, None, &self.settings).await?;
        }
        let moved = self.cursor.as_deref() != Some(page.cursor.as_str());
        let progress = Progress {
            head_height: Some(latest),
            indexed_height: Some(reached.min(latest)),
            cursor: Some(page.cursor.clone()),
            start_height: match start {
                Start::Ledger(l) => Some(i64::from(l)),
                Start::Cursor(_) => None,
            },
            items: Vec::new(),
            caught_up,
            newest_item_at: newest_at,
            quarantined: Vec::new(),
        };
        self.cursor = Some(page.cursor);
        let empty = TxDeriver::is_empty(&batch);
        if let Some(d) = self.deriver.as_mut() {
            d.ensured();
        }
        if !moved && empty {
            return Ok(Fetched::Idle(progress));
        }
        Ok(Fetched::Batch { batch, progress })
    }

    fn writer(&self) -> Arc<dyn BatchWriter<TxBatch>> {
        self.writer.clone()
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_toids() {
        assert_eq!(cursor_ledger("8589934592"), Some(2));
        assert_eq!(cursor_ledger("x"), None);
    }
}
