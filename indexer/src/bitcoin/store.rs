//! Price rows: upserts, exchange look-ups, comparison back-fill, CSV export and pruning.

use chrono::{DateTime, Utc};
use orrery_entity::{price_comparison, price_point};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde::Serialize;

use super::comparison::{evaluate, OracleSide, Thresholds};

/// The pair every Bitcoin price row uses.
pub const PAIR_BTC_USD: &str = "BTC/USD";
/// `price_point.source` of UTXOracle estimates.
pub const SOURCE_UTXORACLE: &str = "UTXORACLE";
/// `price_point.source` of exchange prices.
pub const SOURCE_EXCHANGE: &str = "EXCHANGE";

/// A price point to write (upserted on `(pair, source, at)`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PricePointRow {
    /// Pair, e.g. `BTC/USD`.
    pub pair: String,
    /// `UTXORACLE`, `EXCHANGE`, `STELLAR_DEX`.
    pub source: String,
    /// Observation time (whole seconds).
    pub at: DateTime<Utc>,
    /// Price.
    pub price: f64,
    /// Confidence, when the source has one.
    pub confidence: Option<f64>,
    /// Volume behind the price (UTXOracle: qualifying outputs).
    pub volume: Option<f64>,
    /// Source details.
    pub details: Option<serde_json::Value>,
}

/// A comparison to write (upserted on `at`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonRow {
    /// Comparison time.
    pub at: DateTime<Utc>,
    /// UTXOracle side, if an estimate was made.
    pub oracle: Option<(f64, f64)>,
    /// Why no estimate was made.
    pub oracle_error: Option<String>,
    /// Exchange price found for the interval.
    pub exchange_price: Option<f64>,
}

/// Upserts one price point; returns the stored row.
pub async fn upsert_point<C: ConnectionTrait>(
    db: &C,
    p: &PricePointRow,
) -> Result<price_point::Model, DbErr> {
    let am = price_point::ActiveModel {
        id: NotSet,
        pair: Set(p.pair.clone()),
        source: Set(p.source.clone()),
        at: Set(p.at),
        price: Set(p.price),
        confidence: Set(p.confidence),
        volume: Set(p.volume),
        details: Set(p.details.clone()),
    };
    price_point::Entity::insert(am)
        .on_conflict(
            OnConflict::columns([
                price_point::Column::Pair,
                price_point::Column::Source,
                price_point::Column::At,
            ])
            .update_columns([
                price_point::Column::Price,
                price_point::Column::Confidence,
                price_point::Column::Volume,
                price_point::Column::Details,
            ])
            .to_owned(),
        )
        .exec(db)
        .await?;
    price_point::Entity::find()
        .filter(price_point::Column::Pair.eq(p.pair.clone()))
        .filter(price_point::Column::Source.eq(p.source.clone()))
        .filter(price_point::Column::At.eq(p.at))
        .one(db)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("price point just written".into()))
}

/// Upserts one comparison, evaluated against `t`; returns the stored row.
pub async fn upsert_comparison<C: ConnectionTrait>(
    db: &C,
    c: &ComparisonRow,
    t: &Thresholds,
) -> Result<price_comparison::Model, DbErr> {
    let oracle = c
        .oracle
        .map(|(price, confidence)| OracleSide { price, confidence });
    let e = evaluate(oracle, c.oracle_error.as_deref(), c.exchange_price, t);
    let am = price_comparison::ActiveModel {
        id: NotSet,
        at: Set(c.at),
        pair: Set(PAIR_BTC_USD.to_string()),
        utxoracle_price: Set(oracle.map(|o| o.price)),
        exchange_price: Set(c.exchange_price),
        diff: Set(e.diff),
        diff_percent: Set(e.diff_percent),
        confidence: Set(oracle.map(|o| o.confidence)),
        is_valid: Set(e.is_valid),
        reason: Set(e.reason),
        updated_at: Set(Utc::now()),
    };
    price_comparison::Entity::insert(am)
        .on_conflict(
            OnConflict::column(price_comparison::Column::At)
                .update_columns([
                    price_comparison::Column::UtxoraclePrice,
                    price_comparison::Column::ExchangePrice,
                    price_comparison::Column::Diff,
                    price_comparison::Column::DiffPercent,
                    price_comparison::Column::Confidence,
                    price_comparison::Column::IsValid,
                    price_comparison::Column::Reason,
                    price_comparison::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(db)
        .await?;
    price_comparison::Entity::find()
        .filter(price_comparison::Column::At.eq(c.at))
        .one(db)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("comparison just written".into()))
}

/// The newest exchange price observed in `[from, to]`.
pub async fn exchange_price_between<C: ConnectionTrait>(
    db: &C,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Option<f64>, DbErr> {
    Ok(price_point::Entity::find()
        .filter(price_point::Column::Pair.eq(PAIR_BTC_USD))
        .filter(price_point::Column::Source.eq(SOURCE_EXCHANGE))
        .filter(price_point::Column::At.between(from, to))
        .order_by_desc(price_point::Column::At)
        .one(db)
        .await?
        .map(|p| p.price))
}

/// Fills the exchange side of comparisons in `[since, until]` that lack one with `price`
/// (re-evaluating diff and validity); returns the updated rows.
pub async fn fill_missing_exchange<C: ConnectionTrait>(
    db: &C,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    price: f64,
    t: &Thresholds,
) -> Result<Vec<price_comparison::Model>, DbErr> {
    let rows = price_comparison::Entity::find()
        .filter(price_comparison::Column::ExchangePrice.is_null())
        .filter(price_comparison::Column::At.between(since, until))
        .all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let oracle_error = r
            .utxoracle_price
            .is_none()
            .then(|| r.reason.clone().unwrap_or_default());
        let row = ComparisonRow {
            at: r.at,
            oracle: r.utxoracle_price.map(|p| (p, r.confidence.unwrap_or(0.0))),
            oracle_error: oracle_error.map(|e| {
                e.trim_start_matches("no UTXOracle estimate: ")
                    .split("; exchange price missing")
                    .next()
                    .unwrap_or_default()
                    .to_string()
            }),
            exchange_price: Some(price),
        };
        out.push(upsert_comparison(db, &row, t).await?);
    }
    Ok(out)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// CSV header of [`points_csv`].
pub const POINTS_CSV_HEADER: &str = "id,pair,source,at,price,confidence,volume,details";
/// CSV header of [`comparisons_csv`].
pub const COMPARISONS_CSV_HEADER: &str =
    "id,at,pair,utxoracle_price,exchange_price,diff,diff_percent,confidence,is_valid,reason,updated_at";

/// Price points as CSV (RFC 4180 quoting; times RFC 3339; header first).
pub fn points_csv(rows: &[price_point::Model]) -> String {
    let mut s = String::from(POINTS_CSV_HEADER);
    s.push('\n');
    points_csv_rows(rows, &mut s);
    s
}

/// Appends `rows` to `out` as [`points_csv`] lines (no header).
pub fn points_csv_rows(rows: &[price_point::Model], out: &mut String) {
    for r in rows {
        let fields = [
            r.id.to_string(),
            csv_field(&r.pair),
            csv_field(&r.source),
            r.at.to_rfc3339(),
            r.price.to_string(),
            opt(&r.confidence),
            opt(&r.volume),
            csv_field(
                &r.details
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            ),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
}

/// Comparisons as CSV (RFC 4180 quoting; times RFC 3339; header first).
pub fn comparisons_csv(rows: &[price_comparison::Model]) -> String {
    let mut s = String::from(COMPARISONS_CSV_HEADER);
    s.push('\n');
    comparisons_csv_rows(rows, &mut s);
    s
}

/// Appends `rows` to `out` as [`comparisons_csv`] lines (no header).
pub fn comparisons_csv_rows(rows: &[price_comparison::Model], out: &mut String) {
    for r in rows {
        let fields = [
            r.id.to_string(),
            r.at.to_rfc3339(),
            csv_field(&r.pair),
            opt(&r.utxoracle_price),
            opt(&r.exchange_price),
            opt(&r.diff),
            opt(&r.diff_percent),
            opt(&r.confidence),
            r.is_valid.to_string(),
            csv_field(r.reason.as_deref().unwrap_or_default()),
            r.updated_at.to_rfc3339(),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
}

/// `from <= at < to` on `at` (either bound optional).
fn in_range<C: ColumnTrait>(
    at: C,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Condition {
    let mut c = Condition::all();
    if let Some(f) = from {
        c = c.add(at.gte(f));
    }
    if let Some(t) = to {
        c = c.add(at.lt(t));
    }
    c
}

/// Strictly after `(at, id)` in `(at, id)` order.
fn after_key<C: ColumnTrait>(at: C, id: C, after: Option<(DateTime<Utc>, i64)>) -> Condition {
    match after {
        None => Condition::all(),
        Some((a, i)) => Condition::any()
            .add(at.gt(a))
            .add(Condition::all().add(at.eq(a)).add(id.gt(i))),
    }
}

/// Price points with `from <= at < to` (either bound optional), oldest first.
pub async fn points_in<C: ConnectionTrait>(
    db: &C,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<price_point::Model>, DbErr> {
    price_point::Entity::find()
        .filter(in_range(price_point::Column::At, from, to))
        .order_by_asc(price_point::Column::At)
        .order_by_asc(price_point::Column::Id)
        .all(db)
        .await
}

/// How many price points [`points_in`] would return.
pub async fn count_points_in<C: ConnectionTrait>(
    db: &C,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<u64, DbErr> {
    price_point::Entity::find()
        .filter(in_range(price_point::Column::At, from, to))
        .count(db)
        .await
}

/// The next `limit` rows of [`points_in`] after the `(at, id)` of the last row of the
/// previous page (`None` for the first page).
pub async fn points_page<C: ConnectionTrait>(
    db: &C,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    after: Option<(DateTime<Utc>, i64)>,
    limit: u64,
) -> Result<Vec<price_point::Model>, DbErr> {
    use price_point::Column;
    price_point::Entity::find()
        .filter(in_range(Column::At, from, to))
        .filter(after_key(Column::At, Column::Id, after))
        .order_by_asc(Column::At)
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// Comparisons with `from <= at < to` (either bound optional), oldest first.
pub async fn comparisons_in<C: ConnectionTrait>(
    db: &C,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<price_comparison::Model>, DbErr> {
    price_comparison::Entity::find()
        .filter(in_range(price_comparison::Column::At, from, to))
        .order_by_asc(price_comparison::Column::At)
        .order_by_asc(price_comparison::Column::Id)
        .all(db)
        .await
}

/// How many comparisons [`comparisons_in`] would return.
pub async fn count_comparisons_in<C: ConnectionTrait>(
    db: &C,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<u64, DbErr> {
    price_comparison::Entity::find()
        .filter(in_range(price_comparison::Column::At, from, to))
        .count(db)
        .await
}

/// The next `limit` rows of [`comparisons_in`] after `(at, id)` of the previous page.
pub async fn comparisons_page<C: ConnectionTrait>(
    db: &C,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    after: Option<(DateTime<Utc>, i64)>,
    limit: u64,
) -> Result<Vec<price_comparison::Model>, DbErr> {
    use price_comparison::Column;
    price_comparison::Entity::find()
        .filter(in_range(Column::At, from, to))
        .filter(after_key(Column::At, Column::Id, after))
        .order_by_asc(Column::At)
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneOutcome {
    /// Price points deleted.
    pub price_points: u64,
    /// Comparisons deleted.
    pub price_comparisons: u64,
}

/// Deletes price points and comparisons with `at < before` in one transaction. With
/// `archive`, the exact rows about to be deleted are handed to it first (inside the
/// transaction); if it fails, nothing is deleted.
pub async fn prune_before<F>(
    db: &sea_orm::DatabaseConnection,
    before: DateTime<Utc>,
    archive: F,
) -> Result<PruneOutcome, PruneError>
where
    F: FnOnce(&[price_point::Model], &[price_comparison::Model]) -> Result<(), String>,
{
    let txn = db.begin().await?;
    let points = points_in(&txn, None, Some(before)).await?;
    let comparisons = comparisons_in(&txn, None, Some(before)).await?;
    archive(&points, &comparisons).map_err(PruneError::Archive)?;
    let mut out = PruneOutcome::default();
    for chunk in points.chunks(500) {
        out.price_points += price_point::Entity::delete_many()
            .filter(price_point::Column::Id.is_in(chunk.iter().map(|p| p.id)))
            .exec(&txn)
            .await?
            .rows_affected;
    }
    for chunk in comparisons.chunks(500) {
        out.price_comparisons += price_comparison::Entity::delete_many()
            .filter(price_comparison::Column::Id.is_in(chunk.iter().map(|p| p.id)))
            .exec(&txn)
            .await?
            .rows_affected;
    }
    txn.commit().await?;
    Ok(out)
}

/// Why a prune failed (nothing was deleted).
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] DbErr),
    /// Writing the archive failed.
    #[error("archive: {0}")]
    Archive(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("BTC/USD"), "BTC/USD");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
    /// Pages in `(at, id)` order, with rows sharing one `at`, add up to exactly `points_in`.
    #[tokio::test]
    async fn pages_cover_the_range_exactly_once() {
        use chrono::TimeZone;
        use orrery_migration::MigratorTrait;
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        orrery_migration::Migrator::up(&db, None).await.unwrap();
        let base = 1_735_689_600i64;
        for i in 0..23i64 {
            // Three sources share each hour: ties on `at` straddle page boundaries.
            let at = Utc.timestamp_opt(base + (i / 3) * 3600, 0).unwrap();
            upsert_point(
                &db,
                &PricePointRow {
                    pair: PAIR_BTC_USD.into(),
                    source: ["UTXORACLE", "EXCHANGE", "STELLAR_DEX"][(i % 3) as usize].into(),
                    at,
                    price: 90_000.0 + i as f64,
                    confidence: None,
                    volume: None,
                    details: None,
                },
            )
            .await
            .unwrap();
        }
        let from = Some(Utc.timestamp_opt(base + 3600, 0).unwrap());
        let to = Some(Utc.timestamp_opt(base + 6 * 3600, 0).unwrap());
        let all = points_in(&db, from, to).await.unwrap();
        assert_eq!(all.len(), 15);
        assert_eq!(count_points_in(&db, from, to).await.unwrap(), 15);
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = points_page(&db, from, to, after, 4).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some((last.at, last.id));
            paged.extend(page);
        }
        assert_eq!(paged, all);
        assert_eq!(count_comparisons_in(&db, None, None).await.unwrap(), 0);
        assert!(comparisons_page(&db, None, None, None, 4)
            .await
            .unwrap()
            .is_empty());
    }
}
