//! Simulated Bitcoin chain served as Esplora, plus mempool-style prices.

pub mod model;
pub mod routes;
