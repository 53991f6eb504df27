//! Stellar RPC request and response shapes (JSON, camelCase), as served by stellar-rpc
//! v23 and later (older fields such as `pagingToken` are accepted and ignored).

use serde::{Deserialize, Deserializer, Serialize};

/// A number sent as a JSON number or as a decimal string (RPC mixes both, e.g.
/// `latestLedgerCloseTime`, `createdAt`).
pub fn int_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        N(i64),
        S(String),
    }
    match Either::deserialize(d)? {
        Either::N(n) => Ok(n),
        Either::S(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer"))),
    }
}

fn opt_int_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "int_or_string")] i64);
    Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
}

/// `getHealth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `healthy` when the node is serving.
    pub status: String,
    /// Newest ledger ingested.
    pub latest_ledger: u32,
    /// Oldest ledger retained.
    pub oldest_ledger: u32,
    /// Ledgers retained.
    pub ledger_retention_window: u32,
}

/// `getNetwork`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Network passphrase (names the network; SAC ids derive from it).
    pub passphrase: String,
    /// Protocol version of the newest ledger.
    pub protocol_version: u32,
    /// Friendbot URL on test networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendbot_url: Option<String>,
}

/// `getLatestLedger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatestLedger {
    /// Ledger hash (hex).
    pub id: String,
    /// Protocol version.
    pub protocol_version: u32,
    /// Ledger sequence.
    pub sequence: u32,
}

/// One ledger of `getLedgers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerInfo {
    /// Ledger hash (hex).
    pub hash: String,
    /// Sequence.
    pub sequence: u32,
    /// Close time (Unix seconds; a string on the wire).
    #[serde(deserialize_with = "int_or_string")]
    pub ledger_close_time: i64,
    /// `LedgerHeaderHistoryEntry` (base64 XDR).
    pub header_xdr: String,
    /// `LedgerCloseMeta` (base64 XDR).
    pub metadata_xdr: String,
}

/// `getLedgers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgersPage {
    /// Ledgers, ascending.
    pub ledgers: Vec<LedgerInfo>,
    /// Newest ledger.
    pub latest_ledger: u32,
    /// Oldest ledger retained.
    pub oldest_ledger: u32,
    /// Where the next page starts.
    pub cursor: String,
}

/// Events of a transaction (`getTransactions`, Protocol 23+).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TxEvents {
    /// `TransactionEvent`s (fees), base64 XDR.
    #[serde(default)]
    pub transaction_events_xdr: Vec<String>,
    /// `ContractEvent`s per operation, base64 XDR.
    #[serde(default)]
    pub contract_events_xdr: Vec<Vec<String>>,
}

/// One transaction of `getTransactions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TxInfo {
    /// `SUCCESS` or `FAILED`.
    pub status: String,
    /// Transaction hash (hex); absent before RPC v22.
    #[serde(default)]
    pub tx_hash: Option<String>,
    /// 1-based position in the ledger.
    pub application_order: u32,
    /// Whether the envelope is a fee bump.
    pub fee_bump: bool,
    /// `TransactionEnvelope`.
    pub envelope_xdr: String,
    /// `TransactionResult`.
    pub result_xdr: String,
    /// `TransactionMeta`.
    pub result_meta_xdr: String,
    /// Ledger sequence.
    pub ledger: u32,
    /// Close time (Unix seconds).
    #[serde(deserialize_with = "int_or_string")]
    pub created_at: i64,
    /// Events (Protocol 23+).
    #[serde(default)]
    pub events: Option<TxEvents>,
}

/// `getTransactions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionsPage {
    /// Transactions, ascending.
    pub transactions: Vec<TxInfo>,
    /// Newest ledger.
    pub latest_ledger: u32,
    /// Oldest ledger retained.
    pub oldest_ledger: u32,
    /// Where the next page starts.
    pub cursor: String,
}

/// One event of `getEvents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcEvent {
    /// `contract`, `system` (or `diagnostic` before v23).
    #[serde(rename = "type")]
    pub type_: String,
    /// Ledger sequence.
    pub ledger: u32,
    /// Close time, RFC 3339.
    pub ledger_closed_at: String,
    /// Emitting contract (`C...`).
    pub contract_id: String,
    /// `<TOID>-<index>`: unique and ordered; also a valid cursor.
    pub id: String,
    /// Operation index within the transaction (v23+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_index: Option<u32>,
    /// Transaction index within the ledger (v23+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_index: Option<u32>,
    /// Transaction hash (hex).
    pub tx_hash: String,
    /// Whether the emitting call succeeded.
    pub in_successful_contract_call: bool,
    /// Topics, base64 `ScVal`s.
    pub topic: Vec<String>,
    /// Data, base64 `ScVal`.
    pub value: String,
}

/// `getEvents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    /// Events, ascending by id.
    pub events: Vec<RpcEvent>,
    /// Newest ledger.
    pub latest_ledger: u32,
    /// Oldest ledger retained (v23+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ledger: Option<u32>,
    /// Where the next page starts, even when `events` is empty.
    pub cursor: String,
}

/// One ledger entry of `getLedgerEntries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    /// `LedgerKey` (base64 XDR).
    pub key: String,
    /// `LedgerEntryData` (base64 XDR).
    pub xdr: String,
    /// Ledger of the last change.
    pub last_modified_ledger_seq: u32,
    /// TTL of Soroban entries.
    #[serde(
        default,
        deserialize_with = "opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub live_until_ledger_seq: Option<i64>,
}

/// `getLedgerEntries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntriesPage {
    /// Entries found (missing keys are left out).
    #[serde(default)]
    pub entries: Vec<EntryInfo>,
    /// Ledger the entries were read at.
    pub latest_ledger: u32,
}
