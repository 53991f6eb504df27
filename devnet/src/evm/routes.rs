//! EVM JSON-RPC over HTTP (single and batch requests): eth_chainId,
//! eth_blockNumber, net_version, eth_getBlockByNumber, eth_getBlockByHash,
//! eth_getLogs, with geth-style error objects.

use std::sync::Arc;

use alloy_primitives::{Address, B256};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::model::{Block, EvmChain};
use crate::control::Shared;
use crate::rng::{bytes32, hex};

/// State of one chain's router.
#[derive(Clone)]
pub struct ChainState {
    /// Devnet state.
    pub shared: Arc<Shared>,
    /// Index into `shared.evm`.
    pub index: usize,
}

/// The JSON-RPC router of one chain.
pub fn router(shared: Arc<Shared>, index: usize) -> Router {
    Router::new()
        .route("/", post(handle))
        .with_state(ChainState { shared, index })
}

/// A JSON-RPC error.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// Error code.
    pub code: i64,
    /// Message.
    pub message: String,
}

fn err(code: i64, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
    }
}

fn reply(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        Err(e) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
        }
    }
}

fn json_response(v: Value) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(State(st): State<ChainState>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return json_response(reply(Value::Null, Err(err(-32700, "parse error"))));
    };
    let Some(lock) = st.shared.evm.get(st.index) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(chain) = lock.read() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let answer = |r: &Value| {
        let out = call(&chain, r);
        if r.get("method").and_then(Value::as_str) == Some("eth_getLogs")
            && out.get("result").is_some()
        {
            let f = &r["params"][0];
            let bound = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
            st.shared.evm_log_requests.push(format!(
                "{} {} {} {agent}",
                chain.config.name,
                bound("fromBlock"),
                bound("toBlock")
            ));
        }
        out
    };
    match req {
        Value::Array(items) if items.is_empty() => {
            json_response(reply(Value::Null, Err(err(-32600, "empty batch"))))
        }
        Value::Array(items) => json_response(Value::Array(items.iter().map(answer).collect())),
        other => json_response(answer(&other)),
    }
}

/// Answers one JSON-RPC request object.
pub fn call(chain: &EvmChain, req: &Value) -> Value {
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = req.get("method").and_then(Value::as_str) else {
        return reply(id, Err(err(-32600, "invalid request")));
    };
    let params = req.get("params").cloned().unwrap_or(Value::Array(vec![]));
    let p = |i: usize| params.get(i).cloned().unwrap_or(Value::Null);
    let result = match method {
        "eth_chainId" => Ok(json!(format!("0x{:x}", chain.config.chain_id))),
        "net_version" => Ok(json!(chain.config.chain_id.to_string())),
        "eth_blockNumber" => Ok(json!(format!("0x{:x}", chain.head()))),
        "web3_clientVersion" => Ok(json!("orrery-devnet/v0.1.0")),
        "eth_getBlockByNumber" => block_number_param(chain, &p(0)).map(|n| {
            n.and_then(|n| chain.blocks.get(n as usize))
                .map_or(Value::Null, |b| {
                    block_json(chain, b, p(1).as_bool().unwrap_or(false))
                })
        }),
        "eth_getBlockByHash" => parse_b256(&p(0)).map(|h| {
            chain.block_by_hash(&h).map_or(Value::Null, |b| {
                block_json(chain, b, p(1).as_bool().unwrap_or(false))
            })
        }),
        "eth_getLogs" => get_logs(chain, &p(0)),
        _ => Err(err(
            -32601,
            format!("the method {method} does not exist/is not available"),
        )),
    };
    reply(id, result)
}

fn parse_u64(v: &Value) -> Option<u64> {
    let s = v.as_str()?.strip_prefix("0x")?;
    u64::from_str_radix(s, 16).ok()
}

fn parse_b256(v: &Value) -> Result<B256, RpcError> {
    v.as_str()
        .and_then(|s| s.parse::<B256>().ok())
        .ok_or_else(|| {
            err(
                -32602,
                "invalid argument 0: hex string has length 0, want 64 for common.Hash",
            )
        })
}

/// Resolves a block tag or hex number; Ok(None) = beyond the head.
fn block_number_param(chain: &EvmChain, v: &Value) -> Result<Option<u64>, RpcError> {
    let head = chain.head();
    let safe = head.saturating_sub(chain.config.finality_depth);
    match v.as_str() {
        Some("latest") | Some("pending") | None => Ok(Some(head)),
        Some("earliest") => Ok(Some(0)),
        Some("safe") | Some("finalized") => Ok(Some(safe)),
        Some(_) => match parse_u64(v) {
            Some(n) if n <= head => Ok(Some(n)),
            Some(_) => Ok(None),
            None => Err(err(
                -32602,
                "invalid argument 0: hex string without 0x prefix",
            )),
        },
    }
}

fn h(b: &[u8]) -> String {
    format!("0x{}", hex(b))
}

fn q(n: u64) -> String {
    format!("0x{n:x}")
}

/// A block as geth renders it.
pub fn block_json(chain: &EvmChain, b: &Block, full: bool) -> Value {
    let seed = [chain.config.chain_id, b.number, b.salt as u64];
    let txs: Vec<Value> = (0..b.tx_count)
        .map(|i| {
            let hash = chain.tx_hash(b, i);
            if !full {
                return json!(h(hash.as_slice()));
            }
            let first = chain.block_logs(b).iter().find(|l| l.tx_index == i);
            let (from, to) = first.map_or((Address::ZERO, Address::ZERO), |l| {
                (chain.address(l.actor), chain.log_address(l))
            });
            let r = bytes32(&[seed[0], seed[1], seed[2], i as u64, 0x72]);
            let s = bytes32(&[seed[0], seed[1], seed[2], i as u64, 0x73]);
            json!({
                "blockHash": h(b.hash.as_slice()),
                "blockNumber": q(b.number),
                "blockTimestamp": q(b.timestamp),
                "from": h(from.as_slice()),
                "gas": "0x493e0",
                "gasPrice": "0x3b9aca01",
                "hash": h(hash.as_slice()),
                "input": format!("0x{}", hex(&bytes32(&[seed[1], i as u64])[..4])),
                "nonce": q(i as u64),
                "to": h(to.as_slice()),
                "transactionIndex": q(i as u64),
                "value": "0x0",
                "type": "0x0",
                "chainId": q(chain.config.chain_id),
                "v": q(chain.config.chain_id * 2 + 35),
                "r": h(&r),
                "s": h(&s),
            })
        })
        .collect();
    let root = |k: u64| h(&bytes32(&[seed[0], seed[1], seed[2], k]));
    json!({
        "baseFeePerGas": "0x3b9aca00",
        "blobGasUsed": "0x0",
        "difficulty": "0x0",
        "excessBlobGas": "0x0",
        "extraData": "0x",
        "gasLimit": "0x1c9c380",
        "gasUsed": q(b.tx_count as u64 * 150_000),
        "hash": h(b.hash.as_slice()),
        "logsBloom": h(chain.bloom(b).as_slice()),
        "miner": "0x0000000000000000000000000000000000000000",
        "mixHash": root(1),
        "nonce": "0x0000000000000000",
        "number": q(b.number),
        "parentBeaconBlockRoot": root(2),
        "parentHash": h(b.parent.as_slice()),
        "receiptsRoot": root(3),
        "requestsHash": "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
        "size": q(600 + b.tx_count as u64 * 300),
        "stateRoot": root(4),
        "timestamp": q(b.timestamp),
        "transactions": txs,
        "transactionsRoot": root(5),
        "uncles": [],
        "withdrawals": [],
        "withdrawalsRoot": "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
    })
}

/// Parsed `address` filter: None = any.
fn parse_addresses(v: Option<&Value>) -> Result<Option<Vec<Address>>, RpcError> {
    let bad = || err(-32602, "invalid argument 0: invalid address");
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.parse().map_err(|_| bad())?])),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().and_then(|s| s.parse().ok()).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// Parsed `topics` filter: per position, None = wildcard.
fn parse_topics(v: Option<&Value>) -> Result<Vec<Option<Vec<B256>>>, RpcError> {
    let bad = || err(-32602, "invalid argument 0: invalid topic");
    let Some(Value::Array(a)) = v else {
        return match v {
            None | Some(Value::Null) => Ok(vec![]),
            _ => Err(bad()),
        };
    };
    if a.len() > 4 {
        return Err(err(-32602, "invalid argument 0: too many topics"));
    }
    a.iter()
        .map(|t| match t {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(vec![s.parse().map_err(|_| bad())?])),
            Value::Array(xs) if xs.is_empty() => Ok(None),
            Value::Array(xs) => xs
                .iter()
                .map(|x| x.as_str().and_then(|s| s.parse().ok()).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(bad()),
        })
        .collect()
}

/// `eth_getLogs`.
pub fn get_logs(chain: &EvmChain, filter: &Value) -> Result<Value, RpcError> {
    if !filter.is_object() {
        return Err(err(
            -32602,
            "invalid argument 0: missing value for required argument",
        ));
    }
    let addresses = parse_addresses(filter.get("address"))?;
    let topics = parse_topics(filter.get("topics"))?;
    let has_range = filter.get("fromBlock").is_some_and(|v| !v.is_null())
        || filter.get("toBlock").is_some_and(|v| !v.is_null());
    let head = chain.head();
    let (from, to) = if let Some(bh) = filter.get("blockHash").filter(|v| !v.is_null()) {
        if has_range {
            return Err(err(
                -32602,
                "invalid argument 0: cannot specify both BlockHash and FromBlock/ToBlock, choose one or the other",
            ));
        }
        let hash = parse_b256(bh)?;
        let b = chain
            .block_by_hash(&hash)
            .ok_or_else(|| err(-32000, "unknown block"))?;
        (b.number, b.number)
    } else {
        let resolve = |k: &str| -> Result<u64, RpcError> {
            match filter.get(k) {
                None | Some(Value::Null) => Ok(head),
                Some(v) => match block_number_param(chain, v)? {
                    Some(n) => Ok(n),
                    None => Ok(parse_u64(v).unwrap_or(u64::MAX)),
                },
            }
        };
        let (from, to) = (resolve("fromBlock")?, resolve("toBlock")?);
        if from > to {
            return Err(err(-32602, "invalid block range params"));
        }
        if to > head {
            return Err(err(-32602, "block range extends beyond current head block"));
        }
        if to - from + 1 > chain.config.max_block_range {
            return Err(err(
                -32005,
                format!(
                    "exceed maximum block range: {}",
                    chain.config.max_block_range
                ),
            ));
        }
        (from, to)
    };
    let max = chain.config.max_logs_per_query;
    let mut out = Vec::new();
    for n in from..=to {
        let b = &chain.blocks[n as usize];
        for rec in chain.block_logs(b) {
            let address = chain.log_address(rec);
            if addresses.as_ref().is_some_and(|a| !a.contains(&address)) {
                continue;
            }
            if let Some(Some(t0)) = topics.first() {
                if !t0.contains(&rec.kind.topic0()) {
                    continue;
                }
            }
            let log = chain.render(rec);
            let t = log.data.topics();
            let matches = topics.iter().enumerate().all(|(i, want)| match want {
                None => true,
                Some(ws) => t.get(i).is_some_and(|x| ws.contains(x)),
            });
            if !matches {
                continue;
            }
            if out.len() == max {
                return Err(err(
                    -32005,
                    format!(
                        "query returned more than {max} results. Try with this block range [{}, {}].",
                        q(from),
                        q(n.saturating_sub(1).max(from))
                    ),
                ));
            }
            out.push(json!({
                "address": h(log.address.as_slice()),
                "topics": t.iter().map(|x| h(x.as_slice())).collect::<Vec<_>>(),
                "data": h(&log.data.data),
                "blockNumber": q(log.block_number),
                "transactionHash": h(log.tx_hash.as_slice()),
                "transactionIndex": q(log.tx_index as u64),
                "blockHash": h(log.block_hash.as_slice()),
                "blockTimestamp": q(log.block_timestamp),
                "logIndex": q(log.log_index as u64),
                "removed": false,
            }));
        }
    }
    Ok(Value::Array(out))
}
