//! `getTransactions` and `getLedgers` of devnet's Stellar RPC, from the same seeded ledger
//! as its Horizon.
//!
//! A ledger's transactions are its operations (one per transaction, application order as in
//! the operation id) followed by its DEX trades (the trades devnet's Horizon aggregates in
//! `/trade_aggregations`, application order 1000 + n as in their Horizon ids): each trade is
//! a `manage_sell_offer` of one market maker crossing the other's offer, the fill recorded
//! as a `ClaimAtom` in the operation result. Market makers are outside the modelled ledger
//! (Horizon's `/accounts` does not serve them either): their transactions are charged no fee
//! and emit no token event.
//!
//! `getLedgers` renders each ledger's `LedgerHeaderHistoryEntry` and a `LedgerCloseMeta` V2
//! whose transaction set and processing carry exactly the envelopes, results and metas
//! `getTransactions` serves. Both honour the retention window and the page limit (200),
//! with `cursor` and `startLedger` never together.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stellar_xdr::{
    Asset, ClaimAtom, ClaimOfferAtom, ExtensionPoint, GeneralizedTransactionSet, Hash,
    LedgerCloseMeta, LedgerCloseMetaExt, LedgerCloseMetaV2, LedgerHeaderHistoryEntry,
    LedgerHeaderHistoryEntryExt, Limits, ManageOfferSuccessResult, ManageOfferSuccessResultOffer,
    ManageSellOfferOp, ManageSellOfferResult, Memo, MuxedAccount, Operation as XdrOp,
    OperationBody, OperationMetaV2, OperationResult, OperationResultTr, Preconditions, Price,
    ReadXdr, SequenceNumber, Transaction, TransactionEnvelope, TransactionExt, TransactionMeta,
    TransactionMetaV4, TransactionPhase, TransactionResult, TransactionResultExt,
    TransactionResultMetaV1, TransactionResultPair, TransactionResultResult, TransactionSetV1,
    TransactionV1Envelope, TxSetComponent, TxSetComponentTxsMaybeDiscountedFee, Uint256,
};

use super::{
    account_id, b64, check_start, hex_of, invalid_params, key_of, ledger_header, paging,
    transaction_json, From, RpcFailure, RpcState, MAX_PAGE_LIMIT, PASSPHRASE,
};
use crate::stellar::model::{StellarChain, Trade};

/// Application order of a ledger's first trade transaction.
const TRADE_ORDER: i64 = 1000;

/// One transaction of a ledger: an operation (index into `chain.ops`) or a DEX trade.
enum TxRef {
    Op(usize),
    Trade(u32, usize, Trade),
}

impl TxRef {
    fn toid(&self, chain: &StellarChain) -> i64 {
        match self {
            TxRef::Op(i) => chain.ops[*i].id & !0xfff,
            TxRef::Trade(ledger, n, _) => {
                (i64::from(*ledger) << 32) | ((TRADE_ORDER + *n as i64) << 12)
            }
        }
    }
}

/// The transactions of `ledger`, in application order.
fn ledger_txs(chain: &StellarChain, ledger: u32) -> Vec<TxRef> {
    let Some(l) = chain.ledgers.get(ledger as usize - 1) else {
        return Vec::new();
    };
    let mut out: Vec<TxRef> = (l.first_op as usize..(l.first_op + l.op_count) as usize)
        .map(TxRef::Op)
        .collect();
    out.extend(
        chain
            .trades_in_ledger(ledger)
            .into_iter()
            .enumerate()
            .map(|(n, t)| TxRef::Trade(ledger, n, t)),
    );
    out
}

/// Envelope, result and meta of a trade transaction.
fn trade_xdr(
    state: &RpcState,
    chain: &StellarChain,
    ledger: u32,
    n: usize,
    t: &Trade,
) -> (TransactionEnvelope, TransactionResult, TransactionMeta) {
    let assets = state.assets(chain);
    let xlm = Asset::Native;
    let counter = assets.get(1).map_or(Asset::Native, |a| a.0.clone());
    let taker = key_of(&t.base_account);
    let maker = key_of(&t.counter_account);
    // The taker sells what the base side gives: lumens when the base account sells.
    let (selling, buying, amount, sold_by_maker, maker_sold, maker_bought, bought_amount) =
        if t.base_is_seller {
            let (s, b) = (xlm.clone(), counter.clone());
            (
                s,
                b.clone(),
                t.base_amount,
                b,
                t.counter_amount,
                xlm,
                t.base_amount,
            )
        } else {
            let (s, b) = (counter.clone(), xlm.clone());
            (
                s,
                b.clone(),
                t.counter_amount,
                b,
                t.base_amount,
                counter,
                t.counter_amount,
            )
        };
    let price = Price {
        n: (maker_sold as f64 / bought_amount.max(1) as f64 * 1_000_000.0)
            .round()
            .clamp(1.0, i32::MAX as f64) as i32,
        d: 1_000_000,
    };
    let op = XdrOp {
        source_account: None,
        body: OperationBody::ManageSellOffer(ManageSellOfferOp {
            selling,
            buying,
            amount,
            price,
            offer_id: 0,
        }),
    };
    let order = TRADE_ORDER + n as i64;
    let envelope = TransactionEnvelope::Tx(TransactionV1Envelope {
        tx: Transaction {
            source_account: MuxedAccount::Ed25519(Uint256(taker)),
            fee: 100,
            seq_num: SequenceNumber((i64::from(ledger) << 32) | order),
            cond: Preconditions::None,
            memo: Memo::None,
            operations: vec![op].try_into().unwrap_or_default(),
            ext: TransactionExt::V0,
        },
        signatures: Default::default(),
    });
    let claim = ClaimAtom::OrderBook(ClaimOfferAtom {
        seller_id: account_id(maker),
        offer_id: (i64::from(ledger) << 8) | n as i64,
        asset_sold: sold_by_maker,
        amount_sold: maker_sold,
        asset_bought: maker_bought,
        amount_bought: bought_amount,
    });
    let result = TransactionResult {
        fee_charged: 0,
        result: TransactionResultResult::TxSuccess(
            vec![OperationResult::OpInner(
                OperationResultTr::ManageSellOffer(ManageSellOfferResult::Success(
                    ManageOfferSuccessResult {
                        offers_claimed: vec![claim].try_into().unwrap_or_default(),
                        offer: ManageOfferSuccessResultOffer::Deleted,
                    },
                )),
            )]
            .try_into()
            .unwrap_or_default(),
        ),
        ext: TransactionResultExt::V0,
    };
    let meta = TransactionMeta::V4(TransactionMetaV4 {
        ext: ExtensionPoint::V0,
        tx_changes_before: Default::default(),
        operations: vec![OperationMetaV2 {
            ext: ExtensionPoint::V0,
            changes: Default::default(),
            events: Default::default(),
        }]
        .try_into()
        .unwrap_or_default(),
        tx_changes_after: Default::default(),
        soroban_meta: None,
        events: Default::default(),
        diagnostic_events: Default::default(),
    });
    (envelope, result, meta)
}

fn network_id() -> [u8; 32] {
    Sha256::digest(PASSPHRASE.as_bytes()).into()
}

/// The `getTransactions` record of one transaction.
fn record(state: &RpcState, chain: &StellarChain, tx: &TxRef) -> Value {
    match tx {
        TxRef::Op(i) => transaction_json(state, chain, *i, &chain.ops[*i]),
        TxRef::Trade(ledger, n, t) => {
            let (envelope, result, meta) = trade_xdr(state, chain, *ledger, *n, t);
            let hash = envelope
                .hash(network_id())
                .map(|h| hex_of(&h))
                .unwrap_or_default();
            json!({
                "status": "SUCCESS",
                "txHash": hash,
                "applicationOrder": TRADE_ORDER + *n as i64,
                "feeBump": false,
                "envelopeXdr": b64(&envelope),
                "resultXdr": b64(&result),
                "resultMetaXdr": b64(&meta),
                "events": {"transactionEventsXdr": [], "contractEventsXdr": [[]]},
                "ledger": ledger,
                "createdAt": chain.ledger_time(*ledger),
            })
        }
    }
}

/// `getTransactions`: transactions from `startLedger`, or after `cursor` (a transaction
/// TOID), at most `pagination.limit` (<= 200).
pub(super) fn get_transactions(
    state: &RpcState,
    chain: &StellarChain,
    params: &Value,
) -> Result<Value, RpcFailure> {
    let (from, limit) = paging(params, 10, MAX_PAGE_LIMIT)?;
    let (oldest, latest) = state.window(chain);
    let (start, after) = match from {
        From::Ledger(l) => {
            check_start(state, chain, l)?;
            (l, None)
        }
        From::After(toid, _) => {
            let l = u32::try_from(toid >> 32).unwrap_or(u32::MAX);
            if l < oldest {
                return Err(RpcFailure {
                    code: -32600,
                    message: format!("cursor is before the ledger range: {oldest} - {latest}"),
                });
            }
            (l.max(1), Some(toid))
        }
    };
    let mut txs = Vec::new();
    let mut cursor = None;
    'ledgers: for ledger in start..=latest {
        for tx in ledger_txs(chain, ledger) {
            let toid = tx.toid(chain);
            if after.is_some_and(|a| toid <= a) {
                continue;
            }
            txs.push(record(state, chain, &tx));
            cursor = Some(toid.to_string());
            if txs.len() >= limit {
                break 'ledgers;
            }
        }
    }
    let cursor = cursor.unwrap_or_else(|| {
        ((i64::from(latest) + 1) << 32)
            .saturating_sub(1)
            .to_string()
    });
    Ok(json!({
        "transactions": txs,
        "latestLedger": latest,
        "latestLedgerCloseTimestamp": chain.ledger_time(latest),
        "oldestLedger": oldest,
        "oldestLedgerCloseTimestamp": chain.ledger_time(oldest),
        "cursor": cursor,
    }))
}

fn decoded<T: ReadXdr>(s: &str) -> Option<T> {
    T::from_xdr_base64(s, Limits::none()).ok()
}

/// The `LedgerCloseMeta` of `ledger`: its transactions' envelopes, results and metas.
pub fn close_meta(state: &RpcState, chain: &StellarChain, ledger: u32) -> LedgerCloseMeta {
    let mut envelopes = Vec::new();
    let mut processing = Vec::new();
    for tx in ledger_txs(chain, ledger) {
        let (envelope, result, meta) = match &tx {
            TxRef::Trade(l, n, t) => trade_xdr(state, chain, *l, *n, t),
            TxRef::Op(_) => {
                // The very bytes getTransactions serves.
                let r = record(state, chain, &tx);
                let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
                match (
                    decoded::<TransactionEnvelope>(s("envelopeXdr")),
                    decoded::<TransactionResult>(s("resultXdr")),
                    decoded::<TransactionMeta>(s("resultMetaXdr")),
                ) {
                    (Some(e), Some(r), Some(m)) => (e, r, m),
                    _ => continue,
                }
            }
        };
        let hash = envelope.hash(network_id()).unwrap_or([0; 32]);
        envelopes.push(envelope);
        processing.push(TransactionResultMetaV1 {
            ext: ExtensionPoint::V0,
            result: TransactionResultPair {
                transaction_hash: Hash(hash),
                result,
            },
            fee_processing: Default::default(),
            tx_apply_processing: meta,
            post_tx_apply_fee_processing: Default::default(),
        });
    }
    let previous = Hash(if ledger > 1 {
        chain.ledger_hash(ledger - 1)
    } else {
        [0; 32]
    });
    LedgerCloseMeta::V2(LedgerCloseMetaV2 {
        ext: LedgerCloseMetaExt::V0,
        ledger_header: header_entry(chain, ledger),
        tx_set: GeneralizedTransactionSet::V1(TransactionSetV1 {
            previous_ledger_hash: previous,
            phases: vec![TransactionPhase::V0(
                vec![TxSetComponent::TxsetCompTxsMaybeDiscountedFee(
                    TxSetComponentTxsMaybeDiscountedFee {
                        base_fee: None,
                        txs: envelopes.try_into().unwrap_or_default(),
                    },
                )]
                .try_into()
                .unwrap_or_default(),
            )]
            .try_into()
            .unwrap_or_default(),
        }),
        tx_processing: processing.try_into().unwrap_or_default(),
        upgrades_processing: Default::default(),
        scp_info: Default::default(),
        total_byte_size_of_live_soroban_state: 0,
        evicted_keys: Default::default(),
    })
}

/// The `LedgerHeaderHistoryEntry` of `ledger` (its hash is devnet's ledger hash).
pub fn header_entry(chain: &StellarChain, ledger: u32) -> LedgerHeaderHistoryEntry {
    LedgerHeaderHistoryEntry {
        hash: Hash(chain.ledger_hash(ledger)),
        header: ledger_header(chain, ledger),
        ext: LedgerHeaderHistoryEntryExt::V0,
    }
}

/// `getLedgers`: ledgers from `startLedger`, or after `cursor` (a ledger sequence), at most
/// `pagination.limit` (<= 200).
pub(super) fn get_ledgers(
    state: &RpcState,
    chain: &StellarChain,
    params: &Value,
) -> Result<Value, RpcFailure> {
    let (oldest, latest) = state.window(chain);
    // The cursor of getLedgers is a bare ledger sequence.
    let (from, limit) = paging(params, 5, MAX_PAGE_LIMIT)?;
    let start = match from {
        From::Ledger(l) => {
            check_start(state, chain, l)?;
            l
        }
        From::After(seq, _) => {
            let l = u32::try_from(seq)
                .map_err(|_| invalid_params(format!("invalid cursor {seq}")))?
                .saturating_add(1);
            if l < oldest {
                return Err(RpcFailure {
                    code: -32600,
                    message: format!("cursor is before the ledger range: {oldest} - {latest}"),
                });
            }
            l
        }
    };
    let end = latest.min(start.saturating_add(limit as u32 - 1));
    let mut ledgers = Vec::new();
    for seq in start..=end {
        ledgers.push(json!({
            "hash": hex_of(&chain.ledger_hash(seq)),
            "sequence": seq,
            "ledgerCloseTime": chain.ledger_time(seq).to_string(),
            "headerXdr": b64(&header_entry(chain, seq)),
            "metadataXdr": b64(&close_meta(state, chain, seq)),
        }));
    }
    let cursor = if start > end { latest } else { end };
    Ok(json!({
        "ledgers": ledgers,
        "latestLedger": latest,
        "latestLedgerCloseTime": chain.ledger_time(latest),
        "oldestLedger": oldest,
        "oldestLedgerCloseTime": chain.ledger_time(oldest),
        "cursor": cursor.to_string(),
    }))
}
