//! Stellar object types over stored rows, and the fields they load through the batched
//! loaders.

use async_graphql::{ComplexObject, Context, Json, Result, SimpleObject};
use chrono::{DateTime, Utc};
use orrery_entity::{
    balance_reconciliation, distribution, distribution_event, distribution_recipient,
    stellar_account, stellar_balance, stellar_operation, stellar_sync_state, stellar_transaction,
};
use orrery_indexer::stellar::amount::format_stroops;
use orrery_indexer::stellar::horizon::AssetKey;

use super::loaders::loaders;
use crate::graphql::context::state;
use crate::graphql::error::{bad_input, internal};

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
#[graphql(complex)]
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
    /// Last error (errors only; balance checks are `balanceChecks`).
    pub last_error: Option<String>,
    /// Number of full resyncs.
    pub generation: i32,
}

impl From<stellar_sync_state::Model> for StellarSyncStatus {
    fn from(m: stellar_sync_state::Model) -> Self {
        Self {
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

#[ComplexObject]
impl StellarSyncStatus {
    /// Whether every balance of the account agreed with the upstream at its last check
    /// (true when it was never checked).
    async fn balances_reconciled(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(self.checks(ctx).await?.iter().all(|c| c.agrees))
    }

    /// The account's last balance checks, per source and asset.
    async fn balance_checks(&self, ctx: &Context<'_>) -> Result<Vec<BalanceCheck>> {
        self.checks(ctx).await
    }
}

impl StellarSyncStatus {
    async fn checks(&self, ctx: &Context<'_>) -> Result<Vec<BalanceCheck>> {
        Ok(loaders(ctx)?
            .checks
            .load_one(self.account_id.clone())
            .await
            .map_err(|e| internal("reading balance checks", e))?
            .unwrap_or_default())
    }
}

/// One asset of one account compared by a source: the balance built from operations or
/// events against the upstream's.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct BalanceCheck {
    /// Source that compared (`stellar` for Horizon, `stellar:rpc`).
    pub source: String,
    /// Account.
    pub account_id: String,
    /// Asset code (`XLM` for native).
    pub asset_code: String,
    /// Issuer (empty for native).
    pub asset_issuer: String,
    /// The upstream's balance (Horizon's account record or the ledger entry), exact decimal.
    pub expected: String,
    /// The balance built by the source, exact decimal.
    pub actual: String,
    /// Whether both are equal.
    pub agrees: bool,
    /// When the check ran.
    pub checked_at: DateTime<Utc>,
}

impl From<balance_reconciliation::Model> for BalanceCheck {
    fn from(m: balance_reconciliation::Model) -> Self {
        Self {
            source: m.source,
            account_id: m.account_id,
            asset_code: m.asset_code,
            asset_issuer: m.asset_issuer,
            expected: format_stroops(m.expected_stroops),
            actual: format_stroops(m.actual_stroops),
            agrees: m.agrees,
            checked_at: m.checked_at,
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

pub(super) fn parse_asset(arg: &str, s: &str) -> Result<AssetKey> {
    AssetKey::parse(s).ok_or_else(|| bad_input(arg, "must be XLM, native or CODE:ISSUER"))
}
