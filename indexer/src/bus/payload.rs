//! Typed bus payloads: one serde type per topic, used by every publisher (sync engine,
//! sources, admin mutations) and every subscriber (GraphQL subscriptions, the trigger
//! worker, runtime settings). One naming style on the wire: camelCase, like GraphQL.
//!
//! Topics that a subscription turns into a query's object carry the complete committed row
//! (`SourceRow`, `BalanceRow`, ...): the subscription converts it with the same
//! `From<Model>` the query uses, so both return the same object, and delivering to many
//! subscribers costs no database read. The row mirrors convert to and from the entity model
//! field by field (no `..`), so a column added to the table fails to compile here until the
//! payload carries it.
//!
//! On Redis every message is an envelope `{"v": WIRE_VERSION, "at": ..., "event": {"topic":
//! ..., "payload": {...}}}` ([`encode`], [`decode`]). A message without `v` (the untyped
//! format of older replicas), of another version, or of an unknown topic is a [`WireError`]:
//! the listener skips it with a warning, never panics.

use chrono::{DateTime, Utc};
use orrery_entity::{
    config_entry, distribution, price_comparison, price_point, source, stellar_balance,
};
use serde::{Deserialize, Serialize};

use super::topics;

/// Version of the Redis envelope. Version 1 (implicit: no `v`) carried untyped `json!`
/// maps in mixed naming styles.
pub const WIRE_VERSION: u64 = 2;

/// One event's content: the topic is the variant, the payload its type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "topic", content = "payload")]
pub enum Payload {
    /// [`topics::EVENTS_MISSED`].
    #[serde(rename = "bus.events_missed")]
    EventsMissed(EventsMissed),
    /// [`topics::SOURCE_UPDATED`].
    #[serde(rename = "source.updated")]
    SourceUpdated(SourceRow),
    /// [`topics::CONFIG_UPDATED`].
    #[serde(rename = "config.updated")]
    ConfigUpdated(ConfigRow),
    /// [`topics::EVM_EVENT`].
    #[serde(rename = "evm.event")]
    EvmEvent(EvmEventIndexed),
    /// [`topics::EVM_BLOCK`].
    #[serde(rename = "evm.block")]
    EvmBlock(EvmBlockIndexed),
    /// [`topics::REORG`].
    #[serde(rename = "reorg")]
    Reorg(Reorg),
    /// [`topics::PRICE_UPDATED`].
    #[serde(rename = "price.updated")]
    PriceUpdated(PriceRow),
    /// [`topics::PRICE_COMPARISON_UPDATED`].
    #[serde(rename = "price.comparison_updated")]
    PriceComparisonUpdated(PriceComparisonRow),
    /// [`topics::BITCOIN_BLOCK`].
    #[serde(rename = "bitcoin.block")]
    BitcoinBlock(BitcoinBlock),
    /// [`topics::STELLAR_OPERATION_INDEXED`].
    #[serde(rename = "stellar.operation_indexed")]
    StellarOperationIndexed(OperationIndexed),
    /// [`topics::STELLAR_BALANCE_CHANGED`].
    #[serde(rename = "stellar.balance_changed")]
    StellarBalanceChanged(BalanceRow),
    /// [`topics::DISTRIBUTION_UPDATED`].
    #[serde(rename = "distribution.updated")]
    DistributionUpdated(DistributionRow),
    /// [`topics::ACTION_QUEUED`].
    #[serde(rename = "trigger.action_queued")]
    ActionQueued(ActionQueued),
}

impl Payload {
    /// The topic (the `topics::*` constant; equal to the serde tag, see the tests).
    pub fn topic(&self) -> &'static str {
        match self {
            Self::EventsMissed(_) => topics::EVENTS_MISSED,
            Self::SourceUpdated(_) => topics::SOURCE_UPDATED,
            Self::ConfigUpdated(_) => topics::CONFIG_UPDATED,
            Self::EvmEvent(_) => topics::EVM_EVENT,
            Self::EvmBlock(_) => topics::EVM_BLOCK,
            Self::Reorg(_) => topics::REORG,
            Self::PriceUpdated(_) => topics::PRICE_UPDATED,
            Self::PriceComparisonUpdated(_) => topics::PRICE_COMPARISON_UPDATED,
            Self::BitcoinBlock(_) => topics::BITCOIN_BLOCK,
            Self::StellarOperationIndexed(_) => topics::STELLAR_OPERATION_INDEXED,
            Self::StellarBalanceChanged(_) => topics::STELLAR_BALANCE_CHANGED,
            Self::DistributionUpdated(_) => topics::DISTRIBUTION_UPDATED,
            Self::ActionQueued(_) => topics::ACTION_QUEUED,
        }
    }
}

/// Declares a camelCase mirror of an entity row with lossless conversions both ways.
macro_rules! row_payload {
    (
        $(#[$meta:meta])*
        $name:ident <=> $model:path, $variant:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl From<$model> for $name {
            fn from(m: $model) -> Self {
                Self { $( $field: m.$field, )* }
            }
        }

        impl From<$name> for $model {
            fn from(p: $name) -> Self {
                Self { $( $field: p.$field, )* }
            }
        }

        impl From<$model> for Payload {
            fn from(m: $model) -> Self {
                Payload::$variant(m.into())
            }
        }
    };
}

row_payload! {
    /// A committed `source` row.
    SourceRow <=> source::Model, SourceUpdated {
        /// Source id.
        id: String,
        /// Kind (`stellar`, `evm`, ...).
        kind: String,
        /// Display name.
        name: String,
        /// EVM chain id.
        chain_id: Option<i64>,
        /// Upstream head.
        head_height: Option<i64>,
        /// Last height committed.
        indexed_height: Option<i64>,
        /// Opaque cursor.
        cursor: Option<String>,
        /// Status.
        status: String,
        /// Consecutive errors.
        error_count: i32,
        /// Last error.
        last_error: Option<String>,
        /// Last successful step.
        last_sync_at: Option<DateTime<Utc>>,
        /// When the head was last read.
        head_updated_at: Option<DateTime<Utc>>,
        /// Start of the backfill range.
        backfill_from: Option<i64>,
        /// Estimated seconds left.
        eta_seconds: Option<i64>,
        /// Paused by an operator.
        paused: bool,
        /// Created.
        created_at: DateTime<Utc>,
        /// Updated.
        updated_at: DateTime<Utc>,
    }
}

row_payload! {
    /// A committed `config_entry` row.
    ConfigRow <=> config_entry::Model, ConfigUpdated {
        /// Dotted key.
        key: String,
        /// Value as text.
        value: String,
        /// Value type.
        value_type: String,
        /// Description.
        description: Option<String>,
        /// Updated.
        updated_at: DateTime<Utc>,
        /// Who changed it.
        updated_by: Option<String>,
    }
}

row_payload! {
    /// A committed `price_point` row.
    PriceRow <=> price_point::Model, PriceUpdated {
        /// Row id.
        id: i64,
        /// Pair, e.g. `BTC/USD`.
        pair: String,
        /// Price source.
        source: String,
        /// Time of the price.
        at: DateTime<Utc>,
        /// Price.
        price: f64,
        /// Confidence.
        confidence: Option<f64>,
        /// Volume.
        volume: Option<f64>,
        /// Source-specific details.
        details: Option<serde_json::Value>,
    }
}

row_payload! {
    /// A committed `price_comparison` row.
    PriceComparisonRow <=> price_comparison::Model, PriceComparisonUpdated {
        /// Row id.
        id: i64,
        /// Day or time compared.
        at: DateTime<Utc>,
        /// Pair.
        pair: String,
        /// UTXOracle estimate.
        utxoracle_price: Option<f64>,
        /// Exchange price.
        exchange_price: Option<f64>,
        /// Difference.
        diff: Option<f64>,
        /// Difference in percent.
        diff_percent: Option<f64>,
        /// Confidence.
        confidence: Option<f64>,
        /// Within thresholds.
        is_valid: bool,
        /// Why not valid.
        reason: Option<String>,
        /// Updated.
        updated_at: DateTime<Utc>,
    }
}

row_payload! {
    /// A committed `stellar_balance` row (after the batch's upsert, read back in its
    /// transaction, so trustline limit and last-modified ledger are the stored ones).
    BalanceRow <=> stellar_balance::Model, StellarBalanceChanged {
        /// Row id.
        id: i64,
        /// Holder.
        account_id: String,
        /// Asset type.
        asset_type: String,
        /// Asset code.
        asset_code: String,
        /// Asset issuer (empty for lumens).
        asset_issuer: String,
        /// Balance in stroops.
        balance_stroops: i64,
        /// Trustline limit in stroops.
        limit_stroops: Option<i64>,
        /// Ledger of the last change.
        last_modified_ledger: Option<i64>,
        /// Updated.
        updated_at: DateTime<Utc>,
    }
}

row_payload! {
    /// A committed `distribution` row.
    DistributionRow <=> distribution::Model, DistributionUpdated {
        /// Id.
        id: i64,
        /// Name.
        name: String,
        /// Asset code.
        asset_code: String,
        /// Asset issuer.
        asset_issuer: String,
        /// Paying account.
        source_account: String,
        /// Budget in stroops.
        total_budget_stroops: i64,
        /// Status.
        status: String,
        /// Whether the rules passed.
        rules_passed: Option<bool>,
        /// Rule evaluation.
        rules_result: Option<serde_json::Value>,
        /// Creator.
        created_by: Option<String>,
        /// Created.
        created_at: DateTime<Utc>,
        /// Updated.
        updated_at: DateTime<Utc>,
    }
}

/// Subscribers may have missed events (the Redis subscription was down, or publishes
/// failed). Subscriptions turn it into an `EVENTS_MISSED` error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsMissed {
    /// What was lost, for people.
    pub reason: String,
    /// When the subscription was lost (a reconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// How long it was down (a reconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_for_seconds: Option<f64>,
    /// Events that could not be published (failed publishes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpublished: Option<u64>,
}

/// A decoded EVM contract event, as committed (`evm_event` without its row id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvmEventIndexed {
    /// Chain name.
    pub chain: String,
    /// Block number.
    pub block_number: i64,
    /// Block hash.
    pub block_hash: String,
    /// Transaction hash.
    pub tx_hash: String,
    /// Log index in the block.
    pub log_index: i64,
    /// Emitting contract (lowercase 0x hex).
    pub contract: String,
    /// Event name.
    pub name: String,
    /// Decoded arguments, as stored.
    pub args: serde_json::Value,
}

/// EVM blocks committed by one indexing step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvmBlockIndexed {
    /// Chain name.
    pub chain: String,
    /// Last block of the step.
    pub number: i64,
    /// Its hash.
    pub hash: String,
    /// Its parent's hash.
    pub parent_hash: String,
    /// Its unix timestamp.
    pub timestamp: i64,
    /// First block of the step.
    pub from_block: i64,
    /// Events committed by the step.
    pub events: i64,
}

/// A chain reorganisation was rolled back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reorg {
    /// Chain name.
    pub chain: String,
    /// Source id.
    pub source: String,
    /// First height whose rows were removed.
    pub from_block: i64,
    /// Heights rolled back.
    pub depth: i64,
    /// Rows removed with them.
    pub orphaned_events: i64,
}

/// A Bitcoin block header was stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BitcoinBlock {
    /// Height.
    pub height: i64,
    /// Block hash.
    pub hash: String,
    /// Previous block's hash.
    pub prev_hash: Option<String>,
    /// Unix time.
    pub time: i64,
}

/// A Stellar operation was indexed for a watched account. Operations are large and read
/// by id: the subscription loads the committed row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationIndexed {
    /// `G...` account id.
    pub account_id: String,
    /// Horizon operation id.
    pub operation_id: i64,
}

/// Trigger actions were queued (a wake-up for the trigger worker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionQueued {
    /// Chain whose events queued them.
    pub chain: String,
    /// How many.
    pub queued: u64,
}

macro_rules! into_payload {
    ($($ty:ident => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for Payload {
            fn from(p: $ty) -> Self {
                Payload::$variant(p)
            }
        })*
    };
}

into_payload! {
    EventsMissed => EventsMissed,
    SourceRow => SourceUpdated,
    ConfigRow => ConfigUpdated,
    EvmEventIndexed => EvmEvent,
    EvmBlockIndexed => EvmBlock,
    Reorg => Reorg,
    PriceRow => PriceUpdated,
    PriceComparisonRow => PriceComparisonUpdated,
    BitcoinBlock => BitcoinBlock,
    OperationIndexed => StellarOperationIndexed,
    BalanceRow => StellarBalanceChanged,
    DistributionRow => DistributionUpdated,
    ActionQueued => ActionQueued,
}

/// Why a Redis message was not decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not a JSON object.
    #[error("bus message is not a JSON object: {0}")]
    Json(serde_json::Error),
    /// No `v`: the untyped format of a replica older than this one.
    #[error("bus message without a wire version (the untyped format of an older replica); ignored: upgrade every replica")]
    Unversioned,
    /// Another version.
    #[error("bus message of wire version {0}; this replica reads version {WIRE_VERSION}; ignored")]
    Version(u64),
    /// The envelope or payload does not match its topic (or the topic is unknown).
    #[error("bus message of topic {topic:?} does not decode: {source}")]
    Payload {
        /// The topic the message claimed.
        topic: String,
        /// What serde said.
        source: serde_json::Error,
    },
}

/// The Redis envelope.
#[derive(Serialize, Deserialize)]
struct Envelope<P> {
    v: u64,
    at: DateTime<Utc>,
    event: P,
}

/// The envelope of `event` as bytes.
pub fn encode(event: &super::BusEvent) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Envelope {
        v: WIRE_VERSION,
        at: event.at,
        event: &event.payload,
    })
}

/// Decodes an envelope [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<super::BusEvent, WireError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(WireError::Json)?;
    let Some(obj) = value.as_object() else {
        return Err(WireError::Json(serde::de::Error::custom("not an object")));
    };
    match obj.get("v").and_then(serde_json::Value::as_u64) {
        None => return Err(WireError::Unversioned),
        Some(WIRE_VERSION) => {}
        Some(v) => return Err(WireError::Version(v)),
    }
    let topic = obj
        .get("event")
        .and_then(|e| e.get("topic"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let env: Envelope<Payload> =
        serde_json::from_value(value).map_err(|source| WireError::Payload { topic, source })?;
    Ok(super::BusEvent {
        payload: env.event,
        at: env.at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusEvent;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn samples() -> Vec<Payload> {
        vec![
            EventsMissed {
                reason: "r".into(),
                since: Some(at()),
                down_for_seconds: Some(1.5),
                unpublished: None,
            }
            .into(),
            source::Model {
                id: "evm:devnet".into(),
                kind: "evm".into(),
                name: "devnet".into(),
                chain_id: Some(31337),
                head_height: Some(10),
                indexed_height: Some(9),
                cursor: None,
                status: "syncing".into(),
                error_count: 0,
                last_error: None,
                last_sync_at: Some(at()),
                head_updated_at: None,
                backfill_from: Some(1),
                eta_seconds: None,
                paused: false,
                created_at: at(),
                updated_at: at(),
            }
            .into(),
            config_entry::Model {
                key: "a.b".into(),
                value: "1".into(),
                value_type: "integer".into(),
                description: None,
                updated_at: at(),
                updated_by: Some("cli".into()),
            }
            .into(),
            EvmEventIndexed {
                chain: "devnet".into(),
                block_number: 3,
                block_hash: "0xab".into(),
                tx_hash: "0xcd".into(),
                log_index: 0,
                contract: "0xef".into(),
                name: "Registered".into(),
                args: serde_json::json!({"agentId": "1"}),
            }
            .into(),
            EvmBlockIndexed {
                chain: "devnet".into(),
                number: 3,
                hash: "0x1".into(),
                parent_hash: "0x0".into(),
                timestamp: 5,
                from_block: 1,
                events: 2,
            }
            .into(),
            Reorg {
                chain: "devnet".into(),
                source: "evm:devnet".into(),
                from_block: 4,
                depth: 2,
                orphaned_events: 1,
            }
            .into(),
            price_point::Model {
                id: 1,
                pair: "BTC/USD".into(),
                source: "EXCHANGE".into(),
                at: at(),
                price: 1.25,
                confidence: None,
                volume: Some(2.0),
                details: Some(serde_json::json!({"upstream_time": 1})),
            }
            .into(),
            price_comparison::Model {
                id: 2,
                at: at(),
                pair: "BTC/USD".into(),
                utxoracle_price: Some(1.0),
                exchange_price: None,
                diff: None,
                diff_percent: None,
                confidence: Some(0.5),
                is_valid: false,
                reason: Some("no exchange price".into()),
                updated_at: at(),
            }
            .into(),
            BitcoinBlock {
                height: 1,
                hash: "00".into(),
                prev_hash: None,
                time: 2,
            }
            .into(),
            OperationIndexed {
                account_id: "GA".into(),
                operation_id: 12,
            }
            .into(),
            stellar_balance::Model {
                id: 3,
                account_id: "GA".into(),
                asset_type: "credit_alphanum4".into(),
                asset_code: "USDC".into(),
                asset_issuer: "GB".into(),
                balance_stroops: 10,
                limit_stroops: Some(100),
                last_modified_ledger: Some(7),
                updated_at: at(),
            }
            .into(),
            distribution::Model {
                id: 4,
                name: "d".into(),
                asset_code: "USDC".into(),
                asset_issuer: "GB".into(),
                source_account: "GA".into(),
                total_budget_stroops: 5,
                status: "draft".into(),
                rules_passed: None,
                rules_result: None,
                created_by: None,
                created_at: at(),
                updated_at: at(),
            }
            .into(),
            ActionQueued {
                chain: "devnet".into(),
                queued: 3,
            }
            .into(),
        ]
    }

    #[test]
    fn every_topic_round_trips_and_its_tag_is_its_topic() {
        let all = samples();
        assert_eq!(all.len(), 13, "one sample per variant");
        for p in all {
            let event = BusEvent {
                payload: p.clone(),
                at: at(),
            };
            let bytes = encode(&event).unwrap();
            let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(raw["v"], WIRE_VERSION);
            assert_eq!(raw["event"]["topic"], p.topic());
            assert_eq!(decode(&bytes).unwrap(), event);
        }
    }

    #[test]
    fn payload_keys_are_camel_case() {
        for p in samples() {
            let v = serde_json::to_value(&p).unwrap();
            for key in v["payload"].as_object().unwrap().keys() {
                assert!(
                    !key.contains('_'),
                    "{}: key {key} is not camelCase",
                    p.topic()
                );
            }
        }
    }

    #[test]
    fn old_and_foreign_messages_are_errors_not_panics() {
        // The untyped format of the previous release.
        let old = br#"{"topic":"source.updated","payload":{"id":"x"},"at":"2026-01-01T00:00:00Z"}"#;
        assert!(matches!(decode(old), Err(WireError::Unversioned)));
        let newer = br#"{"v":3,"at":"2026-01-01T00:00:00Z","event":{}}"#;
        assert!(matches!(decode(newer), Err(WireError::Version(3))));
        let unknown =
            br#"{"v":2,"at":"2026-01-01T00:00:00Z","event":{"topic":"x.y","payload":{}}}"#;
        let err = decode(unknown).unwrap_err();
        assert!(matches!(&err, WireError::Payload { topic, .. } if topic == "x.y"));
        let bad_row = br#"{"v":2,"at":"2026-01-01T00:00:00Z","event":{"topic":"source.updated","payload":{"id":1}}}"#;
        assert!(matches!(decode(bad_row), Err(WireError::Payload { .. })));
        assert!(matches!(decode(b"[1]"), Err(WireError::Json(_))));
        assert!(matches!(decode(b"{"), Err(WireError::Json(_))));
    }
}
