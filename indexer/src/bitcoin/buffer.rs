//! Computed prices waiting for the database: bounded, in memory, written (oldest first) in
//! the engine's next transaction and released once it commits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use orrery_entity::{price_comparison, price_point};
use sea_orm::{ConnectionTrait, DbErr};

use super::comparison::Thresholds;
use super::store::{upsert_comparison, upsert_point, ComparisonRow, PricePointRow};
use crate::metrics::Metrics;

/// One computed result: the estimate (if any) and its comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingPrice {
    /// The UTXOracle price point, when an estimate was made.
    pub point: Option<PricePointRow>,
    /// The comparison for the same time.
    pub comparison: ComparisonRow,
}

/// Rows as stored.
#[derive(Debug, Clone)]
pub struct Written {
    /// The stored price point.
    pub point: Option<price_point::Model>,
    /// The stored comparison.
    pub comparison: price_comparison::Model,
}

/// Results whose write failed, oldest first; shared across source restarts. Beyond
/// `capacity` the oldest is dropped with an error log (never silently).
#[derive(Debug, Clone)]
pub struct PriceBuffer {
    inner: Arc<Mutex<VecDeque<PendingPrice>>>,
    capacity: usize,
}

impl PriceBuffer {
    /// An empty buffer holding at most `capacity` (at least 1) results.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(VecDeque::new())),
            capacity: capacity.max(1),
        }
    }

    /// Results waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn set_metric(&self, n: usize) {
        Metrics::global().price_write_buffered.set(n as f64);
    }

    /// Queues `p` after a failed write.
    pub fn push(&self, p: PendingPrice) {
        let Ok(mut g) = self.inner.lock() else {
            tracing::error!(at = %p.comparison.at, "price buffer poisoned; computed price lost");
            return;
        };
        g.push_back(p);
        while g.len() > self.capacity {
            if let Some(old) = g.pop_front() {
                tracing::error!(at = %old.comparison.at, capacity = self.capacity,
                    "price write buffer full: oldest computed price dropped");
            }
        }
        self.set_metric(g.len());
    }

    /// Every waiting result, oldest first.
    pub fn snapshot(&self) -> Vec<PendingPrice> {
        self.inner
            .lock()
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Removes `written` (a prefix of an earlier [`PriceBuffer::snapshot`]) once committed.
    pub fn release(&self, written: &[PendingPrice]) {
        if let Ok(mut g) = self.inner.lock() {
            for p in written {
                if g.front() == Some(p) {
                    g.pop_front();
                }
            }
            self.set_metric(g.len());
        }
    }
}

/// Writes one result into the caller's transaction.
pub async fn write_in<C: ConnectionTrait>(
    db: &C,
    p: &PendingPrice,
    t: &Thresholds,
) -> Result<Written, DbErr> {
    let point = match &p.point {
        Some(pt) => Some(upsert_point(db, pt).await?),
        None => None,
    };
    let comparison = upsert_comparison(db, &p.comparison, t).await?;
    Ok(Written { point, comparison })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use orrery_migration::MigratorTrait;
    use sea_orm::Database;

    fn pending(secs: i64) -> PendingPrice {
        let at = Utc.timestamp_opt(secs, 0).unwrap();
        PendingPrice {
            point: Some(PricePointRow {
                pair: "BTC/USD".into(),
                source: "UTXORACLE".into(),
                at,
                price: 90_000.0 + (secs - 1_700_000_000) as f64,
                confidence: Some(0.9),
                volume: Some(5000.0),
                details: None,
            }),
            comparison: ComparisonRow {
                at,
                oracle: Some((90_000.0 + (secs - 1_700_000_000) as f64, 0.9)),
                oracle_error: None,
                exchange_price: Some(90_000.0),
            },
        }
    }

    #[tokio::test]
    async fn results_wait_until_released_in_order() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let buf = PriceBuffer::new(2);
        let t = Thresholds::default();
        // The oldest beyond capacity is dropped.
        for s in [1_700_000_000, 1_700_000_600, 1_700_001_200] {
            buf.push(pending(s));
        }
        assert_eq!(buf.len(), 2);
        assert_eq!(Metrics::global().price_write_buffered.get(), 2.0);
        let waiting = buf.snapshot();
        // No tables yet: the write fails and nothing is released.
        assert!(write_in(&db, &waiting[0], &t).await.is_err());
        assert_eq!(buf.len(), 2);
        orrery_migration::Migrator::up(&db, None).await.unwrap();
        let mut written = Vec::new();
        for p in &waiting {
            written.push(write_in(&db, p, &t).await.unwrap());
        }
        buf.release(&waiting);
        assert!(buf.is_empty());
        let ats: Vec<i64> = written
            .iter()
            .map(|w| w.comparison.at.timestamp())
            .collect();
        assert_eq!(ats, vec![1_700_000_600, 1_700_001_200]);
        assert!(written.iter().all(|w| w.comparison.is_valid));
        assert_eq!(written[1].point.as_ref().unwrap().price, 91_200.0);
    }
}
