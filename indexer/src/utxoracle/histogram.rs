//! The output-amount histogram (reference: `UTXOracle.py` v9.1, steps 5 and 7,
//! `Unbesteveable/UTXOracle` commit b9a3d91d).
//!
//! Bin 0 is 0 BTC; bin `1 + 200 * (e + 6) + b` starts at `10^(e + b/200)` BTC for
//! e = -6..5, b = 0..199: 200 bins per decade, 2401 bins. An amount goes into the last bin
//! whose lower edge is <= the amount. Before use, bins below 1,000 sats (0..=200) and from
//! 100 BTC up (>= 1601) are zeroed, round-BTC bins are replaced by the mean of their two
//! neighbours, bins 201..1600 are normalised to sum 1 and each is capped at 0.008.

use std::sync::OnceLock;

/// Number of bins (one zero bin plus 12 decades of 200).
pub const BIN_COUNT: usize = 2401;
/// Bins per power of ten.
pub const BINS_PER_DECADE: usize = 200;
/// log10 of the lower edge of bin 1 (1e-6 BTC, 100 sats).
pub const FIRST_EXPONENT: i32 = -6;
/// First bin kept (1,000 sats); lower bins are zeroed.
pub const FIRST_KEPT_BIN: usize = 201;
/// First bin zeroed at the top (100 BTC).
pub const END_KEPT_BIN: usize = 1601;
/// Cap on each normalised bin.
pub const BIN_CAP: f64 = 0.008;
/// Bins of round BTC amounts (1k, 10k, 20k, 30k, 50k, 100k, 200k, 300k, 500k sats, 0.01,
/// 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1 BTC), smoothed over; copied from the reference.
/// (The reference's comment labels bin 940 "0.04"; it is the bin of 0.05 BTC.)
pub const ROUND_BTC_BINS: [usize; 18] = [
    201, 401, 461, 496, 540, 601, 661, 696, 740, 801, 861, 896, 940, 1001, 1061, 1096, 1140, 1201,
];

/// Lower edges of all bins, in BTC, computed as the reference does (`10 ** (e + b/200)`).
pub fn bin_edges() -> &'static [f64] {
    static EDGES: OnceLock<Vec<f64>> = OnceLock::new();
    EDGES.get_or_init(|| {
        let mut edges = Vec::with_capacity(BIN_COUNT);
        edges.push(0.0);
        let decades = (BIN_COUNT - 1) / BINS_PER_DECADE;
        for d in 0..decades {
            let exponent = f64::from(FIRST_EXPONENT) + d as f64;
            for b in 0..BINS_PER_DECADE {
                edges.push(10f64.powf(exponent + b as f64 / BINS_PER_DECADE as f64));
            }
        }
        edges
    })
}

/// Lower edge of bin `index` in BTC (`None` past the last bin).
pub fn bin_value(index: usize) -> Option<f64> {
    bin_edges().get(index).copied()
}

/// The bin of an amount in BTC: the last bin whose lower edge is <= `btc`.
/// (Same answer as the reference's estimate-then-scan loop.) Negative or NaN amounts go to
/// bin 0.
pub fn bin_index(btc: f64) -> usize {
    let edges = bin_edges();
    edges.partition_point(|&edge| edge <= btc).saturating_sub(1)
}

/// Converts sats to BTC exactly as the reference does (`sats / 1e8`).
pub fn sats_to_btc(sats: u64) -> f64 {
    sats as f64 / 1e8
}

/// Raw counts per bin.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    counts: Vec<f64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram of [`BIN_COUNT`] bins.
    pub fn new() -> Self {
        Self {
            counts: vec![0.0; BIN_COUNT],
        }
    }

    /// Builds a histogram from output amounts in sats.
    pub fn from_sats<I: IntoIterator<Item = u64>>(outputs: I) -> Self {
        let mut h = Self::new();
        for sats in outputs {
            h.add_sats(sats);
        }
        h
    }

    /// Counts one output amount in sats.
    pub fn add_sats(&mut self, sats: u64) {
        self.counts[bin_index(sats_to_btc(sats))] += 1.0;
    }

    /// Counts per bin.
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    /// Zeroes the out-of-range bins, smooths the round-BTC bins, normalises bins
    /// 201..=1600 to sum 1 and caps them at [`BIN_CAP`]. `None` when nothing is left in
    /// range (the reference would divide by zero).
    pub fn normalised(&self) -> Option<Vec<f64>> {
        let mut c = self.counts.clone();
        c[..FIRST_KEPT_BIN].fill(0.0);
        c[END_KEPT_BIN..].fill(0.0);
        for &r in &ROUND_BTC_BINS {
            c[r] = 0.5 * (c[r + 1] + c[r - 1]);
        }
        let sum: f64 = c[FIRST_KEPT_BIN..END_KEPT_BIN].iter().sum();
        if sum <= 0.0 || !sum.is_finite() {
            return None;
        }
        for v in &mut c[FIRST_KEPT_BIN..END_KEPT_BIN] {
            *v /= sum;
            if *v > BIN_CAP {
                *v = BIN_CAP;
            }
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_have_expected_values() {
        let e = bin_edges();
        assert_eq!(e.len(), BIN_COUNT);
        assert_eq!(e[0], 0.0);
        assert_eq!(e[1], 1e-6);
        assert_eq!(e[201], 1e-5);
        assert_eq!(e[601], 0.001);
        assert_eq!(e[1201], 1.0);
        assert_eq!(e[1601], 100.0);
        assert!(e.windows(2).all(|w| w[0] < w[1]));
        // 200 bins per decade: ratio between neighbours is 10^(1/200).
        let ratio = e[1000] / e[999];
        assert!((ratio - 10f64.powf(0.005)).abs() < 1e-12);
    }

    #[test]
    fn bin_index_puts_edges_in_their_own_bin() {
        assert_eq!(bin_index(0.001), 601);
        assert_eq!(bin_index(0.000_999_9), 600);
        assert_eq!(bin_index(sats_to_btc(100_000)), 601);
        assert_eq!(bin_index(1.0), 1201);
        assert_eq!(bin_index(0.0), 0);
        assert_eq!(bin_index(5e-7), 0);
        assert_eq!(bin_index(1e6), BIN_COUNT - 1);
        for i in [1usize, 2, 250, 777, 1600, 2400] {
            assert_eq!(bin_index(bin_edges()[i]), i);
        }
    }

    #[test]
    fn round_btc_bins_are_round_amounts() {
        let round_sats: [u64; 18] = [
            1_000,
            10_000,
            20_000,
            30_000,
            50_000,
            100_000,
            200_000,
            300_000,
            500_000,
            1_000_000,
            2_000_000,
            3_000_000,
            5_000_000,
            10_000_000,
            20_000_000,
            30_000_000,
            50_000_000,
            100_000_000,
        ];
        for (bin, sats) in ROUND_BTC_BINS.iter().zip(round_sats) {
            assert_eq!(*bin, bin_index(sats_to_btc(sats)), "{sats} sats");
        }
    }

    #[test]
    fn normalise_zeroes_smooths_and_caps() {
        let mut h = Histogram::new();
        for _ in 0..10 {
            h.add_sats(500); // below 1,000 sats: zeroed
            h.add_sats(200 * 100_000_000); // 200 BTC: zeroed
        }
        for _ in 0..1000 {
            h.add_sats(100_000); // round bin 601: replaced by neighbours' mean
        }
        h.add_sats(99_800); // bin 600
        h.add_sats(100_300); // bin 602
        for i in 0..300u64 {
            h.add_sats(1_500 + 997 * i);
        }
        let n = h.normalised().unwrap();
        assert!(n[..FIRST_KEPT_BIN].iter().all(|&v| v == 0.0));
        assert!(n[END_KEPT_BIN..].iter().all(|&v| v == 0.0));
        assert!(n.iter().all(|&v| v <= BIN_CAP));
        assert!((n[601] - 0.5 * (n[600] + n[602])).abs() < 1e-15);
        assert!(n[601] > 0.0);
    }

    #[test]
    fn normalise_of_empty_range_is_none() {
        let h = Histogram::from_sats([1, 10, 999]);
        assert_eq!(h.normalised(), None);
    }
}
