//! EVM source (JSON-RPC): ERC-8004 registries on several chains, reorgs, triggers.

pub mod settings;

pub use settings::{EvmChainSettings, EvmContractSettings, EvmSettings};
