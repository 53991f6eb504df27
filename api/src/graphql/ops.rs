//! Operations: pause / resume / rewind / restart sources, reset circuit breakers, and read
//! breakers and the audit log. Intents are written to the database; the supervisor running the
//! source applies them.

use async_graphql::{Context, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use orrery_entity::{audit_log, circuit_breaker, quarantine, source};
use orrery_indexer::sync::{breaker_store, commands};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, Set};
use serde_json::{json, Value};

use super::context::{audited, page_args, Audited};
use super::error::{bad_input, internal, not_found};
use super::pagination::{keyset_page, Dir, Keyset, Page};
use super::types::Chain;
use crate::auth::{Role, RoleGuard};

/// A circuit breaker's persisted state.
#[derive(SimpleObject, Clone, Debug)]
pub struct CircuitBreakerState {
    /// Breaker name (the upstream it guards).
    pub name: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Consecutive failures counted.
    pub failure_count: i32,
    /// When it last opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// When the last failure happened.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Last failure message (or who reset it).
    pub last_error: Option<String>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<circuit_breaker::Model> for CircuitBreakerState {
    fn from(m: circuit_breaker::Model) -> Self {
        Self {
            name: m.name,
            state: m.state,
            failure_count: m.failure_count,
            opened_at: m.opened_at,
            last_failure_at: m.last_failure_at,
            last_error: m.last_error,
            updated_at: m.updated_at,
        }
    }
}

/// An upstream record that could not be stored as served (a permanent data error on that
/// record): the source moved on without it.
#[derive(SimpleObject, Clone, Debug)]
pub struct QuarantinedRecord {
    /// Row id (newest first ordering).
    pub id: i64,
    /// Source id, e.g. `stellar` or `evm:sepolia`.
    pub source: String,
    /// What the record is: `stellar.operation`, `evm.log` or `stellar.rpc.event`.
    pub kind: String,
    /// Where it sits upstream: an operation id, `block:logIndex`, an event id.
    pub position: String,
    /// The record as the upstream served it (JSON).
    pub payload: Value,
    /// Why it was refused.
    pub error: String,
    /// When it was quarantined.
    pub quarantined_at: DateTime<Utc>,
    /// When a replay stored it; null while pending.
    pub replayed_at: Option<DateTime<Utc>>,
    /// Why the last replay failed, if it did.
    pub replay_error: Option<String>,
}

impl From<quarantine::Model> for QuarantinedRecord {
    fn from(m: quarantine::Model) -> Self {
        Self {
            id: m.id,
            source: m.source,
            kind: m.kind,
            position: m.position,
            // Stored by the engine as JSON text; kept as text if it ever is not.
            payload: serde_json::from_str(&m.payload).unwrap_or(Value::String(m.payload)),
            error: m.error,
            quarantined_at: m.quarantined_at,
            replayed_at: m.replayed_at,
            replay_error: m.replay_error,
        }
    }
}

/// One audited admin action.
#[derive(SimpleObject, Clone, Debug)]
pub struct AuditEntryObject {
    /// Row id (newest first ordering).
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Token subject.
    pub actor: String,
    /// Token role.
    pub role: String,
    /// Mutation name.
    pub action: String,
    /// What it acted on.
    pub target: Option<String>,
    /// Arguments given.
    pub arguments: Value,
    /// State before.
    pub before: Option<Value>,
    /// State after.
    pub after: Option<Value>,
    /// Client address.
    pub client_addr: Option<String>,
}

impl From<audit_log::Model> for AuditEntryObject {
    fn from(m: audit_log::Model) -> Self {
        Self {
            id: m.id,
            at: m.at,
            actor: m.actor,
            role: m.role,
            action: m.action,
            target: m.target,
            arguments: m.arguments,
            before: m.before,
            after: m.after,
            client_addr: m.client_addr,
        }
    }
}

/// Operational queries.
#[derive(Default)]
pub struct OpsQuery;

#[Object]
impl OpsQuery {
    /// Circuit breakers guarding upstreams, by name.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn circuit_breakers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<CircuitBreakerState>> {
        let args = page_args(ctx, first, after)?;
        let key = Keyset::by(
            circuit_breaker::Column::Name,
            Dir::Asc,
            |m: &circuit_breaker::Model| m.name.clone(),
        );
        keyset_page(
            ctx,
            circuit_breaker::Entity::find(),
            &key,
            args,
            "circuit breakers",
        )
        .await
    }

    /// The audit trail, newest first (operator or admin).
    #[graphql(
        guard = "RoleGuard::new(Role::Operator)",
        complexity = "crate::graphql::limits::connection_cost(first, child_complexity)"
    )]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only actions of this token subject.")] actor: Option<String>,
        #[graphql(desc = "Only this mutation name, e.g. `setConfig`.")] action: Option<String>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<AuditEntryObject>> {
        let args = page_args(ctx, first, after)?;
        let mut base = audit_log::Entity::find();
        if let Some(a) = &actor {
            base = base.filter(audit_log::Column::Actor.eq(a.clone()));
        }
        if let Some(a) = &action {
            base = base.filter(audit_log::Column::Action.eq(a.clone()));
        }
        let key = Keyset::by(audit_log::Column::Id, Dir::Desc, |m: &audit_log::Model| {
            m.id
        });
        keyset_page(ctx, base, &key, args, "audit rows").await
    }

    /// Upstream records quarantined by the sources, newest first (operator or admin).
    #[graphql(
        guard = "RoleGuard::new(Role::Operator)",
        complexity = "crate::graphql::limits::connection_cost(first, child_complexity)"
    )]
    async fn quarantined(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only records of this source id, e.g. `stellar`.")] source: Option<String>,
        #[graphql(desc = "Include records a replay already stored (default: pending only).")]
        include_replayed: Option<bool>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<QuarantinedRecord>> {
        let args = page_args(ctx, first, after)?;
        let mut base = quarantine::Entity::find();
        if let Some(s) = &source {
            base = base.filter(quarantine::Column::Source.eq(s.clone()));
        }
        if !include_replayed.unwrap_or(false) {
            base = base.filter(quarantine::Column::ReplayedAt.is_null());
        }
        let key = Keyset::by(
            quarantine::Column::Id,
            Dir::Desc,
            |m: &quarantine::Model| m.id,
        );
        keyset_page(ctx, base, &key, args, "quarantined records").await
    }
}

/// Operational mutations (operator or admin).
#[derive(Default)]
pub struct OpsMutation;

async fn find_source(txn: &DatabaseTransaction, id: &str) -> Result<source::Model> {
    source::Entity::find_by_id(id.to_string())
        .one(txn)
        .await
        .map_err(|e| internal("reading a source", e))?
        .ok_or_else(|| not_found(format!("source {id:?}")))
}

impl OpsMutation {
    async fn set_paused(&self, ctx: &Context<'_>, id: String, paused: bool) -> Result<Chain> {
        let action = if paused {
            "pauseSource"
        } else {
            "resumeSource"
        };
        let after = audited(ctx, action, |txn, _| {
            Box::pin(async move {
                let before = find_source(txn, &id).await?;
                let mut am: source::ActiveModel = before.clone().into();
                am.paused = Set(paused);
                if !paused && before.status == "paused" {
                    am.status = Set("idle".to_string());
                }
                am.updated_at = Set(Utc::now());
                let after = am
                    .update(txn)
                    .await
                    .map_err(|e| internal("updating a source", e))?;
                let arguments = json!({ "id": id });
                Ok(Audited::new(after.clone(), id, arguments)
                    .before(&before)
                    .after(&after))
            })
        })
        .await?;
        Ok(Chain::from(after))
    }

    async fn command(
        &self,
        ctx: &Context<'_>,
        id: String,
        command: &'static str,
        action: &str,
        arguments: Value,
    ) -> Result<Chain> {
        let row = audited(ctx, action, |txn, who| {
            Box::pin(async move {
                let row = find_source(txn, &id).await?;
                let cmd = commands::enqueue(txn, &id, command, arguments.clone(), &who.subject)
                    .await
                    .map_err(|e| internal("queueing a source command", e))?;
                Ok(Audited::new(row.clone(), id, arguments)
                    .before(&row)
                    .after(&json!({ "commandId": cmd.id })))
            })
        })
        .await?;
        Ok(Chain::from(row))
    }
}

#[Object]
impl OpsMutation {
    /// Pauses a source: its task stops fetching until resumed (state is kept).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn pause_source(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Source id, e.g. `evm:sepolia`.")] id: String,
    ) -> Result<Chain> {
        self.set_paused(ctx, id, true).await
    }

    /// Resumes a paused source.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn resume_source(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Source id.")] id: String,
    ) -> Result<Chain> {
        self.set_paused(ctx, id, false).await
    }

    /// Re-indexes a source from a height or cursor: the supervisor stops the task, stores the
    /// new position and starts it again (within a few seconds). Returns the source as it was.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn rewind_source(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Source id.")] id: String,
        #[graphql(desc = "Height (block or ledger) to continue after.")] height: Option<i64>,
        #[graphql(desc = "Source-specific cursor to continue after (default: the height).")] cursor: Option<String>,
    ) -> Result<Chain> {
        if height.is_none() && cursor.is_none() {
            return Err(bad_input("height", "give a height or a cursor"));
        }
        if height.is_some_and(|h| h < 0) {
            return Err(bad_input("height", "must not be negative"));
        }
        self.command(
            ctx,
            id,
            commands::REWIND,
            "rewindSource",
            json!({ "height": height, "cursor": cursor }),
        )
        .await
    }

    /// Restarts a source's task (it reloads its state from the database).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn restart_source(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Source id.")] id: String,
    ) -> Result<Chain> {
        self.command(ctx, id, commands::RESTART, "restartSource", json!({}))
            .await
    }

    /// Closes a circuit breaker now (the guarded upstream is tried again at once).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn reset_circuit_breaker(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Breaker name.")] name: String,
    ) -> Result<CircuitBreakerState> {
        let after = audited(ctx, "resetCircuitBreaker", |txn, who| {
            Box::pin(async move {
                let (before, after) = breaker_store::request_reset(txn, &name, &who.subject)
                    .await
                    .map_err(|e| internal("resetting a breaker", e))?
                    .ok_or_else(|| not_found(format!("circuit breaker {name:?}")))?;
                let arguments = json!({ "name": name });
                Ok(Audited::new(after.clone(), name, arguments)
                    .before(&before)
                    .after(&after))
            })
        })
        .await?;
        Ok(after.into())
    }
}
