//! One EVM chain as a [`Source`]: adaptive `eth_getLogs` backfill with ranges in flight,
//! head following `confirmations` behind, reorg detection by block hash and rollback.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use orrery_entity::{evm_block, source};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::decode::{decode_log, Registry};
use super::rpc::{Header, Log, RpcClient, RpcError};
use super::store::{self, EventRow};
use crate::bus::{payload, BusEvent};
use crate::sync::reorg_window::{Ancestor, HashWindow};
use crate::sync::{
    BatchWriter, Fetched as Step, Progress, Quarantined, Reverted, Source, SourceDescriptor,
    SourceError, SyncContext, Written,
};

/// Gaps up to this many blocks are indexed with every header checked (head following).
const FOLLOW_WINDOW: u64 = 64;
/// A range whose answer has fewer logs than this may grow.
const SMALL_ANSWER: usize = 2_000;
/// At most this many events of one step are published one by one on the bus.
const MAX_EVENT_NOTIFICATIONS: usize = 1_000;
/// First `eth_getLogs` range (grows while answers are small).
const INITIAL_RANGE: u64 = 1_000;
/// Logs one range may hold before it stops early (memory bound: this times concurrency).
const RANGE_LOG_CAP: usize = 2_500;
/// Stored headers compared per round while looking for the common ancestor.
const ANCESTOR_PAGE: usize = 128;
/// Stored headers kept in memory for reorg detection (heights are sparse during backfill).
const WINDOW: usize = 1_024;
/// Batches fetched ahead while the writer commits.
const PREFETCH: usize = 1;

/// Tuning shared by every chain.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Largest `eth_getLogs` range.
    pub max_range: u64,
    /// Ranges in flight.
    pub concurrency: usize,
    /// Wait after a caught-up step.
    pub poll_interval: Duration,
}

/// The static description of one chain.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    /// Chain name.
    pub name: String,
    /// Expected `eth_chainId`.
    pub chain_id: u64,
    /// First block to index.
    pub start_block: u64,
    /// Blocks behind the head that are indexed only once final.
    pub confirmations: u64,
    /// Registry contracts.
    pub contracts: HashMap<Address, Registry>,
}

/// The EVM source of one chain.
pub struct EvmSource {
    spec: Arc<ChainSpec>,
    rpc: Arc<RpcClient>,
    tuning: Tuning,
    addresses: Vec<Address>,
    /// Last block fetched (and committed once the queued batches are written).
    cursor: Option<u64>,
    /// Hashes of the stored headers (and of those queued to be stored).
    window: HashWindow,
    /// Current adaptive `eth_getLogs` range.
    range: u64,
    chain_checked: bool,
    /// The previous fetch saw headers that did not link: check the tip before going on.
    suspect_tip: bool,
    /// Batches cut from one large fetch, waiting to be handed to the engine.
    queued: VecDeque<(EvmBatch, Progress)>,
}

/// One batch of a chain: decoded events and the headers that anchor them.
#[derive(Debug)]
pub struct EvmBatch {
    /// Decoded events in block and log-index order.
    pub rows: Vec<EventRow>,
    /// Headers stored with the batch (every block when following; range ends in backfill).
    pub headers: Vec<Header>,
    /// Logs that could not be decoded.
    pub skipped: u64,
    /// First block the batch covers.
    pub from_block: u64,
}

/// Writes EVM batches and reverts of one chain.
pub struct EvmWriter {
    chain: String,
}

/// What the quarantine calls an EVM log.
pub const LOG_KIND: &str = "evm.log";

/// The quarantine position of a log: `block:logIndex`.
pub fn log_position(block: u64, log_index: u64) -> String {
    format!("{block}:{log_index}")
}

/// A log that does not decode, kept in the `eth_getLogs` wire shape (plus the registry it
/// was decoded as) so a replay can decode it again.
fn quarantine_log(log: &Log, registry: Registry, e: &impl std::fmt::Display) -> Quarantined {
    let payload = serde_json::json!({
        "address": format!("{:#x}", log.address),
        "topics": log.topics.iter().map(hex).collect::<Vec<_>>(),
        "data": format!("0x{}", ::hex::encode(&log.data)),
        "blockNumber": format!("0x{:x}", log.block_number),
        "blockHash": hex(&log.block_hash),
        "transactionHash": hex(&log.tx_hash),
        "logIndex": format!("0x{:x}", log.log_index),
        "registry": registry.as_str(),
    });
    Quarantined::new(
        LOG_KIND,
        log_position(log.block_number, log.log_index),
        &payload,
        e,
    )
}

/// Source id of a chain.
pub fn source_id(chain: &str) -> String {
    format!("evm:{chain}")
}

fn hex(b: &B256) -> String {
    format!("{b:#x}")
}

fn data_err(e: RpcError) -> SourceError {
    match e {
        RpcError::Upstream(u) => SourceError::Upstream(u),
        other => SourceError::Malformed(other.to_string()),
    }
}

/// What [`fetch_range`] got.
#[derive(Debug)]
pub struct Fetched {
    /// Logs in block and log-index order.
    pub logs: Vec<Log>,
    /// Last block covered (below the asked end when the log cap stopped it early).
    pub covered: u64,
    /// Smallest sub-range size the node accepted after refusing a larger one.
    pub shrunk: Option<u64>,
}

/// Fetches the logs of `[from, to]`, halving sub-ranges the node refuses ("too many
/// results", "exceed maximum block range"). Stops early once `cap` logs are held, so memory
/// stays bounded whatever the range; `covered` says how far it got.
pub async fn fetch_range(
    rpc: &RpcClient,
    addresses: &[Address],
    from: u64,
    to: u64,
    cap: usize,
) -> Result<Fetched, RpcError> {
    let mut out = Vec::new();
    let mut shrunk: Option<u64> = None;
    let mut covered = from.saturating_sub(1);
    let mut pending = std::collections::VecDeque::from([(from, to)]);
    while let Some((a, b)) = pending.pop_front() {
        if out.len() >= cap && a > from {
            break;
        }
        match rpc.get_logs(addresses, a, b).await {
            Ok(logs) => {
                out.extend(logs);
                covered = b;
            }
            Err(e) if e.is_range_error() && b > a => {
                let mut size = (b - a).div_ceil(2);
                if let Some(max) = e.announced_max_range() {
                    size = size.min(max.max(1));
                }
                let size = size.max(1);
                shrunk = Some(shrunk.map_or(size, |s: u64| s.min(size)));
                tracing::debug!(from = a, to = b, size, error = %e, "eth_getLogs range refused; splitting");
                let mut parts = Vec::new();
                let mut s = a;
                while s <= b {
                    let e = (s + size - 1).min(b);
                    parts.push((s, e));
                    s = e + 1;
                }
                for p in parts.into_iter().rev() {
                    pending.push_front(p);
                }
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|l| (l.block_number, l.log_index));
    Ok(Fetched {
        logs: out,
        covered,
        shrunk,
    })
}

impl EvmSource {
    /// A source for `spec` over `rpc`.
    pub fn new(spec: Arc<ChainSpec>, rpc: Arc<RpcClient>, tuning: Tuning) -> Self {
        let mut addresses: Vec<Address> = spec.contracts.keys().copied().collect();
        addresses.sort();
        let range = tuning.max_range.clamp(1, INITIAL_RANGE);
        Self {
            spec,
            rpc,
            tuning,
            addresses,
            cursor: None,
            window: HashWindow::new(WINDOW),
            range,
            chain_checked: false,
            suspect_tip: false,
            queued: VecDeque::new(),
        }
    }

    fn chain(&self) -> &str {
        &self.spec.name
    }

    /// Decodes logs into rows. A log from a contract that is not configured is counted and
    /// skipped (not ours); a log of a configured contract that does not decode is
    /// quarantined (a permanent data error on that record).
    fn decode(&self, logs: &[Log]) -> (Vec<EventRow>, u64, Vec<Quarantined>) {
        let mut rows = Vec::with_capacity(logs.len());
        let mut skipped = 0u64;
        let mut quarantined = Vec::new();
        for log in logs {
            let Some(registry) = self.spec.contracts.get(&log.address) else {
                skipped += 1;
                tracing::warn!(chain = self.chain(), address = %log.address, block = log.block_number,
                    "log from a contract that is not configured; skipped");
                continue;
            };
            if i32::try_from(log.log_index).is_err() || i64::try_from(log.block_number).is_err() {
                let e = format!(
                    "block {} log index {} does not fit the stored columns",
                    log.block_number, log.log_index
                );
                quarantined.push(quarantine_log(log, *registry, &e));
                continue;
            }
            match decode_log(*registry, &log.topics, &log.data) {
                Ok(event) => rows.push(EventRow {
                    block_number: log.block_number,
                    block_hash: hex(&log.block_hash),
                    tx_hash: hex(&log.tx_hash),
                    log_index: log.log_index,
                    contract: format!("{:#x}", log.address),
                    event,
                }),
                Err(e) => quarantined.push(quarantine_log(log, *registry, &e)),
            }
        }
        (rows, skipped, quarantined)
    }

    /// Whether the tip we hold still is on the node's chain; on a mismatch finds the common
    /// ancestor in the hash window and asks the engine to revert to it.
    async fn check_tip(&mut self, head: u64) -> Result<Option<Step<EvmBatch>>, SourceError> {
        let Some((tip, stored)) = self.window.tip().map(|(h, s)| (h, s.to_string())) else {
            return Ok(None);
        };
        let fetched = self.rpc.headers(&[tip]).await.map_err(data_err)?;
        match fetched.into_iter().next().flatten() {
            Some(h) if hex(&h.hash) == stored => Ok(None),
            Some(_) => self.reorg(head).await.map(Some),
            // The node does not have our tip (lagging replica): wait.
            None => Ok(Some(Step::Idle(Progress {
                head_height: Some(head as i64),
                caught_up: true,
                ..Default::default()
            }))),
        }
    }

    /// Finds the highest stored block still canonical and returns the revert to it.
    async fn reorg(&mut self, head: u64) -> Result<Step<EvmBatch>, SourceError> {
        let rpc = self.rpc.clone();
        let found = self
            .window
            .find_ancestor(ANCESTOR_PAGE, |heights| {
                let rpc = rpc.clone();
                async move {
                    let headers = rpc.headers(&heights).await.map_err(data_err)?;
                    Ok::<_, SourceError>(
                        headers
                            .into_iter()
                            .map(|h| h.map(|h| hex(&h.hash)))
                            .collect(),
                    )
                }
            })
            .await?;
        let floor = match found {
            Ancestor::Found(a) => a as i64,
            Ancestor::BelowWindow => self.spec.start_block as i64 - 1,
        };
        self.cursor = u64::try_from(floor).ok();
        self.window.truncate_above(floor.max(0) as u64);
        if floor < 0 {
            self.window.clear();
        }
        self.suspect_tip = false;
        Ok(Step::Revert {
            to: floor,
            progress: Progress {
                head_height: Some(head as i64),
                indexed_height: Some(floor),
                cursor: Some(floor.to_string()),
                ..Default::default()
            },
        })
    }

    /// A fetch that saw the chain move under it: nothing to write, the next fetch re-checks.
    fn moved(&mut self, head: u64, reason: &str) -> Step<EvmBatch> {
        tracing::info!(
            chain = self.chain(),
            reason,
            "chain changed while reading; retrying"
        );
        self.suspect_tip = true;
        Step::Idle(Progress {
            head_height: Some(head as i64),
            ..Default::default()
        })
    }

    /// Checks that the fetched headers link to the held tip and to each other, and that
    /// logs of fetched blocks carry the fetched hashes.
    fn inconsistency(
        &self,
        next: u64,
        headers: &[Header],
        logs: &[Log],
        every_block: bool,
    ) -> Option<&'static str> {
        let first = headers.first()?;
        if first.number != next {
            return Some("unexpected header number");
        }
        if !self.window.extends(first.number, &hex(&first.parent_hash)) {
            return Some("first block does not extend the stored tip");
        }
        if every_block
            && headers
                .windows(2)
                .any(|w| w[1].parent_hash != w[0].hash || w[1].number != w[0].number + 1)
        {
            return Some("headers do not form a chain");
        }
        let by_number: HashMap<u64, B256> = headers.iter().map(|h| (h.number, h.hash)).collect();
        if logs.iter().any(|l| {
            by_number
                .get(&l.block_number)
                .is_some_and(|h| *h != l.block_hash)
        }) {
            return Some("logs and headers disagree on a block hash");
        }
        None
    }

    /// Fetches from `next` up to `end` as ranges in flight; returns the logs in order and
    /// the last block covered.
    async fn backfill_logs(&mut self, next: u64, end: u64) -> Result<(Vec<Log>, u64), SourceError> {
        let mut ranges = Vec::new();
        let mut s = next;
        while s <= end && ranges.len() < self.tuning.concurrency.max(1) {
            let e = s.saturating_add(self.range - 1).min(end);
            ranges.push((s, e));
            s = e + 1;
        }
        let ranges_asked = ranges.clone();
        let rpc = self.rpc.clone();
        let addrs = self.addresses.clone();
        let results: Vec<_> = futures::stream::iter(ranges.into_iter().map(|(a, b)| {
            let rpc = rpc.clone();
            let addrs = addrs.clone();
            async move { fetch_range(&rpc, &addrs, a, b, RANGE_LOG_CAP).await }
        }))
        .buffered(self.tuning.concurrency.max(1))
        .collect()
        .await;
        let mut logs = Vec::new();
        let mut shrunk: Option<u64> = None;
        let mut all_small = true;
        let mut covered = next.saturating_sub(1);
        for (r, (_, b)) in results.into_iter().zip(ranges_asked) {
            let f = r.map_err(data_err)?;
            if let Some(s) = f.shrunk {
                shrunk = Some(shrunk.map_or(s, |x: u64| x.min(s)));
            }
            all_small &= f.logs.len() < SMALL_ANSWER;
            logs.extend(f.logs);
            covered = f.covered;
            if f.covered < b {
                // Stopped early at the log cap: later ranges wait for the next fetch.
                break;
            }
        }
        self.range = match shrunk {
            Some(s) => s.max(1),
            None if all_small => (self.range * 2).min(self.tuning.max_range.max(1)),
            None => self.range,
        };
        Ok((logs, covered))
    }

    /// Cuts the rows of `[next, end]` into batches of at most [`store::MAX_BATCH_ROWS`]
    /// events, each ending on a block boundary, and queues them.
    #[allow(clippy::too_many_arguments)]
    fn queue_batches(
        &mut self,
        head: u64,
        next: u64,
        end: u64,
        rows: Vec<EventRow>,
        headers: Vec<Header>,
        skipped: u64,
        quarantined: Vec<Quarantined>,
        caught_up: bool,
    ) {
        let newest = |h: Option<&Header>| {
            h.and_then(|h| DateTime::<Utc>::from_timestamp(h.timestamp as i64, 0))
        };
        let mut rows = VecDeque::from(rows);
        let mut headers = VecDeque::from(headers);
        let mut from = next;
        let mut skipped = Some(skipped);
        let mut quarantined = Some(quarantined);
        loop {
            // Take whole blocks while the batch has room (a block larger than the cap goes alone).
            let mut take = 0;
            while take < rows.len() {
                let block = rows[take].block_number;
                let block_len = rows
                    .iter()
                    .skip(take)
                    .take_while(|r| r.block_number == block)
                    .count();
                if take > 0 && take + block_len > store::MAX_BATCH_ROWS {
                    break;
                }
                take += block_len;
                if take >= store::MAX_BATCH_ROWS {
                    break;
                }
            }
            let last_part = take == rows.len();
            let batch_end = if last_part {
                end
            } else {
                rows[take].block_number - 1
            };
            let part: Vec<EventRow> = rows.drain(..take).collect();
            let mut part_headers = Vec::new();
            while headers.front().is_some_and(|h| h.number <= batch_end) {
                if let Some(h) = headers.pop_front() {
                    part_headers.push(h);
                }
            }
            let progress = Progress {
                head_height: Some(head as i64),
                indexed_height: Some(batch_end as i64),
                cursor: Some(batch_end.to_string()),
                start_height: Some(self.spec.start_block as i64 - 1),
                items: Vec::new(),
                caught_up: last_part && caught_up,
                newest_item_at: newest(part_headers.last()),
                quarantined: quarantined.take().unwrap_or_default(),
            };
            self.queued.push_back((
                EvmBatch {
                    rows: part,
                    headers: part_headers,
                    skipped: skipped.take().unwrap_or(0),
                    from_block: from,
                },
                progress,
            ));
            from = batch_end + 1;
            if last_part {
                break;
            }
        }
    }
}

#[async_trait]
impl Source for EvmSource {
    type Batch = EvmBatch;

    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            id: source_id(self.chain()),
            kind: "evm",
            name: self.spec.name.clone(),
            chain_id: i64::try_from(self.spec.chain_id).ok(),
        }
    }

    async fn resume(
        &mut self,
        ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.cursor = stored
            .cursor
            .as_deref()
            .and_then(|c| c.parse::<i64>().ok())
            .and_then(|c| u64::try_from(c).ok());
        self.queued.clear();
        self.suspect_tip = true;
        self.window.clear();
        if let Some(c) = self.cursor {
            let mut recent = evm_block::Entity::find()
                .filter(evm_block::Column::Chain.eq(self.spec.name.clone()))
                .filter(evm_block::Column::Number.lte(c as i64))
                .order_by_desc(evm_block::Column::Number)
                .limit(WINDOW as u64)
                .all(&ctx.db)
                .await?;
            recent.reverse();
            for b in recent {
                if let Ok(n) = u64::try_from(b.number) {
                    self.window.push(n, b.hash);
                }
            }
        }
        Ok(())
    }

    async fn fetch(&mut self, _ctx: &SyncContext) -> Result<Step<EvmBatch>, SourceError> {
        if let Some((batch, progress)) = self.queued.pop_front() {
            return Ok(Step::Batch { batch, progress });
        }
        if !self.chain_checked {
            let id = self.rpc.chain_id().await.map_err(data_err)?;
            if id != self.spec.chain_id {
                return Err(SourceError::Config(format!(
                    "evm chain {}: node reports chain id {id}, configured {}",
                    self.chain(),
                    self.spec.chain_id
                )));
            }
            self.chain_checked = true;
        }
        let head = self.rpc.block_number().await.map_err(data_err)?;
        let target = head.saturating_sub(self.spec.confirmations);
        let next = self.cursor.map_or(self.spec.start_block, |c| c + 1);
        let following = next > target || target - next < FOLLOW_WINDOW;
        // While following (and after a fetch that did not link) the held tip is re-checked;
        // during backfill the parent-hash link of each range does that job.
        if following || self.suspect_tip {
            if let Some(step) = self.check_tip(head).await? {
                return Ok(step);
            }
            self.suspect_tip = false;
        }
        if next > target {
            return Ok(Step::Idle(Progress {
                head_height: Some(head as i64),
                indexed_height: self.cursor.map(|c| c as i64),
                caught_up: true,
                ..Default::default()
            }));
        }
        let (logs, end) = if following {
            let f = fetch_range(&self.rpc, &self.addresses, next, target, RANGE_LOG_CAP)
                .await
                .map_err(data_err)?;
            if let Some(s) = f.shrunk {
                self.range = s;
            }
            (f.logs, f.covered)
        } else {
            self.backfill_logs(next, target).await?
        };
        // Headers: every block when following; the first block and the range end otherwise.
        let numbers: Vec<u64> = if following {
            (next..=end).collect()
        } else if next == end {
            vec![end]
        } else {
            vec![next, end]
        };
        let headers: Vec<Header> = match self
            .rpc
            .headers(&numbers)
            .await
            .map_err(data_err)?
            .into_iter()
            .collect::<Option<Vec<_>>>()
        {
            Some(h) => h,
            None => return Ok(self.moved(head, "a header is missing")),
        };
        if let Some(reason) = self.inconsistency(next, &headers, &logs, following) {
            return Ok(self.moved(head, reason));
        }
        let (rows, skipped, quarantined) = self.decode(&logs);
        drop(logs);
        for h in &headers {
            self.window.push(h.number, hex(&h.hash));
        }
        self.cursor = Some(end);
        self.queue_batches(
            head,
            next,
            end,
            rows,
            headers,
            skipped,
            quarantined,
            end >= target && following,
        );
        match self.queued.pop_front() {
            Some((batch, progress)) => Ok(Step::Batch { batch, progress }),
            None => Err(SourceError::Malformed(
                "no batch was cut from a fetched range".into(),
            )),
        }
    }

    fn writer(&self) -> Arc<dyn BatchWriter<EvmBatch>> {
        Arc::new(EvmWriter {
            chain: self.spec.name.clone(),
        })
    }

    fn prefetch(&self) -> usize {
        PREFETCH
    }

    fn poll_interval(&self) -> Duration {
        self.tuning.poll_interval
    }
}

#[async_trait]
impl BatchWriter<EvmBatch> for EvmWriter {
    async fn write(&self, txn: &DatabaseTransaction, b: &EvmBatch) -> Result<Written, DbErr> {
        let chain = self.chain.as_str();
        store::insert_events(txn, chain, &b.rows).await?;
        // Trigger actions are queued in the events' transaction: durable exactly with them.
        let queued = crate::triggers::enqueue_matches(txn, chain, &b.rows).await?;
        store::project_batch(txn, chain, &b.rows, Utc::now()).await?;
        store::upsert_blocks(txn, chain, &b.headers).await?;
        let mut events = Vec::new();
        if b.rows.len() <= MAX_EVENT_NOTIFICATIONS {
            for r in &b.rows {
                let (name, args) = r.event.to_name_args();
                events.push(BusEvent::new(payload::EvmEventIndexed {
                    chain: chain.to_string(),
                    block_number: i64_of(r.block_number),
                    block_hash: r.block_hash.clone(),
                    tx_hash: r.tx_hash.clone(),
                    log_index: i64_of(r.log_index),
                    contract: r.contract.clone(),
                    name,
                    args,
                }));
            }
        }
        if let Some(h) = b.headers.last() {
            events.push(BusEvent::new(payload::EvmBlockIndexed {
                chain: chain.to_string(),
                number: i64_of(h.number),
                hash: hex(&h.hash),
                parent_hash: hex(&h.parent_hash),
                timestamp: i64_of(h.timestamp),
                from_block: i64_of(b.from_block),
                events: i64::try_from(b.rows.len()).unwrap_or(i64::MAX),
            }));
        }
        if queued > 0 {
            events.push(BusEvent::new(payload::ActionQueued {
                chain: chain.to_string(),
                queued,
            }));
        }
        Ok(Written {
            items: vec![
                ("evm_event", b.rows.len() as u64),
                ("evm_log_skipped", b.skipped),
            ],
            events,
            after_commit: None,
        })
    }

    async fn revert(&self, txn: &DatabaseTransaction, to: i64) -> Result<Reverted, DbErr> {
        crate::triggers::drop_orphaned(txn, &self.chain, to).await?;
        crate::sync::quarantine::forget_above(txn, &source_id(&self.chain), LOG_KIND, to, |p| {
            p.split(':').next()?.parse().ok()
        })
        .await?;
        let orphaned = store::rollback(txn, &self.chain, to).await?;
        Ok(Reverted {
            orphaned,
            events: Vec::new(),
        })
    }
}

/// A height or index as the `evm_*` tables store it (see `store`).
fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
