//! Orrery's indexing side: the upstream HTTP client (rate limit, circuit breaker, retry),
//! chain sources, the sync engine and the event bus. Knows nothing of HTTP serving or GraphQL.

pub mod backoff;
pub mod bitcoin;
pub mod bus;
pub mod config_store;
pub mod evm;
pub mod metrics;
pub mod replay;
pub mod runtime_settings;
pub mod stellar;
pub mod sync;
pub mod triggers;
pub mod upstream;
pub mod utxoracle;
