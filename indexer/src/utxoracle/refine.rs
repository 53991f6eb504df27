//! Final price from intraday price points (reference: `UTXOracle.py` v9.1, steps 10 and
//! 11, `Unbesteveable/UTXOracle` commit b9a3d91d).
//!
//! Every counted output `n` (BTC) within +-25% of `usd / rough` for a USD amount in
//! [`USD_AMOUNTS`] gives a price point `usd / n`, unless `n` lies within +-0.01% of a round
//! BTC amount. The final price is the "central output" of the points strictly inside
//! +-5% of the rough price: the point with the smallest sum of absolute distances to the
//! others. (The reference's re-centring loop exits at once in v9.1, so it is that point.)
//! The dispersion is the median absolute deviation from the central price of the points
//! within +-10% of it, as the reference's final `av_dev`.

use std::sync::OnceLock;

use super::histogram::sats_to_btc;

/// Round USD amounts that generate price points.
pub const USD_AMOUNTS: [f64; 14] = [
    5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0,
];
/// Half-width (fraction) of the window around `usd / rough` that yields price points.
pub const WIDE_RANGE: f64 = 0.25;
/// Half-width (fraction) around the rough price for choosing the central output.
pub const TIGHT_RANGE: f64 = 0.05;
/// Half-width (fraction) around the central price for the MAD.
pub const MAD_RANGE: f64 = 0.10;
/// Half-width (fraction) of the exclusion around round BTC amounts.
pub const ROUND_BTC_TOLERANCE: f64 = 0.0001;

/// Round BTC amounts excluded from price points, generated with the reference's float
/// accumulation (5e-5..1e-4 step 1e-5, 1e-4..1e-3 step 1e-5, 1e-3..1e-2 step 1e-4,
/// 0.01..0.1 step 1e-3, 0.1..1 step 0.01: 366 values), sorted.
pub fn round_btc_amounts() -> &'static [f64] {
    static ROUND: OnceLock<Vec<f64>> = OnceLock::new();
    ROUND.get_or_init(|| {
        let mut v = Vec::new();
        for (start, end, step) in [
            (0.00005, 0.0001, 0.00001),
            (0.0001, 0.001, 0.00001),
            (0.001, 0.01, 0.0001),
            (0.01, 0.1, 0.001),
            (0.1, 1.0, 0.01),
        ] {
            let mut i: f64 = start;
            while i < end {
                v.push(i);
                i += step;
            }
        }
        v.sort_by(f64::total_cmp);
        v
    })
}

/// Whether `btc` is strictly within +-0.01% of a round BTC amount.
pub fn is_round_btc(btc: f64) -> bool {
    let round = round_btc_amounts();
    // The intervals are sorted and both ends grow with `r`: the last interval starting
    // below `btc` is the only one that can contain it.
    let lower = |r: f64| r - ROUND_BTC_TOLERANCE * r;
    let idx = round.partition_point(|&r| lower(r) < btc);
    idx.checked_sub(1)
        .map(|i| btc < round[i] + ROUND_BTC_TOLERANCE * round[i])
        .unwrap_or(false)
}

/// Price points (USD per BTC) of the outputs (sats) around a rough price.
pub fn price_points(outputs_sats: &[u64], rough_price_usd: f64) -> Vec<f64> {
    let windows: Vec<(f64, f64, f64)> = USD_AMOUNTS
        .iter()
        .map(|&usd| {
            let avbtc = usd / rough_price_usd;
            (usd, avbtc - WIDE_RANGE * avbtc, avbtc + WIDE_RANGE * avbtc)
        })
        .collect();
    let mut points = Vec::new();
    for &sats in outputs_sats {
        let n = sats_to_btc(sats);
        let mut round: Option<bool> = None;
        for &(usd, lo, hi) in &windows {
            if lo < n && n < hi && !*round.get_or_insert_with(|| is_round_btc(n)) {
                points.push(usd / n);
            }
        }
    }
    points
}

/// The central point of the price points strictly inside (`lo`, `hi`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Central {
    /// The point with the smallest sum of absolute distances to the others.
    pub price: f64,
    /// Median absolute deviation of the points from `price`.
    pub mad: f64,
    /// Number of points inside the range.
    pub points: usize,
}

/// Finds the central point among `points` strictly inside (`lo`, `hi`); `None` if empty.
/// Ties go to the lowest such point, as the reference's `min` over the sorted list.
pub fn central_output(points: &[f64], lo: f64, hi: f64) -> Option<Central> {
    let mut sorted: Vec<f64> = points
        .iter()
        .copied()
        .filter(|&p| lo < p && p < hi)
        .collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mut prefix = Vec::with_capacity(n);
    let mut total = 0.0;
    for &x in &sorted {
        total += x;
        prefix.push(total);
    }
    let mut best = (0usize, f64::INFINITY);
    for (i, &x) in sorted.iter().enumerate() {
        let left_sum = if i == 0 { 0.0 } else { prefix[i - 1] };
        let right_sum = total - prefix[i];
        let dist = (x * i as f64 - left_sum) + (right_sum - x * (n - i - 1) as f64);
        if dist < best.1 {
            best = (i, dist);
        }
    }
    let price = sorted[best.0];
    let mut dev: Vec<f64> = sorted.iter().map(|x| (x - price).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = if n % 2 == 1 {
        dev[n / 2]
    } else {
        (dev[n / 2 - 1] + dev[n / 2]) / 2.0
    };
    Some(Central {
        price,
        mad,
        points: n,
    })
}

/// The refined price and its dispersion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refined {
    /// Final price, USD per BTC (not truncated; the reference prints `int(price)`).
    pub price_usd: f64,
    /// MAD (USD) of the points within +-10% of the final price.
    pub mad_usd: f64,
    /// Number of points within +-10% of the final price.
    pub points_in_mad_range: usize,
    /// Number of points within +-5% of the rough price (candidates for the centre).
    pub points_in_tight_range: usize,
    /// All price points generated.
    pub points_total: usize,
}

/// Refines a rough price from counted outputs (sats). `None` when no price point falls
/// within +-5% of the rough price.
pub fn refine(outputs_sats: &[u64], rough_price_usd: f64) -> Option<Refined> {
    if !(rough_price_usd.is_finite() && rough_price_usd > 0.0) {
        return None;
    }
    let points = price_points(outputs_sats, rough_price_usd);
    let tight = central_output(
        &points,
        rough_price_usd - TIGHT_RANGE * rough_price_usd,
        rough_price_usd + TIGHT_RANGE * rough_price_usd,
    )?;
    let price = tight.price;
    let wide = central_output(
        &points,
        price - MAD_RANGE * price,
        price + MAD_RANGE * price,
    )?;
    Some(Refined {
        price_usd: price,
        mad_usd: wide.mad,
        points_in_mad_range: wide.points,
        points_in_tight_range: tight.points,
        points_total: points.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_list_matches_reference_generation() {
        let r = round_btc_amounts();
        assert_eq!(r.len(), 366);
        assert_eq!(r[0], 0.00005);
        assert!((r[r.len() - 1] - 0.99).abs() < 1e-12);
    }

    #[test]
    fn round_btc_detection() {
        assert!(is_round_btc(0.001));
        assert!(is_round_btc(0.00100009));
        assert!(!is_round_btc(0.00100011));
        assert!(!is_round_btc(0.00101));
        assert!(is_round_btc(0.5));
        assert!(is_round_btc(0.00007));
        assert!(!is_round_btc(0.00004)); // below the list
        assert!(!is_round_btc(1.0)); // list stops below 1 BTC
        assert!(!is_round_btc(0.123456));
        // Brute force agrees with the binary search on a sweep.
        let brute = |n: f64| {
            round_btc_amounts()
                .iter()
                .any(|&r| r - ROUND_BTC_TOLERANCE * r < n && n < r + ROUND_BTC_TOLERANCE * r)
        };
        for k in 1..200_000u64 {
            let n = k as f64 * 0.000_005_003;
            assert_eq!(is_round_btc(n), brute(n), "{n}");
        }
    }

    #[test]
    fn price_points_use_wide_windows_and_skip_round_btc() {
        let rough = 50_000.0;
        // $100 at 50k = 200,000 sats -> round BTC (0.002), skipped.
        assert!(price_points(&[200_000], rough).is_empty());
        // 201,000 sats ~ $100.5 -> inside the $100 window only.
        let p = price_points(&[201_000], rough);
        assert_eq!(p.len(), 1);
        assert!((p[0] - 100.0 / 0.00201).abs() < 1e-6);
        // 45,123 sats ~ $22.56: inside the $20, $25 and $30 windows (+-25% each).
        let p = price_points(&[45_123], rough);
        assert_eq!(p.len(), 3);
        assert!((p[0] - 20.0 / 0.00045123).abs() < 1e-6);
        assert!((p[2] - 30.0 / 0.00045123).abs() < 1e-6);
        // 45,000 sats would be too, but 0.00045 BTC is a round amount.
        assert!(price_points(&[45_000], rough).is_empty());
        // Far from every window.
        assert!(price_points(&[1_000_000_000], rough).is_empty());
    }

    #[test]
    fn central_output_is_a_median_and_mad() {
        let pts = [10.0, 11.0, 12.0, 13.0, 100.0];
        let c = central_output(&pts, 0.0, 1e9).unwrap();
        assert_eq!(c.price, 12.0);
        assert_eq!(c.points, 5);
        // deviations 0,1,1,2,88 -> median 1
        assert_eq!(c.mad, 1.0);
        // Range is exclusive and filters.
        let c = central_output(&pts, 10.0, 13.0).unwrap();
        assert_eq!((c.price, c.points, c.mad), (11.0, 2, 0.5));
        assert_eq!(central_output(&pts, 200.0, 300.0), None);
    }
}
