//! The write half of the RPC token-event source: holders, balance history and current
//! balances of one [`RpcBatch`], set-based, inside the engine's transaction (which also
//! stores the source's `getEvents` cursor), so a crash never applies an event twice or
//! loses one.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use orrery_entity::{stellar_balance, stellar_sync_state};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    Set, Statement,
};

use super::batch::{HistoryRow, RpcBatch};
use crate::stellar::holdings::{self, Holdings};
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
        let mut lap = Laps::start();
        crate::stellar::store::ensure_accounts(txn, &batch.accounts, false).await?;
        let accounts_ms = lap.ms();
        insert_history(txn, batch).await?;
        let history_ms = lap.ms();
        upsert_balances(txn, batch).await?;
        let balances_ms = lap.ms();
        mark_synced(txn, batch).await?;
        store_reconciliation(txn, batch).await?;
        let synced_ms = lap.ms();
        // The committed rows (limits and ledgers as stored), read back in the transaction.
        let keys = batch
            .balances
            .iter()
            .map(|b| (b.account.clone(), b.asset.clone()))
            .collect();
        let events = crate::stellar::balance_events::balance_events(txn, &keys).await?;
        tracing::debug!(
            history = batch.history.len(),
            balances = batch.balances.len(),
            accounts_ms,
            history_ms,
            balances_ms,
            synced_ms,
            read_back_ms = lap.ms(),
            "stellar rpc: batch written"
        );
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

/// Milliseconds between successive calls (the writer's phases, in its debug line).
struct Laps(std::time::Instant);

impl Laps {
    fn start() -> Self {
        Self(std::time::Instant::now())
    }

    /// Milliseconds since the previous call (or the start).
    fn ms(&mut self) -> u64 {
        let now = std::time::Instant::now();
        let ms = (now - self.0).as_millis() as u64;
        self.0 = now;
        ms
    }
}

/// History rows per bulk statement. A batch's rows travel as one JSON text parameter
/// (`jsonb_each` on SQLite, `jsonb_array_elements` on PostgreSQL) instead of nine bound values
/// per row: building and binding those values was most of the writer's CPU time.
const BULK_ROWS: usize = 10_000;

/// The history columns, in the order of a row's JSON array.
const HISTORY_COLUMNS: &str = "account_id, asset_code, asset_issuer, operation_id, ledger, at, \
    delta_stroops, balance_stroops, holding_id";

/// A row whose `(holding, toid)` exists (the TOID's events were split over two batches)
/// adds its delta and takes the newer balance.
const HISTORY_CONFLICT: &str = "ON CONFLICT (holding_id, operation_id) \
    DO UPDATE SET delta_stroops = stellar_balance_history.delta_stroops + excluded.delta_stroops, \
    balance_stroops = excluded.balance_stroops";

/// How a bulk history insert treats a row whose key is stored already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnStored {
    /// Merge into it ([`HISTORY_CONFLICT`]).
    Merge,
    /// Skip it (SQLite `INSERT OR IGNORE`, PostgreSQL `DO NOTHING`); the caller counts
    /// the rows written and refuses a batch with a skipped one. (The writer still keeps a
    /// statement journal with this form: no speed gain was measured, see BENCHMARKS.md.)
    Skip,
}

/// The bulk history insert for `backend`, reading the rows from `$1`.
fn history_sql(backend: DbBackend, on_stored: OnStored) -> Result<String, DbErr> {
    let select = match backend {
        // `jsonb_each`: each row's array stays in SQLite's binary JSON (`json_each` renders
        // it as text, which `->>` then parses again). `WHERE true`: an upsert's SELECT
        // needs a WHERE clause in SQLite's grammar. On PostgreSQL, `jsonb` for the same
        // reason: a `json` element is text that every `->>` parses again up to its index
        // (64,000 rows went in 15-30% faster with `jsonb`, BENCHMARKS.md).
        DbBackend::Sqlite => "SELECT value->>0, value->>1, value->>2, value->>3, value->>4, \
            value->>5, value->>6, value->>7, value->>8 FROM jsonb_each(?) WHERE true"
            .to_string(),
        DbBackend::Postgres => "SELECT e->>0, e->>1, e->>2, (e->>3)::bigint, (e->>4)::bigint, \
            (e->>5)::timestamptz, (e->>6)::bigint, (e->>7)::bigint, (e->>8)::bigint \
            FROM jsonb_array_elements($1::jsonb) AS e"
            .to_string(),
        other => {
            return Err(DbErr::Custom(format!(
                "stellar rpc: {other:?} is not a supported database"
            )))
        }
    };
    let table = "stellar_balance_history";
    Ok(match (on_stored, backend) {
        (OnStored::Merge, _) => {
            format!("INSERT INTO {table} ({HISTORY_COLUMNS}) {select} {HISTORY_CONFLICT}")
        }
        (OnStored::Skip, DbBackend::Sqlite) => {
            format!("INSERT OR IGNORE INTO {table} ({HISTORY_COLUMNS}) {select}")
        }
        (OnStored::Skip, _) => {
            format!("INSERT INTO {table} ({HISTORY_COLUMNS}) {select} ON CONFLICT DO NOTHING")
        }
    })
}

/// `rows` as a JSON array of `[account, code, issuer, toid, ledger, at, delta, balance,
/// holding]`;
/// `at` is written as sqlx writes a `DateTime<Utc>` to SQLite (RFC 3339, `+00:00`), which
/// PostgreSQL reads as a `timestamptz`.
fn history_json(rows: &[&HistoryRow], holdings: &Holdings) -> Result<String, DbErr> {
    let mut out = Vec::with_capacity(rows.len() * 200);
    out.push(b'[');
    let mut at: Option<(DateTime<Utc>, String)> = None;
    for (i, r) in rows.iter().enumerate() {
        if at.as_ref().is_none_or(|(t, _)| *t != r.at) {
            at = Some((r.at, r.at.to_rfc3339_opts(SecondsFormat::AutoSi, false)));
        }
        let text = at.as_ref().map_or("", |(_, s)| s.as_str());
        if i > 0 {
            out.push(b',');
        }
        let row = (
            &r.account,
            &r.asset.code,
            &r.asset.issuer,
            r.toid,
            r.ledger,
            text,
            r.delta,
            r.balance,
            holdings.id(&r.account, &r.asset)?,
        );
        serde_json::to_writer(&mut out, &row)
            .map_err(|e| DbErr::Custom(format!("stellar rpc: history row as JSON: {e}")))?;
    }
    out.push(b']');
    String::from_utf8(out).map_err(|e| DbErr::Custom(format!("stellar rpc: history JSON: {e}")))
}

/// Inserts the batch's history rows. Only rows of the batch's first TOID can be stored
/// already (its events began in the previous batch when a page ended inside the operation):
/// those are merged ([`HISTORY_CONFLICT`]). Every other row is new, since the stored cursor
/// commits with the rows; one that is not fails the batch instead of being counted twice.
async fn insert_history(txn: &DatabaseTransaction, batch: &RpcBatch) -> Result<(), DbErr> {
    let backend = txn.get_database_backend();
    let first = batch.history.iter().map(|r| r.toid).min();
    let holdings = holdings::resolve(
        txn,
        batch.history.iter().map(|r| (r.account.as_str(), &r.asset)),
    )
    .await?;
    let (merged, fresh): (Vec<&HistoryRow>, Vec<&HistoryRow>) =
        batch.history.iter().partition(|r| Some(r.toid) == first);
    let merge_sql = history_sql(backend, OnStored::Merge)?;
    for chunk in merged.chunks(BULK_ROWS) {
        let stmt = Statement::from_sql_and_values(
            backend,
            &merge_sql,
            [history_json(chunk, &holdings)?.into()],
        );
        txn.execute_raw(stmt).await?;
    }
    let skip_sql = history_sql(backend, OnStored::Skip)?;
    for chunk in fresh.chunks(BULK_ROWS) {
        let stmt = Statement::from_sql_and_values(
            backend,
            &skip_sql,
            [history_json(chunk, &holdings)?.into()],
        );
        let written = txn.execute_raw(stmt).await?.rows_affected();
        if written != chunk.len() as u64 {
            return Err(DbErr::Custom(format!(
                "stellar rpc: {} of {} balance history rows (TOIDs {}..={}) are stored already, \
                 although the stored cursor is before them; not writing them twice",
                chunk.len() as u64 - written,
                chunk.len(),
                chunk.first().map_or(0, |r| r.toid),
                chunk.last().map_or(0, |r| r.toid),
            )));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stellar::horizon::AssetKey;
    use orrery_entity::stellar_balance_history;
    use orrery_migration::{Migrator, MigratorTrait};
    use sea_orm::{Database, QueryOrder, TransactionTrait};

    fn row(account: &str, toid: i64, delta: i64, balance: i64, at: DateTime<Utc>) -> HistoryRow {
        HistoryRow {
            account: account.into(),
            asset: AssetKey {
                code: "UBEC".into(),
                issuer: "GISSUER\"quoted".into(),
            },
            toid,
            ledger: toid >> 32,
            at,
            delta,
            balance,
        }
    }

    #[tokio::test]
    async fn bulk_history_rows_read_back_as_written_and_split_toids_merge() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let t1 = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t2 = t1 + chrono::Duration::milliseconds(1_500);
        let first = RpcBatch::of_history(vec![
            row("GA", 5 << 32, -100, i64::MAX - 1, t1),
            row("GB", 5 << 32, 100, 100, t1),
            row("GA", 6 << 32, -7, -107, t2),
        ]);
        // The second batch ends the TOID the first one began for GA.
        let second = RpcBatch::of_history(vec![row("GA", 6 << 32, -3, -110, t2)]);
        for b in [&first, &second] {
            let txn = db.begin().await.unwrap();
            insert_history(&txn, b).await.unwrap();
            txn.commit().await.unwrap();
        }
        let rows = stellar_balance_history::Entity::find()
            .order_by_asc(stellar_balance_history::Column::Id)
            .all(&db)
            .await
            .unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.account_id.as_str(),
                    r.asset_code.as_str(),
                    r.asset_issuer.as_str(),
                    r.operation_id,
                    r.ledger,
                    r.at,
                    r.delta_stroops,
                    r.balance_stroops,
                )
            })
            .collect();
        let issuer = "GISSUER\"quoted";
        assert_eq!(
            got,
            vec![
                (
                    "GA",
                    "UBEC",
                    issuer,
                    5 << 32,
                    Some(5),
                    t1,
                    -100,
                    Some(i64::MAX - 1)
                ),
                ("GB", "UBEC", issuer, 5 << 32, Some(5), t1, 100, Some(100)),
                ("GA", "UBEC", issuer, 6 << 32, Some(6), t2, -10, Some(-110)),
            ]
        );
        // A row past the batch's first TOID that is stored already is refused, not merged.
        let again = RpcBatch::of_history(vec![
            row("GC", 7 << 32, 1, 1, t2),
            row("GA", 8 << 32, 2, -108, t2),
            row("GB", 8 << 32, 5, 105, t2),
        ]);
        let txn = db.begin().await.unwrap();
        insert_history(&txn, &again).await.unwrap();
        txn.commit().await.unwrap();
        let twice = RpcBatch::of_history(vec![
            row("GD", 7 << 32, 1, 1, t2),
            row("GB", 8 << 32, 5, 110, t2),
        ]);
        let txn = db.begin().await.unwrap();
        let err = insert_history(&txn, &twice).await.unwrap_err().to_string();
        assert!(err.contains("1 of 1 balance history rows"), "{err}");
        txn.rollback().await.unwrap();
        let b = stellar_balance_history::Entity::find()
            .filter(stellar_balance_history::Column::AccountId.eq("GB"))
            .filter(stellar_balance_history::Column::OperationId.eq(8i64 << 32))
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((b.delta_stroops, b.balance_stroops), (5, Some(105)));
    }

    #[tokio::test]
    async fn history_json_has_one_array_per_row() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let at = Utc::now();
        let rows = [row("GA", 1, 2, 3, at), row("GB", 4, 5, 6, at)];
        let ids = holdings::resolve(&db, rows.iter().map(|r| (r.account.as_str(), &r.asset)))
            .await
            .unwrap();
        let json = history_json(&rows.iter().collect::<Vec<_>>(), &ids).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(2));
        assert_eq!(v[1][0], "GB");
        assert_eq!(v[1][7], 6);
        assert_eq!(
            v[0][5].as_str(),
            Some(at.to_rfc3339_opts(SecondsFormat::AutoSi, false).as_str())
        );
        assert_eq!(v[1][8], ids.id("GB", &rows[1].asset).unwrap());
        let unresolved = [row("GC", 7, 1, 1, at)];
        let err = history_json(&unresolved.iter().collect::<Vec<_>>(), &ids).unwrap_err();
        assert!(err.to_string().contains("GC"), "{err}");
        assert_eq!(history_json(&[], &ids).unwrap(), "[]");
    }
}
