//! `stellar_holding`: one row per `(account, asset)` that has balance history, with an
//! integer id; `stellar_balance_history` gains `holding_id` and its uniqueness moves from the
//! text key `(account_id, asset_code, asset_issuer, operation_id)` (two 56-character
//! addresses, ~130 bytes per index entry) to `(holding_id, operation_id)` (~20 bytes).
//!
//! Every history row paid for an insert into that unique index at one of thousands of places
//! (one per holding), and with six times fewer entries per page the index split pages,
//! compared text and dirtied pages for the WAL most of the time a Stellar RPC backfill spent
//! writing (BENCHMARKS.md). The text columns stay on the history rows, so rows read as
//! before; readers that select by account go through `stellar_holding` (its unique
//! `(account_id, asset_code, asset_issuer)` index serves a lookup by account).
//!
//! Existing history gets its holdings and ids here. The column has no foreign key (SQLite
//! cannot add one to an existing table); the writers take the ids from `stellar_holding`
//! in the transaction that writes the rows. On PostgreSQL the column's default, needed only
//! to add it to a filled table, is dropped again.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `stellar_holding`, fills `stellar_balance_history.holding_id`, swaps the indexes.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The history index this migration replaces (created by `m20250101_000002_stellar`).
const OLD_UNIQUE: &str = "uq_stellar_balance_history_account_asset_op";
/// The history index it creates.
const NEW_UNIQUE: &str = "uq_stellar_balance_history_holding_op";
/// The holdings' unique key.
const HOLDING_UNIQUE: &str = "uq_stellar_holding_account_asset";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(StellarHolding::Table)
                    .col(big_pk_auto(StellarHolding::Id))
                    .col(text(StellarHolding::AccountId))
                    .col(text(StellarHolding::AssetCode))
                    .col(text(StellarHolding::AssetIssuer))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(HOLDING_UNIQUE)
                    .table(StellarHolding::Table)
                    .col(StellarHolding::AccountId)
                    .col(StellarHolding::AssetCode)
                    .col(StellarHolding::AssetIssuer)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(StellarBalanceHistory::Table)
                    .add_column(big_integer(StellarBalanceHistory::HoldingId).default(0))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO stellar_holding (account_id, asset_code, asset_issuer) \
             SELECT DISTINCT account_id, asset_code, asset_issuer FROM stellar_balance_history \
             ORDER BY account_id, asset_code, asset_issuer",
        )
        .await?;
        db.execute_unprepared(
            "UPDATE stellar_balance_history SET holding_id = (SELECT h.id FROM stellar_holding h \
             WHERE h.account_id = stellar_balance_history.account_id \
             AND h.asset_code = stellar_balance_history.asset_code \
             AND h.asset_issuer = stellar_balance_history.asset_issuer)",
        )
        .await?;
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            db.execute_unprepared(
                "ALTER TABLE stellar_balance_history ALTER COLUMN holding_id DROP DEFAULT",
            )
            .await?;
        }
        manager.create_index(new_unique()).await?;
        manager.drop_index(drop_history_index(OLD_UNIQUE)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_index(old_unique()).await?;
        manager.drop_index(drop_history_index(NEW_UNIQUE)).await?;
        manager
            .alter_table(
                Table::alter()
                    .table(StellarBalanceHistory::Table)
                    .drop_column(StellarBalanceHistory::HoldingId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(StellarHolding::Table).to_owned())
            .await
    }
}

/// The text-keyed unique index on history (before this migration).
fn old_unique() -> IndexCreateStatement {
    Index::create()
        .name(OLD_UNIQUE)
        .table(StellarBalanceHistory::Table)
        .col(StellarBalanceHistory::AccountId)
        .col(StellarBalanceHistory::AssetCode)
        .col(StellarBalanceHistory::AssetIssuer)
        .col(StellarBalanceHistory::OperationId)
        .unique()
        .to_owned()
}

/// The integer-keyed unique index on history (after it).
fn new_unique() -> IndexCreateStatement {
    Index::create()
        .name(NEW_UNIQUE)
        .table(StellarBalanceHistory::Table)
        .col(StellarBalanceHistory::HoldingId)
        .col(StellarBalanceHistory::OperationId)
        .unique()
        .to_owned()
}

/// Drops the history index `name`.
fn drop_history_index(name: &str) -> IndexDropStatement {
    Index::drop()
        .name(name)
        .table(StellarBalanceHistory::Table)
        .to_owned()
}

#[derive(DeriveIden)]
enum StellarHolding {
    Table,
    Id,
    AccountId,
    AssetCode,
    AssetIssuer,
}

#[derive(DeriveIden)]
enum StellarBalanceHistory {
    Table,
    HoldingId,
    AccountId,
    AssetCode,
    AssetIssuer,
    OperationId,
}
