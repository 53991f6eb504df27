//! Per-account resync requests and targeted (ledger-range) re-fetches.
//!
//! A request is written to the account's `stellar_sync_state` row as `status = 'requested'`
//! and a `mode` naming what to do: `incremental` (catch up from the cursor), `full` (replay
//! the whole history, atomically) or `targeted:<from>-<to>` (re-fetch the operations of
//! ledgers `from..=to` and upsert them; nothing is deleted and the cursor does not move).

use sea_orm::{ConnectionTrait, DbErr};
use serde_json::Value;

use super::horizon::{self, ledger_of, DecodedOp};
use super::store;
use crate::sync::Quarantined;
use crate::sync::SourceError;
use crate::upstream::UpstreamClient;

/// `stellar_sync_state.status` of a pending request.
pub const REQUESTED: &str = "requested";

/// What a resync request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncMode {
    /// Catch up from the account's cursor.
    Incremental,
    /// Replay the account's whole history (links and balance history replaced atomically).
    Full,
    /// Re-fetch and upsert the account's operations in ledgers `from_ledger..=to_ledger`.
    Targeted {
        /// First ledger (inclusive).
        from_ledger: i64,
        /// Last ledger (inclusive).
        to_ledger: i64,
    },
}

/// Why a targeted range is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// A ledger below 1.
    #[error("must be at least 1")]
    NotPositive,
    /// `to` before `from`.
    #[error("must not be below fromLedger")]
    Reversed,
    /// Too far for a ledger sequence (`u32`).
    #[error("is beyond the largest ledger sequence")]
    TooLarge,
}

impl ResyncMode {
    /// A validated targeted mode; the error names which end is wrong (`from` or `to`).
    pub fn targeted(from_ledger: i64, to_ledger: i64) -> Result<Self, (&'static str, RangeError)> {
        if from_ledger < 1 {
            return Err(("from", RangeError::NotPositive));
        }
        if from_ledger > i64::from(u32::MAX) {
            return Err(("from", RangeError::TooLarge));
        }
        if to_ledger > i64::from(u32::MAX) {
            return Err(("to", RangeError::TooLarge));
        }
        if to_ledger < from_ledger {
            return Err(("to", RangeError::Reversed));
        }
        Ok(Self::Targeted {
            from_ledger,
            to_ledger,
        })
    }

    /// The `stellar_sync_state.mode` text.
    pub fn as_mode(&self) -> String {
        match self {
            Self::Incremental => "incremental".into(),
            Self::Full => "full".into(),
            Self::Targeted {
                from_ledger,
                to_ledger,
            } => format!("targeted:{from_ledger}-{to_ledger}"),
        }
    }

    /// Parses a `stellar_sync_state.mode` text.
    pub fn parse(mode: &str) -> Option<Self> {
        match mode {
            "incremental" => Some(Self::Incremental),
            "full" => Some(Self::Full),
            other => {
                let (from, to) = other.strip_prefix("targeted:")?.split_once('-')?;
                Self::targeted(from.parse().ok()?, to.parse().ok()?).ok()
            }
        }
    }
}

/// Every operation of `account` in ledgers `from..=to`, ascending (`limit` per page), and
/// the records of that range that did not decode (quarantined, passed over).
pub async fn fetch_range(
    client: &UpstreamClient,
    account: &str,
    from: i64,
    to: i64,
    limit: u32,
) -> Result<(Vec<DecodedOp>, Vec<Quarantined>), SourceError> {
    let mut ops = Vec::new();
    let mut quarantined = Vec::new();
    // Operation ids are `ledger << 32 | ...` with a non-zero low part: start just before.
    let mut cursor = (from << 32).saturating_sub(1).max(0);
    loop {
        let path =
            format!("/accounts/{account}/operations?cursor={cursor}&limit={limit}&order=asc");
        let page: Value = match client.get_json(&path).await {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok((ops, quarantined)),
            Err(e) => return Err(e.into()),
        };
        let recs = horizon::records(&page);
        let n = recs.len();
        let decoded = horizon::decode_page(&recs);
        quarantined.extend(decoded.quarantined.into_iter().filter(|q| {
            q.position
                .parse::<i64>()
                .map_or(true, |p| ledger_of(p) <= to)
        }));
        for op in decoded.ops {
            if ledger_of(op.id) > to {
                return Ok((ops, quarantined));
            }
            if ledger_of(op.id) >= from {
                ops.push(op);
            }
        }
        match decoded.last_position {
            Some(p) if p > cursor && ledger_of(p) <= to && n >= limit as usize => cursor = p,
            _ => return Ok((ops, quarantined)),
        }
    }
}

/// Upserts a targeted page: operation rows (updated when present) and the account's links
/// (kept when present). Balance history is left as it is (a full resync replays it).
pub async fn upsert_range<C: ConnectionTrait>(
    db: &C,
    account: &str,
    ops: &[&DecodedOp],
) -> Result<(), DbErr> {
    store::upsert_operations(db, ops).await?;
    store::insert_links(db, account, ops).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_and_ranges_are_checked() {
        for m in [
            ResyncMode::Incremental,
            ResyncMode::Full,
            ResyncMode::targeted(5, 9).unwrap(),
        ] {
            assert_eq!(ResyncMode::parse(&m.as_mode()), Some(m));
        }
        assert_eq!(
            ResyncMode::targeted(5, 9).unwrap().as_mode(),
            "targeted:5-9"
        );
        assert_eq!(
            ResyncMode::targeted(0, 9),
            Err(("from", RangeError::NotPositive))
        );
        assert_eq!(
            ResyncMode::targeted(9, 5),
            Err(("to", RangeError::Reversed))
        );
        assert_eq!(
            ResyncMode::targeted(1, i64::MAX),
            Err(("to", RangeError::TooLarge))
        );
        assert_eq!(ResyncMode::parse("targeted:9-5"), None);
        assert_eq!(ResyncMode::parse("targeted:x"), None);
        assert_eq!(ResyncMode::parse("weird"), None);
    }
}
