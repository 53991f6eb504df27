//! Simulated EVM chains with ERC-8004 registries, served as JSON-RPC.

pub mod abi;
pub mod model;
pub mod routes;
