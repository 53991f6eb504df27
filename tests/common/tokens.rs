//! JWTs signed by the tests themselves (HS256, the server's issuer and audience), for
//! servers started with a known `JWT_SECRET`.

use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use orrery_api::auth::{Claims, Role};

/// A token for `sub` with `role`, expiring `expires_in_secs` from now (negative: already
/// expired), valid from an hour before it expires (or a minute ago, if earlier).
pub fn signed(secret: &str, role: Role, sub: &str, expires_in_secs: i64) -> String {
    let now = Utc::now().timestamp();
    let exp = now + expires_in_secs;
    let nbf = (now - 60).min(exp - 3600);
    let claims = Claims {
        sub: sub.into(),
        role,
        exp: exp as u64,
        nbf: nbf as u64,
        iat: nbf as u64,
        iss: "orrery".into(),
        aud: "orrery".into(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("an HS256 token encodes")
}

/// The value of the series `name` with label `label="value"` in a `/metrics` text.
pub fn metric(text: &str, name: &str, label: (&str, &str)) -> Option<f64> {
    let want = format!("{}=\"{}\"", label.0, label.1);
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(&want))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}
