//! End to end: the EVM source indexes two devnet chains of ERC-8004 registry logs through
//! `orrery serve` (one RPC URL dead to exercise failover), survives a reorg of depth 5 while
//! following the head, and serves agents, feedback, validations and events over GraphQL.
//!
//! Sizes: `ORRERY_BENCH_LOGS` logs per chain (default 20000). With a bigger value the test
//! doubles as the benchmark and prints `BENCH evm ...` lines (throughput and peak RSS):
//! `ORRERY_BENCH_LOGS=200000 cargo test --test evm -- --nocapture`

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::{base_env, Server, TestDb};
use orrery_devnet::{Devnet, DevnetConfig, EvmEndpoint};
use orrery_entity::evm_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

const CONFIRMATIONS: u64 = 2;

fn logs_per_chain() -> usize {
    std::env::var("ORRERY_BENCH_LOGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// topic0 (0x hex) -> event name, from the ABI fixture.
fn topic_names() -> HashMap<String, String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/erc8004/topic0_computed_from_abis.txt"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("ERC-8004 fixture {path} missing: {e}"));
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(topic), Some(sig)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Some((name, _)) = sig.split_once('(') {
            out.insert(topic.to_string(), name.to_string());
        }
    }
    assert!(out.len() >= 11, "fixture has too few topics: {out:?}");
    out
}

type Key = (i64, String, i64, String, String, String);

/// The generated logs up to `upto` as (block, block hash, log index, tx, contract, name).
fn expected(devnet: &Devnet, chain: &str, upto: u64, names: &HashMap<String, String>) -> Vec<Key> {
    devnet
        .control()
        .evm_logs(chain)
        .unwrap()
        .into_iter()
        .filter(|l| l.block_number <= upto)
        .map(|l| {
            let t0 = format!("{:#x}", l.data.topics()[0]);
            (
                l.block_number as i64,
                format!("{:#x}", l.block_hash),
                l.log_index as i64,
                format!("{:#x}", l.tx_hash),
                format!("{:#x}", l.address),
                names
                    .get(&t0)
                    .cloned()
                    .unwrap_or_else(|| panic!("unknown topic {t0}")),
            )
        })
        .collect()
}

async fn assert_indexed_exactly(
    db: &sea_orm::DatabaseConnection,
    devnet: &Devnet,
    chain: &str,
    upto: u64,
    names: &HashMap<String, String>,
) -> usize {
    let want = expected(devnet, chain, upto, names);
    let rows = evm_event::Entity::find()
        .filter(evm_event::Column::Chain.eq(chain))
        .all(db)
        .await
        .unwrap();
    let got: Vec<Key> = rows
        .iter()
        .map(|r| {
            (
                r.block_number,
                r.block_hash.clone(),
                r.log_index as i64,
                r.tx_hash.clone(),
                r.contract.clone(),
                r.name.clone(),
            )
        })
        .collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{chain}: event count (duplicates or losses)"
    );
    let got: BTreeSet<Key> = got.into_iter().collect();
    let want_set: BTreeSet<Key> = want.iter().cloned().collect();
    if got != want_set {
        let missing: Vec<_> = want_set.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want_set).take(5).collect();
        panic!("{chain}: indexed events differ; missing {missing:?}, extra {extra:?}");
    }
    want.len()
}

fn config_toml(chains: &[EvmEndpoint]) -> String {
    let mut s =
        String::from("[evm]\nmax_block_range = 10000\nconcurrency = 4\npoll_interval_ms = 200\n");
    for (i, c) in chains.iter().enumerate() {
        // The first chain lists a dead URL first: the upstream client fails over.
        let urls = if i == 0 {
            format!("[\"http://127.0.0.1:9/\", \"{}\"]", c.url)
        } else {
            format!("[\"{}\"]", c.url)
        };
        s.push_str(&format!(
            "\n[[evm.chains]]\nname = \"{}\"\nchain_id = {}\nrpc_urls = {urls}\nconfirmations = {CONFIRMATIONS}\n",
            c.name, c.chain_id
        ));
        for (addr, reg) in [
            (&c.contracts.identity, "identity"),
            (&c.contracts.reputation, "reputation"),
            (&c.contracts.validation, "validation"),
        ] {
            s.push_str(&format!(
                "[[evm.chains.contracts]]\naddress = \"{addr}\"\nregistry = \"{reg}\"\n"
            ));
        }
    }
    s
}

async fn indexed_height(server: &Server, chain: &str) -> Option<i64> {
    let r = server
        .graphql(
            "query($id: String!) { chain(id: $id) { indexedHeight lastError } }",
            json!({"id": format!("evm:{chain}")}),
        )
        .await;
    r["data"]["chain"]["indexedHeight"].as_i64()
}

async fn wait_for_height(server: &Server, chain: &str, height: u64, limit: Duration) {
    let started = Instant::now();
    loop {
        if indexed_height(server, chain).await == Some(height as i64) {
            return;
        }
        if started.elapsed() > limit {
            panic!(
                "{chain} did not reach {height} within {limit:?} (at {:?}); logs:\n{}",
                indexed_height(server, chain).await,
                server.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Peak RSS (VmHWM, kB) of the server process using `db_url`, found through /proc.
fn server_peak_rss_kb(db_url: &str) -> Option<u64> {
    let needle = format!("DATABASE_URL={db_url}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let p = entry.path();
        let Ok(env) = std::fs::read(p.join("environ")) else {
            continue;
        };
        let is_server = env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes());
        let exe = std::fs::read_link(p.join("exe")).ok();
        if is_server
            && exe.is_some_and(|e| {
                // A binary relinked while running reads "orrery (deleted)".
                e.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("orrery"))
            })
        {
            let status = std::fs::read_to_string(p.join("status")).ok()?;
            return status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok());
        }
    }
    None
}

/// The low 64 bits of a 32-byte topic in 0x hex (agent ids).
fn agent_of(topic: &str) -> u64 {
    u64::from_str_radix(&topic[topic.len() - 16..], 16).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_two_chains_backfill_follow_reorg_and_graphql() {
    let n = logs_per_chain();
    let names = topic_names();
    let mut cfg = DevnetConfig {
        seed: 8004,
        ..DevnetConfig::default()
    };
    for c in &mut cfg.evm_chains {
        c.initial_blocks = 20;
        c.max_block_range = 2_000;
        c.max_logs_per_query = 2_500;
    }
    let devnet = Devnet::start(cfg).await.unwrap();
    let urls = devnet.urls();
    assert_eq!(urls.evm.len(), 2);
    let control = devnet.control();
    let mut total_logs = 0usize;
    for ep in &urls.evm {
        control.generate_evm_logs(&ep.name, n).unwrap();
        total_logs += control.evm_logs(&ep.name).unwrap().len();
    }

    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("orrery_evm_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join(format!("evm_{}.toml", Instant::now().elapsed().as_nanos()));
    std::fs::write(&toml, config_toml(&urls.evm)).unwrap();
    let mut env = base_env(&db);
    env.push(("ORRERY_CONFIG".into(), toml.display().to_string()));

    // Backfill both chains.
    let started = Instant::now();
    let server = Server::start(&env);
    let limit = Duration::from_secs(120 + (n as u64 / 1000) * 3);
    for ep in &urls.evm {
        let head = control.evm_head(&ep.name).unwrap();
        wait_for_height(&server, &ep.name, head - CONFIRMATIONS, limit).await;
    }
    let elapsed = started.elapsed();
    let conn = db.connect().await;
    for ep in &urls.evm {
        let head = control.evm_head(&ep.name).unwrap();
        assert_indexed_exactly(&conn, &devnet, &ep.name, head - CONFIRMATIONS, &names).await;
    }
    let rss = server_peak_rss_kb(&db.url);
    if rss.is_none() {
        let logs = server.logs();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        panic!(
            "server process gone after backfill; last log lines (newest first):\n{}",
            tail.join("\n")
        );
    }
    println!(
        "BENCH evm backfill: {total_logs} logs on 2 chains in {:.1}s = {:.0} logs/s; server peak RSS {:?} kB",
        elapsed.as_secs_f64(),
        total_logs as f64 / elapsed.as_secs_f64(),
        rss
    );

    // Follow the head (backfill-to-head handoff), then a reorg of depth 5 while following.
    let chain = urls.evm[0].name.clone();
    let other = urls.evm[1].name.clone();
    for ep in &urls.evm {
        let head = control.advance_blocks(&ep.name, 10).unwrap();
        wait_for_height(
            &server,
            &ep.name,
            head - CONFIRMATIONS,
            Duration::from_secs(60),
        )
        .await;
        assert_indexed_exactly(&conn, &devnet, &ep.name, head - CONFIRMATIONS, &names).await;
    }
    let mut reorgs = server
        .subscribe(
            "graphql-transport-ws",
            &format!("subscription {{ reorg(chain: \"{chain}\") {{ chain fromBlock depth orphanedEvents }} }}"),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let head = control.evm_head(&chain).unwrap();
    control.reorg_evm(&chain, 5).unwrap();
    let r = reorgs.next_data().await;

    assert_eq!(r["reorg"]["chain"], chain.as_str(), "{r}");
    assert_eq!(r["reorg"]["fromBlock"].as_i64(), Some(head as i64 - 4));
    assert_eq!(
        r["reorg"]["depth"].as_i64(),
        Some((head - CONFIRMATIONS) as i64 - (head as i64 - 5))
    );
    let head = control.advance_blocks(&chain, 3).unwrap();
    control.advance_blocks(&other, 3).unwrap();
    wait_for_height(
        &server,
        &chain,
        head - CONFIRMATIONS,
        Duration::from_secs(60),
    )
    .await;
    let on_chain =
        assert_indexed_exactly(&conn, &devnet, &chain, head - CONFIRMATIONS, &names).await;
    let other_head = control.evm_head(&other).unwrap();
    wait_for_height(
        &server,
        &other,
        other_head - CONFIRMATIONS,
        Duration::from_secs(60),
    )
    .await;
    assert_indexed_exactly(&conn, &devnet, &other, other_head - CONFIRMATIONS, &names).await;

    // GraphQL: events, agents, one agent with its feedback and validations.
    let upto = head - CONFIRMATIONS;
    let logs: Vec<_> = control
        .evm_logs(&chain)
        .unwrap()
        .into_iter()
        .filter(|l| l.block_number <= upto)
        .collect();
    let topic =
        |l: &orrery_devnet::evm::model::RenderedLog, i: usize| format!("{:#x}", l.data.topics()[i]);
    let name_of = |l: &orrery_devnet::evm::model::RenderedLog| names[&topic(l, 0)].clone();
    let registered: Vec<_> = logs.iter().filter(|l| name_of(l) == "Registered").collect();
    let r = server
        .graphql(
            "query($c: String!) { events(chain: $c) { totalCount }
               reg: events(chain: $c, name: \"Registered\", first: 2) { totalCount edges { node { name blockNumber args } } }
               agents(chain: $c, first: 3) { totalCount edges { cursor node { agentId owner } } pageInfo { hasNextPage } } }",
            json!({"c": chain}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(
        r["data"]["events"]["totalCount"].as_u64(),
        Some(on_chain as u64)
    );
    assert_eq!(
        r["data"]["reg"]["totalCount"].as_u64(),
        Some(registered.len() as u64)
    );
    assert_eq!(
        r["data"]["agents"]["totalCount"].as_u64(),
        Some(registered.len() as u64)
    );
    let first_agents: Vec<&Value> = r["data"]["agents"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(first_agents[0]["node"]["agentId"], "0");
    assert_eq!(first_agents[1]["node"]["agentId"], "1");
    let cursor = first_agents[2]["cursor"].as_str().unwrap().to_string();
    let r2 = server
        .graphql(
            "query($c: String!, $a: String) { agents(chain: $c, first: 1, after: $a) { edges { node { agentId } } } }",
            json!({"c": chain, "a": cursor}),
        )
        .await;
    assert_eq!(
        r2["data"]["agents"]["edges"][0]["node"]["agentId"], "3",
        "{r2}"
    );

    // The agent with most feedback.
    let mut feedback: HashMap<u64, usize> = HashMap::new();
    for l in logs.iter().filter(|l| name_of(l) == "NewFeedback") {
        *feedback.entry(agent_of(&topic(l, 1))).or_default() += 1;
    }
    let (&agent, &fb) = feedback.iter().max_by_key(|(a, c)| (**c, **a)).unwrap();
    let validations = logs
        .iter()
        .filter(|l| name_of(l) == "ValidationRequest" && agent_of(&topic(l, 2)) == agent)
        .count();
    let owner = registered
        .iter()
        .find(|l| agent_of(&topic(l, 1)) == agent)
        .map(|l| format!("0x{}", &topic(l, 2)[26..]))
        .unwrap();
    let r = server
        .graphql(
            "query($c: String!, $a: String!) { agent(chain: $c, agentId: $a) { agentId owner uri
                 feedback(first: 5) { totalCount edges { node { score clientAddress feedbackIndex } } }
                 validations { totalCount } } }",
            json!({"c": chain, "a": agent.to_string()}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    let a = &r["data"]["agent"];
    assert_eq!(a["owner"], owner.as_str());
    assert!(a["uri"].as_str().unwrap().starts_with("ipfs://"));
    assert_eq!(a["feedback"]["totalCount"].as_u64(), Some(fb as u64));
    assert_eq!(
        a["validations"]["totalCount"].as_u64(),
        Some(validations as u64)
    );

    // Unknown agents and bad ranges are typed errors.
    let r = server
        .graphql(
            "query($c: String!) { agent(chain: $c, agentId: \"999999999\") { agentId } }",
            json!({"c": chain}),
        )
        .await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "NOT_FOUND", "{r}");
    let r = server
        .graphql(
            "{ events(fromBlock: 10, toBlock: 5) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{r}"
    );

    drop(server);
    let _ = std::fs::remove_file(&toml);
    devnet.shutdown().await;
}

/// Every projection row of `chain`, rendered without ids and timestamps.
async fn projections(db: &sea_orm::DatabaseConnection, chain: &str) -> Vec<String> {
    use orrery_entity::{erc8004_agent, erc8004_feedback, erc8004_validation};
    let mut out: Vec<String> = erc8004_agent::Entity::find()
        .filter(erc8004_agent::Column::Chain.eq(chain))
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| {
            format!(
                "agent {} {} {:?} {:?} {} {}",
                a.agent_id, a.owner, a.uri, a.metadata, a.registered_block, a.updated_block
            )
        })
        .collect();
    out.extend(
        erc8004_feedback::Entity::find()
            .filter(erc8004_feedback::Column::Chain.eq(chain))
            .all(db)
            .await
            .unwrap()
            .into_iter()
            .map(|f| {
                format!(
                    "feedback {} {} {:?} {} {:?} {} {} {}",
                    f.agent_id,
                    f.client_address,
                    f.feedback_index,
                    f.score,
                    f.tag1,
                    f.revoked,
                    f.tx_hash,
                    f.log_index
                )
            }),
    );
    out.extend(
        erc8004_validation::Entity::find()
            .filter(erc8004_validation::Column::Chain.eq(chain))
            .all(db)
            .await
            .unwrap()
            .into_iter()
            .map(|v| {
                format!(
                    "validation {} {} {:?} {:?} {:?} {}",
                    v.request_hash,
                    v.agent_id,
                    v.response,
                    v.response_uri,
                    v.responded_block,
                    v.tx_hash
                )
            }),
    );
    out.sort();
    out
}

/// `kill -9` at five pseudo-random moments of a backfill (sizes by `ORRERY_EVM_CRASH_LOGS`,
/// default 30,000; run at 1,000,000 for the check): the end state has every event
/// exactly once and projections equal to a clean run's.
#[tokio::test]
async fn evm_backfill_survives_kill9_and_matches_a_clean_run() {
    let n: usize = std::env::var("ORRERY_EVM_CRASH_LOGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let names = topic_names();
    let mut cfg = DevnetConfig {
        seed: 8005,
        ..DevnetConfig::default()
    };
    cfg.evm_chains.truncate(1);
    for c in &mut cfg.evm_chains {
        c.initial_blocks = 20;
        c.max_block_range = 2_000;
        c.max_logs_per_query = 2_500;
    }
    let devnet = Devnet::start(cfg).await.unwrap();
    let ep = devnet.urls().evm[0].clone();
    let control = devnet.control();
    control.generate_evm_logs(&ep.name, n).unwrap();
    let head = control.evm_head(&ep.name).unwrap();
    let target = head - CONFIRMATIONS;
    let dir = std::env::temp_dir().join(format!("orrery_evm_crash_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("evm.toml");
    std::fs::write(&toml, common::evm_chain_toml(&ep, CONFIRMATIONS)).unwrap();

    // A run killed five times.
    let db = TestDb::new().await;
    let mut env = base_env(&db);
    env.push(("ORRERY_CONFIG".into(), toml.display().to_string()));
    let conn = db.connect().await;
    let mut seed = 0x9e37_79b9_u64 ^ n as u64;
    for kills in 1..=5u64 {
        let mut server = Server::start(&env);
        // Once the backfill passes k/6 of the range, a pseudo-random 0..250 ms more (xorshift,
        // fixed seed: reproducible), then kill -9: always in the middle of the backfill.
        let mark = (target * kills / 6) as i64;
        let started = Instant::now();
        while indexed_height(&server, &ep.name).await.unwrap_or(0) < mark {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "no progress to {mark}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % 250)).await;
        let at = indexed_height(&server, &ep.name).await;
        server.kill9();
        println!("kill -9 #{kills} at indexed height {at:?} of {target}");
    }
    let server = Server::start(&env);
    wait_for_height(&server, &ep.name, target, Duration::from_secs(600)).await;
    assert_indexed_exactly(&conn, &devnet, &ep.name, target, &names).await;
    let crashed = projections(&conn, &ep.name).await;
    drop(server);

    // A clean run of the same chain.
    let clean_db = TestDb::new().await;
    let mut env = base_env(&clean_db);
    env.push(("ORRERY_CONFIG".into(), toml.display().to_string()));
    let server = Server::start(&env);
    wait_for_height(&server, &ep.name, target, Duration::from_secs(600)).await;
    let clean_conn = clean_db.connect().await;
    let clean = projections(&clean_conn, &ep.name).await;
    assert!(!clean.is_empty());
    assert_eq!(crashed.len(), clean.len(), "projection rows");
    assert_eq!(
        crashed, clean,
        "projections after kill -9 equal a clean run"
    );
}
