//! Orrery's configuration: one documented struct, read from `orrery.toml` and then
//! overridden by environment variables, validated before anything starts.
//!
//! Every field names its environment variable and default. Unknown keys in the file are an
//! error (a typo must not silently fall back to a default).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orrery_indexer::bitcoin::BitcoinSettings;
use orrery_indexer::evm::EvmSettings;
use orrery_indexer::stellar::StellarSettings;
use orrery_indexer::triggers::TriggerSettings;
use serde::Deserialize;

use crate::auth::Role;

/// Why the configuration was rejected. Each message names the offending key or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown/mistyped keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said (names the key).
        message: String,
    },
    /// An environment variable has a value that cannot be used.
    #[error("invalid environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A setting is out of range or malformed.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The key, as written in `orrery.toml`.
        key: &'static str,
        /// Why it was rejected.
        reason: String,
    },
}

/// All of Orrery's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on. Env `ORRERY_LISTEN`. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Database URL: `sqlite://FILE?mode=rwc`, `sqlite::memory:` or `postgres://...`.
    /// Env `DATABASE_URL`. Default `sqlite://orrery.db?mode=rwc` (a file in the working directory).
    pub database_url: String,
    /// Redis URL for the event bus (`redis://` or `rediss://`). Env `REDIS_URL`.
    /// Default: unset, which selects the in-process bus (single replica).
    pub redis_url: Option<String>,
    /// HS256 secret for admin JWTs. Env `JWT_SECRET`. Default: unset (mutations disabled).
    pub jwt_secret: Option<String>,
    /// Token verification and access rules.
    pub auth: AuthConfig,
    /// Logging. Env `ORRERY_LOG` (filter, `RUST_LOG` syntax) and `ORRERY_LOG_FORMAT`.
    pub log: LogConfig,
    /// HTTP server limits.
    pub http: HttpConfig,
    /// GraphQL limits.
    pub graphql: GraphqlConfig,
    /// Subscription sockets.
    pub subscriptions: SubscriptionsConfig,
    /// Database pool and migrations.
    pub database: DatabaseConfig,
    /// The built-in simulated chains.
    pub devnet: DevnetConfig,
    /// Stellar (Horizon) indexing.
    pub stellar: StellarSettings,
    /// EVM chains (JSON-RPC) indexing.
    pub evm: EvmSettings,
    /// Bitcoin (Esplora) indexing and prices.
    pub bitcoin: BitcoinSettings,
    /// Trigger action workers (lease, concurrency, delivery timeout) and the retention of
    /// finished `action_run` rows. See [`TriggerSettings`] for each key and its default.
    pub triggers: TriggerSettings,
}

/// Authentication settings (JWT bearer tokens carrying a role).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// PEM public key for RS256/ES256 tokens (instead of or besides the HS256 `jwt_secret`).
    /// Env `JWT_PUBLIC_KEY_FILE`. Default: unset.
    pub jwt_public_key_file: Option<PathBuf>,
    /// JWKS document of an identity provider (e.g. Keycloak's
    /// `.../protocol/openid-connect/certs`, Auth0's `.../.well-known/jwks.json`): RS256 and
    /// ES256 tokens are verified with the key their `kid` names. Env `JWT_JWKS_URL`.
    /// Default: unset.
    pub jwks_url: Option<String>,
    /// Seconds a fetched JWKS is used before it is fetched again (so a key removed by the
    /// provider stops being accepted). Env `JWT_JWKS_CACHE_SECS`. Default 300.
    pub jwks_cache_secs: u64,
    /// Least seconds between two JWKS fetches, however many tokens name an unknown `kid`
    /// (a flood of bad tokens cannot hammer the provider). Env `JWT_JWKS_MIN_REFRESH_SECS`.
    /// Default 30.
    pub jwks_min_refresh_secs: u64,
    /// Required `iss` claim. Env `JWT_ISSUER`. Default `orrery`.
    pub issuer: String,
    /// Required `aud` claim (a token's `aud` may be a string or an array containing it).
    /// Env `JWT_AUDIENCE`. Default `orrery`.
    pub audience: String,
    /// Where the token carries its role(s): a claim name or a dotted path such as
    /// `realm_access.roles`; the value is a string (several roles separated by spaces) or an
    /// array of strings. A claim whose own name contains dots (`https://example.com/roles`)
    /// is matched as a whole first; otherwise the path is split at its dots from the left.
    /// Env `JWT_ROLES_CLAIM`. Default `role`.
    pub roles_claim: String,
    /// Provider role name -> Orrery role (`viewer`, `operator`, `admin`). Empty: the names
    /// `viewer`, `operator` and `admin` stand for themselves. Not empty: only the names listed
    /// count (the others, e.g. Keycloak's `offline_access`, are ignored). With several roles
    /// the highest wins. Env `JWT_ROLE_MAP` (`name=role,name=role`). Default: empty.
    pub role_map: BTreeMap<String, Role>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds. Env `JWT_LEEWAY_SECS`.
    /// Default 5.
    pub leeway_secs: u64,
    /// Whether queries and subscriptions need no token (`true`) or a viewer token (`false`).
    /// Env `ORRERY_PUBLIC_QUERIES`. Default true. Mutations always need operator or admin.
    pub public_queries: bool,
    /// Failed authentications per client address within a minute before that address is
    /// throttled for the rest of the minute. Env `ORRERY_FAILED_AUTH_LIMIT`. Default 10.
    pub failed_auth_limit: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_public_key_file: None,
            jwks_url: None,
            jwks_cache_secs: 300,
            jwks_min_refresh_secs: 30,
            issuer: "orrery".to_string(),
            audience: "orrery".to_string(),
            roles_claim: "role".to_string(),
            role_map: BTreeMap::new(),
            leeway_secs: 5,
            public_queries: true,
            failed_auth_limit: 10,
        }
    }
}

/// Parses `JWT_ROLE_MAP`: `name=role` pairs separated by commas.
fn parse_role_map(v: &str) -> Result<BTreeMap<String, Role>, String> {
    let mut map = BTreeMap::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, role) = pair
            .rsplit_once('=')
            .ok_or_else(|| format!("{pair:?} is not name=role"))?;
        let role = Role::parse(role.trim())
            .ok_or_else(|| format!("{pair:?}: role must be viewer, operator or admin"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("{pair:?} has an empty role name"));
        }
        map.insert(name.to_string(), role);
    }
    Ok(map)
}

/// Log output settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Filter directives, e.g. `info,orrery_indexer=debug`. Env `ORRERY_LOG` (or `RUST_LOG`).
    /// Default `info`.
    pub filter: String,
    /// `text` (human) or `json` (one object per line). Env `ORRERY_LOG_FORMAT`. Default `text`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Per-request timeout in seconds (not applied to WebSocket subscriptions). Default 30.
    pub request_timeout_secs: u64,
    /// Maximum request body in bytes. Default 1 MiB.
    pub body_limit_bytes: usize,
    /// Allowed CORS origins; `["*"]` allows any. Default `["*"]`.
    pub cors_allowed_origins: Vec<String>,
    /// Seconds to wait for in-flight requests and indexer tasks on SIGTERM/SIGINT. Default 4.
    pub shutdown_grace_secs: u64,
}

/// GraphQL settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphqlConfig {
    /// Parsed and validated documents kept, keyed by query text (0 disables). Default 1000.
    pub document_cache_size: usize,
    /// Largest `first` any connection accepts. Default 200.
    pub max_page_size: u32,
    /// `first` when a query gives none. Default 50.
    pub default_page_size: u32,
    /// Maximum query depth (levels of fields). Default 12.
    pub max_depth: usize,
    /// Maximum query complexity: each field costs 1 plus its selection, a connection costs
    /// `first` (or `default_page_size`) times its selection. Default 20000.
    pub max_complexity: usize,
    /// Maximum aliased fields per request. Default 30.
    pub max_aliases: usize,
    /// Maximum lexical tokens of the query text. Default 2000.
    pub max_tokens: usize,
    /// Maximum directives (`@include`, `@skip`...) per request. Default 20.
    pub max_directives: usize,
    /// Maximum query text in bytes (the body may be larger by its variables, up to
    /// `http.body_limit_bytes`). Default 65536.
    pub max_query_bytes: usize,
    /// Accept JSON arrays of operations on `POST /graphql`. Default false.
    pub batch_requests: bool,
    /// Most operations in one batch (with `batch_requests`). Default 10.
    pub max_batch_size: usize,
    /// Milliseconds a request may run, resolvers and their database work included, before
    /// it is cancelled with a `TIMEOUT` error. Default 10000.
    pub timeout_ms: u64,
    /// Automatic persisted queries (`extensions.persistedQuery`, Apollo convention).
    /// Default true.
    pub apq: bool,
    /// Queries kept by hash for APQ (least recently used dropped first). Default 1000.
    pub apq_cache_entries: usize,
    /// Run only the queries of `persisted_queries_path` (by hash or exact text). Default false.
    pub persisted_only: bool,
    /// Pre-registered queries: a directory of `*.graphql` files, or a JSON file
    /// (`{"<sha256>": "<query>"}` or an Apollo persisted-query manifest). Default unset.
    pub persisted_queries_path: Option<PathBuf>,
    /// Serve GraphiQL on `GET /graphql`. Default true.
    pub graphiql: bool,
    /// Milliseconds a successful query's response is served again, byte for byte, to the
    /// same request (same text, operation, variables, extensions and `Authorization`);
    /// every event on this replica's bus (a commit, a mutation) drops the whole cache at
    /// once, so this bounds only the staleness of writes the bus does not carry (CLI tools,
    /// another replica on an in-process bus) and of time-derived fields. 0 disables.
    /// Default 1000.
    pub response_cache_ms: u64,
    /// Bytes of cached responses kept (keys included), least recently used dropped first;
    /// a response over 1/16 of this is never cached. Default 33554432 (32 MiB).
    pub response_cache_bytes: usize,
}

/// Subscription (WebSocket) settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionsConfig {
    /// Frames one connection may have waiting for its socket; a client that lets more pile
    /// up is closed (code 1008, with the reason). Default 256.
    pub max_queued_frames: usize,
    /// Serve clients subscribed with the same document and variables from one execution
    /// (each event is decoded and resolved once, not once per client). Default true.
    pub share_executions: bool,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        Self {
            max_queued_frames: 256,
            share_executions: true,
        }
    }
}

/// Database settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Maximum connections of the read pool. Default 10 (SQLite: 5, plus one writer
    /// connection, see [`crate::db::connect_writer`]).
    pub max_connections: Option<u32>,
    /// Seconds to wait for a connection at start. Default 10.
    pub connect_timeout_secs: u64,
    /// Apply pending migrations at start. Default true.
    pub migrate_on_start: bool,
}

/// Built-in devnet settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevnetConfig {
    /// Start the simulated chains in-process and index them. Env `ORRERY_DEVNET`
    /// (`true`/`false`). Default: on when no real upstream is configured.
    pub enabled: Option<bool>,
    /// Seed of the generated chains. Default 42.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://orrery.db?mode=rwc".to_string(),
            redis_url: None,
            jwt_secret: None,
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            graphql: GraphqlConfig::default(),
            subscriptions: SubscriptionsConfig::default(),
            database: DatabaseConfig::default(),
            devnet: DevnetConfig::default(),
            stellar: StellarSettings::default(),
            evm: EvmSettings::default(),
            bitcoin: BitcoinSettings::default(),
            triggers: TriggerSettings::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            request_timeout_secs: 30,
            body_limit_bytes: 1024 * 1024,
            cors_allowed_origins: vec!["*".to_string()],
            shutdown_grace_secs: 4,
        }
    }
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            document_cache_size: 1_000,
            max_page_size: 200,
            default_page_size: 50,
            max_depth: 12,
            max_complexity: 20_000,
            max_aliases: 30,
            max_tokens: 2_000,
            max_directives: 20,
            max_query_bytes: 64 * 1024,
            batch_requests: false,
            max_batch_size: 10,
            timeout_ms: 10_000,
            apq: true,
            apq_cache_entries: 1_000,
            persisted_only: false,
            persisted_queries_path: None,
            graphiql: true,
            response_cache_ms: 1_000,
            response_cache_bytes: 32 * 1024 * 1024,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: None,
            connect_timeout_secs: 10,
            migrate_on_start: true,
        }
    }
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            seed: 42,
        }
    }
}

/// Where environment overrides come from; a trait so tests need not touch the process env.
pub trait EnvSource {
    /// The value of `name`, if set and non-empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> EnvSource for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.is_empty())
    }
}

/// The default config file, read when present in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "orrery.toml";

impl Config {
    /// Loads `path` (or `orrery.toml` when it exists and no path is given), applies the
    /// environment and validates the result.
    pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| env.var("ORRERY_CONFIG").map(PathBuf::from))
            .or_else(|| {
                let p = PathBuf::from(DEFAULT_CONFIG_FILE);
                p.exists().then_some(p)
            });
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::Parse { path, message })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; the error names the offending key and line.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().replace('\n', " ").trim().to_string())
    }

    /// Applies the documented environment variables on top of the file's values.
    pub fn apply_env(&mut self, env: &dyn EnvSource) -> Result<(), ConfigError> {
        if let Some(v) = env.var("ORRERY_LISTEN") {
            self.listen = v.parse().map_err(|e| ConfigError::Env {
                var: "ORRERY_LISTEN",
                value: v.clone(),
                reason: format!("expected HOST:PORT ({e})"),
            })?;
        }
        if let Some(v) = env.var("DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = env.var("REDIS_URL") {
            self.redis_url = Some(v);
        }
        if let Some(v) = env.var("JWT_SECRET") {
            self.jwt_secret = Some(v);
        }
        if let Some(v) = env.var("JWT_PUBLIC_KEY_FILE") {
            self.auth.jwt_public_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env.var("JWT_ISSUER") {
            self.auth.issuer = v;
        }
        if let Some(v) = env.var("JWT_AUDIENCE") {
            self.auth.audience = v;
        }
        if let Some(v) = env.var("JWT_JWKS_URL") {
            self.auth.jwks_url = Some(v);
        }
        for (var, field) in [
            ("JWT_JWKS_CACHE_SECS", &mut self.auth.jwks_cache_secs),
            (
                "JWT_JWKS_MIN_REFRESH_SECS",
                &mut self.auth.jwks_min_refresh_secs,
            ),
            ("JWT_LEEWAY_SECS", &mut self.auth.leeway_secs),
        ] {
            if let Some(v) = env.var(var) {
                *field = v.parse().map_err(|_| ConfigError::Env {
                    var,
                    value: v.clone(),
                    reason: "expected a whole number of seconds".into(),
                })?;
            }
        }
        if let Some(v) = env.var("JWT_ROLES_CLAIM") {
            self.auth.roles_claim = v;
        }
        if let Some(v) = env.var("JWT_ROLE_MAP") {
            self.auth.role_map = parse_role_map(&v).map_err(|reason| ConfigError::Env {
                var: "JWT_ROLE_MAP",
                value: v.clone(),
                reason,
            })?;
        }
        if let Some(v) = env.var("ORRERY_PUBLIC_QUERIES") {
            self.auth.public_queries = parse_bool(&v).ok_or_else(|| ConfigError::Env {
                var: "ORRERY_PUBLIC_QUERIES",
                value: v.clone(),
                reason: "expected true or false".into(),
            })?;
        }
        if let Some(v) = env.var("ORRERY_FAILED_AUTH_LIMIT") {
            self.auth.failed_auth_limit = v.parse().map_err(|_| ConfigError::Env {
                var: "ORRERY_FAILED_AUTH_LIMIT",
                value: v.clone(),
                reason: "expected a whole number".into(),
            })?;
        }
        if let Some(v) = env.var("ORRERY_LOG").or_else(|| env.var("RUST_LOG")) {
            self.log.filter = v;
        }
        if let Some(v) = env.var("ORRERY_LOG_FORMAT") {
            self.log.format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::Env {
                        var: "ORRERY_LOG_FORMAT",
                        value: v,
                        reason: "expected `text` or `json`".into(),
                    })
                }
            };
        }
        if let Some(v) = env.var("ORRERY_HORIZON_URL") {
            self.stellar.horizon_url = Some(v);
        }
        if let Some(v) = env.var("ORRERY_STELLAR_RPC_URL") {
            self.stellar.rpc_urls = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(v) = env.var("ORRERY_STELLAR_DATALAKE_URL") {
            self.stellar.datalake_url = Some(v);
        }
        if let Some(v) = env.var("ORRERY_ESPLORA_URL") {
            self.bitcoin.esplora_url = Some(v);
        }
        if let Some(v) = env.var("ORRERY_EXCHANGE_URL") {
            self.bitcoin.exchange_prices_url = Some(v);
        }
        if let Some(v) = env.var("ORRERY_DEVNET") {
            self.devnet.enabled = Some(parse_bool(&v).ok_or_else(|| ConfigError::Env {
                var: "ORRERY_DEVNET",
                value: v.clone(),
                reason: "expected true or false".into(),
            })?);
        }
        Ok(())
    }

    /// Checks every setting; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url(&self.database_url)?;
        if let Some(redis) = &self.redis_url {
            let url = url::Url::parse(redis).map_err(|e| ConfigError::Invalid {
                key: "redis_url",
                reason: format!("{redis:?} is not a URL ({e})"),
            })?;
            if !matches!(url.scheme(), "redis" | "rediss" | "redis+unix" | "unix") {
                return Err(ConfigError::Invalid {
                    key: "redis_url",
                    reason: format!(
                        "scheme must be redis:// or rediss://, got {}://",
                        url.scheme()
                    ),
                });
            }
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.len() < 16 {
                return Err(ConfigError::Invalid {
                    key: "jwt_secret",
                    reason: "must be at least 16 characters".into(),
                });
            }
        }
        if let Some(path) = &self.auth.jwt_public_key_file {
            if !path.is_file() {
                return Err(ConfigError::Invalid {
                    key: "auth.jwt_public_key_file",
                    reason: format!("{} is not a readable file", path.display()),
                });
            }
        }
        if self.auth.roles_claim.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "auth.roles_claim",
                reason: "must name a claim (e.g. `role` or `realm_access.roles`)".into(),
            });
        }
        if let Some(name) = self.auth.role_map.keys().find(|k| k.is_empty()) {
            return Err(ConfigError::Invalid {
                key: "auth.role_map",
                reason: format!("{name:?}: role names must not be empty"),
            });
        }
        if self.auth.leeway_secs > 3600 {
            return Err(ConfigError::Invalid {
                key: "auth.leeway_secs",
                reason: "must be at most 3600".into(),
            });
        }
        if self.auth.jwks_cache_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "auth.jwks_cache_secs",
                reason: "must be at least 1".into(),
            });
        }
        for (key, url) in [
            ("auth.jwks_url", &self.auth.jwks_url),
            ("stellar.horizon_url", &self.stellar.horizon_url),
            ("bitcoin.esplora_url", &self.bitcoin.esplora_url),
            (
                "bitcoin.exchange_prices_url",
                &self.bitcoin.exchange_prices_url,
            ),
        ] {
            if let Some(u) = url {
                validate_http_url(key, u)?;
            }
        }
        for u in &self.stellar.rpc_urls {
            validate_http_url("stellar.rpc_urls", u)?;
        }
        if let Err(reason) = self.stellar.source_kind() {
            return Err(ConfigError::Invalid {
                key: "stellar.source",
                reason,
            });
        }
        for chain in &self.evm.chains {
            if chain.rpc_urls.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "evm.chains.rpc_urls",
                    reason: format!("chain {} has no RPC URL", chain.name),
                });
            }
            for u in &chain.rpc_urls {
                validate_http_url("evm.chains.rpc_urls", u)?;
            }
        }
        if self.graphql.max_page_size == 0 || self.graphql.max_page_size > 10_000 {
            return Err(ConfigError::Invalid {
                key: "graphql.max_page_size",
                reason: "must be between 1 and 10000".into(),
            });
        }
        if self.graphql.default_page_size == 0
            || self.graphql.default_page_size > self.graphql.max_page_size
        {
            return Err(ConfigError::Invalid {
                key: "graphql.default_page_size",
                reason: "must be between 1 and graphql.max_page_size".into(),
            });
        }
        if self.graphql.max_depth < 4 {
            return Err(ConfigError::Invalid {
                key: "graphql.max_depth",
                reason: "must be at least 4".into(),
            });
        }
        if self.http.request_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "http.request_timeout_secs",
                reason: "must be at least 1".into(),
            });
        }
        if self.http.body_limit_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "http.body_limit_bytes",
                reason: "must be at least 1024".into(),
            });
        }
        let g = &self.graphql;
        for (key, value, min) in [
            ("graphql.max_complexity", g.max_complexity, 1),
            ("graphql.max_tokens", g.max_tokens, 16),
            ("graphql.max_query_bytes", g.max_query_bytes, 256),
            ("graphql.max_batch_size", g.max_batch_size, 1),
        ] {
            if value < min {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("must be at least {min}"),
                });
            }
        }
        // Saturating: a huge request timeout must not overflow the bound (a panic in debug).
        let request_timeout_ms = self.http.request_timeout_secs.saturating_mul(1000);
        if g.timeout_ms == 0 || g.timeout_ms > request_timeout_ms {
            return Err(ConfigError::Invalid {
                key: "graphql.timeout_ms",
                reason: format!(
                    "must be between 1 and http.request_timeout_secs * 1000 ({request_timeout_ms})"
                ),
            });
        }
        if g.apq && g.apq_cache_entries == 0 {
            return Err(ConfigError::Invalid {
                key: "graphql.apq_cache_entries",
                reason: "must be at least 1 while graphql.apq is on".into(),
            });
        }
        if g.response_cache_ms > 0 && g.response_cache_bytes < 64 * 1024 {
            return Err(ConfigError::Invalid {
                key: "graphql.response_cache_bytes",
                reason: "must be at least 65536 while graphql.response_cache_ms is on".into(),
            });
        }
        if g.response_cache_ms > 3_600_000 {
            return Err(ConfigError::Invalid {
                key: "graphql.response_cache_ms",
                reason: "must be at most 3600000 (one hour); 0 disables the cache".into(),
            });
        }
        if let Err((key, reason)) = self.triggers.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        match &g.persisted_queries_path {
            Some(p) if !p.exists() => {
                return Err(ConfigError::Invalid {
                    key: "graphql.persisted_queries_path",
                    reason: format!("{} does not exist", p.display()),
                })
            }
            None if g.persisted_only => {
                return Err(ConfigError::Invalid {
                    key: "graphql.persisted_only",
                    reason: "needs graphql.persisted_queries_path (the allow-list)".into(),
                })
            }
            _ => {}
        }
        Ok(())
    }

    /// The per-request HTTP timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.http.request_timeout_secs)
    }

    /// Whether the in-process devnet runs (explicit setting, else when no real upstream is set).
    pub fn devnet_enabled(&self) -> bool {
        self.devnet.enabled.unwrap_or(
            self.stellar.horizon_url.is_none()
                && self.stellar.rpc_urls.is_empty()
                && self.evm.chains.is_empty()
                && self.bitcoin.esplora_url.is_none(),
        )
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn validate_http_url(key: &'static str, u: &str) -> Result<(), ConfigError> {
    match url::Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        Ok(url) => Err(ConfigError::Invalid {
            key,
            reason: format!("{u:?}: scheme must be http or https, got {}", url.scheme()),
        }),
        Err(e) => Err(ConfigError::Invalid {
            key,
            reason: format!("{u:?} is not a URL ({e})"),
        }),
    }
}

fn validate_database_url(db: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: "database_url",
        reason,
    };
    if db.starts_with("sqlite:") {
        return Ok(());
    }
    let url = url::Url::parse(db).map_err(|e| invalid(format!("{db:?} is not a URL ({e})")))?;
    match url.scheme() {
        "postgres" | "postgresql" => {
            if url.host_str().unwrap_or("").is_empty() {
                return Err(invalid(format!("{db:?} has no host")));
            }
            Ok(())
        }
        other => Err(invalid(format!(
            "unsupported scheme {other}://; use sqlite:// or postgres://"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &[("ORRERY_CONFIG", "")]).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert!(c.database_url.starts_with("sqlite:"));
        assert!(c.redis_url.is_none());
    }

    #[test]
    fn env_overrides_file() {
        let mut c =
            Config::from_toml("listen = \"0.0.0.0:9000\"\n[graphql]\nmax_page_size = 100").unwrap();
        c.apply_env(&[
            ("ORRERY_LISTEN", "127.0.0.1:7000"),
            ("DATABASE_URL", "postgres://u@db/orrery"),
            ("REDIS_URL", "redis://r:6379"),
        ])
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.graphql.max_page_size, 100);
        assert_eq!(c.redis_url.as_deref(), Some("redis://r:6379"));
    }

    #[test]
    fn auth_settings_from_file_and_env() {
        let mut c = Config::from_toml(
            "[auth]\njwks_url = \"https://sso.example.com/realms/ops/protocol/openid-connect/certs\"\nroles_claim = \"realm_access.roles\"\nleeway_secs = 30\n[auth.role_map]\norrery-admin = \"admin\"\n\"https://x/ops\" = \"operator\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.auth.roles_claim, "realm_access.roles");
        assert_eq!(c.auth.leeway_secs, 30);
        assert_eq!(c.auth.role_map["orrery-admin"], Role::Admin);
        assert_eq!(c.auth.role_map["https://x/ops"], Role::Operator);
        c.apply_env(&[
            ("JWT_JWKS_URL", "http://127.0.0.1:9/jwks"),
            ("JWT_ROLES_CLAIM", "https://example.com/roles"),
            ("JWT_ROLE_MAP", "Orrery Admin=admin, viewers=viewer"),
            ("JWT_LEEWAY_SECS", "0"),
            ("JWT_JWKS_MIN_REFRESH_SECS", "5"),
        ])
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.auth.jwks_url.as_deref(), Some("http://127.0.0.1:9/jwks"));
        assert_eq!(c.auth.roles_claim, "https://example.com/roles");
        assert_eq!(c.auth.role_map.len(), 2);
        assert_eq!(c.auth.role_map["Orrery Admin"], Role::Admin);
        assert_eq!(c.auth.leeway_secs, 0);
        assert_eq!(c.auth.jwks_min_refresh_secs, 5);
    }

    #[test]
    fn bad_auth_settings_are_named() {
        let err = Config::from_toml("[auth.role_map]\nx = \"root\"").unwrap_err();
        assert!(err.contains("root") && err.contains("viewer"), "{err}");
        let err = Config::default()
            .apply_env(&[("JWT_ROLE_MAP", "x=root")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("JWT_ROLE_MAP") && err.contains("viewer, operator or admin"),
            "{err}"
        );
        let err = Config::default()
            .apply_env(&[("JWT_LEEWAY_SECS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("JWT_LEEWAY_SECS"), "{err}");
        let mut c = Config::default();
        c.auth.jwks_url = Some("ftp://x/jwks".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("auth.jwks_url"));
        let mut c = Config::default();
        c.auth.roles_claim = " ".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("auth.roles_claim"));
        let mut c = Config::default();
        c.auth.leeway_secs = 7200;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("auth.leeway_secs"));
    }

    #[test]
    fn triggers_section_sets_the_worker() {
        let c = Config::from_toml(
            "[triggers]\nlease_secs = 60\nconcurrency = 2\ndelivery_timeout_secs = 10\nretention_days = 7\nprune_interval_secs = 60",
        )
        .unwrap();
        c.validate().unwrap();
        let w = c.triggers.worker_settings();
        assert_eq!(w.lease, Duration::from_secs(60));
        assert_eq!(w.concurrency, 2);
        assert_eq!(w.delivery_timeout, Duration::from_secs(10));
        assert_eq!(w.retention, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(w.prune_interval, Duration::from_secs(60));
        let err = Config::from_toml("[triggers]\nleases = 3").unwrap_err();
        assert!(err.contains("leases"), "{err}");
        let c = Config::from_toml("[triggers]\nlease_secs = 5\ndelivery_timeout_secs = 5").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("triggers.lease_secs"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\nlistne = 3").unwrap_err();
        assert!(err.contains("listne"), "{err}");
        let err = Config::from_toml("[graphql]\nmax_pagesize = 3").unwrap_err();
        assert!(err.contains("max_pagesize"), "{err}");
    }

    #[test]
    fn malformed_values_are_rejected_with_their_name() {
        let mut c = Config::default();
        let err = c.apply_env(&[("ORRERY_LISTEN", "nope")]).unwrap_err();
        assert!(err.to_string().contains("ORRERY_LISTEN"));

        for (url, needle) in [
            ("mysql://x/y", "unsupported scheme"),
            ("not a url", "not a URL"),
            ("postgres:///db", "no host"),
        ] {
            let c = Config {
                database_url: url.into(),
                ..Config::default()
            };
            let err = c.validate().unwrap_err().to_string();
            assert!(
                err.contains("database_url") && err.contains(needle),
                "{err}"
            );
        }
        let c = Config {
            redis_url: Some("http://x".into()),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("redis_url"));
        let c = Config {
            jwt_secret: Some("short".into()),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("jwt_secret"));
    }
}
