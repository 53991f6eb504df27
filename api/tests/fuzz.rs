//! Property-based fuzzing of what the API reads from outside (stable toolchain, `proptest`):
//! the config file (TOML, structure-aware: known sections and keys with values of every
//! type, and truncated documents) and its environment overrides; bearer tokens (arbitrary
//! text, JWTs with mutated headers, and HS256-signed tokens with arbitrary claims, so the
//! claim checks see them); and GraphQL arguments: every query field of the real schema,
//! found by introspection, is executed against a migrated temporary SQLite database with
//! type-directed arbitrary argument values, including mutated and forged `after` cursors.
//!
//! Property: no panic, and a typed error: the config names a key, a token is rejected with
//! a reason, and no GraphQL answer carries `INTERNAL` (bad input is the client's error).
//!
//! Each property runs 256 cases by default; `ORRERY_FUZZ_CASES=N` runs N. Seeds that found
//! bugs are kept below as named regression tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_graphql::{Request, Variables};
use base64::Engine;
use orrery_api::auth::{Authenticator, Role};
use orrery_api::config::{Config, EnvSource};
use orrery_api::graphql::{build_schema, OrrerySchema};
use orrery_api::health::HealthSnapshot;
use orrery_api::state::AppState;
use orrery_indexer::bus::LocalBus;
use orrery_migration::{Migrator, MigratorTrait};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Cases per property: `ORRERY_FUZZ_CASES`, default 256.
fn cases() -> u32 {
    std::env::var("ORRERY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,30}",
        "[a-zA-Z0-9_:.+/=-]{0,40}",
        "-?[0-9]{1,25}",
        Just(String::new()),
        Just("2026-12-02T00:00:00Z".to_string()),
        Just("9999-99-99T99:99:99Z".to_string()),
        Just("XLM".to_string()),
        Just("USDC:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN".to_string()),
        Just("GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN".to_string()),
        Just(format!("0x{}", "ab".repeat(20))),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "exp",
                        "nbf",
                        "iat",
                        "iss",
                        "aud",
                        "sub",
                        "role",
                        "roles",
                        "realm_access"
                    ])
                    .prop_map(str::to_string),
                    "[a-z_.]{1,10}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------------------
// Config.

/// Sections and keys of `orrery.toml` (the root's keys under "").
const KEYS: &[(&str, &[&str])] = &[
    ("", &["listen", "database_url", "redis_url", "jwt_secret"]),
    (
        "auth",
        &[
            "jwt_public_key_file",
            "jwks_url",
            "jwks_cache_secs",
            "jwks_min_refresh_secs",
            "issuer",
            "audience",
            "roles_claim",
            "role_map",
            "leeway_secs",
            "public_queries",
            "failed_auth_limit",
        ],
    ),
    ("log", &["filter", "format"]),
    (
        "http",
        &[
            "request_timeout_secs",
            "body_limit_bytes",
            "cors_allowed_origins",
            "shutdown_grace_secs",
        ],
    ),
    (
        "graphql",
        &[
            "document_cache_size",
            "max_page_size",
            "default_page_size",
            "max_depth",
            "max_complexity",
            "max_aliases",
            "max_tokens",
            "max_directives",
            "max_query_bytes",
            "batch_requests",
            "max_batch_size",
            "timeout_ms",
            "apq",
            "apq_cache_entries",
            "persisted_only",
            "persisted_queries_path",
            "graphiql",
        ],
    ),
    ("subscriptions", &["max_queued_frames", "share_executions"]),
    (
        "database",
        &[
            "max_connections",
            "connect_timeout_secs",
            "migrate_on_start",
        ],
    ),
    ("devnet", &["enabled", "seed"]),
    (
        "stellar",
        &[
            "source",
            "rpc_urls",
            "rpc_start_ledger",
            "rpc_events_limit",
            "rpc_batch_events",
            "rpc_requests_per_hour",
            "horizon_url",
            "accounts",
            "assets",
            "requests_per_hour",
            "dex_pairs",
        ],
    ),
    (
        "evm",
        &[
            "chains",
            "max_block_range",
            "concurrency",
            "requests_per_hour",
            "poll_interval_ms",
        ],
    ),
    ("bitcoin", &["esplora_url", "exchange_prices_url"]),
    (
        "triggers",
        &[
            "lease_secs",
            "concurrency",
            "delivery_timeout_secs",
            "retention_days",
            "prune_interval_secs",
        ],
    ),
];

fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        prop_oneof![Just(0i64), Just(1), Just(-1), Just(i64::MAX), 0i64..100_000]
            .prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<f64>().prop_map(toml::Value::Float),
        text().prop_map(toml::Value::String),
        prop::sample::select(vec![
            "127.0.0.1:0",
            "sqlite::memory:",
            "postgres://u:p@h/db",
            "redis://127.0.0.1:6379",
            "http://127.0.0.1:1",
            "rpc",
            "horizon",
            "json",
            "text",
            "viewer",
            "admin",
            "XLM/UBEC",
        ])
        .prop_map(|s| toml::Value::String(s.to_string())),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A document of known sections and keys (and the odd unknown one) with arbitrary values.
fn toml_doc() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            prop::option::weighted(0.1, "[a-z_]{1,8}"),
            toml_value(),
        ),
        0..10,
    )
    .prop_map(|entries| {
        let mut root = toml::Table::new();
        for (s, k, unknown, v) in entries {
            let (section, keys) = s.get(KEYS);
            let key = unknown.unwrap_or_else(|| k.get(keys).to_string());
            if section.is_empty() {
                root.insert(key, v);
            } else if let toml::Value::Table(t) = root
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                t.insert(key, v);
            }
        }
        toml::to_string(&root).unwrap_or_default()
    })
}

struct Env(BTreeMap<String, String>);

impl EnvSource for Env {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned().filter(|v| !v.is_empty())
    }
}

const ENV_VARS: &[&str] = &[
    "ORRERY_LISTEN",
    "DATABASE_URL",
    "REDIS_URL",
    "JWT_SECRET",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_JWKS_URL",
    "JWT_JWKS_CACHE_SECS",
    "JWT_JWKS_MIN_REFRESH_SECS",
    "JWT_LEEWAY_SECS",
    "JWT_ROLES_CLAIM",
    "JWT_ROLE_MAP",
    "ORRERY_PUBLIC_QUERIES",
    "ORRERY_FAILED_AUTH_LIMIT",
    "ORRERY_LOG",
    "ORRERY_LOG_FORMAT",
    "ORRERY_HORIZON_URL",
    "ORRERY_STELLAR_RPC_URL",
    "ORRERY_ESPLORA_URL",
    "ORRERY_EXCHANGE_URL",
    "ORRERY_DEVNET",
];

/// Parses, applies the environment and validates; every error names a key or a variable.
fn load(doc: &str, env: &Env) {
    match Config::from_toml(doc) {
        Ok(mut c) => {
            let _ = c.apply_env(env).map_err(|e| {
                let m = e.to_string();
                assert!(m.contains("environment variable"), "{m}");
            });
            if let Err(e) = c.validate() {
                let m = e.to_string();
                assert!(m.starts_with("invalid setting "), "{m}");
            }
        }
        Err(m) => assert!(!m.is_empty()),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_documents_load_or_name_the_key(doc in toml_doc()) {
        load(&doc, &Env(BTreeMap::new()));
    }

    #[test]
    fn config_truncated_and_raw_text_is_an_error_or_a_config(
        doc in toml_doc(),
        cut in any::<usize>(),
        raw in "\\PC{0,80}",
    ) {
        let mut i = cut % (doc.len() + 1);
        while !doc.is_char_boundary(i) {
            i -= 1;
        }
        load(&doc[..i], &Env(BTreeMap::new()));
        load(&raw, &Env(BTreeMap::new()));
    }

    #[test]
    fn config_environment_overrides_apply_or_name_the_variable(
        doc in toml_doc(),
        vars in prop::collection::btree_map(
            prop::sample::select(ENV_VARS.to_vec()).prop_map(str::to_string),
            text(),
            0..6,
        ),
    ) {
        load(&doc, &Env(vars));
    }
}

/// Regression: `http.request_timeout_secs` above `u64::MAX / 1000` overflowed the bound
/// check of `graphql.timeout_ms` (a panic in debug builds instead of a named error).
#[test]
fn config_huge_request_timeout_is_an_error_not_an_overflow() {
    let c = Config::from_toml("[http]\nrequest_timeout_secs = 9223372036854775807\n").unwrap();
    let _ = c.validate();
}

// ---------------------------------------------------------------------------------------
// Tokens.

const SECRET: &str = "fuzz-secret-0123456789abcdef";

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let config = Config {
            jwt_secret: Some(SECRET.to_string()),
            ..Config::default()
        };
        Authenticator::from_config(&config).expect("HS256 authenticator")
    })
}

fn sign(header: &Value, claims: &Value) -> String {
    use hmac::{Hmac, Mac};
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64url(&mac.finalize().into_bytes()))
}

fn claims() -> impl Strategy<Value = Value> {
    let now = chrono::Utc::now().timestamp();
    (
        prop::option::of(prop_oneof![
            (now - 100..now + 10_000).prop_map(Value::from),
            arb_json()
        ]),
        prop::option::of(prop_oneof![Just(json!("orrery")), arb_json()]),
        prop::option::of(prop_oneof![
            Just(json!("orrery")),
            Just(json!(["x", "orrery"])),
            arb_json()
        ]),
        prop::option::of(prop_oneof![
            prop::sample::select(vec!["viewer", "operator", "admin", "viewer admin", ""])
                .prop_map(Value::from),
            arb_json()
        ]),
        prop::option::of(arb_json()),
        prop::option::of(arb_json()),
        prop::option::of(prop_oneof![text().prop_map(Value::from), arb_json()]),
    )
        .prop_map(|(exp, iss, aud, role, nbf, iat, sub)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [
                ("exp", exp),
                ("iss", iss),
                ("aud", aud),
                ("role", role),
                ("nbf", nbf),
                ("iat", iat),
                ("sub", sub),
            ] {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tokens_of_arbitrary_text_are_rejected(token in "\\PC{0,200}", parts in prop::collection::vec("[A-Za-z0-9_-]{0,40}", 0..5)) {
        let auth = authenticator();
        runtime().block_on(async {
            prop_assert!(auth.verify(&token).await.is_err());
            prop_assert!(auth.verify(&parts.join(".")).await.is_err());
            Ok(())
        })?;
    }

    #[test]
    fn signed_tokens_with_arbitrary_claims_are_checked(
        claims in claims(),
        header in prop_oneof![
            3 => Just(json!({"alg": "HS256", "typ": "JWT"})),
            1 => Just(json!({"alg": "none"})),
            1 => Just(json!({"alg": "RS256", "kid": "x"})),
            1 => arb_json(),
        ],
        flip in prop::option::weighted(0.2, any::<prop::sample::Index>()),
    ) {
        let mut token = sign(&header, &claims);
        if let Some(i) = flip {
            // Corrupt one character (signature, payload or header).
            let pos = i.index(token.len());
            let c = if token.as_bytes()[pos] == b'A' { "B" } else { "A" };
            token.replace_range(pos..pos + 1, c);
        }
        let auth = authenticator();
        let got = runtime().block_on(auth.verify(&token));
        if let Ok(p) = got {
            // Accepted only with a valid, unexpired `exp`, the issuer and the audience.
            let exp = claims.get("exp").and_then(Value::as_f64);
            prop_assert!(exp.is_some_and(|e| e + 5.0 >= chrono::Utc::now().timestamp() as f64));
            prop_assert_eq!(claims.get("iss"), Some(&json!("orrery")));
            prop_assert!(matches!(p.role, Role::Viewer | Role::Operator | Role::Admin));
            prop_assert_eq!(header.get("alg"), Some(&json!("HS256")));
        }
    }
}

// ---------------------------------------------------------------------------------------
// GraphQL arguments and cursors.

struct Gql {
    schema: OrrerySchema,
    /// Introspected types by name.
    types: HashMap<String, Value>,
    /// Query fields (name, args, type).
    fields: Vec<Value>,
    /// Keep the database file alive.
    _dir: std::path::PathBuf,
}

fn gql() -> &'static Gql {
    static G: OnceLock<Gql> = OnceLock::new();
    G.get_or_init(|| {
        runtime().block_on(async {
            let dir = std::env::temp_dir().join(format!(
                "orrery_fuzz_{}_{}",
                std::process::id(),
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let url = format!("sqlite://{}?mode=rwc", dir.join("fuzz.db").display());
            let db = sea_orm::Database::connect(&url).await.expect("sqlite");
            Migrator::up(&db, None).await.expect("migrations");
            let config = Config {
                database_url: url,
                ..Config::default()
            };
            let state = AppState {
                config: Arc::new(config.clone()),
                db,
                bus: Arc::new(LocalBus::new()),
                started_at: Instant::now(),
                health: HealthSnapshot::pending(),
            };
            let schema = build_schema(&config.graphql, Some(state), HashMap::new());
            let r = schema.execute(INTROSPECTION).await;
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            let data = r.data.into_json().expect("json");
            let types: HashMap<String, Value> = data["__schema"]["types"]
                .as_array()
                .expect("types")
                .iter()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap_or_default().to_string(),
                        t.clone(),
                    )
                })
                .collect();
            let query = data["__schema"]["queryType"]["name"]
                .as_str()
                .expect("query");
            let fields = types[query]["fields"].as_array().expect("fields").clone();
            assert!(fields.len() > 10, "query fields");
            Gql {
                schema,
                types,
                fields,
                _dir: dir,
            }
        })
    })
}

const INTROSPECTION: &str = r#"{ __schema { queryType { name } types { name kind
  enumValues { name }
  inputFields { name type { ...T } }
  fields { name args { name type { ...T } } type { ...T } } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }"#;

/// A deterministic stream of choices drawn from proptest's words.
struct Choices<'a> {
    words: &'a [u64],
    at: usize,
}

impl Choices<'_> {
    fn next(&mut self) -> u64 {
        let w = self
            .words
            .get(self.at % self.words.len().max(1))
            .copied()
            .unwrap_or(7);
        self.at += 1;
        w.rotate_left((self.at % 64) as u32) ^ (self.at as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn type_string(t: &Value) -> String {
    match t["kind"].as_str() {
        Some("NON_NULL") => format!("{}!", type_string(&t["ofType"])),
        Some("LIST") => format!("[{}]", type_string(&t["ofType"])),
        _ => t["name"].as_str().unwrap_or_default().to_string(),
    }
}

fn named(t: &Value) -> &str {
    match t["kind"].as_str() {
        Some("NON_NULL") | Some("LIST") => named(&t["ofType"]),
        _ => t["name"].as_str().unwrap_or_default(),
    }
}

/// Cursors: real ones' shape (`OpaqueCursor<String>`: base64url of a JSON string) around
/// forged keys, plus plain garbage.
fn cursor(c: &mut Choices) -> String {
    let parts = [
        "0",
        "-1",
        "9223372036854775807",
        "99999999999999999999999",
        "2026-12-02T00:00:00+00:00",
        "2026-13-45T25:61:00Z",
        "",
        "x",
        "GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN",
        "1.5",
        "é",
    ];
    let n = 1 + c.below(4);
    let key: Vec<&str> = (0..n).map(|_| parts[c.below(parts.len())]).collect();
    let key = key.join(":");
    match c.below(5) {
        0 => key,
        1 => b64url(key.as_bytes()),
        2 => {
            let mut b: Vec<u8> = (0..c.below(40)).map(|_| c.next() as u8).collect();
            b.truncate(40);
            b64url(&b)
        }
        _ => b64url(Value::String(key).to_string().as_bytes()),
    }
}

fn scalar(c: &mut Choices, name: &str, arg: &str) -> Value {
    if arg == "after" || arg == "before" || arg.ends_with("cursor") {
        return Value::String(cursor(c));
    }
    match name {
        "Int" => {
            let ints = [
                0,
                1,
                -1,
                2,
                50,
                200,
                201,
                10_000,
                i32::MAX,
                i32::MIN,
                c.next() as i32,
            ];
            json!(ints[c.below(ints.len())])
        }
        "Float" => {
            let floats = [0.0, -1.5, 1e300, f64::MIN_POSITIVE];
            json!(floats[c.below(floats.len())])
        }
        "Boolean" => json!(c.below(2) == 0),
        _ => {
            let strings = [
                "",
                "x",
                "XLM",
                "UBEC",
                "USDC:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN",
                "GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN",
                "GBADADDRESS",
                "0x0000000000000000000000000000000000000001",
                "0xzz",
                "evm:devnet",
                "stellar:horizon",
                "bitcoin:esplora",
                "2026-12-02T00:00:00Z",
                "2026-12-02",
                "not a date",
                "-1",
                "1e999",
                "123.4567890",
                "99999999999999999999999999999999",
                "BTC/USD",
                "1",
            ];
            Value::String(strings[c.below(strings.len())].to_string())
        }
    }
}

fn value_of(g: &Gql, c: &mut Choices, t: &Value, arg: &str, depth: u32) -> Value {
    match t["kind"].as_str() {
        Some("NON_NULL") => value_of(g, c, &t["ofType"], arg, depth),
        Some("LIST") => {
            let n = if depth > 2 { 0 } else { c.below(4) };
            Value::Array(
                (0..n)
                    .map(|_| value_of(g, c, &t["ofType"], arg, depth + 1))
                    .collect(),
            )
        }
        Some("ENUM") => {
            let name = t["name"].as_str().unwrap_or_default();
            let values = g.types[name]["enumValues"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if values.is_empty() {
                Value::Null
            } else {
                values[c.below(values.len())]["name"].clone()
            }
        }
        Some("INPUT_OBJECT") => {
            let name = t["name"].as_str().unwrap_or_default();
            let mut m = serde_json::Map::new();
            if depth < 3 {
                for f in g.types[name]["inputFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let required = f["type"]["kind"] == "NON_NULL";
                    if required || c.below(2) == 0 {
                        let fname = f["name"].as_str().unwrap_or_default();
                        m.insert(
                            fname.to_string(),
                            value_of(g, c, &f["type"], fname, depth + 1),
                        );
                    }
                }
            }
            Value::Object(m)
        }
        _ => scalar(c, t["name"].as_str().unwrap_or_default(), arg),
    }
}

/// A small selection of a field's type: connections page through, objects name their type.
fn selection(g: &Gql, t: &Value) -> String {
    let name = named(t);
    let Some(ty) = g.types.get(name) else {
        return String::new();
    };
    match ty["kind"].as_str() {
        Some("OBJECT") | Some("INTERFACE") | Some("UNION") => {
            let has = |f: &str| {
                ty["fields"]
                    .as_array()
                    .is_some_and(|fs| fs.iter().any(|x| x["name"] == f))
            };
            if has("edges") && has("pageInfo") {
                let total = if has("totalCount") { " totalCount" } else { "" };
                format!("{{ edges {{ cursor }} pageInfo {{ hasNextPage endCursor }}{total} }}")
            } else {
                "{ __typename }".to_string()
            }
        }
        _ => String::new(),
    }
}

fn run_field(g: &Gql, field: &Value, c: &mut Choices) -> Value {
    let name = field["name"].as_str().unwrap_or_default();
    let args = field["args"].as_array().cloned().unwrap_or_default();
    let mut decls = Vec::new();
    let mut uses = Vec::new();
    let mut vars = serde_json::Map::new();
    for (i, a) in args.iter().enumerate() {
        let required = a["type"]["kind"] == "NON_NULL";
        if !required && c.below(3) == 0 {
            continue;
        }
        let aname = a["name"].as_str().unwrap_or_default();
        decls.push(format!("$a{i}: {}", type_string(&a["type"])));
        uses.push(format!("{aname}: $a{i}"));
        vars.insert(format!("a{i}"), value_of(g, c, &a["type"], aname, 0));
    }
    let decls = if decls.is_empty() {
        String::new()
    } else {
        format!("({})", decls.join(", "))
    };
    let uses = if uses.is_empty() {
        String::new()
    } else {
        format!("({})", uses.join(", "))
    };
    let query = format!(
        "query F{decls} {{ {name}{uses} {} }}",
        selection(g, &field["type"])
    );
    let vars = Value::Object(vars);
    let r =
        runtime()
            .block_on(g.schema.execute(
                Request::new(query.clone()).variables(Variables::from_json(vars.clone())),
            ));
    for e in &r.errors {
        let code = e
            .extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .map(|v| v.to_string());
        assert!(
            code.as_deref() != Some("\"INTERNAL\""),
            "{query} with {vars}: {} ({code:?})",
            e.message
        );
    }
    r.data.into_json().unwrap_or(Value::Null)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn graphql_query_fields_with_arbitrary_arguments_answer_or_refuse(
        pick in any::<prop::sample::Index>(),
        words in prop::collection::vec(any::<u64>(), 1..32),
    ) {
        let g = gql();
        let field = pick.get(&g.fields).clone();
        let mut c = Choices { words: &words, at: 0 };
        run_field(g, &field, &mut c);
    }
}

/// Every query field once with its arguments at a few fixed choices, so each is covered
/// whatever the number of cases.
#[test]
fn graphql_every_query_field_answers_or_refuses() {
    let g = gql();
    for field in &g.fields {
        for seed in 0..4u64 {
            let words = [seed, seed.wrapping_mul(31) ^ 0xdead_beef, !seed];
            run_field(
                g,
                field,
                &mut Choices {
                    words: &words,
                    at: 0,
                },
            );
        }
    }
}
