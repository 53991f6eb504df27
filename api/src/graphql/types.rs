//! GraphQL object types over stored rows. Field docs show in GraphiQL.

use async_graphql::{ComplexObject, SimpleObject};
use chrono::{DateTime, Utc};
use orrery_entity::{config_entry, source};

/// One indexed chain or price source and its sync state.
#[derive(SimpleObject, Clone, Debug, serde::Serialize, serde::Deserialize)]
#[graphql(complex)]
#[serde(rename_all = "camelCase")]
pub struct Chain {
    /// Source id, e.g. `stellar`, `evm:sepolia`, `bitcoin`.
    pub id: String,
    /// Kind of source: `stellar`, `evm`, `bitcoin` or `exchange`.
    pub kind: String,
    /// Human name.
    pub name: String,
    /// EVM chain id, when the source is an EVM chain.
    pub chain_id: Option<i64>,
    /// Upstream head height (ledger or block) last seen.
    pub head_height: Option<i64>,
    /// Last height committed to the database.
    pub indexed_height: Option<i64>,
    /// Opaque resume cursor of the source.
    pub cursor: Option<String>,
    /// `idle`, `syncing`, `synced`, `error` or `paused`.
    pub status: String,
    /// Consecutive failed sync iterations.
    pub error_count: i32,
    /// Last error message, if any.
    pub last_error: Option<String>,
    /// When the source last committed.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// When the upstream head was last observed.
    pub head_updated_at: Option<DateTime<Utc>>,
    /// Whether an operator paused the source.
    pub paused: bool,
    /// Height the current backfill started from (null when caught up).
    pub backfill_from: Option<i64>,
    /// Estimated seconds until the backfill reaches the head, at the rate measured by the
    /// engine (0 when caught up; null while no rate is known yet).
    pub eta_seconds: Option<i64>,
}

#[ComplexObject]
impl Chain {
    /// Stellar RPC source (`stellar:rpc`) only: whether the node emits CAP-67 token events
    /// for classic operations. `false` when its Core lacks `EMIT_CLASSIC_EVENTS` (or, for
    /// ledgers before Protocol 23, `BACKFILL_STELLAR_ASSET_EVENTS`): balances are then
    /// rebuilt from the account and trustline ledger entry changes in transaction meta
    /// (`getTransactions`), and compared with any token events the transactions carry
    /// (disagreements show in `balanceReconciliation`). Null for other sources and until
    /// the source has decided (its first page).
    async fn classic_events(&self) -> Option<bool> {
        if self.id != orrery_indexer::stellar::rpc::source::SOURCE_ID {
            return None;
        }
        orrery_indexer::stellar::rpc::meta::BalanceFeed::of_cursor(self.cursor.as_deref())
            .classic_events()
    }

    /// Head height minus indexed height (0 when caught up; null until both are known).
    async fn lag_blocks(&self) -> Option<i64> {
        Some((self.head_height? - self.indexed_height?).max(0))
    }

    /// Fraction of the current backfill range done, 0..1: (indexed - backfillFrom) /
    /// (head - backfillFrom); 1 when no backfill is running and the source is synced (an EVM
    /// source stays `confirmations` behind head), null before any height is known.
    async fn progress(&self) -> Option<f64> {
        let (head, indexed) = (self.head_height?, self.indexed_height?);
        Some(match self.backfill_from {
            Some(from) => orrery_indexer::sync::eta::progress(from, indexed, head),
            None if head <= indexed || self.status == "synced" => 1.0,
            None => orrery_indexer::sync::eta::progress(indexed, indexed, head),
        })
    }

    /// Seconds since the last commit (null before the first).
    async fn lag_seconds(&self) -> Option<f64> {
        self.last_sync_at
            .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
    }

    /// Name of the upstream (HTTP client, breaker, rate limiter) this source reads from.
    async fn upstream(&self) -> String {
        upstream_name(&self.kind, &self.id)
    }

    /// State of the circuit breaker guarding this source's upstream (null before first use).
    async fn circuit_breaker(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Option<super::ops::CircuitBreakerState>> {
        use sea_orm::EntityTrait;
        let db = &ctx.data_unchecked::<crate::state::AppState>().db;
        let row =
            orrery_entity::circuit_breaker::Entity::find_by_id(upstream_name(&self.kind, &self.id))
                .one(db)
                .await
                .map_err(|e| super::error::internal("reading a circuit breaker", e))?;
        Ok(row.map(Into::into))
    }

    /// Requests left in the upstream's rate-limit budget, as this server process sees it
    /// (null when this process does not run the source or the upstream has no budget).
    async fn rate_limit_remaining(&self) -> Option<f64> {
        let name = upstream_name(&self.kind, &self.id);
        orrery_indexer::metrics::Metrics::global()
            .registry
            .gather()
            .iter()
            .find(|f| f.name() == "orrery_rate_limit_remaining")?
            .get_metric()
            .iter()
            .find(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "upstream" && l.value() == name)
            })
            .map(|m| m.get_gauge().get_value())
            .filter(|v| *v < f64::from(u32::MAX))
    }

    /// The replica that runs this source (holder of its unexpired lease) when replicas share
    /// a PostgreSQL database; null on SQLite, where one process runs every source, and while
    /// no replica holds the lease (a failover in progress).
    async fn leader(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Option<String>> {
        Ok(self.lease(ctx).await?.map(|l| l.holder))
    }

    /// Seconds since the current leader took the lease (null when `leader` is null).
    async fn lease_age_seconds(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Option<f64>> {
        Ok(self
            .lease(ctx)
            .await?
            .map(|l| (Utc::now() - l.acquired_at).num_milliseconds().max(0) as f64 / 1000.0))
    }

    /// The lease's fencing token: one more at every change of leader (null when `leader` is
    /// null).
    async fn lease_token(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Option<i64>> {
        Ok(self.lease(ctx).await?.map(|l| l.token))
    }

    /// True when the sync engine reports the source caught up (`status` = `synced`: it has
    /// indexed everything its upstream offers, after the confirmations it waits for) and the
    /// source is not paused.
    async fn is_synced(&self) -> bool {
        !self.paused && self.status == "synced"
    }
}

impl Chain {
    /// The source's unexpired lease row, if any (batched across the response's chains).
    async fn lease(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> async_graphql::Result<Option<orrery_entity::source_lease::Model>> {
        let row = super::lease_loader::load_lease(ctx, &self.id).await?;
        Ok(row.filter(|l| l.expires_at > Utc::now()))
    }
}

/// The upstream client name a source uses: `horizon` for Stellar, `esplora` for Bitcoin, the
/// source id for the others (`evm:<chain>`, `exchange`).
pub fn upstream_name(kind: &str, id: &str) -> String {
    match kind {
        "stellar" => "horizon".to_string(),
        "bitcoin" => "esplora".to_string(),
        _ => id.to_string(),
    }
}

impl From<source::Model> for Chain {
    fn from(s: source::Model) -> Self {
        Self {
            id: s.id,
            kind: s.kind,
            name: s.name,
            chain_id: s.chain_id,
            head_height: s.head_height,
            indexed_height: s.indexed_height,
            cursor: s.cursor,
            status: s.status,
            error_count: s.error_count,
            last_error: s.last_error,
            last_sync_at: s.last_sync_at,
            head_updated_at: s.head_updated_at,
            paused: s.paused,
            backfill_from: s.backfill_from,
            eta_seconds: s.eta_seconds,
        }
    }
}

/// One database-backed runtime setting.
#[derive(SimpleObject, Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigEntry {
    /// Dotted key, e.g. `oracle.min_confidence`.
    pub key: String,
    /// Value as text, normalised for its type.
    pub value: String,
    /// `string`, `integer`, `decimal`, `boolean`, `json` or `duration` (seconds).
    pub value_type: String,
    /// What the setting does.
    pub description: Option<String>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Who changed it last.
    pub updated_by: Option<String>,
}

impl From<config_entry::Model> for ConfigEntry {
    fn from(c: config_entry::Model) -> Self {
        Self {
            key: c.key,
            value: c.value,
            value_type: c.value_type,
            description: c.description,
            updated_at: c.updated_at,
            updated_by: c.updated_by,
        }
    }
}
