//! The `exchange` source: polls a mempool-style `/api/v1/prices` every interval, stores an
//! `EXCHANGE` price point and fills comparisons that were made while it was unavailable.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use super::comparison::Thresholds;
use super::store::{self, PricePointRow, PAIR_BTC_USD, SOURCE_EXCHANGE};
use crate::bus::{topics, BusEvent};
use crate::sync::{Progress, Source, SourceDescriptor, SourceError, SyncContext};
use crate::upstream::UpstreamClient;

/// Reads the USD price out of a `/api/v1/prices` answer (`{"time": .., "USD": ..}`).
pub fn usd_price(v: &Value) -> Result<f64, SourceError> {
    let p = v
        .get("USD")
        .and_then(Value::as_f64)
        .ok_or_else(|| SourceError::Data(format!("no USD price in {v}")))?;
    if !p.is_finite() || p <= 0.0 {
        return Err(SourceError::Data(format!("USD price {p} is not positive")));
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

#[async_trait]
impl Source for ExchangeSource {
    fn descriptor(&self) -> SourceDescriptor {
        Self::descriptor_static()
    }

    async fn step(&mut self, ctx: &SyncContext) -> Result<Progress, SourceError> {
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
        let txn = ctx.begin().await?;
        let point = store::upsert_point(
            &txn,
            &PricePointRow {
                pair: PAIR_BTC_USD.into(),
                source: SOURCE_EXCHANGE.into(),
                at,
                price,
                confidence: None,
                volume: None,
                details: Some(json!({"upstream_time": body.get("time")})),
            },
        )
        .await?;
        let filled =
            store::fill_missing_exchange(&txn, at - backfill, at, price, &thresholds).await?;
        let mut events = Vec::new();
        if let Ok(v) = serde_json::to_value(&point) {
            events.push(BusEvent::new(topics::PRICE_UPDATED, v));
        }
        for c in &filled {
            if let Ok(v) = serde_json::to_value(c) {
                events.push(BusEvent::new(topics::PRICE_COMPARISON_UPDATED, v));
            }
        }
        let progress = Progress {
            items: vec![("price", 1), ("comparison_filled", filled.len() as u64)],
            caught_up: true,
            newest_item_at: Some(at),
            ..Progress::default()
        };
        ctx.commit(txn, &progress, events).await?;
        crate::metrics::Metrics::global()
            .price
            .with_label_values(&[PAIR_BTC_USD, SOURCE_EXCHANGE])
            .set(price);
        Ok(progress)
    }

    fn poll_interval(&self) -> Duration {
        self.interval
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
