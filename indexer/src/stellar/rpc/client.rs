//! The Stellar RPC client: JSON-RPC 2.0 over the shared [`UpstreamClient`] (rate limit,
//! breaker, retries with backoff, failover across `stellar.rpc_urls`), with the node's real
//! request limits checked before sending and its error codes mapped to [`RpcError`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::types::{
    EntriesPage, EventsPage, Health, LatestLedger, LedgersPage, Network, TransactionsPage,
};
use crate::upstream::{UpstreamClient, UpstreamError};

/// Largest `pagination.limit` of `getEvents`.
pub const MAX_EVENTS_LIMIT: u32 = 10_000;
/// Most filters one `getEvents` call may carry.
pub const MAX_EVENT_FILTERS: usize = 5;
/// Most contract ids per filter.
pub const MAX_CONTRACT_IDS: usize = 5;
/// Largest `pagination.limit` of `getLedgers` and `getTransactions`.
pub const MAX_PAGE_LIMIT: u32 = 200;
/// Most keys per `getLedgerEntries` call.
pub const MAX_LEDGER_KEYS: usize = 200;

/// Why an RPC call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The HTTP exchange failed (after the upstream client's retries).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// -32600: the node says the request is malformed.
    #[error("stellar rpc {method}: invalid request (-32600): {message}")]
    InvalidRequest {
        /// Method called.
        method: &'static str,
        /// The node's message.
        message: String,
    },
    /// -32602: the node refused a parameter.
    #[error("stellar rpc {method}: invalid params (-32602): {message}")]
    InvalidParams {
        /// Method called.
        method: &'static str,
        /// The node's message.
        message: String,
    },
    /// The requested start ledger is outside the node's retention window.
    #[error(
        "stellar rpc {method}: start ledger {start} is outside the node's retention window \
         {oldest}..={latest}; start at {oldest} or later, or use a node (or the data lake) \
         with more history"
    )]
    OutsideRetention {
        /// Method called.
        method: &'static str,
        /// Ledger asked for.
        start: u32,
        /// Oldest ledger the node keeps.
        oldest: u32,
        /// Newest ledger.
        latest: u32,
    },
    /// -32603: the node failed internally (transient).
    #[error("stellar rpc {method}: internal error (-32603): {message}")]
    Internal {
        /// Method called.
        method: &'static str,
        /// The node's message.
        message: String,
    },
    /// Any other JSON-RPC error code.
    #[error("stellar rpc {method}: error {code}: {message}")]
    Other {
        /// Method called.
        method: &'static str,
        /// JSON-RPC code.
        code: i64,
        /// The node's message.
        message: String,
    },
    /// The answer is not a JSON-RPC response of the expected shape.
    #[error("stellar rpc {method}: unexpected answer: {error}")]
    Shape {
        /// Method called.
        method: &'static str,
        /// What was wrong.
        error: String,
    },
    /// The request breaks a limit of the API (checked before sending).
    #[error("stellar rpc {method}: {error}")]
    Limit {
        /// Method called.
        method: &'static str,
        /// Which limit.
        error: String,
    },
}

impl RpcError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RpcError::Upstream(e) => e.is_transient(),
            RpcError::Internal { .. } | RpcError::Shape { .. } => true,
            _ => false,
        }
    }
}

/// One `getEvents` filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// `contract`, `system` or none (all).
    pub type_: Option<String>,
    /// Contract ids (`C...`), at most [`MAX_CONTRACT_IDS`].
    pub contract_ids: Vec<String>,
    /// Topic filters (base64 `ScVal` segments or `*` / `**`).
    pub topics: Vec<Vec<String>>,
}

/// Where a paged request starts: a ledger or a cursor, never both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// From this ledger (inclusive).
    Ledger(u32),
    /// After this cursor (as returned by the previous page).
    Cursor(String),
}

/// A Stellar RPC client.
#[derive(Clone)]
pub struct RpcClient {
    upstream: UpstreamClient,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("upstream", &self.upstream.name())
            .finish()
    }
}

/// Parses the ledger range out of "startLedger must be within the ledger range: A - B".
fn range_in(message: &str) -> Option<(u32, u32)> {
    let tail = message.rsplit_once(':')?.1;
    let (a, b) = tail.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

impl RpcClient {
    /// A client over `upstream` (whose base URLs are the RPC endpoints).
    pub fn new(upstream: UpstreamClient) -> Self {
        Self {
            upstream,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The underlying HTTP client.
    pub fn upstream(&self) -> &UpstreamClient {
        &self.upstream
    }

    /// Calls `method` with `params` and decodes its `result`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: Value,
    ) -> Result<T, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut body = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            body["params"] = params;
        }
        let answer: Box<RawValue> = self.upstream.post_json("", &body).await?;
        decode_raw_answer(method, &answer)
    }

    /// `getHealth`.
    pub async fn get_health(&self) -> Result<Health, RpcError> {
        self.call("getHealth", Value::Null).await
    }

    /// `getNetwork`.
    pub async fn get_network(&self) -> Result<Network, RpcError> {
        self.call("getNetwork", Value::Null).await
    }

    /// `getLatestLedger`.
    pub async fn get_latest_ledger(&self) -> Result<LatestLedger, RpcError> {
        self.call("getLatestLedger", Value::Null).await
    }

    /// `getLedgers` from `start`, at most `limit` (<= 200) ledgers.
    pub async fn get_ledgers(&self, start: &Start, limit: u32) -> Result<LedgersPage, RpcError> {
        let params = paged_params("getLedgers", start, limit, MAX_PAGE_LIMIT)?;
        self.with_retention("getLedgers", start, params).await
    }

    /// `getTransactions` from `start`, at most `limit` (<= 200) transactions.
    pub async fn get_transactions(
        &self,
        start: &Start,
        limit: u32,
    ) -> Result<TransactionsPage, RpcError> {
        let params = paged_params("getTransactions", start, limit, MAX_PAGE_LIMIT)?;
        self.with_retention("getTransactions", start, params).await
    }

    /// `getEvents` from `start` with `filters` (<= 5), at most `limit` (<= 10,000) events.
    /// The node scans a bounded number of ledgers per call: a page may be empty while more
    /// follow, so always continue from the returned cursor.
    pub async fn get_events(
        &self,
        start: &Start,
        filters: &[EventFilter],
        limit: u32,
    ) -> Result<EventsPage, RpcError> {
        let mut params = paged_params("getEvents", start, limit, MAX_EVENTS_LIMIT)?;
        params["filters"] = events_filters(filters)?;
        self.with_retention("getEvents", start, params).await
    }

    /// `getLedgerEntries` for base64 `LedgerKey`s (<= 200).
    pub async fn get_ledger_entries(&self, keys: &[String]) -> Result<EntriesPage, RpcError> {
        if keys.len() > MAX_LEDGER_KEYS {
            return Err(RpcError::Limit {
                method: "getLedgerEntries",
                error: format!("{} keys, at most {MAX_LEDGER_KEYS}", keys.len()),
            });
        }
        self.call("getLedgerEntries", json!({ "keys": keys })).await
    }

    /// Calls a ranged method; an "outside the ledger range" refusal becomes
    /// [`RpcError::OutsideRetention`] with the node's window (read from the message, or
    /// from `getHealth` when the message does not say).
    async fn with_retention<T: DeserializeOwned>(
        &self,
        method: &'static str,
        start: &Start,
        params: Value,
    ) -> Result<T, RpcError> {
        match self.call(method, params).await {
            Err(
                RpcError::InvalidParams { message, .. } | RpcError::InvalidRequest { message, .. },
            ) if message.contains("must be within the ledger range") => {
                let start = match start {
                    Start::Ledger(l) => *l,
                    Start::Cursor(_) => 0,
                };
                let (oldest, latest) = match range_in(&message) {
                    Some(r) => r,
                    None => {
                        let h = self.get_health().await?;
                        (h.oldest_ledger, h.latest_ledger)
                    }
                };
                Err(RpcError::OutsideRetention {
                    method,
                    start,
                    oldest,
                    latest,
                })
            }
            other => other,
        }
    }
}

/// `{startLedger | pagination.cursor, pagination.limit}` after checking the limit.
fn paged_params(
    method: &'static str,
    start: &Start,
    limit: u32,
    max: u32,
) -> Result<Value, RpcError> {
    if limit == 0 || limit > max {
        return Err(RpcError::Limit {
            method,
            error: format!("pagination.limit {limit} outside 1..={max}"),
        });
    }
    Ok(match start {
        // The API refuses a cursor together with a ledger range: send one or the other.
        Start::Ledger(l) => json!({"startLedger": l, "pagination": {"limit": limit}}),
        Start::Cursor(c) => json!({"pagination": {"cursor": c, "limit": limit}}),
    })
}

fn events_filters(filters: &[EventFilter]) -> Result<Value, RpcError> {
    if filters.len() > MAX_EVENT_FILTERS {
        return Err(RpcError::Limit {
            method: "getEvents",
            error: format!("{} filters, at most {MAX_EVENT_FILTERS}", filters.len()),
        });
    }
    let mut out = Vec::with_capacity(filters.len());
    for f in filters {
        if f.contract_ids.len() > MAX_CONTRACT_IDS {
            return Err(RpcError::Limit {
                method: "getEvents",
                error: format!(
                    "{} contract ids in one filter, at most {MAX_CONTRACT_IDS}",
                    f.contract_ids.len()
                ),
            });
        }
        let mut v = json!({});
        if let Some(t) = &f.type_ {
            v["type"] = json!(t);
        }
        if !f.contract_ids.is_empty() {
            v["contractIds"] = json!(f.contract_ids);
        }
        if !f.topics.is_empty() {
            v["topics"] = json!(f.topics);
        }
        out.push(v);
    }
    Ok(Value::Array(out))
}

/// Decodes a JSON-RPC answer: its `result`, or its `error` as an [`RpcError`].
pub fn decode_answer<T: DeserializeOwned>(
    method: &'static str,
    answer: Value,
) -> Result<T, RpcError> {
    let raw = serde_json::value::to_raw_value(&answer).map_err(|e| RpcError::Shape {
        method,
        error: e.to_string(),
    })?;
    decode_raw_answer(method, &raw)
}

/// A JSON-RPC answer with its `result` left as text, so that it is decoded once, straight
/// into the method's type (through a [`Value`] tree, a 10,000-event `getEvents` page cost
/// a map and a string per field before being decoded again).
#[derive(Deserialize)]
struct Envelope<'a> {
    /// Present (even `null`) or absent.
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    error: Option<Value>,
}

/// `Some` for any value, `null` included (only an absent field is `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// [`decode_answer`] of an answer as received.
pub fn decode_raw_answer<T: DeserializeOwned>(
    method: &'static str,
    answer: &RawValue,
) -> Result<T, RpcError> {
    let shape = |error: String| RpcError::Shape { method, error };
    if !answer.get().trim_start().starts_with('{') {
        return Err(shape("not a JSON object".into()));
    }
    let envelope: Envelope<'_> =
        serde_json::from_str(answer.get()).map_err(|e| shape(e.to_string()))?;
    if let Some(err) = envelope.error {
        let code = err.get("code").and_then(Value::as_i64);
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_string();
        return Err(match code {
            Some(-32600) => RpcError::InvalidRequest { method, message },
            Some(-32602) => RpcError::InvalidParams { method, message },
            Some(-32603) => RpcError::Internal { method, message },
            Some(code) => RpcError::Other {
                method,
                code,
                message,
            },
            None => shape(format!("error without a code: {err}")),
        });
    }
    let result = envelope
        .result
        .ok_or_else(|| shape("neither result nor error".into()))?;
    serde_json::from_str(result.get()).map_err(|e| shape(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_before_sending() {
        assert!(paged_params("getEvents", &Start::Ledger(1), 10_000, MAX_EVENTS_LIMIT).is_ok());
        assert!(matches!(
            paged_params("getEvents", &Start::Ledger(1), 10_001, MAX_EVENTS_LIMIT),
            Err(RpcError::Limit { .. })
        ));
        assert!(paged_params("getLedgers", &Start::Ledger(1), 201, MAX_PAGE_LIMIT).is_err());
        assert!(paged_params("getLedgers", &Start::Ledger(1), 0, MAX_PAGE_LIMIT).is_err());
        let by_cursor =
            paged_params("getEvents", &Start::Cursor("c".into()), 5, MAX_EVENTS_LIMIT).unwrap();
        assert!(by_cursor.get("startLedger").is_none(), "never both");
        assert_eq!(by_cursor["pagination"]["cursor"], "c");
        let by_ledger = paged_params("getEvents", &Start::Ledger(9), 5, MAX_EVENTS_LIMIT).unwrap();
        assert!(by_ledger["pagination"].get("cursor").is_none());
        let six = vec![EventFilter::default(); 6];
        assert!(events_filters(&six).is_err());
        let wide = EventFilter {
            contract_ids: vec!["C".into(); 6],
            ..Default::default()
        };
        assert!(events_filters(&[wide]).is_err());
    }

    #[test]
    fn error_codes_map_to_typed_errors() {
        let err = |code: i64, msg: &str| {
            decode_answer::<Value>(
                "getEvents",
                json!({"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": msg}}),
            )
            .unwrap_err()
        };
        assert!(matches!(err(-32600, "x"), RpcError::InvalidRequest { .. }));
        assert!(matches!(err(-32602, "x"), RpcError::InvalidParams { .. }));
        let internal = err(-32603, "db");
        assert!(matches!(internal, RpcError::Internal { .. }) && internal.is_transient());
        assert!(matches!(err(-1, "x"), RpcError::Other { code: -1, .. }));
        assert!(matches!(
            decode_answer::<Value>("getHealth", json!([1])),
            Err(RpcError::Shape { .. })
        ));
        assert!(matches!(
            decode_answer::<Value>("getHealth", json!({"jsonrpc": "2.0", "id": 1})),
            Err(RpcError::Shape { error, .. }) if error == "neither result nor error"
        ));
        // A `null` result is a result (of the wrong shape for a page), not a missing one.
        assert_eq!(
            decode_answer::<Value>("getHealth", json!({"result": null})),
            Ok(Value::Null)
        );
        assert!(matches!(
            decode_answer::<EventsPage>("getEvents", json!({"result": null})),
            Err(RpcError::Shape { error, .. }) if error.contains("null")
        ));
    }

    #[test]
    fn raw_answers_decode_straight_into_the_result_type() {
        let raw = |text: &str| RawValue::from_string(text.to_string()).unwrap();
        let page: EventsPage = decode_raw_answer(
            "getEvents",
            &raw(
                r#" {"jsonrpc":"2.0","id":7,"result":{"events":[],"latestLedger":9,"cursor":"c"}}"#,
            ),
        )
        .unwrap();
        assert_eq!((page.latest_ledger, page.cursor.as_str()), (9, "c"));
        let err = decode_raw_answer::<EventsPage>(
            "getEvents",
            &raw(r#"{"error":{"code":-32602,"message":"bad"},"result":{}}"#),
        );
        assert!(matches!(err, Err(RpcError::InvalidParams { message, .. }) if message == "bad"));
        assert!(matches!(
            decode_raw_answer::<EventsPage>("getEvents", &raw("\"text\"")),
            Err(RpcError::Shape { error, .. }) if error == "not a JSON object"
        ));
        assert_eq!(
            range_in("startLedger must be within the ledger range: 1000 - 121000"),
            Some((1000, 121_000))
        );
    }
}
