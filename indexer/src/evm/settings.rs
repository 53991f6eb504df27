//! `[evm]` settings.

use serde::Deserialize;

/// EVM indexing settings (`[evm]` in `orrery.toml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvmSettings {
    /// Chains to follow (`[[evm.chains]]`). Empty: the devnet's chains when devnet runs.
    pub chains: Vec<EvmChainSettings>,
}

/// One chain (`[[evm.chains]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmChainSettings {
    /// Short name used in source ids (`evm:<name>`), e.g. `sepolia`.
    pub name: String,
    /// EIP-155 chain id; checked against `eth_chainId` at start.
    pub chain_id: u64,
    /// JSON-RPC URLs, tried in order (failover).
    pub rpc_urls: Vec<String>,
    /// First block to index.
    #[serde(default)]
    pub start_block: u64,
    /// Blocks behind head considered final. Default 12.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Registry contracts to index.
    #[serde(default)]
    pub contracts: Vec<EvmContractSettings>,
}

fn default_confirmations() -> u64 {
    12
}

/// One contract (`[[evm.chains.contracts]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmContractSettings {
    /// 0x-prefixed address.
    pub address: String,
    /// `identity`, `reputation` or `validation`.
    pub registry: String,
}
