//! ERC-8004 registry events (as in erc-8004/erc-8004-contracts `abis/`), plus
//! the ERC-721 `Transfer` the IdentityRegistry emits on registration and the
//! pre-2026-01-05 legacy `NewFeedback` / `UriUpdated` variants.
//!
//! Encoding and topic hashes come from `alloy-sol-types`; nothing is hand-rolled.

use alloy_primitives::{keccak256, Address, Bytes, LogData, B256, U256};
use alloy_sol_types::{sol, SolEvent};

sol! {
    /// ERC-721 mint/transfer of an agent NFT.
    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);
    /// IdentityRegistry: an agent was registered.
    event Registered(uint256 indexed agentId, string agentURI, address indexed owner);
    /// IdentityRegistry: the agent URI changed.
    event URIUpdated(uint256 indexed agentId, string newURI, address indexed updatedBy);
    /// IdentityRegistry: a metadata entry was set.
    event MetadataSet(uint256 indexed agentId, string indexed indexedMetadataKey, string metadataKey, bytes metadataValue);
    /// ReputationRegistry: new feedback.
    event NewFeedback(uint256 indexed agentId, address indexed clientAddress, uint64 feedbackIndex, int128 value, uint8 valueDecimals, string indexed indexedTag1, string tag1, string tag2, string endpoint, string feedbackURI, bytes32 feedbackHash);
    /// ReputationRegistry: feedback revoked.
    event FeedbackRevoked(uint256 indexed agentId, address indexed clientAddress, uint64 indexed feedbackIndex);
    /// ReputationRegistry: a response was appended to feedback.
    event ResponseAppended(uint256 indexed agentId, address indexed clientAddress, uint64 feedbackIndex, address indexed responder, string responseURI, bytes32 responseHash);
    /// ValidationRegistry: validation requested.
    event ValidationRequest(address indexed validatorAddress, uint256 indexed agentId, string requestURI, bytes32 indexed requestHash);
    /// ValidationRegistry: validation answered.
    event ValidationResponse(address indexed validatorAddress, uint256 indexed agentId, bytes32 indexed requestHash, uint8 response, string responseURI, bytes32 responseHash, string tag);
}

/// Pre-2026-01-05 event versions (ReputationRegistry / IdentityRegistry before
/// commit 635c907). Indexed-ness follows the ERC-8004 draft of that time.
pub mod legacy {
    use alloy_sol_types::sol;
    sol! {
        /// Legacy feedback event with a uint8 score.
        event NewFeedback(uint256 indexed agentId, address indexed clientAddress, uint8 score, string indexed tag1, string tag2, string endpoint, string feedbackURI, bytes32 feedbackHash);
        /// Legacy spelling of URIUpdated.
        event UriUpdated(uint256 indexed agentId, string newUri, address indexed updatedBy);
    }
}

/// The kinds of logs devnet emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// ERC-721 Transfer (mint) from the IdentityRegistry.
    Transfer,
    /// Registered.
    Registered,
    /// URIUpdated.
    UriUpdated,
    /// MetadataSet.
    MetadataSet,
    /// NewFeedback.
    NewFeedback,
    /// FeedbackRevoked.
    FeedbackRevoked,
    /// ResponseAppended.
    ResponseAppended,
    /// ValidationRequest.
    ValidationRequest,
    /// ValidationResponse.
    ValidationResponse,
    /// Legacy NewFeedback(uint256,address,uint8,string,string,string,string,bytes32).
    LegacyNewFeedback,
    /// Legacy UriUpdated(uint256,string,address).
    LegacyUriUpdated,
}

/// Which registry contract emits an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    /// IdentityRegistry.
    Identity = 0,
    /// ReputationRegistry.
    Reputation = 1,
    /// ValidationRegistry.
    Validation = 2,
}

impl EventKind {
    /// topic0 of the event.
    pub fn topic0(self) -> B256 {
        match self {
            EventKind::Transfer => Transfer::SIGNATURE_HASH,
            EventKind::Registered => Registered::SIGNATURE_HASH,
            EventKind::UriUpdated => URIUpdated::SIGNATURE_HASH,
            EventKind::MetadataSet => MetadataSet::SIGNATURE_HASH,
            EventKind::NewFeedback => NewFeedback::SIGNATURE_HASH,
            EventKind::FeedbackRevoked => FeedbackRevoked::SIGNATURE_HASH,
            EventKind::ResponseAppended => ResponseAppended::SIGNATURE_HASH,
            EventKind::ValidationRequest => ValidationRequest::SIGNATURE_HASH,
            EventKind::ValidationResponse => ValidationResponse::SIGNATURE_HASH,
            EventKind::LegacyNewFeedback => legacy::NewFeedback::SIGNATURE_HASH,
            EventKind::LegacyUriUpdated => legacy::UriUpdated::SIGNATURE_HASH,
        }
    }

    /// Canonical signature, e.g. "Registered(uint256,string,address)".
    pub fn signature(self) -> &'static str {
        match self {
            EventKind::Transfer => Transfer::SIGNATURE,
            EventKind::Registered => Registered::SIGNATURE,
            EventKind::UriUpdated => URIUpdated::SIGNATURE,
            EventKind::MetadataSet => MetadataSet::SIGNATURE,
            EventKind::NewFeedback => NewFeedback::SIGNATURE,
            EventKind::FeedbackRevoked => FeedbackRevoked::SIGNATURE,
            EventKind::ResponseAppended => ResponseAppended::SIGNATURE,
            EventKind::ValidationRequest => ValidationRequest::SIGNATURE,
            EventKind::ValidationResponse => ValidationResponse::SIGNATURE,
            EventKind::LegacyNewFeedback => legacy::NewFeedback::SIGNATURE,
            EventKind::LegacyUriUpdated => legacy::UriUpdated::SIGNATURE,
        }
    }

    /// The registry that emits it.
    pub fn registry(self) -> Registry {
        match self {
            EventKind::Transfer
            | EventKind::Registered
            | EventKind::UriUpdated
            | EventKind::MetadataSet
            | EventKind::LegacyUriUpdated => Registry::Identity,
            EventKind::NewFeedback
            | EventKind::FeedbackRevoked
            | EventKind::ResponseAppended
            | EventKind::LegacyNewFeedback => Registry::Reputation,
            EventKind::ValidationRequest | EventKind::ValidationResponse => Registry::Validation,
        }
    }

    /// Every kind.
    pub const ALL: [EventKind; 11] = [
        EventKind::Transfer,
        EventKind::Registered,
        EventKind::UriUpdated,
        EventKind::MetadataSet,
        EventKind::NewFeedback,
        EventKind::FeedbackRevoked,
        EventKind::ResponseAppended,
        EventKind::ValidationRequest,
        EventKind::ValidationResponse,
        EventKind::LegacyNewFeedback,
        EventKind::LegacyUriUpdated,
    ];
}

/// The decoded content of one generated log, enough to encode it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFields {
    /// Kind of event.
    pub kind: EventKind,
    /// Agent id (token id).
    pub agent_id: u64,
    /// Main actor: owner / client / validator / from.
    pub actor: Address,
    /// Second address: responder / transfer recipient.
    pub other: Address,
    /// Feedback index.
    pub feedback_index: u64,
    /// Feedback value / validation response / legacy score.
    pub value: i64,
    /// URI (agent, feedback, response, request).
    pub uri: String,
    /// First tag / metadata key / validation tag.
    pub tag1: String,
    /// Second tag / metadata value.
    pub tag2: String,
    /// Feedback endpoint.
    pub endpoint: String,
    /// Feedback / response / request hash.
    pub hash: B256,
    /// Second hash (validation response hash).
    pub hash2: B256,
}

impl EventFields {
    /// ABI-encodes the log's topics and data.
    pub fn encode(&self) -> LogData {
        let id = U256::from(self.agent_id);
        match self.kind {
            EventKind::Transfer => Transfer {
                from: Address::ZERO,
                to: self.actor,
                tokenId: id,
            }
            .encode_log_data(),
            EventKind::Registered => Registered {
                agentId: id,
                agentURI: self.uri.clone(),
                owner: self.actor,
            }
            .encode_log_data(),
            EventKind::UriUpdated => URIUpdated {
                agentId: id,
                newURI: self.uri.clone(),
                updatedBy: self.actor,
            }
            .encode_log_data(),
            EventKind::MetadataSet => MetadataSet {
                agentId: id,
                indexedMetadataKey: keccak256(self.tag1.as_bytes()),
                metadataKey: self.tag1.clone(),
                metadataValue: Bytes::from(self.tag2.clone().into_bytes()),
            }
            .encode_log_data(),
            EventKind::NewFeedback => NewFeedback {
                agentId: id,
                clientAddress: self.actor,
                feedbackIndex: self.feedback_index,
                value: self.value as i128,
                valueDecimals: 0,
                indexedTag1: keccak256(self.tag1.as_bytes()),
                tag1: self.tag1.clone(),
                tag2: self.tag2.clone(),
                endpoint: self.endpoint.clone(),
                feedbackURI: self.uri.clone(),
                feedbackHash: self.hash,
            }
            .encode_log_data(),
            EventKind::FeedbackRevoked => FeedbackRevoked {
                agentId: id,
                clientAddress: self.actor,
                feedbackIndex: self.feedback_index,
            }
            .encode_log_data(),
            EventKind::ResponseAppended => ResponseAppended {
                agentId: id,
                clientAddress: self.actor,
                feedbackIndex: self.feedback_index,
                responder: self.other,
                responseURI: self.uri.clone(),
                responseHash: self.hash,
            }
            .encode_log_data(),
            EventKind::ValidationRequest => ValidationRequest {
                validatorAddress: self.actor,
                agentId: id,
                requestURI: self.uri.clone(),
                requestHash: self.hash,
            }
            .encode_log_data(),
            EventKind::ValidationResponse => ValidationResponse {
                validatorAddress: self.actor,
                agentId: id,
                requestHash: self.hash,
                response: self.value.clamp(0, 255) as u8,
                responseURI: self.uri.clone(),
                responseHash: self.hash2,
                tag: self.tag1.clone(),
            }
            .encode_log_data(),
            EventKind::LegacyNewFeedback => legacy::NewFeedback {
                agentId: id,
                clientAddress: self.actor,
                score: self.value.clamp(0, 100) as u8,
                tag1: keccak256(self.tag1.as_bytes()),
                tag2: self.tag2.clone(),
                endpoint: self.endpoint.clone(),
                feedbackURI: self.uri.clone(),
                feedbackHash: self.hash,
            }
            .encode_log_data(),
            EventKind::LegacyUriUpdated => legacy::UriUpdated {
                agentId: id,
                newUri: self.uri.clone(),
                updatedBy: self.actor,
            }
            .encode_log_data(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_encodes_and_decodes() {
        let f = EventFields {
            kind: EventKind::Registered,
            agent_id: 7,
            actor: Address::repeat_byte(0x11),
            other: Address::ZERO,
            feedback_index: 0,
            value: 0,
            uri: "ipfs://x".into(),
            tag1: String::new(),
            tag2: String::new(),
            endpoint: String::new(),
            hash: B256::ZERO,
            hash2: B256::ZERO,
        };
        let log = f.encode();
        assert_eq!(log.topics()[0], Registered::SIGNATURE_HASH);
        assert_eq!(log.topics()[1], B256::from(U256::from(7u64)));
        let decoded = Registered::decode_raw_log(log.topics().iter().copied(), &log.data).unwrap();
        assert_eq!(decoded.agentURI, "ipfs://x");
        assert_eq!(decoded.owner, Address::repeat_byte(0x11));
    }

    #[test]
    fn indexed_strings_are_topics_of_their_keccak256() {
        for (kind, position) in [
            (EventKind::MetadataSet, 2),
            (EventKind::NewFeedback, 3),
            (EventKind::LegacyNewFeedback, 3),
        ] {
            let f = EventFields {
                kind,
                agent_id: 3,
                actor: Address::repeat_byte(0x22),
                other: Address::ZERO,
                feedback_index: 1,
                value: 50,
                uri: "ipfs://f".into(),
                tag1: "starred".into(),
                tag2: "v".into(),
                endpoint: String::new(),
                hash: B256::ZERO,
                hash2: B256::ZERO,
            };
            let log = f.encode();
            assert_eq!(log.topics()[0], kind.topic0());
            assert_eq!(
                log.topics()[position],
                keccak256(b"starred"),
                "{}",
                kind.signature()
            );
        }
    }
}
