//! HMAC-SHA256 signatures of webhook bodies (`X-Orrery-Signature: sha256=<hex>`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error branch cannot happen.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// The `X-Orrery-Signature` header value: `sha256=<hex>`.
pub fn signature_header(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", sign(secret, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_test_case_2() {
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn header_has_prefix_and_depends_on_secret() {
        let a = signature_header(b"k1", b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, signature_header(b"k2", b"{}"));
        assert_ne!(a, signature_header(b"k1", b"{ }"));
    }
}
