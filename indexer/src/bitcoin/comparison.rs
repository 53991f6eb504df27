//! UTXOracle versus exchange: difference and validity (pure), with DB-backed thresholds.

use sea_orm::ConnectionTrait;

use crate::config_store;

/// Validity thresholds (`oracle.*` config keys; defaults from the seed's runbook).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// `oracle.min_confidence` (default 0.3).
    pub min_confidence: f64,
    /// `oracle.min_price_usd` (default 10,000).
    pub min_price_usd: f64,
    /// `oracle.max_price_usd` (default 500,000).
    pub max_price_usd: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_confidence: 0.3,
            min_price_usd: 10_000.0,
            max_price_usd: 500_000.0,
        }
    }
}

impl Thresholds {
    /// Reads the thresholds from the config store; a missing or unparsable key keeps its
    /// default (logged).
    pub async fn load<C: ConnectionTrait>(db: &C) -> Self {
        let mut t = Self::default();
        for (key, slot) in [
            ("oracle.min_confidence", &mut t.min_confidence),
            ("oracle.min_price_usd", &mut t.min_price_usd),
            ("oracle.max_price_usd", &mut t.max_price_usd),
        ] {
            match config_store::get(db, key).await {
                Ok(Some(e)) => match e.value.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => *slot = v,
                    _ => {
                        tracing::warn!(key, value = %e.value, "unparsable threshold; default kept")
                    }
                },
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(key, error = %err, "cannot read threshold; default kept")
                }
            }
        }
        t
    }
}

/// The UTXOracle side of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OracleSide {
    /// Estimated price, USD.
    pub price: f64,
    /// Estimator confidence in [0, 1].
    pub confidence: f64,
}

/// The derived fields of one comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// `utxoracle - exchange`, when both exist.
    pub diff: Option<f64>,
    /// `diff / exchange * 100`, when both exist.
    pub diff_percent: Option<f64>,
    /// Every check passed.
    pub is_valid: bool,
    /// Why not valid (all failed checks, `; `-joined).
    pub reason: Option<String>,
}

/// Compares an estimate (or `oracle_error` when none could be made) with an exchange price.
/// Valid only with both sides, confidence >= min and the price within [min, max].
pub fn evaluate(
    oracle: Option<OracleSide>,
    oracle_error: Option<&str>,
    exchange: Option<f64>,
    t: &Thresholds,
) -> Evaluation {
    let mut reasons = Vec::new();
    match oracle {
        None => reasons.push(format!(
            "no UTXOracle estimate: {}",
            oracle_error.unwrap_or("not computed")
        )),
        Some(o) => {
            if o.confidence < t.min_confidence {
                reasons.push(format!(
                    "confidence {:.3} below {}",
                    o.confidence, t.min_confidence
                ));
            }
            if o.price < t.min_price_usd || o.price > t.max_price_usd {
                reasons.push(format!(
                    "price {:.2} outside {}..{}",
                    o.price, t.min_price_usd, t.max_price_usd
                ));
            }
        }
    }
    let exchange = exchange.filter(|p| p.is_finite() && *p > 0.0);
    if exchange.is_none() {
        reasons.push("exchange price missing".to_string());
    }
    let (diff, diff_percent) = match (oracle, exchange) {
        (Some(o), Some(x)) => (Some(o.price - x), Some((o.price - x) / x * 100.0)),
        _ => (None, None),
    };
    Evaluation {
        diff,
        diff_percent,
        is_valid: reasons.is_empty(),
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_comparison_has_diff_and_percent() {
        let e = evaluate(
            Some(OracleSide {
                price: 101_000.0,
                confidence: 0.8,
            }),
            None,
            Some(100_000.0),
            &Thresholds::default(),
        );
        assert!(e.is_valid);
        assert_eq!(e.diff, Some(1000.0));
        assert!((e.diff_percent.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(e.reason, None);
    }

    #[test]
    fn each_failed_check_is_flagged() {
        let t = Thresholds::default();
        let low = evaluate(
            Some(OracleSide {
                price: 9_000.0,
                confidence: 0.1,
            }),
            None,
            Some(9_100.0),
            &t,
        );
        assert!(!low.is_valid);
        let r = low.reason.unwrap();
        assert!(r.contains("confidence") && r.contains("outside"), "{r}");
        let high = evaluate(
            Some(OracleSide {
                price: 600_000.0,
                confidence: 0.9,
            }),
            None,
            Some(1.0),
            &t,
        );
        assert!(!high.is_valid);
        let missing = evaluate(
            Some(OracleSide {
                price: 90_000.0,
                confidence: 0.9,
            }),
            None,
            None,
            &t,
        );
        assert!(!missing.is_valid);
        assert_eq!(missing.diff, None);
        assert_eq!(missing.reason.as_deref(), Some("exchange price missing"));
        let none = evaluate(None, Some("too few"), Some(1.0), &t);
        assert!(!none.is_valid);
        assert!(none.reason.unwrap().contains("too few"));
    }
}
