//! Daily mode of the `bitcoin` source: the UTXOracle price of each finished UTC day.
//!
//! A day is *finished* once the indexed chain holds [`BLOCKS_PAST_MIDNIGHT`] blocks whose
//! time is at or after the next midnight (as the reference waits: block times are not
//! monotonic, but after 6 blocks the median-time-past rule keeps later blocks out of the
//! day). Its blocks are exactly the stored headers (`bitcoin_block`) whose time falls on
//! the day; they are **re-fetched once** by their stored hash, [`BLOCKS_PER_STEP`] per
//! source step, into one [`DayAccumulator`]. Memory is bounded by one day's qualifying
//! outputs and txid keys; the price costs one extra download of the day's blocks.
//!
//! Only days whose first second lies at or after the oldest stored header are computed
//! (earlier days are incomplete in the index). The result is upserted on
//! `(BTC/USD, UTXORACLE_DAILY, day 00:00:00Z)`; a day whose estimate fails stores nothing
//! (and an earlier point for it is deleted). After a reorg every day from the earliest
//! replaced block's day (minus two hours of timestamp wander) is recomputed. The next day
//! to compute is derived from the stored points after a restart.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use orrery_entity::{bitcoin_block, price_point};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
};
use serde_json::json;

use super::esplora::EsploraClient;
use super::oneshot::BLOCKS_PAST_MIDNIGHT;
use super::store::{self, PricePointRow, PAIR_BTC_USD};
use crate::sync::SourceError;
use crate::utxoracle::{DayAccumulator, EstimatorConfig};

/// `price_point.source` of daily UTXOracle prices.
pub const SOURCE_UTXORACLE_DAILY: &str = "UTXORACLE_DAILY";

/// Blocks of a day re-fetched per source step.
pub const BLOCKS_PER_STEP: usize = 10;

/// Block times may precede their parent's by up to about two hours.
const TIME_WANDER_SECS: i64 = 7200;

/// 00:00:00Z of `day`.
pub fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The UTC day `t` falls on.
pub fn day_of(t: DateTime<Utc>) -> NaiveDate {
    t.date_naive()
}

/// A day being computed.
struct DayJob {
    day: NaiveDate,
    /// Stored (height, hash) of the day's blocks, in height order.
    blocks: Vec<(u64, String)>,
    next: usize,
    acc: DayAccumulator,
}

/// What a step of daily work did.
#[derive(Debug, Clone, PartialEq)]
pub enum DailyOutcome {
    /// No day is finished and pending.
    Idle,
    /// Blocks were fetched; more remain.
    Working,
    /// A day's price was stored.
    Stored(price_point::Model),
    /// A day's blocks are all in: its point is ready to be written with [`write_day`].
    Ready(DayPoint),
    /// A day could not be estimated (nothing stored for it).
    Skipped {
        /// The day.
        day: NaiveDate,
        /// Why.
        reason: String,
    },
}

/// Tracks which day to compute next and the day in progress.
#[derive(Default)]
pub struct DailyTracker {
    /// Next day to compute; `None` until loaded from the database.
    next_day: Option<NaiveDate>,
    job: Option<DayJob>,
}

impl DailyTracker {
    /// A tracker that loads its position from the database on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the position (reloaded from stored points and headers on next use).
    pub fn reset(&mut self) {
        self.next_day = None;
        self.job = None;
    }

    /// Whether a day's blocks are being fetched.
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    async fn load<C: ConnectionTrait>(db: &C) -> Result<Option<NaiveDate>, DbErr> {
        let oldest = bitcoin_block::Entity::find()
            .order_by_asc(bitcoin_block::Column::Height)
            .one(db)
            .await?;
        let Some(oldest) = oldest else {
            return Ok(None);
        };
        // The first day starting at or after the oldest stored header.
        let d = day_of(oldest.time);
        let first = if day_start(d) >= oldest.time {
            d
        } else {
            d.succ_opt().unwrap_or(d)
        };
        let last_stored = price_point::Entity::find()
            .filter(price_point::Column::Pair.eq(PAIR_BTC_USD))
            .filter(price_point::Column::Source.eq(SOURCE_UTXORACLE_DAILY))
            .order_by_desc(price_point::Column::At)
            .one(db)
            .await?
            .and_then(|p| day_of(p.at).succ_opt());
        Ok(Some(last_stored.map_or(first, |l| l.max(first))))
    }

    /// Called before blocks above the common ancestor are deleted in a reorg: every day
    /// that may hold a replaced block is computed again.
    pub async fn invalidate_above<C: ConnectionTrait>(
        &mut self,
        db: &C,
        ancestor: u64,
    ) -> Result<(), DbErr> {
        let earliest = bitcoin_block::Entity::find()
            .filter(bitcoin_block::Column::Height.gt(ancestor as i64))
            .order_by_asc(bitcoin_block::Column::Time)
            .one(db)
            .await?;
        let Some(earliest) = earliest else {
            return Ok(());
        };
        let from = day_of(earliest.time - Duration::seconds(TIME_WANDER_SECS));
        if self.next_day.is_none() {
            self.next_day = Self::load(db).await?;
        }
        if let Some(n) = self.next_day {
            if n > from {
                tracing::info!(from = %from, "bitcoin reorg: daily prices will be recomputed");
                self.next_day = Some(from);
            }
        }
        if self.job.as_ref().is_some_and(|j| j.day >= from) {
            self.job = None;
        }
        Ok(())
    }

    /// Does one slice of daily work: starts the next finished day, fetches up to
    /// [`BLOCKS_PER_STEP`] of its blocks, or stores its price once all are in.
    pub async fn step(
        &mut self,
        db: &sea_orm::DatabaseConnection,
        esplora: &EsploraClient,
    ) -> Result<DailyOutcome, SourceError> {
        if self.job.is_none() {
            if self.next_day.is_none() {
                self.next_day = Self::load(db).await?;
            }
            let Some(day) = self.next_day else {
                return Ok(DailyOutcome::Idle);
            };
            let (start, end) = (day_start(day), day_start(day) + Duration::days(1));
            let past = bitcoin_block::Entity::find()
                .filter(bitcoin_block::Column::Time.gte(end))
                .count(db)
                .await?;
            if past < BLOCKS_PAST_MIDNIGHT {
                return Ok(DailyOutcome::Idle);
            }
            let blocks = bitcoin_block::Entity::find()
                .filter(bitcoin_block::Column::Time.gte(start))
                .filter(bitcoin_block::Column::Time.lt(end))
                .order_by_asc(bitcoin_block::Column::Height)
                .all(db)
                .await?
                .into_iter()
                .map(|b| (b.height.max(0) as u64, b.hash))
                .collect();
            self.job = Some(DayJob {
                day,
                blocks,
                next: 0,
                acc: DayAccumulator::with_config(EstimatorConfig::default()),
            });
        }
        let Some(job) = self.job.as_mut() else {
            return Ok(DailyOutcome::Idle);
        };
        if job.next < job.blocks.len() {
            let upto = (job.next + BLOCKS_PER_STEP).min(job.blocks.len());
            for (height, hash) in &job.blocks[job.next..upto] {
                let header = esplora.header(hash).await?;
                if header.height != *height {
                    return Err(SourceError::Malformed(format!(
                        "block {hash} is at height {}, stored at {height}",
                        header.height
                    )));
                }
                let block = esplora.block_of(&header).await?;
                job.acc.add_block(&block);
            }
            job.next = upto;
            if job.next < job.blocks.len() {
                return Ok(DailyOutcome::Working);
            }
        }
        let point = day_point(job);
        let day = job.day;
        self.job = None;
        self.next_day = day.succ_opt();
        Ok(DailyOutcome::Ready(point))
    }
}

/// A finished day's result, to be written in the engine's transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct DayPoint {
    /// The day.
    pub day: NaiveDate,
    /// Its blocks.
    pub blocks: usize,
    /// The point, or why none could be estimated.
    pub point: Result<PricePointRow, String>,
}

fn day_point(job: &DayJob) -> DayPoint {
    let at = day_start(job.day);
    let point = match job.acc.estimate() {
        Ok(e) => Ok(PricePointRow {
            pair: PAIR_BTC_USD.into(),
            source: SOURCE_UTXORACLE_DAILY.into(),
            at,
            price: e.price_usd,
            confidence: Some(e.confidence),
            volume: Some(e.qualifying_outputs as f64),
            details: Some(json!({
                "mode": "daily",
                "date": job.day.to_string(),
                "blocks": e.blocks,
                "first_height": job.blocks.first().map(|b| b.0),
                "last_height": job.blocks.last().map(|b| b.0),
                "qualifying_outputs": e.qualifying_outputs,
                "rough_price_usd": e.rough_price_usd,
                "price_points": e.price_points,
                "mad_usd": e.mad_usd,
                "estimator_valid": e.is_valid,
            })),
        }),
        Err(err) => Err(err.to_string()),
    };
    DayPoint {
        day: job.day,
        blocks: job.blocks.len(),
        point,
    }
}

/// Stores (or, when no estimate could be made, deletes) the day's point.
pub async fn write_day<C: ConnectionTrait>(db: &C, p: &DayPoint) -> Result<DailyOutcome, DbErr> {
    Ok(match &p.point {
        Ok(row) => DailyOutcome::Stored(store::upsert_point(db, row).await?),
        Err(reason) => {
            price_point::Entity::delete_many()
                .filter(price_point::Column::Pair.eq(PAIR_BTC_USD))
                .filter(price_point::Column::Source.eq(SOURCE_UTXORACLE_DAILY))
                .filter(price_point::Column::At.eq(day_start(p.day)))
                .exec(db)
                .await?;
            tracing::warn!(day = %p.day, blocks = p.blocks, error = %reason,
                "no daily UTXOracle price");
            DailyOutcome::Skipped {
                day: p.day,
                reason: reason.clone(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn days_are_utc() {
        let t = Utc.timestamp_opt(1_735_775_999, 0).unwrap(); // 2025-01-01T23:59:59Z
        assert_eq!(day_of(t).to_string(), "2025-01-01");
        assert_eq!(
            day_start(day_of(t) + Duration::days(1)).timestamp(),
            1_735_776_000
        );
    }
}
