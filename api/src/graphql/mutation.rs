//! Admin mutations. Every one needs an operator or admin token, writes an audit row in the
//! same transaction as its change, and publishes the change on the bus after commit.

use async_graphql::{Context, Object, Result};
use orrery_indexer::bus::{publish_logged, topics, BusEvent};
use orrery_indexer::config_store::{self, ConfigStoreError, ConfigType};
use sea_orm::TransactionTrait;
use serde_json::json;

use super::error::{bad_input, internal};
use super::types::ConfigEntry;
use crate::audit::{self, AuditEntry};
use crate::auth::{principal, ClientAddr, Role, RoleGuard};
use crate::state::AppState;

/// Config mutations.
#[derive(Default)]
pub struct CoreMutation;

pub(crate) fn client_addr(ctx: &Context<'_>) -> Option<String> {
    ctx.data_opt::<ClientAddr>()
        .and_then(|a| a.0)
        .map(|ip| ip.to_string())
}

#[Object]
impl CoreMutation {
    /// Sets a database-backed setting, validated against its type. A new key needs `valueType`.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn set_config(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Dotted key, e.g. `oracle.min_confidence`.")] key: String,
        #[graphql(desc = "New value as text; must parse as the key's type.")] value: String,
        #[graphql(desc = "Type for a new key: string, integer, decimal, boolean, json, duration.")]
        value_type: Option<String>,
        #[graphql(desc = "Description for a new key.")] description: Option<String>,
    ) -> Result<ConfigEntry> {
        let state = ctx.data_unchecked::<AppState>();
        let who = principal(ctx)
            .ok_or_else(|| internal("reading the caller", "guard passed without principal"))?;
        let ty = value_type
            .as_deref()
            .map(ConfigType::parse)
            .transpose()
            .map_err(|e| bad_input("valueType", e))?;
        let txn = state
            .db
            .begin()
            .await
            .map_err(|e| internal("starting a transaction", e))?;
        let (before, after) =
            match config_store::set(&txn, &key, &value, ty, description.as_deref(), &who.subject)
                .await
            {
                Ok(r) => r,
                Err(ConfigStoreError::Db(e)) => return Err(internal("writing config", e)),
                Err(e @ ConfigStoreError::BadKey { .. }) => return Err(bad_input("key", e)),
                Err(
                    e @ (ConfigStoreError::MissingType { .. }
                    | ConfigStoreError::UnknownType { .. }
                    | ConfigStoreError::TypeMismatch { .. }),
                ) => return Err(bad_input("valueType", e)),
                Err(e) => return Err(bad_input("value", e)),
            };
        audit::record(
            &txn,
            AuditEntry {
                principal: who,
                client_addr: client_addr(ctx),
                action: "setConfig",
                target: Some(key.clone()),
                arguments: json!({ "key": key, "value": value, "valueType": value_type, "description": description }),
                before: before.as_ref().and_then(|b| serde_json::to_value(b).ok()),
                after: serde_json::to_value(&after).ok(),
            },
        )
        .await
        .map_err(|e| internal("writing the audit log", e))?;
        txn.commit()
            .await
            .map_err(|e| internal("committing config", e))?;
        let payload = serde_json::to_value(&after).map_err(|e| internal("encoding config", e))?;
        publish_logged(
            state.bus.as_ref(),
            BusEvent::new(topics::CONFIG_UPDATED, payload),
        )
        .await;
        Ok(ConfigEntry::from(after))
    }
}
