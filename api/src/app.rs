//! Wiring: turns a validated [`Config`] into running parts. The binary only calls this.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orrery_indexer::bus::{LocalBus, RedisBus, SharedBus};
use orrery_indexer::config_store;
use sea_orm::DatabaseConnection;

use crate::auth::{AuthError, Authenticator};
use crate::config::Config;
use crate::db;
use crate::graphql;
use crate::server;
use crate::sources;
use crate::state::AppState;

/// Why the server could not start. Each variant is one clear line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Database connection or migration.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// The event bus.
    #[error("cannot start event bus: {0}")]
    Bus(#[from] orrery_indexer::bus::BusError),
    /// Seeding config defaults.
    #[error("cannot seed runtime config: {0}")]
    ConfigStore(#[from] config_store::ConfigStoreError),
    /// Indexers or devnet.
    #[error(transparent)]
    Sources(#[from] sources::SourcesError),
    /// The token verifier.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Binding the listen address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The persisted-query allow-list (`graphql.persisted_queries_path`).
    #[error("graphql.persisted_queries_path: {0}")]
    Persisted(#[from] graphql::persisted::PersistedError),
    /// The server failed while running.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Connects the database (migrating when configured) and the event bus.
pub async fn open(config: &Config) -> Result<(DatabaseConnection, SharedBus), StartError> {
    let db = db::connect(config).await?;
    if config.database.migrate_on_start {
        db::migrate(&db).await?;
        config_store::seed_defaults(&db).await?;
    }
    let bus = open_bus(config).await?;
    Ok((db, bus))
}

/// The Redis bus when `redis_url` is set, else the in-process one.
pub async fn open_bus(config: &Config) -> Result<SharedBus, StartError> {
    Ok(match &config.redis_url {
        Some(url) => Arc::new(RedisBus::connect(url, Duration::from_secs(5)).await?),
        None => Arc::new(LocalBus::new()),
    })
}

/// Runs the server until SIGTERM/SIGINT.
pub async fn serve(mut config: Config, role: sources::ServeRole) -> Result<(), StartError> {
    // Read before anything starts: a bad allow-list stops the server with one line.
    let allow = match &config.graphql.persisted_queries_path {
        Some(path) => graphql::persisted::load_allow_list(path)?,
        None => Default::default(),
    };
    let (db, bus) = open(&config).await?;
    let writer = db::connect_writer(&config, &db).await?;
    let running = sources::start(&mut config, &db, &writer, &bus, role).await?;
    let config = Arc::new(config);
    tracing::info!(
        database = %db::redact(&config.database_url),
        bus = bus.kind(),
        "storage ready"
    );
    let state = AppState {
        config: config.clone(),
        db,
        bus,
        started_at: Instant::now(),
        health: crate::health::HealthSnapshot::pending(),
    };
    // The first report before the server listens; then one per second in the background.
    state.health.refresh(&state).await;
    crate::health::HealthSnapshot::spawn_refresher(state.clone());
    tracing::info!(
        persisted_queries = allow.len(),
        persisted_only = config.graphql.persisted_only,
        "graphql limits ready"
    );
    let schema = graphql::build_schema(&config.graphql, Some(state.clone()), allow);
    let auth = Arc::new(Authenticator::from_config(&config)?);
    tokio::spawn({
        let auth = auth.clone();
        async move { auth.warm_up().await }
    });
    orrery_indexer::metrics::Metrics::global().touch_api(&[
        orrery_indexer::bus::topics::SOURCE_UPDATED,
        orrery_indexer::bus::topics::CONFIG_UPDATED,
    ]);
    let app = server::router(state, schema, auth);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(StartError::Serve)?;
    // One machine-readable line on stdout (tests and scripts read it); logs go to stderr.
    println!("orrery listening on http://{addr}");
    tracing::info!(%addr, "listening");
    // One signal stops the HTTP server and the sources together, within the grace period.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let grace = Duration::from_secs(config.http.shutdown_grace_secs);
    let sources_done = {
        let rx = stop_rx.clone();
        async move {
            stopped(rx).await;
            running.shutdown(grace).await;
        }
    };
    let (served, ()) = tokio::join!(
        server::serve(listener, app, stopped(stop_rx), grace),
        sources_done
    );
    served.map_err(StartError::Serve)?;
    tracing::info!("stopped");
    Ok(())
}
