//! DEX prices over RPC: Stellar RPC has no trade aggregations, so Orrery aggregates the
//! fills (`ClaimAtom`s of offer and path-payment results) of every transaction it reads into
//! OHLC buckets of `stellar.dex_resolution_ms`, stored as `price_point` rows of source
//! `STELLAR_DEX`, exactly as Horizon's `/trade_aggregations` buckets are (same fields, same
//! 7-decimal prices computed with integers, `price` = close, `volume` = base volume).
//!
//! A trade's price is counter per base of its amounts. Buckets are kept exactly in memory
//! (integers) and the newest one per pair is reloaded from its stored details on resume, so
//! a bucket spanning several pages is written whole each time (an upsert, never a merge).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::operations::Fill;
use crate::stellar::amount::{format_stroops, parse_stroops};
use crate::stellar::dex::Pair;

/// One executed trade of a pair: base and counter amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trade {
    /// Base amount (stroops).
    pub base: i64,
    /// Counter amount (stroops).
    pub counter: i64,
}

impl Trade {
    /// `self`'s price compared with `other`'s (counter / base), exactly.
    fn cmp_price(&self, other: &Trade) -> std::cmp::Ordering {
        (i128::from(self.counter) * i128::from(other.base))
            .cmp(&(i128::from(other.counter) * i128::from(self.base)))
    }
}

/// The trade of `pair` a fill is, if it trades the pair's two assets (either direction).
pub fn trade_of(pair: &Pair, f: &Fill) -> Option<Trade> {
    let t = if f.sold == pair.base && f.bought == pair.counter {
        Trade {
            base: f.amount_sold,
            counter: f.amount_bought,
        }
    } else if f.sold == pair.counter && f.bought == pair.base {
        Trade {
            base: f.amount_bought,
            counter: f.amount_sold,
        }
    } else {
        return None;
    };
    (t.base > 0 && t.counter > 0).then_some(t)
}

/// One OHLC bucket, exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Bucket start (Unix ms, a multiple of the resolution).
    pub start_ms: i64,
    /// Trades in it.
    pub count: u64,
    /// Base volume (stroops).
    pub base_volume: i64,
    /// Counter volume (stroops).
    pub counter_volume: i64,
    /// First trade.
    pub open: Trade,
    /// Highest price.
    pub high: Trade,
    /// Lowest price.
    pub low: Trade,
    /// Last trade.
    pub close: Trade,
}

impl Bucket {
    fn new(start_ms: i64, t: Trade) -> Self {
        Self {
            start_ms,
            count: 1,
            base_volume: t.base,
            counter_volume: t.counter,
            open: t,
            high: t,
            low: t,
            close: t,
        }
    }

    fn add(&mut self, t: Trade) {
        self.count += 1;
        self.base_volume = self.base_volume.saturating_add(t.base);
        self.counter_volume = self.counter_volume.saturating_add(t.counter);
        if t.cmp_price(&self.high).is_gt() {
            self.high = t;
        }
        if t.cmp_price(&self.low).is_lt() {
            self.low = t;
        }
        self.close = t;
    }

    /// The bucket as Horizon's trade aggregation record (without `_links`), plus
    /// `close_exact` as the Horizon path stores it.
    pub fn details(&self) -> Value {
        json!({
            "timestamp": self.start_ms.to_string(),
            "trade_count": self.count.to_string(),
            "base_volume": format_stroops(self.base_volume),
            "counter_volume": format_stroops(self.counter_volume),
            "avg": price_str(self.counter_volume, self.base_volume),
            "high": price_str(self.high.counter, self.high.base),
            "high_r": ratio(self.high),
            "low": price_str(self.low.counter, self.low.base),
            "low_r": ratio(self.low),
            "open": price_str(self.open.counter, self.open.base),
            "open_r": ratio(self.open),
            "close": price_str(self.close.counter, self.close.base),
            "close_r": ratio(self.close),
            "close_exact": price_str(self.close.counter, self.close.base),
        })
    }

    /// The bucket stored as `details` (see [`Bucket::details`]), when it has that shape.
    pub fn from_details(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        let r = |k: &str| -> Option<Trade> {
            let o = v.get(k)?;
            let n: i64 = o.get("n")?.as_str()?.parse().ok()?;
            let d: i64 = o.get("d")?.as_str()?.parse().ok()?;
            Some(Trade {
                base: d,
                counter: n,
            })
        };
        Some(Self {
            start_ms: s("timestamp")?.parse().ok()?,
            count: s("trade_count")?.parse().ok()?,
            base_volume: parse_stroops(s("base_volume")?)?,
            counter_volume: parse_stroops(s("counter_volume")?)?,
            open: r("open_r")?,
            high: r("high_r")?,
            low: r("low_r")?,
            close: r("close_r")?,
        })
    }

    /// Close price as f64 (the `price` column) and base volume (the `volume` column).
    pub fn price_and_volume(&self) -> (f64, f64) {
        let p = price_str(self.close.counter, self.close.base)
            .parse()
            .unwrap_or(f64::NAN);
        let v = format_stroops(self.base_volume).parse().unwrap_or(f64::NAN);
        (p, v)
    }

    /// Bucket start as a time.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        DateTime::<Utc>::from_timestamp_millis(self.start_ms)
    }
}

/// `counter / base` with seven decimals, floored, computed with integers.
fn price_str(counter: i64, base: i64) -> String {
    let v = i128::from(counter) * 10_000_000 / i128::from(base.max(1));
    format_stroops(i64::try_from(v).unwrap_or(i64::MAX))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn ratio(t: Trade) -> Value {
    let (n, d) = (t.counter.unsigned_abs(), t.base.unsigned_abs());
    let g = gcd(n, d).max(1);
    json!({"n": (n / g).to_string(), "d": (d / g).to_string()})
}

/// Running buckets of every pair: the newest per pair is extended, older ones are final.
#[derive(Debug, Default, Clone)]
pub struct Aggregator {
    /// Newest bucket per pair name.
    pub current: BTreeMap<String, Bucket>,
}

impl Aggregator {
    /// Adds the fills (ascending by time) of every pair; returns the buckets changed, in
    /// order, `(pair name, bucket)`, the newest state of each.
    pub fn add(
        &mut self,
        pairs: &[Pair],
        fills: &[Fill],
        resolution_ms: i64,
    ) -> Vec<(String, Bucket)> {
        let resolution = resolution_ms.max(1);
        let mut changed: Vec<(String, Bucket)> = Vec::new();
        for f in fills {
            let ms = f.at.timestamp_millis();
            let start = ms - ms.rem_euclid(resolution);
            for p in pairs {
                let Some(t) = trade_of(p, f) else {
                    continue;
                };
                let b = match self.current.get_mut(&p.name) {
                    Some(b) if b.start_ms == start => {
                        b.add(t);
                        b.clone()
                    }
                    // An older bucket than the newest: fills arrive in order, so this only
                    // happens for a bucket already final; it is left as stored.
                    Some(b) if b.start_ms > start => continue,
                    _ => {
                        let b = Bucket::new(start, t);
                        self.current.insert(p.name.clone(), b.clone());
                        b
                    }
                };
                match changed
                    .iter_mut()
                    .find(|(n, x)| *n == p.name && x.start_ms == b.start_ms)
                {
                    Some(slot) => slot.1 = b,
                    None => changed.push((p.name.clone(), b)),
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stellar::horizon::AssetKey;

    fn fill(sec: i64, sold: &AssetKey, a: i64, bought: &AssetKey, b: i64) -> Fill {
        Fill {
            operation_id: 0,
            at: DateTime::<Utc>::from_timestamp(sec, 0).unwrap(),
            sold: sold.clone(),
            amount_sold: a,
            bought: bought.clone(),
            amount_bought: b,
        }
    }

    #[test]
    fn buckets_are_exact_ohlc_in_both_directions() {
        let xlm = AssetKey::native();
        let ubec = AssetKey::parse("UBEC:GI").unwrap();
        let other = AssetKey::parse("OTHER:GI").unwrap();
        let pair = Pair {
            name: "XLM/UBEC".into(),
            base: xlm.clone(),
            counter: ubec.clone(),
        };
        let mut agg = Aggregator::default();
        let fills = vec![
            // 10 XLM sold for 5 UBEC: 0.5.
            fill(3600, &xlm, 100_000_000, &ubec, 50_000_000),
            // 3 UBEC sold for 4 XLM: 0.75 (high).
            fill(3601, &ubec, 30_000_000, &xlm, 40_000_000),
            // Not the pair.
            fill(3602, &other, 1, &xlm, 1),
            // 2 XLM for 0.5 UBEC: 0.25 (low, close).
            fill(3603, &xlm, 20_000_000, &ubec, 5_000_000),
            // Next hour.
            fill(7200, &xlm, 10_000_000, &ubec, 3_000_000),
        ];
        let changed = agg.add(std::slice::from_ref(&pair), &fills, 3_600_000);
        assert_eq!(changed.len(), 2);
        let b = &changed[0].1;
        assert_eq!(b.start_ms, 3_600_000);
        assert_eq!(b.count, 3);
        assert_eq!(b.base_volume, 160_000_000);
        assert_eq!(b.counter_volume, 85_000_000);
        let d = b.details();
        assert_eq!(d["open"], "0.5000000");
        assert_eq!(d["high"], "0.7500000");
        assert_eq!(d["high_r"], json!({"n": "3", "d": "4"}));
        assert_eq!(d["low"], "0.2500000");
        assert_eq!(d["close"], "0.2500000");
        assert_eq!(d["avg"], "0.5312500");
        assert_eq!(d["trade_count"], "3");
        // Stored and reloaded: the same bucket, and it keeps growing exactly.
        let reloaded = Bucket::from_details(&d).unwrap();
        assert_eq!(reloaded.details(), d);
        assert_eq!((reloaded.count, reloaded.base_volume), (3, 160_000_000));
        assert_eq!(b.price_and_volume(), (0.25, 16.0));
        assert_eq!(agg.current["XLM/UBEC"].start_ms, 7_200_000);
    }
}
