//! Database writes of the Stellar source: multi-row, idempotent inserts inside the caller's
//! transaction, so a page's rows and its cursor always commit together.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use orrery_entity::{
    stellar_account, stellar_account_operation, stellar_balance, stellar_balance_history,
    stellar_operation, stellar_sync_state,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, Set,
};

use super::horizon::{ledger_of, AccountSnapshot, AssetKey, DecodedOp};

/// Rows per multi-row insert (keeps SQLite under its bound-variable limit).
const CHUNK: usize = 200;

/// Running (replayed) balances of one account.
pub type Running = BTreeMap<AssetKey, i64>;

/// Inserts watched accounts and their sync state (existing rows are left alone).
pub async fn ensure_accounts<C: ConnectionTrait>(
    db: &C,
    accounts: &[(String, String)],
) -> Result<(), DbErr> {
    let now = Utc::now();
    for chunk in accounts.chunks(CHUNK) {
        let rows = chunk.iter().map(|(id, via)| stellar_account::ActiveModel {
            account_id: Set(id.clone()),
            watched: Set(true),
            sequence: Set(None),
            subentry_count: Set(None),
            last_modified_ledger: Set(None),
            last_modified_at: Set(None),
            discovered_via: Set(Some(via.clone())),
            created_at: Set(now),
            updated_at: Set(now),
        });
        stellar_account::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([stellar_account::Column::AccountId])
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
        .filter(stellar_balance_history::Column::AccountId.eq(account))
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
                sea_orm::sea_query::OnConflict::column(C::Id)
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

/// Inserts `account`'s links to `ops` (existing links are kept).
pub async fn insert_links<C: ConnectionTrait>(
    db: &C,
    account: &str,
    ops: &[&DecodedOp],
) -> Result<(), DbErr> {
    for chunk in ops.chunks(CHUNK) {
        let links = chunk
            .iter()
            .map(|op| stellar_account_operation::ActiveModel {
                account_id: Set(account.to_string()),
                operation_id: Set(op.id),
                created_at: Set(op.created_at),
            });
        stellar_account_operation::Entity::insert_many(links)
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

/// Writes one account's page: links, balance history and the account's new cursor.
pub async fn write_account_page<C: ConnectionTrait>(
    db: &C,
    account: &str,
    ops: &[&DecodedOp],
    changes: &[Change],
    state: stellar_sync_state::Model,
    caught_up: bool,
) -> Result<(), DbErr> {
    let when: HashMap<i64, _> = ops.iter().map(|o| (o.id, o.created_at)).collect();
    insert_links(db, account, ops).await?;
    for chunk in changes.chunks(CHUNK) {
        let rows = chunk.iter().map(|c| stellar_balance_history::ActiveModel {
            account_id: Set(account.to_string()),
            asset_code: Set(c.asset.code.clone()),
            asset_issuer: Set(c.asset.issuer.clone()),
            operation_id: Set(c.operation_id),
            ledger: Set(Some(ledger_of(c.operation_id))),
            at: Set(when.get(&c.operation_id).copied().unwrap_or_else(Utc::now)),
            delta_stroops: Set(c.delta),
            balance_stroops: Set(Some(c.balance)),
            ..Default::default()
        });
        stellar_balance_history::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([
                stellar_balance_history::Column::AccountId,
                stellar_balance_history::Column::AssetCode,
                stellar_balance_history::Column::AssetIssuer,
                stellar_balance_history::Column::OperationId,
            ])
            .exec_without_returning(db)
            .await?;
    }
    // Every field is written: the caller may have changed mode, generation or last_error.
    let mut st = state.into_active_model().reset_all();
    if let Some(last) = ops.last() {
        st.cursor = Set(Some(last.paging_token.clone()));
        st.last_ledger = Set(Some(ledger_of(last.id)));
    }
    st.status = Set(if caught_up { "synced" } else { "syncing" }.into());
    st.last_sync_at = Set(Some(Utc::now()));
    st.error_count = Set(0);
    st.updated_at = Set(Utc::now());
    st.update(db).await?;
    Ok(())
}

/// Removes an account's links and balance history (a full resync replays them in the same
/// transaction, so readers never see the account half-empty).
pub async fn delete_account_history<C: ConnectionTrait>(
    db: &C,
    account: &str,
) -> Result<(), DbErr> {
    stellar_account_operation::Entity::delete_many()
        .filter(stellar_account_operation::Column::AccountId.eq(account))
        .exec(db)
        .await?;
    stellar_balance_history::Entity::delete_many()
        .filter(stellar_balance_history::Column::AccountId.eq(account))
        .exec(db)
        .await?;
    Ok(())
}

/// Stores an account record: account fields and its current balances (replaced).
pub async fn write_snapshot<C: ConnectionTrait>(
    db: &C,
    snap: &AccountSnapshot,
) -> Result<(), DbErr> {
    let now = Utc::now();
    if let Some(acc) = stellar_account::Entity::find_by_id(snap.id.clone())
        .one(db)
        .await?
    {
        let mut a = acc.into_active_model();
        a.sequence = Set(snap.sequence);
        a.subentry_count = Set(snap.subentry_count);
        a.last_modified_ledger = Set(snap.last_modified_ledger);
        a.last_modified_at = Set(snap.last_modified_at);
        a.updated_at = Set(now);
        a.update(db).await?;
    }
    stellar_balance::Entity::delete_many()
        .filter(stellar_balance::Column::AccountId.eq(snap.id.clone()))
        .exec(db)
        .await?;
    if !snap.balances.is_empty() {
        let rows = snap.balances.iter().map(|b| stellar_balance::ActiveModel {
            account_id: Set(snap.id.clone()),
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
mod tests {
    use super::*;
    use crate::stellar::horizon::{BalanceLine, Delta};

    fn op(id: i64, deltas: Vec<Delta>) -> DecodedOp {
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
