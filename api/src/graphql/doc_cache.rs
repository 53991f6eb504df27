//! A cache of parsed and validated documents, keyed by the exact query text: a dashboard
//! sending the same queries again and again pays for parsing and validation once.
//!
//! Registered as the innermost extension, so every other extension (cost limits, persisted
//! queries) still sees each request. The parse step is replaced by a clone of the cached
//! document; the validation step by the cached result for the same operation name and
//! variables (validation depends on both: variable types and values, and a complexity that
//! counts `first`). Only successful parses and validations are cached, so a rejected query
//! is rejected with its full error every time. Keys are the whole text, never a hash, so two
//! different queries can never share an entry.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest,
    NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, ServerError, ServerResult, ValidationResult, Variables};
use lru::LruCache;

/// Queries longer than this are not cached (a cache entry holds the text and its document).
const MAX_CACHED_QUERY_BYTES: usize = 16 * 1024;
/// Validation results kept per document (one per operation name and variables seen).
const MAX_VALIDATIONS_PER_DOCUMENT: usize = 16;

struct Entry {
    document: ExecutableDocument,
    /// `(operation name, variables as JSON)` -> result.
    validations: Vec<(Arc<str>, ValidationResult)>,
}

type Cache = Mutex<LruCache<Arc<str>, Entry>>;

/// Factory registered on the schema; one shared cache of `capacity` documents.
pub struct DocumentCache {
    cache: Arc<Cache>,
}

impl DocumentCache {
    /// A cache of at most `capacity` documents; `None` when `capacity` is 0 (disabled).
    pub fn new(capacity: usize) -> Option<Self> {
        let capacity = NonZeroUsize::new(capacity)?;
        Some(Self {
            cache: Arc::new(Mutex::new(LruCache::new(capacity))),
        })
    }
}

impl ExtensionFactory for DocumentCache {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentCacheExt {
            cache: self.cache.clone(),
            request: Mutex::new(None),
        })
    }
}

/// What one request's hooks share: its query text and validation key, once known.
struct Keys {
    query: Arc<str>,
    validation: Arc<str>,
}

struct DocumentCacheExt {
    cache: Arc<Cache>,
    /// Set by `parse_query` when the query is cacheable.
    request: Mutex<Option<Keys>>,
}

fn validation_key(operation_name: Option<&str>, variables: &Variables) -> Arc<str> {
    // The operation name cannot contain a NUL, so the key is unambiguous.
    let vars = serde_json::to_string(variables).unwrap_or_default();
    format!("{}\0{vars}", operation_name.unwrap_or("")).into()
}

#[async_trait::async_trait]
impl Extension for DocumentCacheExt {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = next.run(ctx, request).await?;
        if request.query.len() <= MAX_CACHED_QUERY_BYTES {
            let keys = Keys {
                query: request.query.as_str().into(),
                validation: validation_key(request.operation_name.as_deref(), &request.variables),
            };
            *lock(&self.request) = Some(keys);
        }
        Ok(request)
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let known = lock(&self.request)
            .as_ref()
            .filter(|k| &*k.query == query)
            .map(|k| k.query.clone());
        let Some(key) = known else {
            // Another extension rewrote the text after prepare_request: not cached.
            *lock(&self.request) = None;
            return next.run(ctx, query, variables).await;
        };
        if let Some(e) = lock(&self.cache).get(&key) {
            return Ok(e.document.clone());
        }
        let document = next.run(ctx, query, variables).await?;
        lock(&self.cache).put(
            key,
            Entry {
                document: document.clone(),
                validations: Vec::new(),
            },
        );
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let Some(keys) = lock(&self.request).take() else {
            return next.run(ctx).await;
        };
        if let Some(e) = lock(&self.cache).get(&keys.query) {
            if let Some((_, r)) = e.validations.iter().find(|(k, _)| *k == keys.validation) {
                return Ok(*r);
            }
        }
        let result = next.run(ctx).await?;
        if let Some(e) = lock(&self.cache).get_mut(&keys.query) {
            if e.validations.len() >= MAX_VALIDATIONS_PER_DOCUMENT {
                e.validations.remove(0);
            }
            e.validations.push((keys.validation, result));
        }
        Ok(result)
    }
}

/// The data behind these locks stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    use super::*;

    struct Q;

    #[Object]
    impl Q {
        async fn add(&self, a: i32, b: i32) -> i32 {
            a + b
        }
    }

    fn schema(cache: DocumentCache) -> Schema<Q, EmptyMutation, EmptySubscription> {
        Schema::build(Q, EmptyMutation, EmptySubscription)
            .limit_complexity(5)
            .extension(cache)
            .finish()
    }

    #[tokio::test]
    async fn cached_documents_answer_like_fresh_ones() {
        let cache = DocumentCache::new(8).expect("enabled");
        let shared = cache.cache.clone();
        let s = schema(cache);
        let q = "query($a: Int!) { add(a: $a, b: 2) }";
        for a in [1, 2, 1, 3] {
            let r = s
                .execute(
                    Request::new(q).variables(Variables::from_json(serde_json::json!({"a": a}))),
                )
                .await;
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            assert_eq!(r.data.into_json().unwrap()["add"], a + 2);
        }
        let guard = lock(&shared);
        let (_, entry) = guard.iter().next().expect("one entry");
        assert_eq!(guard.len(), 1);
        assert_eq!(entry.validations.len(), 3, "one per distinct variables");
    }

    #[tokio::test]
    async fn invalid_queries_fail_every_time_and_are_not_cached() {
        let cache = DocumentCache::new(8).expect("enabled");
        let shared = cache.cache.clone();
        let s = schema(cache);
        // Wrong variable type: parses, fails validation.
        let q = "query($a: String!) { add(a: $a, b: 2) }";
        for _ in 0..2 {
            let r = s
                .execute(
                    Request::new(q).variables(Variables::from_json(serde_json::json!({"a": "x"}))),
                )
                .await;
            assert!(!r.errors.is_empty());
        }
        // Too complex: rejected each time.
        let q = "{ a: add(a: 1, b: 1) b: add(a: 1, b: 1) c: add(a: 1, b: 1) d: add(a: 1, b: 1) e: add(a: 1, b: 1) f: add(a: 1, b: 1) }";
        for _ in 0..2 {
            let r = s.execute(q).await;
            assert!(!r.errors.is_empty());
        }
        // Syntax error: never cached.
        for _ in 0..2 {
            assert!(!s.execute("{ add(").await.errors.is_empty());
        }
        let guard = lock(&shared);
        assert!(guard.iter().all(|(_, e)| e.validations.is_empty()));
        assert!(guard.iter().all(|(k, _)| &**k != "{ add("));
    }

    #[test]
    fn zero_capacity_disables_the_cache() {
        assert!(DocumentCache::new(0).is_none());
    }
}
