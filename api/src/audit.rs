//! The audit trail: one row per admin action (who, what, arguments, before/after, when),
//! written in the same transaction as the change it records.

use chrono::Utc;
use orrery_entity::audit_log;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, Set};
use serde_json::Value;

use crate::auth::Principal;

/// One audited action.
pub struct AuditEntry<'a> {
    /// Who acted.
    pub principal: &'a Principal,
    /// Client address, when known.
    pub client_addr: Option<String>,
    /// Mutation name, e.g. `setConfig`.
    pub action: &'a str,
    /// What it acted on, e.g. a config key.
    pub target: Option<String>,
    /// The arguments given.
    pub arguments: Value,
    /// State before, when there was one.
    pub before: Option<Value>,
    /// State after.
    pub after: Option<Value>,
}

/// Inserts the audit row on `db` (pass the transaction of the change).
pub async fn record<C: ConnectionTrait>(db: &C, entry: AuditEntry<'_>) -> Result<(), DbErr> {
    audit_log::ActiveModel {
        at: Set(Utc::now()),
        actor: Set(entry.principal.subject.clone()),
        role: Set(entry.principal.role.as_str().to_string()),
        action: Set(entry.action.to_string()),
        target: Set(entry.target),
        arguments: Set(entry.arguments),
        before: Set(entry.before),
        after: Set(entry.after),
        client_addr: Set(entry.client_addr),
        outcome: Set("ok".to_string()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}
