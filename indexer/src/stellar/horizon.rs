//! Horizon records turned into rows: operations, their balance deltas and participants,
//! and account snapshots. Pure functions over JSON, so they are tested without a server.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::amount::parse_stroops;
use crate::sync::Quarantined;

/// One asset: code (`XLM` for native) and issuer (empty for native).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssetKey {
    /// Asset code, `XLM` for native.
    pub code: String,
    /// Issuer, empty for native.
    pub issuer: String,
}

impl AssetKey {
    /// The native asset.
    pub fn native() -> Self {
        Self {
            code: "XLM".into(),
            issuer: String::new(),
        }
    }

    /// Parses `CODE:ISSUER` or `native`/`XLM`.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "native" || s == "XLM" {
            return Some(Self::native());
        }
        let (code, issuer) = s.split_once(':')?;
        if code.is_empty() || issuer.is_empty() {
            return None;
        }
        Some(Self {
            code: code.into(),
            issuer: issuer.into(),
        })
    }

    /// `native` or `CODE:ISSUER` (Horizon's query form).
    pub fn canonical(&self) -> String {
        if self.issuer.is_empty() {
            "native".into()
        } else {
            format!("{}:{}", self.code, self.issuer)
        }
    }

    /// Horizon asset type for this key.
    pub fn asset_type(&self) -> &'static str {
        if self.issuer.is_empty() {
            "native"
        } else if self.code.len() <= 4 {
            "credit_alphanum4"
        } else {
            "credit_alphanum12"
        }
    }
}

/// Why a Horizon record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("horizon record: {0}")]
pub struct DecodeError(pub String);

/// A signed balance change of one account in one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// Account whose balance changes.
    pub account: String,
    /// Asset.
    pub asset: AssetKey,
    /// Change in stroops.
    pub stroops: i64,
}

/// An operation decoded from Horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedOp {
    /// Operation id.
    pub id: i64,
    /// Paging token.
    pub paging_token: String,
    /// Transaction hash.
    pub transaction_hash: String,
    /// Close time.
    pub created_at: DateTime<Utc>,
    /// Horizon type name.
    pub op_type: String,
    /// Source account.
    pub source_account: String,
    /// Sender for payment-like operations.
    pub from: Option<String>,
    /// Receiver for payment-like operations.
    pub to: Option<String>,
    /// Asset moved (or trusted).
    pub asset: Option<AssetKey>,
    /// Amount in stroops (payment amount, starting balance, trust limit).
    pub amount: Option<i64>,
    /// Whether the transaction succeeded.
    pub successful: bool,
    /// Accounts the operation concerns (source, sender, receiver, trustor...).
    pub participants: Vec<String>,
    /// Balance changes it causes.
    pub deltas: Vec<Delta>,
    /// The full record.
    pub raw: Value,
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn asset_at(v: &Value, prefix: &str) -> Option<AssetKey> {
    let t = s(v, &format!("{prefix}asset_type"))?;
    if t == "native" {
        return Some(AssetKey::native());
    }
    Some(AssetKey {
        code: s(v, &format!("{prefix}asset_code"))?.to_string(),
        issuer: s(v, &format!("{prefix}asset_issuer"))?.to_string(),
    })
}

fn amount(v: &Value, k: &str) -> Result<Option<i64>, DecodeError> {
    match s(v, k) {
        None => Ok(None),
        Some(a) => parse_stroops(a)
            .map(Some)
            .ok_or_else(|| DecodeError(format!("{k} {a:?} is not an amount"))),
    }
}

/// A field every record of its kind carries: its absence is a data error, never a guess.
fn req<'a>(v: &'a Value, id: i64, k: &str) -> Result<&'a str, DecodeError> {
    s(v, k).ok_or_else(|| DecodeError(format!("operation {id}: {k} is missing")))
}

fn req_asset(v: &Value, id: i64, prefix: &str) -> Result<AssetKey, DecodeError> {
    asset_at(v, prefix).ok_or_else(|| {
        DecodeError(format!(
            "operation {id}: {prefix}asset_type/{prefix}asset_code/{prefix}asset_issuer missing"
        ))
    })
}

fn req_amount(v: &Value, id: i64, k: &str) -> Result<i64, DecodeError> {
    amount(v, k)?.ok_or_else(|| DecodeError(format!("operation {id}: {k} is missing")))
}

/// Decodes one operation record. Every field that changes what is stored (the type, the
/// transaction's outcome and hash, the paging token, and each moving type's accounts, asset
/// and amount) is required: a record without one is an error, never a default.
pub fn decode_operation(v: &Value) -> Result<DecodedOp, DecodeError> {
    let id_s = s(v, "id").ok_or_else(|| DecodeError("operation without id".into()))?;
    let id: i64 = id_s
        .parse()
        .map_err(|_| DecodeError(format!("operation id {id_s:?}")))?;
    let created_at = s(v, "created_at")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| DecodeError(format!("operation {id}: created_at")))?;
    let op_type = req(v, id, "type")?.to_string();
    let source = req(v, id, "source_account")?.to_string();
    let successful = v
        .get("transaction_successful")
        .and_then(Value::as_bool)
        .ok_or_else(|| DecodeError(format!("operation {id}: transaction_successful is missing")))?;
    let transaction_hash = req(v, id, "transaction_hash")?.to_string();
    let paging_token = req(v, id, "paging_token")?.to_string();
    let mut from = None;
    let mut to = None;
    let mut asset = None;
    let mut amt = None;
    let mut deltas = Vec::new();
    match op_type.as_str() {
        "create_account" => {
            from = Some(req(v, id, "funder")?.to_string());
            to = Some(req(v, id, "account")?.to_string());
            asset = Some(AssetKey::native());
            amt = Some(req_amount(v, id, "starting_balance")?);
        }
        "payment" => {
            from = Some(req(v, id, "from")?.to_string());
            to = Some(req(v, id, "to")?.to_string());
            asset = Some(req_asset(v, id, "")?);
            amt = Some(req_amount(v, id, "amount")?);
        }
        "path_payment_strict_receive" | "path_payment_strict_send" => {
            let f = req(v, id, "from")?.to_string();
            to = Some(req(v, id, "to")?.to_string());
            asset = Some(req_asset(v, id, "")?);
            amt = Some(req_amount(v, id, "amount")?);
            let source_asset = req_asset(v, id, "source_")?;
            let source_amount = req_amount(v, id, "source_amount")?;
            if successful {
                deltas.push(Delta {
                    account: f.clone(),
                    asset: source_asset,
                    stroops: -source_amount,
                });
            }
            from = Some(f);
        }
        "change_trust" => {
            from = Some(req(v, id, "trustor")?.to_string());
            to = from.clone();
            asset = asset_at(v, "");
            amt = amount(v, "limit")?;
        }
        _ => {}
    }
    if successful {
        match op_type.as_str() {
            "create_account" | "payment" => {
                if let (Some(f), Some(t), Some(a), Some(x)) = (&from, &to, &asset, amt) {
                    deltas.push(Delta {
                        account: f.clone(),
                        asset: a.clone(),
                        stroops: -x,
                    });
                    deltas.push(Delta {
                        account: t.clone(),
                        asset: a.clone(),
                        stroops: x,
                    });
                }
            }
            "path_payment_strict_receive" | "path_payment_strict_send" => {
                if let (Some(t), Some(a), Some(x)) = (&to, &asset, amt) {
                    deltas.push(Delta {
                        account: t.clone(),
                        asset: a.clone(),
                        stroops: x,
                    });
                }
            }
            _ => {}
        }
    }
    let mut participants = vec![source.clone()];
    for p in [&from, &to].into_iter().flatten() {
        if !participants.contains(p) {
            participants.push(p.clone());
        }
    }
    Ok(DecodedOp {
        id,
        paging_token,
        transaction_hash,
        created_at,
        op_type,
        source_account: source,
        from,
        to,
        asset,
        amount: amt,
        successful,
        participants,
        deltas,
        raw: v.clone(),
    })
}

/// One balance line of an account record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceLine {
    /// Asset.
    pub asset: AssetKey,
    /// Balance in stroops.
    pub balance: i64,
    /// Trustline limit (credit assets).
    pub limit: Option<i64>,
    /// Last modification ledger, when given.
    pub last_modified_ledger: Option<i64>,
}

/// An account record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSnapshot {
    /// Account id.
    pub id: String,
    /// Sequence number.
    pub sequence: Option<i64>,
    /// Subentry count.
    pub subentry_count: Option<i32>,
    /// Last modification ledger.
    pub last_modified_ledger: Option<i64>,
    /// Last modification time.
    pub last_modified_at: Option<DateTime<Utc>>,
    /// Balances.
    pub balances: Vec<BalanceLine>,
}

/// Decodes `/accounts/{id}`.
pub fn decode_account(v: &Value) -> Result<AccountSnapshot, DecodeError> {
    let id = s(v, "account_id")
        .or_else(|| s(v, "id"))
        .ok_or_else(|| DecodeError("account without id".into()))?
        .to_string();
    let mut balances = Vec::new();
    for b in v
        .get("balances")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // Liquidity-pool shares have no asset code; they are not balances we track.
        let Some(asset) = asset_at(b, "") else {
            continue;
        };
        balances.push(BalanceLine {
            asset,
            balance: amount(b, "balance")?.ok_or_else(|| {
                DecodeError(format!("account {id}: a balance line without balance"))
            })?,
            limit: amount(b, "limit")?,
            last_modified_ledger: b.get("last_modified_ledger").and_then(Value::as_i64),
        });
    }
    Ok(AccountSnapshot {
        sequence: s(v, "sequence").and_then(|x| x.parse().ok()),
        subentry_count: v
            .get("subentry_count")
            .and_then(Value::as_i64)
            .map(|x| x as i32),
        last_modified_ledger: v.get("last_modified_ledger").and_then(Value::as_i64),
        last_modified_at: s(v, "last_modified_time")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        id,
        balances,
    })
}

/// What the quarantine calls a Horizon transaction record.
pub const TRANSACTION_KIND: &str = "stellar.transaction";

/// Decodes a `/transactions/{hash}` record. Every stored field is required (a memo only
/// when `memo_type` says there is one): a record without one is an error, never a default.
pub fn decode_transaction(
    v: &Value,
) -> Result<orrery_entity::stellar_transaction::Model, DecodeError> {
    let hash = s(v, "hash").ok_or_else(|| DecodeError("transaction without hash".into()))?;
    let field = |k: &str| DecodeError(format!("transaction {hash}: {k} is missing or not valid"));
    let int = |k: &str| -> Result<i64, DecodeError> {
        match v.get(k) {
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| field(k)),
            Some(Value::String(t)) => t.parse().map_err(|_| field(k)),
            _ => Err(field(k)),
        }
    };
    let created_at = s(v, "created_at")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| field("created_at"))?;
    let memo_type = s(v, "memo_type").ok_or_else(|| field("memo_type"))?;
    let memo = match memo_type {
        "none" => None,
        _ => Some(s(v, "memo").ok_or_else(|| field("memo"))?.to_string()),
    };
    Ok(orrery_entity::stellar_transaction::Model {
        hash: hash.to_string(),
        source_account: s(v, "source_account")
            .ok_or_else(|| field("source_account"))?
            .to_string(),
        ledger: int("ledger")?,
        created_at,
        fee_charged: int("fee_charged")?,
        operation_count: i32::try_from(int("operation_count")?)
            .map_err(|_| field("operation_count"))?,
        successful: v
            .get("successful")
            .and_then(Value::as_bool)
            .ok_or_else(|| field("successful"))?,
        memo_type: Some(memo_type.to_string()),
        memo,
        paging_token: s(v, "paging_token")
            .ok_or_else(|| field("paging_token"))?
            .to_string(),
    })
}

/// What the quarantine calls a Horizon operation record.
pub const OPERATION_KIND: &str = "stellar.operation";

/// A page of operation records decoded one by one: a record that does not decode is
/// quarantined (a permanent data error on that record) and the page goes on without it.
#[derive(Debug, Default)]
pub struct DecodedPage {
    /// The records that decoded, in page order.
    pub ops: Vec<DecodedOp>,
    /// The records that did not.
    pub quarantined: Vec<Quarantined>,
    /// The highest paging position seen, bad records included, so a cursor passes them.
    pub last_position: Option<i64>,
}

/// Where a record sits (its paging token, else its id), when it says.
pub fn position_of(v: &Value) -> Option<i64> {
    s(v, "paging_token")
        .or_else(|| s(v, "id"))
        .and_then(|p| p.parse().ok())
}

/// Decodes `recs` (an operations page), quarantining the records that do not decode.
pub fn decode_page(recs: &[Value]) -> DecodedPage {
    let mut page = DecodedPage::default();
    for r in recs {
        let at = position_of(r);
        if let Some(p) = at {
            page.last_position = Some(page.last_position.map_or(p, |l| l.max(p)));
        }
        match decode_operation(r) {
            Ok(op) => page.ops.push(op),
            Err(e) => {
                let position = match at {
                    Some(p) => p.to_string(),
                    // No position to name it by: its place after the last one known.
                    None => format!("unidentified after {}", page.last_position.unwrap_or(0)),
                };
                page.quarantined
                    .push(Quarantined::new(OPERATION_KIND, position, r, e));
            }
        }
    }
    page
}

/// Records of a HAL collection page.
pub fn records(page: &Value) -> Vec<Value> {
    page.get("_embedded")
        .and_then(|e| e.get("records"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The ledger of an operation id (`id >> 32`).
pub fn ledger_of(op_id: i64) -> i64 {
    op_id >> 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_transaction_needs_every_stored_field() {
        let v = json!({"hash": "ab", "source_account": "GA", "ledger": 7,
            "created_at": "2025-01-01T00:00:05Z", "fee_charged": "100", "operation_count": 2,
            "successful": true, "memo_type": "text", "memo": "dist-1", "paging_token": "30064775168"});
        let t = decode_transaction(&v).unwrap();
        assert_eq!((t.ledger, t.fee_charged, t.operation_count), (7, 100, 2));
        assert_eq!(t.memo.as_deref(), Some("dist-1"));
        let mut none = v.clone();
        none["memo_type"] = json!("none");
        none.as_object_mut().unwrap().remove("memo");
        assert_eq!(decode_transaction(&none).unwrap().memo, None);
        for k in [
            "ledger",
            "created_at",
            "fee_charged",
            "successful",
            "memo_type",
            "memo",
            "paging_token",
            "source_account",
        ] {
            let mut bad = v.clone();
            bad.as_object_mut().unwrap().remove(k);
            let e = decode_transaction(&bad).unwrap_err();
            assert!(e.to_string().contains(k), "{k}: {e}");
        }
        let mut bad = v.clone();
        bad["fee_charged"] = json!("1e3");
        assert!(decode_transaction(&bad).is_err());
    }

    #[test]
    fn payment_moves_the_amount_between_sender_and_receiver() {
        let v = json!({"id": "4294971393", "paging_token": "4294971393", "type": "payment",
            "source_account": "GA", "from": "GA", "to": "GB", "asset_type": "credit_alphanum4",
            "asset_code": "UBEC", "asset_issuer": "GI", "amount": "12.5000000",
            "created_at": "2025-01-01T00:00:05Z", "transaction_hash": "ab",
            "transaction_successful": true});
        let op = decode_operation(&v).unwrap();
        assert_eq!(op.id, 4_294_971_393);
        assert_eq!(ledger_of(op.id), 1);
        assert_eq!(op.amount, Some(125_000_000));
        let ubec = AssetKey::parse("UBEC:GI").unwrap();
        assert_eq!(
            op.deltas,
            vec![
                Delta {
                    account: "GA".into(),
                    asset: ubec.clone(),
                    stroops: -125_000_000
                },
                Delta {
                    account: "GB".into(),
                    asset: ubec,
                    stroops: 125_000_000
                },
            ]
        );
        assert_eq!(op.participants, vec!["GA".to_string(), "GB".to_string()]);
    }

    #[test]
    fn failed_and_trust_operations_change_no_balance() {
        let v = json!({"id": "5", "paging_token": "5", "type": "payment", "source_account": "GA",
            "from": "GA", "to": "GB", "asset_type": "native", "amount": "1",
            "created_at": "2025-01-01T00:00:05Z", "transaction_hash": "ab",
            "transaction_successful": false});
        assert!(decode_operation(&v).unwrap().deltas.is_empty());
        let v = json!({"id": "6", "paging_token": "6", "type": "change_trust",
            "source_account": "GA", "trustor": "GA", "transaction_hash": "ab",
            "transaction_successful": true,
            "asset_type": "credit_alphanum4", "asset_code": "UBEC", "asset_issuer": "GI",
            "limit": "922337203685.4775807", "created_at": "2025-01-01T00:00:05Z"});
        let op = decode_operation(&v).unwrap();
        assert!(op.deltas.is_empty());
        assert_eq!(op.participants, vec!["GA".to_string()]);
        let bad = json!({"id": "7", "type": "payment", "source_account": "GA", "from": "GA",
            "to": "GB", "asset_type": "native", "amount": "1.2.3", "created_at": "2025-01-01T00:00:05Z"});
        assert!(decode_operation(&bad).is_err());
    }

    #[test]
    fn fields_that_change_what_is_stored_are_required() {
        let full = json!({"id": "8", "paging_token": "8", "type": "payment", "source_account": "GA",
            "from": "GA", "to": "GB", "asset_type": "native", "amount": "1",
            "created_at": "2025-01-01T00:00:05Z", "transaction_hash": "ab",
            "transaction_successful": true});
        assert!(decode_operation(&full).is_ok());
        for field in [
            "type",
            "transaction_successful",
            "transaction_hash",
            "paging_token",
            "from",
            "to",
            "amount",
            "asset_type",
        ] {
            let mut v = full.clone();
            v.as_object_mut().unwrap().remove(field);
            let e = decode_operation(&v).expect_err(field).to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn a_page_quarantines_its_bad_records_and_passes_them() {
        let good = |id: i64| {
            json!({"id": id.to_string(), "paging_token": id.to_string(), "type": "payment",
                "source_account": "GA", "from": "GA", "to": "GB", "asset_type": "native",
                "amount": "1", "created_at": "2025-01-01T00:00:05Z", "transaction_hash": "ab",
                "transaction_successful": true})
        };
        let mut bad = good(12);
        bad.as_object_mut()
            .unwrap()
            .remove("transaction_successful");
        let page = decode_page(&[good(10), good(11), bad]);
        assert_eq!(
            page.ops.iter().map(|o| o.id).collect::<Vec<_>>(),
            vec![10, 11]
        );
        assert_eq!(page.quarantined.len(), 1);
        assert_eq!(page.quarantined[0].position, "12");
        assert_eq!(page.quarantined[0].kind, OPERATION_KIND);
        assert_eq!(page.last_position, Some(12));
    }

    #[test]
    fn account_balances_decode_with_native_last() {
        let v = json!({"account_id": "GA", "sequence": "42", "subentry_count": 1,
            "last_modified_ledger": 9, "balances": [
            {"balance": "3.0000000", "limit": "922337203685.4775807", "asset_type": "credit_alphanum4",
             "asset_code": "UBEC", "asset_issuer": "GI", "last_modified_ledger": 7},
            {"balance": "100.0000000", "asset_type": "native"}]});
        let a = decode_account(&v).unwrap();
        assert_eq!(a.sequence, Some(42));
        assert_eq!(a.balances.len(), 2);
        assert_eq!(a.balances[0].balance, 30_000_000);
        assert_eq!(a.balances[1].asset, AssetKey::native());
        assert_eq!(a.balances[1].limit, None);
    }
}
