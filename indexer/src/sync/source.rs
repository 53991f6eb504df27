//! What a chain source implements.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orrery_entity::source;
use sea_orm::DbErr;

use super::SyncContext;
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

/// What one step achieved; the engine stores it with the rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Upstream head (ledger or block height), when observed.
    pub head_height: Option<i64>,
    /// Highest height fully committed.
    pub indexed_height: Option<i64>,
    /// The source's resume cursor after this step (opaque to the engine).
    pub cursor: Option<String>,
    /// Rows committed by this step, by kind (for `orrery_indexed_items_total`).
    pub items: Vec<(&'static str, u64)>,
    /// Nothing more to fetch right now: the engine waits `poll_interval` before the next step.
    pub caught_up: bool,
    /// Timestamp of the newest committed item (for lag in seconds).
    pub newest_item_at: Option<DateTime<Utc>>,
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
    /// The upstream answered something we cannot use.
    #[error("unexpected upstream data: {0}")]
    Data(String),
    /// The source is misconfigured; retrying will not help until the config changes.
    #[error("configuration: {0}")]
    Config(String),
}

/// A chain or price source. One instance runs in one task; the supervisor builds a fresh one
/// (through its factory) after a restart, and [`Source::resume`] reloads state from the DB.
#[async_trait]
pub trait Source: Send + 'static {
    /// Its identity.
    fn descriptor(&self) -> SourceDescriptor;

    /// Loads whatever the source keeps besides the `source` row (called before the first step
    /// and after every restart). `stored` is the source's row as last committed.
    async fn resume(
        &mut self,
        _ctx: &SyncContext,
        _stored: &source::Model,
    ) -> Result<(), SourceError> {
        Ok(())
    }

    /// Fetches the next batch and commits it with [`SyncContext::commit`] (rows and cursor in
    /// one transaction). Returns what was achieved.
    async fn step(&mut self, ctx: &SyncContext) -> Result<Progress, SourceError>;

    /// How long to wait after a caught-up step.
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(5)
    }
}
