//! `idx_action_run_finished`: the trigger workers' retention prune finds finished
//! (`succeeded`/`dead`) `action_run` rows by status and age without scanning the queue.

use sea_orm_migration::prelude::*;

/// Creates `idx_action_run_finished` on `action_run (status, updated_at)`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_action_run_finished")
                    .table(ActionRun::Table)
                    .col(ActionRun::Status)
                    .col(ActionRun::UpdatedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_action_run_finished")
                    .table(ActionRun::Table)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum ActionRun {
    Table,
    Status,
    UpdatedAt,
}
