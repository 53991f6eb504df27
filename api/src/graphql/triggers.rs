//! Triggers and their action runs: `triggers`, `actionRuns(trigger, status)` and the audited
//! operator mutations `createTrigger`, `updateTrigger`, `deleteTrigger`.

use async_graphql::{Context, Enum, InputObject, Json, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use orrery_entity::{action_run, trigger};
use orrery_indexer::triggers::{conditions, status};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::{json, Value};

use super::context::{audited, page_args, Audited};
use super::error::{bad_input, internal, not_found};
use super::pagination::{keyset_page, Dir, Keyset, Page};
use crate::auth::{Role, RoleGuard};

/// The circuit breaker of one trigger's deliveries.
#[derive(SimpleObject, Clone, Debug)]
pub struct TriggerBreaker {
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Consecutive failures counted.
    pub failure_count: i32,
    /// When it last opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// Last failure.
    pub last_error: Option<String>,
}

/// A stored trigger (its secret is never shown).
#[derive(SimpleObject, Clone, Debug)]
pub struct Trigger {
    /// Trigger id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Chain watched.
    pub chain: String,
    /// Contract (0x hex); null for any.
    pub contract: Option<String>,
    /// Event name, e.g. `NewFeedback`.
    pub event_name: String,
    /// Conditions on decoded arguments: `[{field, op, value}]`, op one of
    /// `eq`, `ne`, `in`, `gt`, `gte`, `lt`, `lte`.
    pub conditions: Json<Value>,
    /// Sink kind (`webhook`).
    pub sink: String,
    /// Webhook URL.
    pub webhook_url: String,
    /// Whether new events are matched and queued actions run.
    pub enabled: bool,
    /// Attempts before an action is dead-lettered.
    pub max_attempts: i32,
    /// Consecutive failures opening the breaker.
    pub failure_threshold: i32,
    /// Seconds an open breaker waits before a probe.
    pub recovery_seconds: i64,
    /// The delivery circuit breaker.
    pub breaker: TriggerBreaker,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<trigger::Model> for Trigger {
    fn from(m: trigger::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            chain: m.chain,
            contract: m.contract,
            event_name: m.event_name,
            conditions: Json(m.conditions),
            sink: m.sink,
            webhook_url: m.webhook_url,
            enabled: m.enabled,
            max_attempts: m.max_attempts,
            failure_threshold: m.failure_threshold,
            recovery_seconds: m.recovery_secs,
            breaker: TriggerBreaker {
                state: m.breaker_state,
                failure_count: m.breaker_failures,
                opened_at: m.breaker_opened_at,
                last_error: m.breaker_last_error,
            },
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// Status of an action run.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ActionRunStatus {
    /// Waiting for its first attempt.
    Pending,
    /// Being delivered.
    Running,
    /// Delivered.
    Succeeded,
    /// Last attempt failed; a retry is scheduled.
    Failed,
    /// Dead letter: gave up.
    Dead,
}

impl ActionRunStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => status::PENDING,
            Self::Running => status::RUNNING,
            Self::Succeeded => status::SUCCEEDED,
            Self::Failed => status::FAILED,
            Self::Dead => status::DEAD,
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            status::RUNNING => Self::Running,
            status::SUCCEEDED => Self::Succeeded,
            status::FAILED => Self::Failed,
            status::DEAD => Self::Dead,
            _ => Self::Pending,
        }
    }
}

/// One queued or finished action.
#[derive(SimpleObject, Clone, Debug)]
pub struct ActionRun {
    /// Run id.
    pub id: i64,
    /// The trigger that matched.
    pub trigger_id: i64,
    /// The event: `chain:blockHash:logIndex`.
    pub event_key: String,
    /// Idempotency key sent to the receiver.
    pub idempotency_key: String,
    /// The body delivered.
    pub payload: Json<Value>,
    /// Status.
    pub status: ActionRunStatus,
    /// Attempts started.
    pub attempts: i32,
    /// Not run before this time.
    pub next_attempt_at: DateTime<Utc>,
    /// Last failure.
    pub last_error: Option<String>,
    /// HTTP status of the last answer.
    pub response_status: Option<i32>,
    /// When the event committed.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<action_run::Model> for ActionRun {
    fn from(m: action_run::Model) -> Self {
        Self {
            id: m.id,
            trigger_id: m.trigger_id,
            event_key: m.event_key,
            idempotency_key: m.idempotency_key,
            payload: Json(m.payload),
            status: ActionRunStatus::parse(&m.status),
            attempts: m.attempts,
            next_attempt_at: m.next_attempt_at,
            last_error: m.last_error,
            response_status: m.response_status,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// Trigger queries.
#[derive(Default)]
pub struct TriggersQuery;

#[Object]
impl TriggersQuery {
    /// Stored triggers by id.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn triggers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only triggers of this chain.")] chain: Option<String>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<Trigger>> {
        let args = page_args(ctx, first, after)?;
        let mut base = trigger::Entity::find();
        if let Some(c) = &chain {
            base = base.filter(trigger::Column::Chain.eq(c.clone()));
        }
        let key = Keyset::by(trigger::Column::Id, Dir::Asc, |m: &trigger::Model| m.id);
        keyset_page(ctx, base, &key, args, "triggers").await
    }

    /// Action runs by id (oldest first); `status: DEAD` lists the dead letters.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn action_runs(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only runs of this trigger id.")] trigger: Option<i64>,
        #[graphql(desc = "Only runs in this status.")] status: Option<ActionRunStatus>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<ActionRun>> {
        let args = page_args(ctx, first, after)?;
        let mut base = action_run::Entity::find();
        if let Some(t) = trigger {
            base = base.filter(action_run::Column::TriggerId.eq(t));
        }
        if let Some(s) = status {
            base = base.filter(action_run::Column::Status.eq(s.as_str()));
        }
        let key = Keyset::by(action_run::Column::Id, Dir::Asc, |m: &action_run::Model| {
            m.id
        });
        keyset_page(ctx, base, &key, args, "action runs").await
    }
}

/// A new trigger.
#[derive(InputObject)]
pub struct CreateTriggerInput {
    /// Name.
    pub name: String,
    /// Chain name (as configured).
    pub chain: String,
    /// Contract address (0x hex); omit for any contract.
    pub contract: Option<String>,
    /// Event name, e.g. `NewFeedback`.
    pub event_name: String,
    /// Conditions `[{field, op, value}]` (default none).
    pub conditions: Option<Json<Value>>,
    /// Webhook URL (http or https).
    pub webhook_url: String,
    /// HMAC-SHA256 secret for `X-Orrery-Signature` (at least 8 characters).
    pub secret: String,
    /// Whether it is active (default true).
    pub enabled: Option<bool>,
    /// Attempts before dead-lettering (default 5, 1..=100).
    pub max_attempts: Option<i32>,
    /// Failures opening the breaker (default 5, 1..=1000).
    pub failure_threshold: Option<i32>,
    /// Seconds before an open breaker probes (default 60, 1..=86400).
    pub recovery_seconds: Option<i64>,
}

/// Changes to a trigger (omitted fields stay).
#[derive(InputObject, Default)]
pub struct UpdateTriggerInput {
    /// Name.
    pub name: Option<String>,
    /// Contract address; an empty string means any contract.
    pub contract: Option<String>,
    /// Event name.
    pub event_name: Option<String>,
    /// Conditions.
    pub conditions: Option<Json<Value>>,
    /// Webhook URL.
    pub webhook_url: Option<String>,
    /// New secret.
    pub secret: Option<String>,
    /// Whether it is active.
    pub enabled: Option<bool>,
    /// Attempts before dead-lettering.
    pub max_attempts: Option<i32>,
    /// Failures opening the breaker.
    pub failure_threshold: Option<i32>,
    /// Seconds before an open breaker probes.
    pub recovery_seconds: Option<i64>,
}

fn check_conditions(v: &Value) -> Result<()> {
    conditions::parse(v)
        .map(|_| ())
        .map_err(|e| bad_input("conditions", e))
}

fn check_url(u: &str) -> Result<()> {
    match url::Url::parse(u) {
        Ok(p) if p.scheme() == "http" || p.scheme() == "https" => Ok(()),
        _ => Err(bad_input("webhookUrl", "must be an http(s) URL")),
    }
}

fn check_secret(s: &str) -> Result<()> {
    if s.len() < 8 {
        return Err(bad_input("secret", "must have at least 8 characters"));
    }
    Ok(())
}

fn check_range(name: &str, v: i64, lo: i64, hi: i64) -> Result<()> {
    if v < lo || v > hi {
        return Err(bad_input(name, format!("must be within {lo}..={hi}")));
    }
    Ok(())
}

fn check_contract(c: &str) -> Result<String> {
    let lower = c.to_ascii_lowercase();
    let ok = lower.len() == 42
        && lower.starts_with("0x")
        && lower[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(bad_input("contract", "must be a 0x address"));
    }
    Ok(lower)
}

/// Trigger mutations (operator or admin, audited).
#[derive(Default)]
pub struct TriggersMutation;

async fn find_trigger(txn: &sea_orm::DatabaseTransaction, id: i64) -> Result<trigger::Model> {
    trigger::Entity::find_by_id(id)
        .one(txn)
        .await
        .map_err(|e| internal("reading a trigger", e))?
        .ok_or_else(|| not_found(format!("trigger {id}")))
}

/// Audit arguments without the secret.
fn redact(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if o.contains_key("secret") {
            o.insert("secret".into(), json!("<redacted>"));
        }
    }
    v
}

#[Object]
impl TriggersMutation {
    /// Creates a trigger; matching starts with the next events committed.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn create_trigger(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The trigger.")] input: CreateTriggerInput,
    ) -> Result<Trigger> {
        let conds = input.conditions.map(|j| j.0).unwrap_or(json!([]));
        check_conditions(&conds)?;
        check_url(&input.webhook_url)?;
        check_secret(&input.secret)?;
        let max_attempts = input.max_attempts.unwrap_or(5);
        let threshold = input.failure_threshold.unwrap_or(5);
        let recovery = input.recovery_seconds.unwrap_or(60);
        check_range("maxAttempts", max_attempts.into(), 1, 100)?;
        check_range("failureThreshold", threshold.into(), 1, 1000)?;
        check_range("recoverySeconds", recovery, 1, 86_400)?;
        if input.name.trim().is_empty() || input.event_name.trim().is_empty() {
            return Err(bad_input("name", "name and eventName must not be empty"));
        }
        let contract = input.contract.as_deref().map(check_contract).transpose()?;
        let now = Utc::now();
        let am = trigger::ActiveModel {
            name: Set(input.name.clone()),
            chain: Set(input.chain.clone()),
            contract: Set(contract),
            event_name: Set(input.event_name.clone()),
            conditions: Set(conds.clone()),
            sink: Set("webhook".into()),
            webhook_url: Set(input.webhook_url.clone()),
            secret: Set(input.secret.clone()),
            enabled: Set(input.enabled.unwrap_or(true)),
            max_attempts: Set(max_attempts),
            failure_threshold: Set(threshold),
            recovery_secs: Set(recovery),
            breaker_state: Set("closed".into()),
            breaker_failures: Set(0),
            breaker_opened_at: Set(None),
            breaker_last_error: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        };
        let arguments = redact(json!({
            "name": input.name, "chain": input.chain, "contract": input.contract,
            "eventName": input.event_name, "conditions": conds,
            "webhookUrl": input.webhook_url, "secret": "",
            "maxAttempts": max_attempts, "failureThreshold": threshold,
            "recoverySeconds": recovery,
        }));
        let row = audited(ctx, "createTrigger", |txn, _| {
            Box::pin(async move {
                let row = am
                    .insert(txn)
                    .await
                    .map_err(|e| internal("inserting a trigger", e))?;
                Ok(Audited::new(row.clone(), row.id.to_string(), arguments).after(&row))
            })
        })
        .await?;
        Ok(row.into())
    }

    /// Changes a trigger (queued actions keep their payload).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn update_trigger(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Trigger id.")] id: i64,
        #[graphql(desc = "The changes.")] input: UpdateTriggerInput,
    ) -> Result<Trigger> {
        let after = audited(ctx, "updateTrigger", |txn, _| {
            Box::pin(async move {
                let before = find_trigger(txn, id).await?;
                let mut am: trigger::ActiveModel = before.clone().into();
                let mut args = serde_json::Map::new();
                if let Some(n) = input.name {
                    args.insert("name".into(), json!(n));
                    am.name = Set(n);
                }
                if let Some(c) = input.contract {
                    args.insert("contract".into(), json!(c));
                    am.contract = Set(if c.is_empty() {
                        None
                    } else {
                        Some(check_contract(&c)?)
                    });
                }
                if let Some(e) = input.event_name {
                    args.insert("eventName".into(), json!(e));
                    am.event_name = Set(e);
                }
                if let Some(c) = input.conditions {
                    check_conditions(&c.0)?;
                    args.insert("conditions".into(), c.0.clone());
                    am.conditions = Set(c.0);
                }
                if let Some(u) = input.webhook_url {
                    check_url(&u)?;
                    args.insert("webhookUrl".into(), json!(u));
                    am.webhook_url = Set(u);
                }
                if let Some(s) = input.secret {
                    check_secret(&s)?;
                    args.insert("secret".into(), json!("<redacted>"));
                    am.secret = Set(s);
                }
                if let Some(e) = input.enabled {
                    args.insert("enabled".into(), json!(e));
                    am.enabled = Set(e);
                }
                if let Some(m) = input.max_attempts {
                    check_range("maxAttempts", m.into(), 1, 100)?;
                    args.insert("maxAttempts".into(), json!(m));
                    am.max_attempts = Set(m);
                }
                if let Some(f) = input.failure_threshold {
                    check_range("failureThreshold", f.into(), 1, 1000)?;
                    args.insert("failureThreshold".into(), json!(f));
                    am.failure_threshold = Set(f);
                }
                if let Some(r) = input.recovery_seconds {
                    check_range("recoverySeconds", r, 1, 86_400)?;
                    args.insert("recoverySeconds".into(), json!(r));
                    am.recovery_secs = Set(r);
                }
                am.updated_at = Set(Utc::now());
                let after = am
                    .update(txn)
                    .await
                    .map_err(|e| internal("updating a trigger", e))?;
                args.insert("id".into(), json!(id));
                Ok(
                    Audited::new(after.clone(), id.to_string(), Value::Object(args))
                        .before(&before)
                        .after(&after),
                )
            })
        })
        .await?;
        Ok(after.into())
    }

    /// Deletes a trigger; its queued actions become dead letters. Returns the deleted trigger.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn delete_trigger(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Trigger id.")] id: i64,
    ) -> Result<Trigger> {
        let before = audited(ctx, "deleteTrigger", |txn, _| {
            Box::pin(async move {
                let before = find_trigger(txn, id).await?;
                trigger::Entity::delete_by_id(id)
                    .exec(txn)
                    .await
                    .map_err(|e| internal("deleting a trigger", e))?;
                let buried = action_run::Entity::update_many()
                    .col_expr(action_run::Column::Status, Expr::value(status::DEAD))
                    .col_expr(
                        action_run::Column::LastError,
                        Expr::value("trigger deleted"),
                    )
                    .col_expr(action_run::Column::UpdatedAt, Expr::value(Utc::now()))
                    .filter(action_run::Column::TriggerId.eq(id))
                    .filter(action_run::Column::Status.is_in([
                        status::PENDING,
                        status::FAILED,
                        status::RUNNING,
                    ]))
                    .exec(txn)
                    .await
                    .map_err(|e| internal("dead-lettering queued actions", e))?;
                let after = json!({ "deadLettered": buried.rows_affected });
                Ok(
                    Audited::new(before.clone(), id.to_string(), json!({ "id": id }))
                        .before(&before)
                        .after(&after),
                )
            })
        })
        .await?;
        Ok(before.into())
    }
}
