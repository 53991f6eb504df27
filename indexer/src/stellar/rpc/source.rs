//! The `stellar:rpc` source: balances rebuilt from the SAC token events (CAP-67) of the
//! configured assets, read with `getEvents` from a Stellar RPC node.
//!
//! Each fetch reads one `getEvents` page after the stored cursor (or from the start ledger
//! on the first run), decodes the events, applies them to running balances and returns the
//! rows; the engine commits them together with the page's cursor. Event ids (TOIDs) order
//! the stream: an event at or before the stored cursor is never applied again, so restarts
//! and `kill -9` neither duplicate nor lose anything. An empty page still moves the cursor
//! (the node scans a bounded ledger range per call).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orrery_entity::{source, stellar_account, stellar_balance};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::batch::{Ledgerbook, RpcBatch};
use super::client::{EventFilter, RpcClient, RpcError, Start, MAX_CONTRACT_IDS, MAX_EVENT_FILTERS};
use super::decode::decode_tx;
use super::events::{classify, Verdict};
use super::meta::{tx_changes, tx_toid, BalanceFeed, META_CURSOR};
use super::sac::SacAsset;
use super::types::{EventsPage, RpcEvent};
use super::writer::RpcWriter;
use crate::stellar::horizon::AssetKey;
use crate::stellar::settings::StellarSettings;
use crate::sync::{
    BatchWriter, Fetched, Progress, Quarantined, Source, SourceDescriptor, SourceError, SyncContext,
};

/// Source id in the `source` table.
pub const SOURCE_ID: &str = "stellar:rpc";

/// `discovered_via` of holders found in events.
pub const DISCOVERED_VIA: &str = "rpc:token_event";

/// Its descriptor.
pub fn descriptor() -> SourceDescriptor {
    SourceDescriptor {
        id: SOURCE_ID.into(),
        kind: "stellar",
        name: "Stellar (RPC token events)".into(),
        chain_id: None,
    }
}

/// What the quarantine calls a Stellar RPC token event.
pub const EVENT_KIND: &str = "stellar.rpc.event";

/// A watched SAC's event that cannot be applied, kept as `getEvents` served it.
fn quarantine_event(e: &RpcEvent, why: &impl std::fmt::Display) -> Quarantined {
    let payload = serde_json::to_value(e).unwrap_or(serde_json::Value::Null);
    Quarantined::new(EVENT_KIND, e.id.clone(), &payload, why)
}

/// Maps an RPC failure onto the engine's error kinds.
pub fn source_error(e: RpcError) -> SourceError {
    match e {
        RpcError::Upstream(u) => SourceError::Upstream(u),
        e @ (RpcError::OutsideRetention { .. }
        | RpcError::Limit { .. }
        | RpcError::InvalidParams { .. }
        | RpcError::InvalidRequest { .. }) => SourceError::Config(e.to_string()),
        e => SourceError::Malformed(e.to_string()),
    }
}

/// The RPC token-event source.
pub struct RpcSource {
    rpc: RpcClient,
    settings: StellarSettings,
    writer: Arc<RpcWriter>,
    /// Followed assets, resolved on the first fetch (they need the network passphrase).
    assets: Vec<SacAsset>,
    /// `assets[i].sep11()`, computed once.
    sep11: Vec<String>,
    by_contract: HashMap<String, usize>,
    filters: Vec<EventFilter>,
    /// The stored `getEvents` cursor.
    cursor: Option<String>,
    book: Ledgerbook,
    /// Events skipped since start, by reason (logged).
    skipped_total: u64,
    /// Accounts left to reconcile in this round.
    reconcile_queue: std::collections::VecDeque<String>,
    /// When the last reconciliation round began.
    last_round: Option<std::time::Instant>,
    /// Where balances come from (decided on the first run, kept in the cursor).
    feed: BalanceFeed,
    /// The node's network passphrase (hashes transactions).
    passphrase: String,
    /// The next `getEvents` page, requested while the previous one is being committed.
    prefetch: Option<Prefetch>,
}

/// A `getEvents` page in flight, and the cursor it starts after.
struct Prefetch {
    after: String,
    task: tokio::task::JoinHandle<Result<EventsPage, RpcError>>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `getTransactions` pages sampled to decide whether the node emits classic events.
const DETECT_PAGES: usize = 5;

/// Time between two reconciliation rounds over every `G...` holder.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);

impl RpcSource {
    /// A source for `settings` talking through `rpc`.
    pub fn new(rpc: RpcClient, settings: StellarSettings) -> Self {
        Self {
            rpc,
            settings,
            writer: Arc::new(RpcWriter),
            assets: Vec::new(),
            sep11: Vec::new(),
            by_contract: HashMap::new(),
            filters: Vec::new(),
            cursor: None,
            book: Ledgerbook::default(),
            skipped_total: 0,
            reconcile_queue: Default::default(),
            last_round: None,
            feed: BalanceFeed::Unknown,
            passphrase: String::new(),
            prefetch: None,
        }
    }

    /// The page after `start`: the one prefetched for it, or a fresh request.
    async fn events_page(&mut self, start: &Start, limit: u32) -> Result<EventsPage, RpcError> {
        if let (Some(p), Start::Cursor(c)) = (self.prefetch.take(), start) {
            if p.after == *c {
                let mut p = p;
                match (&mut p.task).await {
                    Ok(r) => return r,
                    // Aborted or panicked: ask again.
                    Err(e) => tracing::debug!(error = %e, "stellar rpc: prefetch lost"),
                }
            }
        }
        self.rpc.get_events(start, &self.filters, limit).await
    }

    /// Requests the page after `cursor` in the background, so it downloads and parses
    /// while the engine commits the current one.
    fn prefetch_after(&mut self, cursor: &str, limit: u32) {
        let (rpc, filters, start) = (
            self.rpc.clone(),
            self.filters.clone(),
            Start::Cursor(cursor.to_string()),
        );
        self.prefetch = Some(Prefetch {
            after: cursor.to_string(),
            task: tokio::spawn(async move { rpc.get_events(&start, &filters, limit).await }),
        });
    }

    /// Resolves the assets' SAC ids on the node's network and builds the filters.
    async fn init(&mut self) -> Result<(), SourceError> {
        if self.settings.assets.is_empty() {
            return Err(SourceError::Config(
                "stellar.assets: name the assets to follow (XLM or CODE:ISSUER)".into(),
            ));
        }
        let network = self.rpc.get_network().await.map_err(source_error)?;
        let mut assets = Vec::new();
        for a in &self.settings.assets {
            let asset = SacAsset::parse(a, &network.passphrase)
                .map_err(|e| SourceError::Config(format!("stellar.assets: {e}")))?;
            if !assets
                .iter()
                .any(|x: &SacAsset| x.contract_id == asset.contract_id)
            {
                assets.push(asset);
            }
        }
        let max = MAX_EVENT_FILTERS * MAX_CONTRACT_IDS;
        if assets.len() > max {
            return Err(SourceError::Config(format!(
                "stellar.assets: {} assets, at most {max} per RPC source (5 filters of 5 contract ids)",
                assets.len()
            )));
        }
        self.filters = assets
            .chunks(MAX_CONTRACT_IDS)
            .map(|c| EventFilter {
                type_: Some("contract".into()),
                contract_ids: c.iter().map(|a| a.contract_id.clone()).collect(),
                topics: Vec::new(),
            })
            .collect();
        self.by_contract = assets
            .iter()
            .enumerate()
            .map(|(i, a)| (a.contract_id.clone(), i))
            .collect();
        tracing::info!(
            network = %network.passphrase,
            protocol = network.protocol_version,
            assets = ?assets.iter().map(|a| (a.sep11(), a.contract_id.clone())).collect::<Vec<_>>(),
            "stellar rpc: following SAC token events"
        );
        self.sep11 = assets.iter().map(SacAsset::sep11).collect();
        self.assets = assets;
        self.passphrase = network.passphrase;
        Ok(())
    }

    /// Where the first page starts: `stellar.rpc_start_ledger`, else the node's oldest
    /// ledger. A start before the node's retention window is refused with the window.
    async fn start_ledger(&self) -> Result<u32, SourceError> {
        let health = self.rpc.get_health().await.map_err(source_error)?;
        let start = self
            .settings
            .rpc_start_ledger
            .unwrap_or(health.oldest_ledger);
        if start < health.oldest_ledger || start > health.latest_ledger.saturating_add(1) {
            return Err(source_error(RpcError::OutsideRetention {
                method: "getEvents",
                start,
                oldest: health.oldest_ledger,
                latest: health.latest_ledger,
            }));
        }
        Ok(start.max(1))
    }

    /// Loads the stored balances of holders not in memory yet; returns those that are not
    /// known accounts (to be stored as holders).
    async fn load_holders(
        &mut self,
        ctx: &SyncContext,
        holders: Vec<String>,
    ) -> Result<Vec<String>, SourceError> {
        let mut new = Vec::new();
        for chunk in holders.chunks(500) {
            let rows = stellar_balance::Entity::find()
                .filter(stellar_balance::Column::AccountId.is_in(chunk.iter().map(String::as_str)))
                .all(&ctx.db)
                .await?;
            let known: Vec<String> = stellar_account::Entity::find()
                .select_only()
                .column(stellar_account::Column::AccountId)
                .filter(stellar_account::Column::AccountId.is_in(chunk.iter().map(String::as_str)))
                .into_tuple()
                .all(&ctx.db)
                .await?;
            let known: std::collections::HashSet<String> = known.into_iter().collect();
            new.extend(chunk.iter().filter(|h| !known.contains(*h)).cloned());
            self.book.load(
                chunk,
                rows.into_iter()
                    .map(|r| {
                        (
                            r.account_id,
                            AssetKey {
                                code: r.asset_code,
                                issuer: r.asset_issuer,
                            },
                            r.balance_stroops,
                        )
                    })
                    .collect(),
            );
        }
        Ok(new)
    }
}

impl RpcSource {
    /// When caught up: compares the next accounts of the round with `getLedgerEntries`
    /// (read through ledger `scanned`), into `batch.reconciled`. A new round starts every
    /// [`RECONCILE_EVERY`]; reading failures leave the round for the next fetch.
    async fn reconcile(
        &mut self,
        ctx: &SyncContext,
        scanned: i64,
        batch: &mut RpcBatch,
    ) -> Result<(), SourceError> {
        if self.reconcile_queue.is_empty() {
            if self
                .last_round
                .is_some_and(|t| t.elapsed() < RECONCILE_EVERY)
            {
                return Ok(());
            }
            self.last_round = Some(std::time::Instant::now());
            let ids: Vec<String> = stellar_account::Entity::find()
                .select_only()
                .column(stellar_account::Column::AccountId)
                .filter(stellar_account::Column::AccountId.starts_with("G"))
                .into_tuple()
                .all(&ctx.db)
                .await?;
            self.reconcile_queue.extend(ids);
        }
        let per = self.assets.len().max(1);
        let take = (super::client::MAX_LEDGER_KEYS / per).max(1);
        let mut accounts = Vec::new();
        let mut keys = Vec::new();
        while accounts.len() < take {
            let Some(a) = self.reconcile_queue.pop_front() else {
                break;
            };
            match super::reconcile::keys_for(&a, &self.assets) {
                Ok(k) if keys.len() + k.len() <= super::client::MAX_LEDGER_KEYS => {
                    keys.extend(k);
                    accounts.push(a);
                }
                Ok(_) => {
                    self.reconcile_queue.push_front(a);
                    break;
                }
                Err(e) => tracing::debug!(account = %a, error = %e, "stellar rpc: not reconciled"),
            }
        }
        if accounts.is_empty() {
            return Ok(());
        }
        let page = match self.rpc.get_ledger_entries(&keys).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "stellar rpc: reconciliation postponed");
                for a in accounts.into_iter().rev() {
                    self.reconcile_queue.push_front(a);
                }
                return Ok(());
            }
        };
        let missing = self.book.missing(accounts.iter().map(String::as_str));
        if !missing.is_empty() {
            self.load_holders(ctx, missing).await?;
        }
        let outcomes =
            super::reconcile::compare(&accounts, &self.assets, &self.book, &page, scanned)
                .map_err(|e| SourceError::Malformed(format!("getLedgerEntries: {e}")))?;
        for (account, outcome) in outcomes {
            match outcome {
                Some(o) => batch.reconciled.push((account, o)),
                // Changed since the events were read: next round.
                None => self.reconcile_queue.push_back(account),
            }
        }
        Ok(())
    }
}

impl RpcSource {
    /// Decides whether the node emits CAP-67 events for classic operations by reading the
    /// first transactions from `start` (at most [`DETECT_PAGES`] pages): a transaction that
    /// moved a followed asset (or paid a fee, with lumens followed) without the matching
    /// token events means it does not (a Core without `EMIT_CLASSIC_EVENTS`, or ledgers
    /// before Protocol 23 without `BACKFILL_STELLAR_ASSET_EVENTS`); balances then come from
    /// the ledger entry changes in transaction meta. With no such transaction in sight,
    /// events are followed.
    async fn detect(&self, start: u32) -> Result<BalanceFeed, SourceError> {
        let mut from = Start::Ledger(start);
        for _ in 0..DETECT_PAGES {
            let page = self
                .rpc
                .get_transactions(&from, super::client::MAX_PAGE_LIMIT)
                .await
                .map_err(source_error)?;
            for t in &page.transactions {
                let Ok(tx) = decode_tx(t, &self.passphrase) else {
                    continue;
                };
                let toid = tx_toid(t.ledger, t.application_order);
                let Ok(place) = t.place() else { continue };
                let Ok(c) = tx_changes(&place, &tx, toid, &self.assets) else {
                    continue;
                };
                if let Some(emitted) = c.classic_signal() {
                    if emitted {
                        tracing::info!(ledger = t.ledger, tx = %tx.hash, "stellar rpc: the node emits classic token events; following getEvents");
                        return Ok(BalanceFeed::Events);
                    }
                    tracing::warn!(ledger = t.ledger, tx = %tx.hash, "stellar rpc: the node emits no classic token events (EMIT_CLASSIC_EVENTS off, or ledgers before Protocol 23 without BACKFILL_STELLAR_ASSET_EVENTS); balances come from the ledger entry changes in transaction meta");
                    return Ok(BalanceFeed::Meta);
                }
            }
            if page.transactions.len() < super::client::MAX_PAGE_LIMIT as usize {
                break;
            }
            from = Start::Cursor(page.cursor);
        }
        tracing::info!(
            "stellar rpc: no classic movement in the first transactions; following getEvents"
        );
        Ok(BalanceFeed::Events)
    }

    /// One `getTransactions` page after the stored `meta:` cursor: balance changes from the
    /// account and trustline entries of each transaction's meta (fees from `feeCharged`),
    /// compared with its token events where it has some.
    async fn fetch_meta(&mut self, ctx: &SyncContext) -> Result<Fetched<RpcBatch>, SourceError> {
        let stored = self
            .cursor
            .as_deref()
            .and_then(|c| c.strip_prefix(META_CURSOR))
            .map(str::to_string);
        let start = match &stored {
            Some(c) => Start::Cursor(c.clone()),
            None => Start::Ledger(self.start_ledger().await?),
        };
        let limit = super::client::MAX_PAGE_LIMIT;
        let page = self
            .rpc
            .get_transactions(&start, limit)
            .await
            .map_err(source_error)?;
        let after = stored.as_deref().and_then(super::meta::cursor_toid);
        let mut batch = RpcBatch::default();
        let mut txs = Vec::with_capacity(page.transactions.len());
        for t in &page.transactions {
            let toid = tx_toid(t.ledger, t.application_order);
            // Dedupe on the TOID: nothing at or before the stored cursor again.
            if after.is_some_and(|a| toid <= a) {
                *batch.skipped.entry("duplicate").or_default() += 1;
                continue;
            }
            let tx = match decode_tx(t, &self.passphrase) {
                Ok(tx) => tx,
                Err(e) => {
                    tracing::warn!(ledger = t.ledger, error = %e, "stellar rpc: transaction skipped");
                    *batch.skipped.entry("malformed_xdr").or_default() += 1;
                    continue;
                }
            };
            let changes = t
                .place()
                .map_err(super::meta::MetaError::Status)
                .and_then(|place| tx_changes(&place, &tx, toid, &self.assets));
            match changes {
                Ok(c) => {
                    if c.bad_events > 0 {
                        *batch.skipped.entry("unknown_shape").or_default() += c.bad_events;
                    }
                    txs.push((t, toid, tx.hash, c));
                }
                Err(e) => {
                    tracing::warn!(tx = %tx.hash, error = %e, "stellar rpc: transaction meta skipped");
                    *batch.skipped.entry("bad_meta").or_default() += 1;
                }
            }
        }
        let applied: Vec<_> = txs.iter().map(|(_, _, _, c)| c.applied()).collect();
        let holders = self.book.missing(
            applied
                .iter()
                .flat_map(|d| d.keys().map(|(h, _)| h.as_str())),
        );
        if !holders.is_empty() {
            let new = self.load_holders(ctx, holders).await?;
            batch.accounts = new
                .into_iter()
                .map(|h| (h, super::meta::DISCOVERED_VIA.to_string()))
                .collect();
        }
        let mut newest_at = None;
        for ((t, toid, hash, c), deltas) in txs.iter().zip(&applied) {
            let at = DateTime::<Utc>::from_timestamp(t.created_at, 0).ok_or_else(|| {
                SourceError::Malformed(format!(
                    "transaction {hash}: createdAt {} out of range",
                    t.created_at
                ))
            })?;
            newest_at = Some(at);
            // Reported, not averaged: the entry changes are applied, and the check stored
            // for the account records both changes until the next reconciliation round.
            let which = format!("transaction {hash} (ledger {})", t.ledger);
            super::meta::report_disagreements(c, &which, "entry changes are", &mut batch);
            for ((holder, asset), delta) in deltas {
                self.book
                    .apply_delta(
                        holder,
                        asset,
                        *toid,
                        i64::from(t.ledger),
                        at,
                        *delta,
                        &mut batch,
                    )
                    .map_err(|e| SourceError::Malformed(format!("transaction {hash}: {e}")))?;
            }
            if !deltas.is_empty() {
                batch.applied += 1;
            }
        }
        self.book.finish(&mut batch);
        let skipped: u64 = batch.skipped.values().sum();
        if skipped > 0 {
            self.skipped_total += skipped;
            tracing::info!(skipped = ?batch.skipped, total = self.skipped_total, "stellar rpc: transactions skipped");
        }
        let latest = i64::from(page.latest_ledger);
        let caught_up = page.transactions.len() < limit as usize;
        let scanned = if caught_up {
            latest
        } else {
            page.transactions
                .last()
                .map_or(latest, |t| i64::from(t.ledger) - 1)
        };
        if caught_up && self.settings.reconcile {
            self.reconcile(ctx, scanned, &mut batch).await?;
        }
        let cursor = format!("{META_CURSOR}{}", page.cursor);
        let moved = self.cursor.as_deref() != Some(cursor.as_str());
        let progress = Progress {
            head_height: Some(latest),
            indexed_height: Some(scanned),
            cursor: Some(cursor.clone()),
            start_height: match start {
                Start::Ledger(l) => Some(i64::from(l)),
                Start::Cursor(_) => None,
            },
            items: Vec::new(),
            caught_up,
            newest_item_at: newest_at,
            quarantined: Vec::new(),
        };
        self.cursor = Some(cursor);
        if !moved
            && batch.history.is_empty()
            && batch.accounts.is_empty()
            && batch.reconciled.is_empty()
        {
            return Ok(Fetched::Idle(progress));
        }
        Ok(Fetched::Batch { batch, progress })
    }
}

/// What the pages of one fetch add up to.
#[derive(Default)]
struct PageAcc {
    batch: RpcBatch,
    quarantined: Vec<Quarantined>,
    newest_at: Option<DateTime<Utc>>,
}

/// Batches fetched (and applied to the running balances) ahead of the writer.
const PREFETCH_BATCHES: usize = 1;

impl RpcSource {
    /// Decodes one `getEvents` page (events at or before `after` are duplicates) and
    /// applies it to the running balances, into `acc`.
    async fn apply_page(
        &mut self,
        ctx: &SyncContext,
        page: &EventsPage,
        after: Option<&str>,
        acc: &mut PageAcc,
    ) -> Result<(), SourceError> {
        let batch = &mut acc.batch;
        let mut decoded = Vec::with_capacity(page.events.len());
        for e in &page.events {
            // Dedupe on the event id: nothing at or before the stored cursor again.
            if let Some(c) = after {
                if comparable(&e.id, c) && e.id.as_str() <= c {
                    *batch.skipped.entry("duplicate").or_default() += 1;
                    continue;
                }
            }
            match classify(e, &self.by_contract, &self.sep11) {
                Verdict::Apply(t, i) => decoded.push((t, i)),
                Verdict::Skip(reason) => *batch.skipped.entry(reason).or_default() += 1,
                Verdict::Fail(err) => {
                    if !err.is_unknown_topic() {
                        // A watched SAC's event that does not decode: a permanent data
                        // error on that record.
                        acc.quarantined.push(quarantine_event(e, &err));
                    }
                    *batch.skipped.entry(err.reason()).or_default() += 1;
                }
            }
        }
        let holders = self.book.missing(
            decoded
                .iter()
                .flat_map(|(t, _)| t.movement.addresses().into_iter()),
        );
        if !holders.is_empty() {
            let new = self.load_holders(ctx, holders).await?;
            batch
                .accounts
                .extend(new.into_iter().map(|h| (h, DISCOVERED_VIA.to_string())));
        }
        for (t, i) in &decoded {
            let raw = || page.events.iter().find(|e| e.id == t.id);
            let Ok(at) = DateTime::parse_from_rfc3339(&t.closed_at).map(|d| d.with_timezone(&Utc))
            else {
                if let Some(e) = raw() {
                    let why = format!("ledgerClosedAt {:?} is not RFC 3339", t.closed_at);
                    acc.quarantined.push(quarantine_event(e, &why));
                }
                continue;
            };
            acc.newest_at = Some(at);
            let key = &self.assets[*i].key;
            if let Err(err) = self.book.apply(t, key, at, batch) {
                if let Some(e) = raw() {
                    acc.quarantined.push(quarantine_event(e, &err));
                }
            }
        }
        Ok(())
    }
}

/// Whether two RPC ids/cursors have the `<19 digits>-<10 digits>` shape, so that string
/// order is event order.
fn comparable(a: &str, b: &str) -> bool {
    let shape = |s: &str| s.len() == 30 && s.as_bytes()[19] == b'-';
    shape(a) && shape(b)
}

/// The ledger a `<TOID>-<index>` cursor has fully scanned.
pub(crate) fn cursor_ledger(cursor: &str) -> Option<i64> {
    let toid: i64 = cursor.split_once('-')?.0.parse().ok()?;
    Some(toid >> 32)
}

#[async_trait]
impl Source for RpcSource {
    type Batch = RpcBatch;

    fn descriptor(&self) -> SourceDescriptor {
        descriptor()
    }

    async fn resume(
        &mut self,
        _ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.cursor = stored.cursor.clone();
        self.feed = BalanceFeed::of_cursor(self.cursor.as_deref());
        self.prefetch = None;
        self.book.clear();
        self.reconcile_queue.clear();
        self.last_round = None;
        Ok(())
    }

    async fn fetch(&mut self, ctx: &SyncContext) -> Result<Fetched<RpcBatch>, SourceError> {
        if self.assets.is_empty() {
            self.init().await?;
        }
        if self.feed == BalanceFeed::Unknown {
            let start = self.start_ledger().await?;
            self.feed = self.detect(start).await?;
        }
        if self.feed == BalanceFeed::Meta {
            return self.fetch_meta(ctx).await;
        }
        let start = match &self.cursor {
            Some(c) => Start::Cursor(c.clone()),
            None => Start::Ledger(self.start_ledger().await?),
        };
        let limit = self
            .settings
            .rpc_events_limit
            .clamp(1, super::client::MAX_EVENTS_LIMIT);
        // Pages are read until the batch holds `rpc_batch_events` events or the node has
        // nothing more: one transaction per batch, so a backfill commits (and rewrites the
        // index pages it touches) a few times per 100,000 events instead of per page.
        let target = self.settings.rpc_batch_events.max(1);
        let mut page_start = start.clone();
        let mut acc = PageAcc::default();
        let mut read = 0usize;
        // The last page applied: where the batch ends if a later page fails.
        let mut last: Option<(String, i64, i64)> = None;
        // Time waiting for pages (request, download, JSON) and applying them (XDR, balances).
        let (mut waited, mut applied, mut pages) = (Duration::ZERO, Duration::ZERO, 0u32);
        let (page_cursor, latest, scanned, caught_up) = loop {
            let asked = std::time::Instant::now();
            let page = self.events_page(&page_start, limit).await;
            waited += asked.elapsed();
            let page = match page {
                Ok(p) => p,
                Err(e) => match last.take() {
                    // What was read commits; the failing page is asked for again by the
                    // next fetch (from this batch's cursor).
                    Some((cursor, latest, scanned)) => {
                        tracing::debug!(error = %e, "stellar rpc: batch ends before a failed page");
                        self.prefetch = None;
                        break (cursor, latest, scanned, false);
                    }
                    None => return Err(source_error(e)),
                },
            };
            read += page.events.len();
            let after = match &page_start {
                Start::Cursor(c) => Some(c.as_str()),
                Start::Ledger(_) => None,
            };
            let latest = i64::from(page.latest_ledger);
            let full = page.events.len() >= limit as usize;
            // Backfilling: the next page is needed at once. When the cursor says so, it is
            // requested before this page is applied, so that it downloads meanwhile.
            let ahead = full || cursor_ledger(&page.cursor).is_some_and(|l| l < latest);
            if ahead {
                self.prefetch_after(&page.cursor, limit);
            }
            let started = std::time::Instant::now();
            self.apply_page(ctx, &page, after, &mut acc).await?;
            applied += started.elapsed();
            pages += 1;
            let scanned = cursor_ledger(&page.cursor)
                .or(acc.batch.ledger)
                .unwrap_or(latest);
            let caught_up = scanned >= latest && !full;
            if !caught_up && !ahead {
                self.prefetch_after(&page.cursor, limit);
            }
            if caught_up || read >= target {
                break (page.cursor, latest, scanned, caught_up);
            }
            last = Some((page.cursor.clone(), latest, scanned));
            page_start = Start::Cursor(page.cursor);
        };
        let PageAcc {
            mut batch,
            quarantined,
            newest_at,
        } = acc;
        self.book.finish(&mut batch);
        tracing::debug!(
            pages,
            events = read,
            wait_ms = waited.as_millis() as u64,
            apply_ms = applied.as_millis() as u64,
            "stellar rpc: batch fetched"
        );
        let skipped: u64 = batch.skipped.values().sum();
        if skipped > 0 {
            self.skipped_total += skipped;
            tracing::info!(skipped = ?batch.skipped, total = self.skipped_total, "stellar rpc: events skipped");
        }
        if caught_up && self.settings.reconcile {
            self.reconcile(ctx, scanned.min(latest), &mut batch).await?;
        }
        let moved = self.cursor.as_deref() != Some(page_cursor.as_str());
        let progress = Progress {
            head_height: Some(latest),
            indexed_height: Some(scanned.min(latest)),
            cursor: Some(page_cursor.clone()),
            start_height: match start {
                Start::Ledger(l) => Some(i64::from(l)),
                Start::Cursor(_) => None,
            },
            items: Vec::new(),
            caught_up,
            newest_item_at: newest_at,
            quarantined,
        };
        self.cursor = Some(page_cursor);
        if !moved
            && batch.history.is_empty()
            && batch.accounts.is_empty()
            && batch.reconciled.is_empty()
        {
            return Ok(Fetched::Idle(progress));
        }
        Ok(Fetched::Batch { batch, progress })
    }

    /// Batches are applied to the running balances as they are fetched, so fetching runs
    /// ahead of the writer: a failed write resumes the source, which forgets the balances
    /// and reloads them from what was committed.
    fn prefetch(&self) -> usize {
        PREFETCH_BATCHES
    }

    fn writer(&self) -> Arc<dyn BatchWriter<RpcBatch>> {
        self.writer.clone()
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_order_and_name_ledgers() {
        let a = "0016010972359577600-0000000001";
        let b = "0016010972359577600-0000000008";
        assert!(comparable(a, b) && a < b);
        assert!(!comparable(a, "123"));
        assert_eq!(cursor_ledger("0000008985071583231-4294967295"), Some(2091));
        assert_eq!(cursor_ledger(a), Some(3_727_845));
        assert_eq!(cursor_ledger("x"), None);
    }
}
