//! Esplora REST routes (as served by electrs) and the mempool-style
//! `/api/v1/prices` exchange endpoint.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::model::{BitcoinChain, BlockInfo, Script, Tx, TxOut};
use crate::control::Shared;
use crate::encode::segwit_address;
use crate::rng::{hex, Rng};

/// Transactions per `/block/:hash/txs/:start_index` page.
pub const TXS_PER_PAGE: u32 = 25;

/// The Esplora router (served at `/` and under `/api`).
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/blocks/tip/height", get(tip_height))
        .route("/blocks/tip/hash", get(tip_hash))
        .route("/block-height/{height}", get(block_height))
        .route("/block/{hash}", get(block))
        .route("/block/{hash}/status", get(block_status))
        .route("/block/{hash}/txids", get(block_txids))
        .route("/block/{hash}/txs", get(block_txs_first))
        .route("/block/{hash}/txs/{start}", get(block_txs))
        .route("/tx/{txid}", get(tx_one))
        .route("/tx/{txid}/status", get(tx_status))
        .with_state(shared);
    Router::new().merge(api.clone()).nest("/api", api)
}

/// The exchange-price router.
pub fn prices_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/prices", get(prices))
        .route("/api/v1/historical-price", get(historical_price))
        .with_state(shared)
}

fn text(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn json_ok(v: Value) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

macro_rules! read_chain {
    ($shared:expr) => {
        match $shared.bitcoin.read() {
            Ok(c) => c,
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    };
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn find_block(chain: &BitcoinChain, hash: &str) -> Result<BlockInfo, Box<Response>> {
    let Some(h) = parse_hash(hash) else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "Invalid hex string".into(),
        )));
    };
    chain
        .block_by_hash(&h)
        .ok_or_else(|| Box::new(text(StatusCode::NOT_FOUND, "Block not found".into())))
}

async fn tip_height(State(shared): State<Arc<Shared>>) -> Response {
    let chain = read_chain!(shared);
    text(StatusCode::OK, chain.tip().to_string())
}

async fn tip_hash(State(shared): State<Arc<Shared>>) -> Response {
    let chain = read_chain!(shared);
    match chain.block_at(chain.tip()) {
        Some(b) => text(StatusCode::OK, hex(&b.hash)),
        None => text(StatusCode::NOT_FOUND, "Block not found".into()),
    }
}

async fn block_height(State(shared): State<Arc<Shared>>, Path(height): Path<String>) -> Response {
    let chain = read_chain!(shared);
    let Ok(h) = height.parse::<u64>() else {
        return text(StatusCode::BAD_REQUEST, "Invalid height".into());
    };
    match chain.block_at(h) {
        Some(b) => text(StatusCode::OK, hex(&b.hash)),
        None => text(StatusCode::NOT_FOUND, "Block not found".into()),
    }
}

/// A block as electrs renders it.
pub fn block_json(chain: &BitcoinChain, b: &BlockInfo) -> Value {
    let txs = chain.block_txs(b);
    let (size, weight) = txs.iter().fold((81u64, 324u64), |(s, w), t| {
        let (ts, tw) = t.size_weight();
        (s + ts, w + tw)
    });
    let mut rng = Rng::new(&[b.height, b.branch as u64, 0x4844]);
    let mut merkle = [0u8; 32];
    rng.fill(&mut merkle);
    json!({
        "id": hex(&b.hash),
        "height": b.height,
        "version": 536_870_912,
        "timestamp": b.timestamp,
        "tx_count": txs.len(),
        "size": size,
        "weight": weight,
        "merkle_root": hex(&merkle),
        "previousblockhash": hex(&b.prev),
        "mediantime": b.timestamp - 3_000,
        "nonce": rng.next_u64() as u32,
        "bits": 386_043_996,
        "difficulty": 110_451_907_374_649.6,
    })
}

async fn block(State(shared): State<Arc<Shared>>, Path(hash): Path<String>) -> Response {
    let chain = read_chain!(shared);
    match find_block(&chain, &hash) {
        Ok(b) => json_ok(block_json(&chain, &b)),
        Err(r) => *r,
    }
}

async fn block_status(State(shared): State<Arc<Shared>>, Path(hash): Path<String>) -> Response {
    let chain = read_chain!(shared);
    let b = match find_block(&chain, &hash) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let best = chain.in_best_chain(&b);
    let mut v = json!({"in_best_chain": best, "height": b.height});
    if best {
        if let Some(next) = chain.block_at(b.height + 1) {
            v["next_best"] = json!(hex(&next.hash));
        }
    }
    json_ok(v)
}

async fn block_txids(State(shared): State<Arc<Shared>>, Path(hash): Path<String>) -> Response {
    let chain = read_chain!(shared);
    match find_block(&chain, &hash) {
        Ok(b) => json_ok(json!(chain
            .block_txs(&b)
            .iter()
            .map(|t| hex(&t.txid))
            .collect::<Vec<_>>())),
        Err(r) => *r,
    }
}

async fn block_txs_first(state: State<Arc<Shared>>, Path(hash): Path<String>) -> Response {
    block_txs(state, Path((hash, "0".to_string()))).await
}

async fn block_txs(
    State(shared): State<Arc<Shared>>,
    Path((hash, start)): Path<(String, String)>,
) -> Response {
    let chain = read_chain!(shared);
    let b = match find_block(&chain, &hash) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Ok(start) = start.parse::<u32>() else {
        return text(StatusCode::BAD_REQUEST, "Invalid start index".into());
    };
    if start % TXS_PER_PAGE != 0 {
        return text(
            StatusCode::BAD_REQUEST,
            "start index must be a multipication of 25".into(),
        );
    }
    if start >= chain.tx_count(&b) {
        return text(StatusCode::BAD_REQUEST, "start index out of range".into());
    }
    let txs = chain.block_txs_range(&b, start, TXS_PER_PAGE);
    json_ok(Value::Array(txs.iter().map(|t| tx_json(t, &b)).collect()))
}

fn find_tx(chain: &BitcoinChain, txid: &str) -> Result<(Tx, BlockInfo), Box<Response>> {
    let Some(id) = parse_hash(txid) else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "Invalid hex string".into(),
        )));
    };
    let (b, i) = chain
        .locate_tx(&id)
        .ok_or_else(|| Box::new(text(StatusCode::NOT_FOUND, "Transaction not found".into())))?;
    let tx = if i == 0 {
        chain.block_txs_range(&b, 0, 1).into_iter().next()
    } else {
        Some(chain.tx(&b, i))
    };
    tx.map(|t| (t, b))
        .ok_or_else(|| Box::new(text(StatusCode::NOT_FOUND, "Transaction not found".into())))
}

async fn tx_one(State(shared): State<Arc<Shared>>, Path(txid): Path<String>) -> Response {
    let chain = read_chain!(shared);
    match find_tx(&chain, &txid) {
        Ok((tx, b)) => json_ok(tx_json(&tx, &b)),
        Err(r) => *r,
    }
}

async fn tx_status(State(shared): State<Arc<Shared>>, Path(txid): Path<String>) -> Response {
    let chain = read_chain!(shared);
    match find_tx(&chain, &txid) {
        Ok((tx, b)) => json_ok(tx_json(&tx, &b)["status"].clone()),
        Err(r) => *r,
    }
}

fn script_json(o: &TxOut) -> Value {
    match &o.script {
        Script::P2wpkh(pkh) => json!({
            "scriptpubkey": format!("0014{}", hex(pkh)),
            "scriptpubkey_asm": format!("OP_0 OP_PUSHBYTES_20 {}", hex(pkh)),
            "scriptpubkey_type": "v0_p2wpkh",
            "scriptpubkey_address": segwit_address("bc", 0, pkh),
            "value": o.value,
        }),
        Script::OpReturn(data) => json!({
            "scriptpubkey": format!("6a{:02x}{}", data.len(), hex(data)),
            "scriptpubkey_asm": format!("OP_RETURN OP_PUSHBYTES_{} {}", data.len(), hex(data)),
            "scriptpubkey_type": "op_return",
            "value": o.value,
        }),
    }
}

/// A confirmed transaction as electrs renders it.
pub fn tx_json(tx: &Tx, b: &BlockInfo) -> Value {
    let vin: Vec<Value> = tx
        .vin
        .iter()
        .map(|i| {
            let asm = if i.scriptsig.is_empty() {
                String::new()
            } else {
                format!(
                    "OP_PUSHBYTES_3 {} OP_PUSHBYTES_{} {}",
                    hex(&i.scriptsig[1..4]),
                    i.scriptsig.len() - 4,
                    hex(&i.scriptsig[4..])
                )
            };
            json!({
                "txid": hex(&i.prev_txid),
                "vout": i.vout,
                "prevout": i.prevout.as_ref().map(script_json),
                "scriptsig": hex(&i.scriptsig),
                "scriptsig_asm": asm,
                "witness": i.witness.iter().map(|w| hex(w)).collect::<Vec<_>>(),
                "is_coinbase": tx.coinbase,
                "sequence": i.sequence,
            })
        })
        .collect();
    let (size, weight) = tx.size_weight();
    json!({
        "txid": hex(&tx.txid),
        "version": 2,
        "locktime": 0,
        "vin": vin,
        "vout": tx.vout.iter().map(script_json).collect::<Vec<_>>(),
        "size": size,
        "weight": weight,
        "sigops": tx.vin.len(),
        "fee": tx.fee(),
        "status": {
            "confirmed": true,
            "block_height": b.height,
            "block_hash": hex(&b.hash),
            "block_time": b.timestamp,
        },
    })
}

/// Fixed exchange rates devnet derives other currencies from.
const FX: [(&str, f64); 6] = [
    ("EUR", 0.92),
    ("GBP", 0.79),
    ("CAD", 1.37),
    ("CHF", 0.88),
    ("AUD", 1.52),
    ("JPY", 151.0),
];

fn price_object(time: i64, usd: f64) -> Value {
    let mut v = json!({"time": time, "USD": usd.round() as i64});
    for (c, r) in FX {
        v[c] = json!((usd * r).round() as i64);
    }
    v
}

async fn prices(State(shared): State<Arc<Shared>>) -> Response {
    let chain = read_chain!(shared);
    let tip = chain.tip();
    let day = chain.day_of(tip);
    let time = chain.config.start_time + ((tip - chain.config.start_height) * 600) as i64;
    json_ok(price_object(time, chain.price_on_day(day)))
}

async fn historical_price(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let chain = read_chain!(shared);
    let list: Vec<Value> = match q.get("timestamp").map(|t| t.parse::<i64>()) {
        Some(Ok(t)) => {
            let day = ((t - chain.config.start_time).max(0) / 86_400) as u64;
            vec![price_object(chain.day_start(day), chain.price_on_day(day))]
        }
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "invalid timestamp".into()),
        None => chain
            .daily_prices()
            .into_iter()
            .map(|(t, p)| price_object(t, p))
            .collect(),
    };
    let mut rates = json!({"USDEUR": FX[0].1});
    for (c, r) in FX.iter().skip(1) {
        rates[format!("USD{c}")] = json!(r);
    }
    json_ok(json!({"prices": list, "exchangeRates": rates}))
}
