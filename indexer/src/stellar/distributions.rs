//! Distributions: the status machine, rule evaluation (pure), and reconciliation of each
//! recipient's payout against indexed on-chain payments.

use std::collections::BTreeSet;

use chrono::Utc;
use orrery_entity::{
    distribution, distribution_event, distribution_recipient, stellar_balance, stellar_operation,
    stellar_transaction,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, Set,
};
use serde_json::{json, Value};

use super::amount::{format_stroops, parse_stroops};
use super::horizon;
use super::settings::StellarSettings;
use crate::bus::BusEvent;
use crate::sync::{quarantine, Quarantined, SourceError, SyncContext};
use crate::upstream::UpstreamClient;

/// Whether `from -> to` is an allowed status transition.
pub fn can_transition(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("draft", "approved")
            | ("draft", "cancelled")
            | ("approved", "executing")
            | ("approved", "cancelled")
            | ("approved", "completed")
            | ("approved", "failed")
            | ("executing", "completed")
            | ("executing", "failed")
            | ("executing", "cancelled")
    )
}

/// Outcome of the distribution rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesResult {
    /// All rules passed.
    pub passed: bool,
    /// One line per violated rule.
    pub violations: Vec<String>,
}

impl RulesResult {
    /// As stored in `distribution.rules_result`.
    pub fn to_json(&self) -> Value {
        json!({"passed": self.passed, "violations": self.violations})
    }
}

/// Evaluates: each amount positive and at most `max_per_recipient`; the total within
/// `budget`; every recipient holds a trustline (`has_trustline`).
pub fn evaluate_rules(
    budget: i64,
    recipients: &[(String, i64)],
    max_per_recipient: Option<i64>,
    has_trustline: impl Fn(&str) -> bool,
) -> RulesResult {
    let mut v = Vec::new();
    let mut total: i64 = 0;
    for (acc, amount) in recipients {
        if *amount <= 0 {
            v.push(format!("{acc}: amount must be positive"));
        }
        if let Some(max) = max_per_recipient {
            if *amount > max {
                v.push(format!(
                    "{acc}: {} exceeds the maximum per recipient {}",
                    format_stroops(*amount),
                    format_stroops(max)
                ));
            }
        }
        if !has_trustline(acc) {
            v.push(format!("{acc}: no trustline for the asset"));
        }
        total = total.saturating_add(*amount);
    }
    if total > budget {
        v.push(format!(
            "total {} exceeds the budget {}",
            format_stroops(total),
            format_stroops(budget)
        ));
    }
    RulesResult {
        passed: v.is_empty(),
        violations: v,
    }
}

/// Status a distribution should move to once every recipient is resolved.
pub fn final_status(recipient_statuses: &[&str]) -> Option<&'static str> {
    if recipient_statuses.contains(&"pending") {
        return None;
    }
    if recipient_statuses.iter().all(|s| *s == "paid") {
        Some("completed")
    } else {
        Some("failed")
    }
}

async fn transition<C: ConnectionTrait>(
    db: &C,
    d: &distribution::Model,
    to: &str,
    reason: &str,
) -> Result<distribution::Model, DbErr> {
    let now = Utc::now();
    distribution_event::ActiveModel {
        distribution_id: Set(d.id),
        from_status: Set(Some(d.status.clone())),
        to_status: Set(to.to_string()),
        reason: Set(Some(reason.to_string())),
        actor: Set(Some("indexer".into())),
        at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await?;
    let mut a = d.clone().into_active_model();
    a.status = Set(to.to_string());
    a.updated_at = Set(now);
    a.update(db).await
}

/// Memo of a transaction: from the store, else fetched from Horizon (when `client` is
/// given) and stored. The RPC source stores every transaction of the operations it stores,
/// memo from the envelope, in the same commit: it passes no client. `None` when the memo is
/// not known: the transaction is not stored and there is no Horizon to ask, or Horizon's
/// record lacks a field (that record is quarantined; the payment stays unmatched until a
/// replay stores it).
async fn memo_of(
    ctx: &SyncContext,
    client: Option<&UpstreamClient>,
    hash: &str,
) -> Result<Option<Option<String>>, SourceError> {
    if let Some(t) = stellar_transaction::Entity::find_by_id(hash.to_string())
        .one(&ctx.db)
        .await?
    {
        return Ok(Some(t.memo));
    }
    let Some(client) = client else {
        return Ok(None);
    };
    let v: Value = client.get_json(&format!("/transactions/{hash}")).await?;
    let row = match horizon::decode_transaction(&v) {
        Ok(row) => row,
        Err(e) => {
            let q = Quarantined::new(horizon::TRANSACTION_KIND, hash, &v, e);
            tracing::warn!(%q, "stellar: transaction record quarantined; its payments stay unmatched");
            quarantine::store(&ctx.db, &ctx.source.id, &[q]).await?;
            return Ok(None);
        }
    };
    let memo = row.memo.clone();
    super::store::insert_transaction(&ctx.db, row).await?;
    Ok(Some(memo))
}

/// Evaluates rules where not yet done, and matches pending recipients of approved or
/// executing distributions with indexed payments; moves distributions forward. Memos not
/// stored yet are read from Horizon through `client` when given.
pub async fn reconcile(
    ctx: &SyncContext,
    client: Option<&UpstreamClient>,
    settings: &StellarSettings,
) -> Result<(), SourceError> {
    let max = settings
        .max_per_recipient
        .as_deref()
        .map(|m| {
            parse_stroops(m).ok_or_else(|| {
                SourceError::Config(format!("stellar.max_per_recipient {m:?} is not an amount"))
            })
        })
        .transpose()?;
    let open = distribution::Entity::find()
        .filter(distribution::Column::Status.is_in(["draft", "approved", "executing"]))
        .order_by_asc(distribution::Column::Id)
        .all(&ctx.db)
        .await?;
    for d in open {
        let recipients = distribution_recipient::Entity::find()
            .filter(distribution_recipient::Column::DistributionId.eq(d.id))
            .order_by_asc(distribution_recipient::Column::Id)
            .all(&ctx.db)
            .await?;
        let mut changed = false;
        let mut d = d;
        if d.rules_passed.is_none() {
            let holders: BTreeSet<String> = stellar_balance::Entity::find()
                .filter(stellar_balance::Column::AssetCode.eq(d.asset_code.clone()))
                .filter(stellar_balance::Column::AssetIssuer.eq(d.asset_issuer.clone()))
                .filter(
                    stellar_balance::Column::AccountId
                        .is_in(recipients.iter().map(|r| r.account_id.clone())),
                )
                .all(&ctx.db)
                .await?
                .into_iter()
                .map(|b| b.account_id)
                .collect();
            let list: Vec<(String, i64)> = recipients
                .iter()
                .map(|r| (r.account_id.clone(), r.amount_stroops))
                .collect();
            let res = evaluate_rules(d.total_budget_stroops, &list, max, |a| holders.contains(a));
            let mut a = d.clone().into_active_model();
            a.rules_passed = Set(Some(res.passed));
            a.rules_result = Set(Some(res.to_json()));
            a.updated_at = Set(Utc::now());
            d = a.update(&ctx.db).await?;
            changed = true;
        }
        if d.status == "draft" {
            if changed {
                publish(ctx, &d).await;
            }
            continue;
        }
        let memo_want = format!("{}{}", settings.distribution_memo_prefix, d.id);
        let mut resolved = Vec::new();
        for r in recipients.iter().filter(|r| r.status == "pending") {
            let candidates = stellar_operation::Entity::find()
                .filter(stellar_operation::Column::OpType.eq("payment"))
                .filter(stellar_operation::Column::Successful.eq(true))
                .filter(stellar_operation::Column::FromAccount.eq(d.source_account.clone()))
                .filter(stellar_operation::Column::ToAccount.eq(r.account_id.clone()))
                .filter(stellar_operation::Column::AssetCode.eq(d.asset_code.clone()))
                .filter(stellar_operation::Column::AssetIssuer.eq(d.asset_issuer.clone()))
                .order_by_asc(stellar_operation::Column::Id)
                .all(&ctx.db)
                .await?;
            for op in candidates {
                let memo = memo_of(ctx, client, &op.transaction_hash).await?;
                if memo.flatten().as_deref() != Some(memo_want.as_str()) {
                    continue;
                }
                let Some(paid) = op.amount_stroops else {
                    tracing::warn!(
                        operation = op.id,
                        "stored payment without an amount; not matched"
                    );
                    continue;
                };
                let mut a = r.clone().into_active_model();
                a.payment_operation_id = Set(Some(op.id));
                a.transaction_hash = Set(Some(op.transaction_hash.clone()));
                a.paid_at = Set(Some(op.created_at));
                if paid == r.amount_stroops {
                    a.status = Set("paid".into());
                } else {
                    a.status = Set("failed".into());
                    a.reason = Set(Some(format!(
                        "amount mismatch: expected {}, paid {} in operation {}",
                        format_stroops(r.amount_stroops),
                        format_stroops(paid),
                        op.id
                    )));
                }
                resolved.push(a);
                break;
            }
        }
        if resolved.is_empty() && !changed {
            continue;
        }
        let txn = sea_orm::TransactionTrait::begin(&ctx.db).await?;
        let n = resolved.len();
        for a in resolved {
            a.update(&txn).await?;
        }
        if n > 0 && d.status == "approved" {
            d = transition(&txn, &d, "executing", "first payout seen on chain").await?;
        }
        let statuses: Vec<String> = distribution_recipient::Entity::find()
            .filter(distribution_recipient::Column::DistributionId.eq(d.id))
            .all(&txn)
            .await?
            .into_iter()
            .map(|r| r.status)
            .collect();
        let refs: Vec<&str> = statuses.iter().map(String::as_str).collect();
        if !refs.is_empty() {
            if let Some(to) = final_status(&refs) {
                let failed = refs.iter().filter(|s| **s == "failed").count();
                let reason = if to == "completed" {
                    "every recipient paid".to_string()
                } else {
                    format!("{failed} recipient(s) failed")
                };
                if can_transition(&d.status, to) {
                    d = transition(&txn, &d, to, &reason).await?;
                }
            }
        }
        txn.commit().await?;
        publish(ctx, &d).await;
    }
    Ok(())
}

async fn publish(ctx: &SyncContext, d: &distribution::Model) {
    crate::bus::publish_logged(ctx.bus.as_ref(), BusEvent::new(d.clone())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_machine() {
        assert!(can_transition("draft", "approved"));
        assert!(can_transition("executing", "completed"));
        assert!(!can_transition("completed", "executing"));
        assert!(!can_transition("draft", "completed"));
        assert!(!can_transition("cancelled", "approved"));
        assert_eq!(final_status(&["paid", "paid"]), Some("completed"));
        assert_eq!(final_status(&["paid", "failed"]), Some("failed"));
        assert_eq!(final_status(&["paid", "pending"]), None);
    }

    #[test]
    fn rules_report_every_violation() {
        let r = evaluate_rules(
            100,
            &[("GA".into(), 60), ("GB".into(), 50)],
            Some(55),
            |a| a == "GA",
        );
        assert!(!r.passed);
        assert_eq!(r.violations.len(), 3, "{:?}", r.violations);
        let ok = evaluate_rules(110, &[("GA".into(), 60), ("GB".into(), 50)], None, |_| true);
        assert!(ok.passed);
    }
}
