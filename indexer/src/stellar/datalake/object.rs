//! One data-lake object: zstd-decompressed (bounded), decoded as an XDR
//! `LedgerCloseMetaBatch` with decoding limits, its bounds checked against the key it was
//! read from, and reduced to what the balance derivation needs: the SAC token events of
//! each ledger, rendered as the `getEvents` records the RPC path decodes
//! ([`crate::stellar::rpc::events::decode_event`]), so both paths derive identical rows.
//!
//! Event ids are TOIDs as in `getEvents`: `ledger << 32 | tx << 12 | op`, then the event's
//! index. Transaction-level events (CAP-67 `fee`) charged before all transactions take
//! `tx = 0` and those after all transactions (refunds) `tx = 0xFFFFF`, numbered across the
//! ledger; events after one transaction take `op = 0xFFF`; operation events take the
//! transaction's 1-based application order and the operation's 0-based index.

use std::io::Read;

use chrono::{DateTime, Utc};
use stellar_xdr::{
    ContractEvent, ContractEventType, GeneralizedTransactionSet, LedgerCloseMeta,
    LedgerCloseMetaBatch, Limits, ReadXdr, TransactionEnvelope, TransactionEventStage,
    TransactionMeta, TransactionPhase, TransactionResultPair, TransactionResultResult,
    TxSetComponent,
};

use crate::stellar::rpc::decode::DecodedTx;
use crate::stellar::rpc::types::RpcEvent;
use crate::stellar::rpc::xdr::{contract_strkey, encode, MAX_DEPTH};

/// Largest decompressed object accepted (a bound on memory per object in flight).
pub const MAX_OBJECT_BYTES: usize = 1 << 30;

/// Why an object cannot be used. Every variant names the object's key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// Not a valid zstd frame.
    #[error("{key}: bad zstd: {error}")]
    Zstd {
        /// Object key.
        key: String,
        /// Decoder message.
        error: String,
    },
    /// Decompresses to more than [`MAX_OBJECT_BYTES`].
    #[error("{key}: decompresses to more than {max} bytes")]
    TooLarge {
        /// Object key.
        key: String,
        /// Limit.
        max: usize,
    },
    /// Not a valid (complete) `LedgerCloseMetaBatch`.
    #[error("{key}: malformed LedgerCloseMetaBatch XDR: {error}")]
    Xdr {
        /// Object key.
        key: String,
        /// Decoder message.
        error: String,
    },
    /// The batch does not hold the ledgers its key names.
    #[error("{key}: wrong batch bounds: {what}")]
    Bounds {
        /// Object key.
        key: String,
        /// What disagrees.
        what: String,
    },
}

/// One ledger, reduced.
#[derive(Debug, Clone)]
pub struct LedgerEvents {
    /// Sequence.
    pub sequence: u32,
    /// Close time.
    pub closed_at: DateTime<Utc>,
    /// Contract events in id order, as `getEvents` records.
    pub events: Vec<RpcEvent>,
    /// Transactions applied.
    pub transactions: u64,
    /// Operations of those transactions.
    pub operations: u64,
    /// The transactions themselves, in application order; read only when asked for
    /// ([`decode_object`]'s `network`), empty otherwise.
    pub txs: Vec<LedgerTx>,
}

/// One transaction of a ledger: its envelope (found in the ledger's transaction set by
/// hash), result and meta, as a `getTransactions` record would carry them.
#[derive(Debug, Clone)]
pub struct LedgerTx {
    /// 1-based position in the ledger.
    pub application_order: u32,
    /// Whether it succeeded.
    pub successful: bool,
    /// Envelope, result and meta, with the hash.
    pub tx: DecodedTx,
}

/// One object, reduced.
#[derive(Debug, Clone)]
pub struct DecodedObject {
    /// Key it was read from.
    pub key: String,
    /// Its ledgers, in order.
    pub ledgers: Vec<LedgerEvents>,
    /// Compressed size.
    pub compressed_bytes: usize,
    /// Decompressed size.
    pub xdr_bytes: usize,
}

/// Decompresses `bytes` (object `key`), refusing more than [`MAX_OBJECT_BYTES`].
pub fn decompress(key: &str, bytes: &[u8]) -> Result<Vec<u8>, ObjectError> {
    let zerr = |e: std::io::Error| ObjectError::Zstd {
        key: key.to_string(),
        error: e.to_string(),
    };
    let decoder = zstd::stream::read::Decoder::new(bytes).map_err(zerr)?;
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(MAX_OBJECT_BYTES));
    decoder
        .take(MAX_OBJECT_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(zerr)?;
    if out.len() > MAX_OBJECT_BYTES {
        return Err(ObjectError::TooLarge {
            key: key.to_string(),
            max: MAX_OBJECT_BYTES,
        });
    }
    Ok(out)
}

/// Decodes the batch in `xdr` (object `key`) and checks it holds exactly `start..=end`.
pub fn decode_batch(
    key: &str,
    xdr: &[u8],
    start: u32,
    end: u32,
) -> Result<LedgerCloseMetaBatch, ObjectError> {
    let batch = LedgerCloseMetaBatch::from_xdr(
        xdr,
        Limits {
            depth: MAX_DEPTH,
            len: xdr.len(),
        },
    )
    .map_err(|e| ObjectError::Xdr {
        key: key.to_string(),
        error: e.to_string(),
    })?;
    let bounds = |what: String| ObjectError::Bounds {
        key: key.to_string(),
        what,
    };
    if batch.start_sequence != start || batch.end_sequence != end {
        return Err(bounds(format!(
            "holds {}..={} but the key names {start}..={end}",
            batch.start_sequence, batch.end_sequence
        )));
    }
    let n = u64::from(end - start) + 1;
    if batch.ledger_close_metas.len() as u64 != n {
        return Err(bounds(format!(
            "{} ledgers for the {n} of {start}..={end}",
            batch.ledger_close_metas.len()
        )));
    }
    for (i, m) in batch.ledger_close_metas.iter().enumerate() {
        let want = start + i as u32;
        if sequence(m) != want {
            return Err(bounds(format!(
                "ledger {} at position {i}, expected {want}",
                sequence(m)
            )));
        }
    }
    Ok(batch)
}

/// Decompresses, decodes, checks and reduces object `key` expected to hold `start..=end`;
/// with `network` (the network id), each ledger's transactions are kept too
/// ([`LedgerEvents::txs`]).
pub fn decode_object(
    key: &str,
    compressed: &[u8],
    start: u32,
    end: u32,
    network: Option<[u8; 32]>,
) -> Result<DecodedObject, ObjectError> {
    let xdr = decompress(key, compressed)?;
    let batch = decode_batch(key, &xdr, start, end)?;
    let ledgers = batch
        .ledger_close_metas
        .iter()
        .map(|m| {
            let mut l = ledger_events(key, m)?;
            if let Some(n) = network {
                l.txs = ledger_txs(key, m, n)?;
            }
            Ok(l)
        })
        .collect::<Result<_, _>>()?;
    Ok(DecodedObject {
        key: key.to_string(),
        ledgers,
        compressed_bytes: compressed.len(),
        xdr_bytes: xdr.len(),
    })
}

/// The sequence a ledger's close meta names.
pub fn sequence(m: &LedgerCloseMeta) -> u32 {
    match m {
        LedgerCloseMeta::V0(m) => m.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V1(m) => m.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V2(m) => m.ledger_header.header.ledger_seq,
    }
}

fn close_time(m: &LedgerCloseMeta) -> u64 {
    match m {
        LedgerCloseMeta::V0(m) => m.ledger_header.header.scp_value.close_time.0,
        LedgerCloseMeta::V1(m) => m.ledger_header.header.scp_value.close_time.0,
        LedgerCloseMeta::V2(m) => m.ledger_header.header.scp_value.close_time.0,
    }
}

/// `(result, meta)` of every transaction, in application order.
fn transactions(m: &LedgerCloseMeta) -> Vec<(&TransactionResultPair, &TransactionMeta)> {
    match m {
        LedgerCloseMeta::V0(m) => m
            .tx_processing
            .iter()
            .map(|t| (&t.result, &t.tx_apply_processing))
            .collect(),
        LedgerCloseMeta::V1(m) => m
            .tx_processing
            .iter()
            .map(|t| (&t.result, &t.tx_apply_processing))
            .collect(),
        LedgerCloseMeta::V2(m) => m
            .tx_processing
            .iter()
            .map(|t| (&t.result, &t.tx_apply_processing))
            .collect(),
    }
}

/// Whether the transaction succeeded, and how many operations it has.
fn outcome(r: &TransactionResultPair) -> (bool, u64) {
    match &r.result.result {
        TransactionResultResult::TxSuccess(ops) => (true, ops.len() as u64),
        TransactionResultResult::TxFailed(ops) => (false, ops.len() as u64),
        TransactionResultResult::TxFeeBumpInnerSuccess(inner) => {
            (true, inner_ops(&inner.result.result))
        }
        TransactionResultResult::TxFeeBumpInnerFailed(inner) => {
            (false, inner_ops(&inner.result.result))
        }
        _ => (false, 0),
    }
}

fn inner_ops(r: &stellar_xdr::InnerTransactionResultResult) -> u64 {
    match r {
        stellar_xdr::InnerTransactionResultResult::TxSuccess(ops)
        | stellar_xdr::InnerTransactionResultResult::TxFailed(ops) => ops.len() as u64,
        _ => 0,
    }
}

/// Every envelope of a ledger's transaction set (any phase, sequential or parallel).
fn envelopes(m: &LedgerCloseMeta) -> Vec<&TransactionEnvelope> {
    let set = match m {
        LedgerCloseMeta::V0(m) => return m.tx_set.txs.iter().collect(),
        LedgerCloseMeta::V1(m) => &m.tx_set,
        LedgerCloseMeta::V2(m) => &m.tx_set,
    };
    let GeneralizedTransactionSet::V1(set) = set;
    let mut out = Vec::new();
    for phase in set.phases.iter() {
        match phase {
            TransactionPhase::V0(components) => {
                for c in components.iter() {
                    let TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) = c;
                    out.extend(c.txs.iter());
                }
            }
            TransactionPhase::V1(p) => {
                for stage in p.execution_stages.iter() {
                    for cluster in stage.0.iter() {
                        out.extend(cluster.0.iter());
                    }
                }
            }
        }
    }
    out
}

/// The transactions of one ledger (of object `key`) on network `network`, in application
/// order: each result is paired with the envelope of its hash; a result whose envelope is
/// not in the transaction set makes the object corrupt.
pub fn ledger_txs(
    key: &str,
    m: &LedgerCloseMeta,
    network: [u8; 32],
) -> Result<Vec<LedgerTx>, ObjectError> {
    let seq = sequence(m);
    let bounds = |what: String| ObjectError::Bounds {
        key: key.to_string(),
        what: format!("ledger {seq}: {what}"),
    };
    let mut by_hash = std::collections::HashMap::new();
    for e in envelopes(m) {
        let h = e
            .hash(network)
            .map_err(|err| bounds(format!("hashing an envelope: {err}")))?;
        by_hash.insert(h, e);
    }
    let txs = transactions(m);
    let mut out = Vec::with_capacity(txs.len());
    for (i, (r, meta)) in txs.into_iter().enumerate() {
        let order = u32::try_from(i + 1).map_err(|_| bounds("too many transactions".into()))?;
        let Some(envelope) = by_hash.get(&r.transaction_hash.0) else {
            return Err(bounds(format!(
                "transaction {} has no envelope in the transaction set (another network?)",
                hex::encode(r.transaction_hash.0)
            )));
        };
        out.push(LedgerTx {
            application_order: order,
            successful: outcome(r).0,
            tx: DecodedTx {
                hash: hex::encode(r.transaction_hash.0),
                envelope: (*envelope).clone(),
                result: r.result.clone(),
                meta: meta.clone(),
            },
        });
    }
    Ok(out)
}

/// Transaction order of events before all transactions.
const BEFORE_ALL: i64 = 0;
/// Transaction order of events after all transactions.
const AFTER_ALL: i64 = 0xFFFFF;
/// Operation index of events after one transaction.
const AFTER_TX_OP: i64 = 0xFFF;

/// Reduces one ledger (of object `key`) to its contract events.
pub fn ledger_events(key: &str, m: &LedgerCloseMeta) -> Result<LedgerEvents, ObjectError> {
    let seq = sequence(m);
    let secs = i64::try_from(close_time(m)).unwrap_or(i64::MAX);
    let closed_at =
        DateTime::<Utc>::from_timestamp(secs, 0).ok_or_else(|| ObjectError::Bounds {
            key: key.to_string(),
            what: format!("ledger {seq}: close time {secs} out of range"),
        })?;
    let closed = closed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let base = i64::from(seq) << 32;
    let txs = transactions(m);
    if txs.len() as i64 >= AFTER_ALL {
        return Err(ObjectError::Bounds {
            key: key.to_string(),
            what: format!("ledger {seq}: {} transactions", txs.len()),
        });
    }
    let mut out: Vec<(i64, u32, RpcEvent)> = Vec::new();
    let (mut before, mut after) = (0u32, 0u32);
    let mut operations = 0;
    let render = |toid: i64,
                  index: u32,
                  tx: i64,
                  op: Option<u32>,
                  hash: &str,
                  ok: bool,
                  e: &ContractEvent|
     -> Result<Option<(i64, u32, RpcEvent)>, ObjectError> {
        if e.type_ != ContractEventType::Contract {
            return Ok(None);
        }
        let Some(contract) = &e.contract_id else {
            return Ok(None);
        };
        let stellar_xdr::ContractEventBody::V0(body) = &e.body;
        let xerr = |err: crate::stellar::rpc::xdr::XdrError| ObjectError::Xdr {
            key: key.to_string(),
            error: format!("ledger {seq}: re-encoding an event: {err}"),
        };
        let topic = body
            .topics
            .iter()
            .map(encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(xerr)?;
        let value = encode(&body.data).map_err(xerr)?;
        Ok(Some((
            toid,
            index,
            RpcEvent {
                type_: "contract".into(),
                ledger: seq,
                ledger_closed_at: closed.clone(),
                contract_id: contract_strkey(contract.0 .0),
                id: format!("{toid:019}-{index:010}"),
                operation_index: op,
                transaction_index: Some(tx as u32),
                tx_hash: hash.to_string(),
                in_successful_contract_call: ok,
                topic,
                value,
            },
        )))
    };
    for (i, (result, meta)) in txs.iter().enumerate() {
        let t = i as i64 + 1;
        let hash = hex::encode(result.transaction_hash.0);
        let (ok, ops) = outcome(result);
        operations += ops;
        match meta {
            TransactionMeta::V4(v4) => {
                for te in v4.events.iter() {
                    let (toid, index) = match te.stage {
                        TransactionEventStage::BeforeAllTxs => {
                            before += 1;
                            (base | (BEFORE_ALL << 12), before - 1)
                        }
                        TransactionEventStage::AfterAllTxs => {
                            after += 1;
                            (base | (AFTER_ALL << 12), after - 1)
                        }
                        TransactionEventStage::AfterTx => {
                            let n = out
                                .iter()
                                .filter(|x| x.0 == base | (t << 12) | AFTER_TX_OP)
                                .count();
                            (base | (t << 12) | AFTER_TX_OP, n as u32)
                        }
                    };
                    out.extend(render(toid, index, t, None, &hash, ok, &te.event)?);
                }
                if v4.operations.len() as i64 >= AFTER_TX_OP {
                    return Err(ObjectError::Bounds {
                        key: key.to_string(),
                        what: format!("ledger {seq}: {} operations", v4.operations.len()),
                    });
                }
                for (o, op) in v4.operations.iter().enumerate() {
                    let toid = base | (t << 12) | o as i64;
                    for (k, e) in op.events.iter().enumerate() {
                        out.extend(render(toid, k as u32, t, Some(o as u32), &hash, ok, e)?);
                    }
                }
            }
            // Before Protocol 23: the Soroban invocation's events, on its one operation.
            TransactionMeta::V3(v3) => {
                if let Some(s) = &v3.soroban_meta {
                    let toid = base | (t << 12);
                    for (k, e) in s.events.iter().enumerate() {
                        out.extend(render(toid, k as u32, t, Some(0), &hash, ok, e)?);
                    }
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|x| (x.0, x.1));
    Ok(LedgerEvents {
        sequence: seq,
        closed_at,
        events: out.into_iter().map(|x| x.2).collect(),
        transactions: txs.len() as u64,
        operations,
        txs: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::WriteXdr;

    fn empty_ledger(seq: u32) -> LedgerCloseMeta {
        let mut m = stellar_xdr::LedgerCloseMetaV2 {
            ext: stellar_xdr::LedgerCloseMetaExt::V0,
            ledger_header: Default::default(),
            tx_set: stellar_xdr::GeneralizedTransactionSet::V1(Default::default()),
            tx_processing: Default::default(),
            upgrades_processing: Default::default(),
            scp_info: Default::default(),
            total_byte_size_of_live_soroban_state: 0,
            evicted_keys: Default::default(),
        };
        m.ledger_header.header.ledger_seq = seq;
        m.ledger_header.header.scp_value.close_time = stellar_xdr::TimePoint(1_735_689_600);
        LedgerCloseMeta::V2(m)
    }

    fn object(start: u32, end: u32, seqs: &[u32]) -> Vec<u8> {
        let batch = LedgerCloseMetaBatch {
            start_sequence: start,
            end_sequence: end,
            ledger_close_metas: seqs
                .iter()
                .map(|s| empty_ledger(*s))
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
        };
        let xdr = batch.to_xdr(Limits::none()).unwrap();
        zstd::encode_all(&xdr[..], 3).unwrap()
    }

    #[test]
    fn reads_a_batch_and_refuses_corrupt_objects_by_key() {
        let ok = decode_object("k", &object(4, 5, &[4, 5]), 4, 5, None).unwrap();
        assert_eq!(
            ok.ledgers.iter().map(|l| l.sequence).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(ok.ledgers[0].closed_at.timestamp(), 1_735_689_600);
        // Bad zstd.
        let err = decode_object("p/a.xdr.zst", b"not zstd at all", 4, 5, None).unwrap_err();
        assert!(
            matches!(err, ObjectError::Zstd { .. }) && err.to_string().starts_with("p/a.xdr.zst"),
            "{err}"
        );
        // Truncated XDR inside a valid zstd frame.
        let xdr = decompress("k", &object(4, 5, &[4, 5])).unwrap();
        let cut = zstd::encode_all(&xdr[..xdr.len() - 7], 3).unwrap();
        let err = decode_object("p/b.xdr.zst", &cut, 4, 5, None).unwrap_err();
        assert!(
            matches!(err, ObjectError::Xdr { .. }) && err.to_string().contains("p/b.xdr.zst"),
            "{err}"
        );
        // A truncated zstd frame.
        let z = object(4, 5, &[4, 5]);
        let err = decode_object("p/c.xdr.zst", &z[..z.len() / 2], 4, 5, None).unwrap_err();
        assert!(
            matches!(err, ObjectError::Zstd { .. } | ObjectError::Xdr { .. }),
            "{err}"
        );
        // Wrong bounds: header, count, sequence.
        for (start, end, seqs) in [(4, 6, vec![4, 5, 6]), (4, 5, vec![4]), (4, 5, vec![4, 7])] {
            let err =
                decode_object("p/d.xdr.zst", &object(start, end, &seqs), 4, 5, None).unwrap_err();
            assert!(
                matches!(err, ObjectError::Bounds { .. })
                    && err.to_string().contains("p/d.xdr.zst"),
                "{err}"
            );
        }
    }
}
