//! `source_command`: operator intents for running sources (rewind, restart), written by admin
//! mutations and applied by whichever replica's supervisor runs the source.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `source_command`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SourceCommand::Table)
                    .col(big_pk_auto(SourceCommand::Id))
                    .col(text(SourceCommand::SourceId))
                    .col(text(SourceCommand::Command))
                    .col(json_binary(SourceCommand::Arguments))
                    .col(text(SourceCommand::RequestedBy))
                    .col(timestamp_with_time_zone(SourceCommand::CreatedAt))
                    .col(timestamp_with_time_zone_null(SourceCommand::AppliedAt))
                    .col(text_null(SourceCommand::Result))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_source_command_pending")
                    .table(SourceCommand::Table)
                    .col(SourceCommand::SourceId)
                    .col(SourceCommand::AppliedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(SourceCommand::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum SourceCommand {
    Table,
    Id,
    SourceId,
    Command,
    Arguments,
    RequestedBy,
    CreatedAt,
    AppliedAt,
    Result,
}
