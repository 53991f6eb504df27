//! Admin mutations. Every one needs an operator or admin token, writes an audit row in the
//! same transaction as its change, and publishes the change on the bus after commit.

use async_graphql::{Context, Object, Result};
use orrery_indexer::bus::{publish_logged, BusEvent};
use orrery_indexer::config_store::{self, ConfigStoreError, ConfigType};
use serde_json::json;

use super::context::{audited, state, Audited};
use super::error::{bad_input, internal};
use super::types::ConfigEntry;
use crate::auth::{Role, RoleGuard};

/// Config mutations.
#[derive(Default)]
pub struct CoreMutation;

/// The GraphQL error of a refused config change, naming the argument at fault.
fn config_error(e: ConfigStoreError) -> async_graphql::Error {
    match e {
        ConfigStoreError::Db(e) => internal("writing config", e),
        e @ ConfigStoreError::BadKey { .. } => bad_input("key", e),
        e @ (ConfigStoreError::MissingType { .. }
        | ConfigStoreError::UnknownType { .. }
        | ConfigStoreError::TypeMismatch { .. }) => bad_input("valueType", e),
        e => bad_input("value", e),
    }
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
        let ty = value_type
            .as_deref()
            .map(ConfigType::parse)
            .transpose()
            .map_err(|e| bad_input("valueType", e))?;
        let arguments = json!({ "key": key, "value": value, "valueType": value_type, "description": description });
        let after = audited(ctx, "setConfig", |txn, who| {
            Box::pin(async move {
                let (before, after) =
                    config_store::set(txn, &key, &value, ty, description.as_deref(), &who.subject)
                        .await
                        .map_err(config_error)?;
                Ok(Audited::new(after.clone(), key, arguments)
                    .before(&before)
                    .after(&after))
            })
        })
        .await?;
        publish_logged(state(ctx).bus.as_ref(), BusEvent::new(after.clone())).await;
        Ok(ConfigEntry::from(after))
    }
}
