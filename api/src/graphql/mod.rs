//! The GraphQL schema: queries over stored state, subscriptions over the event bus.

pub mod context;
pub mod doc_cache;
pub mod error;
pub mod evm;
pub mod http;
pub mod lease_loader;
pub mod limits;
pub mod metrics_ext;
pub mod mutation;
pub mod ops;
pub mod pagination;
pub mod persisted;
pub mod prices;
pub mod query;
pub mod response_cache;
pub mod stats;
pub mod stellar;
pub mod subscription;
pub mod triggers;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{MergedObject, MergedSubscription, Schema};

use crate::config::GraphqlConfig;
use crate::state::AppState;

/// Every query field: each area (core, stellar, evm, prices) contributes its own object.
#[derive(MergedObject, Default)]
pub struct QueryRoot(
    query::CoreQuery,
    ops::OpsQuery,
    stellar::StellarQuery,
    prices::PricesQuery,
    evm::EvmQuery,
    triggers::TriggersQuery,
    stats::StatsQuery,
);

/// Every mutation (all need an operator or admin token).
#[derive(MergedObject, Default)]
pub struct MutationRoot(
    mutation::CoreMutation,
    ops::OpsMutation,
    stellar::StellarMutation,
    triggers::TriggersMutation,
);

/// Every subscription (all read from the event bus).
#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(
    subscription::CoreSubscription,
    stellar::StellarSubscription,
    prices::PricesSubscription,
    evm::EvmSubscription,
);

/// The schema type served at `/graphql` and `/graphql/ws`.
pub type OrrerySchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema with its limits ([`limits::QueryLimits`]) and persisted queries
/// (`allow`: the allow-list read from `graphql.persisted_queries_path`); `state` is absent
/// only when exporting the SDL.
pub fn build_schema(
    limits: &GraphqlConfig,
    state: Option<AppState>,
    allow: HashMap<String, Arc<str>>,
) -> OrrerySchema {
    limits::set_default_page_size(limits.default_page_size);
    // Depth and complexity are checked by QueryLimits (with codes naming the limit), after
    // validation computed them; the outermost extension's `request` hook holds the timeout.
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .extension(limits::QueryLimits::new(limits))
    .extension(persisted::PersistedQueries::new(limits, allow))
    .extension(metrics_ext::OperationMetrics)
    .extension(crate::ws::DeliveryTiming);
    // Innermost, so every other extension (limits, persisted queries) still sees each request.
    if let Some(cache) = doc_cache::DocumentCache::new(limits.document_cache_size) {
        builder = builder.extension(cache);
    }
    if let Some(state) = state {
        builder = builder.data(stellar::StellarLoaders::new(state.db.clone()));
        builder = builder.data(lease_loader::LeaseLoader::data_loader(state.db.clone()));
        builder = builder.data(state);
    }
    builder.finish()
}

/// The SDL committed as `schema.graphql`.
pub fn sdl() -> String {
    let mut sdl = build_schema(&GraphqlConfig::default(), None, HashMap::new()).sdl();
    if !sdl.ends_with('\n') {
        sdl.push('\n');
    }
    sdl
}
