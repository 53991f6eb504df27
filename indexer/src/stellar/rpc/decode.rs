//! Decoding of `getLedgers`, `getTransactions` and `getLedgerEntries` records with the
//! official XDR types, into the facts Orrery stores.

use stellar_xdr::{
    LedgerCloseMeta, LedgerEntryData, LedgerHeaderHistoryEntry, TransactionEnvelope,
    TransactionMeta, TransactionResult, TrustLineAsset,
};

use super::sac::{asset_key_of, network_id};
use super::types::{EntryInfo, LedgerInfo, TxInfo};
use super::xdr::{account_strkey, decode, XdrError};
use crate::stellar::horizon::AssetKey;

/// A decoded `getLedgers` record.
#[derive(Debug, Clone)]
pub struct DecodedLedger {
    /// Header with its hash.
    pub header: LedgerHeaderHistoryEntry,
    /// Close meta.
    pub meta: LedgerCloseMeta,
}

/// Decodes a ledger record and checks that the header names the record's sequence and
/// hash.
pub fn decode_ledger(l: &LedgerInfo) -> Result<DecodedLedger, DecodeError> {
    let header: LedgerHeaderHistoryEntry = decode("LedgerHeaderHistoryEntry", &l.header_xdr)?;
    let meta: LedgerCloseMeta = decode("LedgerCloseMeta", &l.metadata_xdr)?;
    if header.header.ledger_seq != l.sequence {
        return Err(DecodeError::Mismatch(format!(
            "ledger {}: header says {}",
            l.sequence, header.header.ledger_seq
        )));
    }
    if hex::encode(header.hash.0) != l.hash {
        return Err(DecodeError::Mismatch(format!(
            "ledger {}: hash {} but header hash {}",
            l.sequence,
            l.hash,
            hex::encode(header.hash.0)
        )));
    }
    let meta_seq = match &meta {
        LedgerCloseMeta::V0(m) => m.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V1(m) => m.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V2(m) => m.ledger_header.header.ledger_seq,
    };
    if meta_seq != l.sequence {
        return Err(DecodeError::Mismatch(format!(
            "ledger {}: close meta says {meta_seq}",
            l.sequence
        )));
    }
    Ok(DecodedLedger { header, meta })
}

/// A decoded `getTransactions` record.
#[derive(Debug, Clone)]
pub struct DecodedTx {
    /// Hash (hex), computed from the envelope and checked against the record's.
    pub hash: String,
    /// Envelope.
    pub envelope: TransactionEnvelope,
    /// Result.
    pub result: TransactionResult,
    /// Meta (V3 or V4 on current networks).
    pub meta: TransactionMeta,
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Invalid XDR.
    #[error(transparent)]
    Xdr(#[from] XdrError),
    /// The record contradicts itself (hash, sequence).
    #[error("inconsistent record: {0}")]
    Mismatch(String),
    /// A ledger entry of a kind we do not read.
    #[error("unsupported ledger entry {0}")]
    Unsupported(&'static str),
}

/// Decodes a transaction record; the hash is computed from the envelope with the network
/// passphrase and must equal the record's `txHash` when present.
pub fn decode_tx(t: &TxInfo, passphrase: &str) -> Result<DecodedTx, DecodeError> {
    let envelope: TransactionEnvelope = decode("TransactionEnvelope", &t.envelope_xdr)?;
    let result: TransactionResult = decode("TransactionResult", &t.result_xdr)?;
    let meta: TransactionMeta = decode("TransactionMeta", &t.result_meta_xdr)?;
    let hash = envelope
        .hash(network_id(passphrase))
        .map(hex::encode)
        .map_err(|e| DecodeError::Mismatch(format!("hashing the envelope: {e}")))?;
    if let Some(given) = &t.tx_hash {
        if *given != hash {
            return Err(DecodeError::Mismatch(format!(
                "txHash {given} but the envelope hashes to {hash} on this network"
            )));
        }
    }
    Ok(DecodedTx {
        hash,
        envelope,
        result,
        meta,
    })
}

/// A balance read from an account or trustline entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryBalance {
    /// `G...` account.
    pub account: String,
    /// Asset (`XLM` for the account entry).
    pub asset: AssetKey,
    /// Stroops.
    pub balance: i64,
    /// Trustline limit.
    pub limit: Option<i64>,
    /// Ledger of the last change.
    pub last_modified_ledger: u32,
}

/// The balance held in an account or trustline entry of `getLedgerEntries`.
pub fn entry_balance(e: &EntryInfo) -> Result<EntryBalance, DecodeError> {
    let data: LedgerEntryData = decode("LedgerEntryData", &e.xdr)?;
    match data {
        LedgerEntryData::Account(a) => {
            let stellar_xdr::PublicKey::PublicKeyTypeEd25519(k) = &a.account_id.0;
            Ok(EntryBalance {
                account: account_strkey(k.0),
                asset: AssetKey::native(),
                balance: a.balance,
                limit: None,
                last_modified_ledger: e.last_modified_ledger_seq,
            })
        }
        LedgerEntryData::Trustline(t) => {
            let stellar_xdr::PublicKey::PublicKeyTypeEd25519(k) = &t.account_id.0;
            let asset = match t.asset {
                TrustLineAsset::Native => stellar_xdr::Asset::Native,
                TrustLineAsset::CreditAlphanum4(a) => stellar_xdr::Asset::CreditAlphanum4(a),
                TrustLineAsset::CreditAlphanum12(a) => stellar_xdr::Asset::CreditAlphanum12(a),
                TrustLineAsset::PoolShare(_) => {
                    return Err(DecodeError::Unsupported("pool-share trustline"))
                }
            };
            Ok(EntryBalance {
                account: account_strkey(k.0),
                asset: asset_key_of(&asset),
                balance: t.balance,
                limit: Some(t.limit),
                last_modified_ledger: e.last_modified_ledger_seq,
            })
        }
        other => Err(DecodeError::Unsupported(other.name())),
    }
}
