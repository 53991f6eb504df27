//! ERC-8004 registry events: alloy `sol!` definitions (from erc-8004-contracts `abis/`, plus
//! the pre-2026-01-05 `NewFeedback`/`UriUpdated` versions) and their decoding into
//! [`Erc8004Event`], whose JSON form is the generic event table's `name` + `args`.
//!
//! An indexed `string`/`bytes` parameter reaches the log only as its keccak256 topic; like
//! ABI decoders, the args carry it under the parameter's name as that 0x-hex hash
//! (`indexedMetadataKey`, `indexedTag1`; legacy `NewFeedback` has only `tag1`, the hash).

use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::SolEvent;
use serde::{Deserialize, Serialize};

/// Current registry events.
mod current {
    use alloy_sol_types::sol;
    sol! {
        event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);
        event Registered(uint256 indexed agentId, string agentURI, address indexed owner);
        event URIUpdated(uint256 indexed agentId, string newURI, address indexed updatedBy);
        event MetadataSet(uint256 indexed agentId, string indexed indexedMetadataKey, string metadataKey, bytes metadataValue);
        event NewFeedback(uint256 indexed agentId, address indexed clientAddress, uint64 feedbackIndex, int128 value, uint8 valueDecimals, string indexed indexedTag1, string tag1, string tag2, string endpoint, string feedbackURI, bytes32 feedbackHash);
        event FeedbackRevoked(uint256 indexed agentId, address indexed clientAddress, uint64 indexed feedbackIndex);
        event ResponseAppended(uint256 indexed agentId, address indexed clientAddress, uint64 feedbackIndex, address indexed responder, string responseURI, bytes32 responseHash);
        event ValidationRequest(address indexed validatorAddress, uint256 indexed agentId, string requestURI, bytes32 indexed requestHash);
        event ValidationResponse(address indexed validatorAddress, uint256 indexed agentId, bytes32 indexed requestHash, uint8 response, string responseURI, bytes32 responseHash, string tag);
    }
}

/// Pre-2026-01-05 versions still emitted by older deployments.
mod legacy {
    use alloy_sol_types::sol;
    sol! {
        event NewFeedback(uint256 indexed agentId, address indexed clientAddress, uint8 score, string indexed tag1, string tag2, string endpoint, string feedbackURI, bytes32 feedbackHash);
        event UriUpdated(uint256 indexed agentId, string newUri, address indexed updatedBy);
    }
}

/// Which ERC-8004 registry a contract is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    /// IdentityRegistry (agents, an ERC-721).
    Identity,
    /// ReputationRegistry (feedback).
    Reputation,
    /// ValidationRegistry (validation requests and responses).
    Validation,
}

impl Registry {
    /// Parses `identity`, `reputation` or `validation`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "identity" => Some(Self::Identity),
            "reputation" => Some(Self::Reputation),
            "validation" => Some(Self::Validation),
            _ => None,
        }
    }

    /// Its config/GraphQL name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Reputation => "reputation",
            Self::Validation => "validation",
        }
    }
}

/// `Transfer` (ERC-721) arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferArgs {
    /// Previous owner (zero address on mint).
    pub from: String,
    /// New owner.
    pub to: String,
    /// Agent id (decimal).
    pub token_id: String,
}

/// `Registered` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredArgs {
    /// Agent id (decimal).
    pub agent_id: String,
    /// Registration file URI.
    #[serde(rename = "agentURI")]
    pub agent_uri: String,
    /// Owner.
    pub owner: String,
}

/// `URIUpdated` / legacy `UriUpdated` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UriUpdatedArgs {
    /// Agent id (decimal).
    pub agent_id: String,
    /// New URI.
    #[serde(rename = "newURI", alias = "newUri")]
    pub new_uri: String,
    /// Who updated it.
    pub updated_by: String,
}

/// `MetadataSet` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataSetArgs {
    /// Agent id (decimal).
    pub agent_id: String,
    /// The `indexedMetadataKey` topic: keccak256 of the key (0x hex). `None` in rows stored
    /// before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed_metadata_key: Option<String>,
    /// Metadata key.
    pub metadata_key: String,
    /// Value bytes (0x hex).
    pub metadata_value: String,
}

/// `NewFeedback` arguments (current and legacy: legacy has `score`, no index or value).
///
/// The current event's indexed `indexedTag1` is kept as the log carries it: its 32-byte topic
/// hash (as ABI decoders do; the string itself is only in `tag1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewFeedbackArgs {
    /// Agent id (decimal).
    pub agent_id: String,
    /// Client giving the feedback.
    pub client_address: String,
    /// Feedback index (current version only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_index: Option<String>,
    /// int128 value (decimal string; current version only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Decimals of `value` (current version only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_decimals: Option<u8>,
    /// uint8 score (legacy version only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
    /// Topic hash of the indexed `indexedTag1` string (current version only, 0x hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed_tag1: Option<String>,
    /// First tag (legacy: only its keccak256, as the string was indexed).
    pub tag1: String,
    /// Second tag.
    pub tag2: String,
    /// Endpoint.
    pub endpoint: String,
    /// Feedback file URI.
    #[serde(rename = "feedbackURI")]
    pub feedback_uri: String,
    /// Feedback file hash.
    pub feedback_hash: String,
    /// Emitted by a pre-2026 deployment.
    #[serde(default)]
    pub legacy: bool,
}

/// `FeedbackRevoked` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRevokedArgs {
    /// Agent id (decimal).
    pub agent_id: String,
    /// Client.
    pub client_address: String,
    /// Feedback index (decimal).
    pub feedback_index: String,
}

/// `ResponseAppended` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseAppendedArgs {
    /// Agent id (decimal).
    pub agent_id: String,
    /// Client.
    pub client_address: String,
    /// Feedback index (decimal).
    pub feedback_index: String,
    /// Responder.
    pub responder: String,
    /// Response URI.
    #[serde(rename = "responseURI")]
    pub response_uri: String,
    /// Response hash.
    pub response_hash: String,
}

/// `ValidationRequest` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationRequestArgs {
    /// Validator.
    pub validator_address: String,
    /// Agent id (decimal).
    pub agent_id: String,
    /// Request URI.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// Request hash.
    pub request_hash: String,
}

/// `ValidationResponse` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationResponseArgs {
    /// Validator.
    pub validator_address: String,
    /// Agent id (decimal).
    pub agent_id: String,
    /// Request hash.
    pub request_hash: String,
    /// Response (0..=100).
    pub response: u8,
    /// Response URI.
    #[serde(rename = "responseURI")]
    pub response_uri: String,
    /// Response hash.
    pub response_hash: String,
    /// Tag.
    pub tag: String,
}

/// A decoded ERC-8004 event. Serialized as `{"name": <event name>, "args": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "args")]
pub enum Erc8004Event {
    /// ERC-721 transfer of an agent.
    Transfer(TransferArgs),
    /// Agent registered.
    Registered(RegisteredArgs),
    /// Agent URI changed.
    #[serde(rename = "URIUpdated")]
    UriUpdated(UriUpdatedArgs),
    /// Agent URI changed (legacy spelling).
    #[serde(rename = "UriUpdated")]
    LegacyUriUpdated(UriUpdatedArgs),
    /// Metadata entry set.
    MetadataSet(MetadataSetArgs),
    /// Feedback given (both versions).
    NewFeedback(NewFeedbackArgs),
    /// Feedback revoked.
    FeedbackRevoked(FeedbackRevokedArgs),
    /// Response appended to feedback.
    ResponseAppended(ResponseAppendedArgs),
    /// Validation requested.
    ValidationRequest(ValidationRequestArgs),
    /// Validation answered.
    ValidationResponse(ValidationResponseArgs),
}

/// Why a log could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No topic0 (anonymous event) or a topic0 this registry does not emit.
    #[error("unknown event (topic0 {0})")]
    Unknown(String),
    /// Known topic0 but the topics/data do not match the ABI.
    #[error("malformed {name} log: {reason}")]
    Malformed {
        /// Event name.
        name: &'static str,
        /// What alloy said.
        reason: String,
    },
}

fn addr(a: &Address) -> String {
    format!("{a:#x}")
}

fn h256(b: &B256) -> String {
    format!("{b:#x}")
}

fn dec(u: &U256) -> String {
    u.to_string()
}

fn hex_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("0x");
    for byte in b {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

fn decode_as<E: SolEvent>(
    name: &'static str,
    topics: &[B256],
    data: &[u8],
) -> Result<E, DecodeError> {
    E::decode_raw_log(topics.iter().copied(), data).map_err(|e| DecodeError::Malformed {
        name,
        reason: e.to_string(),
    })
}

/// Decodes one log emitted by a `registry` contract.
pub fn decode_log(
    registry: Registry,
    topics: &[B256],
    data: &[u8],
) -> Result<Erc8004Event, DecodeError> {
    let Some(topic0) = topics.first() else {
        return Err(DecodeError::Unknown("none".to_string()));
    };
    let t = *topic0;
    let ev = match registry {
        Registry::Identity if t == current::Transfer::SIGNATURE_HASH => {
            let e: current::Transfer = decode_as("Transfer", topics, data)?;
            Erc8004Event::Transfer(TransferArgs {
                from: addr(&e.from),
                to: addr(&e.to),
                token_id: dec(&e.tokenId),
            })
        }
        Registry::Identity if t == current::Registered::SIGNATURE_HASH => {
            let e: current::Registered = decode_as("Registered", topics, data)?;
            Erc8004Event::Registered(RegisteredArgs {
                agent_id: dec(&e.agentId),
                agent_uri: e.agentURI,
                owner: addr(&e.owner),
            })
        }
        Registry::Identity if t == current::URIUpdated::SIGNATURE_HASH => {
            let e: current::URIUpdated = decode_as("URIUpdated", topics, data)?;
            Erc8004Event::UriUpdated(UriUpdatedArgs {
                agent_id: dec(&e.agentId),
                new_uri: e.newURI,
                updated_by: addr(&e.updatedBy),
            })
        }
        Registry::Identity if t == legacy::UriUpdated::SIGNATURE_HASH => {
            let e: legacy::UriUpdated = decode_as("UriUpdated", topics, data)?;
            Erc8004Event::LegacyUriUpdated(UriUpdatedArgs {
                agent_id: dec(&e.agentId),
                new_uri: e.newUri,
                updated_by: addr(&e.updatedBy),
            })
        }
        Registry::Identity if t == current::MetadataSet::SIGNATURE_HASH => {
            let e: current::MetadataSet = decode_as("MetadataSet", topics, data)?;
            Erc8004Event::MetadataSet(MetadataSetArgs {
                agent_id: dec(&e.agentId),
                indexed_metadata_key: Some(h256(&e.indexedMetadataKey)),
                metadata_key: e.metadataKey,
                metadata_value: hex_bytes(&e.metadataValue),
            })
        }
        Registry::Reputation if t == current::NewFeedback::SIGNATURE_HASH => {
            let e: current::NewFeedback = decode_as("NewFeedback", topics, data)?;
            if e.indexedTag1 != keccak256(e.tag1.as_bytes()) {
                // Not what the registry emits; both are stored as the log carries them.
                tracing::warn!(topic = %h256(&e.indexedTag1), tag1 = %e.tag1,
                    "NewFeedback indexedTag1 topic is not keccak256(tag1)");
            }
            if i32::try_from(e.value).is_err() {
                // The stored score is an i32: a value beyond it is refused (quarantined,
                // replayable once the column is wider), never clamped.
                return Err(DecodeError::Malformed {
                    name: "NewFeedback",
                    reason: format!("value {} does not fit the stored score (i32)", e.value),
                });
            }
            Erc8004Event::NewFeedback(NewFeedbackArgs {
                agent_id: dec(&e.agentId),
                client_address: addr(&e.clientAddress),
                feedback_index: Some(e.feedbackIndex.to_string()),
                value: Some(e.value.to_string()),
                value_decimals: Some(e.valueDecimals),
                score: None,
                indexed_tag1: Some(h256(&e.indexedTag1)),
                tag1: e.tag1,
                tag2: e.tag2,
                endpoint: e.endpoint,
                feedback_uri: e.feedbackURI,
                feedback_hash: h256(&e.feedbackHash),
                legacy: false,
            })
        }
        Registry::Reputation if t == legacy::NewFeedback::SIGNATURE_HASH => {
            let e: legacy::NewFeedback = decode_as("NewFeedback", topics, data)?;
            Erc8004Event::NewFeedback(NewFeedbackArgs {
                agent_id: dec(&e.agentId),
                client_address: addr(&e.clientAddress),
                feedback_index: None,
                value: None,
                value_decimals: None,
                score: Some(e.score),
                indexed_tag1: None,
                tag1: h256(&e.tag1),
                tag2: e.tag2,
                endpoint: e.endpoint,
                feedback_uri: e.feedbackURI,
                feedback_hash: h256(&e.feedbackHash),
                legacy: true,
            })
        }
        Registry::Reputation if t == current::FeedbackRevoked::SIGNATURE_HASH => {
            let e: current::FeedbackRevoked = decode_as("FeedbackRevoked", topics, data)?;
            Erc8004Event::FeedbackRevoked(FeedbackRevokedArgs {
                agent_id: dec(&e.agentId),
                client_address: addr(&e.clientAddress),
                feedback_index: e.feedbackIndex.to_string(),
            })
        }
        Registry::Reputation if t == current::ResponseAppended::SIGNATURE_HASH => {
            let e: current::ResponseAppended = decode_as("ResponseAppended", topics, data)?;
            Erc8004Event::ResponseAppended(ResponseAppendedArgs {
                agent_id: dec(&e.agentId),
                client_address: addr(&e.clientAddress),
                feedback_index: e.feedbackIndex.to_string(),
                responder: addr(&e.responder),
                response_uri: e.responseURI,
                response_hash: h256(&e.responseHash),
            })
        }
        Registry::Validation if t == current::ValidationRequest::SIGNATURE_HASH => {
            let e: current::ValidationRequest = decode_as("ValidationRequest", topics, data)?;
            Erc8004Event::ValidationRequest(ValidationRequestArgs {
                validator_address: addr(&e.validatorAddress),
                agent_id: dec(&e.agentId),
                request_uri: e.requestURI,
                request_hash: h256(&e.requestHash),
            })
        }
        Registry::Validation if t == current::ValidationResponse::SIGNATURE_HASH => {
            let e: current::ValidationResponse = decode_as("ValidationResponse", topics, data)?;
            Erc8004Event::ValidationResponse(ValidationResponseArgs {
                validator_address: addr(&e.validatorAddress),
                agent_id: dec(&e.agentId),
                request_hash: h256(&e.requestHash),
                response: e.response,
                response_uri: e.responseURI,
                response_hash: h256(&e.responseHash),
                tag: e.tag,
            })
        }
        _ => return Err(DecodeError::Unknown(h256(&t))),
    };
    Ok(ev)
}

impl Erc8004Event {
    /// Splits into the generic table's `name` and `args`.
    pub fn to_name_args(&self) -> (String, serde_json::Value) {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => {
                let name = m
                    .remove("name")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let args = m.remove("args").unwrap_or(serde_json::Value::Null);
                (name, args)
            }
            _ => (String::new(), serde_json::Value::Null),
        }
    }

    /// Rebuilds an event from a stored `name` and `args` (None when they do not fit). Rows
    /// stored before indexed topics were kept decode without them.
    pub fn from_name_args(name: &str, args: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(serde_json::json!({"name": name, "args": args})).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{keccak256, Bytes};

    #[test]
    fn topic0_match_the_published_abis() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/erc8004/topic0_computed_from_abis.txt"
        );
        let text = std::fs::read_to_string(path).expect("ERC-8004 fixtures are missing");
        let ours = [
            current::Registered::SIGNATURE_HASH,
            current::URIUpdated::SIGNATURE_HASH,
            current::MetadataSet::SIGNATURE_HASH,
            current::Transfer::SIGNATURE_HASH,
            current::NewFeedback::SIGNATURE_HASH,
            current::FeedbackRevoked::SIGNATURE_HASH,
            current::ResponseAppended::SIGNATURE_HASH,
            current::ValidationRequest::SIGNATURE_HASH,
            current::ValidationResponse::SIGNATURE_HASH,
            legacy::NewFeedback::SIGNATURE_HASH,
            legacy::UriUpdated::SIGNATURE_HASH,
        ];
        for h in ours {
            assert!(
                text.contains(&format!("{h:#x}")),
                "{h:#x} not in the fixture"
            );
        }
    }

    #[test]
    fn abi_event_names_exist_in_the_fixture_abis() {
        for (file, names) in [
            (
                "IdentityRegistry",
                &["Registered", "URIUpdated", "MetadataSet", "Transfer"][..],
            ),
            (
                "ReputationRegistry",
                &["NewFeedback", "FeedbackRevoked", "ResponseAppended"][..],
            ),
            (
                "ValidationRegistry",
                &["ValidationRequest", "ValidationResponse"][..],
            ),
        ] {
            let path = format!(
                "{}/../../shared/fixtures/erc8004/erc-8004-contracts_abis_{file}.json",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).expect("ERC-8004 ABI fixture missing");
            let abi: serde_json::Value = serde_json::from_str(&text).unwrap();
            let list = abi.as_array().cloned().unwrap_or_default();
            for n in names {
                assert!(
                    list.iter().any(|e| e["type"] == "event" && e["name"] == *n),
                    "{n} missing from {file}"
                );
            }
        }
    }

    #[test]
    fn decodes_current_and_legacy_feedback_and_round_trips_args() {
        let cur = current::NewFeedback {
            agentId: U256::from(7u64),
            clientAddress: Address::repeat_byte(0x22),
            feedbackIndex: 3,
            value: -12,
            valueDecimals: 1,
            indexedTag1: keccak256(b"speed"),
            tag1: "speed".into(),
            tag2: "uptime".into(),
            endpoint: "https://a".into(),
            feedbackURI: "ipfs://f".into(),
            feedbackHash: B256::repeat_byte(1),
        }
        .encode_log_data();
        let ev = decode_log(Registry::Reputation, cur.topics(), &cur.data).unwrap();
        let Erc8004Event::NewFeedback(a) = &ev else {
            panic!("{ev:?}")
        };
        assert_eq!(a.value.as_deref(), Some("-12"));
        assert_eq!(a.feedback_index.as_deref(), Some("3"));
        assert!(!a.legacy);
        let (name, args) = ev.to_name_args();
        assert_eq!(name, "NewFeedback");
        assert_eq!(args["feedbackURI"], "ipfs://f");
        assert_eq!(Erc8004Event::from_name_args(&name, &args), Some(ev));

        let old = legacy::NewFeedback {
            agentId: U256::from(7u64),
            clientAddress: Address::repeat_byte(0x22),
            score: 88,
            tag1: keccak256(b"speed"),
            tag2: "x".into(),
            endpoint: "e".into(),
            feedbackURI: "u".into(),
            feedbackHash: B256::ZERO,
        }
        .encode_log_data();
        let ev = decode_log(Registry::Reputation, old.topics(), &old.data).unwrap();
        let Erc8004Event::NewFeedback(a) = &ev else {
            panic!("{ev:?}")
        };
        assert_eq!(a.score, Some(88));
        assert!(a.legacy);
    }

    #[test]
    fn legacy_uri_updated_and_metadata() {
        let old = legacy::UriUpdated {
            agentId: U256::from(1u64),
            newUri: "ipfs://n".into(),
            updatedBy: Address::repeat_byte(3),
        }
        .encode_log_data();
        let ev = decode_log(Registry::Identity, old.topics(), &old.data).unwrap();
        assert_eq!(ev.to_name_args().0, "UriUpdated");
        let m = current::MetadataSet {
            agentId: U256::from(1u64),
            indexedMetadataKey: keccak256(b"mcp"),
            metadataKey: "mcp".into(),
            metadataValue: Bytes::from_static(b"\x01\xab"),
        }
        .encode_log_data();
        let ev = decode_log(Registry::Identity, m.topics(), &m.data).unwrap();
        let (_, args) = ev.to_name_args();
        assert_eq!(args["metadataValue"], "0x01ab");
    }

    /// The ABI fixture's input names of `event`.
    fn abi_inputs(file: &str, event: &str) -> Vec<String> {
        let path = format!(
            "{}/../../shared/fixtures/erc8004/erc-8004-contracts_abis_{file}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("ERC-8004 ABI fixture missing");
        let abi: serde_json::Value = serde_json::from_str(&text).unwrap();
        let e = abi
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|e| e["type"] == "event" && e["name"] == event)
            })
            .cloned()
            .unwrap_or_else(|| panic!("{event} missing from {file}"));
        e["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    }

    fn hash_hex(s: &str) -> serde_json::Value {
        serde_json::Value::String(format!("{:#x}", keccak256(s.as_bytes())))
    }

    #[test]
    fn metadata_set_keeps_the_indexed_key_topic_hash() {
        let log = current::MetadataSet {
            agentId: U256::from(4u64),
            indexedMetadataKey: keccak256(b"agentWallet"),
            metadataKey: "agentWallet".into(),
            metadataValue: Bytes::from_static(&[0x11; 20]),
        }
        .encode_log_data();
        let ev = decode_log(Registry::Identity, log.topics(), &log.data).unwrap();
        let (name, args) = ev.to_name_args();
        assert_eq!(args["indexedMetadataKey"], hash_hex("agentWallet"));
        assert_eq!(
            args["indexedMetadataKey"],
            format!("{:#x}", log.topics()[2])
        );
        for input in abi_inputs("IdentityRegistry", "MetadataSet") {
            assert!(args.get(&input).is_some(), "{input} not in {args}");
        }
        assert_eq!(Erc8004Event::from_name_args(&name, &args), Some(ev.clone()));

        // A row stored before the topic was kept still decodes, and round-trips without it.
        let mut old = args.clone();
        old.as_object_mut().unwrap().remove("indexedMetadataKey");
        let back = Erc8004Event::from_name_args(&name, &old).unwrap();
        let Erc8004Event::MetadataSet(m) = &back else {
            panic!("{back:?}")
        };
        assert_eq!(m.indexed_metadata_key, None);
        assert_eq!(m.metadata_key, "agentWallet");
        assert_eq!(back.to_name_args().1, old);
    }

    #[test]
    fn new_feedback_carries_the_indexed_tag1_topic_hash() {
        let log = current::NewFeedback {
            agentId: U256::from(9u64),
            clientAddress: Address::repeat_byte(0x33),
            feedbackIndex: 1,
            value: 95,
            valueDecimals: 0,
            indexedTag1: keccak256(b"starred"),
            tag1: "starred".into(),
            tag2: String::new(),
            endpoint: String::new(),
            feedbackURI: "ipfs://f".into(),
            feedbackHash: B256::ZERO,
        }
        .encode_log_data();
        let ev = decode_log(Registry::Reputation, log.topics(), &log.data).unwrap();
        let (name, args) = ev.to_name_args();
        assert_eq!(args["indexedTag1"], hash_hex("starred"));
        assert_eq!(args["indexedTag1"], format!("{:#x}", log.topics()[3]));
        assert_eq!(args["tag1"], "starred");
        for input in abi_inputs("ReputationRegistry", "NewFeedback") {
            assert!(args.get(&input).is_some(), "{input} not in {args}");
        }
        assert_eq!(Erc8004Event::from_name_args(&name, &args), Some(ev.clone()));

        // Rows stored without `indexedTag1` still decode (the field is simply absent).
        let mut old = args.clone();
        old.as_object_mut().unwrap().remove("indexedTag1");
        let back = Erc8004Event::from_name_args(&name, &old).expect("old rows decode");
        let Erc8004Event::NewFeedback(b) = back else {
            panic!("not a NewFeedback")
        };
        assert_eq!(b.indexed_tag1, None);
        assert_eq!(b.tag1, "starred");
    }

    #[test]
    fn legacy_new_feedback_tag1_is_the_topic_hash() {
        let log = legacy::NewFeedback {
            agentId: U256::from(9u64),
            clientAddress: Address::repeat_byte(0x33),
            score: 70,
            tag1: keccak256(b"starred"),
            tag2: "t2".into(),
            endpoint: String::new(),
            feedbackURI: "ipfs://f".into(),
            feedbackHash: B256::ZERO,
        }
        .encode_log_data();
        let ev = decode_log(Registry::Reputation, log.topics(), &log.data).unwrap();
        let (name, args) = ev.to_name_args();
        assert_eq!(args["tag1"], hash_hex("starred"));
        assert_eq!(args["tag1"], format!("{:#x}", log.topics()[3]));
        assert!(args.get("indexedTag1").is_none(), "{args}");
        assert_eq!(Erc8004Event::from_name_args(&name, &args), Some(ev));
    }

    #[test]
    fn a_tag1_topic_that_does_not_match_still_decodes() {
        let log = current::NewFeedback {
            agentId: U256::from(9u64),
            clientAddress: Address::repeat_byte(0x33),
            feedbackIndex: 1,
            value: 1,
            valueDecimals: 0,
            indexedTag1: B256::repeat_byte(0xee),
            tag1: "starred".into(),
            tag2: String::new(),
            endpoint: String::new(),
            feedbackURI: String::new(),
            feedbackHash: B256::ZERO,
        }
        .encode_log_data();
        let ev = decode_log(Registry::Reputation, log.topics(), &log.data).unwrap();
        let args = ev.to_name_args().1;
        assert_eq!(args["tag1"], "starred");
        // Kept as the log carries it, not derived from `tag1`.
        assert_eq!(
            args["indexedTag1"],
            format!("{:#x}", B256::repeat_byte(0xee))
        );
    }

    #[test]
    fn unknown_and_malformed_are_errors_not_panics() {
        let t = [B256::repeat_byte(9)];
        assert!(matches!(
            decode_log(Registry::Identity, &t, &[]),
            Err(DecodeError::Unknown(_))
        ));
        assert!(matches!(
            decode_log(Registry::Identity, &[], &[]),
            Err(DecodeError::Unknown(_))
        ));
        // Right topic0, missing indexed topics and truncated data.
        let t = [current::Registered::SIGNATURE_HASH];
        assert!(matches!(
            decode_log(Registry::Identity, &t, &[1, 2, 3]),
            Err(DecodeError::Malformed { .. })
        ));
        // A reputation event sent from the identity registry is unknown there.
        let t = [current::NewFeedback::SIGNATURE_HASH];
        assert!(matches!(
            decode_log(Registry::Identity, &t, &[]),
            Err(DecodeError::Unknown(_))
        ));
    }
}
