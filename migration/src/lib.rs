//! Schema migrations of Orrery.
//!
//! Every migration is written explicitly with the sea-query schema builder (never
//! generated from the entities) so that it stays frozen while the entities in
//! `orrery-entity` evolve. All of them run on SQLite and PostgreSQL.
//!
//! Apply them with [`Migrator`]:
//!
//! ```no_run
//! # async fn run(db: &sea_orm_migration::sea_orm::DatabaseConnection) -> Result<(), sea_orm_migration::DbErr> {
//! use orrery_migration::{Migrator, MigratorTrait};
//! Migrator::up(db, None).await
//! # }
//! ```

pub use sea_orm_migration::prelude::*;

mod m20250101_000001_core;
mod m20250101_000002_stellar;
mod m20250101_000003_distributions;
mod m20250101_000004_prices;
mod m20250101_000005_evm;
mod m20250101_000006_bitcoin;
mod m20250102_000007_source_command;
mod m20250103_000008_triggers;
mod m20261201_000009_source_progress;
mod m20261201_000010_evm_event_key_order;
mod m20261202_000012_leases;
mod m20261203_000014_reconciliation;
mod m20261203_000018_action_run_retention;
mod m20261204_000019_quarantine;
mod m20261205_000020_balance_history_indexes;
mod m20261206_000021_balance_holdings;

/// The ordered list of Orrery's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_core::Migration),
            Box::new(m20250101_000002_stellar::Migration),
            Box::new(m20250101_000003_distributions::Migration),
            Box::new(m20250101_000004_prices::Migration),
            Box::new(m20250101_000005_evm::Migration),
            Box::new(m20250101_000006_bitcoin::Migration),
            Box::new(m20250102_000007_source_command::Migration),
            Box::new(m20250103_000008_triggers::Migration),
            Box::new(m20261201_000009_source_progress::Migration),
            Box::new(m20261201_000010_evm_event_key_order::Migration),
            Box::new(m20261202_000012_leases::Migration),
            Box::new(m20261203_000014_reconciliation::Migration),
            Box::new(m20261203_000018_action_run_retention::Migration),
            Box::new(m20261204_000019_quarantine::Migration),
            Box::new(m20261205_000020_balance_history_indexes::Migration),
            Box::new(m20261206_000021_balance_holdings::Migration),
        ]
    }
}
