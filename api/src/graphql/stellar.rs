//! Stellar queries and subscriptions: accounts, balances, operations, transactions,
//! per-account sync status and distributions. Nested lists load through batched
//! [`DataLoader`]s (one query per list kind per request, no N+1).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{
    ComplexObject, Context, Enum, InputObject, Json, Object, Result, SimpleObject, Subscription,
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use orrery_entity::{
    distribution, distribution_event, distribution_recipient, stellar_account,
    stellar_account_operation, stellar_balance, stellar_operation, stellar_sync_state,
    stellar_transaction,
};
use orrery_indexer::bus::{publish_logged, topics, BusEvent};
use orrery_indexer::stellar::admin::{self, AdminError, NewDistribution};
use orrery_indexer::stellar::amount::{format_stroops, parse_stroops};
use orrery_indexer::stellar::horizon::AssetKey;
use orrery_indexer::stellar::resync::ResyncMode;
use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde_json::json;

use super::error::{bad_input, internal, not_found};
use super::mutation::client_addr;
use super::pagination::{build_page, Page};
use super::query::{page_args, state, wants_total};
use super::subscription::bus_stream;
use crate::audit::{self, AuditEntry};
use crate::auth::{principal, Principal, Role, RoleGuard};

/// The batched loaders of this module (registered as schema data).
pub struct StellarLoaders {
    balances: DataLoader<BalanceLoader>,
    sync: DataLoader<SyncLoader>,
    recipients: DataLoader<RecipientLoader>,
    events: DataLoader<EventLoader>,
}

impl StellarLoaders {
    /// Loaders reading from `db` (no cache: every request sees fresh rows).
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            balances: DataLoader::new(BalanceLoader(db.clone()), tokio::spawn),
            sync: DataLoader::new(SyncLoader(db.clone()), tokio::spawn),
            recipients: DataLoader::new(RecipientLoader(db.clone()), tokio::spawn),
            events: DataLoader::new(EventLoader(db), tokio::spawn),
        }
    }
}

fn loaders<'a>(ctx: &Context<'a>) -> Result<&'a StellarLoaders> {
    ctx.data::<StellarLoaders>()
        .map_err(|_| internal("stellar loaders", "not registered"))
}

/// Loads balances by account id.
pub struct BalanceLoader(DatabaseConnection);
/// Loads sync state by account id.
pub struct SyncLoader(DatabaseConnection);
/// Loads recipients by distribution id.
pub struct RecipientLoader(DatabaseConnection);
/// Loads events by distribution id.
pub struct EventLoader(DatabaseConnection);

impl Loader<String> for BalanceLoader {
    type Value = Vec<StellarBalance>;
    type Error = Arc<DbErr>;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = stellar_balance::Entity::find()
            .filter(stellar_balance::Column::AccountId.is_in(keys.to_vec()))
            .order_by_asc(stellar_balance::Column::AssetCode)
            .all(&self.0)
            .await
            .map_err(Arc::new)?;
        let mut out: HashMap<String, Vec<StellarBalance>> = HashMap::new();
        for r in rows {
            out.entry(r.account_id.clone()).or_default().push(r.into());
        }
        Ok(out)
    }
}

impl Loader<String> for SyncLoader {
    type Value = StellarSyncStatus;
    type Error = Arc<DbErr>;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = stellar_sync_state::Entity::find()
            .filter(stellar_sync_state::Column::AccountId.is_in(keys.to_vec()))
            .all(&self.0)
            .await
            .map_err(Arc::new)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.account_id.clone(), r.into()))
            .collect())
    }
}

impl Loader<i64> for RecipientLoader {
    type Value = Vec<DistributionRecipient>;
    type Error = Arc<DbErr>;
    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let rows = distribution_recipient::Entity::find()
            .filter(distribution_recipient::Column::DistributionId.is_in(keys.to_vec()))
            .order_by_asc(distribution_recipient::Column::Id)
            .all(&self.0)
            .await
            .map_err(Arc::new)?;
        let mut out: HashMap<i64, Vec<DistributionRecipient>> = HashMap::new();
        for r in rows {
            out.entry(r.distribution_id).or_default().push(r.into());
        }
        Ok(out)
    }
}

impl Loader<i64> for EventLoader {
    type Value = Vec<DistributionEvent>;
    type Error = Arc<DbErr>;
    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let rows = distribution_event::Entity::find()
            .filter(distribution_event::Column::DistributionId.is_in(keys.to_vec()))
            .order_by_asc(distribution_event::Column::Id)
            .all(&self.0)
            .await
            .map_err(Arc::new)?;
        let mut out: HashMap<i64, Vec<DistributionEvent>> = HashMap::new();
        for r in rows {
            out.entry(r.distribution_id).or_default().push(r.into());
        }
        Ok(out)
    }
}

/// A Stellar account known to the indexer.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct StellarAccount {
    /// `G...` account id.
    pub account_id: String,
    /// Whether its operations are indexed.
    pub watched: bool,
    /// Sequence number (decimal string).
    pub sequence: Option<String>,
    /// Subentries (trustlines, offers...).
    pub subentry_count: Option<i32>,
    /// Ledger of the last modification.
    pub last_modified_ledger: Option<i64>,
    /// Time of the last modification.
    pub last_modified_at: Option<DateTime<Utc>>,
    /// How the account was found (`config`, `holder:CODE`, ...).
    pub discovered_via: Option<String>,
}

impl From<stellar_account::Model> for StellarAccount {
    fn from(m: stellar_account::Model) -> Self {
        Self {
            account_id: m.account_id,
            watched: m.watched,
            sequence: m.sequence.map(|s| s.to_string()),
            subentry_count: m.subentry_count,
            last_modified_ledger: m.last_modified_ledger,
            last_modified_at: m.last_modified_at,
            discovered_via: m.discovered_via,
        }
    }
}

#[ComplexObject]
impl StellarAccount {
    /// Current balances (from the account record).
    async fn balances(&self, ctx: &Context<'_>) -> Result<Vec<StellarBalance>> {
        Ok(loaders(ctx)?
            .balances
            .load_one(self.account_id.clone())
            .await
            .map_err(|e| internal("loading balances", e))?
            .unwrap_or_default())
    }

    /// Sync state of this account.
    async fn sync_status(&self, ctx: &Context<'_>) -> Result<Option<StellarSyncStatus>> {
        loaders(ctx)?
            .sync
            .load_one(self.account_id.clone())
            .await
            .map_err(|e| internal("loading sync status", e))
    }

    /// Required assets (`stellar.required_assets`) this account holds no trustline for.
    async fn missing_trustlines(&self, ctx: &Context<'_>) -> Result<Vec<String>> {
        let have: Vec<String> = loaders(ctx)?
            .balances
            .load_one(self.account_id.clone())
            .await
            .map_err(|e| internal("loading balances", e))?
            .unwrap_or_default()
            .into_iter()
            .map(|b| b.asset_code)
            .collect();
        Ok(state(ctx)
            .config
            .stellar
            .required_assets
            .iter()
            .filter(|c| !have.contains(c))
            .cloned()
            .collect())
    }
}

/// A balance of one account in one asset.
#[derive(SimpleObject, Clone)]
pub struct StellarBalance {
    /// Holder.
    pub account_id: String,
    /// `native`, `credit_alphanum4` or `credit_alphanum12`.
    pub asset_type: String,
    /// Asset code (`XLM` for native).
    pub asset_code: String,
    /// Issuer (empty for native).
    pub asset_issuer: String,
    /// Balance, exact decimal string with 7 decimals.
    pub balance: String,
    /// Trustline limit (credit assets).
    pub limit: Option<String>,
    /// Ledger of the last change.
    pub last_modified_ledger: Option<i64>,
}

impl From<stellar_balance::Model> for StellarBalance {
    fn from(m: stellar_balance::Model) -> Self {
        Self {
            account_id: m.account_id,
            asset_type: m.asset_type,
            asset_code: m.asset_code,
            asset_issuer: m.asset_issuer,
            balance: format_stroops(m.balance_stroops),
            limit: m.limit_stroops.map(format_stroops),
            last_modified_ledger: m.last_modified_ledger,
        }
    }
}

/// A Stellar operation.
#[derive(SimpleObject, Clone)]
pub struct StellarOperation {
    /// Horizon operation id (decimal string).
    pub id: String,
    /// Enclosing transaction hash.
    pub transaction_hash: String,
    /// Ledger.
    pub ledger: Option<i64>,
    /// Ledger close time.
    pub created_at: DateTime<Utc>,
    /// Horizon type, e.g. `payment`.
    #[graphql(name = "type")]
    pub op_type: String,
    /// Source account.
    pub source_account: String,
    /// Sender (payment-like operations).
    #[graphql(name = "from")]
    pub from_account: Option<String>,
    /// Receiver (payment-like operations).
    #[graphql(name = "to")]
    pub to_account: Option<String>,
    /// Asset code.
    pub asset_code: Option<String>,
    /// Asset issuer.
    pub asset_issuer: Option<String>,
    /// Amount, exact decimal string.
    pub amount: Option<String>,
    /// Whether the transaction succeeded.
    pub successful: bool,
}

impl From<stellar_operation::Model> for StellarOperation {
    fn from(m: stellar_operation::Model) -> Self {
        Self {
            id: m.id.to_string(),
            transaction_hash: m.transaction_hash,
            ledger: m.ledger,
            created_at: m.created_at,
            op_type: m.op_type,
            source_account: m.source_account,
            from_account: m.from_account,
            to_account: m.to_account,
            asset_code: m.asset_code,
            asset_issuer: m.asset_issuer,
            amount: m.amount_stroops.map(format_stroops),
            successful: m.successful,
        }
    }
}

/// A Stellar transaction (stored when its memo was needed).
#[derive(SimpleObject, Clone)]
pub struct StellarTransaction {
    /// Hash.
    pub hash: String,
    /// Source account.
    pub source_account: String,
    /// Ledger.
    pub ledger: i64,
    /// Close time.
    pub created_at: DateTime<Utc>,
    /// Fee charged, exact decimal string of XLM.
    pub fee_charged: String,
    /// Operation count.
    pub operation_count: i32,
    /// Whether it succeeded.
    pub successful: bool,
    /// Memo type.
    pub memo_type: Option<String>,
    /// Memo.
    pub memo: Option<String>,
}

impl From<stellar_transaction::Model> for StellarTransaction {
    fn from(m: stellar_transaction::Model) -> Self {
        Self {
            hash: m.hash,
            source_account: m.source_account,
            ledger: m.ledger,
            created_at: m.created_at,
            fee_charged: format_stroops(m.fee_charged),
            operation_count: m.operation_count,
            successful: m.successful,
            memo_type: m.memo_type,
            memo: m.memo,
        }
    }
}

/// Sync state of one watched account.
#[derive(SimpleObject, Clone)]
pub struct StellarSyncStatus {
    /// Account.
    pub account_id: String,
    /// `syncing`, `synced`, `requested` or `error`.
    pub status: String,
    /// `incremental`, `full` or `targeted:<from>-<to>` (with status `requested`).
    pub mode: String,
    /// Paging token the next page starts after.
    pub cursor: Option<String>,
    /// Ledger of the last indexed operation.
    pub last_ledger: Option<i64>,
    /// Last successful sync.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// Consecutive errors.
    pub error_count: i32,
    /// Last error, including a balance reconciliation mismatch.
    pub last_error: Option<String>,
    /// Whether replayed balances equal Horizon's at the last check.
    pub balances_reconciled: bool,
    /// Number of full resyncs.
    pub generation: i32,
}

impl From<stellar_sync_state::Model> for StellarSyncStatus {
    fn from(m: stellar_sync_state::Model) -> Self {
        Self {
            balances_reconciled: !m
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("balance mismatch")),
            account_id: m.account_id,
            status: m.status,
            mode: m.mode,
            cursor: m.cursor,
            last_ledger: m.last_ledger,
            last_sync_at: m.last_sync_at,
            error_count: m.error_count,
            last_error: m.last_error,
            generation: m.generation,
        }
    }
}

/// A planned token payout.
#[derive(SimpleObject, Clone, serde::Deserialize)]
#[graphql(complex)]
pub struct Distribution {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Asset code.
    pub asset_code: String,
    /// Asset issuer.
    pub asset_issuer: String,
    /// Paying account.
    pub source_account: String,
    /// Total budget, exact decimal string.
    pub total_budget: String,
    /// `draft`, `approved`, `executing`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// Whether the rules passed (null until evaluated).
    pub rules_passed: Option<bool>,
    /// Rule evaluation details.
    pub rules_result: Option<Json<serde_json::Value>>,
    /// Creator.
    pub created_by: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

impl From<distribution::Model> for Distribution {
    fn from(m: distribution::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            asset_code: m.asset_code,
            asset_issuer: m.asset_issuer,
            source_account: m.source_account,
            total_budget: format_stroops(m.total_budget_stroops),
            status: m.status,
            rules_passed: m.rules_passed,
            rules_result: m.rules_result.map(Json),
            created_by: m.created_by,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[ComplexObject]
impl Distribution {
    /// Recipients and their payment state.
    async fn recipients(&self, ctx: &Context<'_>) -> Result<Vec<DistributionRecipient>> {
        Ok(loaders(ctx)?
            .recipients
            .load_one(self.id)
            .await
            .map_err(|e| internal("loading recipients", e))?
            .unwrap_or_default())
    }

    /// Status transitions, oldest first.
    async fn events(&self, ctx: &Context<'_>) -> Result<Vec<DistributionEvent>> {
        Ok(loaders(ctx)?
            .events
            .load_one(self.id)
            .await
            .map_err(|e| internal("loading events", e))?
            .unwrap_or_default())
    }
}

/// One recipient of a distribution.
#[derive(SimpleObject, Clone)]
pub struct DistributionRecipient {
    /// Receiving account.
    pub account_id: String,
    /// Amount due, exact decimal string.
    pub amount: String,
    /// `pending`, `paid` or `failed`.
    pub status: String,
    /// Why it failed (or was included).
    pub reason: Option<String>,
    /// Matching payment operation id.
    pub payment_operation_id: Option<String>,
    /// Matching transaction hash.
    pub transaction_hash: Option<String>,
    /// When the payment was made.
    pub paid_at: Option<DateTime<Utc>>,
}

impl From<distribution_recipient::Model> for DistributionRecipient {
    fn from(m: distribution_recipient::Model) -> Self {
        Self {
            account_id: m.account_id,
            amount: format_stroops(m.amount_stroops),
            status: m.status,
            reason: m.reason,
            payment_operation_id: m.payment_operation_id.map(|i| i.to_string()),
            transaction_hash: m.transaction_hash,
            paid_at: m.paid_at,
        }
    }
}

/// A status transition of a distribution.
#[derive(SimpleObject, Clone)]
pub struct DistributionEvent {
    /// Previous status.
    pub from_status: Option<String>,
    /// New status.
    pub to_status: String,
    /// Why.
    pub reason: Option<String>,
    /// Who.
    pub actor: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

impl From<distribution_event::Model> for DistributionEvent {
    fn from(m: distribution_event::Model) -> Self {
        Self {
            from_status: m.from_status,
            to_status: m.to_status,
            reason: m.reason,
            actor: m.actor,
            at: m.at,
        }
    }
}

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

/// Replayed-versus-Horizon balance check.
#[derive(SimpleObject)]
pub struct BalanceReconciliation {
    /// Accounts whose replayed balances differ from Horizon's (same as the metric
    /// `orrery_balance_reconciliation_mismatches`).
    pub mismatches: u64,
    /// Those accounts, with details.
    pub accounts: Vec<StellarSyncStatus>,
}

fn parse_asset(arg: &str, s: &str) -> Result<AssetKey> {
    AssetKey::parse(s).ok_or_else(|| bad_input(arg, "must be XLM, native or CODE:ISSUER"))
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
    async fn accounts(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which accounts.")] filter: Option<AccountFilter>,
        #[graphql(desc = "Sort order (default ID_ASC).")] order_by: Option<AccountOrder>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<StellarAccount>> {
        let args = page_args(ctx, first, after)?;
        let db = &state(ctx).db;
        let f = filter.unwrap_or_default();
        let mut base = stellar_account::Entity::find();
        if let Some(w) = f.watched {
            base = base.filter(stellar_account::Column::Watched.eq(w));
        }
        if let Some(v) = f.discovered_via {
            base = base.filter(stellar_account::Column::DiscoveredVia.eq(v));
        }
        let total = if wants_total(ctx) {
            Some(
                base.clone()
                    .count(db)
                    .await
                    .map_err(|e| internal("counting accounts", e))?,
            )
        } else {
            None
        };
        let desc = order_by.unwrap_or_default() == AccountOrder::IdDesc;
        let mut q = if desc {
            base.order_by_desc(stellar_account::Column::AccountId)
        } else {
            base.order_by_asc(stellar_account::Column::AccountId)
        };
        if let Some(a) = &args.after {
            q = q.filter(if desc {
                stellar_account::Column::AccountId.lt(a.clone())
            } else {
                stellar_account::Column::AccountId.gt(a.clone())
            });
        }
        let rows = q
            .limit(args.fetch())
            .all(db)
            .await
            .map_err(|e| internal("listing accounts", e))?;
        Ok(build_page(
            &args,
            rows.into_iter().map(StellarAccount::from).collect(),
            total,
            |a| a.account_id.clone(),
        ))
    }

    /// Holders of an asset ranked by balance (largest first).
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
        let db = &state(ctx).db;
        let mut base = stellar_balance::Entity::find()
            .filter(stellar_balance::Column::AssetCode.eq(asset.code.clone()))
            .filter(stellar_balance::Column::AssetIssuer.eq(asset.issuer.clone()));
        if let Some(m) = &min_balance {
            let m = parse_stroops(m).ok_or_else(|| bad_input("minBalance", "not an amount"))?;
            base = base.filter(stellar_balance::Column::BalanceStroops.gte(m));
        }
        let total = if wants_total(ctx) {
            Some(
                base.clone()
                    .count(db)
                    .await
                    .map_err(|e| internal("counting balances", e))?,
            )
        } else {
            None
        };
        let mut q = base
            .order_by_desc(stellar_balance::Column::BalanceStroops)
            .order_by_asc(stellar_balance::Column::AccountId);
        if let Some(a) = &args.after {
            let (b, acc) = a
                .split_once(':')
                .and_then(|(b, acc)| Some((b.parse::<i64>().ok()?, acc.to_string())))
                .ok_or_else(|| bad_input("after", "is not a cursor returned by this API"))?;
            q = q.filter(
                Condition::any()
                    .add(stellar_balance::Column::BalanceStroops.lt(b))
                    .add(
                        Condition::all()
                            .add(stellar_balance::Column::BalanceStroops.eq(b))
                            .add(stellar_balance::Column::AccountId.gt(acc)),
                    ),
            );
        }
        let rows = q
            .limit(args.fetch())
            .all(db)
            .await
            .map_err(|e| internal("listing balances", e))?;
        let keyed: Vec<(String, StellarBalance)> = rows
            .into_iter()
            .map(|r| (format!("{}:{}", r.balance_stroops, r.account_id), r.into()))
            .collect();
        let keys: HashMap<String, String> = keyed
            .iter()
            .map(|(k, b)| (b.account_id.clone(), k.clone()))
            .collect();
        Ok(build_page(
            &args,
            keyed.into_iter().map(|(_, b)| b).collect(),
            total,
            |b| keys.get(&b.account_id).cloned().unwrap_or_default(),
        ))
    }

    /// Indexed operations, oldest first.
    #[allow(clippy::too_many_arguments)]
    async fn operations(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only operations of this watched account.")] account: Option<String>,
        #[graphql(name = "type", desc = "Only this Horizon type, e.g. `payment`.")] op_type: Option<
            String,
        >,
        #[graphql(desc = "Only operations at or after this time.")] since: Option<DateTime<Utc>>,
        #[graphql(desc = "Only operations before this time.")] until: Option<DateTime<Utc>>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<StellarOperation>> {
        let args = page_args(ctx, first, after)?;
        let db = &state(ctx).db;
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
        let total = if wants_total(ctx) {
            Some(
                base.clone()
                    .count(db)
                    .await
                    .map_err(|e| internal("counting operations", e))?,
            )
        } else {
            None
        };
        let mut q = base.order_by_asc(stellar_operation::Column::Id);
        if let Some(id) = args.after_id()? {
            q = q.filter(stellar_operation::Column::Id.gt(id));
        }
        let rows = q
            .limit(args.fetch())
            .all(db)
            .await
            .map_err(|e| internal("listing operations", e))?;
        Ok(build_page(
            &args,
            rows.into_iter().map(StellarOperation::from).collect(),
            total,
            |o| o.id.clone(),
        ))
    }

    /// Stored Stellar transactions, by hash.
    async fn transactions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only transactions of this source account.")] account: Option<String>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<StellarTransaction>> {
        let args = page_args(ctx, first, after)?;
        let db = &state(ctx).db;
        let mut base = stellar_transaction::Entity::find();
        if let Some(a) = account {
            base = base.filter(stellar_transaction::Column::SourceAccount.eq(a));
        }
        let total = if wants_total(ctx) {
            Some(
                base.clone()
                    .count(db)
                    .await
                    .map_err(|e| internal("counting transactions", e))?,
            )
        } else {
            None
        };
        let mut q = base.order_by_asc(stellar_transaction::Column::Hash);
        if let Some(a) = &args.after {
            q = q.filter(stellar_transaction::Column::Hash.gt(a.clone()));
        }
        let rows = q
            .limit(args.fetch())
            .all(db)
            .await
            .map_err(|e| internal("listing transactions", e))?;
        Ok(build_page(
            &args,
            rows.into_iter().map(StellarTransaction::from).collect(),
            total,
            |t| t.hash.clone(),
        ))
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
        let rows = stellar_sync_state::Entity::find()
            .filter(stellar_sync_state::Column::LastError.starts_with("balance mismatch"))
            .order_by_asc(stellar_sync_state::Column::AccountId)
            .all(&state(ctx).db)
            .await
            .map_err(|e| internal("reading reconciliation", e))?;
        Ok(BalanceReconciliation {
            mismatches: rows.len() as u64,
            accounts: rows.into_iter().map(Into::into).collect(),
        })
    }

    /// Distributions, newest id last.
    async fn distributions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this status.")] status: Option<String>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<Distribution>> {
        let args = page_args(ctx, first, after)?;
        let db = &state(ctx).db;
        let mut base = distribution::Entity::find();
        if let Some(s) = status {
            base = base.filter(distribution::Column::Status.eq(s));
        }
        let total = if wants_total(ctx) {
            Some(
                base.clone()
                    .count(db)
                    .await
                    .map_err(|e| internal("counting distributions", e))?,
            )
        } else {
            None
        };
        let mut q = base.order_by_asc(distribution::Column::Id);
        if let Some(id) = args.after_id()? {
            q = q.filter(distribution::Column::Id.gt(id));
        }
        let rows = q
            .limit(args.fetch())
            .all(db)
            .await
            .map_err(|e| internal("listing distributions", e))?;
        Ok(build_page(
            &args,
            rows.into_iter().map(Distribution::from).collect(),
            total,
            |d| d.id.to_string(),
        ))
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

/// Stellar subscriptions.
#[derive(Default)]
pub struct StellarSubscription;

#[Subscription]
impl StellarSubscription {
    /// A balance of `account` changed (optionally only in `asset`).
    async fn balance_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`G...` account id.")] account: String,
        #[graphql(desc = "`XLM` or `CODE:ISSUER`; all assets when omitted.")] asset: Option<String>,
    ) -> Result<impl Stream<Item = StellarBalance>> {
        let asset = asset.map(|a| parse_asset("asset", &a)).transpose()?;
        Ok(bus_stream(ctx, topics::STELLAR_BALANCE_CHANGED, move |e| {
            let p = &e.payload;
            let s = |k: &str| p.get(k).and_then(|v| v.as_str()).map(String::from);
            let code = s("asset_code")?;
            let issuer = s("asset_issuer").unwrap_or_default();
            if s("account_id")? != account {
                return None;
            }
            if let Some(a) = &asset {
                if a.code != code || a.issuer != issuer {
                    return None;
                }
            }
            let key = AssetKey {
                code: code.clone(),
                issuer: issuer.clone(),
            };
            Some(StellarBalance {
                account_id: account.clone(),
                asset_type: key.asset_type().into(),
                asset_code: code,
                asset_issuer: issuer,
                balance: s("balance")?,
                limit: None,
                last_modified_ledger: None,
            })
        }))
    }

    /// An operation of `account` was indexed (live following).
    async fn operation_indexed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`G...` account id.")] account: String,
    ) -> impl Stream<Item = StellarOperation> {
        let db = state(ctx).db.clone();
        bus_stream(ctx, topics::STELLAR_OPERATION_INDEXED, move |e| {
            let p = &e.payload;
            (p.get("account_id")?.as_str()? == account)
                .then(|| p.get("operation_id")?.as_str()?.parse::<i64>().ok())
                .flatten()
        })
        .then(move |id| {
            let db = db.clone();
            async move {
                stellar_operation::Entity::find_by_id(id)
                    .one(&db)
                    .await
                    .ok()
                    .flatten()
            }
        })
        .filter_map(|o| futures::future::ready(o.map(StellarOperation::from)))
    }

    /// Distribution `id` changed (status, rules).
    async fn distribution_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Distribution id; all distributions when omitted.")] id: Option<i64>,
    ) -> impl Stream<Item = Distribution> {
        bus_stream(ctx, topics::DISTRIBUTION_UPDATED, move |e| {
            let row: distribution::Model = serde_json::from_value(e.payload).ok()?;
            match id {
                Some(i) if i != row.id => None,
                _ => Some(Distribution::from(row)),
            }
        })
    }
}

/// How `resyncAccount` re-fetches an account.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ResyncModeInput {
    /// Catch up from the account's cursor.
    Incremental,
    /// Replay the whole history (links and balance history replaced atomically).
    Full,
    /// Re-fetch and upsert the operations of `fromLedger..=toLedger` (nothing deleted).
    Targeted,
}

/// One recipient of `createDistribution`.
#[derive(InputObject)]
pub struct RecipientInput {
    /// Receiving `G...` account.
    pub account: String,
    /// Amount, decimal string with at most 7 decimals (exact).
    pub amount: String,
}

/// Input of `createDistribution`.
#[derive(InputObject)]
pub struct CreateDistributionInput {
    /// Name.
    pub name: String,
    /// Asset code, e.g. `UBEC`.
    pub asset_code: String,
    /// Asset issuer (`G...`).
    pub asset_issuer: String,
    /// Paying account (`G...`).
    pub source_account: String,
    /// Total budget, decimal string with at most 7 decimals (exact).
    pub total_budget: String,
    /// Recipients and their amounts.
    pub recipients: Vec<RecipientInput>,
}

/// Stellar admin mutations (operator or admin).
#[derive(Default)]
pub struct StellarMutation;

fn admin_error(e: AdminError) -> async_graphql::Error {
    match e {
        AdminError::BadInput { argument, reason } => bad_input(argument, reason),
        AdminError::NotFound(what) => not_found(what),
        AdminError::Db(e) => internal("writing stellar state", e),
    }
}

/// Runs `change` in a transaction with its audit row (`action` on `target`, before/after
/// from the change); commits only when both succeed.
async fn audited_change<T, B, A, F>(
    ctx: &Context<'_>,
    action: &str,
    target: &str,
    arguments: serde_json::Value,
    change: F,
) -> Result<T>
where
    F: for<'t> FnOnce(
        &'t DatabaseTransaction,
        &'t Principal,
    ) -> futures::future::BoxFuture<'t, Result<(T, B, A), AdminError>>,
    B: serde::Serialize,
    A: serde::Serialize,
{
    let who = principal(ctx)
        .ok_or_else(|| internal("reading the caller", "guard passed without principal"))?;
    let txn = state(ctx)
        .db
        .begin()
        .await
        .map_err(|e| internal("starting a transaction", e))?;
    let (out, before, after) = change(&txn, who).await.map_err(admin_error)?;
    let before = serde_json::to_value(&before).ok().filter(|v| !v.is_null());
    audit::record(
        &txn,
        AuditEntry {
            principal: who,
            client_addr: client_addr(ctx),
            action,
            target: Some(target.to_string()),
            arguments,
            before,
            after: serde_json::to_value(&after).ok(),
        },
    )
    .await
    .map_err(|e| internal("writing the audit log", e))?;
    txn.commit().await.map_err(|e| internal("committing", e))?;
    Ok(out)
}

async fn publish_distribution(ctx: &Context<'_>, d: &distribution::Model) {
    match serde_json::to_value(d) {
        Ok(v) => {
            publish_logged(
                state(ctx).bus.as_ref(),
                BusEvent::new(topics::DISTRIBUTION_UPDATED, v),
            )
            .await
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode distribution"),
    }
}

fn max_per_recipient(ctx: &Context<'_>) -> Result<Option<i64>> {
    state(ctx)
        .config
        .stellar
        .max_per_recipient
        .as_deref()
        .map(|m| {
            parse_stroops(m).ok_or_else(|| {
                internal(
                    "reading stellar.max_per_recipient",
                    format!("{m:?} is not an amount"),
                )
            })
        })
        .transpose()
}

#[Object]
impl StellarMutation {
    /// Starts following a Stellar account (picked up by the source within a poll interval).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn watch_account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`G...` account id (56 characters, base32).")] id: String,
    ) -> Result<StellarAccount> {
        let acc = id.clone();
        let row = audited_change(ctx, "watchAccount", &id, json!({ "id": id }), |txn, _| {
            Box::pin(async move {
                let (before, after) = admin::watch(txn, &acc).await?;
                Ok((after.clone(), before, after))
            })
        })
        .await?;
        Ok(row.into())
    }

    /// Stops following a Stellar account; its indexed data is kept.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn unwatch_account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`G...` account id.")] id: String,
    ) -> Result<StellarAccount> {
        let acc = id.clone();
        let row = audited_change(ctx, "unwatchAccount", &id, json!({ "id": id }), |txn, _| {
            Box::pin(async move {
                let (before, after) = admin::unwatch(txn, &acc).await?;
                Ok((after.clone(), before, after))
            })
        })
        .await?;
        Ok(row.into())
    }

    /// Requests a resync of a watched account; the source applies it when live.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn resync_account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`G...` account id.")] id: String,
        #[graphql(desc = "What to re-fetch.")] mode: ResyncModeInput,
        #[graphql(desc = "First ledger (TARGETED only, inclusive).")] from_ledger: Option<i64>,
        #[graphql(desc = "Last ledger (TARGETED only, inclusive).")] to_ledger: Option<i64>,
    ) -> Result<StellarSyncStatus> {
        let mode = match mode {
            ResyncModeInput::Incremental | ResyncModeInput::Full => {
                if from_ledger.is_some() {
                    return Err(bad_input("fromLedger", "only with mode TARGETED"));
                }
                if to_ledger.is_some() {
                    return Err(bad_input("toLedger", "only with mode TARGETED"));
                }
                if mode == ResyncModeInput::Full {
                    ResyncMode::Full
                } else {
                    ResyncMode::Incremental
                }
            }
            ResyncModeInput::Targeted => {
                let from = from_ledger
                    .ok_or_else(|| bad_input("fromLedger", "required with mode TARGETED"))?;
                let to = to_ledger
                    .ok_or_else(|| bad_input("toLedger", "required with mode TARGETED"))?;
                ResyncMode::targeted(from, to).map_err(|(which, e)| {
                    bad_input(
                        if which == "from" {
                            "fromLedger"
                        } else {
                            "toLedger"
                        },
                        e,
                    )
                })?
            }
        };
        let acc = id.clone();
        let args = json!({ "id": id, "mode": mode.as_mode(),
                           "fromLedger": from_ledger, "toLedger": to_ledger });
        let row = audited_change(ctx, "resyncAccount", &id, args, |txn, _| {
            Box::pin(async move {
                let (before, after) = admin::request_resync(txn, &acc, mode).await?;
                Ok((after.clone(), before, after))
            })
        })
        .await?;
        Ok(row.into())
    }

    /// Creates a draft distribution and evaluates its rules (see `rulesPassed`).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn create_distribution(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The distribution.")] input: CreateDistributionInput,
    ) -> Result<Distribution> {
        let max = max_per_recipient(ctx)?;
        let new = NewDistribution {
            name: input.name,
            asset_code: input.asset_code,
            asset_issuer: input.asset_issuer,
            source_account: input.source_account,
            total_budget: input.total_budget,
            recipients: input
                .recipients
                .into_iter()
                .map(|r| (r.account, r.amount))
                .collect(),
        };
        let args = json!({
            "name": new.name, "assetCode": new.asset_code, "assetIssuer": new.asset_issuer,
            "sourceAccount": new.source_account, "totalBudget": new.total_budget,
            "recipients": new.recipients.iter()
                .map(|(a, m)| json!({ "account": a, "amount": m })).collect::<Vec<_>>(),
        });
        let target = new.name.clone();
        let d = audited_change(ctx, "createDistribution", &target, args, |txn, who| {
            Box::pin(async move {
                let rows = admin::create_distribution(txn, &new, max, &who.subject).await?;
                let after =
                    json!({ "distribution": rows.distribution, "recipients": rows.recipients });
                Ok((rows.distribution, None::<()>, after))
            })
        })
        .await?;
        publish_distribution(ctx, &d).await;
        Ok(d.into())
    }

    /// Approves a draft distribution whose rules passed (refused with the reasons otherwise).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn approve_distribution(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Distribution id.")] id: i64,
    ) -> Result<Distribution> {
        let d = audited_change(
            ctx,
            "approveDistribution",
            &id.to_string(),
            json!({ "id": id }),
            |txn, who| {
                Box::pin(async move {
                    let (before, after) =
                        admin::approve_distribution(txn, id, &who.subject).await?;
                    Ok((after.clone(), before, after))
                })
            },
        )
        .await?;
        publish_distribution(ctx, &d).await;
        Ok(d.into())
    }

    /// Cancels a draft, approved or executing distribution.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn cancel_distribution(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Distribution id.")] id: i64,
        #[graphql(desc = "Why (recorded in the distribution's events).")] reason: String,
    ) -> Result<Distribution> {
        let why = reason.clone();
        let d = audited_change(
            ctx,
            "cancelDistribution",
            &id.to_string(),
            json!({ "id": id, "reason": reason }),
            |txn, who| {
                Box::pin(async move {
                    let (before, after) =
                        admin::cancel_distribution(txn, id, &why, &who.subject).await?;
                    Ok((after.clone(), before, after))
                })
            },
        )
        .await?;
        publish_distribution(ctx, &d).await;
        Ok(d.into())
    }
}
