//! What a source and its engine share: the read pool, the writer connection, the bus, and
//! the source row as last committed. Only the engine writes (see `engine.rs`).

use std::sync::{Arc, Mutex};

use chrono::Utc;
use orrery_entity::source;
use sea_orm::{
    ActiveModelTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, Set,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use super::lease::SourceLease;
use super::{Progress, SourceDescriptor};
use crate::bus::{publish_logged, BusEvent, SharedBus};
use crate::runtime_settings::RuntimeSettings;

/// Shared by the engine and its source.
#[derive(Clone)]
pub struct SyncContext {
    /// Database pool for reads (and for the few writes outside a source's batches).
    pub db: DatabaseConnection,
    /// The connection every engine write transaction runs on. On SQLite this is a pool of
    /// one connection (one writer, readers never wait for it under WAL); on PostgreSQL it is
    /// the same pool as `db`.
    pub writer: DatabaseConnection,
    /// Event bus.
    pub bus: SharedBus,
    /// Which source this context belongs to.
    pub source: SourceDescriptor,
    /// The runtime settings of the `config` table (e.g. `stall_timeout()`), when the
    /// process runs a refresher; `None` in tests and tools that build contexts by hand.
    pub settings: Option<RuntimeSettings>,
    /// The source's lease when replicas share a PostgreSQL database: every write
    /// transaction checks it first ([`SourceLease::check`]).
    pub lease: Option<Arc<SourceLease>>,
    last_row: Arc<Mutex<Option<source::Model>>>,
}

impl SyncContext {
    /// A context for `source`.
    pub fn new(db: DatabaseConnection, bus: SharedBus, source: SourceDescriptor) -> Self {
        Self {
            writer: db.clone(),
            db,
            bus,
            source,
            settings: None,
            lease: None,
            last_row: Arc::new(Mutex::new(None)),
        }
    }

    /// Gives the context the process's runtime settings (see [`SyncContext::settings`]).
    pub fn with_settings(mut self, settings: RuntimeSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Fences every write transaction with `lease` (see [`SyncContext::lease`]).
    pub fn with_lease(mut self, lease: Arc<SourceLease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Uses `writer` for the engine's write transactions (see [`SyncContext::writer`]).
    pub fn with_writer(mut self, writer: DatabaseConnection) -> Self {
        self.writer = writer;
        self
    }

    /// The source row as last written by this process.
    pub fn last_row(&self) -> Option<source::Model> {
        self.last_row.lock().ok().and_then(|g| g.clone())
    }

    pub(crate) fn remember(&self, row: &source::Model) {
        if let Ok(mut g) = self.last_row.lock() {
            *g = Some(row.clone());
        }
    }

    /// Records a fetch that wrote no rows (new head, caught-up status): writes and
    /// publishes only when something visible changed.
    pub(crate) async fn touch(
        &self,
        progress: &Progress,
        backfill_from: Option<i64>,
        eta_seconds: Option<i64>,
    ) -> Result<(), DbErr> {
        if let Some(last) = self.last_row() {
            let status = if progress.caught_up {
                "synced"
            } else {
                "syncing"
            };
            let unchanged = (progress.head_height.is_none()
                || progress.head_height == last.head_height)
                && (progress.indexed_height.is_none()
                    || progress.indexed_height == last.indexed_height)
                && (progress.cursor.is_none() || progress.cursor == last.cursor)
                && (last.status == status || last.paused)
                && last.error_count == 0
                && last.backfill_from == backfill_from;
            if unchanged {
                return Ok(());
            }
        }
        let row = if self.lease.is_some() {
            // Fenced like a batch: a replica that lost the lease does not touch the row.
            let txn = self.begin().await?;
            let row =
                write_progress(&txn, &self.source.id, progress, backfill_from, eta_seconds).await?;
            txn.commit().await?;
            row
        } else {
            write_progress(
                &self.writer,
                &self.source.id,
                progress,
                backfill_from,
                eta_seconds,
            )
            .await?
        };
        self.remember(&row);
        self.publish_source(&row).await;
        Ok(())
    }

    /// Starts the transaction the engine writes a batch (or a revert) and the cursor in. On SQLite it takes the write lock at
    /// `BEGIN` (`IMMEDIATE`): a deferred transaction that read first could not upgrade once
    /// another connection committed (`database is locked` without waiting). PostgreSQL ignores
    /// the mode.
    /// With a lease, the transaction starts with its fencing check.
    pub(crate) async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        let txn = self
            .writer
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?;
        if let Some(lease) = &self.lease {
            lease.check(&txn).await?;
        }
        Ok(txn)
    }

    /// Publishes `source.updated` for `row`.
    pub async fn publish_source(&self, row: &source::Model) {
        publish_logged(self.bus.as_ref(), BusEvent::new(row.clone())).await
    }
}

/// Applies `progress` to the source row (fields left `None` keep their stored value), with
/// the backfill range start and time-left estimate the engine keeps.
pub async fn write_progress<C: sea_orm::ConnectionTrait>(
    db: &C,
    id: &str,
    progress: &Progress,
    backfill_from: Option<i64>,
    eta_seconds: Option<i64>,
) -> Result<source::Model, DbErr> {
    let current = source::Entity::find_by_id(id.to_string())
        .one(db)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("source {id}")))?;
    let now = Utc::now();
    let mut row: source::ActiveModel = current.clone().into();
    if progress.head_height.is_some() {
        row.head_height = Set(progress.head_height);
        row.head_updated_at = Set(Some(now));
    }
    if progress.indexed_height.is_some() {
        row.indexed_height = Set(progress.indexed_height);
    }
    if progress.cursor.is_some() {
        row.cursor = Set(progress.cursor.clone());
    }
    if !current.paused {
        row.status = Set(if progress.caught_up {
            "synced"
        } else {
            "syncing"
        }
        .to_string());
    }
    row.backfill_from = Set(backfill_from);
    row.eta_seconds = Set(if backfill_from.is_some() || progress.caught_up {
        eta_seconds
    } else {
        None
    });
    row.error_count = Set(0);
    row.last_error = Set(None);
    row.last_sync_at = Set(Some(now));
    row.updated_at = Set(now);
    row.update(db).await
}
