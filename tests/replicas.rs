//! Scale-out on PostgreSQL + Redis: several `orrery serve` replicas on one database. Each
//! source is run by one replica (its lease holder), leases spread across replicas, a killed
//! leader's sources move within 10 s, a paused leader is fenced, and events committed by one
//! replica reach subscribers on another through Redis.
//!
//! These tests need PostgreSQL and Redis (`ORRERY_TEST_PG_URL`, `ORRERY_TEST_REDIS_URL`, as
//! `.ci/run`'s second pass sets them). On the SQLite pass they report themselves skipped:
//! SQLite runs one process, which leads every source.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{base_env, pg_admin_url, redis_url, Server, TestDb};
use orrery_devnet::{Devnet, DevnetConfig};
use orrery_entity::evm_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

const CONFIRMATIONS: u64 = 2;

fn scale_out_available() -> bool {
    if pg_admin_url().is_some() && redis_url().is_some() {
        return true;
    }
    eprintln!(
        "SKIPPED: needs ORRERY_TEST_PG_URL and ORRERY_TEST_REDIS_URL (SQLite runs one process)"
    );
    false
}

async fn devnet_with_backlog(logs: usize) -> Devnet {
    let mut cfg = DevnetConfig {
        seed: 1313,
        ..DevnetConfig::default()
    };
    for c in &mut cfg.evm_chains {
        c.initial_blocks = 20;
        c.max_block_range = 500;
        c.max_logs_per_query = 500;
    }
    let devnet = Devnet::start(cfg).await.unwrap();
    for ep in devnet.urls().evm {
        devnet.control().generate_evm_logs(&ep.name, logs).unwrap();
    }
    devnet
}

/// Config naming every devnet upstream (two EVM chains, Stellar, Bitcoin and exchange).
fn config_file(devnet: &Devnet, tag: &str) -> std::path::PathBuf {
    let urls = devnet.urls();
    let mut toml = format!(
        "[stellar]\nhorizon_url = \"{}\"\nrequests_per_hour = 0\npoll_interval_ms = 200\nstream = false\n\n\
         [bitcoin]\nesplora_url = \"{}\"\nexchange_prices_url = \"{}\"\nrecent_blocks = 12\ninterval_secs = 2\npoll_interval_secs = 1\n\n",
        urls.horizon, urls.esplora, urls.exchange_prices
    );
    let chains: Vec<String> = urls
        .evm
        .iter()
        .map(|ep| common::evm_chain_toml(ep, CONFIRMATIONS))
        .collect();
    // evm_chain_toml repeats the [evm] table per chain: keep the first only.
    for (i, c) in chains.iter().enumerate() {
        let body = if i == 0 {
            c.clone()
        } else {
            c.split_once("\n\n")
                .map(|(_, rest)| format!("\n{rest}"))
                .unwrap_or_default()
        };
        toml.push_str(&body);
    }
    let dir = std::env::temp_dir().join(format!("orrery_replicas_{tag}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("orrery.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn replica_env(db: &TestDb, config: &std::path::Path, id: &str) -> Vec<(String, String)> {
    let mut env = base_env(db);
    env.push(("ORRERY_CONFIG".into(), config.display().to_string()));
    env.push(("ORRERY_REPLICA_ID".into(), id.into()));
    env
}

/// source id -> (leader, indexed height), as `server` reports it.
async fn leaders(server: &Server) -> BTreeMap<String, (Option<String>, Option<i64>)> {
    let r = server
        .graphql(
            "{ indexerStatus(first: 100) { edges { node { id leader leaseAgeSeconds indexedHeight } } } }",
            json!({}),
        )
        .await;
    r["data"]["indexerStatus"]["edges"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let n = &e["node"];
                    (
                        n["id"].as_str().unwrap_or_default().to_string(),
                        (
                            n["leader"].as_str().map(String::from),
                            n["indexedHeight"].as_i64(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

async fn assert_chain_exact(
    db: &sea_orm::DatabaseConnection,
    devnet: &Devnet,
    chain: &str,
    upto: u64,
) {
    let expected: BTreeSet<(i64, i64)> = devnet
        .control()
        .evm_logs(chain)
        .unwrap()
        .into_iter()
        .filter(|l| l.block_number <= upto)
        .map(|l| (l.block_number as i64, l.log_index as i64))
        .collect();
    let rows = evm_event::Entity::find()
        .filter(evm_event::Column::Chain.eq(chain))
        .filter(evm_event::Column::BlockNumber.lte(upto as i64))
        .all(db)
        .await
        .unwrap();
    let got: BTreeSet<(i64, i64)> = rows
        .iter()
        .map(|r| (r.block_number, r.log_index as i64))
        .collect();
    assert_eq!(rows.len(), got.len(), "{chain}: duplicate rows");
    assert_eq!(got.len(), expected.len(), "{chain}: rows vs devnet logs");
    assert!(
        got == expected,
        "{chain}: indexed events differ from the devnet's logs"
    );
}

#[tokio::test]
async fn replicas_split_the_sources_fail_over_within_10_s_and_share_events() {
    if !scale_out_available() {
        return;
    }
    let devnet = devnet_with_backlog(15_000).await;
    let config = config_file(&devnet, "split");
    let db = TestDb::new().await;
    let conn = db.connect().await;
    // Started together, as a Deployment's pods would be.
    let envs: Vec<_> = ["r1", "r2", "r3"]
        .iter()
        .map(|id| replica_env(&db, &config, id))
        .collect();
    let handles: Vec<_> = envs
        .into_iter()
        .map(|env| std::thread::spawn(move || Server::start(&env)))
        .collect();
    let mut replicas: Vec<Option<Server>> = handles
        .into_iter()
        .map(|h| Some(h.join().unwrap()))
        .collect();

    // Every source gets exactly one leader, and the leaders spread over the replicas.
    let view = replicas[0].as_ref().unwrap();
    wait_until("every source led", Duration::from_secs(30), || async {
        let l = leaders(view).await;
        l.len() >= 5 && l.values().all(|(leader, _)| leader.is_some())
    })
    .await;
    // The first replica up may take more at first; within a few seconds it hands extras back.
    wait_until(
        "leases spread over three replicas",
        Duration::from_secs(20),
        || async {
            let l = leaders(view).await;
            let mut n: BTreeMap<String, usize> = BTreeMap::new();
            for (leader, _) in l.values() {
                if let Some(x) = leader {
                    *n.entry(x.clone()).or_default() += 1;
                }
            }
            n.len() == 3 && n.values().all(|&c| c <= 2)
        },
    )
    .await;
    // Every replica shows the same leaders.
    let a = leaders(replicas[0].as_ref().unwrap()).await;
    let c = leaders(replicas[2].as_ref().unwrap()).await;
    let names = |m: &BTreeMap<String, (Option<String>, Option<i64>)>| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(names(&a), names(&c), "replicas disagree on the leaders");

    // The devnet's request log: each chain's logs were fetched by one replica only, and no
    // range twice.
    let requests = devnet.control().evm_log_requests();
    assert!(!requests.is_empty());
    let mut agents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut ranges = BTreeSet::new();
    for (chain, from, to, agent) in &requests {
        agents
            .entry(chain.clone())
            .or_default()
            .insert(agent.clone());
        assert!(
            ranges.insert((chain.clone(), from.clone(), to.clone())),
            "{chain} range {from}..{to} fetched twice: {requests:?}"
        );
    }
    for (chain, by) in &agents {
        assert_eq!(by.len(), 1, "{chain} fetched by several replicas: {by:?}");
        let leader = leaders(view).await[&format!("evm:{chain}")]
            .0
            .clone()
            .unwrap();
        assert!(
            by.iter()
                .all(|a| a.contains(&format!("(replica {leader})"))),
            "{chain} led by {leader} but fetched by {by:?}"
        );
    }

    // kill -9 the leader of evm:sepolia in the middle of its backfill.
    let chain = "sepolia";
    let source = format!("evm:{chain}");
    let head = devnet.control().evm_head(chain).unwrap();
    let target = head - CONFIRMATIONS;
    let leader = leaders(view).await[&source].0.clone().unwrap();
    let idx: usize = leader.trim_start_matches('r').parse::<usize>().unwrap() - 1;
    let watcher = (idx + 1) % 3;
    let killed_at = leaders(replicas[watcher].as_ref().unwrap()).await[&source].1;
    replicas[idx].as_mut().unwrap().kill9();
    replicas[idx] = None;
    let w = replicas[watcher].as_ref().unwrap();
    let took = wait_until(
        "another replica leads after kill -9",
        Duration::from_secs(10),
        || async { matches!(&leaders(w).await[&source].0, Some(l) if *l != leader) },
    )
    .await;
    eprintln!("kill -9 of {leader} at height {killed_at:?}/{target}: taken over in {took:?}");
    wait_until(
        "backfill completes after the failover",
        Duration::from_secs(240),
        || async { leaders(w).await[&source].1 == Some(target as i64) },
    )
    .await;
    assert_chain_exact(&conn, &devnet, chain, target).await;

    // A subscriber on one replica receives every event another replica commits.
    let other = "base-sepolia";
    let other_source = format!("evm:{other}");
    wait_until(
        "base-sepolia caught up",
        Duration::from_secs(240),
        || async {
            leaders(w).await[&other_source].1
                == Some((devnet.control().evm_head(other).unwrap() - CONFIRMATIONS) as i64)
        },
    )
    .await;
    let other_leader = leaders(w).await[&other_source].0.clone().unwrap();
    let subscriber_idx = (0..3)
        .find(|&i| replicas[i].is_some() && format!("r{}", i + 1) != other_leader)
        .unwrap();
    let sub_server = replicas[subscriber_idx].as_ref().unwrap();
    let mut sub = sub_server
        .subscribe(
            "graphql-transport-ws",
            &format!(
                "subscription {{ eventIndexed(chain: \"{other}\") {{ blockNumber logIndex }} }}"
            ),
        )
        .await;
    // Let the subscription reach the bus before anything is committed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = devnet.control().evm_head(other).unwrap();
    devnet.control().generate_evm_logs(other, 30).unwrap();
    devnet
        .control()
        .advance_blocks(other, CONFIRMATIONS + 1)
        .unwrap();
    let expected: BTreeSet<(i64, i64)> = devnet
        .control()
        .evm_logs(other)
        .unwrap()
        .into_iter()
        .filter(|l| l.block_number > before - CONFIRMATIONS)
        .filter(|l| l.block_number <= devnet.control().evm_head(other).unwrap() - CONFIRMATIONS)
        .map(|l| (l.block_number as i64, l.log_index as i64))
        .collect();
    assert!(!expected.is_empty());
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Events of earlier blocks may still be in flight to this subscriber: wait for the
    // expected ones rather than for as many events.
    while !expected.is_subset(&got) && Instant::now() < deadline {
        let msg = tokio::time::timeout(Duration::from_secs(30), sub.next_data())
            .await
            .expect("no event reached the subscriber on the other replica");
        let e = &msg["eventIndexed"];
        got.insert((
            e["blockNumber"].as_i64().unwrap(),
            e["logIndex"].as_i64().unwrap(),
        ));
    }
    assert!(
        expected.is_subset(&got),
        "subscriber on r{} (leader {other_leader}) missed events: {} of {}; missing {:?}; extra {:?}; before {before}",
        subscriber_idx + 1,
        expected.intersection(&got).count(),
        expected.len(),
        expected.difference(&got).collect::<Vec<_>>(),
        got.difference(&expected).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_paused_leader_is_fenced_and_commits_nothing_more() {
    if !scale_out_available() {
        return;
    }
    let devnet = devnet_with_backlog(25_000).await;
    let config = config_file(&devnet, "fence");
    let db = TestDb::new().await;
    let conn = db.connect().await;
    let servers = [
        Server::start(&replica_env(&db, &config, "r1")),
        Server::start(&replica_env(&db, &config, "r2")),
    ];
    let chain = "sepolia";
    let source = format!("evm:{chain}");
    wait_until(
        "sepolia led and backfilling",
        Duration::from_secs(60),
        || async {
            leaders(&servers[1])
                .await
                .get(&source)
                .is_some_and(|(l, h)| l.is_some() && h.unwrap_or(0) > 0)
        },
    )
    .await;
    let leader = leaders(&servers[1]).await[&source].0.clone().unwrap();
    let (paused, watch) = if leader == "r1" { (0, 1) } else { (1, 0) };
    let pid = servers[paused].pid().unwrap().to_string();
    let target = devnet.control().evm_head(chain).unwrap() - CONFIRMATIONS;
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let took = wait_until(
        "the standby takes over the paused leader's lease",
        // The lease lapses after 6 s; a transaction the pause left open is ended by the
        // server after 5 s idle (its lock on the lease row would block the takeover).
        Duration::from_secs(20),
        || async { matches!(&leaders(&servers[watch]).await[&source].0, Some(l) if *l != leader) },
    )
    .await;
    let token_after_takeover = servers[watch]
        .graphql(
            "query($id: String!) { chain(id: $id) { leaseToken } }",
            json!({ "id": source }),
        )
        .await["data"]["chain"]["leaseToken"]
        .as_i64();
    eprintln!(
        "SIGSTOP of {leader}: lease taken over after {took:?} (token {token_after_takeover:?})"
    );
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    wait_until("backfill completes", Duration::from_secs(240), || async {
        leaders(&servers[watch]).await[&source].1 == Some(target as i64)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logs = servers[paused].logs();
    assert!(
        logs.contains("lease lost") || logs.contains("fenced"),
        "the resumed old leader does not say it lost the lease:\n{logs}"
    );
    assert_chain_exact(&conn, &devnet, chain, target).await;
    // The lease stayed with the replica that took it over (no flapping back).
    let after = servers[watch]
        .graphql(
            "query($id: String!) { chain(id: $id) { leader leaseToken } }",
            json!({ "id": source }),
        )
        .await;
    assert_ne!(
        after["data"]["chain"]["leader"].as_str(),
        Some(leader.as_str()),
        "{after}"
    );
    assert_eq!(
        after["data"]["chain"]["leaseToken"].as_i64(),
        token_after_takeover,
        "{after}"
    );
}
