//! SAC token events (CAP-67, and the pre-Protocol-23 SAC shapes) decoded from `getEvents`
//! records into balance movements.
//!
//! | topic 0          | topics                               | data                      |
//! |------------------|--------------------------------------|---------------------------|
//! | `transfer`       | from, to, asset                      | i128 or `{amount, to_muxed_id}` |
//! | `mint`           | to, asset (P22: admin, to, asset)    | i128 or `{amount, to_muxed_id}` |
//! | `burn`           | from, asset                          | i128                      |
//! | `clawback`       | from, asset (P22: admin, from, asset)| i128                      |
//! | `fee`            | from                                 | i128 (negative: a refund) |
//! | `set_authorized` | id, asset                            | bool                      |
//!
//! An issuer never holds its own asset: a transfer from or to the issuer moves only the
//! other side (CAP-67 already reports those as `mint`/`burn`).

use std::collections::HashMap;

use stellar_xdr::{ScAddress, ScVal};

use super::types::RpcEvent;
use super::xdr::{decode, XdrError};

/// What a token event does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Movement {
    /// `amount` from `from` to `to`.
    Transfer {
        /// Sender address (`G`, `C`, `B`, `L`).
        from: String,
        /// Recipient address.
        to: String,
        /// Stroops (>= 0).
        amount: i64,
        /// The `to_muxed_id` of a muxed recipient, as a string.
        to_muxed_id: Option<String>,
    },
    /// `amount` created for `to`.
    Mint {
        /// Recipient.
        to: String,
        /// Stroops.
        amount: i64,
        /// The `to_muxed_id` of a muxed recipient.
        to_muxed_id: Option<String>,
    },
    /// `amount` destroyed from `from` (burn).
    Burn {
        /// Holder.
        from: String,
        /// Stroops.
        amount: i64,
    },
    /// `amount` clawed back from `from`.
    Clawback {
        /// Holder.
        from: String,
        /// Stroops.
        amount: i64,
    },
    /// A transaction fee charged to `from` (a negative amount is a refund).
    Fee {
        /// Fee payer.
        from: String,
        /// Stroops, negative for a refund.
        amount: i64,
    },
    /// `id`'s authorization on the asset set to `authorized`.
    SetAuthorized {
        /// Holder.
        id: String,
        /// New flag.
        authorized: bool,
    },
}

impl Movement {
    /// The event name (`transfer`, `mint`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Movement::Transfer { .. } => "transfer",
            Movement::Mint { .. } => "mint",
            Movement::Burn { .. } => "burn",
            Movement::Clawback { .. } => "clawback",
            Movement::Fee { .. } => "fee",
            Movement::SetAuthorized { .. } => "set_authorized",
        }
    }

    /// Balance deltas `(address, stroops)` this movement applies.
    pub fn deltas(&self) -> Vec<(&str, i64)> {
        match self {
            Movement::Transfer {
                from, to, amount, ..
            } => vec![(from.as_str(), -*amount), (to.as_str(), *amount)],
            Movement::Mint { to, amount, .. } => vec![(to.as_str(), *amount)],
            Movement::Burn { from, amount } | Movement::Clawback { from, amount } => {
                vec![(from.as_str(), -*amount)]
            }
            Movement::Fee { from, amount } => vec![(from.as_str(), -*amount)],
            Movement::SetAuthorized { .. } => vec![],
        }
    }

    /// Every address the movement names.
    pub fn addresses(&self) -> Vec<&str> {
        match self {
            Movement::Transfer { from, to, .. } => vec![from, to],
            Movement::Mint { to, .. } => vec![to],
            Movement::Burn { from, .. }
            | Movement::Clawback { from, .. }
            | Movement::Fee { from, .. } => vec![from],
            Movement::SetAuthorized { id, .. } => vec![id],
        }
    }
}

/// One decoded token event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEvent {
    /// The RPC event id (`<TOID>-<index>`, both zero-padded): the dedupe key and cursor.
    pub id: String,
    /// The TOID part of the id (ledger << 32 | tx << 12 | op).
    pub toid: i64,
    /// Index of the event within its TOID.
    pub index: u32,
    /// Ledger sequence.
    pub ledger: u32,
    /// `ledgerClosedAt` as given (RFC 3339).
    pub closed_at: String,
    /// Emitting contract (`C...`).
    pub contract_id: String,
    /// Transaction hash (hex).
    pub tx_hash: String,
    /// The SEP-11 asset string of the topics (`native`, `CODE:ISSUER`); `None` for `fee`.
    pub asset: Option<String>,
    /// What it does.
    pub movement: Movement,
}

/// Why an event could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A topic or the value is not valid XDR.
    #[error("event {id}: {error}")]
    Xdr {
        /// Event id.
        id: String,
        /// Decoder error.
        error: XdrError,
    },
    /// The id is not `<TOID>-<index>`.
    #[error("event id {0:?} is not <TOID>-<index>")]
    Id(String),
    /// Topic 0 names no SAC event we apply (a counted skip, not a failure).
    #[error("event {id}: unknown topic {topic}")]
    UnknownTopic {
        /// Event id.
        id: String,
        /// The first topic, rendered.
        topic: String,
    },
    /// The topics or data do not have the shape the event name requires.
    #[error("event {id} ({kind}): {what}")]
    Shape {
        /// Event id.
        id: String,
        /// Event name.
        kind: String,
        /// What was wrong.
        what: String,
    },
}

impl EventError {
    /// Whether the event is simply not one we follow (skipped and counted) rather than a
    /// broken one.
    pub fn is_unknown_topic(&self) -> bool {
        matches!(self, EventError::UnknownTopic { .. })
    }

    /// The skip counter it is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::UnknownTopic { .. } => "unknown_topic",
            EventError::Xdr { .. } => "malformed_xdr",
            EventError::Shape { .. } => "unknown_shape",
            EventError::Id(_) => "bad_id",
        }
    }
}

/// What becomes of one event of the followed assets' contracts.
#[derive(Debug)]
pub enum Verdict {
    /// Applied to the balances of followed asset `usize`.
    Apply(TokenEvent, usize),
    /// Left out, counted under this reason (a failed call's transfer, another contract, an
    /// asset topic that is not the contract's).
    Skip(&'static str),
    /// It does not decode.
    Fail(EventError),
}

/// Decodes `e` and decides what it does to the assets whose SAC ids index `by_contract`
/// (`sep11[i]`: asset `i`'s SEP-11 name, which an asset topic must equal).
pub fn classify(e: &RpcEvent, by_contract: &HashMap<String, usize>, sep11: &[String]) -> Verdict {
    let t = match decode_event(e) {
        Ok(t) => t,
        Err(err) => return Verdict::Fail(err),
    };
    // Contract events of a failed call never changed a balance; fees did.
    if !e.in_successful_contract_call && !matches!(t.movement, Movement::Fee { .. }) {
        return Verdict::Skip("failed_call");
    }
    let Some(&i) = by_contract.get(&t.contract_id) else {
        return Verdict::Skip("other_contract");
    };
    if let Some(a) = &t.asset {
        if sep11.get(i) != Some(a) {
            tracing::warn!(event = %t.id, topic = %a, expected = ?sep11.get(i), "stellar: asset topic does not match the SAC; skipped");
            return Verdict::Skip("asset_mismatch");
        }
    }
    Verdict::Apply(t, i)
}

/// Splits `<TOID>-<index>` into its parts.
pub fn parse_event_id(id: &str) -> Result<(i64, u32), EventError> {
    let bad = || EventError::Id(id.to_string());
    let (toid, index) = id.split_once('-').ok_or_else(bad)?;
    let toid: i64 = toid.parse().map_err(|_| bad())?;
    let index: u32 = index.parse().map_err(|_| bad())?;
    if toid < 0 {
        return Err(bad());
    }
    Ok((toid, index))
}

/// Renders an address topic (`G`, `C`, `M`, `B`, `L` strkeys).
fn address(v: &ScVal) -> Option<String> {
    match v {
        ScVal::Address(a) => Some(match a {
            // A muxed address: the holder is the underlying account.
            ScAddress::MuxedAccount(m) => super::xdr::account_strkey(m.ed25519.0),
            other => other.to_string(),
        }),
        _ => None,
    }
}

fn i128_of(v: &ScVal) -> Option<i128> {
    match v {
        ScVal::I128(p) => Some((i128::from(p.hi) << 64) | i128::from(p.lo)),
        _ => None,
    }
}

fn symbol(v: &ScVal) -> Option<String> {
    match v {
        ScVal::Symbol(s) => Some(s.0.to_utf8_string_lossy()),
        _ => None,
    }
}

fn string(v: &ScVal) -> Option<String> {
    match v {
        ScVal::String(s) => Some(s.0.to_utf8_string_lossy()),
        _ => None,
    }
}

/// Renders a `to_muxed_id` (u64, bytes or string).
fn muxed_id(v: &ScVal) -> Option<String> {
    match v {
        ScVal::U64(n) => Some(n.to_string()),
        ScVal::Bytes(b) => Some(hex::encode(b.0.as_slice())),
        ScVal::String(s) => Some(s.0.to_utf8_string_lossy()),
        _ => None,
    }
}

/// The amount of a transfer/mint data: an i128, or the CAP-67 map
/// `{amount: i128, to_muxed_id: u64 | bytes | string}`.
fn amount_data(v: &ScVal) -> Result<(i128, Option<String>), String> {
    if let Some(n) = i128_of(v) {
        return Ok((n, None));
    }
    let ScVal::Map(Some(map)) = v else {
        return Err(format!("data is neither i128 nor a map: {}", kind_of(v)));
    };
    let mut amount = None;
    let mut muxed = None;
    for e in map.0.iter() {
        match symbol(&e.key).as_deref() {
            Some("amount") => amount = i128_of(&e.val),
            Some("to_muxed_id") => {
                muxed = Some(muxed_id(&e.val).ok_or("to_muxed_id is not u64, bytes or string")?)
            }
            _ => return Err("unknown key in the data map".into()),
        }
    }
    let amount = amount.ok_or("data map has no i128 amount")?;
    Ok((amount, muxed))
}

fn kind_of(v: &ScVal) -> &'static str {
    v.name()
}

/// Stroops of an i128 amount: non-negative unless `signed`, within i64.
fn stroops(n: i128, signed: bool) -> Result<i64, String> {
    if !signed && n < 0 {
        return Err(format!("negative amount {n}"));
    }
    i64::try_from(n).map_err(|_| format!("amount {n} exceeds i64 stroops"))
}

/// Decodes one `getEvents` record into a token event.
pub fn decode_event(e: &RpcEvent) -> Result<TokenEvent, EventError> {
    let (toid, index) = parse_event_id(&e.id)?;
    let xdr = |error| EventError::Xdr {
        id: e.id.clone(),
        error,
    };
    let topics: Vec<ScVal> = e
        .topic
        .iter()
        .map(|t| decode::<ScVal>("ScVal topic", t))
        .collect::<Result<_, _>>()
        .map_err(xdr)?;
    let value: ScVal = decode("ScVal value", &e.value).map_err(xdr)?;
    let name = topics
        .first()
        .and_then(symbol)
        .ok_or_else(|| EventError::UnknownTopic {
            id: e.id.clone(),
            topic: topics
                .first()
                .map(|t| kind_of(t).to_string())
                .unwrap_or_else(|| "(none)".into()),
        })?;
    let shape = |what: String| EventError::Shape {
        id: e.id.clone(),
        kind: name.clone(),
        what,
    };
    let addr = |i: usize| {
        topics
            .get(i)
            .and_then(address)
            .ok_or_else(|| shape(format!("topic {i} is not an address")))
    };
    let asset_at = |i: usize| {
        topics
            .get(i)
            .and_then(string)
            .ok_or_else(|| shape(format!("topic {i} is not the asset string")))
    };
    let n = topics.len();
    let (movement, asset) = match (name.as_str(), n) {
        ("transfer", 4) => {
            let (amount, to_muxed_id) = amount_data(&value).map_err(shape)?;
            let amount = stroops(amount, false).map_err(shape)?;
            let m = Movement::Transfer {
                from: addr(1)?,
                to: addr(2)?,
                amount,
                to_muxed_id,
            };
            (m, Some(asset_at(3)?))
        }
        ("mint", 3 | 4) => {
            let (amount, to_muxed_id) = amount_data(&value).map_err(shape)?;
            let amount = stroops(amount, false).map_err(shape)?;
            // CAP-67: [mint, to, asset]; before: [mint, admin, to, asset].
            let to = addr(n - 2)?;
            (
                Movement::Mint {
                    to,
                    amount,
                    to_muxed_id,
                },
                Some(asset_at(n - 1)?),
            )
        }
        ("burn", 3) | ("clawback", 3 | 4) => {
            let amount = i128_of(&value)
                .ok_or_else(|| shape(format!("data is {}, not i128", kind_of(&value))))?;
            let amount = stroops(amount, false).map_err(shape)?;
            let from = addr(n - 2)?;
            let m = if name == "burn" {
                Movement::Burn { from, amount }
            } else {
                Movement::Clawback { from, amount }
            };
            (m, Some(asset_at(n - 1)?))
        }
        ("fee", 2) => {
            let amount = i128_of(&value)
                .ok_or_else(|| shape(format!("data is {}, not i128", kind_of(&value))))?;
            let amount = stroops(amount, true).map_err(shape)?;
            (
                Movement::Fee {
                    from: addr(1)?,
                    amount,
                },
                None,
            )
        }
        ("set_authorized", 3 | 4) => {
            let ScVal::Bool(authorized) = value else {
                return Err(shape(format!("data is {}, not bool", kind_of(&value))));
            };
            (
                Movement::SetAuthorized {
                    id: addr(n - 2)?,
                    authorized,
                },
                Some(asset_at(n - 1)?),
            )
        }
        ("transfer" | "mint" | "burn" | "clawback" | "fee" | "set_authorized", _) => {
            return Err(shape(format!("{n} topics")));
        }
        _ => {
            return Err(EventError::UnknownTopic {
                id: e.id.clone(),
                topic: name,
            })
        }
    };
    Ok(TokenEvent {
        id: e.id.clone(),
        toid,
        index,
        ledger: e.ledger,
        closed_at: e.ledger_closed_at.clone(),
        contract_id: e.contract_id.clone(),
        tx_hash: e.tx_hash.clone(),
        asset,
        movement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{
        AccountId, ClaimableBalanceId, Hash, Int128Parts, MuxedEd25519Account, PoolId, PublicKey,
        ScMap, ScMapEntry, ScString, ScSymbol, Uint256,
    };

    fn b64(v: &ScVal) -> String {
        super::super::xdr::encode(v).unwrap()
    }
    fn sym(s: &str) -> ScVal {
        ScVal::Symbol(ScSymbol(s.try_into().unwrap()))
    }
    fn string(s: &str) -> ScVal {
        ScVal::String(ScString(s.try_into().unwrap()))
    }
    fn i128v(n: i128) -> ScVal {
        ScVal::I128(Int128Parts {
            hi: (n >> 64) as i64,
            lo: n as u64,
        })
    }
    fn g(k: u8) -> ScVal {
        ScVal::Address(ScAddress::Account(AccountId(
            PublicKey::PublicKeyTypeEd25519(Uint256([k; 32])),
        )))
    }
    fn event(topics: Vec<ScVal>, value: ScVal) -> RpcEvent {
        RpcEvent {
            type_: "contract".into(),
            ledger: 9,
            ledger_closed_at: "2026-01-01T00:00:00Z".into(),
            contract_id: "C".into(),
            id: "0000000038654709761-0000000002".into(),
            operation_index: Some(0),
            transaction_index: Some(1),
            tx_hash: "ab".into(),
            in_successful_contract_call: true,
            topic: topics.iter().map(b64).collect(),
            value: b64(&value),
        }
    }

    #[test]
    fn muxed_map_form_and_holders_of_every_kind() {
        let to_muxed = ScVal::Map(Some(ScMap(
            vec![
                ScMapEntry {
                    key: sym("amount"),
                    val: i128v(42),
                },
                ScMapEntry {
                    key: sym("to_muxed_id"),
                    val: ScVal::U64(77),
                },
            ]
            .try_into()
            .unwrap(),
        )));
        let cb = ScVal::Address(ScAddress::ClaimableBalance(
            ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash([3; 32])),
        ));
        let e = decode_event(&event(
            vec![sym("transfer"), g(1), cb, string("native")],
            to_muxed,
        ))
        .unwrap();
        let Movement::Transfer {
            from,
            to,
            amount,
            to_muxed_id,
        } = &e.movement
        else {
            panic!("{e:?}");
        };
        assert!(from.starts_with('G'));
        assert!(to.starts_with('B'), "{to}");
        assert_eq!((*amount, to_muxed_id.as_deref()), (42, Some("77")));
        assert_eq!((e.toid, e.index, e.ledger), (38_654_709_761, 2, 9));

        // A muxed (M...) address holds for its underlying G account; pools are L...
        let m = ScVal::Address(ScAddress::MuxedAccount(MuxedEd25519Account {
            id: 5,
            ed25519: Uint256([1; 32]),
        }));
        let pool = ScVal::Address(ScAddress::LiquidityPool(PoolId(Hash([4; 32]))));
        let e = decode_event(&event(
            vec![sym("transfer"), pool, m, string("native")],
            i128v(1),
        ))
        .unwrap();
        let addrs = e.movement.addresses();
        assert!(addrs[0].starts_with('L'));
        assert_eq!(addrs[1], super::super::xdr::account_strkey([1; 32]));

        // Pre-Protocol-23 mint: [mint, admin, to, asset].
        let e = decode_event(&event(
            vec![sym("mint"), g(9), g(2), string("X:G")],
            i128v(5),
        ))
        .unwrap();
        assert_eq!(
            e.movement.deltas(),
            vec![(super::super::xdr::account_strkey([2; 32]).as_str(), 5)]
        );
        let e = decode_event(&event(
            vec![sym("set_authorized"), g(2), string("X:G")],
            ScVal::Bool(false),
        ))
        .unwrap();
        assert!(e.movement.deltas().is_empty());
    }

    #[test]
    fn bad_input_is_a_clear_error_never_a_panic() {
        // Unknown topic: a counted skip.
        let e = decode_event(&event(vec![sym("approve"), g(1)], i128v(1))).unwrap_err();
        assert!(e.is_unknown_topic());
        let e = decode_event(&event(vec![ScVal::U32(1)], i128v(1))).unwrap_err();
        assert!(e.is_unknown_topic());
        let e = decode_event(&event(vec![], i128v(1))).unwrap_err();
        assert!(e.is_unknown_topic());
        // Unknown value shapes.
        for (topics, value) in [
            (
                vec![sym("transfer"), g(1), g(2), string("native")],
                ScVal::U64(3),
            ),
            (
                vec![sym("transfer"), g(1), g(2), string("native")],
                i128v(-3),
            ),
            (
                vec![sym("transfer"), g(1), g(2), string("native")],
                i128v(i128::MAX),
            ),
            (vec![sym("transfer"), g(1), string("native")], i128v(3)),
            (
                vec![sym("transfer"), g(1), ScVal::Void, string("native")],
                i128v(3),
            ),
            (vec![sym("fee"), g(1)], ScVal::Bool(true)),
            (vec![sym("burn"), g(1), ScVal::U32(0)], i128v(3)),
            (vec![sym("set_authorized"), g(1), string("x")], i128v(3)),
            (
                vec![sym("transfer"), g(1), g(2), string("native")],
                ScVal::Map(Some(ScMap(
                    vec![ScMapEntry {
                        key: sym("memo"),
                        val: i128v(1),
                    }]
                    .try_into()
                    .unwrap(),
                ))),
            ),
        ] {
            let err = decode_event(&event(topics, value)).unwrap_err();
            assert!(matches!(err, EventError::Shape { .. }), "{err}");
        }
        // Malformed XDR in a topic or the value.
        let mut bad = event(vec![sym("fee"), g(1)], i128v(1));
        bad.topic[1] = "AAAAEgAAAAA=".into();
        assert!(matches!(decode_event(&bad), Err(EventError::Xdr { .. })));
        bad = event(vec![sym("fee"), g(1)], i128v(1));
        bad.value = "%%%".into();
        assert!(matches!(decode_event(&bad), Err(EventError::Xdr { .. })));
        bad = event(vec![sym("fee"), g(1)], i128v(1));
        bad.id = "12".into();
        assert!(matches!(decode_event(&bad), Err(EventError::Id(_))));
        // A negative fee is a refund, not an error.
        let e = decode_event(&event(vec![sym("fee"), g(1)], i128v(-9))).unwrap();
        assert_eq!(e.movement.deltas()[0].1, 9);
    }
}
