//! An async-graphql extension recording each operation's count and latency by name.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute};
use async_graphql::Response;
use orrery_indexer::metrics::Metrics;

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
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let start = Instant::now();
        let response = next.run(ctx, operation_name).await;
        let name = operation_name.unwrap_or("anonymous");
        // Bound label cardinality: client-chosen names are cut to 64 chars.
        let name = match name.char_indices().nth(64) {
            Some((cut, _)) => &name[..cut],
            None => name,
        };
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
