//! Balance reconciliation results: per source, account and asset, the balance the source
//! built from operations or events (`actual`) against the one the upstream serves
//! (`expected`: Horizon's account record, or the ledger entry from `getLedgerEntries`).
//! Stored in `balance_reconciliation` (replacing the rows of the account at every check),
//! read by GraphQL `balanceReconciliation` and by the sources' mismatch gauge; a sync
//! state's `last_error` is for errors only.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use orrery_entity::balance_reconciliation as rec;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, Set};

use super::horizon::AssetKey;

/// Rows per multi-row statement.
const CHUNK: usize = 500;

/// One asset of one account compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceCheck {
    /// The asset.
    pub asset: AssetKey,
    /// What the upstream serves, in stroops (a missing line is zero).
    pub expected: i64,
    /// What the source built, in stroops.
    pub actual: i64,
}

impl BalanceCheck {
    /// Whether both agree exactly.
    pub fn agrees(&self) -> bool {
        self.expected == self.actual
    }
}

/// Whether any check of an account disagrees.
pub fn disagrees(checks: &[BalanceCheck]) -> bool {
    checks.iter().any(|c| !c.agrees())
}

/// Replaces the stored checks of each `(account, checks)` by `source` (set-based: one
/// delete and one insert per chunk).
pub async fn store<C: ConnectionTrait>(
    db: &C,
    source: &str,
    checked: &[(&str, &[BalanceCheck])],
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    for chunk in checked.chunks(CHUNK) {
        let accounts: Vec<&str> = chunk.iter().map(|(a, _)| *a).collect();
        rec::Entity::delete_many()
            .filter(rec::Column::Source.eq(source))
            .filter(rec::Column::AccountId.is_in(accounts))
            .exec(db)
            .await?;
        let rows: Vec<rec::ActiveModel> = chunk
            .iter()
            .flat_map(|(account, checks)| {
                checks.iter().map(move |c| rec::ActiveModel {
                    source: Set(source.to_string()),
                    account_id: Set(account.to_string()),
                    asset_code: Set(c.asset.code.clone()),
                    asset_issuer: Set(c.asset.issuer.clone()),
                    expected_stroops: Set(c.expected),
                    actual_stroops: Set(c.actual),
                    agrees: Set(c.agrees()),
                    checked_at: Set(at),
                })
            })
            .collect();
        for rows in rows.chunks(CHUNK) {
            rec::Entity::insert_many(rows.to_vec())
                .exec_without_returning(db)
                .await?;
        }
    }
    Ok(())
}

/// Accounts with a disagreeing check by `source`.
pub async fn mismatched_accounts<C: ConnectionTrait>(
    db: &C,
    source: &str,
) -> Result<BTreeSet<String>, DbErr> {
    let ids: Vec<String> = rec::Entity::find()
        .select_only()
        .column(rec::Column::AccountId)
        .filter(rec::Column::Source.eq(source))
        .filter(rec::Column::Agrees.eq(false))
        .distinct()
        .into_tuple()
        .all(db)
        .await?;
    Ok(ids.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use orrery_migration::{Migrator, MigratorTrait};
    use sea_orm::Database;

    fn check(code: &str, expected: i64, actual: i64) -> BalanceCheck {
        BalanceCheck {
            asset: AssetKey {
                code: code.into(),
                issuer: if code == "XLM" { "" } else { "GI" }.into(),
            },
            expected,
            actual,
        }
    }

    #[tokio::test]
    async fn checks_replace_the_accounts_previous_ones() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let now = Utc::now();
        let bad = [check("XLM", 10, 9), check("USDC", 5, 5)];
        let good = [check("XLM", 7, 7)];
        store(&db, "stellar", &[("GA", &bad), ("GB", &good)], now)
            .await
            .unwrap();
        // Another source's checks are its own.
        store(&db, "stellar:rpc", &[("GB", &bad)], now)
            .await
            .unwrap();
        let m = mismatched_accounts(&db, "stellar").await.unwrap();
        assert_eq!(m.into_iter().collect::<Vec<_>>(), ["GA"]);
        let row = rec::Entity::find()
            .filter(rec::Column::Source.eq("stellar"))
            .filter(rec::Column::AssetCode.eq("XLM"))
            .filter(rec::Column::AccountId.eq("GA"))
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.expected_stroops, row.actual_stroops, row.agrees),
            (10, 9, false)
        );
        // The next check of GA agrees: its rows are replaced.
        store(&db, "stellar", &[("GA", &good)], now).await.unwrap();
        assert!(mismatched_accounts(&db, "stellar")
            .await
            .unwrap()
            .is_empty());
        let ga = rec::Entity::find()
            .filter(rec::Column::Source.eq("stellar"))
            .filter(rec::Column::AccountId.eq("GA"))
            .all(&db)
            .await
            .unwrap();
        assert_eq!(ga.len(), 1);
        assert_eq!(
            mismatched_accounts(&db, "stellar:rpc").await.unwrap().len(),
            1
        );
    }
}
