//! XDR decoding of untrusted upstream data with SDF's `stellar-xdr` crate, and strkeys with
//! `stellar-strkey` (checksums verified). Every decode sets [`Limits`]: a nesting depth and
//! a byte budget of the input's own size, so hostile input cannot exhaust the stack or
//! memory.

use stellar_xdr::{Limits, ReadXdr, WriteXdr};

/// Deepest XDR nesting accepted (ScVal vectors/maps inside each other, meta unions).
pub const MAX_DEPTH: u32 = 200;
/// Largest base64 string accepted for one XDR value (a ledger's close meta can be large).
pub const MAX_BASE64: usize = 64 << 20;

/// Why an XDR string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    /// The value is larger than [`MAX_BASE64`].
    #[error("{what}: {len} base64 characters exceed the {max} accepted")]
    TooLarge {
        /// Type being decoded.
        what: &'static str,
        /// Input length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not valid base64 or not a valid value of the type.
    #[error("{what}: malformed XDR: {error}")]
    Malformed {
        /// Type being decoded.
        what: &'static str,
        /// The decoder's message.
        error: String,
    },
}

/// Decode limits for an input of `b64_len` base64 characters.
pub fn limits_for(b64_len: usize) -> Limits {
    Limits {
        depth: MAX_DEPTH,
        // The decoded size bounds every length prefix the reader may honour.
        len: b64_len / 4 * 3 + 3,
    }
}

/// Decodes one base64 XDR value of type `T` (named `what` in errors).
pub fn decode<T: ReadXdr>(what: &'static str, b64: &str) -> Result<T, XdrError> {
    if b64.len() > MAX_BASE64 {
        return Err(XdrError::TooLarge {
            what,
            len: b64.len(),
            max: MAX_BASE64,
        });
    }
    T::from_xdr_base64(b64, limits_for(b64.len())).map_err(|e| XdrError::Malformed {
        what,
        error: e.to_string(),
    })
}

/// Encodes `value` as base64 XDR (for requests such as `getLedgerEntries` keys).
pub fn encode<T: WriteXdr>(value: &T) -> Result<String, XdrError> {
    value
        .to_xdr_base64(Limits {
            depth: MAX_DEPTH,
            len: MAX_BASE64,
        })
        .map_err(|e| XdrError::Malformed {
            what: "encode",
            error: e.to_string(),
        })
}

/// Why a strkey was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid {expected} strkey (checksum, version byte or length)")]
pub struct StrkeyError {
    /// What was given.
    pub input: String,
    /// What was expected (`account (G...)`, `contract (C...)`, ...).
    pub expected: &'static str,
}

/// The 32-byte key of a `G...` account id, checksum verified.
pub fn account_key(s: &str) -> Result<[u8; 32], StrkeyError> {
    match stellar_strkey::Strkey::from_string(s) {
        Ok(stellar_strkey::Strkey::PublicKeyEd25519(k)) => Ok(k.0),
        _ => Err(StrkeyError {
            input: s.to_string(),
            expected: "account (G...)",
        }),
    }
}

/// Whether `s` is a valid `G...` account id (checksum verified).
pub fn is_account(s: &str) -> bool {
    account_key(s).is_ok()
}

/// The `G...` strkey of a 32-byte ed25519 key.
pub fn account_strkey(key: [u8; 32]) -> String {
    stellar_strkey::ed25519::PublicKey(key).to_string()
}

/// The `C...` strkey of a contract id.
pub fn contract_strkey(id: [u8; 32]) -> String {
    stellar_strkey::Contract(id).to_string()
}

/// The 32-byte id of a `C...` contract strkey, checksum verified.
pub fn contract_key(s: &str) -> Result<[u8; 32], StrkeyError> {
    match stellar_strkey::Strkey::from_string(s) {
        Ok(stellar_strkey::Strkey::Contract(c)) => Ok(c.0),
        _ => Err(StrkeyError {
            input: s.to_string(),
            expected: "contract (C...)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::ScVal;

    #[test]
    fn strkeys_verify_checksums() {
        let g = "GDUKMGUGDZQK6YHYA5Z6AY2G4XDSZPSZ3SW5UN3ARVMO6QSRDWP5YLEX";
        let key = account_key(g).unwrap();
        assert_eq!(account_strkey(key), g);
        // One character changed: the checksum fails.
        let bad = "GDUKMGUGDZQK6YHYA5Z6AY2G4XDSZPSZ3SW5UN3ARVMO6QSRDWP5YLEY";
        assert!(account_key(bad).is_err());
        assert!(account_key("CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC").is_err());
        let c = contract_key("CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC").unwrap();
        assert_eq!(
            contract_strkey(c),
            "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC"
        );
        assert!(!is_account(""));
    }

    #[test]
    fn malformed_and_hostile_xdr_are_errors() {
        assert!(matches!(
            decode::<ScVal>("scval", "not base64!"),
            Err(XdrError::Malformed { .. })
        ));
        // A vec claiming 2^31 elements in 8 bytes: refused by the length budget, no
        // allocation.
        let hostile = base64_of(&[0, 0, 0, 16, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff]);
        assert!(decode::<ScVal>("scval", &hostile).is_err());
        // Deep nesting: vec(vec(vec(...))) beyond MAX_DEPTH.
        let mut deep = Vec::new();
        for _ in 0..(MAX_DEPTH + 10) {
            deep.extend_from_slice(&[0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 1]);
        }
        deep.extend_from_slice(&[0, 0, 0, 1]);
        assert!(decode::<ScVal>("scval", &base64_of(&deep)).is_err());
        // Trailing bytes are refused too.
        let ok = encode(&ScVal::U32(7)).unwrap();
        assert_eq!(decode::<ScVal>("scval", &ok).unwrap(), ScVal::U32(7));
        let mut bytes = ScVal::U32(7).to_xdr(Limits::none()).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        assert!(decode::<ScVal>("scval", &base64_of(&bytes)).is_err());
    }

    fn base64_of(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    }
}
