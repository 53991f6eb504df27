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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orrery_entity::{source, stellar_account, stellar_balance};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::handoff::LakeHalf;
use super::object::LedgerEvents;
use super::reader::LedgerReader;
use super::store::LakeStore;
use crate::stellar::horizon::AssetKey;
use crate::stellar::rpc::batch::{Ledgerbook, RpcBatch};
use crate::stellar::rpc::events::{classify, TokenEvent, Verdict};
use crate::stellar::rpc::meta::{report_disagreements, tx_changes, tx_toid, TxChanges};
use crate::stellar::rpc::operations::TxPlace;
use crate::stellar::rpc::sac::SacAsset;
use crate::stellar::rpc::source::DISCOVERED_VIA;
use crate::stellar::rpc::RpcWriter;
use crate::stellar::settings::StellarSettings;
use crate::sync::{
    BatchWriter, Fetched, Progress, Source, SourceDescriptor, SourceError, SyncContext,
};

/// Source id: the data lake continues (and hands over to) the RPC token-event stream, so
/// both write one balance history under one cursor.
pub const SOURCE_ID: &str = crate::stellar::rpc::source::SOURCE_ID;

/// Prefix of the cursors this source stores.
pub const CURSOR_PREFIX: &str = "datalake:";

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
    /// Ledgers whose balances came from entry changes (no CAP-67 events for the followed
    /// assets in them).
    pub entry_ledgers: AtomicU64,
}

/// Reads ledgers from a SEP-54 data lake.
pub struct LakeSource {
    settings: StellarSettings,
    writer: Arc<RpcWriter>,
    /// Ledgers in order (next to derive, end of the range in force).
    reader: LedgerReader,
    assets: Vec<SacAsset>,
    sep11: Vec<String>,
    by_contract: HashMap<String, usize>,
    /// Upstream head to report (the RPC node's latest during a handoff).
    head: Option<u32>,
    /// Events at or before this id were already applied (after a switch back from RPC).
    after_event: Option<String>,
    book: Ledgerbook,
    start_height: Option<i64>,
    stats: Arc<LakeStats>,
}

impl LakeSource {
    /// A source reading `store`, `concurrency` objects at a time, from
    /// `settings.datalake_start_ledger` (or ledger 2) on the first run.
    pub fn new(store: Arc<LakeStore>, settings: StellarSettings) -> Self {
        let stats: Arc<LakeStats> = Arc::default();
        let reader = LedgerReader::new(
            store,
            settings.datalake_concurrency,
            settings.datalake_start_ledger.unwrap_or(2).max(1),
            settings.datalake_end_ledger,
            true,
            stats.clone(),
        );
        Self {
            writer: Arc::new(RpcWriter),
            reader,
            assets: Vec::new(),
            sep11: Vec::new(),
            by_contract: HashMap::new(),
            head: None,
            after_event: None,
            book: Ledgerbook::default(),
            start_height: None,
            stats,
            settings,
        }
    }

    /// Its run counters.
    pub fn stats(&self) -> Arc<LakeStats> {
        self.stats.clone()
    }

    /// Next ledger it derives.
    pub fn next_ledger(&self) -> u32 {
        self.reader.next_ledger()
    }

    /// Bounds the ledgers derived (inclusive); reading goes on ahead of it.
    pub fn set_end(&mut self, end: Option<u32>) {
        self.reader.set_end(end);
    }

    /// Reads the store's config and resolves the assets on its network.
    async fn init(&mut self) -> Result<(), SourceError> {
        if self.settings.assets.is_empty() {
            return Err(SourceError::Config(
                "stellar.assets: name the assets to follow (XLM or CODE:ISSUER)".into(),
            ));
        }
        let url = self.reader.store().url().to_string();
        let schema = self.reader.schema().await?.clone();
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
        tracing::info!(url = %url, network = %schema.network_passphrase,
            ledgers_per_batch = schema.ledgers_per_batch,
            batches_per_partition = schema.batches_per_partition,
            "stellar data lake: reading");
        Ok(())
    }

    /// Resumes after the stored cursor: a data-lake cursor, or (`rpc_cursor`) the RPC
    /// cursor of a stream the lake takes over again.
    fn position(&mut self, stored: Option<&str>) {
        self.reader.stop();
        self.book.clear();
        self.after_event = None;
        match stored {
            Some(c) => match parse_cursor(c) {
                Some(l) => self.reader.seek(l.saturating_add(1)),
                None => {
                    // `<TOID>-<index>`: the ledger it is in, events up to it done.
                    if let Some(toid) = c.split_once('-').and_then(|(t, _)| t.parse::<i64>().ok()) {
                        self.reader.seek((toid >> 32) as u32);
                        self.after_event = Some(c.to_string());
                    }
                }
            },
            None => {
                let first = self.settings.datalake_start_ledger.unwrap_or(2).max(1);
                self.reader.seek(first);
                self.start_height = Some(i64::from(first));
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

    /// Derives the balances of `ledgers` into a batch. A ledger whose transactions carry
    /// CAP-67 events for the followed assets is derived from those events (as the RPC
    /// source does), each transaction's account and trustline entry changes checked
    /// against them (a disagreement is stored as a balance check and logged, never
    /// averaged); a ledger without them (before Protocol 23, or written by a Core without
    /// `EMIT_CLASSIC_EVENTS`) is derived from the entry changes, which every protocol has.
    async fn derive(
        &mut self,
        ctx: &SyncContext,
        ledgers: &[LedgerEvents],
    ) -> Result<RpcBatch, SourceError> {
        let mut batch = RpcBatch::default();
        let mut steps: Vec<Step> = Vec::new();
        for l in ledgers {
            let changes = self.entry_changes(l, &mut batch);
            let from_entries = !changes.is_empty()
                && changes.iter().any(|c| c.1.classic_signal() == Some(false))
                && !changes.iter().any(|c| c.1.classic_signal() == Some(true));
            if from_entries {
                self.stats.entry_ledgers.fetch_add(1, Ordering::Relaxed);
                for (toid, c) in &changes {
                    let deltas = c.applied();
                    if !deltas.is_empty() {
                        batch.applied += 1;
                    }
                    steps.extend(
                        deltas
                            .into_iter()
                            .map(|((holder, asset), delta)| Step::Delta {
                                holder,
                                asset,
                                toid: *toid,
                                ledger: l.sequence,
                                at: l.closed_at,
                                delta,
                            }),
                    );
                }
                continue;
            }
            for (toid, c) in &changes {
                let at = format!("data lake ledger {} transaction {toid}", l.sequence);
                report_disagreements(c, &at, "events are", &mut batch);
            }
            self.decode_events(l, &mut steps, &mut batch);
        }
        let holders = self.book.missing(steps.iter().flat_map(Step::holders));
        if !holders.is_empty() {
            let new = self.load_holders(ctx, holders).await?;
            batch.accounts = new
                .into_iter()
                .map(|h| (h, DISCOVERED_VIA.to_string()))
                .collect();
        }
        for step in &steps {
            match step {
                Step::Event(t, i, at) => {
                    let key = self.assets[*i].key.clone();
                    self.book
                        .apply(t, &key, *at, &mut batch)
                        .map_err(|e| SourceError::Malformed(format!("event {}: {e}", t.id)))?;
                }
                Step::Delta {
                    holder,
                    asset,
                    toid,
                    ledger,
                    at,
                    delta,
                } => self
                    .book
                    .apply_delta(
                        holder,
                        asset,
                        *toid,
                        i64::from(*ledger),
                        *at,
                        *delta,
                        &mut batch,
                    )
                    .map_err(|e| {
                        SourceError::Malformed(format!("ledger {ledger} transaction {toid}: {e}"))
                    })?,
            }
        }
        self.book.finish(&mut batch);
        Ok(batch)
    }

    /// The entry changes (and token events) of each transaction of `l` in the followed
    /// assets, by TOID; a transaction whose meta cannot be read is counted and skipped.
    fn entry_changes(&self, l: &LedgerEvents, batch: &mut RpcBatch) -> Vec<(i64, TxChanges)> {
        // After a switch back from RPC inside a ledger: the transactions before the one
        // its cursor is in are done (that one's events are deduplicated by id).
        let after_tx = self
            .after_event
            .as_deref()
            .and_then(|c| c.split_once('-'))
            .and_then(|(t, _)| t.parse::<i64>().ok())
            .map(|t| t & !0xfff);
        let mut out = Vec::with_capacity(l.txs.len());
        for t in &l.txs {
            let toid = tx_toid(l.sequence, t.application_order);
            if after_tx.is_some_and(|after| toid < after) {
                continue;
            }
            let place = TxPlace {
                ledger: l.sequence,
                application_order: t.application_order,
                created_at: l.closed_at.timestamp(),
                successful: t.successful,
                events: None,
            };
            match tx_changes(&place, &t.tx, toid, &self.assets) {
                Ok(c) => out.push((toid, c)),
                Err(e) => {
                    tracing::warn!(tx = %t.tx.hash, error = %e, "stellar data lake: transaction meta skipped");
                    *batch.skipped.entry("bad_meta").or_default() += 1;
                }
            }
        }
        out
    }

    /// The followed token events of `l`, in id order, as steps.
    fn decode_events(&self, l: &LedgerEvents, steps: &mut Vec<Step>, batch: &mut RpcBatch) {
        for e in &l.events {
            if let Some(after) = &self.after_event {
                if e.id.len() == after.len() && e.id.as_str() <= after.as_str() {
                    *batch.skipped.entry("duplicate").or_default() += 1;
                    continue;
                }
            }
            match classify(e, &self.by_contract, &self.sep11) {
                Verdict::Apply(t, i) => steps.push(Step::Event(t, i, l.closed_at)),
                Verdict::Skip(reason) => *batch.skipped.entry(reason).or_default() += 1,
                Verdict::Fail(err) => {
                    if !err.is_unknown_topic() {
                        tracing::warn!(error = %err, "stellar data lake: event skipped");
                    }
                    *batch.skipped.entry(err.reason()).or_default() += 1;
                }
            }
        }
    }

    fn progress(&self, indexed: Option<u32>, caught_up: bool) -> Progress {
        // Taken over from an RPC cursor inside a ledger: nothing to store until it commits.
        let inside = self.after_event.is_some();
        self.reader
            .progress(indexed, inside, self.head, self.start_height, caught_up)
    }
}

/// One balance movement to apply, in ledger order.
enum Step {
    /// A followed token event (asset index), at the ledger's close.
    Event(TokenEvent, usize, DateTime<Utc>),
    /// An entry change of one transaction.
    Delta {
        holder: String,
        asset: AssetKey,
        toid: i64,
        ledger: u32,
        at: DateTime<Utc>,
        delta: i64,
    },
}

impl Step {
    fn holders(&self) -> Vec<&str> {
        match self {
            Step::Event(t, _, _) => t.movement.addresses(),
            Step::Delta { holder, .. } => vec![holder.as_str()],
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
        if self.assets.is_empty() {
            self.init().await?;
        }
        let Some(ledgers) = self.reader.take().await? else {
            return Ok(Fetched::Idle(self.progress(None, true)));
        };
        let batch = self.derive(ctx, &ledgers).await?;
        let last = ledgers
            .last()
            .map_or(self.reader.next_ledger(), |l| l.sequence);
        let (mut txs, mut ops) = (0, 0);
        for l in &ledgers {
            txs += l.transactions;
            ops += l.operations;
        }
        self.reader.passed(last);
        self.after_event = None;
        let s = &self.stats;
        s.ledgers.fetch_add(ledgers.len() as u64, Ordering::Relaxed);
        s.transactions.fetch_add(txs, Ordering::Relaxed);
        s.operations.fetch_add(ops, Ordering::Relaxed);
        s.events.fetch_add(batch.applied, Ordering::Relaxed);
        let done = self.reader.end().is_some_and(|e| last >= e);
        let mut progress = self.progress(Some(last), done);
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

impl LakeHalf for LakeSource {
    fn reader(&self) -> &LedgerReader {
        &self.reader
    }

    fn reader_mut(&mut self) -> &mut LedgerReader {
        &mut self.reader
    }

    fn set_head(&mut self, head: u32) {
        self.head = Some(head);
    }

    fn position(&mut self, cursor: Option<&str>) {
        LakeSource::position(self, cursor);
    }

    fn rpc_cursor(&self) -> Option<String> {
        self.after_event.clone()
    }

    fn idle(&self, caught_up: bool) -> Progress {
        self.progress(None, caught_up)
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
