//! The sync engine: runs each [`Source`] as a task that fetches a batch, commits its rows and
//! the new cursor in one transaction, then publishes what changed on the bus.
//!
//! Sources only know how to fetch and turn responses into rows; the engine owns the source's
//! stored state, retries with backoff, pause, metrics, stall detection, and the supervisor
//! restarts a task that panicked or stalled.

pub mod commands;
mod context;
mod engine;
mod source;
mod supervisor;

pub mod breaker_store;

#[cfg(test)]
mod tests;

pub use context::SyncContext;
pub use engine::{run_source, EngineConfig, EngineExit};
pub use source::{Progress, Source, SourceDescriptor, SourceError};
pub use supervisor::{SourceFactory, Supervisor};
