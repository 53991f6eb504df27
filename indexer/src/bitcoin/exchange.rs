//! The `exchange` source: polls a mempool-style `/api/v1/prices` every interval, stores an
//! `EXCHANGE` price point and fills comparisons that were made while it was unavailable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use super::comparison::Thresholds;
use super::store::{self, PricePointRow, PAIR_BTC_USD, SOURCE_EXCHANGE};
use crate::bus::BusEvent;
use sea_orm::{DatabaseTransaction, DbErr};

use crate::sync::{
    BatchWriter, Fetched, Progress, Reverted, Source, SourceDescriptor, SourceError, SyncContext,
    Written,
};
use crate::upstream::UpstreamClient;

/// Reads the USD price out of a `/api/v1/prices` answer (`{"time": .., "USD": ..}`).
pub fn usd_price(v: &Value) -> Result<f64, SourceError> {
    let p = v
        .get("USD")
        .and_then(Value::as_f64)
        .ok_or_else(|| SourceError::Malformed(format!("no USD price in {v}")))?;
    if !p.is_finite() || p <= 0.0 {
        return Err(SourceError::Malformed(format!(
            "USD price {p} is not positive"
        )));
    }
    Ok(p)
}

/// The exchange price source.
pub struct ExchangeSource {
    client: UpstreamClient,
    interval: Duration,
    backfill: Duration,
}

impl ExchangeSource {
    /// Polls `client` every `interval`; fills comparisons up to `backfill` old.
    pub fn new(client: UpstreamClient, interval: Duration, backfill: Duration) -> Self {
        Self {
            client,
            interval,
            backfill,
        }
    }

    /// Its descriptor (id `exchange`).
    pub fn descriptor_static() -> SourceDescriptor {
        SourceDescriptor {
            id: "exchange".into(),
            kind: "exchange",
            name: "Exchange price (mempool-style /api/v1/prices)".into(),
            chain_id: None,
        }
    }
}

/// One exchange reading to store.
#[derive(Debug)]
pub struct ExchangeBatch {
    at: chrono::DateTime<Utc>,
    price: f64,
    upstream_time: Option<Value>,
    thresholds: Thresholds,
    backfill: chrono::Duration,
}

/// Stores exchange readings and fills comparisons that waited for them.
pub struct ExchangeWriter;

#[async_trait]
impl Source for ExchangeSource {
    type Batch = ExchangeBatch;

    fn descriptor(&self) -> SourceDescriptor {
        Self::descriptor_static()
    }

    async fn fetch(&mut self, ctx: &SyncContext) -> Result<Fetched<ExchangeBatch>, SourceError> {
        let body: Value = self.client.get_json("/api/v1/prices").await?;
        let price = usd_price(&body)?;
        let now = Utc::now();
        let at = Utc
            .timestamp_opt(now.timestamp(), 0)
            .single()
            .unwrap_or(now);
        let thresholds = Thresholds::load(&ctx.db).await;
        let backfill = chrono::Duration::from_std(self.backfill)
            .unwrap_or_else(|_| chrono::Duration::hours(1));
        Ok(Fetched::Batch {
            batch: ExchangeBatch {
                at,
                price,
                upstream_time: body.get("time").cloned(),
                thresholds,
                backfill,
            },
            progress: Progress {
                caught_up: true,
                newest_item_at: Some(at),
                ..Progress::default()
            },
        })
    }

    fn writer(&self) -> Arc<dyn BatchWriter<ExchangeBatch>> {
        Arc::new(ExchangeWriter)
    }

    fn poll_interval(&self) -> Duration {
        self.interval
    }
}

#[async_trait]
impl BatchWriter<ExchangeBatch> for ExchangeWriter {
    async fn write(&self, txn: &DatabaseTransaction, b: &ExchangeBatch) -> Result<Written, DbErr> {
        let point = store::upsert_point(
            txn,
            &PricePointRow {
                pair: PAIR_BTC_USD.into(),
                source: SOURCE_EXCHANGE.into(),
                at: b.at,
                price: b.price,
                confidence: None,
                volume: None,
                details: Some(json!({"upstream_time": b.upstream_time})),
            },
        )
        .await?;
        let filled =
            store::fill_missing_exchange(txn, b.at - b.backfill, b.at, b.price, &b.thresholds)
                .await?;
        let mut events = Vec::new();
        events.push(BusEvent::new(point.clone()));
        for c in &filled {
            events.push(BusEvent::new(c.clone()));
        }
        let price = b.price;
        Ok(Written {
            items: vec![("price", 1), ("comparison_filled", filled.len() as u64)],
            events,
            after_commit: Some(Box::new(move || {
                crate::metrics::Metrics::global()
                    .price
                    .with_label_values(&[PAIR_BTC_USD, SOURCE_EXCHANGE])
                    .set(price);
            })),
        })
    }

    async fn revert(&self, _txn: &DatabaseTransaction, _to: i64) -> Result<Reverted, DbErr> {
        // Exchange readings have no heights: nothing is ever reverted.
        Ok(Reverted::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usd_price() {
        let v = json!({"time": 1_700_000_000, "USD": 91234, "EUR": 84000});
        assert_eq!(usd_price(&v).unwrap(), 91234.0);
        assert!(usd_price(&json!({"time": 1})).is_err());
        assert!(usd_price(&json!({"USD": -3})).is_err());
    }
}
