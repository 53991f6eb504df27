//! The claim checks applied to a token whose signature was verified: `exp` (required),
//! `nbf` and `iat` (checked when present), `iss`, `aud` (a string or an array), the subject,
//! and the role(s) found at the configured claim path, mapped to an Orrery [`Role`].
//!
//! Each failure is a [`TokenError`] naming the check that failed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{Principal, Role};
use crate::config::AuthConfig;

/// Why a token was refused: one variant per check.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header and payload.
    #[error("not a well-formed JWT ({0})")]
    Format(String),
    /// The header's `alg` is not one Orrery verifies with the configured keys.
    #[error("algorithm {alg} is not accepted: {reason}")]
    Algorithm {
        /// The token's `alg`.
        alg: String,
        /// Why (which key would be needed).
        reason: String,
    },
    /// The signature does not match the key.
    #[error("bad signature")]
    Signature,
    /// The header's `kid` is not in the provider's key set, even after fetching it again.
    #[error("unknown kid {kid:?}: the JWKS at {url} has {known}")]
    UnknownKid {
        /// The token's `kid`.
        kid: String,
        /// The JWKS URL.
        url: String,
        /// The kids it has, for the operator.
        known: String,
    },
    /// No key set could be fetched, so the token cannot be checked.
    #[error("cannot verify kid {kid:?}: the JWKS at {url} could not be fetched ({reason})")]
    JwksUnavailable {
        /// The token's `kid` (empty when it has none).
        kid: String,
        /// The JWKS URL.
        url: String,
        /// The fetch error.
        reason: String,
    },
    /// A required claim is absent.
    #[error("missing {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong type.
    #[error("claim {claim} {reason}")]
    BadClaim {
        /// The claim.
        claim: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `exp` has passed.
    #[error("expired at {exp} (now {now}, leeway {leeway}s)")]
    Expired {
        /// The token's `exp`.
        exp: String,
        /// The server's clock.
        now: String,
        /// `auth.leeway_secs`.
        leeway: u64,
    },
    /// `nbf` is in the future.
    #[error("not yet valid: nbf is {nbf} (now {now}, leeway {leeway}s)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: String,
        /// The server's clock.
        now: String,
        /// `auth.leeway_secs`.
        leeway: u64,
    },
    /// `iat` is in the future.
    #[error("issued in the future: iat is {iat} (now {now}, leeway {leeway}s)")]
    IssuedInFuture {
        /// The token's `iat`.
        iat: String,
        /// The server's clock.
        now: String,
        /// `auth.leeway_secs`.
        leeway: u64,
    },
    /// `iss` is not the configured issuer.
    #[error("wrong issuer {got:?} (expected {expected:?}, auth.issuer)")]
    Issuer {
        /// The token's `iss`.
        got: String,
        /// `auth.issuer`.
        expected: String,
    },
    /// `aud` does not contain the configured audience.
    #[error("wrong audience {got} (expected {expected:?}, auth.audience)")]
    Audience {
        /// The token's `aud`, as JSON.
        got: String,
        /// `auth.audience`.
        expected: String,
    },
    /// No `sub`, `azp` or `client_id` to record as the caller.
    #[error("no subject: the token has no sub, azp or client_id claim")]
    NoSubject,
    /// Nothing at the role claim path.
    #[error("no role claim at path {0:?} (auth.roles_claim)")]
    NoRoleClaim(String),
    /// The role claim is neither a string nor an array of strings.
    #[error("role claim at path {path:?} must be a string or an array of strings, got {got}")]
    RoleClaimType {
        /// `auth.roles_claim`.
        path: String,
        /// The JSON type found.
        got: &'static str,
    },
    /// None of the token's role names maps to an Orrery role.
    #[error("role {roles} at path {path:?} is not mapped to viewer, operator or admin ({hint})")]
    RoleNotMapped {
        /// The names found (quoted, comma-separated, truncated).
        roles: String,
        /// `auth.roles_claim`.
        path: String,
        /// What to configure.
        hint: &'static str,
    },
}

/// The checks and their settings, taken from [`AuthConfig`].
#[derive(Debug, Clone)]
pub struct ClaimRules {
    issuer: String,
    audience: String,
    roles_claim: String,
    role_map: BTreeMap<String, Role>,
    leeway: u64,
}

impl ClaimRules {
    /// The rules `auth` configures.
    pub fn new(auth: &AuthConfig) -> Self {
        Self {
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            roles_claim: auth.roles_claim.clone(),
            role_map: auth.role_map.clone(),
            leeway: auth.leeway_secs,
        }
    }

    /// Checks verified claims at `now` (unix seconds) and yields the caller.
    pub fn check(&self, claims: &Value, now: i64) -> Result<Principal, TokenError> {
        let obj = claims.as_object().ok_or(TokenError::BadClaim {
            claim: "payload",
            reason: "must be a JSON object".into(),
        })?;
        let leeway = self.leeway as f64;
        let now_f = now as f64;
        let exp = numeric(obj, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
        if now_f > exp + leeway {
            return Err(TokenError::Expired {
                exp: time(exp),
                now: time(now_f),
                leeway: self.leeway,
            });
        }
        if let Some(nbf) = numeric(obj, "nbf")? {
            if nbf > now_f + leeway {
                return Err(TokenError::NotYetValid {
                    nbf: time(nbf),
                    now: time(now_f),
                    leeway: self.leeway,
                });
            }
        }
        if let Some(iat) = numeric(obj, "iat")? {
            if iat > now_f + leeway {
                return Err(TokenError::IssuedInFuture {
                    iat: time(iat),
                    now: time(now_f),
                    leeway: self.leeway,
                });
            }
        }
        match obj.get("iss") {
            None | Some(Value::Null) => return Err(TokenError::MissingClaim("iss")),
            Some(Value::String(iss)) if *iss == self.issuer => {}
            Some(Value::String(iss)) => {
                return Err(TokenError::Issuer {
                    got: clip(iss),
                    expected: self.issuer.clone(),
                })
            }
            Some(other) => {
                return Err(TokenError::BadClaim {
                    claim: "iss",
                    reason: format!("must be a string, got {}", type_name(other)),
                })
            }
        }
        let aud_ok = match obj.get("aud") {
            None | Some(Value::Null) => return Err(TokenError::MissingClaim("aud")),
            Some(Value::String(a)) => *a == self.audience,
            Some(Value::Array(items)) => items
                .iter()
                .any(|a| a.as_str() == Some(self.audience.as_str())),
            Some(other) => {
                return Err(TokenError::BadClaim {
                    claim: "aud",
                    reason: format!(
                        "must be a string or an array of strings, got {}",
                        type_name(other)
                    ),
                })
            }
        };
        if !aud_ok {
            return Err(TokenError::Audience {
                got: clip(&obj["aud"].to_string()),
                expected: self.audience.clone(),
            });
        }
        let subject = ["sub", "azp", "client_id"]
            .iter()
            .find_map(|k| {
                obj.get(*k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .ok_or(TokenError::NoSubject)?;
        let role = self.role(obj)?;
        Ok(Principal {
            subject: subject.to_string(),
            role,
        })
    }

    /// The highest Orrery role among the names at the role claim path.
    fn role(&self, obj: &Map<String, Value>) -> Result<Role, TokenError> {
        let path = &self.roles_claim;
        let names: Vec<&str> = match lookup(obj, path) {
            None | Some(Value::Null) => return Err(TokenError::NoRoleClaim(path.clone())),
            Some(Value::String(s)) => s.split_whitespace().collect(),
            Some(Value::Array(items)) => {
                let mut names = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => names.push(s.as_str()),
                        _ => {
                            return Err(TokenError::RoleClaimType {
                                path: path.clone(),
                                got: "an array with a non-string item",
                            })
                        }
                    }
                }
                names
            }
            Some(other) => {
                return Err(TokenError::RoleClaimType {
                    path: path.clone(),
                    got: type_name(other),
                })
            }
        };
        let mapped = names
            .iter()
            .filter_map(|n| {
                if self.role_map.is_empty() {
                    Role::parse(n)
                } else {
                    self.role_map.get(*n).copied()
                }
            })
            .max();
        mapped.ok_or_else(|| {
            let mut shown: Vec<String> = names
                .iter()
                .take(10)
                .map(|n| format!("{:?}", clip(n)))
                .collect();
            if names.len() > 10 {
                shown.push(format!("and {} more", names.len() - 10));
            }
            TokenError::RoleNotMapped {
                roles: if shown.is_empty() {
                    "(none)".to_string()
                } else {
                    shown.join(", ")
                },
                path: path.clone(),
                hint: if self.role_map.is_empty() {
                    "map provider roles in auth.role_map"
                } else {
                    "none of them is in auth.role_map"
                },
            }
        })
    }
}

/// The value at `path` in `obj`: the whole path as one key first (namespaced claims such as
/// `https://example.com/roles` contain dots), then split at each dot from the left, the part
/// before it naming a nested object in which the rest is looked up the same way.
pub fn lookup<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    for (i, _) in path.match_indices('.') {
        if let Some(Value::Object(inner)) = obj.get(&path[..i]) {
            if let Some(v) = lookup(inner, &path[i + 1..]) {
                return Some(v);
            }
        }
    }
    None
}

/// A NumericDate claim (RFC 7519: seconds, possibly fractional), `None` when absent.
fn numeric(obj: &Map<String, Value>, claim: &'static str) -> Result<Option<f64>, TokenError> {
    match obj.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(TokenError::BadClaim {
            claim,
            reason: "is not a finite number".into(),
        }),
        Some(other) => Err(TokenError::BadClaim {
            claim,
            reason: format!("must be a number of seconds, got {}", type_name(other)),
        }),
    }
}

fn time(secs: f64) -> String {
    DateTime::<Utc>::from_timestamp(secs.floor() as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("{secs}"))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Token text quoted in an error, bounded (it comes from outside).
fn clip(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(80).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn rules(f: impl FnOnce(&mut AuthConfig)) -> ClaimRules {
        let mut c = AuthConfig::default();
        f(&mut c);
        ClaimRules::new(&c)
    }

    fn base() -> Value {
        json!({"sub": "u", "role": "operator", "exp": NOW + 60, "iss": "orrery", "aud": "orrery"})
    }

    fn with(mut v: Value, k: &str, x: Value) -> Value {
        v[k] = x;
        v
    }

    #[test]
    fn nbf_and_iat_are_optional_but_checked_when_present() {
        let r = rules(|_| {});
        assert_eq!(r.check(&base(), NOW).unwrap().role, Role::Operator);
        let ok = with(with(base(), "nbf", json!(NOW - 1)), "iat", json!(NOW - 1));
        assert!(r.check(&ok, NOW).is_ok());
        let e = r
            .check(&with(base(), "nbf", json!(NOW + 60)), NOW)
            .unwrap_err();
        assert!(matches!(e, TokenError::NotYetValid { .. }), "{e}");
        assert!(e.to_string().starts_with("not yet valid"), "{e}");
        let e = r
            .check(&with(base(), "iat", json!(NOW + 60)), NOW)
            .unwrap_err();
        assert!(e.to_string().starts_with("issued in the future"), "{e}");
        let e = r
            .check(&with(base(), "nbf", json!("soon")), NOW)
            .unwrap_err();
        assert!(e.to_string().contains("claim nbf must be a number"), "{e}");
        // Fractional NumericDate is valid.
        assert!(r
            .check(&with(base(), "iat", json!(NOW as f64 - 0.5)), NOW)
            .is_ok());
    }

    #[test]
    fn leeway_applies_to_exp_and_nbf() {
        let r = rules(|c| c.leeway_secs = 30);
        let v = with(base(), "exp", json!(NOW - 20));
        assert!(r.check(&v, NOW).is_ok());
        let e = r
            .check(&with(base(), "exp", json!(NOW - 31)), NOW)
            .unwrap_err();
        assert!(e.to_string().starts_with("expired at"), "{e}");
        assert!(e.to_string().contains("leeway 30s"), "{e}");
        assert!(r.check(&with(base(), "nbf", json!(NOW + 25)), NOW).is_ok());
        let strict = rules(|c| c.leeway_secs = 0);
        assert!(strict
            .check(&with(base(), "nbf", json!(NOW + 1)), NOW)
            .is_err());
        let no_exp = {
            let mut v = base();
            v.as_object_mut().unwrap().remove("exp");
            v
        };
        assert_eq!(
            r.check(&no_exp, NOW).unwrap_err(),
            TokenError::MissingClaim("exp")
        );
    }

    #[test]
    fn issuer_and_audience_name_what_was_wrong() {
        let r = rules(|_| {});
        let e = r
            .check(&with(base(), "iss", json!("evil")), NOW)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "wrong issuer \"evil\" (expected \"orrery\", auth.issuer)"
        );
        let e = r
            .check(&with(base(), "aud", json!(["a", "b"])), NOW)
            .unwrap_err();
        assert!(
            e.to_string().starts_with("wrong audience [\"a\",\"b\"]"),
            "{e}"
        );
        assert!(r
            .check(&with(base(), "aud", json!(["a", "orrery"])), NOW)
            .is_ok());
        let e = r.check(&with(base(), "aud", json!(3)), NOW).unwrap_err();
        assert!(e.to_string().starts_with("claim aud must be"), "{e}");
    }

    #[test]
    fn subject_falls_back_to_azp_and_client_id() {
        let r = rules(|_| {});
        let mut v = base();
        v.as_object_mut().unwrap().remove("sub");
        assert_eq!(r.check(&v, NOW).unwrap_err(), TokenError::NoSubject);
        let p = r
            .check(&with(v.clone(), "azp", json!("dashboard")), NOW)
            .unwrap();
        assert_eq!(p.subject, "dashboard");
        let p = r.check(&with(v, "client_id", json!("cron")), NOW).unwrap();
        assert_eq!(p.subject, "cron");
    }

    #[test]
    fn role_paths_nested_namespaced_and_arrays() {
        let obj = json!({
            "realm_access": {"roles": ["offline_access", "orrery-ops"]},
            "https://example.com/roles": ["admin"],
            "https://example.com": {"x": 1},
            "resource_access": {"orrery.api": {"roles": ["viewer"]}},
            "a": {"b.c": {"d": "operator"}},
        });
        let obj = obj.as_object().unwrap();
        assert_eq!(
            lookup(obj, "realm_access.roles"),
            Some(&json!(["offline_access", "orrery-ops"]))
        );
        assert_eq!(
            lookup(obj, "https://example.com/roles"),
            Some(&json!(["admin"]))
        );
        assert_eq!(
            lookup(obj, "resource_access.orrery.api.roles"),
            Some(&json!(["viewer"]))
        );
        assert_eq!(lookup(obj, "a.b.c.d"), Some(&json!("operator")));
        assert_eq!(lookup(obj, "realm_access.nope"), None);
        assert_eq!(lookup(obj, "nothing"), None);
    }

    #[test]
    fn roles_are_mapped_and_the_highest_wins() {
        let r = rules(|c| {
            c.roles_claim = "realm_access.roles".into();
            c.role_map = [
                ("orrery-viewer", Role::Viewer),
                ("orrery-ops", Role::Operator),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        });
        let v = with(
            base(),
            "realm_access",
            json!({"roles": ["offline_access", "orrery-viewer", "orrery-ops"]}),
        );
        assert_eq!(r.check(&v, NOW).unwrap().role, Role::Operator);
        // With a map, Orrery's own names count only when listed.
        let v = with(
            base(),
            "realm_access",
            json!({"roles": ["admin", "uma_authorization"]}),
        );
        let e = r.check(&v, NOW).unwrap_err();
        assert_eq!(
            e.to_string(),
            "role \"admin\", \"uma_authorization\" at path \"realm_access.roles\" is not mapped to viewer, operator or admin (none of them is in auth.role_map)"
        );
        let e = r.check(&base(), NOW).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no role claim at path \"realm_access.roles\" (auth.roles_claim)"
        );
        let v = with(base(), "realm_access", json!({"roles": 7}));
        assert!(r
            .check(&v, NOW)
            .unwrap_err()
            .to_string()
            .contains("must be a string or an array of strings, got a number"));
    }

    #[test]
    fn without_a_map_orrery_names_count_and_strings_may_hold_several() {
        let r = rules(|c| c.roles_claim = "scope".into());
        let v = with(base(), "scope", json!("openid viewer admin"));
        assert_eq!(r.check(&v, NOW).unwrap().role, Role::Admin);
        let v = with(base(), "scope", json!("openid email"));
        let e = r.check(&v, NOW).unwrap_err();
        assert!(
            e.to_string()
                .contains("map provider roles in auth.role_map"),
            "{e}"
        );
        let r = rules(|_| {});
        let e = r
            .check(&with(base(), "role", json!("root")), NOW)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("role \"root\" at path \"role\" is not mapped"),
            "{e}"
        );
    }
}
