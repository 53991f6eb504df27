//! EVM tables: `evm_block`, `evm_event` and the ERC-8004 registries
//! (`erc8004_agent`, `erc8004_feedback`, `erc8004_validation`).
//!
//! `uint256` values are stored as decimal strings (TEXT).

use sea_orm_migration::{prelude::*, schema::*};

/// Creates the EVM tables.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EvmBlock::Table)
                    .col(text(EvmBlock::Chain))
                    .col(big_integer(EvmBlock::Number))
                    .col(text(EvmBlock::Hash))
                    .col(text(EvmBlock::ParentHash))
                    .col(timestamp_with_time_zone(EvmBlock::Timestamp))
                    .primary_key(
                        Index::create()
                            .name("pk_evm_block")
                            .col(EvmBlock::Chain)
                            .col(EvmBlock::Number),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_evm_block_chain_hash")
                    .table(EvmBlock::Table)
                    .col(EvmBlock::Chain)
                    .col(EvmBlock::Hash)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EvmEvent::Table)
                    .col(big_pk_auto(EvmEvent::Id))
                    .col(text(EvmEvent::Chain))
                    .col(big_integer(EvmEvent::BlockNumber))
                    .col(text(EvmEvent::BlockHash))
                    .col(text(EvmEvent::TxHash))
                    .col(integer(EvmEvent::LogIndex))
                    .col(text(EvmEvent::Contract))
                    .col(text(EvmEvent::Name))
                    .col(json_binary(EvmEvent::Args))
                    .col(timestamp_with_time_zone(EvmEvent::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_evm_event_chain_block_log")
                    .table(EvmEvent::Table)
                    .col(EvmEvent::Chain)
                    .col(EvmEvent::BlockHash)
                    .col(EvmEvent::LogIndex)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_evm_event_contract_name_block")
                    .table(EvmEvent::Table)
                    .col(EvmEvent::Chain)
                    .col(EvmEvent::Contract)
                    .col(EvmEvent::Name)
                    .col(EvmEvent::BlockNumber)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_evm_event_chain_block")
                    .table(EvmEvent::Table)
                    .col(EvmEvent::Chain)
                    .col(EvmEvent::BlockNumber)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_evm_event_tx")
                    .table(EvmEvent::Table)
                    .col(EvmEvent::TxHash)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Erc8004Agent::Table)
                    .col(text(Erc8004Agent::Chain))
                    .col(text(Erc8004Agent::AgentId))
                    .col(text(Erc8004Agent::Owner))
                    .col(text_null(Erc8004Agent::Uri))
                    .col(json_binary_null(Erc8004Agent::Metadata))
                    .col(big_integer(Erc8004Agent::RegisteredBlock))
                    .col(big_integer(Erc8004Agent::UpdatedBlock))
                    .col(timestamp_with_time_zone(Erc8004Agent::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .name("pk_erc8004_agent")
                            .col(Erc8004Agent::Chain)
                            .col(Erc8004Agent::AgentId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_erc8004_agent_chain_owner")
                    .table(Erc8004Agent::Table)
                    .col(Erc8004Agent::Chain)
                    .col(Erc8004Agent::Owner)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Erc8004Feedback::Table)
                    .col(big_pk_auto(Erc8004Feedback::Id))
                    .col(text(Erc8004Feedback::Chain))
                    .col(text(Erc8004Feedback::AgentId))
                    .col(text(Erc8004Feedback::ClientAddress))
                    .col(text_null(Erc8004Feedback::FeedbackIndex))
                    .col(integer(Erc8004Feedback::Score))
                    .col(text_null(Erc8004Feedback::Tag1))
                    .col(text_null(Erc8004Feedback::Tag2))
                    .col(text_null(Erc8004Feedback::Uri))
                    .col(text_null(Erc8004Feedback::FileHash))
                    .col(boolean(Erc8004Feedback::Revoked).default(false))
                    .col(big_integer(Erc8004Feedback::BlockNumber))
                    .col(text(Erc8004Feedback::TxHash))
                    .col(integer(Erc8004Feedback::LogIndex))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_erc8004_feedback_chain_tx_log")
                    .table(Erc8004Feedback::Table)
                    .col(Erc8004Feedback::Chain)
                    .col(Erc8004Feedback::TxHash)
                    .col(Erc8004Feedback::LogIndex)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_erc8004_feedback_chain_agent")
                    .table(Erc8004Feedback::Table)
                    .col(Erc8004Feedback::Chain)
                    .col(Erc8004Feedback::AgentId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Erc8004Validation::Table)
                    .col(big_pk_auto(Erc8004Validation::Id))
                    .col(text(Erc8004Validation::Chain))
                    .col(text(Erc8004Validation::RequestHash))
                    .col(text(Erc8004Validation::AgentId))
                    .col(text(Erc8004Validation::ValidatorAddress))
                    .col(text_null(Erc8004Validation::RequestUri))
                    .col(integer_null(Erc8004Validation::Response))
                    .col(text_null(Erc8004Validation::ResponseUri))
                    .col(text_null(Erc8004Validation::Tag))
                    .col(big_integer(Erc8004Validation::RequestedBlock))
                    .col(big_integer_null(Erc8004Validation::RespondedBlock))
                    .col(text(Erc8004Validation::TxHash))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_erc8004_validation_chain_request")
                    .table(Erc8004Validation::Table)
                    .col(Erc8004Validation::Chain)
                    .col(Erc8004Validation::RequestHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_erc8004_validation_chain_agent")
                    .table(Erc8004Validation::Table)
                    .col(Erc8004Validation::Chain)
                    .col(Erc8004Validation::AgentId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Erc8004Validation::Table.into_iden(),
            Erc8004Feedback::Table.into_iden(),
            Erc8004Agent::Table.into_iden(),
            EvmEvent::Table.into_iden(),
            EvmBlock::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum EvmBlock {
    Table,
    Chain,
    Number,
    Hash,
    ParentHash,
    Timestamp,
}

#[derive(DeriveIden)]
enum EvmEvent {
    Table,
    Id,
    Chain,
    BlockNumber,
    BlockHash,
    TxHash,
    LogIndex,
    Contract,
    Name,
    Args,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Erc8004Agent {
    #[sea_orm(iden = "erc8004_agent")]
    Table,
    Chain,
    AgentId,
    Owner,
    Uri,
    Metadata,
    RegisteredBlock,
    UpdatedBlock,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Erc8004Feedback {
    #[sea_orm(iden = "erc8004_feedback")]
    Table,
    Id,
    Chain,
    AgentId,
    ClientAddress,
    FeedbackIndex,
    Score,
    #[sea_orm(iden = "tag1")]
    Tag1,
    #[sea_orm(iden = "tag2")]
    Tag2,
    Uri,
    FileHash,
    Revoked,
    BlockNumber,
    TxHash,
    LogIndex,
}

#[derive(DeriveIden)]
enum Erc8004Validation {
    #[sea_orm(iden = "erc8004_validation")]
    Table,
    Id,
    Chain,
    RequestHash,
    AgentId,
    ValidatorAddress,
    RequestUri,
    Response,
    ResponseUri,
    Tag,
    RequestedBlock,
    RespondedBlock,
    TxHash,
}
