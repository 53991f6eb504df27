//! `stellar.balance_changed` events carry the committed `stellar_balance` row: read back in
//! the batch's transaction after its writes, one statement per chunk of accounts, so a
//! subscription returns exactly what the `balances` query returns (trustline limit and
//! last-modified ledger included) without a database read per subscriber.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use orrery_entity::stellar_balance;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};

use super::horizon::{ledger_of, AssetKey};
use super::store::Change;
use crate::bus::BusEvent;

/// Accounts per `IN (...)` (SQLite's bound-variable limit).
const CHUNK: usize = 500;

/// One event per stored row among `keys` (`(account, asset)`); keys without a row (a
/// trustline removed by the same batch) publish nothing.
pub async fn balance_events<C: ConnectionTrait>(
    db: &C,
    keys: &BTreeSet<(String, AssetKey)>,
) -> Result<Vec<BusEvent>, DbErr> {
    let accounts: Vec<&str> = keys
        .iter()
        .map(|(a, _)| a.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in accounts.chunks(CHUNK) {
        let rows = stellar_balance::Entity::find()
            .filter(stellar_balance::Column::AccountId.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        let mut rows: Vec<_> = rows
            .into_iter()
            .filter(|r| {
                let key = AssetKey {
                    code: r.asset_code.clone(),
                    issuer: r.asset_issuer.clone(),
                };
                keys.contains(&(r.account_id.clone(), key))
            })
            .collect();
        rows.sort_by(|a, b| {
            (&a.account_id, &a.asset_code, &a.asset_issuer).cmp(&(
                &b.account_id,
                &b.asset_code,
                &b.asset_issuer,
            ))
        });
        out.extend(rows.into_iter().map(BusEvent::new));
    }
    Ok(out)
}

/// Stores the balance each account's live changes end with (balance and the ledger of the
/// operation; a trustline limit already stored is kept), so the `balances` query follows
/// the stream between two account-record snapshots. Returns the keys written.
pub async fn upsert_live<C: ConnectionTrait>(
    db: &C,
    changes: &[(&str, &Change)],
    now: DateTime<Utc>,
) -> Result<BTreeSet<(String, AssetKey)>, DbErr> {
    use stellar_balance::Column as B;
    // The last change per key wins (changes are in operation order).
    let mut last: BTreeMap<(String, AssetKey), &Change> = BTreeMap::new();
    for (account, c) in changes {
        last.insert((account.to_string(), c.asset.clone()), c);
    }
    let items: Vec<_> = last.iter().collect();
    for chunk in items.chunks(CHUNK) {
        let rows = chunk
            .iter()
            .map(|((account, asset), c)| stellar_balance::ActiveModel {
                account_id: Set(account.clone()),
                asset_type: Set(asset.asset_type().into()),
                asset_code: Set(asset.code.clone()),
                asset_issuer: Set(asset.issuer.clone()),
                balance_stroops: Set(c.balance),
                limit_stroops: Set(None),
                last_modified_ledger: Set(Some(ledger_of(c.operation_id))),
                updated_at: Set(now),
                ..Default::default()
            });
        stellar_balance::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([B::AccountId, B::AssetCode, B::AssetIssuer])
                    .update_columns([B::BalanceStroops, B::LastModifiedLedger, B::UpdatedAt])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(last.into_keys().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Payload;
    use orrery_migration::{Migrator, MigratorTrait};
    use sea_orm::Database;

    #[tokio::test]
    async fn live_changes_are_stored_and_published_as_rows() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let usdc = AssetKey {
            code: "USDC".into(),
            issuer: "GISSUER".into(),
        };
        // A snapshot stored the trustline with its limit.
        stellar_balance::Entity::insert(stellar_balance::ActiveModel {
            account_id: Set("GA".into()),
            asset_type: Set(usdc.asset_type().into()),
            asset_code: Set("USDC".into()),
            asset_issuer: Set("GISSUER".into()),
            balance_stroops: Set(1),
            limit_stroops: Set(Some(1_000)),
            last_modified_ledger: Set(Some(1)),
            updated_at: Set(Utc::now()),
            ..Default::default()
        })
        .exec(&db)
        .await
        .unwrap();
        let first = Change {
            asset: usdc.clone(),
            operation_id: 5 << 32,
            delta: 4,
            balance: 5,
        };
        let second = Change {
            asset: usdc.clone(),
            operation_id: (7 << 32) + 1,
            delta: 2,
            balance: 7,
        };
        let lumens = Change {
            asset: AssetKey::native(),
            operation_id: 7 << 32,
            delta: -100,
            balance: 900,
        };
        let keys = upsert_live(
            &db,
            &[("GA", &first), ("GA", &lumens), ("GA", &second)],
            Utc::now(),
        )
        .await
        .unwrap();
        assert_eq!(keys.len(), 2);
        let events = balance_events(&db, &keys).await.unwrap();
        let rows: Vec<_> = events
            .into_iter()
            .map(|e| match e.payload {
                Payload::StellarBalanceChanged(r) => r,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(rows.len(), 2);
        let usdc_row = rows.iter().find(|r| r.asset_code == "USDC").unwrap();
        assert_eq!(usdc_row.balance_stroops, 7, "the last change wins");
        assert_eq!(usdc_row.limit_stroops, Some(1_000), "the limit is kept");
        assert_eq!(usdc_row.last_modified_ledger, Some(7));
        let xlm = rows.iter().find(|r| r.asset_code == "XLM").unwrap();
        assert_eq!((xlm.balance_stroops, xlm.limit_stroops), (900, None));
        assert_eq!(xlm.asset_type, "native");
        // Every row matches what a query reads.
        let stored = stellar_balance::Entity::find().all(&db).await.unwrap();
        for r in &rows {
            let m: stellar_balance::Model = r.clone().into();
            assert!(stored.contains(&m), "{m:?} not stored");
        }
    }
}
