//! DEX prices: Horizon trade aggregations of configured pairs stored as `price_point` rows
//! (source `STELLAR_DEX`). The newest bucket is re-read each round (it may still grow), so
//! rows are upserted on (pair, source, at).

use chrono::{DateTime, Utc};
use orrery_entity::price_point;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::Value;

use super::horizon::{self, AssetKey};
use crate::sync::{SourceError, SyncContext};
use crate::upstream::UpstreamClient;

/// `source` column value of these price points.
pub const PRICE_SOURCE: &str = "STELLAR_DEX";

/// One pair to aggregate: `base/counter` (name as stored) and the resolved assets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Stored pair name, e.g. `XLM/UBEC`.
    pub name: String,
    /// Base asset.
    pub base: AssetKey,
    /// Counter asset.
    pub counter: AssetKey,
}

/// Resolves `BASE/COUNTER` where each side is `XLM`, `CODE:ISSUER` or a code found in `known`.
pub fn parse_pair(s: &str, known: &[AssetKey]) -> Option<Pair> {
    let (b, c) = s.split_once('/')?;
    let side = |x: &str| AssetKey::parse(x).or_else(|| known.iter().find(|k| k.code == x).cloned());
    let (base, counter) = (side(b)?, side(c)?);
    Some(Pair {
        name: format!("{}/{}", base.code, counter.code),
        base,
        counter,
    })
}

fn asset_query(prefix: &str, a: &AssetKey) -> String {
    if a.issuer.is_empty() {
        format!("{prefix}_asset_type=native")
    } else {
        format!(
            "{prefix}_asset_type={}&{prefix}_asset_code={}&{prefix}_asset_issuer={}",
            a.asset_type(),
            a.code,
            a.issuer
        )
    }
}

/// A decoded aggregation bucket: time, close price (decimal string and f64), base volume.
pub fn decode_bucket(v: &Value) -> Option<(DateTime<Utc>, String, f64, f64)> {
    let ts: i64 = v.get("timestamp")?.as_str()?.parse().ok()?;
    let at = DateTime::<Utc>::from_timestamp_millis(ts)?;
    let close = v.get("close")?.as_str()?.to_string();
    let price: f64 = close.parse().ok()?;
    let volume: f64 = v.get("base_volume")?.as_str()?.parse().ok()?;
    Some((at, close, price, volume))
}

/// Fetches new buckets of every pair (one page each) and upserts them; returns rows written.
pub async fn sync_prices(
    ctx: &SyncContext,
    client: &UpstreamClient,
    pairs: &[Pair],
    resolution_ms: i64,
) -> Result<u64, SourceError> {
    let mut written = 0;
    for p in pairs {
        let last = price_point::Entity::find()
            .filter(price_point::Column::Pair.eq(p.name.clone()))
            .filter(price_point::Column::Source.eq(PRICE_SOURCE))
            .order_by_desc(price_point::Column::At)
            .one(&ctx.db)
            .await?;
        let start = last.map_or(0, |l| l.at.timestamp_millis());
        let path = format!(
            "/trade_aggregations?{}&{}&resolution={resolution_ms}&start_time={start}&limit=200&order=asc",
            asset_query("base", &p.base),
            asset_query("counter", &p.counter)
        );
        let page: Value = client.get_json(&path).await?;
        let rows: Vec<price_point::ActiveModel> = horizon::records(&page)
            .iter()
            .filter_map(|r| {
                let (at, close, price, volume) = decode_bucket(r)?;
                let mut details = r.clone();
                if let Some(o) = details.as_object_mut() {
                    o.remove("_links");
                    o.insert("close_exact".into(), Value::String(close));
                }
                Some(price_point::ActiveModel {
                    pair: Set(p.name.clone()),
                    source: Set(PRICE_SOURCE.into()),
                    at: Set(at),
                    price: Set(price),
                    confidence: Set(None),
                    volume: Set(Some(volume)),
                    details: Set(Some(details)),
                    ..Default::default()
                })
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let n = rows.len() as u64;
        price_point::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([
                    price_point::Column::Pair,
                    price_point::Column::Source,
                    price_point::Column::At,
                ])
                .update_columns([
                    price_point::Column::Price,
                    price_point::Column::Volume,
                    price_point::Column::Details,
                ])
                .to_owned(),
            )
            .exec_without_returning(&ctx.db)
            .await?;
        written += n;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pairs_resolve_codes_and_buckets_decode() {
        let ubec = AssetKey::parse("UBEC:GI").unwrap();
        let p = parse_pair("XLM/UBEC", std::slice::from_ref(&ubec)).unwrap();
        assert_eq!(p.name, "XLM/UBEC");
        assert_eq!(p.counter, ubec);
        assert!(parse_pair("XLM/NOPE", &[]).is_none());
        let (at, close, price, vol) = decode_bucket(&json!({"timestamp": "1735689600000",
            "close": "0.1250000", "base_volume": "80.0000000"}))
        .unwrap();
        assert_eq!(at.timestamp(), 1_735_689_600);
        assert_eq!(close, "0.1250000");
        assert_eq!(price, 0.125);
        assert_eq!(vol, 80.0);
    }
}
