//! Conditions on decoded event arguments: `eq`, `ne`, `in`, `gt`, `gte`, `lt`, `lte`.
//!
//! Stored as a JSON array, e.g.
//! `[{"field":"score","op":"gt","value":"50"}, {"field":"agentId","op":"in","value":["1","2"]}]`;
//! all must hold. Numbers may be JSON numbers or decimal strings (uint256 and int128 arguments
//! are decimal strings) and compare as exact integers of up to 256 bits with a sign; other
//! values compare as strings (0x hex case-insensitively).

use std::cmp::Ordering;

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Equal to one of a list.
    In,
    /// Greater than (numbers only).
    Gt,
    /// Greater than or equal (numbers only).
    Gte,
    /// Less than (numbers only).
    Lt,
    /// Less than or equal (numbers only).
    Lte,
}

/// One condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// Argument name; dots reach into nested objects (`a.b`).
    pub field: String,
    /// Operator.
    pub op: Op,
    /// Operand: a scalar, or an array for `in`.
    pub value: Value,
}

/// Conditions that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// Not an array of `{field, op, value}`.
    #[error("conditions must be a JSON array of {{field, op, value}}: {0}")]
    Shape(String),
    /// An operand that does not fit its operator.
    #[error("condition on {field:?}: {reason}")]
    Operand {
        /// Field.
        field: String,
        /// Why.
        reason: String,
    },
}

/// Parses and checks stored conditions (`null` means none).
pub fn parse(value: &Value) -> Result<Vec<Condition>, ConditionError> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    let conds: Vec<Condition> =
        serde_json::from_value(value.clone()).map_err(|e| ConditionError::Shape(e.to_string()))?;
    for c in &conds {
        let bad = |reason: &str| ConditionError::Operand {
            field: c.field.clone(),
            reason: reason.to_string(),
        };
        if c.field.is_empty() {
            return Err(bad("field is empty"));
        }
        match c.op {
            Op::In => {
                let Some(items) = c.value.as_array() else {
                    return Err(bad("`in` needs an array"));
                };
                if items.iter().any(|v| scalar(v).is_none()) {
                    return Err(bad("`in` items must be strings, numbers or booleans"));
                }
            }
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                if number(&c.value).is_none() {
                    return Err(bad("needs an integer (number or decimal string)"));
                }
            }
            Op::Eq | Op::Ne => {
                if scalar(&c.value).is_none() {
                    return Err(bad("needs a string, number or boolean"));
                }
            }
        }
    }
    Ok(conds)
}

/// A signed integer of up to 256 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Num {
    negative: bool,
    magnitude: U256,
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, false) => self.magnitude.cmp(&other.magnitude),
            (true, true) => other.magnitude.cmp(&self.magnitude),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn number(v: &Value) -> Option<Num> {
    let s = match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.as_str()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = U256::from_str_radix(digits, 10).ok()?;
    Some(Num {
        negative: negative && !magnitude.is_zero(),
        magnitude,
    })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x == y;
    }
    match (scalar(a), scalar(b)) {
        (Some(x), Some(y)) if x.starts_with("0x") || x.starts_with("0X") => {
            x.eq_ignore_ascii_case(&y)
        }
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn lookup<'a>(args: &'a Value, field: &str) -> Option<&'a Value> {
    field.split('.').try_fold(args, |v, part| v.get(part))
}

impl Condition {
    /// Whether the condition holds on `args` (a missing field never matches).
    pub fn holds(&self, args: &Value) -> bool {
        let Some(actual) = lookup(args, &self.field) else {
            return false;
        };
        let ordered = |want: fn(Ordering) -> bool| match (number(actual), number(&self.value)) {
            (Some(a), Some(b)) => want(a.cmp(&b)),
            _ => false,
        };
        match self.op {
            Op::Eq => equal(actual, &self.value),
            Op::Ne => !equal(actual, &self.value),
            Op::In => self
                .value
                .as_array()
                .is_some_and(|items| items.iter().any(|v| equal(actual, v))),
            Op::Gt => ordered(|o| o == Ordering::Greater),
            Op::Gte => ordered(|o| o != Ordering::Less),
            Op::Lt => ordered(|o| o == Ordering::Less),
            Op::Lte => ordered(|o| o != Ordering::Greater),
        }
    }
}

/// Whether every condition holds.
pub fn all_hold(conditions: &[Condition], args: &Value) -> bool {
    conditions.iter().all(|c| c.holds(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(conds: Value, args: Value) -> bool {
        all_hold(&parse(&conds).unwrap(), &args)
    }

    #[test]
    fn numbers_compare_exactly_beyond_64_bits() {
        let big = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert!(check(
            json!([{"field": "v", "op": "gt", "value": "18446744073709551616"}]),
            json!({"v": big})
        ));
        assert!(!check(
            json!([{"field": "v", "op": "gt", "value": big}]),
            json!({"v": big})
        ));
        assert!(check(
            json!([{"field": "v", "op": "gte", "value": big}]),
            json!({"v": big})
        ));
        assert!(check(
            json!([{"field": "score", "op": "gt", "value": "50"}]),
            json!({"score": 90})
        ));
        assert!(!check(
            json!([{"field": "score", "op": "gt", "value": 50}]),
            json!({"score": "50"})
        ));
        assert!(check(
            json!([{"field": "value", "op": "lt", "value": "0"}]),
            json!({"value": "-7"})
        ));
        assert!(check(
            json!([{"field": "value", "op": "gt", "value": "-10"}]),
            json!({"value": "-7"})
        ));
        // Not a number: ordering never matches.
        assert!(!check(
            json!([{"field": "tag", "op": "gt", "value": "1"}]),
            json!({"tag": "speed"})
        ));
    }

    #[test]
    fn eq_in_and_missing_fields() {
        let args = json!({"agentId": "2", "clientAddress": "0xAbC", "nested": {"k": "x"}});
        assert!(check(
            json!([{"field": "agentId", "op": "in", "value": ["1", "2"]}]),
            args.clone()
        ));
        assert!(!check(
            json!([{"field": "agentId", "op": "in", "value": ["1", "3"]}]),
            args.clone()
        ));
        assert!(check(
            json!([{"field": "agentId", "op": "eq", "value": 2}]),
            args.clone()
        ));
        assert!(check(
            json!([{"field": "clientAddress", "op": "eq", "value": "0xabc"}]),
            args.clone()
        ));
        assert!(check(
            json!([{"field": "nested.k", "op": "eq", "value": "x"}]),
            args.clone()
        ));
        assert!(!check(
            json!([{"field": "missing", "op": "ne", "value": "x"}]),
            args.clone()
        ));
        // All must hold.
        assert!(!check(
            json!([
                {"field": "agentId", "op": "eq", "value": "2"},
                {"field": "nested.k", "op": "eq", "value": "y"}
            ]),
            args.clone()
        ));
        assert!(check(Value::Null, args));
    }

    #[test]
    fn bad_conditions_are_refused() {
        assert!(parse(&json!({"field": "a"})).is_err());
        assert!(parse(&json!([{"field": "a", "op": "like", "value": "x"}])).is_err());
        assert!(parse(&json!([{"field": "a", "op": "in", "value": "x"}])).is_err());
        assert!(parse(&json!([{"field": "a", "op": "gt", "value": "ten"}])).is_err());
        assert!(parse(&json!([{"field": "", "op": "eq", "value": "x"}])).is_err());
        assert!(parse(&json!([{"field": "a", "op": "eq", "value": {"x": 1}}])).is_err());
    }
}
