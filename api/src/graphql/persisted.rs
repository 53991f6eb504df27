//! Persisted queries: the Apollo convention of automatic persisted queries (APQ) and an
//! allow-list mode for locked-down deployments.
//!
//! A client sends `extensions.persistedQuery = {"version": 1, "sha256Hash": "<hex>"}`:
//! - with no query text: the query registered under that hash runs, or the request fails
//!   with `PERSISTED_QUERY_NOT_FOUND` (the client then sends hash and text once);
//! - with the text: the hash must be the SHA-256 of the text (`PERSISTED_QUERY_HASH_MISMATCH`
//!   otherwise); once the query has passed the limits and validation it is kept under its
//!   hash in a bounded LRU cache (`graphql.apq_cache_entries`).
//!
//! With `graphql.persisted_only = true` only the queries of `graphql.persisted_queries_path`
//! run: by hash, or as text whose hash is listed (`PERSISTED_QUERY_NOT_ALLOWED` otherwise);
//! nothing is registered at run time. Both work over `GET` and `POST`.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextValidation,
};
use async_graphql::{Request, ServerError, ServerResult, ValidationResult, Value};
use sha2::{Digest, Sha256};

use crate::config::GraphqlConfig;

/// The query is not registered under the hash given.
pub const NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
/// `graphql.persisted_only` is on and the query is not on the allow-list.
pub const NOT_ALLOWED: &str = "PERSISTED_QUERY_NOT_ALLOWED";
/// The hash is not the SHA-256 of the query text sent with it.
pub const HASH_MISMATCH: &str = "PERSISTED_QUERY_HASH_MISMATCH";
/// Persisted queries are switched off (`graphql.apq = false` and no allow-list).
pub const NOT_SUPPORTED: &str = "PERSISTED_QUERY_NOT_SUPPORTED";
/// The `persistedQuery` extension is malformed.
pub const BAD_REQUEST: &str = "BAD_REQUEST";

/// Why the allow-list could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PersistedError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON manifest is malformed or lists a hash that is not its query's SHA-256.
    #[error("invalid persisted-query manifest {path}: {reason}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Lower-case hex SHA-256 of `query`.
pub fn sha256_hex(query: &str) -> String {
    hex::encode(Sha256::digest(query.as_bytes()))
}

/// Reads the allow-list at `path`: a directory of `*.graphql` files (each file one document,
/// registered under the SHA-256 of its text), or a JSON file, either an object
/// `{"<sha256>": "<query>"}` or an Apollo persisted-query manifest
/// (`{"operations": [{"id": "<sha256>", "body": "<query>"}]}`), whose hashes are checked.
pub fn load_allow_list(path: &Path) -> Result<HashMap<String, Arc<str>>, PersistedError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| PersistedError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let mut out = HashMap::new();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|source| PersistedError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "graphql" || x == "gql"))
            .collect();
        files.sort();
        for f in files {
            let text = read(&f)?;
            out.insert(sha256_hex(&text), Arc::from(text));
        }
        return Ok(out);
    }
    let text = read(path)?;
    let bad = |reason: String| PersistedError::Manifest {
        path: path.to_path_buf(),
        reason,
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let pairs: Vec<(String, String)> = match &json {
        serde_json::Value::Object(m) if m.contains_key("operations") => m["operations"]
            .as_array()
            .ok_or_else(|| bad("`operations` is not an array".into()))?
            .iter()
            .map(|op| {
                let field = |k: &str| {
                    op.get(k)
                        .and_then(|v| v.as_str())
                        .map(String::from)
                        .ok_or_else(|| bad(format!("an operation has no string `{k}`")))
                };
                Ok((field("id")?, field("body")?))
            })
            .collect::<Result<_, PersistedError>>()?,
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|q| (k.clone(), q.to_string()))
                    .ok_or_else(|| bad(format!("the value of {k:?} is not a string")))
            })
            .collect::<Result<_, PersistedError>>()?,
        _ => return Err(bad("expected an object".into())),
    };
    for (hash, query) in pairs {
        let actual = sha256_hex(&query);
        if hash.to_ascii_lowercase() != actual {
            return Err(bad(format!(
                "hash {hash} is not the SHA-256 of its query ({actual})"
            )));
        }
        out.insert(actual, Arc::from(query));
    }
    Ok(out)
}

struct Store {
    allow: HashMap<String, Arc<str>>,
    cache: Option<Mutex<lru::LruCache<String, Arc<str>>>>,
    persisted_only: bool,
}

impl Store {
    fn lookup(&self, hash: &str) -> Option<Arc<str>> {
        if let Some(q) = self.allow.get(hash) {
            return Some(q.clone());
        }
        let cache = self.cache.as_ref()?;
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(hash).cloned()
    }
}

/// The schema extension resolving `extensions.persistedQuery`.
pub struct PersistedQueries {
    store: Arc<Store>,
}

impl PersistedQueries {
    /// From the `[graphql]` settings and the loaded allow-list.
    pub fn new(config: &GraphqlConfig, allow: HashMap<String, Arc<str>>) -> Self {
        let cache = (config.apq && !config.persisted_only)
            .then(|| NonZeroUsize::new(config.apq_cache_entries))
            .flatten()
            .map(|n| Mutex::new(lru::LruCache::new(n)));
        Self {
            store: Arc::new(Store {
                allow,
                cache,
                persisted_only: config.persisted_only,
            }),
        }
    }
}

impl ExtensionFactory for PersistedQueries {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PersistedExt {
            store: self.store.clone(),
            register: Mutex::new(None),
        })
    }
}

struct PersistedExt {
    store: Arc<Store>,
    /// Hash and text to cache once the request has passed validation.
    register: Mutex<Option<(String, Arc<str>)>>,
}

use super::error::coded_server_error as error;

/// The hash of a `persistedQuery` extension value, checked.
fn requested_hash(value: Value) -> ServerResult<String> {
    let bad = |why: &str| {
        error(
            BAD_REQUEST,
            format!("extensions.persistedQuery: {why}; expected {{\"version\": 1, \"sha256Hash\": \"<64 hex digits>\"}}"),
        )
    };
    let Value::Object(obj) = value else {
        return Err(bad("not an object"));
    };
    match obj.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(_) => return Err(bad("only version 1 is supported")),
        None => return Err(bad("`version` is missing")),
    }
    let hash = match obj.get("sha256Hash") {
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        _ => return Err(bad("`sha256Hash` is missing or not a string")),
    };
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("`sha256Hash` is not 64 hex digits"));
    }
    Ok(hash)
}

impl PersistedExt {
    fn resolve(&self, mut request: Request) -> ServerResult<Request> {
        let store = &self.store;
        let Some(value) = request.extensions.remove("persistedQuery") else {
            if store.persisted_only && !store.allow.contains_key(&sha256_hex(&request.query)) {
                return Err(error(
                    NOT_ALLOWED,
                    "only persisted queries run here (graphql.persisted_only = true); send the \
                     sha256Hash of a query of graphql.persisted_queries_path",
                ));
            }
            return Ok(request);
        };
        let hash = requested_hash(value)?;
        if store.cache.is_none() && store.allow.is_empty() {
            return Err(error(
                NOT_SUPPORTED,
                "PersistedQueryNotSupported: persisted queries are off (graphql.apq = false)",
            ));
        }
        if request.query.is_empty() {
            return match store.lookup(&hash) {
                Some(query) => {
                    request.query = query.to_string();
                    Ok(request)
                }
                // Apollo clients match this message and then send the query with its hash.
                None => Err(error(NOT_FOUND, "PersistedQueryNotFound")),
            };
        }
        let actual = sha256_hex(&request.query);
        if actual != hash {
            return Err(error(
                HASH_MISMATCH,
                format!("extensions.persistedQuery.sha256Hash {hash} is not the SHA-256 of the query ({actual})"),
            ));
        }
        if store.persisted_only {
            if !store.allow.contains_key(&hash) {
                return Err(error(
                    NOT_ALLOWED,
                    "this query is not on the allow-list (graphql.persisted_only = true); \
                     queries are registered by graphql.persisted_queries_path only",
                ));
            }
        } else if store.cache.is_some() && !store.allow.contains_key(&hash) {
            let text: Arc<str> = Arc::from(request.query.as_str());
            *self.register.lock().unwrap_or_else(|p| p.into_inner()) = Some((hash, text));
        }
        Ok(request)
    }
}

#[async_trait::async_trait]
impl Extension for PersistedExt {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = self.resolve(request)?;
        next.run(ctx, request).await
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let pending = self
            .register
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let (Some((hash, text)), Some(cache)) = (pending, &self.store.cache) {
            cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(hash, text);
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(apq: bool, persisted_only: bool) -> GraphqlConfig {
        GraphqlConfig {
            apq,
            persisted_only,
            apq_cache_entries: 2,
            ..GraphqlConfig::default()
        }
    }

    fn with_hash(query: &str, hash: &str) -> Request {
        let mut r = Request::new(query);
        r.extensions.insert(
            "persistedQuery".into(),
            Value::from_json(serde_json::json!({ "version": 1, "sha256Hash": hash })).unwrap(),
        );
        r
    }

    fn code(e: &ServerError) -> String {
        e.extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    fn ext(p: &PersistedQueries) -> PersistedExt {
        PersistedExt {
            store: p.store.clone(),
            register: Mutex::new(None),
        }
    }

    #[test]
    fn hashes_are_lower_hex_sha256() {
        assert_eq!(sha256_hex("{ health { status } }").len(), 64,);
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn unknown_hashes_mismatches_and_bad_versions_are_refused() {
        let p = PersistedQueries::new(&config(true, false), HashMap::new());
        let q = "{ health { status } }";
        let e = ext(&p).resolve(with_hash("", &sha256_hex(q))).unwrap_err();
        assert!(code(&e).contains(NOT_FOUND), "{e:?}");
        assert_eq!(e.message, "PersistedQueryNotFound");
        let e = ext(&p)
            .resolve(with_hash(q, &sha256_hex("other")))
            .unwrap_err();
        assert!(code(&e).contains(HASH_MISMATCH));
        let mut r = Request::new(q);
        r.extensions.insert(
            "persistedQuery".into(),
            Value::from_json(serde_json::json!({ "version": 2, "sha256Hash": sha256_hex(q) }))
                .unwrap(),
        );
        assert!(ext(&p)
            .resolve(r)
            .unwrap_err()
            .message
            .contains("version 1"));
        // A plain query needs no hash.
        assert_eq!(ext(&p).resolve(Request::new(q)).unwrap().query, q);
    }

    #[test]
    fn allow_list_mode_runs_listed_queries_only() {
        let q = "{ health { status } }";
        let allow = HashMap::from([(sha256_hex(q), Arc::from(q))]);
        let p = PersistedQueries::new(&config(true, true), allow);
        assert!(p.store.cache.is_none(), "nothing is registered at run time");
        let r = ext(&p).resolve(with_hash("", &sha256_hex(q))).unwrap();
        assert_eq!(r.query, q);
        assert_eq!(ext(&p).resolve(Request::new(q)).unwrap().query, q);
        let other = "{ chains { totalCount } }";
        let e = ext(&p).resolve(Request::new(other)).unwrap_err();
        assert!(code(&e).contains(NOT_ALLOWED));
        let e = ext(&p)
            .resolve(with_hash(other, &sha256_hex(other)))
            .unwrap_err();
        assert!(code(&e).contains(NOT_ALLOWED));
        let e = ext(&p)
            .resolve(with_hash("", &sha256_hex(other)))
            .unwrap_err();
        assert!(code(&e).contains(NOT_FOUND));
    }

    #[test]
    fn apq_off_says_so() {
        let p = PersistedQueries::new(&config(false, false), HashMap::new());
        let e = ext(&p)
            .resolve(with_hash("", &sha256_hex("{ a }")))
            .unwrap_err();
        assert!(code(&e).contains(NOT_SUPPORTED));
    }

    #[test]
    fn manifests_are_checked() {
        let dir = std::env::temp_dir().join(format!("orrery-pq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let q = "{ health { status } }";
        std::fs::write(dir.join("health.graphql"), q).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let list = load_allow_list(&dir).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list.get(&sha256_hex(q)).map(|s| &**s), Some(q));

        let manifest = dir.join("manifest.json");
        std::fs::write(
            &manifest,
            serde_json::json!({ "format": "apollo-persisted-query-manifest", "version": 1,
                "operations": [{ "id": sha256_hex(q), "body": q, "name": "H", "type": "query" }] })
            .to_string(),
        )
        .unwrap();
        assert_eq!(load_allow_list(&manifest).unwrap().len(), 1);
        std::fs::write(
            &manifest,
            serde_json::json!({ sha256_hex("x"): q }).to_string(),
        )
        .unwrap();
        let err = load_allow_list(&manifest).unwrap_err().to_string();
        assert!(err.contains("not the SHA-256"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
