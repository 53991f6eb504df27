//! Rough price: slide two stencils over the normalised histogram (reference:
//! `UTXOracle.py` v9.1, steps 8 and 9, `Unbesteveable/UTXOracle` commit b9a3d91d).
//!
//! For each slide `s` in -141..=200 the window is `histogram[199 + s ..]` (803 bins) and
//! `score = spike . window + 0.65 * smooth . window` (the smooth term only while s < 150).
//! At slide 0, stencil index 402 sits on bin 601 (0.001 BTC), so the best slide `s` means
//! "$100 = bin 601 + s", i.e. price `100 / bin_value(601 + s)`. The better neighbouring
//! slide (by spike score alone) gives a second price; the two are averaged with weights
//! `best - avg` and `|neighbour - avg|` (avg = total score / 342) and truncated to whole
//! dollars, as the reference does with `int(...)`.

use std::sync::OnceLock;

use super::histogram::{bin_value, BIN_COUNT};

/// Length of both stencils.
pub const STENCIL_LEN: usize = 803;
/// Centre of the smooth stencil's bell curve.
pub const SMOOTH_MEAN: f64 = 411.0;
/// Standard deviation (bins) of the smooth stencil's bell curve.
pub const SMOOTH_STD_DEV: f64 = 201.0;
/// Height of the smooth stencil's bell curve.
pub const SMOOTH_HEIGHT: f64 = 0.0015;
/// Linear tilt of the smooth stencil per bin.
pub const SMOOTH_SLOPE: f64 = 0.000_000_5;
/// Weight of the smooth score relative to the spike score.
pub const SMOOTH_WEIGHT: f64 = 0.65;
/// The smooth score is used only for slides below this.
pub const SMOOTH_SLIDE_LIMIT: i32 = 150;
/// Smallest slide (about $507k).
pub const MIN_SLIDE: i32 = -141;
/// Largest slide, inclusive (bin 801 = 0.01 BTC, i.e. $10k).
pub const MAX_SLIDE: i32 = 200;
/// Histogram bin of 0.001 BTC (where $100 sits at slide 0, i.e. a $100k price).
pub const CENTER_BIN: usize = 601;
/// Histogram index of stencil index 0 at slide 0 (`601 - (803 + 1) / 2`).
pub const WINDOW_START: usize = CENTER_BIN - STENCIL_LEN.div_ceil(2);

/// Non-zero spike weights (stencil index, weight) at round USD amounts, copied from the
/// reference: $1 (40), $5 (141), $10 (201, 202), $15 (236), $20 (261, 262), $30 (296,
/// 297), $50 (340..=342), $100 (400..=403), $150 (436), $200 (461, 462), $300 (496, 497),
/// $500 (541), $1000 (601, 602), $1500 (636), $2000 (661, 662), $5000 (741), $10000 (801).
pub const SPIKE_WEIGHTS: [(usize, f64); 29] = [
    (40, 0.001300198324984352),
    (141, 0.001676746949820743),
    (201, 0.003468805546942046),
    (202, 0.001991977522512513),
    (236, 0.001905066647961839),
    (261, 0.003341772718156079),
    (262, 0.002588902624584287),
    (296, 0.002577893841190244),
    (297, 0.002733728814200412),
    (340, 0.003076117748975647),
    (341, 0.005613067550103145),
    (342, 0.003088253178535568),
    (400, 0.002918457489366139),
    (401, 0.006174500465286022),
    (402, 0.004417068070043504),
    (403, 0.002628663628020371),
    (436, 0.002858828161543839),
    (461, 0.004097463611984264),
    (462, 0.003345917406120509),
    (496, 0.002521467726855856),
    (497, 0.002784125730361008),
    (541, 0.003792850444811335),
    (601, 0.003688240815848247),
    (602, 0.002392400117402263),
    (636, 0.001280993059008106),
    (661, 0.001654665137536031),
    (662, 0.001395501347054946),
    (741, 0.001154279140906312),
    (801, 0.000832244504868709),
];

/// The smooth stencil: `0.0015 * e^(-(x-411)^2 / (2*201^2)) + 5e-7 * x` for x = 0..803
/// (the reference raises the literal 2.718281828459045, which is exactly `f64` `E`, to the
/// power with `**`; we use `powf` likewise rather than `exp`).
pub fn smooth_stencil() -> &'static [f64] {
    static SMOOTH: OnceLock<Vec<f64>> = OnceLock::new();
    SMOOTH.get_or_init(|| {
        (0..STENCIL_LEN)
            .map(|x| {
                let x = x as f64;
                let exp_part = -((x - SMOOTH_MEAN).powi(2)) / (2.0 * SMOOTH_STD_DEV.powi(2));
                SMOOTH_HEIGHT * std::f64::consts::E.powf(exp_part) + SMOOTH_SLOPE * x
            })
            .collect()
    })
}

/// The spike stencil as a dense vector of [`STENCIL_LEN`] values.
pub fn spike_stencil() -> Vec<f64> {
    let mut v = vec![0.0; STENCIL_LEN];
    for &(i, w) in &SPIKE_WEIGHTS {
        v[i] = w;
    }
    v
}

/// Result of the stencil slide.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoughPrice {
    /// Rough price in USD per BTC (whole dollars, truncated like the reference).
    pub price_usd: f64,
    /// Best slide.
    pub best_slide: i32,
    /// Neighbouring slide used for the weighted average (best +- 1).
    pub neighbour_slide: i32,
}

fn window(hist: &[f64], slide: i32) -> Option<&[f64]> {
    let start = usize::try_from(WINDOW_START as i64 + i64::from(slide)).ok()?;
    hist.get(start..start + STENCIL_LEN)
}

fn spike_score(window: &[f64]) -> f64 {
    SPIKE_WEIGHTS
        .iter()
        .fold(0.0, |acc, &(i, w)| acc + window[i] * w)
}

fn smooth_score(window: &[f64]) -> f64 {
    window
        .iter()
        .zip(smooth_stencil())
        .fold(0.0, |acc, (h, s)| acc + h * s)
}

fn price_at_slide(slide: i32) -> Option<f64> {
    let bin = usize::try_from(CENTER_BIN as i64 + i64::from(slide)).ok()?;
    let btc = bin_value(bin)?;
    (btc > 0.0).then(|| 100.0 / btc)
}

/// Slides the stencils over a normalised histogram of [`BIN_COUNT`] bins. `None` when the
/// histogram has the wrong size or carries no signal (all scores zero).
pub fn rough_price(hist: &[f64]) -> Option<RoughPrice> {
    if hist.len() != BIN_COUNT {
        return None;
    }
    let mut best_slide = 0i32;
    let mut best_score = 0.0f64;
    let mut total_score = 0.0f64;
    for slide in MIN_SLIDE..=MAX_SLIDE {
        let w = window(hist, slide)?;
        let mut score = spike_score(w);
        if slide < SMOOTH_SLIDE_LIMIT {
            score += smooth_score(w) * SMOOTH_WEIGHT;
        }
        if score > best_score {
            best_score = score;
            best_slide = slide;
        }
        total_score += score;
    }
    let up = spike_score(window(hist, best_slide + 1)?);
    let down = spike_score(window(hist, best_slide - 1)?);
    let (neighbour_slide, neighbour_score) = if down > up {
        (best_slide - 1, down)
    } else {
        (best_slide + 1, up)
    };
    let slides = f64::from(MAX_SLIDE - MIN_SLIDE + 1);
    let avg_score = total_score / slides;
    let a1 = best_score - avg_score;
    let a2 = (neighbour_score - avg_score).abs();
    let denom = a1 + a2;
    if denom <= 0.0 || !denom.is_finite() {
        return None;
    }
    let p1 = price_at_slide(best_slide)?;
    let p2 = price_at_slide(neighbour_slide)?;
    let price = ((a1 / denom) * p1 + (a2 / denom) * p2).trunc();
    (price.is_finite() && price > 0.0).then_some(RoughPrice {
        price_usd: price,
        best_slide,
        neighbour_slide,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::utxoracle::histogram::{bin_index, Histogram};

    #[test]
    fn stencil_shapes() {
        assert_eq!(smooth_stencil().len(), 803);
        let spike = spike_stencil();
        assert_eq!(spike.len(), 803);
        assert_eq!(spike.iter().filter(|&&w| w != 0.0).count(), 29);
        assert_eq!(WINDOW_START, 199);
        // Indices strictly increasing and inside the stencil.
        assert!(SPIKE_WEIGHTS.windows(2).all(|w| w[0].0 < w[1].0));
        // The heaviest spike is $100 (index 401).
        let max = SPIKE_WEIGHTS
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert_eq!(max.0, 401);
        // Smooth stencil: bell peak near 411 plus tilt.
        let s = smooth_stencil();
        assert!((s[411] - (0.0015 + 5e-7 * 411.0)).abs() < 1e-15);
        assert!(s[411] > s[0] && s[411] > s[802]);
    }

    #[test]
    fn spike_indices_match_round_usd_offsets() {
        // At slide 0 ($100 at bin 601 = 0.001 BTC) stencil index i sits on bin 199 + i:
        // $1000 is 0.01 BTC = bin 801 = index 602; the reference puts $1000 at 601/602.
        assert_eq!(bin_index(0.01) - WINDOW_START, 602);
        assert_eq!(bin_index(0.001) - WINDOW_START, 402);
        assert_eq!(bin_index(0.0001) - WINDOW_START, 202);
    }

    #[test]
    fn slide_range_prices() {
        let high = price_at_slide(MIN_SLIDE).unwrap();
        let low = price_at_slide(MAX_SLIDE).unwrap();
        assert!((high - 506_990.708).abs() < 1.0, "{high}");
        assert!((low - 10_000.0).abs() < 1e-6, "{low}");
    }

    #[test]
    fn zero_histogram_has_no_price() {
        assert_eq!(rough_price(&vec![0.0; BIN_COUNT]), None);
        assert_eq!(rough_price(&[0.1; 10]), None);
    }

    #[test]
    fn locks_on_pure_round_usd_amounts() {
        // $10, $20, $50, $100, $200, $500, $1000 at $40,000/BTC, repeated.
        let price = 40_000.0;
        let mut sats = Vec::new();
        for (usd, n) in [
            (10.0, 30),
            (20.0, 40),
            (50.0, 40),
            (100.0, 80),
            (200.0, 40),
            (500.0, 30),
            (1000.0, 20),
        ] {
            for k in 0..n {
                let jitter = 1.0 + (k as f64 - n as f64 / 2.0) * 0.0002;
                sats.push((usd / price * 1e8 * jitter) as u64);
            }
        }
        let hist = Histogram::from_sats(sats).normalised().unwrap();
        let rough = rough_price(&hist).unwrap();
        assert!(
            (rough.price_usd / price - 1.0).abs() < 0.01,
            "rough {}",
            rough.price_usd
        );
        assert_eq!(rough.price_usd, rough.price_usd.trunc());
    }
}
