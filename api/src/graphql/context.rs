//! What every resolver reads from its context: the shared state, paging arguments, the
//! caller's address, and [`audited`], the one way a mutation writes its change together with
//! its audit row.

use async_graphql::{Context, Result};
use futures::future::BoxFuture;
use sea_orm::{DatabaseTransaction, TransactionTrait};
use serde::Serialize;
use serde_json::Value;

use super::error::internal;
use super::pagination::PageArgs;
use crate::audit::{self, AuditEntry};
use crate::auth::{principal, ClientAddr, Principal};
use crate::state::AppState;

/// The shared application state (registered as schema data by `build_schema`).
pub(crate) fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

/// `first` / `after` checked against `graphql.default_page_size` and `graphql.max_page_size`.
pub(crate) fn page_args(
    ctx: &Context<'_>,
    first: Option<i32>,
    after: Option<String>,
) -> Result<PageArgs> {
    let g = &state(ctx).config.graphql;
    PageArgs::parse(first, after, g.default_page_size, g.max_page_size)
}

/// The client's IP address, when the transport knows it.
pub(crate) fn client_addr(ctx: &Context<'_>) -> Option<String> {
    ctx.data_opt::<ClientAddr>()
        .and_then(|a| a.0)
        .map(|ip| ip.to_string())
}

/// The authenticated caller of a guarded field.
pub(crate) fn caller<'a>(ctx: &Context<'a>) -> Result<&'a Principal> {
    principal(ctx).ok_or_else(|| internal("reading the caller", "guard passed without principal"))
}

/// What an audited change did: the value the mutation returns and the audit row's fields.
pub(crate) struct Audited<T> {
    out: T,
    target: String,
    arguments: Value,
    before: Option<Value>,
    after: Option<Value>,
}

impl<T> Audited<T> {
    /// A change on `target` made with `arguments` (as the client gave them, secrets redacted)
    /// that returns `out`.
    pub(crate) fn new(out: T, target: impl Into<String>, arguments: Value) -> Self {
        Self {
            out,
            target: target.into(),
            arguments,
            before: None,
            after: None,
        }
    }

    /// The state before the change (`None` or JSON null: there was none).
    pub(crate) fn before(mut self, before: &impl Serialize) -> Self {
        self.before = to_json(before);
        self
    }

    /// The state after the change.
    pub(crate) fn after(mut self, after: &impl Serialize) -> Self {
        self.after = to_json(after);
        self
    }
}

fn to_json(v: &impl Serialize) -> Option<Value> {
    serde_json::to_value(v).ok().filter(|v| !v.is_null())
}

/// Runs `change` in one transaction with the audit row of `action` (caller and client
/// address from the request); commits only when both are written. Anything to publish on the
/// bus goes out after this returns, i.e. after the commit.
pub(crate) async fn audited<T, F>(ctx: &Context<'_>, action: &str, change: F) -> Result<T>
where
    F: for<'t> FnOnce(&'t DatabaseTransaction, &'t Principal) -> BoxFuture<'t, Result<Audited<T>>>,
{
    let who = caller(ctx)?;
    let txn = state(ctx)
        .db
        .begin()
        .await
        .map_err(|e| internal("starting a transaction", e))?;
    let done = change(&txn, who).await?;
    audit::record(
        &txn,
        AuditEntry {
            principal: who,
            client_addr: client_addr(ctx),
            action,
            target: Some(done.target),
            arguments: done.arguments,
            before: done.before,
            after: done.after,
        },
    )
    .await
    .map_err(|e| internal("writing the audit log", e))?;
    txn.commit().await.map_err(|e| internal("committing", e))?;
    Ok(done.out)
}
