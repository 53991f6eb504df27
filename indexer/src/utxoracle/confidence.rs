//! Confidence of an estimate. Ours: the reference (`UTXOracle.py` v9.1) prints none.
//!
//! Formula, with `p` the final price, `mad` the median absolute deviation of the price
//! points within +-10% of `p`, and `n` the number of those points:
//!
//! ```text
//! d          = mad / (0.2 * p)                      // MAD as a fraction of the +-10% range
//! dispersion = clamp((0.25 - d) / (0.25 - 0.15), 0, 1)
//! count      = sqrt(min(n, 1000) / 1000)
//! confidence = dispersion * count                   // 0 if any input is not finite/positive
//! ```
//!
//! `d` is the reference's `dev_pct` (it maps 0.17..0.20 to its chart's y-range). Points
//! spread uniformly over the +-10% range (no signal) give d = 0.25, hence 0; a tight
//! cluster (d <= 0.15) gives full marks. The count term follows the 1/sqrt(n) standard
//! error of a median: 1000 points or more give full marks, 250 give 0.5, 10 give 0.1.

/// `d` at or below which dispersion costs nothing.
pub const TIGHT_DISPERSION: f64 = 0.15;
/// `d` of pure noise (uniform over the range); confidence 0 at or above it.
pub const NOISE_DISPERSION: f64 = 0.25;
/// Width of the MAD range as a fraction of the price (+-10%).
pub const MAD_RANGE_WIDTH: f64 = 0.2;
/// Number of price points from which the count costs nothing.
pub const FULL_CONFIDENCE_POINTS: usize = 1000;

/// Dispersion `d` of the price points: MAD over the width of the +-10% range.
pub fn dispersion(price_usd: f64, mad_usd: f64) -> Option<f64> {
    let d = mad_usd / (MAD_RANGE_WIDTH * price_usd);
    (price_usd.is_finite() && price_usd > 0.0 && mad_usd >= 0.0 && d.is_finite()).then_some(d)
}

/// Confidence in [0, 1] (see the module docs for the formula). Never NaN.
pub fn confidence(price_usd: f64, mad_usd: f64, points: usize) -> f64 {
    let Some(d) = dispersion(price_usd, mad_usd) else {
        return 0.0;
    };
    let spread = ((NOISE_DISPERSION - d) / (NOISE_DISPERSION - TIGHT_DISPERSION)).clamp(0.0, 1.0);
    let count = (points.min(FULL_CONFIDENCE_POINTS) as f64 / FULL_CONFIDENCE_POINTS as f64).sqrt();
    (spread * count).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_confidence_for_tight_and_many() {
        assert_eq!(confidence(100_000.0, 0.0, 5000), 1.0);
        assert_eq!(confidence(100_000.0, 3_000.0, 1000), 1.0); // d = 0.15
    }

    #[test]
    fn falls_with_dispersion() {
        let a = confidence(100_000.0, 3_400.0, 2000); // d = 0.17
        let b = confidence(100_000.0, 4_000.0, 2000); // d = 0.20
        assert!((a - 0.8).abs() < 1e-9, "{a}");
        assert!((b - 0.5).abs() < 1e-9, "{b}");
        assert_eq!(confidence(100_000.0, 5_000.0, 2000), 0.0); // uniform noise
        assert_eq!(confidence(100_000.0, 9_000.0, 2000), 0.0);
    }

    #[test]
    fn falls_with_few_points() {
        assert_eq!(confidence(100_000.0, 0.0, 0), 0.0);
        assert!((confidence(100_000.0, 0.0, 250) - 0.5).abs() < 1e-12);
        assert!((confidence(100_000.0, 0.0, 10) - 0.1).abs() < 1e-12);
        assert!(confidence(100_000.0, 0.0, 999) < confidence(100_000.0, 0.0, 1000));
    }

    #[test]
    fn degenerate_inputs_give_zero_not_nan() {
        for (p, m) in [
            (0.0, 0.0),
            (-1.0, 1.0),
            (f64::NAN, 1.0),
            (1.0, f64::NAN),
            (f64::INFINITY, 1.0),
            (1.0, -1.0),
        ] {
            let c = confidence(p, m, 500);
            assert_eq!(c, 0.0, "{p} {m}");
        }
    }
}
