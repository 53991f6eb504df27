//! Runs every migration up, down and up again, then writes and reads one row of
//! every entity through SeaORM, on in-memory SQLite and, when
//! `ORRERY_TEST_PG_URL` is set, on a freshly created PostgreSQL database.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use futures::FutureExt;
use orrery_entity::*;
use orrery_migration::{Migrator, MigratorTrait, SchemaManager};
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ConnectionTrait, Database, DatabaseConnection,
    EntityTrait, ModelTrait, PaginatorTrait, Statement,
};
use serde_json::json;
use std::panic::AssertUnwindSafe;

/// Every table the migrations create.
const TABLES: [&str; 23] = [
    "source",
    "config_entry",
    "audit_log",
    "circuit_breaker",
    "stellar_account",
    "stellar_sync_state",
    "stellar_transaction",
    "stellar_operation",
    "stellar_account_operation",
    "stellar_balance",
    "stellar_balance_history",
    "stellar_holding",
    "distribution",
    "distribution_recipient",
    "distribution_event",
    "price_point",
    "price_comparison",
    "evm_block",
    "evm_event",
    "erc8004_agent",
    "erc8004_feedback",
    "erc8004_validation",
    "bitcoin_block",
];

/// 2^53 + 1: not representable as f64, so it proves amounts are stored exactly.
const BEYOND_F64: i64 = 9_007_199_254_740_993;

/// Inserts `$model` through its ActiveModel, asserts the returned row and the
/// only row of the table equal it. With `auto`, the `id` is left to the
/// database and taken from the insert.
macro_rules! roundtrip {
    ($db:expr, $m:ident, $model:expr) => {{
        let expected: $m::Model = $model;
        let inserted = $m::ActiveModel::from(expected.clone())
            .reset_all()
            .insert($db)
            .await
            .unwrap();
        assert_eq!(inserted, expected, "insert of {}", stringify!($m));
        let all = $m::Entity::find().all($db).await.unwrap();
        assert_eq!(all, vec![expected.clone()], "read of {}", stringify!($m));
        expected
    }};
    (auto $db:expr, $m:ident, $model:expr) => {{
        let mut expected: $m::Model = $model;
        let mut active = $m::ActiveModel::from(expected.clone()).reset_all();
        active.id = NotSet;
        let inserted = active.insert($db).await.unwrap();
        assert!(inserted.id > 0, "generated id of {}", stringify!($m));
        expected.id = inserted.id;
        assert_eq!(inserted, expected, "insert of {}", stringify!($m));
        let all = $m::Entity::find().all($db).await.unwrap();
        assert_eq!(all, vec![expected.clone()], "read of {}", stringify!($m));
        expected
    }};
}

fn t(seconds: i64) -> DateTime<Utc> {
    // Microsecond precision: what PostgreSQL keeps.
    Utc.with_ymd_and_hms(2025, 3, 14, 15, 9, 26).unwrap()
        + TimeDelta::seconds(seconds)
        + TimeDelta::microseconds(535_897)
}

async fn assert_tables(db: &DatabaseConnection, present: bool) {
    let manager = SchemaManager::new(db);
    for table in TABLES {
        assert_eq!(
            manager.has_table(table).await.unwrap(),
            present,
            "table {table} present"
        );
    }
}

async fn migrate_up_down_up(db: &DatabaseConnection) {
    Migrator::up(db, None).await.unwrap();
    assert_tables(db, true).await;
    assert!(Migrator::get_pending_migrations(db)
        .await
        .unwrap()
        .is_empty());

    Migrator::down(db, None).await.unwrap();
    assert_tables(db, false).await;
    assert_eq!(
        Migrator::get_pending_migrations(db).await.unwrap().len(),
        Migrator::migrations().len()
    );

    Migrator::up(db, None).await.unwrap();
    assert_tables(db, true).await;
}

async fn core_rows(db: &DatabaseConnection) {
    roundtrip!(
        db,
        source,
        source::Model {
            id: "evm:sepolia".into(),
            kind: "evm".into(),
            name: "Sepolia".into(),
            chain_id: Some(11_155_111),
            head_height: Some(7_000_123),
            indexed_height: Some(7_000_100),
            cursor: Some("0xabc".into()),
            status: "syncing".into(),
            error_count: 2,
            last_error: Some("timeout".into()),
            last_sync_at: Some(t(1)),
            head_updated_at: None,
            backfill_from: Some(6_900_000),
            eta_seconds: Some(42),
            paused: true,
            created_at: t(0),
            updated_at: t(2),
        }
    );
    roundtrip!(
        db,
        config_entry,
        config_entry::Model {
            key: "sync.batch_size".into(),
            value: "200".into(),
            value_type: "integer".into(),
            description: Some("Number of operations per sync batch".into()),
            updated_at: t(3),
            updated_by: None,
        }
    );
    roundtrip!(auto db, audit_log, audit_log::Model {
        id: 0,
        at: t(4),
        actor: "admin@example".into(),
        role: "admin".into(),
        action: "setConfig".into(),
        target: Some("sync.batch_size".into()),
        arguments: json!({"key": "sync.batch_size", "value": "200"}),
        before: Some(json!({"value": "100"})),
        after: Some(json!({"value": "200", "nested": [1, 2.5, null, true]})),
        client_addr: Some("127.0.0.1".into()),
        outcome: "ok".into(),
    });
    roundtrip!(
        db,
        circuit_breaker,
        circuit_breaker::Model {
            name: "horizon".into(),
            state: "half_open".into(),
            failure_count: 5,
            opened_at: Some(t(5)),
            last_failure_at: Some(t(6)),
            last_error: Some("503".into()),
            updated_at: t(7),
        }
    );
}

async fn stellar_rows(db: &DatabaseConnection) {
    let account = "GBUBECSTELLARACCOUNTEXAMPLE0000000000000000000000000000";
    roundtrip!(
        db,
        stellar_account,
        stellar_account::Model {
            account_id: account.into(),
            watched: true,
            sequence: Some(BEYOND_F64),
            subentry_count: Some(3),
            last_modified_ledger: Some(50_000_000),
            last_modified_at: Some(t(8)),
            discovered_via: Some("config".into()),
            created_at: t(0),
            updated_at: t(9),
        }
    );
    roundtrip!(
        db,
        stellar_sync_state,
        stellar_sync_state::Model {
            account_id: account.into(),
            last_ledger: Some(50_000_001),
            cursor: Some("214748364800000001".into()),
            last_sync_at: Some(t(10)),
            status: "synced".into(),
            mode: "incremental".into(),
            error_count: 0,
            last_error: None,
            generation: 4,
            updated_at: t(10),
        }
    );
    roundtrip!(
        db,
        stellar_transaction,
        stellar_transaction::Model {
            hash: "3389e9f0f1a65f19736cacf544c2e825313e8447f569233bb8db39aa607c8889".into(),
            source_account: account.into(),
            ledger: 50_000_001,
            created_at: t(11),
            fee_charged: 100,
            operation_count: 1,
            successful: true,
            memo_type: Some("text".into()),
            memo: Some("hello".into()),
            paging_token: "214748364800000000".into(),
        }
    );
    roundtrip!(
        db,
        stellar_operation,
        stellar_operation::Model {
            id: 214_748_364_800_000_001,
            paging_token: "214748364800000001".into(),
            transaction_hash: "3389e9f0".into(),
            ledger: Some(50_000_001),
            created_at: t(11),
            op_type: "payment".into(),
            source_account: account.into(),
            from_account: Some(account.into()),
            to_account: Some("GDEST".into()),
            asset_type: Some("credit_alphanum4".into()),
            asset_code: Some("UBEC".into()),
            asset_issuer: Some("GISSUER".into()),
            amount_stroops: Some(i64::MAX),
            successful: true,
            details: json!({"type": "payment", "amount": "922337203685.4775807"}),
        }
    );
    roundtrip!(
        db,
        stellar_account_operation,
        stellar_account_operation::Model {
            account_id: account.into(),
            operation_id: 214_748_364_800_000_001,
            created_at: t(11),
        }
    );
    let balance = roundtrip!(auto db, stellar_balance, stellar_balance::Model {
        id: 0,
        account_id: account.into(),
        asset_type: "native".into(),
        asset_code: "XLM".into(),
        asset_issuer: String::new(),
        balance_stroops: BEYOND_F64,
        limit_stroops: None,
        last_modified_ledger: Some(50_000_001),
        updated_at: t(12),
    });
    // UNIQUE (account_id, asset_code, asset_issuer).
    let mut duplicate = stellar_balance::ActiveModel::from(balance).reset_all();
    duplicate.id = NotSet;
    assert!(
        duplicate.insert(db).await.is_err(),
        "duplicate balance accepted"
    );

    let holding = roundtrip!(auto db, stellar_holding, stellar_holding::Model {
        id: 0,
        account_id: account.into(),
        asset_code: "XLM".into(),
        asset_issuer: String::new(),
    });
    // UNIQUE (account_id, asset_code, asset_issuer).
    let mut duplicate = stellar_holding::ActiveModel::from(holding.clone()).reset_all();
    duplicate.id = NotSet;
    assert!(
        duplicate.insert(db).await.is_err(),
        "duplicate holding accepted"
    );

    let history = roundtrip!(auto db, stellar_balance_history, stellar_balance_history::Model {
        id: 0,
        holding_id: holding.id,
        account_id: account.into(),
        asset_code: "XLM".into(),
        asset_issuer: String::new(),
        operation_id: 214_748_364_800_000_001,
        ledger: None,
        at: t(11),
        delta_stroops: -BEYOND_F64,
        balance_stroops: Some(0),
    });
    // UNIQUE (holding_id, operation_id).
    let mut duplicate = stellar_balance_history::ActiveModel::from(history).reset_all();
    duplicate.id = NotSet;
    assert!(
        duplicate.insert(db).await.is_err(),
        "duplicate balance history row accepted"
    );
}

async fn distribution_rows(db: &DatabaseConnection) {
    let parent = roundtrip!(auto db, distribution, distribution::Model {
        id: 0,
        name: "March dividends".into(),
        asset_code: "UBEC".into(),
        asset_issuer: "GISSUER".into(),
        source_account: "GSOURCE".into(),
        total_budget_stroops: 1_000 * 10_000_000,
        status: "draft".into(),
        rules_passed: Some(false),
        rules_result: Some(json!({"min_balance": {"passed": false}})),
        created_by: Some("admin".into()),
        created_at: t(13),
        updated_at: t(13),
    });
    roundtrip!(auto db, distribution_recipient, distribution_recipient::Model {
        id: 0,
        distribution_id: parent.id,
        account_id: "GRECIPIENT".into(),
        amount_stroops: 12_345_678,
        status: "paid".into(),
        reason: None,
        payment_operation_id: Some(214_748_364_800_000_002),
        transaction_hash: Some("feed".into()),
        paid_at: Some(t(14)),
    });
    roundtrip!(auto db, distribution_event, distribution_event::Model {
        id: 0,
        distribution_id: parent.id,
        from_status: None,
        to_status: "draft".into(),
        reason: Some("created".into()),
        actor: Some("admin".into()),
        at: t(13),
    });

    // The relations resolve both ways.
    let recipients = parent
        .find_related(distribution_recipient::Entity)
        .all(db)
        .await
        .unwrap();
    assert_eq!(recipients.len(), 1);
    let back = recipients[0]
        .find_related(distribution::Entity)
        .one(db)
        .await
        .unwrap();
    assert_eq!(back, Some(parent.clone()));

    // The foreign key is enforced.
    let orphan = distribution_event::ActiveModel::from(distribution_event::Model {
        id: 0,
        distribution_id: parent.id + 1000,
        from_status: None,
        to_status: "draft".into(),
        reason: None,
        actor: None,
        at: t(15),
    })
    .reset_all();
    let mut orphan = orphan;
    orphan.id = NotSet;
    assert!(orphan.insert(db).await.is_err(), "orphan event accepted");

    // Deleting a distribution deletes its recipients and events.
    parent.delete(db).await.unwrap();
    assert_eq!(
        distribution_recipient::Entity::find()
            .count(db)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        distribution_event::Entity::find().count(db).await.unwrap(),
        0
    );
}

async fn price_rows(db: &DatabaseConnection) {
    roundtrip!(auto db, price_point, price_point::Model {
        id: 0,
        pair: "BTC/USD".into(),
        source: "UTXORACLE".into(),
        at: t(16),
        price: 97_123.456_789_012_3,
        confidence: Some(0.87),
        volume: None,
        details: Some(json!({"outputs": 12345})),
    });
    roundtrip!(auto db, price_comparison, price_comparison::Model {
        id: 0,
        at: t(16),
        pair: "BTC/USD".into(),
        utxoracle_price: Some(97_123.456_789_012_3),
        exchange_price: Some(97_000.0),
        diff: Some(123.456_789_012_3),
        diff_percent: Some(0.127_275_040_218_67),
        confidence: Some(0.87),
        is_valid: true,
        reason: None,
        updated_at: t(17),
    });
}

async fn evm_rows(db: &DatabaseConnection) {
    roundtrip!(
        db,
        evm_block,
        evm_block::Model {
            chain: "sepolia".into(),
            number: 7_000_100,
            hash: "0xb1".into(),
            parent_hash: "0xb0".into(),
            timestamp: t(18),
        }
    );
    roundtrip!(auto db, evm_event, evm_event::Model {
        id: 0,
        chain: "sepolia".into(),
        block_number: 7_000_100,
        block_hash: "0xb1".into(),
        tx_hash: "0xt1".into(),
        log_index: 3,
        contract: "0x8004".into(),
        name: "Registered".into(),
        args: json!({
            "agentId": "115792089237316195423570985008687907853269984665640564039457584007913129639935",
            "owner": "0xowner"
        }),
        created_at: t(18),
    });
    roundtrip!(
        db,
        erc8004_agent,
        erc8004_agent::Model {
            chain: "sepolia".into(),
            agent_id:
                "115792089237316195423570985008687907853269984665640564039457584007913129639935"
                    .into(),
            owner: "0xowner".into(),
            uri: Some("ipfs://agent".into()),
            metadata: Some(json!({"name": "agent"})),
            registered_block: 7_000_100,
            updated_block: 7_000_101,
            updated_at: t(19),
        }
    );
    roundtrip!(auto db, erc8004_feedback, erc8004_feedback::Model {
        id: 0,
        chain: "sepolia".into(),
        agent_id: "1".into(),
        client_address: "0xclient".into(),
        feedback_index: Some("18446744073709551615".into()),
        score: 95,
        tag1: Some("quality".into()),
        tag2: None,
        uri: Some("ipfs://feedback".into()),
        file_hash: Some("0xhash".into()),
        revoked: false,
        block_number: 7_000_102,
        tx_hash: "0xt2".into(),
        log_index: 0,
    });
    roundtrip!(auto db, erc8004_validation, erc8004_validation::Model {
        id: 0,
        chain: "sepolia".into(),
        request_hash: "0xreq".into(),
        agent_id: "1".into(),
        validator_address: "0xvalidator".into(),
        request_uri: Some("ipfs://request".into()),
        response: Some(100),
        response_uri: None,
        tag: Some("zk".into()),
        requested_block: 7_000_103,
        responded_block: Some(7_000_104),
        tx_hash: "0xt3".into(),
    });
}

async fn bitcoin_rows(db: &DatabaseConnection) {
    roundtrip!(
        db,
        bitcoin_block,
        bitcoin_block::Model {
            height: 880_000,
            hash: "000000000000000000010f2c".into(),
            prev_hash: "00000000000000000000a1b2".into(),
            time: t(20),
            tx_count: 4_321,
        }
    );
}

/// On PostgreSQL, checks the storage types the migrations chose: exact
/// integers for amounts, `jsonb` for JSON, `timestamptz` for times and
/// double precision for prices, never `numeric` or `real`.
async fn assert_postgres_types(db: &DatabaseConnection) {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT table_name::text, column_name::text, data_type::text \
             FROM information_schema.columns WHERE table_schema = current_schema()",
        ))
        .await
        .unwrap();
    let columns: Vec<(String, String, String)> = rows
        .iter()
        .map(|row| {
            (
                row.try_get::<String>("", "table_name").unwrap(),
                row.try_get::<String>("", "column_name").unwrap(),
                row.try_get::<String>("", "data_type").unwrap(),
            )
        })
        .filter(|(table, _, _)| TABLES.contains(&table.as_str()))
        .collect();
    assert!(columns.len() >= 205, "only {} columns found", columns.len());
    let type_of = |table: &str, column: &str| -> &str {
        columns
            .iter()
            .find(|(t, c, _)| t == table && c == column)
            .map(|(_, _, ty)| ty.as_str())
            .unwrap_or_else(|| panic!("column {table}.{column} missing"))
    };
    for (table, column, ty) in &columns {
        assert_ne!(ty, "numeric", "{table}.{column}");
        assert_ne!(ty, "real", "{table}.{column}");
        if column.ends_with("_stroops") {
            assert_eq!(ty, "bigint", "{table}.{column}");
        }
        if column.ends_with("_at") || column == "at" {
            assert_eq!(ty, "timestamp with time zone", "{table}.{column}");
        }
    }
    assert_eq!(type_of("stellar_operation", "details"), "jsonb");
    assert_eq!(type_of("audit_log", "before"), "jsonb");
    assert_eq!(
        type_of("evm_block", "timestamp"),
        "timestamp with time zone"
    );
    assert_eq!(type_of("bitcoin_block", "time"), "timestamp with time zone");
    assert_eq!(type_of("price_point", "price"), "double precision");
    assert_eq!(type_of("erc8004_agent", "agent_id"), "text");
    assert_eq!(type_of("source", "paused"), "boolean");
    assert_eq!(type_of("audit_log", "id"), "bigint");
}

/// The whole scenario, against one empty database.
/// History stored before `stellar_holding` existed gets one holding per `(account, asset)`
/// and each row its holding's id; the new unique key holds.
async fn holdings_backfill(db: &DatabaseConnection) {
    let before = Migrator::migrations().len() as u32 - 1;
    Migrator::up(db, Some(before)).await.unwrap();
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_string(
        backend,
        format!(
            "INSERT INTO stellar_balance_history (account_id, asset_code, asset_issuer, \
             operation_id, ledger, at, delta_stroops, balance_stroops) VALUES \
             ('GB', 'XLM', '', 1, 1, '{t}', 5, 5), ('GA', 'XLM', '', 1, 1, '{t}', -5, 95), \
             ('GA', 'UBEC', 'GI', 2, 1, '{t}', 7, 7), ('GA', 'XLM', '', 3, 1, '{t}', 1, 96)",
            t = "2025-03-14T15:09:26+00:00"
        ),
    ))
    .await
    .unwrap();
    Migrator::up(db, None).await.unwrap();
    let holdings = stellar_holding::Entity::find().all(db).await.unwrap();
    let key = |h: &stellar_holding::Model| {
        (
            h.account_id.clone(),
            h.asset_code.clone(),
            h.asset_issuer.clone(),
        )
    };
    let mut keys: Vec<_> = holdings.iter().map(key).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("GA".into(), "UBEC".into(), "GI".into()),
            ("GA".into(), "XLM".into(), String::new()),
            ("GB".into(), "XLM".into(), String::new()),
        ]
    );
    let history = stellar_balance_history::Entity::find()
        .all(db)
        .await
        .unwrap();
    assert_eq!(history.len(), 4);
    for row in &history {
        let holding = holdings
            .iter()
            .find(|h| h.id == row.holding_id)
            .unwrap_or_else(|| panic!("row {} has no holding", row.id));
        assert_eq!(
            key(holding),
            (
                row.account_id.clone(),
                row.asset_code.clone(),
                row.asset_issuer.clone()
            )
        );
    }
    let mut duplicate = stellar_balance_history::ActiveModel::from(history[0].clone()).reset_all();
    duplicate.id = NotSet;
    assert!(duplicate.insert(db).await.is_err(), "new unique key");
    Migrator::down(db, None).await.unwrap();
}

async fn exercise(db: &DatabaseConnection) {
    holdings_backfill(db).await;
    migrate_up_down_up(db).await;
    core_rows(db).await;
    stellar_rows(db).await;
    distribution_rows(db).await;
    price_rows(db).await;
    evm_rows(db).await;
    bitcoin_rows(db).await;
}

#[tokio::test]
async fn migrations_and_entities_on_sqlite() {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    exercise(&db).await;
}

#[tokio::test]
async fn migrations_and_entities_on_postgres() {
    let Ok(admin_url) = std::env::var("ORRERY_TEST_PG_URL") else {
        eprintln!("ORRERY_TEST_PG_URL not set: PostgreSQL part skipped");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let db_name = format!("orrery_migration_test_{}_{}", std::process::id(), nanos);

    let admin = Database::connect(&admin_url).await.unwrap();
    let backend = admin.get_database_backend();
    admin
        .execute_raw(Statement::from_string(
            backend,
            format!("CREATE DATABASE \"{db_name}\""),
        ))
        .await
        .unwrap();

    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{db_name}"));
    let outcome = AssertUnwindSafe(async {
        let db = Database::connect(url.as_str()).await.unwrap();
        exercise(&db).await;
        assert_postgres_types(&db).await;
        db.close().await.unwrap();
    })
    .catch_unwind()
    .await;

    admin
        .execute_raw(Statement::from_string(
            backend,
            format!("DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"),
        ))
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
