//! Entity types re-exported under distinct names, for `use orrery_entity::prelude::*`.

pub use super::audit_log::Entity as AuditLog;
pub use super::bitcoin_block::Entity as BitcoinBlock;
pub use super::circuit_breaker::Entity as CircuitBreaker;
pub use super::config_entry::Entity as ConfigEntry;
pub use super::distribution::Entity as Distribution;
pub use super::distribution_event::Entity as DistributionEvent;
pub use super::distribution_recipient::Entity as DistributionRecipient;
pub use super::erc8004_agent::Entity as Erc8004Agent;
pub use super::erc8004_feedback::Entity as Erc8004Feedback;
pub use super::erc8004_validation::Entity as Erc8004Validation;
pub use super::evm_block::Entity as EvmBlock;
pub use super::evm_event::Entity as EvmEvent;
pub use super::price_comparison::Entity as PriceComparison;
pub use super::price_point::Entity as PricePoint;
pub use super::quarantine::Entity as Quarantine;
pub use super::replica::Entity as Replica;
pub use super::source::Entity as Source;
pub use super::source_lease::Entity as SourceLease;
pub use super::stellar_account::Entity as StellarAccount;
pub use super::stellar_account_operation::Entity as StellarAccountOperation;
pub use super::stellar_balance::Entity as StellarBalance;
pub use super::stellar_balance_history::Entity as StellarBalanceHistory;
pub use super::stellar_holding::Entity as StellarHolding;
pub use super::stellar_operation::Entity as StellarOperation;
pub use super::stellar_sync_state::Entity as StellarSyncState;
pub use super::stellar_transaction::Entity as StellarTransaction;
