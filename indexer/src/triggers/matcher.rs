//! Matching committed events against enabled triggers and queueing their actions in the same
//! transaction (insert-or-ignore on the idempotency key: exactly one row per trigger and event).

use chrono::Utc;
use orrery_entity::{action_run, evm_event, trigger};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, Set};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::conditions::{self, Condition};
use super::status;
use crate::evm::store::EventRow;

const INSERT_CHUNK: usize = 400;

/// The unique key of an event: `chain:blockHash:logIndex`.
pub fn event_key(chain: &str, block_hash: &str, log_index: u64) -> String {
    format!("{chain}:{block_hash}:{log_index}")
}

/// The idempotency key of the action of `trigger_id` for `event_key`: hex sha256.
pub fn idempotency_key(trigger_id: i64, event_key: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{trigger_id}:{event_key}").as_bytes(),
    ))
}

/// A trigger ready to test events against.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The trigger row.
    pub trigger: trigger::Model,
    /// Its parsed conditions.
    pub conditions: Vec<Condition>,
}

impl Compiled {
    /// Parses the trigger's conditions; None (logged) when they are unusable.
    pub fn new(trigger: trigger::Model) -> Option<Self> {
        match conditions::parse(&trigger.conditions) {
            Ok(conditions) => Some(Self {
                trigger,
                conditions,
            }),
            Err(e) => {
                tracing::warn!(trigger = trigger.id, error = %e, "trigger conditions unusable; skipped");
                None
            }
        }
    }

    /// Whether an event of `contract` named `name` with `args` matches.
    pub fn matches(&self, contract: &str, name: &str, args: &Value) -> bool {
        self.trigger.enabled
            && self.trigger.event_name == name
            && self
                .trigger
                .contract
                .as_deref()
                .is_none_or(|c| c.eq_ignore_ascii_case(contract))
            && conditions::all_hold(&self.conditions, args)
    }
}

/// Queues one action per (enabled trigger of `chain`, matching event) inside `db` (the events'
/// transaction). Returns the number of rows newly queued.
pub async fn enqueue_matches<C: ConnectionTrait>(
    db: &C,
    chain: &str,
    rows: &[EventRow],
) -> Result<u64, DbErr> {
    if rows.is_empty() {
        return Ok(0);
    }
    let triggers: Vec<Compiled> = trigger::Entity::find()
        .filter(trigger::Column::Chain.eq(chain))
        .filter(trigger::Column::Enabled.eq(true))
        .all(db)
        .await?
        .into_iter()
        .filter_map(Compiled::new)
        .collect();
    if triggers.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    let mut queued = Vec::new();
    for row in rows {
        let (name, args) = row.event.to_name_args();
        for t in &triggers {
            if !t.matches(&row.contract, &name, &args) {
                continue;
            }
            let key = event_key(chain, &row.block_hash, row.log_index);
            let idem = idempotency_key(t.trigger.id, &key);
            let payload = json!({
                "trigger": { "id": t.trigger.id, "name": t.trigger.name },
                "event": {
                    "chain": chain,
                    "blockNumber": row.block_number,
                    "blockHash": row.block_hash,
                    "txHash": row.tx_hash,
                    "logIndex": row.log_index,
                    "contract": row.contract,
                    "name": name,
                    "args": args,
                },
                "idempotencyKey": idem,
            });
            queued.push(action_run::ActiveModel {
                trigger_id: Set(t.trigger.id),
                event_key: Set(key),
                idempotency_key: Set(idem),
                payload: Set(payload),
                status: Set(status::PENDING.to_string()),
                attempts: Set(0),
                next_attempt_at: Set(now),
                claimed_by: Set(None),
                claimed_at: Set(None),
                last_error: Set(None),
                response_status: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            });
        }
    }
    let mut inserted = 0u64;
    let mut rest = queued;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(INSERT_CHUNK));
        let chunk = std::mem::replace(&mut rest, tail);
        let res = action_run::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(action_run::Column::IdempotencyKey)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await;
        match res {
            Ok(n) => inserted += n,
            Err(DbErr::RecordNotInserted) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(inserted)
}

/// Dead-letters the queued (not yet running) actions of `chain`'s events above block `above`,
/// inside the reorg's transaction, before the orphaned events are deleted: an event that is
/// no longer canonical is not announced. Returns the number of actions dropped.
pub async fn drop_orphaned<C: ConnectionTrait>(
    db: &C,
    chain: &str,
    above: i64,
) -> Result<u64, DbErr> {
    let orphaned: Vec<(String, i32)> = evm_event::Entity::find()
        .select_only()
        .column(evm_event::Column::BlockHash)
        .column(evm_event::Column::LogIndex)
        .filter(evm_event::Column::Chain.eq(chain))
        .filter(evm_event::Column::BlockNumber.gt(above))
        .into_tuple()
        .all(db)
        .await?;
    let keys: Vec<String> = orphaned
        .iter()
        .map(|(h, i)| event_key(chain, h, u64::try_from(*i).unwrap_or_default()))
        .collect();
    let mut dropped = 0;
    for chunk in keys.chunks(INSERT_CHUNK) {
        dropped += action_run::Entity::update_many()
            .col_expr(action_run::Column::Status, Expr::value(status::DEAD))
            .col_expr(
                action_run::Column::LastError,
                Expr::value("event orphaned by a reorg"),
            )
            .col_expr(action_run::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(action_run::Column::EventKey.is_in(chunk.iter().cloned()))
            .filter(action_run::Column::Status.is_in([status::PENDING, status::FAILED]))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::decode::{Erc8004Event, RegisteredArgs};
    use orrery_migration::{Migrator, MigratorTrait};
    use sea_orm::{ActiveModelTrait, Database, PaginatorTrait};

    fn trigger_row(
        contract: Option<&str>,
        conditions: Value,
        enabled: bool,
    ) -> trigger::ActiveModel {
        let now = Utc::now();
        trigger::ActiveModel {
            name: Set("t".into()),
            chain: Set("c".into()),
            contract: Set(contract.map(str::to_owned)),
            event_name: Set("Registered".into()),
            conditions: Set(conditions),
            sink: Set("webhook".into()),
            webhook_url: Set("http://127.0.0.1:9/".into()),
            secret: Set("s".into()),
            enabled: Set(enabled),
            max_attempts: Set(3),
            failure_threshold: Set(3),
            recovery_secs: Set(1),
            breaker_state: Set("closed".into()),
            breaker_failures: Set(0),
            breaker_opened_at: Set(None),
            breaker_last_error: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
    }

    fn registered(agent: &str, log_index: u64) -> EventRow {
        EventRow {
            block_number: 5,
            block_hash: "0xbb".into(),
            tx_hash: "0xcc".into(),
            log_index,
            contract: "0xAA".into(),
            event: Erc8004Event::Registered(RegisteredArgs {
                agent_id: agent.into(),
                agent_uri: "ipfs://x".into(),
                owner: "0x01".into(),
            }),
        }
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        let k = event_key("c", "0xbb", 1);
        assert_eq!(k, "c:0xbb:1");
        assert_eq!(idempotency_key(1, &k), idempotency_key(1, &k));
        assert_ne!(idempotency_key(1, &k), idempotency_key(2, &k));
        assert_eq!(idempotency_key(1, &k).len(), 64);
    }

    #[tokio::test]
    async fn matching_events_queue_once_per_trigger() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let big = json!([{"field": "agentId", "op": "gt", "value": "10"}]);
        let t1 = trigger_row(Some("0xaa"), big, true)
            .insert(&db)
            .await
            .unwrap();
        let t2 = trigger_row(None, Value::Null, true)
            .insert(&db)
            .await
            .unwrap();
        trigger_row(None, Value::Null, false)
            .insert(&db)
            .await
            .unwrap();
        trigger_row(Some("0xdd"), Value::Null, true)
            .insert(&db)
            .await
            .unwrap();
        let rows = vec![registered("11", 0), registered("3", 1)];
        assert_eq!(enqueue_matches(&db, "c", &rows).await.unwrap(), 3);
        // The same events again (a replayed step) queue nothing new.
        assert_eq!(enqueue_matches(&db, "c", &rows).await.unwrap(), 0);
        assert_eq!(enqueue_matches(&db, "other", &rows).await.unwrap(), 0);
        let runs = action_run::Entity::find().all(&db).await.unwrap();
        assert_eq!(runs.len(), 3);
        let of = |id: i64| runs.iter().filter(|r| r.trigger_id == id).count();
        assert_eq!((of(t1.id), of(t2.id)), (1, 2));
        let r = runs.iter().find(|r| r.trigger_id == t1.id).unwrap();
        assert_eq!(r.event_key, "c:0xbb:0");
        assert_eq!(r.payload["event"]["args"]["agentId"], "11");
        assert_eq!(r.payload["idempotencyKey"], r.idempotency_key.as_str());
        assert_eq!(
            action_run::Entity::find()
                .filter(action_run::Column::Status.eq(status::PENDING))
                .count(&db)
                .await
                .unwrap(),
            3
        );
        // A reorg above block 4 orphans both events: their queued actions are dropped.
        crate::evm::store::insert_events(&db, "c", &rows)
            .await
            .unwrap();
        assert_eq!(drop_orphaned(&db, "c", 5).await.unwrap(), 0);
        assert_eq!(drop_orphaned(&db, "c", 4).await.unwrap(), 3);
        assert_eq!(
            action_run::Entity::find()
                .filter(action_run::Column::Status.eq(status::DEAD))
                .count(&db)
                .await
                .unwrap(),
            3
        );
    }
}
