//! What a chain source implements.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orrery_entity::source;
use sea_orm::{DatabaseTransaction, DbErr};

use super::{Quarantined, SyncContext};
use crate::bus::BusEvent;
use crate::upstream::UpstreamError;

/// Identity of a source, stored in the `source` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDescriptor {
    /// Stable id, e.g. `stellar`, `evm:sepolia`, `bitcoin`.
    pub id: String,
    /// `stellar`, `evm`, `bitcoin` or `exchange`.
    pub kind: &'static str,
    /// Human name.
    pub name: String,
    /// EVM chain id, when relevant.
    pub chain_id: Option<i64>,
}

impl SourceDescriptor {
    /// The chain name used in bus events: the EVM chain's name, otherwise the kind.
    pub fn chain(&self) -> &str {
        if self.kind == "evm" {
            &self.name
        } else {
            self.kind
        }
    }
}

/// What one step achieved; the engine stores it with the rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Upstream head (ledger or block height), when observed.
    pub head_height: Option<i64>,
    /// Highest height fully committed.
    pub indexed_height: Option<i64>,
    /// The source's resume cursor after this step (opaque to the engine).
    pub cursor: Option<String>,
    /// Height the backfill range starts at (for `progress` and `etaSeconds`), when known.
    pub start_height: Option<i64>,
    /// Rows committed by this step, by kind (for `orrery_indexed_items_total`).
    pub items: Vec<(&'static str, u64)>,
    /// Nothing more to fetch right now: the engine waits `poll_interval` before the next step.
    pub caught_up: bool,
    /// Timestamp of the newest committed item (for lag in seconds).
    pub newest_item_at: Option<DateTime<Utc>>,
    /// Records this step skipped because they cannot be stored as served (a permanent data
    /// error each): the engine stores them in `quarantine` with the cursor that passes them.
    pub quarantined: Vec<Quarantined>,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The upstream failed after retries (or its breaker is open).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The database failed; nothing of the step was committed.
    #[error("database: {0}")]
    Db(#[from] DbErr),
    /// The upstream answered something we cannot use as a whole (a page that does not
    /// parse, a head that is not a number): transient, retried with backoff.
    #[error("unexpected upstream data: {0}")]
    Malformed(String),
    /// A permanent data error on one record that the source could not step over: the
    /// engine quarantines the record and retries the step with backoff.
    #[error("malformed record: {0}")]
    Data(Box<Quarantined>),
    /// The source is misconfigured; retrying will not help until the config changes.
    #[error("configuration: {0}")]
    Config(String),
}

impl SourceError {
    /// True when retrying the same step cannot succeed by itself (bad data, bad config):
    /// the engine then waits its longest backoff between attempts.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Data(_) | Self::Config(_))
    }
}

/// What one [`Source::fetch`] found.
#[derive(Debug)]
pub enum Fetched<B> {
    /// Rows to write; `progress` is where the source stands once they are committed.
    Batch {
        /// The typed rows.
        batch: B,
        /// Heights and cursor after the batch.
        progress: Progress,
    },
    /// The upstream reorganised: roll back everything above height `to`.
    Revert {
        /// Highest height still canonical (the common ancestor).
        to: i64,
        /// Heights and cursor after the rollback.
        progress: Progress,
    },
    /// Nothing to write (a new head, caught up, or a read that saw the chain move).
    Idle(Progress),
}

/// What [`BatchWriter::write`] stored.
#[derive(Default)]
pub struct Written {
    /// Rows written by kind (for `orrery_indexed_items_total`).
    pub items: Vec<(&'static str, u64)>,
    /// Bus events published once the transaction has committed.
    pub events: Vec<BusEvent>,
    /// Runs once the transaction has committed (e.g. releases buffered rows it stored).
    pub after_commit: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Written")
            .field("items", &self.items)
            .field("events", &self.events.len())
            .field("after_commit", &self.after_commit.is_some())
            .finish()
    }
}

/// What [`BatchWriter::revert`] removed.
#[derive(Debug, Default)]
pub struct Reverted {
    /// Rows (events, blocks) that were orphaned and deleted.
    pub orphaned: u64,
    /// Extra bus events besides the engine's `reorg` event.
    pub events: Vec<BusEvent>,
}

/// The write half of a source: applies a batch, or a rollback, inside the transaction the
/// engine gives it. It never begins or commits; the engine writes the cursor in the same
/// transaction. Writes are set-based: a bounded number of statements per batch.
#[async_trait]
pub trait BatchWriter<B>: Send + Sync + 'static {
    /// Writes `batch` into `txn`.
    async fn write(&self, txn: &DatabaseTransaction, batch: &B) -> Result<Written, DbErr>;

    /// Deletes everything above height `to` and restores projections to their state at `to`.
    async fn revert(&self, txn: &DatabaseTransaction, to: i64) -> Result<Reverted, DbErr>;
}

/// A chain or price source. One instance runs in one task; the supervisor builds a fresh one
/// (through its factory) after a restart, and [`Source::resume`] reloads state from the DB.
///
/// A source *fetches* (upstream calls and database reads only) and returns a typed batch;
/// its [`BatchWriter`] writes it. `fetch` advances the source's in-memory position as if
/// the batch will commit: when a write fails, the engine calls [`Source::resume`] again with
/// the stored row, so the in-memory state never runs ahead of the database.
#[async_trait]
pub trait Source: Send + 'static {
    /// The typed rows one fetch returns.
    type Batch: Send + Sync + 'static;

    /// Its identity.
    fn descriptor(&self) -> SourceDescriptor;

    /// Loads whatever the source keeps besides the `source` row (called before the first
    /// fetch, after every restart and after every failed write). `stored` is the source's row
    /// as last committed.
    async fn resume(
        &mut self,
        _ctx: &SyncContext,
        _stored: &source::Model,
    ) -> Result<(), SourceError> {
        Ok(())
    }

    /// Fetches the next batch (upstream calls and reads only, never a write).
    async fn fetch(&mut self, ctx: &SyncContext) -> Result<Fetched<Self::Batch>, SourceError>;

    /// The write half, shared with the engine's writer.
    fn writer(&self) -> Arc<dyn BatchWriter<Self::Batch>>;

    /// Batches fetched ahead while earlier ones are being written. 0: each fetch waits for
    /// the previous commit (for sources whose fetch reads what the previous batch wrote).
    fn prefetch(&self) -> usize {
        0
    }

    /// How long to wait after a caught-up fetch.
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(5)
    }
}
