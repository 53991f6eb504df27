//! SeaORM entities of Orrery's storage model.
//!
//! One module per table, named like the table. Entities carry no logic: they
//! describe rows only. The schema itself is owned by the frozen migrations in
//! `orrery-migration`; these entities must stay compatible with it.
//!
//! Conventions:
//! - Stellar amounts are exact `i64` stroops (1 unit = 10 000 000 stroops) in
//!   `*_stroops` columns.
//! - EVM `uint256` values are decimal strings.
//! - Prices are `f64` (statistical estimates, never token amounts).
//! - Timestamps are [`sea_orm::prelude::DateTimeUtc`].

pub mod action_run;
pub mod audit_log;
pub mod balance_reconciliation;
pub mod bitcoin_block;
pub mod circuit_breaker;
pub mod config_entry;
pub mod distribution;
pub mod distribution_event;
pub mod distribution_recipient;
pub mod erc8004_agent;
pub mod erc8004_feedback;
pub mod erc8004_validation;
pub mod evm_block;
pub mod evm_event;
pub mod prelude;
pub mod price_comparison;
pub mod price_point;
pub mod quarantine;
pub mod replica;
pub mod source;
pub mod source_command;
pub mod source_lease;
pub mod stellar_account;
pub mod stellar_account_operation;
pub mod stellar_balance;
pub mod stellar_balance_history;
pub mod stellar_holding;
pub mod stellar_operation;
pub mod stellar_sync_state;
pub mod stellar_transaction;
pub mod trigger;
