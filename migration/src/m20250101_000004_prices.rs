//! Price tables: `price_point` and `price_comparison`.
//!
//! Prices are statistical estimates and stored as double precision.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates the price tables.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PricePoint::Table)
                    .col(big_pk_auto(PricePoint::Id))
                    .col(text(PricePoint::Pair))
                    .col(text(PricePoint::Source))
                    .col(timestamp_with_time_zone(PricePoint::At))
                    .col(double(PricePoint::Price))
                    .col(double_null(PricePoint::Confidence))
                    .col(double_null(PricePoint::Volume))
                    .col(json_binary_null(PricePoint::Details))
                    .to_owned(),
            )
            .await?;
        // The unique index also serves the (pair, source, at) lookups.
        manager
            .create_index(
                Index::create()
                    .name("uq_price_point_pair_source_at")
                    .table(PricePoint::Table)
                    .col(PricePoint::Pair)
                    .col(PricePoint::Source)
                    .col(PricePoint::At)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PriceComparison::Table)
                    .col(big_pk_auto(PriceComparison::Id))
                    .col(timestamp_with_time_zone(PriceComparison::At))
                    .col(text(PriceComparison::Pair))
                    .col(double_null(PriceComparison::UtxoraclePrice))
                    .col(double_null(PriceComparison::ExchangePrice))
                    .col(double_null(PriceComparison::Diff))
                    .col(double_null(PriceComparison::DiffPercent))
                    .col(double_null(PriceComparison::Confidence))
                    .col(boolean(PriceComparison::IsValid))
                    .col(text_null(PriceComparison::Reason))
                    .col(timestamp_with_time_zone(PriceComparison::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_price_comparison_at")
                    .table(PriceComparison::Table)
                    .col(PriceComparison::At)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            PriceComparison::Table.into_iden(),
            PricePoint::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum PricePoint {
    Table,
    Id,
    Pair,
    Source,
    At,
    Price,
    Confidence,
    Volume,
    Details,
}

#[derive(DeriveIden)]
enum PriceComparison {
    Table,
    Id,
    At,
    Pair,
    UtxoraclePrice,
    ExchangePrice,
    Diff,
    DiffPercent,
    Confidence,
    IsValid,
    Reason,
    UpdatedAt,
}
