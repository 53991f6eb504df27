//! The `stellar` source: backfills every watched account from its own cursor (bounded
//! concurrency), then follows the global operation stream from a cursor recorded before
//! the backfill began, applying to each account only operations after that account's cursor.
//!
//! The source only fetches: each [`Source::fetch`] returns one [`StellarBatch`] which
//! [`StellarWriter`] stores in the engine's transaction together with the source's cursor.
//! Every account's rows commit with that account's cursor (its `stellar_sync_state` row), so
//! a crash at any point resumes with no gap and no duplicate.
//!
//! In-memory state (account cursors, replayed balances, the live cursor, the stream) moves
//! forward when a batch is fetched, as if it will commit. `prefetch` stays 0: each fetch
//! runs after the previous batch committed, because it reads what that batch wrote (cursors,
//! replayed balances, discovered accounts). When a write fails the engine calls
//! [`Source::resume`], which reloads that state from the database and drops the stream.

mod chores;
mod pages;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use orrery_entity::{source, stellar_account, stellar_sync_state};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::Value;

use super::batch::{PageFacts, RowsBuilder, StellarBatch};
use super::horizon::{self, AssetKey, DecodedOp};
use super::reconciliation;
use super::resync::REQUESTED;
use super::settings::StellarSettings;
use super::store::{self, Running};
use super::writer::StellarWriter;
use super::{dex, sse};
use crate::metrics::Metrics;
use crate::sync::{
    BatchWriter, Fetched, Progress, Source, SourceDescriptor, SourceError, SyncContext,
};
use crate::upstream::UpstreamClient;

use chores::Chore;

/// Pages of `/operations` scanned to find the issuer of a bare asset code.
const RESOLVE_PAGES: usize = 50;

/// Source id in the `source` table.
pub const SOURCE_ID: &str = "stellar";

/// Where the source is in its start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Assets, pairs and accounts are to be resolved (first fetch, or the discovery batch
    /// was not committed).
    Discover,
    /// The discovery batch was handed to the engine; the next fetch loads the accounts it
    /// stored.
    Discovered,
    /// Backfilling and following the stream.
    Ready,
}

/// The Stellar source.
pub struct StellarSource {
    client: UpstreamClient,
    settings: StellarSettings,
    writer: Arc<StellarWriter>,
    phase: Phase,
    assets: Vec<AssetKey>,
    /// Per watched account: cursor (operation id), backfill done.
    accounts: BTreeMap<String, AccountState>,
    /// Replayed balances, loaded lazily from the balance history.
    running: HashMap<String, Running>,
    /// Accounts whose balances should be reconciled again.
    dirty: BTreeSet<String>,
    /// Accounts the last batch reconciled (taken off `dirty`); put back when it fails.
    cleaned: Vec<String>,
    mismatched: BTreeSet<String>,
    live_cursor: Option<i64>,
    rr: usize,
    pairs: Vec<dex::Pair>,
    stream: Option<sse::OperationStream>,
    last_discovery: Option<Instant>,
    stream_unsupported: bool,
    last_prices: Option<Instant>,
    /// Last time the watched set was compared with `stellar_account.watched`.
    last_watch_check: Option<Instant>,
    /// Work left after the live stream caught up (see [`Chore`]).
    chores: VecDeque<Chore>,
    /// Runtime settings (`sync.batch_size`); without them `page_size` applies.
    runtime: Option<crate::runtime_settings::RuntimeSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AccountState {
    cursor: i64,
    caught_up: bool,
    full: bool,
}

fn data(e: impl std::fmt::Display) -> SourceError {
    SourceError::Malformed(e.to_string())
}

impl StellarSource {
    /// A source for `settings` talking through `client`.
    pub fn new(client: UpstreamClient, settings: StellarSettings) -> Self {
        Self {
            client,
            settings,
            writer: Arc::new(StellarWriter),
            phase: Phase::Discover,
            assets: Vec::new(),
            accounts: BTreeMap::new(),
            running: HashMap::new(),
            dirty: BTreeSet::new(),
            cleaned: Vec::new(),
            mismatched: BTreeSet::new(),
            live_cursor: None,
            rr: 0,
            pairs: Vec::new(),
            stream: None,
            last_discovery: None,
            stream_unsupported: false,
            last_prices: None,
            last_watch_check: None,
            chores: VecDeque::new(),
            runtime: None,
        }
    }

    /// Takes the page size from `runtime` (`sync.batch_size`) from now on.
    pub fn with_runtime(mut self, runtime: crate::runtime_settings::RuntimeSettings) -> Self {
        self.runtime = Some(runtime);
        self
    }

    fn limit(&self) -> u32 {
        // `sync.batch_size` as in force now; its start value is `page_size`.
        match &self.runtime {
            Some(r) => r.batch_size(),
            None => self.settings.page_size.clamp(1, 200),
        }
    }

    /// Resolves `assets` (bare codes through the first `/operations` page).
    async fn resolve_assets(&self) -> Result<Vec<AssetKey>, SourceError> {
        let mut out = Vec::new();
        let mut bare = Vec::new();
        for a in &self.settings.assets {
            match AssetKey::parse(a) {
                Some(k) => out.push(k),
                None => bare.push(a.clone()),
            }
        }
        // A bare code: the issuer of the first operation carrying that code, scanning at most
        // `RESOLVE_PAGES` pages of `/operations` from the start (a devnet convenience).
        let mut cursor = 0i64;
        for _ in 0..RESOLVE_PAGES {
            if bare.is_empty() {
                break;
            }
            let page: Value = self
                .client
                .get_json(&format!("/operations?limit=200&order=asc&cursor={cursor}"))
                .await?;
            let recs = horizon::records(&page);
            for r in &recs {
                let code = r.get("asset_code").and_then(Value::as_str);
                let issuer = r.get("asset_issuer").and_then(Value::as_str);
                if let (Some(code), Some(issuer)) = (code, issuer) {
                    if let Some(i) = bare.iter().position(|b| b == code) {
                        out.push(AssetKey {
                            code: bare.swap_remove(i),
                            issuer: issuer.to_string(),
                        });
                    }
                }
            }
            match recs.last().and_then(horizon::position_of) {
                Some(last) if recs.len() == 200 => cursor = last,
                _ => break,
            }
        }
        if let Some(code) = bare.first() {
            return Err(SourceError::Config(format!(
                "stellar.assets: cannot find the issuer of {code}; write CODE:ISSUER"
            )));
        }
        Ok(out)
    }

    /// Discovers holders and records the live start cursor: the batch stores the accounts,
    /// the engine the cursor.
    async fn discover(&mut self) -> Result<Fetched<StellarBatch>, SourceError> {
        self.assets = self.resolve_assets().await?;
        let mut pairs = Vec::new();
        for p in &self.settings.dex_pairs {
            let pair = dex::parse_pair(p, &self.assets).ok_or_else(|| {
                SourceError::Config(format!("stellar.dex_pairs: cannot resolve {p:?}"))
            })?;
            pairs.push(pair);
        }
        let mut found: Vec<(String, String)> = self
            .settings
            .accounts
            .iter()
            .map(|a| (a.clone(), "config".to_string()))
            .collect();
        if self.settings.discover {
            found.extend(self.holders().await?);
        }
        let mut seen = BTreeSet::new();
        found.retain(|(id, _)| seen.insert(id.clone()));
        let head = match self.live_cursor {
            Some(c) => c,
            None => {
                let page: Value = self
                    .client
                    .get_json("/operations?order=desc&limit=1")
                    .await?;
                // An empty network starts at 0; a newest record without a position is not
                // guessed at.
                match horizon::records(&page).first() {
                    None => 0,
                    Some(r) => horizon::position_of(r).ok_or_else(|| {
                        SourceError::Malformed(
                            "the newest operation of /operations has no paging_token".into(),
                        )
                    })?,
                }
            }
        };
        self.pairs = pairs;
        self.live_cursor = Some(head);
        self.accounts.clear();
        self.running.clear();
        self.chores.clear();
        self.phase = Phase::Discovered;
        self.last_discovery = Some(Instant::now());
        tracing::info!(
            found = found.len(),
            live_from = head,
            "stellar: discovered accounts"
        );
        Ok(Fetched::Batch {
            batch: StellarBatch::Discover { accounts: found },
            progress: Progress {
                cursor: Some(head.to_string()),
                ..Default::default()
            },
        })
    }

    /// Every holder of the configured assets, as `(account, "holder:CODE")`.
    async fn holders(&self) -> Result<Vec<(String, String)>, SourceError> {
        let mut found = Vec::new();
        for asset in &self.assets {
            let mut cursor = String::new();
            loop {
                let page: Value = self
                    .client
                    .get_json(&format!(
                        "/accounts?asset={}&limit=200&order=asc&cursor={cursor}",
                        asset.canonical()
                    ))
                    .await?;
                let recs = horizon::records(&page);
                for r in &recs {
                    if let Some(id) = r.get("account_id").and_then(Value::as_str) {
                        found.push((id.to_string(), format!("holder:{}", asset.code)));
                    }
                }
                match recs
                    .last()
                    .and_then(|r| r.get("paging_token"))
                    .and_then(Value::as_str)
                {
                    Some(t) if recs.len() == 200 => cursor = t.to_string(),
                    _ => break,
                }
            }
        }
        Ok(found)
    }

    /// Ids of the accounts marked watched in the database.
    async fn watched_ids(ctx: &SyncContext) -> Result<BTreeSet<String>, SourceError> {
        let ids: Vec<String> = stellar_account::Entity::find()
            .select_only()
            .column(stellar_account::Column::AccountId)
            .filter(stellar_account::Column::Watched.eq(true))
            .into_tuple()
            .all(&ctx.db)
            .await?;
        Ok(ids.into_iter().collect())
    }

    /// Follows `stellar_account.watched`: newly watched accounts are backfilled from their
    /// stored cursor (covering what the live stream skipped while they were unwatched),
    /// unwatched ones are no longer fetched.
    async fn refresh_watched(&mut self, ctx: &SyncContext) -> Result<(), SourceError> {
        let watched = Self::watched_ids(ctx).await?;
        let new: Vec<&str> = watched
            .iter()
            .filter(|a| !self.accounts.contains_key(*a))
            .map(String::as_str)
            .collect();
        let rows = store::load_states(&ctx.db, &new).await?;
        let mismatched = reconciliation::mismatched_accounts(&ctx.db, SOURCE_ID).await?;
        self.last_watch_check = Some(Instant::now());
        let gone: Vec<String> = self
            .accounts
            .keys()
            .filter(|a| !watched.contains(*a))
            .cloned()
            .collect();
        for a in &gone {
            self.accounts.remove(a);
            self.running.remove(a);
            self.dirty.remove(a);
            self.mismatched.remove(a);
        }
        let added = rows.len();
        for r in rows.into_values() {
            if mismatched.contains(&r.account_id) {
                self.mismatched.insert(r.account_id.clone());
            }
            self.accounts.insert(r.account_id.clone(), state_of(&r));
        }
        if !gone.is_empty() || added > 0 {
            tracing::info!(
                added,
                removed = gone.len(),
                "stellar: watched accounts changed"
            );
            self.publish_mismatches();
        }
        Ok(())
    }

    /// Reloads every watched account from the database. An account stays caught up only
    /// when the database holds exactly what memory had (same cursor, `synced`, no pending
    /// full replay); every other one gets a backfill round from its stored cursor.
    async fn reload_states(&mut self, ctx: &SyncContext) -> Result<(), SourceError> {
        let watched = Self::watched_ids(ctx).await?;
        let ids: Vec<&str> = watched.iter().map(String::as_str).collect();
        let rows = store::load_states(&ctx.db, &ids).await?;
        let stored_mismatches = reconciliation::mismatched_accounts(&ctx.db, SOURCE_ID).await?;
        let mut accounts = BTreeMap::new();
        let mut mismatched = BTreeSet::new();
        for r in rows.into_values() {
            let mut st = state_of(&r);
            if let Some(old) = self.accounts.get(&r.account_id) {
                st.caught_up =
                    old.caught_up && old.cursor == st.cursor && r.status == "synced" && !st.full;
            }
            if stored_mismatches.contains(&r.account_id) {
                mismatched.insert(r.account_id.clone());
            }
            accounts.insert(r.account_id, st);
        }
        self.dirty.retain(|a| accounts.contains_key(a));
        self.accounts = accounts;
        self.mismatched = mismatched;
        self.last_watch_check = Some(Instant::now());
        self.publish_mismatches();
        Ok(())
    }

    fn publish_mismatches(&self) {
        Metrics::global()
            .reconciliation_mismatches
            .with_label_values(&[SOURCE_ID])
            .set(i64::try_from(self.mismatched.len()).unwrap_or(i64::MAX));
    }

    async fn running_of(
        &mut self,
        ctx: &SyncContext,
        account: &str,
    ) -> Result<Running, SourceError> {
        if let Some(r) = self.running.get(account) {
            return Ok(r.clone());
        }
        let r = store::load_running(&ctx.db, account).await?;
        self.running.insert(account.to_string(), r.clone());
        Ok(r)
    }

    /// Reads the SSE stream when enabled (opening it at `cursor` if needed); `None` means
    /// poll instead (streaming off, unsupported, or the stream just closed).
    async fn stream_batch(
        &mut self,
        cursor: i64,
        max: usize,
    ) -> Result<Option<Vec<DecodedOp>>, SourceError> {
        if !self.settings.stream || self.stream_unsupported {
            return Ok(None);
        }
        if self.stream.is_none() {
            match sse::OperationStream::open(&self.client, cursor).await {
                Ok(Some(s)) => self.stream = Some(s),
                Ok(None) => {
                    tracing::info!("stellar: Horizon does not stream; polling");
                    self.stream_unsupported = true;
                    return Ok(None);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stellar: cannot open the stream; polling");
                    return Ok(None);
                }
            }
        }
        let wait = self.poll_interval().min(Duration::from_secs(1));
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        match stream.next_batch(wait, max).await {
            Ok(sse::Batch::Ops(ops)) => Ok(Some(ops)),
            Ok(sse::Batch::Closed) | Err(_) => {
                self.stream = None;
                Ok(None)
            }
        }
    }

    /// One batch of new operations after the live cursor. A failed fetch drops the stream,
    /// so what it had read is fetched again from the live cursor (no gap); so does a failed
    /// write, through [`Source::resume`].
    async fn live(&mut self, ctx: &SyncContext) -> Result<Fetched<StellarBatch>, SourceError> {
        let r = self.live_inner(ctx).await;
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    async fn live_inner(
        &mut self,
        ctx: &SyncContext,
    ) -> Result<Fetched<StellarBatch>, SourceError> {
        let cursor = self.live_cursor.unwrap_or(0);
        let limit = self.limit();
        let (ops, caught_up, quarantined, passed) =
            match self.stream_batch(cursor, limit as usize).await? {
                Some(ops) => {
                    let n = ops.len();
                    (ops, n < limit as usize, Vec::new(), None)
                }
                None => {
                    let page: Value = self
                        .client
                        .get_json(&format!(
                            "/operations?cursor={cursor}&limit={limit}&order=asc"
                        ))
                        .await?;
                    let recs = horizon::records(&page);
                    let decoded = horizon::decode_page(&recs);
                    (
                        decoded.ops,
                        recs.len() < limit as usize,
                        decoded.quarantined,
                        decoded.last_position.filter(|p| *p > cursor),
                    )
                }
            };
        // A stream may replay the cursor's own event: keep only what is after it.
        let ops: Vec<DecodedOp> = ops.into_iter().filter(|o| o.id > cursor).collect();
        let Some((last_op, newest)) = ops.last().map(|o| (o.id, o.created_at)) else {
            // Nothing stored; the cursor still passes records that were quarantined.
            if let Some(p) = passed {
                self.live_cursor = Some(p);
            }
            return Ok(Fetched::Idle(Progress {
                cursor: passed.map(|p| p.to_string()),
                caught_up: caught_up || passed.is_none(),
                quarantined,
                ..Default::default()
            }));
        };
        let last = passed.map_or(last_op, |p| p.max(last_op));
        // Per watched account: the operations after its cursor.
        let mut per: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            for p in &op.participants {
                if let Some(st) = self.accounts.get(p) {
                    if op.id > st.cursor {
                        per.entry(p.clone()).or_default().push(i);
                    }
                }
            }
        }
        let mut staged = Vec::with_capacity(per.len());
        for (account, idx) in &per {
            let mut run = self.running_of(ctx, account).await?;
            let list: Vec<&DecodedOp> = idx.iter().filter_map(|&i| ops.get(i)).collect();
            let changes = store::apply(account, &list, &mut run);
            let last_id = list.last().map(|o| o.id);
            staged.push((account.clone(), changes, run, last_id));
        }
        // Only operations of watched accounts are stored.
        let used: BTreeSet<usize> = per.values().flatten().copied().collect();
        let mut rows = RowsBuilder::default();
        let mut moved: Vec<Option<usize>> = vec![None; ops.len()];
        for (i, op) in ops.into_iter().enumerate() {
            if used.contains(&i) {
                moved[i] = Some(rows.op(op));
            }
        }
        for ((account, idx), (_, changes, _, _)) in per.iter().zip(&staged) {
            let at: Vec<usize> = idx
                .iter()
                .filter_map(|&i| moved.get(i).copied().flatten())
                .collect();
            rows.page_at(
                at,
                PageFacts {
                    account: account.clone(),
                    changes: changes.clone(),
                    full: false,
                    caught_up: true,
                    snapshot: None,
                    checks: vec![],
                    passed: None,
                },
            );
        }
        // As if committed: advance the live cursor and the accounts it touched.
        self.live_cursor = Some(last);
        for (account, _, run, last_id) in staged {
            if let (Some(st), Some(l)) = (self.accounts.get_mut(&account), last_id) {
                st.cursor = st.cursor.max(l);
            }
            self.running.insert(account.clone(), run);
            self.dirty.insert(account);
        }
        Ok(Fetched::Batch {
            batch: StellarBatch::Live(rows.finish()),
            progress: Progress {
                head_height: Some(horizon::ledger_of(last)),
                indexed_height: Some(horizon::ledger_of(last)),
                cursor: Some(last.to_string()),
                caught_up,
                newest_item_at: Some(newest),
                quarantined,
                ..Default::default()
            },
        })
    }
}

/// In-memory state of a sync-state row (not caught up until a page says so).
fn state_of(r: &stellar_sync_state::Model) -> AccountState {
    AccountState {
        cursor: r
            .cursor
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        caught_up: false,
        full: r.mode == "full" && r.status == REQUESTED,
    }
}

#[async_trait]
impl Source for StellarSource {
    type Batch = StellarBatch;

    fn descriptor(&self) -> SourceDescriptor {
        descriptor()
    }

    /// Drops everything fetched but maybe not committed: the stream (it read past the stored
    /// cursor), pending chores and replayed balances; takes the live cursor from `stored`
    /// and reloads the accounts from the database. Before discovery has committed, the next
    /// fetch discovers again.
    async fn resume(
        &mut self,
        ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.stream = None;
        self.chores.clear();
        self.running.clear();
        let cleaned = std::mem::take(&mut self.cleaned);
        self.dirty.extend(cleaned);
        self.live_cursor = stored.cursor.as_deref().and_then(|c| c.parse().ok());
        if self.phase != Phase::Ready || self.live_cursor.is_none() {
            self.phase = Phase::Discover;
            self.accounts.clear();
            return Ok(());
        }
        self.reload_states(ctx).await
    }

    async fn fetch(&mut self, ctx: &SyncContext) -> Result<Fetched<StellarBatch>, SourceError> {
        // The previous batch, if any, has committed: the engine asks for the next one only
        // then (prefetch 0), or calls `resume` first.
        self.cleaned.clear();
        match self.phase {
            Phase::Discover => return self.discover().await,
            Phase::Discovered => {
                // Committed: from now on a failure reloads instead of discovering again.
                self.phase = Phase::Ready;
                self.accounts.clear();
                self.reload_states(ctx).await?;
                tracing::info!(
                    accounts = self.accounts.len(),
                    live_from = ?self.live_cursor,
                    "stellar: watching"
                );
            }
            Phase::Ready => {}
        }
        let check_due = self
            .last_watch_check
            .is_none_or(|t| t.elapsed() >= self.poll_interval());
        if check_due {
            self.refresh_watched(ctx).await?;
        }
        if let Some(f) = self.run_chores(ctx).await? {
            return Ok(f);
        }
        let pending: Vec<String> = self
            .accounts
            .iter()
            .filter(|(_, s)| !s.caught_up)
            .map(|(a, _)| a.clone())
            .collect();
        if !pending.is_empty() {
            let n = self.settings.account_concurrency.max(1);
            let start = self.rr % pending.len();
            let batch: Vec<String> = pending
                .iter()
                .cycle()
                .skip(start)
                .take(n.min(pending.len()))
                .cloned()
                .collect();
            self.rr = self.rr.wrapping_add(n);
            return self.backfill(ctx, batch).await;
        }
        let fetched = self.live(ctx).await?;
        let caught_up = match &fetched {
            Fetched::Batch { progress, .. } | Fetched::Idle(progress) => progress.caught_up,
            Fetched::Revert { .. } => false,
        };
        if caught_up {
            self.chores = Chore::ALL.into_iter().collect();
            if matches!(fetched, Fetched::Idle(_)) {
                // Nothing to write from the stream: do the chores now rather than after
                // the poll interval.
                if let Some(f) = self.run_chores(ctx).await? {
                    return Ok(f);
                }
            }
        }
        Ok(fetched)
    }

    fn writer(&self) -> Arc<dyn BatchWriter<StellarBatch>> {
        self.writer.clone()
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms.max(10))
    }
}

/// The descriptor of the Stellar source.
pub fn descriptor() -> SourceDescriptor {
    SourceDescriptor {
        id: SOURCE_ID.into(),
        kind: "stellar",
        name: "Stellar (Horizon)".into(),
        chain_id: None,
    }
}
