//! One EVM chain as a [`Source`]: adaptive `eth_getLogs` backfill with ranges in flight,
//! head following `confirmations` behind, reorg detection by block hash and rollback.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use orrery_entity::{evm_block, source};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;

use super::decode::{decode_log, Registry};
use super::rpc::{Header, Log, RpcClient, RpcError};
use super::store::{self, EventRow};
use crate::bus::{topics, BusEvent};
use crate::metrics::Metrics;
use crate::sync::{Progress, Source, SourceDescriptor, SourceError, SyncContext};

/// Gaps up to this many blocks are indexed with every header checked (head following).
const FOLLOW_WINDOW: u64 = 64;
/// A range whose answer has fewer logs than this may grow.
const SMALL_ANSWER: usize = 2_000;
/// At most this many events of one step are published one by one on the bus.
const MAX_EVENT_NOTIFICATIONS: usize = 1_000;
/// First `eth_getLogs` range (grows while answers are small).
const INITIAL_RANGE: u64 = 1_000;
/// Logs one range may hold before it stops early (memory bound: this times concurrency).
const RANGE_LOG_CAP: usize = 5_000;
/// Stored headers compared per round while looking for the common ancestor.
const ANCESTOR_PAGE: u64 = 128;

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
    /// Last indexed block; None before the first commit.
    cursor: Option<u64>,
    /// Current adaptive `eth_getLogs` range.
    range: u64,
    chain_checked: bool,
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
        other => SourceError::Data(other.to_string()),
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
            range,
            chain_checked: false,
        }
    }

    fn chain(&self) -> &str {
        &self.spec.name
    }

    async fn stored_block(
        &self,
        ctx: &SyncContext,
        number: u64,
    ) -> Result<Option<evm_block::Model>, SourceError> {
        Ok(
            evm_block::Entity::find_by_id((self.spec.name.clone(), number as i64))
                .one(&ctx.db)
                .await?,
        )
    }

    /// Decodes logs into rows; unknown or malformed logs are counted and skipped.
    fn decode(&self, logs: &[Log]) -> (Vec<EventRow>, u64) {
        let mut rows = Vec::with_capacity(logs.len());
        let mut skipped = 0u64;
        for log in logs {
            let Some(registry) = self.spec.contracts.get(&log.address) else {
                skipped += 1;
                tracing::warn!(chain = self.chain(), address = %log.address, block = log.block_number,
                    "log from a contract that is not configured; skipped");
                continue;
            };
            match decode_log(*registry, &log.topics, &log.data) {
                Ok(event) => rows.push(EventRow {
                    block_number: log.block_number,
                    block_hash: hex(&log.block_hash),
                    tx_hash: hex(&log.tx_hash),
                    log_index: log.log_index,
                    contract: format!("{:#x}", log.address),
                    event,
                }),
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(chain = self.chain(), registry = registry.as_str(),
                        tx = %log.tx_hash, log_index = log.log_index, block = log.block_number,
                        error = %e, "cannot decode log; skipped");
                }
            }
        }
        (rows, skipped)
    }

    /// Whether the stored tip still is on the node's chain; on a mismatch rolls back to the
    /// common ancestor and returns the step's progress.
    async fn check_tip(
        &mut self,
        ctx: &SyncContext,
        head: u64,
    ) -> Result<Option<Progress>, SourceError> {
        let Some(cursor) = self.cursor else {
            return Ok(None);
        };
        let Some(stored) = self.stored_block(ctx, cursor).await? else {
            return Ok(None);
        };
        let fetched = self.rpc.headers(&[cursor]).await.map_err(data_err)?;
        match fetched.into_iter().next().flatten() {
            Some(h) if hex(&h.hash) == stored.hash => Ok(None),
            Some(_) => self.reorg(ctx, head, cursor).await.map(Some),
            // The node does not have our tip (lagging replica): wait.
            None => Ok(Some(Progress {
                head_height: Some(head as i64),
                caught_up: true,
                ..Default::default()
            })),
        }
    }

    /// Finds the highest stored block still canonical, deletes everything above it in one
    /// transaction and publishes `reorg`.
    async fn reorg(
        &mut self,
        ctx: &SyncContext,
        head: u64,
        cursor: u64,
    ) -> Result<Progress, SourceError> {
        let mut ancestor: Option<u64> = None;
        let mut below = i64::MAX;
        'search: loop {
            let page = evm_block::Entity::find()
                .filter(evm_block::Column::Chain.eq(self.spec.name.clone()))
                .filter(evm_block::Column::Number.lt(below))
                .order_by_desc(evm_block::Column::Number)
                .limit(ANCESTOR_PAGE)
                .all(&ctx.db)
                .await?;
            let Some(last) = page.last() else { break };
            below = last.number;
            let numbers: Vec<u64> = page.iter().map(|b| b.number.max(0) as u64).collect();
            let headers = self.rpc.headers(&numbers).await.map_err(data_err)?;
            for (stored, fetched) in page.iter().zip(headers) {
                if fetched.is_some_and(|h| hex(&h.hash) == stored.hash) {
                    ancestor = Some(stored.number.max(0) as u64);
                    break 'search;
                }
            }
        }
        let floor = match ancestor {
            Some(a) => a as i64,
            None => self.spec.start_block as i64 - 1,
        };
        let depth = cursor as i64 - floor;
        let txn = ctx.begin().await?;
        crate::triggers::drop_orphaned(&txn, self.chain(), floor).await?;
        let orphaned = store::rollback(&txn, self.chain(), floor).await?;
        let progress = Progress {
            head_height: Some(head as i64),
            indexed_height: Some(floor),
            cursor: Some(floor.to_string()),
            items: Vec::new(),
            caught_up: false,
            newest_item_at: None,
        };
        let event = BusEvent::new(
            topics::REORG,
            json!({
                "chain": self.chain(),
                "source": source_id(self.chain()),
                "fromBlock": floor + 1,
                "depth": depth,
                "orphanedEvents": orphaned,
            }),
        );
        ctx.commit(txn, &progress, vec![event]).await?;
        self.cursor = u64::try_from(floor).ok();
        let id = source_id(self.chain());
        Metrics::global().reorgs.with_label_values(&[&id]).inc();
        Metrics::global()
            .reorg_depth
            .with_label_values(&[&id])
            .set(depth);
        tracing::warn!(
            chain = self.chain(),
            ancestor = floor,
            depth,
            orphaned,
            "reorg: rolled back to the common ancestor"
        );
        Ok(progress)
    }

    /// A step that saw the chain move under it: nothing committed, the next step re-checks.
    fn moved(&self, head: u64, reason: &str) -> Progress {
        tracing::info!(
            chain = self.chain(),
            reason,
            "chain changed while reading; retrying"
        );
        Progress {
            head_height: Some(head as i64),
            ..Default::default()
        }
    }

    /// Checks that the fetched headers link to the stored tip and to each other, and that
    /// logs of fetched blocks carry the fetched hashes.
    async fn inconsistency(
        &self,
        ctx: &SyncContext,
        next: u64,
        headers: &[Header],
        logs: &[Log],
        every_block: bool,
    ) -> Result<Option<&'static str>, SourceError> {
        let Some(first) = headers.first() else {
            return Ok(None);
        };
        if first.number != next {
            return Ok(Some("unexpected header number"));
        }
        if let Some(c) = self.cursor {
            if let Some(stored) = self.stored_block(ctx, c).await? {
                if hex(&first.parent_hash) != stored.hash {
                    return Ok(Some("first block does not extend the stored tip"));
                }
            }
        }
        if every_block
            && headers
                .windows(2)
                .any(|w| w[1].parent_hash != w[0].hash || w[1].number != w[0].number + 1)
        {
            return Ok(Some("headers do not form a chain"));
        }
        let by_number: HashMap<u64, B256> = headers.iter().map(|h| (h.number, h.hash)).collect();
        if logs.iter().any(|l| {
            by_number
                .get(&l.block_number)
                .is_some_and(|h| *h != l.block_hash)
        }) {
            return Ok(Some("logs and headers disagree on a block hash"));
        }
        Ok(None)
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
                // Stopped early at the log cap: later ranges wait for the next step.
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
}

#[async_trait]
impl Source for EvmSource {
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
        _ctx: &SyncContext,
        stored: &source::Model,
    ) -> Result<(), SourceError> {
        self.cursor = stored
            .cursor
            .as_deref()
            .and_then(|c| c.parse::<i64>().ok())
            .and_then(|c| u64::try_from(c).ok());
        Ok(())
    }

    async fn step(&mut self, ctx: &SyncContext) -> Result<Progress, SourceError> {
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
        if let Some(p) = self.check_tip(ctx, head).await? {
            return Ok(p);
        }
        let target = head.saturating_sub(self.spec.confirmations);
        let next = self.cursor.map_or(self.spec.start_block, |c| c + 1);
        if next > target {
            return Ok(Progress {
                head_height: Some(head as i64),
                indexed_height: self.cursor.map(|c| c as i64),
                caught_up: true,
                ..Default::default()
            });
        }
        let following = target - next < FOLLOW_WINDOW;
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
        if let Some(reason) = self
            .inconsistency(ctx, next, &headers, &logs, following)
            .await?
        {
            return Ok(self.moved(head, reason));
        }
        let (rows, skipped) = self.decode(&logs);
        let last_header = headers.last().cloned();
        let newest = last_header
            .as_ref()
            .and_then(|h| DateTime::<Utc>::from_timestamp(h.timestamp as i64, 0));
        let txn = ctx.begin().await?;
        store::insert_events(&txn, self.chain(), &rows).await?;
        // Trigger actions are queued in the events' transaction: durable exactly with them.
        let queued = crate::triggers::enqueue_matches(&txn, self.chain(), &rows).await?;
        let at = Utc::now();
        for row in &rows {
            store::project(&txn, self.chain(), row, at).await?;
        }
        store::upsert_blocks(&txn, self.chain(), &headers).await?;
        let progress = Progress {
            head_height: Some(head as i64),
            indexed_height: Some(end as i64),
            cursor: Some(end.to_string()),
            items: vec![
                ("evm_event", rows.len() as u64),
                ("evm_log_skipped", skipped),
            ],
            caught_up: end >= target && following,
            newest_item_at: newest,
        };
        let mut events = Vec::new();
        if rows.len() <= MAX_EVENT_NOTIFICATIONS {
            for r in &rows {
                let (name, args) = r.event.to_name_args();
                events.push(BusEvent::new(
                    topics::EVM_EVENT,
                    json!({
                        "chain": self.chain(),
                        "blockNumber": r.block_number,
                        "blockHash": r.block_hash,
                        "txHash": r.tx_hash,
                        "logIndex": r.log_index,
                        "contract": r.contract,
                        "name": name,
                        "args": args,
                    }),
                ));
            }
        }
        if let Some(h) = &last_header {
            events.push(BusEvent::new(
                topics::EVM_BLOCK,
                json!({
                    "chain": self.chain(),
                    "number": h.number,
                    "hash": hex(&h.hash),
                    "parentHash": hex(&h.parent_hash),
                    "timestamp": h.timestamp,
                    "fromBlock": next,
                    "events": rows.len(),
                }),
            ));
        }
        if queued > 0 {
            events.push(BusEvent::new(
                crate::triggers::ACTION_QUEUED,
                json!({ "chain": self.chain(), "queued": queued }),
            ));
        }
        ctx.commit(txn, &progress, events).await?;
        self.cursor = Some(end);
        Ok(progress)
    }

    fn poll_interval(&self) -> Duration {
        self.tuning.poll_interval
    }
}
