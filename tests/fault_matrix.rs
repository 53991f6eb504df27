//! The fault matrix: every source at once on one devnet (Stellar Horizon, both EVM devnet
//! chains, Bitcoin Esplora and the exchange prices) goes through each fault in turn while
//! it backfills new work, and must end with exactly the data of a fault-free run. A second
//! server follows the same devnet's Stellar RPC (`stellar.source = "rpc"`, which runs
//! instead of Horizon, hence its own process and database) through the same faults; its
//! balances must equal the devnet's exactly after every phase.
//!
//! Faults, one phase each (a few seconds, every upstream at once, each with its own
//! counter so every source meets it): HTTP 429 with `Retry-After`, HTTP 500, a hang past
//! the client timeout (2 s here), truncated JSON, invalid JSON, a dropped connection; then a
//! reorg of both EVM chains (deeper than the confirmations) and of Bitcoin; on the
//! PostgreSQL + Redis pass also Redis down (a throwaway `redis-server` of this test is
//! killed and restarted) and a PostgreSQL restart. The restart is real: the faulted run
//! writes to a private PostgreSQL cluster of this test (`initdb`/`pg_ctl` from
//! `/usr/lib/postgresql/*/bin` in a temporary directory on a free port, as the `postgres`
//! user when run as root), stopped with `pg_ctl -m fast` and started again after 3 s, so
//! the PostgreSQL other tests share is never touched.
//!
//! After each phase the database must equal the devnet's own ground truth (every EVM log
//! once, the Bitcoin chain linked up to the devnet's tip, every watched Stellar operation,
//! every source `synced`); at the end a fault-free server indexes the same devnet into a
//! fresh database and the two are compared table by table (row counts and content hashes
//! of operations, transactions, balances, balance history, accounts, distributions, EVM
//! events and blocks, agents, feedback, validations, Bitcoin blocks, daily prices).
//! Exchange readings carry wall-clock times, so they are checked against the prices the
//! devnet served instead. Each phase also checks, in `/metrics`, that every upstream
//! really answered with an error during it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::fleet::{self, Size};
use common::services::{PrivatePostgres, ThrowawayRedis};
use common::{base_env, pg_admin_url, redis_url, Server, TestDb};
use orrery_devnet::{Devnet, Fault};
use sea_orm::DatabaseConnection;

const SEED: u64 = 1505;
const SIZE: Size = Size {
    stellar_ops: 600,
    evm_blocks: 60,
    bitcoin_blocks: 160,
};
/// How long each fault stays on.
const FAULT_FOR: Duration = Duration::from_secs(3);
/// Longest wait for the data to equal the ground truth after a phase.
const CONVERGE: Duration = Duration::from_secs(90);

enum Injection {
    /// The same fault on every upstream (each with its own trigger counter).
    Http(Fault),
    /// Both EVM chains lose their last 5 blocks, Bitcoin its last 3.
    Reorg,
    /// The faulted run's Redis is killed, then restarted.
    RedisDown,
    /// The faulted run's PostgreSQL is stopped, then started.
    PostgresRestart,
}

fn every_other(f: Fault) -> Fault {
    Fault {
        every_nth: Some(2),
        ..f
    }
}

/// Upstream names as `/metrics` labels them.
fn upstreams(d: &Devnet) -> Vec<String> {
    let mut u: Vec<String> = ["horizon", "esplora", "exchange"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for ep in d.urls().evm {
        u.push(format!("evm:{}", ep.name));
    }
    u
}

/// Requests per upstream that did not end in a 2xx, from `/metrics`.
async fn failed_requests(server: &Server) -> BTreeMap<String, u64> {
    let (_, text) = server.get("/metrics").await;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("orrery_upstream_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        let (Some(upstream), Some(status)) = (label("upstream"), label("status")) else {
            continue;
        };
        if status.starts_with('2') {
            continue;
        }
        let n: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry(upstream).or_insert(0) += n as u64;
    }
    out
}

fn http_fault(d: &Devnet, fault: &Fault) {
    let c = d.control();
    for target in ["horizon", "esplora"] {
        c.set_fault(target, every_other(fault.clone()));
    }
    for ep in d.urls().evm {
        c.set_fault(
            format!("evm:{}", ep.name).as_str(),
            every_other(fault.clone()),
        );
    }
    // The exchange is polled once per interval: fail its next two requests outright.
    c.set_fault(
        "exchange",
        Fault {
            max_triggers: Some(2),
            ..fault.clone()
        },
    );
}

/// Waits until the fleet server's and the RPC server's data equal the devnet's.
async fn converge(
    fleet_db: &DatabaseConnection,
    rpc_db: &DatabaseConnection,
    d: &Devnet,
    servers: (&Server, &Server),
) -> Duration {
    let start = Instant::now();
    loop {
        let a = fleet::check_ground_truth(fleet_db, d).await;
        let b = fleet::check_rpc_ground_truth(rpc_db, d).await;
        if a.is_ok() && b.is_ok() {
            return start.elapsed();
        }
        if start.elapsed() > CONVERGE {
            panic!(
                "not converged within {CONVERGE:?}: {a:?} {b:?}\nfleet log:\n{}\nrpc log:\n{}",
                fleet::tail(&servers.0.logs(), 40),
                fleet::tail(&servers.1.logs(), 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_survives_every_fault_and_ends_equal_to_a_fault_free_run() {
    let started = Instant::now();
    let pg_pass = pg_admin_url().is_some();
    let redis_pass = redis_url().is_some();
    let private_pg = pg_pass.then(|| {
        PrivatePostgres::spawn().expect(
            "the PostgreSQL pass needs PostgreSQL's server binaries (initdb, pg_ctl) under /usr/lib/postgresql",
        )
    });
    let mut redis = redis_pass
        .then(|| ThrowawayRedis::spawn().expect("the Redis pass needs a redis-server binary"));
    let d = fleet::devnet(SEED, SIZE).await;
    let config = fleet::config_file(&d, "matrix");

    // The faulted runs: on a private PostgreSQL on the PostgreSQL pass, else SQLite files.
    let sqlite_dbs = if pg_pass {
        None
    } else {
        Some((TestDb::new().await, TestDb::new().await))
    };
    let (faulted_url, rpc_url) = match (&private_pg, &sqlite_dbs) {
        (Some(pg), _) => (
            pg.create_database("orrery_faults").await,
            pg.create_database("orrery_faults_rpc").await,
        ),
        (None, Some((a, b))) => (a.url.clone(), b.url.clone()),
        (None, None) => unreachable!(),
    };
    let reference_db = TestDb::new().await;
    let redis_for_faulted = redis.as_ref().map(|r| r.url());
    let env = fleet::env(
        base_env(&reference_db),
        &config,
        Some(&faulted_url),
        redis_for_faulted.as_deref(),
    );
    let rpc_env = fleet::env(
        base_env(&reference_db),
        &fleet::rpc_config_file(&d, "matrix"),
        Some(&rpc_url),
        redis_for_faulted.as_deref(),
    );
    let server = Server::start(&env);
    let rpc_server = Server::start(&rpc_env);
    let conn = sea_orm::Database::connect(&faulted_url).await.unwrap();
    let rpc_conn = sea_orm::Database::connect(&rpc_url).await.unwrap();

    let mut phases: Vec<(&str, Injection)> = vec![
        (
            "429 + Retry-After",
            Injection::Http(Fault {
                status: Some(429),
                retry_after: Some(1),
                ..Fault::default()
            }),
        ),
        (
            "HTTP 500",
            Injection::Http(Fault {
                status: Some(500),
                ..Fault::default()
            }),
        ),
        (
            "hang past the client timeout",
            Injection::Http(Fault {
                timeout: Some(Duration::from_secs(4)),
                ..Fault::default()
            }),
        ),
        (
            "truncated JSON",
            Injection::Http(Fault {
                truncate_body: true,
                ..Fault::default()
            }),
        ),
        (
            "invalid JSON",
            Injection::Http(Fault {
                invalid_json: true,
                ..Fault::default()
            }),
        ),
        (
            "dropped connection",
            Injection::Http(Fault {
                drop_connection: true,
                ..Fault::default()
            }),
        ),
        ("reorg (EVM and Bitcoin)", Injection::Reorg),
    ];
    if redis.is_some() {
        phases.push(("Redis down", Injection::RedisDown));
    }
    if private_pg.is_some() {
        phases.push(("PostgreSQL restart", Injection::PostgresRestart));
    }

    let backfill = converge(&conn, &rpc_conn, &d, (&server, &rpc_server)).await;
    let mut timings = vec![("initial backfill".to_string(), backfill)];
    for (name, injection) in &phases {
        let phase_start = Instant::now();
        let before = failed_requests(&server).await;
        let rpc_before = failed_requests(&rpc_server).await;
        // New work on every chain, so every source fetches while the fault is on.
        fleet::grow(&d, 150, 40, 6);
        match injection {
            Injection::Http(fault) => {
                http_fault(&d, fault);
                tokio::time::sleep(FAULT_FOR).await;
                d.control().clear_faults();
            }
            Injection::Reorg => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for ep in d.urls().evm {
                    d.control().reorg_evm(&ep.name, 5).unwrap();
                }
                d.control().reorg_bitcoin(3).unwrap();
                tokio::time::sleep(FAULT_FOR).await;
            }
            Injection::RedisDown => {
                let r = redis.as_mut().unwrap();
                r.stop();
                tokio::time::sleep(FAULT_FOR).await;
                r.start();
            }
            Injection::PostgresRestart => {
                let pg = private_pg.as_ref().unwrap();
                pg.stop();
                tokio::time::sleep(FAULT_FOR).await;
                pg.start();
            }
        }
        let converged = converge(&conn, &rpc_conn, &d, (&server, &rpc_server)).await;
        // Counted once converged (a hung request fails only when its timeout fires): every
        // upstream, the RPC server's included, answered at least one request with the fault.
        if matches!(injection, Injection::Http(_)) {
            let deadline = Instant::now() + Duration::from_secs(8);
            loop {
                let after = failed_requests(&server).await;
                let rpc_after = failed_requests(&rpc_server).await;
                let unfaulted: Vec<String> = upstreams(&d)
                    .into_iter()
                    .filter(|u| {
                        after.get(u).copied().unwrap_or(0) <= before.get(u).copied().unwrap_or(0)
                    })
                    .chain(
                        (rpc_after.get("stellar-rpc").copied().unwrap_or(0)
                            <= rpc_before.get("stellar-rpc").copied().unwrap_or(0))
                        .then(|| "stellar-rpc".to_string()),
                    )
                    .collect();
                if unfaulted.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: upstreams {unfaulted:?} saw no failed request"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        eprintln!(
            "fault matrix: {name}: converged {converged:.1?} after the fault ({:.1?} in all)",
            phase_start.elapsed()
        );
        timings.push((name.to_string(), phase_start.elapsed()));
    }
    let faults_cleared = chrono::Utc::now();
    let faulted_total = started.elapsed();

    // Exchange readings: every one a price the devnet served, polling resumed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match fleet::check_exchange_prices(&conn, &d, faults_cleared).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }

    // The fault-free reference run over the same devnet.
    let reference_start = Instant::now();
    let reference_env = fleet::env(base_env(&reference_db), &config, None, None);
    let reference = Server::start(&reference_env);
    let ref_conn = reference_db.connect().await;
    fleet::wait_ground_truth(&ref_conn, &d, CONVERGE, || reference.logs()).await;
    let reference_time = reference_start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let got = fleet::snapshot(&conn).await;
        let want = fleet::snapshot(&ref_conn).await;
        match fleet::compare(&got, &want) {
            Ok(r) => break r,
            Err(e) if Instant::now() > deadline => {
                panic!(
                    "the faulted run differs from the fault-free run:\n{e}\nfaulted log:\n{}",
                    fleet::tail(&server.logs(), 40)
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let backend = if pg_pass {
        "PostgreSQL + Redis"
    } else {
        "SQLite"
    };
    eprintln!("fault matrix on {backend}: equal to the fault-free run, table by table:\n{report}");
    for (name, t) in &timings {
        eprintln!("  {name:<32} {t:.1?}");
    }
    eprintln!(
        "fault matrix on {backend}: faulted run {faulted_total:.1?}, reference run {reference_time:.1?}, total {:.1?}",
        started.elapsed()
    );
    drop(reference);
    drop(rpc_server);
    drop(server);
    conn.close().await.ok();
    rpc_conn.close().await.ok();
    d.shutdown().await;
}
