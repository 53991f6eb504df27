//! What the RPC token-event source fetches and [`super::writer::RpcWriter`] writes.
//! Pure data, plus [`Ledgerbook`]: applying decoded token events to running balances.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::events::{Movement, TokenEvent};
use crate::stellar::horizon::AssetKey;

/// The hasher of the running balances and of a batch's row index: hashed a few times per
/// token event, where SipHash was 3% of a backfill's fetch side. Seeded per map.
type Fast = foldhash::fast::RandomState;

/// One balance change: an account's delta in one asset caused by the events of one TOID
/// (operation, or transaction for fee events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// Holder (`G`, `C`, `B`, `L` address).
    pub account: String,
    /// Asset.
    pub asset: AssetKey,
    /// TOID of the events (stored as the history's operation id).
    pub toid: i64,
    /// Ledger.
    pub ledger: i64,
    /// Ledger close time.
    pub at: DateTime<Utc>,
    /// Signed change in stroops (summed over the TOID's events in this batch).
    pub delta: i64,
    /// Balance after.
    pub balance: i64,
}

/// A current balance after the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceRow {
    /// Holder.
    pub account: String,
    /// Asset.
    pub asset: AssetKey,
    /// Stroops.
    pub balance: i64,
    /// Ledger of the last change.
    pub ledger: i64,
}

/// One fetch's rows.
#[derive(Debug, Clone, Default)]
pub struct RpcBatch {
    /// Holders seen for the first time, `(address, discovered_via)`.
    pub accounts: Vec<(String, String)>,
    /// Balance history, in event order.
    pub history: Vec<HistoryRow>,
    /// Current balances of every `(holder, asset)` the batch changed.
    pub balances: Vec<BalanceRow>,
    /// Token events applied.
    pub applied: u64,
    /// Events skipped (unknown topics, shapes, malformed XDR), by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// `set_authorized` events seen `(holder, asset, authorized)`.
    pub authorizations: Vec<(String, AssetKey, bool)>,
    /// Newest ledger the batch covers.
    pub ledger: Option<i64>,
    /// Reconciliation against ledger entries: each account compared, with its checks.
    pub reconciled: Vec<(String, Vec<crate::stellar::reconciliation::BalanceCheck>)>,
    /// Index of `history` rows by `(toid, holder, asset)`: one row per key. The table holds
    /// positions in `history` (hashed from the row's own fields), so indexing a row copies
    /// no string.
    rows: hashbrown::HashTable<usize>,
    /// The hasher of `rows`.
    row_hasher: Fast,
}

/// The hash of a history row's key.
fn row_hash(hasher: &Fast, toid: i64, holder: &str, asset: &AssetKey) -> u64 {
    use std::hash::BuildHasher;
    hasher.hash_one((toid, holder, asset))
}

impl RpcBatch {
    /// A batch of just these history rows (tests of the writer).
    #[cfg(test)]
    pub(crate) fn of_history(history: Vec<HistoryRow>) -> Self {
        Self {
            history,
            ..Default::default()
        }
    }
}

/// Running balances and the rows they produce. `get` must be filled from the database
/// (see [`Ledgerbook::missing`]) before events touching a holder are applied.
#[derive(Debug, Default)]
pub struct Ledgerbook {
    /// Stroops by asset, then holder (looked up by `&str`, without building a key).
    balances: HashMap<AssetKey, HashMap<String, i64, Fast>, Fast>,
    loaded: HashSet<String, Fast>,
}

impl Ledgerbook {
    /// Forgets everything (after a failed write).
    pub fn clear(&mut self) {
        self.balances.clear();
        self.loaded.clear();
    }

    /// Holders among `addresses` whose stored balances are not loaded yet.
    pub fn missing<'a>(&self, addresses: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut out: Vec<String> = addresses
            .filter(|a| !self.loaded.contains(*a))
            .map(str::to_string)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Records the stored balances of `holders` (rows `(holder, asset, stroops)`).
    pub fn load(&mut self, holders: &[String], rows: Vec<(String, AssetKey, i64)>) {
        self.loaded.extend(holders.iter().cloned());
        for (h, a, b) in rows {
            self.balances.entry(a).or_default().insert(h, b);
        }
    }

    /// Whether `holder`'s balances are loaded (or known to be empty).
    pub fn is_loaded(&self, holder: &str) -> bool {
        self.loaded.contains(holder)
    }

    /// Current balance.
    pub fn get(&self, holder: &str, asset: &AssetKey) -> i64 {
        self.balances
            .get(asset)
            .and_then(|m| m.get(holder))
            .copied()
            .unwrap_or(0)
    }

    /// Applies `event` (of `asset`) to the balances, appending to `batch`. The asset's
    /// issuer holds no balance in it and is skipped.
    pub fn apply(
        &mut self,
        event: &TokenEvent,
        asset: &AssetKey,
        at: DateTime<Utc>,
        batch: &mut RpcBatch,
    ) -> Result<(), String> {
        if let Movement::SetAuthorized { id, authorized } = &event.movement {
            batch
                .authorizations
                .push((id.clone(), asset.clone(), *authorized));
            return Ok(());
        }
        let ledger = i64::from(event.ledger);
        for (holder, delta) in event.movement.deltas() {
            if !asset.issuer.is_empty() && holder == asset.issuer {
                continue;
            }
            self.apply_delta(holder, asset, event.toid, ledger, at, delta, batch)?;
        }
        batch.applied += 1;
        batch.ledger = Some(batch.ledger.map_or(ledger, |l| l.max(ledger)));
        Ok(())
    }

    /// Adds `delta` to `holder`'s balance in `asset` as the change of TOID `toid` (one
    /// history row per `(toid, holder, asset)`).
    #[allow(clippy::too_many_arguments)]
    pub fn apply_delta(
        &mut self,
        holder: &str,
        asset: &AssetKey,
        toid: i64,
        ledger: i64,
        at: DateTime<Utc>,
        delta: i64,
        batch: &mut RpcBatch,
    ) -> Result<(), String> {
        if !self.balances.contains_key(asset) {
            self.balances.insert(asset.clone(), HashMap::default());
        }
        let per = self
            .balances
            .get_mut(asset)
            .ok_or_else(|| format!("no balances of {asset:?}"))?;
        if !per.contains_key(holder) {
            per.insert(holder.to_string(), 0);
        }
        let bal = per
            .get_mut(holder)
            .ok_or_else(|| format!("no balance of {holder}"))?;
        let next = bal
            .checked_add(delta)
            .ok_or_else(|| format!("balance of {holder} overflows"))?;
        *bal = next;
        // Changes of one TOID touching the same holder and asset: one row.
        let RpcBatch {
            history,
            rows,
            row_hasher,
            ..
        } = &mut *batch;
        let hash = row_hash(row_hasher, toid, holder, asset);
        let same = |&i: &usize| {
            history
                .get(i)
                .is_some_and(|r| r.toid == toid && r.account == holder && r.asset == *asset)
        };
        match rows.find(hash, same).copied() {
            Some(i) => {
                if let Some(r) = history.get_mut(i) {
                    r.delta += delta;
                    r.balance = next;
                }
            }
            None => {
                rows.insert_unique(hash, history.len(), |&i| {
                    history
                        .get(i)
                        .map_or(0, |r| row_hash(row_hasher, r.toid, &r.account, &r.asset))
                });
                history.push(HistoryRow {
                    account: holder.to_string(),
                    asset: asset.clone(),
                    toid,
                    ledger,
                    at,
                    delta,
                    balance: next,
                });
            }
        }
        batch.ledger = Some(batch.ledger.map_or(ledger, |l| l.max(ledger)));
        Ok(())
    }

    /// Fills `batch.balances` with the final balance of every `(holder, asset)` its history
    /// touched.
    pub fn finish(&self, batch: &mut RpcBatch) {
        let mut last: BTreeMap<(&str, &AssetKey), i64> = BTreeMap::new();
        for r in &batch.history {
            last.insert((r.account.as_str(), &r.asset), r.ledger);
        }
        batch.balances = last
            .into_iter()
            .map(|((h, a), ledger)| BalanceRow {
                account: h.to_string(),
                asset: a.clone(),
                balance: self.get(h, a),
                ledger,
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(toid: i64, m: Movement) -> TokenEvent {
        TokenEvent {
            id: format!("{toid:019}-0000000000"),
            toid,
            index: 0,
            ledger: (toid >> 32) as u32,
            closed_at: String::new(),
            contract_id: "C".into(),
            tx_hash: String::new(),
            asset: Some("native".into()),
            movement: m,
        }
    }

    #[test]
    fn transfers_fees_refunds_and_issuer() {
        let xlm = AssetKey::native();
        let ubec = AssetKey {
            code: "UBEC".into(),
            issuer: "GI".into(),
        };
        let mut book = Ledgerbook::default();
        let mut b = RpcBatch::default();
        let at = Utc::now();
        let t = |from: &str, to: &str, amount| Movement::Transfer {
            from: from.into(),
            to: to.into(),
            amount,
            to_muxed_id: None,
        };
        book.apply(&ev(1 << 32, t("GA", "GB", 100)), &xlm, at, &mut b)
            .unwrap();
        let fee = |amount| Movement::Fee {
            from: "GA".into(),
            amount,
        };
        book.apply(&ev(2 << 32, fee(50)), &xlm, at, &mut b).unwrap();
        book.apply(&ev(2 << 32, fee(-20)), &xlm, at, &mut b)
            .unwrap();
        // The issuer sends: only the recipient's balance moves.
        book.apply(&ev(3 << 32, t("GI", "GB", 7)), &ubec, at, &mut b)
            .unwrap();
        book.apply(
            &ev(
                4 << 32,
                Movement::Clawback {
                    from: "GB".into(),
                    amount: 2,
                },
            ),
            &ubec,
            at,
            &mut b,
        )
        .unwrap();
        book.finish(&mut b);
        assert_eq!(book.get("GA", &xlm), -130);
        assert_eq!(book.get("GB", &xlm), 100);
        assert_eq!(book.get("GB", &ubec), 5);
        assert_eq!(book.get("GI", &ubec), 0);
        // Fee and refund of one transaction: one history row with the net delta.
        let fee_rows: Vec<_> = b.history.iter().filter(|r| r.toid == 2 << 32).collect();
        assert_eq!(fee_rows.len(), 1);
        assert_eq!((fee_rows[0].delta, fee_rows[0].balance), (-30, -130));
        assert_eq!(b.applied, 5);
        assert_eq!(b.balances.len(), 3);
        assert_eq!(b.ledger, Some(4));
    }
}
