//! Admin actions on Stellar state: watch / unwatch accounts, request resyncs, create,
//! approve and cancel distributions. Each runs on the caller's connection (a transaction,
//! so the API can write its audit row with the change) and returns the rows before and
//! after; input problems name the argument at fault.

use std::collections::BTreeSet;

use chrono::Utc;
use orrery_entity::{
    distribution, distribution_event, distribution_recipient, stellar_account, stellar_balance,
    stellar_sync_state,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, Set,
};

use super::amount::parse_stroops;
use super::distributions::{can_transition, evaluate_rules};
use super::resync::{ResyncMode, REQUESTED};
use super::store;

/// Why an admin action was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// An argument is malformed or the action does not apply to the object's state.
    #[error("argument `{argument}`: {reason}")]
    BadInput {
        /// The argument at fault (GraphQL name).
        argument: &'static str,
        /// Why.
        reason: String,
    },
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbErr),
}

fn bad(argument: &'static str, reason: impl Into<String>) -> AdminError {
    AdminError::BadInput {
        argument,
        reason: reason.into(),
    }
}

/// Checks the shape of a public-key strkey: 56 characters, `G` first, RFC 4648 base32.
pub fn check_account_id(id: &str) -> Result<(), String> {
    if id.len() != 56 {
        return Err(format!("must be 56 characters, got {}", id.len()));
    }
    if !id.starts_with('G') {
        return Err("must start with G".into());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    {
        return Err("must be base32 (A-Z, 2-7)".into());
    }
    Ok(())
}

fn account_arg(argument: &'static str, id: &str) -> Result<(), AdminError> {
    check_account_id(id).map_err(|r| bad(argument, r))
}

/// Starts following `id` (inserting it if new, re-watching it if unwatched). Returns the
/// account row before (absent if new) and after.
pub async fn watch<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<(Option<stellar_account::Model>, stellar_account::Model), AdminError> {
    account_arg("id", id)?;
    let before = stellar_account::Entity::find_by_id(id.to_string())
        .one(db)
        .await?;
    store::ensure_accounts(db, &[(id.to_string(), "admin".to_string())], true).await?;
    let row = stellar_account::Entity::find_by_id(id.to_string())
        .one(db)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("account {id}")))?;
    let after = if row.watched {
        row
    } else {
        let mut a = row.into_active_model();
        a.watched = Set(true);
        a.updated_at = Set(Utc::now());
        a.update(db).await?
    };
    Ok((before, after))
}

/// Stops following `id` (its stored data is kept).
pub async fn unwatch<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<(stellar_account::Model, stellar_account::Model), AdminError> {
    account_arg("id", id)?;
    let before = stellar_account::Entity::find_by_id(id.to_string())
        .one(db)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("account {id}")))?;
    let mut a = before.clone().into_active_model();
    a.watched = Set(false);
    a.updated_at = Set(Utc::now());
    let after = a.update(db).await?;
    Ok((before, after))
}

/// Requests a resync of watched account `id` in `mode` (the source picks it up).
pub async fn request_resync<C: ConnectionTrait>(
    db: &C,
    id: &str,
    mode: ResyncMode,
) -> Result<(stellar_sync_state::Model, stellar_sync_state::Model), AdminError> {
    account_arg("id", id)?;
    let account = stellar_account::Entity::find_by_id(id.to_string())
        .one(db)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("account {id}")))?;
    if !account.watched {
        return Err(bad("id", "the account is not watched; watch it first"));
    }
    let before = stellar_sync_state::Entity::find_by_id(id.to_string())
        .one(db)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("sync state of {id}")))?;
    let mut a = before.clone().into_active_model();
    a.status = Set(REQUESTED.into());
    a.mode = Set(mode.as_mode());
    a.updated_at = Set(Utc::now());
    let after = a.update(db).await?;
    Ok((before, after))
}

/// A distribution to create.
#[derive(Debug, Clone)]
pub struct NewDistribution {
    /// Name.
    pub name: String,
    /// Asset code.
    pub asset_code: String,
    /// Asset issuer (`G...`).
    pub asset_issuer: String,
    /// Paying account (`G...`).
    pub source_account: String,
    /// Budget, decimal string with up to 7 decimals.
    pub total_budget: String,
    /// `(account, amount)` with amounts as decimal strings.
    pub recipients: Vec<(String, String)>,
}

/// A distribution with its recipients.
#[derive(Debug, Clone)]
pub struct DistributionRows {
    /// The distribution.
    pub distribution: distribution::Model,
    /// Its recipients, by id.
    pub recipients: Vec<distribution_recipient::Model>,
}

/// Validates `input`, evaluates the rules (amounts, `max_per_recipient`, budget,
/// trustlines from stored balances) and stores a `draft` with its recipients and a
/// `distribution_event`.
pub async fn create_distribution<C: ConnectionTrait>(
    db: &C,
    input: &NewDistribution,
    max_per_recipient: Option<i64>,
    actor: &str,
) -> Result<DistributionRows, AdminError> {
    if input.name.trim().is_empty() {
        return Err(bad("name", "must not be empty"));
    }
    let code_ok = (1..=12).contains(&input.asset_code.len())
        && input.asset_code.bytes().all(|b| b.is_ascii_alphanumeric());
    if !code_ok {
        return Err(bad("assetCode", "must be 1 to 12 letters or digits"));
    }
    account_arg("assetIssuer", &input.asset_issuer)?;
    account_arg("sourceAccount", &input.source_account)?;
    let budget = parse_stroops(&input.total_budget)
        .ok_or_else(|| bad("totalBudget", "must be a decimal with at most 7 decimals"))?;
    if budget <= 0 {
        return Err(bad("totalBudget", "must be positive"));
    }
    if input.recipients.is_empty() {
        return Err(bad("recipients", "must not be empty"));
    }
    let mut list = Vec::with_capacity(input.recipients.len());
    let mut seen = BTreeSet::new();
    for (i, (acc, amount)) in input.recipients.iter().enumerate() {
        check_account_id(acc).map_err(|r| bad("recipients", format!("#{i} account {r}")))?;
        if !seen.insert(acc.clone()) {
            return Err(bad("recipients", format!("#{i} repeats account {acc}")));
        }
        let stroops = parse_stroops(amount).ok_or_else(|| {
            bad(
                "recipients",
                format!("#{i} amount {amount:?} must be a decimal with at most 7 decimals"),
            )
        })?;
        list.push((acc.clone(), stroops));
    }
    let holders: BTreeSet<String> = stellar_balance::Entity::find()
        .filter(stellar_balance::Column::AssetCode.eq(input.asset_code.clone()))
        .filter(stellar_balance::Column::AssetIssuer.eq(input.asset_issuer.clone()))
        .filter(stellar_balance::Column::AccountId.is_in(seen.iter().cloned()))
        .all(db)
        .await?
        .into_iter()
        .map(|b| b.account_id)
        .collect();
    let rules = evaluate_rules(budget, &list, max_per_recipient, |a| holders.contains(a));
    let now = Utc::now();
    let d = distribution::ActiveModel {
        name: Set(input.name.trim().to_string()),
        asset_code: Set(input.asset_code.clone()),
        asset_issuer: Set(input.asset_issuer.clone()),
        source_account: Set(input.source_account.clone()),
        total_budget_stroops: Set(budget),
        status: Set("draft".into()),
        rules_passed: Set(Some(rules.passed)),
        rules_result: Set(Some(rules.to_json())),
        created_by: Set(Some(actor.to_string())),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await?;
    for (acc, amount) in &list {
        distribution_recipient::ActiveModel {
            distribution_id: Set(d.id),
            account_id: Set(acc.clone()),
            amount_stroops: Set(*amount),
            status: Set("pending".into()),
            ..Default::default()
        }
        .insert(db)
        .await?;
    }
    record_event(db, d.id, None, "draft", "created", actor).await?;
    Ok(DistributionRows {
        recipients: recipients_of(db, d.id).await?,
        distribution: d,
    })
}

/// The recipients of distribution `id`.
pub async fn recipients_of<C: ConnectionTrait>(
    db: &C,
    id: i64,
) -> Result<Vec<distribution_recipient::Model>, DbErr> {
    distribution_recipient::Entity::find()
        .filter(distribution_recipient::Column::DistributionId.eq(id))
        .order_by_asc(distribution_recipient::Column::Id)
        .all(db)
        .await
}

async fn record_event<C: ConnectionTrait>(
    db: &C,
    id: i64,
    from: Option<&str>,
    to: &str,
    reason: &str,
    actor: &str,
) -> Result<(), DbErr> {
    distribution_event::ActiveModel {
        distribution_id: Set(id),
        from_status: Set(from.map(String::from)),
        to_status: Set(to.to_string()),
        reason: Set(Some(reason.to_string())),
        actor: Set(Some(actor.to_string())),
        at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

async fn find_distribution<C: ConnectionTrait>(
    db: &C,
    id: i64,
) -> Result<distribution::Model, AdminError> {
    distribution::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("distribution {id}")))
}

/// Moves `d` to `to` only if its status is still the one read (the source may move it
/// concurrently), with an event row.
async fn transition<C: ConnectionTrait>(
    db: &C,
    d: &distribution::Model,
    to: &str,
    reason: &str,
    actor: &str,
) -> Result<distribution::Model, AdminError> {
    let now = Utc::now();
    let res = distribution::Entity::update_many()
        .col_expr(distribution::Column::Status, Expr::value(to))
        .col_expr(distribution::Column::UpdatedAt, Expr::value(now))
        .filter(distribution::Column::Id.eq(d.id))
        .filter(distribution::Column::Status.eq(d.status.clone()))
        .exec(db)
        .await?;
    if res.rows_affected != 1 {
        return Err(bad("id", "the distribution changed meanwhile; try again"));
    }
    record_event(db, d.id, Some(&d.status), to, reason, actor).await?;
    find_distribution(db, d.id).await
}

/// Approves a draft whose rules passed (refused with the rule violations otherwise).
pub async fn approve_distribution<C: ConnectionTrait>(
    db: &C,
    id: i64,
    actor: &str,
) -> Result<(distribution::Model, distribution::Model), AdminError> {
    let before = find_distribution(db, id).await?;
    if before.status != "draft" {
        return Err(bad(
            "id",
            format!(
                "distribution {id} is {}; only a draft can be approved",
                before.status
            ),
        ));
    }
    match before.rules_passed {
        Some(true) => {}
        Some(false) => {
            let reasons: Vec<String> = before
                .rules_result
                .as_ref()
                .and_then(|r| r.get("violations"))
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            return Err(bad(
                "id",
                format!("the distribution rules failed: {}", reasons.join("; ")),
            ));
        }
        None => return Err(bad("id", "the distribution rules are not evaluated yet")),
    }
    let after = transition(db, &before, "approved", "approved", actor).await?;
    Ok((before, after))
}

/// Cancels a draft, approved or executing distribution.
pub async fn cancel_distribution<C: ConnectionTrait>(
    db: &C,
    id: i64,
    reason: &str,
    actor: &str,
) -> Result<(distribution::Model, distribution::Model), AdminError> {
    if reason.trim().is_empty() {
        return Err(bad("reason", "must not be empty"));
    }
    let before = find_distribution(db, id).await?;
    if !can_transition(&before.status, "cancelled") {
        return Err(bad(
            "id",
            format!(
                "distribution {id} is {} and cannot be cancelled",
                before.status
            ),
        ));
    }
    let after = transition(db, &before, "cancelled", reason.trim(), actor).await?;
    Ok((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_checked_for_shape() {
        let ok = format!("G{}", "A".repeat(55));
        assert!(check_account_id(&ok).is_ok());
        assert!(check_account_id(&ok[..55]).is_err());
        assert!(check_account_id(&format!("S{}", "A".repeat(55))).is_err());
        assert!(check_account_id(&format!("G{}1", "A".repeat(54))).is_err());
        assert!(check_account_id(&format!("G{}a", "A".repeat(54))).is_err());
        assert!(check_account_id(&format!("G{}7", "A".repeat(54))).is_ok());
    }
}
