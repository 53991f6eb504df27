//! Exact Stellar amounts: decimal strings with up to 7 decimals <-> i64 stroops.

/// Stroops per unit.
pub const STROOPS_PER_UNIT: i64 = 10_000_000;

/// Parses `"123.4567890"` (up to 7 decimals, optional leading `-`) into stroops, exactly.
pub fn parse_stroops(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if frac.len() > 7 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut f: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..7 {
        f *= 10;
    }
    let v = whole.checked_mul(STROOPS_PER_UNIT)?.checked_add(f)?;
    Some(if neg { -v } else { v })
}

/// Formats stroops as `"123.4567890"` (always 7 decimals, as Horizon does).
pub fn format_stroops(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    let unit = STROOPS_PER_UNIT as u64;
    format!("{sign}{}.{:07}", a / unit, a % unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_stroops("123.4567890"), Some(1_234_567_890));
        assert_eq!(parse_stroops("12.5"), Some(125_000_000));
        assert_eq!(parse_stroops("0.0000001"), Some(1));
        assert_eq!(parse_stroops("7"), Some(70_000_000));
        assert_eq!(parse_stroops("-1.5"), Some(-15_000_000));
        assert_eq!(parse_stroops("922337203685.4775807"), Some(i64::MAX));
        assert_eq!(parse_stroops("922337203685.4775808"), None);
        assert_eq!(parse_stroops("1.00000001"), None);
        assert_eq!(parse_stroops("1e5"), None);
        assert_eq!(parse_stroops(""), None);
        assert_eq!(parse_stroops("."), None);
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_stroops(1_234_567_890), "123.4567890");
        assert_eq!(format_stroops(1), "0.0000001");
        assert_eq!(format_stroops(-15_000_000), "-1.5000000");
        for v in [0, 1, 99, 10_000_000, i64::MAX, -7] {
            assert_eq!(parse_stroops(&format_stroops(v)), Some(v));
        }
    }
}
