//! Drops `idx_stellar_balance_history_account_at`: no query reads balance history by time
//! (the readers filter by account and order by operation, which the unique
//! `(account, asset_code, asset_issuer, operation_id)` index already serves by its prefix),
//! and every history row paid for the second random B-tree insert. Measured on the Stellar
//! RPC backfill (BENCHMARKS.md).

use sea_orm_migration::prelude::*;

/// Drops the unused index (re-created by `down`).
#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEX: &str = "idx_stellar_balance_history_account_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(StellarBalanceHistory::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(StellarBalanceHistory::Table)
                    .col(StellarBalanceHistory::AccountId)
                    .col(StellarBalanceHistory::At)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum StellarBalanceHistory {
    Table,
    AccountId,
    At,
}
