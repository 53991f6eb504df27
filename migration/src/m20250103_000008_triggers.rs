//! `trigger` and `action_run`: event triggers with their sink settings and per-trigger
//! circuit breaker, and the durable queue of actions they matched (one row per trigger and
//! event, unique idempotency key).

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `trigger` and `action_run`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Trigger::Table)
                    .col(big_pk_auto(Trigger::Id))
                    .col(text(Trigger::Name))
                    .col(text(Trigger::Chain))
                    .col(text_null(Trigger::Contract))
                    .col(text(Trigger::EventName))
                    .col(json_binary(Trigger::Conditions))
                    .col(text(Trigger::Sink))
                    .col(text(Trigger::WebhookUrl))
                    .col(text(Trigger::Secret))
                    .col(boolean(Trigger::Enabled))
                    .col(integer(Trigger::MaxAttempts))
                    .col(integer(Trigger::FailureThreshold))
                    .col(big_integer(Trigger::RecoverySecs))
                    .col(text(Trigger::BreakerState))
                    .col(integer(Trigger::BreakerFailures))
                    .col(timestamp_with_time_zone_null(Trigger::BreakerOpenedAt))
                    .col(text_null(Trigger::BreakerLastError))
                    .col(timestamp_with_time_zone(Trigger::CreatedAt))
                    .col(timestamp_with_time_zone(Trigger::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_trigger_chain")
                    .table(Trigger::Table)
                    .col(Trigger::Chain)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ActionRun::Table)
                    .col(big_pk_auto(ActionRun::Id))
                    .col(big_integer(ActionRun::TriggerId))
                    .col(text(ActionRun::EventKey))
                    .col(text(ActionRun::IdempotencyKey).unique_key())
                    .col(json_binary(ActionRun::Payload))
                    .col(text(ActionRun::Status))
                    .col(integer(ActionRun::Attempts))
                    .col(timestamp_with_time_zone(ActionRun::NextAttemptAt))
                    .col(text_null(ActionRun::ClaimedBy))
                    .col(timestamp_with_time_zone_null(ActionRun::ClaimedAt))
                    .col(text_null(ActionRun::LastError))
                    .col(integer_null(ActionRun::ResponseStatus))
                    .col(timestamp_with_time_zone(ActionRun::CreatedAt))
                    .col(timestamp_with_time_zone(ActionRun::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_action_run_due")
                    .table(ActionRun::Table)
                    .col(ActionRun::Status)
                    .col(ActionRun::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_action_run_trigger")
                    .table(ActionRun::Table)
                    .col(ActionRun::TriggerId)
                    .col(ActionRun::Status)
                    .col(ActionRun::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ActionRun::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Trigger::Table).if_exists().to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Trigger {
    Table,
    Id,
    Name,
    Chain,
    Contract,
    EventName,
    Conditions,
    Sink,
    WebhookUrl,
    Secret,
    Enabled,
    MaxAttempts,
    FailureThreshold,
    RecoverySecs,
    BreakerState,
    BreakerFailures,
    BreakerOpenedAt,
    BreakerLastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ActionRun {
    Table,
    Id,
    TriggerId,
    EventKey,
    IdempotencyKey,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    ClaimedBy,
    ClaimedAt,
    LastError,
    ResponseStatus,
    CreatedAt,
    UpdatedAt,
}
