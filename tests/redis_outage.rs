//! Redis as a real dependency: the event bus survives Redis being killed and restarted while
//! a source follows its chain. Subscribers are told they missed events (an `EVENTS_MISSED`
//! error in their stream), then receive new events again; the database loses nothing.
//!
//! The test runs its own `redis-server` on a free port (so it can kill it without touching
//! the Redis other tests share). Without a `redis-server` binary it reports itself skipped,
//! unless `ORRERY_TEST_REDIS_URL` is set (the PostgreSQL + Redis pass), where a missing
//! binary fails it.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::services::ThrowawayRedis;
use common::{base_env, Server, TestDb};
use orrery_devnet::{Devnet, DevnetConfig};
use orrery_entity::evm_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;

const CONFIRMATIONS: u64 = 2;

async fn next_event(sub: &mut common::Subscription) -> Value {
    tokio::time::timeout(Duration::from_secs(30), sub.next_payload())
        .await
        .expect("subscription went quiet")
}

#[tokio::test]
async fn subscribers_are_told_about_a_redis_outage_and_nothing_is_lost() {
    let Some(mut redis) = ThrowawayRedis::spawn() else {
        assert!(
            common::redis_url().is_none(),
            "ORRERY_TEST_REDIS_URL is set but no redis-server binary was found"
        );
        eprintln!("SKIPPED: no redis-server binary");
        return;
    };
    let mut cfg = DevnetConfig {
        seed: 4242,
        ..DevnetConfig::default()
    };
    cfg.evm_chains.truncate(1);
    for c in &mut cfg.evm_chains {
        c.initial_blocks = 10;
    }
    let devnet = Devnet::start(cfg).await.unwrap();
    let ep = devnet.urls().evm[0].clone();
    let control = devnet.control();
    let dir = std::env::temp_dir().join(format!("orrery_redis_outage_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("evm.toml");
    std::fs::write(&toml, common::evm_chain_toml(&ep, CONFIRMATIONS)).unwrap();
    let db = TestDb::new().await;
    let mut env: Vec<(String, String)> = base_env(&db)
        .into_iter()
        .filter(|(k, _)| k != "REDIS_URL")
        .collect();
    env.push(("ORRERY_CONFIG".into(), toml.display().to_string()));
    env.push(("REDIS_URL".into(), redis.url()));
    let server = Server::start(&env);
    let mut sub = server
        .subscribe(
            "graphql-transport-ws",
            &format!(
                "subscription {{ eventIndexed(chain: \"{}\") {{ blockNumber logIndex }} }}",
                ep.name
            ),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Live events arrive through Redis.
    control.generate_evm_logs(&ep.name, 5).unwrap();
    control.advance_blocks(&ep.name, CONFIRMATIONS).unwrap();
    let first = next_event(&mut sub).await;
    assert!(
        first["data"]["eventIndexed"]["blockNumber"]
            .as_i64()
            .is_some(),
        "{first}"
    );

    // Redis dies; the source keeps committing (the database is the truth).
    redis.stop();
    control.generate_evm_logs(&ep.name, 20).unwrap();
    control.advance_blocks(&ep.name, CONFIRMATIONS).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.start();

    // The subscriber is told it missed events, then gets new ones again.
    let mut told = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while told.is_none() && Instant::now() < deadline {
        let p = next_event(&mut sub).await;
        if let Some(err) = p["errors"].as_array().and_then(|e| e.first()) {
            told = Some(err.clone());
        }
    }
    let told = told.expect("no EVENTS_MISSED error after the Redis outage");
    assert_eq!(told["extensions"]["code"], "EVENTS_MISSED", "{told}");
    assert!(
        told["message"].as_str().unwrap().contains("missed"),
        "{told}"
    );
    let before = control.evm_head(&ep.name).unwrap();
    control.generate_evm_logs(&ep.name, 5).unwrap();
    control.advance_blocks(&ep.name, CONFIRMATIONS).unwrap();
    let mut fresh = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fresh && Instant::now() < deadline {
        let p = next_event(&mut sub).await;
        if let Some(b) = p["data"]["eventIndexed"]["blockNumber"].as_i64() {
            fresh = b as u64 > before - CONFIRMATIONS;
        }
    }
    assert!(fresh, "no new event after Redis came back");

    // Nothing lost in the database.
    let target = control.evm_head(&ep.name).unwrap() - CONFIRMATIONS;
    let deadline = Instant::now() + Duration::from_secs(60);
    let conn = db.connect().await;
    let expected: BTreeSet<(i64, i64)> = control
        .evm_logs(&ep.name)
        .unwrap()
        .into_iter()
        .filter(|l| l.block_number <= target)
        .map(|l| (l.block_number as i64, l.log_index as i64))
        .collect();
    loop {
        let rows = evm_event::Entity::find()
            .filter(evm_event::Column::Chain.eq(ep.name.as_str()))
            .filter(evm_event::Column::BlockNumber.lte(target as i64))
            .all(&conn)
            .await
            .unwrap();
        let got: BTreeSet<(i64, i64)> = rows
            .iter()
            .map(|r| (r.block_number, r.log_index as i64))
            .collect();
        if got == expected && rows.len() == expected.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "database: {} rows, {} expected",
            rows.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = server.get("/metrics").await.1;
    assert!(
        metrics.contains("orrery_bus_reconnects_total{bus=\"redis\"}"),
        "reconnect metric missing"
    );
}
