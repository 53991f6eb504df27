//! `orrery stellar ...`: one-off Stellar jobs run from the command line.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use orrery_entity::source;
use orrery_indexer::bus::LocalBus;
use orrery_indexer::stellar::datalake::handoff::LakeHalf;
use orrery_indexer::stellar::datalake::{self, source as lake, LakeSource, LakeTxSource};
use orrery_indexer::sync::{run_source, EngineConfig, SyncContext};
use sea_orm::EntityTrait;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ProcessEnv};
use crate::db;
use crate::progress::Progress;

/// `orrery stellar` subcommands.
#[derive(Subcommand, Debug)]
pub enum StellarCommand {
    /// Backfill a ledger range from the SEP-54 data lake (`stellar.datalake_url`) into the
    /// configured database: balances, balance history and holders of `stellar.assets`,
    /// and with `stellar.index_transactions` the transactions and operations of watched
    /// accounts, DEX prices and distribution payouts, derived as on the RPC path and
    /// stored under the same cursors, so `orrery serve` continues after the last ledger
    /// (then on RPC). A progress bar with ETA on stderr,
    /// a summary at the end.
    Backfill(BackfillArgs),
}

/// `orrery stellar backfill` flags.
#[derive(Args, Debug)]
pub struct BackfillArgs {
    /// First ledger to read. When the database already holds a data-lake backfill, it
    /// continues after the stored ledger instead (a later --from would leave a gap and is
    /// refused).
    #[arg(long, value_name = "LEDGER")]
    pub from: u32,
    /// Last ledger to read (inclusive).
    #[arg(long, value_name = "LEDGER")]
    pub to: u32,
    /// Data lake URL (`file:///dir`, `https://...`, `s3://bucket/path`, `gs://...`).
    /// Default: `stellar.datalake_url`.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Objects fetched and decompressed at once. Default: `stellar.datalake_concurrency`.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Give up after this many consecutive failed steps (a corrupt object is reported with
    /// its key and retried before that).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_errors: i32,
}

/// The first ledger source `id` still needs for `from..=to`, after its stored `cursor`;
/// `None` when it already holds `to`. A `from` past the stored ledger would leave a gap, and
/// a source already on RPC cannot be backfilled: both are refused.
fn start_after(id: &str, cursor: Option<&str>, from: u32, to: u32) -> anyhow::Result<Option<u32>> {
    let Some(c) = cursor else {
        return Ok(Some(from));
    };
    match lake::parse_cursor(c) {
        Some(done) if from > done + 1 => bail!(
            "{id}: the database holds ledgers through {done}: --from {from} would leave a gap (use --from {})",
            done + 1
        ),
        Some(done) if done >= to => Ok(None),
        Some(done) => Ok(Some(done + 1)),
        None => bail!(
            "source {id} already follows Stellar RPC (cursor {c}); a backfill must come before it"
        ),
    }
}

/// Runs one `orrery stellar` command.
pub async fn run(
    config_path: Option<&std::path::Path>,
    cmd: StellarCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        StellarCommand::Backfill(args) => backfill(config_path, args).await,
    }
}

async fn backfill(
    config_path: Option<&std::path::Path>,
    args: BackfillArgs,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path, &ProcessEnv)?;
    crate::telemetry::init(&config.log).map_err(anyhow::Error::msg)?;
    if args.to < args.from {
        bail!("--to {} is before --from {}", args.to, args.from);
    }
    let mut settings = config.stellar.clone();
    if let Some(u) = args.url {
        settings.datalake_url = Some(u);
    }
    if let Some(c) = args.concurrency {
        settings.datalake_concurrency = c.max(1);
    }
    let store = datalake::open(&settings)?.context(
        "no data lake: set stellar.datalake_url (or ORRERY_STELLAR_DATALAKE_URL) or pass --url",
    )?;
    let db = db::connect(&config).await?;
    db::migrate(&db).await?;
    let writer = db::connect_writer(&config, &db).await?;

    // The balances, and with `stellar.index_transactions` the transactions: each source
    // continues after its own stored ledger.
    let mut ids = vec![lake::SOURCE_ID];
    if settings.index_transactions {
        ids.push(orrery_indexer::stellar::rpc::transactions::SOURCE_ID);
    }
    let mut starts = Vec::new();
    for id in &ids {
        let row = source::Entity::find_by_id(id.to_string()).one(&db).await?;
        let cursor = row.and_then(|r| r.cursor);
        if let Some(s) = start_after(id, cursor.as_deref(), args.from, args.to)? {
            starts.push((*id, s));
        }
    }
    let Some(start) = starts.iter().map(|(_, s)| *s).min() else {
        println!(
            "nothing to do: ledgers through {} are already stored",
            args.to
        );
        return Ok(ExitCode::SUCCESS);
    };
    let bus = Arc::new(LocalBus::new());
    let cancel = CancellationToken::new();
    let mut engines = Vec::new();
    let mut stats = None;
    for (id, from) in &starts {
        let mut s = settings.clone();
        s.datalake_start_ledger = Some(*from);
        s.datalake_end_ledger = Some(args.to);
        let ctx = |d| SyncContext::new(db.clone(), bus.clone(), d).with_writer(writer.clone());
        let config = EngineConfig::default();
        let engine = if *id == lake::SOURCE_ID {
            let source = LakeSource::new(store.clone(), s);
            stats = Some(source.stats());
            tokio::spawn(run_source(
                source,
                ctx(lake::descriptor()),
                config,
                cancel.clone(),
            ))
        } else {
            let source = LakeTxSource::new(store.clone(), s);
            let d = datalake::transactions::descriptor();
            stats.get_or_insert_with(|| LakeHalf::stats(&source));
            tokio::spawn(run_source(source, ctx(d), config, cancel.clone()))
        };
        engines.push(engine);
    }
    let stats = stats.context("no source to run")?;

    let total = u64::from(args.to - start) + 1;
    let mut progress = Progress::start("stellar backfill", "ledgers", "ledgers", Some(total));
    let started = Instant::now();
    let mut failure = None;
    'wait: loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        // The slowest source's ledger is the progress.
        let mut done = total;
        for (id, _) in &starts {
            let Some(r) = source::Entity::find_by_id(id.to_string()).one(&db).await? else {
                done = 0;
                continue;
            };
            let d = r
                .cursor
                .as_deref()
                .and_then(lake::parse_cursor)
                .map_or(0, |l| u64::from(l.saturating_sub(start) + 1).min(total));
            done = done.min(d);
            if r.error_count > 0 {
                progress.message(r.last_error.clone().unwrap_or_default());
            }
            if r.error_count >= args.max_errors {
                failure = r.last_error.clone().map(|e| format!("{id}: {e}"));
                break 'wait;
            }
        }
        progress.set(done);
        if done >= total {
            break;
        }
        if engines.iter().any(|e| e.is_finished()) {
            failure = Some("the backfill task ended".into());
            break;
        }
    }
    cancel.cancel();
    for e in engines {
        let _ = e.await;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let ledgers = stats.ledgers.load(Ordering::Relaxed);
    let ops = stats.operations.load(Ordering::Relaxed);
    let summary = format!(
        "{ledgers} ledgers ({start}..={}), {} transactions, {ops} operations, {} token events applied, \
         {} ledgers from entry changes (no classic events), \
         {} objects ({:.1} MiB) in {secs:.1}s: {:.0} ledgers/s, {:.0} operations/s",
        start + (ledgers as u32).saturating_sub(1),
        stats.transactions.load(Ordering::Relaxed),
        stats.events.load(Ordering::Relaxed),
        stats.entry_ledgers.load(Ordering::Relaxed),
        stats.objects.load(Ordering::Relaxed),
        stats.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        ledgers as f64 / secs,
        ops as f64 / secs,
    );
    progress.finish(&summary);
    println!("{summary}");
    match failure {
        Some(e) => {
            eprintln!("error: backfill stopped: {e}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
