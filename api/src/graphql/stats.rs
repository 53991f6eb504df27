//! Aggregations computed in SQL on both backends: counts, sums, minima and maxima, grouped by
//! a key or by a time bucket (hour, day, ISO week), for Stellar operations and balances, EVM
//! events, ERC-8004 feedback scores and distributions.
//!
//! Amounts are summed by the database over integer stroops and read back as text, so sums
//! are exact however large (never a float); scores' averages are exact decimals rounded to
//! six places. Every list is bounded (`first`, at most `graphql.max_page_size`, or at most
//! [`MAX_BUCKETS`] time buckets) and costs its size in the complexity limit.

use async_graphql::{ComplexObject, Context, Enum, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use orrery_indexer::stellar::amount::parse_stroops;
use orrery_indexer::stellar::horizon::AssetKey;
use rust_decimal::Decimal;
use sea_orm::{DbBackend, FromQueryResult, Statement, Value};

use super::context::state;
use super::error::{bad_input, internal};

/// Most time buckets one aggregation returns.
pub const MAX_BUCKETS: i64 = 10_000;

/// Width of a time bucket. Buckets start at UTC midnight (days) and on Mondays (weeks).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum StatsInterval {
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
    /// One ISO week, Monday 00:00 UTC to the next.
    Week,
}

impl StatsInterval {
    /// Width in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => 3_600,
            Self::Day => 86_400,
            Self::Week => 604_800,
        }
    }
}

/// Complexity of a bucketed aggregation: its selection, plus five per time bucket in
/// `[from, to)` (the fields of a bucket), so a year of hours costs what it returns.
pub fn bucket_cost(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval: Option<StatsInterval>,
    child_complexity: usize,
) -> usize {
    let width = interval.unwrap_or(StatsInterval::Day).seconds();
    let buckets = ((to - from).num_seconds().max(0) / width + 1).min(MAX_BUCKETS) as usize;
    child_complexity
        .saturating_add(buckets.saturating_mul(5))
        .saturating_add(1)
}

/// A SQL text under construction with its bound values, placeholders per backend.
struct Sql {
    backend: DbBackend,
    conds: Vec<String>,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            conds: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Binds `v`; returns its placeholder. (Values are bound in WHERE only, in order.)
    fn bind(&mut self, v: impl Into<Value>) -> String {
        self.values.push(v.into());
        match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len()),
            _ => "?".to_string(),
        }
    }

    /// Adds the condition `f(placeholder of v)`.
    fn and(&mut self, v: impl Into<Value>, f: impl FnOnce(&str) -> String) {
        let p = self.bind(v);
        self.conds.push(f(&p));
    }

    fn and_sql(&mut self, cond: impl Into<String>) {
        self.conds.push(cond.into());
    }

    fn where_clause(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }

    fn statement(&self, select: &str, rest: &str) -> Statement {
        Statement::from_sql_and_values(
            self.backend,
            format!("{select}{}{rest}", self.where_clause()),
            self.values.clone(),
        )
    }

    /// Whole seconds since the epoch of the timestamp column `col`.
    fn epoch(&self, col: &str) -> String {
        match self.backend {
            DbBackend::Postgres => format!("CAST(FLOOR(EXTRACT(EPOCH FROM {col})) AS BIGINT)"),
            _ => format!("CAST(strftime('%s', {col}) AS INTEGER)"),
        }
    }

    /// Epoch second at which the bucket of `col` starts.
    fn bucket(&self, col: &str, interval: StatsInterval) -> String {
        let e = self.epoch(col);
        match interval {
            // 1970-01-05 (epoch 345600) was a Monday.
            StatsInterval::Week => format!("((({e}) - 345600) / 604800) * 604800 + 345600"),
            i => format!("(({e}) / {w}) * {w}", w = i.seconds()),
        }
    }
}

/// One row of a grouped aggregate: its key (text), count, and the exact sum, minimum and
/// maximum of an integer column (stroops or scores).
#[derive(Debug, FromQueryResult)]
struct AggRow {
    grp: Option<String>,
    bucket: Option<i64>,
    n: i64,
    n_value: i64,
    total: Option<String>,
    lo: Option<i64>,
    hi: Option<i64>,
}

/// `COUNT`, `SUM` (as exact text), `MIN`, `MAX` of `col`, plus the key columns.
fn agg_select(key: &str, bucket: &str, col: &str) -> String {
    format!(
        "SELECT CAST({key} AS TEXT) AS grp, CAST({bucket} AS BIGINT) AS bucket, COUNT(*) AS n, \
         COUNT({col}) AS n_value, CAST(SUM({col}) AS TEXT) AS total, \
         CAST(MIN({col}) AS BIGINT) AS lo, CAST(MAX({col}) AS BIGINT) AS hi"
    )
}

async fn run(ctx: &Context<'_>, stmt: Statement, what: &str) -> Result<Vec<AggRow>> {
    AggRow::find_by_statement(stmt)
        .all(&state(ctx).db)
        .await
        .map_err(|e| internal(&format!("computing {what}"), e))
}

/// An exact sum of stroops as a 7-decimal string (sums may exceed `i64`).
fn format_units(total: &str) -> Result<String> {
    let v: i128 = total
        .trim()
        .trim_end_matches(".0")
        .parse()
        .map_err(|e| internal("reading a sum", format!("{total:?}: {e}")))?;
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    Ok(format!("{sign}{}.{:07}", a / 10_000_000, a % 10_000_000))
}

fn units(v: Option<i64>) -> Option<String> {
    v.map(orrery_indexer::stellar::amount::format_stroops)
}

/// Count and exact amount statistics of a set of rows.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct AmountStats {
    /// Rows.
    pub count: i64,
    /// Rows that carry an amount.
    pub amount_count: i64,
    /// Sum of the amounts, exact decimal string (null when no row has one).
    pub sum: Option<String>,
    /// Smallest amount.
    pub min: Option<String>,
    /// Largest amount.
    pub max: Option<String>,
}

impl AmountStats {
    fn of(r: &AggRow) -> Result<Self> {
        Ok(Self {
            count: r.n,
            amount_count: r.n_value,
            sum: r.total.as_deref().map(format_units).transpose()?,
            min: units(r.lo),
            max: units(r.hi),
        })
    }
}

/// Statistics of the rows sharing one key.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct AmountGroup {
    /// The key (operation type, `CODE:ISSUER` or `XLM`, account, status...).
    pub key: String,
    /// Statistics of its rows.
    pub stats: AmountStats,
}

/// Statistics of the rows in one time bucket.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct AmountBucket {
    /// Bucket start (inclusive).
    pub start: DateTime<Utc>,
    /// Statistics of its rows.
    pub stats: AmountStats,
}

/// Number of rows sharing one key.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct CountGroup {
    /// The key (event name, contract...).
    pub key: String,
    /// Rows.
    pub count: i64,
}

/// Number of rows in one time bucket.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct CountBucket {
    /// Bucket start (inclusive).
    pub start: DateTime<Utc>,
    /// Rows.
    pub count: i64,
}

fn groups(rows: Vec<AggRow>) -> Result<Vec<AmountGroup>> {
    rows.iter()
        .map(|r| {
            Ok(AmountGroup {
                key: r.grp.clone().unwrap_or_default(),
                stats: AmountStats::of(r)?,
            })
        })
        .collect()
}

fn buckets(rows: Vec<AggRow>) -> Result<Vec<AmountBucket>> {
    rows.iter()
        .map(|r| {
            let secs = r.bucket.unwrap_or_default();
            Ok(AmountBucket {
                start: DateTime::from_timestamp(secs, 0)
                    .ok_or_else(|| internal("reading a bucket", secs))?,
                stats: AmountStats::of(r)?,
            })
        })
        .collect()
}

fn group_limit(ctx: &Context<'_>, first: Option<i32>) -> Result<u64> {
    let g = &state(ctx).config.graphql;
    match first {
        None => Ok(u64::from(g.default_page_size)),
        Some(n) if n < 1 => Err(bad_input("first", "must be at least 1")),
        Some(n) if n as u32 > g.max_page_size => Err(bad_input(
            "first",
            format!(
                "must be at most {} (graphql.max_page_size)",
                g.max_page_size
            ),
        )),
        Some(n) => Ok(n as u64),
    }
}

fn check_range(from: DateTime<Utc>, to: DateTime<Utc>, interval: StatsInterval) -> Result<()> {
    if to <= from {
        return Err(bad_input("to", "must be after from"));
    }
    if (to - from).num_seconds() / interval.seconds() >= MAX_BUCKETS {
        return Err(bad_input(
            "interval",
            format!("more than {MAX_BUCKETS} buckets between from and to: widen it"),
        ));
    }
    Ok(())
}

fn parse_asset(arg: &str, s: &str) -> Result<AssetKey> {
    AssetKey::parse(s).ok_or_else(|| bad_input(arg, "must be XLM, native or CODE:ISSUER"))
}

/// The key of an operation's asset: `XLM` for the native asset, else `CODE:ISSUER`.
const OP_ASSET_KEY: &str = "CASE WHEN COALESCE(asset_issuer, '') = '' THEN asset_code \
                            ELSE asset_code || ':' || asset_issuer END";

/// Operations matching `operationStats`' filter.
#[derive(Clone, Debug)]
struct OperationFilter {
    account: Option<String>,
    asset: Option<AssetKey>,
    op_type: Option<String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval: StatsInterval,
}

impl OperationFilter {
    fn sql(&self, backend: DbBackend) -> Sql {
        let mut q = Sql::new(backend);
        q.and(self.from, |p| format!("created_at >= {p}"));
        q.and(self.to, |p| format!("created_at < {p}"));
        if let Some(a) = &self.account {
            q.and(a.clone(), |p| {
                format!(
                    "id IN (SELECT operation_id FROM stellar_account_operation WHERE account_id = {p})"
                )
            });
        }
        if let Some(a) = &self.asset {
            q.and(a.code.clone(), |p| format!("asset_code = {p}"));
            q.and(a.issuer.clone(), |p| {
                format!("COALESCE(asset_issuer, '') = {p}")
            });
        }
        if let Some(t) = &self.op_type {
            q.and(t.clone(), |p| format!("op_type = {p}"));
        }
        q
    }
}

/// Aggregates of Stellar operations over `[from, to)`.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct OperationStats {
    /// Start of the range (inclusive).
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    pub to: DateTime<Utc>,
    #[graphql(skip)]
    filter: OperationFilter,
}

impl OperationStats {
    async fn grouped(
        &self,
        ctx: &Context<'_>,
        key: &str,
        extra: Option<&str>,
        first: Option<i32>,
    ) -> Result<Vec<AmountGroup>> {
        let limit = group_limit(ctx, first)?;
        let mut q = self.filter.sql(state(ctx).db.get_database_backend());
        if let Some(c) = extra {
            q.and_sql(c);
        }
        let stmt = q.statement(
            &format!(
                "{} FROM stellar_operation",
                agg_select(key, "NULL", "amount_stroops")
            ),
            &format!(" GROUP BY {key} ORDER BY n DESC, grp ASC LIMIT {limit}"),
        );
        groups(run(ctx, stmt, "operation statistics").await?)
    }
}

#[ComplexObject]
impl OperationStats {
    /// Count and amounts of every matching operation.
    async fn total(&self, ctx: &Context<'_>) -> Result<AmountStats> {
        let q = self.filter.sql(state(ctx).db.get_database_backend());
        let stmt = q.statement(
            &format!(
                "{} FROM stellar_operation",
                agg_select("NULL", "NULL", "amount_stroops")
            ),
            "",
        );
        let rows = run(ctx, stmt, "operation statistics").await?;
        match rows.first() {
            Some(r) => AmountStats::of(r),
            None => Err(internal("computing operation statistics", "no row")),
        }
    }

    /// The same per time bucket of `interval` (buckets without operations are left out).
    async fn buckets(&self, ctx: &Context<'_>) -> Result<Vec<AmountBucket>> {
        let q = self.filter.sql(state(ctx).db.get_database_backend());
        let b = q.bucket("created_at", self.filter.interval);
        let stmt = q.statement(
            &format!(
                "{} FROM stellar_operation",
                agg_select("NULL", &b, "amount_stroops")
            ),
            &format!(" GROUP BY {b} ORDER BY bucket ASC"),
        );
        buckets(run(ctx, stmt, "operation buckets").await?)
    }

    /// The same per operation type, most frequent first.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn by_type(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Most groups (at most graphql.max_page_size).")] first: Option<i32>,
    ) -> Result<Vec<AmountGroup>> {
        self.grouped(ctx, "op_type", None, first).await
    }

    /// The same per asset (`XLM` or `CODE:ISSUER`; operations without an asset are left
    /// out), most frequent first.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn by_asset(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Most groups (at most graphql.max_page_size).")] first: Option<i32>,
    ) -> Result<Vec<AmountGroup>> {
        self.grouped(ctx, OP_ASSET_KEY, Some("asset_code IS NOT NULL"), first)
            .await
    }

    /// The same per source account, most active first.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn by_source_account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Most groups (at most graphql.max_page_size).")] first: Option<i32>,
    ) -> Result<Vec<AmountGroup>> {
        self.grouped(ctx, "source_account", None, first).await
    }
}

/// Holders of one asset and how its supply is spread.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct BalanceStats {
    /// The asset (`XLM` or `CODE:ISSUER`).
    pub asset: String,
    #[graphql(skip)]
    key: AssetKey,
}

/// Holders whose balance lies in `[from, to)`.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct BalanceBucket {
    /// Lower bound (inclusive), exact decimal string.
    pub from: String,
    /// Upper bound (exclusive); null for the last bucket.
    pub to: Option<String>,
    /// Accounts in the bucket.
    pub holders: i64,
    /// Sum of their balances, exact decimal string.
    pub total: String,
}

impl BalanceStats {
    fn sql(&self, backend: DbBackend) -> Sql {
        let mut q = Sql::new(backend);
        q.and(self.key.code.clone(), |p| format!("asset_code = {p}"));
        q.and(self.key.issuer.clone(), |p| format!("asset_issuer = {p}"));
        q
    }
}

/// Default bounds of `distribution`: powers of ten from 1 to 1,000,000 units.
const DEFAULT_BOUNDS: [i64; 7] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];

#[ComplexObject]
impl BalanceStats {
    /// Accounts with a balance above zero (`holders`), accounts with a trustline or balance
    /// at all (`count`), and the supply held (`sum`, exact), smallest and largest balance.
    async fn summary(&self, ctx: &Context<'_>) -> Result<BalanceSummary> {
        let q = self.sql(state(ctx).db.get_database_backend());
        let stmt = q.statement(
            &format!(
                "{}, CAST(SUM(CASE WHEN balance_stroops > 0 THEN 1 ELSE 0 END) AS BIGINT) AS holders \
                 FROM stellar_balance",
                agg_select("NULL", "NULL", "balance_stroops")
            ),
            "",
        );
        let row = HolderRow::find_by_statement(stmt)
            .one(&state(ctx).db)
            .await
            .map_err(|e| internal("computing balance statistics", e))?
            .ok_or_else(|| internal("computing balance statistics", "no row"))?;
        Ok(BalanceSummary {
            holders: row.holders.unwrap_or(0),
            stats: AmountStats::of(&row.agg())?,
        })
    }

    /// Accounts per balance bucket: `[0, b1)`, `[b1, b2)`, ..., `[bn, ∞)` for the ascending
    /// bounds given (default 1, 10, ..., 1000000); balances of zero count in the first.
    async fn distribution(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Ascending bucket bounds, decimal strings (at most 100).")] bounds: Option<
            Vec<String>,
        >,
    ) -> Result<Vec<BalanceBucket>> {
        let bounds: Vec<i64> = match bounds {
            None => DEFAULT_BOUNDS.iter().map(|u| u * 10_000_000).collect(),
            Some(b) => {
                if b.len() > 100 {
                    return Err(bad_input("bounds", "at most 100 bounds"));
                }
                b.iter()
                    .map(|s| {
                        parse_stroops(s)
                            .ok_or_else(|| bad_input("bounds", format!("{s:?} is not an amount")))
                    })
                    .collect::<Result<_>>()?
            }
        };
        if bounds.windows(2).any(|w| w[0] >= w[1]) || bounds.first().is_some_and(|b| *b <= 0) {
            return Err(bad_input(
                "bounds",
                "must be positive and strictly ascending",
            ));
        }
        let mut case = String::from("CASE");
        for (i, b) in bounds.iter().enumerate() {
            case.push_str(&format!(" WHEN balance_stroops < {b} THEN {i}"));
        }
        case.push_str(&format!(" ELSE {} END", bounds.len()));
        let q = self.sql(state(ctx).db.get_database_backend());
        let stmt = q.statement(
            &format!(
                "{} FROM stellar_balance",
                agg_select("NULL", &case, "balance_stroops")
            ),
            &format!(" GROUP BY {case} ORDER BY bucket ASC"),
        );
        let rows = run(ctx, stmt, "balance distribution").await?;
        let fmt = orrery_indexer::stellar::amount::format_stroops;
        (0..=bounds.len())
            .map(|i| {
                let row = rows.iter().find(|r| r.bucket == Some(i as i64));
                Ok(BalanceBucket {
                    from: fmt(if i == 0 { 0 } else { bounds[i - 1] }),
                    to: bounds.get(i).copied().map(fmt),
                    holders: row.map_or(0, |r| r.n),
                    total: match row.and_then(|r| r.total.as_deref()) {
                        Some(t) => format_units(t)?,
                        None => fmt(0),
                    },
                })
            })
            .collect()
    }
}

/// Holders and supply of an asset.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct BalanceSummary {
    /// Accounts holding more than zero.
    pub holders: i64,
    /// Count (balances stored, zero included), supply (`sum`), smallest and largest balance.
    pub stats: AmountStats,
}

#[derive(Debug, FromQueryResult)]
struct HolderRow {
    n: i64,
    n_value: i64,
    total: Option<String>,
    lo: Option<i64>,
    hi: Option<i64>,
    holders: Option<i64>,
}

impl HolderRow {
    fn agg(&self) -> AggRow {
        AggRow {
            grp: None,
            bucket: None,
            n: self.n,
            n_value: self.n_value,
            total: self.total.clone(),
            lo: self.lo,
            hi: self.hi,
        }
    }
}

/// Decoded EVM events matching `eventStats`' filter.
pub struct EventStats {
    chain: Option<String>,
    contract: Option<String>,
    name: Option<String>,
    from_block: Option<i64>,
    to_block: Option<i64>,
}

impl EventStats {
    fn sql(&self, backend: DbBackend) -> Sql {
        let mut q = Sql::new(backend);
        if let Some(c) = &self.chain {
            q.and(c.clone(), |p| format!("e.chain = {p}"));
        }
        if let Some(c) = &self.contract {
            q.and(c.clone(), |p| format!("e.contract = {p}"));
        }
        if let Some(n) = &self.name {
            q.and(n.clone(), |p| format!("e.name = {p}"));
        }
        if let Some(f) = self.from_block {
            q.and(f, |p| format!("e.block_number >= {p}"));
        }
        if let Some(t) = self.to_block {
            q.and(t, |p| format!("e.block_number <= {p}"));
        }
        q
    }

    async fn counted(
        &self,
        ctx: &Context<'_>,
        key: &str,
        first: Option<i32>,
    ) -> Result<Vec<CountGroup>> {
        let limit = group_limit(ctx, first)?;
        let q = self.sql(state(ctx).db.get_database_backend());
        let stmt = q.statement(
            &format!(
                "{} FROM evm_event e",
                agg_select(key, "NULL", "e.block_number")
            ),
            &format!(" GROUP BY {key} ORDER BY n DESC, grp ASC LIMIT {limit}"),
        );
        Ok(run(ctx, stmt, "event statistics")
            .await?
            .into_iter()
            .map(|r| CountGroup {
                key: r.grp.unwrap_or_default(),
                count: r.n,
            })
            .collect())
    }
}

#[Object]
impl EventStats {
    /// Matching events.
    async fn count(&self, ctx: &Context<'_>) -> Result<i64> {
        let q = self.sql(state(ctx).db.get_database_backend());
        let stmt = q.statement(
            &format!(
                "{} FROM evm_event e",
                agg_select("NULL", "NULL", "e.block_number")
            ),
            "",
        );
        Ok(run(ctx, stmt, "event statistics")
            .await?
            .first()
            .map_or(0, |r| r.n))
    }

    /// Events per name, most frequent first.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn by_name(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Most groups (at most graphql.max_page_size).")] first: Option<i32>,
    ) -> Result<Vec<CountGroup>> {
        self.counted(ctx, "e.name", first).await
    }

    /// Events per contract, most frequent first.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn by_contract(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Most groups (at most graphql.max_page_size).")] first: Option<i32>,
    ) -> Result<Vec<CountGroup>> {
        self.counted(ctx, "e.contract", first).await
    }

    /// Events per time bucket of their block's timestamp, oldest first (events of blocks
    /// whose header is not stored are left out); at most 10000 buckets.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn buckets(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Bucket width (default DAY).")] interval: Option<StatsInterval>,
        #[graphql(desc = "Most buckets (at most graphql.max_page_size).")] first: Option<i32>,
    ) -> Result<Vec<CountBucket>> {
        let limit = group_limit(ctx, first)?;
        let interval = interval.unwrap_or(StatsInterval::Day);
        let q = self.sql(state(ctx).db.get_database_backend());
        let b = q.bucket("b.timestamp", interval);
        let stmt = q.statement(
            &format!(
                "{} FROM evm_event e JOIN evm_block b ON b.chain = e.chain AND b.number = e.block_number",
                agg_select("NULL", &b, "e.block_number")
            ),
            &format!(" GROUP BY {b} ORDER BY bucket ASC LIMIT {limit}"),
        );
        run(ctx, stmt, "event buckets")
            .await?
            .into_iter()
            .map(|r| {
                let secs = r.bucket.unwrap_or_default();
                Ok(CountBucket {
                    start: DateTime::from_timestamp(secs, 0)
                        .ok_or_else(|| internal("reading a bucket", secs))?,
                    count: r.n,
                })
            })
            .collect()
    }
}

/// Feedback scores of one agent (revoked feedback excluded from the scores).
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct AgentFeedbackStats {
    /// Agent id.
    pub agent_id: String,
    /// Feedback given and not revoked.
    pub count: i64,
    /// Feedback revoked by its client.
    pub revoked: i64,
    /// Sum of the scores (exact integer, as a string).
    pub score_sum: String,
    /// Lowest score.
    pub min_score: Option<i64>,
    /// Highest score.
    pub max_score: Option<i64>,
    /// Mean score, exact decimal rounded to 6 places (null without feedback).
    pub average_score: Option<String>,
}

#[derive(Debug, FromQueryResult)]
struct FeedbackRow {
    grp: String,
    n: i64,
    revoked: i64,
    total: Option<String>,
    lo: Option<i64>,
    hi: Option<i64>,
}

/// Distributions grouped by status, and their recipients grouped by payment status.
pub struct DistributionStats {
    asset: Option<AssetKey>,
}

impl DistributionStats {
    fn sql(&self, backend: DbBackend, table: &str) -> Sql {
        let mut q = Sql::new(backend);
        if let Some(a) = &self.asset {
            q.and(a.code.clone(), |p| format!("{table}.asset_code = {p}"));
            q.and(a.issuer.clone(), |p| format!("{table}.asset_issuer = {p}"));
        }
        q
    }
}

#[Object]
impl DistributionStats {
    /// Distributions per status: how many, and their total budgets (`sum`, exact).
    async fn by_status(&self, ctx: &Context<'_>) -> Result<Vec<AmountGroup>> {
        let q = self.sql(state(ctx).db.get_database_backend(), "d");
        let stmt = q.statement(
            &format!(
                "{} FROM distribution d",
                agg_select("d.status", "NULL", "d.total_budget_stroops")
            ),
            " GROUP BY d.status ORDER BY grp ASC",
        );
        groups(run(ctx, stmt, "distribution statistics").await?)
    }

    /// Recipients per payment status (`pending`, `paid`, `failed`): how many, and the amounts
    /// due to them (`sum`, exact).
    async fn recipients_by_status(&self, ctx: &Context<'_>) -> Result<Vec<AmountGroup>> {
        let q = self.sql(state(ctx).db.get_database_backend(), "d");
        let stmt = q.statement(
            &format!(
                "{} FROM distribution_recipient r JOIN distribution d ON d.id = r.distribution_id",
                agg_select("r.status", "NULL", "r.amount_stroops")
            ),
            " GROUP BY r.status ORDER BY grp ASC",
        );
        groups(run(ctx, stmt, "recipient statistics").await?)
    }
}

/// Aggregation queries.
#[derive(Default)]
pub struct StatsQuery;

#[Object]
impl StatsQuery {
    /// Counts and exact amount statistics of Stellar operations in `[from, to)`, in total,
    /// per time bucket, per type, asset and source account.
    #[allow(clippy::too_many_arguments)]
    #[graphql(
        complexity = "crate::graphql::stats::bucket_cost(from, to, interval, child_complexity)"
    )]
    async fn operation_stats(
        &self,
        #[graphql(desc = "Only operations of this account (as indexed for it).")] account: Option<
            String,
        >,
        #[graphql(desc = "Only operations in this asset: `XLM` or `CODE:ISSUER`.")] asset: Option<
            String,
        >,
        #[graphql(name = "type", desc = "Only this Horizon type, e.g. `payment`.")] op_type: Option<
            String,
        >,
        #[graphql(desc = "Bucket width of `buckets` (default DAY).")] interval: Option<
            StatsInterval,
        >,
        #[graphql(desc = "Start (inclusive).")] from: DateTime<Utc>,
        #[graphql(desc = "End (exclusive).")] to: DateTime<Utc>,
    ) -> Result<OperationStats> {
        let interval = interval.unwrap_or(StatsInterval::Day);
        check_range(from, to, interval)?;
        let asset = asset.map(|a| parse_asset("asset", &a)).transpose()?;
        Ok(OperationStats {
            from,
            to,
            filter: OperationFilter {
                account,
                asset,
                op_type,
                from,
                to,
                interval,
            },
        })
    }

    /// Holders, supply and the distribution of balances of one asset.
    async fn balance_stats(
        &self,
        #[graphql(desc = "`XLM`/`native` or `CODE:ISSUER`.")] asset: String,
    ) -> Result<BalanceStats> {
        let key = parse_asset("asset", &asset)?;
        let name = if key.issuer.is_empty() {
            key.code.clone()
        } else {
            format!("{}:{}", key.code, key.issuer)
        };
        Ok(BalanceStats { asset: name, key })
    }

    /// Counts of decoded EVM events per name, contract and time bucket.
    async fn event_stats(
        &self,
        #[graphql(desc = "Chain name; all chains when omitted.")] chain: Option<String>,
        #[graphql(desc = "Contract address (0x hex, any case).")] contract: Option<String>,
        #[graphql(desc = "Event name, e.g. `NewFeedback`.")] name: Option<String>,
        #[graphql(desc = "Lowest block number (inclusive).")] from_block: Option<i64>,
        #[graphql(desc = "Highest block number (inclusive).")] to_block: Option<i64>,
    ) -> Result<EventStats> {
        if let (Some(f), Some(t)) = (from_block, to_block) {
            if f > t {
                return Err(bad_input("fromBlock", "must not exceed toBlock"));
            }
        }
        Ok(EventStats {
            chain,
            contract: contract.map(|c| c.to_ascii_lowercase()),
            name,
            from_block,
            to_block,
        })
    }

    /// Feedback scores per ERC-8004 agent of a chain, in agent-id order.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn feedback_stats(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Chain name, e.g. `sepolia`.")] chain: String,
        #[graphql(desc = "Only this agent id (decimal).")] agent_id: Option<String>,
        #[graphql(desc = "Most agents (at most graphql.max_page_size).")] first: Option<i32>,
    ) -> Result<Vec<AgentFeedbackStats>> {
        let limit = group_limit(ctx, first)?;
        let mut q = Sql::new(state(ctx).db.get_database_backend());
        q.and(chain, |p| format!("chain = {p}"));
        if let Some(a) = agent_id {
            q.and(a, |p| format!("agent_id = {p}"));
        }
        let live = "CASE WHEN revoked THEN NULL ELSE score END";
        let stmt = q.statement(
            &format!(
                "SELECT agent_id AS grp, COUNT({live}) AS n, \
                 CAST(SUM(CASE WHEN revoked THEN 1 ELSE 0 END) AS BIGINT) AS revoked, \
                 CAST(SUM({live}) AS TEXT) AS total, CAST(MIN({live}) AS BIGINT) AS lo, \
                 CAST(MAX({live}) AS BIGINT) AS hi FROM erc8004_feedback"
            ),
            &format!(
                " GROUP BY agent_id ORDER BY LENGTH(agent_id) ASC, agent_id ASC LIMIT {limit}"
            ),
        );
        let rows = FeedbackRow::find_by_statement(stmt)
            .all(&state(ctx).db)
            .await
            .map_err(|e| internal("computing feedback statistics", e))?;
        rows.into_iter()
            .map(|r| {
                let sum: i128 = match &r.total {
                    Some(t) => t
                        .trim()
                        .parse()
                        .map_err(|e| internal("reading a score sum", format!("{t:?}: {e}")))?,
                    None => 0,
                };
                let average = (r.n > 0).then(|| {
                    let s = Decimal::from_i128_with_scale(sum, 0);
                    (s / Decimal::from(r.n)).round_dp(6).normalize().to_string()
                });
                Ok(AgentFeedbackStats {
                    agent_id: r.grp,
                    count: r.n,
                    revoked: r.revoked,
                    score_sum: sum.to_string(),
                    min_score: r.lo,
                    max_score: r.hi,
                    average_score: average,
                })
            })
            .collect()
    }

    /// Distributions and their recipients by status, with exact amounts.
    async fn distribution_stats(
        &self,
        #[graphql(desc = "Only distributions of this asset: `CODE:ISSUER`.")] asset: Option<String>,
    ) -> Result<DistributionStats> {
        let asset = asset.map(|a| parse_asset("asset", &a)).transpose()?;
        Ok(DistributionStats { asset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_exact_past_i64() {
        assert_eq!(format_units("125000000").unwrap(), "12.5000000");
        assert_eq!(format_units("-1").unwrap(), "-0.0000001");
        assert_eq!(
            format_units("184467440737095516150").unwrap(),
            "18446744073709.5516150"
        );
        assert!(format_units("1.5e3").is_err());
    }

    #[test]
    fn buckets_per_backend() {
        let pg = Sql::new(DbBackend::Postgres);
        assert!(pg
            .bucket("at", StatsInterval::Hour)
            .contains("EXTRACT(EPOCH FROM at)"));
        let lite = Sql::new(DbBackend::Sqlite);
        let w = lite.bucket("at", StatsInterval::Week);
        assert!(
            w.contains("strftime('%s', at)") && w.contains("604800"),
            "{w}"
        );
        let mut q = Sql::new(DbBackend::Postgres);
        q.and(1i64, |p| format!("a = {p}"));
        q.and(2i64, |p| format!("b = {p}"));
        assert_eq!(q.where_clause(), " WHERE a = $1 AND b = $2");
    }

    #[test]
    fn bucket_cost_counts_buckets() {
        let from = DateTime::from_timestamp(0, 0).unwrap();
        let to = DateTime::from_timestamp(86_400 * 10, 0).unwrap();
        assert_eq!(
            bucket_cost(from, to, Some(StatsInterval::Day), 10),
            10 + 11 * 5 + 1
        );
        assert!(bucket_cost(from, to, Some(StatsInterval::Hour), 10) > 1_000);
    }
}
