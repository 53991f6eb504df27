//! Balance changes read from transaction meta, for RPC nodes that emit no CAP-67 events for
//! classic operations (a Core without `EMIT_CLASSIC_EVENTS`, or ledgers before Protocol 23
//! without `BACKFILL_STELLAR_ASSET_EVENTS`).
//!
//! Every protocol records the account and trustline entries a transaction changed as
//! `LedgerEntryChanges` in its `TransactionMeta` (V0 to V4): `State` (before) followed by
//! `Updated` / `Removed`, or `Created`. The balance change of `(account, asset)` is the sum
//! of `after - before` over those pairs. Fees are charged during fee processing, which
//! `getTransactions` does not return: the fee is the result's `feeCharged` (net of any
//! refund) taken from the fee source's lumens. Before Protocol 23 (meta V3) a Soroban
//! refund appears in `txChangesAfter` on the fee source's account; `feeCharged` already
//! nets it, so those lumen changes are not counted twice.
//!
//! When the transaction also carries token events for a followed asset, both views are
//! compared holder by holder ([`TxChanges::disagreements`]); the ledger entries win and a
//! disagreement is reported, never averaged. Contract (`C...`), claimable-balance and pool
//! holders have no account or trustline entry: their changes come from the events.

use std::collections::{BTreeMap, HashMap};

use stellar_xdr::{
    ContractEvent, LedgerEntryChange, LedgerEntryChanges, LedgerEntryData, LedgerKey, MuxedAccount,
    PublicKey, TransactionEnvelope, TransactionMeta, TrustLineAsset,
};

use super::decode::DecodedTx;
use super::events::{decode_event, Movement};
use super::operations::TxPlace;
use super::sac::{asset_key_of, SacAsset};
use super::types::RpcEvent;
use super::xdr::{account_strkey, contract_strkey, encode};
use crate::stellar::horizon::AssetKey;

/// Cursor prefix of the source when it follows transaction meta (`meta:<getTransactions
/// cursor>`); a bare cursor is a `getEvents` cursor.
pub const META_CURSOR: &str = "meta:";

/// `discovered_via` of holders found in transaction meta.
pub const DISCOVERED_VIA: &str = "rpc:ledger_entry_change";

/// Where the RPC source reads balances from, as its stored cursor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceFeed {
    /// Not decided yet (nothing stored).
    Unknown,
    /// SAC token events (`getEvents`): the node emits classic events.
    Events,
    /// Ledger entry changes in transaction meta (`getTransactions`): it does not.
    Meta,
}

impl BalanceFeed {
    /// The feed a stored cursor belongs to.
    pub fn of_cursor(cursor: Option<&str>) -> Self {
        match cursor {
            None => BalanceFeed::Unknown,
            Some(c) if c.starts_with(META_CURSOR) => BalanceFeed::Meta,
            Some(_) => BalanceFeed::Events,
        }
    }

    /// Whether the node emits classic events (`None` while unknown): what `indexerStatus`
    /// reports as `classicEvents`.
    pub fn classic_events(self) -> Option<bool> {
        match self {
            BalanceFeed::Unknown => None,
            BalanceFeed::Events => Some(true),
            BalanceFeed::Meta => Some(false),
        }
    }
}

/// One `(holder, asset)` change of a transaction.
pub type Deltas = BTreeMap<(String, AssetKey), i64>;

/// A transaction's balance changes in the followed assets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxChanges {
    /// From ledger entry changes, fee included (`G...` accounts).
    pub entries: Deltas,
    /// The fee taken from the fee source's lumens (when lumens are followed).
    pub fee: Option<(String, i64)>,
    /// From the transaction's token events, when it has any for a followed asset.
    pub events: Option<Deltas>,
    /// Whether the events include `fee` events.
    pub fee_events: bool,
    /// Token events of followed assets that could not be decoded (counted, skipped).
    pub bad_events: u64,
}

/// Why a transaction's meta could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// An `Updated` or `Removed` entry without the `State` before it.
    #[error("{0} changed without its previous state")]
    NoState(String),
    /// A sum overflowed.
    #[error("balance change of {0} overflows")]
    Overflow(String),
    /// The record's status is neither `SUCCESS` nor `FAILED`.
    #[error("transaction {0}")]
    Status(String),
}

fn ed25519(k: &PublicKey) -> String {
    let PublicKey::PublicKeyTypeEd25519(k) = k;
    account_strkey(k.0)
}

fn muxed(m: &MuxedAccount) -> String {
    match m {
        MuxedAccount::Ed25519(k) => account_strkey(k.0),
        MuxedAccount::MuxedEd25519(m) => account_strkey(m.ed25519.0),
    }
}

/// The account paying the fee: the fee-bump's fee source, else the source.
pub fn fee_source(env: &TransactionEnvelope) -> String {
    match env {
        TransactionEnvelope::TxV0(e) => account_strkey(e.tx.source_account_ed25519.0),
        TransactionEnvelope::Tx(e) => muxed(&e.tx.source_account),
        TransactionEnvelope::TxFeeBump(e) => muxed(&e.tx.fee_source),
    }
}

/// `(account, asset, balance)` of an account or trustline entry (pool shares: `None`).
fn entry_balance(data: &LedgerEntryData) -> Option<(String, AssetKey, i64)> {
    match data {
        LedgerEntryData::Account(a) => {
            Some((ed25519(&a.account_id.0), AssetKey::native(), a.balance))
        }
        LedgerEntryData::Trustline(t) => {
            let asset = match &t.asset {
                TrustLineAsset::CreditAlphanum4(a) => {
                    stellar_xdr::Asset::CreditAlphanum4(a.clone())
                }
                TrustLineAsset::CreditAlphanum12(a) => {
                    stellar_xdr::Asset::CreditAlphanum12(a.clone())
                }
                TrustLineAsset::Native | TrustLineAsset::PoolShare(_) => return None,
            };
            Some((ed25519(&t.account_id.0), asset_key_of(&asset), t.balance))
        }
        _ => None,
    }
}

fn key_of(key: &LedgerKey) -> Option<(String, AssetKey)> {
    match key {
        LedgerKey::Account(a) => Some((ed25519(&a.account_id.0), AssetKey::native())),
        LedgerKey::Trustline(t) => {
            let asset = match &t.asset {
                TrustLineAsset::CreditAlphanum4(a) => {
                    stellar_xdr::Asset::CreditAlphanum4(a.clone())
                }
                TrustLineAsset::CreditAlphanum12(a) => {
                    stellar_xdr::Asset::CreditAlphanum12(a.clone())
                }
                TrustLineAsset::Native | TrustLineAsset::PoolShare(_) => return None,
            };
            Some((ed25519(&t.account_id.0), asset_key_of(&asset)))
        }
        _ => None,
    }
}

fn add(d: &mut Deltas, key: (String, AssetKey), v: i64) -> Result<(), MetaError> {
    let e = d.entry(key.clone()).or_insert(0);
    *e = e
        .checked_add(v)
        .ok_or_else(|| MetaError::Overflow(format!("{} {}", key.0, key.1.canonical())))?;
    Ok(())
}

/// Adds the balance changes of `changes` in `followed` assets to `out`; with `skip`, the
/// lumens of that account are left out (a pre-23 refund).
fn apply_changes(
    changes: &LedgerEntryChanges,
    followed: &HashMap<AssetKey, usize>,
    skip: Option<&str>,
    out: &mut Deltas,
) -> Result<(), MetaError> {
    let mut state: HashMap<(String, AssetKey), i64> = HashMap::new();
    let wanted = |k: &(String, AssetKey)| {
        followed.contains_key(&k.1) && !(k.1.issuer.is_empty() && Some(k.0.as_str()) == skip)
    };
    for c in changes.iter() {
        match c {
            LedgerEntryChange::State(e) => {
                if let Some((a, asset, b)) = entry_balance(&e.data) {
                    state.insert((a, asset), b);
                }
            }
            LedgerEntryChange::Created(e) | LedgerEntryChange::Restored(e) => {
                if let Some((a, asset, b)) = entry_balance(&e.data) {
                    let k = (a, asset);
                    if wanted(&k) {
                        let before = state.remove(&k).unwrap_or(0);
                        add(out, k, b - before)?;
                    }
                }
            }
            LedgerEntryChange::Updated(e) => {
                if let Some((a, asset, b)) = entry_balance(&e.data) {
                    let k = (a, asset);
                    let before = state.remove(&k).ok_or_else(|| {
                        MetaError::NoState(format!("{} {}", k.0, k.1.canonical()))
                    })?;
                    if wanted(&k) {
                        add(out, k, b - before)?;
                    }
                }
            }
            LedgerEntryChange::Removed(key) => {
                if let Some(k) = key_of(key) {
                    let before = state.remove(&k).ok_or_else(|| {
                        MetaError::NoState(format!("{} {}", k.0, k.1.canonical()))
                    })?;
                    if wanted(&k) {
                        add(out, k, -before)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The token events a transaction's meta carries: per operation (V4) and transaction-level
/// fee events (V4), or the Soroban events (V3).
fn meta_events(meta: &TransactionMeta) -> Vec<&ContractEvent> {
    match meta {
        TransactionMeta::V4(m) => m
            .operations
            .iter()
            .flat_map(|o| o.events.iter())
            .chain(m.events.iter().map(|e| &e.event))
            .collect(),
        TransactionMeta::V3(m) => m
            .soroban_meta
            .as_ref()
            .map(|s| s.events.iter().collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The balance changes of one decoded transaction in `assets`.
pub fn tx_changes(
    info: &TxPlace<'_>,
    tx: &DecodedTx,
    toid: i64,
    assets: &[SacAsset],
) -> Result<TxChanges, MetaError> {
    let followed: HashMap<AssetKey, usize> = assets
        .iter()
        .enumerate()
        .map(|(i, a)| (a.key.clone(), i))
        .collect();
    let by_contract: HashMap<&str, usize> = assets
        .iter()
        .enumerate()
        .map(|(i, a)| (a.contract_id.as_str(), i))
        .collect();
    let payer = fee_source(&tx.envelope);
    let mut out = TxChanges::default();
    let mut entries = Deltas::new();
    let none = None;
    match &tx.meta {
        TransactionMeta::V0(ops) => {
            for o in ops.iter() {
                apply_changes(&o.changes, &followed, none, &mut entries)?;
            }
        }
        TransactionMeta::V1(m) => {
            apply_changes(&m.tx_changes, &followed, none, &mut entries)?;
            for o in m.operations.iter() {
                apply_changes(&o.changes, &followed, none, &mut entries)?;
            }
        }
        TransactionMeta::V2(m) => {
            apply_changes(&m.tx_changes_before, &followed, none, &mut entries)?;
            for o in m.operations.iter() {
                apply_changes(&o.changes, &followed, none, &mut entries)?;
            }
            apply_changes(&m.tx_changes_after, &followed, none, &mut entries)?;
        }
        TransactionMeta::V3(m) => {
            apply_changes(&m.tx_changes_before, &followed, none, &mut entries)?;
            for o in m.operations.iter() {
                apply_changes(&o.changes, &followed, none, &mut entries)?;
            }
            apply_changes(&m.tx_changes_after, &followed, Some(&payer), &mut entries)?;
        }
        TransactionMeta::V4(m) => {
            apply_changes(&m.tx_changes_before, &followed, none, &mut entries)?;
            for o in m.operations.iter() {
                apply_changes(&o.changes, &followed, none, &mut entries)?;
            }
            apply_changes(&m.tx_changes_after, &followed, none, &mut entries)?;
        }
    }
    if followed.contains_key(&AssetKey::native()) && tx.result.fee_charged != 0 {
        add(
            &mut entries,
            (payer.clone(), AssetKey::native()),
            -tx.result.fee_charged,
        )?;
        out.fee = Some((payer, tx.result.fee_charged));
    }
    // The issuer holds no balance in its own asset.
    entries.retain(|(h, a), v| *v != 0 && (a.issuer.is_empty() || *h != a.issuer));
    out.entries = entries;

    let mut events = Deltas::new();
    let mut any = false;
    for (n, ev) in meta_events(&tx.meta).into_iter().enumerate() {
        let Some(id) = &ev.contract_id else { continue };
        let contract = contract_strkey(id.0 .0);
        let Some(&i) = by_contract.get(contract.as_str()) else {
            continue;
        };
        let stellar_xdr::ContractEventBody::V0(body) = &ev.body;
        let rec = RpcEvent {
            type_: "contract".into(),
            ledger: info.ledger,
            ledger_closed_at: String::new(),
            contract_id: contract,
            id: format!("{toid:019}-{n:010}"),
            operation_index: None,
            transaction_index: None,
            tx_hash: tx.hash.clone(),
            in_successful_contract_call: info.successful,
            topic: body.topics.iter().filter_map(|t| encode(t).ok()).collect(),
            value: encode(&body.data).unwrap_or_default(),
        };
        let Ok(t) = decode_event(&rec) else {
            out.bad_events += 1;
            continue;
        };
        let fee = matches!(t.movement, Movement::Fee { .. });
        if !info.successful && !fee {
            continue;
        }
        any = true;
        out.fee_events |= fee;
        let key = &assets[i].key;
        for (holder, d) in t.movement.deltas() {
            if !key.issuer.is_empty() && holder == key.issuer {
                continue;
            }
            add(&mut events, (holder.to_string(), key.clone()), d)?;
        }
    }
    if any {
        events.retain(|_, v| *v != 0);
        out.events = Some(events);
    }
    Ok(out)
}

/// One holder whose entry changes and events disagree within a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// `G...` account.
    pub account: String,
    /// Asset.
    pub asset: AssetKey,
    /// Change by the ledger entries (applied).
    pub entries: i64,
    /// Change by the events (not applied).
    pub events: i64,
}

impl TxChanges {
    /// What the transaction says about classic events: with lumens followed, a charged fee
    /// without a `fee` event means the node emits none (`Some(false)`, a fee event:
    /// `Some(true)`); otherwise entry changes in a followed asset without any token event
    /// say `Some(false)`, with events `Some(true)`; `None` when it moved nothing followed.
    pub fn classic_signal(&self) -> Option<bool> {
        if self.fee.is_some() {
            return Some(self.fee_events);
        }
        match (&self.events, self.entries.is_empty()) {
            (Some(_), false) => Some(true),
            (None, false) => Some(false),
            _ => None,
        }
    }

    /// `(G account, asset)` pairs whose entry change differs from the events' (fees are
    /// compared only when the events include fee events).
    pub fn disagreements(&self) -> Vec<Disagreement> {
        let Some(events) = &self.events else {
            return Vec::new();
        };
        let mut entries = self.entries.clone();
        if !self.fee_events {
            if let Some((payer, fee)) = &self.fee {
                let k = (payer.clone(), AssetKey::native());
                *entries.entry(k).or_insert(0) += fee;
            }
        }
        let mut keys: Vec<&(String, AssetKey)> = entries
            .keys()
            .chain(events.keys())
            .filter(|(h, _)| h.starts_with('G'))
            .collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| {
                let (a, b) = (
                    entries.get(k).copied().unwrap_or(0),
                    events.get(k).copied().unwrap_or(0),
                );
                (a != b).then(|| Disagreement {
                    account: k.0.clone(),
                    asset: k.1.clone(),
                    entries: a,
                    events: b,
                })
            })
            .collect()
    }

    /// What to apply: the entry changes, plus the events' changes of holders that have no
    /// account or trustline entry (`C`, `B`, `L` addresses).
    pub fn applied(&self) -> Deltas {
        let mut out = self.entries.clone();
        if let Some(events) = &self.events {
            for (k, v) in events {
                if !k.0.starts_with('G') {
                    out.insert(k.clone(), *v);
                }
            }
        }
        out
    }
}

/// Stores in `batch` (as a balance check for each account) and logs where `c`'s entry
/// changes and token events disagree: reported, never averaged. `at` names the
/// transaction, `applied` the feed whose change was applied.
pub fn report_disagreements(
    c: &TxChanges,
    at: &dyn std::fmt::Display,
    applied: &str,
    batch: &mut super::batch::RpcBatch,
) {
    for d in c.disagreements() {
        tracing::warn!(
            account = %d.account,
            "balance disagreement: {at}: {} ledger entry changes {} but token events {}; the {applied} applied",
            d.asset.canonical(),
            crate::stellar::amount::format_stroops(d.entries),
            crate::stellar::amount::format_stroops(d.events),
        );
        batch.reconciled.push((
            d.account,
            vec![crate::stellar::reconciliation::BalanceCheck {
                asset: d.asset,
                expected: d.entries,
                actual: d.events,
            }],
        ));
    }
}

/// The TOID of a transaction (`ledger << 32 | application order << 12`).
pub fn tx_toid(ledger: u32, application_order: u32) -> i64 {
    (i64::from(ledger) << 32) | (i64::from(application_order & 0xfffff) << 12)
}

/// The TOID a `getTransactions` cursor names (the last transaction read).
pub fn cursor_toid(cursor: &str) -> Option<i64> {
    cursor.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{
        AccountEntry, AccountEntryExt, AccountId, AlphaNum4, AssetCode4, LedgerEntry,
        LedgerEntryExt, SequenceNumber, String32, Thresholds, TrustLineEntry, TrustLineEntryExt,
        Uint256,
    };

    fn id(b: u8) -> AccountId {
        AccountId(PublicKey::PublicKeyTypeEd25519(Uint256([b; 32])))
    }

    fn acct(b: u8, balance: i64) -> LedgerEntry {
        LedgerEntry {
            last_modified_ledger_seq: 5,
            data: LedgerEntryData::Account(AccountEntry {
                account_id: id(b),
                balance,
                seq_num: SequenceNumber(1),
                num_sub_entries: 0,
                inflation_dest: None,
                flags: 0,
                home_domain: String32::default(),
                thresholds: Thresholds([1, 0, 0, 0]),
                signers: Default::default(),
                ext: AccountEntryExt::V0,
            }),
            ext: LedgerEntryExt::V0,
        }
    }

    fn line(b: u8, issuer: u8, balance: i64) -> LedgerEntry {
        LedgerEntry {
            last_modified_ledger_seq: 5,
            data: LedgerEntryData::Trustline(TrustLineEntry {
                account_id: id(b),
                asset: TrustLineAsset::CreditAlphanum4(AlphaNum4 {
                    asset_code: AssetCode4(*b"UBEC"),
                    issuer: id(issuer),
                }),
                balance,
                limit: i64::MAX,
                flags: 1,
                ext: TrustLineEntryExt::V0,
            }),
            ext: LedgerEntryExt::V0,
        }
    }

    #[test]
    fn pairs_give_deltas_and_refunds_are_not_doubled() {
        let ubec = AssetKey {
            code: "UBEC".into(),
            issuer: account_strkey([9; 32]),
        };
        let followed: HashMap<AssetKey, usize> = [(AssetKey::native(), 0), (ubec.clone(), 1)]
            .into_iter()
            .collect();
        let changes: LedgerEntryChanges = vec![
            LedgerEntryChange::State(acct(1, 1_000)),
            LedgerEntryChange::Updated(acct(1, 700)),
            LedgerEntryChange::Created(acct(2, 300)),
            LedgerEntryChange::State(line(1, 9, 50)),
            LedgerEntryChange::Updated(line(1, 9, 20)),
            LedgerEntryChange::Created(line(2, 9, 30)),
        ]
        .try_into()
        .unwrap();
        let mut d = Deltas::new();
        apply_changes(&changes, &followed, None, &mut d).unwrap();
        let a1 = account_strkey([1; 32]);
        let a2 = account_strkey([2; 32]);
        assert_eq!(d[&(a1.clone(), AssetKey::native())], -300);
        assert_eq!(d[&(a2.clone(), AssetKey::native())], 300);
        assert_eq!(d[&(a1.clone(), ubec.clone())], -30);
        assert_eq!(d[&(a2, ubec)], 30);
        // A pre-23 refund of the fee source is skipped (feeCharged nets it).
        let refund: LedgerEntryChanges = vec![
            LedgerEntryChange::State(acct(1, 700)),
            LedgerEntryChange::Updated(acct(1, 750)),
        ]
        .try_into()
        .unwrap();
        let mut r = Deltas::new();
        apply_changes(&refund, &followed, Some(&a1), &mut r).unwrap();
        assert!(r.is_empty());
        // An update without its state is an error, not a guess.
        let bad: LedgerEntryChanges = vec![LedgerEntryChange::Updated(acct(1, 1))]
            .try_into()
            .unwrap();
        assert!(apply_changes(&bad, &followed, None, &mut Deltas::new()).is_err());
    }

    #[test]
    fn disagreements_are_reported_and_fees_compared_only_with_fee_events() {
        let x = AssetKey::native();
        let mut c = TxChanges {
            entries: [(("GA".to_string(), x.clone()), -130)]
                .into_iter()
                .collect(),
            fee: Some(("GA".into(), 30)),
            events: Some(
                [(("GA".to_string(), x.clone()), -100)]
                    .into_iter()
                    .collect(),
            ),
            fee_events: false,
            bad_events: 0,
        };
        assert!(c.disagreements().is_empty(), "no fee events: fee left out");
        c.fee_events = true;
        let d = c.disagreements();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].entries, d[0].events), (-130, -100));
        assert_eq!(c.classic_signal(), Some(true));
        c.events = None;
        c.fee_events = false;
        assert_eq!(c.classic_signal(), Some(false));
        c.fee = None;
        assert_eq!(c.classic_signal(), Some(false), "moved without events");
        c.entries.clear();
        assert_eq!(c.classic_signal(), None);
        assert_eq!(BalanceFeed::of_cursor(Some("meta:1")), BalanceFeed::Meta);
        assert_eq!(
            BalanceFeed::of_cursor(Some("1-2")).classic_events(),
            Some(true)
        );
        assert_eq!(BalanceFeed::of_cursor(None).classic_events(), None);
        assert_eq!(tx_toid(2, 3), (2 << 32) | (3 << 12));
    }
}
