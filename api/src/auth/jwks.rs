//! An identity provider's JSON Web Key Set, fetched by URL and cached.
//!
//! The set is fetched on first use, again once it is older than `auth.jwks_cache_secs` (a key
//! the provider removed stops being accepted), and again when a token names a `kid` the cache
//! does not have (key rotation). Fetches are single-flight and never closer together than
//! `auth.jwks_min_refresh_secs`, so a flood of tokens with made-up kids costs the provider at
//! most one request per interval. A failed fetch keeps the last good set.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::claims::TokenError;

/// Largest JWKS document accepted.
const MAX_BYTES: usize = 1024 * 1024;
/// Largest number of keys kept from one document.
const MAX_KEYS: usize = 100;
/// Timeout of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One usable signing key.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct State {
    keys: Vec<Key>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    last_error: Option<String>,
}

/// The cached key set of one JWKS URL.
pub struct JwksCache {
    url: String,
    client: reqwest::Client,
    max_age: Duration,
    min_refresh: Duration,
    state: RwLock<State>,
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

impl JwksCache {
    /// A cache for `url`; nothing is fetched until [`JwksCache::key`] or
    /// [`JwksCache::refresh_now`] is called.
    pub fn new(url: &str, max_age: Duration, min_refresh: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("orrery/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?;
        Ok(Self {
            url: url.to_string(),
            client,
            max_age,
            min_refresh,
            state: RwLock::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key named `kid`, for a token signed with `alg`.
    pub async fn key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, TokenError> {
        if self.is_stale() {
            self.refresh().await;
        }
        if let Some(k) = self.find(kid) {
            return usable(k, kid, alg);
        }
        // Unknown kid: the provider may have rotated its keys.
        self.refresh().await;
        if let Some(k) = self.find(kid) {
            return usable(k, kid, alg);
        }
        let state = self.read();
        match (&state.last_error, state.fetched_at) {
            (Some(reason), None) => Err(TokenError::JwksUnavailable {
                kid: kid.to_string(),
                url: self.url.clone(),
                reason: reason.clone(),
            }),
            _ => {
                let kids: Vec<String> = state
                    .keys
                    .iter()
                    .filter_map(|k| k.kid.as_ref().map(|id| format!("{id:?}")))
                    .collect();
                Err(TokenError::UnknownKid {
                    kid: kid.chars().take(80).collect(),
                    url: self.url.clone(),
                    known: if kids.is_empty() {
                        "no kids".to_string()
                    } else {
                        format!("kids {}", kids.join(", "))
                    },
                })
            }
        }
    }

    /// Every key for `alg` (tokens without a `kid`).
    pub async fn keys_for(&self, alg: Algorithm) -> Result<Vec<DecodingKey>, TokenError> {
        if self.is_stale() {
            self.refresh().await;
        }
        let state = self.read();
        if state.fetched_at.is_none() {
            if let Some(reason) = &state.last_error {
                return Err(TokenError::JwksUnavailable {
                    kid: String::new(),
                    url: self.url.clone(),
                    reason: reason.clone(),
                });
            }
        }
        Ok(state
            .keys
            .iter()
            .filter(|k| k.alg == alg)
            .map(|k| k.key.clone())
            .collect())
    }

    /// Fetches the set now (subject to the minimum interval); the number of usable keys.
    pub async fn refresh_now(&self) -> Result<usize, String> {
        self.refresh().await;
        let state = self.read();
        match (&state.last_error, state.fetched_at) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(_)) => Ok(state.keys.len()),
            (None, None) => Err("not fetched yet".into()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn is_stale(&self) -> bool {
        self.read()
            .fetched_at
            .is_none_or(|t| t.elapsed() >= self.max_age)
    }

    fn find(&self, kid: &str) -> Option<Key> {
        self.read()
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .cloned()
    }

    /// One fetch at a time, none within `min_refresh` of the previous attempt.
    async fn refresh(&self) {
        let _one = self.fetching.lock().await;
        if self
            .read()
            .attempted_at
            .is_some_and(|t| t.elapsed() < self.min_refresh)
        {
            return;
        }
        let result = self.fetch().await;
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        state.attempted_at = Some(now);
        match result {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                state.keys = keys;
                state.fetched_at = Some(now);
                state.last_error = None;
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, kept = state.keys.len(), "JWKS fetch failed; keeping the last good key set");
                state.last_error = Some(e);
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let mut resp = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?
        {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(format!("document larger than {MAX_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse(&body)
    }
}

/// The usable signing keys of a JWKS document. Keys for encryption, of other algorithms or
/// that do not parse are skipped; a document with none is an error.
fn parse(body: &[u8]) -> Result<Vec<Key>, String> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for value in doc.keys.into_iter().take(MAX_KEYS) {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(j) => j,
            Err(e) => {
                tracing::debug!(error = %e, "JWKS: skipping a key that does not parse");
                continue;
            }
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(p))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            }),
            Err(e) => {
                tracing::debug!(kid = ?jwk.common.key_id, error = %e, "JWKS: skipping an unusable key");
            }
        }
    }
    if keys.is_empty() {
        return Err("the document has no RS256 or ES256 signing key".into());
    }
    Ok(keys)
}

fn usable(k: Key, kid: &str, alg: Algorithm) -> Result<DecodingKey, TokenError> {
    if k.alg == alg {
        Ok(k.key)
    } else {
        Err(TokenError::Algorithm {
            alg: format!("{alg:?}"),
            reason: format!("kid {kid:?} is a {:?} key", k.alg),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_encryption_and_foreign_keys() {
        // An RSA signing key, the same key marked for encryption (Keycloak publishes both),
        // an HS256 secret and a P-384 key.
        let n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
        let doc = serde_json::json!({"keys": [
            {"kid": "sig", "kty": "RSA", "alg": "RS256", "use": "sig", "n": n, "e": "AQAB"},
            {"kid": "enc", "kty": "RSA", "alg": "RSA-OAEP", "use": "enc", "n": n, "e": "AQAB"},
            {"kid": "noalg", "kty": "RSA", "n": n, "e": "AQAB"},
            {"kid": "hs", "kty": "oct", "alg": "HS256", "k": "c2VjcmV0"},
            {"kid": "p384", "kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kid": "junk", "kty": "nope"}
        ]});
        let keys = parse(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["sig", "noalg"]);
        assert!(keys.iter().all(|k| k.alg == Algorithm::RS256));
        let err = parse(br#"{"keys": []}"#).err().unwrap();
        assert!(err.contains("no RS256 or ES256"), "{err}");
        assert!(parse(b"<html>")
            .err()
            .unwrap()
            .starts_with("not a JWKS document"));
    }
}
