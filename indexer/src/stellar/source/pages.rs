//! Account pages: fetching one account's next page (its whole history for a full replay)
//! and turning fetched pages into a [`StellarBatch::Pages`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde_json::Value;

use super::{data, StellarSource};
use crate::stellar::batch::{PageFacts, RowsBuilder, StellarBatch};
use crate::stellar::horizon::{self, decode_account, AccountSnapshot, DecodedOp};
use crate::stellar::reconciliation;
use crate::stellar::store::{self, Running};
use crate::sync::{Fetched, Progress, Quarantined, SourceError, SyncContext};
use crate::upstream::UpstreamClient;

/// What one account fetch brought back.
pub(super) struct PageFetch {
    account: String,
    ops: Vec<DecodedOp>,
    caught_up: bool,
    /// Account record, when the account is caught up and the record matches the cursor.
    snapshot: Option<AccountSnapshot>,
    full: bool,
    /// Records of the pages that did not decode (quarantined; the cursor passes them).
    quarantined: Vec<Quarantined>,
    /// The highest position read, bad records included.
    passed: Option<i64>,
}

/// Fetches one page of an account (all pages for a full resync), plus its record when it
/// is caught up and `want_snapshot`.
pub(super) async fn fetch_page(
    client: &UpstreamClient,
    account: String,
    cursor: i64,
    limit: u32,
    full: bool,
    want_snapshot: bool,
) -> Result<PageFetch, SourceError> {
    let mut ops = Vec::new();
    let mut quarantined = Vec::new();
    let mut passed = None;
    let mut c = if full { 0 } else { cursor };
    let caught_up = loop {
        let path = format!("/accounts/{account}/operations?cursor={c}&limit={limit}&order=asc");
        let page: Value = match client.get_json(&path).await {
            Ok(p) => p,
            Err(e) if e.is_not_found() => break true,
            Err(e) => return Err(e.into()),
        };
        let recs = horizon::records(&page);
        let n = recs.len();
        let decoded = horizon::decode_page(&recs);
        ops.extend(decoded.ops);
        quarantined.extend(decoded.quarantined);
        if let Some(last) = decoded.last_position.max(ops.last().map(|o| o.id)) {
            if last <= c && n > 0 {
                // A full page whose records name no later position: paging cannot move on.
                return Err(SourceError::Malformed(format!(
                    "/accounts/{account}/operations: a page after cursor {c} names no later position"
                )));
            }
            c = last;
            passed = Some(last);
        }
        if n < limit as usize {
            break true;
        }
        if !full {
            break false;
        }
    };
    let mut snapshot = None;
    if caught_up && want_snapshot {
        match client
            .get_json::<Value>(&format!("/accounts/{account}"))
            .await
        {
            Ok(v) => {
                let snap = decode_account(&v).map_err(data)?;
                // The record is comparable only if no operation arrived after our page.
                let after: Value = client
                    .get_json(&format!(
                        "/accounts/{account}/operations?cursor={c}&limit=1&order=asc"
                    ))
                    .await?;
                if horizon::records(&after).is_empty() {
                    snapshot = Some(snap);
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(PageFetch {
        account,
        ops,
        caught_up,
        snapshot,
        full,
        quarantined,
        passed,
    })
}

impl StellarSource {
    /// One backfill round over up to `account_concurrency` accounts; accounts whose fetch
    /// failed are tried again next round.
    pub(super) async fn backfill(
        &mut self,
        ctx: &SyncContext,
        batch: Vec<String>,
    ) -> Result<Fetched<StellarBatch>, SourceError> {
        let limit = self.limit();
        let reconcile = self.settings.reconcile;
        let futs = batch.iter().filter_map(|a| {
            let st = self.accounts.get(a)?;
            Some(fetch_page(
                &self.client,
                a.clone(),
                st.cursor,
                limit,
                st.full,
                reconcile || st.full,
            ))
        });
        let results: Vec<Result<PageFetch, SourceError>> = join_all(futs).await;
        let mut fetched = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(f) => fetched.push(f),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if fetched.is_empty() {
            return Err(
                first_err.unwrap_or_else(|| SourceError::Malformed("nothing fetched".into()))
            );
        }
        if let Some(e) = first_err {
            tracing::warn!(error = %e, "stellar: some accounts failed this round");
        }
        self.stage_pages(ctx, fetched, false).await
    }

    /// Turns fetched pages into one batch (each account's rows with its cursor) and advances
    /// the in-memory state as if it commits. `caught_up` is the source's state for the
    /// progress (true for reconcile pages, taken while following the stream).
    pub(super) async fn stage_pages(
        &mut self,
        ctx: &SyncContext,
        fetched: Vec<PageFetch>,
        caught_up: bool,
    ) -> Result<Fetched<StellarBatch>, SourceError> {
        // Reads first, so a failure leaves the in-memory state untouched.
        let mut runs = Vec::with_capacity(fetched.len());
        for f in &fetched {
            runs.push(if f.full {
                Running::new()
            } else {
                self.running_of(ctx, &f.account).await?
            });
        }
        let mut rows = RowsBuilder::default();
        let mut new_running = HashMap::new();
        let mut advanced = Vec::with_capacity(fetched.len());
        let mut newest: Option<DateTime<Utc>> = None;
        let mut quarantined = Vec::new();
        for (f, mut run) in fetched.into_iter().zip(runs) {
            quarantined.extend(f.quarantined);
            let cursor = self.accounts.get(&f.account).map_or(0, |s| s.cursor);
            let ops: Vec<DecodedOp> = f
                .ops
                .into_iter()
                .filter(|o| f.full || o.id > cursor)
                .collect();
            let refs: Vec<&DecodedOp> = ops.iter().collect();
            let changes = store::apply(&f.account, &refs, &mut run);
            let checks = f
                .snapshot
                .as_ref()
                .map(|s| store::balance_checks(&run, s))
                .unwrap_or_default();
            if let Some(l) = ops.last() {
                newest = Some(newest.map_or(l.created_at, |n| n.max(l.created_at)));
            }
            advanced.push((
                f.account.clone(),
                ops.last().map(|o| o.id).max(f.passed),
                f.caught_up,
                f.snapshot
                    .as_ref()
                    .map(|_| reconciliation::disagrees(&checks)),
            ));
            new_running.insert(f.account.clone(), run);
            rows.page(
                ops,
                PageFacts {
                    account: f.account,
                    changes,
                    full: f.full,
                    caught_up: f.caught_up,
                    snapshot: f.snapshot,
                    checks,
                    passed: f.passed,
                },
            );
        }
        // As if committed: advance cursors, backfill state, balances and reconciliation.
        for (account, last, page_caught_up, reconciled) in advanced {
            if let Some(st) = self.accounts.get_mut(&account) {
                if let Some(l) = last {
                    st.cursor = st.cursor.max(l);
                }
                st.caught_up = page_caught_up;
                st.full = false;
            }
            if let Some(bad) = reconciled {
                if self.dirty.remove(&account) {
                    self.cleaned.push(account.clone());
                }
                if bad {
                    self.mismatched.insert(account);
                } else {
                    self.mismatched.remove(&account);
                }
            }
        }
        self.running.extend(new_running);
        Ok(Fetched::Batch {
            batch: StellarBatch::Pages {
                rows: rows.finish(),
                mismatched: self.mismatched.len(),
            },
            progress: Progress {
                cursor: self.live_cursor.map(|c| c.to_string()),
                caught_up,
                newest_item_at: newest,
                quarantined,
                ..Default::default()
            },
        })
    }
}
