//! Every source on one devnet at once (Stellar Horizon, both EVM devnet chains, Bitcoin
//! Esplora and exchange prices), for the fault matrix and the `kill -9` soak: the devnet and
//! config, the checks against the devnet's own ground truth, and table-by-table snapshots
//! of what was indexed so two runs can be compared row for row.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orrery_devnet::{Devnet, DevnetConfig};
use orrery_entity::{
    bitcoin_block, distribution, distribution_event, distribution_recipient, erc8004_agent,
    erc8004_feedback, erc8004_validation, evm_event, price_point, source, stellar_account,
    stellar_account_operation, stellar_balance, stellar_balance_history, stellar_operation,
    stellar_transaction,
};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::Value;

/// Blocks behind the EVM head that the indexer treats as final.
pub const CONFIRMATIONS: u64 = 2;
/// Stellar credit assets of the devnet, all watched.
pub const ASSETS: [&str; 4] = ["UBEC", "UBECrc", "UBECgpi", "UBECtt"];

/// Sizes of the devnet (small enough for CI, big enough for several pages per source).
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Stellar operations before the server starts.
    pub stellar_ops: usize,
    /// Blocks per EVM chain before the server starts.
    pub evm_blocks: u64,
    /// Bitcoin blocks before the server starts.
    pub bitcoin_blocks: u64,
}

/// A devnet with both EVM chains, Stellar and Bitcoin, sized by `size`.
pub async fn devnet(seed: u64, size: Size) -> Devnet {
    let mut cfg = DevnetConfig {
        seed,
        ..DevnetConfig::default()
    };
    cfg.stellar.accounts = 12;
    cfg.stellar.initial_operations = size.stellar_ops;
    cfg.stellar.ops_per_ledger = 20;
    for c in &mut cfg.evm_chains {
        c.initial_blocks = size.evm_blocks;
        c.max_block_range = 40;
        c.max_logs_per_query = 200;
        c.finality_depth = 4;
    }
    cfg.bitcoin.initial_blocks = size.bitcoin_blocks;
    cfg.bitcoin.txs_per_block = 8;
    Devnet::start(cfg).await.unwrap()
}

/// Grows every chain of `d` a little (new backfill work for every source).
pub fn grow(d: &Devnet, stellar_ops: usize, evm_logs: usize, bitcoin_blocks: u64) {
    let c = d.control();
    c.generate_operations(stellar_ops).unwrap();
    for ep in d.urls().evm {
        c.generate_evm_logs(&ep.name, evm_logs).unwrap();
    }
    c.advance_bitcoin_blocks(bitcoin_blocks).unwrap();
}

/// `orrery.toml` following every upstream of `d`, written into a fresh directory.
/// Client timeouts are 2 s and breakers recover after 1 s, so a fault of a few seconds
/// costs seconds, not the production minute.
pub fn config_file(d: &Devnet, tag: &str) -> PathBuf {
    let urls = d.urls();
    let assets: Vec<String> = ASSETS.iter().map(|a| format!("\"{a}\"")).collect();
    let mut toml = format!(
        "[stellar]\nhorizon_url = \"{}\"\nassets = [{}]\nrequests_per_hour = 0\n\
         poll_interval_ms = 200\nstream = false\ndiscover_interval_secs = 1\n\
         breaker_recovery_secs = 1\nrequest_timeout_secs = 2\n\n\
         [bitcoin]\nesplora_url = \"{}\"\nexchange_prices_url = \"{}\"\nrecent_blocks = 12\n\
         interval_secs = 2\npoll_interval_secs = 1\nstart_height = {}\n\
         request_timeout_secs = 2\nbreaker_recovery_secs = 1\n\n\
         [evm]\nmax_block_range = 40\nconcurrency = 4\npoll_interval_ms = 200\n\
         request_timeout_secs = 2\nbreaker_recovery_secs = 1\n",
        urls.horizon,
        assets.join(", "),
        urls.esplora,
        urls.exchange_prices,
        DevnetConfig::default().bitcoin.start_height,
    );
    for ep in &urls.evm {
        toml.push_str(&format!(
            "\n[[evm.chains]]\nname = \"{}\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = {CONFIRMATIONS}\n",
            ep.name, ep.chain_id, ep.url
        ));
        for (addr, reg) in [
            (&ep.contracts.identity, "identity"),
            (&ep.contracts.reputation, "reputation"),
            (&ep.contracts.validation, "validation"),
        ] {
            toml.push_str(&format!(
                "[[evm.chains.contracts]]\naddress = \"{addr}\"\nregistry = \"{reg}\"\n"
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!(
        "orrery_fleet_{tag}_{}_{}",
        std::process::id(),
        super::services::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("orrery.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Server environment on `database_url` with `config`; `redis` replaces the run's Redis.
pub fn env(
    base: Vec<(String, String)>,
    config: &Path,
    database_url: Option<&str>,
    redis: Option<&str>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = base
        .into_iter()
        .filter(|(k, _)| {
            !(k == "REDIS_URL" && redis.is_some() || k == "DATABASE_URL" && database_url.is_some())
        })
        .collect();
    if let Some(u) = database_url {
        env.push(("DATABASE_URL".into(), u.into()));
    }
    if let Some(r) = redis {
        env.push(("REDIS_URL".into(), r.into()));
    }
    env.push(("ORRERY_CONFIG".into(), config.display().to_string()));
    env
}

/// The source ids every run must have, all `synced` at the end.
pub fn source_ids(d: &Devnet) -> BTreeSet<String> {
    let mut ids: BTreeSet<String> = ["stellar", "bitcoin", "exchange"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for ep in d.urls().evm {
        ids.insert(format!("evm:{}", ep.name));
    }
    ids
}

/// The watched Stellar holders of `d` (accounts holding a credit asset).
pub fn holders(d: &Devnet) -> BTreeSet<String> {
    let c = d.control();
    c.stellar_accounts()
        .into_iter()
        .filter(|a| {
            c.balances(a)
                .map(|b| b.iter().any(|(asset, _)| asset != "native"))
                .unwrap_or(false)
        })
        .collect()
}

/// Compares what `conn` holds with the devnet's ground truth; `Err` says the first
/// difference. Checked: every EVM log up to head - confirmations once (chain, block, index,
/// block hash, tx hash); the Bitcoin blocks from the start height to the tip, linked by
/// their parent hashes and ending in the devnet's tip hash; the operations of every
/// watched Stellar holder (links and operation rows); every source `synced` at the head.
pub async fn check_ground_truth(conn: &DatabaseConnection, d: &Devnet) -> Result<(), String> {
    let c = d.control();
    // Sources.
    let rows = source::Entity::find()
        .all(conn)
        .await
        .map_err(|e| e.to_string())?;
    let want = source_ids(d);
    for id in &want {
        let Some(r) = rows.iter().find(|r| &r.id == id) else {
            return Err(format!("source {id} missing"));
        };
        if r.status != "synced" {
            return Err(format!(
                "source {id} is {} (last error {:?})",
                r.status, r.last_error
            ));
        }
    }
    // EVM.
    for ep in d.urls().evm {
        let head = c.evm_head(&ep.name).unwrap();
        let upto = head.saturating_sub(CONFIRMATIONS);
        let expected: BTreeSet<(i64, i64, String, String)> = c
            .evm_logs(&ep.name)
            .unwrap()
            .into_iter()
            .filter(|l| l.block_number <= upto)
            .map(|l| {
                (
                    l.block_number as i64,
                    l.log_index as i64,
                    l.block_hash.to_string(),
                    l.tx_hash.to_string(),
                )
            })
            .collect();
        let rows = evm_event::Entity::find()
            .filter(evm_event::Column::Chain.eq(ep.name.as_str()))
            .all(conn)
            .await
            .map_err(|e| e.to_string())?;
        let got: BTreeSet<(i64, i64, String, String)> = rows
            .iter()
            .filter(|r| r.block_number <= upto as i64)
            .map(|r| {
                (
                    r.block_number,
                    r.log_index as i64,
                    r.block_hash.to_lowercase(),
                    r.tx_hash.to_lowercase(),
                )
            })
            .collect();
        let n = rows
            .iter()
            .filter(|r| r.block_number <= upto as i64)
            .count();
        if n != got.len() {
            return Err(format!(
                "evm {}: {} duplicate event rows",
                ep.name,
                n - got.len()
            ));
        }
        if got != expected {
            let missing = expected.difference(&got).count();
            let extra = got.difference(&expected).count();
            return Err(format!(
                "evm {}: {} events, {} expected up to block {upto}: {missing} missing, {extra} not on the devnet's chain (first missing {:?}, first extra {:?})",
                ep.name,
                got.len(),
                expected.len(),
                expected.difference(&got).next(),
                got.difference(&expected).next(),
            ));
        }
    }
    // Bitcoin.
    let start = DevnetConfig::default().bitcoin.start_height as i64;
    let tip = c.bitcoin_tip() as i64;
    let blocks = bitcoin_block::Entity::find()
        .all(conn)
        .await
        .map_err(|e| e.to_string())?;
    let by_height: BTreeMap<i64, &bitcoin_block::Model> =
        blocks.iter().map(|b| (b.height, b)).collect();
    if by_height.len() != blocks.len() {
        return Err("bitcoin: duplicate heights".into());
    }
    let heights: Vec<i64> = by_height.keys().copied().collect();
    let want_heights: Vec<i64> = (start..=tip).collect();
    if heights != want_heights {
        return Err(format!(
            "bitcoin: heights {:?}..{:?} ({}), expected {start}..={tip}",
            heights.first(),
            heights.last(),
            heights.len()
        ));
    }
    for w in heights.windows(2) {
        if by_height[&w[1]].prev_hash != by_height[&w[0]].hash {
            return Err(format!("bitcoin: block {} does not link to {}", w[1], w[0]));
        }
    }
    let tip_hash = reqwest::get(format!("{}/blocks/tip/hash", d.urls().esplora))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    if by_height[&tip].hash != tip_hash.trim() {
        return Err(format!(
            "bitcoin: stored tip {} is not the devnet's {tip_hash}",
            by_height[&tip].hash
        ));
    }
    // Stellar.
    let mut want_links: BTreeSet<(String, i64)> = BTreeSet::new();
    for a in holders(d) {
        for op in c.operations(Some(a.as_str())).unwrap() {
            want_links.insert((a.clone(), op.id));
        }
    }
    let links = stellar_account_operation::Entity::find()
        .all(conn)
        .await
        .map_err(|e| e.to_string())?;
    let got_links: BTreeSet<(String, i64)> = links
        .iter()
        .map(|l| (l.account_id.clone(), l.operation_id))
        .collect();
    if got_links != want_links {
        return Err(format!(
            "stellar: {} account-operation links, {} expected ({} missing, {} extra)",
            got_links.len(),
            want_links.len(),
            want_links.difference(&got_links).count(),
            got_links.difference(&want_links).count()
        ));
    }
    let want_ops: BTreeSet<i64> = want_links.iter().map(|(_, id)| *id).collect();
    let ops: BTreeSet<i64> = stellar_operation::Entity::find()
        .all(conn)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|o| o.id)
        .collect();
    if !want_ops.is_subset(&ops) {
        return Err(format!(
            "stellar: {} of {} watched operations stored",
            want_ops.intersection(&ops).count(),
            want_ops.len()
        ));
    }
    Ok(())
}

/// Waits until [`check_ground_truth`] passes; panics with the last difference and `logs`.
pub async fn wait_ground_truth(
    conn: &DatabaseConnection,
    d: &Devnet,
    limit: Duration,
    logs: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    loop {
        match check_ground_truth(conn, d).await {
            Ok(()) => return start.elapsed(),
            Err(e) if start.elapsed() > limit => {
                panic!("not converged within {limit:?}: {e}\n{}", tail(&logs(), 60))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One table's rows, each as canonical JSON without the columns that may differ between
/// two equally correct runs (surrogate ids, wall-clock times), sorted.
pub type Rows = Vec<String>;

async fn rows<E: EntityTrait>(conn: &DatabaseConnection, drop: &[&str]) -> Rows {
    select_rows(E::find(), conn, drop).await
}

async fn select_rows<E: EntityTrait>(
    select: sea_orm::Select<E>,
    conn: &DatabaseConnection,
    drop: &[&str],
) -> Rows {
    let mut out: Rows = select
        .into_json()
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|mut v| {
            if let Value::Object(o) = &mut v {
                for k in drop {
                    o.remove(*k);
                }
            }
            v.to_string()
        })
        .collect();
    out.sort();
    out
}

/// Every indexed table of `conn`, by name. Left out of the content: surrogate `id`s and
/// the times a row was written (`created_at`/`updated_at` where they are not chain data).
/// `stellar_account.discovered_via` names the first asset whose holder list showed the
/// account, which depends on timing when it holds several. `evm_block` is left out: it is
/// the reorg-detection window of recent headers, whose extent depends on when blocks were
/// seen (a run that follows the head keeps more than one that backfilled at once).
/// Price points are limited to the deterministic ones (`UTXORACLE_DAILY`, from the blocks):
/// the rolling-window and exchange readings are stamped with the wall clock, and
/// comparisons likewise; see [`check_exchange_prices`] for the exchange.
pub async fn snapshot(conn: &DatabaseConnection) -> BTreeMap<&'static str, Rows> {
    let mut s = BTreeMap::new();
    s.insert(
        "stellar_operation",
        rows::<stellar_operation::Entity>(conn, &[]).await,
    );
    s.insert(
        "stellar_account_operation",
        rows::<stellar_account_operation::Entity>(conn, &[]).await,
    );
    s.insert(
        "stellar_transaction",
        rows::<stellar_transaction::Entity>(conn, &[]).await,
    );
    s.insert(
        "stellar_balance",
        rows::<stellar_balance::Entity>(conn, &["id", "updated_at"]).await,
    );
    s.insert(
        "stellar_balance_history",
        rows::<stellar_balance_history::Entity>(conn, &["id", "holding_id"]).await,
    );
    s.insert(
        "stellar_account",
        rows::<stellar_account::Entity>(conn, &["created_at", "updated_at", "discovered_via"])
            .await,
    );
    s.insert(
        "distribution",
        rows::<distribution::Entity>(conn, &["id", "created_at", "updated_at"]).await,
    );
    s.insert(
        "distribution_event",
        rows::<distribution_event::Entity>(conn, &["id", "created_at"]).await,
    );
    s.insert(
        "distribution_recipient",
        rows::<distribution_recipient::Entity>(conn, &["id", "created_at", "updated_at"]).await,
    );
    s.insert(
        "evm_event",
        rows::<evm_event::Entity>(conn, &["id", "created_at"]).await,
    );
    s.insert(
        "erc8004_agent",
        rows::<erc8004_agent::Entity>(conn, &["updated_at"]).await,
    );
    s.insert(
        "erc8004_feedback",
        rows::<erc8004_feedback::Entity>(conn, &["id", "created_at", "updated_at"]).await,
    );
    s.insert(
        "erc8004_validation",
        rows::<erc8004_validation::Entity>(conn, &["id", "created_at", "updated_at"]).await,
    );
    s.insert(
        "bitcoin_block",
        rows::<bitcoin_block::Entity>(conn, &[]).await,
    );
    let daily = select_rows(
        price_point::Entity::find().filter(price_point::Column::Source.eq("UTXORACLE_DAILY")),
        conn,
        &["id"],
    )
    .await;
    s.insert("price_point (UTXORACLE_DAILY)", daily);
    s
}

fn digest(rows: &Rows) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    rows.hash(&mut h);
    h.finish()
}

/// Rows that appear more than once (a duplicate is a bug whatever the other run holds).
pub fn duplicates(rows: &Rows) -> usize {
    rows.len() - rows.iter().collect::<BTreeSet<_>>().len()
}

/// Table by table: row counts, content hashes, duplicates. `Err` lists every table that
/// differs with its missing and extra rows (a few of each).
pub fn compare(
    got: &BTreeMap<&'static str, Rows>,
    want: &BTreeMap<&'static str, Rows>,
) -> Result<String, String> {
    let mut report = String::new();
    let mut errors = String::new();
    for (table, w) in want {
        let g = got.get(table).cloned().unwrap_or_default();
        let dup = duplicates(&g);
        report.push_str(&format!(
            "  {table:<32} {:>6} rows  hash {:016x}\n",
            g.len(),
            digest(&g)
        ));
        if &g != w || dup > 0 {
            let gs: BTreeSet<&String> = g.iter().collect();
            let ws: BTreeSet<&String> = w.iter().collect();
            let missing: Vec<&&String> = ws.difference(&gs).take(3).collect();
            let extra: Vec<&&String> = gs.difference(&ws).take(3).collect();
            errors.push_str(&format!(
                "{table}: {} rows vs {} in the reference, {dup} duplicates, {} missing, {} extra\n  missing e.g. {missing:?}\n  extra e.g. {extra:?}\n",
                g.len(),
                w.len(),
                ws.difference(&gs).count(),
                gs.difference(&ws).count(),
            ));
        }
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(errors)
    }
}

/// Every exchange price point holds a price the devnet served (its price for the day of
/// the tip at the reading's `upstream_time`), none is stored twice for one second, and at
/// least one reading is newer than `since` (the source polls again after the faults).
pub async fn check_exchange_prices(
    conn: &DatabaseConnection,
    d: &Devnet,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<usize, String> {
    let daily = d.control().daily_prices();
    let points = price_point::Entity::find()
        .filter(price_point::Column::Source.eq("EXCHANGE"))
        .all(conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut seconds = BTreeSet::new();
    for p in &points {
        if !seconds.insert(p.at) {
            return Err(format!("exchange: two readings at {}", p.at));
        }
        let t = p
            .details
            .as_ref()
            .and_then(|d| d["upstream_time"].as_i64())
            .ok_or_else(|| format!("exchange reading without upstream_time: {p:?}"))?;
        let day = daily
            .iter()
            .rev()
            .find(|(start, _)| *start <= t)
            .ok_or_else(|| format!("exchange reading at {t} before the devnet's first day"))?;
        if (p.price - day.1.round()).abs() > 0.5 {
            return Err(format!(
                "exchange reading {} at {t}: the devnet served {}",
                p.price, day.1
            ));
        }
    }
    if !points.iter().any(|p| p.at > since) {
        return Err(format!("no exchange reading after {since}"));
    }
    Ok(points.len())
}

/// `orrery.toml` of a server following only `d`'s Stellar RPC (`stellar.source = "rpc"`)
/// for XLM and every devnet asset.
pub fn rpc_config_file(d: &Devnet, tag: &str) -> PathBuf {
    let issuer = d.control().stellar_issuer();
    let assets: Vec<String> = std::iter::once("\"XLM\"".to_string())
        .chain(ASSETS.iter().map(|c| format!("\"{c}:{issuer}\"")))
        .collect();
    let toml = format!(
        "[stellar]\nsource = \"rpc\"\nrpc_urls = [\"{}\"]\nassets = [{}]\n\
         poll_interval_ms = 200\nbreaker_recovery_secs = 1\nrequest_timeout_secs = 2\n\
         rpc_events_limit = 500\nrpc_batch_events = 500\n",
        d.urls().stellar_rpc,
        assets.join(", ")
    );
    let dir = std::env::temp_dir().join(format!(
        "orrery_fleet_rpc_{tag}_{}_{}",
        std::process::id(),
        super::services::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("orrery.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The Stellar RPC server's data against the devnet: source `stellar:rpc` synced through
/// the latest ledger, and every balance (account, asset) exactly the devnet's (zero
/// balances and the genesis root, whose starting lumens no event shows, left out).
pub async fn check_rpc_ground_truth(conn: &DatabaseConnection, d: &Devnet) -> Result<(), String> {
    let c = d.control();
    let row = source::Entity::find_by_id("stellar:rpc".to_string())
        .one(conn)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("source stellar:rpc missing")?;
    let latest = i64::from(c.latest_ledger());
    if row.status != "synced" || row.indexed_height < Some(latest) {
        return Err(format!(
            "stellar:rpc is {} at {:?} of {latest} (last error {:?})",
            row.status, row.indexed_height, row.last_error
        ));
    }
    let root = c.stellar_accounts().first().cloned();
    let mut want = BTreeMap::new();
    for a in c.stellar_accounts() {
        if Some(&a) == root.as_ref() {
            continue;
        }
        for (asset, stroops) in c.balances(&a).unwrap_or_default() {
            if stroops == 0 {
                continue;
            }
            let (code, issuer) = match asset.split_once(':') {
                Some((c, i)) => (c.to_string(), i.to_string()),
                None => ("XLM".to_string(), String::new()),
            };
            want.insert((a.clone(), code, issuer), stroops);
        }
    }
    let rows = stellar_balance::Entity::find()
        .all(conn)
        .await
        .map_err(|e| e.to_string())?;
    let keys: BTreeSet<_> = rows
        .iter()
        .map(|b| (&b.account_id, &b.asset_code, &b.asset_issuer))
        .collect();
    if keys.len() != rows.len() {
        return Err("stellar:rpc: duplicate balance rows".into());
    }
    let got: BTreeMap<(String, String, String), i64> = rows
        .into_iter()
        .filter(|b| b.balance_stroops != 0 && Some(&b.account_id) != root.as_ref())
        .map(|b| {
            (
                (b.account_id, b.asset_code, b.asset_issuer),
                b.balance_stroops,
            )
        })
        .collect();
    if got != want {
        let diff: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .take(3)
            .collect();
        return Err(format!(
            "stellar:rpc balances: {} stored, {} expected; first differences {diff:?}",
            got.len(),
            want.len()
        ));
    }
    Ok(())
}
