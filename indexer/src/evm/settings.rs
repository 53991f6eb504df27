//! `[evm]` settings.

use serde::Deserialize;

/// EVM indexing settings (`[evm]` in `orrery.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvmSettings {
    /// Chains to follow (`[[evm.chains]]`). Empty: the devnet's chains when devnet runs.
    pub chains: Vec<EvmChainSettings>,
    /// Largest `eth_getLogs` block range (`evm.max_block_range`, default 10000); the range
    /// adapts below it when the node refuses ranges or result counts.
    pub max_block_range: u64,
    /// `eth_getLogs` ranges in flight per chain during backfill (`evm.concurrency`, default 4).
    pub concurrency: usize,
    /// Local request budget per chain and hour (`evm.requests_per_hour`, default 0 = none;
    /// the node's own rate-limit answers are always honoured).
    pub requests_per_hour: u32,
    /// Wait between polls of the head once caught up, in milliseconds
    /// (`evm.poll_interval_ms`, default 2000).
    pub poll_interval_ms: u64,
    /// Per-request JSON-RPC timeout in seconds, connect, headers and body
    /// (`evm.request_timeout_secs`, default 30).
    pub request_timeout_secs: u64,
    /// How long a chain's circuit breaker stays open before a probe, in seconds
    /// (`evm.breaker_recovery_secs`, default 60).
    pub breaker_recovery_secs: u64,
}

impl Default for EvmSettings {
    fn default() -> Self {
        Self {
            chains: Vec::new(),
            max_block_range: 10_000,
            concurrency: 4,
            requests_per_hour: 0,
            poll_interval_ms: 2_000,
            request_timeout_secs: 30,
            breaker_recovery_secs: 60,
        }
    }
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
