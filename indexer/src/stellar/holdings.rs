//! `stellar_holding` ids: the integer each `(holder, asset)` pair's balance history rows carry
//! (their unique key is `(holding_id, operation_id)`, a compact index entry instead of two
//! 56-character addresses; see the migration `m20261206_000021_balance_holdings`).
//!
//! The ids are read and, for new pairs, assigned inside the writer's transaction, so a batch
//! that rolls back takes its new holdings with it and nothing is cached across transactions.

use std::collections::{HashMap, HashSet};

use orrery_entity::stellar_holding;
use sea_orm::sea_query::{OnConflict, Query, SelectStatement};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};

use super::horizon::AssetKey;

/// Rows per multi-row statement (three bound values each).
const CHUNK: usize = 300;

/// Holding ids by asset, then holder.
#[derive(Debug, Default)]
pub struct Holdings(HashMap<AssetKey, HashMap<String, i64>>);

impl Holdings {
    /// The id of `holder`'s holding of `asset`: an error naming the pair when it was not
    /// resolved (a writer bug, never a guess).
    pub fn id(&self, holder: &str, asset: &AssetKey) -> Result<i64, DbErr> {
        self.0
            .get(asset)
            .and_then(|m| m.get(holder))
            .copied()
            .ok_or_else(|| {
                DbErr::Custom(format!(
                    "stellar: no stellar_holding id resolved for {holder} in {}",
                    asset.canonical()
                ))
            })
    }

    fn contains(&self, holder: &str, asset: &AssetKey) -> bool {
        self.0.get(asset).is_some_and(|m| m.contains_key(holder))
    }

    fn insert(&mut self, row: stellar_holding::Model) {
        let asset = AssetKey {
            code: row.asset_code,
            issuer: row.asset_issuer,
        };
        self.0
            .entry(asset)
            .or_default()
            .insert(row.account_id, row.id);
    }

    /// Number of pairs resolved.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.values().map(HashMap::len).sum()
    }
}

/// The holding ids of `pairs` (holder, asset; repeats allowed), storing the pairs that have
/// none yet, in the order they first appear.
pub async fn resolve<'a, C: ConnectionTrait>(
    db: &C,
    pairs: impl IntoIterator<Item = (&'a str, &'a AssetKey)>,
) -> Result<Holdings, DbErr> {
    let mut wanted: Vec<(&str, &AssetKey)> = Vec::new();
    let mut seen: HashSet<(&str, &AssetKey)> = HashSet::new();
    for pair in pairs {
        if seen.insert(pair) {
            wanted.push(pair);
        }
    }
    let mut out = Holdings::default();
    load(db, &wanted, &mut out).await?;
    let missing: Vec<(&str, &AssetKey)> = wanted
        .iter()
        .copied()
        .filter(|(h, a)| !out.contains(h, a))
        .collect();
    if missing.is_empty() {
        return Ok(out);
    }
    for chunk in missing.chunks(CHUNK) {
        let rows = chunk.iter().map(|(h, a)| stellar_holding::ActiveModel {
            account_id: Set(h.to_string()),
            asset_code: Set(a.code.clone()),
            asset_issuer: Set(a.issuer.clone()),
            ..Default::default()
        });
        stellar_holding::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([
                    stellar_holding::Column::AccountId,
                    stellar_holding::Column::AssetCode,
                    stellar_holding::Column::AssetIssuer,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    load(db, &missing, &mut out).await?;
    for (h, a) in &missing {
        out.id(h, a)?;
    }
    Ok(out)
}

/// Adds the stored holdings of the holders in `pairs` to `out`.
async fn load<C: ConnectionTrait>(
    db: &C,
    pairs: &[(&str, &AssetKey)],
    out: &mut Holdings,
) -> Result<(), DbErr> {
    let mut holders: Vec<&str> = pairs.iter().map(|(h, _)| *h).collect();
    holders.sort_unstable();
    holders.dedup();
    for chunk in holders.chunks(CHUNK) {
        let rows = stellar_holding::Entity::find()
            .filter(stellar_holding::Column::AccountId.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        for row in rows {
            out.insert(row);
        }
    }
    Ok(())
}

/// `SELECT id FROM stellar_holding WHERE account_id IN (holders)`: the holdings of
/// `holders`, for selecting their history rows by `holding_id`.
pub fn of_holders<'a>(holders: impl IntoIterator<Item = &'a str>) -> SelectStatement {
    Query::select()
        .column(stellar_holding::Column::Id)
        .from(stellar_holding::Entity)
        .and_where(stellar_holding::Column::AccountId.is_in(holders))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orrery_migration::{Migrator, MigratorTrait};
    use sea_orm::{Database, TransactionTrait};

    fn asset(code: &str, issuer: &str) -> AssetKey {
        AssetKey {
            code: code.into(),
            issuer: issuer.into(),
        }
    }

    #[tokio::test]
    async fn pairs_get_stable_ids_and_a_rolled_back_pair_is_gone() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let xlm = asset("XLM", "");
        let ubec = asset("UBEC", "GISSUER");
        let txn = db.begin().await.unwrap();
        let first = resolve(
            &txn,
            [("GA", &xlm), ("GB", &xlm), ("GA", &xlm), ("GA", &ubec)],
        )
        .await
        .unwrap();
        assert_eq!(first.len(), 3);
        txn.commit().await.unwrap();
        let (a, b, u) = (
            first.id("GA", &xlm).unwrap(),
            first.id("GB", &xlm).unwrap(),
            first.id("GA", &ubec).unwrap(),
        );
        assert!(a < b && b < u, "ids in order of first appearance");

        let txn = db.begin().await.unwrap();
        let again = resolve(&txn, [("GA", &ubec), ("GC", &xlm)]).await.unwrap();
        assert_eq!(again.id("GA", &ubec).unwrap(), u);
        assert!(again.id("GC", &xlm).unwrap() > u);
        txn.rollback().await.unwrap();

        let after = resolve(&db, [("GB", &xlm)]).await.unwrap();
        assert_eq!(after.id("GB", &xlm).unwrap(), b);
        let err = after.id("GC", &xlm).unwrap_err().to_string();
        assert!(err.contains("GC in native"), "{err}");
        let err = after.id("GB", &ubec).unwrap_err().to_string();
        assert!(err.contains("GB in UBEC:GISSUER"), "{err}");
        assert_eq!(
            stellar_holding::Entity::find()
                .all(&db)
                .await
                .unwrap()
                .len(),
            3,
            "the rolled-back holding is not stored"
        );
    }
}
