//! The simulated Stellar ledger: accounts, trustlines, operations, ledgers and
//! a DEX trade series, generated deterministically from the seed.
//!
//! Every operation lives in its own transaction. Operations are stored in a
//! compact form and rendered to JSON on request. Balances are maintained while
//! generating, so replaying all `create_account` and `payment` operations from
//! the start gives exactly the balances the account endpoint shows (devnet does
//! not deduct transaction fees from balances unless `fee_stroops` is set). The root account (index 0) holds
//! the genesis lumens and is the only account not created by an operation.

use std::collections::HashMap;

use crate::config::StellarConfig;
use crate::encode::account_strkey;
use crate::error::DevnetError;
use crate::rng::{bytes32, mix, Rng};

/// Stroops per unit (7 decimals).
pub const STROOPS: i64 = 10_000_000;
/// Seconds between ledgers.
pub const LEDGER_SECONDS: i64 = 5;
/// Index of the genesis root account.
pub const ROOT: u32 = 0;
/// Index of the asset issuer account.
pub const ISSUER: u32 = 1;
/// Index of the distributor account (sends "dist:N" payouts).
pub const DISTRIBUTOR: u32 = 2;

/// Operation types devnet generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `create_account` (type_i 0).
    CreateAccount,
    /// `payment` (type_i 1).
    Payment,
    /// `change_trust` (type_i 6).
    ChangeTrust,
}

impl OpKind {
    /// Horizon's `type` string.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::CreateAccount => "create_account",
            OpKind::Payment => "payment",
            OpKind::ChangeTrust => "change_trust",
        }
    }
    /// Horizon's `type_i`.
    pub fn type_i(self) -> u8 {
        match self {
            OpKind::CreateAccount => 0,
            OpKind::Payment => 1,
            OpKind::ChangeTrust => 6,
        }
    }
}

/// One generated operation (each in its own transaction).
#[derive(Debug, Clone)]
pub struct Operation {
    /// Horizon id / paging token: ledger << 32 | tx order << 12 | 1.
    pub id: i64,
    /// Ledger sequence it was applied in.
    pub ledger: u32,
    /// Kind of operation.
    pub kind: OpKind,
    /// Source account index (funder / sender / trustor).
    pub source: u32,
    /// Destination / created account index (trustor for change_trust).
    pub to: u32,
    /// Asset index: 0 = native, 1.. = credit assets in config order.
    pub asset: u8,
    /// Amount in stroops (starting balance, payment amount or trust limit).
    pub amount: i64,
    /// Sequence number of the source account used by this transaction.
    pub source_sequence: i64,
    /// Text memo of the transaction.
    pub memo: Option<Box<str>>,
}

impl Operation {
    /// Paging token of the operation's transaction.
    pub fn tx_paging_token(&self) -> i64 {
        self.id & !0xfff
    }
    /// Whether Horizon lists it under `/payments`.
    pub fn is_payment(&self) -> bool {
        matches!(self.kind, OpKind::CreateAccount | OpKind::Payment)
    }
}

/// An account and its state.
#[derive(Debug, Clone)]
pub struct Account {
    /// G... strkey.
    pub id: String,
    /// Ledger that created it (1 = genesis).
    pub created_ledger: u32,
    /// Current sequence number.
    pub sequence: i64,
    /// Ledger of the last sequence bump.
    pub sequence_ledger: u32,
    /// Last ledger that changed the account entry.
    pub last_modified_ledger: u32,
    /// Balance per asset index in stroops; `None` = no trustline.
    pub balances: Vec<Option<i64>>,
    /// Last ledger that modified each balance / trustline.
    pub balance_modified: Vec<u32>,
    /// Indices (into the operation list) of operations it takes part in.
    pub ops: Vec<u32>,
}

/// A closed ledger.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// Sequence number.
    pub sequence: u32,
    /// Unix close time.
    pub closed_at: i64,
    /// Index of its first operation in the operation list.
    pub first_op: u32,
    /// Number of operations (= transactions).
    pub op_count: u32,
}

/// A payment queued by a test, applied at the next ledger close.
#[derive(Debug, Clone)]
struct PendingPayment {
    from: u32,
    to: u32,
    asset: u8,
    amount: i64,
    memo: Option<Box<str>>,
}

/// One DEX trade between lumens (base) and the first credit asset (counter).
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    /// "<operation id>-<n>".
    pub id: String,
    /// Ledger it happened in.
    pub ledger: u32,
    /// Unix close time of that ledger.
    pub time: i64,
    /// Lumens sold/bought, stroops.
    pub base_amount: i64,
    /// Counter asset amount, stroops.
    pub counter_amount: i64,
    /// Whether the base account sold lumens.
    pub base_is_seller: bool,
    /// Account of the base side.
    pub base_account: String,
    /// Account of the counter side.
    pub counter_account: String,
}

/// Deterministic Stellar network state.
#[derive(Debug)]
pub struct StellarChain {
    seed: u64,
    /// Configuration used to build it.
    pub config: StellarConfig,
    /// All accounts: 0 root, 1 issuer, 2 distributor, 3.. ordinary.
    pub accounts: Vec<Account>,
    /// Account index by strkey.
    pub by_id: HashMap<String, u32>,
    /// All operations in id order.
    pub ops: Vec<Operation>,
    /// All closed ledgers, index 0 = ledger 1 (genesis).
    pub ledgers: Vec<Ledger>,
    pending: Vec<PendingPayment>,
    rng: Rng,
    dist_counter: u64,
    bootstrap: Vec<BootstrapStep>,
    /// Two market-maker accounts trading on the DEX (not served by `/accounts`).
    pub market_makers: [String; 2],
}

#[derive(Debug, Clone)]
enum BootstrapStep {
    Create(u32, i64),
    Trust(u32, u8),
    Mint(u8, i64),
}

impl StellarChain {
    /// Builds the network and its initial history.
    pub fn new(seed: u64, config: StellarConfig) -> Self {
        let n_assets = config.asset_codes.len() + 1;
        let total = config.accounts + 3;
        let mut accounts = Vec::with_capacity(total);
        let mut by_id = HashMap::with_capacity(total);
        for i in 0..total as u32 {
            let id = account_strkey(&bytes32(&[seed, 0x5354_4143, i as u64]));
            by_id.insert(id.clone(), i);
            let mut balances = vec![None; n_assets];
            if i == ROOT {
                balances[0] = Some(100_000_000_000 * STROOPS);
            }
            accounts.push(Account {
                id,
                created_ledger: 1,
                sequence: 0,
                sequence_ledger: 1,
                last_modified_ledger: 1,
                balances,
                balance_modified: vec![1; n_assets],
                ops: Vec::new(),
            });
        }
        let mut rng = Rng::new(&[seed, 0x5354_4c52]);
        // Bootstrap: create accounts, open trustlines (some missing), mint.
        let mut bootstrap = vec![
            BootstrapStep::Create(ISSUER, 10_000 * STROOPS),
            BootstrapStep::Create(DISTRIBUTOR, 100_000 * STROOPS),
        ];
        for i in 3..total as u32 {
            bootstrap.push(BootstrapStep::Create(
                i,
                rng.range(1_000, 10_000) as i64 * STROOPS,
            ));
        }
        for a in 1..n_assets as u8 {
            bootstrap.push(BootstrapStep::Trust(DISTRIBUTOR, a));
        }
        for i in 3..total as u32 {
            for a in 1..n_assets as u8 {
                if rng.chance(0.7) {
                    bootstrap.push(BootstrapStep::Trust(i, a));
                }
            }
        }
        for a in 1..n_assets as u8 {
            bootstrap.push(BootstrapStep::Mint(a, 10_000_000 * STROOPS));
        }
        bootstrap.reverse();
        let market_makers = [
            account_strkey(&bytes32(&[seed, 0x4d4d, 0])),
            account_strkey(&bytes32(&[seed, 0x4d4d, 1])),
        ];
        let mut chain = Self {
            seed,
            config,
            accounts,
            by_id,
            ops: Vec::new(),
            ledgers: vec![Ledger {
                sequence: 1,
                closed_at: 0,
                first_op: 0,
                op_count: 0,
            }],
            pending: Vec::new(),
            rng,
            dist_counter: 0,
            bootstrap,
            market_makers,
        };
        chain.ledgers[0].closed_at = chain.config.genesis_time;
        let per = chain.config.ops_per_ledger.max(1);
        while chain.ops.len() < chain.config.initial_operations || !chain.bootstrap.is_empty() {
            let remaining = chain
                .config
                .initial_operations
                .saturating_sub(chain.ops.len());
            let n = if chain.bootstrap.is_empty() {
                remaining.min(per)
            } else {
                per
            };
            chain.close_ledger(n);
        }
        chain
    }

    /// Number of assets including native.
    pub fn asset_count(&self) -> usize {
        self.config.asset_codes.len() + 1
    }

    /// Latest closed ledger sequence.
    pub fn latest_ledger(&self) -> u32 {
        self.ledgers.len() as u32
    }

    /// Close time of a ledger.
    pub fn ledger_time(&self, ledger: u32) -> i64 {
        self.config.genesis_time + (ledger as i64 - 1) * LEDGER_SECONDS
    }

    /// Ledger header hash.
    pub fn ledger_hash(&self, ledger: u32) -> [u8; 32] {
        bytes32(&[self.seed, 0x4c48, ledger as u64])
    }

    /// Transaction hash of an operation (one operation per transaction).
    /// The hash embeds the operation id (masked) in its last 8 bytes, so a
    /// hash can be resolved without an index.
    pub fn tx_hash(&self, op: &Operation) -> [u8; 32] {
        self.tx_hash_for_id(op.id)
    }

    fn tx_hash_for_id(&self, id: i64) -> [u8; 32] {
        let mut h = bytes32(&[self.seed, 0x5458, id as u64]);
        let mask = mix(&[self.seed, 0x4d41_534b]);
        h[24..].copy_from_slice(&((id as u64) ^ mask).to_be_bytes());
        h
    }

    /// Index of the operation of a transaction hash.
    pub fn op_index_by_tx_hash(&self, hash: &[u8; 32]) -> Option<usize> {
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&hash[24..]);
        let id = (u64::from_be_bytes(tail) ^ mix(&[self.seed, 0x4d41_534b])) as i64;
        let i = self.ops.binary_search_by_key(&id, |o| o.id).ok()?;
        (self.tx_hash_for_id(id) == *hash).then_some(i)
    }

    /// The issuer account id.
    pub fn issuer(&self) -> &str {
        &self.accounts[ISSUER as usize].id
    }

    /// Closes `n` new ledgers, each with pending payments plus
    /// `ops_per_ledger` generated operations.
    pub fn advance(&mut self, n: u32) {
        for _ in 0..n {
            self.close_ledger(self.config.ops_per_ledger);
        }
    }

    /// Closes one ledger with the pending payments and `generated` new operations.
    pub fn close_ledger(&mut self, generated: usize) {
        let ledger = self.latest_ledger() + 1;
        let first_op = self.ops.len() as u32;
        let mut order = 0u32;
        for p in std::mem::take(&mut self.pending) {
            order += 1;
            self.apply(
                ledger,
                order,
                OpKind::Payment,
                p.from,
                p.to,
                p.asset,
                p.amount,
                p.memo,
            );
        }
        for _ in 0..generated {
            order += 1;
            self.generate_one(ledger, order);
        }
        self.ledgers.push(Ledger {
            sequence: ledger,
            closed_at: self.ledger_time(ledger),
            first_op,
            op_count: self.ops.len() as u32 - first_op,
        });
    }

    /// Queues a payment for the next ledger; returns the operation id it will get.
    pub fn submit_payment(
        &mut self,
        from: &str,
        to: &str,
        asset: &str,
        amount_stroops: i64,
        memo: Option<&str>,
    ) -> Result<i64, DevnetError> {
        let f = self.account_index(from)?;
        let t = self.account_index(to)?;
        let a = self.asset_index(asset)?;
        if amount_stroops <= 0 {
            return Err(DevnetError::Invalid("amount must be positive".into()));
        }
        if memo.is_some_and(|m| m.len() > 28) {
            return Err(DevnetError::Invalid(
                "text memo longer than 28 bytes".into(),
            ));
        }
        let issuer_sends = a != 0 && f == ISSUER;
        let issuer_gets = a != 0 && t == ISSUER;
        if !issuer_gets && self.accounts[t as usize].balances[a as usize].is_none() {
            return Err(DevnetError::Invalid(format!(
                "{to} has no trustline for {asset}"
            )));
        }
        if !issuer_sends {
            let queued: i64 = self
                .pending
                .iter()
                .filter(|p| p.from == f && p.asset == a)
                .map(|p| p.amount)
                .sum();
            let bal = self.accounts[f as usize].balances[a as usize].unwrap_or(0);
            if bal - queued < amount_stroops {
                return Err(DevnetError::Invalid(format!(
                    "{from} has insufficient {asset}"
                )));
            }
        }
        self.pending.push(PendingPayment {
            from: f,
            to: t,
            asset: a,
            amount: amount_stroops,
            memo: memo.map(Into::into),
        });
        let ledger = self.latest_ledger() as i64 + 1;
        Ok((ledger << 32) | ((self.pending.len() as i64) << 12) | 1)
    }

    /// Account index by strkey.
    pub fn account_index(&self, id: &str) -> Result<u32, DevnetError> {
        self.by_id
            .get(id)
            .copied()
            .filter(|&i| self.accounts[i as usize].created_ledger > 1 || i == ROOT)
            .ok_or_else(|| DevnetError::NotFound(format!("account {id}")))
    }

    /// Asset index from "native"/"XLM" or "CODE" or "CODE:ISSUER".
    pub fn asset_index(&self, asset: &str) -> Result<u8, DevnetError> {
        if asset == "native" || asset == "XLM" {
            return Ok(0);
        }
        let (code, issuer) = match asset.split_once(':') {
            Some((c, i)) => (c, Some(i)),
            None => (asset, None),
        };
        if issuer.is_some_and(|i| i != self.issuer()) {
            return Err(DevnetError::NotFound(format!("asset {asset}")));
        }
        self.config
            .asset_codes
            .iter()
            .position(|c| c == code)
            .map(|p| p as u8 + 1)
            .ok_or_else(|| DevnetError::NotFound(format!("asset {asset}")))
    }

    /// Asset code of a credit asset index (None for native).
    pub fn asset_code(&self, asset: u8) -> Option<&str> {
        if asset == 0 {
            None
        } else {
            self.config
                .asset_codes
                .get(asset as usize - 1)
                .map(String::as_str)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        ledger: u32,
        order: u32,
        kind: OpKind,
        source: u32,
        to: u32,
        asset: u8,
        amount: i64,
        memo: Option<Box<str>>,
    ) {
        let id = ((ledger as i64) << 32) | ((order as i64) << 12) | 1;
        let index = self.ops.len() as u32;
        let src = &mut self.accounts[source as usize];
        src.sequence += 1;
        src.sequence_ledger = ledger;
        src.last_modified_ledger = ledger;
        let source_sequence = src.sequence;
        let fee = self.config.fee_stroops;
        if fee > 0 {
            self.debit(source, 0, fee, ledger);
            self.accounts[source as usize].last_modified_ledger = ledger;
        }
        match kind {
            OpKind::CreateAccount => {
                self.debit(source, 0, amount, ledger);
                let dst = &mut self.accounts[to as usize];
                dst.created_ledger = ledger;
                dst.sequence = (ledger as i64) << 32;
                dst.sequence_ledger = ledger;
                dst.balances[0] = Some(amount);
                dst.balance_modified[0] = ledger;
                dst.last_modified_ledger = ledger;
            }
            OpKind::Payment => {
                if !(asset != 0 && source == ISSUER) {
                    self.debit(source, asset, amount, ledger);
                }
                if !(asset != 0 && to == ISSUER) {
                    let dst = &mut self.accounts[to as usize];
                    let b = dst.balances[asset as usize].get_or_insert(0);
                    *b += amount;
                    dst.balance_modified[asset as usize] = ledger;
                    dst.last_modified_ledger = ledger;
                }
            }
            OpKind::ChangeTrust => {
                let acc = &mut self.accounts[source as usize];
                acc.balances[asset as usize].get_or_insert(0);
                acc.balance_modified[asset as usize] = ledger;
            }
        }
        self.accounts[source as usize].ops.push(index);
        if to != source {
            self.accounts[to as usize].ops.push(index);
        }
        self.ops.push(Operation {
            id,
            ledger,
            kind,
            source,
            to,
            asset,
            amount,
            source_sequence,
            memo,
        });
    }

    fn debit(&mut self, account: u32, asset: u8, amount: i64, ledger: u32) {
        let acc = &mut self.accounts[account as usize];
        let b = acc.balances[asset as usize].get_or_insert(0);
        *b -= amount;
        acc.balance_modified[asset as usize] = ledger;
    }

    fn generate_one(&mut self, ledger: u32, order: u32) {
        if let Some(step) = self.bootstrap.pop() {
            match step {
                BootstrapStep::Create(i, amount) => self.apply(
                    ledger,
                    order,
                    OpKind::CreateAccount,
                    ROOT,
                    i,
                    0,
                    amount,
                    None,
                ),
                BootstrapStep::Trust(i, a) => {
                    self.apply(ledger, order, OpKind::ChangeTrust, i, i, a, i64::MAX, None)
                }
                BootstrapStep::Mint(a, amount) => {
                    let memo = Some("mint".into());
                    self.apply(
                        ledger,
                        order,
                        OpKind::Payment,
                        ISSUER,
                        DISTRIBUTOR,
                        a,
                        amount,
                        memo,
                    )
                }
            }
            return;
        }
        let n_assets = self.asset_count() as u64;
        let n_accounts = self.accounts.len() as u64;
        let roll = self.rng.below(100);
        if roll < 30 {
            // Distribution payout: distributor -> holder of a credit asset.
            let a = self.rng.range(1, n_assets - 1) as u8;
            let to = self.rng.range(3, n_accounts - 1) as u32;
            let amount = self.rng.range(STROOPS as u64, 500 * STROOPS as u64) as i64;
            let have = self.accounts[DISTRIBUTOR as usize].balances[a as usize].unwrap_or(0);
            if self.accounts[to as usize].balances[a as usize].is_some() && have >= amount {
                self.dist_counter += 1;
                let memo = Some(format!("dist:{}", self.dist_counter).into());
                self.apply(
                    ledger,
                    order,
                    OpKind::Payment,
                    DISTRIBUTOR,
                    to,
                    a,
                    amount,
                    memo,
                );
                return;
            }
        } else if roll < 38 {
            // A missing trustline gets opened.
            let acc = self.rng.range(3, n_accounts - 1) as u32;
            let a = self.rng.range(1, n_assets - 1) as u8;
            if self.accounts[acc as usize].balances[a as usize].is_none() {
                self.apply(
                    ledger,
                    order,
                    OpKind::ChangeTrust,
                    acc,
                    acc,
                    a,
                    i64::MAX,
                    None,
                );
                return;
            }
        }
        // Account to account payment in an asset both hold.
        for _ in 0..8 {
            let from = self.rng.range(3, n_accounts - 1) as u32;
            let to = self.rng.range(3, n_accounts - 1) as u32;
            let a = self.rng.below(n_assets) as u8;
            if from == to {
                continue;
            }
            let bal = self.accounts[from as usize].balances[a as usize].unwrap_or(0);
            if bal < 10 || self.accounts[to as usize].balances[a as usize].is_none() {
                continue;
            }
            let amount = self.rng.range(1, (bal / 5).max(1) as u64) as i64;
            let memo = if self.rng.chance(0.3) {
                Some(format!("inv-{}", self.rng.below(100_000)).into())
            } else {
                None
            };
            self.apply(ledger, order, OpKind::Payment, from, to, a, amount, memo);
            return;
        }
        // Fallback: small lumen top-up from the root.
        let to = self.rng.range(3, n_accounts - 1) as u32;
        let amount = self.rng.range(1, 100) as i64 * STROOPS;
        self.apply(ledger, order, OpKind::Payment, ROOT, to, 0, amount, None);
    }

    /// Index of the first operation with id greater than `cursor`.
    pub fn ops_after(&self, cursor: i64) -> usize {
        self.ops.partition_point(|o| o.id <= cursor)
    }

    /// Deterministic XLM -> first-asset DEX trades of one ledger.
    pub fn trades_in_ledger(&self, ledger: u32) -> Vec<Trade> {
        if ledger < 2 || ledger > self.latest_ledger() || self.config.asset_codes.is_empty() {
            return Vec::new();
        }
        let mut rng = Rng::new(&[self.seed, 0x5452, ledger as u64]);
        let count = rng.below(3);
        let time = self.ledger_time(ledger);
        (0..count)
            .map(|n| {
                let price = self.dex_price(ledger) * (1.0 + (rng.unit() - 0.5) * 0.02);
                let base_amount = rng.range(STROOPS as u64, 1_000 * STROOPS as u64) as i64;
                let counter_amount = ((base_amount as f64) * price).round().max(1.0) as i64;
                let seller = rng.chance(0.5);
                let op_id = ((ledger as i64) << 32) | ((1000 + n as i64) << 12) | 1;
                Trade {
                    id: format!("{op_id}-0"),
                    ledger,
                    time,
                    base_amount,
                    counter_amount,
                    base_is_seller: seller,
                    base_account: self.market_makers[n as usize % 2].clone(),
                    counter_account: self.market_makers[(n as usize + 1) % 2].clone(),
                }
            })
            .collect()
    }

    /// Mid price (counter per base) of the DEX pair at a ledger: a smooth path.
    pub fn dex_price(&self, ledger: u32) -> f64 {
        let phase = (mix(&[self.seed, 0x5048]) % 1000) as f64 / 100.0;
        0.5 * (1.0 + 0.2 * ((ledger as f64) / 360.0 + phase).sin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> StellarChain {
        StellarChain::new(
            7,
            StellarConfig {
                initial_operations: 500,
                ..StellarConfig::default()
            },
        )
    }

    #[test]
    fn replaying_payments_gives_balances() {
        let mut chain = small();
        chain.advance(20);
        let n_assets = chain.asset_count();
        let mut replay: Vec<Vec<Option<i64>>> = vec![vec![None; n_assets]; chain.accounts.len()];
        for op in &chain.ops {
            match op.kind {
                OpKind::CreateAccount => {
                    replay[op.to as usize][0] = Some(op.amount);
                    if op.source != ROOT {
                        *replay[op.source as usize][0].get_or_insert(0) -= op.amount;
                    }
                }
                OpKind::ChangeTrust => {
                    replay[op.source as usize][op.asset as usize].get_or_insert(0);
                }
                OpKind::Payment => {
                    let a = op.asset as usize;
                    if op.source != ROOT && !(a != 0 && op.source == ISSUER) {
                        *replay[op.source as usize][a].get_or_insert(0) -= op.amount;
                    }
                    if !(a != 0 && op.to == ISSUER) {
                        *replay[op.to as usize][a].get_or_insert(0) += op.amount;
                    }
                }
            }
        }
        for (i, acc) in chain.accounts.iter().enumerate().skip(1) {
            assert_eq!(acc.balances, replay[i], "account {i}");
            assert!(acc.balances.iter().flatten().all(|b| *b >= 0));
        }
        assert!(chain
            .ops
            .iter()
            .any(|o| o.memo.as_deref().is_some_and(|m| m.starts_with("dist:"))));
    }

    #[test]
    fn ids_increase_and_follow_toid() {
        let chain = small();
        assert!(chain.ops.len() >= 500);
        assert!(chain.ops.windows(2).all(|w| w[0].id < w[1].id));
        for op in &chain.ops {
            assert_eq!(op.id >> 32, op.ledger as i64);
        }
        // Some ordinary account lacks some trustline.
        assert!(chain.accounts[3..]
            .iter()
            .any(|a| a.balances.iter().any(Option::is_none)));
    }

    #[test]
    fn submitted_payment_lands_in_next_ledger() {
        let mut chain = small();
        let from = chain.accounts[3].id.clone();
        let to = chain.accounts[4].id.clone();
        let before = chain.accounts[4].balances[0];
        let id = chain
            .submit_payment(&from, &to, "native", 12_345, Some("dist:test"))
            .unwrap();
        chain.advance(1);
        let op = chain.ops.iter().find(|o| o.id == id).unwrap();
        assert_eq!(op.ledger, chain.latest_ledger());
        assert_eq!(op.memo.as_deref(), Some("dist:test"));
        assert!(chain
            .submit_payment(&from, &to, "native", i64::MAX / 2, None)
            .is_err());
        assert!(chain
            .submit_payment("GNOPE", &to, "native", 1, None)
            .is_err());
        let _ = before;
    }

    #[test]
    fn same_seed_same_chain() {
        let a = small();
        let b = small();
        assert_eq!(a.ops.len(), b.ops.len());
        assert_eq!(a.accounts[5].balances, b.accounts[5].balances);
        assert_eq!(a.trades_in_ledger(10), b.trades_in_ledger(10));
    }
}
