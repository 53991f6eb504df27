//! Classic assets as the Stellar Asset Contract (SAC) sees them: `XLM` / `CODE:ISSUER`
//! parsed into an XDR [`Asset`], its SEP-11 string (`native`, `CODE:ISSUER`) and its
//! contract id, `sha256(HashIdPreimage::ContractId { network_id, FromAsset(asset) })` with
//! `network_id = sha256(passphrase)` (CAP-46-06).

use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountId, AlphaNum12, AlphaNum4, Asset, AssetCode12, AssetCode4, ContractIdPreimage, Hash,
    HashIdPreimage, HashIdPreimageContractId, Limits, PublicKey, Uint256, WriteXdr,
};

use super::xdr::{account_key, account_strkey, contract_strkey};
use crate::stellar::horizon::AssetKey;

/// Why an asset string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssetError {
    /// Not `XLM`, `native` or `CODE:ISSUER`.
    #[error("asset {0:?}: expected XLM or CODE:ISSUER")]
    Shape(String),
    /// The code is empty, longer than 12 characters or not alphanumeric ASCII.
    #[error("asset {0:?}: the code must be 1 to 12 ASCII letters or digits")]
    Code(String),
    /// The issuer is not a valid `G...` account (checksum included).
    #[error("asset {asset:?}: {error}")]
    Issuer {
        /// The asset string.
        asset: String,
        /// What is wrong with the issuer.
        error: super::xdr::StrkeyError,
    },
}

/// A classic asset followed through its SAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SacAsset {
    /// Orrery's key (`XLM` with an empty issuer for native).
    pub key: AssetKey,
    /// The XDR asset.
    pub asset: Asset,
    /// The SAC's contract id (`C...`).
    pub contract_id: String,
}

impl SacAsset {
    /// Parses `XLM` (or `native`) or `CODE:ISSUER` and computes the contract id on the
    /// network named by `passphrase`.
    pub fn parse(s: &str, passphrase: &str) -> Result<Self, AssetError> {
        let asset = parse_asset(s)?;
        Ok(Self {
            key: asset_key_of(&asset),
            contract_id: contract_strkey(contract_id(&asset, passphrase)),
            asset,
        })
    }

    /// The SEP-11 string the SAC puts in its event topics.
    pub fn sep11(&self) -> String {
        sep11(&self.asset)
    }
}

/// The XDR asset of `XLM`/`native`/`CODE:ISSUER`.
pub fn parse_asset(s: &str) -> Result<Asset, AssetError> {
    if s == "XLM" || s == "native" {
        return Ok(Asset::Native);
    }
    let (code, issuer) = s
        .split_once(':')
        .ok_or_else(|| AssetError::Shape(s.to_string()))?;
    if code.is_empty() || code.len() > 12 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AssetError::Code(s.to_string()));
    }
    let key = account_key(issuer).map_err(|error| AssetError::Issuer {
        asset: s.to_string(),
        error,
    })?;
    let issuer = AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key)));
    let bytes = code.as_bytes();
    Ok(if bytes.len() <= 4 {
        let mut c = [0u8; 4];
        c[..bytes.len()].copy_from_slice(bytes);
        Asset::CreditAlphanum4(AlphaNum4 {
            asset_code: AssetCode4(c),
            issuer,
        })
    } else {
        let mut c = [0u8; 12];
        c[..bytes.len()].copy_from_slice(bytes);
        Asset::CreditAlphanum12(AlphaNum12 {
            asset_code: AssetCode12(c),
            issuer,
        })
    })
}

/// The asset code of an XDR code (trailing NULs dropped).
fn code_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn issuer_str(id: &AccountId) -> String {
    let PublicKey::PublicKeyTypeEd25519(Uint256(k)) = &id.0;
    account_strkey(*k)
}

/// Orrery's key of an XDR asset.
pub fn asset_key_of(asset: &Asset) -> AssetKey {
    match asset {
        Asset::Native => AssetKey::native(),
        Asset::CreditAlphanum4(a) => AssetKey {
            code: code_str(&a.asset_code.0),
            issuer: issuer_str(&a.issuer),
        },
        Asset::CreditAlphanum12(a) => AssetKey {
            code: code_str(&a.asset_code.0),
            issuer: issuer_str(&a.issuer),
        },
    }
}

/// SEP-11 form: `native` or `CODE:ISSUER`.
pub fn sep11(asset: &Asset) -> String {
    match asset {
        Asset::Native => "native".into(),
        _ => {
            let k = asset_key_of(asset);
            format!("{}:{}", k.code, k.issuer)
        }
    }
}

/// `sha256(passphrase)`.
pub fn network_id(passphrase: &str) -> [u8; 32] {
    Sha256::digest(passphrase.as_bytes()).into()
}

/// The SAC contract id of `asset` on the network named by `passphrase`.
pub fn contract_id(asset: &Asset, passphrase: &str) -> [u8; 32] {
    let preimage = HashIdPreimage::ContractId(HashIdPreimageContractId {
        network_id: Hash(network_id(passphrase)),
        contract_id_preimage: ContractIdPreimage::Asset(asset.clone()),
    });
    // Encoding a value we built cannot fail: it has no unbounded part.
    let bytes = preimage.to_xdr(Limits::none()).unwrap_or_default();
    Sha256::digest(bytes).into()
}

/// Passphrase of the public network.
pub const MAINNET_PASSPHRASE: &str = "Public Global Stellar Network ; September 2015";
/// Passphrase of the test network.
pub const TESTNET_PASSPHRASE: &str = "Test SDF Network ; September 2015";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_sac_ids_match_the_known_ones() {
        // The XLM SAC ids published for testnet (and in the docs' Events.json fixture) and
        // mainnet.
        let t = SacAsset::parse("XLM", TESTNET_PASSPHRASE).unwrap();
        assert_eq!(
            t.contract_id,
            "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC"
        );
        assert_eq!(t.sep11(), "native");
        assert_eq!(t.key, AssetKey::native());
        let m = SacAsset::parse("native", MAINNET_PASSPHRASE).unwrap();
        assert_eq!(
            m.contract_id,
            "CAS3J7GYLGXMF6TDJBBYYSE3HQ6BBSMLNUQ34T6TZMYMW2EVH34XOWMA"
        );
    }

    #[test]
    fn credit_assets_parse_and_round_trip() {
        let usdc = "USDC:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN";
        let a = SacAsset::parse(usdc, MAINNET_PASSPHRASE).unwrap();
        assert_eq!(a.sep11(), usdc);
        // Circle's USDC SAC on mainnet.
        assert_eq!(
            a.contract_id,
            "CCW67TSZV3SSS2HXMBQ5JFGCKJNXKZM7UQUWUZPUTHXSTZLEO7SJMI75"
        );
        let long = "UBECgpi:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN";
        let l = SacAsset::parse(long, MAINNET_PASSPHRASE).unwrap();
        assert!(matches!(l.asset, Asset::CreditAlphanum12(_)));
        assert_eq!(l.sep11(), long);
        assert_eq!(l.key.code, "UBECgpi");
        for bad in [
            "USDC",
            ":GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN",
            "TOOLONGCODE13:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN",
            "USDC:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVM",
        ] {
            assert!(SacAsset::parse(bad, MAINNET_PASSPHRASE).is_err(), "{bad}");
        }
    }
}
