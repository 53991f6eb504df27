//! Prices: latest price, OHLC buckets computed in SQL, UTXOracle/exchange comparisons and
//! the `priceUpdated` subscription.

use async_graphql::{Context, Json, Object, Result, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures::Stream;
use orrery_entity::{price_comparison, price_point};
use orrery_indexer::bus::{topics, Payload};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, Statement,
};

use super::context::{page_args, state};
use super::error::{bad_input, internal};
use super::pagination::{keyset_page, Dir, Keyset, Page};
use super::subscription::bus_stream;

/// One stored price observation.
#[derive(SimpleObject, Clone, Debug)]
pub struct PricePoint {
    /// Row id.
    pub id: i64,
    /// Pair, e.g. `BTC/USD`.
    pub pair: String,
    /// `UTXORACLE` (rolling window), `UTXORACLE_DAILY` (one per UTC day), `EXCHANGE` or `STELLAR_DEX`.
    pub source: String,
    /// Observation time.
    pub at: DateTime<Utc>,
    /// Price (quote units per base unit; a statistical estimate, hence a float).
    pub price: f64,
    /// Confidence in [0, 1], when the source provides one.
    pub confidence: Option<f64>,
    /// Volume behind the price (UTXOracle: qualifying outputs).
    pub volume: Option<f64>,
    /// Source-specific details.
    pub details: Option<Json<serde_json::Value>>,
}

impl From<price_point::Model> for PricePoint {
    fn from(m: price_point::Model) -> Self {
        Self {
            id: m.id,
            pair: m.pair,
            source: m.source,
            at: m.at,
            price: m.price,
            confidence: m.confidence,
            volume: m.volume,
            details: m.details.map(Json),
        }
    }
}

/// Open/high/low/close of one time bucket.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct PriceBucket {
    /// Bucket start (inclusive).
    pub start: DateTime<Utc>,
    /// First price in the bucket.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Last price in the bucket.
    pub close: f64,
    /// Observations in the bucket.
    pub count: i64,
}

/// UTXOracle estimate versus exchange price at one time.
#[derive(SimpleObject, Clone, Debug)]
pub struct PriceComparison {
    /// Row id.
    pub id: i64,
    /// Comparison time.
    pub at: DateTime<Utc>,
    /// Pair (`BTC/USD`).
    pub pair: String,
    /// UTXOracle estimate, absent when none could be made.
    pub utxoracle_price: Option<f64>,
    /// Exchange price, absent while the exchange was unavailable.
    pub exchange_price: Option<f64>,
    /// `utxoraclePrice - exchangePrice`.
    pub diff: Option<f64>,
    /// Difference in percent of the exchange price.
    pub diff_percent: Option<f64>,
    /// Estimator confidence.
    pub confidence: Option<f64>,
    /// All checks passed (oracle.min_confidence, oracle.min/max_price_usd, both sides present).
    pub is_valid: bool,
    /// Why not valid.
    pub reason: Option<String>,
    /// Last update (a later exchange price fills the row in).
    pub updated_at: DateTime<Utc>,
}

impl From<price_comparison::Model> for PriceComparison {
    fn from(m: price_comparison::Model) -> Self {
        Self {
            id: m.id,
            at: m.at,
            pair: m.pair,
            utxoracle_price: m.utxoracle_price,
            exchange_price: m.exchange_price,
            diff: m.diff,
            diff_percent: m.diff_percent,
            confidence: m.confidence,
            is_valid: m.is_valid,
            reason: m.reason,
            updated_at: m.updated_at,
        }
    }
}

/// Bucket width in seconds for `1m`, `5m`, `1h`, `1d`.
pub fn interval_secs(interval: &str) -> Option<i64> {
    match interval {
        "1m" => Some(60),
        "5m" => Some(300),
        "1h" => Some(3600),
        "1d" => Some(86_400),
        _ => None,
    }
}

#[derive(FromQueryResult)]
struct BucketRow {
    bucket: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    n: i64,
}

/// The OHLC query: integer epoch seconds (derived per backend) divided by the width,
/// grouped in SQL; open/close are the prices at each bucket's first and last `at`
/// (unique per pair and source).
pub fn ohlc_statement(
    backend: DbBackend,
    pair: &str,
    source: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    width: i64,
) -> Statement {
    let (epoch, p): (&str, [&str; 6]) = match backend {
        DbBackend::Postgres => (
            "CAST(FLOOR(EXTRACT(EPOCH FROM at)) AS BIGINT)",
            ["$1", "$2", "$3", "$4", "$5", "$6"],
        ),
        _ => (
            "CAST(strftime('%s', at) AS INTEGER)",
            ["?", "?", "?", "?", "?", "?"],
        ),
    };
    let sql = format!(
        "SELECT g.bucket AS bucket, g.lo AS low, g.hi AS high, g.n AS n, \
           (SELECT o.price FROM price_point o WHERE o.pair = g.pair AND o.source = g.source AND o.at = g.first_at) AS open, \
           (SELECT c.price FROM price_point c WHERE c.pair = g.pair AND c.source = g.source AND c.at = g.last_at) AS close \
         FROM (SELECT pair, source, ({epoch} / {w}) * {w} AS bucket, MIN(price) AS lo, MAX(price) AS hi, \
                 COUNT(*) AS n, MIN(at) AS first_at, MAX(at) AS last_at \
               FROM price_point WHERE pair = {p0} AND source = {p1} AND at >= {p2} AND at < {p3} \
               GROUP BY pair, source, ({epoch} / {w}) * {w}) g \
         ORDER BY g.bucket",
        w = width,
        p0 = p[0],
        p1 = p[1],
        p2 = p[2],
        p3 = p[3],
    );
    Statement::from_sql_and_values(
        backend,
        sql,
        [
            pair.to_string().into(),
            source.to_string().into(),
            from.into(),
            to.into(),
        ],
    )
}

/// Price queries.
#[derive(Default)]
pub struct PricesQuery;

#[Object]
impl PricesQuery {
    /// The newest price of a pair from one source, if any.
    async fn latest_price(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Pair, e.g. `BTC/USD`.")] pair: String,
        #[graphql(
            desc = "`UTXORACLE` (rolling window), `UTXORACLE_DAILY` (one per UTC day), `EXCHANGE` or `STELLAR_DEX`."
        )]
        source: String,
    ) -> Result<Option<PricePoint>> {
        let row = price_point::Entity::find()
            .filter(price_point::Column::Pair.eq(pair))
            .filter(price_point::Column::Source.eq(source))
            .order_by_desc(price_point::Column::At)
            .one(&state(ctx).db)
            .await
            .map_err(|e| internal("reading the latest price", e))?;
        Ok(row.map(Into::into))
    }

    /// OHLC buckets of a pair from one source over `[from, to)`, computed in SQL.
    async fn prices(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Pair, e.g. `BTC/USD`.")] pair: String,
        #[graphql(
            desc = "`UTXORACLE` (rolling window), `UTXORACLE_DAILY` (one per UTC day), `EXCHANGE` or `STELLAR_DEX`."
        )]
        source: String,
        #[graphql(desc = "Start (inclusive).")] from: DateTime<Utc>,
        #[graphql(desc = "End (exclusive).")] to: DateTime<Utc>,
        #[graphql(desc = "Bucket width: `1m`, `5m`, `1h` or `1d`.")] interval: String,
    ) -> Result<Vec<PriceBucket>> {
        let width = interval_secs(&interval)
            .ok_or_else(|| bad_input("interval", "must be one of 1m, 5m, 1h, 1d"))?;
        if to <= from {
            return Err(bad_input("to", "must be after from"));
        }
        if (to - from).num_seconds() / width > 10_000 {
            return Err(bad_input("interval", "more than 10000 buckets: widen it"));
        }
        let db = &state(ctx).db;
        let stmt = ohlc_statement(db.get_database_backend(), &pair, &source, from, to, width);
        let rows = BucketRow::find_by_statement(stmt)
            .all(db)
            .await
            .map_err(|e| internal("computing price buckets", e))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(PriceBucket {
                    start: DateTime::from_timestamp(r.bucket, 0)?,
                    open: r.open,
                    high: r.high,
                    low: r.low,
                    close: r.close,
                    count: r.n,
                })
            })
            .collect())
    }

    /// Comparisons of the UTXOracle estimate with the exchange price, oldest first.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn price_comparisons(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Start (inclusive).")] from: Option<DateTime<Utc>>,
        #[graphql(desc = "End (exclusive).")] to: Option<DateTime<Utc>>,
        #[graphql(desc = "Only rows flagged invalid.", default = false)] only_invalid: bool,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<PriceComparison>> {
        let args = page_args(ctx, first, after)?;
        let mut base = price_comparison::Entity::find();
        if let Some(f) = from {
            base = base.filter(price_comparison::Column::At.gte(f));
        }
        if let Some(t) = to {
            base = base.filter(price_comparison::Column::At.lt(t));
        }
        if only_invalid {
            base = base.filter(price_comparison::Column::IsValid.eq(false));
        }
        let key = Keyset::by(
            price_comparison::Column::At,
            Dir::Asc,
            |m: &price_comparison::Model| m.at,
        );
        keyset_page(ctx, base, &key, args, "comparisons").await
    }
}

/// Price subscriptions.
#[derive(Default)]
pub struct PricesSubscription;

#[Subscription]
impl PricesSubscription {
    /// A price point was stored for this pair (and source, when given).
    async fn price_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Pair, e.g. `BTC/USD`.")] pair: String,
        #[graphql(desc = "Only this source; every source when omitted.")] source: Option<String>,
    ) -> impl Stream<Item = async_graphql::Result<PricePoint>> {
        bus_stream(ctx, topics::PRICE_UPDATED, move |e| {
            let Payload::PriceUpdated(m) = e.payload else {
                return None;
            };
            (m.pair == pair && source.as_ref().is_none_or(|s| *s == m.source))
                .then(|| price_point::Model::from(m).into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_statements() {
        assert_eq!(interval_secs("5m"), Some(300));
        assert_eq!(interval_secs("2h"), None);
        let t = DateTime::from_timestamp(0, 0).unwrap();
        let pg = ohlc_statement(DbBackend::Postgres, "BTC/USD", "EXCHANGE", t, t, 60).sql;
        assert!(pg.contains("EXTRACT(EPOCH FROM at)") && pg.contains("$4"));
        let lite = ohlc_statement(DbBackend::Sqlite, "BTC/USD", "EXCHANGE", t, t, 60).sql;
        assert!(lite.contains("strftime('%s', at)") && !lite.contains('$'));
    }
}
