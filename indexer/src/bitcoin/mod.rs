//! Bitcoin source (Esplora) feeding the UTXOracle estimator, exchange prices, comparisons.

pub mod settings;

pub use settings::BitcoinSettings;
