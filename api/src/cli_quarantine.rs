//! `orrery quarantine ...`: list the records sources could not store and replay them
//! after a fix.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use orrery_entity::quarantine;
use orrery_indexer::replay::{self, ReplayError, Selection};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::config::{Config, ProcessEnv};
use crate::db;

/// `orrery quarantine` subcommands.
#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    /// Print quarantined records (pending ones unless --all), one per line: id, source,
    /// kind, position, time and the error.
    List(ListArgs),
    /// Decode pending records again with this build and apply the ones that decode now
    /// (the record leaves the queue); the others stay, with the new error. Exit 0 when
    /// every selected record was applied, 1 otherwise.
    Replay(ReplayArgs),
}

/// `orrery quarantine list` flags.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only records of this source (`stellar`, `stellar:rpc`, `evm:<chain>`, ...).
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Include records already replayed.
    #[arg(long)]
    pub all: bool,
    /// At most this many records (newest last).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u64,
    /// Also print each record's stored payload.
    #[arg(long)]
    pub payload: bool,
}

/// `orrery quarantine replay` flags.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Only these record ids (repeatable; all pending records when absent).
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<i64>,
    /// Only records of this source.
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Decode and apply inside a transaction that is rolled back: says what a replay would
    /// do, writes nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs one `orrery quarantine` command.
pub async fn run(
    config_path: Option<&std::path::Path>,
    cmd: QuarantineCommand,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path, &ProcessEnv)?;
    crate::telemetry::init(&config.log).map_err(anyhow::Error::msg)?;
    let db = db::connect(&config).await?;
    db::migrate(&db).await?;
    match cmd {
        QuarantineCommand::List(args) => list(&db, args).await,
        QuarantineCommand::Replay(args) => replay_all(&db, args).await,
    }
}

async fn list(db: &sea_orm::DatabaseConnection, args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut q = quarantine::Entity::find();
    if !args.all {
        q = q.filter(quarantine::Column::ReplayedAt.is_null());
    }
    if let Some(s) = &args.source {
        q = q.filter(quarantine::Column::Source.eq(s.clone()));
    }
    let rows = q
        .order_by_asc(quarantine::Column::Id)
        .limit(args.limit)
        .all(db)
        .await?;
    if rows.is_empty() {
        println!(
            "no {}quarantined records",
            if args.all { "" } else { "pending " }
        );
    }
    for r in &rows {
        let state = match (&r.replayed_at, &r.replay_error) {
            (Some(at), _) => format!("replayed {}", at.to_rfc3339()),
            (None, Some(e)) => format!("pending (last replay: {e})"),
            (None, None) => "pending".into(),
        };
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.id,
            r.source,
            r.kind,
            r.position,
            r.quarantined_at.to_rfc3339(),
            r.error,
            state
        );
        if args.payload {
            println!("\t{}", r.payload);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay_all(
    db: &sea_orm::DatabaseConnection,
    args: ReplayArgs,
) -> anyhow::Result<ExitCode> {
    let sel = Selection {
        ids: args.ids.clone(),
        source: args.source.clone(),
    };
    let records = replay::pending(db, &sel).await?;
    if let Some(missing) = args
        .ids
        .iter()
        .find(|id| !records.iter().any(|r| r.id == **id))
    {
        anyhow::bail!("record {missing} is not pending (unknown, or already replayed)");
    }
    let (mut applied, mut failed) = (0usize, 0usize);
    for r in &records {
        match replay::replay_one(db, r, args.dry_run).await {
            Ok(a) => {
                applied += 1;
                println!(
                    "{}\t{}\t{}\tapplied: {}",
                    r.id, r.source, r.position, a.summary
                );
            }
            Err(ReplayError::Db(e)) => return Err(e.into()),
            Err(e) => {
                failed += 1;
                println!("{}\t{}\t{}\tnot applied: {e}", r.id, r.source, r.position);
            }
        }
    }
    println!(
        "{applied} applied, {failed} not applied{}",
        if args.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
