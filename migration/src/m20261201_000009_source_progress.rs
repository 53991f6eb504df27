//! `source.backfill_from` and `source.eta_seconds`: where a source's current backfill started
//! and the engine's estimate of the time left, so every replica can show backfill progress.

use sea_orm_migration::{prelude::*, schema::*};

/// Adds the backfill progress columns to `source`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite accepts a single change per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Source::Table)
                    .add_column(big_integer_null(Source::BackfillFrom))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Source::Table)
                    .add_column(big_integer_null(Source::EtaSeconds))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Source::Table)
                    .drop_column(Source::EtaSeconds)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Source::Table)
                    .drop_column(Source::BackfillFrom)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Source {
    Table,
    BackfillFrom,
    EtaSeconds,
}
