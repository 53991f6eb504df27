//! What the Stellar source fetches and [`super::writer::StellarWriter`] writes: one variant
//! per kind of write, carrying every row it stores. Pure data and pure helpers.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use orrery_entity::stellar_sync_state;

use super::horizon::{ledger_of, AccountSnapshot, DecodedOp};
use super::reconciliation::BalanceCheck;
use super::resync::{ResyncMode, REQUESTED};
use super::store::Change;

/// One fetch's rows.
#[derive(Debug, Clone)]
pub enum StellarBatch {
    /// Accounts found by discovery (`(account, discovered_via)`), stored with a fresh sync
    /// state; existing rows are left alone. At start-up the engine stores the live cursor with
    /// them (in the batch's progress).
    Discover {
        /// `(account, discovered_via)`, unique.
        accounts: Vec<(String, String)>,
    },
    /// Backfill (or reconcile) pages of a few accounts, each with its new cursor.
    Pages {
        /// Operations and pages.
        rows: AccountRows,
        /// Accounts whose balances disagree with Horizon once these pages are stored (for
        /// the `orrery_balance_reconciliation_mismatches` gauge).
        mismatched: usize,
    },
    /// Operations of the global stream after the live cursor, applied to the watched accounts
    /// they touch (each account only after its own cursor).
    Live(AccountRows),
    /// Incremental resync requests taken up: `status` moves from `requested` to `syncing`.
    Picked {
        /// `(account, mode)` as read; a row whose mode changed since is left alone.
        requests: Vec<(String, String)>,
    },
    /// A targeted resync: operations of a ledger range re-fetched and upserted.
    Targeted(TargetedRange),
}

/// Operations shared by several accounts' pages, stored once.
#[derive(Debug, Clone, Default)]
pub struct AccountRows {
    /// Operation rows, unique by id.
    pub ops: Vec<DecodedOp>,
    /// One page per account; an account appears at most once.
    pub pages: Vec<AccountPage>,
}

/// What one account's page stores: links, balance history, its account record and its
/// `stellar_sync_state` row (cursor included), all in the batch's transaction.
#[derive(Debug, Clone)]
pub struct AccountPage {
    /// `G...` account id.
    pub account: String,
    /// Indices into [`AccountRows::ops`], ascending by operation id: the operations after
    /// the account's cursor (all of them for a full replay).
    pub ops: Vec<usize>,
    /// Balance history replayed from those operations.
    pub changes: Vec<Change>,
    /// A full replay: the account's links and balance history are replaced, its generation
    /// bumped and a pending `full` request cleared.
    pub full: bool,
    /// Nothing more to fetch for the account after this page.
    pub caught_up: bool,
    /// The account record, when it is comparable with the replayed balances.
    pub snapshot: Option<AccountSnapshot>,
    /// With a snapshot: the replayed balances compared with it (stored in
    /// `balance_reconciliation`, replacing the account's previous checks). Empty and
    /// ignored without a snapshot.
    pub checks: Vec<BalanceCheck>,
    /// The highest position the page read when that is past its newest stored operation
    /// (records after it were quarantined): the cursor moves there, so they are not read
    /// again.
    pub passed: Option<i64>,
}

/// A targeted resync of one account.
#[derive(Debug, Clone)]
pub struct TargetedRange {
    /// `G...` account id.
    pub account: String,
    /// The request's `mode` as read (`targeted:<from>-<to>`); the request is cleared only if
    /// it is still this one.
    pub mode: String,
    /// First ledger (inclusive).
    pub from: i64,
    /// Last ledger (inclusive).
    pub to: i64,
    /// The account's operations in the range, ascending.
    pub ops: Vec<DecodedOp>,
    /// Whether the account is caught up (its status once the request is cleared).
    pub caught_up: bool,
}

/// Builds [`AccountRows`], storing each operation once.
#[derive(Debug, Default)]
pub struct RowsBuilder {
    rows: AccountRows,
    index: HashMap<i64, usize>,
}

impl RowsBuilder {
    /// Adds `op` unless an operation with its id is there; returns its index.
    pub fn op(&mut self, op: DecodedOp) -> usize {
        let ops = &mut self.rows.ops;
        *self.index.entry(op.id).or_insert_with(|| {
            ops.push(op);
            ops.len() - 1
        })
    }

    /// Adds a page with its operations (ascending); operations already added by another
    /// page are shared.
    pub fn page(&mut self, ops: Vec<DecodedOp>, facts: PageFacts) {
        let at = ops.into_iter().map(|op| self.op(op)).collect();
        self.page_at(at, facts);
    }

    /// Adds a page whose operations were added with [`RowsBuilder::op`] (indices, ascending).
    pub fn page_at(&mut self, ops: Vec<usize>, facts: PageFacts) {
        self.rows.pages.push(AccountPage {
            account: facts.account,
            ops,
            changes: facts.changes,
            full: facts.full,
            caught_up: facts.caught_up,
            snapshot: facts.snapshot,
            checks: facts.checks,
            passed: facts.passed,
        });
    }

    /// The rows.
    pub fn finish(self) -> AccountRows {
        self.rows
    }
}

/// Everything of an [`AccountPage`] besides its operations.
#[derive(Debug, Clone)]
pub struct PageFacts {
    /// See [`AccountPage::account`].
    pub account: String,
    /// See [`AccountPage::changes`].
    pub changes: Vec<Change>,
    /// See [`AccountPage::full`].
    pub full: bool,
    /// See [`AccountPage::caught_up`].
    pub caught_up: bool,
    /// See [`AccountPage::snapshot`].
    pub snapshot: Option<AccountSnapshot>,
    /// See [`AccountPage::checks`].
    pub checks: Vec<BalanceCheck>,
    /// See [`AccountPage::passed`].
    pub passed: Option<i64>,
}

impl AccountRows {
    /// The operations of `page`, ascending.
    pub fn ops_of<'a>(&'a self, page: &'a AccountPage) -> impl Iterator<Item = &'a DecodedOp> {
        page.ops.iter().filter_map(|&i| self.ops.get(i))
    }

    /// Operation rows counted per page (an operation of two pages counts twice).
    pub fn page_ops(&self) -> u64 {
        self.pages.iter().map(|p| p.ops.len() as u64).sum()
    }
}

/// The `stellar_sync_state` row after `page` is stored over `state` (`last` is the page's
/// newest operation).
///
/// A page never clears a pending request (`status = 'requested'`) except the one it serves:
/// a full replay clears a `full` request. Other requests are taken up once the source is
/// caught up (see `Picked` and `Targeted`).
pub fn next_state(
    mut state: stellar_sync_state::Model,
    page: &AccountPage,
    last: Option<&DecodedOp>,
    now: DateTime<Utc>,
) -> stellar_sync_state::Model {
    let serves_request = page.full && state.mode == ResyncMode::Full.as_mode();
    if page.full {
        state.generation = state.generation.saturating_add(1);
    }
    if serves_request {
        state.mode = ResyncMode::Incremental.as_mode();
    }
    if page.snapshot.is_some() {
        // A complete read of the account: an earlier error is over.
        state.last_error = None;
    }
    if let Some(last) = last {
        state.cursor = Some(last.paging_token.clone());
        state.last_ledger = Some(ledger_of(last.id));
    }
    if let Some(p) = page.passed.filter(|p| last.is_none_or(|l| *p > l.id)) {
        state.cursor = Some(p.to_string());
        state.last_ledger = Some(ledger_of(p));
    }
    if state.status != REQUESTED || serves_request {
        state.status = if page.caught_up { "synced" } else { "syncing" }.into();
    }
    state.last_sync_at = Some(now);
    state.error_count = 0;
    state.updated_at = now;
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: i64) -> DecodedOp {
        crate::stellar::store::tests::op(id, vec![])
    }

    fn facts(account: &str) -> PageFacts {
        PageFacts {
            account: account.into(),
            changes: vec![],
            full: false,
            caught_up: true,
            snapshot: None,
            checks: vec![],
            passed: None,
        }
    }

    fn state(status: &str, mode: &str) -> stellar_sync_state::Model {
        stellar_sync_state::Model {
            account_id: "GA".into(),
            last_ledger: Some(1),
            cursor: Some("7".into()),
            last_sync_at: None,
            status: status.into(),
            mode: mode.into(),
            error_count: 3,
            last_error: Some("old".into()),
            generation: 2,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn shared_operations_are_stored_once() {
        let mut b = RowsBuilder::default();
        b.page(vec![op(5), op(9)], facts("GA"));
        b.page(vec![op(9), op(12)], facts("GB"));
        let rows = b.finish();
        assert_eq!(
            rows.ops.iter().map(|o| o.id).collect::<Vec<_>>(),
            [5, 9, 12]
        );
        let gb: Vec<i64> = rows.ops_of(&rows.pages[1]).map(|o| o.id).collect();
        assert_eq!(gb, [9, 12]);
        assert_eq!(rows.page_ops(), 4);
    }

    #[test]
    fn pages_move_the_cursor_and_keep_pending_requests() {
        let mut b = RowsBuilder::default();
        b.page(vec![op(4 << 32 | 1)], facts("GA"));
        let rows = b.finish();
        let page = &rows.pages[0];
        let last = rows.ops_of(page).last();
        let now = Utc::now();

        let s = next_state(state("syncing", "incremental"), page, last, now);
        assert_eq!(s.cursor.as_deref(), Some(&*(4i64 << 32 | 1).to_string()));
        assert_eq!(
            (s.last_ledger, s.status.as_str(), s.error_count),
            (Some(4), "synced", 0)
        );
        assert_eq!(
            s.last_error.as_deref(),
            Some("old"),
            "kept without a snapshot"
        );
        assert_eq!(s.generation, 2);

        // A request written while the page was in flight survives it.
        for mode in ["full", "targeted:1-2", "incremental"] {
            let s = next_state(state(REQUESTED, mode), page, last, now);
            assert_eq!((s.status.as_str(), s.mode.as_str()), (REQUESTED, mode));
        }

        // The full replay serves a full request.
        let mut full = page.clone();
        full.full = true;
        full.caught_up = false;
        full.snapshot = Some(AccountSnapshot {
            id: "GA".into(),
            sequence: None,
            subentry_count: None,
            last_modified_ledger: None,
            last_modified_at: None,
            balances: vec![],
        });
        let s = next_state(state(REQUESTED, "full"), &full, None, now);
        assert_eq!(
            (s.status.as_str(), s.mode.as_str()),
            ("syncing", "incremental")
        );
        assert_eq!((s.generation, s.cursor.as_deref()), (3, Some("7")));
        assert_eq!(s.last_error, None, "reconciled");
        // ... but not a targeted one written since.
        let s = next_state(state(REQUESTED, "targeted:1-2"), &full, None, now);
        assert_eq!((s.status.as_str(), s.generation), (REQUESTED, 3));
    }
}
