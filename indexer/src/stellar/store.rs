//! Database writes of the Stellar source: multi-row, idempotent inserts inside the caller's
//! transaction, so a page's rows and its cursor always commit together.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use orrery_entity::{
    stellar_account, stellar_account_operation, stellar_balance, stellar_balance_history,
    stellar_operation, stellar_sync_state,
};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, Set,
};

use super::holdings;
use super::horizon::{ledger_of, AccountSnapshot, AssetKey, BalanceLine, DecodedOp};
use super::resync::{ResyncMode, REQUESTED};

/// Rows per multi-row insert (keeps SQLite under its bound-variable limit).
const CHUNK: usize = 200;

/// Running (replayed) balances of one account.
pub type Running = BTreeMap<AssetKey, i64>;

/// Inserts accounts `(id, discovered_via)` with `watched` and their sync state (existing
/// rows are left alone, except that an unwatched account becomes watched). The Horizon source and the admin API insert watched accounts; the
/// RPC token-event source inserts the holders it finds with `watched = false` (their
/// operations are not indexed unless an operator watches them).
pub async fn ensure_accounts<C: ConnectionTrait>(
    db: &C,
    accounts: &[(String, String)],
    watched: bool,
) -> Result<(), DbErr> {
    let now = Utc::now();
    for chunk in accounts.chunks(CHUNK) {
        let rows = chunk.iter().map(|(id, via)| stellar_account::ActiveModel {
            account_id: Set(id.clone()),
            watched: Set(watched),
            sequence: Set(None),
            subentry_count: Set(None),
            last_modified_ledger: Set(None),
            last_modified_at: Set(None),
            discovered_via: Set(Some(via.clone())),
            created_at: Set(now),
            updated_at: Set(now),
        });
        // An account to watch may have been stored first as an unwatched holder (found in
        // token events): it becomes watched, named by how it came to be watched, whichever
        // source wrote first. Watched rows are left alone.
        let on_conflict = if watched {
            OnConflict::column(stellar_account::Column::AccountId)
                .update_columns([
                    stellar_account::Column::Watched,
                    stellar_account::Column::DiscoveredVia,
                ])
                .action_and_where(
                    Expr::col((stellar_account::Entity, stellar_account::Column::Watched))
                        .eq(false),
                )
                .to_owned()
        } else {
            OnConflict::column(stellar_account::Column::AccountId)
                .do_nothing()
                .to_owned()
        };
        stellar_account::Entity::insert_many(rows)
            .on_conflict(on_conflict)
            .exec_without_returning(db)
            .await?;
        let states = chunk.iter().map(|(id, _)| stellar_sync_state::ActiveModel {
            account_id: Set(id.clone()),
            last_ledger: Set(None),
            cursor: Set(None),
            last_sync_at: Set(None),
            status: Set("syncing".into()),
            mode: Set("incremental".into()),
            error_count: Set(0),
            last_error: Set(None),
            generation: Set(0),
            updated_at: Set(now),
        });
        stellar_sync_state::Entity::insert_many(states)
            .on_conflict_do_nothing_on([stellar_sync_state::Column::AccountId])
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Replayed balances of `account`: the latest history row per asset.
pub async fn load_running<C: ConnectionTrait>(db: &C, account: &str) -> Result<Running, DbErr> {
    let rows = stellar_balance_history::Entity::find()
        .filter(
            stellar_balance_history::Column::HoldingId.in_subquery(holdings::of_holders([account])),
        )
        .order_by_asc(stellar_balance_history::Column::OperationId)
        .all(db)
        .await?;
    let mut out = Running::new();
    for r in rows {
        out.insert(
            AssetKey {
                code: r.asset_code,
                issuer: r.asset_issuer,
            },
            r.balance_stroops.unwrap_or(0),
        );
    }
    Ok(out)
}

/// Inserts operation rows (shared across accounts; existing ids are kept).
pub async fn insert_operations<C: ConnectionTrait>(
    db: &C,
    ops: &[&DecodedOp],
) -> Result<(), DbErr> {
    for chunk in ops.chunks(CHUNK) {
        let rows = chunk.iter().map(|op| operation_row(op));
        stellar_operation::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([stellar_operation::Column::Id])
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// The `stellar_operation` row of `op`.
fn operation_row(op: &DecodedOp) -> stellar_operation::ActiveModel {
    stellar_operation::ActiveModel {
        id: Set(op.id),
        paging_token: Set(op.paging_token.clone()),
        transaction_hash: Set(op.transaction_hash.clone()),
        ledger: Set(Some(ledger_of(op.id))),
        created_at: Set(op.created_at),
        op_type: Set(op.op_type.clone()),
        source_account: Set(op.source_account.clone()),
        from_account: Set(op.from.clone()),
        to_account: Set(op.to.clone()),
        asset_type: Set(op.asset.as_ref().map(|a| a.asset_type().to_string())),
        asset_code: Set(op.asset.as_ref().map(|a| a.code.clone())),
        asset_issuer: Set(op
            .asset
            .as_ref()
            .map(|a| a.issuer.clone())
            .filter(|i| !i.is_empty())),
        amount_stroops: Set(op.amount),
        successful: Set(op.successful),
        details: Set(op.raw.clone()),
    }
}

/// Upserts operation rows: present ids get their fields rewritten from Horizon's record.
pub async fn upsert_operations<C: ConnectionTrait>(
    db: &C,
    ops: &[&DecodedOp],
) -> Result<(), DbErr> {
    use stellar_operation::Column as C;
    for chunk in ops.chunks(CHUNK) {
        let rows = chunk.iter().map(|op| operation_row(op));
        stellar_operation::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::column(C::Id)
                    .update_columns([
                        C::PagingToken,
                        C::TransactionHash,
                        C::Ledger,
                        C::CreatedAt,
                        C::OpType,
                        C::SourceAccount,
                        C::FromAccount,
                        C::ToAccount,
                        C::AssetType,
                        C::AssetCode,
                        C::AssetIssuer,
                        C::AmountStroops,
                        C::Successful,
                        C::Details,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Stores a decoded Horizon transaction record (a stored one is kept).
pub async fn insert_transaction<C: ConnectionTrait>(
    db: &C,
    row: orrery_entity::stellar_transaction::Model,
) -> Result<(), DbErr> {
    use sea_orm::IntoActiveModel;
    orrery_entity::stellar_transaction::Entity::insert(row.into_active_model())
        .on_conflict_do_nothing()
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Inserts `account`'s links to `ops` (existing links are kept).
pub async fn insert_links<C: ConnectionTrait>(
    db: &C,
    account: &str,
    ops: &[&DecodedOp],
) -> Result<(), DbErr> {
    let links: Vec<(&str, &DecodedOp)> = ops.iter().map(|op| (account, *op)).collect();
    insert_account_links(db, &links).await
}

/// Inserts `(account, operation)` links of any accounts (existing links are kept).
pub async fn insert_account_links<C: ConnectionTrait>(
    db: &C,
    links: &[(&str, &DecodedOp)],
) -> Result<(), DbErr> {
    for chunk in links.chunks(CHUNK) {
        let rows = chunk
            .iter()
            .map(|(account, op)| stellar_account_operation::ActiveModel {
                account_id: Set(account.to_string()),
                operation_id: Set(op.id),
                created_at: Set(op.created_at),
            });
        stellar_account_operation::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([
                stellar_account_operation::Column::AccountId,
                stellar_account_operation::Column::OperationId,
            ])
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// A balance change applied to an account's running balances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Asset.
    pub asset: AssetKey,
    /// Operation.
    pub operation_id: i64,
    /// Delta.
    pub delta: i64,
    /// Balance after.
    pub balance: i64,
}

/// Applies `ops` (ascending, all after the account's cursor) to `running` and returns the
/// history rows: deltas summed per operation and asset; the account's own issued assets are
/// skipped (an issuer has no balance in them).
pub fn apply(account: &str, ops: &[&DecodedOp], running: &mut Running) -> Vec<Change> {
    let mut out = Vec::new();
    for op in ops {
        let mut per: BTreeMap<AssetKey, i64> = BTreeMap::new();
        for d in op.deltas.iter().filter(|d| d.account == account) {
            if d.asset.issuer == account {
                continue;
            }
            *per.entry(d.asset.clone()).or_default() += d.stroops;
        }
        for (asset, delta) in per {
            let bal = running.entry(asset.clone()).or_default();
            *bal += delta;
            out.push(Change {
                asset,
                operation_id: op.id,
                delta,
                balance: *bal,
            });
        }
    }
    out
}

/// One balance history row to insert: account, change, and the operation's time.
pub type HistoryRow<'a> = (&'a str, &'a Change, DateTime<Utc>);

/// Inserts balance history rows of any accounts, in order (existing rows are kept).
pub async fn insert_history<C: ConnectionTrait>(
    db: &C,
    rows: &[HistoryRow<'_>],
) -> Result<(), DbErr> {
    let ids =
        holdings::resolve(db, rows.iter().map(|(account, c, _)| (*account, &c.asset))).await?;
    for chunk in rows.chunks(CHUNK) {
        let models = chunk
            .iter()
            .map(|(account, c, at)| {
                Ok(stellar_balance_history::ActiveModel {
                    holding_id: Set(ids.id(account, &c.asset)?),
                    account_id: Set(account.to_string()),
                    asset_code: Set(c.asset.code.clone()),
                    asset_issuer: Set(c.asset.issuer.clone()),
                    operation_id: Set(c.operation_id),
                    ledger: Set(Some(ledger_of(c.operation_id))),
                    at: Set(*at),
                    delta_stroops: Set(c.delta),
                    balance_stroops: Set(Some(c.balance)),
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>, DbErr>>()?;
        stellar_balance_history::Entity::insert_many(models)
            .on_conflict_do_nothing_on([
                stellar_balance_history::Column::HoldingId,
                stellar_balance_history::Column::OperationId,
            ])
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// The sync-state rows of `accounts` that exist, by account.
pub async fn load_states<C: ConnectionTrait>(
    db: &C,
    accounts: &[&str],
) -> Result<HashMap<String, stellar_sync_state::Model>, DbErr> {
    let mut out = HashMap::with_capacity(accounts.len());
    for chunk in accounts.chunks(CHUNK) {
        let rows = stellar_sync_state::Entity::find()
            .filter(stellar_sync_state::Column::AccountId.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        out.extend(rows.into_iter().map(|r| (r.account_id.clone(), r)));
    }
    Ok(out)
}

/// Writes sync-state rows whole, one multi-row upsert per chunk (every row exists; an
/// account appears at most once).
pub async fn upsert_states<C: ConnectionTrait>(
    db: &C,
    states: Vec<stellar_sync_state::Model>,
) -> Result<(), DbErr> {
    use stellar_sync_state::Column as S;
    let mut states = states.into_iter().peekable();
    while states.peek().is_some() {
        let chunk: Vec<stellar_sync_state::ActiveModel> = states
            .by_ref()
            .take(CHUNK)
            .map(|m| m.into_active_model().reset_all())
            .collect();
        stellar_sync_state::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(S::AccountId)
                    .update_columns([
                        S::LastLedger,
                        S::Cursor,
                        S::LastSyncAt,
                        S::Status,
                        S::Mode,
                        S::ErrorCount,
                        S::LastError,
                        S::Generation,
                        S::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Moves pending requests `(account, mode)` to `status = 'syncing'`; a row whose request
/// changed since it was read (another mode, or no longer requested) is left alone.
pub async fn mark_requests_taken<C: ConnectionTrait>(
    db: &C,
    requests: &[(String, String)],
) -> Result<(), DbErr> {
    use stellar_sync_state::Column as S;
    let mut by_mode: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (account, mode) in requests {
        by_mode.entry(mode).or_default().push(account);
    }
    for (mode, accounts) in by_mode {
        for chunk in accounts.chunks(CHUNK) {
            stellar_sync_state::Entity::update_many()
                .col_expr(S::Status, Expr::value("syncing"))
                .filter(S::AccountId.is_in(chunk.iter().copied()))
                .filter(S::Status.eq(REQUESTED))
                .filter(S::Mode.eq(mode))
                .exec(db)
                .await?;
        }
    }
    Ok(())
}

/// Clears `account`'s request `mode` (back to `incremental`, status `synced` or `syncing`)
/// unless it changed since it was read.
pub async fn clear_request<C: ConnectionTrait>(
    db: &C,
    account: &str,
    mode: &str,
    caught_up: bool,
) -> Result<(), DbErr> {
    use stellar_sync_state::Column as S;
    let now = Utc::now();
    let status = if caught_up { "synced" } else { "syncing" };
    stellar_sync_state::Entity::update_many()
        .col_expr(S::Mode, Expr::value(ResyncMode::Incremental.as_mode()))
        .col_expr(S::Status, Expr::value(status))
        .col_expr(S::LastSyncAt, Expr::value(Some(now)))
        .col_expr(S::UpdatedAt, Expr::value(now))
        .filter(S::AccountId.eq(account))
        .filter(S::Status.eq(REQUESTED))
        .filter(S::Mode.eq(mode))
        .exec(db)
        .await?;
    Ok(())
}

/// Removes the links and balance history of `accounts` (a full resync replays them in the
/// same transaction, so readers never see an account half-empty).
pub async fn delete_account_histories<C: ConnectionTrait>(
    db: &C,
    accounts: &[&str],
) -> Result<(), DbErr> {
    for chunk in accounts.chunks(CHUNK) {
        stellar_account_operation::Entity::delete_many()
            .filter(stellar_account_operation::Column::AccountId.is_in(chunk.iter().copied()))
            .exec(db)
            .await?;
        stellar_balance_history::Entity::delete_many()
            .filter(
                stellar_balance_history::Column::HoldingId
                    .in_subquery(holdings::of_holders(chunk.iter().copied())),
            )
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Stores account records: each account's fields (when its row exists) and its current
/// balances (replaced), in order.
pub async fn write_snapshots<C: ConnectionTrait>(
    db: &C,
    snaps: &[&AccountSnapshot],
) -> Result<(), DbErr> {
    use stellar_account::Column as A;
    let now = Utc::now();
    // One statement per record: they differ per row and the row is never inserted here.
    for snap in snaps {
        stellar_account::Entity::update_many()
            .col_expr(A::Sequence, Expr::value(snap.sequence))
            .col_expr(A::SubentryCount, Expr::value(snap.subentry_count))
            .col_expr(
                A::LastModifiedLedger,
                Expr::value(snap.last_modified_ledger),
            )
            .col_expr(A::LastModifiedAt, Expr::value(snap.last_modified_at))
            .col_expr(A::UpdatedAt, Expr::value(now))
            .filter(A::AccountId.eq(snap.id.as_str()))
            .exec(db)
            .await?;
    }
    let ids: Vec<&str> = snaps.iter().map(|s| s.id.as_str()).collect();
    for chunk in ids.chunks(CHUNK) {
        stellar_balance::Entity::delete_many()
            .filter(stellar_balance::Column::AccountId.is_in(chunk.iter().copied()))
            .exec(db)
            .await?;
    }
    let lines: Vec<(&str, &BalanceLine)> = snaps
        .iter()
        .flat_map(|s| s.balances.iter().map(move |b| (s.id.as_str(), b)))
        .collect();
    for chunk in lines.chunks(CHUNK) {
        let rows = chunk.iter().map(|(id, b)| stellar_balance::ActiveModel {
            account_id: Set(id.to_string()),
            asset_type: Set(b.asset.asset_type().into()),
            asset_code: Set(b.asset.code.clone()),
            asset_issuer: Set(b.asset.issuer.clone()),
            balance_stroops: Set(b.balance),
            limit_stroops: Set(b.limit),
            last_modified_ledger: Set(b.last_modified_ledger),
            updated_at: Set(now),
            ..Default::default()
        });
        stellar_balance::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Every asset of the replayed balances or the account record compared (the account's own
/// issued assets excepted): `expected` is Horizon's, `actual` the replayed; missing lines
/// count as zero.
pub fn balance_checks(
    running: &Running,
    snap: &AccountSnapshot,
) -> Vec<crate::stellar::reconciliation::BalanceCheck> {
    let mut horizon: BTreeMap<AssetKey, i64> = BTreeMap::new();
    for b in &snap.balances {
        horizon.insert(b.asset.clone(), b.balance);
    }
    let mut keys: Vec<&AssetKey> = running.keys().chain(horizon.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| k.issuer != snap.id)
        .map(|k| crate::stellar::reconciliation::BalanceCheck {
            asset: k.clone(),
            expected: horizon.get(k).copied().unwrap_or(0),
            actual: running.get(k).copied().unwrap_or(0),
        })
        .collect()
}

/// Differences between replayed balances and the account record, as
/// `(asset, replayed, horizon)`; missing lines count as zero.
pub fn mismatches(running: &Running, snap: &AccountSnapshot) -> Vec<(AssetKey, i64, i64)> {
    let mut horizon: BTreeMap<AssetKey, i64> = BTreeMap::new();
    for b in &snap.balances {
        horizon.insert(b.asset.clone(), b.balance);
    }
    let mut keys: Vec<&AssetKey> = running.keys().chain(horizon.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| k.issuer != snap.id)
        .filter_map(|k| {
            let r = running.get(k).copied().unwrap_or(0);
            let h = horizon.get(k).copied().unwrap_or(0);
            (r != h).then(|| (k.clone(), r, h))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stellar::horizon::Delta;

    /// A decoded payment operation for tests.
    pub(crate) fn op(id: i64, deltas: Vec<Delta>) -> DecodedOp {
        DecodedOp {
            id,
            paging_token: id.to_string(),
            transaction_hash: String::new(),
            created_at: Utc::now(),
            op_type: "payment".into(),
            source_account: "GA".into(),
            from: None,
            to: None,
            asset: None,
            amount: None,
            successful: true,
            participants: vec![],
            deltas,
            raw: serde_json::Value::Null,
        }
    }

    #[test]
    fn replay_sums_self_payments_and_skips_own_issued_assets() {
        let ubec = AssetKey::parse("UBEC:GI").unwrap();
        let d = |acc: &str, x: i64| Delta {
            account: acc.into(),
            asset: ubec.clone(),
            stroops: x,
        };
        let a = op(1, vec![d("GI", -50), d("GA", 50)]);
        let b = op(2, vec![d("GA", -10), d("GA", 10)]);
        let c = op(3, vec![d("GA", -20), d("GB", 20)]);
        let mut run = Running::new();
        let ch = apply("GA", &[&a, &b, &c], &mut run);
        assert_eq!(ch.len(), 3);
        assert_eq!(ch[1].delta, 0);
        assert_eq!(ch[2].balance, 30);
        let mut issuer = Running::new();
        assert!(apply("GI", &[&a], &mut issuer).is_empty());
        let snap = AccountSnapshot {
            id: "GA".into(),
            sequence: None,
            subentry_count: None,
            last_modified_ledger: None,
            last_modified_at: None,
            balances: vec![BalanceLine {
                asset: ubec.clone(),
                balance: 30,
                limit: None,
                last_modified_ledger: None,
            }],
        };
        assert!(mismatches(&run, &snap).is_empty());
        run.insert(AssetKey::native(), 5);
        assert_eq!(mismatches(&run, &snap), vec![(AssetKey::native(), 5, 0)]);
    }
}
