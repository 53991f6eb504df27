//! Database writes of the EVM source: generic events, block headers, the ERC-8004
//! projections (agents, feedback, validations), and the rollback of orphaned blocks.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use orrery_entity::{erc8004_agent, erc8004_feedback, erc8004_validation, evm_block, evm_event};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, Set,
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

const INSERT_CHUNK: usize = 400;

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
    for chunk in rows.chunks(INSERT_CHUNK) {
        let models = chunk.iter().map(|r| {
            let (name, args) = r.event.to_name_args();
            evm_event::ActiveModel {
                chain: Set(chain.to_string()),
                block_number: Set(i64_of(r.block_number)),
                block_hash: Set(r.block_hash.clone()),
                tx_hash: Set(r.tx_hash.clone()),
                log_index: Set(i32::try_from(r.log_index).unwrap_or(i32::MAX)),
                contract: Set(r.contract.clone()),
                name: Set(name),
                args: Set(args),
                created_at: Set(now),
                ..Default::default()
            }
        });
        evm_event::Entity::insert_many(models)
            .on_conflict(
                OnConflict::columns([
                    evm_event::Column::Chain,
                    evm_event::Column::BlockHash,
                    evm_event::Column::LogIndex,
                ])
                .do_nothing()
                .to_owned(),
            )
            .try_insert()
            .exec(db)
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
    for chunk in headers.chunks(INSERT_CHUNK) {
        let models = chunk.iter().map(|h| evm_block::ActiveModel {
            chain: Set(chain.to_string()),
            number: Set(i64_of(h.number)),
            hash: Set(format!("{:#x}", h.hash)),
            parent_hash: Set(format!("{:#x}", h.parent_hash)),
            timestamp: Set(DateTime::from_timestamp(i64_of(h.timestamp), 0).unwrap_or_default()),
        });
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
            .try_insert()
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Applies one event to the ERC-8004 tables.
pub async fn project<C: ConnectionTrait>(
    db: &C,
    chain: &str,
    row: &EventRow,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let block = i64_of(row.block_number);
    let agent_pk = |id: &str| (chain.to_string(), id.to_string());
    match &row.event {
        Erc8004Event::Transfer(t) => {
            let zero = t.from.trim_start_matches("0x").bytes().all(|b| b == b'0');
            if zero {
                let am = erc8004_agent::ActiveModel {
                    chain: Set(chain.to_string()),
                    agent_id: Set(t.token_id.clone()),
                    owner: Set(t.to.clone()),
                    uri: Set(None),
                    metadata: Set(None),
                    registered_block: Set(block),
                    updated_block: Set(block),
                    updated_at: Set(at),
                };
                erc8004_agent::Entity::insert(am)
                    .on_conflict(
                        OnConflict::columns([
                            erc8004_agent::Column::Chain,
                            erc8004_agent::Column::AgentId,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .try_insert()
                    .exec(db)
                    .await?;
            } else {
                update_agent(db, chain, &t.token_id, block, at, |am| {
                    am.owner = Set(t.to.clone());
                })
                .await?;
            }
        }
        Erc8004Event::Registered(r) => {
            match erc8004_agent::Entity::find_by_id(agent_pk(&r.agent_id))
                .one(db)
                .await?
            {
                Some(m) => {
                    let mut am: erc8004_agent::ActiveModel = m.into();
                    am.owner = Set(r.owner.clone());
                    am.uri = Set(Some(r.agent_uri.clone()));
                    am.updated_block = Set(block);
                    am.updated_at = Set(at);
                    am.update(db).await?;
                }
                None => {
                    erc8004_agent::ActiveModel {
                        chain: Set(chain.to_string()),
                        agent_id: Set(r.agent_id.clone()),
                        owner: Set(r.owner.clone()),
                        uri: Set(Some(r.agent_uri.clone())),
                        metadata: Set(None),
                        registered_block: Set(block),
                        updated_block: Set(block),
                        updated_at: Set(at),
                    }
                    .insert(db)
                    .await?;
                }
            }
        }
        Erc8004Event::UriUpdated(u) | Erc8004Event::LegacyUriUpdated(u) => {
            update_agent(db, chain, &u.agent_id, block, at, |am| {
                am.uri = Set(Some(u.new_uri.clone()));
            })
            .await?;
        }
        Erc8004Event::MetadataSet(m) => {
            if let Some(agent) = erc8004_agent::Entity::find_by_id(agent_pk(&m.agent_id))
                .one(db)
                .await?
            {
                let mut meta = match agent.metadata.clone() {
                    Some(serde_json::Value::Object(o)) => o,
                    _ => serde_json::Map::new(),
                };
                meta.insert(
                    m.metadata_key.clone(),
                    serde_json::Value::String(m.metadata_value.clone()),
                );
                let mut am: erc8004_agent::ActiveModel = agent.into();
                am.metadata = Set(Some(serde_json::Value::Object(meta)));
                am.updated_block = Set(block);
                am.updated_at = Set(at);
                am.update(db).await?;
            } else {
                tracing::debug!(chain, agent = %m.agent_id, "MetadataSet for an unknown agent");
            }
        }
        Erc8004Event::NewFeedback(f) => {
            let index = match &f.feedback_index {
                Some(i) => i.clone(),
                // Legacy logs carry no index: the registry numbers feedback per client from 1.
                None => (erc8004_feedback::Entity::find()
                    .filter(erc8004_feedback::Column::Chain.eq(chain))
                    .filter(erc8004_feedback::Column::AgentId.eq(f.agent_id.clone()))
                    .filter(erc8004_feedback::Column::ClientAddress.eq(f.client_address.clone()))
                    .count(db)
                    .await?
                    + 1)
                .to_string(),
            };
            let score = match (&f.value, f.score) {
                (_, Some(s)) => i32::from(s),
                (Some(v), None) => v
                    .parse::<i128>()
                    .map(|v| v.clamp(i32::MIN as i128, i32::MAX as i128) as i32)
                    .unwrap_or(0),
                (None, None) => 0,
            };
            let am = erc8004_feedback::ActiveModel {
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
                log_index: Set(i32::try_from(row.log_index).unwrap_or(i32::MAX)),
                ..Default::default()
            };
            erc8004_feedback::Entity::insert(am)
                .on_conflict(
                    OnConflict::columns([
                        erc8004_feedback::Column::Chain,
                        erc8004_feedback::Column::TxHash,
                        erc8004_feedback::Column::LogIndex,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .try_insert()
                .exec(db)
                .await?;
        }
        Erc8004Event::FeedbackRevoked(r) => {
            set_revoked(
                db,
                chain,
                &r.agent_id,
                &r.client_address,
                &r.feedback_index,
                true,
            )
            .await?;
        }
        Erc8004Event::ResponseAppended(_) => {}
        Erc8004Event::ValidationRequest(v) => {
            let am = erc8004_validation::ActiveModel {
                chain: Set(chain.to_string()),
                request_hash: Set(v.request_hash.clone()),
                agent_id: Set(v.agent_id.clone()),
                validator_address: Set(v.validator_address.clone()),
                request_uri: Set(Some(v.request_uri.clone())),
                response: Set(None),
                response_uri: Set(None),
                tag: Set(None),
                requested_block: Set(block),
                responded_block: Set(None),
                tx_hash: Set(row.tx_hash.clone()),
                ..Default::default()
            };
            erc8004_validation::Entity::insert(am)
                .on_conflict(
                    OnConflict::columns([
                        erc8004_validation::Column::Chain,
                        erc8004_validation::Column::RequestHash,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .try_insert()
                .exec(db)
                .await?;
        }
        Erc8004Event::ValidationResponse(v) => {
            erc8004_validation::Entity::update_many()
                .col_expr(
                    erc8004_validation::Column::Response,
                    Expr::value(i32::from(v.response)),
                )
                .col_expr(
                    erc8004_validation::Column::ResponseUri,
                    Expr::value(v.response_uri.clone()),
                )
                .col_expr(erc8004_validation::Column::Tag, Expr::value(v.tag.clone()))
                .col_expr(
                    erc8004_validation::Column::RespondedBlock,
                    Expr::value(block),
                )
                .col_expr(
                    erc8004_validation::Column::TxHash,
                    Expr::value(row.tx_hash.clone()),
                )
                .filter(erc8004_validation::Column::Chain.eq(chain))
                .filter(erc8004_validation::Column::RequestHash.eq(v.request_hash.clone()))
                .exec(db)
                .await?;
        }
    }
    Ok(())
}

async fn update_agent<C: ConnectionTrait>(
    db: &C,
    chain: &str,
    agent_id: &str,
    block: i64,
    at: DateTime<Utc>,
    change: impl FnOnce(&mut erc8004_agent::ActiveModel),
) -> Result<(), DbErr> {
    let Some(m) = erc8004_agent::Entity::find_by_id((chain.to_string(), agent_id.to_string()))
        .one(db)
        .await?
    else {
        tracing::debug!(chain, agent = agent_id, "update for an unknown agent");
        return Ok(());
    };
    let mut am: erc8004_agent::ActiveModel = m.into();
    change(&mut am);
    am.updated_block = Set(block);
    am.updated_at = Set(at);
    am.update(db).await?;
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

    if !agents.is_empty() {
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
        for m in &history {
            let Some(row) = stored(m) else { continue };
            let id = match &row.event {
                Erc8004Event::Transfer(t) => &t.token_id,
                Erc8004Event::Registered(r) => &r.agent_id,
                Erc8004Event::UriUpdated(u) | Erc8004Event::LegacyUriUpdated(u) => &u.agent_id,
                Erc8004Event::MetadataSet(x) => &x.agent_id,
                _ => continue,
            };
            if agents.contains(id) {
                project(db, chain, &row, m.created_at).await?;
            }
        }
    }
    if !requests.is_empty() {
        let reset: HashSet<String> = requests.iter().cloned().collect();
        erc8004_validation::Entity::update_many()
            .col_expr(
                erc8004_validation::Column::Response,
                Expr::value(Option::<i32>::None),
            )
            .col_expr(
                erc8004_validation::Column::ResponseUri,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                erc8004_validation::Column::Tag,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                erc8004_validation::Column::RespondedBlock,
                Expr::value(Option::<i64>::None),
            )
            .filter(erc8004_validation::Column::Chain.eq(chain))
            .filter(erc8004_validation::Column::RequestHash.is_in(reset.iter().cloned()))
            .exec(db)
            .await?;
        let history = evm_event::Entity::find()
            .filter(evm_event::Column::Chain.eq(chain))
            .filter(evm_event::Column::Name.eq("ValidationResponse"))
            .order_by_asc(evm_event::Column::BlockNumber)
            .order_by_asc(evm_event::Column::LogIndex)
            .all(db)
            .await?;
        for m in &history {
            let Some(row) = stored(m) else { continue };
            if let Erc8004Event::ValidationResponse(v) = &row.event {
                if reset.contains(&v.request_hash) {
                    project(db, chain, &row, m.created_at).await?;
                }
            }
        }
    }
    Ok(orphaned.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::decode::{
        FeedbackRevokedArgs, NewFeedbackArgs, RegisteredArgs, TransferArgs, UriUpdatedArgs,
        ValidationRequestArgs, ValidationResponseArgs,
    };
    use orrery_migration::{Migrator, MigratorTrait};
    use sea_orm::Database;

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
        for r in rows {
            project(db, "c", r, Utc::now()).await.unwrap();
        }
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
}
