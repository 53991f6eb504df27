//! Authentication and roles: JWT bearer tokens carrying a role of `viewer`, `operator` or
//! `admin` (seed 001's RBAC), verified with the HS256 `JWT_SECRET`, an RS256/ES256 public key
//! file, and/or an identity provider's JWKS (`auth.jwks_url`, the key chosen by `kid`).
//!
//! After the signature, [`claims::ClaimRules`] checks `exp` (required), `nbf` and `iat`
//! (when present), `iss`, `aud` (string or array) and reads the role(s) at `auth.roles_claim`
//! through `auth.role_map`; every refusal names the check that failed. Failed attempts are
//! counted per client address; an address over the limit is throttled for the rest of the
//! minute.

pub mod claims;
pub mod jwks;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_graphql::{Context, Guard};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use orrery_indexer::metrics::Metrics;
use serde::{Deserialize, Serialize};

use self::claims::{ClaimRules, TokenError};
use self::jwks::JwksCache;
use crate::config::{AuthConfig, Config};
use crate::graphql::error::{coded, Code};
/// A role, ordered by what it may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, async_graphql::Enum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read queries and subscriptions.
    Viewer,
    /// Everything a viewer may do, plus operational mutations.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Parses `viewer`, `operator` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The claims of the tokens Orrery issues (`orrery token issue`). Tokens from identity
/// providers need not have this shape: see [`claims::ClaimRules`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token is for (recorded in the audit log).
    pub sub: String,
    /// The role granted.
    pub role: Role,
    /// Expiry (unix seconds).
    pub exp: u64,
    /// Not valid before (unix seconds).
    pub nbf: u64,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's subject.
    pub subject: String,
    /// The token's role.
    pub role: Role,
}

/// What the request carried, as resolvers see it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// A valid token.
    Authenticated(Principal),
    /// A token that was rejected, with the reason.
    Rejected(String),
}

/// Where the request came from (for audit rows and throttling).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

/// Why a request's token was rejected.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Authorization header not `Bearer <token>`.
    #[error("Authorization header must be `Bearer <token>`")]
    Malformed,
    /// No key configured to verify tokens.
    #[error("authentication is not configured (set JWT_SECRET, auth.jwt_public_key_file or auth.jwks_url)")]
    NotConfigured,
    /// The token failed a check (named in the message).
    #[error("invalid token: {0}")]
    Token(#[from] TokenError),
    /// Too many failures from this address.
    #[error("too many failed authentication attempts from this address; retry in {0}s")]
    Throttled(u64),
    /// The key file could not be read.
    #[error("cannot read JWT public key {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The JWKS client could not be set up.
    #[error("auth.jwks_url: {0}")]
    Jwks(String),
    /// A token could not be signed (`orrery token issue`).
    #[error("cannot issue a token: {0}")]
    Issue(String),
}

/// Verifies tokens and throttles repeated failures.
pub struct Authenticator {
    secret: Option<DecodingKey>,
    public_key: Option<(DecodingKey, Algorithm)>,
    jwks: Option<JwksCache>,
    rules: ClaimRules,
    limit: u32,
    failures: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl Authenticator {
    /// Builds the verifier from the configured secret, public key file and JWKS URL (the
    /// JWKS is fetched on first use; see [`Authenticator::warm_up`]).
    pub fn from_config(config: &Config) -> Result<Self, AuthError> {
        let secret = config
            .jwt_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.as_bytes()));
        let mut public_key = None;
        if let Some(path) = &config.auth.jwt_public_key_file {
            let key_err = |reason: String| AuthError::KeyFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| key_err(e.to_string()))?;
            if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                public_key = Some((k, Algorithm::RS256));
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                public_key = Some((k, Algorithm::ES256));
            } else {
                return Err(key_err("not an RSA or EC public key in PEM format".into()));
            }
        }
        let auth = &config.auth;
        let jwks = auth
            .jwks_url
            .as_deref()
            .map(|url| {
                JwksCache::new(
                    url,
                    Duration::from_secs(auth.jwks_cache_secs),
                    Duration::from_secs(auth.jwks_min_refresh_secs),
                )
            })
            .transpose()
            .map_err(AuthError::Jwks)?;
        Ok(Self {
            secret,
            public_key,
            jwks,
            rules: ClaimRules::new(auth),
            limit: auth.failed_auth_limit,
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Fetches the JWKS, when one is configured, and logs the outcome (a provider that is
    /// down at start does not stop the server: the set is fetched again on the next token).
    pub async fn warm_up(&self) {
        if let Some(jwks) = &self.jwks {
            if let Err(e) = jwks.refresh_now().await {
                tracing::warn!(url = jwks.url(), error = %e, "JWKS not available yet");
            }
        }
    }

    /// Seconds until `addr` may try again, when it is over the failure limit.
    fn throttled(&self, addr: Option<IpAddr>) -> Option<u64> {
        let map = self.failures.lock().ok()?;
        let (start, count) = map.get(&addr)?;
        let elapsed = start.elapsed();
        (elapsed < WINDOW && *count >= self.limit).then(|| (WINDOW - elapsed).as_secs().max(1))
    }

    fn record_failure(&self, addr: Option<IpAddr>, reason: &str) {
        Metrics::global()
            .auth_failures
            .with_label_values(&[reason])
            .inc();
        if let Ok(mut map) = self.failures.lock() {
            if map.len() > 100_000 {
                map.retain(|_, (start, _)| start.elapsed() < WINDOW);
            }
            let entry = map.entry(addr).or_insert((Instant::now(), 0));
            if entry.0.elapsed() >= WINDOW {
                *entry = (Instant::now(), 0);
            }
            entry.1 += 1;
        }
    }

    /// Verifies one token: signature (key chosen by `alg` and `kid`), then the claims.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if self.secret.is_none() && self.public_key.is_none() && self.jwks.is_none() {
            return Err(AuthError::NotConfigured);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Format(e.to_string()))?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                let key = self.secret.as_ref().ok_or_else(|| TokenError::Algorithm {
                    alg: "HS256".into(),
                    reason: "no JWT_SECRET is configured".into(),
                })?;
                decode_signed(token, key, Algorithm::HS256)?
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                self.verify_public(token, header.alg, header.kid.as_deref())
                    .await?
            }
            other => {
                return Err(TokenError::Algorithm {
                    alg: format!("{other:?}"),
                    reason: "Orrery accepts HS256, RS256 and ES256".into(),
                }
                .into())
            }
        };
        let now = chrono::Utc::now().timestamp();
        Ok(self.rules.check(&claims, now)?)
    }

    /// RS256/ES256: the JWKS key named by `kid`, else the public key file.
    async fn verify_public(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<serde_json::Value, TokenError> {
        let file_key = self
            .public_key
            .as_ref()
            .filter(|(_, a)| *a == alg)
            .map(|(k, _)| k);
        if let (Some(jwks), Some(kid)) = (&self.jwks, kid) {
            return match jwks.key(kid, alg).await {
                Ok(key) => decode_signed(token, &key, alg),
                // A kid the provider does not know may still be signed by the key file.
                Err(e) => match file_key.map(|k| decode_signed(token, k, alg)) {
                    Some(Ok(claims)) => Ok(claims),
                    _ => Err(e),
                },
            };
        }
        let mut last = None;
        if let Some(k) = file_key {
            match decode_signed(token, k, alg) {
                Ok(claims) => return Ok(claims),
                Err(e) => last = Some(e),
            }
        }
        if let Some(jwks) = &self.jwks {
            for key in jwks.keys_for(alg).await? {
                match decode_signed(token, &key, alg) {
                    Ok(claims) => return Ok(claims),
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(last.unwrap_or_else(|| TokenError::Algorithm {
            alg: format!("{alg:?}"),
            reason: format!(
                "no {alg:?} key is configured (auth.jwt_public_key_file or auth.jwks_url)"
            ),
        }))
    }

    /// Turns an `Authorization` header value into a [`Caller`], counting failures.
    pub async fn authenticate(&self, header: Option<&str>, addr: Option<IpAddr>) -> Caller {
        let Some(header) = header else {
            return Caller::Anonymous;
        };
        if let Some(retry) = self.throttled(addr) {
            Metrics::global()
                .auth_failures
                .with_label_values(&["throttled"])
                .inc();
            return Caller::Rejected(AuthError::Throttled(retry).to_string());
        }
        let result = match header.strip_prefix("Bearer ").map(str::trim) {
            Some(token) if !token.is_empty() => self.verify(token).await,
            _ => Err(AuthError::Malformed),
        };
        match result {
            Ok(p) => Caller::Authenticated(p),
            Err(e) => {
                let reason = match &e {
                    AuthError::Malformed => "malformed",
                    AuthError::NotConfigured => "not_configured",
                    _ => "invalid",
                };
                self.record_failure(addr, reason);
                tracing::warn!(client = ?addr, error = %e, "authentication failed");
                Caller::Rejected(e.to_string())
            }
        }
    }
}

/// Verifies the signature only (the claims are checked by [`ClaimRules`]).
fn decode_signed(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<serde_json::Value, TokenError> {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(token, key, &v)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm {
                alg: format!("{alg:?}"),
                reason: "the key is for another algorithm".into(),
            },
            _ => TokenError::Format(e.to_string()),
        })
}

/// Signs an HS256 token with the `role` claim (for tests; `orrery token issue` uses
/// [`issue_token_for`]).
pub fn issue_token(
    secret: &str,
    subject: &str,
    role: Role,
    ttl: Duration,
    issuer: &str,
    audience: &str,
) -> Result<String, AuthError> {
    let auth = AuthConfig {
        issuer: issuer.to_string(),
        audience: audience.to_string(),
        ..AuthConfig::default()
    };
    issue_token_for(secret, subject, role, ttl, &auth)
}

/// Signs an HS256 token this server accepts under `auth`: `iss`/`aud` as configured, the
/// role at `auth.roles_claim` (written as one claim of that name, which the lookup matches
/// first) under the first `auth.role_map` name standing for it.
pub fn issue_token_for(
    secret: &str,
    subject: &str,
    role: Role,
    ttl: Duration,
    auth: &AuthConfig,
) -> Result<String, AuthError> {
    let name = if auth.role_map.is_empty() {
        role.as_str().to_string()
    } else {
        auth.role_map
            .iter()
            .find(|(_, r)| **r == role)
            .map(|(n, _)| n.clone())
            .ok_or_else(|| {
                AuthError::Issue(format!(
                    "auth.role_map has no provider role standing for {}",
                    role.as_str()
                ))
            })?
    };
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let claims = Claims {
        sub: subject.to_string(),
        role,
        exp: now + ttl.as_secs(),
        nbf: now,
        iat: now,
        iss: auth.issuer.clone(),
        aud: auth.audience.clone(),
    };
    let mut value = serde_json::to_value(&claims).map_err(|e| AuthError::Issue(e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        obj.remove("role");
        obj.insert(auth.roles_claim.clone(), serde_json::Value::String(name));
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &value,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError::Issue(e.to_string()))
}

/// A guard requiring at least `min` on a field.
pub struct RoleGuard {
    min: Role,
}

impl RoleGuard {
    /// Requires `min` or a higher role.
    pub fn new(min: Role) -> Self {
        Self { min }
    }
}

impl Guard for RoleGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match ctx.data_opt::<Caller>() {
            Some(Caller::Authenticated(p)) if p.role >= self.min => Ok(()),
            Some(Caller::Authenticated(p)) => Err(coded(
                Code::Forbidden,
                format!("role {} may not do this; {} or higher is required", p.role.as_str(), self.min.as_str()),
            )),
            Some(Caller::Rejected(reason)) => Err(coded(Code::Unauthenticated, reason.clone())),
            _ => Err(coded(
                Code::Unauthenticated,
                format!("authentication required: send `Authorization: Bearer <token>` with role {} or higher", self.min.as_str()),
            )),
        }
    }
}

/// The authenticated principal of a request that passed a [`RoleGuard`].
pub fn principal<'a>(ctx: &Context<'a>) -> Option<&'a Principal> {
    match ctx.data_opt::<Caller>() {
        Some(Caller::Authenticated(p)) => Some(p),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, RwLock};

    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use serde_json::{json, Value};

    use super::*;

    const SECRET: &str = "0123456789abcdef0123";
    const RSA_A: &str = include_str!("../tests-data/jwt/rsa-a.pem");
    const RSA_B: &str = include_str!("../tests-data/jwt/rsa-b.pem");
    const EC: &str = include_str!("../tests-data/jwt/ec-p256.pem");

    fn auth() -> Authenticator {
        let config = Config {
            jwt_secret: Some(SECRET.into()),
            ..Config::default()
        };
        Authenticator::from_config(&config).unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn hs(claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn encoding_key(pem: &str, alg: Algorithm) -> EncodingKey {
        match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        }
    }

    fn sign(pem: &str, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, claims, &encoding_key(pem, alg)).unwrap()
    }

    fn jwk(pem: &str, alg: Algorithm, kid: &str) -> Jwk {
        let mut j = Jwk::from_encoding_key(&encoding_key(pem, alg), alg).unwrap();
        j.common.key_id = Some(kid.to_string());
        j
    }

    /// A JWKS endpoint on 127.0.0.1 whose key set the test changes, counting fetches.
    struct Idp {
        url: String,
        keys: Arc<RwLock<Vec<Jwk>>>,
        fetches: Arc<AtomicUsize>,
    }

    impl Idp {
        async fn start(keys: Vec<Jwk>) -> Idp {
            let keys = Arc::new(RwLock::new(keys));
            let fetches = Arc::new(AtomicUsize::new(0));
            let (k, f) = (keys.clone(), fetches.clone());
            let app = axum::Router::new().route(
                "/realms/orrery/protocol/openid-connect/certs",
                axum::routing::get(move || {
                    let (k, f) = (k.clone(), f.clone());
                    async move {
                        f.fetch_add(1, Ordering::SeqCst);
                        let set = JwkSet {
                            keys: k.read().unwrap().clone(),
                        };
                        axum::Json(serde_json::to_value(set).unwrap())
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            Idp {
                url: format!("http://{addr}/realms/orrery/protocol/openid-connect/certs"),
                keys,
                fetches,
            }
        }

        fn set(&self, keys: Vec<Jwk>) {
            *self.keys.write().unwrap() = keys;
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    fn jwks_auth(url: &str, f: impl FnOnce(&mut AuthConfig)) -> Authenticator {
        let mut config = Config::default();
        config.auth.jwks_url = Some(url.to_string());
        f(&mut config.auth);
        Authenticator::from_config(&config).unwrap()
    }

    fn err(r: Result<Principal, AuthError>) -> String {
        r.unwrap_err().to_string()
    }

    /// An access token as Keycloak issues it (no `nbf`; roles in `realm_access.roles`).
    fn keycloak_claims(issuer: &str) -> Value {
        let t = now();
        json!({
            "exp": t + 300, "iat": t, "auth_time": t, "jti": "9d8c6f0e-1b0a-4e7a-9d1c-3f1e2a7b6c5d",
            "iss": issuer, "aud": ["orrery", "account"],
            "sub": "f4f1c3b2-0d5e-4a7f-8e9b-1c2d3e4f5a6b", "typ": "Bearer", "azp": "orrery-dashboard",
            "sid": "5e1f0c2d", "acr": "1", "allowed-origins": ["http://127.0.0.1:8080"],
            "realm_access": {"roles": ["default-roles-orrery", "offline_access", "uma_authorization", "orrery-operator"]},
            "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
            "scope": "openid profile email", "email_verified": true, "preferred_username": "ops",
        })
    }

    /// An access token as Auth0 issues it (namespaced roles claim, `aud` array, no `nbf`).
    fn auth0_claims(roles: &[&str]) -> Value {
        let t = now();
        json!({
            "https://orrery.example.com/roles": roles,
            "iss": "https://orrery-test.eu.auth0.com/",
            "sub": "auth0|65a1b2c3d4e5f6a7b8c9d0e1",
            "aud": ["https://orrery.example.com/api", "https://orrery-test.eu.auth0.com/userinfo"],
            "iat": t, "exp": t + 86400, "scope": "openid profile email",
            "azp": "Xq1w2e3r4t5y6u7i8o9p", "permissions": ["read:prices"],
        })
    }

    #[tokio::test]
    async fn valid_token_yields_its_role() {
        let t = issue_token(
            SECRET,
            "ops",
            Role::Operator,
            Duration::from_secs(60),
            "orrery",
            "orrery",
        )
        .unwrap();
        let p = auth().verify(&t).await.unwrap();
        assert_eq!(p.role, Role::Operator);
        assert_eq!(p.subject, "ops");
    }

    #[tokio::test]
    async fn a_provider_hs256_token_without_nbf_is_accepted() {
        let t = now();
        let token = hs(
            &json!({"sub": "svc", "role": "viewer", "exp": t + 60, "iat": t, "iss": "orrery", "aud": "orrery"}),
        );
        assert_eq!(auth().verify(&token).await.unwrap().role, Role::Viewer);
    }

    #[tokio::test]
    async fn each_rejection_names_the_failed_check() {
        let a = auth();
        let t = now();
        let good =
            json!({"sub": "x", "role": "admin", "exp": t + 60, "iss": "orrery", "aud": "orrery"});
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            hs(&c)
        };
        let bad_sig = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"another-secret-xxxxxxxx"),
        )
        .unwrap();
        assert_eq!(
            err(a.verify(&bad_sig).await),
            "invalid token: bad signature"
        );
        assert!(err(a.verify(&with("aud", json!("someone-else"))).await)
            .starts_with("invalid token: wrong audience \"someone-else\""));
        assert!(err(a.verify(&with("iss", json!("evil"))).await)
            .starts_with("invalid token: wrong issuer \"evil\""));
        assert!(err(a.verify(&with("exp", json!(t - 120))).await)
            .starts_with("invalid token: expired at"));
        assert!(err(a.verify(&with("nbf", json!(t + 120))).await)
            .starts_with("invalid token: not yet valid"));
        assert!(err(a.verify(&with("role", json!("root"))).await)
            .starts_with("invalid token: role \"root\" at path \"role\" is not mapped"));
        assert!(
            err(a.verify("not.a.jwt").await).starts_with("invalid token: not a well-formed JWT")
        );
        // RS256 without any public key configured.
        let rs = sign(RSA_A, Algorithm::RS256, None, &good);
        assert_eq!(
            err(a.verify(&rs).await),
            "invalid token: algorithm RS256 is not accepted: no RS256 key is configured (auth.jwt_public_key_file or auth.jwks_url)"
        );
        let none = Authenticator::from_config(&Config::default()).unwrap();
        assert!(matches!(
            none.verify(&rs).await,
            Err(AuthError::NotConfigured)
        ));
    }

    #[tokio::test]
    async fn repeated_failures_throttle_the_address() {
        let a = auth();
        let ip: Option<IpAddr> = Some([10, 0, 0, 1].into());
        for _ in 0..10 {
            assert!(matches!(
                a.authenticate(Some("Bearer nope"), ip).await,
                Caller::Rejected(_)
            ));
        }
        let good = issue_token(
            SECRET,
            "x",
            Role::Admin,
            Duration::from_secs(60),
            "orrery",
            "orrery",
        )
        .unwrap();
        match a.authenticate(Some(&format!("Bearer {good}")), ip).await {
            Caller::Rejected(r) => assert!(r.contains("too many")),
            other => panic!("expected throttling, got {other:?}"),
        }
        // Another address is not affected.
        assert!(matches!(
            a.authenticate(Some(&format!("Bearer {good}")), Some([10, 0, 0, 2].into()))
                .await,
            Caller::Authenticated(_)
        ));
        assert!(matches!(a.authenticate(None, ip).await, Caller::Anonymous));
    }

    #[tokio::test]
    async fn issued_tokens_follow_the_configured_role_claim_and_map() {
        let mut config = Config {
            jwt_secret: Some(SECRET.into()),
            ..Config::default()
        };
        config.auth.roles_claim = "realm_access.roles".into();
        config.auth.role_map = [("orrery-admin".to_string(), Role::Admin)].into();
        let t = issue_token_for(
            SECRET,
            "cli",
            Role::Admin,
            Duration::from_secs(60),
            &config.auth,
        )
        .unwrap();
        let a = Authenticator::from_config(&config).unwrap();
        assert_eq!(a.verify(&t).await.unwrap().role, Role::Admin);
        let e = issue_token_for(
            SECRET,
            "cli",
            Role::Viewer,
            Duration::from_secs(60),
            &config.auth,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("no provider role standing for viewer"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn keycloak_shaped_tokens_verify_through_the_jwks() {
        let idp = Idp::start(vec![jwk(RSA_A, Algorithm::RS256, "kc-a")]).await;
        let issuer = "http://127.0.0.1/realms/orrery";
        let a = jwks_auth(&idp.url, |c| {
            c.issuer = issuer.into();
            c.roles_claim = "realm_access.roles".into();
            c.role_map = [
                ("orrery-viewer".to_string(), Role::Viewer),
                ("orrery-operator".to_string(), Role::Operator),
            ]
            .into();
        });
        let claims = keycloak_claims(issuer);
        let token = sign(RSA_A, Algorithm::RS256, Some("kc-a"), &claims);
        let p = a.verify(&token).await.unwrap();
        assert_eq!(p.role, Role::Operator);
        assert_eq!(p.subject, "f4f1c3b2-0d5e-4a7f-8e9b-1c2d3e4f5a6b");
        // Only Keycloak's default roles: refused, naming them.
        let mut c = claims.clone();
        c["realm_access"]["roles"] = json!(["offline_access", "uma_authorization"]);
        let e = err(a
            .verify(&sign(RSA_A, Algorithm::RS256, Some("kc-a"), &c))
            .await);
        assert!(e.contains("role \"offline_access\", \"uma_authorization\" at path \"realm_access.roles\" is not mapped"), "{e}");
        // Signed by another key under the same kid.
        let forged = sign(RSA_B, Algorithm::RS256, Some("kc-a"), &claims);
        assert_eq!(err(a.verify(&forged).await), "invalid token: bad signature");
        assert_eq!(idp.fetches(), 1, "the set is cached");
    }

    #[tokio::test]
    async fn auth0_shaped_tokens_with_a_namespaced_roles_claim() {
        let idp = Idp::start(vec![jwk(RSA_B, Algorithm::RS256, "auth0-1")]).await;
        let a = jwks_auth(&idp.url, |c| {
            c.issuer = "https://orrery-test.eu.auth0.com/".into();
            c.audience = "https://orrery.example.com/api".into();
            c.roles_claim = "https://orrery.example.com/roles".into();
            c.role_map = [
                ("Orrery Viewer".to_string(), Role::Viewer),
                ("Orrery Admin".to_string(), Role::Admin),
            ]
            .into();
        });
        let token = sign(
            RSA_B,
            Algorithm::RS256,
            Some("auth0-1"),
            &auth0_claims(&["Orrery Viewer", "Orrery Admin"]),
        );
        let p = a.verify(&token).await.unwrap();
        assert_eq!(p.role, Role::Admin, "the highest role wins");
        assert_eq!(p.subject, "auth0|65a1b2c3d4e5f6a7b8c9d0e1");
        let none = sign(RSA_B, Algorithm::RS256, Some("auth0-1"), &auth0_claims(&[]));
        assert!(err(a.verify(&none).await)
            .contains("role (none) at path \"https://orrery.example.com/roles\""));
        let mut c = auth0_claims(&["Orrery Viewer"]);
        c.as_object_mut()
            .unwrap()
            .remove("https://orrery.example.com/roles");
        let e = err(a
            .verify(&sign(RSA_B, Algorithm::RS256, Some("auth0-1"), &c))
            .await);
        assert_eq!(e, "invalid token: no role claim at path \"https://orrery.example.com/roles\" (auth.roles_claim)");
        let mut c = auth0_claims(&["Orrery Viewer"]);
        c["aud"] = json!(["https://other.example.com/api"]);
        let e = err(a
            .verify(&sign(RSA_B, Algorithm::RS256, Some("auth0-1"), &c))
            .await);
        assert!(
            e.starts_with("invalid token: wrong audience [\"https://other.example.com/api\"]"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn es256_keys_from_the_jwks_and_tokens_without_kid() {
        let idp = Idp::start(vec![jwk(EC, Algorithm::ES256, "ec-1")]).await;
        let a = jwks_auth(&idp.url, |_| {});
        let t = now();
        let claims = json!({"sub": "s", "role": ["viewer"], "exp": t + 60, "iss": "orrery", "aud": "orrery"});
        let token = sign(EC, Algorithm::ES256, Some("ec-1"), &claims);
        assert_eq!(a.verify(&token).await.unwrap().role, Role::Viewer);
        // No kid: every key of the algorithm is tried.
        let token = sign(EC, Algorithm::ES256, None, &claims);
        assert_eq!(a.verify(&token).await.unwrap().role, Role::Viewer);
        // An RS256 token naming the EC key.
        let token = sign(RSA_A, Algorithm::RS256, Some("ec-1"), &claims);
        assert!(err(a.verify(&token).await).contains("kid \"ec-1\" is a ES256 key"));
    }

    #[tokio::test]
    async fn key_rotation_is_followed_and_removed_keys_are_refused() {
        let idp = Idp::start(vec![jwk(RSA_A, Algorithm::RS256, "2026-11")]).await;
        let a = jwks_auth(&idp.url, |c| {
            c.jwks_cache_secs = 1;
            c.jwks_min_refresh_secs = 0;
        });
        let t = now();
        let claims = json!({"sub": "s", "role": "operator", "exp": t + 120, "iss": "orrery", "aud": "orrery"});
        let old = sign(RSA_A, Algorithm::RS256, Some("2026-11"), &claims);
        let new = sign(RSA_B, Algorithm::RS256, Some("2026-12"), &claims);
        assert!(a.verify(&old).await.is_ok());
        let e = err(a.verify(&new).await);
        assert!(
            e.starts_with("invalid token: unknown kid \"2026-12\""),
            "{e}"
        );
        assert!(e.contains("has kids \"2026-11\""), "{e}");
        // The provider publishes the new key: the unknown kid triggers a fetch.
        idp.set(vec![
            jwk(RSA_A, Algorithm::RS256, "2026-11"),
            jwk(RSA_B, Algorithm::RS256, "2026-12"),
        ]);
        assert_eq!(a.verify(&new).await.unwrap().role, Role::Operator);
        assert!(a.verify(&old).await.is_ok());
        // The old key is withdrawn: once the cache ages out, its tokens are refused.
        idp.set(vec![jwk(RSA_B, Algorithm::RS256, "2026-12")]);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let e = err(a.verify(&old).await);
        assert!(
            e.starts_with("invalid token: unknown kid \"2026-11\""),
            "{e}"
        );
        assert!(a.verify(&new).await.is_ok());
    }

    #[tokio::test]
    async fn unknown_kids_cannot_hammer_the_provider() {
        let idp = Idp::start(vec![jwk(RSA_A, Algorithm::RS256, "k1")]).await;
        let a = jwks_auth(&idp.url, |c| c.jwks_min_refresh_secs = 60);
        let t = now();
        let claims =
            json!({"sub": "s", "role": "admin", "exp": t + 60, "iss": "orrery", "aud": "orrery"});
        for i in 0..50 {
            let token = sign(
                RSA_A,
                Algorithm::RS256,
                Some(&format!("made-up-{i}")),
                &claims,
            );
            assert!(err(a.verify(&token).await).contains("unknown kid"));
        }
        assert_eq!(idp.fetches(), 1, "one fetch per minimum interval");
        assert!(a
            .verify(&sign(RSA_A, Algorithm::RS256, Some("k1"), &claims))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn an_unreachable_jwks_is_named_and_the_key_file_still_works() {
        // A port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("orrery_auth_unit_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pub_file = dir.join("rsa-b.pub.pem");
        std::fs::write(&pub_file, include_str!("../tests-data/jwt/rsa-b.pub.pem")).unwrap();
        let a = jwks_auth(&format!("http://127.0.0.1:{port}/jwks"), |c| {
            c.jwt_public_key_file = Some(pub_file.clone());
        });
        let t = now();
        let claims =
            json!({"sub": "s", "role": "viewer", "exp": t + 60, "iss": "orrery", "aud": "orrery"});
        let e = err(a
            .verify(&sign(RSA_A, Algorithm::RS256, Some("k"), &claims))
            .await);
        assert!(
            e.starts_with("invalid token: cannot verify kid \"k\": the JWKS at http://127.0.0.1:"),
            "{e}"
        );
        assert!(e.contains("could not be fetched"), "{e}");
        // Signed by the key file's key: accepted with or without a kid.
        assert!(a
            .verify(&sign(RSA_B, Algorithm::RS256, Some("k"), &claims))
            .await
            .is_ok());
        assert!(a
            .verify(&sign(RSA_B, Algorithm::RS256, None, &claims))
            .await
            .is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
