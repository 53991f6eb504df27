//! `orrery stellar ...`: one-off Stellar jobs run from the command line.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use orrery_entity::source;
use orrery_indexer::bus::LocalBus;
use orrery_indexer::stellar::datalake::{self, source as lake, LakeSource};
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
    /// derived as on the RPC path and stored under the same cursor, so `orrery serve`
    /// continues after the last ledger (then on RPC). A progress bar with ETA on stderr,
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

    let row = source::Entity::find_by_id(lake::SOURCE_ID.to_string())
        .one(&db)
        .await?;
    let mut start = args.from;
    if let Some(c) = row.as_ref().and_then(|r| r.cursor.clone()) {
        match lake::parse_cursor(&c) {
            Some(done) if args.from > done + 1 => bail!(
                "the database holds ledgers through {done}: --from {} would leave a gap (use --from {})",
                args.from,
                done + 1
            ),
            Some(done) if done >= args.to => {
                println!("nothing to do: ledgers through {done} are already stored");
                return Ok(ExitCode::SUCCESS);
            }
            Some(done) => start = done + 1,
            None => bail!(
                "source {} already follows Stellar RPC (cursor {c}); a backfill must come before it",
                lake::SOURCE_ID
            ),
        }
    }
    settings.datalake_start_ledger = Some(start);
    settings.datalake_end_ledger = Some(args.to);
    let source = LakeSource::new(store, settings);
    let stats = source.stats();
    let ctx = SyncContext::new(db.clone(), Arc::new(LocalBus::new()), lake::descriptor())
        .with_writer(writer);
    let cancel = CancellationToken::new();
    let engine = tokio::spawn(run_source(
        source,
        ctx,
        EngineConfig::default(),
        cancel.clone(),
    ));

    let total = u64::from(args.to - start) + 1;
    let mut progress = Progress::start("stellar backfill", "ledgers", "ledgers", Some(total));
    let started = Instant::now();
    let mut failure = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(r) = source::Entity::find_by_id(lake::SOURCE_ID.to_string())
            .one(&db)
            .await?
        else {
            continue;
        };
        let done = r
            .cursor
            .as_deref()
            .and_then(lake::parse_cursor)
            .map_or(0, |l| u64::from(l.saturating_sub(start) + 1).min(total));
        progress.set(done);
        if r.error_count > 0 {
            progress.message(r.last_error.clone().unwrap_or_default());
        }
        if done >= total {
            break;
        }
        if r.error_count >= args.max_errors {
            failure = r.last_error.clone();
            break;
        }
        if engine.is_finished() {
            failure = Some("the backfill task ended".into());
            break;
        }
    }
    cancel.cancel();
    let _ = engine.await;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let ledgers = stats.ledgers.load(Ordering::Relaxed);
    let ops = stats.operations.load(Ordering::Relaxed);
    let summary = format!(
        "{ledgers} ledgers ({start}..={}), {} transactions, {ops} operations, {} token events applied, \
         {} objects ({:.1} MiB) in {secs:.1}s: {:.0} ledgers/s, {:.0} operations/s",
        start + (ledgers as u32).saturating_sub(1),
        stats.transactions.load(Ordering::Relaxed),
        stats.events.load(Ordering::Relaxed),
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
