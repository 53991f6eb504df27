//! The `stellar` source: backfills every watched account from its own cursor (bounded
//! concurrency), then follows the global operation stream from a cursor recorded before
//! the backfill began, applying to each account only operations after that account's cursor.
//! Every step commits the pages' rows and the cursors (accounts' and the source's) in one
//! transaction, so a crash at any point resumes with no gap and no duplicate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::future::join_all;
use orrery_entity::{source, stellar_account, stellar_sync_state};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect, Set,
};
use serde_json::{json, Value};

use super::amount::format_stroops;
use super::horizon::{
    self, decode_account, decode_operation, AccountSnapshot, AssetKey, DecodedOp,
};
use super::resync::{self, ResyncMode, REQUESTED};
use super::settings::StellarSettings;
use super::store::{self, Running};
use super::{dex, distributions, sse};
use crate::bus::{topics, BusEvent};
use crate::metrics::Metrics;
use crate::sync::{Progress, Source, SourceDescriptor, SourceError, SyncContext};
use crate::upstream::UpstreamClient;

/// Pages of `/operations` scanned to find the issuer of a bare asset code.
const RESOLVE_PAGES: usize = 50;

/// Source id in the `source` table.
pub const SOURCE_ID: &str = "stellar";

/// The Stellar source.
pub struct StellarSource {
    client: UpstreamClient,
    settings: StellarSettings,
    ready: bool,
    assets: Vec<AssetKey>,
    /// Per watched account: cursor (operation id), backfill done.
    accounts: BTreeMap<String, AccountState>,
    running: HashMap<String, Running>,
    /// Accounts whose balances should be reconciled again.
    dirty: BTreeSet<String>,
    mismatched: BTreeSet<String>,
    live_cursor: Option<i64>,
    rr: usize,
    pairs: Vec<dex::Pair>,
    stream: Option<sse::OperationStream>,
    last_discovery: Option<std::time::Instant>,
    stream_unsupported: bool,
    last_prices: Option<std::time::Instant>,
    /// Last time the watched set was compared with `stellar_account.watched`.
    last_watch_check: Option<std::time::Instant>,
    /// Runtime settings (`sync.batch_size`); without them `page_size` applies.
    runtime: Option<crate::runtime_settings::RuntimeSettings>,
}

#[derive(Debug, Clone)]
struct AccountState {
    cursor: i64,
    caught_up: bool,
    full: bool,
}

/// What one account fetch brought back.
struct Fetched {
    account: String,
    ops: Vec<DecodedOp>,
    caught_up: bool,
    /// Account record, when the account is caught up and the record matches the cursor.
    snapshot: Option<AccountSnapshot>,
    full: bool,
}

fn data(e: impl std::fmt::Display) -> SourceError {
    SourceError::Data(e.to_string())
}

impl StellarSource {
    /// A source for `settings` talking through `client`.
    pub fn new(client: UpstreamClient, settings: StellarSettings) -> Self {
        Self {
            client,
            settings,
            ready: false,
            assets: Vec::new(),
            accounts: BTreeMap::new(),
            running: HashMap::new(),
            dirty: BTreeSet::new(),
            mismatched: BTreeSet::new(),
            live_cursor: None,
            rr: 0,
            pairs: Vec::new(),
            stream: None,
            last_discovery: None,
            stream_unsupported: false,
            last_prices: None,
            last_watch_check: None,
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
            match recs.last().and_then(|r| decode_operation(r).ok()) {
                Some(last) if recs.len() == 200 => cursor = last.id,
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

    /// Discovers holders, stores watched accounts, records the live start cursor.
    async fn discover(&mut self, ctx: &SyncContext) -> Result<Progress, SourceError> {
        self.assets = self.resolve_assets().await?;
        self.pairs = Vec::new();
        for p in &self.settings.dex_pairs {
            let pair = dex::parse_pair(p, &self.assets).ok_or_else(|| {
                SourceError::Config(format!("stellar.dex_pairs: cannot resolve {p:?}"))
            })?;
            self.pairs.push(pair);
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
                horizon::records(&page)
                    .first()
                    .and_then(|r| r.get("paging_token").and_then(Value::as_str))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0)
            }
        };
        let txn = ctx.begin().await?;
        store::ensure_accounts(&txn, &found).await?;
        let progress = Progress {
            cursor: Some(head.to_string()),
            ..Default::default()
        };
        ctx.commit(txn, &progress, vec![]).await?;
        self.live_cursor = Some(head);
        self.load_states(ctx).await?;
        self.ready = true;
        self.last_discovery = Some(std::time::Instant::now());
        tracing::info!(
            accounts = self.accounts.len(),
            live_from = head,
            "stellar: watching"
        );
        Ok(progress)
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

    /// Re-runs discovery: new holders are stored and backfilled from the start; the live
    /// stream applies to them only what comes after their own cursor.
    async fn rediscover(&mut self, ctx: &SyncContext) -> Result<(), SourceError> {
        let mut new: Vec<(String, String)> = self
            .holders()
            .await?
            .into_iter()
            .filter(|(id, _)| !self.accounts.contains_key(id))
            .collect();
        let mut seen = BTreeSet::new();
        new.retain(|(id, _)| seen.insert(id.clone()));
        if new.is_empty() {
            return Ok(());
        }
        store::ensure_accounts(&ctx.db, &new).await?;
        tracing::info!(new = new.len(), "stellar: discovered new holders");
        // Holders an operator unwatched stay unwatched: the database decides.
        self.refresh_watched(ctx).await
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
        self.last_watch_check = Some(std::time::Instant::now());
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
        let new: Vec<String> = watched
            .into_iter()
            .filter(|a| !self.accounts.contains_key(a))
            .collect();
        let mut added = 0usize;
        for chunk in new.chunks(200) {
            let rows = stellar_sync_state::Entity::find()
                .filter(stellar_sync_state::Column::AccountId.is_in(chunk.to_vec()))
                .all(&ctx.db)
                .await?;
            for r in rows {
                added += 1;
                self.accounts.insert(r.account_id.clone(), state_of(&r));
            }
        }
        if !gone.is_empty() || added > 0 {
            tracing::info!(
                added,
                removed = gone.len(),
                "stellar: watched accounts changed"
            );
        }
        Ok(())
    }

    async fn load_states(&mut self, ctx: &SyncContext) -> Result<(), SourceError> {
        self.accounts.clear();
        self.refresh_watched(ctx).await
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

    /// Fetches one page of an account (all pages for a full resync), plus its record when
    /// it is caught up.
    async fn fetch(
        client: &UpstreamClient,
        account: String,
        cursor: i64,
        limit: u32,
        full: bool,
        want_snapshot: bool,
    ) -> Result<Fetched, SourceError> {
        let mut ops = Vec::new();
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
            for r in &recs {
                ops.push(decode_operation(r).map_err(data)?);
            }
            if let Some(last) = ops.last() {
                c = last.id;
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
        Ok(Fetched {
            account,
            ops,
            caught_up,
            snapshot,
            full,
        })
    }

    /// One backfill round over up to `account_concurrency` accounts.
    async fn backfill(
        &mut self,
        ctx: &SyncContext,
        batch: Vec<String>,
    ) -> Result<Progress, SourceError> {
        let limit = self.limit();
        let reconcile = self.settings.reconcile;
        let futs = batch.iter().map(|a| {
            let st = &self.accounts[a];
            Self::fetch(
                &self.client,
                a.clone(),
                st.cursor,
                limit,
                st.full,
                reconcile || st.full,
            )
        });
        let results: Vec<Result<Fetched, SourceError>> = join_all(futs).await;
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
            return Err(first_err.unwrap_or_else(|| SourceError::Data("nothing fetched".into())));
        }
        let progress = self.write(ctx, fetched).await?;
        if let Some(e) = first_err {
            tracing::warn!(error = %e, "stellar: some accounts failed this round");
        }
        Ok(progress)
    }

    /// Writes fetched pages in one transaction with every cursor.
    async fn write(
        &mut self,
        ctx: &SyncContext,
        fetched: Vec<Fetched>,
    ) -> Result<Progress, SourceError> {
        let mut new_running = HashMap::new();
        let mut staged = Vec::new();
        for f in &fetched {
            let cursor = self.accounts.get(&f.account).map_or(0, |s| s.cursor);
            let mut run = if f.full {
                Running::new()
            } else {
                self.running_of(ctx, &f.account).await?
            };
            let ops: Vec<&DecodedOp> = f.ops.iter().filter(|o| f.full || o.id > cursor).collect();
            let changes = store::apply(&f.account, &ops, &mut run);
            staged.push((f, ops, changes));
            new_running.insert(f.account.clone(), run);
        }
        let txn = ctx.begin().await?;
        let mut n_ops = 0u64;
        let mut newest = None;
        let mut events = Vec::new();
        let mut mismatch_updates = Vec::new();
        for (f, ops, changes) in &staged {
            let state = stellar_sync_state::Entity::find_by_id(f.account.clone())
                .one(&txn)
                .await?
                .ok_or_else(|| data(format!("no sync state for {}", f.account)))?;
            let mut state = state;
            if f.full {
                store::delete_account_history(&txn, &f.account).await?;
                state.generation += 1;
                state.mode = "incremental".into();
            }
            store::insert_operations(&txn, ops).await?;
            let last_error = match &f.snapshot {
                Some(snap) => {
                    store::write_snapshot(&txn, snap).await?;
                    let run = &new_running[&f.account];
                    let mm = store::mismatches(run, snap);
                    mismatch_updates.push((f.account.clone(), !mm.is_empty()));
                    for b in &snap.balances {
                        events.push(BusEvent::new(
                            topics::STELLAR_BALANCE_CHANGED,
                            json!({"account_id": f.account, "asset_code": b.asset.code,
                                   "asset_issuer": b.asset.issuer,
                                   "balance": format_stroops(b.balance)}),
                        ));
                    }
                    (!mm.is_empty()).then(|| {
                        format!(
                            "balance mismatch: {}",
                            mm.iter()
                                .map(|(a, r, h)| format!(
                                    "{} replayed {} horizon {}",
                                    a.canonical(),
                                    format_stroops(*r),
                                    format_stroops(*h)
                                ))
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    })
                }
                None => state.last_error.clone(),
            };
            state.last_error = last_error;
            store::write_account_page(&txn, &f.account, ops, changes, state, f.caught_up).await?;
            n_ops += ops.len() as u64;
            if let Some(l) = ops.last() {
                newest = Some(
                    newest.map_or(l.created_at, |n: chrono::DateTime<Utc>| n.max(l.created_at)),
                );
            }
        }
        let progress = Progress {
            indexed_height: None,
            cursor: self.live_cursor.map(|c| c.to_string()),
            items: vec![("operation", n_ops)],
            newest_item_at: newest,
            ..Default::default()
        };
        ctx.commit(txn, &progress, events).await?;
        // Committed: advance the in-memory state.
        for (f, ops, _) in &staged {
            if let Some(st) = self.accounts.get_mut(&f.account) {
                if let Some(l) = ops.last() {
                    st.cursor = st.cursor.max(l.id);
                }
                st.caught_up = f.caught_up;
                st.full = false;
            }
            if f.snapshot.is_some() {
                self.dirty.remove(&f.account);
            }
        }
        self.running.extend(new_running);
        for (a, bad) in mismatch_updates {
            if bad {
                self.mismatched.insert(a);
            } else {
                self.mismatched.remove(&a);
            }
        }
        Metrics::global()
            .reconciliation_mismatches
            .with_label_values(&[SOURCE_ID])
            .set(self.mismatched.len() as i64);
        Ok(progress)
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

    /// One batch of new operations after the live cursor. A failed step drops the stream,
    /// so what it had read is fetched again from the committed cursor (no gap).
    async fn live(&mut self, ctx: &SyncContext) -> Result<Progress, SourceError> {
        let r = self.live_inner(ctx).await;
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    async fn live_inner(&mut self, ctx: &SyncContext) -> Result<Progress, SourceError> {
        let cursor = self.live_cursor.unwrap_or(0);
        let limit = self.limit();
        let (ops, caught_up) = match self.stream_batch(cursor, limit as usize).await? {
            Some(ops) => {
                let n = ops.len();
                (ops, n < limit as usize)
            }
            None => {
                let page: Value = self
                    .client
                    .get_json(&format!(
                        "/operations?cursor={cursor}&limit={limit}&order=asc"
                    ))
                    .await?;
                let recs = horizon::records(&page);
                let mut ops = Vec::with_capacity(recs.len());
                for r in &recs {
                    ops.push(decode_operation(r).map_err(data)?);
                }
                (ops, recs.len() < limit as usize)
            }
        };
        // A stream may replay the cursor's own event: keep only what is after it.
        let ops: Vec<DecodedOp> = ops.into_iter().filter(|o| o.id > cursor).collect();
        let Some(last) = ops.last().map(|o| o.id) else {
            return Ok(Progress {
                caught_up: true,
                ..Default::default()
            });
        };
        // Per watched account: the operations after its cursor.
        let mut per: BTreeMap<String, Vec<&DecodedOp>> = BTreeMap::new();
        for op in &ops {
            for p in &op.participants {
                if let Some(st) = self.accounts.get(p) {
                    if op.id > st.cursor {
                        per.entry(p.clone()).or_default().push(op);
                    }
                }
            }
        }
        let mut staged = Vec::new();
        for (account, list) in &per {
            let mut run = self.running_of(ctx, account).await?;
            let changes = store::apply(account, list, &mut run);
            staged.push((account.clone(), list.clone(), changes, run));
        }
        let all: Vec<&DecodedOp> = {
            let mut ids = BTreeSet::new();
            per.values()
                .flatten()
                .filter(|o| ids.insert(o.id))
                .copied()
                .collect()
        };
        let txn = ctx.begin().await?;
        store::insert_operations(&txn, &all).await?;
        let mut events = Vec::new();
        for (account, list, changes, _) in &staged {
            let state = stellar_sync_state::Entity::find_by_id(account.clone())
                .one(&txn)
                .await?
                .ok_or_else(|| data(format!("no sync state for {account}")))?;
            store::write_account_page(&txn, account, list, changes, state, true).await?;
            for op in list {
                events.push(BusEvent::new(
                    topics::STELLAR_OPERATION_INDEXED,
                    json!({"account_id": account, "operation_id": op.id.to_string()}),
                ));
            }
            for c in changes {
                events.push(BusEvent::new(
                    topics::STELLAR_BALANCE_CHANGED,
                    json!({"account_id": account, "asset_code": c.asset.code,
                           "asset_issuer": c.asset.issuer, "balance": format_stroops(c.balance)}),
                ));
            }
        }
        let progress = Progress {
            head_height: Some(horizon::ledger_of(last)),
            indexed_height: Some(horizon::ledger_of(last)),
            cursor: Some(last.to_string()),
            items: vec![("operation", all.len() as u64)],
            caught_up,
            newest_item_at: ops.last().map(|o| o.created_at),
        };
        ctx.commit(txn, &progress, events).await?;
        self.live_cursor = Some(last);
        for (account, list, _, run) in staged {
            if let Some(st) = self.accounts.get_mut(&account) {
                if let Some(l) = list.last() {
                    st.cursor = st.cursor.max(l.id);
                }
            }
            self.running.insert(account.clone(), run);
            self.dirty.insert(account);
        }
        Ok(progress)
    }

    /// Picks full-resync requests written to the database (`mode = 'full'`,
    /// `status = 'requested'`).
    async fn pick_requests(&mut self, ctx: &SyncContext) -> Result<(), SourceError> {
        let rows = stellar_sync_state::Entity::find()
            .filter(stellar_sync_state::Column::Status.eq(REQUESTED))
            .all(&ctx.db)
            .await?;
        for r in rows {
            // Requests of unwatched accounts wait until the account is watched again.
            let Some(st) = self.accounts.get_mut(&r.account_id) else {
                continue;
            };
            if let Some(ResyncMode::Targeted {
                from_ledger,
                to_ledger,
            }) = ResyncMode::parse(&r.mode)
            {
                let caught_up = st.caught_up;
                self.targeted(ctx, r, from_ledger, to_ledger, caught_up)
                    .await?;
                continue;
            }
            st.caught_up = false;
            st.full = r.mode == "full";
            if !st.full {
                // Anything else requested is an incremental catch-up.
                let mut a = r.into_active_model();
                a.status = Set("syncing".into());
                a.update(&ctx.db).await?;
            }
        }
        Ok(())
    }
}

impl StellarSource {
    /// Re-fetches `row`'s account operations in ledgers `from..=to` and upserts them with
    /// their links, then clears the request, in one transaction (the cursor does not move).
    async fn targeted(
        &mut self,
        ctx: &SyncContext,
        row: stellar_sync_state::Model,
        from: i64,
        to: i64,
        caught_up: bool,
    ) -> Result<(), SourceError> {
        let account = row.account_id.clone();
        let ops = resync::fetch_range(&self.client, &account, from, to, self.limit()).await?;
        let refs: Vec<&DecodedOp> = ops.iter().collect();
        let txn = ctx.begin().await?;
        resync::upsert_range(&txn, &account, &refs).await?;
        let mut a = row.into_active_model();
        a.mode = Set(ResyncMode::Incremental.as_mode());
        a.status = Set(if caught_up { "synced" } else { "syncing" }.into());
        a.last_sync_at = Set(Some(Utc::now()));
        a.updated_at = Set(Utc::now());
        a.update(&txn).await?;
        let progress = Progress {
            items: vec![("operation", refs.len() as u64)],
            ..Default::default()
        };
        ctx.commit(txn, &progress, vec![]).await?;
        tracing::info!(%account, from, to, operations = refs.len(), "stellar: targeted resync done");
        Ok(())
    }
}

/// In-memory state of a sync-state row.
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
    fn descriptor(&self) -> SourceDescriptor {
        descriptor()
    }

    async fn resume(
        &mut self,
        _ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.live_cursor = stored.cursor.as_deref().and_then(|c| c.parse().ok());
        self.ready = false;
        self.running.clear();
        Ok(())
    }

    async fn step(&mut self, ctx: &SyncContext) -> Result<Progress, SourceError> {
        if !self.ready {
            return self.discover(ctx).await;
        }
        let check_due = self
            .last_watch_check
            .is_none_or(|t| t.elapsed() >= self.poll_interval());
        if check_due {
            self.refresh_watched(ctx).await?;
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
        let progress = self.live(ctx).await?;
        if progress.caught_up {
            self.pick_requests(ctx).await?;
            // Reconcile accounts the live stream touched, a few per step.
            if self.settings.reconcile && !self.dirty.is_empty() {
                let batch: Vec<String> = self
                    .dirty
                    .iter()
                    .take(self.settings.account_concurrency.max(1))
                    .cloned()
                    .collect();
                let limit = self.limit();
                let futs = batch.iter().map(|a| {
                    let c = self.accounts.get(a).map_or(0, |s| s.cursor);
                    Self::fetch(&self.client, a.clone(), c, limit, false, true)
                });
                let fetched: Result<Vec<Fetched>, SourceError> =
                    join_all(futs).await.into_iter().collect();
                self.write(ctx, fetched?).await?;
            }
            distributions::reconcile(ctx, &self.client, &self.settings).await?;
            let rediscover = self.settings.discover
                && self.last_discovery.is_some_and(|t| {
                    t.elapsed() >= Duration::from_secs(self.settings.discover_interval_secs)
                });
            if rediscover {
                self.rediscover(ctx).await?;
                self.last_discovery = Some(std::time::Instant::now());
            }
            let due = self.last_prices.is_none_or(|t| {
                t.elapsed() >= Duration::from_secs(self.settings.dex_interval_secs)
            });
            if !self.pairs.is_empty() && due {
                dex::sync_prices(
                    ctx,
                    &self.client,
                    &self.pairs,
                    self.settings.dex_resolution_ms,
                )
                .await?;
                self.last_prices = Some(std::time::Instant::now());
            }
        }
        Ok(progress)
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
