//! The `bitcoin` source: follows Esplora blocks, stores headers, handles reorgs, feeds the
//! UTXOracle rolling window and writes a price and a comparison every interval.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use orrery_entity::{bitcoin_block, source};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use serde_json::json;

use super::buffer::{PendingPrice, PriceBuffer, Written};
use super::comparison::Thresholds;
use super::daily::{DailyOutcome, DailyTracker};
use super::esplora::{BlockHeader, EsploraClient};
use super::store::{self, ComparisonRow, PricePointRow, PAIR_BTC_USD, SOURCE_UTXORACLE};
use crate::bus::{topics, BusEvent};
use crate::sync::{Progress, Source, SourceDescriptor, SourceError, SyncContext};
use crate::utxoracle::RollingWindow;

/// Blocks fetched and committed per step while catching up.
const BLOCKS_PER_STEP: u64 = 10;

/// Bus events for stored price rows.
pub fn price_events(w: &Written) -> Vec<BusEvent> {
    let mut out = Vec::new();
    if let Some(p) = &w.point {
        if let Ok(v) = serde_json::to_value(p) {
            out.push(BusEvent::new(topics::PRICE_UPDATED, v));
        }
    }
    if let Ok(v) = serde_json::to_value(&w.comparison) {
        out.push(BusEvent::new(topics::PRICE_COMPARISON_UPDATED, v));
    }
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
    hashes: BTreeMap<u64, String>,
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
            hashes: BTreeMap::new(),
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

    /// One slice of daily work; true while a day's blocks are still being fetched.
    async fn daily_step(&mut self, ctx: &SyncContext) -> Result<bool, SourceError> {
        let Some(daily) = self.daily.as_mut() else {
            return Ok(false);
        };
        match daily.step(&ctx.db, &self.esplora).await? {
            DailyOutcome::Stored(p) => {
                tracing::info!(at = %p.at, price = p.price, "daily UTXOracle price stored");
                if let Ok(v) = serde_json::to_value(&p) {
                    crate::bus::publish_logged(
                        ctx.bus.as_ref(),
                        BusEvent::new(topics::PRICE_UPDATED, v),
                    )
                    .await;
                }
                crate::metrics::Metrics::global()
                    .price
                    .with_label_values(&[&p.pair, &p.source])
                    .set(p.price);
                Ok(true)
            }
            DailyOutcome::Working | DailyOutcome::Skipped { .. } => Ok(true),
            DailyOutcome::Idle => Ok(false),
        }
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

    fn remember(&mut self, height: u64, hash: String) {
        self.hashes.insert(height, hash);
        let keep = self.recent_blocks as u64 + 16;
        while self.hashes.len() as u64 > keep {
            let Some((&first, _)) = self.hashes.iter().next() else {
                break;
            };
            self.hashes.remove(&first);
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
            self.remember(r.height as u64, r.hash);
        }
        Ok(())
    }

    /// Rolls back to the common ancestor with the best chain; returns its height.
    async fn roll_back(&mut self, ctx: &SyncContext) -> Result<Progress, SourceError> {
        let mut h = self.indexed.unwrap_or(0);
        while let Some(stored) = self.hashes.get(&h).cloned() {
            if self.esplora.hash_at(h).await? == stored || h == 0 {
                break;
            }
            h -= 1;
        }
        let old = self.indexed.unwrap_or(h);
        let depth = old.saturating_sub(h);
        tracing::warn!(
            from = old,
            ancestor = h,
            depth,
            "bitcoin reorg: rolling back"
        );
        if let Some(daily) = self.daily.as_mut() {
            daily.invalidate_above(&ctx.db, h).await?;
        }
        let txn = ctx.begin().await?;
        bitcoin_block::Entity::delete_many()
            .filter(bitcoin_block::Column::Height.gt(h as i64))
            .exec(&txn)
            .await?;
        let progress = Progress {
            indexed_height: Some(h as i64),
            cursor: self.hashes.get(&h).cloned(),
            items: vec![("reorg", depth)],
            ..Progress::default()
        };
        ctx.commit(txn, &progress, vec![]).await?;
        self.indexed = Some(h);
        self.hashes.retain(|k, _| *k <= h);
        let held = self.window.len() as u64;
        if depth <= held && self.window.tip_height() == Some(old) {
            for _ in 0..depth {
                self.window.pop_newest();
            }
        } else {
            self.refill(ctx).await?;
        }
        self.last_compute = None;
        Ok(progress)
    }

    async fn compute(&mut self, ctx: &SyncContext) -> Result<(), SourceError> {
        let now = Utc::now();
        let at = Utc
            .timestamp_opt(now.timestamp(), 0)
            .single()
            .unwrap_or(now);
        let thresholds = Thresholds::load(&ctx.db).await;
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
        let tip_hash = tip.and_then(|h| self.hashes.get(&h).cloned());
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
        let pending = PendingPrice {
            point,
            comparison: ComparisonRow {
                at,
                oracle,
                oracle_error,
                exchange_price: exchange,
            },
        };
        // A failed write is buffered (never lost silently) and the source keeps running.
        if let Ok(w) = self
            .buffer
            .write_or_buffer(&ctx.db, pending, &thresholds)
            .await
        {
            publish(ctx, &w).await;
        }
        self.last_compute = Some(Instant::now());
        Ok(())
    }
}

async fn publish(ctx: &SyncContext, w: &Written) {
    for e in price_events(w) {
        crate::bus::publish_logged(ctx.bus.as_ref(), e).await;
    }
    if let Some(p) = &w.point {
        crate::metrics::Metrics::global()
            .price
            .with_label_values(&[&p.pair, &p.source])
            .set(p.price);
    }
}

fn block_time(h: &BlockHeader) -> DateTime<Utc> {
    Utc.timestamp_opt(h.timestamp, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

#[async_trait]
impl Source for BitcoinSource {
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

    async fn step(&mut self, ctx: &SyncContext) -> Result<Progress, SourceError> {
        if !self.buffer.is_empty() {
            let thresholds = Thresholds::load(&ctx.db).await;
            for w in self.buffer.flush(&ctx.db, &thresholds).await {
                publish(ctx, &w).await;
            }
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
            if let Some(stored) = self.hashes.get(&indexed) {
                if self.esplora.hash_at(indexed).await? != *stored {
                    return self.roll_back(ctx).await;
                }
            }
            let due = self
                .last_compute
                .is_none_or(|t| t.elapsed() >= self.interval);
            if due && !self.window.is_empty() {
                self.compute(ctx).await?;
            }
            // Daily work runs once caught up; while a day is in progress, step again at once.
            let more = self.daily_step(ctx).await?;
            return Ok(Progress {
                head_height: Some(tip as i64),
                indexed_height: Some(indexed as i64),
                caught_up: !more,
                ..Progress::default()
            });
        }
        let mut headers = Vec::new();
        let mut blocks = Vec::new();
        let mut parent = self.hashes.get(&indexed).cloned();
        for h in indexed + 1..=(indexed + BLOCKS_PER_STEP).min(tip) {
            let hash = self.esplora.hash_at(h).await?;
            let header = self.esplora.header(&hash).await?;
            if let (Some(p), Some(prev)) = (&parent, &header.previousblockhash) {
                if p != prev {
                    if headers.is_empty() {
                        return self.roll_back(ctx).await;
                    }
                    break; // commit what links; the next step detects the reorg
                }
            }
            let block = self.esplora.block_of(&header).await?;
            parent = Some(header.id.clone());
            headers.push(header);
            blocks.push(block);
        }
        let txn = ctx.begin().await?;
        for hd in &headers {
            bitcoin_block::Entity::insert(bitcoin_block::ActiveModel {
                height: Set(hd.height as i64),
                hash: Set(hd.id.clone()),
                prev_hash: Set(hd.previousblockhash.clone().unwrap_or_default()),
                time: Set(block_time(hd)),
                tx_count: Set(hd.tx_count as i32),
            })
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
            .exec(&txn)
            .await?;
        }
        let Some(last) = headers.last() else {
            return Err(SourceError::Data("no block fetched".into()));
        };
        let new_indexed = last.height;
        let events: Vec<BusEvent> = headers
            .iter()
            .map(|h| {
                BusEvent::new(
                    topics::BITCOIN_BLOCK,
                    json!({"height": h.height, "hash": h.id, "prev_hash": h.previousblockhash, "time": h.timestamp}),
                )
            })
            .collect();
        let progress = Progress {
            head_height: Some(tip as i64),
            indexed_height: Some(new_indexed as i64),
            cursor: Some(last.id.clone()),
            items: vec![("block", headers.len() as u64)],
            caught_up: new_indexed >= tip,
            newest_item_at: Some(block_time(last)),
        };
        ctx.commit(txn, &progress, events).await?;
        for (hd, b) in headers.iter().zip(&blocks) {
            self.window.push_block(b);
            self.remember(hd.height, hd.id.clone());
        }
        self.indexed = Some(new_indexed);
        if new_indexed >= tip
            && self
                .last_compute
                .is_none_or(|t| t.elapsed() >= self.interval)
        {
            self.compute(ctx).await?;
        }
        Ok(progress)
    }

    fn poll_interval(&self) -> Duration {
        self.poll.min(self.interval)
    }
}
