//! A small EVM JSON-RPC client over the shared [`UpstreamClient`] (rate limit, breaker,
//! retries, failover between URLs): single calls, batches, typed logs and block headers.

use std::sync::atomic::{AtomicU64, Ordering};

use alloy_primitives::{Address, B256};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::upstream::{UpstreamClient, UpstreamError};

/// Why a JSON-RPC call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// Transport failure (after the upstream client's retries and failover).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The node answered with a JSON-RPC error object.
    #[error("json-rpc error {code}: {message}")]
    Rpc {
        /// Error code, e.g. -32005.
        code: i64,
        /// Message.
        message: String,
    },
    /// The answer did not have the expected shape.
    #[error("unexpected json-rpc answer: {0}")]
    Decode(String),
}

impl RpcError {
    /// The node refused the block range or the result count ("query returned more than N
    /// results", "exceed maximum block range", "block range too large", ...).
    pub fn is_range_error(&self) -> bool {
        let RpcError::Rpc { code, message } = self else {
            return false;
        };
        let m = message.to_ascii_lowercase();
        *code == -32005
            || m.contains("more than")
            || m.contains("too many")
            || m.contains("block range")
            || m.contains("range too")
            || m.contains("limit exceeded")
            || m.contains("response size")
    }

    /// The maximum block range the node announced ("exceed maximum block range: N").
    pub fn announced_max_range(&self) -> Option<u64> {
        let RpcError::Rpc { message, .. } = self else {
            return None;
        };
        let lower = message.to_ascii_lowercase();
        let rest = lower.split("maximum block range").nth(1)?;
        let digits: String = rest
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    }
}

/// A log as `eth_getLogs` returns it (hex strings parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Emitting contract.
    pub address: Address,
    /// Topics.
    pub topics: Vec<B256>,
    /// Data.
    pub data: Vec<u8>,
    /// Block number.
    pub block_number: u64,
    /// Block hash.
    pub block_hash: B256,
    /// Transaction hash.
    pub tx_hash: B256,
    /// Log index in the block.
    pub log_index: u64,
    /// Block timestamp when the node includes it.
    pub block_timestamp: Option<u64>,
}

/// The header fields reorg detection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Number.
    pub number: u64,
    /// Hash.
    pub hash: B256,
    /// Parent hash.
    pub parent_hash: B256,
    /// Unix timestamp.
    pub timestamp: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    address: String,
    topics: Vec<String>,
    data: String,
    block_number: Option<String>,
    block_hash: Option<String>,
    transaction_hash: Option<String>,
    log_index: Option<String>,
    block_timestamp: Option<String>,
    #[serde(default)]
    removed: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHeader {
    number: String,
    hash: String,
    parent_hash: String,
    timestamp: String,
}

/// Parses a `0x` quantity.
pub fn quantity(s: &str) -> Result<u64, RpcError> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| RpcError::Decode(format!("quantity without 0x: {s:?}")))?;
    // `from_str_radix` alone would take a sign (`0x+1`).
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RpcError::Decode(format!("quantity {s:?}: not hex digits")));
    }
    u64::from_str_radix(digits, 16).map_err(|e| RpcError::Decode(format!("quantity {s:?}: {e}")))
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, RpcError>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| RpcError::Decode(format!("{what} {s:?}: {e}")))
}

fn hex_data(s: &str) -> Result<Vec<u8>, RpcError> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| RpcError::Decode(format!("data without 0x: {s:.20}")))?;
    if digits.len() % 2 != 0 {
        return Err(RpcError::Decode("odd-length data".into()));
    }
    // Byte-wise: slicing the string in steps of two panicked on a multi-byte character
    // (regression test `evm_log_data_with_a_multibyte_character` in `tests/fuzz.rs`).
    hex::decode(digits).map_err(|e| RpcError::Decode(format!("data: {e}")))
}

fn required<'a>(what: &str, v: &'a Option<String>) -> Result<&'a str, RpcError> {
    v.as_deref()
        .ok_or_else(|| RpcError::Decode(format!("log without {what} (pending?)")))
}

/// Decodes an `eth_getLogs` result (removed logs left out).
pub fn decode_logs(v: Value) -> Result<Vec<Log>, RpcError> {
    let raw: Vec<RawLog> =
        serde_json::from_value(v).map_err(|e| RpcError::Decode(format!("logs: {e}")))?;
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        if let Some(l) = Log::from_raw(r)? {
            out.push(l);
        }
    }
    Ok(out)
}

impl Log {
    fn from_raw(r: RawLog) -> Result<Option<Self>, RpcError> {
        if r.removed {
            return Ok(None);
        }
        Ok(Some(Self {
            address: parse("address", &r.address)?,
            topics: r
                .topics
                .iter()
                .map(|t| parse("topic", t))
                .collect::<Result<_, _>>()?,
            data: hex_data(&r.data)?,
            block_number: quantity(required("blockNumber", &r.block_number)?)?,
            block_hash: parse("blockHash", required("blockHash", &r.block_hash)?)?,
            tx_hash: parse(
                "transactionHash",
                required("transactionHash", &r.transaction_hash)?,
            )?,
            log_index: quantity(required("logIndex", &r.log_index)?)?,
            block_timestamp: r.block_timestamp.as_deref().map(quantity).transpose()?,
        }))
    }
}

impl Header {
    /// Decodes an `eth_getBlockByNumber` result (`None` for `null`: no such block).
    pub fn from_value(v: Value) -> Result<Option<Self>, RpcError> {
        if v.is_null() {
            return Ok(None);
        }
        let r: RawHeader =
            serde_json::from_value(v).map_err(|e| RpcError::Decode(format!("block: {e}")))?;
        Ok(Some(Self {
            number: quantity(&r.number)?,
            hash: parse("hash", &r.hash)?,
            parent_hash: parse("parentHash", &r.parent_hash)?,
            timestamp: {
                let t = quantity(&r.timestamp)?;
                // Refused here, so no stored block gets a made-up time.
                i64::try_from(t)
                    .ok()
                    .and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0))
                    .ok_or_else(|| {
                        RpcError::Decode(format!("block timestamp {t} is not a representable time"))
                    })?;
                t
            },
        }))
    }
}

/// JSON-RPC over one upstream client (several URLs: failover is the client's).
pub struct RpcClient {
    upstream: UpstreamClient,
    next_id: AtomicU64,
}

fn q(n: u64) -> String {
    format!("0x{n:x}")
}

fn take_result(mut v: Value) -> Result<Value, RpcError> {
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        return Err(RpcError::Rpc {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        });
    }
    match v.get_mut("result") {
        Some(r) => Ok(r.take()),
        None => Err(RpcError::Decode("answer without result or error".into())),
    }
}

impl RpcClient {
    /// Wraps an upstream client whose base URLs are the chain's RPC URLs.
    pub fn new(upstream: UpstreamClient) -> Self {
        Self {
            upstream,
            next_id: AtomicU64::new(1),
        }
    }

    /// The upstream client (breaker persistence, metrics).
    pub fn upstream(&self) -> &UpstreamClient {
        &self.upstream
    }

    fn request(&self, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    }

    /// One call.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let answer: Value = self
            .upstream
            .post_json("", &self.request(method, params))
            .await?;
        take_result(answer)
    }

    /// Several calls in one HTTP request; results in call order.
    pub async fn batch(
        &self,
        calls: Vec<(&str, Value)>,
    ) -> Result<Vec<Result<Value, RpcError>>, RpcError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let reqs: Vec<Value> = calls.into_iter().map(|(m, p)| self.request(m, p)).collect();
        let ids: Vec<Value> = reqs.iter().map(|r| r["id"].clone()).collect();
        let answer: Value = self.upstream.post_json("", &reqs).await?;
        let Value::Array(items) = answer else {
            // A node may answer a batch with one error object.
            return Err(take_result(answer)
                .err()
                .unwrap_or_else(|| RpcError::Decode("batch answer is not an array".into())));
        };
        let mut by_id: std::collections::HashMap<String, Value> = items
            .into_iter()
            .map(|v| (v["id"].to_string(), v))
            .collect();
        Ok(ids
            .iter()
            .map(|id| match by_id.remove(&id.to_string()) {
                Some(v) => take_result(v),
                None => Err(RpcError::Decode(format!("batch answer lacks id {id}"))),
            })
            .collect())
    }

    /// `eth_chainId`.
    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        let v = self.call("eth_chainId", json!([])).await?;
        quantity(v.as_str().unwrap_or_default())
    }

    /// `eth_blockNumber`.
    pub async fn block_number(&self) -> Result<u64, RpcError> {
        let v = self.call("eth_blockNumber", json!([])).await?;
        quantity(v.as_str().unwrap_or_default())
    }

    /// `eth_getLogs` for `addresses` over `[from, to]`.
    pub async fn get_logs(
        &self,
        addresses: &[Address],
        from: u64,
        to: u64,
    ) -> Result<Vec<Log>, RpcError> {
        let addrs: Vec<String> = addresses.iter().map(|a| format!("{a:#x}")).collect();
        let v = self
            .call(
                "eth_getLogs",
                json!([{"address": addrs, "fromBlock": q(from), "toBlock": q(to)}]),
            )
            .await?;
        decode_logs(v)
    }

    /// Headers of `numbers` in one batch; `None` for blocks the node does not have.
    pub async fn headers(&self, numbers: &[u64]) -> Result<Vec<Option<Header>>, RpcError> {
        let calls = numbers
            .iter()
            .map(|n| ("eth_getBlockByNumber", json!([q(*n), false])))
            .collect();
        self.batch(calls)
            .await?
            .into_iter()
            .map(|r| r.and_then(Header::from_value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_errors_are_recognised() {
        let e = RpcError::Rpc {
            code: -32005,
            message:
                "query returned more than 10000 results. Try with this block range [0x1, 0x2]."
                    .into(),
        };
        assert!(e.is_range_error());
        assert_eq!(e.announced_max_range(), None);
        let e = RpcError::Rpc {
            code: -32005,
            message: "exceed maximum block range: 5000".into(),
        };
        assert!(e.is_range_error());
        assert_eq!(e.announced_max_range(), Some(5000));
        let e = RpcError::Rpc {
            code: -32602,
            message: "invalid argument 0".into(),
        };
        assert!(!e.is_range_error());
    }

    #[test]
    fn parses_quantities_and_results() {
        assert_eq!(quantity("0x1f").unwrap(), 31);
        assert!(quantity("1f").is_err());
        let err = take_result(json!({"id":1,"error":{"code":-1,"message":"x"}})).unwrap_err();
        assert!(matches!(err, RpcError::Rpc { code: -1, .. }));
        assert_eq!(
            take_result(json!({"id":1,"result":"0x1"})).unwrap(),
            json!("0x1")
        );
    }
}
