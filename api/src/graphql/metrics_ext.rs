//! An async-graphql extension recording each operation's count and latency by name, and
//! its kind for the response cache ([`super::response_cache::note_operation`]).

use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerResult, Variables};

use super::response_cache::{note_operation, OperationKind};
use orrery_indexer::metrics::Metrics;

/// The `operation` label of `name`: client-chosen names are cut to 64 chars (bounded label
/// cardinality).
pub fn label(name: &str) -> &str {
    match name.char_indices().nth(64) {
        Some((cut, _)) => &name[..cut],
        None => name,
    }
}

/// Factory registered on the schema.
pub struct OperationMetrics;

impl ExtensionFactory for OperationMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationMetricsExt)
    }
}

struct OperationMetricsExt;

#[async_trait::async_trait]
impl Extension for OperationMetricsExt {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        note_operation(ctx.data_opt::<Arc<OperationKind>>(), &doc);
        Ok(doc)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let start = Instant::now();
        let response = next.run(ctx, operation_name).await;
        let name = label(operation_name.unwrap_or("anonymous"));
        let m = Metrics::global();
        m.graphql_duration
            .with_label_values(&[name])
            .observe(start.elapsed().as_secs_f64());
        let status = if response.errors.is_empty() {
            "ok"
        } else {
            "error"
        };
        m.graphql_requests.with_label_values(&[name, status]).inc();
        response
    }
}
