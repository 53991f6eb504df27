//! Root query fields.

use async_graphql::{Context, Object, Result};
use orrery_entity::{config_entry, source};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::context::{page_args, state};
use super::error::{bad_input, internal, not_found};
use super::pagination::{keyset_page, Dir, Keyset, Page};
use super::types::{Chain, ConfigEntry};
use crate::health::HealthReport;

/// Queries over health, sync state and runtime config.
#[derive(Default)]
pub struct CoreQuery;

#[Object]
impl CoreQuery {
    /// Overall and per-component health (database, bus, each source), from the last
    /// periodic check (at most about a second old; `timestamp` says when it ran).
    async fn health(&self, ctx: &Context<'_>) -> HealthReport {
        HealthReport::clone(&state(ctx).health.latest())
    }

    /// Indexed chains and price sources, ordered by id.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn chains(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only sources of this kind: stellar, evm, bitcoin, exchange.")]
        kind: Option<String>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<Chain>> {
        let args = page_args(ctx, first, after)?;
        if let Some(k) = &kind {
            if !matches!(k.as_str(), "stellar" | "evm" | "bitcoin" | "exchange") {
                return Err(bad_input(
                    "kind",
                    "must be one of stellar, evm, bitcoin, exchange",
                ));
            }
        }
        let mut base = source::Entity::find();
        if let Some(k) = &kind {
            base = base.filter(source::Column::Kind.eq(k.clone()));
        }
        let key = Keyset::by(source::Column::Id, Dir::Asc, |m: &source::Model| {
            m.id.clone()
        });
        keyset_page(ctx, base, &key, args, "chains").await
    }

    /// One source by id.
    async fn chain(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Source id, e.g. `evm:sepolia`.")] id: String,
    ) -> Result<Chain> {
        source::Entity::find_by_id(id.clone())
            .one(&state(ctx).db)
            .await
            .map_err(|e| internal("reading a chain", e))?
            .map(Chain::from)
            .ok_or_else(|| not_found(format!("chain {id:?}")))
    }

    /// Sync status of every source: heights, lag, errors (same objects as `chains`).
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn indexer_status(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<Chain>> {
        self.chains(ctx, None, first, after).await
    }

    /// One database-backed setting.
    async fn config(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Dotted key, e.g. `sync.batch_size`.")] key: String,
    ) -> Result<ConfigEntry> {
        config_entry::Entity::find_by_id(key.clone())
            .one(&state(ctx).db)
            .await
            .map_err(|e| internal("reading config", e))?
            .map(ConfigEntry::from)
            .ok_or_else(|| not_found(format!("config key {key:?}")))
    }

    /// Database-backed settings, ordered by key.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn config_entries(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only keys starting with this prefix, e.g. `oracle.`.")] prefix: Option<
            String,
        >,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<ConfigEntry>> {
        let args = page_args(ctx, first, after)?;
        let mut base = config_entry::Entity::find();
        if let Some(p) = &prefix {
            base = base.filter(config_entry::Column::Key.starts_with(p.clone()));
        }
        let key = Keyset::by(
            config_entry::Column::Key,
            Dir::Asc,
            |m: &config_entry::Model| m.key.clone(),
        );
        keyset_page(ctx, base, &key, args, "config entries").await
    }
}
