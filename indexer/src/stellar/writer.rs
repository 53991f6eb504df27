//! The write half of the Stellar source: stores a [`StellarBatch`] inside the transaction
//! the engine gives it (the engine then writes the source's cursor and commits), so a page's
//! rows and its account's cursor always commit together. Set-based: a bounded number of
//! statements per batch, whatever the number of accounts.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::Utc;
use sea_orm::{DatabaseTransaction, DbErr};

use super::balance_events;
use super::batch::{next_state, AccountRows, StellarBatch, TargetedRange};
use super::horizon::{AssetKey, DecodedOp};
use super::reconciliation;
use super::resync;
use super::source::SOURCE_ID;
use super::store::{self, Change, HistoryRow};
use crate::bus::payload::OperationIndexed;
use crate::bus::BusEvent;
use crate::metrics::Metrics;
use crate::sync::{BatchWriter, Reverted, Written};

/// Writes Stellar batches. Holds nothing: every row it writes is in the batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct StellarWriter;

#[async_trait]
impl BatchWriter<StellarBatch> for StellarWriter {
    async fn write(
        &self,
        txn: &DatabaseTransaction,
        batch: &StellarBatch,
    ) -> Result<Written, DbErr> {
        match batch {
            StellarBatch::Discover { accounts } => {
                store::ensure_accounts(txn, accounts, true).await?;
                Ok(Written::default())
            }
            StellarBatch::Pages { rows, mismatched } => {
                write_rows(txn, rows).await?;
                let mismatched = i64::try_from(*mismatched).unwrap_or(i64::MAX);
                Ok(Written {
                    items: vec![("operation", rows.page_ops())],
                    events: snapshot_events(txn, rows).await?,
                    after_commit: Some(Box::new(move || {
                        Metrics::global()
                            .reconciliation_mismatches
                            .with_label_values(&[SOURCE_ID])
                            .set(mismatched);
                    })),
                })
            }
            StellarBatch::Live(rows) => {
                write_rows(txn, rows).await?;
                Ok(Written {
                    items: vec![("operation", rows.ops.len() as u64)],
                    events: live_events(txn, rows).await?,
                    after_commit: None,
                })
            }
            StellarBatch::Picked { requests } => {
                store::mark_requests_taken(txn, requests).await?;
                Ok(Written::default())
            }
            StellarBatch::Targeted(t) => write_targeted(txn, t).await,
        }
    }

    /// Stellar has no reorganisations (ledgers are final once closed) and the source never
    /// returns `Fetched::Revert`: nothing to undo.
    async fn revert(&self, _txn: &DatabaseTransaction, _to: i64) -> Result<Reverted, DbErr> {
        Ok(Reverted::default())
    }
}

/// Stores operations and every page: full replays' history deleted first, then operations,
/// account records, links, balance history and the sync-state rows (cursors).
async fn write_rows(txn: &DatabaseTransaction, rows: &AccountRows) -> Result<(), DbErr> {
    if rows.ops.is_empty() && rows.pages.is_empty() {
        return Ok(());
    }
    let accounts: Vec<&str> = rows.pages.iter().map(|p| p.account.as_str()).collect();
    // Read in the transaction: mode, generation and last_error are kept from the stored row.
    let mut states = store::load_states(txn, &accounts).await?;
    if let Some(missing) = accounts.iter().find(|a| !states.contains_key(**a)) {
        return Err(DbErr::Custom(format!("no sync state for {missing}")));
    }
    let full: Vec<&str> = rows
        .pages
        .iter()
        .filter(|p| p.full)
        .map(|p| p.account.as_str())
        .collect();
    store::delete_account_histories(txn, &full).await?;
    let ops: Vec<&DecodedOp> = rows.ops.iter().collect();
    store::insert_operations(txn, &ops).await?;
    let snaps: Vec<_> = rows
        .pages
        .iter()
        .filter_map(|p| p.snapshot.as_ref())
        .collect();
    store::write_snapshots(txn, &snaps).await?;
    let links: Vec<(&str, &DecodedOp)> = rows
        .pages
        .iter()
        .flat_map(|p| rows.ops_of(p).map(move |op| (p.account.as_str(), op)))
        .collect();
    store::insert_account_links(txn, &links).await?;
    let when: HashMap<i64, _> = rows.ops.iter().map(|o| (o.id, o.created_at)).collect();
    let when = &when;
    let now = Utc::now();
    let history: Vec<HistoryRow<'_>> = rows
        .pages
        .iter()
        .flat_map(|p| {
            let account = p.account.as_str();
            p.changes.iter().map(move |c| {
                let at = when.get(&c.operation_id).copied().unwrap_or(now);
                (account, c, at)
            })
        })
        .collect();
    store::insert_history(txn, &history).await?;
    let mut next = Vec::with_capacity(rows.pages.len());
    for p in &rows.pages {
        if let Some(state) = states.remove(&p.account) {
            next.push(next_state(state, p, rows.ops_of(p).last(), now));
        }
    }
    store::upsert_states(txn, next).await?;
    // Reconciliation: each account record read replaces the account's checks.
    let checked: Vec<(&str, &[reconciliation::BalanceCheck])> = rows
        .pages
        .iter()
        .filter(|p| p.snapshot.is_some())
        .map(|p| (p.account.as_str(), p.checks.as_slice()))
        .collect();
    reconciliation::store(txn, SOURCE_ID, &checked, now).await
}

/// `stellar.balance_changed` per balance line of each account record stored: the stored
/// rows, read back in the transaction.
async fn snapshot_events(
    txn: &DatabaseTransaction,
    rows: &AccountRows,
) -> Result<Vec<BusEvent>, DbErr> {
    let keys: BTreeSet<(String, AssetKey)> = rows
        .pages
        .iter()
        .filter_map(|p| p.snapshot.as_ref().map(|s| (p, s)))
        .flat_map(|(p, s)| {
            s.balances
                .iter()
                .map(|b| (p.account.clone(), b.asset.clone()))
        })
        .collect();
    balance_events::balance_events(txn, &keys).await
}

/// `stellar.operation_indexed` per operation, then `stellar.balance_changed` per balance
/// the live changes moved: each balance's final value is stored (so the `balances` query
/// follows the stream) and its row published.
async fn live_events(
    txn: &DatabaseTransaction,
    rows: &AccountRows,
) -> Result<Vec<BusEvent>, DbErr> {
    let mut events = Vec::new();
    for p in &rows.pages {
        for op in rows.ops_of(p) {
            events.push(BusEvent::new(OperationIndexed {
                account_id: p.account.clone(),
                operation_id: op.id,
            }));
        }
    }
    let changes: Vec<(&str, &Change)> = rows
        .pages
        .iter()
        .flat_map(|p| p.changes.iter().map(move |c| (p.account.as_str(), c)))
        .collect();
    let keys = balance_events::upsert_live(txn, &changes, Utc::now()).await?;
    events.extend(balance_events::balance_events(txn, &keys).await?);
    Ok(events)
}

/// Upserts the range's operations and links, then clears the request (the cursor does not
/// move).
async fn write_targeted(txn: &DatabaseTransaction, t: &TargetedRange) -> Result<Written, DbErr> {
    let refs: Vec<&DecodedOp> = t.ops.iter().collect();
    resync::upsert_range(txn, &t.account, &refs).await?;
    store::clear_request(txn, &t.account, &t.mode, t.caught_up).await?;
    let (account, from, to, n) = (t.account.clone(), t.from, t.to, refs.len());
    Ok(Written {
        items: vec![("operation", n as u64)],
        events: Vec::new(),
        after_commit: Some(Box::new(move || {
            tracing::info!(%account, from, to, operations = n, "stellar: targeted resync done");
        })),
    })
}
