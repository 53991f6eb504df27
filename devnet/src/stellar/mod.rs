//! Simulated Stellar network served as Horizon and as Stellar RPC (`/rpc`).

pub mod datalake;
pub mod model;
pub mod request_log;
pub mod routes;
pub mod rpc;
pub mod rpc_meta;
pub mod sse;
