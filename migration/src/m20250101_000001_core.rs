//! Core tables: `source`, `config_entry`, `audit_log`, `circuit_breaker`.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates the core tables.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Source::Table)
                    .col(text(Source::Id).primary_key())
                    .col(text(Source::Kind))
                    .col(text(Source::Name))
                    .col(big_integer_null(Source::ChainId))
                    .col(big_integer_null(Source::HeadHeight))
                    .col(big_integer_null(Source::IndexedHeight))
                    .col(text_null(Source::Cursor))
                    .col(text(Source::Status))
                    .col(integer(Source::ErrorCount).default(0))
                    .col(text_null(Source::LastError))
                    .col(timestamp_with_time_zone_null(Source::LastSyncAt))
                    .col(timestamp_with_time_zone_null(Source::HeadUpdatedAt))
                    .col(boolean(Source::Paused).default(false))
                    .col(timestamp_with_time_zone(Source::CreatedAt))
                    .col(timestamp_with_time_zone(Source::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ConfigEntry::Table)
                    .col(text(ConfigEntry::Key).primary_key())
                    .col(text(ConfigEntry::Value))
                    .col(text(ConfigEntry::ValueType))
                    .col(text_null(ConfigEntry::Description))
                    .col(timestamp_with_time_zone(ConfigEntry::UpdatedAt))
                    .col(text_null(ConfigEntry::UpdatedBy))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(big_pk_auto(AuditLog::Id))
                    .col(timestamp_with_time_zone(AuditLog::At))
                    .col(text(AuditLog::Actor))
                    .col(text(AuditLog::Role))
                    .col(text(AuditLog::Action))
                    .col(text_null(AuditLog::Target))
                    .col(json_binary(AuditLog::Arguments))
                    .col(json_binary_null(AuditLog::Before))
                    .col(json_binary_null(AuditLog::After))
                    .col(text_null(AuditLog::ClientAddr))
                    .col(text(AuditLog::Outcome))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_log_at")
                    .table(AuditLog::Table)
                    .col(AuditLog::At)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_log_actor_at")
                    .table(AuditLog::Table)
                    .col(AuditLog::Actor)
                    .col(AuditLog::At)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CircuitBreaker::Table)
                    .col(text(CircuitBreaker::Name).primary_key())
                    .col(text(CircuitBreaker::State))
                    .col(integer(CircuitBreaker::FailureCount).default(0))
                    .col(timestamp_with_time_zone_null(CircuitBreaker::OpenedAt))
                    .col(timestamp_with_time_zone_null(CircuitBreaker::LastFailureAt))
                    .col(text_null(CircuitBreaker::LastError))
                    .col(timestamp_with_time_zone(CircuitBreaker::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            CircuitBreaker::Table.into_iden(),
            AuditLog::Table.into_iden(),
            ConfigEntry::Table.into_iden(),
            Source::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Source {
    Table,
    Id,
    Kind,
    Name,
    ChainId,
    HeadHeight,
    IndexedHeight,
    Cursor,
    Status,
    ErrorCount,
    LastError,
    LastSyncAt,
    HeadUpdatedAt,
    Paused,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ConfigEntry {
    Table,
    Key,
    Value,
    ValueType,
    Description,
    UpdatedAt,
    UpdatedBy,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    Actor,
    Role,
    Action,
    Target,
    Arguments,
    Before,
    After,
    ClientAddr,
    Outcome,
}

#[derive(DeriveIden)]
enum CircuitBreaker {
    Table,
    Name,
    State,
    FailureCount,
    OpenedAt,
    LastFailureAt,
    LastError,
    UpdatedAt,
}
