//! Stellar RPC (JSON-RPC 2.0, `POST /rpc` on the Horizon port) served from the same seeded
//! ledger model as devnet's Horizon, with base64 XDR built by SDF's `stellar-xdr` crate.
//!
//! Methods: `getHealth`, `getNetwork`, `getLatestLedger`, `getEvents` (CAP-67 SAC token
//! events: a `fee` event per transaction when `fee_stroops` is set, `transfer` / `mint` /
//! `burn` per payment and account creation), `getLedgerEntries` (account and trustline
//! entries), `getTransactions` (envelope, result and meta V4 with the account and trustline
//! ledger entry changes, see [`super::rpc_meta`]; DEX trades included) and
//! `getLedgers` (header and close meta V2), see [`ledgers`]. With `rpc_classic_events = false` (a Core
//! without `EMIT_CLASSIC_EVENTS`) no classic token events are emitted anywhere. Limits and errors follow
//! stellar-rpc: `pagination.limit` <= 10,000 events (200 transactions), <= 5 filters of
//! <= 5 contract ids, `cursor` and `startLedger` never together, -32600 for a start ledger
//! outside the retention window (`rpc_retention_ledgers`), -32602 for bad params, -32601
//! for unknown methods, -32700 for unparsable JSON. `getEvents` scans at most
//! `rpc_scan_ledgers` ledgers per call and returns a cursor even when it found nothing.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountEntry, AccountEntryExt, AccountId, AlphaNum12, AlphaNum4, Asset, AssetCode12,
    AssetCode4, ChangeTrustAsset, ChangeTrustOp, ChangeTrustResult, ContractEvent,
    ContractEventBody, ContractEventType, ContractEventV0, ContractId, ContractIdPreimage,
    CreateAccountOp, CreateAccountResult, ExtensionPoint, Hash, HashIdPreimage,
    HashIdPreimageContractId, Int128Parts, LedgerEntryData, LedgerHeader, LedgerHeaderExt,
    LedgerKey, Limits, Memo, MuxedAccount, Operation as XdrOp, OperationBody, OperationMetaV2,
    OperationResult, OperationResultTr, PaymentOp, PaymentResult, Preconditions, PublicKey,
    ReadXdr, ScAddress, ScString, ScSymbol, ScVal, SequenceNumber, StellarValue, StellarValueExt,
    String32, Thresholds, TimePoint, Transaction, TransactionEnvelope, TransactionEvent,
    TransactionEventStage, TransactionExt, TransactionMeta, TransactionMetaV4, TransactionResult,
    TransactionResultExt, TransactionResultResult, TransactionV1Envelope, TrustLineAsset,
    TrustLineEntry, TrustLineEntryExt, Uint256, WriteXdr,
};

mod ledgers;
pub use ledgers::close_meta;

use super::model::{OpKind, Operation, StellarChain, ISSUER};
use crate::control::Shared;

/// The devnet's network passphrase (SAC contract ids derive from it).
pub const PASSPHRASE: &str = "Orrery Devnet ; January 2025";
/// Protocol version announced (CAP-67 events exist from 23 on; XDR of protocol 27).
pub const PROTOCOL_VERSION: u32 = 27;
/// Largest `getEvents` page.
pub const MAX_EVENTS_LIMIT: u64 = 10_000;
/// Largest `getTransactions` / `getLedgers` page.
pub const MAX_PAGE_LIMIT: u64 = 200;
/// Most filters per `getEvents` call.
pub const MAX_FILTERS: usize = 5;
/// Most contract ids per filter.
pub const MAX_CONTRACT_IDS: usize = 5;
/// Transaction order of the ledger-level "before all transactions" fee events.
const FEE_TX: i64 = 0;
/// Transaction order of the "after all transactions" refund events.
const REFUND_TX: i64 = 0xFFFFF;

/// A JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcFailure {
    /// JSON-RPC code.
    pub code: i64,
    /// Message.
    pub message: String,
}

fn invalid_params(m: impl Into<String>) -> RpcFailure {
    RpcFailure {
        code: -32602,
        message: m.into(),
    }
}

/// State of the RPC service: the shared chain plus derived constants.
pub struct RpcState {
    shared: Arc<Shared>,
    /// Account ed25519 keys by index (filled on first use; accounts never change).
    keys: OnceLock<Vec<[u8; 32]>>,
    /// Per asset index (0 = native): XDR asset, SEP-11 string, SAC contract id.
    assets: OnceLock<Vec<(Asset, String, [u8; 32])>>,
    /// Ledger entry changes of the transactions (their meta).
    meta: super::rpc_meta::MetaCache,
}

/// The `/rpc` router.
pub fn router(shared: Arc<Shared>) -> Router {
    let state = Arc::new(RpcState::new(shared));
    Router::new().route("/rpc", post(handle)).with_state(state)
}

impl RpcState {
    /// The state over `shared` (also used by the data-lake writer).
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            keys: OnceLock::new(),
            assets: OnceLock::new(),
            meta: Default::default(),
        }
    }
}

/// SAC contract id of `asset` on the devnet network.
pub fn sac_contract_id(asset: &Asset) -> [u8; 32] {
    let network: [u8; 32] = Sha256::digest(PASSPHRASE.as_bytes()).into();
    let preimage = HashIdPreimage::ContractId(HashIdPreimageContractId {
        network_id: Hash(network),
        contract_id_preimage: ContractIdPreimage::Asset(asset.clone()),
    });
    let bytes = preimage.to_xdr(Limits::none()).unwrap_or_default();
    Sha256::digest(bytes).into()
}

fn key_of(strkey: &str) -> [u8; 32] {
    match stellar_strkey::ed25519::PublicKey::from_string(strkey) {
        Ok(k) => k.0,
        Err(_) => [0; 32],
    }
}

fn account_id(key: [u8; 32]) -> AccountId {
    AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key)))
}

fn b64<T: WriteXdr>(v: &T) -> String {
    v.to_xdr_base64(Limits::none()).unwrap_or_default()
}

fn sym(s: &str) -> ScVal {
    ScVal::Symbol(ScSymbol(s.try_into().unwrap_or_default()))
}

fn i128v(n: i64) -> ScVal {
    let n = i128::from(n);
    ScVal::I128(Int128Parts {
        hi: (n >> 64) as i64,
        lo: n as u64,
    })
}

fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// One generated event before rendering.
struct Ev {
    toid: i64,
    index: u32,
    asset: u8,
    topics: Vec<ScVal>,
    data: ScVal,
    op: usize,
}

impl RpcState {
    fn keys(&self, chain: &StellarChain) -> &Vec<[u8; 32]> {
        self.keys
            .get_or_init(|| chain.accounts.iter().map(|a| key_of(&a.id)).collect())
    }

    fn assets(&self, chain: &StellarChain) -> &Vec<(Asset, String, [u8; 32])> {
        self.assets.get_or_init(|| {
            let issuer = account_id(key_of(chain.issuer()));
            let mut out = vec![(Asset::Native, "native".to_string(), [0; 32])];
            for code in &chain.config.asset_codes {
                let b = code.as_bytes();
                let asset = if b.len() <= 4 {
                    let mut c = [0u8; 4];
                    c[..b.len()].copy_from_slice(b);
                    Asset::CreditAlphanum4(AlphaNum4 {
                        asset_code: AssetCode4(c),
                        issuer: issuer.clone(),
                    })
                } else {
                    let mut c = [0u8; 12];
                    c[..b.len()].copy_from_slice(b);
                    Asset::CreditAlphanum12(AlphaNum12 {
                        asset_code: AssetCode12(c),
                        issuer: issuer.clone(),
                    })
                };
                out.push((asset, format!("{code}:{}", chain.issuer()), [0; 32]));
            }
            for a in &mut out {
                a.2 = sac_contract_id(&a.0);
            }
            out
        })
    }

    fn addr(&self, chain: &StellarChain, account: u32) -> ScVal {
        let key = self.keys(chain)[account as usize];
        ScVal::Address(ScAddress::Account(account_id(key)))
    }

    fn asset_str(&self, chain: &StellarChain, asset: u8) -> ScVal {
        let s = &self.assets(chain)[asset as usize].1;
        ScVal::String(ScString(s.as_str().try_into().unwrap_or_default()))
    }

    /// The token events of one operation (index `i`): its transfer/mint/burn.
    fn op_events(&self, chain: &StellarChain, i: usize, op: &Operation) -> Option<Ev> {
        let toid = op.id & !0xfff;
        let (topics, asset) = match op.kind {
            OpKind::ChangeTrust => return None,
            OpKind::CreateAccount => (
                vec![
                    sym("transfer"),
                    self.addr(chain, op.source),
                    self.addr(chain, op.to),
                    self.asset_str(chain, 0),
                ],
                0,
            ),
            OpKind::Payment if op.asset != 0 && op.source == ISSUER => (
                vec![
                    sym("mint"),
                    self.addr(chain, op.to),
                    self.asset_str(chain, op.asset),
                ],
                op.asset,
            ),
            OpKind::Payment if op.asset != 0 && op.to == ISSUER => (
                vec![
                    sym("burn"),
                    self.addr(chain, op.source),
                    self.asset_str(chain, op.asset),
                ],
                op.asset,
            ),
            OpKind::Payment => (
                vec![
                    sym("transfer"),
                    self.addr(chain, op.source),
                    self.addr(chain, op.to),
                    self.asset_str(chain, op.asset),
                ],
                op.asset,
            ),
        };
        Some(Ev {
            toid,
            index: 0,
            asset,
            topics,
            data: i128v(op.amount),
            op: i,
        })
    }

    /// Fee charged for a transaction: every seventh is charged twice and refunded once.
    fn fee_parts(chain: &StellarChain, op: &Operation) -> Option<(i64, Option<i64>)> {
        let fee = chain.config.fee_stroops;
        if fee <= 0 {
            return None;
        }
        let order = (op.id >> 12) & 0xfffff;
        Some(if order % 7 == 0 {
            (2 * fee, Some(-fee))
        } else {
            (fee, None)
        })
    }

    /// Every token event of `ledger`, in id order.
    fn ledger_events(&self, chain: &StellarChain, ledger: u32) -> Vec<Ev> {
        let Some(l) = chain.ledgers.get(ledger as usize - 1) else {
            return Vec::new();
        };
        // Every devnet movement is classic: without classic events there are none.
        if !chain.config.rpc_classic_events {
            return Vec::new();
        }
        let range = l.first_op as usize..(l.first_op + l.op_count) as usize;
        let base = i64::from(ledger) << 32;
        let mut out = Vec::new();
        let mut refunds = Vec::new();
        for (n, i) in range.enumerate() {
            let op = &chain.ops[i];
            if let Some((charge, refund)) = Self::fee_parts(chain, op) {
                let from = self.addr(chain, op.source);
                out.push(Ev {
                    toid: base | (FEE_TX << 12),
                    index: n as u32,
                    asset: 0,
                    topics: vec![sym("fee"), from.clone()],
                    data: i128v(charge),
                    op: i,
                });
                if let Some(r) = refund {
                    refunds.push((i, from, r));
                }
            }
        }
        for i in l.first_op as usize..(l.first_op + l.op_count) as usize {
            if let Some(e) = self.op_events(chain, i, &chain.ops[i]) {
                out.push(e);
            }
        }
        for (n, (i, from, r)) in refunds.into_iter().enumerate() {
            out.push(Ev {
                toid: base | (REFUND_TX << 12),
                index: n as u32,
                asset: 0,
                topics: vec![sym("fee"), from],
                data: i128v(r),
                op: i,
            });
        }
        out
    }

    fn window(&self, chain: &StellarChain) -> (u32, u32) {
        let latest = chain.latest_ledger();
        let oldest = match chain.config.rpc_retention_ledgers {
            Some(w) => latest.saturating_sub(w - 1).max(1),
            None => 1,
        };
        (oldest, latest)
    }
}

async fn handle(State(state): State<Arc<RpcState>>, body: Bytes) -> Json<Value> {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Json(error_json(
                Value::Null,
                -32700,
                &format!("parse error: {e}"),
            ))
        }
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = req.get("method").and_then(Value::as_str) else {
        return Json(error_json(id, -32600, "invalid request: no method"));
    };
    let params = req.get("params").cloned().unwrap_or(Value::Null);
    let chain = match state.shared.stellar.read() {
        Ok(c) => c,
        Err(_) => {
            return Json(error_json(
                id,
                -32603,
                "internal error: chain lock poisoned",
            ))
        }
    };
    let out = match method {
        "getHealth" => Ok(health(&state, &chain)),
        "getNetwork" => Ok(json!({"passphrase": PASSPHRASE, "protocolVersion": PROTOCOL_VERSION})),
        "getLatestLedger" => Ok(latest_ledger(&chain)),
        "getEvents" => get_events(&state, &chain, &params),
        "getLedgerEntries" => get_ledger_entries(&state, &chain, &params),
        "getTransactions" => ledgers::get_transactions(&state, &chain, &params),
        "getLedgers" => ledgers::get_ledgers(&state, &chain, &params),
        other => Err(RpcFailure {
            code: -32601,
            message: format!("method not found: {other}"),
        }),
    };
    Json(match out {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(f) => error_json(id, f.code, &f.message),
    })
}

fn error_json(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn health(state: &RpcState, chain: &StellarChain) -> Value {
    let (oldest, latest) = state.window(chain);
    json!({
        "status": "healthy",
        "latestLedger": latest,
        "latestLedgerCloseTime": chain.ledger_time(latest).to_string(),
        "oldestLedger": oldest,
        "oldestLedgerCloseTime": chain.ledger_time(oldest).to_string(),
        "ledgerRetentionWindow": latest - oldest + 1,
    })
}

/// The ledger header devnet reports for `ledger`.
pub fn ledger_header(chain: &StellarChain, ledger: u32) -> LedgerHeader {
    LedgerHeader {
        ledger_version: PROTOCOL_VERSION,
        previous_ledger_hash: Hash(if ledger > 1 {
            chain.ledger_hash(ledger - 1)
        } else {
            [0; 32]
        }),
        scp_value: StellarValue {
            tx_set_hash: Hash([0; 32]),
            close_time: TimePoint(chain.ledger_time(ledger) as u64),
            upgrades: Default::default(),
            ext: StellarValueExt::Basic,
        },
        tx_set_result_hash: Hash([0; 32]),
        bucket_list_hash: Hash([0; 32]),
        ledger_seq: ledger,
        total_coins: 100_000_000_000 * super::model::STROOPS,
        fee_pool: 0,
        inflation_seq: 0,
        id_pool: 0,
        base_fee: chain.config.fee_stroops.clamp(0, u32::MAX as i64) as u32,
        base_reserve: 5_000_000,
        max_tx_set_size: 1000,
        skip_list: [Hash([0; 32]), Hash([0; 32]), Hash([0; 32]), Hash([0; 32])],
        ext: LedgerHeaderExt::V0,
    }
}

fn latest_ledger(chain: &StellarChain) -> Value {
    let seq = chain.latest_ledger();
    json!({
        "id": hex_of(&chain.ledger_hash(seq)),
        "protocolVersion": PROTOCOL_VERSION,
        "sequence": seq,
        "closeTime": chain.ledger_time(seq).to_string(),
        "headerXdr": b64(&ledger_header(chain, seq)),
    })
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `(startLedger | cursor, limit)` of a paged request.
enum From {
    Ledger(u32),
    After(i64, u32),
}

fn paging(params: &Value, default: u64, max: u64) -> Result<(From, usize), RpcFailure> {
    let start = params.get("startLedger");
    let pagination = params.get("pagination");
    let cursor = pagination.and_then(|p| p.get("cursor"));
    let limit = match pagination.and_then(|p| p.get("limit")) {
        None | Some(Value::Null) => default,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid_params("pagination.limit must be a positive integer"))?,
    };
    if limit == 0 || limit > max {
        return Err(invalid_params(format!("limit must not exceed {max}")));
    }
    let from = match (start, cursor) {
        (Some(s), Some(_)) if !s.is_null() => {
            return Err(invalid_params("startLedger and cursor cannot both be set"))
        }
        (_, Some(c)) => {
            let c = c
                .as_str()
                .ok_or_else(|| invalid_params("cursor must be a string"))?;
            let (toid, index) = parse_cursor(c)?;
            From::After(toid, index)
        }
        (Some(s), None) => From::Ledger(
            s.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid_params("startLedger must be a positive integer"))?,
        ),
        (None, None) => return Err(invalid_params("startLedger must be positive")),
    };
    Ok((from, limit as usize))
}

/// `<TOID>-<index>` (events) or a bare TOID (transactions).
fn parse_cursor(c: &str) -> Result<(i64, u32), RpcFailure> {
    let bad = || invalid_params(format!("invalid cursor {c:?}"));
    match c.split_once('-') {
        Some((t, i)) => Ok((t.parse().map_err(|_| bad())?, i.parse().map_err(|_| bad())?)),
        None => Ok((c.parse().map_err(|_| bad())?, u32::MAX)),
    }
}

fn check_start(state: &RpcState, chain: &StellarChain, ledger: u32) -> Result<(), RpcFailure> {
    let (oldest, latest) = state.window(chain);
    if ledger < oldest || ledger > latest {
        return Err(RpcFailure {
            code: -32600,
            message: format!("startLedger must be within the ledger range: {oldest} - {latest}"),
        });
    }
    Ok(())
}

/// A parsed `getEvents` filter.
struct Filter {
    type_: Option<String>,
    contracts: Vec<[u8; 32]>,
    topics: Vec<Vec<String>>,
}

fn filters(params: &Value) -> Result<Vec<Filter>, RpcFailure> {
    let list = match params.get("filters") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid_params("filters must be an array")),
    };
    if list.len() > MAX_FILTERS {
        return Err(invalid_params(format!(
            "maximum {MAX_FILTERS} filters per request"
        )));
    }
    let mut out = Vec::new();
    for f in list {
        let type_ = f.get("type").and_then(Value::as_str).map(str::to_string);
        if let Some(t) = &type_ {
            if !matches!(t.as_str(), "contract" | "system") {
                return Err(invalid_params(format!("invalid event type {t:?}")));
            }
        }
        let ids: Vec<&str> = match f.get("contractIds") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(invalid_params("contractIds must be an array")),
        };
        if ids.len() > MAX_CONTRACT_IDS {
            return Err(invalid_params(format!(
                "maximum {MAX_CONTRACT_IDS} contract IDs per filter"
            )));
        }
        let mut contracts = Vec::new();
        for id in ids {
            match stellar_strkey::Contract::from_string(id) {
                Ok(c) => contracts.push(c.0),
                Err(_) => return Err(invalid_params(format!("contract id {id} is invalid"))),
            }
        }
        let topics = match f.get("topics") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value::<Vec<Vec<String>>>(v.clone())
                .map_err(|_| invalid_params("topics must be arrays of strings"))?,
        };
        out.push(Filter {
            type_,
            contracts,
            topics,
        });
    }
    Ok(out)
}

fn matches(filters: &[Filter], contract: &[u8; 32], topics: &[String]) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| {
            f.type_.as_deref().is_none_or(|t| t == "contract")
                && (f.contracts.is_empty() || f.contracts.contains(contract))
                && (f.topics.is_empty()
                    || f.topics.iter().any(|segs| {
                        let mut i = 0;
                        for s in segs {
                            if s == "**" {
                                return true;
                            }
                            match topics.get(i) {
                                Some(t) if s == "*" || s == t => i += 1,
                                _ => return false,
                            }
                        }
                        i == topics.len()
                    }))
        })
}

fn get_events(state: &RpcState, chain: &StellarChain, params: &Value) -> Result<Value, RpcFailure> {
    let (from, limit) = paging(params, 100, MAX_EVENTS_LIMIT)?;
    let filters = filters(params)?;
    let (oldest, latest) = state.window(chain);
    let (start, after) = match from {
        From::Ledger(l) => {
            check_start(state, chain, l)?;
            (l, None)
        }
        From::After(toid, index) => {
            let l = u32::try_from(toid >> 32).unwrap_or(u32::MAX);
            if l < oldest {
                return Err(RpcFailure {
                    code: -32600,
                    message: format!("cursor is before the ledger range: {oldest} - {latest}"),
                });
            }
            (l, Some((toid, index)))
        }
    };
    let assets = state.assets(chain);
    let end = latest.min(start.saturating_add(chain.config.rpc_scan_ledgers - 1));
    let mut events = Vec::new();
    let mut last_id = None;
    'scan: for ledger in start..=end {
        let closed = rfc3339(chain.ledger_time(ledger));
        for e in state.ledger_events(chain, ledger) {
            if after.is_some_and(|a| (e.toid, e.index) <= a) {
                continue;
            }
            let contract = &assets[e.asset as usize].2;
            let topics: Vec<String> = e.topics.iter().map(b64).collect();
            if !matches(&filters, contract, &topics) {
                continue;
            }
            let op = &chain.ops[e.op];
            let id = format!("{:019}-{:010}", e.toid, e.index);
            events.push(json!({
                "type": "contract",
                "ledger": ledger,
                "ledgerClosedAt": closed,
                "contractId": stellar_strkey::Contract(*contract).to_string(),
                "id": id,
                "operationIndex": 0,
                "transactionIndex": (e.toid >> 12) & 0xfffff,
                "txHash": hex_of(&chain.tx_hash(op)),
                "inSuccessfulContractCall": true,
                "topic": topics,
                "value": b64(&e.data),
            }));
            last_id = Some(id);
            if events.len() >= limit {
                break 'scan;
            }
        }
    }
    let cursor = match (events.len() >= limit, last_id) {
        (true, Some(id)) => id,
        // Everything through `end` was scanned.
        _ => format!("{:019}-{:010}", ((i64::from(end) + 1) << 32) - 1, u32::MAX),
    };
    Ok(json!({
        "events": events,
        "latestLedger": latest,
        "oldestLedger": oldest,
        "latestLedgerCloseTime": chain.ledger_time(latest).to_string(),
        "oldestLedgerCloseTime": chain.ledger_time(oldest).to_string(),
        "cursor": cursor,
    }))
}

fn get_ledger_entries(
    state: &RpcState,
    chain: &StellarChain,
    params: &Value,
) -> Result<Value, RpcFailure> {
    let keys = params
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid_params("keys must be an array of base64 LedgerKeys"))?;
    if keys.len() > 200 {
        return Err(invalid_params("maximum 200 keys per request"));
    }
    let assets = state.assets(chain);
    let mut entries = Vec::new();
    for k in keys {
        let s = k
            .as_str()
            .ok_or_else(|| invalid_params("keys must be strings"))?;
        let key = LedgerKey::from_xdr_base64(
            s,
            Limits {
                depth: 50,
                len: s.len(),
            },
        )
        .map_err(|e| invalid_params(format!("cannot unmarshal key value {s}: {e}")))?;
        let found = match &key {
            LedgerKey::Account(a) => {
                let PublicKey::PublicKeyTypeEd25519(Uint256(k)) = &a.account_id.0;
                account_of(chain, k).map(|i| {
                    let acc = &chain.accounts[i as usize];
                    let subentries = acc.balances.iter().skip(1).filter(|b| b.is_some()).count();
                    (
                        LedgerEntryData::Account(AccountEntry {
                            account_id: a.account_id.clone(),
                            balance: acc.balances[0].unwrap_or(0),
                            seq_num: SequenceNumber(acc.sequence),
                            num_sub_entries: subentries as u32,
                            inflation_dest: None,
                            flags: 0,
                            home_domain: String32::default(),
                            thresholds: Thresholds([1, 0, 0, 0]),
                            signers: Default::default(),
                            ext: AccountEntryExt::V0,
                        }),
                        acc.last_modified_ledger,
                    )
                })
            }
            LedgerKey::Trustline(t) => {
                let PublicKey::PublicKeyTypeEd25519(Uint256(k)) = &t.account_id.0;
                let asset = match &t.asset {
                    TrustLineAsset::CreditAlphanum4(a) => Some(Asset::CreditAlphanum4(a.clone())),
                    TrustLineAsset::CreditAlphanum12(a) => Some(Asset::CreditAlphanum12(a.clone())),
                    _ => None,
                };
                let ai = asset.and_then(|x| assets.iter().position(|(a, _, _)| *a == x));
                match (account_of(chain, k), ai) {
                    (Some(i), Some(ai)) if ai > 0 => {
                        let acc = &chain.accounts[i as usize];
                        acc.balances[ai].map(|b| {
                            (
                                LedgerEntryData::Trustline(TrustLineEntry {
                                    account_id: t.account_id.clone(),
                                    asset: t.asset.clone(),
                                    balance: b,
                                    limit: i64::MAX,
                                    flags: 1,
                                    ext: TrustLineEntryExt::V0,
                                }),
                                acc.balance_modified[ai],
                            )
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some((data, modified)) = found {
            entries.push(json!({
                "key": s,
                "xdr": b64(&data),
                "lastModifiedLedgerSeq": modified,
            }));
        }
    }
    Ok(json!({"entries": entries, "latestLedger": chain.latest_ledger()}))
}

/// Index of the created account with ed25519 key `k`.
fn account_of(chain: &StellarChain, k: &[u8; 32]) -> Option<u32> {
    let id = stellar_strkey::ed25519::PublicKey(*k).to_string();
    chain.account_index(&id).ok()
}

fn contract_event(contract: [u8; 32], topics: Vec<ScVal>, data: ScVal) -> ContractEvent {
    ContractEvent {
        ext: ExtensionPoint::V0,
        contract_id: Some(ContractId(Hash(contract))),
        type_: ContractEventType::Contract,
        body: ContractEventBody::V0(ContractEventV0 {
            topics: topics.try_into().unwrap_or_default(),
            data,
        }),
    }
}

/// The `getTransactions` record of operation `i` (one operation per transaction).
pub(crate) fn transaction_json(
    state: &RpcState,
    chain: &StellarChain,
    i: usize,
    op: &Operation,
) -> Value {
    let keys = state.keys(chain);
    let assets = state.assets(chain);
    let src = keys[op.source as usize];
    let dst = keys[op.to as usize];
    let body = match op.kind {
        OpKind::CreateAccount => OperationBody::CreateAccount(CreateAccountOp {
            destination: account_id(dst),
            starting_balance: op.amount,
        }),
        OpKind::Payment => OperationBody::Payment(PaymentOp {
            destination: MuxedAccount::Ed25519(Uint256(dst)),
            asset: assets[op.asset as usize].0.clone(),
            amount: op.amount,
        }),
        OpKind::ChangeTrust => OperationBody::ChangeTrust(ChangeTrustOp {
            line: match &assets[op.asset as usize].0 {
                Asset::CreditAlphanum4(a) => ChangeTrustAsset::CreditAlphanum4(a.clone()),
                Asset::CreditAlphanum12(a) => ChangeTrustAsset::CreditAlphanum12(a.clone()),
                Asset::Native => ChangeTrustAsset::Native,
            },
            limit: op.amount,
        }),
    };
    let result = match op.kind {
        OpKind::CreateAccount => OperationResultTr::CreateAccount(CreateAccountResult::Success),
        OpKind::Payment => OperationResultTr::Payment(PaymentResult::Success),
        OpKind::ChangeTrust => OperationResultTr::ChangeTrust(ChangeTrustResult::Success),
    };
    let memo = match &op.memo {
        Some(m) => Memo::Text(m.as_ref().try_into().unwrap_or_default()),
        None => Memo::None,
    };
    let fee_parts = RpcState::fee_parts(chain, op);
    let charged = fee_parts.map_or(0, |(c, r)| c + r.unwrap_or(0));
    let envelope = TransactionEnvelope::Tx(TransactionV1Envelope {
        tx: Transaction {
            source_account: MuxedAccount::Ed25519(Uint256(src)),
            fee: fee_parts.map_or(100, |(c, _)| c.clamp(0, u32::MAX as i64) as u32),
            seq_num: SequenceNumber(op.source_sequence),
            cond: Preconditions::None,
            memo,
            operations: vec![XdrOp {
                source_account: None,
                body,
            }]
            .try_into()
            .unwrap_or_default(),
            ext: TransactionExt::V0,
        },
        signatures: Default::default(),
    });
    let tx_result = TransactionResult {
        fee_charged: charged,
        result: TransactionResultResult::TxSuccess(
            vec![OperationResult::OpInner(result)]
                .try_into()
                .unwrap_or_default(),
        ),
        ext: TransactionResultExt::V0,
    };
    let xlm = assets[0].2;
    let classic = chain.config.rpc_classic_events;
    let mut tx_events = Vec::new();
    if let (Some((c, r)), true) = (fee_parts, classic) {
        let from = state.addr(chain, op.source);
        tx_events.push(TransactionEvent {
            stage: TransactionEventStage::BeforeAllTxs,
            event: contract_event(xlm, vec![sym("fee"), from.clone()], i128v(c)),
        });
        if let Some(r) = r {
            tx_events.push(TransactionEvent {
                stage: TransactionEventStage::AfterAllTxs,
                event: contract_event(xlm, vec![sym("fee"), from], i128v(r)),
            });
        }
    }
    let op_events: Vec<ContractEvent> = state
        .op_events(chain, i, op)
        .filter(|_| classic)
        .map(|e| contract_event(assets[e.asset as usize].2, e.topics, e.data))
        .into_iter()
        .collect();
    let (changes_before, op_changes) = state.meta.xdr(chain, i, keys, assets);
    let meta = TransactionMeta::V4(TransactionMetaV4 {
        ext: ExtensionPoint::V0,
        tx_changes_before: changes_before,
        operations: vec![OperationMetaV2 {
            ext: ExtensionPoint::V0,
            changes: op_changes,
            events: op_events.clone().try_into().unwrap_or_default(),
        }]
        .try_into()
        .unwrap_or_default(),
        tx_changes_after: Default::default(),
        soroban_meta: None,
        events: tx_events.clone().try_into().unwrap_or_default(),
        diagnostic_events: Default::default(),
    });
    let network: [u8; 32] = Sha256::digest(PASSPHRASE.as_bytes()).into();
    let hash = envelope
        .hash(network)
        .map(|h| hex_of(&h))
        .unwrap_or_default();
    json!({
        "status": "SUCCESS",
        "txHash": hash,
        "applicationOrder": (op.id >> 12) & 0xfffff,
        "feeBump": false,
        "envelopeXdr": b64(&envelope),
        "resultXdr": b64(&tx_result),
        "resultMetaXdr": b64(&meta),
        "events": {
            "transactionEventsXdr": tx_events.iter().map(b64).collect::<Vec<_>>(),
            "contractEventsXdr": [op_events.iter().map(b64).collect::<Vec<_>>()],
        },
        "ledger": op.ledger,
        "createdAt": chain.ledger_time(op.ledger),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 86_399), "2000-02-29T23:59:59Z");
    }
}
