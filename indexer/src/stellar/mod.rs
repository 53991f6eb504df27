//! Stellar source (Horizon): watched accounts, balances, operations, distributions.

pub mod settings;

pub use settings::StellarSettings;
