//! EVM / ERC-8004 queries and subscriptions: agents with their feedback and validations,
//! the generic event table, and live events, blocks and reorgs from the bus.

use async_graphql::{ComplexObject, Context, Json, Object, Result, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures::Stream;
use orrery_entity::{erc8004_agent, erc8004_feedback, erc8004_validation, evm_event};
use orrery_indexer::bus::{payload, topics, Payload};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::Deserialize;

use super::context::{page_args, state};
use super::error::{bad_input, internal, not_found};
use super::pagination::{keyset_page, Dir, Keyset, ListOrder, Page};
use super::subscription::bus_stream;

/// Queries over indexed ERC-8004 registries and EVM events.
#[derive(Default)]
pub struct EvmQuery;

/// Live EVM events, blocks and reorgs.
#[derive(Default)]
pub struct EvmSubscription;

/// An ERC-8004 agent (IdentityRegistry).
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Agent {
    /// Chain name.
    pub chain: String,
    /// Agent id (uint256 as a decimal string).
    pub agent_id: String,
    /// Current owner address.
    pub owner: String,
    /// Registration file URI.
    pub uri: Option<String>,
    /// On-chain metadata entries (key to 0x hex value).
    pub metadata: Option<Json<serde_json::Value>>,
    /// Block of registration.
    pub registered_block: i64,
    /// Block of the last change.
    pub updated_block: i64,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<erc8004_agent::Model> for Agent {
    fn from(m: erc8004_agent::Model) -> Self {
        Self {
            chain: m.chain,
            agent_id: m.agent_id,
            owner: m.owner,
            uri: m.uri,
            metadata: m.metadata.map(Json),
            registered_block: m.registered_block,
            updated_block: m.updated_block,
            updated_at: m.updated_at,
        }
    }
}

/// Feedback given to an agent (ReputationRegistry).
#[derive(SimpleObject, Clone, Debug)]
pub struct Feedback {
    /// Row id.
    pub id: i64,
    /// Chain name.
    pub chain: String,
    /// Agent id.
    pub agent_id: String,
    /// Client address.
    pub client_address: String,
    /// Feedback index per client.
    pub feedback_index: Option<String>,
    /// Score (legacy uint8 score, or the int128 value of current deployments).
    pub score: i32,
    /// First tag (legacy logs: its keccak256).
    pub tag1: Option<String>,
    /// Second tag.
    pub tag2: Option<String>,
    /// Feedback file URI.
    pub uri: Option<String>,
    /// Feedback file hash.
    pub file_hash: Option<String>,
    /// Revoked by the client.
    pub revoked: bool,
    /// Block.
    pub block_number: i64,
    /// Transaction hash.
    pub tx_hash: String,
    /// Log index.
    pub log_index: i32,
}

impl From<erc8004_feedback::Model> for Feedback {
    fn from(m: erc8004_feedback::Model) -> Self {
        Self {
            id: m.id,
            chain: m.chain,
            agent_id: m.agent_id,
            client_address: m.client_address,
            feedback_index: m.feedback_index,
            score: m.score,
            tag1: m.tag1,
            tag2: m.tag2,
            uri: m.uri,
            file_hash: m.file_hash,
            revoked: m.revoked,
            block_number: m.block_number,
            tx_hash: m.tx_hash,
            log_index: m.log_index,
        }
    }
}

/// A validation request and its response (ValidationRegistry).
#[derive(SimpleObject, Clone, Debug)]
pub struct Validation {
    /// Row id.
    pub id: i64,
    /// Chain name.
    pub chain: String,
    /// Request hash.
    pub request_hash: String,
    /// Agent id.
    pub agent_id: String,
    /// Validator address.
    pub validator_address: String,
    /// Request URI.
    pub request_uri: Option<String>,
    /// Response (0..=100), once given.
    pub response: Option<i32>,
    /// Response URI.
    pub response_uri: Option<String>,
    /// Response tag.
    pub tag: Option<String>,
    /// Block of the request.
    pub requested_block: i64,
    /// Block of the response.
    pub responded_block: Option<i64>,
    /// Transaction of the latest event.
    pub tx_hash: String,
}

impl From<erc8004_validation::Model> for Validation {
    fn from(m: erc8004_validation::Model) -> Self {
        Self {
            id: m.id,
            chain: m.chain,
            request_hash: m.request_hash,
            agent_id: m.agent_id,
            validator_address: m.validator_address,
            request_uri: m.request_uri,
            response: m.response,
            response_uri: m.response_uri,
            tag: m.tag,
            requested_block: m.requested_block,
            responded_block: m.responded_block,
            tx_hash: m.tx_hash,
        }
    }
}

/// One decoded contract event.
#[derive(SimpleObject, Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvmEvent {
    /// Row id (keyset cursor; absent from bus payloads).
    #[graphql(skip)]
    #[serde(default)]
    pub id: i64,
    /// Chain name.
    pub chain: String,
    /// Block number.
    pub block_number: i64,
    /// Block hash.
    pub block_hash: String,
    /// Transaction hash.
    pub tx_hash: String,
    /// Log index in the block.
    pub log_index: i64,
    /// Emitting contract.
    pub contract: String,
    /// Event name, e.g. `Registered`.
    pub name: String,
    /// Decoded arguments (uint256 as decimal strings; an indexed string/bytes parameter such as
    /// `indexedTag1` as its keccak256 topic hash, 0x hex).
    pub args: Json<serde_json::Value>,
}

impl From<evm_event::Model> for EvmEvent {
    fn from(m: evm_event::Model) -> Self {
        Self {
            id: m.id,
            chain: m.chain,
            block_number: m.block_number,
            block_hash: m.block_hash,
            tx_hash: m.tx_hash,
            log_index: i64::from(m.log_index),
            contract: m.contract,
            name: m.name,
            args: Json(m.args),
        }
    }
}

impl From<payload::EvmEventIndexed> for EvmEvent {
    fn from(p: payload::EvmEventIndexed) -> Self {
        Self {
            id: 0,
            chain: p.chain,
            block_number: p.block_number,
            block_hash: p.block_hash,
            tx_hash: p.tx_hash,
            log_index: p.log_index,
            contract: p.contract,
            name: p.name,
            args: Json(p.args),
        }
    }
}

impl From<payload::EvmBlockIndexed> for EvmBlockIndexed {
    fn from(p: payload::EvmBlockIndexed) -> Self {
        Self {
            chain: p.chain,
            from_block: p.from_block,
            number: p.number,
            hash: p.hash,
            parent_hash: p.parent_hash,
            timestamp: p.timestamp,
            events: p.events,
        }
    }
}

impl From<payload::Reorg> for EvmReorg {
    fn from(p: payload::Reorg) -> Self {
        Self {
            chain: p.chain,
            from_block: p.from_block,
            depth: p.depth,
            orphaned_events: p.orphaned_events,
        }
    }
}

/// EVM blocks committed by one indexing step.
#[derive(SimpleObject, Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvmBlockIndexed {
    /// Chain name.
    pub chain: String,
    /// First block of the step.
    pub from_block: i64,
    /// Last block of the step.
    pub number: i64,
    /// Hash of the last block.
    pub hash: String,
    /// Parent hash of the last block.
    pub parent_hash: String,
    /// Unix timestamp of the last block.
    pub timestamp: i64,
    /// Events committed by the step.
    pub events: i64,
}

/// A chain reorganisation that was rolled back.
#[derive(SimpleObject, Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvmReorg {
    /// Chain name.
    pub chain: String,
    /// First block whose rows were removed (re-indexed from the new branch).
    pub from_block: i64,
    /// Blocks rolled back.
    pub depth: i64,
    /// Events removed with the orphaned blocks.
    #[serde(default)]
    pub orphaned_events: i64,
}

#[ComplexObject]
impl Agent {
    /// Feedback given to this agent, oldest first.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn feedback(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<Feedback>> {
        let args = page_args(ctx, first, after)?;
        let base = erc8004_feedback::Entity::find()
            .filter(erc8004_feedback::Column::Chain.eq(self.chain.clone()))
            .filter(erc8004_feedback::Column::AgentId.eq(self.agent_id.clone()));
        let key = Keyset::by(
            erc8004_feedback::Column::Id,
            Dir::Asc,
            |m: &erc8004_feedback::Model| m.id,
        );
        keyset_page(ctx, base, &key, args, "feedback").await
    }

    /// Validation requests about this agent (with responses), oldest first.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn validations(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<Validation>> {
        let args = page_args(ctx, first, after)?;
        let base = erc8004_validation::Entity::find()
            .filter(erc8004_validation::Column::Chain.eq(self.chain.clone()))
            .filter(erc8004_validation::Column::AgentId.eq(self.agent_id.clone()));
        let key = Keyset::by(
            erc8004_validation::Column::Id,
            Dir::Asc,
            |m: &erc8004_validation::Model| m.id,
        );
        keyset_page(ctx, base, &key, args, "validations").await
    }
}

#[Object]
impl EvmQuery {
    /// ERC-8004 agents of a chain in agent-id order.
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn agents(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Chain name, e.g. `sepolia`.")] chain: String,
        #[graphql(desc = "Only agents owned by this address (0x hex, any case).")] owner: Option<
            String,
        >,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<Agent>> {
        let args = page_args(ctx, first, after)?;
        let mut base =
            erc8004_agent::Entity::find().filter(erc8004_agent::Column::Chain.eq(chain.clone()));
        if let Some(o) = &owner {
            base = base.filter(erc8004_agent::Column::Owner.eq(o.to_ascii_lowercase()));
        }
        // Agent ids are decimal strings: numeric order is shorter first, then by text.
        let key = Keyset::by(
            Expr::cust("LENGTH(agent_id)"),
            Dir::Asc,
            |m: &erc8004_agent::Model| m.agent_id.len() as i64,
        )
        .then(erc8004_agent::Column::AgentId, Dir::Asc, |m| {
            m.agent_id.clone()
        });
        keyset_page(ctx, base, &key, args, "agents").await
    }

    /// One agent, with its feedback and validations.
    async fn agent(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Chain name, e.g. `sepolia`.")] chain: String,
        #[graphql(desc = "Agent id (decimal).")] agent_id: String,
    ) -> Result<Agent> {
        erc8004_agent::Entity::find_by_id((chain.clone(), agent_id.clone()))
            .one(&state(ctx).db)
            .await
            .map_err(|e| internal("reading an agent", e))?
            .map(Agent::from)
            .ok_or_else(|| not_found(format!("agent {agent_id} on {chain}")))
    }

    /// Decoded contract events in the order they were indexed (chain order per chain), oldest
    /// first unless `order: NEWEST_FIRST`.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "crate::graphql::limits::connection_cost(first, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Chain name; all chains when omitted.")] chain: Option<String>,
        #[graphql(desc = "Contract address (0x hex, any case).")] contract: Option<String>,
        #[graphql(desc = "Event name, e.g. `NewFeedback`.")] name: Option<String>,
        #[graphql(desc = "Lowest block number (inclusive).")] from_block: Option<i64>,
        #[graphql(desc = "Highest block number (inclusive).")] to_block: Option<i64>,
        #[graphql(desc = "OLDEST_FIRST (default) or NEWEST_FIRST.", default)] order: ListOrder,
        #[graphql(desc = "Page size (at most graphql.max_page_size).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> Result<Page<EvmEvent>> {
        let args = page_args(ctx, first, after)?;
        if let (Some(f), Some(t)) = (from_block, to_block) {
            if f > t {
                return Err(bad_input("fromBlock", "must not exceed toBlock"));
            }
        }
        let mut base = evm_event::Entity::find();
        if let Some(c) = chain {
            base = base.filter(evm_event::Column::Chain.eq(c));
        }
        if let Some(c) = contract {
            base = base.filter(evm_event::Column::Contract.eq(c.to_ascii_lowercase()));
        }
        if let Some(n) = name {
            base = base.filter(evm_event::Column::Name.eq(n));
        }
        if let Some(f) = from_block {
            base = base.filter(evm_event::Column::BlockNumber.gte(f));
        }
        if let Some(t) = to_block {
            base = base.filter(evm_event::Column::BlockNumber.lte(t));
        }
        let key = Keyset::by(
            evm_event::Column::Id,
            order.dir(),
            |m: &evm_event::Model| m.id,
        );
        keyset_page(ctx, base, &key, args, "events").await
    }
}

#[Subscription]
impl EvmSubscription {
    /// Events as they are committed (head following; during a large backfill only
    /// `blockIndexed` is published per step).
    async fn event_indexed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this chain.")] chain: Option<String>,
        #[graphql(desc = "Only this contract (0x hex, any case).")] contract: Option<String>,
        #[graphql(desc = "Only this event name.")] name: Option<String>,
    ) -> impl Stream<Item = async_graphql::Result<EvmEvent>> {
        let contract = contract.map(|c| c.to_ascii_lowercase());
        bus_stream(ctx, topics::EVM_EVENT, move |e| {
            let Payload::EvmEvent(ev) = e.payload else {
                return None;
            };
            let ev = EvmEvent::from(ev);
            let keep = chain.as_ref().is_none_or(|c| *c == ev.chain)
                && contract.as_ref().is_none_or(|c| *c == ev.contract)
                && name.as_ref().is_none_or(|n| *n == ev.name);
            keep.then_some(ev)
        })
    }

    /// Blocks as they are committed (one notification per indexing step).
    async fn block_indexed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this chain.")] chain: Option<String>,
    ) -> impl Stream<Item = async_graphql::Result<EvmBlockIndexed>> {
        bus_stream(ctx, topics::EVM_BLOCK, move |e| {
            let Payload::EvmBlock(b) = e.payload else {
                return None;
            };
            let b = EvmBlockIndexed::from(b);
            chain.as_ref().is_none_or(|c| *c == b.chain).then_some(b)
        })
    }

    /// Chain reorganisations rolled back by an EVM source.
    async fn reorg(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this chain.")] chain: Option<String>,
    ) -> impl Stream<Item = async_graphql::Result<EvmReorg>> {
        bus_stream(ctx, topics::REORG, move |e| {
            let Payload::Reorg(r) = e.payload else {
                return None;
            };
            let r = EvmReorg::from(r);
            chain.as_ref().is_none_or(|c| *c == r.chain).then_some(r)
        })
    }
}
