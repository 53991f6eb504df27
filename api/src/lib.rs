//! Orrery's API side: the axum server, the GraphQL schema, health, and the CLI the `orrery`
//! binary runs. Reads the database and listens to the bus; never calls upstreams itself.

pub mod allocator;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod cli_prices;
pub mod cli_quarantine;
pub mod cli_stellar;
pub mod config;
pub mod db;
pub mod graphql;
pub mod health;
pub mod progress;
pub mod server;
pub mod sources;
pub mod state;
pub mod telemetry;
pub mod web;
pub mod ws;
pub mod ws_fanout;
