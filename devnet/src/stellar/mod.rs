//! Simulated Stellar network served as Horizon.

pub mod model;
pub mod request_log;
pub mod routes;
pub mod sse;
