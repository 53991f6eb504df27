//! Distribution tables: `distribution`, `distribution_recipient`, `distribution_event`.
//!
//! Recipients and events belong to a distribution and are deleted with it.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates the distribution tables.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Distribution::Table)
                    .col(big_pk_auto(Distribution::Id))
                    .col(text(Distribution::Name))
                    .col(text(Distribution::AssetCode))
                    .col(text(Distribution::AssetIssuer))
                    .col(text(Distribution::SourceAccount))
                    .col(big_integer(Distribution::TotalBudgetStroops))
                    .col(text(Distribution::Status))
                    .col(boolean_null(Distribution::RulesPassed))
                    .col(json_binary_null(Distribution::RulesResult))
                    .col(text_null(Distribution::CreatedBy))
                    .col(timestamp_with_time_zone(Distribution::CreatedAt))
                    .col(timestamp_with_time_zone(Distribution::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_distribution_status")
                    .table(Distribution::Table)
                    .col(Distribution::Status)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(DistributionRecipient::Table)
                    .col(big_pk_auto(DistributionRecipient::Id))
                    .col(big_integer(DistributionRecipient::DistributionId))
                    .col(text(DistributionRecipient::AccountId))
                    .col(big_integer(DistributionRecipient::AmountStroops))
                    .col(text(DistributionRecipient::Status))
                    .col(text_null(DistributionRecipient::Reason))
                    .col(big_integer_null(DistributionRecipient::PaymentOperationId))
                    .col(text_null(DistributionRecipient::TransactionHash))
                    .col(timestamp_with_time_zone_null(DistributionRecipient::PaidAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_distribution_recipient_distribution")
                            .from(
                                DistributionRecipient::Table,
                                DistributionRecipient::DistributionId,
                            )
                            .to(Distribution::Table, Distribution::Id)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_distribution_recipient_distribution_account")
                    .table(DistributionRecipient::Table)
                    .col(DistributionRecipient::DistributionId)
                    .col(DistributionRecipient::AccountId)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(DistributionEvent::Table)
                    .col(big_pk_auto(DistributionEvent::Id))
                    .col(big_integer(DistributionEvent::DistributionId))
                    .col(text_null(DistributionEvent::FromStatus))
                    .col(text(DistributionEvent::ToStatus))
                    .col(text_null(DistributionEvent::Reason))
                    .col(text_null(DistributionEvent::Actor))
                    .col(timestamp_with_time_zone(DistributionEvent::At))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_distribution_event_distribution")
                            .from(DistributionEvent::Table, DistributionEvent::DistributionId)
                            .to(Distribution::Table, Distribution::Id)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_distribution_event_distribution_at")
                    .table(DistributionEvent::Table)
                    .col(DistributionEvent::DistributionId)
                    .col(DistributionEvent::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            DistributionEvent::Table.into_iden(),
            DistributionRecipient::Table.into_iden(),
            Distribution::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Distribution {
    Table,
    Id,
    Name,
    AssetCode,
    AssetIssuer,
    SourceAccount,
    TotalBudgetStroops,
    Status,
    RulesPassed,
    RulesResult,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum DistributionRecipient {
    Table,
    Id,
    DistributionId,
    AccountId,
    AmountStroops,
    Status,
    Reason,
    PaymentOperationId,
    TransactionHash,
    PaidAt,
}

#[derive(DeriveIden)]
enum DistributionEvent {
    Table,
    Id,
    DistributionId,
    FromStatus,
    ToStatus,
    Reason,
    Actor,
    At,
}
