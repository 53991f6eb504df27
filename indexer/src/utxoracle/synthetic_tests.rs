//! End-to-end tests on synthetic days generated with a deterministic PRNG (splitmix64).
//!
//! A synthetic day pays round USD amounts ($1..$2000, weighted like real spending) at a
//! known price with +-0.5% noise plus random-sized change, adds log-uniform noise
//! transactions and round-BTC payments, and mixes in transactions that the filters must
//! drop (3 outputs, OP_RETURN, 6 inputs, big witness, same-day spends), all paying round
//! USD amounts at a wrong price. The generator knows which outputs should count.

use super::*;

/// splitmix64 (Steele, Lea, Flood 2014).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn txid(&mut self) -> Txid {
        let mut t = [0u8; 32];
        for chunk in t.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        t
    }
}

/// Round USD amounts and relative frequencies (roughly the stencil's popularity).
const USD_WEIGHTS: [(f64, u32); 15] = [
    (1.0, 2),
    (5.0, 3),
    (10.0, 6),
    (15.0, 3),
    (20.0, 6),
    (25.0, 2),
    (30.0, 4),
    (50.0, 8),
    (100.0, 12),
    (150.0, 3),
    (200.0, 6),
    (300.0, 4),
    (500.0, 5),
    (1000.0, 5),
    (2000.0, 2),
];

const ROUND_BTC_SATS: [u64; 8] = [
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
];

#[derive(Clone, Copy)]
struct DayShape {
    payments: usize,
    noise: usize,
    round_btc: usize,
    /// Of each disqualified kind.
    decoys: usize,
}

const FULL_DAY: DayShape = DayShape {
    payments: 40,
    noise: 12,
    round_btc: 3,
    decoys: 3,
};

struct DayGen {
    rng: SplitMix64,
    price: f64,
    wrong_price: f64,
    shape: DayShape,
    /// Txids of earlier transactions (for same-window spends), newest last.
    history: Vec<(u64, Txid)>,
    /// How many blocks back a same-window spend may reach.
    spend_depth: u64,
    expected_counted: usize,
}

impl DayGen {
    fn new(seed: u64, price: f64, shape: DayShape) -> Self {
        Self {
            rng: SplitMix64(seed),
            price,
            wrong_price: price * 1.6,
            shape,
            history: Vec::new(),
            spend_depth: 1000,
            expected_counted: 0,
        }
    }

    fn usd(&mut self) -> f64 {
        let total: u32 = USD_WEIGHTS.iter().map(|w| w.1).sum();
        let mut pick = self.rng.below(total as usize) as u32;
        for (usd, w) in USD_WEIGHTS {
            if pick < w {
                return usd;
            }
            pick -= w;
        }
        unreachable!()
    }

    fn usd_sats(&mut self, usd: f64, price: f64) -> u64 {
        let noise = 1.0 + (self.rng.unit() * 2.0 - 1.0) * 0.005;
        (usd / price * noise * 1e8).round() as u64
    }

    /// Change worth $1..$20,000, log-uniform.
    fn change_sats(&mut self) -> u64 {
        let usd = 10f64.powf(self.rng.unit() * 4.3);
        (usd / self.price * 1e8).round() as u64
    }

    /// 1e-5..10 BTC, log-uniform.
    fn noise_sats(&mut self) -> u64 {
        (10f64.powf(-5.0 + self.rng.unit() * 6.0) * 1e8).round() as u64
    }

    fn external_input(&mut self, witness: &[usize]) -> TxIn {
        TxIn {
            prev_txid: self.rng.txid(),
            witness_item_sizes: witness.to_vec(),
        }
    }

    fn tx(&mut self, inputs: Vec<TxIn>, outputs: &[u64]) -> Tx {
        Tx {
            txid: self.rng.txid(),
            is_coinbase: false,
            inputs,
            outputs: outputs
                .iter()
                .map(|&value_sats| TxOut {
                    value_sats,
                    is_op_return: false,
                })
                .collect(),
        }
    }

    fn good_tx(&mut self, outputs: [u64; 2]) -> Tx {
        let n_inputs = 1 + self.rng.below(5);
        let inputs = (0..n_inputs)
            .map(|_| self.external_input(&[72, 33]))
            .collect();
        self.expected_counted += outputs.iter().filter(|&&s| s > 1_000).count();
        self.tx(inputs, &outputs)
    }

    fn block(&mut self, height: u64) -> Block {
        let mut txs = Vec::new();
        let coinbase = Tx {
            txid: self.rng.txid(),
            is_coinbase: true,
            inputs: vec![TxIn {
                prev_txid: [0; 32],
                witness_item_sizes: vec![32],
            }],
            outputs: vec![
                TxOut {
                    value_sats: 312_500_000,
                    is_op_return: false,
                },
                TxOut {
                    value_sats: 0,
                    is_op_return: true,
                },
            ],
        };
        txs.push(coinbase);
        for _ in 0..self.shape.payments {
            let usd = self.usd();
            let pay = self.usd_sats(usd, self.price);
            let change = self.change_sats();
            let outs = if self.rng.below(2) == 0 {
                [pay, change]
            } else {
                [change, pay]
            };
            txs.push(self.good_tx(outs));
        }
        for _ in 0..self.shape.noise {
            let outs = [self.noise_sats(), self.noise_sats()];
            txs.push(self.good_tx(outs));
        }
        for _ in 0..self.shape.round_btc {
            let round = ROUND_BTC_SATS[self.rng.below(ROUND_BTC_SATS.len())];
            let change = self.change_sats();
            txs.push(self.good_tx([round, change]));
        }
        for _ in 0..self.shape.decoys {
            let wrong = self.wrong_price;
            let (a, b, c) = (
                self.usd_sats(100.0, wrong),
                self.usd_sats(50.0, wrong),
                self.usd_sats(20.0, wrong),
            );
            // Three outputs.
            let inp = vec![self.external_input(&[72, 33])];
            txs.push(self.tx(inp, &[a, b, c]));
            // OP_RETURN.
            let inp = vec![self.external_input(&[72, 33])];
            let mut t = self.tx(inp, &[a, 0]);
            t.outputs[1].is_op_return = true;
            txs.push(t);
            // Six inputs.
            let inp = (0..6).map(|_| self.external_input(&[])).collect();
            txs.push(self.tx(inp, &[b, c]));
            // Witness over 500 bytes (total of one input).
            let inp = vec![self.external_input(&[300, 201])];
            txs.push(self.tx(inp, &[a, c]));
            // Spends a transaction seen earlier in the window.
            if let Some(parent) = self.recent_parent(height) {
                let inp = vec![
                    self.external_input(&[72, 33]),
                    TxIn {
                        prev_txid: parent,
                        witness_item_sizes: vec![72, 33],
                    },
                ];
                txs.push(self.tx(inp, &[a, b]));
            }
        }
        // Shuffle (keeping the coinbase first) so kinds interleave; then note the txids.
        for i in (2..txs.len()).rev() {
            let j = 1 + self.rng.below(i);
            txs.swap(i, j);
        }
        for t in &txs {
            self.history.push((height, t.txid));
        }
        Block {
            height,
            time: 1_700_000_000 + height as i64 * 600,
            txs,
        }
    }

    fn recent_parent(&mut self, height: u64) -> Option<Txid> {
        let oldest = height.saturating_sub(self.spend_depth);
        let start = self.history.partition_point(|(h, _)| *h < oldest);
        let candidates = &self.history[start..];
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.below(candidates.len())].1)
    }

    fn day(&mut self, first_height: u64, blocks: u64) -> Vec<Block> {
        (first_height..first_height + blocks)
            .map(|h| self.block(h))
            .collect()
    }
}

fn estimate_day(seed: u64, price: f64) -> (Estimate, usize) {
    let mut gen = DayGen::new(seed, price, FULL_DAY);
    let mut acc = DayAccumulator::new();
    for block in gen.day(800_000, 144) {
        acc.add_block(&block);
    }
    assert_eq!(
        acc.qualifying_outputs().len(),
        gen.expected_counted,
        "filters kept the wrong outputs"
    );
    (acc.estimate().unwrap(), gen.expected_counted)
}

fn assert_close(est: &Estimate, price: f64) {
    let err = est.price_usd / price - 1.0;
    assert!(
        err.abs() < 0.01,
        "price {price}: estimate {} (rough {}), error {:.3}%",
        est.price_usd,
        est.rough_price_usd,
        err * 100.0
    );
    assert!(est.confidence.is_finite() && (0.0..=1.0).contains(&est.confidence));
}

#[test]
fn recovers_known_prices() {
    for (i, price) in [25_000.0, 60_000.0, 97_000.0, 150_000.0]
        .into_iter()
        .enumerate()
    {
        let (est, counted) = estimate_day(0xC0FFEE + i as u64, price);
        assert_close(&est, price);
        assert_eq!(est.blocks, 144);
        assert_eq!(est.qualifying_outputs, counted);
        assert!(est.is_valid, "{est:?}");
        assert!(est.confidence > 0.8, "{est:?}");
        assert!(est.price_points > 1000, "{est:?}");
        assert!((est.rough_price_usd / price - 1.0).abs() < 0.05, "{est:?}");
    }
}

/// The third-party table of v9.1 daily prices (unverified) is only a sanity range: every
/// listed price must be inside the range the stencil slide can represent, and a synthetic
/// day at that price must come back within 1%.
#[test]
fn fixture_prices_are_in_range_and_recovered() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/utxoracle/gptprojectmanager_UTXOracle_HISTORICAL_DATA_md_prices.csv"
    );
    let text = std::fs::read_to_string(path).expect("fixture table missing");
    let high = 100.0 / histogram::bin_value(601 - 141).unwrap();
    let low = 100.0 / histogram::bin_value(601 + 200).unwrap();
    let mut rows = 0;
    for (i, line) in text.lines().skip(1).enumerate() {
        let (date, price) = line.split_once(',').expect("date,price");
        let price: f64 = price.trim().parse().expect("price");
        assert!(date.len() == 10, "{line}");
        assert!(low < price && price < high, "{line} outside {low}..{high}");
        let shape = DayShape {
            payments: 20,
            ..FULL_DAY
        };
        let mut gen = DayGen::new(0xF1C5 + i as u64, price, shape);
        let mut acc = DayAccumulator::new();
        for block in gen.day(900_000, 144) {
            acc.add_block(&block);
        }
        assert_close(&acc.estimate().unwrap(), price);
        rows += 1;
    }
    assert!(rows >= 10, "only {rows} rows");
}

#[test]
fn deterministic() {
    let a = estimate_day(7, 60_000.0);
    let b = estimate_day(7, 60_000.0);
    assert_eq!(a.0, b.0);
}

#[test]
fn few_outputs_are_insufficient() {
    let shape = DayShape {
        payments: 3,
        noise: 1,
        round_btc: 0,
        decoys: 1,
    };
    let mut gen = DayGen::new(99, 60_000.0, shape);
    let mut acc = DayAccumulator::new();
    for block in gen.day(1, 6) {
        acc.add_block(&block);
    }
    match acc.estimate() {
        Err(EstimateError::InsufficientData { outputs, required }) => {
            assert_eq!(outputs, gen.expected_counted);
            assert_eq!(required, 1000);
        }
        other => panic!("expected InsufficientData, got {other:?}"),
    }
    assert!(matches!(
        DayAccumulator::new().estimate(),
        Err(EstimateError::InsufficientData { outputs: 0, .. })
    ));
}

#[test]
fn tiny_days_without_minimum_never_panic_and_are_not_valid() {
    let config = EstimatorConfig {
        min_qualifying_outputs: 0,
        ..EstimatorConfig::default()
    };
    for seed in 0..40u64 {
        let shape = DayShape {
            payments: 1 + (seed as usize % 4),
            noise: seed as usize % 2,
            round_btc: 0,
            decoys: 0,
        };
        let mut gen = DayGen::new(seed, 20_000.0 + 10_000.0 * seed as f64, shape);
        let mut acc = DayAccumulator::with_config(config);
        for block in gen.day(1, 1 + seed % 5) {
            acc.add_block(&block);
        }
        match acc.estimate() {
            Ok(e) => {
                assert!(e.price_usd.is_finite() && e.mad_usd.is_finite());
                assert!((0.0..0.3).contains(&e.confidence), "{e:?}");
                assert!(!e.is_valid);
            }
            Err(err) => assert!(!err.to_string().is_empty()),
        }
    }
    // No outputs at all.
    assert!(DayAccumulator::with_config(config).estimate().is_err());
}

#[test]
fn pure_noise_day_is_not_valid() {
    let shape = DayShape {
        payments: 0,
        noise: 60,
        round_btc: 0,
        decoys: 0,
    };
    let mut gen = DayGen::new(5, 60_000.0, shape);
    let mut acc = DayAccumulator::new();
    for block in gen.day(1, 144) {
        acc.add_block(&block);
    }
    match acc.estimate() {
        Ok(e) => {
            assert!(e.confidence < 0.3, "{e:?}");
            assert!(!e.is_valid);
        }
        Err(err) => panic!("noise still gives an (invalid) estimate: {err}"),
    }
}

#[test]
fn rolling_window_equals_fresh_accumulator_over_same_blocks() {
    let mut gen = DayGen::new(
        31,
        80_000.0,
        DayShape {
            payments: 25,
            ..FULL_DAY
        },
    );
    // Same-window spends reach up to 40 blocks back, so some cross the window edge.
    gen.spend_depth = 40;
    let blocks = gen.day(700_000, 200);
    let mut window = RollingWindow::new(144);
    let mut evicted = 0;
    for b in &blocks {
        if window.push_block(b).is_some() {
            evicted += 1;
        }
    }
    assert_eq!(evicted, 56);
    assert_eq!(window.len(), 144);
    assert_eq!(window.tip_height(), Some(700_199));

    let mut fresh = DayAccumulator::new();
    for b in &blocks[56..] {
        fresh.add_block(b);
    }
    let mut a = window.qualifying_outputs();
    let mut b = fresh.qualifying_outputs().to_vec();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    // Some outputs excluded at push time (their parent was in a block now evicted) count
    // again, so the window holds more than the outputs counted when the blocks arrived.
    let counted_at_push: usize = window.summaries().map(|s| s.outputs.len()).sum();
    assert!(
        a.len() > counted_at_push,
        "{} vs {counted_at_push}",
        a.len()
    );
    let est_w = window.estimate().unwrap();
    let est_f = fresh.estimate().unwrap();
    assert_eq!(est_w.price_usd, est_f.price_usd);
    assert_eq!(est_w.blocks, 144);
    assert_close(&est_w, 80_000.0);

    // Reorg: drop the tip and re-add it; same result.
    let popped = window.pop_newest().unwrap();
    assert_eq!(popped.height, 700_199);
    assert_eq!(window.len(), 143);
    window.push_block(&blocks[199]);
    let mut c = window.qualifying_outputs();
    c.sort_unstable();
    assert_eq!(c, b);
}
