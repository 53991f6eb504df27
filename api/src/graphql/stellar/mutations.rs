//! Stellar admin mutations: watching accounts, resyncs and distributions, each audited.

use async_graphql::{Context, Enum, InputObject, Object, Result};
use orrery_entity::distribution;
use orrery_indexer::bus::{publish_logged, BusEvent};
use orrery_indexer::stellar::admin::{self, AdminError, NewDistribution};
use orrery_indexer::stellar::amount::parse_stroops;
use orrery_indexer::stellar::resync::ResyncMode;
use serde_json::json;

use super::types::{Distribution, StellarAccount, StellarSyncStatus};
use crate::auth::{Role, RoleGuard};
use crate::graphql::context::{audited, state, Audited};
use crate::graphql::error::{bad_input, internal, not_found};

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

/// `watchAccount` / `unwatchAccount`, audited.
async fn set_watched(ctx: &Context<'_>, id: String, watch: bool) -> Result<StellarAccount> {
    let action = if watch {
        "watchAccount"
    } else {
        "unwatchAccount"
    };
    let row = audited(ctx, action, |txn, _| {
        Box::pin(async move {
            let (before, after) = if watch {
                admin::watch(txn, &id).await
            } else {
                admin::unwatch(txn, &id)
                    .await
                    .map(|(before, after)| (Some(before), after))
            }
            .map_err(admin_error)?;
            let arguments = json!({ "id": id });
            Ok(Audited::new(after.clone(), id, arguments)
                .before(&before)
                .after(&after))
        })
    })
    .await?;
    Ok(row.into())
}

async fn publish_distribution(ctx: &Context<'_>, d: &distribution::Model) {
    publish_logged(state(ctx).bus.as_ref(), BusEvent::new(d.clone())).await
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
        set_watched(ctx, id, true).await
    }

    /// Stops following a Stellar account; its indexed data is kept.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn unwatch_account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`G...` account id.")] id: String,
    ) -> Result<StellarAccount> {
        set_watched(ctx, id, false).await
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
        let arguments = json!({ "id": id, "mode": mode.as_mode(),
                                "fromLedger": from_ledger, "toLedger": to_ledger });
        let row = audited(ctx, "resyncAccount", |txn, _| {
            Box::pin(async move {
                let (before, after) = admin::request_resync(txn, &id, mode)
                    .await
                    .map_err(admin_error)?;
                Ok(Audited::new(after.clone(), id, arguments)
                    .before(&before)
                    .after(&after))
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
        let arguments = json!({
            "name": new.name, "assetCode": new.asset_code, "assetIssuer": new.asset_issuer,
            "sourceAccount": new.source_account, "totalBudget": new.total_budget,
            "recipients": new.recipients.iter()
                .map(|(a, m)| json!({ "account": a, "amount": m })).collect::<Vec<_>>(),
        });
        let d = audited(ctx, "createDistribution", |txn, who| {
            Box::pin(async move {
                let rows = admin::create_distribution(txn, &new, max, &who.subject)
                    .await
                    .map_err(admin_error)?;
                let after =
                    json!({ "distribution": rows.distribution, "recipients": rows.recipients });
                Ok(Audited::new(rows.distribution, new.name, arguments).after(&after))
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
        let d = audited(ctx, "approveDistribution", |txn, who| {
            Box::pin(async move {
                let (before, after) = admin::approve_distribution(txn, id, &who.subject)
                    .await
                    .map_err(admin_error)?;
                Ok(
                    Audited::new(after.clone(), id.to_string(), json!({ "id": id }))
                        .before(&before)
                        .after(&after),
                )
            })
        })
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
        let arguments = json!({ "id": id, "reason": reason });
        let d = audited(ctx, "cancelDistribution", |txn, who| {
            Box::pin(async move {
                let (before, after) = admin::cancel_distribution(txn, id, &reason, &who.subject)
                    .await
                    .map_err(admin_error)?;
                Ok(Audited::new(after.clone(), id.to_string(), arguments)
                    .before(&before)
                    .after(&after))
            })
        })
        .await?;
        publish_distribution(ctx, &d).await;
        Ok(d.into())
    }
}
