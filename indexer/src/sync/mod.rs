//! The sync engine: runs each [`Source`] as a task that fetches typed batches (ahead of the
//! writer, bounded), and for each one begins a transaction, lets the source's
//! [`BatchWriter`] write it (or roll back a reorg), writes the cursor, commits, then
//! publishes what changed on the bus.
//!
//! Sources only fetch and write set-based batches into the transaction they are given; the
//! engine owns begin/commit, the source's stored state, reorg metrics and events, retries
//! with backoff, pause, metrics, stall detection, and the supervisor restarts a task that
//! panicked or stalled.

pub mod commands;
mod context;
mod engine;
pub mod eta;
pub mod lease;
pub mod quarantine;
pub mod reorg_window;
mod source;
mod supervisor;

pub mod breaker_store;

#[cfg(test)]
mod tests;

pub use context::SyncContext;
pub use engine::{run_source, EngineConfig, EngineExit};
pub use quarantine::Quarantined;
pub use source::{
    BatchWriter, Fetched, Progress, Reverted, Source, SourceDescriptor, SourceError, Written,
};
pub use supervisor::{factory, SourceFactory, Supervisor};
