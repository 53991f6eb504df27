//! The unique key of `evm_event` gets the block number first:
//! `(chain, block_number, block_hash, log_index)` instead of `(chain, block_hash, log_index)`.
//! The same rows are unique (a block hash has one number), but a backfill now appends at the
//! right edge of the index instead of inserting at random places (block hashes are random),
//! which removes most of the page reads and writes of a large backfill.

use sea_orm_migration::prelude::*;

/// Replaces the unique index of `evm_event`.
#[derive(DeriveMigrationName)]
pub struct Migration;

const OLD: &str = "uq_evm_event_chain_block_log";
const NEW: &str = "uq_evm_event_chain_number_hash_log";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(NEW)
                    .table(EvmEvent::Table)
                    .col(EvmEvent::Chain)
                    .col(EvmEvent::BlockNumber)
                    .col(EvmEvent::BlockHash)
                    .col(EvmEvent::LogIndex)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(Index::drop().name(OLD).table(EvmEvent::Table).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(OLD)
                    .table(EvmEvent::Table)
                    .col(EvmEvent::Chain)
                    .col(EvmEvent::BlockHash)
                    .col(EvmEvent::LogIndex)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(Index::drop().name(NEW).table(EvmEvent::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum EvmEvent {
    Table,
    Chain,
    BlockNumber,
    BlockHash,
    LogIndex,
}
