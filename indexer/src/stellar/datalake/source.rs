//! The data-lake ledger source ([`LakeSource`]) and the source that backfills from the data
//! lake up to the Stellar RPC node's oldest ledger, then follows RPC ([`HandoffSource`]).
//!
//! Each fetch takes the next whole ledgers from the [`Pipeline`] (objects read in parallel,
//! handed over in order), derives balances from their SAC token events exactly as the RPC
//! source does (the same event decoding, running balances and writer), and returns one
//! batch; the engine commits it with the cursor `datalake:<last ledger>`. A restart (or
//! `kill -9`) resumes after that ledger. A missing object means the lake has nothing more
//! yet (caught up); a corrupt one fails the step with its key, recorded on the source's
//! status and retried, so the cursor never passes it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orrery_entity::{source, stellar_account, stellar_balance};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::layout::Schema;
use super::object::LedgerEvents;
use super::pipeline::{Pipeline, ReadError};
use super::store::LakeStore;
use crate::stellar::horizon::AssetKey;
use crate::stellar::rpc::batch::{Ledgerbook, RpcBatch};
use crate::stellar::rpc::events::{decode_event, EventError, Movement, TokenEvent};
use crate::stellar::rpc::sac::SacAsset;
use crate::stellar::rpc::source::{source_error, DISCOVERED_VIA};
use crate::stellar::rpc::{RpcClient, RpcSource, RpcWriter};
use crate::stellar::settings::StellarSettings;
use crate::sync::{
    BatchWriter, Fetched, Progress, Source, SourceDescriptor, SourceError, SyncContext,
};

/// Source id: the data lake continues (and hands over to) the RPC token-event stream, so
/// both write one balance history under one cursor.
pub const SOURCE_ID: &str = crate::stellar::rpc::source::SOURCE_ID;

/// Prefix of the cursors this source stores.
pub const CURSOR_PREFIX: &str = "datalake:";

/// Most ledgers one batch commits.
const MAX_LEDGERS_PER_BATCH: usize = 1_000;
/// A batch is closed once it holds this many token events.
const MAX_EVENTS_PER_BATCH: usize = 10_000;

/// Its descriptor.
pub fn descriptor() -> SourceDescriptor {
    SourceDescriptor {
        id: SOURCE_ID.into(),
        kind: "stellar",
        name: "Stellar (data lake, then RPC token events)".into(),
        chain_id: None,
    }
}

/// The cursor stored once `ledger` is committed.
pub fn cursor_of(ledger: u32) -> String {
    format!("{CURSOR_PREFIX}{ledger}")
}

/// The ledger a data-lake cursor names (`None`: not a data-lake cursor).
pub fn parse_cursor(cursor: &str) -> Option<u32> {
    cursor.strip_prefix(CURSOR_PREFIX)?.parse().ok()
}

/// Counters of a run (read by `orrery stellar backfill` for its summary).
#[derive(Debug, Default)]
pub struct LakeStats {
    /// Ledgers derived.
    pub ledgers: AtomicU64,
    /// Transactions in them.
    pub transactions: AtomicU64,
    /// Operations in them.
    pub operations: AtomicU64,
    /// Token events applied.
    pub events: AtomicU64,
    /// Objects read.
    pub objects: AtomicU64,
    /// Compressed bytes read.
    pub bytes: AtomicU64,
}

/// Reads ledgers from a SEP-54 data lake.
pub struct LakeSource {
    store: Arc<LakeStore>,
    settings: StellarSettings,
    concurrency: usize,
    writer: Arc<RpcWriter>,
    schema: Option<Schema>,
    assets: Vec<SacAsset>,
    sep11: Vec<String>,
    by_contract: HashMap<String, usize>,
    /// Next ledger to derive.
    next: u32,
    /// Last ledger to derive (inclusive), when bounded.
    end: Option<u32>,
    /// Last ledger to read (`stellar.datalake_end_ledger`); `end` may stop short of it.
    read_to: Option<u32>,
    /// Upstream head to report (the RPC node's latest during a handoff).
    head: Option<u32>,
    /// Events at or before this id were already applied (after a switch back from RPC).
    after_event: Option<String>,
    pipeline: Option<Pipeline>,
    /// Ledgers read ahead, not derived yet.
    pending: VecDeque<LedgerEvents>,
    book: Ledgerbook,
    start_height: Option<i64>,
    stats: Arc<LakeStats>,
}

impl LakeSource {
    /// A source reading `store`, `concurrency` objects at a time, from
    /// `settings.datalake_start_ledger` (or ledger 2) on the first run.
    pub fn new(store: Arc<LakeStore>, settings: StellarSettings) -> Self {
        let concurrency = settings.datalake_concurrency.max(1);
        Self {
            store,
            concurrency,
            writer: Arc::new(RpcWriter),
            schema: None,
            assets: Vec::new(),
            sep11: Vec::new(),
            by_contract: HashMap::new(),
            next: settings.datalake_start_ledger.unwrap_or(2).max(1),
            end: settings.datalake_end_ledger,
            read_to: settings.datalake_end_ledger,
            head: None,
            after_event: None,
            pipeline: None,
            pending: VecDeque::new(),
            book: Ledgerbook::default(),
            start_height: None,
            stats: Arc::default(),
            settings,
        }
    }

    /// Its run counters.
    pub fn stats(&self) -> Arc<LakeStats> {
        self.stats.clone()
    }

    /// Next ledger it derives.
    pub fn next_ledger(&self) -> u32 {
        self.next
    }

    /// Bounds the ledgers derived (inclusive); reading goes on ahead of it.
    pub fn set_end(&mut self, end: Option<u32>) {
        self.end = end;
    }

    /// Reads the store's config and resolves the assets on its network.
    async fn init(&mut self) -> Result<(), SourceError> {
        if self.settings.assets.is_empty() {
            return Err(SourceError::Config(
                "stellar.assets: name the assets to follow (XLM or CODE:ISSUER)".into(),
            ));
        }
        let schema = self
            .store
            .schema()
            .await
            .map_err(|e| SourceError::Malformed(e.to_string()))?;
        let mut assets: Vec<SacAsset> = Vec::new();
        for a in &self.settings.assets {
            let asset = SacAsset::parse(a, &schema.network_passphrase)
                .map_err(|e| SourceError::Config(format!("stellar.assets: {e}")))?;
            if !assets.iter().any(|x| x.contract_id == asset.contract_id) {
                assets.push(asset);
            }
        }
        self.by_contract = assets
            .iter()
            .enumerate()
            .map(|(i, a)| (a.contract_id.clone(), i))
            .collect();
        self.sep11 = assets.iter().map(SacAsset::sep11).collect();
        self.assets = assets;
        tracing::info!(url = %self.store.url(), network = %schema.network_passphrase,
            ledgers_per_batch = schema.ledgers_per_batch,
            batches_per_partition = schema.batches_per_partition,
            "stellar data lake: reading");
        self.schema = Some(schema);
        Ok(())
    }

    /// Resumes after the stored cursor: a data-lake cursor, or (`rpc_cursor`) the RPC
    /// cursor of a stream the lake takes over again.
    fn position(&mut self, stored: Option<&str>) {
        self.pipeline = None;
        self.pending.clear();
        self.book.clear();
        self.after_event = None;
        match stored {
            Some(c) => match parse_cursor(c) {
                Some(l) => self.next = l.saturating_add(1),
                None => {
                    // `<TOID>-<index>`: the ledger it is in, events up to it done.
                    if let Some(toid) = c.split_once('-').and_then(|(t, _)| t.parse::<i64>().ok()) {
                        self.next = (toid >> 32) as u32;
                        self.after_event = Some(c.to_string());
                    }
                }
            },
            None => {
                self.next = self.settings.datalake_start_ledger.unwrap_or(2).max(1);
                self.start_height = Some(i64::from(self.next));
            }
        }
    }

    /// Loads stored balances of holders not in memory; returns those not yet accounts.
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
            let known: HashSet<String> = known.into_iter().collect();
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

    /// Takes the next ledgers (at least one, waiting for it) from the reader.
    /// `Ok(None)`: nothing to read now (the next object is missing, or the range is done).
    async fn take_ledgers(&mut self) -> Result<Option<Vec<LedgerEvents>>, SourceError> {
        let Some(schema) = self.schema.clone() else {
            return Err(SourceError::Malformed("data lake: not initialised".into()));
        };
        if self.end.is_some_and(|e| self.next > e) {
            return Ok(None);
        }
        if self.pipeline.is_none() {
            self.pending.clear();
            self.pipeline = Some(Pipeline::start(
                self.store.clone(),
                schema,
                self.next,
                self.read_to,
                self.concurrency,
            ));
        }
        let mut out: Vec<LedgerEvents> = Vec::new();
        let mut events = 0usize;
        let mut expect = self.next;
        let some = |out: Vec<LedgerEvents>| if out.is_empty() { None } else { Some(out) };
        loop {
            while let Some(l) = self.pending.pop_front() {
                if l.sequence < expect {
                    continue;
                }
                if self.end.is_some_and(|e| l.sequence > e) {
                    // Read ahead of the range in force: kept for when it grows.
                    self.pending.push_front(l);
                    return Ok(some(out));
                }
                if l.sequence != expect {
                    self.pipeline = None;
                    self.pending.clear();
                    return Err(SourceError::Malformed(format!(
                        "stellar data lake: ledger {} follows {}: ledgers missing",
                        l.sequence,
                        expect - 1
                    )));
                }
                events += l.events.len();
                expect = l.sequence + 1;
                out.push(l);
                if out.len() >= MAX_LEDGERS_PER_BATCH || events >= MAX_EVENTS_PER_BATCH {
                    return Ok(Some(out));
                }
            }
            let Some(p) = self.pipeline.as_mut() else {
                break;
            };
            let next = if out.is_empty() {
                p.next().await
            } else {
                match p.try_next() {
                    Some(r) => Some(r),
                    None => break,
                }
            };
            match next {
                Some(Ok(obj)) => {
                    self.stats.objects.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .bytes
                        .fetch_add(obj.compressed_bytes as u64, Ordering::Relaxed);
                    self.pending.extend(obj.ledgers);
                }
                Some(Err(ReadError::Missing { key, .. })) => {
                    self.pipeline = None;
                    if out.is_empty() {
                        tracing::debug!(key = %key, "stellar data lake: no more objects yet");
                        return Ok(None);
                    }
                    break;
                }
                Some(Err(e)) => {
                    self.pipeline = None;
                    self.pending.clear();
                    if out.is_empty() {
                        return Err(SourceError::Malformed(format!("stellar data lake: {e}")));
                    }
                    // Commit what was read before it; the failure comes back next fetch.
                    break;
                }
                None => {
                    self.pipeline = None;
                    if out.is_empty() {
                        return Ok(None);
                    }
                    break;
                }
            }
        }
        Ok(some(out))
    }

    /// Derives the balances of `ledgers` into a batch.
    async fn derive(
        &mut self,
        ctx: &SyncContext,
        ledgers: &[LedgerEvents],
    ) -> Result<RpcBatch, SourceError> {
        let mut batch = RpcBatch::default();
        let mut decoded: Vec<(TokenEvent, usize, chrono::DateTime<chrono::Utc>)> = Vec::new();
        for l in ledgers {
            for e in &l.events {
                if let Some(after) = &self.after_event {
                    if e.id.len() == after.len() && e.id.as_str() <= after.as_str() {
                        *batch.skipped.entry("duplicate").or_default() += 1;
                        continue;
                    }
                }
                match decode_event(e) {
                    Ok(t) => {
                        if !e.in_successful_contract_call
                            && !matches!(t.movement, Movement::Fee { .. })
                        {
                            *batch.skipped.entry("failed_call").or_default() += 1;
                            continue;
                        }
                        let Some(&i) = self.by_contract.get(&t.contract_id) else {
                            *batch.skipped.entry("other_contract").or_default() += 1;
                            continue;
                        };
                        if t.asset.as_ref().is_some_and(|a| *a != self.sep11[i]) {
                            tracing::warn!(event = %t.id, expected = %self.sep11[i], "stellar data lake: asset topic does not match the SAC; skipped");
                            *batch.skipped.entry("asset_mismatch").or_default() += 1;
                            continue;
                        }
                        decoded.push((t, i, l.closed_at));
                    }
                    Err(err) => {
                        let reason = match &err {
                            EventError::UnknownTopic { .. } => "unknown_topic",
                            EventError::Xdr { .. } => "malformed_xdr",
                            EventError::Shape { .. } => "unknown_shape",
                            EventError::Id(_) => "bad_id",
                        };
                        if !err.is_unknown_topic() {
                            tracing::warn!(error = %err, "stellar data lake: event skipped");
                        }
                        *batch.skipped.entry(reason).or_default() += 1;
                    }
                }
            }
        }
        let holders = self.book.missing(
            decoded
                .iter()
                .flat_map(|(t, _, _)| t.movement.addresses().into_iter()),
        );
        if !holders.is_empty() {
            let new = self.load_holders(ctx, holders).await?;
            batch.accounts = new
                .into_iter()
                .map(|h| (h, DISCOVERED_VIA.to_string()))
                .collect();
        }
        for (t, i, at) in &decoded {
            let key = self.assets[*i].key.clone();
            self.book
                .apply(t, &key, *at, &mut batch)
                .map_err(|e| SourceError::Malformed(format!("event {}: {e}", t.id)))?;
        }
        self.book.finish(&mut batch);
        Ok(batch)
    }

    fn progress(&self, indexed: Option<u32>, caught_up: bool) -> Progress {
        // Taken over from an RPC cursor inside a ledger: nothing to store until it commits.
        let indexed = match (indexed, &self.after_event) {
            (Some(l), _) => Some(l),
            (None, Some(_)) => None,
            (None, None) => self.next.checked_sub(1),
        };
        Progress {
            head_height: self.head.or(self.end).or(indexed).map(i64::from),
            indexed_height: indexed.map(i64::from),
            cursor: indexed.map(cursor_of),
            start_height: self.start_height,
            items: Vec::new(),
            caught_up,
            newest_item_at: None,
            quarantined: Vec::new(),
        }
    }
}

#[async_trait]
impl Source for LakeSource {
    type Batch = RpcBatch;

    fn descriptor(&self) -> SourceDescriptor {
        descriptor()
    }

    async fn resume(
        &mut self,
        _ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.position(stored.cursor.as_deref());
        Ok(())
    }

    async fn fetch(&mut self, ctx: &SyncContext) -> Result<Fetched<RpcBatch>, SourceError> {
        if self.schema.is_none() {
            self.init().await?;
        }
        let Some(ledgers) = self.take_ledgers().await? else {
            return Ok(Fetched::Idle(self.progress(None, true)));
        };
        let batch = self.derive(ctx, &ledgers).await?;
        let last = ledgers.last().map_or(self.next, |l| l.sequence);
        let (mut txs, mut ops) = (0, 0);
        for l in &ledgers {
            txs += l.transactions;
            ops += l.operations;
        }
        self.next = last + 1;
        self.after_event = None;
        let s = &self.stats;
        s.ledgers.fetch_add(ledgers.len() as u64, Ordering::Relaxed);
        s.transactions.fetch_add(txs, Ordering::Relaxed);
        s.operations.fetch_add(ops, Ordering::Relaxed);
        s.events.fetch_add(batch.applied, Ordering::Relaxed);
        let mut progress = self.progress(Some(last), self.end.is_some_and(|e| last >= e));
        progress.newest_item_at = ledgers.last().map(|l| l.closed_at);
        progress.items = vec![("ledger", ledgers.len() as u64), ("operation", ops)];
        Ok(Fetched::Batch { batch, progress })
    }

    fn writer(&self) -> Arc<dyn BatchWriter<RpcBatch>> {
        self.writer.clone()
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms.max(1))
    }
}

/// Which half of the stream a [`HandoffSource`] is in.
enum Phase {
    /// Backfilling from the data lake up to the RPC node's oldest ledger.
    Lake,
    /// Following RPC.
    Rpc(Box<RpcSource>),
}

/// Backfills from the data lake to the RPC node's oldest retained ledger, then follows RPC
/// from the next ledger: one cursor, so no gap and no duplicate. When the node's window
/// moves past the handoff ledger during the switch (the RPC source's first start is refused
/// as outside retention), the lake reads on to the new oldest ledger and switches again.
pub struct HandoffSource {
    lake: LakeSource,
    rpc: RpcClient,
    settings: StellarSettings,
    phase: Phase,
    /// The row last resumed from (the RPC half resumes from it).
    stored: Option<source::Model>,
}

impl HandoffSource {
    /// A source reading `store`, then `rpc`.
    pub fn new(store: Arc<LakeStore>, rpc: RpcClient, settings: StellarSettings) -> Self {
        Self {
            lake: LakeSource::new(store, settings.clone()),
            rpc,
            settings,
            phase: Phase::Lake,
            stored: None,
        }
    }

    /// Its data-lake half's counters.
    pub fn stats(&self) -> Arc<LakeStats> {
        self.lake.stats()
    }

    /// The RPC half, starting at `ledger`.
    fn rpc_from(&self, ledger: u32) -> RpcSource {
        let mut s = self.settings.clone();
        s.rpc_start_ledger = Some(ledger);
        RpcSource::new(self.rpc.clone(), s)
    }
}

#[async_trait]
impl Source for HandoffSource {
    type Batch = RpcBatch;

    fn descriptor(&self) -> SourceDescriptor {
        descriptor()
    }

    async fn resume(
        &mut self,
        ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.stored = Some(stored.clone());
        match stored.cursor.as_deref() {
            Some(c) if parse_cursor(c).is_none() => {
                let mut rpc = self.rpc_from(1);
                rpc.resume(ctx, stored).await?;
                self.phase = Phase::Rpc(Box::new(rpc));
            }
            c => {
                self.lake.position(c);
                self.phase = Phase::Lake;
            }
        }
        Ok(())
    }

    async fn fetch(&mut self, ctx: &SyncContext) -> Result<Fetched<RpcBatch>, SourceError> {
        if let Phase::Rpc(rpc) = &mut self.phase {
            return match rpc.fetch(ctx).await {
                Err(SourceError::Config(msg)) => {
                    // The window may have moved past where RPC starts: back to the lake.
                    let health = self.rpc.get_health().await.map_err(source_error)?;
                    let stored = ctx.last_row().or_else(|| self.stored.clone());
                    let cursor = stored.as_ref().and_then(|r| r.cursor.clone());
                    let resume_at = match cursor.as_deref() {
                        Some(c) => parse_cursor(c).map(|l| l + 1).or_else(|| {
                            c.split_once('-')
                                .and_then(|(t, _)| t.parse::<i64>().ok())
                                .map(|t| (t >> 32) as u32 + 1)
                        }),
                        None => None,
                    };
                    match resume_at {
                        Some(n) if n < health.oldest_ledger => {
                            tracing::warn!(next = n, oldest = health.oldest_ledger, "stellar: the RPC window moved past the handoff ledger; reading on from the data lake");
                            self.lake.position(cursor.as_deref());
                            self.phase = Phase::Lake;
                            Ok(Fetched::Idle(self.lake.progress(None, false)))
                        }
                        _ => Err(SourceError::Config(msg)),
                    }
                }
                r => r,
            };
        }
        let health = self.rpc.get_health().await.map_err(source_error)?;
        let next = self.lake.next_ledger();
        if next >= health.oldest_ledger && next <= health.latest_ledger.saturating_add(1) {
            tracing::info!(
                ledger = next,
                oldest = health.oldest_ledger,
                "stellar: data lake backfill done; following RPC"
            );
            let mut rpc = self.rpc_from(next);
            let mut row = self
                .stored
                .clone()
                .or_else(|| ctx.last_row())
                .ok_or_else(|| {
                    SourceError::Malformed("handoff: no source row to resume RPC from".into())
                })?;
            // Inside a ledger the RPC half had begun: its events up to that cursor are done.
            row.cursor = self.lake.after_event.clone();
            rpc.resume(ctx, &row).await?;
            self.lake.pipeline = None;
            self.phase = Phase::Rpc(Box::new(rpc));
            return Ok(Fetched::Idle(self.lake.progress(None, false)));
        }
        self.lake.head = Some(health.latest_ledger);
        self.lake.set_end(Some(
            health
                .oldest_ledger
                .saturating_sub(1)
                .max(next.saturating_sub(1)),
        ));
        match self.lake.fetch(ctx).await? {
            // The lake is done up to the window: not caught up, switch on the next fetch.
            Fetched::Idle(mut p) => {
                p.caught_up = self.lake.next_ledger() < health.oldest_ledger;
                Ok(Fetched::Idle(p))
            }
            Fetched::Batch {
                batch,
                mut progress,
            } => {
                progress.caught_up = false;
                Ok(Fetched::Batch { batch, progress })
            }
            other => Ok(other),
        }
    }

    fn writer(&self) -> Arc<dyn BatchWriter<RpcBatch>> {
        Arc::new(RpcWriter)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        assert_eq!(parse_cursor(&cursor_of(42)), Some(42));
        assert_eq!(parse_cursor("0000000042949672960-0000000000"), None);
        assert_eq!(parse_cursor("datalake:x"), None);
    }
}
