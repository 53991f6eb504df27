//! Simulated Stellar network served as Horizon.

pub mod model;
pub mod routes;
pub mod sse;
