//! Stellar queries.

use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use orrery_entity::{
    balance_reconciliation, distribution, stellar_account, stellar_account_operation,
    stellar_balance, stellar_operation, stellar_sync_state, stellar_transaction,
};
use orrery_indexer::stellar::amount::parse_stroops;
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::types::{
    parse_asset, BalanceCheck, Distribution, StellarAccount, StellarBalance, StellarOperation,
    StellarSyncStatus, StellarTransaction,
};
use crate::graphql::context::{page_args, state};
use crate::graphql::error::{bad_input, internal, not_found};
use crate::graphql::pagination::{keyset_page, Dir, Keyset, ListOrder, Page};

/// Filter of `accounts`.
#[derive(InputObject, Default)]
pub struct AccountFilter {
    /// Only watched (true) or unwatched (false) accounts.
    pub watched: Option<bool>,
    /// Only accounts whose `discoveredVia` equals this.
    pub discovered_via: Option<String>,
}

/// Order of `accounts`.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Default)]
pub enum AccountOrder {
    /// By account id ascending.
    #[default]
    IdAsc,
    /// By account id descending.
    IdDesc,
}

/// Replayed-versus-upstream balance check.
#[derive(SimpleObject)]
pub struct BalanceReconciliation {
    /// Accounts whose built balances differ from the upstream's at their last check (same
    /// as the metric `orrery_balance_reconciliation_mismatches`).
    pub mismatches: u64,
    /// Those accounts' sync states.
    pub accounts: Vec<StellarSyncStatus>,
    /// The disagreeing checks (per source, account and asset), by account.
    pub checks: Vec<BalanceCheck>,
}

/// Stellar queries.
#[derive(Default)]
pub struct StellarQuery;

#[Object]
impl StellarQuery {
    /// One Stellar account by id.
    async fn account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`G...` account id.")] id: String,
    ) -> Result<StellarAccount> {
        stellar_account::Entity::find_by_id(id.clone())
            .one(&state(ctx).db)
            .await
            .map_err(|e| internal("reading an account", e))?
            .map(StellarAccount::from)
            .ok_or_else(|| not_found(format!("account {id:?}")))
    }

    /// Stellar accounts.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn accounts(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which accounts.")] filter: Option<AccountFilter>,
        #[graphql(desc = "Sort order (default ID_ASC).")] order_by: Option<AccountOrder>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<StellarAccount>> {
        let args = page_args(ctx, first, after)?;
        let f = filter.unwrap_or_default();
        let mut base = stellar_account::Entity::find();
        if let Some(w) = f.watched {
            base = base.filter(stellar_account::Column::Watched.eq(w));
        }
        if let Some(v) = f.discovered_via {
            base = base.filter(stellar_account::Column::DiscoveredVia.eq(v));
        }
        let dir = match order_by.unwrap_or_default() {
            AccountOrder::IdAsc => Dir::Asc,
            AccountOrder::IdDesc => Dir::Desc,
        };
        let key = Keyset::by(
            stellar_account::Column::AccountId,
            dir,
            |m: &stellar_account::Model| m.account_id.clone(),
        );
        keyset_page(ctx, base, &key, args, "accounts").await
    }

    /// Holders of an asset ranked by balance (largest first).
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn balances(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`XLM`/`native` or `CODE:ISSUER`.")] asset: String,
        #[graphql(desc = "Only balances of at least this amount (decimal string).")]
        min_balance: Option<String>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<StellarBalance>> {
        let args = page_args(ctx, first, after)?;
        let asset = parse_asset("asset", &asset)?;
        let mut base = stellar_balance::Entity::find()
            .filter(stellar_balance::Column::AssetCode.eq(asset.code.clone()))
            .filter(stellar_balance::Column::AssetIssuer.eq(asset.issuer.clone()));
        if let Some(m) = &min_balance {
            let m = parse_stroops(m).ok_or_else(|| bad_input("minBalance", "not an amount"))?;
            base = base.filter(stellar_balance::Column::BalanceStroops.gte(m));
        }
        let key = Keyset::by(
            stellar_balance::Column::BalanceStroops,
            Dir::Desc,
            |m: &stellar_balance::Model| m.balance_stroops,
        )
        .then(stellar_balance::Column::AccountId, Dir::Asc, |m| {
            m.account_id.clone()
        });
        keyset_page(ctx, base, &key, args, "balances").await
    }

    /// Indexed operations by operation id (ledger order), oldest first unless
    /// `order: NEWEST_FIRST`.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn operations(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only operations of this watched account.")] account: Option<String>,
        #[graphql(name = "type", desc = "Only this Horizon type, e.g. `payment`.")] op_type: Option<
            String,
        >,
        #[graphql(desc = "Only operations at or after this time.")] since: Option<DateTime<Utc>>,
        #[graphql(desc = "Only operations before this time.")] until: Option<DateTime<Utc>>,
        #[graphql(desc = "OLDEST_FIRST (default) or NEWEST_FIRST.", default)] order: ListOrder,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<StellarOperation>> {
        let args = page_args(ctx, first, after)?;
        let mut base = stellar_operation::Entity::find();
        if let Some(a) = account {
            base = base.filter(
                stellar_operation::Column::Id.in_subquery(
                    Query::select()
                        .column(stellar_account_operation::Column::OperationId)
                        .from(stellar_account_operation::Entity)
                        .and_where(stellar_account_operation::Column::AccountId.eq(a))
                        .to_owned(),
                ),
            );
        }
        if let Some(t) = op_type {
            base = base.filter(stellar_operation::Column::OpType.eq(t));
        }
        if let Some(s) = since {
            base = base.filter(stellar_operation::Column::CreatedAt.gte(s));
        }
        if let Some(u) = until {
            base = base.filter(stellar_operation::Column::CreatedAt.lt(u));
        }
        let key = Keyset::by(
            stellar_operation::Column::Id,
            order.dir(),
            |m: &stellar_operation::Model| m.id,
        );
        keyset_page(ctx, base, &key, args, "operations").await
    }

    /// Stored Stellar transactions, by hash.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn transactions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only transactions of this source account.")] account: Option<String>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<StellarTransaction>> {
        let args = page_args(ctx, first, after)?;
        let mut base = stellar_transaction::Entity::find();
        if let Some(a) = account {
            base = base.filter(stellar_transaction::Column::SourceAccount.eq(a));
        }
        let key = Keyset::by(
            stellar_transaction::Column::Hash,
            Dir::Asc,
            |m: &stellar_transaction::Model| m.hash.clone(),
        );
        keyset_page(ctx, base, &key, args, "transactions").await
    }

    /// Sync state of one watched account.
    async fn sync_status(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`G...` account id.")] account: String,
    ) -> Result<StellarSyncStatus> {
        stellar_sync_state::Entity::find_by_id(account.clone())
            .one(&state(ctx).db)
            .await
            .map_err(|e| internal("reading sync status", e))?
            .map(StellarSyncStatus::from)
            .ok_or_else(|| not_found(format!("sync status of {account:?}")))
    }

    /// Accounts whose replayed balances disagree with Horizon.
    async fn balance_reconciliation(&self, ctx: &Context<'_>) -> Result<BalanceReconciliation> {
        let db = &state(ctx).db;
        let checks = balance_reconciliation::Entity::find()
            .filter(balance_reconciliation::Column::Agrees.eq(false))
            .order_by_asc(balance_reconciliation::Column::AccountId)
            .order_by_asc(balance_reconciliation::Column::Source)
            .order_by_asc(balance_reconciliation::Column::AssetCode)
            .order_by_asc(balance_reconciliation::Column::AssetIssuer)
            .all(db)
            .await
            .map_err(|e| internal("reading reconciliation", e))?;
        let mut ids: Vec<String> = checks.iter().map(|c| c.account_id.clone()).collect();
        ids.dedup();
        let rows = stellar_sync_state::Entity::find()
            .filter(stellar_sync_state::Column::AccountId.is_in(ids.clone()))
            .order_by_asc(stellar_sync_state::Column::AccountId)
            .all(db)
            .await
            .map_err(|e| internal("reading reconciliation", e))?;
        Ok(BalanceReconciliation {
            mismatches: ids.len() as u64,
            accounts: rows.into_iter().map(Into::into).collect(),
            checks: checks.into_iter().map(Into::into).collect(),
        })
    }

    /// Distributions, newest id last.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn distributions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this status.")] status: Option<String>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<Distribution>> {
        let args = page_args(ctx, first, after)?;
        let mut base = distribution::Entity::find();
        if let Some(s) = status {
            base = base.filter(distribution::Column::Status.eq(s));
        }
        let key = Keyset::by(
            distribution::Column::Id,
            Dir::Asc,
            |m: &distribution::Model| m.id,
        );
        keyset_page(ctx, base, &key, args, "distributions").await
    }

    /// One distribution.
    async fn distribution(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Distribution id.")] id: i64,
    ) -> Result<Distribution> {
        distribution::Entity::find_by_id(id)
            .one(&state(ctx).db)
            .await
            .map_err(|e| internal("reading a distribution", e))?
            .map(Distribution::from)
            .ok_or_else(|| not_found(format!("distribution {id}")))
    }
}
