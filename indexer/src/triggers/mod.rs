//! Triggers: stored rules that match decoded EVM events as they commit and queue actions
//! (webhook POSTs, or any other [`Sink`]) that worker tasks run with retries, a dead-letter
//! status and a circuit breaker per trigger.
//!
//! Durability design: the `action_run` table IS the queue, on every backend. Matching inserts
//! rows in the same transaction as the events (unique idempotency key, insert-or-ignore), so
//! an action exists exactly when its event does, and exactly once. Workers claim due rows with
//! a conditional `UPDATE` (several replicas never run one row concurrently; a row left
//! `running` by a crash is reclaimed after a lease). When Redis is configured the event bus
//! only carries a wake-up notification ([`ACTION_QUEUED`]); the database row stays the truth,
//! because a Redis list cannot be written in the same transaction as the events (a crash
//! between the two would lose or duplicate actions) and is not durable under every Redis
//! persistence setting.

pub mod conditions;
pub mod matcher;
pub mod settings;
pub mod signature;
pub mod sink;
pub mod worker;

pub use conditions::{Condition, ConditionError, Op};
pub use matcher::{drop_orphaned, enqueue_matches, event_key, idempotency_key};
pub use settings::TriggerSettings;
pub use signature::{sign, signature_header};
pub use sink::{Delivery, Sink, SinkError, WebhookSink};
pub use worker::{prune_finished, spawn_workers, WorkerSettings};

/// Bus topic of the wake-up notification published after actions were queued.
pub const ACTION_QUEUED: &str = crate::bus::topics::ACTION_QUEUED;

/// Status names of `action_run.status`.
pub mod status {
    /// Waiting for its first attempt.
    pub const PENDING: &str = "pending";
    /// Claimed by a worker.
    pub const RUNNING: &str = "running";
    /// Delivered.
    pub const SUCCEEDED: &str = "succeeded";
    /// Last attempt failed; a retry is scheduled at `next_attempt_at`.
    pub const FAILED: &str = "failed";
    /// Gave up (dead-letter): attempts exhausted or the trigger is gone.
    pub const DEAD: &str = "dead";
}
