//! A simulated Bitcoin chain whose transactions carry a realistic price signal.
//!
//! Blocks come 144 per UTC day from `start_time`. Each block's transactions
//! are derived lazily from (seed, height, branch, index), so any block can be
//! rendered without storing it. Most transactions pay a round USD amount
//! ($5 .. $1000) at the day's price (noise within +-0.5%, rounded to sats)
//! plus a change output: exactly what the UTXOracle estimator looks for.
//! Noise transactions (random amounts, many outputs, many inputs, OP_RETURN)
//! and a coinbase complete each block.

use std::collections::HashMap;

use crate::config::BitcoinConfig;
use crate::rng::{bytes32, mix, Rng};

/// Blocks per UTC day.
pub const BLOCKS_PER_DAY: u64 = 144;
/// Satoshis per bitcoin.
pub const SATS: u64 = 100_000_000;
/// Round USD amounts paid by signal transactions.
pub const ROUND_USD: [u64; 8] = [5, 10, 20, 50, 100, 200, 500, 1000];
const ROUND_WEIGHTS: [u64; 8] = [10, 15, 20, 20, 15, 10, 6, 4];

/// An output script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// Pay to witness public key hash.
    P2wpkh([u8; 20]),
    /// Data carrier.
    OpReturn(Vec<u8>),
}

/// A transaction output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOut {
    /// Script.
    pub script: Script,
    /// Value in sats.
    pub value: u64,
}

/// A transaction input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxIn {
    /// Spent transaction (all-zero for coinbase).
    pub prev_txid: [u8; 32],
    /// Spent output index.
    pub vout: u32,
    /// Spent output (None for coinbase).
    pub prevout: Option<TxOut>,
    /// scriptSig (empty for segwit spends).
    pub scriptsig: Vec<u8>,
    /// Witness items.
    pub witness: Vec<Vec<u8>>,
    /// nSequence.
    pub sequence: u32,
}

/// A transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    /// Transaction id.
    pub txid: [u8; 32],
    /// Inputs.
    pub vin: Vec<TxIn>,
    /// Outputs.
    pub vout: Vec<TxOut>,
    /// Coinbase?
    pub coinbase: bool,
}

impl Tx {
    /// Fee in sats.
    pub fn fee(&self) -> u64 {
        if self.coinbase {
            return 0;
        }
        let inputs: u64 = self
            .vin
            .iter()
            .filter_map(|i| i.prevout.as_ref())
            .map(|o| o.value)
            .sum();
        inputs.saturating_sub(self.vout.iter().map(|o| o.value).sum())
    }

    /// (size, weight) of the serialized transaction.
    pub fn size_weight(&self) -> (u64, u64) {
        let mut base = 4 + 1 + 1 + 4;
        for i in &self.vin {
            base += 32 + 4 + 1 + 4 + i.scriptsig.len() as u64;
        }
        for o in &self.vout {
            base += 8
                + 1
                + match &o.script {
                    Script::P2wpkh(_) => 22,
                    Script::OpReturn(d) => 2 + d.len() as u64,
                };
        }
        let witness: u64 = 2 + self
            .vin
            .iter()
            .map(|i| 1 + i.witness.iter().map(|w| 1 + w.len() as u64).sum::<u64>())
            .sum::<u64>();
        (base + witness, base * 4 + witness)
    }
}

/// A block header summary.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockInfo {
    /// Height.
    pub height: u64,
    /// Block hash.
    pub hash: [u8; 32],
    /// Previous block hash.
    pub prev: [u8; 32],
    /// Unix time.
    pub timestamp: i64,
    /// Branch id (changes on reorg).
    pub branch: u32,
}

/// Deterministic Bitcoin chain state.
#[derive(Debug)]
pub struct BitcoinChain {
    seed: u64,
    /// Configuration.
    pub config: BitcoinConfig,
    branches: Vec<u32>,
    by_hash: HashMap<[u8; 32], (u64, u32)>,
    price_path: Option<Vec<f64>>,
    reorgs: u32,
}

impl BitcoinChain {
    /// Builds the chain with its initial blocks.
    pub fn new(seed: u64, config: BitcoinConfig) -> Self {
        let mut c = Self {
            seed,
            branches: Vec::new(),
            by_hash: HashMap::new(),
            price_path: None,
            reorgs: 0,
            config,
        };
        c.advance(c.config.initial_blocks.max(1));
        c
    }

    /// Tip height.
    pub fn tip(&self) -> u64 {
        self.config.start_height + self.branches.len() as u64 - 1
    }

    /// Adds `n` blocks.
    pub fn advance(&mut self, n: u64) {
        for _ in 0..n {
            let h = self.config.start_height + self.branches.len() as u64;
            self.branches.push(self.reorgs);
            self.by_hash
                .insert(self.hash_of(h, self.reorgs), (h, self.reorgs));
        }
    }

    /// Replaces the last `depth` blocks by a new branch of the same length.
    pub fn reorg(&mut self, depth: u64) {
        let depth = (depth as usize).min(self.branches.len().saturating_sub(1));
        if depth == 0 {
            return;
        }
        self.reorgs += 1;
        let keep = self.branches.len() - depth;
        for i in keep..self.branches.len() {
            let h = self.config.start_height + i as u64;
            self.branches[i] = self.reorgs;
            self.by_hash
                .insert(self.hash_of(h, self.reorgs), (h, self.reorgs));
        }
    }

    /// Overrides the daily USD price path (day 0 = `start_time`); days past
    /// the end repeat the last price. An empty path restores the default.
    pub fn set_price_path(&mut self, prices: Vec<f64>) {
        self.price_path = if prices.is_empty() {
            None
        } else {
            Some(prices)
        };
    }

    /// USD price of a day since `start_time`.
    pub fn price_on_day(&self, day: u64) -> f64 {
        if let Some(p) = &self.price_path {
            return p[(day as usize).min(p.len() - 1)];
        }
        let phase = (mix(&[self.seed, 0x5052]) % 628) as f64 / 100.0;
        let d = day as f64;
        80_000.0
            + 12_000.0 * (d * std::f64::consts::TAU / 30.0 + phase).sin()
            + 5_000.0 * (d * std::f64::consts::TAU / 7.3).sin()
    }

    /// Day index of a height.
    pub fn day_of(&self, height: u64) -> u64 {
        (height - self.config.start_height) / BLOCKS_PER_DAY
    }

    /// Unix start of a day index.
    pub fn day_start(&self, day: u64) -> i64 {
        self.config.start_time + day as i64 * 86_400
    }

    /// Daily prices of every day that has blocks: (day start unix, USD).
    pub fn daily_prices(&self) -> Vec<(i64, f64)> {
        (0..=self.day_of(self.tip()))
            .map(|d| (self.day_start(d), self.price_on_day(d)))
            .collect()
    }

    fn hash_of(&self, height: u64, branch: u32) -> [u8; 32] {
        let mut h = bytes32(&[self.seed, 0x4254_4348, height, branch as u64]);
        h[..4].copy_from_slice(&[0; 4]);
        h
    }

    /// Canonical block at a height.
    pub fn block_at(&self, height: u64) -> Option<BlockInfo> {
        if height < self.config.start_height || height > self.tip() {
            return None;
        }
        let branch = self.branches[(height - self.config.start_height) as usize];
        Some(self.info(height, branch))
    }

    /// Block by hash, including blocks a reorg replaced (as electrs keeps them).
    pub fn block_by_hash(&self, hash: &[u8; 32]) -> Option<BlockInfo> {
        self.by_hash.get(hash).map(|&(h, b)| self.info(h, b))
    }

    /// Whether a block is on the best chain.
    pub fn in_best_chain(&self, b: &BlockInfo) -> bool {
        self.block_at(b.height).is_some_and(|c| c.hash == b.hash)
    }

    fn info(&self, height: u64, branch: u32) -> BlockInfo {
        let prev_branch = if height > self.config.start_height {
            let i = (height - 1 - self.config.start_height) as usize;
            // A replaced block's parent is the canonical parent at the time it was made.
            self.branches[i].min(branch)
        } else {
            0
        };
        BlockInfo {
            height,
            hash: self.hash_of(height, branch),
            prev: self.hash_of(height.saturating_sub(1), prev_branch),
            timestamp: self.config.start_time + (height - self.config.start_height) as i64 * 600,
            branch,
        }
    }

    /// Number of transactions in a block.
    pub fn tx_count(&self, _b: &BlockInfo) -> u32 {
        self.config.txs_per_block.max(1)
    }

    /// All transactions of a block.
    pub fn block_txs(&self, b: &BlockInfo) -> Vec<Tx> {
        let mut txs: Vec<Tx> = (1..self.tx_count(b)).map(|i| self.tx(b, i)).collect();
        let fees: u64 = txs.iter().map(Tx::fee).sum();
        txs.insert(0, self.coinbase(b, fees));
        txs
    }

    /// Transactions `start..start+n` of a block.
    pub fn block_txs_range(&self, b: &BlockInfo, start: u32, n: u32) -> Vec<Tx> {
        let end = (start + n).min(self.tx_count(b));
        if start == 0 {
            let mut all = self.block_txs(b);
            all.truncate(end as usize);
            return all;
        }
        (start..end).map(|i| self.tx(b, i)).collect()
    }

    fn coinbase(&self, b: &BlockInfo, fees: u64) -> Tx {
        let mut rng = Rng::new(&[self.seed, b.height, b.branch as u64, 0]);
        let mut pkh = [0u8; 20];
        rng.fill(&mut pkh);
        let mut commitment = vec![0xaa, 0x21, 0xa9, 0xed];
        commitment.extend_from_slice(&bytes32(&[self.seed, b.height, b.branch as u64, 0x57]));
        let mut scriptsig = vec![0x03];
        scriptsig.extend_from_slice(&(b.height as u32).to_le_bytes()[..3]);
        scriptsig.extend_from_slice(b"/orrery-devnet/");
        Tx {
            txid: self.txid(b, 0),
            vin: vec![TxIn {
                prev_txid: [0; 32],
                vout: u32::MAX,
                prevout: None,
                scriptsig,
                witness: vec![vec![0; 32]],
                sequence: u32::MAX,
            }],
            vout: vec![
                TxOut {
                    script: Script::P2wpkh(pkh),
                    value: 312_500_000 + fees,
                },
                TxOut {
                    script: Script::OpReturn(commitment),
                    value: 0,
                },
            ],
            coinbase: true,
        }
    }

    /// Txid of transaction `i` of a block. Its last 8 bytes carry the
    /// (masked) height, branch and index, so a txid resolves without an index.
    pub fn txid(&self, b: &BlockInfo, i: u32) -> [u8; 32] {
        let mut id = bytes32(&[self.seed, 0x5458, b.height, b.branch as u64, i as u64]);
        let pos = (b.height << 32) | ((b.branch as u64 & 0xffff) << 16) | (i as u64 & 0xffff);
        id[24..].copy_from_slice(&(pos ^ mix(&[self.seed, 0x5449_4458])).to_be_bytes());
        id
    }

    /// The canonical block and index of a txid.
    pub fn locate_tx(&self, txid: &[u8; 32]) -> Option<(BlockInfo, u32)> {
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&txid[24..]);
        let pos = u64::from_be_bytes(tail) ^ mix(&[self.seed, 0x5449_4458]);
        let (height, branch, index) = (
            pos >> 32,
            ((pos >> 16) & 0xffff) as u32,
            (pos & 0xffff) as u32,
        );
        let b = self.block_at(height)?;
        (b.branch == branch && index < self.tx_count(&b) && self.txid(&b, index) == *txid)
            .then_some((b, index))
    }

    /// Transaction `i` (>= 1) of a block.
    pub fn tx(&self, b: &BlockInfo, i: u32) -> Tx {
        let mut rng = Rng::new(&[self.seed, b.height, b.branch as u64, i as u64]);
        let price = self.price_on_day(self.day_of(b.height));
        let log_uniform = |rng: &mut Rng, lo: f64, hi: f64| -> u64 {
            let v = (lo.ln() + rng.unit() * (hi.ln() - lo.ln())).exp();
            (v * SATS as f64).round() as u64
        };
        let roll = rng.below(100);
        let outs: Vec<u64>;
        let mut op_return = false;
        let mut n_inputs = rng.range(1, 2);
        if roll < 65 {
            // Round USD payment at the day's price plus change.
            let total: u64 = ROUND_WEIGHTS.iter().sum();
            let mut pick = rng.below(total);
            let mut usd = ROUND_USD[0];
            for (k, w) in ROUND_WEIGHTS.iter().enumerate() {
                if pick < *w {
                    usd = ROUND_USD[k];
                    break;
                }
                pick -= w;
            }
            let noise = 1.0 + (rng.unit() - 0.5) * 0.01;
            let pay = (usd as f64 / price * noise * SATS as f64).round() as u64;
            let change = log_uniform(&mut rng, 0.0005, 0.5);
            if rng.chance(0.5) {
                outs = vec![pay, change];
            } else {
                outs = vec![change, pay];
            }
        } else if roll < 80 {
            outs = vec![
                log_uniform(&mut rng, 0.0001, 2.0),
                log_uniform(&mut rng, 0.0001, 2.0),
            ];
        } else if roll < 90 {
            let n = rng.range(3, 8);
            outs = (0..n).map(|_| log_uniform(&mut rng, 0.0001, 1.0)).collect();
        } else if roll < 95 {
            outs = vec![log_uniform(&mut rng, 0.0001, 1.0)];
            op_return = true;
        } else {
            n_inputs = rng.range(6, 10);
            outs = vec![
                log_uniform(&mut rng, 0.001, 5.0),
                log_uniform(&mut rng, 0.0001, 1.0),
            ];
        }
        let fee = rng.range(500, 5_000) * n_inputs;
        let needed: u64 = outs.iter().sum::<u64>() + fee;
        let mut vin = Vec::with_capacity(n_inputs as usize);
        let mut left = needed;
        for k in 0..n_inputs {
            let value = if k + 1 == n_inputs {
                left
            } else {
                let v = (left / (n_inputs - k)).max(1);
                left -= v;
                v
            };
            let mut pkh = [0u8; 20];
            rng.fill(&mut pkh);
            let mut sig = vec![0u8; 71 + rng.below(2) as usize];
            rng.fill(&mut sig);
            sig[0] = 0x30;
            let mut pubkey = vec![0u8; 33];
            rng.fill(&mut pubkey);
            pubkey[0] = 0x02 + (pubkey[1] & 1);
            vin.push(TxIn {
                prev_txid: bytes32(&[
                    self.seed,
                    0x5052_4556,
                    b.height,
                    b.branch as u64,
                    i as u64,
                    k,
                ]),
                vout: rng.below(3) as u32,
                prevout: Some(TxOut {
                    script: Script::P2wpkh(pkh),
                    value,
                }),
                scriptsig: Vec::new(),
                witness: vec![sig, pubkey],
                sequence: 0xffff_fffd,
            });
        }
        let mut vout: Vec<TxOut> = outs
            .into_iter()
            .map(|value| {
                let mut pkh = [0u8; 20];
                rng.fill(&mut pkh);
                TxOut {
                    script: Script::P2wpkh(pkh),
                    value,
                }
            })
            .collect();
        if op_return {
            let mut data = vec![0u8; 20];
            rng.fill(&mut data);
            vout.push(TxOut {
                script: Script::OpReturn(data),
                value: 0,
            });
        }
        Tx {
            txid: self.txid(b, i),
            vin,
            vout,
            coinbase: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_outputs_sit_at_round_usd_amounts() {
        let chain = BitcoinChain::new(5, BitcoinConfig::default());
        let b = chain.block_at(chain.config.start_height + 10).unwrap();
        let price = chain.price_on_day(0);
        assert!((60_000.0..100_000.0).contains(&price));
        let txs = chain.block_txs(&b);
        assert!(txs[0].coinbase);
        let mut hits = 0;
        for tx in &txs[1..] {
            assert!(tx.fee() > 0);
            for o in &tx.vout {
                let usd = o.value as f64 / SATS as f64 * price;
                if ROUND_USD
                    .iter()
                    .any(|r| (usd / *r as f64 - 1.0).abs() <= 0.005 + 1e-6)
                {
                    hits += 1;
                }
            }
        }
        assert!(hits * 2 > txs.len(), "{hits} of {}", txs.len());
    }

    #[test]
    fn reorg_changes_hashes_and_keeps_parents_linked() {
        let mut chain = BitcoinChain::new(5, BitcoinConfig::default());
        let tip = chain.tip();
        let old = chain.block_at(tip).unwrap();
        let kept = chain.block_at(tip - 3).unwrap();
        chain.reorg(3);
        let new = chain.block_at(tip).unwrap();
        assert_ne!(old.hash, new.hash);
        assert_eq!(chain.block_at(tip - 3).unwrap(), kept);
        assert_eq!(chain.block_at(tip - 2).unwrap().prev, kept.hash);
        for h in tip - 2..=tip {
            assert_eq!(
                chain.block_at(h).unwrap().prev,
                chain.block_at(h - 1).unwrap().hash
            );
        }
        assert!(!chain.in_best_chain(&chain.block_by_hash(&old.hash).unwrap()));
    }
}
