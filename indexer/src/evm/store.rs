//! Database writes of the EVM source: generic events, block headers, the ERC-8004
//! projections (agents, feedback, validations), and the rollback of orphaned blocks.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use orrery_entity::{erc8004_agent, erc8004_feedback, erc8004_validation, evm_block, evm_event};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, NotSet, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use super::decode::Erc8004Event;

/// Where a decoded event sits.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Block number.
    pub block_number: u64,
    /// Block hash (0x hex).
    pub block_hash: String,
    /// Transaction hash (0x hex).
    pub tx_hash: String,
    /// Log index in the block.
    pub log_index: u64,
    /// Contract (0x hex, lower case).
    pub contract: String,
    /// The event.
    pub event: Erc8004Event,
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Inserts generic events (idempotent on chain + block hash + log index); returns the JSON
/// payloads of the rows for the bus.
pub async fn insert_events<C: ConnectionTrait>(
    db: &C,
    chain: &str,
    rows: &[EventRow],
) -> Result<(), DbErr> {
    let now = Utc::now();
    for chunk in rows.chunks(rows_per_statement(9)) {
        let models = chunk
            .iter()
            .map(|r| {
                let (name, args) = r.event.to_name_args();
                let log_index = i32::try_from(r.log_index).map_err(|_| {
                    DbErr::Custom(format!(
                        "log index {} of block {} does not fit the stored column (i32)",
                        r.log_index, r.block_number
                    ))
                })?;
                Ok(evm_event::ActiveModel {
                    chain: Set(chain.to_string()),
                    block_number: Set(i64_of(r.block_number)),
                    block_hash: Set(r.block_hash.clone()),
                    tx_hash: Set(r.tx_hash.clone()),
                    log_index: Set(log_index),
                    contract: Set(r.contract.clone()),
                    name: Set(name),
                    args: Set(args),
                    created_at: Set(now),
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>, DbErr>>()?;
        evm_event::Entity::insert_many(models)
            .on_conflict(
                OnConflict::columns([
                    evm_event::Column::Chain,
                    evm_event::Column::BlockNumber,
                    evm_event::Column::BlockHash,
                    evm_event::Column::LogIndex,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Stores block headers (replacing a stored header of the same number).
pub async fn upsert_blocks<C: ConnectionTrait>(
    db: &C,
    chain: &str,
    headers: &[super::rpc::Header],
) -> Result<(), DbErr> {
    for chunk in headers.chunks(rows_per_statement(5)) {
        let models = chunk
            .iter()
            .map(|h| {
                let timestamp =
                    DateTime::from_timestamp(i64_of(h.timestamp), 0).ok_or_else(|| {
                        DbErr::Custom(format!(
                            "block {} timestamp {} is not a representable time",
                            h.number, h.timestamp
                        ))
                    })?;
                Ok(evm_block::ActiveModel {
                    chain: Set(chain.to_string()),
                    number: Set(i64_of(h.number)),
                    hash: Set(format!("{:#x}", h.hash)),
                    parent_hash: Set(format!("{:#x}", h.parent_hash)),
                    timestamp: Set(timestamp),
                })
            })
            .collect::<Result<Vec<_>, DbErr>>()?;
        evm_block::Entity::insert_many(models)
            .on_conflict(
                OnConflict::columns([evm_block::Column::Chain, evm_block::Column::Number])
                    .update_columns([
                        evm_block::Column::Hash,
                        evm_block::Column::ParentHash,
                        evm_block::Column::Timestamp,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Rows per multi-row statement: as many as the bind-parameter limit allows (SQLite's
/// 32,766, PostgreSQL's 65,535), so a batch of up to [`MAX_BATCH_ROWS`] rows is one
/// statement per table whatever its size.
fn rows_per_statement(columns: usize) -> usize {
    (32_000 / columns.max(1)).max(1)
}

/// Largest number of events one batch carries (the source cuts batches at this size), so
/// every table's write is a single statement.
pub const MAX_BATCH_ROWS: usize = 2_500;

/// The final state of every agent, feedback and validation a batch touches, folded in memory
/// from the stored rows and the batch's events in order.
#[derive(Debug, Default)]
struct Fold {
    agents: HashMap<String, erc8004_agent::Model>,
    /// Agents that exist (stored or created in the batch) and were changed.
    agents_changed: BTreeSet<String>,
    feedback: Vec<erc8004_feedback::ActiveModel>,
    revoked: Vec<(String, String, String)>,
    validations: HashMap<String, erc8004_validation::Model>,
    validations_changed: BTreeSet<String>,
}

/// The agent an identity event (transfer, registration, URI, metadata) changes.
fn identity_agent(e: &Erc8004Event) -> Option<&String> {
    match e {
        Erc8004Event::Transfer(t) => Some(&t.token_id),
        Erc8004Event::Registered(r) => Some(&r.agent_id),
        Erc8004Event::UriUpdated(u) | Erc8004Event::LegacyUriUpdated(u) => Some(&u.agent_id),
        Erc8004Event::MetadataSet(m) => Some(&m.agent_id),
        _ => None,
    }
}

/// What the batch must read before folding.
fn touched(
    rows: &[EventRow],
) -> (
    BTreeSet<String>,
    BTreeSet<String>,
    BTreeSet<(String, String)>,
) {
    let mut agents = BTreeSet::new();
    let mut requests = BTreeSet::new();
    let mut legacy = BTreeSet::new();
    for r in rows {
        if let Some(id) = identity_agent(&r.event) {
            agents.insert(id.clone());
        }
        match &r.event {
            Erc8004Event::NewFeedback(f) if f.feedback_index.is_none() => {
                legacy.insert((f.agent_id.clone(), f.client_address.clone()));
            }
            Erc8004Event::ValidationResponse(v) => {
                requests.insert(v.request_hash.clone());
            }
            _ => {}
        }
    }
    (agents, requests, legacy)
}

fn is_zero_address(a: &str) -> bool {
    a.trim_start_matches("0x").bytes().all(|b| b == b'0')
}

impl Fold {
    fn agent(
        &mut self,
        chain: &str,
        id: &str,
        block: i64,
        at: DateTime<Utc>,
        change: impl FnOnce(&mut erc8004_agent::Model),
    ) {
        match self.agents.get_mut(id) {
            Some(a) => {
                change(a);
                a.updated_block = block;
                a.updated_at = at;
                self.agents_changed.insert(id.to_string());
            }
            None => tracing::debug!(chain, agent = id, "update for an unknown agent"),
        }
    }

    fn create_agent(&mut self, m: erc8004_agent::Model) {
        self.agents_changed.insert(m.agent_id.clone());
        self.agents.insert(m.agent_id.clone(), m);
    }

    /// Applies one event, exactly as a statement per event would have.
    fn apply(
        &mut self,
        chain: &str,
        row: &EventRow,
        at: DateTime<Utc>,
        legacy_counts: &mut HashMap<(String, String), u64>,
    ) {
        let block = i64_of(row.block_number);
        match &row.event {
            Erc8004Event::Transfer(t) if is_zero_address(&t.from) => {
                // A mint creates the agent unless it already exists.
                if !self.agents.contains_key(&t.token_id) {
                    self.create_agent(erc8004_agent::Model {
                        chain: chain.to_string(),
                        agent_id: t.token_id.clone(),
                        owner: t.to.clone(),
                        uri: None,
                        metadata: None,
                        registered_block: block,
                        updated_block: block,
                        updated_at: at,
                    });
                }
            }
            Erc8004Event::Transfer(t) => {
                self.agent(chain, &t.token_id, block, at, |a| a.owner = t.to.clone());
            }
            Erc8004Event::Registered(r) => {
                if self.agents.contains_key(&r.agent_id) {
                    self.agent(chain, &r.agent_id, block, at, |a| {
                        a.owner = r.owner.clone();
                        a.uri = Some(r.agent_uri.clone());
                    });
                } else {
                    self.create_agent(erc8004_agent::Model {
                        chain: chain.to_string(),
                        agent_id: r.agent_id.clone(),
                        owner: r.owner.clone(),
                        uri: Some(r.agent_uri.clone()),
                        metadata: None,
                        registered_block: block,
                        updated_block: block,
                        updated_at: at,
                    });
                }
            }
            Erc8004Event::UriUpdated(u) | Erc8004Event::LegacyUriUpdated(u) => {
                self.agent(chain, &u.agent_id, block, at, |a| {
                    a.uri = Some(u.new_uri.clone())
                });
            }
            Erc8004Event::MetadataSet(m) => {
                self.agent(chain, &m.agent_id, block, at, |a| {
                    let mut meta = match a.metadata.take() {
                        Some(serde_json::Value::Object(o)) => o,
                        _ => serde_json::Map::new(),
                    };
                    meta.insert(
                        m.metadata_key.clone(),
                        serde_json::Value::String(m.metadata_value.clone()),
                    );
                    a.metadata = Some(serde_json::Value::Object(meta));
                });
            }
            Erc8004Event::NewFeedback(f) => {
                let pair = (f.agent_id.clone(), f.client_address.clone());
                let index = match &f.feedback_index {
                    Some(i) => {
                        // Counted too: a later legacy log of the same pair numbers after it.
                        if let Some(n) = legacy_counts.get_mut(&pair) {
                            *n += 1;
                        }
                        i.clone()
                    }
                    // Legacy logs carry no index: the registry numbers feedback per client from 1.
                    None => {
                        let n = legacy_counts.entry(pair).or_insert(0);
                        *n += 1;
                        n.to_string()
                    }
                };
                // Decoding guarantees a score (legacy) or a value that fits an i32.
                let score = match (&f.value, f.score) {
                    (_, Some(s)) => Some(i32::from(s)),
                    (Some(v), None) => v.parse::<i32>().ok(),
                    (None, None) => None,
                };
                let Ok(log_index) = i32::try_from(row.log_index) else {
                    tracing::error!(
                        chain,
                        block,
                        log_index = row.log_index,
                        "NewFeedback log index does not fit the stored column; not stored"
                    );
                    return;
                };
                let Some(score) = score else {
                    tracing::error!(chain, agent = %f.agent_id, value = ?f.value,
                        "NewFeedback without a storable score; not stored");
                    return;
                };
                self.feedback.push(erc8004_feedback::ActiveModel {
                    chain: Set(chain.to_string()),
                    agent_id: Set(f.agent_id.clone()),
                    client_address: Set(f.client_address.clone()),
                    feedback_index: Set(Some(index)),
                    score: Set(score),
                    tag1: Set(Some(f.tag1.clone()).filter(|s| !s.is_empty())),
                    tag2: Set(Some(f.tag2.clone()).filter(|s| !s.is_empty())),
                    uri: Set(Some(f.feedback_uri.clone()).filter(|s| !s.is_empty())),
                    file_hash: Set(Some(f.feedback_hash.clone())),
                    revoked: Set(false),
                    block_number: Set(block),
                    tx_hash: Set(row.tx_hash.clone()),
                    log_index: Set(log_index),
                    ..Default::default()
                });
            }
            Erc8004Event::FeedbackRevoked(r) => {
                self.revoked.push((
                    r.agent_id.clone(),
                    r.client_address.clone(),
                    r.feedback_index.clone(),
                ));
            }
            Erc8004Event::ResponseAppended(_) => {}
            Erc8004Event::ValidationRequest(v) => {
                if !self.validations.contains_key(&v.request_hash) {
                    self.validations_changed.insert(v.request_hash.clone());
                    self.validations.insert(
                        v.request_hash.clone(),
                        erc8004_validation::Model {
                            id: 0,
                            chain: chain.to_string(),
                            request_hash: v.request_hash.clone(),
                            agent_id: v.agent_id.clone(),
                            validator_address: v.validator_address.clone(),
                            request_uri: Some(v.request_uri.clone()),
                            response: None,
                            response_uri: None,
                            tag: None,
                            requested_block: block,
                            responded_block: None,
                            tx_hash: row.tx_hash.clone(),
                        },
                    );
                }
            }
            Erc8004Event::ValidationResponse(v) => {
                if let Some(m) = self.validations.get_mut(&v.request_hash) {
                    m.response = Some(i32::from(v.response));
                    m.response_uri = Some(v.response_uri.clone());
                    m.tag = Some(v.tag.clone());
                    m.responded_block = Some(block);
                    m.tx_hash = row.tx_hash.clone();
                    self.validations_changed.insert(v.request_hash.clone());
                }
            }
        }
    }
}

/// Applies a batch of events to the ERC-8004 tables set-based: reads the touched agents,
/// validations and legacy feedback counts (one query each), folds the events in memory in
/// order, then writes each table with one multi-row statement. The result equals applying
/// the events one by one.
pub async fn project_batch<C: ConnectionTrait>(
    db: &C,
    chain: &str,
    rows: &[EventRow],
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let (agent_ids, request_hashes, legacy) = touched(rows);
    let mut fold = Fold::default();
    for chunk in agent_ids
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .chunks(rows_per_statement(1))
    {
        for m in erc8004_agent::Entity::find()
            .filter(erc8004_agent::Column::Chain.eq(chain))
            .filter(erc8004_agent::Column::AgentId.is_in(chunk.iter().cloned()))
            .all(db)
            .await?
        {
            fold.agents.insert(m.agent_id.clone(), m);
        }
    }
    for chunk in request_hashes
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .chunks(rows_per_statement(1))
    {
        for m in erc8004_validation::Entity::find()
            .filter(erc8004_validation::Column::Chain.eq(chain))
            .filter(erc8004_validation::Column::RequestHash.is_in(chunk.iter().cloned()))
            .all(db)
            .await?
        {
            fold.validations.insert(m.request_hash.clone(), m);
        }
    }
    let mut legacy_counts: HashMap<(String, String), u64> =
        legacy.iter().map(|p| (p.clone(), 0)).collect();
    if !legacy.is_empty() {
        let agents: BTreeSet<&String> = legacy.iter().map(|(a, _)| a).collect();
        let counted: Vec<(String, String, i64)> = erc8004_feedback::Entity::find()
            .select_only()
            .column(erc8004_feedback::Column::AgentId)
            .column(erc8004_feedback::Column::ClientAddress)
            .column_as(erc8004_feedback::Column::Id.count(), "n")
            .filter(erc8004_feedback::Column::Chain.eq(chain))
            .filter(erc8004_feedback::Column::AgentId.is_in(agents.into_iter().cloned()))
            .group_by(erc8004_feedback::Column::AgentId)
            .group_by(erc8004_feedback::Column::ClientAddress)
            .into_tuple()
            .all(db)
            .await?;
        for (a, c, n) in counted {
            if legacy.contains(&(a.clone(), c.clone())) {
                legacy_counts.insert((a, c), u64::try_from(n).unwrap_or(0));
            }
        }
    }
    for r in rows {
        fold.apply(chain, r, at, &mut legacy_counts);
    }
    write_fold(db, chain, fold).await
}

async fn write_fold<C: ConnectionTrait>(db: &C, chain: &str, fold: Fold) -> Result<(), DbErr> {
    let agents: Vec<erc8004_agent::ActiveModel> = fold
        .agents_changed
        .iter()
        .filter_map(|id| fold.agents.get(id))
        .map(|m| m.clone().into_active_model())
        .collect();
    for chunk in agents.chunks(rows_per_statement(8)) {
        erc8004_agent::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([erc8004_agent::Column::Chain, erc8004_agent::Column::AgentId])
                    .update_columns([
                        erc8004_agent::Column::Owner,
                        erc8004_agent::Column::Uri,
                        erc8004_agent::Column::Metadata,
                        erc8004_agent::Column::UpdatedBlock,
                        erc8004_agent::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    for chunk in fold.feedback.chunks(rows_per_statement(14)) {
        erc8004_feedback::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([
                    erc8004_feedback::Column::Chain,
                    erc8004_feedback::Column::TxHash,
                    erc8004_feedback::Column::LogIndex,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    let validations: Vec<erc8004_validation::ActiveModel> = fold
        .validations_changed
        .iter()
        .filter_map(|h| fold.validations.get(h))
        .map(|m| {
            let mut am = m.clone().into_active_model();
            am.id = NotSet;
            am
        })
        .collect();
    for chunk in validations.chunks(rows_per_statement(12)) {
        erc8004_validation::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([
                    erc8004_validation::Column::Chain,
                    erc8004_validation::Column::RequestHash,
                ])
                .update_columns([
                    erc8004_validation::Column::Response,
                    erc8004_validation::Column::ResponseUri,
                    erc8004_validation::Column::Tag,
                    erc8004_validation::Column::RespondedBlock,
                    erc8004_validation::Column::TxHash,
                ])
                .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    // Revocations run after the inserts, so feedback given and revoked in one batch ends
    // revoked; one statement matches every (agent, client, index) of the batch.
    for chunk in fold.revoked.chunks(rows_per_statement(3)) {
        erc8004_feedback::Entity::update_many()
            .col_expr(erc8004_feedback::Column::Revoked, Expr::value(true))
            .filter(erc8004_feedback::Column::Chain.eq(chain))
            .filter(
                Expr::tuple([
                    Expr::col(erc8004_feedback::Column::AgentId),
                    Expr::col(erc8004_feedback::Column::ClientAddress),
                    Expr::col(erc8004_feedback::Column::FeedbackIndex),
                ])
                .in_tuples(chunk.iter().cloned()),
            )
            .exec(db)
            .await?;
    }
    Ok(())
}

async fn set_revoked<C: ConnectionTrait>(
    db: &C,
    chain: &str,
    agent_id: &str,
    client: &str,
    index: &str,
    revoked: bool,
) -> Result<(), DbErr> {
    erc8004_feedback::Entity::update_many()
        .col_expr(erc8004_feedback::Column::Revoked, Expr::value(revoked))
        .filter(erc8004_feedback::Column::Chain.eq(chain))
        .filter(erc8004_feedback::Column::AgentId.eq(agent_id))
        .filter(erc8004_feedback::Column::ClientAddress.eq(client))
        .filter(erc8004_feedback::Column::FeedbackIndex.eq(index))
        .exec(db)
        .await?;
    Ok(())
}

const IDENTITY_EVENTS: [&str; 5] = [
    "Transfer",
    "Registered",
    "URIUpdated",
    "UriUpdated",
    "MetadataSet",
];

fn stored(m: &evm_event::Model) -> Option<EventRow> {
    Some(EventRow {
        block_number: u64::try_from(m.block_number).ok()?,
        block_hash: m.block_hash.clone(),
        tx_hash: m.tx_hash.clone(),
        log_index: u64::try_from(m.log_index).ok()?,
        contract: m.contract.clone(),
        event: Erc8004Event::from_name_args(&m.name, &m.args)?,
    })
}

/// Deletes everything of `chain` above block `above` (events, projections, headers) and
/// rebuilds the projection rows the orphaned events had changed from the canonical events
/// that remain. Returns the number of orphaned events.
pub async fn rollback<C: ConnectionTrait>(db: &C, chain: &str, above: i64) -> Result<u64, DbErr> {
    let orphaned = evm_event::Entity::find()
        .filter(evm_event::Column::Chain.eq(chain))
        .filter(evm_event::Column::BlockNumber.gt(above))
        .all(db)
        .await?;
    let mut agents: BTreeSet<String> = BTreeSet::new();
    let mut requests: BTreeSet<String> = BTreeSet::new();
    for m in &orphaned {
        match stored(m).map(|r| r.event) {
            Some(Erc8004Event::Transfer(t)) => {
                agents.insert(t.token_id);
            }
            Some(Erc8004Event::UriUpdated(u)) | Some(Erc8004Event::LegacyUriUpdated(u)) => {
                agents.insert(u.agent_id);
            }
            Some(Erc8004Event::MetadataSet(x)) => {
                agents.insert(x.agent_id);
            }
            Some(Erc8004Event::FeedbackRevoked(r)) => {
                set_revoked(
                    db,
                    chain,
                    &r.agent_id,
                    &r.client_address,
                    &r.feedback_index,
                    false,
                )
                .await?;
            }
            Some(Erc8004Event::ValidationResponse(v)) => {
                requests.insert(v.request_hash);
            }
            _ => {}
        }
    }
    evm_event::Entity::delete_many()
        .filter(evm_event::Column::Chain.eq(chain))
        .filter(evm_event::Column::BlockNumber.gt(above))
        .exec(db)
        .await?;
    erc8004_feedback::Entity::delete_many()
        .filter(erc8004_feedback::Column::Chain.eq(chain))
        .filter(erc8004_feedback::Column::BlockNumber.gt(above))
        .exec(db)
        .await?;
    erc8004_validation::Entity::delete_many()
        .filter(erc8004_validation::Column::Chain.eq(chain))
        .filter(erc8004_validation::Column::RequestedBlock.gt(above))
        .exec(db)
        .await?;
    erc8004_agent::Entity::delete_many()
        .filter(erc8004_agent::Column::Chain.eq(chain))
        .filter(erc8004_agent::Column::RegisteredBlock.gt(above))
        .exec(db)
        .await?;
    evm_block::Entity::delete_many()
        .filter(evm_block::Column::Chain.eq(chain))
        .filter(evm_block::Column::Number.gt(above))
        .exec(db)
        .await?;

    rebuild_agents(db, chain, &agents).await?;
    rebuild_validations(db, chain, &requests).await?;
    Ok(orphaned.len() as u64)
}

/// The agents and validation requests whose projection rows depend on the order of
/// `rows`' events (owner, URI, metadata; a validation's response), to be rebuilt from the
/// stored events rather than folded onto newer state.
pub fn order_dependent_keys(rows: &[EventRow]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut agents = BTreeSet::new();
    let mut requests = BTreeSet::new();
    for r in rows {
        if let Some(id) = identity_agent(&r.event) {
            agents.insert(id.clone());
        }
        match &r.event {
            Erc8004Event::ValidationRequest(v) => {
                requests.insert(v.request_hash.clone());
            }
            Erc8004Event::ValidationResponse(v) => {
                requests.insert(v.request_hash.clone());
            }
            _ => {}
        }
    }
    (agents, requests)
}

/// Rebuilds the agent rows of `agents` on `chain` from the stored identity events, in
/// block and log order (after a reorg removed some, or a replay added one out of order).
pub async fn rebuild_agents<C: ConnectionTrait>(
    db: &C,
    chain: &str,
    agents: &BTreeSet<String>,
) -> Result<(), DbErr> {
    if agents.is_empty() {
        return Ok(());
    }
    {
        erc8004_agent::Entity::delete_many()
            .filter(erc8004_agent::Column::Chain.eq(chain))
            .filter(erc8004_agent::Column::AgentId.is_in(agents.iter().cloned()))
            .exec(db)
            .await?;
        let history = evm_event::Entity::find()
            .filter(evm_event::Column::Chain.eq(chain))
            .filter(evm_event::Column::Name.is_in(IDENTITY_EVENTS))
            .order_by_asc(evm_event::Column::BlockNumber)
            .order_by_asc(evm_event::Column::LogIndex)
            .all(db)
            .await?;
        let replay: Vec<EventRow> = history
            .iter()
            .filter_map(stored)
            .filter(|row| identity_agent(&row.event).is_some_and(|id| agents.contains(id)))
            .collect();
        project_batch(db, chain, &replay, Utc::now()).await?;
    }
    Ok(())
}

/// Rebuilds the validation rows of `requests` on `chain` from the stored request and
/// response events, in block and log order.
pub async fn rebuild_validations<C: ConnectionTrait>(
    db: &C,
    chain: &str,
    requests: &BTreeSet<String>,
) -> Result<(), DbErr> {
    if requests.is_empty() {
        return Ok(());
    }
    {
        // A validation whose response was orphaned is rebuilt from its canonical events
        // (request, then any remaining response), like agents above: resetting only the
        // response columns would keep the orphaned response's `tx_hash`.
        let reset: HashSet<String> = requests.iter().cloned().collect();
        erc8004_validation::Entity::delete_many()
            .filter(erc8004_validation::Column::Chain.eq(chain))
            .filter(erc8004_validation::Column::RequestHash.is_in(reset.iter().cloned()))
            .exec(db)
            .await?;
        let history = evm_event::Entity::find()
            .filter(evm_event::Column::Chain.eq(chain))
            .filter(evm_event::Column::Name.is_in(["ValidationRequest", "ValidationResponse"]))
            .order_by_asc(evm_event::Column::BlockNumber)
            .order_by_asc(evm_event::Column::LogIndex)
            .all(db)
            .await?;
        let replay: Vec<EventRow> = history
            .iter()
            .filter_map(stored)
            .filter(|row| match &row.event {
                Erc8004Event::ValidationRequest(v) => reset.contains(&v.request_hash),
                Erc8004Event::ValidationResponse(v) => reset.contains(&v.request_hash),
                _ => false,
            })
            .collect();
        project_batch(db, chain, &replay, Utc::now()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::decode::{
        FeedbackRevokedArgs, NewFeedbackArgs, RegisteredArgs, TransferArgs, UriUpdatedArgs,
        ValidationRequestArgs, ValidationResponseArgs,
    };
    use orrery_migration::{Migrator, MigratorTrait};
    use sea_orm::{Database, PaginatorTrait};

    const OWNER: &str = "0x1111111111111111111111111111111111111111";
    const CLIENT: &str = "0x2222222222222222222222222222222222222222";

    fn row(block: u64, log_index: u64, event: Erc8004Event) -> EventRow {
        EventRow {
            block_number: block,
            block_hash: format!("0x{block:064x}"),
            tx_hash: format!("0x{:064x}", block * 100 + log_index),
            log_index,
            contract: "0x8004".into(),
            event,
        }
    }

    fn feedback(index: Option<&str>, score: Option<u8>) -> Erc8004Event {
        Erc8004Event::NewFeedback(NewFeedbackArgs {
            agent_id: "1".into(),
            client_address: CLIENT.into(),
            feedback_index: index.map(str::to_owned),
            value: index.map(|_| "-7".to_owned()),
            value_decimals: index.map(|_| 0),
            score,
            indexed_tag1: None,
            tag1: "speed".into(),
            tag2: String::new(),
            endpoint: String::new(),
            feedback_uri: "ipfs://f".into(),
            feedback_hash: format!("0x{:064x}", 0),
            legacy: score.is_some(),
        })
    }

    async fn apply(db: &sea_orm::DatabaseConnection, rows: &[EventRow]) {
        insert_events(db, "c", rows).await.unwrap();
        project_batch(db, "c", rows, Utc::now()).await.unwrap();
    }

    #[tokio::test]
    async fn rolling_back_the_only_response_restores_the_request_row() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let request = row(
            10,
            0,
            Erc8004Event::ValidationRequest(ValidationRequestArgs {
                validator_address: OWNER.into(),
                agent_id: "1".into(),
                request_uri: "ipfs://r".into(),
                request_hash: "0xab".into(),
            }),
        );
        apply(&db, std::slice::from_ref(&request)).await;
        let before = erc8004_validation::Entity::find()
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        let response = row(
            12,
            0,
            Erc8004Event::ValidationResponse(ValidationResponseArgs {
                validator_address: OWNER.into(),
                agent_id: "1".into(),
                request_hash: "0xab".into(),
                response: 7,
                response_uri: "ipfs://v".into(),
                response_hash: "0x01".into(),
                tag: "t".into(),
            }),
        );
        apply(&db, &[response]).await;
        rollback(&db, "c", 11).await.unwrap();
        let after = erc8004_validation::Entity::find()
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        // Everything as before the orphaned response, its transaction hash included.
        assert_eq!(before.tx_hash, request.tx_hash);
        assert_eq!(
            erc8004_validation::Model { id: 0, ..after },
            erc8004_validation::Model { id: 0, ..before }
        );
    }

    #[tokio::test]
    async fn projections_follow_events_and_rollback_restores_them() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let uri = |u: &str| {
            Erc8004Event::UriUpdated(UriUpdatedArgs {
                agent_id: "1".into(),
                new_uri: u.into(),
                updated_by: OWNER.into(),
            })
        };
        let canonical = vec![
            row(
                10,
                0,
                Erc8004Event::Transfer(TransferArgs {
                    from: format!("0x{:040x}", 0),
                    to: OWNER.into(),
                    token_id: "1".into(),
                }),
            ),
            row(
                10,
                1,
                Erc8004Event::Registered(RegisteredArgs {
                    agent_id: "1".into(),
                    agent_uri: "ipfs://a".into(),
                    owner: OWNER.into(),
                }),
            ),
            row(11, 0, feedback(None, Some(90))),
            row(11, 1, feedback(Some("2"), None)),
            row(
                12,
                0,
                Erc8004Event::ValidationRequest(ValidationRequestArgs {
                    validator_address: OWNER.into(),
                    agent_id: "1".into(),
                    request_uri: "ipfs://r".into(),
                    request_hash: "0xab".into(),
                }),
            ),
            row(
                12,
                1,
                Erc8004Event::ValidationResponse(ValidationResponseArgs {
                    validator_address: OWNER.into(),
                    agent_id: "1".into(),
                    request_hash: "0xab".into(),
                    response: 40,
                    response_uri: "ipfs://v1".into(),
                    response_hash: "0x01".into(),
                    tag: "t".into(),
                }),
            ),
        ];
        apply(&db, &canonical).await;
        // Applying the same rows again changes nothing (idempotent upserts).
        insert_events(&db, "c", &canonical).await.unwrap();
        assert_eq!(
            evm_event::Entity::find().count(&db).await.unwrap(),
            canonical.len() as u64
        );
        let fb = erc8004_feedback::Entity::find()
            .order_by_asc(erc8004_feedback::Column::Id)
            .all(&db)
            .await
            .unwrap();
        assert_eq!(fb.len(), 2);
        assert_eq!(
            fb[0].feedback_index.as_deref(),
            Some("1"),
            "legacy index is counted"
        );
        assert_eq!(fb[0].score, 90);
        assert_eq!(fb[1].score, -7);

        // Blocks 13..14 are later orphaned.
        let orphan = vec![
            row(13, 0, uri("ipfs://orphan")),
            row(
                13,
                1,
                Erc8004Event::FeedbackRevoked(FeedbackRevokedArgs {
                    agent_id: "1".into(),
                    client_address: CLIENT.into(),
                    feedback_index: "1".into(),
                }),
            ),
            row(
                14,
                0,
                Erc8004Event::ValidationResponse(ValidationResponseArgs {
                    validator_address: OWNER.into(),
                    agent_id: "1".into(),
                    request_hash: "0xab".into(),
                    response: 99,
                    response_uri: "ipfs://v2".into(),
                    response_hash: "0x02".into(),
                    tag: "t2".into(),
                }),
            ),
            row(14, 1, feedback(Some("3"), None)),
        ];
        apply(&db, &orphan).await;
        let agent = erc8004_agent::Entity::find_by_id(("c".to_string(), "1".to_string()))
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(agent.uri.as_deref(), Some("ipfs://orphan"));

        let removed = rollback(&db, "c", 12).await.unwrap();
        assert_eq!(removed, orphan.len() as u64);
        let agent = erc8004_agent::Entity::find_by_id(("c".to_string(), "1".to_string()))
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(agent.uri.as_deref(), Some("ipfs://a"));
        assert_eq!(agent.owner, OWNER);
        assert_eq!(agent.registered_block, 10);
        let fb = erc8004_feedback::Entity::find().all(&db).await.unwrap();
        assert_eq!(fb.len(), 2);
        assert!(fb.iter().all(|f| !f.revoked));
        let v = erc8004_validation::Entity::find()
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.response, Some(40));
        assert_eq!(v.response_uri.as_deref(), Some("ipfs://v1"));
        assert_eq!(v.responded_block, Some(12));
        assert_eq!(
            evm_event::Entity::find().count(&db).await.unwrap(),
            canonical.len() as u64
        );

        // Rolling back below registration removes the agent entirely.
        rollback(&db, "c", 9).await.unwrap();
        assert_eq!(erc8004_agent::Entity::find().count(&db).await.unwrap(), 0);
        assert_eq!(evm_event::Entity::find().count(&db).await.unwrap(), 0);
    }

    /// A synthetic registry history: `n` agents registered, re-pointed, given metadata,
    /// feedback (new and legacy), revocations and validations.
    fn history(n: u64) -> Vec<EventRow> {
        let mut rows = Vec::new();
        let agent = |i: u64| (i % 50 + 1).to_string();
        for i in 0..n {
            let block = 100 + i / 4;
            let li = i % 4;
            let event = match i % 9 {
                0 => Erc8004Event::Transfer(TransferArgs {
                    from: format!("0x{:040x}", 0),
                    to: OWNER.into(),
                    token_id: agent(i),
                }),
                1 => Erc8004Event::Registered(RegisteredArgs {
                    agent_id: agent(i),
                    agent_uri: format!("ipfs://r{i}"),
                    owner: OWNER.into(),
                }),
                2 => Erc8004Event::UriUpdated(UriUpdatedArgs {
                    agent_id: agent(i),
                    new_uri: format!("ipfs://u{i}"),
                    updated_by: OWNER.into(),
                }),
                3 => Erc8004Event::MetadataSet(crate::evm::decode::MetadataSetArgs {
                    agent_id: agent(i),
                    indexed_metadata_key: None,
                    metadata_key: format!("k{}", i % 3),
                    metadata_value: format!("v{i}"),
                }),
                4 => Erc8004Event::NewFeedback(NewFeedbackArgs {
                    agent_id: agent(i),
                    ..match feedback(Some(&i.to_string()), None) {
                        Erc8004Event::NewFeedback(f) => f,
                        _ => unreachable!(),
                    }
                }),
                5 => Erc8004Event::NewFeedback(NewFeedbackArgs {
                    agent_id: agent(i),
                    ..match feedback(None, Some((i % 100) as u8)) {
                        Erc8004Event::NewFeedback(f) => f,
                        _ => unreachable!(),
                    }
                }),
                6 => Erc8004Event::FeedbackRevoked(FeedbackRevokedArgs {
                    agent_id: agent(i - 2),
                    client_address: CLIENT.into(),
                    feedback_index: (i - 2).to_string(),
                }),
                7 => Erc8004Event::ValidationRequest(ValidationRequestArgs {
                    validator_address: OWNER.into(),
                    agent_id: agent(i),
                    request_uri: format!("ipfs://q{i}"),
                    request_hash: format!("0x{:x}", i % 40),
                }),
                _ => Erc8004Event::ValidationResponse(ValidationResponseArgs {
                    validator_address: OWNER.into(),
                    agent_id: agent(i),
                    request_hash: format!("0x{:x}", (i - 1) % 40),
                    response: (i % 100) as u8,
                    response_uri: format!("ipfs://s{i}"),
                    response_hash: "0x01".into(),
                    tag: format!("t{i}"),
                }),
            };
            rows.push(row(block, li, event));
        }
        rows
    }

    async fn tables(db: &sea_orm::DatabaseConnection) -> (Vec<String>, Vec<String>, Vec<String>) {
        let agents = erc8004_agent::Entity::find()
            .order_by_asc(erc8004_agent::Column::AgentId)
            .all(db)
            .await
            .unwrap()
            .into_iter()
            .map(|a| {
                format!(
                    "{} {} {:?} {:?} {} {}",
                    a.agent_id, a.owner, a.uri, a.metadata, a.registered_block, a.updated_block
                )
            })
            .collect();
        let feedback = erc8004_feedback::Entity::find()
            .order_by_asc(erc8004_feedback::Column::TxHash)
            .order_by_asc(erc8004_feedback::Column::LogIndex)
            .all(db)
            .await
            .unwrap()
            .into_iter()
            .map(|f| {
                format!(
                    "{} {:?} {} {}",
                    f.agent_id, f.feedback_index, f.score, f.revoked
                )
            })
            .collect();
        let validations = erc8004_validation::Entity::find()
            .order_by_asc(erc8004_validation::Column::RequestHash)
            .all(db)
            .await
            .unwrap()
            .into_iter()
            .map(|v| {
                format!(
                    "{} {:?} {:?} {:?} {}",
                    v.request_hash, v.response, v.response_uri, v.responded_block, v.tx_hash
                )
            })
            .collect();
        (agents, feedback, validations)
    }

    #[tokio::test]
    async fn a_batch_projects_exactly_like_one_event_at_a_time() {
        let rows = history(900);
        let one = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&one, None).await.unwrap();
        for r in &rows {
            apply(&one, std::slice::from_ref(r)).await;
        }
        let batched = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&batched, None).await.unwrap();
        for chunk in rows.chunks(250) {
            apply(&batched, chunk).await;
        }
        let (a, b) = (tables(&one).await, tables(&batched).await);
        assert!(!a.0.is_empty() && !a.1.is_empty() && !a.2.is_empty());
        assert!(
            a.1.iter().any(|f| f.ends_with("true")),
            "some feedback revoked"
        );
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn statements_per_batch_do_not_grow_with_its_events() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        async fn count(rows: &[EventRow]) -> usize {
            let mut db = Database::connect("sqlite::memory:").await.unwrap();
            Migrator::up(&db, None).await.unwrap();
            // Agents and requests exist beforehand, so every kind of statement runs.
            apply(&db, &history(90)).await;
            let n = Arc::new(AtomicUsize::new(0));
            let seen = n.clone();
            db.set_metric_callback(move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            });
            let txn = sea_orm::TransactionTrait::begin(&db).await.unwrap();
            insert_events(&txn, "c", rows).await.unwrap();
            project_batch(&txn, "c", rows, Utc::now()).await.unwrap();
            txn.commit().await.unwrap();
            n.load(Ordering::SeqCst)
        }
        let small = count(&history(100)[10..]).await;
        let large = count(&history(MAX_BATCH_ROWS as u64)[10..]).await;
        assert!(small > 0);
        assert_eq!(
            small,
            large,
            "statements for 90 events vs {}",
            MAX_BATCH_ROWS - 10
        );
    }
}
