//! Ledger entry changes of devnet's transactions, for the `resultMetaXdr` Stellar RPC
//! serves: the account and trustline entries each operation touched, before (`State`) and
//! after (`Updated`, or `Created` for a new account or trustline), as stellar-core writes
//! them into `TransactionMeta`. Fees are charged in fee processing, which is not part of
//! the transaction's meta: the `State` entries already show the balance after the fee.
//!
//! The entries are rebuilt by replaying the operations from genesis with the rules of
//! [`StellarChain`]'s generator (checked against its balances in the tests), once, then
//! extended as ledgers close.

use std::sync::Mutex;

use stellar_xdr::{
    AccountEntry, AccountEntryExt, AccountId, Asset, LedgerEntry, LedgerEntryChange,
    LedgerEntryChanges, LedgerEntryData, LedgerEntryExt, PublicKey, SequenceNumber, String32,
    Thresholds, TrustLineAsset, TrustLineEntry, TrustLineEntryExt, Uint256,
};

use super::model::{OpKind, StellarChain, ISSUER, ROOT};

/// The root's lumens at genesis (as [`StellarChain::new`] gives them).
const GENESIS_LUMENS: i64 = 100_000_000_000 * super::model::STROOPS;

/// One entry an operation touched: `(account, asset index, before, after, sequence
/// before, sequence after)`; `before = None` when the operation created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    /// Account index.
    pub account: u32,
    /// Asset index (0 = the account entry's lumens).
    pub asset: u8,
    /// Balance before (None: created by this operation).
    pub before: Option<i64>,
    /// Balance after.
    pub after: i64,
    /// The account's sequence number after the operation.
    pub sequence: i64,
}

/// What one transaction changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxChanges {
    /// Source lumens after the fee (the `State` of `txChangesBefore`).
    pub source_after_fee: i64,
    /// Source sequence before and after the bump.
    pub sequence: (i64, i64),
    /// Entries the operation changed, in order.
    pub touched: Vec<Touch>,
}

/// Replay state: balances and sequences after the operations replayed so far.
#[derive(Debug, Default)]
struct Replay {
    balances: Vec<Vec<Option<i64>>>,
    sequences: Vec<i64>,
    changes: Vec<TxChanges>,
}

/// The cached replay (one per RPC service).
#[derive(Debug, Default)]
pub struct MetaCache {
    replay: Mutex<Replay>,
}

impl Replay {
    fn extend(&mut self, chain: &StellarChain) {
        if self.balances.is_empty() {
            let n_assets = chain.asset_count();
            self.balances = vec![vec![None; n_assets]; chain.accounts.len()];
            self.balances[ROOT as usize][0] = Some(GENESIS_LUMENS);
            self.sequences = vec![0; chain.accounts.len()];
        }
        let fee = chain.config.fee_stroops;
        for op in &chain.ops[self.changes.len()..] {
            let (src, to, a) = (op.source as usize, op.to as usize, op.asset as usize);
            let seq_before = self.sequences[src];
            self.sequences[src] += 1;
            if fee > 0 {
                *self.balances[src][0].get_or_insert(0) -= fee;
            }
            let source_after_fee = self.balances[src][0].unwrap_or(0);
            let mut touched = Vec::new();
            let mut change = |r: &mut Replay, acc: usize, asset: usize, d: i64| {
                let b = &mut r.balances;
                let before = b[acc][asset];
                let after = before.unwrap_or(0) + d;
                b[acc][asset] = Some(after);
                touched.push(Touch {
                    account: acc as u32,
                    asset: asset as u8,
                    before,
                    after,
                    sequence: r.sequences[acc],
                });
            };
            match op.kind {
                OpKind::CreateAccount => {
                    change(self, src, 0, -op.amount);
                    self.sequences[to] = i64::from(op.ledger) << 32;
                    change(self, to, 0, op.amount);
                }
                OpKind::Payment => {
                    if !(a != 0 && op.source == ISSUER) {
                        change(self, src, a, -op.amount);
                    }
                    if !(a != 0 && op.to == ISSUER) {
                        change(self, to, a, op.amount);
                    }
                }
                OpKind::ChangeTrust => {
                    if self.balances[src][a].is_none() {
                        change(self, src, a, 0);
                    }
                }
            }
            self.changes.push(TxChanges {
                source_after_fee,
                sequence: (seq_before, self.sequences[src]),
                touched,
            });
        }
    }
}

impl MetaCache {
    /// The changes of operation (= transaction) `i`.
    pub fn changes(&self, chain: &StellarChain, i: usize) -> TxChanges {
        let mut r = match self.replay.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        if r.changes.len() <= i {
            r.extend(chain);
        }
        r.changes.get(i).cloned().unwrap_or_default()
    }

    /// `(txChangesBefore, operation changes)` of operation `i` as XDR.
    pub fn xdr(
        &self,
        chain: &StellarChain,
        i: usize,
        keys: &[[u8; 32]],
        assets: &[(Asset, String, [u8; 32])],
    ) -> (LedgerEntryChanges, LedgerEntryChanges) {
        let c = self.changes(chain, i);
        let op = &chain.ops[i];
        let ledger = op.ledger;
        let id = |acc: u32| AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(keys[acc as usize])));
        let account = |acc: u32, balance: i64, seq: i64| LedgerEntry {
            last_modified_ledger_seq: ledger,
            data: LedgerEntryData::Account(AccountEntry {
                account_id: id(acc),
                balance,
                seq_num: SequenceNumber(seq),
                num_sub_entries: 0,
                inflation_dest: None,
                flags: 0,
                home_domain: String32::default(),
                thresholds: Thresholds([1, 0, 0, 0]),
                signers: Default::default(),
                ext: AccountEntryExt::V0,
            }),
            ext: LedgerEntryExt::V0,
        };
        let trustline = |acc: u32, asset: u8, balance: i64| {
            let line = match &assets[asset as usize].0 {
                Asset::CreditAlphanum4(a) => TrustLineAsset::CreditAlphanum4(a.clone()),
                Asset::CreditAlphanum12(a) => TrustLineAsset::CreditAlphanum12(a.clone()),
                Asset::Native => TrustLineAsset::Native,
            };
            LedgerEntry {
                last_modified_ledger_seq: ledger,
                data: LedgerEntryData::Trustline(TrustLineEntry {
                    account_id: id(acc),
                    asset: line,
                    balance,
                    limit: i64::MAX,
                    flags: 1,
                    ext: TrustLineEntryExt::V0,
                }),
                ext: LedgerEntryExt::V0,
            }
        };
        let (seq0, seq1) = c.sequence;
        let before = vec![
            LedgerEntryChange::State(account(op.source, c.source_after_fee, seq0)),
            LedgerEntryChange::Updated(account(op.source, c.source_after_fee, seq1)),
        ];
        let mut ops = Vec::new();
        for t in &c.touched {
            let seq = t.sequence;
            let entry = |b: i64| {
                if t.asset == 0 {
                    account(t.account, b, seq)
                } else {
                    trustline(t.account, t.asset, b)
                }
            };
            match t.before {
                Some(b) => {
                    ops.push(LedgerEntryChange::State(entry(b)));
                    ops.push(LedgerEntryChange::Updated(entry(t.after)));
                }
                None => ops.push(LedgerEntryChange::Created(entry(t.after))),
            }
        }
        (
            before.try_into().unwrap_or_default(),
            ops.try_into().unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StellarConfig;

    #[test]
    fn replay_gives_the_chain_balances() {
        let chain = StellarChain::new(
            3,
            StellarConfig {
                initial_operations: 800,
                fee_stroops: 100,
                ..StellarConfig::default()
            },
        );
        let cache = MetaCache::default();
        let _ = cache.changes(&chain, chain.ops.len() - 1);
        let r = cache.replay.lock().unwrap();
        for (i, a) in chain.accounts.iter().enumerate() {
            assert_eq!(r.balances[i], a.balances, "account {i}");
            assert_eq!(r.sequences[i], a.sequence, "sequence of {i}");
        }
    }
}
