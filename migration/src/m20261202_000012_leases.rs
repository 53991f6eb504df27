//! `source_lease` and `replica`: which replica runs each source (PostgreSQL scale-out).
//!
//! A lease row names its holder, a fencing token that grows by one at every change of
//! holder, and an expiry kept by the holder's renewals; every write transaction of a source
//! checks (and locks) its lease row, so a replica that lost the lease cannot commit.
//! `replica` rows are heartbeats, used to spread leases across the live replicas. SQLite
//! runs one process and never reads them, but the tables exist on both backends.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `source_lease` and `replica`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SourceLease::Table)
                    .if_not_exists()
                    .col(text(SourceLease::SourceId).primary_key())
                    .col(text(SourceLease::Holder))
                    .col(big_integer(SourceLease::Token))
                    .col(timestamp_with_time_zone(SourceLease::AcquiredAt))
                    .col(timestamp_with_time_zone(SourceLease::RenewedAt))
                    .col(timestamp_with_time_zone(SourceLease::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Replica::Table)
                    .if_not_exists()
                    .col(text(Replica::Id).primary_key())
                    .col(text(Replica::Role))
                    .col(timestamp_with_time_zone(Replica::StartedAt))
                    .col(timestamp_with_time_zone(Replica::SeenAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Replica::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(SourceLease::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SourceLease {
    Table,
    SourceId,
    Holder,
    Token,
    AcquiredAt,
    RenewedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Replica {
    Table,
    Id,
    Role,
    StartedAt,
    SeenAt,
}
