//! Horizon REST routes: root, ledgers, accounts, operations, payments,
//! transactions, trades and trade aggregations, with HAL paging, problem+json
//! errors and rate-limit headers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::model::{Account, Ledger, OpKind, Operation, StellarChain, Trade, STROOPS};
use crate::control::Shared;
use crate::encode::{amount7, base64, rfc3339};
use crate::rng::{bytes32, hex};

type Params = Query<HashMap<String, String>>;

/// Maximum `limit` Horizon accepts.
pub const MAX_LIMIT: usize = 200;

/// The Horizon router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/ledgers", get(ledgers))
        .route("/ledgers/{seq}", get(ledger_one))
        .route("/accounts", get(accounts))
        .route("/accounts/{id}", get(account_one))
        .route("/accounts/{id}/operations", get(account_operations))
        .route("/accounts/{id}/payments", get(account_payments))
        .route("/accounts/{id}/transactions", get(account_transactions))
        .route("/accounts/{id}/trades", get(account_trades))
        .route("/operations", get(operations))
        .route("/operations/{id}", get(operation_one))
        .route("/payments", get(payments))
        .route("/transactions", get(transactions))
        .route("/transactions/{hash}", get(transaction_one))
        .route(
            "/transactions/{hash}/operations",
            get(transaction_operations),
        )
        .route("/transactions/{hash}/payments", get(transaction_payments))
        .route("/ledgers/{seq}/operations", get(ledger_operations))
        .route("/ledgers/{seq}/payments", get(ledger_payments))
        .route("/ledgers/{seq}/transactions", get(ledger_transactions))
        .route("/trades", get(trades))
        .route("/trade_aggregations", get(trade_aggregations))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, None) })
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            rate_limit,
        ))
        .with_state(shared)
}

/// A Horizon problem+json error response.
pub fn problem(status: StatusCode, invalid_field: Option<(&str, &str)>) -> Response {
    let (kind, title, detail) = match status.as_u16() {
        400 => ("bad_request", "Bad Request", "The request you sent was invalid in some way."),
        404 => (
            "not_found",
            "Resource Missing",
            "The resource at the url requested was not found.  This usually occurs for one of two reasons:  The url requested is not valid, or no data in our database could be found with the parameters provided.",
        ),
        429 => (
            "rate_limit_exceeded",
            "Rate Limit Exceeded",
            "The rate limit for the requesting IP address is over its alloted limit.  The allowed limit and requests left per time period are communicated to clients via the http response headers 'X-RateLimit-*' headers.",
        ),
        503 => (
            "service_unavailable",
            "Service Unavailable",
            "The server is currently unavailable. Please try again later.",
        ),
        504 => ("timeout", "Timeout", "Your request timed out before completing."),
        _ => (
            "server_error",
            "Internal Server Error",
            "An error occurred while processing this request.  This is usually due to a bug within the server software.  Trying this request again may succeed if the bug is transient, otherwise please report this issue to the issues section of the horizon repository: https://github.com/stellar/go/issues",
        ),
    };
    let mut body = json!({
        "type": format!("https://stellar.org/horizon-errors/{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some((field, reason)) = invalid_field {
        body["extras"] = json!({"invalid_field": field, "reason": reason});
    }
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json; charset=utf-8"),
    );
    resp
}

fn hal(body: Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/hal+json; charset=utf-8"),
    );
    resp
}

/// Per-hour request budget shared by all Horizon clients.
#[derive(Debug)]
pub struct RateWindow {
    /// Requests allowed per hour.
    pub limit: u32,
    started: Instant,
    used: u32,
}

impl RateWindow {
    /// A fresh window.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            started: Instant::now(),
            used: 0,
        }
    }
}

/// Every Horizon request passes here: it is logged (see [`Shared::horizon_requests`]), then
/// charged to the rate window.
async fn rate_limit(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/_devnet") {
        return next.run(req).await;
    }
    if let Some(target) = req.uri().path_and_query() {
        shared.horizon_requests.push(target.as_str().to_string());
    }
    let (allowed, limit, remaining, reset) = {
        let Ok(mut w) = shared.rate.lock() else {
            return problem(StatusCode::INTERNAL_SERVER_ERROR, None);
        };
        if w.started.elapsed() >= Duration::from_secs(3600) {
            w.started = Instant::now();
            w.used = 0;
        }
        let allowed = w.used < w.limit;
        if allowed {
            w.used += 1;
        }
        let reset = 3600u64.saturating_sub(w.started.elapsed().as_secs());
        (allowed, w.limit, w.limit - w.used, reset)
    };
    let mut resp = if allowed {
        next.run(req).await
    } else {
        let mut r = problem(StatusCode::TOO_MANY_REQUESTS, None);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(reset.max(1)));
        r
    };
    let h = resp.headers_mut();
    h.insert("X-Ratelimit-Limit", HeaderValue::from(limit));
    h.insert("X-Ratelimit-Remaining", HeaderValue::from(remaining));
    h.insert("X-Ratelimit-Reset", HeaderValue::from(reset));
    resp
}

/// Paging parameters of a collection request.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Exclusive start (asc) / end (desc) token.
    pub cursor: i64,
    /// Descending order.
    pub desc: bool,
    /// Page size.
    pub limit: usize,
}

/// Parses `cursor`, `order` and `limit`; `now_token` is the token "now" means.
pub fn parse_page(q: &HashMap<String, String>, now_token: i64) -> Result<Page, Box<Response>> {
    let desc = match q.get("order").map(String::as_str) {
        None | Some("") | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(Box::new(problem(
                StatusCode::BAD_REQUEST,
                Some(("order", "order: invalid value; must be asc or desc")),
            )))
        }
    };
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") => 10,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(Box::new(problem(
                    StatusCode::BAD_REQUEST,
                    Some(("limit", "limit: must be between 1 and 200")),
                )))
            }
        },
    };
    let cursor = match q.get("cursor").map(String::as_str) {
        None | Some("") => {
            if desc {
                i64::MAX
            } else {
                0
            }
        }
        Some("now") => now_token,
        Some(s) => match s.split('-').next().unwrap_or(s).parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return Err(Box::new(problem(
                    StatusCode::BAD_REQUEST,
                    Some(("cursor", "cursor: invalid value")),
                )))
            }
        },
    };
    Ok(Page {
        cursor,
        desc,
        limit,
    })
}

/// Selects up to `page.limit` positions of an id-sorted sequence after the cursor.
pub fn select(
    len: usize,
    id_at: impl Fn(usize) -> i64,
    keep: impl Fn(usize) -> bool,
    page: &Page,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(page.limit.min(len));
    // Binary search on the monotone ids.
    let (mut lo, mut hi) = (0usize, len);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let go_right = if page.desc {
            id_at(mid) < page.cursor
        } else {
            id_at(mid) <= page.cursor
        };
        if go_right {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if page.desc {
        let mut i = lo;
        while i > 0 && out.len() < page.limit {
            i -= 1;
            if keep(i) {
                out.push(i);
            }
        }
    } else {
        let mut i = lo;
        while i < len && out.len() < page.limit {
            if keep(i) {
                out.push(i);
            }
            i += 1;
        }
    }
    out
}

fn href(h: String) -> Value {
    json!({ "href": h })
}

fn templated(h: String) -> Value {
    json!({ "href": h, "templated": true })
}

/// Wraps records in HAL with self/next/prev links.
fn collection(
    base: &str,
    path_query: &str,
    page: &Page,
    records: Vec<Value>,
    tokens: (String, String),
) -> Value {
    let order = if page.desc { "desc" } else { "asc" };
    let rev = if page.desc { "asc" } else { "desc" };
    let sep = if path_query.contains('?') { '&' } else { '?' };
    let cur = if page.cursor == 0 || page.cursor == i64::MAX {
        String::new()
    } else {
        page.cursor.to_string()
    };
    json!({
        "_links": {
            "self": href(format!("{base}{path_query}{sep}cursor={cur}&limit={}&order={order}", page.limit)),
            "next": href(format!("{base}{path_query}{sep}cursor={}&limit={}&order={order}", tokens.1, page.limit)),
            "prev": href(format!("{base}{path_query}{sep}cursor={}&limit={}&order={rev}", tokens.0, page.limit)),
        },
        "_embedded": { "records": records },
    })
}

fn first_last(records: &[Value], page: &Page) -> (String, String) {
    let tok = |v: Option<&Value>| {
        v.and_then(|r| r.get("paging_token"))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let fallback = if page.cursor == 0 || page.cursor == i64::MAX {
        String::new()
    } else {
        page.cursor.to_string()
    };
    (
        tok(records.first()).unwrap_or_else(|| fallback.clone()),
        tok(records.last()).unwrap_or(fallback),
    )
}

fn asset_fields(chain: &StellarChain, asset: u8, prefix: &str, out: &mut Map<String, Value>) {
    match chain.asset_code(asset) {
        None => {
            out.insert(format!("{prefix}asset_type"), json!("native"));
        }
        Some(code) => {
            let t = if code.len() <= 4 {
                "credit_alphanum4"
            } else {
                "credit_alphanum12"
            };
            out.insert(format!("{prefix}asset_type"), json!(t));
            out.insert(format!("{prefix}asset_code"), json!(code));
            out.insert(format!("{prefix}asset_issuer"), json!(chain.issuer()));
        }
    }
}

/// One operation as Horizon renders it.
pub fn operation_json(chain: &StellarChain, base: &str, op: &Operation) -> Value {
    let tx = hex(&chain.tx_hash(op));
    let id = op.id;
    let src = &chain.accounts[op.source as usize].id;
    let to = &chain.accounts[op.to as usize].id;
    let mut m = Map::new();
    m.insert(
        "_links".into(),
        json!({
            "self": href(format!("{base}/operations/{id}")),
            "transaction": href(format!("{base}/transactions/{tx}")),
            "effects": href(format!("{base}/operations/{id}/effects")),
            "succeeds": href(format!("{base}/effects?order=desc&cursor={id}")),
            "precedes": href(format!("{base}/effects?order=asc&cursor={id}")),
        }),
    );
    m.insert("id".into(), json!(id.to_string()));
    m.insert("paging_token".into(), json!(id.to_string()));
    m.insert("transaction_successful".into(), json!(true));
    m.insert("source_account".into(), json!(src));
    m.insert("type".into(), json!(op.kind.name()));
    m.insert("type_i".into(), json!(op.kind.type_i()));
    m.insert(
        "created_at".into(),
        json!(rfc3339(chain.ledger_time(op.ledger))),
    );
    m.insert("transaction_hash".into(), json!(tx));
    match op.kind {
        OpKind::CreateAccount => {
            m.insert("starting_balance".into(), json!(amount7(op.amount)));
            m.insert("funder".into(), json!(src));
            m.insert("account".into(), json!(to));
        }
        OpKind::Payment => {
            asset_fields(chain, op.asset, "", &mut m);
            m.insert("from".into(), json!(src));
            m.insert("to".into(), json!(to));
            m.insert("amount".into(), json!(amount7(op.amount)));
        }
        OpKind::ChangeTrust => {
            asset_fields(chain, op.asset, "", &mut m);
            m.insert("limit".into(), json!(amount7(op.amount)));
            m.insert("trustee".into(), json!(chain.issuer()));
            m.insert("trustor".into(), json!(src));
        }
    }
    Value::Object(m)
}

/// One transaction (wrapping one operation) as Horizon renders it.
pub fn transaction_json(chain: &StellarChain, base: &str, op: &Operation) -> Value {
    let hash = hex(&chain.tx_hash(op));
    let token = op.tx_paging_token();
    let src = &chain.accounts[op.source as usize].id;
    let sig = base64(&[bytes32(&[op.id as u64, 1]), bytes32(&[op.id as u64, 2])].concat());
    let mut v = json!({
        "_links": {
            "self": href(format!("{base}/transactions/{hash}")),
            "account": href(format!("{base}/accounts/{src}")),
            "ledger": href(format!("{base}/ledgers/{}", op.ledger)),
            "operations": templated(format!("{base}/transactions/{hash}/operations{{?cursor,limit,order}}")),
            "effects": templated(format!("{base}/transactions/{hash}/effects{{?cursor,limit,order}}")),
            "precedes": href(format!("{base}/transactions?order=asc&cursor={token}")),
            "succeeds": href(format!("{base}/transactions?order=desc&cursor={token}")),
            "transaction": href(format!("{base}/transactions/{hash}")),
        },
        "id": hash,
        "paging_token": token.to_string(),
        "successful": true,
        "hash": hash,
        "ledger": op.ledger,
        "created_at": rfc3339(chain.ledger_time(op.ledger)),
        "source_account": src,
        "source_account_sequence": op.source_sequence.to_string(),
        "fee_account": src,
        "fee_charged": "100",
        "max_fee": "100",
        "operation_count": 1,
        "memo_type": if op.memo.is_some() { "text" } else { "none" },
        "signatures": [sig],
    });
    if let Some(memo) = &op.memo {
        v["memo"] = json!(memo.as_ref());
        v["memo_bytes"] = json!(base64(memo.as_bytes()));
    }
    v
}

/// One account as Horizon renders it.
pub fn account_json(chain: &StellarChain, base: &str, acc: &Account) -> Value {
    let id = &acc.id;
    let mut balances = Vec::new();
    for (a, bal) in acc.balances.iter().enumerate().skip(1) {
        if let Some(b) = bal {
            let mut m = Map::new();
            m.insert("balance".into(), json!(amount7(*b)));
            m.insert("limit".into(), json!(amount7(i64::MAX)));
            m.insert("buying_liabilities".into(), json!("0.0000000"));
            m.insert("selling_liabilities".into(), json!("0.0000000"));
            m.insert(
                "last_modified_ledger".into(),
                json!(acc.balance_modified[a]),
            );
            m.insert("is_authorized".into(), json!(true));
            m.insert("is_authorized_to_maintain_liabilities".into(), json!(true));
            m.insert("is_clawback_enabled".into(), json!(false));
            asset_fields(chain, a as u8, "", &mut m);
            balances.push(Value::Object(m));
        }
    }
    balances.push(json!({
        "balance": amount7(acc.balances[0].unwrap_or(0)),
        "buying_liabilities": "0.0000000",
        "selling_liabilities": "0.0000000",
        "asset_type": "native",
    }));
    let subentries = acc.balances.iter().skip(1).filter(|b| b.is_some()).count();
    json!({
        "_links": {
            "self": href(format!("{base}/accounts/{id}")),
            "transactions": templated(format!("{base}/accounts/{id}/transactions{{?cursor,limit,order}}")),
            "operations": templated(format!("{base}/accounts/{id}/operations{{?cursor,limit,order}}")),
            "payments": templated(format!("{base}/accounts/{id}/payments{{?cursor,limit,order}}")),
            "effects": templated(format!("{base}/accounts/{id}/effects{{?cursor,limit,order}}")),
            "offers": templated(format!("{base}/accounts/{id}/offers{{?cursor,limit,order}}")),
            "trades": templated(format!("{base}/accounts/{id}/trades{{?cursor,limit,order}}")),
            "data": templated(format!("{base}/accounts/{id}/data/{{key}}")),
        },
        "id": id,
        "account_id": id,
        "sequence": acc.sequence.to_string(),
        "sequence_ledger": acc.sequence_ledger,
        "sequence_time": chain.ledger_time(acc.sequence_ledger).to_string(),
        "subentry_count": subentries,
        "last_modified_ledger": acc.last_modified_ledger,
        "last_modified_time": rfc3339(chain.ledger_time(acc.last_modified_ledger)),
        "thresholds": {"low_threshold": 0, "med_threshold": 0, "high_threshold": 0},
        "flags": {
            "auth_required": false,
            "auth_revocable": false,
            "auth_immutable": false,
            "auth_clawback_enabled": false,
        },
        "balances": balances,
        "signers": [{"weight": 1, "key": id, "type": "ed25519_public_key"}],
        "data": {},
        "num_sponsoring": 0,
        "num_sponsored": 0,
        "paging_token": id,
    })
}

fn ledger_json(chain: &StellarChain, base: &str, l: &Ledger) -> Value {
    let seq = l.sequence;
    let hash = hex(&chain.ledger_hash(seq));
    let prev = hex(&chain.ledger_hash(seq.saturating_sub(1)));
    let header = [chain.ledger_hash(seq), chain.ledger_hash(seq + 1_000_000)].concat();
    json!({
        "_links": {
            "self": href(format!("{base}/ledgers/{seq}")),
            "transactions": templated(format!("{base}/ledgers/{seq}/transactions{{?cursor,limit,order}}")),
            "operations": templated(format!("{base}/ledgers/{seq}/operations{{?cursor,limit,order}}")),
            "payments": templated(format!("{base}/ledgers/{seq}/payments{{?cursor,limit,order}}")),
            "effects": templated(format!("{base}/ledgers/{seq}/effects{{?cursor,limit,order}}")),
        },
        "id": hash,
        "paging_token": ((seq as i64) << 32).to_string(),
        "hash": hash,
        "prev_hash": prev,
        "sequence": seq,
        "successful_transaction_count": l.op_count,
        "failed_transaction_count": 0,
        "operation_count": l.op_count,
        "tx_set_operation_count": l.op_count,
        "closed_at": rfc3339(l.closed_at),
        "total_coins": "100000000000.0000000",
        "fee_pool": "0.0000000",
        "base_fee_in_stroops": 100,
        "base_reserve_in_stroops": 5_000_000,
        "max_tx_set_size": 1000,
        "protocol_version": 22,
        "header_xdr": base64(&header),
    })
}

fn base(shared: &Shared) -> String {
    shared.horizon_base.get().cloned().unwrap_or_default()
}

macro_rules! read_chain {
    ($shared:expr) => {
        match $shared.stellar.read() {
            Ok(c) => c,
            Err(_) => return problem(StatusCode::INTERNAL_SERVER_ERROR, None),
        }
    };
}

async fn root(State(shared): State<Arc<Shared>>) -> Response {
    let b = base(&shared);
    let chain = read_chain!(shared);
    let latest = chain.latest_ledger();
    hal(json!({
        "_links": {
            "account": templated(format!("{b}/accounts/{{account_id}}")),
            "ledgers": templated(format!("{b}/ledgers{{?cursor,limit,order}}")),
            "operations": templated(format!("{b}/operations{{?cursor,limit,order,include_failed}}")),
            "payments": templated(format!("{b}/payments{{?cursor,limit,order,include_failed}}")),
            "self": href(format!("{b}/")),
            "trades": templated(format!("{b}/trades{{?base_asset_type,base_asset_code,base_asset_issuer,counter_asset_type,counter_asset_code,counter_asset_issuer}}")),
            "transactions": templated(format!("{b}/transactions{{?cursor,limit,order}}")),
        },
        "horizon_version": "orrery-devnet",
        "core_version": "stellar-core orrery-devnet",
        "ingest_latest_ledger": latest,
        "history_latest_ledger": latest,
        "history_latest_ledger_closed_at": rfc3339(chain.ledger_time(latest)),
        "history_elder_ledger": 1,
        "core_latest_ledger": latest,
        "network_passphrase": "Orrery Devnet ; 2025",
        "current_protocol_version": 22,
        "supported_protocol_version": 22,
        "core_supported_protocol_version": 22,
    }))
}

async fn ledgers(State(shared): State<Arc<Shared>>, Query(q): Params) -> Response {
    let b = base(&shared);
    let chain = read_chain!(shared);
    let now = (chain.latest_ledger() as i64) << 32;
    let page = match parse_page(&q, now) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let idx = select(
        chain.ledgers.len(),
        |i| (chain.ledgers[i].sequence as i64) << 32,
        |_| true,
        &page,
    );
    let records: Vec<Value> = idx
        .iter()
        .map(|&i| ledger_json(&chain, &b, &chain.ledgers[i]))
        .collect();
    let t = first_last(&records, &page);
    hal(collection(&b, "/ledgers", &page, records, t))
}

async fn ledger_one(State(shared): State<Arc<Shared>>, Path(seq): Path<String>) -> Response {
    let b = base(&shared);
    let chain = read_chain!(shared);
    match seq.parse::<usize>() {
        Ok(s) if s >= 1 && s <= chain.ledgers.len() => {
            hal(ledger_json(&chain, &b, &chain.ledgers[s - 1]))
        }
        Ok(_) => problem(StatusCode::NOT_FOUND, None),
        Err(_) => problem(
            StatusCode::BAD_REQUEST,
            Some(("sequence", "sequence: invalid value")),
        ),
    }
}

async fn account_one(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let b = base(&shared);
    let chain = read_chain!(shared);
    match chain.account_index(&id) {
        Ok(i) => hal(account_json(&chain, &b, &chain.accounts[i as usize])),
        Err(_) => problem(StatusCode::NOT_FOUND, None),
    }
}

async fn accounts(State(shared): State<Arc<Shared>>, Query(q): Params) -> Response {
    let b = base(&shared);
    let chain = read_chain!(shared);
    let asset = match (q.get("asset"), q.get("signer")) {
        (Some(a), _) => match chain.asset_index(a) {
            Ok(a) if a > 0 => Some(a),
            _ => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    Some(("asset", "asset: invalid value")),
                )
            }
        },
        (None, Some(_)) => None,
        (None, None) => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some((
                    "signer, sponsor, asset, liquidity_pool",
                    "Exactly one filter is required",
                )),
            )
        }
    };
    let signer = q.get("signer").cloned();
    let desc = q.get("order").is_some_and(|o| o == "desc");
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(("limit", "limit: must be between 1 and 200")),
            )
        }
    };
    let cursor = q.get("cursor").cloned().unwrap_or_default();
    let mut holders: Vec<&Account> = chain
        .accounts
        .iter()
        .filter(|a| a.created_ledger > 1)
        .filter(|a| asset.is_none_or(|x| a.balances[x as usize].is_some()))
        .filter(|a| signer.as_ref().is_none_or(|s| &a.id == s))
        .collect();
    holders.sort_by(|x, y| x.id.cmp(&y.id));
    if desc {
        holders.reverse();
    }
    let records: Vec<Value> = holders
        .into_iter()
        .filter(|a| cursor.is_empty() || if desc { a.id < cursor } else { a.id > cursor })
        .take(limit)
        .map(|a| account_json(&chain, &b, a))
        .collect();
    let tok = |v: Option<&Value>| {
        v.and_then(|r| r["paging_token"].as_str())
            .unwrap_or(&cursor)
            .to_string()
    };
    let (first, last) = (tok(records.first()), tok(records.last()));
    let filter: String = q
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "asset" | "signer"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let order = if desc { "desc" } else { "asc" };
    let rev = if desc { "asc" } else { "desc" };
    hal(json!({
        "_links": {
            "self": href(format!("{b}/accounts?{filter}&cursor={cursor}&limit={limit}&order={order}")),
            "next": href(format!("{b}/accounts?{filter}&cursor={last}&limit={limit}&order={order}")),
            "prev": href(format!("{b}/accounts?{filter}&cursor={first}&limit={limit}&order={rev}")),
        },
        "_embedded": {"records": records},
    }))
}

/// What an operation-like collection lists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OpView {
    Operations,
    Payments,
    Transactions,
}

/// Which operations a collection draws from.
#[derive(Clone)]
enum Scope {
    All,
    Account(String),
    Ledger(String),
    Tx(String),
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

fn op_collection(
    shared: &Shared,
    scope: Scope,
    view: OpView,
    q: &HashMap<String, String>,
) -> Response {
    let b = base(shared);
    let chain = read_chain!(shared);
    let now = chain.ops.last().map_or(0, |o| o.id);
    let page = match parse_page(q, now) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let render = |op: &Operation| match view {
        OpView::Transactions => transaction_json(&chain, &b, op),
        _ => operation_json(&chain, &b, op),
    };
    let keep_op = |op: &Operation| view != OpView::Payments || op.is_payment();
    let tx_id = |op: &Operation| match view {
        OpView::Transactions => op.tx_paging_token(),
        _ => op.id,
    };
    // The candidate operations: `len` positions mapped to operation indices.
    let empty: &[u32] = &[];
    let (list, range): (&[u32], std::ops::Range<usize>) = match &scope {
        Scope::All => (empty, 0..chain.ops.len()),
        Scope::Account(id) => match chain.account_index(id) {
            Ok(ai) => (&chain.accounts[ai as usize].ops, 0..0),
            Err(_) => return problem(StatusCode::NOT_FOUND, None),
        },
        Scope::Ledger(seq) => match seq.parse::<usize>() {
            Ok(s) if s >= 1 && s <= chain.ledgers.len() => {
                let l = &chain.ledgers[s - 1];
                (
                    empty,
                    l.first_op as usize..(l.first_op + l.op_count) as usize,
                )
            }
            Ok(_) => return problem(StatusCode::NOT_FOUND, None),
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    Some(("sequence", "sequence: invalid value")),
                )
            }
        },
        Scope::Tx(hash) => match parse_hash(hash).and_then(|h| chain.op_index_by_tx_hash(&h)) {
            Some(i) => (empty, i..i + 1),
            None => return problem(StatusCode::NOT_FOUND, None),
        },
    };
    let by_list = matches!(scope, Scope::Account(_));
    let len = if by_list { list.len() } else { range.len() };
    let at = |i: usize| {
        if by_list {
            list[i] as usize
        } else {
            range.start + i
        }
    };
    let records: Vec<Value> = select(
        len,
        |i| tx_id(&chain.ops[at(i)]),
        |i| keep_op(&chain.ops[at(i)]),
        &page,
    )
    .into_iter()
    .map(|i| render(&chain.ops[at(i)]))
    .collect();
    let name = match view {
        OpView::Operations => "operations",
        OpView::Payments => "payments",
        OpView::Transactions => "transactions",
    };
    let path = match &scope {
        Scope::All => format!("/{name}"),
        Scope::Account(id) => format!("/accounts/{id}/{name}"),
        Scope::Ledger(seq) => format!("/ledgers/{seq}/{name}"),
        Scope::Tx(hash) => format!("/transactions/{hash}/{name}"),
    };
    let t = first_last(&records, &page);
    hal(collection(&b, &path, &page, records, t))
}

async fn transaction_one(State(shared): State<Arc<Shared>>, Path(hash): Path<String>) -> Response {
    let b = base(&shared);
    let chain = read_chain!(shared);
    match parse_hash(&hash).and_then(|h| chain.op_index_by_tx_hash(&h)) {
        Some(i) => hal(transaction_json(&chain, &b, &chain.ops[i])),
        None => problem(StatusCode::NOT_FOUND, None),
    }
}

async fn transaction_operations(
    State(shared): State<Arc<Shared>>,
    Path(hash): Path<String>,
    Query(q): Params,
) -> Response {
    op_collection(&shared, Scope::Tx(hash), OpView::Operations, &q)
}

async fn transaction_payments(
    State(shared): State<Arc<Shared>>,
    Path(hash): Path<String>,
    Query(q): Params,
) -> Response {
    op_collection(&shared, Scope::Tx(hash), OpView::Payments, &q)
}

async fn ledger_operations(
    State(shared): State<Arc<Shared>>,
    Path(seq): Path<String>,
    Query(q): Params,
) -> Response {
    op_collection(&shared, Scope::Ledger(seq), OpView::Operations, &q)
}

async fn ledger_payments(
    State(shared): State<Arc<Shared>>,
    Path(seq): Path<String>,
    Query(q): Params,
) -> Response {
    op_collection(&shared, Scope::Ledger(seq), OpView::Payments, &q)
}

async fn ledger_transactions(
    State(shared): State<Arc<Shared>>,
    Path(seq): Path<String>,
    Query(q): Params,
) -> Response {
    op_collection(&shared, Scope::Ledger(seq), OpView::Transactions, &q)
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

async fn account_operations(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if wants_sse(&headers) {
        return super::sse::stream(shared, Some(id), false, &q);
    }
    op_collection(&shared, Scope::Account(id), OpView::Operations, &q)
}

async fn account_payments(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if wants_sse(&headers) {
        return super::sse::stream(shared, Some(id), true, &q);
    }
    op_collection(&shared, Scope::Account(id), OpView::Payments, &q)
}

async fn account_transactions(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    op_collection(&shared, Scope::Account(id), OpView::Transactions, &q)
}

async fn operations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if wants_sse(&headers) {
        return super::sse::stream(shared, None, false, &q);
    }
    op_collection(&shared, Scope::All, OpView::Operations, &q)
}

async fn payments(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    if wants_sse(&headers) {
        return super::sse::stream(shared, None, true, &q);
    }
    op_collection(&shared, Scope::All, OpView::Payments, &q)
}

async fn transactions(State(shared): State<Arc<Shared>>, Query(q): Params) -> Response {
    op_collection(&shared, Scope::All, OpView::Transactions, &q)
}

async fn operation_one(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let b = base(&shared);
    let chain = read_chain!(shared);
    let Ok(id) = id.parse::<i64>() else {
        return problem(StatusCode::BAD_REQUEST, Some(("id", "id: invalid value")));
    };
    match chain.ops.binary_search_by_key(&id, |o| o.id) {
        Ok(i) => hal(operation_json(&chain, &b, &chain.ops[i])),
        Err(_) => problem(StatusCode::NOT_FOUND, None),
    }
}

/// Pair orientation requested by trade filters: Some(false) = XLM/asset,
/// Some(true) = asset/XLM, None = a pair devnet does not trade.
fn pair_orientation(chain: &StellarChain, q: &HashMap<String, String>) -> Option<bool> {
    let side = |p: &str| -> Option<u8> {
        match q.get(&format!("{p}_asset_type")).map(String::as_str) {
            None => Some(255),
            Some("native") => Some(0),
            Some(_) => {
                let code = q.get(&format!("{p}_asset_code"))?;
                let issuer = q.get(&format!("{p}_asset_issuer"))?;
                chain.asset_index(&format!("{code}:{issuer}")).ok()
            }
        }
    };
    match (side("base")?, side("counter")?) {
        (255, 255) | (0, 1) | (0, 255) | (255, 1) => Some(false),
        (1, 0) | (1, 255) | (255, 0) => Some(true),
        _ => None,
    }
}

fn trade_json(chain: &StellarChain, base: &str, t: &Trade, reversed: bool) -> Value {
    let op_id = t.id.split('-').next().unwrap_or("0");
    let (mut b_acc, mut c_acc, mut b_amt, mut c_amt) = (
        &t.base_account,
        &t.counter_account,
        t.base_amount,
        t.counter_amount,
    );
    let (mut b_asset, mut c_asset) = (0u8, 1u8);
    let mut seller = t.base_is_seller;
    if reversed {
        std::mem::swap(&mut b_acc, &mut c_acc);
        std::mem::swap(&mut b_amt, &mut c_amt);
        std::mem::swap(&mut b_asset, &mut c_asset);
        seller = !seller;
    }
    let g = gcd(c_amt as u64, b_amt as u64).max(1);
    let mut m = Map::new();
    m.insert(
        "_links".into(),
        json!({
            "self": href(String::new()),
            "base": href(format!("{base}/accounts/{b_acc}")),
            "counter": href(format!("{base}/accounts/{c_acc}")),
            "operation": href(format!("{base}/operations/{op_id}")),
        }),
    );
    m.insert("id".into(), json!(t.id));
    m.insert("paging_token".into(), json!(t.id));
    m.insert("ledger_close_time".into(), json!(rfc3339(t.time)));
    m.insert("trade_type".into(), json!("orderbook"));
    m.insert(
        "base_offer_id".into(),
        json!((t.ledger as u64 * 7 + 1).to_string()),
    );
    m.insert("base_account".into(), json!(b_acc));
    m.insert("base_amount".into(), json!(amount7(b_amt)));
    asset_fields(chain, b_asset, "base_", &mut m);
    m.insert(
        "counter_offer_id".into(),
        json!((t.ledger as u64 * 7 + 2).to_string()),
    );
    m.insert("counter_account".into(), json!(c_acc));
    m.insert("counter_amount".into(), json!(amount7(c_amt)));
    asset_fields(chain, c_asset, "counter_", &mut m);
    m.insert("base_is_seller".into(), json!(seller));
    m.insert(
        "price".into(),
        json!({"n": (c_amt as u64 / g).to_string(), "d": (b_amt as u64 / g).to_string()}),
    );
    Value::Object(m)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

async fn trades(State(shared): State<Arc<Shared>>, Query(q): Params) -> Response {
    trades_for(&shared, None, &q)
}

async fn account_trades(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    trades_for(&shared, Some(&id), &q)
}

fn trades_for(shared: &Shared, account: Option<&str>, q: &HashMap<String, String>) -> Response {
    let b = base(shared);
    let chain = read_chain!(shared);
    let latest = chain.latest_ledger();
    let page = match parse_page(q, (latest as i64 + 1) << 32) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let Some(id) = account {
        if !chain.market_makers.iter().any(|m| m == id) && chain.account_index(id).is_err() {
            return problem(StatusCode::NOT_FOUND, None);
        }
    }
    let reversed = pair_orientation(&chain, q);
    let mut records = Vec::new();
    if let Some(rev) = reversed {
        let start = ((page.cursor >> 32) as u32).clamp(1, latest + 1);
        let mut ledger = if page.desc { start.min(latest) } else { start };
        while records.len() < page.limit && ledger >= 1 && ledger <= latest {
            let mut ts = chain.trades_in_ledger(ledger);
            if page.desc {
                ts.reverse();
            }
            for t in ts {
                let op: i64 =
                    t.id.split('-')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                let after = if page.desc {
                    op < page.cursor
                } else {
                    op > page.cursor
                };
                let mine = account.is_none_or(|a| t.base_account == a || t.counter_account == a);
                if after && mine && records.len() < page.limit {
                    records.push(trade_json(&chain, &b, &t, rev));
                }
            }
            ledger = if page.desc { ledger - 1 } else { ledger + 1 };
        }
    }
    let t = first_last(&records, &page);
    let path = match account {
        Some(id) => format!("/accounts/{id}/trades"),
        None => "/trades".to_string(),
    };
    hal(collection(&b, &path, &page, records, t))
}

const RESOLUTIONS: [i64; 6] = [60_000, 300_000, 900_000, 3_600_000, 86_400_000, 604_800_000];

async fn trade_aggregations(State(shared): State<Arc<Shared>>, Query(q): Params) -> Response {
    let b = base(&shared);
    let chain = read_chain!(shared);
    let num = |k: &str| q.get(k).map(|v| v.parse::<i64>());
    let resolution = match num("resolution") {
        Some(Ok(r)) if RESOLUTIONS.contains(&r) => r,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(("resolution", "resolution: invalid value")),
            )
        }
    };
    let start = match num("start_time") {
        None => 0,
        Some(Ok(s)) if s >= 0 => s - s % resolution,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(("start_time", "start_time: invalid value")),
            )
        }
    };
    let end = match num("end_time") {
        None => i64::MAX / 2,
        Some(Ok(e)) if e >= start => e,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(("end_time", "end_time: invalid value")),
            )
        }
    };
    let limit = match num("limit") {
        None => 200,
        Some(Ok(l)) if (1..=200).contains(&l) => l as usize,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(("limit", "limit: must be between 1 and 200")),
            )
        }
    };
    if !q.contains_key("base_asset_type") || !q.contains_key("counter_asset_type") {
        return problem(
            StatusCode::BAD_REQUEST,
            Some(("base_asset_type", "asset pair required")),
        );
    }
    let reversed = pair_orientation(&chain, &q);
    let latest = chain.latest_ledger();
    let mut buckets: Vec<(i64, Vec<(i64, i64)>)> = Vec::new();
    if let Some(rev) = reversed {
        let first_ledger =
            ((start / 1000 - chain.config.genesis_time) / super::model::LEDGER_SECONDS + 1).max(2)
                as u32;
        let mut ledger = first_ledger;
        while ledger <= latest {
            let t_ms = chain.ledger_time(ledger) * 1000;
            if t_ms >= end {
                break;
            }
            if t_ms >= start {
                let bucket = t_ms - (t_ms - start) % resolution;
                for t in chain.trades_in_ledger(ledger) {
                    let (ba, ca) = if rev {
                        (t.counter_amount, t.base_amount)
                    } else {
                        (t.base_amount, t.counter_amount)
                    };
                    match buckets.last_mut() {
                        Some((ts, v)) if *ts == bucket => v.push((ba, ca)),
                        _ => {
                            if buckets.len() == limit {
                                break;
                            }
                            buckets.push((bucket, vec![(ba, ca)]));
                        }
                    }
                }
            }
            ledger += 1;
        }
    }
    let records: Vec<Value> = buckets
        .iter()
        .map(|(ts, v)| aggregation_json(*ts, v))
        .collect();
    let next_start = buckets
        .last()
        .map_or(end.min(i64::MAX / 2), |(ts, _)| ts + resolution);
    let pair: String = [
        "base_asset_type",
        "base_asset_code",
        "base_asset_issuer",
        "counter_asset_type",
        "counter_asset_code",
        "counter_asset_issuer",
    ]
    .iter()
    .filter_map(|k| q.get(*k).map(|v| format!("{k}={v}")))
    .collect::<Vec<_>>()
    .join("&");
    let end_s = if end == i64::MAX / 2 {
        String::new()
    } else {
        format!("&end_time={end}")
    };
    hal(json!({
        "_links": {
            "self": href(format!("{b}/trade_aggregations?{pair}&limit={limit}&order=asc&resolution={resolution}&start_time={start}{end_s}")),
            "next": href(format!("{b}/trade_aggregations?{pair}{end_s}&limit={limit}&order=asc&resolution={resolution}&start_time={next_start}")),
            "prev": href(format!("{b}/trade_aggregations?{pair}&limit={limit}&order=asc&resolution={resolution}&start_time={start}{end_s}")),
        },
        "_embedded": {"records": records},
    }))
}

fn price_str(counter: i64, base: i64) -> String {
    // Seven decimals, computed with integers.
    let v = (counter as i128 * STROOPS as i128) / base.max(1) as i128;
    amount7(v as i64)
}

fn ratio(counter: i64, base: i64) -> Value {
    let g = gcd(counter as u64, base as u64).max(1);
    json!({"n": (counter as u64 / g).to_string(), "d": (base as u64 / g).to_string()})
}

fn aggregation_json(ts: i64, trades: &[(i64, i64)]) -> Value {
    let base_vol: i64 = trades.iter().map(|t| t.0).sum();
    let counter_vol: i64 = trades.iter().map(|t| t.1).sum();
    let price = |t: &(i64, i64)| t.1 as f64 / t.0 as f64;
    let (mut hi, mut lo) = (trades[0], trades[0]);
    for t in trades {
        if price(t) > price(&hi) {
            hi = *t;
        }
        if price(t) < price(&lo) {
            lo = *t;
        }
    }
    let open = trades[0];
    let close = trades[trades.len() - 1];
    json!({
        "timestamp": ts.to_string(),
        "trade_count": trades.len().to_string(),
        "base_volume": amount7(base_vol),
        "counter_volume": amount7(counter_vol),
        "avg": price_str(counter_vol, base_vol),
        "high": price_str(hi.1, hi.0),
        "high_r": ratio(hi.1, hi.0),
        "low": price_str(lo.1, lo.0),
        "low_r": ratio(lo.1, lo.0),
        "open": price_str(open.1, open.0),
        "open_r": ratio(open.1, open.0),
        "close": price_str(close.1, close.0),
        "close_r": ratio(close.1, close.0),
    })
}
