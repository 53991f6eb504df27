//! Stellar over GraphQL: accounts, balances, operations, transactions, per-account sync status
//! and distributions. Nested lists load through batched [`DataLoader`]s (one query per list
//! kind per request, no N+1).
//!
//! [`DataLoader`]: async_graphql::dataloader::DataLoader

mod loaders;
mod mutations;
mod queries;
mod subscriptions;
mod types;

pub use loaders::StellarLoaders;
pub use mutations::{CreateDistributionInput, RecipientInput, ResyncModeInput, StellarMutation};
pub use queries::{AccountFilter, AccountOrder, BalanceReconciliation, StellarQuery};
pub use subscriptions::StellarSubscription;
pub use types::{
    Distribution, DistributionEvent, DistributionRecipient, StellarAccount, StellarBalance,
    StellarOperation, StellarSyncStatus, StellarTransaction,
};
