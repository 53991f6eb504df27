//! A cache of whole query responses: a dashboard polling the same query between two commits
//! is answered with the bytes of the last answer, without a database round trip.
//!
//! - **What is cached**: the serialized response of a single (not batched) *query* that
//!   succeeded (no errors, no extra HTTP headers), keyed by the exact request: query text,
//!   operation name, variables, extensions (so a persisted-query hash is its own key) and
//!   the `Authorization` header. Keys are whole texts, never hashes, so two different
//!   requests can never share an entry. Authentication and the batch checks still run on
//!   every request, before the lookup.
//! - **When it is dropped**: every event on this replica's bus (the sync engines publish one
//!   per commit, the mutations theirs, other replicas' arrive through Redis) and every
//!   mutation run here drop the whole cache at once (a generation counter: an entry is served
//!   only while the generation it was read under is current, so a response computed while
//!   a commit landed is never served after it). `graphql.response_cache_ms` bounds the rest:
//!   writes no bus carries (CLI tools, another replica on an in-process bus) and fields
//!   derived from the clock or in-memory counters.
//! - **How much**: `graphql.response_cache_bytes`, least recently used dropped first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::parser::types::{ExecutableDocument, OperationType};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use lru::LruCache;
use orrery_indexer::bus::SharedBus;
use tokio::sync::broadcast::error::RecvError;

use crate::config::GraphqlConfig;

/// The content type async-graphql's axum integration answers with.
const CONTENT_TYPE: &str = "application/graphql-response+json";

struct Entry {
    body: Bytes,
    cache_control: Option<HeaderValue>,
    generation: u64,
    at: Instant,
    /// Bytes held: key plus body.
    size: usize,
}

struct Lru {
    entries: LruCache<Box<str>, Entry>,
    bytes: usize,
}

/// The shared cache; see the module documentation.
pub struct ResponseCache {
    lru: Mutex<Lru>,
    generation: AtomicU64,
    ttl: Duration,
    budget: usize,
}

/// What one request's operation turned out to be, written by the parse hook
/// ([`note_operation`]) and read by the HTTP handler: only queries are cached.
#[derive(Default)]
pub struct OperationKind {
    /// The operation the request names (`operationName`), if any.
    name: Option<String>,
    kind: AtomicU8,
}

const UNKNOWN: u8 = 0;
const QUERY: u8 = 1;
const MUTATION: u8 = 2;
const SUBSCRIPTION: u8 = 3;

impl OperationKind {
    /// For a request selecting `operation_name`.
    pub fn new(operation_name: Option<&str>) -> Self {
        Self {
            name: operation_name.map(str::to_string),
            kind: AtomicU8::new(UNKNOWN),
        }
    }

    fn get(&self) -> u8 {
        self.kind.load(Ordering::Relaxed)
    }
}

/// Records the kind of the operation the request selects in `doc` into its
/// [`OperationKind`], when it has one (requests over HTTP do).
pub fn note_operation(kind: Option<&Arc<OperationKind>>, doc: &ExecutableDocument) {
    let Some(kind) = kind else { return };
    let ty = match kind.name.as_deref() {
        Some(name) => doc
            .operations
            .iter()
            .find(|(n, _)| n.is_some_and(|n| n.as_str() == name))
            .map(|(_, op)| op.node.ty),
        None => {
            let mut ops = doc.operations.iter();
            match (ops.next(), ops.next()) {
                (Some((_, op)), None) => Some(op.node.ty),
                _ => None,
            }
        }
    };
    let value = match ty {
        Some(OperationType::Query) => QUERY,
        Some(OperationType::Mutation) => MUTATION,
        Some(OperationType::Subscription) => SUBSCRIPTION,
        None => UNKNOWN,
    };
    kind.kind.store(value, Ordering::Relaxed);
}

impl ResponseCache {
    /// The cache `config` asks for; `None` when `graphql.response_cache_ms` is 0.
    pub fn new(config: &GraphqlConfig) -> Option<Arc<Self>> {
        if config.response_cache_ms == 0 {
            return None;
        }
        Some(Arc::new(Self {
            lru: Mutex::new(Lru {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            generation: AtomicU64::new(0),
            ttl: Duration::from_millis(config.response_cache_ms),
            budget: config.response_cache_bytes,
        }))
    }

    /// Drops every entry at once (they stay in memory until evicted or replaced, but are
    /// never served again).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The generation a request about to execute reads under.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Drops the cache on every event of `bus`, until the bus closes or the cache is gone.
    pub fn follow(self: &Arc<Self>, bus: &SharedBus) {
        let mut events = bus.subscribe();
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let outcome = events.recv().await;
                let Some(cache) = cache.upgrade() else { return };
                match outcome {
                    Ok(_) | Err(RecvError::Lagged(_)) => cache.invalidate(),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// The key of `request` sent with `authorization`; `None` when it cannot be cached
    /// (file uploads).
    pub fn key(authorization: Option<&str>, request: &async_graphql::Request) -> Option<String> {
        if !request.uploads.is_empty() {
            return None;
        }
        // Extensions are a hash map: sorted, so the same request always gives the same key.
        let extensions: BTreeMap<_, _> = request.extensions.0.iter().collect();
        let variables = serde_json::to_string(&request.variables).ok()?;
        let extensions = serde_json::to_string(&extensions).ok()?;
        // NUL separates the parts: none of them can contain one unescaped (JSON escapes it,
        // a header value cannot hold it, and async-graphql's lexer refuses it in the text).
        Some(format!(
            "{}\0{}\0{}\0{variables}\0{extensions}",
            authorization.unwrap_or(""),
            request.operation_name.as_deref().unwrap_or(""),
            request.query,
        ))
    }

    /// The cached answer for `key`, when it is still current.
    pub fn get(&self, key: &str) -> Option<Response> {
        let generation = self.generation();
        let mut lru = self.lru.lock().ok()?;
        let entry = lru.entries.get(key)?;
        if entry.generation != generation || entry.at.elapsed() > self.ttl {
            return None;
        }
        Some(answer(entry.body.clone(), entry.cache_control.clone()))
    }

    /// Answers with `response` and keeps it under `key` when it is a successful query read
    /// under `generation`; a mutation drops the cache instead.
    pub fn answer(
        &self,
        key: String,
        generation: u64,
        kind: &OperationKind,
        mut response: async_graphql::Response,
    ) -> Response {
        let cacheable = kind.get() == QUERY && response.is_ok() && response.http_headers.is_empty();
        if kind.get() == MUTATION {
            self.invalidate();
        }
        let cache_control = response
            .cache_control
            .value()
            .and_then(|v| HeaderValue::from_str(&v).ok());
        let headers = std::mem::take(&mut response.http_headers);
        let body = match serde_json::to_vec(&response) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                return super::http::error_response(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    &format!("cannot serialize the response: {e}"),
                    None,
                )
            }
        };
        if cacheable {
            self.insert(key, generation, body.clone(), cache_control.clone());
        }
        let mut out = answer(body, cache_control);
        out.headers_mut().extend(headers);
        out
    }

    fn insert(
        &self,
        key: String,
        generation: u64,
        body: Bytes,
        cache_control: Option<HeaderValue>,
    ) {
        let size = key.len() + body.len();
        if size > self.budget / 16 {
            return;
        }
        let Ok(mut lru) = self.lru.lock() else { return };
        let entry = Entry {
            body,
            cache_control,
            generation,
            at: Instant::now(),
            size,
        };
        if let Some(old) = lru.entries.put(key.into_boxed_str(), entry) {
            lru.bytes -= old.size;
        }
        lru.bytes += size;
        while lru.bytes > self.budget {
            match lru.entries.pop_lru() {
                Some((_, old)) => lru.bytes -= old.size,
                None => break,
            }
        }
    }

    /// Entries held (current or not) and their bytes.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let lru = self.lru.lock().unwrap();
        (lru.entries.len(), lru.bytes)
    }
}

fn answer(body: Bytes, cache_control: Option<HeaderValue>) -> Response {
    let mut out = Response::new(Body::from(body));
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Some(value) = cache_control {
        out.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ms: u64, bytes: usize) -> Arc<ResponseCache> {
        let config = GraphqlConfig {
            response_cache_ms: ms,
            response_cache_bytes: bytes,
            ..GraphqlConfig::default()
        };
        ResponseCache::new(&config).expect("enabled")
    }

    fn kind(value: u8) -> OperationKind {
        let k = OperationKind::new(None);
        k.kind.store(value, Ordering::Relaxed);
        k
    }

    fn ok(data: &str) -> async_graphql::Response {
        async_graphql::Response::new(async_graphql::Value::String(data.into()))
    }

    async fn body(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    fn request(query: &str, vars: serde_json::Value) -> async_graphql::Request {
        async_graphql::Request::new(query).variables(async_graphql::Variables::from_json(vars))
    }

    #[test]
    fn keys_name_the_whole_request() {
        let q = "query Q($a: Int) { x(a: $a) }";
        let one = ResponseCache::key(None, &request(q, serde_json::json!({"a": 1}))).unwrap();
        let same = ResponseCache::key(None, &request(q, serde_json::json!({"a": 1}))).unwrap();
        assert_eq!(one, same);
        let vars = ResponseCache::key(None, &request(q, serde_json::json!({"a": 2}))).unwrap();
        let auth =
            ResponseCache::key(Some("Bearer t"), &request(q, serde_json::json!({"a": 1}))).unwrap();
        let named = ResponseCache::key(
            None,
            &request(q, serde_json::json!({"a": 1})).operation_name("Q"),
        )
        .unwrap();
        assert!(one != vars && one != auth && one != named && vars != auth);
        // Extensions in any order give one key.
        let mut a = request(q, serde_json::json!({}));
        let mut b = request(q, serde_json::json!({}));
        for (k, v) in [("x", 1), ("y", 2), ("z", 3)] {
            a.extensions
                .0
                .insert(k.into(), async_graphql::Value::from(v));
        }
        for (k, v) in [("z", 3), ("x", 1), ("y", 2)] {
            b.extensions
                .0
                .insert(k.into(), async_graphql::Value::from(v));
        }
        assert_eq!(
            ResponseCache::key(None, &a).unwrap(),
            ResponseCache::key(None, &b).unwrap()
        );
    }

    #[tokio::test]
    async fn serves_a_query_until_the_generation_moves() {
        let c = cache(60_000, 1 << 20);
        let g = c.generation();
        let first = c.answer("k".into(), g, &kind(QUERY), ok("a"));
        assert_eq!(body(first).await, r#"{"data":"a"}"#);
        let hit = c.get("k").expect("cached");
        assert_eq!(
            hit.headers().get(header::CONTENT_TYPE).unwrap(),
            CONTENT_TYPE
        );
        assert_eq!(body(hit).await, r#"{"data":"a"}"#);
        c.invalidate();
        assert!(c.get("k").is_none(), "an event drops the entry");
    }

    #[tokio::test]
    async fn a_response_read_under_an_old_generation_is_never_served() {
        let c = cache(60_000, 1 << 20);
        let g = c.generation();
        // A commit lands while the query runs.
        c.invalidate();
        let _ = c.answer("k".into(), g, &kind(QUERY), ok("stale"));
        assert!(c.get("k").is_none());
    }

    #[tokio::test]
    async fn only_successful_queries_are_kept_and_mutations_drop_everything() {
        let c = cache(60_000, 1 << 20);
        let g = c.generation();
        let _ = c.answer("q".into(), g, &kind(QUERY), ok("a"));
        let failed = async_graphql::Response::from_errors(vec![async_graphql::ServerError::new(
            "boom", None,
        )]);
        let _ = c.answer("e".into(), g, &kind(QUERY), failed);
        assert!(c.get("e").is_none(), "errors are not cached");
        let _ = c.answer("s".into(), g, &kind(SUBSCRIPTION), ok("s"));
        let _ = c.answer("u".into(), g, &kind(UNKNOWN), ok("u"));
        assert!(c.get("s").is_none() && c.get("u").is_none());
        assert!(c.get("q").is_some());
        let _ = c.answer("m".into(), g, &kind(MUTATION), ok("m"));
        assert!(c.get("m").is_none() && c.get("q").is_none());
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let c = cache(1, 1 << 20);
        let _ = c.answer("k".into(), c.generation(), &kind(QUERY), ok("a"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.get("k").is_none());
    }

    #[tokio::test]
    async fn the_byte_budget_holds() {
        let budget = 64 * 1024;
        let c = cache(60_000, budget);
        let big = "x".repeat(3_000);
        for i in 0..100 {
            let _ = c.answer(format!("k{i}"), c.generation(), &kind(QUERY), ok(&big));
        }
        let (entries, bytes) = c.held();
        assert!(bytes <= budget, "{bytes} > {budget}");
        assert!(entries > 10 && entries < 100, "{entries}");
        assert!(c.get("k99").is_some() && c.get("k0").is_none(), "LRU order");
        // Over 1/16 of the budget: never kept.
        let huge = "x".repeat(budget / 16);
        let _ = c.answer("huge".into(), c.generation(), &kind(QUERY), ok(&huge));
        assert!(c.get("huge").is_none());
    }

    #[test]
    fn the_operation_kind_follows_the_selected_operation() {
        let doc = async_graphql::parser::parse_query(
            "query A { x } mutation B { y } subscription C { z }",
        )
        .unwrap();
        for (name, want) in [
            (Some("A"), QUERY),
            (Some("B"), MUTATION),
            (Some("C"), SUBSCRIPTION),
            (Some("D"), UNKNOWN),
            (None, UNKNOWN),
        ] {
            let k = Arc::new(OperationKind::new(name));
            note_operation(Some(&k), &doc);
            assert_eq!(k.get(), want, "{name:?}");
        }
        let single = async_graphql::parser::parse_query("{ x }").unwrap();
        let k = Arc::new(OperationKind::new(None));
        note_operation(Some(&k), &single);
        assert_eq!(k.get(), QUERY);
    }

    #[tokio::test]
    async fn every_bus_event_drops_the_cache() {
        let bus: SharedBus = Arc::new(orrery_indexer::bus::LocalBus::new());
        let c = cache(60_000, 1 << 20);
        c.follow(&bus);
        let g = c.generation();
        let _ = c.answer("k".into(), g, &kind(QUERY), ok("a"));
        assert!(c.get("k").is_some());
        orrery_indexer::bus::publish_logged(
            bus.as_ref(),
            orrery_indexer::bus::BusEvent::new(orrery_indexer::bus::payload::ActionQueued {
                chain: "t".into(),
                queued: 1,
            }),
        )
        .await;
        for _ in 0..100 {
            if c.generation() != g {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(c.get("k").is_none());
    }
}
