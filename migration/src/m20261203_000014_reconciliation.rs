//! `balance_reconciliation`: balance checks get their own table. Before, a mismatch was
//! written into `stellar_sync_state.last_error` as a `balance mismatch: ...` string and
//! parsed back by the API; those strings are cleared here (the next check of each account
//! fills the table), so `last_error` means errors only.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `balance_reconciliation` and clears the old mismatch strings.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(BalanceReconciliation::Table)
                    .if_not_exists()
                    .col(text(BalanceReconciliation::Source))
                    .col(text(BalanceReconciliation::AccountId))
                    .col(text(BalanceReconciliation::AssetCode))
                    .col(text(BalanceReconciliation::AssetIssuer))
                    .col(big_integer(BalanceReconciliation::ExpectedStroops))
                    .col(big_integer(BalanceReconciliation::ActualStroops))
                    .col(boolean(BalanceReconciliation::Agrees))
                    .col(timestamp_with_time_zone(BalanceReconciliation::CheckedAt))
                    .primary_key(
                        Index::create()
                            .col(BalanceReconciliation::Source)
                            .col(BalanceReconciliation::AccountId)
                            .col(BalanceReconciliation::AssetCode)
                            .col(BalanceReconciliation::AssetIssuer),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_balance_reconciliation_disagreeing")
                    .table(BalanceReconciliation::Table)
                    .col(BalanceReconciliation::Agrees)
                    .col(BalanceReconciliation::AccountId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table(StellarSyncState::Table)
                    .value(StellarSyncState::LastError, Option::<String>::None)
                    .and_where(Expr::col(StellarSyncState::LastError).like("balance mismatch%"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(BalanceReconciliation::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum BalanceReconciliation {
    Table,
    Source,
    AccountId,
    AssetCode,
    AssetIssuer,
    ExpectedStroops,
    ActualStroops,
    Agrees,
    CheckedAt,
}

#[derive(DeriveIden)]
enum StellarSyncState {
    Table,
    LastError,
}
