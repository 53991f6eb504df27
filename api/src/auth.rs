//! Authentication and roles: JWT bearer tokens (HS256 with `JWT_SECRET`, RS256/ES256 with a
//! public key file) carrying a `role` claim of `viewer`, `operator` or `admin` (seed 001's
//! RBAC). `exp`, `nbf`, `iss` and `aud` are always checked. Failed attempts are counted per
//! client address; an address over the limit is throttled for the rest of the minute.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_graphql::{Context, Guard};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use orrery_indexer::metrics::Metrics;
use serde::{Deserialize, Serialize};

use crate::config::Config;
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

/// Token claims.
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

/// Why a token was rejected.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Authorization header not `Bearer <token>`.
    #[error("Authorization header must be `Bearer <token>`")]
    Malformed,
    /// No key configured to verify tokens.
    #[error("authentication is not configured (set JWT_SECRET or auth.jwt_public_key_file)")]
    NotConfigured,
    /// Signature, expiry, audience, issuer or claims rejected.
    #[error("invalid token: {0}")]
    Invalid(String),
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
}

/// Verifies tokens and throttles repeated failures.
pub struct Authenticator {
    keys: Vec<(DecodingKey, Vec<Algorithm>)>,
    issuer: String,
    audience: String,
    limit: u32,
    failures: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl Authenticator {
    /// Builds the verifier from the configured secret and/or public key.
    pub fn from_config(config: &Config) -> Result<Self, AuthError> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.jwt_secret {
            keys.push((
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256],
            ));
        }
        if let Some(path) = &config.auth.jwt_public_key_file {
            let key_err = |reason: String| AuthError::KeyFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| key_err(e.to_string()))?;
            if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                keys.push((k, vec![Algorithm::RS256]));
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                keys.push((k, vec![Algorithm::ES256]));
            } else {
                return Err(key_err("not an RSA or EC public key in PEM format".into()));
            }
        }
        Ok(Self {
            keys,
            issuer: config.auth.issuer.clone(),
            audience: config.auth.audience.clone(),
            limit: config.auth.failed_auth_limit,
            failures: Mutex::new(HashMap::new()),
        })
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

    /// Verifies one token.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if self.keys.is_empty() {
            return Err(AuthError::NotConfigured);
        }
        let mut last = AuthError::Invalid("no key accepted the token".into());
        for (key, algs) in &self.keys {
            let mut v = Validation::new(algs[0]);
            v.algorithms = algs.clone();
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[&self.audience]);
            v.validate_nbf = true;
            v.leeway = 5;
            v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                Ok(data) => {
                    return Ok(Principal {
                        subject: data.claims.sub,
                        role: data.claims.role,
                    })
                }
                Err(e) => last = AuthError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }

    /// Turns an `Authorization` header value into a [`Caller`], counting failures.
    pub fn authenticate(&self, header: Option<&str>, addr: Option<IpAddr>) -> Caller {
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
            Some(token) if !token.is_empty() => self.verify(token),
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

/// Signs an HS256 token (for `orrery token issue` and tests).
pub fn issue_token(
    secret: &str,
    subject: &str,
    role: Role,
    ttl: Duration,
    issuer: &str,
    audience: &str,
) -> Result<String, AuthError> {
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let claims = Claims {
        sub: subject.to_string(),
        role,
        exp: now + ttl.as_secs(),
        nbf: now,
        iat: now,
        iss: issuer.to_string(),
        aud: audience.to_string(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
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
    use super::*;

    const SECRET: &str = "0123456789abcdef0123";

    fn auth() -> Authenticator {
        let config = Config {
            jwt_secret: Some(SECRET.into()),
            ..Config::default()
        };
        Authenticator::from_config(&config).unwrap()
    }

    #[test]
    fn valid_token_yields_its_role() {
        let t = issue_token(
            SECRET,
            "ops",
            Role::Operator,
            Duration::from_secs(60),
            "orrery",
            "orrery",
        )
        .unwrap();
        let p = auth().verify(&t).unwrap();
        assert_eq!(p.role, Role::Operator);
        assert_eq!(p.subject, "ops");
    }

    #[test]
    fn wrong_secret_audience_and_expiry_are_rejected() {
        let a = auth();
        let bad_sig = issue_token(
            "another-secret-xxxxxxxx",
            "x",
            Role::Admin,
            Duration::from_secs(60),
            "orrery",
            "orrery",
        )
        .unwrap();
        assert!(a.verify(&bad_sig).is_err());
        let bad_aud = issue_token(
            SECRET,
            "x",
            Role::Admin,
            Duration::from_secs(60),
            "orrery",
            "someone-else",
        )
        .unwrap();
        assert!(a
            .verify(&bad_aud)
            .unwrap_err()
            .to_string()
            .contains("invalid"));
        let bad_iss = issue_token(
            SECRET,
            "x",
            Role::Admin,
            Duration::from_secs(60),
            "evil",
            "orrery",
        )
        .unwrap();
        assert!(a.verify(&bad_iss).is_err());
        let now = chrono::Utc::now().timestamp() as u64;
        let expired = Claims {
            sub: "x".into(),
            role: Role::Admin,
            exp: now - 120,
            nbf: now - 300,
            iat: now - 300,
            iss: "orrery".into(),
            aud: "orrery".into(),
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(a.verify(&t).unwrap_err().to_string().contains("Expired"));
    }

    #[test]
    fn repeated_failures_throttle_the_address() {
        let a = auth();
        let ip: Option<IpAddr> = Some([10, 0, 0, 1].into());
        for _ in 0..10 {
            assert!(matches!(
                a.authenticate(Some("Bearer nope"), ip),
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
        match a.authenticate(Some(&format!("Bearer {good}")), ip) {
            Caller::Rejected(r) => assert!(r.contains("too many")),
            other => panic!("expected throttling, got {other:?}"),
        }
        // Another address is not affected.
        assert!(matches!(
            a.authenticate(Some(&format!("Bearer {good}")), Some([10, 0, 0, 2].into())),
            Caller::Authenticated(_)
        ));
        assert!(matches!(a.authenticate(None, ip), Caller::Anonymous));
    }
}
