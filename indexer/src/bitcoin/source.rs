//! The `bitcoin` source: follows Esplora blocks, stores headers, handles reorgs, feeds the
//! UTXOracle rolling window and writes a price and a comparison every interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use orrery_entity::{bitcoin_block, source};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::json;

use super::buffer::{write_in, PendingPrice, PriceBuffer, Written as PricesWritten};
use super::comparison::Thresholds;
use super::daily::{write_day, DailyOutcome, DailyTracker, DayPoint};
use super::esplora::{BlockHeader, EsploraClient};
use super::store::{self, ComparisonRow, PricePointRow, PAIR_BTC_USD, SOURCE_UTXORACLE};
use crate::bus::BusEvent;
use crate::sync::reorg_window::{Ancestor, HashWindow};
use crate::sync::{
    BatchWriter, Fetched, Progress, Reverted, Source, SourceDescriptor, SourceError, SyncContext,
    Written,
};
use crate::utxoracle::RollingWindow;

/// Blocks fetched and committed per step while catching up.
const BLOCKS_PER_STEP: u64 = 10;
/// Heights asked per round while looking for the common ancestor.
const ANCESTOR_PAGE: usize = 8;

/// Bus events for stored price rows.
pub fn price_events(w: &PricesWritten) -> Vec<BusEvent> {
    let mut out = Vec::new();
    if let Some(p) = &w.point {
        out.push(BusEvent::new(p.clone()));
    }
    out.push(BusEvent::new(w.comparison.clone()));
    out
}

/// The Bitcoin block source.
pub struct BitcoinSource {
    esplora: EsploraClient,
    recent_blocks: usize,
    interval: Duration,
    poll: Duration,
    window: RollingWindow,
    /// Stored best-chain hashes by height (the last `recent_blocks + 16`).
    hashes: HashWindow,
    indexed: Option<u64>,
    last_compute: Option<Instant>,
    buffer: PriceBuffer,
    /// Daily mode (`bitcoin.daily`); `None` when off.
    daily: Option<DailyTracker>,
    /// First height indexed on an empty database (`bitcoin.start_height`).
    start_height: Option<u64>,
}

impl BitcoinSource {
    /// A source reading `esplora`, with a window of `recent_blocks`, recomputing every
    /// `interval`, polling the tip every `poll`; failed price writes wait in `buffer`.
    pub fn new(
        esplora: EsploraClient,
        recent_blocks: usize,
        interval: Duration,
        poll: Duration,
        buffer: PriceBuffer,
    ) -> Self {
        Self {
            esplora,
            recent_blocks: recent_blocks.max(1),
            interval,
            poll,
            window: RollingWindow::new(recent_blocks),
            hashes: HashWindow::new(recent_blocks.max(1) + 16),
            indexed: None,
            last_compute: None,
            buffer,
            daily: Some(DailyTracker::new()),
            start_height: None,
        }
    }

    /// Turns daily mode (one price per finished UTC day, see [`super::daily`]) on or off
    /// (default on).
    pub fn with_daily(mut self, on: bool) -> Self {
        self.daily = on.then(DailyTracker::new);
        self
    }

    /// On an empty database, start indexing at `height` instead of the last
    /// `recent_blocks` blocks.
    pub fn with_start_height(mut self, height: Option<u64>) -> Self {
        self.start_height = height;
        self
    }

    /// Its descriptor (id `bitcoin`).
    pub fn descriptor_static() -> SourceDescriptor {
        SourceDescriptor {
            id: "bitcoin".into(),
            kind: "bitcoin",
            name: "Bitcoin (Esplora)".into(),
            chain_id: None,
        }
    }

    /// Rebuilds the window from stored headers up to `indexed` (re-fetching their blocks).
    async fn refill(&mut self, ctx: &SyncContext) -> Result<(), SourceError> {
        self.window = RollingWindow::new(self.recent_blocks);
        self.hashes.clear();
        let Some(top) = self.indexed else {
            return Ok(());
        };
        let mut rows = bitcoin_block::Entity::find()
            .filter(bitcoin_block::Column::Height.lte(top as i64))
            .order_by_desc(bitcoin_block::Column::Height)
            .limit(self.recent_blocks as u64 + 16)
            .all(&ctx.db)
            .await?;
        rows.reverse();
        let window_from = rows.len().saturating_sub(self.recent_blocks);
        for (i, r) in rows.into_iter().enumerate() {
            if i >= window_from {
                let header = self.esplora.header(&r.hash).await?;
                let block = self.esplora.block_of(&header).await?;
                self.window.push_block(&block);
            }
            self.hashes.push(r.height.max(0) as u64, r.hash);
        }
        Ok(())
    }

    /// Finds the common ancestor with the best chain and returns the revert to it.
    async fn roll_back(&mut self, ctx: &SyncContext) -> Result<Fetched<BitcoinBatch>, SourceError> {
        let esplora = self.esplora.clone();
        let found = self
            .hashes
            .find_ancestor(ANCESTOR_PAGE, |heights| {
                let esplora = esplora.clone();
                async move {
                    let mut out = Vec::with_capacity(heights.len());
                    for h in heights {
                        out.push(Some(esplora.hash_at(h).await?));
                    }
                    Ok::<_, SourceError>(out)
                }
            })
            .await?;
        let h = match found {
            Ancestor::Found(h) => h,
            // Deeper than the window: its lowest height's parent is the best guess.
            Ancestor::BelowWindow => self.hashes.oldest().unwrap_or(0).saturating_sub(1),
        };
        let old = self.indexed.unwrap_or(h);
        let depth = old.saturating_sub(h);
        tracing::warn!(
            from = old,
            ancestor = h,
            depth,
            "bitcoin reorg: rolling back"
        );
        // Reads the blocks about to go, so it must run before the revert is written.
        if let Some(daily) = self.daily.as_mut() {
            daily.invalidate_above(&ctx.db, h).await?;
        }
        self.indexed = Some(h);
        self.hashes.truncate_above(h);
        let held = self.window.len() as u64;
        if depth <= held && self.window.tip_height() == Some(old) {
            for _ in 0..depth {
                self.window.pop_newest();
            }
        } else {
            self.refill(ctx).await?;
        }
        self.last_compute = None;
        Ok(Fetched::Revert {
            to: h as i64,
            progress: Progress {
                indexed_height: Some(h as i64),
                cursor: self.hashes.get(h).map(str::to_owned),
                ..Progress::default()
            },
        })
    }

    /// Computes the rolling-window price now; it waits in the buffer until committed.
    async fn compute(&mut self, ctx: &SyncContext) {
        let now = Utc::now();
        let at = Utc
            .timestamp_opt(now.timestamp(), 0)
            .single()
            .unwrap_or(now);
        let interval = chrono::Duration::from_std(self.interval)
            .unwrap_or_else(|_| chrono::Duration::seconds(600));
        let exchange = match store::exchange_price_between(&ctx.db, at - interval, at).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the exchange price");
                None
            }
        };
        let tip = self.window.tip_height();
        let tip_hash = tip.and_then(|h| self.hashes.get(h).map(str::to_owned));
        let (point, oracle, oracle_error) = match self.window.estimate() {
            Ok(e) => (
                Some(PricePointRow {
                    pair: PAIR_BTC_USD.into(),
                    source: SOURCE_UTXORACLE.into(),
                    at,
                    price: e.price_usd,
                    confidence: Some(e.confidence),
                    volume: Some(e.qualifying_outputs as f64),
                    details: Some(json!({
                        "mode": "recent",
                        "blocks": e.blocks,
                        "tip_height": tip,
                        "tip_hash": tip_hash,
                        "rough_price_usd": e.rough_price_usd,
                        "price_points": e.price_points,
                        "mad_usd": e.mad_usd,
                        "qualifying_outputs": e.qualifying_outputs,
                        "estimator_valid": e.is_valid,
                    })),
                }),
                Some((e.price_usd, e.confidence)),
                None,
            ),
            Err(err) => (None, None, Some(err.to_string())),
        };
        // Held (bounded, never lost silently) until a transaction stores it.
        self.buffer.push(PendingPrice {
            point,
            comparison: ComparisonRow {
                at,
                oracle,
                oracle_error,
                exchange_price: exchange,
            },
        });
        self.last_compute = Some(Instant::now());
    }

    /// The buffered prices as a batch, when any wait.
    async fn prices(&self, ctx: &SyncContext, progress: Progress) -> Option<Fetched<BitcoinBatch>> {
        let pending = self.buffer.snapshot();
        if pending.is_empty() {
            return None;
        }
        Some(Fetched::Batch {
            batch: BitcoinBatch::Prices {
                pending,
                thresholds: Thresholds::load(&ctx.db).await,
            },
            progress,
        })
    }
}

/// The header's time; headers are checked when fetched, so `None` is a broken invariant
/// reported as a database error rather than a made-up time.
fn block_time(h: &BlockHeader) -> Result<DateTime<Utc>, DbErr> {
    h.time().ok_or_else(|| {
        DbErr::Custom(format!(
            "block {}: timestamp {} is not a time",
            h.id, h.timestamp
        ))
    })
}

/// One batch of the Bitcoin source.
#[derive(Debug)]
pub enum BitcoinBatch {
    /// Headers of consecutive best-chain blocks.
    Blocks(Vec<BlockHeader>),
    /// Rolling-window prices and their comparisons, oldest first.
    Prices {
        /// The results (buffered until this batch commits).
        pending: Vec<PendingPrice>,
        /// Comparison thresholds at fetch time.
        thresholds: Thresholds,
    },
    /// A finished day's price.
    Daily(DayPoint),
}

/// Writes Bitcoin batches and reverts.
pub struct BitcoinWriter {
    buffer: PriceBuffer,
}

#[async_trait]
impl Source for BitcoinSource {
    type Batch = BitcoinBatch;

    fn descriptor(&self) -> SourceDescriptor {
        Self::descriptor_static()
    }

    async fn resume(
        &mut self,
        ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.indexed = stored.indexed_height.map(|h| h.max(0) as u64);
        self.last_compute = None;
        if let Some(daily) = self.daily.as_mut() {
            daily.reset();
        }
        self.refill(ctx).await
    }

    async fn fetch(&mut self, ctx: &SyncContext) -> Result<Fetched<BitcoinBatch>, SourceError> {
        // Prices whose write failed go first, oldest first.
        if let Some(f) = self.prices(ctx, Progress::default()).await {
            return Ok(f);
        }
        let tip = self.esplora.tip_height().await?;
        let indexed = match self.indexed {
            Some(h) => h,
            None => match self.start_height {
                Some(s) => s.saturating_sub(1).min(tip),
                None => tip.saturating_sub(self.recent_blocks as u64),
            },
        };
        // Caught up: the stored tip must still be on the best chain.
        if indexed >= tip {
            if let Some(stored) = self.hashes.get(indexed).map(str::to_owned) {
                if self.esplora.hash_at(indexed).await? != stored {
                    return self.roll_back(ctx).await;
                }
            }
            let caught_up = Progress {
                head_height: Some(tip as i64),
                indexed_height: Some(indexed as i64),
                caught_up: true,
                ..Progress::default()
            };
            let due = self
                .last_compute
                .is_none_or(|t| t.elapsed() >= self.interval);
            if due && !self.window.is_empty() {
                self.compute(ctx).await;
                if let Some(f) = self.prices(ctx, caught_up.clone()).await {
                    return Ok(f);
                }
            }
            // Daily work runs once caught up; while a day is in progress, fetch again at once.
            if let Some(daily) = self.daily.as_mut() {
                match daily.step(&ctx.db, &self.esplora).await? {
                    DailyOutcome::Ready(point) => {
                        return Ok(Fetched::Batch {
                            batch: BitcoinBatch::Daily(point),
                            progress: Progress {
                                caught_up: false,
                                ..caught_up
                            },
                        })
                    }
                    DailyOutcome::Working => {
                        return Ok(Fetched::Idle(Progress {
                            caught_up: false,
                            ..caught_up
                        }))
                    }
                    _ => {}
                }
            }
            return Ok(Fetched::Idle(caught_up));
        }
        let mut headers = Vec::new();
        let mut blocks = Vec::new();
        let mut parent = self.hashes.get(indexed).map(str::to_owned);
        for h in indexed + 1..=(indexed + BLOCKS_PER_STEP).min(tip) {
            let hash = self.esplora.hash_at(h).await?;
            let header = self.esplora.header(&hash).await?;
            if let (Some(p), Some(prev)) = (&parent, &header.previousblockhash) {
                if p != prev {
                    if headers.is_empty() {
                        return self.roll_back(ctx).await;
                    }
                    break; // write what links; the next fetch detects the reorg
                }
            }
            let block = self.esplora.block_of(&header).await?;
            parent = Some(header.id.clone());
            headers.push(header);
            blocks.push(block);
        }
        let Some(last) = headers.last() else {
            return Err(SourceError::Malformed("no block fetched".into()));
        };
        let new_indexed = last.height;
        let progress = Progress {
            head_height: Some(tip as i64),
            indexed_height: Some(new_indexed as i64),
            cursor: Some(last.id.clone()),
            start_height: Some(indexed as i64),
            items: Vec::new(),
            caught_up: false,
            newest_item_at: last.time(),
            quarantined: Vec::new(),
        };
        for (hd, b) in headers.iter().zip(&blocks) {
            self.window.push_block(b);
            self.hashes.push(hd.height, hd.id.clone());
        }
        self.indexed = Some(new_indexed);
        Ok(Fetched::Batch {
            batch: BitcoinBatch::Blocks(headers),
            progress,
        })
    }

    fn writer(&self) -> Arc<dyn BatchWriter<BitcoinBatch>> {
        Arc::new(BitcoinWriter {
            buffer: self.buffer.clone(),
        })
    }

    fn poll_interval(&self) -> Duration {
        self.poll.min(self.interval)
    }
}

#[async_trait]
impl BatchWriter<BitcoinBatch> for BitcoinWriter {
    async fn write(&self, txn: &DatabaseTransaction, b: &BitcoinBatch) -> Result<Written, DbErr> {
        match b {
            BitcoinBatch::Blocks(headers) => {
                let models = headers
                    .iter()
                    .map(|hd| {
                        Ok(bitcoin_block::ActiveModel {
                            height: Set(hd.height as i64),
                            hash: Set(hd.id.clone()),
                            // Only genesis has no parent (checked when fetched).
                            prev_hash: Set(hd.previousblockhash.clone().unwrap_or_default()),
                            time: Set(block_time(hd)?),
                            tx_count: Set(hd.tx_count as i32),
                        })
                    })
                    .collect::<Result<Vec<_>, DbErr>>()?;
                bitcoin_block::Entity::insert_many(models)
                    .on_conflict(
                        OnConflict::column(bitcoin_block::Column::Height)
                            .update_columns([
                                bitcoin_block::Column::Hash,
                                bitcoin_block::Column::PrevHash,
                                bitcoin_block::Column::Time,
                                bitcoin_block::Column::TxCount,
                            ])
                            .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await?;
                let events = headers
                    .iter()
                    .map(|h| {
                        BusEvent::new(crate::bus::payload::BitcoinBlock {
                            height: h.height as i64,
                            hash: h.id.clone(),
                            prev_hash: h.previousblockhash.clone(),
                            time: h.timestamp,
                        })
                    })
                    .collect();
                Ok(Written {
                    items: vec![("block", headers.len() as u64)],
                    events,
                    after_commit: None,
                })
            }
            BitcoinBatch::Prices {
                pending,
                thresholds,
            } => {
                let mut events = Vec::new();
                let mut prices = Vec::new();
                for p in pending {
                    let w = write_in(txn, p, thresholds).await?;
                    events.extend(price_events(&w));
                    if let Some(pt) = &w.point {
                        prices.push((pt.pair.clone(), pt.source.clone(), pt.price));
                    }
                }
                let buffer = self.buffer.clone();
                let released = pending.clone();
                Ok(Written {
                    items: vec![("price", pending.len() as u64)],
                    events,
                    after_commit: Some(Box::new(move || {
                        buffer.release(&released);
                        for (pair, source, price) in prices {
                            crate::metrics::Metrics::global()
                                .price
                                .with_label_values(&[&pair, &source])
                                .set(price);
                        }
                    })),
                })
            }
            BitcoinBatch::Daily(point) => {
                let mut events = Vec::new();
                let mut after: Option<Box<dyn FnOnce() + Send>> = None;
                if let DailyOutcome::Stored(p) = write_day(txn, point).await? {
                    tracing::info!(at = %p.at, price = p.price, "daily UTXOracle price stored");
                    events.push(BusEvent::new(p.clone()));
                    let (pair, source, price) = (p.pair.clone(), p.source.clone(), p.price);
                    after = Some(Box::new(move || {
                        crate::metrics::Metrics::global()
                            .price
                            .with_label_values(&[&pair, &source])
                            .set(price);
                    }));
                }
                Ok(Written {
                    items: vec![("daily_price", 1)],
                    events,
                    after_commit: after,
                })
            }
        }
    }

    async fn revert(&self, txn: &DatabaseTransaction, to: i64) -> Result<Reverted, DbErr> {
        let deleted = bitcoin_block::Entity::delete_many()
            .filter(bitcoin_block::Column::Height.gt(to))
            .exec(txn)
            .await?;
        Ok(Reverted {
            orphaned: deleted.rows_affected,
            events: Vec::new(),
        })
    }
}
