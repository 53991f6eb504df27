//! `quarantine`: records an upstream served that cannot be stored as they are (a permanent
//! data error on one record). The source stores the record here, in the same transaction as
//! its cursor, and moves on; `orrery quarantine replay` decodes them again after a fix.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `quarantine`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Quarantine::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Quarantine::Id))
                    .col(text(Quarantine::Source))
                    .col(text(Quarantine::Kind))
                    .col(text(Quarantine::Position))
                    .col(text(Quarantine::Payload))
                    .col(text(Quarantine::Error))
                    .col(timestamp_with_time_zone(Quarantine::QuarantinedAt))
                    .col(timestamp_with_time_zone_null(Quarantine::ReplayedAt))
                    .col(text_null(Quarantine::ReplayError))
                    .to_owned(),
            )
            .await?;
        // One row per record: a record served again (a retried page, a restart) is not
        // quarantined twice.
        manager
            .create_index(
                Index::create()
                    .name("idx_quarantine_record")
                    .table(Quarantine::Table)
                    .col(Quarantine::Source)
                    .col(Quarantine::Kind)
                    .col(Quarantine::Position)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Quarantine::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Quarantine {
    Table,
    Id,
    Source,
    Kind,
    Position,
    Payload,
    Error,
    QuarantinedAt,
    ReplayedAt,
    ReplayError,
}
