//! Replaying quarantined records after a fix (`orrery quarantine replay`): each pending
//! record is decoded again from its stored payload with this build's decoders. One that
//! still does not decode keeps its place in the queue with the new error; one that decodes
//! is applied the way its source would have applied it and leaves the queue.
//!
//! What "applied" means depends on what the record feeds:
//! - `stellar.operation` (Horizon): the operation row and the links of its watched
//!   participants are written at once, and a full resync is requested for each of those
//!   accounts: the running server replays their balance history in order, this operation
//!   included.
//! - `evm.log`: the event row is written and the projection rows it touches (the agent, a
//!   validation) are rebuilt from the chain's stored events in block order, as a reorg
//!   rebuilds them; feedback events are folded in directly.
//! - `stellar.transaction` (Horizon, read for a distribution's memo): the transaction row is
//!   written; the next distribution check matches its payments.
//! - `stellar.rpc.event`: balances from token events are running sums held by the source;
//!   one event cannot be added in place without double counting on the next step, so the
//!   replay only reports whether it decodes now (re-derive with a backfill from a clean
//!   cursor; the source's reconciliation names the holders that disagree meanwhile).

use chrono::Utc;
use orrery_entity::{evm_block, quarantine, stellar_account};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, Set, TransactionTrait,
};

use crate::evm::decode::{decode_log, Registry};
use crate::evm::rpc::decode_logs;
use crate::evm::source::LOG_KIND;
use crate::evm::store::{self as evm_store, EventRow};
use crate::stellar::admin;
use crate::stellar::horizon;
use crate::stellar::horizon::{OPERATION_KIND, TRANSACTION_KIND};
use crate::stellar::resync::ResyncMode;
use crate::stellar::rpc::source::EVENT_KIND;
use crate::stellar::store as stellar_store;

/// Why a record could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The stored payload still does not decode (the record stays quarantined).
    #[error("still does not decode: {0}")]
    Decode(String),
    /// The record decodes but cannot be applied (the reason says what to do instead).
    #[error("{0}")]
    NotApplicable(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// What a successful replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// A sentence for the operator.
    pub summary: String,
}

/// Which records to replay.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these ids (all pending records when empty).
    pub ids: Vec<i64>,
    /// Only this source.
    pub source: Option<String>,
}

/// The pending (not yet replayed) records of a selection, oldest first.
pub async fn pending(
    db: &DatabaseConnection,
    sel: &Selection,
) -> Result<Vec<quarantine::Model>, DbErr> {
    let mut q = quarantine::Entity::find().filter(quarantine::Column::ReplayedAt.is_null());
    if !sel.ids.is_empty() {
        q = q.filter(quarantine::Column::Id.is_in(sel.ids.clone()));
    }
    if let Some(s) = &sel.source {
        q = q.filter(quarantine::Column::Source.eq(s.clone()));
    }
    q.order_by_asc(quarantine::Column::Id).all(db).await
}

/// Decodes and applies one record; on success marks it replayed, on failure records why
/// (both in the same transaction as the rows written). With `dry_run` nothing is written.
pub async fn replay_one(
    db: &DatabaseConnection,
    record: &quarantine::Model,
    dry_run: bool,
) -> Result<Applied, ReplayError> {
    let txn = db.begin().await?;
    match apply(&txn, record).await {
        Ok(applied) if dry_run => {
            txn.rollback().await?;
            Ok(applied)
        }
        Ok(applied) => {
            let mut row = record.clone().into_active_model();
            row.replayed_at = Set(Some(Utc::now()));
            row.replay_error = Set(None);
            row.update(&txn).await?;
            txn.commit().await?;
            Ok(applied)
        }
        Err(e) => {
            // Whatever a failed apply wrote goes; the reason stays with the record.
            txn.rollback().await?;
            if !dry_run && !matches!(e, ReplayError::Db(_)) {
                let mut row = record.clone().into_active_model();
                row.replay_error = Set(Some(e.to_string()));
                row.update(db).await?;
            }
            Err(e)
        }
    }
}

async fn apply<C: sea_orm::ConnectionTrait>(
    db: &C,
    record: &quarantine::Model,
) -> Result<Applied, ReplayError> {
    let payload: serde_json::Value = serde_json::from_str(&record.payload)
        .map_err(|e| ReplayError::Decode(format!("stored payload is not JSON: {e}")))?;
    match record.kind.as_str() {
        OPERATION_KIND => replay_operation(db, &payload).await,
        TRANSACTION_KIND => replay_transaction(db, &payload).await,
        LOG_KIND => {
            let chain = record.source.strip_prefix("evm:").ok_or_else(|| {
                ReplayError::NotApplicable(format!(
                    "source {:?} is not an EVM source (evm:<chain>)",
                    record.source
                ))
            })?;
            replay_log(db, chain, payload).await
        }
        EVENT_KIND => replay_rpc_event(&payload),
        other => Err(ReplayError::NotApplicable(format!(
            "no decoder for records of kind {other:?} in this build"
        ))),
    }
}

async fn replay_operation<C: sea_orm::ConnectionTrait>(
    db: &C,
    payload: &serde_json::Value,
) -> Result<Applied, ReplayError> {
    let op = horizon::decode_operation(payload).map_err(|e| ReplayError::Decode(e.to_string()))?;
    let watched: Vec<String> = stellar_account::Entity::find()
        .filter(stellar_account::Column::AccountId.is_in(op.participants.iter().cloned()))
        .filter(stellar_account::Column::Watched.eq(true))
        .all(db)
        .await?
        .into_iter()
        .map(|a| a.account_id)
        .collect();
    if watched.is_empty() {
        return Err(ReplayError::NotApplicable(format!(
            "operation {} concerns no watched account ({}): watch one, then replay",
            op.id,
            op.participants.join(", ")
        )));
    }
    stellar_store::upsert_operations(db, &[&op]).await?;
    let links: Vec<(&str, &horizon::DecodedOp)> =
        watched.iter().map(|a| (a.as_str(), &op)).collect();
    stellar_store::insert_account_links(db, &links).await?;
    for account in &watched {
        admin::request_resync(db, account, ResyncMode::Full)
            .await
            .map_err(|e| match e {
                admin::AdminError::Db(e) => ReplayError::Db(e),
                other => ReplayError::NotApplicable(format!("resync of {account}: {other}")),
            })?;
    }
    Ok(Applied {
        summary: format!(
            "operation {} ({}) stored; full resync requested for {}",
            op.id,
            op.op_type,
            watched.join(", ")
        ),
    })
}

async fn replay_transaction<C: sea_orm::ConnectionTrait>(
    db: &C,
    payload: &serde_json::Value,
) -> Result<Applied, ReplayError> {
    let row =
        horizon::decode_transaction(payload).map_err(|e| ReplayError::Decode(e.to_string()))?;
    let hash = row.hash.clone();
    stellar_store::insert_transaction(db, row).await?;
    Ok(Applied {
        summary: format!(
            "transaction {hash} stored (its memo is matched on the next distribution check)"
        ),
    })
}

async fn replay_log<C: sea_orm::ConnectionTrait>(
    db: &C,
    chain: &str,
    mut payload: serde_json::Value,
) -> Result<Applied, ReplayError> {
    let registry = payload
        .as_object_mut()
        .and_then(|o| o.remove("registry"))
        .and_then(|r| r.as_str().and_then(Registry::parse))
        .ok_or_else(|| ReplayError::Decode("stored log names no known registry".into()))?;
    let log = decode_logs(serde_json::Value::Array(vec![payload]))
        .map_err(|e| ReplayError::Decode(e.to_string()))?
        .pop()
        .ok_or_else(|| ReplayError::Decode("stored log is marked removed".into()))?;
    let event = decode_log(registry, &log.topics, &log.data)
        .map_err(|e| ReplayError::Decode(e.to_string()))?;
    let block_hash = format!("{:#x}", log.block_hash);
    let number = i64::try_from(log.block_number)
        .map_err(|_| ReplayError::Decode(format!("block {} is out of range", log.block_number)))?;
    if let Some(b) = evm_block::Entity::find()
        .filter(evm_block::Column::Chain.eq(chain))
        .filter(evm_block::Column::Number.eq(number))
        .one(db)
        .await?
    {
        if !b.hash.eq_ignore_ascii_case(&block_hash) {
            return Err(ReplayError::NotApplicable(format!(
                "block {number} is now {} (the log came from {block_hash}, orphaned by a reorg)",
                b.hash
            )));
        }
    }
    let row = EventRow {
        block_number: log.block_number,
        block_hash,
        tx_hash: format!("{:#x}", log.tx_hash),
        log_index: log.log_index,
        contract: format!("{:#x}", log.address),
        event,
    };
    evm_store::insert_events(db, chain, std::slice::from_ref(&row)).await?;
    let (agents, requests) = evm_store::order_dependent_keys(std::slice::from_ref(&row));
    if agents.is_empty() && requests.is_empty() {
        evm_store::project_batch(db, chain, std::slice::from_ref(&row), Utc::now()).await?;
    } else {
        evm_store::rebuild_agents(db, chain, &agents).await?;
        evm_store::rebuild_validations(db, chain, &requests).await?;
    }
    let (name, _) = row.event.to_name_args();
    Ok(Applied {
        summary: format!(
            "{name} at block {} log {} stored on {chain}",
            row.block_number, row.log_index
        ),
    })
}

fn replay_rpc_event(payload: &serde_json::Value) -> Result<Applied, ReplayError> {
    let event: crate::stellar::rpc::types::RpcEvent = serde_json::from_value(payload.clone())
        .map_err(|e| ReplayError::Decode(format!("stored event: {e}")))?;
    crate::stellar::rpc::events::decode_event(&event)
        .map_err(|e| ReplayError::Decode(e.to_string()))?;
    Err(ReplayError::NotApplicable(format!(
        "event {} decodes now, but token-event balances are running sums of the source: \
         re-derive them from a ledger before {} (a data-lake or RPC backfill into a fresh \
         cursor); balanceReconciliation names the holders that disagree until then",
        event.id, event.ledger
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::decode::{Erc8004Event, RegisteredArgs, TransferArgs};
    use crate::stellar::resync::REQUESTED;
    use crate::sync::quarantine::{store, Quarantined};
    use orrery_entity::{erc8004_agent, evm_event, stellar_operation, stellar_sync_state};
    use orrery_migration::{Migrator, MigratorTrait};
    use sea_orm::Database;
    use serde_json::json;

    /// A valid account id (admin checks the strkey).
    const WATCHED: &str = "GA2OH7EBMM4IWHWMILQZZV2PZLNXYC7P4CJOIDYLLC5LTFFAJVUDM6YI";
    const A: &str = "0x1111111111111111111111111111111111111111";
    const B: &str = "0x2222222222222222222222222222222222222222";
    const C: &str = "0x3333333333333333333333333333333333333333";
    /// keccak256("Transfer(address,address,uint256)").
    const TRANSFER: &str = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";

    async fn db() -> DatabaseConnection {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        db
    }

    fn word(addr: &str) -> String {
        format!("0x{:0>64}", addr.trim_start_matches("0x"))
    }

    fn row(block: u64, event: Erc8004Event) -> EventRow {
        EventRow {
            block_number: block,
            block_hash: format!("0x{block:064x}"),
            tx_hash: format!("0x{:064x}", block * 100),
            log_index: 0,
            contract: "0x8004".into(),
            event,
        }
    }

    async fn quarantine_one(db: &DatabaseConnection, source: &str, q: Quarantined) -> i64 {
        store(db, source, &[q]).await.unwrap();
        quarantine::Entity::find()
            .order_by_desc(quarantine::Column::Id)
            .one(db)
            .await
            .unwrap()
            .unwrap()
            .id
    }

    async fn load(db: &DatabaseConnection, id: i64) -> quarantine::Model {
        quarantine::Entity::find_by_id(id)
            .one(db)
            .await
            .unwrap()
            .unwrap()
    }

    fn payment(id: &str, from: &str, to: &str, amount: &str) -> serde_json::Value {
        json!({"id": id, "paging_token": id, "type": "payment",
            "source_account": from, "from": from, "to": to, "asset_type": "native",
            "amount": amount, "created_at": "2025-01-01T00:00:05Z",
            "transaction_hash": "ab", "transaction_successful": true})
    }

    fn transfer_log(block: u64, from: &str, to: &str, topic0: &str) -> serde_json::Value {
        json!({
            "address": "0x0000000000000000000000000000000000008004",
            "topics": [topic0, word(from), word(to), format!("0x{:064x}", 1)],
            "data": "0x",
            "blockNumber": format!("0x{block:x}"),
            "blockHash": format!("0x{block:064x}"),
            "transactionHash": format!("0x{:064x}", block * 100 + 7),
            "logIndex": "0x3",
            "registry": "identity",
        })
    }

    #[tokio::test]
    async fn an_evm_log_replayed_out_of_order_rebuilds_the_agent_in_block_order() {
        let db = db().await;
        let history = [
            row(
                10,
                Erc8004Event::Registered(RegisteredArgs {
                    agent_id: "1".into(),
                    agent_uri: "ipfs://a".into(),
                    owner: A.into(),
                }),
            ),
            row(
                30,
                Erc8004Event::Transfer(TransferArgs {
                    from: B.into(),
                    to: C.into(),
                    token_id: "1".into(),
                }),
            ),
        ];
        evm_store::insert_events(&db, "sepolia", &history)
            .await
            .unwrap();
        evm_store::project_batch(&db, "sepolia", &history, Utc::now())
            .await
            .unwrap();
        // The transfer A -> B of block 20 was quarantined; a fixed build decodes it.
        let id = quarantine_one(
            &db,
            "evm:sepolia",
            Quarantined::new(
                LOG_KIND,
                "20:3",
                &transfer_log(20, A, B, TRANSFER),
                "unknown",
            ),
        )
        .await;
        let record = load(&db, id).await;
        let applied = replay_one(&db, &record, false).await.unwrap();
        assert!(
            applied.summary.contains("Transfer at block 20"),
            "{applied:?}"
        );

        let events = evm_event::Entity::find().all(&db).await.unwrap();
        assert_eq!(events.len(), 3);
        let agent = erc8004_agent::Entity::find()
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        // Folding the late transfer onto the stored row would have made B the owner.
        assert_eq!(agent.owner, C);
        assert_eq!(agent.uri.as_deref(), Some("ipfs://a"));
        let record = load(&db, id).await;
        assert!(record.replayed_at.is_some());
        assert!(pending(&db, &Selection::default())
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_record_that_still_does_not_decode_stays_pending_with_the_reason() {
        let db = db().await;
        let bad = transfer_log(20, A, B, &format!("0x{}", "ab".repeat(32)));
        let id = quarantine_one(
            &db,
            "evm:sepolia",
            Quarantined::new(LOG_KIND, "20:3", &bad, "unknown event"),
        )
        .await;
        let record = load(&db, id).await;
        // A dry run writes nothing, not even the reason.
        assert!(matches!(
            replay_one(&db, &record, true).await,
            Err(ReplayError::Decode(_))
        ));
        let after = load(&db, id).await;
        assert_eq!(after.replay_error, None);
        let err = replay_one(&db, &record, false).await.unwrap_err();
        assert!(matches!(err, ReplayError::Decode(_)), "{err}");
        let after = load(&db, id).await;
        assert!(after.replayed_at.is_none());
        assert!(
            after
                .replay_error
                .as_deref()
                .unwrap()
                .contains("still does not decode"),
            "{after:?}"
        );
        assert!(evm_event::Entity::find().all(&db).await.unwrap().is_empty());
        assert_eq!(pending(&db, &Selection::default()).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_stellar_operation_is_stored_and_its_watched_accounts_resynced() {
        let db = db().await;
        stellar_store::ensure_accounts(&db, &[(WATCHED.into(), "config".into())], true)
            .await
            .unwrap();
        let op = payment("4294971393", WATCHED, "GB", "12.5000000");
        let id = quarantine_one(
            &db,
            "stellar",
            Quarantined::new(OPERATION_KIND, "4294971393", &op, "was missing a field"),
        )
        .await;
        let record = load(&db, id).await;
        // Dry run: says what it would do, stores nothing.
        replay_one(&db, &record, true).await.unwrap();
        assert!(stellar_operation::Entity::find()
            .all(&db)
            .await
            .unwrap()
            .is_empty());

        let applied = replay_one(&db, &record, false).await.unwrap();
        assert!(applied.summary.contains(WATCHED), "{applied:?}");
        let stored = stellar_operation::Entity::find().all(&db).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].amount_stroops, Some(125_000_000));
        let state = stellar_sync_state::Entity::find_by_id(WATCHED.to_string())
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (state.status.as_str(), state.mode.as_str()),
            (REQUESTED, "full")
        );
    }

    #[tokio::test]
    async fn an_operation_of_no_watched_account_and_an_unknown_kind_are_refused() {
        let db = db().await;
        let op = payment("5", "GX", "GY", "1");
        let id = quarantine_one(
            &db,
            "stellar",
            Quarantined::new(OPERATION_KIND, "5", &op, "x"),
        )
        .await;
        let record = load(&db, id).await;
        let err = replay_one(&db, &record, false).await.unwrap_err();
        assert!(err.to_string().contains("no watched account"), "{err}");
        assert!(stellar_operation::Entity::find()
            .all(&db)
            .await
            .unwrap()
            .is_empty());

        let id = quarantine_one(&db, "x", Quarantined::new("x.thing", "1", &json!({}), "x")).await;
        let record = load(&db, id).await;
        let err = replay_one(&db, &record, false).await.unwrap_err();
        assert!(err.to_string().contains("no decoder"), "{err}");
        let sel = Selection {
            ids: vec![id],
            source: Some("x".into()),
        };
        assert_eq!(pending(&db, &sel).await.unwrap().len(), 1);
    }
}
