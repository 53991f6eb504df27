//! Bitcoin tables: `bitcoin_block`.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates the Bitcoin tables.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(BitcoinBlock::Table)
                    .col(big_integer(BitcoinBlock::Height).primary_key())
                    .col(text(BitcoinBlock::Hash))
                    .col(text(BitcoinBlock::PrevHash))
                    .col(timestamp_with_time_zone(BitcoinBlock::Time))
                    .col(integer(BitcoinBlock::TxCount))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_bitcoin_block_hash")
                    .table(BitcoinBlock::Table)
                    .col(BitcoinBlock::Hash)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(BitcoinBlock::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum BitcoinBlock {
    Table,
    Height,
    Hash,
    PrevHash,
    Time,
    TxCount,
}
