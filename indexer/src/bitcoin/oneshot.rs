//! One-shot estimates (the seed's `--dry-run`): fetch the blocks of a UTC day or the last N
//! blocks, estimate, write nothing.

use chrono::NaiveDate;
use serde::Serialize;

use super::comparison::Thresholds;
use super::esplora::EsploraClient;
use crate::sync::SourceError;
use crate::upstream::UpstreamError;
use crate::utxoracle::{Block, DayAccumulator, EstimatorConfig, RollingWindow};

/// Blocks past the end of the day the reference waits for (block times are not monotonic).
pub const BLOCKS_PAST_MIDNIGHT: u64 = 6;

/// The printed result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OneShot {
    /// `daily` or `recent`.
    pub mode: &'static str,
    /// The UTC day (daily mode).
    pub date: Option<String>,
    /// Estimated price, USD (absent when no estimate could be made).
    pub price_usd: Option<f64>,
    /// Qualifying outputs.
    pub qualifying_outputs: usize,
    /// Confidence in [0, 1] (0 without an estimate).
    pub confidence: f64,
    /// Confidence and price pass the `oracle.*` default thresholds.
    pub is_valid: bool,
    /// Blocks used.
    pub blocks: usize,
    /// First block height used.
    pub first_height: Option<u64>,
    /// Last block height used.
    pub last_height: Option<u64>,
    /// Why no estimate (or a valid one) could be made.
    pub error: Option<String>,
}

fn result(
    mode: &'static str,
    date: Option<String>,
    outputs: usize,
    heights: (Option<u64>, Option<u64>),
    blocks: usize,
    est: Result<crate::utxoracle::Estimate, crate::utxoracle::EstimateError>,
) -> OneShot {
    let t = Thresholds::default();
    let (price_usd, confidence, is_valid, error) = match est {
        Ok(e) => {
            let in_range = e.price_usd >= t.min_price_usd && e.price_usd <= t.max_price_usd;
            let valid = e.confidence >= t.min_confidence && in_range;
            let why = (!valid).then(|| {
                format!(
                    "confidence {:.3} (min {}), price {:.0} (range {}..{})",
                    e.confidence, t.min_confidence, e.price_usd, t.min_price_usd, t.max_price_usd
                )
            });
            (Some(e.price_usd), e.confidence, valid, why)
        }
        Err(err) => (None, 0.0, false, Some(err.to_string())),
    };
    OneShot {
        mode,
        date,
        price_usd,
        qualifying_outputs: outputs,
        confidence,
        is_valid,
        blocks,
        first_height: heights.0,
        last_height: heights.1,
        error,
    }
}

/// How far a one-shot estimate has got, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Looking for the day's first block: header look-up `probe` of at most `of`.
    Locating {
        /// Look-ups done.
        probe: u64,
        /// Most look-ups the search needs.
        of: u64,
    },
    /// Blocks fetched so far, of an estimated total (exact in `recent` mode).
    Blocks {
        /// Blocks fetched.
        fetched: u64,
        /// Estimated blocks in all (grows when the day has more blocks than expected).
        total: u64,
        /// The last block fetched.
        height: u64,
    },
}

/// Average block interval the daily estimate of the number of blocks assumes.
const BLOCK_SECS: i64 = 600;

/// Estimates over the last `n` blocks.
pub async fn recent(client: &EsploraClient, n: usize) -> Result<OneShot, SourceError> {
    recent_with_progress(client, n, &mut |_| {}).await
}

/// [`recent`], reporting each block fetched to `progress`.
pub async fn recent_with_progress(
    client: &EsploraClient,
    n: usize,
    progress: &mut (dyn FnMut(Step) + Send),
) -> Result<OneShot, SourceError> {
    let n = n.max(1);
    let tip = client.tip_height().await?;
    let first = tip.saturating_sub(n as u64 - 1);
    let total = tip - first + 1;
    let mut w = RollingWindow::with_config(n, EstimatorConfig::default());
    for h in first..=tip {
        let (_, b) = client.block_at(h).await?;
        w.push_block(&b);
        progress(Step::Blocks {
            fetched: h - first + 1,
            total,
            height: h,
        });
    }
    let outputs = w.qualifying_outputs().len();
    Ok(result(
        "recent",
        None,
        outputs,
        (Some(first), Some(tip)),
        w.len(),
        w.estimate(),
    ))
}

/// Header time at `height`, `None` below the first block the upstream serves.
async fn time_at(client: &EsploraClient, height: u64) -> Result<Option<i64>, SourceError> {
    match client.hash_at(height).await {
        Ok(hash) => Ok(Some(client.header(&hash).await?.timestamp)),
        Err(SourceError::Upstream(e)) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_not_found(e: &UpstreamError) -> bool {
    e.is_not_found()
}

/// Estimates over every block whose time falls on `date` (UTC). Fails when the tip is not
/// yet past the end of the day.
pub async fn daily(client: &EsploraClient, date: NaiveDate) -> Result<OneShot, SourceError> {
    daily_with_progress(client, date, &mut |_| {}).await
}

/// [`daily`], reporting the search for the first block and each block fetched to `progress`.
pub async fn daily_with_progress(
    client: &EsploraClient,
    date: NaiveDate,
    progress: &mut (dyn FnMut(Step) + Send),
) -> Result<OneShot, SourceError> {
    let start = date
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc().timestamp())
        .ok_or_else(|| SourceError::Malformed(format!("bad date {date}")))?;
    let end = start + 86_400;
    let tip = client.tip_height().await?;
    match time_at(client, tip).await? {
        Some(t) if t >= end => {}
        _ => {
            return Err(SourceError::Malformed(format!(
                "day {date} is not over at the tip {tip}"
            )))
        }
    }
    // First height whose time is >= start - 2h (block times wander by up to ~2 hours).
    let (mut lo, mut hi) = (0u64, tip);
    let of = u64::from(u64::BITS - tip.leading_zeros());
    let mut probe = 0;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match time_at(client, mid).await? {
            Some(t) if t >= start - 7200 => hi = mid,
            _ => lo = mid + 1,
        }
        probe += 1;
        progress(Step::Locating {
            probe,
            of: of.max(probe),
        });
    }
    let mut acc = DayAccumulator::with_config(EstimatorConfig::default());
    let (mut first, mut last) = (None, None);
    let mut past = 0u64;
    let mut h = lo;
    while h <= tip && past < BLOCKS_PAST_MIDNIGHT {
        let (header, block): (_, Block) = client.block_at(h).await?;
        if header.timestamp >= end {
            past += 1;
        } else if header.timestamp >= start {
            acc.add_block(&block);
            first = first.or(Some(h));
            last = Some(h);
        }
        let fetched = h - lo + 1;
        // Blocks still to come: the rest of the day at the average interval, then the
        // blocks past midnight the loop waits for; never beyond the tip.
        let rest_of_day = ((end - header.timestamp).max(0) / BLOCK_SECS) as u64;
        let remaining = (rest_of_day + (BLOCKS_PAST_MIDNIGHT - past)).min(tip - h);
        progress(Step::Blocks {
            fetched,
            total: fetched + remaining,
            height: h,
        });
        h += 1;
    }
    let outputs = acc.qualifying_outputs().len();
    Ok(result(
        "daily",
        Some(date.to_string()),
        outputs,
        (first, last),
        acc.blocks(),
        acc.estimate(),
    ))
}
