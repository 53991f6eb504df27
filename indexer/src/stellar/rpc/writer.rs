//! The write half of the RPC token-event source: holders, balance history and current
//! balances of one [`RpcBatch`], set-based, inside the engine's transaction (which also
//! stores the source's `getEvents` cursor), so a crash never applies an event twice or
//! loses one.

use async_trait::async_trait;
use chrono::Utc;
use orrery_entity::{stellar_balance, stellar_balance_history, stellar_sync_state};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, ExprTrait, QueryFilter, Set};

use super::batch::RpcBatch;
use crate::sync::{BatchWriter, Reverted, Written};

/// Rows per multi-row statement (SQLite's bound-variable limit).
const CHUNK: usize = 500;

/// Writes [`RpcBatch`]es.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcWriter;

#[async_trait]
impl BatchWriter<RpcBatch> for RpcWriter {
    async fn write(&self, txn: &DatabaseTransaction, batch: &RpcBatch) -> Result<Written, DbErr> {
        // Holders found in events are stored with `watched = false`: their operations are
        // not indexed (a Horizon source running beside this one must not take them up).
        crate::stellar::store::ensure_accounts(txn, &batch.accounts, false).await?;
        insert_history(txn, batch).await?;
        upsert_balances(txn, batch).await?;
        mark_synced(txn, batch).await?;
        store_reconciliation(txn, batch).await?;
        // The committed rows (limits and ledgers as stored), read back in the transaction.
        let keys = batch
            .balances
            .iter()
            .map(|b| (b.account.clone(), b.asset.clone()))
            .collect();
        let events = crate::stellar::balance_events::balance_events(txn, &keys).await?;
        Ok(Written {
            items: vec![("token_event", batch.applied)],
            events,
            after_commit: None,
        })
    }

    /// Ledgers are final: the source never reverts.
    async fn revert(&self, _txn: &DatabaseTransaction, _to: i64) -> Result<Reverted, DbErr> {
        Ok(Reverted::default())
    }
}

/// Inserts history rows; a row whose `(account, asset, toid)` exists (the TOID's events
/// were split over two pages) adds its delta and takes the newer balance.
async fn insert_history(txn: &DatabaseTransaction, batch: &RpcBatch) -> Result<(), DbErr> {
    use stellar_balance_history::Column as H;
    for chunk in batch.history.chunks(CHUNK) {
        let rows = chunk.iter().map(|r| stellar_balance_history::ActiveModel {
            account_id: Set(r.account.clone()),
            asset_code: Set(r.asset.code.clone()),
            asset_issuer: Set(r.asset.issuer.clone()),
            operation_id: Set(r.toid),
            ledger: Set(Some(r.ledger)),
            at: Set(r.at),
            delta_stroops: Set(r.delta),
            balance_stroops: Set(Some(r.balance)),
            ..Default::default()
        });
        stellar_balance_history::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([H::AccountId, H::AssetCode, H::AssetIssuer, H::OperationId])
                    .value(
                        H::DeltaStroops,
                        Expr::col((stellar_balance_history::Entity, H::DeltaStroops))
                            .add(Expr::cust("excluded.delta_stroops")),
                    )
                    .update_column(H::BalanceStroops)
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// Upserts the current balances the batch changed.
async fn upsert_balances(txn: &DatabaseTransaction, batch: &RpcBatch) -> Result<(), DbErr> {
    use stellar_balance::Column as B;
    let now = Utc::now();
    for chunk in batch.balances.chunks(CHUNK) {
        let rows = chunk.iter().map(|b| stellar_balance::ActiveModel {
            account_id: Set(b.account.clone()),
            asset_type: Set(b.asset.asset_type().into()),
            asset_code: Set(b.asset.code.clone()),
            asset_issuer: Set(b.asset.issuer.clone()),
            balance_stroops: Set(b.balance),
            limit_stroops: Set(None),
            last_modified_ledger: Set(Some(b.ledger)),
            updated_at: Set(now),
            ..Default::default()
        });
        stellar_balance::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([B::AccountId, B::AssetCode, B::AssetIssuer])
                    .update_columns([B::BalanceStroops, B::LastModifiedLedger, B::UpdatedAt])
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// Stores reconciliation outcomes in `balance_reconciliation` (each account's checks
/// replace its previous ones).
async fn store_reconciliation(txn: &DatabaseTransaction, batch: &RpcBatch) -> Result<(), DbErr> {
    let checked: Vec<(&str, &[crate::stellar::reconciliation::BalanceCheck])> = batch
        .reconciled
        .iter()
        .map(|(a, c)| (a.as_str(), c.as_slice()))
        .collect();
    crate::stellar::reconciliation::store(txn, super::source::SOURCE_ID, &checked, Utc::now()).await
}

/// Holders the batch touched: synced through the batch's newest ledger.
async fn mark_synced(txn: &DatabaseTransaction, batch: &RpcBatch) -> Result<(), DbErr> {
    use stellar_sync_state::Column as S;
    let Some(ledger) = batch.ledger else {
        return Ok(());
    };
    let mut holders: Vec<&str> = batch.balances.iter().map(|b| b.account.as_str()).collect();
    holders.sort_unstable();
    holders.dedup();
    let now = Utc::now();
    for chunk in holders.chunks(CHUNK) {
        stellar_sync_state::Entity::update_many()
            .col_expr(S::LastLedger, Expr::value(Some(ledger)))
            .col_expr(S::LastSyncAt, Expr::value(Some(now)))
            .col_expr(S::Status, Expr::value("synced"))
            .col_expr(S::UpdatedAt, Expr::value(now))
            .filter(S::AccountId.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?;
    }
    Ok(())
}
