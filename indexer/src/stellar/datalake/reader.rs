//! Whole ledgers, strictly in order, for one data-lake source: the position (next ledger,
//! the end of the range in force), the [`Pipeline`] reading ahead, and the ledgers of an
//! object read but not yet taken. Both data-lake sources (token-event balances and
//! transactions) read through one of these.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::layout::Schema;
use super::object::LedgerEvents;
use super::pipeline::{Pipeline, ReadError};
use super::source::{cursor_of, LakeStats};
use super::store::LakeStore;
use crate::stellar::rpc::sac::network_id;
use crate::sync::{Progress, SourceError};

/// Ledgers per batch at most.
const MAX_LEDGERS_PER_BATCH: usize = 1_000;

/// Events plus transactions per batch at most (a batch is whole ledgers, so it may pass
/// this by one ledger's worth).
const MAX_ITEMS_PER_BATCH: usize = 10_000;

/// The ordered ledger reader of one source.
pub struct LedgerReader {
    store: Arc<LakeStore>,
    concurrency: usize,
    /// Whether the transactions of each ledger are wanted too.
    with_txs: bool,
    schema: Option<Schema>,
    /// Next ledger to hand over.
    next: u32,
    /// Last ledger of the range in force (`None`: until the lake ends).
    end: Option<u32>,
    /// Last ledger the pipeline reads (`None`: until an object is missing).
    read_to: Option<u32>,
    pipeline: Option<Pipeline>,
    /// Ledgers read ahead, in order.
    pending: VecDeque<LedgerEvents>,
    stats: Arc<LakeStats>,
}

impl LedgerReader {
    /// A reader of `store` from `next` through `end`.
    pub fn new(
        store: Arc<LakeStore>,
        concurrency: usize,
        next: u32,
        end: Option<u32>,
        with_txs: bool,
        stats: Arc<LakeStats>,
    ) -> Self {
        Self {
            store,
            concurrency: concurrency.max(1),
            with_txs,
            schema: None,
            next,
            end,
            read_to: end,
            pipeline: None,
            pending: VecDeque::new(),
            stats,
        }
    }

    /// The store read.
    pub fn store(&self) -> &LakeStore {
        &self.store
    }

    /// The store's schema, read from its config on first use.
    pub async fn schema(&mut self) -> Result<&Schema, SourceError> {
        if self.schema.is_none() {
            let schema = self
                .store
                .schema()
                .await
                .map_err(|e| SourceError::Malformed(e.to_string()))?;
            self.schema = Some(schema);
        }
        self.schema
            .as_ref()
            .ok_or_else(|| SourceError::Malformed("data lake: no schema".into()))
    }

    /// Whether the schema has been read.
    pub fn ready(&self) -> bool {
        self.schema.is_some()
    }

    /// The next ledger to hand over.
    pub fn next_ledger(&self) -> u32 {
        self.next
    }

    /// The end of the range in force.
    pub fn end(&self) -> Option<u32> {
        self.end
    }

    /// Sets the end of the range (ledgers read ahead past it are kept for when it grows).
    pub fn set_end(&mut self, end: Option<u32>) {
        self.end = end;
    }

    /// Moves to `next`, dropping everything read ahead.
    pub fn seek(&mut self, next: u32) {
        self.stop();
        self.next = next;
    }

    /// Stops reading ahead (and forgets what was read ahead).
    pub fn stop(&mut self) {
        self.pipeline = None;
        self.pending.clear();
    }

    /// A step's progress: through `indexed` (`None`: nothing new this step, so the ledger
    /// before the next, unless `inside` a ledger another source had begun, which is not
    /// done until it commits), `head` reported when known.
    pub fn progress(
        &self,
        indexed: Option<u32>,
        inside: bool,
        head: Option<u32>,
        start_height: Option<i64>,
        caught_up: bool,
    ) -> Progress {
        let indexed = match (indexed, inside) {
            (Some(l), _) => Some(l),
            (None, true) => None,
            (None, false) => self.next.checked_sub(1),
        };
        Progress {
            head_height: head.or(self.end).or(indexed).map(i64::from),
            indexed_height: indexed.map(i64::from),
            cursor: indexed.map(cursor_of),
            start_height,
            items: Vec::new(),
            caught_up,
            newest_item_at: None,
            quarantined: Vec::new(),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<LakeStats> {
        self.stats.clone()
    }

    /// Marks everything through `last` handed over.
    pub fn passed(&mut self, last: u32) {
        self.next = last.saturating_add(1);
    }

    /// Takes the next ledgers (at least one, waiting for it) from the pipeline.
    /// `Ok(None)`: nothing to read now (the next object is missing, or the range is done).
    /// A corrupt object fails with its key; what was read before it is handed over first.
    pub async fn take(&mut self) -> Result<Option<Vec<LedgerEvents>>, SourceError> {
        let Some(schema) = self.schema.clone() else {
            return Err(SourceError::Malformed("data lake: not initialised".into()));
        };
        if self.end.is_some_and(|e| self.next > e) {
            return Ok(None);
        }
        if self.pipeline.is_none() {
            self.pending.clear();
            let network = self
                .with_txs
                .then(|| network_id(&schema.network_passphrase));
            self.pipeline = Some(Pipeline::start(
                self.store.clone(),
                schema,
                self.next,
                self.read_to,
                self.concurrency,
                network,
            ));
        }
        let mut out: Vec<LedgerEvents> = Vec::new();
        let mut items = 0usize;
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
                    self.stop();
                    return Err(SourceError::Malformed(format!(
                        "stellar data lake: ledger {} follows {}: ledgers missing",
                        l.sequence,
                        expect - 1
                    )));
                }
                items += l.events.len() + l.txs.len();
                expect = l.sequence + 1;
                out.push(l);
                if out.len() >= MAX_LEDGERS_PER_BATCH || items >= MAX_ITEMS_PER_BATCH {
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
                    self.stop();
                    if out.is_empty() {
                        return Err(SourceError::Malformed(format!("stellar data lake: {e}")));
                    }
                    // Hand over what was read before it; the failure comes back next time.
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
}
