//! What every handler and resolver shares.

use std::sync::Arc;
use std::time::Instant;

use orrery_indexer::bus::SharedBus;
use sea_orm::DatabaseConnection;

use crate::config::Config;
use crate::health::HealthSnapshot;

/// Shared application state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The database pool.
    pub db: DatabaseConnection,
    /// The event bus subscriptions read from.
    pub bus: SharedBus,
    /// When the process started (for uptime).
    pub started_at: Instant,
    /// The last periodic health check.
    pub health: HealthSnapshot,
}
